//! The `cargo xtask qemu` suite: boot the lifeboat capture kernel in QEMU on synthetic crashed
//! memory and check the dump it sends with code that shares nothing with the kernel.
//!
//! - [`synth`] generates the crashed machine: RAM ranges with holes, a kexec-tools backup range,
//!   a kernel-text view, PRSTATUS and VMCOREINFO notes, a `struct new_utsname`, all from a seed.
//! - [`qemu`] boots the capture kernel with hard timeouts and reads its console back.
//! - [`flat`] rebuilds makedumpfile's flattened stream; [`verify`] reads the kdump-compressed
//!   file and compares every page with what [`synth`] generated.
//! - [`scenario`] lists the scenarios; [`run_suite`] runs them.
//!
//! Design principles: the checker is independent of the writer (no dependency on
//! lifeboat-capture); every failure says which scenario, why, with addresses, and shows the
//! console tail; simple code over fast code.

pub mod e2e;
pub mod flat;
pub mod prng;
pub mod qemu;
pub mod scenario;
pub mod sinks;
#[cfg(test)]
mod stub_kernel;
pub mod synth;
pub mod verify;

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

pub use scenario::ScenarioReport;

/// What `cargo xtask qemu` passes in.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// The capture kernel as a PVH ELF for `qemu-system-x86_64 -kernel`.
    pub capture_elf: PathBuf,
    /// The host `lifeboat` binary (for `lifeboat receive`).
    pub lifeboat_bin: PathBuf,
    /// Scratch directory; each scenario uses `<work_dir>/<scenario name>/`.
    pub work_dir: PathBuf,
    /// Run only scenarios whose name contains this substring.
    pub filter: Option<String>,
    /// Print QEMU command lines and full consoles.
    pub verbose: bool,
}

/// Results of every scenario that ran.
#[derive(Clone, Debug, Default)]
pub struct SuiteReport {
    pub scenarios: Vec<ScenarioReport>,
}

impl SuiteReport {
    pub fn passed(&self) -> usize {
        self.scenarios.iter().filter(|s| s.passed).count()
    }
    pub fn failed(&self) -> impl Iterator<Item = &ScenarioReport> {
        self.scenarios.iter().filter(|s| !s.passed)
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.scenarios {
            writeln!(
                f,
                "{} {} ({:.1} s)",
                if s.passed { "PASS" } else { "FAIL" },
                s.name,
                s.seconds
            )?;
            for d in &s.details {
                writeln!(f, "    {d}")?;
            }
        }
        write!(
            f,
            "qemu-tests: {} of {} scenarios passed",
            self.passed(),
            self.scenarios.len()
        )
    }
}

