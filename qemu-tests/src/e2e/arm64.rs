//! The arm64 guest's inputs, all from Debian's archive (nothing from the host but `dpkg-deb`,
//! `tar`, `apt-get` and `qemu-system-aarch64`):
//!
//! - Debian's arm64 cloud kernel: `linux-image-cloud-arm64` (the meta package), the versioned
//!   image package it depends on (`/boot/vmlinuz-<release>` is an uncompressed Image) and its
//!   `-dbg` twin (`vmlinux` for crash), and the virtio modules of the sink scenarios;
//! - `busybox-static`, `kexec-tools`, `makedumpfile` and `crash` for arm64 with the library
//!   packages they depend on, extracted into one sysroot, `<cache>/arm64/arm64-root/`: the
//!   guest's busybox and kexec come from there, and the host runs makedumpfile and crash from
//!   there under `qemu-aarch64-static -L <sysroot>`;
//! - `qemu-aarch64-static` from the amd64 package `qemu-user-static`, extracted (not
//!   installed).
//!
//! The arm64 packages come through [`Apt::foreign`]: a private apt index in
//! `<cache>/arm64/apt/`, so the host needs no `dpkg --add-architecture arm64`.

use std::path::{Path, PathBuf};

use super::arch::{Arch, HostTools};
use super::inputs::{
    elf_interpreter, extract_member, kernel_files, package_root, require_tool, Apt, Inputs,
};

/// The arm64 packages extracted into the sysroot (their `lib*` dependencies come along).
pub const SYSROOT_PACKAGES: &[&str] = &["busybox-static", "kexec-tools", "makedumpfile", "crash"];
/// The host (amd64) package with the user-mode emulator.
pub const QEMU_USER_PACKAGE: &str = "qemu-user-static";
/// The emulator's path in that package.
pub const QEMU_USER_MEMBER: &str = "./usr/bin/qemu-aarch64-static";

/// Where the arm64 packages and what is extracted from them go, inside the e2e cache.
pub fn cache_dir(cache: &Path) -> PathBuf {
    cache.join("arm64")
}

/// Fetch (once) and extract everything the arm64 guest and the checks of its dumps need.
pub fn prepare(cache: &Path, log: &mut dyn FnMut(String)) -> Result<Inputs, String> {
    let arch = Arch::Aarch64;
    require_tool("dpkg-deb", "--version", "dpkg")?;
    require_tool(&arch.qemu_system(), "--version", arch.qemu_package())?;
    let dir = cache_dir(cache);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let apt = Apt::foreign(arch, dir.join("apt"));
    let meta = apt.cached_deb(&dir, arch.meta_package(), None, log)?;
    let kernel = kernel_files(&dir, &apt, &meta, log)?;
    let root = package_root(&dir, &apt, SYSROOT_PACKAGES, "arm64-root", log)?;
    let busybox = root
        .find(&["/bin/busybox"])
        .ok_or_else(|| format!("no /bin/busybox in {}", root.dir.display()))?;
    let bytes = std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    if let Some(i) = elf_interpreter(&bytes) {
        return Err(format!(
            "{} is dynamically linked ({i}); expected busybox-static's",
            busybox.display()
        ));
    }
    let kexec = root
        .find(&["/sbin/kexec", "/usr/sbin/kexec"])
        .ok_or_else(|| format!("no sbin/kexec in {}", root.dir.display()))?;
    let kexec_libs = root.libs_of(&kexec, arch.multiarch())?;
    let rel = |p: &Path| p.strip_prefix(&root.dir).map(Path::to_path_buf).ok();
    let makedumpfile = root
        .find(&["/usr/bin/makedumpfile", "/usr/sbin/makedumpfile"])
        .and_then(|p| rel(&p))
        .ok_or_else(|| format!("no makedumpfile in {}", root.dir.display()))?;
    let crash = root
        .find(&["/usr/bin/crash"])
        .and_then(|p| rel(&p))
        .ok_or_else(|| format!("no usr/bin/crash in {}", root.dir.display()))?;
    let qemu_user = qemu_user(cache, log)?;
    Ok(Inputs {
        arch,
        tools: HostTools::Emulated {
            qemu_user,
            sysroot: root.dir.clone(),
            makedumpfile,
            crash,
        },
        image_package: kernel.image_package,
        image_version: kernel.image_version,
        kernel_release: kernel.kernel_release,
        vmlinuz: kernel.vmlinuz,
        vmlinux: kernel.vmlinux,
        busybox,
        kexec,
        kexec_libs,
        modules: kernel.modules,
    })
}

/// `qemu-aarch64-static`, extracted from the host's `qemu-user-static` package (downloaded
/// once into the cache, never installed: installing it would register binfmt handlers).
pub fn qemu_user(cache: &Path, log: &mut dyn FnMut(String)) -> Result<PathBuf, String> {
    let deb = Apt::host(Arch::X86_64).cached_deb(cache, QEMU_USER_PACKAGE, None, log)?;
    let dest = cache.join("qemu-aarch64-static");
    extract_member(&deb, QEMU_USER_MEMBER, &dest, log)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_index_options_leave_the_host_alone() {
        let apt = Apt::foreign(Arch::Aarch64, "/c/arm64/apt".into());
        let o = apt.options();
        assert!(o.chunks(2).all(|p| p[0] == "-o"), "{o:?}");
        let o: Vec<&str> = o.iter().skip(1).step_by(2).map(String::as_str).collect();
        for want in [
            "APT::Architecture=arm64",
            "APT::Architectures=arm64",
            "Dir::State=/c/arm64/apt",
            "Dir::State::Lists=/c/arm64/apt/lists",
            "Dir::State::status=/c/arm64/apt/status",
            "Dir::Cache=/c/arm64/apt/cache",
        ] {
            assert!(o.contains(&want), "{want} not in {o:?}");
        }
        assert!(Apt::host(Arch::X86_64).options().is_empty());
    }

    #[test]
    fn sysroot_has_the_guest_and_host_tools() {
        for p in ["busybox-static", "kexec-tools", "makedumpfile", "crash"] {
            assert!(SYSROOT_PACKAGES.contains(&p));
        }
        assert_eq!(cache_dir(Path::new("/c")), Path::new("/c/arm64"));
    }
}

/// Download and extract the arm64 inputs into the workspace's cache (`E2E_CACHE` overrides
/// `target/e2e-cache`) and print what was found:
///
/// ```sh
/// cargo test -p qemu-tests arm64_inputs_from_env -- --ignored --nocapture
/// ```
#[cfg(test)]
mod from_env {
    #[test]
    #[ignore]
    fn arm64_inputs_from_env() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let cache = std::env::var_os("E2E_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target/e2e-cache"));
        let mut log = |m: String| println!("e2e: {m}");
        let i = super::prepare(&cache, &mut log).unwrap_or_else(|e| panic!("{e}"));
        println!("{i:#?}");
    }
}
