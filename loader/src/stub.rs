//! The entry stub for `kexec_load`: the few instructions between the kernel's
//! `relocate_kernel` and the capture kernel's 64-bit entry.
//!
//! At a crash, Linux (`arch/x86/kernel/relocate_kernel_64.S`) jumps to the kexec image's
//! entry point in 64-bit mode on identity-mapped page tables covering RAM, interrupts off,
//! with the general registers cleared. The x86 64-bit boot protocol wants RSI = boot_params
//! (and kexec's purgatory also passes RBX = 0), so lifeboat loads this stub as the entry
//! instead of a purgatory:
//!
//! ```text
//! 48 BE <imm64>    movabs $boot_params, %rsi     REX.W + B8+r (r = 6, RSI), 8-byte immediate
//! 48 B8 <imm64>    movabs $payload+0x200, %rax   REX.W + B8+r (r = 0, RAX)
//! 31 DB            xor    %ebx, %ebx             31 /r, ModRM 11 011 011
//! FF E0            jmp    *%rax                  FF /4, ModRM 11 100 000
//! ```
//!
//! The capture kernel sets up its own GDT, IDT, stack and page tables at once, so nothing
//! else is needed. (kexec_file's purgatory also checks the segments' SHA-256; this path relies
//! on the kernel write-protecting the loaded reservation, `arch_kexec_protect_crashkres()`.)

/// Length of the stub in bytes.
pub const STUB_LEN: usize = 24;

/// The stub's bytes.
pub fn entry_stub(boot_params: u64, entry: u64) -> [u8; STUB_LEN] {
    let mut s = [0u8; STUB_LEN];
    s[0..2].copy_from_slice(&[0x48, 0xBE]);
    s[2..10].copy_from_slice(&boot_params.to_le_bytes());
    s[10..12].copy_from_slice(&[0x48, 0xB8]);
    s[12..20].copy_from_slice(&entry.to_le_bytes());
    s[20..22].copy_from_slice(&[0x31, 0xDB]);
    s[22..24].copy_from_slice(&[0xFF, 0xE0]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder for exactly the instruction forms the stub may contain, written from the
    /// Intel SDM encodings independently of [`entry_stub`]: it returns (RSI, RBX, jump target).
    fn execute(code: &[u8]) -> (Option<u64>, Option<u64>, u64) {
        let (mut rsi, mut rax, mut rbx) = (None, None, None);
        let mut i = 0;
        loop {
            match code[i..] {
                // REX.W (0100 1000) + MOV r64, imm64 (B8+r)
                [0x48, op @ 0xB8..=0xBF, ..] => {
                    let imm = u64::from_le_bytes(code[i + 2..i + 10].try_into().unwrap());
                    match op - 0xB8 {
                        0 => rax = Some(imm),
                        6 => rsi = Some(imm),
                        r => panic!("unexpected register {r}"),
                    }
                    i += 10;
                }
                // XOR r/m32, r32 with mod=11, reg=rm=3 (EBX): zero-extends into RBX
                [0x31, 0xDB, ..] => {
                    rbx = Some(0);
                    i += 2;
                }
                // JMP r/m64 (FF /4), mod=11, rm=0 (RAX)
                [0xFF, 0xE0, ..] => return (rsi, rbx, rax.expect("jump through an unset RAX")),
                _ => panic!("unexpected byte {:#x} at {}", code[i], i),
            }
        }
    }

    #[test]
    fn stub_sets_rsi_rbx_and_jumps_to_the_entry() {
        let s = entry_stub(0x0d00_1000, 0x0d00_4200);
        assert_eq!(execute(&s), (Some(0x0d00_1000), Some(0), 0x0d00_4200));
        let s = entry_stub(0x1_2345_6000, 0xffff_ffff_0000_0200);
        assert_eq!(
            execute(&s),
            (Some(0x1_2345_6000), Some(0), 0xffff_ffff_0000_0200)
        );
        assert_eq!(&s[..2], &[0x48, 0xBE]);
        assert_eq!(&s[20..], &[0x31, 0xDB, 0xFF, 0xE0]);
    }
}
