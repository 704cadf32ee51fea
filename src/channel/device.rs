//! The channel's MMIO device model ([`ChannelDevice`]) and the host side of
//! the protocol: the host→guest queue and mailbox, validation of everything
//! the guest sends, and the single outstanding request [`ChannelHandle`]
//! callers wait on.
//!
//! All state sits behind one mutex shared by the device (vCPU threads) and
//! the handles (VMM threads); waiting callers sleep on one condvar. Guest
//! messages are processed synchronously inside the `G2H_DOORBELL` write, so
//! the guest→host mailbox is free again when that write completes.

use super::mailbox_mem::MailboxMemory;
use super::protocol::{self as proto, errno, regs, Hello, Message, Op};
use super::{AgentInfo, AgentState, AgentStatus, ChannelError, ChannelHandle, GuestError};
use crate::devices::{le_value, BusDevice, InterruptLine};
use crate::ratelimit::RateLimiter;
use crate::sync;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Host messages (NAKs, HELLO replies) that may wait for the mailbox; more
/// are dropped (counted), so a misbehaving guest cannot grow host memory.
const MAX_QUEUED: usize = 8;
/// Timed-out request sequence numbers remembered to classify late replies.
const RECENT_TIMEOUTS: usize = 16;

/// A successful reply to a host request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// ACK of APPLY_OVERLAY with the guest's overlay id.
    /// The overlay id, how long the agent says the apply took and how long
    /// its worker took to run after the interrupt (the optional second and
    /// third words of its ACK, in microseconds; `u32::MAX`: unknown).
    Applied {
        id: u32,
        guest_us: Option<u32>,
        wake_us: Option<u32>,
    },
    /// ACK of REMOVE_OVERLAY.
    Removed,
    /// STATUS in answer to PING: the agent's overlay ids.
    Overlays(Vec<u32>),
    /// ACK of SHUTDOWN: the guest is powering off.
    ShuttingDown,
    /// ACK of PCI_RESCAN or PCI_REMOVE.
    PciDone,
}

/// A host message waiting for the host→guest mailbox.
struct Outgoing {
    bytes: Vec<u8>,
    seq: u32,
    request: bool,
}

/// The message currently in the host→guest mailbox.
#[derive(Clone, Copy)]
struct Posted {
    ticket: u32,
    seq: u32,
    request: bool,
}

/// The one host request in flight.
struct Outstanding {
    seq: u32,
    op: Op,
    /// Set by the device when the reply (or an agent reset) arrives; taken
    /// by the waiting caller.
    reply: Option<Result<Reply, ChannelError>>,
    /// When the guest released the mailbox holding it (H2G_DONE).
    taken_at: Option<Instant>,
}

/// When a request's steps happened, for [`super::ChannelHandle`]'s traced
/// calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RequestTrace {
    /// From the call to the guest taking the message out of the mailbox.
    pub taken: Option<Duration>,
    /// From the call to the reply.
    pub total: Duration,
}

struct State {
    int_status: u32,
    int_enable: u32,
    line_high: bool,
    h2g: Vec<u8>,
    posted: Option<Posted>,
    last_ticket: u32,
    h2g_result: i32,
    queue: VecDeque<Outgoing>,
    g2h: Vec<u8>,
    g2h_result: i32,
    next_seq: u32,
    outstanding: Option<Outstanding>,
    timed_out: VecDeque<(u32, Op)>,
    agent: AgentState,
    last_error: Option<GuestError>,
    rejected: u64,
    /// HELLOs accepted so far: each is a new agent generation.
    hellos: u64,
    dropped: u64,
    /// Memory the guest maps at the mailboxes, when the VMM provided it:
    /// `h2g` is mirrored into it, and `g2h` is copied from it at the doorbell.
    mem: Option<Arc<MailboxMemory>>,
    /// Closed by the VMM: every request fails with `ChannelError::Stopped`.
    closed: bool,
    /// What a POWER_OFF from the guest does (the VMM stops the cell).
    on_power_off: Option<Box<dyn Fn() + Send>>,
}

