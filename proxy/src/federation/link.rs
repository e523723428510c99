//! The link connections. Each replica dials every other one and accepts every other one's
//! dial, so a link is two TCP connections, each carrying messages one way: from the replica
//! that dialed to the one that accepted. Both speak ZMTP 3 as PAIR sockets (NULL, or CURVE with
//! the federation's keypair), then a HELLO each way naming the replica; after that the dialer
//! writes and the acceptor reads. One direction per connection means no tie-break between two
//! replicas dialing each other at once. Both ends PING each other (`beat.rs`), so a silent
//! replica's connections are closed within a bound, and dialed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::frame::{self, Kind, LinkMessage, MemberTag};
use super::members::{self, LinkOut, LinkQueue, MemberCounters, Members, Refused};
use super::route::LinkId;
use super::{Arrival, UpEvent, batch, beat, discover, drain, request};
use crate::engine::curve::{self, Mechanism, Sealer};
use crate::engine::heartbeat::Liveness;
use crate::engine::net;
use crate::engine::tunables::{
    FEDERATION_RECONNECT_MAX, FEDERATION_RECONNECT_MIN, HANDSHAKE_TIMEOUT, READ_CHUNK_BYTES,
    WRITE_BATCH_BYTES,
};
use crate::policy::sockets::{Batch, Lifecycle, Msg, tune};
use crate::wire::zmtp::{Decoder, HANDSHAKE_MAX_BYTES, Item, WireError};
use zmq_proxy_api::options::SocketOptions;
use zmq_proxy_api::socket::SocketType;

/// The link's largest message: what a publication may be, as the sockets' default allows.
fn max_bytes() -> usize {
    SocketOptions::default().max_message_bytes()
}

/// What a link's read buffer grows by: several reads' worth and a whole batch.
const LINK_READ_BYTES: usize = 4 * READ_CHUNK_BYTES;

/// The link's largest body frame: a batch of messages each within [`max_bytes`].
fn max_batch_bytes() -> usize {
    let d = SocketOptions::default();
    batch::max_body(d.max_message_bytes(), d.max_message_frames())
}

/// What the link tasks hand to the pumps.
#[derive(Clone)]
pub struct Sinks {
    pub members: Arc<Members>,
    /// Publications or tasks, with the replica they entered at.
    pub publications: mpsc::Sender<Arrival>,
    pub events: mpsc::Sender<UpEvent>,
    /// Replies for this replica's clients (ROUTER/DEALER).
    pub replies: mpsc::Sender<Arrival>,
}

