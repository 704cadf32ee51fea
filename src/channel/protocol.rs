//! Wire format of the paravirtual channel, version 1: the register page, the
//! two mailboxes, the message header, the operations and their payloads.
//! `docs/channel.md` is the normative description; this module is its code.
//!
//! Everything is little-endian. Error codes are negative Linux errno values
//! (the numbers below), the same in both directions.

/// Register page: offsets from the channel's base. Every register is 32 bits
/// wide; writes only take effect as aligned 32-bit writes.
pub mod regs {
    /// RO: [`super::DEVICE_MAGIC`].
    pub const MAGIC: u64 = 0x000;
    /// RO: the host's protocol version ([`super::PROTOCOL_VERSION`]).
    pub const VERSION: u64 = 0x004;
    /// RO: host capability bits (none defined in version 1: reads 0).
    pub const HOST_CAPS: u64 = 0x008;
    /// RO: offset of the host→guest mailbox from the base.
    pub const H2G_OFFSET: u64 = 0x010;
    /// RO: size of the host→guest mailbox in bytes.
    pub const H2G_SIZE: u64 = 0x014;
    /// RO: offset of the guest→host mailbox from the base.
    pub const G2H_OFFSET: u64 = 0x018;
    /// RO: size of the guest→host mailbox in bytes.
    pub const G2H_SIZE: u64 = 0x01c;
    /// RO: latched interrupt causes ([`super::INT_H2G`]).
    pub const INT_STATUS: u64 = 0x020;
    /// WO: write 1s to clear the corresponding `INT_STATUS` bits.
    pub const INT_ACK: u64 = 0x024;
    /// RW: interrupt enable mask; the line is high while
    /// `INT_STATUS & INT_ENABLE != 0`. 0 after reset.
    pub const INT_ENABLE: u64 = 0x028;
    /// RO: 1 while a message is posted in the host→guest mailbox, else 0.
    pub const H2G_STATE: u64 = 0x030;
    /// RO: ticket of the posted message (changes with every post; never 0
    /// while a message is posted).
    pub const H2G_TICKET: u64 = 0x034;
    /// WO: write the ticket of the message just copied out: releases the
    /// mailbox. Result in `H2G_RESULT`.
    pub const H2G_DONE: u64 = 0x038;
    /// RO: result of the last `H2G_DONE` write: 0, or -ECANCELED if the
    /// ticket was not the posted one (the copy must be discarded).
    pub const H2G_RESULT: u64 = 0x03c;
    /// WO: any value: the host processes the message in the guest→host
    /// mailbox before the write completes. Result in `G2H_RESULT`.
    pub const G2H_DOORBELL: u64 = 0x040;
    /// RO: result of the last `G2H_DOORBELL` write: 0 accepted, else a
    /// negative errno saying why the message was rejected.
    pub const G2H_RESULT: u64 = 0x044;
    /// Size of the register page.
    pub const PAGE_SIZE: u64 = 0x1000;
}

/// `MAGIC` register value: the bytes "CVCH".
pub const DEVICE_MAGIC: u32 = u32::from_le_bytes(*b"CVCH");
/// Magic of every message header: the bytes "CMSG".
pub const MSG_MAGIC: u32 = u32::from_le_bytes(*b"CMSG");
/// The protocol version this host implements (register and header field).
pub const PROTOCOL_VERSION: u32 = 1;

/// Host→guest mailbox: offset from the base.
pub const H2G_OFFSET: u64 = 0x1000;
/// Host→guest mailbox: size (52 KiB; overlays travel this way).
pub const H2G_SIZE: u64 = 0xd000;
/// Guest→host mailbox: offset from the base.
pub const G2H_OFFSET: u64 = 0xe000;
/// Guest→host mailbox: size (8 KiB).
pub const G2H_SIZE: u64 = 0x2000;
/// The whole window (matches `platform::CHANNEL_SIZE`).
pub const WINDOW_SIZE: u64 = 0x1_0000;

/// `INT_STATUS` bit 0: a message was posted in the host→guest mailbox.
pub const INT_H2G: u32 = 1 << 0;
/// All `INT_STATUS` bits defined in version 1.
pub const INT_ALL: u32 = INT_H2G;

