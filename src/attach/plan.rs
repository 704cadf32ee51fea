//! Attach and detach planning: validation, placement on a copy of the
//! layout, the overlay, and the checks against the cell's current tree.

use super::{AttachError, AttachedDevice, DeviceRequest, PlacedDevice, UartSlot};
use crate::config::{human_size, PciDeviceConfig, PciDeviceKind, PciHostKind, Window};
use crate::devices::legacy::{Cmos, I8042};
use crate::fdt::overlay::{build_overlay_for_base, ApplyError, BaseReference, Fragment, LiveTree};
use crate::fdt::{pci_host_node, templates, virtio_mmio_node, FdtError, Node, Vars};
use crate::layout::consts::*;
use crate::layout::{CellLayout, LayoutError, PciBridgeSlot, VirtioMmioSlot};

/// 4 GiB.
const FOUR_GIB: u64 = 1 << 32;
/// Smallest PCI MMIO window (as in config validation).
const MIN_PCI_WINDOW: u64 = 1 << 20;
/// Default size of an allocated 32-bit PCI window (as in the layout).
const DEFAULT_MMIO32_SIZE: u64 = 0x100_0000;
/// Where fixed virtio-mmio devices may go (as in config validation).
const VIRTIO_WINDOW: (u64, u64) = (DEVICE_WINDOW_START, IOAPIC_BASE);
/// I/O ports a 16550 decodes.
const UART_PORTS: u16 = 8;
/// Ports tried, in order, for a UART without a fixed port (COM2, COM3, COM4).
pub(crate) const DEFAULT_UART_PORTS: [u16; 3] = [0x2f8, 0x3e8, 0x2e8];
/// IOAPIC pin a UART gets by default (COM2's ISA IRQ), when free.
pub(crate) const DEFAULT_UART_IRQ: u32 = 3;
/// Size of an ivshmem section's granule.
const PAGE: u64 = 4096;
/// Largest ivshmem section.
const MAX_IVSHMEM_SECTION: u64 = 1 << 30;

/// Names of the boot-time platform devices, which no attachment may take.
const PLATFORM_IDS: [&str; 8] = [
    "console",
    "debug-exit",
    "boot-timer",
    "channel",
    "ioapic",
    "lapic",
    "i8042",
    "cmos",
];

/// Layout owner of a virtio-mmio device's window and pin (as in
/// [`CellLayout::new`]).
fn virtio_owner(id: &str) -> String {
    format!("virtio-mmio {id}")
}

/// Prefix of a PCI bridge's layout owners (as in [`CellLayout::new`]):
/// `... config space`, `... mmio32 window`, `... mmio64 window`, `... INTA`..`INTD`.
fn bridge_owner(id: &str) -> String {
    format!("pci bridge {id}")
}

/// Layout owner of a UART's pin.
fn uart_owner(id: &str) -> String {
    format!("uart {id}")
}

/// The IRQ owner names of a bridge's four INTx pins.
fn intx_owners(id: &str) -> [String; 4] {
    let owner = bridge_owner(id);
    ["A", "B", "C", "D"].map(|l| format!("{owner} INT{l}"))
}

