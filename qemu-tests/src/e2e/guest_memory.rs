//! QEMU's view of guest memory: the ELF file `dump-guest-memory` writes (with `paging: false`).
//!
//! That file is an ELF64 core (QEMU `dump/dump.c`): PT_NOTE with QEMU's per-CPU notes, then one
//! PT_LOAD per guest RAM block with `p_paddr` = guest physical address and the bytes at
//! `p_offset`. When there are 0xffff or more program headers, `e_phnum` is `PN_XNUM` and the
//! real count is in section header 0's `sh_info` (ELF gABI). This reader shares nothing with
//! lifeboat or QEMU; it only reads pages by physical address.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PN_XNUM: u16 = 0xffff;

/// One PT_LOAD: guest physical `paddr..paddr+len` at file offset `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub len: u64,
    pub offset: u64,
}

/// A QEMU guest-memory dump opened for page reads.
pub struct GuestMemory {
    file: File,
    /// Sorted by `paddr`, non-overlapping.
    pub segments: Vec<Segment>,
    /// `NT_PRSTATUS` notes named `CORE` (one per vCPU).
    pub prstatus_notes: usize,
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl GuestMemory {
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut eh = [0u8; 64];
        file.read_exact_at(&mut eh, 0)
            .map_err(|e| format!("{}: no ELF header: {e}", path.display()))?;
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
            return Err(format!(
                "{} is not a little-endian ELF64 file",
                path.display()
            ));
        }
        let phoff = u64_at(&eh, 0x20);
        let shoff = u64_at(&eh, 0x28);
        let phentsize = u16_at(&eh, 0x36) as u64;
        let mut phnum = u16_at(&eh, 0x38) as u64;
        if phentsize != 56 {
            return Err(format!("e_phentsize is {phentsize}, expected 56"));
        }
        if phnum == PN_XNUM as u64 {
            let mut sh = [0u8; 64];
            file.read_exact_at(&mut sh, shoff)
                .map_err(|e| format!("PN_XNUM but no section header 0: {e}"))?;
            phnum = u32_at(&sh, 0x2c) as u64;
        }
        let mut ph = vec![0u8; (phnum * 56) as usize];
        file.read_exact_at(&mut ph, phoff)
            .map_err(|e| format!("program headers: {e}"))?;
        let mut segments = Vec::new();
        let mut prstatus_notes = 0;
        for i in 0..phnum as usize {
            let p = &ph[i * 56..(i + 1) * 56];
            let (ty, offset, paddr, filesz, memsz) = (
                u32_at(p, 0),
                u64_at(p, 8),
                u64_at(p, 24),
                u64_at(p, 32),
                u64_at(p, 40),
            );
            if ty == PT_NOTE {
                let mut notes = vec![0u8; filesz.min(1 << 20) as usize];
                file.read_exact_at(&mut notes, offset)
                    .map_err(|e| format!("PT_NOTE: {e}"))?;
                prstatus_notes += count_prstatus(&notes);
            }
            if ty != PT_LOAD || filesz == 0 {
                continue;
            }
            if filesz != memsz || offset.checked_add(filesz).is_none_or(|e| e > file_len) {
                return Err(format!(
                    "PT_LOAD {i} (paddr {paddr:#x}, filesz {filesz:#x}, memsz {memsz:#x}, offset {offset:#x}) is not entirely in the {file_len}-byte file"
                ));
            }
            segments.push(Segment {
                paddr,
                len: filesz,
                offset,
            });
        }
        segments.sort_by_key(|s| s.paddr);
        for w in segments.windows(2) {
            if w[0].paddr + w[0].len > w[1].paddr {
                return Err(format!(
                    "PT_LOADs at {:#x} and {:#x} overlap",
                    w[0].paddr, w[1].paddr
                ));
            }
        }
        Ok(GuestMemory {
            file,
            segments,
            prstatus_notes,
        })
    }

    /// Whole pages of guest RAM, as pfn ranges (merged where adjacent).
    pub fn ram_pfns(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for s in &self.segments {
            let r = s.paddr.div_ceil(PAGE)..(s.paddr + s.len) / PAGE;
            if r.is_empty() {
                continue;
            }
            match out.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Read the page at `pfn`; `Ok(false)` if it is not (entirely) in a PT_LOAD.
    pub fn read_page(&self, pfn: u64, out: &mut [u8; PAGE as usize]) -> Result<bool, String> {
        let pa = pfn * PAGE;
        let i = self.segments.partition_point(|s| s.paddr + s.len <= pa);
        let Some(s) = self.segments.get(i) else {
            return Ok(false);
        };
        if s.paddr > pa || pa + PAGE > s.paddr + s.len {
            return Ok(false);
        }
        self.file
            .read_exact_at(out, s.offset + (pa - s.paddr))
            .map_err(|e| format!("reading guest page {pa:#x}: {e}"))?;
        Ok(true)
    }
}

fn count_prstatus(notes: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let (namesz, descsz, ty) = (
            u32_at(notes, at) as usize,
            u32_at(notes, at + 4) as usize,
            u32_at(notes, at + 8),
        );
        let name_at = at + 12;
        let next = name_at + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        if next > notes.len() || namesz > 256 {
            break;
        }
        if ty == 1 && notes[name_at..name_at + namesz].starts_with(b"CORE") {
            n += 1;
        }
        at = next;
    }
    n
}

