//! The proxy's sockets: binding, connecting, one task per connection, and the send policy of
//! each socket type. This module owns every per-peer decision a proxy has to make:
//!
//! - every connection is read continuously, so a peer that closes (even a PULL worker the
//!   proxy only writes to) is noticed at once, and garbage or a stalled handshake only ever
//!   costs that one connection;
//! - every peer has its own bounded queue (the high-water mark): ROUTER replies and PUB/XPUB
//!   publications to a full peer are dropped and counted, PUSH/DEALER round-robin skips full
//!   peers and waits only when no peer can take the message (or none is connected yet);
//! - messages still queued to a PUSH/DEALER peer whose connection died are handed back and
//!   re-sent to the remaining peers instead of being lost;
//! - XPUB/PUB keep each subscriber's own topics, and XPUB tells the pump which subscriber sent
//!   each subscribe/unsubscribe and when a subscriber left (see `subscriptions.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::{
    ACCEPT_ERROR_BACKOFF, HANDSHAKE_TIMEOUT, INBOUND_QUEUE_BATCHES, MAX_MESSAGE_BYTES,
    READ_CHUNK_BYTES, RECONNECT_INTERVAL, SocketConfig, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL,
    TCP_KEEPALIVE_RETRIES, WRITE_BATCH_BYTES,
};
use crate::counters::{Counters, DropReason};
use crate::socket::SocketType;
use crate::subscriptions::PeerId;
use crate::zmtp::{self, Item, WireError};

/// One message: its frames, in order.
pub type Msg = Vec<Bytes>;

/// What a socket's connections hand to the pump that reads the socket, in arrival order.
#[derive(Debug)]
pub enum Inbound {
    /// Messages decoded from one read of one connection.
    Batch(Vec<Msg>),
    /// A subscriber's subscribe (`true`) or unsubscribe (XPUB only).
    Subscription { peer: PeerId, subscribe: bool, topic: Bytes },
    /// A subscriber disconnected (XPUB only); its topics are released.
    PeerLeft(PeerId),
}

/// Total frames of a message (the unit of libzmq's message counters) and payload bytes.
pub fn size_of(msg: &Msg) -> (u64, u64) {
    (msg.len() as u64, msg.iter().map(|f| f.len() as u64).sum())
}

/// A message queued to one peer. Fan-out shares one allocation between subscribers.
pub enum Out {
    Owned(Msg),
    Shared(Arc<Msg>),
    /// An encoded ZMTP command (PONG); not a message.
    Command(Bytes),
}

impl Out {
    fn frames(&self) -> &[Bytes] {
        match self {
            Out::Owned(m) => m,
            Out::Shared(m) => m,
            Out::Command(_) => &[],
        }
    }

    fn payload_len(&self) -> usize {
        self.frames().iter().map(Bytes::len).sum()
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            Out::Command(c) => out.extend_from_slice(c),
            m => zmtp::encode_message(m.frames(), out),
        }
    }

    fn into_msg(self) -> Option<Msg> {
        match self {
            Out::Owned(m) => Some(m),
            Out::Shared(m) => Some(Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone())),
            Out::Command(_) => None,
        }
    }
}

/// One peer's outgoing queue: batches of messages, bounded in messages by the socket's
/// high-water mark (checked by the sender, released by the writer once written).
struct PeerQueue {
    tx: mpsc::UnboundedSender<Vec<Out>>,
    queued: AtomicUsize,
}

impl PeerQueue {
    fn room(&self, hwm: usize) -> usize {
        hwm.saturating_sub(self.queued.load(Ordering::Acquire))
    }
}

#[derive(Clone)]
struct PeerEntry {
    id: PeerId,
    routing_id: Bytes,
    queue: Arc<PeerQueue>,
    /// The subscriber's own topics (PUB/XPUB), replaced whole on change so senders read a
    /// snapshot without locking per message.
    topics: Arc<Vec<Bytes>>,
}

#[derive(Default)]
struct Registry {
    peers: Vec<PeerEntry>,
    routing_ids: HashSet<Bytes>,
    /// XSUB/SUB: the subscriptions every upstream peer must have, replayed to new peers.
    upstream: HashSet<Bytes>,
}

