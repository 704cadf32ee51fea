//! [`PciHostBridge`]: the configuration window of a generic PCI host bridge,
//! the functions behind it, their BAR mappings and their INTx routing.
//!
//! Locking (see `docs/pci.md` for the full argument): the bridge is one
//! `Mutex` (the one the MMIO [`Bus`] takes for config accesses); each function
//! has its own `Mutex`; a mapped BAR is a [`BarAdapter`] that holds the
//! function, never the bridge. The only nesting is bridge → function →
//! INTx pin → VMM line, and the bridge calls [`Bus::insert`] /
//! [`Bus::remove`] and [`BarMapper`]s with no function lock held.

use super::bar::{BarKind, BarMapper, BarRegion};
use super::config_mirror::{MirrorMapper, MirrorMapping, MirrorPage, MIRROR_PAGE_SIZE};
use super::config_space::SharedFunction;
use super::decode::{BadAccess, ConfigDecoder, Decoded, PciAddress};
use super::intx::pci_intx_pin;
use super::mirror_window::MirrorWindow;
use super::PciError;
use crate::config::{PciHostKind, Window};
use crate::devices::{fill_le, le_value, Bus, BusDevice, InterruptLine, SharedLine};
use crate::layout::PciBridgeSlot;
use crate::ratelimit::RateLimiter;
use crate::sync;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

/// What a function's INTx is connected to: its source bit on a shared pin.
struct IntxSource {
    pin: Arc<SharedLine>,
    source: u16,
}

impl InterruptLine for IntxSource {
    fn set_level(&self, level: bool) {
        self.pin.set(u64::from(self.source), level);
    }
}

/// The [`BusDevice`] registered on the MMIO bus for a mapped BAR: forwards
/// each access to the function's BAR handler. It holds the function, not the
/// bridge, so a BAR access takes only the function's lock (see `docs/pci.md`).
pub struct BarAdapter {
    function: SharedFunction,
    index: usize,
}

impl BarAdapter {
    /// An adapter for BAR `index` of `function`.
    pub fn new(function: SharedFunction, index: usize) -> Self {
        BarAdapter { function, index }
    }
}

impl BusDevice for BarAdapter {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        sync::lock(&self.function).read_bar(self.index, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        sync::lock(&self.function).write_bar(self.index, offset, data);
    }
}

struct Mapped {
    name: String,
    region: BarRegion,
    memory: Option<Arc<dyn BarMapper>>,
}

#[derive(Default)]
struct BarState {
    /// What the guest last programmed and enabled (mapped or not).
    want: Option<BarRegion>,
    /// What is actually mapped.
    mapped: Option<Mapped>,
}

struct Slot {
    function: SharedFunction,
    bars: [BarState; 6],
    /// The function's config space is a page placed in the bridge's mirror
    /// window ([`super::config_mirror`]), written through on every change.
    mirrored: bool,
}

/// The bridge's config window mirrored for reads without exits
/// ([`super::config_mirror`]).
struct BridgeMirror {
    mapper: Arc<dyn MirrorMapper>,
    window: Arc<MirrorWindow>,
    /// Ranges of the window mapped into the guest: start offset → (length,
    /// mapping). Together they cover the window except the pages of
    /// functions that are not mirrored.
    mapped: BTreeMap<u64, (u64, Box<dyn MirrorMapping>)>,
}

/// The page-aligned ranges of a window of `size` bytes left between the
/// pages at `holes` (sorted offsets).
fn ranges_between(size: u64, holes: &[u64]) -> Vec<(u64, u64)> {
    let page = MIRROR_PAGE_SIZE as u64;
    let mut ranges = Vec::new();
    let mut start = 0;
    for &hole in holes {
        if hole > start {
            ranges.push((start, hole - start));
        }
        start = start.max(hole.saturating_add(page));
    }
    if size > start {
        ranges.push((start, size - start));
    }
    ranges
}

/// Everything BAR mapping needs, borrowed apart from the function table.
struct MapCtx<'a> {
    id: &'a str,
    mmio: &'a Weak<Bus>,
    apertures: &'a [Window],
    log: &'a RateLimiter,
}

