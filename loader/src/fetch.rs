//! `lifeboat fetch DEVICE|FILE -o OUT [--force]`: copy a dump out of a dump disk.
//!
//! The `blk` sink writes the kdump-compressed dump from sector 0 of a whole disk, followed by
//! whatever the disk held before. `crash` reads the disk in place; `fetch` copies just the
//! dump — `[0, data_end)`, the end of the furthest page data the descriptors name — into a
//! file, after checking every page ([`KdumpReader::verify`]).
//!
//! The disk is opened read-only. The output is written as `OUT.part` (mode 0600: a dump holds
//! all of the crashed machine's memory) and renamed to OUT when complete; an existing OUT is
//! only replaced with `--force`.
//!
//! Exit codes: 0 a complete dump was copied; 1 an incomplete dump was copied (the capture was
//! cut short, the header says so); 2 no dump, a corrupt dump, or a usage or I/O error.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_capture::blk::is_in_progress_marker;
use lifeboat_capture::kdump::{UtsName, KDUMP_SIGNATURE};
use lifeboat_capture::kdump_reader::{KdumpError, KdumpReader, ReadAt, VerifyReport};

/// Bytes copied per read.
const COPY_CHUNK: usize = 1 << 20;
/// Progress lines at most this often.
const PROGRESS_PERIOD: Duration = Duration::from_secs(1);

/// A file or block device read at offsets, with a size limit (the dump's end once known).
pub struct DiskReader {
    file: File,
    size: u64,
}

impl DiskReader {
    /// Opens `path` read-only. The size of a block device is where a seek to its end lands.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self { file, size })
    }

    /// The same device, seen only up to `size` bytes.
    fn limited(&self, size: u64) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            size: size.min(self.size),
        })
    }
}

