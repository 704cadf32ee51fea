//! The control API's messages: one JSON object per line in each direction.
//!
//! Request:  `{"op": "status"}`, `{"op": "devices"}`,
//!           `{"op": "attach", "device": {...description...}}`,
//!           `{"op": "detach", "id": "hot0", "force": false}`,
//!           `{"op": "plug", "connector": "j1", "addon": {...}, "overlay_name": "b.dtso",
//!            "overlay": "/dts-v1/; ..."}`, `{"op": "unplug", "connector": "j1"}`,
//!           `{"op": "pause"}`, `{"op": "resume"}`, `{"op": "destroy"}`,
//!           `{"op": "shutdown", "force": false}`, `{"op": "stats"}`.
//! Response: `{"ok": true, "result": {...}}` or
//!           `{"ok": false, "error": {"kind": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};

/// Protocol version reported by `status`.
pub const API_VERSION: u32 = 1;

/// Largest request line accepted (bytes).
pub const MAX_REQUEST: usize = 1 << 20;

/// Largest response line a client accepts (bytes).
pub const MAX_RESPONSE: usize = 16 << 20;

/// Longest guest wait a request may ask for (`timeout_ms`): 5 minutes.
pub const MAX_GUEST_TIMEOUT_MS: u64 = 300_000;

