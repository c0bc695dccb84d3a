//! What the boot protocol told us, read once at entry and copied into our own memory.
//!
//! Two protocols reach the same 64-bit code: the Linux x86 64-bit boot protocol (kexec
//! loaders; RSI = `boot_params`) and PVH (QEMU `-kernel capture.elf`; EBX = `hvm_start_info`).
//! The parsers take a reader for physical memory so they run in host tests too; on the
//! target the reader is the loader's identity map, which covers these structures.

use super::bootparam::{self, zp, E820Entry, SetupHeader};
use super::pvh::{self, HvmMemmapEntry, HvmStartInfo};

/// Which boot protocol entered the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux x86 64-bit boot protocol (kexec_load / kexec_file_load).
    Linux64,
    /// Xen PVH (QEMU `-kernel` with an ELF image).
    Pvh,
}

/// One entry of the firmware/loader memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRegion {
    pub start: u64,
    pub end: u64,
    /// E820 type 1 / PVH type 1: RAM we may use.
    pub ram: bool,
}

pub const MAX_REGIONS: usize = 256;
pub const MAX_CMDLINE: usize = 4096;

#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: BootProtocol,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    regions: [MemRegion; MAX_REGIONS],
    nr_regions: usize,
    /// More entries were offered than [`MAX_REGIONS`].
    pub regions_truncated: bool,
    /// ACPI RSDP physical address, if the loader passed one.
    pub rsdp: Option<u64>,
}

/// Why the boot structures could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// `boot_params` does not carry the "HdrS" setup header.
    NotBootParams,
    /// `hvm_start_info.magic` is wrong.
    BadPvhMagic(u32),
    /// A pointer in the boot structures could not be read.
    Unreadable(u64),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::NotBootParams => write!(f, "boot_params has no HdrS setup header"),
            BootError::BadPvhMagic(m) => write!(f, "hvm_start_info magic {:#x} is wrong", m),
            BootError::Unreadable(a) => write!(f, "boot structure at {:#x} is unreadable", a),
        }
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from(le_u32(b, off)) | (u64::from(le_u32(b, off + 4)) << 32)
}

impl BootInfo {
    fn empty(protocol: BootProtocol) -> Self {
        BootInfo {
            protocol,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            regions: [MemRegion::default(); MAX_REGIONS],
            nr_regions: 0,
            regions_truncated: false,
            rsdp: None,
        }
    }

