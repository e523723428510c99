//! Federation: replicas of one proxy that act as one (docs/federation.md). Each replica binds a
//! federation endpoint and links to every other replica; what a replica's own peers send is
//! relayed to the replicas that want it, and what comes from a replica goes only to this
//! replica's own peers (the one-hop rule, `route.rs`). XSUB/XPUB: subscriptions of a replica's
//! own subscribers are announced to the others, and publications cross a link only to a replica
//! that announced a matching subscription. PULL/PUSH: tasks go to a replica's own workers first,
//! then to the others by the credit they announce (`credit.rs`). ROUTER/DEALER: requests are
//! placed as tasks are, and replies retrace them to the entry replica (`request.rs`).
//!
//! `frame.rs` is the link's message format, `route.rs` and `credit.rs` the routing decisions
//! (pure), `members.rs` the other replicas and their queues, `link.rs` the connections. The
//! pumps hold a [`DownSide`] (publications) and an [`UpSide`] (subscriptions), or a
//! [`TaskSide`] (tasks); a proxy started without a federation holds none and runs as before.

mod batch;
mod beat;
pub(crate) mod credit;
pub mod discover;
mod drain;
pub(crate) mod frame;
mod link;
pub(crate) mod members;
pub(crate) mod request;
pub(crate) mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::engine::curve::Security;
use crate::engine::net;
use crate::engine::tunables::{FEDERATION_LINK_HWM, INBOUND_QUEUE_BATCHES};
use crate::policy::sockets::{Batch, Lifecycle, Msg, OpenError};
use crate::policy::subscriptions::PeerId;
use crate::wire::zmtp::subscription_message;
use credit::{Ledger, Place};
use frame::MemberTag;
pub use members::MemberCounts;
use members::{LinkOut, LinkQueue, Member, MemberCounters, Members};
pub use request::ReplySide;
pub use route::Origin;
use route::{Interest, LinkId};
use zmq_proxy_api::endpoint::Endpoint;

/// `--federation-*`: this replica's name, where it accepts the other replicas' links, the
/// replicas it dials, and what the links speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationConfig {
    pub id: String,
    /// `XSUB/XPUB`, `PULL/PUSH` or `ROUTER/DEALER`: what every replica of the federation runs.
    pub pattern: &'static str,
    pub bind: Endpoint,
    pub peers: Vec<Endpoint>,
    /// CURVE server side on accepted links, client side on dialed ones; NULL without keys.
    pub security: Security,
}

/// What a link tells the subscription pump.
#[derive(Debug)]
pub enum UpEvent {
    /// A replica announced (or cancelled) a subscription of its own subscribers.
    Subscription { link: LinkId, subscribe: bool, topic: Bytes },
    /// An inbound connection ended: its announcements are released.
    LinkGone(LinkId),
    /// An outbound connection to that replica came up: it is told this replica's topics.
    OutboundUp(MemberTag),
}

/// A running federation, as the proxy and the ops layer see it.
#[derive(Clone)]
pub struct Federation {
    members: Arc<Members>,
    pub local_addr: SocketAddr,
}

/// Members seen, links up, and the link counters, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FederationSnapshot {
    pub members: usize,
    pub links_out_up: usize,
    pub connections: i64,
    pub relayed_out: u64,
    pub relayed_in: u64,
    pub dropped_link_full: u64,
    pub dropped_link_down: u64,
    pub protocol_errors: u64,
    pub heartbeat_timeouts: u64,
    pub handed_over: u64,
}

impl Federation {
    /// This replica's `--federation-id`.
    pub fn id(&self) -> &str {
        &self.members.own_id
    }

    /// `XSUB/XPUB` or `PULL/PUSH`.
    pub fn pattern(&self) -> &'static str {
        self.members.pattern
    }

    /// Tells every replica that this one was paused or resumed by its own steering.
    pub fn tell_state(&self, paused: bool) {
        self.members.tell_state(paused);
    }

    /// The last PAUSE (`Some(true)`) or RESUME another replica sent.
    pub fn remote_states(&self) -> tokio::sync::watch::Receiver<Option<bool>> {
        self.members.remote_states()
    }

    /// Per member: its id, whether the link to it and the link from it are up.
    pub fn link_states(&self) -> Vec<(Arc<str>, bool, bool)> {
        self.members.link_states()
    }

    /// Per member: its id and its link counters.
    pub fn member_counts(&self) -> Vec<(Arc<str>, MemberCounts)> {
        self.members.member_counts()
    }

    pub fn snapshot(&self) -> FederationSnapshot {
        let c = &self.members.counters;
        let (members, links_out_up) = self.members.seen_and_up();
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        FederationSnapshot {
            members,
            links_out_up,
            connections: c.connections.load(Ordering::Relaxed),
            relayed_out: r(&c.relayed_out),
            relayed_in: r(&c.relayed_in),
            dropped_link_full: r(&c.dropped_link_full),
            dropped_link_down: r(&c.dropped_link_down),
            protocol_errors: r(&c.protocol_errors),
            heartbeat_timeouts: r(&c.heartbeat_timeouts),
            handed_over: r(&c.handed_over),
        }
    }
}

