//! Page filtering by `struct page`, like makedumpfile's dump levels.
//!
//! makedumpfile decides which pages to leave out of a dump from the crashed kernel's own
//! `struct page` array (`makedumpfile.c __exclude_unnecessary_pages()` and the helpers
//! `is_cache_page()`, `isSlab()`, `isOffline()`, `page_is_buddy_v3()`, `isHugetlb()`;
//! `makedumpfile.h` `isAnon()`, `isCompoundHead()`; project reference §6.4). [`PageFilter`]
//! makes the same decisions, driven by VMCOREINFO only:
//!
//! | first match wins | class | dump level bit |
//! |---|---|---|
//! | tail of a compound page (`compound_head & 1`) | with its head | — |
//! | buddy: `PG_buddy` (old kernels) or `_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE` and not slab; `1 << private` pages | [`PageClass::Free`] | 16 |
//! | `_mapcount == PAGE_UNACCEPTED_MAPCOUNT_VALUE`: `1 << (LENGTH(zone.free_area) - 1)` pages | [`PageClass::Free`] | 16 |
//! | cache page, not `PG_private`, not anonymous | [`PageClass::Cache`] | 2 |
//! | cache page, not anonymous | [`PageClass::CachePrivate`] (or `Cache`) | 4 |
//! | anonymous (`mapping & 1`, not slab) or hugetlb | [`PageClass::User`] | 8 |
//! | `PG_hwpoison` | [`PageClass::HwPoison`] | always |
//! | `_mapcount == PAGE_OFFLINE_MAPCOUNT_VALUE`, not slab | [`PageClass::Offline`] | always |
//! | anything else | [`PageClass::Keep`] | |
//!
//! "Cache page" is `PG_lru`, or `PG_swapcache` with `PG_swapbacked` (or without it where the
//! kernel has no `PG_swapbacked`). A compound head (`flags & NUMBER(PG_head_mask)`) is decided
//! once for all its `1 << order` pages; the order and the hugetlb mark come from the second
//! `struct page` (Linux ≥ 6.9: `page[1].flags & 0xff` and the head's `_mapcount ==
//! PAGE_HUGETLB_MAPCOUNT_VALUE`; 6.6+: `page[1].flags & 0xff` and `PG_hugetlb` in it; older:
//! the `compound_order`/`compound_dtor` bytes, `== HUGETLB_PAGE_DTOR`). Zero pages (bit 1)
//! are found from page contents by the dump writer, not here.
//!
//! `struct page` of a pfn is found through `mem_section` (`SYMBOL(mem_section)`,
//! SPARSEMEM_EXTREME or not, as makedumpfile `get_mm_sparsemem()`), or, when that is not in
//! VMCOREINFO, at `SYMBOL(vmemmap) + pfn * SIZE(page)`. Both go through the crashed kernel's
//! page tables ([`KernelVm`]).
//!
//! Never drop a page that should be kept:
//! - a class whose VMCOREINFO keys are missing is not excluded (the dump level in effect is
//!   lowered, and a warning says why);
//! - a `struct page` that cannot be read or does not look right (buddy order out of range or
//!   misaligned, a compound page whose order is 0, too large or misaligned, or whose tails do
//!   not point back at the head) is kept as [`PageClass::Unknown`] and counted in
//!   [`FilterStats`]. These checks are stricter than makedumpfile's, which trusts the order.
//!
//! Memory: one batch of [`BATCH_PAGES`] `struct page`s (16 KiB for 64-byte pages) and a few
//! words of state, whatever the size of RAM. Pages are read in batches and classified in pfn
//! order; a range (compound page, buddy block) that runs past the end of one
//! [`PageFilter::classify`] call carries over into the next.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::kdump::{DL_EXCLUDE_CACHE, DL_EXCLUDE_CACHE_PRI, DL_EXCLUDE_FREE, DL_EXCLUDE_USER_DATA};
use crate::vmcoreinfo::VmcoreInfo;
use crate::vtop::KernelVm;

/// `struct page`s read at a time.
pub const BATCH_PAGES: usize = 256;
/// The largest `SIZE(page)` believed.
const MAX_STRUCT_PAGE: u64 = 256;
/// The largest compound page order believed (a 1 GiB page of 4 KiB pages is order 18).
const MAX_COMPOUND_ORDER: u32 = 30;
/// `PAGE_MAPPING_ANON` (linux `include/linux/page-flags.h`).
const PAGE_MAPPING_ANON: u64 = 1;
/// `SECTION_MARKED_PRESENT` (linux `include/linux/mmzone.h`).
const SECTION_MARKED_PRESENT: u64 = 1;
/// Flag bits below the encoded mem_map in `section_mem_map`: the kernel guarantees the low 6
/// bits of the encoded pointer are free (`mmzone.h`, comment above the `SECTION_*` flags);
/// makedumpfile masks 5 (`SECTION_MAP_LAST_BIT`).
const SECTION_MAP_FLAGS: u64 = 0x3f;
/// Dump level bits decided from `struct page`.
const STRUCT_PAGE_LEVELS: u8 =
    (DL_EXCLUDE_CACHE | DL_EXCLUDE_CACHE_PRI | DL_EXCLUDE_USER_DATA | DL_EXCLUDE_FREE) as u8;
const CACHE: u8 = DL_EXCLUDE_CACHE as u8;
const CACHE_PRI: u8 = DL_EXCLUDE_CACHE_PRI as u8;
const USER: u8 = DL_EXCLUDE_USER_DATA as u8;
const FREE: u8 = DL_EXCLUDE_FREE as u8;

/// What the filter decided for one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageClass {
    /// Dumped.
    Keep,
    /// Excluded: page cache without private data (level bit 2).
    Cache,
    /// Excluded: page cache with private data (level bit 4).
    CachePrivate,
    /// Excluded: anonymous or hugetlbfs page of a user process (level bit 8).
    User,
    /// Excluded: free in the buddy allocator, or unaccepted (level bit 16).
    Free,
    /// Excluded: hardware-poisoned (always, when `struct page`s are read).
    HwPoison,
    /// Excluded: logically offline, e.g. a balloon page (always, when `struct page`s are read).
    Offline,
    /// Dumped: its `struct page` could not be read or does not look right.
    Unknown,
}

impl PageClass {
    pub const ALL: [PageClass; 8] = [
        PageClass::Keep,
        PageClass::Cache,
        PageClass::CachePrivate,
        PageClass::User,
        PageClass::Free,
        PageClass::HwPoison,
        PageClass::Offline,
        PageClass::Unknown,
    ];

    /// Whether the page is left out of the dump.
    pub fn is_excluded(self) -> bool {
        !matches!(self, PageClass::Keep | PageClass::Unknown)
    }

    /// Position in [`PageClass::ALL`], for counting.
    pub fn index(self) -> usize {
        self as usize
    }

    /// makedumpfile's name for the class, as in its report.
    pub fn name(self) -> &'static str {
        match self {
            PageClass::Keep => "kept",
            PageClass::Cache => "non-private cache",
            PageClass::CachePrivate => "private cache",
            PageClass::User => "user process data",
            PageClass::Free => "free",
            PageClass::HwPoison => "hwpoison",
            PageClass::Offline => "offline",
            PageClass::Unknown => "kept (unreadable or implausible struct page)",
        }
    }
}

/// Why the filter refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    /// makedumpfile dump levels are 0..=31.
    BadLevel(u8),
    /// The pfns asked for run past `max_pfn` (or the count overflows).
    OutOfRange { start_pfn: u64, count: u64, max_pfn: u64 },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::BadLevel(l) => {
                write!(f, "dump level {} is not a makedumpfile dump level (0..31)", l)
            }
            FilterError::OutOfRange { start_pfn, count, max_pfn } => write!(
                f,
                "pfns {:#x}+{:#x} run past the end of memory (max pfn {:#x})",
                start_pfn, count, max_pfn
            ),
        }
    }
}

/// Pages the filter kept because of what it found in their `struct page`s. Pages re-read
/// after [`PageFilter::classify`] goes back are counted again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// In a memory section without a `struct page` array ([`PageClass::Keep`]).
    pub no_struct_page: u64,
    /// `struct page` not readable, or its section's mem_map is not a kernel address.
    pub unreadable: u64,
    /// Buddy page whose order is out of range or whose pfn is not aligned to it.
    pub bad_buddy: u64,
    /// Compound head whose order is 0, too large or misaligned, or whose tails do not point
    /// back at it.
    pub bad_compound: u64,
    /// Compound tail whose head pointer is not a `struct page` before it.
    pub bad_tail: u64,
}

impl FilterStats {
    /// Pages classified [`PageClass::Unknown`].
    pub fn unknown(&self) -> u64 {
        self.unreadable + self.bad_buddy + self.bad_compound + self.bad_tail
    }
}

