//! What differs between the x86_64 and the arm64 e2e guests: the Debian architecture and
//! kernel package, the QEMU machine and console, the capture kernel's file name, and how the
//! host runs makedumpfile and crash on the dumps (natively on x86_64; Debian's arm64 builds
//! under `qemu-aarch64-static` on arm64 dumps, since the host's x86_64 builds refuse them).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The guest's (and the crashed kernel's) architecture: the crate's [`crate::Arch`], with
/// what the e2e guests need to know about it.
pub use crate::Arch;

impl Arch {
    /// `x86_64`, `aarch64` or `arm64` (and `amd64`).
    pub fn parse(s: &str) -> Option<Arch> {
        s.parse().ok()
    }

    /// Debian's name for it (`dpkg --print-architecture`, `.deb` file names).
    pub fn deb_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The kernel meta package whose dependency names the kernel under test.
    pub fn meta_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-cloud-amd64",
            Arch::Aarch64 => "linux-image-cloud-arm64",
        }
    }

    /// Debian's multiarch library directory (`/lib/<this>/libc.so.6`).
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// The guest kernel's console: the first UART (`console=` on its command line). On QEMU's
    /// `virt` board the single PL011 is both the console and the capture kernel's serial sink,
    /// as COM1 is on `pc`.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// The capture kernel's file name in `target/lifeboat/<arch>/` and in the guest's
    /// `/lifeboat/`.
    pub fn payload_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    /// The QEMU system emulator; `QEMU_SYSTEM_X86_64` / `QEMU_SYSTEM_AARCH64` override it.
    pub fn qemu_system(self) -> String {
        match self {
            Arch::X86_64 => crate::qemu::qemu_binary(),
            Arch::Aarch64 => std::env::var("QEMU_SYSTEM_AARCH64")
                .unwrap_or_else(|_| "qemu-system-aarch64".into()),
        }
    }

    /// The Debian package of [`Arch::qemu_system`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// QEMU's machine and CPU. On arm64, `pauth-impdef=on` replaces the architected pointer
    /// authentication (QARMA, slow to emulate) with QEMU's own: Debian's kernel, built with
    /// pointer authentication, reaches /init about 3× faster under TCG.
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-M", "pc"],
            Arch::Aarch64 => &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// The modules the disk and network sink scenarios load (`virtio_pci` is the transport
    /// both drivers need; it is not in their `depends=`). On arm64 the dump disk and the
    /// network card are virtio-pci devices on `virt`'s PCIe host bridge too (the generic ECAM
    /// host is built into Debian's kernel), which is what `lifeboat load` resolves
    /// `blk:/dev/vda` through.
    pub fn sink_modules(self) -> &'static [&'static str] {
        super::inputs::SINK_MODULES
    }

    /// The ELF `e_machine` of its binaries and cores.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }
}

/// How the host runs makedumpfile and crash on the guest's dumps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostTools {
    /// The host's own (x86_64) `makedumpfile` and `crash` (`MAKEDUMPFILE`, `CRASH` override
    /// the names).
    Native,
    /// Debian's arm64 builds, extracted into `sysroot`, run by the user-mode emulator
    /// `qemu_user` (`qemu-aarch64-static -L <sysroot>`): the dynamic loader and libraries come
    /// from the sysroot, every other path (the dumps, the outputs) is the host's.
    Emulated {
        qemu_user: PathBuf,
        sysroot: PathBuf,
        /// Paths inside `sysroot`, e.g. `usr/bin/makedumpfile`.
        makedumpfile: PathBuf,
        crash: PathBuf,
    },
}

impl HostTools {
    /// A command that runs makedumpfile; add its arguments.
    pub fn makedumpfile(&self) -> Command {
        match self {
            HostTools::Native => Command::new(crate::qemu::makedumpfile_binary()),
            HostTools::Emulated { makedumpfile, .. } => self.emulated(makedumpfile),
        }
    }

    /// A command that runs crash; add its arguments.
    pub fn crash(&self) -> Command {
        match self {
            HostTools::Native => Command::new(super::inputs::crash_binary()),
            HostTools::Emulated { crash, .. } => self.emulated(crash),
        }
    }

    fn emulated(&self, program: &std::path::Path) -> Command {
        let HostTools::Emulated {
            qemu_user, sysroot, ..
        } = self
        else {
            unreachable!("emulated() of native tools")
        };
        let mut c = Command::new(qemu_user);
        let root: OsString = sysroot.clone().into_os_string();
        c.arg("-L").arg(&root).arg(sysroot.join(program));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parsing() {
        for a in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(Arch::parse(a.name()), Some(a));
            assert_eq!(Arch::parse(a.deb_arch()), Some(a));
        }
        assert_eq!(Arch::parse("riscv64"), None);
        assert_eq!(Arch::Aarch64.meta_package(), "linux-image-cloud-arm64");
        assert_eq!(Arch::Aarch64.console(), "ttyAMA0");
        assert_eq!(Arch::Aarch64.payload_name(), "Image");
        assert_eq!(Arch::X86_64.payload_name(), "bzImage");
        assert_eq!(Arch::default(), Arch::X86_64);
    }

    #[test]
    fn emulated_tools_run_under_qemu_user_with_the_sysroot() {
        let t = HostTools::Emulated {
            qemu_user: "/c/qemu-aarch64-static".into(),
            sysroot: "/c/arm64-root".into(),
            makedumpfile: "usr/bin/makedumpfile".into(),
            crash: "usr/bin/crash".into(),
        };
        let mut c = t.makedumpfile();
        c.arg("--dump-dmesg");
        assert_eq!(
            format!("{c:?}"),
            "\"/c/qemu-aarch64-static\" \"-L\" \"/c/arm64-root\" \"/c/arm64-root/usr/bin/makedumpfile\" \"--dump-dmesg\""
        );
        assert!(format!("{:?}", t.crash()).ends_with("\"/c/arm64-root/usr/bin/crash\""));
        assert!(format!("{:?}", HostTools::Native.crash()).contains("crash"));
    }
}
