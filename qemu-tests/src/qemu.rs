//! Running QEMU and the host tools with hard timeouts, and reading the console back out of the
//! serial capture.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::synth::{GuestLayout, LoaderBlob};
use crate::Arch;

/// The x86_64 QEMU binary; `QEMU_SYSTEM_X86_64` overrides it.
pub fn qemu_binary() -> String {
    qemu_binary_for(Arch::X86_64)
}

/// The QEMU binary for `arch`; `QEMU_SYSTEM_X86_64` or `QEMU_SYSTEM_AARCH64` overrides it.
pub fn qemu_binary_for(arch: Arch) -> String {
    let (var, default) = match arch {
        Arch::X86_64 => ("QEMU_SYSTEM_X86_64", "qemu-system-x86_64"),
        Arch::Aarch64 => ("QEMU_SYSTEM_AARCH64", "qemu-system-aarch64"),
    };
    std::env::var(var).unwrap_or_else(|_| default.into())
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

/// Guest RAM from which [`QemuBoot::command_with_ram`] uses a `reserve=off` memory backend.
pub const BIG_GUEST_RAM: u64 = 4 << 30;

/// One QEMU boot of the capture kernel.
///
/// x86_64: `-M pc`, the PVH ELF, `isa-debug-exit` at port 0xf4. aarch64: `-M virt -cpu max`,
/// the arm64 Image (QEMU loads it 2 MiB into RAM, at 0x4020_0000, and its device tree at
/// [`crate::synth::VIRT_DTB`]), the PL011 at 0x0900_0000 as the serial port, and
/// semihosting, through which the kernel exits with the same statuses as x86's
/// `isa-debug-exit` (`SYS_EXIT_EXTENDED`, `ADP_Stopped_ApplicationExit`, `(v << 1) | 1`).
pub struct QemuBoot<'a> {
    pub arch: Arch,
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
        (crate::synth::GUEST_RAM_BYTES >> 20).max(self.guest_mib_needed())
    }

    /// MiB of guest RAM the blobs need. x86_64: 32 MiB above the highest one, because the
    /// firmware (SeaBIOS) keeps its tables in the top 16 MiB of RAM and writes into the
    /// 120 KiB below them during boot ([`crate::synth::FIRMWARE_TOP_RESERVE`]). aarch64: no
    /// firmware runs (QEMU writes only its boot stub, the Image and the device tree, all
    /// within the first 130 MiB: measured with `pmemsave` before the first instruction), so
    /// up to the highest blob, but at least [`crate::synth::VIRT_MIN_GUEST_RAM`] so that
    /// the device tree lands where the synthetic RAM leaves a hole for it.
    fn guest_mib_needed(&self) -> u64 {
        let ram_start = GuestLayout::of(self.arch).ram_start;
        let end = self.blobs.iter().map(|b| b.addr + b.len).max().unwrap_or(0);
        let above = end.saturating_sub(ram_start).div_ceil(1 << 20);
        match self.arch {
            Arch::X86_64 => above + (crate::synth::FIRMWARE_TOP_RESERVE >> 20),
            Arch::Aarch64 => above.max(crate::synth::VIRT_MIN_GUEST_RAM >> 20),
        }
    }

    pub fn serial_path(&self) -> PathBuf {
        self.dir.join("serial.bin")
    }

    pub fn command(&self) -> Command {
        self.command_with_ram(self.guest_mib() << 20)
    }

    /// [`Self::command`] with exactly `ram_bytes` of guest RAM (a whole number of MiB; at
    /// least what the blobs need). From [`BIG_GUEST_RAM`] on, the RAM is an explicit
    /// `memory-backend-ram` with `reserve=off` (`MAP_NORESERVE`): QEMU's plain `-m 64G` is
    /// refused by the kernel's overcommit heuristic on a host with less memory, while untouched
    /// guest RAM costs the host nothing (pages the guest only reads map the shared zero page).
    pub fn command_with_ram(&self, ram_bytes: u64) -> Command {
        let mib = (ram_bytes >> 20).max(self.guest_mib_needed());
        let mut c = Command::new(qemu_binary_for(self.arch));
        let machine = match self.arch {
            Arch::X86_64 => "pc",
            Arch::Aarch64 => "virt",
        };
        if mib << 20 >= BIG_GUEST_RAM {
            c.args([
                "-object",
                &format!("memory-backend-ram,id=lbram,size={mib}M,reserve=off"),
                "-M",
                &format!("{machine},memory-backend=lbram"),
            ]);
        } else {
            c.args(["-M", machine]);
        }
        if self.arch == Arch::Aarch64 {
            c.args(["-cpu", "max"]);
        }
        c.args([
            "-accel",
            "tcg",
            "-m",
            &format!("{mib}M"),
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
        match self.arch {
            Arch::X86_64 => c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]),
            Arch::Aarch64 => c.args(["-semihosting-config", "enable=on,target=native"]),
        };
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
        self.run_command(self.command())
    }

    /// [`Self::run`] with exactly `ram_bytes` of guest RAM ([`Self::command_with_ram`]).
    pub fn run_with_ram(&self, ram_bytes: u64) -> Result<Finished, String> {
        self.run_command(self.command_with_ram(ram_bytes))
    }

    fn run_command(&self, cmd: Command) -> Result<Finished, String> {
        let _ = std::fs::remove_file(self.serial_path());
        run_with_timeout(
            cmd,
            None,
            &self.dir.join("qemu.stdout"),
            &self.dir.join("qemu.stderr"),
            self.timeout,
        )
    }
}

