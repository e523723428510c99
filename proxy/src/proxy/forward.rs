//! The forwarding loop: one pump task per direction, the capture tee, the counters, the
//! Active/Paused/Terminated state, and the drain on stop.
//!
//! Each pump reads its source socket's inbound queue and hands every message to the
//! destination socket's [`Outlet`]. The only places a pump waits are where libzmq's proxy
//! would block (no PUSH/DEALER peer can take the message yet; an XSUB subscription to a
//! publisher with a full queue). Because the two directions are separate tasks, a waiting
//! request never holds up a reply.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::engine::budget::MemoryBudget;
use crate::engine::counters::{Counters, DropReason, Snapshot, SocketCounters};
use crate::engine::fd_room::PeerRoom;
use crate::engine::ipc::SocketFile;
use crate::engine::resolve::Resolver;
use crate::engine::tunables::{
    DRAIN_POLL_INTERVAL, FEDERATION_CREDIT_IDLE_INTERVAL, FEDERATION_CREDIT_INTERVAL, PUMP_BURST,
    WRITER_SETTLE_TIMEOUT,
};
use crate::federation::{
    self, Arrival, DownSide, Federation, MembersWatch, Origin, ReplySide, TaskSide, UpEvent, UpSide,
};
use crate::policy::sockets::{
    Batch, Delivery, Follow, Inbound, Lifecycle, Msg, OpenError, Outlet, ProxySocket, SocketHandle,
    size_of,
};
use crate::policy::subscriptions::SubscriptionTable;
use crate::proxy::config::ProxyConfig;
use crate::proxy::state::{self, ProxyState};
use crate::wire::zmtp::subscription_message;
use zmq_proxy_api::socket::SocketType;

/// A running proxy.
pub struct Proxy {
    counters: Arc<Counters>,
    state: watch::Sender<ProxyState>,
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    pumps: Vec<JoinHandle<()>>,
    /// Raised when any pump ends, however it ends (a panic included).
    pump_ended: watch::Sender<bool>,
    frontend: SocketHandle,
    backend: SocketHandle,
    capture: Option<SocketHandle>,
    /// Sockets no pump writes to: their input has ended as soon as a drain begins.
    unfed: Vec<SocketHandle>,
    pub frontend_addrs: Vec<std::net::SocketAddr>,
    pub backend_addrs: Vec<std::net::SocketAddr>,
    pub capture_addrs: Vec<std::net::SocketAddr>,
    /// Every bind endpoint of each socket as bound (`tcp://ADDR:PORT`, `ipc://PATH`).
    pub listening: Listening,
    /// The `ipc://` listeners' socket files, removed when the drain stops accepting.
    socket_files: Vec<SocketFile>,
    federation: Option<Federation>,
}

/// Where each socket listens, as endpoints.
#[derive(Clone, Debug, Default)]
pub struct Listening {
    pub frontend: Vec<String>,
    pub backend: Vec<String>,
    pub capture: Vec<String>,
}

/// How a shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Everything read was delivered.
    Drained,
    /// The drain timeout expired; what was left is in `undelivered_msgs`.
    TimedOut,
    /// The caller's abort (a second signal) fired.
    Aborted,
}

/// The resolver and schedule of connect-all names and federation peer names; the resolver is
/// built (the system's DNS configuration read) only when one of them needs it.
fn follow_settings(cfg: &ProxyConfig) -> Result<Follow, OpenError> {
    let named_peer = |f: &federation::FederationConfig| {
        f.peers.iter().any(|p| federation::discover::is_name(&p.host))
    };
    let needed = cfg.named_sockets().iter().any(|(_, s)| !s.connect_all.is_empty())
        || cfg.federation.as_ref().is_some_and(named_peer);
    let resolver = match needed {
        true => Some(Resolver::new(cfg.dns_server).map_err(|reason| OpenError {
            action: "start",
            endpoint:
                cfg.dns_server.map_or("the DNS resolver".into(), |a| format!("--dns-server {a}")),
            reason,
        })?),
        false => None,
    };
    Ok(Follow { resolver, interval: cfg.resolve_interval, drain_bound: cfg.drain_timeout })
}

