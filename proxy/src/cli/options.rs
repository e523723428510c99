//! The per-socket option flags `--<socket>-<option>`, each also read from
//! `ZMQ_PROXY_<SOCKET>_<OPTION>`; their texts are parsed and validated by the api crate's
//! `options.rs`, which owns the options' names, units and bounds.

/// The option flags of one socket, generated per socket so each flag has its own name and
/// environment variable, with the same help text (units and libzmq names) for every socket.
/// Values are taken as text (hyphens allowed, so `-1` is a value) and parsed by
/// `spec_from_flag_texts`, whose errors name the flag.
macro_rules! socket_option_flags {
    ($name:ident, $sock:literal, $env:literal, $heading:literal) => {
        #[doc = concat!("The ", $sock, " socket's libzmq options.")]
        #[derive(clap::Args, Debug, Default, Clone)]
        #[command(next_help_heading = $heading)]
        pub struct $name {
            /// ZMQ_SNDHWM: messages queued per peer before it is full; 0 = unlimited [default: 1000]
            #[arg(id = concat!($sock, "-sndhwm"), long = concat!($sock, "-sndhwm"), env = concat!("ZMQ_PROXY_", $env, "_SNDHWM"), value_name = "MSGS", allow_hyphen_values = true)]
            pub sndhwm: Option<String>,
            /// ZMQ_RCVHWM: messages read per peer and waiting to be forwarded before reading it pauses; 0 = unlimited [default: 1000]
            #[arg(id = concat!($sock, "-rcvhwm"), long = concat!($sock, "-rcvhwm"), env = concat!("ZMQ_PROXY_", $env, "_RCVHWM"), value_name = "MSGS", allow_hyphen_values = true)]
            pub rcvhwm: Option<String>,
            /// ZMQ_MAXMSGSIZE: largest message in bytes, a larger frame drops the peer; -1 = no limit [default: 268435456]
            #[arg(id = concat!($sock, "-max-msg-size"), long = concat!($sock, "-max-msg-size"), env = concat!("ZMQ_PROXY_", $env, "_MAX_MSG_SIZE"), value_name = "BYTES", allow_hyphen_values = true)]
            pub max_msg_size: Option<String>,
            /// ZMQ_TCP_KEEPALIVE: TCP keepalive probes, true or false [default: true]
            #[arg(id = concat!($sock, "-tcp-keepalive"), long = concat!($sock, "-tcp-keepalive"), env = concat!("ZMQ_PROXY_", $env, "_TCP_KEEPALIVE"), value_name = "BOOL", allow_hyphen_values = true)]
            pub tcp_keepalive: Option<String>,
            /// ZMQ_TCP_KEEPALIVE_IDLE: seconds idle before the first probe [default: 30]
            #[arg(id = concat!($sock, "-tcp-keepalive-idle"), long = concat!($sock, "-tcp-keepalive-idle"), env = concat!("ZMQ_PROXY_", $env, "_TCP_KEEPALIVE_IDLE"), value_name = "SECONDS", allow_hyphen_values = true)]
            pub tcp_keepalive_idle: Option<String>,
            /// ZMQ_TCP_KEEPALIVE_INTVL: seconds between probes [default: 10]
            #[arg(id = concat!($sock, "-tcp-keepalive-interval"), long = concat!($sock, "-tcp-keepalive-interval"), env = concat!("ZMQ_PROXY_", $env, "_TCP_KEEPALIVE_INTERVAL"), value_name = "SECONDS", allow_hyphen_values = true)]
            pub tcp_keepalive_interval: Option<String>,
            /// ZMQ_TCP_KEEPALIVE_CNT: unanswered probes before the connection is closed [default: 3]
            #[arg(id = concat!($sock, "-tcp-keepalive-count"), long = concat!($sock, "-tcp-keepalive-count"), env = concat!("ZMQ_PROXY_", $env, "_TCP_KEEPALIVE_COUNT"), value_name = "N", allow_hyphen_values = true)]
            pub tcp_keepalive_count: Option<String>,
            /// ZMQ_RECONNECT_IVL: milliseconds between attempts of each connect endpoint [default: 100]
            #[arg(id = concat!($sock, "-reconnect-interval"), long = concat!($sock, "-reconnect-interval"), env = concat!("ZMQ_PROXY_", $env, "_RECONNECT_INTERVAL"), value_name = "MS", allow_hyphen_values = true)]
            pub reconnect_interval: Option<String>,
            /// ZMQ_RECONNECT_IVL_MAX: milliseconds the doubling backoff stops at; 0 = no backoff [default: 0]
            #[arg(id = concat!($sock, "-reconnect-interval-max"), long = concat!($sock, "-reconnect-interval-max"), env = concat!("ZMQ_PROXY_", $env, "_RECONNECT_INTERVAL_MAX"), value_name = "MS", allow_hyphen_values = true)]
            pub reconnect_interval_max: Option<String>,
            /// ZMQ_CONNECT_TIMEOUT: milliseconds a TCP connect may take; 0 = the kernel's [default: 0]
            #[arg(id = concat!($sock, "-connect-timeout"), long = concat!($sock, "-connect-timeout"), env = concat!("ZMQ_PROXY_", $env, "_CONNECT_TIMEOUT"), value_name = "MS", allow_hyphen_values = true)]
            pub connect_timeout: Option<String>,
            /// ZMQ_XPUB_NODROP (PUB/XPUB): wait at a full subscriber instead of dropping [default: false]
            #[arg(id = concat!($sock, "-nodrop"), long = concat!($sock, "-nodrop"), env = concat!("ZMQ_PROXY_", $env, "_NODROP"), value_name = "BOOL", allow_hyphen_values = true)]
            pub nodrop: Option<String>,
            /// Most frames in one message, one more drops the peer; 0 = no limit [default: 65536]
            #[arg(id = concat!($sock, "-max-frames"), long = concat!($sock, "-max-frames"), env = concat!("ZMQ_PROXY_", $env, "_MAX_FRAMES"), value_name = "FRAMES", allow_hyphen_values = true)]
            pub max_frames: Option<String>,
        }

        impl $name {
            /// The texts given, in the order of the api crate's option fields.
            pub fn texts(&self) -> [Option<&str>; 12] {
                [
                    self.sndhwm.as_deref(),
                    self.rcvhwm.as_deref(),
                    self.max_msg_size.as_deref(),
                    self.tcp_keepalive.as_deref(),
                    self.tcp_keepalive_idle.as_deref(),
                    self.tcp_keepalive_interval.as_deref(),
                    self.tcp_keepalive_count.as_deref(),
                    self.reconnect_interval.as_deref(),
                    self.reconnect_interval_max.as_deref(),
                    self.connect_timeout.as_deref(),
                    self.nodrop.as_deref(),
                    self.max_frames.as_deref(),
                ]
            }
        }
    };
}

socket_option_flags!(FrontendOptionFlags, "frontend", "FRONTEND", "Frontend socket");
socket_option_flags!(BackendOptionFlags, "backend", "BACKEND", "Backend socket");
socket_option_flags!(CaptureOptionFlags, "capture", "CAPTURE", "Capture socket");
