//! The host tools on a crash that no capture kernel touched: the guest arms nothing
//! (`e2e.load=none`), crashes with sysrq and stops in its panic (`panic=0`); QEMU's
//! `dump-guest-memory` of it, laid out like `/proc/vmcore` by [`exclusion::normalize`] with the
//! crashed kernel's own VMCOREINFO (read from guest memory where `/sys/kernel/vmcoreinfo`
//! said it is), must then open in makedumpfile (`--dump-dmesg`, `-d 31`) and crash.
//!
//! It needs neither lifeboat's capture kernel nor its loader, so it shows that an
//! architecture's guest, QEMU dump and host tools work before lifeboat runs there
//! (`cargo test -p qemu-tests e2e_baseline_from_env -- --ignored --nocapture`, `E2E_ARCH=aarch64`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::arch::Arch;
use super::checks::{self, check};
use super::dump_layout::DumpLayout;
use super::guest_memory::{describe_pfn_ranges, GuestMemory, PAGE};
use super::{exclusion, guest, initramfs, E2eConfig, E2eError, E2eScenarioReport, CRASHKERNEL};
use crate::qemu;

/// The scenario's name (its directory under the work directory).
pub const NAME: &str = "baseline-1g";
/// `/init`'s line with `/sys/kernel/vmcoreinfo` (the note's physical address and size, hex).
pub const MARK_VMCOREINFO: &str = "e2e: vmcoreinfo: ";

/// `e2e: vmcoreinfo: 0x00000000485ae000 1024` → (address, size). The kernel prints both in
/// hex (`%pa %x`), the size without `0x`.
pub fn parse_vmcoreinfo_line(console: &[String]) -> Option<(u64, u64)> {
    let hex = |w: &str| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok();
    console.iter().find_map(|l| {
        let rest = l.split(MARK_VMCOREINFO).nth(1)?;
        let mut w = rest.split_whitespace();
        let a = hex(w.next()?)?;
        let n = hex(w.next()?)?;
        Some((a, n))
    })
}

