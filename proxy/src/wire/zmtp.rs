//! The ZMTP 3.1 wire protocol (RFC 37, and RFC 23's 3.0 for older peers) as the proxy speaks it:
//! the greeting (NULL or CURVE) and READY forms, a frame decoder/encoder over `bytes` buffers, and
//! subscriptions in both of their forms: the SUBSCRIBE/CANCEL commands of 3.1 and the
//! `\x01topic`/`\x00topic` messages of 3.0. Each connection remembers the revision its peer greeted
//! with ([`Revision`]); the proxy sends a peer the form of its revision and accepts either form
//! from anyone, as libzmq 4.3 does. This module does no I/O: the exchanges over a connection are
//! another layer's. After a CURVE handshake the decoder hands every wire frame to a
//! [`FrameOpener`] and the writers seal frames through it, so this module knows nothing of
//! cryptography.
//!
//! ZMTP 2.0 peers (RFC 15) are served on NULL sockets through RFC 23's backwards
//! interoperability: the engine sends the greeting in two steps, so a 2.0 peer gets
//! our socket type byte ([`zmtp2_socket_type`]) instead of the rest of a 3.x greeting, and an
//! identity frame each way ([`parse_identity`]) replaces READY. 2.0 frames messages in the same
//! bytes as 3.x and has no commands, so the same [`Decoder`] reads it, told once per connection
//! to refuse command frames ([`Decoder::for_revision`]), and the writers need no change: such a
//! peer is never sent a command.
//!
//! The proxy speaks ZMTP itself instead of going through the `zeromq` crate's sockets because
//! the crate hides what a proxy needs per connection (which subscriber sent an unsubscribe,
//! when a PUSH peer's connection closes, whether a peer's queue is full) and lets one peer's
//! frame header decide an allocation size. Here every connection is read continuously, frames
//! are bounded by the socket's maxMsgSize (default `MAX_MESSAGE_BYTES` in the api crate's defaults), and
//! buffers grow only with bytes that actually arrived.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use zmq_proxy_api::socket::SocketType;

pub const GREETING_LEN: usize = 64;
pub(crate) const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
pub(crate) const FLAG_COMMAND: u8 = 0x04;
/// Largest handshake command accepted (READY, HELLO, INITIATE with metadata): far below the
/// message limit, so a peer that never finishes its handshake holds little memory.
pub const HANDSHAKE_MAX_BYTES: usize = 64 * 1024;
/// The reason of a connection that closed before sending a byte of its greeting.
pub const CLOSED_BEFORE_GREETING: &str = "closed_before_greeting";

/// Why a connection was refused or dropped; never fatal for the proxy.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    BadGreeting(&'static str),
    #[error("ZMTP 2.0 greeting on a CURVE socket")]
    Zmtp2OnCurve,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("peer socket type {peer} cannot talk to {ours}")]
    Incompatible { ours: &'static str, peer: String },
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A message past the socket's maxFrames: the peer goes over its memory budget.
    #[error("message of more than {limit} frames")]
    TooManyFrames { limit: usize },
    #[error("malformed command")]
    BadCommand,
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed without sending a byte: a port check, not a ZMTP peer.
    #[error("peer closed before sending a greeting")]
    NoGreeting,
    #[error("routing id already in use by another peer")]
    DuplicateIdentity,
    #[error("security mechanism mismatch: this socket speaks {ours}, the peer {peer}")]
    MechanismMismatch { ours: &'static str, peer: String },
    /// The security mechanism refused the peer's handshake or a frame: its name, the
    /// `reason` label and the words. The codec knows no mechanism; each converts its own
    /// errors into this.
    #[error("{mechanism}: {text}")]
    Mechanism { mechanism: &'static str, reason: &'static str, text: String },
}

impl WireError {
    /// The `reason` label of `zmq_proxy_handshake_failures_total` for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Io(_) => "io",
            WireError::BadGreeting(_) => "bad_greeting",
            WireError::Zmtp2OnCurve => "zmtp2_on_curve",
            WireError::Protocol(_) => "protocol_error",
            WireError::Handshake(_) => "protocol_error",
            WireError::Incompatible { .. } => "incompatible_socket_type",
            WireError::TooLarge { .. } => "too_large",
            WireError::TooManyFrames { .. } => "over_budget",
            WireError::BadCommand => "malformed_command",
            WireError::Timeout(_) => "timeout",
            WireError::Closed => "closed",
            WireError::NoGreeting => CLOSED_BEFORE_GREETING,
            WireError::DuplicateIdentity => "duplicate_identity",
            WireError::MechanismMismatch { .. } => "mechanism_mismatch",
            WireError::Mechanism { reason, .. } => reason,
        }
    }
}

/// Unwraps the frames of a secured connection: given one wire frame's body, returns the ZMTP
/// flags (MORE, COMMAND) and payload it carries, or why the frame is refused.
pub trait FrameOpener: Send {
    fn open(&mut self, frame: BytesMut) -> Result<(u8, Bytes), WireError>;
}

