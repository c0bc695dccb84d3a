//! Scenarios for the disk and network sinks: the capture kernel writes the dump of synthetic
//! memory to a virtio-blk disk or sends it to `lifeboat serve` on this host (QEMU user
//! networking: the guest's 10.0.2.2 is the host's 127.0.0.1 — nothing else is ever
//! contacted), and the result is checked byte for byte against the synthetic memory.
//!
//! Faults: a disk too small for the dump, a server killed and restarted mid-dump, a server
//! whose disk fills up, a fallback list whose first sinks cannot work, and four crashed
//! machines dumping to one server at once.
//!
//! Devices are virtio-pci on x86_64 (QEMU pc) and virtio-mmio on aarch64 (QEMU virt's 32
//! virtio-mmio slots: the first `-device` takes the highest slot, 0x0a00_3e00, the next one
//! 0x200 below, and so on; the kernel finds them in the device tree), except in aarch64's
//! `blk-pci-64m`, whose disk is a virtio-blk-pci on the ECAM PCIe host ([`VirtioBus`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::qemu::{self, QemuBoot};
use crate::scenario::{boot_with, first_difference, report_kernel_memory, Failed, Scenario};
use crate::synth::{SynthImage, SynthSpec};
use crate::verify::{self, Expectations};
use crate::{Arch, SuiteConfig};

const MIB: u64 = 1 << 20;
/// `DUMP_DH_COMPRESSED_INCOMPLETE` in the kdump header's `status` (offset 424).
const STATUS_INCOMPLETE: u32 = 0x8;
/// The serial of the dump disk in these scenarios.
const DUMP_SERIAL: &str = "lbdump";

/// Which sink scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkCase {
    /// The dump disk selected by serial, next to a decoy disk that must stay untouched; the
    /// crashed kernel has pages of `page_size` bytes (not 4 KiB: arm64 only,
    /// [`crate::scenario::Kind::page_size`]).
    Blk { mib: u64, page_size: u64 },
    /// [`SinkCase::Blk`] with both disks on virtio-pci (aarch64 only, where the other
    /// scenarios' disks are virtio-mmio).
    BlkPci { mib: u64 },
    /// A disk smaller than the dump: what fits is written, marked incomplete.
    BlkTooSmall,
    /// `lifeboat serve` on loopback.
    Net { mib: u64 },
    /// `net:` to a port nobody listens on, a disk that does not exist, then the real disk.
    Fallback,
    /// The server is killed mid-dump and started again: the capture kernel reconnects and
    /// sends the dump again; the first attempt is kept as `vmcore.incomplete`.
    NetServerRestart,
    /// The server's directory is on a 8 MiB tmpfs: the server refuses more data when full.
    NetServerDiskFull,
    /// Four crashed machines dump to one server at once (two with static addresses, two by
    /// DHCP).
    NetFourClients,
}

pub fn run(
    case: SinkCase,
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    match case {
        SinkCase::Blk { mib, .. } => {
            run_blk(s, cfg, VirtioBus::of(cfg.arch), dir, mib, details, console)
        }
        SinkCase::BlkPci { mib } => run_blk(s, cfg, VirtioBus::Pci, dir, mib, details, console),
        SinkCase::BlkTooSmall => run_blk_too_small(s, cfg, dir, details, console),
        SinkCase::Net { mib } => run_net(s, cfg, dir, mib, details, console),
        SinkCase::Fallback => run_fallback(s, cfg, dir, details, console),
        SinkCase::NetServerRestart => run_server_restart(s, cfg, dir, details, console),
        SinkCase::NetServerDiskFull => run_server_disk_full(s, cfg, dir, details, console),
        SinkCase::NetFourClients => run_four_clients(s, cfg, dir, details),
    }
}

fn base_cmdline(image: &SynthImage, sinks: &str) -> String {
    format!(
        "elfcorehdr={:#x} lifeboat.exit_port=0xf4 lifeboat.action=halt lifeboat.sink={sinks}",
        image.elfcorehdr_addr
    )
}

/// How virtio devices are attached to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioBus {
    /// `virtio-*-pci`: QEMU pc's PCI bus, QEMU virt's ECAM PCIe host.
    Pci,
    /// `virtio-*-device`: QEMU virt's virtio-mmio slots.
    Mmio,
}

impl VirtioBus {
    /// The usual bus of `arch`: PCI on x86_64, virtio-mmio on aarch64.
    pub fn of(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => VirtioBus::Pci,
            Arch::Aarch64 => VirtioBus::Mmio,
        }
    }

    /// What the console line naming the disk sink starts with: x86_64 and PCI disks say
    /// where on PCI; for virtio-mmio only that it is a virtio-blk disk.
    pub fn blk_sink_line(self) -> &'static str {
        match self {
            VirtioBus::Pci => "sink: virtio-blk at PCI",
            VirtioBus::Mmio => "sink: virtio-blk at ",
        }
    }
}

