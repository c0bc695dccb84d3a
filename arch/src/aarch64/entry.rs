//! Entry code: the arm64 Image header, the drop from EL2 to EL1, then the common path that
//! enables FP/SIMD, sets the stack, clears bss, relocates the image, installs the exception
//! vectors and calls `lifeboat_main(protocol, dtb_phys, image_base)`.
//!
//! Entry contract (booting.rst; kexec_file_load, kexec-tools' purgatory and QEMU `-kernel`
//! all follow it): MMU and D-cache off, DAIF masked, EL2 or EL1, x0 = DTB physical address,
//! x1 = x2 = x3 = 0, entered at the first byte of the image.
//!
//! Everything up to `lifeboat_main` runs with the MMU off, where memory is Device memory: the
//! target is built with strict alignment (aarch64-unknown-none), so no unaligned access is
//! made before our page tables are on.
//!
//! The image is a static PIE linked at 0: the entry applies its R_AARCH64_RELATIVE
//! relocations for wherever it was loaded. `cargo xtask build` checks that no other
//! relocation type is present.

/// `lifeboat_main`'s first argument: the exception level the image was entered at.
pub const PROTOCOL_IMAGE_EL1: u32 = 1;
pub const PROTOCOL_IMAGE_EL2: u32 = 2;

/// SCTLR_EL1 with its RES1 bits set and the MMU, caches and alignment checks off.
pub const SCTLR_EL1_MMU_OFF: u64 = (1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11);

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _head
_head:
    b       primary_entry                // code0
    .long   0                            // code1
    .quad   0                            // text_offset
    .quad   __image_size                 // image_size: file, bss and stack (linker script)
    .quad   {flags}                      // little-endian, 4K pages, anywhere in memory
    .quad   0                            // res2
    .quad   0                            // res3
    .quad   0                            // res4
    .ascii  "ARM\x64"                    // magic
    .long   0                            // res5: no PE/COFF header

    // Offset 0x40: lifeboat's image header, read by `lifeboat load` and `xtask build`.
    .ascii  "LIFEBOAT"
    .long   1                            // image header version
    .long   183                          // EM_AARCH64
    .quad   primary_entry - _head        // entry offset
    .quad   0                            // reserved
    .ascii  "version="
    "#,
    concat!(".asciz \"", env!("CARGO_PKG_VERSION"), "\""),
    r#"
    .balign 8
primary_entry:
    mov     x19, x0                      // the DTB
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    cmp     x20, #2
    b.ne    1f

    // EL2: run the capture at EL1 with EL2 out of the way (no traps, EL1 owns the timers).
    mov     x1, #(1 << 31)               // HCR_EL2.RW: EL1 is AArch64; no stage 2, no traps;
    msr     hcr_el2, x1                  // E2H off (a VHE kernel may leave it on), so the
    isb                                  // _EL1 names below mean the EL1 registers again
    mov     x1, #3                       // CNTHCTL_EL2: EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr
    mov     x1, #0x33ff                  // CPTR_EL2: RES1 bits, no FP/SIMD trap
    msr     cptr_el2, x1
    msr     hstr_el2, xzr
    ldr     x1, ={sctlr_off}
    msr     sctlr_el1, x1
    mov     x1, #0x3c5                   // SPSR_EL2: EL1h, D, A, I, F masked
    msr     spsr_el2, x1
    adr     x1, 1f
    msr     elr_el2, x1
    eret

1:  msr     daifset, #0xf
    ldr     x1, ={sctlr_off}
    msr     sctlr_el1, x1
    mov     x1, #(3 << 20)               // CPACR_EL1.FPEN: FP/SIMD do not trap (Rust uses NEON)
    msr     cpacr_el1, x1
    isb

    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b

3:  adrp    x9, _head                    // where we run; linked at 0, so also the offset
    add     x9, x9, :lo12:_head
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
4:  cmp     x10, x11
    b.hs    5f
    ldp     x12, x13, [x10], #16         // r_offset, r_info
    ldr     x14, [x10], #8               // r_addend
    cmp     x13, #1027                   // R_AARCH64_RELATIVE (xtask rejects any other type)
    b.ne    4b
    add     x14, x14, x9
    str     x14, [x12, x9]
    b       4b

5:  adrp    x1, lifeboat_vectors
    add     x1, x1, :lo12:lifeboat_vectors
    msr     vbar_el1, x1
    isb
    mov     w0, w20                      // protocol: the entry EL
    mov     x1, x19                      // DTB
    mov     x2, x9                       // image base
    bl      lifeboat_main
6:  wfi
    b       6b
    .ltorg
    "#,
    flags = const super::image::LIFEBOAT_FLAGS,
    sctlr_off = const SCTLR_EL1_MMU_OFF,
);
