//! The lifeboat capture kernel.
//!
//! Entered from `lifeboat_arch`'s entry code with its own stack and relocations applied. It
//! trusts only the boot protocol: it copies the boot information, builds its own GDT, IDT and
//! page tables, then treats everything the crashed kernel left behind (the elfcorehdr and the
//! memory it names) as untrusted input that is checked once before it is read.
#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod blk;
mod boot;
mod console;
mod klog;
mod net;
mod oldmem;
mod virtio;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use lifeboat_arch::current as arch;
#[cfg(target_arch = "x86_64")]
use lifeboat_capture::acpi;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use lifeboat_capture::blk::{BlockDevice, BlockSink};
use lifeboat_capture::cmdline::{self, Action, BlkSelector, CaptureOptions, NetTarget, SinkSpec};
use lifeboat_capture::dump::{self, DumpObserver, DumpParams, DumpSummary, FilterSelect, Progress, Verdict};
use lifeboat_capture::filter::{PageClass, PageFilter};
use lifeboat_capture::elfcore::{ElfCoreHeader, Limits};
use lifeboat_capture::flat::FlatEncoder;
use lifeboat_capture::frame::{ByteWrite, FrameWriter};
use lifeboat_capture::kdump::UtsName;
use lifeboat_capture::netproto::{self, Identity, NetOutcome, RetryPolicy};
use lifeboat_capture::phys::{PhysRange, PhysRead};
use lifeboat_capture::printk;
use lifeboat_capture::vtop::KernelVm;
use lifeboat_capture::sink::{RecordSink, SinkError};
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use linked_list_allocator::LockedHeap;
use oldmem::{OldMemory, SPACE};

/// Heap for the dump pipeline (compressor state, buffers, notes, the disk sink's write-back
/// buffer, the TCP send window). Fixed: it does not grow with the crashed machine's RAM.
const HEAP_SIZE: usize = 2 * 1024 * 1024;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);
static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