impl MapCtx<'_> {
    fn map(
        &self,
        address: PciAddress,
        function: &SharedFunction,
        region: BarRegion,
        memory: Option<Arc<dyn BarMapper>>,
    ) -> Option<Mapped> {
        let name = format!("{}/{}/bar{}", self.id, address, region.index);
        if region.kind == BarKind::Io {
            if self.log.allow() {
                log::debug!(
                    "{name}: I/O BAR at {:#x} not decoded (the bridge has no I/O window)",
                    region.base
                );
            }
            return None;
        }
        let inside = self
            .apertures
            .iter()
            .any(|w| region.base >= w.base && region.end() <= w.base.saturating_add(w.size));
        if !inside {
            if self.log.allow() {
                log::warn!(
                    "{name}: BAR at {:#x}+{:#x} is outside the bridge's memory windows; left unmapped",
                    region.base,
                    region.size
                );
            }
            return None;
        }
        let bus = self.mmio.upgrade()?;
        let adapter = Arc::new(Mutex::new(BarAdapter::new(function.clone(), region.index)));
        if let Err(e) = bus.insert(&name, region.base, region.size, adapter) {
            if self.log.allow() {
                log::warn!("{name}: {e}; BAR left unmapped");
            }
            return None;
        }
        if let Some(mapper) = &memory {
            if let Err(e) = mapper.map(region.base, region.size) {
                let _ = bus.remove(&name);
                if self.log.allow() {
                    log::warn!(
                        "{name}: mapping memory at {:#x}+{:#x} failed: {e}; BAR left unmapped",
                        region.base,
                        region.size
                    );
                }
                return None;
            }
        }
        log::debug!("{name}: mapped at {:#x}+{:#x}", region.base, region.size);
        Some(Mapped {
            name,
            region,
            memory,
        })
    }

    fn unmap(&self, m: Mapped) {
        if let Some(mapper) = &m.memory {
            if let Err(e) = mapper.unmap(m.region.base, m.region.size) {
                log::warn!("{}: unmapping memory failed: {e}", m.name);
            }
        }
        if let Some(bus) = self.mmio.upgrade() {
            let _ = bus.remove(&m.name);
        }
        log::debug!("{}: unmapped", m.name);
    }
}

/// A virtual PCI host bridge: serves its configuration window as a
/// [`BusDevice`] and keeps the MMIO bus in step with the BARs the guest
/// programs.
///
/// Register it on the MMIO bus as `Arc<Mutex<PciHostBridge>>` at the slot's
/// config window. It keeps only a weak reference to the bus, so the bus
/// owning the bridge is not a reference cycle.
pub struct PciHostBridge {
    id: String,
    decoder: ConfigDecoder,
    mmio: Weak<Bus>,
    apertures: Vec<Window>,
    intx_gsis: [u32; 4],
    pins: [Arc<SharedLine>; 4],
    functions: BTreeMap<PciAddress, Slot>,
    /// Buses behind PCI-to-PCI bridges: secondary bus → the root-bus
    /// device number of the bridge leading to it (INTx swizzling).
    behind: BTreeMap<u8, u8>,
    bad_accesses: u64,
    bad_log: RateLimiter,
    map_log: RateLimiter,
    /// Guest-physical base of the config window.
    config_base: u64,
    /// The mirrored config window (ECAM only; `None`: every read exits).
    mirror: Option<BridgeMirror>,
}

impl PciHostBridge {
    /// A bridge with no functions for `slot`, mapping BARs on `mmio`. BARs
    /// are decoded only inside the slot's `mmio32` / `mmio64` windows.
    pub fn new(slot: &PciBridgeSlot, mmio: &Arc<Bus>) -> Self {
        let mut apertures = vec![slot.mmio32];
        apertures.extend(slot.mmio64);
        PciHostBridge {
            id: slot.id.clone(),
            decoder: ConfigDecoder::new(slot.kind, slot.bus_start, slot.bus_end)
                .with_window_size(slot.config.size),
            mmio: Arc::downgrade(mmio),
            apertures,
            intx_gsis: slot.intx,
            pins: Default::default(),
            functions: BTreeMap::new(),
            behind: BTreeMap::new(),
            bad_accesses: 0,
            bad_log: RateLimiter::new(10),
            map_log: RateLimiter::new(10),
            config_base: slot.config.base,
            mirror: None,
        }
    }

