//! Host side of lifeboat: the library behind the `lifeboat` command.
//!
//! - [`receive`]: turn a serial capture (frames among console text, see
//!   `docs/serial-framing.md`) back into the kdump-compressed dump, reporting every loss.
//! - [`serial`]: read a serial device raw, with an inactivity timeout.
//! - [`fetch`]: copy a dump out of a `blk` dump disk; [`blkcheck`]: find and check that disk
//!   when loading.
//! - [`serve`]: `lifeboat serve`, the dump server of the network protocol
//!   (`docs/net-protocol.md`); [`netconn`]: the protocol's connection traits over `std::net`
//!   (the probe `lifeboat load` uses, tests).
//! - Loading the capture kernel (`docs/loader.md`): [`commands`] (load, unload, status,
//!   estimate) over plain-data builders — [`bzimage`] (image checks), [`memmap`] and
//!   [`sysfs`] (parsing the running system's files), [`elfcorehdr`], [`bootparams`],
//!   [`stub`], [`layout`] — and the only parts that touch the system, [`host`] and [`kexec`].
//!   arm64 ([`arch`] says which machine): [`arm64image`] (Image checks; [`payload`] picks the
//!   machine's image kind), [`arm64plan`] (the `kexec_load` segments), [`dtb`] (the capture
//!   kernel's device tree) and [`trampoline`] (its `kexec_load` entry).
//!   [`config`] reads `/etc/default/lifeboat`, [`state`] records what was loaded.

pub mod arch;
pub mod arm64image;
pub mod arm64plan;
pub mod blkcheck;
pub mod bootparams;
pub mod bzimage;
pub mod commands;
pub mod config;
pub mod dtb;
pub mod elfcorehdr;
pub mod fetch;
pub mod host;
pub mod kexec;
pub mod layout;
pub mod memmap;
pub mod netconn;
pub mod payload;
pub mod receive;
pub mod serial;
pub mod serve;
pub mod state;
pub mod stub;
pub mod sysfs;
pub mod trampoline;
