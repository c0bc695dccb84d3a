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
//! aarch64 (Linux `arch/arm64/include/asm/memory.h` `__kimg_to_phys()`, `__is_lm_address()`,
//! `__lm_to_phys()`; makedumpfile `arch/arm64.c` `get_machdep_info_arm64()`,
//! `get_page_offset_arm64()`, `vaddr_to_paddr_arm64()`): see [`KernelVm::new`]. Kernel-image
//! addresses are `va - NUMBER(kimage_voffset)`, linear-map addresses
//! `(va - PAGE_OFFSET) + NUMBER(PHYS_OFFSET)` (the layout before and after Linux 5.4's "flip
//! kernel VA space"), everything else is found by walking the crashed kernel's page tables
//! from `SYMBOL(swapper_pg_dir)`, for 4K, 16K and 64K granules.
//!
//! Page tables are old memory: every entry is checked (present/valid bit, huge-page or block
//! bit only where the architecture allows one, reserved address bits), and a failed read is an
//! error, never a fault. A walk reads at most one entry per level, so it cannot loop.

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

/// arm64 descriptor bits [47:12]: the output address of a 4K-granule descriptor (bits
/// [47:PAGE_SHIFT] for larger granules; the bits between 12 and PAGE_SHIFT are RES0, or for
/// 64K with ARMv8.2-LPA bits [15:12] hold PA[51:48]).
const ARM64_ADDR_47_12: u64 = 0x0000_ffff_ffff_f000;
/// arm64 descriptor bits [49:48]: RES0 for 4K/16K granules without FEAT_LPA2. (Bits 50 and
/// 51 are attributes of block and page descriptors: GP, the BTI guarded page, and DBM, which
/// Linux sets on every writable page when the CPU manages dirty bits; ignored in tables.)
const ARM64_BITS_49_48: u64 = 0x0003_0000_0000_0000;