    /// Lets the guest read the configuration window from memory that
    /// `mapper` maps instead of exiting: the pages of functions that allow
    /// it ([`PciFunction::mirror_config`](super::PciFunction::mirror_config))
    /// and all ones wherever no function is. ECAM windows only (a CAM
    /// function is smaller than a page): ignored for CAM. Functions already
    /// attached are mirrored now, later ones as they are added. A window that
    /// cannot be created is logged and every read goes on exiting.
    pub fn set_mirror_mapper(&mut self, mapper: Arc<dyn MirrorMapper>) {
        if self.decoder.kind() != PciHostKind::Ecam || self.mirror.is_some() {
            return;
        }
        let window = match MirrorWindow::new(self.decoder.window_size()) {
            Ok(window) => Arc::new(window),
            Err(e) => {
                if self.map_log.allow() {
                    log::warn!("pci bridge {}: {e}; config reads exit", self.id);
                }
                return;
            }
        };
        self.mirror = Some(BridgeMirror {
            mapper,
            window,
            mapped: BTreeMap::new(),
        });
        for address in self.addresses() {
            self.mirror_function(address);
        }
        self.remap_mirror();
    }

    /// Whether the guest reads the function at `address` from memory.
    pub fn is_mirrored(&self, address: PciAddress) -> bool {
        let (Some(slot), Some(mirror), Some(offset)) = (
            self.functions.get(&address),
            self.mirror.as_ref(),
            self.decoder.offset_of(address, 0),
        ) else {
            return false;
        };
        slot.mirrored
            && mirror
                .mapped
                .range(..=offset)
                .next_back()
                .is_some_and(|(start, (len, _))| offset < start + len)
    }

    /// Places a page with the config space of the function at `address` in
    /// the mirror window, if the bridge mirrors and the function allows it.
    /// A failure is logged and leaves the function's reads exiting (correct,
    /// only slower) once [`Self::remap_mirror`] leaves its page out.
    fn mirror_function(&mut self, address: PciAddress) {
        let (Some(mirror), Some(offset)) = (&self.mirror, self.decoder.offset_of(address, 0))
        else {
            return;
        };
        let Some(slot) = self.functions.get_mut(&address) else {
            return;
        };
        if slot.mirrored || !sync::lock(&slot.function).mirror_config() {
            return;
        }
        let page = match MirrorPage::new() {
            Ok(page) => Arc::new(page),
            Err(e) => {
                if self.map_log.allow() {
                    log::warn!("pci bridge {} {address}: {e}; config reads exit", self.id);
                }
                return;
            }
        };
        // Filled before it is placed: the guest never sees a partial header.
        sync::lock(&slot.function)
            .config_mut()
            .attach_mirror(page.clone());
        match mirror.window.place(offset, &page) {
            Ok(()) => slot.mirrored = true,
            Err(e) => {
                sync::lock(&slot.function).config_mut().detach_mirror();
                if self.map_log.allow() {
                    log::warn!("pci bridge {} {address}: {e}; config reads exit", self.id);
                }
            }
        }
    }

    /// Maps the mirror window into the guest except the pages of functions
    /// that are not mirrored (their reads exit): ranges that changed are
    /// unmapped first, then the new ones mapped. A broken window
    /// ([`MirrorWindow::is_broken`]) is unmapped entirely. A range that
    /// cannot be mapped is logged and its reads exit.
    fn remap_mirror(&mut self) {
        let mut holes: Vec<u64> = self
            .functions
            .iter()
            .filter(|(_, slot)| !slot.mirrored)
            .filter_map(|(address, _)| self.decoder.offset_of(*address, 0))
            .collect();
        holes.sort_unstable();
        let Some(mirror) = self.mirror.as_mut() else {
            return;
        };
        if mirror.window.is_broken() {
            mirror.mapped.clear();
            return;
        }
        let ranges = ranges_between(mirror.window.size(), &holes);
        mirror
            .mapped
            .retain(|start, (len, _)| ranges.contains(&(*start, *len)));
        for (start, len) in ranges {
            if mirror.mapped.contains_key(&start) {
                continue;
            }
            let gpa = self.config_base.saturating_add(start);
            match mirror.mapper.map(gpa, &mirror.window, start, len) {
                Ok(mapping) => {
                    mirror.mapped.insert(start, (len, mapping));
                }
                Err(e) => {
                    if self.map_log.allow() {
                        log::warn!("pci bridge {}: {e}; those config reads exit", self.id);
                    }
                }
            }
        }
    }

