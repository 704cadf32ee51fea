//! The command line's grammar: `cellvm`'s global flags, its subcommands and
//! each one's arguments (clap derive).
//!
//! A subcommand's arguments are added to clap's parser only when that
//! subcommand is the one being parsed ([`Deferred`]): every cellvm process
//! builds the arguments of one subcommand, not of all of them.

use super::deferred::Deferred;
use super::run;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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

/// A feature switch on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    #[default]
    On,
    /// Disabled.
    Off,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a cell and run it until it stops; the exit status says why
    /// (docs/cli.md). Without a cell file, flags describe the cell.
    Run(Box<run::RunArgs>),
    /// List running cells (those with a live control socket).
    Cells,
    /// Enable a reserved or disabled device of the cell file: the guest
    /// creates it (docs/partitioning.md, "Device states").
    Enable(Deferred<EnableArgs>),
    /// Disable a device of the cell file: the guest removes it, then cellvm
    /// drops its model and backing resource (it becomes reserved).
    Disable(Deferred<DisableArgs>),
    /// Hand a device from one running cell to another, with both guests'
    /// consent: FROM's guest lets it go, TO's guest takes it.
    Move(Deferred<MoveArgs>),
    /// Drop a handover claim a failed move left (see `cellvm cells`).
    Unclaim(Deferred<UnclaimArgs>),
    /// Stop a running cell's vCPUs (its memory and devices stay).
    Pause(Deferred<PauseArgs>),
    /// Start the vCPUs of a paused cell (or one run with --paused).
    Resume(Deferred<ResumeArgs>),
    /// Ask a running cell's guest to power off (through its agent) and
    /// wait until it has; its `cellvm run` then exits with status 0.
    Shutdown(Deferred<ShutdownArgs>),
    /// Stop a running cell now (its `cellvm run` exits with status 4).
    Destroy(Deferred<DestroyArgs>),
    /// Exit counts per vCPU and access counts per device.
    Stats(Deferred<StatsArgs>),
    /// Show a running cell's state.
    Status(Deferred<StatusArgs>),
    /// List a running cell's devices.
    Devices(Deferred<DevicesArgs>),
    /// Attach a device to a running cell from a description file (TOML or JSON).
    Attach(Deferred<AttachArgs>),
    /// Detach a runtime-attached device from a running cell.
    Detach(Deferred<DetachArgs>),
    /// Plug an add-on board (its description file: a .dtso overlay and the
    /// devices cellvm serves) into a connector of a running cell: all of
    /// it or nothing (docs/addons.md).
    Plug(Deferred<PlugArgs>),
    /// Unplug the add-on board from a connector of a running cell.
    Unplug(Deferred<UnplugArgs>),
    /// Attach a connector to a running cell ([[connector]] description
    /// file): boards can then be plugged into it.
    Connect(Deferred<ConnectArgs>),
    /// Detach a connector that `connect` attached; refused while a board is
    /// plugged into it unless --force (which unplugs the board first).
    Disconnect(Deferred<DisconnectArgs>),
    /// Add one function to a PCI host bridge of a running cell (a file with
    /// one [[pci_bridge.device]] table); the guest rescans the bus.
    AddFunction(Deferred<AddFunctionArgs>),
    /// Remove one function from a PCI host bridge of a running cell, once
    /// the guest let it go.
    RemoveFunction(Deferred<RemoveFunctionArgs>),
    /// Validate a cell configuration and print its address map; given
    /// several, validate each and then whether they can share this host
    /// (pinned CPUs, images, names, ivshmem peers, memory).
    Check(Deferred<CheckArgs>),
    /// Write the cell's device tree blob.
    Dtb(Deferred<DtbArgs>),
    /// Write the overlay that attaching DEVICE to the freshly booted CELL
    /// would send to the guest (planned offline, no KVM).
    Overlay(Deferred<OverlayArgs>),
}

