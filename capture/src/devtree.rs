//! Boot information from a flattened device tree (arm64: x0 at entry), checked once.
//!
//! On arm64 the capture kernel is entered with x0 = the physical address of a DTB
//! (`Documentation/arch/arm64/booting.rst`). Both loaders start from the crashed kernel's own
//! boot DTB and add to `/chosen` (project reference §3.1, §3.2):
//!
//! - `bootargs`: the capture command line;
//! - `linux,elfcorehdr` = `<addr size>`: the ELF core header (kexec_file
//!   `of_kexec_alloc_and_setup_fdt()` in `drivers/of/kexec.c`, kexec-tools `setup_2nd_dtb()`);
//! - `linux,usable-memory-range` = `<addr size>` once or twice: `crashk_res`, then
//!   `crashk_low_res` — the only memory the capture kernel may use.
//!
//! All of them are encoded with the root's `#address-cells`/`#size-cells`. The rest of the tree
//! still describes the crashed machine: its RAM (`/memory*`), the console UART
//! (`/chosen/stdout-path`), virtio-mmio transports, PCI ECAM host bridges and PSCI.
//!
//! The DTB is untrusted input (it lies in memory a crashed kernel prepared). [`DtBootInfo::parse`]
//! is the one checked constructor. It first walks the whole structure block itself
//! ([`validate`]): header offsets inside `totalsize`, every token, name and property inside its
//! block, property names NUL-terminated UTF-8 in the strings block, nodes balanced, nesting at
//! most [`MAX_DEPTH`], properties before child nodes, cell-count properties 4 bytes long. Only
//! then does it hand the blob to the `fdt` crate (0.1.5), whose accessors `unwrap`/`assert`
//! on exactly those properties (`node.rs` `skip_current_node`, `NodeProperty::parse`,
//! `Fdt::str_at_offset`, `all_nodes`) and would otherwise panic on a corrupt blob. `FDT_NOP`
//! tokens, which `fdt` only skips in some places, are removed first (into a copy). `fdt`'s
//! `find_node`, `chosen()`, `memory()` and alias resolution are not used: they panic on missing
//! nodes or recurse forever on an alias that names itself; paths are resolved here.
//!
//! Not handled (said where it matters): reg translation through `ranges` with more than two
//! address cells (PCI child buses), `dma-ranges`, `linux,usable-memory` in memory nodes, and
//! interrupt specifiers beyond keeping their raw cells (the interrupt parent's
//! `#interrupt-cells` is not resolved).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::phys::PhysRange;

/// `FDT_MAGIC` (devicetree specification v0.4 §5.2).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// `struct fdt_header`: ten big-endian `u32` (spec §5.2, libfdt `fdt.h`).
pub const FDT_HEADER_SIZE: usize = 40;
/// First version with `size_dt_struct`; `fdt` relies on that field.
pub const FDT_MIN_VERSION: u32 = 17;
/// Largest `last_comp_version` this parser understands.
pub const FDT_MAX_COMP_VERSION: u32 = 17;
/// Largest DTB believed (kexec_file places it in one 2 MiB-aligned block; QEMU pads to 1 MiB).
pub const MAX_DTB_SIZE: usize = 2 << 20;
/// Deepest node nesting accepted (real trees use < 10; `fdt`'s `all_nodes` allows 63).
pub const MAX_DEPTH: usize = 32;
/// Merged `/memory` ranges kept; more is an error (the RAM map would be incomplete).
pub const MAX_MEMORY_RANGES: usize = 64;
/// Entries of `linux,usable-memory-range` (Linux `MAX_USABLE_RANGES`: crashk_res, crashk_low_res).
pub const MAX_USABLE_RANGES: usize = 2;
/// virtio-mmio transports kept (QEMU virt has 32); more are dropped with a warning.
pub const MAX_VIRTIO_MMIO: usize = 64;
/// PCI ECAM host bridges kept; more are dropped with a warning.
pub const MAX_PCI_HOSTS: usize = 8;
/// `ranges` windows kept per PCI host bridge; more are dropped with a warning.
pub const MAX_PCI_WINDOWS: usize = 8;
/// Fixed clocks remembered to resolve a UART's `clocks` phandle.
const MAX_FIXED_CLOCKS: usize = 32;

// Header field offsets (spec §5.2, libfdt `struct fdt_header`).
const H_MAGIC: usize = 0;
const H_TOTALSIZE: usize = 4;
const H_OFF_DT_STRUCT: usize = 8;
const H_OFF_DT_STRINGS: usize = 12;
const H_OFF_MEM_RSVMAP: usize = 16;
const H_VERSION: usize = 20;
const H_LAST_COMP_VERSION: usize = 24;
const H_SIZE_DT_STRINGS: usize = 32;
const H_SIZE_DT_STRUCT: usize = 36;
const _: () = assert!(H_SIZE_DT_STRUCT + 4 == FDT_HEADER_SIZE);

// Structure block tokens (spec §5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// `FDT_PROP` token + `struct fdt_property { len, nameoff }`.
const PROP_HEADER_SIZE: usize = 12;
const _: () = assert!(PROP_HEADER_SIZE == 3 * 4);

/// Why a DTB was refused. Every variant is fatal to [`DtBootInfo::parse`]; lesser problems are
/// [`DtBootInfo::warnings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Fewer bytes than the 40-byte header.
    Truncated { have: usize },
    /// `magic` is not `0xd00dfeed`.
    BadMagic { found: u32 },
    /// `version` below 17 or `last_comp_version` above 17.
    BadVersion {
        version: u32,
        last_comp_version: u32,
    },
    /// `totalsize` smaller than the header, larger than the bytes available or than
    /// [`MAX_DTB_SIZE`].
    BadTotalSize { totalsize: u32, available: usize },
    /// The structure or strings block reaches past `totalsize`.
    BlockOutOfBounds {
        block: &'static str,
        offset: u32,
        size: u32,
        totalsize: u32,
    },
    /// The structure block is malformed at `offset` (relative to the block).
    BadStructure { offset: usize, what: &'static str },
    /// A property whose length is not what its meaning requires.
    PropertyLength {
        node: String,
        property: &'static str,
        len: usize,
        expected: String,
    },
    /// `#address-cells`/`#size-cells` this parser cannot decode into 64-bit values.
    UnsupportedCells {
        node: String,
        address_cells: usize,
        size_cells: usize,
    },
    /// `address + size` does not fit in 64 bits.
    AddressOverflow {
        what: &'static str,
        addr: u64,
        size: u64,
    },
    /// No `/chosen` node: not a DTB a kexec loader prepared.
    NoChosen,
    /// More entries than the parser keeps, where dropping some would be wrong.
    TooMany {
        what: &'static str,
        found: usize,
        limit: usize,
    },
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::Truncated { have } => write!(
                f,
                "device tree truncated: {} bytes, the header alone is {}; x0 does not point at a DTB",
                have, FDT_HEADER_SIZE
            ),
            DtError::BadMagic { found } => write!(
                f,
                "device tree magic is {:#010x}, not {:#010x}; x0 does not point at a DTB",
                found, FDT_MAGIC
            ),
            DtError::BadVersion { version, last_comp_version } => write!(
                f,
                "device tree version {} (last compatible {}) not supported: need version >= {} \
                 and last compatible <= {}",
                version, last_comp_version, FDT_MIN_VERSION, FDT_MAX_COMP_VERSION
            ),
            DtError::BadTotalSize { totalsize, available } => write!(
                f,
                "device tree totalsize {} is impossible ({} bytes available, at most {} believed)",
                totalsize, available, MAX_DTB_SIZE
            ),
            DtError::BlockOutOfBounds { block, offset, size, totalsize } => write!(
                f,
                "device tree {} block at offset {:#x} size {:#x} reaches past totalsize {:#x}",
                block, offset, size, totalsize
            ),
            DtError::BadStructure { offset, what } => write!(
                f,
                "device tree structure block malformed at offset {:#x}: {}; the DTB is corrupt",
                offset, what
            ),
            DtError::PropertyLength { node, property, len, expected } => write!(
                f,
                "device tree property {}/{} is {} bytes, expected {}",
                node, property, len, expected
            ),
            DtError::UnsupportedCells { node, address_cells, size_cells } => write!(
                f,
                "device tree node {} has #address-cells = {}, #size-cells = {}; only 1 or 2 \
                 (size also 0 where allowed) are supported",
                node, address_cells, size_cells
            ),
            DtError::AddressOverflow { what, addr, size } => write!(
                f,
                "device tree {}: address {:#x} + size {:#x} overflows 64 bits",
                what, addr, size
            ),
            DtError::NoChosen => write!(
                f,
                "device tree has no /chosen node: no command line and no elfcorehdr; \
                 load the capture kernel with kexec -p or kexec_file_load"
            ),
            DtError::TooMany { what, found, limit } => {
                write!(f, "device tree has {} {}, at most {} are supported", found, what, limit)
            }
        }
    }
}

