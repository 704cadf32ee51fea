//! Channel tests: the "guest" drives the device only through
//! `BusDevice::read/write` (as the guest's MMIO accesses would), usually from
//! a helper thread acting as the agent, while the test thread uses the
//! `ChannelHandle` like the VMM.

use super::protocol::{self as proto, errno, regs, Header, Hello, Message, Op};
use super::*;
use crate::devices::{BusDevice, InterruptLine};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Instant;

const T: Duration = Duration::from_secs(10);

/// An interrupt line that records its level and lets the agent thread wait
/// for it like an interrupt.
#[derive(Default)]
struct Line {
    level: Mutex<bool>,
    cond: Condvar,
    changes: Mutex<u64>,
}

impl InterruptLine for Line {
    fn set_level(&self, level: bool) {
        *self.level.lock().unwrap() = level;
        *self.changes.lock().unwrap() += 1;
        self.cond.notify_all();
    }
}

impl Line {
    fn high(&self) -> bool {
        *self.level.lock().unwrap()
    }

    fn wait_high(&self, timeout: Duration) -> bool {
        let g = self.level.lock().unwrap();
        let (g, _) = self.cond.wait_timeout_while(g, timeout, |l| !*l).unwrap();
        *g
    }
}

/// The guest's view: MMIO accesses through the bus-facing device (behind a
/// mutex, as on the bus).
/// With `mem`, the mailboxes are memory the guest maps (as with KVM slots):
/// mailbox copies go to memory and only register accesses reach the device.
#[derive(Clone)]
struct Guest {
    dev: Arc<Mutex<ChannelDevice>>,
    line: Arc<Line>,
    mem: Option<Arc<MailboxMemory>>,
}

fn setup() -> (Guest, ChannelHandle) {
    let line = Arc::new(Line::default());
    let (dev, handle) = ChannelDevice::new(line.clone());
    (
        Guest {
            dev: Arc::new(Mutex::new(dev)),
            line,
            mem: None,
        },
        handle,
    )
}

fn setup_with_memory() -> (Guest, ChannelHandle) {
    let line = Arc::new(Line::default());
    let mem = Arc::new(MailboxMemory::new().expect("map mailboxes"));
    let (dev, handle) = ChannelDevice::with_mailbox_memory(line.clone(), mem.clone());
    (
        Guest {
            dev: Arc::new(Mutex::new(dev)),
            line,
            mem: Some(mem),
        },
        handle,
    )
}

impl Guest {
    fn read(&self, off: u64, len: usize) -> u64 {
        let mut b = vec![0u8; len];
        self.dev.lock().unwrap().read(off, &mut b);
        crate::devices::le_value(&b)
    }

    fn write(&self, off: u64, len: usize, v: u64) {
        self.dev.lock().unwrap().write(off, &v.to_le_bytes()[..len]);
    }

    fn r32(&self, off: u64) -> u32 {
        self.read(off, 4) as u32
    }

    fn w32(&self, off: u64, v: u32) {
        self.write(off, 4, u64::from(v));
    }

    /// Copies `bytes` into the device at `off` with 8/4/1-byte writes (into
    /// the mapped guest→host mailbox when there is one).
    fn put(&self, off: u64, bytes: &[u8]) {
        if let (Some(mem), true) = (&self.mem, off >= proto::G2H_OFFSET) {
            mem.write_g2h((off - proto::G2H_OFFSET) as usize, bytes);
            return;
        }
        let mut i = 0;
        while i < bytes.len() {
            let n = if bytes.len() - i >= 8 {
                8
            } else if bytes.len() - i >= 4 {
                4
            } else {
                1
            };
            self.dev
                .lock()
                .unwrap()
                .write(off + i as u64, &bytes[i..i + n]);
            i += n;
        }
    }

    fn get(&self, off: u64, len: usize) -> Vec<u8> {
        if let Some(mem) = &self.mem {
            if (proto::H2G_OFFSET..proto::G2H_OFFSET).contains(&off) {
                let mut out = vec![0u8; len];
                mem.read_h2g((off - proto::H2G_OFFSET) as usize, &mut out);
                return out;
            }
        }
        (0..len)
            .step_by(4)
            .flat_map(|i| {
                let n = (len - i).min(4);
                let mut b = vec![0u8; n];
                self.dev.lock().unwrap().read(off + i as u64, &mut b);
                b
            })
            .collect()
    }

    /// Writes raw bytes into the guest→host mailbox, rings, returns G2H_RESULT.
    fn send_raw(&self, bytes: &[u8]) -> i32 {
        self.put(proto::G2H_OFFSET, bytes);
        self.w32(regs::G2H_DOORBELL, 1);
        self.r32(regs::G2H_RESULT) as i32
    }

    fn send(&self, msg: &Message) -> i32 {
        self.send_raw(&msg.encode())
    }

    fn hello(&self, seq: u32) -> i32 {
        self.send(
            &Message::new(Op::Hello, seq, 0).with_payload(
                Hello {
                    version: 1,
                    capabilities: proto::AGENT_CAP_OVERLAY | proto::AGENT_CAP_PING,
                }
                .encode(),
            ),
        )
    }

    /// Takes the posted host message, if any (copy, H2G_DONE, check result).
    fn recv(&self) -> Option<Message> {
        if self.r32(regs::H2G_STATE) != 1 {
            return None;
        }
        let ticket = self.r32(regs::H2G_TICKET);
        let header = Header::decode(&self.get(proto::H2G_OFFSET, proto::HEADER_LEN)).unwrap();
        let total = proto::HEADER_LEN + header.len as usize;
        let bytes = self.get(proto::H2G_OFFSET, total);
        self.w32(regs::H2G_DONE, ticket);
        assert_eq!(self.r32(regs::H2G_RESULT), 0, "H2G_DONE refused");
        let mut mailbox = bytes;
        mailbox.resize(proto::H2G_SIZE as usize, 0);
        Some(Message::decode(&mailbox).expect("host sent a malformed message"))
    }

