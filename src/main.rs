//! The `cellvm` binary.

use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;

/// Counts live heap bytes for `cellvm status` (cellvm::heap).
#[global_allocator]
static ALLOC: cellvm::heap::CountingAlloc = cellvm::heap::CountingAlloc;

fn main() -> ExitCode {
    let start = Instant::now();
    cellvm::heap::limit_arenas();
    cellvm::cli::main_with(cellvm::cli::Cli::parse(), start)
}
