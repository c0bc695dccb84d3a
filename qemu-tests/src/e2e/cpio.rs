//! A writer for the cpio "newc" archive format (the format of a Linux initramfs).
//!
//! Format, as Linux's `init/initramfs.c` and `usr/gen_init_cpio.c` read and write it: every
//! entry is the ASCII magic `070701`, thirteen 8-digit hexadecimal fields (ino, mode, uid, gid,
//! nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize including the
//! NUL, check = 0), the NUL-terminated name padded to a multiple of 4 (counted from the
//! entry's start), then the data padded to a multiple of 4. A symlink's data is its target.
//! The archive ends with an entry named `TRAILER!!!`. Uncompressed archives are accepted by
//! every Linux that supports an initramfs.

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An uncompressed newc archive being built in memory.
#[derive(Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
    names: std::collections::BTreeSet<String>,
}

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            next_ino: 721,
            names: Default::default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        assert!(!name.is_empty(), "cpio entry without a name");
        if !self.names.insert(name.to_string()) {
            return; // a second entry with the same name would replace the first; keep the first
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid: root
            0, // gid: root
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory; parents must be added first.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        assert!(
            data.len() <= u32::MAX as usize,
            "cpio newc files are at most 4 GiB"
        );
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node (e.g. `/dev/console`, 5:1).
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// Add the trailer and return the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

/// One entry read back from an archive (for tests and diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Read a newc archive up to its trailer.
pub fn read_newc(mut b: &[u8]) -> Result<Vec<CpioEntry>, String> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        if b.len() < 110 || &b[..6] != b"070701" {
            return Err(format!("no newc header at offset {at:#x}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).map_err(|e| e.to_string())?;
            u32::from_str_radix(s, 16).map_err(|e| format!("field {i} at {at:#x}: {e}"))
        };
        let (mode, size, rdev, namesize) = (
            field(1)?,
            field(6)? as usize,
            (field(9)?, field(10)?),
            field(11)? as usize,
        );
        let name_end = 110 + namesize;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size;
        if b.len() < data_end || namesize == 0 || b[name_end - 1] != 0 {
            return Err(format!("entry at {at:#x} runs past the archive"));
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            rdev,
            data: b[data_start..data_end].to_vec(),
        });
        let next = data_end.next_multiple_of(4).min(b.len());
        at += next;
        b = &b[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_gen_init_cpio() {
        let mut w = CpioWriter::new();
        w.file("/init", 0o755, b"#!x\n");
        let a = w.finish();
        // 110-byte header + "init\0" (5) = 115, padded to 116; data 4 bytes.
        let h = std::str::from_utf8(&a[..110]).unwrap();
        let want = [
            "070701", "000002d1", "000081ed", "00000000", "00000000", "00000001", "00000000",
            "00000004", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000",
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(&a[110..116], b"init\0\0");
        assert_eq!(&a[116..120], b"#!x\n");
        assert_eq!(&a[120..126], b"070701");
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn round_trip_all_kinds() {
        let mut w = CpioWriter::new();
        w.dir("bin");
        w.file("bin/busybox", 0o755, &[1, 2, 3, 4, 5]);
        w.symlink("bin/sh", "busybox");
        w.char_dev("dev/console", 0o600, 5, 1);
        w.file("bin/busybox", 0o644, b"ignored duplicate");
        let e = read_newc(&w.finish()).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev/console"]);
        assert_eq!(e[0].mode, 0o040755);
        assert_eq!(e[1].data, [1, 2, 3, 4, 5]);
        assert_eq!(e[2].mode, 0o120777);
        assert_eq!(e[2].data, b"busybox");
        assert_eq!(e[3].mode, 0o020600);
        assert_eq!(e[3].rdev, (5, 1));
    }
}
