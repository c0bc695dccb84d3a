//! `lifeboat load` with a `blk` sink: find the Linux disk the option names, make sure the dump
//! cannot destroy anything on it, and tell the capture kernel where it is.
//!
//! The capture kernel writes the dump over the whole disk from sector 0, so a wrong disk is
//! lost data. Before loading:
//!
//! 1. **Which disk.** Every `blk` item of `lifeboat.sink=` is resolved to one virtio-blk disk
//!    (`/sys/block/vd*`): `blk:/dev/vdX` (a loader-only spelling, any path to the whole disk),
//!    `blk:<serial>` / `blk:serial=<serial>` (`/sys/block/vdX/serial`), `blk:<pci address>`
//!    (the PCI function the disk's `device -> ../../virtioN` link sits under), or bare `blk`
//!    (exactly one virtio-blk disk, else refused with the list). The item is rewritten as
//!    `blk:<pci address>`: the capture kernel finds disks on PCI and knows no `/dev` names.
//! 2. **Not in use.** The disk and its partitions are not mounted (`/proc/self/mounts`), not
//!    active swap (`/proc/swaps`) and not part of a device-mapper, LVM or RAID device
//!    (`holders/`).
//! 3. **No data.** The first 66 KiB hold no partition table and no file system or volume
//!    signature ([`detect`]). An all-zero disk, an earlier kdump dump (`"KDUMP   "` at 0)
//!    and lifeboat's in-progress marker are fine.
//!
//! Checks 2 and 3 are overridden by `--force`. Parsing takes the files' contents or a root
//! directory (`/` on a real system), so the tests run on fake trees.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lifeboat_capture::blk::is_in_progress_marker;
use lifeboat_capture::cmdline::{BlkSelector, PciAddr};
use lifeboat_capture::kdump::KDUMP_SIGNATURE;

/// How much of the disk's start [`detect`] looks at (btrfs puts its superblock at 64 KiB).
pub const PROBE_BYTES: usize = 66 * 1024;

/// One virtio-blk disk as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioDisk {
    /// Kernel name, `vdb`.
    pub name: String,
    /// `/sys/block/vdX/serial`, when the device has one.
    pub serial: Option<String>,
    /// The PCI function of the virtio device; `None` for virtio-mmio (or an unexpected layout).
    pub pci: Option<PciAddr>,
    pub size_bytes: u64,
    pub read_only: bool,
    /// Partition names, `vdb1`, …
    pub partitions: Vec<String>,
}

impl VirtioDisk {
    /// `/dev/vdb`.
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// The disk and its partitions.
    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.partitions.iter().map(String::as_str))
    }
}

impl fmt::Display for VirtioDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/dev/{} (", self.name)?;
        match self.pci {
            Some(a) => write!(f, "PCI {a}")?,
            None => f.write_str("not on PCI")?,
        }
        if let Some(s) = &self.serial {
            write!(f, ", serial '{s}'")?;
        }
        write!(f, ", {})", size_text(self.size_bytes))
    }
}

/// `8 GiB`, `512 MiB`, `100 KiB`.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 10 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64).replace(".0 MiB", " MiB")
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// What a `blk` item asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkTarget {
    /// `blk:/dev/...` (loader only).
    Path(String),
    Selector(BlkSelector),
}

impl fmt::Display for BlkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkTarget::Path(p) => f.write_str(p),
            BlkTarget::Selector(s) => write!(f, "{s}"),
        }
    }
}

