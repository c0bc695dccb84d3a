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

fn qemu(args: &[String]) -> Result<(), String> {
    let mut filter = None;
    let mut verbose = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => filter = Some(it.next().ok_or("--filter needs a value")?.clone()),
            "--verbose" | "-v" => verbose = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
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

fn e2e(args: &[String]) -> Result<(), String> {
    let mut filter = None;
    let mut verbose = false;
    let mut full = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--filter" => filter = Some(it.next().ok_or("--filter needs a value")?.clone()),
            "--verbose" | "-v" => verbose = true,
            "--full" => full = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
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
    qemu_tests::e2e::run(&config).map(|r| println!("{r}")).map_err(|e| format!("e2e failed: {e}"))
}

fn test() -> Result<(), String> {
    setup::ensure_all()?;
    run(cargo().args(["test", "--workspace"]))?;
    qemu(&[])?;
    e2e(&[])
}

fn demo() -> Result<(), String> {
    setup::ensure_all()?;
    qemu(&["--filter".into(), "serial-kform".into(), "--verbose".into()])
}
