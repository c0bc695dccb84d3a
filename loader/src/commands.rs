//! `lifeboat load`, `unload`, `status` and `estimate`: the checks, in the order a person
//! would fix them, each failure one message that says what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use lifeboat_capture::cmdline;

use crate::arch::Arch;
use crate::arm64image::{self, Arm64Image};
use crate::blkcheck::{self, BlkError};
use crate::bootparams;
use crate::bzimage::LifeboatImage;
use crate::config::Config;
use crate::dtb;
use crate::elfcorehdr::{CoreLayout, NoteBuf};
use crate::host::{self, find_reservation, Host, Reservation};
use crate::kexec::{self, KexecError, Probe, Segment, Syscall};
use crate::layout::{self, Sizes};
use crate::memmap::{self, Range};
use crate::payload::{Payload, PayloadError};
use crate::state::{self, State, STATE_FILE};
use crate::stub;
use crate::sysfs::{Lockdown, DEFAULT_PAGE_OFFSET};

/// Where packages install the capture kernel.
pub const DEFAULT_PAYLOAD: &str = "/usr/lib/lifeboat/bzImage";
/// Command line room assumed by `estimate` (the boot_params segment is 8 KiB up to 4 KiB).
const ESTIMATE_CMDLINE: u64 = 256;
/// `MAX_ELFCOREHDR_STR_LEN`: kexec_file_load's room for the `elfcorehdr=0x… ` it prepends.
const KEXEC_FILE_ELFCOREHDR_ROOM: usize = 30;

/// Why a command failed. Every message says what to do next.
#[derive(Debug)]
pub enum Failure {
    ConfigUnreadable {
        path: PathBuf,
        err: std::io::Error,
    },
    Config {
        path: PathBuf,
        err: crate::config::ConfigError,
    },
    UnknownSyscall(String),
    NotCaptureOption(String),
    ElfcorehdrOption,
    BadOptions(Vec<String>),
    NoPayload {
        tried: Vec<PathBuf>,
    },
    PayloadUnreadable {
        path: PathBuf,
        err: std::io::Error,
    },
    NotLifeboatImage {
        path: PathBuf,
        why: PayloadError,
    },
    NoKexecSupport,
    NotRoot,
    KexecDisabled,
    Lockdown {
        mode: Lockdown,
        syscall: Syscall,
    },
    NoReservation {
        suggest_mib: u64,
    },
    TooSmall {
        have: u64,
        need: u64,
        syscall: Syscall,
    },
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
    AlreadyLoaded,
    System {
        what: String,
        err: String,
    },
    Build(String),
    Kexec(KexecError),
    NotLoadedAfterwards(Syscall),
    /// A `blk` sink names no usable disk, or the disk holds data.
    Blk(BlkError),
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 10 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Failure::*;
        match self {
            ConfigUnreadable { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            Config { path, err } => write!(f, "{}: {err}", path.display()),
            UnknownSyscall(s) => write!(f, "unknown syscall '{s}': use kexec_file_load or kexec_load"),
            NotCaptureOption(w) => write!(
                f,
                "'{w}' is not a capture option: options are lifeboat.KEY=VALUE (see docs/capture-options.md)"
            ),
            ElfcorehdrOption => write!(f, "elfcorehdr= is set by the loader; remove it from the options"),
            BadOptions(w) => write!(
                f,
                "bad capture option (the capture kernel would warn \"{}\" and fall back to a default at the \
                 crash): fix it now (see docs/capture-options.md)",
                w.join("\"; \"")
            ),
            NoPayload { tried } => write!(
                f,
                "no capture kernel found (tried {}): install lifeboat's {} there or pass --payload",
                tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                Arch::HOST.payload_file()
            ),
            PayloadUnreadable { path, err } => write!(f, "cannot read the payload {}: {err}", path.display()),
            NotLifeboatImage { path, why: why @ PayloadError::BzImage(_) } => write!(
                f,
                "{} is not a lifeboat image: {why}; use the bzImage built by `cargo xtask build` \
                 (target/lifeboat/x86_64/bzImage) or installed at {DEFAULT_PAYLOAD}",
                path.display()
            ),
            NotLifeboatImage { path, why } => write!(
                f,
                "{} is not a lifeboat image for this machine: {why}; use the {file} built by `cargo xtask \
                 build` (target/lifeboat/{arch}/{file}) or installed at {default}",
                path.display(),
                file = Arch::HOST.payload_file(),
                arch = Arch::HOST.name(),
                default = Arch::HOST.default_payload()
            ),
            NoKexecSupport => write!(
                f,
                "this kernel cannot load a crash kernel: /sys/kernel/kexec_crash_loaded is missing \
                 (it needs CONFIG_KEXEC or CONFIG_KEXEC_FILE, and CONFIG_CRASH_DUMP)"
            ),
            NotRoot => write!(f, "must be root: loading a crash kernel needs CAP_SYS_BOOT (run with sudo)"),
            KexecDisabled => write!(
                f,
                "kexec is disabled until the next boot (sysctl kernel.kexec_load_disabled = 1): reboot \
                 and load lifeboat before whatever sets it"
            ),
            Lockdown { mode, syscall: Syscall::KexecLoad } => write!(
                f,
                "kernel lockdown is in {} mode: kexec_load is refused; use --syscall kexec_file_load with a \
                 signed image, or boot without lockdown (lockdown=none, Secure Boot off)",
                mode.name()
            ),
            Lockdown { mode, syscall: Syscall::KexecFileLoad } => write!(
                f,
                "kernel lockdown is in {} mode: kexec_file_load accepts only signed images and lifeboat's \
                 {} is not signed; boot without lockdown (lockdown=none, Secure Boot off)",
                mode.name(),
                Arch::HOST.payload_file()
            ),
            NoReservation { suggest_mib } => write!(
                f,
                "no crash kernel reservation: add crashkernel={suggest_mib}M to the kernel command line and reboot \
                 (`lifeboat estimate` explains the number)"
            ),
            TooSmall { have, need, syscall } => write!(
                f,
                "the crash reservation is too small: {} with {}, lifeboat needs {} ({} bytes); set \
                 crashkernel={}M and reboot",
                mib(*have),
                syscall.name(),
                mib(*need),
                need,
                layout::mib_up(*need)
            ),
            CmdlineTooLong { len, max } => {
                write!(f, "the capture options are {len} bytes, the image takes at most {max}: shorten them")
            }
            AlreadyLoaded => write!(
                f,
                "another crash kernel is already loaded (not by lifeboat: kdump-tools or kexec -p?); stop it \
                 (systemctl disable --now kdump-tools; kexec -p -u) or pass --force to replace it"
            ),
            System { what, err } => write!(f, "cannot read {what}: {err}"),
            Build(msg) => write!(f, "{msg}"),
            Kexec(e) => write!(f, "{e}"),
            NotLoadedAfterwards(sc) => write!(
                f,
                "{} returned success but /sys/kernel/kexec_crash_loaded is still 0; check dmesg",
                sc.name()
            ),
            Blk(e) => write!(f, "{e}"),
        }
    }
}

impl From<BlkError> for Failure {
    fn from(e: BlkError) -> Self {
        Failure::Blk(e)
    }
}

impl From<KexecError> for Failure {
    fn from(e: KexecError) -> Self {
        Failure::Kexec(e)
    }
}

