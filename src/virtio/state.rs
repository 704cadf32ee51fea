//! What every virtio transport shares: feature negotiation, the device
//! status state machine, the virtqueues and the backend.
//!
//! [`VirtioState`] knows nothing of registers or interrupt mechanisms. A
//! transport (virtio-mmio, virtio-pci) decodes the guest's accesses into calls
//! here and delivers the [`Signals`] they return: an interrupt status bit and a
//! level on virtio-mmio, an ISR bit and INTx or MSI-X vectors on virtio-pci.

use super::{VirtioBackend, VirtioError, VIRTIO_F_VERSION_1};
use crate::ratelimit::RateLimiter;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const BAD_SIZE: u8 = 1;
const BAD_DESC: u8 = 2;
const BAD_AVAIL: u8 = 4;
const BAD_USED: u8 = 8;

/// Interrupts a transport must deliver after an operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Signals {
    /// Bit `i`: queue `i` published used buffers (queues 63 and up share
    /// bit 63).
    pub used: u64,
    /// The configuration or the device status changed (e.g. NEEDS_RESET).
    pub config: bool,
}

impl Signals {
    /// Nothing to deliver.
    pub const NONE: Signals = Signals {
        used: 0,
        config: false,
    };

    /// Whether anything is to be delivered.
    pub fn any(&self) -> bool {
        self.used != 0 || self.config
    }

    /// Queue indices that published used buffers.
    pub fn used_queues(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64).filter(move |i| self.used & (1u64 << i) != 0)
    }

    fn queue_bit(index: usize) -> u64 {
        1u64 << index.min(63)
    }
}

/// A queue field a transport lets the driver program before the queue is
/// enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueField {
    /// Queue size (number of descriptors).
    Size,
    /// Descriptor table address, low 32 bits.
    DescLow,
    /// Descriptor table address, high 32 bits.
    DescHigh,
    /// Available (driver) ring address, low 32 bits.
    AvailLow,
    /// Available (driver) ring address, high 32 bits.
    AvailHigh,
    /// Used (device) ring address, low 32 bits.
    UsedLow,
    /// Used (device) ring address, high 32 bits.
    UsedHigh,
}

/// Transport-independent state of one virtio device.
pub struct VirtioState {
    name: String,
    backend: Box<dyn VirtioBackend>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    /// Per queue: `BAD_*` bits for an invalid size or misaligned ring address
    /// written since the last reset; such a queue cannot be enabled.
    bad_setup: Vec<u8>,
    /// The selected queue (QueueSel / queue_select).
    pub queue_sel: u32,
    /// Device feature word selector.
    pub device_features_sel: u32,
    /// Driver feature word selector.
    pub driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    /// Surprise-removed ([`Self::sever`]): the host side is gone.
    severed: bool,
    log: RateLimiter,
}

