//! PCI configuration space through an ECAM window the device tree names
//! (`pci-host-ecam-generic`), for virtio-pci devices whose BARs the crashed kernel assigned.

use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::transport::pci::bus::{Cam as CamKind, MmioCam, PciRoot};

/// The configuration-access type the kernel's virtio code names.
pub type Cam = MmioCam<'static>;

/// Virtual address of the ECAM window of segment 0 (0 = none).
static ECAM_VA: AtomicU64 = AtomicU64::new(0);

/// Record the mapped ECAM window (from the device tree) for segment 0.
pub fn set_ecam(va: u64) {
    ECAM_VA.store(va, Ordering::Relaxed);
}

/// The root of PCI segment `segment`, if this machine has its ECAM window mapped.
pub fn root(segment: u16) -> Option<PciRoot<Cam>> {
    let va = ECAM_VA.load(Ordering::Relaxed);
    if segment != 0 || va == 0 {
        return None;
    }
    // SAFETY: `set_ecam` was given a mapping of the whole 256 MiB ECAM window as device
    // memory, which stays mapped for the rest of the run.
    Some(PciRoot::new(unsafe { MmioCam::new(va as *mut u8, CamKind::Ecam) }))
}