/// The ZMTP revision a peer greeted with. Peers settle on the lower of the two revisions, and
/// we greet as 3.1, so this is what the connection speaks. ZMTP 2.0 is revision byte 1 on the
/// wire; it is [`Revision::V2_0`] here so the order of revisions holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision {
    pub major: u8,
    pub minor: u8,
}

impl Revision {
    pub const V2_0: Revision = Revision { major: 2, minor: 0 };
    pub const V3_0: Revision = Revision { major: 3, minor: 0 };
    pub const V3_1: Revision = Revision { major: 3, minor: 1 };
    /// What we greet as.
    pub const OURS: Revision = Revision::V3_1;

    /// Whether subscriptions go to this peer as SUBSCRIBE/CANCEL commands (3.1 and later)
    /// rather than as `\x01topic`/`\x00topic` messages (3.0, which has no such commands).
    pub fn subscription_commands(self) -> bool {
        self >= Revision::V3_1
    }

    /// Whether the peer has commands at all (ZMTP 3): a 2.0 peer is sent no PING, so its
    /// connection has no heartbeats, and a command frame from it is a protocol error.
    pub fn has_commands(self) -> bool {
        self >= Revision::V3_0
    }
}

/// The signature's length: 0xFF, 8 bytes of padding, 0x7F.
pub const SIGNATURE_LEN: usize = 10;
/// The revision byte of ZMTP 2.0 (RFC 15).
pub const ZMTP_2_0: u8 = 1;
/// Longest identity a 2.0 peer may send: RFC 15's identity is one short frame.
pub const IDENTITY_MAX_BYTES: usize = 255;
/// Why a greeting whose signature is wrong is refused: libzmq would take it for ZMTP 1.0, which
/// has no signature, so it cannot be told from bytes that are not ZMTP at all.
pub const NOT_ZMTP: &str =
    "not a ZMTP 2.0 or 3.x greeting (a ZMTP 1.0 peer, or not ZMTP: TLS, HTTP, a scanner)";

/// The socket type byte a ZMTP 2.0 peer is sent: RFC 15's numbers, which are libzmq's `ZMQ_*`
/// constants; XPUB and XSUB get libzmq's 9 and 10, as libzmq sends them (RFC 15 has them only as
/// PUB and SUB, and 2.0 peers accept either).
pub fn zmtp2_socket_type(t: SocketType) -> u8 {
    match t {
        SocketType::Pair => 0,
        SocketType::Pub => 1,
        SocketType::Sub => 2,
        SocketType::Req => 3,
        SocketType::Rep => 4,
        SocketType::Dealer => 5,
        SocketType::Router => 6,
        SocketType::Pull => 7,
        SocketType::Push => 8,
        SocketType::Xpub => 9,
        SocketType::Xsub => 10,
    }
}

/// The 3.x name of a ZMTP 2.0 socket type byte, for the compatibility table.
pub fn zmtp2_socket_name(b: u8) -> Option<&'static [u8]> {
    let names: [&'static [u8]; 11] = [
        b"PAIR", b"PUB", b"SUB", b"REQ", b"REP", b"DEALER", b"ROUTER", b"PULL", b"PUSH", b"XPUB",
        b"XSUB",
    ];
    names.get(usize::from(b)).copied()
}

/// Our greeting: ZMTP 3.1, NULL mechanism.
pub fn greeting() -> [u8; GREETING_LEN] {
    greeting_for(b"NULL", false)
}

/// Our ZMTP 3.1 greeting for `mechanism` (at most 20 bytes), with the as-server bit.
pub fn greeting_for(mechanism: &[u8], as_server: bool) -> [u8; GREETING_LEN] {
    greeting_as(Revision::OURS, mechanism, as_server)
}

/// A greeting announcing `revision` (tests play 3.0 peers with it).
pub fn greeting_as(revision: Revision, mechanism: &[u8], as_server: bool) -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = revision.major;
    g[11] = revision.minor;
    let n = mechanism.len().min(20);
    g[12..12 + n].copy_from_slice(&mechanism[..n]);
    g[32] = u8::from(as_server);
    g
}

/// The mechanism name a greeting announces (without its zero padding).
pub fn greeting_mechanism(g: &[u8]) -> &[u8] {
    let mech = g.get(12..32).unwrap_or(&[]);
    let end = mech.iter().position(|&b| b == 0).unwrap_or(mech.len());
    &mech[..end]
}

pub fn check_greeting(g: &[u8]) -> Result<(), WireError> {
    if g.len() < GREETING_LEN || g[0] != 0xff || g[9] & 0x01 != 0x01 {
        return Err(WireError::BadGreeting(NOT_ZMTP));
    }
    if g[10] < 3 {
        return Err(WireError::BadGreeting("ZMTP version below 3.0"));
    }
    if greeting_mechanism(g) != b"NULL" {
        return Err(WireError::BadGreeting("only the NULL mechanism is supported"));
    }
    Ok(())
}