    /// The bridge id (prefix of its BAR names on the bus).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The window decoder.
    pub fn decoder(&self) -> &ConfigDecoder {
        &self.decoder
    }

    /// IOAPIC pins of the bridge's INTA..INTD.
    pub fn intx_gsis(&self) -> [u32; 4] {
        self.intx_gsis
    }

    /// Connects the bridge's INTA..INTD (in the order of
    /// [`PciBridgeSlot::intx`]) to the VMM's lines. May be called before or
    /// after functions are added; each line is driven with its current level.
    pub fn connect_intx(&mut self, lines: [Arc<dyn InterruptLine>; 4]) {
        for (pin, line) in self.pins.iter().zip(lines) {
            pin.connect(line);
        }
    }

    /// Level of the bridge's INTx pin `index` (0 = INTA .. 3 = INTD of the
    /// bridge, after swizzling): the OR of the functions routed to it.
    pub fn intx_level(&self, index: usize) -> bool {
        self.pins.get(index).is_some_and(|p| p.level())
    }

    /// Index (0..=3) of the bridge pin that interrupt pin `pin` (1 = INTA)
    /// of `device` reaches: the swizzle of the device tree's interrupt-map.
    pub fn intx_index(device: u8, pin: u8) -> usize {
        pci_intx_pin(&[0, 1, 2, 3], u32::from(device), u32::from(pin)) as usize
    }

    /// The IOAPIC pin the function at `address` interrupts on, if it has a
    /// function there using INTx.
    pub fn intx_gsi(&self, address: PciAddress) -> Option<u32> {
        let slot = self.functions.get(&address)?;
        let pin = sync::lock(&slot.function).config().interrupt_pin();
        let (device, pin) = self.root_intx(address, pin)?;
        Some(pci_intx_pin(
            &self.intx_gsis,
            u32::from(device),
            u32::from(pin),
        ))
    }

    /// Records that the PCI-to-PCI bridge at `device` of the root bus leads
    /// to bus `secondary`: functions added on that bus afterwards have
    /// their INTx swizzled through it.
    pub fn route_bus(&mut self, secondary: u8, device: u8) {
        self.behind.insert(secondary, device);
    }

    /// The root-bus device and pin (1 = INTA) that pin `pin` of the
    /// function at `address` reaches: itself on the root bus; behind a
    /// PCI-to-PCI bridge, swizzled by its device number onto the bridge's
    /// pins (as Linux's `pci_swizzle_interrupt_pin`). `None` without a pin
    /// or on a bus no bridge leads to.
    fn root_intx(&self, address: PciAddress, pin: u8) -> Option<(u8, u8)> {
        if !(1..=4).contains(&pin) {
            return None;
        }
        if address.bus == self.decoder.bus_start() {
            return Some((address.device, pin));
        }
        let bridge = *self.behind.get(&address.bus)?;
        Some((bridge, (pin - 1 + address.device) % 4 + 1))
    }

