//! The command line (clap derive, each flag also read from `ZMQ_PROXY_<FLAG>`), the `ZmqProxy`
//! manifest read by `--config`, and the validation that turns either into one [`ProxyConfig`] (the
//! user-facing defaults and bounds are the api crate's `defaults.rs`). The per-socket option flags
//! are `options.rs`, the heartbeat flags `heartbeat.rs`, the manifest's known fields (what an
//! unknown one is refused with) `manifest_fields.rs`.

pub(crate) mod federation;
pub(crate) mod heartbeat;
pub(crate) mod keygen;
pub(crate) mod manifest_connect;
pub(crate) mod manifest_fields;
pub(crate) mod options;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use zmq_proxy_api::defaults::{
    MAX_DRAIN_TIMEOUT_SECS, MAX_LAME_DUCK_SECS, MAX_RESOLVE_INTERVAL_SECS,
};
use zmq_proxy_api::endpoint::{Direction, Endpoint};
use zmq_proxy_api::heartbeat::FieldNames;
use zmq_proxy_api::manifest::{ProxySockets, SocketSpec};
use zmq_proxy_api::options::{Spelling, spec_from_flag_texts};
use zmq_proxy_api::security::CurveSpec;
use zmq_proxy_api::socket::{
    CAPTURE_TYPES, Role, SUPPORTED_PAIRS, SocketType, capture_type_refusal, pair_refusal,
};
use zmq_proxy_api::transport::SocketEndpoint;

use crate::engine::curve::{Mechanism, Security};
use crate::engine::socket_config::SocketConfig;
use crate::proxy::config::{ConfigError, LogFormat, MaxMemory, ProxyConfig};
use federation::FederationFlags;
use heartbeat::HeartbeatFlags;
use options::{BackendOptionFlags, CaptureOptionFlags, FrontendOptionFlags};

/// `--log-format`'s values, spelled as clap's derive spells them.
impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Text, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }))
    }
}

/// Command line, exactly the contract's flags. Every flag may come from `ZMQ_PROXY_<FLAG>`;
/// repeatable endpoint flags split the variable on commas. Each flag's help names its default;
/// the flags of one socket share its heading.
#[derive(Parser, Debug, Default)]
#[command(
    name = "zmq-proxy",
    version,
    about = "zmq_proxy(3) as a standalone binary: shared queue, forwarder, pipeline, with capture",
    after_help = types_and_pairs()
)]
pub struct Cli {
    /// A ZmqProxy manifest (the YAML a user would kubectl apply) run here: its sockets bind on
    /// --bind-host; unknown fields are refused; see docs/proxy.md for what each Kubernetes field
    /// means locally [default: none, the sockets come from the flags]
    #[arg(long, env = "ZMQ_PROXY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Host every socket of the --config manifest binds on, control and metricsPort included:
    /// 127.0.0.1 keeps them on this machine, * opens them on every IPv6 and IPv4 address
    /// [default: 127.0.0.1]
    #[arg(long, env = "ZMQ_PROXY_BIND_HOST", value_name = "HOST")]
    pub bind_host: Option<String>,
    /// frontend socket type: ROUTER, DEALER, XSUB, XPUB, SUB, PUB, PULL or PUSH, forming an allowed pair with the backend's (listed below) [default: none, required without --config]
    #[arg(long, env = "ZMQ_PROXY_FRONTEND_TYPE", value_name = "T", value_parser = parse_data_type, help_heading = "Frontend socket")]
    pub frontend_type: Option<SocketType>,
    /// tcp://HOST:PORT or ipc://PATH the frontend listens on (HOST * = every IPv6 and IPv4 address; ipc://@NAME = Linux abstract name; ipc://* = a new temporary path); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_BIND",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Frontend socket"
    )]
    pub frontend_bind: Vec<String>,
    /// tcp://HOST:PORT or ipc://PATH the frontend connects to (reconnecting as libzmq does); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CONNECT",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Frontend socket"
    )]
    pub frontend_connect: Vec<String>,
    /// tcp://HOST:PORT the frontend connects to at every address HOST resolves to (A and AAAA), following the name as addresses come and go (see --resolve-interval); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CONNECT_ALL",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Frontend socket"
    )]
    pub frontend_connect_all: Vec<String>,
    /// frontend: the CURVE server's secret key file (Z85 or zcert secret) for its binds [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CURVE_SERVER_KEY_FILE",
        value_name = "FILE",
        help_heading = "Frontend socket"
    )]
    pub frontend_curve_server_key_file: Option<PathBuf>,
    /// frontend: allowed CURVE client keys, a file (one Z85 key per line) or a zcert directory [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CURVE_AUTHORIZED_KEYS",
        value_name = "PATH",
        help_heading = "Frontend socket"
    )]
    pub frontend_curve_authorized_keys: Option<PathBuf>,
    /// frontend: the CURVE server public key (Z85) of its connect endpoints [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CURVE_SERVER_PUBLIC_KEY",
        value_name = "Z85",
        help_heading = "Frontend socket"
    )]
    pub frontend_curve_server_public_key: Option<String>,
    /// frontend: a file holding that public key (Z85 or zcert) [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CURVE_SERVER_PUBLIC_KEY_FILE",
        value_name = "FILE",
        help_heading = "Frontend socket"
    )]
    pub frontend_curve_server_public_key_file: Option<PathBuf>,
    /// frontend: this proxy's CURVE client secret key file for its connects [default: ephemeral]
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_CURVE_CLIENT_KEY_FILE",
        value_name = "FILE",
        help_heading = "Frontend socket"
    )]
    pub frontend_curve_client_key_file: Option<PathBuf>,
    /// backend socket type: one that forms an allowed pair with the frontend's (listed below) [default: none, required without --config]
    #[arg(long, env = "ZMQ_PROXY_BACKEND_TYPE", value_name = "T", value_parser = parse_data_type, help_heading = "Backend socket")]
    pub backend_type: Option<SocketType>,
    /// tcp://HOST:PORT or ipc://PATH the backend listens on (HOST * = every IPv6 and IPv4 address; ipc://@NAME = Linux abstract name; ipc://* = a new temporary path); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_BIND",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Backend socket"
    )]
    pub backend_bind: Vec<String>,
    /// tcp://HOST:PORT or ipc://PATH the backend connects to (reconnecting as libzmq does); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CONNECT",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Backend socket"
    )]
    pub backend_connect: Vec<String>,
    /// tcp://HOST:PORT the backend connects to at every address HOST resolves to (A and AAAA), following the name as addresses come and go (see --resolve-interval); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CONNECT_ALL",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Backend socket"
    )]
    pub backend_connect_all: Vec<String>,
    /// backend: the CURVE server's secret key file (Z85 or zcert secret) for its binds [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CURVE_SERVER_KEY_FILE",
        value_name = "FILE",
        help_heading = "Backend socket"
    )]
    pub backend_curve_server_key_file: Option<PathBuf>,
    /// backend: allowed CURVE client keys, a file (one Z85 key per line) or a zcert directory [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CURVE_AUTHORIZED_KEYS",
        value_name = "PATH",
        help_heading = "Backend socket"
    )]
    pub backend_curve_authorized_keys: Option<PathBuf>,
    /// backend: the CURVE server public key (Z85) of its connect endpoints [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CURVE_SERVER_PUBLIC_KEY",
        value_name = "Z85",
        help_heading = "Backend socket"
    )]
    pub backend_curve_server_public_key: Option<String>,
    /// backend: a file holding that public key (Z85 or zcert) [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CURVE_SERVER_PUBLIC_KEY_FILE",
        value_name = "FILE",
        help_heading = "Backend socket"
    )]
    pub backend_curve_server_public_key_file: Option<PathBuf>,
    /// backend: this proxy's CURVE client secret key file for its connects [default: ephemeral]
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_CURVE_CLIENT_KEY_FILE",
        value_name = "FILE",
        help_heading = "Backend socket"
    )]
    pub backend_curve_client_key_file: Option<PathBuf>,
    /// capture socket type: PUB, DEALER or PUSH, sent a copy of every message, all frames [default: none, required without --config]
    #[arg(long, env = "ZMQ_PROXY_CAPTURE_TYPE", value_name = "T", value_parser = parse_capture_type, help_heading = "Capture socket")]
    pub capture_type: Option<SocketType>,
    /// tcp://HOST:PORT or ipc://PATH the capture listens on (HOST * = every IPv6 and IPv4 address; ipc://@NAME = Linux abstract name; ipc://* = a new temporary path); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_BIND",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Capture socket"
    )]
    pub capture_bind: Vec<String>,
    /// tcp://HOST:PORT or ipc://PATH the capture connects to (reconnecting as libzmq does); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CONNECT",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Capture socket"
    )]
    pub capture_connect: Vec<String>,
    /// tcp://HOST:PORT the capture connects to at every address HOST resolves to (A and AAAA), following the name as addresses come and go (see --resolve-interval); repeatable [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CONNECT_ALL",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Capture socket"
    )]
    pub capture_connect_all: Vec<String>,
    /// capture: the CURVE server's secret key file (Z85 or zcert secret) for its binds [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CURVE_SERVER_KEY_FILE",
        value_name = "FILE",
        help_heading = "Capture socket"
    )]
    pub capture_curve_server_key_file: Option<PathBuf>,
    /// capture: allowed CURVE client keys, a file (one Z85 key per line) or a zcert directory [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CURVE_AUTHORIZED_KEYS",
        value_name = "PATH",
        help_heading = "Capture socket"
    )]
    pub capture_curve_authorized_keys: Option<PathBuf>,
    /// capture: the CURVE server public key (Z85) of its connect endpoints [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CURVE_SERVER_PUBLIC_KEY",
        value_name = "Z85",
        help_heading = "Capture socket"
    )]
    pub capture_curve_server_public_key: Option<String>,
    /// capture: a file holding that public key (Z85 or zcert) [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CURVE_SERVER_PUBLIC_KEY_FILE",
        value_name = "FILE",
        help_heading = "Capture socket"
    )]
    pub capture_curve_server_public_key_file: Option<PathBuf>,
    /// capture: this proxy's CURVE client secret key file for its connects [default: ephemeral]
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_CURVE_CLIENT_KEY_FILE",
        value_name = "FILE",
        help_heading = "Capture socket"
    )]
    pub capture_curve_client_key_file: Option<PathBuf>,
    /// tcp://HOST:PORT of zmq_proxy_steerable's REP control socket: PAUSE, RESUME, TERMINATE,
    /// STATISTICS [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CONTROL_BIND",
        value_name = "EP",
        help_heading = "Control socket"
    )]
    pub control_bind: Option<String>,
    /// control: the CURVE server's secret key file (Z85 or zcert secret) for its binds [default: none, NULL security]
    #[arg(
        long,
        env = "ZMQ_PROXY_CONTROL_CURVE_SERVER_KEY_FILE",
        value_name = "FILE",
        help_heading = "Control socket"
    )]
    pub control_curve_server_key_file: Option<PathBuf>,
    /// control: allowed CURVE client keys, a file (one Z85 key per line) or a zcert directory [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_CONTROL_CURVE_AUTHORIZED_KEYS",
        value_name = "PATH",
        help_heading = "Control socket"
    )]
    pub control_curve_authorized_keys: Option<PathBuf>,
    /// CURVE server sockets without an allow-list accept any client that knows the server key
    /// [default: false]
    #[arg(long, env = "ZMQ_PROXY_CURVE_ALLOW_ANY", help_heading = "CURVE server sockets")]
    pub curve_allow_any: bool,
    /// HOST:PORT of the /metrics, /healthz, /readyz listener, e.g. *:9090 (IPv6 and IPv4),
    /// 0.0.0.0:9090, [::1]:9090 [default: none, no listener]
    #[arg(
        long,
        env = "ZMQ_PROXY_HTTP_BIND",
        value_name = "HOST:PORT",
        help_heading = "Metrics and probes"
    )]
    pub http_bind: Option<String>,
    /// Seconds a stopping proxy keeps delivering what it already read [default: 5]
    #[arg(
        long,
        env = "ZMQ_PROXY_DRAIN_TIMEOUT",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Stopping and pausing"
    )]
    pub drain_timeout: Option<String>,
    /// Seconds a stopping proxy first keeps serving as usual (/readyz answers 503), so load
    /// balancers stop sending new connections before it drains [default: 0]
    #[arg(
        long,
        env = "ZMQ_PROXY_LAME_DUCK",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Stopping and pausing"
    )]
    pub lame_duck: Option<String>,
    /// Bytes the proxy may hold for its peers, all sockets together: messages being received
    /// and frames queued to peers. Past it, the peer sending the largest unfinished message is
    /// disconnected (counted as over_budget). Bytes, or 512Mi, 2Gi; 0 = no limit [default: 50%
    /// of the cgroup memory limit when there is one, else no limit]
    #[arg(
        long,
        env = "ZMQ_PROXY_MAX_MEMORY",
        value_name = "BYTES",
        allow_hyphen_values = true,
        help_heading = "Memory"
    )]
    pub max_memory: Option<String>,
    /// A file holding `true` (PAUSE) or `false` (RESUME), re-read while the proxy runs; the
    /// proxy starts in the state it says (how the operator delivers `spec.paused`) [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_PAUSE_FILE",
        value_name = "FILE",
        help_heading = "Stopping and pausing"
    )]
    pub pause_file: Option<PathBuf>,
    /// Longest time between two DNS lookups of a --<socket>-connect-all name; a record TTL
    /// shorter than this makes it sooner (never under 1 s) [default: 5]
    #[arg(
        long,
        env = "ZMQ_PROXY_RESOLVE_INTERVAL",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Connecting to every address of a name"
    )]
    pub resolve_interval: Option<String>,
    /// IP:PORT of the DNS server asked for --<socket>-connect-all names instead of those of
    /// /etc/resolv.conf (and without /etc/hosts) [default: none, the system's]
    #[arg(
        long,
        env = "ZMQ_PROXY_DNS_SERVER",
        value_name = "IP:PORT",
        help_heading = "Connecting to every address of a name"
    )]
    pub dns_server: Option<String>,
    /// Log line format; the level comes from RUST_LOG (default info)
    #[arg(long, env = "ZMQ_PROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub frontend_options: FrontendOptionFlags,
    #[command(flatten)]
    pub backend_options: BackendOptionFlags,
    #[command(flatten)]
    pub capture_options: CaptureOptionFlags,
    #[command(flatten)]
    pub heartbeat: HeartbeatFlags,
    #[command(flatten)]
    pub federation: FederationFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands beside running the proxy.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a new CURVE keypair (Z85 public and secret lines), or write a zcert pair.
    Keygen {
        /// Write PATH (public zcert) and PATH_secret (secret zcert, mode 0600) instead.
        #[arg(long, value_name = "PATH")]
        zcert: Option<PathBuf>,
    },
    /// Print the socket types, the frontend/backend pairs the proxy forwards and the capture
    /// types.
    Pairs,
}

