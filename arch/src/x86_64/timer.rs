//! Time from the TSC, calibrated once against the PIT (channel 2, as Linux's
//! `pit_calibrate_tsc` does). Used for progress and rates only, so a rough value is enough.

use super::cpu::{inb, outb};
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_PER_MS: AtomicU64 = AtomicU64::new(2_000_000);
static CALIBRATED: AtomicU64 = AtomicU64::new(0);

pub fn ticks() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measure TSC ticks over 10 ms of PIT time. Returns false (and keeps a 2 GHz guess) if the
/// PIT never signals (no PIT on this machine).
pub fn calibrate() -> bool {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let latch = (PIT_HZ * MS / 1000) as u16;
    // Gate high, speaker off; channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count).
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xb0);
    outb(0x42, (latch & 0xff) as u8);
    outb(0x42, (latch >> 8) as u8);
    let t0 = ticks();
    let mut polls = 0u64;
    while inb(0x61) & 0x20 == 0 {
        polls += 1;
        if polls > 50_000_000 {
            return false;
        }
    }
    let ticks = ticks().wrapping_sub(t0);
    if ticks < MS * 1000 {
        return false;
    }
    TSC_PER_MS.store(ticks / MS, Ordering::Relaxed);
    CALIBRATED.store(1, Ordering::Relaxed);
    true
}

/// Microseconds since an arbitrary origin.
pub fn now_us() -> u64 {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed).max(1);
    ((ticks() as u128) * 1000 / per_ms as u128) as u64
}

/// Counter (TSC) ticks per millisecond (after `calibrate`).
pub fn ticks_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}
