//! The console UART named by the device tree's `stdout-path`: an ARM PL011 (or SBSA generic
//! UART, the same transmit registers) or a 16550-compatible UART on MMIO.
//!
//! Transmit only, with a bounded wait: a stuck line is an error, never a hang. The UART is
//! not reprogrammed (baud rate, format): the firmware or the crashed kernel set it for the
//! console, and its input clock is often unknown. The 16550 path is written here rather than
//! with the `uart_16550` crate because that crate's send path depends on its `init`, which
//! reprograms the divisor for a clock we do not know, and it has no 32-bit-wide register
//! access (`reg-io-width = <4>`, common on boards).

/// Not an I/O port on arm64: the value `cmdline` gives `ttyS0`, meaning "the console".
pub const COM1: u16 = 0x3f8;

/// Register layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartRegs {
    /// PL011 / SBSA: DR at 0x00, FR at 0x18 (TXFF bit 5).
    Pl011,
    /// 16550: THR at register 0, LSR at register 5 (THRE bit 5), register `i` at
    /// `base + (i << shift)`, accessed `width` bytes wide (1 or 4).
    Ns16550 { shift: u8, width: u8 },
}

pub struct SerialPort {
    regs: UartRegs,
    /// Virtual address of the registers (device window).
    base: u64,
    /// Physical address, for messages.
    pub phys: u64,
    /// Kept for the shared interface: the console is port `COM1`.
    pub port: u16,
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
            SerialError::NotPresent(_) => {
                write!(f, "arm64 has no I/O-port UARTs: the serial sink uses the console UART (stdout-path)")
            }
            SerialError::BadBaud(b) => write!(f, "baud rate {} cannot be set", b),
            SerialError::Stuck(_) => write!(f, "the console UART stopped sending (line stuck for 1 s)"),
        }
    }
}

impl SerialPort {
    /// I/O-port UARTs do not exist on arm64; kept so the kernel's code is shared.
    pub fn new(port: u16, _baud: u32) -> Result<Self, SerialError> {
        Err(SerialError::NotPresent(port))
    }

    /// The UART whose registers are mapped at virtual address `base` (physical `phys`).
    ///
    /// # Safety
    /// `base` must map the UART's registers as device memory for as long as the port lives,
    /// and nothing else may drive the UART.
    pub unsafe fn from_mmio(regs: UartRegs, base: u64, phys: u64) -> Self {
        if let UartRegs::Pl011 = regs {
            // UARTCR: keep the settings, make sure the UART and its transmitter are on.
            // SAFETY: per this function's contract.
            unsafe {
                let cr = (base + 0x30) as *mut u32;
                let v = cr.read_volatile();
                if v & 0x101 != 0x101 {
                    cr.write_volatile(v | 0x101);
                }
            }
        }
        SerialPort { regs, base, phys, port: COM1 }
    }

    fn tx_ready(&self) -> bool {
        // SAFETY: reads a status register of our UART (contract of `from_mmio`).
        unsafe {
            match self.regs {
                UartRegs::Pl011 => ((self.base + 0x18) as *const u32).read_volatile() & (1 << 5) == 0,
                UartRegs::Ns16550 { shift, width } => {
                    let lsr = self.base + (5u64 << shift);
                    let v = if width == 4 {
                        (lsr as *const u32).read_volatile()
                    } else {
                        u32::from((lsr as *const u8).read_volatile())
                    };
                    v & (1 << 5) != 0
                }
            }
        }
    }

    fn put(&mut self, b: u8) {
        // SAFETY: writes the transmit register of our UART (contract of `from_mmio`).
        unsafe {
            match self.regs {
                UartRegs::Pl011 => (self.base as *mut u32).write_volatile(u32::from(b)),
                UartRegs::Ns16550 { width: 4, .. } => (self.base as *mut u32).write_volatile(u32::from(b)),
                UartRegs::Ns16550 { .. } => (self.base as *mut u8).write_volatile(b),
            }
        }
    }

    /// Send all of `bytes`; gives up when nothing moves for `stuck_spins` polls.
    pub fn write_all(&mut self, bytes: &[u8], stuck_spins: u64) -> Result<(), SerialError> {
        for &b in bytes {
            let mut idle = 0u64;
            while !self.tx_ready() {
                idle += 1;
                if idle > stuck_spins {
                    return Err(SerialError::Stuck(self.port));
                }
                core::hint::spin_loop();
            }
            self.put(b);
        }
        Ok(())
    }
}
