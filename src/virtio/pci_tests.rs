//! Tests driving the virtio-pci transport through `PciFunction` as a guest
//! driver would: configuration space, BAR0 structures, BAR1 MSI-X table.

use super::pci::{common, layout, VirtioPciFunction, NO_VECTOR};
use super::*;
use crate::devices::InterruptLine;
use crate::pci::config_space::{regs as cfg, COMMAND_BUS_MASTER, COMMAND_MEMORY, STATUS_INTERRUPT};
use crate::pci::{MsiSender, PciFunction};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const DESC: u64 = 0x10000;
const AVAIL: u64 = 0x11000;
const USED: u64 = 0x12000;
const BUF: u64 = 0x10_0000;
const F_WRITE: u16 = 2;

#[derive(Default)]
struct Msis(Mutex<Vec<(u64, u32)>>);

impl MsiSender for Msis {
    fn send(&self, _vector: u16, address: u64, data: u32) {
        self.0.lock().unwrap().push((address, data));
    }
}

#[derive(Default)]
struct Line(AtomicBool);

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

struct Driver {
    f: VirtioPciFunction,
    mem: GuestMemoryMmap,
    msis: Arc<Msis>,
    line: Arc<Line>,
    avail_idx: u16,
}

impl Driver {
    fn new(backend: Box<dyn VirtioBackend>) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let msis = Arc::new(Msis::default());
        let line = Arc::new(Line::default());
        let mut f =
            VirtioPciFunction::new("test", backend, mem.clone(), msis.clone(), None).unwrap();
        f.config_mut().connect_intx(Some(line.clone()));
        let mut d = Driver {
            f,
            mem,
            msis,
            line,
            avail_idx: 0,
        };
        d.cfg_write16(cfg::COMMAND, COMMAND_MEMORY | COMMAND_BUS_MASTER);
        d
    }

    fn rng() -> Driver {
        Driver::new(Box::new(RngBackend::new()))
    }

    fn cfg_read(&mut self, offset: usize) -> u32 {
        self.f.read_config(offset / 4)
    }

    fn cfg_write16(&mut self, offset: usize, v: u16) {
        let shift = (offset % 4) * 8;
        self.f
            .write_config(offset / 4, u32::from(v) << shift, 0xffff << shift);
    }

    fn cfg_write32(&mut self, offset: usize, v: u32) {
        self.f.write_config(offset / 4, v, u32::MAX);
    }

    fn r(&mut self, bar: usize, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.f.read_bar(bar, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn w(&mut self, bar: usize, off: u64, len: usize, v: u64) {
        self.f.write_bar(bar, off, &v.to_le_bytes()[..len]);
    }

    fn status(&mut self) -> u32 {
        self.r(0, common::DEVICE_STATUS, 1) as u32
    }

    fn set_status(&mut self, s: u32) {
        self.w(0, common::DEVICE_STATUS, 1, u64::from(s));
    }

    /// (cfg_type, offset) of every virtio vendor capability, and the MSI-X
    /// capability's offset.
    fn capabilities(&mut self) -> (Vec<(u8, usize)>, Option<usize>) {
        let mut vendor = Vec::new();
        let mut msix = None;
        for (id, at) in self.f.config().capabilities() {
            match id {
                0x09 => vendor.push((self.f.config().read_u8(at + 3), at)),
                0x11 => msix = Some(at),
                _ => {}
            }
        }
        (vendor, msix)
    }

    fn enable_msix(&mut self) {
        let at = self.capabilities().1.unwrap();
        self.cfg_write16(at + 2, 1 << 15);
        // Vector 0 and 1: address/data, unmasked.
        for v in 0..2u64 {
            self.w(1, v * 16, 4, 0xfee0_0000);
            self.w(1, v * 16 + 4, 4, 0);
            self.w(1, v * 16 + 8, 4, 0x40 + v);
            self.w(1, v * 16 + 12, 4, 0);
        }
    }

    /// Status up to FEATURES_OK, queue 0 set up and enabled, DRIVER_OK.
    fn probe(&mut self) {
        self.set_status(0);
        self.set_status(ACK);
        self.set_status(ACK | DRIVER);
        self.w(0, common::DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.r(0, common::DEVICE_FEATURE, 4);
        self.w(0, common::DRIVER_FEATURE_SELECT, 4, 1);
        self.w(0, common::DRIVER_FEATURE, 4, hi);
        self.set_status(ACK | DRIVER | FEATURES_OK);
        assert_eq!(self.status(), ACK | DRIVER | FEATURES_OK);
        self.w(0, common::QUEUE_SELECT, 2, 0);
        self.w(0, common::QUEUE_SIZE, 2, u64::from(QSIZE));
        self.w(0, common::QUEUE_DESC, 8, DESC);
        self.w(0, common::QUEUE_DRIVER, 4, AVAIL);
        self.w(0, common::QUEUE_DRIVER + 4, 4, 0);
        self.w(0, common::QUEUE_DEVICE, 8, USED);
        self.w(0, common::QUEUE_ENABLE, 2, 1);
        assert_eq!(self.r(0, common::QUEUE_ENABLE, 2), 1);
        self.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// One device-writable buffer on queue 0, made available.
    fn offer_buffer(&mut self, len: u32) {
        let idx = self.avail_idx % QSIZE;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&(BUF + u64::from(idx) * 0x1000).to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&F_WRITE.to_le_bytes());
        self.mem
            .write_slice(&raw, GuestAddress(DESC + u64::from(idx) * 16))
            .unwrap();
        self.mem
            .write_obj(idx, GuestAddress(AVAIL + 4 + u64::from(idx) * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn notify(&mut self, queue: u64) {
        self.w(0, layout::NOTIFY + 4 * queue, 2, queue);
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn msis(&self) -> Vec<(u64, u32)> {
        self.msis.0.lock().unwrap().clone()
    }
}

#[test]
fn function_identifies_as_a_modern_virtio_device_with_every_structure() {
    let mut d = Driver::new(Box::new(ConsoleBackend::with_writer(
        "c",
        Box::new(std::io::sink()),
    )));
    assert_eq!(d.cfg_read(0), 0x1043_1af4);
    assert_eq!(d.cfg_read(cfg::REVISION_ID) & 0xff, 1);
    let (vendor, msix) = d.capabilities();
    let types: Vec<u8> = vendor.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, vec![1, 2, 3, 4, 5]);
    assert!(msix.is_some());
    // The notify capability carries the multiplier after the length.
    let notify = vendor[1].1;
    assert_eq!(d.cfg_read(notify + 16), layout::NOTIFY_MULTIPLIER);
    assert_eq!(d.cfg_read(notify + 8) as u64, layout::NOTIFY);
}

#[test]
fn rng_without_device_configuration_has_no_device_capability() {
    let mut d = Driver::rng();
    let types: Vec<u8> = d.capabilities().0.iter().map(|(t, _)| *t).collect();
    assert_eq!(types, vec![1, 2, 3, 5]);
}

#[test]
fn intx_queue_interrupt_sets_isr_and_reading_isr_lowers_the_line() {
    let mut d = Driver::rng();
    d.probe();
    d.offer_buffer(64);
    d.notify(0);
    assert_eq!(d.used_idx(), 1);
    assert!(d.line.0.load(Ordering::SeqCst));
    assert_ne!(
        d.cfg_read(cfg::COMMAND) >> 16 & u32::from(STATUS_INTERRUPT),
        0
    );
    assert_eq!(d.r(0, layout::ISR, 1), 1);
    assert!(!d.line.0.load(Ordering::SeqCst));
    assert_eq!(d.r(0, layout::ISR, 1), 0, "ISR clears on read");
}

#[test]
fn enabling_msix_deasserts_a_pending_intx() {
    let mut d = Driver::rng();
    d.probe();
    d.offer_buffer(64);
    d.notify(0);
    assert!(d.line.0.load(Ordering::SeqCst));
    d.enable_msix();
    assert!(!d.line.0.load(Ordering::SeqCst), "INTx still asserted");
    assert_eq!(
        d.cfg_read(cfg::COMMAND) >> 16 & u32::from(STATUS_INTERRUPT),
        0
    );
}

#[test]
fn msix_queue_interrupt_goes_to_the_queue_vector_and_not_intx() {
    let mut d = Driver::rng();
    d.enable_msix();
    d.w(0, common::CONFIG_MSIX_VECTOR, 2, 0);
    d.probe();
    d.w(0, common::QUEUE_SELECT, 2, 0);
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(d.r(0, common::QUEUE_MSIX_VECTOR, 2), 1);
    d.offer_buffer(32);
    d.notify(0);
    assert_eq!(d.msis(), vec![(0xfee0_0000, 0x41)]);
    assert!(!d.line.0.load(Ordering::SeqCst));
    assert_eq!(d.f.isr(), 0);
}

#[test]
fn masked_msix_vector_is_pending_until_unmasked() {
    let mut d = Driver::rng();
    d.enable_msix();
    d.probe();
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 1);
    d.w(1, 16 + 12, 4, 1); // mask vector 1
    d.offer_buffer(32);
    d.notify(0);
    assert!(d.msis().is_empty());
    assert_eq!(d.r(1, layout::MSIX_PBA, 8), 0b10);
    d.w(1, 16 + 12, 4, 0);
    assert_eq!(d.msis(), vec![(0xfee0_0000, 0x41)]);
    assert_eq!(d.r(1, layout::MSIX_PBA, 8), 0);
}

#[test]
fn function_mask_holds_every_vector_until_cleared() {
    let mut d = Driver::rng();
    d.enable_msix();
    d.probe();
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 0);
    let at = d.capabilities().1.unwrap();
    d.cfg_write16(at + 2, 1 << 15 | 1 << 14);
    d.offer_buffer(32);
    d.notify(0);
    assert!(d.msis().is_empty());
    d.cfg_write16(at + 2, 1 << 15);
    assert_eq!(d.msis(), vec![(0xfee0_0000, 0x40)]);
}

#[test]
fn msix_vector_beyond_the_table_reads_back_as_no_vector() {
    let mut d = Driver::rng();
    d.w(0, common::CONFIG_MSIX_VECTOR, 2, 7);
    assert_eq!(d.r(0, common::CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 2);
    assert_eq!(d.r(0, common::QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(d.r(0, common::QUEUE_MSIX_VECTOR, 2), 1);
}

#[test]
fn notify_without_bus_mastering_is_ignored() {
    let mut d = Driver::rng();
    d.probe();
    d.offer_buffer(32);
    d.cfg_write16(cfg::COMMAND, COMMAND_MEMORY);
    d.notify(0);
    assert_eq!(d.used_idx(), 0);
    d.cfg_write16(cfg::COMMAND, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    d.notify(0);
    assert_eq!(d.used_idx(), 1);
}

#[test]
fn console_host_fds_are_offered_only_while_bus_mastering_is_on() {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    let dir = tempfile::tempdir().unwrap();
    let backend = ConsoleBackend::open(&ConsoleHost::Socket(dir.path().join("c.sock"))).unwrap();
    let mut d = Driver::new(Box::new(backend));
    let waker = EventFd::new(EFD_NONBLOCK).unwrap();
    d.f.set_host_fds_waker(waker.try_clone().unwrap());
    d.probe();
    assert_eq!(d.f.host_fds().len(), 1);
    assert_eq!(waker.read().unwrap(), 1, "DRIVER_OK did not wake");
    d.cfg_write16(cfg::COMMAND, COMMAND_MEMORY);
    assert!(d.f.host_fds().is_empty());
    d.cfg_write16(cfg::COMMAND, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    assert_eq!(d.f.host_fds().len(), 1);
    assert_eq!(
        waker.read().unwrap(),
        2,
        "bus mastering changes did not wake"
    );
}

#[test]
fn device_reset_lowers_intx_and_forgets_vectors() {
    let mut d = Driver::rng();
    d.probe();
    d.w(0, common::QUEUE_MSIX_VECTOR, 2, 1);
    d.offer_buffer(32);
    d.notify(0);
    assert!(d.line.0.load(Ordering::SeqCst));
    d.set_status(0);
    assert!(!d.line.0.load(Ordering::SeqCst));
    assert_eq!(d.f.isr(), 0);
    assert_eq!(d.r(0, common::QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    assert_eq!(d.r(0, common::QUEUE_ENABLE, 2), 0);
    assert_eq!(d.status(), 0);
}

#[test]
fn common_configuration_reads_back_what_the_driver_programmed() {
    let mut d = Driver::rng();
    d.probe();
    assert_eq!(d.r(0, common::NUM_QUEUES, 2), 1);
    assert_eq!(d.r(0, common::QUEUE_SIZE, 2), u64::from(QSIZE));
    assert_eq!(d.r(0, common::QUEUE_DESC, 8), DESC);
    assert_eq!(d.r(0, common::QUEUE_DRIVER, 4), AVAIL);
    assert_eq!(d.r(0, common::QUEUE_DEVICE + 4, 4), 0);
    assert_eq!(d.r(0, common::QUEUE_DEVICE, 8), USED);
    assert_eq!(d.r(0, common::QUEUE_NOTIFY_OFF, 2), 0);
    d.w(0, common::DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(d.r(0, common::DEVICE_FEATURE, 4), 1, "VERSION_1 is bit 32");
    // An absent queue reads size 0.
    d.w(0, common::QUEUE_SELECT, 2, 5);
    assert_eq!(d.r(0, common::QUEUE_SIZE, 2), 0);
}

#[test]
fn wrong_size_or_read_only_common_writes_are_ignored() {
    let mut d = Driver::rng();
    d.set_status(ACK);
    // Device status written as 4 bytes: ignored.
    d.w(0, common::DEVICE_STATUS, 4, u64::from(ACK | DRIVER));
    assert_eq!(d.status(), ACK);
    // num_queues is read-only.
    d.w(0, common::NUM_QUEUES, 2, 9);
    assert_eq!(d.r(0, common::NUM_QUEUES, 2), 1);
    // queue_enable = 0 is not the driver's to write.
    d.probe();
    d.w(0, common::QUEUE_ENABLE, 2, 0);
    assert_eq!(d.r(0, common::QUEUE_ENABLE, 2), 1);
}

#[test]
fn pci_configuration_access_capability_reaches_bar0() {
    let mut d = Driver::rng();
    let at = d.capabilities().0.iter().find(|(t, _)| *t == 5).unwrap().1;
    // Read device_feature word 1 through the window.
    d.w(0, common::DEVICE_FEATURE_SELECT, 4, 1);
    d.cfg_write32(at + 4, 0); // bar 0
    d.cfg_write32(at + 8, common::DEVICE_FEATURE as u32);
    d.cfg_write32(at + 12, 4);
    assert_eq!(d.cfg_read(at + 16), 1);
    // Write device status through it.
    d.cfg_write32(at + 8, common::DEVICE_STATUS as u32);
    d.cfg_write32(at + 12, 1);
    d.cfg_write32(at + 16, ACK);
    assert_eq!(d.status(), ACK);
    // A misaligned window does nothing.
    d.cfg_write32(at + 8, 0x13);
    d.cfg_write32(at + 12, 4);
    assert_eq!(d.cfg_read(at + 16), 0);
}

#[test]
fn block_device_configuration_is_readable_through_bar0() {
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(1 << 20).unwrap();
    let backend = BlockBackend::open(img.path(), false, "pci").unwrap();
    let mut d = Driver::new(Box::new(backend));
    assert_eq!(d.cfg_read(0) >> 16, 0x1042);
    // Capacity in 512-byte sectors is the first field.
    assert_eq!(d.r(0, layout::DEVICE, 8), 2048);
}

#[test]
fn random_config_bar_and_msix_accesses_never_panic() {
    // A deterministic xorshift drives every access the guest can make.
    let mut d = Driver::rng();
    d.probe();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200_000 {
        let r = next();
        let len = [1usize, 2, 4, 8][(r & 3) as usize];
        let value = next();
        match (r >> 2) % 5 {
            0 => {
                let reg = ((r >> 8) % 64) as usize;
                let _ = d.f.read_config(reg);
            }
            1 => {
                let reg = ((r >> 8) % 64) as usize;
                // Never switch off the command register's decode bits
                // wholesale: keep the test exercising BAR paths too.
                d.f.write_config(reg, value as u32, (value >> 32) as u32);
            }
            2 => {
                let bar = ((r >> 8) % 3) as usize;
                let off = (r >> 16) % 0x4010;
                let mut b = [0u8; 8];
                d.f.read_bar(bar, off, &mut b[..len]);
            }
            3 => {
                let bar = ((r >> 8) % 3) as usize;
                let off = (r >> 16) % 0x4010;
                d.f.write_bar(bar, off, &value.to_le_bytes()[..len]);
            }
            _ => {
                d.offer_buffer((value % 8192) as u32);
                d.notify((r >> 8) % 3);
            }
        }
    }
}
