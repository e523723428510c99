//! The link's message format (see docs/federation.md, "The link"): every message between two
//! replicas starts with one header frame, `version, kind, origin` (1 + 1 + 8 bytes), naming what
//! the message is and the replica it entered the federation at. The frames after the header are
//! the kind's body. Publications, tasks, requests and replies travel in batches: one body frame
//! carrying several peers' messages (`batch.rs`), so the link pays its framing once per batch,
//! not once per message. No I/O here.

use bytes::{BufMut, Bytes, BytesMut};

use super::batch;
use crate::engine::curve::{CurveError, Sealer};
use crate::policy::sockets::{Batch, Msg};
use crate::wire::zmtp::{FLAG_MORE, put_header};

/// The link protocol's version, first byte of every header. A replica refuses a link whose
/// HELLO carries another, so a rolling update between incompatible versions fails loudly.
/// Version 2 carries messages in batches.
pub const VERSION: u8 = 2;
/// Header frame length.
pub const HEADER_LEN: usize = 10;
/// Longest federation id a HELLO may carry (a DNS label or pod name fits).
pub const ID_MAX_BYTES: usize = 253;
/// Longest pattern name a HELLO may carry (`XSUB/XPUB`).
const PATTERN_MAX_BYTES: usize = 32;

/// A replica's short name on the wire: FNV-1a of its federation id, so every replica computes
/// the same tag from the same id without a round of agreement.
pub type MemberTag = u64;

pub fn member_tag(id: &str) -> MemberTag {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a link message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// First message each way: body is the sender's federation id and the pattern it runs
    /// (`XSUB/XPUB`, `PULL/PUSH`, `ROUTER/DEALER`): replicas of one federation run the same.
    Hello,
    /// A subscription of the origin's own subscribers: body is the topic.
    Subscribe,
    /// Its cancel: body is the topic.
    Cancel,
    /// Publications read by the origin from its own publishers: body is one batch frame.
    Publish,
    /// How many more tasks the origin's own workers can take, how many tasks of the receiver
    /// the origin has handed to them so far, and how many workers it has: body is three
    /// big-endian u64.
    Credit,
    /// Tasks read by the origin from its own producers: body is one batch frame.
    Task,
    /// The origin was paused (body `1`) or resumed (`0`) by its own control socket or pause
    /// file; the receiver follows and tells nobody else.
    State,
    /// Requests read by the origin from its own clients (ROUTER/DEALER): body is one batch
    /// frame, each message the client's routing id first.
    Request,
    /// Replies to requests the receiver sent: body is one batch frame, each message the
    /// client's routing id first (the routing frame naming the receiver already stripped).
    Reply,
    /// PULL/PUSH: the origin is stopping; the receiver places no more tasks on it and answers
    /// `End`. No body.
    Leaving,
    /// PULL/PUSH: the last message the origin sends over this connection to a leaving replica
    /// (no task follows it). No body.
    End,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Subscribe => 2,
            Kind::Cancel => 3,
            Kind::Publish => 4,
            Kind::Credit => 5,
            Kind::Task => 6,
            Kind::State => 7,
            Kind::Request => 8,
            Kind::Reply => 9,
            Kind::Leaving => 20,
            Kind::End => 21,
        }
    }

    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Subscribe,
            3 => Kind::Cancel,
            4 => Kind::Publish,
            5 => Kind::Credit,
            6 => Kind::Task,
            7 => Kind::State,
            8 => Kind::Request,
            9 => Kind::Reply,
            20 => Kind::Leaving,
            21 => Kind::End,
            _ => return None,
        })
    }
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub origin: MemberTag,
}

/// Why a link message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a link message without a header frame")]
    Empty,
    #[error("a header frame of {0} bytes (expected {HEADER_LEN})")]
    HeaderLength(usize),
    #[error("link protocol version {0}, this replica speaks {VERSION}")]
    Version(u8),
    #[error("unknown link message kind {0}")]
    Kind(u8),
    #[error("a {0:?} message with {1} body frames")]
    Body(Kind, usize),
    #[error("a federation id or pattern that is empty, too long or not UTF-8")]
    Id,
    #[error("a malformed batch: {0}")]
    Batch(&'static str),
}

/// The header frame of `kind` from `origin`. Built once per kind and cloned per message.
pub fn header(kind: Kind, origin: MemberTag) -> Bytes {
    let mut h = BytesMut::with_capacity(HEADER_LEN);
    h.put_u8(VERSION);
    h.put_u8(kind.byte());
    h.put_u64(origin);
    h.freeze()
}

pub fn parse_header(f: &[u8]) -> Result<Header, FrameError> {
    if f.len() != HEADER_LEN {
        return Err(FrameError::HeaderLength(f.len()));
    }
    if f[0] != VERSION {
        return Err(FrameError::Version(f[0]));
    }
    let kind = Kind::of(f[1]).ok_or(FrameError::Kind(f[1]))?;
    let mut o = [0u8; 8];
    o.copy_from_slice(&f[2..10]);
    Ok(Header { kind, origin: u64::from_be_bytes(o) })
}

