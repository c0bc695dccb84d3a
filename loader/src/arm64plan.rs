//! arm64 `kexec_load`: the Image, the elfcorehdr, the device tree and the entry trampoline,
//! built by lifeboat as kexec-tools builds them (project reference §3.1), but without the
//! `_text` symbol Debian's arm64 kernel does not list (see [`crate::elfcorehdr::arm64_kernel_text`]).
//!
//! [`Arm64Facts::read`] gathers what the running system says (under [`Host`]'s root, so tests
//! use a fixture tree); [`build_plan`] is pure.

use crate::arch::Arch;
use crate::arm64image::Arm64Image;
use crate::commands::{read_crash_notes, warn, Failure, KexecLoadPlan};
use crate::dtb;
use crate::elfcorehdr::{self, CoreLayout, KernelText, NoteBuf};
use crate::host::{self, Host, Reservation};
use crate::kexec::Segment;
use crate::layout;
use crate::memmap::{self, Range};
use crate::trampoline;

/// What arm64 `kexec_load` needs, from plain data (the host values already read).
pub struct PlanInputs<'a> {
    pub cpu_notes: Vec<NoteBuf>,
    pub vmcoreinfo: Option<NoteBuf>,
    /// The kernel-text segment, when its virtual address is known.
    pub kernel_text: Option<KernelText>,
    pub ram: Vec<Range>,
    /// `PAGE_OFFSET - PHYS_OFFSET`, when known (else RAM `p_vaddr` is 0).
    pub linear_offset: Option<u64>,
    /// The range the segments go in (`crashk_res`).
    pub reservation: Range,
    /// Every crash range, `crashk_res` first: `linux,usable-memory-range`.
    pub usable: Vec<Range>,
    /// The running kernel's DTB (`/sys/firmware/fdt`).
    pub fdt: &'a [u8],
    pub image_bytes: &'a [u8],
    pub image: &'a Arm64Image,
    pub options: &'a str,
    /// The running kernel's page size.
    pub page: u64,
}

/// Builds the arm64 segments: Image, elfcorehdr, DTB, entry trampoline (pure: tested without
/// a kernel). The entry point is the trampoline ([`crate::trampoline`] says why).
pub fn build_plan(i: &PlanInputs) -> Result<KexecLoadPlan, Failure> {
    let core = CoreLayout {
        machine: Arch::Aarch64.elf_machine(),
        cpu_notes: i.cpu_notes.clone(),
        vmcoreinfo: i.vmcoreinfo,
        kernel_text: i.kernel_text,
        ram: i.ram.clone(),
        linear_offset: i.linear_offset,
    };
    let ehdr = core.build().map_err(|e| Failure::Build(e.to_string()))?;
    let dtb_for = |elfcorehdr: u64, reserve: u64| {
        dtb::crash_dtb(
            i.fdt,
            &dtb::CrashChosen {
                bootargs: i.options,
                elfcorehdr: Range {
                    start: elfcorehdr,
                    end: elfcorehdr + ehdr.len() as u64,
                },
                elfcorehdr_reserve: reserve,
                usable: &i.usable,
            },
        )
        .map_err(|e| Failure::Build(format!("/sys/firmware/fdt: {e}")))
    };
    // The DTB's length does not depend on the addresses in it (fixed-size cells).
    let dtb_len = dtb_for(0, i.page)?.len() as u64;
    let sizes = layout::Arm64Sizes {
        text_offset: i.image.text_offset,
        image_memsz: i.image.memsz(i.page),
        elfcorehdr: ehdr.len() as u64,
        dtb: dtb_len,
        page: i.page,
    };
    let p = layout::place_arm64(i.reservation, &sizes).map_err(Failure::kexec_load_too_small)?;
    let dtb = dtb_for(p.elfcorehdr, sizes.elfcorehdr_memsz())?;
    debug_assert_eq!(dtb.len() as u64, dtb_len);
    let mut segments = vec![
        Segment {
            name: "Image",
            bytes: i.image_bytes.to_vec(),
            mem: p.image,
            memsz: sizes.image_memsz,
        },
        Segment {
            name: "elfcorehdr",
            bytes: ehdr,
            mem: p.elfcorehdr,
            memsz: sizes.elfcorehdr_memsz(),
        },
        Segment {
            name: "dtb",
            bytes: dtb,
            mem: p.dtb,
            memsz: sizes.dtb_memsz(),
        },
        Segment {
            name: "trampoline",
            bytes: trampoline::trampoline(p.dtb, p.image).to_vec(),
            mem: p.trampoline,
            memsz: i.page,
        },
    ];
    segments.sort_by_key(|s| s.mem);
    Ok(KexecLoadPlan {
        segments,
        entry: p.trampoline,
        cmdline: i.options.to_string(),
        end: p.end,
    })
}

