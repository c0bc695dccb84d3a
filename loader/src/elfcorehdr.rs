//! Building the elfcorehdr for `kexec_load`: the ELF64 `ET_CORE` header that tells the capture
//! kernel where the crashed kernel's CPU notes, VMCOREINFO and RAM are.
//!
//! Conventions (project reference §3, the same as Linux `crash_prepare_elf64_headers()` and
//! kexec-tools `crash_create_elf64_headers()`): `p_offset` is a **physical address**; one
//! `PT_NOTE` per CPU (`p_offset = p_paddr` = the CPU's `crash_notes`, size an upper bound),
//! one `PT_NOTE` for VMCOREINFO, one `PT_LOAD` per RAM range with `p_offset = p_paddr`,
//! `p_vaddr = PAGE_OFFSET + paddr`, `p_flags = RWX`, `p_align = 0`.
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
    EHDR_SIZE, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_CORE, EV_CURRENT, PHDR_SIZE, PT_LOAD, PT_NOTE,
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

/// Everything the header describes.
#[derive(Clone, Debug)]
pub struct CoreLayout {
    /// Per-CPU `crash_notes`, in CPU order.
    pub cpu_notes: Vec<NoteBuf>,
    /// The VMCOREINFO note, if the kernel exports it.
    pub vmcoreinfo: Option<NoteBuf>,
    /// RAM to dump: System RAM minus the crash reservation, sorted, disjoint.
    pub ram: Vec<Range>,
    /// The crashed kernel's direct-map base (`p_vaddr = page_offset + paddr`).
    pub page_offset: u64,
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
        self.cpu_notes.len() + usize::from(self.vmcoreinfo.is_some()) + self.ram.len()
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
        b.extend_from_slice(&EM_X86_64.to_le_bytes());
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
        for r in &self.ram {
            phdr(
                &mut b,
                PT_LOAD,
                PF_RWX,
                r.start,
                self.page_offset.wrapping_add(r.start),
                r.len(),
            );
        }
        Ok(b)
    }
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
            page_offset,
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
    fn refuses_headers_the_capture_kernel_could_not_use() {
        let base = CoreLayout {
            cpu_notes: vec![NoteBuf {
                addr: 0x1000,
                size: 0x100,
            }],
            vmcoreinfo: None,
            ram: vec![Range {
                start: 0x10_0000,
                end: 0x20_0000,
            }],
            page_offset: 0,
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
