//! Running QEMU and the host tools with hard timeouts, and reading the console back out of the
//! serial capture.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::synth::LoaderBlob;

/// The QEMU binary; `QEMU_SYSTEM_X86_64` overrides it.
pub fn qemu_binary() -> String {
    std::env::var("QEMU_SYSTEM_X86_64").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// The makedumpfile binary; `MAKEDUMPFILE` overrides it.
pub fn makedumpfile_binary() -> String {
    std::env::var("MAKEDUMPFILE").unwrap_or_else(|_| "makedumpfile".into())
}

/// Console prefix of every line the capture kernel prints.
pub const CONSOLE_PREFIX: &[u8] = b"lifeboat: ";

/// How a child process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub seconds: f64,
    pub timed_out: bool,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Run `cmd` with stdout/stderr to files, killing it after `timeout`.
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&Path>,
    stdout: &Path,
    stderr: &Path,
    timeout: Duration,
) -> Result<Finished, String> {
    let describe = format!("{cmd:?}");
    cmd.stdout(
        File::create(stdout).map_err(|e| format!("cannot create {}: {e}", stdout.display()))?,
    );
    cmd.stderr(
        File::create(stderr).map_err(|e| format!("cannot create {}: {e}", stderr.display()))?,
    );
    match stdin {
        Some(p) => {
            cmd.stdin(File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?)
        }
        None => cmd.stdin(Stdio::null()),
    };
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {describe}: {e}"))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(Finished {
                    status: Some(status),
                    seconds: start.elapsed().as_secs_f64(),
                    timed_out: false,
                });
            }
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Ok(Finished {
                    status,
                    seconds: start.elapsed().as_secs_f64(),
                    timed_out: true,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {describe}: {e}")),
        }
    }
}

/// One QEMU boot of the capture kernel.
pub struct QemuBoot<'a> {
    pub capture_elf: &'a Path,
    pub dir: &'a Path,
    pub cmdline: &'a str,
    pub blobs: &'a [LoaderBlob],
    /// More QEMU arguments (disks, network cards).
    pub extra: &'a [String],
    pub timeout: Duration,
}

impl QemuBoot<'_> {
    /// Guest RAM: 512 MiB (`synth::GUEST_RAM_BYTES`), more when the blobs reach higher.
    pub fn guest_mib(&self) -> u64 {
        let end = self.blobs.iter().map(|b| b.addr + b.len).max().unwrap_or(0);
        (crate::synth::GUEST_RAM_BYTES >> 20).max(end.div_ceil(1 << 20) + 16)
    }

    pub fn serial_path(&self) -> PathBuf {
        self.dir.join("serial.bin")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(qemu_binary());
        c.args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            &format!("{}M", self.guest_mib()),
            "-smp",
            "1",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ]);
        c.arg("-serial")
            .arg(format!("file:{}", self.serial_path().display()));
        c.arg("-kernel").arg(self.capture_elf);
        c.arg("-append").arg(self.cmdline);
        c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        c.args(self.extra);
        for b in self.blobs {
            c.arg("-device").arg(format!(
                "loader,file={},addr={:#x},force-raw=on",
                b.path.display(),
                b.addr
            ));
        }
        c
    }

    pub fn run(&self) -> Result<Finished, String> {
        let _ = std::fs::remove_file(self.serial_path());
        run_with_timeout(
            self.command(),
            None,
            &self.dir.join("qemu.stdout"),
            &self.dir.join("qemu.stderr"),
            self.timeout,
        )
    }
}

/// What a QEMU exit status means under the isa-debug-exit contract: the kernel writes `v` to
/// port 0xf4 and QEMU exits with `(v << 1) | 1`.
pub fn describe_qemu_exit(f: &Finished, timeout: Duration) -> String {
    if f.timed_out {
        return format!("timed out after {} s (QEMU killed)", timeout.as_secs());
    }
    match f.code() {
        Some(1) => "exit status 1: port value 0, dump complete".into(),
        Some(3) => "exit status 3: port value 1, dump incomplete".into(),
        Some(5) => "exit status 5: port value 2, failed before dumping".into(),
        Some(0) => "exit status 0: the guest halted or reset without writing the exit port".into(),
        Some(c) if c & 1 == 1 => format!("exit status {c}: unexpected port value {}", c >> 1),
        Some(c) => format!("exit status {c}: QEMU itself failed (see qemu.stderr)"),
        None => "QEMU was killed by a signal".into(),
    }
}

