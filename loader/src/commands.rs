//! `lifeboat load`, `unload`, `status` and `estimate`: the checks, in the order a person
//! would fix them, each failure one message that says what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use lifeboat_capture::cmdline;

use crate::bootparams;
use crate::bzimage::{ImageError, LifeboatImage};
use crate::config::Config;
use crate::elfcorehdr::{CoreLayout, NoteBuf};
use crate::host::{self, find_reservation, Host, Reservation};
use crate::kexec::{self, KexecError, Probe, Segment, Syscall};
use crate::layout::{self, Sizes};
use crate::memmap::{self, Range};
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
        why: ImageError,
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
                "no capture kernel found (tried {}): install lifeboat's bzImage there or pass --payload",
                tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            PayloadUnreadable { path, err } => write!(f, "cannot read the payload {}: {err}", path.display()),
            NotLifeboatImage { path, why } => write!(
                f,
                "{} is not a lifeboat image: {why}; use the bzImage built by `cargo xtask build` \
                 (target/lifeboat/x86_64/bzImage) or installed at {DEFAULT_PAYLOAD}",
                path.display()
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
                 bzImage is not signed; boot without lockdown (lockdown=none, Secure Boot off)",
                mode.name()
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
        }
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

/// The payload: the one asked for, else the installed one, else `bzImage` next to lifeboat.
pub fn resolve_payload(asked: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = asked {
        return Ok(p);
    }
    let mut tried = vec![PathBuf::from(DEFAULT_PAYLOAD)];
    if let Some(dir) = host::exe_dir() {
        tried.push(dir.join("bzImage"));
    }
    tried
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(Failure::NoPayload { tried })
}

fn read_image(path: &Path) -> Result<(Vec<u8>, LifeboatImage), Failure> {
    let bytes = std::fs::read(path).map_err(|err| Failure::PayloadUnreadable {
        path: path.to_path_buf(),
        err,
    })?;
    let image = LifeboatImage::parse(&bytes).map_err(|why| Failure::NotLifeboatImage {
        path: path.to_path_buf(),
        why,
    })?;
    Ok((bytes, image))
}

fn warn(msg: impl fmt::Display) {
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

fn host_needs(host: &Host, iomem: &[memmap::IomemEntry], image: &LifeboatImage) -> Needs {
    let ranges = memmap::dumpable_ram(iomem)
        .len()
        .max(memmap::ranges_of(iomem, memmap::RegionKind::Ram).len());
    Needs::compute(
        image,
        host.cpu_count().max(1),
        ranges,
        ESTIMATE_CMDLINE,
        host.crash_hotplug(),
    )
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
    let sc_name = req
        .syscall
        .clone()
        .or(cfg.syscall.clone())
        .unwrap_or_else(|| "kexec_file_load".into());
    let syscall = Syscall::from_name(&sc_name).ok_or(Failure::UnknownSyscall(sc_name))?;
    let words = merge_options(cfg.options.as_deref().unwrap_or(""), &req.options);
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
    let max_options = match syscall {
        Syscall::KexecFileLoad => {
            (image.cmdline_size as usize).saturating_sub(KEXEC_FILE_ELFCOREHDR_ROOM)
        }
        Syscall::KexecLoad => {
            (image.cmdline_size as usize).saturating_sub("elfcorehdr=0x ".len() + 16)
        }
    };
    if options.len() > max_options {
        return Err(Failure::CmdlineTooLong {
            len: options.len(),
            max: max_options,
        });
    }

    // 3. Kernel support, permission, lockdown.
    let loaded = host.crash_loaded().ok_or(Failure::NoKexecSupport)?;
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
                println!(
                    "  payload      {} (lifeboat {}, init_size {})",
                    payload.display(),
                    image.version,
                    mib(image.init_size)
                );
                println!(
                    "  command line elfcorehdr=0x… {options}   (the kernel prepends elfcorehdr=)"
                );
                println!(
                    "  reservation  {reservation_text}, about {} needed",
                    mib(needs.kexec_file_load)
                );
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
                println!("dry run: not root, so /proc/iomem hides the reservation's address: run as root to see the layout");
                return Ok(());
            };
            let plan = plan_kexec_load(host, &iomem, range, &bytes, &image, &options)?;
            if req.dry_run {
                println!("dry run: would call kexec_load(entry {:#x}, KEXEC_ON_CRASH | KEXEC_ARCH_X86_64) with:", plan.entry);
                print!("{}", plan.table());
                println!("  command line {}", plan.cmdline);
                println!(
                    "  reservation  {reservation_text}, {} used",
                    mib(plan.end - range.start)
                );
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
        version: image.version.clone(),
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
    println!(
        "lifeboat {} loaded with {} from {} into the crash reservation {reservation_text}",
        image.version,
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
    Ok(())
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
        cpu_notes: i.cpu_notes.clone(),
        vmcoreinfo: i.vmcoreinfo,
        ram: i.ram.clone(),
        page_offset: i.page_offset,
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
    let p = layout::place(i.reservation, &sizes).map_err(|t| Failure::TooSmall {
        have: t.have,
        need: t.need,
        syscall: Syscall::KexecLoad,
    })?;
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

fn plan_kexec_load(
    host: &Host,
    iomem: &[memmap::IomemEntry],
    reservation: Range,
    bzimage: &[u8],
    image: &LifeboatImage,
    options: &str,
) -> Result<KexecLoadPlan, Failure> {
    let sys = |what: &str, err: String| Failure::System {
        what: what.into(),
        err,
    };
    let cpu_notes = host
        .cpu_notes()
        .map_err(|e| sys("the CPU crash notes", e.to_string()))?;
    let vmcoreinfo = host.vmcoreinfo();
    if vmcoreinfo.is_none() {
        warn("no /sys/kernel/vmcoreinfo: the dump will lack VMCOREINFO (crash and makedumpfile need it)");
    }
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
            println!("  serial:       {}", o.serial);
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
    println!(
        "  lifeboat {} ({}): init_size {}, kernel_alignment {}",
        image.version,
        path.display(),
        mib(image.init_size),
        mib(image.kernel_alignment)
    );
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
    println!("  a Linux capture kernel here:");
    let show = |name: &str, spec: &str| match layout::eval_crashkernel(spec, ram) {
        Some(0) => println!("    {name:<28} crashkernel={spec} -> none at this RAM size"),
        Some(n) => println!("    {name:<28} crashkernel={spec} -> {}", mib(n)),
        None => {}
    };
    show("Debian kdump-tools default", layout::DEBIAN_KDUMP_TOOLS);
    show("RHEL/Fedora default", layout::RHEL_FEDORA);
    println!(
        "    note: the smallest reservation that worked for Debian 12's own kernel as capture kernel was {}M \
         (QEMU x86_64, 1 and 4 GiB guests)",
        layout::DEBIAN_MEASURED_MIN_MIB
    );
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
        assert!(matches!(
            check_options(&words("lifeboat.level=7")),
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
