//! The network dump protocol, client side: the capture kernel sends its dump to a dump server
//! (`lifeboat serve`) over TCP.
//!
//! The specification, with a worked example, is `docs/net-protocol.md`. In short, on one
//! connection:
//!
//! 1. the client sends HELLO (who crashed, which attempt), the server answers REPLY: ACCEPT,
//!    or REFUSED (final: the caller tries its next sink);
//! 2. after ACCEPT the client sends exactly the serial stream (START, the crashed kernel's
//!    log as LOG frames and LOG_END, DATA…, END: [`FrameWriter`] over the connection), the
//!    server answers STORED or FAILED (final).
//!
//! A connection lost before STORED (refused, reset, timed out) is retried: [`send_dump`]
//! reconnects with backoff and **restarts the dump from the beginning**, until
//! [`RetryPolicy::wait_ms`] of trying to reach the server have passed.
//!
//! Nothing here knows about sockets: the capture kernel implements [`Connector`] and [`Conn`]
//! over its TCP stack, the host (`lifeboat_loader::netconn`) over `std::net`, and the tests
//! below over memory.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::dump::{DumpSummary, Verdict};
use crate::flat::FlatEncoder;
use crate::frame::{
    control_frame, hello_payload, ByteWrite, ControlKind, FrameReader, FrameWriter, LogFramer,
    LogOutcome, LogWrite, ReplyCode, ReplyInfo, WireKind, PROTOCOL_VERSION,
};
use crate::sink::{RecordSink, SinkError};

/// Longest wait for one TCP connect (capped by the time left of [`RetryPolicy::wait_ms`]).
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Wait before the first reconnection; doubled after every failure up to [`MAX_BACKOFF_MS`],
/// back to this after an ACCEPT.
pub const FIRST_BACKOFF_MS: u64 = 250;
pub const MAX_BACKOFF_MS: u64 = 4_000;
/// After a send error, how long to wait for a REPLY the server may have sent before closing
/// (capped by [`RetryPolicy::reply_timeout_ms`]).
pub const PENDING_REPLY_MS: u64 = 500;
/// Bytes collected before one [`Conn::send_all`].
pub const SEND_BUFFER: usize = 16 * 1024;
/// While sending the stream, look for an early REPLY (a server that gave up, e.g. on its
/// size limit) after every this many bytes.
pub const REPLY_CHECK_EVERY: u64 = 1 << 20;

/// Why a connection operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The server actively refused the connection (nothing listens on the port).
    Refused,
    /// Nothing happened within the time allowed.
    Timeout,
    /// The connection was reset or aborted.
    Reset,
    /// The connection is closed (the peer closed it, or it was closed here before).
    Closed,
    /// Anything else; the text says what.
    Io(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Refused => f.write_str("connection refused"),
            NetError::Timeout => f.write_str("timed out"),
            NetError::Reset => f.write_str("connection reset"),
            NetError::Closed => f.write_str("connection closed by the server"),
            NetError::Io(what) => f.write_str(what),
        }
    }
}

/// One TCP connection.
pub trait Conn {
    /// Sends all of `b`, or fails.
    fn send_all(&mut self, b: &[u8]) -> Result<(), NetError>;
    /// Receives what is there, waiting up to `timeout_ms` for the first byte (0: do not wait).
    /// `Ok(0)` means the peer closed the connection; nothing arriving in time is
    /// [`NetError::Timeout`].
    fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError>;
    /// Closes the connection (errors ignored).
    fn close(&mut self);
}

/// Makes connections to one server, and keeps time.
pub trait Connector {
    type Conn: Conn;
    fn connect(&mut self, timeout_ms: u64) -> Result<Self::Conn, NetError>;
    /// Milliseconds from any fixed point; never goes backwards.
    fn now_ms(&mut self) -> u64;
    fn sleep_ms(&mut self, ms: u64);
}

/// Who crashed: the HELLO fields (docs/net-protocol.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The crashed machine's host name (the server names the dump directory after it).
    pub host: String,
    /// The crashed kernel's release (`uname -r`).
    pub release: String,
    /// `uname -m`: `x86_64`, `aarch64`.
    pub machine: String,
    /// The crashed boot's `/proc/sys/kernel/random/boot_id`, or empty.
    pub boot_id: String,
    /// Crash time, seconds since the epoch (0: unknown).
    pub crash_time: i64,
    /// RAM to dump, bytes.
    pub ram_bytes: u64,
    /// Version of the sender (lifeboat's version).
    pub lifeboat: String,
}

impl Identity {
    /// The HELLO payload for this identity.
    pub fn hello_payload(&self, attempt: u32, probe: bool) -> Vec<u8> {
        let crash_time = self.crash_time.to_string();
        let ram = self.ram_bytes.to_string();
        let attempt = attempt.to_string();
        hello_payload(
            PROTOCOL_VERSION,
            &[
                ("host", &self.host),
                ("release", &self.release),
                ("machine", &self.machine),
                ("boot_id", &self.boot_id),
                ("crash_time", &crash_time),
                ("ram_bytes", &ram),
                ("attempt", &attempt),
                ("lifeboat", &self.lifeboat),
                ("probe", if probe { "1" } else { "0" }),
            ],
        )
    }

