//! The disk sink: the dump as a raw kdump-compressed image at offset 0 of a whole disk.
//!
//! After the reboot the disk *is* the vmcore: `crash vmlinux /dev/vdb` reads it in place and
//! `lifeboat fetch /dev/vdb -o vmcore` copies it out (only the dump's bytes, not the disk).
//!
//! [`BlockSink`] turns [`RecordSink`] records into sector writes on a [`BlockDevice`]:
//!
//! - **Coalescing.** Records go through one write-back buffer ([`WRITE_BUFFER_BYTES`],
//!   allocated once in [`BlockSink::new`]) covering a run of consecutive sectors; a record that
//!   does not continue the run writes the buffer out and starts a new one. Partial sectors at
//!   either end of a run are completed by reading the sector first (read-modify-write), so
//!   records may arrive in any order and overwrite earlier ones.
//! - **Crash consistency.** [`BlockSink::new`] first replaces sector 0 with an "in progress"
//!   marker ([`in_progress_marker`]) and flushes. Everything written to the first
//!   [`HELD_BYTES`] (the `disk_dump_header` block) is held in memory and written only by
//!   [`BlockSink::finish`], after every other byte is on the disk and flushed, followed by a
//!   second flush. A capture that stops half way (power loss, a hang, a panic) therefore leaves
//!   the marker, never a header that claims a complete dump nor an old dump's header in front
//!   of new data. The marker does not start with anything crash, makedumpfile, blkid or
//!   `lifeboat fetch` take for a dump or a file system.
//! - **Capacity.** A record that reaches past the end of the disk is written up to the end and
//!   answered with [`SinkError::Full`]; records inside the disk (in particular the header
//!   rewrite that marks the dump incomplete) are still accepted.
//!
//! - **The crashed kernel's log** goes first, into a region at the *end* of the disk
//!   ([`BlockSink::start_log`], right after [`BlockSink::new`] and before any record): the
//!   last sector becomes a "writing" [`LogTrailer`] (flush), the text follows from the
//!   region's start (flush), then the final trailer (flush). Only then is any dump byte
//!   written. The dump keeps offset 0 and its capacity shrinks to the region's start. The
//!   region is sized from the log's length (measured before by a dry pass over the records)
//!   and capped by [`BlockSink::log_limit`]; a longer log is cut after the last whole piece
//!   that fits and marked incomplete. `lifeboat fetch` finds it from the last sector alone.
//!
//! The write order on the device is therefore: marker sector, flush, [writing trailer, flush,
//! log text, flush, trailer, flush,] data runs (each one write command), flush, header block,
//! flush.
//!
//! The trailer (the disk's last [`SECTOR`], all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 19 | [`LOG_TRAILER_MAGIC`] `LIFEBOAT-KERNEL-LOG`, then zeros up to 24 |
//! | 24 | 4 | version ([`LOG_TRAILER_VERSION`]) |
//! | 28 | 4 | state: 0 writing (the capture stopped while writing the log), 1 written |
//! | 32 | 8 | region start: disk offset of the text (sector-aligned) |
//! | 40 | 8 | text length stored at the region start |
//! | 48 | 8 | the whole log's length as measured (larger than the text when it was cut) |
//! | 56 | 8 | records sent |
//! | 64 | 4 | flags: bit 0 the log is complete |
//! | 68 | 4 | CRC-32 (IEEE, zlib's `crc32`) of the text |
//! | 72 | 2 | reason length (at most [`LOG_REASON_MAX`]) |
//! | 74 | n | reason, UTF-8: why the log is not complete (or not there) |
//! | 508 | 4 | CRC-32 of bytes 0..508 of the trailer |

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::frame::{LogOutcome, LogWrite};
use crate::kdump::{DUMP_DH_COMPRESSED_INCOMPLETE, KDUMP_SIGNATURE};
use crate::sink::{RecordSink, SinkError};

/// The sector size of [`BlockDevice`] addresses and transfers.
pub const SECTOR: usize = 512;
/// Bytes at the start of the disk that are held in memory until [`BlockSink::finish`]: the
/// `disk_dump_header` (one block of at least 4 KiB).
pub const HELD_BYTES: u64 = 4096;
/// Size of the write-back buffer: large sequential writes, small enough for the capture
/// kernel's heap.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// The first bytes of sector 0 while a capture is writing the disk.
pub const IN_PROGRESS_MAGIC: &[u8; 25] = b"LIFEBOAT-DUMP-IN-PROGRESS";
/// Version of the marker layout (little-endian `u32` at [`MARKER_VERSION_OFFSET`]).
pub const MARKER_VERSION: u32 = 1;
/// Where the marker's version is.
pub const MARKER_VERSION_OFFSET: usize = 32;
/// Offset of `status` in `struct disk_dump_header` (makedumpfile `diskdump_mod.h`).
const HEADER_STATUS_OFFSET: usize = 424;

/// The first bytes of the kernel log trailer (the disk's last sector).
pub const LOG_TRAILER_MAGIC: &[u8; 19] = b"LIFEBOAT-KERNEL-LOG";
/// Version of the trailer layout.
pub const LOG_TRAILER_VERSION: u32 = 1;
/// The most log text a disk keeps: 32 MiB (Linux's largest `CONFIG_LOG_BUF_SHIFT` ring); a
/// disk also gives the log at most a quarter of itself ([`BlockSink::log_limit`]).
pub const LOG_TEXT_MAX: u64 = 32 << 20;
/// The longest reason a trailer holds (longer ones are cut at a character boundary).
pub const LOG_REASON_MAX: usize = 400;
const TRAILER_REASON_OFFSET: usize = 74;
const TRAILER_CRC_OFFSET: usize = SECTOR - 4;

/// Whether the capture finished writing the log region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogState {
    /// The region was claimed; the capture stopped before the final trailer.
    Writing,
    /// The text and this trailer are on the disk.
    Written,
}

/// The kernel log trailer in the disk's last sector (layout in the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTrailer {
    pub state: LogState,
    /// Disk offset of the text.
    pub region_start: u64,
    /// Text bytes stored from `region_start`.
    pub text_len: u64,
    /// The whole log's length as measured before writing (`text_len` when nothing was cut).
    pub log_len: u64,
    /// Records the capture kernel sent.
    pub records: u64,
    /// Every record of the log is in the text.
    pub complete: bool,
    /// CRC-32 of the text.
    pub text_crc: u32,
    /// Why the log is not complete (or not there); empty when complete.
    pub reason: String,
}

/// Why a sector is not a usable [`LogTrailer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrailerError {
    /// No [`LOG_TRAILER_MAGIC`]: no log was written (an older lifeboat, another use of the disk,
    /// or a capture that stopped before the log).
    Absent,
    /// The magic is there but the rest is not a trailer this version reads.
    Damaged(&'static str),
}