/// Which peer socket types a socket of type `ours` may talk to (libzmq's compatibility table).
pub fn compatible(ours: SocketType, peer: &[u8]) -> bool {
    let allowed: &[&[u8]] = match ours {
        SocketType::Router => &[b"REQ", b"DEALER", b"ROUTER"],
        SocketType::Dealer => &[b"REP", b"DEALER", b"ROUTER"],
        SocketType::Push => &[b"PULL"],
        SocketType::Pull => &[b"PUSH"],
        SocketType::Pub | SocketType::Xpub => &[b"SUB", b"XSUB"],
        SocketType::Sub | SocketType::Xsub => &[b"PUB", b"XPUB"],
        SocketType::Req => &[b"REP", b"ROUTER"],
        SocketType::Rep => &[b"REQ", b"DEALER"],
        SocketType::Pair => &[b"PAIR"],
    };
    allowed.contains(&peer)
}

/// The READY command frame (header included) announcing `socket_type`.
pub fn ready_frame(socket_type: SocketType) -> BytesMut {
    let mut body = BytesMut::with_capacity(64);
    body.put_u8(5);
    body.put_slice(b"READY");
    body.put_slice(&metadata(socket_type));
    command_frame(&body)
}

/// The metadata properties a socket of `socket_type` announces (in READY, or inside CURVE's
/// INITIATE and READY boxes).
pub fn metadata(socket_type: SocketType) -> BytesMut {
    let mut body = BytesMut::with_capacity(48);
    put_property(&mut body, b"Socket-Type", socket_type.as_str().as_bytes());
    if matches!(socket_type, SocketType::Router | SocketType::Dealer | SocketType::Req) {
        put_property(&mut body, b"Identity", b"");
    }
    body
}

/// One command frame: header, then `body` (name length, name, data).
pub fn command_frame(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 9);
    put_header(&mut out, FLAG_COMMAND, body.len());
    out.put_slice(body);
    out
}

fn put_property(body: &mut BytesMut, name: &[u8], value: &[u8]) {
    body.put_u8(name.len() as u8);
    body.put_slice(name);
    body.put_u32(value.len() as u32);
    body.put_slice(value);
}

pub(crate) fn put_header(out: &mut BytesMut, flags: u8, len: usize) {
    if len > 255 {
        out.put_u8(flags | FLAG_LONG);
        out.put_u64(len as u64);
    } else {
        out.put_u8(flags);
        out.put_u8(len as u8);
    }
}

/// Appends one message (all frames) to `out` in ZMTP framing.
pub fn encode_message(frames: &[Bytes], out: &mut BytesMut) {
    let last = frames.len().saturating_sub(1);
    for (i, f) in frames.iter().enumerate() {
        let more = if i < last { FLAG_MORE } else { 0 };
        put_header(out, more, f.len());
        out.put_slice(f);
    }
}

/// Appends one command frame (`body`: name length, name, data).
pub fn encode_command(body: &[u8], out: &mut BytesMut) {
    put_header(out, FLAG_COMMAND, body.len());
    out.put_slice(body);
}

/// A command's name and body, split.
pub struct Command {
    pub name: Bytes,
    pub body: Bytes,
}

pub fn parse_command(mut raw: Bytes) -> Result<Command, WireError> {
    if raw.is_empty() {
        return Err(WireError::BadCommand);
    }
    let n = raw[0] as usize;
    if raw.len() < 1 + n {
        return Err(WireError::BadCommand);
    }
    raw.advance(1);
    let name = raw.split_to(n);
    Ok(Command { name, body: raw })
}

pub fn parse_properties(mut body: Bytes) -> Result<HashMap<String, Bytes>, WireError> {
    let mut props = HashMap::new();
    while !body.is_empty() {
        let n = body[0] as usize;
        if body.len() < 1 + n + 4 {
            return Err(WireError::BadCommand);
        }
        body.advance(1);
        let name = String::from_utf8_lossy(&body.split_to(n)).into_owned();
        let vlen = body.get_u32() as usize;
        if body.len() < vlen {
            return Err(WireError::BadCommand);
        }
        props.insert(name, body.split_to(vlen));
    }
    Ok(props)
}

/// One decoded unit of the stream.
pub enum Item {
    Message(Vec<Bytes>),
    Command(Bytes),
}

/// Header bytes one message may carry even under a small maxMsgSize (a few thousand frames).
const MIN_HEADER_ALLOWANCE: usize = 64 * 1024;

/// What one frame of a message being assembled costs beyond its payload: its `Bytes` handle
/// (32 bytes) and its slot in the frame list, rounded up for the list's growth. With it a
/// message of empty frames weighs in the accounting what it weighs in the heap.
pub const FRAME_OVERHEAD: usize = 64;

