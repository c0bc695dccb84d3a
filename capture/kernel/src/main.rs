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

mod console;
mod oldmem;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use lifeboat_arch::current as arch;
use lifeboat_arch::current::bootinfo::BootInfo;
use lifeboat_capture::acpi;
use lifeboat_capture::cmdline::{self, Action, CaptureOptions};
use lifeboat_capture::dump::{self, DumpObserver, Progress, Verdict};
use lifeboat_capture::elfcore::{ElfCoreHeader, Limits};
use lifeboat_capture::flat::FlatEncoder;
use lifeboat_capture::frame::{ByteWrite, FrameWriter};
use lifeboat_capture::phys::PhysRange;
use lifeboat_capture::sink::SinkError;
use lifeboat_capture::vmcoreinfo::VmcoreInfo;
use linked_list_allocator::LockedHeap;
use oldmem::{OldMemory, SPACE};

/// Heap for the dump pipeline (compressor state, buffers, notes). Fixed: it does not grow
/// with the crashed machine's RAM.
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
            arch::power::halt()
        }
        _ => {
            log!("rebooting");
            arch::power::reboot()
        }
    }
}

/// Called for CPU exceptions and fatal errors: say what happened, mark the capture failed,
/// stop cleanly.
#[no_mangle]
fn lifeboat_fatal(msg: &str) -> ! {
    console::print_line_forced(format_args!("error: {}", msg));
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

/// Read physical memory through the boot loader's identity map (only for boot structures,
/// before our own page tables are active).
fn boot_read(addr: u64, buf: &mut [u8]) -> bool {
    if addr.checked_add(buf.len() as u64).is_none() {
        return false;
    }
    // SAFETY: the boot protocol guarantees these structures are mapped and readable; they
    // are not our memory, so they cannot alias `buf`.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rsi") addr => _,
            inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _,
            options(nostack, preserves_flags)
        );
    }
    true
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

#[no_mangle]
extern "C" fn lifeboat_main(protocol: u32, boot_info: u64, image_base: u64) -> ! {
    let t_start = arch::timer::rdtsc();
    arch::exceptions::init();
    let _ = console::init(arch::serial::COM1, 115_200);
    let (head, file_end, image_end, guard) = image_layout();
    let proto_name = if protocol == arch::entry::PROTOCOL_PVH { "PVH" } else { "Linux x86 boot protocol (kexec)" };
    log!(
        "lifeboat {} capture kernel ({}), entered via {} at {:#x}: image {} KiB, runtime memory {} KiB",
        env!("CARGO_PKG_VERSION"),
        arch::MACHINE_NAME,
        proto_name,
        image_base,
        (file_end - head) / 1024,
        (image_end - head) / 1024
    );

    // SAFETY: HEAP_AREA is ours (bss) and handed to the allocator exactly once.
    unsafe { HEAP.inner.lock().init(core::ptr::addr_of_mut!(HEAP_AREA) as *mut u8, HEAP_SIZE) };

    let boot = match protocol {
        arch::entry::PROTOCOL_PVH => BootInfo::from_pvh(boot_read, boot_info),
        _ => BootInfo::from_boot_params(boot_read, boot_info),
    };
    let boot = match boot {
        Ok(b) => alloc::boxed::Box::new(b),
        Err(e) => fail(format!("cannot read the boot information: {}", e)),
    };

    // Our own page tables: from here on only our image is mapped; old memory is mapped
    // read-only when it is read.
    let own = PhysRange { start: head, end: image_end };
    match arch::paging::AddressSpace::new(own.start, own.end, guard, arch::cpu::has_gib_pages()) {
        Ok(space) => {
            // SAFETY: code, stack, heap, statics and the boot copies are all inside `own`.
            unsafe { space.activate() };
            *SPACE.lock() = Some(space);
        }
        Err(e) => fail(format!("cannot build page tables: {}", e)),
    }
    let max_phys = (1u64 << arch::cpu::phys_addr_bits()).min(arch::paging::IDENTITY_LIMIT);
    MEM.call_once(|| OldMemory { own, max_phys });
    RSDP.store(boot.rsdp.unwrap_or(0), Ordering::Relaxed);
    let calibrated = arch::timer::calibrate();

    let (opts, warnings) = cmdline::parse(boot.cmdline());
    if let Some(port) = opts.exit_port {
        EXIT_PORT.store(u32::from(port), Ordering::Relaxed);
    }
    ACTION.store(action_of(opts.action), Ordering::Relaxed);
    log!("command line: {}", boot.cmdline());
    for w in &warnings {
        log!("warning: {}", w);
    }
    if !calibrated {
        log!("warning: no PIT to calibrate the TSC; rates assume a 2 GHz clock");
    }
    if !boot.regions().iter().any(|r| r.ram && r.start <= own.start && own.end <= r.end) {
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
    last_print: u64,
    ram_total: u64,
    page_size: u64,
    printed_final: bool,
}

impl DumpObserver for ConsoleProgress {
    fn progress(&mut self, p: &Progress) {
        let now = arch::timer::now_us();
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
            mib(self.ram_total),
            mbps(done, now.saturating_sub(self.t0)),
            tenths(p.bytes_out, 1 << 20)
        );
    }
}

