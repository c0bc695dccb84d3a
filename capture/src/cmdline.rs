//! Capture options from the kernel command line.
//!
//! The capture kernel is booted like a Linux kdump kernel, so it finds its configuration the
//! way Linux does, on the command line:
//!
//! | word | meaning |
//! |---|---|
//! | `elfcorehdr=[size@]addr` | where the crashed kernel's ELF core header is (set by the loader) |
//! | `lifeboat.sink=LIST` | where the dump goes: `serial`, `blk[:<pci address>\|:<serial>]`, `net:<ip>:<port>`, comma-separated, tried in order |
//! | `lifeboat.ip=<a.b.c.d>/<prefix>\|dhcp`, `lifeboat.gw=<a.b.c.d>` | address for `net:` sinks (default dhcp) |
//! | `lifeboat.nic=<mac>\|<pci address>` | which virtio-net card (default the first) |
//! | `lifeboat.net_wait=<seconds>` | how long to keep trying the server (default 60) |
//! | `lifeboat.host=`, `lifeboat.bootid=` | the crashed machine's identity for the dump server (set by `lifeboat load`) |
//! | `lifeboat.serial=ttyS0\|…\|0x2f8[,baud]` | which UART and speed |
//! | `lifeboat.action=reboot\|halt\|poweroff` | what to do when the dump is written |
//! | `lifeboat.level=N` | makedumpfile dump level 0..31 (default 31: zero, cache, private cache, user and free pages left out) |
//! | `lifeboat.exit_port=0xf4` | test harnesses: I/O port that receives an exit code at the end |
//!
//! `elfcorehdr=` is written by two loaders in two forms: kexec_file_load prepends
//! `elfcorehdr=0x<hex> ` and kexec-tools appends `elfcorehdr=<KiB>K`. Both are parsed with
//! [`memparse`], as Linux `setup_elfcorehdr()` (kernel/crash_dump.c) does. Linux calls that
//! handler for every occurrence, so the last one wins; lifeboat does the same (and warns).
//!
//! Other words (`console=`, `root=`, …) are ignored silently. A bad `lifeboat.*` value never
//! stops the capture: the default is used and a warning, returned to the caller for the
//! console, says which.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Linux `memparse()`: a number (`0x` hex or decimal) with an optional binary suffix
/// `K`, `M`, `G`, `T`, `P` or `E` (any case). The whole string must be used; overflow is `None`.
///
/// Unlike Linux, a leading `0` does not mean octal: no loader writes octal.
pub fn memparse(s: &str) -> Option<u64> {
    match memparse_prefix(s)? {
        (v, "") => Some(v),
        _ => None,
    }
}

/// Parses a [`memparse`] number at the start of `s`; returns it and the rest of `s`.
fn memparse_prefix(s: &str) -> Option<(u64, &str)> {
    let (radix, digits) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(r) => (16, r),
        None => (10, s),
    };
    let len = digits.bytes().take_while(|c| (*c as char).is_digit(radix)).count();
    if len == 0 {
        return None;
    }
    let mut value = u64::from_str_radix(&digits[..len], radix).ok()?;
    let mut rest = &digits[len..];
    let shift = match rest.bytes().next().map(|c| c.to_ascii_uppercase()) {
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(b'P') => 50,
        Some(b'E') => 60,
        _ => 0,
    };
    if shift != 0 {
        value = value.checked_mul(1u64 << shift)?;
        rest = &rest[1..];
    }
    Some((value, rest))
}

/// `elfcorehdr=[size@]addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfCoreHdrArg {
    /// Physical address of the ELF core header.
    pub addr: u64,
    /// Its size, when the loader gave one (`size@addr` form).
    pub size: Option<u64>,
}

impl ElfCoreHdrArg {
    /// Parses the value of `elfcorehdr=`. Like Linux, characters after the address are
    /// ignored; the second item says whether there were any.
    fn parse(v: &str) -> Option<(Self, bool)> {
        let (first, rest) = memparse_prefix(v)?;
        let (arg, rest) = match rest.strip_prefix('@') {
            Some(r) => {
                let (addr, rest) = memparse_prefix(r)?;
                (Self { addr, size: Some(first) }, rest)
            }
            None => (Self { addr: first, size: None }, rest),
        };
        Some((arg, !rest.is_empty()))
    }
}

