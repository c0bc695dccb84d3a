//! Capture options from the kernel command line.
//!
//! The capture kernel is booted like a Linux kdump kernel, so it finds its configuration the
//! way Linux does, on the command line:
//!
//! | word | meaning |
//! |---|---|
//! | `elfcorehdr=[size@]addr` | where the crashed kernel's ELF core header is (set by the loader) |
//! | `lifeboat.sink=serial` | where the dump goes (a comma-separated list; only `serial` now) |
//! | `lifeboat.serial=ttyS0\|…\|0x2f8[,baud]` | which UART and speed |
//! | `lifeboat.action=reboot\|halt\|poweroff` | what to do when the dump is written |
//! | `lifeboat.level=N` | makedumpfile dump level 0..31 (only 0 and 1 implemented) |
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// The serial port of [`CaptureOptions::serial`], as a framed flattened stream.
    Serial,
}

impl SinkSpec {
    /// Names accepted in `lifeboat.sink=`.
    const KNOWN: &'static str = "serial";

    /// Parses one item of the `lifeboat.sink=` list.
    fn parse_item(item: &str) -> Result<Self, String> {
        match item {
            "serial" => Ok(SinkSpec::Serial),
            _ => Err(format!("unknown sink '{}' (known: {})", item, Self::KNOWN)),
        }
    }

    /// Parses the whole `lifeboat.sink=` list, in order.
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
        }
    }
}

/// A 16550 UART on x86 I/O ports.
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

/// The highest dump level the capture kernel implements.
pub const MAX_IMPLEMENTED_LEVEL: u8 = 1;
/// The default dump level (exclude zero pages, as makedumpfile `-d 1`).
pub const DEFAULT_LEVEL: u8 = 1;

/// Everything the command line configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// `None`: the loader did not say where the ELF core header is (not a kdump boot).
    pub elfcorehdr: Option<ElfCoreHdrArg>,
    pub sink: SinkSpec,
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
            sink: SinkSpec::Serial,
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
                Ok(list) => {
                    // Only one sink exists so far; the list form is for the ones to come.
                    o.sink = list[0];
                    if list.len() > 1 {
                        warnings.push(format!(
                            "lifeboat.sink={}: only one sink is supported yet: using {}",
                            v, o.sink
                        ));
                    }
                }
                Err(why) => {
                    o.sink = SinkSpec::Serial;
                    warnings.push(format!("lifeboat.sink={}: {}: using serial", v, why));
                }
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
                    Ok(l) if l <= MAX_IMPLEMENTED_LEVEL => o.level = l,
                    Ok(l) if u32::from(l) <= crate::kdump::MAX_DUMP_LEVEL => warnings.push(
                        format!("dump level {} not supported yet, using {}", l, DEFAULT_LEVEL),
                    ),
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
        assert_eq!(o.level, 1);
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
        assert_eq!(o.sink, SinkSpec::Serial);
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
        let (o, w) = parse("lifeboat.level=31");
        assert_eq!(o.level, 1);
        assert_eq!(w, ["dump level 31 not supported yet, using 1"]);
        let (o, w) = parse("lifeboat.level=32");
        assert_eq!(o.level, 1);
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
        assert_eq!(o.sink, SinkSpec::Serial);
        assert_eq!(o.exit_port, None);
        assert_eq!(w.len(), 3, "{:?}", w);
        assert!(w[0].contains("unknown sink 'tape'"));
        let (_, w) = parse("lifeboat.sink=serial,serial");
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
        assert_eq!(o.level, 1);
    }
}
