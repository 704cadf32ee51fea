//! The cell's console: a 16550 UART (vm-superio) at I/O port 0x3f8, with its
//! interrupt delivered through a KVM irqfd on IOAPIC pin 4.

use super::BusDevice;
use crate::ratelimit::RateLimiter;
use std::io::Write;
use std::sync::Arc;
use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An [`EventFd`] that vm-superio can trigger (the crate has no impl for it).
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Signals, through an eventfd, that the guest drained the receive FIFO, so
/// the input pump can resume feeding it.
pub struct InputSpace {
    event: EventFd,
}

impl InputSpace {
    fn new() -> std::io::Result<Self> {
        Ok(InputSpace {
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Readable when the receive FIFO became empty.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

impl SerialEvents for InputSpace {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {
        log::debug!("console: output byte lost");
    }
    fn in_buffer_empty(&self) {
        if let Err(e) = self.event.write(1) {
            log::warn!("console: cannot signal input space: {e}");
        }
    }
}

/// The console UART as a bus device.
pub struct SerialConsole {
    serial: Serial<EventFdTrigger, Arc<InputSpace>, Box<dyn Write + Send>>,
    /// Failed register writes (e.g. host output failing for every byte).
    log: RateLimiter,
}

impl SerialConsole {
    /// A UART writing to `out`. Returns the device, the eventfd to register as
    /// its irqfd, and the input-space notifier.
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<(Self, EventFd, Arc<InputSpace>)> {
        let irq = EventFd::new(EFD_NONBLOCK)?;
        let irq_for_kvm = irq.try_clone()?;
        let space = Arc::new(InputSpace::new()?);
        let serial = Serial::with_events(EventFdTrigger(irq), space.clone(), out);
        Ok((
            SerialConsole {
                serial,
                log: RateLimiter::new(10),
            },
            irq_for_kvm,
            space,
        ))
    }

    /// Queues input bytes for the guest. Returns how many were accepted (the
    /// FIFO may be full; retry the rest after [`InputSpace`] fires).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("console: input dropped: {e}");
                0
            }
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The 16550 has byte-wide registers; wider accesses read the first.
        let value = u8::try_from(offset)
            .ok()
            .filter(|o| *o < 8)
            .map(|o| self.serial.read(o))
            .unwrap_or(0xff);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if offset >= 8 {
            return;
        }
        if let Err(e) = self.serial.write(offset, *value) {
            if self.log.allow() {
                log::warn!("console: write to register {offset} failed: {e}");
            }
        }
    }
}
