//! Host side of lifeboat: the library behind the `lifeboat` command.
//!
//! - [`receive`]: turn a serial capture (frames among console text, see
//!   `docs/serial-framing.md`) back into the kdump-compressed dump, reporting every loss.
//! - [`serial`]: read a serial device raw, with an inactivity timeout.

pub mod receive;
pub mod serial;
