//! The checks every e2e dump must pass. All but the last use tools nobody here wrote
//! (`makedumpfile`, `crash`) or QEMU's own view of guest memory.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::arch::HostTools;
use super::dump_layout::{subtract, DumpLayout};
use super::guest::MARK_SYSRQ;
use super::guest_memory::{describe_pfn_ranges, GuestMemory, PAGE};
use crate::qemu::{self, run_with_timeout};
use crate::verify::{self, ExpectedMemory};

/// Outcome of one check.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// One line when it passed; the reason (possibly several lines) when it failed.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            if self.passed { "ok  " } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

pub fn check(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            passed: true,
            detail,
        },
        Err(detail) => Check {
            name,
            passed: false,
            detail,
        },
    }
}

pub(crate) fn tail_of(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    qemu::tail(&t.lines().map(String::from).collect::<Vec<_>>(), n)
}

/// `lifeboat receive`: exit 0 (complete) and the verdict line in its console output.
pub fn receive(lifeboat_host: &Path, dir: &Path) -> Result<String, String> {
    let p = |n: &str| dir.join(n);
    let mut c = qemu::receive_command(lifeboat_host, dir);
    c.arg("--quiet");
    let fin = run_with_timeout(
        c,
        None,
        &p("receive.stdout"),
        &p("receive.stderr"),
        Duration::from_secs(600),
    )?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`lifeboat receive` {} (0 = complete, 1 = incomplete, 2 = error); its output:\n{}{}",
            if fin.timed_out {
                "timed out".into()
            } else {
                format!("exited {:?}", fin.code())
            },
            tail_of(&p("receive.stdout"), 10),
            tail_of(&p("receive.stderr"), 15)
        ));
    }
    let console = std::fs::read_to_string(p("console.txt"))
        .map_err(|e| format!("`lifeboat receive` wrote no console.txt: {e}"))?;
    if !console
        .lines()
        .any(|l| l.trim_end() == "lifeboat: verdict: complete")
    {
        return Err("console.txt lacks \"lifeboat: verdict: complete\"".into());
    }
    let size = std::fs::metadata(p("vmcore")).map(|m| m.len()).unwrap_or(0);
    Ok(format!("exit 0, verdict complete, vmcore {size} bytes"))
}

/// `makedumpfile --dump-dmesg <vmcore> <dir>/dmesg.txt` finds the sysrq line.
pub fn makedumpfile_dmesg(tools: &HostTools, dir: &Path, vmcore: &Path) -> Result<String, String> {
    let out = dir.join("dmesg.txt");
    let _ = std::fs::remove_file(&out); // makedumpfile refuses to overwrite
    let mut c = tools.makedumpfile();
    c.arg("--dump-dmesg").arg(vmcore).arg(&out);
    let fin = run_with_timeout(
        c,
        None,
        &dir.join("makedumpfile.stdout"),
        &dir.join("makedumpfile.stderr"),
        Duration::from_secs(300),
    )?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`makedumpfile --dump-dmesg` exited {:?}:\n{}",
            fin.code(),
            tail_of(&dir.join("makedumpfile.stderr"), 10)
        ));
    }
    let text = std::fs::read(&out).map_err(|e| format!("no dmesg.txt: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    match text.lines().find(|l| l.contains(MARK_SYSRQ)) {
        Some(l) => Ok(format!(
            "{} log lines, found {:?}",
            text.lines().count(),
            l.trim()
        )),
        None => Err(format!(
            "dmesg.txt ({} lines) has no {MARK_SYSRQ:?}; its end:\n{}",
            text.lines().count(),
            tail_of(&out, 10)
        )),
    }
}

