//! The proxy's sockets: binding, connecting, one task per connection, and the send policy of
//! each socket type. This module owns every per-peer decision a proxy has to make:
//!
//! - every connection is read continuously, so a peer that closes (even a PULL worker the
//!   proxy only writes to) is noticed at once, and garbage or a stalled handshake only ever
//!   costs that one connection;
//! - every peer has its own bounded queue (the high-water mark): ROUTER replies to a full peer
//!   are dropped and counted, PUB/XPUB publications to a full subscriber too once a bounded wait
//!   for its room is over (`sockets/pace.rs`), PUSH/DEALER round-robin skips full peers and waits
//!   only when no peer can take the message (or none is connected yet);
//! - messages still queued to a PUSH/DEALER peer whose connection died are handed back and
//!   re-sent to the remaining peers instead of being lost;
//! - XPUB/PUB keep each subscriber's own topics, and XPUB tells the pump which subscriber sent
//!   each subscribe/unsubscribe and when a subscriber left (see `subscriptions.rs`).
//!
//! This file holds a socket's shared state (peer registry, per-peer queues, backlog counts) and
//! its opening; `sockets/connection.rs` runs each peer's task, `sockets/outlet.rs` applies the
//! send policy and `sockets/window.rs` bounds what is read from each peer (the rcvhwm).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use crate::engine::budget::{MemoryBudget, Queued};
use crate::engine::counters::{Counters, DropReason, OncePerPeer};
use crate::engine::curve::{self, Mechanism, Sealer, Security};
use crate::engine::fd_room::{self, PeerRoom};
use crate::engine::heartbeat;
use crate::engine::inbox::Inbox;
use crate::engine::ipc;
use crate::engine::net;
use crate::engine::socket_config::SocketConfig;
use crate::engine::stream::{Listener, Peer, ReadHalf, Stream, WriteHalf};
use crate::engine::tunables::{
    ACCEPT_ERROR_BACKOFF, ALLOW_LIST_POLL_INTERVAL, HANDSHAKE_TIMEOUT, INBOUND_QUEUE_BATCHES,
    READ_CHUNK_BYTES, REFUSAL_LOG_PEERS, REFUSAL_LOG_QUIET, write_batch_bytes,
};
use crate::policy::subscriptions::{PeerId, Shrink};
use crate::wire::zmtp::{self, Item, WireError};
use zmq_proxy_api::heartbeat::Heartbeat;
use zmq_proxy_api::ipc::IpcEndpoint;
use zmq_proxy_api::options::SocketOptions;
use zmq_proxy_api::socket::SocketType;
use zmq_proxy_api::transport::SocketEndpoint;

mod batch;
mod connection;
mod drain;
mod follow;
mod outlet;
mod pace;
mod window;

pub use crate::engine::stream::tune;
pub use batch::Batch;
pub use follow::{AddrState, ConnectReport, Follow};
pub use outlet::{Delivery, Outlet};
pub use window::Credit;

use connection::{Target, accept_loop, connect_loop};
use follow::ConnectStatus;

/// One message: its frames, in order.
pub type Msg = Vec<Bytes>;

/// What a socket's connections hand to the pump that reads the socket, in arrival order.
#[derive(Debug)]
pub enum Inbound {
    /// Messages decoded from one read of one connection, with the credit they hold against
    /// that peer's receive high-water mark (released when the pump takes the batch).
    Batch(Vec<Msg>, Credit),
    /// A subscriber's subscribe (`true`) or unsubscribe (XPUB only).
    Subscription { peer: PeerId, subscribe: bool, topic: Bytes },
    /// A subscriber disconnected (XPUB only); its topics are released.
    PeerLeft(PeerId),
    /// Requests a draining ROUTER read from a peer after its write side was shut: no reply can
    /// reach that peer any more, so they are counted (read, dropped as `peer_gone`) and not
    /// handed to a worker.
    Unanswerable(Vec<Msg>),
}

/// Total frames of a message (the unit of libzmq's message counters) and payload bytes.
pub fn size_of(msg: &Msg) -> (u64, u64) {
    (msg.len() as u64, msg.iter().map(|f| f.len() as u64).sum())
}

