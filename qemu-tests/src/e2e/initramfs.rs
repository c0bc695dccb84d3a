//! The guest's initramfs: busybox, kexec-tools, the static `lifeboat` tool, the capture kernel,
//! Debian's virtio modules and an `/init` that arms kdump the way the kernel command line says
//! (`e2e.load=`, `e2e.sink=`) and crashes the guest with sysrq. The same `/init` runs on
//! x86_64 and arm64; only the files differ ([`Inputs::arch`]: the capture kernel is
//! `/lifeboat/bzImage` or `/lifeboat/Image`, busybox and kexec are that architecture's).

use std::path::Path;

use super::cpio::CpioWriter;
use super::inputs::Inputs;

/// Marker lines `/init` prints on the serial console.
pub const MARK_LOAD_FAILED: &str = "e2e: load failed";
pub const MARK_CRASHING: &str = "e2e: loaded, crashing";
pub const MARK_IOMEM: &str = "e2e: iomem: ";
/// `/init`'s first line: `e2e: /init at <seconds since boot> s`.
pub const MARK_INIT: &str = "e2e: /init at ";
/// Where the modules go (`<name>.ko`) and the file listing their names in `insmod` order.
pub const MODULE_DIR: &str = "modules";
pub const MODULE_ORDER: &str = "modules/order";

/// The `/init` script. It reads `e2e.load=file|load|stock` from /proc/cmdline, and optionally
/// `e2e.sink=blk:/dev/vda` or `e2e.sink=net:10.0.2.2:PORT`: then it loads the virtio modules
/// (`/modules/order`), waits for the disk or brings up eth0 (10.0.2.15/24, default route via
/// 10.0.2.2, QEMU user networking), and passes `lifeboat.sink=<value>` to `lifeboat load`.
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "e2e: /init at $(cut -d' ' -f1 /proc/uptime) s"
# The capture kernel: bzImage on x86_64, Image on arm64.
P=/lifeboat/bzImage
[ -e /lifeboat/Image ] && P=/lifeboat/Image
fail() {
    echo "e2e: load failed: $*"
    poweroff -f
    sleep 10
    exit 1
}
mode=$(sed -n 's/.*e2e\.load=\([a-z]*\).*/\1/p' /proc/cmdline)
sink=$(sed -n 's/.*e2e\.sink=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "e2e: scenario e2e.load=$mode${sink:+ e2e.sink=$sink}, kernel $(uname -r)"
hostname lifeboat-e2e
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
    run $L estimate --payload $P
    run $L status
    run $L load --payload /bin/busybox lifeboat.action=halt
    run $L load --payload $P lifeboat.acton=halt
    run $L load --payload $P lifeboat.action=halt
    run $L status
    run $L unload
    run $L status
    run $L load --payload $P --syscall kexec_load lifeboat.action=halt
    run $L unload
    echo "e2e: loader checks done"
    poweroff -f
    sleep 10
fi
# Wait up to 10 s for a path to exist.
wait_for() {
    i=0
    while [ ! -e "$1" ]; do
        i=$((i + 1))
        [ $i -le 50 ] || return 1
        sleep 0.2
    done
}
# e2e.lbopt=<lifeboat option> (repeatable): more options for `lifeboat load` (the bench's
# lifeboat.level=31 lifeboat.action=poweroff).
lbopts=
for w in $(cat /proc/cmdline); do
    case "$w" in
    e2e.lbopt=*) lbopts="$lbopts ${w#e2e.lbopt=}" ;;
    esac
