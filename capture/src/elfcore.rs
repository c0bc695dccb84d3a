//! The elfcorehdr: the crashed kernel's ELF core header, checked once.
//!
//! The loader (kexec-tools `kexec/crashdump-elf.c`, or the kernel's own
//! `crash_prepare_elf64_headers()` for kexec_file_load) leaves an ELF64 `ET_CORE` header in
//! the crash reservation and passes its address with `elfcorehdr=`. Its program headers name
//! everything the capture kernel will read: CPU register notes and VMCOREINFO (`PT_NOTE`) and
//! RAM (`PT_LOAD`). Facts (project reference §3):
//!
//! - `p_offset` is a **physical address** to read from, `p_paddr` the page's identity in the
//!   dump. They differ for kexec-tools' x86 backup of the first 640 KiB (`p_paddr` 0,
//!   `p_offset` = the copy in the reservation).
//! - There is one `PT_NOTE` per CPU plus one for VMCOREINFO; their sizes are upper bounds, so
//!   notes are walked until a header with `n_namesz == 0`, as Linux `fs/proc/vmcore.c`
//!   (`update_note_header_size_elf64()`) does; a note running past its segment is dropped with
//!   a warning, not fatal.
//! - x86_64 adds a kernel-text `PT_LOAD` (`p_vaddr` in the kernel image mapping), a second view
//!   of pages that a RAM `PT_LOAD` also covers.
//!
//! Everything in the header is an untrusted claim of a crashed kernel. [`ElfCoreHeader::parse`]
//! is the one checked constructor: after it, every [`LoadSegment`] is a range that is inside
//! the physical address space, outside the capture kernel, inside RAM (when the RAM map is
//! known), page-consistent and free of overlaps; nothing else in lifeboat reads through a
//! crashed-kernel address that did not come from here.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::phys::{PhysRange, PhysRead};

/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;

pub const ELFCLASS64: u8 = 2;
pub const ELFDATA2LSB: u8 = 1;
pub const EV_CURRENT: u8 = 1;
pub const ET_CORE: u16 = 4;
pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
/// `NT_PRSTATUS`: a CPU's registers, in a note named "CORE".
pub const NT_PRSTATUS: u32 = 1;
/// The VMCOREINFO note's type (in a note named "VMCOREINFO").
pub const NT_VMCOREINFO: u32 = 0;

/// `sizeof(Elf64_Ehdr)`.
pub const EHDR_SIZE: usize = 64;
/// `sizeof(Elf64_Phdr)`.
pub const PHDR_SIZE: usize = 56;
/// `sizeof(Elf64_Nhdr)`.
const NHDR_SIZE: u64 = 12;
/// More program headers than this is not a machine, it is garbage.
pub const MAX_PHNUM: u16 = 8192;
/// Largest believable `PT_NOTE` segment.
pub const MAX_NOTE_SEGMENT: u64 = 1 << 20;
/// Largest believable total of all notes.
pub const MAX_NOTES: u64 = 4 << 20;
/// Largest believable kernel-text `PT_LOAD` (x86_64 `KERNEL_IMAGE_SIZE` is at most 1 GiB).
pub const MAX_KERNEL_TEXT: u64 = 1 << 30;
/// Alignment that `p_offset` and `p_paddr` must share (the smallest page size).
const PAGE_4K: u64 = 4096;

/// What the capture kernel knows independently of the crashed kernel's claims.
#[derive(Clone, Debug)]
pub struct Limits {
    /// End of the physical address space (e.g. `1 << 52`); no claimed range may reach past it.
    pub max_phys: u64,
    /// Memory the capture kernel itself uses (image, heap, stacks, page tables). Not the whole
    /// crash reservation: the elfcorehdr and kexec-tools' backup copy live there too.
    pub own: Vec<PhysRange>,
    /// RAM of the crashed machine, if known (e.g. from firmware tables): every `PT_LOAD` source
    /// must lie inside one of these ranges.
    pub ram: Option<Vec<PhysRange>>,
    /// Expected `e_machine`: [`EM_X86_64`] or [`EM_AARCH64`].
    pub machine: u16,
    /// Size of the header from `elfcorehdr=size@addr`, if the loader gave it.
    pub hdr_size: Option<u64>,
}

/// One range of the crashed kernel's memory to put in the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Physical address of the first byte in the dump (`p_paddr`).
    pub paddr: u64,
    /// Physical address to read it from now (`p_offset`).
    pub src: u64,
    /// Length in bytes (`p_filesz`, never 0).
    pub len: u64,
    /// The crashed kernel's virtual address of the first byte (`p_vaddr`).
    pub vaddr: u64,
}

impl LoadSegment {
    /// `[paddr, paddr + len)`; cannot overflow after [`ElfCoreHeader::parse`].
    pub fn dump_range(&self) -> PhysRange {
        PhysRange { start: self.paddr, end: self.paddr + self.len }
    }
    /// `[src, src + len)`; cannot overflow after [`ElfCoreHeader::parse`].
    pub fn src_range(&self) -> PhysRange {
        PhysRange { start: self.src, end: self.src + self.len }
    }
}

/// The checked contents of an elfcorehdr.
#[derive(Clone, Debug)]
pub struct ElfCoreHeader {
    /// RAM to dump, sorted by `paddr`, `paddr` ranges disjoint.
    pub loads: Vec<LoadSegment>,
    /// The kernel-text `PT_LOAD`, when it is a second view of pages in `loads`.
    pub kernel_text: Option<LoadSegment>,
    /// All notes, concatenated (headers, padded names and descriptors), as they go in the dump.
    pub notes: Vec<u8>,
    /// The VMCOREINFO descriptor's byte range within `notes`.
    pub vmcoreinfo: Option<Range<usize>>,
    /// Number of "CORE" `NT_PRSTATUS` notes.
    pub nr_cpus: u32,
    /// Problems that did not stop the parse, for the console.
    pub warnings: Vec<String>,
}

