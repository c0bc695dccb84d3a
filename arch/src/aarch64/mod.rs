//! aarch64: the Linux arm64 Image boot protocol (kexec, QEMU `-kernel`), entered at EL2 or
//! EL1 with the MMU off and x0 = the device tree.
//!
//! Exported names (shared with the other arch modules): `image` (the Image header, plain
//! data), and on the bare-metal target `entry`, `cpu`, `exceptions`, `paging`, `pci`,
//! `serial`, `timer`, `power`. Boot information comes from the device tree, parsed by the
//! portable `lifeboat_capture::devtree`.

pub mod image;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod entry;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod exceptions;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod paging;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod pci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod power;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod serial;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod timer;

/// ELF machine number of this architecture (EM_AARCH64).
pub const ELF_MACHINE: u16 = 183;
/// `utsname.machine` of a crashed kernel of this architecture.
pub const MACHINE_NAME: &str = "aarch64";
/// Where `linker/aarch64.ld` links the image. The image relocates itself (entry.rs), and both
/// kexec and QEMU put it at a 2 MiB-aligned base of their choosing.
pub const LINK_BASE: u64 = 0;
