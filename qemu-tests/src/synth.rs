//! Synthetic "crashed kernel" memory for the QEMU tests.
//!
//! From a seed and a size this module lays out what a crashed x86_64 Linux would have left for
//! its capture kernel (reference: kdump-formats-and-boot-protocols.md §3.1, §6), or a crashed
//! arm64 Linux ([`Arch::Aarch64`], see "arm64" below):
//!
//! - RAM ranges (PT_LOADs with `p_vaddr = PAGE_OFFSET + p_paddr`, `p_offset = p_paddr`) with
//!   holes between them, the first one starting and ending off a 2 MiB boundary;
//! - a kexec-tools style **backup range**: `p_paddr = 0`, 640 KiB, `p_offset` = a copy placed
//!   elsewhere (the dump must show the copy's data at pfns 0..160);
//! - a kernel-text PT_LOAD (`p_vaddr = 0xffffffff81000000 + KASLR offset`) that is a second view
//!   of part of one RAM range;
//! - one PRSTATUS note per CPU, each in its own buffer whose PT_NOTE `p_filesz` overstates the
//!   note (a zero Nhdr follows it), and a VMCOREINFO note;
//! - a real `struct new_utsname` at `SYMBOL(init_uts_ns) + OFFSET(uts_namespace.name)`.
//!
//! Page contents are a pure function of (seed, source physical address), so the verifier can
//! regenerate the expected content of any page without keeping a copy of the memory.
//!
//! Guest physical layout (everything synthetic sits at or above 16 MiB, below the 512 MiB of
//! guest RAM; the capture kernel owns everything below 16 MiB):
//!
//! | address | content |
//! |---|---|
//! | 16 MiB (`META_BASE`) | elfcorehdr (≤ 64 KiB), then the note buffers |
//! | 17 MiB (`BACKUP_COPY`) | the 640 KiB backup copy of old pfns 0..160 |
//! | 18 MiB + 12 KiB … | the RAM ranges and their holes |
//!
//! ## arm64
//!
//! The same machine as a 6.1 arm64 kernel with 4 KiB pages and 48-bit VAs would leave it
//! (Linux `arch/arm64/include/asm/memory.h`, `arch/arm64/kernel/vmcore_info.c`,
//! `include/linux/elfcore.h`; kexec_file's `crash_prepare_elf64_headers()`): `e_machine`
//! `EM_AARCH64`, no backup range (that is x86 kexec-tools only), RAM PT_LOADs with linear-map
//! addresses `p_vaddr = (p_paddr - PHYS_OFFSET) | PAGE_OFFSET`, the kernel-text PT_LOAD at
//! `KIMAGE_VADDR` + KASLR offset, 392-byte `struct elf_prstatus` notes (34 registers: x0..x30,
//! sp, pc, pstate), and arm64's VMCOREINFO keys (`NUMBER(kimage_voffset)`,
//! `NUMBER(PHYS_OFFSET)`, `NUMBER(VA_BITS)`, `SYMBOL(swapper_pg_dir)`, …). Like the x86_64
//! machine it has no page tables and no `struct page`s to speak of (`swapper_pg_dir` is an
//! all-zero page), so the capture kernel dumps it at level 1.
//!
//! QEMU `virt` RAM starts at 1 GiB ([`VIRT_RAM_START`]), and every address above moves up by
//! that much: the elfcorehdr at 1 GiB + 16 MiB, the RAM ranges from 1 GiB + 18 MiB. QEMU
//! itself puts its boot stub at the start of RAM, the Image 2 MiB in, and the device tree at
//! 1 GiB + 128 MiB ([`VIRT_DTB`]): the RAM ranges leave a hole there.
//!
//! ## Crashed kernels with 16 KiB and 64 KiB pages (arm64)
//!
//! [`SynthSpec::page_size`] is the crashed kernel's page size: `PAGESIZE` in its VMCOREINFO,
//! and so the dump's block size, its pfns, its bitmaps (one bit per such page) and its unit of
//! compression. With 16 or 64 KiB every RAM range starts and ends on a page boundary (the
//! holes are whole pages too), each page is one zero, random or compressible page of that
//! size ([`fill_page_of`]; the kind is drawn per page, so whole 64 KiB pages are zero), the
//! `struct new_utsname` crosses a page boundary of that size, `swapper_pg_dir` is a zero page
//! of that size, and `NUMBER(VMEMMAP_START)`/`NUMBER(VMEMMAP_END)` are those of that page
//! size ([`arm64_vmemmap`]). Everything else (addresses, note buffers) stays as with 4 KiB
//! pages. With 4 KiB every byte is what it was before the page size was a parameter (the
//! `golden` test holds hashes of it). [`SynthImage::dump_page`] and
//! [`SynthImage::source_page`] still work in 4 KiB frames whatever the page size;
//! [`SynthImage::dump_block`] gives a whole page of the crashed kernel's size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::prng::SplitMix64;
pub use crate::Arch;

/// 4 KiB: the page size of every x86_64 kernel, and of the crashed arm64 kernel unless the
/// spec asks for 16 or 64 KiB ([`SynthSpec::page_size`]); the frame [`SynthImage::dump_page`]
/// and [`SynthImage::source_page`] work in.
pub const PAGE_SIZE: u64 = 4096;
const PAGE: usize = PAGE_SIZE as usize;
/// The page sizes an arm64 kernel can have (`CONFIG_ARM64_{4K,16K,64K}_PAGES`).
pub const ARM64_PAGE_SIZES: [u64; 3] = [4096, 16 << 10, 64 << 10];
const MIB: u64 = 1 << 20;

/// RAM of the QEMU guest (`-m 512M`).
pub const GUEST_RAM_BYTES: u64 = 512 * MIB;
/// Lowest guest address synthetic data may use; below belongs to the capture kernel.
pub const SYNTH_FLOOR: u64 = 16 * MIB;
/// Where the elfcorehdr is placed (1 KiB aligned, so the `elfcorehdr=<n>K` form works too).
pub const META_BASE: u64 = SYNTH_FLOOR;
/// Room for the elfcorehdr before the note buffers.
pub const ELFCOREHDR_ROOM: u64 = 0x10000;
/// Where the first note buffer goes; one 4 KiB slot per buffer.
pub const NOTES_BASE: u64 = META_BASE + ELFCOREHDR_ROOM;
/// Where the backup copy of the first 640 KiB lives.
pub const BACKUP_COPY: u64 = 17 * MIB;
/// Size of the kexec-tools x86 backup region (pfns 0..160).
pub const BACKUP_SIZE: u64 = 0xa0000;
/// First address used for RAM ranges.
pub const RAM_BASE: u64 = 18 * MIB;

/// x86_64 direct-map base (no KASLR of the direct map here).
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// x86_64 `__START_KERNEL_map`.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Unrandomised x86_64 `_text`.
pub const DEFAULT_TEXT_VADDR: u64 = 0xffff_ffff_8100_0000;

pub const OSRELEASE: &str = "6.1.0-lifeboat-synthetic";
pub const UTS_SYSNAME: &str = "Linux";
pub const UTS_NODENAME: &str = "synthhost";
pub const UTS_VERSION: &str = "#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026";
pub const UTS_MACHINE: &str = "x86_64";
pub const UTS_DOMAINNAME: &str = "(none)";
/// `sizeof(struct new_utsname)`: six `char[65]`.
pub const UTSNAME_SIZE: usize = 6 * 65;
/// `OFFSET(uts_namespace.name)` (after `struct kref`).
pub const UTS_NAMESPACE_NAME_OFFSET: u64 = 4;

/// `sizeof(struct elf_prstatus)` on x86_64.
pub const PRSTATUS_SIZE: usize = 336;
/// Offset of `pr_reg` in x86_64 `struct elf_prstatus`.
pub const PRSTATUS_REG_OFFSET: usize = 112;
/// Offset of `pr_pid`.
pub const PRSTATUS_PID_OFFSET: usize = 32;
/// Number of registers in x86_64 `struct user_regs_struct`.
pub const PRSTATUS_NREGS: usize = 27;

/// QEMU `virt`: where its RAM starts (`/memory@40000000` in `-M virt,dumpdtb=…`).
pub const VIRT_RAM_START: u64 = 0x4000_0000;
/// QEMU `virt` with `-kernel Image`: where QEMU 7.2 writes its 1 MiB device tree, for guests
/// with at least 256 MiB of RAM: RAM start + min(RAM / 2, 128 MiB), 2 MiB aligned
/// (`hw/arm/boot.c`; measured with `info roms`, the same for 512 MiB and 1 GiB).
pub const VIRT_DTB: u64 = VIRT_RAM_START + 128 * MIB;
/// The hole the arm64 RAM ranges leave for the device tree: its 2 MiB-aligned block.
pub const VIRT_DTB_HOLE: u64 = 2 * MIB;
/// Smallest guest RAM for which [`VIRT_DTB`] holds.
pub const VIRT_MIN_GUEST_RAM: u64 = 256 * MIB;

/// arm64, VA_BITS 48, Linux ≥ 5.4: the linear map starts at `-(1 << 48)`.
pub const ARM64_PAGE_OFFSET: u64 = 0xffff_0000_0000_0000;
/// arm64 `PHYS_OFFSET` (`memstart_addr`): the start of RAM, rounded down to 1 GiB.
pub const ARM64_PHYS_OFFSET: u64 = VIRT_RAM_START;
/// arm64 `VA_BITS`.
pub const ARM64_VA_BITS: u64 = 48;
/// arm64 `MODULES_VADDR` = `_PAGE_END(VA_BITS_MIN)`.
pub const ARM64_MODULES_VADDR: u64 = 0xffff_8000_0000_0000;
/// arm64 `KIMAGE_VADDR` = `MODULES_END` (6.1: 128 MiB of modules); `_text` without KASLR.
pub const ARM64_KIMAGE_VADDR: u64 = ARM64_MODULES_VADDR + 128 * MIB;
/// arm64 `VMEMMAP_START` = `-(1 << (VA_BITS - (PAGE_SHIFT - STRUCT_PAGE_MAX_SHIFT)))`, 4 KiB
/// pages ([`arm64_vmemmap`] for the others).
pub const ARM64_VMEMMAP_START: u64 = 0xffff_fc00_0000_0000;
/// arm64 `VMEMMAP_END` = `VMEMMAP_START + (1 << 47 >> 6)`, 4 KiB pages.
pub const ARM64_VMEMMAP_END: u64 = 0xffff_fe00_0000_0000;
/// arm64 `VMALLOC_END` = `VMEMMAP_START - SZ_256M`, 4 KiB pages.
pub const ARM64_VMALLOC_END: u64 = ARM64_VMEMMAP_START - 256 * MIB;

/// arm64 (6.1, VA_BITS 48) `VMEMMAP_START`, `VMEMMAP_END` and `VMALLOC_END` for pages of
/// `page_size` bytes (`arch/arm64/include/asm/memory.h`): `VMEMMAP_SHIFT = PAGE_SHIFT -
/// STRUCT_PAGE_MAX_SHIFT` (6), `VMEMMAP_START = -(1 << (VA_BITS - VMEMMAP_SHIFT))`,
/// `VMEMMAP_SIZE = (_PAGE_END(VA_BITS_MIN) - PAGE_OFFSET) >> VMEMMAP_SHIFT` (`1 << 47 >>
/// VMEMMAP_SHIFT`), `VMALLOC_END = VMEMMAP_START - SZ_256M`.
pub fn arm64_vmemmap(page_size: u64) -> (u64, u64, u64) {
    let shift = page_size.trailing_zeros() as u64 - 6;
    let start = 0u64.wrapping_sub(1 << (ARM64_VA_BITS - shift));
    (start, start + ((1 << 47) >> shift), start - 256 * MIB)
}
const _: () = assert!(ARM64_VMEMMAP_END == ARM64_VMEMMAP_START + ((1 << 47) >> 6));
/// `sizeof(struct elf_prstatus)` on arm64: the common part (112 bytes), `pr_reg` (34 × 8),
/// `pr_fpvalid`, padding (checked with gcc on an LP64 host).
pub const ARM64_PRSTATUS_SIZE: usize = 392;
/// Number of registers in arm64 `struct user_pt_regs`: x0..x30, sp, pc, pstate.
pub const ARM64_PRSTATUS_NREGS: usize = 34;
/// Where `pr_reg` starts in both architectures' `struct elf_prstatus`.
const _: () = assert!(ARM64_PRSTATUS_SIZE == PRSTATUS_REG_OFFSET + ARM64_PRSTATUS_NREGS * 8 + 8);
const _: () = assert!(PRSTATUS_SIZE == PRSTATUS_REG_OFFSET + PRSTATUS_NREGS * 8 + 8);
/// Every page of synthetic content starts with `source address ^ STAMP_MAGIC` unless it is a
/// zero page, so a misplaced page can be traced back to where it came from.
pub const STAMP_MAGIC: u64 = 0x5354_414d_5000_0000;

