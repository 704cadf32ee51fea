//! Configuration errors. Every one prints as a single line
//! `file:line:column: field: message`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Where in a config file something is: `file:line:column` (1-based; the
/// column counts characters). `file` is the path as given, or `<config>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The source path as given by the caller, or `<config>`.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn from_offset(file: &str, text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = text.get(..offset).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: file.to_string(),
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).map_or(0, |s| s.chars().count()) + 1,
        }
    }
}

impl Location {
    /// A place in `file` whose line is not known (a JSON value: serde_json
    /// reports no positions); it prints as the file name alone.
    pub fn unknown(file: &str) -> Self {
        Location {
            file: file.to_string(),
            line: 0,
            column: 0,
        }
    }
}

/// `path` for a one-line message: control characters (a newline in a file
/// name) are shown escaped (`\n`), so every error stays one line.
pub fn shown(path: &std::path::Path) -> String {
    one_line(&path.display().to_string())
}

/// `text` with control characters escaped.
pub fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = one_line(&self.file);
        if self.line == 0 {
            return write!(f, "{file}");
        }
        write!(f, "{file}:{}:{}", self.line, self.column)
    }
}

/// Why a cell configuration was rejected.
///
/// `field` is the dotted path of the offending key, e.g. `cpus.count` or
/// `pci_bridge[1].mmio32.size`; `<root>` for the document as a whole.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{}:1:1: <file>: cannot read config file: {error}", shown(.path))]
    Io {
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// The text is not valid TOML (includes duplicate keys and tables).
    #[error("{at}: {field}: invalid TOML: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// Best-effort field path.
        field: String,
        /// toml's message, on one line.
        message: String,
    },
    /// A key the schema does not know.
    #[error("{at}: {field}: unknown key ({allowed})")]
    UnknownKey {
        /// Where the key is.
        at: Location,
        /// Its full path.
        field: String,
        /// What would have been accepted, e.g. "expected `count` or `pin`".
        allowed: String,
    },
    /// A required key is absent.
    #[error("{at}: {field}: missing required key{hint}")]
    MissingKey {
        /// The table that should contain it.
        at: Location,
        /// The missing key's full path.
        field: String,
        /// Extra explanation (starts with a space), or empty.
        hint: String,
    },
    /// A value of the wrong TOML type.
    #[error("{at}: {field}: {message}")]
    WrongType {
        /// Where the value is.
        at: Location,
        /// Its path.
        field: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A value of the right type that breaks a rule.
    #[error("{at}: {field}: {message}")]
    Invalid {
        /// Where the value is.
        at: Location,
        /// Its path.
        field: String,
        /// The rule, and the value that broke it.
        message: String,
    },
    /// A file named by the config does not exist.
    #[error("{at}: {field}: {what} {} does not exist", shown(.path))]
    FileNotFound {
        /// Where the path is given.
        at: Location,
        /// The key that names it.
        field: String,
        /// "kernel image", "initrd".
        what: &'static str,
        /// The resolved path.
        path: PathBuf,
    },
    /// A file named by the config exists but cannot be read.
    #[error("{at}: {field}: cannot read {what} {}: {error}", shown(.path))]
    FileUnreadable {
        /// Where the path is given.
        at: Location,
        /// The key that names it.
        field: String,
        /// "kernel image", "initrd".
        what: &'static str,
        /// The resolved path.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// Fixed addresses or IRQs collide, or an allocation pool is full
    /// (found when the cell is laid out, `layout::place_cell`).
    #[error("{at}: {field}: {message}")]
    Layout {
        /// The config entry that could not be placed.
        at: Location,
        /// Its path.
        field: String,
        /// What the layout said.
        message: String,
    },
}

impl ConfigError {
    /// Where the error is, if it is inside the text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::MissingKey { at, .. }
            | ConfigError::WrongType { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::FileNotFound { at, .. }
            | ConfigError::FileUnreadable { at, .. }
            | ConfigError::Layout { at, .. } => Some(at),
        }
    }

    /// The dotted path of the offending key (`<file>` for [`ConfigError::Io`]).
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Io { .. } => "<file>",
            ConfigError::Syntax { field, .. }
            | ConfigError::UnknownKey { field, .. }
            | ConfigError::MissingKey { field, .. }
            | ConfigError::WrongType { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::FileNotFound { field, .. }
            | ConfigError::FileUnreadable { field, .. }
            | ConfigError::Layout { field, .. } => field,
        }
    }
}
