//! The running system's memory map: `/proc/iomem` and `/sys/firmware/memmap`.
//!
//! `/proc/iomem` lines are `"%llx-%llx : name"` with an inclusive end, indented two spaces per
//! nesting level; non-root readers see every address as 0. kexec-tools reads the same file
//! (`kexec/arch/i386/crashdump-x86.c`): "System RAM" (also "System RAM (kmem)"), "Crash
//! kernel" (nested inside System RAM), "ACPI Tables", "ACPI Non-volatile Storage",
//! "Reserved"/"reserved". `/sys/firmware/memmap/N/{start,end,type}` is the firmware's E820
//! map as booted (`drivers/firmware/memmap.c`, inclusive `end`, same type names).
//!
//! Ranges here are half-open `[start, end)`.

use std::fmt;

/// A half-open physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// As `/proc/iomem` shows ranges: inclusive end.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end.saturating_sub(1))
    }
}

/// What a memory map entry is, as far as a crash loader cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Ram,
    CrashKernel,
    AcpiTables,
    AcpiNvs,
    Reserved,
    Other,
}

impl RegionKind {
    /// Classifies an iomem or firmware-memmap name.
    pub fn from_name(name: &str) -> Self {
        if name.starts_with("System RAM") {
            RegionKind::Ram
        } else if name == "Crash kernel" {
            RegionKind::CrashKernel
        } else if name == "ACPI Tables" {
            RegionKind::AcpiTables
        } else if name == "ACPI Non-volatile Storage" {
            RegionKind::AcpiNvs
        } else if name.eq_ignore_ascii_case("reserved") {
            RegionKind::Reserved
        } else {
            RegionKind::Other
        }
    }

    /// E820 type for the capture kernel's table (`arch/x86/include/uapi/asm/e820.h`), if passed.
    pub fn e820_type(self) -> Option<u32> {
        match self {
            RegionKind::Ram => Some(1),
            RegionKind::Reserved => Some(2),
            RegionKind::AcpiTables => Some(3),
            RegionKind::AcpiNvs => Some(4),
            RegionKind::CrashKernel | RegionKind::Other => None,
        }
    }
}

/// One line of `/proc/iomem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IomemEntry {
    pub range: Range,
    /// Nesting level (leading spaces / 2).
    pub depth: usize,
    pub name: String,
    pub kind: RegionKind,
}

/// Parses `/proc/iomem`; lines that do not parse are skipped.
pub fn parse_iomem(text: &str) -> Vec<IomemEntry> {
    text.lines()
        .filter_map(|line| {
            let indent = line.len() - line.trim_start().len();
            let (span, name) = line.trim_start().split_once(" : ")?;
            let (s, e) = span.split_once('-')?;
            let start = u64::from_str_radix(s, 16).ok()?;
            let end = u64::from_str_radix(e, 16).ok()?.checked_add(1)?;
            let name = name.trim_end().to_string();
            Some(IomemEntry {
                range: Range { start, end },
                depth: indent / 2,
                kind: RegionKind::from_name(&name),
                name,
            })
        })
        .collect()
}

/// True when the addresses were hidden (a non-root reader sees `00000000-00000000`).
pub fn iomem_addresses_hidden(entries: &[IomemEntry]) -> bool {
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.range.start == 0 && e.range.end == 1)
}

/// Sorts and merges overlapping or touching ranges.
pub fn normalize(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `ranges` minus every range in `holes`.
pub fn subtract(ranges: &[Range], holes: &[Range]) -> Vec<Range> {
    let holes = normalize(holes.to_vec());
    let mut out = Vec::new();
    for r in normalize(ranges.to_vec()) {
        let mut at = r.start;
        for h in holes.iter().filter(|h| h.start < r.end && h.end > r.start) {
            if h.start > at {
                out.push(Range {
                    start: at,
                    end: h.start,
                });
            }
            at = at.max(h.end);
        }
        if at < r.end {
            out.push(Range {
                start: at,
                end: r.end,
            });
        }
    }
    out
}

/// All ranges of one kind, merged (any nesting depth, as kexec-tools matches).
pub fn ranges_of(entries: &[IomemEntry], kind: RegionKind) -> Vec<Range> {
    normalize(
        entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.range)
            .collect(),
    )
}

/// The "Crash kernel" ranges, unmerged, in address order.
pub fn crash_ranges(entries: &[IomemEntry]) -> Vec<Range> {
    let mut v: Vec<Range> = entries
        .iter()
        .filter(|e| e.kind == RegionKind::CrashKernel)
        .map(|e| e.range)
        .collect();
    v.sort();
    v
}

