//! `cargo xtask bench`: lifeboat's footprint and speed on real crashes, as numbers to compare,
//! not pass/fail limits.
//!
//! 1. The smallest `crashkernel=` that works, per guest size and load method: sizes are tried in
//!    ascending order; a size "works" when the guest arms kdump, and after the sysrq the capture
//!    kernel starts, validates the elfcorehdr and sends its first progress line. lifeboat's memory
//!    is fixed at build time (image, bss, heap, stack, page-table pool all inside `init_size`),
//!    so a capture that reached its first progress line has all the memory it will use.
//! 2. At the smallest size, a whole capture with every e2e check (makedumpfile, crash, byte-exact
//!    against QEMU): it proves the size works end to end and gives the seconds from the sysrq to
//!    the last byte (the verdict line follows the END frame).

use super::guest::{self, GuestSpec, Qemu, MARK_LIFEBOAT, MARK_SYSRQ};
use super::initramfs::MARK_LOAD_FAILED;
use super::{prepare, print_scenario, run_scenario, E2eConfig, E2eError, E2eScenario, E2eScenarioReport, LoadMethod};
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `crashkernel=` sizes tried, ascending.
pub const SIZES: &[&str] = &["2M", "3M", "4M", "6M", "8M", "16M"];

/// Debian's own kdump in the same QEMU setup (from ../shared/reference/measured-baselines.md;
/// issue 6's `bench --vs-kdump` measures it in the same run).
const DEBIAN_KDUMP_MIN: &str = "80M";

#[derive(Clone, Debug)]
pub struct SweepRow {
    pub mem_gib: u64,
    pub load: LoadMethod,
    /// (size, outcome): `Ok(())` worked, `Err(why)` did not.
    pub tried: Vec<(&'static str, Result<(), String>)>,
    pub smallest: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct BenchReport {
    pub kernel: String,
    pub sweep: Vec<SweepRow>,
    pub captures: Vec<E2eScenarioReport>,
}

fn method_name(m: LoadMethod) -> &'static str {
    match m {
        LoadMethod::LifeboatFile => "lifeboat load (kexec_file_load)",
        LoadMethod::LifeboatLoad => "lifeboat load (kexec_load)",
        LoadMethod::Stock => "Debian kexec -p (kexec_load)",
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.1} s"))
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lifeboat bench: guest {} under QEMU TCG, -smp 2", self.kernel)?;
        writeln!(f)?;
        writeln!(f, "smallest crashkernel= that captures (Debian's own kdump needs {DEBIAN_KDUMP_MIN} here):")?;
        writeln!(f, "| guest | load method | tried | smallest |")?;
        writeln!(f, "|---|---|---|---|")?;
        for r in &self.sweep {
            let tried: Vec<String> =
                r.tried.iter().map(|(s, o)| format!("{s}:{}", if o.is_ok() { "yes" } else { "no" })).collect();
            writeln!(
                f,
                "| {} GiB | {} | {} | {} |",
                r.mem_gib,
                method_name(r.load),
                tried.join(" "),
                r.smallest.unwrap_or("none")
            )?;
        }
        writeln!(f)?;
        writeln!(f, "whole captures at the smallest size (serial sink, all e2e checks):")?;
        writeln!(f, "| scenario | sysrq → first console line | sysrq → last byte (verdict) | dump MB | serial MB | checks |")?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for c in &self.captures {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} |",
                c.name,
                secs(c.timeline.sysrq_to_first_line()),
                secs(c.timeline.sysrq_to_verdict()),
                c.dump_bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                c.serial_bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                if c.passed { "all passed".to_string() } else { "FAILED".to_string() }
            )?;
        }
        writeln!(f)?;
        for r in &self.sweep {
            for (s, o) in &r.tried {
                if let Err(why) = o {
                    writeln!(f, "  {} GiB, {}, crashkernel={s}: {why}", r.mem_gib, method_name(r.load))?;
                }
            }
        }
        Ok(())
    }
}

