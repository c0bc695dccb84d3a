//! `lifeboat fetch` on files that look like dump disks: dumps written by the capture kernel's
//! own writer (`write_kdump`, through its disk sink `BlockSink` where a disk is simulated),
//! from an ELF core header built by the loader's own `CoreLayout`; the crashed kernel's log
//! written first to the region at the end of the disk (`BlockSink::start_log`).

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::rc::Rc;

use lifeboat_capture::blk::{BlockDevice, BlockSink};
use lifeboat_capture::frame::{LogOutcome, LogWrite};
use lifeboat_capture::dump::{dump_params, write_kdump, NoProgress, Verdict};
use lifeboat_capture::elfcore::{ElfCoreHeader, Limits, EM_X86_64, NT_PRSTATUS};
use lifeboat_capture::phys::{PhysError, PhysRead};
use lifeboat_capture::sink::SinkError;
use lifeboat_loader::elfcorehdr::{CoreLayout, NoteBuf};
use lifeboat_loader::memmap::Range;

const HDR: u64 = 0x7f00_0000;
const NOTES: u64 = 0x7e00_0000;
const VMCI: u64 = 0x7e10_0000;

/// Physical memory made of buffers.
struct Mem(Vec<(u64, Vec<u8>)>);

impl PhysRead for Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let err = PhysError::Unreadable {
            addr,
            len: buf.len() as u64,
        };
        for (base, data) in &self.0 {
            if addr >= *base && addr + buf.len() as u64 <= base + data.len() as u64 {
                let at = (addr - base) as usize;
                buf.copy_from_slice(&data[at..at + buf.len()]);
                return Ok(());
            }
        }
        Err(err)
    }
}

fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    b.extend_from_slice(&n_type.to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.resize(b.len().next_multiple_of(4), 0);
    b.extend_from_slice(desc);
    b.resize(b.len().next_multiple_of(4), 0);
    b
}