/// Agent capability (HELLO payload): applies and removes overlays.
pub const AGENT_CAP_OVERLAY: u32 = 1 << 0;
/// Agent capability: answers PING with STATUS.
pub const AGENT_CAP_PING: u32 = 1 << 1;
/// Agent capability: answers SHUTDOWN (ACK, then an orderly poweroff).
pub const AGENT_CAP_SHUTDOWN: u32 = 1 << 2;
/// Agent capability: populates every add-on connector (a node compatible
/// `cellvm,connector`) an overlay adds, so a later overlay's nodes under it
/// get devices (docs/addons.md).
pub const AGENT_CAP_CONNECTORS: u32 = 1 << 3;

/// Agent capability: rescans a PCI bus and removes a PCI function on the
/// host's request (PCI_RESCAN, PCI_REMOVE), so a running bridge gains and
/// loses functions (docs/pci.md, "Functions on a running bridge").
pub const AGENT_CAP_PCI_FUNCTIONS: u32 = 1 << 4;

/// Host capability (`HOST_CAPS` register): the host stops the cell when
/// the guest sends POWER_OFF.
pub const HOST_CAP_POWER_OFF: u32 = 1 << 0;

/// Bytes in a message header.
pub const HEADER_LEN: usize = 24;
/// Largest payload the host can send.
pub const MAX_H2G_PAYLOAD: usize = H2G_SIZE as usize - HEADER_LEN;
/// Largest payload the guest can send.
pub const MAX_G2H_PAYLOAD: usize = G2H_SIZE as usize - HEADER_LEN;

/// Linux errno values used on the wire (positive; sent negated).
pub mod errno {
    /// No such entry (REMOVE of an unknown overlay id).
    pub const ENOENT: i32 = 2;
    /// No such request: a reply nothing is waiting for.
    pub const ESRCH: i32 = 3;
    /// Invalid argument (malformed payload).
    pub const EINVAL: i32 = 22;
    /// Protocol error: bad message magic.
    pub const EPROTO: i32 = 71;
    /// Bad message: a reply of the wrong kind for the request.
    pub const EBADMSG: i32 = 74;
    /// Payload length beyond the mailbox.
    pub const EMSGSIZE: i32 = 90;
    /// Unsupported protocol version.
    pub const EPROTONOSUPPORT: i32 = 93;
    /// Unknown operation, or one not allowed in this direction.
    pub const EOPNOTSUPP: i32 = 95;
    /// Late reply: the host gave up on that request.
    pub const ETIMEDOUT: i32 = 110;
    /// `H2G_DONE` with a ticket that is not the posted one.
    pub const ECANCELED: i32 = 125;

    /// Symbolic name of a (positive) Linux errno, for messages.
    pub fn name(errno: i32) -> Option<&'static str> {
        Some(match errno {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            8 => "ENOEXEC",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            19 => "ENODEV",
            22 => "EINVAL",
            28 => "ENOSPC",
            34 => "ERANGE",
            38 => "ENOSYS",
            71 => "EPROTO",
            74 => "EBADMSG",
            75 => "EOVERFLOW",
            90 => "EMSGSIZE",
            93 => "EPROTONOSUPPORT",
            95 => "EOPNOTSUPP",
            110 => "ETIMEDOUT",
            125 => "ECANCELED",
            524 => "ENOTSUPP",
            _ => return None,
        })
    }
}

/// Message operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Guest → host request: the agent is up. Payload [`Hello`]. Answered
    /// with ACK (payload [`Hello`]: the host's version and capabilities) or
    /// NAK (-EPROTONOSUPPORT, -EINVAL).
    Hello = 1,
    /// Host → guest request: apply the overlay DTB in the payload. Answered
    /// with ACK (payload: u32 overlay id, optionally u32 microseconds the
    /// apply took) or NAK (-errno).
    ApplyOverlay = 2,
    /// Host → guest request: remove overlay (payload: u32 overlay id).
    /// Answered with ACK (empty) or NAK.
    RemoveOverlay = 3,
    /// Host → guest request: liveness check (empty). Answered with STATUS.
    Ping = 4,
    /// Reply (both directions): success, status 0; `seq` = the request's.
    Ack = 5,
    /// Reply (both directions): failure, status = -errno; `seq` = the
    /// rejected message's. The host's NAK payload is the rejected op (u32).
    Nak = 6,
    /// Guest → host reply to PING: u32 count, then up to `count` u32
    /// overlay ids.
    Status = 7,
    /// Guest → host notice: the agent is going away (no reply).
    Bye = 8,
    /// Host → guest request: power off in an orderly way (empty). Answered
    /// with ACK (the guest begins its poweroff) or NAK (-errno).
    Shutdown = 9,
    /// Guest → host notice: the guest is powering off now (no reply); the
    /// host stops the cell as powered off.
    PowerOff = 10,
    /// Host → guest request: rescan a PCI bus for a function the host added
    /// (payload [`PciFunction`]). Answered with ACK (empty) once the function
    /// is there, or NAK (-ENODEV: no such bus, or the function did not
    /// appear).
    PciRescan = 11,
    /// Host → guest request: stop and remove a PCI function (payload
    /// [`PciFunction`]), after the consent hook let it go. Answered with
    /// ACK (empty) or NAK (-ENOENT: no such function, -EBUSY: refused).
    PciRemove = 12,
}

