//! Our own page tables (4 KiB granule, 48-bit addresses, TTBR0_EL1 only).
//!
//! - lifeboat's image (code, data, bss, stack, heap) is identity-mapped read-write in 4 KiB
//!   pages, except the guard page below the stack, which stays unmapped;
//! - old memory is identity-mapped read-only on demand ([`AddressSpace::map_readonly`]), as
//!   normal cacheable memory: in 1 GiB blocks where the block is RAM and does not touch our
//!   image, else 2 MiB blocks under the same rule, else pages. A block is never larger than
//!   the RAM around it ([`AddressSpace::add_ram`]): a cacheable mapping of device registers
//!   next to RAM would let the CPU read them speculatively, which some SoCs do not survive.
//!   Our image's tables are built at the start, so a block is never split later (no
//!   break-before-make is ever needed: entries only go from invalid to valid);
//! - device registers are mapped Device-nGnRE at `DEVICE_WINDOW + physical address`, in
//!   2 MiB blocks, so they never share a block with the (cacheable, read-only) map of old
//!   memory.
//!
//! Tables come from a fixed pool in our bss: 1 GiB blocks make a machine's whole RAM cost
//! one level-1 table per 512 GiB, so the pool does not grow with the crashed machine.

use aarch64_cpu::registers::{Writeable, MAIR_EL1, SCTLR_EL1, TCR_EL1, TTBR0_EL1};
use core::ptr::addr_of_mut;

const KIB4: u64 = 4096;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// Page-table frames in the pool.
pub const POOL_FRAMES: usize = 64;

/// Highest address (exclusive) the identity map covers (the lower half of the 48-bit space).
pub const IDENTITY_LIMIT: u64 = 1 << 47;

/// Device registers are mapped at `DEVICE_WINDOW + physical address` (upper half of TTBR0).
pub const DEVICE_WINDOW: u64 = 1 << 47;

/// Memory attribute indices in MAIR_EL1.
const ATTR_NORMAL: u64 = 0; // 0xff: normal, inner/outer write-back non-transient
const ATTR_DEVICE: u64 = 1; // 0x04: Device-nGnRE
const MAIR: u64 = 0xff | (0x04 << 8);

const VALID: u64 = 1 << 0;
const TABLE: u64 = 1 << 1; // at levels 0-2: table; at level 3: page
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const AP_RO: u64 = 1 << 7;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Frame([u64; 512]);

static mut POOL: [Frame; POOL_FRAMES] = [Frame([0; 512]); POOL_FRAMES];

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The page-table pool is used up.
    PoolExhausted,
    /// Beyond what the identity map reaches (128 TiB).
    TooHigh(u64),
    /// Device registers claimed inside lifeboat's own memory.
    OwnMemory(u64),
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::PoolExhausted => write!(f, "out of page-table frames ({} KiB pool)", POOL_FRAMES * 4),
            PagingError::TooHigh(a) => write!(f, "address {:#x} is beyond the 128 TiB identity map", a),
            PagingError::OwnMemory(a) => write!(f, "device registers at {:#x} overlap lifeboat's own memory", a),
        }
    }
}

/// RAM ranges remembered for choosing block sizes.
const MAX_RAM: usize = 64;

pub struct AddressSpace {
    used: usize,
    own_start: u64,
    own_end: u64,
    guard: u64,
    /// Known RAM (merged, unsorted). Until some is known, only pages are mapped.
    ram: [(u64, u64); MAX_RAM],
    nr_ram: usize,
    /// More RAM ranges were offered than fit: every block then counts as RAM (the old rule).
    ram_overflow: bool,
    /// The last range `map_readonly` mapped: page-by-page reads inside it return at once.
    last: (u64, u64),
}

fn pool_frame(i: usize) -> *mut u64 {
    // SAFETY: only the address is taken; `i` < POOL_FRAMES at every caller.
    unsafe { addr_of_mut!(POOL[i]) as *mut u64 }
}

