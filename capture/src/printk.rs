//! The kernel log (dmesg) of the crashed kernel, read from its memory.
//!
//! Two formats, chosen as makedumpfile's `dump_dmesg()` chooses them:
//! - the lockless printk ringbuffer (Linux >= 5.10, `SYMBOL(prb)`): a descriptor ring whose
//!   entries point into a text data ring (project reference §6.3; makedumpfile `printk.c
//!   dump_lockless_dmesg()`; Linux `kernel/printk/printk_ringbuffer.h`);
//! - the variable-length record buffer `log_buf` (Linux 3.5 to 5.9, `SYMBOL(log_buf)`):
//!   `struct printk_log` headers each followed by the text (makedumpfile.c `dump_dmesg()`,
//!   `dump_log_entry()`).
//!
//! Records are read one at a time through [`KernelVm::read`] (a descriptor, an info, one
//! text of at most 64 KiB), never the whole ring: this also runs in the capture kernel with a
//! 2 MiB heap. The rings are old memory of a crashed kernel: every loop is bounded by the
//! ring's size, inconsistent records are skipped and counted, and nothing panics.
//!
//! [`LogRecord::dmesg_line`] formats a record exactly as `makedumpfile --dump-dmesg` does.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write;

use crate::vmcoreinfo::VmcoreInfo;
use crate::vtop::{KernelVm, VtopError};

/// `DESC_SV_BITS - 2`: the descriptor state lives in the top two bits of `state_var`.
const DESC_FLAGS_SHIFT: u32 = 62;
/// `DESC_ID_MASK`: the id bits of `state_var` (and of head/tail ids).
const DESC_ID_MASK: u64 = !(3u64 << DESC_FLAGS_SHIFT);
/// `desc_committed`, `desc_finalized`: the states whose records are printed.
const DESC_COMMITTED: u64 = 1;
const DESC_FINALIZED: u64 = 2;
/// Largest rings accepted: 2^32 descriptors, 2^40 bytes of text.
const MAX_COUNT_BITS: u32 = 32;
const MAX_SIZE_BITS: u32 = 40;
/// Largest structure sizes accepted (the real ones are tens of bytes).
const MAX_STRUCT: u64 = 4096;
/// Markers of the records [`KernelLog::panic_tail`] looks for.
const PANIC_MARKERS: [&str; 4] = ["Kernel panic", "Oops", "BUG:", "sysrq: Trigger a crash"];

/// One record of the kernel log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Sequence number (`printk_info.seq`); for the pre-5.10 `log_buf`, which has none in
    /// memory, the record's position in the output from 0.
    pub seq: u64,
    /// Time stamp, nanoseconds since boot.
    pub ts_nsec: u64,
    /// `printk_info.caller_id` (`printk_log.caller_id` before 5.10) when VMCOREINFO exports
    /// its offset: bit 31 set = CPU number, else task id.
    pub caller_id: Option<u32>,
    /// The text as UTF-8; bytes that are not UTF-8 are replaced by U+FFFD (the original
    /// bytes are then in `raw_text`).
    pub text: String,
    /// The text's bytes exactly as stored, only when they are not valid UTF-8.
    pub raw_text: Option<Vec<u8>>,
}

/// Which log format was found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Lockless ringbuffer (Linux >= 5.10).
    #[default]
    Lockless,
    /// Variable-length records in `log_buf` (Linux 3.5 to 5.9).
    LogBuf,
}

/// What reading the log found besides the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub format: LogFormat,
    /// Records delivered.
    pub records: u64,
    /// Descriptors skipped because they hold no finished record (reserved, reusable, or
    /// reused for a newer id): normal in a live ring, makedumpfile skips them too.
    pub skipped: u64,
    /// Records without text (data-less blocks): skipped, as makedumpfile does.
    pub empty: u64,
    /// Records skipped because their positions are inconsistent or their memory cannot be
    /// read; also 1 for a ring whose head and tail ids are further apart than its size.
    pub garbage: u64,
    /// Records whose `text_len` was larger than their data block (text cut to the block).
    pub truncated: u64,
}

/// Why the log could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// VMCOREINFO has neither `SYMBOL(prb)` nor `SYMBOL(log_buf)`.
    NoLog,
    /// VMCOREINFO lacks a key this format needs (named).
    MissingInfo(&'static str),
    /// A structure of the log could not be read.
    Read { what: &'static str, err: VtopError },
    /// The ring's own fields are impossible; the text says which.
    BadRing(String),
    /// A log format this reader does not handle (named).
    Unsupported(&'static str),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::NoLog => write!(
                f,
                "VMCOREINFO has neither SYMBOL(prb) nor SYMBOL(log_buf): no kernel log to read"
            ),
            LogError::MissingInfo(key) => {
                write!(f, "VMCOREINFO has no {}, needed to read the kernel log", key)
            }
            LogError::Read { what, err } => write!(f, "cannot read {}: {}", what, err),
            LogError::BadRing(why) => write!(f, "the kernel log buffer is corrupt: {}", why),
            LogError::Unsupported(what) => write!(f, "unsupported kernel log format: {}", what),
        }
    }
}

impl LogRecord {
    /// The record as `makedumpfile --dump-dmesg` prints it, without the final newline:
    /// `"[%5llu.%06lu] "`, then (makedumpfile >= 1.7.5, when the caller id is known)
    /// `"[%8s] "` of `T<pid>` or `C<cpu>`, then the text with every newline followed by as
    /// many spaces as the prefix is long, and bytes other than printable ASCII and white
    /// space written `\xNN` (bytes >= 0x80 as `\xffffffNN`: makedumpfile passes a signed
    /// `char` to `%02x` on x86_64).
    pub fn dmesg_line(&self) -> String {
        self.dmesg_line_with(true)
    }

