//! Hand-assembled stand-ins for the capture kernel, to test the harness itself (QEMU command
//! line, loader placement, serial capture, exit statuses, timeouts) without the real kernel.
//!
//! x86_64: each is a 32-bit ELF with a PT_LOAD at 2 MiB and the PVH entry note (`"Xen"`, type
//! 18, `XEN_ELFNOTE_PHYS32_ENTRY`) that QEMU's `-kernel` needs for ELF images. QEMU enters it
//! in 32-bit protected mode with paging off.
//!
//! aarch64 ([`arm64`]): each is a Linux arm64 Image (64-byte header, `Documentation/arch/
//! arm64/booting.rst`) that QEMU `virt` loads 2 MiB into RAM and enters at EL1 with the MMU
//! off; it writes to the PL011 at 0x0900_0000 and exits through semihosting.

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

/// arm64 Images, assembled by [`A64`] (encodings from the Arm ARM, checked against
/// `llvm-mc -triple=aarch64 -show-encoding`).
pub mod arm64 {
    use crate::synth::GuestLayout;
    use crate::Arch;

    /// PL011 UART data register on QEMU `virt`; its control register is at +0x30.
    const PL011: u32 = 0x0900_0000;
    /// Semihosting `SYS_EXIT_EXTENDED` and its reason `ADP_Stopped_ApplicationExit`.
    const SYS_EXIT_EXTENDED: u32 = 0x20;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

    /// A kernel that prints `lifeboat: magic=` + the 4 bytes where the suite puts the
    /// elfcorehdr (1 GiB + 16 MiB), then a "no ELF header" failure verdict, and exits through
    /// semihosting with status 5 (value 2, as the x86 stub's port write).
    pub fn says_not_an_elf() -> Vec<u8> {
        let elfcorehdr = GuestLayout::of(Arch::Aarch64).meta_base;
        let mut a = A64::new();
        a.uart_on();
        a.adr(1, "msg1");
        a.bl("print");
        a.movz_hi(3, elfcorehdr);
        a.movz(5, 4);
        a.label("bytes");
        a.put(0x3840_1462); // ldrb w2, [x3], #1
        a.put(0xb900_0002); // str w2, [x0]
        a.put(0xf100_04a5); // subs x5, x5, #1
        a.b_ne("bytes");
        a.adr(1, "msg2");
        a.bl("print");
        a.exit(5);
        a.print_routine();
        a.data("msg1", b"lifeboat: magic=\0");
        a.data(
            "msg2",
            b"\nlifeboat: no ELF header at elfcorehdr\nlifeboat: verdict: failed: no ELF header\n\0",
        );
        image(&a.finish())
    }

    /// A kernel that prints one line and then waits for interrupts forever (all masked).
    pub fn hangs() -> Vec<u8> {
        let mut a = A64::new();
        a.uart_on();
        a.adr(1, "msg");
        a.bl("print");
        a.label("wait");
        a.put(0xd503_207f); // wfi
        a.b("wait");
        a.print_routine();
        a.data("msg", b"lifeboat: stuck on purpose\n\0");
        image(&a.finish())
    }

    /// A kernel that prints `lifeboat: verdict: complete` and exits with status `status`.
    pub fn exits_with(status: u8) -> Vec<u8> {
        let mut a = A64::new();
        a.uart_on();
        a.adr(1, "msg");
        a.bl("print");
        a.exit(status);
        a.print_routine();
        a.data("msg", b"lifeboat: verdict: complete\n\0");
        image(&a.finish())
    }

