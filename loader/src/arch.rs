//! The architecture `lifeboat load` runs on, and what differs between them for a crash loader.
//!
//! Everything that builds segments takes an [`Arch`] value, so the arm64 path is tested on an
//! x86_64 host; only the system calls ([`crate::kexec`]) are compiled for one architecture.

/// A machine lifeboat can be loaded on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// `KEXEC_ARCH_X86_64` (`include/uapi/linux/kexec.h`: `EM_X86_64 << 16`).
pub const KEXEC_ARCH_X86_64: u64 = 62 << 16;
/// `KEXEC_ARCH_AARCH64` (`EM_AARCH64 << 16`).
pub const KEXEC_ARCH_AARCH64: u64 = 183 << 16;

impl Arch {
    /// The machine this binary was built for.
    #[cfg(target_arch = "x86_64")]
    pub const HOST: Arch = Arch::X86_64;
    #[cfg(target_arch = "aarch64")]
    pub const HOST: Arch = Arch::Aarch64;

    /// `uname -m`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `e_machine` of the elfcorehdr.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => lifeboat_capture::elfcore::EM_X86_64,
            Arch::Aarch64 => lifeboat_capture::elfcore::EM_AARCH64,
        }
    }

    /// The `KEXEC_ARCH_*` bits of `kexec_load`'s flags (the kernel refuses any other).
    pub fn kexec_arch_flag(self) -> u64 {
        match self {
            Arch::X86_64 => KEXEC_ARCH_X86_64,
            Arch::Aarch64 => KEXEC_ARCH_AARCH64,
        }
    }

    /// File name of the capture kernel `cargo xtask build` writes for this machine.
    pub fn payload_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    /// Where packages install the capture kernel.
    pub fn default_payload(self) -> &'static str {
        match self {
            Arch::X86_64 => "/usr/lib/lifeboat/bzImage",
            Arch::Aarch64 => "/usr/lib/lifeboat/Image",
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("lifeboat load supports x86_64 and aarch64 hosts only");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kexec_arch_flags_are_the_elf_machines_shifted() {
        for a in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(a.kexec_arch_flag(), u64::from(a.elf_machine()) << 16);
        }
        assert_eq!(KEXEC_ARCH_AARCH64, 0xb7_0000);
        assert!(Arch::Aarch64.default_payload().ends_with("/Image"));
    }
}
