//! What a real dump's own headers say, read just far enough to drive [`crate::verify`].
//!
//! `verify::verify_kdump` was written for synthetic memory, where the test knows every RAM
//! range, note and VMCOREINFO text in advance. For a real guest those come from the crashed
//! kernel, so the e2e checks read them from the dump (header, sub header, notes, 1st bitmap:
//! reference §1 / makedumpfile `diskdump_mod.h`) and let `verify_kdump` check the rest of the
//! structure and compare every page with QEMU's view of guest memory. The facts that are
//! independent of the dump (2 CPUs, kernel release, which RAM QEMU has) are checked against
//! the scenario, not against the dump.

use std::ops::Range;

use crate::verify::{Expectations, BLOCK_SIZE, KDUMP_SUB_HEADER_SIZE};

/// The parts of a kdump-compressed file the e2e checks need.
#[derive(Clone, Debug)]
pub struct DumpLayout {
    pub nr_cpus: i32,
    pub release: String,
    pub status: u32,
    pub max_mapnr: u64,
    /// Pfn ranges set in the 1st bitmap (pages the crashed kernel called RAM).
    pub bitmap_pfns: Vec<Range<u64>>,
    /// Pfn ranges set in the 2nd bitmap (pages in the dump).
    pub bitmap2_pfns: Vec<Range<u64>>,
    /// PRSTATUS descriptors in note order.
    pub prstatus: Vec<Vec<u8>>,
    /// VMCOREINFO text without trailing NULs.
    pub vmcoreinfo: Option<String>,
    /// The sub header's dump level.
    pub dump_level: i32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl DumpLayout {
    pub fn read(file: &[u8]) -> Result<Self, String> {
        if file.len() < 2 * BLOCK_SIZE || &file[..8] != b"KDUMP   " {
            return Err("not a kdump-compressed file (no \"KDUMP   \" header)".into());
        }
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let release = cstr(&file[12 + 130..12 + 195]);
        let status = u32_at(file, 424);
        let sub_hdr_size = u32_at(file, 432) as usize;
        let bitmap_blocks = u32_at(file, 436) as usize;
        let nr_cpus = u32_at(file, 460) as i32;
        let sh = &file[BLOCK_SIZE..BLOCK_SIZE + KDUMP_SUB_HEADER_SIZE];
        let dump_level = u32_at(sh, 8) as i32;
        let (offset_note, size_note, max_mapnr) = (
            u64_at(sh, 48) as usize,
            u64_at(sh, 56) as usize,
            u64_at(sh, 96),
        );
        let notes = file
            .get(offset_note..offset_note.saturating_add(size_note))
            .ok_or_else(|| format!("notes at {offset_note:#x}+{size_note} are outside the file"))?;
        let mut prstatus = Vec::new();
        let mut vmcoreinfo = None;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let (namesz, descsz, ty) = (
                u32_at(notes, at) as usize,
                u32_at(notes, at + 4) as usize,
                u32_at(notes, at + 8),
            );
            if namesz == 0 && descsz == 0 {
                break;
            }
            let desc_at = at + 12 + namesz.next_multiple_of(4);
            let next = desc_at + descsz.next_multiple_of(4);
            if namesz > 4096 || next > notes.len() {
                return Err(format!("note at note offset {at:#x} runs past the notes"));
            }
            let name = cstr(&notes[at + 12..at + 12 + namesz]);
            let desc = &notes[desc_at..desc_at + descsz];
            if name == "CORE" && ty == 1 {
                prstatus.push(desc.to_vec());
            } else if name == "VMCOREINFO" {
                vmcoreinfo = Some(
                    String::from_utf8_lossy(desc)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            at = next;
        }
        let bitmap_at = (1 + sub_hdr_size) * BLOCK_SIZE;
        let half = bitmap_blocks / 2 * BLOCK_SIZE;
        let bm1 = file
            .get(bitmap_at..bitmap_at + half)
            .ok_or("the 1st bitmap is outside the file")?;
        let bm2 = file
            .get(bitmap_at + half..bitmap_at + 2 * half)
            .ok_or("the 2nd bitmap is outside the file")?;
        Ok(DumpLayout {
            nr_cpus,
            release,
            status,
            max_mapnr,
            bitmap_pfns: bit_ranges(bm1),
            bitmap2_pfns: bit_ranges(bm2),
            prstatus,
            vmcoreinfo,
            dump_level,
        })
    }

    /// Expectations for `verify_kdump`: the dump's own RAM, notes and VMCOREINFO, plus what
    /// the scenario knows independently (`nr_cpus`, `release`).
    pub fn expectations(&self, nr_cpus: i32, release: &str) -> Expectations {
        self.expectations_for(nr_cpus, release, "x86_64")
    }

    /// [`DumpLayout::expectations`] for a crashed kernel whose `uname -m` is `machine`.
    pub fn expectations_for(&self, nr_cpus: i32, release: &str, machine: &str) -> Expectations {
        Expectations {
            ram_pfns: self.bitmap_pfns.clone(),
            nr_cpus,
            release: Some(release.to_string()),
            machine: machine.into(),
            phys_base: None,
            vmcoreinfo: self.vmcoreinfo.clone(),
            prstatus: self.prstatus.clone(),
            complete: true,
            dump_level: self.dump_level,
        }
    }

    pub fn in_bitmap(&self, pfn: u64) -> bool {
        let i = self.bitmap_pfns.partition_point(|r| r.end <= pfn);
        self.bitmap_pfns.get(i).is_some_and(|r| r.start <= pfn)
    }
}

/// Ranges of set bits (bit `n` = byte `n / 8`, bit `n % 8`, as makedumpfile stores them).
pub fn bit_ranges(bm: &[u8]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for (i, &byte) in bm.iter().enumerate() {
        if byte == 0 {
            continue;
        }
        for b in 0..8 {
            if byte >> b & 1 == 1 {
                let pfn = i as u64 * 8 + b;
                match out.last_mut() {
                    Some(r) if r.end == pfn => r.end += 1,
                    _ => out.push(pfn..pfn + 1),
                }
            }
        }
    }
    out
}

/// `ranges` minus every range in `minus` (both sorted, non-overlapping).
pub fn subtract(ranges: &[Range<u64>], minus: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut start = r.start;
        for m in minus {
            if m.end <= start || m.start >= r.end {
                continue;
            }
            if m.start > start {
                out.push(start..m.start);
            }
            start = start.max(m.end);
        }
        if start < r.end {
            out.push(start..r.end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_ranges_and_subtract() {
        assert_eq!(
            bit_ranges(&[0b1000_0110, 0b0000_0001, 0, 0xff]),
            vec![1..3, 7..9, 24..32]
        );
        assert_eq!(
            subtract(&[0..10, 20..30], &[2..4, 8..22, 29..40]),
            vec![0..2, 4..8, 22..29]
        );
        assert_eq!(subtract(&[0..10, 12..14], &[]), vec![0..10, 12..14]);
    }
}
