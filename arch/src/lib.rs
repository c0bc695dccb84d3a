//! lifeboat's architecture layer: boot protocols, entry code, paging, exceptions, UART.
//!
//! Each architecture module exports the same names (see `x86_64/mod.rs`), so the capture
//! kernel's `main` is written once. Boot-protocol structures are plain data and build (and are
//! tested) on the host; everything that touches the CPU is `target_os = "none"` only.
#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

// The boot-protocol halves of every arch module build everywhere (the host tools write and
// check images); their hardware halves only on the matching bare-metal target.
pub mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64 as current;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("lifeboat supports x86_64 and aarch64 only");
