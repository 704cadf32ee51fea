//! A running cell as something that answers API requests, wherever it is:
//! [`RemoteCell`] reaches one through its control socket; the VMM's own
//! runtime answers in-process. Used by requests that involve several cells
//! ([`super::handover`]) and by the CI runner's hotplug torture.

use super::protocol::{ApiError, ErrorKind, Request};
use std::time::Duration;

/// A running cell that takes API requests: the local cell (its requests
/// handled in-process) or one reached through its control socket.
pub trait CellEndpoint {
    /// The cell's name.
    fn name(&self) -> &str;
    /// Sends `request` to the cell; the answer must come within `within`.
    fn call(&self, request: &Request, within: Duration) -> Result<serde_json::Value, ApiError>;
}

/// A running cell reached through its control socket.
pub struct RemoteCell {
    name: String,
    socket: std::path::PathBuf,
}

impl RemoteCell {
    /// The cell named `name` (its socket in the runtime directory).
    pub fn new(name: &str) -> Self {
        Self::at(name, super::socket_path(name))
    }

    /// The cell named `name` serving its API on `socket`.
    pub fn at(name: &str, socket: std::path::PathBuf) -> Self {
        RemoteCell {
            name: name.to_string(),
            socket,
        }
    }
}

impl CellEndpoint for RemoteCell {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: &Request, within: Duration) -> Result<serde_json::Value, ApiError> {
        let r = super::client::call(&self.socket, request, within)
            .map_err(|e| ApiError::new(ErrorKind::NotFound, format!("cell {}: {e}", self.name)))?;
        match (r.ok, r.result, r.error) {
            (true, result, _) => Ok(result.unwrap_or(serde_json::Value::Null)),
            (false, _, Some(e)) => Err(e),
            (false, _, None) => Err(ApiError::new(
                ErrorKind::Internal,
                format!("cell {}: the request failed without a reason", self.name),
            )),
        }
    }
}
