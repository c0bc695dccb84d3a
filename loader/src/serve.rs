//! `lifeboat serve`: the dump server of the network protocol (`docs/net-protocol.md`).
//!
//! Capture kernels connect over TCP, say HELLO, and (once accepted) send the same frame stream
//! as over serial. Each accepted dump gets its own directory `<dir>/<host>-<UTC>/` (0700):
//!
//! | file | what |
//! |---|---|
//! | `.vmcore.partial` | the dump while it arrives (records written at their offsets) |
//! | `vmcore` | a dump whose every frame arrived intact (the capture kernel's verdict is in `lifeboat.txt`) |
//! | `vmcore.incomplete` | a transfer that failed or was cut off; the kdump header's `DUMP_DH_COMPRESSED_INCOMPLETE` bit is set |
//! | `lifeboat.txt` | who sent it, when, how many bytes, and the verdict or why it is incomplete |
//! | `.dmesg.txt.partial` | the crashed kernel's log while its LOG frames arrive |
//! | `dmesg.txt` | the crashed kernel's whole log: written (and fsynced) as soon as the LOG_END frame says it is whole, before the dump arrives; otherwise, after STORED, from the stored dump ([`extract_dmesg`]) |
//! | `dmesg.txt.incomplete` | the part of the log that arrived when the log was cut off (connection lost, or the capture kernel could not read all of it) |
//!
//! One thread per connection (std only). Integrity is checked strictly: every frame's CRC,
//! contiguous sequence numbers and stream offsets, END's frame count and byte total, and a
//! well-formed flattened stream. A TCP connection loses nothing silently, so any failure ends
//! the transfer (REPLY FAILED) instead of leaving holes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lifeboat_capture::cmdline::memparse;
use lifeboat_capture::flat::{FlatDecoder, FlatItem};
use lifeboat_capture::frame::{
    control_frame, reply_payload, ControlKind, EndInfo, FrameKind, FrameReader, HelloInfo,
    LogEndInfo, ReplyCode, StartInfo, WireError, WireFrame, WireKind, PROTOCOL_VERSION,
    STREAM_FLATTENED_KDUMP,
};
use lifeboat_capture::kdump::{DUMP_DH_COMPRESSED_INCOMPLETE, KDUMP_SIGNATURE};

use crate::receive::{printable, STATUS_OFFSET};
use crate::state::utc;

/// Default `--reserve`: free space the server always leaves on the file system.
pub const DEFAULT_RESERVE: u64 = 256 << 20;
/// Default `--max-clients`: dumps received at the same time.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Free space is checked again after every this many dump bytes written.
pub const FREE_CHECK_EVERY: u64 = 1 << 20;
/// Connections still saying HELLO beyond `max_clients` that are tolerated; more are closed
/// at once.
const EXTRA_CONNECTIONS: usize = 16;
/// How often blocked reads wake up to check for stop, kill, idle and progress.
const POLL: Duration = Duration::from_millis(100);
/// After REPLY FAILED, read and discard what the client still sends for at most this long
/// before closing, so the reply is not destroyed by a TCP reset.
const DRAIN: Duration = Duration::from_secs(2);
/// Longest host part of a dump directory name.
pub const MAX_HOST_NAME: usize = 64;
/// Names of the files in a dump directory.
pub const PARTIAL_NAME: &str = ".vmcore.partial";
pub const COMPLETE_NAME: &str = "vmcore";
pub const INCOMPLETE_NAME: &str = "vmcore.incomplete";
pub const INFO_NAME: &str = "lifeboat.txt";
pub const DMESG_NAME: &str = "dmesg.txt";
pub const DMESG_PARTIAL_NAME: &str = ".dmesg.txt.partial";
pub const DMESG_INCOMPLETE_NAME: &str = "dmesg.txt.incomplete";

/// Where log lines go.
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;
/// Free bytes available to this user on the file system holding a directory.
pub type FreeSpaceFn = Arc<dyn Fn(&Path) -> io::Result<u64> + Send + Sync>;

/// How the server runs. [`ServeConfig::new`] gives the defaults of `lifeboat serve`.
#[derive(Clone)]
pub struct ServeConfig {
    /// Dump directories are created here.
    pub dir: PathBuf,
    /// Largest dump file accepted (bytes); `None`: no limit.
    pub max_size: Option<u64>,
    /// Dumps are refused (at HELLO) or failed (while receiving) when free space is below this.
    pub reserve: u64,
    /// Dumps received at the same time; more are REFUSED.
    pub max_clients: usize,
    /// Progress line per client this often.
    pub progress_every: Duration,
    /// A client that sends nothing for this long has lost its connection.
    pub idle_timeout: Duration,
    /// A client must say HELLO within this.
    pub hello_timeout: Duration,
    pub log: LogFn,
    /// Measures free space (default [`statvfs_free`]; tests replace it).
    pub free_space: FreeSpaceFn,
    /// For tests: when set, behave like a killed process: every connection is dropped at once
    /// and no file is touched any more (`.vmcore.partial` files stay behind), and
    /// [`run_server`] returns.
    pub kill: Arc<AtomicBool>,
}