/// What `lifeboat load` was asked to do (flags win over the config file).
#[derive(Clone, Debug, Default)]
pub struct LoadRequest {
    pub payload: Option<PathBuf>,
    pub syscall: Option<String>,
    pub config: Option<PathBuf>,
    pub force: bool,
    pub dry_run: bool,
    pub options: Vec<String>,
}

/// The key of a `key=value` word.
fn key(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// Config options, then command-line options; a later key replaces an earlier one.
pub fn merge_options(config: &str, cli: &[String]) -> Vec<String> {
    let all: Vec<String> = config
        .split_whitespace()
        .map(str::to_string)
        .chain(cli.iter().cloned())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for w in all {
        out.retain(|o| key(o) != key(&w));
        out.push(w);
    }
    out
}

/// Checks the options with the capture kernel's own parser: any warning is an error here.
pub fn check_options(words: &[String]) -> Result<String, Failure> {
    for w in words {
        if key(w) == "elfcorehdr" {
            return Err(Failure::ElfcorehdrOption);
        }
        if !w.starts_with("lifeboat.") {
            return Err(Failure::NotCaptureOption(w.clone()));
        }
    }
    let line = words.join(" ");
    let (_, warnings) = cmdline::parse(&line);
    if warnings.is_empty() {
        Ok(line)
    } else {
        Err(Failure::BadOptions(warnings))
    }
}

/// The payload: the one asked for, else the installed one, else `bzImage` (arm64: `Image`)
/// next to lifeboat.
pub fn resolve_payload(asked: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = asked {
        return Ok(p);
    }
    let mut tried = vec![PathBuf::from(Arch::HOST.default_payload())];
    if let Some(dir) = host::exe_dir() {
        tried.push(dir.join(Arch::HOST.payload_file()));
    }
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(Failure::NoPayload { tried })
}

fn read_image(path: &Path) -> Result<(Vec<u8>, Payload), Failure> {
    let bytes = std::fs::read(path).map_err(|err| Failure::PayloadUnreadable {
        path: path.to_path_buf(),
        err,
    })?;
    let image = Payload::parse(&bytes, Arch::HOST).map_err(|why| Failure::NotLifeboatImage {
        path: path.to_path_buf(),
        why,
    })?;
    Ok((bytes, image))
}

pub(crate) fn warn(msg: impl fmt::Display) {
    eprintln!("lifeboat: warning: {msg}");
}

/// What this host needs, for `estimate`, the no-reservation message and the size check.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub kexec_load: u64,
    pub kexec_file_load: u64,
}

impl Needs {
    pub fn compute(
        image: &LifeboatImage,
        cpus: usize,
        ram_ranges: usize,
        cmdline: u64,
        hotplug: bool,
    ) -> Self {
        let core = 64 + 56 * (cpus + 1 + ram_ranges) as u64;
        let s = Sizes {
            elfcorehdr: core,
            cmdline,
            payload_memsz: image.payload_memsz(),
            kernel_alignment: image.kernel_alignment,
        };
        Needs {
            kexec_load: layout::kexec_load_need(&s),
            kexec_file_load: layout::kexec_file_load_need(&s, hotplug),
        }
    }
    /// arm64: the layout of [`layout::place_arm64`] from a 2 MiB-aligned start, and Linux's
    /// kexec_file layout (see [`layout::arm64_kexec_file_load_need`]).
    pub fn compute_arm64(
        image: &Arm64Image,
        cpus: usize,
        ram_ranges: usize,
        dtb: u64,
        page: u64,
        hotplug: bool,
    ) -> Self {
        let s = layout::Arm64Sizes {
            text_offset: image.text_offset,
            image_memsz: image.memsz(page),
            // CPUs, VMCOREINFO, the kernel text, RAM.
            elfcorehdr: 64 + 56 * (cpus + 2 + ram_ranges) as u64,
            dtb,
            page,
        };
        Needs {
            kexec_load: layout::arm64_kexec_load_need(&s),
            kexec_file_load: layout::arm64_kexec_file_load_need(&s, hotplug),
        }
    }
    pub fn of(&self, sc: Syscall) -> u64 {
        match sc {
            Syscall::KexecLoad => self.kexec_load,
            Syscall::KexecFileLoad => self.kexec_file_load,
        }
    }
    /// The `crashkernel=` size in MiB that fits both system calls.
    pub fn suggest_mib(&self) -> u64 {
        layout::mib_up(self.kexec_load.max(self.kexec_file_load))
    }
}

fn host_needs(host: &Host, iomem: &[memmap::IomemEntry], payload: &Payload) -> Needs {
    let ranges = memmap::dumpable_ram(iomem)
        .len()
        .max(memmap::ranges_of(iomem, memmap::RegionKind::Ram).len());
    match payload {
        Payload::BzImage(image) => Needs::compute(
            image,
            host.cpu_count().max(1),
            ranges,
            ESTIMATE_CMDLINE,
            host.crash_hotplug(),
        ),
        Payload::Arm64(image) => Needs::compute_arm64(
            image,
            host.cpu_count().max(1),
            ranges,
            arm64_dtb_estimate(host),
            host::page_size(),
            host.crash_hotplug(),
        ),
    }
}

/// The size of the DTB lifeboat would write: the running kernel's, rebuilt with a long command
/// line, or a typical size when `/sys/firmware/fdt` cannot be read (not root).
fn arm64_dtb_estimate(host: &Host) -> u64 {
    let dummy = [Range { start: 0, end: 1 << 20 }, Range { start: 0, end: 1 << 20 }];
    let chosen = dtb::CrashChosen {
        bootargs: &"x".repeat(ESTIMATE_CMDLINE as usize),
        elfcorehdr: dummy[0],
        elfcorehdr_reserve: 4096,
        usable: &dummy,
    };
    host.boot_fdt()
        .ok()
        .and_then(|b| dtb::crash_dtb(&b, &chosen).ok())
        .map_or(layout::ARM64_DTB_ESTIMATE, |d| d.len() as u64)
}

