//! Device-tree overlays: hardware attached to a running cell is described to
//! the guest as an overlay blob that it applies with `of_overlay_fdt_apply()`.
//!
//! An overlay is a list of [`Fragment`]s, each a target path in the cell's
//! tree plus the nodes to add under it, built with the same node builders
//! (and so the same templates) as the base tree. [`build_overlay_for_base`]
//! writes the classic form
//!
//! ```dts
//! / {
//!     fragment@0 {
//!         target-path = "/";
//!         __overlay__ { virtio_mmio@d0100000 { ... }; };
//!     };
//! };
//! ```
//!
//! **References.** `&label` references to nodes of the base tree (in practice
//! `&ioapic`) are written as the phandle number the base tree's DTB carries:
//! phandles come only from labels and are numbered deterministically
//! ([`Phandles::assign`]), and the guest keeps the numbers of the DTB it booted
//! with. That needs no `__fixups__` in the overlay, so the guest's resolver
//! has nothing to look up (the base tree's `__symbols__` are for overlays
//! compiled elsewhere). Labels on
//! nodes inside the overlay get overlay-local phandles (1, 2, ...) and every
//! reference to them is listed in `__local_fixups__`, which the guest (and
//! libfdt / dtoolkit) relocate past the live tree's highest phandle. Any other
//! label is an [`FdtError::UnresolvedReference`]. See `docs/overlays.md`.
//!
//! **Checks.** [`LiveTree`] is the cell's current tree (the base DTB with the
//! earlier overlays applied, in order) held with dtoolkit; [`LiveTree::apply`]
//! refuses an overlay that adds a node path already present or targets a
//! missing node, applies it in-process, and leaves the tree unchanged on any
//! failure.
//!
//! vm-fdt refuses node names that start with `_`, so the overlay is written
//! with dtoolkit's in-memory model instead.

use super::emit;
use super::tree::{child_path, Node, Phandles, Property};
use super::FdtError;
use dtoolkit::error::{FdtParseError, OverlayError};
use dtoolkit::fdt::Fdt;
use dtoolkit::model::overlay::OverlayApplier;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node as _, Property as _};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Name of the node inside each fragment that holds the nodes to merge.
pub const OVERLAY_NODE: &str = "__overlay__";
/// Name of the overlay's node listing references to overlay-local phandles.
pub const LOCAL_FIXUPS_NODE: &str = "__local_fixups__";

/// Largest overlay blob cellvm writes (far above anything a device needs; it
/// keeps every length comfortably inside the format's 32-bit fields).
pub const MAX_OVERLAY_SIZE: usize = 16 << 20;

/// One overlay fragment: nodes to add under `target_path`, and properties
/// to set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Absolute path of the node in the cell's tree the nodes go under
    /// (`"/"`, `"/isa@1"`).
    pub target_path: String,
    /// The nodes to add, each with its children.
    pub nodes: Vec<Node>,
    /// Properties set (added or replaced) on the target node itself, e.g.
    /// a device's `status` when it is enabled or disabled at run time.
    pub properties: Vec<Property>,
}

impl Fragment {
    /// A fragment adding `nodes` under `target_path`.
    pub fn new(target_path: impl Into<String>, nodes: Vec<Node>) -> Self {
        Fragment {
            target_path: target_path.into(),
            nodes,
            properties: Vec::new(),
        }
    }

    /// A fragment setting `properties` on the existing node `target_path`
    /// (adding no node).
    pub fn set_properties(target_path: impl Into<String>, properties: Vec<Property>) -> Self {
        Fragment {
            target_path: target_path.into(),
            nodes: Vec::new(),
            properties,
        }
    }

    /// The path, in the target tree, of every node this fragment adds (each
    /// node and its descendants, parents before children).
    pub fn added_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let top = child_path(&self.target_path, n.name());
            n.walk(&mut |rel, _| {
                out.push(if rel == "/" {
                    top.clone()
                } else {
                    format!("{top}{rel}")
                })
            });
        }
        out
    }
}