/// Why a `blk` sink cannot be used. Every message says what to do.
#[derive(Debug)]
pub enum BlkError {
    NoDisks,
    /// Bare `blk` with several disks: their descriptions.
    Several(Vec<String>),
    NotFound {
        want: BlkTarget,
        found: Vec<String>,
    },
    /// A path that is not a virtio-blk whole disk.
    NotVirtioDisk {
        path: String,
        name: String,
    },
    Partition {
        path: String,
        disk: String,
    },
    NotOnPci(String),
    ReadOnly(String),
    InUse {
        disk: String,
        uses: Vec<String>,
    },
    HasData {
        disk: String,
        what: String,
    },
    Unreadable {
        path: String,
        err: io::Error,
    },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BlkError::*;
        match self {
            NoDisks => write!(
                f,
                "lifeboat.sink=blk: this machine has no virtio-blk disk (/sys/block/vd*); add one for the \
                 dump (QEMU: -drive file=dump.img,if=virtio,format=raw,serial=dumpdisk) or use another sink"
            ),
            Several(list) => write!(
                f,
                "lifeboat.sink=blk: there are {} virtio-blk disks ({}); say which with blk:/dev/vdX, \
                 blk:serial=<serial> or blk:<pci address>",
                list.len(),
                list.join("; ")
            ),
            NotFound { want, found } => write!(
                f,
                "lifeboat.sink: {want} was not found (virtio-blk disks here: {})",
                if found.is_empty() { "none".to_string() } else { found.join("; ") }
            ),
            NotVirtioDisk { path, name } => write!(
                f,
                "lifeboat.sink=blk:{path}: {name} is not a virtio-blk disk; the capture kernel writes \
                 dumps only to virtio-blk disks (/dev/vd*)"
            ),
            Partition { path, disk } => write!(
                f,
                "lifeboat.sink=blk:{path} is a partition: the dump takes a whole disk from sector 0; \
                 use a disk of its own (blk:/dev/{disk} would overwrite all of {disk})"
            ),
            NotOnPci(d) => write!(
                f,
                "{d} is not a PCI device (virtio-mmio?): the capture kernel finds virtio-blk disks only on PCI"
            ),
            ReadOnly(d) => write!(f, "{d} is read-only: the dump cannot be written to it"),
            InUse { disk, uses } => write!(
                f,
                "refusing to use {disk} for dumps: {}; the dump would overwrite it (pass --force to \
                 override)",
                uses.join("; ")
            ),
            HasData { disk, what } => write!(
                f,
                "refusing to use {disk} for dumps: it holds {what}, which the dump would overwrite; wipe \
                 it (wipefs -a {disk}) or pass --force to override"
            ),
            Unreadable { path, err } => write!(f, "cannot read {path}: {err}"),
        }
    }
}

/// Reads a sysfs attribute, trimmed; `None` if absent or empty.
fn attr(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The PCI function a `/sys/block/vdX/device` link leads under (`…/0000:00:05.0/virtio2`).
fn pci_of(device_link: &Path) -> Option<PciAddr> {
    let real = std::fs::canonicalize(device_link).ok()?;
    let parent = real.parent()?.file_name()?.to_str()?;
    PciAddr::parse(parent)
}

/// Every virtio-blk disk under `root`'s `/sys/block`, sorted by name.
pub fn virtio_disks(root: &Path) -> Vec<VirtioDisk> {
    let dir = root.join("sys/block");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let d = dir.join(&name);
            let mut partitions: Vec<String> = std::fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().join("partition").exists())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect();
            partitions.sort();
            VirtioDisk {
                serial: attr(&d.join("serial")),
                pci: pci_of(&d.join("device")),
                size_bytes: attr(&d.join("size"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 512,
                read_only: attr(&d.join("ro")).as_deref() == Some("1"),
                partitions,
                name,
            }
        })
        .collect()
}

/// The target of a `blk` item (the part after `blk`, with its colon), or `None` if the item
/// is not `blk`. `blk:/dev/…` is a path; the rest is parsed as the capture kernel does.
pub fn blk_target(item: &str) -> Option<Result<BlkTarget, String>> {
    if item == "blk" {
        return Some(Ok(BlkTarget::Selector(BlkSelector::Only)));
    }
    let arg = item.strip_prefix("blk:")?;
    if arg.starts_with('/') {
        return Some(Ok(BlkTarget::Path(arg.to_string())));
    }
    let (o, warnings) = lifeboat_capture::cmdline::parse(&format!("lifeboat.sink={item}"));
    Some(match (o.sinks.as_slice(), warnings.is_empty()) {
        ([lifeboat_capture::cmdline::SinkSpec::Blk(sel)], true) => {
            Ok(BlkTarget::Selector(sel.clone()))
        }
        _ => Err(warnings.join("; ")),
    })
}

