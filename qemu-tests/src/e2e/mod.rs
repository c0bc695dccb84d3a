//! End-to-end tests on a real crashed Linux: boot Debian's cloud kernel in QEMU (TCG), arm
//! kdump with lifeboat (`lifeboat load`, with kexec_file_load or kexec_load) or with Debian's
//! own `kexec -p`, crash it with sysrq, get the dump (from the serial port, a virtio-blk disk
//! or `lifeboat serve`), and check it with tools nobody here wrote (`makedumpfile
//! --dump-dmesg`, `crash`) and byte for byte against QEMU's own view of guest memory
//! (`dump-guest-memory` over QMP).
//!
//! - [`arch`]: what differs between the x86_64 and arm64 guests ([`run_for`] takes an
//!   [`Arch`]; [`run`] is x86_64); [`arm64`]: the arm64 inputs, all from Debian's archive.
//! - [`inputs`]: the Debian kernel packages (downloaded once into the cache) and host tools.
//! - [`cpio`], [`initramfs`]: the guest's initramfs and its `/init`.
//! - [`guest`]: QEMU, the serial watch (timings, fail-fast markers) and QMP.
//! - [`sink`]: the dump disk, the server, and how the dump comes back to the host.
//! - [`guest_memory`]: QEMU's ELF memory dump; [`dump_layout`]: the dump's own headers;
//!   [`checks`]: every check; [`baseline`]: the host tools on a crash nothing captured.
//!   See `qemu-tests/E2E.md`.

pub mod arch;
pub mod arm64;
pub mod baseline;
pub mod bench;
pub mod chart;
pub mod checks;
pub mod cpio;
pub mod dump_layout;
pub mod exclusion;
pub mod guest;
pub mod guest_memory;
pub mod initramfs;
pub mod inputs;
pub mod loader_checks;
pub mod sink;
pub mod vskdump;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use arch::Arch;
use checks::{check, Check, Comparison, Exclusions};
use guest_memory::PAGE;
pub use sink::Sink;

/// Set (to anything) to keep each passing scenario's `qemu-memory.elf` (QEMU's
/// dump-guest-memory of the crashed guest, an ELF vmcore).
pub const KEEP_MEMORY_ENV: &str = "LIFEBOAT_E2E_KEEP_MEMORY";

/// What `cargo xtask e2e` passes in. The architecture is [`run_for`]'s argument ([`run`] is
/// x86_64); the paths are that architecture's.
#[derive(Clone, Debug)]
pub struct E2eConfig {
    /// The capture kernel (`target/lifeboat/x86_64/bzImage`, `target/lifeboat/aarch64/Image`).
    pub bzimage: PathBuf,
    /// Static (musl) `lifeboat` for the guest (`lifeboat load`, `lifeboat status`).
    pub lifeboat_guest: PathBuf,
    /// Host `lifeboat` (`lifeboat receive`).
    pub lifeboat_host: PathBuf,
    /// Downloaded packages and files extracted from them; kept between runs.
    pub cache_dir: PathBuf,
    /// Scratch; each scenario uses `<work_dir>/<name>/`.
    pub work_dir: PathBuf,
    /// Run every scenario (default: `file-1g` only).
    pub full: bool,
    /// Run the scenarios whose name contains this (from all of them, whatever `full` says).
    pub filter: Option<String>,
    /// Print the QEMU command line and the whole guest console.
    pub verbose: bool,
}

/// How the guest arms kdump (`e2e.load=` on its command line, read by `/init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMethod {
    /// `lifeboat load --syscall kexec_file_load`.
    LifeboatFile,
    /// `lifeboat load --syscall kexec_load`.
    LifeboatLoad,
    /// Debian's kexec-tools: `kexec -p` (kexec_load, with its purgatory and backup region).
    Stock,
}

impl LoadMethod {
    pub fn cmdline_word(self) -> &'static str {
        match self {
            LoadMethod::LifeboatFile => "file",
            LoadMethod::LifeboatLoad => "load",
            LoadMethod::Stock => "stock",
        }
    }
    fn needs_lifeboat_guest(self) -> bool {
        self != LoadMethod::Stock
    }
}

#[derive(Clone, Debug)]
pub struct E2eScenario {
    /// The guest's architecture.
    pub arch: Arch,
    pub name: &'static str,
    pub load: LoadMethod,
    pub mem_gib: u64,
    pub cpus: u32,
    /// In the default (non-full) run.
    pub default: bool,
    /// The guest's `crashkernel=`.
    pub crashkernel: &'static str,
    /// Where the capture kernel writes the dump.
    pub sink: Sink,
}

impl E2eScenario {
    /// The whole run's limit, scaled with guest RAM (the dump is streamed at ~0.45 MB/s).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(500 + 100 * self.mem_gib)
    }
    /// The guest's command line; `e2e_sink` is `/init`'s `lifeboat.sink=` value
    /// ([`sink::SinkHost::e2e_sink`]: the network sink's port is only known at run time).
    pub fn append(&self, e2e_sink: Option<&str>) -> String {
        let mut a = format!(
            "console={} crashkernel={} panic=0 e2e.load={}",
            self.arch.console(),
            self.crashkernel,
            self.load.cmdline_word()
        );
        if let Some(v) = e2e_sink {
            a.push_str(" e2e.sink=");
            a.push_str(v);
        }
        a
    }
}