    /// Interrupt-driven receive: waits for the line, acks, takes a message.
    fn wait_msg(&self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        self.w32(regs::INT_ENABLE, proto::INT_H2G);
        loop {
            if let Some(m) = self.recv() {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.line.wait_high(left) {
                return None;
            }
            let status = self.r32(regs::INT_STATUS);
            self.w32(regs::INT_ACK, status);
        }
    }

    /// Waits for a message with operation `op`, skipping others (NAKs).
    fn expect(&self, op: Op) -> Message {
        loop {
            let m = self
                .wait_msg(T)
                .unwrap_or_else(|| panic!("no {op:?} from the host"));
            if m.op == op {
                return m;
            }
        }
    }

    fn drain(&self) -> Vec<Message> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

/// A guest with an agent that said HELLO (and consumed the ACK).
fn ready() -> (Guest, ChannelHandle) {
    hello_on(setup())
}

fn hello_on((g, h): (Guest, ChannelHandle)) -> (Guest, ChannelHandle) {
    assert_eq!(g.hello(1000), 0);
    let ack = g.expect(Op::Ack);
    assert_eq!(ack.seq, 1000);
    (g, h)
}

fn ack_id(seq: u32, id: u32) -> Message {
    Message::new(Op::Ack, seq, 0).with_payload(id.to_le_bytes().to_vec())
}

#[test]
fn registers_describe_the_device() {
    let (g, _h) = setup();
    assert_eq!(g.r32(regs::MAGIC), proto::DEVICE_MAGIC);
    assert_eq!(g.get(regs::MAGIC, 4), b"CVCH");
    assert_eq!(g.r32(regs::VERSION), 1);
    assert_eq!(g.r32(regs::H2G_OFFSET), 0x1000);
    assert_eq!(g.r32(regs::H2G_SIZE), 0xd000);
    assert_eq!(g.r32(regs::G2H_OFFSET), 0xe000);
    assert_eq!(g.r32(regs::G2H_SIZE), 0x2000);
    assert_eq!(
        u64::from(g.r32(regs::G2H_OFFSET) + g.r32(regs::G2H_SIZE)),
        crate::platform::CHANNEL_SIZE
    );
    assert_eq!(g.r32(regs::INT_ENABLE), 0);
    assert_eq!(g.r32(regs::H2G_STATE), 0);
    // Narrow and wide reads compose the same bytes.
    assert_eq!(g.read(regs::MAGIC + 1, 2), 0x4356); // "VC"
    assert_eq!(
        g.read(regs::MAGIC, 8),
        u64::from(proto::DEVICE_MAGIC) | 1 << 32
    );
    // Writes to read-only registers and non-32-bit register writes do nothing.
    g.w32(regs::MAGIC, 0);
    g.write(regs::INT_ENABLE, 8, 1);
    g.write(regs::INT_ENABLE, 2, 1);
    assert_eq!(g.r32(regs::MAGIC), proto::DEVICE_MAGIC);
    assert_eq!(g.r32(regs::INT_ENABLE), 0);
    g.w32(regs::INT_ENABLE, 0xffff_ffff);
    assert_eq!(g.r32(regs::INT_ENABLE), proto::INT_ALL);
}

#[test]
fn hello_makes_the_agent_ready_and_is_acked_with_the_host_version() {
    let (g, h) = setup();
    assert_eq!(h.agent_status().state, AgentState::NotSeen);
    assert_eq!(
        h.apply_overlay(b"x", Duration::from_millis(10)),
        Err(ChannelError::NoAgent)
    );
    g.w32(regs::INT_ENABLE, 1);
    assert!(!g.line.high());
    assert_eq!(g.hello(7), 0);
    assert!(g.line.high(), "the HELLO ACK raises the line");
    assert_eq!(g.r32(regs::INT_STATUS), proto::INT_H2G);
    g.w32(regs::INT_ACK, proto::INT_H2G);
    assert!(!g.line.high(), "acking lowers the line");
    let ack = g.recv().unwrap();
    assert_eq!((ack.op, ack.seq, ack.status), (Op::Ack, 7, 0));
    assert_eq!(
        Hello::decode(&ack.payload),
        Some(Hello {
            version: 1,
            capabilities: 0
        })
    );
    let info = AgentInfo {
        version: 1,
        capabilities: 3,
    };
    assert_eq!(h.agent_status().state, AgentState::Ready(info));
    assert_eq!(h.wait_for_agent(Duration::ZERO), Ok(info));
    assert_eq!(h.agent_status().rejected_messages, 0);
}

#[test]
fn wait_for_agent_wakes_on_hello() {
    let (g, h) = setup();
    assert_eq!(
        h.wait_for_agent(Duration::from_millis(20)),
        Err(ChannelError::Timeout)
    );
    let agent = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        g.hello(1)
    });
    assert_eq!(h.wait_for_agent(T).unwrap().version, 1);
    assert_eq!(agent.join().unwrap(), 0);
}

