//! Raw, spanned TOML values → validated [`CellConfig`], with every error
//! pointing at the offending key.

use super::error::{shown, ConfigError, Location};
use super::kernel_image::{identify, read_head};
use super::model::{
    CellConfig, ConsoleConfig, ConsoleInput, ConsoleOutput, CpuConfig, DeviceConfig, IvshmemConfig,
    KernelConfig, KernelFormat, MemoryRegion, PciBridgeConfig, PciDeviceConfig, PciDeviceKind,
    PciHostKind, UartConfig, VirtioBackendConfig, VirtioKind, VirtioMmioConfig, VirtioPciConfig,
    Window, MAX_VCPUS,
};
use super::origins::{Origin, Origins};
use super::raw::{
    textual_path, Node, RawBackendKeys, RawCell, RawConsole, RawCpus, RawDevices, RawKernel,
    RawMemory, RawPciBridge, RawPciDevice, RawSize, RawUart, RawVirtioMmio, RawWindow, Sp, Span,
};
use super::size::{human_size, parse_size, GIB, KIB, MIB};
use crate::platform::{
    CAM_BUS_SIZE, DEVICE_WINDOW_END, DEVICE_WINDOW_START, ECAM_BUS_SIZE, IRQ_LINES, RAM_BASE,
    RAM_LIMIT, UART_PORT_COUNT, VIRTIO_FIXED_WINDOW, VIRTIO_MMIO_SIZE,
};
use std::io;
use std::path::{Path, PathBuf};

/// Guest page size: RAM regions are aligned to it.
const PAGE: u64 = 4 * KIB;
/// Smallest RAM a cell may have (in total, and in the lowest region).
const MIN_RAM: u64 = 16 * MIB;
/// 4 GiB: the end of the 32-bit address space.
const FOUR_GIB: u64 = 4 * GIB;
/// Longest kernel command line (the boot protocol's limit minus the NUL).
const CMDLINE_MAX: usize = 2047;
/// Command line used when none is given.
pub(crate) const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// Where fixed virtio-mmio devices may go: the device window up to the IOAPIC.
/// Smallest PCI MMIO window.
const MIN_PCI_WINDOW: u64 = MIB;
/// Host CPUs a pin may name: what a `cpu_set_t` can hold.
const MAX_HOST_CPUS: usize = libc::CPU_SETSIZE as usize;

/// Everything validation needs to know about the text it validates.
pub(crate) struct Ctx<'a> {
    pub text: &'a str,
    /// The source path as given, or `<config>`.
    pub file: String,
    pub tree: &'a Node,
    /// Where relative paths resolve; `None`: only absolute paths are
    /// accepted (a description sent to the API without a directory).
    pub base_dir: Option<&'a Path>,
    pub check_files: bool,
}

impl Ctx<'_> {
    /// The location of `span`, or of `field` in the document if the value
    /// has no span of its own.
    fn at(&self, span: &Span, field: &str) -> Location {
        let offset = span
            .as_ref()
            .map(|s| s.start)
            .or_else(|| self.tree.position_of(field));
        match offset {
            Some(offset) => Location::from_offset(&self.file, self.text, offset),
            // A value without text (a description received as JSON).
            None if self.text.is_empty() => Location::unknown(&self.file),
            None => Location::from_offset(&self.file, self.text, 0),
        }
    }

    fn origin(&self, span: &Span, field: &str) -> Origin {
        Origin {
            at: self.at(span, field),
            field: field.to_string(),
        }
    }

    pub(super) fn invalid(
        &self,
        span: &Span,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(span, field),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// `field` is missing from the table at `table`.
    pub(super) fn missing(&self, table: &Span, field: &str, hint: &str) -> ConfigError {
        let parent = field.rsplit_once('.').map_or("", |(p, _)| p);
        ConfigError::MissingKey {
            at: self.at(table, parent),
            field: field.to_string(),
            hint: hint.to_string(),
        }
    }

    pub(super) fn file_error(
        &self,
        span: &Span,
        field: &str,
        what: &'static str,
        path: &Path,
        error: io::Error,
    ) -> ConfigError {
        let at = self.at(span, field);
        let field = field.to_string();
        let path = path.to_path_buf();
        if error.kind() == io::ErrorKind::NotFound {
            ConfigError::FileNotFound {
                at,
                field,
                what,
                path,
            }
        } else {
            ConfigError::FileUnreadable {
                at,
                field,
                what,
                path,
                error,
            }
        }
    }

    fn non_negative(&self, v: &Sp<i64>, field: &str) -> Result<u64, ConfigError> {
        u64::try_from(v.value).map_err(|_| {
            self.invalid(
                &v.span,
                field,
                format!("must not be negative, got {}", v.value),
            )
        })
    }

    pub(super) fn size(&self, v: &Sp<RawSize>, field: &str) -> Result<u64, ConfigError> {
        match &v.value {
            RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| {
                self.invalid(&v.span, field, format!("must not be negative, got {n}"))
            }),
            RawSize::Text(s) => parse_size(s)
                .map_err(|e| self.invalid(&v.span, field, format!("invalid size {s:?}: {e}"))),
        }
    }

    /// A non-empty path string, resolved against the base directory.
    pub(super) fn path(&self, v: &Sp<String>, field: &str) -> Result<PathBuf, ConfigError> {
        if v.value.is_empty() {
            return Err(self.invalid(&v.span, field, "must not be empty"));
        }
        let path = Path::new(&v.value);
        match self.base_dir {
            Some(dir) => Ok(dir.join(path)),
            None if path.is_absolute() => Ok(path.to_path_buf()),
            None => Err(self.invalid(
                &v.span,
                field,
                format!(
                    "{:?} is relative, but this description has no directory to resolve it against; give an absolute path",
                    v.value
                ),
            )),
        }
    }

    /// A path cellvm creates or writes (an output file, a socket, a pty
    /// link): resolved like [`Self::path`], and with the host checked, its
    /// directory must exist (else the cell would only fail at `run`).
    fn output_path(&self, v: &Sp<String>, field: &str) -> Result<PathBuf, ConfigError> {
        let path = self.path(v, field)?;
        if self.check_files {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(self.invalid(
                    &v.span,
                    field,
                    format!("directory {} does not exist", shown(dir)),
                ));
            }
        }
        Ok(path)
    }

    pub(super) fn id(&self, v: &Sp<String>, field: &str) -> Result<String, ConfigError> {
        if valid_id(&v.value) {
            Ok(v.value.clone())
        } else {
            Err(self.invalid(
                &v.span,
                field,
                format!(
                    "must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', got {:?}",
                    v.value
                ),
            ))
        }
    }
}

/// CPUs this host has (configured, not only online: an offline CPU can
/// come back).
pub(crate) fn host_cpu_count() -> usize {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: sysconf has no memory-safety preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(configured).unwrap_or(online).max(online)
}