/// The raw `struct page` fields the filter looks at, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFields {
    /// Kernel virtual address of the `struct page`.
    pub va: u64,
    pub flags: u64,
    pub mapping: u64,
    /// `_mapcount` (the `page_type` word in recent kernels); 0 if VMCOREINFO has no offset.
    pub mapcount: u32,
    /// 0 if VMCOREINFO has no offset.
    pub private: u64,
    /// 0 if VMCOREINFO has no offset.
    pub compound_head: u64,
}

/// Byte offsets of the `struct page` fields, each checked to lie inside `SIZE(page)`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    size: u64,
    flags: usize,
    mapping: usize,
    mapcount: Option<usize>,
    private: Option<usize>,
    compound_head: Option<usize>,
}

impl Layout {
    fn from_info(info: &VmcoreInfo) -> Result<Self, String> {
        let size = info.size("page").ok_or("VMCOREINFO has no SIZE(page)")?;
        if !(8..=MAX_STRUCT_PAGE).contains(&size) {
            return Err(format!("SIZE(page)={} is not a struct page size", size));
        }
        let field = |name: &str, width: u64| {
            info.offset(name).filter(|&o| o.checked_add(width).is_some_and(|e| e <= size))
        };
        let flags = field("page.flags", 8).ok_or("VMCOREINFO has no usable OFFSET(page.flags)")?;
        let mapping =
            field("page.mapping", 8).ok_or("VMCOREINFO has no usable OFFSET(page.mapping)")?;
        Ok(Self {
            size,
            flags: flags as usize,
            mapping: mapping as usize,
            mapcount: field("page._mapcount", 4).map(|o| o as usize),
            private: field("page.private", 8).map(|o| o as usize),
            compound_head: field("page.compound_head", 8).map(|o| o as usize),
        })
    }

    fn fields(&self, b: &[u8], va: u64) -> PageFields {
        PageFields {
            va,
            flags: le64(b, self.flags),
            mapping: le64(b, self.mapping),
            mapcount: self.mapcount.map_or(0, |o| le32(b, o)),
            private: self.private.map_or(0, |o| le64(b, o)),
            compound_head: self.compound_head.map_or(0, |o| le64(b, o)),
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// A kernel (upper-half) virtual address, as makedumpfile's `is_kvaddr()` on 64-bit arches.
fn is_kvaddr(va: u64) -> bool {
    va >> 63 == 1
}

/// A one- or two-byte field of the second `struct page` of a compound page.
#[derive(Clone, Copy, Debug)]
struct SmallField {
    offset: usize,
    wide: bool,
}

impl SmallField {
    fn read(&self, b: &[u8]) -> u64 {
        if self.wide {
            u64::from(u16::from_le_bytes([b[self.offset], b[self.offset + 1]]))
        } else {
            u64::from(b[self.offset])
        }
    }
}

/// Where a compound page's order is.
#[derive(Clone, Copy, Debug)]
enum OrderSource {
    /// Unknown: compound pages are decided page by page, tails kept.
    None,
    /// Low byte of `page[1].flags` (Linux 6.6+).
    Flags1,
    /// `compound_order` / `folio._folio_order` in `page[1]`.
    Field(SmallField),
}

/// How a hugetlbfs compound page is recognised.
#[derive(Clone, Copy, Debug)]
enum HugetlbSource {
    None,
    /// The head's `_mapcount` (Linux 6.9+).
    HeadMapcount(u32),
    /// A bit in `page[1].flags` (`PG_hugetlb`, 6.6+).
    Flag1(u64),
    /// `compound_dtor` in `page[1]` equals `HUGETLB_PAGE_DTOR`.
    Dtor(SmallField, u64),
}

#[derive(Clone, Copy, Debug)]
enum BuddySource {
    None,
    /// `PG_buddy` (2.6.17 – 2.6.37).
    Flag(u64),
    /// `_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE` and not slab.
    Mapcount(u32),
}

/// The VMCOREINFO facts the decision chain uses; `None` where the kernel did not say.
#[derive(Clone, Copy, Debug)]
struct Rules {
    head_mask: u64,
    order: OrderSource,
    hugetlb: HugetlbSource,
    lru: Option<u64>,
    private: Option<u64>,
    swapcache: Option<u64>,
    swapbacked: Option<u64>,
    slab_flag: Option<u64>,
    slab_mapcount: Option<u32>,
    buddy: BuddySource,
    /// `LENGTH(zone.free_area)`: buddy orders are below it.
    free_orders: u32,
    unaccepted: Option<u32>,
    hwpoison: Option<u64>,
    offline: Option<u32>,
}

impl Rules {
    fn is_slab(&self, p: &PageFields) -> bool {
        self.slab_mapcount == Some(p.mapcount) || self.slab_flag.is_some_and(|b| p.flags & b != 0)
    }

    fn is_buddy(&self, p: &PageFields, slab: bool) -> bool {
        match self.buddy {
            BuddySource::None => false,
            BuddySource::Flag(b) => p.flags & b != 0,
            BuddySource::Mapcount(v) => !slab && p.mapcount == v,
        }
    }

    fn is_cache(&self, flags: u64) -> bool {
        if self.lru.is_some_and(|b| flags & b != 0) {
            return true;
        }
        let backed = self.swapbacked.is_none_or(|b| flags & b != 0);
        backed && self.swapcache.is_some_and(|b| flags & b != 0)
    }
}

/// Where the `struct page` arrays are.
#[derive(Clone, Copy, Debug)]
enum MemMap {
    /// `mem_section`: `roots` is the root array (SPARSEMEM_EXTREME: pointers to arrays of
    /// `per_root` sections) or the flat section array.
    Sparse {
        roots: u64,
        extreme: bool,
        per_root: u64,
        /// Number of roots (extreme) or of sections.
        count: u64,
        section_size: u64,
        map_offset: u64,
        pfn_shift: u32,
        /// `SIZE(page)`.
        struct_page: u64,
    },
    /// One virtually contiguous array at `SYMBOL(vmemmap)`.
    Vmemmap { base: u64 },
}

/// A memory section's `struct page` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Not present: no `struct page`s.
    Absent,
    /// Unreadable, or the mem_map is not a kernel address.
    Bad,
    /// The encoded mem_map: `struct page` of pfn `p` is at `coded + p * SIZE(page)`.
    Map(u64),
}

/// Why a `struct page` is not available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    Absent,
    Bad,
}

/// The `struct page`s of up to [`BATCH_PAGES`] consecutive pfns of one section.
struct Batch {
    start: u64,
    len: usize,
    va: u64,
    bytes: Vec<u8>,
    ok: [u64; BATCH_PAGES / 64],
}

/// Classifies pages like makedumpfile's dump levels; see the module documentation.
pub struct PageFilter<'a> {
    vm: &'a KernelVm<'a>,
    requested: u8,
    level: u8,
    walk: bool,
    max_pfn: u64,
    layout: Layout,
    memmap: MemMap,
    rules: Rules,
    section: Option<(u64, Section)>,
    batch: Batch,
    /// The pfn after the last one classified.
    next_pfn: u64,
    /// Pages `..end` (from an earlier head) are of this class.
    pending: Option<(u64, PageClass)>,
    /// After going back: tails whose head lies before this pfn look the head up.
    resolve_before: u64,
    resolving: bool,
    stats: FilterStats,
}

/// Collects the reasons the dump level is lowered.
struct Fallback {
    level: u8,
    warnings: Vec<String>,
}

impl Fallback {
    fn drop(&mut self, bits: u8, what: &str, why: &str) {
        if self.level & bits != 0 {
            self.level &= !bits;
            self.warnings.push(format!("page filter: {} are kept: {}", what, why));
        }
    }
}

