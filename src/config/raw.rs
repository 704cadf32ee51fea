//! The serde-level view of a cell file. Every value carries the byte span it
//! was read from, so that validation can point at the offending line.
//!
//! Nothing here is validated beyond TOML syntax, key names and value types:
//! required keys are `Option`s (a missing one is reported by validation with a
//! precise message), integers are `i64` (TOML's integer type) and enumerations
//! are strings.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

/// A byte range in the config text; `None` for the rare values toml cannot
/// place (implicit tables created by dotted keys or `[a.b]` headers).
pub(crate) type Span = Option<Range<usize>>;

/// A value and where it came from.
///
/// Works like `toml::Spanned`, but does not fail on values without a span:
/// those come back with `span: None` instead of a confusing type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sp<T> {
    pub span: Span,
    pub value: T,
}

// The private protocol toml uses to hand out spans (see `serde_spanned`).
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, SpVisitor(PhantomData))
    }
}

/// A spanned value serializes as the value alone (a description sent to a
/// running cell is the table as written, without positions).
impl<T: Serialize> Serialize for Sp<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

struct SpVisitor<T>(PhantomData<T>);

fn unspanned<T>(value: T) -> Sp<T> {
    Sp { span: None, value }
}

macro_rules! forward_scalars {
    ($($method:ident($ty:ty) => $de:ty;)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            T::deserialize(<$de>::new(v)).map(unspanned)
        }
    )*};
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpVisitor<T> {
    type Value = Sp<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    forward_scalars! {
        visit_bool(bool) => de::value::BoolDeserializer<E>;
        visit_i64(i64) => de::value::I64Deserializer<E>;
        visit_u64(u64) => de::value::U64Deserializer<E>;
        visit_f64(f64) => de::value::F64Deserializer<E>;
        visit_str(&str) => de::value::StrDeserializer<'_, E>;
        visit_string(String) => de::value::StringDeserializer<E>;
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(unspanned)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let first: Option<Sp<String>> = map.next_key()?;
        match first {
            Some(key) if key.span.is_none() && key.value == SPANNED_START => {
                let start: usize = map.next_value()?;
                let mut end = start;
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == SPANNED_END {
                        end = map.next_value()?;
                    } else if key == SPANNED_VALUE {
                        value = Some(map.next_value::<T>()?);
                    } else {
                        return Err(de::Error::unknown_field(&key, SPANNED_FIELDS));
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
                Ok(Sp {
                    span: Some(start..end),
                    value,
                })
            }
            // A table without a span: hand it to `T` with its first key put back.
            first => T::deserialize(de::value::MapAccessDeserializer::new(Replay { first, map }))
                .map(unspanned),
        }
    }
}

/// A map whose first key has already been read.
struct Replay<A> {
    first: Option<Sp<String>>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(key) => seed
                .deserialize(KeyReplay::<A::Error> {
                    key,
                    error: PhantomData,
                })
                .map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Deserializes a key read earlier, span included if it had one.
struct KeyReplay<E> {
    key: Sp<String>,
    error: PhantomData<E>,
}

impl<'de, E: de::Error> Deserializer<'de> for KeyReplay<E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_string(self.key.value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, E> {
        match self.key.span {
            Some(span) if name == SPANNED_NAME && fields == SPANNED_FIELDS => {
                visitor.visit_map(SpanMap::<E> {
                    span,
                    value: Some(self.key.value),
                    step: 0,
                    error: PhantomData,
                })
            }
            _ => visitor.visit_string(self.key.value),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Speaks the span protocol for a replayed key.
struct SpanMap<E> {
    span: Range<usize>,
    value: Option<String>,
    step: u8,
    error: PhantomData<E>,
}

impl<'de, E: de::Error> MapAccess<'de> for SpanMap<E> {
    type Error = E;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
        let key = match self.step {
            0 => SPANNED_START,
            1 => SPANNED_END,
            2 => SPANNED_VALUE,
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, E> {
        self.step = self.step.saturating_add(1);
        match self.step {
            1 => seed.deserialize(self.span.start.into_deserializer()),
            2 => seed.deserialize(self.span.end.into_deserializer()),
            _ => seed.deserialize(self.value.take().unwrap_or_default().into_deserializer()),
        }
    }
}

/// Any TOML document, reduced to its shape and spans. Used to name the
/// dotted field path of an error toml reports only by byte span.
#[derive(Debug)]
pub(crate) enum Node {
    /// A string, number, boolean or datetime.
    Leaf,
    /// A table, keys in document order.
    Table(Vec<(Sp<String>, Sp<Node>)>),
    /// An array (including arrays of tables).
    Array(Vec<Sp<Node>>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Node::Table(entries))
            }
        }

        d.deserialize_any(NodeVisitor)
    }
}

fn contains(outer: &Span, inner: &Range<usize>) -> Option<usize> {
    let outer = outer.as_ref()?;
    (outer.start <= inner.start && inner.end <= outer.end)
        .then(|| outer.end.saturating_sub(outer.start))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Keeps the tightest (then deepest) candidate path.
fn offer(best: &mut Option<(usize, String)>, len: Option<usize>, path: &str) {
    let Some(len) = len else {
        return;
    };
    let better = match best {
        None => true,
        Some((best_len, best_path)) => {
            len < *best_len || (len == *best_len && path.len() > best_path.len())
        }
    };
    if better {
        *best = Some((len, path.to_string()));
    }
}

impl Node {
    /// The dotted path (`pci_bridge[0].mmio32.size`) of the tightest key or
    /// value whose span contains `span`, or `None` for the document itself.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<String> {
        let mut best: Option<(usize, String)> = None;
        self.collect(span, "", &mut best);
        best.map(|(_, path)| path)
    }

    fn collect(&self, span: &Range<usize>, prefix: &str, best: &mut Option<(usize, String)>) {
        match self {
            Node::Leaf => {}
            Node::Table(entries) => {
                for (key, value) in entries {
                    let path = join(prefix, &key.value);
                    offer(best, contains(&key.span, span), &path);
                    offer(best, contains(&value.span, span), &path);
                    value.value.collect(span, &path, best);
                }
            }
            Node::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{prefix}[{i}]");
                    offer(best, contains(&item.span, span), &path);
                    item.value.collect(span, &path, best);
                }
            }
        }
    }

    /// The byte offset of the deepest existing part of `path` (its value if it
    /// has a span, else its key), for pointing at things without a span.
    pub(crate) fn position_of(&self, path: &str) -> Option<usize> {
        let mut node = self;
        let mut found = None;
        for segment in path.split('.') {
            let (name, indices) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            let Node::Table(entries) = node else {
                return found;
            };
            let Some((key, value)) = entries.iter().find(|(k, _)| k.value == name) else {
                return found;
            };
            found = value
                .span
                .as_ref()
                .or(key.span.as_ref())
                .map(|s| s.start)
                .or(found);
            node = &value.value;
            for index in indices
                .split(['[', ']'])
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse::<usize>().ok())
            {
                let Node::Array(items) = node else {
                    return found;
                };
                let Some(item) = items.get(index) else {
                    return found;
                };
                found = item.span.as_ref().map(|s| s.start).or(found);
                node = &item.value;
            }
        }
        found
    }
}