/// `[A-Za-z0-9_-]{1,32}`, as for config ids.
pub(crate) fn valid_id(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether two layouts are the same: every reservation and owner, every
/// IOAPIC pin owner, RAM and the placed devices.
pub fn same_layout(a: &CellLayout, b: &CellLayout) -> bool {
    a.map == b.map
        && a.irqs == b.irqs
        && a.memory == b.memory
        && a.virtio_mmio == b.virtio_mmio
        && a.pci_bridges == b.pci_bridges
}

impl DeviceRequest {
    /// Checks the request's own rules (id, alignment, ranges, PCI
    /// functions), independent of the cell. Errors are
    /// [`AttachError::InvalidRequest`] naming the field as in description
    /// files.
    pub fn validate(&self) -> Result<(), AttachError> {
        let id = self.id();
        let invalid = |field: &str, message: String| AttachError::InvalidRequest {
            id: id.to_string(),
            field: field.to_string(),
            message,
        };
        if !valid_id(id) {
            return Err(invalid(
                "id",
                format!("must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', got {id:?}"),
            ));
        }
        let pin = |field: &str, irq: Option<u32>| match irq {
            Some(p) if p >= IOAPIC_PINS => Err(invalid(
                field,
                format!(
                    "IOAPIC pin {p} does not exist (pins are 0 to {})",
                    IOAPIC_PINS - 1
                ),
            )),
            _ => Ok(()),
        };
        match self {
            DeviceRequest::PciBridge {
                kind,
                bus_start,
                bus_end,
                config_base,
                mmio32,
                mmio64,
                devices,
                ..
            } => {
                if bus_end < bus_start {
                    return Err(invalid(
                        "bus_end",
                        format!("{bus_end} is below bus_start {bus_start}"),
                    ));
                }
                if let Some(base) = *config_base {
                    let (per_bus, name) = match kind {
                        PciHostKind::Ecam => (ECAM_BUS_SIZE, "ECAM"),
                        PciHostKind::Cam => (CAM_BUS_SIZE, "CAM"),
                    };
                    if base % per_bus != 0 {
                        return Err(invalid(
                            "config_base",
                            format!(
                                "{base:#x} is not a multiple of {} as {name} requires",
                                human_size(per_bus)
                            ),
                        ));
                    }
                    let buses = u64::from(bus_end - bus_start) + 1;
                    let end = base.saturating_add(per_bus * buses);
                    if end > FOUR_GIB {
                        return Err(invalid(
                            "config_base",
                            format!("config space {base:#x}..{end:#x} ends above 4 GiB"),
                        ));
                    }
                }
                if let Some(w) = mmio32 {
                    check_window(&invalid, "mmio32", w)?;
                    let end = w.base.saturating_add(w.size);
                    if end > FOUR_GIB {
                        return Err(invalid(
                            "mmio32",
                            format!("window {:#x}..{end:#x} ends above 4 GiB", w.base),
                        ));
                    }
                }
                if let Some(w) = mmio64 {
                    check_window(&invalid, "mmio64", w)?;
                    if w.base != 0 && w.base < FOUR_GIB {
                        return Err(invalid(
                            "mmio64.base",
                            format!(
                                "{:#x} is below 4 GiB; a 64-bit window must lie above it",
                                w.base
                            ),
                        ));
                    }
                }
                check_pci_devices(&invalid, devices)
            }
            DeviceRequest::VirtioMmio { base, irq, .. } => {
                if let Some(base) = *base {
                    if base % VIRTIO_MMIO_SIZE != 0 {
                        return Err(invalid(
                            "base",
                            format!("{base:#x} is not a multiple of 4 KiB"),
                        ));
                    }
                    let (lo, hi) = VIRTIO_WINDOW;
                    let end = base.saturating_add(VIRTIO_MMIO_SIZE);
                    if base < lo || end > hi {
                        return Err(invalid(
                            "base",
                            format!(
                                "{base:#x}..{end:#x} is outside the virtio-mmio window {lo:#x}..{hi:#x}"
                            ),
                        ));
                    }
                }
                pin("irq", *irq)
            }
            DeviceRequest::Uart { port, irq, .. } => {
                if let Some(port) = *port {
                    if port % UART_PORTS != 0 || port > u16::MAX - (UART_PORTS - 1) {
                        return Err(invalid(
                            "port",
                            format!(
                                "{port:#x} is not a multiple of 8 below 0xfff8 (a 16550 decodes 8 ports)"
                            ),
                        ));
                    }
                }
                pin("irq", *irq)
            }
        }
    }
}

/// Size a power of two >= 1 MiB; base (unless 0, "allocate") aligned to
/// it and not wrapping.
fn check_window(
    invalid: &dyn Fn(&str, String) -> AttachError,
    field: &str,
    w: &Window,
) -> Result<(), AttachError> {
    if w.size < MIN_PCI_WINDOW {
        return Err(invalid(
            &format!("{field}.size"),
            format!("must be at least 1 MiB, got {}", human_size(w.size)),
        ));
    }
    if !w.size.is_power_of_two() {
        return Err(invalid(
            &format!("{field}.size"),
            format!(
                "{} ({:#x}) is not a power of two",
                human_size(w.size),
                w.size
            ),
        ));
    }
    if !w.base.is_multiple_of(w.size) {
        return Err(invalid(
            &format!("{field}.base"),
            format!(
                "{:#x} is not aligned to the window size ({})",
                w.base,
                human_size(w.size)
            ),
        ));
    }
    if w.base.checked_add(w.size).is_none() {
        return Err(invalid(
            field,
            format!(
                "base {:#x} + size {:#x} overflows the 64-bit address space",
                w.base, w.size
            ),
        ));
    }
    Ok(())
}

/// The rules of `[[pci_bridge.device]]` in cell configs.
fn check_pci_devices(
    invalid: &dyn Fn(&str, String) -> AttachError,
    devices: &[PciDeviceConfig],
) -> Result<(), AttachError> {
    for (i, d) in devices.iter().enumerate() {
        let f = format!("device[{i}]");
        if d.slot > 31 {
            return Err(invalid(
                &format!("{f}.slot"),
                format!("{} is not a PCI device number (0..=31)", d.slot),
            ));
        }
        if d.function > 7 {
            return Err(invalid(
                &format!("{f}.function"),
                format!("{} is not a PCI function number (0..=7)", d.function),
            ));
        }
        if let Some(j) = devices
            .iter()
            .take(i)
            .position(|o| o.slot == d.slot && o.function == d.function)
        {
            return Err(invalid(
                &format!("{f}.slot"),
                format!(
                    "{:02x}.{} is already used by device[{j}]",
                    d.slot, d.function
                ),
            ));
        }
        if let PciDeviceKind::Ivshmem(iv) = &d.kind {
            if !valid_id(&iv.region) {
                return Err(invalid(
                    &format!("{f}.region"),
                    format!(
                        "must be 1-32 characters of A-Z, a-z, 0-9, '_' and '-', got {:?}",
                        iv.region
                    ),
                ));
            }
            if !(2..=16).contains(&iv.max_peers) {
                return Err(invalid(
                    &format!("{f}.max_peers"),
                    format!("{} peers; an ivshmem region has 2 to 16", iv.max_peers),
                ));
            }
            if iv.peer_id >= iv.max_peers {
                return Err(invalid(
                    &format!("{f}.peer_id"),
                    format!("{} is not below max_peers ({})", iv.peer_id, iv.max_peers),
                ));
            }
            for (key, size) in [("rw_size", iv.rw_size), ("output_size", iv.output_size)] {
                if size % PAGE != 0 || size > MAX_IVSHMEM_SECTION {
                    return Err(invalid(
                        &format!("{f}.{key}"),
                        format!("{size:#x} must be a multiple of 4 KiB and at most 1 GiB"),
                    ));
                }
            }
            if iv.rw_size == 0 && iv.output_size == 0 {
                return Err(invalid(
                    &format!("{f}.rw_size"),
                    "an ivshmem device needs rw_size or output_size (or both) above 0".to_string(),
                ));
            }
        }
    }
    for (i, d) in devices.iter().enumerate() {
        if d.function > 0 && !devices.iter().any(|o| o.slot == d.slot && o.function == 0) {
            return Err(invalid(
                &format!("device[{i}].function"),
                format!(
                    "function {} of slot {} needs a function 0 in the same slot \
                     (Linux only scans further functions of a present function 0)",
                    d.function, d.slot
                ),
            ));
        }
    }
    Ok(())
}

/// A planned attachment: everything needed to attach the device, nothing
/// applied yet. Send [`overlay`](Self::overlay) to the guest, then
/// [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct AttachPlan {
    /// The device id.
    pub id: String,
    /// The request planned.
    pub request: DeviceRequest,
    /// The cell's layout with the device placed (its slot is also in
    /// `virtio_mmio` / `pci_bridges` for those kinds).
    pub layout: CellLayout,
    /// Where the device was placed.
    pub slot: PlacedDevice,
    /// The overlay blob for the guest's `of_overlay_fdt_apply()`.
    pub overlay: Vec<u8>,
    /// Node paths the overlay adds to the cell's tree.
    pub nodes: Vec<String>,
    /// Base-tree nodes the overlay refers to by phandle (checked against
    /// the cell's tree).
    pub base_references: Vec<BaseReference>,
    before: CellLayout,
    attached_before: Vec<String>,
}

