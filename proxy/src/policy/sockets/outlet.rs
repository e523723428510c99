//! The sending side of a socket: the send policy of each socket type (ROUTER by routing id,
//! PUSH/DEALER round-robin over peers with room, PUB/XPUB fan-out to matching subscribers, XSUB
//! subscriptions to every publisher, each in the form its ZMTP revision speaks) and what became
//! of each batch.
//!
//! PUB/XPUB wait, instead of dropping, for a full subscriber the message is for: for as long as
//! it takes with `nodrop` (ZMQ_XPUB_NODROP) or when every subscriber is full (nobody would get
//! the message); otherwise for a bounded time per subscriber (see `sockets/pace.rs`), after
//! which that subscriber loses its copies until it catches up. While the pump waits it stops
//! taking from the frontend, the publishers' connections stop being read at their rcvhwm, and
//! the backlog stays in the publishers (whose own high-water mark drops before they encode or
//! encrypt anything, as behind a libzmq proxy) rather than being read, decoded and dropped here.

use super::pace::Pace;
use super::*;
use tokio::time::Instant;

/// What became of a batch handed to a socket.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Accepted by the socket (queued to a peer, or fanned out to zero or more subscribers).
    pub sent_messages: u64,
    pub sent_frames: u64,
    pub sent_bytes: u64,
    /// Not sent because the proxy is being killed (drops are counted by the socket itself).
    pub cancelled: Vec<Msg>,
}

impl Delivery {
    fn sent(&mut self, m: &Msg) {
        self.sent_sized(size_of(m));
    }

    fn sent_sized(&mut self, (f, b): (u64, u64)) {
        self.sent_messages += 1;
        self.sent_frames += f;
        self.sent_bytes += b;
    }
}

/// A message as PUSH/DEALER's balanced send takes it: in either form of a [`Batch`].
trait Balanced {
    fn sizes(&self) -> (u64, u64);
    fn into_out(self) -> Out;
    fn into_msg(self) -> Msg;
}

impl Balanced for Msg {
    fn sizes(&self) -> (u64, u64) {
        size_of(self)
    }
    fn into_out(self) -> Out {
        Out::Owned(self)
    }
    fn into_msg(self) -> Msg {
        self
    }
}

impl Balanced for Bytes {
    fn sizes(&self) -> (u64, u64) {
        (1, self.len() as u64)
    }
    fn into_out(self) -> Out {
        Out::Frame(self)
    }
    fn into_msg(self) -> Msg {
        vec![self]
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
    /// PUB/XPUB: which subscribers lag, and the full ones a publication waits for.
    pace: Pace,
    pacing: Vec<usize>,
}

/// Where one publication goes, besides its targets: how many matching subscribers are full,
/// how many of those it may wait for (not lagging), and whether any subscriber has room.
#[derive(Clone, Copy)]
struct Routed {
    full: usize,
    paced: usize,
    any_room: bool,
}

impl Outlet {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let mut o = Outlet {
            shared,
            version: u64::MAX,
            peers: Vec::new(),
            by_routing: HashMap::new(),
            staged: Vec::new(),
            room: Vec::new(),
            next: 0,
            pace: Pace::default(),
            pacing: Vec::new(),
        };
        o.refresh();
        o
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
        let hwm = self.shared.options.send_limit().max(1);
        self.room.clear();
        self.room.extend(self.peers.iter().map(|p| p.queue.room(hwm)));
        if matches!(self.shared.kind, SocketType::Pub | SocketType::Xpub) {
            self.pace.refresh(&self.peers, &mut self.room, hwm);
        }
    }