/// Why an elfcorehdr was rejected. Every message names the numbers involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfCoreError {
    /// The ELF header or program header table could not be read.
    HeaderUnreadable { addr: u64, len: u64 },
    /// No `\x7fELF` at the given address.
    BadMagic { addr: u64, found: [u8; 4] },
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64 { class: u8 },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    NotLittleEndian { data: u8 },
    /// `EI_VERSION` or `e_version` is not `EV_CURRENT`.
    BadVersion { version: u32 },
    /// `e_type` is not `ET_CORE`.
    NotCore { e_type: u16 },
    /// `e_machine` is not the capture kernel's architecture.
    WrongMachine { found: u16, expected: u16 },
    /// `e_phentsize` is not 56.
    BadPhentsize { phentsize: u16 },
    /// `e_phnum` is 0.
    NoProgramHeaders,
    /// `e_phnum` above [`MAX_PHNUM`].
    TooManyProgramHeaders { phnum: u16 },
    /// `addr + e_phoff + e_phnum * 56` overflows.
    PhdrOverflow { phoff: u64, phnum: u16 },
    /// The program header table does not fit in the size given by `elfcorehdr=size@addr`.
    Truncated { need: u64, given: u64 },
    /// A `PT_NOTE` larger than [`MAX_NOTE_SEGMENT`].
    NoteTooBig { index: usize, size: u64 },
    /// A `PT_NOTE` whose `p_offset + p_filesz` overflows.
    NoteOverflow { index: usize, offset: u64, size: u64 },
    /// A `PT_NOTE` that could not be read.
    NoteUnreadable { index: usize, addr: u64, len: u64 },
    /// All notes together larger than [`MAX_NOTES`].
    NotesTooBig { total: u64 },
    /// `p_filesz > p_memsz`.
    FileszAboveMemsz { index: usize, filesz: u64, memsz: u64 },
    /// Address arithmetic of a `PT_LOAD` overflows 64 bits.
    LoadOverflow { index: usize, offset: u64, paddr: u64, filesz: u64, memsz: u64 },
    /// A `PT_LOAD` reaching past the physical address space.
    BeyondPhys { index: usize, range: PhysRange, bits: u32 },
    /// A kernel-text `PT_LOAD` of an impossible size.
    KernelTextAbsurd { index: usize, vaddr: u64, size: u64 },
    /// `p_offset` and `p_paddr` differ in their offset within a 4 KiB page.
    Misaligned { index: usize, offset: u64, paddr: u64 },
    /// A `PT_LOAD` source overlapping the capture kernel's own memory.
    ClaimsOwnMemory { index: usize, range: PhysRange, own: PhysRange },
    /// A `PT_LOAD` source not inside one RAM range.
    OutsideRam { index: usize, range: PhysRange },
    /// Two RAM `PT_LOAD`s whose `p_paddr` ranges overlap.
    Overlap { index: usize, range: PhysRange, other: usize, other_range: PhysRange },
    /// No `PT_LOAD` with data.
    NoLoads,
}