impl ServeConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_size: None,
            reserve: DEFAULT_RESERVE,
            max_clients: DEFAULT_MAX_CLIENTS,
            progress_every: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            hello_timeout: Duration::from_secs(10),
            log: Arc::new(|line| eprintln!("lifeboat serve: {line}")),
            free_space: Arc::new(statvfs_free),
            kill: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Free bytes for unprivileged users on the file system holding `dir` (`statvfs`:
/// `f_bavail * f_frsize`).
pub fn statvfs_free(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `st` is writable memory of the size statvfs fills.
    let r = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st` (which was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (32 or 64 bits).
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    Ok(free)
}

/// The crashed kernel's log from a stored dump, for `dmesg.txt`.
///
/// Decoded from the stored dump's printk ring buffer, in `makedumpfile --dump-dmesg`'s
/// format. Called after every STORED reply; an `Err` is logged and no `dmesg.txt` is written.
pub fn extract_dmesg(vmcore: &Path) -> Result<String, String> {
    let file = crate::fetch::DiskReader::open(vmcore).map_err(|e| format!("{}: {e}", vmcore.display()))?;
    let rd = lifeboat_capture::kdump_reader::KdumpReader::open(file).map_err(|e| e.to_string())?;
    lifeboat_capture::printk::dmesg_of_dump(&rd, false).map(|(text, _)| text)
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `512 bytes`.
pub fn human_size(b: u64) -> String {
    const UNITS: [(&str, u64); 4] =
        [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in UNITS {
        if b >= unit {
            let tenths = (u128::from(b) * 10 / u128::from(unit)) as u64;
            return if tenths.is_multiple_of(10) || b >= 100 * unit {
                format!("{} {}", b / unit, name)
            } else {
                format!("{}.{} {}", tenths / 10, tenths % 10, name)
            };
        }
    }
    format!("{b} bytes")
}

/// The host part of a dump directory name: `[A-Za-z0-9._-]` (anything else becomes `_`), at
/// most [`MAX_HOST_NAME`] bytes, no leading dot; the client's address when nothing is left.
/// The result is always one plain path component.
pub fn sanitize_host(host: &str, client: IpAddr) -> String {
    let mapped: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let mut name: String = mapped.trim_start_matches('.').chars().take(MAX_HOST_NAME).collect();
    if name.is_empty() {
        name = client.to_string().replace(':', "_");
    }
    name
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYYmmdd-HHMMSS` (UTC).
fn stamp(secs: u64) -> String {
    let u = utc(secs); // YYYY-MM-DDTHH:MM:SSZ
    format!("{}{}{}-{}{}{}", &u[0..4], &u[5..7], &u[8..10], &u[11..13], &u[14..16], &u[17..19])
}

/// Sets `DUMP_DH_COMPRESSED_INCOMPLETE` in the kdump header of `file`, if the header is there.
/// Returns whether it was.
fn mark_incomplete(file: &File) -> io::Result<bool> {
    let mut head = [0u8; STATUS_OFFSET as usize + 4];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    if head[..8] != KDUMP_SIGNATURE {
        return Ok(false);
    }
    let at = STATUS_OFFSET as usize;
    let status = u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    file.write_all_at(&(status | DUMP_DH_COMPRESSED_INCOMPLETE).to_le_bytes(), STATUS_OFFSET)?;
    Ok(true)
}

/// Creates `path` as a file readable by its owner only; fails if it exists.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)
}

/// Writes `text` as `dir/name` (0600), replacing it atomically.
fn write_private(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = create_private(&tmp)?;
    f.write_all(text.as_bytes())?;
    fs::rename(&tmp, dir.join(name))
}

/// Makes `file` (`dir/from`) durable as `dir/to`: fsync the file, rename, fsync the directory.
fn keep_synced(file: &File, dir: &Path, from: &str, to: &str) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(dir.join(from), dir.join(to))?;
    File::open(dir)?.sync_all()
}

/// Turns the `.vmcore.partial` files that a killed server left behind into
/// `vmcore.incomplete` (header marked) and notes it in their `lifeboat.txt`. Returns the
/// dump directories recovered.
pub fn recover_partials(dir: &Path, log: &dyn Fn(&str)) -> io::Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let d = entry.path();
        let log_partial = d.join(DMESG_PARTIAL_NAME);
        if fs::symlink_metadata(&log_partial).map(|m| m.is_file()).unwrap_or(false) {
            fs::rename(&log_partial, d.join(DMESG_INCOMPLETE_NAME))?;
            log(&format!(
                "{}: server stopped while the kernel log arrived: kept as {}",
                d.display(),
                DMESG_INCOMPLETE_NAME
            ));
        }
        let partial = d.join(PARTIAL_NAME);
        if fs::symlink_metadata(&partial).map(|m| m.is_file()).unwrap_or(false) {
            let marked = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&partial)
                .and_then(|f| mark_incomplete(&f))?;
            fs::rename(&partial, d.join(INCOMPLETE_NAME))?;
            let info = fs::read_to_string(d.join(INFO_NAME)).unwrap_or_default();
            let mut text: String = info
                .lines()
                .filter(|l| !l.starts_with("result:"))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&format!(
                "result: incomplete, kept as {INCOMPLETE_NAME}: server stopped during transfer \
                 (found when the server started again at {})\n",
                utc(now_unix())
            ));
            write_private(&d, INFO_NAME, &text)?;
            log(&format!(
                "{}: server stopped during this transfer: kept as {}{}",
                d.display(),
                INCOMPLETE_NAME,
                if marked { " (header marked incomplete)" } else { " (no dump header arrived)" }
            ));
            done.push(d);
        }
    }
    Ok(done)
}