done
sinkopt=
if [ -n "$sink" ]; then
    for m in $(cat /modules/order); do
        insmod /modules/$m.ko || fail "insmod $m.ko exit $?"
    done
    echo "e2e: modules loaded: $(cat /modules/order | tr '\n' ' ')"
    case "$sink" in
    blk:/dev/*)
        dev=${sink#blk:}
        wait_for "$dev" || fail "no $dev 10 s after loading virtio_blk"
        echo "e2e: disk $dev: $(cat /sys/block/${dev#/dev/}/size) sectors, serial $(cat /sys/block/${dev#/dev/}/serial 2>/dev/null)"
        ;;
    net:*)
        wait_for /sys/class/net/eth0 || fail "no eth0 10 s after loading virtio_net"
        ip link set lo up
        ip link set eth0 up || fail "ip link set eth0 up exit $?"
        ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr add exit $?"
        ip route add default via 10.0.2.2 || fail "ip route add exit $?"
        echo "e2e: eth0: $(ip -4 addr show dev eth0 | grep inet), $(ip route | grep default)"
        ;;
    *)
        fail "unknown e2e.sink=$sink"
        ;;
    esac
    sinkopt="lifeboat.sink=$sink"
fi
case "$mode" in
file)
    /lifeboat/lifeboat load --payload $P --syscall kexec_file_load lifeboat.action=halt $sinkopt $lbopts || fail "lifeboat load (kexec_file_load) exit $?"
    ;;
load)
    /lifeboat/lifeboat load --payload $P --syscall kexec_load lifeboat.action=halt $sinkopt $lbopts || fail "lifeboat load (kexec_load) exit $?"
    ;;
stock)
    /sbin/kexec -p $P --append="lifeboat.action=halt" || fail "kexec -p exit $?"
    ;;
none)
    # Nothing armed: the crashed kernel stays in its panic (panic=0), for QEMU's memory dump
    # of a crash that no capture kernel touched.
    echo "e2e: not arming kdump (e2e.load=none)"
    ;;
kdump)
    # Linux kdump as Debian's kdump-tools arms it (kdump-config load): the same kernel as the
    # capture kernel, its own initramfs, and the running kernel's command line without
    # crashkernel= plus KDUMP_CMDLINE_APPEND (kdump-tools 1.8.1's default, less systemd.unit=: this
    # initramfs has no systemd).
    [ -f /kdump/vmlinuz ] || fail "no /kdump/vmlinuz in this initramfs (only the vs-kdump bench builds one)"
    kcmd="$(sed -E 's/(^| )(crashkernel|hugepages|hugepagesz)=[^ ]*//g' /proc/cmdline) reset_devices nr_cpus=1 irqpoll usbcore.nousb"
    echo "e2e: kexec -p /kdump/vmlinuz --initrd=/kdump/initrd.cpio --command-line=\"$kcmd\""
    /sbin/kexec -p /kdump/vmlinuz --initrd=/kdump/initrd.cpio --command-line="$kcmd" || fail "kexec -p (Linux kdump) exit $?"
    ;;
*)
    fail "unknown e2e.load=$mode"
    ;;
esac
loaded=$(cat /sys/kernel/kexec_crash_loaded)
[ "$mode" = none ] || [ "$loaded" = 1 ] || fail "/sys/kernel/kexec_crash_loaded is $loaded after loading"
# The VMCOREINFO note's physical address and size, for checks on QEMU's memory dump alone.
echo "e2e: vmcoreinfo: $(cat /sys/kernel/vmcoreinfo)"
if [ "$mode" != stock ] && [ "$mode" != kdump ] && [ "$mode" != none ]; then
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
    Ok(writer(inputs, Some(bzimage), lifeboat_guest)?.finish())
}

/// An initramfs without lifeboat (no capture kernel, no `lifeboat` tool): for
/// `e2e.load=none` (a crash nothing captures) and `e2e.load=stock` with Debian's kexec.
pub fn build_without_lifeboat(inputs: &Inputs) -> Result<Vec<u8>, String> {
    Ok(writer(inputs, None, None)?.finish())
}

/// The first kernel's initramfs of `cargo xtask bench --vs-kdump`: [`build`]'s, plus Linux
/// kdump's capture kernel and initramfs in `/kdump/` for `e2e.load=kdump`.
pub fn build_vs_kdump(
    inputs: &Inputs,
    bzimage: &Path,
    lifeboat_guest: Option<&Path>,
    kdump_initrd: &[u8],
) -> Result<Vec<u8>, String> {
    let mut w = writer(inputs, Some(bzimage), lifeboat_guest)?;
    w.dir("kdump");
    w.file("kdump/vmlinuz", 0o644, &read(&inputs.vmlinuz)?);
    w.file("kdump/initrd.cpio", 0o644, kdump_initrd);
    Ok(w.finish())
}

