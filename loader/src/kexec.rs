//! The two kexec system calls, and what their errors mean for a person.
//!
//! Only [`load_file`], [`load_segments`], [`unload`] and [`probe`] touch the kernel; the rest
//! is plain data. ABI (Linux `include/uapi/linux/kexec.h`, `kernel/kexec.c`,
//! `kernel/kexec_file.c`):
//! - `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)`, `cmdline_len`
//!   counting the NUL; flags `KEXEC_FILE_UNLOAD` 1, `KEXEC_FILE_ON_CRASH` 2,
//!   `KEXEC_FILE_NO_INITRAMFS` 4. The kernel builds the elfcorehdr and boot_params itself and
//!   prepends `elfcorehdr=0x… ` to the command line.
//! - `kexec_load(entry, nr_segments, segments, flags)` with `struct kexec_segment { const void
//!   *buf; size_t bufsz; const void *mem; size_t memsz; }`; flags `KEXEC_ON_CRASH` 1 |
//!   `KEXEC_ARCH_X86_64` (62 << 16) or `KEXEC_ARCH_AARCH64` (183 << 16), the machine's own
//!   ([`crate::arch::Arch::kexec_arch_flag`]). `nr_segments` 0 unloads.
//! - System call numbers: x86_64 `kexec_load` 246, `kexec_file_load` 320 (the `libc` crate's);
//!   arm64 104 and 294 (`include/uapi/asm-generic/unistd.h`; musl's `libc` bindings lack
//!   `SYS_kexec_file_load` on aarch64).
//! - Both check `CAP_SYS_BOOT` (EPERM) first, then (kexec_load) lockdown (EPERM), then the
//!   flags (EINVAL): [`probe`] uses an undefined flag bit to learn "missing / not permitted /
//!   present" without loading anything.

use std::fmt;
use std::os::fd::AsRawFd;

use crate::arch::Arch;

#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_LOAD: libc::c_long = libc::SYS_kexec_load;
#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_LOAD: libc::c_long = 104;
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;

/// Which system call loads the capture kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    KexecFileLoad,
    KexecLoad,
}

impl Syscall {
    pub fn name(self) -> &'static str {
        match self {
            Syscall::KexecFileLoad => "kexec_file_load",
            Syscall::KexecLoad => "kexec_load",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "kexec_file_load" => Some(Syscall::KexecFileLoad),
            "kexec_load" => Some(Syscall::KexecLoad),
            _ => None,
        }
    }
    pub fn other(self) -> Self {
        match self {
            Syscall::KexecFileLoad => Syscall::KexecLoad,
            Syscall::KexecLoad => Syscall::KexecFileLoad,
        }
    }
    /// The kernel option that provides it.
    pub fn config(self) -> &'static str {
        match self {
            Syscall::KexecFileLoad => "CONFIG_KEXEC_FILE",
            Syscall::KexecLoad => "CONFIG_KEXEC",
        }
    }
}

pub const KEXEC_FILE_UNLOAD: u32 = 1;
pub const KEXEC_FILE_ON_CRASH: u32 = 2;
pub const KEXEC_FILE_NO_INITRAMFS: u32 = 4;
pub const KEXEC_ON_CRASH: u64 = 1;
pub use crate::arch::{KEXEC_ARCH_AARCH64, KEXEC_ARCH_X86_64};

/// `struct kexec_segment`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KexecSegment {
    pub buf: *const u8,
    pub bufsz: usize,
    pub mem: u64,
    pub memsz: usize,
}
const _: () = assert!(std::mem::size_of::<KexecSegment>() == 32);

/// A segment to load: its bytes and where they go.
#[derive(Clone, Debug)]
pub struct Segment {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub mem: u64,
    pub memsz: u64,
}

