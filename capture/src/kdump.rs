//! The kdump-compressed ("diskdump", signature `"KDUMP   "`) format: on-disk structures.
//!
//! Defined by makedumpfile `diskdump_mod.h` (`struct disk_dump_header`,
//! `struct kdump_sub_header`, `page_desc_t`, the `DUMP_DH_*` flags) and `makedumpfile.h`
//! (dump levels); read by crash `diskdump.c`. The project reference, §1, has the field tables
//! this module follows. All fields are in the crashed machine's byte order, which is
//! little-endian for the architectures lifeboat supports (x86_64, aarch64).
//!
//! The structs are `#[repr(C)]` so their sizes can be checked against the C layout at compile
//! time; they are serialised with explicit little-endian byte writes ([`DiskDumpHeader::to_bytes`]
//! and friends), never by reinterpreting memory.

/// `"KDUMP   "`: KDUMP followed by three spaces, no NUL.
pub const KDUMP_SIGNATURE: [u8; 8] = *b"KDUMP   ";
/// The header version lifeboat writes (6: 64-bit pfn fields in the sub header).
pub const HEADER_VERSION: i32 = 6;
/// `DISKDUMP_HEADER_BLOCKS`: the header occupies one block.
pub const DISKDUMP_HEADER_BLOCKS: u64 = 1;

/// `DUMP_DH_COMPRESSED_ZLIB`: page compressed with zlib (RFC 1950 wrapper).
pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
/// `DUMP_DH_COMPRESSED_LZO`: page compressed with lzo1x_1.
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
/// `DUMP_DH_COMPRESSED_SNAPPY`: page compressed with snappy.
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
/// `DUMP_DH_COMPRESSED_INCOMPLETE` (header `status` only): the dump is incomplete.
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
/// `DUMP_DH_EXCLUDED_VMEMMAP` (header `status` only).
pub const DUMP_DH_EXCLUDED_VMEMMAP: u32 = 0x10;
/// `DUMP_DH_COMPRESSED_ZSTD`: page compressed with zstd.
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;

/// Dump level bit: exclude (share) zero pages (`DL_EXCLUDE_ZERO`).
pub const DL_EXCLUDE_ZERO: u32 = 0x1;
/// Dump level bit: exclude page cache pages without private data (`DL_EXCLUDE_CACHE`).
pub const DL_EXCLUDE_CACHE: u32 = 0x2;
/// Dump level bit: exclude page cache pages with private data (`DL_EXCLUDE_CACHE_PRI`).
pub const DL_EXCLUDE_CACHE_PRI: u32 = 0x4;
/// Dump level bit: exclude user process pages (`DL_EXCLUDE_USER_DATA`).
pub const DL_EXCLUDE_USER_DATA: u32 = 0x8;
/// Dump level bit: exclude free pages (`DL_EXCLUDE_FREE`).
pub const DL_EXCLUDE_FREE: u32 = 0x10;
/// The highest dump level (all exclusion bits).
pub const MAX_DUMP_LEVEL: u32 = 31;

/// Length of one `struct new_utsname` field, including the NUL.
pub const UTS_FIELD_LEN: usize = 65;
/// Size of `struct new_utsname`.
pub const UTSNAME_SIZE: usize = 6 * UTS_FIELD_LEN;

/// `struct new_utsname` (Linux `include/uapi/linux/utsname.h`): six NUL-terminated strings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtsName {
    pub sysname: [u8; UTS_FIELD_LEN],
    pub nodename: [u8; UTS_FIELD_LEN],
    pub release: [u8; UTS_FIELD_LEN],
    pub version: [u8; UTS_FIELD_LEN],
    pub machine: [u8; UTS_FIELD_LEN],
    pub domainname: [u8; UTS_FIELD_LEN],
}

const _: () = assert!(core::mem::size_of::<UtsName>() == UTSNAME_SIZE);

impl Default for UtsName {
    fn default() -> Self {
        Self::empty()
    }
}

impl UtsName {
    /// All fields empty.
    pub const fn empty() -> Self {
        let z = [0u8; UTS_FIELD_LEN];
        Self { sysname: z, nodename: z, release: z, version: z, machine: z, domainname: z }
    }

