//! Partitioning a host among cells: what each cell uses that others may
//! not, and whether a set of validated cells can share one host.
//!
//! Specification:
//! - A cell *uses* resources ([`uses`]): its name, each pinned host CPU and
//!   each disk image of a block device (virtio-mmio or virtio-pci). A use is
//!   [`Mode::Exclusive`] or [`Mode::Shared`]: a pinned CPU is shared when the
//!   cell says `cpus.shared = true`, an image when the device is
//!   `read_only`; a name is always exclusive. Two uses of one resource
//!   conflict unless both are shared. In [`uses`] (offline checks) images
//!   are the same resource when their canonical paths are equal (symlinks
//!   and `..` resolved); [`device_uses`] gives the paths as configured
//!   (it runs on the control API's thread, whose seccomp filter does not
//!   allow `realpath`), and [`claims`] compares images by device and inode.
//! - [`check_set`] checks a set of cells against each other and the host
//!   and returns every conflict, not only the first: the uses above;
//!   ivshmem functions naming one region must agree on `max_peers`,
//!   `rw_size` and `output_size` and take distinct `peer_id`s; the cells'
//!   RAM together must fit the host's.
//! - Each [`PartitionError`] is one line naming both cells and both places
//!   (`file:line:column: field`), the later cell (in the order given) first.
//! - [`claims`] takes the same uses as host-wide locks while a cell runs.

pub mod claims;
#[cfg(test)]
mod claims_tests;
#[cfg(test)]
mod tests;

use crate::config::{CellConfig, DeviceConfig, HumanSize, PciDeviceKind, VirtioKind};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Something a cell uses that other cells may not use, or only share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// The cell's name (control socket, runtime files).
    Name(String),
    /// A pinned host CPU.
    HostCpu(usize),
    /// A disk image, by canonical path.
    Image(PathBuf),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Name(n) => write!(f, "cell name {n:?}"),
            Resource::HostCpu(c) => write!(f, "host CPU {c}"),
            Resource::Image(p) => write!(f, "disk image {}", crate::config::shown(p)),
        }
    }
}

/// How a cell uses a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No other cell may use it.
    Exclusive,
    /// Other cells may use it, if they share it too.
    Shared,
}

impl Mode {
    /// Whether a use in this mode and one in `other` can coexist.
    pub fn compatible(self, other: Mode) -> bool {
        self == Mode::Shared && other == Mode::Shared
    }
}

/// One use of a resource by a cell, and the field that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// What is used.
    pub resource: Resource,
    /// Exclusive or shared.
    pub mode: Mode,
    /// The dotted config field (`cpus.pin[1]`, `virtio_mmio[0].path`).
    pub field: String,
}

/// Where a use is: the cell, its file position and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The cell's name.
    pub cell: String,
    /// `file:line:column` (or the file alone when unknown).
    pub at: String,
    /// The dotted field.
    pub field: String,
}

impl Place {
    /// The place of `field` in `cell` (its recorded origin, else the file).
    pub fn of(cell: &CellConfig, field: &str) -> Place {
        let at = match cell.origins.field(field) {
            Some(o) => o.at.to_string(),
            None => cell
                .source
                .as_deref()
                .map_or_else(|| "<config>".to_string(), crate::config::shown),
        };
        Place {
            cell: cell.name.clone(),
            at,
            field: field.to_string(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.field)
    }
}

/// Why a set of cells cannot share a host.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PartitionError {
    /// Two cells want one thing in ways that exclude each other.
    #[error("{here}: {message}; cell {} ({there})", there.cell)]
    Conflict {
        /// The later cell's field.
        here: Place,
        /// The earlier cell's field.
        there: Place,
        /// What is wrong.
        message: String,
    },
    /// The cells together need more than the host has.
    #[error("{here}: {message}")]
    Host {
        /// The cell that went over.
        here: Place,
        /// What is wrong.
        message: String,
    },
}

/// What this host offers to cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Physical memory in bytes.
    pub memory: u64,
}

