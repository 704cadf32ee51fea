//! Devices that answer probes without doing anything, so a guest driver
//! walking a DT node that has no backend yet finds "nothing here" quietly.

use super::{fill_le, BusDevice};

/// An empty PCI configuration space: every read is all ones (no function
/// present), every write is ignored.
pub struct EmptyPciConfigSpace;

impl BusDevice for EmptyPciConfigSpace {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// A virtio-mmio slot with device ID 0, which the virtio spec defines as a
/// placeholder: Linux's virtio_mmio driver skips it with -ENODEV.
pub struct VirtioMmioPlaceholder;

impl BusDevice for VirtioMmioPlaceholder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,           // version 2 (modern)
            0x00c => 0x554d_4551, // vendor id
            _ => 0,               // device id 0 and everything else
        };
        fill_le(data, value);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}
