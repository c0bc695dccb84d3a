//! The exclusion cross-check: the pages lifeboat's page filter left out of a real crash's dump
//! must be exactly the pages Debian's `makedumpfile -d 31` leaves out of a full ELF vmcore of
//! the same crash. QEMU's `dump-guest-memory` (taken after the capture, which never writes to
//! old memory) is that ELF vmcore, once [`normalize`]d.
//!
//! Both tools read the crashed kernel's `struct page`s from the same bytes, so every difference
//! is a bug on one side and is listed by pfn range. Pages makedumpfile does not count as memory
//! at all (beyond the last section with a `mem_map`, or outside QEMU's RAM) are not compared
//! and are reported as such.

use super::dump_layout::DumpLayout;
use super::guest_memory::{describe_pfn_ranges, u16_at, u32_at, u64_at};
use crate::qemu;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// Rewrites QEMU's `dump-guest-memory` file `qemu_elf` into the layout of a kernel's
/// `/proc/vmcore`, so that makedumpfile 1.7.2 reads it: program headers right after the ELF
/// header (QEMU puts section headers there, which makedumpfile misreads as program headers),
/// QEMU's notes followed by a VMCOREINFO note with `vmcoreinfo` (QEMU only has one with a
/// `vmcoreinfo` device). The memory bytes are copied unchanged.
pub fn normalize(qemu_elf: &Path, vmcoreinfo: &[u8], out: &Path) -> Result<(), String> {
    let name = qemu_elf.display();
    let file = File::open(qemu_elf).map_err(|e| format!("{name}: {e}"))?;
    let mut ehdr = vec![0u8; EHDR_SIZE];
    file.read_exact_at(&mut ehdr, 0).map_err(|e| format!("{name}: {e}"))?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(format!("{name} is not a little-endian ELF64 file"));
    }
    let (phoff, phnum) = (u64_at(&ehdr, 32), u16_at(&ehdr, 56) as usize);
    let mut phdrs = vec![0u8; phnum * PHDR_SIZE];
    file.read_exact_at(&mut phdrs, phoff).map_err(|e| format!("{name}: program headers: {e}"))?;
    let mut loads = Vec::new();
    let mut notes = Vec::new();
    for p in phdrs.chunks_exact(PHDR_SIZE) {
        let (ty, off, paddr, filesz) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 24), u64_at(p, 32));
        match ty {
            PT_LOAD if filesz > 0 => loads.push((paddr, filesz, off)),
            PT_NOTE => {
                let mut n = vec![0u8; filesz.min(1 << 20) as usize];
                file.read_exact_at(&mut n, off).map_err(|e| format!("{name}: notes: {e}"))?;
                notes.extend_from_slice(&n);
            }
            _ => {}
        }
    }
    let pad4 = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
    notes.extend_from_slice(&11u32.to_le_bytes());
    notes.extend_from_slice(&(vmcoreinfo.len() as u32).to_le_bytes());
    notes.extend_from_slice(&0u32.to_le_bytes());
    notes.extend_from_slice(b"VMCOREINFO\0");
    pad4(&mut notes);
    notes.extend_from_slice(vmcoreinfo);
    pad4(&mut notes);
    let phnum = 1 + loads.len();
    let notes_off = (EHDR_SIZE + phnum * PHDR_SIZE) as u64;
    let mut data_off = (notes_off + notes.len() as u64).div_ceil(4096) * 4096;
    let mut head = ehdr;
    head[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    head[40..48].copy_from_slice(&0u64.to_le_bytes()); // e_shoff
    head[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    head[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    head[58..64].copy_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    let phdr = |ty: u32, flags: u32, off: u64, paddr: u64, len: u64| {
        let mut p = Vec::with_capacity(PHDR_SIZE);
        for v in [ty, flags] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        for v in [off, 0, paddr, len, len, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    head.extend(phdr(PT_NOTE, 0, notes_off, 0, notes.len() as u64));
    let mut placed = Vec::new();
    for &(paddr, len, off) in &loads {
        head.extend(phdr(PT_LOAD, 7, data_off, paddr, len));
        placed.push((off, data_off, len));
        data_off += len;
    }
    head.extend_from_slice(&notes);
    let _ = std::fs::remove_file(out);
    let f = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all_at(&head, 0).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    for (from, to, len) in placed {
        let mut done = 0;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            file.read_exact_at(&mut buf[..n], from + done).map_err(|e| format!("{name}: {e}"))?;
            f.write_all_at(&buf[..n], to + done).map_err(|e| format!("{}: {e}", out.display()))?;
            done += n as u64;
        }
    }
    Ok(())
}

/// A pfn set as a bitmap.
struct Pfns(Vec<u64>);

impl Pfns {
    fn from_ranges(r: &[Range<u64>]) -> Self {
        let end = r.iter().map(|r| r.end).max().unwrap_or(0);
        let mut v = vec![0u64; end.div_ceil(64) as usize];
        for r in r {
            for p in r.clone() {
                v[(p / 64) as usize] |= 1 << (p % 64);
            }
        }
        Pfns(v)
    }
    fn has(&self, p: u64) -> bool {
        self.0.get((p / 64) as usize).is_some_and(|w| w >> (p % 64) & 1 == 1)
    }
}

/// Pfn ranges of `ours` where `pick` holds.
fn ranges_where(ours: &[Range<u64>], pick: impl Fn(u64) -> bool) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for p in ours.iter().flat_map(|r| r.clone()).filter(|&p| pick(p)) {
        match out.last_mut() {
            Some(r) if r.end == p => r.end += 1,
            _ => out.push(p..p + 1),
        }
    }
    out
}

fn count(r: &[Range<u64>]) -> u64 {
    r.iter().map(|r| r.end - r.start).sum()
}

/// Compares the pages lifeboat kept (`ours`: its 1st and 2nd bitmaps) with makedumpfile's
/// (`theirs`) over the pages both count as memory.
pub fn compare(ours: &DumpLayout, theirs: &DumpLayout) -> Result<String, String> {
    let (our_kept, their_mem, their_kept) = (
        Pfns::from_ranges(&ours.bitmap2_pfns),
        Pfns::from_ranges(&theirs.bitmap_pfns),
        Pfns::from_ranges(&theirs.bitmap2_pfns),
    );
    let mem = &ours.bitmap_pfns;
    let only_ours = ranges_where(mem, |p| !their_mem.has(p));
    let we_drop = ranges_where(mem, |p| their_mem.has(p) && !our_kept.has(p) && their_kept.has(p));
    let they_drop =
        ranges_where(mem, |p| their_mem.has(p) && our_kept.has(p) && !their_kept.has(p));
    let compared = count(mem) - count(&only_ours);
    let left_out = ranges_where(mem, |p| their_mem.has(p) && !our_kept.has(p));
    let not_compared = if only_ours.is_empty() {
        String::new()
    } else {
        format!(
            "; {} pages makedumpfile does not count as memory were not compared ({})",
            count(&only_ours),
            describe_pfn_ranges(&only_ours, 4)
        )
    };
    if we_drop.is_empty() && they_drop.is_empty() {
        return Ok(format!(
            "both left out the same {} of {} pages{}",
            count(&left_out),
            compared,
            not_compared
        ));
    }
    let mut why = Vec::new();
    if !we_drop.is_empty() {
        why.push(format!(
            "{} pages left out by lifeboat but kept by makedumpfile: {}",
            count(&we_drop),
            describe_pfn_ranges(&we_drop, 10)
        ));
    }
    if !they_drop.is_empty() {
        why.push(format!(
            "{} pages kept by lifeboat but left out by makedumpfile: {}",
            count(&they_drop),
            describe_pfn_ranges(&they_drop, 10)
        ));
    }
    Err(format!("of {} pages compared, {}{}", compared, why.join("; "), not_compared))
}

/// Runs the cross-check for a capture of dump level 31: normalizes `qemu_elf` into
/// `<dir>/vmcore.elf`, runs `makedumpfile -d 31` on it into `<dir>/makedumpfile-d31`, and
/// compares. The two large files are deleted afterwards.
pub fn cross_check(
    tools: &super::arch::HostTools,
    dir: &Path,
    qemu_elf: &Path,
    ours: &DumpLayout,
) -> Result<String, String> {
    if ours.dump_level != 31 {
        return Err(format!("the dump's level is {}, not 31 (lifeboat's default)", ours.dump_level));
    }
    let info = ours.vmcoreinfo.as_ref().ok_or("the dump has no VMCOREINFO")?;
    let elf = dir.join("vmcore.elf");
    let out = dir.join("makedumpfile-d31");
    normalize(qemu_elf, info.as_bytes(), &elf)?;
    let _ = std::fs::remove_file(&out); // makedumpfile refuses to overwrite
    let mut c = tools.makedumpfile();
    c.args(["-d", "31"]).arg(&elf).arg(&out);
    let fin = qemu::run_with_timeout(
        c,
        None,
        &dir.join("makedumpfile-d31.stdout"),
        &dir.join("makedumpfile-d31.stderr"),
        Duration::from_secs(600),
    );
    let keep = std::env::var_os(super::KEEP_MEMORY_ENV).is_some();
    if !keep {
        let _ = std::fs::remove_file(&elf);
    }
    let fin = fin?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`makedumpfile -d 31` exited {:?}:\n{}",
            fin.code(),
            super::checks::tail_of(&dir.join("makedumpfile-d31.stderr"), 10)
        ));
    }
    let theirs = headers_and_bitmaps(&out);
    if !keep {
        let _ = std::fs::remove_file(&out);
    }
    let theirs = DumpLayout::read(&theirs?).map_err(|e| format!("makedumpfile's dump: {e}"))?;
    compare(ours, &theirs)
}

