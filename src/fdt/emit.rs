//! Tree → DTB bytes with vm-fdt.
//!
//! Only whole trees (a root named `/`) are emitted here: every `&label`
//! reference is resolved against the labels of the same tree (see
//! [`Phandles`]) and each labelled node gets a `phandle` property. The tree
//! also carries `__symbols__` (label → path, as `dtc -@` writes it), so an
//! overlay compiled elsewhere can refer to the cell's labels (`&j1`) and be
//! resolved by the guest. vm-fdt 0.3 refuses node names starting with `_`:
//! the tree is written with vm-fdt and `__symbols__` added with dtoolkit,
//! which also writes overlays (`overlay.rs`).
//!
//! [`Property::encode`]: super::tree::Property::encode
//! [`Node::references`]: super::tree::Node::references

use super::tree::{child_path, Node, Phandles};
use super::FdtError;
use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use vm_fdt::FdtWriter;

/// Name of the node listing every label with the path of its node.
pub const SYMBOLS_NODE: &str = "__symbols__";

/// Serialises the tree rooted at `root` as a DTB.
pub fn to_dtb(root: &Node) -> Result<Vec<u8>, FdtError> {
    if root.name() != "/" {
        return Err(FdtError::NotRoot(root.name().to_string()));
    }
    let phandles = Phandles::assign(root)?;
    let writer_err = |path: &str| {
        let path = path.to_string();
        move |source| FdtError::Writer { path, source }
    };
    let mut w = FdtWriter::new().map_err(writer_err("/"))?;
    write_node(&mut w, root, "/", &phandles)?;
    let dtb = w.finish().map_err(writer_err("/"))?;
    with_symbols(dtb, root, &phandles)
}

/// `dtb` with a `__symbols__` node naming the path of every label in
/// `phandles` (unchanged if there is none).
fn with_symbols(dtb: Vec<u8>, root: &Node, phandles: &Phandles) -> Result<Vec<u8>, FdtError> {
    if phandles.iter().next().is_none() {
        return Ok(dtb);
    }
    let fdt = Fdt::new(&dtb).map_err(|e| FdtError::Symbols(e.to_string()))?;
    let mut tree = DeviceTree::from_fdt(&fdt);
    let mut symbols = DeviceTreeNode::new_unchecked(SYMBOLS_NODE);
    for (label, _) in phandles.iter() {
        let Some(path) = root.path_of_label(label) else {
            return Err(FdtError::Symbols(format!("label {label} has no node")));
        };
        let mut value = path.into_bytes();
        value.push(0);
        symbols.add_property(DeviceTreeProperty::new_unchecked(label, value));
    }
    tree.root.add_child(symbols);
    Ok(tree.to_dtb())
}

fn write_node(
    w: &mut FdtWriter,
    node: &Node,
    path: &str,
    phandles: &Phandles,
) -> Result<(), FdtError> {
    let writer_err = |what: String| move |source| FdtError::Writer { path: what, source };
    // vm-fdt names the root "".
    let name = if path == "/" { "" } else { node.name() };
    let handle = w.begin_node(name).map_err(writer_err(path.to_string()))?;
    for prop in node.properties() {
        let bytes = prop.encode(&mut |label, _offset| {
            phandles
                .get(label)
                .ok_or_else(|| FdtError::UnresolvedReference {
                    path: path.to_string(),
                    property: prop.name.clone(),
                    label: label.to_string(),
                })
        })?;
        w.property(&prop.name, &bytes)
            .map_err(writer_err(format!("{path}:{}", prop.name)))?;
    }
    if let Some(phandle) = node.label().and_then(|l| phandles.get(l)) {
        w.property_phandle(phandle)
            .map_err(writer_err(format!("{path}:phandle")))?;
    }
    for child in node.children() {
        write_node(w, child, &child_path(path, child.name()), phandles)?;
    }
    w.end_node(handle).map_err(writer_err(path.to_string()))
}