impl Op {
    /// The operation with wire value `v`, if any.
    pub fn from_u16(v: u16) -> Option<Op> {
        Some(match v {
            1 => Op::Hello,
            2 => Op::ApplyOverlay,
            3 => Op::RemoveOverlay,
            4 => Op::Ping,
            5 => Op::Ack,
            6 => Op::Nak,
            7 => Op::Status,
            8 => Op::Bye,
            9 => Op::Shutdown,
            10 => Op::PowerOff,
            11 => Op::PciRescan,
            12 => Op::PciRemove,
            _ => return None,
        })
    }

    /// Whether the guest may send this operation.
    pub fn from_guest(self) -> bool {
        matches!(
            self,
            Op::Hello | Op::Ack | Op::Nak | Op::Status | Op::Bye | Op::PowerOff
        )
    }

    /// Wire name (docs/channel.md).
    pub fn name(self) -> &'static str {
        match self {
            Op::Hello => "HELLO",
            Op::ApplyOverlay => "APPLY_OVERLAY",
            Op::RemoveOverlay => "REMOVE_OVERLAY",
            Op::Ping => "PING",
            Op::Ack => "ACK",
            Op::Nak => "NAK",
            Op::Status => "STATUS",
            Op::Bye => "BYE",
            Op::Shutdown => "SHUTDOWN",
            Op::PowerOff => "POWER_OFF",
            Op::PciRescan => "PCI_RESCAN",
            Op::PciRemove => "PCI_REMOVE",
        }
    }
}

/// A raw message header, as found in a mailbox (not validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`MSG_MAGIC`].
    pub magic: u32,
    /// Header format version ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Raw [`Op`] value.
    pub op: u16,
    /// Sequence number (the request's, in a reply).
    pub seq: u32,
    /// 0, or -errno in a NAK.
    pub status: i32,
    /// Payload bytes following the header.
    pub len: u32,
    /// Reserved: sent as 0, ignored on receipt.
    pub reserved: u32,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `buf` (`None` if shorter).
    pub fn decode(buf: &[u8]) -> Option<Header> {
        let b = buf.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Header {
            magic: u32_at(0),
            version: u16::from_le_bytes([b[4], b[5]]),
            op: u16::from_le_bytes([b[6], b[7]]),
            seq: u32_at(8),
            status: u32_at(12) as i32,
            len: u32_at(16),
            reserved: u32_at(20),
        })
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.op.to_le_bytes());
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.status.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }
}

/// Why a message was rejected; maps to the errno sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Header magic is not [`MSG_MAGIC`].
    BadMagic(u32),
    /// Header version is not [`PROTOCOL_VERSION`].
    BadVersion(u16),
    /// Payload length beyond the mailbox.
    TooLong {
        /// Claimed payload length.
        len: u32,
        /// Largest payload that fits.
        max: usize,
    },
    /// Unknown operation value.
    UnknownOp(u16),
}

impl DecodeError {
    /// The (positive) errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::BadMagic(_) => errno::EPROTO,
            DecodeError::BadVersion(_) => errno::EPROTONOSUPPORT,
            DecodeError::TooLong { .. } => errno::EMSGSIZE,
            DecodeError::UnknownOp(_) => errno::EOPNOTSUPP,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic(m) => write!(f, "bad message magic {m:#010x}"),
            DecodeError::BadVersion(v) => {
                write!(
                    f,
                    "unsupported message version {v} (host speaks {PROTOCOL_VERSION})"
                )
            }
            DecodeError::TooLong { len, max } => {
                write!(f, "payload length {len} exceeds the mailbox ({max} bytes)")
            }
            DecodeError::UnknownOp(op) => write!(f, "unknown operation {op}"),
        }
    }
}

