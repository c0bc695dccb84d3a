//! `cargo xtask`: build lifeboat's images and run its QEMU tests.
//!
//! - `cargo xtask setup`  install what the tests need (Debian packages, Rust targets) when missing
//! - `cargo xtask build`  build `target/lifeboat/x86_64/{bzImage,capture.elf}` and
//!   `target/lifeboat/aarch64/Image`, and print sizes
//! - `cargo xtask qemu`   boot the capture kernel in QEMU on synthetic crashed memory
//! - `cargo xtask test`   setup + `cargo test` + `cargo xtask qemu` and `e2e --full`, for x86_64 and
//!   aarch64 (the README's test command)
//! - `cargo xtask demo`   setup + a capture you can watch

mod image;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \n  setup                 install missing packages and Rust targets (uses sudo/apt-get)\
         \n  build                 build target/lifeboat/{{x86_64/{{bzImage,capture.elf}},aarch64/Image}}\
         \n  qemu [--arch x86_64|aarch64] [--filter NAME] [--verbose]\
         \n                        run the capture kernel in QEMU on synthetic crashed memory\
         \n  test                  setup, cargo test, cargo xtask qemu\
         \n  demo                  setup, build, capture a synthetic crash and show it\
         \n  bench [--only sinks|pipeline|crashkernel] [--mib N]\
         \n                        throughput, pipeline and crashkernel= tables\
         \n  bench --vs-kdump [--reps N] [--mib 1024,4096]\
         \n                        lifeboat against Debian's Linux kdump; writes docs/benchmarks.{{md,png}}"
    );
    ExitCode::from(2)
}

pub fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{:?}", cmd);
    let status = cmd.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Build the host `lifeboat` tool; returns its path.