/// Messages a link read from another replica, in the order they crossed it.
pub struct Arrival {
    pub from: MemberTag,
    /// The inbound connection they came over (a reconnect starts the counts over).
    pub link: LinkId,
    pub msgs: Batch,
}

/// A started federation; its pumps take the halves for their pattern.
pub struct Started {
    pub federation: Federation,
    arrivals: mpsc::Receiver<Arrival>,
    events: mpsc::Receiver<UpEvent>,
    replies: mpsc::Receiver<Arrival>,
}

impl Started {
    /// XSUB/XPUB: the publication pump's half and the subscription pump's half.
    pub fn pubsub(self) -> (Federation, DownSide, UpSide) {
        let members = self.federation.members.clone();
        let down = DownSide {
            members: members.clone(),
            version: u64::MAX,
            cache: Vec::new(),
            rx: self.arrivals,
            targets: Vec::new(),
            staged: Vec::new(),
            room: Vec::new(),
        };
        let up = UpSide { members, interest: Interest::default(), rx: self.events };
        (self.federation, down, up)
    }

    /// PULL/PUSH: the task pump's half. Nothing reads link events then (a link task's send
    /// to the dropped receiver fails at once and is ignored).
    pub fn pipeline(self) -> (Federation, TaskSide) {
        let (fed, tasks, _) = self.tasks(false);
        (fed, tasks)
    }

    /// ROUTER/DEALER: the request pump's half (requests are placed as tasks are) and the
    /// reply pump's half.
    pub fn reqrep(self) -> (Federation, TaskSide, ReplySide) {
        self.tasks(true)
    }

    fn tasks(self, requests: bool) -> (Federation, TaskSide, ReplySide) {
        let replies = ReplySide::new(self.federation.members.clone(), self.replies);
        let tasks = TaskSide {
            members: self.federation.members.clone(),
            version: u64::MAX,
            cache: Vec::new(),
            rx: self.arrivals,
            sent: HashMap::new(),
            taken: HashMap::new(),
            announced: HashMap::new(),
            places: Vec::new(),
            ledgers: Vec::new(),
            requests,
            ended: std::collections::HashSet::new(),
        };
        (self.federation, tasks, replies)
    }
}

/// Binds the federation endpoint, accepts the other replicas' links and dials every peer.
/// Peers whose host is a name are followed by DNS (`discover.rs`), the others dialed as given.
pub async fn start(
    cfg: &FederationConfig,
    dns: discover::Dns,
    life: &Lifecycle,
) -> Result<Started, OpenError> {
    let members = Arc::new(Members::new(&cfg.id, cfg.pattern));
    let (pub_tx, pub_rx) = mpsc::channel(INBOUND_QUEUE_BATCHES);
    let (ev_tx, ev_rx) = mpsc::channel(INBOUND_QUEUE_BATCHES);
    let (reply_tx, reply_rx) = mpsc::channel(INBOUND_QUEUE_BATCHES);
    let open_error = |reason: String| OpenError::bind(cfg.bind.to_string(), reason);
    let (listener, _) =
        net::bind(&cfg.bind).await.map_err(|e| open_error(net::describe_bind_error(&e)))?;
    let local_addr = listener.local_addr().map_err(|e| open_error(e.to_string()))?;
    let sinks = link::Sinks {
        members: members.clone(),
        publications: pub_tx,
        events: ev_tx,
        replies: reply_tx,
    };
    let accepted = cfg.security.accepted.clone();
    tokio::spawn(link::accept_loop(listener, accepted, sinks.clone(), life.clone()));
    tokio::spawn(drain::leave_on_stop(members.clone(), life.clone()));
    for p in &cfg.peers {
        let (mech, sinks, life) = (cfg.security.connected.clone(), sinks.clone(), life.clone());
        if discover::is_name(&p.host) {
            let dns = dns.clone();
            tokio::spawn(discover::follow(p.host.clone(), p.port, dns, mech, sinks, life));
        } else {
            tokio::spawn(link::dial_loop(p.host.clone(), p.port, mech, sinks, life, None));
        }
    }
    tracing::info!(id = %cfg.id, bind = %cfg.bind, peers = cfg.peers.len(), "federation started");
    let federation = Federation { members, local_addr };
    Ok(Started { federation, arrivals: pub_rx, events: ev_rx, replies: reply_rx })
}