async fn raised(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A connection after its ZMTP handshake and the HELLO exchange.
struct Linked {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    dec: Decoder,
    sealer: Option<Sealer>,
    peer: MemberTag,
    peer_id: String,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("expected HELLO first")]
    NoHello,
    #[error("HELLO's origin does not match its id")]
    HelloOrigin,
    #[error("replica {id} runs {theirs}, this one {ours}")]
    Pattern { id: String, theirs: String, ours: &'static str },
    #[error("the link closed")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Curve(#[from] curve::CurveError),
}

/// Handshake, then HELLO: the dialer sends first, the acceptor answers.
async fn link_up(
    stream: TcpStream,
    mech: &Mechanism,
    members: &Members,
    dialer: bool,
) -> Result<Linked, LinkError> {
    tune(&stream, &SocketOptions::default());
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let run = async {
        let done =
            curve::handshake(mech, &mut rd, &mut wr, SocketType::Pair, &mut buf, max_bytes())
                .await?;
        let (mut sealer, opener) = match done.session {
            Some(s) => (Some(s.sealer), Some(s.opener)),
            None => (None, None),
        };
        // HELLO is a few bytes: a dialer that is not a replica gets no more than a handshake's
        // allowance of memory before it is refused or times out.
        let mut dec = Decoder::new(HANDSHAKE_MAX_BYTES);
        if let Some(o) = opener {
            dec.set_opener(Box::new(o));
        }
        let hello = frame::header(Kind::Hello, members.own);
        let mut out = BytesMut::new();
        let body = [
            Bytes::from(members.own_id.to_string()),
            Bytes::from_static(members.pattern.as_bytes()),
        ];
        frame::encode(&hello, &body, &mut out, sealer.as_mut())?;
        if dialer {
            wr.write_all(&out).await.map_err(WireError::Io)?;
        }
        let (peer, peer_id, pattern) = loop {
            match dec.decode(&mut buf)? {
                Some(Item::Message(m)) => match frame::parse(m)? {
                    LinkMessage::Hello { origin, id, pattern } => {
                        if frame::member_tag(&id) != origin {
                            return Err(LinkError::HelloOrigin);
                        }
                        break (origin, id, pattern);
                    }
                    _ => return Err(LinkError::NoHello),
                },
                Some(Item::Command(_)) => continue,
                None => {}
            }
            if rd.read_buf(&mut buf).await.map_err(WireError::Io)? == 0 {
                return Err(LinkError::Closed);
            }
        };
        // The acceptor answers even a replica it refuses, so both sides log why.
        if !dialer {
            wr.write_all(&out).await.map_err(WireError::Io)?;
        }
        if pattern != members.pattern {
            let ours = members.pattern;
            return Err(LinkError::Pattern { id: peer_id, theirs: pattern, ours });
        }
        dec.set_max(max_batch_bytes());
        Ok::<_, LinkError>((dec, sealer, peer, peer_id))
    };
    let (dec, sealer, peer, peer_id) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await.map_err(|_| LinkError::Timeout)??;
    Ok(Linked { rd, wr, buf, dec, sealer, peer, peer_id })
}

/// Accepts the other replicas' dials.
pub async fn accept_loop(
    listener: TcpListener,
    mech: Mechanism,
    sinks: Sinks,
    mut life: Lifecycle,
) {
    loop {
        tokio::select! {
            _ = raised(&mut life.stop) => break,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let (mech, sinks, life) = (mech.clone(), sinks.clone(), life.clone());
                    tokio::spawn(async move {
                        match link_up(stream, &mech, &sinks.members, false).await {
                            Ok(l) => inbound(l, sinks, life).await,
                            Err(e) => tracing::info!(peer = %addr, error = %e, "federation link refused"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "federation accept failed");
                    tokio::select! {
                        _ = raised(&mut life.stop) => break,
                        _ = tokio::time::sleep(FEDERATION_RECONNECT_MIN) => {}
                    }
                }
            }
        }
    }
}

/// The read side of an inbound connection, and what its messages are handed over with.
struct Inbound {
    rd: OwnedReadHalf,
    buf: BytesMut,
    dec: Decoder,
    peer: MemberTag,
    peer_id: String,
    link: LinkId,
    counters: Arc<MemberCounters>,
    /// The routing frame a request from this replica gets (ROUTER/DEALER).
    route: Bytes,
    /// PONGs for the command writer.
    commands: mpsc::UnboundedSender<Bytes>,
}

impl Inbound {
    /// Whom what it read comes from, for [`hand_over`] (the decoder stays behind: not `Sync`).
    fn whose(&self) -> (MemberTag, LinkId, &MemberCounters) {
        (self.peer, self.link, &self.counters)
    }
}

/// Reads one inbound connection: publications to the down pump, subscriptions to the member
/// table and the up pump. Ends at the stop signal (what was read is handed over first), or when
/// the other replica goes silent past the heartbeat bound.
async fn inbound(l: Linked, sinks: Sinks, mut life: Lifecycle) {
    let members = &sinks.members;
    if l.peer == members.own {
        tracing::debug!("federation: a dial from this replica to itself; closing it");
        return;
    }
    let link = members.next_link();
    members.inbound_up(l.peer, &l.peer_id);
    members.counters.connections.fetch_add(1, Ordering::AcqRel);
    tracing::info!(member = %l.peer_id, link, "federation link in up");
    let Linked { rd, wr, buf, dec, sealer, peer, peer_id } = l;
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    let counters = members.counters_of(peer, &peer_id);
    let route = request::route_frame(peer);
    let live = Liveness::default();
    let pings = commands.clone();
    let mut r = Inbound { rd, buf, dec, peer, peer_id, link, counters, route, commands };
    let mut end = drain::Awaited::new(members);
    let why = tokio::select! {
        why = read_links(&mut r, &live, &sinks, &mut life, &mut end) => why,
        why = write_commands(wr, sealer, &mut command_rx) => why,
        () = beat::keep(&live, |p| {
            let _ = pings.send(p);
        }) => SILENT,
    };
    end.settle(members);
    if why == SILENT {
        silent(members, &r.counters);
    }
    members.counters.connections.fetch_sub(1, Ordering::AcqRel);
    members.inbound_down(r.peer, link);
    let _ = sinks.events.send(UpEvent::LinkGone(link)).await;
    tracing::info!(member = %r.peer_id, link, reason = why, "federation link in down");
}

/// Writes the commands (PING, PONG) of an inbound connection, the only bytes it carries back.
async fn write_commands(
    mut wr: OwnedWriteHalf,
    mut sealer: Option<Sealer>,
    rx: &mut mpsc::UnboundedReceiver<Bytes>,
) -> &'static str {
    let mut out = BytesMut::new();
    while let Some(body) = rx.recv().await {
        out.clear();
        if beat::encode(&body, &mut out, sealer.as_mut()).is_err() {
            return "sealing failed";
        }
        if wr.write_all(&out).await.is_err() {
            return "write failed";
        }
    }
    "stopped"
}

async fn read_links(
    l: &mut Inbound,
    live: &Liveness,
    sinks: &Sinks,
    life: &mut Lifecycle,
    end: &mut drain::Awaited,
) -> &'static str {
    let members = &sinks.members;
    let link = l.link;
    loop {
        let mut batch = Batch::default();
        let mut replies: Vec<Msg> = Vec::new();
        loop {
            let frames = match l.dec.decode(&mut l.buf) {
                Ok(Some(Item::Message(m))) => m,
                Ok(Some(item)) => {
                    if let Some(pong) = beat::answer(&item) {
                        let _ = l.commands.send(pong);
                    }
                    continue;
                }
                Ok(None) => break,
                Err(_) => return protocol_error(members),
            };
            match frame::parse(frames) {
                // The one-hop rule, checked: whatever crosses this link entered at its sender.
                Ok(LinkMessage::Publish { origin, msgs }) if origin == l.peer => {
                    batch.extend(Batch::Msgs(msgs))
                }
                Ok(LinkMessage::Task { origin, msgs }) if origin == l.peer => batch.extend(msgs),
                // A request for this replica's workers gets the routing frame naming its entry
                // replica, which the reply carries back.
                Ok(LinkMessage::Request { origin, msgs }) if origin == l.peer => batch.extend(
                    Batch::Msgs(msgs.into_iter().map(|m| request::enter(&l.route, m)).collect()),
                ),
                Ok(LinkMessage::Reply { origin, msgs }) if origin == l.peer => replies.extend(msgs),
                Ok(LinkMessage::Credit { origin, room, taken, workers }) if origin == l.peer => {
                    members.credit(origin, room, taken, workers);
                }
                Ok(LinkMessage::State { origin, paused }) if origin == l.peer => {
                    tracing::info!(member = %l.peer_id, paused, "federation: steered by a replica");
                    members.state_from(paused);
                }
                Ok(LinkMessage::Leaving { origin }) if origin == l.peer => {
                    tracing::info!(member = %l.peer_id, "federation: replica leaving; no more tasks for it");
                    members.leaving(origin);
                }
                Ok(LinkMessage::End { origin }) if origin == l.peer => {
                    // Its tasks are all read; its credit still counts for this replica's own.
                    let b = std::mem::take(&mut batch);
                    if !b.is_empty() && !hand_over(sinks, &sinks.publications, l.whose(), b).await {
                        return "stopped";
                    }
                    end.settle(members);
                }
                Ok(LinkMessage::Subscription { origin, subscribe, topic }) if origin == l.peer => {
                    // Publications read before the subscription go first, as they were sent.
                    let b = std::mem::take(&mut batch);
                    if !b.is_empty() && !hand_over(sinks, &sinks.publications, l.whose(), b).await {
                        return "stopped";
                    }
                    members.announced(l.peer, link, subscribe, &topic);
                    let ev = UpEvent::Subscription { link, subscribe, topic };
                    if sinks.events.send(ev).await.is_err() {
                        return "stopped";
                    }
                }
                _ => return protocol_error(members),
            }
        }
        if !batch.is_empty() && !hand_over(sinks, &sinks.publications, l.whose(), batch).await {
            return "stopped";
        }
        if !replies.is_empty()
            && !hand_over(sinks, &sinks.replies, l.whose(), Batch::Msgs(replies)).await
        {
            return "stopped";
        }
        // Batches are long frames whose messages are sliced out of this buffer: a reserve
        // while they are held copies the unread tail, so it is made rarely and large, with
        // room for a whole batch.
        if l.buf.capacity() - l.buf.len() < READ_CHUNK_BYTES / 4 {
            l.buf.reserve(LINK_READ_BYTES);
        }
        live.waiting();
        tokio::select! {
            biased;
            _ = raised(&mut life.stop), if !drain::reads_to_end(members) => return "stopping",
            _ = raised(&mut life.kill) => return "killed",
            r = l.rd.read_buf(&mut l.buf) => match r {
                Ok(0) | Err(_) => return "closed",
                Ok(_) => live.arrived(),
            },
        }
    }
}