/// Boot with `crashkernel=<size>`, crash, and wait for the capture's first progress line.
fn probe(cfg: &E2eConfig, vmlinuz: &Path, initramfs: &Path, mem_gib: u64, load: LoadMethod, size: &str) -> Result<(), String> {
    let dir = cfg.work_dir.join(format!("bench-probe-{mem_gib}g-{}-{size}", load.cmdline_word()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mem = format!("{mem_gib}G");
    let spec = GuestSpec {
        arch: super::arch::Arch::X86_64,
        dir: &dir,
        vmlinuz,
        initramfs,
        mem: &mem,
        smp: 2,
        append: format!("console=ttyS0 crashkernel={size} panic=0 e2e.load={}", load.cmdline_word()),
        timeout: Duration::from_secs(120),
        verbose: false,
        extra: vec![],
    };
    let mut cmd = spec.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let _qemu = Qemu(cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?);
    let start = Instant::now();
    let mut sysrq_seen: Option<Instant> = None;
    let result = loop {
        std::thread::sleep(Duration::from_millis(200));
        let serial = std::fs::read(spec.serial_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&serial);
        if let Some(at) = text.find(MARK_LOAD_FAILED) {
            let line = text[at..].lines().next().unwrap_or("").to_string();
            break Err(line);
        }
        if let Some(at) = text.find(MARK_SYSRQ) {
            sysrq_seen.get_or_insert_with(Instant::now);
            let after = &text[at..];
            if let Some(v) = after.find("lifeboat: verdict: failed") {
                break Err(after[v..].lines().next().unwrap_or("").to_string());
            }
            let progressed = after
                .lines()
                .any(|l| l.contains(MARK_LIFEBOAT) && l.contains("% ") && l.contains("MiB"));
            if progressed {
                break Ok(());
            }
            if sysrq_seen.is_some_and(|t| t.elapsed() > guest::FIRST_LINE_TIMEOUT) {
                break Err(format!(
                    "no capture progress {} s after the sysrq (capture kernel did not start)",
                    guest::FIRST_LINE_TIMEOUT.as_secs()
                ));
            }
        }
        if start.elapsed() > spec.timeout {
            break Err(format!("timed out after {} s", spec.timeout.as_secs()));
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Run the sweep and the whole captures; prints as it goes. `Err` only when the bench could
/// not run (or a whole capture failed its checks).
pub fn run(cfg: &E2eConfig) -> Result<BenchReport, E2eError> {
    let (inputs, initramfs) = prepare(cfg)?;
    let mut report = BenchReport { kernel: format!("{} {}", inputs.image_package, inputs.image_version), ..Default::default() };
    let plan = [
        (1, LoadMethod::LifeboatFile),
        (1, LoadMethod::LifeboatLoad),
        (1, LoadMethod::Stock),
        (4, LoadMethod::LifeboatFile),
    ];
    for (mem_gib, load) in plan {
        let mut row = SweepRow { mem_gib, load, tried: vec![], smallest: None };
        for &size in SIZES {
            let t = Instant::now();
            let outcome = probe(cfg, &inputs.vmlinuz, &initramfs, mem_gib, load, size);
            println!(
                "bench: {mem_gib} GiB, {}, crashkernel={size}: {} ({:.0} s)",
                method_name(load),
                match &outcome {
                    Ok(()) => "captures".to_string(),
                    Err(e) => format!("does not: {e}"),
                },
                t.elapsed().as_secs_f64()
            );
            let ok = outcome.is_ok();
            row.tried.push((size, outcome));
            if ok {
                row.smallest = Some(size);
                break;
            }
        }
        report.sweep.push(row);
    }
    for row in report.sweep.iter().filter(|r| r.load == LoadMethod::LifeboatFile) {
        let Some(size) = row.smallest else { continue };
        let name: &'static str = Box::leak(format!("bench-file-{}g-{size}", row.mem_gib).into_boxed_str());
        let s = E2eScenario {
            arch: super::arch::Arch::X86_64,
            name,
            load: row.load,
            mem_gib: row.mem_gib,
            cpus: 2,
            default: false,
            crashkernel: size,
            sink: super::Sink::Serial,
        };
        println!("bench: whole capture {name} …");
        let r = run_scenario(&s, cfg, &inputs, &initramfs);
        print_scenario(&r);
        report.captures.push(r);
    }
    println!("{report}");
    if report.captures.iter().all(|c| c.passed) {
        Ok(report)
    } else {
        Err(E2eError::Setup("a whole capture at the smallest crashkernel= failed its checks (see above)".into()))
    }
}
