//! The virtio-mmio transport, version 2 ("modern"), as a [`BusDevice`].
//!
//! Register layout and semantics follow the virtio 1.2 specification, 4.2.2.
//! A trapped write of QueueNotify is served synchronously in the vCPU's MMIO
//! exit; the VMM normally registers an ioeventfd per queue on that register,
//! so the write completes in KVM and a worker thread calls
//! [`VirtioMmioDevice::queue_notified`] instead. The interrupt line is
//! level-triggered (the VMM may share its pin with other devices): it is
//! asserted while InterruptStatus has a bit set, and the status register
//! tells the driver why.

use super::state::{QueueField, Signals, VirtioState};
use super::{HostFdsWaker, VirtioBackend};
use crate::devices::{fill_le, le_value, BusDevice, InterruptLine};
use std::sync::Arc;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// "virt", little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Vendor ID reported by cellvm ("QEMU", as most VMMs do; drivers ignore it).
pub const VENDOR_ID: u32 = 0x554d_4551;

/// Interrupt status bit: a used buffer was published.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration (or device status) changed.
pub const INT_CONFIG: u32 = 2;

/// Register offsets (virtio 1.2, 4.2.2).
pub mod regs {
    /// Magic value "virt".
    pub const MAGIC: u64 = 0x000;
    /// Version (2).
    pub const VERSION: u64 = 0x004;
    /// Device ID.
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID.
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, 32 bits selected by DEVICE_FEATURES_SEL.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Device feature word selector.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits selected by DRIVER_FEATURES_SEL.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Driver feature word selector.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Queue selector.
    pub const QUEUE_SEL: u64 = 0x030;
    /// Maximum size of the selected queue (0: no such queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// Ready bit of the selected queue.
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notifier.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status.
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available (driver) ring address, low 32 bits.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available (driver) ring address, high 32 bits.
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used (device) ring address, low 32 bits.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used (device) ring address, high 32 bits.
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Shared memory region selector.
    pub const SHM_SEL: u64 = 0x0ac;
    /// Shared memory length, low.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// Shared memory length, high.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// Configuration generation.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// A virtio device on the virtio-mmio transport (one 4 KiB window).
pub struct VirtioMmioDevice {
    state: VirtioState,
    irq: Arc<dyn InterruptLine>,
    interrupt_status: u32,
    waker: HostFdsWaker,
}

impl VirtioMmioDevice {
    /// A transport named `name` (for log lines) serving `backend`, with
    /// buffers in `mem` and its interrupt on `irq` (level, active high).
    pub fn new(
        name: &str,
        backend: Box<dyn VirtioBackend>,
        mem: GuestMemoryMmap,
        irq: Arc<dyn InterruptLine>,
    ) -> Self {
        VirtioMmioDevice {
            state: VirtioState::new(format!("virtio-mmio {name}"), backend, mem),
            irq,
            interrupt_status: 0,
            waker: HostFdsWaker::default(),
        }
    }

    /// The device status register (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.state.status()
    }

    /// Whether the interrupt line is currently asserted.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Lets the backend feed pending host-side input (console) into its
    /// queues; call it when the backend's host side may have data. A no-op
    /// until the driver has set DRIVER_OK.
    pub fn process_host_input(&mut self) {
        let signals = self.state.process_host_input();
        self.deliver(signals);
    }

    /// Number of virtqueues.
    pub fn num_queues(&self) -> usize {
        self.state.num_queues()
    }

    /// Queue `index` was notified through an ioeventfd on QueueNotify.
    pub fn queue_notified(&mut self, index: u16) {
        let signals = self.state.notify_deferred(u32::from(index));
        self.deliver(signals);
    }

    /// Host file descriptors to watch before calling
    /// [`Self::process_host_input`] (re-query after each call and after
    /// `waker` fires); none until the driver sets DRIVER_OK.
    pub fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.state.host_fds()
    }

    /// Surprise removal ([`VirtioState::sever`]).
    pub fn sever(&mut self) {
        self.state.sever();
    }

    /// Signals `waker` whenever a register write changes [`Self::host_fds`].
    pub fn set_host_fds_waker(&mut self, waker: EventFd) {
        self.waker.set(waker);
    }

    fn deliver(&mut self, signals: Signals) {
        let mut bits = 0;
        if signals.used != 0 {
            bits |= INT_USED_RING;
        }
        if signals.config {
            bits |= INT_CONFIG;
        }
        if bits != 0 {
            self.interrupt_status |= bits;
            self.irq.set_level(true);
        }
    }

    fn reset_interrupt(&mut self) {
        if self.interrupt_status != 0 {
            self.interrupt_status = 0;
            self.irq.set_level(false);
        }
    }

    fn read_register(&self, offset: u64) -> u32 {
        let state = &self.state;
        let sel = state.selected();
        match offset {
            regs::MAGIC => MAGIC,
            regs::VERSION => 2,
            regs::DEVICE_ID => state.device_type(),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => state.device_features_word(),
            regs::QUEUE_NUM_MAX => sel.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => sel.map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt_status,
            regs::STATUS => state.status(),
            // No shared memory regions: a length of all ones means "absent".
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH => u32::MAX,
            regs::CONFIG_GENERATION => state.config_generation(),
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let queue_field = match offset {
            regs::QUEUE_NUM => Some(QueueField::Size),
            regs::QUEUE_DESC_LOW => Some(QueueField::DescLow),
            regs::QUEUE_DESC_HIGH => Some(QueueField::DescHigh),
            regs::QUEUE_AVAIL_LOW => Some(QueueField::AvailLow),
            regs::QUEUE_AVAIL_HIGH => Some(QueueField::AvailHigh),
            regs::QUEUE_USED_LOW => Some(QueueField::UsedLow),
            regs::QUEUE_USED_HIGH => Some(QueueField::UsedHigh),
            _ => None,
        };
        if let Some(f) = queue_field {
            self.state.write_queue_field(f, value);
            return;
        }
        match offset {
            regs::DEVICE_FEATURES_SEL => self.state.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.state.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.state.write_driver_features(value),
            regs::QUEUE_SEL => self.state.queue_sel = value,
            regs::QUEUE_READY => {
                let signals = self.state.write_queue_ready(value);
                self.deliver(signals);
            }
            regs::QUEUE_NOTIFY => {
                let signals = self.state.notify(value);
                self.deliver(signals);
            }
            regs::INTERRUPT_ACK => {
                self.interrupt_status &= !value;
                if self.interrupt_status == 0 {
                    self.irq.set_level(false);
                }
            }
            regs::STATUS => {
                if self.state.write_status(value) {
                    self.reset_interrupt();
                }
            }
            regs::SHM_SEL => {}
            _ => self.state.warn(format_args!(
                "write {value:#x} to read-only or reserved register {offset:#x} ignored"
            )),
        }
    }
}

impl BusDevice for VirtioMmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.state.read_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.state.warn(format_args!(
                "{}-byte register read at {offset:#x} (registers are 32-bit)",
                data.len()
            ));
            data.fill(0);
            return;
        }
        fill_le(data, u64::from(self.read_register(offset)));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            self.state.write_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.state.warn(format_args!(
                "{}-byte register write at {offset:#x} (registers are 32-bit); ignored",
                data.len()
            ));
            return;
        }
        let before = self.waker.before(|| self.host_fds());
        self.write_register(offset, le_value(data) as u32);
        self.waker.after(before, || self.host_fds());
    }
}
