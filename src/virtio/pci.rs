//! The virtio-pci transport, modern only (virtio 1.2, 4.1), as a
//! [`PciFunction`].
//!
//! IDs `1af4:(1040 + device type)`, revision 1. BAR0 (32-bit memory,
//! 16 KiB) holds the virtio structures, one page each, found through
//! vendor-specific capabilities; BAR1 (4 KiB) holds the MSI-X table and PBA:
//!
//! | BAR0 offset | structure | capability `cfg_type` |
//! |---|---|---|
//! | 0x0000 | common configuration (0x38 bytes) | 1 |
//! | 0x1000 | ISR status (1 byte, read clears) | 3 |
//! | 0x2000 | device configuration (the backend's) | 4 |
//! | 0x3000 | notifications: queue `i` at `0x3000 + 4 * i` | 2 (multiplier 4) |
//!
//! A PCI configuration access capability (`cfg_type` 5) reaches BAR0
//! through configuration space. Interrupts: MSI-X once the driver enables it
//! (one vector per queue plus one for configuration changes, as the driver
//! assigns them); INTx (pin A, the ISR status telling why) otherwise.
//! A trapped notification write is served synchronously in the vCPU's MMIO
//! exit; normally the VMM has an ioeventfd on each queue's notify address
//! (following BAR0 wherever the guest puts it) and a worker thread calls
//! [`VirtioPciFunction::queue_notified`]. Buffers are only touched while bus
//! mastering is enabled.

use super::state::{QueueField, Signals, VirtioState};
use super::{HostFdsWaker, VirtioBackend};
use crate::devices::le_value;
use crate::pci::bar::{BarMapper, BarSpec};
use crate::pci::config_space::{ConfigSpace, IntxPin, PciFunction, PciIds};
use crate::pci::msix::{MsiSender, Msix};
use crate::pci::PciError;
use std::sync::Arc;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// "No MSI-X vector" in the vector fields.
pub const NO_VECTOR: u16 = 0xffff;

/// Size of BAR0 (the virtio structures).
pub const BAR0_SIZE: u64 = 0x4000;
/// Size of BAR1 (MSI-X table and PBA).
pub const BAR1_SIZE: u64 = 0x1000;
/// Offsets of the virtio structures in BAR0.
pub mod layout {
    /// Common configuration.
    pub const COMMON: u64 = 0x0000;
    /// Bytes of common configuration served (up to `queue_used`).
    pub const COMMON_LEN: u64 = 0x38;
    /// ISR status.
    pub const ISR: u64 = 0x1000;
    /// Device configuration.
    pub const DEVICE: u64 = 0x2000;
    /// Notifications.
    pub const NOTIFY: u64 = 0x3000;
    /// Bytes between two queues' notification addresses.
    pub const NOTIFY_MULTIPLIER: u32 = 4;
    /// MSI-X table in BAR1.
    pub const MSIX_TABLE: u64 = 0x000;
    /// MSI-X PBA in BAR1.
    pub const MSIX_PBA: u64 = 0x800;
}

/// Common configuration field offsets (virtio 1.2, 4.1.4.3).
pub mod common {
    /// Device feature word selector (u32).
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// Offered feature word (u32, RO).
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// Driver feature word selector (u32).
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// Accepted feature word (u32).
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// MSI-X vector for configuration changes (u16).
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    /// Number of queues (u16, RO).
    pub const NUM_QUEUES: u64 = 0x12;
    /// Device status (u8).
    pub const DEVICE_STATUS: u64 = 0x14;
    /// Configuration generation (u8, RO).
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// Queue selector (u16).
    pub const QUEUE_SELECT: u64 = 0x16;
    /// Selected queue's size (u16).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// Selected queue's MSI-X vector (u16).
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    /// Selected queue's enable (u16).
    pub const QUEUE_ENABLE: u64 = 0x1c;
    /// Selected queue's notification offset (u16, RO).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    /// Selected queue's descriptor table (u64).
    pub const QUEUE_DESC: u64 = 0x20;
    /// Selected queue's driver (available) ring (u64).
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// Selected queue's device (used) ring (u64).
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// Capability ID of vendor-specific capabilities (virtio's structures).
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Where queue `index`'s notifications land when BAR0 is at `bar0`. The
/// driver writes the queue index there as 16 bits (virtio 1.2, 4.1.5.2).
pub fn notify_address(bar0: u64, index: u16) -> u64 {
    bar0 + layout::NOTIFY + u64::from(index) * u64::from(layout::NOTIFY_MULTIPLIER)
}

/// A virtio device on the virtio-pci transport.
pub struct VirtioPciFunction {
    state: VirtioState,
    config: ConfigSpace,
    msix: Msix,
    isr: u8,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    /// Offset of the PCI configuration access capability.
    pci_cfg_cap: usize,
    waker: HostFdsWaker,
}

fn cap_body(cfg_type: u8, bar: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    let cap_len = (4 + 12 + extra.len()) as u8;
    let mut b = vec![cap_len, cfg_type, bar, 0, 0, 0];
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        // Mass storage, other.
        2 => (0x01, 0x80),
        // Communication, other.
        3 => (0x07, 0x80),
        // Unclassified.
        _ => (0xff, 0x00),
    }
}