/// Finds the disk `want` names among `disks`. Paths are resolved under `root` (symlinks such
/// as `/dev/disk/by-id/…` followed).
pub fn resolve<'a>(
    root: &Path,
    disks: &'a [VirtioDisk],
    want: &BlkTarget,
) -> Result<&'a VirtioDisk, BlkError> {
    let found = || disks.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let not_found = || BlkError::NotFound {
        want: want.clone(),
        found: found(),
    };
    let disk = match want {
        BlkTarget::Selector(BlkSelector::Only) => match disks {
            [] => return Err(BlkError::NoDisks),
            [one] => one,
            _ => return Err(BlkError::Several(found())),
        },
        BlkTarget::Selector(BlkSelector::Pci(a)) => disks
            .iter()
            .find(|d| d.pci == Some(*a))
            .ok_or_else(not_found)?,
        BlkTarget::Selector(BlkSelector::Serial(s)) => disks
            .iter()
            .find(|d| d.serial.as_deref() == Some(s.as_str()))
            .ok_or_else(not_found)?,
        BlkTarget::Path(p) => {
            let full = root.join(p.trim_start_matches('/'));
            let real = std::fs::canonicalize(&full).map_err(|err| BlkError::Unreadable {
                path: p.clone(),
                err,
            })?;
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if let Some(d) = disks.iter().find(|d| d.name == name) {
                d
            } else if let Some(d) = disks.iter().find(|d| d.partitions.contains(&name)) {
                return Err(BlkError::Partition {
                    path: p.clone(),
                    disk: d.name.clone(),
                });
            } else {
                return Err(BlkError::NotVirtioDisk {
                    path: p.clone(),
                    name,
                });
            }
        }
    };
    if disk.pci.is_none() {
        return Err(BlkError::NotOnPci(disk.to_string()));
    }
    if disk.read_only {
        return Err(BlkError::ReadOnly(disk.to_string()));
    }
    Ok(disk)
}

/// Undoes the octal escapes of `/proc/self/mounts` and `/proc/swaps` (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel name a device path refers to: `/dev/vdb1` -> `vdb1`, following symlinks under
/// `root` (`/dev/disk/by-uuid/…`).
fn dev_name(root: &Path, path: &str) -> Option<String> {
    let rel = path.strip_prefix('/')?;
    if !path.starts_with("/dev/") {
        return None;
    }
    let real = std::fs::canonicalize(root.join(rel)).unwrap_or_else(|_| PathBuf::from(path));
    real.file_name()?.to_str().map(str::to_string)
}

/// What uses the disk or its partitions: mounts, swap, holders (device-mapper, LVM, RAID).
/// `mounts` and `swaps` are the texts of `/proc/self/mounts` and `/proc/swaps`.
pub fn uses(root: &Path, disk: &VirtioDisk, mounts: &str, swaps: &str) -> Vec<String> {
    let mine = |path: &str| dev_name(root, path).filter(|n| disk.names().any(|d| d == n));
    let mut out = Vec::new();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(dir)) = (f.next(), f.next()) else {
            continue;
        };
        if let Some(n) = mine(&unescape(src)) {
            out.push(format!("{n} is mounted on {}", unescape(dir)));
        }
    }
    for line in swaps.lines().skip(1) {
        let Some(file) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(n) = mine(&unescape(file)) {
            out.push(format!("{n} is in use as swap"));
        }
    }
    let block = root.join("sys/block").join(&disk.name);
    for n in disk.names() {
        let dir = if n == disk.name {
            block.join("holders")
        } else {
            block.join(n).join("holders")
        };
        let mut holders: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        holders.sort();
        if !holders.is_empty() {
            out.push(format!(
                "{n} is part of {} (device-mapper, LVM or RAID)",
                holders.join(", ")
            ));
        }
    }
    out
}

