//! The arm64 entry trampoline for `kexec_load`: sets the boot registers the Image wants and
//! branches to it.
//!
//! Why it is needed: for a crash image loaded with `kexec_load`, Linux enters `kimage->start`
//! through `cpu_soft_restart(el2_switch, entry, arg0 = kimage->arch.dtb_mem, 0, 0)`
//! (`arch/arm64/kernel/machine_kexec.c` `machine_kexec()`, the in-place `IND_DONE` branch;
//! `cpu-reset.S` moves arg0..arg2 to x0..x2 and branches with the MMU off). `arch.dtb_mem` is
//! only set by kexec_file's `load_other_segments()` (`machine_kexec_file.c`); a `kexec_load`
//! image has 0 there, so x0 = 0, and x3 is not set at all. kexec-tools loads a purgatory that
//! sets x0 = DTB, x1 = x2 = x3 = 0 and branches to the kernel; lifeboat loads these 40 bytes
//! instead and makes them the entry point.
//!
//! ```text
//! off  bytes      instruction       encoding (Arm ARM, A64)
//! 0x00 580000C0   ldr x0, 0x18      LDR (literal), 64-bit: 0101_1000 | imm19 = 24/4 = 6 | Rt = 0
//! 0x04 AA1F03E1   mov x1, xzr       ORR (shifted register), 64-bit: 0xAA000000 | Rm=31 | Rn=31 | Rd = 1
//! 0x08 AA1F03E2   mov x2, xzr       same, Rd = 2
//! 0x0C AA1F03E3   mov x3, xzr       same, Rd = 3
//! 0x10 58000084   ldr x4, 0x20      LDR (literal): imm19 = (0x20 - 0x10)/4 = 4, Rt = 4
//! 0x14 D61F0080   br x4             BR: 0xD61F0000 | Rn = 4 << 5
//! 0x18 <u64>      the DTB's physical address
//! 0x20 <u64>      the Image's load address (its first instruction, `code0`)
//! ```
//!
//! The literals are 8-byte aligned: with the MMU off data accesses are Device memory, where an
//! unaligned load would fault. The trampoline touches no memory but its own literals and
//! needs no stack.

/// Length of the trampoline in bytes.
pub const TRAMPOLINE_LEN: usize = 40;

/// `LDR Xt, label`: PC-relative literal load (C6.2.167 "LDR (literal)", opc = 01 for 64-bit).
pub fn ldr_literal(rt: u32, byte_offset: u32) -> u32 {
    debug_assert!(rt < 31 && byte_offset.is_multiple_of(4) && byte_offset < (1 << 20));
    0x5800_0000 | ((byte_offset / 4) << 5) | rt
}

/// `MOV Xd, XZR`, the alias of `ORR Xd, XZR, XZR` (C6.2.205 "ORR (shifted register)", sf = 1).
pub fn mov_xzr(rd: u32) -> u32 {
    debug_assert!(rd < 31);
    0xAA00_0000 | (31 << 16) | (31 << 5) | rd
}

/// `BR Xn` (C6.2.38).
pub fn br(rn: u32) -> u32 {
    debug_assert!(rn < 31);
    0xD61F_0000 | (rn << 5)
}

/// The trampoline's bytes, to be loaded at any 8-byte-aligned address.
pub fn trampoline(dtb: u64, image: u64) -> [u8; TRAMPOLINE_LEN] {
    let code = [
        ldr_literal(0, 0x18),
        mov_xzr(1),
        mov_xzr(2),
        mov_xzr(3),
        ldr_literal(4, 0x20 - 0x10),
        br(4),
    ];
    let mut t = [0u8; TRAMPOLINE_LEN];
    for (i, insn) in code.iter().enumerate() {
        t[i * 4..i * 4 + 4].copy_from_slice(&insn.to_le_bytes());
    }
    t[0x18..0x20].copy_from_slice(&dtb.to_le_bytes());
    t[0x20..0x28].copy_from_slice(&image.to_le_bytes());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings printed by LLVM's assembler (`llvm-mc -triple=aarch64 -show-encoding`) for
    /// `ldr x0, #24`, `mov x1, xzr`, `mov x2, xzr`, `mov x3, xzr`, `ldr x4, #16`, `br x4`.
    const LLVM_MC: [[u8; 4]; 6] = [
        [0xc0, 0x00, 0x00, 0x58],
        [0xe1, 0x03, 0x1f, 0xaa],
        [0xe2, 0x03, 0x1f, 0xaa],
        [0xe3, 0x03, 0x1f, 0xaa],
        [0x84, 0x00, 0x00, 0x58],
        [0x80, 0x00, 0x1f, 0xd6],
    ];

    #[test]
    fn instructions_match_an_assembler() {
        let t = trampoline(0, 0);
        for (i, want) in LLVM_MC.iter().enumerate() {
            assert_eq!(&t[i * 4..i * 4 + 4], want, "instruction {i}");
        }
        // Other operands, against the same encodings' fields.
        assert_eq!(ldr_literal(7, 8), 0x5800_0047);
        assert_eq!(mov_xzr(0), 0xAA1F_03E0);
        assert_eq!(br(30), 0xD61F_03C0);
    }

    /// A decoder for exactly these instruction forms, written from the Arm ARM field layouts
    /// (not from the encoder): runs the trampoline over its own bytes and returns x0..x3 and the
    /// branch target.
    fn execute(code: &[u8]) -> ([Option<u64>; 5], u64) {
        let mut x: [Option<u64>; 5] = [None; 5];
        let mut pc = 0usize;
        for _ in 0..16 {
            let insn = u32::from_le_bytes(code[pc..pc + 4].try_into().unwrap());
            if insn >> 24 == 0x58 {
                // LDR (literal) 64-bit: bits 31..24 = 0101_1000, imm19 = bits 23..5, Rt = 4..0
                let imm19 = (insn >> 5) & 0x7_ffff;
                let at = pc + imm19 as usize * 4;
                assert_eq!(at % 8, 0, "unaligned literal");
                x[(insn & 31) as usize] =
                    Some(u64::from_le_bytes(code[at..at + 8].try_into().unwrap()));
            } else if insn & 0xFFE0_FC00 == 0xAA00_0000 {
                // ORR (shifted register), sf = 1, shift = 0, N = 0, imm6 = 0: Xd = Xn | Xm, with
                // register 31 read as XZR here.
                let (rm, rn) = ((insn >> 16) & 31, (insn >> 5) & 31);
                let read = |r: u32| if r == 31 { Some(0) } else { x[r as usize] };
                x[(insn & 31) as usize] = read(rm).zip(read(rn)).map(|(a, b)| a | b);
            } else if insn & 0xFFFF_FC1F == 0xD61F_0000 {
                let rn = ((insn >> 5) & 31) as usize;
                return (x, x[rn].expect("branch through an unset register"));
            } else {
                panic!("unexpected instruction {insn:#010x} at {pc:#x}");
            }
            pc += 4;
        }
        panic!("no branch");
    }

    #[test]
    fn sets_the_boot_registers_and_branches_to_the_image() {
        for (dtb, image) in [
            (0x5f40_3000u64, 0x5f00_0000u64),
            (0x8_0000_1000, 0xffff_0000_0020_0000),
        ] {
            let t = trampoline(dtb, image);
            let (x, target) = execute(&t);
            assert_eq!(x[0], Some(dtb));
            assert_eq!(&x[1..4], &[Some(0); 3]);
            assert_eq!(target, image);
        }
    }
}
