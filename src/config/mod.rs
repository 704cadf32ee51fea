//! Cell configuration: TOML text → validated [`CellConfig`].
//!
//! [`load`] reads a cell file, [`parse`] validates text. Every error is a
//! [`ConfigError`] that prints as one line, `file:line:column: field: message`.
//! The file format is documented in `docs/config.md`.

mod description;
mod error;
mod kernel_image;
mod model;
mod origins;
mod raw;
mod size;
mod validate;

#[cfg(test)]
mod description_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;

pub use description::{device_from_value, load_device, parse_device, Description};
pub use error::{ConfigError, Location};
pub use kernel_image::{detect_kernel_format, kernel_format_from_header, KernelFileError};
pub use model::*;
pub use origins::{Origin, Origins};
pub use size::{human_size, parse_size, HumanSize, SizeError};

/// Largest vCPU count a cell may have.
pub const MAX_VCPUS: u8 = 64;

/// Kernel command line used when the config gives none.
pub const DEFAULT_CMDLINE: &str = validate::DEFAULT_CMDLINE;

/// How [`load`] and [`parse`] treat the files a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Check that the kernel and initrd exist and are readable, and detect
    /// the kernel format from the image. When `false` (e.g. `cellvm dtb`),
    /// nothing is read and the format defaults to bzImage unless given.
    pub check_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_files: true }
    }
}

/// Reads and validates the cell file at `path`. Relative paths inside it
/// resolve against the file's directory.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<CellConfig, ConfigError> {
    let text = read_source(path)?;
    parse(&text, Some(path), source_dir(path), opts)
}

/// Validates cell-file `text`. `source` names the text in messages (and is
/// stored in [`CellConfig::source`]); relative paths resolve against
/// `base_dir`.
pub fn parse(
    text: &str,
    source: Option<&Path>,
    base_dir: &Path,
    opts: &LoadOptions,
) -> Result<CellConfig, ConfigError> {
    let file = source.map_or_else(|| "<config>".to_string(), |p| p.display().to_string());
    let (tree, cell) = parse_toml::<raw::RawCell>(text, &file)?;
    let ctx = validate::Ctx {
        text,
        file,
        tree: &tree,
        base_dir: Some(base_dir),
        check_files: opts.check_files,
    };
    validate::validate(cell, &ctx, source)
}

/// The text of the file at `path`.
fn read_source(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The directory relative paths in the file at `path` resolve against.
fn source_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// TOML `text` as its spanned shape (for naming fields) and as `T`.
fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<(raw::Node, T), ConfigError> {
    let tree: raw::Node =
        toml::from_str(text).map_err(|e| validate::syntax_error(text, file, &e))?;
    let value: T =
        toml::from_str(text).map_err(|e| validate::schema_error(text, file, &tree, &e))?;
    Ok((tree, value))
}
