//! x86_64: the Linux x86 boot protocol (kexec) and PVH (QEMU `-kernel`) entry.
//!
//! Exported names (shared with the other arch modules): `bootinfo` (the boot protocol,
//! read once into [`bootinfo::BootInfo`]), and on the bare-metal target `entry`, `cpu`,
//! `exceptions`, `paging`, `pci`, `serial`, `timer`, `power`.

pub mod bootinfo;
pub mod bootparam;
pub mod pvh;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod entry;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod exceptions;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod paging;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod pci;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod power;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod serial;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod timer;

/// ELF machine number of this architecture (EM_X86_64).
pub const ELF_MACHINE: u16 = 62;
/// `utsname.machine` of a crashed kernel of this architecture.
pub const MACHINE_NAME: &str = "x86_64";
/// Where `linker/x86_64.ld` links the image (also where QEMU's PVH loader puts it).
pub const LINK_BASE: u64 = 0x20_0000;
