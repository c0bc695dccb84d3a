//! The scenarios of `cargo xtask qemu`: what each one boots and what it requires.
//!
//! Each architecture runs its own list ([`for_arch`]): aarch64 runs every scenario but the
//! bounded-memory ones (their sparse machine follows QEMU pc's RAM layout), under the same
//! names, in `<work_dir>/aarch64/<name>/`, shown as `aarch64/<name>`, plus its own: the
//! virtio-blk-pci disk and crashed kernels with 16 and 64 KiB pages ([`Kind::page_size`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::qemu::{self, QemuBoot};
use crate::synth::{self, Phdr, SynthImage, SynthSpec};
use crate::verify::{self, Expectations};
use crate::{Arch, SuiteConfig};

const MIB: u64 = 1 << 20;

/// How the elfcorehdr address is written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineForm {
    /// `elfcorehdr=0x<hex>` (kexec_file).
    Hex,
    /// `elfcorehdr=<n>K` (kexec-tools).
    KiB,
    /// `elfcorehdr=0x<size>@0x<addr>`.
    SizeAt(u64),
}

impl CmdlineForm {
    pub fn arg(self, addr: u64) -> String {
        match self {
            CmdlineForm::Hex => format!("elfcorehdr={addr:#x}"),
            CmdlineForm::KiB => {
                assert_eq!(
                    addr % 1024,
                    0,
                    "the K form needs a 1 KiB aligned elfcorehdr"
                );
                format!("elfcorehdr={}K", addr / 1024)
            }
            CmdlineForm::SizeAt(size) => format!("elfcorehdr={size:#x}@{addr:#x}"),
        }
    }
}

/// The full kernel command line for an elfcorehdr at `addr`.
pub fn cmdline(form: CmdlineForm, addr: u64) -> String {
    format!(
        "{} lifeboat.exit_port=0xf4 lifeboat.action=halt lifeboat.sink=serial",
        form.arg(addr)
    )
}

/// A broken elfcorehdr and what the kernel must say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    BadMagic,
    Truncated,
    Overlap,
    OutsideRam,
    AbsurdSize,
    TooManyPhdrs,
}

impl Mutation {
    /// Case-insensitive fragment the console must contain.
    pub fn expected_message(self) -> &'static str {
        match self {
            Mutation::BadMagic => "no elf header",
            Mutation::Truncated => "truncated",
            Mutation::Overlap => "overlaps",
            Mutation::OutsideRam => "outside ram",
            Mutation::AbsurdSize => "absurd",
            Mutation::TooManyPhdrs => "too many program headers",
        }
    }

    pub fn spec(self, arch: Arch, seed: u64) -> SynthSpec {
        let mut spec = SynthSpec::new_for(arch, seed, 8 * MIB);
        if self == Mutation::Truncated {
            // 2 CPU notes + VMCOREINFO + text + 80 RAM ranges: 64 + 84 * 56 = 4768 bytes > 4096.
            spec.ram_ranges = 80;
        }
        spec
    }

    pub fn cmdline_form(self) -> CmdlineForm {
        match self {
            Mutation::Truncated => CmdlineForm::SizeAt(0x1000),
            _ => CmdlineForm::Hex,
        }
    }

    /// Break the image's elfcorehdr.
    pub fn apply(self, image: &mut SynthImage) {
        // The first RAM PT_LOAD (x86_64: the backup range) after the notes and the text view.
        let first_ram = image.cpu_notes.len() + usize::from(image.vmcoreinfo_note.is_some()) + 1;
        let arch = image.arch();
        let phdrs = &mut image.header.phdrs;
        let set_range = |p: &mut Phdr, paddr: u64, len: u64| {
            p.p_paddr = paddr;
            p.p_offset = paddr;
            p.p_vaddr = synth::linear_vaddr(arch, paddr);
            p.p_filesz = len;
            p.p_memsz = len;
        };
        match self {
            Mutation::BadMagic => image.header.ident_magic = *b"LBOT",
            Mutation::Truncated => {}
            Mutation::Overlap => {
                // RAM range 2 now starts two pages before RAM range 1 ends.
                let a = phdrs[first_ram + 1];
                let b = phdrs[first_ram + 2];
                let start = a.p_paddr + a.p_memsz - 2 * synth::PAGE_SIZE;
                set_range(
                    &mut phdrs[first_ram + 2],
                    start,
                    b.p_paddr + b.p_memsz - start,
                );
            }
            Mutation::OutsideRam => {
                let last = phdrs.len() - 1;
                let len = phdrs[last].p_memsz;
                set_range(&mut phdrs[last], 8 << 30, len);
            }
            Mutation::AbsurdSize => {
                let p = &mut phdrs[first_ram + 1];
                p.p_filesz = 1 << 60;
                p.p_memsz = 1 << 60;
            }
            Mutation::TooManyPhdrs => image.header.e_phnum_override = Some(60000),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// A dump that must complete and match the synthetic memory byte for byte.
    Dump {
        mib: u64,
        form: CmdlineForm,
        with_vmcoreinfo: bool,
        /// A console fragment that must appear (case-insensitive).
        must_say: Option<&'static str>,
        /// The crashed kernel's page size ([`Kind::page_size`]).
        page_size: u64,
        /// aarch64: QEMU enters the image at EL2 (`-machine virtualization=on`, as firmware
        /// and kexec do on hosts that can run VMs), not EL1; the kernel must drop to EL1 and
        /// say which level it was entered at.
        el2: bool,
    },
    /// A broken elfcorehdr the kernel must refuse.
    Malformed(Mutation),
    /// The disk and network sinks (`crate::sinks`).
    Sink(crate::sinks::SinkCase),
    /// The capture kernel's memory does not grow with the crashed machine's RAM: the same
    /// image captures a sparse `small_gib` GiB machine and a sparse `big_gib` GiB machine
    /// ([`synth::Shape::Sparse`]) to a virtio-blk disk, both byte-exact, and the heap peak
    /// of the big capture is at most [`HEAP_SLACK_KIB`] above the small one's.
    ///
    /// `big_cover_gib`: the big machine's PT_LOADs cover only about this much of its RAM
    /// ([`SynthSpec::sparse_cover`]): still spread up to the top of its RAM, so `max_mapnr`
    /// and both bitmaps are those of the whole machine, but with fewer pages to read and
    /// describe. `None`: every page of it (about 9 minutes under TCG for 64 GiB, so such a
    /// scenario only runs when a filter names it: [`Scenario::on_request_only`]).
    BoundedMemory {
        small_gib: u64,
        big_gib: u64,
        big_cover_gib: Option<u64>,
    },
}

impl Kind {
    /// The crashed kernel's page size: its VMCOREINFO `PAGESIZE`, and so the dump's block
    /// size, pfns, bitmaps and unit of compression. 4 KiB but in the arm64 scenarios that
    /// ask for 16 or 64 KiB ([`Scenario::runs_on`]); the capture kernel's own pages are 4 KiB
    /// whatever this is.
    pub fn page_size(&self) -> u64 {
        match *self {
            Kind::Dump { page_size, .. }
            | Kind::Sink(crate::sinks::SinkCase::Blk { page_size, .. }) => page_size,
            _ => synth::PAGE_SIZE,
        }
    }
}

/// How much more heap (KiB) the big capture of [`Kind::BoundedMemory`] may peak at. Both
/// captures have the same shape (as many PT_LOADs, notes and content windows, the same
/// sink), so what may legitimately differ is a few bytes of longer numbers in formatted
/// strings and the allocator's placement of them: 8 KiB is plenty. Anything that grows with
/// RAM does not fit in it: one bit per pfn up to `max_mapnr` is 2 MiB more at 64 GiB (the
/// whole heap), one bit per dumped page is 224 KiB more for the 7 GiB more that even the
/// sampled capture dumps, and one more record buffer (`MAX_CHUNK`, 16 KiB) is twice the slack.
pub const HEAP_SLACK_KIB: u64 = 8;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    pub timeout: Duration,
    pub kind: Kind,
}