/// The guest's `crashkernel=` (lifeboat needs a few MiB; this leaves room for kexec-tools).
pub const CRASHKERNEL: &str = "16M";

/// The arm64 guests' `crashkernel=`: the smallest that works there (`lifeboat load` refuses
/// 3M: it needs 3140 KiB), so every arm64 capture also shows that a 4 MiB reservation is enough.
pub const ARM64_CRASHKERNEL: &str = "4M";

/// Every x86_64 scenario.
pub fn scenarios() -> Vec<E2eScenario> {
    let s = |name, load, mem_gib, default, sink| E2eScenario {
        arch: Arch::X86_64,
        name,
        load,
        mem_gib,
        cpus: 2,
        default,
        crashkernel: CRASHKERNEL,
        sink,
    };
    vec![
        s("file-1g", LoadMethod::LifeboatFile, 1, true, Sink::Serial),
        s("load-1g", LoadMethod::LifeboatLoad, 1, false, Sink::Serial),
        s("stock-1g", LoadMethod::Stock, 1, false, Sink::Serial),
        s("file-4g", LoadMethod::LifeboatFile, 4, false, Sink::Serial),
        s("blk-1g", LoadMethod::LifeboatFile, 1, false, Sink::Blk),
        s("net-1g", LoadMethod::LifeboatFile, 1, false, Sink::Net),
    ]
}

/// Every arm64 scenario. Debian's arm64 kernel has no kexec_file_load (no CONFIG_KEXEC_FILE),
/// so all of them arm kdump with `lifeboat load --syscall kexec_load`. QEMU's `virt` board has
/// one PL011: the console and the serial sink share it, with lifeboat's frames among the text
/// as on x86_64's COM1, and `lifeboat receive` separates them the same way.
pub fn arm64_scenarios() -> Vec<E2eScenario> {
    let s = |name, mem_gib, default, sink| E2eScenario {
        arch: Arch::Aarch64,
        name,
        load: LoadMethod::LifeboatLoad,
        mem_gib,
        cpus: 2,
        default,
        crashkernel: ARM64_CRASHKERNEL,
        sink,
    };
    vec![
        s("serial-1g", 1, true, Sink::Serial),
        s("blk-1g", 1, false, Sink::Blk),
        s("net-1g", 1, false, Sink::Net),
    ]
}

/// Every scenario of `arch`.
pub fn scenarios_for(arch: Arch) -> Vec<E2eScenario> {
    match arch {
        Arch::X86_64 => scenarios(),
        Arch::Aarch64 => arm64_scenarios(),
    }
}

/// The x86_64 scenarios a configuration selects.
pub fn select(full: bool, filter: Option<&str>) -> Vec<E2eScenario> {
    select_for(Arch::X86_64, full, filter)
}

/// The scenarios of `arch` a configuration selects.
pub fn select_for(arch: Arch, full: bool, filter: Option<&str>) -> Vec<E2eScenario> {
    scenarios_for(arch)
        .into_iter()
        .filter(|s| match filter {
            Some(f) => s.name.contains(f),
            None => full || s.default,
        })
        .collect()
}

/// One scenario's outcome.
#[derive(Clone, Debug)]
pub struct E2eScenarioReport {
    pub name: String,
    pub passed: bool,
    /// Wall-clock seconds of the whole scenario (boot, capture, QMP dump, checks).
    pub seconds: f64,
    pub timeline: guest::Timeline,
    pub verdict: Option<String>,
    pub dump_bytes: Option<u64>,
    pub serial_bytes: Option<u64>,
    pub reservation: Option<Range<u64>>,
    pub comparison: Option<Comparison>,
    pub checks: Vec<Check>,
    /// Other facts worth printing.
    pub details: Vec<String>,
    /// The reason and the last 30 console lines, when it failed.
    pub failure: Option<String>,
}

/// Results of every scenario that ran.
#[derive(Clone, Debug, Default)]
pub struct E2eReport {
    /// `linux-image-… version`.
    pub kernel: String,
    pub scenarios: Vec<E2eScenarioReport>,
}

impl E2eScenarioReport {
    /// A report with nothing run yet.
    pub fn new(name: &str) -> Self {
        E2eScenarioReport {
            name: name.into(),
            passed: false,
            seconds: 0.0,
            timeline: Default::default(),
            verdict: None,
            dump_bytes: None,
            serial_bytes: None,
            reservation: None,
            comparison: None,
            checks: vec![],
            details: vec![],
            failure: None,
        }
    }
}

impl E2eReport {
    pub fn passed(&self) -> usize {
        self.scenarios.iter().filter(|s| s.passed).count()
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.1} s"))
}

