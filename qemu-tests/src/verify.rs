//! An independent checker of makedumpfile's kdump-compressed format (reference §1).
//!
//! It does not share code with the capture kernel's writer on purpose: it reads the file the
//! way crash and makedumpfile do (header, sub header, notes, two bitmaps, one `page_desc` per
//! set bit of the second bitmap, zlib or raw page data, one shared zero page) and compares
//! every page with what the test put into the crashed machine's memory.
//!
//! The format is the same for x86_64 and arm64 dumps (little-endian); what differs is in
//! [`Expectations`]: `utsname.machine`, what `phys_base` means (x86_64 `NUMBER(phys_base)`,
//! arm64 `NUMBER(PHYS_OFFSET)`), the size of the PRSTATUS notes (336 and 392 bytes), which
//! must equal the crashed kernel's, and the block size.
//!
//! The block size is the crashed kernel's page size ([`Expectations::block_size`]: its
//! VMCOREINFO `PAGESIZE`, 4 KiB without one; arm64 kernels have 4, 16 or 64 KiB pages). The
//! header must state exactly that; everything after it is read in blocks of that size: the
//! sub header at one block, `sub_hdr_size` and `bitmap_blocks` in blocks, one bitmap bit
//! per page of that size, pfn = paddr / block size, and every page stored and compared as one
//! unit of that size (raw: exactly one block; zlib: inflating to exactly one block). A dump
//! written in 4 KiB blocks for a 64 KiB-page kernel fails at its header, one whose pages hold
//! 4 KiB pieces fails at every such page. [`ExpectedMemory`] stays in 4 KiB frames: a page
//! of a larger block size is its frames in order ([`ExpectedMemory::dump_block`]).

use std::fmt;
use std::ops::Range;

use crate::synth::SynthImage;

/// The block size of a dump of a kernel with 4 KiB pages (every x86_64 kernel), and the frame
/// [`ExpectedMemory::dump_page`] works in.
pub const BLOCK_SIZE: usize = 4096;
const PAGE: usize = BLOCK_SIZE;
/// Block sizes the kdump format allows here: the page sizes of x86_64 and arm64 kernels.
pub const BLOCK_SIZES: [usize; 3] = [4096, 16 << 10, 64 << 10];

/// `struct disk_dump_header` size (diskdump_mod.h).
pub const DISK_DUMP_HEADER_SIZE: usize = 464;
/// `struct kdump_sub_header` size.
pub const KDUMP_SUB_HEADER_SIZE: usize = 104;
/// `page_desc_t` size.
pub const PAGE_DESC_SIZE: usize = 24;

pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
/// Every status bit makedumpfile defines (ZLIB, LZO, SNAPPY, INCOMPLETE, EXCLUDED_VMEMMAP, ZSTD).
const KNOWN_STATUS_BITS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20;

/// How many page-level problems are described one by one; the rest are only counted.
pub const MAX_PAGE_REPORTS: usize = 20;

/// What the dump must contain, page by page.
pub trait ExpectedMemory {
    /// Fill `out` with the content the dump must show for the 4 KiB frame `pfn` (physical
    /// address `pfn * 4096`); `false` if the frame is not RAM of the crashed machine.
    fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool;

    /// Fill `out` (one block: a power of two ≥ 4 KiB) with the content the dump must show for
    /// block `pfn` (physical address `pfn * out.len()`): its 4 KiB frames in order. `false`
    /// unless every frame of it is RAM.
    fn dump_block(&self, pfn: u64, out: &mut [u8]) -> bool {
        dump_block_by_frames(self, pfn, out)
    }
}

/// [`ExpectedMemory::dump_block`] from [`ExpectedMemory::dump_page`], frame by frame.
fn dump_block_by_frames<M: ExpectedMemory + ?Sized>(mem: &M, pfn: u64, out: &mut [u8]) -> bool {
    let frames = (out.len() / PAGE) as u64;
    out.chunks_exact_mut(PAGE)
        .enumerate()
        .all(|(i, frame)| mem.dump_page(pfn * frames + i as u64, frame.try_into().expect("4 KiB")))
}

impl ExpectedMemory for SynthImage {
    fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
        SynthImage::dump_page(self, pfn, out)
    }

    /// Whole pages of the crashed kernel at once; other block sizes (a dump checked against
    /// 4 KiB blocks because the machine has no VMCOREINFO) frame by frame.
    fn dump_block(&self, pfn: u64, out: &mut [u8]) -> bool {
        if out.len() as u64 == self.page_size() {
            SynthImage::dump_block(self, pfn, out)
        } else {
            dump_block_by_frames(self, pfn, out)
        }
    }
}

/// What the dump's headers must say.
#[derive(Clone, Debug)]
pub struct Expectations {
    /// Pfns that are RAM (sorted, non-overlapping), in blocks of [`Self::block_size`]:
    /// exactly these must be set in both bitmaps.
    pub ram_pfns: Vec<Range<u64>>,
    pub nr_cpus: i32,
    /// `utsname.release`, if it must be checked.
    pub release: Option<String>,
    pub machine: String,
    pub phys_base: Option<u64>,
    /// The exact VMCOREINFO text, if the dump must carry one.
    pub vmcoreinfo: Option<String>,
    /// PRSTATUS descriptors in CPU order; the dump's notes must hold exactly these.
    pub prstatus: Vec<Vec<u8>>,
    /// Whether the INCOMPLETE status bit must be clear (true) or set (false).
    pub complete: bool,
    /// The dump level the sub header must state. With any of bits 2..16 (page filtering) the
    /// 2nd bitmap may leave RAM pages out; otherwise it must equal the 1st.
    pub dump_level: i32,
}

impl Expectations {
    /// What a complete dump of `image` (of either architecture) must say. Its block size is
    /// the image's page size if the dump carries the VMCOREINFO that says so, else 4 KiB
    /// (what the capture kernel assumes without one).
    pub fn for_image(image: &SynthImage) -> Self {
        let block = match image.vmcoreinfo {
            Some(_) => image.page_size(),
            None => BLOCK_SIZE as u64,
        };
        Expectations {
            ram_pfns: image.ram_pfn_ranges_of(block),
            nr_cpus: image.spec.cpus as i32,
            release: image
                .vmcoreinfo
                .as_ref()
                .map(|_| crate::synth::OSRELEASE.to_string()),
            machine: image.arch().name().to_string(),
            phys_base: image.vmcoreinfo.as_ref().map(|_| image.phys_base),
            vmcoreinfo: image.vmcoreinfo.clone(),
            prstatus: image.prstatus.clone(),
            complete: true,
            // Synthetic memory has no struct pages: the capture kernel falls back to level 1.
            dump_level: 1,
        }
    }

