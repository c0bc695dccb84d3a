//! The `boot_params` ("zero page") segment for `kexec_load`: 4 KiB `struct boot_params`
//! followed by the command line.
//!
//! Offsets from Linux `Documentation/arch/x86/zero-page.rst` and `boot.rst`
//! (`arch/x86/include/uapi/asm/bootparam.h`); the same ones the capture kernel reads
//! (`arch/src/x86_64/bootparam.rs`). What is filled, as both kexec loaders do
//! (`arch/x86/kernel/kexec-bzimage64.c`, kexec-tools `x86-linux-setup.c`):
//! - the image's setup header, bytes `0x1F1 .. 0x202 + image[0x201]`;
//! - `type_of_loader` 0xD0 (kexec), `cmd_line_ptr` (+ `ext_cmd_line_ptr` for the high half);
//! - the E820 table: the capture kernel's usable memory as RAM, plus the running system's
//!   ACPI, NVS and reserved ranges (at most 128 entries in the zero page);
//! - `acpi_rsdp_addr`, as the running kernel got it.

use crate::memmap::{Range, RegionKind};
use std::fmt;

// `struct boot_params` offsets: one definition, shared with the capture kernel's parser.
use lifeboat_arch::x86_64::bootparam::zp::{
    ACPI_RSDP_ADDR, CMD_LINE_PTR, E820_ENTRIES, E820_ENTRY_SIZE, E820_MAX_ENTRIES_ZEROPAGE as E820_MAX,
    E820_TABLE, EXT_CMD_LINE_PTR, SETUP_HEADER_END, TYPE_OF_LOADER,
};
use lifeboat_arch::x86_64::bootparam::SETUP_HEADER_OFFSET as SETUP_HEADER;
/// `type_of_loader` for kexec.
pub const LOADER_KEXEC: u8 = 0xD0;

/// One E820 entry (`struct boot_e820_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub range: Range,
    /// 1 RAM, 2 reserved, 3 ACPI, 4 NVS.
    pub typ: u32,
}

/// The capture kernel's E820 table: `usable` as RAM, then the firmware ranges it should know
/// about (ACPI, NVS, reserved), sorted. Reserved ranges are dropped first if there are more
/// than 128 entries; the second item counts the dropped ones.
pub fn e820_table(usable: &[Range], firmware: &[(Range, RegionKind)]) -> (Vec<E820Entry>, usize) {
    let mut v: Vec<E820Entry> = usable
        .iter()
        .map(|&range| E820Entry { range, typ: 1 })
        .collect();
    let mut reserved = Vec::new();
    for &(range, kind) in firmware {
        match kind.e820_type() {
            Some(2) => reserved.push(E820Entry { range, typ: 2 }),
            Some(typ) if typ != 1 => v.push(E820Entry { range, typ }),
            _ => {}
        }
    }
    let room = E820_MAX.saturating_sub(v.len());
    let dropped = reserved.len().saturating_sub(room) + v.len().saturating_sub(E820_MAX);
    reserved.truncate(room);
    v.extend(reserved);
    v.truncate(E820_MAX);
    v.sort_by_key(|e| e.range);
    (v, dropped)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootParamsError {
    /// The command line is longer than the image's `cmdline_size`.
    CmdlineTooLong { len: usize, max: u32 },
    /// The command line contains a NUL byte.
    CmdlineNul,
}

impl fmt::Display for BootParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootParamsError::CmdlineTooLong { len, max } => {
                write!(
                    f,
                    "the capture command line is {len} bytes, the image accepts at most {max}"
                )
            }
            BootParamsError::CmdlineNul => {
                write!(f, "the capture command line contains a NUL byte")
            }
        }
    }
}