impl fmt::Display for E2eReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "e2e on {}:", self.kernel)?;
        writeln!(
            f,
            "  {:<11} {:<6} {:>16} {:>15} {:>10} {:>9} {:>8}",
            "scenario", "result", "sysrq→1st line", "sysrq→verdict", "dump MB", "checks", "total"
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "  {:<11} {:<6} {:>16} {:>15} {:>10} {:>9} {:>8}",
                s.name,
                if s.passed { "PASS" } else { "FAIL" },
                secs(s.timeline.sysrq_to_first_line()),
                secs(s.timeline.sysrq_to_verdict()),
                s.dump_bytes
                    .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                format!(
                    "{}/{}",
                    s.checks.iter().filter(|c| c.passed).count(),
                    s.checks.len()
                ),
                format!("{:.0} s", s.seconds)
            )?;
        }
        for s in &self.scenarios {
            writeln!(f, "  {}:", s.name)?;
            for c in &s.checks {
                let first = c.detail.lines().next().unwrap_or("");
                writeln!(
                    f,
                    "    {} {}: {first}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.name
                )?;
            }
            for d in &s.details {
                writeln!(f, "    {d}")?;
            }
        }
        write!(
            f,
            "e2e: {} of {} scenarios passed",
            self.passed(),
            self.scenarios.len()
        )
    }
}

/// Why the e2e run did not pass.
#[derive(Debug)]
pub enum E2eError {
    /// Something needed is missing (an image, a host tool, the kernel packages).
    Setup(String),
    /// The filter selects no scenario.
    NoScenario {
        filter: String,
        known: Vec<&'static str>,
    },
    /// At least one scenario failed; every failure has its reason and console tail.
    Failed(E2eReport),
}

impl fmt::Display for E2eError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            E2eError::Setup(s) => write!(f, "e2e cannot start: {s}"),
            E2eError::NoScenario { filter, known } => write!(
                f,
                "no e2e scenario name contains {filter:?}; scenarios are: {}",
                known.join(", ")
            ),
            E2eError::Failed(r) => {
                // run() already printed the table; the error carries the reasons and tails.
                for s in r.scenarios.iter().filter(|s| !s.passed) {
                    if let Some(why) = &s.failure {
                        write!(f, "{why}")?;
                    }
                }
                write!(
                    f,
                    "{} of {} e2e scenarios FAILED",
                    r.scenarios.len() - r.passed(),
                    r.scenarios.len()
                )
            }
        }
    }
}

impl std::error::Error for E2eError {}

/// Run the selected x86_64 scenarios, printing progress to stdout. `Ok` only if all passed.
pub fn run(cfg: &E2eConfig) -> Result<E2eReport, E2eError> {
    run_for(cfg, Arch::X86_64)
}

/// Run the selected scenarios of `arch` (`cfg`'s images are that architecture's: for
/// aarch64 `target/lifeboat/aarch64/{Image,lifeboat}`), printing progress to stdout. `Ok`
/// only if all passed.
pub fn run_for(cfg: &E2eConfig, arch: Arch) -> Result<E2eReport, E2eError> {
    if cfg.filter.as_deref().is_some_and(|f| f.contains("baseline")) {
        return run_baseline(cfg, arch);
    }
    let selected = select_for(arch, cfg.full, cfg.filter.as_deref());
    // The loader checks are cheap (no capture): in every run unless a filter picks others.
    let loader: Vec<_> = loader_checks::scenarios()
        .into_iter()
        .filter(|s| cfg.filter.as_deref().is_none_or(|f| s.name.contains(f)))
        .collect();
    if selected.is_empty() && loader.is_empty() {
        return Err(E2eError::NoScenario {
            filter: cfg.filter.clone().unwrap_or_default(),
            known: scenarios_for(arch).iter().map(|s| s.name).collect(),
        });
    }
    let need = |p: &Path, what: &str| -> Result<(), E2eError> {
        if p.is_file() {
            Ok(())
        } else {
            Err(E2eError::Setup(format!(
                "{what} {} does not exist; build it first (cargo xtask build)",
                p.display()
            )))
        }
    };
    need(&cfg.bzimage, "the capture kernel")?;
    need(&cfg.lifeboat_host, "the host lifeboat tool")?;
    let guest_tool = !loader.is_empty() || selected.iter().any(|s| s.load.needs_lifeboat_guest());
    if guest_tool {
        need(
            &cfg.lifeboat_guest,
            "the static (musl) lifeboat for the guest",
        )?;
    }
    let (inputs, initramfs) = prepare_for(cfg, arch)?;

    let mut report = E2eReport {
        kernel: format!("{} {}", inputs.image_package, inputs.image_version),
        scenarios: vec![],
    };
    let n = selected.len() + loader.len();
    for (i, s) in loader.iter().enumerate() {
        println!(
            "e2e: [{}/{n}] {} (lifeboat estimate/load/status/unload, crashkernel={}) …",
            i + 1,
            s.name,
            s.crashkernel.unwrap_or("none")
        );
        let r = loader_checks::run(s, arch, &cfg.work_dir, &inputs.vmlinuz, &initramfs);
        print_scenario(&r);
        report.scenarios.push(r);
    }
    for (i, s) in selected.iter().enumerate() {
        let i = i + loader.len();
        println!(
            "e2e: [{}/{n}] {} ({} GiB, -smp {}, e2e.load={}, sink {}, timeout {} s) …",
            i + 1,
            s.name,
            s.mem_gib,
            s.cpus,
            s.load.cmdline_word(),
            s.sink.word(),
            s.timeout().as_secs()
        );
        let r = run_scenario(s, cfg, &inputs, &initramfs);
        print_scenario(&r);
        report.scenarios.push(r);
    }
    println!("{report}");
    if report.passed() == n {
        Ok(report)
    } else {
        Err(E2eError::Failed(report))
    }
}