/// ELF constants (ELF64 gABI, `include/uapi/linux/elf.h`).
pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const ET_CORE: u16 = 4;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const NT_PRSTATUS: u32 = 1;
const ELF64_EHDR_SIZE: usize = 64;
const ELF64_PHDR_SIZE: usize = 56;

/// Size of each per-CPU note buffer as announced by its PT_NOTE (overstated, like the kernel's
/// `note_buf_t`).
pub const CPU_NOTE_BUF_SIZE: u64 = 0x400;
/// Size announced for the VMCOREINFO PT_NOTE (overstated, like `VMCOREINFO_NOTE_SIZE`).
pub const VMCOREINFO_NOTE_BUF_SIZE: u64 = 0x1000;

/// Start of the RAM QEMU `pc` maps above 4 GiB when the guest has more than fits below.
pub const PC_HIGH_RAM_BASE: u64 = 1 << 32;
/// QEMU `pc`: guests with at least this much RAM get 3 GiB below 4 GiB and the rest from
/// 4 GiB (`max-ram-below-4g` default 3.5 GiB, then `gigabyte_align`); smaller guests have all
/// of it from 0.
pub const PC_BELOW_4G_LIMIT: u64 = 0xe000_0000;
/// Left out of the crashed machine's RAM at the top of the RAM below 4 GiB: the firmware
/// (SeaBIOS 1.16 under QEMU 7.2) keeps its tables in the top 16 MiB and writes during boot
/// into the 120 KiB below them (measured: a 1 GiB guest's RAM changes at
/// 0x3efe2000..0x3f000000 and 0x3ffe0000..0x3ffe2000 before the kernel starts).
pub const FIRMWARE_TOP_RESERVE: u64 = 32 * MIB;
/// [`Shape::Sparse`]: bytes of generated content at the start and at the end of each RAM range.
pub const SPARSE_EDGE_WINDOW: u64 = MIB;
/// [`Shape::Sparse`]: the kernel-text view (and so the `struct new_utsname`) is this long.
pub const SPARSE_TEXT_LEN: u64 = 4 * MIB;

/// Where the synthetic machine lives in the QEMU guest of one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// Where the guest's RAM starts.
    pub ram_start: u64,
    /// The elfcorehdr, then the note buffers from `notes_base`.
    pub meta_base: u64,
    pub notes_base: u64,
    /// x86 kexec-tools' backup copy of the first 640 KiB; `None`: no backup range.
    pub backup_copy: Option<u64>,
    /// First address for RAM ranges.
    pub ram_base: u64,
    /// A block of guest RAM that QEMU writes before the kernel starts and that the RAM
    /// ranges leave out (start, length).
    pub qemu_hole: Option<(u64, u64)>,
}

impl GuestLayout {
    pub fn of(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => GuestLayout {
                ram_start: 0,
                meta_base: META_BASE,
                notes_base: NOTES_BASE,
                backup_copy: Some(BACKUP_COPY),
                ram_base: RAM_BASE,
                qemu_hole: None,
            },
            Arch::Aarch64 => GuestLayout {
                ram_start: VIRT_RAM_START,
                meta_base: VIRT_RAM_START + META_BASE,
                notes_base: VIRT_RAM_START + NOTES_BASE,
                backup_copy: None,
                ram_base: VIRT_RAM_START + RAM_BASE,
                qemu_hole: Some((VIRT_DTB, VIRT_DTB_HOLE)),
            },
        }
    }
}

/// How the RAM ranges are laid out and filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `ram_bytes` of generated content in ranges packed from [`RAM_BASE`], with small holes.
    Dense,
    /// The crashed machine's RAM is all of the guest's RAM as QEMU `pc` lays out
    /// `guest_ram` bytes ([`pc_ram_map`]): from `RAM_BASE` to [`FIRMWARE_TOP_RESERVE`] below
    /// the end of the RAM under 4 GiB, and everything from 4 GiB, cut into `ram_ranges - 1` ranges with small
    /// holes. Generated content only in a few windows ([`SynthImage::windows`]: the backup
    /// copy, the kernel text, the first and last [`SPARSE_EDGE_WINDOW`] of every range, so
    /// spread over the whole address space up to the top of RAM); every other page is zero,
    /// which is what untouched guest RAM holds, so a 64 GiB crashed machine costs the host
    /// only its windows.
    Sparse,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// The crashed machine's architecture ([`Shape::Sparse`]: x86_64 only).
    pub arch: Arch,
    pub seed: u64,
    /// Bytes of RAM covered by the RAM PT_LOADs, including the 640 KiB backup range (x86_64).
    pub ram_bytes: u64,
    /// Number of RAM PT_LOADs including the backup range on x86_64 (≥ 3).
    pub ram_ranges: usize,
    /// Number of CPUs (one PRSTATUS note each).
    pub cpus: usize,
    /// Whether the elfcorehdr carries a VMCOREINFO PT_NOTE.
    pub with_vmcoreinfo: bool,
    /// Guest RAM the ranges must fit in (QEMU gets what the blobs need). For
    /// [`Shape::Sparse`]: the guest's RAM exactly (QEMU's `-m`), which the ranges cover.
    pub guest_ram: u64,
    pub shape: Shape,
    /// [`Shape::Sparse`] only: cover about this many bytes of the guest's RAM instead of all
    /// of it. Each RAM range is shortened to its share (from its start; the last one keeps
    /// its end, so the RAM still reaches the top of the guest's RAM and `max_mapnr` spans
    /// all of it); the rest becomes holes between the PT_LOADs.
    pub sparse_cover: Option<u64>,
    /// The crashed kernel's page size ([`PAGE_SIZE`] unless set): VMCOREINFO `PAGESIZE`, the
    /// dump's block size. 16 and 64 KiB ([`ARM64_PAGE_SIZES`]) only for [`Arch::Aarch64`]
    /// and [`Shape::Dense`]; `ram_bytes` must then be a whole number of such pages.
    pub page_size: u64,
}

impl SynthSpec {
    /// The usual x86_64 shape: 2 CPUs, VMCOREINFO, 5–8 RAM ranges chosen by the seed.
    pub fn new(seed: u64, ram_bytes: u64) -> Self {
        Self::new_for(Arch::X86_64, seed, ram_bytes)
    }

    /// [`Self::new`] for a crashed machine of `arch`.
    pub fn new_for(arch: Arch, seed: u64, ram_bytes: u64) -> Self {
        let ram_ranges = SplitMix64::for_key(seed, 0xc047).range(5, 8) as usize;
        Self {
            arch,
            seed,
            ram_bytes,
            ram_ranges,
            cpus: 2,
            with_vmcoreinfo: true,
            guest_ram: GUEST_RAM_BYTES,
            shape: Shape::Dense,
            sparse_cover: None,
            page_size: PAGE_SIZE,
        }
    }

    /// [`Self::new_for`] for a crashed kernel with pages of `page_size` bytes.
    pub fn with_page_size(arch: Arch, seed: u64, ram_bytes: u64, page_size: u64) -> Self {
        Self {
            page_size,
            ..Self::new_for(arch, seed, ram_bytes)
        }
    }

    /// A [`Shape::Sparse`] crashed machine with `guest_ram` bytes of RAM (QEMU `-m`) in 6 RAM
    /// ranges plus the backup range, whatever the size, so two sizes differ only in how much
    /// RAM there is.
    pub fn sparse(seed: u64, guest_ram: u64) -> Self {
        Self::sparse_covering(seed, guest_ram, None)
    }

    /// [`Self::sparse`] with PT_LOADs over only about `cover` bytes of the guest's RAM
    /// ([`SynthSpec::sparse_cover`]).
    pub fn sparse_covering(seed: u64, guest_ram: u64, cover: Option<u64>) -> Self {
        let mut spec = Self {
            arch: Arch::X86_64,
            seed,
            ram_bytes: 0,
            ram_ranges: 7,
            cpus: 2,
            with_vmcoreinfo: true,
            guest_ram,
            shape: Shape::Sparse,
            sparse_cover: cover,
            page_size: PAGE_SIZE,
        };
        spec.ram_bytes = layout_sparse(&spec).map_or(0, |r| r.iter().map(|r| r.len).sum());
        spec
    }
}

/// Where QEMU `pc` (i440FX) puts `guest_ram` bytes of RAM: physical address ranges.
pub fn pc_ram_map(guest_ram: u64) -> Vec<Range<u64>> {
    if guest_ram >= PC_BELOW_4G_LIMIT {
        let below = 3 << 30;
        vec![
            0..below,
            PC_HIGH_RAM_BASE..PC_HIGH_RAM_BASE + (guest_ram - below),
        ]
    } else {
        std::iter::once(0..guest_ram).collect()
    }
}

/// The direct-map (linear-map) address of physical address `paddr` in a crashed machine of
/// `arch` ([`SynthImage::linear_vaddr`]).
pub fn linear_vaddr(arch: Arch, paddr: u64) -> u64 {
    match arch {
        Arch::X86_64 => PAGE_OFFSET.wrapping_add(paddr),
        Arch::Aarch64 => paddr.wrapping_sub(ARM64_PHYS_OFFSET) | ARM64_PAGE_OFFSET,
    }
}

/// One RAM PT_LOAD: `len` bytes of old physical memory at `paddr`, whose content is read from
/// `source` (the PT_LOAD's `p_offset`, a physical address in kexec's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub paddr: u64,
    pub len: u64,
    pub source: u64,
}

impl RamRange {
    pub fn end(&self) -> u64 {
        self.paddr + self.len
    }
    /// The 4 KiB frames of the range.
    pub fn pfns(&self) -> Range<u64> {
        self.pfns_of(PAGE_SIZE)
    }
    /// The pages of `page_size` bytes the range touches (a partial page counts, as in the
    /// dump's bitmaps).
    pub fn pfns_of(&self, page_size: u64) -> Range<u64> {
        self.paddr / page_size..self.end().div_ceil(page_size)
    }
    pub fn sources(&self) -> Range<u64> {
        self.source..self.source + self.len
    }
}

/// An ELF64 program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

impl Phdr {
    fn load(paddr: u64, vaddr: u64, source: u64, len: u64) -> Self {
        Phdr {
            p_type: PT_LOAD,
            p_flags: 7,
            p_offset: source,
            p_vaddr: vaddr,
            p_paddr: paddr,
            p_filesz: len,
            p_memsz: len,
            p_align: 0,
        }
    }
    fn note(addr: u64, len: u64) -> Self {
        Phdr {
            p_type: PT_NOTE,
            p_flags: 0,
            p_offset: addr,
            p_vaddr: 0,
            p_paddr: addr,
            p_filesz: len,
            p_memsz: len,
            p_align: 0,
        }
    }
}

/// The ELF core header as bytes: header fields that tests may corrupt plus the phdr table.
#[derive(Clone, Debug)]
pub struct ElfCoreHeader {
    pub ident_magic: [u8; 4],
    /// [`EM_X86_64`] or [`EM_AARCH64`].
    pub e_machine: u16,
    /// `None`: the real number of phdrs.
    pub e_phnum_override: Option<u16>,
    pub phdrs: Vec<Phdr>,
}

