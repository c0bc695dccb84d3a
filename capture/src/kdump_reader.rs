//! Reading a kdump-compressed file: the dumps [`crate::dump::write_kdump`] writes, and those of
//! makedumpfile (`-c` zlib and uncompressed pages; lzo, snappy and zstd pages are reported as
//! unsupported).
//!
//! The layout is the one in the project reference, §1 (makedumpfile `diskdump_mod.h`; crash
//! `diskdump.c read_dump_header()` and `cache_page()` for what a reader checks). Everything in
//! the file is untrusted: every offset and size is checked against the file size with checked
//! arithmetic before it is used, nothing is allocated for a claimed size before that check
//! (and the caps below), and no input makes the reader panic.
//!
//! Memory: the second bitmap is held (max_pfn / 8 bytes: 32 MiB for 1 TiB of 4 KiB pages)
//! with a popcount per 4096 pfns to find a page's descriptor; descriptors and page data are
//! read when needed, and the [`PhysRead`] view keeps the last page it decoded.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_PARSE_ZLIB_HEADER, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::kdump::{
    DiskDumpHeader, KdumpSubHeader, PageDesc, UtsName, DISK_DUMP_HEADER_SIZE, DL_EXCLUDE_ZERO,
    DUMP_DH_COMPRESSED_INCOMPLETE, DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_SNAPPY,
    DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_ZSTD, KDUMP_SIGNATURE, KDUMP_SUB_HEADER_SIZE,
    PAGE_DESC_SIZE, UTSNAME_SIZE, UTS_FIELD_LEN,
};
use crate::phys::{PhysError, PhysRead};

/// Largest ELF notes area accepted (a few hundred bytes per CPU in practice).
pub const MAX_NOTES: u64 = 64 << 20;
/// Largest VMCOREINFO descriptor accepted (a few KiB in practice).
pub const MAX_VMCOREINFO: u64 = 1 << 20;
/// Largest second bitmap accepted: 16 TiB of 4 KiB pages.
pub const MAX_BITMAP: u64 = 512 << 20;
/// Pfns per entry of the popcount index.
const RANK_PFNS: u64 = 4096;
/// Descriptors read at a time when scanning them all.
const DESC_CHUNK: u64 = 1024;
/// How often (in pages) [`KdumpReader::verify`] reports progress.
const PROGRESS_EVERY: u64 = 4096;

/// Random access to the bytes of a dump file.
pub trait ReadAt {
    /// Fills `buf` from `offset`; the error text says why not.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Size of the file in bytes.
    fn size(&self) -> u64;
}

impl ReadAt for &[u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| String::from("read past the end of the buffer"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.as_slice().read_at(offset, buf)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

/// What is wrong with a dump file. Offsets are file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KdumpError {
    /// The underlying reader failed.
    Io { offset: u64, len: u64, message: String },
    /// Something the headers place reaches past the end of the file.
    Truncated { what: &'static str, offset: u64, len: u64, file_size: u64 },
    /// The file does not start with `"KDUMP   "`.
    NotKdump { signature: [u8; 8] },
    /// A header field has an impossible value; the text names it and says why.
    BadHeader { field: &'static str, why: String },
    /// A header claims more than this reader holds in memory.
    TooLarge { what: &'static str, bytes: u64, limit: u64 },
    /// Split dumps (`makedumpfile --split`) are not supported.
    SplitDump,
    /// A page descriptor (at file offset `offset`) is inconsistent.
    BadDescriptor { pfn: u64, offset: u64, why: String },
    /// The page is compressed with a method this reader does not have.
    UnsupportedCompression { pfn: u64, method: &'static str },
    /// The page data at `offset` does not decode to one page.
    BadPageData { pfn: u64, offset: u64, why: String },
    /// The second bitmap says a page is dumped that the first says is not RAM.
    BitmapMismatch { pfn: u64 },
    /// [`KdumpReader::read_page`] was given a buffer that is not one page.
    BufferSize { expected: u32, got: usize },
}

impl fmt::Display for KdumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KdumpError::Io { offset, len, message } => {
                write!(f, "cannot read {} bytes at offset {:#x}: {}", len, offset, message)
            }
            KdumpError::Truncated { what, offset, len, file_size } => write!(
                f,
                "{} at offset {:#x} ({} bytes) reaches past the end of the file ({} bytes): \
                 the file is truncated or the header is corrupt",
                what, offset, len, file_size
            ),
            KdumpError::NotKdump { signature } => write!(
                f,
                "not a kdump-compressed file: the signature is {:?}, not \"KDUMP   \" \
                 (a flattened dump must first be rebuilt with makedumpfile -R)",
                String::from_utf8_lossy(signature)
            ),
            KdumpError::BadHeader { field, why } => {
                write!(f, "corrupt dump header: {}: {}", field, why)
            }
            KdumpError::TooLarge { what, bytes, limit } => write!(
                f,
                "the header claims {} of {} bytes, more than the {} this reader accepts",
                what, bytes, limit
            ),
            KdumpError::SplitDump => {
                write!(
                    f,
                    "split dumps (makedumpfile --split) are not supported: reassemble it first"
                )
            }
            KdumpError::BadDescriptor { pfn, offset, why } => write!(
                f,
                "page descriptor of pfn {:#x} at offset {:#x} is corrupt: {}",
                pfn, offset, why
            ),
            KdumpError::UnsupportedCompression { pfn, method } => write!(
                f,
                "pfn {:#x} is compressed with {}, which this reader does not support \
                 (only zlib and uncompressed pages)",
                pfn, method
            ),
            KdumpError::BadPageData { pfn, offset, why } => {
                write!(f, "page data of pfn {:#x} at offset {:#x}: {}", pfn, offset, why)
            }
            KdumpError::BitmapMismatch { pfn } => write!(
                f,
                "pfn {:#x} is marked dumped in the second bitmap but not present in the first",
                pfn
            ),
            KdumpError::BufferSize { expected, got } => {
                write!(f, "page buffer of {} bytes given for {}-byte pages", got, expected)
            }
        }
    }
}

/// What [`KdumpReader::read_page`] found for a pfn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// The page's contents (uncompressed or inflated).
    Data,
    /// An all-zero page stored as the shared zero page; the buffer is filled with zeros.
    Zero,
    /// The page is not in the dump (excluded by the second bitmap, or beyond max_pfn); the
    /// buffer is filled with zeros.
    NotDumped,
    /// The descriptor says "missing" (offset 0: lifeboat's marker for a page it could not
    /// read); the buffer is filled with zeros.
    Missing,
}

/// What [`KdumpReader::verify`] counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Pfns covered by the bitmaps.
    pub max_pfn: u64,
    /// Pages with a descriptor (set in the second bitmap).
    pub pages_dumpable: u64,
    pub pages_zlib: u64,
    pub pages_raw: u64,
    pub pages_zero: u64,
    /// Descriptors marked missing (unreadable when captured).
    pub pages_missing: u64,
    /// Pages whose descriptor or data lie past the end of an incomplete dump.
    pub pages_lost: u64,
    /// End of the furthest page data (see [`KdumpReader::data_end`]).
    pub data_end: u64,
    pub file_size: u64,
    /// The header says the dump is incomplete.
    pub incomplete: bool,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "max_pfn:          {:#x}", self.max_pfn)?;
        writeln!(f, "dumpable pages:   {}", self.pages_dumpable)?;
        writeln!(f, "  zlib:           {}", self.pages_zlib)?;
        writeln!(f, "  uncompressed:   {}", self.pages_raw)?;
        writeln!(f, "  zero:           {}", self.pages_zero)?;
        writeln!(f, "  missing:        {}", self.pages_missing)?;
        writeln!(f, "  lost (past end): {}", self.pages_lost)?;
        writeln!(f, "data end:         {} bytes (file {} bytes)", self.data_end, self.file_size)?;
        write!(f, "header status:    {}", if self.incomplete { "INCOMPLETE" } else { "complete" })
    }
}

