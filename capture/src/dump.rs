//! The streaming kdump-compressed writer.
//!
//! [`write_kdump`] produces a complete kdump-compressed file (project reference §1.1, the
//! layout of makedumpfile's `write_kdump_header()` and `write_kdump_pages_and_bitmap_cyclic()`)
//! as `(offset, bytes)` records, in file order except that page descriptors and page data
//! advance side by side:
//!
//! | offset | content |
//! |---|---|
//! | 0 | `disk_dump_header`, zero-padded to one block |
//! | `block_size` | `kdump_sub_header` (104 bytes), the ELF notes, zero-padded to whole blocks |
//! | `(1 + sub_hdr_size) * block_size` | bitmap 1 then bitmap 2, each a whole number of blocks |
//! | `data_offset` | one 24-byte `page_desc_t` per dumpable page, in pfn order |
//! | after the descriptors | the shared zero page, then page data in pfn order |
//!
//! Every byte of the file is written exactly once (block padding included), so a receiver can
//! tell missing data from holes. The one exception is the header, re-sent with
//! `DUMP_DH_COMPRESSED_INCOMPLETE` when the sink fails.
//!
//! Memory use does not depend on the size of RAM (makedumpfile's cyclic mode, but nothing is
//! held whole): the writer makes two passes over memory.
//! 1. Count: bitmap 1 (pages covered by `PT_LOAD`s) is generated a record at a time from the
//!    `PT_LOAD` list; bitmap 2 is bitmap 1 less the pages the [`PageSelect`] excludes, decided
//!    [`CLASS_BATCH`] pages at a time and written out a record at a time as it goes. Its set
//!    bits are counted: that fixes where the page data starts.
//! 2. Write: the selector is asked again from the start (it must give the same answers, which a
//!    running hash of the excluded pfns checks) and the kept pages are read, compressed and
//!    written, descriptors and page data each through one record-sized buffer; the zlib
//!    compressor is created once.
//!
//! A page only partly covered (a range edge inside it) counts as present and its uncovered
//! bytes are zero. Dump level bit 0 (`DL_EXCLUDE_ZERO`) is acted on here: zero pages share one
//! stored zero page, as makedumpfile does (they stay in bitmap 2). The other bits are the
//! selector's business ([`crate::filter::PageFilter`]); the level written in the sub header is
//! [`DumpParams::dump_level`], which the caller sets to the level in effect.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::compress::PageCompressor;
use crate::elfcore::{ElfCoreHeader, LoadSegment};
use crate::filter::{FilterError, PageClass, PageFilter};
use crate::kdump::{
    DiskDumpHeader, KdumpSubHeader, PageDesc, UtsName, DL_EXCLUDE_ZERO,
    DUMP_DH_COMPRESSED_INCOMPLETE, DUMP_DH_COMPRESSED_ZLIB, HEADER_VERSION, KDUMP_SIGNATURE,
    KDUMP_SUB_HEADER_SIZE, PAGE_DESC_SIZE, UTSNAME_SIZE,
};
use crate::phys::PhysRead;
use crate::sink::{RecordSink, SinkError, MAX_CHUNK};
use crate::vmcoreinfo::VmcoreInfo;

/// The largest record [`write_kdump`] emits: a stream record header (16 bytes) plus the data
/// fit in one [`MAX_CHUNK`].
pub const MAX_RECORD: usize = MAX_CHUNK - 16;
/// The observer hears about progress at least this often (in pages).
pub const PROGRESS_EVERY: u64 = 256;
/// Pages classified per [`PageSelect::classify`] call (one byte of state each).
pub const CLASS_BATCH: usize = 1024;
/// Smallest and largest supported page sizes.
pub const MIN_PAGE_SIZE: u32 = 4096;
pub const MAX_PAGE_SIZE: u32 = 65536;

/// x86_64 `__START_KERNEL_map`: kernel-image virtual addresses start here.
const X86_64_START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// What goes in the dump's headers besides the page data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpParams {
    pub utsname: UtsName,
    /// Seconds since the epoch (the crash time).
    pub timestamp: i64,
    /// The crashed kernel's page size: a power of two, 4096..=65536.
    pub page_size: u32,
    pub nr_cpus: u32,
    /// x86_64 `phys_base` / arm64 `PHYS_OFFSET`, for the sub header.
    pub phys_base: u64,
    /// makedumpfile dump level written in the sub header; bit 0 shares zero pages.
    pub dump_level: u32,
}

/// How far the dump is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The first pass: pages classified (of `pages_total` present pages); nothing of the page
    /// data is written yet.
    pub counting: bool,
    pub pages_done: u64,
    pub pages_total: u64,
    /// Bytes handed to the sink so far.
    pub bytes_out: u64,
    /// Where the time went so far, in [`DumpObserver::now`] units.
    pub time: PhaseTimes,
}

/// Time spent in each part of the writer, in [`DumpObserver::now`] units (all zero if the
/// observer has no clock). What is not counted here is bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Asking the selector (both passes): `struct page` reads and page-table walks.
    pub choose: u64,
    /// Reading page contents from memory.
    pub read: u64,
    /// Looking for zero pages.
    pub zero: u64,
    pub compress: u64,
    /// Handing records to the sink (device I/O, framing, network).
    pub sink: u64,
}

/// Decides which pages the dump leaves out.
///
/// The writer asks for every present pfn once per pass, in ascending order, in slices of at
/// most [`CLASS_BATCH`] pages (skipping holes between `PT_LOAD`s), and calls [`Self::reset`]
/// before each pass. Both passes must give the same answers.
pub trait PageSelect {
    /// Forget where the last pass ended; the next call starts again from the lowest pfn.
    fn reset(&mut self);
    /// Classify pfns `start_pfn .. start_pfn + out.len()` into `out`.
    fn classify(&mut self, start_pfn: u64, out: &mut [PageClass]);
}

/// Keeps every page (dump levels 0 and 1).
pub struct KeepAll;

impl PageSelect for KeepAll {
    fn reset(&mut self) {}
    fn classify(&mut self, _: u64, out: &mut [PageClass]) {
        out.fill(PageClass::Keep);
    }
}

/// A [`PageFilter`] as the writer's selector, counting what it decided in the last pass.
pub struct FilterSelect<'a> {
    pub filter: PageFilter<'a>,
    /// Pages of each class ([`PageClass::index`]) in the last pass.
    pub counts: [u64; PageClass::ALL.len()],
    /// The first refusal of the filter; the pages asked for were kept.
    pub error: Option<FilterError>,
    unknown_at_reset: u64,
}

impl<'a> FilterSelect<'a> {
    pub fn new(filter: PageFilter<'a>) -> Self {
        Self { filter, counts: [0; PageClass::ALL.len()], error: None, unknown_at_reset: 0 }
    }

    /// Pages excluded in the last pass.
    pub fn excluded(&self) -> u64 {
        PageClass::ALL.iter().filter(|c| c.is_excluded()).map(|c| self.counts[c.index()]).sum()
    }

    /// Pages kept in the last pass because their `struct page` was unreadable or implausible.
    pub fn doubtful(&self) -> u64 {
        self.filter.stats().unknown() - self.unknown_at_reset
    }
}

impl PageSelect for FilterSelect<'_> {
    fn reset(&mut self) {
        self.filter.reset();
        self.counts = [0; PageClass::ALL.len()];
        self.unknown_at_reset = self.filter.stats().unknown();
    }
    fn classify(&mut self, start_pfn: u64, out: &mut [PageClass]) {
        if let Err(e) = self.filter.classify(start_pfn, out) {
            self.error.get_or_insert(e);
            out.fill(PageClass::Keep);
        }
        for c in out.iter() {
            self.counts[c.index()] += 1;
        }
    }
}

/// Hears about progress; called at least every [`PROGRESS_EVERY`] pages and at the end.
/// Calls can be frequent: the observer rate-limits its own printing.
pub trait DumpObserver {
    fn progress(&mut self, p: &Progress);
    /// A clock for [`PhaseTimes`] (any monotonic unit); the default has none.
    fn now(&mut self) -> u64 {
        0
    }
}

/// An observer that ignores everything.
pub struct NoProgress;