/// RAM that belongs to the running kernel: System RAM minus every crash reservation.
/// These ranges are what a dump contains (the elfcorehdr's `PT_LOAD`s).
pub fn dumpable_ram(entries: &[IomemEntry]) -> Vec<Range> {
    subtract(&ranges_of(entries, RegionKind::Ram), &crash_ranges(entries))
}

/// The running kernel's image in physical memory: the "Kernel code" range and the end of
/// "Kernel data" (`arch/arm64/kernel/setup.c request_standard_resources()`: code from
/// `__pa_symbol(_stext)` (`_text` in later kernels) to `__init_begin`, data from `_sdata` to
/// `_end`). `None` unless both are there, data after code.
pub fn kernel_image(entries: &[IomemEntry]) -> Option<(Range, u64)> {
    let find = |n: &str| entries.iter().find(|e| e.name == n).map(|e| e.range);
    let code = find("Kernel code")?;
    let data = find("Kernel data")?;
    (data.end > code.start && code.start != 0).then_some((code, data.end))
}

/// Firmware-map ranges the capture kernel should see (ACPI, NVS, reserved), from top-level
/// iomem entries (nested "reserved" lines are claims inside RAM, not firmware ranges).
pub fn firmware_ranges_from_iomem(entries: &[IomemEntry]) -> Vec<(Range, RegionKind)> {
    entries
        .iter()
        .filter(|e| e.depth == 0)
        .filter(|e| {
            matches!(
                e.kind,
                RegionKind::AcpiTables | RegionKind::AcpiNvs | RegionKind::Reserved
            )
        })
        .map(|e| (e.range, e.kind))
        .collect()
}

/// One `/sys/firmware/memmap/N` entry from its `start`, `end` (inclusive) and `type` files.
pub fn parse_firmware_memmap_entry(
    start: &str,
    end: &str,
    typ: &str,
) -> Option<(Range, RegionKind)> {
    let start = crate::sysfs::parse_hex(start)?;
    let end = crate::sysfs::parse_hex(end)?.checked_add(1)?;
    (end > start).then(|| (Range { start, end }, RegionKind::from_name(typ.trim())))
}

#[cfg(test)]
pub(crate) mod fixtures {
    /// `/proc/iomem` of the Debian 12 test guest (Linux 6.1.0-56-cloud-amd64,
    /// `qemu-system-x86_64 -M pc -m 1G -smp 2`, `crashkernel=16M`), read as root: printed by
    /// the guest's /init in the manual bed described in docs/loader.md ("Testing").
    pub const IOMEM_QEMU_1G: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000a0000-000bffff : PCI Bus 0000:00
000c0000-000c05ff : Video ROM
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  11e00000-12c01ef1 : Kernel code
  12e00000-13626fff : Kernel rodata
  13800000-13a45dff : Kernel data
  140b1000-145fffff : Kernel bss
  3e000000-3effffff : Crash kernel
3ffe0000-3fffffff : Reserved
40000000-febfffff : PCI Bus 0000:00
fec00000-fec003ff : IOAPIC 0
fed00000-fed003ff : HPET 0
  fed00000-fed003ff : PNP0103:00
fee00000-fee00fff : Local APIC
fffc0000-ffffffff : Reserved
100000000-17fffffff : PCI Bus 0000:00
fd00000000-ffffffffff : Reserved
";
}

#[cfg(test)]
pub(crate) mod arm64_fixtures {
    /// A `/proc/iomem` in the layout of a Debian 12 arm64 guest (Linux 6.1, `qemu-system-aarch64
    /// -M virt -cpu max -m 2G -kernel vmlinuz`, DT boot, `crashkernel=64M`): top-level System
    /// RAM with the kernel's resources and the reservation nested in it, device resources
    /// named by their DT nodes. Written by hand from that layout (the addresses are the ones
    /// QEMU virt and Linux's arm64 setup use, the Kernel code/data sizes made up), not printed
    /// by a guest: the tests built on it check arithmetic on these numbers, not a real machine.
    pub const IOMEM_VIRT_2G: &str = "\
09000000-09000fff : pl011@9000000
  09000000-09000fff : 9000000.pl011 pl011@9000000
09010000-09010fff : pl031@9010000
  09010000-09010fff : rtc-pl031
0a003e00-0a003fff : a003e00.virtio_mmio virtio_mmio@a003e00
10000000-3efeffff : pcie@10000000
40000000-bfffffff : System RAM
  40210000-409cffff : Kernel code
  409d0000-40b2ffff : reserved
  40b30000-40dbffff : Kernel data
  48000000-4820ffff : reserved
  bc000000-bfffffff : Crash kernel
4010000000-401fffffff : PCI ECAM
8000000000-ffffffffff : pcie@10000000
";
}

