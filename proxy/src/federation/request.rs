//! ROUTER/DEALER across replicas (docs/federation.md, "ROUTER/DEALER"). A request read from a
//! client goes to this replica's own workers first and, when they cannot take it, as `REQUEST`
//! to a replica with credit (the placement is PULL/PUSH's, `credit.rs`). The worker's replica
//! puts one routing frame in front of the envelope, naming the entry replica; REP and DEALER
//! workers echo the envelope, so the reply comes back with that frame first, and the worker's
//! replica strips it and sends the rest as `REPLY` to the entry replica, which routes it to
//! the client by the client's routing id like any reply.
//!
//! The routing frame is ten bytes: a zero byte, [`ROUTE_MARK`], and the entry replica's member
//! tag. A ROUTER's generated routing ids are five bytes (a zero byte and a counter), and libzmq
//! reserves ids starting with a zero byte for itself, so no client's routing id reads as one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::Arrival;
use super::frame::MemberTag;
use super::members::{self, LinkOut, Member, MemberCounters, Members};
use crate::policy::sockets::Msg;

/// The pattern name replicas of a ROUTER/DEALER federation tell each other in HELLO.
pub const PATTERN: &str = "ROUTER/DEALER";

/// The routing frame's second byte, after the zero byte.
pub const ROUTE_MARK: u8 = 0xfe;
/// The routing frame's length.
pub const ROUTE_LEN: usize = 10;

/// The routing frame naming the entry replica `entry`.
pub fn route_frame(entry: MemberTag) -> Bytes {
    let mut b = BytesMut::with_capacity(ROUTE_LEN);
    b.put_u8(0);
    b.put_u8(ROUTE_MARK);
    b.put_u64(entry);
    b.freeze()
}

/// The entry replica a frame names, if it is a routing frame.
pub fn entry_of(frame: &[u8]) -> Option<MemberTag> {
    match frame {
        [0, ROUTE_MARK, tag @ ..] if tag.len() == 8 => {
            let mut t = [0u8; 8];
            t.copy_from_slice(tag);
            Some(u64::from_be_bytes(t))
        }
        _ => None,
    }
}

/// A request that crossed a link, as this replica's workers get it: the routing frame first
/// (cloned, not copied: one per link).
pub fn enter(route: &Bytes, mut msg: Msg) -> Msg {
    msg.insert(0, route.clone());
    msg
}

/// Where a reply read from this replica's workers goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTo {
    /// To a client of this replica (no routing frame first).
    Local,
    /// To the entry replica the routing frame names, the frame stripped.
    Entry(MemberTag),
}

pub fn reply_to(msg: &Msg) -> ReplyTo {
    match msg.first().and_then(|f| entry_of(f)) {
        Some(tag) => ReplyTo::Entry(tag),
        None => ReplyTo::Local,
    }
}

/// What became of a batch of replies read from this replica's workers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// For this replica's own clients, in order.
    pub local: Vec<Msg>,
    /// Frames of the replies queued to entry replicas, as read (their routing frames included).
    pub relayed_frames: u64,
    /// Frames of the replies whose entry replica is gone (no link to it): dropped.
    pub unroutable_frames: u64,
}

/// The reply pump's half (the pump reading the DEALER): sends replies for other replicas'
/// clients back over the links, and yields the replies other replicas sent for this replica's
/// clients.
pub struct ReplySide {
    members: Arc<Members>,
    version: u64,
    cache: Vec<Member>,
    rx: mpsc::Receiver<Arrival>,
    staged: Vec<Vec<LinkOut>>,
}

impl ReplySide {
    pub(super) fn new(members: Arc<Members>, rx: mpsc::Receiver<Arrival>) -> Self {
        ReplySide { members, version: u64::MAX, cache: Vec::new(), rx, staged: Vec::new() }
    }