impl State {
    fn new(mem: Option<Arc<MailboxMemory>>) -> Self {
        State {
            int_status: 0,
            int_enable: 0,
            line_high: false,
            h2g: vec![0; proto::H2G_SIZE as usize],
            posted: None,
            last_ticket: 0,
            h2g_result: 0,
            queue: VecDeque::new(),
            g2h: vec![0; proto::G2H_SIZE as usize],
            g2h_result: 0,
            next_seq: 1,
            outstanding: None,
            timed_out: VecDeque::new(),
            agent: AgentState::NotSeen,
            last_error: None,
            rejected: 0,
            hellos: 0,
            dropped: 0,
            mem,
            closed: false,
            on_power_off: None,
        }
    }

    fn reg(&self, reg: u64) -> u32 {
        match reg {
            regs::MAGIC => proto::DEVICE_MAGIC,
            regs::VERSION => proto::PROTOCOL_VERSION,
            regs::HOST_CAPS if self.on_power_off.is_some() => proto::HOST_CAP_POWER_OFF,
            regs::HOST_CAPS => 0,
            regs::H2G_OFFSET => proto::H2G_OFFSET as u32,
            regs::H2G_SIZE => proto::H2G_SIZE as u32,
            regs::G2H_OFFSET => proto::G2H_OFFSET as u32,
            regs::G2H_SIZE => proto::G2H_SIZE as u32,
            regs::INT_STATUS => self.int_status,
            regs::INT_ENABLE => self.int_enable,
            regs::H2G_STATE => u32::from(self.posted.is_some()),
            regs::H2G_TICKET => self.posted.map_or(0, |p| p.ticket),
            regs::H2G_RESULT => self.h2g_result as u32,
            regs::G2H_RESULT => self.g2h_result as u32,
            _ => 0,
        }
    }