    /// The START frame's info string.
    fn start_info(&self) -> String {
        format!("lifeboat {} {} release={}", self.lifeboat, self.machine, self.release)
    }
}

/// How long [`send_dump`] keeps trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time spent *reaching* the server (connecting, waiting between attempts, waiting
    /// for ACCEPT), summed over all attempts; time spent sending the dump does not count.
    /// When it is used up, the sink fails.
    pub wait_ms: u64,
    /// Longest wait for each REPLY (ACCEPT after HELLO, STORED after END).
    pub reply_timeout_ms: u64,
}

/// How [`send_dump`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetOutcome {
    /// The server has the dump. `name` is its path relative to the server's dump directory.
    Stored { name: String, summary: DumpSummary, attempts: u32, stream_bytes: u64 },
    /// No dump on this server: refused, failed, or not reachable in time. `why` is for the
    /// console; `summary` is the last dump attempt's, if one ran.
    Failed { why: String, attempts: u32, summary: Option<DumpSummary> },
}

/// The connection as the frame writer's byte sink: buffers [`SEND_BUFFER`] bytes per send,
/// keeps the first send error (later writes fail at once), and notices a REPLY that arrives
/// while the stream is being sent.
struct Link<'c, C: Conn> {
    conn: &'c mut C,
    buf: Vec<u8>,
    /// Bytes handed to the connection so far.
    sent: u64,
    next_check: u64,
    error: Option<NetError>,
    /// A REPLY that arrived while sending (the server gave up early).
    early: Option<(ReplyCode, String)>,
    reader: FrameReader,
}

impl<'c, C: Conn> Link<'c, C> {
    fn new(conn: &'c mut C, reader: FrameReader) -> Self {
        Self {
            conn,
            buf: Vec::with_capacity(SEND_BUFFER),
            sent: 0,
            next_check: REPLY_CHECK_EVERY,
            error: None,
            early: None,
            reader,
        }
    }

    fn broken(&self) -> bool {
        self.error.is_some() || self.early.is_some()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.broken() {
            return Err(SinkError::Io("connection to the dump server lost"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.conn.send_all(&self.buf) {
            self.error = Some(e);
            return Err(SinkError::Io("connection to the dump server lost"));
        }
        self.sent += self.buf.len() as u64;
        self.buf.clear();
        if self.sent >= self.next_check {
            self.next_check = self.sent + REPLY_CHECK_EVERY;
            self.poll_reply();
            if self.broken() {
                return Err(SinkError::Io("the dump server stopped the transfer"));
            }
        }
        Ok(())
    }

    /// Takes a REPLY that is already there, without waiting.
    fn poll_reply(&mut self) {
        let mut b = [0u8; 512];
        match self.conn.recv(&mut b, 0) {
            Ok(0) => self.error = Some(NetError::Closed),
            Ok(n) => {
                self.reader.feed(&b[..n]);
                match next_reply(&mut self.reader) {
                    Ok(Some(r)) => self.early = Some(r),
                    Ok(None) => {}
                    Err(why) => self.early = Some((ReplyCode::Failed, why)),
                }
            }
            Err(NetError::Timeout) => {}
            Err(e) => self.error = Some(e),
        }
    }
}

impl<C: Conn> ByteWrite for &mut Link<'_, C> {
    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
        if self.broken() {
            return Err(SinkError::Io("connection to the dump server lost"));
        }
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SEND_BUFFER {
            self.flush()?;
        }
        Ok(())
    }
}

/// The next REPLY in `reader`: `Ok(None)` if incomplete; `Err` if the server sent something
/// that is not a well-formed REPLY.
fn next_reply(reader: &mut FrameReader) -> Result<Option<(ReplyCode, String)>, String> {
    match reader.next_frame() {
        Ok(None) => Ok(None),
        Ok(Some(f)) if f.kind == WireKind::Control(ControlKind::Reply) => {
            match ReplyInfo::parse(&f.payload) {
                Some(r) => Ok(Some((r.code, String::from_utf8_lossy(r.text).into_owned()))),
                None => Err(String::from("the server sent a malformed REPLY")),
            }
        }
        Ok(Some(f)) => Err(format!("the server sent a {} frame instead of a REPLY", f.kind)),
        Err(e) => Err(format!("the server's reply is garbled: {}", e)),
    }
}

/// What waiting for a REPLY gave.
enum Waited {
    Reply(ReplyCode, String),
    /// The connection failed (or timed out) first.
    Lost(NetError),
    /// The server sent something else: a protocol error, final.
    Garbled(String),
}

/// Waits up to `timeout_ms` (by `now`) for a REPLY.
fn wait_reply<C: Conn>(
    conn: &mut C,
    reader: &mut FrameReader,
    timeout_ms: u64,
    now: &mut dyn FnMut() -> u64,
) -> Waited {
    let deadline = now().saturating_add(timeout_ms);
    let mut b = [0u8; 512];
    loop {
        match next_reply(reader) {
            Ok(Some((code, text))) => return Waited::Reply(code, text),
            Ok(None) => {}
            Err(why) => return Waited::Garbled(why),
        }
        let left = deadline.saturating_sub(now());
        if left == 0 {
            return Waited::Lost(NetError::Timeout);
        }
        match conn.recv(&mut b, left) {
            Ok(0) => return Waited::Lost(NetError::Closed),
            Ok(n) => reader.feed(&b[..n]),
            Err(e) => return Waited::Lost(e),
        }
    }
}

/// `ms` for people: `750 ms`, `60 s`, `2.5 s`.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ms if ms < 1000 => write!(f, "{} ms", ms),
            ms if ms % 1000 == 0 => write!(f, "{} s", ms / 1000),
            ms => write!(f, "{}.{} s", ms / 1000, ms % 1000 / 100),
        }
    }
}