#[cfg(test)]
mod tests {
    use super::fixtures::IOMEM_QEMU_1G;
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn parses_iomem_with_nesting() {
        let e = parse_iomem(IOMEM_QEMU_1G);
        assert_eq!(e.len(), 22);
        assert_eq!(
            e[1],
            IomemEntry {
                range: r(0x1000, 0x9fc00),
                depth: 0,
                name: "System RAM".into(),
                kind: RegionKind::Ram
            }
        );
        assert_eq!(e[12].kind, RegionKind::CrashKernel);
        assert_eq!(e[12].depth, 1);
        assert_eq!(e[21].range, r(0xfd_0000_0000, 0x100_0000_0000));
        assert_eq!(crash_ranges(&e), vec![r(0x3e00_0000, 0x3f00_0000)]);
        assert!(!iomem_addresses_hidden(&e));
        let hidden =
            parse_iomem("00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n");
        assert!(iomem_addresses_hidden(&hidden));
    }

    #[test]
    fn dumpable_ram_excludes_the_reservation_and_keeps_partial_pages() {
        let e = parse_iomem(IOMEM_QEMU_1G);
        assert_eq!(
            dumpable_ram(&e),
            vec![
                r(0x1000, 0x9fc00),
                r(0x10_0000, 0x3e00_0000),
                r(0x3f00_0000, 0x3ffe_0000)
            ]
        );
        let fw = firmware_ranges_from_iomem(&e);
        assert_eq!(fw[0], (r(0, 0x1000), RegionKind::Reserved));
        assert_eq!(fw.len(), 6);
        assert_eq!(
            fw[5],
            (r(0xfd_0000_0000, 0x100_0000_0000), RegionKind::Reserved)
        );
        assert!(fw.iter().all(|(_, k)| *k == RegionKind::Reserved));
    }

    #[test]
    fn arm64_iomem() {
        let e = parse_iomem(super::arm64_fixtures::IOMEM_VIRT_2G);
        assert_eq!(crash_ranges(&e), vec![r(0xbc00_0000, 0xc000_0000)]);
        assert_eq!(dumpable_ram(&e), vec![r(0x4000_0000, 0xbc00_0000)]);
        assert_eq!(
            kernel_image(&e),
            Some((r(0x4021_0000, 0x409d_0000), 0x40dc_0000))
        );
        assert_eq!(
            kernel_image(&parse_iomem(IOMEM_QEMU_1G)).map(|k| k.1),
            Some(0x13a4_5e00)
        );
        assert_eq!(
            kernel_image(&parse_iomem("40000000-bfffffff : System RAM\n")),
            None
        );
    }

    #[test]
    fn range_arithmetic() {
        assert_eq!(
            normalize(vec![r(5, 9), r(0, 3), r(3, 4), r(8, 12), r(20, 20)]),
            vec![r(0, 4), r(5, 12)]
        );
        assert_eq!(
            subtract(&[r(0, 100)], &[r(10, 20), r(15, 30), r(90, 200)]),
            vec![r(0, 10), r(30, 90)]
        );
        assert_eq!(subtract(&[r(0, 100)], &[r(0, 100)]), vec![]);
        assert_eq!(
            subtract(&[r(0, 10), r(20, 30)], &[]),
            vec![r(0, 10), r(20, 30)]
        );
    }

    #[test]
    fn firmware_memmap_entries() {
        assert_eq!(
            parse_firmware_memmap_entry("0x3ffe0000\n", "0x3fffffff\n", "Reserved\n"),
            Some((r(0x3ffe_0000, 0x4000_0000), RegionKind::Reserved))
        );
        assert_eq!(
            parse_firmware_memmap_entry("0x7f000000", "0x7f0fffff", "ACPI Non-volatile Storage")
                .unwrap()
                .1,
            RegionKind::AcpiNvs
        );
        assert_eq!(RegionKind::from_name("System RAM (kmem)"), RegionKind::Ram);
        assert_eq!(parse_firmware_memmap_entry("zz", "0x1", "Reserved"), None);
    }
}