impl VirtioPciFunction {
    /// A virtio-pci function named `name` (for log lines) serving `backend`,
    /// with buffers in `mem` and MSI-X messages sent through `msi`. `notify`,
    /// if given, follows BAR0 around (typically registering an ioeventfd on
    /// each queue's notify address, [`notify_address`]).
    pub fn new(
        name: &str,
        backend: Box<dyn VirtioBackend>,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSender>,
        notify: Option<Arc<dyn BarMapper>>,
    ) -> Result<Self, PciError> {
        let state = VirtioState::new(format!("virtio-pci {name}"), backend, mem);
        let device_type = state.device_type();
        let (class, subclass) = class_of(device_type);
        let mut config = ConfigSpace::new(PciIds {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            class,
            subclass,
            prog_if: 0,
            revision: 1,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: 0x1100,
        });
        let bar0 = BarSpec::memory32(BAR0_SIZE);
        config.add_bar(0, notify.map_or(bar0.clone(), |m| bar0.backed_by(m)))?;
        config.add_bar(1, BarSpec::memory32(BAR1_SIZE))?;
        config.set_interrupt_pin(Some(IntxPin::A));

        let queues = state.num_queues();
        let common = cap_body(
            CFG_COMMON,
            0,
            layout::COMMON as u32,
            layout::COMMON_LEN as u32,
            &[],
        );
        config.add_capability(CAP_VENDOR, &common)?;
        let notify = cap_body(
            CFG_NOTIFY,
            0,
            layout::NOTIFY as u32,
            (queues as u32).max(1) * layout::NOTIFY_MULTIPLIER,
            &layout::NOTIFY_MULTIPLIER.to_le_bytes(),
        );
        config.add_capability(CAP_VENDOR, &notify)?;
        config.add_capability(
            CAP_VENDOR,
            &cap_body(CFG_ISR, 0, layout::ISR as u32, 1, &[]),
        )?;
        let device_len = u32::try_from(state.config_len())
            .unwrap_or(u32::MAX)
            .min(0x1000);
        if device_len > 0 {
            config.add_capability(
                CAP_VENDOR,
                &cap_body(CFG_DEVICE, 0, layout::DEVICE as u32, device_len, &[]),
            )?;
        }
        let pci_cfg_cap =
            config.add_capability(CAP_VENDOR, &cap_body(CFG_PCI, 0, 0, 0, &[0; 4]))?;
        // bar (byte 4), offset, length and data are the driver's to write.
        config.set_masks(pci_cfg_cap / 4 + 1, 0xff, 0);
        config.set_masks(pci_cfg_cap / 4 + 2, u32::MAX, 0);
        config.set_masks(pci_cfg_cap / 4 + 3, u32::MAX, 0);
        config.set_masks(pci_cfg_cap / 4 + 4, u32::MAX, 0);

        let vectors = u16::try_from(queues + 1).unwrap_or(u16::MAX);
        let mut msix = Msix::new(vectors, msi);
        msix.add_capability(
            &mut config,
            1,
            layout::MSIX_TABLE as u32,
            layout::MSIX_PBA as u32,
        )?;
        Ok(VirtioPciFunction {
            queue_vectors: vec![NO_VECTOR; queues],
            state,
            config,
            msix,
            isr: 0,
            config_vector: NO_VECTOR,
            pci_cfg_cap,
            waker: HostFdsWaker::default(),
        })
    }

