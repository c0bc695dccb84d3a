//! The crashed kernel's whole log as the first part of every streamed dump
//! (docs/serial-framing.md, "The kernel log"): decoded record by record from its printk ring
//! buffer in old memory and written as `makedumpfile --dump-dmesg` prints it, through a
//! [`LogWrite`] (a `LogFramer`: fixed 16 KiB buffer), so memory does not grow with the log.

use alloc::format;
use alloc::string::String;
use lifeboat_capture::frame::{LogOutcome, LogWrite};
use lifeboat_capture::printk;
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
    let mut failed = false;
    let r = printk::for_each_record(info, vm, &mut |rec| {
        if failed {
            return;
        }
        let mut line: String = rec.dmesg_line_with(CALLER_ID);
        line.push('\n');
        match out.log_text(line.as_bytes()) {
            Ok(()) => {
                records += 1;
                bytes += line.len() as u64;
            }
            Err(_) => failed = true,
        }
    });
    let outcome = match (r, failed) {
        (_, true) => LogOutcome { complete: false, records, reason: String::from("the link failed while sending the log") },
        (Ok(stats), false) => {
            if stats.garbage > 0 || stats.truncated > 0 {
                // makedumpfile skips the same records: the log is still what it would print.
                log!("kernel log: {} corrupt record(s) skipped, {} cut short", stats.garbage, stats.truncated);
            }
            LogOutcome { complete: true, records, reason: String::new() }
        }
        (Err(e), false) => LogOutcome { complete: false, records, reason: format!("{}", e) },
    };
    if outcome.complete {
        log!("kernel log: sent whole, {} records, {} bytes", records, bytes);
    } else {
        log!("kernel log: sent {} records ({} bytes), incomplete: {}", records, bytes, outcome.reason);
    }
    outcome
}
