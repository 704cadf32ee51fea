//! Errors from building and running a cell.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong setting up or running a cell on KVM.
#[derive(Debug, Error)]
pub enum VmmError {
    /// A KVM ioctl failed.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    /// Guest memory could not be created or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// A file (kernel, initrd, console) could not be used.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel image could not be loaded.
    #[error("loading kernel {path}: {source}")]
    KernelLoad {
        /// The kernel.
        path: PathBuf,
        /// Why.
        source: linux_loader::loader::Error,
    },
    /// The boot protocol cannot be satisfied (old kernel, no room, ...).
    #[error("boot: {0}")]
    Boot(String),
    /// Placing devices failed.
    #[error("layout: {0}")]
    Layout(#[from] crate::layout::LayoutError),
    /// Building the device tree failed.
    #[error("device tree: {0}")]
    Fdt(#[from] crate::fdt::FdtError),
    /// Building a PCI bridge or function failed.
    #[error("PCI: {0}")]
    Pci(#[from] crate::pci::PciError),
    /// The control API socket could not be set up.
    #[error("{0}")]
    Api(#[from] crate::api::ApiSetupError),
    /// A host resource the cell needs is held by another cell.
    #[error("{0}")]
    Claim(#[from] crate::partition::claims::ClaimError),
    /// A virtio backend could not be set up.
    #[error("virtio: {0}")]
    Virtio(#[from] crate::virtio::VirtioError),
    /// Registering a device failed.
    #[error("device bus: {0}")]
    Bus(#[from] crate::devices::BusError),
    /// A device kind that can only be configured at boot was attached.
    #[error("{what} can only be configured at boot for now")]
    NotAtRuntime {
        /// The device.
        what: String,
    },
    /// A vCPU could not be pinned.
    #[error("cpus.pin: vCPU {vcpu} cannot be pinned to host CPU {cpu}: {reason}")]
    Pin {
        /// The vCPU index.
        vcpu: usize,
        /// The host CPU.
        cpu: usize,
        /// Why.
        reason: String,
    },
    /// A seccomp filter could not be built or installed, or a filtered
    /// thread could not be started.
    #[error("seccomp: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// An OS call (thread, eventfd, signal, epoll) failed.
    #[error("{what}: {source}")]
    Os {
        /// Which operation.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Attaches an operation name to a KVM error.
pub(crate) trait KvmContext<T> {
    fn kvm(self, what: &'static str) -> Result<T, VmmError>;
}

impl<T> KvmContext<T> for Result<T, kvm_ioctls::Error> {
    fn kvm(self, what: &'static str) -> Result<T, VmmError> {
        self.map_err(|source| VmmError::Kvm { what, source })
    }
}

/// Attaches an operation name to an OS error.
pub(crate) trait OsContext<T> {
    fn os(self, what: &'static str) -> Result<T, VmmError>;
}

impl<T> OsContext<T> for std::io::Result<T> {
    fn os(self, what: &'static str) -> Result<T, VmmError> {
        self.map_err(|source| VmmError::Os { what, source })
    }
}
