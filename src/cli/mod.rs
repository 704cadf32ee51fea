//! The `cellvm` command line.

mod addon;
mod args;
mod deferred;
mod function;
mod move_device;
mod run;

pub use args::*;
pub use deferred::Deferred;

use crate::api::protocol::Request;
use crate::config::{self, CellConfig, LoadOptions};
use crate::layout::CellLayout;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The socket for `cell`: a path if it contains '/', else the named cell's.
fn socket_for(cell: &str) -> PathBuf {
    if cell.contains('/') {
        PathBuf::from(cell)
    } else {
        crate::api::socket_path(cell)
    }
}

/// One API call; an error response becomes `kind: message`.
/// `--timeout` seconds as the request's `timeout_ms`, and how long to wait
/// for the answer (5 s more); huge values saturate instead of overflowing.
fn guest_wait(timeout_s: u64) -> (u64, Duration) {
    (
        timeout_s.saturating_mul(1000),
        Duration::from_secs(timeout_s.saturating_add(5)),
    )
}

fn api_call(cell: &str, req: &Request, timeout: Duration) -> Result<serde_json::Value, String> {
    let r = crate::api::client::call(&socket_for(cell), req, timeout)?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(serde_json::Value::Null),
        (false, _, Some(e)) => Err(format!(
            "cell {cell}: {}: {}",
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            e.message
        )),
        (false, _, None) => Err(format!("cell {cell}: request failed")),
    }
}

fn print_value(v: &serde_json::Value, raw: bool) {
    if raw {
        println!("{v}");
        return;
    }
    match v {
        serde_json::Value::Array(items) => {
            for item in items {
                println!("{}", one_line(item));
            }
        }
        other => println!("{}", one_line(other)),
    }
}

fn one_line(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("  "),
        other => other.to_string(),
    }
}

/// A lifecycle request; prints the cell's state after it.
fn lifecycle(cell: &str, request: &Request) -> Result<u8, String> {
    let r = api_call(cell, request, Duration::from_secs(5))?;
    println!("{}", one_line(&r));
    Ok(0)
}

/// `stats` as two tables: vCPUs, then devices.
fn print_stats(v: &serde_json::Value) {
    let n = |x: &serde_json::Value, k: &str| x[k].as_u64().unwrap_or(0);
    println!(
        "{:<6} {:>12} {:>12} {:>10} {:>12} {:>10}",
        "vcpu", "mmio", "pio", "hlt", "interrupted", "unhandled"
    );
    for c in v["vcpus"].as_array().into_iter().flatten() {
        println!(
            "{:<6} {:>12} {:>12} {:>10} {:>12} {:>10}",
            n(c, "vcpu"),
            n(c, "mmio"),
            n(c, "pio"),
            n(c, "hlt"),
            n(c, "interrupted"),
            n(c, "unhandled")
        );
    }
    println!("{:<32} {:<5} {:>12}", "device", "bus", "accesses");
    for d in v["devices"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:<5} {:>12}",
            d["device"].as_str().unwrap_or("?"),
            d["bus"].as_str().unwrap_or("?"),
            n(d, "accesses")
        );
    }
}

fn list_cells() -> Result<u8, String> {
    let dir = crate::api::runtime_dir();
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".sock"))
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    for name in names {
        match api_call(&name, &Request::Status {}, Duration::from_secs(2)) {
            Ok(v) => println!("{}", one_line(&v)),
            Err(_) => log::debug!("{name}: stale control socket"),
        }
    }
    let holders = crate::partition::claims::running_cells(&dir.join("claims"));
    if !holders.is_empty() {
        println!("claims:");
    }
    for h in holders {
        let what = if h.claims.is_empty() {
            "its name only".to_string()
        } else {
            h.claims.join(", ")
        };
        println!("  {h}: {what}");
    }
    Ok(0)
}

/// Exit status for errors of cellvm itself (bad config, KVM failure, ...).
pub const EXIT_ERROR: u8 = 1;