/// Which UART register layout the console uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PL011 (`arm,pl011`).
    Pl011,
    /// SBSA generic UART (`arm,sbsa-uart`): PL011 registers, baud and format fixed by firmware.
    SbsaUart,
    /// 8250/16550-compatible: register `i` at `base + (i << reg_shift)`, accessed
    /// `reg_io_width` bytes wide.
    Ns16550 { reg_shift: u8, reg_io_width: u8 },
}

/// The console named by `/chosen/stdout-path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtUart {
    pub kind: UartKind,
    /// CPU physical address of the registers (after `ranges` translation).
    pub base: u64,
    /// Size of the register window from `reg` (0 if the bus has `#size-cells = 0`).
    pub size: u64,
    /// Input clock: `clock-frequency`, else the first `clocks` phandle's fixed clock.
    pub clock_hz: Option<u32>,
    /// Baud rate from the stdout-path options (`serial0:115200n8`), if given.
    pub baud: Option<u32>,
    /// Full path of the node, for messages.
    pub path: String,
}

/// An interrupt specifier, raw: its meaning depends on the interrupt parent's
/// `#interrupt-cells`, which is not resolved here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    cells: [u32; 4],
    len: u8,
}

impl Interrupt {
    /// The cells of the `interrupts` property (at most the first four).
    pub fn cells(&self) -> &[u32] {
        &self.cells[..usize::from(self.len)]
    }
    /// The first cell.
    pub fn first(&self) -> Option<u32> {
        self.cells().first().copied()
    }
    /// For a 3-cell GIC specifier `<0 (SPI) n flags>`: the GIC INTID `32 + n`.
    pub fn gic_spi_intid(&self) -> Option<u32> {
        match self.cells() {
            [0, n, _] => n.checked_add(32),
            _ => None,
        }
    }
}

/// A `virtio,mmio` transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// CPU physical address of the register window.
    pub base: u64,
    pub size: u64,
    pub interrupt: Option<Interrupt>,
}

/// Address space of a PCI `ranges` window (bits 24-25 of `phys.hi`, PCI bus binding §2.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mmio32,
    Mmio64,
}

/// One PCI `ranges` entry: PCI addresses `[pci_addr, +size)` appear at `cpu_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    pub prefetchable: bool,
    pub pci_addr: u64,
    pub cpu_addr: u64,
    pub size: u64,
}

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciEcam {
    /// ECAM window (CPU physical), 1 MiB per bus starting at `bus_start`.
    pub ecam: PhysRange,
    /// `bus-range` (default 0..=255).
    pub bus_start: u8,
    pub bus_end: u8,
    /// `linux,pci-domain`, if present.
    pub domain: Option<u32>,
    pub windows: Vec<PciWindow>,
}

/// How PSCI calls are made (`/psci` `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psci {
    pub method: PsciMethod,
    /// Compatible with `arm,psci-0.2` or later: the standard function IDs (SYSTEM_OFF
    /// 0x8400_0008, SYSTEM_RESET 0x8400_0009) apply. PSCI 0.1 has only per-node IDs.
    pub standard_ids: bool,
}

/// What the DTB tells the arm64 capture kernel, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtBootInfo {
    /// `/chosen/bootargs` (empty if absent).
    pub cmdline: String,
    /// `/chosen/linux,elfcorehdr`.
    pub elfcorehdr: Option<PhysRange>,
    /// `/chosen/linux,usable-memory-range`, in DTB order (crashk_res first), empty ones dropped.
    pub usable: Vec<PhysRange>,
    /// RAM from all `/memory*` nodes' `reg`, sorted and merged.
    pub memory: Vec<PhysRange>,
    /// The console, if `stdout-path` names a UART this parser knows.
    pub stdout: Option<DtUart>,
    /// `virtio,mmio` nodes in DTB order.
    pub virtio_mmio: Vec<VirtioMmio>,
    /// `pci-host-ecam-generic` nodes in DTB order.
    pub pci_ecam: Vec<PciEcam>,
    pub psci: Option<Psci>,
    /// Problems that did not stop parsing (print them).
    pub warnings: Vec<String>,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let s = b.get(off..end)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// `totalsize` from a DTB header, checked against [`MAX_DTB_SIZE`]: how many bytes the kernel
/// should make readable at x0 before calling [`DtBootInfo::parse`].
pub fn total_size(header: &[u8]) -> Result<usize, DtError> {
    let magic = be32(header, H_MAGIC).ok_or(DtError::Truncated { have: header.len() })?;
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic { found: magic });
    }
    let totalsize = be32(header, H_TOTALSIZE).ok_or(DtError::Truncated { have: header.len() })?;
    let size = totalsize as usize;
    if !(FDT_HEADER_SIZE..=MAX_DTB_SIZE).contains(&size) {
        return Err(DtError::BadTotalSize {
            totalsize,
            available: MAX_DTB_SIZE,
        });
    }
    Ok(size)
}

/// Checks the header and the whole structure block, so that the `fdt` crate's accessors cannot
/// panic. Returns the blob cut to `totalsize`, with `FDT_NOP` tokens removed (a copy) if it had
/// any.
pub fn validate(data: &[u8]) -> Result<alloc::borrow::Cow<'_, [u8]>, DtError> {
    let (structs, strings) = check_header(data)?;
    let blob = &data[..be32(data, H_TOTALSIZE).unwrap_or(0) as usize];
    let nops = walk_structure(structs, strings, None)?;
    if nops == 0 {
        return Ok(alloc::borrow::Cow::Borrowed(blob));
    }
    // Rebuild: header, structure block without NOPs, strings block; no reservation map (unused).
    let mut out = Vec::with_capacity(blob.len());
    out.extend_from_slice(&blob[..FDT_HEADER_SIZE]);
    let mut stripped = Vec::with_capacity(structs.len());
    walk_structure(structs, strings, Some(&mut stripped))?;
    out.extend_from_slice(&stripped);
    out.extend_from_slice(strings);
    let set = |out: &mut Vec<u8>, off: usize, v: usize| {
        out[off..off + 4].copy_from_slice(&(v as u32).to_be_bytes());
    };
    let total = out.len();
    set(&mut out, H_TOTALSIZE, total);
    set(&mut out, H_OFF_DT_STRUCT, FDT_HEADER_SIZE);
    set(&mut out, H_SIZE_DT_STRUCT, stripped.len());
    set(&mut out, H_OFF_DT_STRINGS, FDT_HEADER_SIZE + stripped.len());
    set(&mut out, H_OFF_MEM_RSVMAP, 0);
    // The copy is smaller than the original, so it passes the same checks.
    check_header(&out)?;
    Ok(alloc::borrow::Cow::Owned(out))
}