/// What the start of a disk holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// All zero (as far as [`PROBE_BYTES`]).
    Empty,
    /// A kdump-compressed dump (an earlier capture).
    KdumpDump,
    /// lifeboat's marker: a capture started and did not finish.
    InProgress,
    /// Something the dump must not overwrite; the text names it.
    Known(String),
    /// Non-zero bytes without a known signature.
    Unknown,
}

/// A signature: bytes at an offset.
struct Signature {
    offset: usize,
    magic: &'static [u8],
    what: &'static str,
}

/// Partition tables, file systems and volume formats, from their on-disk definitions (the
/// same places blkid looks).
const SIGNATURES: &[Signature] = &[
    Signature {
        offset: 512,
        magic: b"EFI PART",
        what: "a GPT partition table",
    },
    Signature {
        offset: 4096,
        magic: b"EFI PART",
        what: "a GPT partition table (4 KiB sectors)",
    },
    Signature {
        offset: 1080,
        magic: &[0x53, 0xef],
        what: "an ext2/ext3/ext4 file system",
    },
    Signature {
        offset: 0,
        magic: b"XFSB",
        what: "an XFS file system",
    },
    Signature {
        offset: 65600,
        magic: b"_BHRfS_M",
        what: "a btrfs file system",
    },
    Signature {
        offset: 4086,
        magic: b"SWAPSPACE2",
        what: "a swap area",
    },
    Signature {
        offset: 4086,
        magic: b"SWAP-SPACE",
        what: "a swap area",
    },
    Signature {
        offset: 65526,
        magic: b"SWAPSPACE2",
        what: "a swap area (64 KiB pages)",
    },
    Signature {
        offset: 0,
        magic: b"LUKS\xba\xbe",
        what: "a LUKS encrypted volume",
    },
    Signature {
        offset: 0,
        magic: b"LABELONE",
        what: "an LVM physical volume",
    },
    Signature {
        offset: 512,
        magic: b"LABELONE",
        what: "an LVM physical volume",
    },
    Signature {
        offset: 1024,
        magic: b"LABELONE",
        what: "an LVM physical volume",
    },
    Signature {
        offset: 1536,
        magic: b"LABELONE",
        what: "an LVM physical volume",
    },
    Signature {
        offset: 0,
        magic: &[0xfc, 0x4e, 0x2b, 0xa9],
        what: "a Linux RAID member (md 1.1)",
    },
    Signature {
        offset: 4096,
        magic: &[0xfc, 0x4e, 0x2b, 0xa9],
        what: "a Linux RAID member (md 1.2)",
    },
    Signature {
        offset: 1024,
        magic: &[0x10, 0x20, 0xf5, 0xf2],
        what: "an F2FS file system",
    },
    Signature {
        offset: 0,
        magic: b"hsqs",
        what: "a squashfs file system",
    },
    Signature {
        offset: 32769,
        magic: b"CD001",
        what: "an ISO 9660 file system",
    },
    Signature {
        offset: 3,
        magic: b"NTFS    ",
        what: "an NTFS file system",
    },
    Signature {
        offset: 3,
        magic: b"EXFAT   ",
        what: "an exFAT file system",
    },
    Signature {
        offset: 54,
        magic: b"FAT1",
        what: "a FAT file system",
    },
    Signature {
        offset: 82,
        magic: b"FAT32   ",
        what: "a FAT file system",
    },
];

/// Where a `disk_dump_header` block ends at the least (a kdump header block is at least a
/// 4 KiB page, all zero after the header).
const HEADER_BLOCK: usize = 4096;

