//! The virtual PCI core: an emulated configuration window (ECAM or CAM) served
//! from Rust, with PCI functions behind it.
//!
//! - [`decode`]: config-window offsets → (bus, device, function, register),
//!   and the access rules (1, 2 or 4 bytes, naturally aligned).
//! - [`config_space`]: the [`PciFunction`] trait and [`ConfigSpace`], a
//!   reusable type-0 header with per-register read-only / read-write /
//!   write-1-to-clear masks, BARs, a capability list and INTx state.
//! - [`config_mirror`]: [`MirrorPage`], a function's config space the guest
//!   reads from memory instead of exiting, written through on every change.
//! - [`mirror_window`]: [`MirrorWindow`], a bridge's whole ECAM window in
//!   host memory: its functions' pages, all ones everywhere else.
//! - [`bar`]: BAR descriptions ([`BarSpec`]), the sizing protocol, and the
//!   [`BarMapper`] hook for BARs backed by host memory.
//! - [`host_bridge`]: [`PciHostBridge`], the [`BusDevice`](crate::devices::BusDevice)
//!   for the config window; it maps and unmaps BARs on the MMIO [`Bus`](crate::devices::Bus)
//!   as the guest programs them, and routes INTx to the bridge's four IOAPIC pins.
//! - [`intx`]: [`pci_intx_pin`], the INTx swizzle the bridge and the device
//!   tree's `interrupt-map` share.
//! - [`msix`]: [`Msix`], the MSI-X capability, vector table and pending bits.
//! - [`test_device`]: [`PciTestDevice`], a tiny function for end-to-end tests.
//!
//! See `docs/pci.md` for the model, the locking rules and the test device's
//! register map.

pub mod bar;
pub mod config_mirror;
pub mod config_space;
pub mod decode;
pub mod host_bridge;
pub mod intx;
pub mod mirror_window;
pub mod msix;
pub mod p2p_bridge;
pub mod test_device;

pub use bar::{BarKind, BarMapError, BarMapper, BarRegion, BarSpec};
pub use config_mirror::{MirrorError, MirrorMapper, MirrorMapping, MirrorPage};
pub use config_space::{ConfigSpace, IntxPin, PciFunction, PciIds, SharedFunction};
pub use decode::{BadAccess, ConfigDecoder, Decoded, PciAddress};
pub use host_bridge::PciHostBridge;
pub use intx::pci_intx_pin;
pub use mirror_window::MirrorWindow;
pub use msix::{MsiSender, Msix};
pub use p2p_bridge::PciToPciBridge;
pub use test_device::PciTestDevice;

use thiserror::Error;

/// Errors from building PCI functions and attaching them to a bridge.
///
/// Guest behaviour never produces these: bad guest accesses are counted and
/// logged, never returned.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciError {
    /// Device or function number out of range.
    #[error(
        "PCI device {device} function {function} is out of range (device 0..=31, function 0..=7)"
    )]
    InvalidAddress {
        /// Device number given.
        device: u8,
        /// Function number given.
        function: u8,
    },
    /// The bus is not in the bridge's bus range.
    #[error("bus {bus:#04x} is outside bridge {bridge}'s bus range {start:#04x}..={end:#04x}")]
    BusOutOfRange {
        /// Bridge id.
        bridge: String,
        /// Requested bus.
        bus: u8,
        /// First bus of the bridge.
        start: u8,
        /// Last bus of the bridge.
        end: u8,
    },
    /// A function already sits at that address.
    #[error("PCI address {0} is already occupied")]
    Occupied(PciAddress),
    /// No function at that address.
    #[error("no PCI function at {0}")]
    NoFunction(PciAddress),
    /// A BAR description is invalid or collides with another BAR.
    #[error("BAR {index}: {reason}")]
    InvalidBar {
        /// BAR index (0..=5).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The capability does not fit in the header's capability area.
    #[error("capability {id:#04x} of {len} bytes does not fit in configuration space")]
    CapabilitySpace {
        /// Capability id.
        id: u8,
        /// Capability length including id and next pointer.
        len: usize,
    },
}

#[cfg(test)]
mod tests;