/// `lifeboat load`.
pub fn load(req: LoadRequest, host: &Host) -> Result<(), Failure> {
    // 1. Settings: config file, then flags.
    let cfg = match &req.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| Failure::ConfigUnreadable {
                path: path.clone(),
                err,
            })?;
            Config::parse(&text).map_err(|err| Failure::Config {
                path: path.clone(),
                err,
            })?
        }
        None => Config::default(),
    };
    let asked_syscall = req.syscall.clone().or(cfg.syscall.clone());
    let sc_name = asked_syscall
        .clone()
        .unwrap_or_else(|| "kexec_file_load".into());
    let mut syscall = Syscall::from_name(&sc_name).ok_or(Failure::UnknownSyscall(sc_name))?;
    let words = merge_options(cfg.options.as_deref().unwrap_or(""), &req.options);
    // Disk and network sinks: resolve and check the disk, fill in the network settings.
    let (words, sink_lines) = prepare_sinks(words, host, req.force, req.dry_run)?;
    let options = check_options(&words)?;

    // 2. The payload.
    let payload = resolve_payload(
        req.payload.clone().or(cfg
            .payload
            .clone()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)),
    )?;
    let (bytes, image) = read_image(&payload)?;
    let max_options = match (&image, syscall) {
        (Payload::BzImage(image), Syscall::KexecFileLoad) => {
            (image.cmdline_size as usize).saturating_sub(KEXEC_FILE_ELFCOREHDR_ROOM)
        }
        (Payload::BzImage(image), Syscall::KexecLoad) => {
            (image.cmdline_size as usize).saturating_sub("elfcorehdr=0x ".len() + 16)
        }
        // arm64: the command line is /chosen/bootargs alone (the elfcorehdr is a DT property).
        (Payload::Arm64(_), _) => arm64image::CMDLINE_MAX,
    };
    if options.len() > max_options {
        return Err(Failure::CmdlineTooLong {
            len: options.len(),
            max: max_options,
        });
    }

    // 3. Kernel support, permission, lockdown.
    let loaded = host.crash_loaded().ok_or(Failure::NoKexecSupport)?;
    // arm64 kernels often lack kexec_file_load (Debian's has no CONFIG_KEXEC_FILE): unless a
    // system call was asked for, use kexec_load there. ENOSYS comes before any permission
    // check, so this works for a non-root --dry-run too.
    let mut notes = Vec::new();
    if let (Payload::Arm64(_), None, Syscall::KexecFileLoad) = (&image, &asked_syscall, syscall) {
        if kexec::probe(Syscall::KexecFileLoad) == Probe::Unavailable(libc::ENOSYS) {
            syscall = Syscall::KexecLoad;
            notes.push(String::from(
                "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE is not set): using kexec_load, \
                 with the elfcorehdr and device tree built by lifeboat",
            ));
        }
    }
    let root = host::is_root();
    if !root && !req.dry_run {
        return Err(Failure::NotRoot);
    }
    let lockdown = host.lockdown().filter(|m| *m != Lockdown::None);
    if let (Some(mode), Syscall::KexecLoad) = (lockdown, syscall) {
        return Err(Failure::Lockdown { mode, syscall });
    }

    // 4. The reservation and its size.
    let iomem = host.iomem().map_err(|e| Failure::System {
        what: "/proc/iomem".into(),
        err: e.to_string(),
    })?;
    let needs = host_needs(host, &iomem, &image);
    let res = find_reservation(&iomem, host.crash_size()).ok_or(Failure::NoReservation {
        suggest_mib: needs.suggest_mib(),
    })?;
    if res.size < needs.of(syscall) {
        return Err(Failure::TooSmall {
            have: res.size,
            need: needs.of(syscall),
            syscall,
        });
    }

    // 5. Does the system call exist, may we use it?
    if root {
        match kexec::probe(syscall) {
            Probe::Available => {}
            Probe::Unavailable(libc::EPERM) => {
                if host
                    .read("/proc/sys/kernel/kexec_load_disabled")
                    .is_ok_and(|s| s.trim() == "1")
                {
                    return Err(Failure::KexecDisabled);
                }
                return Err(match lockdown {
                    Some(mode) => Failure::Lockdown { mode, syscall },
                    None => Failure::Kexec(KexecError::NotPermitted(syscall)),
                });
            }
            Probe::Unavailable(e) => {
                return Err(Failure::Kexec(KexecError::from_errno(syscall, e)))
            }
        }
    }
    let previous = std::fs::read_to_string(STATE_FILE)
        .ok()
        .and_then(|t| State::parse(&t));
    if loaded && previous.is_none() && !req.force && !req.dry_run {
        return Err(Failure::AlreadyLoaded);
    }

    // 6. Load.
    let reservation_text = match res.range {
        Some(r) => format!("{} ({})", r, mib(res.size)),
        None => mib(res.size),
    };
    match syscall {
        Syscall::KexecFileLoad => {
            if req.dry_run {
                println!("dry run: would call kexec_file_load(KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS)");
                for n in &notes {
                    println!("  note: {n}");
                }
                match &image {
                    Payload::BzImage(image) => {
                        println!(
                            "  payload      {} (lifeboat {}, init_size {})",
                            payload.display(),
                            image.version,
                            mib(image.init_size)
                        );
                        println!(
                            "  command line elfcorehdr=0x… {options}   (the kernel prepends elfcorehdr=)"
                        );
                    }
                    Payload::Arm64(a) => {
                        println!(
                            "  payload      {} (lifeboat {}, image_size {}, text_offset {:#x})",
                            payload.display(),
                            image.version(),
                            mib(a.image_size),
                            a.text_offset
                        );
                        println!(
                            "  command line {options}   (the kernel adds linux,elfcorehdr and the usable memory to the device tree)"
                        );
                    }
                }
                println!(
                    "  reservation  {reservation_text}, about {} needed",
                    mib(needs.kexec_file_load)
                );
                for line in &sink_lines {
                    println!("  {line}");
                }
                println!("dry run: nothing loaded");
                return Ok(());
            }
            let file = std::fs::File::open(&payload).map_err(|err| Failure::PayloadUnreadable {
                path: payload.clone(),
                err,
            })?;
            kexec::load_file(&file, &options).map_err(|e| match (e, lockdown) {
                (
                    KexecError::NotPermitted(sc) | KexecError::SignatureRejected(sc, _),
                    Some(mode),
                ) => Failure::Lockdown { mode, syscall: sc },
                (e, _) => Failure::Kexec(e),
            })?;
        }
        Syscall::KexecLoad => {
            let Some(range) = res.range else {
                for n in &notes {
                    println!("note: {n}");
                }
                println!("dry run: not root, so /proc/iomem hides the reservation's address: run as root to see the layout");
                return Ok(());
            };
            let plan = match &image {
                Payload::BzImage(image) => {
                    plan_kexec_load(host, &iomem, range, &bytes, image, &options)?
                }
                Payload::Arm64(a) => {
                    crate::arm64plan::plan_kexec_load(host, &iomem, &res, &bytes, a, &options)?
                }
            };
            let arch_flag = match image {
                Payload::BzImage(_) => "KEXEC_ARCH_X86_64",
                Payload::Arm64(_) => "KEXEC_ARCH_AARCH64",
            };
            if req.dry_run {
                for n in &notes {
                    println!("note: {n}");
                }
                println!("dry run: would call kexec_load(entry {:#x}, KEXEC_ON_CRASH | {arch_flag}) with:", plan.entry);
                print!("{}", plan.table());
                println!("  command line {}", plan.cmdline);
                println!(
                    "  reservation  {reservation_text}, {} used",
                    mib(plan.end - range.start)
                );
                for line in &sink_lines {
                    println!("  {line}");
                }
                println!("dry run: nothing loaded");
                return Ok(());
            }
            kexec::load_segments(plan.entry, &plan.segments)?;
        }
    }
    if host.crash_loaded() != Some(true) {
        return Err(Failure::NotLoadedAfterwards(syscall));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let st = State {
        payload: payload.display().to_string(),
        version: image.version().to_string(),
        syscall,
        options: options.clone(),
        loaded_at: now,
    };
    if let Err(e) = std::fs::create_dir_all(Path::new(STATE_FILE).parent().unwrap())
        .and_then(|_| std::fs::write(STATE_FILE, st.to_text()))
    {
        warn(format_args!(
            "loaded, but cannot record it in {STATE_FILE}: {e}"
        ));
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        "lifeboat {} loaded with {} from {} into the crash reservation {reservation_text}",
        image.version(),
        syscall.name(),
        payload.display()
    );
    println!(
        "capture options: {}",
        if options.is_empty() {
            "(defaults)"
        } else {
            &options
        }
    );
    for line in &sink_lines {
        println!("{line}");
    }
    Ok(())
}

// ---- Sinks that depend on this machine: `blk` disks and `net` servers ----

/// The value of the last `key=` word.
fn option_value<'a>(words: &'a [String], key_name: &str) -> Option<&'a str> {
    words
        .iter()
        .rev()
        .find(|w| key(w) == key_name)
        .map(|w| w.split_once('=').map_or("", |(_, v)| v))
}