/// The start of a kdump-compressed file up to the end of its bitmaps: all [`DumpLayout`]
/// needs (makedumpfile's page data, a few hundred MB at 4 GiB, is not read).
pub(crate) fn headers_and_bitmaps(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display();
    let file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let size = file.metadata().map_err(|e| format!("{name}: {e}"))?.len();
    let mut head = vec![0u8; BLOCK.min(size) as usize];
    file.read_exact_at(&mut head, 0).map_err(|e| format!("{name}: {e}"))?;
    if head.len() < 440 {
        return Ok(head); // DumpLayout::read says what is wrong
    }
    let blocks = 1 + u64::from(u32_at(&head, 432)) + u64::from(u32_at(&head, 436));
    let mut buf = vec![0u8; blocks.saturating_mul(BLOCK).min(size) as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| format!("{name}: {e}"))?;
    Ok(buf)
}

/// makedumpfile's block size on x86_64 (the page size), as [`DumpLayout`] assumes.
const BLOCK: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bm1: Vec<Range<u64>>, bm2: Vec<Range<u64>>) -> DumpLayout {
        DumpLayout {
            nr_cpus: 1,
            release: String::new(),
            status: 0,
            max_mapnr: 0,
            bitmap_pfns: bm1,
            bitmap2_pfns: bm2,
            prstatus: vec![],
            vmcoreinfo: None,
            dump_level: 31,
        }
    }

    #[test]
    fn compare_lists_each_kind_of_difference() {
        let ours = layout(vec![0..100, 200..210], vec![0..10, 20..100, 200..210]);
        // The same, except makedumpfile has no memory at 200.. (not compared).
        let same = layout(vec![0..100], vec![0..10, 20..100]);
        let ok = compare(&ours, &same).unwrap();
        assert!(ok.contains("same 10 of 100 pages"), "{ok}");
        assert!(ok.contains("10 pages makedumpfile does not count as memory"), "{ok}");
        // makedumpfile keeps 5..15 and leaves out 50..53.
        let other = layout(vec![0..100, 200..210], vec![0..15, 20..50, 53..100, 200..210]);
        let e = compare(&ours, &other).unwrap_err();
        assert!(e.contains("5 pages left out by lifeboat but kept by makedumpfile: 0xa000-0xefff"), "{e}");
        assert!(e.contains("3 pages kept by lifeboat but left out by makedumpfile: 0x32000-0x34fff"), "{e}");
    }
}