/// A message read from a link, split into what it means.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkMessage {
    Hello { origin: MemberTag, id: String, pattern: String },
    Subscription { origin: MemberTag, subscribe: bool, topic: Bytes },
    Publish { origin: MemberTag, msgs: Vec<Msg> },
    Credit { origin: MemberTag, room: u64, taken: u64, workers: u64 },
    Task { origin: MemberTag, msgs: Batch },
    State { origin: MemberTag, paused: bool },
    Request { origin: MemberTag, msgs: Vec<Msg> },
    Reply { origin: MemberTag, msgs: Vec<Msg> },
    Leaving { origin: MemberTag },
    End { origin: MemberTag },
}

/// A HELLO text field: UTF-8, not empty, at most `max` bytes.
fn hello_text(b: &[u8], max: usize) -> Result<String, FrameError> {
    match std::str::from_utf8(b) {
        Ok(s) if !s.is_empty() && s.len() <= max => Ok(s.to_string()),
        _ => Err(FrameError::Id),
    }
}

/// Parses one link message (its frames, header first).
pub fn parse(mut frames: Vec<Bytes>) -> Result<LinkMessage, FrameError> {
    let first = frames.first().ok_or(FrameError::Empty)?;
    let h = parse_header(first)?;
    let body = frames.len() - 1;
    match h.kind {
        Kind::Hello => {
            let [_, id, pattern] = &frames[..] else {
                return Err(FrameError::Body(h.kind, body));
            };
            let id = hello_text(id, ID_MAX_BYTES)?;
            let pattern = hello_text(pattern, PATTERN_MAX_BYTES)?;
            Ok(LinkMessage::Hello { origin: h.origin, id, pattern })
        }
        Kind::Subscribe | Kind::Cancel => {
            if body != 1 {
                return Err(FrameError::Body(h.kind, body));
            }
            let topic = frames.pop().unwrap_or_default();
            Ok(LinkMessage::Subscription {
                origin: h.origin,
                subscribe: h.kind == Kind::Subscribe,
                topic,
            })
        }
        Kind::Publish | Kind::Task | Kind::Request | Kind::Reply => {
            let [_, b] = &frames[..] else {
                return Err(FrameError::Body(h.kind, body));
            };
            let msgs = batch::parse(b)?;
            let origin = h.origin;
            Ok(match h.kind {
                Kind::Task => LinkMessage::Task { origin, msgs },
                Kind::Request => LinkMessage::Request { origin, msgs: msgs.into_msgs() },
                Kind::Reply => LinkMessage::Reply { origin, msgs: msgs.into_msgs() },
                _ => LinkMessage::Publish { origin, msgs: msgs.into_msgs() },
            })
        }
        Kind::Credit => match &frames[1..] {
            [b] if b.len() == 24 => {
                let u = |i: usize| {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&b[i * 8..i * 8 + 8]);
                    u64::from_be_bytes(x)
                };
                let (room, taken, workers) = (u(0), u(1), u(2));
                Ok(LinkMessage::Credit { origin: h.origin, room, taken, workers })
            }
            _ => Err(FrameError::Body(h.kind, body)),
        },
        Kind::State => match &frames[1..] {
            [b] if b[..] == [0] || b[..] == [1] => {
                Ok(LinkMessage::State { origin: h.origin, paused: b[0] == 1 })
            }
            _ => Err(FrameError::Body(h.kind, body)),
        },
        Kind::Leaving | Kind::End if body != 0 => Err(FrameError::Body(h.kind, body)),
        Kind::Leaving => Ok(LinkMessage::Leaving { origin: h.origin }),
        Kind::End => Ok(LinkMessage::End { origin: h.origin }),
    }
}

/// The body of a CREDIT message.
pub fn credit_body(room: u64, taken: u64, workers: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(24);
    b.put_u64(room);
    b.put_u64(taken);
    b.put_u64(workers);
    b.freeze()
}

