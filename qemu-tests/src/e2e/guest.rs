//! One crashed guest: boot Debian's kernel in QEMU (TCG), watch the serial capture for the
//! markers of each stage, and once the capture kernel printed its verdict and halted, save
//! QEMU's own view of guest memory over QMP (`dump-guest-memory`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::arch::Arch;
use super::initramfs::{MARK_CRASHING, MARK_INIT, MARK_LOAD_FAILED};

pub const MARK_SYSRQ: &str = "sysrq: Trigger a crash";
pub const MARK_LIFEBOAT: &str = "lifeboat: ";
pub const MARK_VERDICT: &str = "lifeboat: verdict: ";
/// How long the capture kernel may take to print its first line after the sysrq.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to boot the guest.
pub struct GuestSpec<'a> {
    /// Which QEMU and machine ([`Arch::machine_args`]).
    pub arch: Arch,
    pub dir: &'a Path,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub mem: &'a str,
    pub smp: u32,
    pub append: String,
    pub timeout: Duration,
    pub verbose: bool,
    /// More QEMU arguments (the dump disk, the network card).
    pub extra: Vec<String>,
}

impl GuestSpec<'_> {
    pub fn serial_path(&self) -> PathBuf {
        self.dir.join("serial.bin")
    }
    pub fn qmp_path(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn qemu_dump_path(&self) -> PathBuf {
        self.dir.join("qemu-memory.elf")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(self.arch.qemu_system());
        c.args(self.arch.machine_args())
            .args(["-accel", "tcg", "-m", self.mem])
            .args(["-smp", &self.smp.to_string()])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", self.serial_path().display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.qmp_path().display()
            ))
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initramfs)
            .arg("-append")
            .arg(&self.append)
            .args(&self.extra);
        c
    }
}

/// When each stage was first seen on the serial port (seconds since QEMU started).
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// `/init`'s first line (only [`run_until_panic`] notes it).
    pub init: Option<f64>,
    pub crashing: Option<f64>,
    pub sysrq: Option<f64>,
    pub first_lifeboat_line: Option<f64>,
    pub verdict: Option<f64>,
    pub qemu_dump_seconds: Option<f64>,
}

impl Timeline {
    pub fn sysrq_to_first_line(&self) -> Option<f64> {
        Some(self.first_lifeboat_line? - self.sysrq?)
    }
    pub fn sysrq_to_verdict(&self) -> Option<f64> {
        Some(self.verdict? - self.sysrq?)
    }
}

/// What the guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    pub timeline: Timeline,
    pub verdict: String,
    pub serial_bytes: u64,
}

/// Incrementally scans the growing serial capture for marker strings.
struct SerialWatch {
    file: Option<std::fs::File>,
    path: PathBuf,
    buf: Vec<u8>,
}

impl SerialWatch {
    /// Read what was appended; returns the offset where the new bytes start.
    fn poll(&mut self) -> usize {
        let old = self.buf.len();
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(f) = &mut self.file {
            let _ = f.read_to_end(&mut self.buf);
        }
        old
    }

    /// Where `marker` is in the bytes from `new_from` on (including a marker split across
    /// polls), but not before `floor`.
    fn saw(&self, new_from: usize, marker: &str, floor: usize) -> Option<usize> {
        let from = new_from
            .saturating_sub(marker.len())
            .max(floor)
            .min(self.buf.len());
        find(&self.buf[from..], marker.as_bytes()).map(|i| from + i)
    }