impl AttachPlan {
    /// Makes the attachment part of the cell's state: `layout` becomes
    /// [`AttachPlan::layout`] and the device joins `attached`. Fails, changing
    /// nothing, if `layout` or `attached` are not what the plan was made
    /// against (another change was committed in between).
    pub fn commit(
        self,
        layout: &mut CellLayout,
        attached: &mut Vec<AttachedDevice>,
    ) -> Result<(), AttachError> {
        ensure_fresh(
            &self.id,
            &self.before,
            &self.attached_before,
            layout,
            attached,
        )?;
        *layout = self.layout;
        attached.push(AttachedDevice {
            request: self.request,
            slot: self.slot,
            overlay: self.overlay,
            nodes: self.nodes,
        });
        Ok(())
    }
}

/// A planned detachment: the layout without the device. Remove the overlay
/// in the guest, then [`commit`](Self::commit).
#[derive(Debug, Clone)]
pub struct DetachPlan {
    /// The device id.
    pub id: String,
    /// The cell's layout with the device's reservations released (and its
    /// slot gone from `virtio_mmio` / `pci_bridges`).
    pub layout: CellLayout,
    /// Where the device was.
    pub slot: PlacedDevice,
    /// The overlay the guest applied for it.
    pub overlay: Vec<u8>,
    /// The node paths that overlay added.
    pub nodes: Vec<String>,
    before: CellLayout,
    attached_before: Vec<String>,
}

