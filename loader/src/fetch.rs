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
//! The crashed kernel's log comes first: the capture kernel writes it to a region at the end
//! of the disk, described by a trailer in the last sector (`lifeboat_capture::blk::LogTrailer`),
//! before any dump byte. `fetch` reads that trailer, checks the text's CRC-32 and writes the
//! text to `OUT.dmesg.txt` (0600, fsynced) — `OUT.dmesg.txt.incomplete` when the trailer says
//! the log is not whole or the CRC does not match — also when there is no usable dump. A disk
//! without a trailer gets no log file. The dump is never read past the region's start.
//!
//! Exit codes (they describe the dump; the log's outcome is a line of the output): 0 a complete
//! dump was copied; 1 an incomplete dump was copied (the capture was cut short, the header says
//! so); 2 no dump, a corrupt dump, or a usage or I/O error.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_capture::blk::{crc32_update, is_in_progress_marker, LogState, LogTrailer, TrailerError, SECTOR};
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
    suffixed(out, ".part")
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    p.with_file_name(name)
}

/// Where `fetch` writes the whole kernel log for dump file `out`: `<out>.dmesg.txt` (as
/// `lifeboat receive` does).
pub fn dmesg_path(out: &Path) -> PathBuf {
    suffixed(out, ".dmesg.txt")
}

/// Where `fetch` writes a log that is not whole: `<out>.dmesg.txt.incomplete`.
pub fn dmesg_incomplete_path(out: &Path) -> PathBuf {
    suffixed(out, ".dmesg.txt.incomplete")
}

/// What `fetch` did with the crashed kernel's log on the disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFetch {
    /// The file written: [`dmesg_path`] when whole, [`dmesg_incomplete_path`] otherwise;
    /// `None` when there was no log text to write (or writing failed: see `problem`).
    pub path: Option<PathBuf>,
    /// Text bytes written.
    pub bytes: u64,
    /// Records, as the trailer counts them.
    pub records: u64,
    /// The trailer says the log is whole and the text matches its CRC-32.
    pub complete: bool,
    /// Why the log is not whole, or why there is none, for people.
    pub problem: Option<String>,
}

impl LogFetch {
    fn none(why: impl Into<String>) -> Self {
        LogFetch {
            problem: Some(why.into()),
            ..LogFetch::default()
        }
    }

    /// One line for people: `kernel log: vmcore.dmesg.txt (65536 bytes, 812 records)`.
    pub fn summary(&self) -> String {
        let why = self.problem.as_deref().unwrap_or("");
        match &self.path {
            Some(p) if self.complete => format!(
                "kernel log: {} ({} bytes, {} records)",
                p.display(),
                self.bytes,
                self.records
            ),
            Some(p) => format!(
                "kernel log INCOMPLETE: {} ({} bytes, {} records): {why}",
                p.display(),
                self.bytes,
                self.records
            ),
            None => format!("kernel log: none written: {why}"),
        }
    }
}

/// Reads the kernel log trailer in the disk's last sector and writes the log next to `out`.
/// Returns what happened and where the dump's space ends (the log region's start, or the
/// disk's size when there is no trailer to trust).
fn fetch_log(disk: &DiskReader, source: &Path, out: &Path) -> (LogFetch, u64) {
    let end = disk.size() & !(SECTOR as u64 - 1);
    if end < SECTOR as u64 {
        return (LogFetch::none("the disk is smaller than one sector"), disk.size());
    }
    let mut sector = [0u8; SECTOR];
    if let Err(e) = disk.read_at(end - SECTOR as u64, &mut sector) {
        return (
            LogFetch::none(format!("cannot read the last sector of {}: {e}", source.display())),
            disk.size(),
        );
    }
    let t = match LogTrailer::decode(&sector, end) {
        Ok(t) => t,
        Err(TrailerError::Absent) => {
            return (
                LogFetch::none(
                    "no kernel log trailer in the disk's last sector (an older lifeboat wrote this disk, \
                     or the capture stopped before the log)",
                ),
                disk.size(),
            )
        }
        Err(e) => return (LogFetch::none(format!("{e}")), disk.size()),
    };
    let limit = t.region_start;
    if t.state == LogState::Writing {
        return (
            LogFetch::none("the capture stopped while writing the log (the trailer says so)"),
            limit,
        );
    }
    if t.text_len == 0 && !t.complete {
        return (
            LogFetch::none(format!("the capture kernel wrote no log: {}", t.reason)),
            limit,
        );
    }
    (write_log(disk, source, out, &t), limit)
}

