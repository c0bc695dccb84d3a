//! Reading the capture kernel's serial output: a tty set raw, a pipe, or a captured file.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{
    cfmakeraw, cfsetspeed, tcgetattr, tcsetattr, BaudRate, ControlFlags, SetArg,
    SpecialCharacterIndices, Termios,
};

/// What kind of input the path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A regular file (a finished capture): read to its end.
    File,
    /// A terminal device: set raw, read until the END frame or the inactivity timeout.
    Tty,
    /// A pipe, socket or other stream: read until the END frame, end of input or timeout.
    Stream,
}

/// A serial capture opened for reading. On a tty, the original settings are restored on drop.
///
/// `read` returns an [`io::ErrorKind::TimedOut`] error when nothing arrived for the inactivity
/// timeout (devices and streams only).
pub struct SerialInput {
    file: File,
    kind: InputKind,
    timeout: Option<Duration>,
    saved: Option<Termios>,
}

/// The `BaudRate` for a numeric rate.
pub fn baud_rate(rate: u32) -> Option<BaudRate> {
    Some(match rate {
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        1000000 => BaudRate::B1000000,
        1500000 => BaudRate::B1500000,
        2000000 => BaudRate::B2000000,
        3000000 => BaudRate::B3000000,
        4000000 => BaudRate::B4000000,
        _ => return None,
    })
}

impl SerialInput {
    /// Opens `path` (`-` is standard input). A tty is set raw (8N1, no flow control, receiver
    /// on, modem lines ignored) and, if `baud` is given, to that speed.
    pub fn open(
        path: &Path,
        timeout: Option<Duration>,
        baud: Option<BaudRate>,
    ) -> io::Result<Self> {
        let file = if path == Path::new("-") {
            File::from(io::stdin().as_fd().try_clone_to_owned()?)
        } else {
            // O_NONBLOCK: opening a serial port must not wait for carrier detect; reads poll.
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
                .open(path)?
        };
        let ft = file.metadata()?.file_type();
        let is_tty = file.is_terminal();
        let kind = if ft.is_file() {
            InputKind::File
        } else if is_tty {
            InputKind::Tty
        } else {
            InputKind::Stream
        };
        if baud.is_some() && kind != InputKind::Tty {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--baud needs a terminal device",
            ));
        }
        let saved = if kind == InputKind::Tty {
            let saved = tcgetattr(&file)?;
            let mut t = saved.clone();
            cfmakeraw(&mut t);
            t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
            t.control_flags &= !ControlFlags::CRTSCTS;
            t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
            t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
            if let Some(b) = baud {
                cfsetspeed(&mut t, b)?;
            }
            tcsetattr(&file, SetArg::TCSANOW, &t)?;
            Some(saved)
        } else {
            None
        };
        Ok(Self { file, kind, timeout, saved })
    }

    pub fn kind(&self) -> InputKind {
        self.kind
    }
}

impl Read for SerialInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.kind == InputKind::File {
            return self.file.read(buf);
        }
        loop {
            let timeout = match self.timeout {
                None => PollTimeout::NONE,
                Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
            };
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no input within the inactivity timeout",
                    ))
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}

impl Drop for SerialInput {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // Best effort: the device may be gone.
            let _ = tcsetattr(&self.file, SetArg::TCSANOW, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn pty_is_set_raw_and_times_out_when_quiet() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
        let mut input =
            SerialInput::open(&path, Some(Duration::from_millis(200)), baud_rate(115200)).unwrap();
        assert_eq!(input.kind(), InputKind::Tty);
        let mut master = File::from(pty.master);
        // Raw mode: a NUL, a CR and a ^C arrive as they are.
        master.write_all(b"\0LBF\r\x03x").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 7 {
            let n = input.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"\0LBF\r\x03x");
        let err = input.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn regular_file_is_read_to_its_end() {
        let p = std::env::temp_dir().join(format!("lifeboat-serial-test-{}", std::process::id()));
        std::fs::write(&p, b"abc").unwrap();
        let mut input = SerialInput::open(&p, Some(Duration::from_millis(1)), None).unwrap();
        assert_eq!(input.kind(), InputKind::File);
        let mut s = Vec::new();
        input.read_to_end(&mut s).unwrap();
        assert_eq!(s, b"abc");
        assert!(SerialInput::open(&p, None, baud_rate(9600)).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
