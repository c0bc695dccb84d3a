//! Checks lifeboat's page filter ([`lifeboat_capture::filter`]) against makedumpfile on a real
//! crash: every pfn of an ELF vmcore is classified at a dump level, and the result is
//! compared with the second bitmap of makedumpfile's kdump-compressed dump of the same file.
//!
//! ```sh
//! LIFEBOAT_E2E_KEEP_MEMORY=1 cargo xtask e2e   # keeps target/e2e/file-1g/vmcore.elf
//! makedumpfile -d 31 --message-level 31 target/e2e/file-1g/vmcore.elf /tmp/mdf.out > /tmp/mdf.log
//! cargo run --release -p lifeboat-capture --example filtercheck -- \
//!     target/e2e/file-1g/vmcore.elf /tmp/mdf.out \
//!     [--level 31] [--log /tmp/mdf.log]
//! ```
//!
//! The input may also be a kdump-compressed dump holding every page (lifeboat's own, dump
//! level 1): `makedumpfile -d 31 VMCORE OUT` refilters it, and its first bitmap stands for the
//! `PT_LOAD`s.
//!
//! An ELF file must look like `/proc/vmcore` (program headers after the ELF header, a
//! VMCOREINFO note): the e2e exclusion check (`qemu_tests::e2e::exclusion::normalize`) makes
//! one from QEMU's `dump-guest-memory` and keeps it with `LIFEBOAT_E2E_KEEP_MEMORY`. The e2e
//! suite runs the same comparison on every real crash, against the dump the capture kernel
//! wrote; this tool adds per-class counts and the `struct page` of each difference.
//! makedumpfile keeps zero pages in its second bitmap (they get the shared zero descriptor),
//! so the bitmaps differ only by `struct page` classes. With `--log`, makedumpfile's per-class
//! counts (its `--message-level 31` report) are printed beside lifeboat's.
//!
//! makedumpfile cuts its memory at the end of the last section that has `struct page`s
//! (`get_mem_map()` lowers `max_mapnr`), so pages above it — QEMU's 256 KiB BIOS ROM at
//! 0xfffc0000 in `dump-guest-memory` files — are in neither of its bitmaps; the filter keeps
//! them (no `struct page`), and "pages in the dump's memory" differs by that much.
//!
//! Prints the pages per class, then every range of pfns where the two disagree, with the
//! `struct page` of its first pfn; exits 1 if there is any.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use lifeboat_capture::elfcore::{EHDR_SIZE, EM_X86_64, PHDR_SIZE, PT_LOAD, PT_NOTE};
use lifeboat_capture::filter::{PageClass, PageFilter};
use lifeboat_capture::kdump_reader::{KdumpReader, ReadAt};
use lifeboat_capture::phys::{PhysError, PhysRead};
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use lifeboat_capture::vtop::KernelVm;

/// The PT_LOADs of an ELF vmcore file as physical memory.
struct ElfMemory {
    file: File,
    /// (paddr, len, file offset).
    loads: Vec<(u64, u64, u64)>,
}

impl PhysRead for ElfMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let len = buf.len() as u64;
        let bad = PhysError::Unreadable { addr, len };
        let end = addr.checked_add(len).ok_or(bad)?;
        let &(paddr, _, off) =
            self.loads.iter().find(|&&(p, l, _)| addr >= p && end <= p + l).ok_or(bad)?;
        self.file.read_exact_at(buf, off + (addr - paddr)).map_err(|_| bad)
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Opens an ELF vmcore: its PT_LOADs and its VMCOREINFO note descriptor.
fn open_elf(path: &str) -> Result<(ElfMemory, Vec<u8>), String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut ehdr = vec![0u8; EHDR_SIZE];
    file.read_exact_at(&mut ehdr, 0).map_err(|e| format!("{path}: {e}"))?;
    if &ehdr[..4] != b"\x7fELF" || u16::from_le_bytes([ehdr[18], ehdr[19]]) != EM_X86_64 {
        return Err(format!("{path} is not an x86_64 ELF file"));
    }
    let phoff = u64_at(&ehdr, 32);
    let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]) as usize;
    let mut phdrs = vec![0u8; phnum * PHDR_SIZE];
    file.read_exact_at(&mut phdrs, phoff).map_err(|e| format!("{path}: program headers: {e}"))?;
    let mut loads = Vec::new();
    let mut vmcoreinfo = None;
    for p in phdrs.chunks(PHDR_SIZE) {
        let (ty, off, paddr, filesz) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 24), u64_at(p, 32));
        match ty {
            PT_LOAD if filesz > 0 => loads.push((paddr, filesz, off)),
            PT_NOTE => {
                let mut n = vec![0u8; filesz as usize];
                file.read_exact_at(&mut n, off).map_err(|e| format!("{path}: notes: {e}"))?;
                let mut at = 0;
                while at + 12 <= n.len() {
                    let (namesz, descsz) = (u32_at(&n, at) as usize, u32_at(&n, at + 4) as usize);
                    let name_at = at + 12;
                    let desc_at = name_at + namesz.div_ceil(4) * 4;
                    let next = desc_at + descsz.div_ceil(4) * 4;
                    if next > n.len() {
                        break;
                    }
                    if n[name_at..name_at + namesz].starts_with(b"VMCOREINFO") {
                        vmcoreinfo = Some(n[desc_at..desc_at + descsz].to_vec());
                    }
                    at = next;
                }
            }
            _ => {}
        }
    }
    let vmcoreinfo = vmcoreinfo.ok_or_else(|| {
        format!("{path} has no VMCOREINFO note (run `pipeline --normalize` on QEMU dumps)")
    })?;
    loads.sort();
    Ok((ElfMemory { file, loads }, vmcoreinfo))
}

