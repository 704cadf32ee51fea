//! The paravirtual channel's MMIO device driven as a hostile guest would:
//! register and mailbox accesses of every size anywhere in the window,
//! whole messages rung through the doorbell (HELLO, BYE, replies to the
//! host's requests, garbage), while the host side issues requests (one at a
//! time, in a helper thread, as `cellvm attach` does) and gives up on some.
//!
//! Checks, after every step: no panic; the identification registers hold;
//! `INT_STATUS` and `INT_ENABLE` carry only defined bits; the interrupt line
//! is high exactly while `INT_STATUS & INT_ENABLE != 0`; a posted host
//! message has a non-zero ticket and decodes; and at the end a closed
//! channel releases the waiting host request.

#![no_main]

use arbitrary::Arbitrary;
use cellvm::channel::protocol::{self as proto, regs, Message, Op};
use cellvm::channel::{ChannelDevice, ChannelError, ChannelHandle, OverlayId};
use cellvm::devices::{le_value, BusDevice, InterruptLine};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Line(AtomicBool);

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    B1,
    B2,
    B4,
    B8,
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::B1 => 1,
            Size::B2 => 2,
            Size::B4 => 4,
            Size::B8 => 8,
        }
    }
}

/// Which sequence number a guest message carries.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Seq {
    /// The host request the host is waiting on (if any).
    Pending,
    /// The message posted in the host→guest mailbox (if any).
    Posted,
    Raw(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HostOp {
    Apply,
    Remove(u32),
    Ping,
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// A guest read anywhere in the window (offsets wrap into it).
    Read { offset: u16, size: Size },
    /// A guest write anywhere in the window.
    Write { offset: u16, size: Size, value: u64 },
    /// A register write (aligned 32-bit), the common case.
    Reg { reg: u8, value: u32 },
    /// Copy a message into the guest→host mailbox and ring the doorbell.
    Send {
        op: u16,
        seq: Seq,
        status: i32,
        payload: Vec<u8>,
        /// Header fields to break: magic, version, length.
        bad_magic: bool,
        bad_version: bool,
        len_delta: i16,
    },
    /// The agent's usual receive: copy the posted message out and release
    /// the mailbox with its ticket.
    Receive,
    /// The host sends a request and waits for the answer (in a thread).
    Request { op: HostOp, payload: Vec<u8> },
    /// The host sends a request and gives up at once.
    RequestAndGiveUp { op: HostOp },
}

struct Rig {
    dev: ChannelDevice,
    handle: ChannelHandle,
    line: Arc<Line>,
    waiter: Option<JoinHandle<()>>,
}

impl Rig {
    fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read(offset, &mut b[..len]);
        le_value(&b[..len])
    }

    fn r32(&mut self, offset: u64) -> u32 {
        self.read(offset, 4) as u32
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.dev.write(offset, data);
    }

    fn w32(&mut self, offset: u64, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }

    /// Guest copy of `len` mailbox bytes at `offset`, 8 bytes at a time.
    fn copy_out(&mut self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            self.dev.read(offset + 8 * i as u64, chunk);
        }
        out
    }

    /// Guest copy of `bytes` into the guest→host mailbox (clipped to it).
    fn copy_in(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(proto::G2H_SIZE as usize);
        for (i, chunk) in bytes[..n].chunks(8).enumerate() {
            self.dev.write(proto::G2H_OFFSET + 8 * i as u64, chunk);
        }
    }

    /// The seq of the posted host→guest message, if one is posted.
    fn posted_seq(&mut self) -> Option<u32> {
        (self.r32(regs::H2G_STATE) == 1).then(|| self.r32(proto::H2G_OFFSET + 8))
    }

    /// Joins the helper thread if its request is no longer waiting for the
    /// guest, so no host thread acts behind the guest's back. Returns
    /// whether a request is still waiting.
    fn settle(&mut self) -> bool {
        if self.handle.agent_status().pending_request.is_some() {
            return true;
        }
        if let Some(w) = self.waiter.take() {
            w.join().expect("host request thread panicked");
        }
        false
    }

    fn check(&mut self) {
        assert_eq!(self.r32(regs::MAGIC), proto::DEVICE_MAGIC);
        assert_eq!(self.r32(regs::VERSION), proto::PROTOCOL_VERSION);
        assert_eq!(self.r32(regs::H2G_OFFSET), proto::H2G_OFFSET as u32);
        assert_eq!(self.r32(regs::G2H_SIZE), proto::G2H_SIZE as u32);
        let status = self.r32(regs::INT_STATUS);
        let enable = self.r32(regs::INT_ENABLE);
        assert_eq!(status & !proto::INT_ALL, 0);
        assert_eq!(enable & !proto::INT_ALL, 0);
        assert_eq!(
            self.line.0.load(Ordering::SeqCst),
            status & enable != 0,
            "line level disagrees with INT_STATUS {status:#x} & INT_ENABLE {enable:#x}"
        );
        match self.r32(regs::H2G_STATE) {
            0 => {}
            1 => {
                assert_ne!(self.r32(regs::H2G_TICKET), 0);
                let header = self.copy_out(proto::H2G_OFFSET, proto::HEADER_LEN);
                let len = proto::Header::decode(&header).unwrap().len as usize;
                assert!(len <= proto::MAX_H2G_PAYLOAD);
                let msg = self.copy_out(proto::H2G_OFFSET, proto::HEADER_LEN + len);
                let msg = Message::decode(&msg).expect("the host posted a malformed message");
                assert!(!matches!(msg.op, Op::Hello | Op::Status | Op::Bye));
            }
            other => panic!("H2G_STATE {other}"),
        }
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Read { offset, size } => {
                let len = size.bytes();
                let off = u64::from(offset).min(proto::WINDOW_SIZE - len as u64);
                let _ = self.read(off, len);
            }
            Action::Write {
                offset,
                size,
                value,
            } => {
                let len = size.bytes();
                let off = u64::from(offset).min(proto::WINDOW_SIZE - len as u64);
                self.write(off, &value.to_le_bytes()[..len]);
            }
            Action::Reg { reg, value } => self.w32(u64::from(reg & 0x1f) * 4, value),
            Action::Send {
                op,
                seq,
                status,
                payload,
                bad_magic,
                bad_version,
                len_delta,
            } => {
                let seq = match seq {
                    Seq::Pending => self.handle.agent_status().pending_request.unwrap_or(0),
                    Seq::Posted => self.posted_seq().unwrap_or(0),
                    Seq::Raw(s) => s,
                };
                // Mostly operations that exist (1..=8), sometimes any.
                let op = if op & 0x100 == 0 { op % 9 } else { op };
                let mut bytes = Message::new(Op::Ack, seq, status)
                    .with_payload(payload)
                    .encode();
                bytes[6..8].copy_from_slice(&op.to_le_bytes());
                if bad_magic {
                    bytes[0] ^= 0x20;
                }
                if bad_version {
                    bytes[4] = bytes[4].wrapping_add(1);
                }
                let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
                let len = len.wrapping_add_signed(i32::from(len_delta));
                bytes[16..20].copy_from_slice(&len.to_le_bytes());
                self.copy_in(&bytes);
                self.w32(regs::G2H_DOORBELL, 1);
                let result = self.r32(regs::G2H_RESULT) as i32;
                assert!(result <= 0, "G2H_RESULT {result}");
            }
            Action::Receive => {
                if self.r32(regs::H2G_STATE) == 1 {
                    let ticket = self.r32(regs::H2G_TICKET);
                    let _ = self.copy_out(proto::H2G_OFFSET, proto::HEADER_LEN);
                    self.w32(regs::H2G_DONE, ticket);
                    assert_eq!(self.r32(regs::H2G_RESULT), 0);
                    self.w32(regs::INT_ACK, proto::INT_ALL);
                }
            }
            Action::Request { op, payload } => {
                if self.settle() {
                    // The host is still waiting on the previous request:
                    // another caller gives up as busy.
                    let r = request(&self.handle, op, Vec::new(), Duration::ZERO);
                    assert!(r.is_err());
                    return;
                }
                let handle = self.handle.clone();
                // Long enough never to expire: the input ends with close().
                let waiter = std::thread::spawn(move || {
                    let _ = request(&handle, op, payload, Duration::from_secs(600));
                });
                // Wait until the request is posted (or refused at once).
                while !waiter.is_finished() && self.handle.agent_status().pending_request.is_none()
                {
                    std::thread::yield_now();
                }
                self.waiter = Some(waiter);
            }
            Action::RequestAndGiveUp { op } => {
                let busy = self.settle();
                let r = request(&self.handle, op, b"x".to_vec(), Duration::ZERO);
                match r {
                    Err(ChannelError::Timeout | ChannelError::NoAgent) if !busy => {}
                    Err(ChannelError::Busy | ChannelError::NoAgent) if busy => {}
                    other => panic!("a request given up at once returned {other:?} (busy: {busy})"),
                }
            }
        }
    }
}

/// A host request, as `cellvm attach` / `detach` / the agent check make it.
fn request(
    handle: &ChannelHandle,
    op: HostOp,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(), ChannelError> {
    match op {
        HostOp::Apply => handle.apply_overlay(&payload, timeout).map(drop),
        HostOp::Remove(id) => handle.remove_overlay(OverlayId(id), timeout),
        HostOp::Ping => handle.ping(timeout).map(drop),
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let line = Arc::new(Line::default());
    let (dev, handle) = ChannelDevice::new(line.clone());
    let mut rig = Rig {
        dev,
        handle,
        line,
        waiter: None,
    };
    for action in actions.into_iter().take(64) {
        rig.step(action);
        rig.check();
    }
    rig.handle.close();
    if let Some(w) = rig.waiter.take() {
        w.join().expect("host request thread panicked");
    }
    assert_eq!(rig.handle.agent_status().pending_request, None);
    rig.check();
});