/// The publication pump's half: relays what this replica's publishers sent to the replicas
/// that want it, and yields what the replicas relayed here.
pub struct DownSide {
    members: Arc<Members>,
    version: u64,
    cache: Vec<Member>,
    rx: mpsc::Receiver<Arrival>,
    targets: Vec<usize>,
    staged: Vec<Vec<LinkOut>>,
    room: Vec<usize>,
}

impl DownSide {
    /// Queues each publication to every replica whose announced topics match it, if its origin
    /// allows it to cross a link at all (the one-hop rule: only this replica's own publishers').
    pub fn relay(&mut self, origin: Origin, msgs: &[Msg]) {
        if !origin.may_cross_a_link() {
            return;
        }
        let v = self.members.version();
        if v != self.version {
            self.members.snapshot(&mut self.cache);
            self.version = v;
            self.staged.resize_with(self.cache.len(), Vec::new);
        }
        if self.cache.iter().all(|m| m.topics.is_empty()) {
            return;
        }
        let topics: Vec<&[Bytes]> = self.cache.iter().map(|m| &m.topics[..]).collect();
        self.room.clear();
        self.room.extend(self.cache.iter().map(|m| match &m.out {
            Some(q) => FEDERATION_LINK_HWM.saturating_sub(q.queued.load(Ordering::Acquire)),
            None => 0,
        }));
        let (mut relayed, mut full, mut down) = (0u64, 0u64, 0u64);
        for m in msgs {
            let Some(first) = m.first() else { continue };
            route::publication_targets(origin, first, &topics, &mut self.targets);
            if self.targets.is_empty() {
                continue;
            }
            let shared = Arc::new(m.clone());
            for &i in &self.targets {
                let mc = &self.cache[i].counters;
                if self.cache[i].out.is_none() {
                    down += 1;
                    mc.dropped_link_down.fetch_add(1, Ordering::Relaxed);
                } else if self.room[i] == 0 {
                    full += 1;
                    mc.dropped_link_full.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.room[i] -= 1;
                    relayed += 1;
                    self.staged[i].push(LinkOut::Publish(shared.clone()));
                }
            }
        }
        for (i, batch) in self.staged.iter_mut().enumerate() {
            if let (false, Some(q)) = (batch.is_empty(), &self.cache[i].out) {
                MemberCounters::add(&self.cache[i].counters.relayed_out, batch.len() as u64);
                members::send(q, std::mem::take(batch));
            }
        }
        let c = &self.members.counters;
        c.relayed_out.fetch_add(relayed, Ordering::Relaxed);
        c.dropped_link_full.fetch_add(full, Ordering::Relaxed);
        c.dropped_link_down.fetch_add(down, Ordering::Relaxed);
    }

    /// The next batch relayed by a replica; `None` once no link task is left.
    pub async fn recv(&mut self) -> Option<Vec<Msg>> {
        self.rx.recv().await.map(|a| a.msgs.into_msgs())
    }

    pub fn try_recv(&mut self) -> Option<Vec<Msg>> {
        self.rx.try_recv().ok().map(|a| a.msgs.into_msgs())
    }

    /// Publications queued to other replicas and not yet written.
    pub fn backlog(&self) -> usize {
        self.members.backlog()
    }
}

/// The subscription pump's half: announces this replica's own subscriptions to the other
/// replicas and turns theirs into subscriptions upstream (never announced further).
pub struct UpSide {
    members: Arc<Members>,
    interest: Interest,
    rx: mpsc::Receiver<UpEvent>,
}

fn upstream((subscribe, topic): (bool, Bytes)) -> Msg {
    subscription_message(subscribe, &topic)
}

