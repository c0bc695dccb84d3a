//! Exception vectors. Every exception (synchronous, IRQ, FIQ, SError; all are masked or
//! unexpected in the capture kernel) is reported with ESR, ELR and FAR through
//! `lifeboat_fatal`, which the kernel provides, on a stack of its own (so a stack overflow
//! into the guard page is reported too). A fault while reporting stops the CPU.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

pub use crate::FixedBuf;

extern "Rust" {
    /// Provided by the kernel: print `msg`, mark the capture failed, stop cleanly.
    fn lifeboat_fatal(msg: &str) -> !;
}

const EXC_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct ExcStack([u8; EXC_STACK_SIZE]);
#[no_mangle]
static mut LIFEBOAT_EXC_STACK: ExcStack = ExcStack([0; EXC_STACK_SIZE]);

static REPORTING: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .balign 2048
    .global lifeboat_vectors
lifeboat_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 128
    mov     x0, #\n
    b       lifeboat_vector_common
    .endr
lifeboat_vector_common:
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    mov     x4, sp
    adrp    x5, LIFEBOAT_EXC_STACK
    add     x5, x5, :lo12:LIFEBOAT_EXC_STACK
    add     x5, x5, #{size}
    mov     sp, x5
    bl      lifeboat_exception
1:  wfi
    b       1b
    "#,
    size = const EXC_STACK_SIZE,
);

/// Nothing to do at run time: `entry` installs the vectors before `lifeboat_main`.
pub fn init() {}

const KINDS: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];
const ORIGINS: [&str; 4] = ["EL1 with SP_EL0", "EL1", "EL0 (AArch64)", "EL0 (AArch32)"];

fn class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown instruction",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register access trapped",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2c => "FP exception",
        0x2f => "SError",
        0x30..=0x35 => "debug exception",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

#[no_mangle]
extern "C" fn lifeboat_exception(vector: u64, esr: u64, elr: u64, far: u64, sp: u64) -> ! {
    if REPORTING.swap(true, Ordering::Relaxed) {
        super::cpu::halt_forever();
    }
    let kind = KINDS[(vector & 3) as usize];
    let origin = ORIGINS[((vector >> 2) & 3) as usize];
    let ec = (esr >> 26) & 0x3f;
    let mut msg = FixedBuf::new();
    let _ = write!(
        msg,
        "CPU exception: {} from {}, {} (ESR {:#x}) at PC {:#x}, FAR {:#x}, SP {:#x}",
        kind,
        origin,
        class_name(ec),
        esr,
        elr,
        far,
        sp
    );
    // SAFETY: the kernel defines `lifeboat_fatal` with this exact signature.
    unsafe { lifeboat_fatal(msg.as_str()) }
}
