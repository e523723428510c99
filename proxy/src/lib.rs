//! zmq_proxy(3) as a library: the validated configuration and the forwarding loop the
//! `zmq-proxy` binary runs. The spec it shares with the operator (socket types, options,
//! heartbeat and CURVE sections, endpoints, defaults) is the `zmq-proxy-api` crate.
//!
//! The source is in layers, each importing only the layers before it:
//!
//! - `wire`: the ZMTP 3.1 codec, greeting, commands, subscriptions in both forms, PING forms,
//!   CURVE keys and MESSAGE boxes (libsodium's, sealed and opened in place); no I/O.
//! - `engine`: TCP (dual-stack listeners, connects that try each address), the greeting and the
//!   NULL and CURVE handshakes, key files and allow-lists, heartbeat clocks, the shared counters,
//!   the validated per-socket config and the internal tunables.
//! - `policy`: binding and connecting, one task per connection, per-socket-type send policy,
//!   XPUB subscription refcounts, the drain.
//! - `federation`: replicas that act as one proxy: the link format, the routing decisions (the
//!   one-hop rule), the other replicas and the link connections (see docs/federation.md).
//! - `proxy`: the validated whole ([`ProxyConfig`]), the pumps and capture tee ([`Proxy`]), and
//!   the PAUSE/RESUME/TERMINATE state ([`ProxyState`]).
//! - `ops`: the control socket (`--control-bind`), the pause file, /metrics, /healthz, /readyz
//!   and the drop summary, started beside a [`Proxy`] ([`Ops`]).
//! - `cli`: the clap command line ([`Cli`]), its option and heartbeat flags, the `--config`
//!   manifest reader (both end in one [`ProxyConfig`]), and `keygen`.
//!
//! The modules are private; what the binary, the tests, the benchmarks and the operator's
//! cross-checks use is re-exported here, with the CURVE and ZMTP pieces a test peer needs in
//! [`curve`] and [`zmtp`].

mod cli;
mod engine;
mod federation;
mod ops;
mod policy;
mod proxy;
mod wire;

pub use cli::keygen::keygen;
pub use cli::{
    Cli, Command, LocalManifest, ManifestSets, load_manifest, pairs_table, parse_manifest,
};
pub use engine::counters::{Counters, DropReason, Snapshot};
pub use engine::fd_room::raise_to_hard as raise_fd_limit;
pub use engine::socket_config::SocketConfig;
pub use engine::tunables::RUNTIME_WORKER_THREADS;
pub use federation::{Federation, FederationSnapshot};
pub use ops::Ops;
pub use ops::cgroup::memory_limit;
pub use proxy::config::{ConfigError, LogFormat, MaxMemory, ProxyConfig};
pub use proxy::forward::{Ending, Proxy};
pub use proxy::state::ProxyState;

/// The CurveZMQ pieces a peer of the proxy needs: keys and zcert texts, the mechanism a socket
/// speaks, and the handshake that ends in a session of MESSAGE boxes.
pub mod curve {
    pub use crate::engine::curve::{
        Allow, AllowList, CurveClient, CurveServer, Established, Mechanism, Security, Session,
        handshake,
    };
    pub use crate::wire::curve::{
        CurveError, KeyError, Opener, PublicKey, Sealer, SecretKey, zcert_public_text,
        zcert_secret_text,
    };
}

/// The ZMTP codec pieces a test peer needs: greetings, frames and the decoder.
pub mod zmtp {
    pub use crate::wire::zmtp::{
        Decoder, FrameOpener, GREETING_LEN, Item, encode_message, greeting, ready_frame,
    };
}

/// The private parsers and handshakes the `fuzz/` targets drive, under the paths they use. Not
/// an API: nothing outside `fuzz/` may depend on it.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cli::parse_manifest;
    pub use crate::engine::counters::Counters;
    pub use crate::engine::tunables::CONTROL_MAX_BYTES;
    pub use crate::proxy::state::ProxyState;

    pub mod zmtp {
        pub use crate::engine::handshake::handshake;
        pub use crate::wire::zmtp::*;
    }

    pub mod heartbeat {
        pub use crate::wire::ping::ping_ttl;
    }

    pub mod steer {
        pub use crate::ops::steer::{Command, apply, parse};
    }

    pub mod state {
        pub use crate::proxy::state::parse;
    }
}
