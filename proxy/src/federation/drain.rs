//! Draining through another replica (PULL/PUSH, and ROUTER/DEALER's requests). A stopping replica tells every replica it
//! links to that it is leaving (`LEAVING`); each of them stops placing tasks on it and answers,
//! after the last task it ever placed there, with `END` over the same ordered connection. The
//! leaving replica reads each inbound link to that `END` (or to its close, or the drain
//! timeout), so no task already on its way is cut off, and keeps reading the others' `CREDIT`
//! meanwhile, so the tasks its own producers sent and its workers cannot take go to a survivor
//! with credit. While a survivor with workers is linked ([`hands_over`]), what it queued to its
//! own workers and did not write yet comes back from their connections' writers and goes to a
//! survivor too, and so do the tasks the links still bring; its workers finish what was written
//! to them. Pub/sub keeps the simpler rule: links stop being read when the drain begins.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::members::{self, LinkOut, LinkQueue, Member, Members};
use crate::policy::sockets::Lifecycle;

/// Whether this replica reads its links to their end when it stops. ROUTER/DEALER too: a
/// stopping replica still owes answers to the requests placed on it, and its clients wait for
/// replies from the others (`request.rs`).
pub(super) fn reads_to_end(members: &Members) -> bool {
    members.pattern == "PULL/PUSH" || members.pattern == super::request::PATTERN
}

/// One inbound connection's `END`, awaited: counted in [`Members::unended`] from the link's
/// start until its `END` arrives or it ends without one, whichever comes first.
pub(super) struct Awaited(bool);

impl Awaited {
    pub(super) fn new(members: &Members) -> Awaited {
        members.unended.fetch_add(1, Ordering::AcqRel);
        Awaited(true)
    }

    pub(super) fn settle(&mut self, members: &Members) {
        if std::mem::take(&mut self.0) {
            members.unended.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// At the stop signal, tells every replica with an outbound link up that this one is leaving.
pub(super) async fn leave_on_stop(members: Arc<Members>, mut life: Lifecycle) {
    if !reads_to_end(&members) || life.stop.wait_for(|v| *v).await.is_err() {
        return;
    }
    members.stopping.store(true, Ordering::Release);
    let mut all = Vec::new();
    members.snapshot(&mut all);
    for q in all.iter().filter_map(|m| m.out.as_ref()) {
        members::send(q, vec![LinkOut::Leaving]);
    }
    tracing::info!(members = all.len(), "federation: leaving; told the other replicas");
}

/// Whether a stopping replica hands what its own workers have not been written yet to the
/// other replicas (and keeps from its workers what the links bring): while one of them is not
/// leaving, has its link up and announced workers. Without such a replica its own workers are
/// the only way out, and they keep their queues.
pub(super) fn hands_over(members: &Members, cache: &[Member]) -> bool {
    members.stopping.load(Ordering::Acquire) && cache.iter().any(survives)
}

/// Another replica that can take the work of a stopping one.
fn survives(m: &Member) -> bool {
    !m.leaving && m.out.is_some() && m.credit.is_some_and(|(_, _, workers)| workers > 0)
}

/// The outbound queues that owe their leaving replica an `END`: once per queue (`ended` holds
/// the queues already answered, by address).
pub(super) fn ends_due(cache: &[Member], ended: &mut HashSet<usize>) -> Vec<Arc<LinkQueue>> {
    let leaving = cache.iter().filter(|m| m.leaving).filter_map(|m| m.out.as_ref());
    leaving.filter(|q| ended.insert(Arc::as_ptr(q) as usize)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::frame::{MemberTag, member_tag};
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    /// Replica a, with its outbound link to b up.
    fn linked_to_b() -> (Members, MemberTag, Arc<LinkQueue>) {
        let m = Members::new("a", "PULL/PUSH");
        let (tx, _rx) = mpsc::unbounded_channel();
        let q = Arc::new(LinkQueue { tx, queued: AtomicUsize::new(0) });
        let b = member_tag("b");
        assert_eq!(m.outbound_up(b, "b", q.clone()), Ok(()));
        (m, b, q)
    }

    #[test]
    fn a_leaving_replica_is_answered_once_per_connection() {
        let (m, b, q) = linked_to_b();
        let mut cache = Vec::new();
        let mut ended = HashSet::new();
        m.snapshot(&mut cache);
        assert!(ends_due(&cache, &mut ended).is_empty(), "b is not leaving");
        m.leaving(b);
        m.snapshot(&mut cache);
        let due = ends_due(&cache, &mut ended);
        assert_eq!(due.len(), 1);
        assert!(Arc::ptr_eq(&due[0], &q));
        assert!(ends_due(&cache, &mut ended).is_empty(), "answered already");
        // b comes back as a new process: it is no longer leaving.
        m.inbound_up(b, "b");
        m.snapshot(&mut cache);
        assert!(!cache[0].leaving);
    }

    /// A stopping replica hands its workers' queues over only to a replica that can take them:
    /// not leaving, its link up, workers announced.
    #[test]
    fn work_is_handed_over_only_while_stopping_and_to_a_replica_with_workers() {
        let (m, b, _q) = linked_to_b();
        m.inbound_up(b, "b");
        let mut cache = Vec::new();
        let hands_over = |cache: &mut Vec<Member>| {
            m.snapshot(cache);
            super::hands_over(&m, cache)
        };
        m.credit(b, 10, 0, 1);
        assert!(!hands_over(&mut cache), "not stopping");
        m.stopping.store(true, Ordering::Release);
        assert!(hands_over(&mut cache));
        m.credit(b, 10, 0, 0);
        assert!(!hands_over(&mut cache), "b has no workers");
        m.credit(b, 0, 0, 2);
        assert!(hands_over(&mut cache), "no room now is no reason to keep the work: it waits");
        m.leaving(b);
        assert!(!hands_over(&mut cache), "b is leaving too");
    }
}