/// Returns (structure block, strings block).
fn check_header(data: &[u8]) -> Result<(&[u8], &[u8]), DtError> {
    if data.len() < FDT_HEADER_SIZE {
        return Err(DtError::Truncated { have: data.len() });
    }
    let h = |off| be32(data, off).unwrap_or(0);
    let magic = h(H_MAGIC);
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic { found: magic });
    }
    let (version, last_comp_version) = (h(H_VERSION), h(H_LAST_COMP_VERSION));
    if version < FDT_MIN_VERSION || last_comp_version > FDT_MAX_COMP_VERSION {
        return Err(DtError::BadVersion {
            version,
            last_comp_version,
        });
    }
    let totalsize = h(H_TOTALSIZE);
    let total = totalsize as usize;
    if total < FDT_HEADER_SIZE || total > data.len() || total > MAX_DTB_SIZE {
        return Err(DtError::BadTotalSize {
            totalsize,
            available: data.len(),
        });
    }
    let block = |name, off_field, size_field| {
        let (offset, size) = (h(off_field), h(size_field));
        let end = u64::from(offset) + u64::from(size);
        if (offset as usize) < FDT_HEADER_SIZE || end > u64::from(totalsize) {
            return Err(DtError::BlockOutOfBounds {
                block: name,
                offset,
                size,
                totalsize,
            });
        }
        Ok(&data[offset as usize..end as usize])
    };
    let structs = block("structure", H_OFF_DT_STRUCT, H_SIZE_DT_STRUCT)?;
    let strings = block("strings", H_OFF_DT_STRINGS, H_SIZE_DT_STRINGS)?;
    Ok((structs, strings))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// A NUL-terminated UTF-8 string at the start of `b`; returns it and its length without NUL.
fn cstr_at(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&b[..end]).ok()
}

/// Walks every token. With `strip`, copies every token except `FDT_NOP` into it.
/// Returns the number of `FDT_NOP` tokens.
fn walk_structure(
    s: &[u8],
    strings: &[u8],
    mut strip: Option<&mut Vec<u8>>,
) -> Result<usize, DtError> {
    let bad = |offset, what| Err(DtError::BadStructure { offset, what });
    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut saw_root = false;
    let mut nops = 0usize;
    // has_child[d]: the open node at depth d already has a child (so no more properties).
    let mut has_child = [false; MAX_DEPTH + 1];
    loop {
        let Some(token) = be32(s, pos) else {
            return bad(pos, "ends without FDT_END");
        };
        let next = match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && saw_root {
                    return bad(pos, "a second root node");
                }
                let Some(name) = s.get(pos + 4..).and_then(cstr_at) else {
                    return bad(pos, "node name not NUL-terminated UTF-8");
                };
                if depth == 0 && !name.is_empty() {
                    return bad(pos, "root node has a name");
                }
                if depth > 0 && (name.is_empty() || name.contains('/')) {
                    return bad(pos, "node name empty or containing '/'");
                }
                if depth == MAX_DEPTH {
                    return bad(pos, "nodes nested too deep");
                }
                has_child[depth] = true;
                depth += 1;
                has_child[depth] = false;
                saw_root = true;
                align4(pos + 4 + name.len() + 1)
            }
            FDT_PROP => {
                if depth == 0 {
                    return bad(pos, "property outside any node");
                }
                if has_child[depth] {
                    return bad(pos, "property after a child node");
                }
                let (Some(len), Some(nameoff)) = (be32(s, pos + 4), be32(s, pos + 8)) else {
                    return bad(pos, "property header truncated");
                };
                let end = (pos + PROP_HEADER_SIZE).checked_add(len as usize);
                if end.is_none_or(|end| end > s.len()) {
                    return bad(pos, "property value runs past the structure block");
                }
                let Some(name) = strings.get(nameoff as usize..).and_then(cstr_at) else {
                    return bad(
                        pos,
                        "property name offset outside the strings block or not UTF-8",
                    );
                };
                if matches!(name, "#address-cells" | "#size-cells" | "#interrupt-cells") && len != 4
                {
                    return bad(
                        pos,
                        "#address-cells/#size-cells/#interrupt-cells not 4 bytes",
                    );
                }
                end.and_then(align4)
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return bad(pos, "FDT_END_NODE without a node");
                }
                depth -= 1;
                Some(pos + 4)
            }
            FDT_NOP => {
                nops += 1;
                Some(pos + 4)
            }
            FDT_END => {
                if depth != 0 || !saw_root {
                    return bad(pos, "FDT_END inside a node or before the root node");
                }
                if let Some(out) = strip.as_deref_mut() {
                    out.extend_from_slice(&s[pos..pos + 4]);
                }
                return Ok(nops);
            }
            _ => return bad(pos, "unknown token"),
        };
        let Some(next) = next else {
            return bad(pos, "offset overflow");
        };
        if let Some(out) = strip.as_deref_mut() {
            if token != FDT_NOP {
                // Padding at the block's end may be missing; keep the copy 4-aligned anyway.
                let span = &s[pos..next.min(s.len())];
                out.extend_from_slice(span);
                out.resize(out.len() + (next - pos - span.len()), 0);
            }
        }
        pos = next;
    }
}

/// Reads `cells` (1 or 2) big-endian cells at `b[*pos..]` as a u64.
fn read_cells(b: &[u8], pos: &mut usize, cells: usize) -> Option<u64> {
    let v = match cells {
        0 => 0,
        1 => u64::from(be32(b, *pos)?),
        2 => (u64::from(be32(b, *pos)?) << 32) | u64::from(be32(b, *pos + 4)?),
        _ => return None,
    };
    *pos += cells * 4;
    Some(v)
}

/// `(address, size)` pairs of a `reg`-like property, whole property checked.
fn addr_size_pairs(
    value: &[u8],
    ac: usize,
    sc: usize,
    node: &str,
    property: &'static str,
) -> Result<Vec<(u64, u64)>, DtError> {
    let entry = (ac + sc) * 4;
    if ac == 0 || ac > 2 || sc > 2 {
        return Err(DtError::UnsupportedCells {
            node: String::from(node),
            address_cells: ac,
            size_cells: sc,
        });
    }
    if value.is_empty() || !value.len().is_multiple_of(entry) {
        return Err(DtError::PropertyLength {
            node: String::from(node),
            property,
            len: value.len(),
            expected: format!("a non-zero multiple of {} ({} + {} cells)", entry, ac, sc),
        });
    }
    let mut pos = 0;
    let mut out = Vec::with_capacity(value.len() / entry);
    while pos < value.len() {
        let a = read_cells(value, &mut pos, ac).unwrap_or(0);
        let s = read_cells(value, &mut pos, sc).unwrap_or(0);
        out.push((a, s));
    }
    Ok(out)
}

fn range(what: &'static str, addr: u64, size: u64) -> Result<PhysRange, DtError> {
    PhysRange::from_start_len(addr, size).ok_or(DtError::AddressOverflow { what, addr, size })
}

/// A string property: up to the first NUL, UTF-8.
fn prop_str<'a>(node: FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let v = node.property(name)?.value;
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    core::str::from_utf8(&v[..end]).ok()
}

fn prop_u32(node: FdtNode<'_, '_>, name: &str) -> Option<Result<u32, usize>> {
    let v = node.property(name)?.value;
    Some(match v.len() {
        4 => Ok(be32(v, 0).unwrap_or(0)),
        8 if be32(v, 0) == Some(0) => Ok(be32(v, 4).unwrap_or(0)),
        n => Err(n),
    })
}

fn is_compatible(node: FdtNode<'_, '_>, names: &[&str]) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| names.contains(&s)))
}

fn enabled(node: FdtNode<'_, '_>) -> bool {
    prop_str(node, "status").is_none_or(|s| s == "okay" || s == "ok")
}

/// Address/size cells a node declares for its children (spec default 2/1).
fn child_cells(node: FdtNode<'_, '_>) -> (usize, usize) {
    let c = node.cell_sizes();
    (c.address_cells, c.size_cells)
}

fn path_of(chain: &[FdtNode<'_, '_>]) -> String {
    if chain.len() <= 1 {
        return String::from("/");
    }
    let mut p = String::new();
    for n in &chain[1..] {
        p.push('/');
        p.push_str(n.name);
    }
    p
}

