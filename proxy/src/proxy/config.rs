//! The validated whole: the sockets, the control and HTTP listeners, the drain and the log
//! format, as the command line or the `--config` manifest gives them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zmq_proxy_api::defaults::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_LAME_DUCK, DEFAULT_RESOLVE_INTERVAL};
use zmq_proxy_api::endpoint::Endpoint;

use crate::engine::curve::Mechanism;
use crate::engine::socket_config::SocketConfig;
use crate::federation::FederationConfig;

/// How the proxy's log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A validated configuration: everything the proxy needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    pub frontend: SocketConfig,
    pub backend: SocketConfig,
    pub capture: Option<SocketConfig>,
    pub control_bind: Option<Endpoint>,
    /// What the control socket speaks (it only binds: NULL or a CURVE server).
    pub control_security: Mechanism,
    pub http_bind: Option<String>,
    pub drain_timeout: Duration,
    pub lame_duck: Duration,
    /// `--max-memory`: bytes the proxy may hold for its peers (messages being assembled and
    /// frames queued to peers).
    pub max_memory: MaxMemory,
    /// `--pause-file`: PAUSE/RESUME from a file's content (the ops layer's pause-file watcher).
    pub pause_file: Option<PathBuf>,
    /// A manifest's `paused: true`: the proxy starts paused (RESUME on the control socket
    /// starts it forwarding).
    pub start_paused: bool,
    pub log_format: LogFormat,
    /// `--federation-*`: this proxy is one replica of several that act as one.
    pub federation: Option<FederationConfig>,
    /// `--resolve-interval`: the longest time between two lookups of a connect-all name.
    pub resolve_interval: Duration,
    /// `--dns-server`: the one DNS server asked for connect-all names instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// What the configuration holds that this run does not act on (a manifest's Kubernetes
    /// placement fields), logged as warnings at the start.
    pub warnings: Vec<String>,
}

impl ProxyConfig {
    /// A configuration with defaults for everything but the two sockets.
    pub fn new(frontend: SocketConfig, backend: SocketConfig) -> Self {
        ProxyConfig {
            frontend,
            backend,
            capture: None,
            control_bind: None,
            control_security: Mechanism::Null,
            http_bind: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lame_duck: DEFAULT_LAME_DUCK,
            max_memory: MaxMemory::default(),
            pause_file: None,
            start_paused: false,
            log_format: LogFormat::Text,
            federation: None,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            dns_server: None,
            warnings: Vec::new(),
        }
    }

    /// The frontend, backend and capture sockets with their names.
    pub fn named_sockets(&self) -> Vec<(&'static str, &SocketConfig)> {
        let mut all = vec![("frontend", &self.frontend), ("backend", &self.backend)];
        all.extend(self.capture.iter().map(|c| ("capture", c)));
        all
    }
}

/// The proxy-wide memory budget as configured: unset (the binary applies its share of the
/// cgroup's memory limit, see [`MaxMemory::resolve`]), no limit, or a number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MaxMemory {
    #[default]
    Unset,
    Unlimited,
    Bytes(u64),
}

impl MaxMemory {
    /// The limit in bytes, if any; unset is no limit (a proxy started without the binary's
    /// resolution, as in tests).
    pub fn bytes(self) -> Option<u64> {
        match self {
            MaxMemory::Bytes(n) => Some(n),
            MaxMemory::Unset | MaxMemory::Unlimited => None,
        }
    }

    /// Unset becomes the default share of `cgroup_limit` (the container's memory limit), or no
    /// limit without one; what was set stays.
    pub fn resolve(self, cgroup_limit: Option<u64>) -> MaxMemory {
        match (self, cgroup_limit) {
            (MaxMemory::Unset, Some(l)) => {
                MaxMemory::Bytes(zmq_proxy_api::memory::budget_of_limit(l))
            }
            (MaxMemory::Unset, None) => MaxMemory::Unlimited,
            (set, _) => set,
        }
    }
}

/// A configuration problem, worded for one line after `zmq-proxy: error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