/// What the server shares with its client threads.
struct Shared {
    cfg: ServeConfig,
    /// Accepted transfers running.
    transfers: AtomicUsize,
    /// Open connections (any stage).
    connections: AtomicUsize,
}

impl Shared {
    fn killed(&self) -> bool {
        self.cfg.kill.load(Ordering::SeqCst)
    }
    fn log(&self, line: &str) {
        (self.cfg.log)(line)
    }
}

/// Decrements a counter when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves dumps on `listener` until `stop` is set (then waits for the transfers running) or
/// `cfg.kill` is set (then drops everything at once). First turns leftover `.vmcore.partial`
/// files into `vmcore.incomplete` ([`recover_partials`]). Creates `cfg.dir` (0700) if missing.
pub fn run_server(
    listener: TcpListener,
    cfg: ServeConfig,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    if !cfg.dir.is_dir() {
        DirBuilder::new().recursive(true).mode(0o700).create(&cfg.dir)?;
    }
    let log = cfg.log.clone();
    recover_partials(&cfg.dir, &*log)?;
    let free = (cfg.free_space)(&cfg.dir).map(human_size).unwrap_or_else(|e| e.to_string());
    log(&format!(
        "listening on {}, dumps in {} ({} free, reserve {}, max size {}, at most {} at a time)",
        listener.local_addr()?,
        cfg.dir.display(),
        free,
        human_size(cfg.reserve),
        cfg.max_size.map(human_size).unwrap_or_else(|| "unlimited".into()),
        cfg.max_clients
    ));
    listener.set_nonblocking(true)?;
    let shared =
        Arc::new(Shared { cfg, transfers: AtomicUsize::new(0), connections: AtomicUsize::new(0) });
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) && !shared.killed() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let open = shared.connections.fetch_add(1, Ordering::SeqCst);
                if open >= shared.cfg.max_clients + EXTRA_CONNECTIONS {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                    log(&format!("[{peer}] closed at once: {open} connections open"));
                    continue;
                }
                let sh = shared.clone();
                let spawned = thread::Builder::new().name(format!("lifeboat-serve {peer}")).spawn(
                    move || {
                        let _slot = Slot(&sh.connections);
                        serve_client(stream, peer, &sh);
                    },
                );
                match spawned {
                    Ok(h) => clients.push(h),
                    Err(e) => log(&format!("[{peer}] no thread for the connection: {e}")),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                clients.retain(|h| !h.is_finished());
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log(&format!("accepting a connection failed: {e}"));
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(listener);
    for h in clients {
        let _ = h.join();
    }
    Ok(())
}

/// How reading a client's frames ended, other than with a frame.
enum ReadEnd {
    /// The server is being killed (tests): touch nothing, just go.
    Killed,
    /// The connection closed or failed; the text says how.
    Gone(String),
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// The bytes are not a valid frame sequence.
    Corrupt(WireError),
}

/// A client's connection: frames in, replies out.
struct ClientConn<'s> {
    stream: TcpStream,
    peer: SocketAddr,
    reader: FrameReader,
    buf: Vec<u8>,
    /// Connection bytes received.
    received: u64,
    shared: &'s Shared,
}

