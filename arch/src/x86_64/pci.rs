//! PCI configuration space through the legacy I/O ports 0xCF8/0xCFC ("configuration
//! mechanism #1", PCI Local Bus Specification 3.0 §3.2.2.3.2). Every x86 PC chipset has it,
//! QEMU's `pc` (i440FX, which has no ECAM) and `q35` alike, so lifeboat needs no ACPI MCFG
//! parsing to find its disks and network cards.
//!
//! virtio-drivers provides `ConfigurationAccess` for memory-mapped CAM/ECAM and for a pKVM
//! hypercall, but not for port I/O, hence this small implementation.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Configuration access for PCI segment 0 through ports 0xCF8/0xCFC.
pub struct PortCam(());

impl PortCam {
    fn address(df: DeviceFunction, register: u8) -> u32 {
        0x8000_0000
            | u32::from(df.bus) << 16
            | u32::from(df.device & 0x1f) << 11
            | u32::from(df.function & 7) << 8
            | u32::from(register & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        // SAFETY: 0xCF8/0xCFC are the PCI configuration ports; lifeboat runs alone on one CPU
        // with interrupts off, so the address/data pair cannot be interleaved.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, register_offset));
            Port::<u32>::new(CONFIG_DATA).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        // SAFETY: as for `read_word`.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, register_offset));
            Port::<u32>::new(CONFIG_DATA).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam(())
    }
}

/// The configuration access type of this architecture (same name in every arch module).
pub type Cam = PortCam;

/// The root of PCI segment `segment`, if this architecture can reach it: on x86 only
/// segment 0, by port I/O (other segments need ECAM, which no QEMU x86 machine uses).
pub fn root(segment: u16) -> Option<PciRoot<Cam>> {
    (segment == 0).then(|| PciRoot::new(PortCam(())))
}
