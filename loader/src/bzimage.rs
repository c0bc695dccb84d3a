//! Checking that a file is a lifeboat bzImage, and reading what the loaders need from it.
//!
//! The checks are the ones both kexec loaders make (Linux `arch/x86/kernel/kexec-bzimage64.c`
//! `bzImage64_probe()`, kexec-tools `kexec/arch/x86_64/kexec-bzImage64.c`): "HdrS", boot_flag
//! 0xAA55, boot protocol ≥ 2.12, LOADED_HIGH, XLF_KERNEL_64 and XLF_CAN_BE_LOADED_ABOVE_4G;
//! then lifeboat's own image header at payload offset 0 (`arch/src/x86_64/entry.rs`):
//!
//! | payload offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `"LIFEBOAT"` |
//! | 8 | 4 | image header version (1) |
//! | 12 | 4 | ELF machine (62, EM_X86_64) |
//! | 16 | 8 | 64-bit entry offset (0x200) |
//! | 24 | 8 | reserved |
//! | 32 | … | `"version=<semver>\0"` |
//!
//! Setup header offsets are file offsets (Linux `Documentation/arch/x86/boot.rst`).

use std::fmt;

/// File offset of `struct setup_header`.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// Offset of the `jump` instruction's second byte: the header's length counted from 0x202.
const HEADER_LEN_BYTE: usize = 0x201;
const BOOT_FLAG: u16 = 0xAA55;
const LOADFLAG_LOADED_HIGH: u8 = 1 << 0;
const XLF_KERNEL_64: u16 = 1 << 0;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// Oldest boot protocol the kexec loaders accept (2.12: xloadflags).
const MIN_PROTOCOL: u16 = 0x020C;
/// lifeboat image header version this loader understands.
pub const IMAGE_HEADER_VERSION: u32 = 1;
/// `EM_X86_64`.
pub const EM_X86_64: u32 = 62;
/// Offset of the 64-bit entry in the payload (boot.rst "64-bit Boot Protocol").
pub const ENTRY64_OFFSET: u64 = 0x200;

/// A checked lifeboat bzImage.
#[derive(Clone, Debug)]
pub struct LifeboatImage {
    /// Bytes before the payload: `(setup_sects + 1) * 512` (`setup_sects` 0 means 4).
    pub setup_len: usize,
    /// Boot protocol version, e.g. 0x020F.
    pub protocol: u16,
    /// Load alignment of the payload (`kernel_alignment`, at least 4 KiB).
    pub kernel_alignment: u64,
    /// Memory the payload needs from its load address (`init_size`).
    pub init_size: u64,
    /// Longest command line without its NUL (`cmdline_size`).
    pub cmdline_size: u32,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// lifeboat image header version.
    pub header_version: u32,
    /// Entry offset from the payload start, from the lifeboat header.
    pub entry_offset: u64,
    /// The capture kernel's version (`version=` string).
    pub version: String,
    /// Setup header bytes `0x1F1 .. 0x202 + image[0x201]`, copied into `boot_params`.
    pub setup_header: Vec<u8>,
}