/// `0x1000-0x1fff, …` for pfn ranges (at most `max` of them, then a count).
pub fn describe_pfn_ranges(r: &[Range<u64>], max: usize) -> String {
    let mut s: Vec<String> = r
        .iter()
        .take(max)
        .map(|r| format!("{:#x}-{:#x}", r.start * PAGE, r.end * PAGE - 1))
        .collect();
    if r.len() > max {
        s.push(format!("… {} more", r.len() - max));
    }
    s.join(", ")
}

/// A QEMU-style ELF memory file with the given PT_LOADs (for tests).
#[cfg(test)]
pub(crate) fn test_elf(loads: &[(u64, &[u8])]) -> Vec<u8> {
    tests::elf(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn elf(loads: &[(u64, &[u8])]) -> Vec<u8> {
        let phnum = loads.len() + 1;
        let mut f = vec![0u8; 64 + 56 * phnum];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
        // PT_NOTE with two CORE/NT_PRSTATUS notes and one other note
        let mut notes = Vec::new();
        for ty in [1u32, 1, 0x4f454d55] {
            notes.extend_from_slice(&5u32.to_le_bytes());
            notes.extend_from_slice(&8u32.to_le_bytes());
            notes.extend_from_slice(&ty.to_le_bytes());
            notes.extend_from_slice(b"CORE\0\0\0\0");
            notes.extend_from_slice(&[7; 8]);
        }
        let mut data_at = f.len() as u64;
        let mut body = notes.clone();
        let ph = |f: &mut Vec<u8>, i: usize, ty: u32, off: u64, paddr: u64, len: u64| {
            let p = &mut f[64 + 56 * i..64 + 56 * (i + 1)];
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p[32..40].copy_from_slice(&len.to_le_bytes());
            p[40..48].copy_from_slice(&len.to_le_bytes());
        };
        ph(&mut f, 0, PT_NOTE, data_at, 0, notes.len() as u64);
        data_at += notes.len() as u64;
        for (i, (paddr, bytes)) in loads.iter().enumerate() {
            ph(&mut f, i + 1, PT_LOAD, data_at, *paddr, bytes.len() as u64);
            body.extend_from_slice(bytes);
            data_at += bytes.len() as u64;
        }
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn reads_pages_by_physical_address() {
        let a = vec![1u8; 2 * PAGE as usize];
        let mut b = vec![2u8; 3 * PAGE as usize];
        b[PAGE as usize] = 9;
        let c = vec![3u8; PAGE as usize];
        let path = std::env::temp_dir().join(format!("e2e-gm-{}.elf", std::process::id()));
        std::fs::write(
            &path,
            elf(&[(0x100000, &b), (0, &a), (0x100000 + 3 * PAGE, &c)]),
        )
        .unwrap();
        let m = GuestMemory::open(&path).unwrap();
        assert_eq!(m.prstatus_notes, 2);
        assert_eq!(m.ram_pfns(), vec![0..2, 0x100..0x104]);
        let mut p = [0u8; PAGE as usize];
        assert!(m.read_page(1, &mut p).unwrap());
        assert!(p.iter().all(|&x| x == 1));
        assert!(m.read_page(0x101, &mut p).unwrap());
        assert_eq!(p[0], 9);
        assert!(m.read_page(0x103, &mut p).unwrap());
        assert_eq!(p[0], 3);
        assert!(!m.read_page(2, &mut p).unwrap());
        assert!(!m.read_page(0x104, &mut p).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            describe_pfn_ranges(&[0..2, 0x100..0x104, 0x200..0x201], 2),
            "0x0-0x1fff, 0x100000-0x103fff, … 1 more"
        );
    }
}
