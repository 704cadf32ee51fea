//! Reading config text: files, the directory their relative paths resolve
//! against, and TOML parsed both as its spanned shape and as a raw type.

use super::error::ConfigError;
use super::{raw, validate};
use std::path::Path;

/// The text of the file at `path`.
pub(super) fn read_source(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The directory relative paths in the file at `path` resolve against.
pub(super) fn source_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// TOML `text` as its spanned shape (for naming fields) and as `T`.
pub(super) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<(raw::Node, T), ConfigError> {
    let tree: raw::Node =
        toml::from_str(text).map_err(|e| validate::syntax_error(text, file, &e))?;
    let value: T =
        toml::from_str(text).map_err(|e| validate::schema_error(text, file, &tree, &e))?;
    Ok((tree, value))
}
