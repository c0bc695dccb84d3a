//! The `cargo xtask qemu` suite: boot the lifeboat capture kernel in QEMU on synthetic crashed
//! memory and check the dump it sends with code that shares nothing with the kernel.
//!
//! - [`synth`] generates the crashed machine: RAM ranges with holes, a kexec-tools backup range,
//!   a kernel-text view, PRSTATUS and VMCOREINFO notes, a `struct new_utsname`, all from a seed;
//!   on arm64 with 4, 16 or 64 KiB pages (the dump's block size).
//! - [`qemu`] boots the capture kernel with hard timeouts and reads its console back: the
//!   x86_64 PVH ELF on QEMU `pc`, or the arm64 Image on QEMU `virt` ([`Arch`]).
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
use std::str::FromStr;

pub use scenario::ScenarioReport;

/// The architecture of the capture kernel under test, and so of the synthetic crashed
/// machine and of the QEMU that boots it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `qemu-system-x86_64 -M pc`, the PVH `capture.elf`, exit through `isa-debug-exit`.
    #[default]
    X86_64,
    /// `qemu-system-aarch64 -M virt`, the arm64 `Image`, exit through semihosting.
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `uname -m` of the architecture: also `utsname.machine` in the dump header.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// How a scenario is named in reports and in the work directory: x86_64 scenarios keep
    /// their bare names, the others are `<arch>/<name>`.
    pub fn scenario_label(self, name: &str) -> String {
        match self {
            Arch::X86_64 => name.to_string(),
            _ => format!("{}/{name}", self.name()),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;
    /// `x86_64` (or `x86-64`, `amd64`) and `aarch64` (or `arm64`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!(
                "unknown architecture {s:?}: expected x86_64 or aarch64"
            )),
        }
    }
}

/// What `cargo xtask qemu` passes in.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// The capture kernel QEMU boots with `-kernel`: for [`Arch::X86_64`] the PVH ELF
    /// (`capture.elf`), for [`Arch::Aarch64`] the arm64 `Image`.
    pub capture_elf: PathBuf,
    /// Which capture kernel that is, and so which scenarios run on which QEMU.
    pub arch: Arch,
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

/// The kernel file must be what QEMU boots for `arch`: an ELF (x86_64's PVH `capture.elf`) or
/// an arm64 Image (`"ARM\x64"` at offset 0x38, `Documentation/arch/arm64/booting.rst`).
fn check_kernel_format(path: &std::path::Path, arch: Arch) -> Result<(), SuiteError> {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| SuiteError::Setup(format!("cannot read {}: {e}", path.display())))?;
    let is_elf = n >= 4 && head[..4] == *b"\x7fELF";
    let is_arm64_image = n == 64 && head[0x38..0x3c] == *b"ARM\x64";
    let ok = match arch {
        Arch::X86_64 => is_elf,
        Arch::Aarch64 => is_arm64_image,
    };
    if ok {
        return Ok(());
    }
    let what = match arch {
        Arch::X86_64 => "a PVH ELF (capture.elf)",
        Arch::Aarch64 => "an arm64 Image (no \"ARM\\x64\" magic at offset 0x38)",
    };
    let is = if is_elf {
        " (it is an ELF file)"
    } else if is_arm64_image {
        " (it is an arm64 Image)"
    } else {
        ""
    };
    Err(SuiteError::Setup(format!(
        "{} is not {what}{is}, which the {arch} scenarios boot",
        path.display()
    )))
}

/// Run every scenario selected by `cfg.filter`, printing progress and a report to stdout.
/// `Ok` only if all of them passed.
pub fn run_suite(cfg: &SuiteConfig) -> Result<SuiteReport, SuiteError> {
    // Without a filter: every scenario of the architecture but the slow ones that run only
    // when named.
    let selected: Vec<_> = scenario::for_arch(cfg.arch)
        .into_iter()
        .filter(|s| match cfg.filter.as_deref() {
            None => !s.on_request_only(),
            Some(f) => s.name.contains(f),
        })
        .collect();
    if selected.is_empty() {
        return Err(SuiteError::NoScenario {
            filter: cfg.filter.clone().unwrap_or_default(),
            known: scenario::names_for(cfg.arch),
        });
    }
    if !cfg.capture_elf.is_file() {
        return Err(SuiteError::Setup(format!(
            "capture kernel {} does not exist; build it first (cargo xtask build)",
            cfg.capture_elf.display()
        )));
    }
    check_kernel_format(&cfg.capture_elf, cfg.arch)?;
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
    let install = match cfg.arch {
        Arch::X86_64 => "install qemu-system-x86, or set QEMU_SYSTEM_X86_64",
        Arch::Aarch64 => "install qemu-system-arm, or set QEMU_SYSTEM_AARCH64",
    };
    check_tool(&qemu::qemu_binary_for(cfg.arch), "--version", install)?;
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| SuiteError::Setup(format!("cannot create {}: {e}", cfg.work_dir.display())))?;

    let mut report = SuiteReport::default();
    let n = selected.len();
    for (i, s) in selected.iter().enumerate() {
        println!(
            "qemu-tests: [{}/{n}] {} (timeout {} s) …",
            i + 1,
            cfg.arch.scenario_label(s.name),
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
            arch: Arch::X86_64,
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

    #[test]
    fn arch_names_parse_and_label_scenarios() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert!("riscv64"
            .parse::<Arch>()
            .unwrap_err()
            .contains("x86_64 or aarch64"));
        assert_eq!(Arch::default(), Arch::X86_64);
        assert_eq!(Arch::X86_64.scenario_label("blk-256m"), "blk-256m");
        assert_eq!(Arch::Aarch64.scenario_label("blk-256m"), "aarch64/blk-256m");
    }

    #[test]
    fn aarch64_names_its_own_scenarios() {
        let mut c = cfg(Some("no-such-scenario"));
        c.arch = Arch::Aarch64;
        let e = run_suite(&c).unwrap_err().to_string();
        assert!(
            e.contains("serial-256m") && e.contains("blk-pci-64m"),
            "{e}"
        );
        assert!(!e.contains("bounded-memory"), "{e}");
        // x86_64 has no blk-pci scenario (all its disks are PCI).
        c.arch = Arch::X86_64;
        let e = run_suite(&c).unwrap_err().to_string();
        assert!(
            !e.contains("blk-pci-64m") && e.contains("bounded-memory-64g-full"),
            "{e}"
        );
    }

    #[test]
    fn the_kernel_must_match_the_arch() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-kfmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join("capture.elf");
        std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        let img = dir.join("Image");
        std::fs::write(&img, &image).unwrap();
        assert!(check_kernel_format(&elf, Arch::X86_64).is_ok());
        assert!(check_kernel_format(&img, Arch::Aarch64).is_ok());
        let e = check_kernel_format(&elf, Arch::Aarch64)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not an arm64 Image") && e.contains("(it is an ELF file)"),
            "{e}"
        );
        let e = check_kernel_format(&img, Arch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(it is an arm64 Image), which the x86_64 scenarios boot"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