    /// Attaches `function` at `address`: wires its INTx to the swizzled
    /// bridge pin, sets the multi-function bit on function 0 of a device with
    /// several functions, and maps any BARs it already decodes.
    pub fn add_function(
        &mut self,
        address: PciAddress,
        function: SharedFunction,
    ) -> Result<(), PciError> {
        let address = PciAddress::new(address.bus, address.device, address.function)?;
        if address.bus < self.decoder.bus_start() || address.bus > self.decoder.bus_end() {
            return Err(PciError::BusOutOfRange {
                bridge: self.id.clone(),
                bus: address.bus,
                start: self.decoder.bus_start(),
                end: self.decoder.bus_end(),
            });
        }
        if self.functions.contains_key(&address) {
            return Err(PciError::Occupied(address));
        }
        {
            let mut f = sync::lock(&function);
            let pin = f.config().interrupt_pin();
            let line: Option<Arc<dyn InterruptLine>> =
                if let Some((device, pin)) = self.root_intx(address, pin) {
                    let index = Self::intx_index(device, pin);
                    Some(Arc::new(IntxSource {
                        pin: self.pins[index].clone(),
                        source: (u16::from(address.bus) << 8) | u16::from(address.devfn()),
                    }))
                } else {
                    None
                };
            f.config_mut().connect_intx(line);
        }
        self.functions.insert(
            address,
            Slot {
                function,
                bars: Default::default(),
                mirrored: false,
            },
        );
        self.update_multi_function(address.bus, address.device);
        self.sync_bars(address);
        self.mirror_function(address);
        self.remap_mirror();
        Ok(())
    }

    /// Detaches the function at `address`: unmaps its BARs, lowers and
    /// disconnects its INTx, and returns it.
    pub fn remove_function(&mut self, address: PciAddress) -> Result<SharedFunction, PciError> {
        let Some(mut slot) = self.functions.remove(&address) else {
            return Err(PciError::NoFunction(address));
        };
        self.unmirror(address, &mut slot);
        self.unmap_all(&mut slot);
        sync::lock(&slot.function).config_mut().connect_intx(None);
        self.update_multi_function(address.bus, address.device);
        self.remap_mirror();
        Ok(slot.function)
    }

    /// The function at `address`.
    pub fn function(&self, address: PciAddress) -> Option<SharedFunction> {
        self.functions.get(&address).map(|s| s.function.clone())
    }

    /// Addresses of all attached functions, sorted.
    pub fn addresses(&self) -> Vec<PciAddress> {
        self.functions.keys().copied().collect()
    }

    /// BARs currently mapped, with their function.
    pub fn mapped_bars(&self) -> Vec<(PciAddress, BarRegion)> {
        self.functions
            .iter()
            .flat_map(|(a, s)| {
                s.bars
                    .iter()
                    .filter_map(move |b| b.mapped.as_ref().map(|m| (*a, m.region)))
            })
            .collect()
    }

    /// Malformed configuration accesses seen so far (wrong size, misaligned,
    /// straddling, outside the window).
    pub fn bad_accesses(&self) -> u64 {
        self.bad_accesses
    }

    /// Resets every function (decode off, INTx low) and unmaps their BARs.
    pub fn reset(&mut self) {
        let addresses = self.addresses();
        for a in &addresses {
            if let Some(slot) = self.functions.get(a) {
                sync::lock(&slot.function).reset();
            }
        }
        for a in addresses {
            self.sync_bars(a);
        }
    }

    fn update_multi_function(&mut self, bus: u8, device: u8) {
        let on_device = self
            .functions
            .keys()
            .filter(|a| a.bus == bus && a.device == device)
            .count();
        if let Some(slot) = self.functions.get(&PciAddress {
            bus,
            device,
            function: 0,
        }) {
            sync::lock(&slot.function)
                .config_mut()
                .set_multi_function(on_device > 1);
        }
    }

    /// Brings the bus in line with the BARs the function at `address` now
    /// decodes: unmaps what changed, then maps the new ranges.
    fn sync_bars(&mut self, address: PciAddress) {
        let ctx = MapCtx {
            id: &self.id,
            mmio: &self.mmio,
            apertures: &self.apertures,
            log: &self.map_log,
        };
        let Some(slot) = self.functions.get_mut(&address) else {
            return;
        };
        let mut want: [Option<BarRegion>; 6] = [None; 6];
        let mut memory: [Option<Arc<dyn BarMapper>>; 6] = Default::default();
        {
            let f = sync::lock(&slot.function);
            let config = f.config();
            for region in config.active_bars() {
                if let Some(w) = want.get_mut(region.index) {
                    *w = Some(region);
                }
                if let Some(m) = memory.get_mut(region.index) {
                    *m = config.bar(region.index).and_then(|b| b.mapper().cloned());
                }
            }
        }
        let changed: Vec<usize> = (0..6).filter(|&i| slot.bars[i].want != want[i]).collect();
        // Unmap everything that changed first, so BARs of one function that
        // swap places do not collide with each other's stale mapping.
        for &i in &changed {
            if let Some(m) = slot.bars[i].mapped.take() {
                ctx.unmap(m);
            }
        }
        for &i in &changed {
            slot.bars[i].want = want[i];
            if let Some(region) = want[i] {
                slot.bars[i].mapped = ctx.map(address, &slot.function, region, memory[i].take());
            }
        }
    }