/// `crash -s vmlinux <dump>` with `bt`, `log`, `quit` on stdin: `bt` shows sysrq_handle_crash
/// and the log has the sysrq line. crash's warnings (e.g. 8.0.2's PID hash complaint on these
/// kernels) are not failures. Its output goes to `<dir>/<name>.stdout` and `.stderr`.
pub fn crash(
    tools: &HostTools,
    vmlinux: &Path,
    dir: &Path,
    dump: &Path,
    name: &str,
) -> Result<String, String> {
    let cmds = dir.join("crash.cmds");
    std::fs::write(&cmds, "bt\nlog\nquit\n").map_err(|e| e.to_string())?;
    let mut c = tools.crash();
    c.arg("-s").arg(vmlinux).arg(dump);
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    let fin = run_with_timeout(c, Some(&cmds), &stdout, &stderr, Duration::from_secs(600))?;
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let has_bt = out.contains("sysrq_handle_crash");
    let has_log = out.contains(MARK_SYSRQ);
    if fin.timed_out || !has_bt || !has_log {
        return Err(format!(
            "crash {} (exit {:?}); bt {} sysrq_handle_crash, log {} the sysrq line; stdout:\n{}stderr:\n{}",
            if fin.timed_out { "timed out" } else { "ran" },
            fin.code(),
            if has_bt { "shows" } else { "does NOT show" },
            if has_log { "has" } else { "does NOT have" },
            tail_of(&stdout, 20),
            tail_of(&stderr, 10)
        ));
    }
    let warnings = std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .lines()
        .chain(out.lines())
        .filter(|l| l.contains("WARNING"))
        .count();
    let frame = out
        .lines()
        .find(|l| l.contains("sysrq_handle_crash"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(format!(
        "bt: {frame:?}; log has the sysrq line; {warnings} crash warnings (not failures) in {:.0} s",
        fin.seconds
    ))
}

/// What the comparison with QEMU's memory view leaves out, and why.
#[derive(Clone, Debug)]
pub struct Exclusions {
    /// Pfn ranges, sorted: the crash reservation (QEMU sees the capture kernel there) and,
    /// for kexec-tools' kexec_load, the low 1 MiB (lifeboat dumps the purgatory's backup copy).
    pub pfns: Vec<Range<u64>>,
    pub why: Vec<String>,
}

impl Exclusions {
    fn contains(&self, pfn: u64) -> bool {
        self.pfns.iter().any(|r| r.contains(&pfn))
    }
}

/// Pfns of every page that holds at least one byte of `bytes` (sorted byte ranges).
pub fn pages_touching(bytes: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in bytes {
        let p = r.start / PAGE..r.end.div_ceil(PAGE);
        match out.last_mut() {
            Some(l) if l.end >= p.start => l.end = l.end.max(p.end),
            _ => out.push(p),
        }
    }
    out
}

/// What the dump must show for a page: QEMU's bytes where the guest kernel had System RAM,
/// zero elsewhere (a page that is only partly RAM, like 0x9f000 with the EBDA from 0x9fc00:
/// the crashed kernel's PT_LOAD ends mid-page and makedumpfile's readers zero-fill the rest).
/// Excluded pages and pages without any System RAM are not compared.
struct QemuView<'a> {
    mem: &'a GuestMemory,
    system_ram: &'a [Range<u64>],
    excl: &'a Exclusions,
    compared: std::cell::Cell<u64>,
    partial: std::cell::Cell<u64>,
    excluded: std::cell::Cell<u64>,
    not_in_qemu: std::cell::RefCell<Vec<u64>>,
    read_errors: std::cell::RefCell<Vec<String>>,
}

impl ExpectedMemory for QemuView<'_> {
    fn dump_page(&self, pfn: u64, out: &mut [u8; 4096]) -> bool {
        if self.excl.contains(pfn) {
            self.excluded.set(self.excluded.get() + 1);
            return false;
        }
        let page = pfn * PAGE..(pfn + 1) * PAGE;
        let ram: Vec<Range<u64>> = self
            .system_ram
            .iter()
            .filter(|r| r.start < page.end && page.start < r.end)
            .map(|r| r.start.max(page.start) - page.start..r.end.min(page.end) - page.start)
            .collect();
        if ram.is_empty() {
            return false; // not RAM to the guest: the coverage check reports it
        }
        match self.mem.read_page(pfn, out) {
            Ok(true) => {}
            Ok(false) => {
                self.not_in_qemu.borrow_mut().push(pfn);
                return false;
            }
            Err(e) => {
                self.read_errors.borrow_mut().push(e);
                return false;
            }
        }
        if ram.iter().map(|r| r.end - r.start).sum::<u64>() < PAGE {
            self.partial.set(self.partial.get() + 1);
            let mut masked = [0u8; 4096];
            for r in &ram {
                let r = r.start as usize..r.end as usize;
                masked[r.clone()].copy_from_slice(&out[r]);
            }
            *out = masked;
        }
        self.compared.set(self.compared.get() + 1);
        true
    }
}

/// Results of the comparison with QEMU's view (also used for the report).
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub qemu_ranges: String,
    pub dumped_ranges: String,
    pub pages_in_dump: u64,
    pub compared: u64,
    /// Pages only partly System RAM, compared within it (zero elsewhere).
    pub partial: u64,
    pub excluded: u64,
    pub zero_pages: u64,
    /// QEMU RAM pages (outside the exclusions and the low 1 MiB) not in lifeboat's bitmap.
    pub not_dumped: u64,
    pub not_dumped_ranges: String,
}

