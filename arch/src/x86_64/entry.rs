//! Entry code: the PVH 32-bit entry, the Linux 64-bit boot protocol entry, and the common
//! 64-bit path that clears bss, sets the stack, relocates the image and calls
//! `lifeboat_main(protocol, boot_info_phys, image_base)`.
//!
//! Entry contracts:
//! - Linux 64-bit boot protocol (boot.rst "64-bit Boot Protocol"): long mode, paging on with
//!   our image, boot_params and cmdline identity-mapped, interrupts off, RSI = boot_params.
//!   The entry is at payload offset 0x200 (`ENTRY64_OFFSET`).
//! - PVH (Xen start_info.h, QEMU `-kernel`): 32-bit protected mode, paging off, flat
//!   segments, EBX = hvm_start_info. QEMU loads the ELF at its link address, so the 32-bit
//!   stub may use link-time addresses; it builds an identity map of the low 4 GiB (2 MiB
//!   pages) in `.boot_pt` and enters long mode.
//!
//! The image is a static PIE: the common path applies its R_X86_64_RELATIVE relocations for
//! wherever it was loaded (kexec chooses the address). `cargo xtask build` checks that no
//! other relocation type is present.

/// `lifeboat_main`'s first argument.
pub const PROTOCOL_LINUX64: u32 = 1;
pub const PROTOCOL_PVH: u32 = 2;

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .code64
.Lhead_start:
    // Payload offset 0: lifeboat's image header, read by `lifeboat load` and `xtask build`.
    .ascii "LIFEBOAT"
    .long 1                              // image header version
    .long 62                             // EM_X86_64
    .quad 0x200                          // 64-bit entry offset
    .quad 0                              // reserved
    .ascii "version="
    "#,
    concat!(".asciz \"", env!("CARGO_PKG_VERSION"), "\""),
    r#"

    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff             // 0x08: 64-bit code
    .quad 0x00cf92000000ffff             // 0x10: data
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long {link_base} + (boot_gdt - .Lhead_start)

    .org 0x200
    .global startup_64
startup_64:                              // Linux 64-bit boot protocol, RSI = boot_params
    cli
    mov ${proto_linux}, %edi
    jmp common64

    .code32
    .global pvh_start32
pvh_start32:                             // PVH: 32-bit, paging off, EBX = hvm_start_info
    cli
    cld
    mov %ebx, %esi
    mov $__boot_pt_abs, %edi
    xor %eax, %eax
    mov $(6 * 1024), %ecx
    rep stosl
    mov $__boot_pt_abs, %edi
    lea 0x1003(%edi), %eax               // PML4[0] -> PDPT
    mov %eax, (%edi)
    lea 0x2003(%edi), %eax               // PDPT[0..4] -> PD0..PD3
    mov %eax, 0x1000(%edi)
    lea 0x3003(%edi), %eax
    mov %eax, 0x1008(%edi)
    lea 0x4003(%edi), %eax
    mov %eax, 0x1010(%edi)
    lea 0x5003(%edi), %eax
    mov %eax, 0x1018(%edi)
    xor %ecx, %ecx                       // PD entries: 2048 x 2 MiB, present|rw|PS
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, 0x2000(%edi,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, 0x2004(%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b
    mov %edi, %cr3
    mov %cr4, %eax
    or $0x20, %eax                       // PAE
    mov %eax, %cr4
    mov $0xc0000080, %ecx                // EFER.LME
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax                 // PG | PE
    mov %eax, %cr0
    lgdt ({link_base} + (boot_gdt_ptr - .Lhead_start))
    ljmp $0x08, $({link_base} + (pvh_long - .Lhead_start))

    .code64
pvh_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov %esi, %esi                       // zero-extend hvm_start_info
    mov ${proto_pvh}, %edi

common64:                                // EDI = protocol, RSI = boot info (physical)
    cli
    cld
    mov %edi, %r12d
    mov %rsi, %r13
    lea __bss_start(%rip), %rdi          // clear bss (the stack lives there too)
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    lea __stack_top(%rip), %rsp
    xor %ebp, %ebp
    lea __head_start(%rip), %rax         // delta = load address - link address
    mov ${link_base}, %rdx
    sub %rdx, %rax
    lea __rela_start(%rip), %rcx
    lea __rela_end(%rip), %rdx
2:  cmp %rdx, %rcx
    jae 3f
    cmpl $8, 8(%rcx)                     // R_X86_64_RELATIVE only (checked at build time)
    jne 4f
    mov (%rcx), %r8
    add %rax, %r8
    mov 16(%rcx), %r9
    add %rax, %r9
    mov %r9, (%r8)
4:  add $24, %rcx
    jmp 2b
3:  mov %r12d, %edi
    mov %r13, %rsi
    lea __head_start(%rip), %rdx
    call lifeboat_main
5:  cli
    hlt
    jmp 5b

    // PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY, the 32-bit entry's physical address.
    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long {link_base} + (pvh_start32 - .Lhead_start)
    .balign 4
    "#,
    link_base = const super::LINK_BASE,
    proto_linux = const PROTOCOL_LINUX64,
    proto_pvh = const PROTOCOL_PVH,
    options(att_syntax)
);