impl fmt::Display for ElfCoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ElfCoreError::*;
        match self {
            HeaderUnreadable { addr, len } => write!(
                f,
                "elfcorehdr is unreadable: {} bytes at {:#x} are not readable memory \
                 (check the elfcorehdr= address)",
                len, addr
            ),
            BadMagic { addr, found } => write!(
                f,
                "no ELF header at elfcorehdr address {:#x} (found bytes {:02x?}): \
                 the loader passed a wrong address or the header was overwritten",
                addr, found
            ),
            NotElf64 { class } => {
                write!(f, "elfcorehdr is not 64-bit ELF (EI_CLASS {}, expected 2)", class)
            }
            NotLittleEndian { data } => {
                write!(f, "elfcorehdr is not little-endian (EI_DATA {}, expected 1)", data)
            }
            BadVersion { version } => {
                write!(f, "elfcorehdr has ELF version {} (expected 1)", version)
            }
            NotCore { e_type } => {
                write!(f, "elfcorehdr is ELF type {} (expected 4, ET_CORE)", e_type)
            }
            WrongMachine { found, expected } => write!(
                f,
                "elfcorehdr is for machine {} but this capture kernel handles machine {}",
                found, expected
            ),
            BadPhentsize { phentsize } => write!(
                f,
                "elfcorehdr program headers are {} bytes each (expected {})",
                phentsize, PHDR_SIZE
            ),
            NoProgramHeaders => write!(f, "elfcorehdr has no program headers: nothing to dump"),
            TooManyProgramHeaders { phnum } => write!(
                f,
                "elfcorehdr has too many program headers ({}, at most {})",
                phnum, MAX_PHNUM
            ),
            PhdrOverflow { phoff, phnum } => write!(
                f,
                "elfcorehdr program header table ({} entries at offset {:#x}) overflows the \
                 address space",
                phnum, phoff
            ),
            Truncated { need, given } => write!(
                f,
                "elfcorehdr truncated: program headers need {} bytes, only {} given",
                need, given
            ),
            NoteTooBig { index, size } => write!(
                f,
                "PT_NOTE #{} of {} bytes is absurd (at most {})",
                index, size, MAX_NOTE_SEGMENT
            ),
            NoteOverflow { index, offset, size } => write!(
                f,
                "PT_NOTE #{} at {:#x} with {} bytes overflows the address space",
                index, offset, size
            ),
            NoteUnreadable { index, addr, len } => write!(
                f,
                "PT_NOTE #{}: {} bytes at {:#x} are not readable memory",
                index, len, addr
            ),
            NotesTooBig { total } => write!(
                f,
                "the notes total {} bytes, which is absurd (at most {})",
                total, MAX_NOTES
            ),
            FileszAboveMemsz { index, filesz, memsz } => write!(
                f,
                "PT_LOAD #{} has p_filesz {:#x} above p_memsz {:#x}",
                index, filesz, memsz
            ),
            LoadOverflow { index, offset, paddr, filesz, memsz } => write!(
                f,
                "PT_LOAD #{} (p_offset {:#x}, p_paddr {:#x}, p_filesz {:#x}, p_memsz {:#x}) \
                 overflows the 64-bit address space",
                index, offset, paddr, filesz, memsz
            ),
            BeyondPhys { index, range, bits } => write!(
                f,
                "PT_LOAD #{} {} is absurd: beyond the {}-bit physical address space",
                index, range, bits
            ),
            KernelTextAbsurd { index, vaddr, size } => write!(
                f,
                "kernel-text PT_LOAD #{} (p_vaddr {:#x}) of {:#x} bytes is absurd (at most {:#x}); \
                 kexec-tools writes this when it cannot find _text in /proc/kallsyms: reload \
                 with a fixed loader",
                index, vaddr, size, MAX_KERNEL_TEXT
            ),
            Misaligned { index, offset, paddr } => write!(
                f,
                "PT_LOAD #{}: p_offset {:#x} and p_paddr {:#x} are not at the same offset in a \
                 4 KiB page",
                index, offset, paddr
            ),
            ClaimsOwnMemory { index, range, own } => write!(
                f,
                "PT_LOAD #{} {} claims the capture kernel's own memory {}",
                index, range, own
            ),
            OutsideRam { index, range } => write!(f, "PT_LOAD #{} {} is outside RAM", index, range),
            Overlap { index, range, other, other_range } => write!(
                f,
                "PT_LOAD #{} {} overlaps PT_LOAD #{} {}",
                index, range, other, other_range
            ),
            NoLoads => write!(f, "elfcorehdr has no PT_LOAD with data: nothing to dump"),
        }
    }
}

/// One `Elf64_Phdr`, as read.
#[derive(Clone, Copy, Debug)]
struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    v.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(v)
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Phdr {
    fn from_bytes(b: &[u8; PHDR_SIZE]) -> Self {
        Self {
            p_type: u32_at(b, 0),
            offset: u64_at(b, 8),
            vaddr: u64_at(b, 16),
            paddr: u64_at(b, 24),
            filesz: u64_at(b, 32),
            memsz: u64_at(b, 40),
        }
    }
}

/// Whether a `PT_LOAD`'s virtual address is in the kernel image mapping (not the direct map).
///
/// x86_64: the kernel image is mapped at `__START_KERNEL_map` = 0xffffffff80000000 and up.
/// aarch64: the image lives in the upper half of the kernel VA space and the linear map in the
/// lower half; 0xffff800000000000 is that boundary for VA_BITS 48 and 52 (to revisit for 39
/// and 42). A wrong guess is harmless: a "kernel text" segment not covered by RAM segments is
/// dumped as RAM.
pub fn is_kernel_text(machine: u16, vaddr: u64) -> bool {
    match machine {
        EM_X86_64 => vaddr >= 0xffff_ffff_8000_0000,
        EM_AARCH64 => vaddr >= 0xffff_8000_0000_0000,
        _ => false,
    }
}

fn read(mem: &dyn PhysRead, addr: u64, buf: &mut [u8]) -> Result<(), (u64, u64)> {
    mem.read(addr, buf).map_err(|_| (addr, buf.len() as u64))
}

/// Number of address bits `max_phys` stands for (`1 << 52` → 52).
fn phys_bits(max_phys: u64) -> u32 {
    64 - max_phys.saturating_sub(1).leading_zeros()
}

/// Whether `r` is covered by the union of `sorted` (sorted by start, disjoint).
fn covered_by(r: PhysRange, sorted: &[LoadSegment]) -> bool {
    let mut at = r.start;
    for l in sorted {
        let d = l.dump_range();
        if d.end <= at {
            continue;
        }
        if d.start > at {
            return false;
        }
        at = d.end;
        if at >= r.end {
            return true;
        }
    }
    at >= r.end
}