impl DumpObserver for NoProgress {
    fn progress(&mut self, _: &Progress) {}
}

/// Whether the dump holds everything it should.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    /// The text says what is missing and why, for the console.
    Incomplete(String),
}

/// What [`write_kdump`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    /// Dumpable pages: pages covered by `PT_LOAD`s, less those the selector excluded.
    pub pages_total: u64,
    /// Pages stored as the shared zero page.
    pub pages_zero: u64,
    pub pages_compressed: u64,
    pub pages_raw: u64,
    /// Pages that could not be read (their descriptors say "missing").
    pub pages_unreadable: u64,
    /// Bytes of RAM covered by `PT_LOAD`s.
    pub ram_bytes: u64,
    /// Size of the dump file; if the sink failed, the bytes it accepted.
    pub file_bytes: u64,
    pub verdict: Verdict,
}

/// Reads `buf.len()` bytes at dump address `paddr`, through the `PT_LOAD` that covers them
/// (so the x86 backup region is read from its copy). `None` if no single segment covers them
/// or the read fails.
fn read_dump_addr(
    core: &ElfCoreHeader,
    mem: &dyn PhysRead,
    paddr: u64,
    buf: &mut [u8],
) -> Option<()> {
    let end = paddr.checked_add(buf.len() as u64)?;
    let l = core.loads.iter().find(|l| l.paddr <= paddr && end <= l.paddr + l.len)?;
    mem.read(l.src + (paddr - l.paddr), buf).ok()
}

/// Works out the dump's header parameters from the elfcorehdr and VMCOREINFO.
///
/// `machine` is the `uname -m` of the crashed kernel's architecture (`"x86_64"`,
/// `"aarch64"`). The utsname is read from the crashed kernel's `init_uts_ns`; if that is not
/// possible, it is built from `OSRELEASE` and `machine`. Every fallback adds a warning.
pub fn dump_params(
    core: &ElfCoreHeader,
    mem: &dyn PhysRead,
    machine: &str,
) -> (DumpParams, Vec<String>) {
    let mut warnings = Vec::new();
    let vmci = core.vmcoreinfo_bytes().map(VmcoreInfo::new);
    let page_size = match vmci.map(|v| (v.get("PAGESIZE"), v.page_size())) {
        // elfcore::parse already warned that VMCOREINFO is missing.
        None => MIN_PAGE_SIZE,
        Some((_, Some(ps))) if ps.is_power_of_two() && (4096..=65536).contains(&ps) => ps as u32,
        Some((text, _)) => {
            warnings.push(format!(
                "VMCOREINFO PAGESIZE={} is not a page size 4096..65536: assuming 4096",
                text.unwrap_or("(missing)")
            ));
            MIN_PAGE_SIZE
        }
    };
    let timestamp = match vmci.map(|v| v.crashtime()) {
        None => 0,
        Some(Some(t)) => t,
        Some(None) => {
            warnings.push(String::from("no CRASHTIME in VMCOREINFO: dump timestamp set to 0"));
            0
        }
    };
    let phys_base_key = match machine {
        "x86_64" => Some("phys_base"),
        "aarch64" => Some("PHYS_OFFSET"),
        _ => None,
    };
    let phys_base = match (vmci, phys_base_key) {
        (Some(v), Some(key)) => v.number(key).map(|n| n as u64).unwrap_or_else(|| {
            warnings.push(format!("no NUMBER({}) in VMCOREINFO: phys_base set to 0", key));
            0
        }),
        _ => 0,
    };
    let release = vmci.and_then(|v| v.osrelease());
    let utsname = match vmci.map(|v| read_utsname(core, mem, &v, machine, release)) {
        Some(Ok(u)) => u,
        Some(Err(why)) => {
            warnings.push(format!(
                "utsname not taken from the crashed kernel ({}): using release {} and machine {}",
                why,
                release.unwrap_or("unknown"),
                machine
            ));
            UtsName::minimal(release.unwrap_or("unknown"), machine)
        }
        None => UtsName::minimal("unknown", machine),
    };
    if core.nr_cpus == 0 {
        warnings.push(String::from(
            "no CPU register notes (NT_PRSTATUS): backtraces will not be available",
        ));
    }
    let params = DumpParams {
        utsname,
        timestamp,
        page_size,
        nr_cpus: core.nr_cpus,
        phys_base,
        dump_level: DL_EXCLUDE_ZERO,
    };
    (params, warnings)
}

/// Reads `init_uts_ns.name` from the crashed kernel; the error says why not.
fn read_utsname(
    core: &ElfCoreHeader,
    mem: &dyn PhysRead,
    v: &VmcoreInfo<'_>,
    machine: &str,
    release: Option<&str>,
) -> Result<UtsName, String> {
    let sym = v.symbol("init_uts_ns").ok_or("no SYMBOL(init_uts_ns)")?;
    let off = v.offset("uts_namespace.name").ok_or("no OFFSET(uts_namespace.name)")?;
    let va = sym.checked_add(off).ok_or("init_uts_ns address overflows")?;
    let pa = match machine {
        "x86_64" => {
            let phys_base = v.number("phys_base").ok_or("no NUMBER(phys_base)")? as u64;
            va.checked_sub(X86_64_START_KERNEL_MAP)
                .ok_or("init_uts_ns is not a kernel-image address")?
                .wrapping_add(phys_base)
        }
        "aarch64" => {
            let voff = v.number("kimage_voffset").ok_or("no NUMBER(kimage_voffset)")? as u64;
            va.wrapping_sub(voff)
        }
        _ => return Err(format!("no address translation for machine {}", machine)),
    };
    let mut raw = [0u8; UTSNAME_SIZE];
    read_dump_addr(core, mem, pa, &mut raw)
        .ok_or_else(|| format!("init_uts_ns at physical {:#x} is not in a readable PT_LOAD", pa))?;
    let mut u = UtsName::from_bytes(&raw);
    if UtsName::get(&u.sysname) != Some("Linux") {
        return Err(format!("init_uts_ns at physical {:#x} does not say Linux", pa));
    }
    if let Some(r) = release {
        if UtsName::get(&u.release) != Some(r) {
            return Err(format!("init_uts_ns release does not match OSRELEASE {}", r));
        }
    }
    if UtsName::get(&u.machine).is_none_or(str::is_empty) {
        UtsName::set(&mut u.machine, machine);
    }
    Ok(u)
}

/// The file layout, computed before anything is written.
struct Layout {
    page_size: u64,
    page_shift: u32,
    max_mapnr: u64,
    sub_hdr_blocks: u64,
    /// Bytes of one bitmap (a whole number of blocks).
    bitmap_bytes: u64,
    bitmap_blocks: u64,
    data_offset: u64,
    /// Pages touched by `PT_LOAD`s (bitmap 1).
    num_present: u64,
    /// Pages in bitmap 2; known after the first pass (until then, `num_present`).
    num_dumpable: u64,
    /// Where page data starts (after the descriptors); known after the first pass.
    pages_offset: u64,
}

/// First pfn and end pfn (exclusive) of the pages a segment touches.
fn pfn_span(l: &LoadSegment, shift: u32) -> (u64, u64) {
    let end = l.paddr + l.len;
    let partial = end & ((1u64 << shift) - 1) != 0;
    (l.paddr >> shift, (end >> shift) + u64::from(partial))
}