/// Every scenario of every architecture, in the order they run ([`for_arch`] picks one
/// architecture's).
pub fn all() -> Vec<Scenario> {
    let dump = |name, seed, secs, mib, form, with_vmcoreinfo, must_say| Scenario {
        name,
        seed,
        timeout: Duration::from_secs(secs),
        kind: Kind::Dump {
            mib,
            form,
            with_vmcoreinfo,
            must_say,
            page_size: synth::PAGE_SIZE,
            el2: false,
        },
    };
    // A crashed arm64 kernel with pages of `kib` KiB, dumped over the serial line (by a
    // capture kernel entered at EL2 when `el2`).
    let paged = |name, seed, secs, mib, kib: u64, el2| Scenario {
        name,
        seed,
        timeout: Duration::from_secs(secs),
        kind: Kind::Dump {
            mib,
            form: CmdlineForm::Hex,
            with_vmcoreinfo: true,
            must_say: None,
            page_size: kib << 10,
            el2,
        },
    };
    let bad = |name, seed, m| Scenario {
        name,
        seed,
        timeout: Duration::from_secs(60),
        kind: Kind::Malformed(m),
    };
    let sink = |name, seed, secs, case| Scenario {
        name,
        seed,
        timeout: Duration::from_secs(secs),
        kind: Kind::Sink(case),
    };
    use crate::sinks::SinkCase;
    vec![
        dump("serial-256m", 0x256, 600, 256, CmdlineForm::Hex, true, None),
        dump("serial-kform", 0x24, 60, 24, CmdlineForm::KiB, true, None),
        dump(
            "missing-vmcoreinfo",
            0x7,
            60,
            16,
            CmdlineForm::SizeAt(synth::ELFCOREHDR_ROOM),
            false,
            Some("no vmcoreinfo"),
        ),
        paged("serial-16k", 0x16c, 120, 64, 16, false),
        paged("serial-64k", 0x64c, 120, 64, 64, true),
        bad("malformed-bad-magic", 1, Mutation::BadMagic),
        bad("malformed-truncated", 2, Mutation::Truncated),
        bad("malformed-overlap", 3, Mutation::Overlap),
        bad("malformed-outside-ram", 4, Mutation::OutsideRam),
        bad("malformed-absurd-size", 5, Mutation::AbsurdSize),
        bad("malformed-too-many-phdrs", 6, Mutation::TooManyPhdrs),
        sink(
            "blk-256m",
            0xb1c,
            600,
            SinkCase::Blk {
                mib: 256,
                page_size: synth::PAGE_SIZE,
            },
        ),
        sink(
            "blk-64k",
            0xb64,
            150,
            SinkCase::Blk {
                mib: 128,
                page_size: 64 << 10,
            },
        ),
        sink("blk-pci-64m", 0xb1d, 300, SinkCase::BlkPci { mib: 64 }),
        sink("blk-too-small", 0xb15, 180, SinkCase::BlkTooSmall),
        sink("net-256m", 0x4e7, 600, SinkCase::Net { mib: 256 }),
        sink("sink-fallback", 0xfa11, 300, SinkCase::Fallback),
        sink(
            "net-server-restart",
            0x4e57,
            600,
            SinkCase::NetServerRestart,
        ),
        sink(
            "net-server-disk-full",
            0xf011,
            300,
            SinkCase::NetServerDiskFull,
        ),
        sink("net-four-clients", 0x4c1, 900, SinkCase::NetFourClients),
        Scenario {
            name: "bounded-memory-64g-sampled",
            seed: 0x64b0,
            timeout: Duration::from_secs(600),
            kind: Kind::BoundedMemory {
                small_gib: 1,
                big_gib: 64,
                big_cover_gib: Some(8),
            },
        },
        Scenario {
            name: "bounded-memory-64g-full",
            seed: 0x64b0,
            timeout: Duration::from_secs(1800),
            kind: Kind::BoundedMemory {
                small_gib: 1,
                big_gib: 64,
                big_cover_gib: None,
            },
        },
    ]
}

/// How much longer an aarch64 scenario may take than the x86_64 one (both are TCG; QEMU's
/// arm64 `-cpu max` is the slower guest).
pub const AARCH64_TIMEOUT_FACTOR: u32 = 2;

/// The scenarios of `arch`, in the order they run, with that architecture's timeouts.
pub fn for_arch(arch: Arch) -> Vec<Scenario> {
    all()
        .into_iter()
        .filter(|s| s.runs_on(arch))
        .map(|mut s| {
            if arch == Arch::Aarch64 {
                s.timeout *= AARCH64_TIMEOUT_FACTOR;
            }
            s
        })
        .collect()
}

