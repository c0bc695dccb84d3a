//! Ending the capture: PSCI SYSTEM_RESET / SYSTEM_OFF through the conduit the device tree
//! names, halting, and the test harness's exit (ARM semihosting, QEMU `-semihosting`).

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::cpu::halt_forever;

/// PSCI conduit: 0 none, 1 HVC, 2 SMC.
static CONDUIT: AtomicU8 = AtomicU8::new(0);
static EXIT_TRIED: AtomicBool = AtomicBool::new(false);

const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;

/// How to call PSCI (from `/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

pub fn set_psci(conduit: Option<Conduit>) {
    let v = match conduit {
        None => 0,
        Some(Conduit::Hvc) => 1,
        Some(Conduit::Smc) => 2,
    };
    CONDUIT.store(v, Ordering::Relaxed);
}

pub fn have_psci() -> bool {
    CONDUIT.load(Ordering::Relaxed) != 0
}

fn psci_call(function: u32) {
    // SAFETY: a PSCI call with no arguments that either does not return (reset, off) or
    // returns an error code we ignore; it touches no memory of ours.
    unsafe {
        match CONDUIT.load(Ordering::Relaxed) {
            1 => core::arch::asm!("hvc #0", inout("x0") u64::from(function) => _, out("x1") _, out("x2") _, out("x3") _),
            2 => core::arch::asm!("smc #0", inout("x0") u64::from(function) => _, out("x1") _, out("x2") _, out("x3") _),
            _ => {}
        }
    }
}

/// PSCI SYSTEM_RESET; halts if there is no PSCI or it returns.
pub fn reboot() -> ! {
    psci_call(PSCI_SYSTEM_RESET);
    halt_forever()
}

pub fn halt() -> ! {
    halt_forever()
}

/// PSCI SYSTEM_OFF; returns if that did not take effect, so the caller can say so and halt.
pub fn poweroff() {
    psci_call(PSCI_SYSTEM_OFF);
}

/// Exit QEMU with status `(code << 1) | 1` (the same statuses as the x86 `isa-debug-exit`
/// device) through semihosting SYS_EXIT_EXTENDED. Test harnesses only: `lifeboat.exit_port=`
/// must be set, and QEMU started with `-semihosting-config enable=on`. Tried once: without
/// semihosting the HLT traps, and the fault path comes back here.
pub fn debug_exit(_port: u16, code: u32) {
    if EXIT_TRIED.swap(true, Ordering::Relaxed) {
        return;
    }
    const SYS_EXIT_EXTENDED: u64 = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from((code << 1) | 1)];
    // SAFETY: the semihosting call reads the two-word block on our stack and ends the VM.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") SYS_EXIT_EXTENDED => _, in("x1") block.as_ptr(), options(nostack));
    }
}
