//! makedumpfile's flattened format: a dump file as a stream of `(offset, bytes)` records.
//!
//! Defined by makedumpfile (`makedumpfile.h` `struct makedumpfile_header` and
//! `struct makedumpfile_data_header`; written by `write_start_flat_header()`, `write_buffer()`,
//! `write_end_flat_header()`, read back by `rearrange_dumpdata()` for `makedumpfile -R`).
//! Facts used here are summarised in the project reference, §2:
//!
//! | item | layout (all integers big-endian) |
//! |---|---|
//! | start header | 4096 bytes: signature `"makedumpfile"` + 4 NULs (16 bytes), `i64 type = 1`, `i64 version = 1`, rest zero |
//! | data record | `i64 offset`, `i64 size`, then `size` bytes placed at `offset` of the dump file |
//! | end marker | a record header with `offset = -1`, `size = -1` |
//!
//! [`FlatEncoder`] turns [`RecordSink`] records into such a stream over a [`ChunkWrite`], one
//! record per chunk, so that a framed transport (see [`crate::frame`]) can start every frame at a
//! record boundary. [`FlatDecoder`] parses a stream incrementally and can resynchronise after
//! lost bytes when the caller knows that the next bytes start a record.

use alloc::vec::Vec;
use core::fmt;

use crate::sink::{ChunkWrite, RecordSink, SinkError, MAX_CHUNK};

/// Size of the start header (`MAX_SIZE_MDF_HEADER`).
pub const START_HEADER_SIZE: usize = 4096;
/// The signature field: `"makedumpfile"` padded with NULs to 16 bytes (`SIG_LEN_MDF`).
pub const SIGNATURE: [u8; 16] = *b"makedumpfile\0\0\0\0";
/// `TYPE_FLAT_HEADER`.
pub const TYPE_FLAT_HEADER: i64 = 1;
/// `VERSION_FLAT_HEADER`.
pub const VERSION_FLAT_HEADER: i64 = 1;
/// Size of a record header (`struct makedumpfile_data_header`).
pub const RECORD_HEADER_SIZE: usize = 16;
/// The most data bytes [`FlatEncoder`] puts in one record, so header + data fit one chunk.
pub const MAX_RECORD_DATA: usize = MAX_CHUNK - RECORD_HEADER_SIZE;
/// Record sizes above this are treated as corruption by [`FlatDecoder`].
pub const MAX_SANE_RECORD: i64 = 1 << 30;

const _: () = assert!(START_HEADER_SIZE <= MAX_CHUNK);

fn record_header(offset: i64, size: i64) -> [u8; RECORD_HEADER_SIZE] {
    let mut h = [0u8; RECORD_HEADER_SIZE];
    h[..8].copy_from_slice(&offset.to_be_bytes());
    h[8..].copy_from_slice(&size.to_be_bytes());
    h
}

/// Writes a flattened stream to a [`ChunkWrite`], one chunk per record.
///
/// Every chunk is either the start header, one record (header + data, at most
/// [`MAX_CHUNK`] bytes), or the end marker. Records longer than [`MAX_RECORD_DATA`] are split
/// into several records. Zero-length records are never emitted.
pub struct FlatEncoder<'a> {
    out: &'a mut dyn ChunkWrite,
    /// Reused buffer for assembling one record (no allocation per record).
    buf: Vec<u8>,
    /// Stream bytes emitted so far.
    stream_bytes: u64,
}

impl<'a> FlatEncoder<'a> {
    /// Starts a stream: emits the 4096-byte start header as one chunk.
    pub fn new(out: &'a mut dyn ChunkWrite) -> Result<Self, SinkError> {
        let mut buf = Vec::with_capacity(MAX_CHUNK);
        buf.resize(START_HEADER_SIZE, 0);
        buf[..16].copy_from_slice(&SIGNATURE);
        buf[16..24].copy_from_slice(&TYPE_FLAT_HEADER.to_be_bytes());
        buf[24..32].copy_from_slice(&VERSION_FLAT_HEADER.to_be_bytes());
        out.write_chunk(&buf)?;
        Ok(Self { out, buf, stream_bytes: START_HEADER_SIZE as u64 })
    }

