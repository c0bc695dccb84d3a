//! The crashed kernel's whole log as the first part of every streamed dump
//! (docs/serial-framing.md, "The kernel log"): decoded record by record from its printk ring
//! buffer in old memory and written as `makedumpfile --dump-dmesg` prints it, through a
//! [`LogWrite`] (a `LogFramer`: fixed 16 KiB buffer), so memory does not grow with the log.
//! The disk sink puts it in a region at the end of the disk ([`to_disk`]), sized by a dry pass
//! over the records ([`measure`]).

use alloc::format;
use alloc::string::String;
use lifeboat_capture::blk::{BlockDevice, BlockSink};
use lifeboat_capture::frame::{LogOutcome, LogWrite};
use lifeboat_capture::printk;
use lifeboat_capture::sink::SinkError;
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use lifeboat_capture::vtop::KernelVm;

use crate::log;

/// makedumpfile up to 1.7.4 (Debian 12 ships 1.7.2, which kdump-tools runs) prints no caller
/// id column; `lifeboat serve` derives its fallback `dmesg.txt` the same way.
const CALLER_ID: bool = false;

/// Writes the whole log of the crashed kernel to `out`, oldest record first, one
/// `makedumpfile --dump-dmesg` line per record. `kernel` is `None` when the log cannot be
/// read (`why_not` says why); the outcome then says so, with no text. Stops formatting at the
/// first write error (the link is gone; the caller sees it).
pub fn send(kernel: Option<(&VmcoreInfo, &KernelVm)>, why_not: &str, out: &mut dyn LogWrite) -> LogOutcome {
    let Some((info, vm)) = kernel else {
        let reason = String::from(why_not);
        log!("kernel log: not sent ({})", reason);
        return LogOutcome { complete: false, records: 0, reason };
    };
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut failed = None;
    let r = printk::for_each_record(info, vm, &mut |rec| {
        if failed.is_some() {
            return;
        }
        let mut line: String = rec.dmesg_line_with(CALLER_ID);
        line.push('\n');
        match out.log_text(line.as_bytes()) {
            Ok(()) => {
                records += 1;
                bytes += line.len() as u64;
            }
            Err(e) => failed = Some(e),
        }
    });
    let outcome = match (r, failed) {
        (_, Some(SinkError::Full { limit })) => LogOutcome {
            complete: false,
            records,
            reason: format!("the log is longer than the {} bytes kept for it: cut after {} records", limit, records),
        },
        (_, Some(_)) => LogOutcome { complete: false, records, reason: String::from("the link failed while sending the log") },
        (Ok(stats), None) => {
            if stats.garbage > 0 || stats.truncated > 0 {
                // makedumpfile skips the same records: the log is still what it would print.
                log!("kernel log: {} corrupt record(s) skipped, {} cut short", stats.garbage, stats.truncated);
            }
            LogOutcome { complete: true, records, reason: String::new() }
        }
        (Err(e), None) => LogOutcome { complete: false, records, reason: format!("{}", e) },
    };
    if outcome.complete {
        log!("kernel log: sent whole, {} records, {} bytes", records, bytes);
    } else {
        log!("kernel log: sent {} records ({} bytes), incomplete: {}", records, bytes, outcome.reason);
    }
    outcome
}

/// The length of the text [`send`] writes (a dry pass over the same records); 0 without a log.
pub fn measure(kernel: Option<(&VmcoreInfo, &KernelVm)>) -> u64 {
    let Some((info, vm)) = kernel else { return 0 };
    let mut bytes = 0u64;
    // A log that cannot be read to its end measures what can be read: `send` stops there too.
    let _ = printk::for_each_record(info, vm, &mut |rec| {
        bytes += rec.dmesg_line_with(CALLER_ID).len() as u64 + 1;
    });
    bytes
}

/// The disk sink's log: measures the log, claims the region at the end of the disk
/// ([`BlockSink::start_log`]), writes the text and the trailer, all flushed before the caller
/// writes any dump byte. Says on the console what is on the disk.
pub fn to_disk<D: BlockDevice>(sink: &mut BlockSink<D>, kernel: Option<(&VmcoreInfo, &KernelVm)>, why_not: &str) {
    let len = measure(kernel);
    let mut region = match sink.start_log(len) {
        Ok(r) => r,
        Err(SinkError::Full { .. }) => {
            log!("kernel log: not written: the disk is too small for a log region");
            return;
        }
        Err(e) => {
            log!("kernel log: not written: the log region could not be claimed: {}", e);
            return;
        }
    };
    let start = region.region_start();
    let outcome = send(kernel, why_not, &mut region);
    match region.finish(&outcome) {
        Ok(t) if t.complete => log!(
            "kernel log: on the disk at byte {} ({} bytes, {} records; the trailer in its last sector says where)",
            start,
            t.text_len,
            t.records
        ),
        Ok(t) if t.text_len == 0 => log!("kernel log: not on the disk ({}); the trailer in its last sector says so", t.reason),
        Ok(t) => log!(
            "kernel log: on the disk at byte {}, INCOMPLETE ({} of {} bytes, {} records): {}",
            start,
            t.text_len,
            t.log_len,
            t.records,
            t.reason
        ),
        Err(e) => log!("kernel log: the disk's log region could not be finished ({}): it is marked unfinished", e),
    }
}
