//! `lifeboat serve` against the capture kernel's own protocol code (`netproto::send_dump`
//! over `netconn::TcpConnector`), on 127.0.0.1 only. Dumps are written by the capture
//! kernel's `write_kdump` from synthetic memory; the server's files are compared byte for
//! byte with the same dump written into memory.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lifeboat_capture::dump::{write_kdump, DumpParams, DumpSummary, NoProgress, Verdict};
use lifeboat_capture::elfcore::{ElfCoreHeader, LoadSegment};
use lifeboat_capture::flat::FlatEncoder;
use lifeboat_capture::frame::{
    control_frame, hello_payload, ByteWrite, ControlKind, FrameWriter, PROTOCOL_VERSION,
};
use lifeboat_capture::kdump::{UtsName, DL_EXCLUDE_ZERO};
use lifeboat_capture::netproto::{
    send_dump, Conn, Connector, Identity, NetError, NetOutcome, RetryPolicy,
};
use lifeboat_capture::phys::{PhysError, PhysRead};
use lifeboat_capture::sink::{RecordSink, SinkError};
use lifeboat_loader::netconn::{self, TcpConn, TcpConnector};
use lifeboat_loader::serve::{run_server, ServeConfig};

// ---------------------------------------------------------------------------------------------
// Synthetic crashed machines

/// RAM as one buffer at `BASE`.
struct Ram(Vec<u8>);
const BASE: u64 = 0x10_0000;

impl PhysRead for Ram {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let err = PhysError::Unreadable { addr, len: buf.len() as u64 };
        let off = addr.checked_sub(BASE).ok_or(err)? as usize;
        let src = self.0.get(off..off + buf.len()).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

struct Machine {
    core: ElfCoreHeader,
    params: DumpParams,
    ram: Ram,
}

/// One ELF note: header, padded name, padded descriptor.
fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    b.extend_from_slice(&n_type.to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.resize(b.len().next_multiple_of(4), 0);
    let start = b.len();
    b.extend_from_slice(desc);
    b.resize(b.len().next_multiple_of(4), 0);
    let _ = start;
    b
}

/// `kib` KiB of RAM: a quarter zero pages, a quarter compressible, half noise. (Tests run
/// unoptimised, where compressing takes about 0.2 s per MiB: keep dumps small.)
fn machine(kib: u64, seed: u64) -> Machine {
    let len = kib << 10;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = vec![0u8; len as usize];
    for (pfn, page) in data.chunks_mut(4096).enumerate() {
        match (pfn as u64 + seed) % 4 {
            0 => {}
            1 => page.iter_mut().enumerate().for_each(|(i, b)| *b = ((i % 13) + pfn) as u8),
            _ => page.iter_mut().for_each(|b| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }),
        }
    }
    let vmci = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1795539898\n";
    let mut notes = note("CORE", 1, &[0x55; 336]);
    let at = notes.len() + 12 + 12; // after the VMCOREINFO note's header and name
    notes.extend(note("VMCOREINFO", 0, vmci));
    let core = ElfCoreHeader {
        loads: vec![LoadSegment {
            paddr: BASE,
            src: BASE,
            len,
            vaddr: 0xffff_8880_0000_0000 + BASE,
        }],
        kernel_text: None,
        notes,
        vmcoreinfo: Some(at..at + vmci.len()),
        nr_cpus: 1,
        warnings: vec![],
    };
    let mut utsname = UtsName::minimal("6.1.0-test", "x86_64");
    UtsName::set(&mut utsname.nodename, "web-01");
    let params = DumpParams {
        utsname,
        timestamp: 1_795_539_898,
        page_size: 4096,
        nr_cpus: 1,
        phys_base: 0,
        dump_level: DL_EXCLUDE_ZERO,
    };
    Machine { core, params, ram: Ram(data) }
}

impl Machine {
    fn dump(&self, sink: &mut dyn RecordSink) -> DumpSummary {
        write_kdump(&self.core, &self.params, &self.ram, sink, &mut NoProgress)
    }

    /// The dump file as `write_kdump` produces it.
    fn expected(&self) -> Vec<u8> {
        let mut f = Vec::new();
        let s = self.dump(&mut f);
        assert_eq!(s.verdict, Verdict::Complete);
        f
    }
}

fn identity(host: &str) -> Identity {
    Identity {
        host: host.into(),
        release: "6.1.0-test".into(),
        machine: "x86_64".into(),
        boot_id: "5b3d4c0e-8f1a-4e2b-9c7d-2a6f0e1b3c4d".into(),
        crash_time: 1_795_539_898,
        ram_bytes: 2 << 20,
        lifeboat: "0.1.0".into(),
    }
}

