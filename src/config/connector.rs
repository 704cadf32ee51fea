//! `[[connector]]` tables: where add-on boards plug into a cell
//! (docs/addons.md). A connector's id is also its node's device-tree label,
//! so it must be a label a DTS file can write (`&j1`).

use super::error::ConfigError;
use super::model::ConnectorConfig;
use super::raw::{RawConnector, Sp};
use super::size::human_size;
use super::validate::{Ctx, Spans};
use crate::platform::{
    DEFAULT_CONNECTOR_IRQS, DEFAULT_CONNECTOR_SIZE, MAX_CONNECTOR_IRQS, MAX_CONNECTOR_SIZE,
    MIN_CONNECTOR_SIZE,
};

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