/// `--filter baseline`: only [`baseline::run`], the host tools on QEMU's memory of a crash
/// nothing captured (no lifeboat image needed).
fn run_baseline(cfg: &E2eConfig, arch: Arch) -> Result<E2eReport, E2eError> {
    println!("e2e: [1/1] {} ({arch}: e2e.load=none, QEMU's memory dump, makedumpfile, crash) …", baseline::NAME);
    let r = baseline::run(cfg, arch)?;
    print_scenario(&r);
    let report = E2eReport {
        kernel: r.details.first().cloned().unwrap_or_default(),
        scenarios: vec![r],
    };
    println!("{report}");
    if report.passed() == 1 {
        Ok(report)
    } else {
        Err(E2eError::Failed(report))
    }
}

pub(crate) fn print_scenario(r: &E2eScenarioReport) {
    println!("e2e: {} {} ({:.0} s)", if r.passed { "PASS" } else { "FAIL" }, r.name, r.seconds);
    for c in &r.checks {
        println!("    {c}");
    }
    for d in &r.details {
        println!("    {d}");
    }
    if let Some(f) = &r.failure {
        print!("{f}");
    }
}

/// Fetch the x86_64 guest kernel (cached) and write the initramfs.
pub(crate) fn prepare(cfg: &E2eConfig) -> Result<(inputs::Inputs, PathBuf), E2eError> {
    prepare_for(cfg, Arch::X86_64)
}

/// Fetch the guest kernel and tools of `arch` (cached) and write the initramfs
/// (`<work_dir>/initramfs.cpio`).
pub fn prepare_for(cfg: &E2eConfig, arch: Arch) -> Result<(inputs::Inputs, PathBuf), E2eError> {
    let mut log = |m: String| println!("e2e: {m}");
    let inputs = match arch {
        Arch::X86_64 => inputs::prepare(&cfg.cache_dir, &mut log),
        Arch::Aarch64 => arm64::prepare(&cfg.cache_dir, &mut log),
    }
    .map_err(E2eError::Setup)?;
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| E2eError::Setup(format!("cannot create {}: {e}", cfg.work_dir.display())))?;
    let guest_bin = cfg
        .lifeboat_guest
        .is_file()
        .then_some(cfg.lifeboat_guest.as_path());
    let cpio = initramfs::build(&inputs, &cfg.bzimage, guest_bin).map_err(E2eError::Setup)?;
    let initramfs = cfg.work_dir.join("initramfs.cpio");
    std::fs::write(&initramfs, &cpio)
        .map_err(|e| E2eError::Setup(format!("cannot write {}: {e}", initramfs.display())))?;
    println!(
        "e2e: guest kernel {} {} ({}), initramfs {} bytes",
        inputs.image_package,
        inputs.image_version,
        inputs.vmlinuz.display(),
        cpio.len()
    );
    Ok((inputs, initramfs))
}

/// The `/proc/iomem` lines `/init` printed (`e2e: iomem: 2b000000-2bffffff : Crash kernel`) with
/// the given name, as byte ranges (sorted).
pub fn parse_iomem(console: &[String], name: &str) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = console
        .iter()
        .filter_map(|l| {
            let rest = l.split(initramfs::MARK_IOMEM).nth(1)?;
            let (range, n) = rest.split_once(':')?;
            if !n.trim().eq_ignore_ascii_case(name) {
                return None;
            }
            let (a, b) = range.trim().split_once('-')?;
            let a = u64::from_str_radix(a, 16).ok()?;
            let b = u64::from_str_radix(b, 16).ok()?;
            (b > a).then_some(a..b + 1)
        })
        .collect();
    v.sort_by_key(|r| r.start);
    v.dedup();
    v
}

/// The crash reservation (`Crash kernel` in the guest's /proc/iomem).
pub fn parse_reservation(console: &[String]) -> Option<Range<u64>> {
    parse_iomem(console, "Crash kernel").into_iter().next()
}