/// Best-effort dotted path for a position in text that is not valid TOML:
/// the last table header before it plus the key on its line, if any.
pub(crate) fn textual_path(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let t = line.trim();
        let is_error_line = offset < end || end == text.len();
        if let Some(rest) = t.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or(rest).trim().to_string();
            let index = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            table = format!("{name}[{index}]");
        } else if let Some(rest) = t.strip_prefix('[') {
            table = rest.split(']').next().unwrap_or(rest).trim().to_string();
        } else if is_error_line {
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim();
                let plausible = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
                if plausible {
                    return join(&table, key);
                }
            }
        }
        if is_error_line {
            break;
        }
        start = end;
    }
    table
}

/// A size: integer bytes or a size string (parsed during validation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size (integer bytes or a string such as \"256M\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                i64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }

        d.deserialize_any(SizeVisitor)
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCell {
    pub name: Option<Sp<String>>,
    pub cpus: Option<Sp<RawCpus>>,
    pub memory: Option<Sp<Vec<Sp<RawMemory>>>>,
    pub kernel: Option<Sp<RawKernel>>,
    pub console: Option<Sp<RawConsole>>,
    pub virtio_mmio: Option<Sp<Vec<Sp<RawVirtioMmio>>>>,
    pub pci_bridge: Option<Sp<Vec<Sp<RawPciBridge>>>>,
    pub uart: Option<Sp<Vec<Sp<RawUart>>>>,
    pub connector: Option<Sp<Vec<Sp<RawConnector>>>>,
}