/// A request to a running cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The cell's state and the guest agent's status.
    Status {},
    /// Every device of the cell with its state.
    Devices {},
    /// Attach a device described by a device description (docs/overlays.md):
    /// one device table of a cell file, as JSON
    /// (`{"virtio_mmio": [{"id": "rng1", "kind": "rng"}]}`).
    Attach {
        /// The description, parsed once from the request line into a value
        /// tree that cellvm's config validator reads.
        device: toml::Value,
        /// The directory relative paths in the description resolve against
        /// (the CLI sends the description file's); without it, paths must
        /// be absolute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_dir: Option<std::path::PathBuf>,
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
    /// Plug an add-on board into a connector (docs/addons.md): every device
    /// of the board, one overlay, one guest acknowledgement.
    Plug {
        /// The connector's id.
        connector: String,
        /// The add-on description, as a value tree of its TOML file.
        addon: toml::Value,
        /// The overlay source's name, for messages.
        overlay_name: String,
        /// The overlay source's text.
        overlay: String,
        /// The directory relative paths in the description resolve against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_dir: Option<std::path::PathBuf>,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Unplug the add-on board from a connector.
    Unplug {
        /// The connector's id.
        connector: String,
        /// Tear the board down even if the guest refuses or does not answer.
        #[serde(default)]
        force: bool,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Attach a connector at run time (docs/addons.md): a `[[connector]]`
    /// table as a value tree (`{"connector": [{"id": "j3"}]}`).
    Connect {
        /// The description.
        connector: toml::Value,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Detach a connector that `connect` attached.
    Disconnect {
        /// The connector's id.
        id: String,
        /// Unplug its add-on first, and tear down what the guest refuses.
        #[serde(default)]
        force: bool,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Add one function to a PCI host bridge the cell has (docs/pci.md,
    /// "Functions on a running bridge"): a `[[pci_bridge.device]]` table
    /// as a value tree (`{"pci_bridge": {"device": [{"slot": 3, "kind":
    /// "test"}]}}`).
    AddFunction {
        /// The bridge's id.
        bridge: String,
        /// The function's description.
        function: toml::Value,
        /// The directory relative paths in it resolve against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_dir: Option<std::path::PathBuf>,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Remove one function from a PCI host bridge, with the guest's consent.
    RemoveFunction {
        /// The bridge's id.
        bridge: String,
        /// The function: `DD.F`, `DD` (function 0) or `BB:DD.F`.
        function: String,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Stop every vCPU (the cell keeps its memory and devices).
    Pause {},
    /// Start the vCPUs of a paused cell (or one created with `--paused`).
    Resume {},
    /// Stop the cell now; `cellvm run` exits (docs/cli.md).
    Destroy {},
    /// Ask the guest to power off (through its agent) and wait until it
    /// has; `force` destroys the cell if the guest refuses, has no agent or
    /// does not power off in time.
    Shutdown {
        /// Destroy the cell if the guest does not power off.
        #[serde(default)]
        force: bool,
        /// How long to wait for the guest's answer and its poweroff
        /// together (default 30 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Exit counts per vCPU and access counts per device.
    Stats {},
    /// Enable a `reserved` or `disabled` device of the cell file (the guest
    /// creates it; docs/partitioning.md).
    Enable {
        /// The device id.
        id: String,
        /// How long to wait for the guest (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Take the image of a reserved device over from cell `from`, which
    /// still holds it (the first step of `cellvm move`): locked now,
    /// confirmed by the `enable` that follows.
    Claim {
        /// The device id.
        id: String,
        /// The cell giving the device.
        from: String,
    },
    /// Drop a handover claim that will not be enabled (a move that failed).
    Unclaim {
        /// The device id.
        id: String,
    },
    /// Hand device `id` of this cell to the running cell `to` (both guests
    /// consent: this guest disables it, `to`'s enables it; see
    /// [`handover`](super::handover)).
    Move {
        /// The device id.
        id: String,
        /// The receiving cell.
        to: String,
        /// How long each guest may take to answer (default 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Disable an `okay` device of the cell file (the guest removes it; it
    /// becomes `reserved`).
    Disable {
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
    /// Too many connections are open; try again.
    Busy,
}

/// A typed error for the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Category.
    pub kind: ErrorKind,
    /// What was wrong, for people.
    pub message: String,
    /// What was done before it went wrong, for requests that do several
    /// things (`move`: its [`MoveReport`](super::handover::MoveReport)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            detail: None,
        }
    }
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::BadRequest,
        ErrorKind::InvalidDevice,
        ErrorKind::Conflict,
        ErrorKind::NotFound,
        ErrorKind::GuestRefused,
        ErrorKind::GuestTimeout,
        ErrorKind::NoAgent,
        ErrorKind::Unsupported,
        ErrorKind::Stopping,
        ErrorKind::Internal,
        ErrorKind::Busy,
    ];

    /// The name scripts see (`guest_refused`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::InvalidDevice => "invalid_device",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not_found",
            ErrorKind::GuestRefused => "guest_refused",
            ErrorKind::GuestTimeout => "guest_timeout",
            ErrorKind::NoAgent => "no_agent",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Stopping => "stopping",
            ErrorKind::Internal => "internal",
            ErrorKind::Busy => "busy",
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

/// A successful request's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `status`.
    Status(StatusInfo),
    /// `devices`.
    Devices(Vec<DeviceInfo>),
    /// `attach` (boxed: the largest answer by far).
    Attached(Box<AttachResult>),
    /// `detach`.
    Detached(DetachResult),
    /// `pause`, `resume`, `destroy`: the state after the request.
    State(StateInfo),
    /// `stats`.
    Stats(StatsInfo),
    /// `shutdown`.
    Shutdown(ShutdownResult),
    /// `enable`, `disable`.
    DeviceState(DeviceStateResult),
    /// `move`.
    Moved(super::handover::MoveReport),
    /// `plug`.
    Plugged(PlugResult),
    /// `unplug`.
    Unplugged(UnplugResult),
    /// `connect`.
    Connected(ConnectResult),
    /// `disconnect`.
    Disconnected(DisconnectResult),
    /// `add_function`, `remove_function`.
    Function(FunctionResult),
}

/// The result of `add_function` and `remove_function`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionResult {
    /// The bridge's id.
    pub bridge: String,
    /// The function as the guest names it (`e0000000:08:03.0`).
    pub function: String,
    /// What it is (`test`, `virtio`, `ivshmem`).
    pub kind: String,
    /// `added` or `removed`.
    pub change: &'static str,
    /// From the request to the guest's acknowledgement.
    pub elapsed_ms: f64,
}

/// The result of `connect`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectResult {
    /// The connector's id.
    pub id: String,
    /// Its window's base.
    pub base: String,
    /// Its window's size.
    pub size: String,
    /// Its IOAPIC pins.
    pub irqs: Vec<u32>,
    /// The guest agent's id of its overlay.
    pub overlay: u32,
    /// The node paths the overlay added.
    pub nodes: Vec<String>,
    /// From the request to the guest's acknowledgement.
    pub elapsed_ms: f64,
}

/// The result of `disconnect`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisconnectResult {
    /// The connector's id.
    pub id: String,
    /// Whether `force` removed it although the guest did not acknowledge.
    pub forced: bool,
    /// The add-on `force` unplugged first, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unplugged: Option<String>,
    /// What the guest said, when forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_error: Option<String>,
    /// From the request to the answer.
    pub elapsed_ms: f64,
}

/// The result of `plug`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlugResult {
    /// The connector.
    pub connector: String,
    /// The board's name.
    pub addon: String,
    /// The board's devices as placed.
    pub devices: Vec<DeviceInfo>,
    /// The guest agent's id of the board's overlay.
    pub overlay: u32,
    /// The node paths the overlay added.
    pub nodes: Vec<String>,
    /// From the request to the guest's acknowledgement.
    pub elapsed_ms: f64,
}

/// The result of `unplug`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnplugResult {
    /// The connector.
    pub connector: String,
    /// The board that was plugged in.
    pub addon: String,
    /// Whether it was a surprise removal (`force`): the board's devices
    /// were cut off before the guest was told.
    pub forced: bool,
    /// Why the guest did not drop the board's nodes (a surprise removal
    /// goes on regardless).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_error: Option<String>,
    /// From the request to the answer.
    pub elapsed_ms: f64,
}

/// `enable` / `disable`: the device's state now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStateResult {
    /// The device id.
    pub id: String,
    /// `okay` or `reserved`.
    pub state: &'static str,
    /// Whether `force` tore the device down although the guest did not
    /// acknowledge.
    pub forced: bool,
    /// What the guest said, when forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_error: Option<String>,
    /// Time from the request to the answer.
    pub elapsed_ms: f64,
}

/// `shutdown`: how the cell is going.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShutdownResult {
    /// `stopping`.
    pub state: &'static str,
    /// Why the cell stopped (`guest powered off`, or `destroyed (...)`
    /// when forced).
    pub stopped: String,
    /// Whether `force` destroyed the cell.
    pub forced: bool,
    /// Why the guest did not power off, when forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_error: Option<String>,
    /// Time from the request to the stop.
    pub elapsed_ms: f64,
}