/// The heap, counting its peak use (printed at the end of every capture).
struct Heap {
    inner: LockedHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

// SAFETY: delegates to linked_list_allocator's LockedHeap; the counters are bookkeeping only.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract, which we pass on unchanged.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            let now = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: Heap = Heap { inner: LockedHeap::empty(), used: AtomicUsize::new(0), peak: AtomicUsize::new(0) };

/// Exit codes for the test harness's exit port.
const EXIT_COMPLETE: u32 = 0;
const EXIT_INCOMPLETE: u32 = 1;
const EXIT_FAILED: u32 = 2;

/// What to do at the end, readable from the fatal path (0 = unset).
static EXIT_PORT: AtomicU32 = AtomicU32::new(0);
static ACTION: AtomicU8 = AtomicU8::new(0);
/// ACPI RSDP from the boot protocol (0 = none), for power-off.
static RSDP: AtomicU64 = AtomicU64::new(0);
/// Old-memory access, set once our page tables are active.
static MEM: spin::Once<OldMemory> = spin::Once::new();

extern "C" {
    static __head_start: u8;
    static __image_end: u8;
    static __file_end: u8;
    static __stack_guard: u8;
}

fn image_layout() -> (u64, u64, u64, u64) {
    // Linker-script symbols: only their addresses are taken.
    (
        core::ptr::addr_of!(__head_start) as u64,
        core::ptr::addr_of!(__file_end) as u64,
        core::ptr::addr_of!(__image_end) as u64,
        core::ptr::addr_of!(__stack_guard) as u64,
    )
}

/// Our own memory (the whole image with bss and stack), identity-mapped read-write.
pub fn own_range() -> PhysRange {
    let (head, _, image_end, _) = image_layout();
    PhysRange { start: head, end: image_end }
}

fn action_of(a: Action) -> u8 {
    match a {
        Action::Reboot => 1,
        Action::Halt => 2,
        Action::Poweroff => 3,
    }
}

/// Report the end on the exit port (tests) and do the configured action (default reboot,
/// like kdump).
fn finish(code: u32) -> ! {
    let port = EXIT_PORT.load(Ordering::Relaxed);
    if port != 0 {
        arch::power::debug_exit(port as u16, code);
    }
    match ACTION.load(Ordering::Relaxed) {
        2 => {
            log!("halting");
            arch::power::halt()
        }
        3 => {
            log!("powering off");
            poweroff();
            arch::power::halt()
        }
        _ => {
            log!("rebooting");
            arch::power::reboot()
        }
    }
}

/// ACPI S5 with the sleep types found in the FADT and DSDT; returns if that is not possible.
#[cfg(target_arch = "x86_64")]
fn poweroff() {
    let found = match MEM.get() {
        Some(mem) => acpi::find_poweroff(mem, Some(RSDP.load(Ordering::Relaxed)).filter(|&a| a != 0)),
        None => Err(acpi::AcpiError::NoRsdp),
    };
    match found {
        Ok(p) => {
            arch::power::poweroff(p.pm1a_cnt, p.pm1b_cnt, p.slp_typa, p.slp_typb);
            log!("ACPI power-off did not take effect; halting instead");
        }
        Err(e) => log!("cannot power off ({}); halting instead", e),
    }
}

/// PSCI SYSTEM_OFF through the device tree's conduit; returns if that is not possible.
#[cfg(target_arch = "aarch64")]
fn poweroff() {
    if !arch::power::have_psci() {
        log!("cannot power off (the device tree names no PSCI); halting instead");
        return;
    }
    arch::power::poweroff();
    log!("PSCI SYSTEM_OFF did not take effect; halting instead");
}

/// Called for CPU exceptions and fatal errors: say what happened, mark the capture failed,
/// stop cleanly.
#[no_mangle]
fn lifeboat_fatal(msg: &str) -> ! {
    console::print_line_forced(format_args!("error: {}", msg));
    console::print_line_forced(format_args!(
        "heap peak {} KiB of {} KiB",
        HEAP.peak.load(Ordering::Relaxed) / 1024,
        HEAP_SIZE / 1024
    ));
    console::print_line_forced(format_args!("verdict: failed: {}", msg));
    finish(EXIT_FAILED)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut buf = arch::exceptions::FixedBuf::new();
    let _ = core::fmt::write(&mut buf, format_args!("internal error: {}", info));
    lifeboat_fatal(buf.as_str())
}

fn fail(msg: String) -> ! {
    lifeboat_fatal(&msg)
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// "12.3" for `num / den` with one decimal.
fn tenths(num: u64, den: u64) -> String {
    if den == 0 {
        return String::from("-");
    }
    let t = (num as u128 * 10 / den as u128) as u64;
    format!("{}.{}", t / 10, t % 10)
}

/// MB/s (10^6 bytes per second) from bytes and microseconds: bytes/µs.
fn mbps(bytes: u64, us: u64) -> String {
    tenths(bytes, us)
}

/// Hand the heap area to the allocator (once, from `boot::start`).
pub fn init_heap() {
    // SAFETY: HEAP_AREA is ours (bss) and handed to the allocator exactly once.
    unsafe { HEAP.inner.lock().init(core::ptr::addr_of_mut!(HEAP_AREA) as *mut u8, HEAP_SIZE) };
}

/// Called by `lifeboat_arch`'s entry code: `protocol` says how we were entered (x86: Linux
/// boot protocol or PVH; arm64: the exception level), `boot_info` is the boot protocol's
/// structure (x86 `boot_params` / PVH start info; arm64 the device tree).
#[no_mangle]
extern "C" fn lifeboat_main(protocol: u32, boot_info: u64, image_base: u64) -> ! {
    let t_start = arch::timer::ticks();
    arch::exceptions::init();
    let (head, file_end, image_end, guard) = image_layout();
    let own = PhysRange { start: head, end: image_end };
    let boot = boot::start(protocol, boot_info, own, guard);
    log!(
        "lifeboat {} capture kernel ({}), entered via {} at {:#x}: image {} KiB, runtime memory {} KiB",
        env!("CARGO_PKG_VERSION"),
        arch::MACHINE_NAME,
        boot.protocol,
        image_base,
        (file_end - head) / 1024,
        (image_end - head) / 1024
    );

    // Our own page tables are active: only our image is mapped; old memory is mapped
    // read-only when it is read.
    let max_phys = (1u64 << arch::cpu::phys_addr_bits()).min(arch::paging::IDENTITY_LIMIT);
    MEM.call_once(|| OldMemory { own, max_phys });
    RSDP.store(boot.rsdp.unwrap_or(0), Ordering::Relaxed);
    let calibrated = arch::timer::calibrate();

    let (opts, warnings) = cmdline::parse(&boot.cmdline);
    if let Some(port) = opts.exit_port {
        EXIT_PORT.store(u32::from(port), Ordering::Relaxed);
    }
    ACTION.store(action_of(opts.action), Ordering::Relaxed);
    log!("command line: {}", boot.cmdline);
    for w in boot.warnings.iter().chain(&warnings) {
        log!("warning: {}", w);
    }
    if !calibrated {
        log!("warning: the timer frequency is unknown; rates assume a guessed clock");
    }
    if !boot.usable.iter().any(|r| r.start <= own.start && own.end <= r.end) {
        log!("warning: the boot memory map does not list our image {} as usable RAM", own);
    }
    capture(&opts, &boot, own, t_start)
}

struct SerialOut {
    /// `None`: the sink shares the console's UART.
    own_port: Option<arch::serial::SerialPort>,
}

impl ByteWrite for SerialOut {
    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
        let r = match self.own_port.as_mut() {
            Some(p) => p.write_all(b, console::STUCK_SPINS),
            None => match console::CONSOLE.lock().as_mut() {
                Some(p) => p.write_all(b, console::STUCK_SPINS),
                None => return Err(SinkError::Io("the console UART is not present")),
            },
        };
        r.map_err(|_| SinkError::Io("serial line stuck: no progress for about a second"))
    }
}

struct ConsoleProgress {
    t0: u64,
    /// Still in the first pass (classifying pages).
    counting: bool,
    last_print: u64,
    page_size: u64,
    printed_final: bool,
}

impl ConsoleProgress {
    fn new(page_size: u32) -> Self {
        let t0 = arch::timer::now_us();
        ConsoleProgress {
            t0,
            counting: true,
            last_print: t0,
            page_size: u64::from(page_size),
            printed_final: false,
        }
    }
}

impl DumpObserver for ConsoleProgress {
    fn progress(&mut self, p: &Progress) {
        let now = arch::timer::now_us();
        if p.counting {
            if now.saturating_sub(self.last_print) >= 2_000_000 {
                self.last_print = now;
                log!(
                    "choosing pages: {}% of {} pages examined",
                    (p.pages_done * 100).checked_div(p.pages_total).unwrap_or(100),
                    p.pages_total
                );
            }
            return;
        }
        if self.counting {
            self.counting = false;
            log!(
                "writing {} pages ({} MiB); headers, bitmaps and choosing the pages took {} s",
                p.pages_total,
                mib(p.pages_total * self.page_size),
                tenths(now.saturating_sub(self.t0), 1_000_000)
            );
            self.t0 = now;
            self.last_print = now;
        }
        let finished = p.pages_done == p.pages_total;
        if (now.saturating_sub(self.last_print) < 2_000_000 && !finished) || self.printed_final {
            return;
        }
        self.printed_final = finished;
        self.last_print = now;
        let done = p.pages_done * self.page_size;
        log!(
            "{}% {} of {} MiB, {} MB/s, dump {} MiB so far",
            (p.pages_done * 100).checked_div(p.pages_total).unwrap_or(100),
            mib(done),
            mib(p.pages_total * self.page_size),
            mbps(done, now.saturating_sub(self.t0)),
            tenths(p.bytes_out, 1 << 20)
        );
        if finished {
            let ms = |t: u64| t / arch::timer::ticks_per_ms().max(1);
            let t = &p.time;
            log!(
                "time: choosing pages {} ms, reading {} ms, zero check {} ms, compressing {} ms, sink {} ms",
                ms(t.choose),
                ms(t.read),
                ms(t.zero),
                ms(t.compress),
                ms(t.sink)
            );
        }
    }