    /// The rest of the line starting at the first `marker` at or after `floor`, once the line
    /// is complete.
    fn line_after(&self, marker: &str, floor: usize) -> Option<String> {
        let floor = floor.min(self.buf.len());
        let at = floor + find(&self.buf[floor..], marker.as_bytes())? + marker.len();
        let end = at + self.buf[at..].iter().position(|&b| b == b'\n')?;
        Some(
            String::from_utf8_lossy(&self.buf[at..end])
                .trim_end()
                .to_string(),
        )
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A running QEMU that is killed when dropped (unless it already exited).
pub(crate) struct Qemu(pub(crate) Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Boot, crash, capture, save QEMU's memory view, quit QEMU.
pub fn run(spec: &GuestSpec, log: &mut dyn FnMut(String)) -> Result<GuestRun, (String, Timeline)> {
    let (mut qemu, mut watch, start) =
        start_qemu(spec, log).map_err(|e| (e, Timeline::default()))?;
    let mut tl = Timeline::default();
    let mut last_progress = Instant::now();
    let mut sysrq_at: Option<usize> = None;
    let verdict = loop {
        std::thread::sleep(Duration::from_millis(200));
        let new_from = watch.poll();
        let now = start.elapsed().as_secs_f64();
        if watch.saw(new_from, MARK_LOAD_FAILED, 0).is_some() {
            let why = watch.line_after(MARK_LOAD_FAILED, 0).unwrap_or_default();
            return Err((
                format!("the guest could not arm kdump: {MARK_LOAD_FAILED}{why}"),
                tl,
            ));
        }
        if tl.crashing.is_none() && watch.saw(new_from, MARK_CRASHING, 0).is_some() {
            tl.crashing = Some(now);
        }
        if sysrq_at.is_none() {
            if let Some(at) = watch.saw(new_from, MARK_SYSRQ, 0) {
                sysrq_at = Some(at);
                tl.sysrq = Some(now);
                log(format!("sysrq crash at {now:.1} s"));
            }
        }
        // `lifeboat status` also prints "lifeboat: " lines: only look after the crash.
        if let Some(floor) = sysrq_at {
            if tl.first_lifeboat_line.is_none()
                && watch.saw(new_from, MARK_LIFEBOAT, floor).is_some()
            {
                tl.first_lifeboat_line = Some(now);
                log(format!("capture kernel's first line at {now:.1} s"));
            }
            if tl.verdict.is_none() && watch.saw(new_from, MARK_VERDICT, floor).is_some() {
                tl.verdict = Some(now);
            }
            if tl.verdict.is_some() {
                if let Some(v) = watch.line_after(MARK_VERDICT, floor) {
                    break v;
                }
            }
        }
        if let Some(t) = tl.sysrq {
            if tl.first_lifeboat_line.is_none() && now - t > FIRST_LINE_TIMEOUT.as_secs_f64() {
                return Err((
                    format!(
                        "no \"lifeboat: \" line {} s after the sysrq crash: the capture kernel did not start (or kexec did not jump to it)",
                        FIRST_LINE_TIMEOUT.as_secs()
                    ),
                    tl,
                ));
            }
        }
        if let Ok(Some(status)) = qemu.0.try_wait() {
            watch.poll();
            if let Some(v) = sysrq_at.and_then(|f| watch.line_after(MARK_VERDICT, f)) {
                break v; // exited right after the verdict (e.g. lifeboat.action=poweroff)
            }
            return Err((
                format!("QEMU exited ({status}) before the capture kernel's verdict"),
                tl,
            ));
        }
        if start.elapsed() > spec.timeout {
            return Err((timed_out(spec, &tl), tl));
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            last_progress = Instant::now();
            log(format!(
                "{now:.0} s: {} serial bytes, stage: {}",
                watch.buf.len(),
                stage(&tl)
            ));
        }
    };
    log(format!(
        "verdict at {:.1} s: {verdict}",
        tl.verdict.unwrap_or_default()
    ));
    if verdict.starts_with("failed") {
        return Err((format!("the capture kernel failed: verdict: {verdict}"), tl));
    }
    // The capture kernel halts after the verdict (lifeboat.action=halt): wait until the serial
    // stops growing so the END frame and summary are in the file before QEMU goes away.
    let mut last_len = watch.buf.len();
    let mut still_since = Instant::now();
    let settle = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2)
        && settle.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
        watch.poll();
        if watch.buf.len() != last_len {
            last_len = watch.buf.len();
            still_since = Instant::now();
        }
    }
    if let Ok(Some(status)) = qemu.0.try_wait() {
        return Err((
            format!("QEMU exited ({status}) after the verdict; no QMP memory dump possible (is lifeboat.action=halt set?)"),
            tl,
        ));
    }
    save_memory_and_quit(spec, qemu, watch, tl, verdict)
}

/// The line a crashed kernel ends with when nothing catches the crash.
pub const MARK_PANIC_END: &str = "end Kernel panic";

/// Boot a guest that arms nothing (`e2e.load=none`), let it crash with sysrq and stop in its
/// panic (`panic=0`), then save QEMU's memory view and quit. For checks of the host tools on
/// a crash that no capture kernel touched. The verdict is the panic line.
pub fn run_until_panic(
    spec: &GuestSpec,
    log: &mut dyn FnMut(String),
) -> Result<GuestRun, (String, Timeline)> {
    let (mut qemu, mut watch, start) =
        start_qemu(spec, log).map_err(|e| (e, Timeline::default()))?;
    let mut tl = Timeline::default();
    let panic_line = loop {
        std::thread::sleep(Duration::from_millis(200));
        let new_from = watch.poll();
        let now = start.elapsed().as_secs_f64();
        if tl.init.is_none() && watch.saw(new_from, MARK_INIT, 0).is_some() {
            tl.init = Some(now);
            log(format!("/init started at {now:.1} s"));
        }
        if tl.crashing.is_none() && watch.saw(new_from, MARK_CRASHING, 0).is_some() {
            tl.crashing = Some(now);
        }
        if tl.sysrq.is_none() && watch.saw(new_from, MARK_SYSRQ, 0).is_some() {
            tl.sysrq = Some(now);
            log(format!("sysrq crash at {now:.1} s"));
        }
        if tl.sysrq.is_some() {
            if let Some(l) = watch.line_after(MARK_PANIC_END, 0) {
                break format!("{MARK_PANIC_END}{l}");
            }
        }
        if let Ok(Some(status)) = qemu.0.try_wait() {
            return Err((format!("QEMU exited ({status}) before the panic"), tl));
        }
        if start.elapsed() > spec.timeout {
            return Err((timed_out(spec, &tl), tl));
        }
    };
    save_memory_and_quit(spec, qemu, watch, tl, panic_line)
}

/// Start QEMU for `spec` (its serial capture, QMP socket and memory dump from an earlier run
/// removed first; its stdout and stderr in `spec.dir`). Returns QEMU, the serial capture to
/// watch, and when QEMU started.
fn start_qemu(
    spec: &GuestSpec,
    log: &mut dyn FnMut(String),
) -> Result<(Qemu, SerialWatch, Instant), String> {
    let _ = std::fs::remove_file(spec.serial_path());
    let _ = std::fs::remove_file(spec.qmp_path());
    let _ = std::fs::remove_file(spec.qemu_dump_path());
    let mut cmd = spec.command();
    if spec.verbose {
        log(format!("qemu: {cmd:?}"));
    }
    let out = |n: &str| std::fs::File::create(spec.dir.join(n)).map_err(|e| e.to_string());
    cmd.stdin(Stdio::null())
        .stdout(out("qemu.stdout")?)
        .stderr(out("qemu.stderr")?);
    let start = Instant::now();
    let qemu = Qemu(cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?);
    let watch = SerialWatch {
        file: None,
        path: spec.serial_path(),
        buf: Vec::new(),
    };
    Ok((qemu, watch, start))
}

/// Why the run stopped once it took longer than `spec.timeout`.
fn timed_out(spec: &GuestSpec, tl: &Timeline) -> String {
    format!(
        "timed out after {} s (stage reached: {})",
        spec.timeout.as_secs(),
        stage(tl)
    )
}

/// Save QEMU's view of guest memory over QMP, give QEMU 30 s to quit, then read the rest of
/// the serial capture. `verdict` is what the run ended with.
fn save_memory_and_quit(
    spec: &GuestSpec,
    mut qemu: Qemu,
    mut watch: SerialWatch,
    mut tl: Timeline,
    verdict: String,
) -> Result<GuestRun, (String, Timeline)> {
    let t = Instant::now();
    qmp_dump_and_quit(&spec.qmp_path(), &spec.qemu_dump_path()).map_err(|e| (e, tl.clone()))?;
    tl.qemu_dump_seconds = Some(t.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = qemu.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(qemu);
    watch.poll();
    Ok(GuestRun {
        timeline: tl,
        verdict,
        serial_bytes: watch.buf.len() as u64,
    })
}

fn stage(tl: &Timeline) -> &'static str {
    if tl.verdict.is_some() {
        "verdict printed"
    } else if tl.first_lifeboat_line.is_some() {
        "capture kernel running"
    } else if tl.sysrq.is_some() {
        "crashed, waiting for the capture kernel"
    } else if tl.crashing.is_some() {
        "kdump armed, crashing"
    } else {
        "guest booting"
    }
}

/// JSON string literal for `s` (QMP arguments).
fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A minimal QMP client: one JSON object per line; replies carry `"return"` or `"error"`,
/// asynchronous events carry `"event"` and are skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, String> {
        let s = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to QMP at {}: {e}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("unexpected QMP greeting: {greeting}"));
        }
        Ok(q)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err("QMP connection closed".into()),
            Ok(_) => Ok(l),
            Err(e) => Err(format!("reading QMP: {e}")),
        }
    }

    /// Send a command and wait for its reply; `Ok(reply)` for `"return"`.
    fn execute(&mut self, command: &str, arguments: Option<&str>) -> Result<String, String> {
        let msg = match arguments {
            Some(a) => format!("{{\"execute\": \"{command}\", \"arguments\": {a}}}\n"),
            None => format!("{{\"execute\": \"{command}\"}}\n"),
        };
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let l = self.line()?;
            if l.contains("\"return\"") {
                return Ok(l);
            }
            if l.contains("\"error\"") {
                return Err(format!("QMP {command} failed: {}", l.trim()));
            }
        }
    }
}

