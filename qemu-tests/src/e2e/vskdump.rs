//! `cargo xtask bench --vs-kdump`: lifeboat against Debian's own Linux kdump on the same crash.
//!
//! Both sides boot the same Debian guest (the e2e cloud kernel and initramfs, plus Linux
//! kdump's capture kernel and initramfs in `/kdump/`), crash it with the same
//! `echo c > /proc/sysrq-trigger`, and write a `-d 31` zlib kdump-compressed dump to a
//! virtio-blk disk:
//!
//! - **Linux kdump**: `/init` runs `kexec -p` of the same Debian cloud kernel with a capture
//!   initramfs built here from Debian packages (busybox-static, makedumpfile and its libraries,
//!   the virtio modules; [`super::initramfs::build_kdump_initrd`]), with kdump-tools'
//!   command line. Its `/init` mounts the ext4 dump disk (made on the host by `mke2fs`), runs
//!   `makedumpfile -c -d 31 /proc/vmcore /mnt/vmcore`, syncs and prints "kdump: dump complete".
//! - **lifeboat**: `lifeboat load` (kexec_file_load) with `lifeboat.sink=blk:/dev/vda
//!   lifeboat.level=31 lifeboat.action=poweroff`, raw disk.
//!
//! For each guest size and side the `crashkernel=` sizes are tried in ascending order; the
//! first one whose whole capture works is the smallest, and the timing repetitions run at it
//! (the working sweep run is the first repetition). Times come from the serial console, read
//! from QEMU's stdout by a thread that timestamps every read: seconds from the sysrq line to
//! the capture kernel's first line (Linux: "Linux version"; lifeboat: its first "lifeboat: "
//! line) and to dump complete (Linux: the marker after makedumpfile and sync; lifeboat: its
//! verdict). Every dump is checked: `makedumpfile --dump-dmesg` must find the sysrq line, and
//! lifeboat's must come back with `lifeboat fetch` (byte for byte the start of the disk).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::arch::HostTools;
use super::checks::{self, check, Check};
use super::guest::{find, Qemu, MARK_LIFEBOAT, MARK_SYSRQ, MARK_VERDICT};
use super::initramfs::{MARK_KDUMP_DONE, MARK_KDUMP_FAILED, MARK_LOAD_FAILED};
use super::{chart, initramfs, inputs, sink, E2eConfig, E2eError};
use crate::verify::BLOCK_SIZE;

/// Linux kdump's `crashkernel=` sizes tried, MiB, ascending.
pub const LINUX_SIZES_MIB: &[u64] = &[64, 72, 80, 96, 128];
/// The capture kernel's first console line (its first printk after the kexec jump).
pub const MARK_LINUX_FIRST: &str = "Linux version";
/// The ext4 dump disk of the Linux side (sparse; makedumpfile writes a file on it).
pub const LINUX_DISK_BYTES: u64 = 1 << 30;
/// After the sysrq, the capture kernel must print its first line within this time.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// lifeboat's sizes: `bench::SIZES` ("2M", "3M", …) in MiB.
pub fn lifeboat_sizes_mib() -> Vec<u64> {
    super::bench::SIZES
        .iter()
        .filter_map(|s| s.strip_suffix('M')?.parse().ok())
        .collect()
}

/// What `cargo xtask bench --vs-kdump` asks for.
#[derive(Clone, Debug)]
pub struct VsKdumpConfig {
    /// Repetitions at the smallest working size (the working sweep run counts as the first).
    pub reps: usize,
    /// Guest RAM sizes, MiB.
    pub mibs: Vec<u64>,
    /// Where to write `benchmarks.md` and `benchmarks.png` (none: print only).
    pub docs_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Linux,
    Lifeboat,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Linux => "Linux kdump",
            Side::Lifeboat => "lifeboat",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Side::Linux => "linux",
            Side::Lifeboat => "lifeboat",
        }
    }
    fn sizes(self) -> Vec<u64> {
        match self {
            Side::Linux => LINUX_SIZES_MIB.to_vec(),
            Side::Lifeboat => lifeboat_sizes_mib(),
        }
    }
    /// The guest's command line (`e2e.load=` is read by `/init`).
    pub fn append(self, crashkernel_mib: u64) -> String {
        match self {
            Side::Linux => format!("console=ttyS0 crashkernel={crashkernel_mib}M panic=0 e2e.load=kdump"),
            Side::Lifeboat => format!(
                "console=ttyS0 crashkernel={crashkernel_mib}M panic=0 e2e.load=file e2e.sink=blk:{} \
                 e2e.lbopt=lifeboat.level=31 e2e.lbopt=lifeboat.action=poweroff",
                sink::GUEST_DISK
            ),
        }
    }
}

/// One boot, crash and capture.
#[derive(Clone, Debug)]
pub struct Run {
    pub side: Side,
    pub mem_mib: u64,
    pub crashkernel_mib: u64,
    /// `Err(why)` when the capture did not finish or a check failed.
    pub outcome: Result<(), String>,
    /// Seconds from the sysrq line to the capture kernel's first line.
    pub first_line: Option<f64>,
    /// Seconds from the sysrq line to dump complete.
    pub complete: Option<f64>,
    pub dump_bytes: Option<u64>,
    /// The dump level in the dump's sub header.
    pub dump_level: Option<u32>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// Wall-clock seconds of the whole run (boot, capture, checks).
    pub wall: f64,
    pub dir: PathBuf,
}