/// Translates a bus address of a child of `chain.last()` to a CPU physical address through
/// each ancestor's `ranges` (absent: not translatable; empty: identity). `chain[0]` is the
/// root.
fn translate(chain: &[FdtNode<'_, '_>], mut addr: u64, size: u64) -> Result<u64, String> {
    for i in (1..chain.len()).rev() {
        let (bus, up) = (chain[i], chain[i - 1]);
        let Some(ranges) = bus.property("ranges") else {
            return Err(format!(
                "{} has no ranges: its children are not memory-mapped",
                path_of(&chain[..=i])
            ));
        };
        if ranges.value.is_empty() {
            continue;
        }
        let (cac, csc) = child_cells(bus);
        let (pac, _) = child_cells(up);
        if cac == 0 || cac > 2 || pac == 0 || pac > 2 || csc == 0 || csc > 2 {
            return Err(format!(
                "{} ranges with {}/{}/{} cells not supported",
                path_of(&chain[..=i]),
                cac,
                pac,
                csc
            ));
        }
        let entry = (cac + pac + csc) * 4;
        if !ranges.value.len().is_multiple_of(entry) {
            return Err(format!(
                "{} ranges length {} not a multiple of {}",
                path_of(&chain[..=i]),
                ranges.value.len(),
                entry
            ));
        }
        let mut found = None;
        for e in ranges.value.chunks_exact(entry) {
            let mut pos = 0;
            let child = read_cells(e, &mut pos, cac).unwrap_or(0);
            let parent = read_cells(e, &mut pos, pac).unwrap_or(0);
            let len = read_cells(e, &mut pos, csc).unwrap_or(0);
            let inside = addr >= child
                && addr
                    .checked_add(size)
                    .zip(child.checked_add(len))
                    .is_some_and(|(end, lim)| end <= lim);
            if inside {
                found = parent.checked_add(addr - child);
                break;
            }
        }
        addr = found.ok_or_else(|| {
            format!(
                "{:#x} is outside every range of {}",
                addr,
                path_of(&chain[..=i])
            )
        })?;
    }
    Ok(addr)
}

/// First `(addr, size)` of `reg`, translated to a CPU address. `chain` ends at the node.
fn node_reg(chain: &[FdtNode<'_, '_>]) -> Result<(u64, u64), String> {
    let (node, parents) = chain.split_last().ok_or_else(String::new)?;
    let path = path_of(chain);
    let (ac, sc) = parents.last().map(|p| child_cells(*p)).unwrap_or((2, 1));
    let reg = node
        .property("reg")
        .ok_or_else(|| format!("{} has no reg", path))?;
    let pairs = addr_size_pairs(reg.value, ac, sc, &path, "reg").map_err(|e| format!("{}", e))?;
    let (addr, size) = pairs[0];
    if addr.checked_add(size).is_none() {
        return Err(format!(
            "{}",
            DtError::AddressOverflow {
                what: "reg",
                addr,
                size
            }
        ));
    }
    Ok((translate(parents, addr, size)?, size))
}

/// Node at `path` (components matched by full name, or by name before '@' when the component
/// has no unit address), as the chain root..node.
fn find_path<'b, 'a>(root: FdtNode<'b, 'a>, path: &str) -> Option<Vec<FdtNode<'b, 'a>>> {
    let mut chain = Vec::from([root]);
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let cur = *chain.last()?;
        let hit = cur.children().find(|c| {
            c.name == comp || (!comp.contains('@') && c.name.split('@').next() == Some(comp))
        })?;
        chain.push(hit);
        if chain.len() > MAX_DEPTH + 1 {
            return None;
        }
    }
    Some(chain)
}

const NS16550_COMPATIBLE: &[&str] = &[
    "ns16550a",
    "ns16550",
    "ns16450",
    "ns8250",
    "snps,dw-apb-uart",
    "nvidia,tegra20-uart",
];

impl DtBootInfo {
    /// Parses a DTB. `data` may be longer than `totalsize` (e.g. a fixed-size window at x0).
    pub fn parse(data: &[u8]) -> Result<Self, DtError> {
        let blob = validate(data)?;
        let fdt = Fdt::new(&blob).map_err(|_| DtError::Truncated { have: blob.len() })?;
        // After `validate`, the first node is the (unnamed) root.
        let root = fdt.all_nodes().next().ok_or(DtError::BadStructure {
            offset: 0,
            what: "no root node",
        })?;
        let mut info = DtBootInfo::default();
        let (ac, sc) = child_cells(root);
        if ac == 0 || ac > 2 || sc == 0 || sc > 2 {
            return Err(DtError::UnsupportedCells {
                node: String::from("/"),
                address_cells: ac,
                size_cells: sc,
            });
        }

        // /chosen
        let chosen = root
            .children()
            .find(|c| c.name == "chosen" || c.name.starts_with("chosen@"))
            .ok_or(DtError::NoChosen)?;
        if let Some(p) = chosen.property("bootargs") {
            let end = p
                .value
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(p.value.len());
            info.cmdline = String::from_utf8_lossy(&p.value[..end]).into_owned();
            if core::str::from_utf8(&p.value[..end]).is_err() {
                info.warnings.push(String::from(
                    "/chosen/bootargs is not UTF-8; bad bytes replaced",
                ));
            }
        }
        if let Some(p) = chosen.property("linux,elfcorehdr") {
            if p.value.len() != (ac + sc) * 4 {
                return Err(DtError::PropertyLength {
                    node: String::from("/chosen"),
                    property: "linux,elfcorehdr",
                    len: p.value.len(),
                    expected: format!(
                        "{} (one address of {} and size of {} cells)",
                        (ac + sc) * 4,
                        ac,
                        sc
                    ),
                });
            }
            let (addr, size) = addr_size_pairs(p.value, ac, sc, "/chosen", "linux,elfcorehdr")?[0];
            info.elfcorehdr = Some(range("/chosen/linux,elfcorehdr", addr, size)?);
        }
        if let Some(p) = chosen.property("linux,usable-memory-range") {
            let pairs = addr_size_pairs(p.value, ac, sc, "/chosen", "linux,usable-memory-range")?;
            if pairs.len() > MAX_USABLE_RANGES {
                return Err(DtError::TooMany {
                    what: "linux,usable-memory-range entries",
                    found: pairs.len(),
                    limit: MAX_USABLE_RANGES,
                });
            }
            for (addr, size) in pairs {
                let r = range("/chosen/linux,usable-memory-range", addr, size)?;
                if r.is_empty() {
                    info.warnings.push(format!(
                        "empty linux,usable-memory-range entry at {:#x} ignored",
                        addr
                    ));
                } else {
                    info.usable.push(r);
                }
            }
        }

        // /memory*: children of the root with device_type "memory" (or named memory).
        let mut memory = Vec::new();
        for node in root.children() {
            let is_memory = match prop_str(node, "device_type") {
                Some(t) => t == "memory",
                None => node.name == "memory" || node.name.starts_with("memory@"),
            };
            if !is_memory || !enabled(node) {
                continue;
            }
            let Some(reg) = node.property("reg") else {
                info.warnings.push(format!("/{} has no reg", node.name));
                continue;
            };
            let path = format!("/{}", node.name);
            for (addr, size) in addr_size_pairs(reg.value, ac, sc, &path, "reg")? {
                let r = range("memory reg", addr, size)?;
                if !r.is_empty() {
                    memory.push(r);
                }
            }
        }
        memory.sort();
        for r in memory {
            match info.memory.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => info.memory.push(r),
            }
        }
        if info.memory.len() > MAX_MEMORY_RANGES {
            return Err(DtError::TooMany {
                what: "memory ranges (after merging)",
                found: info.memory.len(),
                limit: MAX_MEMORY_RANGES,
            });
        }
        if info.memory.is_empty() {
            info.warnings
                .push(String::from("no /memory node: the RAM map is unknown"));
        }

        // Every node: virtio-mmio, PCI ECAM, PSCI, fixed clocks.
        let mut clocks: Vec<(u32, u32)> = Vec::new();
        let mut chain = Vec::from([root]);
        info.scan(&mut chain, &mut clocks);

