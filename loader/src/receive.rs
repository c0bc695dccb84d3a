//! `lifeboat receive`: rebuild a dump from a serial capture.
//!
//! Input is what the capture kernel sent on its UART: frames (`docs/serial-framing.md`)
//! carrying a makedumpfile flattened stream, with console text between them. This module
//! scans the frames ([`FrameScanner`]), checks sequence numbers and stream offsets for loss,
//! applies the flattened records ([`FlatDecoder`]) to the dump file, and reports everything
//! that makes the dump incomplete. A lossy dump is never called complete: it gets the
//! `DUMP_DH_COMPRESSED_INCOMPLETE` bit in its header and the report lists what is missing.
//!
//! The crashed kernel's log comes first (LOG frames, then LOG_END, before the dump's DATA
//! frames): it is written to `<dump>.dmesg.txt` (fsynced) as soon as LOG_END says it is
//! whole, so it survives a dump that fails later; a log that is cut off (lost frames, no
//! LOG_END, or the capture kernel could not read all of it) is kept as
//! `<dump>.dmesg.txt.incomplete`. Problems with the log do not make the dump incomplete.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lifeboat_capture::flat::{FlatDecoder, FlatItem};
use lifeboat_capture::frame::{
    EndInfo, FrameKind, FrameScanner, LogEndInfo, ScanEvent, StartInfo, STREAM_FLATTENED_KDUMP,
};

/// `DUMP_DH_COMPRESSED_INCOMPLETE` (makedumpfile `diskdump_mod.h`): header `status` bit.
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
/// File offset of `disk_dump_header.status` (u32, native endian; lifeboat's targets are LE).
pub const STATUS_OFFSET: u64 = 424;
/// `disk_dump_header.signature`.
pub const KDUMP_SIGNATURE: &[u8; 8] = b"KDUMP   ";
/// Console lines longer than this are passed on in pieces.
const MAX_LINE: usize = 4096;
/// At most this many missing dump ranges are listed one by one.
const MAX_LISTED_HOLES: usize = 16;

/// Where `receive` writes.
#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// The kdump-compressed dump (written as `<dump>.part`, renamed at the end).
    pub dump: PathBuf,
    /// Also write the flattened stream (concatenated DATA payloads) here.
    pub flat: Option<PathBuf>,
    /// Save the console text here.
    pub console: Option<PathBuf>,
    /// Stop reading after the END frame (live links); otherwise read to end of input.
    pub stop_at_end: bool,
}

/// Things worth telling the operator while receiving.
#[derive(Debug)]
pub enum Progress<'a> {
    /// One console line (without the line end).
    Console(&'a [u8]),
    /// The START frame's info string.
    Start(&'a str),
    /// Something that makes the dump incomplete (also kept in [`ReceiveReport::problems`]).
    Problem(&'a str),
    /// A frame that failed its checks was dropped, at this input offset.
    Corrupt(u64),
}

/// Frames lost between two received frames (or before END / the end of input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Sequence numbers of the lost frames, inclusive; `None` if no sequence number is missing.
    pub seqs: Option<(u32, u32)>,
    /// Flattened-stream bytes missing, half-open `[start, end)` (empty if none).
    pub stream: (u64, u64),
}

/// The END frame's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndSummary {
    pub complete: bool,
    pub reason: String,
    pub stream_bytes: u64,
    pub data_frames: u32,
}

/// What arrived of the crashed kernel's log (LOG and LOG_END frames).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLogReport {
    /// Where the text was written: [`dmesg_path`] when whole, [`dmesg_incomplete_path`]
    /// otherwise; `None` when no text arrived (or writing it failed: see `problems`).
    pub path: Option<PathBuf>,
    /// Log bytes received.
    pub bytes: u64,
    /// The record count in LOG_END.
    pub records: Option<u32>,
    /// LOG_END arrived, says the log is whole, and no LOG frame was lost.
    pub complete: bool,
    /// Why the log is not whole (or not there), for people.
    pub problems: Vec<String>,
}

impl KernelLogReport {
    /// One line for people: `kernel log: vmcore.dmesg.txt (65536 bytes), 812 records`.
    pub fn summary(&self) -> String {
        let place = match &self.path {
            Some(p) => format!("{} ({} bytes)", p.display(), self.bytes),
            None => "not written".to_string(),
        };
        if self.complete {
            let records = self.records.map(|r| format!(", {r} records")).unwrap_or_default();
            format!("kernel log: {place}{records}")
        } else {
            format!("kernel log INCOMPLETE: {place}: {}", self.problems.join("; "))
        }
    }
}

/// Where `receive` writes the whole kernel log for dump `dump`: `<dump>.dmesg.txt`.
pub fn dmesg_path(dump: &Path) -> PathBuf {
    suffixed(dump, ".dmesg.txt")
}

/// Where `receive` keeps a cut-off kernel log: `<dump>.dmesg.txt.incomplete`.
pub fn dmesg_incomplete_path(dump: &Path) -> PathBuf {
    suffixed(dump, ".dmesg.txt.incomplete")
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What `receive` found. The dump is complete exactly when `problems` is empty.
#[derive(Clone, Debug, Default)]
pub struct ReceiveReport {
    /// The START frame's info string.
    pub info: Option<String>,
    pub end: Option<EndSummary>,
    /// Input bytes read.
    pub input_bytes: u64,
    /// Frames that passed their CRC.
    pub frames: u64,
    pub data_frames: u64,
    /// Flattened-stream bytes received (DATA payloads).
    pub stream_bytes: u64,
    /// Input offsets of frames dropped as corrupt (bad header, CRC mismatch, cut off).
    pub corrupt: Vec<u64>,
    pub losses: Vec<Loss>,
    pub console_lines: u64,
    /// Whether a dump file was written (nothing is written when no dump data arrived).
    pub dump_written: bool,
    /// Size of the dump file.
    pub dump_bytes: u64,
    /// Dump byte ranges `[start, end)` below `dump_bytes` that no record wrote.
    pub missing: Vec<(u64, u64)>,
    /// The header's status got `DUMP_DH_COMPRESSED_INCOMPLETE`.
    pub marked_incomplete: bool,
    /// Input stopped because nothing arrived within the inactivity timeout.
    pub timed_out: bool,
    /// Input stopped because reading it failed (e.g. the serial adapter went away).
    pub input_error: Option<String>,
    /// Every reason the dump is incomplete, for people.
    pub problems: Vec<String>,
    /// The crashed kernel's log, when any LOG or LOG_END frame arrived.
    pub kernel_log: Option<KernelLogReport>,
}

impl ReceiveReport {
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An I/O failure on the output files or the input.
#[derive(Debug)]
pub struct ReceiveError {
    pub what: String,
    pub err: io::Error,
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.err)
    }
}