impl DetachPlan {
    /// Makes the detachment part of the cell's state; fails, changing
    /// nothing, if `layout` or `attached` changed since planning.
    pub fn commit(
        self,
        layout: &mut CellLayout,
        attached: &mut Vec<AttachedDevice>,
    ) -> Result<(), AttachError> {
        ensure_fresh(
            &self.id,
            &self.before,
            &self.attached_before,
            layout,
            attached,
        )?;
        *layout = self.layout;
        attached.retain(|d| d.id() != self.id);
        Ok(())
    }
}

/// A plan may only be committed against the state it was made from.
fn ensure_fresh(
    id: &str,
    before: &CellLayout,
    attached_before: &[String],
    layout: &CellLayout,
    attached: &[AttachedDevice],
) -> Result<(), AttachError> {
    if !same_layout(layout, before) || ids(attached) != attached_before {
        return Err(AttachError::StaleLayout { id: id.to_string() });
    }
    Ok(())
}

fn ids(attached: &[AttachedDevice]) -> Vec<String> {
    attached.iter().map(|d| d.id().to_string()).collect()
}

/// Who already uses `id`, if anyone.
fn id_user(id: &str, layout: &CellLayout, attached: &[AttachedDevice]) -> Option<String> {
    if let Some(d) = attached.iter().find(|d| d.id() == id) {
        return Some(format!("an attached {} device", d.request.kind_name()));
    }
    if layout.virtio_mmio.iter().any(|s| s.id == id) {
        return Some("a boot-time virtio-mmio device".to_string());
    }
    if layout.pci_bridges.iter().any(|s| s.id == id) {
        return Some("a boot-time pci bridge".to_string());
    }
    if PLATFORM_IDS.contains(&id) {
        return Some("a boot-time platform device".to_string());
    }
    None
}

/// The cell's current tree: `base_tree` with every attached device's overlay
/// applied in attach order.
pub fn current_tree(
    base_tree: &Node,
    attached: &[AttachedDevice],
) -> Result<LiveTree, AttachError> {
    let mut live =
        LiveTree::from_base(base_tree).map_err(|source| AttachError::CurrentTree { source })?;
    for d in attached {
        live.apply(&d.overlay, &format!("the overlay of attached {}", d.id()))
            .map_err(|source| AttachError::CurrentTree { source })?;
    }
    Ok(live)
}

