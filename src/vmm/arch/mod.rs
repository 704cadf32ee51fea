//! What a cell's VM needs that differs between architectures: creating the
//! VM and its in-kernel interrupt controller, the console and legacy
//! devices, loading the kernel with the boot protocol, the vCPUs' initial
//! state, and how an interrupt line is named to KVM. Everything else in
//! `vmm` is shared.
//!
//! Each architecture module offers the same functions:
//!
//! * `create_vm(&Kvm, &CellConfig) -> Vm`: the VM with its interrupt
//!   controller, ready for memory slots and irqfds;
//! * `add_platform_devices(...)`: the console UART and the devices only
//!   that architecture has, on the buses;
//! * `load(...) -> EntryPoint`: boot tables, kernel, initrd, command line
//!   and device tree in guest memory;
//! * `create_vcpus(...)`: the vCPUs, before any device (aarch64's GIC is
//!   initialised with them, and irqfds need it);
//! * `set_boot_entry(...)`: the boot vCPU at the entry point;
//! * `kvm_irq_line(line)`, `irqchip_routes()`, `FIRST_MSI_GSI`: interrupt
//!   lines as KVM names them.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

use crate::vmm::error::VmmError;
use std::fs::File;

/// A guest-memory error while loading, as a [`VmmError`].
fn mem_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Memory(e.to_string())
}

/// Opens a kernel or initrd, naming it in the error.
fn open(path: &std::path::Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::File {
        path: path.to_path_buf(),
        source,
    })
}