    fn read_byte(&self, off: u64) -> u8 {
        if off < regs::PAGE_SIZE {
            self.reg(off & !3).to_le_bytes()[(off & 3) as usize]
        } else if let Some(i) = index_in(off, proto::H2G_OFFSET, proto::H2G_SIZE) {
            self.h2g[i]
        } else if let Some(i) = index_in(off, proto::G2H_OFFSET, proto::G2H_SIZE) {
            self.g2h[i]
        } else {
            0xff
        }
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    /// Posts the next queued message if the mailbox is free.
    fn post_next(&mut self) {
        if self.posted.is_some() {
            return;
        }
        let Some(m) = self.queue.pop_front() else {
            return;
        };
        let n = m.bytes.len().min(self.h2g.len());
        self.h2g[..n].copy_from_slice(&m.bytes[..n]);
        if let Some(mem) = &self.mem {
            mem.write_h2g(0, &m.bytes[..n]);
        }
        self.last_ticket = self.last_ticket.wrapping_add(1).max(1);
        self.posted = Some(Posted {
            ticket: self.last_ticket,
            seq: m.seq,
            request: m.request,
        });
        self.int_status |= proto::INT_H2G;
    }

    /// Empties the mailbox (consumed or retracted) and posts the next message.
    fn release_mailbox(&mut self) {
        self.posted = None;
        self.h2g[..proto::HEADER_LEN].fill(0);
        if let Some(mem) = &self.mem {
            mem.write_h2g(0, &[0; proto::HEADER_LEN]);
        }
        self.int_status &= !proto::INT_H2G;
        self.post_next();
    }

    /// Takes request `seq` back if the guest has not consumed it yet.
    fn retract(&mut self, seq: u32) {
        self.queue.retain(|m| !(m.request && m.seq == seq));
        if self.posted.is_some_and(|p| p.request && p.seq == seq) {
            self.release_mailbox();
        }
    }

    /// Drops every host message not yet consumed (a new agent instance).
    fn flush(&mut self) {
        self.queue.clear();
        if self.posted.is_some() {
            self.release_mailbox();
        }
    }

    fn enqueue(&mut self, msg: &Message, request: bool) {
        if !request && self.queue.len() >= MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(Outgoing {
            bytes: msg.encode(),
            seq: msg.seq,
            request,
        });
        self.post_next();
    }

    /// Fails the outstanding request, if any, with `err`.
    fn fail_outstanding(&mut self, err: ChannelError) {
        if let Some(o) = self.outstanding.as_mut() {
            if o.reply.is_none() {
                o.reply = Some(Err(err));
            }
        }
    }
}

fn index_in(off: u64, base: u64, size: u64) -> Option<usize> {
    off.checked_sub(base)
        .filter(|i| *i < size)
        .map(|i| i as usize)
}

/// A guest message the host refuses: positive errno and a description.
type Refusal = (i32, String);

/// State shared by the device and its handles.
pub(super) struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    line: Arc<dyn InterruptLine>,
    /// Rejected guest messages and ignored accesses.
    log: RateLimiter,
    /// HELLO/BYE notices on stderr.
    notice: RateLimiter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Sleeps on the condvar until notified or `deadline` (spurious wakeups
    /// included: callers re-check their condition).
    fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return guard;
        }
        sync::wait_timeout(&self.cond, guard, left).0
    }

    /// Drives the line to `INT_STATUS & INT_ENABLE != 0` (only on changes).
    fn sync_line(&self, st: &mut State) {
        let high = st.int_status & st.int_enable & proto::INT_ALL != 0;
        if high != st.line_high {
            st.line_high = high;
            self.line.set_level(high);
        }
    }

    fn guest_read(&self, offset: u64, data: &mut [u8]) {
        let st = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(off) if off < proto::WINDOW_SIZE => st.read_byte(off),
                _ => 0xff,
            };
        }
    }

    fn guest_write(&self, offset: u64, data: &[u8]) {
        let mut st = self.lock();
        if offset < regs::PAGE_SIZE {
            self.register_write(&mut st, offset, data);
        } else {
            let mut ignored = false;
            for (i, b) in data.iter().enumerate() {
                match offset
                    .checked_add(i as u64)
                    .and_then(|off| index_in(off, proto::G2H_OFFSET, proto::G2H_SIZE))
                {
                    Some(idx) => st.g2h[idx] = *b,
                    None => ignored = true,
                }
            }
            if ignored && self.log.allow() {
                log::debug!(
                    "channel: guest write of {} bytes at {offset:#x} outside the guest→host mailbox ignored",
                    data.len()
                );
            }
        }
        self.sync_line(&mut st);
    }

    fn register_write(&self, st: &mut State, offset: u64, data: &[u8]) {
        if data.len() != 4 || !offset.is_multiple_of(4) {
            if self.log.allow() {
                log::debug!(
                    "channel: {}-byte register write at {offset:#x} ignored (registers take aligned 32-bit writes)",
                    data.len()
                );
            }
            return;
        }
        let value = le_value(data) as u32;
        match offset {
            regs::INT_ACK => st.int_status &= !value,
            regs::INT_ENABLE => st.int_enable = value & proto::INT_ALL,
            regs::H2G_DONE => match st.posted {
                Some(p) if p.ticket == value => {
                    st.h2g_result = 0;
                    if let Some(o) = st
                        .outstanding
                        .as_mut()
                        .filter(|o| p.request && o.seq == p.seq)
                    {
                        o.taken_at = Some(Instant::now());
                    }
                    st.release_mailbox();
                }
                posted => {
                    st.h2g_result = -errno::ECANCELED;
                    if self.log.allow() {
                        log::warn!(
                            "channel: guest released host→guest ticket {value} but {} (copy discarded)",
                            match posted {
                                Some(p) => format!("ticket {} is posted", p.ticket),
                                None => "nothing is posted".to_string(),
                            }
                        );
                    }
                }
            },
            regs::G2H_DOORBELL => {
                // One copy of guest memory, taken now: everything below
                // looks at the copy only.
                if let Some(mem) = st.mem.clone() {
                    mem.read_g2h(&mut st.g2h);
                }
                st.g2h_result = match Message::decode(&st.g2h) {
                    Ok(msg) => {
                        let (seq, op) = (msg.seq, msg.op as u16);
                        match self.handle_guest_message(st, msg) {
                            Ok(()) => 0,
                            Err((e, what)) => self.refuse(st, Some((seq, op)), e, what),
                        }
                    }
                    Err((header, e)) => {
                        self.refuse(st, header.map(|h| (h.seq, h.op)), e.errno(), e.to_string())
                    }
                };
            }
            _ => {
                if self.log.allow() {
                    log::debug!(
                        "channel: write of {value:#x} to read-only register {offset:#x} ignored"
                    );
                }
            }
        }
    }

    /// Records and logs a rejected guest message, queues a NAK for it when
    /// its header could be read, and returns the `G2H_RESULT` value.
    fn refuse(&self, st: &mut State, id: Option<(u32, u16)>, err: i32, what: String) -> i32 {
        st.rejected += 1;
        if self.log.allow() {
            let name = errno::name(err).unwrap_or("?");
            match id {
                Some((seq, op)) => log::warn!(
                    "channel: rejected guest message (seq {seq}, op {op}): {what} (-{name})"
                ),
                None => log::warn!("channel: rejected guest message: {what} (-{name})"),
            }
        }
        if let Some((seq, op)) = id {
            let nak =
                Message::new(Op::Nak, seq, -err).with_payload(u32::from(op).to_le_bytes().to_vec());
            st.enqueue(&nak, false);
        }
        st.last_error = Some(GuestError { errno: err, what });
        -err
    }

    fn handle_guest_message(&self, st: &mut State, msg: Message) -> Result<(), Refusal> {
        match msg.op {
            Op::Hello => self.handle_hello(st, &msg),
            Op::Bye => {
                // The agent is gone: nothing it was sent will be answered.
                st.flush();
                st.fail_outstanding(ChannelError::AgentReset);
                st.agent = AgentState::Gone;
                if self.notice.allow() {
                    eprintln!("cellvm: channel: guest agent said BYE");
                }
                self.cond.notify_all();
                Ok(())
            }
            Op::PowerOff => {
                if self.notice.allow() {
                    eprintln!("cellvm: channel: the guest is powering off");
                }
                match &st.on_power_off {
                    Some(f) => f(),
                    None => log::warn!("channel: POWER_OFF from the guest, but nothing handles it"),
                }
                Ok(())
            }
            Op::Ack | Op::Nak | Op::Status => self.handle_reply(st, &msg),
            op => Err((
                errno::EOPNOTSUPP,
                format!("{} is a host-to-guest operation", op.name()),
            )),
        }
    }

    fn handle_hello(&self, st: &mut State, msg: &Message) -> Result<(), Refusal> {
        let Some(hello) = Hello::decode(&msg.payload) else {
            return Err((
                errno::EINVAL,
                format!("HELLO payload of {} bytes (needs 8)", msg.payload.len()),
            ));
        };
        // A (new) agent instance: whatever was in flight belongs to its
        // predecessor and will never be answered.
        st.flush();
        st.fail_outstanding(ChannelError::AgentReset);
        self.cond.notify_all();
        if hello.version < 1 {
            st.agent = AgentState::Incompatible {
                version: hello.version,
            };
            return Err((
                errno::EPROTONOSUPPORT,
                format!(
                    "agent protocol version {} (host speaks {})",
                    hello.version,
                    proto::PROTOCOL_VERSION
                ),
            ));
        }
        st.agent = AgentState::Ready(AgentInfo {
            version: hello.version,
            capabilities: hello.capabilities,
        });
        st.hellos += 1;
        let reply = Message::new(Op::Ack, msg.seq, 0).with_payload(
            Hello {
                version: proto::PROTOCOL_VERSION,
                capabilities: 0,
            }
            .encode(),
        );
        st.enqueue(&reply, false);
        if self.notice.allow() {
            eprintln!(
                "cellvm: channel: guest agent HELLO: protocol {}, capabilities {:#x}",
                hello.version, hello.capabilities
            );
        }
        Ok(())
    }

    fn handle_reply(&self, st: &mut State, msg: &Message) -> Result<(), Refusal> {
        let what = msg.op.name();
        let Some(o) = st
            .outstanding
            .as_mut()
            .filter(|o| o.seq == msg.seq && o.reply.is_none())
        else {
            if let Some((_, op)) = st.timed_out.iter().find(|(s, _)| *s == msg.seq) {
                return Err((
                    errno::ETIMEDOUT,
                    format!("late {what} for {} seq {} (timed out)", op.name(), msg.seq),
                ));
            }
            return Err((
                errno::ESRCH,
                match &st.outstanding {
                    Some(o) if o.reply.is_none() => format!(
                        "{what} seq {} does not match the outstanding request (seq {})",
                        msg.seq, o.seq
                    ),
                    _ => format!("{what} seq {} but no request is outstanding", msg.seq),
                },
            ));
        };
        let (result, refusal) = classify_reply(o.op, msg);
        o.reply = Some(result);
        // The agent answered, so it has the request even if it skipped H2G_DONE.
        st.retract(msg.seq);
        self.cond.notify_all();
        refusal.map_or(Ok(()), Err)
    }

    /// Sends request `op` and waits for its reply (see [`ChannelHandle`]).
    pub(super) fn request(
        &self,
        op: Op,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, ChannelError> {
        self.request_traced(op, payload, timeout).map(|(r, _)| r)
    }

    /// [`Self::request`], with when its steps happened.
    pub(super) fn request_traced(
        &self,
        op: Op,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(Reply, RequestTrace), ChannelError> {
        let called = Instant::now();
        if payload.len() > proto::MAX_H2G_PAYLOAD {
            return Err(ChannelError::TooLarge {
                size: payload.len(),
                max: proto::MAX_H2G_PAYLOAD,
            });
        }
        let deadline = deadline_after(timeout);
        let mut st = self.lock();
        // One request at a time: wait for the slot.
        loop {
            if st.closed {
                return Err(ChannelError::Stopped);
            }
            if !matches!(st.agent, AgentState::Ready(_)) {
                return Err(ChannelError::NoAgent);
            }
            if st.outstanding.is_none() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ChannelError::Busy);
            }
            st = self.wait_until(st, deadline);
        }
        let seq = st.seq();
        st.outstanding = Some(Outstanding {
            seq,
            op,
            reply: None,
            taken_at: None,
        });
        st.enqueue(&Message::new(op, seq, 0).with_payload(payload), true);
        self.sync_line(&mut st);
        loop {
            match st.outstanding.as_mut() {
                Some(o) if o.seq == seq => {
                    if let Some(reply) = o.reply.take() {
                        let trace = RequestTrace {
                            taken: o.taken_at.map(|t| t.saturating_duration_since(called)),
                            total: called.elapsed(),
                        };
                        st.outstanding = None;
                        self.cond.notify_all();
                        return reply.map(|r| (r, trace));
                    }
                }
                // Only this caller clears its request; defensive.
                _ => return Err(ChannelError::AgentReset),
            }
            if Instant::now() >= deadline {
                // Give up: take the request back if the guest has not
                // consumed it, and remember it so a late reply is refused.
                st.outstanding = None;
                st.retract(seq);
                if st.timed_out.len() == RECENT_TIMEOUTS {
                    st.timed_out.pop_front();
                }
                st.timed_out.push_back((seq, op));
                self.sync_line(&mut st);
                self.cond.notify_all();
                return Err(ChannelError::Timeout);
            }
            st = self.wait_until(st, deadline);
        }
    }

    /// See [`ChannelHandle::close`]. The outstanding request, if the guest
    /// has not taken it yet, is taken back.
    pub(super) fn set_on_power_off(&self, f: Box<dyn Fn() + Send>) {
        self.lock().on_power_off = Some(f);
    }

    pub(super) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        if let Some(seq) = st.outstanding.as_ref().map(|o| o.seq) {
            st.fail_outstanding(ChannelError::Stopped);
            st.retract(seq);
        }
        self.sync_line(&mut st);
        self.cond.notify_all();
    }

    pub(super) fn status(&self) -> AgentStatus {
        let st = self.lock();
        AgentStatus {
            state: st.agent,
            last_error: st.last_error.clone(),
            rejected_messages: st.rejected,
            dropped_messages: st.dropped,
            generation: st.hellos,
            pending_request: st
                .outstanding
                .as_ref()
                .filter(|o| o.reply.is_none())
                .map(|o| o.seq),
        }
    }

    pub(super) fn wait_for_agent(&self, timeout: Duration) -> Result<AgentInfo, ChannelError> {
        let deadline = deadline_after(timeout);
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(ChannelError::Stopped);
            }
            if let AgentState::Ready(info) = st.agent {
                return Ok(info);
            }
            if Instant::now() >= deadline {
                return Err(ChannelError::Timeout);
            }
            st = self.wait_until(st, deadline);
        }
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Matches a reply against the request it answers: the caller's result,
/// and the refusal to report to the guest if the reply is malformed.
fn classify_reply(request: Op, msg: &Message) -> (Result<Reply, ChannelError>, Option<Refusal>) {
    let bad = |e: i32, why: String| (Err(ChannelError::BadReply(why.clone())), Some((e, why)));
    let (req, rep) = (request.name(), msg.op.name());
    match msg.op {
        Op::Nak if msg.status < 0 => (
            Err(ChannelError::Nak {
                errno: msg.status.checked_neg().unwrap_or(i32::MAX),
            }),
            None,
        ),
        Op::Nak => bad(
            errno::EINVAL,
            format!("NAK of {req} with non-negative status {}", msg.status),
        ),
        _ if msg.status != 0 => bad(
            errno::EINVAL,
            format!("{rep} of {req} with non-zero status {}", msg.status),
        ),
        Op::Ack if request == Op::ApplyOverlay => match proto::read_u32(&msg.payload, 0) {
            Some(id) if id != 0 => (
                Ok(Reply::Applied {
                    id,
                    guest_us: proto::read_u32(&msg.payload, 4).filter(|&us| us != u32::MAX),
                    wake_us: proto::read_u32(&msg.payload, 8).filter(|&us| us != u32::MAX),
                }),
                None,
            ),
            Some(_) => bad(
                errno::EINVAL,
                "ACK of APPLY_OVERLAY with overlay id 0".into(),
            ),
            None => bad(
                errno::EINVAL,
                "ACK of APPLY_OVERLAY without an overlay id".into(),
            ),
        },
        Op::Ack if request == Op::RemoveOverlay => (Ok(Reply::Removed), None),
        Op::Ack if request == Op::Shutdown => (Ok(Reply::ShuttingDown), None),
        Op::Ack if matches!(request, Op::PciRescan | Op::PciRemove) => (Ok(Reply::PciDone), None),
        Op::Status if request == Op::Ping => match proto::decode_status(&msg.payload) {
            Some((_, ids)) => (Ok(Reply::Overlays(ids)), None),
            None => bad(errno::EINVAL, "STATUS payload shorter than 4 bytes".into()),
        },
        _ => bad(errno::EBADMSG, format!("{rep} is not a reply to {req}")),
    }
}