#[test]
fn disabled_interrupts_keep_the_line_low() {
    let (g, _h) = setup();
    assert_eq!(g.hello(1), 0);
    assert_eq!(g.r32(regs::INT_STATUS), proto::INT_H2G);
    assert!(!g.line.high());
    g.w32(regs::INT_ENABLE, 1);
    assert!(g.line.high());
    g.w32(regs::INT_ENABLE, 0);
    assert!(!g.line.high());
    // Consuming the message clears the cause too (a polling agent never acks).
    assert!(g.recv().is_some());
    assert_eq!(g.r32(regs::INT_STATUS), 0);
}

#[test]
fn a_traced_apply_reports_delivery_the_agents_own_time_and_the_total() {
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        let mut payload = 7u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&1234u32.to_le_bytes());
        payload.extend_from_slice(&56u32.to_le_bytes());
        assert_eq!(
            g.send(&Message::new(Op::Ack, m.seq, 0).with_payload(payload)),
            0
        );
        let m = g.expect(Op::ApplyOverlay);
        assert_eq!(g.send(&ack_id(m.seq, 8)), 0);
        g
    });
    let (id, trace) = h.apply_overlay_traced(b"dtb", T).unwrap();
    assert_eq!(id, OverlayId(7));
    assert_eq!(trace.guest, Some(Duration::from_micros(1234)));
    assert_eq!(trace.guest_wake, Some(Duration::from_micros(56)));
    let delivered = trace.delivered.expect("the agent released the mailbox");
    assert!(delivered <= trace.total, "{trace:?}");
    // An agent that reports no time of its own.
    let (id, trace) = h.apply_overlay_traced(b"dtb", T).unwrap();
    assert_eq!(id, OverlayId(8));
    assert_eq!(trace.guest, None);
    assert_eq!(trace.guest_wake, None);
    agent.join().unwrap();
}

#[test]
fn apply_is_acked_with_the_overlay_id() {
    let (g, h) = ready();
    let dtb: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let expect = dtb.clone();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        assert_eq!(m.payload, expect);
        assert_eq!(m.status, 0);
        assert_eq!(g.send(&ack_id(m.seq, 42)), 0);
        g
    });
    assert_eq!(h.apply_overlay(&dtb, T), Ok(OverlayId(42)));
    let g = agent.join().unwrap();
    assert!(g.drain().is_empty());
}

#[test]
fn with_mailbox_memory_messages_cross_in_memory_both_ways() {
    let (g, h) = hello_on(setup_with_memory());
    let dtb: Vec<u8> = (0..proto::MAX_H2G_PAYLOAD as u32)
        .map(|i| (i * 13) as u8)
        .collect();
    let expect = dtb.clone();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        assert_eq!(m.payload, expect);
        // The device's MMIO view of the mailbox agrees with the memory.
        let mut via_mmio = vec![0u8; 64];
        g.dev
            .lock()
            .unwrap()
            .read(proto::H2G_OFFSET + proto::HEADER_LEN as u64, &mut via_mmio);
        assert_eq!(via_mmio, m.payload[..64]);
        assert_eq!(g.send(&ack_id(m.seq, 9)), 0);
        g
    });
    assert_eq!(h.apply_overlay(&dtb, T), Ok(OverlayId(9)));
    let g = agent.join().unwrap();
    // A released mailbox reads as empty (zeroed header) in memory too.
    assert_eq!(
        g.get(proto::H2G_OFFSET, proto::HEADER_LEN),
        vec![0; proto::HEADER_LEN]
    );
    let removed = thread::spawn({
        let g = g.clone();
        move || {
            let m = g.expect(Op::RemoveOverlay);
            assert_eq!(m.payload, 9u32.to_le_bytes());
            g.send(&Message::new(Op::Ack, m.seq, 0))
        }
    });
    assert_eq!(h.remove_overlay(OverlayId(9), T), Ok(()));
    assert_eq!(removed.join().unwrap(), 0);
}

#[test]
fn with_mailbox_memory_the_host_reads_the_guest_message_once_at_the_doorbell() {
    let (g, h) = hello_on(setup_with_memory());
    // A malformed message in memory is refused like one written through MMIO.
    assert_eq!(g.send_raw(&[0xde, 0xad, 0xbe, 0xef]), -errno::EPROTO);
    // Bytes the guest changes after its doorbell are not looked at: the reply
    // was taken from the copy made when the doorbell rang.
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        let rc = g.send(&ack_id(m.seq, 5));
        g.put(proto::G2H_OFFSET, &[0xff; 32]);
        rc
    });
    assert_eq!(h.apply_overlay(b"dtb", T), Ok(OverlayId(5)));
    assert_eq!(agent.join().unwrap(), 0);
    assert_eq!(
        h.agent_status().state,
        AgentState::Ready(AgentInfo {
            version: 1,
            capabilities: 3
        })
    );
}

#[test]
fn with_mailbox_memory_guest_writes_to_the_host_mailbox_through_mmio_are_ignored() {
    let (g, h) = hello_on(setup_with_memory());
    g.w32(regs::INT_ENABLE, proto::INT_H2G);
    let agent = thread::spawn(move || {
        assert!(g.line.wait_high(T), "no message posted");
        let posted = g.get(proto::H2G_OFFSET, proto::HEADER_LEN);
        // A write that reaches the device (the read-only slot's exit) changes nothing.
        g.dev.lock().unwrap().write(proto::H2G_OFFSET, &[0u8; 8]);
        assert_eq!(g.get(proto::H2G_OFFSET, proto::HEADER_LEN), posted);
        let m = g.recv().expect("the posted message");
        assert_eq!(m.op, Op::ApplyOverlay);
        g.send(&ack_id(m.seq, 3))
    });
    assert_eq!(h.apply_overlay(b"dtb", T), Ok(OverlayId(3)));
    assert_eq!(agent.join().unwrap(), 0);
}