impl<'s> ClientConn<'s> {
    fn new(stream: TcpStream, peer: SocketAddr, shared: &'s Shared) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            peer,
            reader: FrameReader::new(),
            buf: vec![0; 64 * 1024],
            received: 0,
            shared,
        })
    }

    /// The next frame, waiting at most `timeout` for each read.
    fn next_frame(&mut self, timeout: Duration) -> Result<WireFrame, ReadEnd> {
        let mut last = Instant::now();
        loop {
            match self.reader.next_frame() {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(ReadEnd::Corrupt(e)),
            }
            if self.shared.killed() {
                return Err(ReadEnd::Killed);
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => {
                    let why = if self.reader.pending() > 0 {
                        "the client closed the connection in the middle of a frame"
                    } else {
                        "the client closed the connection"
                    };
                    return Err(ReadEnd::Gone(why.into()));
                }
                Ok(n) => {
                    self.received += n as u64;
                    self.reader.feed(&self.buf[..n]);
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if last.elapsed() >= timeout {
                        return Err(ReadEnd::Idle(timeout));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadEnd::Gone(format!("connection failed: {e}"))),
            }
        }
    }

    fn reply(&mut self, code: ReplyCode, text: &str) {
        let frame = control_frame(ControlKind::Reply, &reply_payload(code, text));
        if let Err(e) = self.stream.write_all(&frame) {
            self.shared.log(&format!("[{}] could not send {code}: {e}", self.peer));
        }
    }

    /// Replies, then reads and discards what the client still sends (up to [`DRAIN`]) so the
    /// reply is not lost to a reset, then closes.
    fn reply_and_close(&mut self, code: ReplyCode, text: &str) {
        self.reply(code, text);
        let _ = self.stream.shutdown(Shutdown::Write);
        let t0 = Instant::now();
        while t0.elapsed() < DRAIN && !self.shared.killed() {
            match self.stream.read(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The HELLO fields, as received (untrusted).
#[derive(Clone, Debug, Default)]
struct Hello {
    host: String,
    release: String,
    machine: String,
    boot_id: String,
    crash_time: Option<i64>,
    ram_bytes: Option<u64>,
    attempt: Option<u32>,
    lifeboat: String,
    probe: bool,
}

impl Hello {
    fn parse(h: &HelloInfo<'_>) -> Self {
        let text = |k: &str| {
            let v = h.get(k).unwrap_or_default();
            printable(&v[..v.len().min(256)])
        };
        Self {
            host: text("host"),
            release: text("release"),
            machine: text("machine"),
            boot_id: text("boot_id"),
            crash_time: hello_number(h, "crash_time"),
            ram_bytes: hello_number(h, "ram_bytes"),
            attempt: hello_number(h, "attempt"),
            lifeboat: text("lifeboat"),
            probe: h.get("probe") == Some(b"1"),
        }
    }
}

/// A HELLO value that must be a number; `None` if missing or not one.
fn hello_number<T: std::str::FromStr>(h: &HelloInfo<'_>, key: &str) -> Option<T> {
    std::str::from_utf8(h.get(key)?).ok()?.trim().parse().ok()
}

fn serve_client(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let mut conn = match ClientConn::new(stream, peer, shared) {
        Ok(c) => c,
        Err(e) => return shared.log(&format!("[{peer}] cannot set up the connection: {e}")),
    };
    let frame = match conn.next_frame(shared.cfg.hello_timeout) {
        Ok(f) => f,
        Err(ReadEnd::Killed) => return,
        Err(ReadEnd::Idle(t)) => {
            return shared.log(&format!("[{peer}] no HELLO within {t:?}; closed"))
        }
        Err(ReadEnd::Gone(why)) => return shared.log(&format!("[{peer}] {why} before HELLO")),
        Err(ReadEnd::Corrupt(e)) => {
            shared.log(&format!("[{peer}] not a lifeboat client: {e}"));
            return conn.reply_and_close(ReplyCode::Refused, &format!("expected HELLO: {e}"));
        }
    };
    let info = match (frame.kind, HelloInfo::parse(&frame.payload)) {
        (WireKind::Control(ControlKind::Hello), Some(info)) => info,
        (kind, _) => {
            shared.log(&format!("[{peer}] sent a {kind} frame instead of HELLO; refused"));
            return conn.reply_and_close(ReplyCode::Refused, "expected a HELLO frame first");
        }
    };
    if info.version != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {} is not supported (this server speaks {}): use matching lifeboat versions",
            info.version, PROTOCOL_VERSION
        );
        shared.log(&format!("[{peer}] refused: {why}"));
        return conn.reply_and_close(ReplyCode::Refused, &why);
    }
    let hello = Hello::parse(&info);
    let label = format!("[{} {}]", if hello.host.is_empty() { "?" } else { &hello.host }, peer);
    let cfg = &shared.cfg;
    let free = (cfg.free_space)(&cfg.dir);
    if hello.probe {
        let space = match &free {
            Ok(f) if *f < cfg.reserve => format!(
                "{} free in {}, BELOW the reserve of {}: dumps are refused",
                human_size(*f),
                cfg.dir.display(),
                human_size(cfg.reserve)
            ),
            Ok(f) => format!(
                "{} free in {} (reserve {})",
                human_size(*f),
                cfg.dir.display(),
                human_size(cfg.reserve)
            ),
            Err(e) => format!("free space in {} unknown: {e}", cfg.dir.display()),
        };
        let banner = format!("lifeboat {} dump server; {}", env!("CARGO_PKG_VERSION"), space);
        shared.log(&format!("{label} probe answered: {banner}"));
        return conn.reply_and_close(ReplyCode::ProbeOk, &banner);
    }
    let refuse = |conn: &mut ClientConn<'_>, why: String| {
        shared.log(&format!("{label} refused: {why}"));
        conn.reply_and_close(ReplyCode::Refused, &why);
    };
    match free {
        Err(e) => {
            return refuse(
                &mut conn,
                format!("cannot measure free space in {}: {e}", cfg.dir.display()),
            )
        }
        Ok(f) if f < cfg.reserve => {
            return refuse(
                &mut conn,
                format!(
                    "only {} free in {}, below the reserve of {}",
                    human_size(f),
                    cfg.dir.display(),
                    human_size(cfg.reserve)
                ),
            )
        }
        Ok(_) => {}
    }
    let running = shared.transfers.fetch_add(1, Ordering::SeqCst);
    let _slot = Slot(&shared.transfers);
    if running >= cfg.max_clients {
        return refuse(&mut conn, format!("too many dumps in progress ({running}); try later"));
    }
    let host = sanitize_host(&hello.host, peer.ip());
    let start_unix = now_unix();
    let (dir, name) = match create_dump_dir(&cfg.dir, &format!("{host}-{}", stamp(start_unix))) {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                &mut conn,
                format!("cannot create a dump directory in {}: {e}", cfg.dir.display()),
            )
        }
    };
    let partial = dir.join(PARTIAL_NAME);
    let file = match create_private(&partial) {
        Ok(f) => f,
        Err(e) => return refuse(&mut conn, format!("cannot create {}: {e}", partial.display())),
    };
    let mut t = Transfer {
        shared,
        label: label.clone(),
        hello,
        peer,
        dir,
        name,
        file,
        start_unix,
        started: Instant::now(),
        last_progress: Instant::now(),
        decoder: FlatDecoder::new(),
        seen_start: false,
        log: KernelLogRx::default(),
        next_seq: 0,
        next_offset: 0,
        data_frames: 0,
        dump_bytes: 0,
        written: 0,
        next_free_check: FREE_CHECK_EVERY,
    };
    if let Err(e) = t.write_info(None, "receiving", "none yet") {
        return refuse(&mut conn, format!("cannot write {INFO_NAME}: {e}"));
    }
    shared.log(&format!(
        "{} accepted as {} (attempt {}, {} RAM, release {})",
        t.label,
        t.name,
        t.hello.attempt.unwrap_or(0),
        t.hello.ram_bytes.map(human_size).unwrap_or_else(|| "?".into()),
        t.hello.release
    ));
    conn.reply(
        ReplyCode::Accept,
        &format!("lifeboat {} dump server: receiving as {}", env!("CARGO_PKG_VERSION"), t.name),
    );
    t.receive(&mut conn);
}

