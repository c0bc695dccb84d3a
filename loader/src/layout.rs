//! Where the `kexec_load` segments go inside the crash reservation, and how big a reservation
//! lifeboat needs (`lifeboat estimate`).
//!
//! The kernel accepts crash segments that are page-aligned, non-overlapping and inside
//! `crashk_res` (`kernel/kexec_core.c sanity_check_segment_list()`), with the entry point
//! inside it too. lifeboat's layout, bottom up:
//!
//! | segment | size | alignment |
//! |---|---|---|
//! | elfcorehdr | 64 + 56 × program headers, page-rounded | 4 KiB |
//! | boot_params | 4 KiB zero page + command line + NUL, page-rounded | 4 KiB |
//! | entry stub | 4 KiB | 4 KiB |
//! | payload | `PAGE_ALIGN(init_size)` | `kernel_alignment` |
//!
//! When `kernel_alignment` is large the payload-first order can waste less, so both orders are
//! tried.

use crate::memmap::Range;
use std::fmt;

pub const PAGE: u64 = 4096;
/// Size of `struct boot_params`.
pub const ZERO_PAGE: u64 = 4096;
/// The entry stub's segment.
pub const STUB_SIZE: u64 = PAGE;

pub fn page_align(x: u64) -> u64 {
    align_up(x, PAGE)
}

pub fn align_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

/// What has to fit.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// elfcorehdr bytes.
    pub elfcorehdr: u64,
    /// Command line bytes, without the NUL.
    pub cmdline: u64,
    /// `PAGE_ALIGN(init_size)`.
    pub payload_memsz: u64,
    /// Payload alignment (`kernel_alignment`, ≥ 4 KiB).
    pub kernel_alignment: u64,
}

impl Sizes {
    pub fn elfcorehdr_memsz(&self) -> u64 {
        page_align(self.elfcorehdr)
    }
    pub fn boot_params_memsz(&self) -> u64 {
        page_align(ZERO_PAGE + self.cmdline + 1)
    }
    /// The small segments together.
    fn small(&self) -> u64 {
        self.elfcorehdr_memsz() + self.boot_params_memsz() + STUB_SIZE
    }
}

/// Physical addresses of the four segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub elfcorehdr: u64,
    pub boot_params: u64,
    pub stub: u64,
    pub payload: u64,
    /// One past the highest byte used.
    pub end: u64,
}

/// The reservation is too small for the segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooSmall {
    /// Bytes needed from the start of the reservation.
    pub need: u64,
    /// Bytes the reservation has.
    pub have: u64,
}

impl fmt::Display for TooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs {} bytes, the reservation has {}",
            self.need, self.have
        )
    }
}

/// Places the segments inside `reservation`.
pub fn place(reservation: Range, s: &Sizes) -> Result<Placement, TooSmall> {
    let start = page_align(reservation.start);
    // Small segments first, payload aligned above them.
    let small_first = {
        let elfcorehdr = start;
        let boot_params = elfcorehdr + s.elfcorehdr_memsz();
        let stub = boot_params + s.boot_params_memsz();
        let payload = align_up(stub + STUB_SIZE, s.kernel_alignment);
        Placement {
            elfcorehdr,
            boot_params,
            stub,
            payload,
            end: payload + s.payload_memsz,
        }
    };
    // Payload first, small segments above it.
    let payload_first = {
        let payload = align_up(start, s.kernel_alignment);
        let elfcorehdr = payload + s.payload_memsz;
        let boot_params = elfcorehdr + s.elfcorehdr_memsz();
        let stub = boot_params + s.boot_params_memsz();
        Placement {
            elfcorehdr,
            boot_params,
            stub,
            payload,
            end: stub + STUB_SIZE,
        }
    };
    lower_end_fitting(reservation, small_first, payload_first, |p| p.end)
}

/// Of two layouts, the one that ends lower (`first` when they end together), if it ends inside
/// `reservation`.
fn lower_end_fitting<P>(
    reservation: Range,
    first: P,
    second: P,
    end: impl Fn(&P) -> u64,
) -> Result<P, TooSmall> {
    let best = if end(&first) <= end(&second) {
        first
    } else {
        second
    };
    if end(&best) <= reservation.end {
        Ok(best)
    } else {
        Err(TooSmall {
            need: end(&best) - reservation.start,
            have: reservation.len(),
        })
    }
}

