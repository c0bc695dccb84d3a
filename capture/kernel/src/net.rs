//! The network sink's transport: smoltcp TCP/IPv4 over a virtio-net card (virtio-drivers'
//! `VirtIONetRaw`, raw Ethernet frames). The protocol spoken over it (HELLO, the framed dump,
//! STORED) is portable and lives in `lifeboat_capture::netproto`; this module only provides
//! `Connector`/`Conn` for it.
//!
//! Everything is polled: no interrupts, one CPU. Every wait is bounded by a deadline.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use lifeboat_arch::current as arch;
use lifeboat_capture::cmdline::{IpConfig, Ipv4Fmt, NetOptions, NetTarget, NicSelector};
use lifeboat_capture::netproto::{Conn, Connector, NetError};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::DeviceType;

use crate::log;
use crate::virtio::{self, LifeboatHal};

const QUEUE_SIZE: usize = 16;
/// Receive buffers posted to the card: virtio-net header + a full Ethernet frame.
const RX_BUFFERS: usize = QUEUE_SIZE;
const RX_BUF_LEN: usize = 2048;
/// Frames in flight to the card at once: the CPU fills the next while the device sends.
const TX_BUFFERS: usize = QUEUE_SIZE / 2;
/// virtio-net header (at most 12 bytes) + a full Ethernet frame.
const TX_BUF_LEN: usize = 1536;
const MTU: usize = 1514;
/// TCP send buffer: a large window keeps the link busy between acknowledgements.
const TCP_TX_BUF: usize = 256 * 1024;
const TCP_RX_BUF: usize = 8 * 1024;
/// No acknowledged progress for this long: the connection is dead.
const TCP_TIMEOUT_SECS: u64 = 20;

fn now() -> Instant {
    Instant::from_micros(arch::timer::now_us() as i64)
}

/// A virtio-net card as a smoltcp `Device`.
struct Nic {
    raw: VirtIONetRaw<LifeboatHal, virtio::Transport, QUEUE_SIZE>,
    /// Never resized after creation: posted buffers must not move.
    rx: Vec<[u8; RX_BUF_LEN]>,
    /// Virtqueue token of each posted receive buffer.
    rx_token: [Option<u16>; RX_BUFFERS],
    /// The frame last taken off the card, handed to smoltcp.
    rx_frame: Vec<u8>,
    tx: TxRing,
}

/// Transmit buffers handed to the card without waiting, reclaimed when it is done with them.
struct TxRing {
    /// Never resized after creation: buffers in flight must not move.
    bufs: Vec<[u8; TX_BUF_LEN]>,
    /// Virtqueue token of each buffer in flight.
    token: [Option<u16>; TX_BUFFERS],
    next: usize,
    errors: u32,
}

impl TxRing {
    /// Takes back every buffer the card has finished sending.
    fn reclaim(&mut self, raw: &mut VirtIONetRaw<LifeboatHal, virtio::Transport, QUEUE_SIZE>) {
        while let Some(t) = raw.poll_transmit() {
            let Some(i) = self.token.iter().position(|x| *x == Some(t)) else {
                break;
            };
            // SAFETY: buffer `i` is the one passed to transmit_begin with this token.
            let _ = unsafe { raw.transmit_complete(t, &self.bufs[i]) };
            self.token[i] = None;
        }
    }
}

impl Nic {
    fn new(raw: VirtIONetRaw<LifeboatHal, virtio::Transport, QUEUE_SIZE>) -> Result<Self, String> {
        let mut nic = Nic {
            raw,
            rx: vec![[0u8; RX_BUF_LEN]; RX_BUFFERS],
            rx_token: [None; RX_BUFFERS],
            rx_frame: Vec::with_capacity(RX_BUF_LEN),
            tx: TxRing { bufs: vec![[0u8; TX_BUF_LEN]; TX_BUFFERS], token: [None; TX_BUFFERS], next: 0, errors: 0 },
        };
        for i in 0..RX_BUFFERS {
            nic.post(i)?;
        }
        Ok(nic)
    }