/// What each supported pair is for, in [`SUPPORTED_PAIRS`] order.
fn pair_use(frontend: SocketType) -> &'static str {
    match frontend {
        SocketType::Router => "shared queue: requests to workers, replies routed back",
        SocketType::Xsub => "forwarder: subscriptions flow upstream to the publishers",
        SocketType::Sub => "forwarder subscribed to everything upstream",
        _ => "pipeline, one direction",
    }
}

/// The socket types and the pairs, as `--help` ends and `zmq-proxy pairs` prints them.
pub fn types_and_pairs() -> String {
    let mut out = String::from(
        "Socket pairs (--frontend-type/--backend-type, either way round; `zmq-proxy pairs`):\n",
    );
    for (a, b) in SUPPORTED_PAIRS {
        let pair = format!("{a}/{b}");
        out.push_str(&format!("  {pair:<15}{}\n", pair_use(a)));
    }
    let capture: Vec<&str> = CAPTURE_TYPES.iter().map(|t| t.as_str()).collect();
    out.push_str(&format!(
        "Capture types (--capture-type): {}, sent a copy of every message, all frames.",
        capture.join(", ")
    ));
    out
}

/// `zmq-proxy pairs`: every accepted frontend/backend combination as a table, then the
/// capture types.
pub fn pairs_table() -> String {
    let mut out = format!("{:<10}{:<10}use\n", "FRONTEND", "BACKEND");
    for (a, b) in SUPPORTED_PAIRS {
        for (f, k) in [(a, b), (b, a)] {
            out.push_str(&format!("{:<10}{:<10}{}\n", f.as_str(), k.as_str(), pair_use(a)));
        }
    }
    let capture: Vec<&str> = CAPTURE_TYPES.iter().map(|t| t.as_str()).collect();
    out.push_str(&format!("\ncapture: {}\n", capture.join(", ")));
    out
}

/// One socket's CURVE settings as given (flags or manifest), before validation.
#[derive(Clone, Debug, Default)]
pub struct CurveSettings {
    pub server_key_file: Option<PathBuf>,
    pub authorized_keys: Option<PathBuf>,
    pub server_public_key: Option<String>,
    pub server_public_key_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl CurveSettings {
    fn is_empty(&self) -> bool {
        self.server_key_file.is_none()
            && self.authorized_keys.is_none()
            && self.server_public_key.is_none()
            && self.server_public_key_file.is_none()
            && self.client_key_file.is_none()
    }

    fn from_spec(spec: &CurveSpec) -> Self {
        CurveSettings {
            server_key_file: spec.server_key_file.as_ref().map(PathBuf::from),
            authorized_keys: spec.authorized_keys.as_ref().map(PathBuf::from),
            server_public_key: spec.server_public_key.clone(),
            server_public_key_file: spec.server_public_key_file.as_ref().map(PathBuf::from),
            client_key_file: spec.client_key_file.as_ref().map(PathBuf::from),
        }
    }
}

/// How a socket's CURVE settings are spelled, so refusals name the flag or the manifest field.
struct CurveNames {
    socket: &'static str,
    server_key_file: String,
    authorized_keys: String,
    server_public_key: String,
    server_public_key_file: String,
    client_key_file: String,
    allow_any: &'static str,
    bind: String,
    connect: String,
}

impl CurveNames {
    fn flags(socket: &'static str) -> Self {
        CurveNames {
            socket,
            server_key_file: format!("--{socket}-curve-server-key-file"),
            authorized_keys: format!("--{socket}-curve-authorized-keys"),
            server_public_key: format!("--{socket}-curve-server-public-key"),
            server_public_key_file: format!("--{socket}-curve-server-public-key-file"),
            client_key_file: format!("--{socket}-curve-client-key-file"),
            allow_any: "--curve-allow-any",
            bind: format!("--{socket}-bind"),
            connect: format!("--{socket}-connect"),
        }
    }

