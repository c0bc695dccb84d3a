//! Where the dump of a real crash goes, and how the host gets it back:
//!
//! - the serial port (`lifeboat.sink` not set): `lifeboat receive` rebuilds it from `serial.bin`;
//! - a raw virtio-blk disk (`e2e.sink=blk:/dev/vda`): a sparse 512 MiB image with serial
//!   `lbdump`; after QEMU quits, `lifeboat fetch dump.img -o vmcore` copies the dump out, and
//!   the crashed kernel's log from the region at the end of the disk to `vmcore.dmesg.txt`;
//! - TCP over QEMU user networking (`e2e.sink=net:10.0.2.2:<port>`; the guest's 10.0.2.2 is the
//!   host's 127.0.0.1): `lifeboat serve` on a free loopback port stores
//!   `served/<host>-<UTC time>/vmcore`.
//!
//! The serial console carries the capture kernel's progress and verdict in every case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checks::{check, tail_of, Check};
use crate::qemu::{self, run_with_timeout};
use crate::sinks::{disk_args, net_args, Server};

/// The dump disk's size (sparse: only what the capture kernel writes takes room).
pub const DISK_BYTES: u64 = 512 << 20;
/// The dump disk's virtio serial (`/sys/block/vda/serial` in the guest).
pub const DISK_SERIAL: &str = "lbdump";
/// The dump disk as the guest names it (the only virtio-blk disk).
pub const GUEST_DISK: &str = "/dev/vda";
/// The host's loopback as QEMU user networking shows it to the guest.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
/// The hostname `/init` sets; the server names the dump directory after it.
pub const GUEST_HOSTNAME: &str = "lifeboat-e2e";

/// Which sink the capture kernel writes the dump to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    Serial,
    Blk,
    Net,
}

impl Sink {
    pub fn word(self) -> &'static str {
        match self {
            Sink::Serial => "serial",
            Sink::Blk => "blk",
            Sink::Net => "net",
        }
    }
}

/// The host's side of the sink while the guest runs.
pub enum SinkHost {
    Serial,
    Blk { disk: PathBuf },
    Net { server: Server },
}

/// Path, mode bits.
fn mode(p: &Path) -> Result<u32, String> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .permissions()
        .mode()
        & 0o777)
}

impl SinkHost {
    /// Create the disk or start the server, in the scenario's directory.
    pub fn prepare(sink: Sink, dir: &Path, lifeboat_host: &Path) -> Result<SinkHost, String> {
        match sink {
            Sink::Serial => Ok(SinkHost::Serial),
            Sink::Blk => {
                let disk = dir.join("dump.img");
                let f = std::fs::File::create(&disk)
                    .map_err(|e| format!("cannot create {}: {e}", disk.display()))?;
                f.set_len(DISK_BYTES)
                    .map_err(|e| format!("cannot size {}: {e}", disk.display()))?;
                Ok(SinkHost::Blk { disk })
            }
            Sink::Net => {
                let server = Server::start(
                    lifeboat_host,
                    &dir.join("served"),
                    &dir.join("serve.log"),
                    &[],
                )
                .map_err(|e| e.0)?;
                Ok(SinkHost::Net { server })
            }
        }
    }

    pub fn qemu_args(&self) -> Vec<String> {
        match self {
            SinkHost::Serial => vec![],
            SinkHost::Blk { disk } => disk_args(disk, "dump", DISK_SERIAL),
            SinkHost::Net { .. } => net_args(),
        }
    }

    /// The guest's `e2e.sink=` (what `/init` passes as `lifeboat.sink=`).
    pub fn e2e_sink(&self) -> Option<String> {
        match self {
            SinkHost::Serial => None,
            SinkHost::Blk { .. } => Some(format!("blk:{GUEST_DISK}")),
            SinkHost::Net { server } => {
                Some(format!("net:{HOST_FROM_GUEST}:{}", server.addr.port()))
            }
        }
    }

    /// What to add to a failure's report: the server's log.
    pub fn failure_context(&self) -> String {
        match self {
            SinkHost::Net { server } => format!(
                "\n  lifeboat serve log ({}):\n{}",
                server.log_text().lines().count(),
                qemu::tail(
                    &server
                        .log_text()
                        .lines()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                    20
                )
            ),
            _ => String::new(),
        }
    }