    fn now(&mut self) -> u64 {
        arch::timer::ticks()
    }
}

/// Passes records on and remembers the sink's first failure, so a dump cut short by its sink
/// (a full disk, a lost server) is told apart from one with unreadable memory.
struct SinkWatch<'a> {
    inner: &'a mut dyn RecordSink,
    error: Option<SinkError>,
}

impl RecordSink for SinkWatch<'_> {
    fn record(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let r = self.inner.record(offset, data);
        if let Err(e) = &r {
            self.error.get_or_insert_with(|| e.clone());
        }
        r
    }
}

/// Everything a sink needs to write the dump.
struct Job<'a> {
    core: &'a ElfCoreHeader,
    params: &'a DumpParams,
    mem: &'a dyn PhysRead,
    ram_total: u64,
    release: &'a str,
    /// The crashed kernel's VMCOREINFO and page tables, when it has them (the kernel log and
    /// the page filter need both).
    kernel: Option<(&'a VmcoreInfo<'a>, &'a KernelVm<'a>)>,
    /// The page filter (dump levels 2..31); `None` keeps every page.
    select: RefCell<Option<FilterSelect<'a>>>,
}

impl Job<'_> {
    fn write(&self, sink: &mut dyn RecordSink) -> (DumpSummary, Option<SinkError>) {
        let mut watch = SinkWatch { inner: sink, error: None };
        let mut obs = ConsoleProgress::new(self.params.page_size);
        let mut select = self.select.borrow_mut();
        let summary = match select.as_mut() {
            Some(f) => dump::write_kdump_filtered(self.core, self.params, self.mem, f, &mut watch, &mut obs),
            None => dump::write_kdump(self.core, self.params, self.mem, &mut watch, &mut obs),
        };
        if let Some(f) = select.as_ref() {
            report_filter(f, self.params.page_size);
        }
        (summary, watch.error)
    }
}