fn protocol_error(members: &Members) -> &'static str {
    members.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
    "protocol error"
}

/// Hands what a link read to a pump (the one reading this link's kind); counted by `counters`.
async fn hand_over(
    sinks: &Sinks,
    to: &mpsc::Sender<Arrival>,
    (from, link, counters): (MemberTag, LinkId, &MemberCounters),
    msgs: Batch,
) -> bool {
    sinks.members.counters.relayed_in.fetch_add(msgs.len() as u64, Ordering::Relaxed);
    MemberCounters::add(&counters.relayed_in, msgs.len() as u64);
    to.send(Arrival { from, link, msgs }).await.is_ok()
}

/// Why a connection whose other end went silent past the heartbeat bound was closed.
const SILENT: &str = "heartbeat timeout";

/// Counts a connection closed by its heartbeat.
fn silent(members: &Members, counters: &MemberCounters) {
    members.counters.heartbeat_timeouts.fetch_add(1, Ordering::Relaxed);
    counters.heartbeat_timeouts.fetch_add(1, Ordering::Relaxed);
}

/// Dials one other replica's federation endpoint and keeps its outbound connection up,
/// reconnecting with a doubling delay; stops dialing an address that leads back here, or, for
/// an address found by DNS, once `retire` says the name no longer holds it.
pub async fn dial_loop(
    host: String,
    port: u16,
    mech: Mechanism,
    sinks: Sinks,
    mut life: Lifecycle,
    mut retire: Option<watch::Receiver<bool>>,
) {
    let mut delay = FEDERATION_RECONNECT_MIN;
    loop {
        let attempt = tokio::select! {
            _ = raised(&mut life.stop) => return,
            _ = discover::dropped(&mut retire) => return,
            r = net::connect(&host, port) => r,
        };
        let served = match attempt {
            Ok(stream) => match link_up(stream, &mech, &sinks.members, true).await {
                Ok(l) => match outbound(l, &sinks, &mut life).await {
                    Err(Refused::Itself) => {
                        tracing::info!(%host, port, "federation peer is this replica; not dialing it");
                        return;
                    }
                    Err(Refused::Duplicate) => false,
                    Ok(()) => true,
                },
                Err(e) => {
                    tracing::info!(%host, port, error = %e, "federation link out failed");
                    false
                }
            },
            Err(e) => {
                tracing::debug!(%host, port, error = %e, "federation dial failed");
                false
            }
        };
        delay = if served {
            FEDERATION_RECONNECT_MIN
        } else {
            (delay * 2).min(FEDERATION_RECONNECT_MAX)
        };
        tokio::select! {
            _ = raised(&mut life.stop) => return,
            _ = discover::dropped(&mut retire) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Serves one outbound connection: registers its queue, has the up pump replay this replica's
/// subscriptions into it, and writes it until the connection or the proxy ends.
async fn outbound(l: Linked, sinks: &Sinks, life: &mut Lifecycle) -> Result<(), Refused> {
    let members = &sinks.members;
    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(LinkQueue { tx, queued: AtomicUsize::new(0) });
    members.outbound_up(l.peer, &l.peer_id, queue.clone())?;
    members.counters.connections.fetch_add(1, Ordering::AcqRel);
    tracing::info!(member = %l.peer_id, "federation link out up");
    if members.paused() {
        members::send(&queue, vec![LinkOut::State(true)]);
    }
    let _ = sinks.events.send(UpEvent::OutboundUp(l.peer)).await;
    let Linked { mut rd, wr, mut buf, mut dec, sealer, peer, peer_id } = l;
    let counters = members.counters_of(peer, &peer_id);
    let live = Liveness::default();
    let header = |k| frame::header(k, members.own);
    let headers = Headers {
        subscribe: header(Kind::Subscribe),
        cancel: header(Kind::Cancel),
        publish: header(Kind::Publish),
        task: header(Kind::Task),
        credit: header(Kind::Credit),
        state: header(Kind::State),
        request: header(Kind::Request),
        reply: header(Kind::Reply),
        leaving: header(Kind::Leaving),
        end: header(Kind::End),
    };
    let mut rx = rx;
    let why = {
        let write = write_loop(wr, sealer, &mut rx, &queue, headers, life.kill.clone());
        tokio::pin!(write);
        // The acceptor sends only heartbeats after HELLO: its PINGs are answered, and reading
        // notices its close and its silence.
        let read = async {
            loop {
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(item)) => {
                            if let Some(pong) = beat::answer(&item) {
                                members::send(&queue, vec![LinkOut::Command(pong)]);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return protocol_error(members),
                    }
                }
                buf.reserve(READ_CHUNK_BYTES / 16);
                live.waiting();
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return "closed",
                    Ok(_) => live.arrived(),
                }
            }
        };
        let pings = |p| members::send(&queue, vec![LinkOut::Command(p)]);
        tokio::select! {
            w = &mut write => w,
            r = read => r,
            () = beat::keep(&live, pings) => SILENT,
        }
    };
    if why == SILENT {
        silent(members, &counters);
    }
    members.outbound_down(peer, &queue);
    members.counters.connections.fetch_sub(1, Ordering::AcqRel);
    rx.close();
    let mut lost = 0u64;
    while let Ok(batch) = rx.try_recv() {
        lost += batch.iter().map(LinkOut::messages).sum::<usize>() as u64;
    }
    members.counters.dropped_link_down.fetch_add(lost, Ordering::Relaxed);
    MemberCounters::add(&counters.dropped_link_down, lost);
    tracing::info!(member = %peer_id, reason = why, lost, "federation link out down");
    Ok(())
}

struct Headers {
    subscribe: Bytes,
    cancel: Bytes,
    publish: Bytes,
    task: Bytes,
    credit: Bytes,
    state: Bytes,
    request: Bytes,
    reply: Bytes,
    leaving: Bytes,
    end: Bytes,
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut sealer: Option<Sealer>,
    rx: &mut mpsc::UnboundedReceiver<Vec<LinkOut>>,
    queue: &LinkQueue,
    h: Headers,
    mut kill: watch::Receiver<bool>,
) -> &'static str {
    let mut out = BytesMut::new();
    let mut batches = batch::Writer::default();
    loop {
        let first = tokio::select! {
            biased;
            b = rx.recv() => match b {
                Some(b) => b,
                None => return "stopped",
            },
            _ = raised(&mut kill) => return "killed",
        };
        let mut n = 0usize;
        let mut encode =
            |items: Vec<LinkOut>, out: &mut BytesMut| -> Result<(), batch::EncodeError> {
                for o in items {
                    n += o.queued();
                    let s = sealer.as_mut();
                    // Peers' messages join the open batch of their kind; anything else closes it
                    // first, so the receiver reads everything in the order it was queued.
                    match &o {
                        LinkOut::Tasks(ms) => {
                            batches.push_run(&h.task, ms, out, s)?;
                            continue;
                        }
                        LinkOut::Requests(ms) => {
                            batches.push_run(&h.request, ms, out, s)?;
                            continue;
                        }
                        LinkOut::Publish(m) => {
                            batches.push(&h.publish, m, out, s)?;
                            continue;
                        }
                        LinkOut::Reply(m) => {
                            batches.push(&h.reply, m, out, s)?;
                            continue;
                        }
                        _ => {}
                    }
                    batches.close(out, s)?;
                    let s = sealer.as_mut();
                    match o {
                        LinkOut::Subscription(sub, t) => {
                            let hd = if sub { &h.subscribe } else { &h.cancel };
                            frame::encode(hd, std::slice::from_ref(&t), out, s)?
                        }
                        LinkOut::Command(body) => beat::encode(&body, out, s)?,
                        LinkOut::State(paused) => {
                            let body = [Bytes::from_static(if paused { &[1] } else { &[0] })];
                            frame::encode(&h.state, &body, out, s)?
                        }
                        LinkOut::Leaving => frame::encode(&h.leaving, &[], out, s)?,
                        LinkOut::End => frame::encode(&h.end, &[], out, s)?,
                        LinkOut::Credit(room, taken, workers) => {
                            let body = [frame::credit_body(room, taken, workers)];
                            frame::encode(&h.credit, &body, out, s)?
                        }
                        LinkOut::Publish(_)
                        | LinkOut::Tasks(_)
                        | LinkOut::Requests(_)
                        | LinkOut::Reply(_) => {}
                    }
                }
                Ok(())
            };
        let mut sealed = encode(first, &mut out);
        while sealed.is_ok() && out.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(b) => sealed = encode(b, &mut out),
                Err(_) => break,
            }
        }
        if sealed.is_ok() {
            sealed = batches.close(&mut out, sealer.as_mut());
        }
        if sealed.is_err() {
            return "encoding failed";
        }
        let r = tokio::select! {
            r = wr.write_all(&out) => r,
            _ = raised(&mut kill) => return "killed",
        };
        queue.queued.fetch_sub(n, Ordering::AcqRel);
        if r.is_err() {
            return "write failed";
        }
        if out.capacity() > 4 * WRITE_BATCH_BYTES {
            out = BytesMut::new();
        } else {
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sinks(id: &str) -> (Sinks, mpsc::Receiver<Arrival>) {
        let (publications, arrivals) = mpsc::channel(8);
        let (events, _) = mpsc::channel(8);
        let (replies, _) = mpsc::channel(8);
        let members = Arc::new(Members::new(id, "PULL/PUSH"));
        (Sinks { members, publications, events, replies }, arrivals)
    }

    /// A well-formed batch is handed over as its messages; a batch whose lengths do not match
    /// its bytes closes the link, and the receiver counts a protocol error.
    #[tokio::test]
    async fn a_malformed_batch_closes_the_link_and_counts_a_protocol_error() {
        let (a, mut arrivals) = sinks("a");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, stop) = watch::channel(false);
        let (_kill, kill) = watch::channel(false);
        let life = Lifecycle { stop, kill };
        tokio::spawn(accept_loop(listener, Mechanism::Null, a.clone(), life));

        let (b, _) = sinks("b");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut l = link_up(stream, &Mechanism::Null, &b.members, true).await.expect("linked");
        let task = frame::header(Kind::Task, b.members.own);
        let mut out = BytesMut::new();
        let mut w = batch::Writer::default();
        let sent = vec![vec![Bytes::from_static(b"t1")], vec![Bytes::from_static(b"t2")]];
        for m in &sent {
            w.push(&task, m, &mut out, None).expect("encoding");
        }
        w.close(&mut out, None).expect("closing");
        l.wr.write_all(&out).await.expect("write");
        let got = tokio::time::timeout(Duration::from_secs(5), arrivals.recv()).await;
        assert_eq!(got.expect("in time").expect("an arrival").msgs.into_msgs(), sent);
        assert_eq!(a.members.counters.protocol_errors.load(Ordering::Relaxed), 0);

        // One message whose only frame claims 5 bytes and carries 4.
        out.clear();
        let bad = Bytes::from_static(b"\0\0\0\x01\0\0\0\x01\0\0\0\x05junk");
        frame::encode(&task, &[bad], &mut out, None).expect("encoding");
        l.wr.write_all(&out).await.expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match l.rd.read_buf(&mut l.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the receiver closes the link");
        assert_eq!(a.members.counters.protocol_errors.load(Ordering::Relaxed), 1);
    }
}
