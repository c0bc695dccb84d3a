//! Hand-assembled stand-ins for the capture kernel, to test the harness itself (QEMU command
//! line, loader placement, serial capture, exit statuses, timeouts) without the real kernel.
//!
//! Each is a 32-bit ELF with a PT_LOAD at 2 MiB and the PVH entry note (`"Xen"`, type 18,
//! `XEN_ELFNOTE_PHYS32_ENTRY`) that QEMU's `-kernel` needs for ELF images. QEMU enters it in
//! 32-bit protected mode with paging off.

const LOAD: u32 = 0x20_0000;
const CODE_OFF: usize = 0x100;

/// A kernel that prints `lifeboat: magic=` + the 4 bytes at 16 MiB (where the suite puts the
/// elfcorehdr), then a "no ELF header" failure verdict, and exits through port 0xf4 with value 2.
pub fn says_not_an_elf() -> Vec<u8> {
    let msg1_off = CODE_OFF + 63;
    let msg1 = b"lifeboat: magic=\0";
    let msg2_off = msg1_off + msg1.len();
    let msg2 =
        b"\nlifeboat: no ELF header at elfcorehdr\nlifeboat: verdict: failed: no ELF header\n\0";
    let a = |off: usize| (LOAD + off as u32).to_le_bytes();
    let mut code = Vec::new();
    code.extend_from_slice(&[0xbc, 0x00, 0x00, 0x08, 0x00]); // 0: mov esp, 0x80000
    code.push(0xbe); // 5: mov esi, msg1
    code.extend_from_slice(&a(msg1_off));
    code.extend_from_slice(&[0xe8, 35, 0, 0, 0]); // 10: call print (50)
    code.extend_from_slice(&[0xbe, 0x00, 0x00, 0x00, 0x01]); // 15: mov esi, 0x1000000
    code.extend_from_slice(&[0xb9, 4, 0, 0, 0]); // 20: mov ecx, 4
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // 25: mov dx, 0x3f8
    code.extend_from_slice(&[0xac, 0xee, 0xe2, 0xfc]); // 29: lodsb; out dx, al; loop 29
    code.push(0xbe); // 33: mov esi, msg2
    code.extend_from_slice(&a(msg2_off));
    code.extend_from_slice(&[0xe8, 7, 0, 0, 0]); // 38: call print (50)
    code.extend_from_slice(&[0xb0, 0x02, 0xe6, 0xf4]); // 43: mov al, 2; out 0xf4, al
    code.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // 47: hlt; jmp 47
                                                 // 50: print: mov dx, 0x3f8; 54: lodsb; test al, al; jz 62; out dx, al; jmp 54; 62: ret
    code.extend_from_slice(&[
        0x66, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xc3,
    ]);
    assert_eq!(code.len(), 63);
    code.extend_from_slice(msg1);
    code.extend_from_slice(msg2);
    elf32(&code)
}

/// A kernel that prints one line and then halts forever with interrupts off.
pub fn hangs() -> Vec<u8> {
    let msg_off = CODE_OFF + 32;
    let mut code = Vec::new();
    code.push(0xbe); // mov esi, msg
    code.extend_from_slice(&(LOAD + msg_off as u32).to_le_bytes());
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // 5: mov dx, 0x3f8
    code.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]); // 9: print loop → 17
    code.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // 17: cli; hlt; jmp hlt
    code.resize(32, 0x90);
    code.extend_from_slice(b"lifeboat: stuck on purpose\n\0");
    elf32(&code)
}