/// A reference from an overlay to a node of the base tree, written as the
/// phandle that node has in the base tree's DTB.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BaseReference {
    /// The label referenced (`ioapic`).
    pub label: String,
    /// Path of the labelled node in the base tree.
    pub path: String,
    /// The phandle written into the overlay.
    pub phandle: u32,
}

/// An overlay blob and what went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The DTB-format overlay (`.dtbo`).
    pub blob: Vec<u8>,
    /// Paths, in the target tree, of every node the overlay adds.
    pub adds: Vec<String>,
    /// The base-tree nodes the overlay refers to by phandle, by label.
    pub base_references: Vec<BaseReference>,
}

/// Builds an overlay blob from `fragments` whose references, if any, are to
/// labels inside the overlay itself (a reference to any other label is
/// [`FdtError::UnresolvedReference`]; use [`build_overlay_for_base`] for
/// overlays that refer to the base tree, such as anything with
/// `interrupt-map = <... &ioapic ...>`).
pub fn build_overlay(fragments: &[Fragment]) -> Result<Vec<u8>, FdtError> {
    Ok(write_overlay(fragments, &BTreeMap::new())?.blob)
}

/// Builds an overlay blob from `fragments` for a cell whose base tree is
/// `base`: references to `base`'s labels become the phandles `base`'s DTB
/// carries ([`emit::to_dtb`] numbers them with [`Phandles::assign`]).
pub fn build_overlay_for_base(base: &Node, fragments: &[Fragment]) -> Result<Overlay, FdtError> {
    if base.name() != "/" {
        return Err(FdtError::NotRoot(base.name().to_string()));
    }
    let phandles = Phandles::assign(base)?;
    let external = phandles
        .iter()
        .map(|(label, phandle)| {
            let path = base.path_of_label(label).unwrap_or_default();
            (label.to_string(), (phandle, path))
        })
        .collect();
    write_overlay(fragments, &external)
}

fn writer_error(path: impl Into<String>, source: vm_fdt::Error) -> FdtError {
    FdtError::Writer {
        path: path.into(),
        source,
    }
}

/// `/`, or `/` followed by valid node names separated by single slashes.
fn check_target_path(fragment: usize, path: &str) -> Result<(), FdtError> {
    let at = || format!("/fragment@{fragment}:target-path");
    if path.contains('\0') {
        return Err(writer_error(at(), vm_fdt::Error::InvalidString));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(writer_error(at(), vm_fdt::Error::InvalidNodeName));
    };
    if rest.is_empty() {
        return Ok(());
    }
    for part in rest.split('/') {
        if DeviceTreeNode::new(part).is_err() || part.is_empty() {
            return Err(writer_error(at(), vm_fdt::Error::InvalidNodeName));
        }
    }
    Ok(())
}

/// Labels defined inside the overlay: label → (local phandle, path in the
/// target tree).
type LocalLabels = BTreeMap<String, (u32, String)>;