    fn post(&mut self, i: usize) -> Result<(), String> {
        // SAFETY: buffer `i` is not touched again until `receive_complete` returns it.
        let token = unsafe { self.raw.receive_begin(&mut self.rx[i][..]) }
            .map_err(|e| format!("cannot post a receive buffer: {}", e))?;
        self.rx_token[i] = Some(token);
        Ok(())
    }

    /// Takes one received frame off the card into `rx_frame`.
    fn take_frame(&mut self) -> bool {
        let Some(token) = self.raw.poll_receive() else {
            return false;
        };
        let Some(i) = self.rx_token.iter().position(|t| *t == Some(token)) else {
            return false;
        };
        self.rx_token[i] = None;
        // SAFETY: buffer `i` is the one posted with this token.
        let got = unsafe { self.raw.receive_complete(token, &mut self.rx[i][..]) };
        self.rx_frame.clear();
        if let Ok((hdr, len)) = got {
            if let Some(frame) = self.rx[i].get(hdr..hdr + len) {
                self.rx_frame.extend_from_slice(frame);
            }
        }
        let _ = self.post(i);
        !self.rx_frame.is_empty()
    }
}

struct NicRx<'a>(&'a [u8]);
struct NicTx<'a> {
    raw: &'a mut VirtIONetRaw<LifeboatHal, virtio::Transport, QUEUE_SIZE>,
    ring: &'a mut TxRing,
}

impl RxToken for NicRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for NicTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let i = self.ring.next;
        let buf = &mut self.ring.bufs[i];
        let hdr = self.raw.fill_buffer_header(buf).unwrap_or(0);
        let end = (hdr + len).min(TX_BUF_LEN);
        let r = f(&mut buf[hdr..end]);
        // SAFETY: buffer `i` is free (checked in `transmit`) and stays untouched until
        // `reclaim` gets it back from the card.
        match unsafe { self.raw.transmit_begin(&buf[..end]) } {
            Ok(t) => {
                self.ring.token[i] = Some(t);
                self.ring.next = (i + 1) % TX_BUFFERS;
            }
            Err(_) => self.ring.errors += 1,
        }
        r
    }
}

impl Device for Nic {
    type RxToken<'a> = NicRx<'a>;
    type TxToken<'a> = NicTx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(NicRx<'_>, NicTx<'_>)> {
        self.tx.reclaim(&mut self.raw);
        if self.tx.token[self.tx.next].is_some() || !self.take_frame() {
            return None;
        }
        Some((NicRx(&self.rx_frame), NicTx { raw: &mut self.raw, ring: &mut self.tx }))
    }

    fn transmit(&mut self, _t: Instant) -> Option<NicTx<'_>> {
        self.tx.reclaim(&mut self.raw);
        if self.tx.token[self.tx.next].is_some() {
            return None;
        }
        Some(NicTx { raw: &mut self.raw, ring: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(TX_BUFFERS);
        caps
    }
}

/// The interface, its sockets and the server to talk to.
pub struct NetStack {
    nic: Nic,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: NetTarget,
    next_port: u16,
    pub description: String,
}

impl NetStack {
    fn poll(&mut self) {
        self.iface.poll(now(), &mut self.nic, &mut self.sockets);
    }
}

fn ipv4(a: [u8; 4]) -> Ipv4Address {
    Ipv4Address::new(a[0], a[1], a[2], a[3])
}

