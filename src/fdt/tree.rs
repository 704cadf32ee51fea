//! An in-memory device tree: nodes, properties, labels and `&label`
//! references, independent of how it is finally serialised.
//!
//! References stay symbolic ([`Cell::Ref`]) until a property is encoded with
//! [`Property::encode`], whose resolver decides what a label becomes: the
//! base-tree emitter looks it up in [`Phandles`]; an overlay emitter can
//! instead write a placeholder phandle and record a fixup at the offset it is
//! given.

use super::FdtError;
use std::collections::BTreeMap;

/// One 32-bit cell inside `< >`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// A number.
    Num(u32),
    /// `&label`: the phandle of the node carrying `label`.
    Ref(String),
}

impl From<u32> for Cell {
    fn from(v: u32) -> Self {
        Cell::Num(v)
    }
}

/// One comma-separated piece of a property value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// `<...>`: big-endian 32-bit cells.
    Cells(Vec<Cell>),
    /// `"..."`: a NUL-terminated string.
    Str(String),
    /// `[...]`: raw bytes.
    Bytes(Vec<u8>),
}

/// A property: a name and a value made of chunks (empty for a flag such as
/// `interrupt-controller;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Property name.
    pub name: String,
    /// Value pieces, in order; empty for a boolean property.
    pub value: Vec<Chunk>,
}

/// Where a property refers to a label: what an overlay needs for
/// `__fixups__` / `__local_fixups__`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Path of the node holding the property, relative to the node
    /// [`Node::references`] was called on (that node itself is `/`).
    pub path: String,
    /// Property name.
    pub property: String,
    /// Byte offset of the phandle cell inside the encoded property value.
    pub offset: usize,
    /// The referenced label.
    pub label: String,
}

impl Property {
    /// A boolean (empty) property.
    pub fn flag(name: impl Into<String>) -> Self {
        Property {
            name: name.into(),
            value: Vec::new(),
        }
    }

    /// A single string.
    pub fn string(name: impl Into<String>, s: impl Into<String>) -> Self {
        Property {
            name: name.into(),
            value: vec![Chunk::Str(s.into())],
        }
    }

    /// Cells (numbers and/or references).
    pub fn cells(name: impl Into<String>, cells: Vec<Cell>) -> Self {
        Property {
            name: name.into(),
            value: vec![Chunk::Cells(cells)],
        }
    }

    /// Numeric cells.
    pub fn u32s(name: impl Into<String>, cells: &[u32]) -> Self {
        Property::cells(name, cells.iter().copied().map(Cell::Num).collect())
    }

    /// True for a boolean property (no value).
    pub fn is_flag(&self) -> bool {
        self.value.is_empty()
    }

    /// The value as one string, if it is exactly one string.
    pub fn as_str(&self) -> Option<&str> {
        match self.value.as_slice() {
            [Chunk::Str(s)] => Some(s),
            _ => None,
        }
    }

