//! Times lifeboat's dump pipeline on the host, with no device I/O: an ELF vmcore (for example
//! QEMU's `dump-guest-memory` of a crashed guest, laid out like `/proc/vmcore` by
//! `qemu_tests::e2e::exclusion::normalize`) goes through the same code the capture kernel
//! runs — elfcorehdr checks, page filtering at the dump level asked for (default 31: the
//! `struct page` filter through the crashed kernel's page tables, and zero pages), per-page
//! zlib and the kdump-compressed layout — into a sink that only counts bytes.
//!
//! ```sh
//! cargo run --release -p lifeboat-capture --example pipeline -- VMCORE.elf [--level N] [-o OUT]
//! ```
//!
//! Prints one line `pipeline: <ram bytes> bytes of RAM in <s> s, dump <bytes> bytes, <pages>
//! pages (<zero> zero)` that `cargo xtask bench` reads; with `-o`, the dump is also written (to
//! check it with crash or makedumpfile).
//!
//! The kexec convention the capture kernel sees (a PT_LOAD's `p_offset` is the physical
//! address to read) is rebuilt here: the file's program headers are rewritten so that each
//! `p_offset` equals `p_paddr`, notes are given made-up physical addresses above RAM, and a
//! `PhysRead` maps those addresses back to file offsets.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::Instant;

use lifeboat_capture::dump::{self, FilterSelect, NoProgress};
use lifeboat_capture::elfcore::{ElfCoreHeader, Limits, EHDR_SIZE, EM_X86_64, PHDR_SIZE, PT_LOAD, PT_NOTE};
use lifeboat_capture::filter::PageFilter;
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use lifeboat_capture::vtop::KernelVm;
use lifeboat_capture::phys::{PhysError, PhysRead};
use lifeboat_capture::sink::{RecordSink, SinkError};

/// Where the rewritten ELF header and the notes are placed (above any RAM of a test guest).
const HDR_ADDR: u64 = 1 << 45;
const NOTES_ADDR: u64 = HDR_ADDR + (1 << 30);

/// A "physical memory" made of the vmcore file's PT_LOADs plus two made-up regions.
struct ElfMemory {
    file: File,
    /// (paddr, len, file offset) of each PT_LOAD.
    loads: Vec<(u64, u64, u64)>,
    /// The rewritten header at `HDR_ADDR`, the notes at `NOTES_ADDR`.
    header: Vec<u8>,
    notes: Vec<u8>,
}

impl PhysRead for ElfMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let len = buf.len() as u64;
        let bad = PhysError::Unreadable { addr, len };
        let end = addr.checked_add(len).ok_or(bad)?;
        for (base, bytes) in [(HDR_ADDR, &self.header), (NOTES_ADDR, &self.notes)] {
            if addr >= base && end <= base + bytes.len() as u64 {
                let at = (addr - base) as usize;
                buf.copy_from_slice(&bytes[at..at + buf.len()]);
                return Ok(());
            }
        }
        let &(paddr, _, off) =
            self.loads.iter().find(|&&(p, l, _)| addr >= p && end <= p + l).ok_or(bad)?;
        self.file.read_exact_at(buf, off + (addr - paddr)).map_err(|_| bad)
    }
}

struct CountingSink {
    end: u64,
    out: Option<File>,
}

impl RecordSink for CountingSink {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.end = self.end.max(offset + data.len() as u64);
        if let Some(f) = &self.out {
            f.write_all_at(data, offset).map_err(|_| SinkError::Io("cannot write the output file"))?;
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn open(path: &str) -> Result<ElfMemory, String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut ehdr = vec![0u8; EHDR_SIZE];
    file.read_exact_at(&mut ehdr, 0).map_err(|e| format!("{path}: {e}"))?;
    if &ehdr[..4] != b"\x7fELF" {
        return Err(format!("{path} is not an ELF file"));
    }
    let phoff = u64_at(&ehdr, 32);
    let phnum = u16_at(&ehdr, 56) as usize;
    let mut phdrs = vec![0u8; phnum * PHDR_SIZE];
    file.read_exact_at(&mut phdrs, phoff).map_err(|e| format!("{path}: program headers: {e}"))?;
    let mut loads = Vec::new();
    let mut notes = Vec::new();
    for i in 0..phnum {
        let p = &mut phdrs[i * PHDR_SIZE..(i + 1) * PHDR_SIZE];
        let (ty, off, paddr, filesz) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 24), u64_at(p, 32));
        match ty {
            PT_LOAD if filesz > 0 => {
                loads.push((paddr, filesz, off));
                p[8..16].copy_from_slice(&paddr.to_le_bytes());
            }
            PT_NOTE => {
                let mut n = vec![0u8; filesz as usize];
                file.read_exact_at(&mut n, off).map_err(|e| format!("{path}: notes: {e}"))?;
                let at = NOTES_ADDR + notes.len() as u64;
                notes.extend_from_slice(&n);
                p[8..16].copy_from_slice(&at.to_le_bytes());
                p[16..24].copy_from_slice(&at.to_le_bytes());
                p[24..32].copy_from_slice(&at.to_le_bytes());
            }
            _ => {}
        }
    }
    // The header as the capture kernel would find it: ELF header then program headers.
    ehdr[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
    let mut header = ehdr;
    header.extend_from_slice(&phdrs);
    Ok(ElfMemory { file, loads, header, notes })
}

fn run() -> Result<(), String> {
    let usage = "usage: pipeline VMCORE.elf [--level N] [-o OUT]";
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or(usage)?;
    let (mut level, mut out) = (31u8, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--level" => level = args.next().and_then(|v| v.parse().ok()).filter(|&l| l <= 31).ok_or(usage)?,
            "-o" => out = Some(args.next().ok_or(usage)?),
            _ => return Err(usage.into()),
        }
    }
    let mem = open(&path)?;
    let limits = Limits { max_phys: 1 << 47, own: Vec::new(), ram: None, machine: EM_X86_64, hdr_size: None };
    let t = Instant::now();
    let core = ElfCoreHeader::parse(&mem, HDR_ADDR, &limits).map_err(|e| format!("{path}: {e}"))?;
    let (mut params, _warnings) = dump::dump_params(&core, &mem, "x86_64");
    let out = match out {
        Some(o) => Some(File::create(&o).map_err(|e| format!("{o}: {e}"))?),
        None => None,
    };
    let mut sink = CountingSink { end: 0, out };
    let info = core.vmcoreinfo_bytes().map(VmcoreInfo::new).ok_or("the vmcore has no VMCOREINFO")?;
    let vm = KernelVm::new(&info, &mem, EM_X86_64).map_err(|e| format!("page tables: {e}"))?;
    let (filter, warnings) = PageFilter::new(&info, &vm, level, dump::max_pfn(&core, params.page_size))
        .map_err(|e| e.to_string())?;
    for w in &warnings {
        eprintln!("pipeline: warning: {w}");
    }
    params.dump_level = u32::from(filter.effective_level());
    let mut select = FilterSelect::new(filter);
    let s = dump::write_kdump_filtered(&core, &params, &mem, &mut select, &mut sink, &mut NoProgress);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pipeline: {} bytes of RAM in {:.3} s, dump {} bytes, {} pages ({} zero, {} compressed, {} raw, {} left out at level {}), verdict {:?}",
        s.ram_bytes, secs, sink.end, s.pages_total, s.pages_zero, s.pages_compressed, s.pages_raw,
        select.excluded(), params.dump_level, s.verdict
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}