/// A message queued to one peer. Fan-out shares one allocation between subscribers.
pub enum Out {
    Owned(Msg),
    /// A message of one frame, held without a frame list (see [`Batch::Frames`]).
    Frame(Bytes),
    Shared(Arc<Msg>),
    /// A ZMTP command's body (PING, PONG: name length, name, data), framed (or sealed) when
    /// written; not a message.
    Command(Bytes),
    /// A subscription message (`\x01topic` / `\x00topic`, one frame) to a publisher that
    /// greeted ZMTP 3.1: written as the SUBSCRIBE/CANCEL command of that revision, counted as
    /// the message it stands for (see [`Out::subscription`]).
    Subscription(Msg),
    /// Drain: after everything queued before it is written, shut down the write side (a FIN),
    /// and keep reading until the peer closes too (see `sockets/drain.rs`).
    Close,
}

impl Out {
    fn frames(&self) -> &[Bytes] {
        match self {
            Out::Owned(m) | Out::Subscription(m) => m,
            Out::Frame(f) => std::slice::from_ref(f),
            Out::Shared(m) => m,
            Out::Command(_) | Out::Close => &[],
        }
    }

    /// The subscription message `m` in the form the peer's revision speaks.
    fn subscription(m: Msg, to: zmtp::Revision) -> Out {
        if to.subscription_commands() { Out::Subscription(m) } else { Out::Owned(m) }
    }

    fn payload_len(&self) -> usize {
        self.frames().iter().map(Bytes::len).sum()
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            Out::Command(c) => zmtp::encode_command(c, out),
            Out::Subscription(m) => {
                m.iter().for_each(|f| zmtp::encode_subscription_command(f, out))
            }
            Out::Close => {}
            m => zmtp::encode_message(m.frames(), out),
        }
    }

    /// [`Out::encode`] for a CURVE connection: every frame in its own MESSAGE box.
    fn encode_sealed(
        &self,
        out: &mut BytesMut,
        sealer: &mut Sealer,
    ) -> Result<(), curve::CurveError> {
        match self {
            Out::Command(c) => sealer.seal_command(c, out),
            Out::Subscription(m) => m
                .iter()
                .try_for_each(|f| sealer.seal_command(&zmtp::subscription_command_body(f), out)),
            Out::Close => Ok(()),
            m => sealer.seal_message(m.frames(), out),
        }
    }

    fn into_msg(self) -> Option<Msg> {
        match self {
            Out::Owned(m) | Out::Subscription(m) => Some(m),
            Out::Frame(f) => Some(vec![f]),
            Out::Shared(m) => Some(Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone())),
            Out::Command(_) | Out::Close => None,
        }
    }
}

/// One peer's outgoing queue: batches of messages, bounded in messages by the socket's
/// high-water mark (checked by the sender, released by the writer as the kernel takes each
/// message whole).
struct PeerQueue {
    /// Batches for the connection's writer; allocates nothing until the first one.
    inbox: Inbox<Vec<Out>>,
    queued: AtomicUsize,
    /// ROUTER: messages read from this peer minus messages routed back to it. A draining
    /// ROUTER keeps a peer's connection open while this is above zero, so every request the
    /// proxy read can still have its reply delivered.
    outstanding: AtomicI64,
    /// The drain has shut (or is shutting) this peer's write side; set once.
    closing: AtomicBool,
    /// ROUTER: messages read from this peer, ever (a draining proxy's idleness test).
    reads: AtomicU64,
    /// PUB/XPUB: nanoseconds the pump waited for this full subscriber since its queue was last
    /// at its low-water mark (see `sockets/pace.rs`); written by the pump only.
    paced_ns: AtomicU64,
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
    /// The subscriber's own topics (PUB/XPUB), a snapshot senders read without locking per
    /// message; changed in place while no sender holds it (see [`Shared::update_topics`]).
    topics: Arc<Vec<Bytes>>,
    /// The ZMTP revision the peer greeted with: the form its subscriptions are sent in.
    revision: zmtp::Revision,
}

#[derive(Default)]
struct Registry {
    peers: Vec<PeerEntry>,
    routing_ids: HashSet<Bytes>,
    /// XSUB/SUB: the subscriptions every upstream peer must have, replayed to new peers.
    upstream: HashSet<Bytes>,
    /// PUB/XPUB: each subscriber's topics as a set, so a subscribe or cancel costs the same
    /// whether the subscriber holds ten topics or a hundred thousand.
    topic_sets: HashMap<PeerId, HashSet<Bytes>>,
    /// The topics of a peer that has none, shared by all of them: a peer's own list is made
    /// by its first subscription (`Arc::make_mut`), so a ROUTER's or a PUSH's peers hold none.
    no_topics: Arc<Vec<Bytes>>,
}