    /// Hands every staged message to its peer's queue.
    fn flush(&mut self) {
        for (i, batch) in self.staged.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            let n = batch.len() as i64;
            let queue = &self.peers[i].queue;
            match self.shared.enqueue(queue, batch, 0) {
                // Only once the replies are in the queue: a draining ROUTER peer whose count
                // reaches zero queues its FIN next, and it must come after them.
                Ok(()) if self.shared.kind == SocketType::Router => {
                    let now = queue.outstanding.fetch_sub(n, Ordering::AcqRel) - n;
                    drain::after_reply(&self.shared, &self.peers[i], now);
                }
                Ok(()) => {}
                // The peer closed since the last refresh.
                Err(back) => {
                    self.shared.undeliverable(back.into_iter().filter_map(Out::into_msg).collect())
                }
            }
        }
    }

    /// Messages this socket's peers can take right now, all together: what a PUSH/DEALER batch
    /// places without waiting.
    pub fn room(&mut self) -> usize {
        self.refresh();
        self.room.iter().sum()
    }

    /// Peers as of the last refresh (e.g. [`Outlet::room`]).
    pub fn peers(&self) -> usize {
        self.peers.len()
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

    /// While `on`, what is queued to this socket's peers and not yet written comes back as
    /// orphans (PUSH/DEALER of a stopping federated replica; see `sockets/drain.rs`).
    pub fn recall(&self, on: bool) {
        drain::recall(&self.shared, on);
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
            SocketType::Pub | SocketType::Xpub => self.publish(msgs, &mut d, kill).await,
            SocketType::Xsub | SocketType::Sub => self.send_upstream(msgs, &mut d),
            _ => self.send_balanced(msgs, &mut d, kill).await,
        }
        d
    }

    /// [`Outlet::send`] for a batch in either form: PUSH/DEALER queue the one-frame form to
    /// their peers as it is, without a frame list per message.
    pub async fn send_batch(&mut self, batch: Batch, kill: &mut watch::Receiver<bool>) -> Delivery {
        let balanced = !matches!(
            self.shared.kind,
            SocketType::Router
                | SocketType::Pub
                | SocketType::Xpub
                | SocketType::Xsub
                | SocketType::Sub
        );
        match batch {
            Batch::Frames(frames) if balanced => {
                self.refresh();
                let mut d = Delivery::default();
                self.send_balanced(frames, &mut d, kill).await;
                d
            }
            b => self.send(b.into_msgs(), kill).await,
        }
    }

    /// Copies `msgs` to the capture peers without waiting; returns the messages, frames and
    /// bytes a capture peer took (a PUB takes everything, as a PUB socket with no subscriber
    /// does). The rest are dropped.
    pub fn send_capture(&mut self, msgs: &[Msg]) -> (u64, u64, u64) {
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
        (d.sent_messages, d.sent_frames, d.sent_bytes)
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
                // No reply is coming for that request now.
                self.peers[i].queue.outstanding.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            self.room[i] -= 1;
            d.sent(&m);
            m.remove(0);
            self.staged[i].push(Out::Owned(m));
        }
        self.flush();
    }

    /// Where one publication goes: the matching subscribers with room into `targets`, the full
    /// ones it may wait for into `self.pacing`.
    fn route(&mut self, first: &Bytes, targets: &mut Vec<usize>) -> Routed {
        targets.clear();
        self.pacing.clear();
        let mut r = Routed { full: 0, paced: 0, any_room: false };
        for (i, p) in self.peers.iter().enumerate() {
            if p.topics.is_empty() {
                continue;
            }
            r.any_room |= self.room[i] > 0;
            if p.topics.iter().any(|t| first.starts_with(t)) {
                if self.room[i] > 0 {
                    targets.push(i);
                } else {
                    r.full += 1;
                    if !self.pace.lagging(i) {
                        self.pacing.push(i);
                    }
                }
            }
        }
        r.paced = self.pacing.len();
        r
    }

    /// Stages one publication for `targets` (one subscriber takes the message itself; more
    /// share one allocation).
    fn stage(&mut self, m: Msg, targets: &[usize]) {
        match targets {
            [] => {}
            [a] => {
                self.room[*a] -= 1;
                self.staged[*a].push(Out::Owned(m));
            }
            _ => {
                let shared = Arc::new(m);
                for &i in targets {
                    self.room[i] -= 1;
                    self.staged[i].push(Out::Shared(shared.clone()));
                }
            }
        }
    }

    /// Capture fan-out: never waits; full capture subscribers lose their copy.
    fn fan_out(&mut self, msgs: Vec<Msg>, d: &mut Delivery, full_reason: DropReason) {
        let mut full = 0u64;
        let mut targets: Vec<usize> = Vec::with_capacity(self.peers.len());
        for m in msgs {
            d.sent(&m);
            let Some(first) = m.first() else { continue };
            let n = self.route(first, &mut targets).full;
            full += (n * m.len()) as u64;
            self.stage(m, &targets);
        }
        if full > 0 {
            self.shared.counters.dropped(full_reason, full);
        }
        self.flush();
    }

    /// PUB/XPUB fan-out of proxy traffic: the pump waits (see the module doc) for a full
    /// subscriber the message is for, as long as it takes with `nodrop` or while every
    /// subscriber is full, else for a bounded time per subscriber ([`Pace`]); the full
    /// subscribers it no longer waits for lose the message.
    async fn publish(
        &mut self,
        msgs: Vec<Msg>,
        d: &mut Delivery,
        kill: &mut watch::Receiver<bool>,
    ) {
        let nodrop = self.shared.options.nodrop;
        let mut full = 0u64;
        let mut targets: Vec<usize> = Vec::with_capacity(self.peers.len());
        // Only a wait that holds up a subscriber with room is charged to the full ones.
        let charged = |r: Routed| !nodrop && r.any_room && r.paced > 0;
        let must_wait = |r: Routed| r.full > 0 && (nodrop || !r.any_room || r.paced > 0);
        let mut it = msgs.into_iter();
        while let Some(m) = it.next() {
            if m.is_empty() {
                d.sent(&m);
                continue;
            }
            let mut routed = self.route(&m[0], &mut targets);
            if must_wait(routed) {
                // Hand over what is staged, then wait for the full subscribers to make room
                // (or leave, or unsubscribe, or lag). The waiter is registered before the room
                // is re-read, so a write in between is not missed.
                self.flush();
                let mut since = Instant::now();
                loop {
                    let shared = self.shared.clone();
                    let notified = shared.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    self.refresh();
                    routed = self.route(&m[0], &mut targets);
                    let now = Instant::now();
                    if charged(routed) && self.pace.charge(&self.peers, &self.pacing, now - since) {
                        // One of them lags from now on: route without it.
                        since = now;
                        continue;
                    }
                    since = now;
                    if !must_wait(routed) {
                        break;
                    }
                    let bound =
                        charged(routed).then(|| now + self.pace.left(&self.peers, &self.pacing));
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = sleep_until_some(bound) => {}
                        _ = raised(kill) => {
                            d.cancelled.push(m);
                            d.cancelled.extend(it);
                            if full > 0 {
                                self.shared.counters.dropped(DropReason::PeerFull, full);
                            }
                            return;
                        }
                    }
                }
            }
            full += (routed.full * m.len()) as u64;
            d.sent(&m);
            self.stage(m, &targets);
        }
        if full > 0 {
            self.shared.counters.dropped(DropReason::PeerFull, full);
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

    async fn send_balanced<M: Balanced>(
        &mut self,
        msgs: Vec<M>,
        d: &mut Delivery,
        kill: &mut watch::Receiver<bool>,
    ) {
        let mut it = msgs.into_iter();
        let mut held = None;
        loop {
            let Some(m) = held.take().or_else(|| it.next()) else { break };
            if let Some(i) = self.pick_balanced() {
                d.sent_sized(m.sizes());
                self.staged[i].push(m.into_out());
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
                    d.cancelled.push(m.into_msg());
                    d.cancelled.extend(it.map(M::into_msg));
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
                    reg.upstream.shrink_when_sparse();
                }
                for p in &reg.peers {
                    // A publisher that just closed needs no subscription.
                    let out = Out::subscription(m.clone(), p.revision);
                    let _ = self.shared.enqueue(&p.queue, vec![out], 1);
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

/// Resolves at `at` when there is one; never without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
