//! Host side of lifeboat: the library behind the `lifeboat` command.
//!
//! - [`receive`]: turn a serial capture (frames among console text, see
//!   `docs/serial-framing.md`) back into the kdump-compressed dump, reporting every loss.
//! - [`serial`]: read a serial device raw, with an inactivity timeout.
//! - Loading the capture kernel (`docs/loader.md`): [`commands`] (load, unload, status,
//!   estimate) over plain-data builders — [`bzimage`] (image checks), [`memmap`] and
//!   [`sysfs`] (parsing the running system's files), [`elfcorehdr`], [`bootparams`],
//!   [`stub`], [`layout`] — and the only parts that touch the system, [`host`] and [`kexec`].
//!   [`config`] reads `/etc/default/lifeboat`, [`state`] records what was loaded.

pub mod bootparams;
pub mod bzimage;
pub mod commands;
pub mod config;
pub mod elfcorehdr;
pub mod host;
pub mod kexec;
pub mod layout;
pub mod memmap;
pub mod receive;
pub mod serial;
pub mod state;
pub mod stub;
pub mod sysfs;