/// One side at one guest size.
#[derive(Clone, Debug)]
pub struct Cell {
    pub side: Side,
    pub mem_mib: u64,
    /// Sweep: (crashkernel MiB, outcome).
    pub tried: Vec<(u64, Result<(), String>)>,
    pub smallest: Option<u64>,
    /// The runs at the smallest size (the timing repetitions, failures included).
    pub runs: Vec<Run>,
    /// The sweep's failed runs.
    pub sweep_failures: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Cell {
    fn ok_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.outcome.is_ok())
    }
    pub fn first_line(&self) -> Option<f64> {
        median(self.ok_runs().filter_map(|r| r.first_line).collect())
    }
    pub fn complete(&self) -> Option<f64> {
        median(self.ok_runs().filter_map(|r| r.complete).collect())
    }
    pub fn dump_bytes(&self) -> Option<f64> {
        median(
            self.ok_runs()
                .filter_map(|r| r.dump_bytes.map(|b| b as f64))
                .collect(),
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct VsKdumpReport {
    pub kernel: String,
    pub kdump_packages: Vec<(String, String)>,
    pub reps: usize,
    pub cells: Vec<Cell>,
    pub seconds: f64,
    pub estimate_seconds: f64,
    pub host: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the runs started and ended: other work on the
    /// host slows both sides.
    pub loadavg: (String, String),
}

/// Guest sizes as "1 GiB" or "1536 MiB".
fn mem_name(mib: u64) -> String {
    if mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// The rough cost of one run on a 2-core TCG host (seconds), for the estimate printed first.
fn estimate_run(side: Side, mem_mib: u64, works: bool) -> f64 {
    let gib = mem_mib as f64 / 1024.0;
    match (side, works) {
        (_, false) => 10.0 + 3.0 * gib,
        (Side::Linux, true) => 32.0 + 8.0 * gib,
        (Side::Lifeboat, true) => 18.0 + 8.0 * gib,
    }
}

/// The expected total: sweeps up to the known smallest sizes (80M and 4M here), then the
/// repetitions.
pub fn estimate(cfg: &VsKdumpConfig) -> f64 {
    let mut t = 0.0;
    for &m in &cfg.mibs {
        for (side, known) in [(Side::Linux, 80), (Side::Lifeboat, 4)] {
            let fails = side.sizes().iter().filter(|&&s| s < known).count();
            t += fails as f64 * estimate_run(side, m, false)
                + cfg.reps as f64 * estimate_run(side, m, true);
        }
    }
    t + 60.0
}

struct Ctx<'a> {
    cfg: &'a E2eConfig,
    inputs: inputs::Inputs,
    initramfs: PathBuf,
    work: PathBuf,
    seq: usize,
}

/// A program from e2fsprogs (in /sbin, which is not on every user's PATH).
fn e2fs_tool(name: &str) -> Result<PathBuf, String> {
    for d in ["/sbin", "/usr/sbin", "/bin", "/usr/bin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no {name}; install the Debian package e2fsprogs (cargo xtask setup does)"
    ))
}

/// The serial console as QEMU writes it to its stdout, with when each read returned.
#[derive(Default)]
struct Console {
    bytes: Vec<u8>,
    /// (end offset of a read, seconds since QEMU started).
    reads: Vec<(usize, f64)>,
}

impl Console {
    /// When the byte at `pos` arrived.
    fn time_of(&self, pos: usize) -> Option<f64> {
        self.reads
            .iter()
            .find(|(end, _)| *end > pos)
            .map(|(_, t)| *t)
    }
    fn find_from(&self, from: usize, marker: &str) -> Option<usize> {
        let from = from.min(self.bytes.len());
        find(&self.bytes[from..], marker.as_bytes()).map(|i| from + i)
    }
    /// The complete line holding `pos`, if its end arrived.
    fn line_at(&self, pos: usize) -> Option<String> {
        let start = self.bytes[..pos]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = pos + self.bytes[pos..].iter().position(|&b| b == b'\n')?;
        Some(
            String::from_utf8_lossy(&self.bytes[start..end])
                .trim()
                .to_string(),
        )
    }
}

/// The dump level in a kdump-compressed file's sub header (`kdump_sub_header.dump_level`,
/// after `phys_base`).
pub fn dump_level(file: &Path) -> Option<u32> {
    let mut f = std::fs::File::open(file).ok()?;
    let mut b = vec![0u8; BLOCK_SIZE + 16];
    f.read_exact(&mut b).ok()?;
    if &b[..8] != b"KDUMP   " {
        return None;
    }
    Some(u32::from_le_bytes(
        b[BLOCK_SIZE + 8..BLOCK_SIZE + 12].try_into().unwrap(),
    ))
}

/// How the watch ended.
enum Watch {
    /// The dump-complete marker (its position).
    Complete(usize),
    Failed(String),
}

fn run_once(ctx: &mut Ctx, side: Side, mem_mib: u64, ck: u64) -> Run {
    ctx.seq += 1;
    let dir = ctx.work.join(format!(
        "{:02}-{}-{}m-ck{}m",
        ctx.seq,
        side.word(),
        mem_mib,
        ck
    ));
    let start = Instant::now();
    let mut run = Run {
        side,
        mem_mib,
        crashkernel_mib: ck,
        outcome: Ok(()),
        first_line: None,
        complete: None,
        dump_bytes: None,
        dump_level: None,
        checks: vec![],
        notes: vec![],
        wall: 0.0,
        dir: dir.clone(),
    };
    let r = run_body(ctx, &mut run, &dir);
    if let Err(e) = r {
        run.outcome = Err(e);
    } else if let Some(c) = run.checks.iter().find(|c| !c.passed) {
        run.outcome = Err(format!("check {} failed: {}", c.name, c.detail));
    }
    if run.outcome.is_ok() {
        // Keep the console and the tools' output, drop the big files.
        for f in ["dump.img", "vmcore"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    run.wall = start.elapsed().as_secs_f64();
    run
}

fn run_body(ctx: &mut Ctx, run: &mut Run, dir: &Path) -> Result<(), String> {
    let (side, mem_mib, ck) = (run.side, run.mem_mib, run.crashkernel_mib);
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let disk = dir.join("dump.img");
    let f = std::fs::File::create(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    match side {
        Side::Linux => {
            f.set_len(LINUX_DISK_BYTES).map_err(|e| e.to_string())?;
            drop(f);
            // ext4 as Debian makes it, without lazy initialisation (no background zeroing
            // in the capture kernel), few inodes (one file).
            let out = Command::new(e2fs_tool("mke2fs")?)
                .args([
                    "-q", "-F", "-t", "ext4", "-N", "64", "-m", "0", "-L", "kdump",
                ])
                .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&disk)
                .output()
                .map_err(|e| format!("mke2fs: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "mke2fs failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Side::Lifeboat => f.set_len(sink::DISK_BYTES).map_err(|e| e.to_string())?,
    }
    let serial = if side == Side::Linux {
        "kdump"
    } else {
        sink::DISK_SERIAL
    };
    let mem = format!("{mem_mib}M");
    let mut cmd = Command::new(crate::qemu::qemu_binary());
    cmd.args(["-M", "pc", "-accel", "tcg", "-m", &mem, "-smp", "2"])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&ctx.inputs.vmlinuz)
        .arg("-initrd")
        .arg(&ctx.initramfs)
        .arg("-append")
        .arg(side.append(ck))
        .args(crate::sinks::disk_args(&disk, "dump", serial));
    std::fs::write(dir.join("qemu.cmd"), format!("{cmd:?}\n")).map_err(|e| e.to_string())?;
    let stderr = std::fs::File::create(dir.join("qemu.stderr")).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut qemu = Qemu(child);
    let console = Arc::new(Mutex::new(Console::default()));
    let reader = {
        let console = console.clone();
        let mut log = std::fs::File::create(dir.join("serial.bin")).map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let t = t0.elapsed().as_secs_f64();
                        let _ = log.write_all(&buf[..n]);
                        let mut c = console.lock().unwrap();
                        c.bytes.extend_from_slice(&buf[..n]);
                        let end = c.bytes.len();
                        c.reads.push((end, t));
                    }
                }
            }
        })
    };
    let timeout = Duration::from_secs(180 + 60 * mem_mib.div_ceil(1024));
    let mut sysrq_seen: Option<Instant> = None;
    let watch = loop {
        std::thread::sleep(Duration::from_millis(50));
        let exited = matches!(qemu.0.try_wait(), Ok(Some(_)));
        if exited {
            // Let the reader drain the pipe before the last look.
            std::thread::sleep(Duration::from_millis(200));
        }
        let c = console.lock().unwrap();
        if let Some(at) = c.find_from(0, MARK_LOAD_FAILED) {
            if let Some(l) = c.line_at(at) {
                // The loader's own message is on the line before.
                let before = c.bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .and_then(|nl| {
                        let start = c.bytes[..nl]
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map_or(0, |i| i + 1);
                        c.line_at(start).filter(|l| !l.is_empty())
                    });
                break Watch::Failed(format!(
                    "the guest could not arm kdump: {l}{}",
                    before.map_or(String::new(), |b| format!(" (after: {b})"))
                ));
            }
        }
        let sysrq = c.find_from(0, MARK_SYSRQ);
        if let Some(s) = sysrq {
            sysrq_seen.get_or_insert_with(Instant::now);
            match side {
                Side::Linux => {
                    if let Some(first) = c.find_from(s, MARK_LINUX_FIRST) {
                        if let Some(at) = c.find_from(first, "Kernel panic") {
                            if let Some(l) = c.line_at(at) {
                                break Watch::Failed(format!("the capture kernel panicked: {l}"));
                            }
                        }
                    }
                    if let Some(at) = c.find_from(s, MARK_KDUMP_FAILED) {
                        if let Some(l) = c.line_at(at) {
                            break Watch::Failed(format!("the capture initramfs failed: {l}"));
                        }
                    }
                    if let Some(at) = c.find_from(s, MARK_KDUMP_DONE) {
                        if c.line_at(at).is_some() {
                            break Watch::Complete(at);
                        }
                    }
                }
                Side::Lifeboat => {
                    if let Some(at) = c.find_from(s, MARK_VERDICT) {
                        if let Some(l) = c.line_at(at) {
                            if l.contains("verdict: complete") {
                                break Watch::Complete(at);
                            }
                            break Watch::Failed(format!("lifeboat's {l}"));
                        }
                    }
                }
            }
            let first = match side {
                Side::Linux => MARK_LINUX_FIRST,
                Side::Lifeboat => MARK_LIFEBOAT,
            };
            if c.find_from(s, first).is_none()
                && sysrq_seen.is_some_and(|t| t.elapsed() > FIRST_LINE_TIMEOUT)
            {
                break Watch::Failed(format!(
                    "no {first:?} line {} s after the sysrq: the capture kernel did not start",
                    FIRST_LINE_TIMEOUT.as_secs()
                ));
            }
        }
        if exited {
            break Watch::Failed(format!(
                "QEMU exited before dump complete (stage: {})",
                if sysrq.is_some() {
                    "crashed"
                } else {
                    "first kernel booting"
                }
            ));
        }
        if t0.elapsed() > timeout {
            break Watch::Failed(format!(
                "timed out after {} s (stage: {})",
                timeout.as_secs(),
                if sysrq.is_some() {
                    "crashed, capture running"
                } else {
                    "first kernel booting"
                }
            ));
        }
    };
    // The capture powers off after dump complete; give it time, then make sure QEMU is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = qemu.0.try_wait() {
            exited = true;
            break;
        }
        if matches!(watch, Watch::Failed(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !exited && matches!(watch, Watch::Complete(_)) {
        run.notes
            .push("QEMU did not exit within 30 s of dump complete; killed".into());
    }
    drop(qemu);
    let _ = reader.join();
    let c = console.lock().unwrap();
    let text: Vec<String> = checks::console_text(&c.bytes);
    let tail = || {
        let from = text.len().saturating_sub(25);
        text[from..]
            .iter()
            .map(|l| format!("    | {l}\n"))
            .collect::<String>()
    };
    let sysrq = c.find_from(0, MARK_SYSRQ);
    let first_marker = match side {
        Side::Linux => MARK_LINUX_FIRST,
        Side::Lifeboat => MARK_LIFEBOAT,
    };
    if let Some(s) = sysrq {
        let ts = c.time_of(s);
        let first = c.find_from(s, first_marker);
        if let (Some(ts), Some(tf)) = (ts, first.and_then(|f| c.time_of(f))) {
            run.first_line = Some(tf - ts);
        }
        if let (Watch::Complete(at), Some(ts)) = (&watch, ts) {
            run.complete = c.time_of(*at).map(|t| t - ts);
        }
        if side == Side::Lifeboat {
            // lifeboat's warnings (e.g. about a dump level it does not implement).
            let after = String::from_utf8_lossy(&c.bytes[s..]).to_string();
            for l in after.lines().filter(|l| l.contains("lifeboat: warning:")) {
                run.notes.push(l.trim().to_string());
            }
        }
    }
    drop(c);
    if let Watch::Failed(why) = watch {
        return Err(format!(
            "{why}\n  console tail ({}):\n{}",
            dir.join("serial.bin").display(),
            tail()
        ));
    }
    let vmcore = dir.join("vmcore");
    match side {
        Side::Linux => {
            let _ = std::fs::remove_file(&vmcore);
            let out = Command::new(e2fs_tool("debugfs")?)
                .arg("-R")
                .arg(format!(
                    "dump /{} {}",
                    initramfs::KDUMP_FILE,
                    vmcore.display()
                ))
                .arg(&disk)
                .output()
                .map_err(|e| format!("debugfs: {e}"))?;
            run.checks.push(check(
                "debugfs dump (makedumpfile's file off the ext4 disk)",
                match std::fs::metadata(&vmcore) {
                    Ok(m) if out.status.success() && m.len() > 0 => {
                        Ok(format!("{} bytes", m.len()))
                    }
                    _ => Err(format!(
                        "debugfs wrote no /{}: {}",
                        initramfs::KDUMP_FILE,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                },
            ));
        }
        Side::Lifeboat => {
            let mut host = sink::SinkHost::Blk { disk: disk.clone() };
            let (c, _) = host.collect(&HostTools::Native, &ctx.cfg.lifeboat_host, dir, "complete");
            run.checks.push(c);
        }
    }
    if !vmcore.is_file() {
        return Ok(());
    }
    run.dump_bytes = std::fs::metadata(&vmcore).ok().map(|m| m.len());
    run.dump_level = dump_level(&vmcore);
    if run.dump_level != Some(31) {
        run.notes.push(format!(
            "the dump's sub header says dump level {:?}, not 31",
            run.dump_level
        ));
    }
    run.checks.push(check(
        "makedumpfile --dump-dmesg",
        checks::makedumpfile_dmesg(&HostTools::Native, dir, &vmcore),
    ));
    Ok(())
}

fn describe(r: &Run) -> String {
    let s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} s"));
    match &r.outcome {
        Ok(()) => format!(
            "ok: first line {}, dump complete {}, dump {:.1} MB, level {} ({:.0} s)",
            s(r.first_line),
            s(r.complete),
            r.dump_bytes.unwrap_or(0) as f64 / 1e6,
            r.dump_level.map_or("?".into(), |l| l.to_string()),
            r.wall
        ),
        Err(e) => format!(
            "FAILED ({:.0} s): {}",
            r.wall,
            e.lines().next().unwrap_or("")
        ),
    }
}

/// Run the comparison; prints as it goes, returns the report (also when runs failed: they are
/// in it). `Err` only when it could not start.
pub fn run(cfg: &E2eConfig, vs: &VsKdumpConfig) -> Result<VsKdumpReport, E2eError> {
    let start = Instant::now();
    if vs.reps == 0 || vs.mibs.is_empty() {
        return Err(E2eError::Setup(
            "--reps must be at least 1 and --mib must list a size".into(),
        ));
    }
    for (p, what) in [
        (&cfg.bzimage, "the capture kernel"),
        (&cfg.lifeboat_host, "the host lifeboat tool"),
        (&cfg.lifeboat_guest, "the static lifeboat for the guest"),
    ] {
        if !p.is_file() {
            return Err(E2eError::Setup(format!(
                "{what} {} does not exist (cargo xtask build)",
                p.display()
            )));
        }
    }
    e2fs_tool("mke2fs")
        .and(e2fs_tool("debugfs"))
        .map_err(E2eError::Setup)?;
    let est = estimate(vs);
    println!(
        "vs-kdump: {} guest size(s), {} repetition(s): estimated {:.0} min on a 2-core TCG host",
        vs.mibs.len(),
        vs.reps,
        est / 60.0
    );
    let mut log = |m: String| println!("vs-kdump: {m}");
    let inputs = inputs::prepare(&cfg.cache_dir, &mut log).map_err(E2eError::Setup)?;
    let kdump = inputs::prepare_kdump(&cfg.cache_dir, &mut log).map_err(E2eError::Setup)?;
    let work = cfg.work_dir.join("vs-kdump");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .map_err(|e| E2eError::Setup(format!("{}: {e}", work.display())))?;
    let kdump_initrd = initramfs::build_kdump_initrd(&inputs, &kdump).map_err(E2eError::Setup)?;
    let cpio = initramfs::build_vs_kdump(
        &inputs,
        &cfg.bzimage,
        Some(&cfg.lifeboat_guest),
        &kdump_initrd,
    )
    .map_err(E2eError::Setup)?;
    let initramfs = work.join("initramfs.cpio");
    std::fs::write(&initramfs, &cpio)
        .map_err(|e| E2eError::Setup(format!("{}: {e}", initramfs.display())))?;
    std::fs::write(work.join("kdump-initrd.cpio"), &kdump_initrd)
        .map_err(|e| E2eError::Setup(e.to_string()))?;
    println!(
        "vs-kdump: guest {} {}; Linux kdump initramfs {} bytes ({}); first initramfs {} bytes",
        inputs.image_package,
        inputs.image_version,
        kdump_initrd.len(),
        kdump
            .packages
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        cpio.len()
    );
    let mut report = VsKdumpReport {
        kernel: format!("{} {}", inputs.image_package, inputs.image_version),
        kdump_packages: kdump.packages.clone(),
        reps: vs.reps,
        estimate_seconds: est,
        host: host_description(),
        loadavg: (loadavg(), String::new()),
        ..Default::default()
    };
    let mut ctx = Ctx {
        cfg,
        inputs,
        initramfs,
        work,
        seq: 0,
    };
    for &mem in &vs.mibs {
        let mut cells: Vec<Cell> = Vec::new();
        for side in [Side::Linux, Side::Lifeboat] {
            let mut cell = Cell {
                side,
                mem_mib: mem,
                tried: vec![],
                smallest: None,
                runs: vec![],
                sweep_failures: vec![],
            };
            for ck in side.sizes() {
                let r = run_once(&mut ctx, side, mem, ck);
                println!(
                    "vs-kdump: {}, {}, crashkernel={ck}M (sweep): {}",
                    side.name(),
                    mem_name(mem),
                    describe(&r)
                );
                cell.tried.push((
                    ck,
                    r.outcome
                        .clone()
                        .map_err(|e| e.lines().next().unwrap_or("").to_string()),
                ));
                if r.outcome.is_ok() {
                    cell.smallest = Some(ck);
                    cell.runs.push(r);
                    break;
                }
                if let Err(e) = &r.outcome {
                    if e.contains("console tail") && side == Side::Lifeboat && ck >= 8 {
                        print!("{e}");
                    }
                }
                cell.sweep_failures.push(r);
            }
            cells.push(cell);
        }
        for rep in 2..=vs.reps {
            // Alternate the sides so that load from elsewhere on the host hits both alike.
            for cell in cells.iter_mut() {
                let Some(ck) = cell.smallest else { continue };
                let r = run_once(&mut ctx, cell.side, mem, ck);
                println!(
                    "vs-kdump: {}, {}, crashkernel={ck}M (repetition {rep}): {}",
                    cell.side.name(),
                    mem_name(mem),
                    describe(&r)
                );
                if let Err(e) = &r.outcome {
                    print!("{e}");
                }
                cell.runs.push(r);
            }
        }
        report.cells.extend(cells);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.loadavg.1 = loadavg();
    let table = report.table();
    println!("\n{table}");
    println!(
        "vs-kdump: took {:.1} min (estimated {:.1} min)",
        report.seconds / 60.0,
        report.estimate_seconds / 60.0
    );
    if let Some(docs) = &vs.docs_dir {
        let png = report.chart().map_err(E2eError::Setup)?;
        let png_path = docs.join("benchmarks.png");
        std::fs::write(&png_path, png)
            .map_err(|e| E2eError::Setup(format!("{}: {e}", png_path.display())))?;
        let md_path = docs.join("benchmarks.md");
        std::fs::write(&md_path, report.markdown())
            .map_err(|e| E2eError::Setup(format!("{}: {e}", md_path.display())))?;
        println!(
            "vs-kdump: wrote {} and {}",
            md_path.display(),
            png_path.display()
        );
    }
    Ok(report)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let qemu = Command::new(crate::qemu::qemu_binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(String::from)
        })
        .unwrap_or_default();
    format!("{qemu}, TCG (no KVM), {cores} host cores ({cpu}), shared with other work")
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} s"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}"))
}

