//! Framing of the dump stream on a serial line that also carries console text.
//!
//! The specification, with a worked example, is `docs/serial-framing.md`. In short, a frame is
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"\0LBF"` |
//! | 4 | 1 | kind: 1 START, 2 DATA, 3 END, 6 LOG, 7 LOG_END; on TCP also 4 HELLO, 5 REPLY |
//! | 5 | 1 | framing version, 1 |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | sequence number (u32 LE): START is 0, then +1 per frame |
//! | 12 | 4 | payload length (u32 LE), at most [`MAX_PAYLOAD`] |
//! | 16 | 8 | stream offset (u64 LE): DATA: of its first payload byte; START: 0; END: total stream bytes; LOG: log byte offset; LOG_END: total log bytes |
//! | 24 | len | payload |
//! | 24+len | 4 | CRC-32 (IEEE, as zlib's `crc32`) of bytes `0..24+len`, u32 LE |
//!
//! The sender prints console text only between frames. The receiver ([`FrameScanner`]) takes
//! every byte outside a valid frame as console text; a candidate frame whose header is not
//! sane, whose CRC does not match, or that is cut off by the end of input is reported as
//! [`ScanEvent::Corrupt`]; its first byte (the magic's NUL) is dropped and scanning resumes at
//! the next byte.
//!
//! Between START and the first DATA frame the sender puts the crashed kernel's log (as
//! `makedumpfile --dump-dmesg` prints it): LOG frames carrying consecutive pieces of its text
//! (offset = byte offset in the log), then one LOG_END frame (offset = the log's length,
//! payload = whether the log is whole, the records sent, why not). See [`LogFramer`].
//!
//! The network protocol (`docs/net-protocol.md`, [`crate::netproto`]) sends the same frames
//! over TCP, plus two control kinds ([`ControlKind`]: HELLO from the capture kernel, REPLY from
//! the server). A TCP connection carries nothing but frames, so it is read strictly with
//! [`FrameReader`]. The serial scanner does not know the control kinds: a HELLO or REPLY frame
//! on a serial line is reported as [`ScanEvent::Corrupt`], like any frame of unknown kind.

use alloc::vec::Vec;
use core::fmt;

use crate::sink::{ChunkWrite, SinkError, MAX_CHUNK};

/// First bytes of every frame. Console text never contains NUL, so it never contains this.
pub const MAGIC: [u8; 4] = *b"\0LBF";
/// The framing version this module writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;
/// Bytes after the payload (the CRC).
pub const TRAILER_LEN: usize = 4;
/// The largest payload of any frame: a DATA frame carries one chunk of at most
/// [`MAX_CHUNK`] bytes.
pub const MAX_PAYLOAD: usize = MAX_CHUNK;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// The payload format announced in START: a makedumpfile flattened stream ([`crate::flat`])
/// of a kdump-compressed dump.
pub const STREAM_FLATTENED_KDUMP: u32 = 1;
/// START and END strings are cut to this many bytes (at a character boundary).
pub const MAX_TEXT: usize = 1024;

/// Fixed part of a START payload: stream format u32 LE, then the info string.
const START_FIXED: usize = 4;
/// Fixed part of an END payload: verdict u8, 3 reserved, DATA frame count u32 LE, then the
/// reason string.
const END_FIXED: usize = 8;
/// Fixed part of a LOG_END payload: verdict u8, 3 reserved, record count u32 LE, then the
/// reason string.
const LOG_END_FIXED: usize = 8;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Opens the stream: payload = stream format + info string.
    Start = 1,
    /// A piece of the stream: payload = one chunk, starting at the header's stream offset.
    Data = 2,
    /// Closes the stream: payload = verdict, DATA frame count, reason; offset = total bytes.
    End = 3,
    /// A piece of the crashed kernel's log text (between START and the first DATA): payload =
    /// the bytes, offset = their position in the log.
    Log = 6,
    /// Closes the log: payload = verdict (1 whole log), record count, reason; offset = total
    /// log bytes.
    LogEnd = 7,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(FrameKind::Start),
            2 => Some(FrameKind::Data),
            3 => Some(FrameKind::End),
            6 => Some(FrameKind::Log),
            7 => Some(FrameKind::LogEnd),
            _ => None,
        }
    }
}

/// Where the crashed kernel's log text goes, piece by piece (a [`LogFramer`] on the wire).
/// Object-safe so a log producer can write to any sink.
pub trait LogWrite {
    /// Appends `text` (any length) to the log.
    fn log_text(&mut self, text: &[u8]) -> Result<(), SinkError>;
}

/// How sending the log ended, for the LOG_END frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOutcome {
    /// Every record of the log was sent.
    pub complete: bool,
    /// Records sent.
    pub records: u64,
    /// Why the log is not whole (or not there at all); empty when complete.
    pub reason: alloc::string::String,
}

/// The sender's side of the byte link (the capture kernel implements it over the UART).
pub trait ByteWrite {
    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError>;
}

/// Frames a stream of chunks onto a [`ByteWrite`]: START on creation, one DATA frame per
/// [`ChunkWrite::write_chunk`], END on [`FrameWriter::finish`]. Allocates nothing.
///
/// Console text may be written between frames through [`FrameWriter::inner_mut`]; it must not
/// contain NUL bytes.
pub struct FrameWriter<W: ByteWrite> {
    w: W,
    /// Sequence number of the next frame.
    seq: u32,
    /// Stream offset of the next DATA payload byte.
    offset: u64,
    data_frames: u32,
    /// Log offset of the next LOG payload byte.
    log_bytes: u64,
    /// LOG_END was sent.
    log_ended: bool,
}

impl<W: ByteWrite> FrameWriter<W> {
    /// Emits the START frame carrying `info` (cut to [`MAX_TEXT`] bytes).
    pub fn new(w: W, info: &str) -> Result<Self, SinkError> {
        let mut fw = Self { w, seq: 0, offset: 0, data_frames: 0, log_bytes: 0, log_ended: false };
        let format = STREAM_FLATTENED_KDUMP.to_le_bytes();
        fw.frame(FrameKind::Start, 0, &[&format, clip(info)])?;
        Ok(fw)
    }

    /// The underlying writer, for console text between frames.
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Stream bytes framed so far.
    pub fn stream_bytes(&self) -> u64 {
        self.offset
    }

    /// DATA frames emitted so far.
    pub fn data_frames(&self) -> u32 {
        self.data_frames
    }

    /// Log bytes framed so far (LOG payloads).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Emits one LOG frame carrying `piece` (1 to [`MAX_PAYLOAD`] bytes; empty sends nothing)
    /// at the next log offset. Only before LOG_END and before the first DATA frame.
    pub fn write_log(&mut self, piece: &[u8]) -> Result<(), SinkError> {
        if self.log_ended || self.data_frames > 0 {
            return Err(SinkError::Io("kernel log frames after the log or the dump"));
        }
        if piece.is_empty() {
            return Ok(());
        }
        if piece.len() > MAX_PAYLOAD {
            return Err(SinkError::Io("log piece larger than MAX_PAYLOAD"));
        }
        let offset = self.log_bytes;
        self.frame(FrameKind::Log, offset, &[piece])?;
        self.log_bytes += piece.len() as u64;
        Ok(())
    }

    /// Emits the LOG_END frame: the log is over (`log_bytes` long). `complete`: every record
    /// was sent; `reason` (cut to [`MAX_TEXT`] bytes) says why not. At most once, before the
    /// first DATA frame.
    pub fn end_log(&mut self, complete: bool, records: u64, reason: &str) -> Result<(), SinkError> {
        if self.log_ended || self.data_frames > 0 {
            return Err(SinkError::Io("kernel log frames after the log or the dump"));
        }
        let mut fixed = [0u8; LOG_END_FIXED];
        fixed[0] = complete as u8;
        fixed[4..8].copy_from_slice(&(records.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        let total = self.log_bytes;
        self.log_ended = true;
        self.frame(FrameKind::LogEnd, total, &[&fixed, clip(reason)])
    }

    /// Emits the END frame and returns the writer. `complete` is the sender's verdict;
    /// `reason` (cut to [`MAX_TEXT`] bytes) says why the stream is incomplete, or is empty.
    pub fn finish(mut self, complete: bool, reason: &str) -> Result<W, SinkError> {
        let mut fixed = [0u8; END_FIXED];
        fixed[0] = complete as u8;
        fixed[4..8].copy_from_slice(&self.data_frames.to_le_bytes());
        let total = self.offset;
        self.frame(FrameKind::End, total, &[&fixed, clip(reason)])?;
        Ok(self.w)
    }

    fn frame(&mut self, kind: FrameKind, offset: u64, parts: &[&[u8]]) -> Result<(), SinkError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(len <= MAX_PAYLOAD);
        let header = encode_header(kind as u8, self.seq, len as u32, offset);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        self.w.write_bytes(&header)?;
        for p in parts {
            crc.update(p);
            self.w.write_bytes(p)?;
        }
        self.w.write_bytes(&crc.finalize().to_le_bytes())?;
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }
}

impl<W: ByteWrite> ChunkWrite for FrameWriter<W> {
    /// One DATA frame per chunk. An empty chunk emits nothing; a chunk larger than
    /// [`MAX_CHUNK`] is refused.
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SinkError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if chunk.len() > MAX_PAYLOAD {
            return Err(SinkError::Io("chunk larger than MAX_CHUNK"));
        }
        let offset = self.offset;
        self.frame(FrameKind::Data, offset, &[chunk])?;
        self.offset += chunk.len() as u64;
        self.data_frames = self.data_frames.wrapping_add(1);
        Ok(())
    }
}

/// Cuts a log of any length into LOG frames of [`MAX_PAYLOAD`] bytes (the last one shorter)
/// through one fixed buffer, so memory does not grow with the log. Write the text with
/// [`LogWrite::log_text`] (it may come in pieces of any size, e.g. one record at a time), then
/// [`LogFramer::finish`] sends the rest and LOG_END.
///
/// After a write error every later write fails at once (the producer can stop formatting).
pub struct LogFramer<'a, W: ByteWrite> {
    fw: &'a mut FrameWriter<W>,
    buf: Vec<u8>,
    error: Option<SinkError>,
}

impl<'a, W: ByteWrite> LogFramer<'a, W> {
    pub fn new(fw: &'a mut FrameWriter<W>) -> Self {
        Self { fw, buf: Vec::with_capacity(MAX_PAYLOAD), error: None }
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&SinkError> {
        self.error.as_ref()
    }

    /// Sends what is buffered and the LOG_END frame with `outcome`; returns the first error.
    pub fn finish(mut self, outcome: &LogOutcome) -> Result<(), SinkError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let rest = core::mem::take(&mut self.buf);
        self.fw.write_log(&rest)?;
        self.fw.end_log(outcome.complete, outcome.records, &outcome.reason)
    }
}

impl<W: ByteWrite> LogWrite for LogFramer<'_, W> {
    fn log_text(&mut self, mut text: &[u8]) -> Result<(), SinkError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        while !text.is_empty() {
            let n = (MAX_PAYLOAD - self.buf.len()).min(text.len());
            self.buf.extend_from_slice(&text[..n]);
            text = &text[n..];
            if self.buf.len() == MAX_PAYLOAD {
                let r = self.fw.write_log(&self.buf);
                self.buf.clear();
                if let Err(e) = r {
                    self.error = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

fn encode_header(kind: u8, seq: u32, len: u32, offset: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = kind;
    h[5] = VERSION;
    h[8..12].copy_from_slice(&seq.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&offset.to_le_bytes());
    h
}

/// `s` cut to at most [`MAX_TEXT`] bytes at a character boundary.
fn clip(s: &str) -> &[u8] {
    let mut n = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s.as_bytes()[..n]
}

/// The decoded payload of a START frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo<'a> {
    /// [`STREAM_FLATTENED_KDUMP`] for streams lifeboat writes.
    pub stream_format: u32,
    /// Free-form description of the sender (program, version, arch, crashed kernel release).
    pub info: &'a [u8],
}

impl<'a> StartInfo<'a> {
    /// `None` if the payload is too short.
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let fixed = payload.get(..START_FIXED)?;
        Some(Self { stream_format: le_u32(fixed), info: &payload[START_FIXED..] })
    }
}

/// The decoded payload (and offset) of an END frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndInfo<'a> {
    /// The sender's verdict: every byte of the dump was produced.
    pub complete: bool,
    /// DATA frames the sender emitted.
    pub data_frames: u32,
    /// Stream bytes the sender emitted (the END frame's offset field).
    pub stream_bytes: u64,
    /// Why the dump is incomplete (empty when complete).
    pub reason: &'a [u8],
}

impl<'a> EndInfo<'a> {
    /// `None` if the payload is too short. `offset` is the END frame's offset field.
    pub fn parse(offset: u64, payload: &'a [u8]) -> Option<Self> {
        let fixed = payload.get(..END_FIXED)?;
        Some(Self {
            complete: fixed[0] == 1,
            data_frames: le_u32(&fixed[4..8]),
            stream_bytes: offset,
            reason: &payload[END_FIXED..],
        })
    }
}

/// The decoded payload (and offset) of a LOG_END frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEndInfo<'a> {
    /// The sender sent every record of the crashed kernel's log.
    pub complete: bool,
    /// Records sent (saturating at `u32::MAX`).
    pub records: u32,
    /// Log bytes sent (the LOG_END frame's offset field).
    pub log_bytes: u64,
    /// Why the log is not whole, or not there (empty when complete).
    pub reason: &'a [u8],
}

impl<'a> LogEndInfo<'a> {
    /// `None` if the payload is too short. `offset` is the LOG_END frame's offset field.
    pub fn parse(offset: u64, payload: &'a [u8]) -> Option<Self> {
        let fixed = payload.get(..LOG_END_FIXED)?;
        Some(Self {
            complete: fixed[0] == 1,
            records: le_u32(&fixed[4..8]),
            log_bytes: offset,
            reason: &payload[LOG_END_FIXED..],
        })
    }
}

/// The network protocol version carried in HELLO (`docs/net-protocol.md`).
pub const PROTOCOL_VERSION: u32 = 1;
/// HELLO values are cut to this many bytes (at a character boundary).
pub const MAX_HELLO_VALUE: usize = 256;
/// Fixed part of a HELLO payload: protocol version u32 LE, then `key=value\n` lines.
const HELLO_FIXED: usize = 4;
/// Fixed part of a REPLY payload: code u8, 3 reserved bytes, then the text.
const REPLY_FIXED: usize = 4;

/// The control frames of the network protocol. They are outside the dump stream: sequence
/// number 0 and offset 0, and the dump stream that follows an ACCEPT starts with START seq 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ControlKind {
    /// Client to server, first frame on a connection: protocol version and `key=value` lines.
    Hello = 4,
    /// Server to client: a [`ReplyCode`] and a text.
    Reply = 5,
}

/// Any frame kind a TCP connection may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    Stream(FrameKind),
    Control(ControlKind),
}

impl WireKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            4 => Some(WireKind::Control(ControlKind::Hello)),
            5 => Some(WireKind::Control(ControlKind::Reply)),
            _ => FrameKind::from_u8(b).map(WireKind::Stream),
        }
    }
}

impl fmt::Display for WireKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireKind::Stream(FrameKind::Start) => "START",
            WireKind::Stream(FrameKind::Data) => "DATA",
            WireKind::Stream(FrameKind::End) => "END",
            WireKind::Stream(FrameKind::Log) => "LOG",
            WireKind::Stream(FrameKind::LogEnd) => "LOG_END",
            WireKind::Control(ControlKind::Hello) => "HELLO",
            WireKind::Control(ControlKind::Reply) => "REPLY",
        })
    }
}

/// A whole control frame (seq 0, offset 0) carrying `payload` (at most [`MAX_PAYLOAD`] bytes;
/// the payload builders below never make more).
pub fn control_frame(kind: ControlKind, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    f.extend_from_slice(&encode_header(kind as u8, 0, payload.len() as u32, 0));
    f.extend_from_slice(payload);
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// A HELLO payload: `version`, then one `key=value\n` line per field. Keys are the caller's
/// constants; in values, line ends become spaces and each value is cut to
/// [`MAX_HELLO_VALUE`] bytes, so a value can neither end its line early nor grow the frame
/// past [`MAX_PAYLOAD`] (at most 48 fields).
pub fn hello_payload(version: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    debug_assert!(fields.len() <= 48);
    let mut p = Vec::new();
    p.extend_from_slice(&version.to_le_bytes());
    for (key, value) in fields.iter().take(48) {
        debug_assert!(!key.contains(['=', '\n']) && key.len() <= 64);
        p.extend_from_slice(key.as_bytes());
        p.push(b'=');
        let mut n = value.len().min(MAX_HELLO_VALUE);
        while !value.is_char_boundary(n) {
            n -= 1;
        }
        p.extend(value.as_bytes()[..n].iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        }));
        p.push(b'\n');
    }
    p
}

/// The decoded payload of a HELLO frame. Values are untrusted bytes (not checked for UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloInfo<'a> {
    /// [`PROTOCOL_VERSION`] for clients of this protocol.
    pub version: u32,
    /// The `key=value\n` lines.
    pub text: &'a [u8],
}

impl<'a> HelloInfo<'a> {
    /// `None` if the payload is too short.
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let fixed = payload.get(..HELLO_FIXED)?;
        Some(Self { version: le_u32(fixed), text: &payload[HELLO_FIXED..] })
    }

    /// The value of the last line `key=...`; lines without `=` are ignored.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.text.split(|&b| b == b'\n').rev().find_map(|line| {
            let eq = line.iter().position(|&b| b == b'=')?;
            (&line[..eq] == key.as_bytes()).then(|| &line[eq + 1..])
        })
    }
}

/// What a REPLY says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    /// Send the dump stream now. Text: a banner (server version).
    Accept = 0,
    /// Not taking this dump (free space below the reserve, too many clients, bad HELLO).
    /// Final: the client does not retry this server. Text: why.
    Refused = 1,
    /// The dump arrived whole and is on disk. Text: its path relative to the dump directory.
    Stored = 2,
    /// The transfer failed (integrity, size limit, disk full). Final. Text: why.
    Failed = 3,
    /// Answer to a probe HELLO. Text: a banner (version, free space).
    ProbeOk = 4,
}

impl ReplyCode {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => ReplyCode::Accept,
            1 => ReplyCode::Refused,
            2 => ReplyCode::Stored,
            3 => ReplyCode::Failed,
            4 => ReplyCode::ProbeOk,
            _ => return None,
        })
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyCode::Accept => "ACCEPT",
            ReplyCode::Refused => "REFUSED",
            ReplyCode::Stored => "STORED",
            ReplyCode::Failed => "FAILED",
            ReplyCode::ProbeOk => "PROBE_OK",
        })
    }
}

/// A REPLY payload: `code`, 3 reserved zero bytes, then `text` cut to [`MAX_TEXT`] bytes.
pub fn reply_payload(code: ReplyCode, text: &str) -> Vec<u8> {
    let text = clip(text);
    let mut p = Vec::with_capacity(REPLY_FIXED + text.len());
    p.extend_from_slice(&[code as u8, 0, 0, 0]);
    p.extend_from_slice(text);
    p
}

/// The decoded payload of a REPLY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyInfo<'a> {
    pub code: ReplyCode,
    /// UTF-8 from a well-behaved server; untrusted.
    pub text: &'a [u8],
}

impl<'a> ReplyInfo<'a> {
    /// `None` if the payload is too short or the code unknown.
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let fixed = payload.get(..REPLY_FIXED)?;
        Some(Self { code: ReplyCode::from_u8(fixed[0])?, text: &payload[REPLY_FIXED..] })
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// What [`FrameScanner::next_event`] found. Positions count input bytes from the start.
#[derive(Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// Bytes outside frames, in input order. Text may come in arbitrary pieces (not lines).
    Console(Vec<u8>),
    /// A frame whose CRC checked. `at` is the input position of its magic.
    Frame { kind: FrameKind, seq: u32, offset: u64, payload: Vec<u8>, at: u64 },
    /// Something that started like a frame at input position `at` but is not one (bad header,
    /// CRC mismatch, or cut off by the end of input). Its first byte (the NUL) is dropped as
    /// noise; the following bytes are rescanned as console text and possible later frames.
    Corrupt { at: u64 },
}

impl fmt::Debug for ScanEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanEvent::Console(t) => {
                write!(f, "Console({:?})", alloc::string::String::from_utf8_lossy(t))
            }
            ScanEvent::Frame { kind, seq, offset, payload, at } => write!(
                f,
                "Frame {{ kind: {:?}, seq: {}, offset: {:#x}, len: {}, at: {} }}",
                kind,
                seq,
                offset,
                payload.len(),
                at
            ),
            ScanEvent::Corrupt { at } => write!(f, "Corrupt {{ at: {} }}", at),
        }
    }
}

/// Finds frames in a byte stream that also carries console text.
///
/// Feed input in pieces of any size with [`Self::feed`], then drain events with
/// [`Self::next_event`] until it returns `None`; call [`Self::finish`] at the end of input so
/// that a cut-off frame is reported and held-back bytes come out. Memory is bounded by one
/// frame ([`MAX_FRAME`]) plus the largest piece fed.
pub struct FrameScanner {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// Input position of `buf[0]`.
    base: u64,
    eof: bool,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self::new()
    }
}

enum Candidate {
    /// Not enough bytes yet to decide.
    NeedMore,
    /// Not a frame.
    Bad,
    /// A valid frame of this total length.
    Good { kind: FrameKind, seq: u32, offset: u64, len: usize },
}

impl FrameScanner {
    pub fn new() -> Self {
        Self { buf: Vec::new(), start: 0, base: 0, eof: false }
    }

    /// Appends input. Call [`Self::next_event`] until `None` before feeding more to keep
    /// memory bounded.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Marks the end of input: what is held back (a frame still waiting for bytes, a partial
    /// magic) is resolved by the following [`Self::next_event`] calls.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Input bytes consumed so far (the position of the next undecided byte).
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The next event, or `None` when more input is needed (or, after [`Self::finish`],
    /// when everything is consumed).
    pub fn next_event(&mut self) -> Option<ScanEvent> {
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return None;
        }
        match find_magic(rest) {
            Some(0) => {}
            Some(i) => return Some(self.console(i)),
            None => {
                // Hold back a tail that may be the beginning of a magic.
                let keep = if self.eof { 0 } else { partial_magic_suffix(rest) };
                let n = rest.len() - keep;
                return if n == 0 { None } else { Some(self.console(n)) };
            }
        }
        let at = self.position();
        match check_candidate(rest) {
            Candidate::NeedMore if !self.eof => None,
            Candidate::NeedMore | Candidate::Bad => {
                // Skip the NUL so the next scan starts after it; the rest is rescanned.
                self.start += 1;
                Some(ScanEvent::Corrupt { at })
            }
            Candidate::Good { kind, seq, offset, len } => {
                let payload = rest[HEADER_LEN..HEADER_LEN + len].to_vec();
                self.start += HEADER_LEN + len + TRAILER_LEN;
                Some(ScanEvent::Frame { kind, seq, offset, payload, at })
            }
        }
    }

    fn console(&mut self, n: usize) -> ScanEvent {
        let text = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        ScanEvent::Console(text)
    }
}

/// Index of the first full magic in `b`.
fn find_magic(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&x| x == MAGIC[0]) {
        let j = i + p;
        let avail = (b.len() - j).min(MAGIC.len());
        if b[j..j + avail] == MAGIC[..avail] {
            if avail == MAGIC.len() {
                return Some(j);
            }
            return None; // a partial magic at the very end
        }
        i = j + 1;
    }
    None
}

/// Length of the longest suffix of `b` that is a proper prefix of the magic.
fn partial_magic_suffix(b: &[u8]) -> usize {
    (1..MAGIC.len()).rev().find(|&k| b.len() >= k && b[b.len() - k..] == MAGIC[..k]).unwrap_or(0)
}

/// Decides whether `b` (starting with the magic) begins with a valid frame.
fn check_candidate(b: &[u8]) -> Candidate {
    if b.len() < HEADER_LEN {
        return Candidate::NeedMore;
    }
    let kind = FrameKind::from_u8(b[4]);
    let len = le_u32(&b[12..16]) as usize;
    let (Some(kind), true, true, true) =
        (kind, b[5] == VERSION, b[6] == 0 && b[7] == 0, len <= MAX_PAYLOAD)
    else {
        return Candidate::Bad;
    };
    let total = HEADER_LEN + len + TRAILER_LEN;
    if b.len() < total {
        return Candidate::NeedMore;
    }
    let crc = crc32fast::hash(&b[..HEADER_LEN + len]);
    if crc != le_u32(&b[HEADER_LEN + len..total]) {
        return Candidate::Bad;
    }
    Candidate::Good { kind, seq: le_u32(&b[8..12]), offset: le_u64(&b[16..24]), len }
}

/// A frame read by [`FrameReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub kind: WireKind,
    pub seq: u32,
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// Why the bytes of a connection are not a sequence of frames. Positions count the
/// connection's bytes from its first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// No magic where the next frame must start: the peer does not speak this protocol, or
    /// bytes were lost or altered.
    NoMagic { at: u64 },
    /// The header is not sane (unknown kind, version, reserved bits, length over the limit).
    BadHeader { at: u64, what: &'static str },
    /// The CRC does not match: the frame was altered in transit. `seq` is as its header says.
    BadCrc { at: u64, seq: u32 },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::NoMagic { at } => write!(
                f,
                "no frame at connection byte {:#x} (the peer does not speak the lifeboat protocol, \
                 or the data was altered)",
                at
            ),
            WireError::BadHeader { at, what } => {
                write!(f, "bad frame header at connection byte {:#x}: {}", at, what)
            }
            WireError::BadCrc { at, seq } => write!(
                f,
                "CRC mismatch in frame {} at connection byte {:#x}: data corrupted in transit",
                seq, at
            ),
        }
    }
}