    /// The device status (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.state.status()
    }

    /// The ISR status bits not yet read by the driver.
    pub fn isr(&self) -> u8 {
        self.isr
    }

    /// Whether the driver enabled MSI-X.
    pub fn msix_enabled(&self) -> bool {
        self.msix.enabled()
    }

    /// Lets the backend feed pending host-side input (console) into its
    /// queues; a no-op until the driver runs the device.
    pub fn process_host_input(&mut self) {
        if !self.config.bus_master_enabled() {
            return;
        }
        let signals = self.state.process_host_input();
        self.deliver(signals);
    }

    /// Number of virtqueues.
    pub fn num_queues(&self) -> usize {
        self.state.num_queues()
    }

    /// Queue `index` was notified through an ioeventfd on its notify
    /// address. Ignored while bus mastering is off, like a trapped write.
    pub fn queue_notified(&mut self, index: u16) {
        if !self.config.bus_master_enabled() {
            log::debug!(
                "virtio-pci: deferred notify for queue {index} without bus mastering dropped"
            );
            return;
        }
        let signals = self.state.notify_deferred(u32::from(index));
        self.deliver(signals);
    }

    /// Surprise removal ([`super::state::VirtioState::sever`]).
    pub fn sever(&mut self) {
        self.state.sever();
    }

    /// Host file descriptors to watch before calling
    /// [`Self::process_host_input`] (re-query after each call); none while
    /// bus mastering is off, when that call reads nothing.
    pub fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        if !self.config.bus_master_enabled() {
            return Vec::new();
        }
        self.state.host_fds()
    }

    /// Signals `waker` whenever a guest access (configuration space or
    /// BAR) changes [`Self::host_fds`].
    pub fn set_host_fds_waker(&mut self, waker: EventFd) {
        self.waker.set(waker);
    }

    fn deliver(&mut self, signals: Signals) {
        if !signals.any() {
            return;
        }
        if signals.config {
            self.isr |= ISR_CONFIG;
        }
        if self.msix.enabled() {
            for q in signals.used_queues() {
                match self.queue_vectors.get(q) {
                    Some(&v) if v != NO_VECTOR => {
                        self.msix.notify(v);
                    }
                    _ => {}
                }
            }
            if signals.config && self.config_vector != NO_VECTOR {
                self.msix.notify(self.config_vector);
            }
            return;
        }
        if signals.used != 0 {
            self.isr |= ISR_QUEUE;
        }
        self.config.set_intx(true);
    }

    fn device_reset(&mut self) {
        self.isr = 0;
        self.config.set_intx(false);
        self.config_vector = NO_VECTOR;
        self.queue_vectors.fill(NO_VECTOR);
    }

    fn common_bytes(&self) -> [u8; layout::COMMON_LEN as usize] {
        let s = &self.state;
        let q = s.selected();
        let sel = s.queue_sel as usize;
        let mut b = [0u8; layout::COMMON_LEN as usize];
        let mut put = |at: u64, bytes: &[u8]| {
            b[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        };
        put(
            common::DEVICE_FEATURE_SELECT,
            &s.device_features_sel.to_le_bytes(),
        );
        put(
            common::DEVICE_FEATURE,
            &s.device_features_word().to_le_bytes(),
        );
        put(
            common::DRIVER_FEATURE_SELECT,
            &s.driver_features_sel.to_le_bytes(),
        );
        put(
            common::DRIVER_FEATURE,
            &s.driver_features_word().to_le_bytes(),
        );
        put(
            common::CONFIG_MSIX_VECTOR,
            &self.config_vector.to_le_bytes(),
        );
        put(common::NUM_QUEUES, &(s.num_queues() as u16).to_le_bytes());
        put(common::DEVICE_STATUS, &[s.status() as u8]);
        put(common::CONFIG_GENERATION, &[s.config_generation() as u8]);
        put(common::QUEUE_SELECT, &(s.queue_sel as u16).to_le_bytes());
        if let Some(q) = q {
            put(common::QUEUE_SIZE, &q.size().to_le_bytes());
            let vector = self.queue_vectors.get(sel).copied().unwrap_or(NO_VECTOR);
            put(common::QUEUE_MSIX_VECTOR, &vector.to_le_bytes());
            put(common::QUEUE_ENABLE, &u16::from(q.ready()).to_le_bytes());
            put(common::QUEUE_NOTIFY_OFF, &(sel as u16).to_le_bytes());
            put(common::QUEUE_DESC, &q.desc_table().to_le_bytes());
            put(common::QUEUE_DRIVER, &q.avail_ring().to_le_bytes());
            put(common::QUEUE_DEVICE, &q.used_ring().to_le_bytes());
        } else {
            put(common::QUEUE_MSIX_VECTOR, &NO_VECTOR.to_le_bytes());
        }
        b
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.common_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = bytes.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let value = le_value(data);
        let v32 = value as u32;
        let v16 = value as u16;
        let queue_field = match (offset, data.len()) {
            (common::QUEUE_SIZE, 2) => Some(QueueField::Size),
            (common::QUEUE_DESC, 4) => Some(QueueField::DescLow),
            (o, 4) if o == common::QUEUE_DESC + 4 => Some(QueueField::DescHigh),
            (common::QUEUE_DRIVER, 4) => Some(QueueField::AvailLow),
            (o, 4) if o == common::QUEUE_DRIVER + 4 => Some(QueueField::AvailHigh),
            (common::QUEUE_DEVICE, 4) => Some(QueueField::UsedLow),
            (o, 4) if o == common::QUEUE_DEVICE + 4 => Some(QueueField::UsedHigh),
            _ => None,
        };
        if let Some(f) = queue_field {
            self.state.write_queue_field(f, v32);
            return;
        }
        let pairs = [
            (
                common::QUEUE_DESC,
                QueueField::DescLow,
                QueueField::DescHigh,
            ),
            (
                common::QUEUE_DRIVER,
                QueueField::AvailLow,
                QueueField::AvailHigh,
            ),
            (
                common::QUEUE_DEVICE,
                QueueField::UsedLow,
                QueueField::UsedHigh,
            ),
        ];
        if data.len() == 8 {
            if let Some((_, lo, hi)) = pairs.iter().find(|(o, _, _)| *o == offset) {
                self.state.write_queue_field(*lo, v32);
                self.state.write_queue_field(*hi, (value >> 32) as u32);
                return;
            }
        }
        match (offset, data.len()) {
            (common::DEVICE_FEATURE_SELECT, 4) => self.state.device_features_sel = v32,
            (common::DRIVER_FEATURE_SELECT, 4) => self.state.driver_features_sel = v32,
            (common::DRIVER_FEATURE, 4) => self.state.write_driver_features(v32),
            (common::CONFIG_MSIX_VECTOR, 2) => {
                self.config_vector = self.valid_vector(v16);
            }
            (common::DEVICE_STATUS, 1) => {
                if self.state.write_status(v32) {
                    self.device_reset();
                }
            }
            (common::QUEUE_SELECT, 2) => self.state.queue_sel = u32::from(v16),
            (common::QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.valid_vector(v16);
                let sel = self.state.queue_sel;
                match self.queue_vectors.get_mut(sel as usize) {
                    Some(v) => *v = vector,
                    None => self.state.warn(format_args!(
                        "MSI-X vector for absent queue {sel}; ignored"
                    )),
                }
            }
            (common::QUEUE_ENABLE, 2) => {
                if v16 != 1 {
                    self.state.warn(format_args!(
                        "queue_enable = {v16} (only 1 may be written); ignored"
                    ));
                    return;
                }
                let signals = self.state.write_queue_ready(1);
                self.deliver(signals);
            }
            _ => self.state.warn(format_args!(
                "{}-byte write {value:#x} to common configuration at {offset:#x} (read-only, reserved or wrong size); ignored",
                data.len()
            )),
        }
    }

    /// A vector the driver asked for, or [`NO_VECTOR`] if there is no such
    /// table entry (the driver reads the field back to find out).
    fn valid_vector(&self, v: u16) -> u16 {
        if v == NO_VECTOR || usize::from(v) < self.msix.vectors() {
            v
        } else {
            self.state.warn(format_args!(
                "MSI-X vector {v} beyond the table ({}); reads back as NO_VECTOR",
                self.msix.vectors()
            ));
            NO_VECTOR
        }
    }

    fn notify(&mut self, offset: u64) {
        let queue = (offset / u64::from(layout::NOTIFY_MULTIPLIER)) as u32;
        if !self.config.bus_master_enabled() {
            self.state.warn(format_args!(
                "notify for queue {queue} with bus mastering disabled; ignored"
            ));
            return;
        }
        let signals = self.state.notify(queue);
        self.deliver(signals);
    }

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < layout::COMMON + 0x1000 => self.read_common(o, data),
            o if o == layout::ISR => {
                data.fill(0);
                if let Some(first) = data.first_mut() {
                    *first = self.isr;
                }
                self.isr = 0;
                self.config.set_intx(false);
            }
            o if (layout::DEVICE..layout::DEVICE + 0x1000).contains(&o) => {
                self.state.read_config(o - layout::DEVICE, data)
            }
            _ => data.fill(0),
        }
    }

    fn write_bar0(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < layout::COMMON + 0x1000 => self.write_common(o, data),
            o if (layout::DEVICE..layout::DEVICE + 0x1000).contains(&o) => {
                self.state.write_config(o - layout::DEVICE, data)
            }
            o if (layout::NOTIFY..layout::NOTIFY + 0x1000).contains(&o) => {
                self.notify(o - layout::NOTIFY)
            }
            _ => self.state.warn(format_args!(
                "{}-byte write at BAR0 {offset:#x} (no register); ignored",
                data.len()
            )),
        }
    }

    /// The PCI configuration access capability's BAR0 window: (offset,
    /// length) when the driver programmed a valid access.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let at = self.pci_cfg_cap;
        let bar = self.config.read_u8(at + 4);
        let offset = u64::from(self.config.read(at / 4 + 2));
        let len = self.config.read(at / 4 + 3) as usize;
        let ok = bar == 0
            && matches!(len, 1 | 2 | 4)
            && offset.is_multiple_of(len as u64)
            && offset + len as u64 <= BAR0_SIZE;
        if !ok {
            self.state.warn(format_args!(
                "PCI configuration access to BAR {bar} at {offset:#x}, {len} bytes; ignored"
            ));
        }
        ok.then_some((offset, len))
    }
}