impl Proxy {
    /// Binds and connects every socket and starts forwarding. Fails on the first endpoint
    /// that cannot be bound.
    pub async fn start(cfg: &ProxyConfig) -> Result<Proxy, OpenError> {
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let (kill, kill_rx) = watch::channel(false);
        // Read before any pump runs, so a pod created while paused never forwards a message.
        let initial = match cfg.start_paused {
            true => ProxyState::Paused,
            false => state::initial(cfg.pause_file.as_deref()),
        };
        let (state, _) = watch::channel(initial);
        let life = Lifecycle { stop: stop_rx, kill: kill_rx.clone() };
        let budget = Arc::new(MemoryBudget::new(cfg.max_memory.bytes()));
        let follow = follow_settings(cfg)?;
        // Read now: the binary raised the limit before starting the proxy.
        let room = PeerRoom::of_limit();
        let open =
            |c, name| ProxySocket::open(c, name, counters.clone(), &budget, &room, &life, &follow);
        let mut front = open(&cfg.frontend, "frontend").await?;
        let mut back = open(&cfg.backend, "backend").await?;
        let mut cap = match &cfg.capture {
            Some(c) => Some(open(c, "capture").await?),
            None => None,
        };
        let frontend = front.outlet.handle();
        let backend = back.outlet.handle();
        let capture_addrs = cap.as_ref().map(|c| c.local_addrs.clone()).unwrap_or_default();
        let mut socket_files = std::mem::take(&mut front.socket_files);
        socket_files.append(&mut back.socket_files);
        let listening = Listening {
            frontend: front.listening.clone(),
            backend: back.listening.clone(),
            capture: cap.as_ref().map(|c| c.listening.clone()).unwrap_or_default(),
        };
        if let Some(c) = cap.as_mut() {
            socket_files.append(&mut c.socket_files);
        }
        let capture_handle = cap.as_ref().map(|c| c.outlet.handle());
        let capture = cap.map(|c| Arc::new(Mutex::new(c.outlet)));
        let mut pumps = Vec::new();
        let pump_ended = watch::channel(false).0;
        let front_in = front.inbound.take();
        let back_in = back.inbound.take();
        let (front_addrs, back_addrs) = (front.local_addrs.clone(), back.local_addrs.clone());
        let mut front_out = Some(front.outlet);
        let mut back_out = Some(back.outlet);
        // Each pump's half of the federation, by the type of the socket it reads.
        let (mut front_fed, mut back_fed, federation) = match &cfg.federation {
            None => (Fed::Off, Fed::Off, None),
            Some(f) => {
                let dns = federation::discover::Dns {
                    resolver: follow.resolver.clone(),
                    interval: follow.interval,
                };
                let started = federation::start(f, dns, &life).await?;
                let pubsub = |s: federation::Started| {
                    let (fed, down, up) = s.pubsub();
                    (Fed::Down(down), Fed::Up(up), Some(fed))
                };
                let pipeline = |s: federation::Started| {
                    let (fed, tasks) = s.pipeline();
                    (Fed::Tasks(tasks), Some(fed))
                };
                match (cfg.frontend.socket_type, cfg.backend.socket_type) {
                    (SocketType::Xsub, SocketType::Xpub) => pubsub(started),
                    (SocketType::Xpub, SocketType::Xsub) => {
                        let (down, up, fed) = pubsub(started);
                        (up, down, fed)
                    }
                    (SocketType::Pull, SocketType::Push) => {
                        let (tasks, fed) = pipeline(started);
                        (tasks, Fed::Off, fed)
                    }
                    (SocketType::Push, SocketType::Pull) => {
                        let (tasks, fed) = pipeline(started);
                        (Fed::Off, tasks, fed)
                    }
                    // The pump reading the ROUTER places requests, the one reading the DEALER
                    // sends replies back.
                    (SocketType::Router, SocketType::Dealer) => {
                        let (fed, requests, replies) = started.reqrep();
                        (Fed::Tasks(requests), Fed::Replies(replies), Some(fed))
                    }
                    (SocketType::Dealer, SocketType::Router) => {
                        let (fed, requests, replies) = started.reqrep();
                        (Fed::Replies(replies), Fed::Tasks(requests), Some(fed))
                    }
                    _ => {
                        return Err(OpenError {
                            action: "start",
                            endpoint: f.bind.to_string(),
                            reason:
                                "federation needs an XSUB/XPUB, PULL/PUSH or ROUTER/DEALER proxy"
                                    .into(),
                        });
                    }
                }
            }
        };
        if let Some(f) = &federation {
            let steer = steer_federation(f.clone(), state.clone(), kill_rx.clone());
            tokio::spawn(steer);
        }
        // One pump per direction; `from_frontend` picks which counters each side uses.
        let mut spawn_pump = |rx, dest, from_frontend, fed| {
            let p = pump(
                rx,
                dest,
                capture.clone(),
                counters.clone(),
                from_frontend,
                state.subscribe(),
                kill_rx.clone(),
                fed,
            );
            pumps.push(spawn_watched(&pump_ended, p));
        };
        if let (Some(rx), Some(dest)) = (front_in, back_out.take()) {
            spawn_pump(rx, dest, true, std::mem::replace(&mut front_fed, Fed::Off));
        }
        if let (Some(rx), Some(dest)) = (back_in, front_out.take()) {
            spawn_pump(rx, dest, false, std::mem::replace(&mut back_fed, Fed::Off));
        }
        // A socket no pump writes to (e.g. the PUSH frontend of a reversed pipeline) still
        // needs its outlet alive, or its peers' queues would close under them.
        let idle: Vec<Outlet> = front_out.into_iter().chain(back_out).collect();
        let unfed = idle.iter().map(Outlet::handle).collect();
        if !idle.is_empty() {
            let mut k = kill_rx.clone();
            tokio::spawn(async move {
                let _ = k.wait_for(|v| *v).await;
                drop(idle);
            });
        }
        Ok(Proxy {
            counters,
            state,
            stop,
            kill,
            pumps,
            pump_ended,
            frontend,
            backend,
            capture: capture_handle,
            unfed,
            frontend_addrs: front_addrs,
            backend_addrs: back_addrs,
            capture_addrs,
            listening,
            socket_files,
            federation,
        })
    }