impl std::error::Error for ReceiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.err)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ReceiveError {
    let what = what.into();
    move |err| ReceiveError { what, err }
}

/// Reads `input` to its end (or to the END frame if `opts.stop_at_end`, or to an
/// [`io::ErrorKind::TimedOut`] error, taken as the inactivity timeout), writes the outputs and
/// returns the report. `progress` hears console lines and problems as they happen.
///
/// Errors are failures to write the outputs only; a failure to read the input ends it (and
/// is a problem in the report), and anything wrong with the received data is in the report.
pub fn receive(
    mut input: impl Read,
    opts: &ReceiveOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ReceiveReport, ReceiveError> {
    let mut rx = Receiver::new(opts, progress)?;
    let mut scanner = FrameScanner::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if opts.stop_at_end && rx.report.end.is_some() {
            break;
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                rx.report.timed_out = true;
                break;
            }
            Err(e) => {
                // Keep what arrived: the dump is reported incomplete, not thrown away.
                rx.report.input_error = Some(e.to_string());
                break;
            }
        };
        rx.report.input_bytes += n as u64;
        scanner.feed(&buf[..n]);
        while let Some(ev) = scanner.next_event() {
            rx.event(ev)?;
        }
    }
    scanner.finish();
    while let Some(ev) = scanner.next_event() {
        rx.event(ev)?;
    }
    rx.finish()
}

struct Receiver<'p, 'o> {
    opts: &'o ReceiveOptions,
    progress: &'p mut dyn FnMut(Progress<'_>),
    report: ReceiveReport,
    dump_tmp: PathBuf,
    dump: Option<File>,
    flat_tmp: Option<PathBuf>,
    flat: Option<File>,
    console: Option<File>,
    line: Vec<u8>,
    decoder: FlatDecoder,
    /// Sequence number and stream offset the next frame should have.
    next_seq: u32,
    next_offset: u64,
    /// The decoder hit an error: resynchronise it at the next frame.
    resync: bool,
    written: RangeSet,
    /// The kernel log while its frames arrive.
    log: LogRx,
}

/// The kernel log as its frames arrive.
#[derive(Default)]
struct LogRx {
    /// `<dump>.dmesg.txt.part`, created at the first LOG frame.
    file: Option<File>,
    /// Log offset the next LOG frame should have.
    next_offset: u64,
    /// Bytes written to the file (log bytes plus loss markers).
    file_bytes: u64,
    /// LOG_END arrived, or the log was closed (the dump began, input ended).
    ended: bool,
}

fn part_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