    /// [`Self::dmesg_line`], with or without the caller id. makedumpfile up to 1.7.4
    /// (Debian 12 ships 1.7.2) never prints it; 1.7.5 and later print it whenever
    /// VMCOREINFO exports `OFFSET(printk_info.caller_id)`, which Linux >= 5.10 always does.
    pub fn dmesg_line_with(&self, caller_id: bool) -> String {
        let mut s = String::with_capacity(self.text.len() + 32);
        let _ = write!(
            s,
            "[{:5}.{:06}] ",
            self.ts_nsec / 1_000_000_000,
            self.ts_nsec % 1_000_000_000 / 1000
        );
        if let (true, Some(cid)) = (caller_id, self.caller_id) {
            let kind = if cid & 0x8000_0000 != 0 { 'C' } else { 'T' };
            let id = format!("{}{}", kind, cid & 0x7fff_ffff);
            let _ = write!(s, "[{:>8}] ", id);
        }
        let indent = s.len();
        let bytes = self.raw_text.as_deref().unwrap_or(self.text.as_bytes());
        for &b in bytes {
            match b {
                b'\n' => {
                    s.push('\n');
                    s.extend(core::iter::repeat_n(' ', indent));
                }
                // isprint() || isspace() in the C locale.
                0x20..=0x7e | b'\t' | 0x0b | 0x0c | b'\r' => s.push(b as char),
                0x80.. => {
                    let _ = write!(s, "\\xffffff{:02x}", b);
                }
                _ => {
                    let _ = write!(s, "\\x{:02x}", b);
                }
            }
        }
        s
    }

    /// Whether the record says the kernel is going down (panic, Oops, BUG, sysrq crash).
    pub fn is_panic_marker(&self) -> bool {
        PANIC_MARKERS.iter().any(|m| self.text.contains(m))
    }
}

/// The whole log, oldest record first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLog {
    pub records: Vec<LogRecord>,
    pub stats: LogStats,
}

impl KernelLog {
    /// The log as `makedumpfile --dump-dmesg` writes it (makedumpfile >= 1.7.5: caller ids
    /// included when known).
    pub fn dmesg_text(&self) -> String {
        self.dmesg_text_with(true)
    }

    /// [`Self::dmesg_text`] with or without caller ids (see [`LogRecord::dmesg_line_with`]).
    pub fn dmesg_text_with(&self, caller_id: bool) -> String {
        let mut s = String::new();
        for r in &self.records {
            s.push_str(&r.dmesg_line_with(caller_id));
            s.push('\n');
        }
        s
    }

    /// The end of the log from about `lines` records before the last record containing
    /// "Kernel panic", "Oops", "BUG:" or "sysrq: Trigger a crash"; the whole log if none does.
    pub fn panic_tail(&self, lines: usize) -> &[LogRecord] {
        match self.records.iter().rposition(LogRecord::is_panic_marker) {
            Some(i) => &self.records[i.saturating_sub(lines)..],
            None => &self.records,
        }
    }
}

/// Calls `f` for every record of the kernel log, oldest first.
pub fn for_each_record(
    info: &VmcoreInfo,
    vm: &KernelVm,
    f: &mut dyn FnMut(&LogRecord),
) -> Result<LogStats, LogError> {
    if info.symbol("prb").is_some() {
        lockless(info, vm, f)
    } else if info.symbol("log_buf").is_some() {
        log_buf(info, vm, f)
    } else {
        Err(LogError::NoLog)
    }
}

/// The whole kernel log in memory.
pub fn read_kernel_log(info: &VmcoreInfo, vm: &KernelVm) -> Result<KernelLog, LogError> {
    let mut records = Vec::new();
    let stats = for_each_record(info, vm, &mut |r| records.push(r.clone()))?;
    Ok(KernelLog { records, stats })
}

fn need(v: Option<u64>, key: &'static str) -> Result<u64, LogError> {
    v.ok_or(LogError::MissingInfo(key))
}

fn read_err(what: &'static str) -> impl Fn(VtopError) -> LogError {
    move |err| LogError::Read { what, err }
}

/// Little-endian field readers over a structure read from memory; offsets come from
/// VMCOREINFO, so they are checked against the buffer.
fn field(buf: &[u8], off: u64, len: usize, what: &str) -> Result<u64, LogError> {
    let bytes = usize::try_from(off)
        .ok()
        .and_then(|o| buf.get(o..o.checked_add(len)?))
        .ok_or_else(|| {
            LogError::BadRing(format!(
                "{} at offset {} lies outside its {}-byte structure",
                what,
                off,
                buf.len()
            ))
        })?;
    let mut v = [0u8; 8];
    v[..len].copy_from_slice(bytes);
    Ok(u64::from_le_bytes(v))
}

fn text_to_record(seq: u64, ts_nsec: u64, caller_id: Option<u32>, raw: Vec<u8>) -> LogRecord {
    match String::from_utf8(raw) {
        Ok(text) => LogRecord { seq, ts_nsec, caller_id, text, raw_text: None },
        Err(e) => {
            let raw = e.into_bytes();
            LogRecord {
                seq,
                ts_nsec,
                caller_id,
                text: String::from_utf8_lossy(&raw).into_owned(),
                raw_text: Some(raw),
            }
        }
    }
}

/// Where the lockless ring's parts are, from VMCOREINFO and the `printk_ringbuffer`.
struct Prb {
    count: u64,
    descs: u64,
    infos: u64,
    desc_size: u64,
    info_size: u64,
    data: u64,
    size: u64,
    tail_id: u64,
    head_id: u64,
    /// Offsets within a `prb_desc`.
    state_var: u64,
    lpos_begin: u64,
    lpos_next: u64,
    /// Offsets within a `printk_info`.
    seq: u64,
    ts_nsec: u64,
    text_len: u64,
    caller_id: Option<u64>,
}

