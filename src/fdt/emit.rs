//! Tree → DTB bytes with vm-fdt.
//!
//! Only whole trees (a root named `/`) are emitted here: every `&label`
//! reference is resolved against the labels of the same tree (see
//! [`Phandles`]) and each labelled node gets a `phandle` property. vm-fdt 0.3
//! refuses node names starting with `_`, so overlays (`__overlay__`,
//! `__fixups__`) need another writer; the tree code is ready for one
//! ([`Property::encode`] takes the resolver, [`Node::references`] lists the
//! fixups).
//!
//! [`Property::encode`]: super::tree::Property::encode
//! [`Node::references`]: super::tree::Node::references

use super::tree::{child_path, Node, Phandles};
use super::FdtError;
use vm_fdt::FdtWriter;

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
    w.finish().map_err(writer_err("/"))
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