impl<'p, 'o> Receiver<'p, 'o> {
    fn new(
        opts: &'o ReceiveOptions,
        progress: &'p mut dyn FnMut(Progress<'_>),
    ) -> Result<Self, ReceiveError> {
        let console = match &opts.console {
            Some(p) => Some(File::create(p).map_err(io_err(format!("creating {}", p.display())))?),
            None => None,
        };
        let (flat_tmp, flat) = match &opts.flat {
            Some(p) => {
                let tmp = part_name(p);
                let f =
                    File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
                (Some(tmp), Some(f))
            }
            None => (None, None),
        };
        Ok(Self {
            opts,
            progress,
            report: ReceiveReport::default(),
            dump_tmp: part_name(&opts.dump),
            dump: None,
            flat_tmp,
            flat,
            console,
            line: Vec::new(),
            decoder: FlatDecoder::new(),
            next_seq: 0,
            next_offset: 0,
            resync: false,
            written: RangeSet::default(),
            log: LogRx::default(),
        })
    }

    fn log_report(&mut self) -> &mut KernelLogReport {
        self.report.kernel_log.get_or_insert_with(KernelLogReport::default)
    }

    fn log_problem(&mut self, msg: String) {
        self.log_report().problems.push(msg);
    }

    /// A LOG or LOG_END frame. Lost frames and bytes make the log incomplete, not the dump.
    fn log_frame(
        &mut self,
        kind: FrameKind,
        seq: u32,
        offset: u64,
        payload: &[u8],
        at: u64,
    ) -> Result<(), ReceiveError> {
        if self.log.ended || self.report.data_frames > 0 {
            self.log_problem(format!(
                "unexpected {:?} frame {} after the kernel log (input offset {:#x}); ignored",
                kind, seq, at
            ));
            return Ok(());
        }
        if seq < self.next_seq {
            self.log_problem(format!(
                "unexpected {:?} frame {} (expected frame {}), input offset {:#x}; ignored",
                kind, seq, self.next_seq, at
            ));
            return Ok(());
        }
        if seq > self.next_seq {
            if self.report.info.is_none() {
                // The START frame itself is lost: as for the dump's frames.
                self.loss(seq, self.next_offset);
            } else {
                self.log_lost_frames(seq);
            }
        }
        self.next_seq = seq.wrapping_add(1);
        self.log_report();
        if kind == FrameKind::Log {
            if offset < self.log.next_offset {
                self.log_problem(format!(
                    "LOG frame {} for log byte {:#x} repeats bytes already received; ignored",
                    seq, offset
                ));
                return Ok(());
            }
            if offset > self.log.next_offset {
                self.log_gap(offset)?;
            }
            self.log_write(payload)?;
            self.log.next_offset = offset + payload.len() as u64;
            self.log_report().bytes += payload.len() as u64;
            return Ok(());
        }
        let Some(end) = LogEndInfo::parse(offset, payload) else {
            self.log_problem(format!("malformed LOG_END frame at input offset {:#x}", at));
            return self.close_log();
        };
        if end.log_bytes > self.log.next_offset {
            self.log_gap(end.log_bytes)?;
        }
        self.log_report().records = Some(end.records);
        if !end.complete {
            let reason = printable(end.reason);
            let reason = if reason.is_empty() { "no reason given".to_string() } else { reason };
            let msg = if end.log_bytes == 0 {
                format!("the capture kernel sent no kernel log: {}", reason)
            } else {
                format!("the capture kernel could not send all of the kernel log: {}", reason)
            };
            self.log_problem(msg);
        }
        self.close_log()
    }

    fn log_lost_frames(&mut self, seq: u32) {
        let (a, b) = (self.next_seq, seq - 1);
        let frames = if a == b { format!("frame {}", a) } else { format!("frames {}–{}", a, b) };
        self.log_problem(format!("lost {} of the kernel log", frames));
    }

    /// Log bytes `[next_offset, to)` were lost: a marker line in the file says so.
    fn log_gap(&mut self, to: u64) -> Result<(), ReceiveError> {
        let from = self.log.next_offset;
        self.log_problem(format!(
            "kernel log bytes {:#x}–{:#x} missing ({} bytes)",
            from,
            to - 1,
            to - from
        ));
        let mark = format!("\n[lifeboat receive: {} bytes of the log lost here]\n", to - from);
        self.log_write(mark.as_bytes())?;
        self.log.next_offset = to;
        Ok(())
    }

    fn log_write(&mut self, b: &[u8]) -> Result<(), ReceiveError> {
        let tmp = suffixed(&self.opts.dump, ".dmesg.txt.part");
        if self.log.file.is_none() {
            let f = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
            self.log.file = Some(f);
        }
        let f = self.log.file.as_mut().expect("created above");
        f.write_all(b).map_err(io_err(format!("writing {}", tmp.display())))?;
        self.log.file_bytes += b.len() as u64;
        Ok(())
    }

    /// Ends the log: fsync, and `<dump>.dmesg.txt` when whole, else
    /// `<dump>.dmesg.txt.incomplete`; a stale file of the other name is removed.
    fn close_log(&mut self) -> Result<(), ReceiveError> {
        self.log.ended = true;
        let complete = self.report.kernel_log.as_ref().is_some_and(|l| l.problems.is_empty());
        let Some(f) = self.log.file.take() else {
            if complete {
                // A whole, empty log.
                self.log_write(b"")?;
                return self.close_log();
            }
            return Ok(());
        };
        let tmp = suffixed(&self.opts.dump, ".dmesg.txt.part");
        let (path, other) = if complete {
            (dmesg_path(&self.opts.dump), dmesg_incomplete_path(&self.opts.dump))
        } else {
            (dmesg_incomplete_path(&self.opts.dump), dmesg_path(&self.opts.dump))
        };
        f.sync_all().map_err(io_err(format!("writing {}", tmp.display())))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
        let _ = fs::remove_file(&other);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        let log = self.log_report();
        log.complete = complete;
        log.path = Some(path);
        Ok(())
    }

    fn problem(&mut self, msg: String) {
        (self.progress)(Progress::Problem(&msg));
        self.report.problems.push(msg);
    }

    fn event(&mut self, ev: ScanEvent) -> Result<(), ReceiveError> {
        match ev {
            ScanEvent::Console(text) => self.console_text(&text),
            ScanEvent::Corrupt { at } => {
                self.report.corrupt.push(at);
                (self.progress)(Progress::Corrupt(at));
                Ok(())
            }
            ScanEvent::Frame { kind, seq, offset, payload, at } => {
                self.report.frames += 1;
                self.frame(kind, seq, offset, &payload, at)
            }
        }
    }

    fn console_text(&mut self, text: &[u8]) -> Result<(), ReceiveError> {
        if let Some(f) = &mut self.console {
            f.write_all(text).map_err(io_err("writing the console file"))?;
        }
        for &b in text {
            if b == b'\n' || self.line.len() >= MAX_LINE {
                self.flush_line();
            }
            if b != b'\n' {
                self.line.push(b);
            }
        }
        Ok(())
    }

    fn flush_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
        (self.progress)(Progress::Console(trimmed));
        self.report.console_lines += 1;
    }

    fn frame(
        &mut self,
        kind: FrameKind,
        seq: u32,
        offset: u64,
        payload: &[u8],
        at: u64,
    ) -> Result<(), ReceiveError> {
        if self.report.end.is_some() {
            self.problem(format!(
                "unexpected {:?} frame {} after the END frame (input offset {:#x}); ignored",
                kind, seq, at
            ));
            return Ok(());
        }
        if kind == FrameKind::Start {
            return self.start_frame(seq, payload, at);
        }
        if matches!(kind, FrameKind::Log | FrameKind::LogEnd) {
            return self.log_frame(kind, seq, offset, payload, at);
        }
        if !self.log.ended {
            // Only LOG and LOG_END frames come between START and the first DATA frame: frames
            // lost there (no stream bytes missing) are lost log frames, not dump data.
            let lost_log = seq > self.next_seq
                && offset == self.next_offset
                && self.report.data_frames == 0
                && self.report.info.is_some();
            if lost_log {
                self.log_lost_frames(seq);
                self.next_seq = seq;
            }
            // The dump begins: a log still open lost its LOG_END.
            if self.log.file.is_some() {
                if !lost_log {
                    self.log_problem("the LOG_END frame of the kernel log was lost".to_string());
                }
                self.close_log()?;
            }
            self.log.ended = true;
        }
        // DATA and END: check for lost frames / bytes before this one.
        if seq < self.next_seq || offset < self.next_offset {
            self.problem(format!(
                "unexpected {:?} frame {} for stream offset {:#x} (expected frame {} at {:#x}), \
                 input offset {:#x}; ignored",
                kind, seq, offset, self.next_seq, self.next_offset, at
            ));
            return Ok(());
        }
        if seq > self.next_seq || offset > self.next_offset {
            self.loss(seq, offset);
            self.decoder.skip_to_record_boundary();
            self.resync = false;
        }
        self.next_seq = seq.wrapping_add(1);
        match kind {
            FrameKind::Data => self.data_frame(offset, payload),
            FrameKind::End => {
                self.end_frame(offset, payload);
                Ok(())
            }
            FrameKind::Start | FrameKind::Log | FrameKind::LogEnd => unreachable!(),
        }
    }

    fn start_frame(&mut self, seq: u32, payload: &[u8], at: u64) -> Result<(), ReceiveError> {
        if self.report.info.is_some() || self.next_seq != 0 || seq != 0 {
            self.problem(format!(
                "unexpected START frame {} at input offset {:#x} (did the capture kernel \
                 restart?); ignored",
                seq, at
            ));
            return Ok(());
        }
        let Some(start) = StartInfo::parse(payload) else {
            self.problem(format!("malformed START frame at input offset {:#x}", at));
            self.next_seq = 1;
            return Ok(());
        };
        let info = String::from_utf8_lossy(start.info).into_owned();
        (self.progress)(Progress::Start(&info));
        self.report.info = Some(info);
        if start.stream_format != STREAM_FLATTENED_KDUMP {
            self.problem(format!(
                "unknown stream format {} in the START frame (this lifeboat knows {}); \
                 update lifeboat",
                start.stream_format, STREAM_FLATTENED_KDUMP
            ));
        }
        self.next_seq = 1;
        Ok(())
    }

    fn loss(&mut self, seq: u32, offset: u64) {
        let seqs = (seq > self.next_seq).then(|| (self.next_seq, seq - 1));
        let stream = (self.next_offset, offset);
        let bytes = if offset > self.next_offset {
            format!(
                "flattened-stream bytes {:#x}–{:#x} missing ({} bytes)",
                self.next_offset,
                offset - 1,
                offset - self.next_offset
            )
        } else {
            "no flattened-stream bytes missing".to_string()
        };
        let msg = match seqs {
            Some((a, b)) if a == b => format!("lost frame {}: {}", a, bytes),
            Some((a, b)) => format!("lost frames {}–{}: {}", a, b, bytes),
            None => format!("stream jumps without a lost frame: {}", bytes),
        };
        self.report.losses.push(Loss { seqs, stream });
        self.problem(msg);
    }

    fn data_frame(&mut self, offset: u64, payload: &[u8]) -> Result<(), ReceiveError> {
        self.report.data_frames += 1;
        self.report.stream_bytes += payload.len() as u64;
        self.next_offset = offset + payload.len() as u64;
        if let Some(f) = &mut self.flat {
            f.write_all(payload).map_err(io_err("writing the flattened stream file"))?;
        }
        if self.resync {
            self.decoder.skip_to_record_boundary();
            self.resync = false;
        }
        let mut input = payload;
        loop {
            match self.decoder.next(&mut input) {
                Ok(None) => break,
                Ok(Some(FlatItem::Data { offset, data })) => self.apply(offset, data)?,
                Ok(Some(FlatItem::End)) => {}
                Err(e) => {
                    self.problem(format!("flattened stream: {}", e));
                    self.resync = true;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, offset: u64, data: &[u8]) -> Result<(), ReceiveError> {
        if self.dump.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.dump_tmp)
                .map_err(io_err(format!("creating {}", self.dump_tmp.display())))?;
            self.dump = Some(f);
        }
        let f = self.dump.as_ref().expect("opened above");
        f.write_all_at(data, offset)
            .map_err(io_err(format!("writing {}", self.dump_tmp.display())))?;
        self.written.insert(offset, offset + data.len() as u64);
        Ok(())
    }

    fn end_frame(&mut self, offset: u64, payload: &[u8]) {
        let Some(end) = EndInfo::parse(offset, payload) else {
            self.problem("malformed END frame".to_string());
            self.report.end = Some(EndSummary {
                complete: false,
                reason: "malformed END frame".into(),
                stream_bytes: offset,
                data_frames: 0,
            });
            return;
        };
        let summary = EndSummary {
            complete: end.complete,
            reason: String::from_utf8_lossy(end.reason).into_owned(),
            stream_bytes: end.stream_bytes,
            data_frames: end.data_frames,
        };
        if !summary.complete {
            let reason =
                if summary.reason.is_empty() { "no reason given" } else { &summary.reason };
            self.problem(format!("the capture kernel reports the dump incomplete: {}", reason));
        }
        if u64::from(summary.data_frames) != self.report.data_frames {
            self.problem(format!(
                "the END frame counts {} DATA frames, {} arrived",
                summary.data_frames, self.report.data_frames
            ));
        }
        if !self.decoder.is_ended() {
            self.problem("the flattened stream has no end marker".to_string());
        }
        self.report.end = Some(summary);
    }

    fn finish(mut self) -> Result<ReceiveReport, ReceiveError> {
        if !self.line.is_empty() {
            self.flush_line();
        }
        if self.log.file.is_some() && !self.log.ended {
            self.log_problem("the stream ended before the LOG_END frame".to_string());
            self.close_log()?;
        }
        if self.report.frames == 0 {
            self.problem("no lifeboat frames found in the input".to_string());
        } else if self.report.end.is_none() {
            let why = match (&self.report.input_error, self.report.timed_out) {
                (Some(e), _) => format!(" (reading the input failed: {})", e),
                (None, true) => " (no input within the timeout)".to_string(),
                (None, false) => String::new(),
            };
            self.problem(format!("stream ended before the END frame{}", why));
        }
        if let Some(f) = self.console.take() {
            f.sync_all().map_err(io_err("writing the console file"))?;
        }
        if let (Some(f), Some(tmp), Some(path)) =
            (self.flat.take(), self.flat_tmp.take(), self.opts.flat.clone())
        {
            f.sync_all().map_err(io_err(format!("writing {}", tmp.display())))?;
            fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
        }
        let Some(dump) = self.dump.take() else {
            self.problem(format!(
                "no dump data received; {} not written",
                self.opts.dump.display()
            ));
            return Ok(self.report);
        };
        let size = self.written.end();
        let holes = self.written.holes(size);
        for (i, &(a, b)) in holes.iter().enumerate() {
            if i == MAX_LISTED_HOLES {
                let rest: u64 = holes[i..].iter().map(|(a, b)| b - a).sum();
                self.problem(format!(
                    "… and {} more missing dump ranges ({} bytes)",
                    holes.len() - i,
                    rest
                ));
                break;
            }
            self.problem(format!("dump bytes {:#x}–{:#x} missing ({} bytes)", a, b - 1, b - a));
        }
        self.report.missing = holes;
        self.report.dump_bytes = size;
        if !self.report.is_complete() {
            self.report.marked_incomplete = self.mark_incomplete(&dump)?;
        }
        dump.sync_all().map_err(io_err(format!("writing {}", self.dump_tmp.display())))?;
        drop(dump);
        fs::rename(&self.dump_tmp, &self.opts.dump)
            .map_err(io_err(format!("renaming to {}", self.opts.dump.display())))?;
        self.report.dump_written = true;
        Ok(self.report)
    }

    /// Sets `DUMP_DH_COMPRESSED_INCOMPLETE` if the kdump header arrived.
    fn mark_incomplete(&self, dump: &File) -> Result<bool, ReceiveError> {
        if !self.written.contains(0, KDUMP_SIGNATURE.len() as u64)
            || !self.written.contains(STATUS_OFFSET, STATUS_OFFSET + 4)
        {
            return Ok(false);
        }
        let what = || format!("updating the header of {}", self.dump_tmp.display());
        let mut sig = [0u8; 8];
        dump.read_exact_at(&mut sig, 0).map_err(io_err(what()))?;
        if &sig != KDUMP_SIGNATURE {
            return Ok(false);
        }
        let mut status = [0u8; 4];
        dump.read_exact_at(&mut status, STATUS_OFFSET).map_err(io_err(what()))?;
        let status = u32::from_le_bytes(status) | DUMP_DH_COMPRESSED_INCOMPLETE;
        dump.write_all_at(&status.to_le_bytes(), STATUS_OFFSET).map_err(io_err(what()))?;
        Ok(true)
    }
}