impl PciFunction for VirtioPciFunction {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn read_config(&mut self, reg: usize) -> u32 {
        if reg == self.pci_cfg_cap / 4 + 4 {
            let mut word = [0u8; 4];
            if let Some((offset, len)) = self.pci_cfg_window() {
                self.read_bar0(offset, &mut word[..len]);
            }
            return u32::from_le_bytes(word);
        }
        self.config.read(reg)
    }

    fn write_config(&mut self, reg: usize, value: u32, mask: u32) {
        let before = self.waker.before(|| self.host_fds());
        let msix_was_enabled = self.msix.enabled();
        self.config.write(reg, value, mask);
        if reg == self.pci_cfg_cap / 4 + 4 {
            if let Some((offset, len)) = self.pci_cfg_window() {
                let word = self.config.read(reg).to_le_bytes();
                self.write_bar0(offset, &word[..len]);
            }
        }
        self.msix.sync(&self.config);
        if self.msix.enabled() && !msix_was_enabled {
            // Interrupts go out as messages now; an INTx raised before
            // (whose ISR the driver may never read) must not stay asserted.
            self.config.set_intx(false);
        }
        self.waker.after(before, || self.host_fds());
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            0 => self.read_bar0(offset, data),
            1 if offset < layout::MSIX_PBA => self.msix.read_table(offset, data),
            1 => self.msix.read_pba(offset - layout::MSIX_PBA, data),
            _ => data.fill(0xff),
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            0 => {
                let before = self.waker.before(|| self.host_fds());
                self.write_bar0(offset, data);
                self.waker.after(before, || self.host_fds());
            }
            1 if offset < layout::MSIX_PBA => self.msix.write_table(offset, data),
            1 => self.msix.write_pba(offset - layout::MSIX_PBA, data),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.state.reset();
        self.device_reset();
        self.msix.reset();
        self.config.reset();
    }
}
