//! `cargo xtask`: build lifeboat's images and run its QEMU tests.
//!
//! - `cargo xtask setup`  install what the tests need (Debian packages, Rust targets) when missing
//! - `cargo xtask build`  build `target/lifeboat/x86_64/{bzImage,capture.elf}` and print sizes
//! - `cargo xtask qemu`   boot the capture kernel in QEMU on synthetic crashed memory
//! - `cargo xtask test`   setup + `cargo test` + `cargo xtask qemu` (the README's test command)
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
         \n  build                 build target/lifeboat/x86_64/{{bzImage,capture.elf}}\
         \n  qemu [--filter NAME] [--verbose]\
         \n                        run the capture kernel in QEMU on synthetic crashed memory\
         \n  test                  setup, cargo test, cargo xtask qemu\
         \n  demo                  setup, build, capture a synthetic crash and show it"
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
        "build" => image::build_x86_64().map(|i| println!("wrote {} and {}", i.bzimage.display(), i.capture_elf.display())),
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
}

fn parse_opts(args: &[String], allow_full: bool) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => o.filter = Some(it.next().ok_or("--filter needs a value")?.clone()),
            "--verbose" | "-v" => o.verbose = true,
            "--full" if allow_full => o.full = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn qemu(args: &[String]) -> Result<(), String> {
    let Opts { filter, verbose, .. } = parse_opts(args, false)?;
    setup::check_qemu_tools()?;
    let images = image::build_x86_64()?;
    let lifeboat_bin = build_loader()?;
    let work_dir = workspace_root().join("target/qemu-tests");
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let config = qemu_tests::SuiteConfig {
        capture_elf: images.capture_elf,
        lifeboat_bin,
        work_dir,
        filter,
        verbose,
    };
    qemu_tests::run_suite(&config).map(|_| ()).map_err(|e| format!("QEMU tests failed: {e}"))
}

fn e2e_config(args: &[String]) -> Result<qemu_tests::e2e::E2eConfig, String> {
    let Opts { filter, verbose, full } = parse_opts(args, true)?;
    setup::check_qemu_tools()?;
    let images = image::build_x86_64()?;
    let lifeboat_host = build_loader()?;
    let root = workspace_root();
    let config = qemu_tests::e2e::E2eConfig {
        bzimage: images.bzimage,
        lifeboat_guest: images.lifeboat_static,
        lifeboat_host,
        cache_dir: root.join("target/e2e-cache"),
        work_dir: root.join("target/e2e"),
        full,
        filter,
        verbose,
    };
    Ok(config)
}

fn e2e(args: &[String]) -> Result<(), String> {
    let config = e2e_config(args)?;
    qemu_tests::e2e::run(&config).map(|_| ()).map_err(|e| format!("e2e failed: {e}"))
}

fn bench(args: &[String]) -> Result<(), String> {
    setup::ensure_all()?;
    let config = e2e_config(args)?;
    qemu_tests::e2e::bench::run(&config).map(|_| ()).map_err(|e| format!("bench failed: {e}"))
}

fn test() -> Result<(), String> {
    setup::ensure_all()?;
    run(cargo().args(["test", "--workspace"]))?;
    qemu(&[])?;
    // Every real-crash scenario (~12 minutes under TCG): the three load paths, 1 and 4 GiB.
    e2e(&["--full".into()])
}

/// The real thing: a Debian guest panics, lifeboat captures it over serial, and the stock tools
/// read the dump.
fn demo() -> Result<(), String> {
    setup::ensure_all()?;
    let config = e2e_config(&["--filter".into(), "file-1g".into()])?;
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