    fn manifest(socket: &'static str) -> Self {
        let f = |field: &str| format!("spec.{socket}.curve.{field}");
        CurveNames {
            socket,
            server_key_file: f("serverKeyFile"),
            authorized_keys: f("authorizedKeys"),
            server_public_key: f("serverPublicKey"),
            server_public_key_file: f("serverPublicKeyFile"),
            client_key_file: f("clientKeyFile"),
            allow_any: "spec.curveAllowAny",
            bind: format!("spec.{socket}.port"),
            connect: format!("spec.{socket}.connect"),
        }
    }
}

/// Turns one socket's CURVE settings into what its accepted and outgoing connections speak,
/// loading every key (and the allow-list) now, so a bad file stops the start with exit 2.
fn curve_security(
    names: &CurveNames,
    c: &CurveSettings,
    binds: bool,
    connects: bool,
    allow_any: bool,
) -> Result<Security, ConfigError> {
    use crate::engine::curve::{
        Allow, AllowList, CurveClient, CurveServer, PublicKey, SecretKey, load_public_key_file,
        load_secret_key_file,
    };
    if c.is_empty() {
        return Ok(Security::default());
    }
    let n = names;
    let socket = n.socket;
    if c.authorized_keys.is_some() && c.server_key_file.is_none() {
        return err(format!("{}: needs {}", n.authorized_keys, n.server_key_file));
    }
    let server_key_given = c.server_public_key.is_some() || c.server_public_key_file.is_some();
    if c.server_public_key.is_some() && c.server_public_key_file.is_some() {
        return err(format!(
            "{}: give either it or {}, not both",
            n.server_public_key_file, n.server_public_key
        ));
    }
    if c.client_key_file.is_some() && !server_key_given {
        return err(format!(
            "{}: needs {} (or {}): a CURVE client must know its server's key",
            n.client_key_file, n.server_public_key, n.server_public_key_file
        ));
    }
    if c.server_key_file.is_some() && !binds {
        return err(format!(
            "{}: {socket} does not bind (no {}); a connecting socket is a CURVE client: use {}",
            n.server_key_file, n.bind, n.server_public_key
        ));
    }
    if server_key_given && !connects {
        let flag = if c.server_public_key.is_some() {
            &n.server_public_key
        } else {
            &n.server_public_key_file
        };
        return err(format!("{flag}: {socket} has no {}", n.connect));
    }
    // A CURVE socket is CURVE on every endpoint: a NULL bind beside CURVE connects (or the
    // reverse) would be an open door nobody asked for.
    if binds && c.server_key_file.is_none() {
        return err(format!(
            "{}: required, {socket} is a CURVE socket and binds (its binds are the CURVE server)",
            n.server_key_file
        ));
    }
    if connects && !server_key_given {
        return err(format!(
            "{}: required, {socket} is a CURVE socket and connects (its connects are CURVE clients)",
            n.server_public_key
        ));
    }
    let mut security = Security::default();
    if let Some(path) = &c.server_key_file {
        let secret = load_secret_key_file(path)
            .map_err(|e| ConfigError(format!("{}: {e}", n.server_key_file)))?;
        let allow = match &c.authorized_keys {
            Some(p) => Allow::List(
                AllowList::load(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", n.authorized_keys)))?,
            ),
            None if allow_any => Allow::Any,
            None => {
                return err(format!(
                    "{}: required for a CURVE server socket (or {} to accept any client that knows the server key)",
                    n.authorized_keys, n.allow_any
                ));
            }
        };
        security.accepted = Mechanism::Server(std::sync::Arc::new(CurveServer {
            public: secret.public_key(),
            secret,
            allow,
        }));
    }
    if server_key_given {
        let server = match (&c.server_public_key, &c.server_public_key_file) {
            (Some(z), _) => PublicKey::from_z85(z)
                .map_err(|e| ConfigError(format!("{}: {e}", n.server_public_key)))?,
            (None, Some(p)) => load_public_key_file(p)
                .map_err(|e| ConfigError(format!("{}: {e}", n.server_public_key_file)))?,
            (None, None) => unreachable_key(),
        };
        let (secret, ephemeral) = match &c.client_key_file {
            Some(p) => (
                load_secret_key_file(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", n.client_key_file)))?,
                false,
            ),
            None => (SecretKey::generate(), true),
        };
        security.connected = Mechanism::Client(std::sync::Arc::new(CurveClient {
            public: secret.public_key(),
            secret,
            server,
            ephemeral,
        }));
    }
    Ok(security)
}

/// `server_key_given` was checked just before; kept out of line so no panic sits in the path.
fn unreachable_key() -> crate::engine::curve::PublicKey {
    crate::engine::curve::PublicKey::from_bytes([0; 32])
}

impl Cli {
    fn curve_settings(&self, socket: Role) -> CurveSettings {
        match socket {
            Role::Frontend => CurveSettings {
                server_key_file: self.frontend_curve_server_key_file.clone(),
                authorized_keys: self.frontend_curve_authorized_keys.clone(),
                server_public_key: self.frontend_curve_server_public_key.clone(),
                server_public_key_file: self.frontend_curve_server_public_key_file.clone(),
                client_key_file: self.frontend_curve_client_key_file.clone(),
            },
            Role::Backend => CurveSettings {
                server_key_file: self.backend_curve_server_key_file.clone(),
                authorized_keys: self.backend_curve_authorized_keys.clone(),
                server_public_key: self.backend_curve_server_public_key.clone(),
                server_public_key_file: self.backend_curve_server_public_key_file.clone(),
                client_key_file: self.backend_curve_client_key_file.clone(),
            },
            Role::Capture => CurveSettings {
                server_key_file: self.capture_curve_server_key_file.clone(),
                authorized_keys: self.capture_curve_authorized_keys.clone(),
                server_public_key: self.capture_curve_server_public_key.clone(),
                server_public_key_file: self.capture_curve_server_public_key_file.clone(),
                client_key_file: self.capture_curve_client_key_file.clone(),
            },
            Role::Control => CurveSettings {
                server_key_file: self.control_curve_server_key_file.clone(),
                authorized_keys: self.control_curve_authorized_keys.clone(),
                ..CurveSettings::default()
            },
        }
    }
}

fn parse_data_type(s: &str) -> Result<SocketType, String> {
    manifest_fields::parse_type_for(s, false)
}

fn parse_capture_type(s: &str) -> Result<SocketType, String> {
    manifest_fields::parse_type_for(s, true)
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Cli {
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        let drain = match &self.drain_timeout {
            Some(s) => Some(parse_drain("--drain-timeout", s)?),
            None => None,
        };
        let lame_duck = match &self.lame_duck {
            Some(s) => Some(parse_lame_duck("--lame-duck", s)?),
            None => None,
        };
        let http_bind = match self.http_bind.as_deref() {
            Some(h) => Some(parse_http_bind(h)?),
            None => None,
        };
        let max_memory = match self.max_memory.as_deref() {
            Some(s) => Some(parse_max_memory("--max-memory", s)?),
            None => None,
        };
        let mut cfg = if let Some(path) = &self.config {
            self.refuse_beside_config()?;
            let host = self.bind_host.as_deref().unwrap_or(DEFAULT_CONFIG_BIND_HOST);
            let m = load_manifest(path, host)?;
            // A flag and the manifest field it would override: neither may win silently.
            let both = [
                ("--drain-timeout", drain.is_some(), "spec.drainTimeoutSeconds", m.sets.drain),
                ("--lame-duck", lame_duck.is_some(), "spec.lameDuckSeconds", m.sets.lame_duck),
                ("--http-bind", http_bind.is_some(), "spec.metricsPort", m.sets.metrics_port),
                ("--pause-file", self.pause_file.is_some(), "spec.paused", m.sets.paused),
                ("--max-memory", max_memory.is_some(), "spec.maxMemoryBytes", m.sets.max_memory),
            ];
            if let Some((flag, _, field, _)) = both.iter().find(|(_, f, _, m)| *f && *m) {
                return err(format!(
                    "{flag} and the manifest's {field} both set it; keep one (--config {})",
                    path.display()
                ));
            }
            m.config
        } else {
            if self.bind_host.is_some() {
                return err(
                    "--bind-host applies to the sockets of a --config manifest; without --config each --<socket>-bind endpoint names its host",
                );
            }
            let mut cfg = self.sockets_from_flags()?;
            if let Some(s) = &self.control_bind {
                cfg.control_bind = Some(endpoint("--control-bind", s, Direction::Bind)?);
            }
            self.apply_curve_flags(&mut cfg)?;
            self.apply_option_flags(&mut cfg)?;
            self.apply_heartbeat_flags(&mut cfg)?;
            cfg
        };
        self.apply_resolve_flags(&mut cfg)?;
        if let Some(d) = drain {
            cfg.drain_timeout = d;
        }
        if let Some(d) = lame_duck {
            cfg.lame_duck = d;
        }
        if http_bind.is_some() {
            cfg.http_bind = http_bind;
        }
        if self.pause_file.is_some() {
            cfg.pause_file = self.pause_file;
        }
        if let Some(m) = max_memory {
            cfg.max_memory = m;
        }
        cfg.log_format = self.log_format;
        // Beside a manifest too: no field of it says what the replica's links are.
        cfg.federation =
            self.federation.resolve(cfg.frontend.socket_type, cfg.backend.socket_type)?;
        Ok(cfg)
    }

    /// `--resolve-interval` and `--dns-server`: how connect-all names are looked up, beside
    /// the flags' sockets or a manifest's alike.
    fn apply_resolve_flags(&self, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
        if let Some(s) = &self.resolve_interval {
            let d = parse_seconds("--resolve-interval", s, MAX_RESOLVE_INTERVAL_SECS)?;
            if d.is_zero() {
                return err(format!("--resolve-interval: {s:?} must be above 0 seconds"));
            }
            cfg.resolve_interval = d;
        }
        if let Some(s) = &self.dns_server {
            let addr = s.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "--dns-server: {s:?} is not IP:PORT (e.g. 10.96.0.10:53, [fd00::a]:53)"
                ))
            })?;
            cfg.dns_server = Some(addr);
        }
        Ok(())
    }

    /// Flags that would replace part of what a manifest defines: refused beside `--config`,
    /// whether set on the command line or in the environment, so no socket of the manifest is
    /// silently run some other way.
    fn refuse_beside_config(&self) -> Result<(), ConfigError> {
        let socket_flags = [
            ("--frontend-type", self.frontend_type.is_some()),
            ("--frontend-bind", !self.frontend_bind.is_empty()),
            ("--frontend-connect", !self.frontend_connect.is_empty()),
            ("--frontend-connect-all", !self.frontend_connect_all.is_empty()),
            ("--backend-type", self.backend_type.is_some()),
            ("--backend-bind", !self.backend_bind.is_empty()),
            ("--backend-connect", !self.backend_connect.is_empty()),
            ("--backend-connect-all", !self.backend_connect_all.is_empty()),
            ("--capture-type", self.capture_type.is_some()),
            ("--capture-bind", !self.capture_bind.is_empty()),
            ("--capture-connect", !self.capture_connect.is_empty()),
            ("--capture-connect-all", !self.capture_connect_all.is_empty()),
            ("--control-bind", self.control_bind.is_some()),
        ];
        if let Some((flag, _)) = socket_flags.iter().find(|(_, set)| *set) {
            return err(format!(
                "--config cannot be combined with {flag} (or its ZMQ_PROXY_ variable): the manifest defines the sockets, bound on --bind-host"
            ));
        }
        for socket in Role::ALL {
            if !self.curve_settings(socket).is_empty() {
                return err(format!(
                    "--config cannot be combined with --{socket}-curve-* flags: the manifest's spec.{socket}.curve defines them"
                ));
            }
        }
        if self.curve_allow_any {
            return err(
                "--config cannot be combined with --curve-allow-any: use spec.curveAllowAny",
            );
        }
        for socket in Role::DATA {
            if self.option_texts(socket).iter().any(Option::is_some) {
                return err(format!(
                    "--config cannot be combined with --{socket}-<option> flags (sndhwm, maxMsgSize, ...): set them in spec.{socket}"
                ));
            }
        }
        if let Some(flag) = self.heartbeat.first_given() {
            return err(format!(
                "--config cannot be combined with {flag}: the manifest's spec.<socket>.heartbeat* fields define heartbeats"
            ));
        }
        Ok(())
    }

    fn apply_curve_flags(&self, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
        let any = self.curve_allow_any;
        let mut sockets: Vec<(Role, &mut SocketConfig)> =
            vec![(Role::Frontend, &mut cfg.frontend), (Role::Backend, &mut cfg.backend)];
        if let Some(c) = cfg.capture.as_mut() {
            sockets.push((Role::Capture, c));
        } else if !self.curve_settings(Role::Capture).is_empty() {
            return err("--capture-curve-* flags need --capture-type");
        }
        for (name, sock) in sockets {
            let (binds, connects) = (!sock.bind.is_empty(), sock.connects());
            let names = CurveNames::flags(name.as_str());
            sock.security =
                curve_security(&names, &self.curve_settings(name), binds, connects, any)?;
        }
        let control = self.curve_settings(Role::Control);
        if cfg.control_bind.is_none() && !control.is_empty() {
            return err("--control-curve-server-key-file needs --control-bind");
        }
        let names = CurveNames::flags(Role::Control.as_str());
        let binds = cfg.control_bind.is_some();
        cfg.control_security = curve_security(&names, &control, binds, false, any)?.accepted;
        check_allow_any(cfg, any, "--curve-allow-any")
    }

    fn option_texts(&self, socket: Role) -> [Option<&str>; 12] {
        match socket {
            Role::Frontend => self.frontend_options.texts(),
            Role::Backend => self.backend_options.texts(),
            Role::Capture | Role::Control => self.capture_options.texts(),
        }
    }

    fn apply_option_flags(&self, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
        let mut sockets =
            vec![(Role::Frontend, &mut cfg.frontend), (Role::Backend, &mut cfg.backend)];
        match cfg.capture.as_mut() {
            Some(c) => sockets.push((Role::Capture, c)),
            None if self.option_texts(Role::Capture).iter().any(Option::is_some) => {
                return err("--capture-<option> flags need --capture-type");
            }
            None => {}
        }
        for (name, sock) in sockets {
            let spec = spec_from_flag_texts(name.as_str(), self.option_texts(name))
                .map_err(ConfigError)?;
            let capture = name == Role::Capture;
            sock.options = spec
                .resolve(Spelling::Flags(name.as_str()), sock.socket_type, capture)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        Ok(())
    }

    fn apply_heartbeat_flags(&self, cfg: &mut ProxyConfig) -> Result<(), ConfigError> {
        let mut sockets =
            vec![(Role::Frontend, &mut cfg.frontend), (Role::Backend, &mut cfg.backend)];
        match cfg.capture.as_mut() {
            Some(c) => sockets.push((Role::Capture, c)),
            None if !self.heartbeat.spec(Role::Capture).is_ok_and(|s| s.is_empty()) => {
                return err("--capture-heartbeat-* flags need --capture-type");
            }
            None => {}
        }
        for (name, sock) in sockets {
            let spec = self.heartbeat.spec(name).map_err(ConfigError)?;
            sock.heartbeat =
                spec.resolve(&FieldNames::flags(name.as_str())).map_err(ConfigError)?;
        }
        Ok(())
    }

    fn sockets_from_flags(&self) -> Result<ProxyConfig, ConfigError> {
        let Some(ft) = self.frontend_type else {
            return err("--frontend-type is required (or --config FILE)");
        };
        let Some(bt) = self.backend_type else {
            return err("--backend-type is required (or --config FILE)");
        };
        if let Some(reason) = pair_refusal(ft, bt) {
            return err(format!("--backend-type: {reason}"));
        }
        let (fc, bc) = (
            [&self.frontend_connect, &self.frontend_connect_all],
            [&self.backend_connect, &self.backend_connect_all],
        );
        let frontend = socket("frontend", ft, &self.frontend_bind, fc)?;
        let backend = socket("backend", bt, &self.backend_bind, bc)?;
        let capture = match self.capture_type {
            Some(ct) => {
                if let Some(reason) = capture_type_refusal(ct) {
                    return err(format!("--capture-type: {reason}"));
                }
                let cc = [&self.capture_connect, &self.capture_connect_all];
                Some(socket("capture", ct, &self.capture_bind, cc)?)
            }
            None if !self.capture_bind.is_empty()
                || !self.capture_connect.is_empty()
                || !self.capture_connect_all.is_empty() =>
            {
                return err(
                    "--capture-bind/--capture-connect/--capture-connect-all need --capture-type",
                );
            }
            None => None,
        };
        let mut cfg = ProxyConfig::new(frontend, backend);
        cfg.capture = capture;
        Ok(cfg)
    }
}