#[test]
fn apply_nak_carries_the_kernel_errno() {
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        assert_eq!(g.send(&Message::new(Op::Nak, m.seq, -22)), 0);
    });
    let err = h.apply_overlay(b"not a dtb", T).unwrap_err();
    assert_eq!(err, ChannelError::Nak { errno: 22 });
    assert!(err.to_string().contains("EINVAL"), "{err}");
    agent.join().unwrap();
}

#[test]
fn status_shows_the_request_waiting_for_the_agent() {
    let (g, h) = ready();
    assert_eq!(h.agent_status().pending_request, None);
    let waiter = thread::spawn({
        let h = h.clone();
        move || h.apply_overlay(b"dtb", T)
    });
    let m = g.expect(Op::ApplyOverlay);
    assert_eq!(h.agent_status().pending_request, Some(m.seq));
    assert_eq!(g.send(&ack_id(m.seq, 7)), 0);
    // Answered: no longer pending, even before the caller wakes.
    assert_eq!(h.agent_status().pending_request, None);
    assert_eq!(waiter.join().unwrap(), Ok(OverlayId(7)));
}

#[test]
fn remove_sends_the_id_and_waits_for_the_ack() {
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::RemoveOverlay);
        assert_eq!(m.payload, 9u32.to_le_bytes());
        assert_eq!(g.send(&Message::new(Op::Ack, m.seq, 0)), 0);
        let m = g.expect(Op::RemoveOverlay);
        assert_eq!(g.send(&Message::new(Op::Nak, m.seq, -errno::ENOENT)), 0);
    });
    assert_eq!(h.remove_overlay(OverlayId(9), T), Ok(()));
    assert_eq!(
        h.remove_overlay(OverlayId(9), T),
        Err(ChannelError::Nak { errno: 2 })
    );
    agent.join().unwrap();
}

#[test]
fn shutdown_is_acked_or_refused_by_the_agent() {
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::Shutdown);
        assert!(m.payload.is_empty());
        assert_eq!(g.send(&Message::new(Op::Ack, m.seq, 0)), 0);
        let m = g.expect(Op::Shutdown);
        assert_eq!(g.send(&Message::new(Op::Nak, m.seq, -16)), 0);
    });
    assert_eq!(h.shutdown(T), Ok(()));
    assert_eq!(h.shutdown(T), Err(ChannelError::Nak { errno: 16 }));
    agent.join().unwrap();
}

#[test]
fn pci_rescan_and_remove_name_the_function_and_take_ack_or_nak() {
    let f = proto::PciFunction {
        domain: 0xe000_0000,
        bus: 8,
        devfn: 3 << 3 | 1,
    };
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::PciRescan);
        assert_eq!(proto::PciFunction::decode(&m.payload), Some(f));
        assert_eq!(g.send(&Message::new(Op::Ack, m.seq, 0)), 0);
        let m = g.expect(Op::PciRemove);
        assert_eq!(proto::PciFunction::decode(&m.payload), Some(f));
        assert_eq!(g.send(&Message::new(Op::Nak, m.seq, -16)), 0);
        // A STATUS is no answer to a PCI request: refused, and the caller
        // hears of a malformed reply.
        let m = g.expect(Op::PciRemove);
        assert_ne!(g.send(&Message::new(Op::Status, m.seq, 0)), 0);
    });
    assert_eq!(h.pci_rescan(f, T), Ok(()));
    assert_eq!(h.pci_remove(f, T), Err(ChannelError::Nak { errno: 16 }));
    assert!(matches!(h.pci_remove(f, T), Err(ChannelError::BadReply(_))));
    agent.join().unwrap();
}

#[test]
fn a_pci_function_payload_is_three_words_and_rejects_out_of_range_numbers() {
    let f = proto::PciFunction {
        domain: 0xe010_0000,
        bus: 255,
        devfn: 255,
    };
    let bytes = f.encode();
    assert_eq!(bytes.len(), 12);
    assert_eq!(proto::PciFunction::decode(&bytes), Some(f));
    assert_eq!(proto::PciFunction::decode(&bytes[..11]), None);
    let mut big_bus = bytes.clone();
    big_bus[5] = 1;
    assert_eq!(proto::PciFunction::decode(&big_bus), None);
}

