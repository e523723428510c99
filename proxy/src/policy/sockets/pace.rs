//! PUB/XPUB pacing: how long the fan-out waits for a full subscriber before dropping its copy.
//!
//! A publication for a full subscriber is not dropped at once: the pump first waits for that
//! subscriber's room, and meanwhile stops reading the publishers, whose own queues then hold the
//! backlog (as behind libzmq's proxy, which copies each publication to every subscriber on one
//! thread and so never reads faster than its subscribers drain). Subscribers that are full but
//! draining thus lose nothing; the publishers go at their pace.
//!
//! The wait is bounded per subscriber. The time the pump spends waiting for a subscriber is
//! charged to it; once the charge reaches [`SUBSCRIBER_STALL`] the subscriber is lagging: every
//! publication for it is dropped and counted, without waiting, until its queue has drained to
//! half its high-water mark (libzmq's low-water mark), which also clears the charge. So a
//! subscriber that stops reading holds the others up once, for the bound, and not again until
//! it has caught up; one that reads, but drips, holds them up for the bound at most between two
//! times it catches up. Waiting while no subscriber at all has room holds nobody up, so it is
//! not charged. With `nodrop` (ZMQ_XPUB_NODROP) nothing is charged: the pump waits as long as
//! it takes.

use super::*;
use crate::engine::tunables::SUBSCRIBER_STALL;
use std::time::Duration;

/// The pacing state of one socket's cached peers, owned by its pump's [`Outlet`]. The charge
/// itself lives in each peer's queue, so it outlives a refresh of the peer list.
#[derive(Default)]
pub(super) struct Pace {
    /// Per cached peer: lagging as of the last [`Pace::refresh`].
    lagging: Vec<bool>,
}

impl Pace {
    /// Clears the charge of every subscriber at or below its low-water mark, and hides the
    /// room of the lagging ones, so routing treats them as full.
    pub(super) fn refresh(&mut self, peers: &[PeerEntry], room: &mut [usize], hwm: usize) {
        let bound = nanos(SUBSCRIBER_STALL);
        let caught_up = hwm - hwm / 2;
        self.lagging.clear();
        for (p, r) in peers.iter().zip(room.iter_mut()) {
            let charged = p.queue.paced_ns.load(Ordering::Relaxed);
            let mut lagging = false;
            if charged != 0 {
                if *r >= caught_up {
                    p.queue.paced_ns.store(0, Ordering::Relaxed);
                } else if charged >= bound {
                    lagging = true;
                    *r = 0;
                }
            }
            self.lagging.push(lagging);
        }
    }

    /// Whether peer `i` was lagging at the last refresh.
    pub(super) fn lagging(&self, i: usize) -> bool {
        self.lagging.get(i).copied().unwrap_or(false)
    }

    /// Charges `waited` to each of `full` (the subscribers the pump waited for); returns true
    /// when one of them reached the bound (it lags from the next refresh on).
    pub(super) fn charge(&self, peers: &[PeerEntry], full: &[usize], waited: Duration) -> bool {
        let (bound, waited) = (nanos(SUBSCRIBER_STALL), nanos(waited));
        let mut reached = false;
        for &i in full {
            let q = &peers[i].queue;
            let now = q.paced_ns.load(Ordering::Relaxed).saturating_add(waited);
            q.paced_ns.store(now, Ordering::Relaxed);
            if now >= bound {
                reached = true;
                tracing::debug!(
                    id = peers[i].id,
                    "subscriber lagging: its publications are dropped until it catches up"
                );
            }
        }
        reached
    }

    /// How long the pump may wait before one of `full` reaches the bound.
    pub(super) fn left(&self, peers: &[PeerEntry], full: &[usize]) -> Duration {
        let bound = nanos(SUBSCRIBER_STALL);
        let most = full
            .iter()
            .map(|&i| peers[i].queue.paced_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Duration::from_nanos(bound.saturating_sub(most))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(id: PeerId, queued: usize) -> PeerEntry {
        PeerEntry {
            id,
            routing_id: Bytes::new(),
            queue: Arc::new(PeerQueue {
                inbox: Inbox::default(),
                queued: AtomicUsize::new(queued),
                outstanding: AtomicI64::new(0),
                closing: AtomicBool::new(false),
                reads: AtomicU64::new(0),
                paced_ns: AtomicU64::new(0),
            }),
            topics: Arc::new(vec![Bytes::new()]),
            revision: zmtp::Revision::V3_1,
        }
    }

    fn rooms(peers: &[PeerEntry], hwm: usize) -> Vec<usize> {
        peers.iter().map(|p| p.queue.room(hwm)).collect()
    }

    /// A full subscriber is waited for until its charge reaches the bound; then it lags (its
    /// room is hidden, so routing drops for it) until it has drained to half the high-water
    /// mark, which clears the charge. Draining only a little does not end the lag.
    #[test]
    fn a_subscriber_lags_at_the_bound_until_it_drains_to_half_its_queue() {
        let hwm = 10;
        let peers = vec![subscriber(1, hwm), subscriber(2, 0)];
        let mut pace = Pace::default();
        let half = SUBSCRIBER_STALL / 2;
        assert!(!pace.charge(&peers, &[0], half), "below the bound");
        let mut room = rooms(&peers, hwm);
        pace.refresh(&peers, &mut room, hwm);
        assert!(!pace.lagging(0), "still waited for");
        assert!(pace.left(&peers, &[0]) <= SUBSCRIBER_STALL - half);
        assert!(pace.charge(&peers, &[0], half), "the bound is reached");
        // Drained a little: still lagging, and its room is hidden from routing.
        peers[0].queue.queued.store(hwm - 2, Ordering::Relaxed);
        let mut room = rooms(&peers, hwm);
        pace.refresh(&peers, &mut room, hwm);
        assert!(pace.lagging(0) && !pace.lagging(1));
        assert_eq!(room, vec![0, hwm]);
        // Drained to half: caught up, and charged nothing any more.
        peers[0].queue.queued.store(hwm / 2, Ordering::Relaxed);
        let mut room = rooms(&peers, hwm);
        pace.refresh(&peers, &mut room, hwm);
        assert!(!pace.lagging(0));
        assert_eq!(room, vec![hwm - hwm / 2, hwm]);
        assert_eq!(pace.left(&peers, &[0]), SUBSCRIBER_STALL);
    }
}
