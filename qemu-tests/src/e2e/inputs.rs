//! Everything the e2e guests are made of, and where it comes from.
//!
//! - Debian's cloud kernel: `apt-get download linux-image-cloud-amd64` (the meta package), the
//!   versioned image package it depends on, and that package's `-dbg` twin (for `vmlinux`). The
//!   `.deb`s and the files extracted from them stay in the cache directory; a `.deb` that is
//!   there and passes `dpkg-deb -I` is never downloaded again, so later runs are offline.
//! - From the host: busybox (`busybox-static`), `/sbin/kexec` and the shared libraries `ldd`
//!   lists (`kexec-tools`), `crash`, `makedumpfile`, `qemu-system-x86_64` (`qemu-system-x86`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kernel meta package whose dependency names the kernel under test.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The crash binary; `CRASH` overrides it.
pub fn crash_binary() -> String {
    std::env::var("CRASH").unwrap_or_else(|_| "crash".into())
}

/// The guest kernel and the host tools, ready to use.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub image_package: String,
    /// e.g. `6.1.192-2`.
    pub image_version: String,
    /// `uname -r` of the guest kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    pub vmlinuz: PathBuf,
    /// The unstripped kernel with DWARF, from the `-dbg` package (for `crash`).
    pub vmlinux: PathBuf,
    pub busybox: PathBuf,
    pub kexec: PathBuf,
    /// Libraries `ldd` lists for kexec, including the dynamic loader: (path in the guest,
    /// host file to copy).
    pub kexec_libs: Vec<(String, PathBuf)>,
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
    let depends = deb_field(&meta, "Depends")?;
    let (image_package, image_version) = parse_image_dependency(&depends).ok_or_else(|| {
        format!(
            "{}: no linux-image-* (= version) in Depends: {depends}",
            meta.display()
        )
    })?;
    let kernel_release = image_package["linux-image-".len()..].to_string();
    let image = cached_deb(cache_dir, &image_package, Some(&image_version), log)?;
    let dbg = cached_deb(
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
    Ok(Inputs {
        image_package,
        image_version,
        kernel_release,
        vmlinuz,
        vmlinux,
        busybox,
        kexec,
        kexec_libs,
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

/// The cached `.deb` of `package` (at `version`, or the newest cached one), downloaded with
/// `apt-get download` into `cache_dir` only if no intact copy is there.
fn cached_deb(
    cache_dir: &Path,
    package: &str,
    version: Option<&str>,
    log: &mut dyn FnMut(String),
) -> Result<PathBuf, String> {
    let find = || -> Vec<PathBuf> {
        let prefix = format!("{package}_");
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let ver = name.strip_prefix(&prefix)?.strip_suffix("_amd64.deb")?;
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
    let spec = match version {
        Some(v) => format!("{package}={v}"),
        None => package.to_string(),
    };
    log(format!("downloading {spec} into {}", cache_dir.display()));
    let out = run_output(
        Command::new("apt-get")
            .arg("download")
            .arg(&spec)
            .current_dir(cache_dir),
    )?;
    if !out.status.success() {
        return Err(format!(
            "`apt-get download {spec}` failed (is `apt-get update` done and the network up?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let p = find()
        .into_iter()
        .next()
        .ok_or_else(|| format!("`apt-get download {spec}` wrote no {package}_*_amd64.deb"))?;
    if !deb_is_intact(&p) {
        return Err(format!("{} is damaged right after download", p.display()));
    }
    Ok(p)
}

/// Extract one member of a `.deb`'s data archive to `dest` (kept: reused when it exists).
/// The member goes to a scratch directory first and is renamed into place, so an interrupted
/// extraction never looks cached.
fn extract_member(
    deb: &Path,
    member: &str,
    dest: &Path,
    log: &mut dyn FnMut(String),
) -> Result<PathBuf, String> {
    if dest.metadata().is_ok_and(|m| m.len() > 0) {
        return Ok(dest.to_path_buf());
    }
    log(format!(
        "extracting {member} from {}",
        deb.file_name().unwrap_or_default().to_string_lossy()
    ));
    let scratch = dest.with_extension("extracting");
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
        .arg(member)
        .stdin(dpkg.stdout.take().unwrap())
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let dpkg_ok = dpkg.wait().is_ok_and(|s| s.success());
    let got = scratch.join(member);
    if !tar.status.success() || !dpkg_ok || !got.is_file() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(format!(
            "could not extract {member} from {}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    std::fs::rename(&got, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(dest.to_path_buf())
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
    fn epoch_in_file_names() {
        assert_eq!(version_in_filename("1:2.0.25-3"), "1%3a2.0.25-3");
    }
}
