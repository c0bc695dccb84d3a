//! Start-up up to the point where both architectures are alike: the console, the heap, our
//! own page tables, and what the boot protocol told us, in one shape ([`Boot`]).
//!
//! - x86_64: the console (COM1) first, then `boot_params` or PVH start info, read through
//!   the loader's identity map, then our page tables.
//! - aarch64: our page tables first (the MMU is off at entry, and memory is then Device
//!   memory, where atomics and caches do not work as the rest of the kernel expects), then
//!   the device tree, and the console it names.

use alloc::string::String;
use alloc::vec::Vec;

use lifeboat_arch::current as arch;
use lifeboat_capture::phys::PhysRange;

use crate::oldmem::SPACE;
use crate::{fail, init_heap};
#[allow(unused_imports)]
use alloc::format;

/// What the boot protocol told us.
pub struct Boot {
    /// How we were entered, for the first console line.
    pub protocol: &'static str,
    pub cmdline: String,
    /// RAM the boot information lists.
    pub ram: Vec<PhysRange>,
    /// `ram` is all of the crashed machine's RAM (PVH; arm64 `/memory` nodes), not only the
    /// capture kernel's own (a kexec boot's E820 map).
    pub lists_all_ram: bool,
    /// Memory lifeboat may use, when the boot information says (x86 E820 RAM; arm64
    /// `linux,usable-memory-range`).
    pub usable: Vec<PhysRange>,
    /// ACPI RSDP, if the loader passed one (x86).
    pub rsdp: Option<u64>,
    /// The ELF core header from the device tree (`/chosen/linux,elfcorehdr`, arm64).
    pub elfcorehdr: Option<PhysRange>,
    pub warnings: Vec<String>,
}

#[cfg(target_arch = "x86_64")]
pub fn start(protocol: u32, boot_info: u64, own: PhysRange, guard: u64) -> Boot {
    use lifeboat_arch::current::bootinfo::BootInfo;

    if let Ok(port) = arch::serial::SerialPort::new(arch::serial::COM1, 115_200) {
        crate::console::install(port);
    }
    init_heap();

    /// Read physical memory through the boot loader's identity map (only for boot
    /// structures, before our own page tables are active; they are not our memory, so they
    /// cannot alias `buf`).
    fn boot_read(addr: u64, buf: &mut [u8]) -> bool {
        if addr.checked_add(buf.len() as u64).is_none() {
            return false;
        }
        crate::oldmem::copy_from_phys(addr, buf);
        true
    }
    let pvh = protocol == arch::entry::PROTOCOL_PVH;
    let info = match pvh {
        true => BootInfo::from_pvh(boot_read, boot_info),
        false => BootInfo::from_boot_params(boot_read, boot_info),
    };
    let info = match info {
        Ok(b) => alloc::boxed::Box::new(b),
        Err(e) => fail(format!("cannot read the boot information: {}", e)),
    };
    activate_paging(own, guard);
    let ram: Vec<PhysRange> =
        info.regions().iter().filter(|r| r.ram).map(|r| PhysRange { start: r.start, end: r.end }).collect();
    Boot {
        protocol: if pvh { "PVH" } else { "Linux x86 boot protocol (kexec)" },
        cmdline: String::from(info.cmdline()),
        usable: ram.clone(),
        ram,
        lists_all_ram: info.map_lists_all_ram(),
        rsdp: info.rsdp,
        elfcorehdr: None,
        warnings: Vec::new(),
    }
}

fn activate_paging(own: PhysRange, guard: u64) {
    match arch::paging::AddressSpace::new(own.start, own.end, guard, arch::cpu::has_gib_pages()) {
        Ok(space) => {
            // SAFETY: code, stack, heap, statics and the boot copies are all inside `own`.
            unsafe { space.activate() };
            *SPACE.lock() = Some(space);
        }
        Err(e) => fail(format!("cannot build page tables: {}", e)),
    }
}