/// What one sink did with the dump.
struct SinkRun {
    summary: DumpSummary,
    /// Bytes that left through the device (stream bytes with framing, or disk bytes).
    wire_bytes: u64,
    /// "over serial", "to virtio-blk at …", "to server …".
    place: String,
    /// Set when the sink, not the memory, cut the dump short: a later sink may do better.
    sink_failed: Option<String>,
    /// Extra words for the verdict (e.g. where the server stored it).
    note: Option<String>,
}

enum Attempt {
    Ran(SinkRun),
    /// The sink could not start (no such device, no server): nothing was written.
    Unavailable(String),
}

/// Why a stream carries no kernel log when `Job::kernel` is `None` (the console said more
/// when the capture began).
const KLOG_WHY_NOT: &str = "the crashed kernel's VMCOREINFO or page tables are missing or unusable";

fn run_serial(opts: &CaptureOptions, job: &Job) -> Attempt {
    let own_port = if opts.serial.port == arch::serial::COM1 {
        None
    } else {
        match arch::serial::SerialPort::new(opts.serial.port, opts.serial.baud) {
            Ok(p) => Some(p),
            Err(e) => return Attempt::Unavailable(format!("serial: {}", e)),
        }
    };
    #[cfg(target_arch = "x86_64")]
    log!("sink: serial at I/O port {:#x}, {} baud, framed (docs/serial-framing.md)", opts.serial.port, opts.serial.baud);
    #[cfg(target_arch = "aarch64")]
    log!("sink: serial on the console UART (the device tree's stdout-path), framed (docs/serial-framing.md)");
    let info = format!(
        "lifeboat {} {} release={} ram_bytes={}",
        env!("CARGO_PKG_VERSION"),
        arch::MACHINE_NAME,
        job.release,
        job.ram_total
    );
    let mut frames = match FrameWriter::new(SerialOut { own_port }, &info) {
        Ok(f) => f,
        Err(e) => return Attempt::Unavailable(format!("serial: {}", e)),
    };
    // The crashed kernel's whole log first (LOG frames, LOG_END), then the dump.
    {
        let mut framer = lifeboat_capture::frame::LogFramer::new(&mut frames);
        let outcome = klog::send(job.kernel, KLOG_WHY_NOT, &mut framer);
        if let Err(e) = framer.finish(&outcome) {
            log!("serial: the kernel log could not be sent: {}", e);
        }
    }
    let ((summary, sink_error), flat_result) = {
        let mut flat = match FlatEncoder::new(&mut frames) {
            Ok(f) => f,
            Err(e) => return Attempt::Unavailable(format!("serial: {}", e)),
        };
        let written = job.write(&mut flat);
        let flat_result = flat.finish();
        (written, flat_result)
    };
    let mut sink_failed = sink_error.map(|e| format!("serial: {}", e));
    if let Err(e) = &flat_result {
        sink_failed.get_or_insert_with(|| format!("the end of the stream could not be sent: {}", e));
    }
    let stream_bytes = frames.stream_bytes();
    let reason = match (&summary.verdict, &sink_failed) {
        (_, Some(why)) => why.clone(),
        (Verdict::Incomplete(why), None) => why.clone(),
        (Verdict::Complete, None) => String::new(),
    };
    if let Err(e) = frames.finish(reason.is_empty(), &reason) {
        sink_failed.get_or_insert_with(|| format!("the END frame could not be sent: {}", e));
    }
    Attempt::Ran(SinkRun { summary, wire_bytes: stream_bytes, place: String::from("over serial"), sink_failed, note: None })
}

