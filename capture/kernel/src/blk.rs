//! The disk sink's device: a virtio-blk disk (virtio-drivers' `VirtIOBlk`) as the portable
//! `BlockDevice` that `lifeboat_capture::blk::BlockSink` writes the dump through.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lifeboat_capture::blk::BlockDevice;
use lifeboat_capture::cmdline::BlkSelector;
use lifeboat_capture::sink::SinkError;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::DeviceType;

use crate::virtio::{self, LifeboatHal, VirtioFunction};

pub struct VirtioDisk {
    dev: VirtIOBlk<LifeboatHal, virtio::Transport>,
    capacity: u64,
    /// "virtio-blk at PCI 0000:00:05.0 (serial X), 64 MiB".
    pub description: String,
}

impl BlockDevice for VirtioDisk {
    fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), SinkError> {
        self.dev.write_blocks(lba as usize, data).map_err(|_| SinkError::Io("virtio-blk write failed"))
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SinkError> {
        self.dev.read_blocks(lba as usize, buf).map_err(|_| SinkError::Io("virtio-blk read failed"))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.dev.flush().map_err(|_| SinkError::Io("virtio-blk flush failed"))
    }
}

fn serial_of(dev: &mut VirtIOBlk<LifeboatHal, virtio::Transport>) -> Option<String> {
    let mut id = [0u8; 20];
    let n = dev.device_id(&mut id).ok()?;
    let s = core::str::from_utf8(&id[..n.min(20)]).ok()?.trim_end_matches('\0');
    (!s.is_empty()).then(|| String::from(s))
}

fn open_disk(f: &VirtioFunction) -> Result<VirtIOBlk<LifeboatHal, virtio::Transport>, String> {
    let t = virtio::open(f)?;
    VirtIOBlk::new(t).map_err(|e| format!("virtio-blk at {}: {}", f.addr, e))
}

/// Finds the disk `sel` names. `blk:<pci address>` and bare `blk` touch only the chosen
/// disk; `blk:serial=` has to start each virtio-blk disk to read its serial (no data is read
/// or written on the others, and they are reset again).
pub fn open(sel: &BlkSelector) -> Result<VirtioDisk, String> {
    let disks = virtio::find(DeviceType::Block);
    let list = || disks.iter().map(|d| format!("{}", d.addr)).collect::<Vec<_>>().join(", ");
    if disks.is_empty() {
        return Err(String::from("no virtio-blk disk found (PCI or virtio-mmio)"));
    }
    let (f, mut dev) = match sel {
        BlkSelector::Only => {
            if disks.len() > 1 {
                return Err(format!(
                    "{} virtio-blk disks (at {}): say which with blk:<pci address> or blk:serial=<serial>",
                    disks.len(),
                    list()
                ));
            }
            (disks[0], open_disk(&disks[0])?)
        }
        BlkSelector::Pci(a) => {
            let f = disks
                .iter()
                .find(|d| d.addr == *a)
                .ok_or_else(|| format!("no virtio-blk disk at PCI {} (disks at: {})", a, list()))?;
            (*f, open_disk(f)?)
        }
        BlkSelector::Serial(want) => {
            let mut found = None;
            let mut seen = Vec::new();
            for d in &disks {
                let mut dev = open_disk(d)?;
                let serial = serial_of(&mut dev);
                if serial.as_deref() == Some(want.as_str()) {
                    found = Some((*d, dev));
                    break;
                }
                seen.push(format!("{} '{}'", d.addr, serial.unwrap_or_default()));
            }
            found.ok_or_else(|| format!("no virtio-blk disk has serial '{}' (found: {})", want, seen.join(", ")))?
        }
    };
    if dev.readonly() {
        return Err(format!("the virtio-blk disk at {} is read-only", f.addr));
    }
    let capacity = dev.capacity() * SECTOR_SIZE as u64;
    let serial = serial_of(&mut dev).map(|s| format!(" (serial '{}')", s)).unwrap_or_default();
    let description = format!("virtio-blk at {}{}, {} MiB", f.addr, serial, capacity >> 20);
    Ok(VirtioDisk { dev, capacity, description })
}