    /// The federation this proxy is a replica of, if any.
    pub fn federation(&self) -> Option<&Federation> {
        self.federation.as_ref()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Handles on the pump tasks, for the liveness probe: a pump that ended before the
    /// drain (e.g. it panicked) means one direction no longer forwards.
    pub fn pump_handles(&self) -> Vec<tokio::task::AbortHandle> {
        self.pumps.iter().map(|p| p.abort_handle()).collect()
    }

    /// The state channel a control socket drives (PAUSE/RESUME/TERMINATE).
    pub fn state(&self) -> &watch::Sender<ProxyState> {
        &self.state
    }

    pub fn frontend(&self) -> &SocketHandle {
        &self.frontend
    }

    pub fn backend(&self) -> &SocketHandle {
        &self.backend
    }

    pub fn capture(&self) -> Option<&SocketHandle> {
        self.capture.as_ref()
    }

    /// Resolves when a pump has ended. Pumps only end on stop or kill, so before a shutdown
    /// this means the forwarding loop died (a bug): the process should exit and be restarted
    /// rather than serve one direction only.
    pub async fn pump_died(&self) {
        let mut rx = self.pump_ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Resolves when the state becomes Terminated.
    pub async fn terminated(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s == ProxyState::Terminated).await;
    }

    /// Drains, for up to `drain`: stops accepting, closes each connection at the moment its
    /// socket type allows (see `sockets/drain.rs`) while still reading and delivering what its
    /// peer sent, and ends once every connection is closed; then kills whatever is left.
    /// `abort` cuts the drain short (a second signal). Returns the final counters.
    pub async fn shutdown(
        mut self,
        drain: Duration,
        abort: impl std::future::Future<Output = ()>,
    ) -> (Ending, Snapshot) {
        for s in
            [Some(&self.frontend), Some(&self.backend), self.capture.as_ref()].into_iter().flatten()
        {
            s.begin_drain();
        }
        self.stop.send_replace(true);
        // The listeners stop accepting now: their paths go with them.
        self.socket_files.clear();
        for s in &self.unfed {
            s.end_input();
        }
        // A paused proxy still drains what it holds.
        self.state.send_replace(ProxyState::Terminated);
        let capture = self.capture.clone();
        let sockets = [self.frontend.clone(), self.backend.clone()];
        let ending = tokio::select! {
            _ = drained(&mut self.pumps, &sockets, capture.as_ref()) => Ending::Drained,
            _ = tokio::time::sleep(drain) => Ending::TimedOut,
            _ = abort => Ending::Aborted,
        };
        self.kill.send_replace(true);
        if ending != Ending::Drained {
            // Pumps count what they held and what was still queued to them.
            for p in self.pumps.drain(..) {
                let _ = p.await;
            }
            let sockets = [Some(&self.frontend), Some(&self.backend), self.capture.as_ref()];
            let settled = async {
                for s in sockets.into_iter().flatten() {
                    s.writers_stopped().await;
                }
            };
            let _ = tokio::time::timeout(WRITER_SETTLE_TIMEOUT, settled).await;
            // What is still queued to peers was counted as sent when it was queued; it was
            // not, so it moves from "sent" to "undelivered" and recv = sent + dropped +
            // undelivered holds.
            for (handle, counts) in
                [(&self.frontend, &self.counters.frontend), (&self.backend, &self.counters.backend)]
            {
                let (frames, bytes) = (handle.backlog().max(0) as u64, handle.backlog_bytes());
                counts.take_back_sent(handle.backlog_messages(), frames, bytes.max(0) as u64);
                self.counters.undelivered_msgs.fetch_add(frames, ORD);
            }
            // Capture copies are not proxy traffic: unwritten ones count as capture drops.
            if let Some(c) = &self.capture {
                let (frames, bytes) = (c.backlog().max(0) as u64, c.backlog_bytes().max(0) as u64);
                for (counter, n) in [
                    (&self.counters.capture_sent_msgs, frames),
                    (&self.counters.capture_sent_messages, c.backlog_messages()),
                    (&self.counters.capture_sent_bytes, bytes),
                ] {
                    let _ = counter.fetch_update(ORD, ORD, |v| Some(v.saturating_sub(n)));
                }
                self.counters.dropped(DropReason::Capture, frames);
            }
        }
        (ending, self.counters.snapshot())
    }
}

/// Frames and payload bytes of a batch.
fn sizes(msgs: &[Msg]) -> (u64, u64) {
    msgs.iter().map(size_of).fold((0, 0), |(f, b), (mf, mb)| (f + mf, b + mb))
}

const ORD: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// Resolves once every pump has delivered its input, the capture socket has written its
/// queue, and every connection has been closed by both sides. Cancel-safe: a pump that
/// finished is removed, so it is never awaited twice.
async fn drained(
    pumps: &mut Vec<JoinHandle<()>>,
    sockets: &[SocketHandle],
    capture: Option<&SocketHandle>,
) {
    while let Some(p) = pumps.last_mut() {
        let _ = p.await;
        pumps.pop();
    }
    if let Some(c) = capture {
        while c.backlog() > 0 {
            tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        }
        c.end_input();
        c.connections_closed().await;
    }
    for s in sockets {
        s.connections_closed().await;
    }
}

struct Pump {
    dest: Outlet,
    capture: Option<Arc<Mutex<Outlet>>>,
    counters: Arc<Counters>,
    front_to_back: bool,
    kill: watch::Receiver<bool>,
    fed: Fed,
}

/// A pump's part in a federation: none, relaying publications (the pump reading XSUB),
/// announcing subscriptions (the pump reading XPUB), placing tasks (the pump reading PULL) or
/// requests (the pump reading ROUTER), or sending replies back (the pump reading DEALER).
enum Fed {
    Off,
    Down(DownSide),
    Up(UpSide),
    Tasks(TaskSide),
    Replies(ReplySide),
}

/// What a federation link handed a pump.
enum Relayed {
    /// Publications that entered at another replica: for this replica's subscribers only.
    Publications(Vec<Msg>),
    Event(UpEvent),
    /// Tasks another replica placed here: for this replica's workers only.
    Tasks(Arrival),
    /// Replies to requests this replica's clients sent, answered on another replica.
    Replies(Vec<Msg>),
}

impl Fed {
    /// The next item from the links; never resolves without a federation.
    async fn recv(&mut self) -> Option<Relayed> {
        match self {
            Fed::Off => std::future::pending().await,
            Fed::Down(d) => d.recv().await.map(Relayed::Publications),
            Fed::Up(u) => u.recv().await.map(Relayed::Event),
            Fed::Tasks(t) => t.recv().await.map(Relayed::Tasks),
            Fed::Replies(r) => r.recv().await.map(Relayed::Replies),
        }
    }

