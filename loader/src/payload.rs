//! The capture kernel file, whichever machine `lifeboat load` runs on: a bzImage on x86_64
//! ([`crate::bzimage`]), an arm64 Image on aarch64 ([`crate::arm64image`]). An image for the
//! other machine is refused with a message that names both.

use std::fmt;

use crate::arch::Arch;
use crate::arm64image::{self, Arm64Image, Arm64ImageError};
use crate::bzimage::{ImageError, LifeboatImage};

/// A checked capture kernel.
#[derive(Clone, Debug)]
pub enum Payload {
    BzImage(LifeboatImage),
    Arm64(Arm64Image),
}

/// Why a file cannot be this machine's capture kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadError {
    BzImage(ImageError),
    Arm64(Arm64ImageError),
    /// A kernel image for the other machine.
    WrongArch {
        image: Arch,
        host: Arch,
    },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::BzImage(e) => write!(f, "{e}"),
            PayloadError::Arm64(e) => write!(f, "{e}"),
            PayloadError::WrongArch { image, host } => write!(
                f,
                "it is {} and this machine is {}",
                match image {
                    Arch::X86_64 => "an x86 bzImage",
                    Arch::Aarch64 => "an arm64 Image",
                },
                host.name()
            ),
        }
    }
}

/// Whether `file` carries the x86 boot-protocol signature ("HdrS" at 0x202).
fn looks_like_bzimage(file: &[u8]) -> bool {
    file.get(0x202..0x206) == Some(b"HdrS")
}

impl Payload {
    /// Checks `file` as the capture kernel for `arch`.
    pub fn parse(file: &[u8], arch: Arch) -> Result<Self, PayloadError> {
        match arch {
            // Exactly the bzImage checks as before; only a file they refuse is looked at again.
            Arch::X86_64 => LifeboatImage::parse(file)
                .map(Payload::BzImage)
                .map_err(|e| {
                    if e == ImageError::NotBzImage && arm64image::has_magic(file) {
                        PayloadError::WrongArch {
                            image: Arch::Aarch64,
                            host: arch,
                        }
                    } else {
                        PayloadError::BzImage(e)
                    }
                }),
            Arch::Aarch64 => {
                if !arm64image::has_magic(file) && looks_like_bzimage(file) {
                    return Err(PayloadError::WrongArch {
                        image: Arch::X86_64,
                        host: arch,
                    });
                }
                Arm64Image::parse(file)
                    .map(Payload::Arm64)
                    .map_err(PayloadError::Arm64)
            }
        }
    }

    /// The lifeboat version the image says it is.
    pub fn version(&self) -> &str {
        match self {
            Payload::BzImage(i) => &i.version,
            Payload::Arm64(i) => i.version.as_deref().unwrap_or("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arm64image::testimage::lifeboat_image;
    use crate::bzimage::testimage::lifeboat_bzimage;

    #[test]
    fn each_machine_takes_its_own_image_and_names_the_other() {
        assert!(matches!(
            Payload::parse(&lifeboat_bzimage(), Arch::X86_64),
            Ok(Payload::BzImage(_))
        ));
        assert!(matches!(
            Payload::parse(&lifeboat_image(), Arch::Aarch64),
            Ok(Payload::Arm64(_))
        ));
        let e = Payload::parse(&lifeboat_image(), Arch::X86_64).unwrap_err();
        assert_eq!(
            e,
            PayloadError::WrongArch {
                image: Arch::Aarch64,
                host: Arch::X86_64
            }
        );
        assert_eq!(
            e.to_string(),
            "it is an arm64 Image and this machine is x86_64"
        );
        let e = Payload::parse(&lifeboat_bzimage(), Arch::Aarch64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is an x86 bzImage and this machine is aarch64"
        );
        // Neither: each machine's own complaint.
        let elf = [0x7fu8, b'E', b'L', b'F'].repeat(1024);
        assert_eq!(
            Payload::parse(&elf, Arch::X86_64).unwrap_err(),
            PayloadError::BzImage(ImageError::NotBzImage)
        );
        assert_eq!(
            Payload::parse(&elf, Arch::Aarch64).unwrap_err(),
            PayloadError::Arm64(Arm64ImageError::NoMagic)
        );
        assert_eq!(
            Payload::parse(&lifeboat_image(), Arch::Aarch64)
                .unwrap()
                .version(),
            "0.1.0"
        );
    }
}