impl Prb {
    fn new(info: &VmcoreInfo, vm: &KernelVm) -> Result<Self, LogError> {
        let sym = need(info.symbol("prb"), "SYMBOL(prb)")?;
        let prb = vm.read_u64(sym).map_err(read_err("the prb pointer"))?;
        let rb_size = need(info.size("printk_ringbuffer"), "SIZE(printk_ringbuffer)")?;
        if rb_size > MAX_STRUCT {
            return Err(LogError::BadRing(format!("SIZE(printk_ringbuffer)={}", rb_size)));
        }
        let mut rb = vec![0u8; rb_size as usize];
        vm.read(prb, &mut rb).map_err(read_err("the printk_ringbuffer"))?;
        let o = |k: &'static str| need(info.offset(k), k);
        let desc_ring = o("printk_ringbuffer.desc_ring")?;
        let text_ring = o("printk_ringbuffer.text_data_ring")?;
        let counter = o("atomic_long_t.counter")?;
        let at = |base: u64, off: u64| base.saturating_add(off);

        let count_bits =
            field(&rb, at(desc_ring, o("prb_desc_ring.count_bits")?), 4, "count_bits")?;
        let size_bits = field(&rb, at(text_ring, o("prb_data_ring.size_bits")?), 4, "size_bits")?;
        if count_bits > u64::from(MAX_COUNT_BITS) || size_bits > u64::from(MAX_SIZE_BITS) {
            return Err(LogError::BadRing(format!(
                "descriptor ring of 2^{} entries, text ring of 2^{} bytes",
                count_bits, size_bits
            )));
        }
        let descs = field(&rb, at(desc_ring, o("prb_desc_ring.descs")?), 8, "descs")?;
        let infos = field(&rb, at(desc_ring, o("prb_desc_ring.infos")?), 8, "infos")?;
        let data = field(&rb, at(text_ring, o("prb_data_ring.data")?), 8, "data")?;
        let head_off = at(at(desc_ring, o("prb_desc_ring.head_id")?), counter);
        let tail_off = at(at(desc_ring, o("prb_desc_ring.tail_id")?), counter);
        let head_id = field(&rb, head_off, 8, "head_id")?;
        let tail_id = field(&rb, tail_off, 8, "tail_id")?;

        let count = 1u64 << count_bits;
        let size = 1u64 << size_bits;
        let desc_size = need(info.size("prb_desc"), "SIZE(prb_desc)")?;
        let info_size = need(info.size("printk_info"), "SIZE(printk_info)")?;
        if desc_size > MAX_STRUCT || info_size > MAX_STRUCT {
            return Err(LogError::BadRing(format!(
                "SIZE(prb_desc)={} SIZE(printk_info)={}",
                desc_size, info_size
            )));
        }
        // The arrays must not wrap around the address space.
        for (base, len, what) in [
            (descs, count * desc_size, "descriptor array"),
            (infos, count * info_size, "info array"),
            (data, size, "text data ring"),
        ] {
            if base.checked_add(len).is_none() {
                return Err(LogError::BadRing(format!(
                    "{} at {:#x} ({} bytes) wraps around the address space",
                    what, base, len
                )));
            }
        }
        let text_blk = o("prb_desc.text_blk_lpos")?;
        Ok(Self {
            count,
            descs,
            infos,
            desc_size,
            info_size,
            data,
            size,
            tail_id: tail_id & DESC_ID_MASK,
            head_id: head_id & DESC_ID_MASK,
            state_var: at(o("prb_desc.state_var")?, counter),
            lpos_begin: at(text_blk, o("prb_data_blk_lpos.begin")?),
            lpos_next: at(text_blk, o("prb_data_blk_lpos.next")?),
            seq: o("printk_info.seq")?,
            ts_nsec: o("printk_info.ts_nsec")?,
            text_len: o("printk_info.text_len")?,
            caller_id: info.offset("printk_info.caller_id"),
        })
    }
}

/// What happened to one descriptor.
enum Outcome {
    Record(LogRecord),
    Skipped,
    Empty,
    Garbage,
}

fn lockless(
    info: &VmcoreInfo,
    vm: &KernelVm,
    f: &mut dyn FnMut(&LogRecord),
) -> Result<LogStats, LogError> {
    let p = Prb::new(info, vm)?;
    let mut stats = LogStats { format: LogFormat::Lockless, ..LogStats::default() };
    // makedumpfile walks ids from tail_id to head_id inclusive. In a consistent ring they
    // are less than `count` apart; otherwise only the newest `count` ids are looked at.
    let span = p.head_id.wrapping_sub(p.tail_id) & DESC_ID_MASK;
    let (first, n) = if span < p.count {
        (p.tail_id, span + 1)
    } else {
        stats.garbage += 1;
        (p.head_id.wrapping_sub(p.count - 1) & DESC_ID_MASK, p.count)
    };
    let mut desc = vec![0u8; p.desc_size as usize];
    let mut inf = vec![0u8; p.info_size as usize];
    for i in 0..n {
        let id = first.wrapping_add(i) & DESC_ID_MASK;
        match lockless_record(&p, vm, id, &mut desc, &mut inf, &mut stats) {
            Outcome::Record(r) => {
                stats.records += 1;
                f(&r);
            }
            Outcome::Skipped => stats.skipped += 1,
            Outcome::Empty => stats.empty += 1,
            Outcome::Garbage => stats.garbage += 1,
        }
    }
    Ok(stats)
}