impl Scenario {
    /// Too slow for every run, or waiting for the kernel to support it: only when
    /// `cargo xtask qemu --filter …` names it.
    ///
    /// `blk-pci-64m` (aarch64 only): with QEMU's direct `-kernel` boot no firmware and no
    /// crashed kernel assigned the disk's BARs, and lifeboat uses BARs as it finds them and
    /// assigns none, so the capture kernel refuses the disk ("its BAR 4 has no address").
    /// virtio-pci over ECAM is tested by the arm64 e2e captures (`blk-1g`, `net-1g`), where
    /// the crashed Linux assigned them.
    pub fn on_request_only(&self) -> bool {
        matches!(
            self.kind,
            Kind::BoundedMemory {
                big_cover_gib: None,
                ..
            } | Kind::Sink(crate::sinks::SinkCase::BlkPci { .. })
        )
    }

    /// Whether the scenario exists for `arch`. The bounded-memory captures lay out a sparse
    /// machine the way QEMU pc places RAM (x86_64 only); the virtio-blk-pci disk is a separate
    /// scenario only on aarch64, where the other disks are virtio-mmio; crashed kernels with
    /// pages other than 4 KiB exist only on arm64.
    pub fn runs_on(&self, arch: Arch) -> bool {
        if self.kind.page_size() != synth::PAGE_SIZE {
            return arch == Arch::Aarch64;
        }
        match self.kind {
            Kind::BoundedMemory { .. } => arch == Arch::X86_64,
            Kind::Sink(crate::sinks::SinkCase::BlkPci { .. }) => arch == Arch::Aarch64,
            _ => true,
        }
    }

    /// The synthetic crashed machine of this scenario on `arch`: `mib` MiB of RAM, the
    /// scenario's seed and the crashed kernel's page size ([`Kind::page_size`]).
    pub fn spec(&self, arch: Arch, mib: u64) -> SynthSpec {
        SynthSpec::with_page_size(arch, self.seed, mib * MIB, self.kind.page_size())
    }
}

/// Outcome of one scenario.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    pub name: String,
    pub passed: bool,
    pub seconds: f64,
    /// Numbers and facts worth printing (also on success).
    pub details: Vec<String>,
    /// Why it failed, with the console tail.
    pub failure: Option<String>,
}

/// A scenario failure: the reason plus whatever context was gathered.
pub struct Failed(pub String);

impl<T: std::fmt::Display> From<T> for Failed {
    fn from(s: T) -> Self {
        Failed(s.to_string())
    }
}

pub fn run(s: &Scenario, cfg: &SuiteConfig) -> ScenarioReport {
    let start = std::time::Instant::now();
    let label = cfg.arch.scenario_label(s.name);
    let dir = cfg.work_dir.join(&label);
    let mut details = Vec::new();
    let mut console = Vec::new();
    let result = prepare_dir(&dir).and_then(|_| match &s.kind {
        Kind::Dump { .. } => run_dump(s, cfg, &dir, &mut details, &mut console),
        Kind::Malformed(m) => run_malformed(s, *m, cfg, &dir, &mut details, &mut console),
        Kind::Sink(case) => crate::sinks::run(*case, s, cfg, &dir, &mut details, &mut console),
        Kind::BoundedMemory {
            small_gib,
            big_gib,
            big_cover_gib,
        } => run_bounded(
            s,
            (*small_gib, *big_gib, *big_cover_gib),
            cfg,
            &dir,
            &mut details,
            &mut console,
        ),
    });
    let failure = result.err().map(|Failed(reason)| {
        let mut f = format!("scenario {label} failed: {reason}\n");
        f.push_str(&format!("  files: {}\n", dir.display()));
        if console.is_empty() {
            f.push_str("  no console lines (\"lifeboat: …\") in serial.bin\n");
        } else {
            f.push_str(&format!(
                "  last {} console lines:\n",
                console.len().min(30)
            ));
            f.push_str(&qemu::tail(&console, 30));
        }
        if let Ok(err) = std::fs::read_to_string(dir.join("qemu.stderr")) {
            if !err.trim().is_empty() {
                f.push_str(&format!(
                    "  qemu stderr:\n{}",
                    qemu::tail(&err.lines().map(String::from).collect::<Vec<_>>(), 10)
                ));
            }
        }
        f
    });
    if cfg.verbose && failure.is_none() {
        details.push(format!(
            "console ({} lines):\n{}",
            console.len(),
            qemu::tail(&console, usize::MAX)
        ));
    }
    ScenarioReport {
        name: label,
        passed: failure.is_none(),
        seconds: start.elapsed().as_secs_f64(),
        details,
        failure,
    }
}

fn prepare_dir(dir: &Path) -> Result<(), Failed> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(())
}

/// Boot QEMU; returns the console lines and the serial size.
fn boot(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    image: &SynthImage,
    cmdline: &str,
    console: &mut Vec<String>,
    details: &mut Vec<String>,
) -> Result<(qemu::Finished, u64), Failed> {
    boot_with(s, cfg, dir, image, cmdline, &[], console, details)
}

/// [`boot`] with more QEMU arguments (disks, network cards).
#[allow(clippy::too_many_arguments)]
pub(crate) fn boot_with(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    image: &SynthImage,
    cmdline: &str,
    extra: &[String],
    console: &mut Vec<String>,
    details: &mut Vec<String>,
) -> Result<(qemu::Finished, u64), Failed> {
    let blobs = image
        .write_blobs(&dir.join("mem"))
        .map_err(|e| format!("writing synthetic memory: {e}"))?;
    let b = QemuBoot {
        arch: cfg.arch,
        capture_elf: &cfg.capture_elf,
        dir,
        cmdline,
        blobs: &blobs,
        extra,
        timeout: s.timeout,
    };
    if cfg.verbose {
        details.push(format!("qemu: {:?}", b.command()));
    }
    let fin = b.run()?;
    let serial = std::fs::read(b.serial_path()).unwrap_or_default();
    *console = qemu::console_lines(&serial);
    details.push(format!(
        "qemu: {} after {:.1} s, {} serial bytes",
        qemu::describe_qemu_exit(&fin, s.timeout),
        fin.seconds,
        serial.len()
    ));
    Ok((fin, serial.len() as u64))
}