/// Plans attaching `request` to a cell whose layout is `layout`, whose base
/// device tree (as booted) is `base_tree` and which has `attached` devices.
/// Nothing is changed: the result carries the new layout and the overlay.
pub fn plan(
    request: &DeviceRequest,
    layout: &CellLayout,
    base_tree: &Node,
    attached: &[AttachedDevice],
) -> Result<AttachPlan, AttachError> {
    request.validate()?;
    let id = request.id().to_string();
    if let Some(other) = id_user(&id, layout, attached) {
        return Err(AttachError::DuplicateId { id, other });
    }
    let fdt_err = |source: FdtError| AttachError::Fdt {
        id: id.clone(),
        source,
    };
    let mut next = layout.clone();
    let (slot, fragment) = match request {
        DeviceRequest::PciBridge {
            kind,
            bus_start,
            bus_end,
            config_base,
            mmio32,
            mmio64,
            ..
        } => {
            let slot = place_bridge(
                &mut next,
                &id,
                *kind,
                (*bus_start, *bus_end),
                *config_base,
                *mmio32,
                *mmio64,
            )?;
            let node = pci_host_node(&slot).map_err(fdt_err)?;
            next.pci_bridges.push(slot.clone());
            (
                PlacedDevice::PciBridge(slot),
                Fragment::new("/", vec![node]),
            )
        }
        DeviceRequest::VirtioMmio { base, irq, .. } => {
            let slot = place_virtio(&mut next, &id, *base, *irq)?;
            let node = virtio_mmio_node(&slot).map_err(fdt_err)?;
            next.virtio_mmio.push(slot.clone());
            (
                PlacedDevice::VirtioMmio(slot),
                Fragment::new("/", vec![node]),
            )
        }
        DeviceRequest::Uart { port, irq, .. } => {
            let isa =
                isa_path(base_tree).ok_or_else(|| AttachError::NoIsaBus { id: id.clone() })?;
            let slot = place_uart(&mut next, &id, *port, *irq, attached)?;
            let node = uart_node(&slot).map_err(fdt_err)?;
            (PlacedDevice::Uart(slot), Fragment::new(isa, vec![node]))
        }
    };
    let overlay = build_overlay_for_base(base_tree, &[fragment]).map_err(fdt_err)?;
    let mut live = current_tree(base_tree, attached)?;
    for r in &overlay.base_references {
        let found = live.phandle(&r.path);
        if found != Some(r.phandle) {
            return Err(AttachError::PhandleMismatch {
                id,
                label: r.label.clone(),
                path: r.path.clone(),
                written: r.phandle,
                found,
            });
        }
    }
    let nodes = live
        .apply(&overlay.blob, &format!("the overlay for {id}"))
        .map_err(|e| match e {
            ApplyError::NodeExists { path, .. } => AttachError::NodeExists {
                id: id.clone(),
                path,
            },
            source => AttachError::Overlay {
                id: id.clone(),
                source,
            },
        })?;
    Ok(AttachPlan {
        id,
        request: request.clone(),
        layout: next,
        slot,
        overlay: overlay.blob,
        nodes,
        base_references: overlay.base_references,
        before: layout.clone(),
        attached_before: ids(attached),
    })
}

/// Reserves a fixed IOAPIC pin, naming its holder if it is taken.
fn reserve_pin(
    layout: &mut CellLayout,
    id: &str,
    owner: &str,
    pin: u32,
) -> Result<u32, AttachError> {
    if let Some(holder) = layout.irqs.owner(pin) {
        return Err(AttachError::IrqTaken {
            what: owner.to_string(),
            pin,
            owner: holder.to_string(),
        });
    }
    layout.irqs.reserve(owner, pin).map_err(layout_err(id))
}

fn layout_err(id: &str) -> impl Fn(LayoutError) -> AttachError + '_ {
    move |source| AttachError::Layout {
        id: id.to_string(),
        source,
    }
}