/// The cell's state after a lifecycle request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateInfo {
    /// `paused`, `running` or `stopping`.
    pub state: &'static str,
}

/// One vCPU's exits since the cell started (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VcpuStats {
    /// vCPU index.
    pub vcpu: usize,
    /// MMIO exits.
    pub mmio: u64,
    /// Port I/O exits.
    pub pio: u64,
    /// HLT exits (with the in-kernel irqchip, rare).
    pub hlt: u64,
    /// `KVM_RUN` returns for a kick (pause, stop).
    pub interrupted: u64,
    /// Accesses no device served.
    pub unhandled: u64,
}

/// One device's guest accesses since it was registered (`stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// The bus entry's name (`console`, `virtio-mmio rng0`, ...).
    pub device: String,
    /// `mmio` or `pio`.
    pub bus: &'static str,
    /// Reads and writes served.
    pub accesses: u64,
}

/// `stats`: like `jailhouse cell stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsInfo {
    /// The cell's name.
    pub name: String,
    /// Per vCPU.
    pub vcpus: Vec<VcpuStats>,
    /// Per device with at least one bus entry.
    pub devices: Vec<DeviceStats>,
}

/// The cell's state (`status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusInfo {
    /// The cell's name.
    pub name: String,
    /// `paused`, `running` or `stopping`.
    pub state: &'static str,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Time since the cell was created.
    pub uptime_ms: u64,
    /// [`API_VERSION`].
    pub api_version: u32,
    /// The guest agent.
    pub agent: AgentInfo,
    /// cellvm's own memory.
    pub memory: MemoryInfo,
}