/// Incremental frame decoder. Frames are split off the read buffer without copying; the
/// buffer is never grown on the word of a frame header, only by bytes read.
pub struct Decoder {
    parts: Vec<Bytes>,
    /// Payload bytes of the message so far (what maxMsgSize limits, as libzmq's MAXMSGSIZE).
    size: usize,
    /// Header bytes of the message so far, bounded too, so endless empty frames are refused.
    headers: usize,
    max: usize,
    /// Wire frames of the message so far, and the most one message may have (maxFrames).
    frames: usize,
    max_frames: usize,
    /// The announced length of the frame whose bytes are awaited (0 when none).
    pending: usize,
    /// Set after a CURVE handshake: every wire frame is a MESSAGE to open.
    opener: Option<Box<dyn FrameOpener>>,
    /// ZMTP 2.0 has no commands: a frame with the COMMAND bit is refused. Checked only when
    /// that bit is set, so 3.x frames pay nothing for it.
    no_commands: bool,
}

impl Decoder {
    pub fn new(max: usize) -> Self {
        Decoder {
            parts: Vec::new(),
            size: 0,
            headers: 0,
            max,
            frames: 0,
            max_frames: usize::MAX,
            pending: 0,
            opener: None,
            no_commands: false,
        }
    }

    /// The decoder for a peer that greeted with `revision`: ZMTP 2.0's framing is 3.x's
    /// without commands.
    pub fn for_revision(max: usize, revision: Revision) -> Self {
        Decoder { no_commands: !revision.has_commands(), ..Decoder::new(max) }
    }

    /// Bounds the frames of one message: one more is [`WireError::TooManyFrames`].
    pub fn with_max_frames(mut self, max_frames: usize) -> Self {
        self.max_frames = max_frames;
        self
    }

    /// The bytes the unfinished message holds in the accounting of the memory budget: its
    /// payload, [`FRAME_OVERHEAD`] per frame, and the announced length of the frame being read
    /// (reserved before its bytes arrive, so a huge announcement is judged up front).
    pub fn assembling(&self) -> usize {
        self.size
            .saturating_add(self.parts.len().saturating_mul(FRAME_OVERHEAD))
            .saturating_add(self.pending)
    }

    /// Wire frames of the unfinished message (what goes with a peer cut off mid-message).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// From now on, every frame is unwrapped by `opener` before it is interpreted.
    pub fn set_opener(&mut self, opener: Box<dyn FrameOpener>) {
        self.opener = Some(opener);
    }

    /// Changes the payload limit: a small one while a handshake's messages are read, the
    /// connection's own after.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Starts the next message with `frame` (a ROUTER puts the peer's routing id first).
    pub fn prefix(&mut self, frame: &Bytes) {
        if self.parts.is_empty() {
            self.parts.push(frame.clone());
        }
    }

    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, WireError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let flags = buf[0];
            let (hdr, len) = if flags & FLAG_LONG != 0 {
                if buf.len() < 9 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&buf[1..9]);
                (9, u64::from_be_bytes(l))
            } else {
                (2, u64::from(buf[1]))
            };
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            // The payload is what the limit is about (a frame of exactly maxMsgSize bytes passes);
            // headers are bounded separately, so endless empty frames of one message are too.
            let headers = self.headers + hdr;
            if len > self.max
                || self.size.saturating_add(len) > self.max
                || headers > self.max.max(MIN_HEADER_ALLOWANCE)
            {
                return Err(WireError::TooLarge { limit: self.max });
            }
            if flags & FLAG_COMMAND == 0 && self.frames >= self.max_frames {
                return Err(WireError::TooManyFrames { limit: self.max_frames });
            }
            if buf.len() < hdr.saturating_add(len) {
                self.pending = len;
                return Ok(None);
            }
            self.pending = 0;
            buf.advance(hdr);
            let (flags, frame) = match &mut self.opener {
                // An empty frame shares nothing: a slice of the read buffer would keep the
                // whole buffer alive for as long as the message is held.
                None if len == 0 => (flags, Bytes::new()),
                None => (flags, buf.split_to(len).freeze()),
                Some(opener) => opener.open(buf.split_to(len))?,
            };
            if flags & FLAG_COMMAND != 0 {
                if self.no_commands {
                    return Err(WireError::Protocol("a command frame from a ZMTP 2.0 peer"));
                }
                return Ok(Some(Item::Command(frame)));
            }
            self.size += len;
            self.headers = headers;
            self.frames += 1;
            self.parts.push(frame);
            if flags & FLAG_MORE == 0 {
                self.size = 0;
                self.headers = 0;
                self.frames = 0;
                let cap = self.parts.len().max(1);
                return Ok(Some(Item::Message(std::mem::replace(
                    &mut self.parts,
                    Vec::with_capacity(cap),
                ))));
            }
        }
    }
}

/// What the handshake learned about the peer.
pub struct PeerInfo {
    pub socket_type: Bytes,
    pub identity: Bytes,
    /// The revision the peer greeted with: which form of subscriptions it is sent.
    pub revision: Revision,
}

/// What the greetings settled.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeted {
    /// ZMTP 3.x, at the peer's revision: the mechanism's handshake follows.
    V3(Revision),
    /// ZMTP 2.0 with the peer's socket type byte: the identity frames follow.
    V2 { socket_type: u8 },
}

