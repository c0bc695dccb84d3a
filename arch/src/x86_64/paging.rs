//! lifeboat's own page tables: an identity map of its image (read-write, 4 KiB pages, with an
//! unmapped guard page under the stack) and, read-only and on demand, of the old memory it
//! dumps (1 GiB pages where the CPU has them, else 2 MiB; 4 KiB only next to our own memory).
//! Page-table frames come from a fixed pool inside the image. With 2 MiB pages one 4 KiB page
//! directory maps 1 GiB; at most [`OLD_PDS`] of them map old memory at a time, the oldest
//! being recycled for the next GiB (the dump reads memory mostly in address order), so the
//! page tables do not grow with the crashed machine's RAM.

use core::ptr::addr_of_mut;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const GIB1: u64 = 1 << 30;

/// Frames for page tables. 96 × 4 KiB: the PML4, the tables of our own image and the device
/// window, the [`OLD_PDS`] recycled page directories, and one PDPT per 512 GiB of old memory.
pub const POOL_FRAMES: usize = 96;
/// Page directories (1 GiB of old memory each, with 2 MiB pages) mapped at once on CPUs
/// without 1 GiB pages; the oldest is recycled when another GiB is needed.
pub const OLD_PDS: usize = 32;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut POOL: [Table; POOL_FRAMES] = [const { Table([0; 512]) }; POOL_FRAMES];

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The page-table pool is used up.
    PoolExhausted,
    /// Beyond what a 4-level identity map reaches (128 TiB).
    TooHigh(u64),
    /// Device registers claimed inside lifeboat's own memory.
    OwnMemory(u64),
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::PoolExhausted => write!(
                f,
                "out of page-table frames ({} KiB pool): too much old memory to map with 2 MiB pages",
                POOL_FRAMES * 4
            ),
            PagingError::TooHigh(a) => write!(f, "address {:#x} is beyond the 128 TiB identity map", a),
            PagingError::OwnMemory(a) => write!(f, "device registers at {:#x} overlap lifeboat's own memory", a),
        }
    }
}

/// Highest address (exclusive) the identity map can cover.
pub const IDENTITY_LIMIT: u64 = 1 << 47;

/// Device registers (PCI BARs) are mapped uncached at `DEVICE_WINDOW + physical address`,
/// in the upper half, so they never share a (cached, read-only) huge page of the identity
/// map of old memory.
pub const DEVICE_WINDOW: u64 = 0xffff_8000_0000_0000;

pub struct AddressSpace {
    pml4: *mut [u64; 512],
    used: usize,
    own_start: u64,
    own_end: u64,
    guard: u64,
    gib_pages: bool,
    /// The last region `map_readonly` found fully mapped: a cheap cache for page-by-page reads.
    last_ok: (u64, u64),
    /// Page directories that map only old memory: (the PDPT entry that points to it, the
    /// directory), in the order they were made; `old_next` is the next one to recycle.
    old_pds: [(*mut u64, *mut [u64; 512]); OLD_PDS],
    old_count: usize,
    old_next: usize,
    /// Page directories recycled so far.
    recycled: u64,
}

// SAFETY: only ever used on the one CPU lifeboat runs on, behind a lock.
unsafe impl Send for AddressSpace {}

impl AddressSpace {
    /// Build tables that identity-map `[own_start, own_end)` read-write except the 4 KiB
    /// `guard` page. Not active until [`AddressSpace::activate`].
    pub fn new(own_start: u64, own_end: u64, guard: u64, gib_pages: bool) -> Result<Self, PagingError> {
        let mut s = AddressSpace {
            pml4: core::ptr::null_mut(),
            used: 0,
            own_start: own_start & !(KIB4 - 1),
            own_end: (own_end + KIB4 - 1) & !(KIB4 - 1),
            guard,
            gib_pages,
            last_ok: (0, 0),
            old_pds: [(core::ptr::null_mut(), core::ptr::null_mut()); OLD_PDS],
            old_count: 0,
            old_next: 0,
            recycled: 0,
        };
        s.pml4 = s.alloc()?;
        let mut page = s.own_start;
        while page < s.own_end {
            if page != guard {
                let pt = s.table_for_4k(page)?;
                // SAFETY: `pt` is one of our pool frames, identity-mapped.
                unsafe { (*pt)[idx(page, 0)] = page | PRESENT | WRITABLE };
            }
            page += KIB4;
        }
        Ok(s)
    }