/// `[[connector]]`: where add-on boards plug in.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Sp<RawSize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irqs: Option<Sp<i64>>,
}

/// A connector description file: one `[[connector]]` table.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnectorFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<Sp<Vec<Sp<RawConnector>>>>,
}

/// An add-on board's description file (docs/addons.md).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAddon {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtio_mmio: Option<Sp<Vec<Sp<RawVirtioMmio>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_bridge: Option<Sp<Vec<Sp<RawPciBridge>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uart: Option<Sp<Vec<Sp<RawUart>>>>,
}

/// A device description file: one device table in the cell file's syntax.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevices {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtio_mmio: Option<Sp<Vec<Sp<RawVirtioMmio>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_bridge: Option<Sp<Vec<Sp<RawPciBridge>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uart: Option<Sp<Vec<Sp<RawUart>>>>,
}

/// `[[uart]]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Sp<String>>,
}

/// `[cpus]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCpus {
    pub count: Option<Sp<i64>>,
    pub pin: Option<Sp<Vec<Sp<i64>>>>,
    pub shared: Option<Sp<bool>>,
}

/// `[[memory]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMemory {
    pub base: Option<Sp<i64>>,
    pub size: Option<Sp<RawSize>>,
    pub prefault: Option<Sp<bool>>,
    pub lock: Option<Sp<bool>>,
}

/// `[kernel]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKernel {
    pub path: Option<Sp<String>>,
    pub initrd: Option<Sp<String>>,
    pub cmdline: Option<Sp<String>>,
    pub format: Option<Sp<String>>,
    pub acpi: Option<Sp<bool>>,
}

/// `[console]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsole {
    pub output: Option<Sp<String>>,
    pub path: Option<Sp<String>>,
    pub input: Option<Sp<String>>,
}

/// `[[virtio_mmio]]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtioMmio {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<Sp<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ioeventfd: Option<Sp<bool>>,
}

impl RawVirtioMmio {
    pub fn backend_keys(&self) -> RawBackendKeys<'_> {
        RawBackendKeys {
            path: self.path.as_ref(),
            read_only: self.read_only.as_ref(),
            serial: self.serial.as_ref(),
            socket: self.socket.as_ref(),
            pty: self.pty.as_ref(),
            queue_size: self.queue_size.as_ref(),
            ioeventfd: self.ioeventfd.as_ref(),
        }
    }
}

/// The backend keys of a virtio device, wherever it is declared.
pub(crate) struct RawBackendKeys<'a> {
    pub path: Option<&'a Sp<String>>,
    pub read_only: Option<&'a Sp<bool>>,
    pub serial: Option<&'a Sp<String>>,
    pub socket: Option<&'a Sp<String>>,
    pub pty: Option<&'a Sp<String>>,
    pub queue_size: Option<&'a Sp<i64>>,
    pub ioeventfd: Option<&'a Sp<bool>>,
}

/// `[[pci_bridge]]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPciBridge {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_base: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_start: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_end: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmio32: Option<Sp<RawWindow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmio64: Option<Sp<RawWindow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Sp<Vec<Sp<RawPciDevice>>>>,
}

/// `[[pci_bridge.device]]`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPciDevice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_peers: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rw_size: Option<Sp<RawSize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_size: Option<Sp<RawSize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtio: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<Sp<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Sp<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ioeventfd: Option<Sp<bool>>,
}

impl RawPciDevice {
    pub fn backend_keys(&self) -> RawBackendKeys<'_> {
        RawBackendKeys {
            path: self.path.as_ref(),
            read_only: self.read_only.as_ref(),
            serial: self.serial.as_ref(),
            socket: self.socket.as_ref(),
            pty: self.pty.as_ref(),
            queue_size: self.queue_size.as_ref(),
            ioeventfd: self.ioeventfd.as_ref(),
        }
    }
}

/// `{ base = ..., size = ... }`
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Sp<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Sp<RawSize>>,
}