struct Shared {
    kind: SocketType,
    /// The capture socket: its losses are capture drops, never proxy traffic.
    capture: bool,
    /// Whether the pump reads this socket (false for capture and send-only types).
    delivers: bool,
    hwm: usize,
    counters: Arc<Counters>,
    registry: Mutex<Registry>,
    version: AtomicU64,
    /// Peer joined or left, a queue made room, or orphans arrived.
    changed: Notify,
    /// Orphans arrived (wakes an idle pump so they are re-sent without new input).
    orphaned: Notify,
    orphans: Mutex<VecDeque<Msg>>,
    has_orphans: AtomicBool,
    /// Frames accepted into peer queues and not yet written to the kernel.
    pending_out: AtomicI64,
    /// Payload bytes of those frames: a drain that times out takes them back out of "sent".
    pending_out_bytes: AtomicI64,
    /// Connection writers still running; a timed-out drain counts the backlog only once every
    /// writer has settled what it wrote, or a message could be both delivered and undelivered.
    live_writers: AtomicUsize,
    writers_gone: Notify,
    next_peer: AtomicU64,
    next_routing: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// What log lines call this socket: its type, or "capture" (which may share a type with
    /// the frontend or backend).
    fn label(&self) -> &'static str {
        if self.capture { "capture" } else { self.kind.as_str() }
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn register(
        &self,
        info: &zmtp::PeerInfo,
    ) -> Option<(PeerEntry, mpsc::UnboundedReceiver<Vec<Out>>)> {
        let mut reg = lock(&self.registry);
        let routing_id = if self.kind == SocketType::Router {
            if info.identity.is_empty() {
                // libzmq's generated routing id: a zero byte and a 32-bit counter.
                let n = self.next_routing.fetch_add(1, Ordering::Relaxed);
                let mut id = vec![0u8];
                id.extend_from_slice(&n.to_be_bytes());
                Bytes::from(id)
            } else if reg.routing_ids.contains(&info.identity) {
                return None;
            } else {
                info.identity.clone()
            }
        } else {
            Bytes::new()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(PeerQueue { tx, queued: AtomicUsize::new(0) });
        // A publisher that connects later gets every current subscription first. This is
        // done under the registry lock, so no subscription change can slip in between.
        let replay: Vec<Out> =
            reg.upstream.iter().map(|t| Out::Owned(zmtp::subscription_message(true, t))).collect();
        if !replay.is_empty() {
            // The receiver is alive (it was created just above).
            let _ = self.enqueue(&queue, replay, 1);
        }
        let entry = PeerEntry {
            id: self.next_peer.fetch_add(1, Ordering::Relaxed),
            routing_id: routing_id.clone(),
            queue,
            topics: Arc::new(Vec::new()),
        };
        reg.peers.push(entry.clone());
        if self.kind == SocketType::Router {
            reg.routing_ids.insert(routing_id);
        }
        drop(reg);
        self.bump();
        Some((entry, rx))
    }

    /// Queues a batch to a peer; `frames_each` is exact for single-frame control messages
    /// and ignored otherwise (frames are counted from the batch). Hands the batch back if
    /// the peer's connection has closed.
    fn enqueue(&self, q: &PeerQueue, batch: Vec<Out>, frames_each: usize) -> Result<(), Vec<Out>> {
        let n = batch.len();
        let frames: usize =
            if frames_each == 1 { n } else { batch.iter().map(|m| m.frames().len()).sum() };
        let bytes: usize = batch.iter().map(Out::payload_len).sum();
        q.queued.fetch_add(n, Ordering::AcqRel);
        self.pending_out.fetch_add(frames as i64, Ordering::AcqRel);
        self.pending_out_bytes.fetch_add(bytes as i64, Ordering::AcqRel);
        match q.tx.send(batch) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(batch)) => {
                q.queued.fetch_sub(n, Ordering::AcqRel);
                self.pending_out.fetch_sub(frames as i64, Ordering::AcqRel);
                self.pending_out_bytes.fetch_sub(bytes as i64, Ordering::AcqRel);
                Err(batch)
            }
        }
    }

    /// Messages that reached a peer's queue after its connection closed: re-routed like the
    /// rest of that peer's queue (PUSH/DEALER) or counted as dropped.
    fn undeliverable(&self, msgs: Vec<Msg>) {
        if msgs.is_empty() {
            return;
        }
        if matches!(self.kind, SocketType::Push | SocketType::Dealer) && !self.capture {
            self.add_orphans(msgs);
        } else {
            let frames: u64 = msgs.iter().map(|m| m.len() as u64).sum();
            self.counters.dropped(self.lost_reason(), frames);
        }
    }

    fn lost_reason(&self) -> DropReason {
        if self.capture { DropReason::Capture } else { DropReason::PeerGone }
    }

    fn deregister(&self, peer: &PeerEntry) {
        let mut reg = lock(&self.registry);
        reg.peers.retain(|p| p.id != peer.id);
        if self.kind == SocketType::Router {
            reg.routing_ids.remove(&peer.routing_id);
        }
        drop(reg);
        self.bump();
    }

    fn update_topics(&self, peer: PeerId, subscribe: bool, topic: &Bytes) {
        let mut reg = lock(&self.registry);
        if let Some(p) = reg.peers.iter_mut().find(|p| p.id == peer) {
            let has = p.topics.contains(topic);
            if subscribe && !has {
                let mut t = (*p.topics).clone();
                t.push(topic.clone());
                p.topics = Arc::new(t);
            } else if !subscribe && has {
                p.topics = Arc::new(p.topics.iter().filter(|t| *t != topic).cloned().collect());
            } else {
                return;
            }
        }
        drop(reg);
        self.bump();
    }

    fn add_orphans(&self, msgs: Vec<Msg>) {
        lock(&self.orphans).extend(msgs);
        self.has_orphans.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.orphaned.notify_one();
    }
}