/// Where the dump goes.
/// A PCI function address, `[segment:]bus:device.function` in hex as `lspci -D` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddr {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddr {
    /// `0000:00:05.0` or `00:05.0`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let (seg, bus, devfn) = match parts.as_slice() {
            [seg, bus, devfn] => (*seg, *bus, *devfn),
            [bus, devfn] => ("0", *bus, *devfn),
            _ => return None,
        };
        let (dev, func) = devfn.split_once('.')?;
        let hex = |t: &str, max: u32| -> Option<u32> {
            if t.is_empty() || t.len() > 4 {
                return None;
            }
            u32::from_str_radix(t, 16).ok().filter(|&v| v <= max)
        };
        Some(PciAddr {
            segment: hex(seg, 0xffff)? as u16,
            bus: hex(bus, 0xff)? as u8,
            device: hex(dev, 31)? as u8,
            function: hex(func, 7)? as u8,
        })
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.segment, self.bus, self.device, self.function)
    }
}

/// Which virtio-blk disk receives the dump (`blk`, `blk:<pci address>`, `blk:<serial>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkSelector {
    /// Bare `blk`: the only virtio-blk disk there is; refused when there are several, so a
    /// dump never lands on the wrong disk by default.
    Only,
    /// The disk at this PCI address.
    Pci(PciAddr),
    /// The disk whose virtio-blk serial (QEMU `-drive …,serial=`, `/sys/block/vdX/serial`)
    /// is exactly this.
    Serial(String),
}

impl fmt::Display for BlkSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkSelector::Only => f.write_str("the only virtio-blk disk"),
            BlkSelector::Pci(a) => write!(f, "the virtio-blk disk at PCI {}", a),
            BlkSelector::Serial(s) => write!(f, "the virtio-blk disk with serial '{}'", s),
        }
    }
}

/// An IPv4 address, `a.b.c.d`.
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `a.b.c.d` for display.
pub struct Ipv4Fmt(pub [u8; 4]);

impl fmt::Display for Ipv4Fmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{}.{}.{}.{}", a, b, c, d)
    }
}

/// The dump server of a `net:<ip>:<port>` sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetTarget {
    pub server: [u8; 4],
    pub port: u16,
}

impl fmt::Display for NetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Ipv4Fmt(self.server), self.port)
    }
}

/// One place the dump can go. `lifeboat.sink=` is a comma-separated list of these, tried in
/// order until one takes the whole dump (like FreeBSD's `dumpon` list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// Framed on a UART (`lifeboat.serial=`), see `docs/serial-framing.md`.
    Serial,
    /// Written as a raw kdump-compressed image at offset 0 of a virtio-blk disk.
    Blk(BlkSelector),
    /// Sent over TCP to a `lifeboat serve` dump server, see `docs/net-protocol.md`.
    Net(NetTarget),
}

impl SinkSpec {
    const KNOWN: &'static str = "serial, blk[:<pci address>|:<serial>], net:<server ip>:<port>";

