//! cellvm: a small KVM VMM that partitions a host into guest cells.
//!
//! Data flows one way: [`config`] (TOML → validated [`config::CellConfig`]) →
//! [`layout`] (address map and IRQs) → [`fdt`] (device tree) and [`devices`]
//! (models on the MMIO/PIO buses) → [`vmm`] (KVM VM, memory, vCPUs).

pub mod api;
pub mod attach;
pub mod channel;
pub mod cli;
pub mod config;
pub mod devices;
pub mod fdt;
pub mod heap;
pub mod ivshmem;
pub mod layout;
pub mod logger;
pub mod partition;
pub mod pci;
pub mod platform;
pub mod ratelimit;
pub mod runner;
pub mod seccomp;
pub mod stop;
pub mod sync;
pub mod virtio;
pub mod vmm;
