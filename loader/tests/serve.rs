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
    control_frame, hello_payload, ByteWrite, ControlKind, FrameWriter, LogFramer, LogOutcome,
    LogWrite, PROTOCOL_VERSION,
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

/// The crashed kernel's log as a capture kernel would send it: `records` lines, as
/// `makedumpfile --dump-dmesg` prints them.
fn kernel_log(records: usize) -> Vec<u8> {
    (0..records)
        .flat_map(|i| {
            format!("[{:5}.{:06}] test record {} {}\n", i / 50, i * 13, i, "k".repeat(i % 100))
                .into_bytes()
        })
        .collect()
}

/// Sends `log` record by record, as the capture kernel's `klog::send` does; `None`: the
/// capture kernel has no log to send.
fn send_log(log: Option<&[u8]>, out: &mut dyn LogWrite) -> LogOutcome {
    let Some(log) = log else {
        let reason = "no kernel log: no VMCOREINFO".to_string();
        return LogOutcome { complete: false, records: 0, reason };
    };
    let mut records = 0;
    for line in log.split_inclusive(|&b| b == b'\n') {
        if out.log_text(line).is_err() {
            return LogOutcome { complete: false, records, reason: "link lost".into() };
        }
        records += 1;
    }
    LogOutcome { complete: true, records, reason: String::new() }
}

/// The log every `send` sends: 1500 records, about 110 KiB.
fn default_log() -> Vec<u8> {
    kernel_log(1500)
}

fn send(addr: SocketAddr, host: &str, m: &Machine) -> (NetOutcome, Vec<String>) {
    send_via(&mut TcpConnector::new(addr), host, m)
}

fn send_via<N: Connector>(net: &mut N, host: &str, m: &Machine) -> (NetOutcome, Vec<String>) {
    send_with_log(net, host, m, Some(&default_log()))
}

fn send_with_log<N: Connector>(
    net: &mut N,
    host: &str,
    m: &Machine,
    klog: Option<&[u8]>,
) -> (NetOutcome, Vec<String>) {
    let mut log = Vec::new();
    let outcome = send_dump(
        net,
        &identity(host),
        &POLICY,
        &mut |a| log.push(a.to_string()),
        &mut |out| send_log(klog, out),
        &mut |s| m.dump(s),
    );
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
    assert_eq!(files, ["dmesg.txt", "lifeboat.txt", "vmcore"]);
    // The streamed kernel log, byte for byte, private.
    assert!(fs::read(d.join("dmesg.txt")).unwrap() == default_log());
    assert_eq!(mode(&d.join("dmesg.txt")), 0o600);
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
        &format!(
            "kernel_log: streamed in LOG frames, whole: dmesg.txt ({} bytes, 1500 records)\n",
            default_log().len()
        ),
    ] {
        assert!(info.contains(line), "{:?} not in\n{}", line, info);
    }
    assert!(server.log_has("kernel log stored as web-01-"));
    assert!(!server.log_has("no dmesg.txt: "), "the streamed log is not derived again");

    // A capture kernel that could not read the log: no LOG frames, only LOG_END with why; the
    // server falls back to the stored dump, which (synthetic memory) has no printk buffer.
    let (outcome, _) = send_with_log(&mut TcpConnector::new(server.addr), "nolog", &m, None);
    let d = dir.join(stored_name(&outcome)).parent().unwrap().to_path_buf();
    // (The fallback runs after the STORED reply.)
    wait_for("the fallback", || {
        fs::read_to_string(d.join("lifeboat.txt")).unwrap().contains("in the stored vmcore")
    });
    assert!(!d.join("dmesg.txt").exists() && !d.join("dmesg.txt.incomplete").exists());
    let info = fs::read_to_string(d.join("lifeboat.txt")).unwrap();
    assert!(
        info.contains(
            "kernel_log: not sent by the capture kernel: no kernel log: no VMCOREINFO; \
             not in the stored vmcore either: "
        ),
        "{}",
        info
    );
    let log = server.stop();
    assert!(log.iter().any(|l| l.contains("stored web-01-") && l.contains("MB/s")), "{:?}", log);
    assert!(log.iter().any(|l| l.contains("no kernel log from the capture kernel: no kernel log: no VMCOREINFO")), "{:?}", log);
    assert!(log.iter().any(|l| l.contains("[nolog ") && l.contains("no dmesg.txt: ")), "{:?}", log);
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
        let klog = default_log();
        let outcome = send_dump(
            &mut TcpConnector::new(addr),
            &identity("web-01"),
            &POLICY,
            &mut |a| log.push(a.to_string()),
            &mut |out| send_log(Some(&klog), out),
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

/// HELLO, wait for ACCEPT; returns the connection.
fn hello(addr: SocketAddr, host: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&control_frame(
        ControlKind::Hello,
        &hello_payload(PROTOCOL_VERSION, &[("host", host)]),
    ))
    .unwrap();
    let mut reply = [0u8; 256];
    let n = s.read(&mut reply).unwrap();
    assert_eq!(reply[24], 0, "ACCEPT: {:?}", &reply[..n]);
    s
}