impl AddressSpace {
    /// Build the tables for our own image `[own_start, own_end)` (the page at `guard` left
    /// unmapped). `_gib_pages` is always true on arm64 (kept for the shared signature).
    pub fn new(own_start: u64, own_end: u64, guard: u64, _gib_pages: bool) -> Result<Self, PagingError> {
        let mut s = AddressSpace {
            used: 1, // frame 0 is the level-0 table
            own_start: own_start & !(KIB4 - 1),
            own_end: (own_end + KIB4 - 1) & !(KIB4 - 1),
            guard,
            ram: [(0, 0); MAX_RAM],
            nr_ram: 0,
            ram_overflow: false,
            last: (0, 0),
        };
        if s.own_end > IDENTITY_LIMIT {
            return Err(PagingError::TooHigh(s.own_end));
        }
        let mut a = s.own_start;
        while a < s.own_end {
            if a != guard {
                let pte = s.walk(a, 3)?;
                // SAFETY: `pte` points into one of our pool frames.
                unsafe { *pte = a | VALID | TABLE | AF | SH_INNER | (ATTR_NORMAL << 2) | UXN };
            }
            a += KIB4;
        }
        Ok(s)
    }

    /// Page-table frames in use.
    pub fn frames_used(&self) -> usize {
        self.used
    }

    /// Tables are never recycled on arm64 (1 GiB blocks keep the count small).
    pub fn recycled(&self) -> u64 {
        0
    }

    fn alloc(&mut self) -> Result<*mut u64, PagingError> {
        if self.used == POOL_FRAMES {
            return Err(PagingError::PoolExhausted);
        }
        let f = pool_frame(self.used);
        self.used += 1;
        // SAFETY: a fresh pool frame nobody refers to yet.
        unsafe { core::ptr::write_bytes(f, 0, 512) };
        Ok(f)
    }

    /// The entry for `va` at `level` (0-3), creating the tables above it.
    fn walk(&mut self, va: u64, level: u32) -> Result<*mut u64, PagingError> {
        let mut table = pool_frame(0);
        for l in 0..level {
            let idx = ((va >> (39 - 9 * l)) & 511) as usize;
            // SAFETY: `table` is one of our pool frames, idx < 512.
            let e = unsafe { table.add(idx) };
            // SAFETY: as above.
            let cur = unsafe { *e };
            if cur & VALID == 0 {
                let next = self.alloc()?;
                // SAFETY: as above; pool frames are identity-mapped, so the pointer is the
                // physical address.
                unsafe { *e = next as u64 | VALID | TABLE };
                table = next;
            } else {
                debug_assert!(cur & TABLE != 0, "a block is never split");
                table = (cur & ADDR_MASK) as *mut u64;
            }
        }
        let idx = ((va >> (39 - 9 * level)) & 511) as usize;
        // SAFETY: as above.
        Ok(unsafe { table.add(idx) })
    }

    /// Remember `[start, end)` as RAM (from the device tree's `/memory` and the crashed
    /// kernel's PT_LOADs): blocks are only used where they lie wholly in RAM.
    pub fn add_ram(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        let (mut s, mut e) = (start, end);
        // Merge with every range it overlaps or touches.
        let mut i = 0;
        while i < self.nr_ram {
            let (a, b) = self.ram[i];
            if a <= e && s <= b {
                s = s.min(a);
                e = e.max(b);
                self.nr_ram -= 1;
                self.ram[i] = self.ram[self.nr_ram];
            } else {
                i += 1;
            }
        }
        if self.nr_ram == MAX_RAM {
            self.ram_overflow = true;
            return;
        }
        self.ram[self.nr_ram] = (s, e);
        self.nr_ram += 1;
    }

    fn all_ram(&self, start: u64, len: u64) -> bool {
        self.ram_overflow || self.ram[..self.nr_ram].iter().any(|&(a, b)| a <= start && start + len <= b)
    }

    fn touches_own(&self, start: u64, len: u64) -> bool {
        start < self.own_end && self.own_start < start + len
    }

