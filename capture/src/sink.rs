//! Where the dump goes.
//!
//! The kdump writer produces *records*: bytes placed at an offset of the dump file
//! (the same model as makedumpfile's flattened format). A sink may write them to a disk
//! at that offset, or serialise them into a stream (flattened format, then frames).

use core::fmt;

/// Why a sink could not take more data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkError {
    /// The device is full: nothing past `limit` bytes of the dump file can be stored.
    Full { limit: u64 },
    /// The device or link failed; the text says how.
    Io(&'static str),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Full { limit } => write!(f, "sink full after {} bytes", limit),
            SinkError::Io(what) => write!(f, "sink I/O error: {}", what),
        }
    }
}

/// Receives the dump file as `(offset, bytes)` records, in any order.
///
/// Records never have zero length. A record's bytes are final: a later record may overwrite
/// an earlier one (used to rewrite the header of an incomplete dump).
pub trait RecordSink {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;
}

/// A dump file in memory: each record is written at its offset, the vector growing (with
/// zeros in any gap) as needed. Used by tests and host tools that want the file as bytes.
impl RecordSink for alloc::vec::Vec<u8> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let start = usize::try_from(offset).map_err(|_| SinkError::Io("record offset beyond memory"))?;
        let end = start.checked_add(data.len()).ok_or(SinkError::Io("record offset beyond memory"))?;
        if self.len() < end {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// A byte stream (UART, TCP): takes whole chunks so that framing can keep record boundaries.
pub trait ChunkWrite {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SinkError>;
}

/// The largest chunk a [`ChunkWrite`] is ever given. Stream encoders split records so that a
/// record header plus its data never exceeds this, so a framed stream can resynchronise on
/// the next frame after a lost one.
pub const MAX_CHUNK: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_takes_records_in_any_order() {
        let mut v: alloc::vec::Vec<u8> = alloc::vec::Vec::new();
        v.record(4, b"ef").unwrap();
        v.record(0, b"ab").unwrap();
        assert_eq!(v, b"ab\0\0ef");
        v.record(1, b"XY").unwrap();
        assert_eq!(v, b"aXY\0ef");
        assert!(v.record(u64::MAX, b"z").is_err());
    }
}
