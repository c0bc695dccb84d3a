//! Ending the capture: reboot, halt, power off, and the test harness's exit port.

use super::cpu::{halt_forever, inb, outb, outl};

/// Reset the machine: the PCI reset control register (0xCF9, chipsets since PIIX), then the
/// 8042 keyboard controller, then a triple fault.
pub fn reboot() -> ! {
    outb(0xcf9, 0x02);
    outb(0xcf9, 0x06);
    for _ in 0..100_000 {
        if inb(0x64) & 0x02 == 0 {
            break;
        }
    }
    outb(0x64, 0xfe);
    // Triple fault: an empty IDT and an exception.
    // SAFETY: we are resetting; nothing after this runs.
    unsafe {
        let null = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
        x86_64::instructions::tables::lidt(&null);
        core::arch::asm!("int3");
    }
    halt_forever()
}

pub fn halt() -> ! {
    halt_forever()
}

/// Enter ACPI S5 with the PM1 control ports and sleep types the kernel found in the FADT and
/// DSDT; returns if that did not work, so the caller can say so and halt.
pub fn poweroff(pm1a_cnt: u16, pm1b_cnt: Option<u16>, slp_typa: u16, slp_typb: u16) {
    const SLP_EN: u16 = 1 << 13;
    if let Some(b) = pm1b_cnt {
        super::cpu::outw(b, (slp_typb << 10) | SLP_EN);
    }
    super::cpu::outw(pm1a_cnt, (slp_typa << 10) | SLP_EN);
    for _ in 0..10_000_000 {
        core::hint::spin_loop();
    }
}

/// Write `code` to a QEMU `isa-debug-exit` device (test harnesses: the VM exits with
/// status `(code << 1) | 1`).
pub fn debug_exit(port: u16, code: u32) {
    outl(port, code);
}
