//! The `cellvm` binary.

use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let start = Instant::now();
    cellvm::cli::main_with(cellvm::cli::Cli::parse(), start)
}