struct Shared {
    kind: SocketType,
    /// frontend, backend or capture: the `socket` label of metrics and refusal logs.
    name: &'static str,
    /// NULL or CURVE, for accepted and for outgoing connections.
    security: Security,
    /// What each connection's heartbeat clock applies.
    heartbeat: Heartbeat,
    /// Refusals already logged, per peer address and reason.
    refusals: OncePerPeer,
    /// The capture socket: its losses are capture drops, never proxy traffic.
    capture: bool,
    /// Whether the pump reads this socket (false for capture and send-only types).
    delivers: bool,
    /// This socket's libzmq options (high-water marks, message size, keepalive, reconnect).
    options: SocketOptions,
    counters: Arc<Counters>,
    registry: Mutex<Registry>,
    version: AtomicU64,
    /// Peer joined or left, a queue made room, or orphans arrived.
    changed: Notify,
    /// Orphans arrived (wakes an idle pump so they are re-sent without new input).
    orphaned: Notify,
    orphans: Mutex<VecDeque<Msg>>,
    has_orphans: AtomicBool,
    /// Frames accepted into peer queues and not yet written to the kernel, and their payload
    /// bytes (a drain that times out takes them back out of "sent"); part of the memory budget.
    pending: Arc<Queued>,
    /// The whole proxy's memory budget, which every connection's reader publishes to.
    budget: Arc<MemoryBudget>,
    /// Room for peers below the file-descriptor limit, shared by every socket.
    room: Arc<PeerRoom>,
    /// Connection writers still running; a timed-out drain counts the backlog only once every
    /// writer has settled what it wrote, or a message could be both delivered and undelivered.
    live_writers: AtomicUsize,
    writers_gone: Notify,
    /// Connections open (from accept or connect until both directions are closed); a drain
    /// ends when every socket has none left.
    live_conns: AtomicUsize,
    conns_gone: Notify,
    /// Nothing more will be written to this socket: the pump that feeds it has delivered its
    /// last message (or no pump feeds it). A draining peer that is only written to closes then.
    input_ended: AtomicBool,
    /// A drain has begun: a ROUTER peer whose last reply is routed closes right behind it.
    draining: AtomicBool,
    /// PUSH/DEALER of a stopping federated replica: what is queued to a peer and not yet
    /// written goes back to the pump, to be placed on another replica (`drain::recall`).
    recalling: AtomicBool,
    next_peer: AtomicU64,
    next_routing: AtomicU32,
    /// Every connect endpoint's addresses and their states, in the order given.
    connects: Vec<Arc<ConnectStatus>>,
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