/// Gets the options ready for the capture kernel: every `blk` item of `lifeboat.sink=` is
/// resolved to a checked disk and rewritten as `blk:<pci address>`; with a `net` sink the
/// crashed machine's identity and network settings are filled in and the server is probed.
/// Returns the new words and lines for the load summary. Options that do not parse are left
/// alone for [`check_options`] to report.
pub fn prepare_sinks(
    mut words: Vec<String>,
    host: &Host,
    force: bool,
    dry_run: bool,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let mut lines = Vec::new();
    if let Some(list) = option_value(&words, "lifeboat.sink").map(str::to_string) {
        let mut items = Vec::new();
        let mut disks = None;
        for item in list.split(',') {
            match blkcheck::blk_target(item) {
                Some(Ok(target)) => {
                    let disks =
                        disks.get_or_insert_with(|| blkcheck::virtio_disks(&host.path("/")));
                    let checked = check_blk(host, disks, &target, force, dry_run)?;
                    lines.push(checked.summary());
                    items.push(checked.item);
                }
                _ => items.push(item.to_string()),
            }
        }
        let new = format!("lifeboat.sink={}", items.join(","));
        // merge_options left one lifeboat.sink= word: replace it in place.
        if let Some(w) = words.iter_mut().rev().find(|w| key(w) == "lifeboat.sink") {
            *w = new;
        }
    }
    let (o, warnings) = cmdline::parse(&words.join(" "));
    let servers: Vec<cmdline::NetTarget> = o
        .sinks
        .iter()
        .filter_map(|s| match s {
            cmdline::SinkSpec::Net(t) => Some(*t),
            _ => None,
        })
        .collect();
    if warnings.is_empty() && !servers.is_empty() {
        let facts = NetFacts::gather(host, &words, servers[0]);
        let (w, notes) = net_words(&words, &facts);
        words = w;
        for n in notes {
            warn(n);
        }
        let added: Vec<&String> = words
            .iter()
            .filter(|w| ["lifeboat.ip", "lifeboat.gw", "lifeboat.nic"].contains(&key(w)))
            .collect();
        if let Some(r) = &facts.route {
            lines.push(format!(
                "network: {} (interface {}, the route to {})",
                added
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                r.iface,
                cmdline::Ipv4Fmt(servers[0].server)
            ));
        }
        for t in &servers {
            let addr = std::net::SocketAddr::from((t.server, t.port));
            match crate::netconn::probe(addr, std::time::Duration::from_secs(3)) {
                Ok(banner) => lines.push(format!("dump server {t}: {banner}")),
                Err(why) => warn(format_args!(
                    "{why}; the capture kernel will keep trying for {} s after a crash, then use the next \
                     sink (start `lifeboat serve` there)",
                    o.net.wait_secs
                )),
            }
        }
    }
    Ok((words, lines))
}

/// Resolves one `blk` target and checks the disk (see [`blkcheck`]).
fn check_blk(
    host: &Host,
    disks: &[blkcheck::VirtioDisk],
    target: &blkcheck::BlkTarget,
    force: bool,
    dry_run: bool,
) -> Result<blkcheck::CheckedDisk, Failure> {
    let root = host.path("/");
    let disk = blkcheck::resolve(&root, disks, target)?;
    let uses = blkcheck::uses(
        &root,
        disk,
        &host.read("/proc/self/mounts").unwrap_or_default(),
        &host.read("/proc/swaps").unwrap_or_default(),
    );
    if !uses.is_empty() && !force {
        return Err(BlkError::InUse { disk: disk.dev_path(), uses }.into());
    }
    let dev = host.path(&disk.dev_path());
    let start = match blkcheck::read_start(&dev, disk.size_bytes) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !host::is_root() => {
            if !dry_run {
                return Err(Failure::NotRoot);
            }
            warn(format_args!(
                "cannot read {} as non-root: its contents were not checked (run as root)",
                disk.dev_path()
            ));
            None
        }
        Err(err) => {
            return Err(BlkError::Unreadable {
                path: disk.dev_path(),
                err,
            }
            .into())
        }
    };
    let checked = blkcheck::check(disk, uses, start.as_deref(), force)?;
    if force {
        if let Some(blkcheck::Content::Known(what)) = &checked.content {
            warn(format_args!(
                "--force: a crash will overwrite {what} on {}",
                disk.dev_path()
            ));
        }
    }
    // Dumps compress (zero pages are dropped, the rest is zlib), so a smaller disk may do.
    let ram = host.iomem().ok().map(|iomem| {
        if memmap::iomem_addresses_hidden(&iomem) {
            host.total_ram(&iomem)
        } else {
            memmap::dumpable_ram(&iomem).iter().map(Range::len).sum()
        }
    });
    if let Some(ram) = ram.filter(|&r| r > disk.size_bytes) {
        warn(format_args!(
            "{} ({}) is smaller than the RAM to dump ({}): dumps usually compress well, but a \
             dump that does not fit is cut short and marked incomplete",
            disk.dev_path(),
            blkcheck::size_text(disk.size_bytes),
            blkcheck::size_text(ram)
        ));
    }
    Ok(checked)
}

/// An IPv4 route from `/proc/net/route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dest: [u8; 4],
    /// `0.0.0.0` for a directly connected network.
    pub gateway: [u8; 4],
    pub prefix: u8,
    pub metric: u32,
}

/// `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt Use Metric
/// Mask …` with addresses as the kernel's `%08X` of the network-order `__be32` (so the bytes
/// in memory order are the address octets). Routes that are not up (`RTF_UP` = 1) or whose
/// mask is not a prefix are skipped.
pub fn parse_routes(text: &str) -> Vec<Route> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let mask = u32::from_be_bytes(hex(f[7])?);
            if flags & 1 == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
                return None;
            }
            Some(Route {
                iface: f[0].to_string(),
                dest: hex(f[1])?,
                gateway: hex(f[2])?,
                prefix: mask.leading_ones() as u8,
                metric: f[6].parse().ok()?,
            })
        })
        .collect()
}

fn in_net(addr: [u8; 4], net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from_be_bytes(addr) & mask == u32::from_be_bytes(net) & mask
}

/// The route the kernel would pick for `to`: longest prefix, then lowest metric.
pub fn route_to(routes: &[Route], to: [u8; 4]) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| in_net(to, r.dest, r.prefix))
        .max_by_key(|r| (r.prefix, std::cmp::Reverse(r.metric)))
}

/// The prefix length of the directly connected network on `iface` that holds `addr`.
pub fn onlink_prefix(routes: &[Route], iface: &str, addr: [u8; 4]) -> Option<u8> {
    routes
        .iter()
        .filter(|r| {
            r.iface == iface
                && r.gateway == [0; 4]
                && r.prefix > 0
                && in_net(addr, r.dest, r.prefix)
        })
        .map(|r| r.prefix)
        .max()
}

/// What this machine knows about its identity and its way to the dump server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetFacts {
    pub hostname: Option<String>,
    pub boot_id: Option<String>,
    /// The route to the (first) server.
    pub route: Option<Route>,
    /// This machine's address towards the server and its prefix.
    pub source: Option<([u8; 4], u8)>,
    /// MAC address of the route's interface.
    pub mac: Option<String>,
    /// Whether that interface is a virtio-net card (the only kind the capture kernel drives).
    pub virtio_nic: bool,
}

