//! virtio devices on PCI and virtio-mmio: finding them, and the `Hal` that virtio-drivers needs.
//!
//! lifeboat only ever writes to memory it owns, so everything a device reads or writes by DMA
//! lies in our image: virtqueues come from a fixed pool in our bss, and buffers handed to a
//! device (the disk's write buffer, network frames) are in our heap or bss. Our image is
//! identity-mapped, so a buffer's address is its physical address and no bounce buffers are
//! needed. Device registers are mapped uncached in the upper-half device window.
//!
//! Device logic (`blk`, `net`) only sees `virtio_drivers` device types over a transport, so
//! the arm64 virtio-mmio transport plugs in beside PCI without touching it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;

use lifeboat_arch::current::pci;
use lifeboat_capture::cmdline::PciAddr;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport, VirtioPciError};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport as _};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};


/// Pages for virtqueues: a 16-entry queue takes one or two pages, a device at most three
/// queues; 32 pages serve a disk and a network card at once with room to spare.
const DMA_PAGES: usize = 32;

#[repr(C, align(4096))]
struct DmaArea([[u8; PAGE_SIZE]; DMA_PAGES]);

static mut DMA_AREA: DmaArea = DmaArea([[0; PAGE_SIZE]; DMA_PAGES]);
/// Which pool pages are handed out.
static DMA_USED: spin::Mutex<[bool; DMA_PAGES]> = spin::Mutex::new([false; DMA_PAGES]);

fn dma_base() -> u64 {
    core::ptr::addr_of!(DMA_AREA) as u64
}

/// The `Hal` for an identity-mapped capture kernel.
pub struct LifeboatHal;

// SAFETY: dma_alloc hands out zeroed, page-aligned, identity-mapped pages of our own pool,
// each to one owner until dma_dealloc; share returns the true physical address of buffers
// that (checked) lie in our identity-mapped image; MMIO is mapped uncached before use.
unsafe impl Hal for LifeboatHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mut used = DMA_USED.lock();
        let start = (0..DMA_PAGES.saturating_sub(pages) + 1)
            .find(|&s| s + pages <= DMA_PAGES && used[s..s + pages].iter().all(|u| !u));
        let Some(start) = start else {
            panic!("virtio DMA pool exhausted ({} pages wanted, pool {} KiB)", pages, DMA_PAGES * 4)
        };
        used[start..start + pages].iter_mut().for_each(|u| *u = true);
        let addr = dma_base() + (start * PAGE_SIZE) as u64;
        // SAFETY: these pool pages were free, so nothing else refers to them; zero them as
        // the Hal contract requires.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, pages * PAGE_SIZE) };
        (addr, NonNull::new(addr as *mut u8).expect("the pool is not at address 0"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let start = ((paddr - dma_base()) as usize) / PAGE_SIZE;
        let mut used = DMA_USED.lock();
        used[start..start + pages].iter_mut().for_each(|u| *u = false);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match crate::oldmem::map_device(paddr, size as u64) {
            Ok(va) => NonNull::new(va as *mut u8).expect("the device window is not at 0"),
            Err(e) => panic!("cannot map device registers at {:#x}: {}", paddr, e),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let addr = buffer.as_ptr() as *mut u8 as u64;
        let own = crate::own_range();
        let end = addr + buffer.len() as u64;
        assert!(
            own.start <= addr && end <= own.end,
            "a DMA buffer at {:#x} is outside lifeboat's identity-mapped image",
            addr
        );
        addr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Where a virtio device sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevAddr {
    Pci(PciAddr),
    /// A virtio-mmio register window (arm64 device trees), by physical address.
    Mmio(u64),
}

impl core::fmt::Display for DevAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DevAddr::Pci(a) => write!(f, "PCI {}", a),
            DevAddr::Mmio(base) => write!(f, "virtio-mmio {:#x}", base),
        }
    }
}

impl PartialEq<PciAddr> for DevAddr {
    fn eq(&self, other: &PciAddr) -> bool {
        matches!(self, DevAddr::Pci(a) if a == other)
    }
}

#[derive(Clone, Copy, Debug)]
enum Location {
    Pci(DeviceFunction),
    Mmio { base: u64, size: u64 },
}