/// Bind or connect failed at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {endpoint}: {reason}")]
pub struct OpenError {
    pub endpoint: String,
    pub reason: String,
}

/// The proxy's lifecycle signals, shared by every task: `stop` ends reading (drain begins),
/// `kill` ends everything. A dropped sender counts as raised.
#[derive(Clone)]
pub struct Lifecycle {
    pub stop: watch::Receiver<bool>,
    pub kill: watch::Receiver<bool>,
}

async fn raised(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// An open proxy socket: the pump's outlet for sending, and its inbound queue for reading.
pub struct ProxySocket {
    pub outlet: Outlet,
    pub inbound: Option<mpsc::Receiver<Inbound>>,
    /// Where each bind endpoint ended up (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
}

impl ProxySocket {
    /// Binds every bind endpoint (failing on the first that cannot be bound) and starts
    /// connecting every connect endpoint (retried in the background, as zmq_connect does).
    pub async fn open(
        cfg: &SocketConfig,
        is_capture: bool,
        hwm: usize,
        counters: Arc<Counters>,
        life: &Lifecycle,
    ) -> Result<ProxySocket, OpenError> {
        let kind = cfg.socket_type;
        let delivers = !is_capture
            && matches!(
                kind,
                SocketType::Router
                    | SocketType::Dealer
                    | SocketType::Pull
                    | SocketType::Xsub
                    | SocketType::Sub
                    | SocketType::Xpub
            );
        let mut registry = Registry::default();
        if kind == SocketType::Sub {
            // A SUB frontend forwards everything: subscribe to the empty prefix.
            registry.upstream.insert(Bytes::new());
        }
        let shared = Arc::new(Shared {
            kind,
            capture: is_capture,
            delivers,
            hwm,
            counters,
            registry: Mutex::new(registry),
            version: AtomicU64::new(0),
            changed: Notify::new(),
            orphaned: Notify::new(),
            orphans: Mutex::new(VecDeque::new()),
            has_orphans: AtomicBool::new(false),
            pending_out: AtomicI64::new(0),
            pending_out_bytes: AtomicI64::new(0),
            live_writers: AtomicUsize::new(0),
            writers_gone: Notify::new(),
            next_peer: AtomicU64::new(1),
            next_routing: AtomicU32::new(rand_u32()),
        });
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE_BATCHES);
        let mut local_addrs = Vec::new();
        let mut listeners = Vec::new();
        for ep in &cfg.bind {
            let l = TcpListener::bind((ep.socket_host(), ep.port)).await.map_err(|e| {
                OpenError { endpoint: ep.to_string(), reason: describe_bind_error(&e) }
            })?;
            local_addrs.push(
                l.local_addr()
                    .map_err(|e| OpenError { endpoint: ep.to_string(), reason: e.to_string() })?,
            );
            listeners.push(l);
        }
        for l in listeners {
            tokio::spawn(accept_loop(shared.clone(), l, tx.clone(), life.clone()));
        }
        for ep in &cfg.connect {
            let target = (ep.host.clone(), ep.port);
            tokio::spawn(connect_loop(shared.clone(), target, tx.clone(), life.clone()));
        }
        Ok(ProxySocket {
            outlet: Outlet::new(shared),
            inbound: delivers.then_some(rx),
            local_addrs,
        })
    }
}