impl VirtioState {
    /// State for `backend`, whose buffers live in `mem`. `name` prefixes log
    /// lines (e.g. "virtio-mmio disk0").
    pub fn new(name: String, backend: Box<dyn VirtioBackend>, mem: GuestMemoryMmap) -> Self {
        let queues: Vec<Queue> = backend
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| {
                // A backend bug (size not a power of two) falls back to size 1.
                Queue::new(max).or_else(|_| Queue::new(1)).ok()
            })
            .collect();
        let bad_setup = vec![0; queues.len()];
        VirtioState {
            name,
            backend,
            mem,
            queues,
            bad_setup,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            severed: false,
            log: RateLimiter::new(10),
        }
    }

    /// Surprise removal (docs/addons.md): the backend drops its host side
    /// now ([`VirtioBackend::sever`]); from then on host input is no longer
    /// watched and the device-specific configuration reads all-ones. The
    /// registers keep answering, so the driver can still tear down.
    pub fn sever(&mut self) {
        if !self.severed {
            self.severed = true;
            self.backend.sever();
            log::warn!(
                "{}: surprise-removed: host side dropped, requests fail from now on",
                self.name
            );
        }
    }

    /// Whether [`Self::sever`] was called.
    pub fn severed(&self) -> bool {
        self.severed
    }

    /// A rate-limited warning naming the device.
    pub fn warn(&self, msg: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            log::warn!("{}: {msg}", self.name);
        }
    }

    /// The backend's virtio device ID.
    pub fn device_type(&self) -> u32 {
        self.backend.device_type()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The configuration generation counter.
    pub fn config_generation(&self) -> u32 {
        self.config_generation
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The selected queue, if it exists.
    pub fn selected(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Features offered: the backend's plus [`VIRTIO_F_VERSION_1`].
    pub fn device_features(&self) -> u64 {
        self.backend.device_features() | VIRTIO_F_VERSION_1
    }

    /// The 32 offered feature bits selected by `device_features_sel`.
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device_features() as u32,
            1 => (self.device_features() >> 32) as u32,
            _ => 0,
        }
    }

    /// The 32 accepted feature bits selected by `driver_features_sel`.
    pub fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// Whether the driver is running the device (DRIVER_OK, no failure).
    pub fn live(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED) == 0
    }

    /// Marks the device as needing a reset; the driver learns it from a
    /// configuration interrupt once it runs the device.
    pub fn needs_reset(&mut self, why: std::fmt::Arguments<'_>) -> Signals {
        self.warn(format_args!("device needs reset: {why}"));
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        Signals {
            used: 0,
            config: self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0,
        }
    }

    /// Back to the state after power-on; the backend's host side stays.
    pub fn reset(&mut self) {
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
    }

    /// A driver write of 32 feature bits (the word `driver_features_sel`).
    pub fn write_driver_features(&mut self, value: u32) {
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

    /// Whether queue fields may be written now (FEATURES_OK, not DRIVER_OK,
    /// queue present and not enabled); logs why not.
    fn queue_writable(&self, what: &str) -> Option<usize> {
        let s = self.status;
        if s & VIRTIO_CONFIG_S_FEATURES_OK == 0 || s & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.warn(format_args!("{what} written in status {s:#x}; ignored"));
            return None;
        }
        let sel = self.queue_sel;
        let Some(q) = self.queues.get(sel as usize) else {
            self.warn(format_args!("{what} for absent queue {sel}; ignored"));
            return None;
        };
        if q.ready() {
            self.warn(format_args!(
                "queue {sel} {what} written while enabled; ignored"
            ));
            return None;
        }
        Some(sel as usize)
    }

    /// A driver write to a field of the selected queue.
    pub fn write_queue_field(&mut self, field: QueueField, value: u32) {
        let Some(i) = self.queue_writable(&format!("{field:?}")) else {
            return;
        };
        let q = &mut self.queues[i];
        let with_low = |old: u64| GuestAddress((old & !0xffff_ffff) | u64::from(value));
        let with_high = |old: u64| GuestAddress((old & 0xffff_ffff) | u64::from(value) << 32);
        let (bit, ok, what) = match field {
            QueueField::Size => (
                BAD_SIZE,
                u16::try_from(value).is_ok_and(|n| q.try_set_size(n).is_ok()),
                "size is not a power of two up to the maximum",
            ),
            QueueField::DescLow | QueueField::DescHigh => {
                let addr = if field == QueueField::DescLow {
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
            QueueField::AvailLow | QueueField::AvailHigh => {
                let addr = if field == QueueField::AvailLow {
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
            QueueField::UsedLow | QueueField::UsedHigh => {
                let addr = if field == QueueField::UsedLow {
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
                "queue {i}: {field:?} = {value:#x} refused: {what}"
            ));
        }
    }

    /// A driver write to the selected queue's enable (ready) field.
    pub fn write_queue_ready(&mut self, value: u32) -> Signals {
        let sel = self.queue_sel;
        let i = sel as usize;
        if value == 0 {
            if let Some(q) = self.queues.get_mut(i) {
                q.set_ready(false);
            }
            return Signals::NONE;
        }
        if self.queue_writable("queue enable").is_none() {
            return Signals::NONE;
        }
        let mem = &self.mem;
        let q = &self.queues[i];
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
            None => {
                self.queues[i].set_ready(true);
                Signals::NONE
            }
            Some(why) => self.needs_reset(format_args!("queue {sel} cannot be enabled: {why}")),
        }
    }

    /// A driver write to the device status. Returns `true` when it reset the
    /// device (the transport then clears its own interrupt state).
    pub fn write_status(&mut self, value: u32) -> bool {
        if value == 0 {
            self.reset();
            return true;
        }
        let old = self.status;
        if value & VIRTIO_CONFIG_S_NEEDS_RESET != old & VIRTIO_CONFIG_S_NEEDS_RESET {
            self.warn(format_args!(
                "driver toggled DEVICE_NEEDS_RESET ({old:#x} -> {value:#x}); ignored"
            ));
            return false;
        }
        if value & old != old {
            self.warn(format_args!(
                "driver cleared status bits without a reset ({old:#x} -> {value:#x}); ignored"
            ));
            return false;
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
                return false;
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
        false
    }

    /// Serves queue `index` after a notification that arrived through an
    /// eventfd: like [`Self::notify`], but a device that is not running or a
    /// queue that is not enabled is not the driver's mistake here (the
    /// notification may have crossed a reset), so it is dropped silently.
    pub fn notify_deferred(&mut self, index: u32) -> Signals {
        let ready = self.queues.get(index as usize).is_some_and(|q| q.ready());
        if !self.live() || !ready {
            log::debug!(
                "{}: deferred notify for queue {index} in status {:#x} dropped",
                self.name,
                self.status
            );
            return Signals::NONE;
        }
        self.notify(index)
    }

    /// The driver notified queue `index`: serve it.
    pub fn notify(&mut self, index: u32) -> Signals {
        if !self.live() {
            self.warn(format_args!(
                "notify for queue {index} in status {:#x} (not DRIVER_OK, or needs reset); ignored",
                self.status
            ));
            return Signals::NONE;
        }
        let i = index as usize;
        let Some(q) = self.queues.get_mut(i) else {
            self.warn(format_args!("notify for absent queue {index}; ignored"));
            return Signals::NONE;
        };
        if !q.ready() {
            self.warn(format_args!(
                "notify for queue {index}, which is not enabled; ignored"
            ));
            return Signals::NONE;
        }
        let result = self.backend.process_queue(i, q, &self.mem);
        match result {
            Ok(true) => Signals {
                used: Signals::queue_bit(i),
                config: false,
            },
            Ok(false) => Signals::NONE,
            Err(e) => self.failed(e),
        }
    }

    /// Lets the backend move pending host-side input into its queues. A
    /// no-op until the driver runs the device.
    pub fn process_host_input(&mut self) -> Signals {
        if !self.live() || self.severed {
            return Signals::NONE;
        }
        let before: Vec<u16> = self.queues.iter().map(|q| q.next_used()).collect();
        match self.backend.process_host_input(&mut self.queues, &self.mem) {
            Ok(_) => {
                let mut used = 0;
                for (i, (q, b)) in self.queues.iter().zip(before).enumerate() {
                    if q.next_used() != b {
                        used |= Signals::queue_bit(i);
                    }
                }
                Signals {
                    used,
                    config: false,
                }
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, e: VirtioError) -> Signals {
        self.needs_reset(format_args!("{e}"))
    }

    /// Host file descriptors whose readability means host input may be
    /// pending; none until the driver runs the device, since
    /// [`Self::process_host_input`] reads nothing before (an fd left
    /// readable would make the caller's poll spin).
    pub fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        if !self.live() || self.severed {
            return Vec::new();
        }
        self.backend.host_fds()
    }

    /// Bytes of device configuration.
    pub fn config_len(&self) -> usize {
        self.backend.config_space().len()
    }

    /// Reads `data.len()` bytes of the device configuration at `offset`;
    /// beyond its end reads as zeros (with a log line).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        if self.severed {
            data.fill(0xff);
            return;
        }
        let config = self.backend.config_space();
        let got = usize::try_from(offset)
            .ok()
            .and_then(|start| config.get(start..start.checked_add(data.len())?));
        match got {
            Some(bytes) => data.copy_from_slice(bytes),
            None => {
                data.fill(0);
                self.warn(format_args!(
                    "config read of {} bytes at {offset:#x} beyond {} bytes",
                    data.len(),
                    config.len()
                ));
            }
        }
    }

    /// Writes the device configuration at `offset`; out of range is ignored
    /// (with a log line).
    pub fn write_config(&mut self, offset: u64, data: &[u8]) {
        let len = self.backend.config_space().len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start.checked_add(data.len()).is_none_or(|end| end > len) {
            self.warn(format_args!(
                "config write of {} bytes at {offset:#x} beyond {len} bytes; ignored",
                data.len()
            ));
            return;
        }
        self.backend.write_config(start, data);
    }
}