    /// After QEMU quit: get the dump to the host and check how it came. Returns the check and
    /// the dump file (`None` when there is none to check further).
    pub fn collect(
        &mut self,
        tools: &super::arch::HostTools,
        lifeboat_host: &Path,
        dir: &Path,
        verdict: &str,
    ) -> (Check, Option<PathBuf>) {
        let vmcore = dir.join("vmcore");
        match self {
            SinkHost::Serial => {
                // The dump, and the crashed kernel's log that came first in the stream
                // (`vmcore.dmesg.txt`, from the LOG frames) = makedumpfile's view of the dump.
                let r = super::checks::receive(lifeboat_host, dir).and_then(|got| {
                    let log = super::checks::streamed_dmesg_matches_makedumpfile(
                        tools,
                        dir,
                        &vmcore,
                        &dir.join("vmcore.dmesg.txt"),
                        "received-dmesg.makedumpfile.txt",
                    )?;
                    Ok(format!("{got}; {log}"))
                });
                (check("lifeboat receive", r), Some(vmcore))
            }
            SinkHost::Blk { disk } => {
                // The dump, and the crashed kernel's log the capture kernel wrote first to the
                // end of the disk (`vmcore.dmesg.txt`) = makedumpfile's view of the dump.
                let r = fetch(lifeboat_host, dir, disk, &vmcore, verdict).and_then(|got| {
                    let dmesg = dir.join("vmcore.dmesg.txt");
                    let m = mode(&dmesg).map_err(|e| format!("fetch wrote no vmcore.dmesg.txt: {e}"))?;
                    if m != 0o600 {
                        return Err(format!("vmcore.dmesg.txt has mode {m:o} (want 600)"));
                    }
                    let log = super::checks::streamed_dmesg_matches_makedumpfile(
                        tools,
                        dir,
                        &vmcore,
                        &dmesg,
                        "fetched-dmesg.makedumpfile.txt",
                    )
                    .map(|l| l.replace("from the LOG frames", "from the disk's log region"))?;
                    Ok(format!("{got}; {log}"))
                });
                let got = vmcore.is_file().then_some(vmcore);
                (check("lifeboat fetch", r), got)
            }
            SinkHost::Net { server } => {
                server.kill();
                let r = served(tools, server, dir, verdict);
                let got = r.as_ref().ok().map(|(_, p)| p.clone());
                let r = r
                    .map(|(s, _)| s)
                    .map_err(|e| format!("{e}{}", self.failure_context()));
                (check("lifeboat serve", r), got)
            }
        }
    }
}

fn complete(verdict: &str) -> Result<(), String> {
    if verdict.starts_with("complete") {
        Ok(())
    } else {
        Err(format!(
            "the capture kernel's verdict is {verdict:?}, not complete"
        ))
    }
}

/// `lifeboat fetch <disk> -o <vmcore>` exits 0 (complete), and what it wrote is the start of
/// the disk.
fn fetch(
    lifeboat_host: &Path,
    dir: &Path,
    disk: &Path,
    vmcore: &Path,
    verdict: &str,
) -> Result<String, String> {
    complete(verdict)?;
    let _ = std::fs::remove_file(vmcore);
    for stale in ["vmcore.dmesg.txt", "vmcore.dmesg.txt.incomplete"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let mut c = std::process::Command::new(lifeboat_host);
    c.arg("fetch").arg(disk).arg("-o").arg(vmcore);
    let (out, err) = (dir.join("fetch.stdout"), dir.join("fetch.stderr"));
    let fin = run_with_timeout(c, None, &out, &err, Duration::from_secs(300))?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`lifeboat fetch` {} (0 = complete, 1 = incomplete, 2 = no dump); its output:\n{}{}",
            if fin.timed_out {
                "timed out".into()
            } else {
                format!("exited {:?}", fin.code())
            },
            tail_of(&out, 10),
            tail_of(&err, 10)
        ));
    }
    let got = std::fs::read(vmcore).map_err(|e| format!("fetch wrote no vmcore: {e}"))?;
    let raw = std::fs::read(disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    if raw.len() < got.len() || raw[..got.len()] != got[..] {
        let at = raw
            .iter()
            .zip(&got)
            .position(|(a, b)| a != b)
            .unwrap_or(raw.len());
        return Err(format!(
            "fetch's vmcore ({} bytes) is not the start of the disk: first difference at byte {at:#x}",
            got.len()
        ));
    }
    Ok(format!(
        "exit 0, verdict {verdict}, vmcore {} bytes = the disk's first {} bytes",
        got.len(),
        got.len()
    ))
}