fn run_blk(sel: &BlkSelector, job: &Job) -> Attempt {
    let disk = match blk::open(sel) {
        Ok(d) => d,
        Err(e) => return Attempt::Unavailable(e),
    };
    let place = format!("to {}", disk.description);
    let capacity = disk.capacity_bytes();
    log!("sink: {}; the dump is written at offset 0 (read it with `lifeboat fetch` or `crash vmlinux <disk>`)", disk.description);
    let mut sink = match BlockSink::new(disk) {
        Ok(s) => s,
        Err(e) => return Attempt::Unavailable(format!("{}: {}", place, e)),
    };
    // The crashed kernel's whole log first, in its region at the end of the disk (flushed,
    // with its trailer) before any dump byte; the dump's capacity ends where the region starts.
    klog::to_disk(&mut sink, job.kernel, KLOG_WHY_NOT);
    let (summary, sink_error) = job.write(&mut sink);
    let written = sink.bytes_written();
    let mut sink_failed = match sink_error {
        Some(SinkError::Full { limit }) => Some(format!(
            "the disk ({} MiB, the last {} bytes kept for the kernel log) is too small: the first {} MiB of the dump are on it, marked incomplete",
            capacity >> 20,
            capacity.saturating_sub(limit),
            written >> 20
        )),
        Some(e) => Some(format!("disk: {}", e)),
        None => None,
    };
    if let Err(e) = sink.finish() {
        sink_failed.get_or_insert_with(|| format!("disk: the header could not be written: {}", e));
    }
    Attempt::Ran(SinkRun { summary, wire_bytes: written, place, sink_failed, note: None })
}

fn run_net(target: &NetTarget, opts: &CaptureOptions, job: &Job) -> Attempt {
    let stack = match net::open(&opts.net, *target) {
        Ok(s) => s,
        Err(e) => return Attempt::Unavailable(format!("net: {}", e)),
    };
    log!("sink: dump server {} through {} (docs/net-protocol.md)", target, stack.description);
    let identity = Identity {
        host: opts.host.clone().unwrap_or_else(|| String::from(UtsName::get(&job.params.utsname.nodename).unwrap_or(""))),
        release: String::from(job.release),
        machine: String::from(arch::MACHINE_NAME),
        boot_id: opts.boot_id.clone().unwrap_or_default(),
        crash_time: job.params.timestamp,
        ram_bytes: job.ram_total,
        lifeboat: String::from(env!("CARGO_PKG_VERSION")),
    };
    let mut connector = net::TcpConnector(Rc::new(RefCell::new(stack)));
    let policy = RetryPolicy { wait_ms: u64::from(opts.net.wait_secs) * 1000, reply_timeout_ms: 120_000 };
    let mut log_once =
        |out: &mut dyn lifeboat_capture::frame::LogWrite| klog::send(job.kernel, KLOG_WHY_NOT, out);
    let mut dump_once = |sink: &mut dyn RecordSink| job.write(sink).0;
    let outcome =
        netproto::send_dump(&mut connector, &identity, &policy, &mut net::log_event, &mut log_once, &mut dump_once);
    let place = format!("to dump server {}", target);
    match outcome {
        NetOutcome::Stored { name, summary, attempts, stream_bytes } => Attempt::Ran(SinkRun {
            summary,
            wire_bytes: stream_bytes,
            place,
            sink_failed: None,
            note: Some(format!("stored by the server as {} (attempt {})", name, attempts)),
        }),
        NetOutcome::Failed { why, summary: Some(summary), .. } => Attempt::Ran(SinkRun {
            summary,
            wire_bytes: 0,
            place,
            sink_failed: Some(format!("net: {}", why)),
            note: None,
        }),
        NetOutcome::Failed { why, summary: None, .. } => Attempt::Unavailable(format!("net: {}", why)),
    }
}