/// One socket from its flags; `connect` holds the plain connects, then the connect-all ones.
fn socket(
    name: &str,
    t: SocketType,
    bind: &[String],
    connect: [&Vec<String>; 2],
) -> Result<SocketConfig, ConfigError> {
    let bind: Vec<SocketEndpoint> = bind
        .iter()
        .map(|s| socket_endpoint(&format!("--{name}-bind"), s, Direction::Bind))
        .collect::<Result<_, _>>()?;
    let flag = format!("--{name}-connect");
    let plain: Vec<SocketEndpoint> = connect[0]
        .iter()
        .map(|s| socket_endpoint(&flag, s, Direction::Connect))
        .collect::<Result<_, _>>()?;
    let flag = format!("--{name}-connect-all");
    let all: Vec<Endpoint> = connect[1]
        .iter()
        .map(|s| {
            if s.trim().starts_with("ipc://") {
                return err(format!(
                    "{flag}: {s:?}: connect-all follows every address a host name resolves to, and an ipc:// endpoint has none; use --{name}-connect"
                ));
            }
            endpoint(&flag, s, Direction::Connect)
        })
        .collect::<Result<_, _>>()?;
    if bind.is_empty() && plain.is_empty() && all.is_empty() {
        return err(format!(
            "{name} needs at least one --{name}-bind, --{name}-connect or --{name}-connect-all"
        ));
    }
    let mut sock = SocketConfig::new(t, bind, plain);
    sock.connect_all = all;
    Ok(sock)
}

fn endpoint(flag: &str, s: &str, dir: Direction) -> Result<Endpoint, ConfigError> {
    Endpoint::parse(s, dir).map_err(|e| ConfigError(format!("{flag}: {e}")))
}

fn socket_endpoint(flag: &str, s: &str, dir: Direction) -> Result<SocketEndpoint, ConfigError> {
    SocketEndpoint::parse(s, dir).map_err(|e| ConfigError(format!("{flag}: {e}")))
}

fn parse_drain(field: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_seconds(field, s, MAX_DRAIN_TIMEOUT_SECS)
}

fn parse_lame_duck(field: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_seconds(field, s, MAX_LAME_DUCK_SECS)
}

/// `--max-memory` or `spec.maxMemoryBytes`: bytes, 0 for no limit.
fn parse_max_memory(field: &str, s: &str) -> Result<MaxMemory, ConfigError> {
    match zmq_proxy_api::memory::parse_bytes(s) {
        Ok(0) => Ok(MaxMemory::Unlimited),
        Ok(n) => Ok(MaxMemory::Bytes(n)),
        Err(e) => err(format!("{field}: {e}")),
    }
}

fn parse_seconds(field: &str, s: &str, max: f64) -> Result<Duration, ConfigError> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=max).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => err(format!("{field}: expected seconds between 0 and {max}, got {s:?}")),
    }
}

/// A manifest's number of seconds (YAML number or string) as the text the parsers take.
fn seconds_text(field: &str, v: &serde_yaml::Value) -> Result<String, ConfigError> {
    match v {
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::String(s) => Ok(s.clone()),
        _ => err(format!("{field}: expected a number of seconds")),
    }
}

pub const MANIFEST_API_VERSION: &str = "zmqproxy.io/v1alpha1";
pub const MANIFEST_KIND: &str = "ZmqProxy";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    api_version: Option<String>,
    kind: Option<String>,
    spec: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestSpec {
    #[serde(flatten)]
    sockets: ProxySockets,
    drain_timeout_seconds: Option<serde_yaml::Value>,
    lame_duck_seconds: Option<serde_yaml::Value>,
    #[serde(default)]
    curve_allow_any: Option<bool>,
    replicas: Option<i64>,
    paused: Option<bool>,
    metrics_port: Option<i64>,
    max_memory_bytes: Option<serde_yaml::Value>,
}

/// The `curve` section of each socket in a manifest, read beside [`ProxySockets`] (whose
/// socket types ignore it).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ManifestSecurity {
    frontend: Option<SocketCurve>,
    backend: Option<SocketCurve>,
    capture: Option<SocketCurve>,
    control: Option<SocketCurve>,
}

#[derive(Deserialize, Default)]
struct SocketCurve {
    curve: Option<CurveSpec>,
}

fn spec_curve(s: &Option<SocketCurve>) -> CurveSettings {
    s.as_ref().and_then(|s| s.curve.as_ref()).map(CurveSettings::from_spec).unwrap_or_default()
}

/// `--curve-allow-any` (or `spec.curveAllowAny`) without any CURVE server socket is a mistake
/// worth stopping for: whoever set it believed some socket was secured.
fn check_allow_any(cfg: &ProxyConfig, any: bool, name: &str) -> Result<(), ConfigError> {
    let server = |m: &Mechanism| matches!(m, Mechanism::Server(_));
    let mut all = vec![&cfg.frontend, &cfg.backend];
    all.extend(cfg.capture.as_ref());
    let some = all.iter().any(|s| server(&s.security.accepted)) || server(&cfg.control_security);
    if any && !some {
        return err(format!("{name}: no socket is a CURVE server (no server key file given)"));
    }
    Ok(())
}

/// Where `--config` binds the manifest's sockets unless `--bind-host` says otherwise: this
/// machine only. The control socket takes TERMINATE from whoever reaches it and a laptop moves
/// between networks, so opening the ports to others is a choice (`--bind-host '*'`), not a
/// default. The operator's pods get their endpoints as flags and bind every address.
pub const DEFAULT_CONFIG_BIND_HOST: &str = "127.0.0.1";

/// A manifest read by `--config`: the configuration, and which of the fields a flag could
/// also set were set, so the two are never both taken.
#[derive(Debug)]
pub struct LocalManifest {
    pub config: ProxyConfig,
    pub sets: ManifestSets,
}