/// How one dump attempt over an accepted connection ended.
enum Attempt {
    Stored {
        name: String,
        stream_bytes: u64,
    },
    /// Final: the server said FAILED (or spoke garbage).
    Failed(String),
    /// The connection was lost; `at` is the flattened-stream offset the dump had reached, or
    /// with `in_log`, the byte of the kernel log.
    Lost {
        at: u64,
        in_log: bool,
        why: NetError,
    },
}

/// Sends the dump to the server behind `net`: connect, HELLO, ACCEPT, then the stream: START,
/// the crashed kernel's log as `kernel_log` writes it (LOG frames, then LOG_END with the
/// [`LogOutcome`] it returns), then the dump as `dump` writes records (FrameWriter over the
/// connection, FlatEncoder over that), then END with the dump's verdict, then waits for
/// STORED.
///
/// A connection lost before STORED is retried from the beginning (`kernel_log` and `dump` are
/// called again) with backoff, until `policy.wait_ms` of trying to reach the server have
/// passed. REFUSED and FAILED replies are final. `log` hears one line per event.
pub fn send_dump<N: Connector>(
    net: &mut N,
    id: &Identity,
    policy: &RetryPolicy,
    log: &mut dyn FnMut(fmt::Arguments<'_>),
    kernel_log: &mut dyn FnMut(&mut dyn LogWrite) -> LogOutcome,
    dump: &mut dyn FnMut(&mut dyn RecordSink) -> DumpSummary,
) -> NetOutcome {
    let mut attempts = 0u32;
    let mut summary: Option<DumpSummary> = None;
    // Time spent reaching the server in earlier phases, and when the current phase began.
    let mut reached_ms = 0u64;
    let mut phase_start = net.now_ms();
    let mut backoff = FIRST_BACKOFF_MS;
    // Wait before the next connect (0: connect at once).
    let mut pause = 0u64;
    let mut last_problem = String::from("no attempt made");
    loop {
        let spent = reached_ms + net.now_ms().saturating_sub(phase_start);
        let left = policy.wait_ms.saturating_sub(spent);
        if left == 0 {
            let why = format!(
                "dump server not reached within {} ({} connection(s) made; last problem: {})",
                Ms(policy.wait_ms),
                attempts,
                last_problem
            );
            log(format_args!("{}", why));
            return NetOutcome::Failed { why, attempts, summary };
        }
        if pause > 0 {
            net.sleep_ms(pause.min(left));
            pause = 0;
            continue; // re-check the time left
        }
        // If this connection does not get as far as ACCEPT, wait before the next one.
        pause = backoff;
        backoff = (backoff * 2).min(MAX_BACKOFF_MS);
        let mut conn = match net.connect(left.min(CONNECT_TIMEOUT_MS)) {
            Ok(c) => c,
            Err(e) => {
                log(format_args!("cannot connect to the dump server: {}", e));
                last_problem = e.to_string();
                continue;
            }
        };
        attempts += 1;
        log(format_args!("connected to the dump server (attempt {})", attempts));
        let mut reader = FrameReader::new();
        let hello = control_frame(ControlKind::Hello, &id.hello_payload(attempts, false));
        let waited = match conn.send_all(&hello) {
            Ok(()) => {
                wait_reply(&mut conn, &mut reader, policy.reply_timeout_ms, &mut || net.now_ms())
            }
            Err(e) => Waited::Lost(e),
        };
        match waited {
            Waited::Reply(ReplyCode::Accept, text) => {
                log(format_args!("accepted by the dump server: {}", text));
            }
            Waited::Reply(ReplyCode::Refused, text) => {
                conn.close();
                let why = format!("the dump server refused the dump: {}", text);
                log(format_args!("{}", why));
                return NetOutcome::Failed { why, attempts, summary };
            }
            Waited::Reply(code, text) => {
                conn.close();
                let why = format!("the dump server answered HELLO with {}: {}", code, text);
                log(format_args!("{}", why));
                return NetOutcome::Failed { why, attempts, summary };
            }
            Waited::Garbled(why) => {
                conn.close();
                log(format_args!("{}", why));
                return NetOutcome::Failed { why, attempts, summary };
            }
            Waited::Lost(e) => {
                conn.close();
                log(format_args!("no ACCEPT from the dump server: {}; reconnecting", e));
                last_problem = format!("waiting for ACCEPT: {}", e);
                continue;
            }
        }
        reached_ms += net.now_ms().saturating_sub(phase_start);
        backoff = FIRST_BACKOFF_MS;
        let (attempt, s) = stream_dump(net, &mut conn, reader, id, policy, kernel_log, dump);
        conn.close();
        summary = Some(s);
        match attempt {
            Attempt::Stored { name, stream_bytes } => {
                log(format_args!("stored by the dump server as {}", name));
                let summary = summary.expect("set above");
                return NetOutcome::Stored { name, summary, attempts, stream_bytes };
            }
            Attempt::Failed(why) => {
                log(format_args!("{}", why));
                return NetOutcome::Failed { why, attempts, summary };
            }
            Attempt::Lost { at, in_log, why } => {
                let place = if in_log {
                    format!("at kernel log byte {}", at)
                } else {
                    format!("at stream offset {}", at)
                };
                log(format_args!(
                    "lost the connection {} ({}); restarting the dump",
                    place, why
                ));
                last_problem = format!("connection lost {}: {}", place, why);
                phase_start = net.now_ms();
                pause = 0; // the server may be back already: reconnect at once
            }
        }
    }
}

/// Sends the kernel log and one whole dump over an accepted connection and waits for the
/// verdict.
fn stream_dump<N: Connector>(
    net: &mut N,
    conn: &mut N::Conn,
    reader: FrameReader,
    id: &Identity,
    policy: &RetryPolicy,
    kernel_log: &mut dyn FnMut(&mut dyn LogWrite) -> LogOutcome,
    dump: &mut dyn FnMut(&mut dyn RecordSink) -> DumpSummary,
) -> (Attempt, DumpSummary) {
    let mut link = Link::new(conn, reader);
    let mut stream_bytes = 0;
    // Kernel log bytes framed, while the log was not finished.
    let mut in_log = None;
    let summary = match FrameWriter::new(&mut link, &id.start_info()) {
        Ok(mut fw) => {
            let mut framer = LogFramer::new(&mut fw);
            let outcome = kernel_log(&mut framer);
            if framer.finish(&outcome).is_err() {
                in_log = Some(fw.log_bytes());
            }
            // After a failed log the link is broken: FlatEncoder::new fails at once.
            let summary = match FlatEncoder::new(&mut fw) {
                Ok(mut enc) => {
                    let s = dump(&mut enc);
                    let _ = enc.finish();
                    s
                }
                Err(_) => not_run(),
            };
            stream_bytes = fw.stream_bytes();
            let (complete, reason) = match &summary.verdict {
                Verdict::Complete => (true, ""),
                Verdict::Incomplete(why) => (false, why.as_str()),
            };
            let _ = fw.finish(complete, reason);
            summary
        }
        Err(_) => not_run(),
    };
    let _ = link.flush();
    let mut attempt = finish_attempt(net, &mut link, policy, stream_bytes);
    if let (Attempt::Lost { at, in_log: lost_in_log, .. }, Some(n)) = (&mut attempt, in_log) {
        *at = n;
        *lost_in_log = true;
    }
    (attempt, summary)
}

/// After END: the server's verdict, or why there is none.
fn finish_attempt<N: Connector, C: Conn>(
    net: &mut N,
    link: &mut Link<'_, C>,
    policy: &RetryPolicy,
    stream_bytes: u64,
) -> Attempt {
    if let Some((code, text)) = link.early.take() {
        return match code {
            ReplyCode::Failed => {
                Attempt::Failed(format!("the dump server failed the dump: {}", text))
            }
            code => Attempt::Failed(format!(
                "the dump server answered {} in the middle of the stream: {}",
                code, text
            )),
        };
    }
    let timeout = match &link.error {
        // Sending failed: a REPLY the server sent before closing says why; read it quickly.
        Some(_) => PENDING_REPLY_MS.min(policy.reply_timeout_ms),
        None => policy.reply_timeout_ms,
    };
    let waited = wait_reply(link.conn, &mut link.reader, timeout, &mut || net.now_ms());
    match (waited, link.error.take()) {
        (Waited::Reply(ReplyCode::Stored, name), None) => Attempt::Stored { name, stream_bytes },
        (Waited::Reply(ReplyCode::Failed, text), _) => {
            Attempt::Failed(format!("the dump server failed the dump: {}", text))
        }
        (Waited::Reply(code, text), _) => Attempt::Failed(format!(
            "the dump server answered {} instead of STORED: {}",
            code, text
        )),
        (Waited::Garbled(why), _) => Attempt::Failed(why),
        (Waited::Lost(_), Some(send_error)) => {
            Attempt::Lost { at: stream_bytes, in_log: false, why: send_error }
        }
        (Waited::Lost(e), None) => Attempt::Lost { at: stream_bytes, in_log: false, why: e },
    }
}

/// The summary of a dump that could not even start (the connection failed during START).
fn not_run() -> DumpSummary {
    DumpSummary {
        pages_total: 0,
        pages_zero: 0,
        pages_compressed: 0,
        pages_raw: 0,
        pages_unreadable: 0,
        ram_bytes: 0,
        file_bytes: 0,
        verdict: Verdict::Incomplete(String::from("the connection failed before the dump began")),
    }
}

/// Asks the server behind `conn` whether it would take a dump (HELLO with `probe=1`): its
/// banner (version, free space), or why not. The server creates nothing. `timeout_ms`
/// bounds each wait for bytes.
pub fn probe<C: Conn>(conn: &mut C, id: &Identity, timeout_ms: u64) -> Result<String, String> {
    let hello = control_frame(ControlKind::Hello, &id.hello_payload(1, true));
    conn.send_all(&hello).map_err(|e| format!("sending HELLO: {}", e))?;
    let mut reader = FrameReader::new();
    let waited = wait_reply(conn, &mut reader, timeout_ms, &mut || 0);
    conn.close();
    match waited {
        Waited::Reply(ReplyCode::ProbeOk, banner) => Ok(banner),
        Waited::Reply(ReplyCode::Refused, why) => Err(format!("the dump server refuses: {}", why)),
        Waited::Reply(code, text) => Err(format!("unexpected {} reply to a probe: {}", code, text)),
        Waited::Garbled(why) => Err(why),
        Waited::Lost(e) => Err(format!("no reply to the probe: {}", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::{FlatDecoder, FlatItem};
    use crate::frame::{reply_payload, EndInfo, FrameKind, HelloInfo, LogEndInfo, StartInfo};
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// What the scripted server does on one connection.
    #[derive(Clone, Debug)]
    enum Script {
        /// The connection attempt fails.
        NoConnect(NetError),
        /// ACCEPT, receive everything, STORED after a good END.
        Store,
        /// REFUSED at HELLO.
        Refuse(&'static str),
        /// ACCEPT, then the connection resets after this many stream bytes.
        ResetAfter(u64),
        /// ACCEPT, then the connection resets after this many kernel log bytes.
        ResetInLog(u64),
        /// ACCEPT, then after this many stream bytes FAILED and a reset.
        FailAfter(u64, &'static str),
        /// ACCEPT, then after this many stream bytes FAILED, but keep reading (draining).
        FailQuietly(u64, &'static str),
        /// ACCEPT, then never answer END.
        Silent,
        /// PROBE_OK to a probe.
        Probe(&'static str),
    }

    /// What one connection carried.
    #[derive(Default)]
    struct Seen {
        hello: Vec<u8>,
        frames: Vec<(FrameKind, u32, u64, Vec<u8>)>,
        stream_bytes: u64,
        /// LOG payloads, concatenated.
        log: Vec<u8>,
        closed: bool,
    }

    struct MemConn {
        script: Script,
        clock: Rc<Cell<u64>>,
        seen: Rc<RefCell<Seen>>,
        reader: FrameReader,
        to_client: Vec<u8>,
        dead: bool,
    }

    impl MemConn {
        fn reply(&mut self, code: ReplyCode, text: &str) {
            self.to_client
                .extend_from_slice(&control_frame(ControlKind::Reply, &reply_payload(code, text)));
        }
    }

    impl Conn for MemConn {
        fn send_all(&mut self, b: &[u8]) -> Result<(), NetError> {
            if self.dead {
                return Err(NetError::Reset);
            }
            self.reader.feed(b);
            while let Some(f) = self.reader.next_frame().expect("client sent a bad frame") {
                let mut seen = self.seen.borrow_mut();
                match f.kind {
                    WireKind::Control(ControlKind::Hello) => {
                        seen.hello = f.payload.clone();
                        drop(seen);
                        match self.script.clone() {
                            Script::Refuse(why) => self.reply(ReplyCode::Refused, why),
                            Script::Probe(banner) => self.reply(ReplyCode::ProbeOk, banner),
                            _ => self.reply(ReplyCode::Accept, "test server"),
                        }
                    }
                    WireKind::Control(ControlKind::Reply) => panic!("client sent a REPLY"),
                    WireKind::Stream(kind) => {
                        if kind == FrameKind::Data {
                            seen.stream_bytes += f.payload.len() as u64;
                        }
                        if kind == FrameKind::Log {
                            seen.log.extend_from_slice(&f.payload);
                        }
                        let n = seen.stream_bytes;
                        let log_bytes = seen.log.len() as u64;
                        seen.frames.push((kind, f.seq, f.offset, f.payload));
                        drop(seen);
                        match self.script.clone() {
                            Script::ResetInLog(limit) if log_bytes >= limit => {
                                self.dead = true;
                                return Err(NetError::Reset);
                            }
                            Script::ResetAfter(limit) if n >= limit => {
                                self.dead = true;
                                return Err(NetError::Reset);
                            }
                            Script::FailAfter(limit, why) if n >= limit => {
                                self.reply(ReplyCode::Failed, why);
                                self.dead = true;
                                return Err(NetError::Reset);
                            }
                            Script::FailQuietly(limit, why) if n >= limit => {
                                self.reply(ReplyCode::Failed, why);
                                self.script = Script::Silent;
                            }
                            Script::Store if kind == FrameKind::End => {
                                self.reply(ReplyCode::Stored, "host-20261124-170458/vmcore")
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        }

        fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError> {
            if !self.to_client.is_empty() {
                let n = buf.len().min(self.to_client.len());
                buf[..n].copy_from_slice(&self.to_client[..n]);
                self.to_client.drain(..n);
                return Ok(n);
            }
            if self.dead {
                return Err(NetError::Reset);
            }
            self.clock.set(self.clock.get() + timeout_ms);
            Err(NetError::Timeout)
        }

        fn close(&mut self) {
            self.seen.borrow_mut().closed = true;
        }
    }

    struct MemNet {
        script: VecDeque<Script>,
        clock: Rc<Cell<u64>>,
        sleeps: Vec<u64>,
        conns: Vec<Rc<RefCell<Seen>>>,
    }

    impl MemNet {
        fn new(script: &[Script]) -> Self {
            Self {
                script: script.iter().cloned().collect(),
                clock: Rc::new(Cell::new(1_000_000)),
                sleeps: Vec::new(),
                conns: Vec::new(),
            }
        }
    }

    impl Connector for MemNet {
        type Conn = MemConn;
        fn connect(&mut self, timeout_ms: u64) -> Result<MemConn, NetError> {
            let script = self.script.pop_front().unwrap_or(Script::NoConnect(NetError::Refused));
            match script {
                Script::NoConnect(e) => {
                    let t = if e == NetError::Timeout { timeout_ms } else { 1 };
                    self.clock.set(self.clock.get() + t);
                    Err(e)
                }
                script => {
                    let seen = Rc::new(RefCell::new(Seen::default()));
                    self.conns.push(seen.clone());
                    Ok(MemConn {
                        script,
                        clock: self.clock.clone(),
                        seen,
                        reader: FrameReader::new(),
                        to_client: Vec::new(),
                        dead: false,
                    })
                }
            }
        }
        fn now_ms(&mut self) -> u64 {
            self.clock.get()
        }
        fn sleep_ms(&mut self, ms: u64) {
            self.sleeps.push(ms);
            self.clock.set(self.clock.get() + ms);
        }
    }

    fn identity() -> Identity {
        Identity {
            host: "web-01".into(),
            release: "6.1.0-test".into(),
            machine: "x86_64".into(),
            boot_id: "0f1e2d3c-aaaa".into(),
            crash_time: 1_795_000_000,
            ram_bytes: 1 << 30,
            lifeboat: "0.1.0".into(),
        }
    }

    const POLICY: RetryPolicy = RetryPolicy { wait_ms: 10_000, reply_timeout_ms: 2_000 };

    /// A fake dump of `records` records of 10000 bytes, stopping at the first sink error like
    /// `write_kdump`.
    struct FakeDump {
        records: u64,
        verdict: Verdict,
        calls: u32,
    }

    impl FakeDump {
        fn new(records: u64) -> Self {
            Self { records, verdict: Verdict::Complete, calls: 0 }
        }
        fn bytes(i: u64) -> Vec<u8> {
            (0..10_000u64).map(|j| (i * 7 + j % 251) as u8).collect()
        }
        fn run(&mut self, sink: &mut dyn RecordSink) -> DumpSummary {
            self.calls += 1;
            let mut done = 0;
            let mut verdict = self.verdict.clone();
            for i in 0..self.records {
                if let Err(e) = sink.record(i * 10_000, &Self::bytes(i)) {
                    verdict = Verdict::Incomplete(format!("{}", e));
                    break;
                }
                done += 10_000;
            }
            DumpSummary {
                pages_total: 0,
                pages_zero: 0,
                pages_compressed: 0,
                pages_raw: 0,
                pages_unreadable: 0,
                ram_bytes: 0,
                file_bytes: done,
                verdict,
            }
        }
    }

    struct Run {
        outcome: NetOutcome,
        net: MemNet,
        log: Vec<String>,
        dump: FakeDump,
    }

    fn run(script: &[Script], records: u64, policy: RetryPolicy) -> Run {
        run_with(script, FakeDump::new(records), policy)
    }

    /// The crashed kernel's log the fake capture kernel sends: 2000 records, about 90 KiB
    /// (six LOG frames).
    fn kernel_log() -> Vec<u8> {
        (0..2000)
            .flat_map(|i| format!("[{:5}.{:06}] record {} {}\n", i / 100, i, i, "z".repeat(i % 64)).into_bytes())
            .collect()
    }

    fn send_log(out: &mut dyn LogWrite) -> LogOutcome {
        let log = kernel_log();
        let mut records = 0;
        for line in log.split_inclusive(|&b| b == b'\n') {
            if out.log_text(line).is_err() {
                return LogOutcome { complete: false, records, reason: "link lost".into() };
            }
            records += 1;
        }
        LogOutcome { complete: true, records, reason: String::new() }
    }

    fn run_with(script: &[Script], mut dump: FakeDump, policy: RetryPolicy) -> Run {
        let mut net = MemNet::new(script);
        let mut log = Vec::new();
        let outcome = send_dump(
            &mut net,
            &identity(),
            &policy,
            &mut |a| log.push(a.to_string()),
            &mut send_log,
            &mut |sink| dump.run(sink),
        );
        Run { outcome, net, log, dump }
    }

    /// Checks that a connection carried one whole, well-formed stream of `records` records,
    /// and returns its END.
    fn check_stream(seen: &Seen, records: u64) -> (bool, Vec<u8>) {
        let f = &seen.frames;
        assert_eq!((f[0].0, f[0].1, f[0].2), (FrameKind::Start, 0, 0));
        let start = StartInfo::parse(&f[0].3).unwrap();
        assert_eq!(start.info, b"lifeboat 0.1.0 x86_64 release=6.1.0-test");
        // The whole kernel log, then LOG_END, before the first DATA frame.
        let mut log = Vec::new();
        let mut i = 1;
        while f[i].0 == FrameKind::Log {
            assert_eq!((f[i].1, f[i].2), (i as u32, log.len() as u64));
            log.extend_from_slice(&f[i].3);
            i += 1;
        }
        assert!(log == kernel_log(), "the log arrived changed");
        assert_eq!((f[i].0, f[i].1), (FrameKind::LogEnd, i as u32));
        let le = LogEndInfo::parse(f[i].2, &f[i].3).unwrap();
        assert_eq!((le.complete, le.records, le.log_bytes), (true, 2000, log.len() as u64));
        let first_data = i + 1;
        let mut dec = FlatDecoder::new();
        let mut file = vec![0u8; (records * 10_000) as usize];
        let mut offset = 0;
        for (i, (kind, seq, off, payload)) in f[first_data..f.len() - 1].iter().enumerate() {
            let seq_want = (first_data + i) as u32;
            assert_eq!((*kind, *seq, *off), (FrameKind::Data, seq_want, offset));
            offset += payload.len() as u64;
            let mut input = &payload[..];
            while let Some(item) = dec.next(&mut input).unwrap() {
                if let FlatItem::Data { offset, data } = item {
                    file[offset as usize..offset as usize + data.len()].copy_from_slice(data);
                }
            }
        }
        assert!(dec.is_ended());
        let expect: Vec<u8> = (0..records).flat_map(FakeDump::bytes).collect();
        assert!(file == expect, "the stream does not rebuild the dump");
        let last = f.last().unwrap();
        assert_eq!(last.0, FrameKind::End);
        let end = EndInfo::parse(last.2, &last.3).unwrap();
        assert_eq!(end.stream_bytes, offset);
        assert_eq!(end.data_frames as usize, f.len() - 1 - first_data);
        (end.complete, end.reason.to_vec())
    }

    fn hello(seen: &Seen, key: &str) -> String {
        let h = HelloInfo::parse(&seen.hello).unwrap();
        assert_eq!(h.version, PROTOCOL_VERSION);
        String::from_utf8(h.get(key).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn stored_at_first_attempt() {
        let r = run(&[Script::Store], 30, POLICY);
        match &r.outcome {
            NetOutcome::Stored { name, summary, attempts, stream_bytes } => {
                assert_eq!(name, "host-20261124-170458/vmcore");
                assert_eq!((*attempts, summary.file_bytes), (1, 300_000));
                assert_eq!(*stream_bytes, r.net.conns[0].borrow().stream_bytes);
            }
            o => panic!("{:?}", o),
        }
        let seen = r.net.conns[0].borrow();
        assert_eq!(check_stream(&seen, 30), (true, vec![]));
        assert!(seen.closed);
        for (k, v) in [
            ("host", "web-01"),
            ("release", "6.1.0-test"),
            ("machine", "x86_64"),
            ("boot_id", "0f1e2d3c-aaaa"),
            ("crash_time", "1795000000"),
            ("ram_bytes", "1073741824"),
            ("attempt", "1"),
            ("lifeboat", "0.1.0"),
            ("probe", "0"),
        ] {
            assert_eq!(hello(&seen, k), v);
        }
        assert_eq!(
            r.log,
            [
                "connected to the dump server (attempt 1)",
                "accepted by the dump server: test server",
                "stored by the dump server as host-20261124-170458/vmcore",
            ]
        );
        assert!(r.net.sleeps.is_empty());
    }

    #[test]
    fn connect_failures_back_off_then_store() {
        let r = run(
            &[
                Script::NoConnect(NetError::Refused),
                Script::NoConnect(NetError::Timeout),
                Script::NoConnect(NetError::Refused),
                Script::Store,
            ],
            3,
            POLICY,
        );
        assert!(matches!(r.outcome, NetOutcome::Stored { attempts: 1, .. }), "{:?}", r.outcome);
        assert_eq!(r.net.sleeps, [250, 500, 1000]);
        assert_eq!(r.log[0], "cannot connect to the dump server: connection refused");
        assert_eq!(r.log[1], "cannot connect to the dump server: timed out");
        assert_eq!(hello(&r.net.conns[0].borrow(), "attempt"), "1");
    }

    #[test]
    fn lost_connection_restarts_the_dump_from_the_beginning() {
        let r = run(&[Script::ResetAfter(60_000), Script::Store], 30, POLICY);
        assert!(matches!(r.outcome, NetOutcome::Stored { attempts: 2, .. }), "{:?}", r.outcome);
        assert_eq!(r.dump.calls, 2);
        assert_eq!(r.net.conns.len(), 2);
        let first = r.net.conns[0].borrow();
        assert!(first.frames.last().unwrap().0 == FrameKind::Data);
        assert_eq!(hello(&r.net.conns[1].borrow(), "attempt"), "2");
        check_stream(&r.net.conns[1].borrow(), 30);
        let lost = r.log.iter().find(|l| l.starts_with("lost the connection")).unwrap();
        assert!(lost.ends_with("(connection reset); restarting the dump"), "{}", lost);
        assert!(r.net.sleeps.is_empty(), "the first reconnection is immediate");
    }

    #[test]
    fn connection_lost_during_the_log_resends_the_whole_log() {
        let r = run(&[Script::ResetInLog(40_000), Script::Store], 5, POLICY);
        assert!(matches!(r.outcome, NetOutcome::Stored { attempts: 2, .. }), "{:?}", r.outcome);
        let first = r.net.conns[0].borrow();
        // The first connection broke in the middle of the log: no LOG_END, no DATA.
        assert!(first.log.len() >= 40_000 && first.log.len() < kernel_log().len());
        assert!(first.frames.iter().all(|f| matches!(f.0, FrameKind::Start | FrameKind::Log)));
        // The dump did not even start on it.
        assert_eq!(r.dump.calls, 1);
        // The second carried the whole log from byte 0, then the dump.
        check_stream(&r.net.conns[1].borrow(), 5);
        let lost = r.log.iter().find(|l| l.starts_with("lost the connection")).unwrap();
        assert!(
            lost.starts_with("lost the connection at kernel log byte ")
                && lost.ends_with("(connection reset); restarting the dump"),
            "{}",
            lost
        );
    }

    #[test]
    fn refused_is_final() {
        let r = run(&[Script::Refuse("only 1 GiB free, reserve 2 GiB"), Script::Store], 3, POLICY);
        match &r.outcome {
            NetOutcome::Failed { why, attempts: 1, summary: None } => {
                assert_eq!(why, "the dump server refused the dump: only 1 GiB free, reserve 2 GiB")
            }
            o => panic!("{:?}", o),
        }
        assert_eq!(r.net.script.len(), 1, "no reconnection after REFUSED");
        assert_eq!(r.dump.calls, 0);
    }

    #[test]
    fn failed_reason_is_read_after_a_send_error() {
        let r = run(&[Script::FailAfter(60_000, "dump larger than --max-size 64 KiB")], 30, POLICY);
        match &r.outcome {
            NetOutcome::Failed { why, attempts: 1, summary: Some(s) } => {
                assert_eq!(
                    why,
                    "the dump server failed the dump: dump larger than --max-size 64 KiB"
                );
                assert!(matches!(s.verdict, Verdict::Incomplete(_)));
            }
            o => panic!("{:?}", o),
        }
        assert_eq!(r.net.conns.len(), 1);
    }

    #[test]
    fn early_failed_is_noticed_while_sending() {
        let r = run(&[Script::FailQuietly(100_000, "free space below the reserve")], 600, POLICY);
        match &r.outcome {
            NetOutcome::Failed { why, .. } => {
                assert!(why.ends_with("free space below the reserve"), "{}", why)
            }
            o => panic!("{:?}", o),
        }
        // Noticed at the next check, long before the 6 MB dump was sent.
        let sent = r.net.conns[0].borrow().stream_bytes;
        assert!(sent <= REPLY_CHECK_EVERY + 2 * SEND_BUFFER as u64, "{}", sent);
    }

    #[test]
    fn silent_server_times_out_and_the_dump_is_retried() {
        let r = run(&[Script::Silent, Script::Store], 3, POLICY);
        assert!(matches!(r.outcome, NetOutcome::Stored { attempts: 2, .. }), "{:?}", r.outcome);
        assert!(r.log.iter().any(|l| l.contains("(timed out); restarting")), "{:?}", r.log);
    }

    #[test]
    fn gives_up_when_wait_is_used_up() {
        let policy = RetryPolicy { wait_ms: 3_000, reply_timeout_ms: 1_000 };
        let r = run(&[], 3, policy);
        match &r.outcome {
            NetOutcome::Failed { why, attempts: 0, summary: None } => assert_eq!(
                why,
                "dump server not reached within 3 s (0 connection(s) made; last problem: \
                 connection refused)"
            ),
            o => panic!("{:?}", o),
        }
        assert_eq!(r.net.sleeps, [250, 500, 1000, 1246]);
    }

    #[test]
    fn incomplete_verdict_goes_into_end() {
        let mut dump = FakeDump::new(2);
        dump.verdict = Verdict::Incomplete("2 of 256 pages unreadable".into());
        let r = run_with(&[Script::Store], dump, POLICY);
        assert!(matches!(r.outcome, NetOutcome::Stored { .. }));
        let end = check_stream(&r.net.conns[0].borrow(), 2);
        assert_eq!(end, (false, b"2 of 256 pages unreadable".to_vec()));
    }

    #[test]
    fn probe_gets_the_banner() {
        let mut net = MemNet::new(&[Script::Probe("lifeboat 0.1.0 dump server, 12 GiB free")]);
        let mut conn = net.connect(1000).unwrap();
        assert_eq!(
            probe(&mut conn, &identity(), 1000),
            Ok("lifeboat 0.1.0 dump server, 12 GiB free".into())
        );
        assert_eq!(hello(&net.conns[0].borrow(), "probe"), "1");
        let mut net = MemNet::new(&[Script::Silent]);
        let mut conn = net.connect(1000).unwrap();
        assert_eq!(
            probe(&mut conn, &identity(), 1000),
            Err("unexpected ACCEPT reply to a probe: test server".into())
        );
    }

    #[test]
    fn hello_values_cannot_break_lines() {
        let mut id = identity();
        id.host = "evil\nprobe=1\r".into();
        let p = id.hello_payload(1, false);
        let h = HelloInfo::parse(&p).unwrap();
        assert_eq!(h.get("host"), Some(&b"evil probe=1 "[..]));
        assert_eq!(h.get("probe"), Some(&b"0"[..]));
    }
}