fn capture(opts: &CaptureOptions, boot: &boot::Boot, own: PhysRange, t_start: u64) -> ! {
    // The command line's elfcorehdr= (x86, tests), else the device tree's (arm64 kexec).
    let from_dt = boot.elfcorehdr.map(|r| cmdline::ElfCoreHdrArg { addr: r.start, size: Some(r.end - r.start) });
    let Some(hdr) = opts.elfcorehdr.or(from_dt) else {
        fail(String::from(
            "no elfcorehdr (command line or device tree): lifeboat runs as a crash kernel, loaded by `kexec -p` or `lifeboat load`",
        ));
    };
    let mem = MEM.get().expect("old-memory access is set up before the capture");
    let max_phys = mem.max_phys;
    let ram = boot.lists_all_ram.then(|| boot.ram.clone());
    let limits = Limits { max_phys, own: alloc::vec![own], ram, machine: arch::ELF_MACHINE, hdr_size: hdr.size };
    let core = match ElfCoreHeader::parse(mem, hdr.addr, &limits) {
        Ok(c) => c,
        Err(e) => fail(format!("elfcorehdr at {:#x}: {}", hdr.addr, e)),
    };
    for w in &core.warnings {
        log!("warning: {}", w);
    }
    // The crashed kernel's RAM, as its PT_LOADs name it (arm64 maps only RAM with blocks).
    if let Some(space) = SPACE.lock().as_mut() {
        for l in &core.loads {
            space.add_ram(l.src, l.src + l.len);
        }
    }
    let (mut params, warnings) = dump::dump_params(&core, mem, arch::MACHINE_NAME);
    for w in &warnings {
        log!("warning: {}", w);
    }
    let info = core.vmcoreinfo.clone().and_then(|r| core.notes.get(r)).map(VmcoreInfo::new);
    let release = info.as_ref().and_then(|i| i.osrelease()).map_or_else(|| String::from("unknown"), String::from);
    let ram_total: u64 = core.loads.iter().map(|l| l.len).sum();
    log!(
        "crashed kernel: Linux {} ({}), {} CPU(s), page size {}, {} RAM range(s), {} MiB to dump",
        release,
        arch::MACHINE_NAME,
        core.nr_cpus,
        params.page_size,
        core.loads.len(),
        mib(ram_total)
    );
    for (i, l) in core.loads.iter().enumerate() {
        if i == 16 {
            log!("  ... and {} more", core.loads.len() - 16);
            break;
        }
        if l.src != l.paddr {
            log!("  RAM [{:#x}-{:#x}) {} KiB (copy at {:#x})", l.paddr, l.paddr + l.len, l.len / 1024, l.src);
        } else {
            log!("  RAM [{:#x}-{:#x}) {} KiB", l.paddr, l.paddr + l.len, l.len / 1024);
        }
    }

    let vm = match &info {
        Some(info) => KernelVm::new(info, mem, arch::ELF_MACHINE).map_err(|e| format!("{}", e)),
        None => Err(String::from("no VMCOREINFO")),
    };
    let kernel = match (&info, &vm) {
        (Some(info), Ok(vm)) => Some((info, vm)),
        _ => None,
    };
    match (kernel, &vm) {
        (Some((info, vm)), _) => print_kernel_log(info, vm),
        (None, Err(why)) => log!("kernel log: not available ({})", why),
        (None, Ok(_)) => unreachable!("a page-table walker needs VMCOREINFO"),
    }

    let select = page_filter(opts.level, kernel, dump::max_pfn(&core, params.page_size));
    params.dump_level = u32::from(select.as_ref().map_or(opts.level & LEVEL_ZERO, |f| f.filter.effective_level()));
    log!("{}", describe_level(opts.level, params.dump_level as u8));
    log!(
        "memory before the dump: heap {} KiB in use (peak {} KiB) of {} KiB, page tables {} KiB",
        HEAP.used.load(Ordering::Relaxed) / 1024,
        HEAP.peak.load(Ordering::Relaxed) / 1024,
        HEAP_SIZE / 1024,
        SPACE.lock().as_ref().map_or(0, |s| s.frames_used() * 4)
    );

    let job = Job {
        core: &core,
        params: &params,
        mem,
        ram_total,
        release: &release,
        kernel,
        select: RefCell::new(select),
    };
    let n = opts.sinks.len();
    let mut failures: Vec<String> = Vec::new();
    let mut last_run: Option<(usize, SinkRun)> = None;
    for (i, spec) in opts.sinks.iter().enumerate() {
        if n > 1 {
            log!("sink {} of {}: {}", i + 1, n, spec);
        }
        let t0 = arch::timer::now_us();
        let attempt = match spec {
            SinkSpec::Serial => run_serial(opts, &job),
            SinkSpec::Blk(sel) => run_blk(sel, &job),
            SinkSpec::Net(target) => run_net(target, opts, &job),
        };
        match attempt {
            Attempt::Unavailable(why) => {
                log!("sink {} ({}) not used: {}", i + 1, spec, why);
                failures.push(format!("{}: {}", spec, why));
            }
            Attempt::Ran(run) => {
                report_run(&run, arch::timer::now_us().saturating_sub(t0).max(1), t_start);
                let cut_short = run.sink_failed.clone();
                last_run = Some((i, run));
                match cut_short {
                    Some(why) if i + 1 < n => {
                        log!("sink {} ({}) did not take the whole dump: {}; trying the next sink", i + 1, spec, why);
                        failures.push(format!("{}: {}", spec, why));
                    }
                    _ => break,
                }
            }
        }
    }
    let Some((i, run)) = last_run else {
        fail(format!("no sink could take the dump: {}", failures.join("; ")));
    };
    if n > 1 {
        log!("sink {} of {} ({}) took the dump {}", i + 1, n, opts.sinks[i], run.place);
    }
    if let Some(note) = &run.note {
        log!("{}", note);
    }
    let why = match (&run.sink_failed, &run.summary.verdict) {
        (Some(why), _) => Some(why.clone()),
        (None, Verdict::Incomplete(why)) => Some(why.clone()),
        (None, Verdict::Complete) => None,
    };
    match why {
        None => {
            log!("verdict: complete");
            finish(EXIT_COMPLETE)
        }
        Some(why) => {
            log!("verdict: incomplete: {}", why);
            finish(EXIT_INCOMPLETE)
        }
    }
}