#[test]
fn power_off_from_the_guest_runs_the_handler_announced_in_host_caps() {
    let (g, h) = ready();
    assert_eq!(g.r32(regs::HOST_CAPS), 0, "no handler, no capability");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    h.on_power_off(Box::new(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    assert_eq!(g.r32(regs::HOST_CAPS), proto::HOST_CAP_POWER_OFF);
    assert_eq!(g.send(&Message::new(Op::PowerOff, 77, 0)), 0);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A notice: never answered.
    assert_eq!(g.recv(), None);
}

#[test]
fn ping_returns_the_agents_overlays() {
    let (g, h) = ready();
    let agent = thread::spawn(move || {
        let m = g.expect(Op::Ping);
        assert!(m.payload.is_empty());
        let status = Message::new(Op::Status, m.seq, 0).with_payload(proto::encode_status(&[3, 5]));
        assert_eq!(g.send(&status), 0);
    });
    assert_eq!(h.ping(T), Ok(vec![OverlayId(3), OverlayId(5)]));
    agent.join().unwrap();
}

#[test]
fn unconsumed_request_is_retracted_on_timeout() {
    let (g, h) = ready();
    g.w32(regs::INT_ENABLE, 1);
    assert_eq!(
        h.apply_overlay(b"dtb", Duration::from_millis(50)),
        Err(ChannelError::Timeout)
    );
    // Never delivered: the mailbox is empty again and the line low.
    assert_eq!(g.r32(regs::H2G_STATE), 0);
    assert_eq!(g.r32(regs::INT_STATUS), 0);
    assert!(!g.line.high());
}

#[test]
fn retracted_request_cannot_be_released_with_its_old_ticket() {
    let (g, h) = ready();
    let h2 = h.clone();
    let t = thread::spawn(move || h2.apply_overlay(b"dtb", Duration::from_millis(100)));
    // The guest starts copying the request, then the host gives up.
    let deadline = Instant::now() + T;
    while g.r32(regs::H2G_STATE) != 1 {
        assert!(Instant::now() < deadline);
        thread::yield_now();
    }
    let ticket = g.r32(regs::H2G_TICKET);
    assert_eq!(t.join().unwrap(), Err(ChannelError::Timeout));
    g.w32(regs::H2G_DONE, ticket);
    assert_eq!(g.r32(regs::H2G_RESULT) as i32, -errno::ECANCELED);
    assert_eq!(h.agent_status().rejected_messages, 0);
}

#[test]
fn late_reply_after_timeout_is_refused_and_not_taken_for_the_next_request() {
    let (g, h) = ready();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let agent = thread::spawn(move || {
        // Take the first request but answer only after the host gave up.
        let first = g.expect(Op::ApplyOverlay);
        rx.recv().unwrap();
        let second = g.expect(Op::ApplyOverlay);
        assert_ne!(first.seq, second.seq);
        assert_eq!(g.send(&ack_id(first.seq, 111)), -errno::ETIMEDOUT);
        assert_eq!(g.send(&ack_id(second.seq, 222)), 0);
        // The host NAKed the late ACK, quoting its seq and op.
        let nak = g.expect(Op::Nak);
        assert_eq!(nak.seq, first.seq);
        assert_eq!(nak.status, -errno::ETIMEDOUT);
        assert_eq!(nak.payload, (Op::Ack as u32).to_le_bytes());
    });
    assert_eq!(
        h.apply_overlay(b"one", Duration::from_millis(100)),
        Err(ChannelError::Timeout)
    );
    tx.send(()).unwrap();
    assert_eq!(h.apply_overlay(b"two", T), Ok(OverlayId(222)));
    agent.join().unwrap();
    let st = h.agent_status();
    assert_eq!(st.rejected_messages, 1);
    assert_eq!(st.last_error.unwrap().errno, errno::ETIMEDOUT);
}

#[test]
fn second_caller_waits_for_the_first_or_reports_busy() {
    let (g, h) = ready();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let agent = thread::spawn(move || {
        let first = g.expect(Op::Ping);
        rx.recv().unwrap();
        assert_eq!(
            g.send(&Message::new(Op::Status, first.seq, 0).with_payload(proto::encode_status(&[]))),
            0
        );
        let second = g.expect(Op::RemoveOverlay);
        assert_eq!(g.send(&Message::new(Op::Ack, second.seq, 0)), 0);
    });
    let h1 = h.clone();
    let first = thread::spawn(move || h1.ping(T));
    // Wait until the first request is outstanding (without posting a
    // request of our own: a probe that got the slot would be retracted
    // under the agent's hands).
    let deadline = Instant::now() + T;
    while h.agent_status().pending_request.is_none() {
        assert!(
            Instant::now() < deadline,
            "first request never became outstanding"
        );
        thread::yield_now();
    }
    // The agent holds the first request until told: a second caller with
    // a short timeout is told busy, one with a long timeout waits its turn.
    assert_eq!(
        h.remove_overlay(OverlayId(1), Duration::from_millis(1)),
        Err(ChannelError::Busy)
    );
    let h2 = h.clone();
    let second = thread::spawn(move || h2.remove_overlay(OverlayId(1), T));
    tx.send(()).unwrap();
    assert_eq!(first.join().unwrap(), Ok(vec![]));
    assert_eq!(second.join().unwrap(), Ok(()));
    agent.join().unwrap();
}

#[test]
fn new_hello_or_bye_fails_the_outstanding_request() {
    let (g, h) = ready();
    let g2 = g.clone();
    let agent = thread::spawn(move || {
        g2.expect(Op::ApplyOverlay);
        assert_eq!(g2.hello(2000), 0); // the agent restarted
    });
    assert_eq!(h.apply_overlay(b"x", T), Err(ChannelError::AgentReset));
    agent.join().unwrap();
    assert!(matches!(h.agent_status().state, AgentState::Ready(_)));
    // Only the new HELLO's ACK is left for the guest.
    let msgs = g.drain();
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].op, msgs[0].seq), (Op::Ack, 2000));

    let g2 = g.clone();
    let agent = thread::spawn(move || {
        g2.expect(Op::Ping);
        assert_eq!(g2.send(&Message::new(Op::Bye, 2001, 0)), 0);
    });
    assert_eq!(h.ping(T), Err(ChannelError::AgentReset));
    agent.join().unwrap();
    assert_eq!(h.agent_status().state, AgentState::Gone);
    assert_eq!(h.ping(T), Err(ChannelError::NoAgent));
    assert!(g.drain().is_empty(), "BYE is not answered");
}