impl NetFacts {
    /// Reads them from the running system (`/proc`, `/sys`, and the kernel's choice of source
    /// address for a UDP socket connected to the server, which sends nothing).
    pub fn gather(host: &Host, words: &[String], server: cmdline::NetTarget) -> Self {
        let read = |p: &str| {
            host.read(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let routes = parse_routes(&host.read("/proc/net/route").unwrap_or_default());
        let route = route_to(&routes, server.server).cloned();
        let mut facts = NetFacts {
            hostname: read("/proc/sys/kernel/hostname"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            ..Self::default()
        };
        if let Some(r) = &route {
            let need_ip = option_value(words, "lifeboat.ip").is_none();
            let src = if need_ip {
                source_address(server)
            } else {
                None
            };
            facts.source = src.and_then(|a| Some((a, onlink_prefix(&routes, &r.iface, a)?)));
            if need_ip && src.is_some() && facts.source.is_none() {
                warn(format_args!(
                    "no directly connected network on {} holds this machine's address: lifeboat.ip= not \
                     filled in (the capture kernel will use DHCP)",
                    r.iface
                ));
            }
            facts.mac = read(&format!("/sys/class/net/{}/address", r.iface));
            facts.virtio_nic =
                std::fs::canonicalize(host.path(&format!("/sys/class/net/{}/device", r.iface)))
                    .ok()
                    .and_then(|p| p.file_name()?.to_str().map(|n| n.starts_with("virtio")))
                    .unwrap_or(false);
        }
        facts.route = route;
        facts
    }
}

/// The address this machine sends from to reach `server` (no packet is sent).
fn source_address(server: cmdline::NetTarget) -> Option<[u8; 4]> {
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect((std::net::Ipv4Addr::from(server.server), server.port))
        .ok()?;
    match sock.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => Some(a.octets()),
        _ => None,
    }
}

/// Adds what the capture kernel needs for a `net` sink and was not given: `lifeboat.host=`,
/// `lifeboat.bootid=`, and from the route to the server `lifeboat.ip=` (with `lifeboat.gw=`
/// when the route has a gateway) and `lifeboat.nic=`. Returns the words and warnings.
pub fn net_words(words: &[String], facts: &NetFacts) -> (Vec<String>, Vec<String>) {
    let mut out = words.to_vec();
    let mut notes = Vec::new();
    let given = |k: &str| option_value(words, k).is_some();
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    };
    for (k, v, what) in [
        ("lifeboat.host", &facts.hostname, "host name"),
        ("lifeboat.bootid", &facts.boot_id, "boot id"),
    ] {
        if given(k) {
            continue;
        }
        match v {
            Some(v) if name_ok(v) => out.push(format!("{k}={v}")),
            Some(v) => notes.push(format!("this machine's {what} '{v}' cannot be passed to the capture kernel ({k}= takes [A-Za-z0-9._-], at most 64): not set")),
            None => notes.push(format!("this machine's {what} is unknown: {k}= not set")),
        }
    }
    let Some(route) = &facts.route else {
        notes.push(String::from(
            "no route to the dump server: lifeboat.ip= and lifeboat.nic= not filled in (the capture kernel will use DHCP)",
        ));
        return (out, notes);
    };
    if !given("lifeboat.ip") {
        if let Some((addr, prefix)) = facts.source {
            out.push(format!("lifeboat.ip={}/{prefix}", cmdline::Ipv4Fmt(addr)));
            if route.gateway != [0; 4] && !given("lifeboat.gw") {
                out.push(format!("lifeboat.gw={}", cmdline::Ipv4Fmt(route.gateway)));
            }
        }
    }
    if !given("lifeboat.nic") {
        match &facts.mac {
            Some(mac) => {
                out.push(format!("lifeboat.nic={mac}"));
                if !facts.virtio_nic {
                    notes.push(format!(
                        "{} is not a virtio-net card: the capture kernel drives only virtio-net, so the dump \
                         cannot go out through it",
                        route.iface
                    ));
                }
            }
            None => notes.push(format!(
                "no MAC address for {}: lifeboat.nic= not set",
                route.iface
            )),
        }
    }
    (out, notes)
}

/// The `kexec_load` segments and entry point.
pub struct KexecLoadPlan {
    pub segments: Vec<Segment>,
    pub entry: u64,
    pub cmdline: String,
    pub end: u64,
}

impl KexecLoadPlan {
    pub fn table(&self) -> String {
        let mut s = String::from("  segment      address             memsz      bufsz\n");
        for seg in &self.segments {
            s += &format!(
                "  {:<12} {:#018x} {:>10} {:>10}\n",
                seg.name,
                seg.mem,
                seg.memsz,
                seg.bytes.len()
            );
        }
        s
    }
}

/// Everything `kexec_load` needs, from plain data (the host values already read).
pub struct PlanInputs<'a> {
    pub cpu_notes: Vec<NoteBuf>,
    pub vmcoreinfo: Option<NoteBuf>,
    pub ram: Vec<Range>,
    pub page_offset: u64,
    pub firmware: Vec<(Range, memmap::RegionKind)>,
    pub rsdp: Option<u64>,
    pub reservation: Range,
    pub bzimage: &'a [u8],
    pub image: &'a LifeboatImage,
    pub options: &'a str,
}

/// Builds the four segments (pure: tested without a kernel).
pub fn build_plan(i: &PlanInputs) -> Result<KexecLoadPlan, Failure> {
    let core = CoreLayout {
        machine: Arch::X86_64.elf_machine(),
        cpu_notes: i.cpu_notes.clone(),
        vmcoreinfo: i.vmcoreinfo,
        kernel_text: None,
        ram: i.ram.clone(),
        linear_offset: Some(i.page_offset),
    };
    let ehdr = core.build().map_err(|e| Failure::Build(e.to_string()))?;
    // The command line's length depends on the elfcorehdr address only through its hex digits:
    // size the boot_params segment for the longest address.
    let sizes = Sizes {
        elfcorehdr: ehdr.len() as u64,
        cmdline: ("elfcorehdr=0x ".len() + 16 + i.options.len()) as u64,
        payload_memsz: i.image.payload_memsz(),
        kernel_alignment: i.image.kernel_alignment,
    };
    let p = layout::place(i.reservation, &sizes).map_err(Failure::kexec_load_too_small)?;
    let cmdline = if i.options.is_empty() {
        format!("elfcorehdr={:#x}", p.elfcorehdr)
    } else {
        format!("elfcorehdr={:#x} {}", p.elfcorehdr, i.options)
    };
    // The capture kernel may use the reservation except the elfcorehdr (as Linux passes it).
    let usable = memmap::subtract(
        &[i.reservation],
        &[Range {
            start: p.elfcorehdr,
            end: p.elfcorehdr + sizes.elfcorehdr_memsz(),
        }],
    );
    let (e820, dropped) = bootparams::e820_table(&usable, &i.firmware);
    if dropped > 0 {
        warn(format_args!(
            "{dropped} reserved ranges left out of the capture kernel's 128-entry E820 table"
        ));
    }
    let bp = bootparams::build(
        &i.image.setup_header,
        i.image.cmdline_size,
        p.boot_params,
        &cmdline,
        &e820,
        i.rsdp,
    )
    .map_err(|e| Failure::Build(e.to_string()))?;
    let entry = p.payload + i.image.entry_offset;
    let stub = stub::entry_stub(p.boot_params, entry).to_vec();
    let payload = i.bzimage[i.image.setup_len..].to_vec();
    let mut segments = vec![
        Segment {
            name: "elfcorehdr",
            bytes: ehdr,
            mem: p.elfcorehdr,
            memsz: sizes.elfcorehdr_memsz(),
        },
        Segment {
            name: "boot_params",
            bytes: bp,
            mem: p.boot_params,
            memsz: sizes.boot_params_memsz(),
        },
        Segment {
            name: "entry stub",
            bytes: stub,
            mem: p.stub,
            memsz: layout::STUB_SIZE,
        },
        Segment {
            name: "payload",
            bytes: payload,
            mem: p.payload,
            memsz: sizes.payload_memsz,
        },
    ];
    segments.sort_by_key(|s| s.mem);
    Ok(KexecLoadPlan {
        segments,
        entry: p.stub,
        cmdline,
        end: p.end,
    })
}