impl ElfCoreHeader {
    /// Reads and checks the elfcorehdr at physical address `addr`.
    pub fn parse(mem: &dyn PhysRead, addr: u64, limits: &Limits) -> Result<Self, ElfCoreError> {
        let phdrs = read_phdrs(mem, addr, limits)?;
        let mut warnings = Vec::new();

        // PT_NOTE: walk and concatenate.
        let mut notes = Vec::new();
        let mut nr_cpus = 0u32;
        let mut vmcoreinfo = None;
        for (index, ph) in phdrs.iter().enumerate().filter(|(_, p)| p.p_type == PT_NOTE) {
            walk_note_segment(mem, index, ph, &mut notes, &mut warnings)?;
        }
        for (name, n_type, desc) in (NoteIter { notes: &notes, pos: 0 }) {
            if name == b"CORE" && n_type == NT_PRSTATUS {
                nr_cpus = nr_cpus.saturating_add(1);
            } else if name == b"VMCOREINFO" && n_type == NT_VMCOREINFO {
                if vmcoreinfo.is_none() {
                    vmcoreinfo = Some(desc);
                } else {
                    warnings.push(String::from("a second VMCOREINFO note, ignored"));
                }
            }
        }
        if vmcoreinfo.is_none() {
            warnings.push(String::from(
                "no VMCOREINFO note: kernel release unknown, assuming 4096-byte pages",
            ));
        }

        // PT_LOAD: check every claim.
        let mut loads: Vec<(usize, LoadSegment)> = Vec::new();
        let mut texts: Vec<(usize, LoadSegment)> = Vec::new();
        for (index, ph) in phdrs.iter().enumerate().filter(|(_, p)| p.p_type == PT_LOAD) {
            let text = is_kernel_text(limits.machine, ph.vaddr);
            if let Some(seg) = check_load(index, ph, text, limits, &mut warnings)? {
                if text {
                    texts.push((index, seg));
                } else {
                    loads.push((index, seg));
                }
            }
        }
        loads.sort_by_key(|(_, s)| s.paddr);
        check_overlaps(&loads)?;

        // A kernel-text segment is normally a second view of RAM pages; otherwise dump it as RAM.
        let mut kernel_text = None;
        let mut extra = Vec::new();
        {
            let ram: Vec<LoadSegment> = loads.iter().map(|(_, s)| *s).collect();
            for (index, seg) in texts {
                if covered_by(seg.dump_range(), &ram) {
                    if kernel_text.is_none() {
                        kernel_text = Some(seg);
                    } else {
                        warnings.push(format!(
                            "PT_LOAD #{} is a second kernel-text segment, ignored",
                            index
                        ));
                    }
                } else {
                    extra.push((index, seg));
                }
            }
        }
        if !extra.is_empty() {
            loads.extend(extra);
            loads.sort_by_key(|(_, s)| s.paddr);
            check_overlaps(&loads)?;
        }
        if loads.is_empty() {
            return Err(ElfCoreError::NoLoads);
        }
        Ok(Self {
            loads: loads.into_iter().map(|(_, s)| s).collect(),
            kernel_text,
            notes,
            vmcoreinfo,
            nr_cpus,
            warnings,
        })
    }

    /// The VMCOREINFO descriptor bytes, if there is one.
    pub fn vmcoreinfo_bytes(&self) -> Option<&[u8]> {
        self.notes.get(self.vmcoreinfo.clone()?)
    }
}

/// Reads and checks the ELF header, then reads the program header table.
fn read_phdrs(mem: &dyn PhysRead, addr: u64, limits: &Limits) -> Result<Vec<Phdr>, ElfCoreError> {
    let unreadable = |(addr, len)| ElfCoreError::HeaderUnreadable { addr, len };
    let mut eh = [0u8; EHDR_SIZE];
    if addr.checked_add(EHDR_SIZE as u64).is_none() {
        return Err(ElfCoreError::HeaderUnreadable { addr, len: EHDR_SIZE as u64 });
    }
    read(mem, addr, &mut eh).map_err(unreadable)?;
    if eh[0..4] != *b"\x7fELF" {
        return Err(ElfCoreError::BadMagic { addr, found: [eh[0], eh[1], eh[2], eh[3]] });
    }
    if eh[4] != ELFCLASS64 {
        return Err(ElfCoreError::NotElf64 { class: eh[4] });
    }
    if eh[5] != ELFDATA2LSB {
        return Err(ElfCoreError::NotLittleEndian { data: eh[5] });
    }
    if eh[6] != EV_CURRENT {
        return Err(ElfCoreError::BadVersion { version: u32::from(eh[6]) });
    }
    let e_type = u16_at(&eh, 16);
    let e_machine = u16_at(&eh, 18);
    let e_version = u32_at(&eh, 20);
    let e_phoff = u64_at(&eh, 32);
    let e_phentsize = u16_at(&eh, 54);
    let e_phnum = u16_at(&eh, 56);
    if e_type != ET_CORE {
        return Err(ElfCoreError::NotCore { e_type });
    }
    if e_machine != limits.machine {
        return Err(ElfCoreError::WrongMachine { found: e_machine, expected: limits.machine });
    }
    if e_version != u32::from(EV_CURRENT) {
        return Err(ElfCoreError::BadVersion { version: e_version });
    }
    if usize::from(e_phentsize) != PHDR_SIZE {
        return Err(ElfCoreError::BadPhentsize { phentsize: e_phentsize });
    }
    if e_phnum == 0 {
        return Err(ElfCoreError::NoProgramHeaders);
    }
    if e_phnum > MAX_PHNUM {
        return Err(ElfCoreError::TooManyProgramHeaders { phnum: e_phnum });
    }
    // At most 8192 * 56 bytes: no overflow in the product.
    let table_len = u64::from(e_phnum) * PHDR_SIZE as u64;
    let overflow = ElfCoreError::PhdrOverflow { phoff: e_phoff, phnum: e_phnum };
    let table_end = e_phoff.checked_add(table_len).ok_or(overflow.clone())?;
    let table_addr = addr.checked_add(e_phoff).ok_or(overflow.clone())?;
    table_addr.checked_add(table_len).ok_or(overflow)?;
    if let Some(given) = limits.hdr_size {
        let need = table_end.max(EHDR_SIZE as u64);
        if need > given {
            return Err(ElfCoreError::Truncated { need, given });
        }
    }
    let mut table = vec![0u8; table_len as usize];
    read(mem, table_addr, &mut table).map_err(unreadable)?;
    Ok(table
        .chunks_exact(PHDR_SIZE)
        .map(|c| {
            let mut b = [0u8; PHDR_SIZE];
            b.copy_from_slice(c);
            Phdr::from_bytes(&b)
        })
        .collect())
}