/// The server stored exactly one dump, `<host>-<time>/vmcore`, the directory 0700 and the file
/// 0600, and next to it `dmesg.txt` (0600) equal byte for byte to what `makedumpfile
/// --dump-dmesg` extracts from that vmcore; `lifeboat.txt` says that `dmesg.txt` is the log
/// streamed in LOG frames (not derived from the vmcore afterwards). Returns the summary and
/// the vmcore.
fn served(
    tools: &super::arch::HostTools,
    server: &Server,
    dir: &Path,
    verdict: &str,
) -> Result<(String, PathBuf), String> {
    complete(verdict)?;
    let dirs = server.dump_dirs();
    let [d] = dirs.as_slice() else {
        return Err(format!(
            "expected one dump directory in {}, found {dirs:?}",
            server.dir.display()
        ));
    };
    let name = d
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    if !name.starts_with(&format!("{GUEST_HOSTNAME}-")) {
        return Err(format!(
            "dump directory {name:?} is not named after the guest's hostname {GUEST_HOSTNAME:?}"
        ));
    }
    let vmcore = d.join("vmcore");
    let files: Vec<String> = std::fs::read_dir(d)
        .map_err(|e| format!("{}: {e}", d.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if !vmcore.is_file() {
        return Err(format!("{} has no vmcore, only {files:?}", d.display()));
    }
    let (dmode, fmode) = (mode(d)?, mode(&vmcore)?);
    if dmode != 0o700 || fmode != 0o600 {
        return Err(format!(
            "{name} has mode {dmode:o} (want 700), its vmcore {fmode:o} (want 600)"
        ));
    }
    let size = std::fs::metadata(&vmcore).map(|m| m.len()).unwrap_or(0);
    let dmesg = d.join("dmesg.txt");
    let ours = std::fs::read(&dmesg).map_err(|e| format!("the server wrote no dmesg.txt: {e}"))?;
    if mode(&dmesg)? != 0o600 {
        return Err(format!("{name}/dmesg.txt has mode {:o} (want 600)", mode(&dmesg)?));
    }
    let reference = dir.join("served-dmesg.makedumpfile.txt");
    let _ = std::fs::remove_file(&reference);
    let out = tools
        .makedumpfile()
        .arg("--dump-dmesg")
        .arg(&vmcore)
        .arg(&reference)
        .output()
        .map_err(|e| format!("cannot run makedumpfile: {e}"))?;
    let theirs = std::fs::read(&reference).map_err(|e| {
        format!("makedumpfile --dump-dmesg wrote nothing ({e}): {}", String::from_utf8_lossy(&out.stderr))
    })?;
    if ours != theirs {
        return Err(crate::scenario::first_difference(
            "the server's dmesg.txt",
            &ours,
            "makedumpfile --dump-dmesg of the same vmcore",
            &theirs,
        ));
    }
    let info = std::fs::read_to_string(d.join("lifeboat.txt"))
        .map_err(|e| format!("{name}/lifeboat.txt: {e}"))?;
    let streamed = "kernel_log: streamed in LOG frames, whole: dmesg.txt (";
    let Some(how) = info.lines().find(|l| l.starts_with("kernel_log: ")) else {
        return Err(format!(
            "{name}/lifeboat.txt has no kernel_log: line:\n{info}"
        ));
    };
    if !how.starts_with(streamed) {
        return Err(format!(
            "{name}/dmesg.txt is not the log streamed in LOG frames; lifeboat.txt says {how:?}"
        ));
    }
    if !server.log_text().contains("kernel log stored as ") {
        return Err("the server log does not say the kernel log came in LOG frames".into());
    }
    Ok((
        format!(
            "verdict {verdict}, {name}/vmcore {size} bytes (dir 0700, file 0600; files {}); dmesg.txt (streamed in LOG frames) = makedumpfile --dump-dmesg ({} bytes)",
            files.join(" "),
            ours.len()
        ),
        vmcore,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_arguments() {
        assert_eq!(
            disk_args(Path::new("/w/dump.img"), "dump", "lbdump"),
            [
                "-drive",
                "file=/w/dump.img,if=none,format=raw,id=dump,cache=unsafe",
                "-device",
                "virtio-blk-pci,drive=dump,serial=lbdump"
            ]
        );
        assert_eq!(net_args()[3], "virtio-net-pci,netdev=n0,romfile=");
    }

    #[test]
    fn sparse_disk_and_sink_option() {
        let dir = std::env::temp_dir().join(format!("e2e-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h = SinkHost::prepare(Sink::Blk, &dir, Path::new("/nonexistent")).unwrap();
        assert_eq!(h.e2e_sink().as_deref(), Some("blk:/dev/vda"));
        let disk = dir.join("dump.img");
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), DISK_BYTES);
        {
            use std::os::unix::fs::MetadataExt;
            assert!(
                std::fs::metadata(&disk).unwrap().blocks() < 64,
                "not sparse"
            );
        }
        assert!(h.qemu_args().join(" ").contains("serial=lbdump"));
        assert_eq!(SinkHost::Serial.e2e_sink(), None);
        assert!(SinkHost::Serial.qemu_args().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_complete_verdict_is_fetched() {
        let e = fetch(
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
            Path::new("/nonexistent/vmcore"),
            "incomplete: disk too small",
        )
        .unwrap_err();
        assert!(e.contains("not complete"), "{e}");
    }
}
