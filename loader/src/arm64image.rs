//! Checking that a file is an arm64 `Image` lifeboat can load, and reading its header.
//!
//! The header (Linux `Documentation/arch/arm64/booting.rst`, `arch/arm64/include/asm/image.h`;
//! project reference §5), little-endian, read with the capture kernel's own definition
//! ([`lifeboat_arch::aarch64::image::ImageHeader`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 4 | `code0` (executable) |
//! | 0x04 | 4 | `code1` |
//! | 0x08 | 8 | `text_offset`: load offset from a 2 MiB-aligned base |
//! | 0x10 | 8 | `image_size`: memory used from the load address, bss included |
//! | 0x18 | 8 | `flags`: bit 0 big-endian, bits 1-2 page size (0 unspecified, 1 4K, 2 16K, 3 64K), bit 3 placement |
//! | 0x20 | 24 | reserved |
//! | 0x38 | 4 | magic `"ARM\x64"` |
//! | 0x3C | 4 | PE header offset (EFI images) |
//!
//! The checks are Linux's kexec_file ones (`arch/arm64/kernel/kexec_image.c`: magic,
//! `image_size != 0`, endianness, page size) plus what lifeboat's `kexec_load` layout needs
//! (`text_offset` page-aligned, `image_size` covering the file). A Linux `Image` passes them too;
//! lifeboat's is recognised by its `LIFEBOAT` header (the x86 layout with machine 183, looked
//! for in the first [`MARKER_SEARCH`] bytes), which gives the version `lifeboat status` shows.

use std::fmt;

use crate::bzimage::{self, IMAGE_HEADER_VERSION, LIFEBOAT_HEADER_FIXED};
pub use lifeboat_arch::aarch64::image::HEADER_SIZE;
use lifeboat_arch::aarch64::image::{ImageError, ImageHeader, FLAG_BE};

/// How far into the image the `LIFEBOAT` header is looked for.
pub const MARKER_SEARCH: usize = 64 << 10;
/// `EM_AARCH64`, the machine field of lifeboat's image header.
pub const EM_AARCH64: u32 = lifeboat_arch::aarch64::ELF_MACHINE as u32;
/// Longest command line the arm64 capture kernel takes, without its NUL (Linux
/// `COMMAND_LINE_SIZE` is 2048 on arm64; `bootargs` is a DT string).
pub const CMDLINE_MAX: usize = 2047;

/// The page size an Image says it was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Unspecified,
    K4,
    K16,
    K64,
}

impl PageSize {
    pub fn bytes(self) -> Option<u64> {
        match self {
            PageSize::Unspecified => None,
            PageSize::K4 => Some(4 << 10),
            PageSize::K16 => Some(16 << 10),
            PageSize::K64 => Some(64 << 10),
        }
    }
}

/// A checked arm64 Image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arm64Image {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
    pub page_size: PageSize,
    /// The lifeboat version from the `LIFEBOAT` header; `None` for an Image without one.
    pub version: Option<String>,
}

/// Why a file is not an Image lifeboat can load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arm64ImageError {
    /// Shorter than the 64-byte header.
    TooShort { len: usize },
    /// No `"ARM\x64"` at 0x38.
    NoMagic,
    /// `image_size` is 0 (Linux before 3.17): where the bss ends is unknown.
    ZeroImageSize,
    /// The flags say big-endian; lifeboat and the kernels it runs under are little-endian.
    BigEndian,
    /// A 16K or 64K page Image: lifeboat's capture kernel is built for 4K pages.
    PageSize { page_size: PageSize },
    /// `text_offset` is not a multiple of 4 KiB, so no kexec segment can start there.
    TextOffset { text_offset: u64 },
    /// `image_size` is smaller than the file: the header is wrong.
    ImageSizeBelowFile { image_size: u64, file: u64 },
    /// A `LIFEBOAT` header for another machine or of an unknown version.
    LifeboatHeader { version: u32, machine: u32 },
}

