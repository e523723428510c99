//! The defaults the operator gives its pods where they differ from the binary's: the binary
//! behaves like libzmq on a laptop, a pod behind a Service has to survive what a cluster does
//! to connections and restarts.

use crate::heartbeat::HeartbeatSpec;

/// The lame-duck period of the operator's pods (`spec.lameDuckSeconds`). A terminating pod
/// leaves its Services when it turns unready (at SIGTERM only while other ready endpoints
/// exist; a Service's last endpoint keeps its traffic while its readiness probe passes,
/// KEP-1669), then each node's kube-proxy applies that within about a second (iptables
/// min-sync-period 1 s) or a few on a busy cluster. A proxy that closed before then would see its
/// peers reconnect to the vanished pod's address, where libzmq, which has no connect timeout,
/// waits out TCP's SYN retries (tens of seconds to two minutes). Five seconds cover the
/// operator's readiness probe (unready within 2 s, `READINESS_PROBE` in the operator's
/// `build.rs`) and the sync with margin.
pub const KUBERNETES_LAME_DUCK_SECS: i32 = 5;

/// Heartbeats of the operator's pods, on each data socket whose spec sets no `heartbeat*` field
/// (a socket that sets any gets exactly what it sets, libzmq's defaults for the rest): a PING
/// every 10 s announcing a 30 s TTL, and a peer silent for 30 s after a PING is dropped.
/// In a cluster, connections die without a FIN or RST (a node lost, a NAT or conntrack entry
/// expired or flushed), and the TTL is what lets *unconfigured* libzmq peers notice: libzmq
/// drops a connection that stays silent for the TTL of the last PING it received, whatever its
/// own options, so a SUB or a worker reconnects to a live proxy within about 30 s instead of
/// hanging forever (a SUB never writes, so its kernel never learns the connection is gone). Our
/// side drops a peer whose host vanished while data was queued to it (where TCP keepalive
/// never probes and retransmissions go on for minutes), releasing its routing id and
/// subscriptions. 10 s keeps idle connections well inside the shortest common idle timeouts
/// (Azure's load balancers: 4 minutes); three PINGs may be lost before anyone gives up, and the
/// cost is one 9-byte PING and PONG per connection per 10 s. Off in the binary, as in libzmq: a
/// proxy on a laptop talks to peers that expect libzmq's defaults.
pub const KUBERNETES_HEARTBEAT: HeartbeatSpec =
    HeartbeatSpec { interval: Some(10_000), ttl: Some(30_000), timeout: Some(30_000) };
