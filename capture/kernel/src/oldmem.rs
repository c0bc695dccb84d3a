//! The capture kernel's one way into physical memory it does not own: `PhysRead` over our
//! identity map. Every read is range-checked (no overflow, below the CPU's physical address
//! width, never the capture kernel's own memory), mapped read-only on demand, then copied.

use lifeboat_arch::current::paging::AddressSpace;
use lifeboat_capture::phys::{PhysError, PhysRange, PhysRead};
use spin::Mutex;

pub static SPACE: Mutex<Option<AddressSpace>> = Mutex::new(None);

pub struct OldMemory {
    pub own: PhysRange,
    pub max_phys: u64,
}

impl PhysRead for OldMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let len = buf.len() as u64;
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
        space.map_readonly(range.start, range.end).map_err(|_| bad)?;
        // SAFETY: [addr, addr+len) is identity-mapped read-only just above, is not our own
        // memory (so it cannot alias `buf`), and `buf` is valid for `len` bytes of writes.
        // `rep movsb` rather than `copy_nonoverlapping` because physical address 0 is a
        // valid source here and a null pointer is not.
        unsafe {
            core::arch::asm!(
                "rep movsb",
                inout("rsi") addr => _,
                inout("rdi") buf.as_mut_ptr() => _,
                inout("rcx") len => _,
                options(nostack, preserves_flags)
            );
        }
        Ok(())
    }
}