impl fmt::Display for Arm64ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Arm64ImageError::*;
        match self {
            TooShort { len } => write!(f, "only {len} bytes (an arm64 Image header alone is {HEADER_SIZE})"),
            NoMagic => write!(f, "no arm64 Image header (magic \"ARM\\x64\" at 0x38)"),
            ZeroImageSize => write!(f, "the Image header's image_size is 0, so its memory size is unknown"),
            BigEndian => write!(f, "a big-endian Image (flags bit 0); this machine runs little-endian"),
            PageSize { page_size } => write!(
                f,
                "an Image built for {} KiB pages; lifeboat's capture kernel uses 4 KiB pages",
                page_size.bytes().unwrap_or(0) >> 10
            ),
            TextOffset { text_offset } => {
                write!(f, "text_offset {text_offset:#x} is not a multiple of 4 KiB")
            }
            ImageSizeBelowFile { image_size, file } => {
                write!(f, "image_size {image_size:#x} is smaller than the file ({file:#x} bytes)")
            }
            LifeboatHeader { version, machine } => write!(
                f,
                "LIFEBOAT header version {version} for ELF machine {machine}; this loader knows version \
                 {IMAGE_HEADER_VERSION} for machine {EM_AARCH64}: use the lifeboat tool of the same release"
            ),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `file` has the arm64 Image magic (the only thing kexec's probes look at).
pub fn has_magic(file: &[u8]) -> bool {
    ImageHeader::parse(file).is_ok()
}

impl Arm64Image {
    pub fn parse(file: &[u8]) -> Result<Self, Arm64ImageError> {
        let header = ImageHeader::parse(file).map_err(|e| match e {
            ImageError::TooShort(len) => Arm64ImageError::TooShort { len },
            // The only other error `parse` returns.
            _ => Arm64ImageError::NoMagic,
        })?;
        let ImageHeader {
            text_offset,
            image_size,
            flags,
            ..
        } = header;
        // Not `ImageHeader::check`: it refuses the unspecified page size of a Linux Image.
        if image_size == 0 {
            return Err(Arm64ImageError::ZeroImageSize);
        }
        if flags & FLAG_BE != 0 {
            return Err(Arm64ImageError::BigEndian);
        }
        let page_size = match header.page_size_field() {
            0 => PageSize::Unspecified,
            1 => PageSize::K4,
            2 => PageSize::K16,
            _ => PageSize::K64,
        };
        if matches!(page_size, PageSize::K16 | PageSize::K64) {
            return Err(Arm64ImageError::PageSize { page_size });
        }
        if !text_offset.is_multiple_of(4096) {
            return Err(Arm64ImageError::TextOffset { text_offset });
        }
        if image_size < file.len() as u64 {
            return Err(Arm64ImageError::ImageSizeBelowFile {
                image_size,
                file: file.len() as u64,
            });
        }
        Ok(Self {
            text_offset,
            image_size,
            flags,
            page_size,
            version: lifeboat_version(file)?,
        })
    }

    /// Memory the Image segment occupies from its load address, rounded up to `page`.
    pub fn memsz(&self, page: u64) -> u64 {
        self.image_size.div_ceil(page) * page
    }
}

/// The `version=` string of a `LIFEBOAT` header (magic, u32 header version 1, u32 machine 183,
/// u64 entry offset, u64 reserved, `"version=<semver>\0"`) in the first [`MARKER_SEARCH`]
/// bytes, 8-byte aligned.
fn lifeboat_version(file: &[u8]) -> Result<Option<String>, Arm64ImageError> {
    let end = file.len().min(MARKER_SEARCH);
    let mut at = 0;
    while at + LIFEBOAT_HEADER_FIXED < end {
        if &file[at..at + 8] == b"LIFEBOAT" {
            let version = u32_at(file, at + 8);
            let machine = u32_at(file, at + 12);
            if version != IMAGE_HEADER_VERSION || machine != EM_AARCH64 {
                return Err(Arm64ImageError::LifeboatHeader { version, machine });
            }
            let fixed_end = at + LIFEBOAT_HEADER_FIXED;
            let tail = &file[fixed_end..file.len().min(fixed_end + 72)];
            return Ok(bzimage::version_string(tail).map(str::to_string));
        }
        at += 8;
    }
    Ok(None)
}

/// Test images.
#[cfg(test)]
pub(crate) mod testimage {
    /// A 4K-page lifeboat Image: text_offset 0, image_size 0x61000, version 0.1.0 in a
    /// `LIFEBOAT` header at 0x40.
    pub fn lifeboat_image() -> Vec<u8> {
        let mut b = vec![0u8; 0x3000];
        b[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
        b[0x10..0x18].copy_from_slice(&0x61000u64.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&(1u64 << 1 | 1 << 3).to_le_bytes());
        b[0x38..0x3C].copy_from_slice(b"ARM\x64");
        b[0x40..0x48].copy_from_slice(b"LIFEBOAT");
        b[0x48..0x4C].copy_from_slice(&1u32.to_le_bytes());
        b[0x4C..0x50].copy_from_slice(&183u32.to_le_bytes());
        b[0x60..0x6E].copy_from_slice(b"version=0.1.0\0");
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testimage::lifeboat_image;
    use super::*;

    #[test]
    fn reads_a_good_image() {
        let img = Arm64Image::parse(&lifeboat_image()).unwrap();
        assert_eq!(
            img,
            Arm64Image {
                text_offset: 0,
                image_size: 0x61000,
                flags: 0b1010,
                page_size: PageSize::K4,
                version: Some("0.1.0".into()),
            }
        );
        assert_eq!(img.memsz(4096), 0x61000);
        assert_eq!(img.memsz(65536), 0x70000);
        // A Linux Image: text_offset 0x80000, page size unspecified, no LIFEBOAT header.
        let mut b = lifeboat_image();
        b[0x40..0x48].copy_from_slice(b"linuxxxx");
        b[0x08..0x10].copy_from_slice(&0x80000u64.to_le_bytes());
        b[0x18] = 0;
        let img = Arm64Image::parse(&b).unwrap();
        assert_eq!(
            (img.text_offset, img.page_size, img.version),
            (0x80000, PageSize::Unspecified, None)
        );
    }

    #[test]
    fn refuses_bad_headers() {
        type Mutation = fn(&mut Vec<u8>);
        let cases: Vec<(Mutation, Arm64ImageError)> = vec![
            (|b| b[0x3B] = 0x65, Arm64ImageError::NoMagic),
            (|b| b[0x10..0x18].fill(0), Arm64ImageError::ZeroImageSize),
            (|b| b[0x18] |= 1, Arm64ImageError::BigEndian),
            (
                |b| b[0x18] = 2 << 1,
                Arm64ImageError::PageSize {
                    page_size: PageSize::K16,
                },
            ),
            (
                |b| b[0x18] = 3 << 1,
                Arm64ImageError::PageSize {
                    page_size: PageSize::K64,
                },
            ),
            (
                |b| b[0x08] = 0x10,
                Arm64ImageError::TextOffset { text_offset: 0x10 },
            ),
            (
                |b| b[0x10..0x18].copy_from_slice(&0x1000u64.to_le_bytes()),
                Arm64ImageError::ImageSizeBelowFile {
                    image_size: 0x1000,
                    file: 0x3000,
                },
            ),
            (
                |b| b[0x4C] = 62,
                Arm64ImageError::LifeboatHeader {
                    version: 1,
                    machine: 62,
                },
            ),
        ];
        for (i, (mutate, want)) in cases.into_iter().enumerate() {
            let mut b = lifeboat_image();
            mutate(&mut b);
            assert_eq!(Arm64Image::parse(&b).unwrap_err(), want, "case {i}");
        }
        assert_eq!(
            Arm64Image::parse(&[0u8; 63]).unwrap_err(),
            Arm64ImageError::TooShort { len: 63 }
        );
        // A bzImage is not an Image.
        let bz = crate::bzimage::testimage::lifeboat_bzimage();
        assert!(!has_magic(&bz));
        assert_eq!(
            Arm64Image::parse(&bz).unwrap_err(),
            Arm64ImageError::NoMagic
        );
        assert!(Arm64ImageError::PageSize {
            page_size: PageSize::K64
        }
        .to_string()
        .contains("64 KiB pages"));
    }

    /// The Image `cargo xtask build` wrote, when there is one.
    #[test]
    fn the_built_image_if_present() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/lifeboat/aarch64/Image"
        );
        if let Ok(b) = std::fs::read(p) {
            let img = Arm64Image::parse(&b).unwrap();
            assert_ne!(img.image_size, 0);
        }
    }
}