/// Reads frames from a connection that carries nothing but frames (TCP): unlike
/// [`FrameScanner`], any byte that is not part of a valid frame is an error, and after an
/// error the reader stays failed (there is no resynchronisation on a reliable link).
///
/// Feed bytes as they arrive with [`Self::feed`], then take frames with
/// [`Self::next_frame`] until it returns `Ok(None)`. Memory is bounded by one frame plus the
/// largest piece fed.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// Connection position of `buf[0]`.
    base: u64,
    failed: Option<WireError>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Connection bytes consumed as whole frames.
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Bytes received but not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or why the input is not a
    /// frame (then the same error on every later call).
    pub fn next_frame(&mut self) -> Result<Option<WireFrame>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.check() {
            Ok(None) => Ok(None),
            Ok(Some((kind, seq, offset, len))) => {
                let b = &self.buf[self.start..];
                let payload = b[HEADER_LEN..HEADER_LEN + len].to_vec();
                self.start += HEADER_LEN + len + TRAILER_LEN;
                Ok(Some(WireFrame { kind, seq, offset, payload }))
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Checks the frame at `start`: its kind, seq, offset and payload length when whole.
    #[allow(clippy::type_complexity)]
    fn check(&self) -> Result<Option<(WireKind, u32, u64, usize)>, WireError> {
        let b = &self.buf[self.start..];
        let at = self.position();
        let n = b.len().min(MAGIC.len());
        if b[..n] != MAGIC[..n] {
            return Err(WireError::NoMagic { at });
        }
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let bad = |what| Err(WireError::BadHeader { at, what });
        let Some(kind) = WireKind::from_u8(b[4]) else {
            return bad("unknown frame kind");
        };
        if b[5] != VERSION {
            return bad("unknown framing version");
        }
        if b[6] != 0 || b[7] != 0 {
            return bad("reserved bytes not zero");
        }
        let len = le_u32(&b[12..16]) as usize;
        if len > MAX_PAYLOAD {
            return bad("payload longer than 16384 bytes");
        }
        let total = HEADER_LEN + len + TRAILER_LEN;
        if b.len() < total {
            return Ok(None);
        }
        let seq = le_u32(&b[8..12]);
        if crc32fast::hash(&b[..HEADER_LEN + len]) != le_u32(&b[HEADER_LEN + len..total]) {
            return Err(WireError::BadCrc { at, seq });
        }
        Ok(Some((kind, seq, le_u64(&b[16..24]), len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use crate::elfcore::testutil::Rng;
    use alloc::vec;

    #[derive(Default)]
    struct Wire(Vec<u8>);
    impl ByteWrite for Wire {
        fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
            self.0.extend_from_slice(b);
            Ok(())
        }
    }

    /// Console-like text of up to `max` bytes: printable ASCII and newlines.
    fn text(rng: &mut Rng, max: u64) -> Vec<u8> {
        let n = rng.below(max + 1);
        (0..n)
            .map(|_| match rng.below(20) {
                0 => b'\n',
                _ => b' ' + rng.below(95) as u8,
            })
            .collect()
    }

    /// Frames `chunks` with console text before/between/after them. Returns the wire bytes,
    /// the console text in order, and the byte range of every frame on the wire.
    fn build(chunks: &[Vec<u8>], rng: &mut Rng) -> (Vec<u8>, Vec<u8>, Vec<(usize, usize)>) {
        let mut console = Vec::new();
        let mut ranges = Vec::new();
        let mut fw = FrameWriter::new(Wire::default(), "lifeboat test x86_64").unwrap();
        ranges.push((0, fw.inner_mut().0.len()));
        for c in chunks {
            let t = text(rng, 80);
            console.extend_from_slice(&t);
            fw.inner_mut().0.extend_from_slice(&t);
            let a = fw.inner_mut().0.len();
            fw.write_chunk(c).unwrap();
            ranges.push((a, fw.inner_mut().0.len()));
        }
        let a = fw.inner_mut().0.len();
        let mut w = fw.finish(true, "").unwrap();
        ranges.push((a, w.0.len()));
        let t = text(rng, 80);
        console.extend_from_slice(&t);
        w.0.extend_from_slice(&t);
        (w.0, console, ranges)
    }

    fn scan(input: &[u8], step: usize) -> Vec<ScanEvent> {
        let mut s = FrameScanner::new();
        let mut ev = Vec::new();
        for piece in input.chunks(step.max(1)) {
            s.feed(piece);
            while let Some(e) = s.next_event() {
                ev.push(e);
            }
        }
        s.finish();
        while let Some(e) = s.next_event() {
            ev.push(e);
        }
        ev
    }

    /// Console text joined, frames as (kind, seq, offset, payload), corrupt positions.
    #[allow(clippy::type_complexity)]
    fn split(ev: &[ScanEvent]) -> (Vec<u8>, Vec<(FrameKind, u32, u64, Vec<u8>)>, Vec<u64>) {
        let mut text = Vec::new();
        let mut frames = Vec::new();
        let mut corrupt = Vec::new();
        for e in ev {
            match e {
                ScanEvent::Console(t) => text.extend_from_slice(t),
                ScanEvent::Frame { kind, seq, offset, payload, .. } => {
                    frames.push((*kind, *seq, *offset, payload.clone()))
                }
                ScanEvent::Corrupt { at } => corrupt.push(*at),
            }
        }
        (text, frames, corrupt)
    }

    fn sample_chunks(rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let n = 1 + rng.below(3000) as usize;
                rng.bytes(n)
            })
            .collect();
        v.push(vec![0xAB; MAX_CHUNK]);
        v
    }

    /// The example frames of docs/serial-framing.md, byte for byte.
    #[test]
    fn documented_example_frames() {
        let mut fw = FrameWriter::new(Wire::default(), "lifeboat 0.1.0 x86_64").unwrap();
        let start: &[u8] = b"\0LBF\x01\x01\0\0\0\0\0\0\x19\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\
            lifeboat 0.1.0 x86_64\xae\xca\x5c\xbf";
        assert_eq!(fw.inner_mut().0, start);
        fw.seq = 7;
        fw.offset = 0x2a40;
        fw.data_frames = 6;
        fw.inner_mut().0.clear();
        fw.write_chunk(&[0xff; 16]).unwrap();
        let data: &[u8] = b"\0LBF\x02\x01\0\0\x07\0\0\0\x10\0\0\0\x40\x2a\0\0\0\0\0\0\
            \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x4b\x5e\x18\xc4";
        assert_eq!(fw.inner_mut().0, data);
        fw.inner_mut().0.clear();
        let w = fw.finish(true, "").unwrap();
        let end: &[u8] = b"\0LBF\x03\x01\0\0\x08\0\0\0\x08\0\0\0\x50\x2a\0\0\0\0\0\0\
            \x01\0\0\0\x07\0\0\0\x15\x13\x08\x88";
        assert_eq!(w.0, end);
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn layout_of_a_data_frame() {
        let mut fw = FrameWriter::new(Wire::default(), "hi").unwrap();
        let start = fw.inner_mut().0.clone();
        assert_eq!(start.len(), HEADER_LEN + 4 + 2 + TRAILER_LEN);
        assert_eq!(&start[..8], b"\0LBF\x01\x01\0\0");
        fw.inner_mut().0.clear();
        fw.write_chunk(b"xyz").unwrap();
        fw.write_chunk(b"0123").unwrap();
        let w = &fw.inner_mut().0;
        let f2 = &w[HEADER_LEN + 3 + TRAILER_LEN..];
        assert_eq!(&f2[..4], b"\0LBF");
        assert_eq!(f2[4], 2);
        assert_eq!(le_u32(&f2[8..12]), 2); // seq: START 0, DATA 1, DATA 2
        assert_eq!(le_u32(&f2[12..16]), 4);
        assert_eq!(le_u64(&f2[16..24]), 3);
        assert_eq!(&f2[24..28], b"0123");
        assert_eq!(le_u32(&f2[28..32]), crc32fast::hash(&f2[..28]));
        assert!(fw.write_chunk(&vec![0; MAX_CHUNK + 1]).is_err());
    }

    #[test]
    fn frames_among_console_text_any_feed_size() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let chunks = sample_chunks(&mut rng);
        let (wire, console, _) = build(&chunks, &mut rng);
        let all = scan(&wire, wire.len());
        for step in [1, 2, 3, 5, 23, 24, 1000, 4099] {
            assert_eq!(split(&scan(&wire, step)), split(&all), "step {}", step);
        }
        let (text, frames, corrupt) = split(&all);
        assert_eq!(text, console);
        assert!(corrupt.is_empty());
        assert_eq!(frames.len(), chunks.len() + 2);
        let start = &frames[0];
        assert_eq!((start.0, start.1, start.2), (FrameKind::Start, 0, 0));
        let si = StartInfo::parse(&start.3).unwrap();
        assert_eq!(si.stream_format, STREAM_FLATTENED_KDUMP);
        assert_eq!(si.info, b"lifeboat test x86_64");
        let mut off = 0;
        for (i, c) in chunks.iter().enumerate() {
            let f = &frames[i + 1];
            assert_eq!((f.0, f.1, f.2), (FrameKind::Data, i as u32 + 1, off));
            assert_eq!(&f.3, c);
            off += c.len() as u64;
        }
        let end = frames.last().unwrap();
        assert_eq!(end.0, FrameKind::End);
        let ei = EndInfo::parse(end.2, &end.3).unwrap();
        assert_eq!(ei, EndInfo { complete: true, data_frames: 9, stream_bytes: off, reason: b"" });
    }

    #[test]
    fn payload_containing_the_magic() {
        let mut fw = FrameWriter::new(Wire::default(), "").unwrap();
        let mut chunk = Vec::new();
        for _ in 0..10 {
            chunk.extend_from_slice(&MAGIC);
            chunk.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
        }
        fw.write_chunk(&chunk).unwrap();
        let w = fw.finish(false, "out of memory").unwrap();
        for step in [1, 7, w.0.len()] {
            let (text, frames, corrupt) = split(&scan(&w.0, step));
            assert!(text.is_empty() && corrupt.is_empty());
            assert_eq!(frames.len(), 3);
            assert_eq!(frames[1].3, chunk);
            let ei = EndInfo::parse(frames[2].2, &frames[2].3).unwrap();
            assert!(!ei.complete);
            assert_eq!(ei.reason, b"out of memory");
            assert_eq!(ei.stream_bytes, chunk.len() as u64);
        }
    }

    #[test]
    fn bit_flips_lose_only_the_hit_frame() {
        let mut rng = Rng(42);
        let chunks = sample_chunks(&mut rng);
        let (wire, _, ranges) = build(&chunks, &mut rng);
        for trial in 0..200 {
            let victim = 1 + rng.below(chunks.len() as u64) as usize; // a DATA frame
            let (a, b) = ranges[victim];
            let bit = a * 8 + rng.below(((b - a) * 8) as u64) as usize;
            let mut w = wire.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            let step = [1, 13, w.len()][trial % 3];
            let (_, frames, corrupt) = split(&scan(&w, step));
            let seqs: Vec<u32> = frames.iter().map(|f| f.1).collect();
            let expect: Vec<u32> =
                (0..ranges.len() as u32).filter(|&s| s as usize != victim).collect();
            assert_eq!(seqs, expect, "trial {} bit {}", trial, bit);
            // A flip in the magic itself hides the frame without a Corrupt event.
            if bit / 8 >= a + 4 {
                assert_eq!(corrupt.first(), Some(&(a as u64)), "trial {}", trial);
            }
        }
    }

    #[test]
    fn dropped_frames_leave_sequence_and_offset_gaps() {
        let mut rng = Rng(7);
        let chunks = sample_chunks(&mut rng);
        let (wire, _, ranges) = build(&chunks, &mut rng);
        let mut w = wire[..ranges[3].0].to_vec();
        w.extend_from_slice(&wire[ranges[5].1..]);
        let (_, frames, corrupt) = split(&scan(&w, 17));
        assert!(corrupt.is_empty());
        let seqs: Vec<u32> = frames.iter().map(|f| f.1).collect();
        assert_eq!(seqs, vec![0, 1, 2, 6, 7, 8, 9, 10]);
        let lost: u64 = chunks[2..5].iter().map(|c| c.len() as u64).sum();
        assert_eq!(frames[3].2, frames[2].2 + chunks[1].len() as u64 + lost);
    }

    #[test]
    fn truncated_tail_is_corrupt_and_its_bytes_become_text() {
        let mut rng = Rng(99);
        let chunks = sample_chunks(&mut rng);
        let (wire, _, ranges) = build(&chunks, &mut rng);
        let (a, b) = ranges[4];
        let cut = a + (b - a) / 2;
        for step in [1, 100, cut] {
            let ev = scan(&wire[..cut], step);
            let (text, frames, corrupt) = split(&ev);
            assert_eq!(frames.len(), 4);
            assert_eq!(corrupt, vec![a as u64]);
            assert!(matches!(ev.last(), Some(ScanEvent::Console(_))));
            // Every input byte is accounted for: text + frames + the corrupt frame's NUL.
            let in_frames: usize = ranges[..4].iter().map(|r| r.1 - r.0).sum();
            assert_eq!(text.len(), cut - in_frames - 1);
        }
    }

    #[test]
    fn live_feed_holds_back_only_a_partial_magic() {
        let mut s = FrameScanner::new();
        s.feed(b"booting\n\0L");
        assert_eq!(s.next_event(), Some(ScanEvent::Console(b"booting\n".to_vec())));
        assert_eq!(s.next_event(), None);
        s.feed(b"x");
        assert_eq!(s.next_event(), Some(ScanEvent::Console(b"\0Lx".to_vec())));
        // A header waiting for its payload holds output until bytes arrive or input ends.
        let mut fw = FrameWriter::new(Wire::default(), "i").unwrap();
        fw.write_chunk(b"abc").unwrap();
        let w = fw.inner_mut().0.clone();
        let mut s = FrameScanner::new();
        s.feed(&w[..w.len() - 1]);
        assert!(matches!(s.next_event(), Some(ScanEvent::Frame { kind: FrameKind::Start, .. })));
        assert_eq!(s.next_event(), None);
        s.feed(&w[w.len() - 1..]);
        assert!(matches!(s.next_event(), Some(ScanEvent::Frame { kind: FrameKind::Data, .. })));
        assert_eq!(s.next_event(), None);
        assert_eq!(s.position(), w.len() as u64);
    }

    #[test]
    fn insane_header_is_rejected_without_waiting() {
        let mut s = FrameScanner::new();
        let mut junk = Vec::from(&MAGIC[..]);
        junk.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]); // len 65535
        junk.extend_from_slice(&[0; 8]);
        junk.extend_from_slice(b"text after\n");
        s.feed(&junk);
        assert_eq!(s.next_event(), Some(ScanEvent::Corrupt { at: 0 }));
        let mut text = Vec::new();
        while let Some(ScanEvent::Console(t)) = s.next_event() {
            text.extend_from_slice(&t);
        }
        assert_eq!(text, junk[1..]); // the NUL is dropped as noise
    }

    #[test]
    fn text_is_clipped_at_a_char_boundary() {
        let long: String = "é".repeat(MAX_TEXT);
        let c = clip(&long);
        assert_eq!(c.len(), MAX_TEXT);
        let odd = alloc::format!("x{}", long);
        assert_eq!(clip(&odd).len(), MAX_TEXT - 1);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The HELLO and REPLY examples of docs/net-protocol.md, byte for byte.
    #[test]
    fn documented_control_frames() {
        let p = hello_payload(
            PROTOCOL_VERSION,
            &[
                ("host", "web-01"),
                ("release", "6.1.0-28-amd64"),
                ("machine", "x86_64"),
                ("boot_id", "5b3d4c0e-8f1a-4e2b-9c7d-2a6f0e1b3c4d"),
                ("crash_time", "1795539898"),
                ("ram_bytes", "4294967296"),
                ("attempt", "1"),
                ("lifeboat", "0.1.0"),
                ("probe", "0"),
            ],
        );
        let hello = hex("00 4c 42 46 04 01 00 00 00 00 00 00 af 00 00 00
            00 00 00 00 00 00 00 00 01 00 00 00")
        .into_iter()
        .chain(
            b"host=web-01\nrelease=6.1.0-28-amd64\nmachine=x86_64\n\
              boot_id=5b3d4c0e-8f1a-4e2b-9c7d-2a6f0e1b3c4d\ncrash_time=1795539898\n\
              ram_bytes=4294967296\nattempt=1\nlifeboat=0.1.0\nprobe=0\n"
                .iter()
                .copied(),
        )
        .chain(hex("48 12 c7 9c"))
        .collect::<Vec<u8>>();
        assert_eq!(control_frame(ControlKind::Hello, &p), hello);
        let accept = hex("00 4c 42 46 05 01 00 00 00 00 00 00 12 00 00 00
            00 00 00 00 00 00 00 00 00 00 00 00 6c 69 66 65
            62 6f 61 74 20 30 2e 31 2e 30 b1 73 fb 16");
        assert_eq!(
            control_frame(ControlKind::Reply, &reply_payload(ReplyCode::Accept, "lifeboat 0.1.0")),
            accept
        );
        let stored = hex("00 4c 42 46 05 01 00 00 00 00 00 00 21 00 00 00
            00 00 00 00 00 00 00 00 02 00 00 00 77 65 62 2d
            30 31 2d 32 30 32 36 31 31 32 34 2d 31 37 30 35
            30 33 2f 76 6d 63 6f 72 65 8b d4 15 f8");
        let reply = reply_payload(ReplyCode::Stored, "web-01-20261124-170503/vmcore");
        assert_eq!(control_frame(ControlKind::Reply, &reply), stored);
        // And back.
        let mut r = FrameReader::new();
        r.feed(&hello);
        r.feed(&stored);
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.kind, f.seq, f.offset), (WireKind::Control(ControlKind::Hello), 0, 0));
        let h = HelloInfo::parse(&f.payload).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.get("boot_id"), Some(&b"5b3d4c0e-8f1a-4e2b-9c7d-2a6f0e1b3c4d"[..]));
        assert_eq!(h.get("missing"), None);
        let f = r.next_frame().unwrap().unwrap();
        let ri = ReplyInfo::parse(&f.payload).unwrap();
        assert_eq!((ri.code, ri.text), (ReplyCode::Stored, &b"web-01-20261124-170503/vmcore"[..]));
        assert_eq!(r.next_frame(), Ok(None));
        assert_eq!(r.position(), (hello.len() + stored.len()) as u64);
        assert!(ReplyInfo::parse(&[9, 0, 0, 0]).is_none());
        assert!(HelloInfo::parse(&[1, 0]).is_none());
    }

    #[test]
    fn reader_takes_every_kind_in_any_feed_size() {
        let mut rng = Rng(5);
        let chunks = sample_chunks(&mut rng);
        let mut wire = control_frame(ControlKind::Hello, &hello_payload(1, &[("host", "h")]));
        let mut fw = FrameWriter::new(Wire(core::mem::take(&mut wire)), "net").unwrap();
        for c in &chunks {
            fw.write_chunk(c).unwrap();
        }
        let mut wire = fw.finish(true, "").unwrap().0;
        wire.extend(control_frame(ControlKind::Reply, &reply_payload(ReplyCode::Failed, "x")));
        for step in [1, 24, 29, 1000, wire.len()] {
            let mut r = FrameReader::new();
            let mut kinds = Vec::new();
            for piece in wire.chunks(step) {
                r.feed(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    if let WireKind::Stream(FrameKind::Data) = f.kind {
                        assert_eq!(f.payload, chunks[f.seq as usize - 1]);
                    }
                    kinds.push(f.kind);
                }
                assert!(r.pending() < MAX_FRAME);
            }
            assert_eq!(kinds.len(), chunks.len() + 4, "step {}", step);
            assert_eq!(kinds[0], WireKind::Control(ControlKind::Hello));
            assert_eq!(kinds[1], WireKind::Stream(FrameKind::Start));
            assert_eq!(kinds[kinds.len() - 1], WireKind::Control(ControlKind::Reply));
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn reader_errors_are_final() {
        let mut fw = FrameWriter::new(Wire::default(), "net").unwrap();
        fw.write_chunk(&[7; 100]).unwrap();
        let wire = fw.finish(true, "").unwrap().0;
        let second = HEADER_LEN + 7 + TRAILER_LEN; // the START frame's length
                                                   // A bit flip in the DATA payload: CRC mismatch, reported with the frame's seq.
        let mut w = wire.clone();
        w[second + HEADER_LEN + 50] ^= 0x04;
        let mut r = FrameReader::new();
        r.feed(&w);
        assert!(r.next_frame().unwrap().is_some());
        let e = WireError::BadCrc { at: second as u64, seq: 1 };
        assert_eq!(r.next_frame(), Err(e.clone()));
        assert_eq!(r.next_frame(), Err(e.clone()));
        assert_eq!(
            alloc::format!("{}", e),
            "CRC mismatch in frame 1 at connection byte 0x23: data corrupted in transit"
        );
        // Bytes that are not a frame, an unknown kind, a length over the limit.
        let mut r = FrameReader::new();
        r.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(r.next_frame(), Err(WireError::NoMagic { at: 0 }));
        for (at, byte, what) in [
            (4, 9, "unknown frame kind"),
            (5, 2, "unknown framing version"),
            (7, 1, "reserved bytes not zero"),
            (14, 1, "payload longer than 16384 bytes"),
        ] {
            let mut w = wire.clone();
            w[at] = byte;
            let mut r = FrameReader::new();
            r.feed(&w[..HEADER_LEN]);
            assert_eq!(r.next_frame(), Err(WireError::BadHeader { at: 0, what }));
        }
        // A partial magic waits; a wrong one fails at once.
        let mut r = FrameReader::new();
        r.feed(b"\0L");
        assert_eq!(r.next_frame(), Ok(None));
        r.feed(b"X");
        assert_eq!(r.next_frame(), Err(WireError::NoMagic { at: 0 }));
    }

    /// A log of `n` records of varying length, as the capture kernel sends it.
    fn sample_log(n: usize) -> Vec<u8> {
        let mut log = Vec::new();
        for i in 0..n {
            log.extend_from_slice(
                alloc::format!("[{:5}.{:06}] record {} {}\n", i, i * 7, i, "x".repeat(i % 300))
                    .as_bytes(),
            );
        }
        log
    }

    /// Frames `log` record by record through a LogFramer, then a DATA frame and END.
    fn log_wire(log: &[u8], outcome: &LogOutcome) -> Vec<u8> {
        let mut fw = FrameWriter::new(Wire(b"boot\n".to_vec()), "lifeboat test").unwrap();
        let mut lf = LogFramer::new(&mut fw);
        for line in log.split_inclusive(|&b| b == b'\n') {
            lf.log_text(line).unwrap();
        }
        lf.finish(outcome).unwrap();
        assert_eq!(fw.log_bytes(), log.len() as u64);
        fw.write_chunk(b"dump").unwrap();
        fw.finish(true, "").unwrap().0
    }

    #[test]
    fn log_frames_round_trip_on_serial_and_tcp() {
        let log = sample_log(600); // about 100 KiB: several full LOG frames
        assert!(log.len() > 4 * MAX_PAYLOAD);
        let done = LogOutcome { complete: true, records: 600, reason: String::new() };
        let wire = log_wire(&log, &done);
        let pieces = log.len().div_ceil(MAX_PAYLOAD);
        for step in [1, 29, 4096, wire.len()] {
            let (text, frames, corrupt) = split(&scan(&wire, step));
            assert!(corrupt.is_empty());
            assert_eq!(text, b"boot\n");
            assert_eq!(frames.len(), 1 + pieces + 1 + 1 + 1, "step {}", step);
            let mut got = Vec::new();
            for (i, f) in frames[1..=pieces].iter().enumerate() {
                assert_eq!((f.0, f.1, f.2), (FrameKind::Log, i as u32 + 1, got.len() as u64));
                assert!(f.3.len() == MAX_PAYLOAD || i + 1 == pieces);
                got.extend_from_slice(&f.3);
            }
            assert_eq!(got, log);
            let le = &frames[pieces + 1];
            assert_eq!((le.0, le.1), (FrameKind::LogEnd, pieces as u32 + 1));
            let info = LogEndInfo::parse(le.2, &le.3).unwrap();
            assert_eq!(
                info,
                LogEndInfo { complete: true, records: 600, log_bytes: log.len() as u64, reason: b"" }
            );
            // The dump stream follows with its own offsets; END counts DATA frames only.
            let d = &frames[pieces + 2];
            assert_eq!((d.0, d.1, d.2), (FrameKind::Data, pieces as u32 + 2, 0));
            let end = EndInfo::parse(frames[pieces + 3].2, &frames[pieces + 3].3).unwrap();
            assert_eq!((end.data_frames, end.stream_bytes), (1, 4));
        }
        // The TCP reader takes them too.
        let mut r = FrameReader::new();
        r.feed(&wire[5..]);
        let mut kinds = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            kinds.push(alloc::format!("{}", f.kind));
        }
        assert_eq!(kinds.len(), pieces + 4);
        assert_eq!(kinds[1], "LOG");
        assert_eq!(kinds[pieces + 1], "LOG_END");
    }

    #[test]
    fn log_not_available_is_one_log_end_frame() {
        let why = LogOutcome {
            complete: false,
            records: 0,
            reason: "VMCOREINFO has neither SYMBOL(prb) nor SYMBOL(log_buf)".into(),
        };
        let wire = log_wire(b"", &why);
        let (_, frames, _) = split(&scan(&wire, 7));
        let kinds: Vec<FrameKind> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [FrameKind::Start, FrameKind::LogEnd, FrameKind::Data, FrameKind::End]);
        let info = LogEndInfo::parse(frames[1].2, &frames[1].3).unwrap();
        assert!(!info.complete);
        assert_eq!((info.records, info.log_bytes), (0, 0));
        assert_eq!(info.reason, why.reason.as_bytes());
        assert!(LogEndInfo::parse(0, &[1, 0, 0]).is_none());
    }

    #[test]
    fn log_only_before_the_dump_and_once() {
        let mut fw = FrameWriter::new(Wire::default(), "t").unwrap();
        fw.write_log(b"a\n").unwrap();
        assert!(fw.write_log(&vec![b'x'; MAX_PAYLOAD + 1]).is_err());
        fw.end_log(true, 1, "").unwrap();
        assert!(fw.end_log(true, 1, "").is_err());
        assert!(fw.write_log(b"late\n").is_err());
        let mut fw = FrameWriter::new(Wire::default(), "t").unwrap();
        fw.write_chunk(b"dump").unwrap();
        assert!(fw.write_log(b"late\n").is_err());
        assert!(fw.end_log(true, 0, "").is_err());
    }

    /// A byte link that fails after `left` bytes.
    struct Breaks(usize);
    impl ByteWrite for Breaks {
        fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
            if b.len() > self.0 {
                self.0 = 0;
                return Err(SinkError::Io("link broke"));
            }
            self.0 -= b.len();
            Ok(())
        }
    }

    #[test]
    fn log_framer_stops_at_the_first_error() {
        let mut fw = FrameWriter::new(Breaks(20_000), "t").unwrap();
        let mut lf = LogFramer::new(&mut fw);
        let line = [b'y'; 1000];
        let mut errors = 0;
        for _ in 0..40 {
            if lf.log_text(&line).is_err() {
                errors += 1;
            }
        }
        // The first full frame (16 KiB) went out, the second broke the link.
        assert_eq!(errors, 40 - 32);
        assert_eq!(lf.error(), Some(&SinkError::Io("link broke")));
        let done = LogOutcome { complete: true, records: 40, reason: String::new() };
        assert!(lf.finish(&done).is_err());
        assert_eq!(fw.log_bytes(), MAX_PAYLOAD as u64);
    }

    /// The LOG and LOG_END examples of docs/serial-framing.md, byte for byte.
    #[test]
    fn documented_log_frames() {
        let mut fw = FrameWriter::new(Wire::default(), "lifeboat 0.1.0 x86_64").unwrap();
        fw.inner_mut().0.clear();
        let mut lf = LogFramer::new(&mut fw);
        lf.log_text(b"[    0.000000] Linux version 6.1.0\n").unwrap();
        lf.log_text(b"[    5.123456] sysrq: Trigger a crash\n").unwrap();
        lf.finish(&LogOutcome { complete: true, records: 2, reason: String::new() }).unwrap();
        let w = &fw.inner_mut().0;
        let log = hex("00 4c 42 46 06 01 00 00 01 00 00 00 49 00 00 00
            00 00 00 00 00 00 00 00")
        .into_iter()
        .chain(b"[    0.000000] Linux version 6.1.0\n[    5.123456] sysrq: Trigger a crash\n".iter().copied())
        .chain(hex("4f 0c 20 28"))
        .collect::<Vec<u8>>();
        let end = hex("00 4c 42 46 07 01 00 00 02 00 00 00 08 00 00 00
            49 00 00 00 00 00 00 00 01 00 00 00 02 00 00 00 2a 94 a1 66");
        assert_eq!(w[..log.len()], log[..]);
        assert_eq!(w[log.len()..], end[..]);
    }

    #[test]
    fn serial_scanner_drops_control_frames_as_corrupt() {
        let mut wire = b"text\n".to_vec();
        let hello_at = wire.len() as u64;
        wire.extend(control_frame(ControlKind::Hello, &hello_payload(1, &[("host", "h")])));
        let mut fw = FrameWriter::new(Wire(wire), "serial").unwrap();
        fw.write_chunk(b"abc").unwrap();
        let w = fw.finish(true, "").unwrap().0;
        let (_, frames, corrupt) = split(&scan(&w, 7));
        assert_eq!(corrupt, vec![hello_at]);
        let kinds: Vec<FrameKind> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [FrameKind::Start, FrameKind::Data, FrameKind::End]);
    }
}