/// Bytes a reservation must have for `kexec_load`, wherever it starts (worst-case alignment).
pub fn kexec_load_need(s: &Sizes) -> u64 {
    s.small() + (s.kernel_alignment - PAGE) + s.payload_memsz
}

/// Room `kexec_file_load` takes besides the payload and the elfcorehdr: the purgatory (text,
/// data, stack; about 20 KiB in Linux 6.x) and boot_params with the command line and
/// setup_data (EFI, RNG seed). Generous on purpose.
pub const KEXEC_FILE_OVERHEAD: u64 = 64 << 10;
/// Program headers Linux ≥ 6.5 with CONFIG_CRASH_HOTPLUG leaves room for in the elfcorehdr
/// (`CONFIG_CRASH_MAX_MEMORY_RANGES`, default 8192).
pub const HOTPLUG_MAX_MEMORY_RANGES: u64 = 8192;

/// Room the kernel leaves in its elfcorehdr for memory hotplug: a program header (56 bytes)
/// for each of [`HOTPLUG_MAX_MEMORY_RANGES`] when `crash_hotplug` is on.
fn hotplug_room(crash_hotplug: bool) -> u64 {
    if crash_hotplug {
        HOTPLUG_MAX_MEMORY_RANGES * 56
    } else {
        0
    }
}

/// Bytes a reservation must have for `kexec_file_load` (estimated: the kernel lays it out).
pub fn kexec_file_load_need(s: &Sizes, crash_hotplug: bool) -> u64 {
    page_align(s.elfcorehdr + hotplug_room(crash_hotplug))
        + KEXEC_FILE_OVERHEAD
        + (s.kernel_alignment - PAGE)
        + s.payload_memsz
}

// ---- arm64 ----
//
// The Image goes at a 2 MiB-aligned base + `text_offset` (booting.rst; the same rule as Linux's
// kexec_file `image_load()` and kexec-tools' `arm64_locate_kernel_segment()`), `image_size`
// bytes. The elfcorehdr, the DTB and the entry trampoline follow it, each page-aligned (the
// kernel's page size: segments must be page-aligned, `sanity_check_segment_list()`), the DTB
// moved up to the next 2 MiB boundary if it would cross one (booting.rst: the DTB is mapped
// with blocks of up to 2 MiB). When the reservation does not start 2 MiB-aligned the small
// segments may fit below the Image instead; the order that ends lower wins. Linux reserves
// arm64 crash memory 2 MiB-aligned (`CRASH_ALIGN`), so in practice the Image is at the bottom.

/// arm64 Image load alignment (`MIN_KIMG_ALIGN`).
pub const ARM64_KIMAGE_ALIGN: u64 = lifeboat_arch::aarch64::image::IMAGE_ALIGN;
/// kexec_file's alignment for the arm64 elfcorehdr (`SZ_64K`, the largest page size).
pub const ARM64_FILE_ELFCOREHDR_ALIGN: u64 = 64 << 10;
/// DTB size assumed by `estimate` when `/sys/firmware/fdt` cannot be read (not root).
pub const ARM64_DTB_ESTIMATE: u64 = 64 << 10;

/// What has to fit on arm64.
#[derive(Clone, Copy, Debug)]
pub struct Arm64Sizes {
    pub text_offset: u64,
    /// `image_size` rounded up to `page`.
    pub image_memsz: u64,
    pub elfcorehdr: u64,
    pub dtb: u64,
    /// The running kernel's page size.
    pub page: u64,
}

/// Physical addresses of the four arm64 segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64Placement {
    /// The Image's load address (2 MiB-aligned base + text_offset).
    pub image: u64,
    pub elfcorehdr: u64,
    pub dtb: u64,
    pub trampoline: u64,
    /// One past the highest byte used.
    pub end: u64,
}