/// A ZMTP 2.0 peer's identity frame from the front of `buf` (RFC 15: `%x00 length body`, one
/// final short frame), or `None` until it is whole; any other flags are refused.
pub fn parse_identity(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    match buf.first() {
        None => return Ok(None),
        Some(0) => {}
        Some(_) => {
            return Err(WireError::Protocol("a ZMTP 2.0 identity that is not one short frame"));
        }
    }
    let Some(&len) = buf.get(1) else { return Ok(None) };
    let len = usize::from(len);
    if buf.len() < 2 + len {
        return Ok(None);
    }
    buf.advance(2);
    let identity = detached(&buf[..len]);
    buf.advance(len);
    Ok(Some(identity))
}

/// The peer's socket type and identity from its metadata, refused when the types cannot talk;
/// `revision` is what it greeted with.
pub fn peer_info(
    ours: SocketType,
    metadata: Bytes,
    revision: Revision,
) -> Result<PeerInfo, WireError> {
    let props = parse_properties(metadata)?;
    let socket_type = props.get("Socket-Type").cloned().unwrap_or_default();
    if !compatible(ours, &socket_type) {
        return Err(WireError::Incompatible {
            ours: ours.as_str(),
            peer: String::from_utf8_lossy(&socket_type).into_owned(),
        });
    }
    let identity = props.get("Identity").cloned().unwrap_or_default();
    Ok(PeerInfo { socket_type: detached(&socket_type), identity: detached(&identity), revision })
}

/// A copy of its own of what a handshake read: kept for the connection's life, a slice would
/// keep the whole read buffer it was read into.
fn detached(b: &[u8]) -> Bytes {
    if b.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(b) }
}

/// A subscription change carried by a message (`\x01topic` / `\x00topic`) or by a ZMTP 3.1
/// SUBSCRIBE/CANCEL command.
pub fn subscription_of_message(frames: &[Bytes]) -> Option<(bool, Bytes)> {
    if frames.len() != 1 {
        return None;
    }
    let f = &frames[0];
    match f.first() {
        Some(1) => Some((true, f.slice(1..))),
        Some(0) => Some((false, f.slice(1..))),
        _ => None,
    }
}

pub fn subscription_of_command(cmd: &Command) -> Option<(bool, Bytes)> {
    match &cmd.name[..] {
        SUBSCRIBE => Some((true, cmd.body.clone())),
        CANCEL => Some((false, cmd.body.clone())),
        _ => None,
    }
}

/// The PONG command frame answering a PING (RFC 37: PING carries a 2-byte TTL, then a
/// context the PONG echoes).
pub fn pong_for(cmd: &Command) -> Option<Bytes> {
    pong_body(cmd).map(|b| command_frame(&b).freeze())
}

/// The PONG command's body (name length, name, context), unframed: a secured connection
/// seals it like a message.
pub fn pong_body(cmd: &Command) -> Option<Bytes> {
    if &cmd.name[..] != b"PING" {
        return None;
    }
    let context = if cmd.body.len() > 2 { &cmd.body[2..] } else { &[][..] };
    let context = &context[..context.len().min(16)];
    let mut body = BytesMut::with_capacity(5 + context.len());
    body.put_u8(4);
    body.put_slice(b"PONG");
    body.put_slice(context);
    Some(body.freeze())
}

/// The `\x01topic` / `\x00topic` message for a subscription change: how subscriptions travel
/// inside the proxy, and on the wire to ZMTP 3.0 peers.
pub fn subscription_message(subscribe: bool, topic: &[u8]) -> Vec<Bytes> {
    let mut f = BytesMut::with_capacity(topic.len() + 1);
    f.put_u8(u8::from(subscribe));
    f.put_slice(topic);
    vec![f.freeze()]
}

const SUBSCRIBE: &[u8] = b"SUBSCRIBE";
const CANCEL: &[u8] = b"CANCEL";

/// The ZMTP 3.1 command name for the subscription message frame `\x01topic` / `\x00topic`
/// (the first byte says which), and the topic after it.
fn command_of_subscription(frame: &[u8]) -> (&'static [u8], &[u8]) {
    match frame.split_first() {
        Some((1, topic)) => (SUBSCRIBE, topic),
        Some((_, topic)) => (CANCEL, topic),
        None => (CANCEL, &[]),
    }
}

/// Appends the SUBSCRIBE/CANCEL command frame (ZMTP 3.1) that carries the subscription message
/// frame `\x01topic` / `\x00topic`.
pub fn encode_subscription_command(frame: &[u8], out: &mut BytesMut) {
    let (name, topic) = command_of_subscription(frame);
    put_header(out, FLAG_COMMAND, 1 + name.len() + topic.len());
    out.put_u8(name.len() as u8);
    out.put_slice(name);
    out.put_slice(topic);
}