    /// The kernel command line (lossy: invalid UTF-8 ends it).
    pub fn cmdline(&self) -> &str {
        let b = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..self.nr_regions]
    }

    /// True when the memory map lists all of the machine's RAM (PVH). A kexec crash boot's
    /// E820 lists only the capture kernel's own memory, not the crashed kernel's RAM.
    pub fn map_lists_all_ram(&self) -> bool {
        self.protocol == BootProtocol::Pvh
    }

    fn push_region(&mut self, start: u64, size: u64, ram: bool) {
        if size == 0 {
            return;
        }
        if self.nr_regions == MAX_REGIONS {
            self.regions_truncated = true;
            return;
        }
        let end = start.saturating_add(size);
        self.regions[self.nr_regions] = MemRegion { start, end, ram };
        self.nr_regions += 1;
    }

    fn read_cmdline<R: FnMut(u64, &mut [u8]) -> bool>(
        &mut self,
        read: &mut R,
        addr: u64,
        max: usize,
    ) -> Result<(), BootError> {
        if addr == 0 {
            return Ok(());
        }
        let max = max.min(MAX_CMDLINE - 1);
        // Read in small pieces so a short command line near the end of RAM is fine.
        let mut len = 0;
        while len < max {
            let n = (max - len).min(64);
            let mut piece = [0u8; 64];
            if !read(addr + len as u64, &mut piece[..n]) {
                return Err(BootError::Unreadable(addr + len as u64));
            }
            for &c in &piece[..n] {
                if c == 0 {
                    self.cmdline_len = len;
                    return Ok(());
                }
                self.cmdline[len] = c;
                len += 1;
            }
        }
        self.cmdline_len = len;
        Ok(())
    }

    /// Parse a Linux `boot_params` ("zero page") at `addr`.
    pub fn from_boot_params<R: FnMut(u64, &mut [u8]) -> bool>(
        mut read: R,
        addr: u64,
    ) -> Result<Self, BootError> {
        let mut zp_bytes = [0u8; zp::SIZE];
        if !read(addr, &mut zp_bytes) {
            return Err(BootError::Unreadable(addr));
        }
        let hdr_bytes: &[u8; 123] = zp_bytes
            [bootparam::SETUP_HEADER_OFFSET..bootparam::SETUP_HEADER_OFFSET + 123]
            .try_into()
            .map_err(|_| BootError::NotBootParams)?;
        let hdr = SetupHeader::from_bytes(hdr_bytes);
        if { hdr.header } != bootparam::HDRS_MAGIC {
            return Err(BootError::NotBootParams);
        }
        let mut info = BootInfo::empty(BootProtocol::Linux64);
        let cmd = u64::from(le_u32(&zp_bytes, zp::CMD_LINE_PTR))
            | (u64::from(le_u32(&zp_bytes, zp::EXT_CMD_LINE_PTR)) << 32);
        let cmd_max = match le_u32(&zp_bytes, zp::CMDLINE_SIZE) {
            0 => 255,
            n => n as usize,
        };
        info.read_cmdline(&mut read, cmd, cmd_max)?;
        let rsdp = le_u64(&zp_bytes, zp::ACPI_RSDP_ADDR);
        info.rsdp = (rsdp != 0).then_some(rsdp);

        let n = usize::from(zp_bytes[zp::E820_ENTRIES]).min(zp::E820_MAX_ENTRIES_ZEROPAGE);
        for i in 0..n {
            let off = zp::E820_TABLE + i * core::mem::size_of::<E820Entry>();
            let (a, s, t) = (le_u64(&zp_bytes, off), le_u64(&zp_bytes, off + 8), le_u32(&zp_bytes, off + 16));
            info.push_region(a, s, t == bootparam::E820_RAM);
        }
        // More than 128 entries continue in SETUP_E820_EXT setup_data nodes.
        let mut next = le_u64(&zp_bytes, zp::SETUP_DATA);
        let mut hops = 0;
        while next != 0 && hops < 64 {
            hops += 1;
            let mut h = [0u8; bootparam::SETUP_DATA_HEADER];
            if !read(next, &mut h) {
                return Err(BootError::Unreadable(next));
            }
            let (typ, len) = (le_u32(&h, 8), le_u32(&h, 12) as usize);
            if typ == bootparam::SETUP_E820_EXT {
                let count = (len / 20).min(MAX_REGIONS);
                for i in 0..count {
                    let mut e = [0u8; 20];
                    let at = next + (bootparam::SETUP_DATA_HEADER + i * 20) as u64;
                    if !read(at, &mut e) {
                        return Err(BootError::Unreadable(at));
                    }
                    info.push_region(le_u64(&e, 0), le_u64(&e, 8), le_u32(&e, 16) == bootparam::E820_RAM);
                }
            }
            next = le_u64(&h, 0);
        }
        Ok(info)
    }

    /// Parse a PVH `hvm_start_info` at `addr`.
    pub fn from_pvh<R: FnMut(u64, &mut [u8]) -> bool>(mut read: R, addr: u64) -> Result<Self, BootError> {
        let mut b = [0u8; core::mem::size_of::<HvmStartInfo>()];
        if !read(addr, &mut b) {
            return Err(BootError::Unreadable(addr));
        }
        let magic = le_u32(&b, 0);
        if magic != pvh::HVM_START_MAGIC {
            return Err(BootError::BadPvhMagic(magic));
        }
        let version = le_u32(&b, 4);
        let mut info = BootInfo::empty(BootProtocol::Pvh);
        info.read_cmdline(&mut read, le_u64(&b, 24), MAX_CMDLINE - 1)?;
        let rsdp = le_u64(&b, 32);
        info.rsdp = (rsdp != 0).then_some(rsdp);
        if version >= 1 {
            let (map, n) = (le_u64(&b, 40), le_u32(&b, 48) as usize);
            let esz = core::mem::size_of::<HvmMemmapEntry>();
            for i in 0..n.min(MAX_REGIONS + 1) {
                let mut e = [0u8; 24];
                let at = map + (i * esz) as u64;
                if !read(at, &mut e) {
                    return Err(BootError::Unreadable(at));
                }
                info.push_region(le_u64(&e, 0), le_u64(&e, 8), le_u32(&e, 16) == pvh::HVM_MEMMAP_TYPE_RAM);
            }
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(mem: &[(u64, Vec<u8>)]) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
        move |addr, buf| {
            for (base, bytes) in mem {
                if addr >= *base && addr + buf.len() as u64 <= base + bytes.len() as u64 {
                    let o = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[o..o + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    #[test]
    fn boot_params_cmdline_and_e820() {
        let mut zpage = vec![0u8; 4096];
        let hdr = SetupHeader::lifeboat(4, 4096, 0x40_0000).to_bytes();
        zpage[0x1F1..0x1F1 + 123].copy_from_slice(&hdr);
        zpage[zp::CMD_LINE_PTR..zp::CMD_LINE_PTR + 4].copy_from_slice(&0x2000u32.to_le_bytes());
        zpage[zp::EXT_CMD_LINE_PTR..zp::EXT_CMD_LINE_PTR + 4].copy_from_slice(&1u32.to_le_bytes());
        zpage[zp::E820_ENTRIES] = 2;
        let put = |z: &mut Vec<u8>, i: usize, a: u64, s: u64, t: u32| {
            let o = zp::E820_TABLE + i * 20;
            z[o..o + 8].copy_from_slice(&a.to_le_bytes());
            z[o + 8..o + 16].copy_from_slice(&s.to_le_bytes());
            z[o + 16..o + 20].copy_from_slice(&t.to_le_bytes());
        };
        put(&mut zpage, 0, 0, 0x9fc00, 1);
        put(&mut zpage, 1, 0x3000_0000, 0x1000_0000, 2);
        let mut cmd = b"elfcorehdr=0x3f000000 lifeboat.action=halt".to_vec();
        cmd.resize(4096, 0);
        let mem = vec![(0x1000u64, zpage), (0x1_0000_2000u64, cmd)];
        let info = BootInfo::from_boot_params(reader(&mem), 0x1000).unwrap();
        assert_eq!(info.cmdline(), "elfcorehdr=0x3f000000 lifeboat.action=halt");
        assert_eq!(info.regions().len(), 2);
        assert!(info.regions()[0].ram && !info.regions()[1].ram);
        assert_eq!(info.regions()[1].end, 0x4000_0000);
        assert!(!info.map_lists_all_ram());
    }

    #[test]
    fn boot_params_without_hdrs_is_rejected() {
        let mem = vec![(0u64, vec![0u8; 4096])];
        assert_eq!(BootInfo::from_boot_params(reader(&mem), 0).unwrap_err(), BootError::NotBootParams);
    }

    #[test]
    fn pvh_start_info() {
        let mut si = vec![0u8; 56];
        si[0..4].copy_from_slice(&pvh::HVM_START_MAGIC.to_le_bytes());
        si[4..8].copy_from_slice(&1u32.to_le_bytes());
        si[24..32].copy_from_slice(&0x3000u64.to_le_bytes());
        si[40..48].copy_from_slice(&0x4000u64.to_le_bytes());
        si[48..52].copy_from_slice(&1u32.to_le_bytes());
        let mut map = vec![0u8; 24];
        map[8..16].copy_from_slice(&0x2000_0000u64.to_le_bytes());
        map[16..20].copy_from_slice(&1u32.to_le_bytes());
        let mem = vec![(0x1000u64, si), (0x3000u64, { let mut c = b"a b".to_vec(); c.resize(4096, 0); c }), (0x4000u64, map)];
        let info = BootInfo::from_pvh(reader(&mem), 0x1000).unwrap();
        assert_eq!(info.cmdline(), "a b");
        assert_eq!(info.regions(), &[MemRegion { start: 0, end: 0x2000_0000, ram: true }]);
        assert!(info.map_lists_all_ram());
    }
}
