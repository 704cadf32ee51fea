//! The virtio-mmio transport, version 2 ("modern"), as a [`BusDevice`].
//!
//! Register layout and semantics follow the virtio 1.2 specification, 4.2.2.
//! Notifications are handled synchronously in the vCPU's MMIO write: the
//! queue is served, then the interrupt is raised.

use super::{VirtioBackend, VIRTIO_F_VERSION_1};
use crate::devices::{fill_le, le_value, BusDevice};
use crate::pci::InterruptLine;
use crate::ratelimit::RateLimiter;
use std::sync::Arc;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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

const BAD_SIZE: u8 = 1;
const BAD_DESC: u8 = 2;
const BAD_AVAIL: u8 = 4;
const BAD_USED: u8 = 8;

/// A virtio device on the virtio-mmio transport (one 4 KiB window).
pub struct VirtioMmioDevice {
    name: String,
    backend: Box<dyn VirtioBackend>,
    mem: GuestMemoryMmap,
    irq: Arc<dyn InterruptLine>,
    queues: Vec<Queue>,
    /// Per queue: `BAD_*` bits for invalid QueueNum or misaligned ring
    /// addresses written since the last reset; such a queue cannot be enabled.
    bad_setup: Vec<u8>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    log: RateLimiter,
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
        let queues: Vec<Queue> = backend
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| {
                // A backend bug (size not a power of two) falls back to size 1.
                Queue::new(max).or_else(|_| Queue::new(1)).ok()
            })
            .collect();
        let bad_setup = vec![0; queues.len()];
        VirtioMmioDevice {
            name: name.to_string(),
            backend,
            mem,
            irq,
            queues,
            bad_setup,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            log: RateLimiter::new(10),
        }
    }

    /// The device status register (for tests and diagnostics).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the interrupt line is currently asserted.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Lets the backend feed pending host-side input (console) into its
    /// queues; call it when the backend's host side may have data. A no-op
    /// until the driver has set DRIVER_OK.
    pub fn process_host_input(&mut self) {
        if !self.live() {
            return;
        }
        let result = self.backend.process_host_input(&mut self.queues, &self.mem);
        self.after_processing(result);
    }

    /// Host file descriptors to watch before calling
    /// [`Self::process_host_input`] (re-query after each call).
    pub fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.backend.host_fds()
    }

    fn live(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED) == 0
    }

    fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            log::warn!("virtio-mmio {}: {msg}", self.name);
        }
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        self.irq.set_level(true);
    }

    fn needs_reset(&mut self, why: std::fmt::Arguments<'_>) {
        self.warn(format_args!("device needs reset: {why}"));
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.raise(INT_CONFIG);
        }
    }

    fn after_processing(&mut self, result: Result<bool, super::VirtioError>) {
        match result {
            Ok(true) => self.raise(INT_USED_RING),
            Ok(false) => {}
            Err(e) => self.needs_reset(format_args!("{e}")),
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_setup.fill(0);
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.backend.reset();
        if self.interrupt_status != 0 {
            self.interrupt_status = 0;
            self.irq.set_level(false);
        }
    }

    fn device_features(&self) -> u64 {
        self.backend.device_features() | VIRTIO_F_VERSION_1
    }

    fn read_register(&self, offset: u64) -> u32 {
        let sel = self.queues.get(self.queue_sel as usize);
        match offset {
            regs::MAGIC => MAGIC,
            regs::VERSION => 2,
            regs::DEVICE_ID => self.backend.device_type(),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => sel.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => sel.map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.interrupt_status,
            regs::STATUS => self.status,
            // No shared memory regions: a length of all ones means "absent".
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH => u32::MAX,
            regs::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM
            | regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_AVAIL_LOW
            | regs::QUEUE_AVAIL_HIGH
            | regs::QUEUE_USED_LOW
            | regs::QUEUE_USED_HIGH => self.write_queue_field(offset, value),
            regs::QUEUE_READY => self.write_queue_ready(value),
            regs::QUEUE_NOTIFY => self.notify(value),
            regs::INTERRUPT_ACK => {
                self.interrupt_status &= !value;
                if self.interrupt_status == 0 {
                    self.irq.set_level(false);
                }
            }
            regs::STATUS => self.write_status(value),
            regs::SHM_SEL => {}
            _ => self.warn(format_args!(
                "write {value:#x} to read-only or reserved register {offset:#x} ignored"
            )),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_DRIVER == 0 || s & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.warn(format_args!(
                "driver features written in status {s:#x} (needs DRIVER, not FEATURES_OK); ignored"
            ));
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            sel => {
                if value != 0 {
                    self.warn(format_args!(
                        "driver features word {sel} = {value:#x} ignored"
                    ));
                }
            }
        }
    }

    fn write_queue_field(&mut self, offset: u64, value: u32) {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_FEATURES_OK == 0 || s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.warn(format_args!(
                "queue register {offset:#x} written in status {s:#x}; ignored"
            ));
            return;
        }
        let sel = self.queue_sel;
        let i = sel as usize;
        let Some(q) = self.queues.get_mut(i) else {
            self.warn(format_args!(
                "queue register {offset:#x} for absent queue {sel}; ignored"
            ));
            return;
        };
        if q.ready() {
            self.warn(format_args!(
                "queue {sel} register {offset:#x} written while ready; ignored"
            ));
            return;
        }
        let with_low = |old: u64| GuestAddress((old & !0xffff_ffff) | u64::from(value));
        let with_high = |old: u64| GuestAddress((old & 0xffff_ffff) | u64::from(value) << 32);
        let (bit, ok, what) = match offset {
            regs::QUEUE_NUM => (
                BAD_SIZE,
                u16::try_from(value).is_ok_and(|n| q.try_set_size(n).is_ok()),
                "size is not a power of two up to the maximum",
            ),
            regs::QUEUE_DESC_LOW | regs::QUEUE_DESC_HIGH => {
                let addr = if offset == regs::QUEUE_DESC_LOW {
                    with_low(q.desc_table())
                } else {
                    with_high(q.desc_table())
                };
                (
                    BAD_DESC,
                    q.try_set_desc_table_address(addr).is_ok(),
                    "descriptor table not 16-byte aligned",
                )
            }
            regs::QUEUE_AVAIL_LOW | regs::QUEUE_AVAIL_HIGH => {
                let addr = if offset == regs::QUEUE_AVAIL_LOW {
                    with_low(q.avail_ring())
                } else {
                    with_high(q.avail_ring())
                };
                (
                    BAD_AVAIL,
                    q.try_set_avail_ring_address(addr).is_ok(),
                    "available ring not 2-byte aligned",
                )
            }
            _ => {
                let addr = if offset == regs::QUEUE_USED_LOW {
                    with_low(q.used_ring())
                } else {
                    with_high(q.used_ring())
                };
                (
                    BAD_USED,
                    q.try_set_used_ring_address(addr).is_ok(),
                    "used ring not 4-byte aligned",
                )
            }
        };
        if ok {
            self.bad_setup[i] &= !bit;
        } else {
            self.bad_setup[i] |= bit;
            self.warn(format_args!(
                "queue {sel}: write {value:#x} to {offset:#x} refused: {what}"
            ));
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let s = self.status;
        let sel = self.queue_sel;
        let i = sel as usize;
        if value == 0 {
            if let Some(q) = self.queues.get_mut(i) {
                q.set_ready(false);
            }
            return;
        }
        if s & VIRTIO_CONFIG_S_FEATURES_OK == 0 || s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.warn(format_args!("QueueReady written in status {s:#x}; ignored"));
            return;
        }
        let mem = &self.mem;
        let Some(q) = self.queues.get(i) else {
            self.warn(format_args!("QueueReady for absent queue {sel}; ignored"));
            return;
        };
        let n = u64::from(q.size());
        // Split virtqueue footprints (virtio 1.2, 2.7): 16-byte descriptors,
        // 6 + 2n bytes of available ring, 6 + 8n bytes of used ring; the
        // alignment rules are already enforced by the address setters.
        let fits = |addr: u64, len: u64| mem.check_range(GuestAddress(addr), len as usize);
        let problem = if self.bad_setup[i] != 0 {
            Some("invalid queue size or misaligned ring address")
        } else if !fits(q.desc_table(), 16 * n) {
            Some("descriptor table outside guest memory")
        } else if !fits(q.avail_ring(), 6 + 2 * n) {
            Some("available ring outside guest memory")
        } else if !fits(q.used_ring(), 6 + 8 * n) {
            Some("used ring outside guest memory")
        } else {
            None
        };
        match problem {
            None => self.queues[i].set_ready(true),
            Some(why) => self.needs_reset(format_args!("queue {sel} cannot be enabled: {why}")),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if value & VIRTIO_CONFIG_S_NEEDS_RESET != old & VIRTIO_CONFIG_S_NEEDS_RESET {
            self.warn(format_args!(
                "driver toggled DEVICE_NEEDS_RESET ({old:#x} -> {value:#x}); ignored"
            ));
            return;
        }
        if value & old != old {
            self.warn(format_args!(
                "driver cleared status bits without a reset ({old:#x} -> {value:#x}); ignored"
            ));
            return;
        }
        let new = value & !old;
        if new & VIRTIO_CONFIG_S_FAILED != 0 {
            self.warn(format_args!("driver gave up on the device (FAILED)"));
        }
        // Each step needs the previous ones (virtio 1.2, 3.1.1).
        let order = [
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER),
            (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK),
        ];
        for (bit, needs) in order {
            if new & bit != 0 && value & needs == 0 {
                self.warn(format_args!(
                    "status bit {bit:#x} set before {needs:#x} ({old:#x} -> {value:#x}); ignored"
                ));
                return;
            }
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK
            | VIRTIO_CONFIG_S_FAILED
            | VIRTIO_CONFIG_S_NEEDS_RESET;
        let mut value = value & known;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device_features();
            let unknown = self.driver_features & !offered;
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                self.warn(format_args!(
                    "features {:#x} refused (offered {offered:#x}; VERSION_1 required)",
                    self.driver_features
                ));
                // FEATURES_OK stays clear: the driver reads it back and fails.
                // A DRIVER_OK set in the same write cannot stand without it.
                value &= !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
            }
        }
        self.status = value;
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && value & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.backend.activate(self.driver_features);
        }
    }

    fn notify(&mut self, value: u32) {
        if !self.live() {
            self.warn(format_args!(
                "notify for queue {value} in status {:#x} (not DRIVER_OK, or needs reset); ignored",
                self.status
            ));
            return;
        }
        let index = value as usize;
        let Some(q) = self.queues.get_mut(index) else {
            self.warn(format_args!("notify for absent queue {value}; ignored"));
            return;
        };
        if !q.ready() {
            self.warn(format_args!(
                "notify for queue {value}, which is not ready; ignored"
            ));
            return;
        }
        let result = self.backend.process_queue(index, q, &self.mem);
        self.after_processing(result);
    }
}

impl BusDevice for VirtioMmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            let config = self.backend.config_space();
            let start = (offset - regs::CONFIG) as usize;
            match config.get(start..start + data.len()) {
                Some(bytes) => data.copy_from_slice(bytes),
                None => {
                    data.fill(0);
                    self.warn(format_args!(
                        "config read of {} bytes at {start:#x} beyond {} bytes",
                        data.len(),
                        config.len()
                    ));
                }
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.warn(format_args!(
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
            let len = self.backend.config_space().len();
            let start = (offset - regs::CONFIG) as usize;
            if start + data.len() > len {
                self.warn(format_args!(
                    "config write of {} bytes at {start:#x} beyond {len} bytes; ignored",
                    data.len()
                ));
                return;
            }
            self.backend.write_config(start, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.warn(format_args!(
                "{}-byte register write at {offset:#x} (registers are 32-bit); ignored",
                data.len()
            ));
            return;
        }
        self.write_register(offset, le_value(data) as u32);
    }
}
