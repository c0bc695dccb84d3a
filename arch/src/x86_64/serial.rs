//! 16550 UARTs on x86 I/O ports (uart_16550), with a bounded wait: a stuck line is an error,
//! never a hang.

use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// Standard COM port bases.
pub const COM1: u16 = 0x3f8;

pub struct SerialPort {
    uart: Uart16550<PioBackend>,
    pub port: u16,
    present: bool,
}

/// Why the UART cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialError {
    NotPresent(u16),
    BadBaud(u32),
    /// The transmitter made no progress for about a second.
    Stuck(u16),
}

impl core::fmt::Display for SerialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SerialError::NotPresent(p) => write!(f, "no 16550 UART answers at I/O port {:#x}", p),
            SerialError::BadBaud(b) => write!(f, "baud rate {} cannot be set", b),
            SerialError::Stuck(p) => write!(f, "UART at {:#x} stopped sending (line stuck for 1 s)", p),
        }
    }
}

impl SerialPort {
    /// Program the UART at `port` for `baud` 8N1, FIFO on, no interrupts.
    pub fn new(port: u16, baud: u32) -> Result<Self, SerialError> {
        // SAFETY: `port` names a COM port's 8 registers; lifeboat is the only software
        // running, so it has exclusive access.
        let uart = unsafe { Uart16550::new_port(port) }.map_err(|_| SerialError::NotPresent(port))?;
        let mut s = SerialPort { uart, port, present: false };
        let config = Config {
            baud_rate: uart_16550::BaudRate::Custom(baud),
            ..Config::DEFAULT
        };
        match s.uart.init(config) {
            Ok(()) => {
                s.present = true;
                Ok(s)
            }
            Err(uart_16550::InitError::InvalidBaudRate(_)) => Err(SerialError::BadBaud(baud)),
            Err(_) => Err(SerialError::NotPresent(port)),
        }
    }

    /// Send all of `bytes`; gives up when nothing moves for `stuck_spins` polls.
    pub fn write_all(&mut self, mut bytes: &[u8], stuck_spins: u64) -> Result<(), SerialError> {
        if !self.present {
            return Err(SerialError::NotPresent(self.port));
        }
        let mut idle = 0u64;
        while !bytes.is_empty() {
            let n = self.uart.send_bytes(bytes);
            if n == 0 {
                idle += 1;
                if idle > stuck_spins {
                    return Err(SerialError::Stuck(self.port));
                }
                core::hint::spin_loop();
            } else {
                idle = 0;
                bytes = &bytes[n..];
            }
        }
        Ok(())
    }
}