/// Walks the notes of one `PT_NOTE`, appending each complete note to `notes`.
fn walk_note_segment(
    mem: &dyn PhysRead,
    index: usize,
    ph: &Phdr,
    notes: &mut Vec<u8>,
    warnings: &mut Vec<String>,
) -> Result<(), ElfCoreError> {
    let size = ph.filesz;
    if size > MAX_NOTE_SEGMENT {
        return Err(ElfCoreError::NoteTooBig { index, size });
    }
    if ph.offset.checked_add(size).is_none() {
        return Err(ElfCoreError::NoteOverflow { index, offset: ph.offset, size });
    }
    let unreadable = |(addr, len)| ElfCoreError::NoteUnreadable { index, addr, len };
    let mut pos = 0u64;
    // Linux stops at a header that does not fit or has n_namesz == 0 (final_note()).
    while size - pos >= NHDR_SIZE {
        let mut nh = [0u8; NHDR_SIZE as usize];
        read(mem, ph.offset + pos, &mut nh).map_err(unreadable)?;
        let namesz = u32_at(&nh, 0);
        let descsz = u32_at(&nh, 4);
        if namesz == 0 {
            break;
        }
        let name_pad = (u64::from(namesz) + 3) & !3;
        let desc_pad = (u64::from(descsz) + 3) & !3;
        let total = NHDR_SIZE + name_pad + desc_pad;
        if total > size - pos {
            warnings.push(format!(
                "PT_NOTE #{}: note n_namesz={:#x} n_descsz={:#x} at +{:#x} runs past the \
                 segment's {} bytes: dropped",
                index, namesz, descsz, pos, size
            ));
            break;
        }
        let start = notes.len();
        let new_len = start as u64 + total;
        if new_len > MAX_NOTES {
            return Err(ElfCoreError::NotesTooBig { total: new_len });
        }
        // Bounded by MAX_NOTES above, so these fit usize and the reads stay in the segment.
        notes.resize(new_len as usize, 0);
        notes[start..start + NHDR_SIZE as usize].copy_from_slice(&nh);
        read(mem, ph.offset + pos + NHDR_SIZE, &mut notes[start + NHDR_SIZE as usize..])
            .map_err(unreadable)?;
        pos += total;
    }
    Ok(())
}

/// Iterates over notes concatenated by [`walk_note_segment`]: `(name without NULs, type,
/// descriptor range in the buffer)`.
struct NoteIter<'a> {
    notes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for NoteIter<'a> {
    type Item = (&'a [u8], u32, Range<usize>);
    fn next(&mut self) -> Option<Self::Item> {
        let nh = self.notes.get(self.pos..self.pos.checked_add(NHDR_SIZE as usize)?)?;
        let (namesz, descsz, n_type) =
            (u32_at(nh, 0) as usize, u32_at(nh, 4) as usize, u32_at(nh, 8));
        let name_start = self.pos + NHDR_SIZE as usize;
        let name = self.notes.get(name_start..name_start.checked_add(namesz)?)?;
        let desc_start = name_start.checked_add(namesz.checked_next_multiple_of(4)?)?;
        let desc = desc_start..desc_start.checked_add(descsz)?;
        self.notes.get(desc.clone())?;
        self.pos = desc_start.checked_add(descsz.checked_next_multiple_of(4)?)?;
        let name_end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        Some((&name[..name_end], n_type, desc))
    }
}