/// Byte-exact comparison of every page lifeboat dumped with QEMU's view (through
/// `verify::verify_kdump`, which also checks the file's structure, the shared zero page, the
/// 2nd bitmap, page descriptors and the header), plus a count of QEMU RAM not dumped. `exp`
/// is what the header must say ([`DumpLayout::expectations_for`] the scenario's CPUs, release
/// and architecture).
pub fn compare_with_qemu(
    vmcore: &[u8],
    layout: &DumpLayout,
    mem: &GuestMemory,
    system_ram: &[Range<u64>],
    excl: &Exclusions,
    exp: &verify::Expectations,
) -> Result<Comparison, String> {
    let view = QemuView {
        mem,
        system_ram,
        excl,
        compared: Default::default(),
        partial: Default::default(),
        excluded: Default::default(),
        not_in_qemu: Default::default(),
        read_errors: Default::default(),
    };
    let result = verify::verify_kdump(vmcore, exp, &view);
    let mut c = Comparison {
        qemu_ranges: describe_pfn_ranges(&mem.ram_pfns(), 8),
        dumped_ranges: describe_pfn_ranges(&layout.bitmap_pfns, 8),
        compared: view.compared.get(),
        partial: view.partial.get(),
        excluded: view.excluded.get(),
        ..Default::default()
    };
    let mut skip = excl.pfns.clone();
    skip.push(0..(1 << 20) / PAGE);
    skip.sort_by_key(|r| r.start);
    let qemu_ram = subtract(&mem.ram_pfns(), &skip);
    let missing = subtract(&qemu_ram, &layout.bitmap_pfns);
    c.not_dumped = missing.iter().map(|r| r.end - r.start).sum();
    c.not_dumped_ranges = describe_pfn_ranges(&missing, 6);
    let mut problems = Vec::new();
    if let Some(e) = view.read_errors.borrow().first() {
        problems.push(format!(
            "{} errors reading QEMU's memory file, first: {e}",
            view.read_errors.borrow().len()
        ));
    }
    let outside = view.not_in_qemu.borrow();
    if !outside.is_empty() {
        problems.push(format!(
            "{} dumped pages of guest System RAM are not in QEMU's memory dump: {}",
            outside.len(),
            describe_pfn_ranges(&pfn_list_ranges(&outside), 10)
        ));
    }
    match result {
        Ok(stats) => {
            c.pages_in_dump = stats.pages;
            c.zero_pages = stats.zero_pages;
        }
        Err(f) => problems.push(f.to_string()),
    }
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems.join("\n"))
    }
}

fn pfn_list_ranges(pfns: &[u64]) -> Vec<Range<u64>> {
    let mut v = pfns.to_vec();
    v.sort_unstable();
    let mut out: Vec<Range<u64>> = Vec::new();
    for p in v {
        match out.last_mut() {
            Some(r) if r.end == p => r.end += 1,
            Some(r) if r.end > p => {}
            _ => out.push(p..p + 1),
        }
    }
    out
}

/// The dump's 1st bitmap holds exactly the guest's System RAM pages (by the guest's own
/// /proc/iomem, a page counts if any byte of it is RAM), minus `not_expected` (the
/// reservation; for kexec_file_load also the low 1 MiB, which the kernel leaves out).
pub fn ram_coverage(
    layout: &DumpLayout,
    system_ram: &[Range<u64>],
    not_expected: &[Range<u64>],
) -> Result<String, String> {
    let mut skip = not_expected.to_vec();
    skip.sort_by_key(|r| r.start);
    let want = subtract(&pages_touching(system_ram), &skip);
    let missing = subtract(&want, &layout.bitmap_pfns);
    let extra = subtract(
        &subtract(&layout.bitmap_pfns, &pages_touching(system_ram)),
        &[],
    );
    let count = |v: &[Range<u64>]| v.iter().map(|r| r.end - r.start).sum::<u64>();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} System RAM pages are not in the dump: {}",
            count(&missing),
            describe_pfn_ranges(&missing, 10)
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{} pages in the dump are not System RAM: {}",
            count(&extra),
            describe_pfn_ranges(&extra, 10)
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "the dump has all {} System RAM pages outside the excluded ranges, and nothing else",
            count(&want)
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// Text lines of a serial capture that also holds binary frames: every printable line before
/// the first frame (the crashed kernel, /init), then the `lifeboat: …` lines.
pub fn console_text(serial: &[u8]) -> Vec<String> {
    let first_frame = super::guest::find(serial, b"\0LBF").unwrap_or(serial.len());
    // Complete lines before the first frame; a line the frame cut off is read below.
    let head_end = serial[..first_frame]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let printable = |b: &u8| *b == b'\t' || *b == b'\r' || (0x20..0x7f).contains(b);
    let mut out: Vec<String> = serial[..head_end]
        .split(|&b| b == b'\n')
        .filter(|l| l.iter().all(printable))
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    out.extend(crate::qemu::console_lines(&serial[head_end..]));
    out
}

