//! The libzmq socket options a user tunes per socket: ZMQ_SNDHWM, ZMQ_RCVHWM, ZMQ_MAXMSGSIZE,
//! ZMQ_TCP_KEEPALIVE(_IDLE/_INTVL/_CNT), ZMQ_RECONNECT_IVL(_MAX), ZMQ_CONNECT_TIMEOUT and
//! ZMQ_XPUB_NODROP. This module owns their spellings and the one validation all of them go
//! through:
//!
//! - [`SocketOptions`]: the validated runtime values of one socket (defaults from `defaults.rs`);
//! - [`SocketOptionsSpec`]: the manifest/CRD form, `Option` fields in camelCase with schema
//!   bounds, flattened into each socket's section (`SocketSpec` in `manifest.rs`);
//! - the texts of the command-line flags `--<socket>-<option>` ([`spec_from_flag_texts`]; the
//!   proxy's `cli` declares the flags themselves).
//!
//! Units are libzmq's, so values copied from a libzmq program mean the same here: messages for
//! the high-water marks, bytes for the message size, milliseconds for the reconnect and connect
//! times, seconds for the keepalive times.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults::{
    CONNECT_TIMEOUT, DEFAULT_PEER_HWM, MAX_FRAMES, MAX_KEEPALIVE_COUNT, MAX_KEEPALIVE_SECS,
    MAX_MESSAGE_BYTES, MAX_MILLIS, RECONNECT_INTERVAL, RECONNECT_INTERVAL_MAX, TCP_KEEPALIVE,
    TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, XPUB_NODROP,
};
use crate::socket::SocketType;

/// One socket's options, validated. Zero and -1 keep libzmq's meanings where libzmq has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Messages queued towards one peer before it counts as full (0 = unlimited).
    pub sndhwm: u64,
    /// Messages read from one peer and waiting to be forwarded before the proxy stops reading
    /// that peer (0 = unlimited).
    pub rcvhwm: u64,
    /// Largest message a peer may send, bytes (-1 = no limit); a larger frame drops the peer.
    pub max_msg_size: i64,
    pub tcp_keepalive: bool,
    pub tcp_keepalive_idle: Duration,
    pub tcp_keepalive_interval: Duration,
    pub tcp_keepalive_count: u32,
    /// First delay between connect attempts of a `--*-connect` endpoint.
    pub reconnect_interval: Duration,
    /// Longest delay the doubling backoff reaches (zero, or below the interval: no backoff).
    pub reconnect_interval_max: Duration,
    /// Longest a TCP connect may take (zero: the kernel's own timeout).
    pub connect_timeout: Duration,
    /// PUB/XPUB: wait for a full subscriber instead of dropping its messages.
    pub nodrop: bool,
    /// Most frames in one message (0 = no limit); one more drops the peer (`over_budget`).
    pub max_frames: u64,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            sndhwm: DEFAULT_PEER_HWM as u64,
            rcvhwm: DEFAULT_PEER_HWM as u64,
            max_msg_size: MAX_MESSAGE_BYTES as i64,
            tcp_keepalive: TCP_KEEPALIVE,
            tcp_keepalive_idle: TCP_KEEPALIVE_IDLE,
            tcp_keepalive_interval: TCP_KEEPALIVE_INTERVAL,
            tcp_keepalive_count: TCP_KEEPALIVE_RETRIES,
            reconnect_interval: RECONNECT_INTERVAL,
            reconnect_interval_max: RECONNECT_INTERVAL_MAX,
            connect_timeout: CONNECT_TIMEOUT,
            nodrop: XPUB_NODROP,
            max_frames: MAX_FRAMES as u64,
        }
    }
}

fn limit(hwm: u64) -> usize {
    if hwm == 0 { usize::MAX } else { usize::try_from(hwm).unwrap_or(usize::MAX) }
}

impl SocketOptions {
    /// The send high-water mark as a queue bound (`usize::MAX` when unlimited).
    pub fn send_limit(&self) -> usize {
        limit(self.sndhwm)
    }

    /// The receive high-water mark as a per-peer bound (`usize::MAX` when unlimited).
    pub fn receive_limit(&self) -> usize {
        limit(self.rcvhwm)
    }