/// One descriptor of the lockless ring, as makedumpfile `dump_record()` reads it.
fn lockless_record(
    p: &Prb,
    vm: &KernelVm,
    id: u64,
    desc: &mut [u8],
    inf: &mut [u8],
    stats: &mut LogStats,
) -> Outcome {
    let index = id & (p.count - 1);
    // In range: checked in Prb::new that the arrays do not wrap.
    if vm.read(p.descs + index * p.desc_size, desc).is_err() {
        return Outcome::Garbage;
    }
    let (Ok(sv), Ok(begin), Ok(next)) = (
        field(desc, p.state_var, 8, ""),
        field(desc, p.lpos_begin, 8, ""),
        field(desc, p.lpos_next, 8, ""),
    ) else {
        return Outcome::Garbage;
    };
    if sv & DESC_ID_MASK != id {
        return Outcome::Skipped;
    }
    let state = sv >> DESC_FLAGS_SHIFT;
    if state != DESC_COMMITTED && state != DESC_FINALIZED {
        return Outcome::Skipped;
    }
    let mut begin = begin % p.size;
    let next = next % p.size;
    if begin == next {
        return Outcome::Empty;
    }
    if vm.read(p.infos + index * p.info_size, inf).is_err() {
        return Outcome::Garbage;
    }
    let (Ok(seq), Ok(ts_nsec), Ok(text_len)) =
        (field(inf, p.seq, 8, ""), field(inf, p.ts_nsec, 8, ""), field(inf, p.text_len, 2, ""))
    else {
        return Outcome::Garbage;
    };
    let caller_id = match p.caller_id.map(|o| field(inf, o, 4, "")) {
        None => None,
        Some(Ok(c)) => Some(c as u32),
        Some(Err(_)) => return Outcome::Garbage,
    };
    // A wrapping block keeps its data at the start of the ring; the block begins with the
    // descriptor id (an unsigned long).
    if begin > next {
        begin = 0;
    }
    begin += 8;
    if begin > next {
        return Outcome::Garbage;
    }
    let mut len = text_len;
    if next - begin < len {
        len = next - begin;
        stats.truncated += 1;
    }
    let mut text = vec![0u8; len as usize];
    if vm.read(p.data + begin, &mut text).is_err() {
        return Outcome::Garbage;
    }
    Outcome::Record(text_to_record(seq, ts_nsec, caller_id, text))
}

/// The pre-5.10 `log_buf` of variable-length records.
fn log_buf(
    info: &VmcoreInfo,
    vm: &KernelVm,
    f: &mut dyn FnMut(&LogRecord),
) -> Result<LogStats, LogError> {
    let mut stats = LogStats { format: LogFormat::LogBuf, ..LogStats::default() };
    if info.symbol("log_first_idx").is_none() && info.symbol("log_end").is_some() {
        return Err(LogError::Unsupported("the plain-text log_buf of Linux before 3.5"));
    }
    let sym = |k: &'static str| need(info.symbol(k), k);
    let buf = vm.read_u64(sym("log_buf")?).map_err(read_err("the log_buf pointer"))?;
    let buf_len = vm.read_u32(sym("log_buf_len")?).map_err(read_err("log_buf_len"))? as u64;
    let first = u64::from(vm.read_u32(sym("log_first_idx")?).map_err(read_err("log_first_idx"))?);
    let next = u64::from(vm.read_u32(sym("log_next_idx")?).map_err(read_err("log_next_idx"))?);
    // The structure is "printk_log" since Linux 3.11, "log" before.
    let (hdr_size, ts_off, len_off, text_len_off, caller_off) = match info.size("printk_log") {
        Some(s) => (
            s,
            need(info.offset("printk_log.ts_nsec"), "OFFSET(printk_log.ts_nsec)")?,
            need(info.offset("printk_log.len"), "OFFSET(printk_log.len)")?,
            need(info.offset("printk_log.text_len"), "OFFSET(printk_log.text_len)")?,
            info.offset("printk_log.caller_id"),
        ),
        None => (
            need(info.size("log"), "SIZE(printk_log)")?,
            need(info.offset("log.ts_nsec"), "OFFSET(log.ts_nsec)")?,
            need(info.offset("log.len"), "OFFSET(log.len)")?,
            need(info.offset("log.text_len"), "OFFSET(log.text_len)")?,
            None,
        ),
    };
    if hdr_size == 0
        || hdr_size > MAX_STRUCT
        || buf_len > 1 << 31
        || buf.checked_add(buf_len).is_none()
    {
        return Err(LogError::BadRing(format!(
            "log_buf of {} bytes at {:#x}, SIZE(printk_log)={}",
            buf_len, buf, hdr_size
        )));
    }
    let mut hdr = vec![0u8; hdr_size as usize];
    let read_hdr = |pos: u64, hdr: &mut [u8]| -> Option<u64> {
        if pos.checked_add(hdr_size)? > buf_len {
            return None;
        }
        vm.read(buf + pos, hdr).ok()?;
        field(hdr, len_off, 2, "").ok()
    };
    let mut pos = first;
    let mut seq = 0u64;
    // Every record is at least a header long, so this many steps cover the buffer.
    let mut steps = buf_len / hdr_size + 2;
    while pos != next {
        if steps == 0 {
            stats.garbage += 1;
            break;
        }
        steps -= 1;
        let Some(mut len) = read_hdr(pos, &mut hdr) else {
            stats.garbage += 1;
            break;
        };
        // A zero length marks the end of the buffer: the record is at the start.
        let mut at = pos;
        if len == 0 {
            at = 0;
            match read_hdr(0, &mut hdr) {
                Some(l) if l != 0 => len = l,
                _ => {
                    stats.garbage += 1;
                    break;
                }
            }
        }
        let (Ok(ts_nsec), Ok(text_len)) =
            (field(&hdr, ts_off, 8, ""), field(&hdr, text_len_off, 2, ""))
        else {
            stats.garbage += 1;
            break;
        };
        let caller_id = caller_off.and_then(|o| field(&hdr, o, 4, "").ok()).map(|c| c as u32);
        let room = (len.saturating_sub(hdr_size)).min(buf_len - (at + hdr_size));
        let n = if text_len > room {
            stats.truncated += 1;
            room
        } else {
            text_len
        };
        let mut text = vec![0u8; n as usize];
        if vm.read(buf + at + hdr_size, &mut text).is_err() {
            stats.garbage += 1;
        } else {
            stats.records += 1;
            f(&text_to_record(seq, ts_nsec, caller_id, text));
            seq += 1;
        }
        pos = at + len;
    }
    Ok(stats)
}