    fn parse_item(item: &str) -> Result<Self, String> {
        let (kind, arg) = match item.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (item, None),
        };
        match (kind, arg) {
            ("serial", None) => Ok(SinkSpec::Serial),
            ("blk", None) => Ok(SinkSpec::Blk(BlkSelector::Only)),
            ("blk", Some(sel)) => {
                if let Some(serial) = sel.strip_prefix("serial=") {
                    return Self::blk_serial(serial);
                }
                if let Some(pci) = sel.strip_prefix("pci=") {
                    return PciAddr::parse(pci)
                        .map(|a| SinkSpec::Blk(BlkSelector::Pci(a)))
                        .ok_or_else(|| format!("'{}' is not a PCI address like 0000:00:05.0", pci));
                }
                match PciAddr::parse(sel) {
                    Some(a) => Ok(SinkSpec::Blk(BlkSelector::Pci(a))),
                    None => Self::blk_serial(sel),
                }
            }
            ("net", Some(target)) => {
                let (ip, port) = target
                    .rsplit_once(':')
                    .ok_or_else(|| format!("net:{}: expected net:<server ip>:<port>", target))?;
                let server = parse_ipv4(ip).ok_or_else(|| format!("net:{}: '{}' is not an IPv4 address", target, ip))?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("net:{}: '{}' is not a TCP port 1-65535", target, port))?;
                if server == [0, 0, 0, 0] || server == [255, 255, 255, 255] {
                    return Err(format!("net:{}: not a server address", target));
                }
                Ok(SinkSpec::Net(NetTarget { server, port }))
            }
            ("net", None) => Err(String::from("net needs a server: net:<server ip>:<port>")),
            _ => Err(format!("unknown sink '{}' (known: {})", item, Self::KNOWN)),
        }
    }

    fn blk_serial(serial: &str) -> Result<Self, String> {
        // virtio-blk serials are at most 20 bytes (VIRTIO_BLK_ID_BYTES).
        if serial.is_empty() || serial.len() > 20 || !serial.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(format!("blk:{}: a disk serial is 1-20 printable characters", serial));
        }
        Ok(SinkSpec::Blk(BlkSelector::Serial(String::from(serial))))
    }

    fn parse_list(v: &str) -> Result<Vec<Self>, String> {
        if v.is_empty() {
            return Err(String::from("empty sink list"));
        }
        v.split(',').map(Self::parse_item).collect()
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Serial => f.write_str("serial"),
            SinkSpec::Blk(BlkSelector::Only) => f.write_str("blk"),
            SinkSpec::Blk(BlkSelector::Pci(a)) => write!(f, "blk:{}", a),
            SinkSpec::Blk(BlkSelector::Serial(s)) => write!(f, "blk:serial={}", s),
            SinkSpec::Net(t) => write!(f, "net:{}", t),
        }
    }
}

/// How the capture kernel gets its IPv4 address (`lifeboat.ip=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// `lifeboat.ip=<a.b.c.d>/<prefix>`: the default; `lifeboat load` fills it in from the
    /// interface that routes to the server.
    Static { addr: [u8; 4], prefix: u8 },
    /// `lifeboat.ip=dhcp`.
    Dhcp,
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpConfig::Static { addr, prefix } => write!(f, "{}/{}", Ipv4Fmt(*addr), prefix),
            IpConfig::Dhcp => f.write_str("dhcp"),
        }
    }
}

/// Which network card a net sink uses (`lifeboat.nic=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicSelector {
    Mac([u8; 6]),
    Pci(PciAddr),
}

impl NicSelector {
    fn parse(s: &str) -> Option<Self> {
        if let Some(a) = PciAddr::parse(s) {
            return Some(NicSelector::Pci(a));
        }
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for m in mac.iter_mut() {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *m = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(NicSelector::Mac(mac))
    }
}

impl fmt::Display for NicSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicSelector::Mac(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            NicSelector::Pci(a) => write!(f, "{}", a),
        }
    }
}

/// Network settings for `net:` sinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    /// `None`: not given; the capture kernel uses DHCP and says so.
    pub ip: Option<IpConfig>,
    /// `lifeboat.gw=`: the router for a server outside the local subnet.
    pub gw: Option<[u8; 4]>,
    /// `lifeboat.nic=`: default the first virtio-net card.
    pub nic: Option<NicSelector>,
    /// `lifeboat.net_wait=<seconds>`: how long to keep trying to reach the server (connect,
    /// reconnect after a lost connection) before giving up on this sink.
    pub wait_secs: u32,
}

/// Default for [`NetOptions::wait_secs`].
pub const DEFAULT_NET_WAIT_SECS: u32 = 60;