/// The cell as booted (its base tree and layout) with `devices` attached
/// in order, planned exactly as a running cell plans an attach.
fn plan_offline(
    cell: &Path,
    devices: &[PathBuf],
) -> Result<
    (
        crate::fdt::Node,
        Vec<crate::attach::AttachedDevice>,
        crate::layout::CellLayout,
    ),
    String,
> {
    let (cfg, mut layout) = load(cell, false)?;
    let base = crate::fdt::build_base_tree(&cfg, &layout).map_err(|e| e.to_string())?;
    let mut attached = Vec::new();
    let opts = LoadOptions { check_files: false };
    for path in devices {
        let d = config::load_device(path, &opts).map_err(|e| e.to_string())?;
        let plan = crate::attach::plan(&d.device, &layout, &base, &attached)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        plan.commit(&mut layout, &mut attached)
            .map_err(|e| e.to_string())?;
    }
    Ok((base, attached, layout))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
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

/// Reads, validates and lays out a cell file; errors name file, line,
/// column and key.
fn load(path: &std::path::Path, check_files: bool) -> Result<(CellConfig, CellLayout), String> {
    let cfg = config::load(path, &LoadOptions { check_files }).map_err(|e| e.to_string())?;
    let layout = crate::layout::place_cell(&cfg).map_err(|e| e.to_string())?;
    Ok((cfg, layout))
}

/// One line saying `cfg`, read from `path`, is valid.
fn valid_line(path: &std::path::Path, cfg: &CellConfig) -> String {
    format!(
        "{}: cell {} is valid ({} vCPU(s), {} MiB)",
        path.display(),
        cfg.name,
        cfg.cpus.count,
        cfg.memory.iter().map(|m| m.size).sum::<u64>() >> 20
    )
}

/// `cellvm check CELL`: validates one cell and prints its address map.
fn check_one(cell: &std::path::Path) -> Result<u8, String> {
    let (cfg, layout) = load(cell, true)?;
    println!("{}", valid_line(cell, &cfg));
    println!("address map:");
    for r in layout.map.entries() {
        println!(
            "  {:#012x}..{:#012x}  {}",
            r.window.base,
            r.window.end(),
            r.owner
        );
    }
    println!("I/O ports:");
    for r in layout.ports.entries() {
        println!(
            "  {:#06x}..{:#06x}  {}",
            r.window.base,
            r.window.end(),
            r.owner
        );
    }
    Ok(0)
}

/// `cellvm check A B ...`: validates each cell (every invalid file is
/// reported), then the set against each other and this host.
fn check_set(paths: &[PathBuf]) -> Result<u8, String> {
    let mut cells = Vec::new();
    let mut invalid = 0;
    for path in paths {
        match load(path, true) {
            Ok((cfg, _)) => {
                println!("{}", valid_line(path, &cfg));
                cells.push(cfg);
            }
            Err(e) => {
                eprintln!("cellvm: error: {e}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        return Err(format!(
            "{invalid} of the {} cells are invalid",
            paths.len()
        ));
    }
    let host = crate::partition::Host::this()
        .map_err(|e| format!("cannot read this host's memory size: {e}"))?;
    let conflicts = crate::partition::check_set(&cells, host);
    for c in &conflicts {
        eprintln!("cellvm: error: {c}");
    }
    if conflicts.is_empty() {
        println!("the {} cells can share this host", cells.len());
        Ok(0)
    } else {
        Err(format!(
            "the {} cells cannot share this host: {} conflict(s)",
            cells.len(),
            conflicts.len()
        ))
    }
}

fn run_command(cmd: Command, start: Instant) -> Result<u8, String> {
    match cmd {
        Command::Run(args) => run::run(*args, start),
        Command::Cells => list_cells(),
        Command::Enable(Deferred(EnableArgs {
            cell,
            id,
            wait: GuestTimeout { timeout },
        })) => {
            let (guest_ms, answer_within) = guest_wait(timeout);
            let request = Request::Enable {
                id,
                timeout_ms: Some(guest_ms),
            };
            println!("{}", one_line(&api_call(&cell, &request, answer_within)?));
            Ok(0)
        }
        Command::Disable(Deferred(DisableArgs {
            cell,
            id,
            force,
            wait: GuestTimeout { timeout },
        })) => {
            let (guest_ms, answer_within) = guest_wait(timeout);
            let request = Request::Disable {
                id,
                force,
                timeout_ms: Some(guest_ms),
            };
            println!("{}", one_line(&api_call(&cell, &request, answer_within)?));
            Ok(0)
        }
        Command::Move(Deferred(MoveArgs {
            id,
            from,
            to,
            timeout,
        })) => move_device::move_device(&id, &from, &to, timeout),
        Command::Unclaim(Deferred(UnclaimArgs { cell, id })) => {
            let r = api_call(&cell, &Request::Unclaim { id }, Duration::from_secs(15))?;
            println!("{}", one_line(&r));
            Ok(0)
        }
        Command::Pause(Deferred(PauseArgs { cell })) => lifecycle(&cell, &Request::Pause {}),
        Command::Resume(Deferred(ResumeArgs { cell })) => lifecycle(&cell, &Request::Resume {}),
        Command::Destroy(Deferred(DestroyArgs { cell })) => lifecycle(&cell, &Request::Destroy {}),
        Command::Shutdown(Deferred(ShutdownArgs {
            cell,
            timeout,
            force,
        })) => {
            let (guest_ms, answer_within) = guest_wait(timeout);
            let request = Request::Shutdown {
                force,
                timeout_ms: Some(guest_ms),
            };
            let r = api_call(&cell, &request, answer_within)?;
            println!("{}", one_line(&r));
            Ok(0)
        }
        Command::Stats(Deferred(StatsArgs { cell, json })) => {
            let r = api_call(&cell, &Request::Stats {}, Duration::from_secs(5))?;
            if json {
                println!("{r}");
            } else {
                print_stats(&r);
            }
            Ok(0)
        }
        Command::Status(Deferred(StatusArgs { cell, json })) => {
            let r = api_call(&cell, &Request::Status {}, Duration::from_secs(5))?;
            print_value(&r, json);
            Ok(0)
        }
        Command::Devices(Deferred(DevicesArgs { cell, json })) => {
            let r = api_call(&cell, &Request::Devices {}, Duration::from_secs(5))?;
            print_value(&r, json);
            Ok(0)
        }
        Command::Attach(Deferred(AttachArgs {
            cell,
            device,
            wait: GuestTimeout { timeout },
        })) => {
            // Parsed and validated once, here, so errors carry this file's
            // lines; the cell validates the same table again with the same
            // code (it cannot trust a client) and places it.
            let opts = crate::config::LoadOptions { check_files: true };
            let description =
                crate::config::load_device(&device, &opts).map_err(|e| e.to_string())?;
            let value = description
                .to_value()
                .map_err(|e| format!("{}: {e}", device.display()))?;
            let dir = match device.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let base_dir =
                std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (guest_ms, answer_within) = guest_wait(timeout);
            let r = api_call(
                &cell,
                &Request::Attach {
                    device: value,
                    base_dir: Some(base_dir),
                    timeout_ms: Some(guest_ms),
                },
                answer_within,
            )?;
            print_value(&r, false);
            Ok(0)
        }
        Command::Detach(Deferred(DetachArgs {
            cell,
            id,
            force,
            wait: GuestTimeout { timeout },
        })) => {
            let (guest_ms, answer_within) = guest_wait(timeout);
            let r = api_call(
                &cell,
                &Request::Detach {
                    id,
                    force,
                    timeout_ms: Some(guest_ms),
                },
                answer_within,
            )?;
            print_value(&r, false);
            Ok(0)
        }
        Command::Plug(Deferred(PlugArgs {
            cell,
            connector,
            addon,
            wait: GuestTimeout { timeout },
        })) => addon::plug(&cell, &connector, &addon, timeout),
        Command::Unplug(Deferred(UnplugArgs {
            cell,
            connector,
            force,
            wait: GuestTimeout { timeout },
        })) => addon::unplug(&cell, &connector, force, timeout),
        Command::Connect(Deferred(ConnectArgs {
            cell,
            connector,
            wait: GuestTimeout { timeout },
        })) => addon::connect(&cell, &connector, timeout),
        Command::Disconnect(Deferred(DisconnectArgs {
            cell,
            id,
            force,
            wait: GuestTimeout { timeout },
        })) => addon::disconnect(&cell, &id, force, timeout),
        Command::AddFunction(Deferred(AddFunctionArgs {
            cell,
            bridge,
            function,
            wait: GuestTimeout { timeout },
        })) => function::add(&cell, &bridge, &function, timeout),
        Command::RemoveFunction(Deferred(RemoveFunctionArgs {
            cell,
            bridge,
            function,
            wait: GuestTimeout { timeout },
        })) => function::remove(&cell, &bridge, &function, timeout),
        Command::Check(Deferred(CheckArgs { cells })) => match cells.as_slice() {
            [cell] => check_one(cell),
            _ => check_set(&cells),
        },
        Command::Dtb(Deferred(DtbArgs {
            cell,
            output,
            with,
            plug,
        })) => {
            let (base, attached, mut layout) = plan_offline(&cell, &with)?;
            let plugged = addon::plug_offline(&base, &mut layout, &attached, &plug)?;
            let dtb = if attached.is_empty() && plugged.is_empty() {
                crate::fdt::emit::to_dtb(&base).map_err(|e| e.to_string())?
            } else {
                crate::attach::live_tree(&base, &attached, &[], &plugged)
                    .map_err(|e| e.to_string())?
                    .to_dtb()
            };
            write_file(&output, &dtb)?;
            Ok(0)
        }
        Command::Overlay(Deferred(OverlayArgs {
            cell,
            device,
            output,
        })) => {
            let (_, attached, _) = plan_offline(&cell, std::slice::from_ref(&device))?;
            let overlay = attached
                .first()
                .map(|d| d.overlay.clone())
                .ok_or_else(|| "no overlay was planned".to_string())?;
            write_file(&output, &overlay)?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_wait_adds_five_seconds_for_the_answer() {
        assert_eq!(guest_wait(10), (10_000, Duration::from_secs(15)));
    }

    #[test]
    fn huge_timeouts_saturate_instead_of_overflowing() {
        assert_eq!(
            guest_wait(u64::MAX),
            (u64::MAX, Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn seccomp_is_on_unless_switched_off() {
        use clap::Parser;
        let seccomp = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(args)) => Ok(args.seccomp),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(seccomp(&["cellvm", "run", "c.toml"]), Ok(Switch::On));
        assert_eq!(
            seccomp(&["cellvm", "run", "c.toml", "--seccomp=off"]),
            Ok(Switch::Off)
        );
        assert_eq!(
            seccomp(&["cellvm", "run", "c.toml", "--seccomp", "on"]),
            Ok(Switch::On)
        );
        assert_eq!(
            seccomp(&["cellvm", "run", "c.toml", "--seccomp=maybe"]),
            Err(clap::error::ErrorKind::InvalidValue)
        );
    }

    #[test]
    fn timeouts_above_five_minutes_are_refused_by_the_parser() {
        use clap::Parser;
        for cmd in [
            vec!["cellvm", "attach", "c", "d.toml", "--timeout", "301"],
            vec!["cellvm", "detach", "c", "x", "--timeout", "0"],
        ] {
            assert!(Cli::try_parse_from(&cmd).is_err(), "{cmd:?}");
        }
        assert!(Cli::try_parse_from(["cellvm", "detach", "c", "x", "--timeout", "300"]).is_ok());
    }
}
