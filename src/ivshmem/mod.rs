//! ivshmem 2.0: a PCI function whose memory and doorbells are shared
//! between cells, following the Jailhouse "IVSHMEM Device Specification"
//! (`Documentation/ivshmem-v2-specification.md` in siemens/jailhouse).
//!
//! Every cell is its own `cellvm run` process, so the peers of a region meet
//! through the host, never through a shared address space:
//!
//! - [`region`]: [`IvshmemRegion`], this peer's attachment to the shared
//!   memory, a file `<runtime dir>/cellvm-ivshmem-<region>` that the first
//!   peer creates with the right size and layout and every peer maps
//!   `MAP_SHARED`. Membership, peer-id uniqueness and clean-up use
//!   open-file-description locks on that file.
//! - [`doorbell`]: the notification transport, one Unix datagram socket per
//!   peer (`<runtime dir>/cellvm-ivshmem-<region>.<peer>.sock`, mode 0600),
//!   and the 16-byte [`Message`] sent over it.
//! - [`device`]: [`IvshmemDevice`], the [`PciFunction`](crate::pci::PciFunction):
//!   IDs 110a:4106, class 0xff, BAR0 registers, BAR2 shared memory, the
//!   vendor-specific capability, MSI-X (BAR1) or INTx; and
//!   [`IvshmemSubscriber`], the `event-manager` subscriber that turns
//!   received messages into interrupts.
//!
//! Wiring into a VMM:
//!
//! ```no_run
//! # use cellvm::ivshmem::{self, IvshmemDevice, IvshmemRegion};
//! # use cellvm::pci::MsiSender;
//! # use std::sync::{Arc, Mutex};
//! # fn f(cfg: &cellvm::config::IvshmemConfig, msi: Arc<dyn MsiSender>) -> Result<(), ivshmem::IvshmemError> {
//! let region = Arc::new(IvshmemRegion::open(&ivshmem::runtime_dir(), cfg)?);
//! // region.guest_slots(): what to register as KVM memory slots (see
//! // docs/ivshmem.md); pass a BarMapper doing that, or None to serve
//! // BAR2 through MMIO exits. `msi` sends the MSI-X messages (the
//! // function's requester id routed through irqfds, in cellvm).
//! let device = Arc::new(Mutex::new(IvshmemDevice::new(region, None, msi)?));
//! let subscriber = IvshmemDevice::subscriber(&device);
//! // bridge.add_function(address, device.clone())?;
//! // control loop: events.add_subscriber(Box::new(subscriber));
//! # let _ = subscriber;
//! # Ok(()) }
//! ```
//!
//! See `docs/ivshmem.md` for the register map, the memory layout, what is
//! enforced and what is not.

pub mod device;
pub mod doorbell;
pub mod region;

pub use device::{IvshmemDevice, IvshmemStats, IvshmemSubscriber};
pub use doorbell::{DoorbellSocket, Message, MessageError, MessageKind};
pub use region::{GuestSlot, IvshmemRegion, RegionLayout};

use crate::pci::PciError;
use std::path::PathBuf;
use thiserror::Error;

/// Environment variable overriding the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "CELLVM_RUNTIME_DIR";

/// Runtime directory used when [`RUNTIME_DIR_ENV`] is not set: tmpfs, where
/// shared memory belongs, present on every Linux host.
pub const DEFAULT_RUNTIME_DIR: &str = "/dev/shm";

/// The directory holding region files and doorbell sockets:
/// `$CELLVM_RUNTIME_DIR` if set and not empty, else `/dev/shm`. Peers only
/// find each other if they use the same directory.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os(RUNTIME_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_RUNTIME_DIR),
    }
}

/// Errors from setting up an ivshmem region, socket or device.
///
/// Guest behaviour and messages from other processes never produce these:
/// bad register accesses and malformed datagrams are counted and logged.
#[derive(Debug, Error)]
pub enum IvshmemError {
    /// The configuration is not usable (only reachable through the API;
    /// validated configs always pass).
    #[error("ivshmem: {0}")]
    InvalidConfig(String),
    /// A system call on a runtime file failed.
    #[error("ivshmem region {region:?}: {what} {path}: {source}")]
    Io {
        /// Region name.
        region: String,
        /// What was being done.
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A runtime file exists but is not one cellvm may use (another user's,
    /// not a regular file / socket).
    #[error(
        "ivshmem region {region:?}: {path} {reason}; remove it or pick another runtime directory"
    )]
    Foreign {
        /// Region name.
        region: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Peers of one region disagree on its layout.
    #[error(
        "ivshmem region {region:?} ({path}) is in use with {existing}, but this cell asks for \
         {requested}; all peers of a region need the same max_peers, rw_size and output_size"
    )]
    LayoutMismatch {
        /// Region name.
        region: String,
        /// The region file.
        path: PathBuf,
        /// The layout the running peers use.
        existing: RegionLayout,
        /// The layout this peer asked for.
        requested: RegionLayout,
    },
    /// The region file is in use but its header or size is not what cellvm
    /// writes.
    #[error("ivshmem region {region:?} ({path}) is in use but unreadable: {reason}")]
    CorruptRegion {
        /// Region name.
        region: String,
        /// The region file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another live process is already this peer id in the region.
    #[error(
        "ivshmem region {region:?}: peer id {peer_id} is already in use by another cell ({path})"
    )]
    PeerIdInUse {
        /// Region name.
        region: String,
        /// The peer id.
        peer_id: u16,
        /// The region file.
        path: PathBuf,
    },
    /// A socket path does not fit in `sockaddr_un`.
    #[error("ivshmem socket path {0} is too long for a Unix socket (at most 107 bytes); use a shorter runtime directory")]
    PathTooLong(PathBuf),
    /// Building the PCI function failed.
    #[error("ivshmem PCI function: {0}")]
    Pci(#[from] PciError),
}

#[cfg(test)]
mod tests;