    /// Switch to these tables: MAIR, TCR, TTBR0, then the MMU and caches on.
    ///
    /// # Safety
    /// Everything the running code touches (code, stack, statics, heap) must lie in our own
    /// image, which these tables map; the MMU must be off (we are called once, at entry).
    pub unsafe fn activate(&self) {
        let pa_bits = super::cpu::phys_addr_bits();
        let ips: u64 = match pa_bits {
            32 => 0,
            36 => 1,
            40 => 2,
            42 => 3,
            44 => 4,
            48 => 5,
            _ => 6,
        };
        // T0SZ 16 (48-bit), write-back walks, inner shareable, 4K granule, TTBR1 walks off.
        let tcr = 16 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (ips.min(5) << 32);
        // Everything we wrote so far (tables, bss, stack) went to memory uncached (the MMU is
        // off). Lines of our memory a cache may still hold from before the crash would hide it
        // once the caches are on: invalidate them (without writing back: memory is the truth).
        let ctr: u64;
        // SAFETY: reads the cache type register; no side effects.
        unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        let line = 4u64 << ((ctr >> 16) & 0xf);
        let mut a = self.own_start & !(line - 1);
        while a < self.own_end {
            // SAFETY: invalidates the data cache line of our own memory at `a`; with the MMU
            // off no access of ours allocates lines, so none holds data newer than memory.
            unsafe { core::arch::asm!("dc ivac, {}", in(reg) a, options(nostack)) };
            a += line;
        }
        // SAFETY: completes the invalidations before the MMU and caches are switched on.
        unsafe { core::arch::asm!("dsb sy", options(nostack)) };
        MAIR_EL1.set(MAIR);
        TCR_EL1.set(tcr);
        TTBR0_EL1.set(pool_frame(0) as u64);
        // SAFETY: the new tables are complete for everything we run on; caches were off, so
        // memory holds the tables we wrote.
        unsafe {
            core::arch::asm!("dsb ish", "tlbi vmalle1", "dsb ish", "isb", options(nostack));
        }
        // M, C, I on; alignment checks stay off; WXN off.
        let sctlr = super::entry::SCTLR_EL1_MMU_OFF | (1 << 0) | (1 << 2) | (1 << 12);
        SCTLR_EL1.set(sctlr);
        // SAFETY: synchronises the context change.
        unsafe { core::arch::asm!("isb", options(nostack)) };
    }

    fn publish() {
        // SAFETY: makes new (previously invalid) entries visible to the table walker.
        unsafe { core::arch::asm!("dsb ishst", "isb", options(nostack)) };
    }

    /// Identity-map `[start, end)` read-only (for reading old memory). Idempotent.
    pub fn map_readonly(&mut self, start: u64, end: u64) -> Result<(), PagingError> {
        if end > IDENTITY_LIMIT {
            return Err(PagingError::TooHigh(end));
        }
        if self.last.0 <= start && end <= self.last.1 {
            return Ok(());
        }
        let ro = VALID | AF | SH_INNER | (ATTR_NORMAL << 2) | AP_RO | PXN | UXN;
        let mut a = start & !(KIB4 - 1);
        let mut mapped = (a, a);
        while a < end {
            let gib = a & !(GIB - 1);
            if !self.touches_own(gib, GIB) && self.all_ram(gib, GIB) {
                let e = self.walk(a, 1)?;
                // SAFETY: `e` points into a pool frame.
                unsafe {
                    if *e & VALID == 0 {
                        *e = gib | ro;
                    }
                }
                a = gib + GIB;
                mapped = (mapped.0.min(gib), a);
                continue;
            }
            let mib = a & !(MIB2 - 1);
            if !self.touches_own(mib, MIB2) && self.all_ram(mib, MIB2) {
                let e = self.walk(a, 2)?;
                // SAFETY: as above.
                unsafe {
                    if *e & VALID == 0 {
                        *e = mib | ro;
                    }
                }
                a = mib + MIB2;
                mapped = (mapped.0.min(mib), a);
                continue;
            }
            if !self.touches_own(a, KIB4) {
                let e = self.walk(a, 3)?;
                // SAFETY: as above.
                unsafe {
                    if *e & VALID == 0 {
                        *e = a | ro | TABLE;
                    }
                }
            }
            a += KIB4;
            mapped.1 = a;
        }
        Self::publish();
        self.last = mapped;
        Ok(())
    }

    /// Map device registers `[paddr, paddr + len)` as Device-nGnRE; returns the virtual
    /// address of `paddr`.
    pub fn map_device(&mut self, paddr: u64, len: u64) -> Result<u64, PagingError> {
        let end = paddr.checked_add(len.max(1)).ok_or(PagingError::TooHigh(paddr))?;
        if end > IDENTITY_LIMIT {
            return Err(PagingError::TooHigh(end));
        }
        if self.touches_own(paddr, len.max(1)) || (paddr <= self.guard && self.guard < end) {
            return Err(PagingError::OwnMemory(paddr));
        }
        let dev = VALID | AF | (ATTR_DEVICE << 2) | PXN | UXN;
        let mut a = paddr & !(MIB2 - 1);
        while a < end {
            let e = self.walk(DEVICE_WINDOW + a, 2)?;
            // SAFETY: `e` points into a pool frame.
            unsafe {
                if *e & VALID == 0 {
                    *e = a | dev;
                }
            }
            a += MIB2;
        }
        Self::publish();
        Ok(DEVICE_WINDOW + paddr)
    }
}