/// The boot_params segment: zero page at `addr`, command line at `addr + 4096`.
pub fn build(
    setup_header: &[u8],
    cmdline_size: u32,
    addr: u64,
    cmdline: &str,
    e820: &[E820Entry],
    rsdp: Option<u64>,
) -> Result<Vec<u8>, BootParamsError> {
    if cmdline.len() > cmdline_size as usize {
        return Err(BootParamsError::CmdlineTooLong {
            len: cmdline.len(),
            max: cmdline_size,
        });
    }
    if cmdline.contains('\0') {
        return Err(BootParamsError::CmdlineNul);
    }
    let mut b = vec![0u8; 4096];
    // The header may not run into edd_mbr_sig_buffer (0x290) and the E820 table after it.
    let hdr_len = setup_header.len().min(SETUP_HEADER_END - SETUP_HEADER);
    b[SETUP_HEADER..SETUP_HEADER + hdr_len].copy_from_slice(&setup_header[..hdr_len]);
    b[TYPE_OF_LOADER] = LOADER_KEXEC;
    let cmd = addr + 4096;
    b[CMD_LINE_PTR..CMD_LINE_PTR + 4].copy_from_slice(&(cmd as u32).to_le_bytes());
    b[EXT_CMD_LINE_PTR..EXT_CMD_LINE_PTR + 4].copy_from_slice(&((cmd >> 32) as u32).to_le_bytes());
    if let Some(rsdp) = rsdp {
        b[ACPI_RSDP_ADDR..ACPI_RSDP_ADDR + 8].copy_from_slice(&rsdp.to_le_bytes());
    }
    let n = e820.len().min(E820_MAX);
    b[E820_ENTRIES] = n as u8;
    for (i, e) in e820[..n].iter().enumerate() {
        let o = E820_TABLE + i * E820_ENTRY_SIZE;
        b[o..o + 8].copy_from_slice(&e.range.start.to_le_bytes());
        b[o + 8..o + 16].copy_from_slice(&e.range.len().to_le_bytes());
        b[o + 16..o + 20].copy_from_slice(&e.typ.to_le_bytes());
    }
    b.extend_from_slice(cmdline.as_bytes());
    b.push(0);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::{testimage::lifeboat_bzimage, LifeboatImage};
    use lifeboat_arch::x86_64::bootinfo::BootInfo;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn e820_table_orders_and_limits() {
        let (t, dropped) = e820_table(
            &[r(0xd00_1000, 0xe00_0000)],
            &[
                (r(0x3ffe_0000, 0x4000_0000), RegionKind::Reserved),
                (r(0x7f00_0000, 0x7f10_0000), RegionKind::AcpiTables),
                (r(0x7f10_0000, 0x7f20_0000), RegionKind::AcpiNvs),
                (r(0x1000, 0x9fc00), RegionKind::Ram),
            ],
        );
        assert_eq!(dropped, 0);
        assert_eq!(
            t.iter().map(|e| e.typ).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let many: Vec<(Range, RegionKind)> = (0..200u64)
            .map(|i| (r(i << 12, (i << 12) + 0x800), RegionKind::Reserved))
            .collect();
        let (t, dropped) = e820_table(&[r(0xd00_0000, 0xe00_0000)], &many);
        assert_eq!((t.len(), dropped), (128, 73));
        assert!(t.iter().any(|e| e.typ == 1));
    }

    /// The capture kernel's own boot_params parser reads back what was written.
    #[test]
    fn capture_kernel_reads_it_back() {
        let img = LifeboatImage::parse(&lifeboat_bzimage()).unwrap();
        let addr = 0x1_0d00_1000u64; // above 4 GiB: ext_cmd_line_ptr is needed
        let cmdline = "elfcorehdr=0x10d000000 lifeboat.action=halt";
        let (e820, _) = e820_table(
            &[r(0x1_0d00_0000, 0x1_0e00_0000)],
            &[(r(0x3ffe_0000, 0x4000_0000), RegionKind::Reserved)],
        );
        let b = build(
            &img.setup_header,
            img.cmdline_size,
            addr,
            cmdline,
            &e820,
            Some(0xf5a40),
        )
        .unwrap();
        assert_eq!(b.len(), 4096 + cmdline.len() + 1);
        assert_eq!(b[0x210], 0xD0);
        assert_eq!(&b[0x202..0x206], b"HdrS");
        // Memory as the capture kernel sees it: the segment, then zeros (it reads the command
        // line in 64-byte pieces).
        let mut mem = b.clone();
        mem.resize(b.len() + 4096, 0);
        let read = |a: u64, buf: &mut [u8]| {
            let Some(off) = a.checked_sub(addr).map(|o| o as usize) else {
                return false;
            };
            match mem.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        };
        let info = BootInfo::from_boot_params(read, addr).unwrap();
        assert_eq!(info.cmdline(), cmdline);
        assert_eq!(info.rsdp, Some(0xf5a40));
        let regions = info.regions();
        assert_eq!(regions.len(), 2);
        assert!(!regions[0].ram && regions[0].end == 0x4000_0000);
        assert!(
            regions[1].ram && regions[1].start == 0x1_0d00_0000 && regions[1].end == 0x1_0e00_0000
        );
    }

    #[test]
    fn command_line_limits() {
        let img = LifeboatImage::parse(&lifeboat_bzimage()).unwrap();
        let long = "x".repeat(4096);
        assert_eq!(
            build(&img.setup_header, img.cmdline_size, 0, &long, &[], None).unwrap_err(),
            BootParamsError::CmdlineTooLong {
                len: 4096,
                max: 4095
            }
        );
        assert_eq!(
            build(&img.setup_header, 4095, 0, "a\0b", &[], None).unwrap_err(),
            BootParamsError::CmdlineNul
        );
    }
}