/// The kernel log of a kdump-compressed dump, as `makedumpfile --dump-dmesg` writes it (one
/// line per record; with `caller_id`, the `[T123]` column of makedumpfile 1.7.5 and later).
pub fn dmesg_of_dump<R: crate::kdump_reader::ReadAt>(
    rd: &crate::kdump_reader::KdumpReader<R>,
    caller_id: bool,
) -> Result<(String, LogStats), String> {
    let text = rd.vmcoreinfo().ok_or_else(|| String::from("the dump has no VMCOREINFO"))?;
    let info = VmcoreInfo::new(text);
    let machine = match rd.machine() {
        Some(m) if m.starts_with("x86_64") => crate::elfcore::EM_X86_64,
        Some(m) if m.starts_with("aarch64") => crate::elfcore::EM_AARCH64,
        m => return Err(format!("unknown machine {:?} in the dump header", m)),
    };
    let vm = KernelVm::new(&info, rd, machine).map_err(|e| format!("{}", e))?;
    let mut out = String::new();
    let stats = for_each_record(&info, &vm, &mut |r| {
        out.push_str(&r.dmesg_line_with(caller_id));
        out.push('\n');
    })
    .map_err(|e| format!("{}", e))?;
    Ok((out, stats))
}

/// The last `keep` records of the log (memory bounded by `keep`, whatever the size of the
/// crashed kernel's ring buffer) and how many records the log has in all.
pub fn read_log_tail(info: &VmcoreInfo, vm: &KernelVm, keep: usize) -> Result<(KernelLog, u64), LogError> {
    let mut tail: alloc::collections::VecDeque<LogRecord> = alloc::collections::VecDeque::with_capacity(keep);
    let mut total = 0u64;
    let stats = for_each_record(info, vm, &mut |r| {
        total += 1;
        if keep == 0 {
            return;
        }
        if tail.len() == keep {
            tail.pop_front();
        }
        tail.push_back(r.clone());
    })?;
    Ok((KernelLog { records: tail.into_iter().collect(), stats }, total))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::elfcore::EM_X86_64;
    use crate::vtop::testutil::*;
    use crate::vtop::X86_64_START_KERNEL_MAP;

    const TOP_PA: u64 = 0x0100_0000;
    const IMAGE: u64 = X86_64_START_KERNEL_MAP;
    /// Where the kernel data structures live (image addresses: pa = va - IMAGE).
    const PRB_PTR: u64 = IMAGE + 0x0200_0000;
    const PRB: u64 = IMAGE + 0x0200_1000;
    /// The rings are in vmalloc space, mapped page by page to scattered physical pages.
    const DESCS: u64 = 0xffff_c900_0010_0000;
    const INFOS: u64 = 0xffff_c900_0020_0000;
    const DATA: u64 = 0xffff_c900_0040_0000;

    /// The lockless ring buffer's VMCOREINFO layout for tests (also used by vtop's arm64
    /// test): made-up but consistent offsets (not Linux's), so that the reader cannot depend
    /// on the real layout.
    pub(crate) const PRB_LAYOUT: &str = "SIZE(printk_ringbuffer)=120\nOFFSET(printk_ringbuffer.desc_ring)=8\n\
OFFSET(printk_ringbuffer.text_data_ring)=72\nSIZE(prb_desc_ring)=64\n\
OFFSET(prb_desc_ring.count_bits)=4\nOFFSET(prb_desc_ring.descs)=16\n\
OFFSET(prb_desc_ring.infos)=24\nOFFSET(prb_desc_ring.head_id)=32\n\
OFFSET(prb_desc_ring.tail_id)=48\nSIZE(prb_desc)=40\nOFFSET(prb_desc.state_var)=8\n\
OFFSET(prb_desc.text_blk_lpos)=24\nOFFSET(prb_data_blk_lpos.begin)=8\n\
OFFSET(prb_data_blk_lpos.next)=0\nSIZE(printk_info)=48\nOFFSET(printk_info.seq)=16\n\
OFFSET(printk_info.ts_nsec)=0\nOFFSET(printk_info.text_len)=40\n\
OFFSET(prb_data_ring.size_bits)=0\nOFFSET(prb_data_ring.data)=8\n\
SIZE(atomic_long_t)=16\nOFFSET(atomic_long_t.counter)=8\n";

    fn vmcoreinfo(caller: bool) -> String {
        let mut s = format!(
            "NUMBER(phys_base)=0\nSYMBOL(init_top_pgt)={:x}\nNUMBER(pgtable_l5_enabled)=0\n\
SYMBOL(prb)={:x}\n{}",
            IMAGE + TOP_PA,
            PRB_PTR,
            PRB_LAYOUT
        );
        if caller {
            s.push_str("OFFSET(printk_info.caller_id)=24\n");
        }
        s
    }

    struct Ring {
        mem: PageMem,
        count_bits: u32,
        size_bits: u32,
    }

    impl Ring {
        /// An empty ring with `2^count_bits` descriptors and `2^size_bits` bytes of text.
        fn new(count_bits: u32, size_bits: u32) -> Self {
            let mut mem = PageMem::default();
            let mut pt = PageTables::new(&mut mem, TOP_PA, 4, 0);
            // Map the ring areas to physical pages in reverse order, so that virtually
            // contiguous reads really cross to unrelated physical pages.
            let mut pa = 0x0900_0000u64;
            for (base, len) in
                [(DESCS, 40u64 << count_bits), (INFOS, 48 << count_bits), (DATA, 1 << size_bits)]
            {
                for page in (0..len.div_ceil(4096)).rev() {
                    pt.map(&mut mem, base + page * 4096, pa, 12);
                    mem.write(pa, &[0u8; 4096]);
                    pa += 0x3000;
                }
            }
            let mut r = Self { mem, count_bits, size_bits };
            r.w64(PRB_PTR, PRB);
            r.w64(PRB + 8 + 4, u64::from(count_bits)); // count_bits (u32) + garbage above
            r.w64(PRB + 8 + 16, DESCS);
            r.w64(PRB + 8 + 24, INFOS);
            r.w64(PRB + 72, u64::from(size_bits));
            r.w64(PRB + 72 + 8, DATA);
            r
        }

        fn w64(&mut self, va: u64, v: u64) {
            self.write(va, &v.to_le_bytes());
        }

        fn write(&mut self, va: u64, data: &[u8]) {
            // Image addresses are identity-offset; ring addresses go through the tables.
            let info = vmcoreinfo(false);
            let vi = VmcoreInfo::new(info.as_bytes());
            let mut pas = Vec::new();
            {
                let vm = KernelVm::new(&vi, &self.mem, EM_X86_64).unwrap();
                for i in 0..data.len() as u64 {
                    pas.push(vm.translate(va + i).unwrap());
                }
            }
            for (pa, &b) in pas.into_iter().zip(data) {
                self.mem.write(pa, &[b]);
            }
        }

        fn set_ids(&mut self, tail: u64, head: u64) {
            self.w64(PRB + 8 + 32 + 8, head);
            self.w64(PRB + 8 + 48 + 8, tail);
        }

        /// Writes descriptor `id` with the given state, block and info.
        #[allow(clippy::too_many_arguments)]
        fn desc(
            &mut self,
            id: u64,
            state: u64,
            begin: u64,
            next: u64,
            seq: u64,
            ts: u64,
            text_len: u16,
        ) {
            let i = id & ((1 << self.count_bits) - 1);
            let d = DESCS + i * 40;
            self.w64(d + 8 + 8, id | state << 62);
            self.w64(d + 24 + 8, begin);
            self.w64(d + 24, next);
            let inf = INFOS + i * 48;
            self.w64(inf, ts);
            self.w64(inf + 16, seq);
            self.write(inf + 24, &(0x8000_0003u32 - (seq as u32 % 2) * 0x8000_0000).to_le_bytes());
            self.write(inf + 40, &text_len.to_le_bytes());
        }

        /// Appends a finalized record whose data block starts at logical position `lpos`;
        /// returns the next block's position. Wraps like the kernel's data_alloc().
        fn push(&mut self, id: u64, lpos: u64, seq: u64, text: &[u8]) -> u64 {
            let size = 1u64 << self.size_bits;
            let blk = (8 + text.len() as u64).div_ceil(8) * 8;
            let (next, at) = if lpos / size == (lpos + blk) / size {
                (lpos + blk, lpos % size)
            } else {
                // Does not fit before the end (or ends exactly there): the kernel puts the
                // data at the start of the ring, in the next wrap.
                ((lpos + blk) / size * size + blk, 0)
            };
            self.w64(DATA + at, id);
            self.write(DATA + at + 8, text);
            let ts = 1_000_000_000 * seq + 123_456_789;
            self.desc(id, 2, lpos, next, seq, ts, text.len() as u16);
            next
        }

        fn log(&self, caller: bool) -> Result<KernelLog, LogError> {
            let info = vmcoreinfo(caller);
            let vi = VmcoreInfo::new(info.as_bytes());
            let vm = KernelVm::new(&vi, &self.mem, EM_X86_64).unwrap();
            read_kernel_log(&vi, &vm)
        }
    }

    #[test]
    fn tail_keeps_only_the_last_records() {
        let mut r = Ring::new(4, 12);
        let mut lpos = 0;
        let lines = ["boot", "a", "Kernel panic - not syncing: x", "b", "c"];
        for (id, t) in lines.iter().enumerate() {
            lpos = r.push(id as u64, lpos, id as u64, t.as_bytes());
        }
        r.set_ids(0, 4);
        let info = vmcoreinfo(true);
        let vi = VmcoreInfo::new(info.as_bytes());
        let vm = KernelVm::new(&vi, &r.mem, EM_X86_64).unwrap();
        let (tail, total) = read_log_tail(&vi, &vm, 3).unwrap();
        assert_eq!(total, 5);
        assert_eq!(texts(&tail), ["Kernel panic - not syncing: x", "b", "c"]);
        assert_eq!(texts(&KernelLog { records: tail.panic_tail(1).to_vec(), stats: tail.stats }), ["Kernel panic - not syncing: x", "b", "c"]);
        let (none, total) = read_log_tail(&vi, &vm, 0).unwrap();
        assert!(none.records.is_empty() && total == 5);
    }

    fn texts(log: &KernelLog) -> Vec<&str> {
        log.records.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn reads_records_in_order() {
        let mut r = Ring::new(4, 12);
        let mut lpos = 0;
        for (id, t) in [&b"Linux version 6.1"[..], b"second", b"third line"].iter().enumerate() {
            lpos = r.push(id as u64, lpos, id as u64, t);
        }
        r.set_ids(0, 2);
        let log = r.log(true).unwrap();
        assert_eq!(texts(&log), ["Linux version 6.1", "second", "third line"], "{:?}", log.stats);
        assert_eq!(log.records[1].seq, 1);
        assert_eq!(log.records[1].ts_nsec, 1_123_456_789);
        assert_eq!(log.records[0].caller_id, Some(0x8000_0003));
        assert_eq!(log.records[1].caller_id, Some(3));
        assert_eq!(log.stats.records, 3);
        assert_eq!(log.stats.format, LogFormat::Lockless);
        assert_eq!(
            log.dmesg_text(),
            "[    0.123456] [      C3] Linux version 6.1\n[    1.123456] [      T3] second\n\
             [    2.123456] [      C3] third line\n"
        );
        assert_eq!(
            log.dmesg_text_with(false),
            "[    0.123456] Linux version 6.1\n[    1.123456] second\n[    2.123456] third line\n"
        );
        // Without OFFSET(printk_info.caller_id), no caller ids.
        let log = r.log(false).unwrap();
        assert_eq!(log.records[0].caller_id, None);
        assert!(log.dmesg_text().starts_with("[    0.123456] Linux"));
    }

    #[test]
    fn wrap_around_of_both_rings() {
        // 8 descriptors, 256 bytes of text: 50 records wrap both many times.
        let mut r = Ring::new(3, 8);
        let mut lpos = 0;
        for id in 0..50u64 {
            let t = format!("message number {:02} {}", id, "x".repeat((id % 5) as usize * 7));
            lpos = r.push(id, lpos, id + 1000, t.as_bytes());
        }
        // Only the newest records still have their text in the 256-byte ring: the oldest
        // of the 8 descriptors are made reusable, as the kernel does when it pushes the tail.
        let first_kept = 46u64;
        for id in 42..first_kept {
            let i = id & 7;
            let mut b = [0u8; 8];
            b.copy_from_slice(&(id | 3 << 62).to_le_bytes());
            r.write(DESCS + i * 40 + 16, &b);
        }
        r.set_ids(42, 49);
        let log = r.log(false).unwrap();
        let want: Vec<String> = (first_kept..50)
            .map(|id| format!("message number {:02} {}", id, "x".repeat((id % 5) as usize * 7)))
            .collect();
        assert_eq!(texts(&log), want);
        assert_eq!(log.records[0].seq, 1046);
        assert_eq!(log.stats.skipped, 4);
        assert_eq!(log.stats.garbage, 0);
    }

    #[test]
    fn garbage_descriptors_are_skipped_and_counted() {
        let mut r = Ring::new(3, 10);
        let mut lpos = 0;
        for id in 0..6u64 {
            lpos = r.push(id, lpos, id, format!("rec {}", id).as_bytes());
        }
        // id 1: reused for a newer id (miss); id 2: reserved; id 3: text_len larger than
        // its block; id 4: data-less.
        r.desc(1, 2, 0, 64, 1, 0, 5);
        r.w64(DESCS + 40 + 16, 9 | 2 << 62);
        r.w64(DESCS + 2 * 40 + 16, 2);
        let b3 = {
            let mut b = [0u8; 2];
            b.copy_from_slice(&600u16.to_le_bytes());
            b
        };
        r.write(INFOS + 3 * 48 + 40, &b3);
        r.w64(DESCS + 4 * 40 + 24 + 8, 1);
        r.w64(DESCS + 4 * 40 + 24, 1);
        r.set_ids(0, 5);
        let log = r.log(false).unwrap();
        assert_eq!(log.records.len(), 3, "{:?}", texts(&log));
        assert_eq!(log.records[0].text, "rec 0");
        // The truncated record is cut to its block (8 bytes of text in a 16-byte block).
        assert_eq!(log.records[1].text.as_bytes()[..5], *b"rec 3");
        assert_eq!(log.records[1].text.len(), 8);
        assert_eq!(log.records[2].text, "rec 5");
        assert_eq!(log.stats.skipped, 2);
        assert_eq!(log.stats.truncated, 1);
        assert_eq!(log.stats.empty, 1);

        // Head and tail further apart than the ring: only the newest 8 ids are looked at.
        r.set_ids(0x1234_5678_9abc, 5);
        let log = r.log(false).unwrap();
        assert_eq!(log.stats.garbage, 1);
        assert!(log.records.len() <= 8);

        // Positions past the ring's end, unreadable text, impossible ring sizes.
        r.set_ids(0, 5);
        r.w64(DESCS + 24 + 8, 8); // id 0: begin 8, so begin + 8 > next
        let _ = r.log(false).unwrap();
        r.w64(PRB + 8 + 4, 63);
        assert!(matches!(r.log(false), Err(LogError::BadRing(_))));
        r.w64(PRB + 8 + 4, 3);
        r.w64(PRB + 8 + 24, 0xffff_c900_7777_0000); // infos unmapped
        let log = r.log(false).unwrap();
        assert_eq!(log.records.len(), 0);
        assert!(log.stats.garbage > 0);
        r.w64(PRB + 8 + 24, u64::MAX - 16); // wraps
        assert!(matches!(r.log(false), Err(LogError::BadRing(_))));
        r.w64(PRB_PTR, 0x1234); // prb pointer to nowhere
        assert!(matches!(r.log(false), Err(LogError::Read { .. })));
    }

    #[test]
    fn dmesg_line_format() {
        let rec =
            |ts: u64, text: &[u8], cid: Option<u32>| text_to_record(0, ts, cid, text.to_vec());
        assert_eq!(rec(0, b"x", None).dmesg_line(), "[    0.000000] x");
        assert_eq!(rec(123_456_789_999_999, b"", None).dmesg_line(), "[123456.789999] ");
        // Multi-line texts are indented to the prefix; control and high bytes escaped.
        assert_eq!(
            rec(1_500_000, b"a\nb\tc\x01\x7f\xc3\xa9\r", Some(0x8000_000c)).dmesg_line(),
            format!(
                "[    0.001500] [     C12] a\n{}b\tc\\x01\\x7f\\xffffffc3\\xffffffa9\r",
                " ".repeat(26)
            )
        );
        assert_eq!(
            rec(0, b"l1\nl2", Some(1234567)).dmesg_line_with(false),
            "[    0.000000] l1\n               l2"
        );
        // Invalid UTF-8 is kept byte-exact for the dmesg line.
        let r = rec(0, b"\xff\xfe", None);
        assert_eq!(r.text, "\u{fffd}\u{fffd}");
        assert_eq!(r.dmesg_line(), "[    0.000000] \\xffffffff\\xfffffffe");
    }

    #[test]
    fn panic_tail_finds_the_last_marker() {
        let mut log = KernelLog::default();
        for (i, t) in ["boot", "a", "Oops: old", "b", "c", "d", "sysrq: Trigger a crash", "e", "f"]
            .iter()
            .enumerate()
        {
            log.records.push(text_to_record(i as u64, 0, None, t.as_bytes().to_vec()));
        }
        let tail: Vec<&str> = log.panic_tail(2).iter().map(|r| r.text.as_str()).collect();
        assert_eq!(tail, ["c", "d", "sysrq: Trigger a crash", "e", "f"]);
        assert_eq!(log.panic_tail(100).len(), 9);
        log.records.retain(|r| !r.text.contains(':'));
        assert_eq!(log.panic_tail(1).len(), log.records.len());
    }

    /// A pre-5.10 log_buf with `struct printk_log` records (made-up layout: 16-byte header,
    /// ts at 0, len at 8, text_len at 10, caller_id at 12).
    #[test]
    fn legacy_log_buf() {
        const BUF: u64 = IMAGE + 0x0300_0000;
        const SYMS: u64 = IMAGE + 0x0200_0000;
        let mut mem = PageMem::default();
        let _pt = PageTables::new(&mut mem, TOP_PA, 4, 0);
        let len = 4096u64;
        let rec = |ts: u64, text: &[u8]| {
            let l = (16 + text.len()).div_ceil(8) * 8;
            let mut b = vec![0u8; l];
            b[0..8].copy_from_slice(&ts.to_le_bytes());
            b[8..10].copy_from_slice(&(l as u16).to_le_bytes());
            b[10..12].copy_from_slice(&(text.len() as u16).to_le_bytes());
            b[12..16].copy_from_slice(&7u32.to_le_bytes());
            b[16..16 + text.len()].copy_from_slice(text);
            b
        };
        // Buffer: [r3 at 0][r4][... free ...][r1 at 4000][r2][wrap marker (len 0)]
        let r3 = rec(3_000_000_000, b"third");
        let r4 = rec(4_000_000_000, b"fourth\nline");
        let r1 = rec(1_000_000_000, b"first");
        let r2 = rec(2_000_000_000, b"second");
        let mut buf = vec![0u8; len as usize];
        buf[..r3.len()].copy_from_slice(&r3);
        buf[r3.len()..r3.len() + r4.len()].copy_from_slice(&r4);
        let first = 4000 - 48;
        buf[first..first + r1.len()].copy_from_slice(&r1);
        buf[first + r1.len()..first + r1.len() + r2.len()].copy_from_slice(&r2);
        let next = (r3.len() + r4.len()) as u64;
        mem.write(BUF - IMAGE, &buf);
        mem.write_u64(SYMS - IMAGE, BUF);
        mem.write(SYMS - IMAGE + 8, &(len as u32).to_le_bytes());
        mem.write(SYMS - IMAGE + 12, &(first as u32).to_le_bytes());
        mem.write(SYMS - IMAGE + 16, &(next as u32).to_le_bytes());
        let info = format!(
            "NUMBER(phys_base)=0\nSYMBOL(init_top_pgt)={:x}\nSYMBOL(log_buf)={:x}\n\
SYMBOL(log_buf_len)={:x}\nSYMBOL(log_first_idx)={:x}\nSYMBOL(log_next_idx)={:x}\n\
SIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n\
OFFSET(printk_log.text_len)=10\nOFFSET(printk_log.caller_id)=12\n",
            IMAGE + TOP_PA,
            SYMS,
            SYMS + 8,
            SYMS + 12,
            SYMS + 16
        );
        let vi = VmcoreInfo::new(info.as_bytes());
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        let log = read_kernel_log(&vi, &vm).unwrap();
        assert_eq!(texts(&log), ["first", "second", "third", "fourth\nline"]);
        assert_eq!(log.stats.format, LogFormat::LogBuf);
        assert_eq!(log.records[3].seq, 3);
        assert_eq!(
            log.records[3].dmesg_line(),
            "[    4.000000] [      T7] fourth\n                          line"
        );
        // A zero-length record that is not the wrap marker: stops, no hang.
        let mut bad = buf.clone();
        bad[first + r1.len() + 8] = 0;
        bad[8] = 0;
        bad[9] = 0;
        mem.write(BUF - IMAGE, &bad);
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        let log = read_kernel_log(&vi, &vm).unwrap();
        assert_eq!(log.stats.garbage, 1);
        // A cycle that never reaches log_next_idx: bounded.
        let mut cyc = buf.clone();
        cyc[first + 8..first + 10].copy_from_slice(&0u16.to_le_bytes());
        cyc[8..10].copy_from_slice(&(first as u16).to_le_bytes());
        mem.write(BUF - IMAGE, &cyc);
        let vm = KernelVm::new(&vi, &mem, EM_X86_64).unwrap();
        let log = read_kernel_log(&vi, &vm).unwrap();
        assert_eq!(log.stats.garbage, 1);
        assert!(log.records.len() as u64 <= len / 16 + 2);
        // Neither format.
        let vi = VmcoreInfo::new(b"NUMBER(phys_base)=0\n");
        assert_eq!(for_each_record(&vi, &vm, &mut |_| {}), Err(LogError::NoLog));
    }
}