/// A crashed machine with 2 MiB of RAM at 1 MiB (zero, patterned and pseudo-random pages).
fn machine() -> (Mem, ElfCoreHeader) {
    let ram = Range {
        start: 0x10_0000,
        end: 0x30_0000,
    };
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let content: Vec<u8> = (0..ram.end - ram.start)
        .map(|i| match (i / 4096) % 3 {
            0 => 0,
            1 => (i % 251) as u8,
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect();
    let mut prstatus = note("CORE", NT_PRSTATUS, &[0x55; 336]);
    prstatus.resize(1024, 0);
    let mut vmci = note(
        "VMCOREINFO",
        0,
        b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\n",
    );
    vmci.resize(4096, 0);
    let layout = CoreLayout {
        machine: lifeboat_capture::elfcore::EM_X86_64,
        kernel_text: None,
        cpu_notes: vec![NoteBuf {
            addr: NOTES,
            size: 1024,
        }],
        vmcoreinfo: Some(NoteBuf {
            addr: VMCI,
            size: 4096,
        }),
        ram: vec![ram],
        linear_offset: Some(0xffff_8880_0000_0000),
    };
    let hdr = layout.build().unwrap();
    let mem = Mem(vec![
        (HDR, hdr),
        (NOTES, prstatus),
        (VMCI, vmci),
        (ram.start, content),
    ]);
    let limits = Limits {
        max_phys: 1 << 46,
        own: vec![],
        ram: None,
        machine: EM_X86_64,
        hdr_size: None,
    };
    let core = ElfCoreHeader::parse(&mem, HDR, &limits).unwrap();
    (mem, core)
}

/// A disk in memory, shared so that it can be looked at after the sink is dropped.
#[derive(Clone)]
struct Disk(Rc<RefCell<Vec<u8>>>);
impl Disk {
    fn new(bytes: Vec<u8>) -> Self {
        Disk(Rc::new(RefCell::new(bytes)))
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }
}
impl BlockDevice for Disk {
    fn capacity_bytes(&self) -> u64 {
        self.0.borrow().len() as u64
    }
    fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), SinkError> {
        let at = lba as usize * 512;
        self.0.borrow_mut()[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        let at = lba as usize * 512;
        buf.copy_from_slice(&self.0.borrow()[at..at + buf.len()]);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn garbage(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x40)
        .collect()
}

fn tmpdir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("lifeboat-fetch-{}-{}", name, std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

fn lifeboat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn complete_dump_followed_by_stale_data() {
    let (mem, core) = machine();
    let (params, _) = dump_params(&core, &mem, "x86_64");
    let mut dump = Vec::new();
    assert_eq!(
        write_kdump(&core, &params, &mem, &mut dump, &mut NoProgress).verdict,
        Verdict::Complete
    );
    // The same dump written through the disk sink onto a disk full of an old dump's bytes.
    let mut old = garbage(8 << 20);
    old[..8].copy_from_slice(b"KDUMP   ");
    let mut sink = BlockSink::new(Disk::new(old)).unwrap();
    write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
    let disk = sink.finish().unwrap().0.bytes();

    let dir = tmpdir("ok");
    let (img, out) = (dir.join("disk.img"), dir.join("vmcore"));
    fs::write(&img, &disk).unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("verdict: complete"), "{stdout}");
    assert!(stdout.contains("Linux 6.1.0-test x86_64"), "{stdout}");
    assert!(
        stdout.contains(&format!("({} bytes) to ", dump.len())),
        "{stdout}"
    );
    assert!(
        fs::read(&out).unwrap() == dump,
        "the copy is not exactly the dump"
    );
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!dir.join("vmcore.part").exists());

    // OUT exists: refused without --force, replaced with it.
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("pass --force"), "{}", text(&o));
    fs::write(&out, b"old").unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out), "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(fs::read(&out).unwrap() == dump);

    // A page corrupted on the disk: exit 2, nothing copied.
    let mut bad = disk.clone();
    let last = dump.len() - 100;
    bad[last..dump.len()].iter_mut().for_each(|b| *b ^= 0xff);
    fs::write(&img, &bad).unwrap();
    let out2 = dir.join("vmcore2");
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out2)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is corrupt"), "{}", text(&o));
    assert!(!out2.exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn dump_cut_short_by_a_small_disk_exits_1() {
    let (mem, core) = machine();
    let (params, _) = dump_params(&core, &mem, "x86_64");
    let mut sink = BlockSink::new(Disk::new(garbage(600 * 1024))).unwrap();
    let summary = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
    assert!(matches!(summary.verdict, Verdict::Incomplete(_)));
    let disk = sink.finish().unwrap().0.bytes();
    let dir = tmpdir("cut");
    let (img, out) = (dir.join("disk.img"), dir.join("vmcore"));
    fs::write(&img, &disk).unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verdict: INCOMPLETE"),
        "{}",
        text(&o)
    );
    let copy = fs::read(&out).unwrap();
    assert!(copy.len() <= disk.len() && copy[..] == disk[..copy.len()]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn no_dump_unfinished_capture_and_usage() {
    let dir = tmpdir("none");
    let out = dir.join("vmcore");
    // An empty disk.
    let img = dir.join("zero.img");
    fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no dump on "), "{}", text(&o));
    // A capture that never finished: the marker at sector 0.
    // (The sink is dropped without finish, as when the machine dies during the capture.)
    let (mem, core) = machine();
    let (params, _) = dump_params(&core, &mem, "x86_64");
    let disk = Disk::new(vec![0u8; 8 << 20]);
    let mut sink = BlockSink::new(disk.clone()).unwrap();
    write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
    drop(sink);
    let img = dir.join("unfinished.img");
    fs::write(&img, disk.bytes()).unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("a capture started but did not finish; no dump"),
        "{}",
        text(&o)
    );
    // Missing source, missing -o.
    let o = lifeboat(&["fetch", "/nonexistent/disk", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot open /nonexistent/disk"),
        "{}",
        text(&o)
    );
    assert_eq!(lifeboat(&["fetch", s(&img)]).status.code(), Some(2));
    assert!(!out.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// A kernel log of `n` records, one `makedumpfile --dump-dmesg` line each.
fn klog(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("[{:5}.{:06}] test record {i}: some text\n", i / 10, i * 1000 % 1_000_000).into_bytes())
        .collect()
}

/// A disk as the capture kernel leaves it: the log in its region at the end (first), then the
/// dump. `outcome: None` means the capture stopped while writing the log.
fn disk_with_log(size: usize, lines: &[Vec<u8>], outcome: Option<LogOutcome>, dump: bool) -> (Vec<u8>, u64) {
    let (mem, core) = machine();
    let (params, _) = dump_params(&core, &mem, "x86_64");
    let mut sink = BlockSink::new(Disk::new(garbage(size))).unwrap();
    let len: usize = lines.iter().map(|l| l.len()).sum();
    let mut region = sink.start_log(len as u64).unwrap();
    let start = region.region_start();
    let mut records = 0;
    for l in lines {
        if region.log_text(l).is_err() {
            break;
        }
        records += 1;
    }
    // Without an outcome the region is never finished: the trailer keeps saying "writing".
    if let Some(o) = outcome {
        let o = LogOutcome {
            records: o.records.min(records),
            ..o
        };
        region.finish(&o).unwrap();
    }
    if !dump {
        return (sink.finish().unwrap().0.bytes(), start);
    }
    write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
    (sink.finish().unwrap().0.bytes(), start)
}

fn whole(records: u64) -> Option<LogOutcome> {
    Some(LogOutcome {
        complete: true,
        records,
        reason: String::new(),
    })
}

fn run_fetch(name: &str, disk: &[u8]) -> (PathBuf, Output) {
    let dir = tmpdir(name);
    let (img, out) = (dir.join("disk.img"), dir.join("vmcore"));
    fs::write(&img, disk).unwrap();
    let o = lifeboat(&["fetch", s(&img), "-o", s(&out)]);
    (dir, o)
}

#[test]
fn fetch_writes_the_kernel_log() {
    let lines = klog(500);
    let log = lines.concat();
    let (disk, start) = disk_with_log(8 << 20, &lines, whole(500), true);
    let (dir, o) = run_fetch("log", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dmesg = dir.join("vmcore.dmesg.txt");
    assert!(fs::read(&dmesg).unwrap() == log, "the log differs");
    assert_eq!(fs::metadata(&dmesg).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.join("vmcore.dmesg.txt.incomplete").exists());
    assert!(!dir.join("vmcore.dmesg.txt.part").exists());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("kernel log: {} ({} bytes, 500 records)", dmesg.display(), log.len())),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: complete"), "{stdout}");
    // The dump is what it always was; the region is past its end.
    let vmcore = fs::read(dir.join("vmcore")).unwrap();
    assert!(vmcore.len() as u64 <= start && vmcore[..] == disk[..vmcore.len()]);

    // No complete dump (the capture stopped during the dump): the log is still written.
    let (mut unfinished, _) = disk_with_log(8 << 20, &lines, whole(500), false);
    unfinished[..25].copy_from_slice(b"LIFEBOAT-DUMP-IN-PROGRESS");
    let (dir2, o) = run_fetch("log-nodump", &unfinished);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("a capture started but did not finish"), "{}", text(&o));
    assert!(text(&o).contains("kernel log: "), "{}", text(&o));
    assert!(fs::read(dir2.join("vmcore.dmesg.txt")).unwrap() == log);
    assert!(!dir2.join("vmcore").exists());
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&dir2);
}

#[test]
fn an_incomplete_log_is_kept_as_incomplete() {
    // The capture kernel could not read the whole log.
    let lines = klog(50);
    let why = LogOutcome {
        complete: false,
        records: 30,
        reason: "printk ring buffer: descriptor 31 unreadable".into(),
    };
    let (disk, _) = disk_with_log(8 << 20, &lines[..30], Some(why), true);
    let (dir, o) = run_fetch("log-incomplete", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o)); // the dump is complete
    let kept = dir.join("vmcore.dmesg.txt.incomplete");
    assert!(fs::read(&kept).unwrap() == lines[..30].concat());
    assert_eq!(fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.join("vmcore.dmesg.txt").exists());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("kernel log INCOMPLETE: ") && stdout.contains("descriptor 31 unreadable"),
        "{stdout}"
    );
    let _ = fs::remove_dir_all(&dir);

    // A log longer than the disk keeps for it (a quarter of 256 KiB less the trailer): cut
    // after the last whole record, incomplete.
    let lines = klog(3000);
    let (disk, start) = disk_with_log(256 * 1024, &lines, whole(3000), false);
    assert_eq!(start, 256 * 1024 - 512 - (64 * 1024 - 512));
    let (dir, o) = run_fetch("log-cut", &disk);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o)); // no dump on this disk
    let kept = fs::read(dir.join("vmcore.dmesg.txt.incomplete")).unwrap();
    assert!(kept.len() <= 64 * 1024 - 512 && kept.ends_with(b"\n"));
    assert!(lines.concat().starts_with(&kept));
    let said = text(&o);
    assert!(said.contains("is longer than the 65024 bytes this disk keeps for it"), "{said}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_log_that_fails_its_crc_is_incomplete() {
    let lines = klog(200);
    let (mut disk, start) = disk_with_log(8 << 20, &lines, whole(200), true);
    disk[start as usize + 100] ^= 0x20;
    let (dir, o) = run_fetch("log-crc", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!dir.join("vmcore.dmesg.txt").exists());
    let kept = fs::read(dir.join("vmcore.dmesg.txt.incomplete")).unwrap();
    assert_eq!(kept.len(), lines.concat().len());
    assert!(text(&o).contains("does not match the trailer's CRC-32"), "{}", text(&o));
    // A damaged trailer: no log file, and the output says why.
    let n = disk.len();
    disk[n - 100] ^= 1;
    let (dir2, o) = run_fetch("log-trailer", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("kernel log: none written: the kernel log trailer is damaged"), "{}", text(&o));
    assert!(!dir2.join("vmcore.dmesg.txt").exists() && !dir2.join("vmcore.dmesg.txt.incomplete").exists());
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(&dir2);
}