/// The memory to classify, its VMCOREINFO, and its pfn runs (start, count).
type Input = (Box<dyn PhysRead>, Vec<u8>, Vec<(u64, u64)>);

struct DumpFile {
    file: File,
    size: u64,
}

impl ReadAt for DumpFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.file.read_exact_at(buf, offset).map_err(|e| e.to_string())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// makedumpfile's first and second bitmaps (kdump-compressed layout, project reference §1.1).
fn read_bitmaps(path: &str) -> Result<(Vec<u8>, Vec<u8>, u64), String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let size = file.metadata().map_err(|e| format!("{path}: {e}"))?.len();
    let rd = KdumpReader::open(DumpFile { file, size }).map_err(|e| format!("{path}: {e}"))?;
    let h = rd.header();
    let block = h.block_size as u64;
    let half = h.bitmap_blocks as u64 * block / 2;
    let at = (1 + h.sub_hdr_size as u64) * block;
    let max_pfn = rd.max_pfn();
    let file = rd.into_inner().file;
    let mut b1 = vec![0u8; half as usize];
    let mut b2 = vec![0u8; half as usize];
    file.read_exact_at(&mut b1, at).map_err(|e| format!("{path}: bitmap 1: {e}"))?;
    file.read_exact_at(&mut b2, at + half).map_err(|e| format!("{path}: bitmap 2: {e}"))?;
    Ok((b1, b2, max_pfn))
}

fn bit(b: &[u8], pfn: u64) -> bool {
    b.get((pfn / 8) as usize).is_some_and(|&x| x & (1 << (pfn % 8)) != 0)
}