/// Why a virtual address could not be translated or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtopError {
    /// No translation for this architecture (`e_machine`).
    Unsupported { machine: u16 },
    /// VMCOREINFO lacks a key the translation needs (the key is named).
    MissingInfo(&'static str),
    /// A VMCOREINFO value (or combination, e.g. aarch64 `PAGESIZE` with `NUMBER(VA_BITS)`) is
    /// not one this translation supports.
    BadInfo { key: &'static str, value: i64 },
    /// Not a canonical address for the paging mode.
    NonCanonical { va: u64 },
    /// The page-table entry at `level` is not present.
    NotMapped { va: u64, level: &'static str },
    /// The page-table entry at `level` is malformed (huge page or block where none can be,
    /// reserved address bits set).
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
                "virtual address translation for ELF machine {} is not implemented",
                machine
            ),
            VtopError::MissingInfo(key) => {
                write!(f, "VMCOREINFO has no {}, needed to translate addresses", key)
            }
            VtopError::BadInfo { key, value } => write!(
                f,
                "VMCOREINFO {} = {} is not supported for address translation",
                key, value
            ),
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
    arch: Arch,
    /// log2 of the crashed kernel's page size: the granularity of the translation cache.
    page_shift: u32,
    /// The last walked translation: (virtual page, physical page).
    last: Cell<Option<(u64, u64)>>,
}

enum Arch {
    X86_64(X86_64),
    Aarch64(Aarch64),
}

struct X86_64 {
    phys_base: u64,
    image_end: u64,
    /// Physical address of the top-level page table.
    top: u64,
    levels: u32,
    /// Bits cleared from every entry before taking its address.
    entry_mask: u64,
}

struct Aarch64 {
    kimage_voffset: u64,
    /// `[start, end]` (inclusive) translated by the kernel-image rule.
    image: (u64, u64),
    /// The linear map, when its translation is known without the page tables.
    linear: Option<Linear>,
    /// Physical address of `swapper_pg_dir`.
    top: u64,
    /// `NUMBER(VA_BITS)`: the size of the kernel (TTBR1) address space the tables cover.
    va_bits: u32,
    levels: u32,
    page_shift: u32,
}

/// `[start, last]` (inclusive) maps to `va - start + phys_offset`.
#[derive(Clone, Copy)]
struct Linear {
    start: u64,
    last: u64,
    phys_offset: u64,
}

impl<'a> KernelVm<'a> {
    /// The crashed kernel's address space, for ELF machine `machine`, described by its
    /// VMCOREINFO; physical memory is read through `mem`.
    ///
    /// x86_64: kernel-image addresses (`>= 0xffffffff80000000`, below
    /// `+ NUMBER(KERNEL_IMAGE_SIZE)`, 1 GiB if not given): `pa = va - 0xffffffff80000000 +
    /// NUMBER(phys_base)`; everything else by walking the crashed kernel's page tables from
    /// `SYMBOL(init_top_pgt)` (its physical address by the kernel-image rule), 4-level or
    /// 5-level per `NUMBER(pgtable_l5_enabled)`, 1 GiB/2 MiB huge pages, masking NX/flags
    /// and `NUMBER(sme_mask)`.
    ///
    /// aarch64, from `PAGESIZE` (4K, 16K or 64K granule), `NUMBER(VA_BITS)`,
    /// `NUMBER(kimage_voffset)`, `SYMBOL(swapper_pg_dir)`, and where present
    /// `NUMBER(PHYS_OFFSET)`, `NUMBER(TCR_EL1_T1SZ)`, `OSRELEASE`, `SYMBOL(_text)` /
    /// `SYMBOL(_stext)`:
    ///
    /// - Kernel image (`__kimg_to_phys`): `pa = va - kimage_voffset` for `[_text,
    ///   swapper_pg_dir + PAGE_SIZE)` (`_stext` when `_text` is not given, just
    ///   `swapper_pg_dir`'s page when neither is). VMCOREINFO has no `_end`, and modules and
    ///   vmalloc areas can sit right after the image (KASLR), so the rule is only used where
    ///   the image certainly is: `.text`, `.rodata` and the page directories, which lie below
    ///   `swapper_pg_dir` in the arm64 `vmlinux.lds.S` layouts. The image's `.data`/`.bss`
    ///   (above `swapper_pg_dir` in recent kernels, where it moved next to `.rodata`; older
    ///   ones put it after `.bss`) are translated through the page tables, where
    ///   the kernel maps its image too (as makedumpfile does for every address).
    /// - Linear map: Linux 5.4 (commit 14c127c957c1, "arm64: mm: Flip kernel VA space") moved
    ///   it from the upper half of the kernel VA space to the lower one. Before:
    ///   `PAGE_OFFSET = -(1 << (VA_BITS - 1))`, linear = `[PAGE_OFFSET, 2^64)`. Since:
    ///   `PAGE_OFFSET = -(1 << VA_BITS)`, linear = `[PAGE_OFFSET, PAGE_END)` with `PAGE_END =
    ///   -(1 << (min(VA_BITS, 48) - 1))`. Both: `pa = (va & ~PAGE_OFFSET) + PHYS_OFFSET`
    ///   (wrapping: `PHYS_OFFSET` can be "negative"). The layout is chosen from `OSRELEASE`
    ///   (`< 5.4` = old), as makedumpfile does; without a parsable `OSRELEASE`, from the half
    ///   `swapper_pg_dir` (a kernel-image address, never linear) lies in. Either way
    ///   `swapper_pg_dir` must lie outside the chosen linear range, else
    ///   [`VtopError::BadSymbol`]. The formula is skipped (the page tables are walked
    ///   instead) when `PHYS_OFFSET` is missing, or for `VA_BITS = 52` unless
    ///   `TCR_EL1_T1SZ` says 52-bit VAs are in use: on 48-bit hardware 5.4–5.10 and 5.11+
    ///   place the linear map differently (makedumpfile `get_machdep_info_arm64()`).
    /// - Everything else (vmalloc, vmemmap, modules, the image's data): walk from
    ///   `swapper_pg_dir` (physical address by the kernel-image rule). Levels =
    ///   `ceil((VA_BITS - PAGE_SHIFT) / (PAGE_SHIFT - 3))` as in `arch/arm64/Kconfig`
    ///   `PGTABLE_LEVELS` (4K: 39→3, 48→4; 16K: 36→2, 47→3, 48→4; 64K: 42→2, 48/52→3); the
    ///   top table has `2^(VA_BITS - PGDIR_SHIFT)` entries. Descriptors: bit 0 clear =
    ///   invalid; bits[1:0] = 0b11 table (page at the last level); 0b01 block, accepted at
    ///   level 2 (2 MiB/32 MiB/512 MiB) and, for 4K, level 1 (1 GiB), else
    ///   [`VtopError::BadEntry`]. Output address bits [47:PAGE_SHIFT]; for 64K, bits [15:12]
    ///   are PA[51:48] (ARMv8.2-LPA, RES0 otherwise); for 4K/16K, bits [51:48] or (16K) [13:12]
    ///   set are rejected. The contiguous hint and attributes are ignored.
    /// - Addresses are untagged first like the kernel's `__tag_reset()` (top byte from bit
    ///   55, for KASAN tag-based/MTE pointers); bits [63:VA_BITS] must then be all ones.
    ///
    /// Unsupported aarch64 configurations ([`VtopError::BadInfo`]): `VA_BITS = 52` with 4K or
    /// 16K pages (FEAT_LPA2 tables, Linux 6.9+), VA_BITS outside 36..=52.
    pub fn new(info: &VmcoreInfo, mem: &'a dyn PhysRead, machine: u16) -> Result<Self, VtopError> {
        let (arch, page_shift) = match machine {
            EM_X86_64 => (Arch::X86_64(X86_64::new(info)?), 12),
            EM_AARCH64 => {
                let a = Aarch64::new(info)?;
                let shift = a.page_shift;
                (Arch::Aarch64(a), shift)
            }
            _ => return Err(VtopError::Unsupported { machine }),
        };
        Ok(Self { mem, arch, page_shift, last: Cell::new(None) })
    }

    /// The physical address of `va`.
    pub fn translate(&self, va: u64) -> Result<u64, VtopError> {
        let va = match &self.arch {
            Arch::X86_64(x) => {
                if x.in_image(va) {
                    return Ok(x.image_pa(va));
                }
                va
            }
            Arch::Aarch64(a) => {
                let va = arm64_untag(va);
                if let Some(pa) = a.direct(va) {
                    return Ok(pa);
                }
                va
            }
        };
        let page_mask = (1u64 << self.page_shift) - 1;
        let page = va & !page_mask;
        if let Some((vp, pp)) = self.last.get() {
            if vp == page {
                return Ok(pp | (va & page_mask));
            }
        }
        let pa = match &self.arch {
            Arch::X86_64(x) => x.walk(self.mem, va)?,
            Arch::Aarch64(a) => a.walk(self.mem, va)?,
        };
        self.last.set(Some((page, pa & !page_mask)));
        Ok(pa)
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
            // 4 KiB steps: never crosses a page of any granule.
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

/// Reads the 8-byte little-endian table entry at `at` (for `va`).
fn read_entry(mem: &dyn PhysRead, va: u64, at: u64) -> Result<u64, VtopError> {
    let mut e = [0u8; 8];
    mem.read(at, &mut e)
        .map_err(|PhysError::Unreadable { .. }| VtopError::Unreadable { va, pa: at })?;
    Ok(u64::from_le_bytes(e))
}

impl X86_64 {
    fn new(info: &VmcoreInfo) -> Result<Self, VtopError> {
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
        let entry_mask = PTE_ADDR_MASK & !sme_mask;
        let mut x = Self { phys_base, image_end, top: 0, levels, entry_mask };
        if !x.in_image(top_va) {
            return Err(VtopError::BadSymbol { name: "init_top_pgt", va: top_va });
        }
        x.top = x.image_pa(top_va) & !(PAGE_SIZE - 1);
        Ok(x)
    }

    fn in_image(&self, va: u64) -> bool {
        (X86_64_START_KERNEL_MAP..=self.image_end).contains(&va)
    }

    fn image_pa(&self, va: u64) -> u64 {
        (va - X86_64_START_KERNEL_MAP).wrapping_add(self.phys_base)
    }

    fn walk(&self, mem: &dyn PhysRead, va: u64) -> Result<u64, VtopError> {
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
            let entry = read_entry(mem, va, table + index * 8)?;
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
}

/// The kernel's `__tag_reset()`: bits [63:56] copied from bit 55 (KASAN software/hardware
/// tags live in the top byte; TTBR1 addresses have bit 55 set).
fn arm64_untag(va: u64) -> u64 {
    (((va << 8) as i64) >> 8) as u64
}

/// `major.minor` of an `OSRELEASE` such as `6.1.0-25-arm64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split('.');
    let num = |s: Option<&str>| -> Option<u32> {
        let s = s?;
        let end = s.bytes().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    Some((num(parts.next())?, num(parts.next())?))
}

impl Aarch64 {
    fn new(info: &VmcoreInfo) -> Result<Self, VtopError> {
        let page_size = info.page_size().ok_or(VtopError::MissingInfo("PAGESIZE"))?;
        let page_shift = match page_size {
            4096 => 12,
            16384 => 14,
            65536 => 16,
            _ => return Err(VtopError::BadInfo { key: "PAGESIZE", value: page_size as i64 }),
        };
        let va_bits_n = info.number("VA_BITS").ok_or(VtopError::MissingInfo("NUMBER(VA_BITS)"))?;
        let bad_va_bits = VtopError::BadInfo { key: "NUMBER(VA_BITS)", value: va_bits_n };
        if !(36..=52).contains(&va_bits_n) {
            return Err(bad_va_bits);
        }
        let va_bits = va_bits_n as u32;
        // FEAT_LPA2 (52-bit VAs with 4K/16K pages, Linux 6.9+) has another descriptor format
        // and a run-time number of levels: not handled.
        if va_bits > 48 && page_shift != 16 {
            return Err(bad_va_bits);
        }
        let bits_per_level = page_shift - 3;
        let levels = (va_bits - page_shift).div_ceil(bits_per_level);
        if !(2..=4).contains(&levels) {
            return Err(bad_va_bits);
        }
        let va_bits_min = va_bits.min(48);
        // The effective kernel VA size (TCR_EL1.T1SZ = 64 - bits), Linux 5.9+.
        let actual_bits = match info.number("TCR_EL1_T1SZ") {
            Some(t) if (12..=28).contains(&t) && (64 - t as u32) <= va_bits => Some(64 - t as u32),
            Some(t) => return Err(VtopError::BadInfo { key: "NUMBER(TCR_EL1_T1SZ)", value: t }),
            None if va_bits <= 48 => Some(va_bits),
            None => None,
        };
        let kimage_voffset = info
            .number("kimage_voffset")
            .ok_or(VtopError::MissingInfo("NUMBER(kimage_voffset)"))? as u64;
        let swapper = info
            .symbol("swapper_pg_dir")
            .ok_or(VtopError::MissingInfo("SYMBOL(swapper_pg_dir)"))?;
        let bad_swapper = VtopError::BadSymbol { name: "swapper_pg_dir", va: swapper };
        if swapper >> va_bits != u64::MAX >> va_bits {
            return Err(bad_swapper);
        }
        // Which layout: the kernel version if OSRELEASE says, else the half the kernel image
        // is in (after the flip it is above PAGE_END, before it below the linear map).
        let image_upper = swapper & (1 << (va_bits_min - 1)) != 0;
        let flipped = match info.osrelease().and_then(kernel_version) {
            Some(v) => v >= (5, 4),
            None => image_upper,
        };
        if flipped != image_upper {
            return Err(bad_swapper);
        }
        let linear = match info.number("PHYS_OFFSET") {
            Some(phys_offset) if actual_bits == Some(va_bits) => {
                let (start, last) = if flipped {
                    (u64::MAX << va_bits, (u64::MAX << (va_bits_min - 1)) - 1)
                } else {
                    (u64::MAX << (va_bits - 1), u64::MAX)
                };
                Some(Linear { start, last, phys_offset: phys_offset as u64 })
            }
            _ => None,
        };
        let page_mask = (1u64 << page_shift) - 1;
        let top = swapper.wrapping_sub(kimage_voffset);
        if top & page_mask != 0 {
            return Err(bad_swapper);
        }
        let image_last = swapper | page_mask;
        let image_start = ["_text", "_stext"]
            .iter()
            .filter_map(|s| info.symbol(s))
            .find(|&t| t <= swapper && swapper - t < 1 << 30)
            .unwrap_or(swapper & !page_mask);
        Ok(Self {
            kimage_voffset,
            image: (image_start, image_last),
            linear,
            top,
            va_bits,
            levels,
            page_shift,
        })
    }

    /// The translation without page tables: the kernel image or the linear map.
    fn direct(&self, va: u64) -> Option<u64> {
        if (self.image.0..=self.image.1).contains(&va) {
            return Some(va.wrapping_sub(self.kimage_voffset));
        }
        let l = self.linear?;
        if (l.start..=l.last).contains(&va) {
            return Some((va - l.start).wrapping_add(l.phys_offset));
        }
        None
    }

    /// The output address of a valid descriptor (for `va` at `level`).
    fn out_addr(&self, va: u64, level: &'static str, entry: u64) -> Result<u64, VtopError> {
        let page_mask = (1u64 << self.page_shift) - 1;
        let low = entry & ARM64_ADDR_47_12;
        if self.page_shift == 16 {
            // ARMv8.2-LPA: bits [15:12] are PA[51:48] (RES0, so 0, without it).
            return Ok((low & !page_mask) | ((entry >> 12) & 0xf) << 48);
        }
        if entry & ARM64_BITS_49_48 != 0 || low & page_mask != 0 {
            return Err(VtopError::BadEntry { va, level, entry });
        }
        Ok(low)
    }

    fn walk(&self, mem: &dyn PhysRead, va: u64) -> Result<u64, VtopError> {
        if va >> self.va_bits != u64::MAX >> self.va_bits {
            return Err(VtopError::NonCanonical { va });
        }
        const NAMES: [&str; 3] = ["PTE", "PMD", "PUD"];
        let bits_per_level = self.page_shift - 3;
        let mut table = self.top;
        // k = levels below this one: 0 = the last level (Arm level 3).
        let mut k = self.levels - 1;
        loop {
            let top = k == self.levels - 1;
            let name = if top { "PGD" } else { NAMES[k as usize] };
            let shift = self.page_shift + bits_per_level * k;
            let index_bits = if top { self.va_bits - shift } else { bits_per_level };
            let index = (va >> shift) & ((1u64 << index_bits) - 1);
            let entry = read_entry(mem, va, table + index * 8)?;
            if entry & 1 == 0 {
                return Err(VtopError::NotMapped { va, level: name });
            }
            let addr = self.out_addr(va, name, entry)?;
            let size_mask = (1u64 << shift) - 1;
            if entry & 2 == 0 {
                // A block: Arm level 2 for every granule, level 1 (1 GiB) for 4K only;
                // 0b01 at level 3 is reserved.
                let arm_level = 3 - k;
                if !(arm_level == 2 || (arm_level == 1 && self.page_shift == 12)) {
                    return Err(VtopError::BadEntry { va, level: name, entry });
                }
                return Ok((addr & !size_mask) | (va & size_mask));
            }
            if k == 0 {
                return Ok(addr | (va & size_mask));
            }
            table = addr;
            k -= 1;
        }
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

    /// Builds arm64 translation tables (4K, 16K or 64K granule) in a [`PageMem`], allocating
    /// table granules from `next_table` upwards. `levels` is given, not derived, so that the
    /// tests check the walker's own level count.
    pub struct Arm64Tables {
        pub top: u64,
        pub next_table: u64,
        pub page_shift: u32,
        pub va_bits: u32,
        pub levels: u32,
    }

    impl Arm64Tables {
        pub fn new(mem: &mut PageMem, top: u64, page_shift: u32, va_bits: u32, levels: u32) -> Self {
            mem.write(top, &vec![0u8; 1 << page_shift]);
            Self { top, next_table: top + (1 << page_shift), page_shift, va_bits, levels }
        }

        /// A descriptor's address field for `pa` (64K: PA[51:48] in bits [15:12]).
        pub fn enc(&self, pa: u64) -> u64 {
            if self.page_shift == 16 {
                (pa & 0x0000_ffff_ffff_0000) | ((pa >> 48) & 0xf) << 12
            } else {
                pa
            }
        }

        fn dec(&self, e: u64) -> u64 {
            let low = e & 0x0000_ffff_ffff_f000 & !((1u64 << self.page_shift) - 1);
            if self.page_shift == 16 {
                low | ((e >> 12) & 0xf) << 48
            } else {
                low
            }
        }

        /// The address of `va`'s entry `depth` tables below the top (0 = the top table),
        /// creating the tables on the way.
        pub fn slot(&mut self, mem: &mut PageMem, va: u64, depth: u32) -> u64 {
            let bpl = self.page_shift - 3;
            let mut table = self.top;
            for d in 0..=depth {
                let shift = self.page_shift + bpl * (self.levels - 1 - d);
                let bits = if d == 0 { self.va_bits - shift } else { bpl };
                let slot = table + ((va >> shift) & ((1 << bits) - 1)) * 8;
                if d == depth {
                    return slot;
                }
                let mut e = [0u8; 8];
                mem.read(slot, &mut e).unwrap();
                let e = u64::from_le_bytes(e);
                table = if e & 3 == 3 {
                    self.dec(e)
                } else {
                    let t = self.next_table;
                    self.next_table += 1 << self.page_shift;
                    mem.write(t, &vec![0u8; 1 << self.page_shift]);
                    // APTable/PXNTable/UXNTable bits set, as Linux does for kernel tables.
                    mem.write_u64(slot, self.enc(t) | 3 << 59 | 3);
                    t
                };
            }
            unreachable!()
        }

        /// Maps `va` to `pa` with a page (`shift == page_shift`) or a block of `1 << shift`.
        pub fn map(&mut self, mem: &mut PageMem, va: u64, pa: u64, shift: u32) {
            let bpl = self.page_shift - 3;
            let depth = self.levels - 1 - (shift - self.page_shift) / bpl;
            let slot = self.slot(mem, va, depth);
            // AF, inner shareable, AttrIndx 4 (normal), PXN|UXN, contiguous hint, and DBM and
            // GP (bits 51, 50) as Linux sets them on writable pages of BTI-capable CPUs.
            let attrs = 1 << 10 | 3 << 8 | 4 << 2 | 3 << 53 | 1 << 52 | 3 << 50;
            let ty = if shift == self.page_shift { 3 } else { 1 };
            mem.write_u64(slot, self.enc(pa) | attrs | ty);
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
            KernelVm::new(&vi, &mem, 20).err(), // EM_PPC
            Some(VtopError::Unsupported { machine: 20 })
        );
        // An x86 VMCOREINFO does not describe an arm64 kernel.
        assert_eq!(KernelVm::new(&vi, &mem, EM_AARCH64).err(), Some(VtopError::MissingInfo("PAGESIZE")));
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

#[cfg(test)]
mod arm64_tests {
    use super::testutil::*;
    use super::*;
    use alloc::format;
    use alloc::string::String;

    const PHYS_OFFSET: u64 = 0x4000_0000;
    /// Where `_text` is in physical memory (QEMU virt RAM starts at 1 GiB).
    const TEXT_PA: u64 = 0x4020_0000;
    /// `swapper_pg_dir` 16 MiB into the image; its tables follow it.
    const SWAPPER_OFF: u64 = 0x0100_0000;

    /// One arm64 configuration: granule, VA_BITS, the levels Linux uses for them
    /// (`arch/arm64/Kconfig` PGTABLE_LEVELS), and the layout (Linux >= 5.4 "flipped").
    #[derive(Clone, Copy, Debug)]
    struct Cfg {
        page_shift: u32,
        va_bits: u32,
        levels: u32,
        flipped: bool,
    }

    impl Cfg {
        fn granule(&self) -> u64 {
            1 << self.page_shift
        }
        /// `PAGE_OFFSET`: the start of the linear map.
        fn page_offset(&self) -> u64 {
            if self.flipped {
                u64::MAX << self.va_bits
            } else {
                u64::MAX << (self.va_bits - 1)
            }
        }
        /// `_PAGE_END(VA_BITS_MIN)` (flipped layout only).
        fn page_end(&self) -> u64 {
            u64::MAX << (self.va_bits.min(48) - 1)
        }
        /// `_text`, KASLR-shifted, in the half the image lives in.
        fn text(&self) -> u64 {
            let base = if self.flipped { self.page_end() } else { u64::MAX << self.va_bits };
            base + 0x0800_0000 + 0x0340_0000
        }
        fn kimage_voffset(&self) -> u64 {
            self.text().wrapping_sub(TEXT_PA)
        }
        fn swapper(&self) -> u64 {
            self.text() + SWAPPER_OFF
        }
        fn info(&self, release: Option<&str>, extra: &str) -> String {
            let mut s = String::new();
            if let Some(r) = release {
                s.push_str(&format!("OSRELEASE={}\n", r));
            }
            s.push_str(&format!(
                "PAGESIZE={}\nSYMBOL(swapper_pg_dir)={:x}\nSYMBOL(_stext)={:x}\n\
NUMBER(VA_BITS)={}\nNUMBER(kimage_voffset)=0x{:x}\nNUMBER(PHYS_OFFSET)=0x{:x}\n\
KERNELOFFSET=3400000\nNUMBER(KERNELPACMASK)=0x0\n{}",
                self.granule(),
                self.swapper(),
                self.text() + 0x1_0000,
                self.va_bits,
                self.kimage_voffset(),
                PHYS_OFFSET,
                extra
            ));
            s
        }
        fn release(&self) -> &'static str {
            if self.flipped {
                "6.1.0-25-arm64"
            } else {
                "4.19.0-27-arm64"
            }
        }
        fn tables(&self, mem: &mut PageMem) -> Arm64Tables {
            Arm64Tables::new(mem, TEXT_PA + SWAPPER_OFF, self.page_shift, self.va_bits, self.levels)
        }
    }

    const CONFIGS: [Cfg; 10] = [
        Cfg { page_shift: 12, va_bits: 48, levels: 4, flipped: true },
        Cfg { page_shift: 12, va_bits: 48, levels: 4, flipped: false },
        Cfg { page_shift: 12, va_bits: 39, levels: 3, flipped: true },
        Cfg { page_shift: 12, va_bits: 39, levels: 3, flipped: false },
        Cfg { page_shift: 14, va_bits: 47, levels: 3, flipped: true },
        Cfg { page_shift: 14, va_bits: 36, levels: 2, flipped: true },
        Cfg { page_shift: 14, va_bits: 48, levels: 4, flipped: true },
        Cfg { page_shift: 16, va_bits: 42, levels: 2, flipped: true },
        Cfg { page_shift: 16, va_bits: 48, levels: 3, flipped: true },
        Cfg { page_shift: 16, va_bits: 48, levels: 3, flipped: false },
    ];

    fn align_up(v: u64, a: u64) -> u64 {
        (v + a - 1) & !(a - 1)
    }

    /// Image, linear map, pages, blocks, and the error cases, for one configuration.
    fn check(c: Cfg) {
        let g = c.granule();
        let bpl = c.page_shift - 3;
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        // vmalloc-like: two virtually consecutive pages on physically reversed pages.
        let vm_va = c.text() + 0x1_0000_0000;
        let (pa_a, pa_b) = (0x5123_0000u64, 0x5100_0000u64);
        pt.map(&mut mem, vm_va, pa_a, c.page_shift);
        pt.map(&mut mem, vm_va + g, pa_b, c.page_shift);
        // A level-2 block: 2 MiB (4K), 32 MiB (16K), 512 MiB (64K).
        let blk_shift = c.page_shift + bpl;
        let blk_va = align_up(c.text() + 0x2_0000_0000, 1 << blk_shift);
        let blk_pa = 0x6000_0000u64;
        pt.map(&mut mem, blk_va, blk_pa, blk_shift);
        // A 1 GiB block at level 1 (4K granule, when there is a level 1).
        let gig_va = align_up(c.text() + 0x4_0000_0000, 1 << 30);
        if c.page_shift == 12 && c.levels >= 3 {
            pt.map(&mut mem, gig_va, 0x8000_0000, 30);
        }
        // Image data above swapper_pg_dir: translated through the tables.
        let data_va = c.text() + 0x0180_0000;
        pt.map(&mut mem, data_va, TEXT_PA + 0x0180_0000, c.page_shift);
        // Error cases: a reserved 0b01 descriptor at the last level, a level-2 table entry
        // pointing to memory that is not in the dump.
        let bad_pte_va = vm_va + 3 * g;
        let slot = pt.slot(&mut mem, bad_pte_va, c.levels - 1);
        mem.write_u64(slot, 0x5200_0000 | 1 << 10 | 1);
        let unreadable_va = blk_va + (1 << blk_shift);
        let slot = pt.slot(&mut mem, unreadable_va, c.levels - 2);
        mem.write_u64(slot, pt.enc(0x7_0000_0000) | 3);

        let text = c.info(Some(c.release()), "");
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap_or_else(|e| panic!("{:?}: {}", c, e));
        let t = |va: u64| vm.translate(va);

        // Kernel image: _stext to swapper_pg_dir's page, no tables needed.
        assert_eq!(t(c.text() + 0x1_0123), Ok(TEXT_PA + 0x1_0123), "{:?}", c);
        // Below _stext (VMCOREINFO has no _text here): the tables, which do not map it.
        assert!(matches!(t(c.text() + 0x123), Err(VtopError::NotMapped { .. })), "{:?}", c);
        assert_eq!(t(c.swapper() + 8), Ok(TEXT_PA + SWAPPER_OFF + 8), "{:?}", c);
        // Above it: the tables.
        assert_eq!(t(data_va + 0x18), Ok(TEXT_PA + 0x0180_0018), "{:?}", c);
        assert!(matches!(t(data_va + 2 * g), Err(VtopError::NotMapped { .. })), "{:?}", c);
        // Linear map.
        let lm = c.page_offset() + 0x0123_4568;
        assert_eq!(t(lm), Ok(PHYS_OFFSET + 0x0123_4568), "{:?}", c);
        if c.flipped {
            assert_eq!(t(c.page_end() - 8), Ok(c.page_end() - 8 - c.page_offset() + PHYS_OFFSET));
            // PAGE_END and above is not linear: the tables say.
            assert!(matches!(t(c.page_end()), Err(VtopError::NotMapped { .. })), "{:?}", c);
        } else {
            assert_eq!(t(u64::MAX - 7), Ok((u64::MAX >> (65 - c.va_bits)) - 7 + PHYS_OFFSET));
            assert!(matches!(t(c.page_offset() - 8), Err(VtopError::NotMapped { .. })), "{:?}", c);
        }
        // Pages (the second lookup of a page comes from the cache).
        assert_eq!(t(vm_va + 0x10), Ok(pa_a + 0x10), "{:?}", c);
        assert_eq!(t(vm_va + g - 1), Ok(pa_a + g - 1), "{:?}", c);
        assert_eq!(t(vm_va + g + 5), Ok(pa_b + 5), "{:?}", c);
        // KASAN/MTE tag in the top byte.
        assert_eq!(t((vm_va & 0x00ff_ffff_ffff_ffff) | 0xf2 << 56), Ok(pa_a), "{:?}", c);
        // Blocks.
        let off = (1u64 << blk_shift) - 0x1238;
        assert_eq!(t(blk_va + off), Ok(blk_pa + off), "{:?}", c);
        if c.page_shift == 12 && c.levels >= 3 {
            assert_eq!(t(gig_va + 0x3fff_fff0), Ok(0x8000_0000 + 0x3fff_fff0), "{:?}", c);
        }
        // Errors.
        let last = if c.levels == 2 { "PGD" } else { "PMD" };
        assert!(
            matches!(t(vm_va + 2 * g), Err(VtopError::NotMapped { level: "PTE", .. })),
            "{:?}: {:?}",
            c,
            t(vm_va + 2 * g)
        );
        assert!(
            matches!(t(bad_pte_va), Err(VtopError::BadEntry { level: "PTE", .. })),
            "{:?}: {:?}",
            c,
            t(bad_pte_va)
        );
        let r = t(unreadable_va);
        assert!(
            matches!(r, Err(VtopError::Unreadable { pa, .. }) if (0x7_0000_0000..0x7_0000_0000 + g).contains(&pa)),
            "{:?}: {:?}",
            c,
            r
        );
        let r = t(blk_va + (2 << blk_shift));
        assert!(matches!(r, Err(VtopError::NotMapped { level, .. }) if level == last), "{:?}: {:?}", c, r);
        assert_eq!(t(0x0000_0000_1234_5000), Err(VtopError::NonCanonical { va: 0x1234_5000 }));
        // Reads crossing from one page into the next, different, physical page.
        mem.write(pa_a + g - 4, &[1, 2, 3, 4]);
        mem.write(pa_b, &[5, 6, 7, 8]);
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert_eq!(vm.read_u64(vm_va + g - 4), Ok(0x0807_0605_0403_0201), "{:?}", c);
        let mut b = [0u8; 8];
        assert!(matches!(vm.read(blk_va, &mut b), Err(VtopError::Unreadable { pa, .. }) if pa == blk_pa));
    }

    #[test]
    fn arm64_all_granules_and_layouts() {
        for c in CONFIGS {
            check(c);
        }
    }

    #[test]
    fn arm64_bad_blocks_and_entries() {
        // 4K/48: a block at level 0 (PGD) is not architectural.
        let c = CONFIGS[0];
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        let va = c.text() + 0x1_0000_0000;
        let slot = pt.slot(&mut mem, va, 0);
        mem.write_u64(slot, 0x8000_0000 | 1 << 10 | 1);
        // PA bits [51:48] in a 4K descriptor (FEAT_LPA2 format): rejected.
        let va2 = c.page_end() + (1 << 39); // another PGD slot
        pt.map(&mut mem, va2, 0x0003_0000_4000_0000, 30);
        let text = c.info(Some(c.release()), "");
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert!(matches!(vm.translate(va), Err(VtopError::BadEntry { level: "PGD", .. })));
        assert!(matches!(vm.translate(va2), Err(VtopError::BadEntry { level: "PUD", .. })));
        // An empty PGD slot.
        assert!(matches!(
            vm.translate(c.page_end() + (2 << 39)),
            Err(VtopError::NotMapped { level: "PGD", .. })
        ));

        // 16K/47: a level-1 block (only with FEAT_LPA2), and a table address with bits
        // [13:12] set (not 16K-aligned).
        let c = CONFIGS[4];
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        let va = c.text() + 0x1_0000_0000;
        let slot = pt.slot(&mut mem, va, 0);
        mem.write_u64(slot, 0x10_0000_0000 | 1 << 10 | 1);
        let va2 = c.text() + 0x20_0000_0000; // another level-1 slot (64 GiB each)
        let slot = pt.slot(&mut mem, va2, 0);
        mem.write_u64(slot, 0x5000_3000 | 3);
        let text = c.info(Some(c.release()), "");
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert!(matches!(vm.translate(va), Err(VtopError::BadEntry { level: "PGD", .. })));
        assert!(matches!(vm.translate(va2), Err(VtopError::BadEntry { level: "PGD", .. })));

        // 64K/48: a level-1 block (4 TiB, only with 52-bit PA); PA[51:48] in bits [15:12]
        // of a page descriptor (ARMv8.2-LPA) is decoded.
        let c = CONFIGS[8];
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        let va = c.text() + 0x1_0000_0000;
        let slot = pt.slot(&mut mem, va, 0);
        mem.write_u64(slot, 1 << 10 | 1);
        let va2 = c.page_end() + (5u64 << 42);
        let high_pa = 0x000a_0000_1234_0000u64;
        pt.map(&mut mem, va2, high_pa, 16);
        mem.write(high_pa + 0x10, b"52-bit!!");
        let text = c.info(Some(c.release()), "NUMBER(MAX_PHYSMEM_BITS)=52\n");
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert!(matches!(vm.translate(va), Err(VtopError::BadEntry { level: "PGD", .. })));
        assert_eq!(vm.translate(va2 + 0x10), Ok(high_pa + 0x10));
        assert_eq!(vm.read_u64(va2 + 0x10), Ok(u64::from_le_bytes(*b"52-bit!!")));
    }

    #[test]
    fn arm64_52_bit_va_64k() {
        // 64K pages, VA_BITS 52: 3 levels, a 1024-entry top table. On 48-bit hardware
        // (TCR_EL1.T1SZ = 16) the linear map is not decoded by formula but walked.
        let c = Cfg { page_shift: 16, va_bits: 52, levels: 3, flipped: true };
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        let lm48 = 0xffff_0000_0000_0000u64 + 0x0040_0000_0000; // in the 48-bit linear map
        pt.map(&mut mem, lm48, 0x5000_0000, 16);
        // The PGD entry for a 48-bit address is among the top 64 of 1024.
        let slot = pt.slot(&mut mem, lm48, 0);
        assert_eq!((slot - pt.top) / 8, 1024 - 64);
        let vma = align_up(c.text() + 0x1_0000_0000, 1 << 29);
        pt.map(&mut mem, vma, 0x4000_0000, 29);
        let t16 = c.info(Some("6.6.0"), "NUMBER(TCR_EL1_T1SZ)=0x10\n");
        let vi = VmcoreInfo::new(t16.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert_eq!(vm.translate(lm48 + 0x44), Ok(0x5000_0044));
        assert_eq!(vm.translate(vma + 0x1000_0000), Ok(0x5000_0000));
        assert_eq!(vm.translate(c.text() + 0x1_0004), Ok(TEXT_PA + 0x1_0004));
        // Without TCR_EL1_T1SZ, the same (which VA size is in use is unknown).
        let t0 = c.info(Some("6.6.0"), "");
        let vi = VmcoreInfo::new(t0.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert_eq!(vm.translate(lm48 + 0x44), Ok(0x5000_0044));
        // Really 52-bit (T1SZ = 12): the formula from PAGE_OFFSET = -(1 << 52).
        let t12 = c.info(Some("6.6.0"), "NUMBER(TCR_EL1_T1SZ)=0xc\n");
        let vi = VmcoreInfo::new(t12.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert_eq!(vm.translate(0xfff0_0000_0000_1000), Ok(PHYS_OFFSET + 0x1000));
        assert_eq!(vm.translate(0xfff7_ffff_ffff_f000), Ok(PHYS_OFFSET + 0x7_ffff_ffff_f000));
        // Bit 55 clear: a user (TTBR0) address, whatever the top byte.
        assert!(matches!(vm.translate(0xff7f_0000_0000_0000), Err(VtopError::NonCanonical { .. })));
        // Bit 55 set: the top byte is a tag (as with TBI), 0x0fff... is 0xffff...
        assert_eq!(vm.translate(0x0fff_0000_0000_0000), vm.translate(0xffff_0000_0000_0000));
    }

    #[test]
    fn arm64_layout_from_symbols_and_consistency() {
        let mem = PageMem::default();
        for c in [CONFIGS[0], CONFIGS[1]] {
            // No OSRELEASE: the half swapper_pg_dir is in decides.
            let text = c.info(None, "");
            let vi = VmcoreInfo::new(text.as_bytes());
            let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
            assert_eq!(vm.translate(c.page_offset() + 0x1000), Ok(PHYS_OFFSET + 0x1000));
            // An OSRELEASE contradicting where the image is.
            let other = if c.flipped { "5.3.18" } else { "5.4.0" };
            let text = c.info(Some(other), "");
            let vi = VmcoreInfo::new(text.as_bytes());
            assert_eq!(
                KernelVm::new(&vi, &mem, EM_AARCH64).err(),
                Some(VtopError::BadSymbol { name: "swapper_pg_dir", va: c.swapper() })
            );
        }
        // Without PHYS_OFFSET, linear addresses are walked.
        let c = CONFIGS[0];
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        pt.map(&mut mem, c.page_offset() + 0x20_0000, 0x4020_0000, 21);
        let text = c.info(Some("6.1.0"), "").replace("NUMBER(PHYS_OFFSET)", "NUMBER(X)");
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        assert_eq!(vm.translate(c.page_offset() + 0x20_0010), Ok(0x4020_0010));
        assert!(matches!(vm.translate(c.page_offset()), Err(VtopError::NotMapped { .. })));
    }

    #[test]
    fn arm64_rejected_configurations() {
        let mem = PageMem::default();
        let c = CONFIGS[0];
        let new = |text: &str| KernelVm::new(&VmcoreInfo::new(text.as_bytes()), &mem, EM_AARCH64).err();
        let base = c.info(Some("6.1.0"), "");
        assert_eq!(
            new(&base.replace("PAGESIZE=4096", "PAGESIZE=8192")),
            Some(VtopError::BadInfo { key: "PAGESIZE", value: 8192 })
        );
        assert_eq!(
            new(&base.replace("NUMBER(VA_BITS)=48", "NUMBER(VA_BITS)=52")),
            Some(VtopError::BadInfo { key: "NUMBER(VA_BITS)", value: 52 })
        );
        assert_eq!(
            new(&base.replace("NUMBER(VA_BITS)=48", "NUMBER(VA_BITS)=64")),
            Some(VtopError::BadInfo { key: "NUMBER(VA_BITS)", value: 64 })
        );
        assert_eq!(
            new(&c.info(Some("6.1.0"), "NUMBER(TCR_EL1_T1SZ)=0x0\n")),
            Some(VtopError::BadInfo { key: "NUMBER(TCR_EL1_T1SZ)", value: 0 })
        );
        assert_eq!(new(&base.replace("PAGESIZE", "X")), Some(VtopError::MissingInfo("PAGESIZE")));
        assert_eq!(
            new(&base.replace("NUMBER(VA_BITS)", "X")),
            Some(VtopError::MissingInfo("NUMBER(VA_BITS)"))
        );
        assert_eq!(
            new(&base.replace("NUMBER(kimage_voffset)", "X")),
            Some(VtopError::MissingInfo("NUMBER(kimage_voffset)"))
        );
        assert_eq!(
            new(&base.replace("SYMBOL(swapper_pg_dir)", "X")),
            Some(VtopError::MissingInfo("SYMBOL(swapper_pg_dir)"))
        );
        // swapper_pg_dir not page-aligned physically, not a kernel address, or linear.
        let sw = format!("SYMBOL(swapper_pg_dir)={:x}", c.swapper());
        for bad in [c.swapper() + 0x800, 0x0000_ffff_8000_0000, c.page_offset() + 0x1000] {
            assert_eq!(
                new(&base.replace(&sw, &format!("SYMBOL(swapper_pg_dir)={:x}", bad))),
                Some(VtopError::BadSymbol { name: "swapper_pg_dir", va: bad })
            );
        }
    }

    /// The portable log decoder on an arm64 dump: prb in the image's .data (walked), the
    /// descriptors in vmalloc (64K pages), the infos in the linear map, the text in a block.
    #[test]
    fn arm64_printk_through_kernel_vm() {
        let c = CONFIGS[8]; // 64K/48
        let mut mem = PageMem::default();
        let mut pt = c.tables(&mut mem);
        let prb_ptr = c.text() + 0x0200_0000;
        let prb = prb_ptr + 0x100;
        pt.map(&mut mem, prb_ptr, TEXT_PA + 0x0200_0000, 16);
        let descs = c.text() + 0x1_0000_0000;
        pt.map(&mut mem, descs, 0x5100_0000, 16);
        let infos = c.page_offset() + 0x0300_0000; // linear: PHYS_OFFSET + 0x0300_0000
        let data = align_up(c.text() + 0x2_0000_0000, 1 << 29);
        pt.map(&mut mem, data, 0x6000_0000, 29);
        let layout = format!("SYMBOL(prb)={:x}\n{}", prb_ptr, crate::printk::tests::PRB_LAYOUT);
        let text = c.info(Some(c.release()), &layout);
        let vi = VmcoreInfo::new(text.as_bytes());
        let mut writes: alloc::vec::Vec<(u64, alloc::vec::Vec<u8>)> = alloc::vec::Vec::new();
        let mut w = |va: u64, b: &[u8]| writes.push((va, b.to_vec()));
        w(prb_ptr, &prb.to_le_bytes());
        w(prb + 8 + 4, &2u32.to_le_bytes()); // 4 descriptors
        w(prb + 8 + 16, &descs.to_le_bytes());
        w(prb + 8 + 24, &infos.to_le_bytes());
        w(prb + 8 + 32 + 8, &1u64.to_le_bytes()); // head id
        w(prb + 8 + 48 + 8, &0u64.to_le_bytes()); // tail id
        w(prb + 72, &12u32.to_le_bytes()); // 4 KiB of text
        w(prb + 72 + 8, &data.to_le_bytes());
        let mut lpos = 0u64;
        for (id, msg) in [(0u64, "Booting Linux on physical CPU 0x0"), (1, "Kernel panic - not syncing: sysrq")] {
            let blk = (8 + msg.len() as u64).div_ceil(8) * 8;
            let d = descs + id * 40;
            w(d + 16, &(id | 2 << 62).to_le_bytes()); // finalized
            w(d + 24 + 8, &lpos.to_le_bytes());
            w(d + 24, &(lpos + blk).to_le_bytes());
            let inf = infos + id * 48;
            w(inf, &(1_000_000 * id).to_le_bytes());
            w(inf + 16, &id.to_le_bytes());
            w(inf + 40, &(msg.len() as u16).to_le_bytes());
            w(data + lpos, &id.to_le_bytes());
            w(data + lpos + 8, msg.as_bytes());
            lpos += blk;
        }
        let mut pas = alloc::vec::Vec::new();
        {
            let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
            for (va, b) in &writes {
                for i in 0..b.len() as u64 {
                    pas.push((vm.translate(va + i).unwrap(), b[i as usize]));
                }
            }
        }
        for (pa, b) in pas {
            mem.write(pa, &[b]);
        }
        let vm = KernelVm::new(&vi, &mem, EM_AARCH64).unwrap();
        let log = crate::printk::read_kernel_log(&vi, &vm).unwrap();
        let texts: alloc::vec::Vec<&str> = log.records.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["Booting Linux on physical CPU 0x0", "Kernel panic - not syncing: sysrq"]);
    }
}