    /// Splits replies read from this replica's workers: the ones whose first frame names an
    /// entry replica go there as `REPLY`, that frame stripped (or are dropped when no link to
    /// it is up); the rest are returned for this replica's clients. A batch without any
    /// routing frame is returned as it is.
    pub fn relay(&mut self, msgs: Vec<Msg>) -> Split {
        if !msgs.iter().any(|m| reply_to(m) != ReplyTo::Local) {
            return Split { local: msgs, ..Split::default() };
        }
        let v = self.members.version();
        if v != self.version {
            self.members.snapshot(&mut self.cache);
            self.version = v;
        }
        self.staged.resize_with(self.cache.len(), Vec::new);
        let mut split = Split::default();
        let mut answered = 0i64;
        for mut m in msgs {
            let ReplyTo::Entry(tag) = reply_to(&m) else {
                split.local.push(m);
                continue;
            };
            answered += 1;
            let i = self.cache.iter().position(|c| c.tag == tag);
            match i.filter(|i| self.cache[*i].out.is_some()) {
                Some(i) => {
                    split.relayed_frames += m.len() as u64;
                    m.remove(0);
                    self.staged[i].push(LinkOut::Reply(m));
                }
                None => {
                    split.unroutable_frames += m.len() as u64;
                    if let Some(i) = i {
                        self.cache[i].counters.dropped_link_down.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut relayed = 0u64;
        for (i, batch) in self.staged.iter_mut().enumerate() {
            if let (false, Some(q)) = (batch.is_empty(), &self.cache[i].out) {
                let n = batch.len() as u64;
                relayed += n;
                MemberCounters::add(&self.cache[i].counters.relayed_out, n);
                members::send(q, std::mem::take(batch));
            }
        }
        self.members.counters.relayed_out.fetch_add(relayed, Ordering::Relaxed);
        self.members.unanswered.fetch_sub(answered, Ordering::AcqRel);
        split
    }

    /// Replies other replicas sent for this replica's clients.
    pub async fn recv(&mut self) -> Option<Vec<Msg>> {
        self.rx.recv().await.map(|a| a.msgs.into_msgs())
    }

    pub fn try_recv(&mut self) -> Option<Vec<Msg>> {
        self.rx.try_recv().ok().map(|a| a.msgs.into_msgs())
    }

    /// Replies queued to other replicas and not yet written.
    pub fn backlog(&self) -> usize {
        self.members.backlog()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::frame::member_tag;
    use crate::federation::members::LinkQueue;
    use std::sync::atomic::AtomicUsize;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// The whole trip of a REQ client's request through a REP worker on another replica:
    /// the worker sees one frame more, and the reply comes back as the entry replica's ROUTER
    /// expects it, the client's routing id first.
    #[test]
    fn a_request_through_another_replicas_worker_comes_back_with_the_clients_envelope() {
        let a = member_tag("a");
        let from_client: Msg = vec![b(b"\0\0\0\0\x07"), b(b""), b(b"question")];
        let at_worker = enter(&route_frame(a), from_client.clone());
        assert_eq!(at_worker.len(), from_client.len() + 1);
        assert_eq!(entry_of(&at_worker[0]), Some(a));
        // A REP worker echoes the envelope (everything up to the empty delimiter).
        let mut reply = at_worker[..3].to_vec();
        reply.push(b(b"answer"));
        assert_eq!(reply_to(&reply), ReplyTo::Entry(a));
        reply.remove(0);
        assert_eq!(reply, [b(b"\0\0\0\0\x07"), b(b""), b(b"answer")]);
        assert_eq!(reply_to(&reply), ReplyTo::Local, "at the entry replica: a local reply");
    }

    #[test]
    fn no_client_routing_id_reads_as_a_routing_frame() {
        for id in [
            &b"\0\0\0\0\x01"[..],
            b"worker-1",
            b"\0\xfe",
            b"\0\xfe123456789",
            b"",
            b"\x01\xfe12345678",
        ] {
            assert_eq!(entry_of(id), None, "{id:?}");
        }
        assert_eq!(entry_of(&route_frame(7)), Some(7));
        assert_eq!(route_frame(7).len(), ROUTE_LEN);
        assert_eq!(
            reply_to(&Vec::new()),
            ReplyTo::Local,
            "an empty message is the outlet's to refuse"
        );
    }

    #[test]
    fn replies_go_to_their_entry_replica_stripped_or_are_dropped_when_it_is_gone() {
        let members = Arc::new(Members::new("b", "ROUTER/DEALER"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let q = Arc::new(LinkQueue { tx, queued: AtomicUsize::new(0) });
        let (a, c) = (member_tag("a"), member_tag("c"));
        members.outbound_up(a, "a", q).expect("registered");
        members.inbound_up(c, "c");
        let (_arrivals_tx, arrivals) = mpsc::channel(1);
        let mut side = ReplySide::new(members.clone(), arrivals);
        let local: Msg = vec![b(b"\0\0\0\0\x01"), b(b"mine")];
        let untouched = side.relay(vec![local.clone()]);
        assert_eq!(untouched, Split { local: vec![local.clone()], ..Split::default() });
        let for_a = vec![route_frame(a), b(b"\0\0\0\0\x02"), b(b"r")];
        let for_c = vec![route_frame(c), b(b"\0\0\0\0\x03"), b(b"r")];
        let for_nobody = vec![route_frame(member_tag("gone")), b(b"x")];
        let split = side.relay(vec![for_a, local.clone(), for_c, for_nobody]);
        assert_eq!(split.local, [local]);
        assert_eq!((split.relayed_frames, split.unroutable_frames), (3, 5));
        let sent = rx.try_recv().expect("one batch to a");
        assert!(matches!(&sent[..], [LinkOut::Reply(m)] if m[0] == b(b"\0\0\0\0\x02")));
        let counts = members.member_counts();
        let of = |id: &str| counts.iter().find(|(i, _)| &**i == id).map(|(_, c)| *c);
        assert_eq!(of("a").map(|c| c.relayed_out), Some(1));
        assert_eq!(of("c").map(|c| c.dropped_link_down), Some(1), "c's outbound link is down");
    }
}