impl Arm64Sizes {
    pub fn elfcorehdr_memsz(&self) -> u64 {
        align_up(self.elfcorehdr, self.page)
    }
    pub fn dtb_memsz(&self) -> u64 {
        align_up(self.dtb, self.page)
    }
    /// Where the DTB goes at or after `at`: page-aligned, not crossing a 2 MiB boundary.
    fn dtb_at(&self, at: u64) -> u64 {
        let at = align_up(at, self.page);
        if self.dtb > 0 && at / ARM64_KIMAGE_ALIGN != (at + self.dtb - 1) / ARM64_KIMAGE_ALIGN {
            align_up(at, ARM64_KIMAGE_ALIGN)
        } else {
            at
        }
    }
    /// elfcorehdr, DTB, trampoline from `at`: (elfcorehdr, dtb, trampoline, end).
    fn small_from(&self, at: u64) -> (u64, u64, u64, u64) {
        let elfcorehdr = align_up(at, self.page);
        let dtb = self.dtb_at(elfcorehdr + self.elfcorehdr_memsz());
        let trampoline = dtb + self.dtb_memsz();
        (elfcorehdr, dtb, trampoline, trampoline + self.page)
    }
}

/// Places the arm64 segments inside `reservation`.
pub fn place_arm64(reservation: Range, s: &Arm64Sizes) -> Result<Arm64Placement, TooSmall> {
    // The Image first, the small segments above it.
    let image_first = {
        let image = align_up(reservation.start, ARM64_KIMAGE_ALIGN) + s.text_offset;
        let (elfcorehdr, dtb, trampoline, end) = s.small_from(image + s.image_memsz);
        Arm64Placement {
            image,
            elfcorehdr,
            dtb,
            trampoline,
            end,
        }
    };
    // The small segments first, the Image at the next base above them.
    let small_first = {
        let (elfcorehdr, dtb, trampoline, small_end) = s.small_from(reservation.start);
        let base = align_up(small_end.saturating_sub(s.text_offset), ARM64_KIMAGE_ALIGN);
        let image = base + s.text_offset;
        Arm64Placement {
            image,
            elfcorehdr,
            dtb,
            trampoline,
            end: image + s.image_memsz,
        }
    };
    lower_end_fitting(reservation, image_first, small_first, |p| p.end)
}

/// Bytes an arm64 reservation needs for `kexec_load` (it starts 2 MiB-aligned on arm64).
pub fn arm64_kexec_load_need(s: &Arm64Sizes) -> u64 {
    let all = Range {
        start: 0,
        end: u64::MAX,
    };
    place_arm64(all, s).map_or(u64::MAX, |p| p.end)
}

/// Bytes an arm64 reservation needs for `kexec_file_load` (estimated: the kernel lays it out).
/// Linux puts the Image at the bottom, then everything else above its end, top-down: the DTB
/// 2 MiB-aligned, the elfcorehdr 64 KiB-aligned (`arch/arm64/kernel/machine_kexec_file.c
/// load_other_segments()`); arm64 has no purgatory. Generous: the elfcorehdr is counted above
/// the DTB, though it often fits below.
pub fn arm64_kexec_file_load_need(s: &Arm64Sizes, crash_hotplug: bool) -> u64 {
    align_up(s.text_offset + s.image_memsz, ARM64_KIMAGE_ALIGN)
        + align_up(s.dtb, s.page)
        + align_up(
            s.elfcorehdr + hotplug_room(crash_hotplug),
            ARM64_FILE_ELFCOREHDR_ALIGN,
        )
}

/// Rounds a byte count up to whole MiB (the `crashkernel=` unit lifeboat suggests).
pub fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Evaluates a `crashkernel=` value for a machine with `ram` bytes, as Linux
/// `parse_crashkernel_mem()` does (`kernel/crash_core.c`): `start-[end]:size[,…]` picks the
/// first range with `start <= ram < end`; a plain size is just that. `Some(0)` when no range
/// matches (nothing is reserved); `None` if the syntax is wrong.
pub fn eval_crashkernel(spec: &str, ram: u64) -> Option<u64> {
    use lifeboat_capture::cmdline::memparse;
    if !spec.contains(':') {
        return memparse(spec);
    }
    for item in spec.split(',') {
        let (span, size) = item.split_once(':')?;
        let (start, end) = span.split_once('-')?;
        let start = memparse(start)?;
        let end = if end.is_empty() {
            u64::MAX
        } else {
            memparse(end)?
        };
        let size = memparse(size)?;
        if ram >= start && ram < end {
            return Some(size);
        }
    }
    Some(0)
}

