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
//! The write order on the device is therefore: marker sector, flush, data runs (each one
//! write command), flush, header block, flush.

use alloc::vec;
use alloc::vec::Vec;

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
            stats,
        })
    }

    /// Record bytes accepted so far (a byte written twice counts twice).
    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_accepted
    }

    /// The usable size of the disk (whole sectors).
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
            if self.fail_write_from.is_some_and(|n| self.writes > n) {
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

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
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
}