    /// The 64-byte arm64 Image header in front of `code`, which starts at offset 0x40.
    fn image(code: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x40];
        let b_code = 0x1400_0000u32 | (0x40 / 4); // code0: b +0x40
        f[0..4].copy_from_slice(&b_code.to_le_bytes());
        // text_offset 0 (QEMU then loads at RAM + 2 MiB), image_size, flags: little-endian,
        // 4 KiB pages (1 << 1), anywhere in RAM (1 << 3).
        let image_size = (0x40 + code.len() as u64).next_multiple_of(0x1000);
        f[16..24].copy_from_slice(&image_size.to_le_bytes());
        f[24..32].copy_from_slice(&0xau64.to_le_bytes());
        f[0x38..0x3c].copy_from_slice(b"ARM\x64");
        f.extend_from_slice(code);
        f
    }

    /// A tiny A64 assembler: instruction words, labels, and the PC-relative forms the stubs
    /// use, resolved in [`A64::finish`]. Data goes after the code, 8-byte aligned.
    struct A64 {
        words: Vec<u32>,
        labels: Vec<(&'static str, usize)>,
        /// (word index, label, kind)
        fixups: Vec<(usize, &'static str, Fix)>,
        data: Vec<(&'static str, Vec<u8>)>,
    }

    #[derive(Clone, Copy)]
    enum Fix {
        /// `b`/`bl`: imm26 words.
        Branch26,
        /// `b.cond`/`cbz`: imm19 words at bit 5.
        Branch19,
        /// `adr`: imm21 bytes, immlo at bit 29, immhi at bit 5.
        Adr,
    }

    impl A64 {
        fn new() -> Self {
            A64 {
                words: vec![],
                labels: vec![],
                fixups: vec![],
                data: vec![],
            }
        }
        fn put(&mut self, w: u32) {
            self.words.push(w);
        }
        fn label(&mut self, name: &'static str) {
            self.labels.push((name, self.words.len() * 4));
        }
        fn fix(&mut self, w: u32, to: &'static str, kind: Fix) {
            self.fixups.push((self.words.len(), to, kind));
            self.put(w);
        }
        fn b(&mut self, to: &'static str) {
            self.fix(0x1400_0000, to, Fix::Branch26);
        }
        fn bl(&mut self, to: &'static str) {
            self.fix(0x9400_0000, to, Fix::Branch26);
        }
        fn b_ne(&mut self, to: &'static str) {
            self.fix(0x5400_0001, to, Fix::Branch19);
        }
        fn cbz_w(&mut self, rt: u32, to: &'static str) {
            self.fix(0x3400_0000 | rt, to, Fix::Branch19);
        }
        fn adr(&mut self, rd: u32, to: &'static str) {
            self.fix(0x1000_0000 | rd, to, Fix::Adr);
        }
        /// `movz xd, #imm16`.
        fn movz(&mut self, rd: u32, imm16: u32) {
            assert!(imm16 <= 0xffff);
            self.put(0xd280_0000 | imm16 << 5 | rd);
        }
        /// `movz xd, #(value >> 16), lsl #16` for a 64 KiB-aligned value below 4 GiB.
        fn movz_hi(&mut self, rd: u32, value: u64) {
            assert!(
                value < 1 << 32 && value.is_multiple_of(1 << 16),
                "{value:#x}"
            );
            self.put(0xd2a0_0000 | ((value >> 16) as u32) << 5 | rd);
        }
        /// x0 = the PL011, turned on (UARTCR = UARTEN | TXE | RXE).
        fn uart_on(&mut self) {
            self.movz_hi(0, u64::from(PL011));
            self.put(0x5280_6024); // mov w4, #0x301
            self.put(0xb900_3004); // str w4, [x0, #0x30]
        }
        /// `print`: write the NUL-terminated string at x1 to the UART at x0.
        fn print_routine(&mut self) {
            self.label("print");
            self.put(0x3840_1422); // ldrb w2, [x1], #1
            self.cbz_w(2, "print_done");
            self.put(0xb900_0002); // str w2, [x0]
            self.b("print");
            self.label("print_done");
            self.put(0xd65f_03c0); // ret
        }
        /// Semihosting `SYS_EXIT_EXTENDED(ADP_Stopped_ApplicationExit, status)`: QEMU exits
        /// with `status`.
        fn exit(&mut self, status: u8) {
            let mut block = ADP_STOPPED_APPLICATION_EXIT.to_le_bytes().to_vec();
            block.extend_from_slice(&u64::from(status).to_le_bytes());
            let name: &'static str = Box::leak(format!("exit{status}").into_boxed_str());
            self.data.push((name, block));
            self.movz(0, SYS_EXIT_EXTENDED);
            self.adr(1, name);
            self.put(0xd45e_0000); // hlt #0xf000
            self.label("exit_spin");
            self.b("exit_spin");
        }
        fn data(&mut self, name: &'static str, bytes: &[u8]) {
            self.data.push((name, bytes.to_vec()));
        }

        /// The code and data as bytes, every label resolved.
        fn finish(mut self) -> Vec<u8> {
            let mut at = (self.words.len() * 4).next_multiple_of(8);
            let mut tail = vec![0u8; at - self.words.len() * 4];
            for (name, bytes) in std::mem::take(&mut self.data) {
                self.labels.push((name, at));
                tail.extend_from_slice(&bytes);
                at += bytes.len();
                let pad = at.next_multiple_of(8) - at;
                tail.extend(std::iter::repeat_n(0, pad));
                at += pad;
            }
            for &(i, to, kind) in &self.fixups {
                let target = self
                    .labels
                    .iter()
                    .find(|(n, _)| *n == to)
                    .unwrap_or_else(|| panic!("no label {to}"))
                    .1;
                let off = target as i64 - (i * 4) as i64;
                let w = &mut self.words[i];
                match kind {
                    Fix::Branch26 => *w |= ((off / 4) as u32) & 0x03ff_ffff,
                    Fix::Branch19 => *w |= (((off / 4) as u32) & 0x7_ffff) << 5,
                    Fix::Adr => {
                        let imm = off as u32 & 0x1f_ffff;
                        *w |= (imm & 3) << 29 | (imm >> 2) << 5;
                    }
                }
            }
            let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
            out.extend_from_slice(&tail);
            out
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Encodings `llvm-mc -triple=aarch64 -show-encoding` gives for the same code.
        #[test]
        fn assembler_matches_llvm_mc() {
            let mut a = A64::new();
            a.uart_on();
            a.movz_hi(3, 0x4100_0000);
            a.movz(0, 0x20);
            a.label("l");
            a.b_ne("l");
            a.bl("f");
            a.adr(1, "d");
            a.label("f");
            a.cbz_w(2, "l");
            a.b("l");
            a.data("d", b"x");
            let w: Vec<u32> = a
                .finish()
                .chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(
                &w[..10],
                &[
                    0xd2a1_2000, // mov x0, #0x9000000
                    0x5280_6024, // mov w4, #0x301
                    0xb900_3004, // str w4, [x0, #48]
                    0xd2a8_2003, // mov x3, #0x41000000
                    0xd280_0400, // mov x0, #0x20
                    0x5400_0001, // b.ne . (to itself)
                    0x9400_0002, // bl +8
                    0x1000_0061, // adr x1, +12
                    0x34ff_ffa2, // cbz w2, -12
                    0x17ff_fffc, // b -16
                ]
            );
            assert_eq!(w[10], u32::from(b'x'));
        }

        #[test]
        fn images_have_the_arm64_header() {
            for im in [says_not_an_elf(), hangs(), exits_with(1)] {
                assert_eq!(&im[0x38..0x3c], b"ARM\x64");
                assert_eq!(
                    u32::from_le_bytes(im[0..4].try_into().unwrap()),
                    0x1400_0010
                );
                let size = u64::from_le_bytes(im[16..24].try_into().unwrap());
                assert!(size >= im.len() as u64 && size.is_multiple_of(4096));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{self, Kind, Mutation, Scenario, ScenarioReport};
    use crate::{Arch, SuiteConfig};
    use std::time::Duration;

    /// Whether QEMU for `arch` is missing; if so it says that the test is skipped.
    fn qemu_missing(arch: Arch) -> bool {
        let available = std::process::Command::new(crate::qemu::qemu_binary_for(arch))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            eprintln!("qemu-system-{arch} not available; skipping");
        }
        !available
    }

    /// Runs `test` on a suite whose capture kernel is `kernel`, in a fresh work directory that
    /// it removes afterwards; skips it when QEMU for `arch` is missing.
    fn with_stub(arch: Arch, name: &str, kernel: Vec<u8>, test: impl FnOnce(&SuiteConfig)) {
        if qemu_missing(arch) {
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-stub-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join("stub.elf");
        std::fs::write(&elf, kernel).unwrap();
        let cfg = SuiteConfig {
            capture_elf: elf,
            arch,
            lifeboat_bin: "/nonexistent".into(),
            work_dir: dir,
            filter: None,
            verbose: true,
        };
        test(&cfg);
        std::fs::remove_dir_all(&cfg.work_dir).unwrap();
    }

    /// Runs `malformed-bad-magic` on a kernel that refuses the bad ELF header (it passes, and
    /// the kernel printed the first bytes of the elfcorehdr: the loader put the broken header
    /// there), then `malformed-overlap`, which expects another message, on the same kernel (it
    /// fails and says why). Returns the first report and the second failure.
    fn refuses_a_bad_elf(cfg: &SuiteConfig) -> (ScenarioReport, String) {
        let s = scenario::for_arch(cfg.arch)
            .into_iter()
            .find(|s| s.name == "malformed-bad-magic")
            .unwrap();
        let r = scenario::run(&s, cfg);
        assert!(r.passed, "{r:?}");
        let all = r.details.join("\n");
        assert!(all.contains("lifeboat: magic=LBOT"), "{all}");
        assert!(all.contains("exit status 5"), "{all}");

        let s = Scenario {
            name: "malformed-overlap",
            seed: 3,
            timeout: Duration::from_secs(60),
            kind: Kind::Malformed(Mutation::Overlap),
        };
        let f = scenario::run(&s, cfg).failure.unwrap();
        assert!(
            f.contains("no console line contains \"overlaps\"")
                && f.contains("| lifeboat: verdict: failed: no ELF header"),
            "{f}"
        );
        (r, f)
    }

    /// A kernel that hangs times out after the scenario's 3 s, and the failure shows its console.
    fn times_out_a_hanging_kernel(cfg: &SuiteConfig) {
        let s = Scenario {
            name: "hang",
            seed: 1,
            timeout: Duration::from_secs(3),
            kind: Kind::Malformed(Mutation::BadMagic),
        };
        let r = scenario::run(&s, cfg);
        let f = r.failure.unwrap();
        assert!(
            f.contains("timed out after 3 s") && f.contains("| lifeboat: stuck on purpose"),
            "{f}"
        );
        assert!(r.seconds < 30.0);
    }

    #[test]
    fn harness_passes_a_kernel_that_refuses_a_bad_elf() {
        with_stub(Arch::X86_64, "bad-magic", says_not_an_elf(), |cfg| {
            refuses_a_bad_elf(cfg);
        });
    }

    #[test]
    fn harness_times_out_a_hanging_kernel_and_shows_the_console() {
        with_stub(Arch::X86_64, "hang", hangs(), times_out_a_hanging_kernel);
    }

    #[test]
    fn harness_passes_an_arm64_kernel_that_refuses_a_bad_elf() {
        with_stub(
            Arch::Aarch64,
            "arm64-bad-magic",
            arm64::says_not_an_elf(),
            |cfg| {
                let (r, f) = refuses_a_bad_elf(cfg);
                assert_eq!(r.name, "aarch64/malformed-bad-magic");
                let all = r.details.join("\n");
                // The elfcorehdr is at 1 GiB + 16 MiB, and the command line named that address.
                assert!(all.contains("cmdline: elfcorehdr=0x41000000 "), "{all}");
                assert!(
                    all.contains("qemu-system-aarch64") && all.contains("virt"),
                    "{all}"
                );
                assert!(cfg
                    .work_dir
                    .join("aarch64/malformed-bad-magic/serial.bin")
                    .is_file());
                assert!(
                f.starts_with(
                    "scenario aarch64/malformed-overlap failed: no console line contains \"overlaps\""
                ),
                "{f}"
            );
            },
        );
    }

    #[test]
    fn harness_times_out_a_hanging_arm64_kernel_and_shows_the_console() {
        with_stub(
            Arch::Aarch64,
            "arm64-hang",
            arm64::hangs(),
            times_out_a_hanging_kernel,
        );
    }

    /// Every exit value the kernel can report reaches the harness as the same QEMU status as
    /// on x86_64, through semihosting.
    #[test]
    fn arm64_semihosting_exit_statuses() {
        if qemu_missing(Arch::Aarch64) {
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-stub-arm64-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (status, says) in [
            (1, "dump complete"),
            (3, "dump incomplete"),
            (5, "failed before dumping"),
        ] {
            let image = dir.join(format!("Image{status}"));
            std::fs::write(&image, arm64::exits_with(status)).unwrap();
            let b = crate::qemu::QemuBoot {
                arch: Arch::Aarch64,
                capture_elf: &image,
                dir: &dir,
                cmdline: "lifeboat.exit_port=0xf4",
                blobs: &[],
                extra: &[],
                timeout: Duration::from_secs(30),
            };
            let f = b.run().unwrap();
            assert_eq!(f.code(), Some(i32::from(status)), "{f:?}");
            assert!(crate::qemu::describe_qemu_exit(&f, b.timeout).contains(says));
            let serial = std::fs::read(b.serial_path()).unwrap();
            assert_eq!(
                crate::qemu::verdict(&crate::qemu::console_lines(&serial)),
                Some("complete")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// QEMU starts with the synthetic RAM of the largest arm64 dump scenarios next to its own
    /// device tree (it refuses overlapping ROMs and loader blobs), and the stub still finds the
    /// elfcorehdr where the suite said.
    #[test]
    fn arm64_blobs_load_around_the_device_tree() {
        if qemu_missing(Arch::Aarch64) {
            return;
        }
        let dir = std::env::temp_dir().join(format!(
            "qemu-tests-stub-arm64-blobs-{}",
            std::process::id()
        ));
        let im = crate::synth::SynthImage::generate(&crate::synth::SynthSpec::new_for(
            Arch::Aarch64,
            0x256,
            160 << 20,
        ))
        .unwrap();
        let dtb = crate::synth::VIRT_DTB;
        assert!(
            im.ranges.iter().any(|r| r.paddr < dtb) && im.ranges.iter().any(|r| r.paddr > dtb),
            "the ranges lie on both sides of the device tree: {:x?}",
            im.ranges
        );
        let blobs = im.write_blobs(&dir.join("mem")).unwrap();
        let image = dir.join("Image");
        std::fs::write(&image, arm64::says_not_an_elf()).unwrap();
        let b = crate::qemu::QemuBoot {
            arch: Arch::Aarch64,
            capture_elf: &image,
            dir: &dir,
            cmdline: "x",
            blobs: &blobs,
            extra: &[],
            timeout: Duration::from_secs(60),
        };
        let f = b.run().unwrap();
        let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
        assert_eq!(f.code(), Some(5), "{f:?}: {err}");
        let serial = std::fs::read(b.serial_path()).unwrap();
        assert!(
            serial.windows(20).any(|w| w == b"lifeboat: magic=\x7fELF"),
            "{}",
            String::from_utf8_lossy(&serial)
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
            arch: crate::Arch::X86_64,
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