    /// Parses the 390 bytes of a `struct new_utsname` as found in the crashed kernel's memory.
    /// Every field is forced to end in a NUL, whatever the bytes say.
    pub fn from_bytes(b: &[u8; UTSNAME_SIZE]) -> Self {
        let mut u = Self::empty();
        for (i, f) in u.fields_mut().into_iter().enumerate() {
            f.copy_from_slice(&b[i * UTS_FIELD_LEN..(i + 1) * UTS_FIELD_LEN]);
            f[UTS_FIELD_LEN - 1] = 0;
        }
        u
    }

    /// The 390 bytes of `struct new_utsname`.
    pub fn to_bytes(&self) -> [u8; UTSNAME_SIZE] {
        let mut b = [0u8; UTSNAME_SIZE];
        for (i, f) in self.fields().into_iter().enumerate() {
            b[i * UTS_FIELD_LEN..(i + 1) * UTS_FIELD_LEN].copy_from_slice(f);
        }
        b
    }

    /// The fields in `struct new_utsname` order.
    pub fn fields(&self) -> [&[u8; UTS_FIELD_LEN]; 6] {
        [
            &self.sysname,
            &self.nodename,
            &self.release,
            &self.version,
            &self.machine,
            &self.domainname,
        ]
    }

    fn fields_mut(&mut self) -> [&mut [u8; UTS_FIELD_LEN]; 6] {
        [
            &mut self.sysname,
            &mut self.nodename,
            &mut self.release,
            &mut self.version,
            &mut self.machine,
            &mut self.domainname,
        ]
    }

    /// Stores `s` in a field, truncated to 64 bytes, NUL-padded.
    pub fn set(field: &mut [u8; UTS_FIELD_LEN], s: &str) {
        *field = [0; UTS_FIELD_LEN];
        let n = s.len().min(UTS_FIELD_LEN - 1);
        field[..n].copy_from_slice(&s.as_bytes()[..n]);
    }

    /// The text of a field up to its first NUL; `None` if that is not UTF-8.
    pub fn get(field: &[u8; UTS_FIELD_LEN]) -> Option<&str> {
        let end = field.iter().position(|&c| c == 0).unwrap_or(UTS_FIELD_LEN);
        core::str::from_utf8(&field[..end]).ok()
    }

    /// A utsname with only `sysname = "Linux"`, `release` and `machine` known.
    pub fn minimal(release: &str, machine: &str) -> Self {
        let mut u = Self::empty();
        Self::set(&mut u.sysname, "Linux");
        Self::set(&mut u.release, release);
        Self::set(&mut u.machine, machine);
        u
    }
}

/// `struct disk_dump_header` (makedumpfile `diskdump_mod.h`), 464 bytes, at file offset 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskDumpHeader {
    /// [`KDUMP_SIGNATURE`].
    pub signature: [u8; 8],
    /// [`HEADER_VERSION`].
    pub header_version: i32,
    pub utsname: UtsName,
    /// Padding before `timestamp` (C alignment of `struct timeval`).
    pub pad: [u8; 6],
    /// `struct timeval timestamp`: seconds.
    pub timestamp_sec: i64,
    /// `struct timeval timestamp`: microseconds.
    pub timestamp_usec: i64,
    /// `DUMP_DH_*` bits: the compression method used, plus INCOMPLETE / EXCLUDED_VMEMMAP.
    pub status: u32,
    /// Page size of the crashed kernel.
    pub block_size: i32,
    /// Blocks of sub header plus notes.
    pub sub_hdr_size: i32,
    /// Blocks of both bitmaps.
    pub bitmap_blocks: u32,
    /// `min(max_mapnr, u32::MAX)` (obsolete; the 64-bit value is in the sub header).
    pub max_mapnr: u32,
    pub total_ram_blocks: u32,
    pub device_blocks: u32,
    pub written_blocks: u32,
    pub current_cpu: u32,
    pub nr_cpus: i32,
}

/// Size of `struct disk_dump_header`.
pub const DISK_DUMP_HEADER_SIZE: usize = 464;
const _: () = assert!(core::mem::size_of::<DiskDumpHeader>() == DISK_DUMP_HEADER_SIZE);

