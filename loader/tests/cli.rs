//! Runs the `lifeboat` binary on serial captures built with the capture kernel's own encoder
//! and framer (`lifeboat_capture::{flat, frame}`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat_capture::flat::FlatEncoder;
use lifeboat_capture::frame::{ByteWrite, FrameWriter};
use lifeboat_capture::sink::{RecordSink, SinkError};

struct Wire(Vec<u8>);
impl ByteWrite for Wire {
    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
        self.0.extend_from_slice(b);
        Ok(())
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("lifeboat-cli-{}-{}", name, std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// A fake kdump file and its serial capture: console lines, then frames: the header record,
/// then the other records in descending offset order (the flattened format allows any order).
fn capture(len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut dump: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    dump[..8].copy_from_slice(b"KDUMP   ");
    dump[424..428].copy_from_slice(&1u32.to_le_bytes());
    let mut fw = FrameWriter::new(Wire(b"early boot text\n".to_vec()), "lifeboat test").unwrap();
    {
        let mut enc = FlatEncoder::new(&mut fw).unwrap();
        enc.record(0, &dump[..4096]).unwrap();
        for (i, c) in dump.chunks(10_000).enumerate().rev() {
            enc.record((i * 10_000) as u64, c).unwrap();
        }
        enc.finish().unwrap();
    }
    fw.inner_mut().0.extend_from_slice(b"lifeboat: dump written\n");
    let w = fw.finish(true, "").unwrap();
    (dump, w.0)
}

fn lifeboat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn complete_dump_exits_0_and_flat_file_rebuilds_with_makedumpfile() {
    let dir = tmpdir("ok");
    let (dump, wire) = capture(100_000);
    fs::write(dir.join("serial.log"), &wire).unwrap();
    let (out, flat, console) = (dir.join("vmcore"), dir.join("vmcore.flat"), dir.join("console"));
    let o = lifeboat(&[
        "receive",
        "--serial",
        s(&dir.join("serial.log")),
        "-o",
        s(&out),
        "--flat",
        s(&flat),
        "--console",
        s(&console),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("dump complete"));
    assert!(stderr.contains("console| early boot text"));
    assert_eq!(fs::read(&out).unwrap(), dump);
    assert_eq!(fs::read(&console).unwrap(), b"early boot text\nlifeboat: dump written\n");

    // `makedumpfile -R` (when installed) rebuilds the same file from the flattened stream.
    let rebuilt = dir.join("vmcore.R");
    let mdf = Command::new("makedumpfile")
        .arg("-R")
        .arg(&rebuilt)
        .stdin(fs::File::open(&flat).unwrap())
        .output();
    match mdf {
        Ok(r) if r.status.success() => assert_eq!(fs::read(&rebuilt).unwrap(), dump),
        Ok(r) => panic!("makedumpfile -R failed: {}", String::from_utf8_lossy(&r.stderr)),
        Err(_) => eprintln!("makedumpfile not installed; -R check skipped"),
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn lossy_dump_exits_1_and_says_incomplete() {
    let dir = tmpdir("lossy");
    let (_, wire) = capture(100_000);
    // Cut the capture in the middle: frames are lost, END never arrives.
    fs::write(dir.join("serial.log"), &wire[..wire.len() / 2]).unwrap();
    let out = dir.join("vmcore");
    let o = lifeboat(&["receive", "--serial", s(&dir.join("serial.log")), "-o", s(&out)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("dump INCOMPLETE: "), "{stdout}");
    assert!(stdout.contains("stream ended before the END frame"), "{stdout}");
    let d = fs::read(&out).unwrap();
    assert_eq!(u32::from_le_bytes(d[424..428].try_into().unwrap()), 1 | 8);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(lifeboat(&["receive", "-o", "/nonexistent/x"]).status.code(), Some(2));
    let o = lifeboat(&["receive", "--serial", "/nonexistent/serial", "-o", "/tmp/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open /nonexistent/serial"));
    let dir = tmpdir("io");
    let (_, wire) = capture(10_000);
    fs::write(dir.join("serial.log"), &wire).unwrap();
    let o = lifeboat(&["receive", "--serial", s(&dir.join("serial.log")), "-o", "/nonexistent/d"]);
    assert_eq!(o.status.code(), Some(2));
    let _ = fs::remove_dir_all(&dir);
}
