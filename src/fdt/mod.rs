//! The cell's device tree: validated [`CellConfig`] + [`CellLayout`] → DTB.
//!
//! The tree is assembled from small DTS-subset templates in `fdt-templates/`
//! (compiled in with `include_str!`), one per kind of node:
//!
//! 1. [`template`] substitutes `${name}` placeholders and parses the result
//!    into a [`Node`];
//! 2. [`base`](build_base_tree) instantiates the templates for everything the
//!    config and layout describe and hangs them under the root;
//! 3. [`emit`] resolves `&label` references to phandles and writes the DTB
//!    with vm-fdt.
//!
//! A [`Node`] built by one of the `*_node` functions is self-contained: its
//! references to other nodes (such as `<&ioapic>`) stay symbolic until it is
//! emitted, so the same node can go into the base tree (references resolved
//! against the whole tree) or, later, into an overlay fragment (references
//! outside the fragment recorded as fixups, see [`Node::references`]).
//!
//! See `docs/device-tree.md` for what goes in the tree and why.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
mod base;
pub mod dts;
pub mod emit;
pub mod overlay;
pub mod template;
pub mod tree;
#[cfg(not(target_arch = "aarch64"))]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(not(target_arch = "aarch64"))]
use x86_64 as arch;

#[cfg(test)]
mod dts_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod overlay_tests;

pub use arch::uart_path;
pub use base::{
    boot_timer_node, channel_node, connector_node, debug_exit_node, pci_host_node, templates,
    uart_node, virtio_mmio_node, IOAPIC_LABEL, MSI_LABEL,
};
pub use template::{Template, Value, Vars};
pub use tree::{Cell, Chunk, Node, Phandles, Property, Reference};
#[cfg(not(target_arch = "aarch64"))]
pub use x86_64::ioapic_node;

use crate::config::CellConfig;
use crate::layout::CellLayout;
use thiserror::Error;

/// Builds the cell's base device tree (labels and references unresolved).
pub fn build_base_tree(cfg: &CellConfig, layout: &CellLayout) -> Result<Node, FdtError> {
    base::build(cfg, layout)
}

/// Builds the cell's base device tree and serialises it as a DTB.
pub fn build_base_dtb(cfg: &CellConfig, layout: &CellLayout) -> Result<Vec<u8>, FdtError> {
    emit::to_dtb(&build_base_tree(cfg, layout)?)
}

/// Errors from building or emitting a device tree.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FdtError {
    /// A template uses a placeholder for which no value was given.
    #[error("template {template}, line {line}: no value for placeholder ${{{name}}}")]
    MissingPlaceholder {
        /// Template name.
        template: String,
        /// Placeholder name.
        name: String,
        /// 1-based line of the placeholder in the template.
        line: usize,
    },
    /// A value was given for a placeholder the template does not use.
    #[error("template {template}: value given for unknown placeholder ${{{name}}}")]
    UnknownPlaceholder {
        /// Template name.
        template: String,
        /// Placeholder name.
        name: String,
    },
    /// The template text (after substitution) is not valid in the DTS subset.
    #[error(
        "template {template}, line {line}{}: {kind}",
        placeholder.as_ref().map(|p| format!(" (in the value of ${{{p}}})")).unwrap_or_default()
    )]
    Syntax {
        /// Template name.
        template: String,
        /// 1-based line in the template.
        line: usize,
        /// 1-based column (in characters) of the expanded text: the
        /// template's own column unless the error is in a placeholder's
        /// value, and always the file's column for a DTS file
        /// ([`dts::parse_overlay_source`]).
        column: usize,
        /// The placeholder whose value contained the error, if it was in one.
        placeholder: Option<String>,
        /// What is wrong.
        kind: SyntaxError,
    },
    /// A node already has a child of that name.
    #[error("node {parent} already has a child named {name}")]
    DuplicateNode {
        /// Name of the parent node.
        parent: String,
        /// Name of the duplicate child.
        name: String,
    },
    /// A node already has a property of that name.
    #[error("node {node} already has a property named {name}")]
    DuplicateProperty {
        /// Name of the node.
        node: String,
        /// Name of the duplicate property.
        name: String,
    },
    /// Two nodes carry the same label.
    #[error("label {label} is on both {first} and {second}")]
    DuplicateLabel {
        /// The label.
        label: String,
        /// Path of the first node.
        first: String,
        /// Path of the second node.
        second: String,
    },
    /// A node sets `phandle` (or `linux,phandle`) itself; phandles come from labels only.
    #[error("{path}: explicit {property} property (phandles are assigned from labels)")]
    ExplicitPhandle {
        /// Node path.
        path: String,
        /// The offending property name.
        property: String,
    },
    /// A property references a label that no node in the tree carries.
    #[error("{path}: property {property} references unknown label &{label}")]
    UnresolvedReference {
        /// Node path.
        path: String,
        /// Property name.
        property: String,
        /// The missing label.
        label: String,
    },
    /// The `__symbols__` node could not be added (a bug).
    #[error("adding __symbols__ to the tree: {0}")]
    Symbols(String),
    /// Only a root node (named `/`) can be emitted as a whole DTB.
    #[error("cannot emit node {0} as a device tree: it is not a root node (/)")]
    NotRoot(String),
    /// A node the base tree always has is missing (a bug).
    #[error("the base tree has no {0} node")]
    MissingNode(&'static str),
    /// vm-fdt refused a node or property.
    #[error("writing {path}: {source}")]
    Writer {
        /// Path of the node (or node/property) being written.
        path: String,
        /// The vm-fdt error.
        #[source]
        source: vm_fdt::Error,
    },
}