/// Checks one `PT_LOAD`; `Ok(None)` for an empty one (skipped with a warning).
fn check_load(
    index: usize,
    ph: &Phdr,
    text: bool,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Option<LoadSegment>, ElfCoreError> {
    if text && ph.filesz.max(ph.memsz) > MAX_KERNEL_TEXT {
        return Err(ElfCoreError::KernelTextAbsurd {
            index,
            vaddr: ph.vaddr,
            size: ph.filesz.max(ph.memsz),
        });
    }
    if ph.filesz > ph.memsz {
        return Err(ElfCoreError::FileszAboveMemsz { index, filesz: ph.filesz, memsz: ph.memsz });
    }
    let overflow = ElfCoreError::LoadOverflow {
        index,
        offset: ph.offset,
        paddr: ph.paddr,
        filesz: ph.filesz,
        memsz: ph.memsz,
    };
    let src = PhysRange::from_start_len(ph.offset, ph.filesz).ok_or(overflow.clone())?;
    let mem_end = ph.paddr.checked_add(ph.memsz).ok_or(overflow)?;
    let dump = PhysRange { start: ph.paddr, end: ph.paddr + ph.filesz };
    let bits = phys_bits(limits.max_phys);
    if mem_end > limits.max_phys {
        let range = PhysRange { start: ph.paddr, end: mem_end };
        return Err(ElfCoreError::BeyondPhys { index, range, bits });
    }
    if src.end > limits.max_phys {
        return Err(ElfCoreError::BeyondPhys { index, range: src, bits });
    }
    if ph.filesz == 0 {
        warnings.push(format!(
            "PT_LOAD #{} at p_paddr {:#x} has no data (p_filesz 0): skipped",
            index, ph.paddr
        ));
        return Ok(None);
    }
    if ph.offset % PAGE_4K != ph.paddr % PAGE_4K {
        return Err(ElfCoreError::Misaligned { index, offset: ph.offset, paddr: ph.paddr });
    }
    if let Some(own) = limits.own.iter().find(|o| o.overlaps(&src)) {
        return Err(ElfCoreError::ClaimsOwnMemory { index, range: src, own: *own });
    }
    if let Some(ram) = &limits.ram {
        if !ram.iter().any(|r| r.contains_range(&src)) {
            return Err(ElfCoreError::OutsideRam { index, range: src });
        }
    }
    Ok(Some(LoadSegment { paddr: dump.start, src: src.start, len: ph.filesz, vaddr: ph.vaddr }))
}

/// `sorted` must be sorted by `paddr`.
fn check_overlaps(sorted: &[(usize, LoadSegment)]) -> Result<(), ElfCoreError> {
    for w in sorted.windows(2) {
        let ((i0, a), (i1, b)) = (w[0], w[1]);
        if a.dump_range().overlaps(&b.dump_range()) {
            let (first, second) = if i0 < i1 { ((i0, a), (i1, b)) } else { ((i1, b), (i0, a)) };
            return Err(ElfCoreError::Overlap {
                index: second.0,
                range: second.1.dump_range(),
                other: first.0,
                other_range: first.1.dump_range(),
            });
        }
    }
    Ok(())
}

/// Building elfcorehdrs and fake memory for tests (also used by the dump writer's tests).
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::phys::PhysError;

    /// xorshift64: deterministic test data for every test module (no extra crates).
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// A number in `0..n`.
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// An index in `0..n`.
        pub fn index(&mut self, n: usize) -> usize {
            self.below(n as u64) as usize
        }
        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Physical memory made of buffers at given addresses; everything else is unreadable.
    #[derive(Default)]
    pub struct FakeMem {
        pub regions: Vec<(u64, Vec<u8>)>,
    }

    impl FakeMem {
        pub fn add(&mut self, addr: u64, data: Vec<u8>) {
            self.regions.push((addr, data));
        }
    }

    impl PhysRead for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
            let err = PhysError::Unreadable { addr, len: buf.len() as u64 };
            let end = addr.checked_add(buf.len() as u64).ok_or(err)?;
            for (base, data) in &self.regions {
                if addr >= *base && end <= base + data.len() as u64 {
                    let off = (addr - base) as usize;
                    buf.copy_from_slice(&data[off..off + buf.len()]);
                    return Ok(());
                }
            }
            Err(err)
        }
    }

    pub fn phdr(
        p_type: u32,
        offset: u64,
        vaddr: u64,
        paddr: u64,
        filesz: u64,
        memsz: u64,
    ) -> [u8; 56] {
        let mut b = [0u8; 56];
        b[0..4].copy_from_slice(&p_type.to_le_bytes());
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        b[8..16].copy_from_slice(&offset.to_le_bytes());
        b[16..24].copy_from_slice(&vaddr.to_le_bytes());
        b[24..32].copy_from_slice(&paddr.to_le_bytes());
        b[32..40].copy_from_slice(&filesz.to_le_bytes());
        b[40..48].copy_from_slice(&memsz.to_le_bytes());
        b
    }

    pub fn load(offset: u64, paddr: u64, len: u64) -> [u8; 56] {
        phdr(PT_LOAD, offset, 0xffff_8880_0000_0000 + paddr, paddr, len, len)
    }

    pub fn note_seg(offset: u64, len: u64) -> [u8; 56] {
        phdr(PT_NOTE, offset, 0, offset, len, len)
    }

    /// An ELF64 core header with the given program headers (table right after the Ehdr).
    pub fn ehdr(machine: u16, phdrs: &[[u8; 56]]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = ELFCLASS64;
        b[5] = ELFDATA2LSB;
        b[6] = EV_CURRENT;
        b[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for p in phdrs {
            b.extend_from_slice(p);
        }
        b
    }

    /// One ELF note: header, padded name (with NUL), padded descriptor.
    pub fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
        let namesz = name.len() as u32 + 1;
        let mut b = Vec::new();
        b.extend_from_slice(&namesz.to_le_bytes());
        b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        b.extend_from_slice(&n_type.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b.extend_from_slice(desc);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    pub fn limits() -> Limits {
        Limits { max_phys: 1 << 46, own: Vec::new(), ram: None, machine: EM_X86_64, hdr_size: None }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    const HDR: u64 = 0x7f00_0000;
    const NOTES_A: u64 = 0x7e00_0000;
    const NOTES_B: u64 = 0x7e10_0000;
    const VMCI: u64 = 0x7e20_0000;

    /// A realistic kexec-tools-style header: 2 CPU notes (sizes overstated), VMCOREINFO,
    /// kernel text, backup region, RAM.
    fn realistic() -> (FakeMem, Vec<u8>) {
        let mut mem = FakeMem::default();
        let prstatus = vec![0x11u8; 336];
        let mut cpu0 = note("CORE", NT_PRSTATUS, &prstatus);
        cpu0.extend_from_slice(&[0u8; 12]);
        cpu0.resize(1024, 0xee);
        let mut cpu1 = note("CORE", NT_PRSTATUS, &prstatus);
        cpu1.resize(1024, 0);
        let mut vmci = note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\nPAGESIZE=4096\n");
        vmci.extend_from_slice(&[0u8; 12]);
        mem.add(NOTES_A, cpu0);
        mem.add(NOTES_B, cpu1);
        mem.add(VMCI, vmci);
        let hdr = ehdr(
            EM_X86_64,
            &[
                note_seg(NOTES_A, 1024),
                note_seg(NOTES_B, 1024),
                note_seg(VMCI, 4096),
                phdr(
                    PT_LOAD,
                    0x100_0000,
                    0xffff_ffff_8100_0000,
                    0x100_0000,
                    0x200_0000,
                    0x200_0000,
                ),
                load(0x7d00_0000, 0, 0xa0000),
                load(0x10_0000, 0x10_0000, 0x6ff0_0000),
            ],
        );
        mem.regions.insert(0, (HDR, hdr.clone()));
        (mem, hdr)
    }

    #[test]
    fn parses_realistic_header() {
        let (mem, _) = realistic();
        let core = ElfCoreHeader::parse(&mem, HDR, &limits()).unwrap();
        assert_eq!(core.nr_cpus, 2);
        assert_eq!(core.loads.len(), 2);
        assert_eq!(
            core.loads[0],
            LoadSegment { paddr: 0, src: 0x7d00_0000, len: 0xa0000, vaddr: 0xffff_8880_0000_0000 }
        );
        assert_eq!(core.loads[1].paddr, 0x10_0000);
        assert_eq!(core.kernel_text.unwrap().paddr, 0x100_0000);
        let v = core.vmcoreinfo_bytes().unwrap();
        assert_eq!(v, b"OSRELEASE=6.1.0\nPAGESIZE=4096\n");
        // Notes: two CORE notes (12 + 8 + 336 each) and the VMCOREINFO note, concatenated.
        assert_eq!(core.notes.len(), 2 * 356 + 12 + 12 + 32);
        assert!(core.warnings.is_empty(), "{:?}", core.warnings);
    }

    #[test]
    fn kernel_text_not_covered_is_ram() {
        let mut mem = FakeMem::default();
        let hdr = ehdr(
            EM_X86_64,
            &[
                phdr(PT_LOAD, 0x100_0000, 0xffff_ffff_8100_0000, 0x100_0000, 0x10_0000, 0x10_0000),
                load(0x200_0000, 0x200_0000, 0x10_0000),
            ],
        );
        mem.add(HDR, hdr);
        let core = ElfCoreHeader::parse(&mem, HDR, &limits()).unwrap();
        assert_eq!(core.kernel_text, None);
        assert_eq!(core.loads.len(), 2);
        assert_eq!(core.warnings.len(), 1); // no VMCOREINFO
        assert!(core.warnings[0].contains("no VMCOREINFO"));
    }

    fn parse_with(phdrs: &[[u8; 56]], limits: &Limits) -> Result<ElfCoreHeader, ElfCoreError> {
        let mut mem = FakeMem::default();
        mem.add(HDR, ehdr(limits.machine, phdrs));
        ElfCoreHeader::parse(&mem, HDR, limits)
    }

    #[test]
    fn rejects_bad_loads() {
        let l = limits();
        let e = parse_with(&[load(0x1000, 0x1000, 0x2000), load(0x2000, 0x2000, 0x2000)], &l)
            .unwrap_err();
        assert_eq!(e.to_string(), "PT_LOAD #1 [0x2000-0x4000) overlaps PT_LOAD #0 [0x1000-0x3000)");
        let e = parse_with(&[load(1 << 46, 1 << 46, 0x1000)], &l).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PT_LOAD #0 [0x400000000000-0x400000001000) is absurd: beyond the 46-bit physical \
             address space"
        );
        let e = parse_with(&[load(0x1000, 0x1800, 0x1000)], &l).unwrap_err();
        assert!(matches!(e, ElfCoreError::Misaligned { .. }));
        let e = parse_with(&[phdr(PT_LOAD, 0, 0, 0, 2, 1)], &l).unwrap_err();
        assert!(matches!(e, ElfCoreError::FileszAboveMemsz { .. }));
        let e = parse_with(&[phdr(PT_LOAD, u64::MAX, 0, 0, 2, 2)], &l).unwrap_err();
        assert!(matches!(e, ElfCoreError::LoadOverflow { .. }), "{}", e);
        let mut own = l.clone();
        own.own.push(PhysRange { start: 0x5000, end: 0x6000 });
        let e = parse_with(&[load(0x1000, 0x1000, 0x10000)], &own).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PT_LOAD #0 [0x1000-0x11000) claims the capture kernel's own memory [0x5000-0x6000)"
        );
        let mut ram = l.clone();
        ram.ram = Some(vec![
            PhysRange { start: 0, end: 0x8000 },
            PhysRange { start: 0x8000, end: 0x20000 },
        ]);
        let e = parse_with(&[load(0x1000, 0x1000, 0x10000)], &ram).unwrap_err();
        assert_eq!(e.to_string(), "PT_LOAD #0 [0x1000-0x11000) is outside RAM");
        assert!(parse_with(&[load(0x9000, 0x9000, 0x1000)], &ram).is_ok());
        // Empty loads are skipped; none left is an error.
        let e = parse_with(&[load(0x1000, 0x1000, 0)], &l).unwrap_err();
        assert_eq!(e, ElfCoreError::NoLoads);
    }

    #[test]
    fn rejects_arm64_kexec_tools_garbage() {
        let mut l = limits();
        l.machine = EM_AARCH64;
        let bogus = phdr(
            PT_LOAD,
            0x4020_0000,
            0xffff_8000_0800_0000,
            0x4020_0000,
            u64::MAX - 0x4020_0000,
            u64::MAX - 0x4020_0000,
        );
        let e = parse_with(&[bogus, load(0x4000_0000, 0x4000_0000, 0x4000_0000)], &l).unwrap_err();
        assert!(matches!(e, ElfCoreError::KernelTextAbsurd { index: 0, .. }), "{}", e);
        assert!(e.to_string().contains("_text"));
    }

    #[test]
    fn rejects_bad_ehdr() {
        let l = limits();
        let good = ehdr(EM_X86_64, &[load(0x1000, 0x1000, 0x1000)]);
        let cases: &[(usize, &[u8], &str)] = &[
            (0, b"\x7fELG", "no ELF header"),
            (4, &[1], "not 64-bit"),
            (5, &[2], "not little-endian"),
            (6, &[0], "version 0"),
            (16, &[2, 0], "ELF type 2"),
            (18, &[183, 0], "machine 183"),
            (54, &[32, 0], "32 bytes each"),
            (56, &[0, 0], "no program headers"),
            (56, &[0x01, 0x20], "too many program headers"),
            (32, &[0xc8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "overflows"),
            (32, &[0, 0, 0, 1], "unreadable"),
        ];
        for (at, bytes, msg) in cases {
            let mut h = good.clone();
            h[*at..*at + bytes.len()].copy_from_slice(bytes);
            let mut mem = FakeMem::default();
            mem.add(HDR, h);
            let e = ElfCoreHeader::parse(&mem, HDR, &l).unwrap_err();
            assert!(e.to_string().contains(msg), "{}: {}", msg, e);
        }
        let e = ElfCoreHeader::parse(&FakeMem::default(), HDR, &l).unwrap_err();
        assert_eq!(e, ElfCoreError::HeaderUnreadable { addr: HDR, len: 64 });
        let mut small = l.clone();
        small.hdr_size = Some(100);
        let e = parse_with(&[load(0x1000, 0x1000, 0x1000)], &small).unwrap_err();
        assert_eq!(
            e.to_string(),
            "elfcorehdr truncated: program headers need 120 bytes, only 100 given"
        );
    }

    #[test]
    fn note_edge_cases() {
        let l = limits();
        let mut mem = FakeMem::default();
        // A note whose descriptor runs past p_filesz is dropped with a warning.
        let mut n = note("CORE", NT_PRSTATUS, &[1u8; 64]);
        n.extend_from_slice(&note("CORE", NT_PRSTATUS, &[2u8; 64]));
        mem.add(NOTES_A, n);
        let hdr = ehdr(EM_X86_64, &[note_seg(NOTES_A, 84 + 40), load(0x1000, 0x1000, 0x1000)]);
        mem.add(HDR, hdr);
        let core = ElfCoreHeader::parse(&mem, HDR, &l).unwrap();
        assert_eq!(core.nr_cpus, 1);
        assert_eq!(core.notes.len(), 84);
        assert!(core.warnings[0].contains("runs past"), "{:?}", core.warnings);
        // Unreadable and absurd note segments are errors.
        let e = parse_with(&[note_seg(0x5000, 64), load(0x1000, 0x1000, 0x1000)], &l).unwrap_err();
        assert_eq!(e, ElfCoreError::NoteUnreadable { index: 0, addr: 0x5000, len: 12 });
        let e =
            parse_with(&[note_seg(0x5000, 2 << 20), load(0x1000, 0x1000, 0x1000)], &l).unwrap_err();
        assert!(matches!(e, ElfCoreError::NoteTooBig { .. }));
    }


    /// Random and mutated headers: parse must never panic, whatever it returns.
    #[test]
    fn fuzz_never_panics() {
        let (base_mem, base_hdr) = realistic();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let interesting = [
            0u64,
            1,
            3,
            4,
            12,
            56,
            64,
            0xfff,
            0x1000,
            1 << 46,
            u64::MAX,
            u64::MAX - 11,
            0x8000_0000_0000_0000,
        ];
        let mut ok = 0;
        for round in 0..4000 {
            let mut hdr = base_hdr.clone();
            let mut regions: Vec<(u64, Vec<u8>)> = base_mem.regions.clone();
            if round % 10 == 0 {
                // Pure noise.
                let n = rng.below(600) as usize;
                hdr = (0..n).map(|_| rng.next() as u8).collect();
                if n >= 4 && rng.below(2) == 0 {
                    hdr[0..4].copy_from_slice(b"\x7fELF");
                }
            } else {
                for _ in 0..1 + rng.below(6) {
                    match rng.below(4) {
                        0 if !hdr.is_empty() => {
                            let i = rng.below(hdr.len() as u64) as usize;
                            hdr[i] = rng.next() as u8;
                        }
                        1 if hdr.len() >= 8 => {
                            let i = rng.below(hdr.len() as u64 - 7) as usize;
                            let v = interesting[rng.below(interesting.len() as u64) as usize];
                            hdr[i..i + 8].copy_from_slice(&v.to_le_bytes());
                        }
                        2 => {
                            // Corrupt a note region.
                            let r = 1 + rng.below(regions.len() as u64 - 1) as usize;
                            let data = &mut regions[r].1;
                            let i = rng.below(data.len() as u64) as usize;
                            data[i] = rng.next() as u8;
                            if i + 4 <= data.len() && rng.below(2) == 0 {
                                data[i..i + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                            }
                        }
                        _ => {
                            let n = rng.below(hdr.len() as u64 + 1) as usize;
                            hdr.truncate(n);
                        }
                    }
                }
            }
            let mut mem = FakeMem { regions };
            mem.regions[0] = (HDR, hdr);
            let mut l = limits();
            if round % 3 == 0 {
                l.ram = Some(vec![PhysRange { start: 0, end: 0x8000_0000 }]);
                l.own = vec![PhysRange { start: 0x7c00_0000, end: 0x7c80_0000 }];
                l.hdr_size = Some(rng.below(1024));
            }
            if ElfCoreHeader::parse(&mem, HDR, &l).is_ok() {
                ok += 1;
            }
        }
        // Some mutations must keep the header valid, so later checks are exercised too.
        assert!(ok > 100, "only {} valid", ok);
    }
}
