//! The spec of a ZeroMQ proxy, shared by the `zmq-proxy` binary and the operator: plain data
//! with serde and schemars, no runtime. What a proxy's sockets may be, the manifest's socket
//! section and its rules, and those rules again as the CRD's CEL texts, so the proxy, the
//! operator and the API server refuse the same things with the same words.
//!
//! Modules, each importing only those above it:
//! - [`defaults`]: every default and bound (imports nothing).
//! - [`error`]: the error of a manifest section.
//! - [`endpoint`]: `tcp://HOST:PORT` and `HOST:PORT` parsing.
//! - [`socket`]: socket types, allowed pairs, capture types, refusal texts, [`socket::Role`].
//! - [`federation`]: the patterns whose replicas federate.
//! - [`schema_rule`]: one CEL rule as the CRD's JSON carries it.
//! - [`connect`]: where a data socket connects (Services, label selectors, endpoints).
//! - [`memory`]: byte quantities (`512Mi`) and the memory budget's default from a limit.
//! - [`options`]: per-socket libzmq options (HWMs, message size, keepalive, reconnect, nodrop).
//! - [`heartbeat`]: the `heartbeat*` fields and the values a connection applies.
//! - [`security`]: the CURVE sections (file paths for `--config`, Secrets on Kubernetes).
//! - [`manifest`]: the socket section of a `ZmqProxy` spec ([`manifest::ProxySockets`]).
//! - [`kubernetes`]: the defaults the operator gives its pods (heartbeats, lame duck).
//! - [`local`]: what each spec field means to `zmq-proxy --config` on one machine.
//! - [`cel`]: the rules above as CEL validation rules for the CRD.

pub mod cel;
pub mod connect;
pub mod defaults;
pub mod endpoint;
pub mod error;
pub mod federation;
pub mod heartbeat;
pub mod ipc;
pub mod kubernetes;
pub mod local;
pub mod manifest;
pub mod memory;
pub mod options;
pub mod schema_rule;
pub mod security;
pub mod socket;
pub mod transport;