impl Host {
    /// This machine (`sysinfo(2)`).
    pub fn this() -> std::io::Result<Host> {
        // SAFETY: sysinfo only writes the struct we pass, which is
        // zero-initialised plain data.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable sysinfo struct.
        if unsafe { libc::sysinfo(&mut info) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let memory = info
            .totalram
            .saturating_mul(u64::from(info.mem_unit.max(1)));
        Ok(Host { memory })
    }
}

/// The canonical form of an image path, for comparing images: symlinks
/// and `..` resolved when the file exists, the path as given otherwise.
pub fn image_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Everything `cell` uses, in config order: name, pinned CPUs, images (by
/// canonical path).
pub fn uses(cell: &CellConfig) -> Vec<Use> {
    let mut out = vec![Use {
        resource: Resource::Name(cell.name.clone()),
        mode: Mode::Exclusive,
        field: "name".to_string(),
    }];
    out.extend(cpu_uses(cell));
    // A reserved or disabled device uses nothing: another cell may own it.
    let in_use = |s: crate::config::DeviceState| s == crate::config::DeviceState::Okay;
    for (i, dev) in cell.virtio_mmio.iter().enumerate() {
        if !in_use(dev.state) {
            continue;
        }
        let prefix = format!("virtio_mmio[{i}]");
        out.extend(device_uses(&DeviceConfig::VirtioMmio(dev.clone()), &prefix));
    }
    for (i, br) in cell.pci_bridges.iter().enumerate() {
        if !in_use(br.state) {
            continue;
        }
        let prefix = format!("pci_bridge[{i}]");
        out.extend(device_uses(&DeviceConfig::PciBridge(br.clone()), &prefix));
    }
    for u in &mut out {
        if let Resource::Image(p) = &u.resource {
            u.resource = Resource::Image(image_key(p));
        }
    }
    out
}

/// The host CPUs `cell` pins, shared or exclusive (`cpus.shared`).
pub fn cpu_uses(cell: &CellConfig) -> Vec<Use> {
    let mode = if cell.cpus.shared {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    let pins = cell.cpus.pin.as_deref().unwrap_or_default();
    pins.iter()
        .enumerate()
        .map(|(i, &cpu)| Use {
            resource: Resource::HostCpu(cpu),
            mode,
            field: format!("cpus.pin[{i}]"),
        })
        .collect()
}

/// The images one device uses (a block device's, or those of the block
/// functions behind a bridge), by the path as configured; fields are named
/// under `prefix`.
pub fn device_uses(dev: &DeviceConfig, prefix: &str) -> Vec<Use> {
    let image = |backend: &crate::config::VirtioBackendConfig, field: String| {
        backend.path.as_ref().map(|p| Use {
            resource: Resource::Image(p.clone()),
            mode: if backend.read_only {
                Mode::Shared
            } else {
                Mode::Exclusive
            },
            field,
        })
    };
    match dev {
        DeviceConfig::VirtioMmio(d) if d.kind == VirtioKind::Block => {
            image(&d.backend, format!("{prefix}.path"))
                .into_iter()
                .collect()
        }
        DeviceConfig::PciBridge(br) => br
            .devices
            .iter()
            .enumerate()
            .filter_map(|(j, f)| match &f.kind {
                PciDeviceKind::Virtio(v) if v.kind == VirtioKind::Block => {
                    image(&v.backend, format!("{prefix}.device[{j}].path"))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The message for two conflicting uses of `resource`.
fn conflict_message(resource: &Resource, cells: (&str, &str), modes: (Mode, Mode)) -> String {
    let (here, there) = cells;
    match resource {
        Resource::Name(n) => format!("cell name {n:?} is also the name of an earlier cell"),
        Resource::HostCpu(c) => format!(
            "host CPU {c} is pinned by cells {there} and {here}; pin it in one cell only, \
             or say cpus.shared = true in both"
        ),
        Resource::Image(p) => {
            let how = |m: Mode| match m {
                Mode::Exclusive => "read-write",
                Mode::Shared => "read-only",
            };
            format!(
                "disk image {} is used {} by cell {here} and {} by cell {there}; \
                 only read-only users may share an image",
                crate::config::shown(p),
                how(modes.0),
                how(modes.1)
            )
        }
    }
}

/// Checks that `cells` can share `host`; every conflict found, in the
/// order of the cells given.
pub fn check_set(cells: &[CellConfig], host: Host) -> Vec<PartitionError> {
    let mut errors = Vec::new();
    let mut seen: Vec<(&CellConfig, Use)> = Vec::new();
    for cell in cells {
        for u in uses(cell) {
            let clash = seen.iter().find(|(other, o)| {
                !std::ptr::eq(*other, cell)
                    && o.resource == u.resource
                    && !u.mode.compatible(o.mode)
            });
            if let Some((other, o)) = clash {
                errors.push(PartitionError::Conflict {
                    here: Place::of(cell, &u.field),
                    there: Place::of(other, &o.field),
                    message: conflict_message(
                        &u.resource,
                        (&cell.name, &other.name),
                        (u.mode, o.mode),
                    ),
                });
            }
        }
        seen.extend(uses(cell).into_iter().map(|u| (cell, u)));
    }
    errors.extend(check_ivshmem(cells));
    errors.extend(check_memory(cells, host));
    errors
}

/// One ivshmem function: its cell, field prefix and settings.
struct Peer<'a> {
    cell: &'a CellConfig,
    field: String,
    config: &'a crate::config::IvshmemConfig,
}

fn ivshmem_peers(cells: &[CellConfig]) -> Vec<Peer<'_>> {
    let mut out = Vec::new();
    for cell in cells {
        for (i, br) in cell.pci_bridges.iter().enumerate() {
            for (j, dev) in br.devices.iter().enumerate() {
                if let PciDeviceKind::Ivshmem(config) = &dev.kind {
                    out.push(Peer {
                        cell,
                        field: format!("pci_bridge[{i}].device[{j}]"),
                        config,
                    });
                }
            }
        }
    }
    out
}

/// Peers of one region agree on its shape and take distinct ids.
fn check_ivshmem(cells: &[CellConfig]) -> Vec<PartitionError> {
    let peers = ivshmem_peers(cells);
    let mut errors = Vec::new();
    for (n, p) in peers.iter().enumerate() {
        let Some(first) = peers
            .iter()
            .take(n)
            .find(|q| q.config.region == p.config.region)
        else {
            continue;
        };
        let region = &p.config.region;
        let shape = [
            (
                "max_peers",
                u64::from(p.config.max_peers),
                u64::from(first.config.max_peers),
            ),
            ("rw_size", p.config.rw_size, first.config.rw_size),
            (
                "output_size",
                p.config.output_size,
                first.config.output_size,
            ),
        ];
        for (key, here, there) in shape {
            if here != there {
                let show = |v: u64| {
                    if key == "max_peers" {
                        v.to_string()
                    } else {
                        HumanSize(v).to_string()
                    }
                };
                errors.push(PartitionError::Conflict {
                    here: Place::of(p.cell, &format!("{}.{key}", p.field)),
                    there: Place::of(first.cell, &format!("{}.{key}", first.field)),
                    message: format!(
                        "ivshmem region {region:?} has {key} {} here but {} in cell {}; \
                         every peer of a region must agree",
                        show(here),
                        show(there),
                        first.cell.name
                    ),
                });
            }
        }
        if let Some(twin) = peers
            .iter()
            .take(n)
            .find(|q| q.config.region == p.config.region && q.config.peer_id == p.config.peer_id)
        {
            errors.push(PartitionError::Conflict {
                here: Place::of(p.cell, &format!("{}.peer_id", p.field)),
                there: Place::of(twin.cell, &format!("{}.peer_id", twin.field)),
                message: format!(
                    "peer id {} of ivshmem region {region:?} is also taken by cell {}",
                    p.config.peer_id, twin.cell.name
                ),
            });
        }
    }
    errors
}

/// The cells' RAM together fits the host's.
fn check_memory(cells: &[CellConfig], host: Host) -> Vec<PartitionError> {
    let mut total: u64 = 0;
    for cell in cells {
        let ram: u64 = cell.memory.iter().map(|r| r.size).sum();
        total = total.saturating_add(ram);
        if total > host.memory {
            let field = cell
                .origins
                .memory(0)
                .map_or_else(|| "memory".to_string(), |o| o.field.clone());
            let at = cell
                .origins
                .memory(0)
                .map_or_else(|| Place::of(cell, "memory").at, |o| o.at.to_string());
            return vec![PartitionError::Host {
                here: Place {
                    cell: cell.name.clone(),
                    at,
                    field,
                },
                message: format!(
                    "cell {} brings the cells' RAM to {}, more than this host's {}",
                    cell.name,
                    HumanSize(total),
                    HumanSize(host.memory)
                ),
            }];
        }
    }
    Vec::new()
}