fn collect_local_labels(
    fragments: &[Fragment],
    external: &BTreeMap<String, (u32, String)>,
) -> Result<LocalLabels, FdtError> {
    let mut local: LocalLabels = BTreeMap::new();
    let mut added: BTreeSet<String> = BTreeSet::new();
    for (i, f) in fragments.iter().enumerate() {
        check_target_path(i, &f.target_path)?;
        for n in &f.nodes {
            let top = child_path(&f.target_path, n.name());
            if !added.insert(top.clone()) {
                return Err(FdtError::DuplicateNode {
                    parent: f.target_path.clone(),
                    name: n.name().to_string(),
                });
            }
            let mut err = None;
            n.walk(&mut |rel, node| {
                if err.is_some() {
                    return;
                }
                let path = if rel == "/" {
                    top.clone()
                } else {
                    format!("{top}{rel}")
                };
                if let Some(p) = node
                    .properties()
                    .iter()
                    .find(|p| p.name == "phandle" || p.name == "linux,phandle")
                {
                    err = Some(FdtError::ExplicitPhandle {
                        path,
                        property: p.name.clone(),
                    });
                    return;
                }
                let Some(label) = node.label() else {
                    return;
                };
                let first = local
                    .get(label)
                    .map(|(_, p)| p.clone())
                    .or_else(|| external.get(label).map(|(_, p)| p.clone()));
                if let Some(first) = first {
                    err = Some(FdtError::DuplicateLabel {
                        label: label.to_string(),
                        first,
                        second: path,
                    });
                    return;
                }
                let phandle = u32::try_from(local.len() + 1).unwrap_or(u32::MAX);
                local.insert(label.to_string(), (phandle, path));
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
    }
    Ok(local)
}

/// State while converting fragment nodes to the dtoolkit model.
struct Writer<'a> {
    local: &'a LocalLabels,
    external: &'a BTreeMap<String, (u32, String)>,
    /// (path inside the overlay, property) → offsets of local references.
    local_fixups: BTreeMap<(String, String), Vec<u32>>,
    base_references: BTreeSet<BaseReference>,
    /// Running estimate of the blob size.
    size: usize,
}

impl Writer<'_> {
    fn grow(&mut self, bytes: usize, path: &str) -> Result<(), FdtError> {
        self.size = self.size.saturating_add(bytes);
        if self.size > MAX_OVERLAY_SIZE {
            return Err(writer_error(path, vm_fdt::Error::TotalSizeTooLarge));
        }
        Ok(())
    }

    /// Converts `node`, which will sit at `target_path` in the cell's tree
    /// and at `overlay_path` inside the overlay blob.
    fn convert(
        &mut self,
        node: &Node,
        target_path: &str,
        overlay_path: &str,
    ) -> Result<DeviceTreeNode, FdtError> {
        let mut out = DeviceTreeNode::new(node.name())
            .map_err(|_| writer_error(target_path, vm_fdt::Error::InvalidNodeName))?;
        self.grow(node.name().len() + 16, target_path)?;
        for prop in node.properties() {
            let mut resolve = |label: &str, offset: usize| -> Result<u32, FdtError> {
                if let Some((phandle, _)) = self.local.get(label) {
                    let offset = u32::try_from(offset).map_err(|_| {
                        writer_error(target_path, vm_fdt::Error::PropertyValueTooLarge)
                    })?;
                    self.local_fixups
                        .entry((overlay_path.to_string(), prop.name.clone()))
                        .or_default()
                        .push(offset);
                    return Ok(*phandle);
                }
                if let Some((phandle, path)) = self.external.get(label) {
                    self.base_references.insert(BaseReference {
                        label: label.to_string(),
                        path: path.clone(),
                        phandle: *phandle,
                    });
                    return Ok(*phandle);
                }
                Err(FdtError::UnresolvedReference {
                    path: target_path.to_string(),
                    property: prop.name.clone(),
                    label: label.to_string(),
                })
            };
            let bytes = prop.encode(&mut resolve)?;
            let at = format!("{target_path}:{}", prop.name);
            if u32::try_from(bytes.len()).is_err() {
                return Err(writer_error(at, vm_fdt::Error::PropertyValueTooLarge));
            }
            self.grow(bytes.len() + prop.name.len() + 16, &at)?;
            let p = DeviceTreeProperty::new(prop.name.as_str(), bytes)
                .map_err(|_| writer_error(at, vm_fdt::Error::InvalidPropertyName))?;
            out.add_property(p);
        }
        if let Some((phandle, _)) = node.label().and_then(|l| self.local.get(l)) {
            self.grow(20, target_path)?;
            out.add_property(DeviceTreeProperty::new_unchecked(
                "phandle",
                phandle.to_be_bytes().to_vec(),
            ));
        }
        for child in node.children() {
            let c = self.convert(
                child,
                &child_path(target_path, child.name()),
                &child_path(overlay_path, child.name()),
            )?;
            out.add_child(c);
        }
        Ok(out)
    }

    /// The `__local_fixups__` node: the overlay's node structure with, per
    /// property, the byte offsets of its references to local phandles.
    fn local_fixups_node(&self) -> Option<DeviceTreeNode> {
        if self.local_fixups.is_empty() {
            return None;
        }
        let mut root = DeviceTreeNode::new_unchecked(LOCAL_FIXUPS_NODE);
        for ((path, prop), offsets) in &self.local_fixups {
            let mut node = &mut root;
            for part in path.split('/').filter(|s| !s.is_empty()) {
                node = node.add_child_mut(DeviceTreeNode::new_unchecked(part));
            }
            let value: Vec<u8> = offsets.iter().flat_map(|o| o.to_be_bytes()).collect();
            node.add_property(DeviceTreeProperty::new_unchecked(prop.as_str(), value));
        }
        Some(root)
    }
}

fn write_overlay(
    fragments: &[Fragment],
    external: &BTreeMap<String, (u32, String)>,
) -> Result<Overlay, FdtError> {
    let local = collect_local_labels(fragments, external)?;
    let mut w = Writer {
        local: &local,
        external,
        local_fixups: BTreeMap::new(),
        base_references: BTreeSet::new(),
        size: 0,
    };
    let mut tree = DeviceTree::new();
    for (i, f) in fragments.iter().enumerate() {
        let name = format!("fragment@{i}");
        let mut frag = DeviceTreeNode::new_unchecked(name.as_str());
        let mut target = f.target_path.clone().into_bytes();
        target.push(0);
        w.grow(target.len() + 32, &name)?;
        frag.add_property(DeviceTreeProperty::new_unchecked("target-path", target));
        let overlay_path = format!("/{name}/{OVERLAY_NODE}");
        let mut ov = if f.properties.is_empty() {
            DeviceTreeNode::new_unchecked(OVERLAY_NODE)
        } else {
            let mut body = Node::new(OVERLAY_NODE);
            for p in &f.properties {
                body.set_property(p.clone());
            }
            w.convert(&body, &f.target_path, &overlay_path)?
        };
        for n in &f.nodes {
            let node = w.convert(
                n,
                &child_path(&f.target_path, n.name()),
                &child_path(&overlay_path, n.name()),
            )?;
            ov.add_child(node);
        }
        frag.add_child(ov);
        tree.root.add_child(frag);
    }
    if let Some(fixups) = w.local_fixups_node() {
        tree.root.add_child(fixups);
    }
    Ok(Overlay {
        blob: tree.to_dtb(),
        adds: fragments.iter().flat_map(Fragment::added_paths).collect(),
        base_references: w.base_references.into_iter().collect(),
    })
}

/// Why an overlay cannot be applied to a [`LiveTree`].
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The blob is not a valid flattened device tree.
    #[error("{what} is not a valid device tree blob: {source}")]
    Parse {
        /// Which blob ("the base tree", "the overlay for hot0").
        what: String,
        /// dtoolkit's parse error.
        #[source]
        source: FdtParseError,
    },
    /// The base tree could not be emitted.
    #[error("emitting the base tree: {0}")]
    Base(#[from] FdtError),
    /// A fragment has no usable target.
    #[error("{what}: {fragment} {problem}")]
    BadFragment {
        /// Which overlay.
        what: String,
        /// The fragment node's name.
        fragment: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A fragment targets a node that is not in the tree.
    #[error("{what}: {fragment} targets {path}, which is not in the tree")]
    TargetMissing {
        /// Which overlay.
        what: String,
        /// The fragment node's name.
        fragment: String,
        /// The missing target.
        path: String,
    },
    /// The overlay would add a node that is already in the tree (applying it
    /// would silently merge into, and on removal tear down, that node).
    #[error("{what} adds {path}, which is already in the tree")]
    NodeExists {
        /// Which overlay.
        what: String,
        /// The existing node's path.
        path: String,
    },
    /// dtoolkit refused to apply the overlay.
    #[error("applying {what}: {source}")]
    Apply {
        /// Which overlay.
        what: String,
        /// dtoolkit's error.
        #[source]
        source: OverlayError,
    },
}

/// A cell's current device tree (base tree plus the overlays applied so far),
/// held in dtoolkit's model, for checking overlays before they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTree {
    tree: DeviceTree,
}

/// The node at `path`, matching every name exactly (unit address included).
fn find_exact<'a>(root: &'a DeviceTreeNode, path: &str) -> Option<&'a DeviceTreeNode> {
    if !path.starts_with('/') {
        return None;
    }
    path.split('/')
        .filter(|s| !s.is_empty())
        .try_fold(root, |n, part| n.children().find(|c| c.name() == part))
}

