//! Our own GDT, TSS and IDT. Every CPU exception is reported (vector, RIP, error code, CR2)
//! through `lifeboat_fatal`, which the kernel provides; NMIs are ignored (return).

use core::fmt::Write;
use core::ptr::addr_of;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

pub use crate::FixedBuf;

extern "Rust" {
    /// Provided by the kernel: print `msg`, mark the capture failed, stop cleanly.
    fn lifeboat_fatal(msg: &str) -> !;
}

/// Registers pushed by `isr_common`, then vector and error code, then the CPU's frame.
#[repr(C)]
pub struct ExceptionFrame {
    pub r15: u64, pub r14: u64, pub r13: u64, pub r12: u64, pub r11: u64, pub r10: u64,
    pub r9: u64, pub r8: u64, pub rbp: u64, pub rdi: u64, pub rsi: u64, pub rdx: u64,
    pub rcx: u64, pub rbx: u64, pub rax: u64,
    pub vector: u64, pub error_code: u64,
    pub rip: u64, pub cs: u64, pub rflags: u64, pub rsp: u64, pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == 22 * 8);

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .balign 16
    .global lifeboat_isr_stubs
lifeboat_isr_stubs:
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    .balign 16
    pushq $0
    pushq $\n
    jmp isr_common
    .endr
    "#,
    r#"
    .irp n, 8,10,11,12,13,14,17,21,29,30
    .balign 16
    pushq $\n
    jmp isr_common
    .endr
    .balign 16
isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    call lifeboat_exception
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
    "#,
    options(att_syntax)
);

/// Stub order in `lifeboat_isr_stubs` (16 bytes each): no-error-code vectors first.
const STUB_ORDER: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 16, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 31, 8, 10, 11,
    12, 13, 14, 17, 21, 29, 30,
];

const NAMES: [&str; 32] = [
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range", "invalid opcode",
    "device not available", "double fault", "coprocessor overrun", "invalid TSS",
    "segment not present", "stack fault", "general protection", "page fault", "reserved",
    "x87 FP", "alignment check", "machine check", "SIMD FP", "virtualization",
    "control protection", "reserved", "reserved", "reserved", "reserved", "reserved",
    "reserved", "hypervisor injection", "VMM communication", "security", "reserved",
];

#[repr(C, align(16))]
struct Idt([u64; 64]);

static mut IDT: Idt = Idt([0; 64]);
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();
static mut TSS: TaskStateSegment = TaskStateSegment::new();

#[repr(C, align(16))]
struct IstStack([u8; 16 * 1024]);
static mut IST_STACK: IstStack = IstStack([0; 16 * 1024]);

/// Load our GDT (code 0x08, data 0x10, TSS), TSS with an IST stack for double faults, NMIs
/// and machine checks, and the IDT. Call once, first thing.
pub fn init() {
    extern "C" {
        static lifeboat_isr_stubs: u8;
    }
    // SAFETY: single CPU, interrupts off, called once before anything else uses these
    // statics; the pointers are to our own statics, which live for the whole run.
    unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        let ist_top = addr_of!(IST_STACK) as u64 + core::mem::size_of::<IstStack>() as u64;
        tss.interrupt_stack_table[0] = VirtAddr::new(ist_top);
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(&*core::ptr::addr_of!(TSS)));
        gdt.load_unsafe();
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);

        let stubs = addr_of!(lifeboat_isr_stubs) as u64;
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (slot, &vector) in STUB_ORDER.iter().enumerate() {
            let handler = stubs + 16 * slot as u64;
            let ist: u64 = if matches!(vector, 2 | 8 | 18) { 1 } else { 0 };
            // 64-bit interrupt gate: offset, selector, IST, type 0xE, present.
            let low = (handler & 0xffff)
                | (u64::from(code.0) << 16)
                | (ist << 32)
                | (0x8e << 40)
                | ((handler >> 16) & 0xffff) << 48;
            idt.0[2 * vector as usize] = low;
            idt.0[2 * vector as usize + 1] = handler >> 32;
        }
        lidt(&DescriptorTablePointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: VirtAddr::new(addr_of!(IDT) as u64),
        });
    }
}

#[no_mangle]
extern "C" fn lifeboat_exception(frame: &ExceptionFrame) {
    if frame.vector == 2 {
        return; // NMI (e.g. the crashed kernel's shootdown arriving late): ignore.
    }
    let name = NAMES.get(frame.vector as usize).copied().unwrap_or("?");
    let mut msg = FixedBuf::new();
    let _ = write!(
        msg,
        "CPU exception {} ({}) at RIP {:#x}, error code {:#x}",
        frame.vector, name, frame.rip, frame.error_code
    );
    if frame.vector == 14 {
        let _ = write!(msg, ", address {:#x}", super::cpu::cr2());
    }
    let _ = write!(msg, ", RSP {:#x}", frame.rsp);
    // SAFETY: the kernel defines `lifeboat_fatal` with this exact signature.
    unsafe { lifeboat_fatal(msg.as_str()) }
}