#[test]
fn no_trailer_no_log_and_unfinished_log() {
    // A disk written without a log (an older lifeboat): no trailer, no file.
    let (mem, core) = machine();
    let (params, _) = dump_params(&core, &mem, "x86_64");
    let mut sink = BlockSink::new(Disk::new(vec![0u8; 8 << 20])).unwrap();
    write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
    let disk = sink.finish().unwrap().0.bytes();
    let (dir, o) = run_fetch("log-none", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kernel log: none written: no kernel log trailer"), "{}", text(&o));
    assert!(!dir.join("vmcore.dmesg.txt").exists() && !dir.join("vmcore.dmesg.txt.incomplete").exists());
    let _ = fs::remove_dir_all(&dir);

    // The capture kernel had no log to write: the trailer says why; no file.
    let why = LogOutcome {
        complete: false,
        records: 0,
        reason: "the crashed kernel's VMCOREINFO or page tables are missing or unusable".into(),
    };
    let (disk, start) = disk_with_log(8 << 20, &[], Some(why), true);
    assert_eq!(start, (8 << 20) - 512);
    let (dir, o) = run_fetch("log-nolog", &disk);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("kernel log: none written: the capture kernel wrote no log: the crashed kernel's VMCOREINFO"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("vmcore.dmesg.txt").exists() && !dir.join("vmcore.dmesg.txt.incomplete").exists());
    let _ = fs::remove_dir_all(&dir);

    // The capture stopped while writing the log: no file, no dump.
    let lines = klog(100);
    let (disk, _) = disk_with_log(8 << 20, &lines, None, false);
    let (dir, o) = run_fetch("log-writing", &disk);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("the capture stopped while writing the log"), "{}", text(&o));
    assert!(!dir.join("vmcore.dmesg.txt").exists() && !dir.join("vmcore.dmesg.txt.incomplete").exists());
    let _ = fs::remove_dir_all(&dir);
}