/// The console lines (`lifeboat: …`) found in a serial capture that also holds binary frames.
///
/// Each occurrence of the prefix starts a line that runs to the next newline or to the first
/// byte that is not printable ASCII (where a binary frame would begin).
pub fn console_lines(serial: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut at = 0;
    while let Some(pos) = find(&serial[at..], CONSOLE_PREFIX) {
        let start = at + pos;
        let mut end = start;
        while end < serial.len() && (serial[end] == b'\t' || (0x20..0x7f).contains(&serial[end])) {
            end += 1;
        }
        lines.push(
            String::from_utf8_lossy(&serial[start..end])
                .trim_end()
                .to_string(),
        );
        at = end.max(start + 1);
    }
    lines
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The verdict the kernel printed last, as the text after `lifeboat: verdict: `.
pub fn verdict(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("lifeboat: verdict: "))
}

/// A throughput figure (`… 12.5 MB/s`, `12MiB/s`) from the last console lines, if any.
pub fn kernel_throughput(lines: &[String]) -> Option<String> {
    for l in lines.iter().rev().take(5) {
        for unit in ["MB/s", "MiB/s"] {
            if let Some(i) = l.find(unit) {
                let before = l[..i].trim_end();
                let num: String = before
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                if !num.is_empty() {
                    return Some(format!("{} {unit}", num.chars().rev().collect::<String>()));
                }
            }
        }
    }
    None
}

/// The last `n` lines, for failure reports.
pub fn tail(lines: &[String], n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    lines[skip..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// `lifeboat receive` on `<dir>/serial.bin`, writing `vmcore`, `vmcore.flat` and `console.txt`
/// into `dir` (both suites decode the same way).
pub fn receive_command(lifeboat: &Path, dir: &Path) -> Command {
    let mut c = Command::new(lifeboat);
    c.arg("receive")
        .arg("--serial")
        .arg(dir.join("serial.bin"))
        .arg("-o")
        .arg(dir.join("vmcore"))
        .arg("--flat")
        .arg(dir.join("vmcore.flat"))
        .arg("--console")
        .arg(dir.join("console.txt"));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_survive_binary_frames() {
        let mut s = b"lifeboat: hello\r\n".to_vec();
        s.extend_from_slice(&[0x00, 0xff, 0x10, b'l']);
        s.extend_from_slice(
            b"lifeboat: 10% (3 MB)\n\x01\x02lifeboat: verdict: complete 55.1 MB/s\n",
        );
        s.extend_from_slice(b"garbage lifeboat: cut\x00more");
        let l = console_lines(&s);
        assert_eq!(
            l,
            [
                "lifeboat: hello",
                "lifeboat: 10% (3 MB)",
                "lifeboat: verdict: complete 55.1 MB/s",
                "lifeboat: cut"
            ]
        );
        assert_eq!(verdict(&l), Some("complete 55.1 MB/s"));
        assert_eq!(kernel_throughput(&l).as_deref(), Some("55.1 MB/s"));
        assert_eq!(kernel_throughput(&["lifeboat: done in 3 s".into()]), None);
        assert_eq!(
            kernel_throughput(&["lifeboat: 12MiB/s".into()]).as_deref(),
            Some("12 MiB/s")
        );
        assert_eq!(tail(&l, 1), "    | lifeboat: cut\n");
    }

    #[test]
    fn exit_statuses_are_explained() {
        let t = Duration::from_secs(60);
        let f = |timed_out| Finished {
            status: None,
            seconds: 0.0,
            timed_out,
        };
        assert_eq!(
            describe_qemu_exit(&f(true), t),
            "timed out after 60 s (QEMU killed)"
        );
        assert!(describe_qemu_exit(&f(false), t).contains("signal"));
    }

    #[test]
    fn timeouts_kill_the_child() {
        let dir = std::env::temp_dir();
        let out = dir.join(format!("qt-timeout-{}.out", std::process::id()));
        let mut c = Command::new("sleep");
        c.arg("30");
        let f = run_with_timeout(c, None, &out, &out, Duration::from_millis(200)).unwrap();
        assert!(f.timed_out && f.seconds < 5.0);
        let f = run_with_timeout(
            Command::new("true"),
            None,
            &out,
            &out,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!f.timed_out && f.code() == Some(0));
        let _ = std::fs::remove_file(out);
    }

    #[test]
    fn qemu_command_line() {
        let blobs = [LoaderBlob {
            path: "/x/m.bin".into(),
            addr: 0x1000000,
            len: 1,
        }];
        let b = QemuBoot {
            capture_elf: Path::new("/k.elf"),
            dir: Path::new("/d"),
            cmdline: "a b",
            blobs: &blobs,
            extra: &[],
            timeout: Duration::from_secs(1),
        };
        let s = format!("{:?}", b.command());
        assert!(s.contains("\"-serial\" \"file:/d/serial.bin\""), "{s}");
        assert!(
            s.contains("\"loader,file=/x/m.bin,addr=0x1000000,force-raw=on\""),
            "{s}"
        );
        assert!(
            s.contains("\"isa-debug-exit,iobase=0xf4,iosize=0x04\""),
            "{s}"
        );
    }
}

