//! `[[connector]]` tables: where add-on boards plug into a cell
//! (docs/addons.md), in a cell file or alone in a connector description
//! (`cellvm connect`, a connector attached at run time). A connector's id is
//! also its node's device-tree label, so it must be a label a DTS file can
//! write (`&j1`).

use super::error::ConfigError;
use super::model::ConnectorConfig;
use super::raw::{RawConnector, RawConnectorFile, Sp};
use super::size::human_size;
use super::source::{parse_toml, read_source, source_dir};
use super::validate::{Ctx, Spans};
use crate::platform::{
    DEFAULT_CONNECTOR_IRQS, DEFAULT_CONNECTOR_SIZE, MAX_CONNECTOR_IRQS, MAX_CONNECTOR_SIZE,
    MIN_CONNECTOR_SIZE,
};
use std::path::Path;

/// Whether `s` is a connector id: 1-31 characters of `[a-z0-9_]` starting
/// with a letter (a DTS label, and part of no other name).
pub fn valid_connector_id(s: &str) -> bool {
    (1..=31).contains(&s.len())
        && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Validates the `i`th `[[connector]]` table.
pub(super) fn connector(
    ctx: &Ctx<'_>,
    i: usize,
    c: &Sp<RawConnector>,
    spans: &mut Spans,
) -> Result<ConnectorConfig, ConfigError> {
    let f = format!("connector[{i}]");
    let v = &c.value;
    let Some(id_v) = &v.id else {
        return Err(ctx.missing(&c.span, &format!("{f}.id"), ""));
    };
    if !valid_connector_id(&id_v.value) {
        return Err(ctx.invalid(
            &id_v.span,
            &format!("{f}.id"),
            format!(
                "must be 1-31 characters of a-z, 0-9 and '_' starting with a letter \
                 (it is the connector's device-tree label), got {:?}",
                id_v.value
            ),
        ));
    }
    let size = match &v.size {
        None => DEFAULT_CONNECTOR_SIZE,
        Some(s) => {
            let field = format!("{f}.size");
            let size = ctx.size(s, &field)?;
            if !size.is_power_of_two() || !(MIN_CONNECTOR_SIZE..=MAX_CONNECTOR_SIZE).contains(&size)
            {
                return Err(ctx.invalid(
                    &s.span,
                    &field,
                    format!(
                        "must be a power of two from {} to {}, got {}",
                        human_size(MIN_CONNECTOR_SIZE),
                        human_size(MAX_CONNECTOR_SIZE),
                        human_size(size)
                    ),
                ));
            }
            size
        }
    };
    let irqs = match &v.irqs {
        None => DEFAULT_CONNECTOR_IRQS,
        Some(n) => u32::try_from(n.value)
            .ok()
            .filter(|n| (1..=MAX_CONNECTOR_IRQS).contains(n))
            .ok_or_else(|| {
                ctx.invalid(
                    &n.span,
                    &format!("{f}.irqs"),
                    format!("must be 1 to {MAX_CONNECTOR_IRQS}, got {}", n.value),
                )
            })?,
    };
    spans.device(ctx, &f, (&id_v.value, &id_v.span), &c.span, &[]);
    Ok(ConnectorConfig {
        id: id_v.value.clone(),
        size,
        irqs,
    })
}

/// A validated connector description (one `[[connector]]` table on its own,
/// for `cellvm connect`), and the table as written (to send to a running
/// cell, which validates it again with the same code).
#[derive(Debug)]
pub struct ConnectorDescription {
    /// The connector.
    pub connector: ConnectorConfig,
    raw: RawConnectorFile,
}

impl ConnectorDescription {
    /// The table as a value tree of the file's shape.
    pub fn to_value(&self) -> Result<toml::Value, toml::ser::Error> {
        toml::Value::try_from(&self.raw)
    }
}

/// Reads and validates a connector description file: exactly one
/// `[[connector]]` table, checked by the cell file's code.
pub fn load_connector(path: &Path) -> Result<ConnectorDescription, ConfigError> {
    let text = read_source(path)?;
    let file = path.display().to_string();
    let (tree, raw) = parse_toml::<RawConnectorFile>(&text, &file)?;
    let ctx = Ctx {
        text: &text,
        file,
        tree: &tree,
        base_dir: Some(source_dir(path)),
        check_files: false,
    };
    let connector = only_connector(&ctx, &raw)?;
    Ok(ConnectorDescription { connector, raw })
}

/// Validates a connector description received as a value tree (as the
/// control API receives it); `file` names it in messages.
pub fn connector_from_value(
    value: toml::Value,
    file: &str,
) -> Result<ConnectorConfig, ConfigError> {
    use serde::Deserialize;
    let tree = super::raw::Node::Table(Vec::new());
    let raw = RawConnectorFile::deserialize(value)
        .map_err(|e| super::validate::schema_error("", file, &tree, &e))?;
    let ctx = Ctx {
        text: "",
        file: file.to_string(),
        tree: &tree,
        base_dir: None,
        check_files: false,
    };
    only_connector(&ctx, &raw)
}

fn only_connector(ctx: &Ctx<'_>, raw: &RawConnectorFile) -> Result<ConnectorConfig, ConfigError> {
    let tables: Vec<_> = raw.connector.iter().flat_map(|v| &v.value).collect();
    match tables.as_slice() {
        [c] => connector(ctx, 0, c, &mut Spans::default()),
        _ => Err(ctx.invalid(
            &None,
            "<root>",
            format!(
                "a connector description holds exactly one [[connector]] table, found {}",
                tables.len()
            ),
        )),
    }
}