/// makedumpfile's report lines (`--message-level 31`), in [`PageClass::ALL`] order.
fn mdf_counts(log: &str) -> [Option<u64>; 8] {
    let labels = [
        None,
        Some("Non-private cache pages"),
        Some("Private cache pages"),
        Some("User process data pages"),
        Some("Free pages"),
        Some("Hwpoison pages"),
        Some("Offline pages"),
        None,
    ];
    labels.map(|l| {
        let l = l?;
        log.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == l)
                .then(|| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())?
        })
    })
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut level = 31u8;
    let mut log = None;
    let mut chunk = 4096u64;
    let mut reverse = false;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--level" => {
                level = it.next().and_then(|v| v.parse().ok()).ok_or("--level needs 0..31")?
            }
            "--log" => log = Some(it.next().ok_or("--log needs a file")?.clone()),
            "--chunk" => {
                chunk = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--chunk needs a count")?
            }
            "--reverse" => reverse = true,
            _ => paths.push(a.clone()),
        }
    }
    let [elf, kdump] = paths.as_slice() else {
        return Err("usage: filtercheck VMCORE.elf MAKEDUMPFILE.out [--level N] [--log MDF.log] \
                    [--chunk PAGES] [--reverse]"
            .into());
    };
    let mut sig = [0u8; 8];
    File::open(elf)
        .and_then(|f| f.read_exact_at(&mut sig, 0))
        .map_err(|e| format!("{elf}: {e}"))?;
    let (mem, text, runs): Input = if &sig == b"KDUMP   " {
        let (b1, _, max) = read_bitmaps(elf)?;
        let file = File::open(elf).map_err(|e| format!("{elf}: {e}"))?;
        let size = file.metadata().map_err(|e| format!("{elf}: {e}"))?.len();
        let rd = KdumpReader::open(DumpFile { file, size }).map_err(|e| format!("{elf}: {e}"))?;
        let text = rd.vmcoreinfo().ok_or_else(|| format!("{elf} has no VMCOREINFO"))?.to_vec();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for pfn in (0..max).filter(|&p| bit(&b1, p)) {
            match runs.last_mut() {
                Some((s, n)) if *s + *n == pfn => *n += 1,
                _ => runs.push((pfn, 1)),
            }
        }
        (Box::new(rd), text, runs)
    } else {
        let (mem, text) = open_elf(elf)?;
        let ps = VmcoreInfo::new(&text).page_size().unwrap_or(4096);
        let runs =
            mem.loads.iter().map(|&(p, l, _)| (p / ps, (p + l).div_ceil(ps) - p / ps)).collect();
        (Box::new(mem), text, runs)
    };
    let info = VmcoreInfo::new(&text);
    let vm = KernelVm::new(&info, &*mem, EM_X86_64).map_err(|e| format!("{elf}: {e}"))?;
    let max_pfn = runs.iter().map(|&(p, n)| p + n).max().unwrap_or(0);
    let (mut filter, warnings) =
        PageFilter::new(&info, &vm, level, max_pfn).map_err(|e| e.to_string())?;
    for w in &warnings {
        println!("{w}");
    }
    println!(
        "dump level {} requested, {} in effect; max_pfn {:#x}",
        level,
        filter.effective_level(),
        max_pfn
    );

    // Classify the pfns of every PT_LOAD in chunks, in order as the dump writer will (or
    // last chunk first with --reverse, to exercise going back).
    let mut classes = vec![PageClass::Keep; max_pfn as usize];
    let mut in_load = vec![false; max_pfn as usize];
    let mut chunks = Vec::new();
    for &(first, count) in &runs {
        let end = first + count;
        let mut pfn = first;
        while pfn < end {
            let n = (end - pfn).min(chunk);
            chunks.push((pfn, n));
            pfn += n;
        }
        in_load[first as usize..end as usize].fill(true);
    }
    if reverse {
        chunks.reverse();
    }
    let t = std::time::Instant::now();
    for (pfn, n) in chunks {
        let out = &mut classes[pfn as usize..(pfn + n) as usize];
        filter.classify(pfn, out).map_err(|e| e.to_string())?;
    }
    let secs = t.elapsed().as_secs_f64();

    let (b1, b2, mdf_max) = read_bitmaps(kdump)?;
    let mut ours = [0u64; 8];
    let mut mdf_excluded = 0u64;
    let mut mdf_present = 0u64;
    // Differing ranges: (start, end, our class, makedumpfile excludes).
    let mut diffs: Vec<(u64, u64, PageClass, bool)> = Vec::new();
    for pfn in 0..max_pfn.max(mdf_max) {
        let present = bit(&b1, pfn);
        let theirs = present && !bit(&b2, pfn);
        mdf_present += u64::from(present);
        mdf_excluded += u64::from(theirs);
        let (class, mine) = if pfn < max_pfn && in_load[pfn as usize] {
            let c = classes[pfn as usize];
            ours[c.index()] += 1;
            (c, c.is_excluded())
        } else {
            (PageClass::Keep, false)
        };
        if mine != theirs {
            match diffs.last_mut() {
                Some(d) if d.1 == pfn && d.2 == class && d.3 == theirs => d.1 = pfn + 1,
                _ => diffs.push((pfn, pfn + 1, class, theirs)),
            }
        }
    }
    let theirs_by_class = match &log {
        Some(path) => {
            mdf_counts(&std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?)
        }
        None => [None; 8],
    };
    println!("classified {} pfns in {:.3} s", ours.iter().sum::<u64>(), secs);
    println!("{:<48} {:>10} {:>14}", "class", "lifeboat", "makedumpfile");
    for c in PageClass::ALL {
        let theirs = theirs_by_class[c.index()].map_or(String::from("-"), |n| n.to_string());
        println!("{:<48} {:>10} {:>14}", c.name(), ours[c.index()], theirs);
    }
    let our_excluded: u64 =
        PageClass::ALL.iter().filter(|c| c.is_excluded()).map(|c| ours[c.index()]).sum();
    println!(
        "{:<48} {:>10} {:>14}",
        "excluded by struct page (bitmap 1 and not bitmap 2)", our_excluded, mdf_excluded
    );
    println!(
        "{:<48} {:>10} {:>14}",
        "pages in the dump's memory",
        in_load.iter().filter(|&&b| b).count(),
        mdf_present
    );
    println!("filter stats: {:?}", filter.stats());
    println!("{} differing ranges", diffs.len());
    for &(start, end, class, theirs) in diffs.iter().take(200) {
        let who = if theirs {
            "makedumpfile excludes, lifeboat keeps"
        } else {
            "lifeboat excludes, makedumpfile keeps"
        };
        println!(
            "  pfns {:#x}..{:#x} ({} pages): {} ({})",
            start,
            end,
            end - start,
            who,
            class.name()
        );
        for pfn in [start, start + 1] {
            if let Some(p) = filter.page_fields(pfn) {
                println!(
                    "    pfn {:#x}: struct page {:#x} flags {:#x} mapping {:#x} _mapcount {:#x} private {:#x} compound_head {:#x}",
                    pfn, p.va, p.flags, p.mapping, p.mapcount, p.private, p.compound_head
                );
            }
        }
    }
    Ok(diffs.is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("filtercheck: {e}");
            ExitCode::from(2)
        }
    }
}