/// What a QEMU exit status means under the exit contract of `lifeboat.exit_port=`: on x86_64
/// the kernel writes `v` to port 0xf4 (`isa-debug-exit`), on aarch64 it exits through
/// semihosting with `(v << 1) | 1`; either way QEMU exits with `(v << 1) | 1`.
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

/// What the capture kernel says about its own memory: the runtime memory of its image
/// (first line), and at the end of each capture the heap peak, the heap size and the
/// page-table frames used (all in KiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelMemory {
    pub image_kib: u64,
    pub runtime_kib: u64,
    pub heap_peak_kib: u64,
    pub heap_kib: u64,
    pub page_tables_kib: u64,
}

/// The number right after `key` in `line` (`"… heap peak 123 KiB"` → 123 for "heap peak ").
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// [`KernelMemory`] from the console: the first `runtime memory` line and the last
/// `heap peak` line. `None` if either is missing.
pub fn kernel_memory(lines: &[String]) -> Option<KernelMemory> {
    let first = lines.iter().find(|l| l.contains("runtime memory "))?;
    let end = lines.iter().rev().find(|l| l.contains("heap peak "))?;
    Some(KernelMemory {
        image_kib: number_after(first, ": image ")?,
        runtime_kib: number_after(first, "runtime memory ")?,
        heap_peak_kib: number_after(end, "heap peak ")?,
        heap_kib: number_after(end, " KiB of ")?,
        page_tables_kib: number_after(end, "page tables ")?,
    })
}