pub fn plan_kexec_load(
    host: &Host,
    iomem: &[memmap::IomemEntry],
    res: &Reservation,
    image_bytes: &[u8],
    image: &Arm64Image,
    options: &str,
) -> Result<KexecLoadPlan, Failure> {
    let reservation = res.range.ok_or(Failure::NotRoot)?;
    let f = Arm64Facts::read(host, iomem, reservation, &res.all)?;
    build_plan(&PlanInputs {
        cpu_notes: f.cpu_notes,
        vmcoreinfo: f.vmcoreinfo,
        kernel_text: f.kernel_text,
        ram: f.ram,
        linear_offset: f.linear_offset,
        reservation,
        usable: f.usable,
        fdt: &f.fdt,
        image_bytes,
        image,
        options,
        page: f.page,
    })
}

/// What arm64 `kexec_load` reads from the running system.
pub struct Arm64Facts {
    pub cpu_notes: Vec<NoteBuf>,
    pub vmcoreinfo: Option<NoteBuf>,
    pub kernel_text: Option<KernelText>,
    pub ram: Vec<Range>,
    pub linear_offset: Option<u64>,
    pub usable: Vec<Range>,
    pub fdt: Vec<u8>,
    pub page: u64,
}

impl Arm64Facts {
    /// Reads them (under the host's root); warns about what has to be left out.
    pub fn read(
        host: &Host,
        iomem: &[memmap::IomemEntry],
        reservation: Range,
        all: &[Range],
    ) -> Result<Self, Failure> {
        let (cpu_notes, vmcoreinfo) = read_crash_notes(host)?;
        let ram = memmap::dumpable_ram(iomem);
        let kallsyms = host.kallsyms();
        let kernel_text = match memmap::kernel_image(iomem) {
            Some((code, data_end)) => elfcorehdr::arm64_kernel_text(
                code,
                data_end,
                crate::sysfs::kallsyms_address(&kallsyms, "_stext"),
                crate::sysfs::kallsyms_address(&kallsyms, "__init_begin"),
            ),
            None => Err(String::from(
                "no \"Kernel code\"/\"Kernel data\" in /proc/iomem",
            )),
        };
        let kernel_text = kernel_text
        .map_err(|e| {
            warn(format_args!(
                "kernel-text segment left out of the elfcorehdr: {e} (the dump still holds that memory as RAM)"
            ))
        })
        .ok();
        let linear_offset = host
        .linear_offset_arm64(&ram)
        .map_err(|e| {
            warn(format_args!(
                "linear map offset unknown ({e}): RAM p_vaddr left 0 (crash and makedumpfile use VMCOREINFO's \
                 PHYS_OFFSET instead)"
            ))
        })
        .ok();
        let fdt = host.boot_fdt().map_err(|e| Failure::System {
            what: "/sys/firmware/fdt (the running kernel's device tree, which the capture kernel's is made from)"
                .into(),
            err: e.to_string(),
        })?;
        let mut usable = vec![reservation];
        usable.extend(all.iter().copied().filter(|r| *r != reservation));
        Ok(Self {
            cpu_notes,
            vmcoreinfo,
            kernel_text,
            ram,
            linear_offset,
            usable,
            fdt,
            page: host::page_size(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::find_reservation;
    use crate::kexec::Syscall;
    use crate::payload::Payload;

    /// arm64 kexec_load from a fixture root: /proc/iomem, the CPU notes, VMCOREINFO,
    /// /proc/kallsyms (with `_stext`, without `_text`), /proc/kcore's headers and
    /// /sys/firmware/fdt, read through `Host` as on a machine; the elfcorehdr read back with the
    /// capture kernel's parser, the DTB with the capture kernel's and the `fdt` crate.
    #[test]
    fn arm64_kexec_load_plan_from_a_fixture_root() {
        use crate::arm64image::testimage::lifeboat_image;
        use crate::memmap::arm64_fixtures::IOMEM_VIRT_2G;
        use lifeboat_capture::elfcore::{ElfCoreHeader, Limits, EM_AARCH64};
        use lifeboat_capture::phys::{PhysError, PhysRange, PhysRead};

        let linear = 0xffff_0000_0000_0000u64.wrapping_sub(0x4000_0000);
        let stext = 0xffff_8000_0801_0000u64;
        // /proc/kcore: ELF header and program headers (text, vmalloc, the RAM).
        let ph = |vaddr: u64, paddr: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&1u32.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p
        };
        let mut kcore = vec![0u8; 64];
        kcore[..6].copy_from_slice(b"\x7fELF\x02\x01");
        kcore[32..40].copy_from_slice(&64u64.to_le_bytes());
        kcore[54..56].copy_from_slice(&56u16.to_le_bytes());
        kcore[56..58].copy_from_slice(&3u16.to_le_bytes());
        kcore.extend(ph(stext - 0x1_0000, 0x4020_0000));
        kcore.extend(ph(0xffff_8000_0000_0000, u64::MAX));
        kcore.extend(ph(linear.wrapping_add(0x4000_0000), 0x4000_0000));

        let root =
            std::env::temp_dir().join(format!("lifeboat-commands-arm64-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("proc/iomem", IOMEM_VIRT_2G.into()),
            (
                "proc/kallsyms",
                format!(
                    "ffff800008000000 t _head\n{stext:016x} T _stext\n{:016x} T __init_begin\n",
                    stext + 0x7c_0000
                )
                .into(),
            ),
            ("proc/kcore", kcore),
            (
                "sys/devices/system/cpu/cpu0/crash_notes",
                b"bf7d3c80\n".to_vec(),
            ),
            (
                "sys/devices/system/cpu/cpu0/crash_notes_size",
                b"392\n".to_vec(),
            ),
            (
                "sys/devices/system/cpu/cpu1/crash_notes",
                b"bf7f1c80\n".to_vec(),
            ),
            (
                "sys/devices/system/cpu/cpu1/crash_notes_size",
                b"392\n".to_vec(),
            ),
            ("sys/kernel/vmcoreinfo", b"41c5b000 1000\n".to_vec()),
            ("sys/firmware/fdt", crate::dtb::testdtb::virt_like()),
        ];
        for (p, bytes) in &files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let host = Host::with_root(&root);
        let iomem = host.iomem().unwrap();
        let res = find_reservation(&iomem, Some(64 << 20)).unwrap();
        let reservation = res.range.unwrap();
        assert_eq!(
            reservation,
            Range {
                start: 0xbc00_0000,
                end: 0xc000_0000
            }
        );
        let image_bytes = lifeboat_image();
        let image = match Payload::parse(&image_bytes, Arch::Aarch64).unwrap() {
            Payload::Arm64(a) => a,
            _ => unreachable!(),
        };
        let f = Arm64Facts::read(&host, &iomem, reservation, &res.all).unwrap();
        assert_eq!(f.linear_offset, Some(linear));
        let text = f.kernel_text.unwrap();
        assert_eq!(
            (text.paddr, text.vaddr, text.size),
            (0x4021_0000, stext, 0x40dc_0000 - 0x4021_0000)
        );
        let inputs = |page: u64, reservation: Range| PlanInputs {
            cpu_notes: f.cpu_notes.clone(),
            vmcoreinfo: f.vmcoreinfo,
            kernel_text: f.kernel_text,
            ram: f.ram.clone(),
            linear_offset: f.linear_offset,
            reservation,
            usable: f.usable.clone(),
            fdt: &f.fdt,
            image_bytes: &image_bytes,
            image: &image,
            options: "lifeboat.action=halt",
            page,
        };
        for page in [4096u64, 65536] {
            let plan = build_plan(&inputs(page, reservation)).unwrap();
            let names: Vec<&str> = plan.segments.iter().map(|s| s.name).collect();
            assert_eq!(names, ["Image", "elfcorehdr", "dtb", "trampoline"]);
            let mut prev_end = reservation.start;
            for s in &plan.segments {
                assert_eq!(s.mem % page, 0, "{}", s.name);
                assert_eq!(s.memsz % page, 0, "{}", s.name);
                assert!(s.bytes.len() as u64 <= s.memsz, "{}", s.name);
                assert!(s.mem >= prev_end, "{} overlaps", s.name);
                prev_end = s.mem + s.memsz;
            }
            assert!(prev_end <= reservation.end && plan.end == prev_end);
            let seg = |n: &str| plan.segments.iter().find(|s| s.name == n).unwrap();
            let (img, hdr, dtb, tramp) = (
                seg("Image"),
                seg("elfcorehdr"),
                seg("dtb"),
                seg("trampoline"),
            );
            assert_eq!(img.mem % (2 << 20), 0);
            assert_eq!(img.bytes, image_bytes);
            assert_eq!(img.memsz, image.memsz(page));
            assert_eq!(plan.entry, tramp.mem);
            assert_eq!(
                tramp.bytes,
                crate::trampoline::trampoline(dtb.mem, img.mem).to_vec()
            );
            assert_eq!(
                dtb.mem / (2 << 20),
                (dtb.mem + dtb.bytes.len() as u64 - 1) / (2 << 20)
            );
            assert_eq!(plan.cmdline, "lifeboat.action=halt");

            // The DTB, as the capture kernel reads it.
            let info = lifeboat_capture::devtree::DtBootInfo::parse(&dtb.bytes).unwrap();
            assert_eq!(info.cmdline, "lifeboat.action=halt");
            let e = info.elfcorehdr.unwrap();
            assert_eq!(
                (e.start, e.end),
                (hdr.mem, hdr.mem + hdr.bytes.len() as u64)
            );
            assert_eq!(
                info.usable
                    .iter()
                    .map(|r| (r.start, r.end))
                    .collect::<Vec<_>>(),
                [(0xbc00_0000, 0xc000_0000)]
            );
            let fdt = fdt::Fdt::new(&dtb.bytes).unwrap();
            let rsv: Vec<(u64, u64)> = fdt
                .memory_reservations()
                .map(|m| (m.address() as u64, m.size() as u64))
                .collect();
            assert!(rsv.contains(&(hdr.mem, hdr.memsz)), "{rsv:x?}");

            // The elfcorehdr, as the capture kernel reads it: notes in place in "memory".
            struct Mem(Vec<(u64, Vec<u8>)>);
            impl PhysRead for Mem {
                fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
                    for (base, b) in &self.0 {
                        if addr >= *base && addr - base + buf.len() as u64 <= b.len() as u64 {
                            let o = (addr - base) as usize;
                            buf.copy_from_slice(&b[o..o + buf.len()]);
                            return Ok(());
                        }
                    }
                    Err(PhysError::Unreadable {
                        addr,
                        len: buf.len() as u64,
                    })
                }
            }
            let note = |name: &str, t: u32, desc: &[u8], size: usize| {
                let mut v = Vec::new();
                v.extend((name.len() as u32 + 1).to_le_bytes());
                v.extend((desc.len() as u32).to_le_bytes());
                v.extend(t.to_le_bytes());
                v.extend(name.as_bytes());
                v.push(0);
                while v.len() % 4 != 0 {
                    v.push(0);
                }
                v.extend(desc);
                v.resize(size, 0);
                v
            };
            let vmci = b"OSRELEASE=6.1.0-28-cloud-arm64\nPAGESIZE=4096\n";
            let mem = Mem(vec![
                (hdr.mem, hdr.bytes.clone()),
                (0xbf7d_3c80, note("CORE", 1, &[0x11; 392 - 32], 392)),
                (0xbf7f_1c80, note("CORE", 1, &[0x22; 392 - 32], 392)),
                (0x41c5_b000, note("VMCOREINFO", 0, vmci, 0x1000)),
            ]);
            let limits = Limits {
                max_phys: 1 << 48,
                own: vec![PhysRange {
                    start: reservation.start,
                    end: reservation.end,
                }],
                ram: None,
                machine: EM_AARCH64,
                hdr_size: None,
            };
            let core = ElfCoreHeader::parse(&mem, hdr.mem, &limits).unwrap();
            assert_eq!(core.nr_cpus, 2);
            assert_eq!(core.vmcoreinfo_bytes(), Some(&vmci[..]));
            assert!(core.warnings.is_empty(), "{:?}", core.warnings);
            let t = core.kernel_text.unwrap();
            assert_eq!(
                (t.paddr, t.vaddr, t.len),
                (0x4021_0000, stext, 0x40dc_0000 - 0x4021_0000)
            );
            let loads: Vec<(u64, u64, u64)> = core
                .loads
                .iter()
                .map(|l| (l.paddr, l.len, l.vaddr))
                .collect();
            assert_eq!(loads, [(0x4000_0000, 0x7c00_0000, 0xffff_0000_0000_0000)]);
        }
        // A reservation too small for this layout: the exact need, with kexec_load.
        let tiny = Range {
            start: 0xbc00_0000,
            end: 0xbc04_0000,
        };
        match build_plan(&inputs(4096, tiny)) {
            Err(Failure::TooSmall {
                have,
                need,
                syscall: Syscall::KexecLoad,
            }) => {
                assert_eq!(have, 0x4_0000);
                assert_eq!(
                    need,
                    build_plan(&inputs(4096, reservation)).unwrap().end - reservation.start
                );
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("fits?"),
        }
        // Without _stext (Debian without root's kallsyms, say) the text segment is left out.
        std::fs::write(root.join("proc/kallsyms"), "0000000000000000 T _stext\n").unwrap();
        let f2 = Arm64Facts::read(&host, &iomem, reservation, &res.all).unwrap();
        assert_eq!(f2.kernel_text, None);
        std::fs::remove_dir_all(root).unwrap();
    }
}
