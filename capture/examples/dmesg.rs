//! Prints the kernel log of a kdump-compressed dump, like `makedumpfile --dump-dmesg`.
//!
//! ```sh
//! cargo run -p lifeboat-capture --example dmesg -- [--verify] [--caller-id] [--stats] VMCORE
//! ```
//!
//! The log goes to stdout, byte for byte what makedumpfile 1.7.2 (Debian 12) writes to its
//! output file; `--caller-id` adds the `[    T123] ` column that makedumpfile 1.7.5 and later
//! print. `--verify` first checks every page of the dump and prints the report to stderr;
//! `--stats` prints what the log reader skipped to stderr.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use lifeboat_capture::elfcore::{EM_AARCH64, EM_X86_64};
use lifeboat_capture::kdump_reader::{KdumpReader, ReadAt};
use lifeboat_capture::printk::for_each_record;
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use lifeboat_capture::vtop::KernelVm;

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

fn run() -> Result<(), String> {
    let mut verify = false;
    let mut caller_id = false;
    let mut stats = false;
    let mut path = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--verify" => verify = true,
            "--caller-id" => caller_id = true,
            "--stats" => stats = true,
            _ if a.starts_with('-') => return Err(format!("unknown option {}", a)),
            _ => path = Some(a),
        }
    }
    let path = path.ok_or("usage: dmesg [--verify] [--caller-id] [--stats] VMCORE")?;
    let file = File::open(&path).map_err(|e| format!("{}: {}", path, e))?;
    let size = file.metadata().map_err(|e| format!("{}: {}", path, e))?.len();
    let rd = KdumpReader::open(DumpFile { file, size }).map_err(|e| format!("{}: {}", path, e))?;
    if rd.is_incomplete() {
        eprintln!("{}: the dump is marked incomplete", path);
    }
    if verify {
        let report = rd
            .verify(&mut |done, total| {
                if done == total || done % (1 << 18) == 0 {
                    eprint!("\rverifying: {}/{} pages", done, total);
                }
            })
            .map_err(|e| format!("\n{}: verify failed: {}", path, e))?;
        eprintln!("\n{}", report);
        if report.data_end < size {
            eprintln!(
                "{} bytes after the end of the data (a raw disk copy?)",
                size - report.data_end
            );
        }
    }
    let text = rd.vmcoreinfo().ok_or("the dump has no VMCOREINFO")?;
    let info = VmcoreInfo::new(text);
    let machine = match rd.machine() {
        Some(m) if m.starts_with("x86_64") => EM_X86_64,
        Some(m) if m.starts_with("aarch64") => EM_AARCH64,
        m => return Err(format!("unknown machine {:?} in the dump header", m)),
    };
    let vm = KernelVm::new(&info, &rd, machine).map_err(|e| e.to_string())?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut write_err = None;
    let st = for_each_record(&info, &vm, &mut |r| {
        if write_err.is_none() {
            if let Err(e) = writeln!(out, "{}", r.dmesg_line_with(caller_id)) {
                write_err = Some(e);
            }
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = write_err {
        return Err(format!("stdout: {}", e));
    }
    out.flush().map_err(|e| format!("stdout: {}", e))?;
    if stats {
        eprintln!("{:?}", st);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmesg: {}", e);
            ExitCode::FAILURE
        }
    }
}
