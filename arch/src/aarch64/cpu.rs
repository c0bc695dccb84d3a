//! CPU facts and the idle loop.

use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};

/// Physical address bits the CPU supports (ID_AA64MMFR0_EL1.PARange).
pub fn phys_addr_bits() -> u32 {
    match ID_AA64MMFR0_EL1.get() & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// The 4K granule always has 1 GiB blocks at level 1.
pub fn has_gib_pages() -> bool {
    true
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: masks interrupts and waits; nothing else runs.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi", options(nomem, nostack)) };
    }
}
