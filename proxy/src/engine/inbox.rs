//! One connection's outgoing queue: batches handed over by the pump, taken by the connection's
//! writer. Unbounded (the sender bounds it by the high-water mark) and lazy: an empty queue
//! holds no allocation until its first batch, where a tokio channel allocates its state and a
//! block of 32 slots at creation, a cost every idle connection would carry.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use futures::task::AtomicWaker;

/// The queue; its receiver is whoever calls [`Inbox::recv`] (one task at a time).
pub struct Inbox<T> {
    state: Mutex<State<T>>,
    waker: AtomicWaker,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver is gone: sends are refused and hand the item back.
    closed: bool,
}

/// Batches a queue that emptied may keep room for; a burst's larger deque is given back.
const KEPT_ROOM: usize = 16;

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox {
            state: Mutex::new(State { items: VecDeque::new(), closed: false }),
            waker: AtomicWaker::new(),
        }
    }
}

impl<T> Inbox<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` and wakes the receiver; hands it back once the queue is closed.
    pub fn send(&self, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        s.items.push_back(item);
        drop(s);
        self.waker.wake();
        Ok(())
    }

    /// The next item, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        let mut s = self.lock();
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > KEPT_ROOM {
            s.items = VecDeque::new();
        }
        item
    }

    /// Waits for the next item. Cancel-safe: a cancelled wait took nothing.
    pub async fn recv(&self) -> T {
        poll_fn(|cx| {
            if let Some(item) = self.try_recv() {
                return Poll::Ready(item);
            }
            self.waker.register(cx.waker());
            // A send between the first look and the registration woke nobody: look again.
            match self.try_recv() {
                Some(item) => Poll::Ready(item),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Resolves once the queue holds an item, taking none. Cancel-safe.
    pub async fn filled(&self) {
        poll_fn(|cx| {
            if !self.lock().items.is_empty() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A send between the first look and the registration woke nobody: look again.
            if self.lock().items.is_empty() { Poll::Pending } else { Poll::Ready(()) }
        })
        .await
    }

    /// Refuses every later send; what was queued before stays for [`Inbox::try_recv`].
    pub fn close(&self) {
        self.lock().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn items_arrive_in_order_and_a_closed_queue_hands_sends_back() {
        let q = Arc::new(Inbox::default());
        let rx = {
            let q = q.clone();
            tokio::spawn(async move { (q.recv().await, q.recv().await) })
        };
        tokio::task::yield_now().await;
        assert!(q.send(1).is_ok() && q.send(2).is_ok());
        let got = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(matches!(got, Ok(Ok((1, 2)))), "{got:?}");
        assert!(q.send(3).is_ok());
        q.close();
        assert_eq!(q.send(4), Err(4), "closed: handed back");
        assert_eq!(q.try_recv(), Some(3), "what was queued before the close stays");
        assert_eq!(q.try_recv(), None);
    }

    #[test]
    fn an_empty_queue_holds_no_allocation_and_a_drained_burst_gives_its_room_back() {
        let q = Inbox::default();
        assert_eq!(q.lock().items.capacity(), 0);
        for i in 0..100 {
            assert!(q.send(i).is_ok());
        }
        while q.try_recv().is_some() {}
        assert_eq!(q.lock().items.capacity(), 0);
    }
}