fn collect_paths(node: &DeviceTreeNode, path: &str, out: &mut Vec<String>) {
    out.push(path.to_string());
    for c in node.children() {
        collect_paths(c, &child_path(path, c.name()), out);
    }
}

/// Every node path of `node`'s subtree (`path` is `node`'s own).
fn subtree_paths(node: &DeviceTreeNode, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    collect_paths(node, path, &mut out);
    out
}

fn find_phandle(node: &DeviceTreeNode, path: &str, phandle: u32) -> Option<String> {
    if dtoolkit::overlay::get_phandle(node) == Some(phandle) {
        return Some(path.to_string());
    }
    node.children()
        .find_map(|c| find_phandle(c, &child_path(path, c.name()), phandle))
}

impl LiveTree {
    /// The tree of a DTB (`what` names it in errors).
    pub fn from_dtb(dtb: &[u8], what: &str) -> Result<Self, ApplyError> {
        let fdt = Fdt::new(dtb).map_err(|source| ApplyError::Parse {
            what: what.to_string(),
            source,
        })?;
        Ok(LiveTree {
            tree: DeviceTree::from_fdt(&fdt),
        })
    }

    /// The tree a cell boots with: `base` emitted exactly as
    /// [`emit::to_dtb`] does for the guest.
    pub fn from_base(base: &Node) -> Result<Self, ApplyError> {
        let dtb = emit::to_dtb(base)?;
        Self::from_dtb(&dtb, "the base tree")
    }

