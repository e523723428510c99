//! When a draining proxy closes each connection, so that a restart loses nothing.
//!
//! A drain never just stops reading: bytes a peer already wrote sit in the proxy's receive
//! buffer, and a peer that sent them believes they were delivered. Instead every connection is
//! closed the same way, at the moment its socket type allows: the proxy shuts down its write
//! side (a FIN after everything queued to the peer), keeps reading and forwarding until the peer
//! closes its side too, and only then drops the connection.
//!
//! The proxy lets go of a connection only at the peer's own FIN (or the drain timeout), never
//! right after its FIN went out: a receiver that has not read everything yet would otherwise
//! lose what sat in the socket buffers once the process exits and the pod's network namespace
//! is torn down. libzmq reads to the end of stream before it closes, so its FIN proves it holds
//! everything.
//!
//! This works with libzmq peers because of what libzmq does at end of stream: its stream engine
//! treats a read of 0 bytes as a connection error, closes the socket (the kernel still sends
//! what the engine had written, then a FIN) and, on a connecting socket, reconnects after
//! ZMQ_RECONNECT_IVL. A connecting socket keeps its pipe across reconnects (unless
//! ZMQ_IMMEDIATE is set), so messages still in the pipe go out on the next connection; only a
//! batch the engine had taken from the pipe and not yet handed to the kernel could be cut, and
//! the proxy reads continuously so the peer's kernel buffer does not fill. So a connecting
//! sender that sees the FIN sends what it had not written to the next proxy, and what it had
//! written, this one reads. (A peer the proxy connects to loses its pipe with the connection,
//! as libzmq drops the pipes of accepted connections; in Kubernetes the peers connect.)
//!
//! The moment, by the type of the proxy's socket:
//! - PULL, XSUB, SUB (the peer sends the data): at once. Their data is read to the end.
//! - ROUTER: right behind the reply that brings the peer's `outstanding` count (requests read
//!   minus replies routed back) to zero, so a request read is a request answered if the worker
//!   answers within the drain timeout; a client that sent nothing for [`DRAIN_IDLE_CLIENT`] is
//!   closed then. Requests read after the FIN cannot be answered any more: they are counted
//!   (dropped, `peer_gone`) and not handed to a worker. A strict REQ client that sent one in the
//!   moment between reading its reply and reading the FIN waits for it forever unless it has a
//!   receive timeout (libzmq's Lazy Pirate pattern, or ZMQ_REQ_RELAXED with ZMQ_REQ_CORRELATE).
//! - DEALER, PUSH, PUB, XPUB and capture (the proxy sends the data): once the pump that feeds the
//!   socket has written its last message ([`Shared::input_ended`]). A DEALER's workers therefore
//!   stay connected until every ROUTER client is done, and can still send their replies.

use super::*;
use crate::engine::tunables::{DRAIN_IDLE_CLIENT, DRAIN_POLL_INTERVAL};

/// Whether a draining connection of this socket may shut down its write side now.
fn may_close(shared: &Shared, entry: &PeerEntry) -> bool {
    if entry.queue.closing.load(Ordering::Acquire) {
        return true;
    }
    if shared.capture {
        return shared.input_ended.load(Ordering::Acquire);
    }
    match shared.kind {
        SocketType::Pull | SocketType::Xsub | SocketType::Sub => true,
        // Idle clients only; a busy one closes behind its last reply (`after_reply`).
        SocketType::Router => false,
        SocketType::Dealer | SocketType::Push | SocketType::Pub | SocketType::Xpub => {
            shared.input_ended.load(Ordering::Acquire)
        }
        // Never opened by the proxy; nothing to wait for.
        SocketType::Req | SocketType::Rep | SocketType::Pair => true,
    }
}

/// Once the drain has begun: resolves when this connection may close.
pub(super) async fn close_due(shared: &Shared, entry: &PeerEntry) {
    if shared.kind == SocketType::Router && !shared.capture {
        return router_idle(entry).await;
    }
    // Bounded by the drain timeout, after which the proxy kills every connection.
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if may_close(shared, entry) {
            return;
        }
        // `changed` covers queue progress and input_ended; the poll covers an `outstanding`
        // count that a routed reply lowered without a queue event yet.
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
        }
    }
}