#[test]
fn closing_the_channel_fails_a_waiting_apply_with_stopped() {
    let (g, h) = ready();
    let h1 = h.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // Far beyond the test's own bound: only close() can end the wait.
    let waiter = thread::spawn(move || {
        let _ = tx.send(h1.apply_overlay(b"x", Duration::from_secs(3600)));
    });
    // The agent takes the request and never answers.
    g.expect(Op::ApplyOverlay);
    h.close();
    let result = rx
        .recv_timeout(T)
        .expect("apply_overlay still waiting after close()");
    assert_eq!(result, Err(ChannelError::Stopped));
    waiter.join().unwrap();
    // Later requests fail at once, and so does waiting for the agent.
    assert_eq!(
        h.ping(Duration::from_secs(3600)),
        Err(ChannelError::Stopped)
    );
    assert_eq!(
        h.wait_for_agent(Duration::from_secs(3600)),
        Err(ChannelError::Stopped)
    );
    assert!(g.drain().is_empty(), "a request was sent after close()");
}

#[test]
fn closing_the_channel_takes_back_a_request_the_guest_has_not_taken() {
    let (g, h) = ready();
    let h1 = h.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(h1.ping(Duration::from_secs(3600)));
    });
    // The posted request raises the line (interrupts are enabled).
    assert_eq!(g.r32(regs::INT_ENABLE), proto::INT_H2G);
    assert!(g.line.wait_high(T), "the request was never posted");
    assert_eq!(g.r32(regs::H2G_STATE), 1);
    h.close();
    assert_eq!(rx.recv_timeout(T).unwrap(), Err(ChannelError::Stopped));
    waiter.join().unwrap();
    assert_eq!(g.r32(regs::H2G_STATE), 0, "the request is still posted");
    assert!(
        !g.line.high(),
        "the line stays high for a retracted request"
    );
}

#[test]
fn oversized_overlay_is_refused_locally() {
    let (_g, h) = ready();
    let big = vec![0u8; proto::MAX_H2G_PAYLOAD + 1];
    assert!(matches!(
        h.apply_overlay(&big, T),
        Err(ChannelError::TooLarge { .. })
    ));
}

#[test]
fn largest_overlay_fits() {
    let (g, h) = ready();
    let dtb = vec![0x5au8; proto::MAX_H2G_PAYLOAD];
    let agent = thread::spawn(move || {
        let m = g.expect(Op::ApplyOverlay);
        assert_eq!(m.payload.len(), proto::MAX_H2G_PAYLOAD);
        g.send(&ack_id(m.seq, 1))
    });
    assert_eq!(h.apply_overlay(&dtb, T), Ok(OverlayId(1)));
    assert_eq!(agent.join().unwrap(), 0);
}

/// Sends `bytes`, expects `G2H_RESULT == -errno`, one more rejection, and
/// (if `nak`) a NAK quoting `seq`.
fn assert_refused(g: &Guest, h: &ChannelHandle, bytes: &[u8], err: i32, nak: Option<u32>) {
    let before = h.agent_status().rejected_messages;
    assert_eq!(g.send_raw(bytes), -err, "message {bytes:02x?}");
    let st = h.agent_status();
    assert_eq!(st.rejected_messages, before + 1);
    assert_eq!(st.last_error.as_ref().unwrap().errno, err);
    let naks: Vec<Message> = g.drain().into_iter().filter(|m| m.op == Op::Nak).collect();
    match nak {
        Some(seq) => {
            assert_eq!(naks.len(), 1, "{naks:?}");
            assert_eq!((naks[0].seq, naks[0].status), (seq, -err));
        }
        None => assert!(naks.is_empty()),
    }
}

fn raw(magic: u32, version: u16, op: u16, seq: u32, status: i32, len: u32) -> Vec<u8> {
    Header {
        magic,
        version,
        op,
        seq,
        status,
        len,
        reserved: 0,
    }
    .encode()
    .to_vec()
}

#[test]
fn malformed_guest_messages_are_refused_and_the_device_keeps_working() {
    let (g, h) = ready();
    let m = proto::MSG_MAGIC;
    // Header-level errors.
    assert_refused(
        &g,
        &h,
        &raw(0xdead_beef, 1, 1, 5, 0, 8),
        errno::EPROTO,
        Some(5),
    );
    assert_refused(
        &g,
        &h,
        &raw(m, 2, 1, 6, 0, 8),
        errno::EPROTONOSUPPORT,
        Some(6),
    );
    assert_refused(
        &g,
        &h,
        &raw(m, 0, 1, 6, 0, 8),
        errno::EPROTONOSUPPORT,
        Some(6),
    );
    let max = proto::MAX_G2H_PAYLOAD as u32;
    assert_refused(
        &g,
        &h,
        &raw(m, 1, 1, 7, 0, max + 1),
        errno::EMSGSIZE,
        Some(7),
    );
    assert_refused(
        &g,
        &h,
        &raw(m, 1, 1, 7, 0, u32::MAX),
        errno::EMSGSIZE,
        Some(7),
    );
    assert_refused(&g, &h, &raw(m, 1, 99, 8, 0, 0), errno::EOPNOTSUPP, Some(8));
    assert_refused(&g, &h, &raw(m, 1, 0, 8, 0, 0), errno::EOPNOTSUPP, Some(8));
    // Host-to-guest operations from the guest.
    for op in [Op::ApplyOverlay, Op::RemoveOverlay, Op::Ping] {
        assert_refused(
            &g,
            &h,
            &Message::new(op, 9, 0).encode(),
            errno::EOPNOTSUPP,
            Some(9),
        );
    }
    // Bad HELLOs.
    let short = Message::new(Op::Hello, 10, 0).with_payload(vec![1, 0, 0]);
    assert_refused(&g, &h, &short.encode(), errno::EINVAL, Some(10));
    // Replies nothing is waiting for.
    assert_refused(&g, &h, &ack_id(11, 1).encode(), errno::ESRCH, Some(11));
    assert_refused(
        &g,
        &h,
        &Message::new(Op::Nak, 12, -5).encode(),
        errno::ESRCH,
        Some(12),
    );
    let status = Message::new(Op::Status, 13, 0).with_payload(proto::encode_status(&[]));
    assert_refused(&g, &h, &status.encode(), errno::ESRCH, Some(13));
    // The largest valid payload is accepted at the header level (then
    // refused as a reply nobody waits for).
    assert_refused(
        &g,
        &h,
        &raw(m, 1, Op::Ack as u16, 14, 0, max),
        errno::ESRCH,
        Some(14),
    );
    // Still fully working.
    let agent = thread::spawn({
        let g = g.clone();
        move || {
            let req = g.expect(Op::ApplyOverlay);
            g.send(&ack_id(req.seq, 5))
        }
    });
    assert_eq!(h.apply_overlay(b"ok", T), Ok(OverlayId(5)));
    assert_eq!(agent.join().unwrap(), 0);
}