/// Where a descriptor says a page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Missing,
    Zero,
    Raw { offset: u64 },
    Zlib { offset: u64, size: u32 },
}

/// One zlib inflater and an input buffer, reused for every page.
struct Inflater {
    state: Box<DecompressorOxide>,
    input: Vec<u8>,
}

/// The last page the [`PhysRead`] view decoded.
struct CachedPage {
    pfn: u64,
    state: PageState,
    data: Vec<u8>,
}

/// A kdump-compressed file opened for reading.
pub struct KdumpReader<R: ReadAt> {
    r: R,
    file_size: u64,
    header: DiskDumpHeader,
    sub: KdumpSubHeader,
    page_size: u32,
    page_shift: u32,
    max_pfn: u64,
    notes: Vec<u8>,
    vmcoreinfo: Option<Vec<u8>>,
    bitmap1_offset: u64,
    /// The second bitmap's bytes covering pfns `0..max_pfn` (bits past max_pfn cleared).
    bitmap2: Vec<u8>,
    /// `ranks[i]`: set bits of bitmap2 before pfn `i * RANK_PFNS`.
    ranks: Vec<u64>,
    num_dumpable: u64,
    data_offset: u64,
    /// First byte after the descriptors: where page data may start.
    pages_offset: u64,
    inflater: RefCell<Inflater>,
    cache: RefCell<Option<CachedPage>>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn parse_header(b: &[u8; DISK_DUMP_HEADER_SIZE]) -> DiskDumpHeader {
    let mut signature = [0u8; 8];
    signature.copy_from_slice(&b[0..8]);
    let mut uts = [0u8; UTSNAME_SIZE];
    uts.copy_from_slice(&b[12..12 + UTSNAME_SIZE]);
    let mut pad = [0u8; 6];
    pad.copy_from_slice(&b[402..408]);
    DiskDumpHeader {
        signature,
        header_version: le_u32(b, 8) as i32,
        utsname: UtsName::from_bytes(&uts),
        pad,
        timestamp_sec: le_u64(b, 408) as i64,
        timestamp_usec: le_u64(b, 416) as i64,
        status: le_u32(b, 424),
        block_size: le_u32(b, 428) as i32,
        sub_hdr_size: le_u32(b, 432) as i32,
        bitmap_blocks: le_u32(b, 436),
        max_mapnr: le_u32(b, 440),
        total_ram_blocks: le_u32(b, 444),
        device_blocks: le_u32(b, 448),
        written_blocks: le_u32(b, 452),
        current_cpu: le_u32(b, 456),
        nr_cpus: le_u32(b, 460) as i32,
    }
}

fn parse_sub_header(b: &[u8; KDUMP_SUB_HEADER_SIZE]) -> KdumpSubHeader {
    KdumpSubHeader {
        phys_base: le_u64(b, 0),
        dump_level: le_u32(b, 8) as i32,
        split: le_u32(b, 12) as i32,
        start_pfn: le_u64(b, 16),
        end_pfn: le_u64(b, 24),
        offset_vmcoreinfo: le_u64(b, 32) as i64,
        size_vmcoreinfo: le_u64(b, 40),
        offset_note: le_u64(b, 48) as i64,
        size_note: le_u64(b, 56),
        offset_eraseinfo: le_u64(b, 64) as i64,
        size_eraseinfo: le_u64(b, 72),
        start_pfn_64: le_u64(b, 80),
        end_pfn_64: le_u64(b, 88),
        max_mapnr_64: le_u64(b, 96),
    }
}

fn parse_desc(b: &[u8]) -> PageDesc {
    PageDesc {
        offset: le_u64(b, 0) as i64,
        size: le_u32(b, 8),
        flags: le_u32(b, 12),
        page_flags: le_u64(b, 16),
    }
}

fn bad_header(field: &'static str, why: String) -> KdumpError {
    KdumpError::BadHeader { field, why }
}

/// Checks that `[offset, offset + len)` lies in a file of `file_size` bytes.
fn check_range(
    what: &'static str,
    offset: u64,
    len: u64,
    file_size: u64,
) -> Result<(), KdumpError> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        _ => Err(KdumpError::Truncated { what, offset, len, file_size }),
    }
}

/// Reads `[offset, offset + len)` into a new buffer, after checking it lies in the file and
/// is at most `limit` bytes.
fn read_vec<R: ReadAt>(
    r: &R,
    what: &'static str,
    offset: u64,
    len: u64,
    limit: u64,
) -> Result<Vec<u8>, KdumpError> {
    if len > limit {
        return Err(KdumpError::TooLarge { what, bytes: len, limit });
    }
    check_range(what, offset, len, r.size())?;
    let mut v = vec![0u8; len as usize];
    read_exact(r, what, offset, &mut v)?;
    Ok(v)
}

fn read_exact<R: ReadAt>(
    r: &R,
    what: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), KdumpError> {
    check_range(what, offset, buf.len() as u64, r.size())?;
    r.read_at(offset, buf).map_err(|message| KdumpError::Io {
        offset,
        len: buf.len() as u64,
        message,
    })
}

fn compression_name(flags: u32) -> Option<&'static str> {
    match flags {
        DUMP_DH_COMPRESSED_LZO => Some("lzo"),
        DUMP_DH_COMPRESSED_SNAPPY => Some("snappy"),
        DUMP_DH_COMPRESSED_ZSTD => Some("zstd"),
        _ => None,
    }
}

