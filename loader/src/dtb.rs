//! The capture kernel's device tree for arm64 `kexec_load`: the running kernel's boot DTB
//! (`/sys/firmware/fdt`) with `/chosen` rewritten for the crash.
//!
//! What changes, as Linux's kexec_file does it (`drivers/of/kexec.c`
//! `of_kexec_alloc_and_setup_fdt()`) and kexec-tools' `setup_2nd_dtb()` (project reference
//! §3.1, §3.2), which the capture kernel's `lifeboat_capture::devtree` reads back:
//!
//! - `/chosen/bootargs` = the capture command line;
//! - `/chosen/linux,elfcorehdr` = `<addr size>` of the ELF core header, plus a `/memreserve/`
//!   entry for it;
//! - `/chosen/linux,usable-memory-range` = the crash reservation ranges (`crashk_res` first);
//! - both encoded with the root node's `#address-cells`/`#size-cells` (default 2 and 1, as
//!   libfdt and the `fdt` crate assume);
//! - removed: the old values of those three, `linux,initrd-start`/`-end` (the capture kernel
//!   has no initrd; their `/memreserve/` entry goes too), `kaslr-seed` and `rng-seed` (a used
//!   seed must not be handed on), and the `/memreserve/` of an old `linux,elfcorehdr`.
//!
//! `/chosen` is created (last child of the root) if the tree has none. Everything else is
//! copied verbatim, so the capture kernel still sees the crashed machine's RAM, console UART,
//! virtio and PCI nodes. The result is packed (no free space), which also shrinks QEMU's
//! 1 MiB blob to its contents.
//!
//! Why a patcher of its own instead of a writer crate: `vm-fdt` (rust-vmm), the well-kept
//! Rust FDT writer, builds trees for VMMs and refuses names the spec discourages but real
//! firmware uses (`__symbols__`, `__overrides__` on Raspberry Pi boards: names must start with
//! a letter there, and node names are capped at 31 characters), so copying an arbitrary booted
//! tree through it could fail on real machines. Copying tokens while rewriting one node is
//! about a hundred lines. The input is first checked by the capture kernel's own validator
//! (`devtree::validate`: header, every token, name and property bounds, nesting), so this
//! walker never indexes outside the blob, and a bad blob is an error, never a panic.

use std::collections::HashMap;
use std::fmt;

use lifeboat_capture::devtree::{self, DtError, FDT_HEADER_SIZE, FDT_MAGIC, MAX_DTB_SIZE};

use crate::memmap::Range;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Written `version` and `last_comp_version` (devicetree specification v0.4 §5.2).
const FDT_VERSION: u32 = 17;
const FDT_LAST_COMP_VERSION: u32 = 16;
/// Most `/memreserve/` entries read from the input (real trees have a handful).
const MAX_MEMRESERVE: usize = 256;

/// `/chosen` properties replaced or removed.
const STALE_CHOSEN: &[&str] = &[
    "bootargs",
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    "linux,initrd-start",
    "linux,initrd-end",
    "kaslr-seed",
    "rng-seed",
];

/// What the capture kernel's `/chosen` gets.
#[derive(Clone, Debug)]
pub struct CrashChosen<'a> {
    pub bootargs: &'a str,
    /// The ELF core header: address and exact size (the property); the `/memreserve/` entry
    /// covers `elfcorehdr_reserve` bytes (its page-rounded segment).
    pub elfcorehdr: Range,
    pub elfcorehdr_reserve: u64,
    /// The crash reservation ranges, main one first.
    pub usable: &'a [Range],
}

