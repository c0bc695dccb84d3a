//! Access to the crashed kernel's physical memory.

use core::fmt;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    /// `None` if `start + len` overflows.
    pub fn from_start_len(start: u64, len: u64) -> Option<Self> {
        Some(Self { start, end: start.checked_add(len)? })
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }
    pub fn contains_range(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}-{:#x})", self.start, self.end)
    }
}

/// Why a physical read was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysError {
    /// The range is not readable memory (outside RAM, beyond the CPU's physical address
    /// width, overlapping the capture kernel, or the address arithmetic overflows).
    Unreadable { addr: u64, len: u64 },
}

impl fmt::Display for PhysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhysError::Unreadable { addr, len } => {
                write!(f, "physical range {:#x}+{:#x} is not readable memory", addr, len)
            }
        }
    }
}

/// The one way portable code reads the crashed kernel's memory.
///
/// The capture kernel implements it over its identity map (mapping on demand, read-only, and
/// refusing its own memory); tests implement it over buffers. Implementations must never
/// fault or hang on any `(addr, len)`: they return [`PhysError`] instead.
pub trait PhysRead {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysError>;
}
