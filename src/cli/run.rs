//! `cellvm run`: boots a cell from its file, from command-line flags alone
//! (a config-less run: `--kernel` and defaults), or from a file with flags
//! overriding it; optionally as a CI boot test (docs/ci.md): a timeout,
//! console patterns that pass or fail it, a console log and a JUnit report.
//!
//! Config: flags become a cell file's keys, and the result goes through the
//! one validation every cell file does. With a file, the file is validated
//! first as written (so its errors point into it), then again with the
//! flags applied. Paths given as flags are relative to the working
//! directory; paths in the file to the file's directory.

use super::Switch;
use crate::api::endpoint::RemoteCell;
use crate::config::{self, CellConfig, LoadOptions};
use crate::runner::hotplug::{self, Progress, Torture};
use crate::runner::junit::{self, RunResult};
use crate::runner::watch::{ConsoleWatch, Patterns};
use crate::stop::{StopHandle, StopReason};
use crate::vmm::{control, Cell, CellIo};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The flags of `cellvm run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// The cell configuration (TOML); without it, flags describe the cell
    /// (`--kernel` at least).
    #[arg(required_unless_present = "kernel")]
    pub cell: Option<PathBuf>,
    /// The cell's name (default: the file's, or `run-PID` without a file).
    #[arg(long)]
    pub name: Option<String>,
    /// Kernel: bzImage, vmlinux or bare-metal ELF.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initrd.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (replaces the configured one).
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,
    /// Append this to the kernel command line.
    #[arg(long, value_name = "ARGS")]
    pub cmdline_append: Option<String>,
    /// vCPUs (default 1 without a file).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=255))]
    pub cpus: Option<u16>,
    /// Guest RAM, e.g. 256M or 1G (default 256M without a file).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// A virtio-blk disk (repeatable); `,ro` makes it read-only.
    #[arg(long, value_name = "IMG[,ro]")]
    pub disk: Vec<String>,
    /// A virtio-rng device.
    #[arg(long)]
    pub rng: bool,
    /// Write no ACPI tables (`kernel.acpi = false`): for a kernel built with
    /// both ACPI and a device tree that should use the tree alone.
    #[arg(long)]
    pub no_acpi: bool,
    /// Stop the cell after this many seconds: exit status 124.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Pass (exit status 0) when a console line matches this regular
    /// expression.
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Fail (exit status 6) when a console line matches (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub fail_on: Vec<String>,
    /// Leave out the default --fail-on set (Kernel panic, BUG:, Oops,
    /// WARNING:, OF: ERROR).
    #[arg(long)]
    pub no_default_fail_on: bool,
    /// Append the whole console to FILE (also when it goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Write a JUnit XML report to FILE (a new file).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Hotplug torture: attach and detach this device (a description file)
    /// over and over once the guest agent is ready.
    #[arg(long, value_name = "DEVICE.toml", conflicts_with = "no_api")]
    pub hotplug: Option<PathBuf>,
    /// Attach/detach cycles of --hotplug.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "hotplug",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub hotplug_cycles: u32,
    /// Pause after each attach and each detach of --hotplug, in ms.
    #[arg(long, value_name = "MS", default_value_t = 100, requires = "hotplug",
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub hotplug_interval: u64,
    /// Serve the control API on this socket (default: RUNTIME_DIR/NAME.sock).
    #[arg(long, value_name = "PATH", conflicts_with = "no_api")]
    pub api_socket: Option<PathBuf>,
    /// Do not serve the control API.
    #[arg(long)]
    pub no_api: bool,
    /// Create the cell (memory, devices, kernel loaded) but run no vCPU
    /// until `cellvm resume CELL`.
    #[arg(long, conflicts_with = "no_api")]
    pub paused: bool,
    /// Seccomp filters on every thread (docs/security.md); `off` only to
    /// debug a suspected filter problem.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::On)]
    pub seccomp: Switch,
}

impl RunArgs {
    /// Whether this run is a test: its console decides (the default
    /// fail-on set applies), or it has a timeout or a report.
    fn is_test(&self) -> bool {
        self.expect.is_some()
            || !self.fail_on.is_empty()
            || self.timeout.is_some()
            || self.junit.is_some()
            || self.hotplug.is_some()
    }

    /// Whether any flag changes the cell's description.
    fn changes_cell(&self) -> bool {
        self.name.is_some()
            || self.kernel.is_some()
            || self.initrd.is_some()
            || self.cmdline.is_some()
            || self.cmdline_append.is_some()
            || self.cpus.is_some()
            || self.memory.is_some()
            || !self.disk.is_empty()
            || self.rng
            || self.no_acpi
    }
}

/// `p` made absolute against the working directory.
fn absolute(p: &Path) -> Result<String, String> {
    let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{}: not UTF-8", abs.display()))
}

/// The table `key` of `t`, created if missing.
fn table<'a>(t: &'a mut toml::Table, key: &str) -> Result<&'a mut toml::Table, String> {
    t.entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("`{key}` in the cell file is not a table"))
}

/// The array of tables `key` of `t`, created if missing.
fn array<'a>(t: &'a mut toml::Table, key: &str) -> Result<&'a mut Vec<toml::Value>, String> {
    t.entry(key)
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| format!("`{key}` in the cell file is not an array of tables"))
}

/// Applies the flags that describe the cell to cell-file table `t`.
fn apply_flags(t: &mut toml::Table, a: &RunArgs, has_file: bool) -> Result<(), String> {
    use toml::Value;
    if let Some(name) = &a.name {
        t.insert("name".into(), Value::String(name.clone()));
    } else if !has_file {
        let name = format!("run-{}", std::process::id());
        t.insert("name".into(), Value::String(name));
    }
    let kernel = table(t, "kernel")?;
    if let Some(k) = &a.kernel {
        kernel.insert("path".into(), Value::String(absolute(k)?));
        // The file's format was for its kernel: detect the new one's.
        kernel.remove("format");
    }
    if let Some(i) = &a.initrd {
        kernel.insert("initrd".into(), Value::String(absolute(i)?));
    }
    if let Some(c) = &a.cmdline {
        kernel.insert("cmdline".into(), Value::String(c.clone()));
    }
    if let Some(extra) = &a.cmdline_append {
        let base = match kernel.get("cmdline") {
            Some(Value::String(c)) => c.clone(),
            _ => config::DEFAULT_CMDLINE.to_string(),
        };
        kernel.insert("cmdline".into(), Value::String(format!("{base} {extra}")));
    }
    if a.no_acpi {
        kernel.insert("acpi".into(), Value::Boolean(false));
    }
    if let Some(n) = a.cpus.or(if has_file { None } else { Some(1) }) {
        table(t, "cpus")?.insert("count".into(), Value::Integer(i64::from(n)));
    }
    let memory = a.memory.clone().or((!has_file).then(|| "256M".to_string()));
    if let Some(size) = memory {
        let regions = array(t, "memory")?;
        match regions.len() {
            0 => {
                let mut m = toml::Table::new();
                m.insert("base".into(), Value::Integer(0));
                m.insert("size".into(), Value::String(size));
                regions.push(Value::Table(m));
            }
            1 => {
                if let Some(m) = regions[0].as_table_mut() {
                    m.insert("size".into(), Value::String(size));
                }
            }
            n => {
                return Err(format!(
                    "--memory: the cell file has {n} [[memory]] regions; say their sizes there"
                ))
            }
        }
    }
    if !has_file {
        let console = table(t, "console")?;
        console.insert("output".into(), Value::String("stdout".into()));
        let input = if std::io::stdin().is_terminal() {
            "stdin"
        } else {
            "none"
        };
        console.insert("input".into(), Value::String(input.into()));
    }
    for (i, disk) in a.disk.iter().enumerate() {
        let (path, ro) = match disk.strip_suffix(",ro") {
            Some(p) => (p, true),
            None => (disk.as_str(), false),
        };
        let mut d = toml::Table::new();
        d.insert("id".into(), Value::String(format!("disk{i}")));
        d.insert("kind".into(), Value::String("block".into()));
        d.insert("path".into(), Value::String(absolute(Path::new(path))?));
        d.insert("read_only".into(), Value::Boolean(ro));
        array(t, "virtio_mmio")?.push(Value::Table(d));
    }
    if a.rng {
        let mut d = toml::Table::new();
        d.insert("id".into(), Value::String("rng".into()));
        d.insert("kind".into(), Value::String("rng".into()));
        array(t, "virtio_mmio")?.push(Value::Table(d));
    }
    Ok(())
}

/// The cell to run: the file, the flags, or both.
pub fn cell_config(a: &RunArgs) -> Result<CellConfig, String> {
    let checked = LoadOptions { check_files: true };
    let Some(file) = &a.cell else {
        if a.kernel.is_none() {
            return Err("run: give a cell file or --kernel (cellvm run --help)".into());
        }
        let mut t = toml::Table::new();
        apply_flags(&mut t, a, false)?;
        let text = toml::to_string(&t).map_err(|e| format!("run: {e}"))?;
        let cwd = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
        return config::parse(&text, None, &cwd, &checked)
            .map_err(|e| format!("the command-line flags: {e}"));
    };
    // The file as written: its own errors point into it.
    let cfg = config::load(
        file,
        &LoadOptions {
            check_files: a.kernel.is_none(),
        },
    )
    .map_err(|e| e.to_string())?;
    if !a.changes_cell() {
        return Ok(cfg);
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut t: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    apply_flags(&mut t, a, true)?;
    let merged = toml::to_string(&t).map_err(|e| format!("run: {e}"))?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    config::parse(&merged, Some(file), dir, &checked)
        .map_err(|e| format!("{} with the command-line flags: {e}", file.display()))
}

/// `--timeout` as a duration.
fn timeout(secs: Option<f64>) -> Result<Option<Duration>, String> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 31_536_000.0 => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(format!(
            "--timeout {s}: give seconds above 0 (at most a year)"
        )),
    }
}

/// Opens `--console-log` for appending (created if missing).
fn open_log(path: &Path) -> Result<Box<dyn Write + Send>, String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--console-log {}: {e}", path.display()))?;
    Ok(Box::new(f))
}

/// The `--junit` file this run created: removed again unless the report
/// was written (a run that fails before its cell stops leaves nothing).
struct NewReport {
    path: PathBuf,
    file: std::fs::File,
    written: bool,
}

impl NewReport {
    fn write(&mut self, xml: &str) -> std::io::Result<()> {
        self.file.write_all(xml.as_bytes())?;
        self.written = true;
        Ok(())
    }
}

impl Drop for NewReport {
    fn drop(&mut self) {
        if !self.written {
            // Ours: created with create_new. (Under the control thread's
            // seccomp filter the unlink is refused and the empty file stays.)
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `--junit` now (a new file: an existing one is never replaced),
/// so a bad path fails before the boot.
fn create_report(path: &Path) -> Result<NewReport, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(|file| NewReport {
            path: path.to_path_buf(),
            file,
            written: false,
        })
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "--junit {}: the file exists; cellvm writes a new report and replaces no file",
                    path.display()
                )
            } else {
                format!("--junit {}: {e}", path.display())
            }
        })
}

/// How long a `--hotplug` run goes on after its last cycle, for the guest
/// to report trouble with the last removal.
const HOTPLUG_SETTLE: Duration = Duration::from_secs(2);

/// `--hotplug`'s description, read and validated here (errors point into
/// the file); the cell validates it again on each attach.
fn torture(a: &RunArgs) -> Result<Option<Torture>, String> {
    let Some(file) = &a.hotplug else {
        return Ok(None);
    };
    let opts = LoadOptions { check_files: true };
    let description = config::load_device(file, &opts).map_err(|e| e.to_string())?;
    let device = description
        .to_value()
        .map_err(|e| format!("--hotplug {}: {e}", file.display()))?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base_dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Some(Torture {
        device,
        id: description.device.id().to_string(),
        base_dir,
        cycles: a.hotplug_cycles,
        interval: Duration::from_millis(a.hotplug_interval),
        guest_timeout: Duration::from_secs(10),
        settle: HOTPLUG_SETTLE,
        keep_running: a.expect.is_some(),
    }))
}

/// Starts the hotplug torture on a thread of its own (under the API
/// threads' seccomp filter when filters are on): it talks to the cell
/// through `socket`, like any client.
fn start_torture(
    t: Torture,
    cell: &str,
    socket: PathBuf,
    stop: StopHandle,
    seccomp: bool,
) -> Result<Progress, String> {
    let filters = if seccomp {
        let f = crate::seccomp::Filters::compile(crate::vmm::vcpu::kick_signal())
            .map_err(|e| format!("--hotplug: {e}"))?;
        Some(std::sync::Arc::new(f))
    } else {
        None
    };
    let progress = Progress::default();
    let shared = progress.clone();
    let endpoint = RemoteCell::at(cell, socket);
    crate::seccomp::spawn(
        std::thread::Builder::new().name("hotplug-torture".into()),
        crate::seccomp::ThreadKind::Api,
        filters.as_ref(),
        move || hotplug::run(&t, &endpoint, &stop, &shared),
    )
    .map_err(|e| format!("--hotplug: {e}"))?;
    Ok(progress)
}

/// With `--expect`, a stop that would pass but did not see the pattern
/// fails.
fn with_expectation(reason: StopReason, expect: Option<&str>) -> StopReason {
    match (expect, &reason) {
        (Some(_), StopReason::ConsoleExpected { .. }) | (None, _) => reason,
        (Some(pattern), r) if r.passed() => StopReason::ExpectNotSeen {
            pattern: pattern.to_string(),
            stopped: Box::new(reason),
        },
        _ => reason,
    }
}

/// ` (during hotplug cycle K of N)` for a console stop while the torture
/// ran; empty otherwise.
fn during_cycle(reason: &StopReason, progress: Option<&Progress>, cycles: u32) -> String {
    let cycle = progress.map_or(0, |p| p.load(std::sync::atomic::Ordering::Relaxed));
    match reason {
        StopReason::ConsoleFailure { .. } | StopReason::GuestPanic | StopReason::GuestCrash(_)
            if cycle > 0 =>
        {
            format!(" (during hotplug cycle {cycle} of {cycles})")
        }
        _ => String::new(),
    }
}

/// `cellvm run`.
pub fn run(a: RunArgs, start: Instant) -> Result<u8, String> {
    control::block_termination_signals()
        .map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
    let cfg = cell_config(&a)?;
    let deadline = timeout(a.timeout)?;
    let patterns = if a.is_test() {
        Patterns::new(a.expect.as_deref(), &a.fail_on, a.no_default_fail_on)
            .map_err(|e| e.to_string())?
    } else {
        Patterns::default()
    };
    let torture = torture(&a)?;
    let mut report = a.junit.as_deref().map(create_report).transpose()?;
    let mut io = CellIo::from_config(&cfg).map_err(|e| e.to_string())?;
    let stop = StopHandle::new().map_err(|e| format!("create stop event: {e}"))?;
    let log = a.console_log.as_deref().map(open_log).transpose()?;
    let sink = std::mem::replace(&mut io.console_out, Box::new(std::io::sink()));
    let watch = ConsoleWatch::new(sink, log, patterns, stop.clone());
    let transcript = watch.transcript();
    io.console_out = Box::new(watch);
    io.stop = Some(stop.clone());
    io.timeout = deadline;
    io.seccomp = a.seccomp == Switch::On;
    if !io.seccomp {
        log::warn!("seccomp filters are off (--seccomp=off)");
    }
    if a.no_api {
        io.api_socket = None;
    } else if let Some(path) = a.api_socket.clone() {
        io.api_socket = Some(path);
    }
    let name = cfg.name.clone();
    let socket = io.api_socket.clone();
    let seccomp = io.seccomp;
    let mut cell = Cell::new(cfg, io, start).map_err(|e| format!("cell {name}: {e}"))?;
    if a.paused {
        cell.start_paused();
        log::info!("cell {name} created paused: cellvm resume {name} starts it");
    }
    let progress = match (torture, socket) {
        (Some(t), Some(socket)) => Some(start_torture(t, &name, socket, stop, seccomp)?),
        _ => None,
    };
    let outcome = cell.run().map_err(|e| format!("cell {name}: {e}"))?;
    let reason = with_expectation(outcome.reason, a.expect.as_deref());
    let status = reason.exit_code();
    let during = during_cycle(&reason, progress.as_ref(), a.hotplug_cycles);
    let reason = format!("{reason}{during}");
    eprintln!("cellvm: cell {name} stopped: {reason} (exit status {status})");
    if let Some(file) = report.as_mut() {
        let result = RunResult {
            cell: name,
            status,
            reason,
            seconds: start.elapsed().as_secs_f64(),
        };
        let xml = junit::report(&result, &crate::sync::lock(&transcript));
        // The file was opened before the boot: this thread now runs under
        // the control filter, which allows write but not open or fsync.
        if let Err(e) = file.write(&xml) {
            eprintln!("cellvm: --junit: {e}");
            return Ok(super::EXIT_ERROR);
        }
    }
    Ok(status)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