/// Dump level bit 1: zero pages (decided by the writer from page contents).
const LEVEL_ZERO: u8 = 1;
/// Dump level bits decided from `struct page`s (cache, private cache, user, free).
const LEVEL_STRUCT_PAGE: u8 = 2 | 4 | 8 | 16;

/// The page filter for dump level `level`, or `None` when the level needs none or the crashed
/// kernel did not leave what it needs (then only zero pages are left out, and the console
/// says why).
fn page_filter<'a>(
    level: u8,
    kernel: Option<(&'a VmcoreInfo<'a>, &'a KernelVm<'a>)>,
    max_pfn: u64,
) -> Option<FilterSelect<'a>> {
    if level & LEVEL_STRUCT_PAGE == 0 {
        return None;
    }
    let Some((info, vm)) = kernel else {
        log!("warning: page filter: the crashed kernel's VMCOREINFO or page tables are not usable: cache, user and free pages are kept");
        return None;
    };
    match PageFilter::new(info, vm, level, max_pfn) {
        Ok((filter, warnings)) => {
            for w in &warnings {
                log!("warning: {}", w);
            }
            Some(FilterSelect::new(filter))
        }
        Err(e) => {
            log!("warning: page filter: {}: cache, user and free pages are kept", e);
            None
        }
    }
}

