//! The `cellvm` command line.

use crate::config::{self, CellConfig, LoadOptions};
use crate::layout::CellLayout;
use crate::vmm::{control, Cell, CellIo};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Exit status for errors of cellvm itself (bad config, KVM failure, ...).
pub const EXIT_ERROR: u8 = 1;

/// cellvm: partition a KVM host into guest cells.
#[derive(Debug, Parser)]
#[command(name = "cellvm", version, about, long_about = None)]
pub struct Cli {
    /// Log debug messages (or set CELLVM_LOG=trace|debug|info|warn|error).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a cell and run it until it stops; the exit status says why.
    Run {
        /// The cell configuration (TOML).
        cell: PathBuf,
        /// Use this kernel instead of the configured one.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Use this initrd instead of the configured one.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Append this to the configured kernel command line.
        #[arg(long, value_name = "ARGS")]
        cmdline_append: Option<String>,
    },
    /// Validate a cell configuration and print its address map.
    Check {
        /// The cell configuration (TOML).
        cell: PathBuf,
    },
    /// Write the cell's device tree blob.
    Dtb {
        /// The cell configuration (TOML).
        cell: PathBuf,
        /// Output file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Runs the CLI and returns the process exit status.
pub fn main_with(cli: Cli, start: Instant) -> ExitCode {
    crate::logger::init(cli.verbose);
    match run_command(cli.command, start) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("cellvm: error: {msg}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn load(path: &std::path::Path, check_files: bool) -> Result<CellConfig, String> {
    config::load(path, &LoadOptions { check_files }).map_err(|e| e.to_string())
}

fn run_command(cmd: Command, start: Instant) -> Result<u8, String> {
    match cmd {
        Command::Run {
            cell,
            kernel,
            initrd,
            cmdline_append,
        } => {
            control::block_termination_signals()
                .map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
            let mut cfg = load(&cell, kernel.is_none())?;
            if let Some(k) = kernel {
                cfg.kernel.path = k;
                cfg.kernel.format =
                    config::detect_kernel_format(&cfg.kernel.path).map_err(|e| e.to_string())?;
            }
            if let Some(i) = initrd {
                cfg.kernel.initrd = Some(i);
            }
            if let Some(extra) = cmdline_append {
                cfg.kernel.cmdline = format!("{} {extra}", cfg.kernel.cmdline);
            }
            let io = CellIo::from_config(&cfg).map_err(|e| e.to_string())?;
            let name = cfg.name.clone();
            let cell = Cell::new(cfg, io, start).map_err(|e| format!("cell {name}: {e}"))?;
            let outcome = cell.run().map_err(|e| format!("cell {name}: {e}"))?;
            eprintln!(
                "cellvm: cell {name} stopped: {} (exit status {})",
                outcome.reason,
                outcome.reason.exit_code()
            );
            Ok(outcome.reason.exit_code())
        }
        Command::Check { cell } => {
            let cfg = load(&cell, true)?;
            let layout = CellLayout::new(&cfg).map_err(|e| e.to_string())?;
            println!(
                "{}: cell {} is valid ({} vCPU(s), {} MiB)",
                cell.display(),
                cfg.name,
                cfg.cpus.count,
                cfg.memory.iter().map(|m| m.size).sum::<u64>() >> 20
            );
            println!("address map:");
            for r in layout.map.entries() {
                println!(
                    "  {:#012x}..{:#012x}  {}",
                    r.window.base,
                    r.window.end(),
                    r.owner
                );
            }
            Ok(0)
        }
        Command::Dtb { cell, output } => {
            let cfg = load(&cell, false)?;
            let layout = CellLayout::new(&cfg).map_err(|e| e.to_string())?;
            let dtb = crate::fdt::build_base_dtb(&cfg, &layout).map_err(|e| e.to_string())?;
            std::fs::write(&output, dtb)
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            Ok(0)
        }
    }
}