/// Creates `<parent>/<base>` (0700), or `<base>-2`, `-3`, … if taken. Never reuses one.
fn create_dump_dir(parent: &Path, base: &str) -> io::Result<(PathBuf, String)> {
    for n in 1..=1000 {
        let name = if n == 1 { base.to_string() } else { format!("{base}-{n}") };
        let path = parent.join(&name);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok((path, name)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(ErrorKind::AlreadyExists, format!("{base} and 999 variants exist")))
}

/// One accepted dump arriving.
struct Transfer<'s> {
    shared: &'s Shared,
    label: String,
    hello: Hello,
    peer: SocketAddr,
    dir: PathBuf,
    /// The dump directory's name (relative to the server's directory).
    name: String,
    file: File,
    start_unix: u64,
    started: Instant,
    last_progress: Instant,
    decoder: FlatDecoder,
    seen_start: bool,
    /// The crashed kernel's log (LOG frames before the dump).
    log: KernelLogRx,
    next_seq: u32,
    next_offset: u64,
    data_frames: u32,
    /// Size of the dump file (highest byte written + 1).
    dump_bytes: u64,
    /// Dump bytes written (all records).
    written: u64,
    next_free_check: u64,
}

/// The kernel log of one transfer as its LOG frames arrive.
#[derive(Default)]
struct KernelLogRx {
    /// `.dmesg.txt.partial` while LOG frames arrive (created at the first one).
    file: Option<File>,
    /// Log bytes received (the offset the next LOG frame must have).
    bytes: u64,
    /// LOG_END arrived (or the log was closed because the transfer ended).
    ended: bool,
    /// `dmesg.txt` holds the whole streamed log.
    whole: bool,
    /// For `lifeboat.txt`'s `kernel_log:` line.
    status: Option<String>,
}

/// The END frame's verdict.
struct EndVerdict {
    complete: bool,
    reason: String,
}

