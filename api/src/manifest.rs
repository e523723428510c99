//! The socket section of a `ZmqProxy` manifest's `spec` ([`ProxySockets`]): each socket's type,
//! port, security, options and heartbeats, and every rule the proxy enforces on it. The operator
//! flattens it into the CRD's spec; `zmq-proxy --config` reads it from the same YAML a user
//! applies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::error::SocketSpecError;
use crate::heartbeat::HeartbeatSpec;
use crate::options::{SocketOptions, SocketOptionsSpec, Spelling};
use crate::security::SocketSecurity;
use crate::socket::{Role, SocketType, capture_type_refusal, pair_refusal};

// The port is an i32 with an explicit range rather than a u16: a u16 would put
// `format: uint16` in the CRD schema, which the API server does not know.
/// One socket of a proxy: its type, the TCP port it binds on all interfaces and, on
/// Kubernetes, its security (NULL when unset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SocketSpec {
    #[serde(rename = "type")]
    pub socket_type: SocketType,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// CurveZMQ for this socket, from a Secret (the server's key) and a Secret or ConfigMap
    /// (the allowed clients) that the operator mounts into the pod. Unset: NULL, no security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketSecurity>,
    /// libzmq's per-socket options (`sndhwm`, `maxMsgSize`, ...; see `options.rs`).
    #[serde(flatten)]
    pub options: SocketOptionsSpec,
    /// ZMTP heartbeats: `heartbeatInterval`, `heartbeatTtl`, `heartbeatTimeout`.
    #[serde(flatten)]
    pub heartbeat: HeartbeatSpec,
}

impl SocketSpec {
    /// A socket without security or heartbeats, with default options.
    pub fn new(socket_type: SocketType, port: i32) -> Self {
        SocketSpec {
            socket_type,
            port,
            security: None,
            options: SocketOptionsSpec::default(),
            heartbeat: HeartbeatSpec::default(),
        }
    }
}

/// The steering socket (zmq_proxy_steerable's control socket, a REP): PAUSE, RESUME,
/// TERMINATE and STATISTICS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ControlSpec {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// CurveZMQ for the control socket; give it its own allow-list (whoever may connect here
    /// can PAUSE and TERMINATE the proxy). Unset: NULL, no security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketSecurity>,
}

/// The socket section of a `ZmqProxy` manifest's `spec`. The operator flattens it into the
/// CRD's spec; `zmq-proxy --config` reads it from the same YAML a user applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySockets {
    /// The frontend socket: clients (shared queue), publishers (forwarder) or producers
    /// (pipeline) connect here.
    pub frontend: SocketSpec,
    /// The backend socket: workers, subscribers or consumers connect here. With the frontend
    /// it must form ROUTER/DEALER, XSUB/XPUB, SUB/PUB or PULL/PUSH, either way round.
    pub backend: SocketSpec,
    /// Optional capture socket (PUB, DEALER or PUSH): a copy of every message, all frames,
    /// in both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<SocketSpec>,
    /// Optional steering socket (zmq_proxy_steerable): PAUSE, RESUME, TERMINATE, STATISTICS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSpec>,
}

impl ProxySockets {
    /// The named ports of this proxy in a stable order: frontend, backend, capture, control.
    pub fn named_ports(&self) -> Vec<(&'static str, i32)> {
        let mut ports = vec![
            (Role::Frontend.as_str(), self.frontend.port),
            (Role::Backend.as_str(), self.backend.port),
        ];
        if let Some(c) = &self.capture {
            ports.push((Role::Capture.as_str(), c.port));
        }
        if let Some(c) = &self.control {
            ports.push((Role::Control.as_str(), c.port));
        }
        ports
    }

    /// The security section of each socket, in [`ProxySockets::named_ports`] order (capture and
    /// control only when present); `None` is NULL.
    pub fn named_security(&self) -> Vec<(&'static str, Option<&SocketSecurity>)> {
        let mut all = vec![
            (Role::Frontend.as_str(), self.frontend.security.as_ref()),
            (Role::Backend.as_str(), self.backend.security.as_ref()),
        ];
        if let Some(c) = &self.capture {
            all.push((Role::Capture.as_str(), c.security.as_ref()));
        }
        if let Some(c) = &self.control {
            all.push((Role::Control.as_str(), c.security.as_ref()));
        }
        all
    }