        info.stdout = info.find_stdout(root, chosen, &clocks);
        Ok(info)
    }

    /// Depth-first, in DTB order; `chain` is root..current node.
    fn scan<'b, 'a>(&mut self, chain: &mut Vec<FdtNode<'b, 'a>>, clocks: &mut Vec<(u32, u32)>) {
        let Some(&node) = chain.last() else { return };
        for child in node.children() {
            chain.push(child);
            self.visit(chain, clocks);
            self.scan(chain, clocks);
            chain.pop();
        }
    }

    fn visit(&mut self, chain: &[FdtNode<'_, '_>], clocks: &mut Vec<(u32, u32)>) {
        let Some(&node) = chain.last() else { return };
        if !enabled(node) {
            return;
        }
        if is_compatible(node, &["virtio,mmio"]) {
            if self.virtio_mmio.len() == MAX_VIRTIO_MMIO {
                self.warnings.push(format!(
                    "{}: more than {} virtio-mmio devices, ignored",
                    path_of(chain),
                    MAX_VIRTIO_MMIO
                ));
                return;
            }
            match node_reg(chain) {
                Ok((base, size)) => {
                    let interrupt = node.property("interrupts").and_then(|p| {
                        let n = (p.value.len() / 4).min(4);
                        let mut irq = Interrupt {
                            cells: [0; 4],
                            len: n as u8,
                        };
                        for (i, c) in irq.cells.iter_mut().enumerate().take(n) {
                            *c = be32(p.value, i * 4).unwrap_or(0);
                        }
                        (n > 0).then_some(irq)
                    });
                    self.virtio_mmio.push(VirtioMmio {
                        base,
                        size,
                        interrupt,
                    });
                }
                Err(e) => self
                    .warnings
                    .push(format!("virtio-mmio device skipped: {}", e)),
            }
        } else if is_compatible(node, &["pci-host-ecam-generic"]) {
            if self.pci_ecam.len() == MAX_PCI_HOSTS {
                self.warnings.push(format!(
                    "{}: more than {} PCI host bridges, ignored",
                    path_of(chain),
                    MAX_PCI_HOSTS
                ));
                return;
            }
            match self.pci_host(chain) {
                Ok(host) => self.pci_ecam.push(host),
                Err(e) => {
                    self.warnings
                        .push(format!("PCI host bridge {} skipped: {}", path_of(chain), e))
                }
            }
        } else if is_compatible(node, &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"]) {
            let method = match prop_str(node, "method") {
                Some("hvc") => PsciMethod::Hvc,
                Some("smc") => PsciMethod::Smc,
                other => {
                    self.warnings.push(format!(
                        "{}: PSCI method {:?} unknown; no PSCI power-off",
                        path_of(chain),
                        other
                    ));
                    return;
                }
            };
            let standard_ids = is_compatible(node, &["arm,psci-0.2", "arm,psci-1.0"]);
            if self.psci.is_none() {
                self.psci = Some(Psci {
                    method,
                    standard_ids,
                });
            }
        } else if is_compatible(node, &["fixed-clock"]) {
            if let (Some(Ok(ph)), Some(Ok(hz))) =
                (prop_u32(node, "phandle"), prop_u32(node, "clock-frequency"))
            {
                if clocks.len() < MAX_FIXED_CLOCKS {
                    clocks.push((ph, hz));
                }
            }
        }
    }

    fn pci_host(&mut self, chain: &[FdtNode<'_, '_>]) -> Result<PciEcam, String> {
        let Some((&node, parents)) = chain.split_last() else {
            return Err(String::new());
        };
        let path = path_of(chain);
        let (base, size) = node_reg(chain)?;
        let ecam =
            PhysRange::from_start_len(base, size).ok_or_else(|| String::from("ECAM overflows"))?;
        let (bus_start, bus_end) = match node.property("bus-range") {
            None => (0, 255),
            Some(p) if p.value.len() == 8 => {
                let (s, e) = (be32(p.value, 0).unwrap_or(0), be32(p.value, 4).unwrap_or(0));
                if s > e || e > 255 {
                    return Err(format!("bus-range <{} {}> is invalid", s, e));
                }
                (s as u8, e as u8)
            }
            Some(p) => return Err(format!("bus-range is {} bytes, expected 8", p.value.len())),
        };
        let buses = u64::from(bus_end - bus_start) + 1;
        if ecam.len() < buses << 20 {
            self.warnings.push(format!(
                "{}: ECAM window {:#x} bytes is smaller than {} buses need",
                path,
                ecam.len(),
                buses
            ));
        }
        let domain = match prop_u32(node, "linux,pci-domain") {
            Some(Ok(d)) => Some(d),
            _ => None,
        };
        let mut windows = Vec::new();
        if let Some(ranges) = node.property("ranges") {
            let (cac, csc) = child_cells(node);
            let pac = parents.last().map(|p| child_cells(*p).0).unwrap_or(2);
            if cac != 3 || csc == 0 || csc > 2 || pac == 0 || pac > 2 {
                return Err(format!(
                    "ranges with {}/{}/{} cells not supported",
                    cac, pac, csc
                ));
            }
            let entry = (cac + pac + csc) * 4;
            if !ranges.value.len().is_multiple_of(entry) {
                return Err(format!(
                    "ranges length {} is not a multiple of {}",
                    ranges.value.len(),
                    entry
                ));
            }
            for e in ranges.value.chunks_exact(entry) {
                if windows.len() == MAX_PCI_WINDOWS {
                    self.warnings.push(format!(
                        "{}: more than {} ranges windows, rest ignored",
                        path, MAX_PCI_WINDOWS
                    ));
                    break;
                }
                let hi = be32(e, 0).unwrap_or(0);
                let mut pos = 4;
                let pci_addr = read_cells(e, &mut pos, 2).unwrap_or(0);
                let parent_addr = read_cells(e, &mut pos, pac).unwrap_or(0);
                let size = read_cells(e, &mut pos, csc).unwrap_or(0);
                if pci_addr.checked_add(size).is_none() || parent_addr.checked_add(size).is_none() {
                    return Err(format!(
                        "ranges window {:#x}+{:#x} overflows",
                        parent_addr, size
                    ));
                }
                let cpu_addr = translate(parents, parent_addr, size)?;
                let space = match (hi >> 24) & 3 {
                    0 => PciSpace::Config,
                    1 => PciSpace::Io,
                    2 => PciSpace::Mmio32,
                    _ => PciSpace::Mmio64,
                };
                windows.push(PciWindow {
                    space,
                    prefetchable: hi & (1 << 30) != 0,
                    pci_addr,
                    cpu_addr,
                    size,
                });
            }
        }
        Ok(PciEcam {
            ecam,
            bus_start,
            bus_end,
            domain,
            windows,
        })
    }

    fn find_stdout(
        &mut self,
        root: FdtNode<'_, '_>,
        chosen: FdtNode<'_, '_>,
        clocks: &[(u32, u32)],
    ) -> Option<DtUart> {
        let spec =
            prop_str(chosen, "stdout-path").or_else(|| prop_str(chosen, "linux,stdout-path"))?;
        let (path, options) = match spec.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (spec, None),
        };
        let full: String = if path.starts_with('/') {
            String::from(path)
        } else {
            // An alias, optionally followed by more path components.
            let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
            let target = root
                .children()
                .find(|c| c.name == "aliases")
                .and_then(|a| prop_str(a, alias))
                .filter(|t| t.starts_with('/'));
            let Some(target) = target else {
                self.warnings.push(format!(
                    "stdout-path {:?}: alias {:?} not found in /aliases; no console",
                    spec, alias
                ));
                return None;
            };
            format!("{}/{}", target, rest)
        };
        let Some(chain) = find_path(root, &full) else {
            self.warnings.push(format!(
                "stdout-path {:?}: node {} not found; no console",
                spec, full
            ));
            return None;
        };
        let node = *chain.last()?;
        let path = path_of(&chain);
        if !enabled(node) {
            self.warnings.push(format!(
                "console {} has status disabled; using it anyway",
                path
            ));
        }
        let kind = if is_compatible(node, &["arm,pl011"]) {
            UartKind::Pl011
        } else if is_compatible(node, &["arm,sbsa-uart"]) {
            UartKind::SbsaUart
        } else if is_compatible(node, NS16550_COMPATIBLE)
            || is_compatible(node, &["brcm,bcm2835-aux-uart"])
        {
            // bcm2835-aux: registers 4 bytes apart, 32-bit access (BCM2835 peripherals manual
            // §2.2: AUX_MU_* at +0x40, +0x44, ...); explicit properties still win.
            let (shift_default, width_default) = if is_compatible(node, &["brcm,bcm2835-aux-uart"])
            {
                (2, 4)
            } else {
                (0, 1)
            };
            let reg_shift = match prop_u32(node, "reg-shift") {
                None => shift_default,
                Some(Ok(v)) if v <= 3 => v as u8,
                Some(v) => {
                    self.warnings.push(format!(
                        "console {}: reg-shift {:?} invalid; no console",
                        path, v
                    ));
                    return None;
                }
            };
            let reg_io_width = match prop_u32(node, "reg-io-width") {
                None => width_default,
                Some(Ok(v @ (1 | 2 | 4))) => v as u8,
                Some(v) => {
                    self.warnings.push(format!(
                        "console {}: reg-io-width {:?} invalid; no console",
                        path, v
                    ));
                    return None;
                }
            };
            UartKind::Ns16550 {
                reg_shift,
                reg_io_width,
            }
        } else {
            let compat: Vec<&str> = node
                .compatible()
                .map(|c| c.all().collect())
                .unwrap_or_default();
            self.warnings.push(format!(
                "console {} is compatible {:?}, not a known UART; no console",
                path, compat
            ));
            return None;
        };
        let (base, size) = match node_reg(&chain) {
            Ok(r) => r,
            Err(e) => {
                self.warnings
                    .push(format!("console {}: {}; no console", path, e));
                return None;
            }
        };
        let clock_hz = match prop_u32(node, "clock-frequency") {
            Some(Ok(hz)) => Some(hz),
            _ => node
                .property("clocks")
                .and_then(|p| be32(p.value, 0))
                .and_then(|ph| clocks.iter().find(|(p, _)| *p == ph).map(|(_, hz)| *hz)),
        };
        let baud = options.and_then(|o| {
            let digits = o.bytes().take_while(u8::is_ascii_digit).count();
            o[..digits].parse::<u32>().ok().filter(|&b| b > 0)
        });
        Some(DtUart {
            kind,
            base,
            size,
            clock_hz,
            baud,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A minimal FDT writer (spec v0.4 §5): header, empty reservation map, structure block,
    /// strings block, all big-endian.
    struct Builder {
        st: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                st: Vec::new(),
                strings: Vec::new(),
            }
        }
        fn token(&mut self, t: u32) -> &mut Self {
            self.st.extend_from_slice(&t.to_be_bytes());
            self
        }
        fn pad(&mut self) {
            while !self.st.len().is_multiple_of(4) {
                self.st.push(0);
            }
        }
        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.st.extend_from_slice(name.as_bytes());
            self.st.push(0);
            self.pad();
            self
        }
        fn end(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }
        fn nop(&mut self) -> &mut Self {
            self.token(FDT_NOP)
        }
        fn name_off(&mut self, name: &str) -> u32 {
            let mut off = 0;
            while off < self.strings.len() {
                let end = off + self.strings[off..].iter().position(|&c| c == 0).unwrap();
                if &self.strings[off..end] == name.as_bytes() {
                    return off as u32;
                }
                off = end + 1;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let off = self.name_off(name);
            self.token(FDT_PROP).token(value.len() as u32).token(off);
            self.st.extend_from_slice(value);
            self.pad();
            self
        }
        fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &v)
        }
        fn str(&mut self, name: &str, s: &str) -> &mut Self {
            self.strs(name, &[s])
        }
        fn strs(&mut self, name: &str, list: &[&str]) -> &mut Self {
            let mut v = Vec::new();
            for s in list {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            self.prop(name, &v)
        }
        fn finish(&mut self) -> Vec<u8> {
            self.token(FDT_END);
            let rsv = FDT_HEADER_SIZE;
            let st = rsv + 16;
            let strs = st + self.st.len();
            let total = strs + self.strings.len();
            let header = [
                FDT_MAGIC,
                total as u32,
                st as u32,
                strs as u32,
                rsv as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.st.len() as u32,
            ];
            let mut out: Vec<u8> = header.iter().flat_map(|c| c.to_be_bytes()).collect();
            assert_eq!(out.len(), FDT_HEADER_SIZE);
            out.extend_from_slice(&[0; 16]);
            out.extend_from_slice(&self.st);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    /// Like `qemu-system-aarch64 -M virt -m 1G` after kexec_file added its /chosen properties.
    /// `chosen` writes the /chosen node's properties.
    fn virt_like_with(chosen: &dyn Fn(&mut Builder), elfcorehdr_len: usize) -> Vec<u8> {
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .str("compatible", "linux,dummy-virt")
            .cells("interrupt-parent", &[0x8002]);
        b.begin("psci")
            .strs("compatible", &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
            .str("method", "hvc")
            .end();
        b.begin("memory@40000000")
            .str("device_type", "memory")
            .cells("reg", &[0, 0x4000_0000, 0, 0x4000_0000])
            .end();
        b.begin("apb-pclk")
            .str("compatible", "fixed-clock")
            .cells("#clock-cells", &[0])
            .cells("clock-frequency", &[24_000_000])
            .cells("phandle", &[0x8000])
            .end();
        b.begin("pl011@9000000")
            .strs("compatible", &["arm,pl011", "arm,primecell"])
            .cells("reg", &[0, 0x0900_0000, 0, 0x1000])
            .cells("interrupts", &[0, 1, 4])
            .cells("clocks", &[0x8000, 0x8000])
            .strs("clock-names", &["uartclk", "apb_pclk"])
            .end();
        b.begin("pcie@10000000")
            .str("compatible", "pci-host-ecam-generic")
            .str("device_type", "pci")
            .cells("#address-cells", &[3])
            .cells("#size-cells", &[2])
            .cells("bus-range", &[0, 0xff])
            .cells("linux,pci-domain", &[0])
            .cells("reg", &[0x40, 0x1000_0000, 0, 0x1000_0000])
            .cells(
                "ranges",
                &[
                    0x0100_0000,
                    0,
                    0,
                    0,
                    0x3eff_0000,
                    0,
                    0x1_0000, //
                    0x0200_0000,
                    0,
                    0x1000_0000,
                    0,
                    0x1000_0000,
                    0,
                    0x2eff_0000, //
                    0x4300_0000,
                    0x80,
                    0,
                    0x80,
                    0,
                    0x80,
                    0,
                ],
            )
            .end();
        for i in 0..32u32 {
            let addr = 0x0a00_0000 + 0x200 * u64::from(i);
            b.begin(&format!("virtio_mmio@{:x}", addr))
                .prop("dma-coherent", &[])
                .cells("interrupts", &[0, 0x10 + i, 1])
                .cells("reg", &[0, addr as u32, 0, 0x200])
                .str("compatible", "virtio,mmio")
                .end();
        }
        b.begin("chosen");
        chosen(&mut b);
        let elf = [0u32, 0x7f00_0000, 0, 0x1_0000];
        let bytes: Vec<u8> = elf.iter().flat_map(|c| c.to_be_bytes()).collect();
        b.prop("linux,elfcorehdr", &bytes[..elfcorehdr_len]);
        b.end();
        b.end();
        b.finish()
    }

    fn virt_chosen(b: &mut Builder) {
        b.str("bootargs", "console=ttyAMA0 lifeboat.sink=serial")
            .str("stdout-path", "/pl011@9000000")
            .cells(
                "linux,usable-memory-range",
                &[
                    0,
                    0x6000_0000,
                    0,
                    0x2000_0000,
                    0,
                    0x4800_0000,
                    0,
                    0x100_0000,
                ],
            );
    }

    fn virt_like() -> Vec<u8> {
        virt_like_with(&virt_chosen, 16)
    }

    /// A Raspberry-Pi-like board: 1/1 cells, a DesignWare 16550 under /soc behind `ranges`,
    /// reached through /aliases, two memory nodes, one FDT_NOP.
    fn board_like(soc_ranges: Option<&[u32]>, aliases: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .str("model", "board");
        b.begin("aliases");
        for (name, target) in aliases {
            b.str(name, target);
        }
        b.end();
        b.begin("chosen")
            .str("bootargs", "console=ttyS0,115200")
            .nop()
            .str("stdout-path", "serial0:115200n8")
            .cells("linux,elfcorehdr", &[0x2f00_0000, 0x1000])
            .cells("linux,usable-memory-range", &[0x2000_0000, 0x1000_0000])
            .end();
        b.begin("memory@0")
            .str("device_type", "memory")
            .cells("reg", &[0, 0x3b40_0000])
            .end();
        b.begin("memory@40000000")
            .str("device_type", "memory")
            .cells("reg", &[0x8000_0000, 0x4000_0000, 0x4000_0000, 0x4000_0000])
            .end();
        b.begin("soc")
            .str("compatible", "simple-bus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        if let Some(ranges) = soc_ranges {
            b.cells("ranges", ranges);
        }
        b.begin("serial@7e201000")
            .strs("compatible", &["brcm,bcm2835-uart-dw", "snps,dw-apb-uart"])
            .cells("reg", &[0x7e20_1000, 0x100])
            .cells("reg-shift", &[2])
            .cells("reg-io-width", &[4])
            .cells("clock-frequency", &[48_000_000])
            .str("status", "okay")
            .end();
        b.end();
        b.end();
        b.finish()
    }

    #[test]
    fn devtree_virt_like() {
        let blob = virt_like();
        let info = DtBootInfo::parse(&blob).unwrap();
        assert_eq!(info.cmdline, "console=ttyAMA0 lifeboat.sink=serial");
        assert_eq!(info.elfcorehdr, Some(r(0x7f00_0000, 0x7f01_0000)));
        assert_eq!(
            info.usable,
            vec![r(0x6000_0000, 0x8000_0000), r(0x4800_0000, 0x4900_0000)]
        );
        assert_eq!(info.memory, vec![r(0x4000_0000, 0x8000_0000)]);
        assert_eq!(
            info.stdout,
            Some(DtUart {
                kind: UartKind::Pl011,
                base: 0x0900_0000,
                size: 0x1000,
                clock_hz: Some(24_000_000),
                baud: None,
                path: String::from("/pl011@9000000"),
            })
        );
        assert_eq!(info.virtio_mmio.len(), 32);
        for (i, v) in info.virtio_mmio.iter().enumerate() {
            assert_eq!(v.base, 0x0a00_0000 + 0x200 * i as u64);
            assert_eq!(v.size, 0x200);
            let irq = v.interrupt.unwrap();
            assert_eq!(irq.cells(), &[0, 0x10 + i as u32, 1]);
            assert_eq!(irq.first(), Some(0));
            assert_eq!(irq.gic_spi_intid(), Some(48 + i as u32));
        }
        assert_eq!(info.pci_ecam.len(), 1);
        let pci = &info.pci_ecam[0];
        assert_eq!(pci.ecam, r(0x40_1000_0000, 0x40_2000_0000));
        assert_eq!((pci.bus_start, pci.bus_end, pci.domain), (0, 255, Some(0)));
        assert_eq!(
            pci.windows,
            vec![
                PciWindow {
                    space: PciSpace::Io,
                    prefetchable: false,
                    pci_addr: 0,
                    cpu_addr: 0x3eff_0000,
                    size: 0x1_0000
                },
                PciWindow {
                    space: PciSpace::Mmio32,
                    prefetchable: false,
                    pci_addr: 0x1000_0000,
                    cpu_addr: 0x1000_0000,
                    size: 0x2eff_0000
                },
                PciWindow {
                    space: PciSpace::Mmio64,
                    prefetchable: true,
                    pci_addr: 0x80_0000_0000,
                    cpu_addr: 0x80_0000_0000,
                    size: 0x80_0000_0000
                },
            ]
        );
        assert_eq!(
            info.psci,
            Some(Psci {
                method: PsciMethod::Hvc,
                standard_ids: true
            })
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(total_size(&blob), Ok(blob.len()));
        // Trailing bytes after totalsize (a fixed-size window at x0) are ignored.
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0xff; 100]);
        assert_eq!(DtBootInfo::parse(&longer).unwrap(), info);
    }

    #[test]
    fn devtree_board_like_alias_16550_ranges() {
        let blob = board_like(
            Some(&[0x7e00_0000, 0xfe00_0000, 0x0180_0000]),
            &[("serial0", "/soc/serial@7e201000")],
        );
        let info = DtBootInfo::parse(&blob).unwrap();
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
        assert_eq!(info.cmdline, "console=ttyS0,115200");
        assert_eq!(info.elfcorehdr, Some(r(0x2f00_0000, 0x2f00_1000)));
        assert_eq!(info.usable, vec![r(0x2000_0000, 0x3000_0000)]);
        // Two nodes, three reg entries, two of them adjacent: merged and sorted.
        assert_eq!(
            info.memory,
            vec![r(0, 0x3b40_0000), r(0x4000_0000, 0xc000_0000)]
        );
        assert_eq!(
            info.stdout,
            Some(DtUart {
                kind: UartKind::Ns16550 {
                    reg_shift: 2,
                    reg_io_width: 4
                },
                base: 0xfe20_1000,
                size: 0x100,
                clock_hz: Some(48_000_000),
                baud: Some(115_200),
                path: String::from("/soc/serial@7e201000"),
            })
        );
        assert!(info.virtio_mmio.is_empty() && info.pci_ecam.is_empty() && info.psci.is_none());

        // Empty `ranges`: identity.
        let info =
            DtBootInfo::parse(&board_like(Some(&[]), &[("serial0", "/soc/serial")])).unwrap();
        assert_eq!(info.stdout.unwrap().base, 0x7e20_1000);
        // No `ranges`: not translatable, a warning and no console, not an error.
        let info =
            DtBootInfo::parse(&board_like(None, &[("serial0", "/soc/serial@7e201000")])).unwrap();
        assert!(info.stdout.is_none());
        assert!(
            info.warnings[0].contains("no ranges"),
            "{:?}",
            info.warnings
        );
        // Address outside every range.
        let info = DtBootInfo::parse(&board_like(
            Some(&[0x1000_0000, 0, 0x1000]),
            &[("serial0", "/soc/serial")],
        ))
        .unwrap();
        assert!(
            info.stdout.is_none() && info.warnings[0].contains("outside every range"),
            "{:?}",
            info.warnings
        );
    }

    #[test]
    fn devtree_alias_problems_are_warnings() {
        // Missing alias; alias naming itself (the fdt crate's own resolver would recurse forever).
        for aliases in [
            &[][..],
            &[("serial0", "serial0")][..],
            &[("serial0", "/nowhere")][..],
        ] {
            let info = DtBootInfo::parse(&board_like(Some(&[]), aliases)).unwrap();
            assert!(info.stdout.is_none());
            assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
        }
    }

    fn set_be32(blob: &mut [u8], off: usize, v: u32) {
        blob[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn devtree_malformed() {
        let good = virt_like();

        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(
            DtBootInfo::parse(&bad),
            Err(DtError::BadMagic { found: 0x000d_feed })
        );

        assert_eq!(
            DtBootInfo::parse(&good[..20]),
            Err(DtError::Truncated { have: 20 })
        );
        assert_eq!(DtBootInfo::parse(&[]), Err(DtError::Truncated { have: 0 }));

        let cut = &good[..good.len() - 1];
        assert_eq!(
            DtBootInfo::parse(cut),
            Err(DtError::BadTotalSize {
                totalsize: good.len() as u32,
                available: good.len() - 1
            })
        );

        let mut bad = good.clone();
        set_be32(&mut bad, H_VERSION, 16);
        assert!(matches!(
            DtBootInfo::parse(&bad),
            Err(DtError::BadVersion { version: 16, .. })
        ));

        // Structure block claimed shorter than it is: runs off its end.
        let mut bad = good.clone();
        let size = be32(&bad, H_SIZE_DT_STRUCT).unwrap();
        set_be32(&mut bad, H_SIZE_DT_STRUCT, size - 64);
        assert!(
            matches!(DtBootInfo::parse(&bad), Err(DtError::BadStructure { .. })),
            "{:?}",
            DtBootInfo::parse(&bad)
        );
        // Strings block past totalsize.
        let mut bad = good.clone();
        set_be32(&mut bad, H_SIZE_DT_STRINGS, 0x10_0000);
        assert!(matches!(
            DtBootInfo::parse(&bad),
            Err(DtError::BlockOutOfBounds {
                block: "strings",
                ..
            })
        ));

        // linux,elfcorehdr of the wrong length.
        let bad = virt_like_with(&virt_chosen, 12);
        assert_eq!(
            DtBootInfo::parse(&bad),
            Err(DtError::PropertyLength {
                node: String::from("/chosen"),
                property: "linux,elfcorehdr",
                len: 12,
                expected: String::from("16 (one address of 2 and size of 2 cells)"),
            })
        );

        // usable-memory-range: three entries, or a ragged length.
        let three = |b: &mut Builder| {
            b.cells(
                "linux,usable-memory-range",
                &[0, 1, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1],
            );
        };
        assert!(matches!(
            DtBootInfo::parse(&virt_like_with(&three, 16)),
            Err(DtError::TooMany { limit: 2, .. })
        ));
        let ragged = |b: &mut Builder| {
            b.cells("linux,usable-memory-range", &[0, 1, 0]);
        };
        assert!(matches!(
            DtBootInfo::parse(&virt_like_with(&ragged, 16)),
            Err(DtError::PropertyLength { .. })
        ));

        // Memory reg that overflows 64 bits.
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        b.begin("memory@ffffffffffff0000")
            .str("device_type", "memory")
            .cells("reg", &[0xffff_ffff, 0xffff_0000, 0, 0x2_0000])
            .end();
        b.begin("chosen").end().end();
        assert_eq!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::AddressOverflow {
                what: "memory reg",
                addr: 0xffff_ffff_ffff_0000,
                size: 0x2_0000
            })
        );

        // No /chosen.
        let mut b = Builder::new();
        b.begin("")
            .begin("memory")
            .cells("reg", &[0, 0x4000_0000, 0, 0x1000])
            .end()
            .end();
        assert_eq!(DtBootInfo::parse(&b.finish()), Err(DtError::NoChosen));

        // Structural faults the fdt crate would panic on.
        let mut b = Builder::new();
        b.begin("")
            .begin("chosen")
            .end()
            .str("late", "property after a child")
            .end();
        assert!(matches!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::BadStructure {
                what: "property after a child node",
                ..
            })
        ));
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[2, 0])
            .begin("chosen")
            .end()
            .end();
        assert!(matches!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::BadStructure { .. })
        ));
        let mut b = Builder::new();
        b.begin("");
        for _ in 0..MAX_DEPTH + 5 {
            b.begin("n");
        }
        assert!(matches!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::BadStructure {
                what: "nodes nested too deep",
                ..
            })
        ));
        let mut b = Builder::new();
        b.begin("").begin("chosen").end();
        assert!(matches!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::BadStructure { .. })
        ));

        // Every error prints.
        assert!(format!("{}", DtError::NoChosen).contains("/chosen"));
    }

    #[test]
    fn devtree_limits() {
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        b.begin("chosen").end();
        let mut reg = Vec::new();
        for i in 0..(MAX_MEMORY_RANGES as u32 + 1) {
            reg.extend_from_slice(&[i * 0x20_0000, 0x1000]);
        }
        b.begin("memory").cells("reg", &reg).end();
        for i in 0..(MAX_VIRTIO_MMIO as u32 + 2) {
            b.begin("virtio_mmio")
                .str("compatible", "virtio,mmio")
                .cells("reg", &[0x1000 * i, 0x200])
                .end();
        }
        b.end();
        assert!(matches!(
            DtBootInfo::parse(&b.finish()),
            Err(DtError::TooMany {
                found: 65,
                limit: MAX_MEMORY_RANGES,
                ..
            })
        ));

        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1]);
        b.begin("chosen").end();
        for i in 0..(MAX_VIRTIO_MMIO as u32 + 2) {
            b.begin("virtio_mmio")
                .str("compatible", "virtio,mmio")
                .cells("reg", &[0x1000 * i, 0x200])
                .end();
        }
        b.end();
        let info = DtBootInfo::parse(&b.finish()).unwrap();
        assert_eq!(info.virtio_mmio.len(), MAX_VIRTIO_MMIO);
        assert_eq!(
            info.warnings
                .iter()
                .filter(|w| w.contains("virtio-mmio"))
                .count(),
            2
        );
        assert!(info.virtio_mmio[0].interrupt.is_none());
    }

    /// Random byte and token mutations of good blobs: errors are fine, panics are not.
    #[test]
    fn devtree_fuzz_never_panics() {
        let blobs = [
            virt_like(),
            board_like(
                Some(&[0x7e00_0000, 0xfe00_0000, 0x0180_0000]),
                &[("serial0", "/soc/serial@7e201000")],
            ),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // `DEVTREE_FUZZ_ROUNDS=1000000` for a longer run.
        let rounds = std::env::var("DEVTREE_FUZZ_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(6000);
        let (mut ok, mut err) = (0, 0);
        for round in 0..rounds {
            let good = &blobs[round % 2];
            let mut m = good.clone();
            for _ in 0..1 + next() % 4 {
                let n = next();
                let pos = (n >> 8) as usize % m.len();
                match n % 4 {
                    0 => m[pos] = n as u8 >> 1,
                    1 => m[pos] ^= 1 << (n % 8),
                    // A plausible token or cell value at an aligned position.
                    2 => {
                        let p = pos & !3;
                        if p + 4 <= m.len() {
                            let v =
                                [1, 2, 3, 4, 9, 0, 0xffff_ffff, 0x10_0000][(n >> 40) as usize % 8];
                            set_be32(&mut m, p, v);
                        }
                    }
                    _ => {
                        let p = pos & !3;
                        if p + 4 <= m.len() {
                            let v = be32(&m, p)
                                .unwrap()
                                .wrapping_add((n >> 32) as u32 % 64)
                                .wrapping_sub(32);
                            set_be32(&mut m, p, v);
                        }
                    }
                }
            }
            if next() % 8 == 0 {
                let keep = next() as usize % m.len();
                m.truncate(keep);
            }
            match DtBootInfo::parse(&m) {
                Ok(_) => ok += 1,
                Err(e) => {
                    let _ = format!("{}", e);
                    err += 1;
                }
            }
        }
        // Both paths exercised.
        assert!(ok > 100 && err > 100, "ok {} err {}", ok, err);
    }

    /// A real QEMU DTB: `qemu-system-aarch64 -M virt,dumpdtb=/tmp/virt.dtb -cpu max -m 1G
    /// -nographic`, then `LIFEBOAT_DTB=/tmp/virt.dtb cargo test -p lifeboat-capture devtree --
    /// --ignored`. Not committed: QEMU pads the blob to 1 MiB. Without kexec, /chosen has no
    /// elfcorehdr or usable range.
    #[test]
    #[ignore]
    fn devtree_qemu_virt_dump() {
        let path = std::env::var("LIFEBOAT_DTB").unwrap_or_else(|_| String::from("/tmp/virt.dtb"));
        let blob = std::fs::read(&path).unwrap();
        let info = DtBootInfo::parse(&blob).unwrap();
        std::eprintln!("{:#x?}", info);
        assert_eq!(info.memory, vec![r(0x4000_0000, 0x8000_0000)]);
        let uart = info.stdout.unwrap();
        assert_eq!((uart.kind, uart.base), (UartKind::Pl011, 0x0900_0000));
        assert_eq!(info.virtio_mmio.len(), 32);
        assert!(info
            .virtio_mmio
            .iter()
            .all(|v| v.size == 0x200 && v.interrupt.is_some()));
        assert_eq!(info.pci_ecam.len(), 1);
        assert!(info.psci.is_some());
        assert_eq!(info.elfcorehdr, None);
        assert!(info.usable.is_empty());
    }
}
