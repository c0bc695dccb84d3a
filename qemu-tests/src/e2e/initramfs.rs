//! The guest's initramfs: busybox, kexec-tools, the static `lifeboat` tool, the capture kernel
//! and an `/init` that arms kdump the way the kernel command line says (`e2e.load=`) and
//! crashes the guest with sysrq.

use std::path::Path;

use super::cpio::CpioWriter;
use super::inputs::Inputs;

/// Marker lines `/init` prints on the serial console.
pub const MARK_LOAD_FAILED: &str = "e2e: load failed";
pub const MARK_CRASHING: &str = "e2e: loaded, crashing";
pub const MARK_IOMEM: &str = "e2e: iomem: ";

/// The `/init` script. It reads `e2e.load=file|load|stock` from /proc/cmdline.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() {
    echo "e2e: load failed: $*"
    poweroff -f
    sleep 10
    exit 1
}
mode=$(sed -n 's/.*e2e\.load=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "e2e: scenario e2e.load=$mode, kernel $(uname -r)"
grep -E 'System RAM|Crash kernel' /proc/iomem | while read -r line; do echo "e2e: iomem: $line"; done
# Loader checks (e2e.load=loader): run lifeboat's subcommands, print each one's output and
# exit status between markers, and power off; the harness checks the messages.
run() {
    echo "e2e: run: $*"
    out=$("$@" 2>&1)
    rc=$?
    echo "$out" | while IFS= read -r l; do echo "e2e: out: $l"; done
    echo "e2e: exit: $rc"
}
if [ "$mode" = loader ]; then
    L=/lifeboat/lifeboat
    run $L estimate --payload /lifeboat/bzImage
    run $L status
    run $L load --payload /bin/busybox lifeboat.action=halt
    run $L load --payload /lifeboat/bzImage lifeboat.acton=halt
    run $L load --payload /lifeboat/bzImage lifeboat.action=halt
    run $L status
    run $L unload
    run $L status
    run $L load --payload /lifeboat/bzImage --syscall kexec_load lifeboat.action=halt
    run $L unload
    echo "e2e: loader checks done"
    poweroff -f
    sleep 10
fi
case "$mode" in
file)
    /lifeboat/lifeboat load --payload /lifeboat/bzImage --syscall kexec_file_load lifeboat.action=halt || fail "lifeboat load (kexec_file_load) exit $?"
    ;;
load)
    /lifeboat/lifeboat load --payload /lifeboat/bzImage --syscall kexec_load lifeboat.action=halt || fail "lifeboat load (kexec_load) exit $?"
    ;;
stock)
    /sbin/kexec -p /lifeboat/bzImage --append="lifeboat.action=halt" || fail "kexec -p exit $?"
    ;;
*)
    fail "unknown e2e.load=$mode"
    ;;
esac
loaded=$(cat /sys/kernel/kexec_crash_loaded)
[ "$loaded" = 1 ] || fail "/sys/kernel/kexec_crash_loaded is $loaded after loading"
if [ "$mode" != stock ]; then
    /lifeboat/lifeboat status
    echo "e2e: lifeboat status exit $?"
fi
echo "e2e: loaded, crashing"
echo c > /proc/sysrq-trigger
sleep 5
echo "e2e: still running 5 s after the sysrq crash"
poweroff -f
"#;

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// Add `path`'s parent directories (not yet added) to the archive.
fn parents(w: &mut CpioWriter, path: &str) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for i in 1..parts.len() {
        w.dir(&parts[..i].join("/"));
    }
}

/// Build the initramfs (an uncompressed newc archive).
pub fn build(
    inputs: &Inputs,
    bzimage: &Path,
    lifeboat_guest: Option<&Path>,
) -> Result<Vec<u8>, String> {
    let mut w = CpioWriter::new();
    for d in ["bin", "sbin", "dev", "proc", "sys", "tmp", "lifeboat"] {
        w.dir(d);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("init", 0o755, INIT_SCRIPT.as_bytes());
    w.file("bin/busybox", 0o755, &read(&inputs.busybox)?);
    w.file("sbin/kexec", 0o755, &read(&inputs.kexec)?);
    for (guest_path, host) in &inputs.kexec_libs {
        parents(&mut w, guest_path);
        w.file(guest_path, 0o755, &read(host)?);
    }
    w.file("lifeboat/bzImage", 0o644, &read(bzimage)?);
    if let Some(l) = lifeboat_guest {
        let bytes = read(l)?;
        if let Some(interp) = super::inputs::elf_interpreter(&bytes) {
            return Err(format!(
                "{} is dynamically linked (interpreter {interp}); the guest needs the static musl build",
                l.display()
            ));
        }
        w.file("lifeboat/lifeboat", 0o755, &bytes);
    }
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::cpio::read_newc;

    #[test]
    fn archive_has_init_busybox_kexec_and_payload() {
        let dir = std::env::temp_dir().join(format!("e2e-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = |n: &str, c: &[u8]| {
            let p = dir.join(n);
            std::fs::write(&p, c).unwrap();
            p
        };
        let inputs = Inputs {
            image_package: "linux-image-x".into(),
            image_version: "1".into(),
            kernel_release: "x".into(),
            vmlinuz: f("vmlinuz", b"k"),
            vmlinux: f("vmlinux", b"k"),
            busybox: f("busybox", b"bb"),
            kexec: f("kexec", b"kx"),
            kexec_libs: vec![
                ("/lib/x86_64-linux-gnu/libc.so.6".into(), f("libc", b"c")),
                ("/lib64/ld-linux-x86-64.so.2".into(), f("ld", b"l")),
            ],
        };
        let bz = f("bzImage", b"bz");
        let lb = f("lifeboat", b"lb");
        let a = build(&inputs, &bz, Some(&lb)).unwrap();
        let e = read_newc(&a).unwrap();
        let get = |n: &str| {
            e.iter()
                .find(|x| x.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert!(get("init").data.starts_with(b"#!/bin/busybox sh\n"));
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("bin/busybox").data, b"bb");
        assert_eq!(get("sbin/kexec").data, b"kx");
        assert_eq!(get("lib/x86_64-linux-gnu/libc.so.6").data, b"c");
        assert_eq!(get("lib64/ld-linux-x86-64.so.2").data, b"l");
        assert_eq!(get("lib/x86_64-linux-gnu").mode, 0o040755);
        assert_eq!(get("lifeboat/bzImage").data, b"bz");
        assert_eq!(get("lifeboat/lifeboat").data, b"lb");
        assert_eq!(get("dev/console").rdev, (5, 1));
        // directories come before their contents
        let pos = |n: &str| e.iter().position(|x| x.name == n).unwrap();
        assert!(pos("lib") < pos("lib/x86_64-linux-gnu"));
        assert!(pos("lib/x86_64-linux-gnu") < pos("lib/x86_64-linux-gnu/libc.so.6"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_script_arms_each_mode_and_crashes() {
        for needle in [
            "--syscall kexec_file_load lifeboat.action=halt",
            "--syscall kexec_load lifeboat.action=halt",
            "/sbin/kexec -p /lifeboat/bzImage --append=\"lifeboat.action=halt\"",
            "/lifeboat/lifeboat status",
            MARK_CRASHING,
            "echo \"e2e: load failed: $*\"",
            "echo c > /proc/sysrq-trigger",
        ] {
            assert!(INIT_SCRIPT.contains(needle), "{needle}");
        }
    }
}
