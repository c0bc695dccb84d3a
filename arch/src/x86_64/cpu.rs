//! CPU facts and port I/O.

use core::arch::x86_64::__cpuid;
use x86_64::instructions::port::Port;

/// Physical address width (CPUID 0x80000008 EAX[7:0]); 36 if the leaf is missing.
pub fn phys_addr_bits() -> u32 {
    let max_ext = __cpuid(0x8000_0000).eax;
    if max_ext >= 0x8000_0008 {
        (__cpuid(0x8000_0008).eax & 0xff).clamp(32, 52)
    } else {
        36
    }
}

/// 1 GiB pages (CPUID 0x80000001 EDX bit 26).
pub fn has_gib_pages() -> bool {
    let max_ext = __cpuid(0x8000_0000).eax;
    max_ext >= 0x8000_0001 && (__cpuid(0x8000_0001).edx >> 26) & 1 == 1
}

/// CR2: the faulting address of the last page fault.
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

pub fn outb(port: u16, value: u8) {
    // SAFETY: lifeboat owns the machine (single CPU, interrupts off); the callers only touch
    // ports of devices they drive (UART, PIT, reset, debug-exit).
    unsafe { Port::<u8>::new(port).write(value) }
}

pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`.
    unsafe { Port::<u8>::new(port).read() }
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe { Port::<u16>::new(port).write(value) }
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { Port::<u32>::new(port).write(value) }
}

/// Stop this CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