    /// The decoder's limit in bytes (`usize::MAX` when unlimited).
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_msg_size).unwrap_or(usize::MAX)
    }

    /// The decoder's limit in frames per message (`usize::MAX` when unlimited).
    pub fn max_message_frames(&self) -> usize {
        limit(self.max_frames)
    }

    /// The delay after `failures` consecutive failed attempts (0 for the first), libzmq's
    /// backoff: the interval doubles per failure up to the maximum when a maximum above the
    /// interval is set. A random jitter (below one interval, as libzmq adds) spreads proxies
    /// that lost the same server.
    pub fn reconnect_delay(&self, failures: u32, jitter: f64) -> Duration {
        let base = self.reconnect_interval;
        let grown = if self.reconnect_interval_max > base {
            let doubled = base.saturating_mul(1u32 << failures.min(20));
            doubled.min(self.reconnect_interval_max)
        } else {
            base
        };
        grown + base.mul_f64(jitter.clamp(0.0, 0.999))
    }

    /// Warnings worth logging at start: an unlimited high-water mark lets one slow peer (or a
    /// fast sender) take all memory.
    pub fn warnings(&self, socket: &str) -> Vec<String> {
        let mut w = Vec::new();
        for (name, v) in [("sndhwm", self.sndhwm), ("rcvhwm", self.rcvhwm)] {
            if v == 0 {
                w.push(format!(
                    "{socket} {name} is 0 (unlimited): a peer that does not keep up can grow the proxy's memory without bound"
                ));
            }
        }
        w
    }
}

/// The manifest/CRD form of a socket's options: unset fields take the proxy's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketOptionsSpec {
    /// ZMQ_SNDHWM: messages queued towards one peer before it is full (a full subscriber or
    /// ROUTER client has messages dropped and counted, PUSH/DEALER skip it). 0 = unlimited.
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub sndhwm: Option<i64>,
    /// ZMQ_RCVHWM: messages read from one peer and waiting to be forwarded before the proxy
    /// stops reading that peer (the rest waits in the peer, as with libzmq). 0 = unlimited.
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub rcvhwm: Option<i64>,
    /// ZMQ_MAXMSGSIZE: largest message a peer may send, in bytes; a larger frame drops that
    /// peer (counted). -1 = no limit. Default 268435456 (256 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_msg_size: Option<i64>,
    /// ZMQ_TCP_KEEPALIVE: TCP keepalive probes on every connection. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<bool>,
    /// ZMQ_TCP_KEEPALIVE_IDLE: seconds idle before the first probe. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub tcp_keepalive_idle: Option<i64>,
    /// ZMQ_TCP_KEEPALIVE_INTVL: seconds between probes. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub tcp_keepalive_interval: Option<i64>,
    /// ZMQ_TCP_KEEPALIVE_CNT: unanswered probes before the connection is closed. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 127))]
    pub tcp_keepalive_count: Option<i64>,
    /// ZMQ_RECONNECT_IVL: milliseconds between attempts of a connect endpoint (each address of
    /// the socket's `connect` entries). Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub reconnect_interval: Option<i64>,
    /// ZMQ_RECONNECT_IVL_MAX: milliseconds the doubling backoff of failed attempts stops at;
    /// 0 (or below reconnectInterval) = no backoff. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600000))]
    pub reconnect_interval_max: Option<i64>,
    /// ZMQ_CONNECT_TIMEOUT: milliseconds a TCP connect may take; 0 = the kernel's. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600000))]
    pub connect_timeout: Option<i64>,
    /// ZMQ_XPUB_NODROP (PUB/XPUB only): at a full subscriber, wait instead of dropping; the
    /// proxy then stops reading the publishers until it has room, so one slow subscriber slows
    /// them all. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodrop: Option<bool>,
    /// Most frames one message may have; one more disconnects the peer (counted as
    /// `over_budget`). libzmq has no such bound. 0 = no limit. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_frames: Option<i64>,
}

/// One option's spellings and bounds: the manifest field, the flag's suffix, the accepted range.
struct Field {
    name: &'static str,
    flag: &'static str,
    min: i64,
    max: i64,
    unit: &'static str,
}