/// The first signature found in `start` (the disk's first bytes; shorter on a small disk),
/// looking only below `limit`.
fn signature(start: &[u8], limit: usize) -> Option<String> {
    for s in SIGNATURES {
        let end = s.offset + s.magic.len();
        if end <= limit && start.get(s.offset..end) == Some(s.magic) {
            return Some(s.what.to_string());
        }
    }
    // A DOS/MBR partition table: the boot signature and at least one used entry.
    if start.len() >= 512 && start[510] == 0x55 && start[511] == 0xaa {
        let used = (0..4).filter(|i| start[446 + 16 * i + 4] != 0).count();
        if used > 0 {
            return Some(format!("an MBR partition table ({used} partition(s))"));
        }
    }
    None
}

/// Classifies the start of a disk. An earlier dump or the in-progress marker are only taken
/// as such when the rest of their header block is free of other signatures (so a file system
/// made over an old dump is still found).
pub fn detect(start: &[u8]) -> Content {
    let own = if start.starts_with(&KDUMP_SIGNATURE) {
        Some(Content::KdumpDump)
    } else if is_in_progress_marker(start) {
        Some(Content::InProgress)
    } else {
        None
    };
    if let Some(c) = own {
        // Beyond the header block the bytes are dump data: they may contain anything.
        return match signature(start, HEADER_BLOCK) {
            Some(what) if !what.starts_with("an MBR") => Content::Known(what),
            _ => c,
        };
    }
    if let Some(what) = signature(start, usize::MAX) {
        return Content::Known(what);
    }
    if start.iter().all(|&b| b == 0) {
        Content::Empty
    } else {
        Content::Unknown
    }
}

