//! The replicas this one is linked to: per member, the queue of its outbound connection (when
//! up) and the topics its inbound connections announced. Shared by the link tasks (which change
//! it) and the two pumps (which read a snapshot, refreshed only when the version moves).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

use super::frame::MemberTag;
use super::route::LinkId;
use crate::policy::sockets::Msg;

/// What one outbound link connection writes, in order.
pub enum LinkOut {
    /// A subscription change of this replica's own subscribers.
    Subscription(bool, Bytes),
    /// A publication read from this replica's own publishers (shared by every link it goes to).
    Publish(Arc<Msg>),
    /// Tasks read from this replica's own producers, in order: a run of one read batch is one
    /// item, so the link writes it into its batch without a step per task.
    Tasks(Vec<Msg>),
    /// This replica's credit for the receiver: its own workers' room, how many of the
    /// receiver's tasks it has handed to them, and how many workers it has.
    Credit(u64, u64, u64),
    /// This replica was paused (`true`) or resumed by its own control socket or pause file.
    State(bool),
    /// This replica is stopping: place no more tasks on it (`drain.rs`).
    Leaving,
    /// No task follows on this connection (the answer to `Leaving`).
    End,
    /// Requests read from this replica's own clients (ROUTER/DEALER), in order, as tasks are.
    Requests(Vec<Msg>),
    /// A reply for the receiver's client, read from this replica's own workers.
    Reply(Msg),
    /// A ZMTP command (the link's heartbeat PING or PONG), its body unframed.
    Command(Bytes),
}

impl LinkOut {
    /// How many peers' messages it carries (counted when lost); none for link control.
    pub fn messages(&self) -> usize {
        match self {
            LinkOut::Publish(_) | LinkOut::Reply(_) => 1,
            LinkOut::Tasks(m) | LinkOut::Requests(m) => m.len(),
            _ => 0,
        }
    }

    /// What it adds to its queue's count: its messages, or one for link control.
    pub fn queued(&self) -> usize {
        self.messages().max(1)
    }
}

/// One member's link counters: the `member` label's share of [`LinkCounters`]. Members are the
/// few replicas of one federation, so the label's values stay few.
#[derive(Default)]
pub struct MemberCounters {
    pub relayed_out: AtomicU64,
    pub relayed_in: AtomicU64,
    pub dropped_link_full: AtomicU64,
    pub dropped_link_down: AtomicU64,
    /// Link connections to or from it closed because it went silent past the heartbeat bound.
    pub heartbeat_timeouts: AtomicU64,
}

/// A snapshot of one member's [`MemberCounters`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounts {
    pub relayed_out: u64,
    pub relayed_in: u64,
    pub dropped_link_full: u64,
    pub dropped_link_down: u64,
    pub heartbeat_timeouts: u64,
}

impl MemberCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> MemberCounts {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemberCounts {
            relayed_out: r(&self.relayed_out),
            relayed_in: r(&self.relayed_in),
            dropped_link_full: r(&self.dropped_link_full),
            dropped_link_down: r(&self.dropped_link_down),
            heartbeat_timeouts: r(&self.heartbeat_timeouts),
        }
    }
}

/// One outbound connection's queue: unbounded for subscriptions (small, never dropped), bounded
/// for publications by [`crate::engine::tunables::FEDERATION_LINK_HWM`], checked by the sender.
pub struct LinkQueue {
    pub tx: mpsc::UnboundedSender<Vec<LinkOut>>,
    pub queued: AtomicUsize,
}

/// One other replica.
#[derive(Clone)]
pub struct Member {
    pub tag: MemberTag,
    /// Its `--federation-id`: the `member` label of its metrics.
    pub id: Arc<str>,
    /// Inbound connections from it that are up (more than one only while it reconnects).
    pub inbound: usize,
    pub out: Option<Arc<LinkQueue>>,
    /// The union of what its inbound connections announced, replaced whole on change.
    pub topics: Arc<Vec<Bytes>>,
    /// Its last `CREDIT` (room, taken, workers), while an inbound connection from it is up.
    pub credit: Option<(u64, u64, u64)>,
    /// Its link counters, kept across reconnects.
    pub counters: Arc<MemberCounters>,
    /// It said it is stopping: no task is placed on it.
    pub leaving: bool,
    by_link: HashMap<LinkId, HashSet<Bytes>>,
}

