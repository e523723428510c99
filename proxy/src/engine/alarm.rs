//! A one-way, once-only signal for one connection ("this connection is dead"): raised by
//! whoever ends it (its reader, its writer, the memory budget) and awaited by the rest of it.
//! A `watch` channel does the same with a value, a lock and eight wait lists; one of these per
//! connection is a flag and a waker, which thousands of idle connections notice.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;

/// Awaited by one task, the connection's own (its reader, writer and read window are polled by
/// that task): one waker is all it keeps, and a wait that goes on costs two atomics per poll
/// rather than a lock, which matters as the task polls every wait it has on each wake.
#[derive(Default)]
pub struct Alarm {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Alarm {
    /// Raises it for good; the waiting task wakes.
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once raised (at once if it already is). The waker is registered before the
    /// flag is read again, so a raise in between is never missed.
    pub async fn raised(&self) {
        poll_fn(|cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.is_raised() { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_raised_and_later_waits_end_at_once() {
        let a = Arc::new(Alarm::default());
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.raised().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !a.is_raised(), "not raised yet");
        a.raise();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(()))), "{woke:?}");
        assert!(a.is_raised());
        tokio::time::timeout(Duration::from_secs(5), a.raised()).await.expect("already raised");
    }
}