/// The manifest fields that a flag can set too.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManifestSets {
    pub drain: bool,
    pub lame_duck: bool,
    pub metrics_port: bool,
    pub paused: bool,
    pub max_memory: bool,
}

/// Reads a `ZmqProxy` manifest (one YAML document) into a configuration whose sockets, control
/// and HTTP listener included, bind on `bind_host`.
pub fn load_manifest(
    path: &std::path::Path,
    bind_host: &str,
) -> Result<LocalManifest, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {shown}: cannot read: {e}")))?;
    let host = parse_bind_host(bind_host)?;
    read_manifest(&text, &host).map_err(|e| ConfigError(format!("--config {shown}: {}", e.0)))
}

/// A manifest as the operator's pods bind it: every socket on `*`.
pub fn parse_manifest(text: &str) -> Result<ProxyConfig, ConfigError> {
    read_manifest(text, "*").map(|m| m.config)
}

/// `--bind-host`: `*`, an IPv4 or IPv6 address (brackets optional) or a host name, held as
/// [`Endpoint::host`] holds it (IPv6 without brackets).
fn parse_bind_host(given: &str) -> Result<String, ConfigError> {
    let h = given.trim();
    let bracketed =
        if h.contains(':') && !h.starts_with('[') { format!("[{h}]") } else { h.into() };
    match Endpoint::parse(&format!("tcp://{bracketed}:1"), Direction::Bind) {
        Ok(ep) if !h.is_empty() => Ok(ep.host),
        _ => err(format!("--bind-host: expected *, an IP address or a host name, got {given:?}")),
    }
}

/// `--http-bind`'s HOST:PORT, refused in one sentence that names the form it takes.
fn parse_http_bind(given: &str) -> Result<String, ConfigError> {
    if given.contains("://") {
        return err(format!(
            "--http-bind: takes HOST:PORT without a scheme, e.g. *:9090, got {given:?}"
        ));
    }
    match Endpoint::parse_host_port(given, Direction::Bind) {
        Ok(_) => Ok(given.to_string()),
        Err(e) if e.contains("HOST:PORT") => err(format!("--http-bind: {e}")),
        Err(e) => err(format!("--http-bind: {e}; expected HOST:PORT, e.g. *:9090")),
    }
}