const POLICY: RetryPolicy = RetryPolicy { wait_ms: 10_000, reply_timeout_ms: 5_000 };

fn send(addr: SocketAddr, host: &str, m: &Machine) -> (NetOutcome, Vec<String>) {
    send_via(&mut TcpConnector::new(addr), host, m)
}

fn send_via<N: Connector>(net: &mut N, host: &str, m: &Machine) -> (NetOutcome, Vec<String>) {
    let mut log = Vec::new();
    let outcome =
        send_dump(net, &identity(host), &POLICY, &mut |a| log.push(a.to_string()), &mut |s| {
            m.dump(s)
        });
    (outcome, log)
}

fn stored_name(o: &NetOutcome) -> String {
    match o {
        NetOutcome::Stored { name, .. } => name.clone(),
        o => panic!("not stored: {:?}", o),
    }
}

fn failed_why(o: &NetOutcome) -> String {
    match o {
        NetOutcome::Failed { why, .. } => why.clone(),
        o => panic!("not failed: {:?}", o),
    }
}

// ---------------------------------------------------------------------------------------------
// The server, in-process

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(dir: &Path, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_on("127.0.0.1:0", dir, tweak)
    }

    fn start_on(addr: &str, dir: &Path, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = ServeConfig::new(dir);
        cfg.reserve = 0;
        cfg.hello_timeout = Duration::from_secs(5);
        let l = log.clone();
        cfg.log = Arc::new(move |line: &str| l.lock().unwrap().push(line.to_string()));
        tweak(&mut cfg);
        let kill = cfg.kill.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = Some(thread::spawn(move || run_server(listener, cfg, s)));
        Self { addr, dir: dir.to_path_buf(), stop, kill, log, thread }
    }

    /// Stops accepting, waits for the transfers running.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().unwrap();
        self.log.lock().unwrap().clone()
    }

    /// Like `kill -9`: every connection dropped, files left as they are.
    fn kill(mut self) {
        self.kill.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }

    fn log_has(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// Dump directories, sorted.
    fn dumps(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("lifeboat-serve-{}-{}", name, std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn status(file: &[u8]) -> u32 {
    u32::from_le_bytes(file[424..428].try_into().unwrap())
}

/// Waits until `cond` holds (at most 10 s).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {}", what);
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn complete_dump_is_stored_byte_exact_and_private() {
    let root = tmpdir("complete");
    let dir = root.join("dumps");
    let server = Server::start(&dir, |_| {});
    // A probe answers with a banner and creates nothing.
    let banner = netconn::probe(server.addr, Duration::from_secs(5)).unwrap();
    assert!(banner.starts_with("lifeboat ") && banner.contains(" free in "), "{}", banner);
    assert!(server.dumps().is_empty());

    let m = machine(2048, 1);
    let (outcome, log) = send(server.addr, "web-01", &m);
    let name = stored_name(&outcome);
    assert!(name.starts_with("web-01-2") && name.ends_with("/vmcore"), "{}", name);
    assert!(matches!(outcome, NetOutcome::Stored { attempts: 1, .. }));
    assert_eq!(log.len(), 3, "{:?}", log);
    let vmcore = dir.join(&name);
    let got = fs::read(&vmcore).unwrap();
    let expected = m.expected();
    assert!(got == expected, "the stored dump differs from write_kdump's");
    assert_eq!(status(&got) & 0x8, 0);
    let d = vmcore.parent().unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(d), 0o700);
    assert_eq!(mode(&vmcore), 0o600);
    assert_eq!(mode(&d.join("lifeboat.txt")), 0o600);
    let mut files: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["lifeboat.txt", "vmcore"]);
    let info = fs::read_to_string(d.join("lifeboat.txt")).unwrap();
    for line in [
        "host: web-01\n",
        "release: 6.1.0-test\n",
        "boot_id: 5b3d4c0e-8f1a-4e2b-9c7d-2a6f0e1b3c4d\n",
        "crash_time: 2026-11-24T17:04:58Z (1795539898)\n",
        "client: 127.0.0.1:",
        "start: 20",
        "end: 20",
        &format!("dump_bytes: {}\n", got.len()),
        "verdict: complete\n",
        "result: stored as vmcore\n",
    ] {
        assert!(info.contains(line), "{:?} not in\n{}", line, info);
    }
    let log = server.stop();
    assert!(log.iter().any(|l| l.contains("stored web-01-") && l.contains("MB/s")), "{:?}", log);
    // Synthetic memory has no printk ring buffer: the server says why there is no dmesg.txt.
    assert!(log.iter().any(|l| l.contains("no dmesg.txt: ")), "{:?}", log);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn four_clients_at_once() {
    let dir = tmpdir("four");
    let server = Server::start(&dir, |_| {});
    let addr = server.addr;
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            thread::spawn(move || {
                let m = machine(1024, 10 + i);
                let (o, _) = send(addr, "web-01", &m);
                (stored_name(&o), m.expected())
            })
        })
        .collect();
    let mut names = Vec::new();
    for c in clients {
        let (name, expected) = c.join().unwrap();
        assert!(fs::read(dir.join(&name)).unwrap() == expected, "{} differs", name);
        names.push(name);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "{:?}", names);
    assert_eq!(server.dumps().len(), 4);
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

/// Passes records through, but on the first dump attempt stops after `after` records until
/// the test says go.
struct Gate<'a> {
    inner: &'a mut dyn RecordSink,
    records: u32,
    after: u32,
    ready: Option<mpsc::Sender<()>>,
    go: Option<&'a mpsc::Receiver<()>>,
}