/// Resolves once a draining ROUTER peer has no request outstanding and sent none for
/// [`DRAIN_IDLE_CLIENT`], or was closed behind its last reply.
async fn router_idle(entry: &PeerEntry) {
    let q = &entry.queue;
    // Bounded by the drain timeout, after which the proxy kills every connection.
    loop {
        let reads = q.reads.load(Ordering::Acquire);
        tokio::time::sleep(DRAIN_IDLE_CLIENT).await;
        let idle =
            reads == q.reads.load(Ordering::Acquire) && q.outstanding.load(Ordering::Acquire) <= 0;
        if idle || q.closing.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Starts closing a connection, once: no message is routed to the peer from now on, and its
/// writer sends a FIN once everything queued before this point is written.
pub(super) fn begin_close(shared: &Shared, entry: &PeerEntry) {
    if entry.queue.closing.swap(true, Ordering::AcqRel) {
        return;
    }
    shared.deregister(entry);
    // A queue whose writer is gone already (the peer closed) needs no FIN.
    let _ = shared.enqueue(&entry.queue, vec![Out::Close], 0);
}

/// ROUTER: the last outstanding reply of a draining peer was just queued; its FIN goes right
/// behind it, in the same write. A REQ client answered now has the least time to send its next
/// request to this proxy instead of the next one: libzmq's I/O thread usually reads the FIN
/// before the application has handed it a new request.
pub(super) fn after_reply(shared: &Shared, entry: &PeerEntry, outstanding_now: i64) {
    if outstanding_now <= 0 && shared.draining.load(Ordering::Acquire) {
        begin_close(shared, entry);
    }
}

/// A stopping federated replica takes back what its PUSH or DEALER peers were queued and not
/// yet written, while another replica can take it (`federation/drain.rs`): each connection's
/// writer hands it back as orphans before its next write, and the pump places them elsewhere.
/// What a writer already handed to the kernel stays with its peer.
pub(super) fn recall(shared: &Shared, on: bool) {
    let kind = matches!(shared.kind, SocketType::Push | SocketType::Dealer);
    if kind && !shared.capture && shared.recalling.load(Ordering::Acquire) != on {
        shared.recalling.store(on, Ordering::Release);
        shared.changed.notify_waiters();
    }
}

/// The writer's part of [`recall`]: while the socket recalls, the messages of `batch` go back
/// as orphans; commands and the drain's `Close` stay, to be written.
pub(super) fn unrecalled(shared: &Shared, queue: &PeerQueue, batch: Vec<Out>) -> Vec<Out> {
    if !shared.recalling.load(Ordering::Acquire) {
        return batch;
    }
    let (mut keep, mut back) = (Vec::new(), Vec::new());
    let (mut frames, mut bytes) = (0i64, 0i64);
    for o in batch {
        match o {
            Out::Owned(_) | Out::Frame(_) | Out::Shared(_) => {
                frames += o.frames().len() as i64;
                bytes += o.payload_len() as i64;
                back.extend(o.into_msg());
            }
            _ => keep.push(o),
        }
    }
    if !back.is_empty() {
        queue.queued.fetch_sub(back.len(), Ordering::AcqRel);
        shared.pending.frames.fetch_sub(frames, Ordering::AcqRel);
        shared.pending.bytes.fetch_sub(bytes, Ordering::AcqRel);
        shared.undeliverable(back);
    }
    keep
}

/// Counts one open connection for [`SocketHandle::connections_closed`]; dropping it (any
/// return of the connection task) counts it closed.
pub(super) struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        shared.live_conns.fetch_add(1, Ordering::AcqRel);
        OpenConnection(shared.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.live_conns.fetch_sub(1, Ordering::AcqRel);
        self.0.conns_gone.notify_waiters();
    }
}
