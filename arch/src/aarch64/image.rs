//! The arm64 Linux Image header (linux `Documentation/arch/arm64/booting.rst`): the 64 bytes
//! at the start of `target/lifeboat/aarch64/Image` that kexec_file_load, kexec-tools and QEMU
//! read. Plain data: the entry code emits these bytes, `cargo xtask build` and the loader
//! check them with this module.

/// `magic` at offset 0x38: "ARM\x64".
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Size of the header.
pub const HEADER_SIZE: usize = 64;
/// Offset of lifeboat's own header ("LIFEBOAT", version, machine, entry offset) in the image.
pub const LIFEBOAT_HEADER_OFFSET: usize = 0x40;
/// The image may be placed at any 2 MiB-aligned base (plus `text_offset`).
pub const IMAGE_ALIGN: u64 = 2 << 20;

/// `flags` bit 0: big-endian kernel.
pub const FLAG_BE: u64 = 1 << 0;
/// `flags` bits 1-2: kernel page size (0 unspecified, 1 = 4K, 2 = 16K, 3 = 64K).
pub const FLAG_PAGE_SIZE_SHIFT: u32 = 1;
/// `flags` bit 3: the image may be placed anywhere in physical memory (not only near RAM base).
pub const FLAG_PHYS_ANYWHERE: u64 = 1 << 3;
/// lifeboat's flags: little-endian, 4K pages, anywhere.
pub const LIFEBOAT_FLAGS: u64 = (1 << FLAG_PAGE_SIZE_SHIFT) | FLAG_PHYS_ANYWHERE;

/// The header, as in booting.rst (all fields little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageHeader {
    pub code0: u32,
    pub code1: u32,
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
    pub res2: u64,
    pub res3: u64,
    pub res4: u64,
    pub magic: u32,
    pub res5: u32,
}
const _: () = assert!(core::mem::size_of::<ImageHeader>() == HEADER_SIZE);

/// Why bytes are not a usable arm64 Image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort(usize),
    BadMagic(u32),
    ZeroImageSize,
    BigEndian,
    /// `flags` names a page size other than 4K (what lifeboat is built for).
    PageSize(u64),
    /// `image_size` is smaller than the file.
    SizeBelowFile { image_size: u64, file: u64 },
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::TooShort(n) => write!(f, "{} bytes is too short for an arm64 Image header", n),
            ImageError::BadMagic(m) => write!(f, "magic {:#010x} at 0x38 is not \"ARM\\x64\"", m),
            ImageError::ZeroImageSize => write!(f, "image_size is 0 (kexec_file_load refuses such images)"),
            ImageError::BigEndian => write!(f, "the image is big-endian"),
            ImageError::PageSize(p) => write!(f, "page-size flag {} is not 4K", p),
            ImageError::SizeBelowFile { image_size, file } => {
                write!(f, "image_size {:#x} is smaller than the file ({:#x} bytes)", image_size, file)
            }
        }
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from(le_u32(b, off)) | (u64::from(le_u32(b, off + 4)) << 32)
}

impl ImageHeader {
    /// Read the header from the first bytes of an image file.
    pub fn parse(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < HEADER_SIZE {
            return Err(ImageError::TooShort(b.len()));
        }
        let h = ImageHeader {
            code0: le_u32(b, 0x00),
            code1: le_u32(b, 0x04),
            text_offset: le_u64(b, 0x08),
            image_size: le_u64(b, 0x10),
            flags: le_u64(b, 0x18),
            res2: le_u64(b, 0x20),
            res3: le_u64(b, 0x28),
            res4: le_u64(b, 0x30),
            magic: le_u32(b, 0x38),
            res5: le_u32(b, 0x3c),
        };
        if h.magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic(h.magic));
        }
        Ok(h)
    }

    /// The checks kexec_file_load makes, plus lifeboat's own: non-zero `image_size` covering
    /// the file, little-endian, 4K pages.
    pub fn check(&self, file_len: u64) -> Result<(), ImageError> {
        if self.image_size == 0 {
            return Err(ImageError::ZeroImageSize);
        }
        if self.flags & FLAG_BE != 0 {
            return Err(ImageError::BigEndian);
        }
        let page = (self.flags >> FLAG_PAGE_SIZE_SHIFT) & 3;
        if page != 1 {
            return Err(ImageError::PageSize(page));
        }
        if self.image_size < file_len {
            return Err(ImageError::SizeBelowFile { image_size: self.image_size, file: file_len });
        }
        Ok(())
    }

    /// The `flags` page-size field (bits 1-2): 0 unspecified, 1 = 4K, 2 = 16K, 3 = 64K.
    pub fn page_size_field(&self) -> u64 {
        (self.flags >> FLAG_PAGE_SIZE_SHIFT) & 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(image_size: u64, flags: u64) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        b[0x38..0x3c].copy_from_slice(b"ARM\x64");
        b
    }

    #[test]
    fn good_header_parses_and_checks() {
        let h = ImageHeader::parse(&header(0x40_0000, LIFEBOAT_FLAGS)).unwrap();
        assert_eq!(h.magic, IMAGE_MAGIC);
        assert_eq!(h.image_size, 0x40_0000);
        assert_eq!(h.check(0x10_0000), Ok(()));
        assert_eq!(h.check(0x50_0000), Err(ImageError::SizeBelowFile { image_size: 0x40_0000, file: 0x50_0000 }));
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(ImageHeader::parse(&[0u8; 10]), Err(ImageError::TooShort(10)));
        let mut b = header(1, LIFEBOAT_FLAGS);
        b[0x38] = b'X';
        assert!(matches!(ImageHeader::parse(&b), Err(ImageError::BadMagic(_))));
        let h = ImageHeader::parse(&header(0, LIFEBOAT_FLAGS)).unwrap();
        assert_eq!(h.check(0), Err(ImageError::ZeroImageSize));
        let h = ImageHeader::parse(&header(64, LIFEBOAT_FLAGS | FLAG_BE)).unwrap();
        assert_eq!(h.check(64), Err(ImageError::BigEndian));
        let h = ImageHeader::parse(&header(64, 3 << FLAG_PAGE_SIZE_SHIFT)).unwrap();
        assert_eq!(h.check(64), Err(ImageError::PageSize(3)));
    }
}