impl core::fmt::Display for TrailerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TrailerError::Absent => write!(f, "no kernel log trailer"),
            TrailerError::Damaged(why) => write!(f, "the kernel log trailer is damaged: {}", why),
        }
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Continues a CRC-32 (IEEE) over `data`: `crc32_update(crc32_update(0, a), b)` is the CRC of
/// `a` followed by `b`. The trailer's text CRC, for readers that stream the text.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

impl LogTrailer {
    /// The trailer's sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut s = [0u8; SECTOR];
        s[..LOG_TRAILER_MAGIC.len()].copy_from_slice(LOG_TRAILER_MAGIC);
        s[24..28].copy_from_slice(&LOG_TRAILER_VERSION.to_le_bytes());
        let state: u32 = match self.state {
            LogState::Writing => 0,
            LogState::Written => 1,
        };
        s[28..32].copy_from_slice(&state.to_le_bytes());
        s[32..40].copy_from_slice(&self.region_start.to_le_bytes());
        s[40..48].copy_from_slice(&self.text_len.to_le_bytes());
        s[48..56].copy_from_slice(&self.log_len.to_le_bytes());
        s[56..64].copy_from_slice(&self.records.to_le_bytes());
        s[64..68].copy_from_slice(&u32::from(self.complete).to_le_bytes());
        s[68..72].copy_from_slice(&self.text_crc.to_le_bytes());
        let mut n = self.reason.len().min(LOG_REASON_MAX);
        while !self.reason.is_char_boundary(n) {
            n -= 1;
        }
        s[72..74].copy_from_slice(&(n as u16).to_le_bytes());
        s[TRAILER_REASON_OFFSET..TRAILER_REASON_OFFSET + n].copy_from_slice(&self.reason.as_bytes()[..n]);
        let crc = crc32fast::hash(&s[..TRAILER_CRC_OFFSET]);
        s[TRAILER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Reads the trailer in `sector` (the last sector of a disk of `disk_bytes`, whole
    /// sectors), checking its CRC and that the text lies before it.
    pub fn decode(sector: &[u8], disk_bytes: u64) -> Result<LogTrailer, TrailerError> {
        if sector.len() < SECTOR || !sector.starts_with(LOG_TRAILER_MAGIC) {
            return Err(TrailerError::Absent);
        }
        if crc32fast::hash(&sector[..TRAILER_CRC_OFFSET]) != le_u32(sector, TRAILER_CRC_OFFSET) {
            return Err(TrailerError::Damaged("its CRC does not match"));
        }
        if le_u32(sector, 24) != LOG_TRAILER_VERSION {
            return Err(TrailerError::Damaged("unknown version"));
        }
        let state = match le_u32(sector, 28) {
            0 => LogState::Writing,
            1 => LogState::Written,
            _ => return Err(TrailerError::Damaged("unknown state")),
        };
        let region_start = le_u64(sector, 32);
        let text_len = le_u64(sector, 40);
        let trailer_at = disk_bytes.saturating_sub(SECTOR as u64);
        if !region_start.is_multiple_of(SECTOR as u64)
            || region_start > trailer_at
            || text_len > trailer_at - region_start
        {
            return Err(TrailerError::Damaged("the text does not lie before the trailer"));
        }
        let n = usize::from(u16::from_le_bytes([sector[72], sector[73]]));
        if n > LOG_REASON_MAX {
            return Err(TrailerError::Damaged("reason too long"));
        }
        let reason = core::str::from_utf8(&sector[TRAILER_REASON_OFFSET..TRAILER_REASON_OFFSET + n])
            .map_err(|_| TrailerError::Damaged("reason is not UTF-8"))?;
        Ok(LogTrailer {
            state,
            region_start,
            text_len,
            log_len: le_u64(sector, 48),
            records: le_u64(sector, 56),
            complete: le_u32(sector, 64) & 1 != 0,
            text_crc: le_u32(sector, 68),
            reason: String::from(reason),
        })
    }
}

/// Sector 0 while a capture is under way: [`IN_PROGRESS_MAGIC`], then the version, then zeros.
pub fn in_progress_marker() -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[..IN_PROGRESS_MAGIC.len()].copy_from_slice(IN_PROGRESS_MAGIC);
    s[MARKER_VERSION_OFFSET..MARKER_VERSION_OFFSET + 4]
        .copy_from_slice(&MARKER_VERSION.to_le_bytes());
    s
}

/// Whether `start` (the first bytes of a disk) is the in-progress marker, of any version.
pub fn is_in_progress_marker(start: &[u8]) -> bool {
    start.starts_with(IN_PROGRESS_MAGIC)
}

/// A disk addressed in [`SECTOR`]-byte sectors.
///
/// `data.len()` and `buf.len()` are always non-zero multiples of [`SECTOR`], and
/// `lba * SECTOR + len` never exceeds [`BlockDevice::capacity_bytes`] rounded down to a sector.
pub trait BlockDevice {
    /// Size of the disk in bytes.
    fn capacity_bytes(&self) -> u64;
    fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), SinkError>;
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SinkError>;
    /// Returns when everything written so far is on stable storage.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// What a [`BlockSink`] did, for the console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Record bytes accepted (a byte written twice counts twice).
    pub bytes_accepted: u64,
    /// End of the highest byte written: the dump's size on the disk.
    pub extent: u64,
    /// Write commands sent to the device (marker and header included).
    pub writes: u64,
    /// Bytes those commands carried.
    pub bytes_to_device: u64,
    /// Sectors read back to complete partial-sector writes.
    pub rmw_reads: u64,
    pub flushes: u64,
}

/// Writes the dump to a [`BlockDevice`] from offset 0 (see the module documentation).
pub struct BlockSink<D: BlockDevice> {
    dev: D,
    /// The usable size: the capacity rounded down to whole sectors.
    capacity: u64,
    /// The first `min(HELD_BYTES, capacity)` bytes of the disk as they will be at the end.
    held: Vec<u8>,
    /// Whether a record wrote into `held`.
    held_dirty: bool,
    /// The write-back buffer; its length is fixed at creation.
    buf: Vec<u8>,
    /// Disk offset of `buf[0]`, sector-aligned.
    buf_start: u64,
    /// Bytes of `buf` that hold the disk's future contents (records or sectors read back).
    buf_len: usize,
    /// A record was cut at the end of the disk, or a data write failed: the header is marked
    /// incomplete when written.
    lost_data: bool,
    /// [`BlockSink::start_log`] claimed the end of the disk.
    log_claimed: bool,
    stats: BlkStats,
}

impl<D: BlockDevice> BlockSink<D> {
    /// Claims the disk: writes the in-progress marker over sector 0 and flushes.
    pub fn new(dev: D) -> Result<Self, SinkError> {
        Self::with_buffer_size(dev, WRITE_BUFFER_BYTES)
    }

