//! Device description files: TOML or JSON text → [`DeviceRequest`].
//!
//! ```toml
//! kind = "pci-bridge"     # or "virtio-mmio", "uart"
//! id = "hot0"
//! bridge = "ecam"         # ecam | cam
//! bus_start = 8
//! [[device]]
//! slot = 1
//! kind = "test"
//! ```
//!
//! The text is read into a small value tree that keeps, for TOML, the byte
//! span of every value; the tree is then checked key by key, and finally the
//! request's own rules ([`DeviceRequest::validate`]) run. Every error names
//! the field (`mmio32.size`, `device[1].function`) and, for TOML (and JSON
//! syntax errors), the `file:line:column`, like cell config errors. The format
//! is documented in `docs/overlays.md`.

use super::{AttachError, DeviceRequest};
use crate::config::{
    parse_size, IvshmemConfig, Location, PciDeviceConfig, PciDeviceKind, PciHostKind,
    VirtioBackendConfig, VirtioKind, VirtioPciConfig, Window,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Name given to description text that did not come from a file.
const NO_FILE: &str = "<description>";

/// Why a device description was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct DescriptionError {
    /// Where the offending value is, when known (always for TOML; only for
    /// syntax errors in JSON).
    pub at: Option<Location>,
    /// Dotted path of the offending key (`bus_start`, `mmio64.size`,
    /// `device[0].slot`), `<root>` for the document, `<file>` for I/O.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DescriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

// ---------------------------------------------------------------------------
// The value tree

/// Any TOML or JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Datetime,
    Null,
    Array(Vec<Item>),
    Table(Vec<(String, Item)>),
}

/// A value and, when the parser tells, the bytes it was read from.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    span: Option<Range<usize>>,
    val: Val,
}

impl Item {
    fn plain(val: Val) -> Self {
        Item { span: None, val }
    }

    fn type_name(&self) -> &'static str {
        match self.val {
            Val::Bool(_) => "a boolean",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Str(_) => "a string",
            Val::Datetime => "a datetime",
            Val::Null => "null",
            Val::Array(_) => "an array",
            Val::Table(_) => "a table",
        }
    }

    /// The span of the deepest existing value along the dotted `path`
    /// (`mmio32.size`, `device[1].slot`).
    fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut item = self;
        let mut found = self.span.clone();
        for segment in path.split('.') {
            let (key, indices) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            let Val::Table(entries) = &item.val else {
                break;
            };
            let Some((_, next)) = entries.iter().find(|(k, _)| k == key) else {
                break;
            };
            item = next;
            found = item.span.clone().or(found);
            for index in indices
                .split(['[', ']'])
                .filter_map(|s| s.parse::<usize>().ok())
            {
                let Val::Array(items) = &item.val else {
                    return found;
                };
                let Some(next) = items.get(index) else {
                    return found;
                };
                item = next;
                found = item.span.clone().or(found);
            }
        }
        found
    }

    fn from_json(v: &serde_json::Value) -> Item {
        use serde_json::Value as J;
        Item::plain(match v {
            J::Null => Val::Null,
            J::Bool(b) => Val::Bool(*b),
            J::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Val::Int(i128::from(i)),
                (None, Some(u)) => Val::Int(i128::from(u)),
                _ => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Val::Str(s.clone()),
            J::Array(a) => Val::Array(a.iter().map(Item::from_json).collect()),
            J::Object(o) => Val::Table(
                o.iter()
                    .map(|(k, v)| (k.clone(), Item::from_json(v)))
                    .collect(),
            ),
        })
    }
}

// toml hands out spans through serde_spanned's private protocol: a struct
// with these names is answered with a map of start, end and the value.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
/// toml's datetimes arrive as a one-key map.
const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, ItemVisitor)
    }
}

/// The value inside a span map, read without asking for a span again.
struct Plain;