/// That command's body (name length, name, topic), unframed: a secured connection seals it.
pub fn subscription_command_body(frame: &[u8]) -> Bytes {
    let (name, topic) = command_of_subscription(frame);
    let mut body = BytesMut::with_capacity(1 + name.len() + topic.len());
    body.put_u8(name.len() as u8);
    body.put_slice(name);
    body.put_slice(topic);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed-seed generator, so the garbage below is the same on every run.
    fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed >> 12;
                *seed ^= *seed << 25;
                *seed ^= *seed >> 27;
                (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// Whatever bytes a peer sends, the decoder ends in a message, a command, "need more" or an
    /// error: it never panics, never yields more than its limit, and never grows the buffer.
    /// Valid frames are mixed in so the garbage also lands mid-message.
    #[test]
    fn random_bytes_never_panic_or_exceed_the_limit() {
        const LIMIT: usize = 4096;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20_000 {
            let mut buf = BytesMut::new();
            if round % 3 == 0 {
                encode_message(&[Bytes::from_static(b"ok"), Bytes::new()], &mut buf);
            }
            let len = (round % 97) + 1;
            buf.extend_from_slice(&garbage(&mut seed, len));
            let before = buf.capacity();
            let mut dec = Decoder::new(LIMIT);
            for _ in 0..len + 2 {
                match dec.decode(&mut buf) {
                    Ok(Some(Item::Message(parts))) => {
                        assert!(parts.iter().map(Bytes::len).sum::<usize>() <= LIMIT);
                    }
                    Ok(Some(Item::Command(c))) => assert!(c.len() <= LIMIT),
                    Ok(None) | Err(_) => break,
                }
            }
            assert!(buf.capacity() <= before, "the decoder grew the buffer on a header's word");
        }
    }

    /// Command and property parsing see whatever a peer put in a command frame: random bytes
    /// are an error or a parse, never a panic or an out-of-bounds read.
    #[test]
    fn random_command_bodies_never_panic() {
        let mut seed = 0xdead_beef_cafe_f00du64;
        for round in 0..20_000 {
            let raw = Bytes::from(garbage(&mut seed, round % 64));
            if let Ok(cmd) = parse_command(raw.clone()) {
                let _ = parse_properties(cmd.body.clone());
                let _ = pong_for(&cmd);
                let _ = subscription_of_command(&cmd);
            }
            let _ = parse_properties(raw);
        }
    }

    /// Random greetings are refused with an error, never accepted and never a panic; a
    /// truncated real greeting is refused too.
    #[test]
    fn random_and_truncated_greetings_are_refused() {
        let mut seed = 0x0123_4567_89ab_cdefu64;
        for _ in 0..5_000 {
            let g = garbage(&mut seed, GREETING_LEN);
            assert!(check_greeting(&g).is_err() || g[..] == greeting()[..]);
        }
        let real = greeting();
        for cut in 0..GREETING_LEN {
            assert!(check_greeting(&real[..cut]).is_err(), "accepted {cut} bytes");
        }
    }

    #[test]
    fn decoder_splits_multipart_and_refuses_oversized_frames() {
        let mut out = BytesMut::new();
        encode_message(&[Bytes::from_static(b"a"), Bytes::from(vec![7u8; 300])], &mut out);
        let mut dec = Decoder::new(1024);
        match dec.decode(&mut out) {
            Ok(Some(Item::Message(parts))) => {
                assert_eq!(parts.len(), 2);
                assert_eq!(parts[1].len(), 300);
            }
            _ => panic!("expected a message"),
        }
        // A header claiming 2^60 bytes is refused without allocating anything.
        let mut huge = BytesMut::new();
        huge.put_u8(FLAG_LONG);
        huge.put_u64(1 << 60);
        assert!(matches!(dec.decode(&mut huge), Err(WireError::TooLarge { .. })));
    }

    /// maxMsgSize limits payload bytes, as libzmq's MAXMSGSIZE: exactly the limit passes, one
    /// byte more (in any frame of the message) drops the peer; "unlimited" cannot overflow.
    #[test]
    fn max_msg_size_counts_payload_and_unlimited_has_no_overflow() {
        let frames = |sizes: &[usize]| {
            let mut out = BytesMut::new();
            let parts: Vec<Bytes> = sizes.iter().map(|n| Bytes::from(vec![1u8; *n])).collect();
            encode_message(&parts, &mut out);
            out
        };
        let mut dec = Decoder::new(1000);
        assert!(matches!(dec.decode(&mut frames(&[1000])), Ok(Some(Item::Message(_)))));
        assert!(matches!(dec.decode(&mut frames(&[600, 400])), Ok(Some(Item::Message(_)))));
        let mut dec = Decoder::new(1000);
        assert!(matches!(dec.decode(&mut frames(&[600, 401])), Err(WireError::TooLarge { .. })));
        let mut dec = Decoder::new(1000);
        assert!(matches!(dec.decode(&mut frames(&[1001])), Err(WireError::TooLarge { .. })));
        let mut unlimited = Decoder::new(usize::MAX);
        let mut huge = BytesMut::new();
        huge.put_u8(FLAG_LONG);
        huge.put_u64(u64::MAX);
        assert!(matches!(unlimited.decode(&mut huge), Ok(None)), "waits for bytes, allocates none");
        assert!(huge.capacity() < 1024);
        let mut empties = Decoder::new(10);
        let many = frames(&vec![0; MIN_HEADER_ALLOWANCE]);
        let mut many = many;
        assert!(matches!(empties.decode(&mut many), Err(WireError::TooLarge { .. })));
    }

    /// maxFrames bounds a message's frames (exactly the limit passes, one more is refused), and
    /// the accounting counts FRAME_OVERHEAD per frame, so empty frames are not free.
    #[test]
    fn max_frames_bounds_a_message_and_empty_frames_count_their_overhead() {
        let mut dec = Decoder::new(usize::MAX).with_max_frames(4);
        let mut four = BytesMut::from(&[FLAG_MORE, 0, FLAG_MORE, 0, FLAG_MORE, 0, 0, 0][..]);
        assert!(matches!(dec.decode(&mut four), Ok(Some(Item::Message(m))) if m.len() == 4));
        let mut endless = BytesMut::new();
        for _ in 0..3 {
            endless.put_slice(&[FLAG_MORE, 0]);
        }
        assert!(matches!(dec.decode(&mut endless), Ok(None)));
        assert_eq!((dec.frames(), dec.assembling()), (3, 3 * FRAME_OVERHEAD));
        endless.put_slice(&[FLAG_MORE, 0, FLAG_MORE, 0]);
        assert!(matches!(dec.decode(&mut endless), Err(WireError::TooManyFrames { limit: 4 })));
        // An announced frame is reserved before its bytes arrive.
        let mut dec = Decoder::new(1 << 20);
        let mut head = BytesMut::new();
        head.put_u8(FLAG_LONG);
        head.put_u64(1000);
        assert!(matches!(dec.decode(&mut head), Ok(None)));
        assert_eq!(dec.assembling(), 1000);
    }

    #[test]
    fn ready_round_trips_through_the_property_parser() {
        let mut f = ready_frame(SocketType::Router);
        let mut dec = Decoder::new(1024);
        let Ok(Some(Item::Command(raw))) = dec.decode(&mut f) else { panic!("command") };
        let cmd = parse_command(raw).expect("command");
        assert_eq!(&cmd.name[..], b"READY");
        let props = parse_properties(cmd.body).expect("props");
        assert_eq!(props.get("Socket-Type").map(|b| &b[..]), Some(&b"ROUTER"[..]));
    }

    /// We greet as 3.1 (RFC 37), so libzmq 4.3 peers speak 3.1 to us; the greeting is otherwise
    /// the 3.0 one.
    #[test]
    fn the_greeting_announces_zmtp_3_1() {
        let g = greeting();
        assert_eq!(&g[..12], b"\xff\0\0\0\0\0\0\0\0\x7f\x03\x01");
        assert_eq!(greeting_mechanism(&g), b"NULL");
        let old = greeting_as(Revision::V3_0, b"CURVE", true);
        assert_eq!((old[10], old[11], old[32]), (3, 0, 1));
        assert_eq!(greeting_mechanism(&old), b"CURVE");
    }

    /// The exact bytes of RFC 37's SUBSCRIBE and CANCEL commands, and that our decoder reads
    /// them back as the subscription message they carry.
    #[test]
    fn subscription_commands_encode_as_rfc_37_and_read_back() {
        let mut out = BytesMut::new();
        encode_subscription_command(&subscription_message(true, b"weather")[0], &mut out);
        assert_eq!(&out[..], b"\x04\x11\x09SUBSCRIBEweather");
        out.clear();
        encode_subscription_command(&subscription_message(false, b"")[0], &mut out);
        assert_eq!(&out[..], b"\x04\x07\x06CANCEL");
        // A topic longer than a short frame takes the long header.
        let topic = vec![b't'; 300];
        out.clear();
        encode_subscription_command(&subscription_message(true, &topic)[0], &mut out);
        assert_eq!(out[0], FLAG_COMMAND | FLAG_LONG);
        let mut dec = Decoder::new(1024);
        let Ok(Some(Item::Command(raw))) = dec.decode(&mut out) else { panic!("a command") };
        assert_eq!(raw, subscription_command_body(&subscription_message(true, &topic)[0]));
        let cmd = parse_command(raw).expect("command");
        assert_eq!(subscription_of_command(&cmd), Some((true, Bytes::from(topic))));
        // The 3.0 form, as a message, reads back the same way.
        let old = subscription_message(false, b"x");
        assert_eq!(&old[0][..], b"\x00x");
        assert_eq!(subscription_of_message(&old), Some((false, Bytes::from_static(b"x"))));
    }

    /// RFC 15's frames (short and long, MORE or final) read back as one message through the
    /// decoder of a 2.0 connection, and our encoder writes exactly those bytes: 2.0 and 3.x
    /// frame messages alike.
    #[test]
    fn zmtp2_frames_decode_and_encode_as_rfc_15_lays_them_out() {
        let long = vec![b'L'; 300];
        let mut wire = BytesMut::new();
        wire.extend_from_slice(b"\x01\x00"); // more-short, empty (a REQ delimiter)
        wire.extend_from_slice(b"\x03\x00\x00\x00\x00\x00\x00\x01\x2c"); // more-long, 300
        wire.extend_from_slice(&long);
        wire.extend_from_slice(b"\x00\x03abc"); // final-short
        let expected = wire.clone();
        let mut dec = Decoder::for_revision(1024, Revision::V2_0);
        let Ok(Some(Item::Message(parts))) = dec.decode(&mut wire) else { panic!("a message") };
        assert_eq!(
            parts,
            vec![Bytes::new(), Bytes::from(long.clone()), Bytes::from_static(b"abc")]
        );
        assert!(wire.is_empty());
        let mut out = BytesMut::new();
        encode_message(&parts, &mut out);
        assert_eq!(out, expected);
        // A final long frame: flags 0x02, 8-byte length.
        let mut out = BytesMut::new();
        encode_message(&[Bytes::from(long.clone())], &mut out);
        assert_eq!(&out[..9], b"\x02\x00\x00\x00\x00\x00\x00\x01\x2c");
        let Ok(Some(Item::Message(one))) = dec.decode(&mut out) else { panic!("a message") };
        assert_eq!(one, vec![Bytes::from(long)]);
        // A frame split across reads waits for the rest.
        let mut part = BytesMut::from(&b"\x00\x05ab"[..]);
        assert!(matches!(dec.decode(&mut part), Ok(None)));
        part.extend_from_slice(b"cde");
        let Ok(Some(Item::Message(m))) = dec.decode(&mut part) else { panic!("a message") };
        assert_eq!(m, vec![Bytes::from_static(b"abcde")]);
    }

    /// ZMTP 2.0 has no commands (bits 2-7 of its flags are reserved): a frame with the COMMAND
    /// bit drops a 2.0 peer as a protocol error, where a 3.x connection reads a command.
    #[test]
    fn a_command_frame_is_a_protocol_error_only_from_a_zmtp2_peer() {
        let ping = || BytesMut::from(&b"\x04\x05\x04PING"[..]);
        let mut v3 = Decoder::for_revision(1024, Revision::V3_0);
        assert!(matches!(v3.decode(&mut ping()), Ok(Some(Item::Command(_)))));
        let mut v2 = Decoder::for_revision(1024, Revision::V2_0);
        let err = v2.decode(&mut ping()).err().expect("refused");
        assert_eq!(err.reason(), "protocol_error");
        assert!(!Revision::V2_0.has_commands() && !Revision::V2_0.subscription_commands());
        assert!(Revision::V2_0 < Revision::V3_0);
        // maxMsgSize still bounds a 2.0 peer.
        let mut huge = BytesMut::from(&b"\x02\x10\x00\x00\x00\x00\x00\x00\x00"[..]);
        assert!(matches!(v2.decode(&mut huge), Err(WireError::TooLarge { .. })));
    }

    /// The identity frame: empty or named, whole or waiting for the rest; any flags but a final
    /// short frame's are refused.
    #[test]
    fn zmtp2_identity_frame_parses_or_waits_or_is_refused() {
        let mut empty = BytesMut::from(&b"\x00\x00\x01\x00"[..]);
        assert_eq!(parse_identity(&mut empty).ok().flatten(), Some(Bytes::new()));
        assert_eq!(&empty[..], b"\x01\x00", "what follows the identity stays in the buffer");
        let mut named = BytesMut::from(&b"\x00\x04wo"[..]);
        assert!(matches!(parse_identity(&mut named), Ok(None)));
        named.extend_from_slice(b"rk");
        assert_eq!(parse_identity(&mut named).ok().flatten(), Some(Bytes::from_static(b"work")));
        assert!(matches!(parse_identity(&mut BytesMut::new()), Ok(None)));
        assert!(matches!(parse_identity(&mut BytesMut::from(&b"\x00"[..])), Ok(None)));
        for flags in [0x01u8, 0x02, 0x03, 0x04] {
            let mut bad = BytesMut::from(&[flags, 0][..]);
            assert!(parse_identity(&mut bad).is_err(), "flags {flags:#x}");
        }
    }

    /// RFC 15's socket type numbers (libzmq's, XPUB 9 and XSUB 10 included) both ways.
    #[test]
    fn zmtp2_socket_type_numbers_are_rfc_15s() {
        let expected = [
            (SocketType::Pair, 0),
            (SocketType::Pub, 1),
            (SocketType::Sub, 2),
            (SocketType::Req, 3),
            (SocketType::Rep, 4),
            (SocketType::Dealer, 5),
            (SocketType::Router, 6),
            (SocketType::Pull, 7),
            (SocketType::Push, 8),
            (SocketType::Xpub, 9),
            (SocketType::Xsub, 10),
        ];
        for (t, n) in expected {
            assert_eq!(zmtp2_socket_type(t), n, "{t:?}");
            assert_eq!(zmtp2_socket_name(n), Some(t.as_str().as_bytes()), "{n}");
        }
        assert_eq!(zmtp2_socket_name(11), None);
    }

    #[test]
    fn garbage_greeting_is_refused() {
        assert!(check_greeting(&[b'G'; 64]).is_err());
        assert!(check_greeting(&greeting()).is_ok());
    }
}