/// A virtio device found on PCI or in the device tree.
#[derive(Clone, Copy, Debug)]
pub struct VirtioFunction {
    pub addr: DevAddr,
    loc: Location,
}

/// The transports lifeboat drives devices through.
pub type Transport = SomeTransport<'static>;

/// virtio-mmio windows the device tree lists (arm64); set once at boot.
static MMIO_WINDOWS: spin::Once<Vec<(u64, u64)>> = spin::Once::new();

/// Record the device tree's virtio-mmio windows (physical base, size).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub fn set_mmio_windows(w: Vec<(u64, u64)>) {
    MMIO_WINDOWS.call_once(|| w);
}

fn map_mmio(base: u64, size: u64) -> Result<NonNull<VirtIOHeader>, String> {
    let va = crate::oldmem::map_device(base, size).map_err(|e| format!("virtio-mmio {:#x}: {}", base, e))?;
    NonNull::new(va as *mut VirtIOHeader).ok_or_else(|| format!("virtio-mmio {:#x} maps to 0", base))
}

/// Every virtio device of `kind`: on the PCI segments this architecture reaches (reading
/// only configuration space) and in the device tree's virtio-mmio windows (reading only the
/// magic, version and device id). No device is touched.
pub fn find(kind: DeviceType) -> Vec<VirtioFunction> {
    let mut out = Vec::new();
    for &(base, size) in MMIO_WINDOWS.get().map(|v| v.as_slice()).unwrap_or(&[]) {
        let Ok(header) = map_mmio(base, size) else { continue };
        // SAFETY: the window is mapped as device memory for the rest of the run; creating the
        // transport only reads the identification registers.
        if let Ok(t) = unsafe { MmioTransport::new(header, size as usize) } {
            if t.device_type() == kind {
                out.push(VirtioFunction { addr: DevAddr::Mmio(base), loc: Location::Mmio { base, size } });
            }
        }
    }
    let Some(root) = pci::root(0) else {
        return out;
    };
    for bus in 0..=255u8 {
        for (df, info) in root.enumerate_bus(bus) {
            if let Some(k) = virtio_device_type(&info) {
                if k == kind {
                    let addr = PciAddr { segment: 0, bus: df.bus, device: df.device, function: df.function };
                    out.push(VirtioFunction { addr: DevAddr::Pci(addr), loc: Location::Pci(df) });
                }
            }
        }
    }
    out
}

/// Opens `f`'s transport; the device driver then resets the device before use, which also
/// stops whatever the crashed kernel left it doing. On PCI, memory decoding and bus mastering
/// are enabled first (the crashed kernel or the firmware assigned its BARs).
pub fn open(f: &VirtioFunction) -> Result<Transport, String> {
    match f.loc {
        Location::Mmio { base, size } => {
            let header = map_mmio(base, size)?;
            // SAFETY: as in `find`; lifeboat is the only driver of this device.
            let t = unsafe { MmioTransport::new(header, size as usize) }
                .map_err(|e| format!("virtio device at {}: {}", f.addr, e))?;
            Ok(SomeTransport::Mmio(t))
        }
        Location::Pci(df) => {
            let DevAddr::Pci(addr) = f.addr else { unreachable!("a PCI location has a PCI address") };
            let mut root: PciRoot<pci::Cam> =
                pci::root(addr.segment).ok_or_else(|| format!("PCI segment {} is not reachable", addr.segment))?;
            let (_, cmd) = root.get_status_command(df);
            root.set_command(df, cmd | Command::MEMORY_SPACE | Command::BUS_MASTER);
            let t = PciTransport::new::<LifeboatHal, _>(&mut root, df).map_err(|e| match e {
                VirtioPciError::BarNotAllocated(bar) => format!(
                    "virtio device at {}: its BAR {} has no address (lifeboat uses the BARs the crashed kernel or the firmware assigned, and assigns none itself)",
                    f.addr, bar
                ),
                e => format!("virtio device at {}: {}", f.addr, e),
            })?;
            Ok(SomeTransport::Pci(t))
        }
    }
}