/// The arguments of `cellvm enable`.
#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Device id.
    pub id: String,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm disable`.
#[derive(Debug, Args)]
pub struct DisableArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Device id.
    pub id: String,
    /// Tear the device down even if the guest refuses or does not answer.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Device id (okay in FROM, reserved in TO, same image).
    pub id: String,
    /// The cell that has the device.
    #[arg(long, value_name = "CELL")]
    pub from: String,
    /// The cell that takes it.
    #[arg(long, value_name = "CELL")]
    pub to: String,
    /// How long to wait for each guest, in seconds (1 to 300).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

/// The arguments of `cellvm unclaim`.
#[derive(Debug, Args)]
pub struct UnclaimArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Device id.
    pub id: String,
}

/// The arguments of `cellvm pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
}

/// The arguments of `cellvm resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
}

/// The arguments of `cellvm shutdown`.
#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// How long to wait for the guest's answer and poweroff, in
    /// seconds (1 to 300).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
    /// Destroy the cell if the guest refuses, has no agent or does not
    /// power off in time.
    #[arg(long)]
    pub force: bool,
}

/// The arguments of `cellvm destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
}

/// The arguments of `cellvm stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `cellvm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `cellvm devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `cellvm attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Device description (docs/overlays.md).
    pub device: PathBuf,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Device id.
    pub id: String,
    /// Tear the device down even if the guest refuses or does not answer
    /// (unsafe for the guest: its drivers may still use the device).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm plug`.
#[derive(Debug, Args)]
pub struct PlugArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Connector id.
    pub connector: String,
    /// The add-on description (TOML).
    pub addon: PathBuf,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm unplug`.
#[derive(Debug, Args)]
pub struct UnplugArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Connector id.
    pub connector: String,
    /// Surprise removal: cut the board's devices off first (requests
    /// fail, registers read all-ones), then tell the guest; the board
    /// goes whatever it answers.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// The connector description (TOML, one [[connector]] table).
    pub connector: PathBuf,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm disconnect`.
#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// Connector id.
    pub id: String,
    /// Pull its board first (a surprise removal), and tear down what the
    /// guest refuses.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm add-function`.
#[derive(Debug, Args)]
pub struct AddFunctionArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// The bridge's id.
    pub bridge: String,
    /// The function description (TOML or JSON).
    pub function: PathBuf,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm remove-function`.
#[derive(Debug, Args)]
pub struct RemoveFunctionArgs {
    /// Cell name, or a control socket path.
    pub cell: String,
    /// The bridge's id.
    pub bridge: String,
    /// The function: DD.F, DD or BB:DD.F (hex, as lspci prints it).
    pub function: String,
    /// How long to wait for the guest.
    #[command(flatten)]
    pub wait: GuestTimeout,
}

/// The arguments of `cellvm check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The cell configurations (TOML).
    #[arg(required = true, value_name = "CELL")]
    pub cells: Vec<PathBuf>,
}

/// The arguments of `cellvm dtb`.
#[derive(Debug, Args)]
pub struct DtbArgs {
    /// The cell configuration (TOML).
    pub cell: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Write the tree after attaching these devices (description files,
    /// in order) to the freshly booted cell, planned offline.
    #[arg(long = "with", value_name = "DEVICE")]
    pub with: Vec<PathBuf>,
    /// Then plug these add-ons (CONNECTOR=ADDON.toml, in order), planned
    /// offline: checks an add-on's overlay source against the cell.
    #[arg(long = "plug", value_name = "CONNECTOR=ADDON", value_parser = super::addon::parse_plug_arg)]
    pub plug: Vec<(String, PathBuf)>,
}

/// The arguments of `cellvm overlay`.
#[derive(Debug, Args)]
pub struct OverlayArgs {
    /// The cell configuration (TOML).
    pub cell: PathBuf,
    /// The device description (TOML or JSON).
    pub device: PathBuf,
    /// Output file (a .dtbo).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `--timeout SECONDS`: how long a request to a running cell waits for its
/// guest (the commands whose guest step has the common default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct GuestTimeout {
    /// How long to wait for the guest, in seconds (1 to 300).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}