/// QEMU arguments for a raw virtio-blk-pci disk (`id` names the drive; also used by the e2e
/// sink scenarios).
pub fn disk_args(path: &Path, id: &str, serial: &str) -> Vec<String> {
    disk_args_on(VirtioBus::Pci, path, id, serial)
}

/// [`disk_args`] on `bus`.
pub fn disk_args_on(bus: VirtioBus, path: &Path, id: &str, serial: &str) -> Vec<String> {
    let device = match bus {
        VirtioBus::Pci => "virtio-blk-pci",
        VirtioBus::Mmio => "virtio-blk-device",
    };
    vec![
        "-drive".into(),
        format!("file={},if=none,format=raw,id={id},cache=unsafe", path.display()),
        "-device".into(),
        format!("{device},drive={id},serial={serial}"),
    ]
}

/// QEMU arguments for a virtio-net-pci card on user networking (10.0.2.2 = host loopback).
/// No option ROM: the capture kernel does not need one and Debian's QEMU may not ship it.
pub fn net_args() -> Vec<String> {
    net_args_on(VirtioBus::Pci)
}

/// [`net_args`] on `bus` (a virtio-mmio card has no option ROM to turn off).
pub fn net_args_on(bus: VirtioBus) -> Vec<String> {
    let device = match bus {
        VirtioBus::Pci => "virtio-net-pci,netdev=n0,romfile=",
        VirtioBus::Mmio => "virtio-net-device,netdev=n0",
    };
    vec!["-netdev".into(), "user,id=n0".into(), "-device".into(), device.into()]
}

const NET_OPTS: &str = "lifeboat.ip=10.0.2.15/24 lifeboat.gw=10.0.2.2";

