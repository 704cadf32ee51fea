//! The paravirtual channel between cellvm and a guest agent: an MMIO device
//! (`cellvm,channel-v1`, 64 KiB at
//! [`CHANNEL_BASE`](crate::platform::CHANNEL_BASE), level-high IRQ
//! [`CHANNEL_IRQ`](crate::platform::CHANNEL_IRQ)) carrying device-tree
//! overlays to the guest and the guest agent's answers back.
//!
//! - [`protocol`]: the wire format (registers, mailboxes, message header,
//!   operations); `docs/channel.md` is its normative description.
//! - [`ChannelDevice`]: the [`BusDevice`](crate::devices::BusDevice) the VMM
//!   registers on the MMIO bus.
//! - [`ChannelHandle`]: what the VMM calls: blocking requests with a
//!   timeout, one outstanding at a time.
//!
//! ```no_run
//! # use cellvm::channel::{ChannelDevice, ChannelError};
//! # use std::{sync::Arc, time::Duration};
//! # fn demo(line: Arc<dyn cellvm::devices::InterruptLine>, dtbo: &[u8]) -> Result<(), ChannelError> {
//! let (device, channel) = ChannelDevice::new(line);
//! // mmio.insert("channel", CHANNEL_BASE, CHANNEL_SIZE, Arc::new(Mutex::new(device)))?;
//! channel.wait_for_agent(Duration::from_secs(10))?;
//! let id = channel.apply_overlay(dtbo, Duration::from_secs(5))?;
//! channel.remove_overlay(id, Duration::from_secs(5))?;
//! # Ok(()) }
//! ```

mod device;
mod mailbox_mem;
pub mod protocol;

#[cfg(test)]
mod agent_protocol_tests;
#[cfg(test)]
mod tests;

pub use device::ChannelDevice;
pub use mailbox_mem::MailboxMemory;

use device::{Reply, Shared};
use protocol::Op;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The guest kernel's id of an applied overlay (the `ovcs_id` of
/// `of_overlay_fdt_apply()`): what `remove_overlay` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverlayId(pub u32);

/// Where an overlay apply's time went, from the call to the ACK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApplyTrace {
    /// Until the agent took the message out of the mailbox (waiting for an
    /// earlier request, the interrupt, the agent's worker being scheduled);
    /// `None` if the agent answered without releasing the mailbox first.
    pub delivered: Option<Duration>,
    /// Within `delivered`: from the guest's interrupt to the agent's worker
    /// running, as the agent measured it; `None` if it does not report it
    /// (or did not take the message on an interrupt).
    pub guest_wake: Option<Duration>,
    /// The apply as the agent measured it, from taking the message to
    /// sending its ACK (`of_overlay_fdt_apply()` and the drivers' probes);
    /// `None` from an agent that does not report it.
    pub guest: Option<Duration>,
    /// The whole call.
    pub total: Duration,
}

impl std::fmt::Display for OverlayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "overlay {}", self.0)
    }
}

/// What the agent announced in its HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentInfo {
    /// Highest protocol version the agent implements.
    pub version: u32,
    /// Agent capability bits (`protocol::AGENT_CAP_*`).
    pub capabilities: u32,
}

/// Where the guest agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// No HELLO yet.
    NotSeen,
    /// HELLO accepted: requests may be sent.
    Ready(AgentInfo),
    /// The last HELLO announced a protocol version the host cannot speak.
    Incompatible {
        /// The version the agent announced.
        version: u32,
    },
    /// The agent said BYE (e.g. its module was unloaded).
    Gone,
}

/// The most recent guest message the host refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    /// Positive Linux errno sent back to the guest (`-errno` on the wire).
    pub errno: i32,
    /// What was wrong with it.
    pub what: String,
}

/// The agent's state as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// Not seen / ready (with version and capabilities) / incompatible / gone.
    pub state: AgentState,
    /// The last refused guest message, if any.
    pub last_error: Option<GuestError>,
    /// Guest messages refused so far.
    pub rejected_messages: u64,
    /// NAKs to the guest dropped because the guest did not drain its mailbox.
    pub dropped_messages: u64,
    /// Agent generation: the number of HELLOs accepted. Overlay ids are only
    /// meaningful within the generation that applied them (an agent that
    /// unloads removes its overlays; a new one numbers them afresh).
    pub generation: u64,
    /// The sequence number of the host request waiting for the agent's
    /// reply, if one is outstanding and not yet answered (a caller is
    /// blocked in [`ChannelHandle`] on it).
    pub pending_request: Option<u32>,
}

/// Errors of [`ChannelHandle`] requests.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ChannelError {
    /// No agent has said HELLO (or it said BYE, or is incompatible).
    #[error("no guest agent on the channel (no HELLO yet, or it said BYE)")]
    NoAgent,
    /// Another request stayed outstanding until this one's deadline.
    #[error("another channel request was still outstanding at the deadline")]
    Busy,
    /// No reply before the deadline. A late reply is refused, never taken
    /// for the answer to a later request.
    #[error("the guest agent did not answer in time")]
    Timeout,
    /// The agent refused the request; `errno` is the positive Linux errno
    /// (the kernel's error, e.g. 22 for `-EINVAL` from `of_overlay_fdt_apply`).
    #[error("the guest agent refused the request: -{errno} ({})", protocol::errno::name(*errno).unwrap_or("unknown errno"))]
    Nak {
        /// Positive Linux errno.
        errno: i32,
    },
    /// The payload does not fit in the host→guest mailbox.
    #[error("{size} bytes do not fit in the channel's {max}-byte payload")]
    TooLarge {
        /// Payload size given.
        size: usize,
        /// Largest payload.
        max: usize,
    },
    /// The agent answered with a malformed reply (it was refused too).
    #[error("the guest agent sent a malformed reply: {0}")]
    BadReply(String),
    /// The agent restarted (new HELLO) or left (BYE) while the request was
    /// outstanding; it will never answer it.
    #[error("the guest agent restarted or left while the request was outstanding")]
    AgentReset,
    /// The channel was closed ([`ChannelHandle::close`]): the cell is
    /// stopping and no request is waited for any more.
    #[error("the cell is stopping: the channel to the guest agent is closed")]
    Stopped,
}

