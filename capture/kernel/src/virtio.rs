//! virtio devices on PCI: finding them, and the `Hal` that virtio-drivers needs.
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
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::oldmem::SPACE;

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
        let mut space = SPACE.lock();
        let space = space.as_mut().expect("page tables are active before devices are used");
        match space.map_device(paddr, size as u64) {
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

/// A virtio function found on PCI.
#[derive(Clone, Copy, Debug)]
pub struct VirtioFunction {
    pub addr: PciAddr,
    pub df: DeviceFunction,
}

/// Every virtio function on the PCI segments this architecture reaches. Reads only
/// configuration space (vendor/device ids); no device is touched.
pub fn find(kind: DeviceType) -> Vec<VirtioFunction> {
    let mut out = Vec::new();
    let Some(root) = pci::root(0) else {
        return out;
    };
    for bus in 0..=255u8 {
        for (df, info) in root.enumerate_bus(bus) {
            if let Some(k) = virtio_device_type(&info) {
                if k == kind {
                    let addr = PciAddr { segment: 0, bus: df.bus, device: df.device, function: df.function };
                    out.push(VirtioFunction { addr, df });
                }
            }
        }
    }
    out
}

/// Enables memory decoding and bus mastering on `f` (the crashed kernel or the firmware
/// assigned its BARs) and opens its transport; the device driver then resets the device
/// before use, which also stops whatever the crashed kernel left it doing.
pub fn open(f: &VirtioFunction) -> Result<PciTransport, String> {
    let mut root: PciRoot<pci::Cam> =
        pci::root(f.addr.segment).ok_or_else(|| format!("PCI segment {} is not reachable", f.addr.segment))?;
    let (_, cmd) = root.get_status_command(f.df);
    root.set_command(f.df, cmd | Command::MEMORY_SPACE | Command::BUS_MASTER);
    PciTransport::new::<LifeboatHal, _>(&mut root, f.df)
        .map_err(|e| format!("virtio device at PCI {}: {}", f.addr, e))
}