fn run_dump(
    s: &Scenario,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let Kind::Dump {
        mib,
        form,
        with_vmcoreinfo,
        must_say,
        el2,
        ..
    } = s.kind
    else {
        unreachable!()
    };
    let mut spec = s.spec(cfg.arch, mib);
    spec.with_vmcoreinfo = with_vmcoreinfo;
    let image = SynthImage::generate(&spec)?;
    let cmdline = cmdline(form, image.elfcorehdr_addr);
    details.push(format!("cmdline: {cmdline}"));
    details.push(format!(
        "synthetic memory: {} MiB in {} RAM ranges (+ kernel text view), {} KiB pages (PAGESIZE), max pfn {:#x}, phys_base {:#x}",
        mib,
        image.ranges.len(),
        image.page_size() >> 10,
        image.max_mapnr() - 1,
        image.phys_base
    ));
    let extra: Vec<String> = match el2 {
        true => vec!["-machine".into(), "virtualization=on".into()],
        false => vec![],
    };
    let (fin, serial_bytes) = boot_with(s, cfg, dir, &image, &cmdline, &extra, console, details)?;
    if cfg.arch == Arch::Aarch64 {
        let level = if el2 { "at EL2" } else { "at EL1" };
        let want = format!("entered via arm64 Image boot protocol {level}");
        if !console.iter().any(|l| l.contains(&want)) {
            return Err(format!("no console line says the image was {want:?}").into());
        }
        details.push(format!("capture kernel {want}"));
    }
    if fin.timed_out || fin.code() != Some(1) {
        return Err(format!(
            "expected QEMU exit status 1 (dump complete), got {}",
            qemu::describe_qemu_exit(&fin, s.timeout)
        )
        .into());
    }
    match qemu::verdict(console) {
        Some("complete") => {}
        Some(v) => return Err(format!("verdict is {v:?}, expected exactly \"complete\"").into()),
        None => return Err("no \"lifeboat: verdict: …\" line on the console".into()),
    }
    if !console
        .iter()
        .any(|l| l.contains('%') && !l.starts_with("lifeboat: verdict:"))
    {
        return Err("no progress line with '%' on the console".into());
    }
    if let Some(frag) = must_say {
        if !console
            .iter()
            .any(|l| l.to_lowercase().contains(&frag.to_lowercase()))
        {
            return Err(format!("no console line contains {frag:?}").into());
        }
    }
    report_kernel_memory(console, &image, details)?;
    let dump = receive_and_rebuild(cfg, dir, details)?;

    let exp = Expectations::for_image(&image);
    let stats = verify::verify_kdump(&dump, &exp, &image).map_err(|f| f.to_string())?;
    let ram: u64 = image.ranges.iter().map(|r| r.len).sum();
    details.push(format!(
        "dump: {} pages of {} KiB ({} shared zero, {} zlib, {} raw), {} bytes of page data",
        stats.pages,
        stats.block_size >> 10,
        stats.zero_pages,
        stats.zlib_pages,
        stats.raw_pages,
        stats.page_data_bytes
    ));
    details.push(format!(
        "numbers: RAM covered {:.1} MiB, dump file {:.1} MiB, compression ratio {:.2}, serial {:.1} MiB, QEMU run {:.1} s, kernel says {}",
        ram as f64 / MIB as f64,
        stats.file_bytes as f64 / MIB as f64,
        ram as f64 / stats.file_bytes as f64,
        serial_bytes as f64 / MIB as f64,
        fin.seconds,
        qemu::kernel_throughput(console).unwrap_or_else(|| "no MB/s figure".into())
    ));
    details.push(format!(
        "header: utsname.release {:?}, machine {:?}, timestamp {} s, status {:#x}, notes {:?}",
        stats.release, stats.machine, stats.timestamp_sec, stats.status, stats.notes
    ));
    if !with_vmcoreinfo {
        details.push(format!(
            "utsname without VMCOREINFO: release {:?}, machine {:?}",
            stats.release, stats.machine
        ));
    }
    // The synthetic memory is large and reproducible from the seed: drop it after a pass.
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    let _ = std::fs::remove_file(dir.join("vmcore.R"));
    Ok(())
}

/// Every capture ends with the capture kernel's own memory use: its heap peak (the
/// compressor's buffers grow with the crashed kernel's page size), heap, page tables and
/// runtime memory go into the report, with that page size.
pub(crate) fn report_kernel_memory(
    console: &[String],
    image: &SynthImage,
    details: &mut Vec<String>,
) -> Result<qemu::KernelMemory, Failed> {
    let mem = qemu::kernel_memory(console).ok_or(
        "no \"heap peak … KiB of … KiB, page tables … KiB\" line (or no \"runtime memory\" line) on the console",
    )?;
    details.push(format!(
        "capture kernel memory: heap peak {} KiB of {} KiB, page tables {} KiB, runtime memory {} KiB (crashed kernel's pages: {} KiB)",
        mem.heap_peak_kib,
        mem.heap_kib,
        mem.page_tables_kib,
        mem.runtime_kib,
        image.page_size() >> 10
    ));
    Ok(mem)
}

