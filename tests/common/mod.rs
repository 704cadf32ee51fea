//! Shared helpers for integration tests.
#![allow(dead_code)]

pub mod checks;
pub mod guest;
pub mod handover;
pub mod host_cells;
pub mod rig;
