//! The crashed kernel's virtual addresses, translated to physical ones.
//!
//! x86_64 (project reference §6.2; the same rules as makedumpfile `arch/x86_64.c
//! vtop4_x86_64()`): addresses in the kernel image mapping `[__START_KERNEL_map,
//! __START_KERNEL_map + KERNEL_IMAGE_SIZE)` are `va - __START_KERNEL_map + phys_base`; all
//! others (direct map, vmalloc, vmemmap, modules) are found by walking the crashed kernel's
//! own page tables from `SYMBOL(init_top_pgt)`, 4- or 5-level per
//! `NUMBER(pgtable_l5_enabled)`, with 1 GiB and 2 MiB pages, the NX and flag bits and
//! `NUMBER(sme_mask)` (the AMD SME encryption bit) masked off the entries.
//!
//! Page tables are old memory: every entry is checked (present bit, huge-page bit only where
//! the architecture allows one), and a failed read is an error, never a fault.

use core::cell::Cell;
use core::fmt;

use crate::elfcore::{EM_AARCH64, EM_X86_64};
use crate::phys::{PhysError, PhysRead};
use crate::vmcoreinfo::VmcoreInfo;

/// x86_64 `__START_KERNEL_map`.
pub const X86_64_START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// x86_64 `KERNEL_IMAGE_SIZE` with KASLR, used when VMCOREINFO does not say.
const X86_64_DEFAULT_KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// Physical address bits of a page-table entry (`PTE_PFN_MASK`, bits 12..51).
const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PTE_PRESENT: u64 = 1 << 0;
const PTE_PSE: u64 = 1 << 7;
const PAGE_SIZE: u64 = 4096;

/// Why a virtual address could not be translated or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtopError {
    /// No translation for this architecture (`e_machine`) yet; aarch64 is one.
    Unsupported { machine: u16 },
    /// VMCOREINFO lacks a key the translation needs (the key is named).
    MissingInfo(&'static str),
    /// Not a canonical address for the paging mode.
    NonCanonical { va: u64 },
    /// The page-table entry at `level` is not present.
    NotMapped { va: u64, level: &'static str },
    /// The page-table entry at `level` is malformed (huge page where none can be).
    BadEntry { va: u64, level: &'static str, entry: u64 },
    /// Physical memory at `pa` (for `va`) is not in the dump or not readable.
    Unreadable { va: u64, pa: u64 },
    /// `va + len` overflows.
    Overflow { va: u64, len: u64 },
    /// A VMCOREINFO symbol that must be in the kernel image is not.
    BadSymbol { name: &'static str, va: u64 },
}

impl fmt::Display for VtopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VtopError::Unsupported { machine } => write!(
                f,
                "virtual address translation for ELF machine {} is not implemented yet",
                machine
            ),
            VtopError::MissingInfo(key) => {
                write!(f, "VMCOREINFO has no {}, needed to translate addresses", key)
            }
            VtopError::NonCanonical { va } => write!(f, "{:#x} is not a canonical address", va),
            VtopError::NotMapped { va, level } => {
                write!(f, "{:#x} is not mapped (no {} entry)", va, level)
            }
            VtopError::BadEntry { va, level, entry } => {
                write!(f, "{:#x}: malformed {} entry {:#x}", va, level, entry)
            }
            VtopError::Unreadable { va, pa } => {
                write!(f, "{:#x} (physical {:#x}) is not in the dump or cannot be read", va, pa)
            }
            VtopError::Overflow { va, len } => {
                write!(f, "range {:#x}+{:#x} wraps around the address space", va, len)
            }
            VtopError::BadSymbol { name, va } => {
                write!(f, "VMCOREINFO SYMBOL({}) = {:#x} is not a kernel-image address", name, va)
            }
        }
    }
}

/// The crashed kernel's virtual address space, read through its page tables.
pub struct KernelVm<'a> {
    mem: &'a dyn PhysRead,
    phys_base: u64,
    image_end: u64,
    /// Physical address of the top-level page table.
    top: u64,
    levels: u32,
    /// Bits cleared from every entry before taking its address.
    entry_mask: u64,
    /// The last translation: (virtual page, physical page).
    last: Cell<Option<(u64, u64)>>,
}