/// A failed kexec system call, explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KexecError {
    /// ENOSYS: the kernel lacks the system call.
    Missing(Syscall),
    /// EPERM: not root (no CAP_SYS_BOOT), `kernel.kexec_load_disabled`, or lockdown.
    NotPermitted(Syscall),
    /// EKEYREJECTED, EBADMSG, ENOKEY: kexec_file signature enforcement refused the image.
    SignatureRejected(Syscall, i32),
    /// ENOEXEC: the kernel did not recognize the image.
    NotExecutable(Syscall),
    /// EADDRNOTAVAIL, ENOMEM: the segments do not fit the reservation.
    NoRoom(Syscall, i32),
    /// EBUSY: another kexec operation is running.
    Busy(Syscall),
    /// Anything else.
    Other(Syscall, i32),
}

impl KexecError {
    pub fn from_errno(sc: Syscall, errno: i32) -> Self {
        match errno {
            libc::ENOSYS => KexecError::Missing(sc),
            libc::EPERM => KexecError::NotPermitted(sc),
            libc::EKEYREJECTED | libc::EBADMSG | libc::ENOKEY => {
                KexecError::SignatureRejected(sc, errno)
            }
            libc::ENOEXEC => KexecError::NotExecutable(sc),
            libc::EADDRNOTAVAIL | libc::ENOMEM => KexecError::NoRoom(sc, errno),
            libc::EBUSY => KexecError::Busy(sc),
            e => KexecError::Other(sc, e),
        }
    }
}

fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KexecError::Missing(sc) => write!(
                f,
                "this kernel has no {} system call ({} is not set): use --syscall {}",
                sc.name(),
                sc.config(),
                sc.other().name()
            ),
            KexecError::NotPermitted(sc) => write!(
                f,
                "{} was refused (EPERM): run lifeboat as root (CAP_SYS_BOOT); also check that \
                 sysctl kernel.kexec_load_disabled is 0 and that kernel lockdown is off",
                sc.name()
            ),
            KexecError::SignatureRejected(sc, e) => write!(
                f,
                "{} refused the image: {} (the kernel enforces kexec signatures: \
                 CONFIG_KEXEC_SIG_FORCE, lockdown or Secure Boot); lifeboat's {} is not signed",
                sc.name(),
                strerror(e),
                Arch::HOST.payload_file()
            ),
            KexecError::NotExecutable(sc) => match Arch::HOST {
                Arch::X86_64 => write!(
                    f,
                    "{}: the kernel does not accept this image (ENOEXEC): is it built for this architecture \
                     (XLF_5LEVEL is required when the kernel uses 5-level paging)?",
                    sc.name()
                ),
                Arch::Aarch64 => write!(
                    f,
                    "{}: the kernel does not accept this image (ENOEXEC): is it an arm64 Image for a page \
                     size this CPU supports?",
                    sc.name()
                ),
            },
            KexecError::NoRoom(sc, e) => write!(
                f,
                "{}: the capture kernel does not fit the crash reservation ({}): run `lifeboat estimate` \
                 and raise crashkernel=",
                sc.name(),
                strerror(e)
            ),
            KexecError::Busy(sc) => write!(f, "{}: another kexec operation is in progress; try again", sc.name()),
            KexecError::Other(sc, e) => write!(f, "{} failed: {}", sc.name(), strerror(e)),
        }
    }
}

/// An absent file descriptor, passed as a full register.
const NO_FD: libc::c_long = -1;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// What [`probe`] learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The call exists and the caller may use it.
    Available,
    /// It does not, for this reason.
    Unavailable(i32),
}

/// Asks whether `sc` exists and is permitted, with a flag bit no kernel defines, so nothing
/// can be loaded or unloaded.
pub fn probe(sc: Syscall) -> Probe {
    // SAFETY: invalid flags make both calls return before they look at any pointer; the
    // pointers are null and the lengths 0 anyway.
    let r = unsafe {
        match sc {
            Syscall::KexecFileLoad => libc::syscall(
                SYS_KEXEC_FILE_LOAD,
                NO_FD,
                NO_FD,
                0usize,
                std::ptr::null::<u8>(),
                1u64 << 30,
            ),
            Syscall::KexecLoad => libc::syscall(
                SYS_KEXEC_LOAD,
                0u64,
                0usize,
                std::ptr::null::<u8>(),
                KEXEC_ON_CRASH | 1 << 15,
            ),
        }
    };
    match (r, errno()) {
        (0, _) => Probe::Available,
        (_, libc::EINVAL) => Probe::Available,
        (_, e) => Probe::Unavailable(e),
    }
}