    /// Whether a node with exactly this path (unit addresses included) exists.
    pub fn contains(&self, path: &str) -> bool {
        find_exact(&self.tree.root, path).is_some()
    }

    /// The `phandle` of the node at `path`, if it has one.
    pub fn phandle(&self, path: &str) -> Option<u32> {
        find_exact(&self.tree.root, path).and_then(dtoolkit::overlay::get_phandle)
    }

    /// The paths of every node in the tree, parents before children.
    pub fn paths(&self) -> Vec<String> {
        subtree_paths(&self.tree.root, "/")
    }

    /// The dtoolkit model of the tree.
    pub fn tree(&self) -> &DeviceTree {
        &self.tree
    }

    /// The tree as a DTB.
    pub fn to_dtb(&self) -> Vec<u8> {
        self.tree.to_dtb()
    }

    /// This tree without the nodes at `paths` (each with its subtree, paths
    /// exact as [`LiveTree::contains`] takes them; missing ones are
    /// skipped): the tree before an overlay that added exactly those nodes,
    /// the others keeping their order. No copy of the tree is made.
    pub fn without(mut self, paths: &[String]) -> LiveTree {
        for path in paths {
            let Some((parent, name)) = path.rsplit_once('/') else {
                continue;
            };
            let parent = parent
                .split('/')
                .filter(|s| !s.is_empty())
                .try_fold(&mut self.tree.root, |node, part| node.child_mut(part));
            if let Some(parent) = parent {
                parent.remove_child(name);
            }
        }
        self
    }