fn describe_bind_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as u32
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
) {
    loop {
        tokio::select! {
            _ = raised(&mut life.stop) => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let conn = connection(shared.clone(), stream, inbound.clone(), life.clone());
                    tokio::spawn(async move {
                        conn.await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = raised(&mut life.stop) => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

async fn connect_loop(
    shared: Arc<Shared>,
    target: (String, u16),
    mut inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
) {
    loop {
        let attempt = tokio::select! {
            _ = raised(&mut life.stop) => return,
            r = TcpStream::connect((target.0.as_str(), target.1)) => r,
        };
        match attempt {
            // The connection hands the inbound sender back only if the proxy still runs:
            // holding a copy here during a drain would keep the pump from seeing its end.
            Ok(stream) => match connection(shared.clone(), stream, inbound, life.clone()).await {
                Some(tx) => inbound = tx,
                None => return,
            },
            Err(e) => {
                tracing::debug!(host = %target.0, port = target.1, error = %e, "connect failed")
            }
        }
        tokio::select! {
            _ = raised(&mut life.stop) => return,
            _ = tokio::time::sleep(RECONNECT_INTERVAL) => {}
        }
    }
}

enum ReadEnd {
    /// The proxy stopped reading (drain); the connection stays up for writing.
    Stopped,
    /// The peer closed, reset, broke the protocol, or the writer failed.
    Closed,
}

/// Per-connection TCP options: no Nagle delay (ZeroMQ batches itself) and keepalive probes
/// (see [`TCP_KEEPALIVE_IDLE`]). Best effort: a refused option leaves a working connection.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    inbound: mpsc::Sender<Inbound>,
    mut life: Lifecycle,
) -> Option<mpsc::Sender<Inbound>> {
    tune(&stream);
    let peer_addr = stream.peer_addr().ok();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let hs = tokio::select! {
        _ = raised(&mut life.stop) => return None,
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            zmtp::handshake(&mut rd, &mut wr, shared.kind, &mut buf, MAX_MESSAGE_BYTES),
        ) => r.unwrap_or(Err(WireError::Timeout(HANDSHAKE_TIMEOUT))),
    };
    let info = match hs {
        Ok(info) => info,
        Err(e) => {
            shared.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(socket = shared.label(), peer = ?peer_addr, error = %e, "connection refused during handshake");
            return Some(inbound);
        }
    };
    let Some((entry, out_rx)) = shared.register(&info) else {
        shared.counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(socket = shared.label(), peer = ?peer_addr, "duplicate routing id; connection refused");
        return Some(inbound);
    };
    tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "peer connected");
    let dead = Arc::new(watch::channel(false).0);
    shared.live_writers.fetch_add(1, Ordering::AcqRel);
    let writer = tokio::spawn(write_loop(
        shared.clone(),
        entry.queue.clone(),
        wr,
        out_rx,
        dead.clone(),
        life.kill.clone(),
    ));
    let mut inbound = Some(inbound);
    let end = {
        let tx = inbound.as_ref()?;
        tokio::select! {
            end = read_loop(&shared, &entry, &mut rd, &mut buf, tx, &mut life.stop, dead.subscribe()) => Some(end),
            _ = raised(&mut life.kill) => None,
        }
    };
    match end {
        None => {
            dead.send_replace(true);
            return None;
        }
        Some(ReadEnd::Stopped) => {
            // Drain: stop feeding the pump (so it sees the end of input) but keep writing
            // what is queued to this peer until the proxy closes.
            inbound = None;
            let mut done = dead.subscribe();
            tokio::select! {
                _ = raised(&mut life.kill) => {}
                _ = raised(&mut done) => {}
            }
        }
        Some(ReadEnd::Closed) => {}
    }
    dead.send_replace(true);
    shared.deregister(&entry);
    tracing::debug!(socket = shared.label(), peer = ?peer_addr, id = entry.id, "peer disconnected");
    let Ok(mut out_rx) = writer.await else { return None };
    if *life.kill.borrow() {
        return None;
    }
    out_rx.close();
    let mut left: Vec<Msg> = Vec::new();
    while let Ok(batch) = out_rx.try_recv() {
        for m in batch {
            shared.pending_out.fetch_sub(m.frames().len() as i64, Ordering::AcqRel);
            shared.pending_out_bytes.fetch_sub(m.payload_len() as i64, Ordering::AcqRel);
            left.extend(m.into_msg());
        }
    }
    if !left.is_empty() {
        tracing::debug!(count = left.len(), "messages queued to a closed peer");
        shared.undeliverable(left);
        shared.changed.notify_waiters();
    }
    if shared.kind == SocketType::Xpub
        && shared.delivers
        && let Some(tx) = &inbound
    {
        tokio::select! {
            _ = tx.send(Inbound::PeerLeft(entry.id)) => {}
            _ = raised(&mut life.kill) => {}
        }
    }
    inbound
}

async fn read_loop(
    shared: &Shared,
    entry: &PeerEntry,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    inbound: &mpsc::Sender<Inbound>,
    stop: &mut watch::Receiver<bool>,
    mut dead: watch::Receiver<bool>,
) -> ReadEnd {
    use tokio::io::AsyncReadExt;
    let mut dec = zmtp::Decoder::new(MAX_MESSAGE_BYTES);
    let router = shared.kind == SocketType::Router;
    let subscriptions = matches!(shared.kind, SocketType::Xpub | SocketType::Pub);
    loop {
        let mut batch: Vec<Msg> = Vec::new();
        loop {
            if router {
                dec.prefix(&entry.routing_id);
            }
            let change = match dec.decode(buf) {
                Ok(None) => break,
                Ok(Some(Item::Message(m))) => {
                    let sub = if subscriptions { zmtp::subscription_of_message(&m) } else { None };
                    match sub {
                        Some(s) => s,
                        None => {
                            if shared.delivers {
                                batch.push(m);
                            }
                            continue;
                        }
                    }
                }
                Ok(Some(Item::Command(raw))) => {
                    let Ok(cmd) = zmtp::parse_command(raw) else {
                        shared.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        return ReadEnd::Closed;
                    };
                    if &cmd.name[..] == b"ERROR" {
                        return ReadEnd::Closed;
                    }
                    if let Some(pong) = zmtp::pong_for(&cmd) {
                        // Heartbeats (ZMQ_HEARTBEAT_IVL on the peer) are answered whatever
                        // the queue's fill level; a PONG is not a message.
                        let _ = shared.enqueue(&entry.queue, vec![Out::Command(pong)], 0);
                        continue;
                    }
                    match zmtp::subscription_of_command(&cmd) {
                        Some(s) if subscriptions => s,
                        _ => continue,
                    }
                }
                Err(e) => {
                    shared.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(id = entry.id, error = %e, "dropping peer");
                    return ReadEnd::Closed;
                }
            };
            let (subscribe, topic) = change;
            shared.update_topics(entry.id, subscribe, &topic);
            if shared.kind == SocketType::Xpub && shared.delivers {
                if !batch.is_empty() && inbound.send(Inbound::Batch(batch)).await.is_err() {
                    return ReadEnd::Stopped;
                }
                batch = Vec::new();
                let ev = Inbound::Subscription { peer: entry.id, subscribe, topic };
                if inbound.send(ev).await.is_err() {
                    return ReadEnd::Stopped;
                }
            }
        }
        if !batch.is_empty() && inbound.send(Inbound::Batch(batch)).await.is_err() {
            return ReadEnd::Stopped;
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        tokio::select! {
            biased;
            // A socket the pump does not read (PUSH, PUB, capture) keeps reading during a
            // drain: that is how a peer that closed is noticed before more is written to it.
            _ = raised(stop), if shared.delivers => return ReadEnd::Stopped,
            _ = raised(&mut dead) => return ReadEnd::Closed,
            r = rd.read_buf(buf) => match r {
                Ok(0) | Err(_) => return ReadEnd::Closed,
                Ok(_) => {}
            },
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    queue: Arc<PeerQueue>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<Out>>,
    dead: Arc<watch::Sender<bool>>,
    kill: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<Vec<Out>> {
    let _live = LiveWriter(shared.clone());
    let mut dead_rx = dead.subscribe();
    // Grown on demand: reserving a full batch per connection up front cost idle and
    // short-lived peers 256 KiB each and fragmented the heap under connection churn.
    let mut out = BytesMut::new();
    let mut ends: Vec<WrittenUpTo> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = raised(&mut dead_rx) => break,
        };
        // Where each message ends in `out`, so a write cut short by a kill releases exactly the
        // messages the kernel took whole.
        ends.clear();
        let mut encode = |batch: Vec<Out>, out: &mut BytesMut| {
            for m in batch {
                m.encode(out);
                ends.push(WrittenUpTo {
                    end: out.len(),
                    frames: m.frames().len() as i64,
                    bytes: m.payload_len() as i64,
                });
            }
        };
        encode(first, &mut out);
        while out.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(batch) => encode(batch, &mut out),
                Err(_) => break,
            }
        }
        let mut written = 0usize;
        let r = tokio::select! {
            r = write_counting(&mut wr, &out, &mut written) => r,
            _ = raised(&mut dead_rx) => Err(std::io::ErrorKind::ConnectionAborted.into()),
        };
        // Written whole: every message on success; on a kill, those the kernel took whole (the
        // live peer still reads them); when the peer died, none: the batch went down with it.
        let done = match &r {
            Ok(()) => ends.len(),
            Err(_) if *kill.borrow() => ends.partition_point(|e| e.end <= written),
            Err(_) => 0,
        };
        let (msgs, frames, bytes) = ends[..done]
            .iter()
            .fold((0usize, 0i64, 0i64), |(m, f, b), e| (m + 1, f + e.frames, b + e.bytes));
        queue.queued.fetch_sub(msgs, Ordering::AcqRel);
        shared.pending_out.fetch_sub(frames, Ordering::AcqRel);
        shared.pending_out_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if r.is_err() && *kill.borrow() {
            // Killed mid-write: the messages not fully written stay in the backlog that the
            // shutdown counts as undelivered.
            break;
        }
        if out.capacity() > 4 * WRITE_BATCH_BYTES {
            out = BytesMut::new();
        } else {
            out.clear();
        }
        shared.changed.notify_waiters();
        if r.is_err() {
            let (lost_frames, lost_bytes) =
                ends[done..].iter().fold((0i64, 0i64), |(f, b), e| (f + e.frames, b + e.bytes));
            queue.queued.fetch_sub(ends.len() - done, Ordering::AcqRel);
            shared.pending_out.fetch_sub(lost_frames, Ordering::AcqRel);
            shared.pending_out_bytes.fetch_sub(lost_bytes, Ordering::AcqRel);
            shared.counters.dropped(shared.lost_reason(), lost_frames.max(0) as u64);
            dead.send_replace(true);
            break;
        }
    }
    rx
}

/// Counts a running writer; dropping it (return, panic or abort) signals the drain.
struct LiveWriter(Arc<Shared>);

impl Drop for LiveWriter {
    fn drop(&mut self) {
        self.0.live_writers.fetch_sub(1, Ordering::AcqRel);
        self.0.writers_gone.notify_waiters();
    }
}

/// The end of one encoded message in a write batch, with what it counts for.
struct WrittenUpTo {
    end: usize,
    frames: i64,
    bytes: i64,
}

/// `write_all` that records how far it got, so a cancelled or failed write still tells how
/// many bytes the kernel accepted.
async fn write_counting(
    wr: &mut OwnedWriteHalf,
    buf: &[u8],
    written: &mut usize,
) -> std::io::Result<()> {
    while *written < buf.len() {
        match wr.write(&buf[*written..]).await {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read-only view of a socket for the coordinator, tests and (later) health checks.
#[derive(Clone)]
pub struct SocketHandle {
    shared: Arc<Shared>,
}

impl SocketHandle {
    /// Frames queued to peers and not yet written, plus frames waiting to be re-routed.
    pub fn backlog(&self) -> i64 {
        let orphans: i64 = lock(&self.shared.orphans).iter().map(|m| m.len() as i64).sum();
        self.shared.pending_out.load(Ordering::Acquire).max(0) + orphans
    }

    /// Resolves once no connection writer of this socket is running.
    pub async fn writers_stopped(&self) {
        loop {
            let gone = self.shared.writers_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.shared.live_writers.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }

    /// Payload bytes of [`SocketHandle::backlog`].
    pub fn backlog_bytes(&self) -> i64 {
        let orphans: i64 = lock(&self.shared.orphans)
            .iter()
            .map(|m| m.iter().map(|f| f.len() as i64).sum::<i64>())
            .sum();
        self.shared.pending_out_bytes.load(Ordering::Acquire).max(0) + orphans
    }

    /// Peers connected (handshake completed) right now.
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.registry).peers.len()
    }

    /// Topics the subscribers of this PUB/XPUB socket hold, all peers together.
    pub fn subscriber_topics(&self) -> usize {
        lock(&self.shared.registry).peers.iter().map(|p| p.topics.len()).sum()
    }

    pub fn socket_type(&self) -> SocketType {
        self.shared.kind
    }
}

/// What became of a batch handed to a socket.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Accepted by the socket (queued to a peer, or fanned out to zero or more subscribers).
    pub sent_frames: u64,
    pub sent_bytes: u64,
    /// Not sent because the proxy is being killed (drops are counted by the socket itself).
    pub cancelled: Vec<Msg>,
}

impl Delivery {
    fn sent(&mut self, m: &Msg) {
        let (f, b) = size_of(m);
        self.sent_frames += f;
        self.sent_bytes += b;
    }
}

/// The sending side of a socket, owned by the one pump that writes to it. It caches the
/// peer list and refreshes it only when a peer joins, leaves or changes its topics, and it
/// collects each batch per peer so a peer's queue is touched once per batch.
pub struct Outlet {
    shared: Arc<Shared>,
    version: u64,
    peers: Vec<PeerEntry>,
    by_routing: HashMap<Bytes, usize>,
    /// Per cached peer: messages collected for it in this batch, and its remaining room.
    staged: Vec<Vec<Out>>,
    room: Vec<usize>,
    next: usize,
}

impl Outlet {
    fn new(shared: Arc<Shared>) -> Self {
        let mut o = Outlet {
            shared,
            version: u64::MAX,
            peers: Vec::new(),
            by_routing: HashMap::new(),
            staged: Vec::new(),
            room: Vec::new(),
            next: 0,
        };
        o.refresh();
        o
    }

    pub fn socket_type(&self) -> SocketType {
        self.shared.kind
    }

    /// Picks up peer changes (only between batches, after a flush) and re-reads each peer's
    /// room.
    fn refresh(&mut self) {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.version {
            let reg = lock(&self.shared.registry);
            self.peers.clone_from(&reg.peers);
            drop(reg);
            self.version = v;
            self.by_routing.clear();
            if self.shared.kind == SocketType::Router {
                for (i, p) in self.peers.iter().enumerate() {
                    self.by_routing.insert(p.routing_id.clone(), i);
                }
            }
            self.staged.resize_with(self.peers.len(), Vec::new);
            self.staged.truncate(self.peers.len());
        }
        let hwm = self.shared.hwm.max(1);
        self.room.clear();
        self.room.extend(self.peers.iter().map(|p| p.queue.room(hwm)));
    }

    /// Hands every staged message to its peer's queue.
    fn flush(&mut self) {
        for (i, batch) in self.staged.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            if let Err(back) = self.shared.enqueue(&self.peers[i].queue, batch, 0) {
                // The peer closed since the last refresh.
                self.shared.undeliverable(back.into_iter().filter_map(Out::into_msg).collect());
            }
        }
    }

    pub fn backlog(&self) -> i64 {
        self.handle().backlog()
    }

    /// Messages handed back by closed PUSH/DEALER peers, to be re-sent first.
    pub fn take_orphans(&self) -> Vec<Msg> {
        if !self.shared.has_orphans.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut o = lock(&self.shared.orphans);
        self.shared.has_orphans.store(false, Ordering::Release);
        o.drain(..).collect()
    }

    /// Resolves when the peer set or a queue's fill level may have changed.
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    /// Resolves when messages of a closed peer are waiting to be re-sent.
    pub async fn orphaned(&self) {
        self.shared.orphaned.notified().await;
    }

    /// A handle for watching this socket from outside its pump.
    pub fn handle(&self) -> SocketHandle {
        SocketHandle { shared: self.shared.clone() }
    }

    /// Sends a batch according to the socket type. Waits only where libzmq would block:
    /// PUSH/DEALER with no peer able to take the next message.
    pub async fn send(&mut self, msgs: Vec<Msg>, kill: &mut watch::Receiver<bool>) -> Delivery {
        self.refresh();
        let mut d = Delivery::default();
        match self.shared.kind {
            SocketType::Router => self.send_routed(msgs, &mut d),
            SocketType::Pub | SocketType::Xpub => self.fan_out(msgs, &mut d, DropReason::PeerFull),
            SocketType::Xsub | SocketType::Sub => self.send_upstream(msgs, &mut d),
            _ => self.send_balanced(msgs, &mut d, kill).await,
        }
        d
    }

    /// Capture copies: never waits. Returns how many frames a capture peer took (a PUB
    /// takes everything, as a PUB socket with no subscriber does); the rest are dropped.
    pub fn send_capture(&mut self, msgs: &[Msg]) -> (u64, u64) {
        self.refresh();
        let mut d = Delivery::default();
        let copies: Vec<Msg> = msgs.to_vec();
        match self.shared.kind {
            SocketType::Pub | SocketType::Xpub => self.fan_out(copies, &mut d, DropReason::Capture),
            _ => {
                for m in copies {
                    if let Some(i) = self.pick_balanced() {
                        d.sent(&m);
                        self.staged[i].push(Out::Owned(m));
                    }
                }
                self.flush();
            }
        }
        (d.sent_frames, d.sent_bytes)
    }

    fn send_routed(&mut self, msgs: Vec<Msg>, d: &mut Delivery) {
        let counters = &self.shared.counters;
        for mut m in msgs {
            let frames = m.len() as u64;
            if m.len() < 2 {
                counters.dropped(DropReason::Invalid, frames);
                continue;
            }
            let Some(&i) = self.by_routing.get(&m[0]) else {
                counters.dropped(DropReason::Unroutable, frames);
                continue;
            };
            if self.room[i] == 0 {
                counters.dropped(DropReason::PeerFull, frames);
                continue;
            }
            self.room[i] -= 1;
            d.sent(&m);
            m.remove(0);
            self.staged[i].push(Out::Owned(m));
        }
        self.flush();
    }

    fn fan_out(&mut self, msgs: Vec<Msg>, d: &mut Delivery, full_reason: DropReason) {
        let mut full = 0u64;
        let mut targets: Vec<usize> = Vec::with_capacity(self.peers.len());
        for m in msgs {
            d.sent(&m);
            let Some(first) = m.first() else { continue };
            targets.clear();
            for (i, p) in self.peers.iter().enumerate() {
                if p.topics.iter().any(|t| first.starts_with(t)) {
                    if self.room[i] > 0 {
                        targets.push(i);
                    } else {
                        full += m.len() as u64;
                    }
                }
            }
            match targets[..] {
                [] => {}
                // One subscriber takes the message itself; more share one allocation.
                [a] => {
                    self.room[a] -= 1;
                    self.staged[a].push(Out::Owned(m));
                }
                _ => {
                    let shared = Arc::new(m);
                    for &i in &targets {
                        self.room[i] -= 1;
                        self.staged[i].push(Out::Shared(shared.clone()));
                    }
                }
            }
        }
        if full > 0 {
            self.shared.counters.dropped(full_reason, full);
        }
        self.flush();
    }

    fn pick_balanced(&mut self) -> Option<usize> {
        let n = self.peers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.room[i] > 0 {
                self.room[i] -= 1;
                self.next = i + 1;
                return Some(i);
            }
        }
        None
    }

    async fn send_balanced(
        &mut self,
        msgs: Vec<Msg>,
        d: &mut Delivery,
        kill: &mut watch::Receiver<bool>,
    ) {
        let mut it = msgs.into_iter();
        let mut held = None;
        loop {
            let Some(m) = held.take().or_else(|| it.next()) else { break };
            if let Some(i) = self.pick_balanced() {
                d.sent(&m);
                self.staged[i].push(Out::Owned(m));
                continue;
            }
            // Nobody can take it: hand over what is staged, then wait for room or a peer.
            self.flush();
            let shared = self.shared.clone();
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.refresh();
            if self.room.iter().any(|r| *r > 0) {
                held = Some(m);
                continue;
            }
            tokio::select! {
                _ = &mut notified => held = Some(m),
                _ = raised(kill) => {
                    d.cancelled.push(m);
                    d.cancelled.extend(it);
                    return;
                }
            }
            self.refresh();
        }
        self.flush();
    }

    /// XSUB/SUB: subscriptions go to every publisher, past the high-water mark if need be
    /// (they are small and must not be lost), and are remembered for publishers that connect
    /// later; other messages go to every publisher with room.
    fn send_upstream(&mut self, msgs: Vec<Msg>, d: &mut Delivery) {
        for m in msgs {
            d.sent(&m);
            if let Some((subscribe, topic)) = zmtp::subscription_of_message(&m) {
                self.flush();
                let mut reg = lock(&self.shared.registry);
                if subscribe {
                    reg.upstream.insert(topic);
                } else {
                    reg.upstream.remove(&topic);
                }
                for p in &reg.peers {
                    // A publisher that just closed needs no subscription.
                    let _ = self.shared.enqueue(&p.queue, vec![Out::Owned(m.clone())], 1);
                }
                continue;
            }
            let shared = Arc::new(m);
            let mut full = 0;
            for i in 0..self.peers.len() {
                if self.room[i] == 0 {
                    full += shared.len() as u64;
                    continue;
                }
                self.room[i] -= 1;
                self.staged[i].push(Out::Shared(shared.clone()));
            }
            if full > 0 {
                self.shared.counters.dropped(DropReason::PeerFull, full);
            }
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vanished host is only noticed through keepalive; without it, its subscriptions and
    /// routing id would outlive it forever.
    #[tokio::test]
    async fn peer_connections_get_nodelay_and_keepalive_probes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (stream, _)) = (client.expect("connect"), accepted.expect("accept"));
        tune(&stream);
        let sock = socket2::SockRef::from(&stream);
        assert!(stream.nodelay().expect("nodelay"));
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), TCP_KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().expect("interval"), TCP_KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), TCP_KEEPALIVE_RETRIES);
    }
}