/// Places a PCI bridge exactly as [`CellLayout::new`] places a configured
/// one (same owners, pools, alignment and order).
fn place_bridge(
    layout: &mut CellLayout,
    id: &str,
    kind: PciHostKind,
    (bus_start, bus_end): (u8, u8),
    config_base: Option<u64>,
    mmio32: Option<Window>,
    mmio64: Option<Window>,
) -> Result<PciBridgeSlot, AttachError> {
    if let Some(other) = layout.pci_bridges.iter().find(|b| b.bus_start == bus_start) {
        return Err(AttachError::BusCollision {
            id: id.to_string(),
            bus: bus_start,
            other: other.id.clone(),
        });
    }
    let err = layout_err(id);
    let owner = bridge_owner(id);
    let per_bus = match kind {
        PciHostKind::Ecam => ECAM_BUS_SIZE,
        PciHostKind::Cam => CAM_BUS_SIZE,
    };
    let buses = u64::from(bus_end.saturating_sub(bus_start)) + 1;
    let config_size = per_bus * buses;
    let map = &mut layout.map;
    let config = match config_base {
        Some(base) => map.reserve(
            format!("{owner} config space"),
            Window {
                base,
                size: config_size,
            },
        ),
        None => map.allocate(
            format!("{owner} config space"),
            config_size,
            config_size.max(ECAM_BUS_SIZE),
            PCI_CONFIG_POOL,
            "the PCI config pool",
        ),
    }
    .map_err(&err)?;
    let mmio32 = match mmio32 {
        Some(w) if w.base != 0 => map.reserve(format!("{owner} mmio32 window"), w),
        other => {
            let size = other.map_or(DEFAULT_MMIO32_SIZE, |w| w.size);
            map.allocate(
                format!("{owner} mmio32 window"),
                size,
                size.next_power_of_two(),
                PCI_MMIO32_POOL,
                "the PCI 32-bit MMIO pool",
            )
        }
    }
    .map_err(&err)?;
    let mmio64 = match mmio64 {
        Some(w) if w.base == 0 => Some(map.allocate(
            format!("{owner} mmio64 window"),
            w.size,
            w.size.next_power_of_two(),
            PCI_MMIO64_POOL,
            "the PCI 64-bit MMIO pool",
        )),
        Some(w) => Some(map.reserve(format!("{owner} mmio64 window"), w)),
        None => None,
    }
    .transpose()
    .map_err(&err)?;
    let mut intx = [0u32; 4];
    for (pin, name) in intx.iter_mut().zip(intx_owners(id)) {
        *pin = layout.irqs.allocate(&name).map_err(&err)?;
    }
    Ok(PciBridgeSlot {
        id: id.to_string(),
        kind,
        config,
        bus_start,
        bus_end,
        mmio32,
        mmio64,
        intx,
    })
}

/// Places a virtio-mmio device as [`CellLayout::new`] does.
fn place_virtio(
    layout: &mut CellLayout,
    id: &str,
    base: Option<u64>,
    irq: Option<u32>,
) -> Result<VirtioMmioSlot, AttachError> {
    let owner = virtio_owner(id);
    let err = layout_err(id);
    let window = match base {
        Some(base) => layout.map.reserve(
            owner.clone(),
            Window {
                base,
                size: VIRTIO_MMIO_SIZE,
            },
        ),
        None => layout.map.allocate(
            owner.clone(),
            VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_POOL,
            "the virtio-mmio pool",
        ),
    }
    .map_err(&err)?;
    let irq = match irq {
        Some(pin) => reserve_pin(layout, id, &owner, pin)?,
        None => layout.irqs.allocate(&owner).map_err(&err)?,
    };
    Ok(VirtioMmioSlot {
        id: id.to_string(),
        window,
        irq,
    })
}

/// I/O port ranges in use: the boot-time devices and attached UARTs, as
/// (owner, first port, count).
fn ports_in_use(attached: &[AttachedDevice]) -> Vec<(String, u32, u32)> {
    let mut used = vec![
        ("console".to_string(), u32::from(UART_PORT), 8),
        ("i8042".to_string(), I8042::BASE as u32, I8042::LEN as u32),
        ("cmos".to_string(), Cmos::BASE as u32, Cmos::LEN as u32),
    ];
    for d in attached {
        if let PlacedDevice::Uart(s) = &d.slot {
            used.push((uart_owner(&s.id), u32::from(s.port), u32::from(UART_PORTS)));
        }
    }
    used
}

fn port_user(used: &[(String, u32, u32)], port: u16) -> Option<&str> {
    let (start, end) = (u32::from(port), u32::from(port) + u32::from(UART_PORTS));
    used.iter()
        .find(|(_, base, len)| *base < end && start < base + len)
        .map(|(owner, _, _)| owner.as_str())
}