/// What is wrong with a template's text.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SyntaxError {
    /// A character that cannot appear here.
    #[error("unexpected {found:?}, expected {expected}")]
    Unexpected {
        /// The character found.
        found: char,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The text ended too early.
    #[error("unexpected end of template, expected {0}")]
    UnexpectedEnd(&'static str),
    /// Something after the node's closing `};`.
    #[error("unexpected {0:?} after the end of the node")]
    TrailingInput(char),
    /// `/*` without `*/`.
    #[error("unterminated /* comment")]
    UnterminatedComment,
    /// A string literal without its closing quote (on the same line).
    #[error("unterminated string literal")]
    UnterminatedString,
    /// An unknown or invalid escape sequence in a string.
    #[error("invalid escape sequence \\{0} in string")]
    BadEscape(String),
    /// A NUL character in a string (device-tree strings are NUL-terminated).
    #[error("NUL character in string")]
    NulInString,
    /// A cell value that is not a decimal or `0x` hexadecimal number.
    #[error("invalid number {0:?} (use decimal or 0x-prefixed hexadecimal)")]
    BadNumber(String),
    /// A cell value above `0xffffffff`.
    #[error("number {0} does not fit in a 32-bit cell")]
    NumberTooLarge(String),
    /// Invalid `[ ]` byte-string contents.
    #[error("invalid byte string element {0:?} (use pairs of hex digits)")]
    BadBytes(String),
    /// A node name outside `name[@unit-address]` with DT characters.
    #[error("invalid node name {0:?}")]
    BadNodeName(String),
    /// A property name outside the DT property-name characters.
    #[error("invalid property name {0:?}")]
    BadPropertyName(String),
    /// A label outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid label {0:?}")]
    BadLabel(String),
    /// `${` without a valid `name}`.
    #[error("malformed placeholder (expected ${{name}} with name [A-Za-z_][A-Za-z0-9_]*)")]
    BadPlaceholder,
    /// Nodes nested deeper than the parser allows.
    #[error("nodes nested more than {0} deep")]
    TooDeep(usize),
    /// Two properties of the same name in one node.
    #[error("duplicate property {0}")]
    DuplicateProperty(String),
    /// Two child nodes of the same name in one node.
    #[error("duplicate node {0}")]
    DuplicateNode(String),
    /// DTS syntax that exists but the template subset does not support.
    #[error("{0} is not supported in templates")]
    Unsupported(&'static str),
    /// DTS syntax that exists but cellvm's overlay reader does not support.
    #[error("{0} is not supported")]
    UnsupportedInOverlay(&'static str),
    /// A `&{...}` target that is not an absolute path.
    #[error("invalid path {0:?} (a path reference is absolute: &{{/node@1/child}})")]
    BadPath(String),
    /// A directive the overlay file needs is missing.
    #[error("expected {0}")]
    Missing(&'static str),
}