fn make_disk(path: &Path, bytes: u64, fill: u8) -> Result<(), Failed> {
    let data = vec![fill; bytes as usize];
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn expect_exit(fin: &qemu::Finished, timeout: Duration, code: i32, what: &str) -> Result<(), Failed> {
    if fin.timed_out || fin.code() != Some(code) {
        return Err(format!(
            "expected QEMU exit status {code} ({what}), got {}",
            qemu::describe_qemu_exit(fin, timeout)
        )
        .into());
    }
    Ok(())
}

fn expect_verdict(console: &[String], prefix: &str) -> Result<String, Failed> {
    match qemu::verdict(console) {
        Some(v) if v.starts_with(prefix) => Ok(v.to_string()),
        Some(v) => Err(format!("verdict is {v:?}, expected {prefix:?}…").into()),
        None => Err("no \"lifeboat: verdict: …\" line on the console".into()),
    }
}

fn must_say(console: &[String], frag: &str) -> Result<(), Failed> {
    if console.iter().any(|l| l.contains(frag)) {
        Ok(())
    } else {
        Err(format!("no console line contains {frag:?}").into())
    }
}

/// Checks a kdump-compressed file against the synthetic memory; returns a summary line.
fn verify_dump(file: &[u8], image: &SynthImage, what: &str) -> Result<String, Failed> {
    let exp = Expectations::for_image(image);
    let stats = verify::verify_kdump(file, &exp, image).map_err(|f| format!("{what}: {f}"))?;
    let ram: u64 = image.ranges.iter().map(|r| r.len).sum();
    Ok(format!(
        "{what}: {} pages of {} KiB byte-exact ({} zero, {} zlib, {} raw), file {:.1} MiB, ratio {:.2}",
        stats.pages,
        stats.block_size >> 10,
        stats.zero_pages,
        stats.zlib_pages,
        stats.raw_pages,
        stats.file_bytes as f64 / MIB as f64,
        ram as f64 / stats.file_bytes as f64
    ))
}

fn status_of(file: &[u8]) -> Option<u32> {
    (file.len() >= 428 && &file[..8] == b"KDUMP   ")
        .then(|| u32::from_le_bytes(file[424..428].try_into().unwrap()))
}

/// `lifeboat fetch <disk> -o <out>`: returns its exit code.
fn fetch(cfg: &SuiteConfig, dir: &Path, disk: &Path, out: &Path) -> Result<i32, Failed> {
    let mut c = Command::new(&cfg.lifeboat_bin);
    c.arg("fetch").arg(disk).arg("-o").arg(out);
    let fin = qemu::run_with_timeout(
        c,
        None,
        &dir.join("fetch.stdout"),
        &dir.join("fetch.stderr"),
        Duration::from_secs(300),
    )?;
    if fin.timed_out {
        return Err("`lifeboat fetch` timed out".into());
    }
    fin.code().ok_or_else(|| Failed::from("`lifeboat fetch` was killed"))
}

/// CRC-32 (IEEE, zlib's `crc32`), bit by bit: independent of the capture kernel's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The kernel log trailer in the disk's last sector (docs/capture-options.md, Disk sink) says
/// "no log": written, whole region = the trailer alone, no text, not complete, with a reason;
/// `lifeboat fetch` said so too and wrote no log file. Synthetic memory has no printk buffer.
/// Returns the reason.
fn check_no_log_trailer(raw: &[u8], console: &[String], dir: &Path, out: &Path) -> Result<String, Failed> {
    let n = raw.len();
    let t = &raw[n - 512..];
    let u32_at = |at: usize| u32::from_le_bytes(t[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap());
    if !t.starts_with(b"LIFEBOAT-KERNEL-LOG") {
        return Err("no LIFEBOAT-KERNEL-LOG trailer in the disk's last sector".into());
    }
    if crc32(&t[..508]) != u32_at(508) {
        return Err("the kernel log trailer's CRC-32 does not match".into());
    }
    let (version, state, start, text_len, flags) = (u32_at(24), u32_at(28), u64_at(32), u64_at(40), u32_at(64));
    let len = u16::from_le_bytes([t[72], t[73]]) as usize;
    let reason = String::from_utf8_lossy(&t[74..74 + len.min(400)]).to_string();
    if version != 1 || state != 1 || start != n as u64 - 512 || text_len != 0 || flags & 1 != 0 || reason.is_empty() {
        return Err(format!(
            "the trailer does not say \"no log\": version {version}, state {state}, region start {start:#x} \
             (disk {n:#x}), text {text_len} bytes, flags {flags:#x}, reason {reason:?}"
        )
        .into());
    }
    must_say(console, "kernel log: not on the disk (")?;
    let said = tool_output(dir, "fetch");
    if !said.contains(&format!("kernel log: none written: the capture kernel wrote no log: {reason}")) {
        return Err(format!("`lifeboat fetch` does not report the missing log:\n{said}").into());
    }
    for suffix in [".dmesg.txt", ".dmesg.txt.incomplete"] {
        let mut p = out.as_os_str().to_owned();
        p.push(suffix);
        if Path::new(&p).exists() {
            return Err(format!("{} exists, but synthetic memory has no kernel log", Path::new(&p).display()).into());
        }
    }
    Ok(reason)
}

fn tool_output(dir: &Path, name: &str) -> String {
    let out = std::fs::read_to_string(dir.join(format!("{name}.stdout"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("{name}.stderr"))).unwrap_or_default();
    format!("{out}{err}")
}

fn run_blk(
    s: &Scenario,
    cfg: &SuiteConfig,
    bus: VirtioBus,
    dir: &Path,
    mib: u64,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, mib))?;
    let disk = dir.join("dump.img");
    let decoy = dir.join("decoy.img");
    // Old bytes on the dump disk must not confuse fetch; the decoy must stay untouched.
    make_disk(&disk, mib * MIB, 0xa5)?;
    make_disk(&decoy, 4 * MIB, 0x5a)?;
    let mut extra = disk_args_on(bus, &decoy, "d0", "decoy");
    extra.extend(disk_args_on(bus, &disk, "d1", DUMP_SERIAL));
    let cmdline = base_cmdline(&image, &format!("blk:serial={DUMP_SERIAL}"));
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot_with(s, cfg, dir, &image, &cmdline, &extra, console, details)?;
    expect_exit(&fin, s.timeout, 1, "dump complete")?;
    expect_verdict(console, "complete")?;
    must_say(console, bus.blk_sink_line())?;
    details.push(format!("kernel says {}", qemu::kernel_throughput(console).unwrap_or_else(|| "no MB/s figure".into())));
    report_kernel_memory(console, &image, details)?;
    let raw = std::fs::read(&disk).map_err(|e| format!("reading the disk: {e}"))?;
    if std::fs::read(&decoy).map_err(|e| format!("reading the decoy disk: {e}"))?.iter().any(|&b| b != 0x5a) {
        return Err("the decoy disk was written to".into());
    }
    let out = dir.join("vmcore");
    let code = fetch(cfg, dir, &disk, &out)?;
    if code != 0 {
        return Err(format!("`lifeboat fetch` exited {code}, expected 0:\n{}", tool_output(dir, "fetch")).into());
    }
    let vmcore = std::fs::read(&out).map_err(|e| format!("fetch wrote no vmcore: {e}"))?;
    if raw[..vmcore.len()] != vmcore[..] {
        return Err(first_difference("the disk", &raw[..vmcore.len()], "fetch's vmcore", &vmcore).into());
    }
    details.push(verify_dump(&vmcore, &image, "fetched vmcore")?);
    details.push(format!(
        "disk {} MiB, dump {} bytes at offset 0, fetch trimmed the {} stale bytes after it",
        mib,
        vmcore.len(),
        raw.len() - vmcore.len()
    ));
    let why = check_no_log_trailer(&raw, console, dir, &out)?;
    details.push(format!("kernel log trailer in the last sector: no log ({why}); fetch wrote no log file"));
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    let _ = std::fs::remove_file(&disk);
    Ok(())
}

fn run_blk_too_small(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, 64))?;
    let disk = dir.join("small.img");
    make_disk(&disk, 4 * MIB, 0)?;
    let extra = disk_args_on(VirtioBus::of(cfg.arch), &disk, "d0", DUMP_SERIAL);
    let cmdline = base_cmdline(&image, "blk");
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot_with(s, cfg, dir, &image, &cmdline, &extra, console, details)?;
    expect_exit(&fin, s.timeout, 3, "dump incomplete")?;
    let v = expect_verdict(console, "incomplete")?;
    if !v.contains("too small") {
        return Err(format!("the verdict does not say the disk is too small: {v:?}").into());
    }
    let raw = std::fs::read(&disk).map_err(|e| format!("reading the disk: {e}"))?;
    if raw.len() as u64 != 4 * MIB {
        return Err(format!("the 4 MiB disk image is now {} bytes", raw.len()).into());
    }
    match status_of(&raw) {
        Some(st) if st & STATUS_INCOMPLETE != 0 => {}
        Some(st) => return Err(format!("the header on the disk has status {st:#x}: INCOMPLETE (0x8) not set").into()),
        None => return Err("no kdump header at offset 0 of the disk".into()),
    }
    let out = dir.join("vmcore");
    let code = fetch(cfg, dir, &disk, &out)?;
    let said = tool_output(dir, "fetch");
    if code != 1 || !said.to_lowercase().contains("incomplete") {
        return Err(format!("`lifeboat fetch` exited {code} (expected 1, incomplete) saying:\n{said}").into());
    }
    details.push(format!("verdict: {v}"));
    details.push(format!("fetch: exit 1: {}", said.lines().last().unwrap_or("")));
    let why = check_no_log_trailer(&raw, console, dir, &out)?;
    details.push(format!("kernel log trailer in the last sector: no log ({why}); the dump stops before it"));
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