impl Failure {
    /// A `kexec_load` layout that does not fit the reservation.
    pub(crate) fn kexec_load_too_small(t: layout::TooSmall) -> Self {
        Failure::TooSmall {
            have: t.have,
            need: t.need,
            syscall: Syscall::KexecLoad,
        }
    }
}

/// The notes every `kexec_load` elfcorehdr holds, read from the running system: the per-CPU
/// crash notes (none is a failure) and VMCOREINFO (none is a warning).
pub(crate) fn read_crash_notes(host: &Host) -> Result<(Vec<NoteBuf>, Option<NoteBuf>), Failure> {
    let cpu_notes = host.cpu_notes().map_err(|e| Failure::System {
        what: "the CPU crash notes".into(),
        err: e.to_string(),
    })?;
    let vmcoreinfo = host.vmcoreinfo();
    if vmcoreinfo.is_none() {
        warn("no /sys/kernel/vmcoreinfo: the dump will lack VMCOREINFO (crash and makedumpfile need it)");
    }
    Ok((cpu_notes, vmcoreinfo))
}

fn plan_kexec_load(
    host: &Host,
    iomem: &[memmap::IomemEntry],
    reservation: Range,
    bzimage: &[u8],
    image: &LifeboatImage,
    options: &str,
) -> Result<KexecLoadPlan, Failure> {
    let (cpu_notes, vmcoreinfo) = read_crash_notes(host)?;
    let ram = memmap::dumpable_ram(iomem);
    let page_offset = host.page_offset(&ram).unwrap_or_else(|e| {
        warn(format_args!("PAGE_OFFSET unknown ({e}): using {DEFAULT_PAGE_OFFSET:#x}; p_vaddr in the dump may be wrong with KASLR"));
        DEFAULT_PAGE_OFFSET
    });
    build_plan(&PlanInputs {
        cpu_notes,
        vmcoreinfo,
        ram,
        page_offset,
        firmware: host.firmware_ranges(iomem),
        rsdp: host.rsdp(),
        reservation,
        bzimage,
        image,
        options,
    })
}

/// `lifeboat unload`.
pub fn unload(host: &Host) -> Result<(), Failure> {
    let state = std::fs::read_to_string(STATE_FILE)
        .ok()
        .and_then(|t| State::parse(&t));
    let loaded = host.crash_loaded().ok_or(Failure::NoKexecSupport)?;
    if !host::is_root() {
        return Err(Failure::NotRoot);
    }
    if !loaded {
        let _ = std::fs::remove_file(STATE_FILE);
        println!("no crash kernel loaded: nothing to unload");
        return Ok(());
    }
    let sc = state.as_ref().map_or(Syscall::KexecFileLoad, |s| s.syscall);
    match kexec::unload(sc) {
        Ok(()) => {}
        Err(KexecError::Missing(_)) => kexec::unload(sc.other())?,
        Err(e) => return Err(e.into()),
    }
    let _ = std::fs::remove_file(STATE_FILE);
    match state {
        Some(s) => println!("lifeboat {} unloaded", s.version),
        None => println!("crash kernel unloaded (it had not been loaded by lifeboat)"),
    }
    Ok(())
}

/// `lifeboat status`; `Ok(true)` when a crash kernel is loaded.
pub fn status(host: &Host) -> Result<bool, Failure> {
    let loaded = host.crash_loaded().ok_or(Failure::NoKexecSupport)?;
    let iomem = host.iomem().map_err(|e| Failure::System {
        what: "/proc/iomem".into(),
        err: e.to_string(),
    })?;
    let res = find_reservation(&iomem, host.crash_size());
    let state = std::fs::read_to_string(STATE_FILE)
        .ok()
        .and_then(|t| State::parse(&t));
    println!("lifeboat status");
    match &res {
        Some(Reservation {
            range: Some(r),
            size,
            ..
        }) => println!("  reservation:  {} at {r}", mib(*size)),
        Some(Reservation { size, .. }) => println!(
            "  reservation:  {} (run as root to see the address)",
            mib(*size)
        ),
        None => println!("  reservation:  none (no crashkernel= on the kernel command line)"),
    }
    println!("  loaded:       {}", if loaded { "yes" } else { "no" });
    match (&state, loaded) {
        (Some(s), true) => {
            println!("  payload:      {} (lifeboat {})", s.payload, s.version);
            println!("  syscall:      {}", s.syscall.name());
            println!("  loaded at:    {}", state::utc(s.loaded_at));
            let (o, _) = cmdline::parse(&s.options);
            println!(
                "  options:      {}",
                if s.options.is_empty() {
                    "(defaults)"
                } else {
                    &s.options
                }
            );
            println!("  sinks:        {}", o.sinks.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","));
            match Arch::HOST {
                Arch::Aarch64 => println!("  serial:       the console UART (device tree stdout-path)"),
                _ => println!("  serial:       {}", o.serial),
            }
            println!(
                "  dump level:   {}{}",
                o.level,
                if o.level & 1 == 1 {
                    " (zero pages excluded)"
                } else {
                    ""
                }
            );
            println!("  after dump:   {}", o.action);
        }
        (None, true) => println!(
            "  payload:      not loaded by lifeboat (no {STATE_FILE}): kdump-tools or kexec -p?"
        ),
        _ => {}
    }
    if !memmap::iomem_addresses_hidden(&iomem) {
        let ram: u64 = memmap::dumpable_ram(&iomem).iter().map(Range::len).sum();
        println!(
            "  RAM to dump:  {} (System RAM outside the reservation); at dump level 1 zero pages are \
             dropped and pages are zlib-compressed, so the dump is at most this size",
            mib(ram)
        );
    }
    Ok(loaded)
}

