//! `lifeboat` in a real guest, without crashing it: `estimate`, `load` (both syscalls),
//! `status` and `unload` work, and `load` fails with the operator's message when there is no
//! reservation, when it is too small, when the payload is not lifeboat, and for a mistyped
//! capture option. `/init` (e2e.load=loader) prints every command's output and exit status
//! between markers, then powers off.

use super::arch::Arch;
use super::checks::{check, console_text, Check};
use super::guest::{GuestSpec, Qemu};
use super::E2eScenarioReport;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub const MARK_DONE: &str = "e2e: loader checks done";

#[derive(Clone, Debug)]
pub struct LoaderScenario {
    pub name: &'static str,
    /// `crashkernel=` on the guest's command line (None: no reservation).
    pub crashkernel: Option<&'static str>,
}

pub fn scenarios() -> Vec<LoaderScenario> {
    vec![
        LoaderScenario { name: "loader-16m", crashkernel: Some("16M") },
        LoaderScenario { name: "loader-1m", crashkernel: Some("1M") },
        LoaderScenario { name: "loader-none", crashkernel: None },
    ]
}

/// One command `/init` ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    pub cmd: String,
    pub out: Vec<String>,
    pub rc: i32,
}

/// The `e2e: run:` / `e2e: out:` / `e2e: exit:` blocks, in order.
pub fn parse_runs(console: &[String]) -> Vec<Ran> {
    let mut runs: Vec<Ran> = vec![];
    for l in console {
        if let Some(c) = l.strip_prefix("e2e: run: ") {
            runs.push(Ran { cmd: c.to_string(), out: vec![], rc: -1 });
        } else if let (Some(o), Some(r)) = (l.strip_prefix("e2e: out: "), runs.last_mut()) {
            r.out.push(o.to_string());
        } else if let (Some(x), Some(r)) = (l.strip_prefix("e2e: exit: "), runs.last_mut()) {
            r.rc = x.trim().parse().unwrap_or(-1);
        }
    }
    runs
}

/// What command `index` of the /init sequence must do here: (exit status, text in its output).
/// Debian's arm64 kernel has no CONFIG_KEXEC_FILE: there the default load must say it falls
/// back to kexec_load, and `status` must name that syscall.
fn expected(s: &LoaderScenario, arch: Arch, index: usize) -> Option<(i32, &'static str)> {
    // The sequence in initramfs.rs: 0 estimate, 1 status, 2 load busybox, 3 load with a typo,
    // 4 load (kexec_file_load), 5 status, 6 unload, 7 status, 8 load (kexec_load), 9 unload.
    let reservation_error = match s.crashkernel {
        None => Some("no crash kernel reservation"),
        Some("1M") => Some("too small"),
        _ => None,
    };
    match (index, reservation_error) {
        (0, _) => Some((0, "crashkernel=")),
        (1, _) => Some((3, "")),
        (2, _) => Some((1, "not a lifeboat image")),
        (3, _) => Some((1, "acton")),
        (4, Some(e)) | (8, Some(e)) => Some((1, e)),
        (4, None) if arch == Arch::Aarch64 => Some((0, "using kexec_load")),
        (4, None) | (8, None) => Some((0, "")),
        (5, None) if arch == Arch::Aarch64 => Some((0, "syscall:      kexec_load")),
        (5, None) => Some((0, "kexec_file_load")),
        (6, None) | (9, None) => Some((0, "")),
        (7, None) => Some((3, "")),
        _ => None,
    }
}

/// Judge the commands against [`expected`].
pub fn judge(s: &LoaderScenario, arch: Arch, runs: &[Ran]) -> Vec<Check> {
    let mut checks = vec![];
    if runs.len() != 10 {
        checks.push(check("loader sequence", Err(format!("expected 10 commands, /init ran {}", runs.len()))));
    }
    for (i, r) in runs.iter().enumerate() {
        let Some((rc, text)) = expected(s, arch, i) else { continue };
        let out = r.out.join("\n");
        let found = text.is_empty() || out.to_lowercase().contains(&text.to_lowercase());
        let name: &'static str = Box::leak(format!("`{}`", r.cmd.replace("/lifeboat/lifeboat", "lifeboat")).into_boxed_str());
        let first = r.out.iter().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
        checks.push(check(
            name,
            if r.rc == rc && found {
                Ok(format!("exit {rc}: {first}"))
            } else {
                Err(format!("exit {} (want {rc}), output {} {text:?}:\n{out}", r.rc, if found { "has" } else { "LACKS" }))
            },
        ));
    }
    checks
}

