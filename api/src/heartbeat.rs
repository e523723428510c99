//! ZMTP heartbeats (ZMTP 3.1 PING/PONG, RFC 37) as settings, with libzmq's ZMQ_HEARTBEAT_IVL,
//! _TTL and _TIMEOUT semantics: the manifest's and CRD's `heartbeat*` fields ([`HeartbeatSpec`]),
//! their validation, and the values each connection applies ([`Heartbeat`]).
//!
//! - Every `interval` each connection is sent a PING carrying our TTL (in deciseconds).
//! - After a PING, a connection with no inbound bytes for `timeout` (default: the interval, as
//!   libzmq) is dropped; its routing id and subscriptions go as for any disconnect.
//! - A peer's PING with a non-zero TTL starts a watch of that length: no inbound bytes before it
//!   ends drops the connection (libzmq does the same, whatever its own options say).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults::{MAX_HEARTBEAT_MS, MAX_HEARTBEAT_TTL_MS};

/// Milliseconds per decisecond, the unit of the TTL on the wire.
pub const TTL_UNIT_MS: i32 = 100;

/// One socket's heartbeat fields in a manifest or the CRD (flattened into the socket's section:
/// `spec.frontend.heartbeatInterval`, ...). Unset fields take libzmq's defaults; on Kubernetes a
/// data socket that sets none of them gets the pods' default (`kubernetes.rs`) instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatSpec {
    /// Milliseconds between the ZMTP PINGs sent on each connection of this socket (libzmq's
    /// ZMQ_HEARTBEAT_IVL); 0: none (PINGs from peers are still answered). When a socket sets
    /// none of the heartbeat fields, the operator's pods PING every 10000 ms with a 30000 ms
    /// TTL and timeout, and `zmq-proxy --config` sends no PINGs.
    #[serde(rename = "heartbeatInterval", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_HEARTBEAT_MS))]
    pub interval: Option<i32>,
    /// Milliseconds a peer should wait for traffic after one of our PINGs before it drops the
    /// connection (ZMQ_HEARTBEAT_TTL), sent in deciseconds, so a multiple of 100. Keep it above
    /// the interval. At most 65500: libzmq multiplies it back in 16 bits, so a longer TTL wraps
    /// round to a short one there. 0 or unset: none.
    #[serde(rename = "heartbeatTtl", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_HEARTBEAT_TTL_MS), extend("multipleOf" = 100))]
    pub ttl: Option<i32>,
    /// Milliseconds without any inbound traffic after a PING before the connection is dropped
    /// (ZMQ_HEARTBEAT_TIMEOUT); unset: the interval, as libzmq; 0: never.
    #[serde(rename = "heartbeatTimeout", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_HEARTBEAT_MS))]
    pub timeout: Option<i32>,
}

/// A socket's validated heartbeat settings, as each of its connections applies them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// PING every this often; `None`: no PINGs (and so no timeout).
    pub interval: Option<Duration>,
    /// The TTL our PINGs advertise, in deciseconds (0: none).
    pub ttl_deciseconds: u16,
    /// Silence after a PING that drops the connection; `None`: never.
    pub timeout: Option<Duration>,
}

/// The three fields' names as the user spelled them (flags or manifest fields).
pub struct FieldNames {
    pub interval: String,
    pub ttl: String,
    pub timeout: String,
}

impl FieldNames {
    /// `--<socket>-heartbeat-interval`, ...
    pub fn flags(socket: &str) -> Self {
        let f = |k: &str| format!("--{socket}-heartbeat-{k}");
        FieldNames { interval: f("interval"), ttl: f("ttl"), timeout: f("timeout") }
    }

    /// `spec.<socket>.heartbeatInterval`, ...
    pub fn manifest(socket: &str) -> Self {
        let f = |k: &str| format!("spec.{socket}.heartbeat{k}");
        FieldNames { interval: f("Interval"), ttl: f("Ttl"), timeout: f("Timeout") }
    }
}

impl HeartbeatSpec {
    pub fn is_empty(&self) -> bool {
        *self == HeartbeatSpec::default()
    }

    /// The settings a connection applies, or why a field is refused (naming it as given).
    pub fn resolve(&self, names: &FieldNames) -> Result<Heartbeat, String> {
        let ms = |v: Option<i32>, name: &str, max: i32| match v {
            Some(v) if !(0..=max).contains(&v) => {
                Err(format!("{name}: expected milliseconds between 0 and {max}, got {v}"))
            }
            v => Ok(v.map(|v| Duration::from_millis(v as u64))),
        };
        let interval = ms(self.interval, &names.interval, MAX_HEARTBEAT_MS)?;
        let ttl = ms(self.ttl, &names.ttl, MAX_HEARTBEAT_TTL_MS)?;
        let timeout = ms(self.timeout, &names.timeout, MAX_HEARTBEAT_MS)?;
        if let Some(t) = self.ttl
            && t % TTL_UNIT_MS != 0
        {
            return Err(format!(
                "{}: {t} is not a multiple of 100 ms (PINGs carry the TTL in deciseconds)",
                names.ttl
            ));
        }
        let interval = interval.filter(|d| !d.is_zero());
        let ttl_ms = ttl.map_or(0, |d| d.as_millis());
        Ok(Heartbeat {
            interval,
            ttl_deciseconds: u16::try_from(ttl_ms / TTL_UNIT_MS as u128).unwrap_or(u16::MAX),
            // libzmq: an unset timeout is the interval; zero never times out.
            timeout: interval.and(timeout.or(interval)).filter(|d| !d.is_zero()),
        })
    }
}