/// The VMM's side of the channel. Cheap to clone; all methods block at most
/// until their timeout and may be called from any thread. Requests are
/// serialised: a caller waits (within its own timeout) while another
/// caller's request is outstanding.
#[derive(Clone)]
pub struct ChannelHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHandle").finish_non_exhaustive()
    }
}

impl ChannelHandle {
    /// The agent's state now.
    pub fn agent_status(&self) -> AgentStatus {
        self.shared.status()
    }

    /// Blocks until an agent has said HELLO (returns at once if it has);
    /// [`ChannelError::Timeout`] otherwise.
    pub fn wait_for_agent(&self, timeout: Duration) -> Result<AgentInfo, ChannelError> {
        self.shared.wait_for_agent(timeout)
    }

    /// Sends the overlay `dtb` and waits for the agent to apply it.
    /// `timeout` covers waiting for an earlier request, delivery and the
    /// guest's `of_overlay_fdt_apply()`.
    pub fn apply_overlay(&self, dtb: &[u8], timeout: Duration) -> Result<OverlayId, ChannelError> {
        self.apply_overlay_traced(dtb, timeout).map(|(id, _)| id)
    }

    /// [`Self::apply_overlay`], with where the time went.
    pub fn apply_overlay_traced(
        &self,
        dtb: &[u8],
        timeout: Duration,
    ) -> Result<(OverlayId, ApplyTrace), ChannelError> {
        match self
            .shared
            .request_traced(Op::ApplyOverlay, dtb.to_vec(), timeout)?
        {
            (
                Reply::Applied {
                    id,
                    guest_us,
                    wake_us,
                },
                trace,
            ) => {
                let micros = |us: u32| Duration::from_micros(u64::from(us));
                Ok((
                    OverlayId(id),
                    ApplyTrace {
                        delivered: trace.taken,
                        guest_wake: wake_us.map(micros),
                        guest: guest_us.map(micros),
                        total: trace.total,
                    },
                ))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Asks the agent to remove overlay `id` (its devices first, then the
    /// overlay) and waits for it.
    pub fn remove_overlay(&self, id: OverlayId, timeout: Duration) -> Result<(), ChannelError> {
        match self
            .shared
            .request(Op::RemoveOverlay, id.0.to_le_bytes().to_vec(), timeout)?
        {
            Reply::Removed => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the channel for good (the cell is stopping): the outstanding
    /// request and every caller waiting for one, or for the agent, return
    /// [`ChannelError::Stopped`] at once, and so do all later calls.
    pub fn close(&self) {
        self.shared.close()
    }

    /// Asks the agent to power the guest off in an orderly way and waits
    /// for its answer: `Ok` once the guest acknowledged (it then powers
    /// off; with [`on_power_off`](Self::on_power_off) set, the cell stops
    /// when it does).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ChannelError> {
        match self.shared.request(Op::Shutdown, Vec::new(), timeout)? {
            Reply::ShuttingDown => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// What the guest's POWER_OFF notice does; from then on `HOST_CAPS`
    /// announces [`HOST_CAP_POWER_OFF`](protocol::HOST_CAP_POWER_OFF).
    /// `f` runs on the vCPU thread that rang the doorbell, under the
    /// channel's lock: it must only record the stop.
    pub fn on_power_off(&self, f: Box<dyn Fn() + Send>) {
        self.shared.set_on_power_off(f)
    }

    /// Asks the agent to rescan the bus of `function` and waits until the
    /// guest has it (NAK -ENODEV if it did not appear).
    pub fn pci_rescan(
        &self,
        function: protocol::PciFunction,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        self.pci_request(Op::PciRescan, function, timeout)
    }

    /// Asks the agent to remove `function` (its driver unbound first; the
    /// guest's consent hook may refuse) and waits for it.
    pub fn pci_remove(
        &self,
        function: protocol::PciFunction,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        self.pci_request(Op::PciRemove, function, timeout)
    }

    fn pci_request(
        &self,
        op: Op,
        function: protocol::PciFunction,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        match self.shared.request(op, function.encode(), timeout)? {
            Reply::PciDone => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Liveness check: the overlays the agent has applied (and not removed).
    pub fn ping(&self, timeout: Duration) -> Result<Vec<OverlayId>, ChannelError> {
        match self.shared.request(Op::Ping, Vec::new(), timeout)? {
            Reply::Overlays(ids) => Ok(ids.into_iter().map(OverlayId).collect()),
            other => Err(unexpected(other)),
        }
    }
}

/// The device only hands a request the reply kinds valid for it; defensive.
fn unexpected(reply: Reply) -> ChannelError {
    ChannelError::BadReply(format!("unexpected reply {reply:?}"))
}
