//! The network protocol's connection traits ([`lifeboat_capture::netproto`]) over `std::net`:
//! what the host uses to talk to a dump server (the probe in `lifeboat load`, tests). The
//! capture kernel implements the same traits over its own TCP stack.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lifeboat_capture::netproto::{self, Conn, Connector, Identity, NetError};

/// Sends that make no progress for this long fail with [`NetError::Timeout`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP connection as a [`Conn`].
pub struct TcpConn {
    stream: TcpStream,
}

impl TcpConn {
    /// Wraps a connected stream; sends time out after `send_timeout`.
    pub fn new(stream: TcpStream, send_timeout: Duration) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(send_timeout))?;
        Ok(Self { stream })
    }
}

/// The [`NetError`] for an I/O error.
pub fn net_error(e: &io::Error) -> NetError {
    match e.kind() {
        ErrorKind::ConnectionRefused => NetError::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => NetError::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            NetError::Reset
        }
        ErrorKind::UnexpectedEof | ErrorKind::NotConnected => NetError::Closed,
        _ => NetError::Io(e.to_string()),
    }
}

impl Conn for TcpConn {
    fn send_all(&mut self, b: &[u8]) -> Result<(), NetError> {
        self.stream.write_all(b).map_err(|e| net_error(&e))
    }

    fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError> {
        // A zero read timeout means "block forever" to std: use a non-blocking read instead.
        let r = if timeout_ms == 0 {
            self.stream.set_nonblocking(true).map_err(|e| net_error(&e))?;
            let r = self.stream.read(buf);
            self.stream.set_nonblocking(false).map_err(|e| net_error(&e))?;
            r
        } else {
            let t = Duration::from_millis(timeout_ms);
            self.stream.set_read_timeout(Some(t)).map_err(|e| net_error(&e))?;
            loop {
                match self.stream.read(buf) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    r => break r,
                }
            }
        };
        r.map_err(|e| net_error(&e))
    }

    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Connections to one dump server address.
pub struct TcpConnector {
    pub addr: SocketAddr,
    pub send_timeout: Duration,
    start: Instant,
}

impl TcpConnector {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, send_timeout: DEFAULT_SEND_TIMEOUT, start: Instant::now() }
    }
}

impl Connector for TcpConnector {
    type Conn = TcpConn;

    fn connect(&mut self, timeout_ms: u64) -> Result<TcpConn, NetError> {
        let t = Duration::from_millis(timeout_ms.max(1));
        let stream = TcpStream::connect_timeout(&self.addr, t).map_err(|e| net_error(&e))?;
        TcpConn::new(stream, self.send_timeout).map_err(|e| net_error(&e))
    }

    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn sleep_ms(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// This machine, as a HELLO names it (host name, running kernel, boot id; no crash).
pub fn local_identity() -> Identity {
    let read =
        |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    Identity {
        host: read("/proc/sys/kernel/hostname"),
        release: read("/proc/sys/kernel/osrelease"),
        machine: std::env::consts::ARCH.to_string(),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        crash_time: 0,
        ram_bytes: 0,
        lifeboat: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Asks the dump server at `addr` whether it would take a dump (a HELLO with `probe=1`; the
/// server creates nothing): its banner (version, free space), or why not, for people.
pub fn probe(addr: SocketAddr, timeout: std::time::Duration) -> Result<String, String> {
    let t = timeout.max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&addr, t)
        .map_err(|e| format!("cannot connect to the dump server {}: {}", addr, net_error(&e)))?;
    let mut conn = TcpConn::new(stream, t).map_err(|e| format!("dump server {}: {}", addr, e))?;
    netproto::probe(&mut conn, &local_identity(), t.as_millis() as u64)
        .map_err(|e| format!("dump server {}: {}", addr, e))
}