    /// Every rule the proxy enforces on a socket section. `field_prefix` is where the section
    /// sits in the document (`spec` for a manifest), so errors name the field a user wrote.
    pub fn validate(&self, field_prefix: &str) -> Result<(), SocketSpecError> {
        let field = |name: &str| format!("{field_prefix}.{name}");
        for (name, port) in self.named_ports() {
            if !(1..=65535).contains(&port) {
                return Err(SocketSpecError {
                    field: field(&format!("{name}.port")),
                    reason: format!("port {port} is outside 1-65535"),
                });
            }
        }
        if let Some(reason) = pair_refusal(self.frontend.socket_type, self.backend.socket_type) {
            return Err(SocketSpecError { field: field("backend.type"), reason });
        }
        if let Some(capture) = &self.capture
            && let Some(reason) = capture_type_refusal(capture.socket_type)
        {
            return Err(SocketSpecError { field: field("capture.type"), reason });
        }
        let ports = self.named_ports();
        for (i, (name, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return Err(SocketSpecError {
                    field: field(&format!("{name}.port")),
                    reason: port_clash_text(Some(*port), other),
                });
            }
        }
        for (name, security) in self.named_security() {
            if let Some(security) = security {
                security.validate(&field(&format!("{name}.security")))?;
            }
        }
        self.socket_options(field_prefix)?;
        Ok(())
    }

    /// Each socket's options, validated, in [`ProxySockets::named_ports`] order (frontend,
    /// backend, capture when present; the control socket has none).
    pub fn socket_options(
        &self,
        field_prefix: &str,
    ) -> Result<Vec<SocketOptions>, SocketSpecError> {
        let mut all = vec![(Role::Frontend, &self.frontend), (Role::Backend, &self.backend)];
        all.extend(self.capture.iter().map(|c| (Role::Capture, c)));
        all.into_iter()
            .map(|(role, s)| {
                let spelling = Spelling::Manifest(field_prefix, role.as_str());
                s.options
                    .resolve(spelling, s.socket_type, role == Role::Capture)
                    .map_err(|e| SocketSpecError { field: e.field, reason: e.reason })
            })
            .collect()
    }
}

/// The words of a port clash, shared with its CEL rendering in `cel.rs`.
/// The CEL rendering passes no port: the API server's cost estimator treats `string()` of an
/// integer as unbounded and refuses the whole CRD, so its messages are static per clash.
pub(crate) fn port_clash_text(port: Option<i32>, other: &str) -> String {
    match port {
        Some(port) => format!("port {port} is already used by {other}; ports must be distinct"),
        None => format!("port is already used by {other}; ports must be distinct"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_section_round_trips_through_yaml() {
        let yaml = "frontend: {type: ROUTER, port: 5555}\nbackend: {type: DEALER, port: 5556}\n";
        let s: ProxySockets = serde_yaml::from_str(yaml).expect("valid yaml");
        assert_eq!(s.frontend.socket_type, SocketType::Router);
        assert_eq!(s.backend.port, 5556);
        assert!(s.capture.is_none());
        assert_eq!(s.validate("spec"), Ok(()));
    }

    #[test]
    fn duplicate_ports_name_the_second_field() {
        let s = ProxySockets {
            frontend: SocketSpec::new(SocketType::Pull, 5000),
            backend: SocketSpec::new(SocketType::Push, 5001),
            capture: Some(SocketSpec::new(SocketType::Pub, 5000)),
            control: None,
        };
        let err = s.validate("spec").err().map(|e| e.field);
        assert_eq!(err.as_deref(), Some("spec.capture.port"));
    }

    #[test]
    fn out_of_range_port_is_refused() {
        let s = ProxySockets {
            frontend: SocketSpec::new(SocketType::Pull, 0),
            backend: SocketSpec::new(SocketType::Push, 5001),
            capture: None,
            control: None,
        };
        assert_eq!(
            s.validate("spec").err().map(|e| e.field).as_deref(),
            Some("spec.frontend.port")
        );
    }
}