/// Run `lifeboat receive`, then check the flattened stream with our own reader and with
/// makedumpfile -R; returns the kdump-compressed file.
fn receive_and_rebuild(
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
) -> Result<Vec<u8>, Failed> {
    let p = |n: &str| dir.join(n);
    let c = qemu::receive_command(&cfg.lifeboat_bin, dir);
    let fin = qemu::run_with_timeout(
        c,
        None,
        &p("receive.stdout"),
        &p("receive.stderr"),
        Duration::from_secs(300),
    )?;
    let stderr = std::fs::read_to_string(p("receive.stderr")).unwrap_or_default();
    if fin.timed_out || fin.code() != Some(0) {
        return Err(format!(
            "`lifeboat receive` {} (expected exit 0 = complete); its stderr:\n{}",
            if fin.timed_out {
                "timed out".to_string()
            } else {
                format!("exited {:?}", fin.code())
            },
            qemu::tail(&stderr.lines().map(String::from).collect::<Vec<_>>(), 15)
        )
        .into());
    }
    let received_console = std::fs::read_to_string(p("console.txt"))
        .map_err(|e| format!("receive wrote no console.txt: {e}"))?;
    if !received_console
        .lines()
        .any(|l| l.trim_end() == "lifeboat: verdict: complete")
    {
        return Err("console.txt from `lifeboat receive` lacks the verdict line".into());
    }
    let vmcore = std::fs::read(p("vmcore")).map_err(|e| format!("receive wrote no vmcore: {e}"))?;
    let flat = std::fs::read(p("vmcore.flat"))
        .map_err(|e| format!("receive wrote no vmcore.flat: {e}"))?;
    let (ours, sum) = crate::flat::rebuild(&flat).map_err(|e| format!("vmcore.flat: {e}"))?;
    if ours != vmcore {
        return Err(first_difference(
            "vmcore.flat rebuilt by qemu-tests",
            &ours,
            "vmcore from `lifeboat receive`",
            &vmcore,
        )
        .into());
    }
    details.push(format!(
        "flattened: {} records, {} payload bytes, {} bytes of stream",
        sum.records,
        sum.payload_bytes,
        flat.len()
    ));

    let out = p("vmcore.R");
    let _ = std::fs::remove_file(&out);
    let mut c = Command::new(qemu::makedumpfile_binary());
    c.arg("-R").arg(&out);
    let fin = qemu::run_with_timeout(
        c,
        Some(&p("vmcore.flat")),
        &p("makedumpfile.stdout"),
        &p("makedumpfile.stderr"),
        Duration::from_secs(300),
    )?;
    if fin.timed_out || fin.code() != Some(0) {
        let err = std::fs::read_to_string(p("makedumpfile.stderr")).unwrap_or_default();
        return Err(format!(
            "`makedumpfile -R` failed ({:?}): {}",
            fin.code(),
            err.trim()
        )
        .into());
    }
    let theirs = std::fs::read(&out).map_err(|e| format!("makedumpfile -R wrote no file: {e}"))?;
    if theirs != vmcore {
        return Err(first_difference(
            "makedumpfile -R output",
            &theirs,
            "vmcore from `lifeboat receive`",
            &vmcore,
        )
        .into());
    }
    Ok(vmcore)
}

pub fn first_difference(an: &str, a: &[u8], bn: &str, b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "{an} and {bn} differ first at byte {i:#x} ({} vs {} bytes long)",
            a.len(),
            b.len()
        ),
        None => format!(
            "{an} is {} bytes, {bn} is {} bytes (one is a prefix of the other)",
            a.len(),
            b.len()
        ),
    }
}

fn run_malformed(
    s: &Scenario,
    m: Mutation,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let mut image = SynthImage::generate(&m.spec(cfg.arch, s.seed))?;
    m.apply(&mut image);
    let cmdline = cmdline(m.cmdline_form(), image.elfcorehdr_addr);
    details.push(format!("cmdline: {cmdline}"));
    let (fin, _) = boot(s, cfg, dir, &image, &cmdline, console, details)?;
    if fin.timed_out || fin.code() != Some(5) {
        return Err(format!(
            "expected QEMU exit status 5 (failed before dumping), got {}",
            qemu::describe_qemu_exit(&fin, s.timeout)
        )
        .into());
    }
    let frag = m.expected_message();
    if !console
        .iter()
        .any(|l| l.to_lowercase().contains(&frag.to_lowercase()))
    {
        return Err(format!("no console line contains {frag:?}").into());
    }
    match qemu::verdict(console) {
        Some(v) if v.starts_with("failed") => {}
        Some(v) => return Err(format!("verdict is {v:?}, expected \"failed: …\"").into()),
        None => return Err("no \"lifeboat: verdict: …\" line on the console".into()),
    }
    let _ = std::fs::remove_dir_all(dir.join("mem"));
    Ok(())
}

/// The most page-table memory a capture may use whatever the RAM size: the PML4 and the
/// tables of the image and device window (a few frames), one PDPT per 512 GiB, and at most
/// `arch::x86_64::paging::OLD_PDS` (32) page directories of old memory at a time.
const PAGE_TABLES_BOUND_KIB: u64 = 32 * 4 + 64;

/// One capture of [`Kind::BoundedMemory`].
struct BoundedRun {
    gib: u64,
    mem: qemu::KernelMemory,
    qemu_seconds: f64,
    dump_bytes: u64,
    pages: u64,
    max_mapnr: u64,
}