pub(crate) fn run_scenario(
    s: &E2eScenario,
    cfg: &E2eConfig,
    inputs: &inputs::Inputs,
    initramfs: &Path,
) -> E2eScenarioReport {
    let start = Instant::now();
    let dir = cfg.work_dir.join(s.name);
    let mut r = E2eScenarioReport::new(s.name);
    let reason = scenario_body(s, cfg, inputs, initramfs, &dir, &mut r).err();
    let console = checks::console_text(&std::fs::read(dir.join("serial.bin")).unwrap_or_default());
    let failed_checks: Vec<&Check> = r.checks.iter().filter(|c| !c.passed).collect();
    let reason = reason.or_else(|| {
        (!failed_checks.is_empty()).then(|| {
            failed_checks
                .iter()
                .map(|c| format!("check {} failed: {}", c.name, c.detail))
                .collect::<Vec<_>>()
                .join("\n")
        })
    });
    if let Some(reason) = reason {
        let mut f = format!(
            "e2e scenario {} failed: {reason}\n  files: {}\n",
            s.name,
            dir.display()
        );
        f.push_str(&format!(
            "  last {} console lines:\n",
            console.len().min(30)
        ));
        f.push_str(&crate::qemu::tail(&console, 30));
        if let Ok(err) = std::fs::read_to_string(dir.join("qemu.stderr")) {
            if !err.trim().is_empty() {
                f.push_str("  qemu stderr:\n");
                f.push_str(&crate::qemu::tail(
                    &err.lines().map(String::from).collect::<Vec<_>>(),
                    10,
                ));
            }
        }
        r.failure = Some(f);
    } else {
        r.passed = true;
        // QEMU's memory file is as large as the guest: drop it after a pass, unless
        // `cargo xtask bench` wants it as the input of its pipeline comparison.
        if std::env::var_os(KEEP_MEMORY_ENV).is_none() {
            let _ = std::fs::remove_file(dir.join("qemu-memory.elf"));
        }
    }
    if cfg.verbose {
        r.details.push(format!(
            "console ({} lines):\n{}",
            console.len(),
            crate::qemu::tail(&console, usize::MAX)
        ));
    }
    r.seconds = start.elapsed().as_secs_f64();
    r
}