/// Why a file is not a usable lifeboat image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the setup sectors plus the lifeboat header.
    TooShort { len: usize, need: usize },
    /// No "HdrS" at 0x202 or no 0xAA55 at 0x1FE: not an x86 boot-protocol image at all.
    NotBzImage,
    /// Boot protocol older than 2.12.
    OldProtocol { version: u16 },
    /// `loadflags` without LOADED_HIGH.
    NotLoadedHigh,
    /// `xloadflags` without the 64-bit entry or above-4G bits.
    Not64Bit { xloadflags: u16 },
    /// A Linux (or other) bzImage: no "LIFEBOAT" header at payload offset 0.
    NoLifeboatHeader,
    /// A lifeboat header of a version this loader does not know.
    HeaderVersion { version: u32 },
    /// A lifeboat image for another architecture.
    WrongMachine { machine: u32 },
    /// Entry offset other than 0x200.
    EntryOffset { offset: u64 },
    /// No `version=` string.
    NoVersion,
    /// `kernel_alignment` not a power of two, or `init_size` smaller than the payload.
    BadHeader(&'static str),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match self {
            TooShort { len, need } => write!(f, "only {len} bytes (a lifeboat bzImage has at least {need})"),
            NotBzImage => write!(f, "no x86 boot-protocol header (\"HdrS\" at 0x202, 0xAA55 at 0x1FE)"),
            OldProtocol { version } => {
                write!(f, "boot protocol {}.{:02} (kexec needs 2.12 or later)", version >> 8, version & 0xff)
            }
            NotLoadedHigh => write!(f, "loadflags lack LOADED_HIGH"),
            Not64Bit { xloadflags } => write!(
                f,
                "xloadflags {xloadflags:#x} lack XLF_KERNEL_64 and XLF_CAN_BE_LOADED_ABOVE_4G"
            ),
            NoLifeboatHeader => write!(f, "a bzImage, but without the LIFEBOAT header at payload offset 0 (a Linux kernel?)"),
            HeaderVersion { version } => write!(
                f,
                "LIFEBOAT header version {version}, this loader knows version {IMAGE_HEADER_VERSION}: use the lifeboat tool of the same release"
            ),
            WrongMachine { machine } => write!(f, "a lifeboat image for ELF machine {machine}, not x86_64 ({EM_X86_64})"),
            EntryOffset { offset } => write!(f, "64-bit entry at payload offset {offset:#x}, expected {ENTRY64_OFFSET:#x}"),
            NoVersion => write!(f, "no version= string in the LIFEBOAT header"),
            BadHeader(why) => write!(f, "{why}"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Length of the lifeboat header before the version string.
pub(crate) const LIFEBOAT_HEADER_FIXED: usize = 32;
/// Longest version string looked at.
const MAX_VERSION: usize = 64;

/// The `<semver>` of a `"version=<semver>\0"` at the start of `tail` (the bytes after the
/// lifeboat header's fixed part, of either machine's image): printable ASCII, not empty.
pub(crate) fn version_string(tail: &[u8]) -> Option<&str> {
    tail.strip_prefix(b"version=")
        .and_then(|v| v.iter().position(|&c| c == 0).map(|n| &v[..n]))
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic()))
}