/// The capture kernel's own timing of the last dump: `dumped N MiB of RAM in T s` → T.
pub fn dump_seconds(lines: &[String]) -> Option<f64> {
    let l = lines
        .iter()
        .rev()
        .find(|l| l.contains("dumped ") && l.contains(" MiB of RAM in "))?;
    let rest = &l[l.find(" MiB of RAM in ")? + " MiB of RAM in ".len()..];
    rest.split(' ').next()?.parse().ok()
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
    fn kernel_memory_and_dump_time_are_read_from_the_console() {
        let l: Vec<String> = [
            "lifeboat: lifeboat 0.1.0 capture kernel (x86_64), entered via PVH at 0x200000: image 343 KiB, runtime memory 3264 KiB",
            "lifeboat: dumped 1008 MiB of RAM in 12.5 s (84.5 MB/s): 258048 pages, 1 zero",
            "lifeboat: dump file 9 bytes (compression ratio 1.0), 9 bytes sent to x (1.0 MB/s), 5 ms since entry, heap peak 301 KiB of 2048 KiB, page tables 20 KiB",
            "lifeboat: verdict: complete",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            kernel_memory(&l),
            Some(KernelMemory {
                image_kib: 343,
                runtime_kib: 3264,
                heap_peak_kib: 301,
                heap_kib: 2048,
                page_tables_kib: 20
            })
        );
        assert_eq!(dump_seconds(&l), Some(12.5));
        assert_eq!(kernel_memory(&l[..2]), None);
        assert_eq!(dump_seconds(&l[2..]), None);
    }

    #[test]
    fn big_guests_get_a_noreserve_backend() {
        let b = QemuBoot {
            arch: Arch::X86_64,
            capture_elf: Path::new("/k.elf"),
            dir: Path::new("/d"),
            cmdline: "",
            blobs: &[],
            extra: &[],
            timeout: Duration::from_secs(1),
        };
        let s = format!("{:?}", b.command_with_ram(64 << 30));
        assert!(
            s.contains("\"memory-backend-ram,id=lbram,size=65536M,reserve=off\" \"-M\" \"pc,memory-backend=lbram\"")
                && s.contains("\"-m\" \"65536M\""),
            "{s}"
        );
        let s = format!("{:?}", b.command_with_ram(1 << 30));
        assert!(
            s.contains("\"-M\" \"pc\"")
                && s.contains("\"-m\" \"1024M\"")
                && !s.contains("memory-backend"),
            "{s}"
        );
        let s = format!("{:?}", b.command());
        assert!(s.contains("\"-m\" \"512M\""), "{s}");
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
            arch: Arch::X86_64,
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

    #[test]
    fn aarch64_command_line() {
        let blobs = [LoaderBlob {
            path: "/x/m.bin".into(),
            addr: 0x4100_0000,
            len: 1,
        }];
        let b = QemuBoot {
            arch: Arch::Aarch64,
            capture_elf: Path::new("/k/Image"),
            dir: Path::new("/d"),
            cmdline: "a b",
            blobs: &blobs,
            extra: &[],
            timeout: Duration::from_secs(1),
        };
        let s = format!("{:?}", b.command());
        assert!(s.starts_with("\"qemu-system-aarch64\" \"-M\" \"virt\" \"-cpu\" \"max\" \"-accel\" \"tcg\" \"-m\" \"512M\"")
            || std::env::var("QEMU_SYSTEM_AARCH64").is_ok(), "{s}");
        for want in [
            "\"-smp\" \"1\"",
            "\"-nodefaults\"",
            "\"-no-reboot\"",
            "\"-serial\" \"file:/d/serial.bin\"",
            "\"-kernel\" \"/k/Image\" \"-append\" \"a b\"",
            "\"-semihosting-config\" \"enable=on,target=native\"",
            "\"loader,file=/x/m.bin,addr=0x41000000,force-raw=on\"",
        ] {
            assert!(s.contains(want), "{want} not in {s}");
        }
        assert!(!s.contains("isa-debug-exit"), "{s}");
        // RAM counts from 1 GiB: blobs up to 1.75 GiB need 768 MiB, not 1.75 GiB + 32 MiB.
        let high = [LoaderBlob {
            path: "/x/r.bin".into(),
            addr: 0x6000_0000,
            len: 0x1000_0000,
        }];
        let b = QemuBoot { blobs: &high, ..b };
        assert!(format!("{:?}", b.command()).contains("\"-m\" \"768M\""));
        let s = format!("{:?}", b.command_with_ram(8 << 30));
        assert!(
            s.contains("\"memory-backend-ram,id=lbram,size=8192M,reserve=off\" \"-M\" \"virt,memory-backend=lbram\""),
            "{s}"
        );
    }
}