/// START and the kernel log `klog` (LOG frames, LOG_END), then (separately) the dump's frames
/// without END.
fn log_and_dump_frames(klog: &[u8], m: &Machine) -> (Vec<u8>, Vec<u8>) {
    let mut fw = FrameWriter::new(Wire(Vec::new()), "test").unwrap();
    let mut lf = LogFramer::new(&mut fw);
    let outcome = send_log(Some(klog), &mut lf);
    lf.finish(&outcome).unwrap();
    let head = std::mem::take(&mut fw.inner_mut().0);
    {
        let mut enc = FlatEncoder::new(&mut fw).unwrap();
        m.dump(&mut enc);
    }
    (head, fw.inner_mut().0.clone())
}

#[test]
fn kernel_log_is_on_disk_before_the_dump_and_survives_its_failure() {
    let dir = tmpdir("log-first");
    let server = Server::start(&dir, |_| {});
    let klog = kernel_log(2000);
    let m = machine(256, 11);
    let (head, dump) = log_and_dump_frames(&klog, &m);
    let mut s = hello(server.addr, "logfirst");
    let d = || dir.join(&server.dumps()[0]);
    // Only START and the log: dmesg.txt is there, whole, fsynced, before any DATA frame.
    s.write_all(&head).unwrap();
    wait_for("dmesg.txt", || d().join("dmesg.txt").exists());
    assert!(fs::read(d().join("dmesg.txt")).unwrap() == klog);
    assert_eq!(mode(&d().join("dmesg.txt")), 0o600);
    assert!(!d().join(".dmesg.txt.partial").exists());
    let info = fs::read_to_string(d().join("lifeboat.txt")).unwrap();
    assert!(info.contains("kernel_log: streamed in LOG frames, whole: dmesg.txt ("), "{}", info);
    assert!(info.contains("result: receiving"), "{}", info);
    // Then half the dump, and the client is gone: the dump is incomplete, the log stays.
    s.write_all(&dump[..dump.len() / 2]).unwrap();
    drop(s);
    wait_for("vmcore.incomplete", || d().join("vmcore.incomplete").exists());
    wait_for("lifeboat.txt", || {
        fs::read_to_string(d().join("lifeboat.txt")).unwrap().contains("result: incomplete")
    });
    assert!(fs::read(d().join("dmesg.txt")).unwrap() == klog);
    assert!(!d().join("dmesg.txt.incomplete").exists());
    let info = fs::read_to_string(d().join("lifeboat.txt")).unwrap();
    assert!(info.contains("kernel_log: streamed in LOG frames, whole: dmesg.txt ("), "{}", info);
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernel_log_cut_off_is_kept_as_incomplete() {
    let dir = tmpdir("log-cut");
    let server = Server::start(&dir, |_| {});
    let klog = kernel_log(2000);
    let (head, _) = log_and_dump_frames(&klog, &machine(64, 12));
    let mut s = hello(server.addr, "logcut");
    // START, two full LOG frames and part of the third.
    let cut = 65 + 2 * (24 + 16384 + 4) + 1000;
    s.write_all(&head[..cut]).unwrap();
    let d = || dir.join(&server.dumps()[0]);
    wait_for(".dmesg.txt.partial", || {
        fs::metadata(d().join(".dmesg.txt.partial")).is_ok_and(|m| m.len() == 2 * 16384)
    });
    drop(s);
    wait_for("dmesg.txt.incomplete", || d().join("dmesg.txt.incomplete").exists());
    wait_for("lifeboat.txt", || {
        fs::read_to_string(d().join("lifeboat.txt")).unwrap().contains("result: incomplete")
    });
    assert!(!d().join("dmesg.txt").exists());
    assert!(fs::read(d().join("dmesg.txt.incomplete")).unwrap() == klog[..2 * 16384]);
    let info = fs::read_to_string(d().join("lifeboat.txt")).unwrap();
    assert!(
        info.contains(
            "kernel_log: streamed in LOG frames, INCOMPLETE: dmesg.txt.incomplete (32768 bytes): \
             the transfer ended before the LOG_END frame: the client closed the connection in \
             the middle of a frame"
        ),
        "{}",
        info
    );
    assert!(server.log_has("kernel log INCOMPLETE, kept as logcut-"));
    server.stop();
    fs::remove_dir_all(&dir).unwrap();
}

/// A connection whose sends fail once `limit` bytes have gone through it (the first one only).
struct CutConn {
    inner: TcpConn,
    left: Option<usize>,
}

impl Conn for CutConn {
    fn send_all(&mut self, b: &[u8]) -> Result<(), NetError> {
        if let Some(left) = &mut self.left {
            if b.len() > *left {
                let n = *left;
                let _ = self.inner.send_all(&b[..n]);
                self.inner.close();
                return Err(NetError::Reset);
            }
            *left -= b.len();
        }
        self.inner.send_all(b)
    }
    fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError> {
        self.inner.recv(buf, timeout_ms)
    }
    fn close(&mut self) {
        self.inner.close()
    }
}

struct CutOnce {
    inner: TcpConnector,
    limit: Option<usize>,
}

impl Connector for CutOnce {
    type Conn = CutConn;
    fn connect(&mut self, timeout_ms: u64) -> Result<CutConn, NetError> {
        Ok(CutConn { inner: self.inner.connect(timeout_ms)?, left: self.limit.take() })
    }
    fn now_ms(&mut self) -> u64 {
        self.inner.now_ms()
    }
    fn sleep_ms(&mut self, ms: u64) {
        self.inner.sleep_ms(ms)
    }
}

#[test]
fn connection_lost_during_the_log_then_whole_log_on_the_next_attempt() {
    let dir = tmpdir("log-retry");
    let server = Server::start(&dir, |_| {});
    let m = machine(512, 13);
    // HELLO (~200 bytes) and 40 KiB of the stream, i.e. inside the 110 KiB log.
    let mut net = CutOnce { inner: TcpConnector::new(server.addr), limit: Some(40_000) };
    let (outcome, log) = send_via(&mut net, "retry", &m);
    assert!(matches!(outcome, NetOutcome::Stored { attempts: 2, .. }), "{:?}\n{:?}", outcome, log);
    assert!(
        log.iter().any(|l| l.starts_with("lost the connection at kernel log byte ")),
        "{:?}",
        log
    );
    let name = stored_name(&outcome);
    let good = dir.join(&name).parent().unwrap().to_path_buf();
    assert!(fs::read(good.join("dmesg.txt")).unwrap() == default_log());
    assert!(fs::read(dir.join(&name)).unwrap() == m.expected());
    // The first attempt: the part of the log that arrived, marked, and no dump data.
    let dumps = server.dumps();
    assert_eq!(dumps.len(), 2);
    let first = dir.join(dumps.iter().find(|d| !name.starts_with(&format!("{d}/"))).unwrap());
    wait_for("the first attempt's files", || first.join("dmesg.txt.incomplete").exists());
    let part = fs::read(first.join("dmesg.txt.incomplete")).unwrap();
    assert!(!part.is_empty() && default_log().starts_with(&part), "{} bytes", part.len());
    assert!(!first.join("dmesg.txt").exists());
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