/// Why the suite did not pass.
#[derive(Debug)]
pub enum SuiteError {
    /// Something the suite needs is missing (capture kernel, lifeboat, QEMU, makedumpfile).
    Setup(String),
    /// The filter selects no scenario.
    NoScenario {
        filter: String,
        known: Vec<&'static str>,
    },
    /// At least one scenario failed; the report has all of them.
    Failed(SuiteReport),
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuiteError::Setup(s) => write!(f, "qemu-tests cannot start: {s}"),
            SuiteError::NoScenario { filter, known } => {
                write!(
                    f,
                    "no scenario name contains {filter:?}; scenarios are: {}",
                    known.join(", ")
                )
            }
            SuiteError::Failed(r) => {
                let failed: Vec<_> = r.failed().collect();
                writeln!(
                    f,
                    "{} of {} qemu scenarios FAILED (details and console tails above):",
                    failed.len(),
                    r.scenarios.len()
                )?;
                for s in failed {
                    let reason = s
                        .failure
                        .as_deref()
                        .and_then(|t| t.lines().next())
                        .unwrap_or("(no reason recorded)");
                    writeln!(f, "  {reason}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SuiteError {}

fn check_tool(program: &str, arg: &str, what: &str) -> Result<(), SuiteError> {
    match Command::new(program).arg(arg).output() {
        Ok(_) => Ok(()),
        Err(e) => Err(SuiteError::Setup(format!(
            "cannot run {program:?} ({what}): {e}"
        ))),
    }
}

/// Run every scenario selected by `cfg.filter`, printing progress and a report to stdout.
/// `Ok` only if all of them passed.
pub fn run_suite(cfg: &SuiteConfig) -> Result<SuiteReport, SuiteError> {
    // Without a filter: every scenario but the slow ones that run only when named.
    let selected: Vec<_> = scenario::all()
        .into_iter()
        .filter(|s| match cfg.filter.as_deref() {
            None => !s.on_request_only(),
            Some(f) => s.name.contains(f),
        })
        .collect();
    if selected.is_empty() {
        return Err(SuiteError::NoScenario {
            filter: cfg.filter.clone().unwrap_or_default(),
            known: scenario::names(),
        });
    }
    if !cfg.capture_elf.is_file() {
        return Err(SuiteError::Setup(format!(
            "capture kernel {} does not exist; build it first (cargo xtask build)",
            cfg.capture_elf.display()
        )));
    }
    if selected.iter().any(|s| {
        matches!(
            s.kind,
            scenario::Kind::Dump { .. }
                | scenario::Kind::Sink(_)
                | scenario::Kind::BoundedMemory { .. }
        )
    }) {
        if !cfg.lifeboat_bin.is_file() {
            return Err(SuiteError::Setup(format!(
                "lifeboat binary {} does not exist; build the loader first",
                cfg.lifeboat_bin.display()
            )));
        }
        check_tool(
            &qemu::makedumpfile_binary(),
            "-v",
            "install Debian's makedumpfile, or set MAKEDUMPFILE",
        )?;
    }
    check_tool(
        &qemu::qemu_binary(),
        "--version",
        "install qemu-system-x86, or set QEMU_SYSTEM_X86_64",
    )?;
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| SuiteError::Setup(format!("cannot create {}: {e}", cfg.work_dir.display())))?;

    let mut report = SuiteReport::default();
    let n = selected.len();
    for (i, s) in selected.iter().enumerate() {
        println!(
            "qemu-tests: [{}/{n}] {} (timeout {} s) …",
            i + 1,
            s.name,
            s.timeout.as_secs()
        );
        let r = scenario::run(s, cfg);
        println!(
            "qemu-tests: {} {} ({:.1} s)",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            r.seconds
        );
        for d in &r.details {
            println!("    {d}");
        }
        if let Some(f) = &r.failure {
            print!("{f}");
        }
        report.scenarios.push(r);
    }
    println!("qemu-tests: {} of {n} scenarios passed", report.passed());
    if report.passed() == n {
        Ok(report)
    } else {
        Err(SuiteError::Failed(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(filter: Option<&str>) -> SuiteConfig {
        SuiteConfig {
            capture_elf: "/nonexistent/capture.elf".into(),
            lifeboat_bin: "/nonexistent/lifeboat".into(),
            work_dir: std::env::temp_dir().join("qemu-tests-unit"),
            filter: filter.map(String::from),
            verbose: false,
        }
    }

    #[test]
    fn unknown_filter_is_an_error_naming_the_scenarios() {
        let e = run_suite(&cfg(Some("no-such-scenario")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("serial-256m") && e.contains("malformed-overlap"),
            "{e}"
        );
    }

    #[test]
    fn missing_kernel_is_a_setup_error() {
        let e = run_suite(&cfg(Some("malformed"))).unwrap_err();
        assert!(matches!(e, SuiteError::Setup(_)));
        assert!(e.to_string().contains("cargo xtask build"));
    }

    #[test]
    fn failed_report_names_the_failures() {
        let r = SuiteReport {
            scenarios: vec![
                ScenarioReport {
                    name: "a".into(),
                    passed: true,
                    seconds: 1.0,
                    details: vec![],
                    failure: None,
                },
                ScenarioReport {
                    name: "b".into(),
                    passed: false,
                    seconds: 2.0,
                    details: vec![],
                    failure: Some("scenario b failed: boom\n".into()),
                },
            ],
        };
        let e = SuiteError::Failed(r).to_string();
        assert_eq!(e, "1 of 2 qemu scenarios FAILED (details and console tails above):\n  scenario b failed: boom\n");
    }
}