    /// The value as a string list, if it consists only of strings.
    pub fn as_strings(&self) -> Option<Vec<&str>> {
        self.value
            .iter()
            .map(|c| match c {
                Chunk::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All cells of the value, if it consists only of `< >` chunks.
    pub fn as_cells(&self) -> Option<Vec<&Cell>> {
        let mut out = Vec::new();
        for c in &self.value {
            match c {
                Chunk::Cells(cells) => out.extend(cells),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The value as numbers, if it consists only of cells without references.
    pub fn as_u32s(&self) -> Option<Vec<u32>> {
        self.as_cells()?
            .into_iter()
            .map(|c| match c {
                Cell::Num(v) => Some(*v),
                Cell::Ref(_) => None,
            })
            .collect()
    }

    /// The labels this property references, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.value.iter().flat_map(|c| match c {
            Chunk::Cells(cells) => cells
                .iter()
                .filter_map(|c| match c {
                    Cell::Ref(l) => Some(l.as_str()),
                    Cell::Num(_) => None,
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    }

    /// Encodes the value as DTB bytes. `resolve(label, offset)` supplies the
    /// 32-bit value for each reference; `offset` is where that cell starts in
    /// the returned bytes.
    pub fn encode(
        &self,
        resolve: &mut dyn FnMut(&str, usize) -> Result<u32, FdtError>,
    ) -> Result<Vec<u8>, FdtError> {
        let mut out = Vec::new();
        for chunk in &self.value {
            match chunk {
                Chunk::Cells(cells) => {
                    for cell in cells {
                        let v = match cell {
                            Cell::Num(v) => *v,
                            Cell::Ref(label) => resolve(label, out.len())?,
                        };
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                }
                Chunk::Str(s) => {
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
                Chunk::Bytes(b) => out.extend_from_slice(b),
            }
        }
        Ok(out)
    }
}

/// A device-tree node. Child names and property names are unique within a
/// node; the root is named `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    name: String,
    label: Option<String>,
    props: Vec<Property>,
    children: Vec<Node>,
}

/// Joins a parent path and a child name.
pub(crate) fn child_path(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl Node {
    /// An empty node called `name` (`"/"` for a root).
    pub fn new(name: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            label: None,
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The node name, including any unit address (`cpu@0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's label, if any.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Sets or clears the label.
    pub fn set_label(&mut self, label: Option<String>) {
        self.label = label;
    }

    /// Properties, in order.
    pub fn properties(&self) -> &[Property] {
        &self.props
    }

    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.props.iter().find(|p| p.name == name)
    }

    /// Adds a property; fails if one of that name exists.
    pub fn add_property(&mut self, prop: Property) -> Result<(), FdtError> {
        if self.property(&prop.name).is_some() {
            return Err(FdtError::DuplicateProperty {
                node: self.name.clone(),
                name: prop.name,
            });
        }
        self.props.push(prop);
        Ok(())
    }

    /// Adds or replaces a property.
    pub fn set_property(&mut self, prop: Property) {
        match self.props.iter_mut().find(|p| p.name == prop.name) {
            Some(p) => *p = prop,
            None => self.props.push(prop),
        }
    }

    /// Child nodes, in order.
    pub fn children(&self) -> &[Node] {
        &self.children
    }

    /// The direct child called `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Appends a child; fails if one of that name exists.
    pub fn add_child(&mut self, child: Node) -> Result<(), FdtError> {
        if self.child(&child.name).is_some() {
            return Err(FdtError::DuplicateNode {
                parent: self.name.clone(),
                name: child.name,
            });
        }
        self.children.push(child);
        Ok(())
    }

    /// The node at `path` below this one (`"/isa/serial@3f8"`; `"/"` is
    /// this node).
    pub fn find(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |n, part| n.child(part))
    }

    /// The node at `path` below this one, to change it.
    pub fn find_mut(&mut self, path: &str) -> Option<&mut Node> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self, |n, part| {
                n.children.iter_mut().find(|c| c.name == part)
            })
    }

    /// Calls `f(path, node)` for this node (path `/`) and every descendant,
    /// parents before children.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Node)) {
        self.walk_at("/", f);
    }

    fn walk_at<'a>(&'a self, path: &str, f: &mut dyn FnMut(&str, &'a Node)) {
        f(path, self);
        for c in &self.children {
            c.walk_at(&child_path(path, &c.name), f);
        }
    }

    /// Path of the node carrying `label`, relative to this node.
    pub fn path_of_label(&self, label: &str) -> Option<String> {
        let mut found = None;
        self.walk(&mut |path, n| {
            if found.is_none() && n.label() == Some(label) {
                found = Some(path.to_string());
            }
        });
        found
    }

    /// Every `&label` reference in this subtree, with the byte offset of its
    /// cell in the encoded property: the input for an overlay's fixup nodes.
    pub fn references(&self) -> Vec<Reference> {
        let mut refs = Vec::new();
        self.walk(&mut |path, n| {
            for p in &n.props {
                let mut record = |label: &str, offset: usize| {
                    refs.push(Reference {
                        path: path.to_string(),
                        property: p.name.clone(),
                        offset,
                        label: label.to_string(),
                    });
                    Ok(0)
                };
                // The recording resolver never fails.
                let _ = p.encode(&mut record);
            }
        });
        refs
    }
}

/// Phandles assigned to labels: every labelled node gets one, numbered from
/// 1 in tree order (parents before children).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Phandles {
    by_label: BTreeMap<String, u32>,
}

impl Phandles {
    /// Assigns phandles for `root`'s tree; fails on a label used twice or a
    /// node with an explicit `phandle` / `linux,phandle` property.
    pub fn assign(root: &Node) -> Result<Self, FdtError> {
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        let mut by_label = BTreeMap::new();
        let mut err = None;
        root.walk(&mut |path, n| {
            if err.is_some() {
                return;
            }
            if let Some(p) = n
                .props
                .iter()
                .find(|p| p.name == "phandle" || p.name == "linux,phandle")
            {
                err = Some(FdtError::ExplicitPhandle {
                    path: path.to_string(),
                    property: p.name.clone(),
                });
                return;
            }
            let Some(label) = n.label() else {
                return;
            };
            if let Some(first) = paths.get(label) {
                err = Some(FdtError::DuplicateLabel {
                    label: label.to_string(),
                    first: first.clone(),
                    second: path.to_string(),
                });
                return;
            }
            paths.insert(label.to_string(), path.to_string());
            let next = u32::try_from(by_label.len() + 1).unwrap_or(u32::MAX);
            by_label.insert(label.to_string(), next);
        });
        match err {
            Some(e) => Err(e),
            None => Ok(Phandles { by_label }),
        }
    }

    /// The phandle of the node labelled `label`.
    pub fn get(&self, label: &str) -> Option<u32> {
        self.by_label.get(label).copied()
    }

    /// All (label, phandle) pairs, by label.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_label.iter().map(|(l, p)| (l.as_str(), *p))
    }
}