    /// [`BlockSink::new`] with a write-back buffer of `bytes` (rounded up to whole sectors).
    pub fn with_buffer_size(mut dev: D, bytes: usize) -> Result<Self, SinkError> {
        let capacity = dev.capacity_bytes() & !(SECTOR as u64 - 1);
        if capacity == 0 {
            return Err(SinkError::Full { limit: 0 });
        }
        let mut stats = BlkStats::default();
        let mut held = vec![0u8; HELD_BYTES.min(capacity) as usize];
        dev.read_blocks(0, &mut held)?;
        held[..SECTOR].copy_from_slice(&in_progress_marker());
        dev.write_blocks(0, &held[..SECTOR])?;
        stats.writes += 1;
        stats.bytes_to_device += SECTOR as u64;
        dev.flush()?;
        stats.flushes += 1;
        let buf = vec![0u8; bytes.max(1).next_multiple_of(SECTOR)];
        Ok(Self {
            dev,
            capacity,
            held,
            held_dirty: false,
            buf,
            buf_start: 0,
            buf_len: 0,
            lost_data: false,
            log_claimed: false,
            stats,
        })
    }

    /// The most log text this disk keeps: [`LOG_TEXT_MAX`], and at most a quarter of the disk
    /// less the trailer sector (whole sectors). `None` when the disk is too small for a log
    /// region (under 4 sectors).
    pub fn log_limit(&self) -> Option<u64> {
        let quarter = (self.capacity / 4) & !(SECTOR as u64 - 1);
        (quarter >= SECTOR as u64).then(|| (quarter - SECTOR as u64).min(LOG_TEXT_MAX))
    }

    /// Claims the kernel log region at the end of the disk for a log of `log_len` bytes
    /// (measured beforehand; at most [`BlockSink::log_limit`] of it is kept): the dump's
    /// capacity becomes the region's start, then a [`LogState::Writing`] trailer goes to the
    /// last sector and is flushed. Write the text through the returned [`LogRegion`] (a
    /// [`LogWrite`]) and end with [`LogRegion::finish`], all before the first record.
    ///
    /// Errors: called after a record or a second time (nothing is written), the disk is too
    /// small for a region (`Full { limit: 0 }`, nothing is written), or the trailer could not be
    /// written (the region stays reserved: the dump never reaches into it).
    pub fn start_log(&mut self, log_len: u64) -> Result<LogRegion<'_, D>, SinkError> {
        if self.log_claimed || self.stats.bytes_accepted > 0 || self.buf_len > 0 {
            return Err(SinkError::Io("the kernel log region must be written before the dump"));
        }
        let Some(limit) = self.log_limit() else {
            return Err(SinkError::Full { limit: 0 });
        };
        let room = log_len.min(limit).next_multiple_of(SECTOR as u64);
        let trailer_lba = self.capacity / SECTOR as u64 - 1;
        let region_start = self.capacity - SECTOR as u64 - room;
        self.log_claimed = true;
        self.capacity = region_start;
        let held = self.held.len().min(region_start as usize);
        self.held.truncate(held);
        let writing = LogTrailer {
            state: LogState::Writing,
            region_start,
            text_len: 0,
            log_len,
            records: 0,
            complete: false,
            text_crc: 0,
            reason: String::from("the capture stopped while writing the log"),
        };
        self.dev.write_blocks(trailer_lba, &writing.encode())?;
        self.stats.writes += 1;
        self.stats.bytes_to_device += SECTOR as u64;
        self.flush_device()?;
        Ok(LogRegion {
            sink: self,
            trailer_lba,
            region_start,
            room,
            log_len,
            buffered: 0,
            written: 0,
            crc: 0,
            cut: false,
            error: None,
        })
    }

    /// Record bytes accepted so far (a byte written twice counts twice).
    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_accepted
    }

    /// The usable size of the disk for the dump (whole sectors): the disk, or the kernel log
    /// region's start once [`BlockSink::start_log`] claimed it.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Writes out the buffered data, flushes, then writes the held header block and flushes
    /// again. If any data was cut off or failed to write, a kdump header is marked
    /// `DUMP_DH_COMPRESSED_INCOMPLETE` first. An error here means the dump on the disk is not
    /// usable (the marker is still in place unless the header write itself failed).
    pub fn finish(mut self) -> Result<(D, BlkStats), SinkError> {
        let data = self.write_buffer().and_then(|()| self.flush_device());
        if data.is_err() {
            self.lost_data = true;
        }
        if self.held_dirty {
            if self.lost_data {
                mark_incomplete(&mut self.held);
            }
            self.dev.write_blocks(0, &self.held)?;
            self.stats.writes += 1;
            self.stats.bytes_to_device += self.held.len() as u64;
            self.flush_device()?;
        }
        data?;
        Ok((self.dev, self.stats))
    }

    fn flush_device(&mut self) -> Result<(), SinkError> {
        self.stats.flushes += 1;
        self.dev.flush()
    }

    /// Puts `data` (all inside the disk, at or after the held block) into the buffer, writing
    /// the buffer out whenever `data` does not continue its run.
    fn buffer(&mut self, mut offset: u64, mut data: &[u8]) -> Result<(), SinkError> {
        let cap = self.buf.len() as u64;
        while !data.is_empty() {
            let run_end = self.buf_start + self.buf_len as u64;
            let continues = self.buf_len > 0
                && offset >= self.buf_start
                && offset <= run_end
                && offset < self.buf_start + cap;
            if !continues {
                self.write_buffer()?;
                self.buf_start = offset & !(SECTOR as u64 - 1);
                if offset > self.buf_start {
                    // The run starts inside a sector: keep the sector's other bytes.
                    self.dev
                        .read_blocks(self.buf_start / SECTOR as u64, &mut self.buf[..SECTOR])?;
                    self.stats.rmw_reads += 1;
                    self.buf_len = SECTOR;
                }
            }
            let at = (offset - self.buf_start) as usize;
            let n = data.len().min(self.buf.len() - at);
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.buf_len = self.buf_len.max(at + n);
            offset += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes the buffered run as one command, completing a partial last sector from the
    /// disk. The buffer is empty afterwards, also when the write failed.
    fn write_buffer(&mut self) -> Result<(), SinkError> {
        if self.buf_len == 0 {
            return Ok(());
        }
        let len = self.buf_len;
        self.buf_len = 0;
        let end = len.next_multiple_of(SECTOR);
        let lba = self.buf_start / SECTOR as u64;
        let result = (|| {
            if end != len {
                let mut sector = [0u8; SECTOR];
                let last = lba + (end / SECTOR - 1) as u64;
                self.dev.read_blocks(last, &mut sector)?;
                self.stats.rmw_reads += 1;
                self.buf[len..end].copy_from_slice(&sector[len % SECTOR..]);
            }
            self.dev.write_blocks(lba, &self.buf[..end])?;
            self.stats.writes += 1;
            self.stats.bytes_to_device += end as u64;
            Ok(())
        })();
        if result.is_err() {
            self.lost_data = true;
        }
        result
    }
}

/// The kernel log region being written ([`BlockSink::start_log`]): a [`LogWrite`] that puts
/// the text in sequence from the region's start through the sink's write-back buffer (no
/// memory of its own), whole sectors, the last one padded with zeros.
///
/// A piece of text that does not fit whole in the region is refused whole
/// (`SinkError::Full`), as is everything after it, so a log that is too long ends at the last
/// whole record (the kernel writes one record per piece). After a write error every later
/// write fails at once. Dropped without [`LogRegion::finish`], the trailer keeps saying
/// [`LogState::Writing`].
pub struct LogRegion<'a, D: BlockDevice> {
    sink: &'a mut BlockSink<D>,
    trailer_lba: u64,
    region_start: u64,
    /// Text bytes the region holds.
    room: u64,
    /// The log's measured length.
    log_len: u64,
    /// Text bytes in `sink.buf` not yet written.
    buffered: usize,
    /// Text bytes written to the disk without error.
    written: u64,
    /// CRC-32 of the `written` bytes.
    crc: u32,
    /// A piece did not fit: the text was cut.
    cut: bool,
    error: Option<SinkError>,
}