fn kernel_version(info: &VmcoreInfo) -> Option<(u32, u32)> {
    let r = info.osrelease()?;
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

impl<'a> PageFilter<'a> {
    /// Prepares filtering at makedumpfile dump level `level` for pfns `0..max_pfn`.
    ///
    /// Lowers the level where VMCOREINFO lacks what a class needs; the warnings say what is
    /// kept and why, and end with the level in effect when it is not `level`. Nothing is read
    /// here except the `mem_section` roots (to tell their layout) and one `struct page`.
    pub fn new(
        info: &VmcoreInfo,
        vm: &'a KernelVm<'a>,
        level: u8,
        max_pfn: u64,
    ) -> Result<(Self, Vec<String>), FilterError> {
        if level > 31 {
            return Err(FilterError::BadLevel(level));
        }
        let mut fb = Fallback { level, warnings: Vec::new() };
        let num32 = |name: &str| info.number(name).map(|v| v as u32);
        let bit = |name: &str| info.number(name).filter(|n| (0..64).contains(n)).map(|n| 1u64 << n);

        let layout = Layout::from_info(info);
        let memmap = match &layout {
            Ok(l) => find_memmap(info, vm, l, max_pfn),
            Err(_) => Err(String::new()),
        };
        let have_pages = layout.is_ok() && memmap.is_ok();
        let (layout, memmap) = match (layout, memmap) {
            (Ok(l), Ok(m)) => (l, m),
            (Err(why), _) | (Ok(_), Err(why)) => {
                fb.drop(STRUCT_PAGE_LEVELS, "cache, user and free pages", &why);
                let placeholder = Layout {
                    size: 64,
                    flags: 0,
                    mapping: 0,
                    mapcount: None,
                    private: None,
                    compound_head: None,
                };
                (placeholder, MemMap::Vmemmap { base: 0 })
            }
        };
        let mapcount = layout.mapcount.is_some();

        // Compound pages.
        let head_mask = info.number("PG_head_mask").map_or(0, |v| v as u64);
        let version = kernel_version(info);
        let small = |key: &str, folio_key: &str| -> Option<SmallField> {
            let field = |off: u64, wide: bool| {
                let width = if wide { 2 } else { 1 };
                (off + width <= layout.size).then_some(SmallField { offset: off as usize, wide })
            };
            if let Some(o) = info.offset(folio_key) {
                return o.checked_sub(layout.size).and_then(|o| field(o, false));
            }
            let o = info.offset(key)?;
            match version {
                Some(v) if v < (4, 4) => None,
                Some(v) if v < (4, 16) => field(o, true),
                _ => field(o, false),
            }
        };
        let (order, hugetlb) =
            if let (Some(v), true) = (num32("PAGE_HUGETLB_MAPCOUNT_VALUE"), mapcount) {
                (OrderSource::Flags1, HugetlbSource::HeadMapcount(v))
            } else if let Some(b) = bit("PG_hugetlb") {
                (OrderSource::Flags1, HugetlbSource::Flag1(b))
            } else {
                let order = small("page.compound_order", "folio._folio_order")
                    .map_or(OrderSource::None, OrderSource::Field);
                let dtor = small("page.compound_dtor", "folio._folio_dtor");
                let hugetlb = match (dtor, info.number("HUGETLB_PAGE_DTOR")) {
                    (Some(f), Some(v)) => HugetlbSource::Dtor(f, v as u64),
                    _ => HugetlbSource::None,
                };
                (order, hugetlb)
            };
        let slab_flag = bit("PG_slab");
        let slab_mapcount = num32("PAGE_SLAB_MAPCOUNT_VALUE").filter(|_| mapcount);
        let slab_known = slab_flag.is_some() || slab_mapcount.is_some();
        let no_tails = "VMCOREINFO has no OFFSET(page.compound_head) (tail pages unknown)";

        // Free pages.
        let free_orders = info.length("zone.free_area").filter(|n| (1..=32).contains(n));
        let buddy = if let Some(b) = bit("PG_buddy") {
            BuddySource::Flag(b)
        } else {
            match num32("PAGE_BUDDY_MAPCOUNT_VALUE") {
                Some(v) if mapcount && slab_known => BuddySource::Mapcount(v),
                _ => BuddySource::None,
            }
        };
        if matches!(buddy, BuddySource::None) {
            fb.drop(
                FREE,
                "free pages",
                "VMCOREINFO has no NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) with OFFSET(page._mapcount) \
                 and NUMBER(PG_slab) or NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)",
            );
        } else if layout.private.is_none() {
            fb.drop(FREE, "free pages", "VMCOREINFO has no OFFSET(page.private) (buddy order)");
        } else if free_orders.is_none() {
            fb.drop(FREE, "free pages", "VMCOREINFO has no usable LENGTH(zone.free_area)");
        }

        // Cache pages.
        let lru = bit("PG_lru");
        let private = bit("PG_private");
        if lru.is_none() {
            fb.drop(CACHE | CACHE_PRI, "cache pages", "VMCOREINFO has no NUMBER(PG_lru)");
        } else if private.is_none() {
            fb.drop(CACHE | CACHE_PRI, "cache pages", "VMCOREINFO has no NUMBER(PG_private)");
        } else if layout.compound_head.is_none() {
            fb.drop(CACHE | CACHE_PRI, "cache pages", no_tails);
        }

        // User pages.
        if !slab_known {
            fb.drop(
                USER,
                "user process pages",
                "VMCOREINFO has neither NUMBER(PG_slab) nor NUMBER(PAGE_SLAB_MAPCOUNT_VALUE) \
                 (slab pages could look anonymous)",
            );
        } else if layout.compound_head.is_none() {
            fb.drop(USER, "user process pages", no_tails);
        }

        if head_mask == 0 || matches!(order, OrderSource::None) {
            // Heads are then decided alone and their tails kept: safe, but more is dumped.
            let why = if head_mask == 0 {
                "VMCOREINFO has no NUMBER(PG_head_mask)"
            } else {
                "VMCOREINFO has no compound page order offset this filter knows"
            };
            if fb.level & (CACHE | CACHE_PRI | USER) != 0 {
                fb.warnings.push(format!(
                    "page filter: compound pages are filtered by their head page only ({})",
                    why
                ));
            }
        }
        if matches!(hugetlb, HugetlbSource::None) && fb.level & USER != 0 {
            fb.warnings.push(String::from(
                "page filter: hugetlbfs pages are kept: VMCOREINFO does not say how to recognise them",
            ));
        }

        // As makedumpfile create_2nd_bitmap(): struct pages are read for levels 2/4/8/16, and
        // for hwpoison pages whenever the kernel has them.
        let walk = have_pages
            && (fb.level & STRUCT_PAGE_LEVELS != 0 || info.number("PG_hwpoison").is_some());
        let rules = Rules {
            head_mask,
            order,
            hugetlb,
            lru,
            private,
            swapcache: bit("PG_swapcache"),
            swapbacked: bit("PG_swapbacked"),
            slab_flag,
            slab_mapcount,
            buddy,
            free_orders: free_orders.unwrap_or(1) as u32,
            unaccepted: num32("PAGE_UNACCEPTED_MAPCOUNT_VALUE").filter(|_| mapcount),
            hwpoison: bit("PG_hwpoison"),
            offline: num32("PAGE_OFFLINE_MAPCOUNT_VALUE").filter(|_| mapcount && slab_known),
        };
        if fb.level != level {
            fb.warnings.push(format!(
                "page filter: dump level {} requested, {} in effect",
                level, fb.level
            ));
        }
        let batch = Batch {
            start: 0,
            len: 0,
            va: 0,
            bytes: if walk { vec![0; BATCH_PAGES * layout.size as usize] } else { Vec::new() },
            ok: [0; BATCH_PAGES / 64],
        };
        let filter = Self {
            vm,
            requested: level,
            level: fb.level,
            walk,
            max_pfn,
            layout,
            memmap,
            rules,
            section: None,
            batch,
            next_pfn: 0,
            pending: None,
            resolve_before: 0,
            resolving: false,
            stats: FilterStats::default(),
        };
        Ok((filter, fb.warnings))
    }

    /// The dump level in effect: the one asked for, less the classes VMCOREINFO cannot
    /// support (bit 1, zero pages, is passed through for the writer).
    pub fn effective_level(&self) -> u8 {
        self.level
    }

    /// The dump level asked for.
    pub fn requested_level(&self) -> u8 {
        self.requested
    }

    /// Whether [`Self::classify`] reads `struct page`s at all (otherwise every page is kept).
    pub fn reads_struct_pages(&self) -> bool {
        self.walk
    }

    /// What was kept because of doubtful `struct page`s so far.
    pub fn stats(&self) -> FilterStats {
        self.stats
    }

    /// Forgets where the last [`Self::classify`] call ended, for a second pass from pfn 0.
    pub fn reset(&mut self) {
        self.next_pfn = 0;
        self.pending = None;
        self.resolve_before = 0;
    }

    /// Classifies pfns `start_pfn .. start_pfn + out.len()` into `out`.
    ///
    /// Calls are meant to go forward through memory, as the dump writer does; pfns skipped
    /// between calls are holes (not examined, as makedumpfile skips pfns outside every
    /// `PT_LOAD`), but a range started before a hole still covers the pages after it. A call
    /// that goes back (or repeats pfns) re-reads from the start of the enclosing largest buddy
    /// block and looks compound heads up from their tails, so it gets the same answer.
    pub fn classify(&mut self, start_pfn: u64, out: &mut [PageClass]) -> Result<(), FilterError> {
        let count = out.len() as u64;
        let end = start_pfn
            .checked_add(count)
            .filter(|&e| e <= self.max_pfn)
            .ok_or(FilterError::OutOfRange { start_pfn, count, max_pfn: self.max_pfn })?;
        if !self.walk {
            out.fill(PageClass::Keep);
            self.next_pfn = end;
            return Ok(());
        }
        let mut pfn = start_pfn;
        if start_pfn < self.next_pfn {
            self.pending = None;
            let block =
                if self.level & FREE != 0 { 1u64 << (self.rules.free_orders - 1) } else { 1 };
            pfn = start_pfn & !(block - 1);
            self.resolve_before = pfn;
        }
        while pfn < end {
            if let Some((until, class)) = self.pending {
                if pfn < until {
                    let stop = until.min(end);
                    if stop > start_pfn {
                        let from = pfn.max(start_pfn);
                        out[(from - start_pfn) as usize..(stop - start_pfn) as usize].fill(class);
                    }
                    pfn = stop;
                    continue;
                }
                self.pending = None;
            }
            let saved = self.stats;
            let (class, pages) = self.examine(pfn);
            if pfn < start_pfn {
                // Re-read only to find where ranges start: counted when classified.
                self.stats = saved;
            }
            if pages > 1 {
                self.pending = Some((pfn.saturating_add(pages), class));
                continue;
            }
            if pfn >= start_pfn {
                out[(pfn - start_pfn) as usize] = class;
            }
            pfn += 1;
        }
        self.next_pfn = end;
        Ok(())
    }

    /// The `struct page` fields of `pfn`, or `None` if it has no readable `struct page`.
    pub fn page_fields(&mut self, pfn: u64) -> Option<PageFields> {
        let layout = self.layout;
        self.with_page(pfn, |b, va| layout.fields(b, va)).ok()
    }

    /// Decides `pfn` from its `struct page`: the class and how many pages from `pfn` on share
    /// it (more than one for a compound head or a buddy block).
    fn examine(&mut self, pfn: u64) -> (PageClass, u64) {
        let layout = self.layout;
        let rules = self.rules;
        let p = match self.with_page(pfn, |b, va| layout.fields(b, va)) {
            Ok(p) => p,
            Err(Miss::Absent) => {
                self.stats.no_struct_page += 1;
                return (PageClass::Keep, 1);
            }
            Err(Miss::Bad) => {
                self.stats.unreadable += 1;
                return (PageClass::Unknown, 1);
            }
        };
        if p.compound_head & 1 != 0 {
            return self.tail(pfn, &p);
        }
        let mut pages = 1u64;
        let mut hugetlb = false;
        if p.flags & rules.head_mask != 0 {
            match self.compound(pfn, &p) {
                Some((order, h)) => {
                    pages = 1 << order;
                    hugetlb = h;
                }
                None => {
                    self.stats.bad_compound += 1;
                    return (PageClass::Unknown, 1);
                }
            }
        }
        let level = self.level;
        let slab = rules.is_slab(&p);
        if level & FREE != 0 && rules.is_buddy(&p, slab) {
            let order = p.private;
            if order >= u64::from(rules.free_orders) || pfn & ((1 << order) - 1) != 0 {
                self.stats.bad_buddy += 1;
                return (PageClass::Unknown, 1);
            }
            return (PageClass::Free, 1 << order);
        }
        if level & FREE != 0 && rules.unaccepted == Some(p.mapcount) {
            let order = rules.free_orders - 1;
            if pfn & ((1 << order) - 1) != 0 {
                self.stats.bad_buddy += 1;
                return (PageClass::Unknown, 1);
            }
            return (PageClass::Free, 1 << order);
        }
        let anon = p.mapping & PAGE_MAPPING_ANON != 0 && !slab;
        let cache = rules.is_cache(p.flags);
        let private = rules.private.is_some_and(|b| p.flags & b != 0);
        let class = if level & CACHE != 0 && cache && !private && !anon {
            PageClass::Cache
        } else if level & CACHE_PRI != 0 && cache && !anon {
            if private {
                PageClass::CachePrivate
            } else {
                PageClass::Cache
            }
        } else if level & USER != 0 && (anon || hugetlb) {
            PageClass::User
        } else if rules.hwpoison.is_some_and(|b| p.flags & b != 0) {
            PageClass::HwPoison
        } else if rules.offline == Some(p.mapcount) && !slab {
            PageClass::Offline
        } else {
            PageClass::Keep
        };
        (class, pages)
    }

    /// A compound head's order and hugetlb mark, or `None` if the compound page does not
    /// look right.
    fn compound(&mut self, pfn: u64, head: &PageFields) -> Option<(u32, bool)> {
        let rules = self.rules;
        let flags_at = self.layout.flags;
        let chead_at = self.layout.compound_head;
        let (order, hugetlb, back) = self
            .with_page(pfn + 1, |b, _| {
                let flags1 = le64(b, flags_at);
                let order = match rules.order {
                    OrderSource::None => 0,
                    OrderSource::Flags1 => flags1 & 0xff,
                    OrderSource::Field(f) => f.read(b),
                };
                let hugetlb = match rules.hugetlb {
                    HugetlbSource::None => false,
                    HugetlbSource::HeadMapcount(v) => head.mapcount == v,
                    HugetlbSource::Flag1(bit) => flags1 & bit != 0,
                    HugetlbSource::Dtor(f, v) => f.read(b) == v,
                };
                (order, hugetlb, chead_at.map(|o| le64(b, o)))
            })
            .ok()?;
        if matches!(rules.order, OrderSource::None) {
            return Some((0, hugetlb));
        }
        let linked = |c: Option<u64>| c.is_none_or(|c| c == head.va | 1);
        if order == 0 || order > u64::from(MAX_COMPOUND_ORDER) || pfn & ((1 << order) - 1) != 0 {
            return None;
        }
        if !linked(back) {
            return None;
        }
        // The last tail (below max_pfn) must point back at the head too.
        let last = (pfn + (1 << order) - 1).min(self.max_pfn.saturating_sub(1));
        if last > pfn + 1 {
            let back = self.with_page(last, |b, _| chead_at.map(|o| le64(b, o))).ok()?;
            if !linked(back) {
                return None;
            }
        }
        Some((order as u32, hugetlb))
    }

    /// A compound tail: kept with its head, which was decided when it was read. After going
    /// back, a head before the re-read window is looked up through the tail's pointer.
    fn tail(&mut self, pfn: u64, p: &PageFields) -> (PageClass, u64) {
        let head_va = p.compound_head - 1;
        let size = self.layout.size;
        let back = p.va.wrapping_sub(head_va);
        if head_va >= p.va || !back.is_multiple_of(size) || back / size > 1 << MAX_COMPOUND_ORDER {
            self.stats.bad_tail += 1;
            return (PageClass::Unknown, 1);
        }
        let Some(head_pfn) = pfn.checked_sub(back / size) else {
            self.stats.bad_tail += 1;
            return (PageClass::Unknown, 1);
        };
        if head_pfn >= self.resolve_before || self.resolving {
            return (PageClass::Keep, 1);
        }
        // The head's own checks decide; their counts belong to the head, not to this tail.
        let saved = self.stats;
        self.resolving = true;
        let (class, pages) = self.examine(head_pfn);
        self.resolving = false;
        self.stats = saved;
        match head_pfn.checked_add(pages) {
            Some(end) if end > pfn && class != PageClass::Unknown => (class, end - pfn),
            _ => (PageClass::Keep, 1),
        }
    }

    /// Runs `f` on the `struct page` of `pfn` and its virtual address.
    fn with_page<R>(&mut self, pfn: u64, f: impl FnOnce(&[u8], u64) -> R) -> Result<R, Miss> {
        let b = &self.batch;
        if !(b.len > 0 && pfn >= b.start && pfn - b.start < b.len as u64) {
            self.load_batch(pfn)?;
        }
        let b = &self.batch;
        let i = (pfn - b.start) as usize;
        if b.ok[i / 64] & (1 << (i % 64)) == 0 {
            return Err(Miss::Bad);
        }
        let size = self.layout.size as usize;
        Ok(f(&b.bytes[i * size..(i + 1) * size], b.va.wrapping_add((i * size) as u64)))
    }

    /// Reads the batch of `struct page`s around `pfn` (aligned, within its section).
    fn load_batch(&mut self, pfn: u64) -> Result<(), Miss> {
        let (section, sec_start, sec_end) = self.section_of(pfn);
        let coded = match section {
            Section::Absent => return Err(Miss::Absent),
            Section::Bad => return Err(Miss::Bad),
            Section::Map(c) => c,
        };
        let aligned = pfn & !(BATCH_PAGES as u64 - 1);
        let start = aligned.max(sec_start);
        let end = aligned.saturating_add(BATCH_PAGES as u64).min(sec_end);
        let n = (end - start) as usize;
        let size = self.layout.size as usize;
        let b = &mut self.batch;
        b.start = start;
        b.len = n;
        b.va = coded.wrapping_add(start.wrapping_mul(size as u64));
        b.ok = [0; BATCH_PAGES / 64];
        let vm = self.vm;
        if vm.read(b.va, &mut b.bytes[..n * size]).is_ok() {
            for i in 0..n {
                b.ok[i / 64] |= 1 << (i % 64);
            }
        } else {
            // Part of the array is not mapped: one struct page at a time.
            for i in 0..n {
                let va = b.va.wrapping_add((i * size) as u64);
                if vm.read(va, &mut b.bytes[i * size..(i + 1) * size]).is_ok() {
                    b.ok[i / 64] |= 1 << (i % 64);
                }
            }
        }
        Ok(())
    }

    /// The section holding `pfn` and its pfn range.
    fn section_of(&mut self, pfn: u64) -> (Section, u64, u64) {
        let (shift, memmap) = match self.memmap {
            MemMap::Vmemmap { base } => return (Section::Map(base), 0, u64::MAX),
            m @ MemMap::Sparse { pfn_shift, .. } => (pfn_shift, m),
        };
        let nr = pfn >> shift;
        let start = nr << shift;
        let end = start.saturating_add(1 << shift);
        if let Some((cached, s)) = self.section {
            if cached == nr {
                return (s, start, end);
            }
        }
        let s = read_section(self.vm, &memmap, nr);
        self.section = Some((nr, s));
        (s, start, end)
    }
}

/// Reads section `nr` of a [`MemMap::Sparse`] (makedumpfile `nr_to_section()`,
/// `section_mem_map_addr()`, `sparse_decode_mem_map()`).
fn read_section(vm: &KernelVm, memmap: &MemMap, nr: u64) -> Section {
    let MemMap::Sparse {
        roots,
        extreme,
        per_root,
        count,
        section_size,
        map_offset,
        pfn_shift,
        struct_page,
    } = *memmap
    else {
        return Section::Bad;
    };
    let addr = if extreme {
        let root = nr / per_root;
        if root >= count {
            return Section::Absent;
        }
        let Ok(array) = vm.read_u64(roots.wrapping_add(root * 8)) else {
            return Section::Bad;
        };
        if array == 0 {
            return Section::Absent;
        }
        array.wrapping_add((nr % per_root) * section_size)
    } else {
        if nr >= count {
            return Section::Absent;
        }
        roots.wrapping_add(nr * section_size)
    };
    let Ok(map) = vm.read_u64(addr.wrapping_add(map_offset)) else {
        return Section::Bad;
    };
    if map & SECTION_MARKED_PRESENT == 0 {
        return Section::Absent;
    }
    let coded = map & !SECTION_MAP_FLAGS;
    // The section's mem_map (struct page of its first pfn) must be a kernel address.
    if !is_kvaddr(coded.wrapping_add((nr << pfn_shift).wrapping_mul(struct_page))) {
        return Section::Bad;
    }
    Section::Map(coded)
}

/// Finds the `struct page` arrays: `mem_section` as makedumpfile `get_mm_sparsemem()` reads
/// it, else `SYMBOL(vmemmap)`.
fn find_memmap(
    info: &VmcoreInfo,
    vm: &KernelVm,
    layout: &Layout,
    max_pfn: u64,
) -> Result<MemMap, String> {
    let sparse = match info.symbol("mem_section") {
        Some(sym) => sparse_memmap(info, vm, layout, sym, max_pfn),
        None => Err(String::from("VMCOREINFO has no SYMBOL(mem_section)")),
    };
    match (sparse, info.symbol("vmemmap")) {
        (Ok(m), _) => Ok(m),
        (Err(_), Some(base)) if is_kvaddr(base) => Ok(MemMap::Vmemmap { base }),
        (Err(why), Some(base)) => {
            Err(format!("{}, and SYMBOL(vmemmap)={:#x} is not a kernel address", why, base))
        }
        (Err(why), None) => Err(format!("{} and no SYMBOL(vmemmap)", why)),
    }
}

fn sparse_memmap(
    info: &VmcoreInfo,
    vm: &KernelVm,
    layout: &Layout,
    sym: u64,
    max_pfn: u64,
) -> Result<MemMap, String> {
    let need = |v: Option<u64>, key: &str| v.ok_or(format!("VMCOREINFO has no {}", key));
    let section_size = need(info.size("mem_section"), "SIZE(mem_section)")?;
    let map_offset =
        need(info.offset("mem_section.section_mem_map"), "OFFSET(mem_section.section_mem_map)")?;
    let page_size = need(info.page_size(), "PAGESIZE")?;
    let bits = need(
        info.number("SECTION_SIZE_BITS").and_then(|n| u64::try_from(n).ok()),
        "NUMBER(SECTION_SIZE_BITS)",
    )?;
    if !page_size.is_power_of_two() || section_size == 0 || section_size > page_size {
        return Err(format!(
            "PAGESIZE={} / SIZE(mem_section)={} are not usable",
            page_size, section_size
        ));
    }
    let page_shift = page_size.trailing_zeros() as u64;
    if bits <= page_shift || bits - page_shift > 40 || map_offset + 8 > section_size {
        return Err(format!("NUMBER(SECTION_SIZE_BITS)={} is not usable", bits));
    }
    let pfn_shift = (bits - page_shift) as u32;
    let per_root_extreme = page_size / section_size;
    // NR_MEM_SECTIONS from MAX_PHYSMEM_BITS, if given.
    let nr_sections = info
        .number("MAX_PHYSMEM_BITS")
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > bits && n - bits < 40)
        .map(|n| 1u64 << (n - bits));
    let length = info.length("mem_section");
    // makedumpfile is_sparsemem_extreme().
    let extreme = match (length, nr_sections) {
        (None, _) => true,
        (Some(l), Some(n)) => l == n.div_ceil(per_root_extreme),
        (Some(_), None) => false,
    };
    let struct_page = layout.size;
    let sections = max_pfn.div_ceil(1 << pfn_shift);
    let make = |roots: u64| {
        let (per_root, count) = if extreme {
            let count =
                length.or(nr_sections.map(|n| n.div_ceil(per_root_extreme))).unwrap_or(u64::MAX);
            (per_root_extreme, count)
        } else {
            (1, length.or(nr_sections).unwrap_or(u64::MAX))
        };
        MemMap::Sparse {
            roots,
            extreme,
            per_root,
            count,
            section_size,
            map_offset,
            pfn_shift,
            struct_page,
        }
    };
    // VMCOREINFO gives the root array; some kernels (and vmlinux) give a pointer to it.
    let direct = make(sym);
    if first_section_ok(vm, &direct, sections) {
        return Ok(direct);
    }
    if extreme {
        if let Ok(ptr) = vm.read_u64(sym) {
            let indirect = make(ptr);
            if first_section_ok(vm, &indirect, sections) {
                return Ok(indirect);
            }
        }
    }
    Err(format!("no usable memory section found through SYMBOL(mem_section)={:#x}", sym))
}

