//! Every default and bound a user can see: what an unset flag, manifest field or CRD field
//! means, and the largest value each accepts. This module imports nothing, so any module (and
//! the operator) can read it without pulling in anything else. The pods' own defaults, which
//! differ from the binary's, are in `kubernetes.rs`.

use std::time::Duration;

/// How long a stopping proxy keeps delivering what it already read (`--drain-timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted `--drain-timeout`.
pub const MAX_DRAIN_TIMEOUT_SECS: f64 = 3600.0;
/// How long a stopping proxy first keeps serving as usual, unready (`--lame-duck`). Zero for
/// the binary: on a laptop no load balancer needs to learn that it is going away.
pub const DEFAULT_LAME_DUCK: Duration = Duration::ZERO;
/// Longest accepted `--lame-duck`.
pub const MAX_LAME_DUCK_SECS: f64 = 3600.0;

/// Default high-water mark, per peer, both ways (libzmq's default ZMQ_SNDHWM and ZMQ_RCVHWM;
/// `--<socket>-sndhwm`/`-rcvhwm`). Out: a full ROUTER client or subscriber has further messages
/// dropped and counted; a full PUSH/DEALER peer is skipped by round-robin. In: a peer with this
/// many messages read and waiting to be forwarded is not read further until the pump takes
/// them.
pub const DEFAULT_PEER_HWM: usize = 1000;
/// Default largest message (all frames) a peer may send (`--<socket>-max-msg-size`); a larger
/// frame header drops that peer. libzmq's default is unlimited, but a peer must not be able to
/// make the proxy allocate whatever a frame header claims.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Default of `--<socket>-max-frames`: the most frames one message may have. libzmq has no
/// bound; this one is far above what libzmq applications send (a ROUTER envelope adds a frame
/// per hop, zguide's patterns stay under ten) and caps the per-frame accounting of one
/// unfinished message at 4 MiB, so a peer cannot hold memory with endless empty frames.
pub const MAX_FRAMES: usize = 65_536;
/// Default of `--max-memory` under a cgroup memory limit: this percentage of the limit. The
/// budget counts what the proxy holds for peers, not its whole resident size (its own start, the
/// allocator's slack, read buffers, messages on their way between sockets), so half leaves the
/// rest of the limit for those and the container is not killed before the budget acts.
pub const MAX_MEMORY_PERCENT_OF_LIMIT: u64 = 50;
/// Where the proxy reads its memory limit under cgroup v2, then v1 ("max" or a value near
/// `i64::MAX`: no limit; neither file: no limit, `--max-memory` then defaults to none).
pub const CGROUP_V2_MEMORY_MAX: &str = "/sys/fs/cgroup/memory.max";
pub const CGROUP_V1_MEMORY_LIMIT: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
/// Default delay between attempts of a `--*-connect` endpoint (libzmq's ZMQ_RECONNECT_IVL).
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Default cap of the doubling reconnect backoff; zero: none, every attempt waits
/// [`RECONNECT_INTERVAL`] (libzmq's ZMQ_RECONNECT_IVL_MAX default).
pub const RECONNECT_INTERVAL_MAX: Duration = Duration::ZERO;
/// Default TCP connect timeout; zero: the kernel's (libzmq's ZMQ_CONNECT_TIMEOUT default).
pub const CONNECT_TIMEOUT: Duration = Duration::ZERO;
/// Default of `--<socket>-nodrop` (ZMQ_XPUB_NODROP): subscribers that are full lose messages.
pub const XPUB_NODROP: bool = false;
/// TCP keepalive on every peer connection: a peer whose host vanished without a FIN or RST
/// (a node lost, a pod's network torn down) is closed after about idle + interval x retries
/// (60 s) instead of holding its routing id, its subscriptions upstream and its queue
/// forever. Keepalive only probes idle connections, so a slow peer that is simply not reading
/// is never cut off by it. These are the defaults of `--<socket>-tcp-keepalive*`.
pub const TCP_KEEPALIVE: bool = true;
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Longest accepted reconnect interval, its maximum and the connect timeout: one hour, in ms.
pub const MAX_MILLIS: i64 = 3_600_000;
/// Linux's bounds of TCP_KEEPIDLE / TCP_KEEPINTVL (seconds) and TCP_KEEPCNT.
pub const MAX_KEEPALIVE_SECS: i64 = 32_767;
pub const MAX_KEEPALIVE_COUNT: i64 = 127;

/// Heartbeats of the binary: none, as libzmq (no PINGs sent; PINGs from peers are answered, and a
/// peer's PING TTL is honoured). Longest accepted interval and timeout: an hour.
pub const MAX_HEARTBEAT_MS: i32 = 3_600_000;
/// Longest accepted heartbeat TTL: libzmq peers turn the TTL's deciseconds back into
/// milliseconds in 16 bits, so 655 deciseconds is the most they read right (more wraps round).
pub const MAX_HEARTBEAT_TTL_MS: i32 = 65_500;

/// Port on which each replica of a federated proxy accepts the other replicas' links
/// (`--federation-bind tcp://0.0.0.0:<port>` in the operator's pods; `spec.federationPort`).
pub const DEFAULT_FEDERATION_PORT: i32 = 5570;

/// Longest Secret or ConfigMap name (a DNS-1123 subdomain).
pub const MAX_OBJECT_NAME_LEN: usize = 253;
/// Longest key of a Secret or ConfigMap.
pub const MAX_DATA_KEY_LEN: usize = 253;
/// The key of the server's Secret read when `serverKey.key` is not given: the file name
/// `zmq-proxy keygen --zcert server` writes the secret certificate to.
pub const DEFAULT_SERVER_KEY_KEY: &str = "server_secret";

/// Which addresses a `connect` entry reaches when it sets no `addresses`: every address its
/// name resolves to, followed by DNS, because on Kubernetes a name (a headless Service) stands
/// for a set of pods that changes.
pub const DEFAULT_CONNECT_ADDRESSES: &str = "all";
/// Most `connect` entries per socket: each is a name the proxy follows, and the CEL rules that
/// read the list are priced by its length.
pub const MAX_CONNECT_TARGETS: usize = 16;
/// Most labels of one `connect` selector.
pub const MAX_SELECTOR_LABELS: usize = 16;
/// The key of a Secret holding a CURVE server's public key when `serverPublicKeyRef.key` is not
/// given: the file name `zmq-proxy keygen --zcert server` writes the public certificate to.
pub const DEFAULT_SERVER_PUBLIC_KEY_KEY: &str = "server";
/// The key of a Secret holding the proxy's CURVE client secret key when `clientKey.key` is not
/// given: what `zmq-proxy keygen --zcert client` writes.
pub const DEFAULT_CLIENT_KEY_KEY: &str = "client_secret";
/// `--resolve-interval`: the longest time between two lookups of a `--<socket>-connect-all`
/// name (a shorter record TTL makes it sooner). Kubernetes DNS (CoreDNS) answers for Services
/// with a TTL of 5 s: a new ready pod gets work within about that.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Longest accepted `--resolve-interval`: an hour, in seconds.
pub const MAX_RESOLVE_INTERVAL_SECS: f64 = 3600.0;