impl ReadAt for DiskReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or("offset overflows")?;
        if end > self.size {
            return Err(format!(
                "read of {} bytes at {offset:#x} past the end ({} bytes)",
                buf.len(),
                self.size
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| e.to_string())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// Why nothing (usable) was copied; all exit 2.
#[derive(Debug)]
pub enum FetchError {
    Open {
        path: PathBuf,
        err: io::Error,
    },
    /// Sector 0 holds lifeboat's in-progress marker.
    Unfinished(PathBuf),
    NoDump(PathBuf),
    /// The headers or pages are inconsistent.
    Corrupt {
        path: PathBuf,
        err: KdumpError,
    },
    OutputExists(PathBuf),
    Write {
        path: PathBuf,
        err: io::Error,
    },
    Read {
        path: PathBuf,
        offset: u64,
        err: io::Error,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Open { path, err } => write!(f, "cannot open {}: {err}", path.display()),
            FetchError::Unfinished(p) => write!(
                f,
                "{}: a capture started but did not finish; no dump (the capture kernel stopped before \
                 writing the dump header: see its console output)",
                p.display()
            ),
            FetchError::NoDump(p) => write!(f, "no dump on {} (it does not start with a kdump header)", p.display()),
            FetchError::Corrupt { path, err } => write!(
                f,
                "the dump on {} is corrupt: {err}; nothing copied (crash may still read parts of it in place)",
                path.display()
            ),
            FetchError::OutputExists(p) => {
                write!(f, "{} exists: choose another name or pass --force to replace it", p.display())
            }
            FetchError::Write { path, err } => write!(f, "cannot write {}: {err}", path.display()),
            FetchError::Read { path, offset, err } => {
                write!(f, "cannot read {} at offset {offset:#x}: {err}", path.display())
            }
        }
    }
}

/// What was copied.
#[derive(Clone, Debug)]
pub struct FetchReport {
    pub report: VerifyReport,
    /// Bytes copied (the dump's size).
    pub bytes: u64,
    /// Size of the device or file it came from.
    pub source_size: u64,
    pub page_size: u32,
    /// `release machine (node)` from the dump header.
    pub system: String,
    /// For an incomplete dump: why its pages could not all be checked, if they could not.
    pub problem: Option<String>,
}

impl FetchReport {
    pub fn is_complete(&self) -> bool {
        !self.report.incomplete && self.problem.is_none()
    }
}

fn output_part(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// Copies the dump on `source` to `out`. `progress` receives short status lines (verifying,
/// copying) at most once a second.
pub fn fetch(
    source: &Path,
    out: &Path,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
    if !force && fs::symlink_metadata(out).is_ok() {
        return Err(FetchError::OutputExists(out.to_path_buf()));
    }
    let disk = DiskReader::open(source).map_err(|err| FetchError::Open {
        path: source.to_path_buf(),
        err,
    })?;
    let mut start = [0u8; 512];
    let n = (disk.size() as usize).min(start.len());
    disk.read_at(0, &mut start[..n])
        .map_err(|e| FetchError::Read {
            path: source.to_path_buf(),
            offset: 0,
            err: io::Error::other(e),
        })?;
    if is_in_progress_marker(&start[..n]) {
        return Err(FetchError::Unfinished(source.to_path_buf()));
    }
    if !start[..n].starts_with(&KDUMP_SIGNATURE) {
        return Err(FetchError::NoDump(source.to_path_buf()));
    }
    let corrupt = |err| FetchError::Corrupt {
        path: source.to_path_buf(),
        err,
    };
    let whole = KdumpReader::open(disk).map_err(corrupt)?;
    let incomplete = whole.is_incomplete();
    let data_end = whole.data_end().map_err(corrupt)?;
    let disk = whole.into_inner();
    let source_size = disk.size();
    // Descriptors past the end of a cut-short capture can be old disk contents.
    let data_end = data_end.min(source_size);

    // Check every page, seeing only the dump (not what follows it on the disk).
    let view = disk.limited(data_end).map_err(|err| FetchError::Open {
        path: source.to_path_buf(),
        err,
    })?;
    let reader = KdumpReader::open(view).map_err(corrupt)?;
    let mut last = Instant::now();
    let mut tick = |done: u64, total: u64| {
        if last.elapsed() >= PROGRESS_PERIOD && total > 0 {
            last = Instant::now();
            progress(&format!(
                "verifying: {}% of {} pages",
                done * 100 / total,
                total
            ));
        }
    };
    let (report, problem) = match reader.verify(&mut tick) {
        Ok(r) => (r, None),
        // A dump cut short may end in descriptors the capture never wrote (old disk contents):
        // keep what is there and say so.
        Err(e) if incomplete => {
            let r = VerifyReport {
                max_pfn: reader.max_pfn(),
                pages_dumpable: reader.num_dumpable(),
                data_end,
                file_size: data_end,
                incomplete,
                ..VerifyReport::default()
            };
            (r, Some(e.to_string()))
        }
        Err(e) => return Err(corrupt(e)),
    };
    let h = reader.header();
    let field = |f: &[u8; lifeboat_capture::kdump::UTS_FIELD_LEN]| {
        UtsName::get(f).unwrap_or("?").to_string()
    };
    let mut system = format!(
        "Linux {} {}",
        field(&h.utsname.release),
        field(&h.utsname.machine)
    );
    let node = field(&h.utsname.nodename);
    if !node.is_empty() {
        system.push_str(&format!(" (host {node})"));
    }
    let page_size = reader.page_size();
    let disk = reader.into_inner();

    // Copy [0, data_end) through OUT.part.
    let part = output_part(out);
    let werr = |err| FetchError::Write {
        path: part.clone(),
        err,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&part)
        .map_err(werr)?;
    let result = copy(&disk, &mut f, data_end, source, &part, &mut |done| {
        if last.elapsed() >= PROGRESS_PERIOD {
            last = Instant::now();
            progress(&format!(
                "copying: {} of {} MiB",
                done >> 20,
                data_end >> 20
            ));
        }
    })
    .and_then(|()| f.sync_all().map_err(werr))
    .and_then(|()| {
        fs::rename(&part, out).map_err(|err| FetchError::Write {
            path: out.to_path_buf(),
            err,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result?;
    Ok(FetchReport {
        report,
        bytes: data_end,
        source_size,
        page_size,
        system,
        problem,
    })
}

fn copy(
    disk: &DiskReader,
    out: &mut File,
    len: u64,
    source: &Path,
    part: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), FetchError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(COPY_CHUNK as u64) as usize;
        disk.file
            .read_exact_at(&mut buf[..n], done)
            .map_err(|err| FetchError::Read {
                path: source.to_path_buf(),
                offset: done,
                err,
            })?;
        out.write_all(&buf[..n]).map_err(|err| FetchError::Write {
            path: part.to_path_buf(),
            err,
        })?;
        done += n as u64;
        progress(done);
    }
    Ok(())
}

/// Bytes for people: `12.3 MiB (12897280 bytes)`.
fn size(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        bytes as f64 / (1u64 << 20) as f64
    )
}

/// `lifeboat fetch`: prints the result; returns the exit code.
pub fn cmd(source: &Path, out: &Path, force: bool) -> u8 {
    let mut progress = |line: &str| eprintln!("lifeboat: {line}");
    match fetch(source, out, force, &mut progress) {
        Ok(r) => {
            let v = &r.report;
            println!(
                "dump of {}: {} to {} (of {} on {})",
                r.system,
                size(r.bytes),
                out.display(),
                size(r.source_size),
                source.display()
            );
            if r.problem.is_some() {
                println!(
                    "pages: {} dumpable, {} KiB each (not all checked)",
                    v.pages_dumpable,
                    r.page_size / 1024
                );
            } else {
                println!(
                    "pages: {} dumpable, {} KiB each: {} zlib, {} uncompressed, {} zero, {} missing (unreadable \
                     when captured), {} lost (past the end of the dump)",
                    v.pages_dumpable,
                    r.page_size / 1024,
                    v.pages_zlib,
                    v.pages_raw,
                    v.pages_zero,
                    v.pages_missing,
                    v.pages_lost
                );
            }
            if r.is_complete() {
                println!("verdict: complete");
                0
            } else {
                let mut why = String::from(
                    "the header says the capture ended early (DUMP_DH_COMPRESSED_INCOMPLETE)",
                );
                if let Some(p) = &r.problem {
                    why.push_str(&format!("; pages not checked: {p}"));
                }
                println!("verdict: INCOMPLETE: {why}; copied anyway");
                1
            }
        }
        Err(e) => {
            eprintln!("lifeboat: {e}");
            2
        }
    }
}
