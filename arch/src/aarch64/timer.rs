//! Time from the generic timer's virtual counter (CNTVCT_EL0), whose frequency the firmware
//! or the crashed kernel programmed in CNTFRQ_EL0 (booting.rst requires it).

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTVCT_EL0};
use core::sync::atomic::{AtomicU64, Ordering};

static TICKS_PER_MS: AtomicU64 = AtomicU64::new(1_000_000);

/// Counter ticks (monotonic).
pub fn ticks() -> u64 {
    // SAFETY: an ISB orders the counter read after earlier instructions; no memory effects.
    unsafe { core::arch::asm!("isb", options(nomem, nostack, preserves_flags)) };
    CNTVCT_EL0.get()
}

/// Read the counter frequency. Returns false (and keeps a 1 GHz guess) if it is unset.
pub fn calibrate() -> bool {
    let hz = CNTFRQ_EL0.get() & 0xffff_ffff;
    if hz < 1000 {
        return false;
    }
    TICKS_PER_MS.store(hz / 1000, Ordering::Relaxed);
    true
}

/// Microseconds since an arbitrary origin.
pub fn now_us() -> u64 {
    let per_ms = TICKS_PER_MS.load(Ordering::Relaxed).max(1);
    ((ticks() as u128) * 1000 / per_ms as u128) as u64
}

/// Counter ticks per millisecond (after `calibrate`).
pub fn ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}
