//! zmq_proxy(3) as a library: the validated configuration and the forwarding loop the
//! `zmq-proxy` binary runs. The spec it shares with the operator (socket types, options,
//! heartbeat and CURVE sections, endpoints, defaults) is the `zmq-proxy-api` crate.
//!
//! - [`config`]: internal tunables, the command line, the `--config` manifest, validation.
//! - [`options`]: the per-socket option flags (`--<socket>-sndhwm`, ...).
//! - [`net`]: TCP for endpoints: dual-stack listeners for `*`/`[::]` (IPv4 fallback), connects
//!   that try each resolved address, bind errors.
//! - [`zmtp`]: the ZMTP 3.1 wire protocol (greeting, READY, frames, subscriptions in both forms).
//! - [`heartbeat`]: ZMTP heartbeats at run time: the flags, the PING wire form, the clocks.
//! - [`curve`]: the CurveZMQ mechanism (RFC 26): keys, allow-lists, handshakes, MESSAGE boxes;
//!   [`sodium_box`]: libsodium's boxes sealed and opened in place.
//! - [`sockets`]: binding/connecting, one task per connection, per-socket-type send policy.
//! - [`subscriptions`]: XPUB subscription refcounting.
//! - [`state`]: PAUSE/RESUME/TERMINATE: the states, the transition, the first state.
//! - [`forward`]: the pumps, capture tee and drain ([`Proxy`]).
//! - [`counters`]: the shared counters (STATISTICS order, contract names).
//! - [`steer`]: the zmq_proxy_steerable control socket (`--control-bind`).
//! - [`pause_file`]: PAUSE/RESUME from a file's content (`--pause-file`, the operator's
//!   `spec.paused`).
//! - [`metrics`], [`http`]: /metrics, /healthz, /readyz (`--http-bind`), the drop summary.
//! - [`ops`]: starts the control socket, HTTP listener and drop summary beside a [`Proxy`].

pub mod config;
pub mod counters;
pub mod curve;
pub mod forward;
pub mod heartbeat;
pub mod http;
pub mod manifest_fields;
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