impl Default for NetOptions {
    fn default() -> Self {
        Self { ip: None, gw: None, nic: None, wait_secs: DEFAULT_NET_WAIT_SECS }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialSpec {
    /// Base I/O port (0x3f8 = ttyS0).
    pub port: u16,
    pub baud: u32,
}

/// Legacy PC serial port names and their I/O ports.
const TTYS_PORTS: [(&str, u16); 4] =
    [("ttyS0", 0x3f8), ("ttyS1", 0x2f8), ("ttyS2", 0x3e8), ("ttyS3", 0x2e8)];

/// Standard rates a 16550 reaches from its 1.8432 MHz clock.
const BAUD_RATES: [u32; 10] = [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

impl Default for SerialSpec {
    fn default() -> Self {
        Self { port: 0x3f8, baud: 115200 }
    }
}

impl SerialSpec {
    fn parse_port(s: &str) -> Option<u16> {
        if let Some(&(_, port)) = TTYS_PORTS.iter().find(|(name, _)| *name == s) {
            return Some(port);
        }
        let v = memparse(s)?;
        u16::try_from(v).ok().filter(|&p| p != 0)
    }

    /// `115200`, also accepting Linux console syntax `115200n8`.
    fn parse_baud(s: &str) -> Option<u32> {
        let s = s.strip_suffix("n8").unwrap_or(s);
        let b: u32 = s.parse().ok()?;
        BAUD_RATES.contains(&b).then_some(b)
    }
}

impl fmt::Display for SerialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match TTYS_PORTS.iter().find(|(_, p)| *p == self.port) {
            Some((name, _)) => write!(f, "{} ({:#x}) at {} baud", name, self.port, self.baud),
            None => write!(f, "port {:#x} at {} baud", self.port, self.baud),
        }
    }
}

/// What to do after the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reboot,
    Halt,
    Poweroff,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "reboot" => Some(Action::Reboot),
            "halt" => Some(Action::Halt),
            "poweroff" => Some(Action::Poweroff),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Reboot => "reboot",
            Action::Halt => "halt",
            Action::Poweroff => "poweroff",
        })
    }
}

/// The default dump level, as kdump-tools' `makedumpfile -d 31`: zero pages shared; page
/// cache, private cache, user data and free pages left out.
pub const DEFAULT_LEVEL: u8 = 31;

/// Everything the command line configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// `None`: the loader did not say where the ELF core header is (not a kdump boot).
    pub elfcorehdr: Option<ElfCoreHdrArg>,
    /// Tried in order until one takes the dump; never empty.
    pub sinks: Vec<SinkSpec>,
    pub net: NetOptions,
    /// `lifeboat.host=`: the crashed machine's name for the dump server (the loader writes
    /// it; default: the crashed kernel's utsname nodename).
    pub host: Option<String>,
    /// `lifeboat.bootid=`: the crashed boot's `/proc/sys/kernel/random/boot_id` (written by
    /// the loader).
    pub boot_id: Option<String>,
    pub serial: SerialSpec,
    pub action: Action,
    /// makedumpfile dump level (bit mask, 0..=31).
    pub level: u8,
    /// I/O port to which the kernel writes an exit code when done (test harnesses).
    pub exit_port: Option<u16>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            elfcorehdr: None,
            sinks: alloc::vec![SinkSpec::Serial],
            net: NetOptions::default(),
            host: None,
            boot_id: None,
            serial: SerialSpec::default(),
            action: Action::Reboot,
            level: DEFAULT_LEVEL,
            exit_port: None,
        }
    }
}

/// Splits a command line into words at whitespace outside double quotes, dropping the quotes
/// (looser than Linux `next_arg()`, enough for `key="a b"` and `"key=a b"`). A bare `--`
/// ends the kernel's part of the command line (the rest is for init), as in Linux.
fn words(cmdline: &str) -> impl Iterator<Item = String> + '_ {
    let mut chars = cmdline.chars().peekable();
    core::iter::from_fn(move || {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.peek()?;
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next_if(|c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
            } else {
                word.push(c);
            }
        }
        Some(word)
    })
    .take_while(|w| w != "--")
}

