//! The console: human-readable lines on the console UART (x86 COM1, arm64 the device
//! tree's stdout-path), shared with the serial sink's frames.
//!
//! Lines start with `lifeboat: ` so an operator (and the host tools) can tell them from the
//! crashed kernel's last words and from binary frames.

use core::fmt::{self, Write};
use lifeboat_arch::current::serial::SerialPort;
use spin::Mutex;

/// Polls without progress before a UART counts as stuck (roughly a second or more).
pub const STUCK_SPINS: u64 = 20_000_000;

pub static CONSOLE: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Make `port` the console (x86: COM1; arm64: the device tree's stdout-path UART).
pub fn install(port: SerialPort) {
    *CONSOLE.lock() = Some(port);
}

struct LineWriter<'a>(&'a mut SerialPort);

impl Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Console output must never stop the capture: errors are dropped.
        for piece in s.split_inclusive('\n') {
            if let Some(body) = piece.strip_suffix('\n') {
                let _ = self.0.write_all(body.as_bytes(), STUCK_SPINS);
                let _ = self.0.write_all(b"\r\n", STUCK_SPINS);
            } else {
                let _ = self.0.write_all(piece.as_bytes(), STUCK_SPINS);
            }
        }
        Ok(())
    }
}

pub fn print_line(args: fmt::Arguments) {
    if let Some(port) = CONSOLE.lock().as_mut() {
        let mut w = LineWriter(port);
        let _ = w.write_str("lifeboat: ");
        let _ = w.write_fmt(args);
        let _ = w.write_str("\n");
    }
}

/// For the fatal path: the lock may be held by whatever faulted.
pub fn print_line_forced(args: fmt::Arguments) {
    if CONSOLE.is_locked() {
        // SAFETY: single CPU; whoever holds the lock was interrupted by the fault and will
        // never run again.
        unsafe { CONSOLE.force_unlock() };
    }
    print_line(args);
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::console::print_line(format_args!($($arg)*)) };
}