fn elf32(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; CODE_OFF];
    f.extend_from_slice(code);
    let len = f.len() as u32;
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    f[..7].copy_from_slice(b"\x7fELF\x01\x01\x01"); // ELFCLASS32, LSB, EV_CURRENT
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 3); // EM_386
    put32(&mut f, 20, 1);
    put32(&mut f, 24, LOAD + CODE_OFF as u32); // e_entry
    put32(&mut f, 28, 52); // e_phoff
    put16(&mut f, 40, 52); // e_ehsize
    put16(&mut f, 42, 32); // e_phentsize
    put16(&mut f, 44, 2); // e_phnum
                          // PT_LOAD: everything at 2 MiB, RWX.
    for (i, v) in [1, 0, LOAD, LOAD, len, len, 7, 0x1000]
        .into_iter()
        .enumerate()
    {
        put32(&mut f, 52 + 4 * i, v);
    }
    // PT_NOTE with the PVH entry note at file offset 116.
    for (i, v) in [4, 116, LOAD + 116, LOAD + 116, 20, 20, 4, 4]
        .into_iter()
        .enumerate()
    {
        put32(&mut f, 84 + 4 * i, v);
    }
    for (i, v) in [4, 4, 18].into_iter().enumerate() {
        put32(&mut f, 116 + 4 * i, v);
    }
    f[128..132].copy_from_slice(b"Xen\0");
    put32(&mut f, 132, LOAD + CODE_OFF as u32);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{self, Kind, Mutation, Scenario};
    use crate::SuiteConfig;
    use std::time::Duration;

    fn qemu_available() -> bool {
        std::process::Command::new(crate::qemu::qemu_binary())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn setup(name: &str, kernel: Vec<u8>) -> SuiteConfig {
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-stub-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join("stub.elf");
        std::fs::write(&elf, kernel).unwrap();
        SuiteConfig {
            capture_elf: elf,
            lifeboat_bin: "/nonexistent".into(),
            work_dir: dir,
            filter: None,
            verbose: true,
        }
    }

    #[test]
    fn harness_passes_a_kernel_that_refuses_a_bad_elf() {
        if !qemu_available() {
            eprintln!("qemu-system-x86_64 not available; skipping");
            return;
        }
        let cfg = setup("bad-magic", says_not_an_elf());
        let s = scenario::all()
            .into_iter()
            .find(|s| s.name == "malformed-bad-magic")
            .unwrap();
        let r = scenario::run(&s, &cfg);
        assert!(r.passed, "{r:?}");
        let all = r.details.join("\n");
        // The stub printed the first bytes at 16 MiB: the loader put the (broken) header there.
        assert!(all.contains("lifeboat: magic=LBOT"), "{all}");
        assert!(all.contains("exit status 5"), "{all}");

        // The same kernel fails a scenario that expects another message, and says why.
        let s = Scenario {
            name: "malformed-overlap",
            seed: 3,
            timeout: Duration::from_secs(60),
            kind: Kind::Malformed(Mutation::Overlap),
        };
        let r = scenario::run(&s, &cfg);
        let f = r.failure.unwrap();
        assert!(
            f.contains("no console line contains \"overlaps\"")
                && f.contains("| lifeboat: verdict: failed: no ELF header"),
            "{f}"
        );
        std::fs::remove_dir_all(&cfg.work_dir).unwrap();
    }

    #[test]
    fn harness_times_out_a_hanging_kernel_and_shows_the_console() {
        if !qemu_available() {
            eprintln!("qemu-system-x86_64 not available; skipping");
            return;
        }
        let cfg = setup("hang", hangs());
        let s = Scenario {
            name: "hang",
            seed: 1,
            timeout: Duration::from_secs(3),
            kind: Kind::Malformed(Mutation::BadMagic),
        };
        let r = scenario::run(&s, &cfg);
        let f = r.failure.unwrap();
        assert!(
            f.contains("timed out after 3 s") && f.contains("| lifeboat: stuck on purpose"),
            "{f}"
        );
        assert!(r.seconds < 30.0);
        std::fs::remove_dir_all(&cfg.work_dir).unwrap();
    }
}

#[cfg(test)]
mod big {
    use super::*;
    use crate::qemu::QemuBoot;
    use crate::synth::{SynthImage, SynthSpec};
    use std::time::{Duration, Instant};

    /// QEMU accepts 256 MiB of loader blobs next to the kernel (run with --ignored).
    #[test]
    #[ignore]
    fn big_blobs_load() {
        let dir = std::env::temp_dir().join(format!("qemu-tests-big-{}", std::process::id()));
        let t = Instant::now();
        let im = SynthImage::generate(&SynthSpec::new(0x256, 256 << 20)).unwrap();
        let blobs = im.write_blobs(&dir.join("mem")).unwrap();
        eprintln!(
            "generated and wrote {} blobs in {:.2} s",
            blobs.len(),
            t.elapsed().as_secs_f64()
        );
        let elf = dir.join("stub.elf");
        std::fs::write(&elf, says_not_an_elf()).unwrap();
        let b = QemuBoot {
            capture_elf: &elf,
            dir: &dir,
            cmdline: "x",
            blobs: &blobs,
            extra: &[],
            timeout: Duration::from_secs(60),
        };
        let f = b.run().unwrap();
        eprintln!("qemu {:?} in {:.2} s", f.code(), f.seconds);
        assert_eq!(f.code(), Some(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