    /// Stream bytes emitted so far (start header and records).
    pub fn stream_bytes(&self) -> u64 {
        self.stream_bytes
    }

    /// Emits the end marker `(-1, -1)`; returns the total stream length in bytes.
    pub fn finish(self) -> Result<u64, SinkError> {
        self.out.write_chunk(&record_header(-1, -1))?;
        Ok(self.stream_bytes + RECORD_HEADER_SIZE as u64)
    }
}

impl RecordSink for FlatEncoder<'_> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > i64::MAX as u64) {
            return Err(SinkError::Io("record offset beyond the flattened format's range"));
        }
        let mut offset = offset;
        for piece in data.chunks(MAX_RECORD_DATA) {
            self.buf.clear();
            self.buf.extend_from_slice(&record_header(offset as i64, piece.len() as i64));
            self.buf.extend_from_slice(piece);
            self.out.write_chunk(&self.buf)?;
            self.stream_bytes += self.buf.len() as u64;
            offset += piece.len() as u64;
        }
        Ok(())
    }
}

/// What [`FlatDecoder::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FlatItem<'a> {
    /// Bytes to place at `offset` of the dump file. A long record may come out as several
    /// consecutive pieces (offsets adjusted), as input arrives.
    Data { offset: u64, data: &'a [u8] },
    /// The end marker `(-1, -1)`.
    End,
}

/// A malformed flattened stream. `at` is the stream position (bytes fed since the start,
/// or since the decoder was created) of the offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlatError {
    /// The first 16 bytes are not `"makedumpfile"` + NULs.
    BadSignature,
    /// The start header's type is not `TYPE_FLAT_HEADER` (1).
    BadType(i64),
    /// A record header that is neither a sane record nor the end marker.
    BadRecord { at: u64, offset: i64, size: i64 },
    /// Bytes after the end marker.
    AfterEnd { at: u64 },
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlatError::BadSignature => {
                write!(f, "not a makedumpfile flattened stream (bad signature)")
            }
            FlatError::BadType(t) => {
                write!(f, "flattened stream header has type {} (expected 1)", t)
            }
            FlatError::BadRecord { at, offset, size } => write!(
                f,
                "malformed flattened record header at stream byte {:#x}: offset {}, size {}",
                at, offset, size
            ),
            FlatError::AfterEnd { at } => {
                write!(f, "data after the end marker at stream byte {:#x}", at)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Inside the start header; `seen` bytes of it consumed.
    StartHeader { seen: usize },
    /// Expecting a record header; `self.hdr_len` bytes of it buffered.
    RecordHeader,
    /// Inside a record's data.
    RecordData { offset: u64, remaining: u64 },
    /// After the end marker.
    Ended,
    /// After an error: input is discarded until [`FlatDecoder::skip_to_record_boundary`].
    Lost,
}

/// Incremental parser of a flattened stream. Needs no allocation; data comes out as slices of
/// the input.
///
/// ```
/// # use lifeboat_capture::flat::{FlatDecoder, FlatItem};
/// # fn apply(_: u64, _: &[u8]) {}
/// # let bytes: &[u8] = &[];
/// let mut dec = FlatDecoder::new();
/// let mut input = bytes;
/// while let Some(item) = dec.next(&mut input).unwrap() {
///     match item {
///         FlatItem::Data { offset, data } => apply(offset, data),
///         FlatItem::End => break,
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct FlatDecoder {
    state: State,
    /// Buffered start of the start header (signature, type, version) or of a record header.
    hdr: [u8; 32],
    hdr_len: usize,
    /// Stream bytes consumed.
    pos: u64,
    /// Bytes dropped while [`State::Lost`] or by resynchronisation.
    discarded: u64,
    version: Option<i64>,
}

