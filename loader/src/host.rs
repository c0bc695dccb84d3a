//! Reading the running system: the only module (with [`crate::kexec`]) that looks outside
//! the process. Paths are taken relative to a root directory so tests can use a fixture tree.

use std::io;
use std::path::{Path, PathBuf};

use crate::elfcorehdr::{NoteBuf, DEFAULT_CRASH_NOTES_SIZE};
use crate::memmap::{self, IomemEntry, Range, RegionKind};
use crate::sysfs::{self, Lockdown};

/// The running system as seen under `root` (normally `/`).
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }
}

/// The crash reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The range the capture kernel goes in (`crashk_res`); `None` when the addresses are
    /// hidden from a non-root reader.
    pub range: Option<Range>,
    /// Its size in bytes.
    pub size: u64,
    /// All "Crash kernel" ranges (a `crashkernel=…,high` setup has a low one too).
    pub all: Vec<Range>,
}

/// Finds the reservation from `/proc/iomem` and `/sys/kernel/kexec_crash_size` (the size of
/// `crashk_res`, which picks the main range when there is also a low one).
pub fn find_reservation(iomem: &[IomemEntry], crash_size: Option<u64>) -> Option<Reservation> {
    let all = memmap::crash_ranges(iomem);
    if memmap::iomem_addresses_hidden(iomem) {
        return match (crash_size, all.is_empty()) {
            (Some(size), false) if size > 0 => Some(Reservation {
                range: None,
                size,
                all: Vec::new(),
            }),
            _ => None,
        };
    }
    let main = all
        .iter()
        .copied()
        .find(|r| Some(r.len()) == crash_size)
        .or_else(|| all.iter().copied().max_by_key(|r| r.len()))?;
    Some(Reservation {
        range: Some(main),
        size: main.len(),
        all,
    })
}

