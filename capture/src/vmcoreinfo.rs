//! The VMCOREINFO note: `KEY=VALUE\n` lines the crashed kernel wrote about itself.
//!
//! Written by Linux `kernel/vmcore_info.c` (`crash_save_vmcoreinfo_init()`, arch hooks,
//! `CRASHTIME=` added at crash time); the line forms are summarised in the project reference,
//! §6.0: `OSRELEASE=`, `PAGESIZE=` (decimal), `SYMBOL(name)=` (hex, no `0x`), `SIZE(x)=`,
//! `OFFSET(x.y)=`, `LENGTH(x)=` (decimal), `NUMBER(x)=` (decimal, some arches `0x` hex),
//! `KERNELOFFSET=` (hex), `CRASHTIME=` (decimal seconds).
//!
//! The text is old memory of a crashed kernel: lines that are not UTF-8 or have no `=` are
//! skipped, trailing NULs (note padding) ignored, and every value is parsed with checked
//! arithmetic. The first occurrence of a key wins.

/// A view of a VMCOREINFO note descriptor.
#[derive(Clone, Copy, Debug)]
pub struct VmcoreInfo<'a> {
    text: &'a [u8],
}

impl<'a> VmcoreInfo<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Self { text }
    }

    /// The usable `(key, value)` lines, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.text.split(|&c| c == b'\n').filter_map(|line| {
            let end = line.iter().rposition(|&c| c != 0 && c != b'\r')? + 1;
            let line = core::str::from_utf8(&line[..end]).ok()?;
            if line.contains('\0') {
                return None;
            }
            line.split_once('=')
        })
    }

    /// The value of `key` (exact match, e.g. `"OSRELEASE"` or `"SYMBOL(_stext)"`).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of `kind(name)`, e.g. `SYMBOL(init_uts_ns)`, without allocating the key.
    fn get_wrapped(&self, kind: &str, name: &str) -> Option<&'a str> {
        self.entries()
            .find(|(k, _)| {
                k.strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('('))
                    .and_then(|r| r.strip_suffix(')'))
                    == Some(name)
            })
            .map(|(_, v)| v)
    }

    /// `SYMBOL(name)`: a kernel virtual address (hex).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        parse_hex(self.get_wrapped("SYMBOL", name)?)
    }

    /// `OFFSET(name)`, e.g. `offset("uts_namespace.name")`.
    pub fn offset(&self, name: &str) -> Option<u64> {
        parse_dec(self.get_wrapped("OFFSET", name)?)
    }

    /// `SIZE(name)`.
    pub fn size(&self, name: &str) -> Option<u64> {
        parse_dec(self.get_wrapped("SIZE", name)?)
    }

    /// `LENGTH(name)`.
    pub fn length(&self, name: &str) -> Option<u64> {
        parse_dec(self.get_wrapped("LENGTH", name)?)
    }

    /// `NUMBER(name)`: decimal (possibly negative) or `0x` hex. Hex values above `i64::MAX`
    /// are 64-bit two's complement (arm64 writes addresses such as `kimage_voffset` so).
    pub fn number(&self, name: &str) -> Option<i64> {
        parse_number(self.get_wrapped("NUMBER", name)?)
    }

    /// `PAGESIZE`.
    pub fn page_size(&self) -> Option<u64> {
        parse_dec(self.get("PAGESIZE")?)
    }

    /// `OSRELEASE`, the crashed kernel's `uname -r`.
    pub fn osrelease(&self) -> Option<&'a str> {
        self.get("OSRELEASE")
    }

    /// `CRASHTIME`: seconds since the epoch at the crash.
    pub fn crashtime(&self) -> Option<i64> {
        parse_number(self.get("CRASHTIME")?)
    }

    /// `KERNELOFFSET`: the KASLR displacement of the kernel image (hex).
    pub fn kerneloffset(&self) -> Option<u64> {
        parse_hex(self.get("KERNELOFFSET")?)
    }
}

/// Hex digits, with or without a `0x` prefix.
fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn parse_dec(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_number(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, mag) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let value: i64 = if mag.starts_with("0x") || mag.starts_with("0X") {
        parse_hex(mag)? as i64
    } else {
        let m = parse_dec(mag)?;
        if neg && m == 1u64 << 63 {
            return Some(i64::MIN);
        }
        i64::try_from(m).ok()?
    };
    if neg {
        value.checked_neg()
    } else {
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"OSRELEASE=6.1.0-25-cloud-amd64\n\
BUILD-ID=0123abcd\n\
PAGESIZE=4096\n\
SYMBOL(init_uts_ns)=ffffffff82a1a2c0\n\
OFFSET(uts_namespace.name)=4\n\
SIZE(page)=64\n\
LENGTH(zone.free_area)=11\n\
\xff\xfe junk line\n\
no equals sign here\n\
NUMBER(phys_base)=-1577058304\n\
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n\
NUMBER(kimage_voffset)=0xffff800070000000\n\
NUMBER(pgtable_l5_enabled)=0\n\
KERNELOFFSET=1000000\n\
OSRELEASE=second-one-ignored\n\
CRASHTIME=1700000000\n\0\0\0\0";

    #[test]
    fn parses_all_forms() {
        let v = VmcoreInfo::new(SAMPLE);
        assert_eq!(v.osrelease(), Some("6.1.0-25-cloud-amd64"));
        assert_eq!(v.get("BUILD-ID"), Some("0123abcd"));
        assert_eq!(v.page_size(), Some(4096));
        assert_eq!(v.symbol("init_uts_ns"), Some(0xffffffff82a1a2c0));
        assert_eq!(v.symbol("init_uts"), None);
        assert_eq!(v.offset("uts_namespace.name"), Some(4));
        assert_eq!(v.size("page"), Some(64));
        assert_eq!(v.length("zone.free_area"), Some(11));
        assert_eq!(v.number("phys_base"), Some(-1577058304));
        assert_eq!(v.number("PAGE_BUDDY_MAPCOUNT_VALUE"), Some(-129));
        assert_eq!(v.number("kimage_voffset"), Some(0xffff800070000000u64 as i64));
        assert_eq!(v.number("pgtable_l5_enabled"), Some(0));
        assert_eq!(v.kerneloffset(), Some(0x1000000));
        assert_eq!(v.crashtime(), Some(1700000000));
        assert_eq!(v.get("no equals sign here"), None);
    }

    #[test]
    fn rejects_bad_values() {
        let v = VmcoreInfo::new(
            b"PAGESIZE=4k\nSYMBOL(a)=xyz\nSYMBOL(b)=\nNUMBER(c)=99999999999999999999\n\
NUMBER(d)=-9223372036854775808\nOFFSET(e)=-4\nCRASHTIME=",
        );
        assert_eq!(v.page_size(), None);
        assert_eq!(v.symbol("a"), None);
        assert_eq!(v.symbol("b"), None);
        assert_eq!(v.number("c"), None);
        assert_eq!(v.number("d"), Some(i64::MIN));
        assert_eq!(v.offset("e"), None);
        assert_eq!(v.crashtime(), None);
        assert_eq!(VmcoreInfo::new(b"").osrelease(), None);
        assert_eq!(VmcoreInfo::new(b"\0\0\0\0").entries().count(), 0);
    }
}