impl ElfCoreHeader {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ELF64_EHDR_SIZE + self.phdrs.len() * ELF64_PHDR_SIZE);
        b.extend_from_slice(&self.ident_magic);
        b.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&ET_CORE.to_le_bytes());
        b.extend_from_slice(&self.e_machine.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes()); // e_version
        b.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        b.extend_from_slice(&(ELF64_EHDR_SIZE as u64).to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        b.extend_from_slice(&(ELF64_EHDR_SIZE as u16).to_le_bytes());
        b.extend_from_slice(&(ELF64_PHDR_SIZE as u16).to_le_bytes());
        let phnum = self.e_phnum_override.unwrap_or(self.phdrs.len() as u16);
        b.extend_from_slice(&phnum.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
        b.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        b.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        debug_assert_eq!(b.len(), ELF64_EHDR_SIZE);
        for p in &self.phdrs {
            b.extend_from_slice(&p.p_type.to_le_bytes());
            b.extend_from_slice(&p.p_flags.to_le_bytes());
            for v in [
                p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }
}

/// A buffer of ELF notes placed in guest memory.
#[derive(Clone, Debug)]
pub struct NoteBuffer {
    pub addr: u64,
    /// The bytes really written (the note plus a zero Nhdr).
    pub bytes: Vec<u8>,
}

/// A file for QEMU's `-device loader,file=…,addr=…,force-raw=on`.
#[derive(Clone, Debug)]
pub struct LoaderBlob {
    pub path: PathBuf,
    pub addr: u64,
    pub len: u64,
}

/// Everything generated from a [`SynthSpec`].
#[derive(Clone, Debug)]
pub struct SynthImage {
    pub spec: SynthSpec,
    /// RAM PT_LOADs sorted by `paddr`; the backup range (paddr 0) first.
    pub ranges: Vec<RamRange>,
    /// Kernel text: physical start, length, virtual start.
    pub text_paddr: u64,
    pub text_len: u64,
    pub text_vaddr: u64,
    /// What the dump's sub header must say as `phys_base`: x86_64 `NUMBER(phys_base)`, arm64
    /// `NUMBER(PHYS_OFFSET)`.
    pub phys_base: u64,
    /// The KASLR offset (`KERNELOFFSET`).
    pub kernel_offset: u64,
    pub init_uts_ns_vaddr: u64,
    /// Physical address of the `struct new_utsname` (in a RAM range's source).
    pub utsname_paddr: u64,
    pub crash_time: u64,
    pub elfcorehdr_addr: u64,
    pub header: ElfCoreHeader,
    pub cpu_notes: Vec<NoteBuffer>,
    pub vmcoreinfo_note: Option<NoteBuffer>,
    /// VMCOREINFO text (the note descriptor), if any.
    pub vmcoreinfo: Option<String>,
    /// The PRSTATUS descriptor of each CPU, in CPU order.
    pub prstatus: Vec<Vec<u8>>,
    /// Pages whose content is not the generated one (keyed by source page address).
    overlays: BTreeMap<u64, Vec<u8>>,
    /// [`Shape::Sparse`]: the source address ranges (sorted, disjoint) holding generated
    /// content; every other page is zero. `None`: generated content everywhere.
    pub windows: Option<Vec<Range<u64>>>,
}

/// Errors from [`SynthImage::generate`].
#[derive(Debug, PartialEq, Eq)]
pub enum SynthError {
    /// The spec asks for fewer than 3 ranges, or ranges too small to hold the kernel text.
    BadShape(String),
    /// The ranges do not fit into guest RAM above `RAM_BASE`.
    DoesNotFit { needed_end: u64, guest_ram: u64 },
}

impl std::fmt::Display for SynthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SynthError::BadShape(s) => write!(f, "bad synthetic memory shape: {s}"),
            SynthError::DoesNotFit { needed_end, guest_ram } => write!(
                f,
                "synthetic memory would end at {needed_end:#x}, beyond the {guest_ram:#x} bytes of guest RAM; ask for less"
            ),
        }
    }
}

impl std::error::Error for SynthError {}

impl SynthImage {
    pub fn generate(spec: &SynthSpec) -> Result<Self, SynthError> {
        let ps = spec.page_size;
        if ps != PAGE_SIZE
            && !(spec.arch == Arch::Aarch64
                && spec.shape == Shape::Dense
                && ARM64_PAGE_SIZES.contains(&ps))
        {
            return Err(SynthError::BadShape(format!(
                "pages of {ps} bytes: only 4096, or 16 or 64 KiB for a dense arm64 machine (this one: {}, {:?})",
                spec.arch, spec.shape
            )));
        }
        let ranges = match spec.shape {
            Shape::Dense => layout_ranges(spec)?,
            Shape::Sparse => layout_sparse(spec)?,
        };
        let mut rng = SplitMix64::for_key(spec.seed, 0x7e47);
        let guest = GuestLayout::of(spec.arch);
        // The first RAM range that is not the backup range.
        let first = usize::from(guest.backup_copy.is_some());

        // Kernel text: half of the largest non-backup range, 2 MiB aligned when it fits.
        // Sparse: the first range, where a real kernel sits, so every size puts it (and the
        // utsname) at the same place.
        let big = match spec.shape {
            Shape::Dense => *ranges[first..]
                .iter()
                .max_by_key(|r| r.len)
                .expect("at least one RAM range"),
            Shape::Sparse => ranges[first],
        };
        let text_cap = match spec.shape {
            Shape::Dense => 16 * MIB,
            Shape::Sparse => SPARSE_TEXT_LEN,
        };
        let text_len = ((big.len / 2) / ps * ps).min(text_cap);
        if text_len < 8 * ps {
            return Err(SynthError::BadShape(
                "largest RAM range is below 16 pages".into(),
            ));
        }
        let aligned = big.paddr.next_multiple_of(2 * MIB);
        let text_paddr = if aligned + text_len <= big.end() {
            aligned
        } else {
            big.paddr
        };
        let kaslr = 2 * MIB * rng.range(0, 7);
        let (kernel_offset, text_vaddr, phys_base) = match spec.arch {
            Arch::X86_64 => {
                let kernel_offset = kaslr.min((text_paddr - 0x100_0000) / (2 * MIB) * (2 * MIB));
                let text_vaddr = DEFAULT_TEXT_VADDR + kernel_offset;
                // pa = va - __START_KERNEL_map + phys_base, for va = _text.
                (
                    kernel_offset,
                    text_vaddr,
                    text_paddr - (text_vaddr - START_KERNEL_MAP),
                )
            }
            // The image's virtual place does not depend on its physical one: pa = va -
            // kimage_voffset ([`SynthImage::kimage_voffset`]).
            Arch::Aarch64 => (kaslr, ARM64_KIMAGE_VADDR + kaslr, ARM64_PHYS_OFFSET),
        };

        // init_uts_ns in the middle of the text range, the utsname crossing a page boundary
        // (0x104 bytes before it: 0xefc into a 4 KiB page).
        let init_uts_ns_paddr = text_paddr + (text_len / 2) / ps * ps + ps - 0x104;
        let utsname_paddr = init_uts_ns_paddr + UTS_NAMESPACE_NAME_OFFSET;
        let init_uts_ns_vaddr = init_uts_ns_paddr - text_paddr + text_vaddr;
        let crash_time = 1_767_225_600 + spec.seed % 100_000;

        let mut image = SynthImage {
            spec: spec.clone(),
            ranges,
            text_paddr,
            text_len,
            text_vaddr,
            phys_base,
            kernel_offset,
            init_uts_ns_vaddr,
            utsname_paddr,
            crash_time,
            elfcorehdr_addr: guest.meta_base,
            header: ElfCoreHeader {
                ident_magic: *b"\x7fELF",
                e_machine: match spec.arch {
                    Arch::X86_64 => EM_X86_64,
                    Arch::Aarch64 => EM_AARCH64,
                },
                e_phnum_override: None,
                phdrs: vec![],
            },
            cpu_notes: vec![],
            vmcoreinfo_note: None,
            vmcoreinfo: None,
            prstatus: vec![],
            overlays: BTreeMap::new(),
            windows: None,
        };
        if spec.shape == Shape::Sparse {
            let mut w = vec![
                BACKUP_COPY..BACKUP_COPY + BACKUP_SIZE,
                text_paddr..text_paddr + text_len,
            ];
            for r in &image.ranges[first..] {
                let edge = SPARSE_EDGE_WINDOW.min(r.len);
                w.push(r.source..r.source + edge);
                w.push(r.source + r.len - edge..r.source + r.len);
            }
            image.windows = Some(merge_ranges(w));
        }
        image.put_bytes(utsname_paddr, &utsname_bytes_for(spec.arch));
        if let Some(pgd) = image.swapper_pg_dir_paddr() {
            // An empty top-level table (one page): every kernel virtual address outside the
            // image is unmapped, as nothing in this machine needs page tables.
            image.put_bytes(pgd, &vec![0; ps as usize]);
        }
        debug_assert!(image.overlays.keys().all(|&p| image.in_window(p)));

        let mut phdrs = Vec::new();
        let mut slot = guest.notes_base;
        for cpu in 0..spec.cpus {
            let desc = match spec.arch {
                Arch::X86_64 => prstatus_desc(cpu, text_vaddr).to_vec(),
                Arch::Aarch64 => arm64_prstatus_desc(cpu, text_vaddr).to_vec(),
            };
            let mut bytes = elf_note("CORE", NT_PRSTATUS, &desc);
            bytes.extend_from_slice(&[0; 12]); // final_note(): an empty Nhdr
            assert!(bytes.len() as u64 <= CPU_NOTE_BUF_SIZE);
            phdrs.push(Phdr::note(slot, CPU_NOTE_BUF_SIZE));
            image.cpu_notes.push(NoteBuffer { addr: slot, bytes });
            image.prstatus.push(desc);
            slot += PAGE_SIZE;
        }
        if spec.with_vmcoreinfo {
            let text = image.vmcoreinfo_text();
            let mut bytes = elf_note("VMCOREINFO", 0, text.as_bytes());
            bytes.extend_from_slice(&[0; 12]);
            assert!(bytes.len() as u64 <= VMCOREINFO_NOTE_BUF_SIZE);
            phdrs.push(Phdr::note(slot, VMCOREINFO_NOTE_BUF_SIZE));
            image.vmcoreinfo_note = Some(NoteBuffer { addr: slot, bytes });
            image.vmcoreinfo = Some(text);
            slot += VMCOREINFO_NOTE_BUF_SIZE;
        }
        assert!(slot <= guest.meta_base + (BACKUP_COPY - META_BASE));
        phdrs.push(Phdr::load(text_paddr, text_vaddr, text_paddr, text_len));
        for r in &image.ranges {
            phdrs.push(Phdr::load(
                r.paddr,
                image.linear_vaddr(r.paddr),
                r.source,
                r.len,
            ));
        }
        image.header.phdrs = phdrs;
        Ok(image)
    }

    /// The crashed machine's architecture.
    pub fn arch(&self) -> Arch {
        self.spec.arch
    }

    /// The crashed kernel's page size ([`SynthSpec::page_size`]).
    pub fn page_size(&self) -> u64 {
        self.spec.page_size
    }

    /// The direct-map (linear-map) address of physical address `paddr`: what a RAM PT_LOAD's
    /// `p_vaddr` says. x86_64: `PAGE_OFFSET + pa`; arm64: `(pa - PHYS_OFFSET) | PAGE_OFFSET`.
    pub fn linear_vaddr(&self, paddr: u64) -> u64 {
        linear_vaddr(self.spec.arch, paddr)
    }

    /// arm64 `kimage_voffset`: kernel-image virtual minus physical address.
    pub fn kimage_voffset(&self) -> u64 {
        self.text_vaddr.wrapping_sub(self.text_paddr)
    }