/// Places a UART: its ports against the boot-time and attached PIO
/// devices, its pin in the layout's IRQ allocator.
fn place_uart(
    layout: &mut CellLayout,
    id: &str,
    port: Option<u16>,
    irq: Option<u32>,
    attached: &[AttachedDevice],
) -> Result<UartSlot, AttachError> {
    let owner = uart_owner(id);
    let used = ports_in_use(attached);
    let port = match port {
        Some(port) => {
            if let Some(other) = port_user(&used, port) {
                return Err(AttachError::PortCollision {
                    what: owner,
                    port,
                    end: u32::from(port) + u32::from(UART_PORTS),
                    other: other.to_string(),
                });
            }
            port
        }
        None => DEFAULT_UART_PORTS
            .into_iter()
            .find(|p| port_user(&used, *p).is_none())
            .ok_or_else(|| AttachError::NoFreePort { id: id.to_string() })?,
    };
    let irq = match irq {
        Some(pin) => reserve_pin(layout, id, &owner, pin)?,
        None if layout.irqs.owner(DEFAULT_UART_IRQ).is_none() => {
            reserve_pin(layout, id, &owner, DEFAULT_UART_IRQ)?
        }
        None => layout.irqs.allocate(&owner).map_err(layout_err(id))?,
    };
    Ok(UartSlot {
        id: id.to_string(),
        port,
        irq,
    })
}

/// Path of the base tree's ISA bus node (the root's child named `isa`, with
/// or without a unit address).
fn isa_path(base_tree: &Node) -> Option<String> {
    base_tree
        .children()
        .iter()
        .find(|c| c.name().split('@').next() == Some("isa"))
        .map(|c| format!("/{}", c.name()))
}

/// The UART's node: the console UART's template (`ns16550.dts`) at another
/// port and pin.
pub(crate) fn uart_node(slot: &UartSlot) -> Result<Node, FdtError> {
    templates::NS16550.instantiate(
        &Vars::new()
            .raw("unit", format!("1,{:x}", slot.port))
            .cells("port", [u32::from(slot.port)])
            .cells("irq", [slot.irq]),
    )
}

/// The layout owners of a placed device's address reservations.
fn address_owners(slot: &PlacedDevice) -> Vec<String> {
    match slot {
        PlacedDevice::PciBridge(s) => {
            let owner = bridge_owner(&s.id);
            let mut v = vec![
                format!("{owner} config space"),
                format!("{owner} mmio32 window"),
            ];
            if s.mmio64.is_some() {
                v.push(format!("{owner} mmio64 window"));
            }
            v
        }
        PlacedDevice::VirtioMmio(s) => vec![virtio_owner(&s.id)],
        PlacedDevice::Uart(_) => Vec::new(),
    }
}

/// The layout owners of a placed device's IOAPIC pins.
fn irq_owners(slot: &PlacedDevice) -> Vec<String> {
    match slot {
        PlacedDevice::PciBridge(s) => intx_owners(&s.id).to_vec(),
        PlacedDevice::VirtioMmio(s) => vec![virtio_owner(&s.id)],
        PlacedDevice::Uart(s) => vec![uart_owner(&s.id)],
    }
}

/// Plans detaching the attached device `id`: the layout with its address
/// and IOAPIC reservations released (and its slot gone). Nothing is changed.
pub fn plan_detach(
    id: &str,
    layout: &CellLayout,
    attached: &[AttachedDevice],
) -> Result<DetachPlan, AttachError> {
    let Some(dev) = attached.iter().find(|d| d.id() == id) else {
        return Err(match id_user(id, layout, attached) {
            Some(_) => AttachError::BootTimeDevice { id: id.to_string() },
            None => AttachError::NotAttached { id: id.to_string() },
        });
    };
    let mut next = layout.clone();
    let missing = |owner: &str| AttachError::LayoutMismatch {
        id: id.to_string(),
        owner: owner.to_string(),
    };
    for owner in address_owners(&dev.slot) {
        if next.map.release(&owner) == 0 {
            return Err(missing(&owner));
        }
    }
    for owner in irq_owners(&dev.slot) {
        if next.irqs.pins_of(&owner).is_empty() {
            return Err(missing(&owner));
        }
        next.irqs.release(&owner);
    }
    match &dev.slot {
        PlacedDevice::PciBridge(_) => next.pci_bridges.retain(|s| s.id != id),
        PlacedDevice::VirtioMmio(_) => next.virtio_mmio.retain(|s| s.id != id),
        PlacedDevice::Uart(_) => {}
    }
    Ok(DetachPlan {
        id: id.to_string(),
        layout: next,
        slot: dev.slot.clone(),
        overlay: dev.overlay.clone(),
        nodes: dev.nodes.clone(),
        before: layout.clone(),
        attached_before: ids(attached),
    })
}
