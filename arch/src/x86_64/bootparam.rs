//! The x86 Linux boot protocol: `struct setup_header` and the parts of `struct boot_params`
//! (the "zero page") that lifeboat reads.
//!
//! Defined by Linux `Documentation/arch/x86/boot.rst` and `zero-page.rst`,
//! `arch/x86/include/uapi/asm/bootparam.h`. Offsets below are offsets in `boot_params`.

/// `struct setup_header`, at offset 0x1F1 of the image file and of `boot_params`.
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SetupHeader {
    pub setup_sects: u8,
    pub root_flags: u16,
    pub syssize: u32,
    pub ram_size: u16,
    pub vid_mode: u16,
    pub root_dev: u16,
    pub boot_flag: u16,
    pub jump: u16,
    pub header: u32,
    pub version: u16,
    pub realmode_swtch: u32,
    pub start_sys_seg: u16,
    pub kernel_version: u16,
    pub type_of_loader: u8,
    pub loadflags: u8,
    pub setup_move_size: u16,
    pub code32_start: u32,
    pub ramdisk_image: u32,
    pub ramdisk_size: u32,
    pub bootsect_kludge: u32,
    pub heap_end_ptr: u16,
    pub ext_loader_ver: u8,
    pub ext_loader_type: u8,
    pub cmd_line_ptr: u32,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable_kernel: u8,
    pub min_alignment: u8,
    pub xloadflags: u16,
    pub cmdline_size: u32,
    pub hardware_subarch: u32,
    pub hardware_subarch_data: u64,
    pub payload_offset: u32,
    pub payload_length: u32,
    pub setup_data: u64,
    pub pref_address: u64,
    pub init_size: u32,
    pub handover_offset: u32,
    pub kernel_info_offset: u32,
}
const _: () = assert!(core::mem::size_of::<SetupHeader>() == 123);

/// File/`boot_params` offset of the setup header.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// `boot_flag` value.
pub const BOOT_FLAG: u16 = 0xAA55;
/// `header` magic "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// Boot protocol version lifeboat declares (2.15).
pub const BOOT_PROTOCOL_VERSION: u16 = 0x020F;
pub const LOADFLAG_LOADED_HIGH: u8 = 1 << 0;
pub const XLF_KERNEL_64: u16 = 1 << 0;
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
pub const XLF_5LEVEL: u16 = 1 << 5;
/// Offset of the 64-bit entry point from the start of the protected-mode payload.
pub const ENTRY64_OFFSET: u64 = 0x200;

/// Offsets inside `struct boot_params` (4096 bytes).
pub mod zp {
    pub const SIZE: usize = 4096;
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const SETUP_DATA: usize = 0x250;
    /// End of the room for the setup header (`edd_mbr_sig_buffer` follows).
    pub const SETUP_HEADER_END: usize = 0x290;
    pub const E820_TABLE: usize = 0x2D0;
    pub const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;
    pub const E820_ENTRY_SIZE: usize = 20;
}

/// `struct boot_e820_entry`.
#[repr(C, packed)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub typ: u32,
}
const _: () = assert!(core::mem::size_of::<E820Entry>() == 20);

pub const E820_RAM: u32 = 1;
/// `struct setup_data` header: `{ u64 next; u32 type; u32 len; u8 data[] }`.
pub const SETUP_DATA_HEADER: usize = 16;
pub const SETUP_E820_EXT: u32 = 1;

impl SetupHeader {
    /// The header lifeboat's bzImage carries. `init_size` is the whole runtime footprint
    /// (image, bss, heap, stack, page-table pool): loaders reserve exactly that much.
    pub fn lifeboat(setup_sects: u8, payload_len: u32, init_size: u32) -> Self {
        SetupHeader {
            setup_sects,
            syssize: payload_len.div_ceil(16),
            vid_mode: 0xFFFF,
            boot_flag: BOOT_FLAG,
            // `jmp` over the header; byte 0x201 gives the header length from 0x202.
            jump: 0xEB | ((0x26C - 0x202) << 8),
            header: HDRS_MAGIC,
            version: BOOT_PROTOCOL_VERSION,
            loadflags: LOADFLAG_LOADED_HIGH,
            code32_start: 0x10_0000,
            // The kexec loaders place the payload at a multiple of this. lifeboat relocates
            // itself and maps its own memory with 4 KiB pages, so one page is enough: a 2 MiB
            // alignment would waste up to 2 MiB of a small crashkernel= reservation.
            kernel_alignment: 0x1000,
            relocatable_kernel: 1,
            min_alignment: 12,
            xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G | XLF_5LEVEL,
            cmdline_size: 4095,
            pref_address: 0x100_0000,
            init_size,
            ..Default::default()
        }
    }

    pub fn to_bytes(&self) -> [u8; 123] {
        // SAFETY: SetupHeader is repr(C, packed) plain old data of exactly 123 bytes
        // (asserted above), and x86 is little-endian as the protocol requires.
        unsafe { core::mem::transmute_copy(self) }
    }

    pub fn from_bytes(b: &[u8; 123]) -> Self {
        // SAFETY: every bit pattern is a valid SetupHeader (integers only); sizes match.
        unsafe { core::mem::transmute_copy(b) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_match_boot_rst() {
        let h = SetupHeader::lifeboat(4, 1000, 0x40_0000);
        let b = h.to_bytes();
        let at = |off: usize| off - SETUP_HEADER_OFFSET;
        assert_eq!(&b[at(0x1FE)..at(0x200)], &[0x55, 0xAA]);
        assert_eq!(&b[at(0x202)..at(0x206)], b"HdrS");
        assert_eq!(u16::from_le_bytes([b[at(0x206)], b[at(0x207)]]), 0x020F);
        assert_eq!(b[at(0x201)] as usize, 0x26C - 0x202);
        assert_eq!(b[at(0x211)] & 1, 1);
        assert_eq!(u32::from_le_bytes(b[at(0x230)..at(0x234)].try_into().unwrap()), 0x1000);
        assert_eq!(u16::from_le_bytes([b[at(0x236)], b[at(0x237)]]) & 3, 3);
        assert_eq!(u32::from_le_bytes(b[at(0x238)..at(0x23C)].try_into().unwrap()), 4095);
        assert_eq!(u32::from_le_bytes(b[at(0x260)..at(0x264)].try_into().unwrap()), 0x40_0000);
        assert_eq!(SetupHeader::from_bytes(&b).to_bytes(), b);
    }
}