fn writer(
    inputs: &Inputs,
    bzimage: Option<&Path>,
    lifeboat_guest: Option<&Path>,
) -> Result<CpioWriter, String> {
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
    if let Some(bzimage) = bzimage {
        w.file(
            &format!("lifeboat/{}", inputs.arch.payload_name()),
            0o644,
            &read(bzimage)?,
        );
    }
    w.dir(MODULE_DIR);
    let mut order = String::new();
    for m in &inputs.modules {
        w.file(
            &format!("{MODULE_DIR}/{}.ko", m.name),
            0o644,
            &read(&m.path)?,
        );
        order.push_str(&m.name);
        order.push('\n');
    }
    w.file(MODULE_ORDER, 0o644, order.as_bytes());
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
    Ok(w)
}

/// Lines Linux kdump's capture initramfs prints.
pub const MARK_KDUMP_INIT: &str = "kdump: capture initramfs";
pub const MARK_KDUMP_DONE: &str = "kdump: dump complete";
pub const MARK_KDUMP_FAILED: &str = "kdump: failed";
/// Where the capture initramfs writes the dump, on the ext4 file system of the only
/// virtio-blk disk.
pub const KDUMP_FILE: &str = "vmcore";

/// Linux kdump's capture initramfs `/init`: what kdump-tools' dump service does, reduced to
/// the dump itself: load the virtio modules, mount the dump disk (`/dev/vda`, ext4 made on the
/// host), `makedumpfile -c -d 31 /proc/vmcore` (kdump-tools' default MAKEDUMP_ARGS) to a file
/// on it, `sync`, print [`MARK_KDUMP_DONE`], power off.
pub const KDUMP_INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() {
    echo "kdump: failed: $*"
    poweroff -f
    sleep 10
    exit 1
}
echo "kdump: capture initramfs /init, kernel $(uname -r), $(grep MemTotal /proc/meminfo | tr -s ' ')"
[ -e /proc/vmcore ] || fail "no /proc/vmcore"
for m in $(cat /modules/order); do
    insmod /modules/$m.ko || fail "insmod $m.ko exit $?"
done
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    [ $i -le 100 ] || fail "no /dev/vda 10 s after loading virtio_blk"
    sleep 0.1
done
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda exit $?"
makedumpfile -c -d 31 /proc/vmcore /mnt/vmcore
rc=$?
sync
[ $rc = 0 ] || fail "makedumpfile exit $rc"
echo "kdump: dump complete: makedumpfile exit 0, synced: $(ls -l /mnt/vmcore | tr -s ' ')"
umount /mnt
poweroff -f
sleep 10
"#;

