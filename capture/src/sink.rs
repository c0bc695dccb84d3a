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

/// A byte stream (UART, TCP): takes whole chunks so that framing can keep record boundaries.
pub trait ChunkWrite {
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), SinkError>;
}

/// The largest chunk a [`ChunkWrite`] is ever given. Stream encoders split records so that a
/// record header plus its data never exceeds this, so a framed stream can resynchronise on
/// the next frame after a lost one.
pub const MAX_CHUNK: usize = 16 * 1024;