/// `dump-guest-memory` (ELF, physical addresses, no paging) to `out`, then `quit`.
pub fn qmp_dump_and_quit(sock: &Path, out: &Path) -> Result<(), String> {
    let mut q = Qmp::connect(sock)?;
    q.execute("qmp_capabilities", None)?;
    let out = std::path::absolute(out).map_err(|e| e.to_string())?;
    q.execute(
        "dump-guest-memory",
        Some(&format!(
            "{{\"paging\": false, \"protocol\": {}}}",
            json_str(&format!("file:{}", out.display()))
        )),
    )?;
    // `quit` may close the socket before its reply arrives.
    let _ = q.execute("quit", None);
    if !out.is_file() {
        return Err(format!("QMP dump-guest-memory wrote no {}", out.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_across_polls_are_found() {
        let mut w = SerialWatch {
            file: None,
            path: PathBuf::from("/nonexistent"),
            buf: b"abc sysrq: Trig".to_vec(),
        };
        assert_eq!(w.saw(0, MARK_SYSRQ, 0), None);
        let from = w.buf.len();
        w.buf
            .extend_from_slice(b"ger a crash\r\n\x00LBF\x02lifeboat: verdict: compl");
        assert_eq!(w.saw(from, MARK_SYSRQ, 0), Some(4));
        assert!(w.saw(from, MARK_VERDICT, 4).is_some());
        assert_eq!(w.saw(from, MARK_VERDICT, 40), None);
        assert_eq!(w.line_after(MARK_VERDICT, 4), None);
        w.buf.extend_from_slice(b"ete\r\n");
        assert_eq!(w.line_after(MARK_VERDICT, 4).as_deref(), Some("complete"));
    }

    #[test]
    fn arm64_qemu_command_line() {
        let g = GuestSpec {
            arch: Arch::Aarch64,
            dir: Path::new("/w"),
            vmlinuz: Path::new("/c/vmlinuz-6.1.0-56-cloud-arm64"),
            initramfs: Path::new("/w/initramfs.cpio"),
            mem: "1G",
            smp: 2,
            append: "console=ttyAMA0 e2e.load=none".into(),
            timeout: Duration::from_secs(1),
            verbose: false,
            extra: vec![],
        };
        let s = format!("{:?}", g.command());
        assert!(s.contains("\"-M\" \"virt\" \"-cpu\" \"max,pauth-impdef=on\" \"-accel\" \"tcg\" \"-m\" \"1G\""), "{s}");
        assert!(s.contains("\"-kernel\" \"/c/vmlinuz-6.1.0-56-cloud-arm64\""), "{s}");
        assert!(s.contains("\"-nodefaults\""), "{s}");
    }

    #[test]
    fn qmp_json_strings_are_escaped() {
        assert_eq!(json_str("file:/a \"b\"\\c"), "\"file:/a \\\"b\\\"\\\\c\"");
    }

    #[test]
    fn qemu_command_line() {
        let g = GuestSpec {
            arch: Arch::X86_64,
            dir: Path::new("/w"),
            vmlinuz: Path::new("/c/vmlinuz"),
            initramfs: Path::new("/w/initramfs.cpio"),
            mem: "1G",
            smp: 2,
            append: "console=ttyS0 e2e.load=stock".into(),
            timeout: Duration::from_secs(1),
            verbose: false,
            extra: vec!["-device".into(), "virtio-net-pci,netdev=n0,romfile=".into()],
        };
        let s = format!("{:?}", g.command());
        for want in [
            "\"-M\" \"pc\" \"-accel\" \"tcg\" \"-m\" \"1G\"",
            "\"-smp\" \"2\"",
            "\"-qmp\" \"unix:/w/qmp.sock,server=on,wait=off\"",
            "\"-serial\" \"file:/w/serial.bin\"",
            "\"-initrd\" \"/w/initramfs.cpio\"",
            "\"-append\" \"console=ttyS0 e2e.load=stock\" \"-device\" \"virtio-net-pci,netdev=n0,romfile=\"",
        ] {
            assert!(s.contains(want), "{want} not in {s}");
        }
    }
}