const I32_MAX: i64 = i32::MAX as i64;
const FIELDS: [Field; 12] = [
    Field { name: "sndhwm", flag: "sndhwm", min: 0, max: I32_MAX, unit: "messages" },
    Field { name: "rcvhwm", flag: "rcvhwm", min: 0, max: I32_MAX, unit: "messages" },
    Field { name: "maxMsgSize", flag: "max-msg-size", min: -1, max: i64::MAX, unit: "bytes" },
    Field { name: "tcpKeepalive", flag: "tcp-keepalive", min: 0, max: 1, unit: "true or false" },
    Field {
        name: "tcpKeepaliveIdle",
        flag: "tcp-keepalive-idle",
        min: 1,
        max: MAX_KEEPALIVE_SECS,
        unit: "seconds",
    },
    Field {
        name: "tcpKeepaliveInterval",
        flag: "tcp-keepalive-interval",
        min: 1,
        max: MAX_KEEPALIVE_SECS,
        unit: "seconds",
    },
    Field {
        name: "tcpKeepaliveCount",
        flag: "tcp-keepalive-count",
        min: 1,
        max: MAX_KEEPALIVE_COUNT,
        unit: "probes",
    },
    Field {
        name: "reconnectInterval",
        flag: "reconnect-interval",
        min: 1,
        max: MAX_MILLIS,
        unit: "milliseconds",
    },
    Field {
        name: "reconnectIntervalMax",
        flag: "reconnect-interval-max",
        min: 0,
        max: MAX_MILLIS,
        unit: "milliseconds",
    },
    Field {
        name: "connectTimeout",
        flag: "connect-timeout",
        min: 0,
        max: MAX_MILLIS,
        unit: "milliseconds",
    },
    Field { name: "nodrop", flag: "nodrop", min: 0, max: 1, unit: "true or false" },
    Field { name: "maxFrames", flag: "max-frames", min: 0, max: I32_MAX, unit: "frames" },
];

/// How a socket's options are named in errors: flags (`--frontend-sndhwm`) or manifest fields
/// (`spec.frontend.sndhwm`).
#[derive(Clone, Copy)]
pub enum Spelling<'a> {
    Flags(&'a str),
    Manifest(&'a str, &'a str),
}

impl Spelling<'_> {
    fn of(&self, f: &Field) -> String {
        match self {
            Spelling::Flags(socket) => format!("--{socket}-{}", f.flag),
            Spelling::Manifest(prefix, socket) => format!("{prefix}.{socket}.{}", f.name),
        }
    }
}

/// The socket types that have `nodrop` (ZMQ_XPUB_NODROP applies to PUB and XPUB).
pub const NODROP_TYPES: [SocketType; 2] = [SocketType::Pub, SocketType::Xpub];
/// Why the capture socket refuses `nodrop` (shared with the CRD's CEL rule).
pub const NODROP_CAPTURE_REFUSAL: &str =
    "the capture socket never waits (a slow capture reader must not stall the proxy)";

/// Why `nodrop` is refused on a socket of `socket_type` (shared with the CRD's CEL rule).
pub fn nodrop_type_refusal(socket_type: &str) -> String {
    format!("only a PUB or XPUB socket has it, not {socket_type}")
}

/// A refused option value: the field or flag as the user spelled it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct OptionError {
    pub field: String,
    pub reason: String,
}

impl SocketOptionsSpec {
    /// Every field as a number (booleans 0/1), in [`FIELDS`] order.
    fn values(&self) -> [Option<i64>; 12] {
        let b = |v: Option<bool>| v.map(i64::from);
        [
            self.sndhwm,
            self.rcvhwm,
            self.max_msg_size,
            b(self.tcp_keepalive),
            self.tcp_keepalive_idle,
            self.tcp_keepalive_interval,
            self.tcp_keepalive_count,
            self.reconnect_interval,
            self.reconnect_interval_max,
            self.connect_timeout,
            b(self.nodrop),
            self.max_frames,
        ]
    }

    fn from_values(v: [Option<i64>; 12]) -> Self {
        let b = |v: Option<i64>| v.map(|v| v != 0);
        SocketOptionsSpec {
            sndhwm: v[0],
            rcvhwm: v[1],
            max_msg_size: v[2],
            tcp_keepalive: b(v[3]),
            tcp_keepalive_idle: v[4],
            tcp_keepalive_interval: v[5],
            tcp_keepalive_count: v[6],
            reconnect_interval: v[7],
            reconnect_interval_max: v[8],
            connect_timeout: v[9],
            nodrop: b(v[10]),
            max_frames: v[11],
        }
    }

    /// The proxy flags that set exactly the fields set here (the operator renders these, so
    /// unset fields keep the proxy's defaults, which live in one place).
    pub fn to_flags(&self, socket: &str) -> Vec<String> {
        FIELDS
            .iter()
            .zip(self.values())
            .filter_map(|(f, v)| {
                let v = v?;
                let text =
                    if f.unit == "true or false" { (v != 0).to_string() } else { v.to_string() };
                Some(format!("--{socket}-{}={text}", f.flag))
            })
            .collect()
    }