impl Transfer<'_> {
    fn receive(&mut self, conn: &mut ClientConn<'_>) {
        let idle = self.shared.cfg.idle_timeout;
        let failure = loop {
            let frame = match conn.next_frame(idle) {
                Ok(f) => f,
                Err(ReadEnd::Killed) => return,
                Err(ReadEnd::Gone(why)) => {
                    let why =
                        format!("{why} at stream byte {} before the END frame", self.next_offset);
                    return self.incomplete(conn, why, false);
                }
                Err(ReadEnd::Idle(t)) => {
                    break format!("no data for {} s before the END frame", t.as_secs())
                }
                Err(ReadEnd::Corrupt(e)) => break e.to_string(),
            };
            match self.frame(frame) {
                Ok(None) => {}
                Ok(Some(end)) => return self.stored(conn, end),
                Err(why) => break why,
            }
            if self.last_progress.elapsed() >= self.shared.cfg.progress_every {
                self.last_progress = Instant::now();
                self.shared.log(&format!(
                    "{} {}",
                    self.label,
                    rate(conn.received, self.started.elapsed())
                ));
            }
        };
        self.incomplete(conn, failure, true)
    }

    /// Checks and applies one frame; `Ok(Some)` at a good END, `Err` ends the transfer.
    fn frame(&mut self, f: WireFrame) -> Result<Option<EndVerdict>, String> {
        let kind = match f.kind {
            WireKind::Stream(k) => k,
            WireKind::Control(_) => {
                return Err(format!("unexpected {} frame in the dump stream", f.kind))
            }
        };
        if kind == FrameKind::Start {
            if self.seen_start || f.seq != 0 {
                return Err(format!(
                    "unexpected START frame {} (the stream started already)",
                    f.seq
                ));
            }
            let start = StartInfo::parse(&f.payload).ok_or("malformed START frame")?;
            if start.stream_format != STREAM_FLATTENED_KDUMP {
                return Err(format!(
                    "unknown stream format {} (this server knows {}): use matching lifeboat versions",
                    start.stream_format, STREAM_FLATTENED_KDUMP
                ));
            }
            self.seen_start = true;
            self.next_seq = 1;
            return Ok(None);
        }
        if !self.seen_start {
            return Err(format!("{:?} frame before START", kind));
        }
        if matches!(kind, FrameKind::Log | FrameKind::LogEnd) {
            // Log frames have their own offsets (checked in log_frame), and the stream's seq.
            if f.seq != self.next_seq {
                return Err(format!(
                    "{} frame {} where frame {} was due: frames lost or out of order",
                    f.kind, f.seq, self.next_seq
                ));
            }
            self.next_seq = self.next_seq.wrapping_add(1);
            return self.log_frame(kind, &f).map(|()| None);
        }
        if f.seq != self.next_seq || f.offset != self.next_offset {
            return Err(format!(
                "frame {} for stream byte {:#x} where frame {} for byte {:#x} was due: frames lost \
                 or out of order",
                f.seq, f.offset, self.next_seq, self.next_offset
            ));
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.log.file.is_some() && !self.log.ended {
            return Err(format!("{kind:?} frame before the LOG_END frame of the kernel log"));
        }
        match kind {
            FrameKind::Data => {
                self.data_frames = self.data_frames.wrapping_add(1);
                self.next_offset += f.payload.len() as u64;
                let mut input = &f.payload[..];
                while let Some(item) =
                    self.decoder.next(&mut input).map_err(|e| format!("flattened stream: {e}"))?
                {
                    if let FlatItem::Data { offset, data } = item {
                        self.write(offset, data)?;
                    }
                }
                Ok(None)
            }
            FrameKind::End => {
                let end = EndInfo::parse(f.offset, &f.payload).ok_or("malformed END frame")?;
                if end.data_frames != self.data_frames {
                    return Err(format!(
                        "END counts {} DATA frames, {} arrived",
                        end.data_frames, self.data_frames
                    ));
                }
                if !self.decoder.is_ended() {
                    return Err("the flattened stream has no end marker".into());
                }
                Ok(Some(EndVerdict {
                    complete: end.complete,
                    reason: String::from_utf8_lossy(end.reason).into_owned(),
                }))
            }
            FrameKind::Start | FrameKind::Log | FrameKind::LogEnd => {
                unreachable!("handled above")
            }
        }
    }

    /// A LOG or LOG_END frame (its seq is checked). LOG frames come between START and the
    /// first DATA frame, at consecutive log offsets; LOG_END closes the log: a whole log
    /// becomes `dmesg.txt` at once (fsynced), a partial one `dmesg.txt.incomplete`.
    fn log_frame(&mut self, kind: FrameKind, f: &WireFrame) -> Result<(), String> {
        if self.log.ended || self.data_frames > 0 {
            return Err(format!("unexpected {} frame {} after the kernel log", f.kind, f.seq));
        }
        let due = self.log.bytes;
        if kind == FrameKind::Log {
            if f.offset != due || f.payload.is_empty() {
                return Err(format!(
                    "LOG frame {} for log byte {:#x} where byte {:#x} was due",
                    f.seq, f.offset, due
                ));
            }
            let end = due + f.payload.len() as u64;
            if let Some(max) = self.shared.cfg.max_size {
                if end > max {
                    return Err(format!(
                        "the kernel log is larger than this server's --max-size of {}",
                        human_size(max)
                    ));
                }
            }
            if self.log.file.is_none() {
                let path = self.dir.join(DMESG_PARTIAL_NAME);
                let file =
                    create_private(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                self.log.file = Some(file);
            }
            let file = self.log.file.as_ref().expect("created above");
            file.write_all_at(&f.payload, due)
                .map_err(|e| format!("writing {DMESG_PARTIAL_NAME}: {e}"))?;
            self.log.bytes = end;
            return self.count_written(f.payload.len() as u64);
        }
        let end = LogEndInfo::parse(f.offset, &f.payload).ok_or("malformed LOG_END frame")?;
        if end.log_bytes != due {
            return Err(format!(
                "LOG_END counts {} kernel log bytes, {} arrived",
                end.log_bytes, due
            ));
        }
        let reason = printable(end.reason);
        if end.complete {
            self.close_log(None, end.records);
        } else if due == 0 {
            self.log.ended = true;
            self.log.status = Some(format!("not sent by the capture kernel: {reason}"));
            self.shared.log(&format!("{} no kernel log from the capture kernel: {reason}", self.label));
        } else {
            self.close_log(Some(format!("the capture kernel could not send all of it: {reason}")), end.records);
        }
        // lifeboat.txt says at once where the log is.
        let _ = self.write_info(None, "receiving", "none yet");
        Ok(())
    }

    /// Ends the streamed log: `dmesg.txt` when `cut` is `None` (the whole log), else
    /// `dmesg.txt.incomplete`; fsynced, then logged.
    fn close_log(&mut self, cut: Option<String>, records: u32) {
        self.log.ended = true;
        let bytes = self.log.bytes;
        let file = self.log.file.take();
        let name = if cut.is_none() { DMESG_NAME } else { DMESG_INCOMPLETE_NAME };
        let kept = match &file {
            Some(f) => keep_synced(f, &self.dir, DMESG_PARTIAL_NAME, name),
            // A whole log of 0 bytes: an empty dmesg.txt.
            None if cut.is_none() => {
                create_private(&self.dir.join(name)).and_then(|f| f.sync_all())
            }
            None => return,
        };
        if let Err(e) = kept {
            self.log.status = Some(format!("streamed, but writing {name} failed: {e}"));
            return self.shared.log(&format!("{} cannot write {name}: {e}", self.label));
        }
        match cut {
            None => {
                self.log.whole = true;
                self.log.status = Some(format!(
                    "streamed in LOG frames, whole: {name} ({bytes} bytes, {records} records)"
                ));
                self.shared.log(&format!(
                    "{} kernel log stored as {}/{name} from LOG frames ({bytes} bytes, {records} records)",
                    self.label, self.name
                ));
            }
            Some(why) => {
                self.log.status = Some(format!(
                    "streamed in LOG frames, INCOMPLETE: {name} ({bytes} bytes): {why}"
                ));
                self.shared.log(&format!(
                    "{} kernel log INCOMPLETE, kept as {}/{name} ({bytes} bytes): {why}",
                    self.label, self.name
                ));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let end = offset + data.len() as u64; // the decoder checked it does not overflow
        let cfg = &self.shared.cfg;
        if let Some(max) = cfg.max_size {
            if end > max {
                return Err(format!(
                    "the dump is larger than this server's --max-size of {}",
                    human_size(max)
                ));
            }
        }
        let partial = self.dir.join(PARTIAL_NAME);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        self.dump_bytes = self.dump_bytes.max(end);
        self.count_written(data.len() as u64)
    }

    /// Counts bytes written (dump and log) and checks free space every
    /// [`FREE_CHECK_EVERY`] bytes.
    fn count_written(&mut self, n: u64) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        self.written += n;
        if self.written >= self.next_free_check {
            self.next_free_check = self.written + FREE_CHECK_EVERY;
            match (cfg.free_space)(&cfg.dir) {
                Ok(f) if f < cfg.reserve => {
                    return Err(format!(
                        "free space in {} fell to {}, below the reserve of {}",
                        cfg.dir.display(),
                        human_size(f),
                        human_size(cfg.reserve)
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!("cannot measure free space in {}: {e}", cfg.dir.display()))
                }
            }
        }
        Ok(())
    }

    /// A good END: `vmcore`, STORED, then `dmesg.txt`.
    fn stored(&mut self, conn: &mut ClientConn<'_>, end: EndVerdict) {
        let partial = self.dir.join(PARTIAL_NAME);
        let vmcore = self.dir.join(COMPLETE_NAME);
        let verdict = self.verdict_text(&end);
        let finished = (|| {
            if !end.complete {
                // As `lifeboat receive` does: the capture kernel says pages are missing.
                mark_incomplete(&self.file)?;
            }
            self.file.sync_all()?;
            fs::rename(&partial, &vmcore)?;
            self.write_info(Some(now_unix()), &format!("stored as {COMPLETE_NAME}"), &verdict)
        })();
        if let Err(e) = finished {
            let why = format!("storing the dump failed: {e}");
            return self.incomplete(conn, why, true);
        }
        let stored = format!("{}/{}", self.name, COMPLETE_NAME);
        conn.reply_and_close(ReplyCode::Stored, &stored);
        self.shared.log(&format!(
            "{} stored {} ({}, capture kernel verdict: {}): {}",
            self.label,
            stored,
            human_size(self.dump_bytes),
            verdict,
            rate(conn.received, self.started.elapsed())
        ));
        if self.log.whole {
            // The streamed log wins; the dump is not read again.
            return;
        }
        // No whole log in LOG frames (an older capture kernel, or it could not read the
        // log): derive dmesg.txt from the stored dump, like kdump-tools does.
        let status = match extract_dmesg(&vmcore) {
            Ok(text) => match write_private(&self.dir, DMESG_NAME, &text) {
                Ok(()) => {
                    self.shared.log(&format!(
                        "{} kernel log extracted from the stored vmcore as {}/{DMESG_NAME} ({} bytes)",
                        self.label,
                        self.name,
                        text.len()
                    ));
                    format!("extracted from the stored vmcore: {DMESG_NAME} ({} bytes)", text.len())
                }
                Err(e) => {
                    self.shared.log(&format!("{} cannot write {DMESG_NAME}: {e}", self.label));
                    format!("extracting it from the stored vmcore failed: {e}")
                }
            },
            Err(why) => {
                self.shared.log(&format!("{} no {DMESG_NAME}: {why}", self.label));
                format!("not in the stored vmcore either: {}", printable(why.as_bytes()))
            }
        };
        self.log.status = Some(match self.log.status.take() {
            Some(streamed) => format!("{streamed}; {status}"),
            None => format!("no LOG frames; {status}"),
        });
        let _ = self.write_info(Some(now_unix()), &format!("stored as {COMPLETE_NAME}"), &verdict);
    }

    fn verdict_text(&self, end: &EndVerdict) -> String {
        if end.complete {
            "complete".to_string()
        } else {
            format!("incomplete: {}", printable(end.reason.as_bytes()))
        }
    }

    /// Keeps what arrived as `vmcore.incomplete`; tells the client why if it can still hear.
    fn incomplete(&mut self, conn: &mut ClientConn<'_>, why: String, can_reply: bool) {
        if self.log.file.is_some() && !self.log.ended {
            self.close_log(Some(format!("the transfer ended before the LOG_END frame: {why}")), 0);
        }
        let partial = self.dir.join(PARTIAL_NAME);
        let kept = self.dir.join(INCOMPLETE_NAME);
        let saved = (|| {
            let marked = mark_incomplete(&self.file)?;
            fs::rename(&partial, &kept)?;
            let header = if marked { "" } else { " (no dump header arrived)" };
            self.write_info(
                Some(now_unix()),
                &format!(
                    "incomplete, kept as {INCOMPLETE_NAME}{header}: {}",
                    printable(why.as_bytes())
                ),
                "none (no END frame)",
            )
        })();
        if let Err(e) = saved {
            self.shared.log(&format!("{} cannot keep {}: {e}", self.label, kept.display()));
        }
        self.shared.log(&format!(
            "{} INCOMPLETE {}/{}: {} ({})",
            self.label,
            self.name,
            INCOMPLETE_NAME,
            why,
            rate(conn.received, self.started.elapsed())
        ));
        if can_reply {
            conn.reply_and_close(ReplyCode::Failed, &why);
        } else {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    /// Writes `lifeboat.txt`.
    fn write_info(&self, end: Option<u64>, result: &str, verdict: &str) -> io::Result<()> {
        let h = &self.hello;
        let crash = match h.crash_time {
            Some(t) if t > 0 => format!("{} ({t})", utc(t as u64)),
            _ => "unknown".into(),
        };
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into());
        let mut text = format!(
            "# lifeboat dump server record (docs/net-protocol.md)\n\
             host: {}\nrelease: {}\nmachine: {}\nboot_id: {}\ncrash_time: {}\nram_bytes: {}\n\
             attempt: {}\nlifeboat: {}\nclient: {}\nstart: {}\n",
            h.host,
            h.release,
            h.machine,
            h.boot_id,
            crash,
            opt(h.ram_bytes),
            opt(h.attempt.map(u64::from)),
            h.lifeboat,
            self.peer,
            utc(self.start_unix)
        );
        if let Some(end) = end {
            text.push_str(&format!("end: {}\n", utc(end)));
        }
        let kernel_log = match &self.log.status {
            Some(s) => s.clone(),
            None if self.log.file.is_some() => format!("receiving ({} bytes so far)", self.log.bytes),
            None => "none yet".into(),
        };
        text.push_str(&format!(
            "kernel_log: {}\ndump_bytes: {}\nstream_bytes: {}\nverdict: {}\nresult: {}\n",
            printable(kernel_log.as_bytes()),
            self.dump_bytes,
            self.next_offset,
            verdict,
            result
        ));
        write_private(&self.dir, INFO_NAME, &text)
    }
}

/// `123 MiB received, 12.3 MB/s`.
fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!("{} received, {:.1} MB/s", human_size(bytes), bytes as f64 / secs / 1e6)
}

/// `lifeboat serve` arguments.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on, e.g. 0.0.0.0:7070.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Directory for the dumps (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Largest dump accepted, e.g. 64G (default: no limit).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Free space always left on the file system [default: 256M].
    #[arg(long, value_name = "SIZE")]
    pub reserve: Option<String>,
    /// Dumps received at the same time.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
}

/// Runs `lifeboat serve` until killed. Exit 2 for usage errors, 1 if the server fails.
pub fn cmd_serve(args: ServeArgs) -> ExitCode {
    let size = |what: &str, s: &Option<String>| -> Result<Option<u64>, String> {
        s.as_deref()
            .map(|v| {
                memparse(v).ok_or_else(|| format!("{what} {v:?} is not a size (e.g. 512M, 64G)"))
            })
            .transpose()
    };
    let (max_size, reserve) =
        match (size("--max-size", &args.max_size), size("--reserve", &args.reserve)) {
            (Ok(m), Ok(r)) => (m, r.unwrap_or(DEFAULT_RESERVE)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("lifeboat: {e}");
                return ExitCode::from(2);
            }
        };
    if args.max_clients == 0 {
        eprintln!("lifeboat: --max-clients must be at least 1");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lifeboat: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let mut cfg = ServeConfig::new(args.dir);
    cfg.max_size = max_size;
    cfg.reserve = reserve;
    cfg.max_clients = args.max_clients;
    match run_server(listener, cfg, Arc::new(AtomicBool::new(false))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lifeboat: serve: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn host_names_become_one_safe_component() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(sanitize_host("web-01.example", ip), "web-01.example");
        assert_eq!(sanitize_host("../../etc", ip), "_.._etc");
        assert_eq!(sanitize_host(".hidden", ip), "hidden");
        assert_eq!(sanitize_host("...", ip), "10.0.0.7");
        assert_eq!(sanitize_host("", ip), "10.0.0.7");
        assert_eq!(sanitize_host("", "::1".parse().unwrap()), "__1");
        assert_eq!(sanitize_host("a b/c\\x00é", ip), "a_b_c_x00_");
        assert_eq!(sanitize_host(&"x".repeat(100), ip).len(), MAX_HOST_NAME);
    }

    #[test]
    fn sizes_and_stamps() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 << 20), "256 MiB");
        assert_eq!(human_size((3 << 30) + (1 << 29)), "3.5 GiB");
        assert_eq!(human_size(u64::MAX), "16777215 TiB");
        assert_eq!(stamp(1_795_539_898), "20261124-170458");
        assert_eq!(rate(12_300_000, Duration::from_secs(1)), "11.7 MiB received, 12.3 MB/s");
    }

    #[test]
    fn dmesg_of_a_missing_or_foreign_file_is_an_error() {
        let e = extract_dmesg(Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("/nonexistent"), "{e}");
        let dir = std::env::temp_dir().join(format!("lb-dmesg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("notadump");
        std::fs::write(&f, vec![7u8; 8192]).unwrap();
        assert!(!extract_dmesg(&f).unwrap_err().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