/// Reads the first [`PROBE_BYTES`] of `path` (fewer on a smaller disk).
pub fn read_start(path: &Path, size: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; (PROBE_BYTES as u64).min(size) as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// A resolved and checked dump disk.
#[derive(Clone, Debug)]
pub struct CheckedDisk {
    pub disk: VirtioDisk,
    /// What the disk held; `None` when it could not be read (dry run as non-root).
    pub content: Option<Content>,
    /// The item for the capture kernel: `blk:<pci address>`.
    pub item: String,
}

impl CheckedDisk {
    /// One line for the load summary.
    pub fn summary(&self) -> String {
        let held = match &self.content {
            Some(Content::Empty) => "empty".to_string(),
            Some(Content::KdumpDump) => {
                "holds an earlier dump, which will be overwritten".to_string()
            }
            Some(Content::InProgress) => "holds an unfinished capture".to_string(),
            Some(Content::Known(w)) => format!("holds {w} (--force)"),
            Some(Content::Unknown) => {
                "holds data of no known kind, which will be overwritten".to_string()
            }
            None => "contents not checked".to_string(),
        };
        format!(
            "dump disk {}: {held}; the capture kernel gets {}",
            self.disk, self.item
        )
    }
}

/// Checks `disk` for use as a dump disk: not in use, no data (both overridden by `force`).
/// `start` is the first bytes of the disk, or `None` when they could not be read.
pub fn check(
    disk: &VirtioDisk,
    uses: Vec<String>,
    start: Option<&[u8]>,
    force: bool,
) -> Result<CheckedDisk, BlkError> {
    let path = disk.dev_path();
    if !uses.is_empty() && !force {
        return Err(BlkError::InUse { disk: path, uses });
    }
    let content = start.map(detect);
    if let (Some(Content::Known(what)), false) = (&content, force) {
        return Err(BlkError::HasData {
            disk: path,
            what: what.clone(),
        });
    }
    let pci = disk
        .pci
        .ok_or_else(|| BlkError::NotOnPci(disk.to_string()))?;
    Ok(CheckedDisk {
        disk: disk.clone(),
        content,
        item: format!("blk:{pci}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("lifeboat-blkcheck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn write(root: &Path, p: &str, text: &str) {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A virtio-blk disk the way Linux lays it out in sysfs:
    /// `/sys/block/vdX -> ../devices/pci0000:00/<pci>/virtioN/block/vdX`, `device -> ../../../virtioN`.
    fn add_disk(
        root: &Path,
        name: &str,
        pci: &str,
        virtio: u32,
        serial: Option<&str>,
        sectors: u64,
        parts: &[&str],
    ) {
        let dev = format!("sys/devices/pci0000:00/{pci}/virtio{virtio}");
        let blk = format!("{dev}/block/{name}");
        write(root, &format!("{blk}/size"), &format!("{sectors}\n"));
        write(root, &format!("{blk}/ro"), "0\n");
        std::fs::create_dir_all(root.join(&blk).join("holders")).unwrap();
        if let Some(s) = serial {
            write(root, &format!("{blk}/serial"), s);
        }
        for p in parts {
            write(root, &format!("{blk}/{p}/partition"), "1\n");
            std::fs::create_dir_all(root.join(&blk).join(p).join("holders")).unwrap();
            write(root, &format!("dev/{p}"), "");
        }
        symlink(
            format!("../../../virtio{virtio}"),
            root.join(&blk).join("device"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        symlink(
            format!("../devices/pci0000:00/{pci}/virtio{virtio}/block/{name}"),
            root.join("sys/block").join(name),
        )
        .unwrap();
        write(root, &format!("dev/{name}"), "");
    }

    fn sel(item: &str) -> BlkTarget {
        blk_target(item).unwrap().unwrap()
    }

    #[test]
    fn resolves_disks_from_sysfs() {
        let root = tmp("resolve");
        add_disk(
            &root,
            "vda",
            "0000:00:04.0",
            1,
            Some("rootdisk"),
            20 << 21,
            &["vda1", "vda2"],
        );
        add_disk(
            &root,
            "vdb",
            "0000:00:05.0",
            2,
            Some("dumpdisk"),
            2 << 21,
            &[],
        );
        // A non-virtio disk is not listed.
        write(&root, "sys/block/sda/size", "100\n");
        let disks = virtio_disks(&root);
        assert_eq!(disks.len(), 2);
        let vdb = &disks[1];
        assert_eq!(vdb.name, "vdb");
        assert_eq!(vdb.serial.as_deref(), Some("dumpdisk"));
        assert_eq!(vdb.pci, PciAddr::parse("0000:00:05.0"));
        assert_eq!(vdb.size_bytes, 2 << 30);
        assert_eq!(disks[0].partitions, ["vda1", "vda2"]);
        assert_eq!(
            vdb.to_string(),
            "/dev/vdb (PCI 0000:00:05.0, serial 'dumpdisk', 2 GiB)"
        );

        for item in [
            "blk:/dev/vdb",
            "blk:dumpdisk",
            "blk:serial=dumpdisk",
            "blk:0000:00:05.0",
            "blk:00:05.0",
        ] {
            assert_eq!(
                resolve(&root, &disks, &sel(item)).unwrap().name,
                "vdb",
                "{item}"
            );
        }
        // A by-id symlink to the disk works; one to a partition is refused.
        std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
        symlink("../../vdb", root.join("dev/disk/by-id/virtio-dumpdisk")).unwrap();
        assert_eq!(
            resolve(&root, &disks, &sel("blk:/dev/disk/by-id/virtio-dumpdisk"))
                .unwrap()
                .name,
            "vdb"
        );
        let e = resolve(&root, &disks, &sel("blk:/dev/vda1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a partition") && e.contains("vda"), "{e}");
        write(&root, "dev/sda", "");
        let e = resolve(&root, &disks, &sel("blk:/dev/sda"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a virtio-blk disk"), "{e}");
        let e = resolve(&root, &disks, &sel("blk:/dev/nope"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read /dev/nope"), "{e}");
        let e = resolve(&root, &disks, &sel("blk:other"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("serial 'other'") && e.contains("/dev/vda (PCI 0000:00:04.0"),
            "{e}"
        );
        let e = resolve(&root, &disks, &sel("blk:00:09.0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PCI 0000:00:09.0"), "{e}");
        // Bare blk: exactly one disk.
        let e = resolve(&root, &disks, &sel("blk")).unwrap_err().to_string();
        assert!(
            e.contains("2 virtio-blk disks") && e.contains("/dev/vdb (PCI"),
            "{e}"
        );
        assert_eq!(
            resolve(&root, &disks[1..], &sel("blk")).unwrap().name,
            "vdb"
        );
        assert!(matches!(
            resolve(&root, &[], &sel("blk")),
            Err(BlkError::NoDisks)
        ));
        // Read-only and non-PCI disks are refused.
        let mut ro = disks[1].clone();
        ro.read_only = true;
        assert!(matches!(
            resolve(&root, &[ro], &sel("blk")),
            Err(BlkError::ReadOnly(_))
        ));
        let mut mmio = disks[1].clone();
        mmio.pci = None;
        assert!(matches!(
            resolve(&root, &[mmio], &sel("blk")),
            Err(BlkError::NotOnPci(_))
        ));
        // Items that are not blk, or bad ones.
        assert!(blk_target("serial").is_none());
        assert!(blk_target("net:10.0.2.2:9000").is_none());
        assert!(blk_target("blk:serial=").unwrap().is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn finds_mounts_swap_and_holders() {
        let root = tmp("uses");
        add_disk(
            &root,
            "vdb",
            "0000:00:05.0",
            2,
            None,
            1 << 21,
            &["vdb1", "vdb2", "vdb3"],
        );
        let disk = &virtio_disks(&root)[0];
        assert!(uses(&root, disk, "", "Filename Type Size Used Priority\n").is_empty());
        std::fs::create_dir_all(root.join("dev/disk/by-uuid")).unwrap();
        symlink("../../vdb1", root.join("dev/disk/by-uuid/1234")).unwrap();
        let mounts =
            "/dev/vda1 / ext4 rw 0 0\n/dev/disk/by-uuid/1234 /mnt/my\\040data ext4 rw 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n/dev/vdb /srv xfs rw 0 0\n";
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/vdb2   partition\t1048572\t0\t-2\n";
        std::fs::create_dir_all(root.join("sys/block/vdb/vdb3/holders/dm-0")).unwrap();
        let u = uses(&root, disk, mounts, swaps);
        assert_eq!(
            u,
            [
                "vdb1 is mounted on /mnt/my data",
                "vdb is mounted on /srv",
                "vdb2 is in use as swap",
                "vdb3 is part of dm-0 (device-mapper, LVM or RAID)",
            ]
        );
        let e = check(disk, u, None, false).unwrap_err().to_string();
        assert!(
            e.starts_with("refusing to use /dev/vdb for dumps: vdb1 is mounted on /mnt/my data;"),
            "{e}"
        );
        assert!(e.contains("--force"), "{e}");
        // --force overrides.
        let c = check(disk, vec!["x".into()], Some(&[0u8; 4096]), true).unwrap();
        assert_eq!(c.item, "blk:0000:00:05.0");
        std::fs::remove_dir_all(root).unwrap();
    }

    fn at(mut b: Vec<u8>, offset: usize, magic: &[u8]) -> Vec<u8> {
        b[offset..offset + magic.len()].copy_from_slice(magic);
        b
    }

    #[test]
    fn detects_signatures() {
        let zero = vec![0u8; PROBE_BYTES];
        assert_eq!(detect(&zero), Content::Empty);
        assert_eq!(detect(&zero[..1024]), Content::Empty); // a tiny disk
        let known = |b: &[u8]| match detect(b) {
            Content::Known(w) => w,
            c => panic!("{c:?}"),
        };
        assert_eq!(
            known(&at(zero.clone(), 1080, &[0x53, 0xef])),
            "an ext2/ext3/ext4 file system"
        );
        assert_eq!(known(&at(zero.clone(), 0, b"XFSB")), "an XFS file system");
        assert_eq!(
            known(&at(zero.clone(), 65600, b"_BHRfS_M")),
            "a btrfs file system"
        );
        assert_eq!(known(&at(zero.clone(), 4086, b"SWAPSPACE2")), "a swap area");
        assert_eq!(
            known(&at(zero.clone(), 0, b"LUKS\xba\xbe")),
            "a LUKS encrypted volume"
        );
        assert_eq!(
            known(&at(zero.clone(), 512, b"LABELONE")),
            "an LVM physical volume"
        );
        assert_eq!(
            known(&at(zero.clone(), 512, b"EFI PART")),
            "a GPT partition table"
        );
        assert_eq!(
            known(&at(zero.clone(), 4096, &[0xfc, 0x4e, 0x2b, 0xa9])),
            "a Linux RAID member (md 1.2)"
        );
        assert_eq!(
            known(&at(zero.clone(), 32769, b"CD001")),
            "an ISO 9660 file system"
        );
        assert_eq!(
            known(&at(zero.clone(), 82, b"FAT32   ")),
            "a FAT file system"
        );
        // MBR: the 0x55AA signature needs a used partition entry.
        let boot = at(zero.clone(), 510, &[0x55, 0xaa]);
        assert_eq!(detect(&boot), Content::Unknown);
        let mbr = at(boot.clone(), 446 + 16 + 4, &[0x83]);
        assert_eq!(known(&mbr), "an MBR partition table (1 partition(s))");
        // A signature beyond a small disk's end is not read.
        assert_eq!(
            detect(&at(zero.clone(), 4000, b"x")[..4096]),
            Content::Unknown
        );
        // Earlier dumps and the marker are fine, whatever the dump data holds further on.
        let dump = at(at(zero.clone(), 0, b"KDUMP   "), 65600, b"_BHRfS_M");
        assert_eq!(detect(&dump), Content::KdumpDump);
        let marker = at(
            zero.clone(),
            0,
            &lifeboat_capture::blk::in_progress_marker(),
        );
        assert_eq!(detect(&marker), Content::InProgress);
        // ... but a file system made over an old dump is found.
        assert_eq!(
            known(&at(dump.clone(), 1080, &[0x53, 0xef])),
            "an ext2/ext3/ext4 file system"
        );
        assert_eq!(
            known(&at(marker, 512, b"LABELONE")),
            "an LVM physical volume"
        );
        // Random data with no signature.
        let noise: Vec<u8> = (0..PROBE_BYTES).map(|i| (i * 7 % 251) as u8 | 1).collect();
        assert_eq!(detect(&noise), Content::Unknown);
    }

    #[test]
    fn check_refuses_data_unless_forced() {
        let disk = VirtioDisk {
            name: "vdb".into(),
            serial: None,
            pci: PciAddr::parse("00:05.0"),
            size_bytes: 1 << 30,
            read_only: false,
            partitions: vec![],
        };
        let ext4 = at(vec![0u8; PROBE_BYTES], 1080, &[0x53, 0xef]);
        let e = check(&disk, vec![], Some(&ext4), false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "refusing to use /dev/vdb for dumps: it holds an ext2/ext3/ext4 file system, which the dump \
             would overwrite; wipe it (wipefs -a /dev/vdb) or pass --force to override"
        );
        let c = check(&disk, vec![], Some(&ext4), true).unwrap();
        assert!(
            c.summary()
                .contains("holds an ext2/ext3/ext4 file system (--force)"),
            "{}",
            c.summary()
        );
        let c = check(&disk, vec![], Some(&[0u8; 512]), false).unwrap();
        assert_eq!(
            c.summary(),
            "dump disk /dev/vdb (PCI 0000:00:05.0, 1 GiB): empty; the capture kernel gets blk:0000:00:05.0"
        );
        assert_eq!(size_text(1536 << 20), "1536 MiB");
        assert_eq!(size_text(12 << 30), "12 GiB");
        assert_eq!(size_text(100 << 10), "100 KiB");
        assert_eq!(unescape("a\\040b\\\\"), "a b\\\\");
    }
}