impl UpSide {
    /// A subscriber of this replica (un)subscribed: the subscription message for its
    /// publishers, if it changes what they are asked for.
    pub fn local(&mut self, peer: PeerId, subscribe: bool, topic: Bytes) -> Option<Msg> {
        let e = self.interest.local(peer, subscribe, topic);
        if let Some((s, t)) = &e.announce {
            self.members.announce(*s, t);
        }
        e.upstream.map(upstream)
    }

    /// A subscriber of this replica left.
    pub fn local_left(&mut self, peer: PeerId) -> Vec<Msg> {
        let mut out = Vec::new();
        for e in self.interest.local_left(peer) {
            if let Some((s, t)) = &e.announce {
                self.members.announce(*s, t);
            }
            out.extend(e.upstream.map(upstream));
        }
        out
    }

    /// What a link reported: the subscription messages it means for this replica's publishers.
    pub fn event(&mut self, ev: UpEvent) -> Vec<Msg> {
        match ev {
            UpEvent::Subscription { link, subscribe, topic } => {
                self.interest.remote(link, subscribe, topic).map(upstream).into_iter().collect()
            }
            UpEvent::LinkGone(link) => {
                self.interest.link_gone(link).into_iter().map(|t| upstream((false, t))).collect()
            }
            UpEvent::OutboundUp(tag) => {
                let topics = self.interest.local_topics();
                if let (false, Some(q)) = (topics.is_empty(), self.members.queue_of(tag)) {
                    let subs = topics.into_iter().map(|t| LinkOut::Subscription(true, t));
                    members::send(&q, subs.collect());
                }
                Vec::new()
            }
        }
    }

    pub async fn recv(&mut self) -> Option<UpEvent> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<UpEvent> {
        self.rx.try_recv().ok()
    }
}

/// Changes to the member table, watched from outside the task pump's half.
pub struct MembersWatch(Arc<Members>);

impl MembersWatch {
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }
}

/// The task pump's half (PULL/PUSH): places what this replica's producers sent on its own
/// workers first, then on the replicas with credit; yields what replicas placed here; and
/// announces this replica's own credit to every replica.
pub struct TaskSide {
    members: Arc<Members>,
    version: u64,
    cache: Vec<Member>,
    rx: mpsc::Receiver<Arrival>,
    /// Per replica: the outbound queue the count is for, and tasks sent over it.
    sent: HashMap<MemberTag, (usize, u64)>,
    /// Per replica: the inbound connection the count is for, and its tasks handed to this
    /// replica's own workers.
    taken: HashMap<MemberTag, (LinkId, u64)>,
    /// Per replica: the outbound queue and the credit last announced over it.
    announced: HashMap<MemberTag, (usize, (u64, u64, u64))>,
    places: Vec<Place>,
    ledgers: Vec<Ledger>,
    /// ROUTER/DEALER: the tasks are requests (sent as `REQUEST`).
    requests: bool,
    /// Outbound queues to leaving replicas that were sent their `END`.
    ended: std::collections::HashSet<usize>,
}

fn queue_key(q: &Arc<LinkQueue>) -> usize {
    Arc::as_ptr(q) as usize
}

impl TaskSide {
    fn refresh(&mut self) {
        let v = self.members.version();
        if v != self.version {
            self.members.snapshot(&mut self.cache);
            self.version = v;
            for q in drain::ends_due(&self.cache, &mut self.ended) {
                members::send(&q, vec![LinkOut::End]);
            }
        }
    }