    /// Validates the fields set and fills in the defaults. `socket_type` and `capture` decide
    /// where `nodrop` is allowed; errors name the field or flag as `spelling` says.
    pub fn resolve(
        &self,
        spelling: Spelling<'_>,
        socket_type: SocketType,
        capture: bool,
    ) -> Result<SocketOptions, OptionError> {
        for (f, v) in FIELDS.iter().zip(self.values()) {
            if let Some(v) = v
                && !(f.min..=f.max).contains(&v)
            {
                return Err(OptionError {
                    field: spelling.of(f),
                    reason: format!("expected {} between {} and {}, got {v}", f.unit, f.min, f.max),
                });
            }
        }
        if self.nodrop == Some(true) {
            let field = spelling.of(&FIELDS[10]);
            if capture {
                return Err(OptionError { field, reason: NODROP_CAPTURE_REFUSAL.to_string() });
            }
            if !NODROP_TYPES.contains(&socket_type) {
                let reason = nodrop_type_refusal(socket_type.as_str());
                return Err(OptionError { field, reason });
            }
        }
        let d = SocketOptions::default();
        let ms = |v: Option<i64>, default: Duration| {
            v.map_or(default, |v| Duration::from_millis(v.unsigned_abs()))
        };
        let secs = |v: Option<i64>, default: Duration| {
            v.map_or(default, |v| Duration::from_secs(v.unsigned_abs()))
        };
        Ok(SocketOptions {
            sndhwm: self.sndhwm.map_or(d.sndhwm, i64::unsigned_abs),
            rcvhwm: self.rcvhwm.map_or(d.rcvhwm, i64::unsigned_abs),
            max_msg_size: self.max_msg_size.unwrap_or(d.max_msg_size),
            tcp_keepalive: self.tcp_keepalive.unwrap_or(d.tcp_keepalive),
            tcp_keepalive_idle: secs(self.tcp_keepalive_idle, d.tcp_keepalive_idle),
            tcp_keepalive_interval: secs(self.tcp_keepalive_interval, d.tcp_keepalive_interval),
            tcp_keepalive_count: self
                .tcp_keepalive_count
                .map_or(d.tcp_keepalive_count, |v| u32::try_from(v).unwrap_or(u32::MAX)),
            reconnect_interval: ms(self.reconnect_interval, d.reconnect_interval),
            reconnect_interval_max: ms(self.reconnect_interval_max, d.reconnect_interval_max),
            connect_timeout: ms(self.connect_timeout, d.connect_timeout),
            nodrop: self.nodrop.unwrap_or(d.nodrop),
            max_frames: self.max_frames.map_or(d.max_frames, i64::unsigned_abs),
        })
    }
}