#[test]
fn wrong_replies_to_an_outstanding_request() {
    let (g, h) = ready();
    // (reply, G2H_RESULT, what the caller gets); a reply with the wrong seq
    // is refused and the request keeps waiting for the right one.
    type Case = (fn(u32) -> Message, i32, Result<OverlayId, ChannelError>);
    let cases: [Case; 6] = [
        (
            |s| ack_id(s.wrapping_add(1), 3),
            -errno::ESRCH,
            Ok(OverlayId(77)),
        ),
        (
            |s| Message::new(Op::Ack, s, 0),
            -errno::EINVAL,
            Err(ChannelError::BadReply(String::new())),
        ),
        (
            |s| ack_id(s, 0),
            -errno::EINVAL,
            Err(ChannelError::BadReply(String::new())),
        ),
        (
            |s| Message::new(Op::Status, s, 0).with_payload(proto::encode_status(&[])),
            -errno::EBADMSG,
            Err(ChannelError::BadReply(String::new())),
        ),
        (
            |s| Message::new(Op::Nak, s, 0),
            -errno::EINVAL,
            Err(ChannelError::BadReply(String::new())),
        ),
        (
            |s| {
                let mut m = ack_id(s, 3);
                m.status = -1;
                m
            },
            -errno::EINVAL,
            Err(ChannelError::BadReply(String::new())),
        ),
    ];
    for (make, result, expect) in cases {
        let agent = thread::spawn({
            let g = g.clone();
            move || {
                let req = g.expect(Op::ApplyOverlay);
                assert_eq!(g.send(&make(req.seq)), result);
                if result == -errno::ESRCH {
                    assert_eq!(g.send(&ack_id(req.seq, 77)), 0);
                }
            }
        });
        let got = h.apply_overlay(b"x", T);
        match (&got, &expect) {
            (Err(ChannelError::BadReply(why)), Err(ChannelError::BadReply(_))) => {
                assert!(!why.is_empty())
            }
            _ => assert_eq!(got, expect),
        }
        agent.join().unwrap();
        g.drain();
    }
    assert_eq!(h.agent_status().rejected_messages, 6);
}

#[test]
fn incompatible_hello_is_nakked() {
    let (g, h) = setup();
    let hello0 = Message::new(Op::Hello, 1, 0).with_payload(
        Hello {
            version: 0,
            capabilities: 0,
        }
        .encode(),
    );
    assert_refused(&g, &h, &hello0.encode(), errno::EPROTONOSUPPORT, Some(1));
    assert_eq!(
        h.agent_status().state,
        AgentState::Incompatible { version: 0 }
    );
    assert_eq!(h.ping(T), Err(ChannelError::NoAgent));
    // A later agent speaking a newer version is accepted (session = v1).
    let hello9 = Message::new(Op::Hello, 2, 0).with_payload(
        Hello {
            version: 9,
            capabilities: 1,
        }
        .encode(),
    );
    assert_eq!(g.send(&hello9), 0);
    assert_eq!(h.wait_for_agent(Duration::ZERO).unwrap().version, 9);
}

#[test]
fn release_with_a_wrong_ticket_is_refused() {
    let (g, _h) = setup();
    assert_eq!(g.hello(1), 0);
    let ticket = g.r32(regs::H2G_TICKET);
    assert_ne!(ticket, 0);
    g.w32(regs::H2G_DONE, ticket.wrapping_add(1));
    assert_eq!(g.r32(regs::H2G_RESULT) as i32, -errno::ECANCELED);
    assert_eq!(g.r32(regs::H2G_STATE), 1, "still posted");
    g.w32(regs::H2G_DONE, ticket);
    assert_eq!(g.r32(regs::H2G_RESULT), 0);
    assert_eq!(g.r32(regs::H2G_STATE), 0);
    g.w32(regs::H2G_DONE, ticket);
    assert_eq!(g.r32(regs::H2G_RESULT) as i32, -errno::ECANCELED);
}

#[test]
fn naks_to_a_guest_that_never_drains_are_bounded() {
    let (g, h) = setup();
    for seq in 0..50 {
        assert_eq!(g.send_raw(&raw(0, 1, 1, seq, 0, 0)), -errno::EPROTO);
    }
    let st = h.agent_status();
    assert_eq!(st.rejected_messages, 50);
    assert_eq!(st.dropped_messages, 50 - 9); // one posted + 8 queued
    let msgs = g.drain();
    assert_eq!(msgs.len(), 9);
    assert!(msgs
        .iter()
        .enumerate()
        .all(|(i, m)| m.op == Op::Nak && m.seq == i as u32));
}