/// `lifeboat estimate`.
pub fn estimate(host: &Host, payload: Option<PathBuf>) -> Result<(), Failure> {
    let path = resolve_payload(payload)?;
    let (_, image) = read_image(&path)?;
    let iomem = host.iomem().map_err(|e| Failure::System {
        what: "/proc/iomem".into(),
        err: e.to_string(),
    })?;
    let needs = host_needs(host, &iomem, &image);
    let ram = host.total_ram(&iomem);
    let cpus = host.cpu_count();
    println!("crashkernel={}M", needs.suggest_mib());
    match &image {
        Payload::BzImage(image) => println!(
            "  lifeboat {} ({}): init_size {}, kernel_alignment {}",
            image.version,
            path.display(),
            mib(image.init_size),
            mib(image.kernel_alignment)
        ),
        Payload::Arm64(a) => println!(
            "  lifeboat {} ({}): image_size {}, text_offset {:#x}",
            image.version(),
            path.display(),
            mib(a.image_size),
            a.text_offset
        ),
    }
    println!(
        "  this host: {} RAM, {} CPU(s) with crash notes{}",
        mib(ram),
        cpus,
        if memmap::iomem_addresses_hidden(&iomem) {
            " (not root: RAM from /proc/meminfo)"
        } else {
            ""
        }
    );
    match &image {
        Payload::BzImage(_) => {
            println!(
                "  kexec_load:      {} (payload + elfcorehdr + boot_params + entry stub + alignment slack)",
                mib(needs.kexec_load)
            );
            println!(
                "  kexec_file_load: {} (payload + elfcorehdr + about {} for the kernel's purgatory and boot_params{})",
                mib(needs.kexec_file_load),
                mib(layout::KEXEC_FILE_OVERHEAD),
                if host.crash_hotplug() { " + crash-hotplug room in the elfcorehdr" } else { "" }
            );
        }
        Payload::Arm64(_) => {
            println!(
                "  kexec_load:      {} (Image + elfcorehdr + device tree + entry trampoline)",
                mib(needs.kexec_load)
            );
            println!(
                "  kexec_file_load: {} (Image, then the device tree at the next 2 MiB boundary, then the elfcorehdr{})",
                mib(needs.kexec_file_load),
                if host.crash_hotplug() { " with crash-hotplug room" } else { "" }
            );
        }
    }
    println!("  a Linux capture kernel here:");
    let show = |name: &str, spec: &str| match layout::eval_crashkernel(spec, ram) {
        Some(0) => println!("    {name:<28} crashkernel={spec} -> none at this RAM size"),
        Some(n) => println!("    {name:<28} crashkernel={spec} -> {}", mib(n)),
        None => {}
    };
    show("Debian kdump-tools default", layout::DEBIAN_KDUMP_TOOLS);
    show("RHEL/Fedora default", layout::RHEL_FEDORA);
    match image {
        Payload::BzImage(_) => println!(
            "    note: the smallest reservation that worked for Debian 12's own kernel as capture kernel was {}M \
             (QEMU x86_64, 1 and 4 GiB guests)",
            layout::DEBIAN_MEASURED_MIN_MIB
        ),
        Payload::Arm64(_) => println!(
            "    note: the smallest reservation that worked for Debian 12's own kernel as capture kernel was {}M \
             (QEMU aarch64 virt, 1 GiB guest)",
            layout::DEBIAN_MEASURED_MIN_MIB_ARM64
        ),
    }
    match find_reservation(&iomem, host.crash_size()) {
        Some(r) => println!("  current reservation: {}", mib(r.size)),
        None => println!("  current reservation: none"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::testimage::lifeboat_bzimage;
    use crate::memmap::{fixtures::IOMEM_QEMU_1G, parse_iomem};

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn options_are_checked_with_the_capture_parser() {
        assert_eq!(
            check_options(&words("lifeboat.action=halt lifeboat.exit_port=0xf4")).unwrap(),
            "lifeboat.action=halt lifeboat.exit_port=0xf4"
        );
        assert_eq!(check_options(&[]).unwrap(), "");
        let e = check_options(&words("lifeboat.acton=halt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option lifeboat.acton"), "{e}");
        let e = check_options(&words("lifeboat.serial=ttyS9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ttyS9"), "{e}");
        assert!(check_options(&words("lifeboat.level=7")).is_ok());
        assert!(matches!(
            check_options(&words("lifeboat.level=32")),
            Err(Failure::BadOptions(_))
        ));
        assert!(matches!(
            check_options(&words("console=ttyS0")),
            Err(Failure::NotCaptureOption(_))
        ));
        assert!(matches!(
            check_options(&words("elfcorehdr=0x1000")),
            Err(Failure::ElfcorehdrOption)
        ));
    }

    #[test]
    fn command_line_options_replace_config_ones() {
        assert_eq!(
            merge_options(
                "lifeboat.action=reboot lifeboat.serial=ttyS1",
                &words("lifeboat.action=halt")
            ),
            words("lifeboat.serial=ttyS1 lifeboat.action=halt")
        );
    }

    #[test]
    fn needs_and_messages() {
        let img = LifeboatImage::parse(&lifeboat_bzimage()).unwrap();
        let n = Needs::compute(&img, 2, 4, ESTIMATE_CMDLINE, false);
        assert_eq!(n.suggest_mib(), 3);
        let m = Failure::NoReservation {
            suggest_mib: n.suggest_mib(),
        }
        .to_string();
        assert!(m.starts_with("no crash kernel reservation: add crashkernel=3M to the kernel command line and reboot"), "{m}");
        let m = Failure::TooSmall {
            have: 1 << 20,
            need: n.kexec_load,
            syscall: Syscall::KexecLoad,
        }
        .to_string();
        assert!(
            m.contains("1 MiB with kexec_load") && m.contains("crashkernel=3M"),
            "{m}"
        );
    }

    /// `/proc/net/route` of a QEMU user-network guest, plus a second interface.
    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
eth1\t0001A8C0\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn routes_and_prefixes() {
        let r = parse_routes(ROUTES);
        assert_eq!(r.len(), 3, "the route that is not up is skipped");
        assert_eq!(
            r[0],
            Route {
                iface: "eth0".into(),
                dest: [0; 4],
                gateway: [10, 0, 2, 2],
                prefix: 0,
                metric: 100
            }
        );
        assert_eq!(r[1].dest, [10, 0, 2, 0]);
        assert_eq!(r[1].prefix, 24);
        assert_eq!(route_to(&r, [10, 0, 2, 2]).unwrap().prefix, 24);
        assert_eq!(route_to(&r, [192, 168, 7, 1]).unwrap().iface, "eth1");
        assert_eq!(route_to(&r, [8, 8, 8, 8]).unwrap().gateway, [10, 0, 2, 2]);
        assert_eq!(route_to(&r[1..], [8, 8, 8, 8]), None);
        assert_eq!(onlink_prefix(&r, "eth0", [10, 0, 2, 15]), Some(24));
        assert_eq!(onlink_prefix(&r, "eth1", [10, 0, 2, 15]), None);
    }

    #[test]
    fn net_options_are_filled_in() {
        let r = parse_routes(ROUTES);
        let facts = NetFacts {
            hostname: Some("web-01".into()),
            boot_id: Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
            route: Some(r[0].clone()),
            source: Some(([10, 0, 2, 15], 24)),
            mac: Some("52:54:00:12:34:56".into()),
            virtio_nic: true,
        };
        let (w, notes) = net_words(&words("lifeboat.sink=net:1.2.3.4:9000"), &facts);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            w,
            words(
                "lifeboat.sink=net:1.2.3.4:9000 lifeboat.host=web-01 \
                 lifeboat.bootid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 lifeboat.ip=10.0.2.15/24 \
                 lifeboat.gw=10.0.2.2 lifeboat.nic=52:54:00:12:34:56"
            )
        );
        // What the capture kernel's parser makes of it.
        assert_eq!(check_options(&w).unwrap(), w.join(" "));
        // Given options win; a directly connected server needs no gateway.
        let facts2 = NetFacts {
            route: Some(r[1].clone()),
            virtio_nic: false,
            ..facts.clone()
        };
        let (w, notes) = net_words(
            &words("lifeboat.sink=net:10.0.2.2:9000 lifeboat.host=h lifeboat.nic=00:05.0"),
            &facts2,
        );
        assert_eq!(
            w,
            words(
                "lifeboat.sink=net:10.0.2.2:9000 lifeboat.host=h lifeboat.nic=00:05.0 \
                 lifeboat.bootid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 lifeboat.ip=10.0.2.15/24"
            )
        );
        assert!(notes.is_empty(), "{notes:?}");
        let (w, _) = net_words(
            &words("lifeboat.sink=net:1.2.3.4:9000 lifeboat.ip=dhcp"),
            &facts,
        );
        assert!(!w
            .iter()
            .any(|w| w.starts_with("lifeboat.gw") || w.starts_with("lifeboat.ip=10")));
        // A card the capture kernel cannot drive, a bad host name, no route.
        let facts3 = NetFacts {
            hostname: Some("bad host".into()),
            virtio_nic: false,
            ..facts.clone()
        };
        let (_, notes) = net_words(&words("lifeboat.sink=net:1.2.3.4:9000"), &facts3);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("'bad host'") && notes[1].contains("not a virtio-net card"),
            "{notes:?}"
        );
        let (w, notes) = net_words(
            &words("lifeboat.sink=net:1.2.3.4:9000"),
            &NetFacts::default(),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn blk_sinks_are_resolved_and_rewritten() {
        use std::os::unix::fs::symlink;
        let root =
            std::env::temp_dir().join(format!("lifeboat-commands-blk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let blk = root.join("sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb");
        std::fs::create_dir_all(&blk).unwrap();
        std::fs::write(blk.join("size"), "2097152\n").unwrap();
        std::fs::write(blk.join("serial"), "dumpdisk").unwrap();
        symlink("../../../virtio2", blk.join("device")).unwrap();
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        symlink(
            "../devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
            root.join("sys/block/vdb"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/vdb"), vec![0u8; blkcheck::PROBE_BYTES]).unwrap();
        let host = Host::with_root(&root);
        let (w, lines) = prepare_sinks(
            words("lifeboat.action=halt lifeboat.sink=blk:/dev/vdb,serial"),
            &host,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            w,
            words("lifeboat.action=halt lifeboat.sink=blk:0000:00:05.0,serial")
        );
        assert_eq!(
            lines,
            ["dump disk /dev/vdb (PCI 0000:00:05.0, serial 'dumpdisk', 1 GiB): empty; the capture kernel gets blk:0000:00:05.0"]
        );
        let (w, _) = prepare_sinks(
            words("lifeboat.sink=blk:serial=dumpdisk"),
            &host,
            false,
            false,
        )
        .unwrap();
        assert_eq!(w, words("lifeboat.sink=blk:0000:00:05.0"));
        // An ext4 file system on it: refused, unless --force.
        let mut fs = vec![0u8; blkcheck::PROBE_BYTES];
        fs[1080..1082].copy_from_slice(&[0x53, 0xef]);
        std::fs::write(root.join("dev/vdb"), &fs).unwrap();
        let e = prepare_sinks(words("lifeboat.sink=blk"), &host, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ext2/ext3/ext4") && e.contains("--force"), "{e}");
        assert!(prepare_sinks(words("lifeboat.sink=blk"), &host, true, false).is_ok());
        // Mounted: refused.
        std::fs::write(root.join("dev/vdb"), vec![0u8; blkcheck::PROBE_BYTES]).unwrap();
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(root.join("proc/self/mounts"), "/dev/vdb /mnt xfs rw 0 0\n").unwrap();
        let e = prepare_sinks(words("lifeboat.sink=blk"), &host, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vdb is mounted on /mnt"), "{e}");
        // Unknown disks and bad items: an error, and left for check_options.
        let e = prepare_sinks(words("lifeboat.sink=blk:other"), &host, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("serial 'other'"), "{e}");
        let (w, _) = prepare_sinks(words("lifeboat.sink=tape"), &host, false, false).unwrap();
        assert_eq!(w, words("lifeboat.sink=tape"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn wrong_arch_images_are_refused_by_name() {
        let m = Failure::NotLifeboatImage {
            path: PathBuf::from("/boot/Image"),
            why: PayloadError::WrongArch { image: Arch::Aarch64, host: Arch::X86_64 },
        }
        .to_string();
        assert!(m.starts_with("/boot/Image is not a lifeboat image for this machine: it is an arm64 Image and this machine is x86_64; use the"), "{m}");
        // The x86 message for a bad bzImage is what it was.
        let m = Failure::NotLifeboatImage {
            path: PathBuf::from("/bin/busybox"),
            why: PayloadError::BzImage(crate::bzimage::ImageError::NotBzImage),
        }
        .to_string();
        assert_eq!(
            m,
            "/bin/busybox is not a lifeboat image: no x86 boot-protocol header (\"HdrS\" at 0x202, 0xAA55 at 0x1FE); \
             use the bzImage built by `cargo xtask build` (target/lifeboat/x86_64/bzImage) or installed at /usr/lib/lifeboat/bzImage"
        );
    }

    /// The whole kexec_load plan for the test guest: four page-aligned, disjoint segments
    /// inside the reservation, a stub that enters the payload, and an elfcorehdr= that
    /// points at the elfcorehdr segment.
    #[test]
    fn kexec_load_plan_for_the_test_guest() {
        let bz = lifeboat_bzimage();
        let image = LifeboatImage::parse(&bz).unwrap();
        let iomem = parse_iomem(IOMEM_QEMU_1G);
        let reservation = find_reservation(&iomem, Some(16 << 20))
            .unwrap()
            .range
            .unwrap();
        let plan = build_plan(&PlanInputs {
            cpu_notes: vec![
                NoteBuf {
                    addr: 0x3f61_c0e0,
                    size: 448,
                },
                NoteBuf {
                    addr: 0x3f65_c0e0,
                    size: 448,
                },
            ],
            vmcoreinfo: Some(NoteBuf {
                addr: 0x2a8d000,
                size: 0x1024,
            }),
            ram: memmap::dumpable_ram(&iomem),
            page_offset: DEFAULT_PAGE_OFFSET,
            firmware: memmap::firmware_ranges_from_iomem(&iomem),
            rsdp: Some(0xf5a40),
            reservation,
            bzimage: &bz,
            image: &image,
            options: "lifeboat.action=halt",
        })
        .unwrap();
        assert_eq!(plan.cmdline, "elfcorehdr=0x3e000000 lifeboat.action=halt");
        let mut prev_end = reservation.start;
        for s in &plan.segments {
            assert_eq!(s.mem % 4096, 0, "{}", s.name);
            assert_eq!(s.memsz % 4096, 0, "{}", s.name);
            assert!(s.bytes.len() as u64 <= s.memsz, "{}", s.name);
            assert!(s.mem >= prev_end, "{} overlaps", s.name);
            prev_end = s.mem + s.memsz;
        }
        assert!(prev_end <= reservation.end);
        let names: Vec<&str> = plan.segments.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["elfcorehdr", "boot_params", "entry stub", "payload"]
        );
        let stub = &plan.segments[2];
        assert_eq!(plan.entry, stub.mem);
        let payload = &plan.segments[3];
        assert_eq!(&payload.bytes[..8], b"LIFEBOAT");
        assert_eq!(
            stub.bytes,
            stub::entry_stub(plan.segments[1].mem, payload.mem + 0x200).to_vec()
        );
        assert_eq!(payload.memsz, 0x2d9000);
        // crashkernel=3M is enough for this layout.
        assert!(plan.end - reservation.start <= 3 << 20);
    }
}
