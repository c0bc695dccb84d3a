//! Installing what lifeboat's tests need on a fresh Debian machine, only when missing.

use crate::run;
use std::process::Command;

/// The capture kernel's target, and the static (musl) target of the `lifeboat` tool that runs
/// in bare initramfs images.
const RUST_TARGETS: &[&str] =
    &["x86_64-unknown-none", "x86_64-unknown-linux-musl", "aarch64-unknown-none", "aarch64-unknown-linux-musl"];
/// (command that must exist, Debian package providing it)
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("makedumpfile", "makedumpfile"),
    ("crash", "crash"),
    ("kexec", "kexec-tools"),
    ("busybox", "busybox-static"),
    ("dpkg-deb", "dpkg"),
    // `bench --vs-kdump`: the ext4 dump disk of the Linux kdump side (mke2fs) and reading it back (debugfs).
    ("mke2fs", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
];

fn have(cmd: &str) -> bool {
    // /sbin and /usr/sbin are not on every user's PATH (kexec lives there).
    let script = format!("PATH=$PATH:/sbin:/usr/sbin command -v {cmd} >/dev/null 2>&1");
    Command::new("sh").args(["-c", &script]).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn apt(args: &[&str]) -> Result<(), String> {
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    run(&mut cmd)
}

pub fn ensure_all() -> Result<(), String> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let installed = installed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for t in RUST_TARGETS {
        if !installed.lines().any(|l| l.trim() == *t) {
            eprintln!("xtask: adding Rust target {t}");
            run(Command::new("rustup").args(["target", "add", t]))?;
        }
    }
    let missing: Vec<&str> = PACKAGES.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        apt(&["update", "-qq"])?;
        // Plain installs of qemu-system-* pull a conflicting dependency set on Debian 12:
        // --no-install-recommends keeps it to what a headless TCG guest needs.
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing.iter().copied());
        apt(&args)?;
    }
    check_qemu_tools()
}

pub fn check_qemu_tools() -> Result<(), String> {
    for (c, p) in PACKAGES {
        if !have(c) {
            return Err(format!("`{c}` is missing: run `cargo xtask setup` (installs Debian package {p})"));
        }
    }
    Ok(())
}

/// Add the bare-metal Rust target if missing (cheap check; used before every kernel build).
pub fn ensure_targets_quiet() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let installed = installed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for t in RUST_TARGETS {
        if !installed.lines().any(|l| l.trim() == *t) {
            let _ = run(Command::new("rustup").args(["target", "add", t]));
        }
    }
}