fn build_loader() -> Result<PathBuf, String> {
    run(cargo().args(["build", "--quiet", "--release", "-p", "lifeboat-loader", "--bin", "lifeboat"]))?;
    Ok(workspace_root().join("target/release/lifeboat"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { return usage() };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "setup" => setup::ensure_all(),
        "build" => image::build_x86_64().and_then(|i| {
            let a = image::build_aarch64()?;
            println!("wrote {}, {} and {}", i.bzimage.display(), i.capture_elf.display(), a.image.display());
            Ok(())
        }),
        "qemu" => qemu(rest),
        "e2e" => e2e(rest),
        "bench" => bench(rest),
        "test" => test(),
        "demo" => demo(),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Options shared by the test commands.
#[derive(Default)]
struct Opts {
    filter: Option<String>,
    verbose: bool,
    full: bool,
    /// `--arch x86_64|aarch64` (default x86_64).
    arch: qemu_tests::Arch,
}

fn parse_opts(args: &[String], allow_full: bool) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => o.filter = Some(it.next().ok_or("--filter needs a value")?.clone()),
            "--verbose" | "-v" => o.verbose = true,
            "--full" if allow_full => o.full = true,
            "--arch" => o.arch = it.next().ok_or("--arch needs x86_64 or aarch64")?.parse()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn qemu(args: &[String]) -> Result<(), String> {
    let Opts { filter, verbose, arch, .. } = parse_opts(args, false)?;
    setup::check_qemu_tools()?;
    let capture_elf = match arch {
        qemu_tests::Arch::X86_64 => image::build_x86_64()?.capture_elf,
        qemu_tests::Arch::Aarch64 => image::build_aarch64()?.image,
    };
    let lifeboat_bin = build_loader()?;
    let work_dir = workspace_root().join("target/qemu-tests");
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let config = qemu_tests::SuiteConfig { capture_elf, arch, lifeboat_bin, work_dir, filter, verbose };
    qemu_tests::run_suite(&config).map(|_| ()).map_err(|e| format!("QEMU tests failed ({arch}): {e}"))
}

/// The e2e configuration for `--arch` (x86_64 unless given) and the architecture.
fn e2e_config(args: &[String]) -> Result<(qemu_tests::e2e::E2eConfig, qemu_tests::Arch), String> {
    let Opts { filter, verbose, full, arch } = parse_opts(args, true)?;
    setup::check_qemu_tools()?;
    let (payload, lifeboat_guest, work) = match arch {
        qemu_tests::Arch::X86_64 => {
            let images = image::build_x86_64()?;
            (images.bzimage, images.lifeboat_static, "target/e2e")
        }
        qemu_tests::Arch::Aarch64 => {
            let images = image::build_aarch64()?;
            (images.image, images.lifeboat_static, "target/e2e/aarch64")
        }
    };
    let lifeboat_host = build_loader()?;
    let root = workspace_root();
    let config = qemu_tests::e2e::E2eConfig {
        bzimage: payload,
        lifeboat_guest,
        lifeboat_host,
        cache_dir: root.join("target/e2e-cache"),
        work_dir: root.join(work),
        full,
        filter,
        verbose,
    };
    Ok((config, arch))
}

fn e2e(args: &[String]) -> Result<(), String> {
    let (config, arch) = e2e_config(args)?;
    qemu_tests::e2e::run_for(&config, arch).map(|_| ()).map_err(|e| format!("e2e failed ({arch}): {e}"))
}

/// `cargo xtask bench [--only sinks|pipeline|crashkernel] [--mib N]`, and
/// `cargo xtask bench --vs-kdump [--reps N] [--mib 1024,4096]` (= `--only vs-kdump`): lifeboat
/// against Debian's Linux kdump, which runs only when asked for (~15 minutes).
fn bench(args: &[String]) -> Result<(), String> {
    setup::ensure_all()?;
    let mut only: Option<String> = None;
    let mut mib_arg: Option<String> = None;
    let mut reps = 3usize;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => only = Some(it.next().ok_or("--only needs sinks, pipeline, crashkernel or vs-kdump")?.clone()),
            "--vs-kdump" => only = Some("vs-kdump".into()),
            "--mib" => mib_arg = Some(it.next().ok_or("--mib needs a value")?.clone()),
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).ok_or("--reps needs a number >= 1")?,
            _ => rest.push(a.clone()),
        }
    }
    if let Some(o) = &only {
        if !["sinks", "pipeline", "crashkernel", "vs-kdump"].contains(&o.as_str()) {
            return Err(format!("--only {o}: expected sinks, pipeline, crashkernel or vs-kdump"));
        }
    }
    if only.as_deref() == Some("vs-kdump") {
        let mibs: Vec<u64> = match &mib_arg {
            None => vec![1024, 4096],
            Some(v) => v
                .split(',')
                .map(|m| m.trim().parse().ok().filter(|&m: &u64| m >= 256))
                .collect::<Option<Vec<u64>>>()
                .ok_or("--mib needs guest sizes in MiB >= 256, comma-separated (e.g. 1024,4096)")?,
        };
        let (config, _) = e2e_config(&rest)?;
        let vs = qemu_tests::e2e::vskdump::VsKdumpConfig { reps, mibs, docs_dir: Some(workspace_root().join("docs")) };
        let report = qemu_tests::e2e::vskdump::run(&config, &vs).map_err(|e| format!("bench --vs-kdump: {e}"))?;
        println!("\n==== cargo xtask bench --vs-kdump ====\n{}", report.table());
        return Ok(());
    }
    let mib = match &mib_arg {
        None => 1024u64,
        Some(v) => v.parse().ok().filter(|&m| m >= 16).ok_or("--mib needs a number >= 16")?,
    };
    let part = |p: &str| only.as_deref().is_none_or(|o| o == p);
    let (config, _) = e2e_config(&rest)?;
    let mut out = String::new();
    if part("sinks") {
        let work_dir = workspace_root().join("target/qemu-tests");
        std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
        let suite = qemu_tests::SuiteConfig {
            capture_elf: config.bzimage.with_file_name("capture.elf"),
            arch: qemu_tests::Arch::X86_64,
            lifeboat_bin: config.lifeboat_host.clone(),
            work_dir,
            filter: None,
            verbose: false,
        };
        let rows = qemu_tests::sinks::bench(&suite, mib)?;
        out.push_str(&format!(
            "\nSinks: the same {mib} MiB of synthetic crashed memory (seed 0xbe4c: 50% zero, 15% random, 35% compressible pages), QEMU TCG, each dump checked byte for byte:\n\n"
        ));
        out.push_str(&qemu_tests::sinks::bench_table(&rows));
        println!("{out}");
    }
    if part("pipeline") {
        let table = pipeline_bench(&config)?;
        out.push_str(&table);
        println!("{table}");
    }
    if part("crashkernel") {
        let report = qemu_tests::e2e::bench::run(&config).map_err(|e| format!("bench failed: {e}"))?;
        out.push_str(&format!("\n{report}\n"));
    }
    println!("\n==== cargo xtask bench ====\n{out}");
    Ok(())
}