#[cfg(target_arch = "aarch64")]
pub fn start(protocol: u32, dtb: u64, own: PhysRange, guard: u64) -> Boot {
    use lifeboat_arch::current::serial::{SerialPort, UartRegs};
    use lifeboat_capture::devtree::{DtBootInfo, PsciMethod, UartKind};

    activate_paging(own, guard);
    init_heap();

    let blob = match read_dtb(dtb, own) {
        Ok(b) => b,
        Err(e) => fail(e),
    };
    let dt = match DtBootInfo::parse(blob) {
        Ok(d) => d,
        Err(e) => fail(format!("the device tree at {:#x} is unusable: {}", dtb, e)),
    };
    if let Some(space) = SPACE.lock().as_mut() {
        for r in &dt.memory {
            space.add_ram(r.start, r.end);
        }
    }
    let mut warnings = dt.warnings.clone();
    match &dt.stdout {
        Some(u) => {
            let regs = match u.kind {
                UartKind::Pl011 | UartKind::SbsaUart => UartRegs::Pl011,
                UartKind::Ns16550 { reg_shift, reg_io_width } => UartRegs::Ns16550 { shift: reg_shift, width: reg_io_width },
            };
            match crate::oldmem::map_device(u.base, u.size.max(0x1000)) {
                Ok(va) => {
                    // SAFETY: the registers are mapped as device memory for the rest of the
                    // run, and lifeboat is the only software driving the UART.
                    let port = unsafe { SerialPort::from_mmio(regs, va, u.base) };
                    crate::console::install(port);
                }
                Err(e) => warnings.push(format!("console UART {} at {:#x} not usable: {}", u.path, u.base, e)),
            }
        }
        None => warnings.push(String::from("the device tree names no stdout-path UART: no console")),
    }
    arch::power::set_psci(dt.psci.map(|p| match p.method {
        PsciMethod::Hvc => arch::power::Conduit::Hvc,
        PsciMethod::Smc => arch::power::Conduit::Smc,
    }));
    crate::virtio::set_mmio_windows(dt.virtio_mmio.iter().map(|v| (v.base, v.size)).collect());
    if let Some(host) = dt.pci_ecam.first() {
        match crate::oldmem::map_device(host.ecam.start, host.ecam.end - host.ecam.start) {
            Ok(va) => arch::pci::set_ecam(va),
            Err(e) => warnings.push(format!("PCI ECAM at {:#x} not usable: {}", host.ecam.start, e)),
        }
    }
    Boot {
        protocol: if protocol == arch::entry::PROTOCOL_IMAGE_EL2 {
            "arm64 Image boot protocol at EL2"
        } else {
            "arm64 Image boot protocol at EL1"
        },
        cmdline: dt.cmdline.clone(),
        lists_all_ram: !dt.memory.is_empty(),
        ram: dt.memory.clone(),
        usable: if dt.usable.is_empty() { dt.memory.clone() } else { dt.usable.clone() },
        rsdp: None,
        elfcorehdr: dt.elfcorehdr,
        warnings,
    }
}

/// The device tree blob, read in place: it is not our memory, so it is mapped read-only
/// first (not copied: QEMU pads its blob to 1 MiB, which would double the heap's peak).
#[cfg(target_arch = "aarch64")]
fn read_dtb(dtb: u64, own: PhysRange) -> Result<&'static [u8], String> {
    use lifeboat_capture::devtree;
    use lifeboat_capture::phys::PhysRead;

    let mem = crate::oldmem::OldMemory { own, max_phys: arch::paging::IDENTITY_LIMIT };
    let mut header = [0u8; devtree::FDT_HEADER_SIZE];
    if dtb == 0 {
        return Err(String::from("no device tree: x0 was 0 at entry"));
    }
    mem.read(dtb, &mut header).map_err(|e| format!("the device tree at {:#x} (x0) cannot be read: {}", dtb, e))?;
    let size = devtree::total_size(&header).map_err(|e| format!("no device tree at {:#x} (x0): {}", dtb, e))?;
    mem.map(dtb, size as u64).map_err(|e| format!("the device tree at {:#x} ({} bytes) cannot be mapped: {}", dtb, size, e))?;
    // SAFETY: [dtb, dtb+size) is identity-mapped read-only for the rest of the run (mappings
    // are never removed), is not null, not our memory, and nothing writes it.
    Ok(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}