impl Layout {
    fn new(core: &ElfCoreHeader, page_size: u32) -> Result<Self, String> {
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(format!("page size {} is not a power of two 4096..65536", page_size));
        }
        let ps = u64::from(page_size);
        let shift = page_size.trailing_zeros();
        let too_big = || String::from("the memory map is too large for the kdump format");
        // ElfCoreHeader::parse guarantees this; checked again so that hand-made headers cannot
        // make the arithmetic below overflow.
        let mut prev_end = 0;
        for l in &core.loads {
            match l.paddr.checked_add(l.len) {
                Some(end)
                    if l.len > 0 && l.paddr >= prev_end && l.src.checked_add(l.len).is_some() =>
                {
                    prev_end = end
                }
                _ => {
                    return Err(format!(
                        "PT_LOAD list not sorted, empty or overlapping at paddr {:#x}",
                        l.paddr
                    ))
                }
            }
        }
        let mut max_mapnr = 0;
        let mut num_present = 0u64;
        for l in &core.loads {
            let (first, end) = pfn_span(l, shift);
            num_present += end - first.max(max_mapnr.min(end));
            max_mapnr = max_mapnr.max(end);
        }
        let sub_bytes = (KDUMP_SUB_HEADER_SIZE + core.notes.len()) as u64;
        let sub_hdr_blocks = sub_bytes.div_ceil(ps);
        let bitmap_bytes = max_mapnr.div_ceil(8).div_ceil(ps) * ps;
        let bitmap_blocks = bitmap_bytes / ps * 2;
        let data_offset =
            (1 + sub_hdr_blocks + bitmap_blocks).checked_mul(ps).ok_or_else(too_big)?;
        // Checked for every page present: bitmap 2 never holds more.
        let pages_offset = num_present
            .checked_mul(PAGE_DESC_SIZE as u64)
            .and_then(|d| d.checked_add(data_offset))
            .ok_or_else(too_big)?;
        // The data after it must also be addressable by an i64 offset.
        let max_data =
            num_present.checked_add(1).and_then(|n| n.checked_mul(ps)).ok_or_else(too_big)?;
        if pages_offset.checked_add(max_data).is_none_or(|e| e > i64::MAX as u64)
            || i32::try_from(sub_hdr_blocks).is_err()
            || u32::try_from(bitmap_blocks).is_err()
        {
            return Err(too_big());
        }
        Ok(Self {
            page_size: ps,
            page_shift: shift,
            max_mapnr,
            sub_hdr_blocks,
            bitmap_bytes,
            bitmap_blocks,
            data_offset,
            num_present,
            num_dumpable: num_present,
            pages_offset,
        })
    }

    /// Fixes the number of pages in bitmap 2 (at most `num_present`, so no overflow).
    fn set_dumpable(&mut self, n: u64) {
        debug_assert!(n <= self.num_present);
        self.num_dumpable = n;
        self.pages_offset = self.data_offset + n * PAGE_DESC_SIZE as u64;
    }
}

/// The sink, counting what it accepted.
struct Out<'a> {
    sink: &'a mut dyn RecordSink,
    bytes: u64,
}

impl Out<'_> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        debug_assert!(!data.is_empty() && data.len() <= MAX_RECORD);
        self.sink.record(offset, data)?;
        self.bytes += data.len() as u64;
        Ok(())
    }
}

/// Writes one region of the file front to back through a record-sized buffer.
struct SeqWriter {
    /// File offset of `buf[0]`.
    offset: u64,
    buf: Vec<u8>,
}

impl SeqWriter {
    fn new(offset: u64) -> Self {
        Self { offset, buf: Vec::with_capacity(MAX_RECORD) }
    }