/// The channel's MMIO device: register it on the MMIO bus at
/// [`CHANNEL_BASE`](crate::platform::CHANNEL_BASE) with length
/// [`CHANNEL_SIZE`](crate::platform::CHANNEL_SIZE). Its IRQ line is
/// IOAPIC pin [`CHANNEL_IRQ`](crate::platform::CHANNEL_IRQ), level-high.
pub struct ChannelDevice {
    shared: Arc<Shared>,
}

impl ChannelDevice {
    /// A device driving `line`, and the handle the VMM uses to talk to the
    /// guest agent through it.
    pub fn new(line: Arc<dyn InterruptLine>) -> (ChannelDevice, ChannelHandle) {
        Self::build(line, None)
    }

    /// Like [`new`](Self::new), with the mailboxes in `mem`, which the VMM
    /// maps into the guest at the mailboxes' addresses (see
    /// [`MailboxMemory`]). MMIO accesses that still reach the device (a
    /// guest write to the read-only host→guest slot) behave as without it.
    pub fn with_mailbox_memory(
        line: Arc<dyn InterruptLine>,
        mem: Arc<MailboxMemory>,
    ) -> (ChannelDevice, ChannelHandle) {
        Self::build(line, Some(mem))
    }

    fn build(
        line: Arc<dyn InterruptLine>,
        mem: Option<Arc<MailboxMemory>>,
    ) -> (ChannelDevice, ChannelHandle) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(mem)),
            cond: Condvar::new(),
            line,
            log: RateLimiter::new(10),
            notice: RateLimiter::new(5),
        });
        (
            ChannelDevice {
                shared: shared.clone(),
            },
            ChannelHandle { shared },
        )
    }

    /// Another handle on this device.
    pub fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            shared: self.shared.clone(),
        }
    }
}

impl BusDevice for ChannelDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.shared.guest_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.shared.guest_write(offset, data);
    }
}
