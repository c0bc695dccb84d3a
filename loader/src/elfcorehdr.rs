//! Building the elfcorehdr for `kexec_load`: the ELF64 `ET_CORE` header that tells the capture
//! kernel where the crashed kernel's CPU notes, VMCOREINFO and RAM are.
//!
//! Conventions (project reference §3, the same as Linux `crash_prepare_elf64_headers()` and
//! kexec-tools `crash_create_elf64_headers()`): `p_offset` is a **physical address**; one
//! `PT_NOTE` per CPU (`p_offset = p_paddr` = the CPU's `crash_notes`, size an upper bound),
//! one `PT_NOTE` for VMCOREINFO, then (arm64) one `PT_LOAD` for the kernel image mapping, then
//! one `PT_LOAD` per RAM range with `p_offset = p_paddr`, `p_vaddr` = the range's linear-map
//! address (`paddr + linear_offset`: x86_64 `PAGE_OFFSET`, arm64 `PAGE_OFFSET - PHYS_OFFSET`),
//! or 0 where that is unknown, `p_flags = RWX`, `p_align = 0`.
//!
//! What differs between machines is data, not code: `e_machine`, whether there is a
//! kernel-text segment ([`KernelText`], from `/proc/iomem` "Kernel code" .. "Kernel data" and
//! `/proc/kallsyms`; x86 leaves it out, as lifeboat always has), and the linear offset. A
//! `p_vaddr` of 0 is harmless to the tools that read the dump: makedumpfile and crash take
//! arm64's `PHYS_OFFSET`, `kimage_voffset` and `VA_BITS` from VMCOREINFO (makedumpfile
//! `arm64.c` falls back to the `PT_LOAD`s only without them), and the capture kernel translates
//! with VMCOREINFO too; only the kernel-text segment needs its real `p_vaddr`, which is how
//! it is told apart from RAM (`lifeboat_capture::elfcore::is_kernel_text`).
//!
//! Unlike kexec-tools there is no backup copy of the first 640 KiB: lifeboat never writes
//! outside its own image, so low memory is dumped where it is. Ranges keep their exact byte
//! bounds (iomem ranges may end mid-page, e.g. `0x1000-0x9fbff`); the capture kernel handles
//! partial pages.

use crate::memmap::Range;
use std::fmt;

// ELF core-header constants and limits: the capture kernel's own, so what `lifeboat load`
// builds is what the capture kernel accepts.
pub use lifeboat_capture::elfcore::MAX_PHNUM;
use lifeboat_capture::elfcore::{
    EHDR_SIZE, ELFCLASS64, ELFDATA2LSB, ET_CORE, EV_CURRENT, PHDR_SIZE, PT_LOAD, PT_NOTE,
};
const PF_RWX: u32 = 7;
/// Note size assumed when `crash_notes_size` is missing (kexec-tools `MAX_NOTE_BYTES`).
pub const DEFAULT_CRASH_NOTES_SIZE: u64 = 4096;

/// A note buffer of the running kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteBuf {
    pub addr: u64,
    pub size: u64,
}

/// The running kernel's image: where it is and where it is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelText {
    pub paddr: u64,
    pub vaddr: u64,
    pub size: u64,
}

/// Everything the header describes.
#[derive(Clone, Debug)]
pub struct CoreLayout {
    /// `e_machine` (`EM_X86_64`, `EM_AARCH64`).
    pub machine: u16,
    /// Per-CPU `crash_notes`, in CPU order.
    pub cpu_notes: Vec<NoteBuf>,
    /// The VMCOREINFO note, if the kernel exports it.
    pub vmcoreinfo: Option<NoteBuf>,
    /// A `PT_LOAD` for the kernel image mapping, after the notes.
    pub kernel_text: Option<KernelText>,
    /// RAM to dump: System RAM minus the crash reservation, sorted, disjoint.
    pub ram: Vec<Range>,
    /// `p_vaddr = paddr + linear_offset` (wrapping) for RAM; `None`: `p_vaddr = 0`.
    pub linear_offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfCoreBuildError {
    /// No RAM range: there would be nothing to dump.
    NoRam,
    /// No CPU notes: the capture would have no registers (is CONFIG_CRASH_DUMP on?).
    NoCpuNotes,
    /// More program headers than the capture kernel accepts.
    TooManyHeaders { count: usize },
}

impl fmt::Display for ElfCoreBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfCoreBuildError::NoRam => write!(f, "no System RAM outside the crash reservation in /proc/iomem: nothing to dump"),
            ElfCoreBuildError::NoCpuNotes => write!(
                f,
                "no /sys/devices/system/cpu/cpu*/crash_notes: this kernel does not export CPU crash notes (CONFIG_CRASH_DUMP)"
            ),
            ElfCoreBuildError::TooManyHeaders { count } => write!(
                f,
                "{count} program headers (CPUs + RAM ranges) exceed the capture kernel's limit of {MAX_PHNUM}"
            ),
        }
    }
}

