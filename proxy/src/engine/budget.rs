//! The whole proxy's memory budget (`--max-memory`): the bytes the proxy holds for its peers,
//! messages still being assembled by every connection plus frames queued to peers, summed in
//! atomics and compared with one limit. Each connection's own bound (maxMsgSize, maxFrames)
//! stops one peer; this one stops many peers that are each within theirs.
//!
//! The hot path stays cheap: a connection publishes what its unfinished message weighs once per
//! read (one swap and one relaxed add, and nothing at all when the weight did not change, as
//! for a read of whole messages), and the queues keep the counters they already had. Only a
//! connection whose weight grew compares the total with the limit. Past it, the connection
//! holding the most assembling bytes is marked and woken to disconnect: it counts itself
//! (`over_budget`) as it goes. Queued frames are bounded by the high-water marks and never
//! evicted: a slow consumer's queue is not what a peer still sending can be blamed for.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::alarm::Alarm;
use crate::wire::zmtp::FRAME_OVERHEAD;

/// A socket's counters of what is queued to its peers: frames and their payload bytes.
#[derive(Default)]
pub struct Queued {
    pub frames: AtomicI64,
    pub bytes: AtomicI64,
}

impl Queued {
    /// Payload plus [`FRAME_OVERHEAD`] per frame, as an unfinished message is weighed.
    fn weight(&self) -> i64 {
        let frames = self.frames.load(Ordering::Relaxed).max(0);
        let bytes = self.bytes.load(Ordering::Relaxed).max(0);
        bytes.saturating_add(frames.saturating_mul(FRAME_OVERHEAD as i64))
    }
}

/// One connection's share: what its unfinished message weighs, and how to make it leave.
struct Holder {
    bytes: AtomicI64,
    evicted: AtomicBool,
    /// The connection's "dead" signal: raising it ends its reader and writer.
    close: Arc<Alarm>,
}

/// The proxy-wide budget, shared by every socket.
pub struct MemoryBudget {
    /// Bytes the proxy may hold for peers; `None`: no limit (nothing is published).
    limit: Option<i64>,
    assembling: AtomicI64,
    queues: Mutex<Vec<Arc<Queued>>>,
    holders: Mutex<Vec<Weak<Holder>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind the lock: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBudget {
    /// A budget of `limit` bytes (`None`: unlimited).
    pub fn new(limit: Option<u64>) -> Self {
        MemoryBudget {
            limit: limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            assembling: AtomicI64::new(0),
            queues: Mutex::new(Vec::new()),
            holders: Mutex::new(Vec::new()),
        }
    }

    /// The limit in bytes, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit.map(i64::unsigned_abs)
    }

    /// Counts a socket's queues in the total from now on.
    pub fn add_queues(&self, q: Arc<Queued>) {
        lock(&self.queues).push(q);
    }

    /// Bytes held for peers right now: every unfinished message and every queue.
    pub fn held(&self) -> i64 {
        let queued: i64 = lock(&self.queues).iter().map(|q| q.weight()).sum();
        self.assembling.load(Ordering::Relaxed).max(0).saturating_add(queued)
    }

    /// A connection's share; `close` is raised if it has to leave. Dropping the share takes
    /// its bytes out of the total.
    pub fn join(self: &Arc<Self>, close: Arc<Alarm>) -> Share {
        let holder =
            Arc::new(Holder { bytes: AtomicI64::new(0), evicted: AtomicBool::new(false), close });
        if self.limit.is_some() {
            let mut holders = lock(&self.holders);
            holders.retain(|h| h.strong_count() > 0);
            holders.push(Arc::downgrade(&holder));
        }
        Share { budget: self.clone(), holder, published: 0 }
    }

    /// Over the limit: the connection with the most assembling bytes is marked, its bytes
    /// taken out of the total and its close signal raised. Returns whether one was found.
    fn evict(&self) -> bool {
        let victim = lock(&self.holders)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.evicted.load(Ordering::Relaxed))
            .max_by_key(|h| h.bytes.load(Ordering::Relaxed));
        let Some(v) = victim else { return false };
        if v.bytes.load(Ordering::Relaxed) <= 0 || v.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        let gone = v.bytes.swap(0, Ordering::AcqRel);
        self.assembling.fetch_sub(gone, Ordering::Relaxed);
        v.close.raise();
        true
    }
}