    /// arm64: where `swapper_pg_dir` is, a quarter into the kernel text (aligned to the
    /// crashed kernel's page, away from the utsname in the middle). `None` on x86_64.
    pub fn swapper_pg_dir_paddr(&self) -> Option<u64> {
        let ps = self.page_size();
        (self.spec.arch == Arch::Aarch64).then(|| self.text_paddr + (self.text_len / 4) / ps * ps)
    }

    fn vmcoreinfo_text(&self) -> String {
        match self.spec.arch {
            Arch::X86_64 => self.x86_64_vmcoreinfo_text(),
            Arch::Aarch64 => self.arm64_vmcoreinfo_text(),
        }
    }

    /// The generic keys a 6.1 arm64 kernel writes that the capture kernel uses, then what
    /// `arch_crash_save_vmcoreinfo()` appends (in its order), then `CRASHTIME`.
    fn arm64_vmcoreinfo_text(&self) -> String {
        let pgd = self
            .swapper_pg_dir_paddr()
            .expect("arm64")
            .wrapping_add(self.kimage_voffset());
        let (vmemmap_start, vmemmap_end, vmalloc_end) = arm64_vmemmap(self.page_size());
        format!(
            "OSRELEASE={OSRELEASE}\n\
             PAGESIZE={}\n\
             SYMBOL(init_uts_ns)={:x}\n\
             OFFSET(uts_namespace.name)={UTS_NAMESPACE_NAME_OFFSET}\n\
             SYMBOL(swapper_pg_dir)={pgd:x}\n\
             SYMBOL(_stext)={:x}\n\
             NUMBER(VA_BITS)={ARM64_VA_BITS}\n\
             NUMBER(MODULES_VADDR)={ARM64_MODULES_VADDR:#x}\n\
             NUMBER(MODULES_END)={ARM64_KIMAGE_VADDR:#x}\n\
             NUMBER(VMALLOC_START)={ARM64_KIMAGE_VADDR:#x}\n\
             NUMBER(VMALLOC_END)={vmalloc_end:#x}\n\
             NUMBER(VMEMMAP_START)={vmemmap_start:#x}\n\
             NUMBER(VMEMMAP_END)={vmemmap_end:#x}\n\
             NUMBER(kimage_voffset)={:#x}\n\
             NUMBER(PHYS_OFFSET)={ARM64_PHYS_OFFSET:#x}\n\
             NUMBER(TCR_EL1_T1SZ)={:#x}\n\
             KERNELOFFSET={:x}\n\
             NUMBER(KERNELPACMASK)=0x0\n\
             CRASHTIME={}\n",
            self.page_size(),
            self.init_uts_ns_vaddr,
            self.text_vaddr,
            self.kimage_voffset(),
            64 - ARM64_VA_BITS,
            self.kernel_offset,
            self.crash_time
        )
    }

    fn x86_64_vmcoreinfo_text(&self) -> String {
        format!(
            "OSRELEASE={OSRELEASE}\n\
             PAGESIZE={PAGE_SIZE}\n\
             SYMBOL(init_uts_ns)={:x}\n\
             OFFSET(uts_namespace.name)={UTS_NAMESPACE_NAME_OFFSET}\n\
             SYMBOL(_stext)={:x}\n\
             NUMBER(phys_base)={}\n\
             NUMBER(pgtable_l5_enabled)=0\n\
             KERNELOFFSET={:x}\n\
             CRASHTIME={}\n",
            self.init_uts_ns_vaddr,
            self.text_vaddr,
            self.phys_base,
            self.kernel_offset,
            self.crash_time
        )
    }

    /// Overwrite bytes of old memory at source physical address `addr` (kept per 4 KiB frame,
    /// whatever the page size).
    fn put_bytes(&mut self, addr: u64, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            let a = addr + done as u64;
            let frame = a / PAGE_SIZE * PAGE_SIZE;
            let off = (a - frame) as usize;
            let n = (PAGE - off).min(bytes.len() - done);
            let (seed, ps) = (self.spec.seed, self.spec.page_size);
            let buf = self.overlays.entry(frame).or_insert_with(|| {
                // The frame's slice of its generated page.
                let page = frame / ps * ps;
                let mut p = vec![0; ps as usize];
                fill_page_of(seed, page, &mut p);
                p[(frame - page) as usize..][..PAGE].to_vec()
            });
            buf[off..off + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    /// Content of old memory at the source physical address `src` (4 KiB aligned): one 4 KiB
    /// frame, a slice of the crashed kernel's page if that is larger.
    pub fn source_page(&self, src: u64, out: &mut [u8; PAGE]) {
        if let Some(p) = self.overlays.get(&src) {
            out.copy_from_slice(p);
            return;
        }
        let ps = self.page_size();
        let page = src / ps * ps;
        let mut p = vec![0; ps as usize];
        self.source_block(page, &mut p);
        out.copy_from_slice(&p[(src - page) as usize..][..PAGE]);
    }

    /// Content of old memory at the source physical address `src`: one page of the crashed
    /// kernel's size (`out.len()` is [`Self::page_size`], `src` a multiple of it).
    pub fn source_block(&self, src: u64, out: &mut [u8]) {
        debug_assert!(out.len() as u64 == self.page_size() && src.is_multiple_of(self.page_size()));
        if self.in_window(src) {
            fill_page_of(self.spec.seed, src, out);
        } else {
            out.fill(0);
        }
        for (&frame, p) in self.overlays.range(src..src + out.len() as u64) {
            out[(frame - src) as usize..][..PAGE].copy_from_slice(p);
        }
    }

    /// Whether the page at source address `src` holds generated content (always, unless the
    /// image is [`Shape::Sparse`]).
    pub fn in_window(&self, src: u64) -> bool {
        match &self.windows {
            None => true,
            Some(w) => {
                let i = w.partition_point(|r| r.end <= src);
                w.get(i).is_some_and(|r| r.start <= src)
            }
        }
    }

    /// Bytes of generated content (what the QEMU loader blobs hold besides the metadata).
    pub fn content_bytes(&self) -> u64 {
        match &self.windows {
            None => self.ranges.iter().map(|r| r.len).sum(),
            Some(w) => w.iter().map(|r| r.end - r.start).sum(),
        }
    }

    /// The RAM range holding the 4 KiB frame `pfn` (by `p_paddr`).
    pub fn range_of_pfn(&self, pfn: u64) -> Option<&RamRange> {
        self.range_of(pfn.checked_mul(PAGE_SIZE)?)
    }

    /// The RAM range holding physical address `pa` (by `p_paddr`).
    fn range_of(&self, pa: u64) -> Option<&RamRange> {
        let i = self.ranges.partition_point(|r| r.end() <= pa);
        self.ranges.get(i).filter(|r| r.paddr <= pa)
    }

    /// Content the dump must show for page `pfn` of the crashed kernel's size (`out.len()` is
    /// [`Self::page_size`]), or `false` if that page is not in a RAM range.
    pub fn dump_block(&self, pfn: u64, out: &mut [u8]) -> bool {
        let ps = self.page_size();
        assert_eq!(
            out.len() as u64,
            ps,
            "dump_block takes one page of the crashed kernel's size"
        );
        let Some(pa) = pfn.checked_mul(ps) else {
            return false;
        };
        match self.range_of(pa) {
            // Ranges start and end on page boundaries (layout_ranges).
            Some(r) => {
                self.source_block(r.source + pa - r.paddr, out);
                true
            }
            None => false,
        }
    }

    /// Content the dump must show for the 4 KiB frame `pfn` (a slice of a larger page), or
    /// `false` if the frame is not in any RAM range.
    pub fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
        match self.range_of_pfn(pfn) {
            Some(r) => {
                self.source_page(r.source + pfn * PAGE_SIZE - r.paddr, out);
                true
            }
            None => false,
        }
    }

    /// Highest pfn in any RAM range, plus one (`max_mapnr`), in pages of the crashed kernel.
    pub fn max_mapnr(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.pfns_of(self.page_size()).end)
            .max()
            .unwrap_or(0)
    }

    /// The RAM ranges' pfns, in pages of the crashed kernel (what the dump's bitmaps hold).
    pub fn ram_pfn_ranges(&self) -> Vec<Range<u64>> {
        self.ram_pfn_ranges_of(self.page_size())
    }

    /// The RAM ranges' pfns in pages of `page_size` bytes.
    pub fn ram_pfn_ranges_of(&self, page_size: u64) -> Vec<Range<u64>> {
        self.ranges.iter().map(|r| r.pfns_of(page_size)).collect()
    }

    pub fn elfcorehdr_bytes(&self) -> Vec<u8> {
        self.header.to_bytes()
    }

    /// Write every blob under `dir` and return them for `-device loader`.
    pub fn write_blobs(&self, dir: &Path) -> io::Result<Vec<LoaderBlob>> {
        std::fs::create_dir_all(dir)?;
        let mut blobs = Vec::new();

        // elfcorehdr and note buffers: one file from the elfcorehdr on.
        let meta_base = self.elfcorehdr_addr;
        let hdr = self.elfcorehdr_bytes();
        let mut meta = hdr.clone();
        if meta.len() as u64 > ELFCOREHDR_ROOM {
            return Err(io::Error::other(format!(
                "elfcorehdr of {} bytes does not fit its room",
                meta.len()
            )));
        }
        for nb in self.cpu_notes.iter().chain(self.vmcoreinfo_note.iter()) {
            let off = (nb.addr - meta_base) as usize;
            if meta.len() < off + nb.bytes.len() {
                meta.resize(off + nb.bytes.len(), 0);
            }
            meta[off..off + nb.bytes.len()].copy_from_slice(&nb.bytes);
        }
        let path = dir.join("meta.bin");
        std::fs::write(&path, &meta)?;
        blobs.push(LoaderBlob {
            path,
            addr: meta_base,
            len: meta.len() as u64,
        });

        // Sparse: only the windows; the rest of guest RAM is zero as QEMU starts it.
        let sources: Vec<Range<u64>> = match &self.windows {
            None => self.ranges.iter().map(|r| r.sources()).collect(),
            Some(w) => w.clone(),
        };
        let ps = self.page_size();
        let mut page = vec![0u8; ps as usize];
        for (i, r) in sources.iter().enumerate() {
            let path = dir.join(format!("ram{i}-{:x}.bin", r.start));
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            debug_assert!(r.start.is_multiple_of(ps) && r.end.is_multiple_of(ps));
            for src in r.clone().step_by(ps as usize) {
                self.source_block(src, &mut page);
                w.write_all(&page)?;
            }
            w.flush()?;
            blobs.push(LoaderBlob {
                path,
                addr: r.start,
                len: r.end - r.start,
            });
        }
        Ok(blobs)
    }
}