/// Appends one link message, `header` then `body`, in ZMTP framing, or each frame in its own
/// CURVE MESSAGE box.
pub fn encode(
    header: &Bytes,
    body: &[Bytes],
    out: &mut BytesMut,
    sealer: Option<&mut Sealer>,
) -> Result<(), CurveError> {
    let frames = std::iter::once(header).chain(body);
    let last = body.len();
    match sealer {
        None => {
            for (i, f) in frames.enumerate() {
                put_header(out, if i < last { FLAG_MORE } else { 0 }, f.len());
                out.put_slice(f);
            }
            Ok(())
        }
        Some(s) => frames.enumerate().try_for_each(|(i, f)| s.seal_frame(i < last, false, f, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::{Decoder, Item};

    fn decode_one(buf: &mut BytesMut) -> Vec<Bytes> {
        match Decoder::new(1 << 20).decode(buf) {
            Ok(Some(Item::Message(m))) => m,
            _ => panic!("one whole message expected"),
        }
    }

    #[test]
    fn every_kind_round_trips_through_zmtp_framing_with_its_origin() {
        let me = member_tag("proxy-0");
        let msgs = |m: &[&'static [u8]]| vec![m.iter().map(|f| Bytes::from_static(f)).collect()];
        let published = msgs(&[b"a", b"b"]);
        let tasks = vec![msgs(&[b"t"]).remove(0), msgs(&[b"u", b""]).remove(0)];
        let requests = msgs(&[b"\0\0\0\0\x01", b"q"]);
        let replies = msgs(&[b"\0\0\0\0\x01", b"r"]);
        let cases = [
            (Kind::Hello, vec![Bytes::from_static(b"proxy-0"), Bytes::from_static(b"PULL/PUSH")]),
            (Kind::Subscribe, vec![Bytes::from_static(b"weather")]),
            (Kind::Cancel, vec![Bytes::new()]),
            (Kind::Publish, vec![batch::body_of(&published)]),
            (Kind::Task, vec![batch::body_of(&tasks)]),
            (Kind::Request, vec![batch::body_of(&requests)]),
            (Kind::Reply, vec![batch::body_of(&replies)]),
            (Kind::Credit, vec![credit_body(1000, 7, 2)]),
            (Kind::State, vec![Bytes::from_static(&[1])]),
            (Kind::Leaving, vec![]),
            (Kind::End, vec![]),
        ];
        for (kind, body) in cases {
            let mut out = BytesMut::new();
            encode(&header(kind, me), &body, &mut out, None).expect("plain encoding");
            let frames = decode_one(&mut out);
            assert!(out.is_empty(), "{kind:?}: exactly one message");
            let expected = match kind {
                Kind::Hello => LinkMessage::Hello {
                    origin: me,
                    id: "proxy-0".into(),
                    pattern: "PULL/PUSH".into(),
                },
                Kind::Subscribe | Kind::Cancel => LinkMessage::Subscription {
                    origin: me,
                    subscribe: kind == Kind::Subscribe,
                    topic: body[0].clone(),
                },
                Kind::Publish => LinkMessage::Publish { origin: me, msgs: published.clone() },
                Kind::Task => LinkMessage::Task { origin: me, msgs: Batch::Msgs(tasks.clone()) },
                Kind::Request => LinkMessage::Request { origin: me, msgs: requests.clone() },
                Kind::Reply => LinkMessage::Reply { origin: me, msgs: replies.clone() },
                Kind::State => LinkMessage::State { origin: me, paused: true },
                Kind::Leaving => LinkMessage::Leaving { origin: me },
                Kind::End => LinkMessage::End { origin: me },
                Kind::Credit => {
                    LinkMessage::Credit { origin: me, room: 1000, taken: 7, workers: 2 }
                }
            };
            assert_eq!(parse(frames), Ok(expected));
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        let me = member_tag("a");
        let h = |k| header(k, me);
        assert_eq!(parse(vec![]), Err(FrameError::Empty));
        assert_eq!(parse(vec![Bytes::from_static(b"short")]), Err(FrameError::HeaderLength(5)));
        // A replica of the first version (one message per link message) is refused by name.
        let mut v1 = h(Kind::Publish).to_vec();
        v1[0] = 1;
        assert_eq!(parse(vec![Bytes::from(v1), Bytes::new()]), Err(FrameError::Version(1)));
        let mut k10 = h(Kind::Publish).to_vec();
        k10[1] = 10;
        assert_eq!(parse(vec![Bytes::from(k10)]), Err(FrameError::Kind(10)));
        assert_eq!(parse(vec![h(Kind::Reply)]), Err(FrameError::Body(Kind::Reply, 0)));
        assert_eq!(parse(vec![h(Kind::Publish)]), Err(FrameError::Body(Kind::Publish, 0)));
        // Version 2's messages are one batch frame: the old multipart body is refused.
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        assert_eq!(parse(vec![h(Kind::Task), a, b]), Err(FrameError::Body(Kind::Task, 2)));
        assert_eq!(
            parse(vec![h(Kind::Task), Bytes::from_static(b"\0\0\0\x01")]),
            Err(FrameError::Batch("more messages than bytes"))
        );
        assert_eq!(
            parse(vec![h(Kind::Subscribe), Bytes::new(), Bytes::new()]),
            Err(FrameError::Body(Kind::Subscribe, 2))
        );
        let p = Bytes::from_static(b"XSUB/XPUB");
        assert_eq!(parse(vec![h(Kind::Hello), Bytes::new(), p.clone()]), Err(FrameError::Id));
        assert_eq!(parse(vec![h(Kind::Hello), p.clone()]), Err(FrameError::Body(Kind::Hello, 1)));
        assert_eq!(
            parse(vec![h(Kind::Credit), Bytes::from_static(b"short")]),
            Err(FrameError::Body(Kind::Credit, 1))
        );
        let bad = Bytes::from_static(b"\xff");
        assert_eq!(parse(vec![h(Kind::Hello), bad, p]), Err(FrameError::Id));
    }

    #[test]
    fn member_tags_are_stable_and_tell_ids_apart() {
        // FNV-1a's published test vector: every version computes the same tag.
        assert_eq!(member_tag("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(member_tag("proxy-0"), member_tag("proxy-1"));
    }
}