/// The guest agent's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// `not-seen`, `ready`, `incompatible` or `gone`.
    pub state: &'static str,
    /// The agent's protocol version, once it said hello.
    pub version: Option<u32>,
    /// The agent's capability bits, when ready.
    pub capabilities: Option<u32>,
    /// Guest messages refused so far.
    pub rejected_messages: u64,
    /// The last refused message (`-errno: what`).
    pub last_error: Option<String>,
}

/// cellvm's memory: the resident set (guest RAM included), the bytes Rust
/// code holds on the heap, and the C allocator's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    /// VmRSS.
    pub vm_rss_kib: Option<u64>,
    /// RssAnon.
    pub rss_anon_kib: Option<u64>,
    /// Bytes live on the heap ([`crate::heap`]).
    pub heap_live_bytes: usize,
    /// glibc's bytes in use (includes per-thread caches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_in_use_bytes: Option<usize>,
    /// glibc's free bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_free_bytes: Option<usize>,
}

/// One device of a cell (`devices`) or one just attached (`attach`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// `uart`, `platform`, `virtio-mmio` or `pci-bridge`.
    pub kind: &'static str,
    /// `boot` or `attached` (absent in an attach result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// MMIO base (`0xd0100000`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// MMIO size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// First I/O port (`0x2f8`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// IOAPIC pin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq: Option<u32>,
    /// A bridge's configuration window (`base+size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A bridge's bus range (`08-08`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buses: Option<String>,
    /// A bridge's 32-bit window (`base+size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmio32: Option<String>,
    /// A bridge's IOAPIC pins for INTA..INTD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intx: Option<[u32; 4]>,
    /// A bridge's functions (`08:01.0 test`), those added at run time
    /// included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// The guest agent's id of the overlay that added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<u32>,
    /// The node paths that overlay added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// How long ago it was attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_ms_ago: Option<u64>,
    /// The connector an add-on's device sits on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// The add-on board a device belongs to, or a connector holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon: Option<String>,
}

/// The result of `attach`: the device as placed, and the time it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttachResult {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceInfo,
    /// From the request to the guest's acknowledgement.
    pub elapsed_ms: f64,
    /// Where `elapsed_ms` went.
    #[serde(flatten)]
    pub breakdown: AttachBreakdown,
}

/// The steps of an attach, in milliseconds (docs/benchmarks.md, "Attach
/// benchmark"). They add up to `elapsed_ms` (up to rounding); a step the
/// guest's agent does not report is left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AttachBreakdown {
    /// Planning: validation, placement, the overlay checked against the
    /// live tree.
    pub plan_ms: f64,
    /// Claiming host resources and building and registering the model.
    pub build_ms: f64,
    /// From sending the overlay until the agent took it out of the mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_ms: Option<f64>,
    /// Within `deliver_ms`: from the guest's interrupt to the agent's
    /// worker running, as the agent measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_ms: Option<f64>,
    /// The agent's apply, as it measured it (of_overlay_fdt_apply and the
    /// drivers' probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_ms: Option<f64>,
    /// The rest of the guest round trip: the ACK crossing back and the
    /// waiting API thread waking up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_ms: Option<f64>,
    /// Committing the plan after the ACK.
    pub commit_ms: f64,
}

/// The result of `detach`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetachResult {
    /// The device id.
    pub id: String,
    /// Always true (a refused detach is an error).
    pub detached: bool,
    /// Torn down although the guest failed (`--force`).
    pub forced: bool,
    /// The guest agent that applied it was gone: the guest had dropped it.
    pub guest_already_dropped: bool,
    /// What the guest said, when it failed.
    pub guest_error: Option<String>,
    /// From the request to the end of the teardown.
    pub elapsed_ms: f64,
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
