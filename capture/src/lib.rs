//! Portable logic of the lifeboat capture kernel.
//!
//! Everything here builds for the bare-metal capture kernel (`no_std` + `alloc`) and for the
//! host, where `cargo test` exercises it. Nothing in this crate touches hardware: physical
//! memory is reached through [`phys::PhysRead`], output leaves through [`sink::RecordSink`].
//!
//! Design principles:
//! - every address or size named by the crashed kernel is an untrusted claim, checked once
//!   in one constructor ([`elfcore::ElfCoreHeader::parse`]) before anything reads through it;
//! - simple, clear algorithms over clever ones; memory use does not grow with the dump.
#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod acpi;
pub mod blk;
pub mod cmdline;
pub mod compress;
pub mod deflate;
pub mod devtree;
pub mod dump;
pub mod elfcore;
pub mod filter;
pub mod flat;
pub mod frame;
pub mod kdump;
pub mod kdump_reader;
pub mod netproto;
pub mod phys;
pub mod printk;
pub mod sink;
pub mod vmcoreinfo;
pub mod vtop;