    /// Shows all ones at the function's page in the mirror window again,
    /// then stops writing its registers through to the page. A window that
    /// fails to take the page back is broken: the caller's
    /// [`Self::remap_mirror`] unmaps it.
    fn unmirror(&self, address: PciAddress, slot: &mut Slot) {
        if !std::mem::take(&mut slot.mirrored) {
            return;
        }
        if let (Some(mirror), Some(offset)) = (&self.mirror, self.decoder.offset_of(address, 0)) {
            if let Err(e) = mirror.window.clear(offset) {
                if self.map_log.allow() {
                    log::warn!("pci bridge {} {address}: {e}; config reads exit", self.id);
                }
            }
        }
        sync::lock(&slot.function).config_mut().detach_mirror();
    }

    fn unmap_all(&self, slot: &mut Slot) {
        let ctx = MapCtx {
            id: &self.id,
            mmio: &self.mmio,
            apertures: &self.apertures,
            log: &self.map_log,
        };
        for bar in slot.bars.iter_mut() {
            bar.want = None;
            if let Some(m) = bar.mapped.take() {
                ctx.unmap(m);
            }
        }
    }

    fn note_bad(&mut self, why: BadAccess, offset: u64, len: usize, write: bool) {
        self.bad_accesses += 1;
        if self.bad_log.allow() {
            log::warn!(
                "pci bridge {}: bad config {} of {len} bytes at offset {offset:#x}: {why}",
                self.id,
                if write { "write" } else { "read" },
            );
        }
    }

    /// Reads `data.len()` bytes of `address`'s config space at `register`
    /// (a decoded access); `None` if no function or beyond its config space.
    fn config_read(&self, address: PciAddress, register: u16) -> Option<u32> {
        let slot = self.functions.get(&address)?;
        let mut f = sync::lock(&slot.function);
        let reg = usize::from(register);
        (reg < f.config_size()).then(|| f.read_config(reg / 4))
    }
}

impl BusDevice for PciHostBridge {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.decoder.decode(offset, data.len()) {
            Decoded::Register { address, register } => match self.config_read(address, register) {
                Some(dword) => fill_le(data, u64::from(dword >> ((register % 4) * 8))),
                None => data.fill(0xff),
            },
            Decoded::Absent => data.fill(0xff),
            Decoded::Bad(why) => {
                self.note_bad(why, offset, data.len(), false);
                data.fill(0xff);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match self.decoder.decode(offset, data.len()) {
            Decoded::Register { address, register } => {
                let Some(slot) = self.functions.get(&address) else {
                    return;
                };
                let shift = u32::from(register % 4) * 8;
                let bytes = if data.len() >= 4 {
                    u32::MAX
                } else {
                    (1u32 << (data.len() * 8)) - 1
                };
                let value = (le_value(data) as u32) << shift;
                let wrote = {
                    let mut f = sync::lock(&slot.function);
                    let reg = usize::from(register);
                    let inside = reg < f.config_size();
                    if inside {
                        f.write_config(reg / 4, value, bytes << shift);
                    }
                    inside
                };
                if wrote {
                    self.sync_bars(address);
                }
            }
            Decoded::Absent => {}
            Decoded::Bad(why) => self.note_bad(why, offset, data.len(), true),
        }
    }
}

impl Drop for PciHostBridge {
    fn drop(&mut self) {
        // The guest's view of the window goes first (its KVM slots), then
        // the functions.
        self.mirror = None;
        let mut slots = std::mem::take(&mut self.functions);
        for slot in slots.values_mut() {
            if std::mem::take(&mut slot.mirrored) {
                sync::lock(&slot.function).config_mut().detach_mirror();
            }
            self.unmap_all(slot);
            sync::lock(&slot.function).config_mut().connect_intx(None);
        }
    }
}