impl Default for FlatDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FlatDecoder {
    /// A decoder expecting the start header first.
    pub fn new() -> Self {
        Self {
            state: State::StartHeader { seen: 0 },
            hdr: [0; 32],
            hdr_len: 0,
            pos: 0,
            discarded: 0,
            version: None,
        }
    }

    /// Stream bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes thrown away: partial records dropped by [`Self::skip_to_record_boundary`] and
    /// input fed after an error.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The start header's version field, once read.
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// True after the end marker.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// True when the next byte would start a record header (nothing partial buffered).
    pub fn at_record_boundary(&self) -> bool {
        self.state == State::RecordHeader && self.hdr_len == 0
    }

    /// Tells the decoder that the next bytes begin a new record (used after lost input: in a
    /// framed stream every frame starts at a record boundary). Any partial header or record
    /// is dropped; a decoder stopped by an error resumes. After the end marker this does
    /// nothing. If the start header was never completed, it is skipped (not validated).
    pub fn skip_to_record_boundary(&mut self) {
        match self.state {
            State::Ended => {}
            State::RecordData { remaining, .. } => {
                self.discarded += remaining;
                self.state = State::RecordHeader;
            }
            _ => self.state = State::RecordHeader,
        }
        self.hdr_len = 0;
    }

    /// Consumes bytes from the front of `input` and returns the next item, or `None` when
    /// `input` is used up (feed more and call again). On an error the decoder discards input
    /// until [`Self::skip_to_record_boundary`] is called.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<FlatItem<'a>>, FlatError> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match self.state {
                State::Lost => {
                    self.discarded += input.len() as u64;
                    self.pos += input.len() as u64;
                    *input = &[];
                    return Ok(None);
                }
                State::Ended => {
                    let at = self.pos;
                    self.state = State::Lost;
                    return Err(FlatError::AfterEnd { at });
                }
                State::StartHeader { seen } => {
                    let take = (START_HEADER_SIZE - seen).min(input.len());
                    // Keep the first 32 bytes (signature, type, version) for validation.
                    if seen < self.hdr.len() {
                        let n = (self.hdr.len() - seen).min(take);
                        self.hdr[seen..seen + n].copy_from_slice(&input[..n]);
                    }
                    self.consume(input, take);
                    let seen = seen + take;
                    self.state = State::StartHeader { seen };
                    if seen >= 16 && seen - take < 16 && self.hdr[..16] != SIGNATURE {
                        self.state = State::Lost;
                        return Err(FlatError::BadSignature);
                    }
                    if seen >= 24 && seen - take < 24 {
                        let ty = be_i64(&self.hdr[16..24]);
                        if ty != TYPE_FLAT_HEADER {
                            self.state = State::Lost;
                            return Err(FlatError::BadType(ty));
                        }
                    }
                    if seen >= 32 && seen - take < 32 {
                        self.version = Some(be_i64(&self.hdr[24..32]));
                    }
                    if seen == START_HEADER_SIZE {
                        self.state = State::RecordHeader;
                        self.hdr_len = 0;
                    }
                }
                State::RecordHeader => {
                    let take = (RECORD_HEADER_SIZE - self.hdr_len).min(input.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[..take]);
                    self.hdr_len += take;
                    self.consume(input, take);
                    if self.hdr_len < RECORD_HEADER_SIZE {
                        continue;
                    }
                    self.hdr_len = 0;
                    let offset = be_i64(&self.hdr[..8]);
                    let size = be_i64(&self.hdr[8..16]);
                    if offset == -1 && size == -1 {
                        self.state = State::Ended;
                        return Ok(Some(FlatItem::End));
                    }
                    let sane = offset >= 0
                        && size > 0
                        && size <= MAX_SANE_RECORD
                        && offset.checked_add(size).is_some();
                    if !sane {
                        self.state = State::Lost;
                        let at = self.pos - RECORD_HEADER_SIZE as u64;
                        return Err(FlatError::BadRecord { at, offset, size });
                    }
                    self.state =
                        State::RecordData { offset: offset as u64, remaining: size as u64 };
                }
                State::RecordData { offset, remaining } => {
                    let take = (remaining.min(input.len() as u64)) as usize;
                    let data = &input[..take];
                    self.consume(input, take);
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::RecordHeader
                    } else {
                        State::RecordData { offset: offset + take as u64, remaining }
                    };
                    return Ok(Some(FlatItem::Data { offset, data }));
                }
            }
        }
    }

    fn consume(&mut self, input: &mut &[u8], n: usize) {
        *input = &input[n..];
        self.pos += n as u64;
    }
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Collects chunks, checking the one-record-per-chunk rule.
    #[derive(Default)]
    struct Chunks(Vec<Vec<u8>>);
    impl ChunkWrite for Chunks {
        fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SinkError> {
            assert!(!chunk.is_empty() && chunk.len() <= MAX_CHUNK);
            self.0.push(chunk.to_vec());
            Ok(())
        }
    }

    fn encode(records: &[(u64, Vec<u8>)]) -> (Vec<Vec<u8>>, u64) {
        let mut chunks = Chunks::default();
        let mut enc = FlatEncoder::new(&mut chunks).unwrap();
        for (off, data) in records {
            enc.record(*off, data).unwrap();
        }
        let total = enc.finish().unwrap();
        (chunks.0, total)
    }

    /// Applies a stream to a file image, feeding it in pieces of `step` bytes.
    fn decode(stream: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut dec = FlatDecoder::new();
        let mut file = Vec::new();
        let mut ended = false;
        for piece in stream.chunks(step) {
            let mut input = piece;
            while let Some(item) = dec.next(&mut input).unwrap() {
                match item {
                    FlatItem::Data { offset, data } => {
                        let end = offset as usize + data.len();
                        if file.len() < end {
                            file.resize(end, 0);
                        }
                        file[offset as usize..end].copy_from_slice(data);
                    }
                    FlatItem::End => ended = true,
                }
            }
        }
        (file, ended)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn start_header_layout() {
        let (chunks, _) = encode(&[]);
        let h = &chunks[0];
        assert_eq!(h.len(), 4096);
        assert_eq!(&h[..12], b"makedumpfile");
        assert_eq!(&h[12..16], &[0; 4]);
        assert_eq!(&h[16..24], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&h[24..32], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(h[32..].iter().all(|&b| b == 0));
        assert_eq!(chunks[1], vec![0xff; 16]);
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn records_are_split_and_round_trip() {
        let big = pattern(3 * MAX_CHUNK + 123, 7);
        let small = pattern(100, 9);
        let (chunks, total) = encode(&[(8192, big.clone()), (0, small.clone()), (0, vec![0xAA])]);
        // header, 4 pieces of big, small, one byte, end
        assert_eq!(chunks.len(), 1 + 4 + 1 + 1 + 1);
        assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK));
        // first piece header: offset 8192, size MAX_RECORD_DATA
        assert_eq!(be_i64(&chunks[1][..8]), 8192);
        assert_eq!(be_i64(&chunks[1][8..16]), MAX_RECORD_DATA as i64);
        let stream: Vec<u8> = chunks.concat();
        assert_eq!(stream.len() as u64, total);
        for step in [1, 7, 16, 4096, stream.len()] {
            let (file, ended) = decode(&stream, step);
            assert!(ended);
            assert_eq!(file.len(), 8192 + big.len());
            assert_eq!(file[0], 0xAA);
            assert_eq!(&file[1..100], &small[1..]);
            assert_eq!(&file[8192..], &big[..]);
        }
    }

    #[test]
    fn empty_record_emits_nothing_and_overflow_is_refused() {
        let mut chunks = Chunks::default();
        let mut enc = FlatEncoder::new(&mut chunks).unwrap();
        enc.record(5, &[]).unwrap();
        assert_eq!(enc.stream_bytes(), 4096);
        assert!(enc.record(i64::MAX as u64, &[1]).is_err());
        assert!(enc.record(u64::MAX, &[1]).is_err());
        assert_eq!(enc.finish().unwrap(), 4096 + 16);
        assert_eq!(chunks.0.len(), 2);
    }

    #[test]
    fn bad_signature_and_type() {
        let (chunks, _) = encode(&[]);
        let mut s = chunks.concat();
        s[0] = b'M';
        let mut dec = FlatDecoder::new();
        assert_eq!(dec.next(&mut &s[..]), Err(FlatError::BadSignature));
        let mut s = chunks.concat();
        s[23] = 2;
        let mut dec = FlatDecoder::new();
        let mut input = &s[..];
        assert_eq!(dec.next(&mut input), Err(FlatError::BadType(2)));
        // After an error everything is discarded.
        assert_eq!(dec.next(&mut input), Ok(None));
        assert!(input.is_empty());
    }

    #[test]
    fn malformed_record_headers() {
        for (off, size) in
            [(-2i64, 10i64), (0, 0), (0, -1), (-1, 5), (0, MAX_SANE_RECORD + 1), (i64::MAX, 2)]
        {
            let (chunks, _) = encode(&[]);
            let mut s = chunks[0].clone();
            s.extend_from_slice(&record_header(off, size));
            let mut dec = FlatDecoder::new();
            let mut input = &s[..];
            let err = dec.next(&mut input).unwrap_err();
            assert_eq!(err, FlatError::BadRecord { at: 4096, offset: off, size });
        }
    }

    #[test]
    fn data_after_end_is_an_error() {
        let (chunks, _) = encode(&[(0, vec![1, 2, 3])]);
        let mut s = chunks.concat();
        s.push(0);
        let mut dec = FlatDecoder::new();
        let mut input = &s[..];
        assert!(matches!(dec.next(&mut input), Ok(Some(FlatItem::Data { offset: 0, .. }))));
        assert_eq!(dec.next(&mut input), Ok(Some(FlatItem::End)));
        assert!(dec.is_ended());
        assert_eq!(dec.next(&mut input), Err(FlatError::AfterEnd { at: s.len() as u64 - 1 }));
    }

    #[test]
    fn resync_after_lost_chunks() {
        let recs: Vec<(u64, Vec<u8>)> =
            (0..6).map(|i| (i * 1000, pattern(1000, i as u8))).collect();
        let (chunks, _) = encode(&recs);
        // Lose chunk 3 (record 2), and the second half of chunk 4 (record 3).
        let mut dec = FlatDecoder::new();
        let mut got = Vec::new();
        let feed = |dec: &mut FlatDecoder, bytes: &[u8], got: &mut Vec<(u64, usize)>| {
            let mut input = bytes;
            while let Some(item) = dec.next(&mut input).unwrap() {
                if let FlatItem::Data { offset, data } = item {
                    got.push((offset, data.len()));
                }
            }
        };
        feed(&mut dec, &chunks[0], &mut got);
        feed(&mut dec, &chunks[1], &mut got);
        feed(&mut dec, &chunks[2], &mut got);
        feed(&mut dec, &chunks[4][..500], &mut got);
        assert!(!dec.at_record_boundary());
        dec.skip_to_record_boundary();
        assert!(dec.at_record_boundary());
        assert_eq!(dec.discarded(), 1016 - 500);
        for c in &chunks[5..] {
            feed(&mut dec, c, &mut got);
        }
        assert!(dec.is_ended());
        assert_eq!(got, vec![(0, 1000), (1000, 1000), (3000, 484), (4000, 1000), (5000, 1000)]);
    }

    #[test]
    fn resync_when_start_header_lost() {
        let (chunks, _) = encode(&[(0, vec![1; 10]), (10, vec![2; 10])]);
        let mut dec = FlatDecoder::new();
        dec.skip_to_record_boundary();
        let mut input = &chunks[2][..];
        assert_eq!(
            dec.next(&mut input),
            Ok(Some(FlatItem::Data { offset: 10, data: &[2; 10][..] }))
        );
        assert_eq!(dec.version(), None);
    }
}