/// The VMCOREINFO text of the ELF note at `note` (an `Elf64_Nhdr`, the name `VMCOREINFO`,
/// then the text; what `/sys/kernel/vmcoreinfo` points at).
pub fn vmcoreinfo_from_note(note: &[u8]) -> Result<String, String> {
    let u32_at = |o: usize| {
        note.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (namesz, descsz) = (
        u32_at(0).ok_or("short note")?,
        u32_at(4).ok_or("short note")?,
    );
    let name = note
        .get(12..12 + namesz)
        .ok_or("note name outside the buffer")?;
    if name != b"VMCOREINFO\0" {
        return Err(format!(
            "the note is named {:?}, not VMCOREINFO",
            String::from_utf8_lossy(name)
        ));
    }
    let at = 12 + namesz.next_multiple_of(4);
    let desc = note
        .get(at..at + descsz)
        .ok_or("VMCOREINFO text outside the buffer")?;
    let text = String::from_utf8_lossy(desc)
        .trim_end_matches('\0')
        .to_string();
    if !text.starts_with("OSRELEASE=") {
        return Err(format!(
            "VMCOREINFO does not start with OSRELEASE=: {:?}",
            &text[..text.len().min(40)]
        ));
    }
    Ok(text)
}

/// Read `range` (physical) out of QEMU's memory dump.
fn read_phys(mem: &GuestMemory, range: Range<u64>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut page = [0u8; PAGE as usize];
    for pfn in range.start / PAGE..range.end.div_ceil(PAGE) {
        if !mem.read_page(pfn, &mut page)? {
            return Err(format!("page {:#x} is not in QEMU's dump", pfn * PAGE));
        }
        let base = pfn * PAGE;
        let from = range.start.max(base) - base;
        let to = range.end.min(base + PAGE) - base;
        out.extend_from_slice(&page[from as usize..to as usize]);
    }
    Ok(out)
}

/// Boot `arch`'s guest with nothing armed, crash it, dump QEMU's memory and run the host
/// tools on it (needs no lifeboat image: `cfg.bzimage` and `cfg.lifeboat_guest` are unused).
pub fn run(cfg: &E2eConfig, arch: Arch) -> Result<E2eScenarioReport, E2eError> {
    let mut log = |m: String| println!("e2e: {m}");
    let inputs = match arch {
        Arch::X86_64 => super::inputs::prepare(&cfg.cache_dir, &mut log),
        Arch::Aarch64 => super::arm64::prepare(&cfg.cache_dir, &mut log),
    }
    .map_err(E2eError::Setup)?;
    let dir = cfg.work_dir.join(format!("{NAME}-{arch}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| E2eError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    let initrd = dir.join("initramfs.cpio");
    let cpio = initramfs::build_without_lifeboat(&inputs).map_err(E2eError::Setup)?;
    std::fs::write(&initrd, &cpio).map_err(|e| E2eError::Setup(e.to_string()))?;
    let start = Instant::now();
    let mut r = E2eScenarioReport::new(NAME);
    r.details.push(format!(
        "{arch}: {} {} ({}), initramfs {} bytes",
        inputs.image_package,
        inputs.image_version,
        inputs.vmlinuz.display(),
        cpio.len()
    ));
    let outcome = body(cfg, arch, &inputs, &initrd, &dir, &mut r);
    let console = checks::console_text(&std::fs::read(dir.join("serial.bin")).unwrap_or_default());
    let failed: Vec<String> = r
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("check {} failed: {}", c.name, c.detail))
        .collect();
    match outcome {
        Err(why) => {
            r.failure = Some(format!(
                "{NAME} ({arch}) failed: {why}\n  files: {}\n{}",
                dir.display(),
                qemu::tail(&console, 30)
            ))
        }
        Ok(()) if !failed.is_empty() => {
            r.failure = Some(format!("{NAME} ({arch}): {}\n", failed.join("\n")))
        }
        Ok(()) => r.passed = true,
    }
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

fn body(
    cfg: &E2eConfig,
    arch: Arch,
    inputs: &super::inputs::Inputs,
    initrd: &Path,
    dir: &Path,
    r: &mut E2eScenarioReport,
) -> Result<(), String> {
    let spec = guest::GuestSpec {
        arch,
        dir,
        vmlinuz: &inputs.vmlinuz,
        initramfs: initrd,
        mem: "1G",
        smp: 2,
        append: format!(
            "console={} crashkernel={CRASHKERNEL} panic=0 e2e.load=none",
            arch.console()
        ),
        timeout: std::time::Duration::from_secs(400),
        verbose: cfg.verbose,
        extra: vec![],
    };
    let mut log = |m: String| println!("e2e: [{NAME} {arch}] {m}");
    let run = guest::run_until_panic(&spec, &mut log).map_err(|(why, tl)| {
        r.timeline = tl;
        why
    })?;
    r.timeline = run.timeline.clone();
    r.verdict = Some(run.verdict.clone());
    let console = checks::console_text(&std::fs::read(spec.serial_path()).unwrap_or_default());
    let uptime = console
        .iter()
        .find_map(|l| l.split(initramfs::MARK_INIT).nth(1))
        .and_then(|t| t.trim_end_matches(" s").trim().parse::<f64>().ok());
    r.details.push(format!(
        "/init at {} after boot by the guest's clock, {} after QEMU started; sysrq at {}; QMP dump {}",
        super::secs(uptime),
        super::secs(run.timeline.init),
        super::secs(run.timeline.sysrq),
        super::secs(run.timeline.qemu_dump_seconds),
    ));
    let qemu_elf = spec.qemu_dump_path();
    let mem = GuestMemory::open(&qemu_elf)?;
    r.details.push(format!(
        "QEMU RAM: {}; {} PRSTATUS notes",
        describe_pfn_ranges(&mem.ram_pfns(), 8),
        mem.prstatus_notes
    ));
    let (addr, size) = parse_vmcoreinfo_line(&console)
        .ok_or("no \"e2e: vmcoreinfo: <addr> <size>\" line from /init")?;
    let info = vmcoreinfo_from_note(&read_phys(&mem, addr..addr + size)?)?;
    r.details.push(format!(
        "VMCOREINFO at {addr:#x}: {} lines, {}",
        info.lines().count(),
        info.lines().next().unwrap_or("")
    ));
    let elf = dir.join("vmcore.elf");
    exclusion::normalize(&qemu_elf, info.as_bytes(), &elf)?;
    r.checks.push(check(
        "makedumpfile --dump-dmesg",
        checks::makedumpfile_dmesg(&inputs.tools, dir, &elf),
    ));
    r.checks.push(check(
        "makedumpfile -d 31",
        level31(&inputs.tools, dir, &elf),
    ));
    r.checks.push(check(
        "crash bt/log",
        checks::crash(&inputs.tools, &inputs.vmlinux, dir, &elf, "crash"),
    ));
    if std::env::var_os(super::KEEP_MEMORY_ENV).is_none() && r.checks.iter().all(|c| c.passed) {
        let _ = std::fs::remove_file(&elf);
        let _ = std::fs::remove_file(&qemu_elf);
    }
    Ok(())
}

/// `makedumpfile -d 31 vmcore.elf makedumpfile-d31` exits 0 and writes a kdump-compressed file
/// whose bitmaps leave pages out.
fn level31(tools: &super::arch::HostTools, dir: &Path, elf: &Path) -> Result<String, String> {
    let out: PathBuf = dir.join("makedumpfile-d31");
    let _ = std::fs::remove_file(&out);
    let mut c = tools.makedumpfile();
    c.args(["-d", "31"]).arg(elf).arg(&out);
    let fin = qemu::run_with_timeout(
        c,
        None,
        &dir.join("makedumpfile-d31.stdout"),
        &dir.join("makedumpfile-d31.stderr"),
        std::time::Duration::from_secs(900),
    )?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`makedumpfile -d 31` exited {:?}:\n{}",
            fin.code(),
            checks::tail_of(&dir.join("makedumpfile-d31.stderr"), 10)
        ));
    }
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let l = DumpLayout::read(&exclusion::headers_and_bitmaps(&out)?)
        .map_err(|e| format!("makedumpfile's dump: {e}"))?;
    let count = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
    let _ = std::fs::remove_file(&out);
    Ok(format!(
        "{size} bytes in {:.0} s; kept {} of {} RAM pages; release {}, {} CPUs",
        fin.seconds,
        count(&l.bitmap2_pfns),
        count(&l.bitmap_pfns),
        l.release,
        l.nr_cpus
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmcoreinfo_line_and_note() {
        let c = vec![
            "e2e: scenario e2e.load=none".to_string(),
            "e2e: vmcoreinfo: 0x00000000485ae000 1024".to_string(),
        ];
        assert_eq!(parse_vmcoreinfo_line(&c), Some((0x485ae000, 0x1024)));
        assert_eq!(parse_vmcoreinfo_line(&c[..1]), None);
        let text = b"OSRELEASE=6.1.0-56-cloud-arm64\nPAGESIZE=4096\n";
        let mut note = Vec::new();
        note.extend_from_slice(&11u32.to_le_bytes());
        note.extend_from_slice(&(text.len() as u32).to_le_bytes());
        note.extend_from_slice(&0u32.to_le_bytes());
        note.extend_from_slice(b"VMCOREINFO\0\0");
        note.extend_from_slice(text);
        note.resize(4096, 0);
        assert_eq!(
            vmcoreinfo_from_note(&note).unwrap(),
            String::from_utf8_lossy(text)
        );
        note[12] = b'X';
        assert!(vmcoreinfo_from_note(&note).is_err());
        assert!(vmcoreinfo_from_note(&note[..8]).is_err());
    }
}

/// ```sh
/// E2E_ARCH=aarch64 cargo test --release -p qemu-tests e2e_baseline_from_env -- --ignored --nocapture
/// ```
#[cfg(test)]
mod from_env {
    use super::*;

    #[test]
    #[ignore]
    fn e2e_baseline_from_env() {
        // Only the cache and work directories and E2E_VERBOSE count: the baseline needs no
        // lifeboat image and has one scenario.
        let arch = super::super::from_env::arch(Arch::Aarch64);
        let cfg = super::super::from_env::config(arch, Path::new("e2e"));
        let r = run(&cfg, arch).unwrap_or_else(|e| panic!("{e}"));
        super::super::print_scenario(&r);
        assert!(r.passed, "{}", r.failure.unwrap_or_default());
    }
}

/// Linux kdump with Debian's own tools on arm64: `/init` runs Debian's `kexec -p` of the same
/// Debian Image (no initrd, so the capture kernel ends in a root-mount panic) and crashes.
/// Prints what the console shows after the sysrq: whether kexec-tools armed a capture kernel
/// that boots, and what it says about the elfcorehdr.
///
/// ```sh
/// cargo test -p qemu-tests arm64_stock_kexec_probe -- --ignored --nocapture
/// ```
#[cfg(test)]
mod stock_kexec_probe {
    use super::*;

    #[test]
    #[ignore]
    fn arm64_stock_kexec_probe() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cache = std::env::var_os("E2E_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/e2e-cache"));
        let work = std::env::var_os("E2E_WORK")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/e2e"));
        let mut log = |m: String| println!("e2e: {m}");
        let inputs = super::super::arm64::prepare(&cache, &mut log).unwrap();
        let dir = work.join("stock-kexec-probe-aarch64");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let initrd = dir.join("initramfs.cpio");
        std::fs::write(
            &initrd,
            initramfs::build(&inputs, &inputs.vmlinuz, None).unwrap(),
        )
        .unwrap();
        let spec = guest::GuestSpec {
            arch: Arch::Aarch64,
            dir: &dir,
            vmlinuz: &inputs.vmlinuz,
            initramfs: &initrd,
            mem: "1G",
            smp: 2,
            append: "console=ttyAMA0 crashkernel=128M panic=0 e2e.load=stock".into(),
            timeout: std::time::Duration::from_secs(300),
            verbose: false,
            extra: vec![],
        };
        let r = guest::run_until_panic(&spec, &mut log);
        let _ = std::fs::remove_file(spec.qemu_dump_path());
        let console = checks::console_text(&std::fs::read(spec.serial_path()).unwrap());
        for l in console
            .iter()
            .filter(|l| l.contains("e2e:") || l.contains("kexec") || l.contains("Kexec"))
        {
            println!("  | {l}");
        }
        let after: Vec<&String> = console
            .iter()
            .skip_while(|l| !l.contains(guest::MARK_SYSRQ))
            .collect();
        let boot = after
            .iter()
            .position(|l| l.contains("Booting Linux on physical CPU"));
        println!(
            "outcome: {:?}; {} console lines after the sysrq; capture kernel {}",
            r.as_ref()
                .map(|g| g.verdict.clone())
                .map_err(|e| e.0.clone()),
            after.len(),
            if boot.is_some() {
                "booted"
            } else {
                "did NOT boot"
            }
        );
        for l in after.iter().filter(|l| {
            [
                "Linux version",
                "vmcore",
                "elfcorehdr",
                "Kdump",
                "crashkernel",
                "end Kernel panic",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            println!("  | {l}");
        }
    }
}