/// `kexec_file_load(fd, -1, len, cmdline, KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS)`.
pub fn load_file(kernel: &std::fs::File, cmdline: &str) -> Result<(), KexecError> {
    let sc = Syscall::KexecFileLoad;
    let c = std::ffi::CString::new(cmdline).map_err(|_| KexecError::Other(sc, libc::EINVAL))?;
    let len = c.as_bytes_with_nul().len();
    // SAFETY: `c` is a NUL-terminated buffer of `len` bytes that outlives the call; the
    // kernel copies it and reads the image through the fd.
    let r = unsafe {
        libc::syscall(
            SYS_KEXEC_FILE_LOAD,
            libc::c_long::from(kernel.as_raw_fd()),
            NO_FD,
            len,
            c.as_ptr(),
            u64::from(KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(KexecError::from_errno(sc, errno()))
    }
}

/// `kexec_load(entry, n, segments, KEXEC_ON_CRASH | KEXEC_ARCH_<this machine>)`.
pub fn load_segments(entry: u64, segments: &[Segment]) -> Result<(), KexecError> {
    let sc = Syscall::KexecLoad;
    let raw: Vec<KexecSegment> = segments
        .iter()
        .map(|s| KexecSegment {
            buf: s.bytes.as_ptr(),
            bufsz: s.bytes.len(),
            mem: s.mem,
            memsz: s.memsz as usize,
        })
        .collect();
    // SAFETY: `raw` and every buffer it points to live until the call returns; the kernel
    // copies `bufsz` bytes from each `buf`.
    let r = unsafe {
        libc::syscall(
            SYS_KEXEC_LOAD,
            entry,
            raw.len(),
            raw.as_ptr(),
            KEXEC_ON_CRASH | Arch::HOST.kexec_arch_flag(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(KexecError::from_errno(sc, errno()))
    }
}

/// Unloads the crash kernel with `sc`.
pub fn unload(sc: Syscall) -> Result<(), KexecError> {
    // SAFETY: unloading passes no buffers (null pointers with zero lengths).
    let r = unsafe {
        match sc {
            Syscall::KexecFileLoad => libc::syscall(
                SYS_KEXEC_FILE_LOAD,
                NO_FD,
                NO_FD,
                0usize,
                std::ptr::null::<u8>(),
                u64::from(KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH),
            ),
            Syscall::KexecLoad => libc::syscall(
                SYS_KEXEC_LOAD,
                0u64,
                0usize,
                std::ptr::null::<u8>(),
                KEXEC_ON_CRASH | Arch::HOST.kexec_arch_flag(),
            ),
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(KexecError::from_errno(sc, errno()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let m = KexecError::from_errno(Syscall::KexecFileLoad, libc::ENOSYS).to_string();
        assert!(
            m.contains("CONFIG_KEXEC_FILE") && m.contains("--syscall kexec_load"),
            "{m}"
        );
        let m = KexecError::from_errno(Syscall::KexecLoad, libc::ENOSYS).to_string();
        assert!(
            m.contains("CONFIG_KEXEC ") && m.contains("--syscall kexec_file_load"),
            "{m}"
        );
        assert!(KexecError::from_errno(Syscall::KexecLoad, libc::EPERM)
            .to_string()
            .contains("root"));
        assert!(matches!(
            KexecError::from_errno(Syscall::KexecFileLoad, libc::EKEYREJECTED),
            KexecError::SignatureRejected(..)
        ));
        assert!(
            KexecError::from_errno(Syscall::KexecFileLoad, libc::EADDRNOTAVAIL)
                .to_string()
                .contains("lifeboat estimate")
        );
        assert_eq!(Syscall::from_name("kexec_load"), Some(Syscall::KexecLoad));
        assert_eq!(Syscall::from_name("kexec"), None);
    }
}
