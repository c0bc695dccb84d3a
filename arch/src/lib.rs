//! lifeboat's architecture layer: boot protocols, entry code, paging, exceptions, UART.
//!
//! Each architecture module exports the same names (see `x86_64/mod.rs`), so the capture
//! kernel's `main` is written once. Boot-protocol structures are plain data and build (and are
//! tested) on the host; everything that touches the CPU is `target_os = "none"` only.
#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

// The boot-protocol halves of every arch module build everywhere (the host tools write and
// check images); their hardware halves only on the matching bare-metal target.
pub mod aarch64;
pub mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64 as current;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64 as current;

use core::fmt::Write;

/// A fixed-size text buffer for messages built without the heap (which may be broken).
pub struct FixedBuf {
    buf: [u8; 256],
    len: usize,
}

impl FixedBuf {
    pub const fn new() -> Self {
        FixedBuf { buf: [0; 256], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Default for FixedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}


#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("lifeboat supports x86_64 and aarch64 only");