/// Linux kdump's capture initramfs (uncompressed newc): busybox, makedumpfile with its
/// interpreter and libraries from Debian's packages, the virtio modules the disk needs, and
/// [`KDUMP_INIT_SCRIPT`].
pub fn build_kdump_initrd(
    inputs: &Inputs,
    kdump: &super::inputs::KdumpInputs,
) -> Result<Vec<u8>, String> {
    let mut w = CpioWriter::new();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "usr", "usr/sbin", "var", "var/tmp",
    ] {
        w.dir(d);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.file("init", 0o755, KDUMP_INIT_SCRIPT.as_bytes());
    w.file("bin/busybox", 0o755, &read(&inputs.busybox)?);
    w.file("usr/sbin/makedumpfile", 0o755, &read(&kdump.makedumpfile)?);
    for (guest_path, host) in &kdump.libs {
        parents(&mut w, guest_path);
        w.file(guest_path, 0o755, &read(host)?);
    }
    w.dir(MODULE_DIR);
    let mut order = String::new();
    // The disk's modules only (virtio_net and its failover helpers are not needed).
    for m in inputs
        .modules
        .iter()
        .filter(|m| !m.name.contains("net") && !m.name.contains("failover"))
    {
        w.file(
            &format!("{MODULE_DIR}/{}.ko", m.name),
            0o644,
            &read(&m.path)?,
        );
        order.push_str(&m.name);
        order.push('\n');
    }
    w.file(MODULE_ORDER, 0o644, order.as_bytes());
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::cpio::read_newc;
    use crate::e2e::inputs::KernelModule;

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
            arch: crate::e2e::arch::Arch::X86_64,
            tools: crate::e2e::arch::HostTools::Native,
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
            modules: vec![
                KernelModule {
                    name: "virtio_ring".into(),
                    path: f("virtio_ring.ko", b"vr"),
                },
                KernelModule {
                    name: "virtio_blk".into(),
                    path: f("virtio_blk.ko", b"vb"),
                },
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
        assert_eq!(get("modules/virtio_ring.ko").data, b"vr");
        assert_eq!(get("modules/virtio_blk.ko").data, b"vb");
        assert_eq!(get("modules/order").data, b"virtio_ring\nvirtio_blk\n");
        // directories come before their contents
        let pos = |n: &str| e.iter().position(|x| x.name == n).unwrap();
        assert!(pos("lib") < pos("lib/x86_64-linux-gnu"));
        assert!(pos("lib/x86_64-linux-gnu") < pos("lib/x86_64-linux-gnu/libc.so.6"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arm64_archive_has_image_and_arm64_libraries() {
        let dir = std::env::temp_dir().join(format!("e2e-initramfs-arm64-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = |n: &str, c: &[u8]| {
            let p = dir.join(n);
            std::fs::write(&p, c).unwrap();
            p
        };
        let inputs = Inputs {
            arch: crate::e2e::arch::Arch::Aarch64,
            tools: crate::e2e::arch::HostTools::Native,
            image_package: "linux-image-6.1.0-56-cloud-arm64".into(),
            image_version: "6.1.192-2".into(),
            kernel_release: "6.1.0-56-cloud-arm64".into(),
            vmlinuz: f("vmlinuz", b"k"),
            vmlinux: f("vmlinux", b"k"),
            busybox: f("busybox", b"bb64"),
            kexec: f("kexec", b"kx64"),
            kexec_libs: vec![
                ("/lib/ld-linux-aarch64.so.1".into(), f("ld", b"l")),
                ("/lib/aarch64-linux-gnu/libc.so.6".into(), f("libc", b"c")),
            ],
            modules: vec![KernelModule {
                name: "virtio_pci".into(),
                path: f("virtio_pci.ko", b"vp"),
            }],
        };
        let img = f("Image", b"ARMd");
        let lb = f("lifeboat", b"lb");
        let e = read_newc(&build(&inputs, &img, Some(&lb)).unwrap()).unwrap();
        let get = |n: &str| e.iter().find(|x| x.name == n).map(|x| x.data.clone());
        assert_eq!(get("lifeboat/Image").as_deref(), Some(&b"ARMd"[..]));
        assert_eq!(get("lifeboat/bzImage"), None);
        assert_eq!(get("lifeboat/lifeboat").as_deref(), Some(&b"lb"[..]));
        assert_eq!(get("bin/busybox").as_deref(), Some(&b"bb64"[..]));
        assert_eq!(get("sbin/kexec").as_deref(), Some(&b"kx64"[..]));
        assert_eq!(get("lib/ld-linux-aarch64.so.1").as_deref(), Some(&b"l"[..]));
        assert_eq!(get("lib/aarch64-linux-gnu/libc.so.6").as_deref(), Some(&b"c"[..]));
        assert_eq!(get("modules/order").as_deref(), Some(&b"virtio_pci\n"[..]));
        // Without lifeboat: no capture kernel and no tool, the rest the same.
        let e = read_newc(&build_without_lifeboat(&inputs).unwrap()).unwrap();
        assert!(e.iter().all(|x| !x.name.starts_with("lifeboat/")), "{:?}", e.iter().map(|x| &x.name).collect::<Vec<_>>());
        assert!(e.iter().any(|x| x.name == "init"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_script_arms_each_mode_and_crashes() {
        for needle in [
            "--payload $P --syscall kexec_file_load lifeboat.action=halt",
            "--payload $P --syscall kexec_load lifeboat.action=halt",
            "/sbin/kexec -p $P --append=\"lifeboat.action=halt\"",
            "P=/lifeboat/bzImage\n[ -e /lifeboat/Image ] && P=/lifeboat/Image\n",
            "/lifeboat/lifeboat status",
            MARK_CRASHING,
            "echo \"e2e: load failed: $*\"",
            "echo c > /proc/sysrq-trigger",
            "kexec_file_load lifeboat.action=halt $sinkopt",
            "insmod /modules/$m.ko",
            "ip route add default via 10.0.2.2",
            "none)\n",
            "echo \"e2e: vmcoreinfo: $(cat /sys/kernel/vmcoreinfo)\"",
            "echo \"e2e: /init at $(cut -d' ' -f1 /proc/uptime) s\"",
        ] {
            assert!(INIT_SCRIPT.contains(needle), "{needle}");
        }
    }
}
