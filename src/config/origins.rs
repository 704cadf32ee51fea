//! Where the entries of a cell file were written, kept with the validated
//! config so that stages after validation (placement in `layout`) can point
//! an error at the right `file:line:column` and key.

use super::error::Location;

/// One place in a config: its location and dotted field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Where it is in the text.
    pub at: Location,
    /// Its dotted path (`virtio_mmio[1].irq`).
    pub field: String,
}

/// The tables and placement keys of one device entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceOrigin {
    id: String,
    table: Origin,
    keys: Vec<(&'static str, Origin)>,
}

/// The origins of a cell file's RAM regions and device entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Per RAM region, in the validated (sorted) order.
    memory: Vec<Origin>,
    devices: Vec<DeviceOrigin>,
    /// Other fields that checks across cells point at (`name`,
    /// `cpus.pin[0]`, `virtio_mmio[1].path`, `pci_bridge[0].device[2].region`).
    fields: Vec<Origin>,
}

impl Origins {
    /// The `index`th RAM region of the validated config (sorted by base).
    pub fn memory(&self, index: usize) -> Option<&Origin> {
        self.memory.get(index)
    }

    /// The key `key` of the device `id`: where it was written, or, for a
    /// key left to its default, the device's table (named `table.key`; an
    /// empty key names the table itself). The last entry with that id wins:
    /// of two devices sharing an id, the later one is at fault.
    pub fn device(&self, id: &str, key: &str) -> Option<Origin> {
        let dev = self.devices.iter().rev().find(|d| d.id == id)?;
        if let Some((_, o)) = dev.keys.iter().find(|(k, _)| *k == key) {
            return Some(o.clone());
        }
        let field = if key.is_empty() {
            dev.table.field.clone()
        } else {
            format!("{}.{key}", dev.table.field)
        };
        Some(Origin {
            at: dev.table.at.clone(),
            field,
        })
    }

    /// Where the field `path` (dotted, as in error messages) was written, if
    /// it was recorded: the cell's `name`, `cpus.pin[i]`, `cpus.shared`,
    /// block devices' `path` and ivshmem functions' `region`, `peer_id`,
    /// `max_peers`, `rw_size` and `output_size`.
    pub fn field(&self, path: &str) -> Option<&Origin> {
        self.fields.iter().find(|o| o.field == path)
    }

    pub(crate) fn add_field(&mut self, origin: Origin) {
        self.fields.push(origin);
    }

    pub(crate) fn set_memory(&mut self, sorted: Vec<Origin>) {
        self.memory = sorted;
    }

    pub(crate) fn add_device(
        &mut self,
        id: &str,
        table: Origin,
        keys: Vec<(&'static str, Origin)>,
    ) {
        self.devices.push(DeviceOrigin {
            id: id.to_string(),
            table,
            keys,
        });
    }
}