impl<'a> KernelVm<'a> {
    /// x86_64: kernel-image addresses (`>= 0xffffffff80000000`, below
    /// `+ NUMBER(KERNEL_IMAGE_SIZE)`, 1 GiB if not given): `pa = va - 0xffffffff80000000 +
    /// NUMBER(phys_base)`; everything else by walking the crashed kernel's page tables from
    /// `SYMBOL(init_top_pgt)` (its physical address by the kernel-image rule), 4-level or
    /// 5-level per `NUMBER(pgtable_l5_enabled)`, 1 GiB/2 MiB huge pages, masking NX/flags
    /// and `NUMBER(sme_mask)`.
    ///
    /// aarch64 returns [`VtopError::Unsupported`] for now (a later change adds it).
    pub fn new(info: &VmcoreInfo, mem: &'a dyn PhysRead, machine: u16) -> Result<Self, VtopError> {
        match machine {
            EM_X86_64 => {}
            EM_AARCH64 => return Err(VtopError::Unsupported { machine }),
            _ => return Err(VtopError::Unsupported { machine }),
        }
        let phys_base =
            info.number("phys_base").ok_or(VtopError::MissingInfo("NUMBER(phys_base)"))? as u64;
        let top_va =
            info.symbol("init_top_pgt").ok_or(VtopError::MissingInfo("SYMBOL(init_top_pgt)"))?;
        let levels = match info.number("pgtable_l5_enabled") {
            Some(1) => 5,
            _ => 4,
        };
        let sme_mask = info.number("sme_mask").unwrap_or(0) as u64;
        let image_size = info
            .number("KERNEL_IMAGE_SIZE")
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0 && n <= 1 << 31)
            .unwrap_or(X86_64_DEFAULT_KERNEL_IMAGE_SIZE);
        let image_end = X86_64_START_KERNEL_MAP.saturating_add(image_size - 1);
        let mut vm = Self {
            mem,
            phys_base,
            image_end,
            top: 0,
            levels,
            entry_mask: PTE_ADDR_MASK & !sme_mask,
            last: Cell::new(None),
        };
        if !vm.in_image(top_va) {
            return Err(VtopError::BadSymbol { name: "init_top_pgt", va: top_va });
        }
        vm.top = vm.image_pa(top_va) & !(PAGE_SIZE - 1);
        Ok(vm)
    }

    fn in_image(&self, va: u64) -> bool {
        (X86_64_START_KERNEL_MAP..=self.image_end).contains(&va)
    }

    fn image_pa(&self, va: u64) -> u64 {
        (va - X86_64_START_KERNEL_MAP).wrapping_add(self.phys_base)
    }

    /// The physical address of `va`.
    pub fn translate(&self, va: u64) -> Result<u64, VtopError> {
        if self.in_image(va) {
            return Ok(self.image_pa(va));
        }
        let page = va & !(PAGE_SIZE - 1);
        if let Some((vp, pp)) = self.last.get() {
            if vp == page {
                return Ok(pp | (va & (PAGE_SIZE - 1)));
            }
        }
        let pa = self.walk(va)?;
        self.last.set(Some((page, pa & !(PAGE_SIZE - 1))));
        Ok(pa)
    }

    fn walk(&self, va: u64) -> Result<u64, VtopError> {
        // Canonical: bits above the top level's index bits all equal the highest one.
        let bits = if self.levels == 5 { 57 } else { 48 };
        let high = (va as i64) >> (bits - 1);
        if high != 0 && high != -1 {
            return Err(VtopError::NonCanonical { va });
        }
        const NAMES: [&str; 5] = ["PTE", "PMD", "PUD", "P4D", "PGD"];
        let mut table = self.top;
        let mut level = self.levels; // 5 = PML5, 4 = PML4, 3 = PUD, 2 = PMD, 1 = PTE
        loop {
            let name = if level == self.levels { "PGD" } else { NAMES[level as usize - 1] };
            let shift = 12 + 9 * (level - 1);
            let index = (va >> shift) & 0x1ff;
            let mut e = [0u8; 8];
            let at = table + index * 8;
            self.mem
                .read(at, &mut e)
                .map_err(|PhysError::Unreadable { .. }| VtopError::Unreadable { va, pa: at })?;
            let entry = u64::from_le_bytes(e);
            if entry & PTE_PRESENT == 0 {
                return Err(VtopError::NotMapped { va, level: name });
            }
            let addr = entry & self.entry_mask;
            if level == 1 {
                return Ok(addr | (va & 0xfff));
            }
            if entry & PTE_PSE != 0 {
                // Huge pages exist at the PUD (1 GiB) and PMD (2 MiB) levels only.
                if level > 3 {
                    return Err(VtopError::BadEntry { va, level: name, entry });
                }
                let size_mask = (1u64 << shift) - 1;
                return Ok((addr & !size_mask) | (va & size_mask));
            }
            table = addr;
            level -= 1;
        }
    }

    /// Reads `buf.len()` bytes at `va`; the range may cross pages.
    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), VtopError> {
        let len = buf.len() as u64;
        if va.checked_add(len).is_none() {
            return Err(VtopError::Overflow { va, len });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let a = va + done as u64;
            let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(buf.len() - done);
            let pa = self.translate(a)?;
            self.mem
                .read(pa, &mut buf[done..done + n])
                .map_err(|PhysError::Unreadable { .. }| VtopError::Unreadable { va: a, pa })?;
            done += n;
        }
        Ok(())
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, VtopError> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, VtopError> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u16(&self, va: u64) -> Result<u16, VtopError> {
        let mut b = [0u8; 2];
        self.read(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    use crate::phys::{PhysError, PhysRead};

    /// Sparse physical memory in 4 KiB pages; pages never written are unreadable.
    #[derive(Default)]
    pub struct PageMem {
        pub pages: BTreeMap<u64, Vec<u8>>,
    }

    impl PageMem {
        pub fn write(&mut self, pa: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                let a = pa + i as u64;
                self.pages.entry(a >> 12).or_insert_with(|| vec![0; 4096])[(a & 0xfff) as usize] =
                    b;
            }
        }
        pub fn write_u64(&mut self, pa: u64, v: u64) {
            self.write(pa, &v.to_le_bytes());
        }
    }

    impl PhysRead for PageMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
            let err = PhysError::Unreadable { addr, len: buf.len() as u64 };
            addr.checked_add(buf.len() as u64).ok_or(err)?;
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                *b = self.pages.get(&(a >> 12)).ok_or(err)?[(a & 0xfff) as usize];
            }
            Ok(())
        }
    }

    /// Builds 4-level x86_64 page tables in a [`PageMem`], allocating table pages from
    /// `next_table` upwards.
    pub struct PageTables {
        pub top: u64,
        pub next_table: u64,
        pub levels: u32,
        /// Extra bits set in every table entry (e.g. an SME mask, NX).
        pub extra: u64,
    }

    impl PageTables {
        pub fn new(mem: &mut PageMem, top: u64, levels: u32, extra: u64) -> Self {
            mem.write(top, &[0u8; 4096]);
            Self { top, next_table: top + 0x1000, levels, extra }
        }

        /// Maps `va` to `pa` with a page of `1 << shift` bytes (12, 21 or 30).
        pub fn map(&mut self, mem: &mut PageMem, va: u64, pa: u64, shift: u32) {
            let mut table = self.top;
            let mut level = self.levels;
            loop {
                let s = 12 + 9 * (level - 1);
                let slot = table + ((va >> s) & 0x1ff) * 8;
                if s == shift {
                    let pse = if shift > 12 { 1 << 7 } else { 0 };
                    mem.write_u64(slot, pa | 0x63 | pse | self.extra);
                    return;
                }
                let mut e = [0u8; 8];
                mem.read(slot, &mut e).unwrap();
                let e = u64::from_le_bytes(e);
                table = if e & 1 != 0 {
                    e & 0x000f_ffff_ffff_f000 & !self.extra
                } else {
                    let t = self.next_table;
                    self.next_table += 0x1000;
                    mem.write(t, &[0u8; 4096]);
                    mem.write_u64(slot, t | 0x63 | self.extra);
                    t
                };
                level -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use alloc::format;

    const PHYS_BASE: i64 = -0x1dc0_0000;
    const TOP_PA: u64 = 0x0700_0000;
    /// Where init_top_pgt is in the (KASLR-shifted) image.
    fn top_va() -> u64 {
        (TOP_PA as i64 - PHYS_BASE) as u64 + X86_64_START_KERNEL_MAP
    }

    fn info(l5: bool, sme: u64) -> alloc::string::String {
        format!(
            "OSRELEASE=6.1.0\nNUMBER(phys_base)={}\nSYMBOL(init_top_pgt)={:x}\n\
NUMBER(pgtable_l5_enabled)={}\nNUMBER(KERNEL_IMAGE_SIZE)=1073741824\nNUMBER(sme_mask)={}\n",
            PHYS_BASE,
            top_va(),
            u8::from(l5),
            sme
        )
    }

    #[test]
    fn four_level_with_huge_pages_and_masks() {
        // An SME C-bit (bit 47) and NX (bit 63) set in every entry.
        let sme = 1u64 << 47;
        let mut mem = PageMem::default();
        let mut pt = PageTables::new(&mut mem, TOP_PA, 4, sme | 1 << 63);
        let direct = 0xffff_8880_0000_0000u64;
        pt.map(&mut mem, direct + 0x4000_0000, 0x4000_0000, 30); // 1 GiB
        pt.map(&mut mem, 0xffff_c900_0020_0000, 0x0060_0000, 21); // 2 MiB
        pt.map(&mut mem, 0xffff_c900_0000_1000, 0x0123_4000, 12); // 4 KiB
        pt.map(&mut mem, 0xffff_c900_0000_2000, 0x0055_5000, 12);
        pt.map(&mut mem, 0xffff_ffff_c000_0000, 0x0077_7000, 12); // a module address
        let text = info(false, sme);
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        assert_eq!(vm.translate(direct + 0x4123_4567).unwrap(), 0x4123_4567);
        assert_eq!(vm.translate(0xffff_c900_0023_4567).unwrap(), 0x0063_4567);
        assert_eq!(vm.translate(0xffff_c900_0000_1abc).unwrap(), 0x0123_4abc);
        assert_eq!(vm.translate(0xffff_ffff_c000_0010).unwrap(), 0x0077_7010);
        // The kernel image: by the phys_base rule, no page tables needed.
        assert_eq!(vm.translate(top_va() + 8).unwrap(), TOP_PA + 8);
        assert_eq!(vm.translate(X86_64_START_KERNEL_MAP + 0x3000_0000).unwrap(), 0x1240_0000);
        // Unmapped, non-canonical.
        assert!(matches!(
            vm.translate(0xffff_c900_0040_0000),
            Err(VtopError::NotMapped { level: "PMD", .. })
        ));
        assert!(matches!(vm.translate(0x0000_8000_0000_0000), Err(VtopError::NonCanonical { .. })));
        assert!(matches!(vm.translate(0x1000), Err(VtopError::NotMapped { level: "PGD", .. })));
        // Reads crossing from one 4 KiB page into the next, different, physical page.
        mem.write(0x0123_4ffc, &[1, 2, 3, 4]);
        mem.write(0x0055_5000, &[5, 6, 7, 8]);
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        let mut b = [0u8; 8];
        vm.read(0xffff_c900_0000_1ffc, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(vm.read_u32(0xffff_c900_0000_1ffc).unwrap(), 0x0403_0201);
        assert_eq!(vm.read_u16(0xffff_c900_0000_2000).unwrap(), 0x0605);
        assert_eq!(vm.read_u64(0xffff_c900_0000_1ffc).unwrap(), 0x0807_0605_0403_0201);
        // Mapped, but the physical page is not in memory.
        assert!(matches!(
            vm.read(direct + 0x4000_0000, &mut b),
            Err(VtopError::Unreadable { pa: 0x4000_0000, .. })
        ));
        assert!(matches!(vm.read(u64::MAX - 2, &mut b), Err(VtopError::Overflow { .. })));
    }

    #[test]
    fn five_level() {
        let mut mem = PageMem::default();
        let mut pt = PageTables::new(&mut mem, TOP_PA, 5, 0);
        let va = 0xff11_0000_0000_1000u64; // 5-level direct map region
        pt.map(&mut mem, va, 0x0abc_d000, 12);
        let text = info(true, 0);
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        assert_eq!(vm.translate(va + 5).unwrap(), 0x0abc_d005);
        // With 4-level tables, this address would not be canonical.
        let text4 = info(false, 0);
        let vi4 = VmcoreInfo::new(text4.as_bytes());
        let vm4 = KernelVm::new(&vi4, &mem, EM_X86_64).unwrap();
        assert!(matches!(vm4.translate(va), Err(VtopError::NonCanonical { .. })));
    }

    #[test]
    fn garbage_tables_and_missing_info() {
        let mut mem = PageMem::default();
        // A PSE bit at the PGD level, and an entry pointing at unreadable memory.
        mem.write(TOP_PA, &[0u8; 4096]);
        mem.write_u64(TOP_PA + 0x111 * 8, 0x0800_0000 | 0x83);
        mem.write_u64(TOP_PA + 0x112 * 8, 0x7_0000_0000 | 0x3);
        let text = info(false, 0);
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        let va1 = 0xffff_0000_0000_0000 | (0x111u64 << 39);
        let va2 = 0xffff_0000_0000_0000 | (0x112u64 << 39);
        assert!(matches!(vm.translate(va1), Err(VtopError::BadEntry { level: "PGD", .. })));
        assert!(matches!(vm.translate(va2), Err(VtopError::Unreadable { .. })));
        assert_eq!(
            KernelVm::new(&vi, &mem, EM_AARCH64).err(),
            Some(VtopError::Unsupported { machine: EM_AARCH64 })
        );
        let vi = VmcoreInfo::new(b"NUMBER(phys_base)=0\n");
        assert_eq!(
            KernelVm::new(&vi, &mem, EM_X86_64).err(),
            Some(VtopError::MissingInfo("SYMBOL(init_top_pgt)"))
        );
        let vi = VmcoreInfo::new(b"NUMBER(phys_base)=0\nSYMBOL(init_top_pgt)=1000\n");
        assert_eq!(
            KernelVm::new(&vi, &mem, EM_X86_64).err(),
            Some(VtopError::BadSymbol { name: "init_top_pgt", va: 0x1000 })
        );
    }
}