/// Link counters, for logs and metrics.
#[derive(Default)]
pub struct LinkCounters {
    /// Publications queued to other replicas, per copy.
    pub relayed_out: AtomicU64,
    /// Publications read from other replicas.
    pub relayed_in: AtomicU64,
    /// Publications a replica wanted that its full link queue could not take.
    pub dropped_link_full: AtomicU64,
    /// Publications queued to a link whose connection ended before they were written.
    pub dropped_link_down: AtomicU64,
    /// Link messages refused as malformed or breaking the one-hop rule; the link is closed.
    pub protocol_errors: AtomicU64,
    /// Link connections up right now, both directions counted.
    pub connections: AtomicI64,
    /// Link connections closed because the other replica went silent past the heartbeat bound.
    pub heartbeat_timeouts: AtomicU64,
    /// Tasks or requests a stopping replica took back from its own workers (queued, not yet
    /// written), or kept from them, and placed on the other replicas (`drain.rs`).
    pub handed_over: AtomicU64,
}

pub struct Members {
    pub own_id: Arc<str>,
    /// The pattern this replica runs (`XSUB/XPUB`, `PULL/PUSH`), told in HELLO.
    pub pattern: &'static str,
    pub own: MemberTag,
    inner: Mutex<Vec<Member>>,
    version: AtomicU64,
    next_link: AtomicU64,
    pub counters: LinkCounters,
    /// A replica announced credit: a task pump waiting for room may place its tasks now.
    pub credited: Notify,
    /// The member table changed (a link up or down, a replica leaving): a task pump whose
    /// credit tick sleeps wakes to announce over a new link or answer a leaving replica.
    pub changed: Notify,
    /// ROUTER/DEALER: requests other replicas sent that this replica's workers took and have
    /// not answered yet; a draining replica keeps its workers until it is zero.
    pub unanswered: AtomicI64,
    /// Whether this replica is paused, as the other replicas were last told.
    paused: AtomicBool,
    /// The last PAUSE (`true`) or RESUME a replica sent.
    remote_state: watch::Sender<Option<bool>>,
    /// Inbound connections up that have not sent `END` (`drain.rs`).
    pub unended: AtomicUsize,
    /// This replica is stopping: it told the others it is leaving (`drain.rs`).
    pub stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind the lock: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an outbound connection was not registered.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address leads back to this replica.
    Itself,
    /// That replica already has an outbound connection (two addresses reach it).
    Duplicate,
}