    /// File offset of the next byte written.
    fn position(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    fn write(&mut self, out: &mut Out<'_>, mut data: &[u8]) -> Result<(), SinkError> {
        while !data.is_empty() {
            let n = (MAX_RECORD - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == MAX_RECORD {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, out: &mut Out<'_>, mut n: u64) -> Result<(), SinkError> {
        while n > 0 {
            let k = ((MAX_RECORD - self.buf.len()) as u64).min(n) as usize;
            self.buf.resize(self.buf.len() + k, 0);
            n -= k as u64;
            if self.buf.len() == MAX_RECORD {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    /// Pads with zeros up to file offset `to`.
    fn pad_to(&mut self, out: &mut Out<'_>, to: u64) -> Result<(), SinkError> {
        self.zeros(out, to.saturating_sub(self.position()))
    }

    fn flush(&mut self, out: &mut Out<'_>) -> Result<(), SinkError> {
        if !self.buf.is_empty() {
            out.record(self.offset, &self.buf)?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Sets bits `[from, to)` of `buf` (LSB first within a byte).
fn set_bits(buf: &mut [u8], mut from: u64, to: u64) {
    while from < to && !from.is_multiple_of(8) {
        buf[(from / 8) as usize] |= 1 << (from % 8);
        from += 1;
    }
    while to - from >= 8 {
        buf[(from / 8) as usize] = 0xff;
        from += 8;
    }
    while from < to {
        buf[(from / 8) as usize] |= 1 << (from % 8);
        from += 1;
    }
}

/// Fills `buf` with the bitmap bytes starting at byte `first_byte`: a bit for every page a
/// segment touches.
fn fill_bitmap(loads: &[LoadSegment], shift: u32, first_byte: u64, buf: &mut [u8]) {
    buf.fill(0);
    let lo = first_byte * 8;
    let hi = lo + buf.len() as u64 * 8;
    let start = loads.partition_point(|l| pfn_span(l, shift).1 <= lo);
    for l in &loads[start..] {
        let (first, end) = pfn_span(l, shift);
        if first >= hi {
            break;
        }
        set_bits(buf, first.max(lo) - lo, end.min(hi) - lo);
    }
}

/// The pages touched by segments, in ascending order and each once, as slices `(first pfn,
/// count)` of at most [`CLASS_BATCH`] pages that never cross a multiple of `align` pfns (a
/// bitmap record's boundary). Both passes walk memory with this, so the selector sees the same
/// calls twice.
struct Slices<'a> {
    loads: &'a [LoadSegment],
    shift: u32,
    align: u64,
    index: usize,
    next: u64,
}

impl<'a> Slices<'a> {
    fn new(loads: &'a [LoadSegment], shift: u32, align: u64) -> Self {
        Self { loads, shift, align, index: 0, next: 0 }
    }
}

impl Iterator for Slices<'_> {
    type Item = (u64, usize);
    fn next(&mut self) -> Option<(u64, usize)> {
        loop {
            let l = self.loads.get(self.index)?;
            let (first, end) = pfn_span(l, self.shift);
            let pfn = first.max(self.next);
            if pfn < end {
                let boundary = (pfn / self.align + 1) * self.align;
                let stop = end.min(boundary).min(pfn + CLASS_BATCH as u64);
                self.next = stop;
                return Some((pfn, (stop - pfn) as usize));
            }
            self.index += 1;
        }
    }
}

/// Reads page `pfn` into `buf` (one page): bytes covered by segments from their sources, the
/// rest zero. Fails if any covered part is unreadable.
fn read_page(
    loads: &[LoadSegment],
    mem: &dyn PhysRead,
    pfn: u64,
    shift: u32,
    buf: &mut [u8],
) -> bool {
    buf.fill(0);
    let start = pfn << shift;
    let last = start + (buf.len() as u64 - 1);
    let first = loads.partition_point(|l| l.paddr + (l.len - 1) < start);
    for l in &loads[first..] {
        if l.paddr > last {
            break;
        }
        let lo = l.paddr.max(start);
        let hi = (l.paddr + (l.len - 1)).min(last);
        let at = (lo - start) as usize;
        let n = (hi - lo) as usize + 1;
        if mem.read(l.src + (lo - l.paddr), &mut buf[at..at + n]).is_err() {
            return false;
        }
    }
    true
}

fn is_zero(page: &[u8]) -> bool {
    let (words, rest) = page.split_at(page.len() & !7);
    words.chunks_exact(8).all(|w| w == [0u8; 8]) && rest.iter().all(|&b| b == 0)
}

/// Counters shared by the writer and the summary.
#[derive(Default)]
struct Counts {
    time: PhaseTimes,
    done: u64,
    /// Pages the selector decided differently in the second pass.
    changed: bool,
    zero: u64,
    compressed: u64,
    raw: u64,
    unreadable: u64,
    first_unreadable: Option<u64>,
    file_end: u64,
}

fn header_block(layout: &Layout, params: &DumpParams, status: u32) -> DiskDumpHeader {
    DiskDumpHeader {
        signature: KDUMP_SIGNATURE,
        header_version: HEADER_VERSION,
        utsname: params.utsname,
        pad: [0; 6],
        timestamp_sec: params.timestamp,
        timestamp_usec: 0,
        status,
        block_size: layout.page_size as i32,
        sub_hdr_size: layout.sub_hdr_blocks as i32,
        bitmap_blocks: layout.bitmap_blocks as u32,
        max_mapnr: layout.max_mapnr.min(u64::from(u32::MAX)) as u32,
        total_ram_blocks: 0,
        device_blocks: 0,
        written_blocks: 0,
        current_cpu: 0,
        nr_cpus: i32::try_from(params.nr_cpus).unwrap_or(i32::MAX),
    }
}

fn write_header(out: &mut Out<'_>, layout: &Layout, h: &DiskDumpHeader) -> Result<(), SinkError> {
    let mut w = SeqWriter::new(0);
    w.write(out, &h.to_bytes())?;
    w.pad_to(out, layout.page_size)?;
    w.flush(out)
}

/// Writes the dump of everything `core` names as a kdump-compressed file to `sink`.
///
/// Never panics on any input and never stops early except when the sink fails: unreadable
/// pages are recorded as missing and the verdict says so.
pub fn write_kdump(
    core: &ElfCoreHeader,
    params: &DumpParams,
    mem: &dyn PhysRead,
    sink: &mut dyn RecordSink,
    obs: &mut dyn DumpObserver,
) -> DumpSummary {
    write_kdump_filtered(core, params, mem, &mut KeepAll, sink, obs)
}

/// The highest pfn + 1 of the pages `core` names (the dump's `max_mapnr`), for sizing a
/// [`PageFilter`]; 0 if the page size is not supported.
pub fn max_pfn(core: &ElfCoreHeader, page_size: u32) -> u64 {
    Layout::new(core, page_size).map_or(0, |l| l.max_mapnr)
}

/// [`write_kdump`], leaving out the pages `select` excludes.
pub fn write_kdump_filtered(
    core: &ElfCoreHeader,
    params: &DumpParams,
    mem: &dyn PhysRead,
    select: &mut dyn PageSelect,
    sink: &mut dyn RecordSink,
    obs: &mut dyn DumpObserver,
) -> DumpSummary {
    let ram_bytes = core.loads.iter().map(|l| l.len).sum();
    let mut summary = DumpSummary {
        pages_total: 0,
        pages_zero: 0,
        pages_compressed: 0,
        pages_raw: 0,
        pages_unreadable: 0,
        ram_bytes,
        file_bytes: 0,
        verdict: Verdict::Complete,
    };
    let mut layout = match Layout::new(core, params.page_size) {
        Ok(l) => l,
        Err(why) => {
            summary.verdict = Verdict::Incomplete(format!("nothing written: {}", why));
            return summary;
        }
    };
    let mut out = Out { sink, bytes: 0 };
    let mut counts = Counts::default();
    let result = write_all(core, params, mem, select, &mut layout, &mut out, obs, &mut counts);
    summary.pages_total = layout.num_dumpable;
    summary.pages_zero = counts.zero;
    summary.pages_compressed = counts.compressed;
    summary.pages_raw = counts.raw;
    summary.pages_unreadable = counts.unreadable;
    summary.verdict = match result {
        Ok(()) => {
            summary.file_bytes = counts.file_end;
            match (counts.changed, counts.first_unreadable) {
                (true, _) => Verdict::Incomplete(String::from(
                    "the page filter decided differently in its second pass over memory: \
                     some descriptors may not match bitmap 2",
                )),
                (false, None) => Verdict::Complete,
                (false, Some(pfn)) => Verdict::Incomplete(format!(
                    "{} of {} pages could not be read (the first at physical address {:#x}); \
                     they are marked missing in the dump",
                    counts.unreadable,
                    layout.num_dumpable,
                    pfn << layout.page_shift
                )),
            }
        }
        Err(e) => {
            summary.file_bytes = out.bytes;
            let mut why = format!(
                "{} after {} of {} pages ({} bytes of the dump delivered)",
                e, counts.done, layout.num_dumpable, out.bytes
            );
            let h = header_block(
                &layout,
                params,
                DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE,
            );
            if let Err(e2) = write_header(&mut out, &layout, &h) {
                why.push_str(&format!("; the header could not be marked incomplete ({})", e2));
            }
            Verdict::Incomplete(why)
        }
    };
    obs.progress(&Progress {
        counting: false,
        pages_done: counts.done,
        pages_total: layout.num_dumpable,
        bytes_out: out.bytes,
        time: counts.time,
    });
    summary
}

/// FNV-1a over the excluded pfns, to check the two passes agree.
fn mix(hash: u64, pfn: u64) -> u64 {
    pfn.to_le_bytes().iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The bitmap-2 record being built in pass 1: bitmap bytes `byte..byte + n` in `chunk`,
/// starting as bitmap 1 (pages present) and losing the excluded pages' bits.
struct Bitmap2Record {
    chunk: Vec<u8>,
    byte: u64,
    n: usize,
}

impl Bitmap2Record {
    fn new(mut chunk: Vec<u8>, loads: &[LoadSegment], shift: u32, bitmap_bytes: u64) -> Self {
        let n = bitmap_bytes.min(MAX_RECORD as u64) as usize;
        fill_bitmap(loads, shift, 0, &mut chunk[..n]);
        Self { chunk, byte: 0, n }
    }

    /// The first pfn after this record.
    fn end_pfn(&self) -> u64 {
        (self.byte + self.n as u64) * 8
    }

    /// Leaves `pfn` (inside this record) out.
    fn clear(&mut self, pfn: u64) {
        let bit = pfn - self.byte * 8;
        self.chunk[(bit / 8) as usize] &= !(1 << (bit % 8));
    }

    /// Writes this record, starts the next one; returns the pages this record kept.
    fn emit(
        &mut self,
        loads: &[LoadSegment],
        shift: u32,
        bitmap_bytes: u64,
        w: &mut SeqWriter,
        out: &mut Out<'_>,
    ) -> Result<u64, SinkError> {
        let kept = self.chunk[..self.n].iter().map(|b| u64::from(b.count_ones())).sum();
        w.write(out, &self.chunk[..self.n])?;
        self.byte += self.n as u64;
        self.n = (bitmap_bytes - self.byte).min(MAX_RECORD as u64) as usize;
        fill_bitmap(loads, shift, self.byte, &mut self.chunk[..self.n]);
        Ok(kept)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_all(
    core: &ElfCoreHeader,
    params: &DumpParams,
    mem: &dyn PhysRead,
    select: &mut dyn PageSelect,
    layout: &mut Layout,
    out: &mut Out<'_>,
    obs: &mut dyn DumpObserver,
    counts: &mut Counts,
) -> Result<(), SinkError> {
    let ps = layout.page_size;
    let shift = layout.page_shift;

    // Block 0: the header.
    write_header(out, layout, &header_block(layout, params, DUMP_DH_COMPRESSED_ZLIB))?;

    // Sub header and notes.
    let note_offset = ps + KDUMP_SUB_HEADER_SIZE as u64;
    let (offset_vmcoreinfo, size_vmcoreinfo) = match &core.vmcoreinfo {
        Some(r) => (note_offset + r.start as u64, r.len() as u64),
        None => (0, 0),
    };
    let sub = KdumpSubHeader {
        phys_base: params.phys_base,
        dump_level: params.dump_level as i32,
        offset_vmcoreinfo: offset_vmcoreinfo as i64,
        size_vmcoreinfo,
        offset_note: note_offset as i64,
        size_note: core.notes.len() as u64,
        max_mapnr_64: layout.max_mapnr,
        ..KdumpSubHeader::default()
    };
    let mut w = SeqWriter::new(ps);
    w.write(out, &sub.to_bytes())?;
    w.write(out, &core.notes)?;
    let bitmap_offset = (1 + layout.sub_hdr_blocks) * ps;
    w.pad_to(out, bitmap_offset)?;

    // Bitmap 1, a record at a time: the pages covered by PT_LOADs.
    let mut chunk = vec![0u8; MAX_RECORD];
    let mut byte = 0;
    while byte < layout.bitmap_bytes {
        let n = (layout.bitmap_bytes - byte).min(MAX_RECORD as u64) as usize;
        fill_bitmap(&core.loads, shift, byte, &mut chunk[..n]);
        w.write(out, &chunk[..n])?;
        byte += n as u64;
    }

    // Pass 1: bitmap 2, a record at a time, less what the selector excludes.
    let chunk_pfns = MAX_RECORD as u64 * 8;
    let mut classes = vec![PageClass::Keep; CLASS_BATCH];
    let mut hash = HASH_START;
    let mut dumpable = 0u64;
    let mut classified = 0u64;
    let mut bm2 = Bitmap2Record::new(chunk, &core.loads, shift, layout.bitmap_bytes);
    select.reset();
    for (start, count) in Slices::new(&core.loads, shift, chunk_pfns) {
        while start >= bm2.end_pfn() {
            dumpable += bm2.emit(&core.loads, shift, layout.bitmap_bytes, &mut w, out)?;
        }
        let cls = &mut classes[..count];
        let t = obs.now();
        select.classify(start, cls);
        counts.time.choose += obs.now().wrapping_sub(t);
        for (i, c) in cls.iter().enumerate() {
            if c.is_excluded() {
                bm2.clear(start + i as u64);
                hash = mix(hash, start + i as u64);
            }
        }
        classified += count as u64;
        obs.progress(&Progress {
            counting: true,
            pages_done: classified,
            pages_total: layout.num_present,
            bytes_out: out.bytes,
            time: counts.time,
        });
    }
    while bm2.byte < layout.bitmap_bytes {
        dumpable += bm2.emit(&core.loads, shift, layout.bitmap_bytes, &mut w, out)?;
    }
    w.flush(out)?;
    drop(bm2);
    debug_assert_eq!(w.position(), layout.data_offset);
    layout.set_dumpable(dumpable);
    let pass1_hash = hash;

    // Pass 2: descriptors and page data, side by side.
    let mut descs = SeqWriter::new(layout.data_offset);
    let mut data = SeqWriter::new(layout.pages_offset);
    let share_zero = params.dump_level & DL_EXCLUDE_ZERO != 0;
    let zero_desc =
        PageDesc { offset: layout.pages_offset as i64, size: ps as u32, flags: 0, page_flags: 0 };
    if share_zero {
        data.zeros(out, ps)?;
    }
    let mut compressor = PageCompressor::new(ps as usize);
    let mut page = vec![0u8; ps as usize];
    let mut packed = vec![0u8; ps as usize];
    let mut hash = HASH_START;
    select.reset();
    for (start, count) in Slices::new(&core.loads, shift, chunk_pfns) {
        let cls = &mut classes[..count];
        let t = obs.now();
        select.classify(start, cls);
        counts.time.choose += obs.now().wrapping_sub(t);
        for (i, c) in cls.iter().enumerate() {
            let pfn = start + i as u64;
            if c.is_excluded() {
                hash = mix(hash, pfn);
                continue;
            }
            if counts.done == layout.num_dumpable {
                // Kept now but excluded in pass 1: there is no room for it.
                counts.changed = true;
                continue;
            }
            let t0 = obs.now();
            let readable = read_page(&core.loads, mem, pfn, shift, &mut page);
            let t1 = obs.now();
            counts.time.read += t1.wrapping_sub(t0);
            let zero = readable && share_zero && is_zero(&page);
            let t2 = obs.now();
            counts.time.zero += t2.wrapping_sub(t1);
            let desc = if !readable {
                counts.unreadable += 1;
                counts.first_unreadable.get_or_insert(pfn);
                PageDesc::default()
            } else if zero {
                counts.zero += 1;
                zero_desc
            } else {
                let offset = data.position() as i64;
                let packed_len = compressor.compress(&page, &mut packed);
                let t3 = obs.now();
                counts.time.compress += t3.wrapping_sub(t2);
                let desc = match packed_len {
                    Some(n) => {
                        counts.compressed += 1;
                        data.write(out, &packed[..n])?;
                        PageDesc {
                            offset,
                            size: n as u32,
                            flags: DUMP_DH_COMPRESSED_ZLIB,
                            page_flags: 0,
                        }
                    }
                    None => {
                        counts.raw += 1;
                        data.write(out, &page)?;
                        PageDesc { offset, size: ps as u32, flags: 0, page_flags: 0 }
                    }
                };
                counts.time.sink += obs.now().wrapping_sub(t3);
                desc
            };
            let t4 = obs.now();
            descs.write(out, &desc.to_bytes())?;
            counts.time.sink += obs.now().wrapping_sub(t4);
            counts.done += 1;
            if counts.done.is_multiple_of(PROGRESS_EVERY) {
                obs.progress(&Progress {
                    counting: false,
                    pages_done: counts.done,
                    pages_total: layout.num_dumpable,
                    bytes_out: out.bytes,
                    time: counts.time,
                });
            }
        }
    }
    if hash != pass1_hash {
        counts.changed = true;
    }
    // Pages excluded now but kept in pass 1: their descriptors say "missing".
    while counts.done < layout.num_dumpable {
        counts.changed = true;
        descs.write(out, &PageDesc::default().to_bytes())?;
        counts.done += 1;
    }
    descs.flush(out)?;
    data.flush(out)?;
    debug_assert_eq!(descs.position(), layout.pages_offset);
    counts.file_end = data.position();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elfcore::testutil::*;
    use crate::elfcore::{Limits, EM_X86_64, NT_PRSTATUS};
    use miniz_oxide::inflate::decompress_to_vec_zlib;

    /// Assembles records into a file, checking the record rules and that no byte is written
    /// twice (except the header block rewrite).
    struct FileSink {
        file: Vec<u8>,
        written: Vec<bool>,
        /// Fail with `Full` for records reaching past this.
        limit: Option<u64>,
        records: usize,
    }

    impl FileSink {
        fn new(limit: Option<u64>) -> Self {
            Self { file: Vec::new(), written: Vec::new(), limit, records: 0 }
        }
    }

    impl RecordSink for FileSink {
        fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            assert!(!data.is_empty() && data.len() <= MAX_CHUNK - 16, "record of {}", data.len());
            let end = offset as usize + data.len();
            if let Some(limit) = self.limit {
                if end as u64 > limit {
                    return Err(SinkError::Full { limit });
                }
            }
            if self.file.len() < end {
                self.file.resize(end, 0);
                self.written.resize(end, false);
            }
            for (i, w) in self.written[offset as usize..end].iter_mut().enumerate() {
                assert!(!*w || offset == 0, "byte {:#x} written twice", offset as usize + i);
                *w = true;
            }
            self.file[offset as usize..end].copy_from_slice(data);
            self.records += 1;
            Ok(())
        }
    }

    #[derive(Default)]
    struct Observer {
        calls: Vec<Progress>,
    }
    impl DumpObserver for Observer {
        fn progress(&mut self, p: &Progress) {
            self.calls.push(*p);
        }
    }

    fn rd_u32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn rd_i32(b: &[u8], at: usize) -> i32 {
        i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn rd_u64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// What an independent reader (like crash) finds in a kdump-compressed file.
    struct Parsed {
        bm1: Vec<u8>,
        bm2: Vec<u8>,
        status: u32,
        block_size: usize,
        nr_cpus: i32,
        release: String,
        machine: String,
        timestamp: i64,
        max_mapnr: u64,
        phys_base: u64,
        dump_level: i32,
        notes: Vec<u8>,
        vmcoreinfo: Vec<u8>,
        /// Per pfn: None = not in bitmap, Some(None) = missing page, Some(Some(bytes)).
        pages: Vec<Option<Option<Vec<u8>>>>,
        file_len: usize,
    }

    fn cstr(b: &[u8]) -> String {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec()).unwrap()
    }

    fn parse_kdump(f: &[u8]) -> Parsed {
        assert_eq!(&f[0..8], b"KDUMP   ");
        assert_eq!(rd_i32(f, 8), 6);
        let bs = rd_i32(f, 428) as usize;
        let sub_blocks = rd_i32(f, 432) as usize;
        let bitmap_blocks = rd_u32(f, 436) as usize;
        let sub = &f[bs..];
        let max_mapnr = rd_u64(sub, 96);
        assert_eq!(u64::from(rd_u32(f, 440)), max_mapnr.min(u32::MAX as u64));
        assert_eq!(rd_u64(sub, 48) as usize, bs + 104);
        let size_note = rd_u64(sub, 56) as usize;
        let notes = f[bs + 104..bs + 104 + size_note].to_vec();
        let off_vmci = rd_u64(sub, 32) as usize;
        let vmcoreinfo = f[off_vmci..off_vmci + rd_u64(sub, 40) as usize].to_vec();
        // Bitmaps: two halves, each a whole number of blocks covering max_mapnr bits.
        let bitmap_len = bitmap_blocks * bs;
        assert_eq!(bitmap_len, (max_mapnr as usize).div_ceil(8).div_ceil(bs) * bs * 2);
        let bm = &f[(1 + sub_blocks) * bs..(1 + sub_blocks) * bs + bitmap_len];
        let (bm1, bm2) = bm.split_at(bitmap_len / 2);
        // Bitmap 2 is a subset of bitmap 1.
        assert!(bm1.iter().zip(bm2).all(|(a, b)| a & b == *b));
        let data_offset = (1 + sub_blocks + bitmap_blocks) * bs;
        let mut pages = vec![None; max_mapnr as usize];
        let mut k = 0;
        for (pfn, slot) in pages.iter_mut().enumerate() {
            if bm2[pfn / 8] & (1 << (pfn % 8)) == 0 {
                continue;
            }
            let d = &f[data_offset + 24 * k..data_offset + 24 * k + 24];
            k += 1;
            let (off, size, flags) = (rd_u64(d, 0) as usize, rd_u32(d, 8) as usize, rd_u32(d, 12));
            assert_eq!(rd_u64(d, 16), 0);
            if off == 0 {
                *slot = Some(None);
                continue;
            }
            assert!(size <= bs);
            let raw = &f[off..off + size];
            let page = match flags {
                0 => raw.to_vec(),
                1 => decompress_to_vec_zlib(raw).unwrap(),
                _ => panic!("flags {}", flags),
            };
            assert_eq!(page.len(), bs);
            *slot = Some(Some(page));
        }
        // Beyond max_mapnr the bitmap is zero.
        for pfn in max_mapnr as usize..bitmap_len / 2 * 8 {
            assert_eq!(bm2[pfn / 8] & (1 << (pfn % 8)), 0);
        }
        Parsed {
            bm1: bm1.to_vec(),
            bm2: bm2.to_vec(),
            status: rd_u32(f, 424),
            block_size: bs,
            nr_cpus: rd_i32(f, 460),
            release: cstr(&f[12 + 130..12 + 195]),
            machine: cstr(&f[12 + 260..12 + 325]),
            timestamp: rd_u64(f, 408) as i64,
            max_mapnr,
            phys_base: rd_u64(sub, 0),
            dump_level: rd_i32(sub, 8),
            notes,
            vmcoreinfo,
            pages,
            file_len: f.len(),
        }
    }

    const HDR: u64 = 0x7f00_0000;
    const NOTES: u64 = 0x7e00_0000;
    const PHYS_BASE: u64 = 0x10_0000;
    const UTS_PA: u64 = 0x10_2000;

    /// A synthetic crashed machine: RAM segments `(paddr, src, len)` whose contents are a mix
    /// of zero, compressible and random pages; `holes` are source ranges left unreadable.
    struct Machine {
        mem: FakeMem,
        segs: Vec<(u64, u64, u64)>,
        contents: Vec<Vec<u8>>,
    }

    fn content(len: u64, seed: u64, ps: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                let kind = ((i / ps) + seed) % 4;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match kind {
                    0 => 0,
                    1 => (i % 251) as u8,
                    2 => x as u8,
                    _ => {
                        if i % 97 == 0 {
                            1
                        } else {
                            0
                        }
                    }
                }
            })
            .collect()
    }

    fn vmcoreinfo_text(ps: u64) -> String {
        format!(
            "OSRELEASE=6.1.0-test\nPAGESIZE={}\nSYMBOL(init_uts_ns)={:x}\n\
OFFSET(uts_namespace.name)=4\nNUMBER(phys_base)={}\nCRASHTIME=1700000000\n",
            ps,
            X86_64_START_KERNEL_MAP + UTS_PA - 4 - PHYS_BASE,
            PHYS_BASE
        )
    }

    fn machine(
        segs: &[(u64, u64, u64)],
        ps: u64,
        holes: &[(u64, u64)],
    ) -> (Machine, ElfCoreHeader) {
        let mut mem = FakeMem::default();
        let mut contents = Vec::new();
        let mut phdrs = vec![note_seg(NOTES, 4096)];
        for (i, &(paddr, src, len)) in segs.iter().enumerate() {
            let mut c = content(len, i as u64 * 7 + 3, ps);
            // Place a utsname where SYMBOL(init_uts_ns) points, if this segment holds it.
            if paddr <= UTS_PA && UTS_PA + 390 <= paddr + len {
                let mut u = UtsName::minimal("6.1.0-test", "x86_64");
                UtsName::set(&mut u.nodename, "crashed-host");
                let at = (UTS_PA - paddr) as usize;
                c[at..at + 390].copy_from_slice(&u.to_bytes());
            }
            // Split the source around holes.
            let mut pos = 0u64;
            for &(h0, h1) in holes.iter().filter(|h| h.0 >= src && h.1 <= src + len) {
                if h0 > src + pos {
                    mem.add(src + pos, c[pos as usize..(h0 - src) as usize].to_vec());
                }
                pos = h1 - src;
            }
            if pos < len {
                mem.add(src + pos, c[pos as usize..].to_vec());
            }
            contents.push(c);
            phdrs.push(load(src, paddr, len));
        }
        let mut notes = note("CORE", NT_PRSTATUS, &[0x55; 336]);
        notes.extend(note("CORE", NT_PRSTATUS, &[0x66; 336]));
        notes.extend(note("VMCOREINFO", 0, vmcoreinfo_text(ps).as_bytes()));
        notes.extend([0u8; 12]);
        mem.add(NOTES, notes);
        mem.add(HDR, ehdr(EM_X86_64, &phdrs));
        let limits = Limits {
            max_phys: 1 << 46,
            own: vec![],
            ram: None,
            machine: EM_X86_64,
            hdr_size: None,
        };
        let core = ElfCoreHeader::parse(&mem, HDR, &limits).unwrap();
        (Machine { mem, segs: segs.to_vec(), contents }, core)
    }

    impl Machine {
        /// The page as it should appear in the dump.
        fn expected(&self, pfn: u64, ps: u64) -> Vec<u8> {
            (pfn * ps..(pfn + 1) * ps)
                .map(|a| {
                    self.segs
                        .iter()
                        .zip(&self.contents)
                        .find(|((p, _, l), _)| a >= *p && a < p + l)
                        .map_or(0, |((p, _, _), c)| c[(a - p) as usize])
                })
                .collect()
        }
        fn present(&self, pfn: u64, ps: u64) -> bool {
            self.segs.iter().any(|&(p, _, l)| p < (pfn + 1) * ps && pfn * ps < p + l)
        }
    }

    fn run(
        m: &Machine,
        core: &ElfCoreHeader,
        sink: &mut FileSink,
    ) -> (DumpParams, DumpSummary, Observer) {
        let (params, warnings) = dump_params(core, &m.mem, "x86_64");
        assert!(warnings.is_empty(), "{:?}", warnings);
        let mut obs = Observer::default();
        let summary = write_kdump(core, &params, &m.mem, sink, &mut obs);
        (params, summary, obs)
    }

    fn check_complete(m: &Machine, sink: &FileSink, summary: &DumpSummary, ps: u64) -> Parsed {
        assert!(sink.written.iter().all(|&w| w), "the file has holes");
        let p = parse_kdump(&sink.file);
        assert_eq!(p.file_len as u64, summary.file_bytes);
        assert_eq!(p.block_size as u64, ps);
        let mut n = 0;
        for (pfn, slot) in p.pages.iter().enumerate() {
            let pfn = pfn as u64;
            assert_eq!(slot.is_some(), m.present(pfn, ps), "pfn {:#x} presence", pfn);
            if let Some(page) = slot {
                n += 1;
                let page = page.as_ref().unwrap_or_else(|| panic!("pfn {:#x} missing", pfn));
                assert!(*page == m.expected(pfn, ps), "pfn {:#x} differs", pfn);
            }
        }
        assert_eq!(n, summary.pages_total);
        p
    }

    #[test]
    fn complete_dump_round_trips() {
        let ps = 4096;
        let segs = [
            (0, 0x7d00_0000, 0xa0000),         // kexec-tools backup: read from the copy
            (0x10_0000, 0x10_0000, 0x20_0000), // 2 MiB of RAM, holds init_uts_ns
            (0x40_0800, 0x40_0800, 0x2c00),    // starts and ends inside pages
            (0x40_3400, 0x40_3400, 0x1c00),    // shares a page with the previous one
            (0x2_0000_0000, 0x2_0000_0000, 0x3000), // far away: the bitmap spans many records
        ];
        let (m, core) = machine(&segs, ps, &[]);
        let mut sink = FileSink::new(None);
        let (params, summary, obs) = run(&m, &core, &mut sink);
        assert_eq!(summary.verdict, Verdict::Complete);
        let p = check_complete(&m, &sink, &summary, ps);
        assert_eq!(p.status, DUMP_DH_COMPRESSED_ZLIB);
        assert_eq!(p.nr_cpus, 2);
        assert_eq!(p.release, "6.1.0-test");
        assert_eq!(p.machine, "x86_64");
        assert_eq!(UtsName::get(&params.utsname.nodename), Some("crashed-host"));
        assert_eq!(p.timestamp, 1700000000);
        assert_eq!(p.phys_base, PHYS_BASE);
        assert_eq!(p.dump_level, 1);
        assert_eq!(p.max_mapnr, 0x2_0000_3000 / ps);
        assert_eq!(p.notes, core.notes);
        assert_eq!(p.vmcoreinfo, vmcoreinfo_text(ps).as_bytes());
        // 0xa0 + 0x200 + 4 (0x400-0x403) + 1 (0x404; 0x403 is shared) + 3 pages.
        assert_eq!(summary.pages_total, 0xa0 + 0x200 + 4 + 1 + 3);
        assert_eq!(
            summary.pages_zero + summary.pages_compressed + summary.pages_raw,
            summary.pages_total
        );
        assert!(
            summary.pages_zero > 100 && summary.pages_compressed > 100 && summary.pages_raw > 100
        );
        assert_eq!(summary.pages_unreadable, 0);
        assert_eq!(summary.ram_bytes, segs.iter().map(|s| s.2).sum::<u64>());
        assert_eq!(p.bm1, p.bm2, "nothing is filtered at level 1");
        // Progress: counting first, in slices, then at least every 256 pages, and a final call
        // with everything.
        let counting = obs.calls.iter().take_while(|c| c.counting).count();
        assert!(counting > 0);
        let mut last = 0;
        for c in &obs.calls[..counting] {
            assert!(c.pages_done - last <= CLASS_BATCH as u64 && c.pages_done > last);
            assert_eq!(c.pages_total, summary.pages_total);
            last = c.pages_done;
        }
        assert_eq!(last, summary.pages_total);
        let mut last = 0;
        for c in &obs.calls[counting..] {
            assert!(!c.counting);
            assert!(c.pages_done - last <= 256 && c.pages_done >= last);
            last = c.pages_done;
        }
        assert_eq!(obs.calls.last().unwrap().pages_done, summary.pages_total);
        assert_eq!(obs.calls.last().unwrap().bytes_out, summary.file_bytes);
    }

    /// Excludes a fixed pattern of pfns; records its calls; can change its mind in pass 2.
    struct Pattern {
        pass: u32,
        calls: Vec<(u32, u64, usize)>,
        flip_in_pass_2: Vec<u64>,
    }

    impl Pattern {
        fn new(flip_in_pass_2: &[u64]) -> Self {
            Self { pass: 0, calls: Vec::new(), flip_in_pass_2: flip_in_pass_2.to_vec() }
        }
        fn excluded(pfn: u64) -> bool {
            pfn % 3 == 0 || (0x150..0x1a0).contains(&pfn)
        }
    }

    impl PageSelect for Pattern {
        fn reset(&mut self) {
            self.pass += 1;
        }
        fn classify(&mut self, start: u64, out: &mut [PageClass]) {
            self.calls.push((self.pass, start, out.len()));
            for (i, c) in out.iter_mut().enumerate() {
                let pfn = start + i as u64;
                let flip = self.pass == 2 && self.flip_in_pass_2.contains(&pfn);
                *c = if Self::excluded(pfn) != flip { PageClass::Free } else { PageClass::Keep };
            }
        }
    }

    fn bit(bm: &[u8], pfn: u64) -> bool {
        bm[(pfn / 8) as usize] & (1 << (pfn % 8)) != 0
    }

    const FILTER_SEGS: [(u64, u64, u64); 5] = [
        (0, 0x7d00_0000, 0xa0000),
        (0x10_0000, 0x10_0000, 0x20_0000),
        (0x40_0800, 0x40_0800, 0x2c00),
        (0x40_3400, 0x40_3400, 0x1c00),
        (0x2_0000_0000, 0x2_0000_0000, 0x3000),
    ];

    #[test]
    fn filtered_dump_leaves_out_excluded_pages() {
        let ps = 4096;
        let (m, core) = machine(&FILTER_SEGS, ps, &[]);
        let (mut params, _) = dump_params(&core, &m.mem, "x86_64");
        params.dump_level = 31;
        let mut sink = FileSink::new(None);
        let mut sel = Pattern::new(&[]);
        let summary =
            write_kdump_filtered(&core, &params, &m.mem, &mut sel, &mut sink, &mut NoProgress);
        assert_eq!(summary.verdict, Verdict::Complete);
        assert!(sink.written.iter().all(|&w| w), "the file has holes");
        let p = parse_kdump(&sink.file);
        assert_eq!(p.dump_level, 31);
        assert_eq!(p.file_len as u64, summary.file_bytes);
        let mut kept = 0;
        let mut excluded = 0;
        for pfn in 0..p.max_mapnr {
            let present = m.present(pfn, ps);
            assert_eq!(bit(&p.bm1, pfn), present, "bitmap 1 at pfn {:#x}", pfn);
            let dumped = present && !Pattern::excluded(pfn);
            assert_eq!(bit(&p.bm2, pfn), dumped, "bitmap 2 at pfn {:#x}", pfn);
            let slot = &p.pages[pfn as usize];
            assert_eq!(slot.is_some(), dumped, "pfn {:#x}", pfn);
            if dumped {
                kept += 1;
                assert!(*slot.as_ref().unwrap().as_ref().unwrap() == m.expected(pfn, ps));
            } else if present {
                excluded += 1;
            }
        }
        assert_eq!(summary.pages_total, kept);
        assert!(kept > 300 && excluded > 200, "{} kept, {} excluded", kept, excluded);
        // Both passes ask the same questions: every present pfn once, ascending, in slices
        // that never cross a bitmap record.
        let pass = |n| sel.calls.iter().filter(|c| c.0 == n).map(|c| (c.1, c.2)).collect::<Vec<_>>();
        let (one, two) = (pass(1), pass(2));
        assert_eq!(one, two);
        assert_eq!(sel.calls.len(), one.len() * 2);
        let mut next = 0;
        let mut asked = 0;
        for &(start, len) in &one {
            assert!(start >= next && len > 0 && len <= CLASS_BATCH);
            let rec = MAX_RECORD as u64 * 8;
            assert_eq!(start / rec, (start + len as u64 - 1) / rec, "slice crosses a record");
            assert!((start..start + len as u64).all(|pfn| m.present(pfn, ps)));
            next = start + len as u64;
            asked += len as u64;
        }
        assert_eq!(asked, (0..p.max_mapnr).filter(|&pfn| m.present(pfn, ps)).count() as u64);
    }

    #[test]
    fn filter_that_changes_its_mind_makes_the_dump_incomplete() {
        let ps = 4096;
        let (m, core) = machine(&FILTER_SEGS, ps, &[]);
        let (params, _) = dump_params(&core, &m.mem, "x86_64");
        // Pfn 0x103 is excluded in pass 1 and kept in pass 2, 0x104 the other way round; then
        // only one of them.
        for flips in [&[0x103u64, 0x104][..], &[0x103], &[0x104]] {
            let mut sink = FileSink::new(None);
            let mut sel = Pattern::new(flips);
            let summary =
                write_kdump_filtered(&core, &params, &m.mem, &mut sel, &mut sink, &mut NoProgress);
            match &summary.verdict {
                Verdict::Incomplete(why) => assert!(why.contains("second pass"), "{}", why),
                v => panic!("{:?} with flips {:?}", v, flips),
            }
            assert!(sink.written.iter().all(|&w| w), "the file has holes");
            let p = parse_kdump(&sink.file);
            assert_eq!(p.file_len as u64, summary.file_bytes);
        }
    }

    /// Each call to `now` advances the clock by one.
    #[derive(Default)]
    struct Ticker {
        ticks: u64,
        last: Option<Progress>,
    }
    impl DumpObserver for Ticker {
        fn progress(&mut self, p: &Progress) {
            self.last = Some(*p);
        }
        fn now(&mut self) -> u64 {
            self.ticks += 1;
            self.ticks
        }
    }

    #[test]
    fn phase_times_cover_every_part() {
        let (m, core) = machine(&FILTER_SEGS, 4096, &[]);
        let (params, _) = dump_params(&core, &m.mem, "x86_64");
        let mut sel = Pattern::new(&[]);
        let mut obs = Ticker::default();
        let mut sink = FileSink::new(None);
        let s = write_kdump_filtered(&core, &params, &m.mem, &mut sel, &mut sink, &mut obs);
        assert_eq!(s.verdict, Verdict::Complete);
        let t = obs.last.unwrap().time;
        // One tick per measured step: two classify calls per slice, one read, zero check and
        // descriptor write per page, one compression and data write per non-zero page.
        let slices = sel.calls.len() as u64;
        let nonzero = s.pages_compressed + s.pages_raw;
        assert_eq!(t.choose, slices);
        assert_eq!((t.read, t.zero), (s.pages_total, s.pages_total));
        assert_eq!(t.compress, nonzero);
        assert_eq!(t.sink, s.pages_total + nonzero);
        // Without a clock, nothing is counted.
        let mut obs = Observer::default();
        write_kdump_filtered(&core, &params, &m.mem, &mut Pattern::new(&[]), &mut FileSink::new(None), &mut obs);
        assert_eq!(obs.calls.last().unwrap().time, PhaseTimes::default());
    }

    #[test]
    fn large_pages_and_level_0() {
        for ps in [16384u64, 65536] {
            let segs = [(0x10_0000, 0x10_0000, 0x20_0000), (0x40_0800, 0x40_0800, 0x1_2000)];
            let (m, core) = machine(&segs, ps, &[]);
            let mut sink = FileSink::new(None);
            let (mut params, _) = dump_params(&core, &m.mem, "x86_64");
            assert_eq!(u64::from(params.page_size), ps);
            params.dump_level = 0;
            let summary = write_kdump(&core, &params, &m.mem, &mut sink, &mut NoProgress);
            assert_eq!(summary.verdict, Verdict::Complete);
            assert_eq!(summary.pages_zero, 0);
            check_complete(&m, &sink, &summary, ps);
        }
    }

    #[test]
    fn unreadable_pages_are_marked_missing() {
        let ps = 4096;
        let segs = [(0x10_0000, 0x10_0000, 0x10_0000)];
        // Unreadable: all of page 0x110 and part of page 0x120 (so the whole page is missing).
        let (m, core) = machine(&segs, ps, &[(0x11_0000, 0x11_1000), (0x12_0800, 0x12_0900)]);
        let mut sink = FileSink::new(None);
        let (_, summary, _) = run(&m, &core, &mut sink);
        assert_eq!(summary.pages_unreadable, 2);
        match &summary.verdict {
            Verdict::Incomplete(why) => {
                assert!(why.contains("2 of 256 pages") && why.contains("0x110000"), "{}", why)
            }
            v => panic!("{:?}", v),
        }
        assert!(sink.written.iter().all(|&w| w));
        let p = parse_kdump(&sink.file);
        for pfn in 0x100..0x200u64 {
            let slot = p.pages[pfn as usize].as_ref().unwrap();
            if pfn == 0x110 || pfn == 0x120 {
                assert!(slot.is_none());
            } else {
                assert!(*slot.as_ref().unwrap() == m.expected(pfn, ps));
            }
        }
    }

    #[test]
    fn sink_full_marks_header_incomplete() {
        let ps = 4096;
        let segs = [(0x10_0000, 0x10_0000, 0x40_0000)];
        let (m, core) = machine(&segs, ps, &[]);
        let mut sink = FileSink::new(Some(200_000));
        let (_, summary, obs) = run(&m, &core, &mut sink);
        let why = match &summary.verdict {
            Verdict::Incomplete(w) => w.clone(),
            v => panic!("{:?}", v),
        };
        assert!(why.starts_with("sink full after 200000 bytes after "), "{}", why);
        assert!(why.contains("of 1024 pages"), "{}", why);
        assert_eq!(
            rd_u32(&sink.file, 424),
            DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE
        );
        assert!(summary.file_bytes <= 200_000);
        assert_eq!(obs.calls.last().unwrap().bytes_out, summary.file_bytes + ps);
        // The sink failing from the very first record: still no panic, and the reason says so.
        let mut dead = FileSink::new(Some(0));
        let (_, summary, _) = run(&m, &core, &mut dead);
        match summary.verdict {
            Verdict::Incomplete(w) => {
                assert!(w.contains("could not be marked incomplete"), "{}", w)
            }
            v => panic!("{:?}", v),
        }
    }

    #[test]
    fn params_fallbacks() {
        let ps = 4096;
        // init_uts_ns not inside any segment: fall back to OSRELEASE.
        let (m, core) = machine(&[(0x200_0000, 0x200_0000, 0x1000)], ps, &[]);
        let (params, warnings) = dump_params(&core, &m.mem, "x86_64");
        assert_eq!(warnings.len(), 1, "{:?}", warnings);
        assert!(warnings[0].contains("not in a readable PT_LOAD"), "{}", warnings[0]);
        assert_eq!(UtsName::get(&params.utsname.release), Some("6.1.0-test"));
        assert_eq!(UtsName::get(&params.utsname.machine), Some("x86_64"));
        assert_eq!(UtsName::get(&params.utsname.sysname), Some("Linux"));
        // No VMCOREINFO at all.
        let mut mem = FakeMem::default();
        mem.add(HDR, ehdr(EM_X86_64, &[load(0x1000, 0x1000, 0x1000)]));
        let limits = Limits {
            max_phys: 1 << 46,
            own: vec![],
            ram: None,
            machine: EM_X86_64,
            hdr_size: None,
        };
        let core = ElfCoreHeader::parse(&mem, HDR, &limits).unwrap();
        let (params, warnings) = dump_params(&core, &mem, "x86_64");
        assert_eq!(params.page_size, 4096);
        assert_eq!(params.timestamp, 0);
        assert_eq!(UtsName::get(&params.utsname.release), Some("unknown"));
        assert_eq!(warnings.len(), 1); // no CPU notes
                                       // Bad page size in VMCOREINFO.
        let mut core2 = core.clone();
        let mut n = note("VMCOREINFO", 0, b"PAGESIZE=12345\n");
        let start = 12 + 12;
        core2.vmcoreinfo = Some(start..start + 15);
        core2.notes.append(&mut n);
        let (params, warnings) = dump_params(&core2, &mem, "x86_64");
        assert_eq!(params.page_size, 4096);
        assert!(warnings.iter().any(|w| w.contains("PAGESIZE=12345")), "{:?}", warnings);
        // An absurd page size handed to write_kdump writes nothing.
        let mut bad = params.clone();
        bad.page_size = 3000;
        let mut sink = FileSink::new(None);
        let s = write_kdump(&core, &bad, &mem, &mut sink, &mut NoProgress);
        assert!(
            matches!(s.verdict, Verdict::Incomplete(ref w) if w.starts_with("nothing written"))
        );
        assert_eq!(sink.records, 0);
    }

    #[test]
    fn bitmap_bits() {
        let mut b = [0u8; 4];
        set_bits(&mut b, 3, 21);
        assert_eq!(b, [0xf8, 0xff, 0x1f, 0]);
        let mut b = [0u8; 2];
        set_bits(&mut b, 5, 6);
        assert_eq!(b, [0x20, 0]);
    }
}
