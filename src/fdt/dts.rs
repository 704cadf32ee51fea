//! User-written device-tree overlay sources (`.dtso`), as an add-on board's
//! description carries them (docs/addons.md).
//!
//! The accepted form is dtc's overlay syntax with label targets:
//!
//! ```dts
//! /dts-v1/;
//! /plugin/;
//!
//! &j1 {                       // or &{/connector-bus@d1000000}
//!     osc: clock-24m {
//!         compatible = "fixed-clock";
//!         #clock-cells = <0>;
//!         clock-frequency = <24000000>;
//!     };
//! };
//! ```
//!
//! Node and property syntax is the template subset (`template.rs`):
//! `<cells>` with `&label` references, strings, `[bytes]`, labels on nodes.
//! Not supported, each reported at its line and column: the preprocessor
//! (`#include`, macros: cellvm runs no cpp), `/bits/`, expressions,
//! character literals, path references outside `< >`, `/delete-node/` and
//! `/delete-property/`, a root node (`/ { fragment@0 { ... }; };`: write
//! `&label { ... };` blocks instead), `/memreserve/`.
//!
//! Errors are [`FdtError::Syntax`] with the file name, line and column;
//! [`located`] prints one as `file:line:column: message`. The parser never
//! panics, whatever the input.

use super::template;
use super::tree::Node;
use super::FdtError;

/// Where a block of the overlay goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `&label { ... };`: the node carrying `label` in the cell's tree.
    Label(String),
    /// `&{/path} { ... };`: the node at that path.
    Path(String),
}

/// One `&target { ... };` block of an overlay source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFragment {
    /// The node the block applies to.
    pub target: Target,
    /// 1-based line of the `&`.
    pub line: usize,
    /// 1-based column of the `&`.
    pub column: usize,
    /// The block's body as a node (named after the target): its properties
    /// are set on the target, its children added under it.
    pub body: Node,
}

/// Parses the overlay source `text`; `file` names it in errors.
pub fn parse_overlay_source(file: &str, text: &str) -> Result<Vec<SourceFragment>, FdtError> {
    template::parse_overlay(file, text)
}

/// `error` as `file:line:column: message` for a syntax error, its own
/// message otherwise.
pub fn located(error: &FdtError) -> String {
    match error {
        FdtError::Syntax {
            template,
            line,
            column,
            kind,
            ..
        } => format!("{template}:{line}:{column}: {kind}"),
        other => other.to_string(),
    }
}
