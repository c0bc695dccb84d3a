//! Everything the e2e guests are made of, and where it comes from.
//!
//! - Debian's cloud kernel: `apt-get download linux-image-cloud-amd64` (the meta package), the
//!   versioned image package it depends on, and that package's `-dbg` twin (for `vmlinux`). The
//!   `.deb`s and the files extracted from them stay in the cache directory; a `.deb` that is
//!   there and passes `dpkg-deb -I` is never downloaded again, so later runs are offline.
//! - From the image package too: the virtio modules the disk and network sink scenarios load
//!   ([`SINK_MODULES`] and what their `.modinfo` says they depend on), extracted into
//!   `<cache>/modules-<release>/`.
//! - From the host: busybox (`busybox-static`), `/sbin/kexec` and the shared libraries `ldd`
//!   lists (`kexec-tools`), `crash`, `makedumpfile`, `qemu-system-x86_64` (`qemu-system-x86`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use super::arch::{Arch, HostTools};

/// The kernel meta package whose dependency names the kernel under test (x86_64; see
/// [`Arch::meta_package`]).
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The modules the sink scenarios' guests load (`virtio_pci` is the transport both drivers
/// need; it is not in their `depends=`). Their dependencies are found in `.modinfo`.
pub const SINK_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net"];

/// The crash binary; `CRASH` overrides it.
pub fn crash_binary() -> String {
    std::env::var("CRASH").unwrap_or_else(|_| "crash".into())
}

/// The guest kernel and the host tools, ready to use.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The guest's architecture.
    pub arch: Arch,
    /// How the host runs makedumpfile and crash on this architecture's dumps.
    pub tools: HostTools,
    /// e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub image_package: String,
    /// e.g. `6.1.192-2`.
    pub image_version: String,
    /// `uname -r` of the guest kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// The kernel QEMU boots: `vmlinuz-<release>` (a bzImage on x86_64, an uncompressed
    /// Image on arm64).
    pub vmlinuz: PathBuf,
    /// The unstripped kernel with DWARF, from the `-dbg` package (for `crash`).
    pub vmlinux: PathBuf,
    /// A static busybox for the guest.
    pub busybox: PathBuf,
    /// Debian's kexec-tools for the guest.
    pub kexec: PathBuf,
    /// kexec's libraries, including the dynamic loader: (path in the guest, file to copy).
    pub kexec_libs: Vec<(String, PathBuf)>,
    /// [`Arch::sink_modules`] and their dependencies, dependencies first (the `insmod` order).
    pub modules: Vec<KernelModule>,
}

/// One `.ko` from the image package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    /// The module's name (`.modinfo` `name=`, e.g. `virtio_pci_modern_dev`).
    pub name: String,
    /// The extracted file in the cache.
    pub path: PathBuf,
}

fn run_output(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Fail with a message naming the Debian package when `program` cannot be started.
pub fn require_tool(program: &str, arg: &str, package: &str) -> Result<(), String> {
    match Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cannot run {program} ({e}); install the Debian package {package} (cargo xtask setup does)"
        )),
    }
}

