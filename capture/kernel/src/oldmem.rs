//! The capture kernel's one way into physical memory it does not own: `PhysRead` over our
//! identity map. Every read is range-checked (no overflow, below the CPU's physical address
//! width, never the capture kernel's own memory), mapped read-only on demand, then copied.

use lifeboat_arch::current::paging::AddressSpace;
use alloc::string::{String, ToString};
use lifeboat_capture::phys::{PhysError, PhysRange, PhysRead};
use spin::Mutex;

pub static SPACE: Mutex<Option<AddressSpace>> = Mutex::new(None);

pub struct OldMemory {
    pub own: PhysRange,
    pub max_phys: u64,
}

impl OldMemory {
    /// Check that `[addr, addr + len)` may be read (no overflow, below `max_phys`, not our own
    /// memory) and map it read-only. Mappings of old memory stay until the next `map` of
    /// another range (x86 recycles page directories; arm64 never unmaps).
    pub fn map(&self, addr: u64, len: u64) -> Result<(), PhysError> {
        let bad = PhysError::Unreadable { addr, len };
        let range = PhysRange::from_start_len(addr, len).ok_or(bad)?;
        if range.end > self.max_phys || range.overlaps(&self.own) {
            return Err(bad);
        }
        if len == 0 {
            return Ok(());
        }
        let mut space = SPACE.lock();
        let space = space.as_mut().ok_or(bad)?;
        space.map_readonly(range.start, range.end).map_err(|_| bad)
    }
}

impl PhysRead for OldMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        self.map(addr, buf.len() as u64)?;
        if !buf.is_empty() {
            copy_from_phys(addr, buf);
        }
        Ok(())
    }
}

/// Map device registers `[paddr, paddr + len)` uncached; returns their virtual address.
pub fn map_device(paddr: u64, len: u64) -> Result<u64, String> {
    let mut space = SPACE.lock();
    let space = space.as_mut().ok_or_else(|| String::from("page tables are not set up"))?;
    space.map_device(paddr, len).map_err(|e| e.to_string())
}

/// Copy `buf.len()` bytes from physical address `addr`, which the caller has mapped (our
/// tables: read-only; at boot: the loader's identity map) and which is not our memory.
#[cfg(target_arch = "x86_64")]
pub fn copy_from_phys(addr: u64, buf: &mut [u8]) {
    // SAFETY: [addr, addr+len) is identity-mapped (the caller), is not our own
    // memory (so it cannot alias `buf`), and `buf` is valid for `len` bytes of writes.
    // `rep movsb` rather than `copy_nonoverlapping` because physical address 0 is a valid
    // source here and a null pointer is not.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rsi") addr => _,
            inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Copy `buf.len()` bytes from physical address `addr`, which the caller mapped read-only.
#[cfg(target_arch = "aarch64")]
pub fn copy_from_phys(addr: u64, buf: &mut [u8]) {
    let mut from = addr;
    let mut to = &mut buf[..];
    if from == 0 && !to.is_empty() {
        // Physical address 0 is RAM on some boards, but a null pointer is not valid in Rust:
        // the first byte is read with an instruction of our own.
        let b: u8;
        // SAFETY: address 0 is mapped read-only (the caller) and not our memory.
        unsafe { core::arch::asm!("ldrb {b:w}, [{a}]", a = in(reg) 0u64, b = out(reg) b, options(nostack, readonly)) };
        to[0] = b;
        to = &mut to[1..];
        from = 1;
    }
    // SAFETY: [from, from+len) is identity-mapped read-only (the caller), non-null, not our
    // own memory (so it cannot alias `buf`), and `to` is valid for `len` bytes of writes.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to.as_mut_ptr(), to.len()) };
}