/// Why the DTB could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// The running kernel's blob fails the capture kernel's validation.
    Invalid(DtError),
    /// The `/memreserve/` block runs past the blob or has no terminating entry.
    Memreserve,
    /// Root `#address-cells`/`#size-cells` outside 1..=2.
    Cells { address_cells: u32, size_cells: u32 },
    /// A value does not fit the root's cells (e.g. an address above 4 GiB with one cell).
    DoesNotFit {
        what: &'static str,
        value: u64,
        cells: u32,
    },
    /// The command line contains a NUL byte.
    BootargsNul,
    /// The result is larger than the 2 MiB Linux's arm64 boot protocol allows.
    TooLarge { size: usize },
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtbError::Invalid(e) => write!(f, "{e}"),
            DtbError::Memreserve => write!(f, "the /memreserve/ block is malformed"),
            DtbError::Cells { address_cells, size_cells } => write!(
                f,
                "the root node has #address-cells = {address_cells}, #size-cells = {size_cells}; only 1 or 2 are supported"
            ),
            DtbError::DoesNotFit { what, value, cells } => {
                write!(f, "{what} {value:#x} does not fit in {cells} cell(s) (the root's #address-cells/#size-cells)")
            }
            DtbError::BootargsNul => write!(f, "the command line contains a NUL byte"),
            DtbError::TooLarge { size } => {
                write!(f, "the resulting device tree is {size} bytes, more than the 2 MiB arm64 allows")
            }
        }
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}
fn align4(x: usize) -> usize {
    (x + 3) & !3
}

/// One token of a validated structure block.
enum Token<'a> {
    Begin(&'a [u8]),
    Prop { name: &'a [u8], value: &'a [u8] },
    End,
}

/// The structure block's tokens, up to `FDT_END`. Bounds are checked anyway (a malformed
/// block ends the walk with an error instead of indexing out of range).
fn tokens<'a>(structs: &'a [u8], strings: &'a [u8]) -> Result<Vec<Token<'a>>, DtbError> {
    let bad = |offset, what| DtbError::Invalid(DtError::BadStructure { offset, what });
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let tok = be32(structs, at).ok_or(bad(at, "truncated"))?;
        match tok {
            FDT_BEGIN_NODE => {
                let rest = structs.get(at + 4..).ok_or(bad(at, "truncated"))?;
                let n = rest
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(bad(at, "unterminated name"))?;
                out.push(Token::Begin(&rest[..n]));
                at = align4(at + 4 + n + 1);
            }
            FDT_PROP => {
                let len = be32(structs, at + 4).ok_or(bad(at, "truncated"))? as usize;
                let nameoff = be32(structs, at + 8).ok_or(bad(at, "truncated"))? as usize;
                let value = structs
                    .get(at + 12..at + 12 + len)
                    .ok_or(bad(at, "property too long"))?;
                let s = strings.get(nameoff..).ok_or(bad(at, "name offset"))?;
                let n = s
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(bad(at, "unterminated name"))?;
                out.push(Token::Prop {
                    name: &s[..n],
                    value,
                });
                at = align4(at + 12 + len);
            }
            FDT_END_NODE => {
                out.push(Token::End);
                at += 4;
            }
            FDT_NOP => at += 4,
            FDT_END => return Ok(out),
            _ => return Err(bad(at, "unknown token")),
        }
    }
}

/// `/memreserve/` entries of the original blob (the validator's copy may have dropped them).
fn memreserve(blob: &[u8]) -> Result<Vec<(u64, u64)>, DtbError> {
    let total = be32(blob, 4).ok_or(DtbError::Memreserve)? as usize;
    let mut at = be32(blob, 16).ok_or(DtbError::Memreserve)? as usize;
    let mut v = Vec::new();
    loop {
        if at.checked_add(16).is_none_or(|end| end > total) || v.len() > MAX_MEMRESERVE {
            return Err(DtbError::Memreserve);
        }
        let (addr, size) = (
            be64(blob, at).ok_or(DtbError::Memreserve)?,
            be64(blob, at + 8).ok_or(DtbError::Memreserve)?,
        );
        if addr == 0 && size == 0 {
            return Ok(v);
        }
        v.push((addr, size));
        at += 16;
    }
}

fn is_chosen(name: &[u8]) -> bool {
    name == b"chosen" || name.starts_with(b"chosen@")
}