/// One connection's part of the budget, published by its reader.
pub struct Share {
    budget: Arc<MemoryBudget>,
    holder: Arc<Holder>,
    /// What this reader last published (the holder's value unless the budget evicted it).
    published: i64,
}

impl Share {
    /// Publishes what the connection's unfinished message weighs now; when it grew and the
    /// total is past the limit, the heaviest connection (this one or another) is told to
    /// leave. A no-op without a limit or when the weight is unchanged.
    pub fn assembling(&mut self, bytes: usize) {
        let Some(limit) = self.budget.limit else { return };
        let now = i64::try_from(bytes).unwrap_or(i64::MAX);
        if now == self.published || self.holder.evicted.load(Ordering::Relaxed) {
            return;
        }
        let before = self.holder.bytes.swap(now, Ordering::Relaxed);
        self.published = now;
        self.budget.assembling.fetch_add(now - before, Ordering::Relaxed);
        if now > before && self.budget.held() > limit {
            self.budget.evict();
        }
    }

    /// Whether the budget told this connection to leave.
    pub fn evicted(&self) -> bool {
        self.holder.evicted.load(Ordering::Acquire)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let left = self.holder.bytes.swap(0, Ordering::AcqRel);
        if left != 0 {
            self.budget.assembling.fetch_sub(left, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(b: &Arc<MemoryBudget>) -> (Share, Arc<Alarm>) {
        let close = Arc::new(Alarm::default());
        (b.join(close.clone()), close)
    }

    /// Many connections each below their own bound, together over the limit: the heaviest one
    /// is told to leave (not the one that happened to cross the line), its bytes leave the
    /// total at once, and the others go on.
    #[test]
    fn the_heaviest_assembler_leaves_when_the_total_passes_the_limit() {
        let b = Arc::new(MemoryBudget::new(Some(1000)));
        let (mut heavy, heavy_rx) = share(&b);
        let (mut light, light_rx) = share(&b);
        heavy.assembling(600);
        light.assembling(300);
        assert_eq!(b.held(), 900);
        assert!(!heavy_rx.is_raised() && !light_rx.is_raised());
        light.assembling(450);
        assert!(heavy_rx.is_raised(), "the heaviest connection is closed");
        assert!(heavy.evicted() && !light.evicted());
        assert!(!light_rx.is_raised());
        assert_eq!(b.held(), 450);
        // The evicted reader's later publications are ignored; dropping it changes nothing.
        heavy.assembling(700);
        drop(heavy);
        assert_eq!(b.held(), 450);
        light.assembling(0);
        assert_eq!(b.held(), 0);
    }

    /// Queued frames count in the total (payload plus the per-frame overhead) but are never
    /// evicted: with nothing being assembled, nobody is closed.
    #[test]
    fn queued_frames_count_but_only_assemblers_are_evicted() {
        let b = Arc::new(MemoryBudget::new(Some(10_000)));
        let q = Arc::new(Queued::default());
        b.add_queues(q.clone());
        q.frames.fetch_add(10, Ordering::Relaxed);
        q.bytes.fetch_add(9_000, Ordering::Relaxed);
        assert_eq!(b.held(), 9_000 + 10 * FRAME_OVERHEAD as i64);
        assert!(!b.evict(), "nothing assembling: nobody to close");
        let (mut s, rx) = share(&b);
        s.assembling(300);
        assert!(!rx.is_raised(), "9940 bytes held: within the limit");
        s.assembling(400);
        assert!(rx.is_raised() && s.evicted(), "the assembler pushed the total past the limit");
        assert_eq!(b.held(), 9_000 + 10 * FRAME_OVERHEAD as i64);
    }

    /// Without a limit nothing is published: the budget costs the readers nothing.
    #[test]
    fn no_limit_publishes_nothing() {
        let b = Arc::new(MemoryBudget::new(None));
        let (mut s, rx) = share(&b);
        s.assembling(usize::MAX);
        assert_eq!(b.held(), 0);
        assert!(!rx.is_raised() && !s.evicted());
    }
}