impl<'de> DeserializeSeed<'de> for Plain {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Item, E> {
        Ok(Item::plain(Val::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
        Ok(Item::plain(Val::Int(i128::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
        Ok(Item::plain(Val::Int(i128::from(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item, E> {
        Ok(Item::plain(Val::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
        Ok(Item::plain(Val::Str(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
        Ok(Item::plain(Val::Str(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
        Ok(Item::plain(Val::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Item, E> {
        Ok(Item::plain(Val::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Item::plain(Val::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Item::plain(Val::Table(Vec::new())));
        };
        if first == SPANNED_START {
            let start: usize = map.next_value()?;
            let mut end = start;
            let mut value = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == SPANNED_END {
                    end = map.next_value()?;
                } else if key == SPANNED_VALUE {
                    value = Some(map.next_value_seed(Plain)?);
                } else {
                    return Err(de::Error::unknown_field(&key, SPANNED_FIELDS));
                }
            }
            let value = value.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
            return Ok(Item {
                span: Some(start..end),
                val: value.val,
            });
        }
        if first == DATETIME_KEY {
            map.next_value::<de::IgnoredAny>()?;
            while map.next_key::<de::IgnoredAny>()?.is_some() {
                map.next_value::<de::IgnoredAny>()?;
            }
            return Ok(Item::plain(Val::Datetime));
        }
        let mut entries = vec![(first, map.next_value::<Item>()?)];
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Item>()?;
            entries.push((key, value));
        }
        Ok(Item::plain(Val::Table(entries)))
    }
}

// ---------------------------------------------------------------------------
// Checking the tree

/// The text being read, for locations.
struct Ctx<'a> {
    /// The text, when values carry spans into it (TOML).
    text: Option<&'a str>,
    file: &'a str,
    root: &'a Item,
    /// "table" (TOML) or "object" (JSON), for messages.
    table_word: &'static str,
}

impl Ctx<'_> {
    fn at(&self, span: Option<&Range<usize>>, field: &str) -> Option<Location> {
        let text = self.text?;
        let offset = span
            .map(|s| s.start)
            .or_else(|| self.root.span_of(field).map(|s| s.start))
            .unwrap_or(0);
        Some(Location::from_offset(self.file, text, offset))
    }

    fn err(
        &self,
        item: Option<&Item>,
        field: &str,
        message: impl Into<String>,
    ) -> DescriptionError {
        DescriptionError {
            at: self.at(item.and_then(|i| i.span.as_ref()), field),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// "a table" (TOML) or "an object" (JSON).
    fn a_table(&self) -> &'static str {
        if self.table_word == "object" {
            "an object"
        } else {
            "a table"
        }
    }

    fn type_name(&self, item: &Item) -> &'static str {
        match (&item.val, self.table_word) {
            (Val::Table(_), "object") => "an object",
            _ => item.type_name(),
        }
    }

    fn wrong_type(&self, item: &Item, field: &str, expected: &str) -> DescriptionError {
        self.err(
            Some(item),
            field,
            format!(
                "invalid type: {}, expected {expected}",
                self.type_name(item)
            ),
        )
    }

    fn table<'t>(&self, item: &'t Item, field: &str) -> Result<Table<'t>, DescriptionError> {
        match &item.val {
            Val::Table(entries) => Ok(Table {
                entries,
                item,
                prefix: if field == "<root>" {
                    String::new()
                } else {
                    field.to_string()
                },
            }),
            _ => Err(self.wrong_type(item, field, self.a_table())),
        }
    }

    fn string<'t>(&self, item: &'t Item, field: &str) -> Result<&'t str, DescriptionError> {
        match &item.val {
            Val::Str(s) => Ok(s),
            _ => Err(self.wrong_type(item, field, "a string")),
        }
    }

    fn int(&self, item: &Item, field: &str) -> Result<i128, DescriptionError> {
        match item.val {
            Val::Int(n) => Ok(n),
            _ => Err(self.wrong_type(item, field, "an integer")),
        }
    }

    /// A non-negative integer that fits in a u64.
    fn address(&self, item: &Item, field: &str) -> Result<u64, DescriptionError> {
        let n = self.int(item, field)?;
        u64::try_from(n)
            .map_err(|_| self.err(Some(item), field, format!("must not be negative, got {n}")))
    }

    /// An integer in `range`, or `message(n)`.
    fn ranged<T: TryFrom<i128>>(
        &self,
        item: &Item,
        field: &str,
        message: impl Fn(i128) -> String,
    ) -> Result<T, DescriptionError> {
        let n = self.int(item, field)?;
        T::try_from(n).map_err(|_| self.err(Some(item), field, message(n)))
    }

    /// Integer bytes or a size string (`"16M"`), as in cell configs.
    fn size(&self, item: &Item, field: &str) -> Result<u64, DescriptionError> {
        match &item.val {
            Val::Int(n) => u64::try_from(*n)
                .map_err(|_| self.err(Some(item), field, format!("must not be negative, got {n}"))),
            Val::Str(s) => parse_size(s)
                .map_err(|e| self.err(Some(item), field, format!("invalid size {s:?}: {e}"))),
            _ => Err(self.wrong_type(
                item,
                field,
                "a size (integer bytes or a string such as \"16M\")",
            )),
        }
    }
}

/// A table being read.
struct Table<'t> {
    entries: &'t [(String, Item)],
    item: &'t Item,
    /// Dotted path of the table ("" for the document).
    prefix: String,
}

impl<'t> Table<'t> {
    fn field(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn get(&self, key: &str) -> Option<&'t Item> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn require(&self, ctx: &Ctx<'_>, key: &str) -> Result<&'t Item, DescriptionError> {
        self.get(key).ok_or_else(|| {
            let field = self.field(key);
            DescriptionError {
                at: ctx.at(self.item.span.as_ref(), &self.prefix),
                field,
                message: "missing required key".to_string(),
            }
        })
    }

    /// Rejects keys outside `allowed` (`what` names the table in the message).
    fn allow(&self, ctx: &Ctx<'_>, allowed: &[&str], what: &str) -> Result<(), DescriptionError> {
        if let Some((key, item)) = self
            .entries
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            let list = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ctx.err(
                Some(item),
                &self.field(key),
                format!("unknown key ({what} takes {list})"),
            ));
        }
        Ok(())
    }
}

const PCI_BRIDGE_KEYS: &[&str] = &[
    "kind",
    "id",
    "bridge",
    "bus_start",
    "bus_end",
    "config_base",
    "mmio32",
    "mmio64",
    "device",
];
const VIRTIO_KEYS: &[&str] = &[
    "kind",
    "id",
    "virtio",
    "base",
    "irq",
    "path",
    "read_only",
    "serial",
    "socket",
    "pty",
    "queue_size",
    "ioeventfd",
];
/// Backend keys of a virtio device.
const BACKEND_KEYS: &[&str] = &[
    "path",
    "read_only",
    "serial",
    "socket",
    "pty",
    "queue_size",
    "ioeventfd",
];
const UART_KEYS: &[&str] = &["kind", "id", "port", "irq"];
const WINDOW_KEYS: &[&str] = &["base", "size"];
const PCI_DEVICE_KEYS: &[&str] = &[
    "slot",
    "function",
    "kind",
    "region",
    "peer_id",
    "max_peers",
    "rw_size",
    "output_size",
    "virtio",
    "path",
    "read_only",
    "serial",
    "socket",
    "pty",
    "queue_size",
    "ioeventfd",
];
const IVSHMEM_KEYS: &[&str] = &["region", "peer_id", "max_peers", "rw_size", "output_size"];

fn choice<T: Copy>(
    ctx: &Ctx<'_>,
    item: &Item,
    field: &str,
    options: &[(&str, T)],
) -> Result<T, DescriptionError> {
    let s = ctx.string(item, field)?;
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
        return Ok(*v);
    }
    let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
    let expected = match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    Err(ctx.err(
        Some(item),
        field,
        format!("unknown kind {s:?}, expected {expected}"),
    ))
}

fn irq(ctx: &Ctx<'_>, item: &Item, field: &str) -> Result<u32, DescriptionError> {
    ctx.ranged(item, field, |n| {
        format!("IOAPIC pin {n} does not exist (pins are 0 to 23)")
    })
}

/// `{ base = ..., size = ... }`; a missing base is 0 ("allocate").
fn window(ctx: &Ctx<'_>, item: &Item, field: &str) -> Result<Window, DescriptionError> {
    let t = ctx.table(item, field)?;
    t.allow(ctx, WINDOW_KEYS, "a window")?;
    let size = ctx.size(t.require(ctx, "size")?, &t.field("size"))?;
    let base = match t.get("base") {
        Some(b) => ctx.address(b, &t.field("base"))?,
        None => 0,
    };
    Ok(Window { base, size })
}

/// `virtio = "..."` of a description.
fn virtio_kind(ctx: &Ctx<'_>, t: &Table<'_>) -> Result<VirtioKind, DescriptionError> {
    choice(
        ctx,
        t.require(ctx, "virtio")?,
        &t.field("virtio"),
        &[
            ("rng", VirtioKind::Rng),
            ("block", VirtioKind::Block),
            ("console", VirtioKind::Console),
        ],
    )
}

/// The backend keys of a virtio device of `kind` in table `t` (as in cell
/// configs, docs/virtio.md): keys that do not apply to the kind, a block
/// device without an existing image file, two console hosts, a disk serial
/// over 20 bytes and a queue size that is not a power of two from 16 to 1024
/// are refused.
fn virtio_backend(
    ctx: &Ctx<'_>,
    t: &Table<'_>,
    kind: VirtioKind,
) -> Result<VirtioBackendConfig, DescriptionError> {
    let allowed: &[&str] = match kind {
        VirtioKind::Rng => &["queue_size", "ioeventfd"],
        VirtioKind::Block => &["path", "read_only", "serial", "queue_size", "ioeventfd"],
        VirtioKind::Console => &["path", "socket", "pty", "queue_size", "ioeventfd"],
    };
    for key in BACKEND_KEYS {
        if let Some(item) = t.get(key) {
            if !allowed.contains(key) {
                return Err(ctx.err(
                    Some(item),
                    &t.field(key),
                    format!("a {kind:?} device takes no {key:?} key").to_lowercase(),
                ));
            }
        }
    }
    let path_of = |key: &str| -> Result<Option<PathBuf>, DescriptionError> {
        t.get(key)
            .map(|v| {
                let s = ctx.string(v, &t.field(key))?;
                if s.is_empty() {
                    return Err(ctx.err(Some(v), &t.field(key), "empty path"));
                }
                Ok(PathBuf::from(s))
            })
            .transpose()
    };
    let path = path_of("path")?;
    let socket = path_of("socket")?;
    let pty = path_of("pty")?;
    if kind == VirtioKind::Block {
        let Some(image) = &path else {
            return Err(ctx.err(
                None,
                &t.field("path"),
                "missing required key (a block device needs the path of its raw disk image)",
            ));
        };
        match std::fs::metadata(image) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(ctx.err(
                    t.get("path"),
                    &t.field("path"),
                    format!("disk image {} is not a regular file", image.display()),
                ))
            }
            Err(e) => {
                return Err(ctx.err(
                    t.get("path"),
                    &t.field("path"),
                    format!("disk image {}: {e}", image.display()),
                ))
            }
        }
    }
    let hosts = ["path", "socket", "pty"];
    if kind == VirtioKind::Console {
        let named: Vec<&str> = hosts.into_iter().filter(|k| t.get(k).is_some()).collect();
        if let [_, second, ..] = named.as_slice() {
            return Err(ctx.err(
                t.get(second),
                &t.field(second),
                "a console takes one of path, socket or pty",
            ));
        }
    }
    let flag = |key: &str, default: bool| match t.get(key) {
        None => Ok(default),
        Some(item) => match item.val {
            Val::Bool(b) => Ok(b),
            _ => Err(ctx.wrong_type(item, &t.field(key), "a boolean")),
        },
    };
    let read_only = flag("read_only", false)?;
    let ioeventfd = flag("ioeventfd", true)?;
    let serial = match t.get("serial") {
        None => None,
        Some(item) => {
            let s = ctx.string(item, &t.field("serial"))?;
            if s.is_empty() || s.len() > 20 || !s.is_ascii() {
                return Err(ctx.err(
                    Some(item),
                    &t.field("serial"),
                    "a disk serial is 1 to 20 ASCII characters",
                ));
            }
            Some(s.to_string())
        }
    };
    let queue_size = match t.get("queue_size") {
        None => None,
        Some(item) => {
            let n: u16 = ctx.ranged(item, &t.field("queue_size"), |n| {
                format!("{n} is not a power of two from 16 to 1024")
            })?;
            if !n.is_power_of_two() || !(16..=1024).contains(&n) {
                return Err(ctx.err(
                    Some(item),
                    &t.field("queue_size"),
                    format!("{n} is not a power of two from 16 to 1024"),
                ));
            }
            Some(n)
        }
    };
    Ok(VirtioBackendConfig {
        path,
        read_only,
        serial,
        socket,
        pty,
        queue_size,
        ioeventfd,
    })
}

fn pci_device(
    ctx: &Ctx<'_>,
    item: &Item,
    field: &str,
) -> Result<PciDeviceConfig, DescriptionError> {
    let t = ctx.table(item, field)?;
    t.allow(ctx, PCI_DEVICE_KEYS, "a PCI device")?;
    let slot_f = t.field("slot");
    let slot: u8 = ctx.ranged(t.require(ctx, "slot")?, &slot_f, |n| {
        format!("{n} is not a PCI device number (0..=31)")
    })?;
    let function: u8 = match t.get("function") {
        Some(f) => ctx.ranged(f, &t.field("function"), |n| {
            format!("{n} is not a PCI function number (0..=7)")
        })?,
        None => 0,
    };
    let kind_f = t.field("kind");
    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Test,
        Ivshmem,
        Virtio,
    }
    let kind = choice(
        ctx,
        t.require(ctx, "kind")?,
        &kind_f,
        &[
            ("test", K::Test),
            ("ivshmem", K::Ivshmem),
            ("virtio", K::Virtio),
        ],
    )?;
    let virtio_keys: Vec<&str> = std::iter::once("virtio")
        .chain(BACKEND_KEYS.iter().copied())
        .collect();
    for (keys, owner, who) in [
        (IVSHMEM_KEYS, "ivshmem", K::Ivshmem),
        (virtio_keys.as_slice(), "virtio", K::Virtio),
    ] {
        if kind != who {
            if let Some(key) = keys.iter().find(|k| t.get(k).is_some()) {
                return Err(ctx.err(
                    t.get(key),
                    &t.field(key),
                    format!("only {owner} devices take this key"),
                ));
            }
        }
    }
    let kind = match kind {
        K::Test => PciDeviceKind::Test,
        K::Virtio => {
            let kind = virtio_kind(ctx, &t)?;
            PciDeviceKind::Virtio(VirtioPciConfig {
                kind,
                backend: virtio_backend(ctx, &t, kind)?,
            })
        }
        K::Ivshmem => {
            let region_f = t.field("region");
            let region = ctx
                .string(t.require(ctx, "region")?, &region_f)?
                .to_string();
            let max_peers: u16 = match t.get("max_peers") {
                Some(m) => ctx.ranged(m, &t.field("max_peers"), |n| {
                    format!("{n} peers; an ivshmem region has 2 to 16")
                })?,
                None => 2,
            };
            let peer_id: u16 =
                ctx.ranged(t.require(ctx, "peer_id")?, &t.field("peer_id"), |n| {
                    format!("{n} is not below max_peers ({max_peers})")
                })?;
            let mut sizes = [0u64; 2];
            for (size, key) in sizes.iter_mut().zip(["rw_size", "output_size"]) {
                if let Some(v) = t.get(key) {
                    *size = ctx.size(v, &t.field(key))?;
                }
            }
            PciDeviceKind::Ivshmem(IvshmemConfig {
                region,
                peer_id,
                max_peers,
                rw_size: sizes[0],
                output_size: sizes[1],
            })
        }
    };
    Ok(PciDeviceConfig {
        slot,
        function,
        kind,
    })
}

fn request(ctx: &Ctx<'_>) -> Result<DeviceRequest, DescriptionError> {
    let t = ctx.table(ctx.root, "<root>")?;
    #[derive(Clone, Copy)]
    enum K {
        Bridge,
        Virtio,
        Uart,
    }
    let kind = choice(
        ctx,
        t.require(ctx, "kind")?,
        "kind",
        &[
            ("pci-bridge", K::Bridge),
            ("virtio-mmio", K::Virtio),
            ("uart", K::Uart),
        ],
    )?;
    let keys = match kind {
        K::Bridge => PCI_BRIDGE_KEYS,
        K::Virtio => VIRTIO_KEYS,
        K::Uart => UART_KEYS,
    };
    let kind_name = ctx.string(t.require(ctx, "kind")?, "kind")?;
    t.allow(ctx, keys, &format!("a {kind_name} description"))?;
    let id = ctx.string(t.require(ctx, "id")?, "id")?.to_string();
    let opt_irq = |key: &str| t.get(key).map(|v| irq(ctx, v, key)).transpose();
    Ok(match kind {
        K::Bridge => {
            let kind = choice(
                ctx,
                t.require(ctx, "bridge")?,
                "bridge",
                &[("ecam", PciHostKind::Ecam), ("cam", PciHostKind::Cam)],
            )?;
            let bus = |key: &str| -> Result<Option<u8>, DescriptionError> {
                t.get(key)
                    .map(|v| ctx.ranged(v, key, |n| format!("bus numbers are 0 to 255, got {n}")))
                    .transpose()
            };
            let bus_start = bus("bus_start")?.unwrap_or(0);
            let bus_end = bus("bus_end")?.unwrap_or(bus_start);
            let config_base = t
                .get("config_base")
                .map(|v| ctx.address(v, "config_base"))
                .transpose()?;
            let mmio32 = t
                .get("mmio32")
                .map(|v| window(ctx, v, "mmio32"))
                .transpose()?;
            let mmio64 = t
                .get("mmio64")
                .map(|v| window(ctx, v, "mmio64"))
                .transpose()?;
            let mut devices = Vec::new();
            if let Some(list) = t.get("device") {
                let Val::Array(items) = &list.val else {
                    return Err(ctx.wrong_type(
                        list,
                        "device",
                        &format!("an array of {}s", ctx.table_word),
                    ));
                };
                for (i, d) in items.iter().enumerate() {
                    devices.push(pci_device(ctx, d, &format!("device[{i}]"))?);
                }
            }
            DeviceRequest::PciBridge {
                id,
                kind,
                bus_start,
                bus_end,
                config_base,
                mmio32,
                mmio64,
                devices,
            }
        }
        K::Virtio => {
            let kind = virtio_kind(ctx, &t)?;
            DeviceRequest::VirtioMmio {
                id,
                kind,
                base: t.get("base").map(|v| ctx.address(v, "base")).transpose()?,
                irq: opt_irq("irq")?,
                backend: virtio_backend(ctx, &t, kind)?,
            }
        }
        K::Uart => DeviceRequest::Uart {
            id,
            port: t
                .get("port")
                .map(|v| {
                    ctx.ranged(v, "port", |n| {
                        if n < 0 {
                            format!("must not be negative, got {n}")
                        } else {
                            format!("{n:#x} is not an I/O port (0 to 0xffff)")
                        }
                    })
                })
                .transpose()?,
            irq: opt_irq("irq")?,
        },
    })
}

/// Reads and validates a description tree.
fn finish(ctx: &Ctx<'_>) -> Result<DeviceRequest, AttachError> {
    let req = request(ctx)?;
    match req.validate() {
        Ok(()) => Ok(req),
        Err(AttachError::InvalidRequest { field, message, .. }) => {
            let span = ctx.root.span_of(&field);
            Err(DescriptionError {
                at: ctx.at(span.as_ref(), &field),
                field,
                message,
            }
            .into())
        }
        Err(other) => Err(other),
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

/// Best-effort field for a position in text that toml could not parse: the
/// key on that line, under the last table header before it.
fn field_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let t = line.trim();
        let on_line = offset < end || end == text.len();
        if let Some(rest) = t.strip_prefix('[') {
            table = rest
                .trim_matches(|c| c == '[' || c == ']' || c == ' ')
                .to_string();
        } else if on_line {
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim();
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
                {
                    return if table.is_empty() {
                        key.to_string()
                    } else {
                        format!("{table}.{key}")
                    };
                }
            }
        }
        if on_line {
            break;
        }
        start = end;
    }
    if table.is_empty() {
        "<root>".to_string()
    } else {
        table
    }
}

fn from_toml(text: &str, file: &str) -> Result<DeviceRequest, AttachError> {
    let root: Item = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        DescriptionError {
            at: Some(Location::from_offset(file, text, offset)),
            field: field_at(text, offset),
            message: format!("invalid TOML: {}", one_line(e.message())),
        }
    })?;
    finish(&Ctx {
        text: Some(text),
        file,
        root: &root,
        table_word: "table",
    })
}

fn from_json(text: &str, file: &str) -> Result<DeviceRequest, AttachError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DescriptionError {
        at: Some(Location {
            file: file.to_string(),
            line: e.line().max(1),
            column: e.column().max(1),
        }),
        field: "<root>".to_string(),
        message: format!("invalid JSON: {e}"),
    })?;
    from_json_tree(&value, file)
}

fn from_json_tree(value: &serde_json::Value, file: &str) -> Result<DeviceRequest, AttachError> {
    let root = Item::from_json(value);
    finish(&Ctx {
        text: None,
        file,
        root: &root,
        table_word: "object",
    })
}

impl DeviceRequest {
    /// Reads a TOML device description. Errors are
    /// [`AttachError::Description`] (`<description>:line:column: field: message`)
    /// or, never in practice, another variant from validation.
    pub fn from_toml_str(text: &str) -> Result<Self, AttachError> {
        from_toml(text, NO_FILE)
    }

    /// Reads a JSON device description (same keys as TOML). Errors name the
    /// field; syntax errors also the line and column.
    pub fn from_json_str(text: &str) -> Result<Self, AttachError> {
        from_json(text, NO_FILE)
    }

    /// Reads a device description already parsed as JSON (as the control API
    /// receives it).
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self, AttachError> {
        from_json_tree(value, NO_FILE)
    }

    /// Reads a description file: JSON if its name ends in `.json`, TOML
    /// otherwise. Locations name the file.
    pub fn load(path: &Path) -> Result<Self, AttachError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DescriptionError {
            at: None,
            field: "<file>".to_string(),
            message: format!("cannot read {file}: {e}"),
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            from_json(&text, &file)
        } else {
            from_toml(&text, &file)
        }
    }
}