/// Boot, capture and check; `Err` for a failure that stops the scenario before its checks.
/// Failed checks are recorded in `r.checks`.
fn scenario_body(
    s: &E2eScenario,
    cfg: &E2eConfig,
    inputs: &inputs::Inputs,
    initramfs: &Path,
    dir: &Path,
    r: &mut E2eScenarioReport,
) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut sink_host = sink::SinkHost::prepare(s.sink, dir, &cfg.lifeboat_host)?;
    let mem = format!("{}G", s.mem_gib);
    let spec = guest::GuestSpec {
        arch: s.arch,
        dir,
        vmlinuz: &inputs.vmlinuz,
        initramfs,
        mem: &mem,
        smp: s.cpus,
        append: s.append(sink_host.e2e_sink().as_deref()),
        timeout: s.timeout(),
        verbose: cfg.verbose,
        extra: sink_host.qemu_args(),
    };
    let name = s.name;
    let mut log = |m: String| println!("e2e: [{name}] {m}");
    let run = guest::run(&spec, &mut log);
    let run = match run {
        Ok(run) => run,
        Err((why, tl)) => {
            r.timeline = tl;
            return Err(format!("{why}{}", sink_host.failure_context()));
        }
    };
    r.timeline = run.timeline.clone();
    r.verdict = Some(run.verdict.clone());
    r.serial_bytes = Some(run.serial_bytes);
    r.details.push(format!(
        "times: sysrq→first lifeboat line {}, sysrq→verdict {}, QMP dump-guest-memory {}; serial {}; verdict {:?}",
        secs(run.timeline.sysrq_to_first_line()),
        secs(run.timeline.sysrq_to_verdict()),
        secs(run.timeline.qemu_dump_seconds),
        if run.serial_bytes < 1_000_000 {
            format!("{:.1} kB", run.serial_bytes as f64 / 1e3)
        } else {
            format!("{:.1} MB", run.serial_bytes as f64 / 1e6)
        },
        run.verdict
    ));
    let console = checks::console_text(&std::fs::read(spec.serial_path()).unwrap_or_default());
    let reservation = parse_reservation(&console).ok_or(
        "no \"e2e: iomem: … : Crash kernel\" line: the guest has no crashkernel= reservation",
    )?;
    r.reservation = Some(reservation.clone());
    let system_ram = parse_iomem(&console, "System RAM");
    if system_ram.is_empty() {
        return Err("no \"e2e: iomem: … : System RAM\" lines from /init".into());
    }

    if s.sink != Sink::Serial {
        // The capture kernel's lines about its sink: which device, how fast, what the server
        // said.
        let about_sink = |l: &&String| {
            l.starts_with(guest::MARK_LIFEBOAT)
                && ["sink: ", "lifeboat: dump file ", "stored by the server"]
                    .iter()
                    .any(|k| l.contains(k))
        };
        let after_sysrq = console
            .iter()
            .skip_while(|l| !l.contains(guest::MARK_SYSRQ))
            .filter(about_sink);
        r.details.extend(after_sysrq.take(6).cloned());
    }

    // 1. the dump reaches the host: lifeboat receive, fetch or serve
    let (got, vmcore_path) = sink_host.collect(&inputs.tools, &cfg.lifeboat_host, dir, &run.verdict);
    let how = got.name;
    r.checks.push(got);
    let vmcore_path = vmcore_path.ok_or(format!("no vmcore from `{how}`"))?;
    let vmcore = match std::fs::read(&vmcore_path) {
        Ok(v) => v,
        Err(e) => return Err(format!("no vmcore from `{how}`: {e}")),
    };
    r.dump_bytes = Some(vmcore.len() as u64);
    let layout = dump_layout::DumpLayout::read(&vmcore);
    let qemu_mem = guest_memory::GuestMemory::open(&spec.qemu_dump_path());

    // 2. CPUs in the dump header (and in QEMU's own notes)
    r.checks.push(check(
        "2 CPUs",
        match (&layout, &qemu_mem) {
            (Ok(l), Ok(m)) => {
                let want = s.cpus as usize;
                if l.nr_cpus as usize == want && l.prstatus.len() == want && m.prstatus_notes == want {
                    Ok(format!(
                        "header nr_cpus {}, {} PRSTATUS notes (QEMU: {} vCPUs)",
                        l.nr_cpus,
                        l.prstatus.len(),
                        m.prstatus_notes
                    ))
                } else {
                    Err(format!(
                        "-smp {want}, but header nr_cpus is {}, the dump has {} PRSTATUS notes, QEMU's dump {}",
                        l.nr_cpus,
                        l.prstatus.len(),
                        m.prstatus_notes
                    ))
                }
            }
            (Err(e), _) => Err(format!("cannot read the dump's headers: {e}")),
            (_, Err(e)) => Err(format!("cannot read QEMU's memory dump: {e}")),
        },
    ));

    // 3. makedumpfile --dump-dmesg
    r.checks.push(check(
        "makedumpfile --dump-dmesg",
        checks::makedumpfile_dmesg(&inputs.tools, dir, &vmcore_path),
    ));
    // 4. crash
    r.checks.push(check(
        "crash bt/log",
        checks::crash(&inputs.tools, &inputs.vmlinux, dir, &vmcore_path, "crash"),
    ));
    if let sink::SinkHost::Blk { disk } = &sink_host {
        r.checks.push(check(
            "crash bt/log on the raw disk",
            checks::crash(&inputs.tools, &inputs.vmlinux, dir, disk, "crash-disk"),
        ));
    }

    // 5. byte-exact against QEMU's view
    let page = |a: u64| a / PAGE;
    let reserved_pfns = page(reservation.start)..reservation.end.div_ceil(PAGE);
    let mut excl = Exclusions {
        pfns: vec![reserved_pfns.clone()],
        why: vec![format!(
            "crash reservation {:#x}-{:#x} (QEMU sees the capture kernel there)",
            reservation.start,
            reservation.end - 1
        )],
    };
    if s.load == LoadMethod::Stock && s.arch == Arch::X86_64 {
        excl.pfns.insert(0, 0..page(1 << 20));
        excl.why.push(
            "low 1 MiB (kexec-tools' purgatory backs up 0-640 KiB; lifeboat dumps the backup)"
                .into(),
        );
    }
    // 5. RAM coverage by the guest's own /proc/iomem
    let mut not_expected = vec![reserved_pfns.clone()];
    if s.load == LoadMethod::LifeboatFile && s.arch == Arch::X86_64 {
        not_expected.push(0..page(1 << 20));
    }
    r.checks.push(check(
        "RAM coverage",
        match &layout {
            Ok(l) => checks::ram_coverage(l, &system_ram, &not_expected),
            Err(e) => Err(format!("cannot read the dump's headers: {e}")),
        },
    ));
    r.details.push(format!(
        "guest System RAM (/proc/iomem): {}",
        system_ram
            .iter()
            .map(|r| format!("{:#x}-{:#x}", r.start, r.end - 1))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // 6. byte-exact against QEMU's view
    let compared = match (&layout, &qemu_mem) {
        (Ok(l), Ok(m)) => checks::compare_with_qemu(
            &vmcore,
            l,
            m,
            &system_ram,
            &excl,
            &l.expectations_for(s.cpus as i32, &inputs.kernel_release, s.arch.name()),
        ),
        (Err(e), _) => Err(format!("cannot read the dump's headers: {e}")),
        (_, Err(e)) => Err(format!("cannot read QEMU's memory dump: {e}")),
    };
    if let Ok(c) = &compared {
        r.details.push(format!("QEMU RAM: {}", c.qemu_ranges));
        r.details
            .push(format!("dump's 1st bitmap: {}", c.dumped_ranges));
        r.details.push(format!(
            "excluded from the comparison: {}",
            excl.why.join("; ")
        ));
        r.details.push(format!(
            "QEMU RAM pages above 1 MiB and outside the reservation that lifeboat did not dump: {}{}",
            c.not_dumped,
            if c.not_dumped > 0 { format!(" ({})", c.not_dumped_ranges) } else { String::new() }
        ));
        r.comparison = Some(c.clone());
    }
    r.checks.push(check(
        "byte-exact vs QEMU",
        compared.map(|c| {
            format!(
                "{} pages in the dump ({} shared zero), {} compared equal ({} partly RAM, compared within RAM), {} excluded",
                c.pages_in_dump, c.zero_pages, c.compared, c.partial, c.excluded
            )
        }),
    ));
    // 7. The pages left out equal makedumpfile -d 31's on QEMU's full memory of the same crash.
    r.checks.push(check(
        "exclusions = makedumpfile -d 31",
        match &layout {
            Ok(l) => exclusion::cross_check(&inputs.tools, dir, &spec.qemu_dump_path(), l),
            Err(e) => Err(format!("cannot read the dump's headers: {e}")),
        },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_run_is_file_1g_and_full_is_all() {
        let names = |v: Vec<E2eScenario>| v.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(select(false, None)), ["file-1g"]);
        assert_eq!(
            names(select(true, None)),
            ["file-1g", "load-1g", "stock-1g", "file-4g", "blk-1g", "net-1g"]
        );
        assert_eq!(names(select(false, Some("stock"))), ["stock-1g"]);
        assert_eq!(names(select(false, Some("net"))), ["net-1g"]);
        assert_eq!(names(select(false, Some("4g"))), ["file-4g"]);
        assert!(select(true, Some("nope")).is_empty());
    }

    #[test]
    fn timeouts_and_command_lines() {
        let all = scenarios();
        assert_eq!(all[0].timeout().as_secs(), 600);
        assert_eq!(all[3].timeout().as_secs(), 900);
        assert_eq!(
            all[2].append(None),
            "console=ttyS0 crashkernel=16M panic=0 e2e.load=stock"
        );
        let net = all.iter().find(|s| s.name == "net-1g").unwrap();
        assert_eq!(
            (net.sink, net.load, net.mem_gib),
            (Sink::Net, LoadMethod::LifeboatFile, 1)
        );
        assert_eq!(
            net.append(Some("net:10.0.2.2:4321")),
            "console=ttyS0 crashkernel=16M panic=0 e2e.load=file e2e.sink=net:10.0.2.2:4321"
        );
        let blk = all.iter().find(|s| s.name == "blk-1g").unwrap();
        assert_eq!(
            (blk.sink, blk.load, blk.timeout().as_secs()),
            (Sink::Blk, LoadMethod::LifeboatFile, 600)
        );
    }

    #[test]
    fn arm64_scenarios_use_kexec_load_and_the_pl011() {
        let names = |v: Vec<E2eScenario>| v.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(select_for(Arch::Aarch64, false, None)), ["serial-1g"]);
        assert_eq!(
            names(select_for(Arch::Aarch64, true, None)),
            ["serial-1g", "blk-1g", "net-1g"]
        );
        assert_eq!(names(select_for(Arch::Aarch64, false, Some("blk"))), ["blk-1g"]);
        for s in arm64_scenarios() {
            assert_eq!((s.arch, s.load, s.cpus), (Arch::Aarch64, LoadMethod::LifeboatLoad, 2));
        }
        let blk = &arm64_scenarios()[1];
        assert_eq!(
            blk.append(Some("blk:/dev/vda")),
            "console=ttyAMA0 crashkernel=4M panic=0 e2e.load=load e2e.sink=blk:/dev/vda"
        );
        // The x86_64 list is what it was.
        assert!(scenarios().iter().all(|s| s.arch == Arch::X86_64));
        assert_eq!(names(scenarios_for(Arch::X86_64)), names(scenarios()));
    }

    #[test]
    fn failure_report_has_reason_and_console_tail() {
        let sc = |name: &str, failure: Option<&str>| E2eScenarioReport {
            name: name.into(),
            passed: failure.is_none(),
            seconds: 1.0,
            timeline: guest::Timeline {
                sysrq: Some(3.0),
                first_lifeboat_line: Some(3.2),
                verdict: Some(110.0),
                ..Default::default()
            },
            verdict: Some("complete".into()),
            dump_bytes: Some(50_000_000),
            serial_bytes: None,
            reservation: None,
            comparison: None,
            checks: vec![check("crash bt/log", Ok("fine".into()))],
            details: vec![],
            failure: failure.map(String::from),
        };
        let r = E2eReport {
            kernel: "linux-image-x 1".into(),
            scenarios: vec![
                sc("file-1g", None),
                sc(
                    "stock-1g",
                    Some("e2e scenario stock-1g failed: boom\n    | lifeboat: verdict: complete\n"),
                ),
            ],
        };
        let table = r.to_string();
        assert!(table.contains("file-1g     PASS"), "{table}");
        assert!(table.contains("107.0 s"), "{table}");
        assert!(table.contains("50.0"), "{table}");
        assert!(table.ends_with("e2e: 1 of 2 scenarios passed"), "{table}");
        let e = E2eError::Failed(r).to_string();
        assert_eq!(
            e,
            "e2e scenario stock-1g failed: boom\n    | lifeboat: verdict: complete\n1 of 2 e2e scenarios FAILED"
        );
    }

    #[test]
    fn reservation_and_ram_from_iomem_lines() {
        let c = vec![
            "e2e: iomem: 00100000-3ffdffff : System RAM".to_string(),
            "e2e: iomem: 01000000-01ffffff : Kernel code".to_string(),
            "e2e: iomem: 00001000-0009fbff : System RAM".to_string(),
            "e2e: iomem:   2b000000-2bffffff : Crash kernel".to_string(),
        ];
        assert_eq!(parse_reservation(&c), Some(0x2b000000..0x2c000000));
        assert_eq!(parse_reservation(&c[..2]), None);
        assert_eq!(
            parse_iomem(&c, "System RAM"),
            vec![0x1000..0x9fc00, 0x100000..0x3ffe0000]
        );
    }

    #[test]
    fn unknown_filter_names_the_scenarios() {
        let cfg = E2eConfig {
            bzimage: "/nonexistent".into(),
            lifeboat_guest: "/nonexistent".into(),
            lifeboat_host: "/nonexistent".into(),
            cache_dir: "/nonexistent".into(),
            work_dir: "/nonexistent".into(),
            full: false,
            filter: Some("zzz".into()),
            verbose: false,
        };
        let e = run(&cfg).unwrap_err().to_string();
        assert!(e.contains("file-1g") && e.contains("stock-1g"), "{e}");
        let e = run_for(&cfg, Arch::Aarch64).unwrap_err().to_string();
        assert!(e.contains("serial-1g") && e.contains("blk-1g"), "{e}");
        let cfg = E2eConfig {
            filter: None,
            ..cfg
        };
        assert!(matches!(run(&cfg), Err(E2eError::Setup(_))));
        assert!(matches!(run_for(&cfg, Arch::Aarch64), Err(E2eError::Setup(_))));
    }
}

/// Run the e2e scenarios from `cargo test` (the lead's `cargo xtask e2e` is the normal way):
///
/// ```sh
/// E2E_FILTER=stock-1g cargo test --release -p qemu-tests e2e_from_env -- --ignored --nocapture
/// ```
///
/// Paths default to the workspace's `target/` (`target/lifeboat/x86_64/{bzImage,lifeboat}`,
/// `target/release/lifeboat`, `target/e2e-cache`, `target/e2e`); `E2E_BZIMAGE`,
/// `E2E_LIFEBOAT_GUEST`, `E2E_LIFEBOAT_HOST`, `E2E_CACHE`, `E2E_WORK` override them;
/// `E2E_FULL=1` runs every scenario, `E2E_VERBOSE=1` prints the whole console.
/// `E2E_ARCH=aarch64` runs the arm64 scenarios with `target/lifeboat/aarch64/{Image,lifeboat}`
/// and the work directory `target/e2e/aarch64`.
#[cfg(test)]
pub(crate) mod from_env {
    use super::*;

    /// The architecture `E2E_ARCH` names, or `default`.
    pub(crate) fn arch(default: Arch) -> Arch {
        std::env::var("E2E_ARCH")
            .ok()
            .map(|a| Arch::parse(&a).unwrap_or_else(|| panic!("E2E_ARCH={a}: x86_64 or aarch64")))
            .unwrap_or(default)
    }

    /// The configuration the environment describes for `arch` (see above); the work
    /// directory is `E2E_WORK` or `work` under the workspace's `target/`.
    pub(crate) fn config(arch: Arch, work: &Path) -> E2eConfig {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = root.join("target");
        let path = |var: &str, default: PathBuf| {
            std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
        };
        let images = target.join("lifeboat").join(arch.name());
        E2eConfig {
            bzimage: path("E2E_BZIMAGE", images.join(arch.payload_name())),
            lifeboat_guest: path("E2E_LIFEBOAT_GUEST", images.join("lifeboat")),
            lifeboat_host: path("E2E_LIFEBOAT_HOST", target.join("release/lifeboat")),
            cache_dir: path("E2E_CACHE", target.join("e2e-cache")),
            work_dir: path("E2E_WORK", target.join(work)),
            full: std::env::var("E2E_FULL").is_ok_and(|v| v == "1"),
            filter: std::env::var("E2E_FILTER").ok(),
            verbose: std::env::var("E2E_VERBOSE").is_ok_and(|v| v == "1"),
        }
    }

    #[test]
    #[ignore]
    fn e2e_from_env() {
        let arch = arch(Arch::default());
        let work = match arch {
            Arch::X86_64 => PathBuf::from("e2e"),
            Arch::Aarch64 => Path::new("e2e").join(arch.name()),
        };
        if let Err(e) = run_for(&config(arch, &work), arch) {
            panic!("{e}");
        }
    }
}
