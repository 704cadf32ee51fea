//! The control API's messages: one JSON object per line in each direction.
//!
//! Request:  `{"op": "status"}`, `{"op": "devices"}`,
//!           `{"op": "attach", "device": {...description...}}`,
//!           `{"op": "detach", "id": "hot0", "force": false}`.
//! Response: `{"ok": true, "result": {...}}` or
//!           `{"ok": false, "error": {"kind": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};

/// Protocol version reported by `status`.
pub const API_VERSION: u32 = 1;

/// Largest request line accepted (bytes).
pub const MAX_REQUEST: usize = 1 << 20;

/// A request to a running cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The cell's state and the guest agent's status.
    Status {},
    /// Every device of the cell with its state.
    Devices {},
    /// Attach a device described by a device description (docs/overlays.md).
    Attach {
        /// The description, as JSON.
        device: serde_json::Value,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Detach an attached device by id.
    Detach {
        /// The device id.
        id: String,
        /// Tear the device down even if the guest refuses or does not answer.
        #[serde(default)]
        force: bool,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

/// Error categories, stable for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was not valid JSON or not a known request.
    BadRequest,
    /// The device description or id was invalid.
    InvalidDevice,
    /// The device collides with something already in the cell.
    Conflict,
    /// No such device.
    NotFound,
    /// The guest refused (NAK) the change.
    GuestRefused,
    /// The guest did not answer in time.
    GuestTimeout,
    /// The guest has no agent (or it has not said hello).
    NoAgent,
    /// The operation is not available in this cellvm.
    Unsupported,
    /// The cell is stopping; the request was abandoned.
    Stopping,
    /// cellvm failed internally.
    Internal,
}

/// A typed error for the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Category.
    pub kind: ErrorKind,
    /// What was wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(error: ApiError) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error),
        }
    }
}

/// Parses one request line; every failure is a `BadRequest` naming the problem.
pub fn parse_request(line: &str) -> Result<Request, ApiError> {
    serde_json::from_str(line).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("invalid request at column {}: {e}", e.column()),
        )
    })
}