/// Parses the capture options. The second item lists human-readable warnings: unknown
/// `lifeboat.*` options and bad values (each says which default was used instead).
pub fn parse(cmdline: &str) -> (CaptureOptions, Vec<String>) {
    let mut o = CaptureOptions::default();
    let mut warnings = Vec::new();
    for word in words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        if key == "elfcorehdr" {
            parse_elfcorehdr(value.unwrap_or(""), &mut o, &mut warnings);
            continue;
        }
        let Some(name) = key.strip_prefix("lifeboat.") else {
            continue;
        };
        let v = value.unwrap_or("");
        match name {
            "sink" => match SinkSpec::parse_list(v) {
                Ok(list) => o.sinks = list,
                Err(why) => {
                    o.sinks = alloc::vec![SinkSpec::Serial];
                    warnings.push(format!("lifeboat.sink={}: {}: using serial", v, why));
                }
            },
            "ip" => {
                o.net.ip = if v == "dhcp" {
                    Some(IpConfig::Dhcp)
                } else {
                    let parsed = v.split_once('/').and_then(|(a, p)| {
                        let prefix = p.parse::<u8>().ok().filter(|&p| (1..=32).contains(&p))?;
                        Some(IpConfig::Static { addr: parse_ipv4(a)?, prefix })
                    });
                    if parsed.is_none() {
                        warnings.push(format!("lifeboat.ip={} is not <a.b.c.d>/<prefix> or dhcp: using dhcp", v));
                    }
                    Some(parsed.unwrap_or(IpConfig::Dhcp))
                }
            }
            "gw" => {
                o.net.gw = parse_ipv4(v);
                if o.net.gw.is_none() {
                    warnings.push(format!("lifeboat.gw={} is not an IPv4 address: no gateway", v));
                }
            }
            "nic" => {
                o.net.nic = NicSelector::parse(v);
                if o.net.nic.is_none() {
                    warnings.push(format!(
                        "lifeboat.nic={} is not a MAC (52:54:00:12:34:56) or PCI address (0000:00:03.0): using the first virtio-net card",
                        v
                    ));
                }
            }
            "net_wait" => match v.parse::<u32>() {
                Ok(s) if (1..=3600).contains(&s) => o.net.wait_secs = s,
                _ => {
                    o.net.wait_secs = DEFAULT_NET_WAIT_SECS;
                    warnings.push(format!(
                        "lifeboat.net_wait={} is not 1-3600 seconds: using {}",
                        v, DEFAULT_NET_WAIT_SECS
                    ));
                }
            },
            "host" => match sanitize_name(v, 64) {
                Some(h) => o.host = Some(h),
                None => warnings.push(format!("lifeboat.host={} is not a host name: ignored", v)),
            },
            "bootid" => match sanitize_name(v, 64) {
                Some(b) => o.boot_id = Some(b),
                None => warnings.push(format!("lifeboat.bootid={} is not a boot id: ignored", v)),
            },
            "serial" => parse_serial(v, &mut o, &mut warnings),
            "action" => match Action::parse(v) {
                Some(a) => o.action = a,
                None => {
                    o.action = Action::Reboot;
                    warnings.push(format!(
                        "lifeboat.action={} is not reboot, halt or poweroff: using reboot",
                        v
                    ));
                }
            },
            "level" => {
                o.level = DEFAULT_LEVEL;
                match v.parse::<u8>() {
                    Ok(l) if u32::from(l) <= crate::kdump::MAX_DUMP_LEVEL => o.level = l,
                    _ => warnings.push(format!(
                        "lifeboat.level={} is not a dump level 0..31: using {}",
                        v, DEFAULT_LEVEL
                    )),
                }
            }
            "exit_port" => {
                match memparse(v).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) {
                    Some(p) => o.exit_port = Some(p),
                    None => {
                        o.exit_port = None;
                        warnings.push(format!(
                            "lifeboat.exit_port={} is not an I/O port 0x1-0xffff: no exit port",
                            v
                        ));
                    }
                }
            }
            _ => warnings.push(format!("unknown option lifeboat.{} ignored", name)),
        }
    }
    (o, warnings)
}

/// `Some` if `v` is 1..=`max` characters of `[A-Za-z0-9._-]` (host names, boot ids).
fn sanitize_name(v: &str, max: usize) -> Option<String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_');
    ok.then(|| String::from(v))
}

fn parse_elfcorehdr(v: &str, o: &mut CaptureOptions, warnings: &mut Vec<String>) {
    match ElfCoreHdrArg::parse(v) {
        Some((arg, junk)) => {
            if junk {
                warnings.push(format!(
                    "elfcorehdr={}: characters after the address ignored (as Linux does)",
                    v
                ));
            }
            if o.elfcorehdr.is_some() {
                warnings.push(format!(
                    "elfcorehdr= given more than once: using the last one, {} (as Linux does)",
                    v
                ));
            }
            o.elfcorehdr = Some(arg);
        }
        None => {
            let kept = match o.elfcorehdr {
                Some(a) => format!("keeping {:#x}", a.addr),
                None => String::from("no elfcorehdr"),
            };
            warnings.push(format!("elfcorehdr={} is not [size@]address: ignored, {}", v, kept));
        }
    }
}