impl Host {
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `p` (absolute) under the root.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    pub fn read(&self, p: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(p))
    }

    pub fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }

    pub fn iomem(&self) -> io::Result<Vec<IomemEntry>> {
        Ok(memmap::parse_iomem(&self.read("/proc/iomem")?))
    }

    /// `/sys/kernel/kexec_crash_loaded`; `None` if the kernel has no kexec crash support.
    pub fn crash_loaded(&self) -> Option<bool> {
        self.read("/sys/kernel/kexec_crash_loaded")
            .ok()
            .map(|s| s.trim() == "1")
    }

    pub fn crash_size(&self) -> Option<u64> {
        self.read("/sys/kernel/kexec_crash_size")
            .ok()
            .and_then(|s| sysfs::parse_dec(&s))
    }

    /// `None` when the kernel has no lockdown LSM (or securityfs is not mounted).
    pub fn lockdown(&self) -> Option<Lockdown> {
        self.read("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| Lockdown::parse(&s))
    }

    /// Numbers N of `/sys/devices/system/cpu/cpuN` directories, sorted.
    fn cpu_numbers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::fs::read_dir(self.path("/sys/devices/system/cpu"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// Number of CPUs with crash notes.
    pub fn cpu_count(&self) -> usize {
        self.cpu_numbers()
            .into_iter()
            .filter(|n| self.exists(&format!("/sys/devices/system/cpu/cpu{n}/crash_notes")))
            .count()
    }

    /// Every CPU's crash note buffer, in CPU order. CPUs without `crash_notes` are skipped.
    pub fn cpu_notes(&self) -> io::Result<Vec<NoteBuf>> {
        let mut out = Vec::new();
        for n in self.cpu_numbers() {
            let dir = format!("/sys/devices/system/cpu/cpu{n}");
            let text = match self.read(&format!("{dir}/crash_notes")) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{dir}/crash_notes: {e}"))),
            };
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{dir}/crash_notes: '{}' is not an address", text.trim()),
                )
            };
            let addr = sysfs::parse_hex(&text)
                .filter(|&a| a != 0)
                .ok_or_else(bad)?;
            let size = self
                .read(&format!("{dir}/crash_notes_size"))
                .ok()
                .and_then(|s| sysfs::parse_dec(&s))
                .filter(|&s| s > 0)
                .unwrap_or(DEFAULT_CRASH_NOTES_SIZE);
            out.push(NoteBuf { addr, size });
        }
        Ok(out)
    }

    pub fn vmcoreinfo(&self) -> Option<NoteBuf> {
        let (addr, size) = sysfs::parse_vmcoreinfo(&self.read("/sys/kernel/vmcoreinfo").ok()?)?;
        Some(NoteBuf { addr, size })
    }

    /// `PAGE_OFFSET` from `/proc/kcore`.
    pub fn page_offset(&self, ram: &[Range]) -> Result<u64, String> {
        sysfs::page_offset_from_kcore(&self.kcore_phdrs()?, ram)
            .ok_or_else(|| "no direct-map PT_LOAD at a RAM start in /proc/kcore".into())
    }

    /// arm64: the linear map's offset (`PAGE_OFFSET - PHYS_OFFSET`) from `/proc/kcore`.
    pub fn linear_offset_arm64(&self, ram: &[Range]) -> Result<u64, String> {
        sysfs::linear_offset_from_kcore_arm64(&self.kcore_phdrs()?, ram)
            .ok_or_else(|| "no linear-map PT_LOAD at a RAM start in /proc/kcore".into())
    }

    /// `/proc/kcore`'s program header table.
    fn kcore_phdrs(&self) -> Result<Vec<u8>, String> {
        use std::os::unix::fs::FileExt;
        let path = self.path("/proc/kcore");
        let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut ehdr = [0u8; 64];
        f.read_exact_at(&mut ehdr, 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (phoff, phnum) =
            sysfs::kcore_phdr_table(&ehdr).ok_or("/proc/kcore is not an ELF64 core")?;
        let mut phdrs = vec![0u8; usize::from(phnum) * 56];
        f.read_exact_at(&mut phdrs, phoff)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(phdrs)
    }

    /// `/proc/kallsyms`, or an empty text when it cannot be read.
    pub fn kallsyms(&self) -> String {
        self.read("/proc/kallsyms").unwrap_or_default()
    }

    /// The device tree the running kernel booted with (`/sys/firmware/fdt`, root only).
    pub fn boot_fdt(&self) -> io::Result<Vec<u8>> {
        std::fs::read(self.path("/sys/firmware/fdt"))
    }

    /// ACPI, NVS and reserved ranges: `/sys/firmware/memmap` if present, else `/proc/iomem`.
    pub fn firmware_ranges(&self, iomem: &[IomemEntry]) -> Vec<(Range, RegionKind)> {
        let dir = self.path("/sys/firmware/memmap");
        let from_sysfs: Vec<(Range, RegionKind)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let rd = |f: &str| std::fs::read_to_string(p.join(f)).ok();
                memmap::parse_firmware_memmap_entry(&rd("start")?, &rd("end")?, &rd("type")?)
            })
            .collect();
        let mut v = if from_sysfs.is_empty() {
            memmap::firmware_ranges_from_iomem(iomem)
        } else {
            from_sysfs
        };
        v.retain(|(_, k)| {
            matches!(
                k,
                RegionKind::AcpiTables | RegionKind::AcpiNvs | RegionKind::Reserved
            )
        });
        v.sort_by_key(|(r, _)| *r);
        v
    }

    /// The ACPI RSDP address the running kernel was given, or the EFI one.
    pub fn rsdp(&self) -> Option<u64> {
        std::fs::read(self.path("/sys/kernel/boot_params/data"))
            .ok()
            .and_then(|d| sysfs::rsdp_from_boot_params(&d))
            .or_else(|| sysfs::rsdp_from_efi_systab(&self.read("/sys/firmware/efi/systab").ok()?))
    }

    /// Whether the kernel updates the elfcorehdr on CPU/memory hotplug (Linux ≥ 6.5), which
    /// makes kexec_file_load reserve room for many more program headers.
    pub fn crash_hotplug(&self) -> bool {
        self.exists("/sys/devices/system/memory/crash_hotplug")
            || self.exists("/sys/devices/system/cpu/crash_hotplug")
    }

    /// Total RAM in bytes: System RAM in iomem, or MemTotal when iomem hides addresses.
    pub fn total_ram(&self, iomem: &[IomemEntry]) -> u64 {
        if !memmap::iomem_addresses_hidden(iomem) {
            return memmap::ranges_of(iomem, RegionKind::Ram)
                .iter()
                .map(Range::len)
                .sum();
        }
        self.read("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
                })
            })
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The running kernel's page size (kexec segments must be aligned to it).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 only for an unknown name.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n >= 4096).unwrap_or(4096)
}