/// Lay out the RAM ranges: on x86_64 the backup range first, then `ram_ranges - 1` ranges from
/// RAM_BASE; on arm64 `ram_ranges` ranges from 1 GiB + RAM_BASE, none over QEMU's device tree
/// ([`GuestLayout::qemu_hole`]).
fn layout_ranges(spec: &SynthSpec) -> Result<Vec<RamRange>, SynthError> {
    if spec.ram_ranges < 3 {
        return Err(SynthError::BadShape(format!(
            "{} RAM ranges; need at least 3",
            spec.ram_ranges
        )));
    }
    let guest = GuestLayout::of(spec.arch);
    let backup = if guest.backup_copy.is_some() {
        BACKUP_SIZE
    } else {
        0
    };
    let k = spec.ram_ranges - usize::from(backup > 0);
    let ps = spec.page_size;
    let min_pages = 16u64;
    let total_pages = spec.ram_bytes.saturating_sub(backup) / ps;
    if total_pages < k as u64 * min_pages {
        return Err(SynthError::BadShape(format!(
            "{} bytes is too little for {k} ranges of at least {min_pages} pages",
            spec.ram_bytes
        )));
    }
    let mut rng = SplitMix64::for_key(spec.seed, 0x1a70);
    let weights: Vec<u64> = (0..k).map(|_| rng.range(1, 100)).collect();
    let sum: u64 = weights.iter().sum();
    let spare = total_pages - k as u64 * min_pages;
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| min_pages + spare * w / sum)
        .collect();
    let assigned: u64 = sizes.iter().sum();
    sizes[k - 1] += total_pages - assigned;

    // The first range starts 3 pages past a 2 MiB boundary; make sure it also ends off one.
    let first_start = guest.ram_base + 3 * ps;
    if (first_start + sizes[0] * ps).is_multiple_of(2 * MIB) {
        sizes[0] -= 1;
        sizes[1] += 1;
    }

    let mut ranges: Vec<RamRange> = guest
        .backup_copy
        .map(|copy| RamRange {
            paddr: 0,
            len: BACKUP_SIZE,
            source: copy,
        })
        .into_iter()
        .collect();
    let mut cursor = first_start;
    for (i, &pages) in sizes.iter().enumerate() {
        if i > 0 {
            // A hole of up to 1 MiB, whole pages.
            cursor += (rng.range(1, 256) * PAGE_SIZE).next_multiple_of(ps);
        }
        if let Some((hole, hole_len)) = guest.qemu_hole {
            // A range that would cover what QEMU writes starts after it instead, as far past
            // the hole's end as it was past the hole's start (so still off 2 MiB).
            if cursor < hole + hole_len && hole < cursor + pages * ps {
                cursor = hole + hole_len + cursor % (2 * MIB);
            }
        }
        ranges.push(RamRange {
            paddr: cursor,
            len: pages * ps,
            source: cursor,
        });
        cursor += pages * ps;
    }
    if cursor > guest.ram_start + spec.guest_ram {
        return Err(SynthError::DoesNotFit {
            needed_end: cursor,
            guest_ram: spec.guest_ram,
        });
    }
    Ok(ranges)
}

/// Lay out a [`Shape::Sparse`] machine: the backup range, then `ram_ranges - 1` ranges that
/// cover the guest's RAM ([`pc_ram_map`]) from `RAM_BASE` up, less the firmware's top
/// [`FIRMWARE_TOP_RESERVE`] below 4 GiB, cut at evenly spaced points (a hole of 1–255 pages
/// at each cut), then shortened to [`SynthSpec::sparse_cover`] if set.
fn layout_sparse(spec: &SynthSpec) -> Result<Vec<RamRange>, SynthError> {
    if spec.arch != Arch::X86_64 {
        return Err(SynthError::BadShape(format!(
            "the sparse shape follows QEMU pc's RAM layout: x86_64 only, not {}",
            spec.arch
        )));
    }
    let map = pc_ram_map(spec.guest_ram);
    let low_end = map[0].end.saturating_sub(FIRMWARE_TOP_RESERVE);
    let first_start = RAM_BASE + 3 * PAGE_SIZE;
    if low_end < first_start + 64 * MIB {
        return Err(SynthError::BadShape(format!(
            "a sparse machine needs at least {} MiB of guest RAM",
            (first_start + 64 * MIB + FIRMWARE_TOP_RESERVE) >> 20
        )));
    }
    let mut regions: Vec<Range<u64>> = std::iter::once(first_start..low_end).collect();
    regions.extend(map.get(1).cloned());
    let k = spec.ram_ranges.saturating_sub(1);
    if k < regions.len() {
        return Err(SynthError::BadShape(format!(
            "{} RAM ranges for {} RAM regions (plus the backup range)",
            spec.ram_ranges,
            regions.len()
        )));
    }
    let cuts = (k - regions.len()) as u64;
    let total: u64 = regions.iter().map(|r| r.end - r.start).sum();
    let mut rng = SplitMix64::for_key(spec.seed, 0x5a45e);
    // Cut points as offsets into the concatenated regions, with a hole after each.
    let mut cut_at: Vec<(u64, u64)> = (1..=cuts)
        .map(|i| {
            let off = total / (cuts + 1) * i + rng.range(1, 255) * PAGE_SIZE;
            (off / PAGE_SIZE * PAGE_SIZE, rng.range(1, 255) * PAGE_SIZE)
        })
        .collect();
    cut_at.reverse();
    let mut ranges = vec![RamRange {
        paddr: 0,
        len: BACKUP_SIZE,
        source: BACKUP_COPY,
    }];
    let mut base = 0; // offset of the region's start among the concatenated regions
    for reg in &regions {
        let len = reg.end - reg.start;
        let mut start = reg.start;
        while let Some(&(off, hole)) = cut_at.last() {
            if off >= base + len {
                break;
            }
            cut_at.pop();
            let cut = reg.start + off.saturating_sub(base);
            if cut <= start + 4 * SPARSE_EDGE_WINDOW
                || cut + hole + 4 * SPARSE_EDGE_WINDOW >= reg.end
            {
                return Err(SynthError::BadShape(format!(
                    "{} ranges in {} MiB of RAM leave a range too small",
                    spec.ram_ranges,
                    spec.guest_ram >> 20
                )));
            }
            ranges.push(RamRange {
                paddr: start,
                len: cut - start,
                source: start,
            });
            start = cut + hole;
        }
        ranges.push(RamRange {
            paddr: start,
            len: reg.end - start,
            source: start,
        });
        base += len;
    }
    debug_assert_eq!(ranges.len(), spec.ram_ranges);
    if let Some(cover) = spec.sparse_cover {
        let share = (cover / k as u64 / PAGE_SIZE * PAGE_SIZE).max(8 * SPARSE_EDGE_WINDOW);
        let last = ranges.len() - 1;
        for (i, r) in ranges.iter_mut().enumerate().skip(1) {
            if r.len > share {
                if i == last {
                    r.paddr += r.len - share;
                    r.source = r.paddr;
                }
                r.len = share;
            }
        }
    }
    Ok(ranges)
}

/// Sort and merge overlapping or touching ranges.
fn merge_ranges(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// What kind of content a generated page has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Zero,
    Random,
    Text,
    Pattern,
    Sparse,
}

/// The kind of the generated page at source address `src` (about 50% zero, 15% random,
/// 35% compressible).
pub fn page_kind(seed: u64, src: u64) -> PageKind {
    let mut g = SplitMix64::for_key(seed, src / PAGE_SIZE);
    match g.below(100) {
        0..50 => PageKind::Zero,
        50..65 => PageKind::Random,
        _ => match g.below(3) {
            0 => PageKind::Text,
            1 => PageKind::Pattern,
            _ => PageKind::Sparse,
        },
    }
}

const WORDS: &[&str] = &[
    "the", "kernel", "page", "crash", "dump", "memory", "lifeboat", "capture", "struct", "task",
    "0x", "ffff888", "init", "vmcore", "kexec", "zone", "slab", "return", "static", "void", "irq",
    "lock", "sched", "\n", "\t", "=", "NULL", "if", "else", "cpu",
];

/// Generate the content of the 4 KiB page at source address `src` from the seed.
pub fn fill_page(seed: u64, src: u64, out: &mut [u8; PAGE]) {
    fill_page_of(seed, src, out)
}

/// Generate the content of the page at source address `src` (a multiple of the page size
/// `out.len()`, a power of two ≥ 4 KiB) from the seed: one [`PageKind`] for the whole page,
/// so a page of any size is all zero, random or compressible. Pages of 4 KiB are exactly
/// [`fill_page`]'s.
pub fn fill_page_of(seed: u64, src: u64, out: &mut [u8]) {
    let len = out.len();
    debug_assert!(len.is_power_of_two() && len >= PAGE && src.is_multiple_of(len as u64));
    let kind = page_kind(seed, src);
    let mut g = SplitMix64::for_key(seed ^ 0xc0_47e7, src / PAGE_SIZE);
    match kind {
        PageKind::Zero => {
            out.fill(0);
            return;
        }
        PageKind::Random => g.fill(out),
        PageKind::Text => {
            let mut i = 0;
            while i < len {
                let w = WORDS[g.below(WORDS.len() as u64) as usize].as_bytes();
                let n = w.len().min(len - i);
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
                if i < len {
                    out[i] = b' ';
                    i += 1;
                }
            }
            sprinkle(&mut g, out, 24);
        }
        PageKind::Pattern => {
            let len = g.range(8, 64) as usize;
            let mut pat = [0u8; 64];
            g.fill(&mut pat[..len]);
            for (i, b) in out.iter_mut().enumerate() {
                *b = pat[i % len];
            }
            sprinkle(&mut g, out, 32);
        }
        PageKind::Sparse => {
            out.fill(0);
            for _ in 0..g.range(4, 64) {
                let slot = g.below((len / 8) as u64) as usize * 8;
                out[slot..slot + 8].copy_from_slice(&g.next_u64().to_le_bytes());
            }
        }
    }
    out[..8].copy_from_slice(&(src ^ STAMP_MAGIC).to_le_bytes());
}

fn sprinkle(g: &mut SplitMix64, out: &mut [u8], max: u64) {
    for _ in 0..g.range(1, max) {
        let at = g.below(out.len() as u64) as usize;
        out[at] = g.next_u64() as u8;
    }
}

/// If `page` starts with a generator stamp, the source address it was generated for.
pub fn stamp_source(page: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(page.get(..8)?.try_into().ok()?) ^ STAMP_MAGIC;
    (v.is_multiple_of(PAGE_SIZE) && v < 1 << 46).then_some(v)
}

/// `struct new_utsname` (include/uapi/linux/utsname.h): six NUL-padded `char[65]`, of the
/// x86_64 machine.
pub fn utsname_bytes() -> [u8; UTSNAME_SIZE] {
    utsname_bytes_for(Arch::X86_64)
}

/// [`utsname_bytes`] of a crashed machine of `arch` (`machine` is [`Arch::name`]).
pub fn utsname_bytes_for(arch: Arch) -> [u8; UTSNAME_SIZE] {
    let mut b = [0u8; UTSNAME_SIZE];
    for (i, s) in [
        UTS_SYSNAME,
        UTS_NODENAME,
        OSRELEASE,
        UTS_VERSION,
        arch.name(),
        UTS_DOMAINNAME,
    ]
    .iter()
    .enumerate()
    {
        b[i * 65..i * 65 + s.len()].copy_from_slice(s.as_bytes());
    }
    b
}

/// The register value the synthetic PRSTATUS of `cpu` holds in register `reg`.
pub fn prstatus_reg(cpu: usize, reg: usize) -> u64 {
    0x4c1f_eb0a_0000_0000 | ((cpu as u64) << 16) | reg as u64
}