/// The kernel log a host tool stored from the capture kernel's LOG frames (`streamed`:
/// `lifeboat receive`'s `vmcore.dmesg.txt`, `lifeboat serve`'s `dmesg.txt`) is byte for byte
/// what `makedumpfile --dump-dmesg` extracts from the dump that came with it (`vmcore`).
/// makedumpfile's output goes to `<dir>/<reference>`. Returns a one-line summary.
pub fn streamed_dmesg_matches_makedumpfile(
    tools: &HostTools,
    dir: &Path,
    vmcore: &Path,
    streamed: &Path,
    reference: &str,
) -> Result<String, String> {
    let ours = std::fs::read(streamed).map_err(|e| {
        format!(
            "no kernel log from the LOG frames ({}): {e}",
            streamed.display()
        )
    })?;
    let out = dir.join(reference);
    let _ = std::fs::remove_file(&out); // makedumpfile refuses to overwrite
    let mut c = tools.makedumpfile();
    c.arg("--dump-dmesg").arg(vmcore).arg(&out);
    let stem = reference.trim_end_matches(".txt");
    let (so, se) = (
        dir.join(format!("{stem}.stdout")),
        dir.join(format!("{stem}.stderr")),
    );
    let fin = run_with_timeout(c, None, &so, &se, Duration::from_secs(300))?;
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`makedumpfile --dump-dmesg` exited {:?}:\n{}",
            fin.code(),
            tail_of(&se, 10)
        ));
    }
    let theirs = std::fs::read(&out).map_err(|e| format!("makedumpfile wrote nothing: {e}"))?;
    if ours != theirs {
        return Err(crate::scenario::first_difference(
            &format!("the streamed log {}", streamed.display()),
            &ours,
            "makedumpfile --dump-dmesg of the same vmcore",
            &theirs,
        ));
    }
    let name = streamed.file_name().unwrap_or_default().to_string_lossy();
    Ok(format!(
        "{name} (from the LOG frames, {} bytes, {} lines) = makedumpfile --dump-dmesg",
        ours.len(),
        ours.iter().filter(|&&b| b == b'\n').count()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_text_skips_frames() {
        let mut s =
            b"[    1.0] Linux version 6.1\r\ne2e: loaded\r\nlifeboat: start\r\nlifeboat: cu"
                .to_vec();
        s.extend_from_slice(b"\x00LBF\x01\x01garbage\xffmore\n$\nD`X\n");
        s.extend_from_slice(
            b"\x00LBF\x02\x01\x07lifeboat: 50% done\r\nlifeboat: verdict: complete\r\n",
        );
        assert_eq!(
            console_text(&s),
            [
                "[    1.0] Linux version 6.1",
                "e2e: loaded",
                "lifeboat: start",
                "lifeboat: cu",
                "lifeboat: 50% done",
                "lifeboat: verdict: complete"
            ]
        );
    }

    /// pfns 0x100..0x108: even ones zero, odd ones filled with the pfn's low byte.
    struct Mem;
    impl ExpectedMemory for Mem {
        fn dump_page(&self, pfn: u64, out: &mut [u8; 4096]) -> bool {
            out.fill(if pfn % 2 == 1 { pfn as u8 } else { 0 });
            (0x100..0x108).contains(&pfn)
        }
    }

    /// QEMU's view: pfns 0x100..0x10a (two more than the dump has), optionally changed.
    fn qemu_view(change: impl Fn(&mut [u8])) -> (std::path::PathBuf, GuestMemory) {
        let mut ram = vec![0u8; 10 * 4096];
        for (i, page) in ram.chunks_mut(4096).enumerate() {
            Mem.dump_page(0x100 + i as u64, page.try_into().unwrap());
        }
        change(&mut ram);
        let path = std::env::temp_dir().join(format!(
            "e2e-compare-{}-{:?}.elf",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(
            &path,
            crate::e2e::guest_memory::test_elf(&[(0x100000, &ram)]),
        )
        .unwrap();
        let m = GuestMemory::open(&path).unwrap();
        (path, m)
    }

    #[allow(clippy::single_range_in_vec_init)]
    fn compare(change: impl Fn(&mut [u8]), excl: Vec<Range<u64>>) -> Result<Comparison, String> {
        compare_ram(change, excl, &[0x100000..0x10a000])
    }

    #[allow(clippy::single_range_in_vec_init)]
    fn compare_ram(
        change: impl Fn(&mut [u8]),
        excl: Vec<Range<u64>>,
        system_ram: &[Range<u64>],
    ) -> Result<Comparison, String> {
        let mut d = crate::verify::testdump::TestDump::new(vec![0x100..0x108]);
        d.notes = crate::synth::elf_note("CORE", 1, &[0; 336]);
        d.notes.extend(crate::synth::elf_note("CORE", 1, &[0; 336]));
        let vmcore = d.build(&Mem);
        let layout = DumpLayout::read(&vmcore).unwrap();
        let (path, mem) = qemu_view(change);
        let excl = Exclusions {
            pfns: excl,
            why: vec![],
        };
        let r = compare_with_qemu(
            &vmcore,
            &layout,
            &mem,
            system_ram,
            &excl,
            &layout.expectations_for(2, crate::synth::OSRELEASE, "x86_64"),
        );
        std::fs::remove_file(path).unwrap();
        r
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn comparison_with_qemu_finds_every_kind_of_difference() {
        let c = compare(|_| {}, vec![]).unwrap();
        assert_eq!((c.pages_in_dump, c.zero_pages, c.compared), (8, 4, 8));
        assert_eq!(c.not_dumped, 2);
        assert_eq!(c.not_dumped_ranges, "0x108000-0x109fff");
        // a changed byte in a data page
        let e = compare(|ram| ram[3 * 4096 + 17] ^= 1, vec![]).unwrap_err();
        assert!(
            e.contains("pa 0x103000: 1 of 4096 bytes differ, first at +0x11"),
            "{e}"
        );
        // a page the dump has as zero is not zero in QEMU's view
        let e = compare(|ram| ram[4 * 4096] = 1, vec![]).unwrap_err();
        assert!(
            e.contains("pa 0x104000: dump has the shared zero page"),
            "{e}"
        );
        // excluded pages are not compared
        let c = compare(|ram| ram[3 * 4096] ^= 1, vec![0x103..0x104]).unwrap();
        assert_eq!((c.compared, c.excluded), (7, 1));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn partly_ram_pages_are_compared_within_ram() {
        // pfn 0x106 is a zero page in the dump; QEMU has a byte at 0x106c00, where RAM ends
        // (like the EBDA at 0x9fc00).
        let ebda = |ram: &mut [u8]| ram[6 * 4096 + 0xc00] = 0x55;
        let e = compare(ebda, vec![]).unwrap_err();
        assert!(
            e.contains("pa 0x106000: dump has the shared zero page"),
            "{e}"
        );
        let ram = [0x100000..0x106c00, 0x107000..0x10a000];
        let c = compare_ram(ebda, vec![], &ram).unwrap();
        assert_eq!((c.compared, c.partial), (8, 1));
        // but a difference inside the RAM part still counts
        let e = compare_ram(|r| r[6 * 4096 + 0xbff] = 1, vec![], &ram).unwrap_err();
        assert!(e.contains("pa 0x106000"), "{e}");
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn ram_coverage_both_ways() {
        let mut d = crate::verify::testdump::TestDump::new(vec![0x1..0xa0, 0x100..0x108]);
        d.notes = crate::synth::elf_note("CORE", 1, &[0; 336]);
        let layout = DumpLayout::read(&d.build(&Everything)).unwrap();
        let ram = [0x1000..0x9fc00, 0x100000..0x10a000];
        let e = ram_coverage(&layout, &ram, &[]).unwrap_err();
        assert_eq!(
            e,
            "2 System RAM pages are not in the dump: 0x108000-0x109fff"
        );
        assert!(ram_coverage(&layout, &ram, &[0x108..0x10a]).is_ok());
        let e = ram_coverage(&layout, &[0x100000..0x10a000], &[0x108..0x10a]).unwrap_err();
        assert!(
            e.contains("159 pages in the dump are not System RAM: 0x1000-0x9ffff"),
            "{e}"
        );
    }
    struct Everything;
    impl ExpectedMemory for Everything {
        fn dump_page(&self, _: u64, out: &mut [u8; 4096]) -> bool {
            out.fill(0);
            true
        }
    }

    #[test]
    fn check_display() {
        assert_eq!(check("x", Ok("fine".into())).to_string(), "ok   x: fine");
        assert!(!check("x", Err("bad".into())).passed);
    }
}