    /// The block size the dump must have: the crashed kernel's page size, `PAGESIZE` in its
    /// VMCOREINFO (makedumpfile's `block_size = info->page_size`), or 4096 without one or
    /// without a `PAGESIZE` line (where the capture kernel falls back to 4096 too).
    pub fn block_size(&self) -> u64 {
        self.vmcoreinfo
            .as_deref()
            .and_then(|v| v.lines().find_map(|l| l.strip_prefix("PAGESIZE=")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(BLOCK_SIZE as u64)
    }

    fn max_mapnr(&self) -> u64 {
        self.ram_pfns.iter().map(|r| r.end).max().unwrap_or(0)
    }

    fn is_ram(&self, pfn: u64) -> bool {
        let i = self.ram_pfns.partition_point(|r| r.end <= pfn);
        self.ram_pfns.get(i).is_some_and(|r| r.start <= pfn)
    }
}

/// Numbers about a dump that passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KdumpStats {
    pub file_bytes: u64,
    /// The header's `block_size`: the size of every page counted below.
    pub block_size: u64,
    pub pages: u64,
    /// Pages that use the shared zero-page descriptor.
    pub zero_pages: u64,
    pub zlib_pages: u64,
    pub raw_pages: u64,
    /// Bytes of page data (without the shared zero page).
    pub page_data_bytes: u64,
    pub timestamp_sec: i64,
    pub status: u32,
    pub release: String,
    pub machine: String,
    /// `(name, type, descsz)` of every note in the dump.
    pub notes: Vec<(String, u32, usize)>,
}

/// A dump that does not match; `problems` says everything that is wrong.
#[derive(Clone, Debug, Default)]
pub struct VerifyFailure {
    pub problems: Vec<String>,
    /// Pages whose content differs from the expected one (all of them, not only the reported).
    pub page_mismatches: u64,
    /// Page-level problems beyond the first [`MAX_PAGE_REPORTS`], counted only.
    pub unreported_page_problems: u64,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the kdump-compressed file is wrong ({} problems, {} pages with wrong content):",
            self.problems.len() as u64 + self.unreported_page_problems,
            self.page_mismatches
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        if self.unreported_page_problems > 0 {
            writeln!(
                f,
                "  … and {} more page problems",
                self.unreported_page_problems
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyFailure {}

struct Problems {
    list: Vec<String>,
    page_reports: usize,
    unreported: u64,
    mismatches: u64,
}

impl Problems {
    fn general(&mut self, s: String) {
        self.list.push(s);
    }
    fn page(&mut self, s: impl FnOnce() -> String) {
        if self.page_reports < MAX_PAGE_REPORTS {
            self.page_reports += 1;
            self.list.push(s());
        } else {
            self.unreported += 1;
        }
    }
    fn fail(self) -> VerifyFailure {
        VerifyFailure {
            problems: self.list,
            page_mismatches: self.mismatches,
            unreported_page_problems: self.unreported,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `page_desc_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageDesc {
    offset: u64,
    size: u32,
    flags: u32,
    page_flags: u64,
}

impl PageDesc {
    fn read(b: &[u8]) -> Self {
        PageDesc {
            offset: u64_at(b, 0),
            size: u32_at(b, 8),
            flags: u32_at(b, 12),
            page_flags: u64_at(b, 16),
        }
    }
}

/// Check `file` (a complete kdump-compressed file) against what the test expects.
pub fn verify_kdump(
    file: &[u8],
    exp: &Expectations,
    mem: &dyn ExpectedMemory,
) -> Result<KdumpStats, VerifyFailure> {
    let mut pr = Problems {
        list: vec![],
        page_reports: 0,
        unreported: 0,
        mismatches: 0,
    };
    let mut stats = KdumpStats {
        file_bytes: file.len() as u64,
        ..Default::default()
    };
    macro_rules! fatal {
        ($($t:tt)*) => {{ pr.general(format!($($t)*)); return Err(pr.fail()); }};
    }
    if file.len() < DISK_DUMP_HEADER_SIZE {
        fatal!("file is {} bytes; a kdump-compressed file has at least a header block and a sub-header block", file.len());
    }

    // --- struct disk_dump_header ---
    if &file[..8] != b"KDUMP   " {
        fatal!(
            "signature is {:?}, expected \"KDUMP   \"",
            String::from_utf8_lossy(&file[..8])
        );
    }
    let header_version = i32_at(file, 8);
    if header_version != 6 {
        pr.general(format!("header_version is {header_version}, expected 6"));
    }
    let uts = &file[12..12 + 390];
    stats.release = cstr(&uts[2 * 65..3 * 65]);
    stats.machine = cstr(&uts[4 * 65..5 * 65]);
    if let Some(rel) = &exp.release {
        if &stats.release != rel {
            pr.general(format!(
                "utsname.release is {:?}, expected {rel:?}",
                stats.release
            ));
        }
    }
    if stats.machine != exp.machine {
        pr.general(format!(
            "utsname.machine is {:?}, expected {:?}",
            stats.machine, exp.machine
        ));
    }
    stats.timestamp_sec = u64_at(file, 408) as i64;
    let status = u32_at(file, 424);
    stats.status = status;
    if status & DUMP_DH_COMPRESSED_ZLIB == 0 {
        pr.general(format!("status {status:#x} lacks the ZLIB bit (0x1)"));
    }
    if status & !KNOWN_STATUS_BITS != 0 || status & (0x2 | 0x4 | 0x20) != 0 {
        pr.general(format!(
            "status {status:#x} has bits other than ZLIB/INCOMPLETE/EXCLUDED_VMEMMAP"
        ));
    }
    let incomplete = status & DUMP_DH_COMPRESSED_INCOMPLETE != 0;
    if incomplete == exp.complete {
        pr.general(format!(
            "status {status:#x}: the INCOMPLETE bit (0x8) is {} but the dump is expected to be {}",
            if incomplete { "set" } else { "clear" },
            if exp.complete {
                "complete"
            } else {
                "incomplete"
            }
        ));
    }
    let block_size = i32_at(file, 428);
    let want_block = exp.block_size();
    if i64::from(block_size) != want_block as i64 {
        fatal!(
            "block_size is {block_size}, expected {want_block} (the crashed kernel's page size{})",
            if exp.vmcoreinfo.is_some() {
                ": VMCOREINFO PAGESIZE"
            } else {
                "; without VMCOREINFO the capture kernel assumes 4096"
            }
        );
    }
    if !BLOCK_SIZES.contains(&(want_block as usize)) {
        fatal!("the crashed kernel's PAGESIZE={want_block} is not a page size this checker knows ({BLOCK_SIZES:?})");
    }
    let bs = want_block as usize;
    stats.block_size = want_block;
    if file.len() < 2 * bs {
        fatal!("file is {} bytes; a kdump-compressed file has at least a header block and a sub-header block of {bs} bytes", file.len());
    }
    let sub_hdr_size = u64::from(u32_at(file, 432));
    let bitmap_blocks = u64::from(u32_at(file, 436));
    let max_mapnr32 = u32_at(file, 440);
    let nr_cpus = i32_at(file, 460);
    if nr_cpus != exp.nr_cpus {
        pr.general(format!("nr_cpus is {nr_cpus}, expected {}", exp.nr_cpus));
    }
    if file[DISK_DUMP_HEADER_SIZE..bs].iter().any(|&b| b != 0) {
        pr.general("header block is not zero after the 464-byte header".into());
    }

    // --- struct kdump_sub_header ---
    let sh = &file[bs..bs + KDUMP_SUB_HEADER_SIZE];
    let phys_base = u64_at(sh, 0);
    let dump_level = i32_at(sh, 8);
    let split = i32_at(sh, 12);
    let offset_vmcoreinfo = u64_at(sh, 32);
    let size_vmcoreinfo = u64_at(sh, 40);
    let offset_note = u64_at(sh, 48);
    let size_note = u64_at(sh, 56);
    let offset_eraseinfo = u64_at(sh, 64);
    let size_eraseinfo = u64_at(sh, 72);
    let max_mapnr = u64_at(sh, 96);
    if let Some(pb) = exp.phys_base {
        if phys_base != pb {
            pr.general(format!(
                "sub header phys_base is {phys_base:#x}, expected {pb:#x}"
            ));
        }
    }
    if dump_level != exp.dump_level {
        pr.general(format!("dump_level is {dump_level}, expected {}", exp.dump_level));
    }
    if split != 0 {
        pr.general(format!("split is {split}, expected 0"));
    }
    if offset_eraseinfo != 0 || size_eraseinfo != 0 {
        pr.general(format!(
            "eraseinfo at {offset_eraseinfo:#x} size {size_eraseinfo}; expected none"
        ));
    }
    let exp_mapnr = exp.max_mapnr();
    if max_mapnr != exp_mapnr {
        pr.general(format!(
            "max_mapnr_64 is {max_mapnr:#x}, expected {exp_mapnr:#x} (highest RAM pfn + 1)"
        ));
    }
    if u64::from(max_mapnr32) != max_mapnr.min(u64::from(u32::MAX)) {
        pr.general(format!(
            "header max_mapnr is {max_mapnr32:#x}, sub header max_mapnr_64 {max_mapnr:#x}"
        ));
    }

    // --- notes ---
    let note_start = (bs + KDUMP_SUB_HEADER_SIZE) as u64;
    if offset_note != note_start {
        pr.general(format!(
            "offset_note is {offset_note:#x}, expected {note_start:#x}"
        ));
    }
    if size_note == 0 || offset_note.saturating_add(size_note) > file.len() as u64 {
        fatal!("notes at {offset_note:#x} size {size_note} are empty or outside the file");
    }
    let want_sub = (KDUMP_SUB_HEADER_SIZE as u64 + size_note).div_ceil(bs as u64);
    if sub_hdr_size != want_sub {
        fatal!("sub_hdr_size is {sub_hdr_size} blocks, expected {want_sub} for {size_note} bytes of notes");
    }
    let notes = &file[offset_note as usize..(offset_note + size_note) as usize];
    let mut prstatus_found = Vec::new();
    let mut vmcoreinfo_desc: Option<(u64, u64)> = None;
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let (namesz, descsz, ty) = (
            u32_at(notes, at) as usize,
            u32_at(notes, at + 4) as usize,
            u32_at(notes, at + 8),
        );
        if namesz == 0 && descsz == 0 && ty == 0 {
            break;
        }
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let next = desc_at + descsz.next_multiple_of(4);
        if namesz > 4096 || descsz > notes.len() || next > notes.len() {
            pr.general(format!("note at note-area offset {at:#x} (namesz {namesz}, descsz {descsz}) runs past size_note {size_note}"));
            break;
        }
        let name = cstr(&notes[name_at..name_at + namesz]);
        let desc = &notes[desc_at..desc_at + descsz];
        if name == "CORE" && ty == 1 {
            prstatus_found.push(desc.to_vec());
        }
        if name == "VMCOREINFO" {
            if vmcoreinfo_desc.is_some() {
                pr.general("more than one VMCOREINFO note".into());
            }
            vmcoreinfo_desc = Some((offset_note + desc_at as u64, descsz as u64));
        }
        stats.notes.push((name, ty, descsz));
        at = next;
    }
    if prstatus_found.len() != exp.prstatus.len() {
        pr.general(format!(
            "{} PRSTATUS notes in the dump, expected {}",
            prstatus_found.len(),
            exp.prstatus.len()
        ));
    }
    for (cpu, (got, want)) in prstatus_found.iter().zip(&exp.prstatus).enumerate() {
        if got != want {
            let first = got.iter().zip(want).position(|(a, b)| a != b);
            pr.general(format!(
                "PRSTATUS note {cpu}: descsz {} (expected {}), first difference at byte {first:?}",
                got.len(),
                want.len()
            ));
        }
    }
    match (&exp.vmcoreinfo, vmcoreinfo_desc) {
        (Some(want), Some((off, size))) => {
            if offset_vmcoreinfo != off || size_vmcoreinfo != size {
                pr.general(format!(
                    "offset_vmcoreinfo/size_vmcoreinfo are {offset_vmcoreinfo:#x}/{size_vmcoreinfo}, but the VMCOREINFO note descriptor is at {off:#x}/{size}"
                ));
            }
            match file.get(offset_vmcoreinfo as usize..offset_vmcoreinfo.saturating_add(size_vmcoreinfo) as usize) {
                Some(text) => {
                    let text = String::from_utf8_lossy(text);
                    let text = text.trim_end_matches('\0');
                    if !text.starts_with("OSRELEASE=") {
                        pr.general(format!("VMCOREINFO at offset_vmcoreinfo does not start with OSRELEASE=: {:?}", &text[..text.len().min(40)]));
                    } else if text != want {
                        pr.general(format!("VMCOREINFO text differs from the crashed kernel's: got {text:?}"));
                    }
                }
                None => pr.general(format!("offset_vmcoreinfo {offset_vmcoreinfo:#x} + {size_vmcoreinfo} is outside the file")),
            }
        }
        (Some(_), None) => pr.general("no VMCOREINFO note in the dump".into()),
        (None, Some(_)) => {
            pr.general("a VMCOREINFO note in the dump although the crashed kernel had none".into())
        }
        (None, None) => {
            if offset_vmcoreinfo != 0 || size_vmcoreinfo != 0 {
                pr.general(format!("offset_vmcoreinfo/size_vmcoreinfo are {offset_vmcoreinfo:#x}/{size_vmcoreinfo} without a VMCOREINFO note"));
            }
        }
    }

    // --- bitmaps ---
    let half_blocks = max_mapnr.div_ceil(8).div_ceil(bs as u64);
    if bitmap_blocks != 2 * half_blocks {
        fatal!(
            "bitmap_blocks is {bitmap_blocks}, expected {} for max_mapnr {max_mapnr:#x}",
            2 * half_blocks
        );
    }
    let bitmap_at = (1 + sub_hdr_size) * bs as u64;
    let data_offset = bitmap_at + bitmap_blocks * bs as u64;
    if data_offset > file.len() as u64 {
        fatal!(
            "bitmaps end at {data_offset:#x}, past the end of the {}-byte file",
            file.len()
        );
    }
    let half = (half_blocks * bs as u64) as usize;
    let bm1 = &file[bitmap_at as usize..bitmap_at as usize + half];
    let bm2 = &file[bitmap_at as usize + half..bitmap_at as usize + 2 * half];
    let bit = |bm: &[u8], pfn: u64| bm[(pfn >> 3) as usize] >> (pfn & 7) & 1 == 1;
    let filtered = exp.dump_level & 0x1e != 0;
    for (which, bm) in [("1st", bm1), ("2nd", bm2)] {
        let mut wrong = 0u64;
        let mut first = Vec::new();
        for pfn in 0..(half as u64 * 8) {
            let want = exp.is_ram(pfn);
            let set = bit(bm, pfn);
            // A filtered dump's 2nd bitmap leaves pages out; it may never add any.
            if set != want && !(filtered && which == "2nd" && want && !set) {
                wrong += 1;
                if first.len() < 5 {
                    first.push(format!(
                        "pa {:#x} {}",
                        pfn * bs as u64,
                        if want { "missing" } else { "set but not RAM" }
                    ));
                }
            }
        }
        if wrong > 0 {
            pr.general(format!(
                "{which} bitmap differs from the RAM PT_LOADs at {wrong} pfns, first: {}",
                first.join(", ")
            ));
        }
    }

    // --- page descriptors and data ---
    let dumped: Vec<u64> = (0..(half as u64 * 8)).filter(|&p| bit(bm2, p)).collect();
    let descs_end = data_offset + (dumped.len() * PAGE_DESC_SIZE) as u64;
    if descs_end > file.len() as u64 {
        fatal!(
            "{} page descriptors from {data_offset:#x} run past the end of the {}-byte file",
            dumped.len(),
            file.len()
        );
    }
    let zero_desc = PageDesc {
        offset: descs_end,
        size: bs as u32,
        flags: 0,
        page_flags: 0,
    };
    let zero_page = vec![0u8; bs];
    let zero_data_ok = file
        .get(descs_end as usize..descs_end as usize + bs)
        .is_some_and(|d| d == zero_page);
    let mut expected = vec![0u8; bs];
    let mut zero_not_shared = 0u64;
    let mut extents: Vec<(u64, u64, u64)> = Vec::new(); // (offset, size, pfn)
    for (k, &pfn) in dumped.iter().enumerate() {
        let pa = pfn * bs as u64;
        let d =
            PageDesc::read(&file[data_offset as usize + k * PAGE_DESC_SIZE..][..PAGE_DESC_SIZE]);
        stats.pages += 1;
        let have_expected = mem.dump_block(pfn, &mut expected);
        // A slice comparison (memcmp) rather than a byte loop: millions of zero pages in a
        // 64 GiB dump, and `cargo xtask` builds this without optimisation.
        let expect_zero = have_expected && expected == zero_page;
        if d == zero_desc {
            stats.zero_pages += 1;
            if !zero_data_ok {
                pr.page(|| format!("pa {pa:#x}: uses the zero-page descriptor, but the first data item is not {bs} zero bytes"));
            }
            if have_expected && !expect_zero {
                pr.mismatches += 1;
                pr.page(|| {
                    format!("pa {pa:#x}: dump has the shared zero page, expected non-zero content")
                });
            }
            continue;
        }
        if expect_zero {
            zero_not_shared += 1;
            pr.page(|| format!("pa {pa:#x}: an all-zero page with its own descriptor {d:?}; zero pages must share the first data item {zero_desc:?}"));
        }
        if d.page_flags != 0 {
            pr.page(|| format!("pa {pa:#x}: page_flags {:#x}, expected 0", d.page_flags));
        }
        let size = d.size as u64;
        if d.offset < descs_end
            || size == 0
            || size > bs as u64
            || d.offset.saturating_add(size) > file.len() as u64
        {
            pr.page(|| format!("pa {pa:#x}: descriptor {d:?} is outside the page-data area {descs_end:#x}..{:#x}", file.len()));
            pr.mismatches += 1;
            continue;
        }
        extents.push((d.offset, size, pfn));
        stats.page_data_bytes += size;
        let data = &file[d.offset as usize..(d.offset + size) as usize];
        let got: Vec<u8> = match d.flags {
            0 => {
                stats.raw_pages += 1;
                if d.size != bs as u32 {
                    pr.page(|| {
                        format!(
                            "pa {pa:#x}: raw page of {} bytes, expected one block of {bs}",
                            d.size
                        )
                    });
                    pr.mismatches += 1;
                    continue;
                }
                data.to_vec()
            }
            DUMP_DH_COMPRESSED_ZLIB => {
                stats.zlib_pages += 1;
                match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, bs) {
                    Ok(v) if v.len() == bs => v,
                    Ok(v) => {
                        pr.page(|| {
                            format!(
                                "pa {pa:#x}: zlib data inflates to {} bytes, expected one block of {bs}",
                                v.len()
                            )
                        });
                        pr.mismatches += 1;
                        continue;
                    }
                    Err(e) => {
                        pr.page(|| format!("pa {pa:#x}: zlib data ({size} bytes at {:#x}) does not inflate: {:?}", d.offset, e.status));
                        pr.mismatches += 1;
                        continue;
                    }
                }
            }
            f => {
                pr.page(|| {
                    format!("pa {pa:#x}: flags {f:#x}; only 0 (raw) and 1 (zlib) are expected")
                });
                pr.mismatches += 1;
                continue;
            }
        };
        if !have_expected {
            continue; // already reported by the bitmap check
        }
        if got[..] != expected[..] {
            pr.mismatches += 1;
            pr.page(|| describe_mismatch(pa, &got, &expected));
        }
    }
    if zero_not_shared > 0 {
        pr.general(format!(
            "{zero_not_shared} all-zero pages do not use the shared zero-page descriptor"
        ));
    }
    // Page data must not overlap (each page sent once, none over the shared zero page).
    extents.sort_unstable();
    let zero_end = if stats.zero_pages > 0 {
        descs_end + bs as u64
    } else {
        descs_end
    };
    let mut prev_end = zero_end;
    let mut prev_pfn = None;
    for &(off, size, pfn) in &extents {
        if off < prev_end {
            pr.page(|| {
                let other = prev_pfn.map_or("the shared zero page".to_string(), |p: u64| {
                    format!("pa {:#x}", p * bs as u64)
                });
                format!(
                    "pa {:#x}: page data at {off:#x} overlaps the data of {other}",
                    pfn * bs as u64
                )
            });
        }
        prev_end = prev_end.max(off + size);
        prev_pfn = Some(pfn);
    }
    if pr.list.is_empty() && pr.unreported == 0 {
        Ok(stats)
    } else {
        Err(pr.fail())
    }
}

fn describe_mismatch(pa: u64, got: &[u8], want: &[u8]) -> String {
    let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let origin = if got.iter().all(|&b| b == 0) {
        " (dump has a zero page)".to_string()
    } else if let Some(src) = crate::synth::stamp_source(got) {
        format!(" (dump's page looks like the generated page of source {src:#x})")
    } else {
        String::new()
    };
    format!(
        "pa {pa:#x}: {differing} of {} bytes differ, first at +{first:#x}: got {:#04x}, expected {:#04x}{origin}",
        got.len(), got[first], want[first]
    )
}

#[cfg(test)]
pub(crate) mod testdump {
    //! A minimal kdump-compressed writer for tests, with knobs to break it.
    use super::*;

    pub struct TestDump {
        /// RAM pfns, in blocks of `block_size`.
        pub ram_pfns: Vec<Range<u64>>,
        /// The header's block size, and the size of every page written.
        pub block_size: usize,
        pub uts_release: String,
        /// The machine whose utsname the header carries.
        pub arch: crate::Arch,
        pub nr_cpus: i32,
        pub status: u32,
        pub phys_base: u64,
        pub notes: Vec<u8>,
        /// (offset within `notes` of the VMCOREINFO descriptor, its size)
        pub vmcoreinfo: Option<(u64, u64)>,
        /// Give zero pages their own compressed data instead of the shared descriptor.
        pub unshare_zero: bool,
        /// Write the zero page but point zero descriptors 4096 bytes later.
        pub misplace_zero_desc: bool,
        /// Corrupt one data byte of the page at this pfn (after compression).
        pub corrupt_pfn: Option<u64>,
        /// Leave this pfn out of both bitmaps.
        pub drop_pfn: Option<u64>,
        /// Leave these pfns out of the 2nd bitmap only (as page filtering does).
        pub filter_out: Vec<u64>,
        /// The sub header's dump level.
        pub dump_level: i32,
        /// Write this pfn's content with every byte flipped.
        pub wrong_content_pfn: Option<u64>,
        /// Write only the first 4 KiB frame of this pfn's page (compressed or raw as it
        /// comes), as a writer that works in 4 KiB units whatever the block size would.
        pub split_pfn: Option<u64>,
    }

    impl TestDump {
        pub fn new(ram_pfns: Vec<Range<u64>>) -> Self {
            TestDump {
                ram_pfns,
                block_size: BLOCK_SIZE,
                uts_release: crate::synth::OSRELEASE.into(),
                arch: crate::Arch::X86_64,
                nr_cpus: 2,
                status: DUMP_DH_COMPRESSED_ZLIB,
                phys_base: 0,
                notes: vec![],
                vmcoreinfo: None,
                unshare_zero: false,
                misplace_zero_desc: false,
                corrupt_pfn: None,
                drop_pfn: None,
                filter_out: vec![],
                dump_level: 1,
                wrong_content_pfn: None,
                split_pfn: None,
            }
        }

        pub fn build(&self, mem: &dyn ExpectedMemory) -> Vec<u8> {
            let bs = self.block_size;
            let max_mapnr = self.ram_pfns.iter().map(|r| r.end).max().unwrap();
            let mut f = vec![0u8; bs];
            f[..8].copy_from_slice(b"KDUMP   ");
            f[8..12].copy_from_slice(&6i32.to_le_bytes());
            let uts = crate::synth::utsname_bytes_for(self.arch);
            f[12..12 + 390].copy_from_slice(&uts);
            f[12 + 130..12 + 195].fill(0);
            f[12 + 130..12 + 130 + self.uts_release.len()]
                .copy_from_slice(self.uts_release.as_bytes());
            f[424..428].copy_from_slice(&self.status.to_le_bytes());
            f[428..432].copy_from_slice(&(bs as i32).to_le_bytes());
            let sub_hdr_size = (KDUMP_SUB_HEADER_SIZE + self.notes.len()).div_ceil(bs);
            f[432..436].copy_from_slice(&(sub_hdr_size as u32).to_le_bytes());
            let half = (max_mapnr.div_ceil(8) as usize).div_ceil(bs);
            f[436..440].copy_from_slice(&(2 * half as u32).to_le_bytes());
            f[440..444].copy_from_slice(&(max_mapnr as u32).to_le_bytes());
            f[460..464].copy_from_slice(&self.nr_cpus.to_le_bytes());
            // sub header + notes
            let mut sh = vec![0u8; KDUMP_SUB_HEADER_SIZE];
            sh[0..8].copy_from_slice(&self.phys_base.to_le_bytes());
            sh[8..12].copy_from_slice(&self.dump_level.to_le_bytes());
            let note_off = (bs + KDUMP_SUB_HEADER_SIZE) as u64;
            if let Some((o, s)) = self.vmcoreinfo {
                sh[32..40].copy_from_slice(&(note_off + o).to_le_bytes());
                sh[40..48].copy_from_slice(&s.to_le_bytes());
            }
            sh[48..56].copy_from_slice(&note_off.to_le_bytes());
            sh[56..64].copy_from_slice(&(self.notes.len() as u64).to_le_bytes());
            sh[96..104].copy_from_slice(&max_mapnr.to_le_bytes());
            f.extend_from_slice(&sh);
            f.extend_from_slice(&self.notes);
            f.resize((1 + sub_hdr_size) * bs, 0);
            // bitmaps
            let mut bm = vec![0u8; half * bs];
            let mut pfns = vec![];
            for r in &self.ram_pfns {
                for p in r.clone() {
                    if Some(p) != self.drop_pfn {
                        bm[(p / 8) as usize] |= 1 << (p % 8);
                        pfns.push(p);
                    }
                }
            }
            pfns.sort();
            f.extend_from_slice(&bm);
            for &p in &self.filter_out {
                bm[(p / 8) as usize] &= !(1 << (p % 8));
            }
            pfns.retain(|p| !self.filter_out.contains(p));
            f.extend_from_slice(&bm);
            // descriptors, zero page, data
            let descs_at = f.len();
            let data_start = descs_at + pfns.len() * PAGE_DESC_SIZE;
            f.resize(data_start + bs, 0); // the shared zero page
            let zero_off = if self.misplace_zero_desc {
                data_start + bs
            } else {
                data_start
            } as u64;
            let mut descs = Vec::new();
            let mut page = vec![0u8; bs];
            for &p in &pfns {
                assert!(mem.dump_block(p, &mut page));
                if Some(p) == self.wrong_content_pfn {
                    page.iter_mut().for_each(|b| *b = !*b);
                }
                let page = if Some(p) == self.split_pfn {
                    &page[..PAGE]
                } else {
                    &page[..]
                };
                if page.iter().all(|&b| b == 0) && !self.unshare_zero {
                    descs.push((zero_off, bs as u32, 0u32));
                    continue;
                }
                let z = miniz_oxide::deflate::compress_to_vec_zlib(page, 1);
                let (mut data, flags) = if z.len() < page.len() {
                    (z, 1)
                } else {
                    (page.to_vec(), 0)
                };
                if Some(p) == self.corrupt_pfn {
                    let mid = data.len() / 2;
                    data[mid] ^= 0x40;
                }
                descs.push((f.len() as u64, data.len() as u32, flags));
                f.extend_from_slice(&data);
            }
            for (i, (off, size, flags)) in descs.into_iter().enumerate() {
                let d = &mut f[descs_at + i * PAGE_DESC_SIZE..][..PAGE_DESC_SIZE];
                d[0..8].copy_from_slice(&off.to_le_bytes());
                d[8..12].copy_from_slice(&size.to_le_bytes());
                d[12..16].copy_from_slice(&flags.to_le_bytes());
            }
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdump::TestDump;
    use super::*;
    use crate::synth::{elf_note, SynthImage, SynthSpec};

    /// pfns 0..3 and 5..12; even pfns zero, pfn 7 random, others compressible text.
    struct Mem;
    impl ExpectedMemory for Mem {
        fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
            if !(pfn < 3 || (5..12).contains(&pfn)) {
                return false;
            }
            out.fill(0);
            if pfn % 2 == 1 {
                if pfn == 7 {
                    crate::prng::SplitMix64::new(7).fill(out);
                } else {
                    for (i, b) in out.iter_mut().enumerate() {
                        *b = b"lifeboat page "[i % 14] ^ pfn as u8;
                    }
                }
            }
            true
        }
    }

    fn notes() -> (Vec<u8>, Vec<Vec<u8>>, String, (u64, u64)) {
        let p0 = crate::synth::prstatus_desc(0, 0xffffffff81000000).to_vec();
        let p1 = crate::synth::prstatus_desc(1, 0xffffffff81000000).to_vec();
        let vmci = "OSRELEASE=6.1.0-lifeboat-synthetic\nPAGESIZE=4096\n".to_string();
        let mut n = elf_note("CORE", 1, &p0);
        n.extend(elf_note("CORE", 1, &p1));
        let vo = n.len() as u64 + 12 + 12;
        n.extend(elf_note("VMCOREINFO", 0, vmci.as_bytes()));
        (n, vec![p0, p1], vmci.clone(), (vo, vmci.len() as u64))
    }

    fn good() -> (TestDump, Expectations) {
        let (n, prs, vmci, vo) = notes();
        let mut d = TestDump::new(vec![0..3, 5..12]);
        d.notes = n;
        d.vmcoreinfo = Some(vo);
        d.phys_base = 0x1200000;
        let e = Expectations {
            ram_pfns: vec![0..3, 5..12],
            nr_cpus: 2,
            release: Some(crate::synth::OSRELEASE.into()),
            machine: "x86_64".into(),
            phys_base: Some(0x1200000),
            vmcoreinfo: Some(vmci),
            prstatus: prs,
            complete: true,
            dump_level: 1,
        };
        (d, e)
    }

    fn check(d: &TestDump, e: &Expectations) -> Result<KdumpStats, VerifyFailure> {
        verify_kdump(&d.build(&Mem), e, &Mem)
    }

    fn problems(d: &TestDump, e: &Expectations) -> String {
        check(d, e)
            .expect_err("the verifier must reject this dump")
            .to_string()
    }

    #[test]
    fn accepts_a_correct_dump_and_counts() {
        let (d, e) = good();
        let s = check(&d, &e).unwrap();
        assert_eq!(s.pages, 10);
        assert_eq!(s.zero_pages, 5); // pfns 0, 2, 6, 8, 10
        assert_eq!(s.raw_pages, 1); // pfn 7
        assert_eq!(s.zlib_pages, 4);
        assert_eq!(s.notes.len(), 3);
        assert_eq!(s.machine, "x86_64");
    }

    #[test]
    fn catches_corrupted_page_data() {
        let (mut d, e) = good();
        d.corrupt_pfn = Some(9);
        let p = problems(&d, &e);
        assert!(p.contains("pa 0x9000"), "{p}");
    }

    #[test]
    fn catches_wrong_content_with_address() {
        let (mut d, e) = good();
        d.wrong_content_pfn = Some(7);
        let f = check(&d, &e).unwrap_err();
        assert_eq!(f.page_mismatches, 1);
        assert!(
            f.to_string()
                .contains("pa 0x7000: 4096 of 4096 bytes differ"),
            "{f}"
        );
    }

    #[test]
    fn catches_unshared_and_misplaced_zero_pages() {
        let (mut d, e) = good();
        d.unshare_zero = true;
        let p = problems(&d, &e);
        assert!(
            p.contains("5 all-zero pages do not use the shared zero-page descriptor"),
            "{p}"
        );
        let (mut d, e) = good();
        d.misplace_zero_desc = true;
        let p = problems(&d, &e);
        assert!(p.contains("zero"), "{p}");
    }

    #[test]
    fn catches_header_errors() {
        let (mut d, e) = good();
        d.nr_cpus = 1;
        assert!(problems(&d, &e).contains("nr_cpus is 1, expected 2"));
        let (mut d, e) = good();
        d.status |= DUMP_DH_COMPRESSED_INCOMPLETE;
        assert!(problems(&d, &e).contains("INCOMPLETE bit (0x8) is set"));
        let (mut d, e) = good();
        d.uts_release = "5.0".into();
        assert!(problems(&d, &e).contains("utsname.release"));
        let (mut d, e) = good();
        d.phys_base = 0;
        assert!(problems(&d, &e).contains("phys_base"));
        let (mut d, e) = good();
        d.vmcoreinfo = Some((d.vmcoreinfo.unwrap().0 + 4, 10));
        assert!(problems(&d, &e).contains("offset_vmcoreinfo"));
        let (d, mut e) = good();
        e.prstatus[1][PRSTATUS_REG_TEST] ^= 1;
        assert!(problems(&d, &e).contains("PRSTATUS note 1"));
    }
    const PRSTATUS_REG_TEST: usize = crate::synth::PRSTATUS_REG_OFFSET + 8;

    #[test]
    fn catches_bitmap_and_mapnr_errors() {
        let (mut d, e) = good();
        d.drop_pfn = Some(6);
        let p = problems(&d, &e);
        assert!(
            p.contains(
                "1st bitmap differs from the RAM PT_LOADs at 1 pfns, first: pa 0x6000 missing"
            ),
            "{p}"
        );
        let (mut d, mut e) = good();
        d.ram_pfns = vec![0..3, 5..13];
        e.ram_pfns = vec![0..3, 5..12];
        let p = verify_kdump(&d.build(&Wider), &e, &Mem)
            .unwrap_err()
            .to_string();
        assert!(p.contains("max_mapnr_64 is 0xd, expected 0xc"), "{p}");
    }
    #[test]
    fn filtered_dumps_may_leave_pages_out_of_the_2nd_bitmap_only() {
        // Level 31: pages 6 and 9 left out of the 2nd bitmap are fine.
        let (mut d, mut e) = good();
        d.filter_out = vec![6, 9];
        d.dump_level = 31;
        e.dump_level = 31;
        assert!(verify_kdump(&d.build(&Mem), &e, &Mem).is_ok());
        // The same dump claiming level 1 is wrong twice over.
        let (mut d, e) = good();
        d.filter_out = vec![6, 9];
        d.dump_level = 31;
        let p = problems(&d, &e);
        assert!(p.contains("dump_level is 31, expected 1"), "{p}");
        // Level 1 does not filter: the 2nd bitmap must have every RAM page.
        let (mut d, e) = good();
        d.filter_out = vec![6, 9];
        let p = problems(&d, &e);
        assert!(p.contains("2nd bitmap differs from the RAM PT_LOADs at 2 pfns"), "{p}");
        // Filtering never adds pages: pfn 12 is not RAM.
        let (mut d, mut e) = good();
        d.ram_pfns = vec![0..3, 5..13];
        d.dump_level = 31;
        e.dump_level = 31;
        let p = verify_kdump(&d.build(&Wider), &e, &Mem).unwrap_err().to_string();
        assert!(p.contains("set but not RAM"), "{p}");
    }

    struct Wider;
    impl ExpectedMemory for Wider {
        fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
            pfn == 12 && {
                out.fill(1);
                true
            } || Mem.dump_page(pfn, out)
        }
    }

    #[test]
    fn catches_truncation_and_garbage() {
        let (d, e) = good();
        let f = d.build(&Mem);
        let p = verify_kdump(&f[..f.len() - 100], &e, &Mem)
            .unwrap_err()
            .to_string();
        assert!(p.contains("outside the page-data area"), "{p}");
        let mut g = f.clone();
        g[0] = b'X';
        assert!(verify_kdump(&g, &e, &Mem)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        assert!(verify_kdump(&f[..5000], &e, &Mem).is_err());
        assert!(verify_kdump(&[], &e, &Mem).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn reports_at_most_twenty_pages_but_counts_all() {
        struct Shifted;
        impl ExpectedMemory for Shifted {
            fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
                out.fill(pfn as u8 | 1);
                pfn < 64
            }
        }
        struct Other;
        impl ExpectedMemory for Other {
            fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
                out.fill(pfn as u8 | 0x80);
                pfn < 64
            }
        }
        let mut d = TestDump::new(vec![0..64]);
        d.notes = elf_note("CORE", 1, &[0; 336]);
        d.notes.extend(elf_note("CORE", 1, &[0; 336]));
        let e = Expectations {
            ram_pfns: vec![0..64],
            nr_cpus: 2,
            release: None,
            machine: "x86_64".into(),
            phys_base: None,
            vmcoreinfo: None,
            prstatus: vec![vec![0; 336], vec![0; 336]],
            complete: true,
            dump_level: 1,
        };
        assert!(verify_kdump(&d.build(&Shifted), &e, &Shifted).is_ok());
        let f = verify_kdump(&d.build(&Other), &e, &Shifted).unwrap_err();
        assert_eq!(f.page_mismatches, 64);
        assert_eq!(f.problems.len(), MAX_PAGE_REPORTS);
        assert_eq!(f.unreported_page_problems, 44);
    }

    #[test]
    fn synthetic_image_round_trips_through_the_test_writer() {
        let im = SynthImage::generate(&SynthSpec::new(77, 8 << 20)).unwrap();
        let e = Expectations::for_image(&im);
        let mut d = TestDump::new(im.ram_pfn_ranges());
        let mut notes = Vec::new();
        for n in &im.cpu_notes {
            notes.extend_from_slice(&n.bytes[..n.bytes.len() - 12]);
        }
        let vn = &im.vmcoreinfo_note.as_ref().unwrap().bytes;
        let vo = notes.len() as u64 + 12 + 12;
        notes.extend_from_slice(&vn[..vn.len() - 12]);
        d.notes = notes;
        d.vmcoreinfo = Some((vo, im.vmcoreinfo.as_ref().unwrap().len() as u64));
        d.phys_base = im.phys_base;
        let s = verify_kdump(&d.build(&im), &e, &im).unwrap();
        assert_eq!(s.pages, (8 << 20) / 4096);
        assert!(
            s.zero_pages > s.pages / 3 && s.zero_pages < s.pages * 2 / 3,
            "{s:?}"
        );
        assert!(s.raw_pages > 0 && s.zlib_pages > 0);
        // The backup range shows its copy's content at pfns 0..160.
        let mut d2 = TestDump::new(im.ram_pfn_ranges());
        d2.notes = d.notes.clone();
        d2.vmcoreinfo = d.vmcoreinfo;
        d2.phys_base = d.phys_base;
        struct IdentityLow<'a>(&'a SynthImage);
        impl ExpectedMemory for IdentityLow<'_> {
            fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
                if pfn < 160 {
                    crate::synth::fill_page(self.0.spec.seed, pfn * 4096, out); // reads p_paddr, not p_offset
                    true
                } else {
                    self.0.dump_page(pfn, out)
                }
            }
        }
        let f = verify_kdump(&d2.build(&IdentityLow(&im)), &e, &im).unwrap_err();
        assert!(f.page_mismatches > 0);
        assert!(f.problems.iter().any(|p| p.starts_with("pa 0x")), "{f}");
    }

    /// Timing of the checker on the 256 MiB image (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn verify_256m_timing() {
        let im = SynthImage::generate(&SynthSpec::new(0x256, 256 << 20)).unwrap();
        let mut d = TestDump::new(im.ram_pfn_ranges());
        d.notes = im
            .cpu_notes
            .iter()
            .flat_map(|n| n.bytes[..n.bytes.len() - 12].to_vec())
            .collect();
        let vo = d.notes.len() as u64 + 24;
        let vn = &im.vmcoreinfo_note.as_ref().unwrap().bytes;
        d.notes.extend_from_slice(&vn[..vn.len() - 12]);
        d.vmcoreinfo = Some((vo, im.vmcoreinfo.as_ref().unwrap().len() as u64));
        d.phys_base = im.phys_base;
        let t = std::time::Instant::now();
        let f = d.build(&im);
        eprintln!(
            "test writer: {} bytes in {:.1} s",
            f.len(),
            t.elapsed().as_secs_f64()
        );
        let t = std::time::Instant::now();
        let s = verify_kdump(&f, &Expectations::for_image(&im), &im).unwrap();
        eprintln!("verify: {s:?} in {:.1} s", t.elapsed().as_secs_f64());
    }

    /// The dump a correct capture kernel writes of `im`: its notes, VMCOREINFO, utsname, in
    /// blocks of the crashed kernel's page size (4 KiB without VMCOREINFO).
    fn dump_of(im: &SynthImage) -> TestDump {
        dump_in_blocks_of(im, Expectations::for_image(im).block_size() as usize)
    }

    /// [`dump_of`] written in blocks of `block_size`, whatever the crashed kernel's pages.
    fn dump_in_blocks_of(im: &SynthImage, block_size: usize) -> TestDump {
        let mut d = TestDump::new(im.ram_pfn_ranges_of(block_size as u64));
        d.block_size = block_size;
        d.arch = im.arch();
        for n in &im.cpu_notes {
            d.notes.extend_from_slice(&n.bytes[..n.bytes.len() - 12]);
        }
        if let (Some(vn), Some(text)) = (&im.vmcoreinfo_note, &im.vmcoreinfo) {
            let vo = d.notes.len() as u64 + 12 + 12;
            d.notes.extend_from_slice(&vn.bytes[..vn.bytes.len() - 12]);
            d.vmcoreinfo = Some((vo, text.len() as u64));
            d.phys_base = im.phys_base;
        }
        d
    }

    #[test]
    fn arm64_synthetic_image_round_trips_through_the_test_writer() {
        let spec = SynthSpec::new_for(crate::Arch::Aarch64, 77, 8 << 20);
        let im = SynthImage::generate(&spec).unwrap();
        let e = Expectations::for_image(&im);
        assert_eq!((e.machine.as_str(), e.phys_base), ("aarch64", Some(0x4000_0000)));
        let d = dump_of(&im);
        let s = verify_kdump(&d.build(&im), &e, &im).unwrap();
        assert_eq!(s.pages, (8 << 20) / 4096);
        assert_eq!(s.machine, "aarch64");
        assert_eq!(s.notes[0], ("CORE".to_string(), 1, 392));
        assert!(s.raw_pages > 0 && s.zlib_pages > 0 && s.zero_pages > 0);
        // RAM starts at 1 GiB: max_mapnr and the bitmaps cover everything below too.
        assert!(im.ram_pfn_ranges()[0].start >= 0x4120_0000 / 4096);

        // Without VMCOREINFO: no phys_base, no release to check, still byte-exact.
        let mut spec = spec.clone();
        spec.with_vmcoreinfo = false;
        let bare = SynthImage::generate(&spec).unwrap();
        let eb = Expectations::for_image(&bare);
        assert_eq!((eb.release.as_deref(), eb.phys_base), (None, None));
        assert!(verify_kdump(&dump_of(&bare).build(&bare), &eb, &bare).is_ok());
    }

    #[test]
    fn arm64_dumps_are_checked_as_arm64() {
        let im = SynthImage::generate(&SynthSpec::new_for(crate::Arch::Aarch64, 5, 4 << 20)).unwrap();
        let e = Expectations::for_image(&im);
        // A header that says x86_64.
        let mut d = dump_of(&im);
        d.arch = crate::Arch::X86_64;
        let p = verify_kdump(&d.build(&im), &e, &im).unwrap_err().to_string();
        assert!(p.contains("utsname.machine is \"x86_64\", expected \"aarch64\""), "{p}");
        // x86_64-sized register notes.
        let mut d = dump_of(&im);
        d.notes = elf_note("CORE", 1, &crate::synth::prstatus_desc(0, im.text_vaddr));
        d.notes.extend(elf_note("CORE", 1, &crate::synth::prstatus_desc(1, im.text_vaddr)));
        d.vmcoreinfo = None;
        let p = verify_kdump(&d.build(&im), &e, &im).unwrap_err().to_string();
        assert!(p.contains("PRSTATUS note 0: descsz 336 (expected 392)"), "{p}");
        // phys_base must be PHYS_OFFSET, not x86's NUMBER(phys_base).
        let mut d = dump_of(&im);
        d.phys_base = 0;
        let p = verify_kdump(&d.build(&im), &e, &im).unwrap_err().to_string();
        assert!(p.contains("phys_base is 0x0, expected 0x40000000"), "{p}");
        // A page that is not where the PT_LOAD said.
        let mut d = dump_of(&im);
        let pfn = im.ranges[2].paddr / 4096 + 5;
        d.wrong_content_pfn = Some(pfn);
        let f = verify_kdump(&d.build(&im), &e, &im).unwrap_err();
        assert_eq!(f.page_mismatches, 1);
        assert!(f.to_string().contains(&format!("pa {:#x}:", pfn * 4096)), "{f}");
    }

    fn arm64_image_with_pages(page_size: u64, mib: u64) -> SynthImage {
        let spec = SynthSpec::with_page_size(crate::Arch::Aarch64, 0x64c, mib << 20, page_size);
        SynthImage::generate(&spec).unwrap()
    }

    #[test]
    fn the_block_size_is_the_crashed_kernels_pagesize() {
        let (_, mut e) = good();
        assert_eq!(e.block_size(), 4096);
        e.vmcoreinfo = Some("OSRELEASE=6.1.0\nPAGESIZE=65536\nCRASHTIME=1\n".into());
        assert_eq!(e.block_size(), 65536);
        e.vmcoreinfo = Some("OSRELEASE=6.1.0\n".into());
        assert_eq!(e.block_size(), 4096);
        e.vmcoreinfo = None;
        assert_eq!(e.block_size(), 4096);
        // A 64 KiB-page machine without VMCOREINFO is dumped (and checked) in 4 KiB blocks.
        let mut spec = SynthSpec::with_page_size(crate::Arch::Aarch64, 3, 16 << 20, 64 << 10);
        spec.with_vmcoreinfo = false;
        let bare = SynthImage::generate(&spec).unwrap();
        let eb = Expectations::for_image(&bare);
        assert_eq!(eb.block_size(), 4096);
        assert_eq!(eb.ram_pfns, bare.ram_pfn_ranges_of(4096));
        let s = verify_kdump(&dump_of(&bare).build(&bare), &eb, &bare).unwrap();
        assert_eq!((s.block_size, s.pages), (4096, (16 << 20) / 4096));
    }

    #[test]
    fn arm64_16k_and_64k_pages_round_trip_in_blocks_of_that_size() {
        for ps in [16u64 << 10, 64 << 10] {
            let im = arm64_image_with_pages(ps, 16);
            let e = Expectations::for_image(&im);
            assert_eq!(e.block_size(), ps);
            assert_eq!(e.max_mapnr(), im.max_mapnr());
            assert_eq!(e.max_mapnr(), im.ranges.last().unwrap().end() / ps);
            let f = dump_of(&im).build(&im);
            assert_eq!(i32_at(&f, 428) as u64, ps);
            let s = verify_kdump(&f, &e, &im).unwrap();
            assert_eq!((s.block_size, s.pages), (ps, (16 << 20) / ps));
            // Whole pages of that size are zero, random (stored raw) or compressible.
            assert!(
                s.zero_pages > 0 && s.raw_pages > 0 && s.zlib_pages > 0,
                "{s:?}"
            );
            // One wrong byte in one page is found, with the page's address.
            let mut d = dump_of(&im);
            let pfn = im.ranges[1].paddr / ps + 3;
            d.wrong_content_pfn = Some(pfn);
            let f = verify_kdump(&d.build(&im), &e, &im).unwrap_err();
            assert_eq!(f.page_mismatches, 1);
            assert!(
                f.to_string()
                    .contains(&format!("pa {:#x}: {ps} of {ps} bytes differ", pfn * ps)),
                "{f}"
            );
        }
    }

    #[test]
    fn a_dump_in_blocks_of_another_size_is_rejected() {
        // A 64 KiB-page kernel dumped in 4 KiB blocks (a writer that ignores PAGESIZE).
        let im = arm64_image_with_pages(64 << 10, 16);
        let e = Expectations::for_image(&im);
        let wrong = dump_in_blocks_of(&im, 4096).build(&im);
        let p = verify_kdump(&wrong, &e, &im).unwrap_err().to_string();
        assert!(
            p.contains("block_size is 4096, expected 65536 (the crashed kernel's page size: VMCOREINFO PAGESIZE)"),
            "{p}"
        );
        // The same dump with a header that claims 64 KiB blocks: bitmaps and max_mapnr count
        // 4 KiB pfns, and the pages are 4 KiB pieces.
        let mut d = dump_in_blocks_of(&im, 4096);
        d.block_size = 64 << 10;
        struct Frames<'a>(&'a SynthImage);
        impl ExpectedMemory for Frames<'_> {
            fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
                self.0.dump_page(pfn, out)
            }
            fn dump_block(&self, pfn: u64, out: &mut [u8]) -> bool {
                // The 4 KiB frame `pfn`, then zeros: a 64 KiB block holding a 4 KiB page.
                out.fill(0);
                self.0
                    .dump_page(pfn, (&mut out[..PAGE]).try_into().unwrap())
            }
        }
        let p = verify_kdump(&d.build(&Frames(&im)), &e, &im)
            .unwrap_err()
            .to_string();
        assert!(
            p.contains(&format!(
                "max_mapnr_64 is {:#x}, expected {:#x}",
                im.max_mapnr() * 16,
                im.max_mapnr()
            )),
            "{p}"
        );
        // A 4 KiB-page kernel dumped in 64 KiB blocks (its RAM ranges do not start or end on
        // 64 KiB boundaries: the frames that are not RAM are written as zeros).
        struct Padded<'a>(&'a SynthImage);
        impl ExpectedMemory for Padded<'_> {
            fn dump_page(&self, pfn: u64, out: &mut [u8; PAGE]) -> bool {
                self.0.dump_page(pfn, out) || {
                    out.fill(0);
                    true
                }
            }
        }
        let im4 = arm64_image_with_pages(4096, 16);
        let e4 = Expectations::for_image(&im4);
        let p = verify_kdump(
            &dump_in_blocks_of(&im4, 64 << 10).build(&Padded(&im4)),
            &e4,
            &im4,
        )
        .unwrap_err()
        .to_string();
        assert!(p.contains("block_size is 65536, expected 4096"), "{p}");
    }

    #[test]
    fn a_page_stored_as_a_4k_piece_is_rejected() {
        let ps = 64u64 << 10;
        let im = arm64_image_with_pages(ps, 16);
        let e = Expectations::for_image(&im);
        // Pages outside the kernel text (no utsname, no page table in them) of each kind.
        let text = im.text_paddr / ps..(im.text_paddr + im.text_len).div_ceil(ps);
        let find = |want: &[crate::synth::PageKind]| {
            im.ram_pfn_ranges()
                .into_iter()
                .flatten()
                .find(|&p| {
                    !text.contains(&p)
                        && want.contains(&crate::synth::page_kind(im.spec.seed, p * ps))
                })
                .unwrap()
        };
        use crate::synth::PageKind::*;
        let (compressible, random) = (find(&[Text, Pattern, Sparse]), find(&[Random]));
        for (pfn, says) in [
            (
                compressible,
                "zlib data inflates to 4096 bytes, expected one block of 65536",
            ),
            (
                random,
                "raw page of 4096 bytes, expected one block of 65536",
            ),
        ] {
            let mut d = dump_of(&im);
            d.split_pfn = Some(pfn);
            let f = verify_kdump(&d.build(&im), &e, &im).unwrap_err();
            assert_eq!(f.page_mismatches, 1, "{f}");
            assert!(
                f.to_string()
                    .contains(&format!("pa {:#x}: {says}", pfn * ps)),
                "{f}"
            );
        }
    }
}