impl Heartbeat {
    /// The advertised TTL as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.ttl_deciseconds) * TTL_UNIT_MS as u64)
    }

    /// For the start-up log line: empty without PINGs, else `, heartbeat every 10000 ms (TTL
    /// 30000 ms, timeout 30000 ms)`.
    pub fn describe(&self) -> String {
        let Some(every) = self.interval else { return String::new() };
        let timeout = self.timeout.map_or("none".to_string(), |t| format!("{} ms", t.as_millis()));
        let (every, ttl) = (every.as_millis(), self.ttl().as_millis());
        format!(", heartbeat every {every} ms (TTL {ttl} ms, timeout {timeout})")
    }

    /// A combination that works but hardly does what its author meant, worded for a warning
    /// at start.
    pub fn doubts(&self) -> Option<&'static str> {
        let ttl = self.ttl();
        match self.interval {
            None if !ttl.is_zero() => Some("a heartbeat TTL without an interval is never sent"),
            Some(i) if !ttl.is_zero() && ttl <= i => Some(
                "the heartbeat TTL is not above the interval: an idle peer drops the connection between PINGs",
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval: Option<i32>, ttl: Option<i32>, timeout: Option<i32>) -> HeartbeatSpec {
        HeartbeatSpec { interval, ttl, timeout }
    }

    fn resolve(s: HeartbeatSpec) -> Result<Heartbeat, String> {
        s.resolve(&FieldNames::manifest("frontend"))
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn unset_timeout_is_the_interval_and_zero_means_none_as_in_libzmq() {
        assert_eq!(resolve(HeartbeatSpec::default()), Ok(Heartbeat::default()));
        let hb = resolve(spec(Some(1000), None, None)).expect("valid");
        assert_eq!(
            (hb.interval, hb.timeout, hb.ttl_deciseconds),
            (Some(MS(1000)), Some(MS(1000)), 0)
        );
        let hb = resolve(spec(Some(1000), Some(3000), Some(0))).expect("valid");
        assert_eq!((hb.timeout, hb.ttl_deciseconds, hb.ttl()), (None, 30, MS(3000)));
        // No PINGs: no timeout either (it is measured from a PING).
        let hb = resolve(spec(Some(0), None, Some(500))).expect("valid");
        assert_eq!((hb.interval, hb.timeout), (None, None));
        let hb = resolve(spec(Some(10), Some(65_500), Some(20))).expect("valid");
        assert_eq!((hb.ttl_deciseconds, hb.timeout), (655, Some(MS(20))));
    }

    #[test]
    fn refusals_name_the_field_and_the_bound() {
        let e = resolve(spec(Some(-1), None, None)).unwrap_err();
        assert_eq!(
            e,
            "spec.frontend.heartbeatInterval: expected milliseconds between 0 and 3600000, got -1"
        );
        let e = resolve(spec(None, Some(65_600), None)).unwrap_err();
        assert!(
            e.starts_with("spec.frontend.heartbeatTtl: expected milliseconds between 0 and 65500"),
            "{e}"
        );
        let e = resolve(spec(None, Some(150), None)).unwrap_err();
        assert!(e.starts_with("spec.frontend.heartbeatTtl: 150 is not a multiple of 100"), "{e}");
        let e = resolve(spec(None, None, Some(3_600_001))).unwrap_err();
        assert!(e.starts_with("spec.frontend.heartbeatTimeout:"), "{e}");
    }

    #[test]
    fn doubtful_combinations_are_named() {
        let hb = |i, t| resolve(spec(i, t, None)).expect("valid");
        assert!(hb(None, Some(1000)).doubts().is_some());
        assert!(hb(Some(1000), Some(1000)).doubts().is_some());
        assert!(hb(Some(1000), Some(3000)).doubts().is_none());
        assert!(hb(Some(1000), None).doubts().is_none());
    }

    /// The CRD's description of the pods' default quotes the constant's values.
    #[test]
    fn the_documented_pod_default_is_the_constant() {
        let schema = serde_json::to_value(schemars::schema_for!(HeartbeatSpec)).expect("json");
        let text = schema["properties"]["heartbeatInterval"]["description"].to_string();
        let k = crate::kubernetes::KUBERNETES_HEARTBEAT;
        for (what, v) in [("interval", k.interval), ("ttl", k.ttl), ("timeout", k.timeout)] {
            let v = v.unwrap_or_default();
            assert!(text.contains(&format!("{v} ms")), "{what} {v} not in {text}");
        }
    }
}