impl LifeboatImage {
    /// Checks `file` (a whole bzImage) and reads its parameters.
    pub fn parse(file: &[u8]) -> Result<Self, ImageError> {
        if file.len() < 1024 {
            return Err(ImageError::TooShort {
                len: file.len(),
                need: 1024,
            });
        }
        if &file[0x202..0x206] != b"HdrS" || u16_at(file, 0x1FE) != BOOT_FLAG {
            return Err(ImageError::NotBzImage);
        }
        let protocol = u16_at(file, 0x206);
        if protocol < MIN_PROTOCOL {
            return Err(ImageError::OldProtocol { version: protocol });
        }
        if file[0x211] & LOADFLAG_LOADED_HIGH == 0 {
            return Err(ImageError::NotLoadedHigh);
        }
        let xloadflags = u16_at(file, 0x236);
        if xloadflags & (XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G)
            != XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
        {
            return Err(ImageError::Not64Bit { xloadflags });
        }
        let setup_sects = match file[0x1F1] {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (setup_sects + 1) * 512;
        let need = setup_len + LIFEBOAT_HEADER_FIXED + 1;
        if file.len() < need {
            return Err(ImageError::TooShort {
                len: file.len(),
                need,
            });
        }
        let payload = &file[setup_len..];
        if !payload.starts_with(b"LIFEBOAT") {
            return Err(ImageError::NoLifeboatHeader);
        }
        let header_version = u32_at(payload, 8);
        if header_version != IMAGE_HEADER_VERSION {
            return Err(ImageError::HeaderVersion {
                version: header_version,
            });
        }
        let machine = u32_at(payload, 12);
        if machine != EM_X86_64 {
            return Err(ImageError::WrongMachine { machine });
        }
        let entry_offset = u64_at(payload, 16);
        if entry_offset != ENTRY64_OFFSET {
            return Err(ImageError::EntryOffset {
                offset: entry_offset,
            });
        }
        let tail =
            &payload[LIFEBOAT_HEADER_FIXED..payload.len().min(LIFEBOAT_HEADER_FIXED + MAX_VERSION)];
        let version = version_string(tail)
            .ok_or(ImageError::NoVersion)?
            .to_string();
        let kernel_alignment = u64::from(u32_at(file, 0x230));
        if !kernel_alignment.is_power_of_two() {
            return Err(ImageError::BadHeader(
                "kernel_alignment is not a power of two",
            ));
        }
        let init_size = u64::from(u32_at(file, 0x260));
        if init_size < (file.len() - setup_len) as u64 {
            return Err(ImageError::BadHeader(
                "init_size is smaller than the payload",
            ));
        }
        let header_end = (0x202 + usize::from(file[HEADER_LEN_BYTE])).min(setup_len);
        Ok(Self {
            setup_len,
            protocol,
            kernel_alignment: kernel_alignment.max(4096),
            init_size,
            cmdline_size: u32_at(file, 0x238),
            xloadflags,
            header_version,
            entry_offset,
            version,
            setup_header: file[SETUP_HEADER_OFFSET..header_end].to_vec(),
        })
    }

    /// Memory the payload segment occupies: `PAGE_ALIGN(init_size)`.
    pub fn payload_memsz(&self) -> u64 {
        crate::layout::page_align(self.init_size)
    }
}

/// Test images: a minimal lifeboat bzImage as `cargo xtask build` lays it out.
#[cfg(test)]
pub(crate) mod testimage {
    /// `setup_sects` 4, protocol 2.15, 4 KiB alignment, init_size 0x2d9000, version 0.1.0.
    pub fn lifeboat_bzimage() -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512];
        b[0x1F1] = 4;
        b[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
        b[0x200] = 0xEB;
        b[0x201] = 0x6A;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        b[0x211] = 1;
        b[0x230..0x234].copy_from_slice(&0x1000u32.to_le_bytes());
        b[0x234] = 1;
        b[0x236..0x238].copy_from_slice(&0x23u16.to_le_bytes());
        b[0x238..0x23C].copy_from_slice(&4095u32.to_le_bytes());
        b[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&0x2d_9000u32.to_le_bytes());
        let mut payload = vec![0u8; 0x1000];
        payload[..8].copy_from_slice(b"LIFEBOAT");
        payload[8..12].copy_from_slice(&1u32.to_le_bytes());
        payload[12..16].copy_from_slice(&62u32.to_le_bytes());
        payload[16..24].copy_from_slice(&0x200u64.to_le_bytes());
        payload[32..46].copy_from_slice(b"version=0.1.0\0");
        payload[0x200] = 0xFA;
        b.extend_from_slice(&payload);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testimage::lifeboat_bzimage;
    use super::*;

    #[test]
    fn accepts_a_lifeboat_image() {
        let img = LifeboatImage::parse(&lifeboat_bzimage()).unwrap();
        assert_eq!(img.setup_len, 0xA00);
        assert_eq!(img.protocol, 0x020F);
        assert_eq!(img.kernel_alignment, 0x1000);
        assert_eq!(img.init_size, 0x2d9000);
        assert_eq!(img.payload_memsz(), 0x2d9000);
        assert_eq!(img.cmdline_size, 4095);
        assert_eq!(img.version, "0.1.0");
        assert_eq!(img.setup_header.len(), 0x202 + 0x6A - 0x1F1);
        assert_eq!(img.setup_header[0], 4);
    }

    #[test]
    fn rejects_what_kexec_would_reject() {
        type Mutation = fn(&mut Vec<u8>);
        let cases: Vec<(Mutation, ImageError)> = vec![
            (|b| b[0x202] = b'X', ImageError::NotBzImage),
            (|b| b[0x1FE] = 0, ImageError::NotBzImage),
            (
                |b| b[0x206] = 0x0B,
                ImageError::OldProtocol { version: 0x020B },
            ),
            (|b| b[0x211] = 0, ImageError::NotLoadedHigh),
            (
                |b| b[0x236] = 0x21,
                ImageError::Not64Bit { xloadflags: 0x21 },
            ),
            (|b| b[0xA00] = b'l', ImageError::NoLifeboatHeader),
            (|b| b[0xA08] = 2, ImageError::HeaderVersion { version: 2 }),
            (
                |b| b[0xA0C] = 183,
                ImageError::WrongMachine { machine: 183 },
            ),
            (
                |b| b[0xA11] = 0x10,
                ImageError::EntryOffset { offset: 0x1000 },
            ),
            (|b| b[0xA20] = b'x', ImageError::NoVersion),
            (
                |b| b[0x231] = 0x11,
                ImageError::BadHeader("kernel_alignment is not a power of two"),
            ),
        ];
        for (i, (mutate, want)) in cases.into_iter().enumerate() {
            let mut b = lifeboat_bzimage();
            mutate(&mut b);
            assert_eq!(LifeboatImage::parse(&b).unwrap_err(), want, "case {i}");
        }
        assert!(matches!(
            LifeboatImage::parse(&[0u8; 100]),
            Err(ImageError::TooShort { .. })
        ));
        // A busybox binary, say: an ELF, not a bzImage.
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        assert_eq!(
            LifeboatImage::parse(&elf).unwrap_err(),
            ImageError::NotBzImage
        );
    }

    /// The image `cargo xtask build` wrote, when there is one.
    #[test]
    fn the_built_image_if_present() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/lifeboat/x86_64/bzImage"
        );
        if let Ok(b) = std::fs::read(p) {
            let img = LifeboatImage::parse(&b).unwrap();
            assert_eq!(img.version, env!("CARGO_PKG_VERSION"));
        }
    }
}