impl<R: ReadAt> KdumpReader<R> {
    /// Reads and checks the header, sub header, notes, VMCOREINFO and the second bitmap.
    ///
    /// An incomplete dump (a capture that stopped early) opens as long as its headers and
    /// bitmaps are there; pages past the end of the file then fail one by one.
    pub fn open(r: R) -> Result<Self, KdumpError> {
        let file_size = r.size();
        let mut hb = [0u8; DISK_DUMP_HEADER_SIZE];
        read_exact(&r, "the disk_dump_header", 0, &mut hb)?;
        let header = parse_header(&hb);
        if header.signature != KDUMP_SIGNATURE {
            return Err(KdumpError::NotKdump { signature: header.signature });
        }
        let version = header.header_version;
        if version < 1 {
            return Err(bad_header("header_version", format!("{} (must be at least 1)", version)));
        }
        let bs = header.block_size;
        if !(4096..=65536).contains(&bs) || !(bs as u32).is_power_of_two() {
            return Err(bad_header(
                "block_size",
                format!("{} is not a page size (a power of two 4096..65536)", bs),
            ));
        }
        let bs = bs as u64;
        if header.sub_hdr_size < 1 {
            return Err(bad_header(
                "sub_hdr_size",
                format!("{} blocks (must be at least 1)", header.sub_hdr_size),
            ));
        }
        let mut sb = [0u8; KDUMP_SUB_HEADER_SIZE];
        read_exact(&r, "the kdump_sub_header", bs, &mut sb)?;
        let sub = parse_sub_header(&sb);
        if version >= 2 && sub.split != 0 {
            return Err(KdumpError::SplitDump);
        }
        let max_pfn = if version >= 6 { sub.max_mapnr_64 } else { u64::from(header.max_mapnr) };

        // Bitmaps: two halves, each covering max_pfn bits in whole blocks.
        let bitmap_blocks = u64::from(header.bitmap_blocks);
        let bitmap_bytes_needed = max_pfn.div_ceil(8);
        let half_blocks = bitmap_blocks / 2;
        if !bitmap_blocks.is_multiple_of(2) || half_blocks * bs < bitmap_bytes_needed {
            return Err(bad_header(
                "bitmap_blocks",
                format!(
                    "{} blocks of {} bytes cannot hold two bitmaps of {} pfns (max_mapnr)",
                    bitmap_blocks, bs, max_pfn
                ),
            ));
        }
        let bitmap1_offset = (1 + header.sub_hdr_size as u64) * bs;
        let bitmap_len = bitmap_blocks * bs;
        check_range("the bitmaps", bitmap1_offset, bitmap_len, file_size)?;
        let data_offset = bitmap1_offset + bitmap_len;
        let mut bitmap2 = read_vec(
            &r,
            "the second bitmap",
            bitmap1_offset + half_blocks * bs,
            bitmap_bytes_needed,
            MAX_BITMAP,
        )?;
        if !max_pfn.is_multiple_of(8) {
            if let Some(last) = bitmap2.last_mut() {
                *last &= (1u8 << (max_pfn % 8)) - 1;
            }
        }
        let mut ranks = Vec::with_capacity(bitmap2.len().div_ceil((RANK_PFNS / 8) as usize));
        let mut num_dumpable = 0u64;
        for chunk in bitmap2.chunks((RANK_PFNS / 8) as usize) {
            ranks.push(num_dumpable);
            num_dumpable += chunk.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
        }
        // Fits: num_dumpable <= 8 * MAX_BITMAP and data_offset <= file_size.
        let pages_offset = data_offset + num_dumpable * PAGE_DESC_SIZE as u64;

        // Notes and VMCOREINFO (header versions 4 and 3 added them).
        let mut notes = Vec::new();
        if version >= 4 && sub.offset_note != 0 && sub.size_note != 0 {
            let off = u64::try_from(sub.offset_note).map_err(|_| {
                bad_header("offset_note", format!("{} is negative", sub.offset_note))
            })?;
            notes = read_vec(&r, "the ELF notes", off, sub.size_note, MAX_NOTES)?;
        }
        let mut vmcoreinfo = None;
        if version >= 3 && sub.offset_vmcoreinfo != 0 && sub.size_vmcoreinfo != 0 {
            let off = u64::try_from(sub.offset_vmcoreinfo).map_err(|_| {
                bad_header("offset_vmcoreinfo", format!("{} is negative", sub.offset_vmcoreinfo))
            })?;
            vmcoreinfo =
                Some(read_vec(&r, "VMCOREINFO", off, sub.size_vmcoreinfo, MAX_VMCOREINFO)?);
        }

        let page_size = bs as u32;
        Ok(Self {
            r,
            file_size,
            header,
            sub,
            page_size,
            page_shift: page_size.trailing_zeros(),
            max_pfn,
            notes,
            vmcoreinfo,
            bitmap1_offset,
            bitmap2,
            ranks,
            num_dumpable,
            data_offset,
            pages_offset,
            inflater: RefCell::new(Inflater {
                state: Box::default(),
                input: vec![0u8; page_size as usize],
            }),
            cache: RefCell::new(None),
        })
    }

    pub fn header(&self) -> &DiskDumpHeader {
        &self.header
    }

    pub fn sub_header(&self) -> &KdumpSubHeader {
        &self.sub
    }