fn run_bounded(
    s: &Scenario,
    (small_gib, big_gib, big_cover_gib): (u64, u64, Option<u64>),
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<(), Failed> {
    let small = bounded_capture(s, small_gib, None, cfg, dir, details, console)?;
    let big = bounded_capture(s, big_gib, big_cover_gib, cfg, dir, details, console)?;
    let (a, b) = (small.mem, big.mem);
    details.push(format!(
        "numbers: {} GiB vs {} GiB machine: max_mapnr {:#x} vs {:#x}, {} vs {} pages dumped, dump {:.1} vs {:.1} MiB, QEMU {:.1} vs {:.1} s",
        small.gib,
        big.gib,
        small.max_mapnr,
        big.max_mapnr,
        small.pages,
        big.pages,
        small.dump_bytes as f64 / MIB as f64,
        big.dump_bytes as f64 / MIB as f64,
        small.qemu_seconds,
        big.qemu_seconds
    ));
    details.push(format!(
        "capture kernel memory, {} GiB vs {} GiB: heap peak {} KiB vs {} KiB (of {} KiB, allowed +{HEAP_SLACK_KIB} KiB), page tables {} KiB vs {} KiB (at most {PAGE_TABLES_BOUND_KIB} KiB: 32 directories of old memory at a time, recycled), runtime memory {} KiB vs {} KiB (image {} KiB)",
        small.gib, big.gib, a.heap_peak_kib, b.heap_peak_kib, a.heap_kib, a.page_tables_kib, b.page_tables_kib,
        a.runtime_kib, b.runtime_kib, a.image_kib
    ));
    if (a.runtime_kib, a.image_kib, a.heap_kib) != (b.runtime_kib, b.image_kib, b.heap_kib) {
        return Err(format!(
            "the two captures did not run the same image: runtime memory {} vs {} KiB, image {} vs {} KiB, heap {} vs {} KiB",
            a.runtime_kib, b.runtime_kib, a.image_kib, b.image_kib, a.heap_kib, b.heap_kib
        )
        .into());
    }
    if b.page_tables_kib > PAGE_TABLES_BOUND_KIB {
        return Err(format!(
            "the {} GiB capture used {} KiB of page tables, more than the {PAGE_TABLES_BOUND_KIB} KiB bound: old-memory directories are not recycled",
            big.gib, b.page_tables_kib
        )
        .into());
    }
    if b.heap_peak_kib > a.heap_peak_kib + HEAP_SLACK_KIB {
        return Err(format!(
            "the heap grows with RAM: peak {} KiB for {} GiB but {} KiB for {} GiB (allowed: {HEAP_SLACK_KIB} KiB more)",
            a.heap_peak_kib, small.gib, b.heap_peak_kib, big.gib
        )
        .into());
    }
    Ok(())
}

/// Captures a sparse `gib` GiB machine to a virtio-blk disk in `<dir>/<gib>g/`, fetches and
/// checks the dump byte for byte, and returns what the kernel said about its memory.
fn bounded_capture(
    s: &Scenario,
    gib: u64,
    cover_gib: Option<u64>,
    cfg: &SuiteConfig,
    dir: &Path,
    details: &mut Vec<String>,
    console: &mut Vec<String>,
) -> Result<BoundedRun, Failed> {
    let guest_ram = gib << 30;
    let sub = dir.join(format!("{gib}g"));
    prepare_dir(&sub)?;
    let image = SynthImage::generate(&SynthSpec::sparse_covering(
        s.seed,
        guest_ram,
        cover_gib.map(|g| g << 30),
    ))?;
    let ram: u64 = image.ranges.iter().map(|r| r.len).sum();
    let pages = image
        .ranges
        .iter()
        .map(|r| r.pfns().end - r.pfns().start)
        .sum::<u64>();
    // Header, bitmaps, 24-byte descriptors, page data: below 1/128 of RAM plus the content.
    let disk_bytes = (64 * MIB + ram / 128 + image.content_bytes()).next_multiple_of(MIB);
    let disk = sub.join("dump.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(disk_bytes))
        .map_err(|e| format!("cannot create the sparse disk {}: {e}", disk.display()))?;
    let blobs = image
        .write_blobs(&sub.join("mem"))
        .map_err(|e| format!("writing synthetic memory: {e}"))?;
    let cmdline = format!(
        "elfcorehdr={:#x} lifeboat.exit_port=0xf4 lifeboat.action=halt lifeboat.sink=blk:serial=lbdump",
        image.elfcorehdr_addr
    );
    let extra = crate::sinks::disk_args(&disk, "d0", "lbdump");
    details.push(format!(
        "{gib} GiB: guest RAM {}, {} RAM PT_LOADs covering {} MiB up to {:#x} (max_mapnr {:#x}), {} MiB of generated content in {} windows, the rest zero; sparse disk {} MiB",
        synth::pc_ram_map(guest_ram)
            .iter()
            .map(|r| format!("[{:#x}-{:#x})", r.start, r.end))
            .collect::<Vec<_>>()
            .join(" "),
        image.ranges.len(),
        ram / MIB,
        image.max_mapnr() * synth::PAGE_SIZE,
        image.max_mapnr(),
        image.content_bytes() / MIB,
        image.windows.as_ref().map_or(0, |w| w.len()),
        disk_bytes / MIB
    ));
    let b = QemuBoot {
        arch: cfg.arch,
        capture_elf: &cfg.capture_elf,
        dir: &sub,
        cmdline: &cmdline,
        blobs: &blobs,
        extra: &extra,
        timeout: s.timeout,
    };
    if cfg.verbose {
        details.push(format!("qemu: {:?}", b.command_with_ram(guest_ram)));
    }
    let fin = b.run_with_ram(guest_ram)?;
    let serial = std::fs::read(b.serial_path()).unwrap_or_default();
    *console = qemu::console_lines(&serial);
    let _ = std::fs::remove_dir_all(sub.join("mem"));
    let failed = |why: String| {
        Failed(format!(
            "{gib} GiB capture: {why} (files in {})",
            sub.display()
        ))
    };
    if fin.timed_out || fin.code() != Some(1) {
        let err = std::fs::read_to_string(sub.join("qemu.stderr")).unwrap_or_default();
        return Err(failed(format!(
            "expected QEMU exit status 1 (dump complete), got {}; qemu stderr: {:?}",
            qemu::describe_qemu_exit(&fin, s.timeout),
            err.trim()
        )));
    }
    match qemu::verdict(console) {
        Some("complete") => {}
        Some(v) => {
            return Err(failed(format!(
                "verdict is {v:?}, expected exactly \"complete\""
            )))
        }
        None => {
            return Err(failed(
                "no \"lifeboat: verdict: …\" line on the console".into(),
            ))
        }
    }
    if !console
        .iter()
        .any(|l| l.contains("sink: virtio-blk at PCI"))
    {
        return Err(failed(
            "the console does not say the dump went to virtio-blk".into(),
        ));
    }
    let mem = qemu::kernel_memory(console).ok_or_else(|| {
        failed("no \"runtime memory\" line or no \"heap peak … KiB of … KiB, page tables … KiB\" line on the console".into())
    })?;

    let out = sub.join("vmcore");
    let mut c = Command::new(&cfg.lifeboat_bin);
    c.arg("fetch").arg(&disk).arg("-o").arg(&out);
    let f = qemu::run_with_timeout(
        c,
        None,
        &sub.join("fetch.stdout"),
        &sub.join("fetch.stderr"),
        Duration::from_secs(600),
    )?;
    if f.timed_out || f.code() != Some(0) {
        let said = std::fs::read_to_string(sub.join("fetch.stderr")).unwrap_or_default();
        return Err(failed(format!(
            "`lifeboat fetch` exited {:?} (expected 0):\n{said}",
            f.code()
        )));
    }
    let vmcore = std::fs::read(&out).map_err(|e| failed(format!("fetch wrote no vmcore: {e}")))?;
    let mut on_disk = vec![0u8; vmcore.len()];
    {
        use std::io::Read;
        std::fs::File::open(&disk)
            .and_then(|mut f| f.read_exact(&mut on_disk))
            .map_err(|e| failed(format!("reading the disk: {e}")))?;
    }
    if on_disk != vmcore {
        return Err(failed(first_difference(
            "the disk",
            &on_disk,
            "fetch's vmcore",
            &vmcore,
        )));
    }
    drop(on_disk);
    let stats = verify::verify_kdump(&vmcore, &Expectations::for_image(&image), &image)
        .map_err(|f| failed(f.to_string()))?;
    drop(vmcore);
    let dump_seconds = qemu::dump_seconds(console);
    details.push(format!(
        "{gib} GiB: {} pages byte-exact ({} zero, {} zlib, {} raw), dump {:.1} MiB; QEMU {:.1} s, the kernel's dump {}; heap peak {} KiB of {} KiB, page tables {} KiB",
        stats.pages,
        stats.zero_pages,
        stats.zlib_pages,
        stats.raw_pages,
        stats.file_bytes as f64 / MIB as f64,
        fin.seconds,
        dump_seconds.map_or_else(|| "time not printed".to_string(), |t| format!("{t:.1} s")),
        mem.heap_peak_kib,
        mem.heap_kib,
        mem.page_tables_kib
    ));
    if stats.pages != pages {
        return Err(failed(format!(
            "{} pages in the dump, the PT_LOADs cover {pages}",
            stats.pages
        )));
    }
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(&out);
    Ok(BoundedRun {
        gib,
        mem,
        qemu_seconds: fin.seconds,
        dump_bytes: stats.file_bytes,
        pages,
        max_mapnr: image.max_mapnr(),
    })
}

/// Names of all scenarios.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|s| s.name).collect()
}

/// Names of the scenarios of `arch`.
pub fn names_for(arch: Arch) -> Vec<&'static str> {
    for_arch(arch).iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{ELFCOREHDR_ROOM, GUEST_RAM_BYTES, PT_LOAD};

    #[test]
    fn cmdline_forms() {
        assert_eq!(CmdlineForm::Hex.arg(0x1000000), "elfcorehdr=0x1000000");
        assert_eq!(CmdlineForm::KiB.arg(0x1000000), "elfcorehdr=16384K");
        assert_eq!(
            CmdlineForm::SizeAt(0x1000).arg(0x1000000),
            "elfcorehdr=0x1000@0x1000000"
        );
        assert!(cmdline(CmdlineForm::Hex, 0x1000000)
            .ends_with("lifeboat.exit_port=0xf4 lifeboat.action=halt lifeboat.sink=serial"));
    }

    #[test]
    fn scenario_names_are_unique_and_sizes_fit() {
        let mut n = names();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), all().len());
        for arch in Arch::ALL {
            let guest = synth::GuestLayout::of(arch);
            for s in for_arch(arch) {
                let (mib, with_vmcoreinfo) = match s.kind {
                    Kind::Dump {
                        mib,
                        with_vmcoreinfo,
                        ..
                    } => (mib, with_vmcoreinfo),
                    Kind::Sink(
                        crate::sinks::SinkCase::Blk { mib, .. }
                        | crate::sinks::SinkCase::BlkPci { mib }
                        | crate::sinks::SinkCase::Net { mib },
                    ) => (mib, true),
                    Kind::Sink(_) => (128, true),
                    _ => continue,
                };
                let mut spec = s.spec(arch, mib);
                spec.with_vmcoreinfo = with_vmcoreinfo;
                let im = SynthImage::generate(&spec).unwrap();
                // The crashed kernel's pages: whole RAM ranges of them, said in VMCOREINFO.
                let ps = s.kind.page_size();
                assert_eq!(im.page_size(), ps);
                assert!(
                    im.ranges
                        .iter()
                        .all(|r| r.paddr.is_multiple_of(ps) && r.len.is_multiple_of(ps)),
                    "{arch} {}",
                    s.name
                );
                if let Some(v) = &im.vmcoreinfo {
                    assert!(
                        v.contains(&format!("\nPAGESIZE={ps}\n")),
                        "{arch} {}",
                        s.name
                    );
                }
                assert!(
                    im.ranges
                        .iter()
                        .all(|r| r.sources().end <= guest.ram_start + GUEST_RAM_BYTES),
                    "{arch} {}",
                    s.name
                );
                assert_eq!(im.vmcoreinfo.is_some(), with_vmcoreinfo);
                // QEMU refuses to start when a loader blob overlaps its device tree.
                let blobs: Vec<_> = im.ranges.iter().map(|r| r.sources()).collect();
                if let Some((hole, len)) = guest.qemu_hole {
                    assert!(
                        blobs.iter().all(|b| b.end <= hole || hole + len <= b.start),
                        "{arch} {}: {blobs:x?}",
                        s.name
                    );
                }
            }
        }
        for s in all() {
            if let Kind::BoundedMemory {
                small_gib,
                big_gib,
                big_cover_gib,
            } = s.kind
            {
                assert!(small_gib < big_gib);
                let a = SynthImage::generate(&SynthSpec::sparse(s.seed, small_gib << 30)).unwrap();
                let b = SynthImage::generate(&SynthSpec::sparse_covering(
                    s.seed,
                    big_gib << 30,
                    big_cover_gib.map(|g| g << 30),
                ))
                .unwrap();
                // The same shape and the same amount of content: only the RAM size differs.
                assert_eq!(a.ranges.len(), b.ranges.len());
                assert_eq!(a.header.phdrs.len(), b.header.phdrs.len());
                assert_eq!(
                    a.windows.as_ref().unwrap().len(),
                    b.windows.as_ref().unwrap().len()
                );
                assert_eq!(a.content_bytes(), b.content_bytes());
                assert!(b.max_mapnr() * synth::PAGE_SIZE > big_gib << 30);
            }
        }
    }

    #[test]
    fn only_the_full_64g_capture_waits_to_be_named() {
        let slow = |arch| -> Vec<_> {
            for_arch(arch)
                .into_iter()
                .filter(|s| s.on_request_only())
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(slow(Arch::X86_64), ["bounded-memory-64g-full"]);
        // … on x86_64; aarch64's virtio-blk-pci scenario has no BARs without firmware.
        assert_eq!(slow(Arch::Aarch64), ["blk-pci-64m"]);
        // No name is a part of another's, so a filter can pick either of the pair.
        for a in names() {
            assert!(names().iter().all(|b| *b == a || !b.contains(a)), "{a}");
        }
    }

    fn ram_phdrs(im: &SynthImage) -> Vec<Phdr> {
        let first_ram = im.cpu_notes.len() + usize::from(im.vmcoreinfo_note.is_some()) + 1;
        im.header.phdrs[first_ram..].to_vec()
    }

    #[test]
    fn mutations_break_what_they_claim() {
        for (arch, m) in Arch::ALL.into_iter().flat_map(|a| {
            [
                Mutation::BadMagic,
                Mutation::Truncated,
                Mutation::Overlap,
                Mutation::OutsideRam,
                Mutation::AbsurdSize,
                Mutation::TooManyPhdrs,
            ]
            .map(|m| (a, m))
        }) {
            let ram_end = synth::GuestLayout::of(arch).ram_start + GUEST_RAM_BYTES;
            let mut im = SynthImage::generate(&m.spec(arch, 9)).unwrap();
            let e_machine =
                u16::from_le_bytes([im.elfcorehdr_bytes()[18], im.elfcorehdr_bytes()[19]]);
            let before = ram_phdrs(&im);
            m.apply(&mut im);
            let after = ram_phdrs(&im);
            let h = im.elfcorehdr_bytes();
            assert!(h.len() as u64 <= ELFCOREHDR_ROOM);
            match m {
                Mutation::BadMagic => assert_ne!(&h[..4], b"\x7fELF"),
                Mutation::Truncated => {
                    assert!(h.len() > 0x1000, "{} bytes", h.len());
                    assert_eq!(m.cmdline_form(), CmdlineForm::SizeAt(0x1000));
                }
                Mutation::Overlap => {
                    let (a, b) = (after[1], after[2]);
                    assert!(b.p_paddr < a.p_paddr + a.p_memsz && a.p_paddr < b.p_paddr);
                    assert_eq!(b.p_paddr + b.p_memsz, before[2].p_paddr + before[2].p_memsz);
                    assert_eq!(b.p_vaddr, im.linear_vaddr(b.p_paddr));
                    assert!(after
                        .iter()
                        .all(|p| p.p_type == PT_LOAD && p.p_offset + p.p_filesz <= ram_end));
                }
                Mutation::OutsideRam => {
                    let last = after.last().unwrap();
                    assert_eq!(last.p_offset, 8 << 30);
                    assert!(last.p_offset >= ram_end);
                }
                Mutation::AbsurdSize => assert_eq!(after[1].p_filesz, 1 << 60),
                Mutation::TooManyPhdrs => assert_eq!(u16::from_le_bytes([h[56], h[57]]), 60000),
            }
            // Only the named field breaks: still the machine's own e_machine.
            assert_eq!(u16::from_le_bytes([h[18], h[19]]), e_machine);
            assert_eq!(
                e_machine,
                match arch {
                    Arch::X86_64 => synth::EM_X86_64,
                    Arch::Aarch64 => synth::EM_AARCH64,
                }
            );
            if m != Mutation::TooManyPhdrs && m != Mutation::Truncated {
                assert_eq!(
                    u16::from_le_bytes([h[56], h[57]]) as usize,
                    im.header.phdrs.len()
                );
            }
        }
    }

    #[test]
    fn aarch64_runs_the_x86_list_but_bounded_memory_with_longer_timeouts() {
        let arm = for_arch(Arch::Aarch64);
        let arm_names: Vec<_> = arm.iter().map(|s| s.name).collect();
        let x86 = for_arch(Arch::X86_64);
        let mut want: Vec<_> = x86
            .iter()
            .map(|s| s.name)
            .filter(|n| !n.starts_with("bounded-memory"))
            .collect();
        want.insert(
            want.iter().position(|n| *n == "blk-256m").unwrap() + 1,
            "blk-pci-64m",
        );
        // … and the crashed kernels with 16 and 64 KiB pages, arm64 only.
        for (after, name) in [
            ("missing-vmcoreinfo", "serial-16k"),
            ("serial-16k", "serial-64k"),
            ("blk-256m", "blk-64k"),
        ] {
            want.insert(want.iter().position(|n| *n == after).unwrap() + 1, name);
        }
        assert_eq!(arm_names, want);
        for name in [
            "serial-256m",
            "serial-kform",
            "missing-vmcoreinfo",
            "malformed-bad-magic",
            "malformed-truncated",
            "blk-256m",
            "blk-too-small",
            "net-256m",
            "sink-fallback",
        ] {
            assert!(arm_names.contains(&name), "{name}");
        }
        for s in &arm {
            let x = all().into_iter().find(|x| x.name == s.name).unwrap();
            assert_eq!(s.timeout, x.timeout * AARCH64_TIMEOUT_FACTOR);
        }
        assert!(x86.iter().all(|s| s.name != "blk-pci-64m"));
        assert_eq!(
            names_for(Arch::X86_64).len() + 1 + 3 - 2,
            names_for(Arch::Aarch64).len()
        );
    }

    #[test]
    fn arm64_crashed_kernels_with_16k_and_64k_pages_run_by_default() {
        let paged: Vec<_> = for_arch(Arch::Aarch64)
            .into_iter()
            .filter(|s| s.kind.page_size() != synth::PAGE_SIZE)
            .map(|s| (s.name, s.kind.page_size() >> 10, s.on_request_only()))
            .collect();
        assert_eq!(
            paged,
            [
                ("serial-16k", 16, false),
                ("serial-64k", 64, false),
                ("blk-64k", 64, false)
            ]
        );
        // `--filter 16k` and `--filter 64k` pick exactly these.
        let pick = |f: &str| -> Vec<_> {
            names_for(Arch::Aarch64)
                .into_iter()
                .filter(|n| n.contains(f))
                .collect()
        };
        assert_eq!(pick("16k"), ["serial-16k"]);
        assert_eq!(pick("64k"), ["serial-64k", "blk-64k"]);
        assert!(for_arch(Arch::X86_64)
            .iter()
            .all(|s| s.kind.page_size() == synth::PAGE_SIZE));
        // Small enough for TCG: at most 128 MiB each.
        for s in for_arch(Arch::Aarch64) {
            if s.kind.page_size() != synth::PAGE_SIZE {
                let mib = match s.kind {
                    Kind::Dump { mib, .. }
                    | Kind::Sink(crate::sinks::SinkCase::Blk { mib, .. }) => mib,
                    _ => unreachable!(),
                };
                assert!((64..=128).contains(&mib), "{}", s.name);
            }
        }
    }
}