impl RecordSink for Gate<'_> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.records += 1;
        if self.records == self.after {
            if let (Some(ready), Some(go)) = (self.ready.take(), self.go.take()) {
                ready.send(()).unwrap();
                go.recv().unwrap();
            }
        }
        self.inner.record(offset, data)
    }
}

#[test]
fn killed_server_restarted_client_starts_over() {
    let dir = tmpdir("killed");
    let server = Server::start(&dir, |_| {});
    let addr = server.addr;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let client = thread::spawn(move || {
        let m = machine(2048, 3);
        let mut first = Some((ready_tx, go_rx));
        let mut log = Vec::new();
        let outcome = send_dump(
            &mut TcpConnector::new(addr),
            &identity("web-01"),
            &POLICY,
            &mut |a| log.push(a.to_string()),
            &mut |sink| match first.take() {
                Some((ready, go)) => {
                    let mut g = Gate {
                        inner: sink,
                        records: 0,
                        after: 40,
                        ready: Some(ready),
                        go: Some(&go),
                    };
                    m.dump(&mut g)
                }
                None => m.dump(sink),
            },
        );
        (outcome, log, m.expected())
    });
    ready_rx.recv().unwrap();
    // The server has written a good part of the dump when it dies.
    let partial = || {
        let d = server.dumps();
        d.first().map(|d| dir.join(d).join(".vmcore.partial"))
    };
    wait_for("the partial dump", || {
        partial().and_then(|p| fs::metadata(p).ok()).is_some_and(|m| m.len() > 128 << 10)
    });
    let old = server.dumps()[0].clone();
    server.kill();
    assert!(dir.join(&old).join(".vmcore.partial").exists());
    let server = Server::start_on(&addr.to_string(), &dir, |_| {});
    go_tx.send(()).unwrap();
    let (outcome, log, expected) = client.join().unwrap();
    assert!(matches!(outcome, NetOutcome::Stored { attempts: 2, .. }), "{:?}\n{:?}", outcome, log);
    assert!(log.iter().any(|l| l.starts_with("lost the connection at stream offset")), "{:?}", log);
    let name = stored_name(&outcome);
    assert!(!name.starts_with(&format!("{}/", old)));
    assert!(fs::read(dir.join(&name)).unwrap() == expected);
    // The old transfer: vmcore.incomplete with the header's incomplete bit, and a note.
    let d = dir.join(&old);
    assert!(!d.join(".vmcore.partial").exists() && !d.join("vmcore").exists());
    let kept = fs::read(d.join("vmcore.incomplete")).unwrap();
    assert_eq!(status(&kept) & 0x8, 0x8);
    assert_eq!(mode(&d.join("vmcore.incomplete")), 0o600);
    let info = fs::read_to_string(d.join("lifeboat.txt")).unwrap();
    assert!(
        info.contains(
            "result: incomplete, kept as vmcore.incomplete: server stopped during transfer"
        ),
        "{}",
        info
    );
    assert!(!info.contains("result: receiving"), "{}", info);
    assert!(server.log_has(
        "server stopped during this transfer: kept as vmcore.incomplete (header marked incomplete)"
    ));
    assert_eq!(server.dumps().len(), 2);
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn size_limit_and_reserve_are_reported_to_the_client() {
    let dir = tmpdir("limits");
    let m = machine(1024, 5);
    // Size limit: FAILED while receiving, the data kept as vmcore.incomplete.
    let server = Server::start(&dir, |c| c.max_size = Some(256 << 10));
    let (outcome, _) = send(server.addr, "big", &m);
    let why = failed_why(&outcome);
    assert_eq!(why, "the dump server failed the dump: the dump is larger than this server's --max-size of 256 KiB");
    assert!(matches!(outcome, NetOutcome::Failed { attempts: 1, summary: Some(_), .. }));
    let d = dir.join(&server.dumps()[0]);
    assert!(!d.join("vmcore").exists());
    let kept = fs::read(d.join("vmcore.incomplete")).unwrap();
    assert_eq!(status(&kept) & 0x8, 0x8);
    assert!(kept.len() <= 256 << 10);
    let info = fs::read_to_string(d.join("lifeboat.txt")).unwrap();
    assert!(
        info.contains("result: incomplete, kept as vmcore.incomplete: the dump is larger"),
        "{}",
        info
    );
    server.stop();
    fs::remove_dir_all(&d).unwrap();

    // Reserve at HELLO: REFUSED, nothing created.
    let server = Server::start(&dir, |c| c.reserve = 1 << 62);
    let (outcome, log) = send(server.addr, "web-01", &m);
    let why = failed_why(&outcome);
    assert!(why.starts_with("the dump server refused the dump: only "), "{}", why);
    assert!(why.ends_with(", below the reserve of 4194304 TiB"), "{}", why);
    assert_eq!(log.iter().filter(|l| l.starts_with("connected")).count(), 1, "REFUSED is final");
    assert!(server.dumps().is_empty());
    server.stop();

    // Reserve crossed while receiving: FAILED.
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    let server = Server::start(&dir, move |c| {
        c.reserve = 100 << 20;
        c.free_space = Arc::new(move |_| {
            // Plenty at start-up and HELLO, then the disk fills up.
            Ok(if c2.fetch_add(1, Ordering::SeqCst) < 2 { 1 << 40 } else { 50 << 20 })
        });
    });
    let m = machine(3072, 6);
    let (outcome, _) = send(server.addr, "web-01", &m);
    let why = failed_why(&outcome);
    assert!(why.contains("fell to 50 MiB, below the reserve of 100 MiB"), "{}", why);
    assert!(dir.join(&server.dumps()[0]).join("vmcore.incomplete").exists());
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_host_names_stay_inside_the_directory() {
    let root = tmpdir("hostile");
    let dir = root.join("dumps");
    let server = Server::start(&dir, |_| {});
    let m = machine(256, 7);
    let mut names = Vec::new();
    for host in ["../../etc", "", ".hidden", "a/b\\c\nd"] {
        let (o, _) = send(server.addr, host, &m);
        let name = stored_name(&o);
        let (d, file) = name.split_once('/').unwrap();
        assert_eq!(file, "vmcore");
        assert!(!d.starts_with('.') && !d.contains('/'), "{}", d);
        assert!(dir.join(d).join("vmcore").is_file());
        names.push(d.to_string());
    }
    assert!(names[0].starts_with("_.._etc-2"), "{:?}", names);
    assert!(names[1].starts_with("127.0.0.1-2"), "{:?}", names);
    assert!(names[2].starts_with("hidden-2"), "{:?}", names);
    assert!(names[3].starts_with("a_b_c_d-2"), "{:?}", names);
    let entries: Vec<_> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["dumps"]);
    assert_eq!(server.dumps().len(), 4);
    // The raw name is recorded, escaped.
    let info = fs::read_to_string(dir.join(&names[3]).join("lifeboat.txt")).unwrap();
    assert!(info.contains("host: a/b\\c d\n"), "{}", info);
    server.stop();
    fs::remove_dir_all(&root).unwrap();
}

/// A connection that flips one bit of what it sends at connection byte `at`.
struct FlipConn {
    inner: TcpConn,
    sent: u64,
    at: u64,
}

impl Conn for FlipConn {
    fn send_all(&mut self, b: &[u8]) -> Result<(), NetError> {
        let mut b = b.to_vec();
        if (self.sent..self.sent + b.len() as u64).contains(&self.at) {
            b[(self.at - self.sent) as usize] ^= 0x10;
        }
        self.sent += b.len() as u64;
        self.inner.send_all(&b)
    }
    fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError> {
        self.inner.recv(buf, timeout_ms)
    }
    fn close(&mut self) {
        self.inner.close()
    }
}

struct FlipNet(TcpConnector, u64);

impl Connector for FlipNet {
    type Conn = FlipConn;
    fn connect(&mut self, timeout_ms: u64) -> Result<FlipConn, NetError> {
        Ok(FlipConn { inner: self.0.connect(timeout_ms)?, sent: 0, at: self.1 })
    }
    fn now_ms(&mut self) -> u64 {
        self.0.now_ms()
    }
    fn sleep_ms(&mut self, ms: u64) {
        self.0.sleep_ms(ms)
    }
}

#[test]
fn corrupted_frame_fails_and_nothing_is_called_vmcore() {
    let dir = tmpdir("corrupt");
    let server = Server::start(&dir, |_| {});
    let m = machine(1024, 8);
    let (outcome, _) =
        send_via(&mut FlipNet(TcpConnector::new(server.addr), 200_000), "web-01", &m);
    let why = failed_why(&outcome);
    assert!(why.starts_with("the dump server failed the dump: CRC mismatch in frame "), "{}", why);
    let d = dir.join(&server.dumps()[0]);
    assert!(!d.join("vmcore").exists() && !d.join(".vmcore.partial").exists());
    assert_eq!(status(&fs::read(d.join("vmcore.incomplete")).unwrap()) & 0x8, 0x8);
    let info = fs::read_to_string(d.join("lifeboat.txt")).unwrap();
    assert!(
        info.contains("result: incomplete, kept as vmcore.incomplete: CRC mismatch"),
        "{}",
        info
    );
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

/// Frames into a byte vector.
struct Wire(Vec<u8>);
impl ByteWrite for Wire {
    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
        self.0.extend_from_slice(b);
        Ok(())
    }
}

#[test]
fn client_gone_before_end_and_strangers_are_handled() {
    let dir = tmpdir("gone");
    let server = Server::start(&dir, |_| {});
    // A client that sends part of a dump, then disappears.
    let m = machine(256, 9);
    let mut fw = FrameWriter::new(Wire(Vec::new()), "test").unwrap();
    {
        let mut enc = FlatEncoder::new(&mut fw).unwrap();
        m.dump(&mut enc);
    }
    let stream = fw.inner_mut().0.clone();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&control_frame(
        ControlKind::Hello,
        &hello_payload(PROTOCOL_VERSION, &[("host", "gone")]),
    ))
    .unwrap();
    let mut reply = [0u8; 256];
    let n = s.read(&mut reply).unwrap();
    assert_eq!(reply[24], 0, "ACCEPT: {:?}", &reply[..n]);
    s.write_all(&stream[..stream.len() / 2]).unwrap();
    drop(s);
    let d = || dir.join(&server.dumps()[0]);
    wait_for("vmcore.incomplete", || {
        !server.dumps().is_empty() && d().join("vmcore.incomplete").exists()
    });
    wait_for("lifeboat.txt", || {
        fs::read_to_string(d().join("lifeboat.txt")).unwrap().contains("result: incomplete")
    });
    let info = fs::read_to_string(d().join("lifeboat.txt")).unwrap();
    assert!(info.contains("the client closed the connection"), "{}", info);
    assert!(info.contains("before the END frame"), "{}", info);
    // Something that is not a lifeboat client, and a client of an unknown protocol version.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got[24], 1, "REFUSED");
    drop(s);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&control_frame(ControlKind::Hello, &hello_payload(2, &[("host", "future")])))
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(String::from_utf8_lossy(&got).contains("protocol version 2 is not supported"));
    drop(s);
    assert_eq!(server.dumps().len(), 1);
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn command_line() {
    let bin = env!("CARGO_BIN_EXE_lifeboat");
    let dir = tmpdir("cli");
    let out = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .args(["--reserve", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--reserve \"lots\" is not a size"), "{}", err);
    // A real run: it answers a probe, with the reserve it was given.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{}", port).parse().unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", &addr.to_string(), "--reserve", "1M", "--dir"])
        .arg(dir.join("dumps"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Err(String::new());
    let t0 = Instant::now();
    while banner.is_err() && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
        banner = netconn::probe(addr, Duration::from_secs(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let banner = banner.unwrap();
    assert!(banner.contains("(reserve 1 MiB)"), "{}", banner);
    assert_eq!(mode(&dir.join("dumps")), 0o700);
    fs::remove_dir_all(&dir).unwrap();
}