/// Debian kdump-tools' reservation (`/etc/default/grub.d/kdump-tools.cfg`).
pub const DEBIAN_KDUMP_TOOLS: &str = "384M-:128M";
/// The RHEL/Fedora default (kexec-tools `kdumpctl get-default-crashkernel` on x86_64).
pub const RHEL_FEDORA: &str = "1G-4G:192M,4G-64G:256M,64G-:512M";
/// Smallest reservation that worked for Debian's own kernel as capture kernel (QEMU x86_64,
/// 1 and 4 GiB guests; /work/shared/reference/measured-baselines.md).
pub const DEBIAN_MEASURED_MIN_MIB: u64 = 80;
/// The same on arm64 (QEMU `virt`, 1 GiB guest; measured-baselines.md).
pub const DEBIAN_MEASURED_MIN_MIB_ARM64: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        elfcorehdr: 64 + 7 * 56,
        cmdline: 70,
        payload_memsz: 0x2d9000,
        kernel_alignment: 0x1000,
    };

    #[test]
    fn places_bottom_up_inside_the_reservation() {
        let res = Range {
            start: 0xd00_0000,
            end: 0xe00_0000,
        };
        let p = place(res, &SIZES).unwrap();
        assert_eq!(
            p,
            Placement {
                elfcorehdr: 0xd00_0000,
                boot_params: 0xd00_1000,
                stub: 0xd00_3000,
                payload: 0xd00_4000,
                end: 0xd2d_d000
            }
        );
        assert_eq!(kexec_load_need(&SIZES), 0x2dd000);
        // Exactly enough is enough; a page less is not.
        assert!(place(
            Range {
                start: 0xd00_0000,
                end: 0xd2d_d000
            },
            &SIZES
        )
        .is_ok());
        assert_eq!(
            place(
                Range {
                    start: 0xd00_0000,
                    end: 0xd2d_c000
                },
                &SIZES
            )
            .unwrap_err(),
            TooSmall {
                need: 0x2dd000,
                have: 0x2dc000
            }
        );
        // crashkernel=3M holds it with kexec_load.
        assert!(place(
            Range {
                start: 0x100_0000,
                end: 0x130_0000
            },
            &SIZES
        )
        .is_ok());
    }

    #[test]
    fn large_alignment_puts_the_payload_first_when_that_fits_better() {
        let s = Sizes {
            kernel_alignment: 0x20_0000,
            ..SIZES
        };
        let p = place(
            Range {
                start: 0x100_0000,
                end: 0x140_0000,
            },
            &s,
        )
        .unwrap();
        assert_eq!(p.payload, 0x100_0000);
        assert_eq!(p.elfcorehdr, 0x100_0000 + 0x2d9000);
        // Unaligned start: small segments fill the gap below the payload.
        let p = place(
            Range {
                start: 0x10f_0000,
                end: 0x160_0000,
            },
            &s,
        )
        .unwrap();
        assert_eq!((p.elfcorehdr, p.payload), (0x10f_0000, 0x120_0000));
        assert!(p.stub + STUB_SIZE <= p.payload);
    }

    #[test]
    fn estimates() {
        assert_eq!(mib_up(kexec_load_need(&SIZES)), 3);
        assert_eq!(mib_up(kexec_file_load_need(&SIZES, false)), 3);
        assert_eq!(mib_up(kexec_file_load_need(&SIZES, true)), 4);
        assert_eq!(mib_up(1 << 20), 1);
    }

    const ARM64: Arm64Sizes = Arm64Sizes {
        text_offset: 0,
        image_memsz: 0x61000,
        elfcorehdr: 64 + 5 * 56,
        dtb: 0x1a00,
        page: 0x1000,
    };

    #[test]
    fn arm64_places_the_image_at_a_2m_base_and_the_rest_above() {
        let res = Range {
            start: 0xbc00_0000,
            end: 0xc000_0000,
        };
        let p = place_arm64(res, &ARM64).unwrap();
        assert_eq!(
            p,
            Arm64Placement {
                image: 0xbc00_0000,
                elfcorehdr: 0xbc06_1000,
                dtb: 0xbc06_2000,
                trampoline: 0xbc06_4000,
                end: 0xbc06_5000
            }
        );
        assert_eq!(arm64_kexec_load_need(&ARM64), 0x65000);
        // text_offset 0x80000 (older Linux Images), 64 KiB pages: the small segments use the
        // gap below the Image.
        let s = Arm64Sizes {
            text_offset: 0x8_0000,
            page: 0x1_0000,
            image_memsz: 0x7_0000,
            ..ARM64
        };
        let p = place_arm64(res, &s).unwrap();
        assert_eq!(
            (p.image, p.elfcorehdr, p.dtb, p.trampoline, p.end),
            (
                0xbc08_0000,
                0xbc00_0000,
                0xbc01_0000,
                0xbc02_0000,
                0xbc0f_0000
            )
        );
        assert!([p.image, p.elfcorehdr, p.dtb, p.trampoline]
            .iter()
            .all(|a| a % 0x1_0000 == 0));
        // Too small: the exact need is reported.
        let small = Range {
            start: 0xbc00_0000,
            end: 0xbc06_4000,
        };
        assert_eq!(
            place_arm64(small, &ARM64).unwrap_err(),
            TooSmall {
                need: 0x65000,
                have: 0x64000
            }
        );
    }

    #[test]
    fn arm64_dtb_never_crosses_2m() {
        // An Image ending just below a 2 MiB boundary: the DTB would straddle it.
        let s = Arm64Sizes {
            image_memsz: 0x1f_d000,
            dtb: 0x3000,
            ..ARM64
        };
        let p = place_arm64(
            Range {
                start: 0x4000_0000,
                end: 0x4100_0000,
            },
            &s,
        )
        .unwrap();
        assert_eq!(p.elfcorehdr, 0x401f_d000);
        assert_eq!(p.dtb, 0x4020_0000);
        assert_eq!(p.dtb / (2 << 20), (p.dtb + s.dtb - 1) / (2 << 20));
        // A reservation starting mid-way through a 2 MiB block: small segments below the Image.
        let p = place_arm64(
            Range {
                start: 0x40f0_0000,
                end: 0x4200_0000,
            },
            &ARM64,
        )
        .unwrap();
        assert_eq!((p.elfcorehdr, p.image), (0x40f0_0000, 0x4100_0000));
        assert!(p.trampoline + 0x1000 <= p.image);
    }

    #[test]
    fn arm64_estimates() {
        assert_eq!(mib_up(arm64_kexec_load_need(&ARM64)), 1);
        // kexec_file: the DTB starts on the next 2 MiB boundary above the Image.
        assert_eq!(
            arm64_kexec_file_load_need(&ARM64, false),
            (2 << 20) + 0x2000 + 0x1_0000
        );
        assert_eq!(mib_up(arm64_kexec_file_load_need(&ARM64, true)), 3);
    }

    #[test]
    fn crashkernel_formulas() {
        let g = 1u64 << 30;
        assert_eq!(eval_crashkernel(RHEL_FEDORA, g - (512 << 10)), Some(0));
        assert_eq!(eval_crashkernel(RHEL_FEDORA, 2 * g), Some(192 << 20));
        assert_eq!(eval_crashkernel(RHEL_FEDORA, 4 * g), Some(256 << 20));
        assert_eq!(eval_crashkernel(RHEL_FEDORA, 100 * g), Some(512 << 20));
        assert_eq!(eval_crashkernel(DEBIAN_KDUMP_TOOLS, g), Some(128 << 20));
        assert_eq!(eval_crashkernel(DEBIAN_KDUMP_TOOLS, 256 << 20), Some(0));
        assert_eq!(eval_crashkernel("16M", g), Some(16 << 20));
        assert_eq!(eval_crashkernel("1G-x:5M", g), None);
    }
}