impl VsKdumpReport {
    fn cell(&self, side: Side, mem: u64) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.side == side && c.mem_mib == mem)
    }
    fn mems(&self) -> Vec<u64> {
        let mut m: Vec<u64> = self.cells.iter().map(|c| c.mem_mib).collect();
        m.dedup();
        m
    }

    /// The side-by-side table of medians (markdown).
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "lifeboat vs Linux kdump: guest {}, QEMU TCG -smp 2, medians of the passing runs at the smallest working crashkernel= ({} repetitions asked)\n",
            self.kernel, self.reps
        );
        let _ = writeln!(
            o,
            "| guest | metric | Linux kdump | lifeboat | lifeboat / Linux |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for mem in self.mems() {
            let (Some(l), Some(b)) = (self.cell(Side::Linux, mem), self.cell(Side::Lifeboat, mem))
            else {
                continue;
            };
            let g = mem_name(mem);
            let sweep = |c: &Cell| {
                let failed: Vec<String> = c
                    .tried
                    .iter()
                    .filter(|(_, r)| r.is_err())
                    .map(|(s, _)| format!("{s}M"))
                    .collect();
                let s = c
                    .smallest
                    .map_or("none works".to_string(), |s| format!("**{s}M**"));
                if failed.is_empty() {
                    s
                } else {
                    format!("{s} ({} fail)", failed.join(", "))
                }
            };
            let ck = |c: &Cell| c.smallest.map(|s| s as f64);
            let _ = writeln!(
                o,
                "| {g} | smallest working crashkernel= | {} | {} | {} |",
                sweep(l),
                sweep(b),
                ratio_text(ratio(ck(b), ck(l)))
            );
            let _ = writeln!(
                o,
                "| {g} | sysrq → capture kernel's first console line | {} | {} | {} |",
                secs(l.first_line()),
                secs(b.first_line()),
                ratio_text(ratio(b.first_line(), l.first_line()))
            );
            let _ = writeln!(
                o,
                "| {g} | sysrq → dump complete | {} | {} | {} |",
                secs(l.complete()),
                secs(b.complete()),
                ratio_text(ratio(b.complete(), l.complete()))
            );
            let mb = |v: Option<f64>| {
                v.map_or("-".into(), |v| {
                    format!("{:.1} MB ({:.0} bytes)", v / 1e6, v)
                })
            };
            let _ = writeln!(
                o,
                "| {g} | dump size | {} | {} | {} |",
                mb(l.dump_bytes()),
                mb(b.dump_bytes()),
                ratio_text(ratio(b.dump_bytes(), l.dump_bytes()))
            );
            let passed = |c: &Cell| {
                format!(
                    "{}/{}",
                    c.runs.iter().filter(|r| r.outcome.is_ok()).count(),
                    c.runs.len()
                )
            };
            let _ = writeln!(
                o,
                "| {g} | runs passed at that size | {} | {} | |",
                passed(l),
                passed(b)
            );
        }
        let failures: Vec<&Run> = self
            .cells
            .iter()
            .flat_map(|c| c.runs.iter())
            .filter(|r| r.outcome.is_err())
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(
                o,
                "\n**{} run(s) at the smallest size FAILED** (not in the medians):",
                failures.len()
            );
            for r in failures {
                let _ = writeln!(
                    o,
                    "- {} {} crashkernel={}M: {}",
                    r.side.name(),
                    mem_name(r.mem_mib),
                    r.crashkernel_mib,
                    r.outcome.as_ref().unwrap_err().lines().next().unwrap_or("")
                );
            }
        }
        let odd: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| c.runs.iter())
            .filter(|r| r.outcome.is_ok() && r.dump_level != Some(31))
            .map(|r| {
                format!(
                    "{} {}: dump level {:?}",
                    r.side.name(),
                    mem_name(r.mem_mib),
                    r.dump_level
                )
            })
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(
                o,
                "\n**Not the same dump level on both sides:** {}",
                odd.join("; ")
            );
        }
        o
    }

    /// The goals of issue 6, each met or not by the measured numbers (all guest sizes).
    pub fn goals(&self) -> Vec<(String, String, String)> {
        let mems = self.mems();
        let per = |f: &dyn Fn(u64) -> Option<f64>,
                   fmt: &dyn Fn(f64) -> String|
         -> (Vec<Option<f64>>, String) {
            let v: Vec<Option<f64>> = mems.iter().map(|&m| f(m)).collect();
            let text = mems
                .iter()
                .zip(&v)
                .map(|(m, x)| {
                    format!(
                        "{}: {}",
                        mem_name(*m),
                        x.map_or("not measured".into(), |x| fmt(x))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            (v, text)
        };
        let verdict = |v: &[Option<f64>], ok: &dyn Fn(f64) -> bool| {
            if v.iter().any(|x| x.is_none()) {
                "not measured".to_string()
            } else if v.iter().all(|x| ok(x.unwrap())) {
                "**met**".to_string()
            } else {
                "**not met**".to_string()
            }
        };
        let lb = |m: u64| self.cell(Side::Lifeboat, m);
        let li = |m: u64| self.cell(Side::Linux, m);
        let mut g = Vec::new();
        let (v, t) = per(&|m| lb(m)?.smallest.map(|s| s as f64), &|x| {
            format!("{x:.0}M")
        });
        let stretch = verdict(&v, &|x| x <= 4.0);
        g.push((
            "crashkernel= ≤ 8M (stretch: 4M)".into(),
            t,
            format!(
                "{} (stretch: {})",
                verdict(&v, &|x| x <= 8.0),
                stretch.trim_matches('*')
            ),
        ));
        let (v, t) = per(&|m| lb(m)?.first_line(), &|x| format!("{x:.2} s"));
        g.push((
            "capture kernel's first console line ≤ 0.1 s after the sysrq".into(),
            t,
            verdict(&v, &|x| x <= 0.1),
        ));
        let (v, t) = per(&|m| ratio(lb(m)?.complete(), li(m)?.complete()), &|x| {
            format!("{x:.3} of Linux kdump's time")
        });
        g.push((
            "dump complete in ≤ 1/4 of Linux kdump's time".into(),
            t,
            verdict(&v, &|x| x <= 0.25),
        ));
        let (v, t) = per(&|m| ratio(lb(m)?.dump_bytes(), li(m)?.dump_bytes()), &|x| {
            format!("{x:.3} × makedumpfile's size")
        });
        g.push((
            "dump no larger than makedumpfile's".into(),
            t,
            verdict(&v, &|x| x <= 1.0),
        ));
        g
    }

    /// Every run, the sweep's failures included.
    pub fn raw_runs(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "| run dir | side | guest | crashkernel= | outcome | sysrq → first line | sysrq → dump complete | dump bytes | dump level | run wall time |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
        let mut all: Vec<&Run> = self
            .cells
            .iter()
            .flat_map(|c| c.sweep_failures.iter().chain(c.runs.iter()))
            .collect();
        all.sort_by_key(|r| r.dir.clone());
        for r in all {
            let outcome = match &r.outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!(
                    "FAILED: {}",
                    e.lines().next().unwrap_or("").replace('|', "\\|")
                ),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {}M | {} | {} | {} | {} | {} | {:.0} s |",
                r.dir.file_name().unwrap_or_default().to_string_lossy(),
                r.side.name(),
                mem_name(r.mem_mib),
                r.crashkernel_mib,
                outcome,
                secs(r.first_line),
                secs(r.complete),
                r.dump_bytes.map_or("-".into(), |b| b.to_string()),
                r.dump_level.map_or("-".into(), |l| l.to_string()),
                r.wall
            );
        }
        let notes: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| c.sweep_failures.iter().chain(c.runs.iter()))
            .flat_map(|r| {
                r.notes.iter().map(move |n| {
                    format!(
                        "- {}: {n}",
                        r.dir.file_name().unwrap_or_default().to_string_lossy()
                    )
                })
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(o, "\nNotes from the runs:\n{}", notes.join("\n"));
        }
        o
    }

    pub fn chart(&self) -> Result<Vec<u8>, String> {
        let mems = self.mems();
        let panel = |title: &str, f: &dyn Fn(&Cell) -> Option<f64>| chart::Panel {
            title: title.into(),
            groups: mems
                .iter()
                .map(|&m| {
                    let v = [Side::Linux, Side::Lifeboat]
                        .iter()
                        .map(|&s| self.cell(s, m).and_then(f))
                        .collect();
                    (mem_name(m), v)
                })
                .collect(),
        };
        chart::render(
            &format!(
                "lifeboat vs Linux kdump, Debian 6.1 guest, QEMU TCG, median of {}",
                self.reps
            ),
            &[
                ("Linux kdump (makedumpfile -c -d 31)", [0x3a, 0x6e, 0xc8]),
                ("lifeboat (blk, level 31)", [0xe0, 0x80, 0x10]),
            ],
            &[
                panel("crashkernel MiB", &|c| c.smallest.map(|s| s as f64)),
                panel("s to first line", &|c| c.first_line()),
                panel("s to dump complete", &|c| c.complete()),
                panel("dump MB", &|c| c.dump_bytes().map(|b| b / 1e6)),
            ],
        )
    }

    /// `docs/benchmarks.md`.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# lifeboat vs Linux kdump\n");
        let _ = writeln!(
            o,
            "Generated by `cargo xtask bench --vs-kdump --reps {} --mib {}` (qemu-tests/src/e2e/vskdump.rs); \
             every number below was measured in that run, nothing is copied in. It took {:.1} minutes.\n",
            self.reps,
            self.mems().iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
            self.seconds / 60.0
        );
        let _ = writeln!(o, "![lifeboat vs Linux kdump](benchmarks.png)\n");
        let _ = writeln!(o, "## Results\n\n{}", self.table());
        let _ = writeln!(o, "## Goals (issue 6)\n");
        let _ = writeln!(o, "| goal | measured (lifeboat) | |\n|---|---|---|");
        for (goal, measured, verdict) in self.goals() {
            let _ = writeln!(o, "| {goal} | {measured} | {verdict} |");
        }
        let _ = writeln!(
            o,
            "\n## How it was measured\n\n\
             - **Machine**: {}. TCG times vary ±30–50 % from run to run and with other load on the host; \
             compare the ratios, which come from runs interleaved in one session (the repetitions alternate Linux and lifeboat). \
             Host load average (1/5/15 min) at the start: {}; at the end: {}.\n\
             - **Guest**: `qemu-system-x86_64 -M pc -accel tcg -m <1024M|4096M> -smp 2 -nodefaults -no-reboot -serial stdio`, \
             kernel {} (Debian bookworm cloud kernel, the e2e tests' kernel, downloaded by `apt-get download`), \
             the e2e initramfs (busybox, kexec-tools, lifeboat) plus Linux kdump's capture kernel and initramfs, and one \
             virtio-blk disk (`cache=unsafe`) for the dump. The first kernel's command line is \
             `console=ttyS0 crashkernel=<size> panic=0 e2e.load=…`; `/init` arms kdump and crashes the guest with \
             `echo c > /proc/sysrq-trigger`, exactly as the e2e scenarios do.\n\
             - **Linux kdump** (`e2e.load=kdump`): `kexec -p /kdump/vmlinuz --initrd=/kdump/initrd.cpio --command-line=…` \
             (Debian kexec-tools, kexec_load) as Debian's kdump-tools 1.8.1 `kdump-config load` does it: the capture \
             kernel is the same Debian cloud kernel; its command line is the running one without `crashkernel=` plus \
             kdump-tools' default `KDUMP_CMDLINE_APPEND` less `systemd.unit=` (no systemd here): \
             `console=ttyS0 panic=0 e2e.load=kdump reset_devices nr_cpus=1 irqpoll usbcore.nousb`. Its initramfs (uncompressed cpio, built \
             by qemu-tests/src/e2e/initramfs.rs, `build_kdump_initrd`) holds busybox-static, makedumpfile and the \
             ELF interpreter and libraries its `DT_NEEDED` entries name, all from Debian packages of the same release \
             ({}), and the virtio modules the disk needs. Its `/init` loads the modules, mounts the disk (ext4, made on the host with \
             `mke2fs -t ext4 -E lazy_itable_init=0,lazy_journal_init=0`, 1 GiB sparse), runs \
             `makedumpfile -c -d 31 /proc/vmcore /mnt/vmcore`, `sync`s and prints `kdump: dump complete`, then powers off. \
             makedumpfile writes a kdump-compressed file: it refuses an existing output path, so it cannot write to \
             the block device itself, hence the file system. This is lighter than what kdump-tools really does in its dump \
             service (it first saves the dmesg with `makedumpfile --dump-dmesg`, writes `-F` flattened output through a pipe, \
             and runs under systemd): the Linux side here is, if anything, faster and smaller than a stock Debian installation, \
             whose default reservation is `crashkernel=384M-:128M`. makedumpfile 1.7.2 prints \"The kernel version is not \
             supported\" for 6.1.192 (it knows 6.1.0) and then works: its dumps pass the checks.\n\
             - **lifeboat** (`e2e.load=file`): `lifeboat load --payload bzImage --syscall kexec_file_load lifeboat.action=halt \
             lifeboat.sink=blk:/dev/vda lifeboat.level=31 lifeboat.action=poweroff` (the later `action` wins); the dump goes \
             to the raw disk (512 MiB sparse) at offset 0.\n\
             - **Sweep**: `crashkernel=` sizes are tried in ascending order (Linux: {}; lifeboat: {}); a size works when \
             the whole capture finishes and the dump passes the checks. The first working size is the smallest; the timing \
             repetitions run at that size (the working sweep run is the first repetition).\n\
             - **Times** come from the serial console, read from QEMU's stdout by a thread that timestamps every read \
             (a few ms of resolution): from the crashed kernel's `sysrq: Trigger a crash` line to the capture kernel's \
             first line (Linux: `Linux version`, its first printk once its console is up; lifeboat: its first `lifeboat: ` line) \
             and to dump complete (Linux: the `kdump: dump complete` line, printed after makedumpfile returned 0 and `sync`; \
             lifeboat: its `lifeboat: verdict: complete` line, printed after the last write).\n\
             - **Dump size**: makedumpfile's output file (copied off the ext4 image with `debugfs -R dump`), and for \
             lifeboat what `lifeboat fetch` copies off the disk (the dump's real end, checked to be the disk's first bytes).\n\
             - **Checks** on every dump: `makedumpfile --dump-dmesg` must find `sysrq: Trigger a crash`; lifeboat's must \
             also pass `lifeboat fetch` (exit 0, equal to the start of the disk). The dump level is read from each dump's \
             sub header. A run that times out or fails a check is listed as FAILED and left out of the medians.\n",
            self.host,
            self.loadavg.0,
            self.loadavg.1,
            self.kernel,
            self.kdump_packages.iter().map(|(n, v)| format!("{n} {v}")).collect::<Vec<_>>().join(", "),
            LINUX_SIZES_MIB.iter().map(|s| format!("{s}M")).collect::<Vec<_>>().join(", "),
            lifeboat_sizes_mib().iter().map(|s| format!("{s}M")).collect::<Vec<_>>().join(", "),
        );
        let _ = writeln!(o, "## Every run\n\nRun directories are under `target/e2e/vs-kdump/` (console in `serial.bin`).\n\n{}", self.raw_runs());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(side: Side, mem: u64, ck: u64, ok: bool, first: f64, done: f64, bytes: u64) -> Run {
        Run {
            side,
            mem_mib: mem,
            crashkernel_mib: ck,
            outcome: if ok { Ok(()) } else { Err("timed out".into()) },
            first_line: Some(first),
            complete: Some(done),
            dump_bytes: Some(bytes),
            dump_level: Some(31),
            checks: vec![],
            notes: vec![],
            wall: 30.0,
            dir: PathBuf::from(format!("{}-{mem}-{ck}", side.word())),
        }
    }

    #[test]
    fn medians_ratios_goals_and_failures() {
        let linux = Cell {
            side: Side::Linux,
            mem_mib: 1024,
            tried: vec![(64, Err("panic".into())), (80, Ok(()))],
            smallest: Some(80),
            runs: vec![
                run(Side::Linux, 1024, 80, true, 1.9, 10.0, 30_000_000),
                run(Side::Linux, 1024, 80, true, 2.1, 12.0, 32_000_000),
            ],
            sweep_failures: vec![run(Side::Linux, 1024, 64, false, 0.0, 0.0, 0)],
        };
        let lb = Cell {
            side: Side::Lifeboat,
            mem_mib: 1024,
            tried: vec![(4, Ok(()))],
            smallest: Some(4),
            runs: vec![
                run(Side::Lifeboat, 1024, 4, true, 0.05, 2.0, 29_000_000),
                run(Side::Lifeboat, 1024, 4, false, 0.05, 99.0, 1),
                run(Side::Lifeboat, 1024, 4, true, 0.07, 3.0, 31_000_000),
            ],
            sweep_failures: vec![],
        };
        assert_eq!(linux.complete(), Some(11.0));
        assert_eq!(
            lb.complete(),
            Some(2.5),
            "the failed run is not in the median"
        );
        let r = VsKdumpReport {
            kernel: "k".into(),
            reps: 3,
            cells: vec![linux, lb],
            ..Default::default()
        };
        let t = r.table();
        assert!(t.contains("**80M** (64M fail)"), "{t}");
        assert!(
            t.contains("| 1 GiB | sysrq → dump complete | 11.00 s | 2.50 s | 0.227 |"),
            "{t}"
        );
        assert!(t.contains("| 2/3 |"), "{t}");
        assert!(t.contains("1 run(s) at the smallest size FAILED"), "{t}");
        let g = r.goals();
        assert_eq!(g[0].2, "**met** (stretch: met)");
        assert_eq!(g[1].2, "**met**");
        assert_eq!(g[2].2, "**met**");
        assert_eq!(g[3].2, "**met**");
        let md = r.markdown();
        assert!(
            md.contains("FAILED: timed out") && md.contains("benchmarks.png"),
            "{md}"
        );
        let png = r.chart().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn command_lines_and_sizes() {
        assert_eq!(
            Side::Linux.append(80),
            "console=ttyS0 crashkernel=80M panic=0 e2e.load=kdump"
        );
        let lb = Side::Lifeboat.append(4);
        assert!(
            lb.contains("crashkernel=4M")
                && lb.contains("e2e.sink=blk:/dev/vda")
                && lb.contains("e2e.lbopt=lifeboat.level=31"),
            "{lb}"
        );
        assert_eq!(lifeboat_sizes_mib().len(), super::super::bench::SIZES.len());
        assert!(
            estimate(&VsKdumpConfig {
                reps: 3,
                mibs: vec![1024, 4096],
                docs_dir: None
            }) > 300.0
        );
    }

    #[test]
    fn console_times_by_byte() {
        let c = Console {
            bytes: b"abc\nsysrq: Trigger a crash\nLinux version 6".to_vec(),
            reads: vec![(10, 1.0), (30, 2.5), (40, 4.0)],
        };
        let s = c.find_from(0, MARK_SYSRQ).unwrap();
        assert_eq!(c.time_of(s), Some(1.0));
        let f = c.find_from(s, MARK_LINUX_FIRST).unwrap();
        assert_eq!(c.time_of(f), Some(2.5));
        assert_eq!(c.line_at(s).as_deref(), Some("sysrq: Trigger a crash"));
        assert_eq!(c.line_at(f), None, "the line is not complete yet");
    }
}