impl CoreLayout {
    /// Number of program headers.
    pub fn phnum(&self) -> usize {
        self.cpu_notes.len()
            + usize::from(self.vmcoreinfo.is_some())
            + usize::from(self.kernel_text.is_some())
            + self.ram.len()
    }

    /// Size of the header in bytes (before page alignment).
    pub fn size(&self) -> usize {
        EHDR_SIZE + self.phnum() * PHDR_SIZE
    }

    /// The header bytes.
    pub fn build(&self) -> Result<Vec<u8>, ElfCoreBuildError> {
        if self.ram.is_empty() {
            return Err(ElfCoreBuildError::NoRam);
        }
        if self.cpu_notes.is_empty() {
            return Err(ElfCoreBuildError::NoCpuNotes);
        }
        let phnum = self.phnum();
        if phnum > usize::from(MAX_PHNUM) {
            return Err(ElfCoreBuildError::TooManyHeaders { count: phnum });
        }
        let mut b = Vec::with_capacity(self.size());
        // Elf64_Ehdr
        b.extend_from_slice(b"\x7fELF");
        b.extend_from_slice(&[ELFCLASS64, ELFDATA2LSB, EV_CURRENT, 0]); // ELFOSABI_NONE
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&ET_CORE.to_le_bytes());
        b.extend_from_slice(&self.machine.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes()); // e_version
        b.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        b.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        b.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        b.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b.extend_from_slice(&(phnum as u16).to_le_bytes());
        b.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        debug_assert_eq!(b.len(), EHDR_SIZE);
        for n in self.cpu_notes.iter().chain(self.vmcoreinfo.iter()) {
            phdr(&mut b, PT_NOTE, 0, n.addr, 0, n.size);
        }
        if let Some(t) = self.kernel_text {
            phdr(&mut b, PT_LOAD, PF_RWX, t.paddr, t.vaddr, t.size);
        }
        for r in &self.ram {
            let vaddr = self.linear_offset.map_or(0, |o| o.wrapping_add(r.start));
            phdr(&mut b, PT_LOAD, PF_RWX, r.start, vaddr, r.len());
        }
        Ok(b)
    }
}

/// arm64: the kernel-text segment, without the `_text` symbol (not in `/proc/kallsyms` unless
/// CONFIG_KALLSYMS_ALL: it lies before `_stext`, outside the text range kallsyms keeps; Debian's
/// arm64 kernel lacks it, and kexec-tools then writes a garbage header).
///
/// `/proc/iomem` "Kernel code" is `[__pa_symbol(_stext), __pa_symbol(__init_begin))` in Linux
/// 6.1 (`arch/arm64/kernel/setup.c request_standard_resources()`); later kernels start it at
/// `_text` instead. Both end at `__init_begin`, so with `__init_begin`'s address the start's
/// virtual address is `__init_begin - len(Kernel code)` in either layout, checked against
/// `_stext` (the start is `_stext` or a little below it). Without `__init_begin` the 6.1
/// layout is assumed. The segment runs to the end of "Kernel data" (`_end`), as kexec-tools'.
pub fn arm64_kernel_text(
    code: Range,
    data_end: u64,
    stext: Option<u64>,
    init_begin: Option<u64>,
) -> Result<KernelText, String> {
    let stext = stext.ok_or("_stext is not in /proc/kallsyms (not root, or kptr_restrict=2?)")?;
    let vaddr = match init_begin {
        Some(ib) => {
            let v = ib.wrapping_sub(code.len());
            // _text .. _stext is the head text: at most 2 MiB.
            if v > stext || stext - v >= 2 << 20 {
                return Err(format!(
                    "/proc/iomem \"Kernel code\" ({} bytes) does not match /proc/kallsyms \
                     (_stext {stext:#x}, __init_begin {ib:#x})",
                    code.len()
                ));
            }
            v
        }
        None => stext,
    };
    if !lifeboat_capture::elfcore::is_kernel_text(lifeboat_capture::elfcore::EM_AARCH64, vaddr) {
        return Err(format!("_stext {stext:#x} is not a kernel-image address"));
    }
    Ok(KernelText {
        paddr: code.start,
        vaddr,
        size: data_end - code.start,
    })
}