/// Copies the text `t` describes through `<out>.dmesg.txt.part` (0600, fsynced) to
/// `<out>.dmesg.txt`, or `<out>.dmesg.txt.incomplete` when the log is not whole or its CRC
/// does not match; a stale file of the other name is removed.
fn write_log(disk: &DiskReader, source: &Path, out: &Path, t: &LogTrailer) -> LogFetch {
    let part = suffixed(out, ".dmesg.txt.part");
    let _ = fs::remove_file(&part);
    let result = (|| -> Result<u32, String> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut crc = 0u32;
        let mut done = 0u64;
        while done < t.text_len {
            let n = (t.text_len - done).min(COPY_CHUNK as u64) as usize;
            disk.file
                .read_exact_at(&mut buf[..n], t.region_start + done)
                .map_err(|e| format!("cannot read {} at offset {:#x}: {e}", source.display(), t.region_start + done))?;
            crc = crc32_update(crc, &buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
            done += n as u64;
        }
        f.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        Ok(crc)
    })();
    let crc = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&part);
            return LogFetch::none(e);
        }
    };
    let problem = if crc != t.text_crc {
        Some(format!(
            "the text does not match the trailer's CRC-32 ({crc:#010x}, the trailer says {:#010x}): damaged or \
             overwritten since the capture",
            t.text_crc
        ))
    } else if !t.complete {
        Some(t.reason.clone())
    } else {
        None
    };
    let complete = problem.is_none();
    let (path, other) = if complete {
        (dmesg_path(out), dmesg_incomplete_path(out))
    } else {
        (dmesg_incomplete_path(out), dmesg_path(out))
    };
    if let Err(e) = fs::rename(&part, &path) {
        let _ = fs::remove_file(&part);
        return LogFetch::none(format!("cannot write {}: {e}", path.display()));
    }
    let _ = fs::remove_file(&other);
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    LogFetch {
        path: Some(path),
        bytes: t.text_len,
        records: t.records,
        complete,
        problem,
    }
}

/// Copies the crashed kernel's log on `source` to `<out>.dmesg.txt` (first), then the dump to
/// `out`. The log is `None` when `source` was not read (`out` exists, `source` cannot be
/// opened); it is written whatever becomes of the dump. `progress` receives short status lines
/// (verifying, copying) at most once a second.
pub fn fetch(
    source: &Path,
    out: &Path,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> (Option<LogFetch>, Result<FetchReport, FetchError>) {
    if !force && fs::symlink_metadata(out).is_ok() {
        return (None, Err(FetchError::OutputExists(out.to_path_buf())));
    }
    let disk = match DiskReader::open(source) {
        Ok(d) => d,
        Err(err) => {
            return (
                None,
                Err(FetchError::Open {
                    path: source.to_path_buf(),
                    err,
                }),
            )
        }
    };
    let (log, dump_limit) = fetch_log(&disk, source, out);
    (Some(log), fetch_dump(disk, dump_limit, source, out, progress))
}

/// The dump part of [`fetch`]: nothing at or after `dump_limit` (the log region) is read.
fn fetch_dump(
    disk: DiskReader,
    dump_limit: u64,
    source: &Path,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchReport, FetchError> {
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
    // Descriptors past the end of a cut-short capture can be old disk contents; the kernel
    // log region follows the dump's space.
    let data_end = data_end.min(source_size).min(dump_limit);

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
    let (log, dump) = fetch(source, out, force, &mut progress);
    let log_line = log.map(|l| l.summary());
    match dump {
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
            if let Some(l) = &log_line {
                println!("{l}");
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
            if let Some(l) = &log_line {
                println!("{l}");
            }
            eprintln!("lifeboat: {e}");
            2
        }
    }
}