    /// RAM ranges matter only for arm64's choice of block sizes: on x86 the MTRRs give device
    /// ranges their uncached type whatever the page tables say. Kept for the shared interface.
    pub fn add_ram(&mut self, _start: u64, _end: u64) {}

    /// Frames of the pool used so far.
    pub fn frames_used(&self) -> usize {
        self.used
    }

    /// Page directories of old memory recycled so far (0 when RAM fits [`OLD_PDS`] GiB or the
    /// CPU has 1 GiB pages).
    pub fn recycled(&self) -> u64 {
        self.recycled
    }

    /// A page directory for the GiB of old memory under PDPT entry `slot`: a new frame while
    /// fewer than [`OLD_PDS`] exist, else the oldest one, unmapped from where it was.
    fn old_pd(&mut self, slot: *mut u64) -> Result<*mut [u64; 512], PagingError> {
        let pd = if self.old_count < OLD_PDS {
            let pd = self.alloc()?;
            self.old_count += 1;
            pd
        } else {
            let (old_slot, pd) = self.old_pds[self.old_next];
            // SAFETY: `old_slot` is an entry of one of our PDPT frames and `pd` a pool frame;
            // the PDPT entry is cleared, then every translation is flushed (CR3 reload) before
            // the frame is reused, so no stale mapping of the old GiB survives.
            unsafe {
                *old_slot = 0;
                core::arch::asm!("mov %cr3, {0}", "mov {0}, %cr3", out(reg) _, options(att_syntax, nostack));
                (*pd).fill(0);
            }
            self.recycled += 1;
            self.last_ok = (0, 0);
            pd
        };
        self.old_pds[self.old_next] = (slot, pd);
        self.old_next = (self.old_next + 1) % OLD_PDS;
        // SAFETY: `slot` is an entry of one of our PDPT frames.
        unsafe { *slot = pd as u64 | PRESENT | WRITABLE };
        Ok(pd)
    }

    /// Load CR3 with these tables.
    ///
    /// # Safety
    /// The code, stack and data in use must lie inside the own range given to `new`
    /// (everything else becomes unmapped until `map_readonly`).
    pub unsafe fn activate(&self) {
        // SAFETY: per the caller's contract, everything in use stays mapped.
        unsafe {
            core::arch::asm!("mov {}, %cr3", in(reg) self.pml4 as u64, options(att_syntax, nostack));
        }
    }

    fn alloc(&mut self) -> Result<*mut [u64; 512], PagingError> {
        if self.used == POOL_FRAMES {
            return Err(PagingError::PoolExhausted);
        }
        // SAFETY: each pool frame is handed out once; the pool is in our zeroed bss.
        let t = unsafe { addr_of_mut!(POOL[self.used].0) };
        self.used += 1;
        Ok(t)
    }

    /// The next-level table under `entry`, creating it if absent. `None` if the entry is a
    /// huge page.
    fn next(&mut self, table: *mut [u64; 512], i: usize) -> Result<Option<*mut [u64; 512]>, PagingError> {
        // SAFETY: `table` is a pool frame (identity-mapped, ours).
        let e = unsafe { (*table)[i] };
        if e & PRESENT == 0 {
            let t = self.alloc()?;
            // SAFETY: as above; intermediate entries are writable, leaves decide access.
            unsafe { (*table)[i] = t as u64 | PRESENT | WRITABLE };
            return Ok(Some(t));
        }
        if e & HUGE != 0 {
            return Ok(None);
        }
        Ok(Some((e & ADDR_MASK) as *mut [u64; 512]))
    }

    fn table_for_4k(&mut self, addr: u64) -> Result<*mut [u64; 512], PagingError> {
        let pdpt = self.next(self.pml4, idx(addr, 3))?.ok_or(PagingError::PoolExhausted)?;
        let pd = self.next(pdpt, idx(addr, 2))?.ok_or(PagingError::PoolExhausted)?;
        self.next(pd, idx(addr, 1))?.ok_or(PagingError::PoolExhausted)
    }