/// The structure and strings blocks being written.
#[derive(Default)]
struct Writer {
    st: Vec<u8>,
    strings: Vec<u8>,
    offsets: HashMap<Vec<u8>, u32>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.st.extend_from_slice(&v.to_be_bytes());
    }
    fn pad(&mut self) {
        while !self.st.len().is_multiple_of(4) {
            self.st.push(0);
        }
    }
    fn begin(&mut self, name: &[u8]) {
        self.u32(FDT_BEGIN_NODE);
        self.st.extend_from_slice(name);
        self.st.push(0);
        self.pad();
    }
    fn end(&mut self) {
        self.u32(FDT_END_NODE);
    }
    fn prop(&mut self, name: &[u8], value: &[u8]) {
        let next = self.strings.len() as u32;
        let off = *self.offsets.entry(name.to_vec()).or_insert_with(|| next);
        if off == next {
            self.strings.extend_from_slice(name);
            self.strings.push(0);
        }
        self.u32(FDT_PROP);
        self.u32(value.len() as u32);
        self.u32(off);
        self.st.extend_from_slice(value);
        self.pad();
    }
}

/// `value` as `cells` big-endian 32-bit cells.
fn put_cells(
    out: &mut Vec<u8>,
    value: u64,
    cells: u32,
    what: &'static str,
) -> Result<(), DtbError> {
    match cells {
        1 => out.extend_from_slice(
            &u32::try_from(value)
                .map_err(|_| DtbError::DoesNotFit { what, value, cells })?
                .to_be_bytes(),
        ),
        _ => out.extend_from_slice(&value.to_be_bytes()),
    }
    Ok(())
}

/// Decodes an `<addr size>` pair (for the old `linux,elfcorehdr`).
fn get_cells(b: &[u8], cells: u32) -> Option<u64> {
    match cells {
        1 => be32(b, 0).map(u64::from),
        _ => be64(b, 0),
    }
}