/// A decoded, validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Operation.
    pub op: Op,
    /// Sequence number.
    pub seq: u32,
    /// 0, or -errno in a NAK.
    pub status: i32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message without payload.
    pub fn new(op: Op, seq: u32, status: i32) -> Self {
        Message {
            op,
            seq,
            status,
            payload: Vec::new(),
        }
    }

    /// With `payload`.
    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    /// Header + payload as written into a mailbox.
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            magic: MSG_MAGIC,
            version: PROTOCOL_VERSION as u16,
            op: self.op as u16,
            seq: self.seq,
            status: self.status,
            len: self.payload.len() as u32,
            reserved: 0,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes and validates the message at the start of `mailbox` (the
    /// whole mailbox: a payload may not run past its end). On error, the
    /// raw header (if there were enough bytes) comes along for the reply.
    pub fn decode(mailbox: &[u8]) -> Result<Message, (Option<Header>, DecodeError)> {
        let Some(h) = Header::decode(mailbox) else {
            return Err((
                None,
                DecodeError::TooLong {
                    len: 0,
                    max: mailbox.len().saturating_sub(HEADER_LEN),
                },
            ));
        };
        if h.magic != MSG_MAGIC {
            return Err((Some(h), DecodeError::BadMagic(h.magic)));
        }
        if u32::from(h.version) != PROTOCOL_VERSION {
            return Err((Some(h), DecodeError::BadVersion(h.version)));
        }
        let max = mailbox.len() - HEADER_LEN;
        let len = h.len as usize;
        if h.len as u64 > max as u64 {
            return Err((Some(h), DecodeError::TooLong { len: h.len, max }));
        }
        let Some(op) = Op::from_u16(h.op) else {
            return Err((Some(h), DecodeError::UnknownOp(h.op)));
        };
        Ok(Message {
            op,
            seq: h.seq,
            status: h.status,
            payload: mailbox[HEADER_LEN..HEADER_LEN + len].to_vec(),
        })
    }
}

/// HELLO payload (guest → host) and the host's ACK payload to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the sender implements.
    pub version: u32,
    /// Capability bits (`AGENT_CAP_*` from the agent, 0 from the host).
    pub capabilities: u32,
}

impl Hello {
    /// Payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.version.to_le_bytes().to_vec();
        v.extend_from_slice(&self.capabilities.to_le_bytes());
        v
    }

    /// From payload bytes (at least 8; extra bytes are ignored).
    pub fn decode(p: &[u8]) -> Option<Hello> {
        Some(Hello {
            version: read_u32(p, 0)?,
            capabilities: read_u32(p, 4)?,
        })
    }
}

/// The payload of PCI_RESCAN and PCI_REMOVE: a PCI function as the guest
/// names it: the domain is `platform::pci_domain` of the bridge's
/// configuration window (on x86 the base's low 32 bits, on aarch64 the
/// `linux,pci-domain` cellvm gives the bridge; docs/pci.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciFunction {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// `device << 3 | function`.
    pub devfn: u8,
}

impl PciFunction {
    /// Payload bytes: u32 domain, u32 bus, u32 devfn.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.domain.to_le_bytes().to_vec();
        v.extend_from_slice(&u32::from(self.bus).to_le_bytes());
        v.extend_from_slice(&u32::from(self.devfn).to_le_bytes());
        v
    }

    /// From payload bytes (at least 12; bus and devfn must fit a byte).
    pub fn decode(p: &[u8]) -> Option<PciFunction> {
        Some(PciFunction {
            domain: read_u32(p, 0)?,
            bus: u8::try_from(read_u32(p, 4)?).ok()?,
            devfn: u8::try_from(read_u32(p, 8)?).ok()?,
        })
    }
}

/// Little-endian u32 at byte `at` of `p`.
pub fn read_u32(p: &[u8], at: usize) -> Option<u32> {
    let b = p.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Overlay ids in a STATUS payload: u32 count, then the ids that fit (a
/// count larger than the ids present means the list was truncated).
pub fn decode_status(p: &[u8]) -> Option<(u32, Vec<u32>)> {
    let count = read_u32(p, 0)?;
    let present = ((p.len() - 4) / 4).min(count as usize);
    let ids = (0..present)
        .filter_map(|i| read_u32(p, 4 + 4 * i))
        .collect();
    Some((count, ids))
}

/// A STATUS payload for `ids`.
pub fn encode_status(ids: &[u32]) -> Vec<u8> {
    let mut v = (ids.len() as u32).to_le_bytes().to_vec();
    for id in ids {
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}
