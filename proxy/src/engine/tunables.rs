//! Internal tunables: the sizes and times the proxy does not expose as options. The
//! user-facing defaults and bounds are the api crate's `defaults.rs`.

use std::time::Duration;

/// How long a timed-out drain waits for connection writers to stop after the kill, so what
/// they managed to write is counted as delivered and the rest, once, as undelivered.
pub const WRITER_SETTLE_TIMEOUT: Duration = Duration::from_millis(500);

/// Read batches buffered between a socket's connections and its pump. Each batch is what one
/// read of one connection decoded, so this bounds memory per socket, not per peer.
pub const INBOUND_QUEUE_BATCHES: usize = 256;
/// A connection that has not completed the ZMTP greeting and READY in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (e.g. out of file descriptors) so the loop does not spin.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// File descriptors kept out of the peers' room below RLIMIT_NOFILE, for the proxy itself:
/// listeners, the runtime's own, the HTTP endpoint and its scrapes, up to
/// [`CONTROL_MAX_CONNECTIONS`] control requesters, DNS lookups, files it re-reads.
pub const FD_HEADROOM: u64 = 160;
/// Bytes read from a connection per system call, at most.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes encoded per write system call, at most (a larger single message is written whole).
pub const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// What the write batches of one socket's connections may encode at once, all together: with
/// many peers each batch is cut down to its share (not below [`WRITE_BATCH_MIN_BYTES`]), so a
/// thousand subscribers paced at their high-water mark do not each hold a full batch of bytes
/// already encoded from messages that are queued to them anyway.
pub const WRITE_BATCHES_PER_SOCKET_BYTES: usize = 16 * 1024 * 1024;
/// The smallest write batch (libzmq's encoder writes 8 KiB at a time).
pub const WRITE_BATCH_MIN_BYTES: usize = 16 * 1024;

/// The write batch of one of a socket's `writers` connections: [`WRITE_BATCH_BYTES`], or its
/// share of [`WRITE_BATCHES_PER_SOCKET_BYTES`] when that is smaller.
pub fn write_batch_bytes(writers: usize) -> usize {
    (WRITE_BATCHES_PER_SOCKET_BYTES / writers.max(1))
        .clamp(WRITE_BATCH_MIN_BYTES, WRITE_BATCH_BYTES)
}
/// Longest a PUB/XPUB pump waits in all for one full subscriber between two times it has
/// caught up (drained to half its sndhwm); past it that subscriber's copies are dropped until it
/// catches up (see `policy/sockets/pace.rs`). Short enough that a subscriber that stops reading
/// holds the others up for a moment, once; long enough that subscriber processes serving many
/// connections on a busy node, each of them full between two turns of their I/O thread, are
/// waited for rather than dropped for.
pub const SUBSCRIBER_STALL: Duration = Duration::from_millis(500);
/// Messages a pump moves per wake-up before it yields.
pub const PUMP_BURST: usize = 512;
/// Runtime threads. libzmq's proxy uses two (its I/O thread and the proxy's own); more
/// would mostly add cross-thread wake-ups on the small nodes a proxy pod gets.
pub const RUNTIME_WORKER_THREADS: usize = 2;
/// A draining ROUTER closes a client with no request outstanding only once it has sent none for
/// this long: a request already on the wire then arrives, is answered, and the FIN follows
/// its reply (a busy client is always closed that way).
pub const DRAIN_IDLE_CLIENT: Duration = Duration::from_millis(50);
/// How often a draining proxy re-checks that every queue has been written out.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How often drops are summarised in one log line (only when something was dropped), instead
/// of one line per dropped message.
pub const DROP_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Longest the control socket waits to hand a reply to a requester that does not read; a
/// stuck control client must not stall the control socket for the others.
pub const CONTROL_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a CURVE allow-list file or directory is re-read. Content decides, not mtime:
/// the kubelet swaps a mounted Secret's `..data` symlink, so only reading shows a change.
pub const ALLOW_LIST_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often `--pause-file` is re-read (content decides, as for the allow-list): a change of
/// `spec.paused` reaches the proxy this long after the kubelet has swapped the file.
pub const PAUSE_FILE_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A refused peer (same address, same reason) is logged at most once in this time.
pub const REFUSAL_LOG_QUIET: Duration = Duration::from_secs(60);
/// Peers remembered for that (bounded memory under a flood of refusals).
pub const REFUSAL_LOG_PEERS: usize = 1024;
/// Largest control request (the commands are a few bytes; this only bounds garbage).
pub const CONTROL_MAX_BYTES: usize = 64 * 1024;
/// Control requesters connected at once; more are closed on accept.
pub const CONTROL_MAX_CONNECTIONS: usize = 64;
/// Publications queued to one other replica and not yet written, at most; beyond it that
/// replica's copies are dropped and counted at once (a link is not waited for). Subscription
/// changes are never dropped.
pub const FEDERATION_LINK_HWM: usize = 100_000;
/// First delay before a federation link is dialed again; it doubles while dials fail.
pub const FEDERATION_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two dials of a federation peer.
pub const FEDERATION_RECONNECT_MAX: Duration = Duration::from_secs(2);
/// How often a federated PULL/PUSH replica re-announces its workers' room (credit) to the
/// other replicas, when it changed: short, so an idle worker elsewhere is fed soon.
pub const FEDERATION_CREDIT_INTERVAL: Duration = Duration::from_millis(2);
/// The longest a federated PULL/PUSH replica whose credit did not change sleeps before it
/// looks again (it wakes at once when a task moves or its workers or links change).
pub const FEDERATION_CREDIT_IDLE_INTERVAL: Duration = Duration::from_millis(100);
/// How often each federation link connection is sent a PING (ZMTP 3.1), both ways.
pub const FEDERATION_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after a PING that closes a federation link connection (then it is dialed again): a
/// frozen replica or a black-holed network is noticed within this plus the interval. Both ends
/// PING, so a live replica is never silent this long even when it has nothing to relay.
pub const FEDERATION_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