    fn try_recv(&mut self) -> Option<Relayed> {
        match self {
            Fed::Off => None,
            Fed::Down(d) => d.try_recv().map(Relayed::Publications),
            Fed::Up(u) => u.try_recv().map(Relayed::Event),
            Fed::Tasks(t) => t.try_recv().map(Relayed::Tasks),
            Fed::Replies(r) => r.try_recv().map(Relayed::Replies),
        }
    }

    /// Publications queued to other replicas and not yet written.
    fn backlog(&self) -> usize {
        match self {
            Fed::Down(d) => d.backlog(),
            Fed::Tasks(t) => t.backlog(),
            Fed::Replies(r) => r.backlog(),
            Fed::Off | Fed::Up(_) => 0,
        }
    }
}

impl Pump {
    fn src(&self) -> &SocketCounters {
        if self.front_to_back { &self.counters.frontend } else { &self.counters.backend }
    }

    fn dst(&self) -> &SocketCounters {
        if self.front_to_back { &self.counters.backend } else { &self.counters.frontend }
    }

    fn tee(&self, msgs: &[Msg], frames: u64) {
        let Some(cap) = &self.capture else { return };
        let (messages, sent, bytes) =
            cap.lock().unwrap_or_else(|p| p.into_inner()).send_capture(msgs);
        self.counters.capture_sent_messages.fetch_add(messages, ORD);
        self.counters.capture_sent_msgs.fetch_add(sent, ORD);
        self.counters.capture_sent_bytes.fetch_add(bytes, ORD);
        if sent < frames {
            self.counters.dropped(DropReason::Capture, frames - sent);
        }
    }