impl DiskDumpHeader {
    /// Little-endian serialisation, byte for byte the C layout.
    pub fn to_bytes(&self) -> [u8; DISK_DUMP_HEADER_SIZE] {
        let mut w = ByteWriter::<DISK_DUMP_HEADER_SIZE>::new();
        w.bytes(&self.signature);
        w.bytes(&self.header_version.to_le_bytes());
        w.bytes(&self.utsname.to_bytes());
        w.bytes(&self.pad);
        w.bytes(&self.timestamp_sec.to_le_bytes());
        w.bytes(&self.timestamp_usec.to_le_bytes());
        w.bytes(&self.status.to_le_bytes());
        w.bytes(&self.block_size.to_le_bytes());
        w.bytes(&self.sub_hdr_size.to_le_bytes());
        w.bytes(&self.bitmap_blocks.to_le_bytes());
        w.bytes(&self.max_mapnr.to_le_bytes());
        w.bytes(&self.total_ram_blocks.to_le_bytes());
        w.bytes(&self.device_blocks.to_le_bytes());
        w.bytes(&self.written_blocks.to_le_bytes());
        w.bytes(&self.current_cpu.to_le_bytes());
        w.bytes(&self.nr_cpus.to_le_bytes());
        w.finish()
    }
}

/// `struct kdump_sub_header` (makedumpfile `diskdump_mod.h`), 104 bytes, at file offset
/// `block_size`, immediately followed by the ELF notes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KdumpSubHeader {
    pub phys_base: u64,
    pub dump_level: i32,
    /// Non-zero for split dumps (never, here).
    pub split: i32,
    /// Obsolete 32-bit-clamped split range.
    pub start_pfn: u64,
    pub end_pfn: u64,
    /// Absolute file offset of the VMCOREINFO note's descriptor.
    pub offset_vmcoreinfo: i64,
    pub size_vmcoreinfo: u64,
    /// Absolute file offset of the ELF notes (`block_size + 104`).
    pub offset_note: i64,
    pub size_note: u64,
    pub offset_eraseinfo: i64,
    pub size_eraseinfo: u64,
    pub start_pfn_64: u64,
    pub end_pfn_64: u64,
    pub max_mapnr_64: u64,
}

/// Size of `struct kdump_sub_header`.
pub const KDUMP_SUB_HEADER_SIZE: usize = 104;
const _: () = assert!(core::mem::size_of::<KdumpSubHeader>() == KDUMP_SUB_HEADER_SIZE);

impl KdumpSubHeader {
    /// Little-endian serialisation, byte for byte the C layout.
    pub fn to_bytes(&self) -> [u8; KDUMP_SUB_HEADER_SIZE] {
        let mut w = ByteWriter::<KDUMP_SUB_HEADER_SIZE>::new();
        w.bytes(&self.phys_base.to_le_bytes());
        w.bytes(&self.dump_level.to_le_bytes());
        w.bytes(&self.split.to_le_bytes());
        w.bytes(&self.start_pfn.to_le_bytes());
        w.bytes(&self.end_pfn.to_le_bytes());
        w.bytes(&self.offset_vmcoreinfo.to_le_bytes());
        w.bytes(&self.size_vmcoreinfo.to_le_bytes());
        w.bytes(&self.offset_note.to_le_bytes());
        w.bytes(&self.size_note.to_le_bytes());
        w.bytes(&self.offset_eraseinfo.to_le_bytes());
        w.bytes(&self.size_eraseinfo.to_le_bytes());
        w.bytes(&self.start_pfn_64.to_le_bytes());
        w.bytes(&self.end_pfn_64.to_le_bytes());
        w.bytes(&self.max_mapnr_64.to_le_bytes());
        w.finish()
    }
}

/// `page_desc_t` (makedumpfile `diskdump_mod.h`), 24 bytes: where one dumped page's data is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageDesc {
    /// Absolute file offset of the page data; 0 = page missing (crash reports it incomplete).
    pub offset: i64,
    /// Bytes stored (≤ block_size).
    pub size: u32,
    /// 0 = raw, or one `DUMP_DH_COMPRESSED_*` bit.
    pub flags: u32,
    /// Always 0.
    pub page_flags: u64,
}

/// Size of `page_desc_t`.
pub const PAGE_DESC_SIZE: usize = 24;
const _: () = assert!(core::mem::size_of::<PageDesc>() == PAGE_DESC_SIZE);

