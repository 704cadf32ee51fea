//! cellvm: a small KVM VMM that partitions a host into guest cells.
//!
//! Data flows one way: [`config`] (TOML → validated [`config::CellConfig`]) →
//! [`layout`] (address map and IRQs) → [`fdt`] (device tree) and [`devices`]
//! (models on the MMIO/PIO buses) → [`vmm`] (KVM VM, memory, vCPUs).

pub mod config;
pub mod layout;
pub mod fdt;
pub mod devices;
pub mod ratelimit;
pub mod stop;
pub mod vmm;
pub mod cli;
pub mod logger;