/// A set of half-open byte ranges, merged.
#[derive(Clone, Debug, Default)]
struct RangeSet {
    /// start -> end, disjoint and not touching.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Merge with ranges starting inside `[start, end]`.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    fn end(&self) -> u64 {
        self.map.last_key_value().map_or(0, |(_, &e)| e)
    }

    fn contains(&self, start: u64, end: u64) -> bool {
        self.map.range(..=start).next_back().is_some_and(|(_, &e)| e >= end)
    }

    /// Gaps in `[0, limit)`.
    fn holes(&self, limit: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for (&s, &e) in &self.map {
            if pos >= limit {
                return out;
            }
            if s > pos {
                out.push((pos, s.min(limit)));
            }
            pos = e;
        }
        if pos < limit {
            out.push((pos, limit));
        }
        out
    }
}

/// A console line made safe to print: invalid UTF-8 and control characters (other than tab)
/// are shown as `\xNN`.
pub fn printable(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{:02x}", b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_capture::flat::FlatEncoder;
    use lifeboat_capture::frame::{
        ByteWrite, FrameWriter, LogFramer, LogOutcome, LogWrite, HEADER_LEN, MAX_PAYLOAD,
        TRAILER_LEN,
    };
    use lifeboat_capture::sink::{RecordSink, SinkError};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Wire(Vec<u8>);
    impl ByteWrite for Wire {
        fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
            self.0.extend_from_slice(b);
            Ok(())
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "lifeboat-receive-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fake kdump file: "KDUMP   " header with status 1 (zlib) and patterned body.
    fn fake_dump(len: usize) -> Vec<u8> {
        let mut d: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        d[..8].copy_from_slice(KDUMP_SIGNATURE);
        d[424..428].copy_from_slice(&1u32.to_le_bytes());
        d
    }

    /// Frames the dump as records of `rec` bytes, in reverse order after the header record
    /// (like a writer that emits descriptors late), with console lines between frames.
    fn build_wire(dump: &[u8], rec: usize, complete: bool, reason: &str) -> Vec<u8> {
        build_wire_log(dump, rec, complete, reason, None)
    }

    /// [`build_wire`] with the kernel log `log` (LOG frames, LOG_END) before the dump.
    fn build_wire_log(
        dump: &[u8],
        rec: usize,
        complete: bool,
        reason: &str,
        log: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut fw = FrameWriter::new(Wire::default(), "lifeboat 0.1.0 x86_64 test").unwrap();
        if let Some(log) = log {
            let mut lf = LogFramer::new(&mut fw);
            let mut records = 0;
            for line in log.split_inclusive(|&b| b == b'\n') {
                lf.log_text(line).unwrap();
                records += 1;
            }
            lf.finish(&LogOutcome { complete: true, records, reason: String::new() }).unwrap();
        }
        fw.inner_mut().0.extend_from_slice(b"lifeboat: writing dump\r\n");
        let mut enc = FlatEncoder::new(&mut fw).unwrap();
        enc.record(0, &dump[..4096]).unwrap();
        let rest: Vec<(usize, &[u8])> =
            dump[4096..].chunks(rec).enumerate().map(|(i, c)| (4096 + i * rec, c)).collect();
        for (off, c) in rest.iter().rev() {
            enc.record(*off as u64, c).unwrap();
        }
        enc.finish().unwrap();
        fw.inner_mut().0.extend_from_slice(b"lifeboat: done\n");
        fw.finish(complete, reason).unwrap().0
    }

    /// Byte ranges of the frames in `wire`.
    fn frame_ranges(wire: &[u8]) -> Vec<(usize, usize)> {
        let mut s = FrameScanner::new();
        s.feed(wire);
        s.finish();
        let mut out = Vec::new();
        while let Some(ev) = s.next_event() {
            if let ScanEvent::Frame { payload, at, .. } = ev {
                out.push((at as usize, at as usize + HEADER_LEN + payload.len() + TRAILER_LEN));
            }
        }
        out
    }

    struct Run {
        report: ReceiveReport,
        dump: Option<Vec<u8>>,
        flat: Vec<u8>,
        console: Vec<u8>,
        lines: Vec<String>,
        problems_seen: usize,
        _dir: TempDir,
    }

    fn run(wire: &[u8], read_size: usize) -> Run {
        let dir = TempDir::new();
        let opts = ReceiveOptions {
            dump: dir.0.join("dump"),
            flat: Some(dir.0.join("dump.flat")),
            console: Some(dir.0.join("console.txt")),
            stop_at_end: false,
        };
        let mut lines = Vec::new();
        let mut problems_seen = 0;
        let report = receive(SlowReader(wire, read_size), &opts, &mut |p| match p {
            Progress::Console(l) => lines.push(printable(l)),
            Progress::Problem(_) => problems_seen += 1,
            _ => {}
        })
        .unwrap();
        assert!(!dir.0.join("dump.part").exists());
        Run {
            dump: fs::read(&opts.dump).ok(),
            flat: fs::read(opts.flat.as_ref().unwrap()).unwrap(),
            console: fs::read(opts.console.as_ref().unwrap()).unwrap(),
            report,
            lines,
            problems_seen,
            _dir: dir,
        }
    }

    /// Delivers at most `n` bytes per read, like a tty.
    struct SlowReader<'a>(&'a [u8], usize);
    impl Read for SlowReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn status(dump: &[u8]) -> u32 {
        u32::from_le_bytes(dump[424..428].try_into().unwrap())
    }

    #[test]
    fn clean_stream() {
        let dump = fake_dump(100_000);
        let wire = build_wire(&dump, 5000, true, "");
        for read_size in [1 << 20, 333] {
            let r = run(&wire, read_size);
            assert!(r.report.is_complete(), "{:?}", r.report.problems);
            assert_eq!(r.dump.as_deref(), Some(&dump[..]));
            assert_eq!(r.report.info.as_deref(), Some("lifeboat 0.1.0 x86_64 test"));
            assert_eq!(r.lines, vec!["lifeboat: writing dump", "lifeboat: done"]);
            assert_eq!(r.console, b"lifeboat: writing dump\r\nlifeboat: done\n");
            assert_eq!(r.report.console_lines, 2);
            assert!(r.report.corrupt.is_empty() && r.report.losses.is_empty());
            assert_eq!(r.report.dump_bytes, dump.len() as u64);
            let end = r.report.end.as_ref().unwrap();
            assert!(end.complete);
            assert_eq!(end.stream_bytes, r.report.stream_bytes);
            assert_eq!(r.flat.len() as u64, r.report.stream_bytes);
            // The flattened file decodes to the same dump.
            let mut dec = FlatDecoder::new();
            let mut rebuilt = vec![0u8; dump.len()];
            let mut input = &r.flat[..];
            while let Some(item) = dec.next(&mut input).unwrap() {
                if let FlatItem::Data { offset, data } = item {
                    rebuilt[offset as usize..offset as usize + data.len()].copy_from_slice(data);
                }
            }
            assert!(dec.is_ended());
            assert_eq!(rebuilt, dump);
        }
    }

    #[test]
    fn dropped_frames() {
        let dump = fake_dump(4096 + 20 * 5000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        // Frames: 0 START, 1 flat start header, 2 dump header record, then records 19, 18, …
        // Drop frames 4 and 5 (records 18 and 17).
        let mut w = wire[..fr[4].0].to_vec();
        w.extend_from_slice(&wire[fr[5].1..]);
        let r = run(&w, 4096);
        assert!(!r.report.is_complete());
        assert_eq!(r.report.losses.len(), 1);
        let loss = &r.report.losses[0];
        assert_eq!(loss.seqs, Some((4, 5)));
        assert_eq!(loss.stream.1 - loss.stream.0, 2 * (16 + 5000));
        assert!(r.report.problems[0].starts_with("lost frames 4–5: flattened-stream bytes 0x"));
        let d = r.dump.unwrap();
        assert_eq!(r.report.missing, vec![(4096 + 17 * 5000, 4096 + 19 * 5000)]);
        assert!(r.report.problems.iter().any(|p| p.starts_with("dump bytes 0x")));
        assert!(r.report.problems.iter().any(|p| p.contains("END frame counts")));
        assert_eq!(status(&d), 1 | DUMP_DH_COMPRESSED_INCOMPLETE);
        assert!(r.report.marked_incomplete);
        let (a, b) = r.report.missing[0];
        assert_eq!(&d[b as usize..], &dump[b as usize..]);
        assert_eq!(&d[4096..a as usize], &dump[4096..a as usize]);
        assert_eq!(r.problems_seen, r.report.problems.len());
    }

    #[test]
    fn dropped_tail_record_is_reported_by_stream_offset() {
        let dump = fake_dump(30_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        // Frame 1 is the start header, 2 the dump header, 3 the last record (tail of the file):
        // the file comes out short, so only the stream offsets tell that bytes are missing.
        let mut w = wire[..fr[3].0].to_vec();
        w.extend_from_slice(&wire[fr[3].1..]);
        let r = run(&w, 1 << 20);
        assert!(!r.report.is_complete());
        assert_eq!(r.report.losses[0].seqs, Some((3, 3)));
        assert!(r.report.problems[0].starts_with("lost frame 3: "));
        assert!(r.report.marked_incomplete);
    }

    #[test]
    fn corrupted_frame() {
        let dump = fake_dump(60_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        let mut w = wire.clone();
        w[fr[5].0 + 100] ^= 0x10;
        let r = run(&w, 1 << 20);
        assert!(!r.report.is_complete());
        assert_eq!(r.report.corrupt, vec![fr[5].0 as u64]);
        assert_eq!(r.report.losses.len(), 1);
        assert_eq!(r.report.losses[0].seqs, Some((5, 5)));
        assert_eq!(r.report.missing.len(), 1);
        assert_eq!(status(r.dump.as_ref().unwrap()), 1 | DUMP_DH_COMPRESSED_INCOMPLETE);
    }

    #[test]
    fn corrupt_header_frame_leaves_header_unmarked() {
        let dump = fake_dump(20_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        let mut w = wire.clone();
        w[fr[2].0 + 30] ^= 1; // the dump header record
        let r = run(&w, 1 << 20);
        assert!(!r.report.is_complete());
        assert!(!r.report.marked_incomplete);
        assert_eq!(r.report.missing, vec![(0, 4096)]);
    }

    #[test]
    fn truncated_stream() {
        let dump = fake_dump(60_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        let cut = fr[6].0 + 50;
        let r = run(&wire[..cut], 1000);
        assert!(!r.report.is_complete());
        assert!(r.report.end.is_none());
        assert_eq!(r.report.corrupt, vec![fr[6].0 as u64]);
        assert!(r.report.problems.iter().any(|p| p == "stream ended before the END frame"));
        assert!(r.report.marked_incomplete);
        assert_eq!(status(r.dump.as_ref().unwrap()), 1 | DUMP_DH_COMPRESSED_INCOMPLETE);
        // Records 0..4 of the reversed tail are missing: a hole in the middle of the file.
        assert_eq!(r.report.missing.len(), 1);
    }

    #[test]
    fn end_says_incomplete() {
        let dump = fake_dump(20_000);
        let wire = build_wire(&dump, 5000, false, "page 0x1234 unreadable");
        let r = run(&wire, 1 << 20);
        assert!(!r.report.is_complete());
        assert_eq!(
            r.report.problems,
            vec!["the capture kernel reports the dump incomplete: page 0x1234 unreadable"]
        );
        assert!(r.report.missing.is_empty());
        assert_eq!(status(r.dump.as_ref().unwrap()), 1 | DUMP_DH_COMPRESSED_INCOMPLETE);
    }

    #[test]
    fn only_console_text() {
        let r = run(b"hello\nworld", 3);
        assert!(r.dump.is_none());
        assert!(!r.report.dump_written);
        assert_eq!(r.lines, vec!["hello", "world"]);
        assert_eq!(r.report.problems[0], "no lifeboat frames found in the input");
    }

    #[test]
    fn stop_at_end_ignores_what_follows() {
        let dump = fake_dump(10_000);
        let mut wire = build_wire(&dump, 5000, true, "");
        wire.extend_from_slice(&[b'x'; 1000]);
        let dir = TempDir::new();
        let opts =
            ReceiveOptions { dump: dir.0.join("d"), flat: None, console: None, stop_at_end: true };
        let report = receive(SlowReader(&wire, 100), &opts, &mut |_| {}).unwrap();
        assert!(report.is_complete(), "{:?}", report.problems);
        // Reading stopped at the read that delivered the END frame.
        assert!(report.input_bytes < wire.len() as u64 - 900);
    }

    #[test]
    fn timeout_is_reported() {
        struct Quiet<'a>(&'a [u8]);
        impl Read for Quiet<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "quiet"));
                }
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let dump = fake_dump(10_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        let dir = TempDir::new();
        let opts =
            ReceiveOptions { dump: dir.0.join("d"), flat: None, console: None, stop_at_end: true };
        let report = receive(Quiet(&wire[..fr[3].1]), &opts, &mut |_| {}).unwrap();
        assert!(report.timed_out);
        assert!(!report.is_complete());
        assert!(report.problems.iter().any(|p| p.contains("before the END frame")));
    }

    #[test]
    fn input_error_keeps_what_arrived() {
        struct Broken<'a>(&'a [u8]);
        impl Read for Broken<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("device vanished"));
                }
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let dump = fake_dump(10_000);
        let wire = build_wire(&dump, 5000, true, "");
        let fr = frame_ranges(&wire);
        let dir = TempDir::new();
        let opts =
            ReceiveOptions { dump: dir.0.join("d"), flat: None, console: None, stop_at_end: true };
        let report = receive(Broken(&wire[..fr[3].1]), &opts, &mut |_| {}).unwrap();
        assert!(report.dump_written && report.marked_incomplete);
        let want = "stream ended before the END frame (reading the input failed: device vanished)";
        assert!(report.problems.iter().any(|p| p == want), "{:?}", report.problems);
    }

    /// A kernel log of about 56 KiB (four LOG frames).
    fn kernel_log() -> Vec<u8> {
        (0..800)
            .flat_map(|i| {
                format!("[{:5}.{:06}] line {} {}\n", i / 10, i, i, "w".repeat(i % 90)).into_bytes()
            })
            .collect()
    }

    /// Frames of `wire` as (kind, byte range).
    fn frame_kinds(wire: &[u8]) -> Vec<(FrameKind, usize, usize)> {
        let mut s = FrameScanner::new();
        s.feed(wire);
        s.finish();
        let mut out = Vec::new();
        while let Some(ev) = s.next_event() {
            if let ScanEvent::Frame { kind, payload, at, .. } = ev {
                let end = at as usize + HEADER_LEN + payload.len() + TRAILER_LEN;
                out.push((kind, at as usize, end));
            }
        }
        out
    }

    #[test]
    fn kernel_log_is_stored_before_the_dump_arrives() {
        let dump = fake_dump(60_000);
        let log = kernel_log();
        assert!(log.len() > 3 * MAX_PAYLOAD);
        let wire = build_wire_log(&dump, 5000, true, "", Some(&log));
        let fr = frame_kinds(&wire);
        let kinds: Vec<FrameKind> = fr.iter().map(|f| f.0).collect();
        assert_eq!(&kinds[..6], [
            FrameKind::Start,
            FrameKind::Log,
            FrameKind::Log,
            FrameKind::Log,
            FrameKind::Log,
            FrameKind::LogEnd
        ]);
        assert_eq!(kinds[6], FrameKind::Data);
        let log_end = fr[5].2;
        // A reader that checks, when asked for the bytes after LOG_END, that the log is
        // already on disk under its final name.
        struct Probe<'a> {
            wire: &'a [u8],
            pos: usize,
            log_end: usize,
            dmesg: PathBuf,
            seen: Option<Vec<u8>>,
        }
        impl Read for Probe<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.pos >= self.log_end && self.seen.is_none() {
                    self.seen = Some(fs::read(&self.dmesg).unwrap_or_default());
                }
                let n = (self.wire.len() - self.pos).min(buf.len()).min(777);
                buf[..n].copy_from_slice(&self.wire[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
        }
        let dir = TempDir::new();
        let opts =
            ReceiveOptions { dump: dir.0.join("vmcore"), flat: None, console: None, stop_at_end: false };
        let dmesg = dir.0.join("vmcore.dmesg.txt");
        assert_eq!(dmesg_path(&opts.dump), dmesg);
        let mut probe = Probe { wire: &wire, pos: 0, log_end, dmesg: dmesg.clone(), seen: None };
        let report = receive(&mut probe, &opts, &mut |_| {}).unwrap();
        assert!(probe.seen.as_ref() == Some(&log), "the log was not on disk before the dump");
        assert!(report.is_complete(), "{:?}", report.problems);
        assert_eq!(fs::read(&opts.dump).unwrap(), dump);
        assert!(fs::read(&dmesg).unwrap() == log);
        let kl = report.kernel_log.unwrap();
        assert!(kl.complete && kl.problems.is_empty(), "{:?}", kl);
        assert_eq!((kl.bytes, kl.records), (log.len() as u64, Some(800)));
        assert_eq!(kl.path.as_deref(), Some(dmesg.as_path()));
        assert_eq!(kl.summary(), format!("kernel log: {} ({} bytes), 800 records", dmesg.display(), log.len()));
        assert!(!dir.0.join("vmcore.dmesg.txt.part").exists());

        // The same stream cut right after LOG_END: no dump, but the whole log.
        let r = run(&wire[..log_end], 1000);
        assert!(r.dump.is_none());
        assert!(!r.report.is_complete());
        let kl = r.report.kernel_log.as_ref().unwrap();
        assert!(kl.complete);
        assert!(fs::read(r._dir.0.join("dump.dmesg.txt")).unwrap() == log);
    }

    #[test]
    fn kernel_log_cut_off_is_kept_as_incomplete() {
        let dump = fake_dump(20_000);
        let log = kernel_log();
        let wire = build_wire_log(&dump, 5000, true, "", Some(&log));
        let fr = frame_kinds(&wire);
        // Input ends in the middle of the third LOG frame.
        let r = run(&wire[..fr[3].1 + 100], 500);
        let kl = r.report.kernel_log.as_ref().unwrap();
        assert!(!kl.complete);
        assert_eq!(kl.bytes, 2 * MAX_PAYLOAD as u64);
        assert_eq!(kl.problems, ["the stream ended before the LOG_END frame"]);
        assert!(!r._dir.0.join("dump.dmesg.txt").exists());
        let kept = fs::read(r._dir.0.join("dump.dmesg.txt.incomplete")).unwrap();
        assert_eq!(kept, &log[..2 * MAX_PAYLOAD]);
        assert!(kl.summary().starts_with("kernel log INCOMPLETE: "), "{}", kl.summary());
    }

    #[test]
    fn lost_log_frames_spoil_the_log_not_the_dump() {
        let dump = fake_dump(30_000);
        let log = kernel_log();
        let wire = build_wire_log(&dump, 5000, true, "", Some(&log));
        let fr = frame_kinds(&wire);
        // Lose the second LOG frame.
        let mut w = wire[..fr[2].1].to_vec();
        w.extend_from_slice(&wire[fr[2].2..]);
        let r = run(&w, 4096);
        assert!(r.report.is_complete(), "{:?}", r.report.problems);
        assert_eq!(r.dump.as_deref(), Some(&dump[..]));
        let kl = r.report.kernel_log.as_ref().unwrap();
        assert!(!kl.complete);
        assert_eq!(
            kl.problems,
            [
                "lost frame 2 of the kernel log".to_string(),
                format!(
                    "kernel log bytes {:#x}–{:#x} missing ({} bytes)",
                    MAX_PAYLOAD,
                    2 * MAX_PAYLOAD - 1,
                    MAX_PAYLOAD
                )
            ]
        );
        let kept =
            String::from_utf8(fs::read(r._dir.0.join("dump.dmesg.txt.incomplete")).unwrap()).unwrap();
        assert!(kept.contains("\n[lifeboat receive: 16384 bytes of the log lost here]\n"));
        assert!(kept.ends_with(std::str::from_utf8(&log[2 * MAX_PAYLOAD..]).unwrap()));

        // Lose LOG_END (and the last LOG frame): still a complete dump.
        let mut w = wire[..fr[4].1].to_vec();
        w.extend_from_slice(&wire[fr[5].2..]);
        let r = run(&w, 4096);
        assert!(r.report.is_complete(), "{:?}", r.report.problems);
        let kl = r.report.kernel_log.as_ref().unwrap();
        assert_eq!(kl.problems, ["lost frames 4–5 of the kernel log"]);
        assert!(r._dir.0.join("dump.dmesg.txt.incomplete").exists());
    }

    #[test]
    fn no_log_from_the_capture_kernel_is_explained() {
        let dump = fake_dump(10_000);
        let mut fw = FrameWriter::new(Wire::default(), "t").unwrap();
        let lf = LogFramer::new(&mut fw);
        let why = "no kernel log: VMCOREINFO missing";
        lf.finish(&LogOutcome { complete: false, records: 0, reason: why.into() }).unwrap();
        let mut enc = FlatEncoder::new(&mut fw).unwrap();
        enc.record(0, &dump).unwrap();
        enc.finish().unwrap();
        let wire = fw.finish(true, "").unwrap().0;
        let r = run(&wire, 1 << 20);
        assert!(r.report.is_complete(), "{:?}", r.report.problems);
        let kl = r.report.kernel_log.as_ref().unwrap();
        assert_eq!(kl.problems, [format!("the capture kernel sent no kernel log: {why}")]);
        assert_eq!(kl.path, None);
        assert!(!r._dir.0.join("dump.dmesg.txt").exists());
        assert!(!r._dir.0.join("dump.dmesg.txt.incomplete").exists());
        // An older sender without log frames: no kernel log report at all.
        let r = run(&build_wire(&dump, 5000, true, ""), 1 << 20);
        assert!(r.report.kernel_log.is_none());
    }

    #[test]
    fn range_set() {
        let mut s = RangeSet::default();
        s.insert(10, 20);
        s.insert(30, 40);
        s.insert(20, 25);
        assert_eq!(s.holes(50), vec![(0, 10), (25, 30), (40, 50)]);
        s.insert(5, 35);
        assert_eq!(s.holes(40), vec![(0, 5)]);
        assert!(s.contains(6, 40));
        assert!(!s.contains(4, 6));
        s.insert(0, 5);
        assert_eq!(s.map.len(), 1);
        assert_eq!(s.end(), 40);
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable(b"ok \x1b[1m\xff\ttab"), "ok \\x1b[1m\\xff\ttab");
    }
}