#[test]
fn guest_writes_outside_its_mailbox_are_ignored() {
    let (g, _h) = setup();
    assert_eq!(g.hello(3), 0);
    let before = g.get(proto::H2G_OFFSET, 64);
    g.put(proto::H2G_OFFSET, &[0xee; 64]);
    assert_eq!(g.get(proto::H2G_OFFSET, 64), before);
    // A write straddling the two mailboxes only lands in the guest's one.
    g.write(proto::G2H_OFFSET - 4, 8, u64::MAX);
    assert_eq!(g.r32(proto::G2H_OFFSET - 4), 0);
    assert_eq!(g.r32(proto::G2H_OFFSET), 0xffff_ffff);
    // The last bytes of the window are reachable.
    g.write(proto::WINDOW_SIZE - 8, 8, 0x1122_3344_5566_7788);
    assert_eq!(g.read(proto::WINDOW_SIZE - 8, 8), 0x1122_3344_5566_7788);
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_accesses_never_break_the_device() {
    let (g, h) = ready();
    // The VMM keeps issuing short requests meanwhile.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let host = thread::spawn({
        let (h, stop) = (h.clone(), stop.clone());
        move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = h.ping(Duration::from_millis(1));
                let _ = h.apply_overlay(&[n as u8; 40], Duration::from_millis(1));
                n += 1;
            }
        }
    });
    let mut rng = Rng(0x00c0_ffee_1234_5678);
    let sizes = [1usize, 2, 4, 8];
    for i in 0..100_000u32 {
        let r = rng.next();
        let size = sizes[(r & 3) as usize];
        // Mostly the register page and the mailbox headers, where the
        // interesting state lives; sometimes anywhere.
        let span = match (r >> 2) & 3 {
            0 | 1 => regs::PAGE_SIZE.min(0x50),
            2 => proto::HEADER_LEN as u64 + 8,
            _ => proto::WINDOW_SIZE,
        };
        let base = match (r >> 4) & 3 {
            2 if span != proto::WINDOW_SIZE => proto::G2H_OFFSET,
            3 if span != proto::WINDOW_SIZE => proto::H2G_OFFSET,
            _ => 0,
        };
        let off = (base + (r >> 8) % span).min(proto::WINDOW_SIZE - size as u64);
        let value = match (r >> 6) & 3 {
            // Sometimes a plausible value: magic, version, small numbers.
            0 => u64::from(proto::MSG_MAGIC) | 1 << 32,
            1 if rng.next() & 1 == 0 => rng.next() % 16,
            1 => u64::from(g.r32(regs::H2G_TICKET)),
            _ => rng.next(),
        };
        if (r >> 60) & 1 == 0 {
            g.write(off, size, value);
        } else {
            let _ = g.read(off, size);
        }
        if i % 1000 == 0 {
            let _ = g.send(&ack_id(rng.next() as u32 % 64, 1));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    host.join().unwrap();
    let st = h.agent_status();
    assert!(
        st.rejected_messages > 100,
        "the fuzzing rarely rang the doorbell: {st:?}"
    );
    // The device still answers HELLO and serves a full request.
    g.w32(regs::INT_ENABLE, 0);
    g.drain();
    assert_eq!(g.hello(0x4242), 0);
    let ack = g.expect(Op::Ack);
    assert_eq!(ack.seq, 0x4242);
    assert!(matches!(h.agent_status().state, AgentState::Ready(_)));
    let agent = thread::spawn({
        let g = g.clone();
        move || {
            let req = g.expect(Op::ApplyOverlay);
            assert_eq!(req.payload, b"after");
            g.send(&ack_id(req.seq, 8))
        }
    });
    assert_eq!(h.apply_overlay(b"after", T), Ok(OverlayId(8)));
    assert_eq!(agent.join().unwrap(), 0);
}

#[test]
fn codec_round_trips_and_rejects() {
    let msg = Message::new(Op::Status, 0xfeed, -3).with_payload(vec![1, 2, 3]);
    let mut mailbox = msg.encode();
    assert_eq!(mailbox.len(), proto::HEADER_LEN + 3);
    assert_eq!(&mailbox[..4], b"CMSG");
    mailbox.resize(64, 0);
    assert_eq!(Message::decode(&mailbox), Ok(msg));
    assert!(Message::decode(&mailbox[..10]).is_err());
    assert_eq!(
        proto::decode_status(&[2, 0, 0, 0, 7, 0, 0, 0]),
        Some((2, vec![7]))
    );
    assert_eq!(proto::decode_status(&[1, 0]), None);
    assert_eq!(proto::read_u32(&[1, 2, 3], usize::MAX), None);
    for v in 0..=20u16 {
        if let Some(op) = Op::from_u16(v) {
            assert_eq!(op as u16, v);
        }
    }
}

#[test]
fn every_accepted_hello_starts_a_new_agent_generation() {
    let (g, h) = setup();
    assert_eq!(h.agent_status().generation, 0);
    assert_eq!(g.hello(1), 0);
    assert_eq!(h.agent_status().generation, 1);
    assert_eq!(g.send(&Message::new(Op::Bye, 2, 0)), 0);
    assert_eq!(h.agent_status().state, AgentState::Gone);
    assert_eq!(
        h.agent_status().generation,
        1,
        "BYE does not start a generation"
    );
    assert_eq!(g.hello(3), 0);
    assert_eq!(h.agent_status().generation, 2);
}