    /// Splits a batch of tasks from this replica's own producers: the ones for its own workers
    /// (at most `local_room`), queued to replicas by their credit, and the ones nobody can take
    /// now, both in order.
    pub fn place(&mut self, msgs: Vec<Msg>, local_room: usize) -> (Vec<Msg>, Vec<Msg>) {
        self.refresh();
        let sent = &self.sent;
        self.ledgers.clear();
        self.ledgers.extend(self.cache.iter().map(|m| match (&m.out, m.credit) {
            (Some(q), Some((room, taken, workers))) if !m.leaving => {
                let sent = match sent.get(&m.tag) {
                    Some((k, n)) if *k == queue_key(q) => *n,
                    _ => 0,
                };
                Ledger { room, taken, sent, workers }
            }
            _ => Ledger::default(),
        }));
        let runs = credit::place(msgs.len(), local_room, &mut self.ledgers, &mut self.places);
        let mut staged: Vec<Vec<Msg>> = self.cache.iter().map(|_| Vec::new()).collect();
        let (local, wait) = match runs {
            // Split in three runs, not task by task.
            Some((here, to, sent)) => {
                let mut local = msgs;
                let wait = local.split_off(here + sent);
                let remote = local.split_off(here);
                if let (false, Some(s)) = (remote.is_empty(), staged.get_mut(to)) {
                    *s = remote;
                }
                (local, wait)
            }
            None => {
                let (mut local, mut wait) = (Vec::new(), Vec::new());
                for (m, p) in msgs.into_iter().zip(&self.places) {
                    match p {
                        Place::Local => local.push(m),
                        Place::Replica(i) => staged[*i].push(m),
                        Place::Wait => wait.push(m),
                    }
                }
                (local, wait)
            }
        };
        // Each replica's tasks go as one run, written into the link's batch in one step.
        let wrap = if self.requests { LinkOut::Requests } else { LinkOut::Tasks };
        let mut relayed = 0u64;
        for (i, run) in staged.into_iter().enumerate() {
            if let (false, Some(q)) = (run.is_empty(), &self.cache[i].out) {
                relayed += run.len() as u64;
                MemberCounters::add(&self.cache[i].counters.relayed_out, run.len() as u64);
                members::send(q, vec![wrap(run)]);
                self.sent.insert(self.cache[i].tag, (queue_key(q), self.ledgers[i].sent));
            }
        }
        self.members.counters.relayed_out.fetch_add(relayed, Ordering::Relaxed);
        (local, wait)
    }

    /// `n` tasks that came from `from` over `link` were handed to this replica's own workers.
    pub fn taken(&mut self, from: MemberTag, link: LinkId, n: usize) {
        if self.requests {
            self.members.unanswered.fetch_add(n as i64, Ordering::AcqRel);
        }
        let e = self.taken.entry(from).or_insert((link, 0));
        if e.0 != link {
            *e = (link, 0);
        }
        e.1 += n as u64;
    }

    /// Tells every replica this replica's credit, `room` tasks for its `workers`, where it
    /// changed since the last announcement over the same connection; whether it told any.
    pub fn announce(&mut self, room: usize, workers: usize) -> bool {
        self.refresh();
        let mut told = false;
        let (room, workers) = (room as u64, workers as u64);
        for m in &self.cache {
            let Some(q) = &m.out else { continue };
            let taken = self.taken.get(&m.tag).map_or(0, |t| t.1);
            let now = (queue_key(q), (room, taken, workers));
            if self.announced.get(&m.tag) != Some(&now) {
                members::send(q, vec![LinkOut::Credit(room, taken, workers)]);
                self.announced.insert(m.tag, now);
                told = true;
            }
        }
        told
    }

    /// What wakes a pump whose credit tick sleeps: changes to the member table.
    pub fn watch(&self) -> MembersWatch {
        MembersWatch(self.members.clone())
    }

    /// ROUTER/DEALER: requests from other replicas this replica's workers have not answered
    /// yet; `None` for tasks, which get no answer.
    pub fn unanswered(&self) -> Option<i64> {
        self.requests.then(|| self.members.unanswered.load(Ordering::Acquire))
    }

    /// Resolves when a replica announced credit.
    pub async fn credited(&self) {
        self.members.credited.notified().await;
    }

    pub async fn recv(&mut self) -> Option<Arrival> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Arrival> {
        self.rx.try_recv().ok()
    }

    /// Tasks queued to other replicas and not yet written.
    pub fn backlog(&self) -> usize {
        self.members.backlog()
    }

    /// Inbound links up that have not sent their `END`: a stopping replica reads them to it.
    pub fn links_in(&self) -> usize {
        self.members.unended.load(Ordering::Acquire)
    }

    /// Whether this replica, stopping, places what its own workers were queued (and what the
    /// links bring) on the other replicas instead (`drain.rs`).
    pub fn hands_over(&mut self) -> bool {
        if !self.members.stopping.load(Ordering::Acquire) {
            return false;
        }
        self.refresh();
        drain::hands_over(&self.members, &self.cache)
    }

    /// `n` tasks were taken back from this replica's own workers, or kept from them, to be
    /// placed on the other replicas.
    pub fn handing_over(&self, n: usize) {
        self.members.counters.handed_over.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Sends `END` to the replicas that said they are leaving, as placing tasks does; for a
    /// pump that places no more (replicas stopping together each wait for the others' `END`).
    pub fn answer_leaving(&mut self) {
        self.refresh();
    }
}