fn parse_serial(v: &str, o: &mut CaptureOptions, warnings: &mut Vec<String>) {
    let default = SerialSpec::default();
    let (port, baud) = match v.split_once(',') {
        Some((p, b)) => (p, Some(b)),
        None => (v, None),
    };
    o.serial.port = SerialSpec::parse_port(port).unwrap_or_else(|| {
        warnings.push(format!(
            "lifeboat.serial={}: '{}' is not ttyS0-ttyS3 or an I/O port: using ttyS0 ({:#x})",
            v, port, default.port
        ));
        default.port
    });
    o.serial.baud = match baud {
        None => default.baud,
        Some(b) => SerialSpec::parse_baud(b).unwrap_or_else(|| {
            warnings.push(format!(
                "lifeboat.serial={}: '{}' is not a standard baud rate (300-115200): using {}",
                v, b, default.baud
            ));
            default.baud
        }),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memparse_forms() {
        assert_eq!(memparse("0"), Some(0));
        assert_eq!(memparse("4096"), Some(4096));
        assert_eq!(memparse("0x7f000000"), Some(0x7f000000));
        assert_eq!(memparse("0X10"), Some(16));
        assert_eq!(memparse("2080768K"), Some(2080768 * 1024));
        assert_eq!(memparse("16m"), Some(16 << 20));
        assert_eq!(memparse("1G"), Some(1 << 30));
        assert_eq!(memparse("2t"), Some(2 << 40));
        assert_eq!(memparse("0x10k"), Some(16 * 1024));
        assert_eq!(memparse("15E"), Some(15 << 60));
        assert_eq!(memparse("16E"), None);
        assert_eq!(memparse("18446744073709551615"), Some(u64::MAX));
        assert_eq!(memparse("18446744073709551616"), None);
        assert_eq!(memparse("0xffffffffffffffffK"), None);
        for bad in ["", "K", "0x", "0xg", "12KB", "-1", " 1", "1 "] {
            assert_eq!(memparse(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn defaults_and_foreign_words() {
        let (o, w) = parse("console=ttyS0,115200 root=/dev/sda1 quiet irqpoll nr_cpus=1");
        assert_eq!(o, CaptureOptions::default());
        assert!(w.is_empty(), "{:?}", w);
        assert_eq!(o.serial, SerialSpec { port: 0x3f8, baud: 115200 });
        assert_eq!(o.action, Action::Reboot);
        assert_eq!(o.level, 31);
    }

    #[test]
    fn elfcorehdr_forms() {
        let (o, w) = parse("elfcorehdr=0x7f000000 console=ttyS0");
        assert_eq!(o.elfcorehdr, Some(ElfCoreHdrArg { addr: 0x7f000000, size: None }));
        assert!(w.is_empty());
        let (o, _) = parse("console=ttyS0 elfcorehdr=2080768K");
        assert_eq!(o.elfcorehdr, Some(ElfCoreHdrArg { addr: 2080768 << 10, size: None }));
        let (o, _) = parse("elfcorehdr=64K@0x1000000");
        assert_eq!(o.elfcorehdr, Some(ElfCoreHdrArg { addr: 0x1000000, size: Some(65536) }));
        // The last occurrence wins, as Linux's early_param handler overwrites.
        let (o, w) = parse("elfcorehdr=0x1000 elfcorehdr=0x2000");
        assert_eq!(o.elfcorehdr, Some(ElfCoreHdrArg { addr: 0x2000, size: None }));
        assert_eq!(w.len(), 1);
        // A bad one is ignored, keeping an earlier good one.
        let (o, w) = parse("elfcorehdr=0x1000 elfcorehdr=zzz");
        assert_eq!(o.elfcorehdr.map(|a| a.addr), Some(0x1000));
        assert!(w[0].contains("keeping 0x1000"), "{:?}", w);
        let (o, w) = parse("elfcorehdr");
        assert_eq!(o.elfcorehdr, None);
        assert_eq!(w.len(), 1);
        // Trailing junk is tolerated like Linux, with a warning.
        let (o, w) = parse("elfcorehdr=0x1000,x");
        assert_eq!(o.elfcorehdr.map(|a| a.addr), Some(0x1000));
        assert_eq!(w.len(), 1);
        // Words after `--` belong to init.
        let (o, _) = parse("quiet -- elfcorehdr=0x1000");
        assert_eq!(o.elfcorehdr, None);
    }

    #[test]
    fn lifeboat_options() {
        let (o, w) = parse(
            "lifeboat.sink=serial lifeboat.serial=ttyS1,9600 lifeboat.action=poweroff \
             lifeboat.level=0 lifeboat.exit_port=0xf4",
        );
        assert!(w.is_empty(), "{:?}", w);
        assert_eq!(o.sinks, [SinkSpec::Serial]);
        assert_eq!(o.serial, SerialSpec { port: 0x2f8, baud: 9600 });
        assert_eq!(o.action, Action::Poweroff);
        assert_eq!(o.level, 0);
        assert_eq!(o.exit_port, Some(0xf4));
        let (o, w) = parse("lifeboat.serial=0x2e8 lifeboat.action=halt");
        assert!(w.is_empty());
        assert_eq!(o.serial, SerialSpec { port: 0x2e8, baud: 115200 });
        assert_eq!(o.action, Action::Halt);
        let (o, _) = parse("lifeboat.serial=ttyS3,57600n8");
        assert_eq!(o.serial, SerialSpec { port: 0x2e8, baud: 57600 });
    }

    #[test]
    fn bad_values_warn_and_use_defaults() {
        let (o, w) = parse("lifeboat.level=17");
        assert_eq!(o.level, 17);
        assert!(w.is_empty());
        let (o, w) = parse("lifeboat.level=32");
        assert_eq!(o.level, 31);
        assert!(w[0].contains("not a dump level"));
        let (o, w) = parse("lifeboat.level=-1");
        assert_eq!(o.level, 31);
        assert!(w[0].contains("not a dump level"));
        let (o, w) = parse("lifeboat.serial=ttyS9,12345 lifeboat.action=explode lifeboat.frob=1");
        assert_eq!(o.serial, SerialSpec::default());
        assert_eq!(o.action, Action::Reboot);
        assert_eq!(w.len(), 4, "{:?}", w);
        assert!(w[0].contains("using ttyS0"));
        assert!(w[1].contains("using 115200"));
        assert!(w[2].contains("using reboot"));
        assert!(w[3].contains("lifeboat.frob"));
        let (o, w) = parse("lifeboat.sink=tape lifeboat.exit_port=0x10000 lifeboat.action");
        assert_eq!(o.sinks, [SinkSpec::Serial]);
        assert_eq!(o.exit_port, None);
        assert_eq!(w.len(), 3, "{:?}", w);
        assert!(w[0].contains("unknown sink 'tape'"));
        let (o, w) = parse("lifeboat.sink=serial,serial");
        assert!(w.is_empty());
        assert_eq!(o.sinks, [SinkSpec::Serial, SinkSpec::Serial]);
    }

    #[test]
    fn sink_lists() {
        let (o, w) = parse(
            "lifeboat.sink=net:10.0.2.2:9000,blk:0000:00:05.0,blk:dumpdisk,blk:serial=0a:b,blk,serial \
             lifeboat.ip=10.0.2.15/24 lifeboat.gw=10.0.2.2 lifeboat.nic=52:54:00:12:34:56 \
             lifeboat.net_wait=30 lifeboat.host=web-01.example lifeboat.bootid=0f1e2d3c-aaaa",
        );
        assert!(w.is_empty(), "{:?}", w);
        let pci = PciAddr { segment: 0, bus: 0, device: 5, function: 0 };
        assert_eq!(
            o.sinks,
            [
                SinkSpec::Net(NetTarget { server: [10, 0, 2, 2], port: 9000 }),
                SinkSpec::Blk(BlkSelector::Pci(pci)),
                SinkSpec::Blk(BlkSelector::Serial(String::from("dumpdisk"))),
                SinkSpec::Blk(BlkSelector::Serial(String::from("0a:b"))),
                SinkSpec::Blk(BlkSelector::Only),
                SinkSpec::Serial,
            ]
        );
        assert_eq!(o.net.ip, Some(IpConfig::Static { addr: [10, 0, 2, 15], prefix: 24 }));
        assert_eq!(o.net.gw, Some([10, 0, 2, 2]));
        assert_eq!(o.net.nic, Some(NicSelector::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert_eq!(o.net.wait_secs, 30);
        assert_eq!(o.host.as_deref(), Some("web-01.example"));
        assert_eq!(o.boot_id.as_deref(), Some("0f1e2d3c-aaaa"));
        // Display round-trips through the parser.
        for s in &o.sinks {
            assert_eq!(SinkSpec::parse_item(&format!("{}", s)).as_ref(), Ok(s));
        }
        assert_eq!(format!("{}", pci), "0000:00:05.0");
        assert_eq!(PciAddr::parse("00:1f.7"), Some(PciAddr { segment: 0, bus: 0, device: 0x1f, function: 7 }));
        for bad in ["00:20.0", "00:05.8", "0:0", "1:2:3:4.0", "00:05"] {
            assert_eq!(PciAddr::parse(bad), None, "{}", bad);
        }
        let (o, _) = parse("lifeboat.ip=dhcp lifeboat.nic=0000:00:03.0");
        assert_eq!(o.net.ip, Some(IpConfig::Dhcp));
        assert_eq!(o.net.nic, Some(NicSelector::Pci(PciAddr { segment: 0, bus: 0, device: 3, function: 0 })));
    }

    #[test]
    fn bad_net_values() {
        for (cmd, want) in [
            ("lifeboat.sink=net", "needs a server"),
            ("lifeboat.sink=net:10.0.2.2", "expected net:"),
            ("lifeboat.sink=net:10.0.2:9000", "not an IPv4"),
            ("lifeboat.sink=net:10.0.2.2:0", "not a TCP port"),
            ("lifeboat.sink=net:10.0.2.2:70000", "not a TCP port"),
            ("lifeboat.sink=net:0.0.0.0:9000", "not a server"),
            ("lifeboat.sink=blk:serial=", "1-20 printable"),
            ("lifeboat.sink=blk:serial=abcdefghijklmnopqrstu", "1-20 printable"),
            ("lifeboat.sink=serial,floppy", "unknown sink 'floppy'"),
            ("lifeboat.sink=serial:x", "unknown sink"),
        ] {
            let (o, w) = parse(cmd);
            assert_eq!(o.sinks, [SinkSpec::Serial], "{}", cmd);
            assert_eq!(w.len(), 1, "{}: {:?}", cmd, w);
            assert!(w[0].contains(want) && w[0].contains("using serial"), "{}: {:?}", cmd, w);
        }
        let (o, w) = parse(
            "lifeboat.ip=10.0.2.15 lifeboat.gw=x lifeboat.nic=52:54 lifeboat.net_wait=0 \
             lifeboat.host=../etc lifeboat.bootid=a/b",
        );
        assert_eq!(o.net, NetOptions { ip: Some(IpConfig::Dhcp), ..NetOptions::default() });
        assert_eq!(o.host, None);
        assert_eq!(o.boot_id, None);
        assert_eq!(w.len(), 6, "{:?}", w);
        let (o, w) = parse("lifeboat.ip=10.0.2.15/33");
        assert_eq!(o.net.ip, Some(IpConfig::Dhcp));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn quotes() {
        let (o, w) = parse("foo=\"a b c\" lifeboat.action=\"halt\" \"lifeboat.level=0\" x");
        assert!(w.is_empty(), "{:?}", w);
        assert_eq!(o.action, Action::Halt);
        assert_eq!(o.level, 0);
        let (o, _) = parse("  \t\n  ");
        assert_eq!(o, CaptureOptions::default());
        // An unterminated quote swallows the rest, without panicking.
        let (o, _) = parse("x=\"unterminated lifeboat.level=0");
        assert_eq!(o.level, 31);
    }
}
