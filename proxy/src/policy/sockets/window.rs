//! The receive high-water mark (ZMQ_RCVHWM) of one peer: how many messages read from it are
//! still waiting for the pump (beside the one batch the pump may be forwarding). A connection
//! stops decoding and reading its peer once the window is full, so a destination that cannot
//! keep up pushes back to the peer (whose own send high-water mark then decides, as between
//! libzmq sockets) instead of the proxy reading, decoding (decrypting, with CURVE) and queueing
//! without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::engine::alarm::Alarm;

/// One peer's messages in flight between its connection and the pump.
#[derive(Default)]
pub(super) struct ReadWindow {
    held: AtomicUsize,
    freed: Notify,
}

impl ReadWindow {
    /// Messages this connection may still hand over before waiting (`limit` is the rcvhwm,
    /// `usize::MAX` when unlimited).
    pub(super) fn room(&self, limit: usize) -> usize {
        limit.saturating_sub(self.held.load(Ordering::Acquire))
    }

    /// Takes credit for `n` messages about to be handed to the pump.
    pub(super) fn take(self: &Arc<Self>, n: usize) -> Credit {
        self.held.fetch_add(n, Ordering::AcqRel);
        Credit { window: self.clone(), n }
    }

    /// Resolves once there is room under `limit`, or when `dead` is raised (then `false`).
    pub(super) async fn wait_room(&self, limit: usize, dead: &Alarm) -> bool {
        // The usual case, checked before registering a waiter (which takes the Notify's lock).
        if self.room(limit) > 0 {
            return true;
        }
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.room(limit) > 0 {
                return true;
            }
            if dead.is_raised() {
                return false;
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = dead.raised() => return false,
            }
        }
    }
}

/// Credit a batch holds against its peer's receive window; dropping it (the pump took the
/// batch, or discarded it at a kill) gives the room back and wakes the connection.
pub struct Credit {
    window: Arc<ReadWindow>,
    n: usize,
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credit({})", self.n)
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.window.held.fetch_sub(self.n, Ordering::AcqRel);
        self.window.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_fills_the_window_and_dropping_it_wakes_the_reader() {
        let w = Arc::new(ReadWindow::default());
        let dead = Arc::new(Alarm::default());
        let c = w.take(10);
        assert_eq!(w.room(10), 0);
        assert_eq!(w.room(usize::MAX), usize::MAX - 10);
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait_room(10, &dead).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no room yet");
        drop(c);
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        assert_eq!(w.room(10), 10);
    }

    #[tokio::test]
    async fn a_dead_connection_stops_waiting() {
        let w = Arc::new(ReadWindow::default());
        let dead = Alarm::default();
        let _c = w.take(1);
        dead.raise();
        assert!(!w.wait_room(1, &dead).await);
    }
}