/// Finds the card, brings the interface up (static address or DHCP) and checks the server is
/// routable. Nothing is sent to the server yet.
pub fn open(opts: &NetOptions, server: NetTarget) -> Result<NetStack, String> {
    let cards = virtio::find(DeviceType::Network);
    if cards.is_empty() {
        return Err(String::from("no virtio-net card found (PCI or virtio-mmio)"));
    }
    let list = || cards.iter().map(|c| format!("{}", c.addr)).collect::<Vec<_>>().join(", ");
    let (card, raw) = match opts.nic {
        None => {
            let raw = open_card(&cards[0])?;
            (cards[0], raw)
        }
        Some(NicSelector::Pci(a)) => {
            let c = cards
                .iter()
                .find(|c| c.addr == a)
                .ok_or_else(|| format!("no virtio-net card at PCI {} (cards at: {})", a, list()))?;
            (*c, open_card(c)?)
        }
        Some(NicSelector::Mac(m)) => {
            let mut found = None;
            for c in &cards {
                let raw = open_card(c)?;
                if raw.mac_address() == m {
                    found = Some((*c, raw));
                    break;
                }
            }
            found.ok_or_else(|| {
                format!("no virtio-net card has MAC {} (cards at: {})", NicSelector::Mac(m), list())
            })?
        }
    };
    let mac = raw.mac_address();
    let mut nic = Nic::new(raw)?;
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = arch::timer::ticks();
    let mut iface = Interface::new(config, &mut nic, now());
    let mut sockets = SocketSet::new(Vec::new());
    let mac_s = NicSelector::Mac(mac);
    let how = match opts.ip {
        Some(IpConfig::Static { addr, prefix }) => {
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(ipv4(addr)), prefix));
            });
            if let Some(gw) = opts.gw {
                iface.routes_mut().add_default_ipv4_route(ipv4(gw)).map_err(|_| String::from("cannot add the default route"))?;
            }
            let subnet = Ipv4Cidr::new(ipv4(addr), prefix);
            if !subnet.contains_addr(&ipv4(server.server)) && opts.gw.is_none() {
                return Err(format!(
                    "server {} is outside {} and no lifeboat.gw= is given",
                    Ipv4Fmt(server.server),
                    IpConfig::Static { addr, prefix }
                ));
            }
            format!("{}", IpConfig::Static { addr, prefix })
        }
        Some(IpConfig::Dhcp) | None => {
            if opts.ip.is_none() {
                log!("net: no lifeboat.ip= given (lifeboat load fills it in): asking DHCP");
            }
            let dhcp = sockets.add(dhcpv4::Socket::new());
            let t0 = arch::timer::now_us();
            let got = loop {
                iface.poll(now(), &mut nic, &mut sockets);
                if let Some(dhcpv4::Event::Configured(cfg)) = sockets.get_mut::<dhcpv4::Socket>(dhcp).poll() {
                    let addr = cfg.address;
                    let router = cfg.router;
                    break Some((addr, router));
                }
                if arch::timer::now_us() - t0 > 15_000_000 {
                    break None;
                }
            };
            sockets.remove(dhcp);
            let (addr, router) = got.ok_or_else(|| String::from("no DHCP answer in 15 s (set lifeboat.ip=<addr>/<prefix>)"))?;
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::Ipv4(addr));
            });
            if let Some(r) = router {
                let _ = iface.routes_mut().add_default_ipv4_route(r);
            }
            format!("{} (DHCP{})", addr, router.map(|r| format!(", router {}", r)).unwrap_or_default())
        }
    };
    let description = format!("virtio-net at {} (MAC {}), {}", card.addr, mac_s, how);
    let next_port = 49152 + (arch::timer::ticks() % 8192) as u16;
    Ok(NetStack { nic, iface, sockets, server, next_port, description })
}

fn open_card(c: &virtio::VirtioFunction) -> Result<VirtIONetRaw<LifeboatHal, virtio::Transport, QUEUE_SIZE>, String> {
    let t = virtio::open(c)?;
    VirtIONetRaw::new(t).map_err(|e| format!("virtio-net at {}: {}", c.addr, e))
}

/// `Connector` for `netproto`: one TCP connection at a time to the configured server.
pub struct TcpConnector(pub Rc<RefCell<NetStack>>);

pub struct TcpConn {
    stack: Rc<RefCell<NetStack>>,
    handle: Option<SocketHandle>,
}

impl Connector for TcpConnector {
    type Conn = TcpConn;