    /// The header's status has `DUMP_DH_COMPRESSED_INCOMPLETE`: the capture stopped early.
    pub fn is_incomplete(&self) -> bool {
        self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE != 0
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Number of pfns the bitmaps cover (`max_mapnr`).
    pub fn max_pfn(&self) -> u64 {
        self.max_pfn
    }

    /// Number of pages with a descriptor.
    pub fn num_dumpable(&self) -> u64 {
        self.num_dumpable
    }

    /// The crashed kernel's ELF notes (CPU registers, VMCOREINFO), as stored.
    pub fn notes(&self) -> &[u8] {
        &self.notes
    }

    /// The VMCOREINFO descriptor text, if the dump has one.
    pub fn vmcoreinfo(&self) -> Option<&[u8]> {
        self.vmcoreinfo.as_deref()
    }

    /// `utsname.machine` from the header (`"x86_64"`, `"aarch64"`), if it is text.
    pub fn machine(&self) -> Option<&str> {
        let m: &[u8; UTS_FIELD_LEN] = &self.header.utsname.machine;
        UtsName::get(m)
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    /// Whether `pfn` has a descriptor, and its index.
    fn desc_index(&self, pfn: u64) -> Option<u64> {
        if pfn >= self.max_pfn {
            return None;
        }
        let byte = (pfn / 8) as usize;
        let bit = (pfn % 8) as u32;
        let b = *self.bitmap2.get(byte)?;
        if b & (1 << bit) == 0 {
            return None;
        }
        let chunk = (pfn / RANK_PFNS) as usize;
        let from = chunk * (RANK_PFNS / 8) as usize;
        let before: u64 = self.bitmap2[from..byte].iter().map(|b| u64::from(b.count_ones())).sum();
        let below = u64::from((b & ((1u8 << bit) - 1)).count_ones());
        Some(self.ranks[chunk] + before + below)
    }

    fn desc_offset(&self, index: u64) -> u64 {
        // index < num_dumpable, so this is below pages_offset.
        self.data_offset + index * PAGE_DESC_SIZE as u64
    }

    fn read_desc(&self, index: u64) -> Result<PageDesc, KdumpError> {
        let mut b = [0u8; PAGE_DESC_SIZE];
        read_exact(&self.r, "a page descriptor", self.desc_offset(index), &mut b)?;
        Ok(parse_desc(&b))
    }

    /// Checks a descriptor against the layout and the file size.
    fn classify(&self, pfn: u64, desc_offset: u64, d: &PageDesc) -> Result<Stored, KdumpError> {
        let bad = |why: String| KdumpError::BadDescriptor { pfn, offset: desc_offset, why };
        if d.offset == 0 {
            return Ok(Stored::Missing);
        }
        let offset =
            u64::try_from(d.offset).map_err(|_| bad(format!("negative offset {}", d.offset)))?;
        if offset < self.pages_offset {
            return Err(bad(format!(
                "data offset {:#x} lies inside the headers, bitmaps or descriptors (page data \
                 starts at {:#x})",
                offset, self.pages_offset
            )));
        }
        let ps = self.page_size;
        if d.size == 0 || d.size > ps {
            return Err(bad(format!("size {} is not 1..={}", d.size, ps)));
        }
        let stored = match d.flags {
            0 if d.size != ps => {
                return Err(bad(format!("uncompressed page of {} bytes, not {}", d.size, ps)))
            }
            0 if offset == self.pages_offset
                && self.sub.dump_level >= 0
                && self.sub.dump_level as u32 & DL_EXCLUDE_ZERO != 0 =>
            {
                Stored::Zero
            }
            0 => Stored::Raw { offset },
            DUMP_DH_COMPRESSED_ZLIB => Stored::Zlib { offset, size: d.size },
            f => match compression_name(f) {
                Some(method) => return Err(KdumpError::UnsupportedCompression { pfn, method }),
                None => return Err(bad(format!("unknown flags {:#x}", f))),
            },
        };
        check_range("page data", offset, u64::from(d.size), self.file_size)?;
        Ok(stored)
    }

    /// Reads or inflates a stored page into `buf` (one page).
    fn load(&self, pfn: u64, stored: Stored, buf: &mut [u8]) -> Result<PageState, KdumpError> {
        match stored {
            Stored::Missing => {
                buf.fill(0);
                Ok(PageState::Missing)
            }
            Stored::Zero => {
                buf.fill(0);
                Ok(PageState::Zero)
            }
            Stored::Raw { offset } => {
                read_exact(&self.r, "page data", offset, buf)?;
                Ok(PageState::Data)
            }
            Stored::Zlib { offset, size } => {
                let mut inf = self.inflater.borrow_mut();
                let Inflater { state, input } = &mut *inf;
                let input = &mut input[..size as usize];
                read_exact(&self.r, "page data", offset, input)?;
                inflate_page(state, input, buf).map_err(|why| KdumpError::BadPageData {
                    pfn,
                    offset,
                    why,
                })?;
                Ok(PageState::Data)
            }
        }
    }

    /// Reads page `pfn` into `buf` (exactly one page). Zero-filled unless the state is
    /// [`PageState::Data`].
    pub fn read_page(&self, pfn: u64, buf: &mut [u8]) -> Result<PageState, KdumpError> {
        if buf.len() != self.page_size as usize {
            return Err(KdumpError::BufferSize { expected: self.page_size, got: buf.len() });
        }
        let Some(index) = self.desc_index(pfn) else {
            buf.fill(0);
            return Ok(PageState::NotDumped);
        };
        let d = self.read_desc(index)?;
        let stored = self.classify(pfn, self.desc_offset(index), &d)?;
        self.load(pfn, stored, buf)
    }

    /// End of the furthest page data (or eraseinfo): the real size of the dump, for trimming
    /// a copy taken from a raw disk. Descriptors past the end of the file (an incomplete
    /// dump) are ignored; descriptors are otherwise not checked (see [`Self::verify`]).
    pub fn data_end(&self) -> Result<u64, KdumpError> {
        let mut end = self.pages_offset;
        if self.num_dumpable > 0
            && self.sub.dump_level >= 0
            && self.sub.dump_level as u32 & DL_EXCLUDE_ZERO != 0
        {
            // The shared zero page is written first, whether or not a page uses it.
            end += u64::from(self.page_size);
        }
        let mut buf = vec![0u8; (DESC_CHUNK as usize) * PAGE_DESC_SIZE];
        let mut index = 0;
        while index < self.num_dumpable {
            let n = (self.num_dumpable - index).min(DESC_CHUNK);
            let off = self.desc_offset(index);
            let avail = (self.file_size.saturating_sub(off) / PAGE_DESC_SIZE as u64).min(n);
            let bytes = &mut buf[..avail as usize * PAGE_DESC_SIZE];
            read_exact(&self.r, "page descriptors", off, bytes)?;
            for raw in bytes.chunks_exact(PAGE_DESC_SIZE) {
                let d = parse_desc(raw);
                if d.offset > 0 {
                    let e = (d.offset as u64).saturating_add(u64::from(d.size));
                    end = end.max(e);
                }
            }
            if avail < n {
                break;
            }
            index += n;
        }
        if self.header.header_version >= 5
            && self.sub.offset_eraseinfo > 0
            && self.sub.size_eraseinfo > 0
        {
            end =
                end.max((self.sub.offset_eraseinfo as u64).saturating_add(self.sub.size_eraseinfo));
        }
        Ok(end)
    }

    /// Checks every descriptor and every page: in bounds, not overlapping the headers,
    /// bitmaps or descriptors, compressed pages inflating to exactly one page (zlib checks
    /// its Adler-32), the shared zero page zero, the second bitmap within the first.
    /// `progress(done, total)` is called every few thousand pages and at the end.
    ///
    /// The first problem found is returned as the error. In an incomplete dump, pages whose
    /// descriptor or data lie past the end of the file are counted as lost instead.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, KdumpError> {
        let mut rep = VerifyReport {
            max_pfn: self.max_pfn,
            pages_dumpable: self.num_dumpable,
            file_size: self.file_size,
            incomplete: self.is_incomplete(),
            ..VerifyReport::default()
        };
        self.check_bitmap1()?;
        let total = self.num_dumpable;
        let mut page = vec![0u8; self.page_size as usize];
        let mut descs = vec![0u8; (DESC_CHUNK as usize) * PAGE_DESC_SIZE];
        let mut zero_checked = false;
        let mut index = 0u64;
        let mut loaded = 0u64; // descriptors in `descs`, starting at index `base`
        let mut base = 0u64;
        let mut lost_from = None;
        for (byte_i, &byte) in self.bitmap2.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let pfn = byte_i as u64 * 8 + bit;
                if lost_from.is_some() {
                    rep.pages_lost += 1;
                    index += 1;
                    continue;
                }
                if index >= base + loaded {
                    base = index;
                    let n = (total - index).min(DESC_CHUNK);
                    let off = self.desc_offset(index);
                    let avail = (self.file_size.saturating_sub(off) / PAGE_DESC_SIZE as u64).min(n);
                    read_exact(
                        &self.r,
                        "page descriptors",
                        off,
                        &mut descs[..avail as usize * PAGE_DESC_SIZE],
                    )?;
                    loaded = avail;
                    if avail == 0 {
                        if !rep.incomplete {
                            return Err(KdumpError::Truncated {
                                what: "a page descriptor",
                                offset: off,
                                len: PAGE_DESC_SIZE as u64,
                                file_size: self.file_size,
                            });
                        }
                        lost_from = Some(pfn);
                        rep.pages_lost += 1;
                        index += 1;
                        continue;
                    }
                }
                let at = ((index - base) as usize) * PAGE_DESC_SIZE;
                let d = parse_desc(&descs[at..at + PAGE_DESC_SIZE]);
                let stored = match self.classify(pfn, self.desc_offset(index), &d) {
                    Err(KdumpError::Truncated { .. }) if rep.incomplete => {
                        rep.pages_lost += 1;
                        index += 1;
                        continue;
                    }
                    r => r?,
                };
                match stored {
                    Stored::Missing => rep.pages_missing += 1,
                    Stored::Zero => {
                        if !zero_checked {
                            read_exact(
                                &self.r,
                                "the shared zero page",
                                self.pages_offset,
                                &mut page,
                            )?;
                            if page.iter().any(|&b| b != 0) {
                                return Err(KdumpError::BadPageData {
                                    pfn,
                                    offset: self.pages_offset,
                                    why: String::from("the shared zero page is not all zeros"),
                                });
                            }
                            zero_checked = true;
                        }
                        rep.pages_zero += 1;
                    }
                    Stored::Raw { .. } => {
                        self.load(pfn, stored, &mut page)?;
                        rep.pages_raw += 1;
                    }
                    Stored::Zlib { .. } => {
                        self.load(pfn, stored, &mut page)?;
                        rep.pages_zlib += 1;
                    }
                }
                index += 1;
                if index.is_multiple_of(PROGRESS_EVERY) {
                    progress(index, total);
                }
            }
        }
        progress(index, total);
        rep.data_end = self.data_end()?;
        Ok(rep)
    }

    /// Every pfn set in the second bitmap is set in the first.
    fn check_bitmap1(&self) -> Result<(), KdumpError> {
        let mut buf = vec![0u8; 65536];
        let mut done = 0usize;
        while done < self.bitmap2.len() {
            let n = (self.bitmap2.len() - done).min(buf.len());
            read_exact(
                &self.r,
                "the first bitmap",
                self.bitmap1_offset + done as u64,
                &mut buf[..n],
            )?;
            for (i, (&b1, &b2)) in buf[..n].iter().zip(&self.bitmap2[done..done + n]).enumerate() {
                let extra = b2 & !b1;
                if extra != 0 {
                    let pfn = (done + i) as u64 * 8 + u64::from(extra.trailing_zeros());
                    return Err(KdumpError::BitmapMismatch { pfn });
                }
            }
            done += n;
        }
        Ok(())
    }
}