    /// Counts, captures and forwards messages read from the source. On a kill, returns the
    /// messages that were not sent.
    async fn forward(&mut self, msgs: Vec<Msg>) -> Result<(), Vec<Msg>> {
        let (frames, bytes) = sizes(&msgs);
        self.src().add_recv(msgs.len() as u64, frames, bytes);
        if let Fed::Replies(_) = &self.fed {
            return self.send_replies(msgs, frames).await;
        }
        self.tee(&msgs, frames);
        match &mut self.fed {
            Fed::Down(down) => down.relay(Origin::Local, &msgs),
            Fed::Tasks(_) => return self.place_tasks(msgs).await,
            Fed::Off | Fed::Up(_) | Fed::Replies(_) => {}
        }
        self.deliver(msgs).await
    }

    /// ROUTER/DEALER federated, replies read from this replica's workers: the ones for another
    /// replica's clients go back to it (captured there, where their requests entered), the ones
    /// whose entry replica is gone are dropped as unroutable, the rest are captured and routed
    /// here.
    async fn send_replies(&mut self, msgs: Vec<Msg>, frames: u64) -> Result<(), Vec<Msg>> {
        let Fed::Replies(replies) = &mut self.fed else { return self.deliver(msgs).await };
        let split = replies.relay(msgs);
        if split.unroutable_frames > 0 {
            self.counters.dropped(DropReason::Unroutable, split.unroutable_frames);
        }
        let local = frames - split.relayed_frames - split.unroutable_frames;
        self.tee(&split.local, local);
        if split.local.is_empty() {
            return Ok(());
        }
        self.deliver(split.local).await
    }

    /// PULL/PUSH federated: this replica's own workers take what they have room for, replicas
    /// with credit take the rest; what nobody can take waits here for room or credit, as a PUSH
    /// waits, so the producers are held back at their own high-water mark.
    async fn place_tasks(&mut self, mut msgs: Vec<Msg>) -> Result<(), Vec<Msg>> {
        loop {
            // A stopping replica that hands over keeps its own workers out of it.
            let room = if self.steer_recall() { 0 } else { self.dest.room() };
            let Fed::Tasks(tasks) = &mut self.fed else { return self.deliver(msgs).await };
            let (local, wait) = tasks.place(msgs, room);
            if !local.is_empty() {
                self.deliver(local).await?;
            }
            if wait.is_empty() {
                return Ok(());
            }
            msgs = wait;
            let Fed::Tasks(tasks) = &mut self.fed else { continue };
            let mut kill = self.kill.clone();
            // Room made, credit announced, or (a wake-up lost between the two reads) a tick.
            tokio::select! {
                _ = self.dest.changed() => {}
                _ = tasks.credited() => {}
                _ = tokio::time::sleep(FEDERATION_CREDIT_INTERVAL) => {}
                _ = kill.wait_for(|v| *v) => return Err(msgs),
            }
            self.announce_credit();
        }
    }

    /// Tells the other replicas this replica's workers and their room (PULL/PUSH federated
    /// only); whether the credit can change before something wakes the pump: it told a
    /// replica something new, or its workers still have tasks queued (their room grows).
    fn announce_credit(&mut self) -> bool {
        self.steer_recall();
        if let Fed::Tasks(_) = &self.fed {
            let room = self.dest.room();
            let workers = self.dest.peers();
            if let Fed::Tasks(tasks) = &mut self.fed {
                return tasks.announce(room, workers) || self.dest.backlog() > 0;
            }
        }
        false
    }

    /// A stopping federated replica takes back what its own workers were queued and not yet
    /// written while another replica can take it (`federation/drain.rs`), and says whether it
    /// does; its workers keep what was written to them.
    fn steer_recall(&mut self) -> bool {
        let Fed::Tasks(tasks) = &mut self.fed else { return false };
        let on = tasks.hands_over();
        self.dest.recall(on);
        on
    }

    /// Delivers what entered the federation at another replica (or the subscriptions upstream
    /// it asks for) to this replica's own peers: not captured (capture sees a message once, at
    /// the replica it entered; a reply is captured where its request entered, here) and never
    /// relayed again (the one-hop rule).
    async fn relayed(&mut self, item: Relayed) -> Result<(), Vec<Msg>> {
        let msgs = match item {
            Relayed::Publications(msgs) => {
                if let Fed::Down(down) = &mut self.fed {
                    down.relay(Origin::Replica, &msgs);
                }
                msgs
            }
            Relayed::Tasks(a) => {
                let n = a.msgs.len();
                if self.steer_recall() {
                    // Stopping: past this replica's workers to a survivor (a request's reply
                    // then comes back through here, to go on to its entry replica).
                    if let Fed::Tasks(tasks) = &mut self.fed {
                        tasks.taken(a.from, a.link, n);
                        tasks.handing_over(n);
                    }
                    return self.place_tasks(a.msgs.into_msgs()).await;
                }
                self.deliver_batch(a.msgs).await?;
                if let Fed::Tasks(tasks) = &mut self.fed {
                    tasks.taken(a.from, a.link, n);
                }
                return Ok(());
            }
            // Captured here, at the replica their requests entered. A reply to a request that
            // another replica placed here and this one handed over while stopping goes on to
            // that replica.
            Relayed::Replies(msgs) => {
                let msgs = match &mut self.fed {
                    Fed::Replies(replies) => {
                        let split = replies.relay(msgs);
                        if split.unroutable_frames > 0 {
                            self.counters.dropped(DropReason::Unroutable, split.unroutable_frames);
                        }
                        split.local
                    }
                    _ => msgs,
                };
                let frames = msgs.iter().map(|m| m.len() as u64).sum();
                self.tee(&msgs, frames);
                msgs
            }
            Relayed::Event(ev) => match &mut self.fed {
                Fed::Up(up) => up.event(ev),
                Fed::Off | Fed::Down(_) | Fed::Tasks(_) | Fed::Replies(_) => Vec::new(),
            },
        };
        if msgs.is_empty() {
            return Ok(());
        }
        self.deliver(msgs).await
    }