impl Members {
    pub fn new(own_id: &str, pattern: &'static str) -> Self {
        Members {
            own_id: Arc::from(own_id),
            pattern,
            own: super::frame::member_tag(own_id),
            inner: Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            next_link: AtomicU64::new(1),
            counters: LinkCounters::default(),
            credited: Notify::new(),
            changed: Notify::new(),
            unanswered: AtomicI64::new(0),
            paused: AtomicBool::new(false),
            remote_state: watch::channel(None).0,
            unended: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn snapshot(&self, into: &mut Vec<Member>) {
        into.clone_from(&lock(&self.inner));
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn with_member<R>(&self, tag: MemberTag, id: &str, f: impl FnOnce(&mut Member) -> R) -> R {
        let mut all = lock(&self.inner);
        let i = match all.iter().position(|m| m.tag == tag) {
            Some(i) => i,
            None => {
                all.push(Member {
                    tag,
                    id: Arc::from(id),
                    inbound: 0,
                    out: None,
                    topics: Arc::new(Vec::new()),
                    credit: None,
                    counters: Arc::default(),
                    leaving: false,
                    by_link: HashMap::new(),
                });
                all.len() - 1
            }
        };
        let r = f(&mut all[i]);
        drop(all);
        self.bump();
        r
    }

    /// Registers an outbound connection to the replica `id`.
    pub fn outbound_up(
        &self,
        tag: MemberTag,
        id: &str,
        queue: Arc<LinkQueue>,
    ) -> Result<(), Refused> {
        if tag == self.own {
            return Err(Refused::Itself);
        }
        self.with_member(tag, id, |m| match m.out {
            Some(_) => Err(Refused::Duplicate),
            None => {
                m.out = Some(queue);
                Ok(())
            }
        })
    }

    pub fn outbound_down(&self, tag: MemberTag, queue: &Arc<LinkQueue>) {
        let mut all = lock(&self.inner);
        if let Some(m) = all.iter_mut().find(|m| m.tag == tag)
            && m.out.as_ref().is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            m.out = None;
        }
        drop(all);
        self.bump();
    }

    /// A new inbound connection's id.
    pub fn next_link(&self) -> LinkId {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    /// Records what an inbound connection announced; the pump learns it after this returns, so
    /// a publication the publishers send because of it finds the topic here.
    pub fn announced(&self, tag: MemberTag, link: LinkId, subscribe: bool, t: &Bytes) {
        self.with_member(tag, "", |m| {
            let set = m.by_link.entry(link).or_default();
            let changed = if subscribe { set.insert(t.clone()) } else { set.remove(t) };
            if changed {
                m.topics = Arc::new(union(&m.by_link));
            }
        });
    }

    /// Records a replica's `CREDIT`.
    pub fn credit(&self, tag: MemberTag, room: u64, taken: u64, workers: u64) {
        self.with_member(tag, "", |m| m.credit = Some((room, taken, workers)));
        self.credited.notify_waiters();
    }

    /// An inbound connection from the replica `id` came up.
    pub fn inbound_up(&self, tag: MemberTag, id: &str) {
        // A replica that dials again after leaving is a new process under the same id.
        self.with_member(tag, id, |m| {
            m.inbound += 1;
            m.leaving = false;
        });
    }

    /// A replica said it is stopping.
    pub fn leaving(&self, tag: MemberTag) {
        self.with_member(tag, "", |m| m.leaving = true);
        self.credited.notify_waiters();
    }

    /// An inbound connection ended: what it announced no longer counts.
    pub fn inbound_down(&self, tag: MemberTag, link: LinkId) {
        let mut all = lock(&self.inner);
        if let Some(m) = all.iter_mut().find(|m| m.tag == tag) {
            m.inbound = m.inbound.saturating_sub(1);
            if m.by_link.remove(&link).is_some() {
                m.topics = Arc::new(union(&m.by_link));
            }
            m.credit = None;
        }
        drop(all);
        self.bump();
    }

    /// Tells every replica that this one was paused or resumed by its own steering; a replica
    /// that links later is told on linking while this one is paused.
    pub fn tell_state(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        for m in lock(&self.inner).iter() {
            if let Some(q) = &m.out {
                send(q, vec![LinkOut::State(paused)]);
            }
        }
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// A replica's PAUSE or RESUME.
    pub fn state_from(&self, paused: bool) {
        self.remote_state.send_replace(Some(paused));
    }

    pub fn remote_states(&self) -> watch::Receiver<Option<bool>> {
        self.remote_state.subscribe()
    }

    /// Queues a subscription change to every replica with an outbound connection.
    pub fn announce(&self, subscribe: bool, topic: &Bytes) {
        for m in lock(&self.inner).iter() {
            if let Some(q) = &m.out {
                send(q, vec![LinkOut::Subscription(subscribe, topic.clone())]);
            }
        }
    }

    /// The outbound queue to `tag`, if its connection is up.
    pub fn queue_of(&self, tag: MemberTag) -> Option<Arc<LinkQueue>> {
        lock(&self.inner).iter().find(|m| m.tag == tag).and_then(|m| m.out.clone())
    }

    /// Messages queued to outbound connections and not yet written.
    pub fn backlog(&self) -> usize {
        lock(&self.inner)
            .iter()
            .filter_map(|m| m.out.as_ref())
            .map(|q| q.queued.load(Ordering::Acquire))
            .sum()
    }

    /// Per member: its id, whether its outbound and its inbound connections are up.
    pub fn link_states(&self) -> Vec<(Arc<str>, bool, bool)> {
        let all = lock(&self.inner);
        all.iter().map(|m| (m.id.clone(), m.out.is_some(), m.inbound > 0)).collect()
    }

    /// The counters of the member `tag` (created on first use, as the member is).
    pub fn counters_of(&self, tag: MemberTag, id: &str) -> Arc<MemberCounters> {
        self.with_member(tag, id, |m| m.counters.clone())
    }

    /// Per member: its id and its link counters.
    pub fn member_counts(&self) -> Vec<(Arc<str>, MemberCounts)> {
        let all = lock(&self.inner);
        all.iter().map(|m| (m.id.clone(), m.counters.snapshot())).collect()
    }

    /// (members known, members with an outbound connection up).
    pub fn seen_and_up(&self) -> (usize, usize) {
        let all = lock(&self.inner);
        (all.len(), all.iter().filter(|m| m.out.is_some()).count())
    }
}

fn union(by_link: &HashMap<LinkId, HashSet<Bytes>>) -> Vec<Bytes> {
    let all: HashSet<&Bytes> = by_link.values().flatten().collect();
    all.into_iter().cloned().collect()
}

/// Queues a batch to one outbound connection; a closed one drops it (the connection's end
/// counts what it held).
pub fn send(q: &LinkQueue, batch: Vec<LinkOut>) {
    let n = batch.iter().map(LinkOut::queued).sum();
    q.queued.fetch_add(n, Ordering::AcqRel);
    if q.tx.send(batch).is_err() {
        q.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::frame::member_tag;

    fn queue() -> (Arc<LinkQueue>, mpsc::UnboundedReceiver<Vec<LinkOut>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(LinkQueue { tx, queued: AtomicUsize::new(0) }), rx)
    }

    #[test]
    fn a_replica_never_links_to_itself_or_twice_to_another() {
        let m = Members::new("a", "XSUB/XPUB");
        let (q, _rx) = queue();
        assert_eq!(m.outbound_up(member_tag("a"), "a", q.clone()), Err(Refused::Itself));
        assert_eq!(m.outbound_up(member_tag("b"), "b", q.clone()), Ok(()));
        let (q2, _rx2) = queue();
        assert_eq!(m.outbound_up(member_tag("b"), "b", q2.clone()), Err(Refused::Duplicate));
        m.outbound_down(member_tag("b"), &q2);
        assert!(m.queue_of(member_tag("b")).is_some(), "only the registered queue goes down");
        m.outbound_down(member_tag("b"), &q);
        assert!(m.queue_of(member_tag("b")).is_none());
        assert_eq!(m.seen_and_up(), (1, 0));
    }

    /// A reconnecting replica's old connection ends after its new one announced: the topics
    /// the new one holds stay.
    #[test]
    fn topics_are_held_per_inbound_connection() {
        let m = Members::new("a", "XSUB/XPUB");
        let (b, t) = (member_tag("b"), Bytes::from_static(b"x"));
        m.announced(b, 1, true, &t);
        m.announced(b, 2, true, &t);
        m.inbound_down(b, 1);
        let mut snap = Vec::new();
        m.snapshot(&mut snap);
        assert_eq!(*snap[0].topics, vec![t.clone()]);
        m.announced(b, 2, false, &t);
        m.snapshot(&mut snap);
        assert!(snap[0].topics.is_empty());
    }
}