/// The directory of the running executable.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::{fixtures::IOMEM_QEMU_1G, parse_iomem};

    fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("lifeboat-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (p, text) in files {
            let p = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    #[test]
    fn reservation_from_iomem() {
        let e = parse_iomem(IOMEM_QEMU_1G);
        let r = find_reservation(&e, Some(16 << 20)).unwrap();
        assert_eq!(
            r.range,
            Some(Range {
                start: 0x3e00_0000,
                end: 0x3f00_0000
            })
        );
        assert_eq!(r.size, 16 << 20);
        // A low and a high reservation: kexec_crash_size names the main one.
        let two = "00100000-3ffdffff : System RAM\n  0d000000-1cffffff : Crash kernel\n100000000-23fffffff : System RAM\n  200000000-200ffffff : Crash kernel\n";
        let e = parse_iomem(two);
        assert_eq!(
            find_reservation(&e, Some(16 << 20)).unwrap().range,
            Some(Range {
                start: 0x2_0000_0000,
                end: 0x2_0100_0000
            })
        );
        assert_eq!(
            find_reservation(&e, None).unwrap().range,
            Some(Range {
                start: 0xd00_0000,
                end: 0x1d00_0000
            })
        );
        // None at all.
        assert_eq!(
            find_reservation(&parse_iomem("00100000-3ffdffff : System RAM\n"), Some(0)),
            None
        );
        // Hidden addresses (not root): the size is still known.
        let hidden =
            parse_iomem("00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n");
        assert_eq!(
            find_reservation(&hidden, Some(16 << 20)).unwrap(),
            Reservation {
                range: None,
                size: 16 << 20,
                all: vec![]
            }
        );
    }

    #[test]
    fn reads_cpu_notes_vmcoreinfo_and_firmware_map() {
        let root = tree(
            "sysfs",
            &[
                ("/sys/devices/system/cpu/cpu0/crash_notes", "3f61c0e0\n"),
                ("/sys/devices/system/cpu/cpu0/crash_notes_size", "448\n"),
                ("/sys/devices/system/cpu/cpu10/crash_notes", "3f85c0e0\n"),
                ("/sys/devices/system/cpu/cpu2/crash_notes", "3f65c0e0\n"),
                ("/sys/devices/system/cpu/cpufreq/boost", "0\n"),
                ("/sys/kernel/vmcoreinfo", "2a8d000 1024\n"),
                ("/sys/kernel/kexec_crash_loaded", "0\n"),
                (
                    "/sys/kernel/security/lockdown",
                    "[none] integrity confidentiality\n",
                ),
                ("/sys/firmware/memmap/0/start", "0x0\n"),
                ("/sys/firmware/memmap/0/end", "0x9fbff\n"),
                ("/sys/firmware/memmap/0/type", "System RAM\n"),
                ("/sys/firmware/memmap/1/start", "0x3ffe0000\n"),
                ("/sys/firmware/memmap/1/end", "0x3fffffff\n"),
                ("/sys/firmware/memmap/1/type", "Reserved\n"),
                ("/sys/firmware/memmap/2/start", "0x7f000000\n"),
                ("/sys/firmware/memmap/2/end", "0x7f0fffff\n"),
                ("/sys/firmware/memmap/2/type", "ACPI Tables\n"),
            ],
        );
        let h = Host::with_root(&root);
        let notes = h.cpu_notes().unwrap();
        assert_eq!(
            notes,
            vec![
                NoteBuf {
                    addr: 0x3f61c0e0,
                    size: 448
                },
                NoteBuf {
                    addr: 0x3f65c0e0,
                    size: DEFAULT_CRASH_NOTES_SIZE
                },
                NoteBuf {
                    addr: 0x3f85c0e0,
                    size: DEFAULT_CRASH_NOTES_SIZE
                },
            ]
        );
        assert_eq!(h.cpu_count(), 3);
        assert_eq!(
            h.vmcoreinfo(),
            Some(NoteBuf {
                addr: 0x2a8d000,
                size: 0x1024
            })
        );
        assert_eq!(h.crash_loaded(), Some(false));
        assert_eq!(h.lockdown(), Some(Lockdown::None));
        assert_eq!(h.rsdp(), None);
        assert!(!h.crash_hotplug());
        let fw = h.firmware_ranges(&[]);
        assert_eq!(fw.len(), 2);
        assert_eq!(
            fw[1],
            (
                Range {
                    start: 0x7f00_0000,
                    end: 0x7f10_0000
                },
                RegionKind::AcpiTables
            )
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