/// Flag texts as given, in [`FIELDS`] order, parsed into a spec naming the flag on bad input.
pub fn spec_from_flag_texts(
    socket: &str,
    texts: [Option<&str>; 12],
) -> Result<SocketOptionsSpec, String> {
    let mut values = [None; 12];
    for ((f, text), slot) in FIELDS.iter().zip(texts).zip(values.iter_mut()) {
        let Some(text) = text else { continue };
        let t = text.trim();
        let parsed = if f.unit == "true or false" {
            match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => Some(1),
                "false" | "0" | "off" | "no" => Some(0),
                _ => None,
            }
        } else {
            t.parse::<i64>().ok()
        };
        let Some(v) = parsed else {
            let flag = Spelling::Flags(socket).of(f);
            return Err(if f.unit == "true or false" {
                format!("{flag}: expected true or false, got {text:?}")
            } else {
                format!("{flag}: expected {} between {} and {}, got {text:?}", f.unit, f.min, f.max)
            });
        };
        *slot = Some(v);
    }
    Ok(SocketOptionsSpec::from_values(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(socket: &str, given: &[(usize, &str)]) -> Result<SocketOptionsSpec, String> {
        let mut texts = [None; 12];
        for (i, t) in given {
            texts[*i] = Some(*t);
        }
        spec_from_flag_texts(socket, texts)
    }

    #[test]
    fn unset_fields_take_the_defaults_of_defaults_rs() {
        let o = SocketOptionsSpec::default()
            .resolve(Spelling::Flags("frontend"), SocketType::Router, false)
            .expect("valid");
        assert_eq!(o, SocketOptions::default());
        assert_eq!(o.send_limit(), DEFAULT_PEER_HWM);
        assert_eq!(o.max_message_bytes(), MAX_MESSAGE_BYTES);
        assert!(o.tcp_keepalive);
        assert!(o.warnings("frontend").is_empty());
    }

    #[test]
    fn zero_and_minus_one_mean_unlimited_as_in_libzmq() {
        let spec = flags("backend", &[(0, "0"), (1, "0"), (2, "-1")]).expect("parses");
        let o = spec.resolve(Spelling::Flags("backend"), SocketType::Xpub, false).expect("valid");
        assert_eq!((o.send_limit(), o.receive_limit()), (usize::MAX, usize::MAX));
        assert_eq!(o.max_message_bytes(), usize::MAX);
        let w = o.warnings("backend");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("backend sndhwm is 0 (unlimited)"), "{w:?}");
    }

    #[test]
    fn bad_values_name_the_flag_or_the_field() {
        let e = flags("frontend", &[(0, "many")]).unwrap_err();
        assert_eq!(
            e,
            "--frontend-sndhwm: expected messages between 0 and 2147483647, got \"many\""
        );
        let e = flags("capture", &[(3, "maybe")]).unwrap_err();
        assert_eq!(e, "--capture-tcp-keepalive: expected true or false, got \"maybe\"");
        let spec = flags("backend", &[(6, "128")]).expect("a number");
        let e = spec.resolve(Spelling::Flags("backend"), SocketType::Dealer, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--backend-tcp-keepalive-count: expected probes between 1 and 127, got 128"
        );
        let spec = SocketOptionsSpec { max_msg_size: Some(-2), ..Default::default() };
        let e = spec
            .resolve(Spelling::Manifest("spec", "frontend"), SocketType::Pull, false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("spec.frontend.maxMsgSize: expected bytes between -1"), "{e}");
        let spec = SocketOptionsSpec { reconnect_interval: Some(0), ..Default::default() };
        let e = spec.resolve(Spelling::Flags("backend"), SocketType::Push, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--backend-reconnect-interval: expected milliseconds between 1")
        );
    }

    #[test]
    fn nodrop_is_for_pub_and_xpub_and_never_the_capture() {
        let spec = SocketOptionsSpec { nodrop: Some(true), ..Default::default() };
        assert!(spec.resolve(Spelling::Flags("backend"), SocketType::Xpub, false).is_ok());
        assert!(spec.resolve(Spelling::Flags("backend"), SocketType::Pub, false).is_ok());
        let e = spec.resolve(Spelling::Flags("backend"), SocketType::Push, false).unwrap_err();
        assert_eq!(e.to_string(), "--backend-nodrop: only a PUB or XPUB socket has it, not PUSH");
        let e = spec
            .resolve(Spelling::Manifest("spec", "capture"), SocketType::Pub, true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("spec.capture.nodrop: the capture socket never waits"), "{e}");
    }

    #[test]
    fn units_are_libzmqs_milliseconds_and_keepalive_seconds() {
        let spec = flags("backend", &[(4, "7"), (5, "2"), (7, "250"), (8, "4000"), (9, "1500")])
            .expect("parses");
        let o = spec.resolve(Spelling::Flags("backend"), SocketType::Dealer, false).expect("ok");
        assert_eq!(o.tcp_keepalive_idle, Duration::from_secs(7));
        assert_eq!(o.tcp_keepalive_interval, Duration::from_secs(2));
        assert_eq!(o.reconnect_interval, Duration::from_millis(250));
        assert_eq!(o.reconnect_interval_max, Duration::from_millis(4000));
        assert_eq!(o.connect_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn reconnect_delay_doubles_up_to_the_maximum_with_jitter_below_one_interval() {
        let o = SocketOptions {
            reconnect_interval: Duration::from_millis(100),
            reconnect_interval_max: Duration::from_millis(1000),
            ..SocketOptions::default()
        };
        let gaps: Vec<u128> = (0..7).map(|n| o.reconnect_delay(n, 0.0).as_millis()).collect();
        assert_eq!(gaps, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(o.reconnect_delay(40, 0.5).as_millis(), 1050);
        let flat = SocketOptions::default();
        assert_eq!(flat.reconnect_delay(9, 0.0), RECONNECT_INTERVAL);
        let below = SocketOptions { reconnect_interval_max: Duration::from_millis(50), ..flat };
        assert_eq!(below.reconnect_delay(3, 0.0), RECONNECT_INTERVAL, "ignored as in libzmq");
    }

    #[test]
    fn flags_render_only_the_fields_set_and_parse_back() {
        let spec = SocketOptionsSpec {
            sndhwm: Some(10),
            max_msg_size: Some(-1),
            tcp_keepalive: Some(false),
            nodrop: Some(true),
            ..Default::default()
        };
        let f = spec.to_flags("backend");
        assert_eq!(
            f,
            [
                "--backend-sndhwm=10",
                "--backend-max-msg-size=-1",
                "--backend-tcp-keepalive=false",
                "--backend-nodrop=true"
            ]
        );
        assert!(SocketOptionsSpec::default().to_flags("frontend").is_empty());
    }
}