/// [`Endpoint::host`] as it is written before `:PORT` (IPv6 in brackets).
fn host_for_port(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

fn read_manifest(text: &str, host: &str) -> Result<LocalManifest, ConfigError> {
    let one_line = |e: serde_yaml::Error| e.to_string().replace('\n', " ");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError(one_line(e)))?;
    let shape = manifest_fields::manifest_shape();
    manifest_fields::check_fields(&doc, &shape).map_err(ConfigError)?;
    let m: Manifest = serde_yaml::from_value(doc).map_err(|e| ConfigError(one_line(e)))?;
    match m.api_version.as_deref() {
        Some(MANIFEST_API_VERSION) => {}
        other => {
            return err(format!("apiVersion: expected {MANIFEST_API_VERSION}, got {other:?}"));
        }
    }
    match m.kind.as_deref() {
        Some(MANIFEST_KIND) => {}
        other => return err(format!("kind: expected {MANIFEST_KIND}, got {other:?}")),
    }
    let Some(spec) = m.spec else { return err("spec: missing") };
    manifest_fields::check_types(&spec).map_err(ConfigError)?;
    for (field, why) in zmq_proxy_api::local::REFUSED_FIELDS {
        if spec.get(field).is_some() {
            return err(format!("spec.{field}: {why}"));
        }
    }
    let placement: Vec<String> = zmq_proxy_api::local::PLACEMENT_FIELDS
        .iter()
        .filter(|f| spec.get(**f).is_some())
        .map(|f| format!("spec.{f}"))
        .collect();
    let parsed: ManifestSpec = serde_yaml::from_value(spec.clone())
        .map_err(|e| ConfigError(format!("spec: {}", one_line(e))))?;
    let security: ManifestSecurity =
        serde_yaml::from_value(spec).map_err(|e| ConfigError(format!("spec: {}", one_line(e))))?;
    let spec = parsed;
    let sets = ManifestSets {
        drain: spec.drain_timeout_seconds.is_some(),
        lame_duck: spec.lame_duck_seconds.is_some(),
        metrics_port: spec.metrics_port.is_some(),
        paused: spec.paused.is_some(),
        max_memory: spec.max_memory_bytes.is_some(),
    };
    // The Kubernetes form names Secrets that only the operator mounts: running NULL instead,
    // because nothing here can read them, would open a socket its author meant to secure.
    if let Some((name, _)) = spec.sockets.named_security().into_iter().find(|(_, s)| s.is_some()) {
        return err(format!(
            "spec.{name}.security: names Kubernetes Secrets, which only the operator mounts; with --config give file paths in spec.{name}.curve (see examples/local/secure-forwarder.yaml)"
        ));
    }
    spec.sockets.validate("spec").map_err(|e| ConfigError(e.to_string()))?;
    let options = spec.sockets.socket_options("spec").map_err(|e| ConfigError(e.to_string()))?;
    if let Some(n) = spec.replicas
        && n != 1
    {
        return err(format!(
            "spec.replicas: {n} proxies need Kubernetes (kubectl apply); --config runs one, so set 1 or remove it"
        ));
    }
    // `*` is every address, IPv6 and IPv4 (dual stack, IPv4 alone where the host has no
    // IPv6), as the operator's pods bind.
    let all = |port: i32| -> Vec<Endpoint> {
        vec![Endpoint { host: host.into(), port: u16::try_from(port).unwrap_or(0) }]
    };
    let mut options = options.into_iter();
    let mut sock = |name: &str, s: &SocketSpec| {
        let connects = manifest_connect::local_connects(name, s).map_err(ConfigError)?;
        let mut bind: Vec<SocketEndpoint> =
            s.port.map(all).unwrap_or_default().into_iter().map(Into::into).collect();
        if let Some(ipc) = s.ipc_endpoint() {
            bind.push(socket_endpoint(&format!("spec.{name}.ipc"), &ipc, Direction::Bind)?);
        }
        let first = connects.first.into_iter().map(Into::into).collect();
        let mut c = SocketConfig::new(s.socket_type, bind, first);
        c.connect_all = connects.all;
        c.options = options.next().unwrap_or_default();
        c.heartbeat = s.heartbeat.resolve(&FieldNames::manifest(name)).map_err(ConfigError)?;
        Ok::<_, ConfigError>(c)
    };
    let frontend = sock("frontend", &spec.sockets.frontend)?;
    let backend = sock("backend", &spec.sockets.backend)?;
    let mut cfg = ProxyConfig::new(frontend, backend);
    cfg.capture = spec.sockets.capture.as_ref().map(|c| sock("capture", c)).transpose()?;
    cfg.control_bind = spec.sockets.control.as_ref().map(|c| all(c.port).remove(0));
    let any = spec.curve_allow_any.unwrap_or(false);
    let mut sockets = vec![
        ("frontend", &mut cfg.frontend, &security.frontend),
        ("backend", &mut cfg.backend, &security.backend),
    ];
    if let Some(c) = cfg.capture.as_mut() {
        sockets.push(("capture", c, &security.capture));
    }
    for (name, sock, curve) in sockets {
        let names = CurveNames::manifest(name);
        let (binds, connects) = (!sock.bind.is_empty(), sock.connects());
        sock.security = curve_security(&names, &spec_curve(curve), binds, connects, any)?;
    }
    if cfg.control_bind.is_some() {
        let names = CurveNames::manifest("control");
        let control = spec_curve(&security.control);
        cfg.control_security = curve_security(&names, &control, true, false, any)?.accepted;
    }
    check_allow_any(&cfg, any, "spec.curveAllowAny")?;
    if let Some(v) = spec.drain_timeout_seconds {
        let field = "spec.drainTimeoutSeconds";
        cfg.drain_timeout = parse_drain(field, &seconds_text(field, &v)?)?;
    }
    // Unset in a manifest run locally means the binary's default (0), not the operator's.
    if let Some(v) = spec.lame_duck_seconds {
        let field = "spec.lameDuckSeconds";
        cfg.lame_duck = parse_lame_duck(field, &seconds_text(field, &v)?)?;
    }
    // Unset means no HTTP listener here; the operator's pods default to 9090.
    if let Some(port) = spec.metrics_port {
        if !(1..=65535).contains(&port) {
            return err(format!("spec.metricsPort: port {port} is outside 1-65535"));
        }
        cfg.http_bind = Some(format!("{}:{port}", host_for_port(host)));
    }
    cfg.start_paused = spec.paused.unwrap_or(false);
    if let Some(v) = spec.max_memory_bytes {
        let field = "spec.maxMemoryBytes";
        let text = match v {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s,
            _ => return err(format!("{field}: expected a number of bytes")),
        };
        cfg.max_memory = parse_max_memory(field, &text)?;
    }
    if !placement.is_empty() {
        cfg.warnings.push(format!(
            "{}: Kubernetes placement, not used by --config (one proxy on this machine)",
            placement.join(", ")
        ));
    }
    Ok(LocalManifest { config: cfg, sets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmq_proxy_api::defaults::DEFAULT_DRAIN_TIMEOUT;
    use zmq_proxy_api::defaults::DEFAULT_PEER_HWM;
    use zmq_proxy_api::heartbeat::Heartbeat;
    use zmq_proxy_api::options::SocketOptions;

    fn cli(args: &[&str]) -> Result<ProxyConfig, String> {
        let mut all = vec!["zmq-proxy"];
        all.extend_from_slice(args);
        let c = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        c.into_config().map_err(|e| e.0)
    }

    #[test]
    fn flags_build_a_config_with_defaults() {
        let c = cli(&[
            "--frontend-type=router",
            "--frontend-bind=tcp://*:5555",
            "--backend-type=DEALER",
            "--backend-connect=tcp://127.0.0.1:5556",
            "--backend-bind=tcp://127.0.0.1:5557",
        ])
        .expect("valid");
        assert_eq!(c.frontend.socket_type, SocketType::Router);
        assert_eq!(c.backend.bind.len() + c.backend.connect.len(), 2);
        assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn connect_all_flags_fill_their_own_list_and_the_resolution_settings() {
        let base = ["--frontend-type=ROUTER", "--frontend-bind=tcp://*:1", "--backend-type=DEALER"];
        let c = cli(&[
            &base[..],
            &["--backend-connect-all=tcp://workers:6000", "--backend-connect=tcp://a:1"],
        ]
        .concat())
        .expect("valid");
        assert_eq!(c.backend.connect_all, [Endpoint { host: "workers".into(), port: 6000 }]);
        assert_eq!(c.backend.connect.len(), 1);
        assert_eq!(c.resolve_interval, zmq_proxy_api::defaults::DEFAULT_RESOLVE_INTERVAL);
        assert_eq!(c.dns_server, None);
        // A socket that only connects to every address of a name needs nothing else.
        let c = cli(&[
            &base[..],
            &["--backend-connect-all=tcp://w:1", "--resolve-interval=2.5", "--dns-server=[::1]:53"],
        ]
        .concat())
        .expect("valid");
        assert_eq!(c.resolve_interval, Duration::from_millis(2500));
        assert_eq!(c.dns_server, Some("[::1]:53".parse().expect("addr")));
        for (flag, bad) in [
            ("--resolve-interval", "--resolve-interval=0"),
            ("--resolve-interval", "--resolve-interval=3601"),
            ("--dns-server", "--dns-server=dns:53"),
            ("--backend-connect-all", "--backend-connect-all=tcp://*:1"),
        ] {
            let e = cli(&[&base[..], &["--backend-connect-all=tcp://w:1", bad]].concat())
                .expect_err(bad);
            assert!(e.starts_with(flag), "{bad}: {e}");
        }
    }

    /// A manifest's `ipc` binds the Unix socket beside (or instead of) the TCP port; a path
    /// that is not absolute is refused naming the field.
    #[test]
    fn manifest_ipc_binds_a_unix_socket_and_refusals_name_the_field() {
        use zmq_proxy_api::ipc::IpcEndpoint;
        let head = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: t}\nspec:\n";
        let yaml = format!(
            "{head}  frontend: {{type: XSUB, ipc: /zmq/out}}\n  backend: {{type: XPUB, port: 5556, ipc: /zmq/in}}\n"
        );
        let c = parse_manifest(&yaml).expect("valid");
        let path = |p: &str| SocketEndpoint::Ipc(IpcEndpoint::Path(p.into()));
        assert_eq!(c.frontend.bind, [path("/zmq/out")]);
        assert_eq!(c.backend.bind.len(), 2, "{:?}", c.backend.bind);
        assert_eq!(c.backend.bind[1], path("/zmq/in"));
        let bad = format!(
            "{head}  frontend: {{type: XSUB, ipc: zmq/out}}\n  backend: {{type: XPUB, port: 1}}\n"
        );
        let e = parse_manifest(&bad).expect_err("relative").0;
        assert!(e.contains("spec.frontend.ipc") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn ipc_endpoints_bind_and_connect_and_refusals_name_the_flag() {
        use zmq_proxy_api::ipc::IpcEndpoint;
        let base = ["--frontend-type=ROUTER", "--frontend-bind=ipc:///run/zmq/f.sock"];
        let c = cli(
            &[&base[..], &["--backend-type=DEALER", "--backend-connect=ipc://w.sock"]].concat()
        )
        .expect("valid");
        let path = |p: &str| SocketEndpoint::Ipc(IpcEndpoint::Path(p.into()));
        assert_eq!(c.frontend.bind, [path("/run/zmq/f.sock")]);
        assert_eq!(c.backend.connect, [path("w.sock")]);
        let c = cli(&[&base[..], &["--backend-type=DEALER", "--backend-bind=ipc://*"]].concat())
            .expect("the wildcard binds");
        assert_eq!(c.backend.bind, [SocketEndpoint::Ipc(IpcEndpoint::Wildcard)]);
        let long = format!("--backend-bind=ipc:///{}", "a".repeat(107));
        for (bad, flag, why) in [
            (
                "--backend-connect-all=ipc:///w.sock",
                "--backend-connect-all:",
                "use --backend-connect",
            ),
            ("--backend-connect=ipc://*", "--backend-connect:", "only valid for bind"),
            (long.as_str(), "--backend-bind:", "108 bytes, longer than the 107"),
            ("--backend-bind=inproc://x", "--backend-bind:", "tcp://HOST:PORT or ipc://PATH"),
        ] {
            let e = cli(&[&base[..], &["--backend-type=DEALER", bad]].concat()).expect_err(bad);
            assert!(e.starts_with(flag) && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn refusals_name_the_flag() {
        let base = ["--frontend-type=ROUTER", "--frontend-bind=tcp://*:1", "--backend-type"];
        let e = cli(&[&base[..], &["PUSH", "--backend-bind=tcp://*:2"]].concat()).unwrap_err();
        assert!(e.starts_with("--backend-type: unsupported socket pair ROUTER/PUSH"), "{e}");
        let e = cli(&[&base[..], &["DEALER", "--backend-bind=tcp://nohost"]].concat()).unwrap_err();
        assert!(e.starts_with("--backend-bind: malformed endpoint"), "{e}");
        let e = cli(&[&base[..], &["DEALER", "--backend-bind=udp://x:1"]].concat()).unwrap_err();
        assert!(e.starts_with("--backend-bind: unsupported transport"), "{e}");
        let e = cli(&[
            &base[..],
            &[
                "DEALER",
                "--backend-bind=tcp://*:2",
                "--capture-type=PAIR",
                "--capture-bind=tcp://*:3",
            ],
        ]
        .concat())
        .unwrap_err();
        assert!(e.starts_with("--capture-type: capture type PAIR"), "{e}");
        let e =
            cli(&[&base[..], &["DEALER", "--drain-timeout=-1", "--backend-bind=tcp://*:2"]]
                .concat())
            .unwrap_err();
        assert!(e.starts_with("--drain-timeout"), "{e}");
        let e = cli(&["--frontend-type=ROUTER", "--backend-type=DEALER"]).unwrap_err();
        assert!(e.contains("--frontend-bind"), "{e}");
    }

    #[test]
    fn lame_duck_comes_from_the_flag_or_the_manifest_and_defaults_to_zero() {
        let base = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let c = cli(&[&base[..], &["--backend-bind=tcp://*:2"]].concat()).expect("valid");
        assert_eq!(c.lame_duck, Duration::ZERO);
        let c = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--lame-duck=2.5"]].concat())
            .expect("valid");
        assert_eq!(c.lame_duck, Duration::from_millis(2500));
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--lame-duck=soon"]].concat())
            .unwrap_err();
        assert!(e.starts_with("--lame-duck: expected seconds between 0 and 3600"), "{e}");
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: PULL, port: 6000}\n  backend: {type: PUSH, port: 6001}\n";
        assert_eq!(parse_manifest(yaml).expect("valid").lame_duck, Duration::ZERO);
        let with = format!("{yaml}  lameDuckSeconds: 7\n");
        assert_eq!(parse_manifest(&with).expect("valid").lame_duck, Duration::from_secs(7));
        let bad = format!("{yaml}  lameDuckSeconds: [1]\n");
        let e = parse_manifest(&bad).unwrap_err().0;
        assert_eq!(e, "spec.lameDuckSeconds: expected a number of seconds");
    }

    /// `--max-memory` (bytes or a Kubernetes quantity, 0 for no limit) or `spec.maxMemoryBytes`;
    /// unset stays unset, for the binary to resolve against the cgroup's limit.
    #[test]
    fn max_memory_comes_from_the_flag_or_the_manifest() {
        let base = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let with =
            |extra: &[&str]| cli(&[&base[..], &["--backend-bind=tcp://*:2"], extra].concat());
        assert_eq!(with(&[]).expect("valid").max_memory, MaxMemory::Unset);
        assert_eq!(
            with(&["--max-memory=512Mi"]).expect("valid").max_memory,
            MaxMemory::Bytes(512 << 20)
        );
        assert_eq!(with(&["--max-memory", "0"]).expect("valid").max_memory, MaxMemory::Unlimited);
        let e = with(&["--max-memory=lots"]).unwrap_err();
        assert!(e.starts_with("--max-memory: expected bytes, e.g. 536870912, 512Mi"), "{e}");
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: PULL, port: 6000}\n  backend: {type: PUSH, port: 6001}\n";
        assert_eq!(parse_manifest(yaml).expect("valid").max_memory, MaxMemory::Unset);
        let set = format!("{yaml}  maxMemoryBytes: 1048576\n");
        assert_eq!(parse_manifest(&set).expect("valid").max_memory, MaxMemory::Bytes(1 << 20));
        let bad = format!("{yaml}  maxMemoryBytes: [1]\n");
        let e = parse_manifest(&bad).unwrap_err().0;
        assert_eq!(e, "spec.maxMemoryBytes: expected a number of bytes");
        // Resolution: unset takes the share of a cgroup limit, what was set stays.
        assert_eq!(MaxMemory::Unset.resolve(None), MaxMemory::Unlimited);
        assert_eq!(MaxMemory::Unset.resolve(Some(1000)), MaxMemory::Bytes(500));
        assert_eq!(MaxMemory::Unlimited.resolve(Some(1000)), MaxMemory::Unlimited);
        assert_eq!(MaxMemory::Bytes(7).resolve(Some(1000)), MaxMemory::Bytes(7));
    }

    #[test]
    fn manifest_binds_every_port_on_all_interfaces_and_warns_about_placement() {
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: t}\n\
                    spec:\n  frontend: {type: XSUB, port: 6000}\n  backend: {type: XPUB, port: 6001}\n\
                    \x20 capture: {type: PUB, port: 6002}\n  replicas: 1\n  image: x\n\
                    \x20 drainTimeoutSeconds: 2\n";
        let c = parse_manifest(yaml).expect("valid");
        assert_eq!(c.frontend.bind[0].to_string(), "tcp://*:6000");
        assert!(
            c.frontend.bind[0].tcp().expect("tcp").is_wildcard(),
            "dual stack, as the operator's pods"
        );
        assert_eq!(c.capture.as_ref().map(|s| s.socket_type), Some(SocketType::Pub));
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("spec.image: Kubernetes placement"), "{:?}", c.warnings);
        let bad = yaml.replace("XPUB", "PUSH");
        let e = parse_manifest(&bad).unwrap_err().0;
        assert!(e.starts_with("spec.backend.type: unsupported socket pair XSUB/PUSH"), "{e}");
        let e = parse_manifest(&yaml.replace("v1alpha1", "v9")).unwrap_err().0;
        assert!(e.starts_with("apiVersion"), "{e}");
    }

    const LOCAL: &str = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: PULL, port: 6000}\n  backend: {type: PUSH, port: 6001}\n  control: {port: 6002}\n";

    #[test]
    fn manifest_connects_reach_the_sockets_and_a_selector_needs_the_operator() {
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: ROUTER, port: 6000}\n  backend: {type: DEALER, connect: [{service: workers, port: 7000}, {endpoint: 'tcp://127.0.0.1:7001', addresses: first}]}\n";
        let c = read_manifest(yaml, "127.0.0.1").expect("valid").config;
        assert!(c.backend.bind.is_empty());
        assert_eq!(c.backend.connect, [Endpoint { host: "127.0.0.1".into(), port: 7001 }.into()]);
        assert_eq!(c.backend.connect_all, [Endpoint { host: "workers".into(), port: 7000 }]);
        let selector = yaml.replace(
            "{service: workers, port: 7000}",
            "{selector: {matchLabels: {app: w}}, port: 7000}",
        );
        let e = read_manifest(&selector, "127.0.0.1").unwrap_err().0;
        assert_eq!(
            e,
            format!("spec.backend.connect[0].selector: {}", zmq_proxy_api::local::SELECTOR_REFUSAL)
        );
        let neither = yaml.replace("connect: [{service: workers, port: 7000}, {endpoint: 'tcp://127.0.0.1:7001', addresses: first}]", "sndhwm: 5");
        let e = read_manifest(&neither, "127.0.0.1").unwrap_err().0;
        assert!(e.starts_with("spec.backend.port: backend needs port"), "{e}");
    }

    #[test]
    fn bind_host_reaches_every_socket_of_the_manifest_control_and_http_included() {
        let m =
            read_manifest(&format!("{LOCAL}  metricsPort: 6003\n"), "127.0.0.1").expect("valid");
        let c = m.config;
        for ep in [
            c.frontend.bind[0].tcp().expect("tcp"),
            c.backend.bind[0].tcp().expect("tcp"),
            c.control_bind.as_ref().expect("control"),
        ] {
            assert_eq!(ep.host, "127.0.0.1", "{ep}");
        }
        assert_eq!(c.http_bind.as_deref(), Some("127.0.0.1:6003"));
        let c =
            read_manifest(&format!("{LOCAL}  metricsPort: 6003\n"), "::1").expect("valid").config;
        assert_eq!(c.frontend.bind[0].to_string(), "tcp://[::1]:6000");
        assert_eq!(c.http_bind.as_deref(), Some("[::1]:6003"));
        assert_eq!(parse_bind_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(parse_bind_host("*").as_deref(), Ok("*"));
        let e = parse_bind_host("tcp://x").unwrap_err().0;
        assert!(e.starts_with("--bind-host: expected *, an IP address or a host name"), "{e}");
        assert_eq!(DEFAULT_CONFIG_BIND_HOST, "127.0.0.1", "a laptop's ports stay on the laptop");
    }

    #[test]
    fn kubernetes_fields_mean_their_local_meaning_or_are_refused_by_name() {
        let c =
            read_manifest(&format!("{LOCAL}  paused: true\n  replicas: 1\n"), "*").expect("valid");
        assert!(c.config.start_paused && c.sets.paused);
        assert!(c.config.warnings.is_empty(), "replicas: 1 is this one proxy");
        let e = read_manifest(&format!("{LOCAL}  replicas: 3\n"), "*").unwrap_err().0;
        assert!(e.starts_with("spec.replicas: 3 proxies need Kubernetes"), "{e}");
        let e =
            read_manifest(&format!("{LOCAL}  podTemplate: {{spec: {{}}}}\n"), "*").unwrap_err().0;
        assert!(e.starts_with("spec.podTemplate: changes the pods' containers"), "{e}");
        let e = read_manifest(&format!("{LOCAL}  metricsPort: 70000\n"), "*").unwrap_err().0;
        assert_eq!(e, "spec.metricsPort: port 70000 is outside 1-65535");
        let e = read_manifest(&LOCAL.replace("PULL", "STREAM"), "*").unwrap_err().0;
        assert!(
            e.starts_with(
                "spec.frontend.type: unknown socket type \"STREAM\"; expected one of ROUTER"
            ),
            "{e}"
        );
        assert!(!e.contains("REQ") && !e.contains("PAIR"), "{e}");
        let e = read_manifest(&LOCAL.replace("port: 6002", "prot: 6002"), "*").unwrap_err().0;
        assert_eq!(e, "spec.control.prot: unknown field; did you mean port?");
    }

    #[test]
    fn flags_that_would_override_the_manifest_are_refused_and_bind_host_needs_it() {
        let path =
            std::env::temp_dir().join(format!("zmq-proxy-local-{}.yaml", std::process::id()));
        std::fs::write(&path, format!("{LOCAL}  drainTimeoutSeconds: 2\n  metricsPort: 6003\n"))
            .expect("write");
        let config = format!("--config={}", path.display());
        let e = cli(&[&config, "--control-bind=tcp://127.0.0.1:7000"]).unwrap_err();
        assert!(e.starts_with("--config cannot be combined with --control-bind"), "{e}");
        let e = cli(&[&config, "--drain-timeout=3"]).unwrap_err();
        assert!(
            e.starts_with("--drain-timeout and the manifest's spec.drainTimeoutSeconds"),
            "{e}"
        );
        let e = cli(&[&config, "--http-bind=*:9000"]).unwrap_err();
        assert!(e.starts_with("--http-bind and the manifest's spec.metricsPort"), "{e}");
        let c = cli(&[&config, "--lame-duck=1"]).expect("the manifest sets no lame duck");
        assert_eq!(c.lame_duck, Duration::from_secs(1));
        assert_eq!(
            c.frontend.bind[0].tcp().expect("tcp").host,
            "127.0.0.1",
            "loopback unless --bind-host says"
        );
        let c = cli(&[&config, "--bind-host", "*"]).expect("valid");
        assert!(c.frontend.bind[0].tcp().expect("tcp").is_wildcard());
        assert_eq!(c.http_bind.as_deref(), Some("*:6003"));
        let _ = std::fs::remove_file(&path);
        let flags = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let e = cli(&[&flags[..], &["--backend-bind=tcp://*:2", "--bind-host=127.0.0.1"]].concat())
            .unwrap_err();
        assert!(e.starts_with("--bind-host applies to the sockets of a --config manifest"), "{e}");
    }

    #[test]
    fn negative_numbers_and_http_bind_are_refused_in_one_sentence() {
        let base = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let base = [&base[..], &["--backend-bind=tcp://*:2"]].concat();
        let spaced = cli(&[&base[..], &["--drain-timeout", "-1"]].concat()).unwrap_err();
        let joined = cli(&[&base[..], &["--drain-timeout=-1"]].concat()).unwrap_err();
        assert_eq!(spaced, joined);
        let e = cli(&[&base[..], &["--frontend-heartbeat-interval", "-5"]].concat()).unwrap_err();
        assert!(e.starts_with("--frontend-heartbeat-interval"), "{e}");
        let e = cli(&[&base[..], &["--http-bind", "tcp://127.0.0.1:9090"]].concat()).unwrap_err();
        assert_eq!(
            e,
            "--http-bind: takes HOST:PORT without a scheme, e.g. *:9090, got \"tcp://127.0.0.1:9090\""
        );
        let e = cli(&[&base[..], &["--http-bind", "localhost"]].concat()).unwrap_err();
        assert_eq!(e.matches("HOST:PORT").count(), 1, "{e}");
        let e = cli(&[&base[..], &["--http-bind", "::1:9090"]].concat()).unwrap_err();
        assert!(e.contains("brackets") && e.matches("HOST:PORT").count() == 1, "{e}");
    }

    #[test]
    fn help_describes_every_flag_with_its_default_under_its_socket() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let has_default = help.contains("[default: ") || !arg.get_default_values().is_empty();
            assert!(help.len() > 15 && has_default, "--{id}: {help:?}");
            for socket in ["frontend", "backend", "capture", "control"] {
                if id.starts_with(&format!("{socket}-")) {
                    let heading = arg.get_help_heading().unwrap_or_default().to_lowercase();
                    assert!(heading.starts_with(socket), "--{id} is under {heading:?}");
                }
            }
        }
        let after = types_and_pairs();
        for pair in ["ROUTER/DEALER", "XSUB/XPUB", "SUB/PUB", "PULL/PUSH"] {
            assert!(after.contains(pair), "{after}");
        }
        assert!(after.ends_with("PUB, DEALER, PUSH, sent a copy of every message, all frames."));
        let table = pairs_table();
        assert_eq!(table.lines().filter(|l| l.ends_with("pipeline, one direction")).count(), 2);
        assert!(table.contains("DEALER    ROUTER    shared queue"), "{table}");
    }

    #[test]
    fn socket_options_come_from_flags_and_the_manifest_and_name_their_source() {
        let base = ["--frontend-type=XSUB", "--frontend-bind=tcp://*:1", "--backend-type=XPUB"];
        let c = cli(&[&base[..], &["--backend-bind=tcp://*:2"]].concat()).expect("valid");
        assert_eq!(c.frontend.options, SocketOptions::default());
        assert_eq!(c.backend.options.sndhwm, DEFAULT_PEER_HWM as u64);
        let c = cli(&[
            &base[..],
            &[
                "--backend-bind=tcp://*:2",
                "--backend-sndhwm=10",
                "--backend-nodrop=true",
                "--frontend-rcvhwm",
                "0",
                "--frontend-max-msg-size",
                "-1",
                "--frontend-tcp-keepalive=off",
                "--frontend-reconnect-interval=250",
                "--frontend-reconnect-interval-max=8000",
            ],
        ]
        .concat())
        .expect("valid");
        assert_eq!((c.backend.options.sndhwm, c.backend.options.nodrop), (10, true));
        assert_eq!(c.backend.options.rcvhwm, DEFAULT_PEER_HWM as u64, "per socket");
        let f = &c.frontend.options;
        assert_eq!((f.rcvhwm, f.max_msg_size, f.tcp_keepalive), (0, -1, false));
        assert_eq!(f.reconnect_interval_max, Duration::from_secs(8));
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--frontend-nodrop=1"]].concat())
            .unwrap_err();
        assert_eq!(e, "--frontend-nodrop: only a PUB or XPUB socket has it, not XSUB");
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--backend-sndhwm=-3"]].concat())
            .unwrap_err();
        assert!(e.starts_with("--backend-sndhwm: expected messages between 0"), "{e}");
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--capture-sndhwm=3"]].concat())
            .unwrap_err();
        assert_eq!(e, "--capture-<option> flags need --capture-type");
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: XSUB, port: 6000, rcvhwm: 20, tcpKeepaliveIdle: 7}\n  backend: {type: XPUB, port: 6001, sndhwm: 10, nodrop: true}\n";
        let m = parse_manifest(yaml).expect("valid");
        assert_eq!((m.backend.options.sndhwm, m.backend.options.nodrop), (10, true));
        assert_eq!(m.frontend.options.rcvhwm, 20);
        assert_eq!(m.frontend.options.tcp_keepalive_idle, Duration::from_secs(7));
        let e = parse_manifest(&yaml.replace("rcvhwm: 20", "rcvhwm: -1")).unwrap_err().0;
        assert!(e.starts_with("spec.frontend.rcvhwm: expected messages between 0"), "{e}");
        let e = parse_manifest(&yaml.replace("sndhwm: 10", "sndhwm: lots")).unwrap_err().0;
        assert!(e.starts_with("spec: "), "a type error from the parser: {e}");
        let path = std::env::temp_dir().join(format!("zmq-proxy-opts-{}.yaml", std::process::id()));
        std::fs::write(&path, yaml).expect("write");
        let config = format!("--config={}", path.display());
        let e = cli(&[&config, "--backend-sndhwm=5"]).unwrap_err();
        assert!(e.starts_with("--config cannot be combined with --backend-<option> flags"), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    /// What the operator renders from a spec is what the proxy parses back.
    #[test]
    fn rendered_option_flags_parse_back_into_the_same_options() {
        let spec = zmq_proxy_api::options::SocketOptionsSpec {
            sndhwm: Some(10),
            rcvhwm: Some(0),
            max_msg_size: Some(-1),
            tcp_keepalive: Some(true),
            tcp_keepalive_idle: Some(5),
            tcp_keepalive_interval: Some(6),
            tcp_keepalive_count: Some(7),
            reconnect_interval: Some(50),
            reconnect_interval_max: Some(900),
            connect_timeout: Some(300),
            nodrop: Some(true),
            max_frames: Some(12),
        };
        let mut args = vec!["--frontend-type=XSUB", "--frontend-bind=tcp://*:1"];
        args.extend(["--backend-type=XPUB", "--backend-bind=tcp://*:2"]);
        let rendered = spec.to_flags("backend");
        args.extend(rendered.iter().map(String::as_str));
        let c = cli(&args).expect("valid");
        let expected = spec.resolve(Spelling::Flags("backend"), SocketType::Xpub, false);
        assert_eq!(Ok(c.backend.options), expected);
    }

    #[test]
    fn option_flags_are_read_from_the_environment() {
        // Clap reads the variable named in the flag's definition; checking the definitions
        // (not setting process-wide variables, which would race other tests) pins the names.
        use clap::CommandFactory;
        let cmd = Cli::command();
        let env_of = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env_of("frontend-sndhwm").as_deref(), Some("ZMQ_PROXY_FRONTEND_SNDHWM"));
        assert_eq!(
            env_of("capture-tcp-keepalive-interval").as_deref(),
            Some("ZMQ_PROXY_CAPTURE_TCP_KEEPALIVE_INTERVAL")
        );
        assert_eq!(
            env_of("backend-max-msg-size").as_deref(),
            Some("ZMQ_PROXY_BACKEND_MAX_MSG_SIZE")
        );
    }

    #[test]
    fn heartbeats_come_from_flags_or_the_manifest_per_socket() {
        let base = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let c =
            cli(&[&base[..], &["--backend-bind=tcp://*:2", "--backend-heartbeat-interval=1000"]]
                .concat())
            .expect("valid");
        let second = Some(Duration::from_secs(1));
        assert_eq!((c.backend.heartbeat.interval, c.backend.heartbeat.timeout), (second, second));
        assert_eq!(c.frontend.heartbeat, Heartbeat::default(), "off unless asked, as libzmq");
        let e = cli(
            &[&base[..], &["--backend-bind=tcp://*:2", "--capture-heartbeat-ttl=100"]].concat()
        )
        .unwrap_err();
        assert_eq!(e, "--capture-heartbeat-* flags need --capture-type");
        let yaml = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {type: PULL, port: 6000, heartbeatInterval: 500, heartbeatTtl: 2000}\n  backend: {type: PUSH, port: 6001}\n";
        let c = parse_manifest(yaml).expect("valid");
        assert_eq!(c.frontend.heartbeat.ttl_deciseconds, 20);
        assert_eq!(c.frontend.heartbeat.timeout, Some(Duration::from_millis(500)));
        let e = parse_manifest(&yaml.replace("2000", "2050")).unwrap_err().0;
        assert!(e.starts_with("spec.frontend.heartbeatTtl: 2050 is not a multiple of 100"), "{e}");
        let e = parse_manifest(&yaml.replace("500", "soon")).unwrap_err().0;
        assert!(e.starts_with("spec:") && e.contains("i32"), "{e}");
    }

    fn key_files(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("zmq-proxy-cfg-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let secret = dir.join("server.key");
        std::fs::write(&secret, "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6\n").expect("write");
        let allow = dir.join("allow");
        std::fs::write(&allow, "# clients\nYne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID\n")
            .expect("write");
        (secret, allow)
    }

    #[test]
    fn curve_flags_build_servers_and_clients_and_bad_combinations_name_the_flag() {
        let (secret, allow) = key_files("flags");
        let (secret, allow) = (secret.to_string_lossy(), allow.to_string_lossy());
        let base = ["--frontend-type=PULL", "--frontend-bind=tcp://*:1", "--backend-type=PUSH"];
        let server = format!("--frontend-curve-server-key-file={secret}");
        let c = cli(&[
            &base[..],
            &[
                "--backend-bind=tcp://*:2",
                &server,
                &format!("--frontend-curve-authorized-keys={allow}"),
            ],
        ]
        .concat())
        .expect("valid");
        assert!(matches!(c.frontend.security.accepted, Mechanism::Server(_)));
        assert_eq!(c.backend.security, Security::default());
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", &server]].concat()).unwrap_err();
        assert!(e.starts_with("--frontend-curve-authorized-keys: required for a CURVE server socket (or --curve-allow-any"), "{e}");
        let c =
            cli(&[&base[..], &["--backend-bind=tcp://*:2", &server, "--curve-allow-any"]].concat())
                .expect("valid");
        assert!(matches!(c.frontend.security.accepted, Mechanism::Server(_)));
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", "--curve-allow-any"]].concat())
            .unwrap_err();
        assert!(e.starts_with("--curve-allow-any: no socket is a CURVE server"), "{e}");
        let connect = "--backend-connect=tcp://127.0.0.1:2";
        let e =
            cli(&[&base[..], &[connect, &format!("--backend-curve-client-key-file={secret}")]]
                .concat())
            .unwrap_err();
        assert!(
            e.starts_with(
                "--backend-curve-client-key-file: needs --backend-curve-server-public-key"
            ),
            "{e}"
        );
        let pk = "--backend-curve-server-public-key=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let c = cli(&[&base[..], &[connect, pk]].concat()).expect("valid");
        let Mechanism::Client(cl) = &c.backend.security.connected else { panic!("client") };
        assert!(cl.ephemeral);
        let e = cli(&[&base[..], &["--backend-bind=tcp://*:2", pk]].concat()).unwrap_err();
        assert!(
            e.starts_with("--backend-curve-server-public-key: backend has no --backend-connect"),
            "{e}"
        );
        let e = cli(&[
            &base[..],
            &[
                "--backend-bind=tcp://*:2",
                &format!("--backend-curve-server-key-file={secret}"),
                connect,
                "--curve-allow-any",
            ],
        ]
        .concat())
        .unwrap_err();
        assert!(e.starts_with("--backend-curve-server-public-key: required"), "{e}");
        let e = cli(&[
            &base[..],
            &[
                "--backend-bind=tcp://*:2",
                "--frontend-curve-server-key-file=/nonexistent",
                "--curve-allow-any",
            ],
        ]
        .concat())
        .unwrap_err();
        assert!(e.starts_with("--frontend-curve-server-key-file: /nonexistent:"), "{e}");
    }

    #[test]
    fn manifest_curve_sections_name_their_fields() {
        let (secret, allow) = key_files("manifest");
        let yaml = format!(
            "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n  frontend: {{type: PULL, port: 6000, curve: {{serverKeyFile: {}, authorizedKeys: {}}}}}\n  backend: {{type: PUSH, port: 6001}}\n",
            secret.display(),
            allow.display()
        );
        let c = parse_manifest(&yaml).expect("valid");
        assert!(matches!(c.frontend.security.accepted, Mechanism::Server(_)));
        assert!(!c.backend.security.is_curve());
        let no_list = yaml.replace(&format!(", authorizedKeys: {}", allow.display()), "");
        let e = parse_manifest(&no_list).unwrap_err().0;
        assert!(e.starts_with("spec.frontend.curve.authorizedKeys: required"), "{e}");
        let any = format!("{no_list}  curveAllowAny: true\n");
        assert!(parse_manifest(&any).is_ok());
        let client = yaml.replace("backend: {type: PUSH, port: 6001}", "backend: {type: PUSH, port: 6001, curve: {serverPublicKey: \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"}}");
        let e = parse_manifest(&client).unwrap_err().0;
        assert!(
            e.starts_with(
                "spec.backend.curve.serverPublicKey: backend has no spec.backend.connect"
            ),
            "{e}"
        );
        let kubernetes = yaml.replace(
            "backend: {type: PUSH, port: 6001}",
            "backend: {type: PUSH, port: 6001, security: {curve: {serverKey: {secretName: k}, allowAnyClient: true}}}",
        );
        let e = parse_manifest(&kubernetes).unwrap_err().0;
        assert!(e.starts_with("spec.backend.security: names Kubernetes Secrets"), "{e}");
    }
}