/// Boot the guest in loader mode and check what `lifeboat` said.
pub fn run(
    s: &LoaderScenario,
    arch: Arch,
    work_dir: &Path,
    vmlinuz: &Path,
    initramfs: &Path,
) -> E2eScenarioReport {
    let start = Instant::now();
    let dir = work_dir.join(s.name);
    let mut r = E2eScenarioReport::new(s.name);
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = (|| -> Result<Vec<String>, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ck = s.crashkernel.map(|c| format!(" crashkernel={c}")).unwrap_or_default();
        let spec = GuestSpec {
            arch,
            dir: &dir,
            vmlinuz,
            initramfs,
            mem: "1G",
            smp: 2,
            append: format!("console={}{ck} panic=0 e2e.load=loader", arch.console()),
            timeout: Duration::from_secs(180),
            verbose: false,
            extra: vec![],
        };
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut qemu = Qemu(cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let serial = std::fs::read(spec.serial_path()).unwrap_or_default();
            let done = String::from_utf8_lossy(&serial).contains(MARK_DONE);
            if done || matches!(qemu.0.try_wait(), Ok(Some(_))) {
                // Let poweroff finish so the file is complete.
                std::thread::sleep(Duration::from_millis(500));
                let lines = console_text(&std::fs::read(spec.serial_path()).unwrap_or_default());
                if !done {
                    return Err(format!("QEMU exited before {MARK_DONE:?}"));
                }
                return Ok(lines);
            }
            if start.elapsed() > spec.timeout {
                return Err(format!("timed out after {} s", spec.timeout.as_secs()));
            }
        }
    })();
    match outcome {
        Ok(console) => {
            r.checks = judge(s, arch, &parse_runs(&console));
            let failed: Vec<String> =
                r.checks.iter().filter(|c| !c.passed).map(|c| format!("check {} failed: {}", c.name, c.detail)).collect();
            if failed.is_empty() {
                r.passed = true;
            } else {
                r.failure = Some(format!("e2e scenario {} failed:\n{}\n", s.name, failed.join("\n")));
            }
        }
        Err(why) => {
            let console = console_text(&std::fs::read(dir.join("serial.bin")).unwrap_or_default());
            r.failure = Some(format!(
                "e2e scenario {} failed: {why}\n  last {} console lines:\n{}",
                s.name,
                console.len().min(30),
                crate::qemu::tail(&console, 30)
            ));
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn parses_runs_and_judges_them() {
        let console = lines(
            "e2e: run: /lifeboat/lifeboat estimate\ne2e: out: crashkernel=3M\ne2e: exit: 0\n\
             noise\ne2e: run: /lifeboat/lifeboat status\ne2e: out: not loaded\ne2e: exit: 3\n\
             e2e: run: x\ne2e: out: lifeboat: /bin/busybox is not a lifeboat image: …\ne2e: exit: 1",
        );
        let runs = parse_runs(&console);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], Ran { cmd: "/lifeboat/lifeboat estimate".into(), out: vec!["crashkernel=3M".into()], rc: 0 });
        let s = &scenarios()[2];
        let checks = judge(s, Arch::X86_64, &runs);
        // Too few commands, then three that pass.
        assert!(!checks[0].passed);
        assert!(checks[1..].iter().all(|c| c.passed), "{checks:?}");
        // A wrong exit status fails, and says what it wanted.
        let mut bad = runs.clone();
        bad[2].rc = 0;
        let c = judge(s, Arch::X86_64, &bad);
        assert!(!c[3].passed && c[3].detail.contains("want 1"), "{c:?}");
    }

    #[test]
    fn reservation_errors_per_scenario() {
        let all = scenarios();
        let x86 = Arch::X86_64;
        assert_eq!(expected(&all[0], x86, 4), Some((0, "")));
        assert_eq!(expected(&all[0], x86, 5), Some((0, "kexec_file_load")));
        assert_eq!(expected(&all[1], x86, 4), Some((1, "too small")));
        assert_eq!(expected(&all[2], x86, 8), Some((1, "no crash kernel reservation")));
        assert_eq!(expected(&all[2], x86, 5), None);
        // arm64 (no kexec_file_load in Debian's kernel): the fallback is said and shown.
        let arm = Arch::Aarch64;
        assert_eq!(expected(&all[0], arm, 4), Some((0, "using kexec_load")));
        assert_eq!(expected(&all[0], arm, 5), Some((0, "syscall:      kexec_load")));
        assert_eq!(expected(&all[1], arm, 4), Some((1, "too small")));
    }
}