impl PageDesc {
    /// Little-endian serialisation, byte for byte the C layout.
    pub fn to_bytes(&self) -> [u8; PAGE_DESC_SIZE] {
        let mut w = ByteWriter::<PAGE_DESC_SIZE>::new();
        w.bytes(&self.offset.to_le_bytes());
        w.bytes(&self.size.to_le_bytes());
        w.bytes(&self.flags.to_le_bytes());
        w.bytes(&self.page_flags.to_le_bytes());
        w.finish()
    }
}

/// Fills a fixed-size array front to back; `finish` checks that every byte was written.
struct ByteWriter<const N: usize> {
    buf: [u8; N],
    pos: usize,
}

impl<const N: usize> ByteWriter<N> {
    fn new() -> Self {
        Self { buf: [0; N], pos: 0 }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn finish(self) -> [u8; N] {
        debug_assert_eq!(self.pos, N);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_field_offsets() {
        let mut h = DiskDumpHeader {
            signature: KDUMP_SIGNATURE,
            header_version: HEADER_VERSION,
            utsname: UtsName::minimal("6.1.0", "x86_64"),
            pad: [0; 6],
            timestamp_sec: 0x1122334455667788,
            timestamp_usec: 7,
            status: DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE,
            block_size: 4096,
            sub_hdr_size: 2,
            bitmap_blocks: 16,
            max_mapnr: 0x40000,
            total_ram_blocks: 0,
            device_blocks: 0,
            written_blocks: 0,
            current_cpu: 0,
            nr_cpus: 4,
        };
        UtsName::set(&mut h.utsname.nodename, "host");
        let b = h.to_bytes();
        assert_eq!(&b[0..8], b"KDUMP   ");
        assert_eq!(&b[8..12], &6i32.to_le_bytes());
        assert_eq!(&b[12..17], b"Linux");
        assert_eq!(&b[12 + 65..12 + 65 + 4], b"host");
        assert_eq!(&b[12 + 130..12 + 135], b"6.1.0");
        assert_eq!(&b[12 + 260..12 + 266], b"x86_64");
        assert_eq!(&b[408..416], &0x1122334455667788i64.to_le_bytes());
        assert_eq!(&b[424..428], &9u32.to_le_bytes());
        assert_eq!(&b[428..432], &4096i32.to_le_bytes());
        assert_eq!(&b[432..436], &2i32.to_le_bytes());
        assert_eq!(&b[436..440], &16u32.to_le_bytes());
        assert_eq!(&b[440..444], &0x40000u32.to_le_bytes());
        assert_eq!(&b[460..464], &4i32.to_le_bytes());
    }

    #[test]
    fn sub_header_and_desc_offsets() {
        let s = KdumpSubHeader {
            phys_base: 1,
            dump_level: 2,
            split: 3,
            start_pfn: 4,
            end_pfn: 5,
            offset_vmcoreinfo: 6,
            size_vmcoreinfo: 7,
            offset_note: 8,
            size_note: 9,
            offset_eraseinfo: 10,
            size_eraseinfo: 11,
            start_pfn_64: 12,
            end_pfn_64: 13,
            max_mapnr_64: 14,
        };
        let b = s.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 2);
        assert_eq!(b[12], 3);
        for (i, v) in (4u8..=14).enumerate() {
            assert_eq!(b[16 + 8 * i], v, "field {}", v);
        }
        let d = PageDesc { offset: 0x1000, size: 77, flags: 1, page_flags: 0 }.to_bytes();
        assert_eq!(&d[0..8], &0x1000i64.to_le_bytes());
        assert_eq!(&d[8..12], &77u32.to_le_bytes());
        assert_eq!(&d[12..16], &1u32.to_le_bytes());
        assert_eq!(&d[16..24], &[0; 8]);
    }

    #[test]
    fn utsname_fields() {
        let mut raw = [b'x'; UTSNAME_SIZE];
        raw[0..6].copy_from_slice(b"Linux\0");
        let u = UtsName::from_bytes(&raw);
        assert_eq!(UtsName::get(&u.sysname), Some("Linux"));
        // An unterminated field is cut at 64 bytes.
        assert_eq!(UtsName::get(&u.nodename).map(str::len), Some(64));
        let mut f = [0u8; UTS_FIELD_LEN];
        UtsName::set(&mut f, &"a".repeat(100));
        assert_eq!(f[64], 0);
        assert_eq!(UtsName::get(&f).map(str::len), Some(64));
    }
}
