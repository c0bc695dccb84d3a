//! `lifeboat fetch` on files that look like dump disks: dumps written by the capture kernel's
//! own writer (`write_kdump`, through its disk sink `BlockSink` where a disk is simulated),
//! from an ELF core header built by the loader's own `CoreLayout`.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::rc::Rc;

use lifeboat_capture::blk::{BlockDevice, BlockSink};
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
        cpu_notes: vec![NoteBuf {
            addr: NOTES,
            size: 1024,
        }],
        vmcoreinfo: Some(NoteBuf {
            addr: VMCI,
            size: 4096,
        }),
        ram: vec![ram],
        page_offset: 0xffff_8880_0000_0000,
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