/// `[A-Za-z0-9_-]{1,32}`: device ids, cell names and ivshmem region names.
pub(crate) fn valid_id(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// toml's message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// serde's type names → TOML's.
fn tidy_type_message(message: &str) -> String {
    let mut m = message
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer")
        .replace("expected a borrowed string", "expected a string");
    if let Some(i) = m.find("expected struct ") {
        m.truncate(i);
        m.push_str("expected a table");
    }
    m
}

/// A TOML syntax error (the text could not be parsed at all).
pub(crate) fn syntax_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start);
    let field = textual_path(text, offset);
    ConfigError::Syntax {
        at: Location::from_offset(file, text, offset),
        field: if field.is_empty() {
            "<root>".into()
        } else {
            field
        },
        message: one_line(e.message()),
    }
}

/// An unknown key or a value of the wrong type.
pub(crate) fn schema_error(
    text: &str,
    file: &str,
    tree: &Node,
    e: &toml::de::Error,
) -> ConfigError {
    let span = e.span();
    let at = if text.is_empty() {
        Location::unknown(file)
    } else {
        Location::from_offset(file, text, span.as_ref().map_or(0, |s| s.start))
    };
    let mut field = span
        .as_ref()
        .and_then(|s| tree.path_at(s))
        .unwrap_or_default();
    let message = one_line(e.message());
    if let Some((key, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
    {
        let last = field.rsplit('.').next().unwrap_or("");
        if last != key {
            field = if field.is_empty() {
                key.to_string()
            } else {
                format!("{field}.{key}")
            };
        }
        let allowed = rest.trim_start_matches(", ");
        let allowed = if allowed == "there are no fields" {
            "no keys are allowed here".to_string()
        } else {
            allowed.to_string()
        };
        return ConfigError::UnknownKey { at, field, allowed };
    }
    let mut message = tidy_type_message(&message);
    // toml hands datetimes to serde as tables; say what the user wrote.
    let is_datetime = span
        .and_then(|s| text.get(s))
        .is_some_and(|v| v.trim().parse::<toml::value::Datetime>().is_ok());
    if is_datetime {
        message = message.replace("invalid type: table", "invalid type: datetime");
    }
    ConfigError::WrongType {
        at,
        field: if field.is_empty() {
            "<root>".into()
        } else {
            field
        },
        message,
    }
}

/// Where each entry is: RAM regions for their origins, device ids for the
/// uniqueness check, and the origins collected so far.
#[derive(Debug, Default)]
pub(super) struct Spans {
    /// Per memory region in file order: its `base` span, or its table.
    memory: Vec<Span>,
    /// Every device id: (field of its table, id, span of the id).
    ids: Vec<(String, String, Span)>,
    origins: Origins,
}

impl Spans {
    /// Records a device entry: its id for [`unique_ids`], its table and its
    /// placement keys for [`Origins`].
    pub(super) fn device(
        &mut self,
        ctx: &Ctx<'_>,
        field: &str,
        id: (&str, &Span),
        table: &Span,
        keys: &[(&'static str, Option<&Span>)],
    ) {
        self.ids
            .push((field.to_string(), id.0.to_string(), id.1.clone()));
        let mut origins = vec![("id", ctx.origin(id.1, &format!("{field}.id")))];
        for (key, span) in keys {
            if let Some(span) = span {
                origins.push((*key, ctx.origin(span, &format!("{field}.{key}"))));
            }
        }
        self.origins
            .add_device(id.0, ctx.origin(table, field), origins);
    }
}

/// Validates a parsed cell file. Placement (collisions, full pools) is
/// checked later by `layout::place_cell`, which points its errors at the
/// keys recorded in [`CellConfig::origins`].
pub(crate) fn validate(
    raw: RawCell,
    ctx: &Ctx<'_>,
    source: Option<&Path>,
) -> Result<CellConfig, ConfigError> {
    let mut spans = Spans::default();
    let name = match &raw.name {
        Some(n) => ctx.id(n, "name")?,
        None => return Err(ctx.missing(&None, "name", "")),
    };
    let cpus = match raw.cpus {
        Some(c) => cpus(ctx, &c)?,
        None => return Err(ctx.missing(&None, "cpus", "")),
    };
    let memory = memory(ctx, raw.memory.as_ref(), &mut spans)?;
    let kernel = match raw.kernel {
        Some(k) => kernel(ctx, &k)?,
        None => return Err(ctx.missing(&None, "kernel", "")),
    };
    let console = match raw.console {
        Some(c) => console(ctx, &c)?,
        None => ConsoleConfig {
            output: ConsoleOutput::Stdout,
            input: ConsoleInput::Stdin,
        },
    };
    let mut virtio_mmio = Vec::new();
    for (i, dev) in raw.virtio_mmio.iter().flat_map(|v| &v.value).enumerate() {
        virtio_mmio.push(virtio(ctx, i, dev, &mut spans)?);
    }
    let mut pci_bridges = Vec::new();
    for (i, br) in raw.pci_bridge.iter().flat_map(|v| &v.value).enumerate() {
        pci_bridges.push(bridge(ctx, i, br, &mut spans)?);
    }
    let mut uarts = Vec::new();
    for (i, u) in raw.uart.iter().flat_map(|v| &v.value).enumerate() {
        uarts.push(uart(ctx, i, u, &mut spans)?);
    }
    let mut connectors = Vec::new();
    for (i, c) in raw.connector.iter().flat_map(|v| &v.value).enumerate() {
        connectors.push(super::connector::connector(ctx, i, c, &mut spans)?);
    }
    unique_ids(ctx, &spans)?;
    let mut cell = CellConfig {
        name,
        source: source.map(Path::to_path_buf),
        cpus,
        memory,
        kernel,
        console,
        virtio_mmio,
        pci_bridges,
        uarts,
        connectors,
        origins: spans.origins,
    };
    for field in partition_fields(&cell) {
        let origin = ctx.origin(&None, &field);
        cell.origins.add_field(origin);
    }
    Ok(cell)
}

/// The fields that checks across cells (`crate::partition`) point at.
fn partition_fields(cell: &CellConfig) -> Vec<String> {
    let mut fields = vec!["name".to_string()];
    if let Some(pin) = &cell.cpus.pin {
        fields.extend((0..pin.len()).map(|i| format!("cpus.pin[{i}]")));
    }
    if cell.cpus.shared {
        fields.push("cpus.shared".to_string());
    }
    for (i, dev) in cell.virtio_mmio.iter().enumerate() {
        if dev.backend.path.is_some() {
            fields.push(format!("virtio_mmio[{i}].path"));
        }
    }
    for (i, bridge) in cell.pci_bridges.iter().enumerate() {
        for (j, dev) in bridge.devices.iter().enumerate() {
            let f = format!("pci_bridge[{i}].device[{j}]");
            match &dev.kind {
                PciDeviceKind::Virtio(v) if v.backend.path.is_some() => {
                    fields.push(format!("{f}.path"));
                }
                PciDeviceKind::Ivshmem(_) => {
                    for key in ["region", "peer_id", "max_peers", "rw_size", "output_size"] {
                        fields.push(format!("{f}.{key}"));
                    }
                }
                _ => {}
            }
        }
    }
    fields
}

/// Validates a device description: exactly one device table, checked by
/// the same code as that table in a cell file (same keys, defaults and
/// messages; fields are named `virtio_mmio[0].path` as in a cell file).
pub(crate) fn device(raw: &RawDevices, ctx: &Ctx<'_>) -> Result<DeviceConfig, ConfigError> {
    let mut spans = Spans::default();
    let virtios: Vec<_> = raw.virtio_mmio.iter().flat_map(|v| &v.value).collect();
    let bridges: Vec<_> = raw.pci_bridge.iter().flat_map(|v| &v.value).collect();
    let uarts: Vec<_> = raw.uart.iter().flat_map(|v| &v.value).collect();
    match (virtios.as_slice(), bridges.as_slice(), uarts.as_slice()) {
        ([dev], [], []) => Ok(DeviceConfig::VirtioMmio(virtio(ctx, 0, dev, &mut spans)?)),
        ([], [br], []) => Ok(DeviceConfig::PciBridge(bridge(ctx, 0, br, &mut spans)?)),
        ([], [], [u]) => Ok(DeviceConfig::Uart(uart(ctx, 0, u, &mut spans)?)),
        _ => {
            let n = virtios.len() + bridges.len() + uarts.len();
            Err(ctx.invalid(
                &None,
                "<root>",
                format!(
                    "a device description holds exactly one device table \
                     ([[virtio_mmio]], [[pci_bridge]] or [[uart]]), found {n}"
                ),
            ))
        }
    }
}

fn cpus(ctx: &Ctx<'_>, c: &Sp<RawCpus>) -> Result<CpuConfig, ConfigError> {
    let Some(count) = &c.value.count else {
        return Err(ctx.missing(&c.span, "cpus.count", ""));
    };
    let field = "cpus.count";
    if count.value < 1 {
        return Err(ctx.invalid(
            &count.span,
            field,
            format!("a cell needs at least 1 vCPU, got {}", count.value),
        ));
    }
    let n = u8::try_from(count.value)
        .ok()
        .filter(|&n| n <= MAX_VCPUS)
        .ok_or_else(|| {
            ctx.invalid(
                &count.span,
                field,
                format!(
                    "a cell can have at most {MAX_VCPUS} vCPUs, got {}",
                    count.value
                ),
            )
        })?;
    let pin = match &c.value.pin {
        None => None,
        Some(pin) => {
            if pin.value.len() != usize::from(n) {
                return Err(ctx.invalid(
                    &pin.span,
                    "cpus.pin",
                    format!(
                        "lists {} but cpus.count is {n}; give exactly one host CPU per vCPU",
                        plural(pin.value.len(), "host CPU")
                    ),
                ));
            }
            let mut cpus: Vec<usize> = Vec::with_capacity(pin.value.len());
            for (i, p) in pin.value.iter().enumerate() {
                let field = format!("cpus.pin[{i}]");
                let cpu = ctx.non_negative(p, &field)?;
                let cpu = usize::try_from(cpu)
                    .ok()
                    .filter(|&c| c < MAX_HOST_CPUS)
                    .ok_or_else(|| {
                        ctx.invalid(
                            &p.span,
                            &field,
                            format!(
                                "host CPU {cpu} is out of range (at most {})",
                                MAX_HOST_CPUS - 1
                            ),
                        )
                    })?;
                if ctx.check_files {
                    let host = host_cpu_count();
                    if cpu >= host {
                        return Err(ctx.invalid(
                            &p.span,
                            &field,
                            format!(
                                "host CPU {cpu} does not exist: this host has {host} CPUs (0..={})",
                                host.saturating_sub(1)
                            ),
                        ));
                    }
                }
                if let Some(j) = cpus.iter().position(|&c| c == cpu) {
                    return Err(ctx.invalid(
                        &p.span,
                        &field,
                        format!("host CPU {cpu} is already used by cpus.pin[{j}]"),
                    ));
                }
                cpus.push(cpu);
            }
            Some(cpus)
        }
    };
    let shared = c.value.shared.as_ref().is_some_and(|s| s.value);
    if shared && pin.is_none() {
        let span = c.value.shared.as_ref().and_then(|s| s.span.clone());
        return Err(ctx.invalid(
            &span,
            "cpus.shared",
            "only pinned host CPUs can be shared: give cpus.pin too, or drop cpus.shared",
        ));
    }
    Ok(CpuConfig {
        count: n,
        pin,
        shared,
    })
}

/// One region, as validated so far.
struct Region {
    index: usize,
    base: u64,
    size: u64,
    end: u64,
    prefault: bool,
    lock: bool,
}

fn memory(
    ctx: &Ctx<'_>,
    raw: Option<&Sp<Vec<Sp<RawMemory>>>>,
    spans: &mut Spans,
) -> Result<Vec<MemoryRegion>, ConfigError> {
    const NONE: &str = "a cell needs at least one [[memory]] region";
    let Some(list) = raw else {
        return Err(ctx.invalid(&None, "memory", NONE));
    };
    if list.value.is_empty() {
        return Err(ctx.invalid(&list.span, "memory", NONE));
    }
    let mut regions: Vec<Region> = Vec::new();
    for (i, r) in list.value.iter().enumerate() {
        let f = format!("memory[{i}]");
        let base = match &r.value.base {
            Some(b) => ctx.non_negative(b, &format!("{f}.base"))?,
            None if i == 0 => RAM_BASE,
            None => {
                return Err(ctx.missing(
                    &r.span,
                    &format!("{f}.base"),
                    " (only the first [[memory]] region may omit it)",
                ))
            }
        };
        let Some(size_v) = &r.value.size else {
            return Err(ctx.missing(&r.span, &format!("{f}.size"), ""));
        };
        let size = ctx.size(size_v, &format!("{f}.size"))?;
        if size == 0 {
            return Err(ctx.invalid(&size_v.span, &format!("{f}.size"), "must not be 0"));
        }
        if let Some(b) = &r.value.base {
            if base % PAGE != 0 {
                return Err(ctx.invalid(
                    &b.span,
                    &format!("{f}.base"),
                    format!("{base:#x} is not a multiple of 4 KiB"),
                ));
            }
        }
        if size % PAGE != 0 {
            return Err(ctx.invalid(
                &size_v.span,
                &format!("{f}.size"),
                format!("{size:#x} is not a multiple of 4 KiB"),
            ));
        }
        let pos = r.value.base.as_ref().map_or(&r.span, |b| &b.span);
        let Some(end) = base.checked_add(size) else {
            return Err(ctx.invalid(
                pos,
                &f,
                format!("base {base:#x} + size {size:#x} overflows the 64-bit address space"),
            ));
        };
        if end > RAM_LIMIT {
            return Err(ctx.invalid(
                pos,
                &f,
                format!("{base:#x}..{end:#x} ends above the 256 GiB limit ({RAM_LIMIT:#x})"),
            ));
        }
        if base < DEVICE_WINDOW_END && DEVICE_WINDOW_START < end {
            return Err(ctx.invalid(
                pos,
                &f,
                format!(
                    "{base:#x}..{end:#x} overlaps the device window \
                     {DEVICE_WINDOW_START:#x}..{DEVICE_WINDOW_END:#x}"
                ),
            ));
        }
        if let Some(other) = regions.iter().find(|o| o.base < end && base < o.end) {
            return Err(ctx.invalid(
                pos,
                &f,
                format!(
                    "{base:#x}..{end:#x} overlaps memory[{}] ({:#x}..{:#x})",
                    other.index, other.base, other.end
                ),
            ));
        }
        spans.memory.push(pos.clone());
        regions.push(Region {
            index: i,
            base,
            size,
            end,
            prefault: r.value.prefault.as_ref().is_some_and(|v| v.value),
            lock: r.value.lock.as_ref().is_some_and(|v| v.value),
        });
    }
    let total = regions.iter().fold(0u64, |t, r| t.saturating_add(r.size));
    if total < MIN_RAM {
        return Err(ctx.invalid(
            &list.span,
            "memory",
            format!(
                "a cell needs at least 16 MiB of RAM in total, got {}",
                human_size(total)
            ),
        ));
    }
    regions.sort_by_key(|r| r.base);
    if let Some(low) = regions.first() {
        let f = format!("memory[{}]", low.index);
        let Some(r) = list.value.get(low.index) else {
            return Err(ctx.invalid(&list.span, &f, "internal error: region index"));
        };
        if low.base != RAM_BASE {
            let span = r.value.base.as_ref().map_or(&r.span, |b| &b.span);
            return Err(ctx.invalid(
                span,
                &format!("{f}.base"),
                format!(
                    "the lowest memory region must start at {RAM_BASE:#x}, got {:#x}",
                    low.base
                ),
            ));
        }
        if low.size < MIN_RAM {
            let span = r.value.size.as_ref().map_or(&r.span, |s| &s.span);
            return Err(ctx.invalid(
                span,
                &format!("{f}.size"),
                format!(
                    "the region at {RAM_BASE:#x} must be at least 16 MiB, got {}",
                    human_size(low.size)
                ),
            ));
        }
    }
    let sorted = regions
        .iter()
        .map(|r| {
            let span = spans.memory.get(r.index).cloned().flatten();
            ctx.origin(&span, &format!("memory[{}]", r.index))
        })
        .collect();
    spans.origins.set_memory(sorted);
    Ok(regions
        .iter()
        .map(|r| MemoryRegion {
            base: r.base,
            size: r.size,
            prefault: r.prefault,
            lock: r.lock,
        })
        .collect())
}

fn format_name(f: KernelFormat) -> &'static str {
    f.name()
}

/// The formats this build boots, for messages: `"bzimage", "vmlinux" or "elf"`.
fn native_format_list() -> String {
    let names: Vec<String> = KernelFormat::NATIVE
        .iter()
        .map(|f| format!("{:?}", f.name()))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

fn kernel(ctx: &Ctx<'_>, k: &Sp<RawKernel>) -> Result<KernelConfig, ConfigError> {
    let Some(path_v) = &k.value.path else {
        return Err(ctx.missing(&k.span, "kernel.path", ""));
    };
    let given = match &k.value.format {
        None => None,
        Some(f) => Some(match f.value.as_str() {
            "bzimage" => KernelFormat::BzImage,
            "vmlinux" => KernelFormat::Vmlinux,
            "elf" => KernelFormat::Elf,
            "image" => KernelFormat::Image,
            other => {
                return Err(ctx.invalid(
                    &f.span,
                    "kernel.format",
                    format!(
                        "unknown format {other:?}, expected {}",
                        native_format_list()
                    ),
                ))
            }
        }),
    };
    let path = ctx.path(path_v, "kernel.path")?;
    let format = if ctx.check_files {
        let detected = identify(&path)
            .map_err(|e| ctx.file_error(&path_v.span, "kernel.path", "kernel image", &path, e))?;
        match (given, detected, &k.value.format) {
            (None, Some(d), _) => d,
            (Some(g), Some(d), _) if g == d => g,
            (Some(g), d, Some(f)) => {
                let what = match (d, g) {
                    (Some(KernelFormat::BzImage), _) => "is a bzImage",
                    (Some(KernelFormat::Vmlinux), _) => {
                        "is a Linux vmlinux (an ELF64 image with \"Linux\" notes)"
                    }
                    (Some(KernelFormat::Elf), KernelFormat::Vmlinux) => {
                        "is an ELF64 image without \"Linux\" notes (a bare-metal ELF)"
                    }
                    (Some(KernelFormat::Elf), _) => "is an ELF64 x86_64 image",
                    (Some(KernelFormat::Image), _) => "is an arm64 Image",
                    (None, KernelFormat::BzImage) => "has no bzImage header (\"HdrS\" at 0x202)",
                    (None, KernelFormat::Image) => {
                        "has no arm64 Image header (\"ARM\\x64\" at 0x38)"
                    }
                    (None, _) => "is not an ELF64 x86_64 image",
                };
                return Err(ctx.invalid(
                    &f.span,
                    "kernel.format",
                    format!("{:?} given, but {} {what}", format_name(g), shown(&path)),
                ));
            }
            _ => {
                return Err(ctx.invalid(
                    &path_v.span,
                    "kernel.path",
                    format!(
                        "{} is neither a bzImage (\"HdrS\" at 0x202), an ELF64 x86_64 image \
                         nor an arm64 Image (\"ARM\\x64\" at 0x38)",
                        shown(&path)
                    ),
                ))
            }
        }
    } else {
        given.unwrap_or(KernelFormat::NATIVE[0])
    };
    if !KernelFormat::NATIVE.contains(&format) {
        let (span, field) = match &k.value.format {
            Some(f) => (&f.span, "kernel.format"),
            None => (&path_v.span, "kernel.path"),
        };
        return Err(ctx.invalid(
            span,
            field,
            format!(
                "{} is {:?}, which this cellvm ({}) cannot boot: it boots {}",
                shown(&path),
                format.name(),
                std::env::consts::ARCH,
                native_format_list()
            ),
        ));
    }
    let initrd = match &k.value.initrd {
        None => None,
        Some(i) => {
            let p = ctx.path(i, "kernel.initrd")?;
            if format == KernelFormat::Elf {
                return Err(ctx.invalid(
                    &i.span,
                    "kernel.initrd",
                    "an initrd needs a Linux kernel (bzImage or vmlinux), but this kernel is a bare-metal ELF image",
                ));
            }
            if ctx.check_files {
                read_head(&p, 1)
                    .map_err(|e| ctx.file_error(&i.span, "kernel.initrd", "initrd", &p, e))?;
            }
            Some(p)
        }
    };
    let cmdline = match &k.value.cmdline {
        None => DEFAULT_CMDLINE.to_string(),
        Some(c) => {
            let bad = c
                .value
                .char_indices()
                .find(|(_, ch)| !(' '..='~').contains(ch));
            if let Some((i, ch)) = bad {
                return Err(ctx.invalid(
                    &c.span,
                    "kernel.cmdline",
                    format!("character {ch:?} at byte {i} is not printable ASCII"),
                ));
            }
            if c.value.len() > CMDLINE_MAX {
                return Err(ctx.invalid(
                    &c.span,
                    "kernel.cmdline",
                    format!(
                        "is {} bytes long; the limit is {CMDLINE_MAX}",
                        c.value.len()
                    ),
                ));
            }
            c.value.clone()
        }
    };
    let acpi = match &k.value.acpi {
        Some(a) if a.value && format == KernelFormat::Elf => {
            return Err(ctx.invalid(
                &a.span,
                "kernel.acpi",
                "ACPI tables are for Linux kernels (bzImage or vmlinux), but this kernel is a bare-metal ELF image",
            ));
        }
        Some(a) => a.value,
        None => format != KernelFormat::Elf,
    };
    Ok(KernelConfig {
        path,
        format,
        initrd,
        cmdline,
        acpi,
    })
}

fn console(ctx: &Ctx<'_>, c: &Sp<RawConsole>) -> Result<ConsoleConfig, ConfigError> {
    let v = &c.value;
    let output_name = v.output.as_ref().map_or("stdout", |o| o.value.as_str());
    let output = match output_name {
        "file" => {
            let Some(p) = &v.path else {
                return Err(ctx.missing(
                    &c.span,
                    "console.path",
                    " (console.output = \"file\" needs a path)",
                ));
            };
            ConsoleOutput::File(ctx.output_path(p, "console.path")?)
        }
        "stdout" | "none" => {
            if let Some(p) = &v.path {
                return Err(ctx.invalid(
                    &p.span,
                    "console.path",
                    format!(
                        "only allowed with console.output = \"file\" (output is {output_name:?})"
                    ),
                ));
            }
            if output_name == "stdout" {
                ConsoleOutput::Stdout
            } else {
                ConsoleOutput::None
            }
        }
        other => {
            let span = v.output.as_ref().map_or(&c.span, |o| &o.span);
            return Err(ctx.invalid(
                span,
                "console.output",
                format!("unknown output {other:?}, expected \"stdout\", \"file\" or \"none\""),
            ));
        }
    };
    let input = match &v.input {
        None => ConsoleInput::Stdin,
        Some(i) => match i.value.as_str() {
            "stdin" => ConsoleInput::Stdin,
            "none" => ConsoleInput::None,
            other => {
                return Err(ctx.invalid(
                    &i.span,
                    "console.input",
                    format!("unknown input {other:?}, expected \"stdin\" or \"none\""),
                ))
            }
        },
    };
    Ok(ConsoleConfig { output, input })
}

pub(super) fn virtio(
    ctx: &Ctx<'_>,
    i: usize,
    dev: &Sp<RawVirtioMmio>,
    spans: &mut Spans,
) -> Result<VirtioMmioConfig, ConfigError> {
    let f = format!("virtio_mmio[{i}]");
    let v = &dev.value;
    let Some(id_v) = &v.id else {
        return Err(ctx.missing(&dev.span, &format!("{f}.id"), ""));
    };
    let id = ctx.id(id_v, &format!("{f}.id"))?;
    let Some(kind_v) = &v.kind else {
        return Err(ctx.missing(&dev.span, &format!("{f}.kind"), ""));
    };
    let kind = match kind_v.value.as_str() {
        "rng" => VirtioKind::Rng,
        "block" => VirtioKind::Block,
        "console" => VirtioKind::Console,
        other => {
            return Err(ctx.invalid(
                &kind_v.span,
                &format!("{f}.kind"),
                format!("unknown kind {other:?}, expected \"rng\", \"block\" or \"console\""),
            ))
        }
    };
    let base = match &v.base {
        None => None,
        Some(b) => {
            let field = format!("{f}.base");
            let base = ctx.non_negative(b, &field)?;
            if base % VIRTIO_MMIO_SIZE != 0 {
                return Err(ctx.invalid(
                    &b.span,
                    &field,
                    format!("{base:#x} is not a multiple of 4 KiB"),
                ));
            }
            let (lo, hi) = VIRTIO_FIXED_WINDOW;
            let end = base.saturating_add(VIRTIO_MMIO_SIZE);
            if base < lo || end > hi {
                return Err(ctx.invalid(
                    &b.span,
                    &field,
                    format!(
                        "{base:#x}..{end:#x} is outside the virtio-mmio window {lo:#x}..{hi:#x}"
                    ),
                ));
            }
            Some(base)
        }
    };
    let irq = v
        .irq
        .as_ref()
        .map(|q| ioapic_pin(ctx, q, &format!("{f}.irq")))
        .transpose()?;
    let backend = virtio_backend(ctx, &f, &v.backend_keys(), kind, &dev.span)?;
    spans.device(
        ctx,
        &f,
        (&id, &id_v.span),
        &dev.span,
        &[
            ("base", v.base.as_ref().map(|b| &b.span)),
            ("irq", v.irq.as_ref().map(|q| &q.span)),
        ],
    );
    Ok(VirtioMmioConfig {
        id,
        state: device_state(ctx, &v.state, &f)?,
        kind,
        base,
        irq,
        backend,
    })
}

/// A device table's `state` (`okay` when absent).
fn device_state(
    ctx: &Ctx<'_>,
    state: &Option<Sp<String>>,
    f: &str,
) -> Result<crate::config::DeviceState, ConfigError> {
    use crate::config::DeviceState;
    let Some(s) = state else {
        return Ok(DeviceState::Okay);
    };
    match s.value.as_str() {
        "okay" => Ok(DeviceState::Okay),
        "reserved" => Ok(DeviceState::Reserved),
        "disabled" => Ok(DeviceState::Disabled),
        other => Err(ctx.invalid(
            &s.span,
            &format!("{f}.state"),
            format!(
                "{other:?} is not a device state (expected \"okay\", \"reserved\" or \"disabled\")"
            ),
        )),
    }
}

/// The per-kind backend keys of a virtio device (`[[virtio_mmio]]` or a
/// `kind = "virtio"` PCI device).
fn virtio_backend(
    ctx: &Ctx<'_>,
    f: &str,
    v: &RawBackendKeys<'_>,
    kind: VirtioKind,
    table: &Span,
) -> Result<VirtioBackendConfig, ConfigError> {
    let allowed: &[&str] = match kind {
        VirtioKind::Rng => &["queue_size", "ioeventfd"],
        VirtioKind::Block => &["path", "read_only", "serial", "queue_size", "ioeventfd"],
        VirtioKind::Console => &["path", "socket", "pty", "queue_size", "ioeventfd"],
    };
    let given = [
        ("path", v.path.map(|x| &x.span)),
        ("read_only", v.read_only.map(|x| &x.span)),
        ("serial", v.serial.map(|x| &x.span)),
        ("socket", v.socket.map(|x| &x.span)),
        ("pty", v.pty.map(|x| &x.span)),
        ("queue_size", v.queue_size.map(|x| &x.span)),
        ("ioeventfd", v.ioeventfd.map(|x| &x.span)),
    ];
    for (key, span) in given {
        if let Some(span) = span {
            if !allowed.contains(&key) {
                return Err(ctx.invalid(
                    span,
                    &format!("{f}.{key}"),
                    format!("a {kind:?} device takes no {key:?} key").to_lowercase(),
                ));
            }
        }
    }
    let path = match v.path {
        None => None,
        Some(p) if kind == VirtioKind::Console => Some(ctx.output_path(p, &format!("{f}.path"))?),
        Some(p) => Some(ctx.path(p, &format!("{f}.path"))?),
    };
    if kind == VirtioKind::Block {
        let Some(image) = &path else {
            return Err(ctx.missing(
                table,
                &format!("{f}.path"),
                " (a block device needs the path of its raw disk image)",
            ));
        };
        if ctx.check_files {
            if let Some(p) = v.path {
                read_head(image, 0).map_err(|e| {
                    ctx.file_error(&p.span, &format!("{f}.path"), "disk image", image, e)
                })?;
            }
        }
    }
    let hosts = [("path", v.path), ("socket", v.socket), ("pty", v.pty)];
    let named: Vec<_> = hosts.iter().filter(|(_, h)| h.is_some()).collect();
    if kind == VirtioKind::Console && named.len() > 1 {
        let (key, second) = named[1];
        return Err(ctx.invalid(
            &second
                .map(|s| s.span.clone())
                .unwrap_or_else(|| table.clone()),
            &format!("{f}.{key}"),
            "a console takes one of path, socket or pty",
        ));
    }
    let serial = match v.serial {
        None => None,
        Some(s) if s.value.is_empty() || s.value.len() > 20 || !s.value.is_ascii() => {
            return Err(ctx.invalid(
                &s.span,
                &format!("{f}.serial"),
                "a disk serial is 1 to 20 ASCII characters",
            ))
        }
        Some(s) => Some(s.value.clone()),
    };
    let socket = match v.socket {
        None => None,
        Some(p) => Some(ctx.output_path(p, &format!("{f}.socket"))?),
    };
    let pty = match v.pty {
        None => None,
        Some(p) => Some(ctx.output_path(p, &format!("{f}.pty"))?),
    };
    let queue_size = match v.queue_size {
        None => None,
        Some(q) => {
            let ok = u16::try_from(q.value)
                .ok()
                .filter(|n| n.is_power_of_two() && (16..=1024).contains(n));
            Some(ok.ok_or_else(|| {
                ctx.invalid(
                    &q.span,
                    &format!("{f}.queue_size"),
                    format!("{} is not a power of two from 16 to 1024", q.value),
                )
            })?)
        }
    };
    Ok(VirtioBackendConfig {
        path,
        read_only: v.read_only.is_some_and(|r| r.value),
        serial,
        socket,
        pty,
        queue_size,
        ioeventfd: v.ioeventfd.is_none_or(|b| b.value),
    })
}

/// `virtio = "..."` of a PCI device or a runtime description.
fn virtio_kind(ctx: &Ctx<'_>, v: &Sp<String>, field: &str) -> Result<VirtioKind, ConfigError> {
    match v.value.as_str() {
        "rng" => Ok(VirtioKind::Rng),
        "block" => Ok(VirtioKind::Block),
        "console" => Ok(VirtioKind::Console),
        other => Err(ctx.invalid(
            &v.span,
            field,
            format!("unknown virtio device {other:?}, expected \"rng\", \"block\" or \"console\""),
        )),
    }
}

fn bus_number(ctx: &Ctx<'_>, v: &Sp<i64>, field: &str) -> Result<u8, ConfigError> {
    u8::try_from(v.value).map_err(|_| {
        ctx.invalid(
            &v.span,
            field,
            format!("bus numbers are 0 to 255, got {}", v.value),
        )
    })
}

/// A validated `{ base, size }`: size a power of two >= 1 MiB, base (if
/// any; without one the layout allocates the window) aligned to it.
/// Returns the base and size.
fn window(ctx: &Ctx<'_>, w: &Sp<RawWindow>, f: &str) -> Result<(Option<u64>, u64), ConfigError> {
    let Some(size_v) = &w.value.size else {
        return Err(ctx.missing(&w.span, &format!("{f}.size"), ""));
    };
    let size_field = format!("{f}.size");
    let size = ctx.size(size_v, &size_field)?;
    if size < MIN_PCI_WINDOW {
        return Err(ctx.invalid(
            &size_v.span,
            &size_field,
            format!("must be at least 1 MiB, got {}", human_size(size)),
        ));
    }
    if !size.is_power_of_two() {
        return Err(ctx.invalid(
            &size_v.span,
            &size_field,
            format!("{} ({size:#x}) is not a power of two", human_size(size)),
        ));
    }
    let base = match &w.value.base {
        None => None,
        Some(b) => {
            let field = format!("{f}.base");
            let base = ctx.non_negative(b, &field)?;
            if base % size != 0 {
                return Err(ctx.invalid(
                    &b.span,
                    &field,
                    format!(
                        "{base:#x} is not aligned to the window size ({})",
                        human_size(size)
                    ),
                ));
            }
            if base.checked_add(size).is_none() {
                return Err(ctx.invalid(
                    &w.span,
                    f,
                    format!("base {base:#x} + size {size:#x} overflows the 64-bit address space"),
                ));
            }
            Some(base)
        }
    };
    Ok((base, size))
}

pub(super) fn bridge(
    ctx: &Ctx<'_>,
    i: usize,
    br: &Sp<RawPciBridge>,
    spans: &mut Spans,
) -> Result<PciBridgeConfig, ConfigError> {
    let f = format!("pci_bridge[{i}]");
    let v = &br.value;
    let Some(id_v) = &v.id else {
        return Err(ctx.missing(&br.span, &format!("{f}.id"), ""));
    };
    let id = ctx.id(id_v, &format!("{f}.id"))?;
    let Some(kind_v) = &v.kind else {
        return Err(ctx.missing(&br.span, &format!("{f}.kind"), ""));
    };
    let kind = match kind_v.value.as_str() {
        "ecam" => PciHostKind::Ecam,
        "cam" => PciHostKind::Cam,
        other => {
            return Err(ctx.invalid(
                &kind_v.span,
                &format!("{f}.kind"),
                format!("unknown kind {other:?}, expected \"ecam\" or \"cam\""),
            ))
        }
    };
    let bus_start = match &v.bus_start {
        None => 0,
        Some(b) => bus_number(ctx, b, &format!("{f}.bus_start"))?,
    };
    let bus_end = match &v.bus_end {
        None => bus_start,
        Some(b) => {
            let field = format!("{f}.bus_end");
            let end = bus_number(ctx, b, &field)?;
            if end < bus_start {
                return Err(ctx.invalid(
                    &b.span,
                    &field,
                    format!("{end} is below bus_start {bus_start}"),
                ));
            }
            end
        }
    };
    let config_base = match &v.config_base {
        None => None,
        Some(c) => {
            let field = format!("{f}.config_base");
            let base = ctx.non_negative(c, &field)?;
            let (per_bus, name) = match kind {
                PciHostKind::Ecam => (ECAM_BUS_SIZE, "ECAM"),
                PciHostKind::Cam => (CAM_BUS_SIZE, "CAM"),
            };
            if base % per_bus != 0 {
                return Err(ctx.invalid(
                    &c.span,
                    &field,
                    format!(
                        "{base:#x} is not a multiple of {} as {name} requires",
                        human_size(per_bus)
                    ),
                ));
            }
            let buses = u64::from(bus_end - bus_start) + 1;
            let end = base.saturating_add(per_bus * buses);
            let buses = if buses == 1 {
                "1 bus".to_string()
            } else {
                format!("{buses} buses")
            };
            if end > FOUR_GIB {
                return Err(ctx.invalid(
                    &c.span,
                    &field,
                    format!("config space {base:#x}..{end:#x} ({buses}) ends above 4 GiB"),
                ));
            }
            Some(base)
        }
    };
    let mmio32 = match &v.mmio32 {
        None => None,
        Some(w) => {
            let field = format!("{f}.mmio32");
            let (base, size) = window(ctx, w, &field)?;
            let base = base.unwrap_or(0);
            let end = base.saturating_add(size);
            if end > FOUR_GIB {
                return Err(ctx.invalid(
                    &w.span,
                    &field,
                    format!("window {base:#x}..{end:#x} ends above 4 GiB"),
                ));
            }
            Some(Window { base, size })
        }
    };
    let mmio64 = match &v.mmio64 {
        None => None,
        Some(w) => {
            let field = format!("{f}.mmio64");
            let (base, size) = window(ctx, w, &field)?;
            if let (Some(base), Some(b)) = (base, &w.value.base) {
                if base < FOUR_GIB {
                    return Err(ctx.invalid(
                        &b.span,
                        &format!("{field}.base"),
                        format!("{base:#x} is below 4 GiB; a 64-bit window must lie above it"),
                    ));
                }
            }
            Some(Window {
                base: base.unwrap_or(0),
                size,
            })
        }
    };
    let devices = pci_devices(ctx, &f, br, (bus_start, bus_end), true)?;
    spans.device(
        ctx,
        &f,
        (&id, &id_v.span),
        &br.span,
        &[
            ("config_base", v.config_base.as_ref().map(|c| &c.span)),
            ("mmio32", v.mmio32.as_ref().map(|w| &w.span)),
            ("mmio64", v.mmio64.as_ref().map(|w| &w.span)),
            ("bus_start", v.bus_start.as_ref().map(|b| &b.span)),
        ],
    );
    Ok(PciBridgeConfig {
        id,
        state: device_state(ctx, &v.state, &f)?,
        kind,
        config_base,
        bus_start,
        bus_end,
        mmio32,
        mmio64,
        devices,
    })
}

/// `[[pci_bridge.device]]` entries of one bridge.
/// The functions of bridge table `br` on buses `bus_start..=bus_end`.
/// `whole_bridge`: they are all of the bridge's functions, so a function
/// above 0 needs function 0 among them (a function description added to a
/// running bridge is checked against the bridge instead).
pub(super) fn pci_devices(
    ctx: &Ctx<'_>,
    bridge_field: &str,
    br: &Sp<RawPciBridge>,
    (bus_start, bus_end): (u8, u8),
    whole_bridge: bool,
) -> Result<Vec<PciDeviceConfig>, ConfigError> {
    let mut out: Vec<PciDeviceConfig> = Vec::new();
    let mut spans = Vec::new();
    for (i, d) in br.value.device.iter().flat_map(|v| &v.value).enumerate() {
        let f = format!("{bridge_field}.device[{i}]");
        let v = &d.value;
        let Some(slot_v) = &v.slot else {
            return Err(ctx.missing(&d.span, &format!("{f}.slot"), ""));
        };
        let slot = ctx.non_negative(slot_v, &format!("{f}.slot"))?;
        if slot > 31 {
            return Err(ctx.invalid(
                &slot_v.span,
                &format!("{f}.slot"),
                format!("{slot} is not a PCI device number (0..=31)"),
            ));
        }
        let function = match &v.function {
            None => 0,
            Some(fv) => {
                let n = ctx.non_negative(fv, &format!("{f}.function"))?;
                if n > 7 {
                    return Err(ctx.invalid(
                        &fv.span,
                        &format!("{f}.function"),
                        format!("{n} is not a PCI function number (0..=7)"),
                    ));
                }
                n
            }
        };
        let (slot, function) = (slot as u8, function as u8);
        let bus = match &v.bus {
            None => bus_start,
            Some(b) => {
                let n = bus_number(ctx, b, &format!("{f}.bus"))?;
                if n < bus_start || n > bus_end {
                    return Err(ctx.invalid(
                        &b.span,
                        &format!("{f}.bus"),
                        format!("bus {n} is outside the bridge's buses {bus_start}..={bus_end}"),
                    ));
                }
                n
            }
        };
        if let Some(j) = out
            .iter()
            .position(|o| o.bus == bus && o.slot == slot && o.function == function)
        {
            return Err(ctx.invalid(
                &slot_v.span,
                &format!("{f}.slot"),
                format!(
                    "{bus:02x}:{slot:02x}.{function} is already used by {bridge_field}.device[{j}]"
                ),
            ));
        }
        let Some(kind_v) = &v.kind else {
            return Err(ctx.missing(&d.span, &format!("{f}.kind"), ""));
        };
        let ivshmem_keys = [
            ("region", v.region.as_ref().map(|x| &x.span)),
            ("peer_id", v.peer_id.as_ref().map(|x| &x.span)),
            ("max_peers", v.max_peers.as_ref().map(|x| &x.span)),
            ("rw_size", v.rw_size.as_ref().map(|x| &x.span)),
            ("output_size", v.output_size.as_ref().map(|x| &x.span)),
        ];
        let keys = v.backend_keys();
        let virtio_keys = [
            ("virtio", v.virtio.as_ref().map(|x| &x.span)),
            ("path", keys.path.map(|x| &x.span)),
            ("read_only", keys.read_only.map(|x| &x.span)),
            ("serial", keys.serial.map(|x| &x.span)),
            ("socket", keys.socket.map(|x| &x.span)),
            ("pty", keys.pty.map(|x| &x.span)),
            ("queue_size", keys.queue_size.map(|x| &x.span)),
            ("ioeventfd", keys.ioeventfd.map(|x| &x.span)),
        ];
        let foreign = |keys: &[(&str, Option<&Span>)], owner: &str| match keys
            .iter()
            .find(|(_, s)| s.is_some())
        {
            Some((key, Some(span))) => Err(ctx.invalid(
                span,
                &format!("{f}.{key}"),
                format!("only {owner} devices take this key"),
            )),
            _ => Ok(()),
        };
        let bridge_keys = [("secondary", v.secondary.as_ref().map(|x| &x.span))];
        if kind_v.value != "pci-bridge" {
            foreign(&bridge_keys, "pci-bridge")?;
        }
        let kind = match kind_v.value.as_str() {
            "test" => {
                foreign(&ivshmem_keys, "ivshmem")?;
                foreign(&virtio_keys, "virtio")?;
                PciDeviceKind::Test
            }
            "pci-bridge" => {
                foreign(&ivshmem_keys, "ivshmem")?;
                foreign(&virtio_keys, "virtio")?;
                let Some(sec) = &v.secondary else {
                    return Err(ctx.missing(
                        &d.span,
                        &format!("{f}.secondary"),
                        " (the bus behind the PCI-to-PCI bridge)",
                    ));
                };
                PciDeviceKind::PciBridge {
                    secondary: bus_number(ctx, sec, &format!("{f}.secondary"))?,
                }
            }
            "ivshmem" => {
                foreign(&virtio_keys, "virtio")?;
                PciDeviceKind::Ivshmem(ivshmem(ctx, &f, d)?)
            }
            "virtio" => {
                foreign(&ivshmem_keys, "ivshmem")?;
                let Some(kind) = &v.virtio else {
                    return Err(ctx.missing(
                        &d.span,
                        &format!("{f}.virtio"),
                        " (the device type: \"rng\", \"block\" or \"console\")",
                    ));
                };
                let kind = virtio_kind(ctx, kind, &format!("{f}.virtio"))?;
                let backend = virtio_backend(ctx, &f, &keys, kind, &d.span)?;
                PciDeviceKind::Virtio(VirtioPciConfig { kind, backend })
            }
            other => {
                return Err(ctx.invalid(
                    &kind_v.span,
                    &format!("{f}.kind"),
                    format!("unknown kind {other:?}, expected \"test\", \"ivshmem\", \"virtio\" or \"pci-bridge\""),
                ))
            }
        };
        spans.push((
            slot_v.span.clone(),
            v.bus.as_ref().map(|b| b.span.clone()),
            v.secondary.as_ref().map(|b| b.span.clone()),
        ));
        out.push(PciDeviceConfig {
            bus,
            slot,
            function,
            kind,
        });
    }
    super::pci_buses::check(ctx, bridge_field, &out, &spans, (bus_start, bus_end))?;
    for (i, (d, (slot_span, _, _))) in out.iter().zip(&spans).enumerate() {
        if whole_bridge
            && d.function > 0
            && !out
                .iter()
                .any(|o| o.bus == d.bus && o.slot == d.slot && o.function == 0)
        {
            return Err(ctx.invalid(
                slot_span,
                &format!("{bridge_field}.device[{i}].function"),
                format!(
                    "function {} of slot {} needs a function 0 in the same slot (Linux only scans further functions of a present function 0)",
                    d.function, d.slot
                ),
            ));
        }
    }
    Ok(out)
}

fn ivshmem(ctx: &Ctx<'_>, f: &str, d: &Sp<RawPciDevice>) -> Result<IvshmemConfig, ConfigError> {
    let v = &d.value;
    let Some(region_v) = &v.region else {
        return Err(ctx.missing(&d.span, &format!("{f}.region"), ""));
    };
    let region = ctx.id(region_v, &format!("{f}.region"))?;
    let max_peers = match &v.max_peers {
        None => 2,
        Some(m) => {
            let n = ctx.non_negative(m, &format!("{f}.max_peers"))?;
            if let Some(why) = super::ivshmem_shape::peers_error(n) {
                return Err(ctx.invalid(&m.span, &format!("{f}.max_peers"), why));
            }
            n as u16
        }
    };
    let Some(peer_v) = &v.peer_id else {
        return Err(ctx.missing(&d.span, &format!("{f}.peer_id"), ""));
    };
    let peer_id = ctx.non_negative(peer_v, &format!("{f}.peer_id"))?;
    if peer_id >= u64::from(max_peers) {
        return Err(ctx.invalid(
            &peer_v.span,
            &format!("{f}.peer_id"),
            format!("{peer_id} is not below max_peers ({max_peers})"),
        ));
    }
    let mut sizes = [0u64; 2];
    for (slot, (key, raw)) in sizes
        .iter_mut()
        .zip([("rw_size", &v.rw_size), ("output_size", &v.output_size)])
    {
        let Some(raw) = raw else { continue };
        let field = format!("{f}.{key}");
        let size = ctx.size(raw, &field)?;
        if let Some(why) = super::ivshmem_shape::section_error(size) {
            return Err(ctx.invalid(&raw.span, &field, why));
        }
        *slot = size;
    }
    if sizes == [0, 0] {
        return Err(ctx.invalid(
            &d.span,
            &format!("{f}.rw_size"),
            super::ivshmem_shape::BOTH_EMPTY,
        ));
    }
    Ok(IvshmemConfig {
        region,
        peer_id: peer_id as u16,
        max_peers,
        rw_size: sizes[0],
        output_size: sizes[1],
    })
}

/// Device ids are unique across a file's device tables; the later one in
/// the file is reported. (The layout refuses a duplicate too, which is what
/// catches a runtime attach whose id a running cell already has.)
pub(super) fn unique_ids(ctx: &Ctx<'_>, spans: &Spans) -> Result<(), ConfigError> {
    let mut all: Vec<&(String, String, Span)> = spans.ids.iter().collect();
    all.sort_by_key(|(_, _, span)| span.as_ref().map_or(0, |s| s.start));
    for (n, (field, id, span)) in all.iter().enumerate() {
        if let Some((first, _, _)) = all.iter().take(n).find(|(_, o, _)| o == id) {
            return Err(ctx.invalid(
                span,
                &format!("{field}.id"),
                format!("duplicate id {id:?} (already used by {first})"),
            ));
        }
    }
    Ok(())
}

/// `[[uart]]`: an extra 16550 under the ISA bus.
pub(super) fn uart(
    ctx: &Ctx<'_>,
    i: usize,
    u: &Sp<RawUart>,
    spans: &mut Spans,
) -> Result<UartConfig, ConfigError> {
    let f = format!("uart[{i}]");
    let v = &u.value;
    let Some(id_v) = &v.id else {
        return Err(ctx.missing(&u.span, &format!("{f}.id"), ""));
    };
    let id = ctx.id(id_v, &format!("{f}.id"))?;
    let port = match &v.port {
        None => None,
        Some(p) => {
            let field = format!("{f}.port");
            let last = u16::MAX - (UART_PORT_COUNT - 1);
            let port = u16::try_from(p.value)
                .ok()
                .filter(|port| port % UART_PORT_COUNT == 0 && *port <= last)
                .ok_or_else(|| {
                    ctx.invalid(
                        &p.span,
                        &field,
                        format!(
                            "{:#x} is not a multiple of 8 from 0 to {last:#x} (a 16550 decodes 8 ports)",
                            p.value
                        ),
                    )
                })?;
            Some(port)
        }
    };
    let irq = v
        .irq
        .as_ref()
        .map(|q| ioapic_pin(ctx, q, &format!("{f}.irq")))
        .transpose()?;
    let path = v
        .path
        .as_ref()
        .map(|p| ctx.output_path(p, &format!("{f}.path")))
        .transpose()?;
    spans.device(
        ctx,
        &f,
        (&id, &id_v.span),
        &u.span,
        &[
            ("port", v.port.as_ref().map(|p| &p.span)),
            ("irq", v.irq.as_ref().map(|q| &q.span)),
        ],
    );
    Ok(UartConfig {
        id,
        state: device_state(ctx, &v.state, &f)?,
        port,
        irq,
        path,
    })
}

/// A fixed IOAPIC pin.
fn ioapic_pin(ctx: &Ctx<'_>, q: &Sp<i64>, field: &str) -> Result<u32, ConfigError> {
    u32::try_from(q.value)
        .ok()
        .filter(|&p| p < IRQ_LINES)
        .ok_or_else(|| {
            ctx.invalid(
                &q.span,
                field,
                format!(
                    "IOAPIC pin {} does not exist (pins are 0 to {})",
                    q.value,
                    IRQ_LINES - 1
                ),
            )
        })
}