/// Inflates one zlib stream into exactly `out.len()` bytes.
fn inflate_page(state: &mut DecompressorOxide, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    state.init();
    let flags = TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, produced) = decompress(state, input, out, 0, flags);
    match status {
        TINFLStatus::Done if produced == out.len() => Ok(()),
        TINFLStatus::Done => {
            Err(format!("zlib data inflates to {} bytes, not {}", produced, out.len()))
        }
        TINFLStatus::HasMoreOutput => {
            Err(format!("zlib data inflates to more than {} bytes", out.len()))
        }
        TINFLStatus::Adler32Mismatch => Err(String::from("zlib Adler-32 checksum mismatch")),
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            Err(String::from("zlib data ends early"))
        }
        s => Err(format!("invalid zlib data ({:?})", s)),
    }
}

/// Physical memory as the dump holds it. Reads may cross pages; a page that is not dumped,
/// missing or unreadable makes the read fail with [`PhysError::Unreadable`]. The last page
/// decoded is kept, so small sequential reads decode each page once.
impl<R: ReadAt> PhysRead for KdumpReader<R> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let err = PhysError::Unreadable { addr, len: buf.len() as u64 };
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(err);
        }
        let ps = u64::from(self.page_size);
        let mut cache = self.cache.borrow_mut();
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let pfn = a >> self.page_shift;
            let in_page = (a & (ps - 1)) as usize;
            let n = (ps as usize - in_page).min(buf.len() - done);
            let hit = matches!(&*cache, Some(c) if c.pfn == pfn);
            if !hit {
                let mut data = match cache.take() {
                    Some(c) => c.data,
                    None => vec![0u8; ps as usize],
                };
                let state = self.read_page(pfn, &mut data).unwrap_or(PageState::Missing);
                *cache = Some(CachedPage { pfn, state, data });
            }
            let Some(c) = cache.as_ref() else {
                return Err(err);
            };
            if !matches!(c.state, PageState::Data | PageState::Zero) {
                return Err(err);
            }
            buf[done..done + n].copy_from_slice(&c.data[in_page..in_page + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{dump_params, write_kdump, NoProgress, Verdict};
    use crate::elfcore::testutil::*;
    use crate::elfcore::{ElfCoreHeader, EM_X86_64, NT_PRSTATUS};
    use crate::sink::{RecordSink, SinkError};

    /// Collects the records into a file.
    struct VecSink {
        file: Vec<u8>,
        limit: Option<u64>,
    }

    impl RecordSink for VecSink {
        fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            let end = offset as usize + data.len();
            if let Some(limit) = self.limit {
                if end as u64 > limit {
                    return Err(SinkError::Full { limit });
                }
            }
            if self.file.len() < end {
                self.file.resize(end, 0);
            }
            self.file[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
    }

    const HDR: u64 = 0x7f00_0000;
    const NOTES: u64 = 0x7e00_0000;
    const PHYS_BASE: u64 = 0x10_0000;

    /// Page contents: zero, compressible, random (incompressible) or sparse.
    fn content(len: u64, seed: u64, ps: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match ((i / ps) + seed) % 4 {
                    0 => 0,
                    1 => (i % 251) as u8,
                    2 => x as u8,
                    _ => u8::from(i % 97 == 0),
                }
            })
            .collect()
    }

    /// A crashed machine with RAM `segs` (paddr, len), identity-placed; `holes` unreadable.
    struct Machine {
        mem: FakeMem,
        segs: Vec<(u64, u64)>,
        contents: Vec<Vec<u8>>,
        core: ElfCoreHeader,
    }

    fn machine(segs: &[(u64, u64)], ps: u64, holes: &[(u64, u64)]) -> Machine {
        let mut mem = FakeMem::default();
        let mut contents = Vec::new();
        let mut phdrs = vec![note_seg(NOTES, 4096)];
        for (i, &(paddr, len)) in segs.iter().enumerate() {
            let c = content(len, i as u64 * 5 + 1, ps);
            let mut pos = 0;
            for &(h0, h1) in holes.iter().filter(|h| h.0 >= paddr && h.1 <= paddr + len) {
                if h0 > paddr + pos {
                    mem.add(paddr + pos, c[pos as usize..(h0 - paddr) as usize].to_vec());
                }
                pos = h1 - paddr;
            }
            if pos < len {
                mem.add(paddr + pos, c[pos as usize..].to_vec());
            }
            contents.push(c);
            phdrs.push(load(paddr, paddr, len));
        }
        let vmci = format!(
            "OSRELEASE=6.1.0-test\nPAGESIZE={}\nNUMBER(phys_base)={}\nCRASHTIME=1700000000\n",
            ps, PHYS_BASE
        );
        let mut notes = note("CORE", NT_PRSTATUS, &[0x55; 336]);
        notes.extend(note("VMCOREINFO", 0, vmci.as_bytes()));
        notes.extend([0u8; 12]);
        mem.add(NOTES, notes);
        mem.add(HDR, ehdr(EM_X86_64, &phdrs));
        let core = ElfCoreHeader::parse(&mem, HDR, &limits()).unwrap();
        Machine { mem, segs: segs.to_vec(), contents, core }
    }

    impl Machine {
        fn expected(&self, pfn: u64, ps: u64) -> Vec<u8> {
            (pfn * ps..(pfn + 1) * ps)
                .map(|a| {
                    self.segs
                        .iter()
                        .zip(&self.contents)
                        .find(|((p, l), _)| a >= *p && a < p + l)
                        .map_or(0, |((p, _), c)| c[(a - p) as usize])
                })
                .collect()
        }
        fn present(&self, pfn: u64, ps: u64) -> bool {
            self.segs.iter().any(|&(p, l)| p < (pfn + 1) * ps && pfn * ps < p + l)
        }
        fn dump(&self, level: u32, limit: Option<u64>) -> (Vec<u8>, crate::dump::DumpSummary) {
            let (mut params, _) = dump_params(&self.core, &self.mem, "x86_64");
            params.dump_level = level;
            let mut sink = VecSink { file: Vec::new(), limit };
            let s = write_kdump(&self.core, &params, &self.mem, &mut sink, &mut NoProgress);
            (sink.file, s)
        }
    }

    const SEGS: &[(u64, u64)] = &[
        (0x10_0000, 0x8_0000),
        (0x40_0800, 0x2c00), // starts and ends inside pages
        (0x2_0000_0000, 0x3000),
    ];

    #[test]
    fn round_trip_page_by_page() {
        for (ps, level) in [(4096u64, 1u32), (4096, 0), (16384, 1)] {
            let m = machine(SEGS, ps, &[]);
            let (file, summary) = m.dump(level, None);
            assert_eq!(summary.verdict, Verdict::Complete);
            let rd = KdumpReader::open(file.as_slice()).unwrap();
            assert_eq!(u64::from(rd.page_size()), ps);
            assert_eq!(rd.max_pfn(), (0x2_0000_3000u64).div_ceil(ps));
            assert!(!rd.is_incomplete());
            assert_eq!(rd.notes(), &m.core.notes[..]);
            assert!(rd.vmcoreinfo().unwrap().starts_with(b"OSRELEASE=6.1.0-test\n"));
            assert_eq!(rd.machine(), Some("x86_64"));
            let mut buf = vec![0u8; ps as usize];
            let (mut data, mut zero) = (0, 0);
            for pfn in 0..rd.max_pfn() {
                let st = rd.read_page(pfn, &mut buf).unwrap();
                if m.present(pfn, ps) {
                    assert!(buf == m.expected(pfn, ps), "pfn {:#x}", pfn);
                    match st {
                        PageState::Data => data += 1,
                        PageState::Zero => zero += 1,
                        s => panic!("pfn {:#x}: {:?}", pfn, s),
                    }
                } else {
                    assert_eq!(st, PageState::NotDumped, "pfn {:#x}", pfn);
                    assert!(buf.iter().all(|&b| b == 0));
                }
                // Only pfns near the segments are interesting; skip the big hole.
                if pfn == 0x500_0000 / ps {
                    break;
                }
            }
            for pfn in [rd.max_pfn(), rd.max_pfn() + 1, u64::MAX] {
                buf.fill(0xee);
                assert_eq!(rd.read_page(pfn, &mut buf).unwrap(), PageState::NotDumped);
                assert!(buf.iter().all(|&b| b == 0));
            }
            for pfn in 0x2_0000_0000 / ps..rd.max_pfn() {
                match rd.read_page(pfn, &mut buf).unwrap() {
                    PageState::Data => data += 1,
                    PageState::Zero => zero += 1,
                    s => panic!("pfn {:#x}: {:?}", pfn, s),
                }
                assert!(buf == m.expected(pfn, ps));
            }
            assert_eq!(zero, summary.pages_zero);
            assert_eq!(data + zero, summary.pages_total);
            assert_eq!(rd.data_end().unwrap(), summary.file_bytes);
            let mut calls = 0;
            let rep = rd.verify(&mut |_, _| calls += 1).unwrap();
            assert!(calls >= 1);
            assert_eq!(rep.pages_dumpable, summary.pages_total);
            assert_eq!(rep.pages_zero, summary.pages_zero);
            assert_eq!(rep.pages_zlib, summary.pages_compressed);
            assert_eq!(rep.pages_raw, summary.pages_raw);
            assert_eq!(rep.pages_missing + rep.pages_lost, 0);
            assert_eq!(rep.data_end, file.len() as u64);
        }
    }

    #[test]
    fn phys_read_crosses_pages_and_trims_raw_disk_copies() {
        let ps = 4096u64;
        let m = machine(SEGS, ps, &[(0x12_0000, 0x12_1000)]);
        let (mut file, summary) = m.dump(1, None);
        assert!(matches!(summary.verdict, Verdict::Incomplete(_)));
        // A copy off a raw disk: garbage after the real end.
        file.extend(core::iter::repeat_n(0xa5u8, 10000));
        let rd = KdumpReader::open(file).unwrap();
        assert_eq!(rd.data_end().unwrap(), summary.file_bytes);
        let mut buf = vec![0u8; 3 * ps as usize + 100];
        let start = 0x10_0000 + 0x800;
        rd.read(start, &mut buf).unwrap();
        let want: Vec<u8> = (start / ps..start / ps + 5)
            .flat_map(|p| m.expected(p, ps))
            .skip(0x800)
            .take(buf.len())
            .collect();
        assert!(buf == want);
        // The unreadable page is "missing", and reads touching it fail.
        let mut page = vec![0u8; ps as usize];
        assert_eq!(rd.read_page(0x120, &mut page).unwrap(), PageState::Missing);
        assert!(rd.read(0x11_fff0, &mut [0u8; 32]).is_err());
        assert!(rd.read(0x30_0000, &mut [0u8; 1]).is_err()); // not dumped
        assert!(rd.read(u64::MAX - 3, &mut [0u8; 8]).is_err());
        let rep = rd.verify(&mut |_, _| {}).unwrap();
        assert_eq!(rep.pages_missing, 1);
        assert!(rd.read_page(0x100, &mut [0u8; 100]).is_err());
    }

    #[test]
    fn incomplete_dump_opens_and_counts_lost_pages() {
        // Enough pages that the first descriptors are written before the sink fails.
        let m = machine(&[(0x10_0000, 0x40_0000)], 4096, &[]);
        let (full, _) = m.dump(1, None);
        let rd = KdumpReader::open(full.as_slice()).unwrap();
        let limit = rd.pages_offset + (full.len() as u64 - rd.pages_offset) * 3 / 4;
        let (file, summary) = m.dump(1, Some(limit));
        assert!(matches!(summary.verdict, Verdict::Incomplete(_)));
        let rd = KdumpReader::open(file.as_slice()).unwrap();
        assert!(rd.is_incomplete());
        let rep = rd.verify(&mut |_, _| {}).unwrap();
        assert!(rep.incomplete && rep.pages_missing > 0, "{:?}", rep);
        assert_eq!(
            rep.pages_lost + rep.pages_zero + rep.pages_raw + rep.pages_zlib + rep.pages_missing,
            rep.pages_dumpable
        );
        // Pages that are there read back; lost ones give an error or "missing", not garbage.
        let mut page = vec![0u8; 4096];
        assert_eq!(rd.read_page(0x101, &mut page).unwrap(), PageState::Data);
        assert!(page == m.expected(0x101, 4096));
        let mut lost = 0;
        for pfn in 0x100..0x500 {
            match rd.read_page(pfn, &mut page) {
                Ok(PageState::Data | PageState::Zero) => assert!(page == m.expected(pfn, 4096)),
                Ok(PageState::Missing) | Err(KdumpError::Truncated { .. }) => lost += 1,
                r => panic!("pfn {:#x}: {:?}", pfn, r),
            }
        }
        assert_eq!(lost, rep.pages_lost + rep.pages_missing);
        // Still bounded by what is there.
        assert!(rd.data_end().unwrap() <= file.len() as u64);

        // A complete dump cut short (a copy that stopped) and marked incomplete: the pages
        // whose data or descriptors are past the end are lost.
        let mut cut = full[..(rd.pages_offset as usize + 200_000)].to_vec();
        put_u32(&mut cut, 424, DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE);
        let rd = KdumpReader::open(cut.as_slice()).unwrap();
        let rep = rd.verify(&mut |_, _| {}).unwrap();
        assert!(rep.pages_lost > 500 && rep.pages_missing == 0, "{:?}", rep);
        assert_eq!(
            rep.pages_lost + rep.pages_zero + rep.pages_raw + rep.pages_zlib,
            rep.pages_dumpable
        );
        let cut = &full[..(rd.data_offset as usize + 1000)];
        let mut cut = cut.to_vec();
        put_u32(&mut cut, 424, DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE);
        let rep = KdumpReader::open(cut.as_slice()).unwrap().verify(&mut |_, _| {}).unwrap();
        assert_eq!(rep.pages_lost, rep.pages_dumpable);
    }

    fn sample() -> (Vec<u8>, u64) {
        sample_of(SEGS)
    }

    fn sample_of(segs: &[(u64, u64)]) -> (Vec<u8>, u64) {
        let m = machine(segs, 4096, &[]);
        let (file, _) = m.dump(1, None);
        let data_offset = {
            let h = parse_header(file[..DISK_DUMP_HEADER_SIZE].try_into().unwrap());
            (1 + h.sub_hdr_size as u64 + u64::from(h.bitmap_blocks)) * 4096
        };
        (file, data_offset)
    }

    fn put_u32(f: &mut [u8], at: usize, v: u32) {
        f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(f: &mut [u8], at: usize, v: u64) {
        f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Index of the first descriptor with the given flags.
    fn find_desc(f: &[u8], data_offset: u64, flags: u32) -> usize {
        let mut at = data_offset as usize;
        while le_u32(f, at + 12) != flags || le_u64(f, at) == 0 {
            at += PAGE_DESC_SIZE;
        }
        at
    }

    fn verify_err(f: &[u8]) -> KdumpError {
        match KdumpReader::open(f) {
            Err(e) => e,
            Ok(rd) => rd.verify(&mut |_, _| {}).unwrap_err(),
        }
    }

    #[test]
    fn corruptions_are_errors_not_panics() {
        let (file, data_offset) = sample();

        // Truncated: everything from nothing to the middle of the bitmaps fails to open.
        for len in [0, 10, 463, 4096, 4200, 8192 + 10] {
            let e = KdumpReader::open(&file[..len]).err().expect("opened");
            assert!(matches!(e, KdumpError::Truncated { .. }), "{}: {}", len, e);
        }
        // Truncated in the page data of a complete dump: verify says where.
        let e = verify_err(&file[..file.len() - 100]);
        assert!(matches!(e, KdumpError::Truncated { what: "page data", .. }), "{}", e);
        assert!(e.to_string().contains("past the end of the file"), "{}", e);

        let mut f = file.clone();
        f[0] = b'X';
        assert!(matches!(verify_err(&f), KdumpError::NotKdump { .. }));

        // A descriptor pointing past EOF.
        let mut f = file.clone();
        let at = find_desc(&f, data_offset, DUMP_DH_COMPRESSED_ZLIB);
        put_u64(&mut f, at, file.len() as u64 - 10);
        let e = verify_err(&f);
        assert!(matches!(e, KdumpError::Truncated { .. }), "{}", e);
        // ... into the headers, negative, too big, unknown flags, lzo.
        for (field, value, want) in [
            (0, 4096u64, "inside the headers"),
            (0, u64::MAX - 5, "negative offset"),
            (8, 4097, "size 4097"),
            (8, 0, "size 0"),
            (12, 0x40, "unknown flags"),
        ] {
            let mut f = file.clone();
            if field == 0 {
                put_u64(&mut f, at + field, value);
            } else {
                put_u32(&mut f, at + field, value as u32);
            }
            let e = verify_err(&f);
            assert!(
                matches!(&e, KdumpError::BadDescriptor { why, .. } if why.contains(want)),
                "{}: {}",
                want,
                e
            );
        }
        // The first segment's descriptors come first, one per pfn from 0x100.
        let pfn = 0x100 + (at as u64 - data_offset) / PAGE_DESC_SIZE as u64;
        let mut f = file.clone();
        put_u32(&mut f, at + 12, DUMP_DH_COMPRESSED_LZO);
        let e = verify_err(&f);
        assert_eq!(e, KdumpError::UnsupportedCompression { pfn, method: "lzo" }, "{}", e);
        assert!(e.to_string().contains("lzo"), "{}", e);

        // Bad zlib: a flipped byte in the stream or in the Adler-32, a short stream.
        let off = le_u64(&file, at) as usize;
        let size = le_u32(&file, at + 8) as usize;
        for (pos, why) in [(off + size - 1, "Adler-32"), (off + 2, "zlib")] {
            let mut f = file.clone();
            f[pos] ^= 0x5a;
            let e = verify_err(&f);
            assert!(
                matches!(&e, KdumpError::BadPageData { why: w, .. } if w.contains(why)),
                "{}",
                e
            );
            let rd = KdumpReader::open(f.as_slice()).unwrap();
            assert!(rd.read_page(pfn, &mut [0u8; 4096]).is_err());
            assert!(rd.read(pfn * 4096, &mut [0u8; 8]).is_err());
        }
        let mut f = file.clone();
        put_u32(&mut f, at + 8, (size / 2) as u32);
        assert!(matches!(verify_err(&f), KdumpError::BadPageData { .. }));

        // Huge max_mapnr: the bitmaps cannot hold it.
        let mut f = file.clone();
        put_u64(&mut f, 4096 + 96, u64::MAX);
        let e = verify_err(&f);
        assert!(matches!(e, KdumpError::BadHeader { field: "bitmap_blocks", .. }), "{}", e);
        // ... and with matching (huge) bitmap_blocks: caught before allocating.
        put_u64(&mut f, 4096 + 96, 1 << 40);
        put_u32(&mut f, 436, (2u64 << 40 >> 3 >> 12) as u32);
        let e = verify_err(&f);
        assert!(matches!(e, KdumpError::Truncated { what: "the bitmaps", .. }), "{}", e);

        // Other header fields.
        for (at, v, field) in [
            (428usize, 4095u32, "block_size"),
            (428, 0x8000_0000, "block_size"),
            (432, 0, "sub_hdr_size"),
            (8, 0, "header_version"),
        ] {
            let mut f = file.clone();
            put_u32(&mut f, at, v);
            let e = verify_err(&f);
            assert!(matches!(e, KdumpError::BadHeader { field: fl, .. } if fl == field), "{}", e);
        }
        let mut f = file.clone();
        put_u32(&mut f, 432, 0x7fff_ffff);
        assert!(matches!(verify_err(&f), KdumpError::Truncated { .. }));
        let mut f = file.clone();
        put_u32(&mut f, 4096 + 12, 1);
        assert_eq!(verify_err(&f), KdumpError::SplitDump);
        let mut f = file.clone();
        put_u64(&mut f, 4096 + 56, 1 << 40);
        assert!(matches!(verify_err(&f), KdumpError::TooLarge { .. }));
        let mut f = file.clone();
        put_u64(&mut f, 4096 + 40, 1 << 30);
        assert!(matches!(verify_err(&f), KdumpError::TooLarge { .. }));
        let mut f = file.clone();
        put_u64(&mut f, 4096 + 32, u64::MAX);
        assert!(matches!(verify_err(&f), KdumpError::BadHeader { .. }));

        // A dumped pfn that bitmap 1 does not have.
        let mut f = file.clone();
        f[8192 + 0x100 / 8] = 0;
        assert_eq!(verify_err(&f), KdumpError::BitmapMismatch { pfn: 0x100 });

        // The shared zero page not zero.
        let mut f = file.clone();
        let dumpable = KdumpReader::open(file.as_slice()).unwrap().num_dumpable();
        let zero_off = data_offset as usize + dumpable as usize * PAGE_DESC_SIZE;
        f[zero_off + 7] = 1;
        assert!(matches!(verify_err(&f), KdumpError::BadPageData { .. }));
    }

    #[test]
    fn every_single_byte_corruption_of_the_headers_is_handled() {
        // A small dump (20 pages, max_pfn 0x403), so that each of the runs is quick.
        let (mut f, data_offset) = sample_of(&[(0x10_0000, 0x1_0000), (0x40_0800, 0x2c00)]);
        let max_pfn = KdumpReader::open(f.as_slice()).unwrap().max_pfn();
        let d = data_offset as usize;
        let bm2 = (d - 8192) / 2 + 8192;
        let ranges = [0..464, 4096..4096 + 700, 8192..8192 + 130, bm2..bm2 + 130, d..d + 20 * 24];
        let mut buf = vec![0u8; 4096];
        for at in ranges.into_iter().flatten() {
            {
                let flip = 0xffu8;
                f[at] ^= flip;
                if let Ok(rd) = KdumpReader::open(f.as_slice()) {
                    let _ = rd.verify(&mut |_, _| {});
                    let _ = rd.data_end();
                    buf.resize(rd.page_size() as usize, 0);
                    for pfn in [0u64, 0x100, 0x10f, 0x400, max_pfn - 1, u64::MAX] {
                        let _ = rd.read_page(pfn, &mut buf);
                    }
                }
                f[at] ^= flip;
            }
        }
    }
}
