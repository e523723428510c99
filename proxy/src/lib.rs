//! zmq_proxy(3) as a library: the socket vocabulary shared with the operator, the validated
//! configuration, and the forwarding loop the `zmq-proxy` binary runs.
//!
//! - [`socket`]: socket types, allowed pairs and the manifest's socket section (shared).
//! - [`config`]: every default, the command line, the `--config` manifest, validation.
//! - [`endpoint`]: `tcp://HOST:PORT` parsing (IPv4, `[IPv6]`, host names, `*`).
//! - [`net`]: TCP for endpoints: dual-stack listeners for `*`/`[::]` (IPv4 fallback), connects
//!   that try each resolved address, bind errors.
//! - [`zmtp`]: the ZMTP 3.1 wire protocol (greeting, READY, frames, subscriptions in both forms).
//! - [`heartbeat`]: ZMTP heartbeats (PING/PONG): settings, wire form, per-connection clock.
//! - [`curve`]: the CurveZMQ mechanism (RFC 26): keys, allow-lists, handshakes, MESSAGE boxes.
//! - [`sockets`]: binding/connecting, one task per connection, per-socket-type send policy.
//! - [`subscriptions`]: XPUB subscription refcounting.
//! - [`forward`]: the pumps, capture tee, PAUSE state and drain ([`Proxy`]).
//! - [`counters`]: the shared counters (STATISTICS order, contract names).
//! - [`security`]: the manifest's per-socket `curve` section (shared with the CRD).
//! - [`steer`]: the zmq_proxy_steerable control socket (`--control-bind`).
//! - [`pause_file`]: PAUSE/RESUME from a file's content (`--pause-file`, the operator's
//!   `spec.paused`).
//! - [`metrics`], [`http`]: /metrics, /healthz, /readyz (`--http-bind`), the drop summary.
//! - [`options`]: the per-socket libzmq options (HWMs, message size, keepalive, reconnect, nodrop).
//! - [`ops`]: starts the control socket, HTTP listener and drop summary beside a [`Proxy`].

pub mod config;
pub mod counters;
pub mod curve;
pub mod forward;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod options;
pub mod pause_file;
pub mod sockets;
pub mod sodium_box;
pub mod state;
pub mod steer;
pub mod subscriptions;
pub mod zmtp;

pub use config::ProxyConfig;
pub use counters::{Counters, Snapshot};
pub use forward::{Ending, Proxy};
pub use state::ProxyState;