/// A `lifeboat serve` child process on 127.0.0.1.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log: PathBuf,
    lifeboat: PathBuf,
    args: Vec<String>,
    starts: u32,
}

impl Server {
    /// Starts `lifeboat serve` on a free loopback port, storing into `dir`.
    pub fn start(lifeboat: &Path, dir: &Path, log: &Path, args: &[&str]) -> Result<Server, Failed> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let mut s = Server {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
            lifeboat: lifeboat.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            starts: 0,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), Failed> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let mut c = Command::new(&self.lifeboat);
        c.arg("serve").arg("--listen").arg(self.addr.to_string()).arg("--dir").arg(&self.dir);
        c.args(&self.args);
        c.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
        self.child = Some(c.spawn().map_err(|e| format!("cannot start lifeboat serve: {e}"))?);
        let t = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("lifeboat serve does not listen on {} after 10 s:\n{}", self.addr, self.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL: the server dies without closing anything cleanly.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> Result<(), Failed> {
        self.kill();
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The dump directories the server created, sorted by name.
    pub fn dump_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run_net(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    mib: u64,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, mib))?;
    let server = Server::start(&cfg.lifeboat_bin, &dir.join("crash"), &dir.join("serve.log"), &[])?;
    let cmdline = format!(
        "{} {NET_OPTS} lifeboat.host=synth-{:x} lifeboat.bootid=0123abcd",
        base_cmdline(&image, &format!("net:10.0.2.2:{}", server.addr.port())),
        s.seed
    );
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot_with(s, cfg, dir, &image, &cmdline, &net_args_on(VirtioBus::of(cfg.arch)), console, details)?;
    expect_exit(&fin, s.timeout, 1, "dump complete").map_err(|e| Failed(format!("{}\nserver log:\n{}", e.0, server.log_text())))?;
    expect_verdict(console, "complete")?;
    must_say(console, "stored by the server as")?;
    details.push(format!("kernel says {}", qemu::kernel_throughput(console).unwrap_or_else(|| "no MB/s figure".into())));
    let dirs = server.dump_dirs();
    let [d] = dirs.as_slice() else {
        return Err(format!("expected one dump directory in {}, found {:?}", server.dir.display(), dirs).into());
    };
    let name = d.file_name().unwrap_or_default().to_string_lossy().to_string();
    if !name.starts_with(&format!("synth-{:x}-", s.seed)) {
        return Err(format!("dump directory {name:?} is not named after the host").into());
    }
    check_private(d)?;
    let vmcore = std::fs::read(d.join("vmcore")).map_err(|e| format!("no vmcore in {}: {e}", d.display()))?;
    check_private(&d.join("vmcore"))?;
    details.push(verify_dump(&vmcore, &image, &format!("{name}/vmcore"))?);
    details.push(no_kernel_log_explained(d, console, &server)?);
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

/// Synthetic memory has no printk ring buffer: the capture kernel says so on the console and
/// in the stream (a LOG_END frame with the reason and no text), the server writes neither
/// `dmesg.txt` nor `dmesg.txt.incomplete` (its fallback, reading the stored dump, finds no log
/// either), and `lifeboat.txt` explains both.
fn no_kernel_log_explained(d: &Path, console: &[String], server: &Server) -> Result<String, Failed> {
    must_say(console, "kernel log: sent 0 records (0 bytes), incomplete: ")
        .or_else(|_| must_say(console, "kernel log: not sent ("))?;
    for f in ["dmesg.txt", "dmesg.txt.incomplete", ".dmesg.txt.partial"] {
        if d.join(f).exists() {
            return Err(format!("{} exists, but synthetic memory has no kernel log", d.join(f).display()).into());
        }
    }
    // The fallback runs after the STORED reply: wait a little for its lifeboat.txt.
    let info_path = d.join("lifeboat.txt");
    let t0 = std::time::Instant::now();
    let line = loop {
        let info = std::fs::read_to_string(&info_path).unwrap_or_default();
        let line = info.lines().find(|l| l.starts_with("kernel_log: ")).map(String::from);
        match line {
            Some(l) if l.contains("in the stored vmcore") => break l,
            _ if t0.elapsed() > Duration::from_secs(10) => {
                return Err(format!("lifeboat.txt does not explain the missing kernel log:\n{info}").into())
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if !line.starts_with("kernel_log: not sent by the capture kernel: ") {
        return Err(format!("lifeboat.txt: {line:?}, expected the capture kernel's reason").into());
    }
    if !server.log_text().contains("no kernel log from the capture kernel: ") {
        return Err("the server log does not say that the capture kernel sent no kernel log".into());
    }
    Ok(format!("no kernel log, explained: {line}"))
}

/// Directories 0700, files 0600.
fn check_private(p: &Path) -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?.permissions().mode() & 0o777;
    let want = if p.is_dir() { 0o700 } else { 0o600 };
    if mode != want {
        return Err(format!("{} has mode {mode:o}, expected {want:o}", p.display()).into());
    }
    Ok(())
}

fn run_fallback(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, 16))?;
    let disk = dir.join("dump.img");
    make_disk(&disk, 32 * MIB, 0)?;
    // A port with no listener: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let bus = VirtioBus::of(cfg.arch);
    let mut extra = net_args_on(bus);
    extra.extend(disk_args_on(bus, &disk, "d0", DUMP_SERIAL));
    let cmdline = format!(
        "{} {NET_OPTS} lifeboat.net_wait=3",
        base_cmdline(&image, &format!("net:10.0.2.2:{closed},blk:serial=nosuchdisk,blk:serial={DUMP_SERIAL},serial"))
    );
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot_with(s, cfg, dir, &image, &cmdline, &extra, console, details)?;
    expect_exit(&fin, s.timeout, 1, "dump complete")?;
    expect_verdict(console, "complete")?;
    for frag in [
        "sink 1 (net:10.0.2.2:",
        "sink 2 (blk:serial=nosuchdisk) not used: no virtio-blk disk has serial 'nosuchdisk'",
        "sink 3 of 4 (blk:serial=lbdump) took the dump",
    ] {
        must_say(console, frag)?;
    }
    let out = dir.join("vmcore");
    let code = fetch(cfg, dir, &disk, &out)?;
    if code != 0 {
        return Err(format!("`lifeboat fetch` exited {code}:\n{}", tool_output(dir, "fetch")).into());
    }
    let vmcore = std::fs::read(&out).map_err(|e| format!("fetch wrote no vmcore: {e}"))?;
    details.push(verify_dump(&vmcore, &image, "vmcore from the third sink")?);
    for l in console.iter().filter(|l| l.contains("sink ")) {
        details.push(l.clone());
    }
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

/// Starts QEMU in a thread; returns its handle.
fn boot_in_thread(
    cfg: &SuiteConfig,
    dir: &Path,
    image: &SynthImage,
    cmdline: String,
    extra: Vec<String>,
    timeout: Duration,
) -> Result<std::thread::JoinHandle<Result<qemu::Finished, String>>, Failed> {
    let blobs = image.write_blobs(&dir.join("mem")).map_err(|e| format!("writing synthetic memory: {e}"))?;
    let (arch, elf, dir) = (cfg.arch, cfg.capture_elf.clone(), dir.to_path_buf());
    Ok(std::thread::spawn(move || {
        QemuBoot { arch, capture_elf: &elf, dir: &dir, cmdline: &cmdline, blobs: &blobs, extra: &extra, timeout }.run()
    }))
}

fn console_of(dir: &Path) -> Vec<String> {
    qemu::console_lines(&std::fs::read(dir.join("serial.bin")).unwrap_or_default())
}

fn run_server_restart(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, 128))?;
    let mut server = Server::start(&cfg.lifeboat_bin, &dir.join("crash"), &dir.join("serve.log"), &[])?;
    let cmdline = format!(
        "{} {NET_OPTS} lifeboat.host=restart lifeboat.net_wait=60",
        base_cmdline(&image, &format!("net:10.0.2.2:{}", server.addr.port()))
    );
    details.push(format!("cmdline: {cmdline}"));
    let qemu = boot_in_thread(cfg, dir, &image, cmdline, net_args_on(VirtioBus::of(cfg.arch)), s.timeout)?;
    // Wait until the server holds a few MiB of the dump, then kill it.
    let t = Instant::now();
    let partial_size = |server: &Server| -> u64 {
        server
            .dump_dirs()
            .iter()
            .filter_map(|d| std::fs::metadata(d.join(".vmcore.partial")).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    while partial_size(&server) < 4 * MIB {
        if qemu.is_finished() || t.elapsed() > s.timeout {
            let _ = qemu.join();
            *console = console_of(dir);
            return Err(format!("the dump never reached 4 MiB on the server:\n{}", server.log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = partial_size(&server);
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart()?;
    let fin = qemu.join().map_err(|_| "the QEMU thread panicked")??;
    *console = console_of(dir);
    expect_exit(&fin, s.timeout, 1, "dump complete").map_err(|e| Failed(format!("{}\nserver log:\n{}", e.0, server.log_text())))?;
    expect_verdict(console, "complete")?;
    let dirs = server.dump_dirs();
    let complete: Vec<_> = dirs.iter().filter(|d| d.join("vmcore").is_file()).collect();
    let incomplete: Vec<_> = dirs.iter().filter(|d| d.join("vmcore.incomplete").is_file()).collect();
    if complete.len() != 1 || incomplete.len() != 1 {
        return Err(format!(
            "expected one complete and one incomplete dump directory, found {dirs:?}\nserver log:\n{}",
            server.log_text()
        )
        .into());
    }
    let vmcore = std::fs::read(complete[0].join("vmcore")).map_err(|e| e.to_string())?;
    details.push(verify_dump(&vmcore, &image, "vmcore after the restart")?);
    let partial = std::fs::read(incomplete[0].join("vmcore.incomplete")).map_err(|e| e.to_string())?;
    match status_of(&partial) {
        Some(st) if st & STATUS_INCOMPLETE != 0 => {}
        other => return Err(format!("vmcore.incomplete has status {other:?}: INCOMPLETE (0x8) not set").into()),
    }
    details.push(format!(
        "server killed with {:.1} MiB received; the first attempt is kept as {} ({} bytes, INCOMPLETE set)",
        killed_at as f64 / MIB as f64,
        incomplete[0].file_name().unwrap_or_default().to_string_lossy(),
        partial.len()
    ));
    for l in console.iter().filter(|l| l.contains("net:")) {
        details.push(l.clone());
    }
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

/// A tmpfs mounted for the scenario's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, Failed> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a {size} tmpfs at {} (this scenario needs root): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run_server_disk_full(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let image = SynthImage::generate(&s.spec(cfg.arch, 64))?;
    let fs = Tmpfs::mount(&dir.join("crash"), "8m")?;
    let server = Server::start(&cfg.lifeboat_bin, &fs.0, &dir.join("serve.log"), &["--reserve", "0"])?;
    let cmdline = format!(
        "{} {NET_OPTS} lifeboat.host=full",
        base_cmdline(&image, &format!("net:10.0.2.2:{}", server.addr.port()))
    );
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot_with(s, cfg, dir, &image, &cmdline, &net_args_on(VirtioBus::of(cfg.arch)), console, details)?;
    expect_exit(&fin, s.timeout, 3, "dump incomplete").map_err(|e| Failed(format!("{}\nserver log:\n{}", e.0, server.log_text())))?;
    let v = expect_verdict(console, "incomplete")?;
    let dirs = server.dump_dirs();
    let [d] = dirs.as_slice() else {
        return Err(format!("expected one dump directory, found {dirs:?}").into());
    };
    if d.join("vmcore").exists() {
        return Err("a server with a full disk stored a file named vmcore".into());
    }
    let partial = std::fs::read(d.join("vmcore.incomplete")).map_err(|e| format!("no vmcore.incomplete: {e}"))?;
    match status_of(&partial) {
        Some(st) if st & STATUS_INCOMPLETE != 0 => {}
        other => return Err(format!("vmcore.incomplete has status {other:?}: INCOMPLETE (0x8) not set").into()),
    }
    details.push(format!("verdict: {v}"));
    details.push(format!("server kept {} bytes as vmcore.incomplete", partial.len()));
    drop(server);
    drop(fs);
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

fn run_four_clients(s: &Scenario, cfg: &SuiteConfig, dir: &Path, details: &mut Vec<String>) -> Result<(), Failed> {
    let server = Server::start(&cfg.lifeboat_bin, &dir.join("crash"), &dir.join("serve.log"), &[])?;
    let mut runs = Vec::new();
    for i in 0..4u64 {
        let d = dir.join(format!("client{i}"));
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let image = SynthImage::generate(&SynthSpec::new_for(cfg.arch, s.seed + i, 64 * MIB))?;
        // Two clients with static addresses, two asking QEMU's DHCP server.
        let ip = if i < 2 { NET_OPTS } else { "lifeboat.ip=dhcp" };
        let cmdline = format!(
            "{} {ip} lifeboat.host=client{i}",
            base_cmdline(&image, &format!("net:10.0.2.2:{}", server.addr.port()))
        );
        let h = boot_in_thread(cfg, &d, &image, cmdline, net_args_on(VirtioBus::of(cfg.arch)), s.timeout)?;
        runs.push((i, d, image, h));
    }
    let mut failures = Vec::new();
    for (i, d, image, h) in runs {
        let fin = h.join().map_err(|_| "a QEMU thread panicked")??;
        let console = console_of(&d);
        let r = (|| -> Result<String, Failed> {
            expect_exit(&fin, s.timeout, 1, "dump complete")?;
            expect_verdict(&console, "complete")?;
            if i >= 2 {
                must_say(&console, "(DHCP, router 10.0.2.2)")?;
            }
            let dd: Vec<_> = server
                .dump_dirs()
                .into_iter()
                .filter(|p| p.file_name().unwrap_or_default().to_string_lossy().starts_with(&format!("client{i}-")))
                .collect();
            let [one] = dd.as_slice() else {
                return Err(format!("client{i}: expected one dump directory, found {dd:?}").into());
            };
            let vmcore = std::fs::read(one.join("vmcore")).map_err(|e| format!("client{i}: {e}"))?;
            verify_dump(&vmcore, &image, &format!("client{i}"))
        })();
        match r {
            Ok(line) => details.push(format!("{line}, QEMU {:.1} s", fin.seconds)),
            Err(Failed(why)) => failures.push(format!("client{i}: {why}\n{}", qemu::tail(&console, 10))),
        }
        let _ = std::fs::remove_dir_all(d.join("mem"));
    }
    if !failures.is_empty() {
        return Err(format!("{}\nserver log:\n{}", failures.join("\n"), server.log_text()).into());
    }
    Ok(())
}

/// One sink's numbers in `cargo xtask bench`.
#[derive(Clone, Debug)]
pub struct SinkBenchRow {
    pub sink: &'static str,
    pub ram_bytes: u64,
    /// Seconds the capture kernel took for the dump (its own clock, from the console).
    pub seconds: f64,
    /// Size of the kdump-compressed file.
    pub dump_bytes: u64,
    /// Bytes that crossed the device (framing included).
    pub wire_bytes: u64,
    /// The QEMU process from start to exit.
    pub qemu_seconds: f64,
    /// Byte-exact check of the dump that arrived.
    pub check: Result<String, String>,
}

/// Reads "dumped N MiB of RAM in S s" and "dump file F bytes …, W bytes sent" from the console.
fn console_numbers(console: &[String]) -> Option<(f64, u64, u64)> {
    let dumped = console.iter().rev().find(|l| l.starts_with("lifeboat: dumped "))?;
    let secs: f64 = dumped.split(" in ").nth(1)?.split(' ').next()?.parse().ok()?;
    let file = console.iter().rev().find(|l| l.starts_with("lifeboat: dump file "))?;
    let mut words = file.split_whitespace();
    let dump: u64 = words.nth(3)?.parse().ok()?;
    let wire: u64 = file.split("), ").nth(1)?.split(' ').next()?.parse().ok()?;
    Some((secs, dump, wire))
}

/// `cargo xtask bench`'s sink table: the same synthetic memory (`mib` MiB, one seed) dumped
/// over serial, to virtio-blk and to `lifeboat serve`, each dump checked byte for byte.
pub fn bench(cfg: &SuiteConfig, mib: u64) -> Result<Vec<SinkBenchRow>, String> {
    let mut spec = SynthSpec::new_for(cfg.arch, 0xbe4c, mib * MIB);
    spec.guest_ram = (mib + 256) * MIB;
    let image = SynthImage::generate(&spec).map_err(|e| e.to_string())?;
    let ram: u64 = image.ranges.iter().map(|r| r.len).sum();
    let timeout = Duration::from_secs(300 + mib * 2);
    let mut rows = Vec::new();
    for sink in ["serial", "blk", "net"] {
        let dir = cfg.work_dir.join(format!("bench-{sink}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let blobs = image.write_blobs(&dir.join("mem")).map_err(|e| format!("writing synthetic memory: {e}"))?;
        let disk = dir.join("dump.img");
        let mut server = None;
        let (sinks, extra, opts) = match sink {
            "serial" => ("serial".to_string(), Vec::new(), String::new()),
            "blk" => {
                std::fs::File::create(&disk)
                    .and_then(|f| f.set_len(mib * MIB))
                    .map_err(|e| format!("{}: {e}", disk.display()))?;
                (
                    format!("blk:serial={DUMP_SERIAL}"),
                    disk_args_on(VirtioBus::of(cfg.arch), &disk, "d0", DUMP_SERIAL),
                    String::new(),
                )
            }
            _ => {
                let s = Server::start(&cfg.lifeboat_bin, &dir.join("crash"), &dir.join("serve.log"), &[])
                    .map_err(|f| f.0)?;
                let port = s.addr.port();
                server = Some(s);
                (
                    format!("net:10.0.2.2:{port}"),
                    net_args_on(VirtioBus::of(cfg.arch)),
                    format!(" {NET_OPTS} lifeboat.host=bench"),
                )
            }
        };
        let cmdline = format!("{}{opts}", base_cmdline(&image, &sinks));
        println!("bench: {sink}: {mib} MiB of synthetic memory …");
        let fin = QemuBoot { arch: cfg.arch, capture_elf: &cfg.capture_elf, dir: &dir, cmdline: &cmdline, blobs: &blobs, extra: &extra, timeout }
            .run()?;
        let console = console_of(&dir);
        let (seconds, dump_bytes, wire_bytes) = console_numbers(&console).unwrap_or((0.0, 0, 0));
        let check = (|| -> Result<String, Failed> {
            expect_exit(&fin, timeout, 1, "dump complete")?;
            let file = match sink {
                "serial" => {
                    let c = qemu::receive_command(&cfg.lifeboat_bin, &dir);
                    let f = qemu::run_with_timeout(c, None, &dir.join("receive.stdout"), &dir.join("receive.stderr"), timeout)?;
                    if f.code() != Some(0) {
                        return Err(format!("lifeboat receive exited {:?}", f.code()).into());
                    }
                    std::fs::read(dir.join("vmcore")).map_err(|e| e.to_string())?
                }
                "blk" => {
                    let out = dir.join("vmcore");
                    let code = fetch(cfg, &dir, &disk, &out)?;
                    if code != 0 {
                        return Err(format!("lifeboat fetch exited {code}").into());
                    }
                    std::fs::read(&out).map_err(|e| e.to_string())?
                }
                _ => {
                    let s = server.as_ref().expect("net has a server");
                    let d = s.dump_dirs().into_iter().next().ok_or("the server stored nothing")?;
                    std::fs::read(d.join("vmcore")).map_err(|e| e.to_string())?
                }
            };
            verify_dump(&file, &image, "byte-exact")
        })()
        .map_err(|f| f.0);
        println!("bench: {sink}: {:.1} s, check: {}", seconds, check.as_deref().unwrap_or_else(|e| e));
        rows.push(SinkBenchRow { sink, ram_bytes: ram, seconds, dump_bytes, wire_bytes, qemu_seconds: fin.seconds, check });
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(rows)
}

/// The sink table, Markdown.
pub fn bench_table(rows: &[SinkBenchRow]) -> String {
    let mut s = String::from(
        "| sink | RAM | capture kernel time | RAM MB/s | dump | wire bytes | wire MB/s | compression | check |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let per = |b: u64| if r.seconds > 0.0 { format!("{:.1}", b as f64 / 1e6 / r.seconds) } else { "-".into() };
        s.push_str(&format!(
            "| {} | {} MiB | {:.1} s | {} | {:.1} MB | {:.1} MB | {} | {:.2} | {} |\n",
            r.sink,
            r.ram_bytes / MIB,
            r.seconds,
            per(r.ram_bytes),
            r.dump_bytes as f64 / 1e6,
            r.wire_bytes as f64 / 1e6,
            per(r.wire_bytes),
            if r.dump_bytes > 0 { r.ram_bytes as f64 / r.dump_bytes as f64 } else { 0.0 },
            match &r.check {
                Ok(_) => "byte-exact".to_string(),
                Err(e) => format!("FAILED: {e}"),
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(super::crc32(b""), 0);
    }
}