impl<D: BlockDevice> LogRegion<'_, D> {
    /// Disk offset of the text.
    pub fn region_start(&self) -> u64 {
        self.region_start
    }

    /// Text bytes the region holds.
    pub fn room(&self) -> u64 {
        self.room
    }

    /// Writes the buffered text (a partial last sector padded with zeros).
    fn write_out(&mut self) -> Result<(), SinkError> {
        let n = self.buffered;
        if n == 0 {
            return Ok(());
        }
        self.buffered = 0;
        let end = n.next_multiple_of(SECTOR);
        self.sink.buf[n..end].fill(0);
        let lba = (self.region_start + self.written) / SECTOR as u64;
        match self.sink.dev.write_blocks(lba, &self.sink.buf[..end]) {
            Ok(()) => {
                self.sink.stats.writes += 1;
                self.sink.stats.bytes_to_device += end as u64;
                self.crc = crc32_update(self.crc, &self.sink.buf[..n]);
                self.written += n as u64;
                Ok(())
            }
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Ends the log: writes the rest of the text and flushes, then writes the final trailer
    /// ([`LogState::Written`], complete only when `outcome` is and nothing was cut or failed)
    /// and flushes again; returns that trailer. `outcome` is what the producer reports
    /// ([`LogOutcome`]); a cut or a write error here overrides its reason.
    ///
    /// An error means the final trailer may not be on the disk: the disk then still says
    /// [`LogState::Writing`] (or holds a torn sector that fails the trailer's CRC), never a
    /// whole log.
    pub fn finish(mut self, outcome: &LogOutcome) -> Result<LogTrailer, SinkError> {
        if self.error.is_none() {
            let _ = self.write_out();
        }
        self.sink.flush_device()?;
        let (complete, reason) = if let Some(e) = &self.error {
            (
                false,
                alloc::format!(
                    "a disk write failed while writing the log ({}): {} of its {} bytes are on the disk",
                    e,
                    self.written,
                    self.log_len
                ),
            )
        } else if self.cut {
            (
                false,
                alloc::format!(
                    "the log ({} bytes) is longer than the {} bytes this disk keeps for it: cut after {} records",
                    self.log_len,
                    self.room,
                    outcome.records
                ),
            )
        } else {
            (outcome.complete, outcome.reason.clone())
        };
        let trailer = LogTrailer {
            state: LogState::Written,
            region_start: self.region_start,
            text_len: self.written,
            log_len: self.log_len,
            records: outcome.records,
            complete,
            text_crc: self.crc,
            reason: if complete { String::new() } else { reason },
        };
        self.sink.dev.write_blocks(self.trailer_lba, &trailer.encode())?;
        self.sink.stats.writes += 1;
        self.sink.stats.bytes_to_device += SECTOR as u64;
        self.sink.flush_device()?;
        Ok(trailer)
    }
}

impl<D: BlockDevice> LogWrite for LogRegion<'_, D> {
    fn log_text(&mut self, mut text: &[u8]) -> Result<(), SinkError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let sent = self.written + self.buffered as u64;
        if self.cut || sent + text.len() as u64 > self.room {
            self.cut = true;
            return Err(SinkError::Full { limit: self.room });
        }
        while !text.is_empty() {
            let n = (self.sink.buf.len() - self.buffered).min(text.len());
            self.sink.buf[self.buffered..self.buffered + n].copy_from_slice(&text[..n]);
            self.buffered += n;
            text = &text[n..];
            if self.buffered == self.sink.buf.len() {
                self.write_out()?;
            }
        }
        Ok(())
    }
}

/// Sets `DUMP_DH_COMPRESSED_INCOMPLETE` in a `disk_dump_header`; anything else is left alone.
fn mark_incomplete(block: &mut [u8]) {
    if block.starts_with(&KDUMP_SIGNATURE) && block.len() >= HEADER_STATUS_OFFSET + 4 {
        let at = HEADER_STATUS_OFFSET;
        let status = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
        block[at..at + 4].copy_from_slice(&(status | DUMP_DH_COMPRESSED_INCOMPLETE).to_le_bytes());
    }
}