    /// The node paths `overlay` would add to this tree, checking that every
    /// fragment's target exists and that none of the added paths does.
    pub fn check(&self, overlay: &[u8], what: &str) -> Result<Vec<String>, ApplyError> {
        let fdt = Fdt::new(overlay).map_err(|source| ApplyError::Parse {
            what: what.to_string(),
            source,
        })?;
        let ov = DeviceTree::from_fdt(&fdt);
        let mut adds: Vec<String> = Vec::new();
        for frag in ov.root.children() {
            let name = frag.name();
            if matches!(
                name,
                "__fixups__" | LOCAL_FIXUPS_NODE | "__symbols__" | "__local_symbols__"
            ) {
                continue;
            }
            let bad = |problem: &str| ApplyError::BadFragment {
                what: what.to_string(),
                fragment: name.to_string(),
                problem: problem.to_string(),
            };
            let Some(body) = frag.children().find(|c| c.name() == OVERLAY_NODE) else {
                return Err(bad("has no __overlay__ node"));
            };
            let target = match (frag.property("target-path"), frag.property("target")) {
                (Some(p), None) => p
                    .value_as::<&str>()
                    .map_err(|_| bad("has a target-path that is not a string"))?
                    .to_string(),
                (None, Some(p)) => {
                    let phandle = p
                        .value_as::<u32>()
                        .map_err(|_| bad("has a target that is not one cell"))?;
                    find_phandle(&self.tree.root, "/", phandle).ok_or_else(|| {
                        bad(&format!("targets phandle {phandle:#x}, which no node has"))
                    })?
                }
                _ => return Err(bad("needs exactly one of target-path and target")),
            };
            if !target.starts_with('/') {
                return Err(bad(&format!(
                    "targets {target:?}; only absolute paths are supported"
                )));
            }
            // A target added by an earlier fragment of the same overlay is fine.
            if !self.contains(&target) && !adds.contains(&target) {
                return Err(ApplyError::TargetMissing {
                    what: what.to_string(),
                    fragment: name.to_string(),
                    path: target,
                });
            }
            for child in body.children() {
                let path = child_path(&target, child.name());
                if self.contains(&path) || adds.contains(&path) {
                    return Err(ApplyError::NodeExists {
                        what: what.to_string(),
                        path,
                    });
                }
                adds.extend(subtree_paths(child, &path));
            }
        }
        Ok(adds)
    }

    /// Checks `overlay` ([`LiveTree::check`]) and applies it; returns the node
    /// paths it added. On any error the tree is left as it was.
    pub fn apply(&mut self, overlay: &[u8], what: &str) -> Result<Vec<String>, ApplyError> {
        let (next, adds) = self.clone().applied(overlay, what)?;
        *self = next;
        Ok(adds)
    }

    /// [`LiveTree::apply`] on a tree the caller gives up: no copy of the
    /// tree is made (a failed apply drops it), which is what planning on a
    /// tree of its own wants. Returns the new tree and the paths added.
    pub fn applied(
        self,
        overlay: &[u8],
        what: &str,
    ) -> Result<(LiveTree, Vec<String>), ApplyError> {
        let adds = self.check(overlay, what)?;
        let fdt = Fdt::new(overlay).map_err(|source| ApplyError::Parse {
            what: what.to_string(),
            source,
        })?;
        let mut next = self.tree;
        OverlayApplier::new(&mut next)
            .apply_overlay(&fdt)
            .map_err(|source| ApplyError::Apply {
                what: what.to_string(),
                source,
            })?;
        if let Some(missing) = adds.iter().find(|p| find_exact(&next.root, p).is_none()) {
            return Err(ApplyError::BadFragment {
                what: what.to_string(),
                fragment: missing.clone(),
                problem: "was not added by dtoolkit".to_string(),
            });
        }
        Ok((LiveTree { tree: next }, adds))
    }
}