    fn connect(&mut self, timeout_ms: u64) -> Result<TcpConn, NetError> {
        let mut guard = self.0.borrow_mut();
        let s = &mut *guard;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUF]),
            tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUF]),
        );
        sock.set_timeout(Some(Duration::from_secs(TCP_TIMEOUT_SECS)));
        sock.set_nagle_enabled(false);
        let port = s.next_port;
        s.next_port = if port >= 65000 { 49152 } else { port + 1 };
        let remote = (IpAddress::Ipv4(ipv4(s.server.server)), s.server.port);
        sock.connect(s.iface.context(), remote, port).map_err(|e| NetError::Io(format!("connect: {}", e)))?;
        let handle = s.sockets.add(sock);
        let t0 = arch::timer::now_us();
        loop {
            s.poll();
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            match sock.state() {
                tcp::State::Established => break,
                tcp::State::Closed => {
                    s.sockets.remove(handle);
                    return Err(NetError::Refused);
                }
                _ => {}
            }
            if arch::timer::now_us() - t0 > timeout_ms * 1000 {
                s.sockets.get_mut::<tcp::Socket>(handle).abort();
                s.poll();
                s.sockets.remove(handle);
                return Err(NetError::Timeout);
            }
        }
        drop(guard);
        Ok(TcpConn { stack: self.0.clone(), handle: Some(handle) })
    }

    fn now_ms(&mut self) -> u64 {
        arch::timer::now_us() / 1000
    }

    fn sleep_ms(&mut self, ms: u64) {
        // Keep the interface alive (ARP answers) while waiting.
        let end = arch::timer::now_us() + ms * 1000;
        while arch::timer::now_us() < end {
            self.0.borrow_mut().poll();
        }
    }
}

impl TcpConn {
    fn dead(sock: &tcp::Socket) -> Option<NetError> {
        match sock.state() {
            tcp::State::Closed => Some(NetError::Reset),
            tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait => {
                Some(NetError::Closed)
            }
            _ => None,
        }
    }
}

impl Conn for TcpConn {
    fn send_all(&mut self, mut b: &[u8]) -> Result<(), NetError> {
        let handle = self.handle.ok_or(NetError::Closed)?;
        let mut s = self.stack.borrow_mut();
        let mut last = arch::timer::now_us();
        while !b.is_empty() {
            s.poll();
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            if let Some(e) = Self::dead(sock) {
                return Err(e);
            }
            if sock.can_send() {
                let n = sock.send_slice(b).map_err(|e| NetError::Io(format!("send: {}", e)))?;
                if n > 0 {
                    b = &b[n..];
                    last = arch::timer::now_us();
                }
            }
            if arch::timer::now_us() - last > TCP_TIMEOUT_SECS * 1_000_000 {
                return Err(NetError::Timeout);
            }
        }
        s.poll();
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], timeout_ms: u64) -> Result<usize, NetError> {
        let handle = self.handle.ok_or(NetError::Closed)?;
        let mut s = self.stack.borrow_mut();
        let t0 = arch::timer::now_us();
        loop {
            s.poll();
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            if sock.can_recv() {
                return sock.recv_slice(buf).map_err(|e| NetError::Io(format!("recv: {}", e)));
            }
            if !sock.may_recv() {
                return match sock.state() {
                    tcp::State::Closed => Err(NetError::Reset),
                    _ => Ok(0),
                };
            }
            if arch::timer::now_us() - t0 > timeout_ms * 1000 {
                return Err(NetError::Timeout);
            }
        }
    }

    fn close(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let mut s = self.stack.borrow_mut();
        s.sockets.get_mut::<tcp::Socket>(handle).close();
        let t0 = arch::timer::now_us();
        // Let the queued data and our FIN go out (bounded), then forget the socket.
        while arch::timer::now_us() - t0 < 2_000_000 {
            s.poll();
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                break;
            }
        }
        s.sockets.get_mut::<tcp::Socket>(handle).abort();
        s.poll();
        s.sockets.remove(handle);
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let mut s = self.stack.borrow_mut();
            s.sockets.get_mut::<tcp::Socket>(handle).abort();
            s.poll();
            s.sockets.remove(handle);
        }
    }
}

/// Logs a line (used by netproto's event log).
pub fn log_event(args: core::fmt::Arguments<'_>) {
    log!("net: {}", args);
}