    fn touches_own(&self, start: u64, end: u64) -> bool {
        start < self.own_end && self.own_start < end
    }

    /// Identity-map `[start, end)` read-only, unless already mapped. Our own memory keeps its
    /// read-write mapping (callers refuse reads of it before they get here).
    pub fn map_readonly(&mut self, start: u64, end: u64) -> Result<(), PagingError> {
        if start >= self.last_ok.0 && end <= self.last_ok.1 {
            return Ok(());
        }
        if end > IDENTITY_LIMIT {
            return Err(PagingError::TooHigh(end));
        }
        let mut a = start & !(KIB4 - 1);
        while a < end {
            let g = a & !(GIB1 - 1);
            let pdpt = self.next(self.pml4, idx(a, 3))?.ok_or(PagingError::PoolExhausted)?;
            // SAFETY: pool frame.
            let e3 = unsafe { (*pdpt)[idx(a, 2)] };
            if e3 & PRESENT == 0 && self.gib_pages && !self.touches_own(g, g + GIB1) {
                // SAFETY: pool frame; read-only 1 GiB leaf.
                unsafe { (*pdpt)[idx(a, 2)] = g | PRESENT | HUGE };
                a = g + GIB1;
                continue;
            }
            let pd = if e3 & PRESENT == 0 && !self.touches_own(g, g + GIB1) {
                // SAFETY: an entry of a pool frame.
                self.old_pd(unsafe { &mut (*pdpt)[idx(a, 2)] as *mut u64 })?
            } else {
                let Some(pd) = self.next(pdpt, idx(a, 2))? else {
                    a = g + GIB1;
                    continue;
                };
                pd
            };
            let m = a & !(MIB2 - 1);
            // SAFETY: pool frame.
            let e2 = unsafe { (*pd)[idx(a, 1)] };
            if e2 & PRESENT == 0 && !self.touches_own(m, m + MIB2) {
                // SAFETY: pool frame; read-only 2 MiB leaf.
                unsafe { (*pd)[idx(a, 1)] = m | PRESENT | HUGE };
                a = m + MIB2;
                continue;
            }
            let Some(pt) = self.next(pd, idx(a, 1))? else {
                a = m + MIB2;
                continue;
            };
            // SAFETY: pool frame.
            let e1 = unsafe { (*pt)[idx(a, 0)] };
            if e1 & PRESENT == 0 && !self.touches_own(a, a + KIB4) && a != self.guard {
                // SAFETY: pool frame; read-only 4 KiB leaf next to our own memory.
                unsafe { (*pt)[idx(a, 0)] = a | PRESENT };
            }
            a += KIB4;
        }
        let (rs, re) = (start & !(MIB2 - 1), end.saturating_add(MIB2 - 1) & !(MIB2 - 1));
        self.last_ok = if self.touches_own(rs, re) { (start, end) } else { (rs, re) };
        Ok(())
    }
}

impl AddressSpace {
    /// Map device registers `[paddr, paddr + len)` read-write and uncached at
    /// `DEVICE_WINDOW + paddr`; returns that virtual address. Refuses our own memory.
    pub fn map_device(&mut self, paddr: u64, len: u64) -> Result<u64, PagingError> {
        let end = paddr.checked_add(len).ok_or(PagingError::TooHigh(paddr))?;
        if end > IDENTITY_LIMIT {
            return Err(PagingError::TooHigh(end));
        }
        if self.touches_own(paddr, end) {
            return Err(PagingError::OwnMemory(paddr));
        }
        let mut a = paddr & !(KIB4 - 1);
        while a < end {
            let va = DEVICE_WINDOW + a;
            let pt = self.table_for_4k(va)?;
            // SAFETY: pool frame; a 4 KiB uncached read-write leaf for device registers.
            unsafe { (*pt)[idx(va, 0)] = a | PRESENT | WRITABLE | CACHE_DISABLE | WRITE_THROUGH };
            // SAFETY: invalidate any stale translation of this page.
            unsafe { core::arch::asm!("invlpg ({})", in(reg) va, options(att_syntax, nostack)) };
            a += KIB4;
        }
        Ok(DEVICE_WINDOW + paddr)
    }
}

fn idx(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * level)) & 511) as usize
}