    /// Counts a connection refused (or dropped) by the handshake or the security mechanism, and
    /// logs it (see [`log_refusal`]).
    fn refused(&self, mech: &Mechanism, e: &WireError, peer: Option<Peer>) {
        let reason = e.reason();
        self.counters.handshake_failed(self.name, mech.name(), reason);
        log_refusal(&self.refusals, self.name, mech, e, peer);
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn register(&self, info: &zmtp::PeerInfo) -> Option<PeerEntry> {
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
        let queue = Arc::new(PeerQueue {
            inbox: Inbox::default(),
            queued: AtomicUsize::new(0),
            outstanding: AtomicI64::new(0),
            closing: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            paced_ns: AtomicU64::new(0),
        });
        // A publisher that connects later gets every current subscription first. This is
        // done under the registry lock, so no subscription change can slip in between.
        let replay: Vec<Out> = reg
            .upstream
            .iter()
            .map(|t| Out::subscription(zmtp::subscription_message(true, t), info.revision))
            .collect();
        if !replay.is_empty() {
            // The queue is open (it was created just above).
            let _ = self.enqueue(&queue, replay, 1);
        }
        let entry = PeerEntry {
            id: self.next_peer.fetch_add(1, Ordering::Relaxed),
            routing_id: routing_id.clone(),
            queue,
            topics: reg.no_topics.clone(),
            revision: info.revision,
        };
        reg.peers.push(entry.clone());
        if self.kind == SocketType::Router {
            reg.routing_ids.insert(routing_id);
        }
        drop(reg);
        self.bump();
        Some(entry)
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
        self.pending.frames.fetch_add(frames as i64, Ordering::AcqRel);
        self.pending.bytes.fetch_add(bytes as i64, Ordering::AcqRel);
        match q.inbox.send(batch) {
            Ok(()) => Ok(()),
            Err(batch) => {
                q.queued.fetch_sub(n, Ordering::AcqRel);
                self.pending.frames.fetch_sub(frames as i64, Ordering::AcqRel);
                self.pending.bytes.fetch_sub(bytes as i64, Ordering::AcqRel);
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
        reg.topic_sets.remove(&peer.id);
        reg.topic_sets.shrink_when_sparse();
        if self.kind == SocketType::Router {
            reg.routing_ids.remove(&peer.routing_id);
        }
        drop(reg);
        self.bump();
    }

    fn update_topics(&self, peer: PeerId, subscribe: bool, topic: &Bytes) {
        let mut guard = lock(&self.registry);
        let reg = &mut *guard;
        let Some(p) = reg.peers.iter_mut().find(|p| p.id == peer) else { return };
        let held = reg.topic_sets.entry(peer).or_default();
        let changed = if subscribe { held.insert(topic.clone()) } else { held.remove(topic) };
        held.shrink_when_sparse();
        if !changed {
            return;
        }
        // Copied only when a sender still holds the previous snapshot (once per refresh of
        // the senders' peer list, not once per subscription).
        let topics = Arc::make_mut(&mut p.topics);
        if subscribe {
            topics.push(topic.clone());
        } else if let Some(i) = topics.iter().position(|t| t == topic) {
            topics.swap_remove(i);
        }
        drop(guard);
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
#[error("cannot {action} {endpoint}: {reason}")]
pub struct OpenError {
    /// What failed: bind, for a listener; start, for what a socket needs besides.
    pub action: &'static str,
    pub endpoint: String,
    pub reason: String,
}

impl OpenError {
    pub fn bind(endpoint: String, reason: String) -> OpenError {
        OpenError { action: "bind", endpoint, reason }
    }
}

/// The proxy's lifecycle signals, shared by every task: `stop` ends reading (drain begins),
/// `kill` ends everything. A dropped sender counts as raised.
#[derive(Clone)]
pub struct Lifecycle {
    pub stop: watch::Receiver<bool>,
    pub kill: watch::Receiver<bool>,
}

async fn raised(rx: &mut watch::Receiver<bool>) {
    // `changed` rather than `wait_for`: the same wait in a smaller future, and every
    // connection's task holds two of them.
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// An open proxy socket: the pump's outlet for sending, and its inbound queue for reading.
pub struct ProxySocket {
    pub outlet: Outlet,
    pub inbound: Option<mpsc::Receiver<Inbound>>,
    /// Where each TCP bind endpoint ended up (port 0 resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// Every bind endpoint as it was bound (TCP port 0 and `ipc://*` resolved), in order.
    pub listening: Vec<String>,
    /// The socket files of its `ipc://` listeners, removed when dropped.
    pub socket_files: Vec<ipc::SocketFile>,
}

impl ProxySocket {
    /// Binds every bind endpoint (failing on the first that cannot be bound) and starts
    /// connecting every connect endpoint (retried in the background, as zmq_connect does).
    pub async fn open(
        cfg: &SocketConfig,
        name: &'static str,
        counters: Arc<Counters>,
        budget: &Arc<MemoryBudget>,
        room: &Arc<PeerRoom>,
        life: &Lifecycle,
        follow: &Follow,
    ) -> Result<ProxySocket, OpenError> {
        let is_capture = name == "capture";
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
        let pending = Arc::new(Queued::default());
        budget.add_queues(pending.clone());
        let shared = Arc::new(Shared {
            kind,
            name,
            security: cfg.security.clone(),
            heartbeat: cfg.heartbeat,
            refusals: OncePerPeer::new(REFUSAL_LOG_QUIET, REFUSAL_LOG_PEERS),
            capture: is_capture,
            delivers,
            options: cfg.options.clone(),
            counters,
            registry: Mutex::new(registry),
            version: AtomicU64::new(0),
            changed: Notify::new(),
            orphaned: Notify::new(),
            orphans: Mutex::new(VecDeque::new()),
            has_orphans: AtomicBool::new(false),
            pending,
            budget: budget.clone(),
            room: room.clone(),
            live_writers: AtomicUsize::new(0),
            writers_gone: Notify::new(),
            live_conns: AtomicUsize::new(0),
            conns_gone: Notify::new(),
            input_ended: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            recalling: AtomicBool::new(false),
            next_peer: AtomicU64::new(1),
            next_routing: AtomicU32::new(rand_u32()),
            connects: connect_statuses(cfg, name),
        });
        if let Some(doubt) = cfg.heartbeat.doubts() {
            tracing::warn!(socket = name, "{doubt}");
        }
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE_BATCHES);
        let mut local_addrs = Vec::new();
        let mut listening = Vec::new();
        let mut socket_files = Vec::new();
        let mut listeners = Vec::new();
        for ep in &cfg.bind {
            let refused =
                |e: std::io::Error| OpenError::bind(ep.to_string(), net::describe_bind_error(&e));
            let l = match ep {
                SocketEndpoint::Tcp(t) => {
                    let (l, _) = net::bind(t).await.map_err(refused)?;
                    local_addrs.push(l.local_addr().map_err(refused)?);
                    Listener::Tcp(l)
                }
                SocketEndpoint::Ipc(i) => {
                    let mut l = ipc::bind(i).map_err(refused)?;
                    socket_files.extend(l.take_file());
                    Listener::Ipc(l)
                }
            };
            listening.push(l.endpoint().map_err(refused)?);
            listeners.push(l);
        }
        for l in listeners {
            tokio::spawn(accept_loop(shared.clone(), l, tx.clone(), life.clone()));
        }
        if let Some(list) = cfg.security.allow_list() {
            tokio::spawn(list.watch(ALLOW_LIST_POLL_INTERVAL, life.kill.clone()));
        }
        let statuses = shared.connects.clone();
        for (ep, status) in cfg.connect.iter().zip(&statuses) {
            let (target, address) = match ep {
                SocketEndpoint::Tcp(t) => (
                    Target::Name(t.host.clone(), t.port),
                    t.to_string().trim_start_matches("tcp://").to_string(),
                ),
                SocketEndpoint::Ipc(i) => (Target::Ipc(i.clone()), i.to_string()),
            };
            let slot = status.slot(address);
            let (never, bound) = (follow::never(), follow.drain_bound);
            let run =
                connect_loop(shared.clone(), target, slot, never, bound, tx.clone(), life.clone());
            tokio::spawn(run);
        }
        for (ep, status) in cfg.connect_all.iter().zip(&statuses[cfg.connect.len()..]) {
            let (ep, status, follow) = (ep.clone(), status.clone(), follow.clone());
            let run =
                follow::follow_name(shared.clone(), ep, status, follow, tx.clone(), life.clone());
            tokio::spawn(run);
        }
        Ok(ProxySocket {
            outlet: Outlet::new(shared),
            inbound: delivers.then_some(rx),
            local_addrs,
            listening,
            socket_files,
        })
    }
}

/// One status per connect endpoint: the plain ones, then those that connect to every address.
fn connect_statuses(cfg: &SocketConfig, name: &'static str) -> Vec<Arc<ConnectStatus>> {
    let plain = cfg.connect.iter().map(|ep| ConnectStatus::new(name, ep.to_string(), false));
    let all = cfg.connect_all.iter().map(|ep| ConnectStatus::new(name, ep.to_string(), true));
    plain.chain(all).collect()
}

/// Logs a refused handshake at info as `peer ADDR:PORT refused: WHY`, once per peer address and
/// reason per [`REFUSAL_LOG_QUIET`] (never a key); a peer that closed or reset before its
/// handshake ended (a TCP health check, a client giving up) only at debug.
pub(crate) fn log_refusal(
    once: &OncePerPeer,
    socket: &'static str,
    mech: &Mechanism,
    e: &WireError,
    peer: Option<Peer>,
) {
    let reason = e.reason();
    let shown = peer.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
    if matches!(e, WireError::Closed | WireError::NoGreeting | WireError::Io(_)) {
        tracing::debug!(socket, peer = %shown, error = %e, reason, "connection ended during the handshake");
    } else if peer.is_none_or(|p| once.first(p.log_key(), reason)) {
        tracing::info!(socket, peer = %shown, mechanism = mech.name(), reason, "peer {shown} refused: {e}");
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() as u32
}

/// Resolves once `count` is zero; whoever lowers it calls `changed.notify_waiters()`. The
/// waiter is registered before the check, so a decrement between the two is never missed.
async fn until_zero(count: &AtomicUsize, changed: &Notify) {
    loop {
        let gone = changed.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if count.load(Ordering::Acquire) == 0 {
            return;
        }
        gone.await;
    }
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
        self.shared.pending.frames.load(Ordering::Acquire).max(0) + orphans
    }

    /// Messages queued to peers and not yet written, plus messages waiting to be re-routed:
    /// [`SocketHandle::backlog`] in messages.
    pub fn backlog_messages(&self) -> u64 {
        let orphans = lock(&self.shared.orphans).len() as u64;
        let queued: usize = lock(&self.shared.registry)
            .peers
            .iter()
            .map(|p| p.queue.queued.load(Ordering::Acquire))
            .sum();
        queued as u64 + orphans
    }

    /// Resolves once no connection writer of this socket is running.
    pub async fn writers_stopped(&self) {
        until_zero(&self.shared.live_writers, &self.shared.writers_gone).await;
    }

    /// Resolves once no connection of this socket is open (a drain's last step).
    pub async fn connections_closed(&self) {
        until_zero(&self.shared.live_conns, &self.shared.conns_gone).await;
    }

    /// Connections open right now, handshaking ones included.
    pub fn connection_count(&self) -> usize {
        self.shared.live_conns.load(Ordering::Acquire)
    }

    /// Marks the start of a drain (before the connections learn it from the stop signal).
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Declares that nothing more will be written to this socket, so its draining peers may
    /// close once their queues are written.
    pub fn end_input(&self) {
        self.shared.input_ended.store(true, Ordering::Release);
        self.shared.changed.notify_waiters();
    }

    /// Payload bytes of [`SocketHandle::backlog`].
    pub fn backlog_bytes(&self) -> i64 {
        let orphans: i64 = lock(&self.shared.orphans)
            .iter()
            .map(|m| m.iter().map(|f| f.len() as i64).sum::<i64>())
            .sum();
        self.shared.pending.bytes.load(Ordering::Acquire).max(0) + orphans
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

    /// Every connect endpoint of this socket with its addresses and their states.
    pub fn connects(&self) -> Vec<ConnectReport> {
        self.shared.connects.iter().map(|c| c.report()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;
    use zmq_proxy_api::defaults::{
        TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES,
    };

    /// A publisher is sent its subscriptions in the form of the revision it greeted with: the
    /// one-byte message to 3.0 peers (which have no SUBSCRIBE command), the command to 3.1.
    #[test]
    fn subscriptions_take_the_form_of_the_peers_revision() {
        let encoded = |m: Msg, to| {
            let mut out = BytesMut::new();
            let o = Out::subscription(m, to);
            assert_eq!((o.frames().len(), o.payload_len()), (1, 4), "counted as the message");
            o.encode(&mut out);
            out
        };
        let sub = zmtp::subscription_message(true, b"abc");
        assert_eq!(&encoded(sub.clone(), zmtp::Revision::V3_0)[..], b"\x00\x04\x01abc");
        assert_eq!(&encoded(sub, zmtp::Revision::V3_1)[..], b"\x04\x0d\x09SUBSCRIBEabc");
        let cancel = zmtp::subscription_message(false, b"abc");
        assert_eq!(&encoded(cancel.clone(), zmtp::Revision::V3_0)[..], b"\x00\x04\x00abc");
        assert_eq!(&encoded(cancel, zmtp::Revision::V3_1)[..], b"\x04\x0a\x06CANCELabc");
    }

    /// A vanished host is only noticed through keepalive; without it, its subscriptions and
    /// routing id would outlive it forever.
    #[tokio::test]
    async fn peer_connections_get_nodelay_and_keepalive_probes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (stream, _)) = (client.expect("connect"), accepted.expect("accept"));
        tune(&stream, &SocketOptions::default());
        let sock = socket2::SockRef::from(&stream);
        assert!(stream.nodelay().expect("nodelay"));
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), TCP_KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().expect("interval"), TCP_KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), TCP_KEEPALIVE_RETRIES);
        // The options given win over the defaults, and off means off.
        let tuned = SocketOptions {
            tcp_keepalive_idle: Duration::from_secs(7),
            tcp_keepalive_interval: Duration::from_secs(2),
            tcp_keepalive_count: 5,
            ..SocketOptions::default()
        };
        tune(&stream, &tuned);
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_interval().expect("interval"), Duration::from_secs(2));
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), 5);
        tune(&stream, &SocketOptions { tcp_keepalive: false, ..tuned });
        assert!(!sock.keepalive().expect("keepalive"));
    }
}