/// Appends one `Elf64_Phdr` with `p_offset = p_paddr = paddr`, `p_filesz = p_memsz = size`.
fn phdr(b: &mut Vec<u8>, p_type: u32, flags: u32, paddr: u64, vaddr: u64, size: u64) {
    b.extend_from_slice(&p_type.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&paddr.to_le_bytes()); // p_offset
    b.extend_from_slice(&vaddr.to_le_bytes());
    b.extend_from_slice(&paddr.to_le_bytes()); // p_paddr
    b.extend_from_slice(&size.to_le_bytes()); // p_filesz
    b.extend_from_slice(&size.to_le_bytes()); // p_memsz
    b.extend_from_slice(&0u64.to_le_bytes()); // p_align
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::{dumpable_ram, fixtures::IOMEM_QEMU_1G, parse_iomem};
    use lifeboat_capture::elfcore::{ElfCoreHeader, Limits};
    use lifeboat_capture::phys::{PhysError, PhysRange, PhysRead};

    /// Physical memory made of buffers; everything else unreadable.
    struct VecMem(Vec<(u64, Vec<u8>)>);
    impl PhysRead for VecMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
            for (base, bytes) in &self.0 {
                let off = addr.wrapping_sub(*base);
                if addr >= *base && off + buf.len() as u64 <= bytes.len() as u64 {
                    buf.copy_from_slice(&bytes[off as usize..off as usize + buf.len()]);
                    return Ok(());
                }
            }
            Err(PhysError::Unreadable {
                addr,
                len: buf.len() as u64,
            })
        }
    }

    /// An ELF note, padded as Linux writes them.
    fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&n_type.to_le_bytes());
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// A note buffer as the kernel leaves it: the note, then a zero "final note", then slack.
    fn note_buf(name: &str, n_type: u32, desc: &[u8], size: usize) -> Vec<u8> {
        let mut v = note(name, n_type, desc);
        v.resize(size, 0);
        v
    }

    #[test]
    fn header_parses_with_the_capture_kernels_parser() {
        let iomem = parse_iomem(IOMEM_QEMU_1G);
        let ram = dumpable_ram(&iomem);
        let page_offset = 0xffff_9a40_0000_0000;
        let layout = CoreLayout {
            machine: lifeboat_capture::elfcore::EM_X86_64,
            kernel_text: None,
            cpu_notes: vec![
                NoteBuf {
                    addr: 0x3f61_c0e0,
                    size: 0x1c0,
                },
                NoteBuf {
                    addr: 0x3f65_c0e0,
                    size: 0x1c0,
                },
            ],
            vmcoreinfo: Some(NoteBuf {
                addr: 0x2a8d000,
                size: 0x1024,
            }),
            ram: ram.clone(),
            linear_offset: Some(page_offset),
        };
        let hdr = layout.build().unwrap();
        assert_eq!(hdr.len(), layout.size());
        assert_eq!(hdr.len(), 64 + (2 + 1 + 3) * 56);

        let hdr_addr = 0x3e00_0000; // bottom of the reservation
        let prstatus = vec![0x5a; 336];
        let vmci = b"OSRELEASE=6.1.0-56-cloud-amd64\nPAGESIZE=4096\n";
        let mem = VecMem(vec![
            (hdr_addr, hdr),
            (0x3f61_c0e0, note_buf("CORE", 1, &prstatus, 0x1c0)),
            (0x3f65_c0e0, note_buf("CORE", 1, &prstatus, 0x1c0)),
            (0x2a8d000, note_buf("VMCOREINFO", 0, vmci, 0x1024)),
        ]);
        let limits = Limits {
            max_phys: 1 << 46,
            own: vec![PhysRange {
                start: 0x3e00_4000,
                end: 0x3e2d_d000,
            }],
            ram: None,
            machine: 62,
            hdr_size: None,
        };
        let core = ElfCoreHeader::parse(&mem, hdr_addr, &limits).unwrap();
        assert_eq!(core.nr_cpus, 2);
        assert_eq!(core.vmcoreinfo_bytes(), Some(&vmci[..]));
        assert!(core.warnings.is_empty(), "{:?}", core.warnings);
        assert!(core.kernel_text.is_none());
        let loads: Vec<(u64, u64, u64, u64)> = core
            .loads
            .iter()
            .map(|l| (l.paddr, l.src, l.len, l.vaddr))
            .collect();
        let want: Vec<(u64, u64, u64, u64)> = ram
            .iter()
            .map(|r| (r.start, r.start, r.len(), page_offset + r.start))
            .collect();
        assert_eq!(loads, want);
        // The partial last page of low memory is kept exactly.
        assert_eq!(core.loads[0].paddr + core.loads[0].len, 0x9fc00);
    }

    #[test]
    fn arm64_kernel_text_without_text_symbol() {
        let code = Range {
            start: 0x4021_0000,
            end: 0x409d_0000,
        };
        let stext = 0xffff_8000_0801_0000;
        // Linux 6.1: "Kernel code" starts at _stext.
        let t =
            arm64_kernel_text(code, 0x40dc_0000, Some(stext), Some(stext + code.len())).unwrap();
        assert_eq!(
            t,
            KernelText {
                paddr: 0x4021_0000,
                vaddr: stext,
                size: 0x40dc_0000 - 0x4021_0000
            }
        );
        assert_eq!(
            arm64_kernel_text(code, 0x40dc_0000, Some(stext), None)
                .unwrap()
                .vaddr,
            stext
        );
        // A kernel whose "Kernel code" starts at _text, 64 KiB below _stext.
        let code2 = Range {
            start: 0x4020_0000,
            end: 0x409d_0000,
        };
        let t =
            arm64_kernel_text(code2, 0x40dc_0000, Some(stext), Some(stext + code.len())).unwrap();
        assert_eq!((t.paddr, t.vaddr), (0x4020_0000, stext - 0x1_0000));
        // Inconsistent or missing symbols: no segment.
        assert!(arm64_kernel_text(code, 0x40dc_0000, Some(stext), Some(stext + 0x1000)).is_err());
        assert!(arm64_kernel_text(code, 0x40dc_0000, None, None).is_err());
        assert!(arm64_kernel_text(code, 0x40dc_0000, Some(0xffff_0000_1000_0000), None).is_err());
    }

    #[test]
    fn refuses_headers_the_capture_kernel_could_not_use() {
        let base = CoreLayout {
            machine: lifeboat_capture::elfcore::EM_X86_64,
            kernel_text: None,
            cpu_notes: vec![NoteBuf {
                addr: 0x1000,
                size: 0x100,
            }],
            vmcoreinfo: None,
            ram: vec![Range {
                start: 0x10_0000,
                end: 0x20_0000,
            }],
            linear_offset: Some(0),
        };
        assert!(base.build().is_ok());
        let mut l = base.clone();
        l.ram.clear();
        assert_eq!(l.build().unwrap_err(), ElfCoreBuildError::NoRam);
        let mut l = base.clone();
        l.cpu_notes.clear();
        assert_eq!(l.build().unwrap_err(), ElfCoreBuildError::NoCpuNotes);
        let mut l = base;
        l.ram = (0..MAX_PHNUM as u64)
            .map(|i| Range {
                start: i << 20,
                end: (i << 20) + 4096,
            })
            .collect();
        assert_eq!(
            l.build().unwrap_err(),
            ElfCoreBuildError::TooManyHeaders {
                count: usize::from(MAX_PHNUM) + 1
            }
        );
    }
}