    async fn deliver(&mut self, msgs: Vec<Msg>) -> Result<(), Vec<Msg>> {
        let d = self.dest.send(msgs, &mut self.kill).await;
        self.delivered(d)
    }

    /// [`Pump::deliver`] for a batch in either form (tasks from a link).
    async fn deliver_batch(&mut self, batch: Batch) -> Result<(), Vec<Msg>> {
        let d = self.dest.send_batch(batch, &mut self.kill).await;
        self.delivered(d)
    }

    fn delivered(&self, d: Delivery) -> Result<(), Vec<Msg>> {
        self.dst().add_sent(d.sent_messages, d.sent_frames, d.sent_bytes);
        if d.cancelled.is_empty() { Ok(()) } else { Err(d.cancelled) }
    }

    /// ROUTER/DEALER federated, once this pump's own input ended (the drain): the links are
    /// still served until what they owe is settled. The reply pump routes the replies other
    /// replicas send until this replica's clients are gone (each closes behind its last reply);
    /// the request pump, which read its links to each replica's `END` like a PULL/PUSH one
    /// (`federation/drain.rs`), waits until its workers answered every request they took from
    /// the links (their connections stay open until then). The drain timeout bounds both.
    async fn serve_links_while_draining(&mut self) -> Result<(), Vec<Msg>> {
        let kill = self.kill.clone();
        match &mut self.fed {
            Fed::Replies(_) => {
                let clients = self.dest.handle();
                loop {
                    tokio::select! {
                        _ = wait_kill(kill.clone()) => return Ok(()),
                        _ = clients.connections_closed() => return Ok(()),
                        r = self.fed.recv() => match r {
                            Some(r) => self.relayed(r).await?,
                            None => return Ok(()),
                        },
                    }
                }
            }
            Fed::Tasks(tasks) if tasks.unanswered().is_some() => loop {
                self.resend_orphans().await?;
                self.steer_recall();
                let Fed::Tasks(tasks) = &mut self.fed else { return Ok(()) };
                if tasks.unanswered().unwrap_or(0) <= 0 {
                    return Ok(());
                }
                tokio::select! {
                    _ = wait_kill(kill.clone()) => return Ok(()),
                    r = tasks.recv() => match r {
                        Some(a) => self.relayed(Relayed::Tasks(a)).await?,
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
                }
            },
            _ => Ok(()),
        }
    }

    /// Requests read from a ROUTER peer that can no longer be answered: read, and dropped.
    fn unanswerable(&self, msgs: &[Msg]) {
        for m in msgs {
            let (f, b) = size_of(m);
            self.src().add_recv(1, f, b);
            self.counters.dropped(DropReason::PeerGone, f);
        }
    }

    /// Re-sends messages closed PUSH/DEALER peers left queued (already counted as sent), or,
    /// on a stopping federated replica that hands over, places them (and what its workers'
    /// writers gave back) on the other replicas.
    async fn resend_orphans(&mut self) -> Result<(), Vec<Msg>> {
        let orphans = self.dest.take_orphans();
        if orphans.is_empty() {
            return Ok(());
        }
        if self.steer_recall() {
            // Counted as sent when first queued: counted again where they go now.
            let (frames, bytes) = sizes(&orphans);
            self.dst().take_back_sent(orphans.len() as u64, frames, bytes);
            if let Fed::Tasks(tasks) = &self.fed {
                tasks.handing_over(orphans.len());
            }
            return self.place_tasks(orphans).await;
        }
        let d = self.dest.send(orphans, &mut self.kill).await;
        if d.cancelled.is_empty() { Ok(()) } else { Err(d.cancelled) }
    }

    /// After a kill: what the pump held and everything still queued in the source count as
    /// read and undelivered.
    fn abandon(&self, rx: &mut mpsc::Receiver<Inbound>, held: &[Msg]) {
        let mut frames: u64 = held.iter().map(|m| m.len() as u64).sum();
        rx.close();
        while let Ok(item) = rx.try_recv() {
            match item {
                Inbound::Batch(msgs, _credit) => {
                    for m in &msgs {
                        let (f, b) = size_of(m);
                        self.src().add_recv(1, f, b);
                        frames += f;
                    }
                }
                Inbound::Unanswerable(msgs) => self.unanswerable(&msgs),
                Inbound::Subscription { .. } | Inbound::PeerLeft(_) => {}
            }
        }
        self.counters.undelivered_msgs.fetch_add(frames, ORD);
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    mut rx: mpsc::Receiver<Inbound>,
    dest: Outlet,
    capture: Option<Arc<Mutex<Outlet>>>,
    counters: Arc<Counters>,
    front_to_back: bool,
    mut state: watch::Receiver<ProxyState>,
    kill: watch::Receiver<bool>,
    fed: Fed,
) {
    let mut p = Pump { dest, capture, counters, front_to_back, kill, fed };
    let mut links_open = !matches!(p.fed, Fed::Off);
    // A federated PULL/PUSH replica re-announces its workers' room on this tick. Once its
    // credit cannot change by itself (nothing new to tell, its workers' queues empty) the tick
    // sleeps until the pump moves a task, its workers or the member table change.
    let mut credit_tick = matches!(p.fed, Fed::Tasks(_)).then(|| {
        let mut t = tokio::time::interval(FEDERATION_CREDIT_INTERVAL);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let members = match &p.fed {
        Fed::Tasks(t) => Some(t.watch()),
        _ => None,
    };
    let mut credit_asleep = false;
    let mut table = SubscriptionTable::default();
    let mut moved = 0usize;
    loop {
        if let Err(held) = p.resend_orphans().await {
            p.abandon(&mut rx, &held);
            return;
        }
        if *state.borrow() == ProxyState::Paused {
            let mut k = p.kill.clone();
            tokio::select! {
                _ = state.wait_for(|s| *s != ProxyState::Paused) => {}
                _ = k.wait_for(|v| *v) => {}
            }
            continue;
        }
        if moved >= PUMP_BURST {
            moved = 0;
            tokio::task::yield_now().await;
        }
        let item = tokio::select! {
            biased;
            _ = wait_kill(p.kill.clone()) => {
                p.abandon(&mut rx, &[]);
                return;
            }
            _ = p.dest.orphaned() => continue,
            // A PAUSE takes effect before the next read, not after it.
            _ = state.changed() => continue,
            it = rx.recv() => it,
            _ = tick(&mut credit_tick), if !credit_asleep => {
                credit_asleep = !p.announce_credit();
                continue;
            }
            _ = credit_wake(&p.dest, members.as_ref()), if credit_asleep => {
                credit_asleep = false;
                continue;
            }
            r = p.fed.recv(), if links_open => match r {
                Some(r) => {
                    moved += 1;
                    credit_asleep = false;
                    if let Err(held) = p.relayed(r).await {
                        p.abandon(&mut rx, &held);
                        return;
                    }
                    continue;
                }
                None => {
                    links_open = false;
                    continue;
                }
            },
        };
        let Some(item) = item else { break };
        credit_asleep = false;
        // Local input comes first in the select; one batch from the links follows each local
        // one, so neither starves the other.
        if let Some(r) = p.fed.try_recv()
            && let Err(held) = p.relayed(r).await
        {
            p.abandon(&mut rx, &held);
            return;
        }
        let msgs = match item {
            // The batch's credit goes back to its peer as the pump takes it, so that peer's
            // connection reads the next batch while this one is forwarded; a destination that
            // waits holds this batch, and the peer is read no further than its rcvhwm beyond.
            Inbound::Batch(msgs, credit) => {
                drop(credit);
                msgs
            }
            Inbound::Subscription { peer, subscribe, topic } if matches!(p.fed, Fed::Up(_)) => {
                let Fed::Up(up) = &mut p.fed else { continue };
                match up.local(peer, subscribe, topic) {
                    Some(m) => vec![m],
                    None => continue,
                }
            }
            Inbound::PeerLeft(peer) if matches!(p.fed, Fed::Up(_)) => {
                let Fed::Up(up) = &mut p.fed else { continue };
                up.local_left(peer)
            }
            Inbound::Subscription { peer, subscribe, topic } => {
                let first_or_last = if subscribe {
                    table.subscribe(peer, topic.clone())
                } else {
                    table.unsubscribe(peer, &topic)
                };
                if !first_or_last {
                    continue;
                }
                vec![subscription_message(subscribe, &topic)]
            }
            Inbound::PeerLeft(peer) => {
                let released: Vec<Bytes> = table.remove_peer(peer);
                released.iter().map(|t| subscription_message(false, t)).collect()
            }
            Inbound::Unanswerable(msgs) => {
                p.unanswerable(&msgs);
                continue;
            }
        };
        moved += msgs.len();
        if let Err(held) = p.forward(msgs).await {
            p.abandon(&mut rx, &held);
            return;
        }
    }
    // What the links handed over before they stopped is delivered too; a PULL/PUSH replica
    // reads its links to each replica's END (`federation/drain.rs`), until killed.
    loop {
        if let Err(held) = p.resend_orphans().await {
            p.abandon(&mut rx, &held);
            return;
        }
        p.steer_recall();
        // Read before the flush: a link that ended has handed over all it read.
        let open = match &mut p.fed {
            Fed::Tasks(t) => {
                t.answer_leaving();
                t.links_in() > 0
            }
            _ => false,
        };
        while let Some(r) = p.fed.try_recv() {
            if let Err(held) = p.relayed(r).await {
                p.abandon(&mut rx, &held);
                return;
            }
        }
        if !open {
            break;
        }
        tokio::select! {
            _ = wait_kill(p.kill.clone()) => {
                p.abandon(&mut rx, &[]);
                return;
            }
            r = p.fed.recv() => {
                if let Some(r) = r
                    && let Err(held) = p.relayed(r).await
                {
                    p.abandon(&mut rx, &held);
                    return;
                }
            }
            _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
        }
    }
    if let Err(held) = p.serve_links_while_draining().await {
        p.abandon(&mut rx, &held);
        return;
    }
    // Input ended (the proxy is stopping): wait until the destination (and the links) have
    // written out everything, re-sending what closed peers hand back, until killed.
    loop {
        if let Err(held) = p.resend_orphans().await {
            p.abandon(&mut rx, &held);
            return;
        }
        p.steer_recall();
        if let Fed::Tasks(t) = &mut p.fed {
            t.answer_leaving();
        }
        if p.dest.backlog() <= 0 && p.fed.backlog() == 0 {
            // Its peers may now close (see `sockets/drain.rs`).
            p.dest.handle().end_input();
            return;
        }
        tokio::select! {
            _ = wait_kill(p.kill.clone()) => return,
            _ = p.dest.changed() => {}
            _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
        }
    }
}

/// PAUSE and RESUME across the federation: this replica's own steering (control socket, pause
/// file) is told to every replica; another replica's is followed and told nobody (one hop).
async fn steer_federation(
    fed: Federation,
    state: watch::Sender<ProxyState>,
    mut kill: watch::Receiver<bool>,
) {
    let mut ours = state.subscribe();
    let mut theirs = fed.remote_states();
    // The state this task set from a replica's message: its change is not told on.
    let mut followed: Option<ProxyState> = None;
    let initial = *ours.borrow_and_update();
    if initial == ProxyState::Paused {
        fed.tell_state(true);
    }
    loop {
        tokio::select! {
            r = ours.changed() => {
                if r.is_err() {
                    return;
                }
                let now = *ours.borrow_and_update();
                if now == ProxyState::Terminated {
                    return;
                }
                if followed.take() == Some(now) {
                    continue;
                }
                fed.tell_state(now == ProxyState::Paused);
            }
            r = theirs.changed() => {
                if r.is_err() {
                    return;
                }
                let Some(paused) = *theirs.borrow_and_update() else { continue };
                let to = state::of_paused(paused);
                if state::set(&state, to) {
                    followed = Some(to);
                }
            }
            _ = kill.wait_for(|v| *v) => return,
        }
    }
}

/// Spawns a pump whose end, even by panic, raises `ended`.
fn spawn_watched(
    ended: &watch::Sender<bool>,
    pump: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    struct RaiseOnDrop(watch::Sender<bool>);
    impl Drop for RaiseOnDrop {
        fn drop(&mut self) {
            self.0.send_replace(true);
        }
    }
    let guard = RaiseOnDrop(ended.clone());
    tokio::spawn(async move {
        let _guard = guard;
        pump.await;
    })
}

/// Resolves when a sleeping credit tick may have something to announce: the destination's
/// workers or the member table changed. A slow tick bounds the sleep, should a change slip
/// in between the last announcement and this wait.
async fn credit_wake(dest: &Outlet, members: Option<&MembersWatch>) {
    let Some(members) = members else { return std::future::pending().await };
    tokio::select! {
        _ = dest.changed() => {}
        _ = members.changed() => {}
        _ = tokio::time::sleep(FEDERATION_CREDIT_IDLE_INTERVAL) => {}
    }
}

/// Resolves at the interval's next tick; never without one.
async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn wait_kill(mut k: watch::Receiver<bool>) {
    let _ = k.wait_for(|v| *v).await;
}