fn capture(opts: &CaptureOptions, boot: &BootInfo, own: PhysRange, t_start: u64) -> ! {
    let Some(hdr) = opts.elfcorehdr else {
        fail(String::from(
            "no elfcorehdr= on the command line: lifeboat runs as a crash kernel, loaded by `kexec -p` or `lifeboat load`",
        ));
    };
    let mem = MEM.get().expect("old-memory access is set up before the capture");
    let max_phys = mem.max_phys;
    let ram = boot.map_lists_all_ram().then(|| {
        boot.regions().iter().filter(|r| r.ram).map(|r| PhysRange { start: r.start, end: r.end }).collect()
    });
    let limits = Limits { max_phys, own: alloc::vec![own], ram, machine: arch::ELF_MACHINE, hdr_size: hdr.size };
    let core = match ElfCoreHeader::parse(mem, hdr.addr, &limits) {
        Ok(c) => c,
        Err(e) => fail(format!("elfcorehdr at {:#x}: {}", hdr.addr, e)),
    };
    for w in &core.warnings {
        log!("warning: {}", w);
    }
    let (params, warnings) = dump::dump_params(&core, mem, arch::MACHINE_NAME);
    for w in &warnings {
        log!("warning: {}", w);
    }
    let release = core
        .vmcoreinfo
        .clone()
        .and_then(|r| core.notes.get(r))
        .and_then(|d| VmcoreInfo::new(d).osrelease().map(String::from))
        .unwrap_or_else(|| String::from("unknown"));
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

    let own_port = if opts.serial.port == arch::serial::COM1 {
        None
    } else {
        match arch::serial::SerialPort::new(opts.serial.port, opts.serial.baud) {
            Ok(p) => Some(p),
            Err(e) => fail(format!("serial sink: {}", e)),
        }
    };
    log!("sink: serial at I/O port {:#x}, {} baud, framed (docs/serial-framing.md)", opts.serial.port, opts.serial.baud);
    let info = format!(
        "lifeboat {} {} release={} ram_bytes={}",
        env!("CARGO_PKG_VERSION"),
        arch::MACHINE_NAME,
        release,
        ram_total
    );
    let t0 = arch::timer::now_us();
    let mut frames = match FrameWriter::new(SerialOut { own_port }, &info) {
        Ok(f) => f,
        Err(e) => fail(format!("serial sink: {}", e)),
    };
    let mut observer = ConsoleProgress { t0, last_print: t0, ram_total, page_size: u64::from(params.page_size), printed_final: false };
    let (summary, flat_result) = {
        let mut flat = match FlatEncoder::new(&mut frames) {
            Ok(f) => f,
            Err(e) => fail(format!("serial sink: {}", e)),
        };
        let summary = dump::write_kdump(&core, &params, mem, &mut flat, &mut observer);
        let flat_result = flat.finish();
        (summary, flat_result)
    };
    let mut verdict = match &summary.verdict {
        Verdict::Complete => None,
        Verdict::Incomplete(why) => Some(why.clone()),
    };
    if let Err(e) = &flat_result {
        verdict.get_or_insert_with(|| format!("the end of the stream could not be sent: {}", e));
    }
    let stream_bytes = frames.stream_bytes();
    let end = frames.finish(verdict.is_none(), verdict.as_deref().unwrap_or(""));
    if let Err(e) = &end {
        verdict.get_or_insert_with(|| format!("the END frame could not be sent: {}", e));
    }
    let us = arch::timer::now_us().saturating_sub(t0).max(1);
    let boot_ms = (arch::timer::rdtsc().saturating_sub(t_start)) / arch::timer::tsc_per_ms().max(1);
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
    log!(
        "dump file {} bytes (compression ratio {}), {} bytes sent over serial ({} MB/s), {} ms since entry, heap peak {} KiB of {} KiB, page tables {} KiB",
        summary.file_bytes,
        tenths(summary.ram_bytes, summary.file_bytes),
        stream_bytes,
        mbps(stream_bytes, us),
        boot_ms,
        HEAP.peak.load(Ordering::Relaxed) / 1024,
        HEAP_SIZE / 1024,
        SPACE.lock().as_ref().map_or(0, |s| s.frames_used() * 4)
    );
    match verdict {
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