/// "dump level 31 (as makedumpfile -d 31): ..." for the console.
fn describe_level(asked: u8, level: u8) -> String {
    let mut left_out: Vec<&str> = Vec::new();
    for (bit, what) in [(1, "zero pages shared"), (2, "cache"), (4, "private cache"), (8, "user data"), (16, "free pages")] {
        if level & bit != 0 {
            left_out.push(what);
        }
    }
    let what = if left_out.is_empty() { String::from("every page dumped") } else { left_out.join(", ") };
    if asked == level {
        format!("dump level {} (as makedumpfile -d {}): {}", level, level, what)
    } else {
        format!("dump level {} instead of {} (see the warnings above): {}", level, asked, what)
    }
}

/// What the page filter left out in the last pass.
fn report_filter(f: &FilterSelect, page_size: u32) {
    let mut parts: Vec<String> = Vec::new();
    for c in PageClass::ALL {
        if c.is_excluded() && f.counts[c.index()] > 0 {
            parts.push(format!("{} {}", c.name(), f.counts[c.index()]));
        }
    }
    let excluded = f.excluded();
    log!(
        "page filter: {} pages ({} MiB) left out{}{}",
        excluded,
        mib(excluded * u64::from(page_size)),
        if parts.is_empty() { String::new() } else { format!(": {}", parts.join(", ")) },
        match f.doubtful() {
            0 => String::new(),
            n => format!("; {} pages kept because their struct page was unreadable or implausible", n),
        }
    );
    if let Some(e) = f.error {
        log!("warning: page filter: {}: those pages were kept", e);
    }
}

/// Lines of the crashed kernel's log shown on the console: from about this many records
/// before the last panic/Oops/BUG line to the end.
const LOG_TAIL_RECORDS: usize = 50;

/// Prints the end of the crashed kernel's log (decoded from its printk ring buffer in old
/// memory) before the dump starts, so the console says why the machine crashed even if the
/// dump never arrives.
fn print_kernel_log(info: &VmcoreInfo, vm: &KernelVm) {
    // Only the end of the log is kept: memory stays bounded however large the crashed
    // kernel's log buffer was.
    match printk::read_log_tail(info, vm, 2 * LOG_TAIL_RECORDS) {
        Ok((log, total)) => {
            let tail = log.panic_tail(LOG_TAIL_RECORDS);
            log!(
                "kernel log of the crashed kernel: {} records; the last {} (from the panic on):",
                total,
                tail.len()
            );
            for r in tail {
                for line in r.dmesg_line().lines() {
                    log!("| {}", line);
                }
            }
            log!("kernel log ends");
        }
        Err(why) => log!("kernel log: not available ({})", why),
    }
}

/// The summary lines after each sink run.
fn report_run(run: &SinkRun, us: u64, t_start: u64) {
    let summary = &run.summary;
    let boot_ms = (arch::timer::ticks().saturating_sub(t_start)) / arch::timer::ticks_per_ms().max(1);
    log!(
        "dumped {} MiB of RAM in {} s ({} MB/s): {} pages, {} zero, {} compressed, {} raw, {} unreadable",
        mib(summary.ram_bytes),
        tenths(us, 1_000_000),
        mbps(summary.ram_bytes, us),
        summary.pages_total,
        summary.pages_zero,
        summary.pages_compressed,
        summary.pages_raw,
        summary.pages_unreadable
    );
    // One lock: a second `SPACE.lock()` in the same statement would spin forever.
    let tables = SPACE.lock().as_ref().map_or((0, 0), |s| (s.frames_used() * 4, s.recycled()));
    log!(
        "dump file {} bytes (compression ratio {}), {} bytes sent {} ({} MB/s), {} ms since entry, heap peak {} KiB of {} KiB, page tables {} KiB ({} directories of old memory recycled)",
        summary.file_bytes,
        tenths(summary.ram_bytes, summary.file_bytes),
        run.wire_bytes,
        run.place,
        mbps(run.wire_bytes, us),
        boot_ms,
        HEAP.peak.load(Ordering::Relaxed) / 1024,
        HEAP_SIZE / 1024,
        tables.0,
        tables.1
    );
}