/// Whether the first present section below `sections` has a readable `struct page`.
fn first_section_ok(vm: &KernelVm, memmap: &MemMap, sections: u64) -> bool {
    let MemMap::Sparse { extreme, per_root, pfn_shift, struct_page, roots, .. } = *memmap else {
        return false;
    };
    let mut nr = 0;
    while nr < sections {
        if extreme && nr % per_root == 0 {
            // Skip whole roots that are not there.
            match vm.read_u64(roots.wrapping_add(nr / per_root * 8)) {
                Ok(0) => {
                    nr += per_root;
                    continue;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        match read_section(vm, memmap, nr) {
            Section::Absent => nr += 1,
            Section::Bad => return false,
            Section::Map(coded) => {
                let va = coded.wrapping_add((nr << pfn_shift).wrapping_mul(struct_page));
                return vm.read_u64(va).is_ok();
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elfcore::EM_X86_64;
    use crate::vtop::testutil::{PageMem, PageTables};
    use crate::vtop::X86_64_START_KERNEL_MAP;
    use alloc::string::ToString;
    use PageClass::*;

    /// Made-up but consistent memory: 5 sections of 1024 pfns (SECTION_SIZE_BITS 22), struct
    /// pages of 64 bytes in a vmemmap; section 2 is not present, the vmemmap page holding the
    /// struct pages of pfns 3072..3136 is not mapped, section 4's mem_map is not a kernel
    /// address.
    const MAX_PFN: u64 = 5 * 1024;
    const TOP_PA: u64 = 0x0700_0000;
    const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
    const SP_PA: u64 = 0x0100_0000;
    const DIRECT: u64 = 0xffff_8880_0000_0000;
    const ROOTS_PA: u64 = 0x0200_0000;
    const SECTIONS_PA: u64 = 0x0200_1000;
    const FLAT_PA: u64 = 0x0200_2000;
    const PTR_PA: u64 = 0x0200_3000;
    const UNMAPPED_PFNS: core::ops::Range<u64> = 3072..3136;

    const PG_LRU: u64 = 1 << 4;
    const PG_SLAB: u64 = 1 << 9;
    const PG_SWAPCACHE: u64 = 1 << 10;
    const PG_PRIVATE: u64 = 1 << 13;
    const PG_HEAD: u64 = 1 << 16;
    const PG_SWAPBACKED: u64 = 1 << 19;
    const PG_HWPOISON: u64 = 1 << 22;
    const PG_HUGETLB: u64 = 1 << 23;
    const BUDDY: u32 = -129i32 as u32;
    const OFFLINE: u32 = -257i32 as u32;
    /// Linux 6.12-style page types (PGTY_x << 24).
    const PGTY_BUDDY: u32 = 0xf0 << 24;
    const PGTY_OFFLINE: u32 = 0xf1 << 24;
    const PGTY_SLAB: u32 = 0xf5 << 24;
    const PGTY_HUGETLB: u32 = 0xf4 << 24;
    const PGTY_UNACCEPTED: u32 = 0xf7 << 24;
    const FILE_MAPPING: u64 = DIRECT + 0x0345_6780;
    const ANON_MAPPING: u64 = DIRECT + 0x0456_7801;

    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        /// Linux 6.1: PG_slab, -129/-257 mapcounts, compound_order/dtor bytes.
        V6_1,
        /// Linux 6.12: page types, order in page[1].flags, hugetlb by page type.
        V6_12,
    }

    struct Sim {
        mem: PageMem,
        info: Vec<String>,
        kernel: Kernel,
    }

    fn va(pfn: u64) -> u64 {
        VMEMMAP + pfn * 64
    }

    impl Sim {
        fn new(kernel: Kernel) -> Self {
            let mut mem = PageMem::default();
            let mut pt = PageTables::new(&mut mem, TOP_PA, 4, 0);
            for i in 0..MAX_PFN * 64 / 4096 {
                if i != UNMAPPED_PFNS.start * 64 / 4096 {
                    pt.map(&mut mem, VMEMMAP + i * 4096, SP_PA + i * 4096, 12);
                }
            }
            for pa in [ROOTS_PA, SECTIONS_PA, FLAT_PA, PTR_PA] {
                pt.map(&mut mem, DIRECT + pa, pa, 12);
                mem.write(pa, &[0u8; 4096]);
            }
            // Every struct page: flags 0, _mapcount -1 (a page in use, mapped nowhere).
            for pfn in 0..MAX_PFN {
                let mut sp = [0u8; 64];
                sp[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
                mem.write(SP_PA + pfn * 64, &sp);
            }
            // mem_section: root 0 → 256 sections; the same sections also as a flat array.
            mem.write_u64(ROOTS_PA, DIRECT + SECTIONS_PA);
            mem.write_u64(PTR_PA, DIRECT + ROOTS_PA);
            for nr in 0..5u64 {
                let map = match nr {
                    2 => 0,
                    4 => 0x1000 | 0xf,
                    _ => VMEMMAP | 0xf, // present, has mem_map, online, early
                };
                mem.write_u64(SECTIONS_PA + nr * 16, map);
                mem.write_u64(FLAT_PA + nr * 16, map);
            }
            let top_va = X86_64_START_KERNEL_MAP + TOP_PA;
            let mut info: Vec<String> = [
                "OSRELEASE=6.1.0-test".to_string(),
                "PAGESIZE=4096".to_string(),
                "NUMBER(phys_base)=0".to_string(),
                format!("SYMBOL(init_top_pgt)={:x}", top_va),
                format!("SYMBOL(mem_section)={:x}", DIRECT + ROOTS_PA),
                "LENGTH(mem_section)=65536".to_string(),
                "SIZE(mem_section)=16".to_string(),
                "OFFSET(mem_section.section_mem_map)=0".to_string(),
                "NUMBER(SECTION_SIZE_BITS)=22".to_string(),
                "NUMBER(MAX_PHYSMEM_BITS)=46".to_string(),
                "SIZE(page)=64".to_string(),
                "OFFSET(page.flags)=0".to_string(),
                "OFFSET(page._refcount)=52".to_string(),
                "OFFSET(page.mapping)=24".to_string(),
                "OFFSET(page.lru)=8".to_string(),
                "OFFSET(page._mapcount)=48".to_string(),
                "OFFSET(page.private)=40".to_string(),
                "OFFSET(page.compound_head)=8".to_string(),
                "LENGTH(zone.free_area)=11".to_string(),
                "NUMBER(PG_lru)=4".to_string(),
                "NUMBER(PG_private)=13".to_string(),
                "NUMBER(PG_swapcache)=10".to_string(),
                "NUMBER(PG_swapbacked)=19".to_string(),
                "NUMBER(PG_head_mask)=65536".to_string(),
                "NUMBER(PG_hwpoison)=22".to_string(),
            ]
            .into();
            let extra: &[&str] = match kernel {
                Kernel::V6_1 => &[
                    "OFFSET(page.compound_dtor)=16",
                    "OFFSET(page.compound_order)=17",
                    "NUMBER(PG_slab)=9",
                    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129",
                    "NUMBER(HUGETLB_PAGE_DTOR)=2",
                    "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257",
                ],
                Kernel::V6_12 => &[
                    "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=-184549376",
                    "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456",
                    "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=-201326592",
                    "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-251658240",
                    "NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)=-150994944",
                ],
            };
            info.extend(extra.iter().map(|s| s.to_string()));
            let mut sim = Sim { mem, info, kernel };
            sim.populate();
            sim
        }

        fn set(&mut self, key: &str, line: &str) {
            self.drop_key(key);
            self.info.push(line.to_string());
        }

        fn drop_key(&mut self, key: &str) {
            self.info.retain(|l| !l.starts_with(&format!("{}=", key)));
        }

        fn text(&self) -> String {
            let mut t = self.info.join("\n");
            t.push('\n');
            t
        }

        fn put64(&mut self, pfn: u64, off: u64, v: u64) {
            self.mem.write_u64(SP_PA + pfn * 64 + off, v);
        }

        fn put32(&mut self, pfn: u64, off: u64, v: u32) {
            self.mem.write(SP_PA + pfn * 64 + off, &v.to_le_bytes());
        }

        fn page(&mut self, pfn: u64, flags: u64, mapping: u64, mapcount: u32, private: u64) {
            self.put64(pfn, 0, flags);
            self.put64(pfn, 24, mapping);
            self.put32(pfn, 48, mapcount);
            self.put64(pfn, 40, private);
        }

        fn buddy(&mut self, pfn: u64, order: u64) {
            let v = if self.kernel == Kernel::V6_1 { BUDDY } else { PGTY_BUDDY };
            self.page(pfn, 0, 0, v, order);
        }

        /// A compound page: head flags/mapping, the order (and hugetlb mark) in page[1],
        /// every tail pointing back at the head.
        fn compound(&mut self, head: u64, order: u32, flags: u64, mapping: u64, hugetlb: bool) {
            let mapcount = match (self.kernel, hugetlb) {
                (Kernel::V6_12, true) => PGTY_HUGETLB,
                _ => u32::MAX,
            };
            self.page(head, flags | PG_HEAD, mapping, mapcount, 0);
            for t in head + 1..head + (1 << order) {
                self.page(t, 0, 0x400, u32::MAX, 0);
                self.put64(t, 8, va(head) | 1);
            }
            match self.kernel {
                Kernel::V6_1 => {
                    self.mem.write(SP_PA + (head + 1) * 64 + 17, &[order as u8]);
                    let dtor = if hugetlb { 2u8 } else { 1 };
                    self.mem.write(SP_PA + (head + 1) * 64 + 16, &[dtor]);
                }
                Kernel::V6_12 => self.put64(head + 1, 0, u64::from(order)),
            }
        }

        /// The expected class of every pfn at level 31 (`Keep` where not listed).
        fn populate(&mut self) {
            let (slab_flag, slab_mc, offline) = match self.kernel {
                Kernel::V6_1 => (PG_SLAB, u32::MAX, OFFLINE),
                Kernel::V6_12 => (0, PGTY_SLAB, PGTY_OFFLINE),
            };
            let buddy_mc = if self.kernel == Kernel::V6_1 { BUDDY } else { PGTY_BUDDY };
            self.page(10, PG_LRU, FILE_MAPPING, u32::MAX, 0);
            self.page(11, PG_LRU | PG_PRIVATE, FILE_MAPPING, u32::MAX, 0);
            self.page(12, PG_SWAPBACKED | PG_SWAPCACHE, 0, u32::MAX, 0);
            self.page(13, PG_SWAPCACHE, FILE_MAPPING, u32::MAX, 0); // owner_priv_1, not swap
            self.page(14, 0, ANON_MAPPING, 0, 0);
            self.page(15, PG_LRU | PG_SWAPBACKED, ANON_MAPPING, 0, 0);
            self.page(16, slab_flag, ANON_MAPPING, slab_mc, 0); // slab: mapping bit 0 is not anon
            if self.kernel == Kernel::V6_1 {
                self.page(17, PG_SLAB, 0, BUDDY, 3); // slab: _mapcount is slab data
            }
            self.page(18, PG_HWPOISON, 0, u32::MAX, 0);
            self.page(19, 0, 0, offline, 0);
            if self.kernel == Kernel::V6_1 {
                self.page(20, PG_SLAB, 0, OFFLINE, 0);
            }
            self.buddy(32, 3); // 32..40
            self.buddy(42, 2); // misaligned
            self.page(48, 0, 0, buddy_mc, 11); // order out of range
            self.compound(64, 2, PG_SWAPBACKED, ANON_MAPPING, false); // anon THP
            self.compound(72, 3, 0, FILE_MAPPING, true); // hugetlbfs
            self.compound(80, 2, slab_flag, 0, false); // slab, kept
            if self.kernel == Kernel::V6_12 {
                self.put32(80, 48, PGTY_SLAB);
            }
            self.compound(88, 2, PG_LRU, FILE_MAPPING, false);
            self.put64(89, 8, va(0) | 1); // page[1] points elsewhere
            self.compound(96, 1, PG_LRU, FILE_MAPPING, false);
            self.compound(100, 3, PG_LRU, FILE_MAPPING, false); // misaligned
            self.compound(112, 4, PG_LRU, FILE_MAPPING, false); // large folio in page cache
            self.compound(128, 3, PG_LRU, FILE_MAPPING, false);
            self.put64(135, 8, va(1) | 1); // last tail points elsewhere
            self.put64(140, 8, va(200) | 1); // a "tail" pointing forward
            if self.kernel == Kernel::V6_1 {
                self.buddy(1024, 10); // a whole section
            } else {
                self.page(1024, 0, 0, PGTY_UNACCEPTED, 0); // MAX_PAGE_ORDER: a whole section
            }
            self.buddy(3136, 6); // right after the unreadable struct pages
                                 // An order-0 "compound head" whose page[1] says order 0.
            self.page(96, PG_LRU | PG_HEAD, FILE_MAPPING, u32::MAX, 0);
            match self.kernel {
                Kernel::V6_1 => self.mem.write(SP_PA + 97 * 64 + 17, &[0]),
                Kernel::V6_12 => self.put64(97, 0, 0),
            }
        }

        fn expected31(&self) -> Vec<PageClass> {
            let mut e = vec![Keep; MAX_PFN as usize];
            let mut set = |r: core::ops::Range<u64>, c: PageClass| {
                e[r.start as usize..r.end as usize].fill(c)
            };
            set(10..11, Cache);
            set(11..12, CachePrivate);
            set(12..13, Cache);
            set(14..16, User);
            set(18..19, HwPoison);
            set(19..20, Offline);
            set(32..40, Free);
            set(42..43, Unknown);
            set(48..49, Unknown);
            set(64..68, User);
            set(72..80, User);
            set(88..89, Unknown);
            set(96..97, Unknown);
            set(100..101, Unknown);
            set(112..128, Cache);
            set(128..129, Unknown);
            set(140..141, Unknown);
            set(1024..2048, Free);
            set(UNMAPPED_PFNS, Unknown);
            set(3136..3200, Free);
            set(4096..5120, Unknown);
            e
        }
    }

    struct Run {
        classes: Vec<PageClass>,
        warnings: Vec<String>,
        level: u8,
        stats: FilterStats,
        walks: bool,
    }

    /// Classifies all pfns in calls of `chunks` (start, count), in that order.
    fn run_chunks(sim: &Sim, level: u8, chunks: &[(u64, u64)]) -> Run {
        let text = sim.text();
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &sim.mem, EM_X86_64).unwrap();
        let (mut f, warnings) = PageFilter::new(&vi, &vm, level, MAX_PFN).unwrap();
        assert!(f.batch.bytes.len() <= BATCH_PAGES * 64);
        let mut classes = vec![Keep; MAX_PFN as usize];
        for &(start, n) in chunks {
            f.classify(start, &mut classes[start as usize..(start + n) as usize]).unwrap();
        }
        Run {
            classes,
            warnings,
            level: f.effective_level(),
            stats: f.stats(),
            walks: f.reads_struct_pages(),
        }
    }

    fn run(sim: &Sim, level: u8) -> Run {
        run_chunks(sim, level, &[(0, MAX_PFN)])
    }

    /// The first differing pfn, for readable failures.
    fn first_diff(a: &[PageClass], b: &[PageClass]) -> Option<(usize, PageClass, PageClass)> {
        a.iter().zip(b).enumerate().find(|(_, (x, y))| x != y).map(|(i, (x, y))| (i, *x, *y))
    }

    #[test]
    fn every_class_linux_6_1() {
        let sim = Sim::new(Kernel::V6_1);
        let r = run(&sim, 31);
        assert_eq!(r.warnings, Vec::<String>::new());
        assert_eq!(r.level, 31);
        assert_eq!(first_diff(&r.classes, &sim.expected31()), None);
        assert_eq!(
            r.stats,
            FilterStats {
                no_struct_page: 1024,
                unreadable: 64 + 1024,
                bad_buddy: 2,
                bad_compound: 4,
                bad_tail: 1,
            }
        );
        assert_eq!(r.stats.unknown(), r.classes.iter().filter(|&&c| c == Unknown).count() as u64);
    }

    #[test]
    fn every_class_linux_6_12() {
        let sim = Sim::new(Kernel::V6_12);
        let r = run(&sim, 31);
        assert_eq!(r.warnings, Vec::<String>::new());
        assert_eq!(first_diff(&r.classes, &sim.expected31()), None);
    }

    #[test]
    fn pg_hugetlb_linux_6_6() {
        // 6.6 – 6.8: order in page[1].flags, PG_hugetlb in page[1].flags.
        let mut sim = Sim::new(Kernel::V6_12);
        sim.drop_key("NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)");
        sim.info.push("NUMBER(PG_hugetlb)=23".to_string());
        sim.put32(72, 48, u32::MAX);
        sim.put64(73, 0, 3 | PG_HUGETLB);
        let r = run(&sim, 31);
        assert_eq!(r.warnings, Vec::<String>::new());
        assert_eq!(first_diff(&r.classes, &sim.expected31()), None);
        // Without PG_hugetlb in page[1], the same (non-anonymous) pages are kept.
        sim.put64(73, 0, 3);
        assert!(run(&sim, 31).classes[72..80].iter().all(|&c| c == Keep));
    }

    #[test]
    fn each_level_excludes_only_its_classes() {
        let sim = Sim::new(Kernel::V6_1);
        let e31 = sim.expected31();
        for level in 0..=31u8 {
            let r = run(&sim, level);
            assert_eq!(r.level, level);
            for (pfn, (&got, &full)) in r.classes.iter().zip(&e31).enumerate() {
                let want = match full {
                    Cache if pfn == 12 || pfn == 10 || (112..128).contains(&pfn) => {
                        if level & 6 != 0 {
                            Cache
                        } else {
                            Keep
                        }
                    }
                    CachePrivate if level & 4 != 0 => CachePrivate,
                    User if level & 8 != 0 => User,
                    // pfn 15 is anonymous and on the LRU: user data, never cache.
                    Free if level & 16 != 0 => Free,
                    // Bad buddy orders are only looked at when free pages are filtered.
                    Unknown if pfn == 42 || pfn == 48 => {
                        if level & 16 != 0 {
                            Unknown
                        } else {
                            Keep
                        }
                    }
                    // PG_hwpoison is known, so struct pages are read at every level.
                    HwPoison | Offline | Unknown => full,
                    _ => Keep,
                };
                assert_eq!(got, want, "level {} pfn {}", level, pfn);
            }
        }
    }

    #[test]
    fn levels_0_and_1_without_hwpoison_read_nothing() {
        let mut sim = Sim::new(Kernel::V6_1);
        sim.drop_key("NUMBER(PG_hwpoison)");
        for level in [0, 1] {
            let r = run(&sim, level);
            assert!(!r.walks);
            assert!(r.classes.iter().all(|&c| c == Keep));
            assert_eq!(r.level, level);
        }
        assert!(run(&sim, 2).walks);
    }

    #[test]
    fn chunked_and_backward_calls_agree() {
        let sim = Sim::new(Kernel::V6_1);
        let whole = run(&sim, 31).classes;
        for size in [1u64, 3, 100, 256, 1000] {
            let mut chunks: Vec<(u64, u64)> = (0..MAX_PFN.div_ceil(size))
                .map(|i| (i * size, size.min(MAX_PFN - i * size)))
                .collect();
            let fwd = run_chunks(&sim, 31, &chunks).classes;
            assert_eq!(first_diff(&fwd, &whole), None, "chunks of {}", size);
            if size > 1 {
                // Every call goes back (slow with single pages: each re-reads up to 1023).
                chunks.reverse();
                let back = run_chunks(&sim, 31, &chunks).classes;
                assert_eq!(first_diff(&back, &whole), None, "chunks of {}, last first", size);
            }
        }
        // Going back into the middle of a buddy block and of compound pages.
        let r = run_chunks(&sim, 31, &[(2000, 10), (1500, 3), (200, 10), (114, 1), (66, 4)]);
        assert_eq!(&r.classes[66..70], &[User, User, Keep, Keep]);
        assert_eq!(&r.classes[1500..1503], &[Free; 3]);
        assert_eq!(r.classes[114], Cache);
    }

    #[test]
    fn ranges_carry_over_holes_and_calls() {
        let sim = Sim::new(Kernel::V6_1);
        // Classify 32..34 then 36..38: the buddy block started at 32 covers the later call.
        let r = run_chunks(&sim, 31, &[(32, 2), (36, 2), (1024, 1), (2000, 48)]);
        assert_eq!(&r.classes[32..38], &[Free, Free, Keep, Keep, Free, Free]);
        assert_eq!(&r.classes[2000..2048], &[Free; 48]);
        // A first call inside a block whose head was never read (a hole before it): kept, as
        // makedumpfile does for pfns outside every PT_LOAD.
        let r = run_chunks(&sim, 31, &[(1030, 2)]);
        assert_eq!(&r.classes[1030..1032], &[Keep, Keep]);
    }

    #[test]
    fn layouts_of_mem_section_and_vmemmap() {
        let base = Sim::new(Kernel::V6_1);
        let want = run(&base, 31).classes;
        // Not SPARSEMEM_EXTREME: a flat array of sections.
        let mut flat = Sim::new(Kernel::V6_1);
        flat.set("SYMBOL(mem_section)", &format!("SYMBOL(mem_section)={:x}", DIRECT + FLAT_PA));
        flat.set("LENGTH(mem_section)", "LENGTH(mem_section)=5");
        assert_eq!(first_diff(&run(&flat, 31).classes, &want), None);
        // SYMBOL(mem_section) naming a pointer to the root array.
        let mut ptr = Sim::new(Kernel::V6_1);
        ptr.set("SYMBOL(mem_section)", &format!("SYMBOL(mem_section)={:x}", DIRECT + PTR_PA));
        assert_eq!(first_diff(&run(&ptr, 31).classes, &want), None);
        // No mem_section: SYMBOL(vmemmap). Section 2's struct pages are then read (all
        // plain pages here), and section 4's through the vmemmap too.
        let mut vm = Sim::new(Kernel::V6_1);
        vm.drop_key("SYMBOL(mem_section)");
        vm.info.push(format!("SYMBOL(vmemmap)={:x}", VMEMMAP));
        let r = run(&vm, 31);
        assert_eq!(r.warnings, Vec::<String>::new());
        assert_eq!(first_diff(&r.classes[..4096], &want[..4096]), None);
        assert!(r.classes[4096..].iter().all(|&c| c == Keep));
    }

    #[test]
    fn missing_keys_lower_the_level() {
        let cases: &[(&[&str], u8, &str)] = &[
            (&["NUMBER(PG_lru)"], 31 & !6, "NUMBER(PG_lru)"),
            (&["NUMBER(PG_private)"], 31 & !6, "NUMBER(PG_private)"),
            (&["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"], 15, "PAGE_BUDDY_MAPCOUNT_VALUE"),
            (&["OFFSET(page.private)"], 15, "OFFSET(page.private)"),
            (&["LENGTH(zone.free_area)"], 15, "LENGTH(zone.free_area)"),
            (&["OFFSET(page._mapcount)"], 15, "PAGE_BUDDY_MAPCOUNT_VALUE"),
            (&["NUMBER(PG_slab)"], 7, "NUMBER(PG_slab)"),
            (&["OFFSET(page.compound_head)"], 17, "OFFSET(page.compound_head)"),
            (&["SIZE(page)"], 1, "SIZE(page)"),
            (&["OFFSET(page.mapping)"], 1, "OFFSET(page.mapping)"),
            (&["SYMBOL(mem_section)"], 1, "SYMBOL(vmemmap)"),
            (&["NUMBER(SECTION_SIZE_BITS)"], 1, "SECTION_SIZE_BITS"),
        ];
        let full = Sim::new(Kernel::V6_1).expected31();
        for &(keys, level, text) in cases {
            let mut sim = Sim::new(Kernel::V6_1);
            for k in keys {
                sim.drop_key(k);
            }
            let r = run(&sim, 31);
            assert_eq!(r.level, level, "without {:?}", keys);
            assert!(r.warnings.iter().any(|w| w.contains(text)), "{:?}: {:?}", keys, r.warnings);
            assert!(
                r.warnings.last().unwrap().contains(&format!("31 requested, {} in effect", level)),
                "{:?}",
                r.warnings
            );
            // Whatever is lost, nothing is excluded that level 31 with every key would keep,
            // and every exclusion is one the lower level allows.
            for (pfn, (&got, &f)) in r.classes.iter().zip(&full).enumerate() {
                if got.is_excluded() {
                    assert_eq!(got, f, "without {:?}: pfn {}", keys, pfn);
                    let bit = match got {
                        Cache => 6,
                        CachePrivate => 4,
                        User => 8,
                        Free => 16,
                        _ => 31,
                    };
                    assert!(level & bit != 0 || bit == 31, "without {:?}: pfn {}", keys, pfn);
                }
            }
        }
    }

    #[test]
    fn missing_compound_keys_filter_heads_alone() {
        let mut sim = Sim::new(Kernel::V6_1);
        sim.drop_key("NUMBER(PG_head_mask)");
        let r = run(&sim, 31);
        assert_eq!(r.level, 31);
        assert!(r.warnings.iter().any(|w| w.contains("head page only")), "{:?}", r.warnings);
        assert_eq!(&r.classes[64..68], &[User, Keep, Keep, Keep]);
        // Without the dtor, hugetlbfs pages (not anonymous) are kept.
        let mut sim = Sim::new(Kernel::V6_1);
        sim.drop_key("NUMBER(HUGETLB_PAGE_DTOR)");
        let r = run(&sim, 31);
        assert!(r.warnings.iter().any(|w| w.contains("hugetlbfs")), "{:?}", r.warnings);
        assert!(r.classes[72..80].iter().all(|&c| c == Keep));
        assert_eq!(&r.classes[64..68], &[User; 4]);
        // Kernels before 4.16 keep the order in 16 bits.
        let mut sim = Sim::new(Kernel::V6_1);
        sim.set("OSRELEASE", "OSRELEASE=4.9.0");
        sim.mem.write(SP_PA + 65 * 64 + 18, &[0]);
        assert_eq!(&run(&sim, 31).classes[64..68], &[User; 4]);
    }

    #[test]
    fn errors() {
        let sim = Sim::new(Kernel::V6_1);
        let text = sim.text();
        let vi = VmcoreInfo::new(text.as_bytes());
        let vm = KernelVm::new(&vi, &sim.mem, EM_X86_64).unwrap();
        assert_eq!(PageFilter::new(&vi, &vm, 32, MAX_PFN).err(), Some(FilterError::BadLevel(32)));
        let (mut f, _) = PageFilter::new(&vi, &vm, 31, MAX_PFN).unwrap();
        let mut out = [Keep; 2];
        assert_eq!(
            f.classify(MAX_PFN - 1, &mut out),
            Err(FilterError::OutOfRange { start_pfn: MAX_PFN - 1, count: 2, max_pfn: MAX_PFN })
        );
        assert!(f.classify(u64::MAX, &mut out).is_err());
        assert_eq!(f.classify(MAX_PFN - 2, &mut out), Ok(()));
        assert_eq!(f.classify(MAX_PFN, &mut []), Ok(()));
        let p = f.page_fields(14).unwrap();
        assert_eq!((p.va, p.mapping, p.mapcount), (va(14), ANON_MAPPING, 0));
        assert_eq!(f.page_fields(2100), None);
        assert!(FilterError::BadLevel(40).to_string().contains("0..31"));
    }

    #[test]
    fn garbage_struct_pages_never_escape_their_checks() {
        let mut sim = Sim::new(Kernel::V6_1);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for pfn in 0..MAX_PFN {
            let mut sp = [0u8; 64];
            for c in sp.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            // Bias some words toward the values the filter looks for.
            match next() % 6 {
                0 => sp[48..52].copy_from_slice(&BUDDY.to_le_bytes()),
                1 => sp[0..8].copy_from_slice(&(PG_HEAD | (next() % 4)).to_le_bytes()),
                2 => sp[8..16]
                    .copy_from_slice(&(va(pfn.saturating_sub(next() % 8)) | 1).to_le_bytes()),
                _ => {}
            }
            sim.mem.write(SP_PA + pfn * 64, &sp);
        }
        let r = run(&sim, 31);
        let free = r.classes.iter().filter(|&&c| c == Free).count();
        // Every free range starts at a struct page that says buddy with a sane order.
        let mut pfn = 0;
        while pfn < MAX_PFN as usize {
            if r.classes[pfn] == Free {
                let mut sp = [0u8; 64];
                crate::phys::PhysRead::read(&sim.mem, SP_PA + pfn as u64 * 64, &mut sp).unwrap();
                assert_eq!(le32(&sp, 48), BUDDY, "pfn {}", pfn);
                let order = le64(&sp, 40);
                assert!(order < 11 && pfn % (1 << order) == 0);
                pfn += 1 << order;
            } else {
                pfn += 1;
            }
        }
        assert!(r.stats.unknown() > 0);
        let _ = free;
        // And chunked reading agrees even on garbage.
        let chunks: Vec<(u64, u64)> =
            (0..MAX_PFN / 97 + 1).rev().map(|i| (i * 97, 97.min(MAX_PFN - i * 97))).collect();
        assert_eq!(first_diff(&run_chunks(&sim, 31, &chunks).classes, &r.classes), None);
    }
}