/// Builds the capture kernel's DTB from the running kernel's `blob`.
pub fn crash_dtb(blob: &[u8], chosen: &CrashChosen) -> Result<Vec<u8>, DtbError> {
    if chosen.bootargs.contains('\0') {
        return Err(DtbError::BootargsNul);
    }
    let checked = devtree::validate(blob).map_err(DtbError::Invalid)?;
    let reserved_in = memreserve(blob)?;
    let b: &[u8] = &checked;
    let hdr = |at| be32(b, at).unwrap_or(0) as usize;
    let (off_struct, off_strings, size_strings, size_struct) = (hdr(8), hdr(12), hdr(32), hdr(36));
    let structs = b
        .get(off_struct..off_struct.saturating_add(size_struct))
        .ok_or(DtbError::Invalid(DtError::BadStructure {
            offset: 0,
            what: "structure block",
        }))?;
    let strings = b
        .get(off_strings..off_strings.saturating_add(size_strings))
        .ok_or(DtbError::Invalid(DtError::BadStructure {
            offset: 0,
            what: "strings block",
        }))?;
    let toks = tokens(structs, strings)?;

    // Pass 1: the root's cells and what the old /chosen said.
    let (mut ac, mut sc) = (2u32, 1u32);
    let mut old: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut depth = 0usize;
    let mut in_chosen = false;
    for t in &toks {
        match t {
            Token::Begin(name) => {
                depth += 1;
                in_chosen = depth == 2 && is_chosen(name);
            }
            Token::End => {
                depth -= 1;
                in_chosen = false;
            }
            Token::Prop { name, value } if depth == 1 => match *name {
                b"#address-cells" => ac = be32(value, 0).unwrap_or(0),
                b"#size-cells" => sc = be32(value, 0).unwrap_or(0),
                _ => {}
            },
            Token::Prop { name, value } if in_chosen => {
                old.insert(name, value);
            }
            Token::Prop { .. } => {}
        }
    }
    if !(1..=2).contains(&ac) || !(1..=2).contains(&sc) {
        return Err(DtbError::Cells {
            address_cells: ac,
            size_cells: sc,
        });
    }

    // The new /chosen properties.
    let mut bootargs = chosen.bootargs.as_bytes().to_vec();
    bootargs.push(0);
    let mut elfcorehdr = Vec::new();
    put_cells(
        &mut elfcorehdr,
        chosen.elfcorehdr.start,
        ac,
        "the elfcorehdr address",
    )?;
    put_cells(
        &mut elfcorehdr,
        chosen.elfcorehdr.len(),
        sc,
        "the elfcorehdr size",
    )?;
    let mut usable = Vec::new();
    for r in chosen.usable {
        put_cells(&mut usable, r.start, ac, "a crash reservation address")?;
        put_cells(&mut usable, r.len(), sc, "a crash reservation size")?;
    }
    let new_props: [(&[u8], &[u8]); 3] = [
        (b"bootargs", &bootargs),
        (b"linux,elfcorehdr", &elfcorehdr),
        (b"linux,usable-memory-range", &usable),
    ];

    // Pass 2: copy, rewriting /chosen.
    let mut w = Writer::default();
    let mut depth = 0usize;
    let mut in_chosen = false;
    let mut added = false;
    for t in &toks {
        match t {
            Token::Begin(name) => {
                if in_chosen && !added {
                    // /chosen's first child: its properties end here.
                    new_props.iter().for_each(|(n, v)| w.prop(n, v));
                    added = true;
                }
                depth += 1;
                in_chosen = depth == 2 && is_chosen(name);
                w.begin(name);
            }
            Token::End => {
                if depth == 2 && in_chosen && !added {
                    new_props.iter().for_each(|(n, v)| w.prop(n, v));
                    added = true;
                }
                if depth == 1 && !added {
                    w.begin(b"chosen");
                    new_props.iter().for_each(|(n, v)| w.prop(n, v));
                    w.end();
                    added = true;
                }
                in_chosen = false;
                depth -= 1;
                w.end();
            }
            Token::Prop { name, .. }
                if in_chosen && STALE_CHOSEN.iter().any(|s| s.as_bytes() == *name) => {}
            Token::Prop { name, value } => w.prop(name, value),
        }
    }
    w.u32(FDT_END);

    // /memreserve/: the old entries less stale ones, then the elfcorehdr.
    let range_of = |start: &[u8], end: &[u8]| -> Option<(u64, u64)> {
        let s = get_cells(start, if start.len() == 4 { 1 } else { 2 })?;
        let e = get_cells(end, if end.len() == 4 { 1 } else { 2 })?;
        Some((s, e.checked_sub(s)?))
    };
    let mut stale = Vec::new();
    if let (Some(s), Some(e)) = (
        old.get(&b"linux,initrd-start"[..]),
        old.get(&b"linux,initrd-end"[..]),
    ) {
        stale.extend(range_of(s, e));
    }
    if let Some(v) = old.get(&b"linux,elfcorehdr"[..]) {
        let a = ac as usize * 4;
        if let (Some(addr), Some(size)) =
            (get_cells(v, ac), v.get(a..).and_then(|s| get_cells(s, sc)))
        {
            stale.push((addr, size));
        }
    }
    let new_rsv = (
        chosen.elfcorehdr.start,
        chosen.elfcorehdr_reserve.max(chosen.elfcorehdr.len()),
    );
    let mut reserve: Vec<(u64, u64)> = reserved_in
        .into_iter()
        .filter(|r| {
            !stale
                .iter()
                .any(|s| s.0 == r.0 && (s.1 == r.1 || s.1.div_ceil(4096) * 4096 == r.1))
        })
        .filter(|r| *r != new_rsv)
        .collect();
    reserve.push(new_rsv);

    // Header, /memreserve/, structure block, strings block.
    let off_rsv = FDT_HEADER_SIZE;
    let off_st = off_rsv + 16 * (reserve.len() + 1);
    let off_str = off_st + w.st.len();
    let total = off_str + w.strings.len();
    if total > MAX_DTB_SIZE {
        return Err(DtbError::TooLarge { size: total });
    }
    let mut out = Vec::with_capacity(total);
    let boot_cpuid = be32(b, 28).unwrap_or(0);
    for v in [
        FDT_MAGIC,
        total as u32,
        off_st as u32,
        off_str as u32,
        off_rsv as u32,
        FDT_VERSION,
        FDT_LAST_COMP_VERSION,
        boot_cpuid,
        w.strings.len() as u32,
        w.st.len() as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for (a, s) in reserve.iter().chain([(0, 0)].iter()) {
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(&w.st);
    out.extend_from_slice(&w.strings);
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// Test blobs, written by a builder independent of [`crash_dtb`].
#[cfg(test)]
pub(crate) mod testdtb {
    /// Builds a DTB token by token (spec §5): header, reservations, structure, strings.
    #[derive(Default)]
    pub struct Builder {
        pub st: Vec<u8>,
        pub strings: Vec<u8>,
        pub reserve: Vec<(u64, u64)>,
    }
    impl Builder {
        fn pad(&mut self) {
            while !self.st.len().is_multiple_of(4) {
                self.st.push(0);
            }
        }
        pub fn begin(&mut self, name: &str) -> &mut Self {
            self.st.extend_from_slice(&1u32.to_be_bytes());
            self.st.extend_from_slice(name.as_bytes());
            self.st.push(0);
            self.pad();
            self
        }
        pub fn end(&mut self) -> &mut Self {
            self.st.extend_from_slice(&2u32.to_be_bytes());
            self
        }
        pub fn nop(&mut self) -> &mut Self {
            self.st.extend_from_slice(&4u32.to_be_bytes());
            self
        }
        pub fn prop(&mut self, name: &str, v: &[u8]) -> &mut Self {
            // No string sharing, unlike the writer under test.
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.st.extend_from_slice(&3u32.to_be_bytes());
            self.st.extend_from_slice(&(v.len() as u32).to_be_bytes());
            self.st.extend_from_slice(&off.to_be_bytes());
            self.st.extend_from_slice(v);
            self.pad();
            self
        }
        pub fn cells(&mut self, name: &str, c: &[u32]) -> &mut Self {
            let v: Vec<u8> = c.iter().flat_map(|x| x.to_be_bytes()).collect();
            self.prop(name, &v)
        }
        pub fn str(&mut self, name: &str, s: &str) -> &mut Self {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            self.prop(name, &v)
        }
        /// The blob, padded to `pad_to` bytes of totalsize (QEMU leaves free space).
        pub fn finish(&self, pad_to: usize) -> Vec<u8> {
            let mut st = self.st.clone();
            st.extend_from_slice(&9u32.to_be_bytes());
            let off_rsv = 40 + 8; // a gap, as some producers leave
            let off_st = off_rsv + 16 * (self.reserve.len() + 1);
            let off_str = off_st + st.len();
            let total = (off_str + self.strings.len()).max(pad_to);
            let mut b = vec![0u8; total];
            let h = [
                0xd00d_feedu32,
                total as u32,
                off_st as u32,
                off_str as u32,
                off_rsv as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                st.len() as u32,
            ];
            for (i, v) in h.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
            }
            for (i, (a, s)) in self.reserve.iter().enumerate() {
                let at = off_rsv + 16 * i;
                b[at..at + 8].copy_from_slice(&a.to_be_bytes());
                b[at + 8..at + 16].copy_from_slice(&s.to_be_bytes());
            }
            b[off_st..off_str].copy_from_slice(&st);
            b[off_str..off_str + self.strings.len()].copy_from_slice(&self.strings);
            b
        }
    }

    /// A QEMU `virt`-like tree of the crashed machine: 2/2 cells, RAM at 1 GiB, a PL011,
    /// `/chosen` with what a booted kernel leaves there (initrd, seeds, stdout-path) and a
    /// child node, a `__symbols__` node, NOPs, an initrd `/memreserve/`; 1 MiB totalsize.
    pub fn virt_like() -> Vec<u8> {
        let mut b = Builder {
            reserve: vec![(0x4800_0000, 0x20_0000), (0x4000_0000, 0x1000)],
            ..Builder::default()
        };
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .str("compatible", "linux,dummy-virt")
            .cells("interrupt-parent", &[0x8002]);
        b.begin("memory@40000000")
            .str("device_type", "memory")
            .cells("reg", &[0, 0x4000_0000, 0, 0x4000_0000])
            .end();
        b.begin("pl011@9000000")
            .str("compatible", "arm,pl011")
            .cells("reg", &[0, 0x0900_0000, 0, 0x1000])
            .end();
        b.begin("chosen")
            .str("bootargs", "console=ttyAMA0 root=/dev/vda crashkernel=64M")
            .cells("kaslr-seed", &[0x1234_5678, 0x9abc_def0])
            .prop("rng-seed", &[7u8; 64])
            .cells("linux,initrd-start", &[0, 0x4800_0000])
            .cells("linux,initrd-end", &[0, 0x4820_0000])
            .nop()
            .str("stdout-path", "/pl011@9000000")
            .begin("framebuffer@0")
            .str("status", "disabled")
            .end()
            .end();
        b.begin("__symbols__").str("uart0", "/pl011@9000000").end();
        b.end();
        b.finish(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::testdtb::{virt_like, Builder};
    use super::*;
    use fdt::Fdt;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    const USABLE: [Range; 2] = [
        Range {
            start: 0x7c00_0000,
            end: 0x8000_0000,
        },
        Range {
            start: 0x2000_0000,
            end: 0x2040_0000,
        },
    ];

    fn chosen<'a>(usable: &'a [Range]) -> CrashChosen<'a> {
        CrashChosen {
            bootargs: "lifeboat.action=halt lifeboat.sink=serial",
            elfcorehdr: r(0x7c06_2000, 0x7c06_2000 + 0x2b0),
            elfcorehdr_reserve: 0x1000,
            usable,
        }
    }

    fn be_cells(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn chosen_is_rewritten_and_everything_else_kept() {
        let input = virt_like();
        let out = crash_dtb(&input, &chosen(&USABLE)).unwrap();
        assert!(out.len() < 4096, "packed: {} bytes", out.len());
        let fdt = Fdt::new(&out).unwrap();
        assert_eq!(fdt.total_size(), out.len());
        let c = fdt.find_node("/chosen").unwrap();
        let props: Vec<(&str, &[u8])> = c.properties().map(|p| (p.name, p.value)).collect();
        let names: Vec<&str> = props.iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            [
                "stdout-path",
                "bootargs",
                "linux,elfcorehdr",
                "linux,usable-memory-range"
            ],
            "stale properties dropped, new ones after the kept ones and before the child node"
        );
        assert_eq!(props[0].1, b"/pl011@9000000\0");
        assert_eq!(props[1].1, b"lifeboat.action=halt lifeboat.sink=serial\0");
        assert_eq!(props[2].1, be_cells(&[0, 0x7c06_2000, 0, 0x2b0]));
        assert_eq!(
            props[3].1,
            be_cells(&[0, 0x7c00_0000, 0, 0x0400_0000, 0, 0x2000_0000, 0, 0x40_0000])
        );
        assert_eq!(
            c.children().map(|n| n.name).collect::<Vec<_>>(),
            ["framebuffer@0"]
        );
        // The rest of the tree, property for property.
        let root = fdt.find_node("/").unwrap();
        assert_eq!(
            root.children().map(|n| n.name).collect::<Vec<_>>(),
            ["memory@40000000", "pl011@9000000", "chosen", "__symbols__"]
        );
        let rp: Vec<&str> = root.properties().map(|p| p.name).collect();
        assert_eq!(
            rp,
            [
                "#address-cells",
                "#size-cells",
                "compatible",
                "interrupt-parent"
            ]
        );
        assert_eq!(
            fdt.find_node("/memory@40000000")
                .unwrap()
                .property("reg")
                .unwrap()
                .value,
            &be_cells(&[0, 0x4000_0000, 0, 0x4000_0000])[..]
        );
        assert_eq!(
            fdt.find_node("/__symbols__")
                .unwrap()
                .property("uart0")
                .unwrap()
                .value,
            b"/pl011@9000000\0"
        );
        // /memreserve/: the initrd's entry is gone, the other kept, the elfcorehdr's added.
        let rsv: Vec<(u64, u64)> = fdt
            .memory_reservations()
            .map(|m| (m.address() as u64, m.size() as u64))
            .collect();
        assert_eq!(rsv, [(0x4000_0000, 0x1000), (0x7c06_2000, 0x1000)]);

        // The capture kernel's own parser reads the same.
        let info = lifeboat_capture::devtree::DtBootInfo::parse(&out).unwrap();
        assert_eq!(info.cmdline, "lifeboat.action=halt lifeboat.sink=serial");
        let e = info.elfcorehdr.unwrap();
        assert_eq!((e.start, e.end), (0x7c06_2000, 0x7c06_22b0));
        let u: Vec<(u64, u64)> = info.usable.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(u, [(0x7c00_0000, 0x8000_0000), (0x2000_0000, 0x2040_0000)]);

        // Loading again from a tree that already has our /chosen changes nothing.
        assert_eq!(crash_dtb(&out, &chosen(&USABLE)).unwrap(), out);
    }

    #[test]
    fn one_cell_roots_and_a_missing_chosen() {
        let mut b = Builder::default();
        b.begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .begin("memory@80000000")
            .str("device_type", "memory")
            .cells("reg", &[0x8000_0000, 0x4000_0000])
            .end()
            .end();
        let input = b.finish(0);
        let out = crash_dtb(&input, &chosen(&USABLE[..1])).unwrap();
        let fdt = Fdt::new(&out).unwrap();
        let c = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            c.property("linux,elfcorehdr").unwrap().value,
            &be_cells(&[0x7c06_2000, 0x2b0])[..]
        );
        assert_eq!(
            c.property("linux,usable-memory-range").unwrap().value,
            &be_cells(&[0x7c00_0000, 0x0400_0000])[..]
        );
        assert_eq!(
            c.property("bootargs").unwrap().as_str(),
            Some("lifeboat.action=halt lifeboat.sink=serial")
        );
        assert_eq!(
            fdt.find_node("/memory@80000000")
                .unwrap()
                .property("reg")
                .unwrap()
                .value
                .len(),
            8
        );
        // An address above 4 GiB cannot be said in one cell.
        let high = [r(0x1_0000_0000, 0x1_0400_0000)];
        assert_eq!(
            crash_dtb(&input, &chosen(&high)).unwrap_err(),
            DtbError::DoesNotFit {
                what: "a crash reservation address",
                value: 0x1_0000_0000,
                cells: 1
            }
        );
        // No #address-cells/#size-cells: 2 and 1.
        let mut b = Builder::default();
        b.begin("").str("model", "x").end();
        let out = crash_dtb(&b.finish(0), &chosen(&USABLE[..1])).unwrap();
        let fdt = Fdt::new(&out).unwrap();
        assert_eq!(
            fdt.find_node("/chosen")
                .unwrap()
                .property("linux,elfcorehdr")
                .unwrap()
                .value,
            &be_cells(&[0, 0x7c06_2000, 0x2b0])[..]
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let good = virt_like();
        let c = chosen(&USABLE);
        assert!(matches!(
            crash_dtb(&good[..30], &c),
            Err(DtbError::Invalid(_))
        ));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(
            crash_dtb(&bad, &c),
            Err(DtbError::Invalid(DtError::BadMagic { .. }))
        ));
        // A structure block cut short, and garbage in it.
        let mut bad = good.clone();
        let off_st = u32::from_be_bytes(bad[8..12].try_into().unwrap()) as usize;
        bad[off_st..off_st + 4].copy_from_slice(&0x7777u32.to_be_bytes());
        assert!(matches!(
            crash_dtb(&bad, &c),
            Err(DtbError::Invalid(DtError::BadStructure { .. }))
        ));
        let mut bad = good.clone();
        bad[36..40].copy_from_slice(&8u32.to_be_bytes());
        assert!(crash_dtb(&bad, &c).is_err());
        // A /memreserve/ block without its terminator.
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&((1u32 << 20) - 16).to_be_bytes());
        bad[(1 << 20) - 16..].fill(0xff);
        assert_eq!(crash_dtb(&bad, &c).unwrap_err(), DtbError::Memreserve);
        // Three address cells.
        let mut b = Builder::default();
        b.begin("").cells("#address-cells", &[3]).end();
        assert_eq!(
            crash_dtb(&b.finish(0), &c).unwrap_err(),
            DtbError::Cells {
                address_cells: 3,
                size_cells: 1
            }
        );
        let nul = CrashChosen {
            bootargs: "a\0b",
            ..c
        };
        assert_eq!(crash_dtb(&good, &nul).unwrap_err(), DtbError::BootargsNul);
        // Every truncation and every flipped byte of the header and structure: no panic.
        for n in 0..good.len().min(2048) {
            let _ = crash_dtb(&good[..n], &c);
        }
        let mut state = 0x5eed_u64;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut m = good.clone();
            let at = (rng() % 1200) as usize;
            m[at] ^= 1 << (rng() % 8);
            let _ = crash_dtb(&m, &c);
        }
    }
}