impl<D: BlockDevice> RecordSink for BlockSink<D> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset.saturating_add(data.len() as u64);
        let fit_end = end.min(self.capacity);
        if offset < fit_end {
            let held_end = self.held.len() as u64;
            if offset < held_end {
                let to = fit_end.min(held_end);
                self.held[offset as usize..to as usize]
                    .copy_from_slice(&data[..(to - offset) as usize]);
                self.held_dirty = true;
            }
            let from = offset.max(held_end);
            if from < fit_end {
                self.buffer(from, &data[(from - offset) as usize..(fit_end - offset) as usize])?;
            }
            self.stats.bytes_accepted += fit_end - offset;
            self.stats.extent = self.stats.extent.max(fit_end);
        }
        if end > self.capacity {
            self.lost_data = true;
            return Err(SinkError::Full { limit: self.capacity });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dump::{dump_params, write_kdump, NoProgress, Verdict};
    use crate::elfcore::testutil::*;
    use crate::elfcore::{ElfCoreHeader, Limits, EM_X86_64, NT_PRSTATUS};
    use crate::kdump::DUMP_DH_COMPRESSED_ZLIB;

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Op {
        Write { lba: u64, len: usize },
        Read { lba: u64, len: usize },
        Flush,
    }

    /// A disk in a Vec that logs every command and fails on request.
    struct MemDisk {
        data: Vec<u8>,
        /// Reported capacity (may be larger than `data` is never allowed: asserted).
        capacity: u64,
        ops: Vec<Op>,
        /// Fail the n-th write (0-based) and every later one.
        fail_write_from: Option<usize>,
        /// With `fail_write_from`: fail only that one write.
        fail_once: bool,
        fail_reads: bool,
        writes: usize,
    }

    impl MemDisk {
        fn new(data: Vec<u8>) -> Self {
            let capacity = data.len() as u64;
            Self {
                data,
                capacity,
                ops: Vec::new(),
                fail_write_from: None,
                fail_once: false,
                fail_reads: false,
                writes: 0,
            }
        }
        fn range(&self, lba: u64, len: usize) -> core::ops::Range<usize> {
            assert!(len > 0 && len.is_multiple_of(SECTOR), "transfer of {} bytes", len);
            let start = lba as usize * SECTOR;
            assert!(start + len <= self.capacity as usize, "access beyond the disk at lba {}", lba);
            start..start + len
        }
    }

    impl BlockDevice for MemDisk {
        fn capacity_bytes(&self) -> u64 {
            self.capacity
        }
        fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), SinkError> {
            let r = self.range(lba, data.len());
            self.ops.push(Op::Write { lba, len: data.len() });
            self.writes += 1;
            if self.fail_write_from.is_some_and(|n| self.writes > n && (!self.fail_once || self.writes == n + 1)) {
                return Err(SinkError::Io("test disk write failed"));
            }
            self.data[r].copy_from_slice(data);
            Ok(())
        }
        fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SinkError> {
            let r = self.range(lba, buf.len());
            self.ops.push(Op::Read { lba, len: buf.len() });
            if self.fail_reads {
                return Err(SinkError::Io("test disk read failed"));
            }
            buf.copy_from_slice(&self.data[r]);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            self.ops.push(Op::Flush);
            Ok(())
        }
    }

    /// A file of `limit` bytes that keeps what fits of each record, like the disk should.
    struct CutSink {
        file: Vec<u8>,
        limit: usize,
    }
    impl RecordSink for CutSink {
        fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            let end = (offset as usize + data.len()).min(self.limit);
            if (offset as usize) < end {
                self.file[offset as usize..end].copy_from_slice(&data[..end - offset as usize]);
            }
            if offset as usize + data.len() > self.limit {
                return Err(SinkError::Full { limit: self.limit as u64 });
            }
            Ok(())
        }
    }


    fn garbage(len: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng(seed | 1);
        (0..len).map(|_| r.next() as u8).collect()
    }

    const HDR: u64 = 0x7f00_0000;
    const NOTES: u64 = 0x7e00_0000;

    /// A crashed machine with `ram` bytes at 1 MiB: zero, patterned and random pages.
    fn machine(ram: u64) -> (FakeMem, ElfCoreHeader) {
        let mut mem = FakeMem::default();
        let mut r = Rng(0x1234_5678);
        let content: Vec<u8> = (0..ram)
            .map(|i| match (i / 4096) % 3 {
                0 => 0,
                1 => (i % 251) as u8,
                _ => r.next() as u8,
            })
            .collect();
        mem.add(0x10_0000, content);
        let mut notes = note("CORE", NT_PRSTATUS, &[0x55; 336]);
        notes.extend(note(
            "VMCOREINFO",
            0,
            b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\n",
        ));
        notes.extend([0u8; 12]);
        mem.add(NOTES, notes);
        mem.add(HDR, ehdr(EM_X86_64, &[note_seg(NOTES, 4096), load(0x10_0000, 0x10_0000, ram)]));
        let limits = Limits {
            max_phys: 1 << 46,
            own: vec![],
            ram: None,
            machine: EM_X86_64,
            hdr_size: None,
        };
        let core = ElfCoreHeader::parse(&mem, HDR, &limits).unwrap();
        (mem, core)
    }

    fn reference_dump(mem: &FakeMem, core: &ElfCoreHeader) -> Vec<u8> {
        let (params, _) = dump_params(core, mem, "x86_64");
        let mut v = Vec::new();
        let s = write_kdump(core, &params, mem, &mut v, &mut NoProgress);
        assert_eq!(s.verdict, Verdict::Complete);
        assert_eq!(s.file_bytes as usize, v.len());
        v
    }

    fn status(disk: &[u8]) -> u32 {
        u32::from_le_bytes(disk[424..428].try_into().unwrap())
    }

    #[test]
    fn whole_dump_is_byte_identical_to_the_file() {
        let (mem, core) = machine(0x30_0000);
        let want = reference_dump(&mem, &core);
        let before = garbage(8 << 20, 7);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let mut sink = BlockSink::new(MemDisk::new(before.clone())).unwrap();
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        assert_eq!(s.verdict, Verdict::Complete);
        // Until finish, the disk starts with the marker, not a header.
        assert!(is_in_progress_marker(&sink.dev.data));
        assert_eq!(sink.bytes_written(), want.len() as u64); // write_kdump writes every byte once
        let (disk, stats) = sink.finish().unwrap();
        assert!(disk.data[..want.len()] == want[..], "the disk differs from the file");
        assert!(disk.data[want.len()..] == before[want.len()..], "bytes after the dump changed");
        assert_eq!(stats.extent, want.len() as u64);
        // Large writes: on average far more than one record (16 KiB) per command.
        assert!(stats.bytes_to_device / stats.writes > 64 * 1024, "{:?}", stats);
        // Order: marker + flush first; then data; a flush; the header block; a flush.
        assert_eq!(disk.ops[0], Op::Read { lba: 0, len: 4096 });
        assert_eq!(disk.ops[1], Op::Write { lba: 0, len: SECTOR });
        assert_eq!(disk.ops[2], Op::Flush);
        let n = disk.ops.len();
        assert_eq!(disk.ops[n - 3..], [Op::Flush, Op::Write { lba: 0, len: 4096 }, Op::Flush]);
        for op in &disk.ops[3..n - 2] {
            if let Op::Write { lba, .. } = op {
                assert!(*lba >= 8, "a data write touched the header block: {:?}", op);
            }
        }
    }

    #[test]
    fn interrupted_capture_leaves_the_marker() {
        let (mem, core) = machine(0x10_0000);
        // The disk held an older complete dump.
        let mut before = reference_dump(&mem, &core);
        before.resize(4 << 20, 0xaa);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let mut sink = BlockSink::new(MemDisk::new(before.clone())).unwrap();
        write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        let disk = sink.dev.data.clone();
        drop(sink);
        assert_eq!(disk[..SECTOR], in_progress_marker()[..]);
        assert!(!disk.starts_with(b"KDUMP"));
        assert_eq!(u32::from_le_bytes(disk[32..36].try_into().unwrap()), MARKER_VERSION);
        assert!(disk[SECTOR..4096] == before[SECTOR..4096]);
        // finish() without any record leaves the marker too.
        let (d, _) = BlockSink::new(MemDisk::new(vec![0x11; 65536])).unwrap().finish().unwrap();
        assert!(is_in_progress_marker(&d.data));
        assert!(d.data[SECTOR..].iter().all(|&b| b == 0x11));
    }

    /// Random records, orders and overlaps against a byte model of the disk.
    #[test]
    fn random_records_match_a_model() {
        for seed in 1..40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let size = 512 * (1 + rng.below(3000)) as usize;
            let before = garbage(size, seed);
            let mut model = before.clone();
            model[..SECTOR].copy_from_slice(&in_progress_marker());
            let bufsize = [512, 1000, 4096, 65536, WRITE_BUFFER_BYTES][rng.below(5) as usize];
            let mut sink = BlockSink::with_buffer_size(MemDisk::new(before), bufsize).unwrap();
            let mut pos = 0u64;
            for i in 0..200 {
                let len = 1 + match rng.below(4) {
                    0 => rng.below(16),
                    1 => rng.below(600),
                    _ => rng.below(20_000),
                } as usize;
                let offset = match rng.below(5) {
                    0 => rng.below(8192),                 // the header block and around it
                    1 => rng.below(size as u64 + 10_000), // anywhere, sometimes beyond
                    _ => pos,                             // sequential
                };
                pos = offset + len as u64;
                let data = garbage(len, seed * 1000 + i);
                let r = sink.record(offset, &data);
                let end = (offset as usize + len).min(size);
                if (offset as usize) < end {
                    model[offset as usize..end].copy_from_slice(&data[..end - offset as usize]);
                }
                if offset as usize + len > size {
                    assert_eq!(r, Err(SinkError::Full { limit: size as u64 }));
                } else {
                    assert_eq!(r, Ok(()));
                }
                // The header block never reaches the disk before finish.
                assert!(is_in_progress_marker(&sink.dev.data));
            }
            let (disk, _) = sink.finish().unwrap();
            assert!(disk.data == model, "seed {} differs from the model", seed);
        }
    }

    #[test]
    fn small_disk_gives_an_incomplete_header_and_nothing_beyond() {
        let (mem, core) = machine(0x40_0000);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let cap = 200 * 1024;
        let before = garbage(cap, 3);
        let mut sink = BlockSink::new(MemDisk::new(before.clone())).unwrap();
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        // What a file cut at the same size holds: every record up to the end of the disk.
        let mut model = CutSink { file: before, limit: cap };
        let s2 = write_kdump(&core, &params, &mem, &mut model, &mut NoProgress);
        assert_eq!(s, s2);
        match &s.verdict {
            Verdict::Incomplete(w) => {
                assert!(w.starts_with("sink full after 204800 bytes"), "{}", w)
            }
            v => panic!("{:?}", v),
        }
        let (disk, stats) = sink.finish().unwrap();
        // MemDisk panics on any access beyond the disk; the header says incomplete.
        assert!(disk.data.starts_with(&KDUMP_SIGNATURE));
        assert_eq!(status(&disk.data), DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE);
        assert_eq!(stats.extent, cap as u64);
        // The disk holds exactly what the records put there, cut at its end.
        assert!(disk.data == model.file, "the disk differs from the cut file");

        // Direct: the fitting part is written, Full returned, header rewrites still taken.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 8192])).unwrap();
        sink.record(0, &[1; 4096]).unwrap();
        assert_eq!(sink.record(6000, &[2; 4000]), Err(SinkError::Full { limit: 8192 }));
        assert_eq!(sink.record(9000, &[3; 10]), Err(SinkError::Full { limit: 8192 }));
        sink.record(0, &[4; 100]).unwrap();
        let (d, _) = sink.finish().unwrap();
        assert_eq!(d.data[..100], [4; 100]);
        assert_eq!(d.data[100..4096], [1; 3996]);
        assert_eq!(d.data[4096..6000], [0; 1904]);
        assert_eq!(d.data[6000..], [2; 2192]);
        // A disk under one sector is refused; one smaller than the header block works.
        assert_eq!(
            BlockSink::new(MemDisk::new(vec![0; 511])).err(),
            Some(SinkError::Full { limit: 0 })
        );
        let mut d = MemDisk::new(vec![0; 1536]);
        d.capacity = 1536 + 100; // not a whole number of sectors: the tail is unused
        let mut sink = BlockSink::new(d).unwrap();
        assert_eq!(sink.record(1000, &[5; 600]), Err(SinkError::Full { limit: 1536 }));
        let (d, _) = sink.finish().unwrap();
        assert_eq!(d.data[1000..1536], [5; 536]);
    }

    #[test]
    fn device_errors_propagate() {
        let (mem, core) = machine(0x20_0000);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        // The third data write fails: the dump stops, the header is marked incomplete.
        let mut d = MemDisk::new(vec![0; 8 << 20]);
        d.fail_write_from = Some(3);
        let mut sink = BlockSink::new(d).unwrap();
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        match &s.verdict {
            Verdict::Incomplete(w) => assert!(w.contains("test disk write failed"), "{}", w),
            v => panic!("{:?}", v),
        }
        // The header write fails as well (every write after the third does).
        assert_eq!(sink.finish().err(), Some(SinkError::Io("test disk write failed")));

        // A failure writing the last buffered data (as in finish): the header still goes
        // out, marked incomplete.
        let want = reference_dump(&mem, &core);
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.record(0, &want[..4096]).unwrap();
        sink.record(4096, &[9; 1000]).unwrap();
        assert_eq!(status(&want), DUMP_DH_COMPRESSED_ZLIB);
        sink.dev.fail_write_from = Some(sink.dev.writes);
        assert_eq!(sink.write_buffer(), Err(SinkError::Io("test disk write failed")));
        sink.dev.fail_write_from = None;
        let (disk, _) = sink.finish().unwrap();
        assert_eq!(status(&disk.data), DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE);
        // A failed data write inside finish is reported after the header went out.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.record(0, &want[..4096]).unwrap();
        sink.record(4096, &[9; 1000]).unwrap();
        sink.dev.fail_write_from = Some(sink.dev.writes);
        assert_eq!(sink.finish().err(), Some(SinkError::Io("test disk write failed")));

        // Errors in new(): reading, writing the marker.
        let mut d = MemDisk::new(vec![0; 8192]);
        d.fail_reads = true;
        assert_eq!(BlockSink::new(d).err(), Some(SinkError::Io("test disk read failed")));
        let mut d = MemDisk::new(vec![0; 8192]);
        d.fail_write_from = Some(0);
        assert_eq!(BlockSink::new(d).err(), Some(SinkError::Io("test disk write failed")));
        // A read-modify-write read failing surfaces from record().
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.dev.fail_reads = true;
        assert_eq!(sink.record(5000, &[1; 10]), Err(SinkError::Io("test disk read failed")));
    }

    fn text_of(lines: usize, width: usize) -> Vec<Vec<u8>> {
        (0..lines)
            .map(|i| {
                let mut l = alloc::format!("[{:5}.{:06}] record {} ", i, i * 7, i).into_bytes();
                l.resize(width - 1, b'x');
                l.push(b'\n');
                l
            })
            .collect()
    }

    fn trailer_of(disk: &[u8]) -> Result<LogTrailer, TrailerError> {
        let n = disk.len();
        LogTrailer::decode(&disk[n - SECTOR..], n as u64)
    }

    fn done(records: u64) -> LogOutcome {
        LogOutcome { complete: true, records, reason: String::new() }
    }

    #[test]
    fn log_region_is_written_and_flushed_before_any_dump_byte() {
        let (mem, core) = machine(0x30_0000);
        let want = reference_dump(&mem, &core);
        let size = 8 << 20;
        let before = garbage(size, 11);
        let lines = text_of(700, 93); // 65100 bytes: several buffer writes of 16 KiB
        let log: Vec<u8> = lines.concat();
        let mut sink = BlockSink::with_buffer_size(MemDisk::new(before.clone()), 16 * 1024).unwrap();
        assert_eq!(sink.log_limit(), Some((2 << 20) - 512));
        let mut region = sink.start_log(log.len() as u64).unwrap();
        let start = region.region_start();
        assert_eq!(region.room(), (log.len() as u64).next_multiple_of(512));
        assert_eq!(start, size as u64 - 512 - region.room());
        for l in &lines {
            region.log_text(l).unwrap();
        }
        let t = region.finish(&done(700)).unwrap();
        assert_eq!(sink.capacity(), start);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        assert_eq!(s.verdict, Verdict::Complete);
        let (disk, _) = sink.finish().unwrap();

        // The trailer, from the last sector alone.
        assert_eq!(trailer_of(&disk.data), Ok(t.clone()));
        assert_eq!(t.state, LogState::Written);
        assert!(t.complete && t.reason.is_empty());
        assert_eq!((t.region_start, t.text_len, t.log_len, t.records), (start, log.len() as u64, log.len() as u64, 700));
        assert_eq!(t.text_crc, crc32fast::hash(&log));
        let s0 = start as usize;
        assert!(disk.data[s0..s0 + log.len()] == log[..]);
        assert!(disk.data[s0 + log.len()..size - 512].iter().all(|&b| b == 0), "padding");
        // The dump is untouched by the region, and the region by the dump.
        assert!(disk.data[..want.len()] == want[..]);
        assert!(disk.data[want.len()..s0] == before[want.len()..s0]);

        // Order: marker, flush; writing trailer, flush; text; flush; trailer, flush; then the dump.
        let last = (size / 512 - 1) as u64;
        let ops = &disk.ops;
        assert_eq!(ops[..5], [
            Op::Read { lba: 0, len: 4096 },
            Op::Write { lba: 0, len: 512 },
            Op::Flush,
            Op::Write { lba: last, len: 512 },
            Op::Flush
        ]);
        let text_writes: Vec<&Op> = ops[5..].iter().take_while(|o| matches!(o, Op::Write { .. })).collect();
        assert_eq!(text_writes.len(), 4); // 3 full 16 KiB buffers and the rest
        let mut lba = start / 512;
        for w in &text_writes {
            let Op::Write { lba: l, len } = w else { unreachable!() };
            assert_eq!(*l, lba);
            lba += (*len / 512) as u64;
        }
        let i = 5 + text_writes.len();
        assert_eq!(ops[i..i + 3], [Op::Flush, Op::Write { lba: last, len: 512 }, Op::Flush]);
        for op in &ops[i + 3..] {
            if let Op::Write { lba, len } = op {
                assert!(lba * 512 + *len as u64 <= start, "a dump write reached the log region: {:?}", op);
            }
        }
        assert!(ops[i + 3..].iter().any(|o| matches!(o, Op::Write { lba, .. } if *lba >= 8)));

        // A capture that stops while writing the log leaves the "writing" trailer.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        let mut region = sink.start_log(5000).unwrap();
        region.log_text(&[b'a'; 3000]).unwrap(); // and never finished
        let t = trailer_of(&sink.dev.data).unwrap();
        assert_eq!(t.state, LogState::Writing);
        assert!(!t.complete && t.reason.contains("stopped while writing"), "{:?}", t);
    }

    #[test]
    fn no_log_leaves_a_trailer_saying_why() {
        let mut sink = BlockSink::new(MemDisk::new(vec![0x33; 1 << 20])).unwrap();
        let region = sink.start_log(0).unwrap();
        assert_eq!(region.region_start(), (1 << 20) - 512);
        let why = LogOutcome { complete: false, records: 0, reason: String::from("no VMCOREINFO") };
        region.finish(&why).unwrap();
        assert_eq!(sink.capacity(), (1 << 20) - 512);
        let (d, _) = sink.finish().unwrap();
        let t = trailer_of(&d.data).unwrap();
        assert_eq!((t.state, t.text_len, t.complete, t.reason.as_str()), (LogState::Written, 0, false, "no VMCOREINFO"));
        assert_eq!(t.text_crc, 0);
        // A whole but empty log is complete.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.start_log(0).unwrap().finish(&done(0)).unwrap();
        assert!(trailer_of(&sink.dev.data).unwrap().complete);
    }

    #[test]
    fn the_dump_fits_in_what_the_log_leaves() {
        let (mem, core) = machine(0x40_0000);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let cap = 256 * 1024;
        let mut sink = BlockSink::new(MemDisk::new(garbage(cap, 5))).unwrap();
        let log = text_of(300, 100).concat(); // 30000 bytes: within a quarter of the disk
        let mut region = sink.start_log(log.len() as u64).unwrap();
        region.log_text(&log).unwrap();
        let start = region.region_start();
        assert_eq!(start, cap as u64 - 512 - 30208);
        region.finish(&done(300)).unwrap();
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        match &s.verdict {
            Verdict::Incomplete(w) => assert!(w.starts_with(&alloc::format!("sink full after {} bytes", start)), "{}", w),
            v => panic!("{:?}", v),
        }
        let (disk, stats) = sink.finish().unwrap();
        assert_eq!(stats.extent, start);
        assert_eq!(status(&disk.data), DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_INCOMPLETE);
        let t = trailer_of(&disk.data).unwrap();
        assert!(t.complete);
        assert!(disk.data[start as usize..start as usize + log.len()] == log[..]);
        // Records after the log was written cannot claim the region again.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.record(0, &[1; 10]).unwrap();
        assert!(matches!(sink.start_log(10), Err(SinkError::Io(_))));
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1 << 20])).unwrap();
        sink.start_log(10).unwrap().finish(&done(1)).unwrap();
        assert!(matches!(sink.start_log(10), Err(SinkError::Io(_))));
        // A disk under 4 sectors has no room for a log; the dump keeps the whole disk.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 1536])).unwrap();
        assert_eq!(sink.log_limit(), None);
        assert!(matches!(sink.start_log(10), Err(SinkError::Full { limit: 0 })));
        assert_eq!(sink.capacity(), 1536);
        // 4 sectors: a trailer and no text; the held header block shrinks to what is left.
        let mut sink = BlockSink::new(MemDisk::new(vec![0; 2048])).unwrap();
        assert_eq!(sink.log_limit(), Some(0));
        sink.start_log(10).unwrap().finish(&done(0)).unwrap();
        assert_eq!(sink.capacity(), 1536);
        assert_eq!(sink.record(0, &[7; 2000]), Err(SinkError::Full { limit: 1536 }));
        let (d, _) = sink.finish().unwrap();
        assert_eq!(d.data[..1536], [7; 1536]);
        assert!(trailer_of(&d.data).is_ok());
        // A huge disk keeps at most LOG_TEXT_MAX.
        let mut big = MemDisk::new(vec![0; 8192]);
        big.capacity = 1 << 40;
        let sink = BlockSink::new(big).unwrap();
        assert_eq!(sink.log_limit(), Some(LOG_TEXT_MAX));
    }

    #[test]
    fn a_log_longer_than_the_cap_is_cut_at_a_record() {
        let size = 64 * 1024; // limit: a quarter less the trailer = 15872 bytes
        let mut sink = BlockSink::with_buffer_size(MemDisk::new(garbage(size, 9)), 4096).unwrap();
        assert_eq!(sink.log_limit(), Some(15872));
        let lines = text_of(300, 100);
        let mut region = sink.start_log(30000).unwrap();
        assert_eq!(region.room(), 15872);
        let mut records = 0;
        for l in &lines {
            match region.log_text(l) {
                Ok(()) => records += 1,
                Err(e) => {
                    assert_eq!(e, SinkError::Full { limit: 15872 });
                    break;
                }
            }
        }
        assert_eq!(records, 158);
        // Everything after the cut is refused too, even what would fit.
        assert!(region.log_text(b"x").is_err());
        let klog = LogOutcome { complete: false, records, reason: String::from("the link failed while sending the log") };
        let t = region.finish(&klog).unwrap();
        assert!(!t.complete);
        assert_eq!((t.text_len, t.log_len, t.records), (15800, 30000, 158));
        assert!(t.reason.contains("longer than the 15872 bytes") && t.reason.contains("cut after 158 records"), "{}", t.reason);
        let (d, _) = sink.finish().unwrap();
        assert_eq!(trailer_of(&d.data), Ok(t));
        let start = size - 512 - 15872;
        assert!(d.data[start..start + 15800] == lines[..158].concat()[..]);
    }

    #[test]
    fn a_failure_while_writing_the_log() {
        let (mem, core) = machine(0x10_0000);
        let (params, _) = dump_params(&core, &mem, "x86_64");
        let lines = text_of(100, 100);
        // The second text write fails (writes: marker, writing trailer, text 4096, text...).
        let mut d = MemDisk::new(vec![0; 4 << 20]);
        d.fail_write_from = Some(3);
        d.fail_once = true;
        let mut sink = BlockSink::with_buffer_size(d, 4096).unwrap();
        let mut region = sink.start_log(10_000).unwrap();
        let mut sent = 0;
        for l in &lines {
            if region.log_text(l).is_err() {
                break;
            }
            sent += 1;
        }
        assert_eq!(sent, 81); // the piece that filled the second buffer failed
        assert!(region.log_text(b"more").is_err());
        let t = region.finish(&LogOutcome { complete: false, records: sent, reason: String::from("x") }).unwrap();
        assert!(!t.complete && t.reason.starts_with("a disk write failed while writing the log"), "{}", t.reason);
        assert_eq!(t.text_len, 4096);
        assert_eq!(t.text_crc, crc32fast::hash(&lines.concat()[..4096]));
        // The dump still goes to the rest of the disk.
        let s = write_kdump(&core, &params, &mem, &mut sink, &mut NoProgress);
        assert_eq!(s.verdict, Verdict::Complete);
        let (disk, _) = sink.finish().unwrap();
        assert_eq!(trailer_of(&disk.data), Ok(t));
        assert_eq!(status(&disk.data), DUMP_DH_COMPRESSED_ZLIB);

        // Writing the final trailer fails: the disk still says "writing", never a whole log.
        let mut d = MemDisk::new(vec![0; 1 << 20]);
        d.fail_write_from = Some(3);
        d.fail_once = true;
        let mut sink = BlockSink::new(d).unwrap();
        let mut region = sink.start_log(100).unwrap();
        region.log_text(&[b'z'; 100]).unwrap();
        assert_eq!(region.finish(&done(1)), Err(SinkError::Io("test disk write failed")));
        assert_eq!(trailer_of(&sink.dev.data).unwrap().state, LogState::Writing);
        // The "writing" trailer itself fails: the region stays reserved, nothing else written.
        let mut d = MemDisk::new(vec![0; 1 << 20]);
        d.fail_write_from = Some(1);
        d.fail_once = true;
        let mut sink = BlockSink::new(d).unwrap();
        assert!(sink.start_log(100).is_err());
        assert_eq!(sink.capacity(), (1 << 20) - 1024);
        assert_eq!(trailer_of(&sink.dev.data), Err(TrailerError::Absent));
    }

    #[test]
    fn trailer_round_trip_and_damage() {
        let t = LogTrailer {
            state: LogState::Written,
            region_start: 1 << 20,
            text_len: 1234,
            log_len: 99_999,
            records: 17,
            complete: false,
            text_crc: 0xdead_beef,
            reason: "é".repeat(300), // 600 bytes: cut at a character boundary
        };
        let s = t.encode();
        assert!(s.starts_with(LOG_TRAILER_MAGIC));
        let back = LogTrailer::decode(&s, (2 << 20) + 512).unwrap();
        assert_eq!(back.reason, "é".repeat(200));
        assert_eq!(back, LogTrailer { reason: "é".repeat(200), ..t.clone() });
        let mut bad = s;
        bad[40] ^= 1;
        assert_eq!(LogTrailer::decode(&bad, 4 << 20), Err(TrailerError::Damaged("its CRC does not match")));
        assert_eq!(LogTrailer::decode(&[0; 512], 4 << 20), Err(TrailerError::Absent));
        // The text must lie before the trailer.
        assert!(matches!(LogTrailer::decode(&s, (1 << 20) + 1024), Err(TrailerError::Damaged(_))));
        assert!(LogTrailer::decode(&s, (1 << 20) + 1234 + 512).is_ok());
        assert_eq!(crc32_update(crc32_update(0, b"1234"), b"56789"), 0xcbf4_3926);
    }
}