/// Check the host tools and fetch (or find cached) the guest kernel.
pub fn prepare(cache_dir: &Path, log: &mut dyn FnMut(String)) -> Result<Inputs, String> {
    require_tool("dpkg-deb", "--version", "dpkg")?;
    require_tool(&crate::qemu::qemu_binary(), "--version", "qemu-system-x86")?;
    require_tool(&crate::qemu::makedumpfile_binary(), "-v", "makedumpfile")?;
    require_tool(&crash_binary(), "--version", "crash")?;
    let busybox = find_busybox()?;
    let kexec = ["/sbin/kexec", "/usr/sbin/kexec"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no /sbin/kexec; install the Debian package kexec-tools (cargo xtask setup does)")?;
    let kexec_libs = ldd(&kexec)?;

    std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    let meta = cached_deb(cache_dir, META_PACKAGE, None, log)?;
    let kernel = kernel_files(cache_dir, &Apt::host(Arch::X86_64), &meta, log)?;
    Ok(Inputs {
        arch: Arch::X86_64,
        tools: HostTools::Native,
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

/// The kernel under test and what comes from its packages.
pub(crate) struct KernelFiles {
    pub image_package: String,
    pub image_version: String,
    pub kernel_release: String,
    pub vmlinuz: PathBuf,
    pub vmlinux: PathBuf,
    pub modules: Vec<KernelModule>,
}

/// From the cached meta package `meta`: the image package it depends on (`vmlinuz`, the sink
/// modules) and its `-dbg` twin (`vmlinux`), downloaded once and extracted into the cache.
pub(crate) fn kernel_files(
    cache_dir: &Path,
    apt: &Apt,
    meta: &Path,
    log: &mut dyn FnMut(String),
) -> Result<KernelFiles, String> {
    let depends = deb_field(meta, "Depends")?;
    let (image_package, image_version) = parse_image_dependency(&depends).ok_or_else(|| {
        format!(
            "{}: no linux-image-* (= version) in Depends: {depends}",
            meta.display()
        )
    })?;
    let kernel_release = image_package["linux-image-".len()..].to_string();
    let image = apt.cached_deb(cache_dir, &image_package, Some(&image_version), log)?;
    let dbg = apt.cached_deb(
        cache_dir,
        &format!("{image_package}-dbg"),
        Some(&image_version),
        log,
    )?;
    let vmlinuz = extract_member(
        &image,
        &format!("./boot/vmlinuz-{kernel_release}"),
        &cache_dir.join(format!("vmlinuz-{kernel_release}")),
        log,
    )?;
    let vmlinux = extract_member(
        &dbg,
        &format!("./usr/lib/debug/boot/vmlinux-{kernel_release}"),
        &cache_dir.join(format!("vmlinux-{kernel_release}")),
        log,
    )?;
    let modules = sink_modules(
        &image,
        &kernel_release,
        apt.arch.sink_modules(),
        cache_dir,
        log,
    )?;
    Ok(KernelFiles {
        image_package,
        image_version,
        kernel_release,
        vmlinuz,
        vmlinux,
        modules,
    })
}

/// `/bin/busybox` from busybox-static (the dynamic `busybox` package installs the same path,
/// so check that it has no ELF interpreter).
fn find_busybox() -> Result<PathBuf, String> {
    let p = PathBuf::from("/bin/busybox");
    let bytes = std::fs::read(&p).map_err(|e| {
        format!("no /bin/busybox ({e}); install the Debian package busybox-static (cargo xtask setup does)")
    })?;
    if elf_interpreter(&bytes).is_some() {
        return Err(
            "/bin/busybox is dynamically linked; install the Debian package busybox-static".into(),
        );
    }
    Ok(p)
}

/// The PT_INTERP string of an ELF64 file, if any.
pub fn elf_interpreter(b: &[u8]) -> Option<String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return None;
    }
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().ok()?) as usize;
    let phnum = u16::from_le_bytes(b[0x38..0x3a].try_into().ok()?) as usize;
    for i in 0..phnum {
        let p = b.get(phoff + i * 56..phoff + (i + 1) * 56)?;
        if u32::from_le_bytes(p[0..4].try_into().ok()?) == 3 {
            let off = u64::from_le_bytes(p[8..16].try_into().ok()?) as usize;
            let len = u64::from_le_bytes(p[32..40].try_into().ok()?) as usize;
            let s = b.get(off..off + len)?;
            return Some(
                String::from_utf8_lossy(s)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
    }
    None
}

/// The libraries `ldd` lists: `name => /path (addr)` and `/lib64/ld-linux-x86-64.so.2 (addr)`.
fn ldd(binary: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let out = run_output(Command::new("ldd").arg(binary))?;
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(l) = text.lines().find(|l| l.contains("not found")) {
        return Err(format!("ldd {}: {}", binary.display(), l.trim()));
    }
    let libs = parse_ldd(&text);
    if libs.is_empty() {
        return Err(format!("ldd {} lists no libraries", binary.display()));
    }
    Ok(libs
        .into_iter()
        .map(|p| (p.clone(), PathBuf::from(p)))
        .collect())
}

pub fn parse_ldd(text: &str) -> Vec<String> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    libs
}

/// `linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)` → (package, version).
pub fn parse_image_dependency(depends: &str) -> Option<(String, String)> {
    for alt in depends.split([',', '|']) {
        let alt = alt.trim();
        let (name, rest) = alt.split_once(' ').unwrap_or((alt, ""));
        if !name.starts_with("linux-image-") {
            continue;
        }
        let version = rest
            .trim()
            .strip_prefix("(=")?
            .trim()
            .strip_suffix(')')?
            .trim();
        return Some((name.to_string(), version.to_string()));
    }
    None
}

fn deb_field(deb: &Path, field: &str) -> Result<String, String> {
    let out = run_output(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))?;
    if !out.status.success() {
        return Err(format!("dpkg-deb -f {} {field} failed", deb.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn deb_is_intact(deb: &Path) -> bool {
    Command::new("dpkg-deb")
        .arg("-I")
        .arg(deb)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// apt-get's file name for a version: `:` (epoch) is written `%3a`.
fn version_in_filename(v: &str) -> String {
    v.replace(':', "%3a")
}

/// The cached `.deb` of `package` (at `version`, or the newest cached one) for the host's
/// architecture, downloaded with `apt-get download` into `cache_dir` only if no intact copy
/// is there.
fn cached_deb(
    cache_dir: &Path,
    package: &str,
    version: Option<&str>,
    log: &mut dyn FnMut(String),
) -> Result<PathBuf, String> {
    Apt::host(Arch::X86_64).cached_deb(cache_dir, package, version, log)
}

/// How `apt-get download` finds packages of one architecture.
///
/// The host's apt knows its own architecture only: `apt-get download busybox-static:arm64`
/// says "Unable to locate package" until `dpkg --add-architecture arm64` and `apt-get update`
/// changed the host. Instead, [`Apt::foreign`] gives apt a package index of its own in the
/// cache (`-o Dir::State=…`, `APT::Architecture=arm64`), filled by `apt-get update` from the
/// host's own sources and keys: nothing on the host changes, and no root is needed.
#[derive(Clone, Debug)]
pub struct Apt {
    pub arch: Arch,
    /// The private apt state directory; `None`: the host's apt.
    state: Option<PathBuf>,
}

impl Apt {
    /// The host's apt, for packages of its own architecture (`arch`).
    pub fn host(arch: Arch) -> Self {
        Apt { arch, state: None }
    }

    /// An apt for `arch` packages with its index in `state` (see [`Apt::update_if_needed`]).
    pub fn foreign(arch: Arch, state: PathBuf) -> Self {
        Apt {
            arch,
            state: Some(state),
        }
    }

    /// The `-o` options that point apt at the private state (empty for the host's apt).
    pub fn options(&self) -> Vec<String> {
        let Some(st) = &self.state else {
            return vec![];
        };
        let d = st.display();
        let a = self.arch.deb_arch();
        [
            format!("APT::Architecture={a}"),
            format!("APT::Architectures={a}"),
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            // As root apt downloads as the `_apt` user, which cannot write the cache here.
            "APT::Sandbox::User=root".into(),
            // Only the Packages indexes: no translations, no AppStream metadata.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn apt_get(&self) -> Command {
        let mut c = Command::new("apt-get");
        c.args(self.options());
        c
    }

    /// For a private index: `apt-get update` once (when it has no package lists yet).
    pub fn update_if_needed(&self, log: &mut dyn FnMut(String)) -> Result<(), String> {
        let Some(st) = &self.state else {
            return Ok(());
        };
        let lists = st.join("lists");
        let has_lists = std::fs::read_dir(&lists).into_iter().flatten().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("binary-{}_Packages", self.arch.deb_arch()))
        });
        if has_lists {
            return Ok(());
        }
        for d in [
            lists.join("partial"),
            st.join("cache/archives/partial"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        std::fs::write(st.join("status"), b"").map_err(|e| format!("{}: {e}", st.display()))?;
        log(format!(
            "apt-get update of a private {} package index in {}",
            self.arch.deb_arch(),
            st.display()
        ));
        let out = run_output(self.apt_get().arg("-q").arg("update"))?;
        if !out.status.success() {
            return Err(format!(
                "apt-get update of the {} index in {} failed (network?): {}",
                self.arch.deb_arch(),
                st.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// The cached `.deb` of `package` (at `version`, or the newest cached one), downloaded
    /// with `apt-get download` into `cache_dir` only if no intact copy is there.
    pub fn cached_deb(
        &self,
        cache_dir: &Path,
        package: &str,
        version: Option<&str>,
        log: &mut dyn FnMut(String),
    ) -> Result<PathBuf, String> {
        let suffix = format!("_{}.deb", self.arch.deb_arch());
        let find = || -> Vec<PathBuf> {
            let prefix = format!("{package}_");
            let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ver = deb_file_version(&name, &prefix, &suffix)?;
                    if version.is_some_and(|v| version_in_filename(v) != ver) {
                        return None;
                    }
                    let mtime = e.metadata().ok()?.modified().ok()?;
                    Some((mtime, e.path()))
                })
                .collect();
            found.sort();
            found.into_iter().rev().map(|(_, p)| p).collect()
        };
        for p in find() {
            if deb_is_intact(&p) {
                return Ok(p);
            }
            log(format!(
                "{} is damaged (dpkg-deb -I fails); removing it",
                p.display()
            ));
            let _ = std::fs::remove_file(&p);
        }
        self.update_if_needed(log)?;
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_string(),
        };
        log(format!("downloading {spec} ({}) into {}", self.arch.deb_arch(), cache_dir.display()));
        let out = run_output(
            self.apt_get()
                .arg("download")
                .arg(&spec)
                .current_dir(cache_dir),
        )?;
        if !out.status.success() {
            return Err(format!(
                "`apt-get download {spec}` ({}) failed (is `apt-get update` done and the network up?): {}",
                self.arch.deb_arch(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let p = find().into_iter().next().ok_or_else(|| {
            format!("`apt-get download {spec}` wrote no {package}_*{suffix} (or _all.deb)")
        })?;
        if !deb_is_intact(&p) {
            return Err(format!("{} is damaged right after download", p.display()));
        }
        Ok(p)
    }
}

/// The version part of a `.deb` file name `<package>_<version>_<arch>.deb` (or `_all.deb`).
fn deb_file_version<'a>(name: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    rest.strip_suffix(suffix)
        .or_else(|| rest.strip_suffix("_all.deb"))
        .filter(|v| !v.contains('_'))
}

/// Extract one member of a `.deb`'s data archive to `dest` (kept: reused when it exists).
pub(crate) fn extract_member(
    deb: &Path,
    member: &str,
    dest: &Path,
    log: &mut dyn FnMut(String),
) -> Result<PathBuf, String> {
    extract_members(deb, &[(member.to_string(), dest.to_path_buf())], log)?;
    Ok(dest.to_path_buf())
}

/// Extract members of a `.deb`'s data archive, `(member, dest)`, in one pass over the archive;
/// a `dest` that exists (and is not empty) is kept as it is. The members go to a scratch
/// directory first and are renamed into place, so an interrupted extraction never looks
/// cached.
fn extract_members(
    deb: &Path,
    wanted: &[(String, PathBuf)],
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let missing: Vec<&(String, PathBuf)> = wanted
        .iter()
        .filter(|(_, dest)| !dest.metadata().is_ok_and(|m| m.len() > 0))
        .collect();
    let Some((_, first)) = missing.first() else {
        return Ok(());
    };
    let names: Vec<&str> = missing.iter().map(|(m, _)| m.as_str()).collect();
    log(format!(
        "extracting {} from {}",
        names.join(" "),
        deb.file_name().unwrap_or_default().to_string_lossy()
    ));
    let scratch = first.with_extension("extracting");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&scratch)
        .args(&names)
        .stdin(dpkg.stdout.take().unwrap())
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let dpkg_ok = dpkg.wait().is_ok_and(|s| s.success());
    let all_there = missing.iter().all(|(m, _)| scratch.join(m).is_file());
    if !tar.status.success() || !dpkg_ok || !all_there {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(format!(
            "could not extract {} from {}: {}",
            names.join(" "),
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    for (member, dest) in missing {
        std::fs::rename(scratch.join(member), dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The image package's modules: module name (`-` in file names read as `_`, as the kernel
/// does) → archive member (`./lib/modules/<release>/kernel/…/<name>.ko`). Compressed modules
/// (`.ko.xz`, `.ko.zst`, `.ko.gz`) are listed under their name with the member as it is, so
/// the caller can say why it cannot use them.
fn list_modules(deb: &Path, release: &str) -> Result<BTreeMap<String, String>, String> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    let tar = Command::new("tar")
        .arg("-t")
        .stdin(dpkg.stdout.take().unwrap())
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let dpkg_ok = dpkg.wait().is_ok_and(|s| s.success());
    if !tar.status.success() || !dpkg_ok {
        return Err(format!(
            "cannot list {}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(parse_module_listing(
        &String::from_utf8_lossy(&tar.stdout),
        release,
    ))
}

pub fn parse_module_listing(listing: &str, release: &str) -> BTreeMap<String, String> {
    let prefix = format!("./lib/modules/{release}/");
    let mut m = BTreeMap::new();
    for member in listing.lines().map(str::trim) {
        if !member.starts_with(&prefix) {
            continue;
        }
        let file = member.rsplit('/').next().unwrap_or("");
        let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext));
        if let Some(stem) = stem {
            m.insert(stem.replace('-', "_"), member.to_string());
        }
    }
    m
}

/// The `key=value` strings of a kernel module's `.modinfo` section (ELF64 little-endian).
pub fn modinfo(ko: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(ko.get(o..o + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(ko.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(ko.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    if ko.len() < 64 || &ko[..4] != b"\x7fELF" || ko[4] != 2 || ko[5] != 1 {
        return Err("not a little-endian ELF64 file (a compressed module?)".into());
    }
    let find = || -> Option<&[u8]> {
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
        let sh = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
        let strtab = u64_at(sh(shstrndx)? + 0x18)?;
        for i in 0..shnum {
            let h = sh(i)?;
            let name_at = strtab.checked_add(u32_at(h)?)?;
            let name = ko.get(name_at..)?.split(|&b| b == 0).next()?;
            if name == b".modinfo" {
                let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
                return ko.get(off..off.checked_add(size)?);
            }
        }
        None
    };
    let section = find().ok_or("no .modinfo section")?;
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// Module names in `insmod` order: every module after all it depends on, the roots in the
/// order given. `depends` maps each module to its `depends=` list.
pub fn load_order(
    roots: &[&str],
    depends: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, String> {
    fn visit(
        n: &str,
        depends: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        if out.iter().any(|o| o == n) {
            return Ok(());
        }
        if path.iter().any(|p| p == n) {
            return Err(format!(
                "module dependency cycle: {} -> {n}",
                path.join(" -> ")
            ));
        }
        let deps = depends
            .get(n)
            .ok_or_else(|| format!("no dependency list for module {n}"))?;
        path.push(n.to_string());
        for d in deps {
            visit(d, depends, path, out)?;
        }
        path.pop();
        out.push(n.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    for r in roots {
        visit(r, depends, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// `roots` ([`Arch::sink_modules`]) and everything they depend on, extracted from the image package into
/// `<cache>/modules-<release>/<name>.ko` (kept between runs), in `insmod` order. Each module's
/// `vermagic=` must name `release`.
fn sink_modules(
    image: &Path,
    release: &str,
    roots: &[&str],
    cache_dir: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Vec<KernelModule>, String> {
    let dir = cache_dir.join(format!("modules-{release}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = |n: &str| dir.join(format!("{n}.ko"));
    let mut listing: Option<BTreeMap<String, String>> = None;
    let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut want: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
    while !want.is_empty() {
        let missing: Vec<&String> = want.iter().filter(|n| !file(n).is_file()).collect();
        if !missing.is_empty() {
            if listing.is_none() {
                listing = Some(list_modules(image, release)?);
            }
            let members = listing.as_ref().unwrap();
            let mut batch = Vec::new();
            for n in missing {
                let member = members.get(n.as_str()).ok_or_else(|| {
                    format!("{} has no module {n}.ko under ./lib/modules/{release}/ (built in? then leave it out of SINK_MODULES)", image.display())
                })?;
                if !member.ends_with(".ko") {
                    return Err(format!(
                        "{} ships {member} compressed; the e2e initramfs takes uncompressed .ko files only",
                        image.display()
                    ));
                }
                batch.push((member.clone(), file(n)));
            }
            extract_members(image, &batch, log)?;
        }
        let mut next = Vec::new();
        for n in want.drain(..) {
            let p = file(&n);
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let info = modinfo(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
            let field = |k: &str| {
                info.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            let vermagic = field("vermagic").unwrap_or("");
            if vermagic.split_whitespace().next() != Some(release) {
                return Err(format!(
                    "{}: vermagic {vermagic:?} is not for {release}",
                    p.display()
                ));
            }
            let deps: Vec<String> = field("depends")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            for d in &deps {
                if !depends.contains_key(d) && d != &n && !next.contains(d) {
                    next.push(d.clone());
                }
            }
            depends.insert(n, deps);
        }
        next.retain(|d| !depends.contains_key(d));
        want = next;
    }
    Ok(load_order(roots, &depends)?
        .into_iter()
        .map(|name| KernelModule {
            path: file(&name),
            name,
        })
        .collect())
}

/// The package of Linux kdump's dump tool (`cargo xtask bench --vs-kdump`): its capture
/// initramfs runs makedumpfile from this package, with the libraries of the packages it
/// depends on (all from the same Debian release, by `apt-get download`).
pub const KDUMP_TOOL_PACKAGE: &str = "makedumpfile";

/// makedumpfile and its shared libraries, extracted from Debian packages into
/// `<cache>/kdump-root/`.
#[derive(Clone, Debug)]
pub struct KdumpInputs {
    /// Every package extracted: (name, version), makedumpfile first.
    pub packages: Vec<(String, String)>,
    /// `usr/sbin/makedumpfile` (or wherever the package puts it) in the extracted tree.
    pub makedumpfile: PathBuf,
    /// The ELF interpreter and every `DT_NEEDED` library, transitively: (path in the guest,
    /// file in the extracted tree). Libraries go to `/lib/x86_64-linux-gnu/<soname>`, the
    /// interpreter to its `PT_INTERP` path.
    pub libs: Vec<(String, PathBuf)>,
}

/// The library packages named in a `Depends` field: the first alternative of each, without
/// version or architecture qualifier, only `lib*` and `zlib*` (makedumpfile also depends on
/// `perl:any` for a helper script the capture does not use).
pub fn parse_lib_depends(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| {
            let first = d.split('|').next()?.trim();
            let name = first.split_whitespace().next()?;
            let name = name.split(':').next()?;
            (name.starts_with("lib") || name.starts_with("zlib")).then(|| name.to_string())
        })
        .collect()
}

/// The `DT_NEEDED` names of an ELF64 little-endian file (empty for a static one).
pub fn elf_needed(b: &[u8]) -> Result<Vec<String>, String> {
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes(s.try_into().unwrap()) as usize)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let bad = || "truncated ELF program headers".to_string();
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)?;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let p = phoff + i * 56;
        let ty = u32_at(p).ok_or_else(bad)?;
        let off = u64_at(p + 8).ok_or_else(bad)?;
        let vaddr = u64_at(p + 16).ok_or_else(bad)?;
        let filesz = u64_at(p + 32).ok_or_else(bad)?;
        match ty {
            1 => loads.push((vaddr, off, filesz)),
            2 => dynamic = Some((off as usize, filesz as usize)),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_len)) = dynamic else {
        return Ok(vec![]);
    };
    let (mut needed, mut strtab) = (Vec::new(), None);
    for e in (dyn_off..dyn_off + dyn_len).step_by(16) {
        let (tag, val) = (u64_at(e).ok_or_else(bad)?, u64_at(e + 8).ok_or_else(bad)?);
        match tag {
            0 => break,
            1 => needed.push(val as usize),
            5 => strtab = Some(val),
            _ => {}
        }
    }
    let strtab = strtab.ok_or("no DT_STRTAB")?;
    let str_off = loads
        .iter()
        .find(|(v, _, sz)| (*v..v + sz).contains(&strtab))
        .map(|(v, off, _)| (strtab - v + off) as usize)
        .ok_or("DT_STRTAB is outside every PT_LOAD")?;
    needed
        .iter()
        .map(|&n| {
            let s = b
                .get(str_off + n..)
                .ok_or("DT_NEEDED name outside the file")?;
            let end = s
                .iter()
                .position(|&c| c == 0)
                .ok_or("unterminated DT_NEEDED name")?;
            Ok(String::from_utf8_lossy(&s[..end]).into_owned())
        })
        .collect()
}

/// `path` (absolute, as the guest sees it) inside `root`, following symlinks the way the
/// guest would (absolute targets from `root`): the regular file it names, if any.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let host = root.join(cur.join("/"));
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_string_lossy().into_owned();
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(String::from),
            );
        }
    }
    let host = root.join(cur.join("/"));
    host.is_file().then_some(host)
}

/// Debian packages and the library packages they depend on, transitively, extracted
/// together into one directory of the cache.
#[derive(Clone, Debug)]
pub struct PackageRoot {
    pub dir: PathBuf,
    /// Every package extracted: (name, version), the requested ones first.
    pub packages: Vec<(String, String)>,
}

/// Download (once) `wanted` and the `lib*` packages they depend on ([`parse_lib_depends`]),
/// transitively, and extract them all into `<cache>/<dir_name>/` (redone when the set of
/// packages changes; a `.packages` stamp lists them).
pub fn package_root(
    cache_dir: &Path,
    apt: &Apt,
    wanted: &[&str],
    dir_name: &str,
    log: &mut dyn FnMut(String),
) -> Result<PackageRoot, String> {
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    let mut queue: Vec<String> = wanted.iter().rev().map(|s| s.to_string()).collect();
    let mut debs: Vec<(String, String, PathBuf)> = Vec::new();
    while let Some(pkg) = queue.pop() {
        if debs.iter().any(|(n, _, _)| *n == pkg) {
            continue;
        }
        if debs.len() > 60 {
            return Err(format!(
                "more than 60 packages behind {}: {queue:?}",
                wanted.join(", ")
            ));
        }
        let deb = apt.cached_deb(cache_dir, &pkg, None, log)?;
        let version = deb_field(&deb, "Version")?;
        for field in ["Pre-Depends", "Depends"] {
            let deps = deb_field(&deb, field)?;
            for d in parse_lib_depends(&deps).into_iter().rev() {
                queue.push(d);
            }
        }
        debs.push((pkg, version, deb));
    }
    let root = cache_dir.join(dir_name);
    let stamp_text: String = debs.iter().map(|(n, v, _)| format!("{n} {v}\n")).collect();
    let stamp = root.join(".packages");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(stamp_text.as_str()) {
        log(format!(
            "extracting {} into {}",
            debs.iter()
                .map(|(n, v, _)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            root.display()
        ));
        let scratch = cache_dir.join(format!("{dir_name}.extracting"));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        for (_, _, deb) in &debs {
            let out = run_output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
            if !out.status.success() {
                return Err(format!(
                    "dpkg-deb -x {} failed: {}",
                    deb.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        std::fs::write(scratch.join(".packages"), &stamp_text).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&scratch, &root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    Ok(PackageRoot {
        dir: root,
        packages: debs.into_iter().map(|(n, v, _)| (n, v)).collect(),
    })
}

impl PackageRoot {
    /// The first of `paths` (absolute, as on a Debian system) that is a file in the root.
    pub fn find(&self, paths: &[&str]) -> Option<PathBuf> {
        paths.iter().find_map(|p| resolve_in_root(&self.dir, p))
    }

    /// The ELF interpreter and every `DT_NEEDED` library of `binary` (a file in the root),
    /// transitively: (path in a guest, file in the root). Libraries go to
    /// `/lib/<multiarch>/<soname>`, the interpreter to its `PT_INTERP` path.
    pub fn libs_of(&self, binary: &Path, multiarch: &str) -> Result<Vec<(String, PathBuf)>, String> {
        let root = &self.dir;
        let name = binary.display();
        let bin = std::fs::read(binary).map_err(|e| format!("{name}: {e}"))?;
        let interp = elf_interpreter(&bin)
            .ok_or_else(|| format!("{name} has no ELF interpreter (a static build?)"))?;
        let mut libs = vec![(
            interp.clone(),
            resolve_in_root(root, &interp).ok_or_else(|| {
                format!("the ELF interpreter {interp} is in none of the extracted packages")
            })?,
        )];
        let mut todo = elf_needed(&bin).map_err(|e| format!("{name}: {e}"))?;
        while let Some(soname) = todo.pop() {
            let guest = format!("/lib/{multiarch}/{soname}");
            if libs.iter().any(|(g, _)| *g == guest) {
                continue;
            }
            let host = [
                format!("lib/{multiarch}"),
                format!("usr/lib/{multiarch}"),
                "lib".into(),
                "usr/lib".into(),
            ]
            .iter()
            .find_map(|d| resolve_in_root(root, &format!("/{d}/{soname}")))
            .ok_or_else(|| {
                format!(
                    "{name} needs {soname}, which none of the extracted packages ({}) has",
                    self.packages
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let bytes = std::fs::read(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            todo.extend(elf_needed(&bytes).map_err(|e| format!("{}: {e}", host.display()))?);
            libs.push((guest, host));
        }
        Ok(libs)
    }
}

/// Download (once) makedumpfile and the library packages it depends on, transitively, extract
/// them into `<cache>/kdump-root/` (redone when the set of packages changes), and find the
/// ELF interpreter and every library makedumpfile needs in that tree.
pub fn prepare_kdump(cache_dir: &Path, log: &mut dyn FnMut(String)) -> Result<KdumpInputs, String> {
    let root = package_root(
        cache_dir,
        &Apt::host(Arch::X86_64),
        &[KDUMP_TOOL_PACKAGE],
        "kdump-root",
        log,
    )?;
    let makedumpfile = root
        .find(&[
            "/usr/sbin/makedumpfile",
            "/usr/bin/makedumpfile",
            "/sbin/makedumpfile",
            "/bin/makedumpfile",
        ])
        .ok_or_else(|| format!("no makedumpfile binary in {}", root.dir.display()))?;
    let libs = root.libs_of(&makedumpfile, Arch::X86_64.multiarch())?;
    Ok(KdumpInputs {
        packages: root.packages,
        makedumpfile,
        libs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_meta_package_dependency() {
        assert_eq!(
            parse_image_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                "6.1.192-2".into()
            ))
        );
        assert_eq!(
            parse_image_dependency("foo, linux-image-6.1.0-9-cloud-amd64 (= 6.1.27-1) | bar"),
            Some(("linux-image-6.1.0-9-cloud-amd64".into(), "6.1.27-1".into()))
        );
        assert_eq!(parse_image_dependency("linux-image-x (>= 1)"), None);
        assert_eq!(parse_image_dependency("foo"), None);
    }

    #[test]
    fn parses_ldd_output() {
        let t = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\tlibgone.so => not found\n";
        assert_eq!(
            parse_ldd(t),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn module_listing_by_name() {
        let l = "./lib/modules/r1/\n./lib/modules/r1/kernel/drivers/virtio/virtio_pci.ko\n\
                 ./lib/modules/r1/kernel/drivers/char/hw_random/virtio-rng.ko\n\
                 ./lib/modules/r1/kernel/net/core/failover.ko.xz\n\
                 ./lib/modules/r2/kernel/drivers/block/virtio_blk.ko\n./boot/vmlinuz-r1\n";
        let m = parse_module_listing(l, "r1");
        assert_eq!(m.len(), 3);
        assert_eq!(
            m["virtio_pci"],
            "./lib/modules/r1/kernel/drivers/virtio/virtio_pci.ko"
        );
        assert_eq!(
            m["virtio_rng"],
            "./lib/modules/r1/kernel/drivers/char/hw_random/virtio-rng.ko"
        );
        assert!(m["failover"].ends_with(".ko.xz"));
    }

    #[test]
    fn insmod_order_puts_dependencies_first() {
        // Debian 6.1's depends= lists (modinfo -F depends).
        let d: BTreeMap<String, Vec<String>> = [
            ("virtio", "virtio_ring"),
            ("virtio_ring", ""),
            (
                "virtio_pci",
                "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
            ),
            ("virtio_pci_legacy_dev", ""),
            ("virtio_pci_modern_dev", ""),
            ("virtio_blk", "virtio,virtio_ring"),
            ("virtio_net", "virtio_ring,virtio,net_failover"),
            ("failover", ""),
            ("net_failover", "failover"),
        ]
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            )
        })
        .collect();
        assert_eq!(
            load_order(SINK_MODULES, &d).unwrap(),
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let mut cyc = d.clone();
        cyc.insert("virtio_ring".into(), vec!["virtio_blk".into()]);
        assert!(load_order(SINK_MODULES, &cyc)
            .unwrap_err()
            .contains("cycle"));
        cyc.remove("virtio_ring");
        assert!(load_order(SINK_MODULES, &cyc)
            .unwrap_err()
            .contains("virtio_ring"));
    }

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    fn ko_with_modinfo(info: &[u8]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstr_off = f.len();
        f.extend_from_slice(shstr);
        let info_off = f.len();
        f.extend_from_slice(info);
        let shoff = f.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        f.extend(sh(0, 0, 0));
        f.extend(sh(1, shstr_off, shstr.len()));
        f.extend(sh(11, info_off, info.len()));
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn modinfo_fields() {
        let ko = ko_with_modinfo(b"license=GPL\0depends=virtio_ring,virtio\0name=virtio_blk\0vermagic=6.1.0-56-cloud-amd64 SMP mod_unload \0");
        let m = modinfo(&ko).unwrap();
        assert!(m.contains(&("depends".into(), "virtio_ring,virtio".into())));
        assert!(m.contains(&("name".into(), "virtio_blk".into())));
        assert_eq!(m.len(), 4);
        assert!(modinfo(b"\xfd7zXZ\0 compressed").is_err());
        let mut bad = ko.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(modinfo(&bad).is_err());
    }

    #[test]
    fn library_dependencies_of_makedumpfile() {
        assert_eq!(
            parse_lib_depends("perl:any, libc6 (>= 2.34), libdw1 (>= 0.143), zlib1g (>= 1:1.2.0) | foo, libelf1:amd64"),
            ["libc6", "libdw1", "zlib1g", "libelf1"]
        );
    }

    #[test]
    fn needed_libraries_of_a_host_binary() {
        // Any dynamically linked host binary will do: the shell's needs include libc.
        let sh = std::fs::read("/bin/sh").unwrap();
        if elf_interpreter(&sh).is_some() {
            let n = elf_needed(&sh).unwrap();
            assert!(n.iter().any(|l| l.starts_with("libc.so")), "{n:?}");
        }
        assert!(elf_needed(b"not an elf").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("e2e-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/libz.so.1.2.13"), b"z").unwrap();
        std::os::unix::fs::symlink(
            "libz.so.1.2.13",
            root.join("lib/x86_64-linux-gnu/libz.so.1"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/libz.so.1", root.join("lib64/ld.so"))
            .unwrap();
        let want = root.join("lib/x86_64-linux-gnu/libz.so.1.2.13");
        assert_eq!(
            resolve_in_root(&root, "/lib/x86_64-linux-gnu/libz.so.1"),
            Some(want.clone())
        );
        assert_eq!(resolve_in_root(&root, "/lib64/ld.so"), Some(want));
        assert_eq!(resolve_in_root(&root, "/lib64/../lib64/nope"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn deb_file_names_by_architecture() {
        let v = |n: &str, p: &str, s: &str| deb_file_version(n, p, s).map(String::from);
        assert_eq!(
            v("busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb", "busybox-static_", "_arm64.deb"),
            Some("1%3a1.35.0-4+deb12u1+b1".into())
        );
        assert_eq!(v("busybox-static_1.35_amd64.deb", "busybox-static_", "_arm64.deb"), None);
        assert_eq!(v("linux-base_4.9_all.deb", "linux-base_", "_arm64.deb"), Some("4.9".into()));
        // The -dbg package is not the image package.
        assert_eq!(
            v(
                "linux-image-6.1.0-56-cloud-arm64-dbg_6.1.192-2_arm64.deb",
                "linux-image-6.1.0-56-cloud-arm64_",
                "_arm64.deb"
            ),
            None
        );
    }

    #[test]
    fn library_dependencies_of_the_arm64_tools() {
        // Debian 12's crash and kexec-tools (arm64): binutils and debconf are not libraries
        // the binaries load.
        assert_eq!(
            parse_lib_depends("libc6 (>= 2.34), libgcc-s1 (>= 4.2), liblzo2-2 (>= 2.02), libncursesw6 (>= 6), libsnappy1v5 (>= 1.1.9), libstdc++6 (>= 12.2.0-9), libtinfo6 (>= 6), libzstd1 (>= 1.5.2), binutils"),
            ["libc6", "libgcc-s1", "liblzo2-2", "libncursesw6", "libsnappy1v5", "libstdc++6", "libtinfo6", "libzstd1"]
        );
        assert_eq!(
            parse_lib_depends("libc6 (>= 2.34), libxenmisc4.17 (>= 4.17.5+23-ga4e5191dc0), zlib1g (>= 1:1.2.2.3), debconf (>= 0.5) | debconf-2.0, debconf"),
            ["libc6", "libxenmisc4.17", "zlib1g"]
        );
    }

    #[test]
    fn epoch_in_file_names() {
        assert_eq!(version_in_filename("1:2.0.25-3"), "1%3a2.0.25-3");
    }
}
