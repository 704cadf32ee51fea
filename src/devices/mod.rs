//! Device models, the buses they sit on, and the [`InterruptLine`] they drive.
//!
//! Every guest access arrives through [`Bus::read`] / [`Bus::write`], which
//! validate size and range before a device sees it, so device code only ever
//! handles accesses that lie entirely inside its own window.

#[cfg(target_arch = "x86_64")]
pub mod acpi_power;
pub mod boot_timer;
mod bus;
pub mod debug_exit;
#[cfg(target_arch = "x86_64")]
pub mod legacy;
pub mod pvpanic;
pub mod serial;
mod shared_line;

pub use bus::{Bus, BusError, BusKind};
pub use shared_line::{LineSource, SharedLine};

/// A device model reachable through a [`Bus`].
///
/// `offset` is relative to the device's base; `data.len()` is 1, 2, 4 or 8 and
/// `offset + data.len()` never exceeds the registered length. Implementations
/// must not panic on any offset/size combination within those bounds.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// An interrupt line a device model drives: a PCI function's INTx, a
/// virtio-mmio device's or the channel's IOAPIC pin. The VMM implements it
/// on KVM (`KVM_IRQ_LINE`, irqfds on IOAPIC pins); tests with a recorder.
pub trait InterruptLine: Send + Sync {
    /// Drives the line: `true` asserted, `false` deasserted.
    fn set_level(&self, level: bool);
}

/// Little-endian value of an access of up to 8 bytes.
pub fn le_value(data: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = data.len().min(8);
    buf[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(buf)
}

/// Fills `data` with the little-endian bytes of `value` (truncated to its length).
pub fn fill_le(data: &mut [u8], value: u64) {
    let bytes = value.to_le_bytes();
    for (d, s) in data.iter_mut().zip(bytes.iter()) {
        *d = *s;
    }
}