/// x86_64 `struct elf_prstatus` (336 bytes) with recognisable contents.
pub fn prstatus_desc(cpu: usize, text_vaddr: u64) -> [u8; PRSTATUS_SIZE] {
    let mut d = [0u8; PRSTATUS_SIZE];
    d[PRSTATUS_PID_OFFSET..PRSTATUS_PID_OFFSET + 4]
        .copy_from_slice(&(100 + cpu as u32).to_le_bytes());
    for r in 0..PRSTATUS_NREGS {
        let v = if r == 16 {
            text_vaddr + 0x1234 + cpu as u64
        } else {
            prstatus_reg(cpu, r)
        }; // 16 = rip
        let at = PRSTATUS_REG_OFFSET + r * 8;
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// arm64 `struct elf_prstatus` (392 bytes): recognisable x0..x30 as on x86_64, `sp` a
/// linear-map address, `pc` in the kernel text, `pstate` EL1h with interrupts masked.
pub fn arm64_prstatus_desc(cpu: usize, text_vaddr: u64) -> [u8; ARM64_PRSTATUS_SIZE] {
    let mut d = [0u8; ARM64_PRSTATUS_SIZE];
    d[PRSTATUS_PID_OFFSET..PRSTATUS_PID_OFFSET + 4]
        .copy_from_slice(&(100 + cpu as u32).to_le_bytes());
    for r in 0..ARM64_PRSTATUS_NREGS {
        let v = match r {
            31 => ARM64_PAGE_OFFSET + 0x0123_0000 + 0x4000 * cpu as u64 + 0x3f40, // sp
            32 => text_vaddr + 0x1234 + cpu as u64,                               // pc
            33 => 0x3c5, // pstate: EL1h, D, A, I, F masked
            _ => prstatus_reg(cpu, r),
        };
        let at = PRSTATUS_REG_OFFSET + r * 8;
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// One ELF note: Nhdr, name (NUL-terminated, padded to 4), descriptor (padded to 4).
pub fn elf_note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let namesz = name.len() + 1;
    let mut b = Vec::new();
    b.extend_from_slice(&(namesz as u32).to_le_bytes());
    b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    b.extend_from_slice(&n_type.to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.resize(12 + namesz.next_multiple_of(4), 0);
    b.extend_from_slice(desc);
    b.resize(
        12 + namesz.next_multiple_of(4) + desc.len().next_multiple_of(4),
        0,
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: u64, mib: u64) -> SynthImage {
        SynthImage::generate(&SynthSpec::new(seed, mib * MIB)).unwrap()
    }

    #[test]
    fn layout_rules_hold_for_many_seeds() {
        for seed in 0..200 {
            for mib in [8, 24, 256] {
                let im = image(seed, mib);
                let r = &im.ranges;
                assert!(
                    (5..=8).contains(&r.len()),
                    "seed {seed}: {} ranges",
                    r.len()
                );
                assert_eq!(
                    r[0],
                    RamRange {
                        paddr: 0,
                        len: BACKUP_SIZE,
                        source: BACKUP_COPY
                    }
                );
                assert_eq!(r.iter().map(|r| r.len).sum::<u64>(), mib * MIB);
                for w in r.windows(2) {
                    assert!(
                        w[0].end() < w[1].paddr,
                        "seed {seed}: no hole between {w:?}"
                    );
                }
                for x in &r[1..] {
                    assert_eq!(x.paddr, x.source);
                    assert!(x.paddr >= RAM_BASE && x.end() <= GUEST_RAM_BYTES);
                    assert_eq!(x.paddr % PAGE_SIZE, 0);
                    assert_eq!(x.len % PAGE_SIZE, 0);
                }
                assert!(!r[1].paddr.is_multiple_of(2 * MIB) && !r[1].end().is_multiple_of(2 * MIB));
                // The text view lies inside one RAM range and translates with phys_base.
                assert!(r
                    .iter()
                    .any(|x| x.paddr <= im.text_paddr && im.text_paddr + im.text_len <= x.end()));
                assert_eq!(
                    im.text_vaddr - START_KERNEL_MAP + im.phys_base,
                    im.text_paddr
                );
                let uts = im.init_uts_ns_vaddr - START_KERNEL_MAP
                    + im.phys_base
                    + UTS_NAMESPACE_NAME_OFFSET;
                assert_eq!(uts, im.utsname_paddr);
                assert!(uts + UTSNAME_SIZE as u64 <= im.text_paddr + im.text_len);
                // Metadata and the backup copy are outside every RAM source.
                for x in r {
                    assert!(x.sources().end <= META_BASE || x.source >= RAM_BASE || x.paddr == 0);
                }
            }
        }
    }

    #[test]
    fn pc_ram_map_matches_qemu_pc() {
        assert_eq!(pc_ram_map(1 << 30), vec![0..1 << 30]);
        assert_eq!(pc_ram_map(0xdfff_f000), vec![0..0xdfff_f000]);
        assert_eq!(pc_ram_map(4 << 30), vec![0..3 << 30, 4 << 30..5 << 30]);
        assert_eq!(pc_ram_map(64 << 30), vec![0..3 << 30, 4 << 30..65 << 30]);
    }

    #[test]
    fn sparse_layout_covers_the_guest_ram_with_content_in_windows() {
        for gib in [1u64, 4, 64] {
            for seed in [0x64b0, 1, 2, 3] {
                let spec = SynthSpec::sparse(seed, gib << 30);
                let im = SynthImage::generate(&spec).unwrap();
                let r = &im.ranges;
                let map = pc_ram_map(gib << 30);
                assert_eq!(r.len(), 7, "{gib} GiB seed {seed}: {r:?}");
                assert_eq!(
                    r[0],
                    RamRange {
                        paddr: 0,
                        len: BACKUP_SIZE,
                        source: BACKUP_COPY
                    }
                );
                assert_eq!(r.iter().map(|r| r.len).sum::<u64>(), spec.ram_bytes);
                assert_eq!(r[1].paddr, RAM_BASE + 3 * PAGE_SIZE);
                // Every range inside the guest's RAM, below the firmware's top, with holes.
                for x in &r[1..] {
                    assert_eq!(x.paddr, x.source);
                    assert!(x.len >= 8 * SPARSE_EDGE_WINDOW && x.len % PAGE_SIZE == 0);
                    assert!(
                        map.iter().any(|m| m.start <= x.paddr && x.end() <= m.end),
                        "{x:?}"
                    );
                    assert!(
                        x.end() <= map[0].end - FIRMWARE_TOP_RESERVE || x.paddr >= PC_HIGH_RAM_BASE
                    );
                }
                for w in r.windows(2) {
                    assert!(w[0].end() < w[1].paddr, "no hole between {w:?}");
                }
                // The RAM reaches the top of the guest's RAM: max_mapnr spans all of it.
                let top = map.last().unwrap().end;
                if map.len() == 2 {
                    assert_eq!(im.max_mapnr() * PAGE_SIZE, top);
                } else {
                    assert_eq!(im.max_mapnr() * PAGE_SIZE, top - FIRMWARE_TOP_RESERVE);
                }
                // Content only in windows (the same amount whatever the RAM), zero elsewhere.
                let w = im.windows.as_ref().unwrap();
                assert!(im.content_bytes() <= 20 * MIB, "{}", im.content_bytes());
                assert!(w.windows(2).all(|p| p[0].end < p[1].start));
                assert!(
                    w.iter().any(|x| x.end == r.last().unwrap().end()),
                    "a window at the top"
                );
                assert!(im.in_window(im.text_paddr) && im.in_window(im.utsname_paddr));
                let mut page = [0u8; PAGE];
                let mut want = [0u8; PAGE];
                for x in &r[1..] {
                    for pa in [
                        x.paddr,
                        x.end() - PAGE_SIZE,
                        x.paddr + SPARSE_EDGE_WINDOW - PAGE_SIZE,
                    ] {
                        assert!(im.dump_page(pa / PAGE_SIZE, &mut page));
                        fill_page(seed, pa, &mut want);
                        if !(im.utsname_paddr / PAGE_SIZE..=im.utsname_paddr / PAGE_SIZE + 1)
                            .contains(&(pa / PAGE_SIZE))
                        {
                            assert_eq!(page, want, "{pa:#x}");
                        }
                    }
                    let mid = (x.paddr + x.len / 2) / PAGE_SIZE * PAGE_SIZE;
                    if !im.in_window(mid) {
                        assert!(im.dump_page(mid / PAGE_SIZE, &mut page));
                        assert!(page.iter().all(|&b| b == 0), "{mid:#x}");
                    }
                }
            }
        }
        // Too little RAM for the shape is an error, not a panic.
        assert!(SynthImage::generate(&SynthSpec::sparse(1, 64 * MIB)).is_err());
    }

    #[test]
    fn a_sparse_cover_keeps_the_shape_and_the_top() {
        let full = SynthImage::generate(&SynthSpec::sparse(0x64b0, 64 << 30)).unwrap();
        let spec = SynthSpec::sparse_covering(0x64b0, 64 << 30, Some(8 << 30));
        let part = SynthImage::generate(&spec).unwrap();
        assert_eq!(part.ranges.len(), full.ranges.len());
        assert_eq!(part.max_mapnr(), full.max_mapnr());
        assert_eq!(part.max_mapnr() * PAGE_SIZE, 65 << 30);
        let covered: u64 = part.ranges.iter().map(|r| r.len).sum();
        assert_eq!(covered, spec.ram_bytes);
        assert!(
            (8 << 30) - 6 * PAGE_SIZE <= covered - BACKUP_SIZE && covered - BACKUP_SIZE <= 8 << 30,
            "{covered:#x}"
        );
        for (p, f) in part.ranges.iter().zip(&full.ranges) {
            assert!(
                f.paddr <= p.paddr && p.end() <= f.end(),
                "{p:?} outside {f:?}"
            );
        }
        assert_eq!(part.ranges[1].paddr, full.ranges[1].paddr);
        assert_eq!(
            part.windows.as_ref().unwrap().len(),
            full.windows.as_ref().unwrap().len()
        );
        assert_eq!(part.content_bytes(), full.content_bytes());
        assert_eq!(
            (part.text_paddr, part.utsname_paddr),
            (full.text_paddr, full.utsname_paddr)
        );
    }

    #[test]
    fn sparse_blobs_hold_only_the_windows() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-sparse-{}", std::process::id()));
        let im = SynthImage::generate(&SynthSpec::sparse(7, 1 << 30)).unwrap();
        let blobs = im.write_blobs(&dir).unwrap();
        let w = im.windows.clone().unwrap();
        assert_eq!(blobs.len(), 1 + w.len());
        assert_eq!(
            blobs[1..].iter().map(|b| b.len).sum::<u64>(),
            im.content_bytes()
        );
        let mut page = [0u8; PAGE];
        for (b, r) in blobs[1..].iter().zip(&w) {
            assert_eq!((b.addr, b.addr + b.len), (r.start, r.end));
            let data = std::fs::read(&b.path).unwrap();
            for (i, chunk) in data.chunks(PAGE).enumerate() {
                im.source_page(r.start + (i * PAGE) as u64, &mut page);
                assert_eq!(chunk, &page[..]);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn page_mix_is_roughly_as_specified() {
        let mut counts = [0u32; 5];
        for p in 0..20_000u64 {
            counts[page_kind(42, RAM_BASE + p * PAGE_SIZE) as usize] += 1;
        }
        let pct = |n: u32| n as f64 / 200.0;
        assert!((45.0..55.0).contains(&pct(counts[0])), "{counts:?}");
        assert!((12.0..18.0).contains(&pct(counts[1])), "{counts:?}");
        assert!(
            (30.0..40.0).contains(&pct(counts[2] + counts[3] + counts[4])),
            "{counts:?}"
        );
    }

    #[test]
    fn page_contents_compress_as_intended() {
        let mut page = [0u8; PAGE];
        let mut seen = [false; 5];
        for p in 0..400u64 {
            let src = RAM_BASE + p * PAGE_SIZE;
            fill_page(9, src, &mut page);
            let kind = page_kind(9, src);
            seen[kind as usize] = true;
            let z = miniz_oxide::deflate::compress_to_vec_zlib(&page, 1);
            match kind {
                PageKind::Zero => assert!(page.iter().all(|&b| b == 0)),
                PageKind::Random => {
                    assert!(z.len() >= PAGE, "random page compressed to {}", z.len())
                }
                _ => {
                    assert!(
                        z.len() < PAGE / 2,
                        "{kind:?} page compressed only to {}",
                        z.len()
                    );
                    assert_eq!(stamp_source(&page), Some(src));
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn deterministic() {
        let a = image(5, 24);
        let b = image(5, 24);
        assert_eq!(a.elfcorehdr_bytes(), b.elfcorehdr_bytes());
        let (mut p, mut q) = ([0u8; PAGE], [0u8; PAGE]);
        for pfn in [0, 1, 159, a.ranges[2].paddr / PAGE_SIZE] {
            assert!(a.dump_page(pfn, &mut p));
            assert!(b.dump_page(pfn, &mut q));
            assert_eq!(p, q);
        }
        assert_ne!(image(6, 24).ranges, a.ranges);
    }

    #[test]
    fn elfcorehdr_shape() {
        let im = image(1, 24);
        let h = im.elfcorehdr_bytes();
        assert_eq!(&h[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([h[16], h[17]]), ET_CORE);
        assert_eq!(u16::from_le_bytes([h[18], h[19]]), EM_X86_64);
        let phnum = u16::from_le_bytes([h[56], h[57]]) as usize;
        assert_eq!(phnum, 2 + 1 + 1 + im.ranges.len());
        assert_eq!(h.len(), 64 + 56 * phnum);
        let ph = |i: usize, off: usize| {
            u64::from_le_bytes(
                h[64 + 56 * i + off..64 + 56 * i + off + 8]
                    .try_into()
                    .unwrap(),
            )
        };
        // Notes first, then the text view, then RAM; the backup range reads from its copy.
        assert_eq!(u32::from_le_bytes(h[64..68].try_into().unwrap()), PT_NOTE);
        assert_eq!(ph(3, 16), im.text_vaddr);
        assert_eq!(ph(4, 24), 0); // p_paddr of the backup range
        assert_eq!(ph(4, 8), BACKUP_COPY); // its p_offset
        assert_eq!(ph(4, 16), PAGE_OFFSET);
    }

    #[test]
    fn notes_and_utsname_are_in_place() {
        let im = image(3, 24);
        let n = &im.cpu_notes[1].bytes;
        assert_eq!(&n[..12], &[5, 0, 0, 0, 80, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&n[12..17], b"CORE\0");
        assert_eq!(n.len(), 12 + 8 + 336 + 12);
        assert_eq!(&n[20..20 + 336], &im.prstatus[1][..]);
        let v = im.vmcoreinfo.as_ref().unwrap();
        assert!(v.starts_with("OSRELEASE=6.1.0-lifeboat-synthetic\n"));
        assert!(v.contains(&format!("SYMBOL(init_uts_ns)={:x}\n", im.init_uts_ns_vaddr)));
        assert!(v.contains(&format!("NUMBER(phys_base)={}\n", im.phys_base)));
        // Read the utsname back through the dump view (it crosses a page boundary).
        let mut got = Vec::new();
        let mut page = [0u8; PAGE];
        let first = im.utsname_paddr / PAGE_SIZE;
        for pfn in first..first + 2 {
            assert!(im.dump_page(pfn, &mut page));
            got.extend_from_slice(&page);
        }
        let off = (im.utsname_paddr % PAGE_SIZE) as usize;
        assert_eq!(&got[off..off + UTSNAME_SIZE], &utsname_bytes()[..]);
        assert_eq!(
            &got[off + 2 * 65..off + 2 * 65 + OSRELEASE.len()],
            OSRELEASE.as_bytes()
        );
    }

    #[test]
    fn blobs_hold_what_dump_page_promises() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-synth-{}", std::process::id()));
        let im = image(11, 8);
        let blobs = im.write_blobs(&dir).unwrap();
        assert_eq!(blobs.len(), 1 + im.ranges.len());
        let meta = std::fs::read(&blobs[0].path).unwrap();
        assert_eq!(
            &meta[..im.elfcorehdr_bytes().len()],
            &im.elfcorehdr_bytes()[..]
        );
        let off = (im.cpu_notes[0].addr - META_BASE) as usize;
        assert_eq!(&meta[off..off + 4], &5u32.to_le_bytes());
        let mut page = [0u8; PAGE];
        for (b, r) in blobs[1..].iter().zip(&im.ranges) {
            let data = std::fs::read(&b.path).unwrap();
            assert_eq!(data.len() as u64, r.len);
            assert_eq!(b.addr, r.source);
            for (i, chunk) in data.chunks(PAGE).enumerate() {
                assert!(im.dump_page(r.paddr / PAGE_SIZE + i as u64, &mut page));
                assert_eq!(chunk, &page[..]);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn arm64_image(seed: u64, mib: u64) -> SynthImage {
        SynthImage::generate(&SynthSpec::new_for(Arch::Aarch64, seed, mib * MIB)).unwrap()
    }

    #[test]
    fn arm64_layout_rules_hold_for_many_seeds() {
        let g = GuestLayout::of(Arch::Aarch64);
        assert_eq!(
            (g.ram_start, g.meta_base, g.ram_base),
            (0x4000_0000, 0x4100_0000, 0x4120_0000)
        );
        for seed in 0..100 {
            for mib in [8, 24, 160, 256] {
                let im = arm64_image(seed, mib);
                let r = &im.ranges;
                assert!(
                    (5..=8).contains(&r.len()),
                    "seed {seed}: {} ranges",
                    r.len()
                );
                assert_eq!(
                    r.iter().map(|r| r.len).sum::<u64>(),
                    mib * MIB,
                    "no backup range"
                );
                for w in r.windows(2) {
                    assert!(
                        w[0].end() < w[1].paddr,
                        "seed {seed}: no hole between {w:?}"
                    );
                }
                for x in r {
                    assert_eq!(x.paddr, x.source);
                    assert!(x.paddr >= g.ram_base && x.end() <= VIRT_RAM_START + GUEST_RAM_BYTES);
                    assert!(
                        x.end() <= VIRT_DTB || VIRT_DTB + VIRT_DTB_HOLE <= x.paddr,
                        "{x:x?}"
                    );
                    assert_eq!(x.paddr % PAGE_SIZE, 0);
                }
                assert!(!r[0].paddr.is_multiple_of(2 * MIB));
                // The text view lies inside one RAM range and translates with kimage_voffset.
                assert!(r
                    .iter()
                    .any(|x| x.paddr <= im.text_paddr && im.text_paddr + im.text_len <= x.end()));
                assert_eq!(
                    im.text_vaddr.wrapping_sub(im.kimage_voffset()),
                    im.text_paddr
                );
                assert_eq!(im.text_vaddr, ARM64_KIMAGE_VADDR + im.kernel_offset);
                assert!(im.kernel_offset < 16 * MIB && im.kernel_offset.is_multiple_of(2 * MIB));
                assert_eq!(
                    (im.init_uts_ns_vaddr + UTS_NAMESPACE_NAME_OFFSET)
                        .wrapping_sub(im.kimage_voffset()),
                    im.utsname_paddr
                );
                assert_eq!(im.phys_base, ARM64_PHYS_OFFSET);
                // The elfcorehdr: EM_AARCH64; text at its KASLR'd address; RAM in the linear map.
                let h = im.elfcorehdr_bytes();
                assert_eq!(u16::from_le_bytes([h[18], h[19]]), EM_AARCH64);
                let loads: Vec<_> = im
                    .header
                    .phdrs
                    .iter()
                    .filter(|p| p.p_type == PT_LOAD)
                    .collect();
                assert_eq!(loads.len(), 1 + r.len());
                assert_eq!(
                    (loads[0].p_vaddr, loads[0].p_paddr),
                    (im.text_vaddr, im.text_paddr)
                );
                for (p, x) in loads[1..].iter().zip(r) {
                    assert_eq!(
                        (p.p_paddr, p.p_offset, p.p_filesz),
                        (x.paddr, x.source, x.len)
                    );
                    assert_eq!(p.p_vaddr, 0xffff_0000_0000_0000 + (x.paddr - 0x4000_0000));
                }
            }
        }
        // A range that would cover the device tree moves past it.
        assert!((0..100).any(|seed| arm64_image(seed, 256)
            .ranges
            .iter()
            .any(|x| x.paddr > VIRT_DTB && x.paddr < VIRT_DTB + VIRT_DTB_HOLE + 2 * MIB)));
        // Only x86_64 has the sparse shape.
        let mut spec = SynthSpec::sparse(1, 1 << 30);
        spec.arch = Arch::Aarch64;
        assert!(matches!(
            SynthImage::generate(&spec),
            Err(SynthError::BadShape(_))
        ));
    }

    #[test]
    fn arm64_notes_vmcoreinfo_and_utsname_are_in_place() {
        let im = arm64_image(3, 24);
        assert_eq!(im.elfcorehdr_addr, 0x4100_0000);
        assert_eq!(im.cpu_notes[0].addr, 0x4101_0000);
        let n = &im.cpu_notes[1].bytes;
        // namesz 5, descsz 392, NT_PRSTATUS, "CORE".
        assert_eq!(&n[..12], &[5, 0, 0, 0, 0x88, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&n[12..17], b"CORE\0");
        assert_eq!(n.len(), 12 + 8 + ARM64_PRSTATUS_SIZE + 12);
        let d = &im.prstatus[1];
        assert_eq!(&n[20..20 + ARM64_PRSTATUS_SIZE], &d[..]);
        let reg = |i: usize| u64::from_le_bytes(d[112 + 8 * i..120 + 8 * i].try_into().unwrap());
        assert_eq!(reg(0), prstatus_reg(1, 0));
        assert_eq!(reg(30), prstatus_reg(1, 30)); // x30 (lr)
        assert_eq!(reg(32), im.text_vaddr + 0x1234 + 1); // pc
        assert_eq!(reg(33), 0x3c5); // pstate
        assert_eq!(u32::from_le_bytes(d[32..36].try_into().unwrap()), 101); // pr_pid
        let v = im.vmcoreinfo.as_ref().unwrap();
        assert!(v.starts_with("OSRELEASE=6.1.0-lifeboat-synthetic\nPAGESIZE=4096\n"));
        for line in [
            format!("SYMBOL(init_uts_ns)={:x}", im.init_uts_ns_vaddr),
            "OFFSET(uts_namespace.name)=4".to_string(),
            format!("SYMBOL(_stext)={:x}", im.text_vaddr),
            "NUMBER(VA_BITS)=48".to_string(),
            format!("NUMBER(kimage_voffset)={:#x}", im.kimage_voffset()),
            "NUMBER(PHYS_OFFSET)=0x40000000".to_string(),
            "NUMBER(TCR_EL1_T1SZ)=0x10".to_string(),
            "NUMBER(MODULES_END)=0xffff800008000000".to_string(),
            format!("KERNELOFFSET={:x}", im.kernel_offset),
            format!("CRASHTIME={}", im.crash_time),
        ] {
            assert!(v.lines().any(|l| l == line), "{line} not in\n{v}");
        }
        assert!(!v.contains("phys_base") && !v.contains("init_top_pgt"));
        // swapper_pg_dir: a page-aligned, all-zero page of the kernel image.
        let pgd_va = v
            .lines()
            .find_map(|l| l.strip_prefix("SYMBOL(swapper_pg_dir)="))
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .unwrap();
        let pgd = pgd_va.wrapping_sub(im.kimage_voffset());
        assert_eq!(Some(pgd), im.swapper_pg_dir_paddr());
        assert!(
            pgd.is_multiple_of(PAGE_SIZE)
                && im.text_paddr < pgd
                && pgd < im.text_paddr + im.text_len
        );
        let mut page = [0u8; PAGE];
        assert!(im.dump_page(pgd / PAGE_SIZE, &mut page));
        assert!(page.iter().all(|&b| b == 0));
        // The utsname says aarch64, read back through the dump view.
        let mut got = Vec::new();
        let first = im.utsname_paddr / PAGE_SIZE;
        for pfn in first..first + 2 {
            assert!(im.dump_page(pfn, &mut page));
            got.extend_from_slice(&page);
        }
        let off = (im.utsname_paddr % PAGE_SIZE) as usize;
        assert_eq!(
            &got[off..off + UTSNAME_SIZE],
            &utsname_bytes_for(Arch::Aarch64)[..]
        );
        assert_eq!(&got[off + 4 * 65..off + 4 * 65 + 8], b"aarch64\0");
    }

    #[test]
    fn arm64_blobs_hold_what_dump_page_promises() {
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-synth-arm64-{}", std::process::id()));
        let im = arm64_image(11, 8);
        let blobs = im.write_blobs(&dir).unwrap();
        assert_eq!(blobs.len(), 1 + im.ranges.len());
        assert_eq!(blobs[0].addr, 0x4100_0000);
        let meta = std::fs::read(&blobs[0].path).unwrap();
        assert_eq!(
            &meta[..im.elfcorehdr_bytes().len()],
            &im.elfcorehdr_bytes()[..]
        );
        let off = (im.cpu_notes[0].addr - 0x4100_0000) as usize;
        assert_eq!(&meta[off..off + 4], &5u32.to_le_bytes());
        let mut page = [0u8; PAGE];
        for (b, r) in blobs[1..].iter().zip(&im.ranges) {
            let data = std::fs::read(&b.path).unwrap();
            assert_eq!((b.addr, data.len() as u64), (r.source, r.len));
            for (i, chunk) in data.chunks(PAGE).enumerate() {
                assert!(im.dump_page(r.paddr / PAGE_SIZE + i as u64, &mut page));
                assert_eq!(chunk, &page[..]);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arm64_16k_and_64k_layouts_follow_the_page_size() {
        let g = GuestLayout::of(Arch::Aarch64);
        for ps in [16u64 << 10, 64 << 10] {
            for seed in 0..40 {
                for mib in [16, 64, 128] {
                    let spec = SynthSpec::with_page_size(Arch::Aarch64, seed, mib * MIB, ps);
                    let im = SynthImage::generate(&spec).unwrap();
                    let r = &im.ranges;
                    assert_eq!(im.page_size(), ps);
                    assert_eq!(r.iter().map(|r| r.len).sum::<u64>(), mib * MIB);
                    for x in r {
                        assert!(
                            x.paddr.is_multiple_of(ps)
                                && x.len.is_multiple_of(ps)
                                && x.len >= 16 * ps,
                            "{ps}: {x:x?}"
                        );
                        assert_eq!(x.paddr, x.source);
                        assert!(
                            x.paddr >= g.ram_base && x.end() <= VIRT_RAM_START + GUEST_RAM_BYTES
                        );
                        assert!(
                            x.end() <= VIRT_DTB || VIRT_DTB + VIRT_DTB_HOLE <= x.paddr,
                            "{x:x?}"
                        );
                    }
                    for w in r.windows(2) {
                        assert!(w[0].end() < w[1].paddr, "no hole between {w:x?}");
                    }
                    assert_eq!(r[0].paddr, g.ram_base + 3 * ps);
                    assert!(!r[0].end().is_multiple_of(2 * MIB));
                    assert_eq!(im.max_mapnr(), r.last().unwrap().end() / ps);
                    assert_eq!(
                        im.ram_pfn_ranges(),
                        r.iter()
                            .map(|x| x.paddr / ps..x.end() / ps)
                            .collect::<Vec<_>>()
                    );
                    // Kernel text in whole pages; the utsname crosses one of its page boundaries.
                    assert!(im.text_paddr.is_multiple_of(ps) && im.text_len.is_multiple_of(ps));
                    assert_eq!(
                        im.utsname_paddr / ps + 1,
                        (im.utsname_paddr + UTSNAME_SIZE as u64 - 1) / ps
                    );
                    let pgd = im.swapper_pg_dir_paddr().unwrap();
                    assert!(pgd.is_multiple_of(ps) && pgd / ps != im.utsname_paddr / ps);
                }
            }
            let im =
                SynthImage::generate(&SynthSpec::with_page_size(Arch::Aarch64, 5, 64 * MIB, ps))
                    .unwrap();
            let v = im.vmcoreinfo.as_ref().unwrap();
            let (start, end, vmalloc_end) = arm64_vmemmap(ps);
            for line in [
                format!("PAGESIZE={ps}"),
                format!("NUMBER(VMEMMAP_START)={start:#x}"),
                format!("NUMBER(VMEMMAP_END)={end:#x}"),
                format!("NUMBER(VMALLOC_END)={vmalloc_end:#x}"),
                "NUMBER(VA_BITS)=48".to_string(),
            ] {
                assert!(v.lines().any(|l| l == line), "{line} not in\n{v}");
            }
            // swapper_pg_dir: one whole zero page of that size.
            let mut page = vec![0xffu8; ps as usize];
            assert!(im.dump_block(im.swapper_pg_dir_paddr().unwrap() / ps, &mut page));
            assert!(page.iter().all(|&b| b == 0));
        }
        // memory.h: VMEMMAP_START = -(1 << (48 - (PAGE_SHIFT - 6))), VMEMMAP_SIZE = 1 << 47 >> that.
        assert_eq!(
            arm64_vmemmap(4096),
            (ARM64_VMEMMAP_START, ARM64_VMEMMAP_END, ARM64_VMALLOC_END)
        );
        assert_eq!(arm64_vmemmap(16 << 10).0, 0xffff_ff00_0000_0000);
        assert_eq!(arm64_vmemmap(16 << 10).1, 0xffff_ff80_0000_0000);
        assert_eq!(arm64_vmemmap(64 << 10).0, 0xffff_ffc0_0000_0000);
        assert_eq!(arm64_vmemmap(64 << 10).1, 0xffff_ffe0_0000_0000);
    }

    #[test]
    fn only_dense_arm64_machines_have_other_page_sizes() {
        let bad = |spec: SynthSpec| {
            assert!(
                matches!(SynthImage::generate(&spec), Err(SynthError::BadShape(ref s)) if s.contains("pages of")),
                "{spec:?}"
            )
        };
        bad(SynthSpec::with_page_size(
            Arch::X86_64,
            1,
            16 * MIB,
            16 << 10,
        ));
        bad(SynthSpec::with_page_size(
            Arch::Aarch64,
            1,
            16 * MIB,
            8 << 10,
        ));
        bad(SynthSpec::with_page_size(
            Arch::Aarch64,
            1,
            16 * MIB,
            128 << 10,
        ));
        bad(SynthSpec {
            page_size: 64 << 10,
            ..SynthSpec::sparse(1, 1 << 30)
        });
        for ps in ARM64_PAGE_SIZES {
            assert!(SynthImage::generate(&SynthSpec::with_page_size(
                Arch::Aarch64,
                1,
                16 * MIB,
                ps
            ))
            .is_ok());
        }
    }

    #[test]
    fn pages_of_16k_and_64k_are_one_kind_each() {
        for ps in [16u64 << 10, 64 << 10] {
            let im =
                SynthImage::generate(&SynthSpec::with_page_size(Arch::Aarch64, 9, 64 * MIB, ps))
                    .unwrap();
            let text = im.text_paddr..im.text_paddr + im.text_len;
            let mut page = vec![0u8; ps as usize];
            let mut frame = [0u8; PAGE];
            let mut counts = [0u32; 5];
            for pfn in im.ram_pfn_ranges().into_iter().flatten() {
                assert!(im.dump_block(pfn, &mut page));
                // The 4 KiB view is the same memory, frame by frame.
                for (i, chunk) in page.chunks(PAGE).enumerate() {
                    assert!(im.dump_page(pfn * (ps / PAGE_SIZE) + i as u64, &mut frame));
                    assert_eq!(chunk, &frame[..], "pfn {pfn:#x} frame {i}");
                }
                let pa = pfn * ps;
                if text.contains(&pa) {
                    continue; // the utsname and swapper_pg_dir are written over some of these
                }
                let kind = page_kind(im.spec.seed, pa);
                counts[kind as usize] += 1;
                let z = miniz_oxide::deflate::compress_to_vec_zlib(&page, 1);
                match kind {
                    PageKind::Zero => assert!(page.iter().all(|&b| b == 0)),
                    PageKind::Random => assert!(
                        z.len() >= page.len(),
                        "random page compressed to {}",
                        z.len()
                    ),
                    _ => {
                        assert!(
                            z.len() < page.len() / 2,
                            "{kind:?} page compressed only to {}",
                            z.len()
                        );
                        assert_eq!(stamp_source(&page), Some(pa));
                        // Not only the first 4 KiB: the last frame has content too.
                        assert!(
                            page[page.len() - PAGE..].iter().any(|&b| b != 0)
                                || kind == PageKind::Sparse
                        );
                    }
                }
            }
            let n: u32 = counts.iter().sum();
            let pct = |c: u32| f64::from(c) * 100.0 / f64::from(n);
            assert!((35.0..65.0).contains(&pct(counts[0])), "{ps}: {counts:?}");
            assert!(counts.iter().all(|&c| c > 0), "{ps}: {counts:?}");
        }
    }

    #[test]
    fn arm64_64k_blobs_hold_what_dump_block_promises() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-synth-64k-{}", std::process::id()));
        let ps = 64u64 << 10;
        let im = SynthImage::generate(&SynthSpec::with_page_size(Arch::Aarch64, 11, 16 * MIB, ps))
            .unwrap();
        let blobs = im.write_blobs(&dir).unwrap();
        assert_eq!(blobs.len(), 1 + im.ranges.len());
        let mut page = vec![0u8; ps as usize];
        for (b, r) in blobs[1..].iter().zip(&im.ranges) {
            let data = std::fs::read(&b.path).unwrap();
            assert_eq!((b.addr, data.len() as u64), (r.source, r.len));
            for (i, chunk) in data.chunks(ps as usize).enumerate() {
                assert!(im.dump_block(r.paddr / ps + i as u64, &mut page));
                assert_eq!(chunk, &page[..]);
            }
        }
        // The utsname, read back from the blob that holds it, across a 64 KiB boundary.
        let (b, r) = blobs[1..]
            .iter()
            .zip(&im.ranges)
            .find(|(_, r)| r.paddr <= im.utsname_paddr && im.utsname_paddr < r.end())
            .unwrap();
        let data = std::fs::read(&b.path).unwrap();
        let off = (im.utsname_paddr - r.paddr) as usize;
        assert_eq!(
            &data[off..off + UTSNAME_SIZE],
            &utsname_bytes_for(Arch::Aarch64)[..]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod golden {
    //! The synthetic machines that existing scenarios boot must not change by accident: a
    //! hash of everything QEMU loads (every blob's address, length and bytes), of the
    //! VMCOREINFO text and of what the verifier derives (RAM pfns, `max_mapnr`), per spec.
    use super::*;

    /// FNV-1a over 64-bit words (little-endian; the tail zero-padded).
    struct Fnv(u64);
    impl Fnv {
        fn new() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }
        fn bytes(&mut self, b: &[u8]) {
            self.word(b.len() as u64);
            for c in b.chunks(8) {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                self.word(u64::from_le_bytes(w));
            }
        }
        fn word(&mut self, w: u64) {
            self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn digest(spec: &SynthSpec, tag: &str) -> u64 {
        let im = SynthImage::generate(spec).unwrap();
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-golden-{tag}-{}", std::process::id()));
        let blobs = im.write_blobs(&dir).unwrap();
        let mut h = Fnv::new();
        for b in &blobs {
            h.word(b.addr);
            h.word(b.len);
            h.bytes(&std::fs::read(&b.path).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        h.bytes(im.vmcoreinfo.as_deref().unwrap_or("").as_bytes());
        for r in im.ram_pfn_ranges() {
            h.word(r.start);
            h.word(r.end);
        }
        h.word(im.max_mapnr());
        h.0
    }

    #[test]
    fn existing_machines_are_unchanged() {
        let mut bare = SynthSpec::new(0x7, 16 * MIB);
        bare.with_vmcoreinfo = false;
        let mut bare_arm = SynthSpec::new_for(Arch::Aarch64, 0x7, 16 * MIB);
        bare_arm.with_vmcoreinfo = false;
        let cases = [
            ("x86-24m", SynthSpec::new(0x24, 24 * MIB)),
            ("x86-bare-16m", bare),
            ("x86-sparse-1g", SynthSpec::sparse(0x64b0, 1 << 30)),
            (
                "arm64-24m",
                SynthSpec::new_for(Arch::Aarch64, 0x24, 24 * MIB),
            ),
            ("arm64-bare-16m", bare_arm),
            (
                "arm64-64m",
                SynthSpec::new_for(Arch::Aarch64, 0xb1d, 64 * MIB),
            ),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|(tag, s)| (*tag, digest(s, tag)))
            .collect();
        // Recorded before the crashed kernel's page size became a parameter.
        let want = [
            ("x86-24m", 0x2f04649386ad10ef),
            ("x86-bare-16m", 0x2cc83202a25fd674),
            ("x86-sparse-1g", 0x203706edec6cbcbe),
            ("arm64-24m", 0xafbe3ccf49dd8b5f),
            ("arm64-bare-16m", 0xfccb9c599261151a),
            ("arm64-64m", 0xb878e06476d4afea),
        ];
        assert_eq!(got, want, "{got:#x?}");
    }
}
