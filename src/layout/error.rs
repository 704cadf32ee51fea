//! Why a device cannot be placed, and what the error is about.

use super::owner::Owner;
use thiserror::Error;

/// Errors from placing a cell's devices.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Two address reservations overlap (or one wraps the address space).
    #[error(
        "{what} at {base:#x}..{end:#x} collides with {}",
        other.as_ref().map_or_else(|| "the end of the address space".to_string(), ToString::to_string)
    )]
    Collision {
        /// The reservation that failed.
        what: Owner,
        /// Its base.
        base: u64,
        /// Its end (exclusive).
        end: u64,
        /// The holder of the overlapping reservation (`None`: the range wraps).
        other: Option<Owner>,
    },
    /// Two I/O port ranges overlap.
    #[error("{what} at ports {base:#x}..{end:#x} collides with {other}")]
    PortCollision {
        /// The device that failed.
        what: Owner,
        /// First port.
        base: u64,
        /// One past the last port.
        end: u64,
        /// The holder of the ports.
        other: Owner,
    },
    /// A pool had no free, suitably aligned space left.
    #[error("no room for {what} ({size:#x} bytes) in {pool}")]
    Exhausted {
        /// What was being placed.
        what: Owner,
        /// Requested size.
        size: u64,
        /// Name of the pool.
        pool: &'static str,
    },
    /// A fixed IOAPIC pin does not exist.
    #[error("IOAPIC pin {pin} for {what} does not exist (the IOAPIC has {pins} pins)")]
    IrqOutOfRange {
        /// What wanted it.
        what: Owner,
        /// The pin.
        pin: u32,
        /// How many pins there are.
        pins: usize,
    },
    /// A fixed IOAPIC pin is taken.
    #[error("IOAPIC pin {pin} for {what} is already used by {holder}")]
    IrqTaken {
        /// What wanted it.
        what: Owner,
        /// The pin.
        pin: u32,
        /// Who has it.
        holder: Owner,
    },
    /// All dynamic IOAPIC pins are in use.
    #[error("no free IOAPIC pin for {0}")]
    IrqsExhausted(Owner),
    /// No standard UART port is free.
    #[error("no free UART port for {id} (0x2f8, 0x3e8 and 0x2e8 are taken); give one")]
    NoFreePort {
        /// The UART.
        id: String,
    },
    /// A UART at an I/O port on an architecture without port I/O.
    #[error(
        "{id} is a UART at an I/O port, but {} has no port I/O: memory-mapped UARTs come \
         with add-on boards (docs/addons.md)",
        std::env::consts::ARCH
    )]
    NoPortIo {
        /// The UART.
        id: String,
    },
    /// The id is taken by another device of the cell.
    #[error("id {id:?} is already used by {other}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Who has it (`virtio-mmio device rng0`, `platform device console`).
        other: String,
    },
    /// Another bridge already starts at this bus.
    #[error(
        "bus {bus} is already the first bus of pci bridge {other}; \
         host bridges need distinct bus_start values"
    )]
    BusCollision {
        /// The bridge that failed.
        id: String,
        /// The bus number.
        bus: u8,
        /// The bridge that has it.
        other: String,
    },
    /// No device of the cell has this id.
    #[error("no device has id {id:?}")]
    NoSuchDevice {
        /// The id asked for.
        id: String,
    },
    /// The cell has no connector of this id.
    #[error("the cell has no connector {id:?}")]
    NoSuchConnector {
        /// The connector asked for.
        id: String,
    },
    /// A connector with an add-on plugged in cannot go.
    #[error("connector {id} has add-on {addon} plugged in; unplug it first")]
    ConnectorInUse {
        /// The connector.
        id: String,
        /// The add-on.
        addon: String,
    },
    /// A device kind that cannot sit on a connector.
    #[error("{id}: a {kind} cannot sit on a connector (the connector places a board's devices: leave out fixed addresses, irqs and mmio64)")]
    NotOnConnector {
        /// The device.
        id: String,
        /// Its kind.
        kind: &'static str,
    },
    /// Every pin of the connector is taken by the add-on's other devices.
    #[error("{id}: connector {connector} has no free IOAPIC pin left (it has {pins}; give it more with irqs)")]
    ConnectorIrqsExhausted {
        /// The device.
        id: String,
        /// The connector.
        connector: String,
        /// How many pins it has.
        pins: usize,
    },
}

/// What a [`LayoutError`] is about: the device (and key) or RAM region
/// whose placement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Culprit<'a> {
    /// The `n`th RAM region (in address order).
    Memory(usize),
    /// A device's key (`base`, `irq`, `bus_start`, ...; empty: its table).
    Device {
        /// The device id.
        id: &'a str,
        /// The key.
        key: &'static str,
    },
    /// A platform device (a bug: they are placed first).
    Platform,
}

impl LayoutError {
    /// What failed to be placed.
    pub fn culprit(&self) -> Culprit<'_> {
        fn owner(o: &Owner, irq: bool) -> Culprit<'_> {
            match o {
                Owner::Memory(i) => Culprit::Memory(*i),
                Owner::Platform(_) => Culprit::Platform,
                other => Culprit::Device {
                    id: other.device_id().unwrap_or_default(),
                    key: other.config_key(irq),
                },
            }
        }
        match self {
            LayoutError::Collision { what, .. }
            | LayoutError::PortCollision { what, .. }
            | LayoutError::Exhausted { what, .. } => owner(what, false),
            LayoutError::IrqOutOfRange { what, .. }
            | LayoutError::IrqTaken { what, .. }
            | LayoutError::IrqsExhausted(what) => owner(what, true),
            LayoutError::NoFreePort { id } | LayoutError::NoPortIo { id } => {
                Culprit::Device { id, key: "port" }
            }
            LayoutError::DuplicateId { id, .. } => Culprit::Device { id, key: "id" },
            LayoutError::BusCollision { id, .. } => Culprit::Device {
                id,
                key: "bus_start",
            },
            LayoutError::NoSuchDevice { id }
            | LayoutError::NoSuchConnector { id }
            | LayoutError::ConnectorInUse { id, .. }
            | LayoutError::NotOnConnector { id, .. }
            | LayoutError::ConnectorIrqsExhausted { id, .. } => Culprit::Device { id, key: "id" },
        }
    }

    /// The same error with RAM regions renumbered by `rename` (layout
    /// numbers them by address; a file by position).
    pub(super) fn renumber_memory(mut self, rename: impl Fn(usize) -> usize) -> Self {
        let fix = |o: &mut Owner| {
            if let Owner::Memory(i) = o {
                *i = rename(*i);
            }
        };
        match &mut self {
            LayoutError::Collision { what, other, .. } => {
                fix(what);
                if let Some(o) = other {
                    fix(o);
                }
            }
            LayoutError::PortCollision { what, other, .. } => {
                fix(what);
                fix(other);
            }
            LayoutError::IrqTaken { what, holder, .. } => {
                fix(what);
                fix(holder);
            }
            LayoutError::Exhausted { what, .. }
            | LayoutError::IrqOutOfRange { what, .. }
            | LayoutError::IrqsExhausted(what) => fix(what),
            LayoutError::NoFreePort { .. }
            | LayoutError::NoPortIo { .. }
            | LayoutError::DuplicateId { .. }
            | LayoutError::BusCollision { .. }
            | LayoutError::NoSuchDevice { .. }
            | LayoutError::NoSuchConnector { .. }
            | LayoutError::ConnectorInUse { .. }
            | LayoutError::NotOnConnector { .. }
            | LayoutError::ConnectorIrqsExhausted { .. } => {}
        }
        self
    }
}
