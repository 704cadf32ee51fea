//! cellvm as a CI boot-test runner (docs/ci.md): what `cellvm run` adds to
//! a cell when it is a test: console patterns that decide pass or fail
//! ([`watch`]), and results a CI system reads ([`junit`]).
//!
//! Exit statuses are the stop reasons' ([`crate::stop::StopReason`]),
//! documented in docs/cli.md; the run's timeout is the VMM's (a timer in
//! its control loop).

pub mod hotplug;
pub mod junit;
pub mod watch;