/// The host-side pipeline (filter + compress, no I/O) against `makedumpfile -c -d 31` on the
/// same ELF vmcore of a real crash: QEMU's dump-guest-memory of the e2e guest after it
/// crashed (kept by `cargo xtask e2e`, made here if missing).
fn pipeline_bench(config: &qemu_tests::e2e::E2eConfig) -> Result<String, String> {
    // The input: QEMU's ELF memory dump of the crashed file-1g guest, and lifeboat's dump of
    // the same crash (for its VMCOREINFO, which QEMU's ELF lacks without a vmcoreinfo device).
    let dir = config.work_dir.join("file-1g");
    let (elf, kdump) = (dir.join("qemu-memory.elf"), dir.join("vmcore"));
    if !elf.is_file() || !kdump.is_file() {
        println!("bench: running e2e file-1g to get an ELF vmcore of a real crash …");
        std::env::set_var(qemu_tests::e2e::KEEP_MEMORY_ENV, "1");
        let mut c = config.clone();
        c.filter = Some("file-1g".into());
        c.full = false;
        qemu_tests::e2e::run(&c).map_err(|e| format!("bench: e2e file-1g: {e}"))?;
    }
    run(cargo().args(["build", "--quiet", "--release", "-p", "lifeboat-capture", "--example", "pipeline"]))?;
    let pipeline = workspace_root().join("target/release/examples/pipeline");
    let tmp = workspace_root().join("target/bench-pipeline");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // QEMU's layout (section headers first, no VMCOREINFO) as /proc/vmcore has it, so that
    // makedumpfile 1.7.2 reads it; the memory bytes are unchanged.
    let qemu_elf = elf;
    let elf = tmp.join("vmcore.elf");
    let ours = std::fs::read(&kdump).map_err(|e| format!("{}: {e}", kdump.display()))?;
    let info = qemu_tests::e2e::dump_layout::DumpLayout::read(&ours)?
        .vmcoreinfo
        .ok_or_else(|| format!("{} has no VMCOREINFO", kdump.display()))?;
    qemu_tests::e2e::exclusion::normalize(&qemu_elf, info.as_bytes(), &elf)?;
    let ram = std::fs::metadata(&elf).map_err(|e| format!("{}: {e}", elf.display()))?.len();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let (mut our_bytes, mut their_bytes) = (0u64, 0u64);
    for round in 1..=3 {
        let t = std::time::Instant::now();
        let o = std::process::Command::new(&pipeline).arg(&elf).output().map_err(|e| format!("pipeline: {e}"))?;
        let secs = t.elapsed().as_secs_f64();
        let line = String::from_utf8_lossy(&o.stdout).to_string();
        if !o.status.success() {
            return Err(format!("pipeline failed: {}{}", line, String::from_utf8_lossy(&o.stderr)));
        }
        our_bytes = line.split("dump ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
        ours.push(secs);
        let out = tmp.join("makedumpfile.out");
        let _ = std::fs::remove_file(&out);
        let t = std::time::Instant::now();
        let m = std::process::Command::new("makedumpfile")
            .args(["-c", "-d", "31"])
            .arg(&elf)
            .arg(&out)
            .output()
            .map_err(|e| format!("makedumpfile: {e}"))?;
        let secs = t.elapsed().as_secs_f64();
        if !m.status.success() {
            return Err(format!(
                "makedumpfile -c -d 31 failed: {}{}",
                String::from_utf8_lossy(&m.stdout),
                String::from_utf8_lossy(&m.stderr)
            ));
        }
        their_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        theirs.push(secs);
        println!("bench: pipeline round {round}: lifeboat {:.2} s, makedumpfile {secs:.2} s", ours[ours.len() - 1]);
    }
    let _ = std::fs::remove_file(tmp.join("makedumpfile.out"));
    let _ = std::fs::remove_file(&elf);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (o, t) = (median(&mut ours), median(&mut theirs));
    Ok(format!(
        "\nHost pipeline (dump level 31: struct page filter and zero pages, zlib per page, kdump-compressed layout, no device I/O) on the same ELF vmcore ({}, {:.0} MiB: QEMU's dump-guest-memory of the crashed e2e guest, laid out like /proc/vmcore with its VMCOREINFO), median of 3 on this host:\n\n\
         | tool | seconds | MB/s of vmcore | dump bytes |\n|---|---|---|---|\n\
         | lifeboat pipeline (capture/examples/pipeline.rs) | {o:.2} | {:.0} | {our_bytes} |\n\
         | makedumpfile -c -d 31 (Debian) | {t:.2} | {:.0} | {their_bytes} |\n\
         | ratio lifeboat / makedumpfile | {:.2} | | {:.2} |\n",
        elf.display(),
        ram as f64 / (1 << 20) as f64,
        ram as f64 / 1e6 / o,
        ram as f64 / 1e6 / t,
        o / t,
        our_bytes as f64 / their_bytes.max(1) as f64
    ))
}

fn test() -> Result<(), String> {
    setup::ensure_all()?;
    run(cargo().args(["test", "--workspace"]))?;
    qemu(&[])?;
    qemu(&["--arch".into(), "aarch64".into()])?;
    // Every real-crash scenario (~15 minutes under TCG): the loader checks, the three load
    // paths over serial (1 and 4 GiB), and the disk and network sinks; then an arm64 Debian
    // guest captured over serial, to a disk and to a dump server (~6 minutes).
    e2e(&["--full".into()])?;
    e2e(&["--full".into(), "--arch".into(), "aarch64".into()])
}

/// The real thing: a Debian guest panics, lifeboat captures it over serial, and the stock tools
/// read the dump.
fn demo() -> Result<(), String> {
    setup::ensure_all()?;
    let (config, _) = e2e_config(&["--filter".into(), "file-1g".into()])?;
    let dir = config.work_dir.join("file-1g");
    let result = qemu_tests::e2e::run(&config);
    // Print the lines of `file` from the first one containing `from` (or the start), up to
    // the first one after it for which `stop` holds, at most `max`.
    let show = |title: &str, file: &str, from: &str, stop: &dyn Fn(&str) -> bool, max: usize| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.iter().position(|l| l.contains(from)).unwrap_or(0);
        println!("\n==== {title} ({}) ====", dir.join(file).display());
        // Progress lines (every 2 s) are summarised: the first and the last are shown.
        let progress = |l: &str| l.contains("% ") && l.ends_with("so far");
        let mut skipped = 0;
        for (i, l) in lines[start..].iter().enumerate() {
            if i >= max || (i > 0 && stop(l)) {
                break;
            }
            let next_is_progress = lines.get(start + i + 1).is_some_and(|n| progress(n));
            let prev_is_progress = i > 0 && progress(lines[start + i - 1]);
            if progress(l) && prev_is_progress && next_is_progress {
                skipped += 1;
                continue;
            }
            if skipped > 0 {
                println!("    ({skipped} more progress lines)");
                skipped = 0;
            }
            println!("{l}");
        }
    };
    show("capture kernel console", "console.txt", "lifeboat: lifeboat", &|l| !l.starts_with("lifeboat: "), 200);
    show("panic log from the dump (makedumpfile --dump-dmesg)", "dmesg.txt", "sysrq: Trigger a crash", &|_| false, 24);
    show("backtrace from the dump (crash: bt)", "crash.stdout", "PID:", &|l| l.trim_start().starts_with('['), 40);
    result.map(|_| ()).map_err(|e| format!("demo failed: {e}"))
}
