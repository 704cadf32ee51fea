//! Reading config text: files, the directory their relative paths resolve
//! against, and TOML parsed both as its spanned shape and as a raw type.

use super::error::{ConfigError, Location};
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

/// The JSON value of the file at `path` whose text is `text`, if its name
/// ends in `.json` (descriptions may be JSON of the TOML shape).
pub(super) fn json_value(path: &Path, text: &str) -> Option<Result<toml::Value, ConfigError>> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    is_json.then(|| {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            at: Location {
                file: path.display().to_string(),
                line: e.line().max(1),
                column: e.column().max(1),
            },
            field: "<root>".to_string(),
            message: format!("invalid JSON: {e}"),
        })
    })
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
