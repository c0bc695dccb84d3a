//! The Xen PVH boot ABI as QEMU uses it for `-kernel` ELF images
//! (xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc).

/// `struct hvm_start_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    /// Version 1 and later.
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<HvmStartInfo>() == 56);

pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub typ: u32,
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<HvmMemmapEntry>() == 24);

pub const HVM_MEMMAP_TYPE_RAM: u32 = 1;
/// ELF note type of the 32-bit PVH entry point, name "Xen".
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
