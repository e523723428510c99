//! The socket section of a `ZmqProxy` manifest's `spec` ([`ProxySockets`]): each socket's type,
//! port, security, options and heartbeats, and every rule the proxy enforces on it. The operator
//! flattens it into the CRD's spec; `zmq-proxy --config` reads it from the same YAML a user
//! applies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::connect::{self, ConnectTarget, MAX_CONNECT_TARGETS, Target};
pub use crate::error::SocketSpecError;
use crate::heartbeat::HeartbeatSpec;
use crate::ipc::IPC_PATH_MAX_LEN;
use crate::options::{SocketOptions, SocketOptionsSpec, Spelling};
use crate::security::SocketSecurity;
use crate::socket::{Role, SocketType, capture_type_refusal, pair_refusal};

// The port is an i32 with an explicit range rather than a u16: a u16 would put
// `format: uint16` in the CRD schema, which the API server does not know.
/// One socket of a proxy: its type, the TCP port it binds on all interfaces and where it
/// connects (at least one of the two) and, on Kubernetes, its security (NULL when unset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SocketSpec {
    #[serde(rename = "type")]
    pub socket_type: SocketType,
    /// The TCP port the socket binds, on every address. Optional when the socket connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// A Unix socket the socket binds too (`ipc://` of this absolute path, at most 107 bytes),
    /// beside or instead of `port`: how an application in the pod reaches a sidecar proxy
    /// through a shared `emptyDir`. The path's directory must exist and be writable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = IPC_PATH_MAX_LEN))]
    pub ipc: Option<String>,
    /// Where the socket connects, at most 16 entries: Services of the namespace, pods chosen by
    /// label, or any `tcp://HOST:PORT`; each name's every address, followed by DNS, unless
    /// `addresses: first`. With `port` too, the socket both binds and connects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONNECT_TARGETS))]
    pub connect: Vec<ConnectTarget>,
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
    /// A socket that binds `port`, without security or heartbeats, with default options.
    pub fn new(socket_type: SocketType, port: i32) -> Self {
        SocketSpec {
            socket_type,
            port: Some(port),
            ipc: None,
            connect: Vec::new(),
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
    /// The ports this proxy binds, named by socket, in a stable order: frontend, backend,
    /// capture, control (a socket that only connects has none).
    pub fn named_ports(&self) -> Vec<(&'static str, i32)> {
        let mut ports: Vec<(&'static str, i32)> = self
            .data_sockets()
            .into_iter()
            .filter_map(|(role, s)| Some((role.as_str(), s.port?)))
            .collect();
        if let Some(c) = &self.control {
            ports.push((Role::Control.as_str(), c.port));
        }
        ports
    }

    /// The data sockets: frontend, backend and, when present, capture.
    pub fn data_sockets(&self) -> Vec<(Role, &SocketSpec)> {
        let mut all = vec![(Role::Frontend, &self.frontend), (Role::Backend, &self.backend)];
        all.extend(self.capture.iter().map(|c| (Role::Capture, c)));
        all
    }

    /// Whether any data socket connects somewhere.
    pub fn connects(&self) -> bool {
        self.data_sockets().iter().any(|(_, s)| !s.connect.is_empty())
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
        for (role, s) in self.data_sockets() {
            s.validate_connects(&field(role.as_str()))?;
        }
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
        if let Some(curve) =
            self.control.as_ref().and_then(|c| c.security.as_ref()).map(|s| &s.curve)
        {
            let client = curve.server_public_key.is_some()
                || curve.server_public_key_ref.is_some()
                || curve.client_key.is_some();
            if client {
                return Err(SocketSpecError {
                    field: field("control.security.curve"),
                    reason: words::CONTROL_CLIENT.to_string(),
                });
            }
            if curve.server_key.is_none() {
                return Err(SocketSpecError {
                    field: field("control.security.curve.serverKey"),
                    reason: words::CONTROL_SERVER_KEY.to_string(),
                });
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
        self.data_sockets()
            .into_iter()
            .map(|(role, s)| {
                let spelling = Spelling::Manifest(field_prefix, role.as_str());
                s.options
                    .resolve(spelling, s.socket_type, role == Role::Capture)
                    .map_err(|e| SocketSpecError { field: e.field, reason: e.reason })
            })
            .collect()
    }
}

impl SocketSpec {
    /// Whether the socket binds: a TCP `port`, an `ipc` path, or both.
    pub fn binds(&self) -> bool {
        self.port.is_some() || self.ipc.is_some()
    }

    /// `ipc://PATH` of the `ipc` field, the endpoint the socket binds there.
    pub fn ipc_endpoint(&self) -> Option<String> {
        self.ipc.as_ref().map(|p| format!("ipc://{p}"))
    }

    /// The rules that tie `port`, `connect` and `security` of one data socket together (CEL:
    /// `cel::socket_rules`), then each connect entry's own; `prefix` is `spec.<socket>`.
    pub fn validate_connects(&self, prefix: &str) -> Result<Vec<Target<'_>>, SocketSpecError> {
        let socket = prefix.rsplit('.').next().unwrap_or(prefix);
        let fail = |field: &str, reason: String| {
            Err(SocketSpecError { field: format!("{prefix}.{field}"), reason })
        };
        let (binds, connects) = (self.binds(), !self.connect.is_empty());
        if !binds && !connects {
            return fail("port", words::binds_or_connects(socket));
        }
        if let Some(path) = &self.ipc
            && let Some(reason) = ipc_path_refusal(path)
        {
            return fail("ipc", reason);
        }
        if let Some(curve) = self.security.as_ref().map(|s| &s.curve) {
            let public = curve.server_public_key.is_some() || curve.server_public_key_ref.is_some();
            if binds && curve.server_key.is_none() {
                return fail("security.curve.serverKey", words::server_key_required(socket));
            }
            if !binds && curve.server_key.is_some() {
                return fail("security.curve.serverKey", words::server_key_without_bind(socket));
            }
            if connects && !public {
                return fail("security.curve.serverPublicKey", words::public_key_required(socket));
            }
            if !connects && (public || curve.client_key.is_some()) {
                return fail("security.curve", words::client_without_connect(socket));
            }
        }
        connect::validate_list(&self.connect, &format!("{prefix}.connect"))
    }
}

/// Why an `ipc` path is refused, or `None`: absolute (the proxy's working directory is no
/// place both containers of a pod share), not a directory, no NUL, and fits `sun_path`.
pub fn ipc_path_refusal(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.ends_with('/') || path.len() < 2 {
        return Some(words::IPC_PATH.to_string());
    }
    if path.contains('\0') {
        return Some(format!("{}: a NUL byte in the path", words::IPC_PATH));
    }
    if path.len() > IPC_PATH_MAX_LEN {
        return Some(format!(
            "{} bytes, longer than the {IPC_PATH_MAX_LEN} a Unix socket address holds",
            path.len()
        ));
    }
    None
}

/// The words of the rules that tie a socket's binds, connects and CURVE keys together, shared
/// with their CEL renderings in `cel.rs`.
pub mod words {
    pub fn binds_or_connects(socket: &str) -> String {
        format!("{socket} needs port or ipc (to bind) or connect (to connect), or both")
    }
    pub const IPC_PATH: &str =
        "an absolute path of a Unix socket file, e.g. /zmq/out (bound as ipc:///zmq/out)";
    pub fn server_key_required(socket: &str) -> String {
        format!(
            "required: {socket} binds (port) and is a CURVE socket, so its binds are CURVE servers with this key"
        )
    }
    pub fn server_key_without_bind(socket: &str) -> String {
        format!(
            "{socket} does not bind (no port): serverKey is a CURVE server's key; a connecting socket names its server with serverPublicKey or serverPublicKeyRef"
        )
    }
    pub fn public_key_required(socket: &str) -> String {
        format!(
            "required (or serverPublicKeyRef): {socket} connects (connect) and is a CURVE socket, so its connects are CURVE clients of this server key"
        )
    }
    pub fn client_without_connect(socket: &str) -> String {
        format!(
            "{socket} does not connect (no connect): serverPublicKey, serverPublicKeyRef and clientKey are for a socket's connects"
        )
    }
    pub const CONTROL_CLIENT: &str = "the control socket only binds: serverPublicKey, serverPublicKeyRef and clientKey are for a socket's connects";
    pub const CONTROL_SERVER_KEY: &str = "required: the control socket binds and is a CURVE socket, so it is a CURVE server with this key";
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
        assert_eq!(s.backend.port, Some(5556));
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

    fn sockets(yaml: &str) -> ProxySockets {
        serde_yaml::from_str(yaml).expect("valid yaml")
    }

    #[test]
    fn a_socket_binds_or_connects_and_its_curve_keys_follow() {
        let ok = sockets(
            "frontend: {type: ROUTER, port: 5555}\nbackend: {type: DEALER, connect: [{selector: {matchLabels: {app: w}}, port: 6000}]}\n",
        );
        assert_eq!(ok.validate("spec"), Ok(()));
        assert_eq!(ok.named_ports(), [("frontend", 5555)]);
        assert!(ok.connects());
        let refused =
            |yaml: &str| sockets(yaml).validate("spec").err().map(|e| (e.field, e.reason));
        let fe = "frontend: {type: ROUTER, port: 5555}\n";
        let cases = [
            ("backend: {type: DEALER}", "spec.backend.port", words::binds_or_connects("backend")),
            (
                "backend: {type: DEALER, connect: [{service: w}]}",
                "spec.backend.connect[0].port",
                crate::connect::words::PORT_REQUIRED.to_string(),
            ),
            (
                "backend: {type: DEALER, port: 1, security: {curve: {serverPublicKey: 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'}}}",
                "spec.backend.security.curve.serverKey",
                words::server_key_required("backend"),
            ),
            (
                "backend: {type: DEALER, connect: [{endpoint: 'tcp://a:1'}], security: {curve: {serverKey: {secretName: k}, allowAnyClient: true}}}",
                "spec.backend.security.curve.serverKey",
                words::server_key_without_bind("backend"),
            ),
            (
                "backend: {type: DEALER, connect: [{endpoint: 'tcp://a:1'}], security: {curve: {clientKey: {secretName: c}}}}",
                "spec.backend.security.curve.serverPublicKey",
                words::public_key_required("backend"),
            ),
        ];
        for (backend, field, reason) in cases {
            assert_eq!(
                refused(&format!("{fe}{backend}\n")),
                Some((field.to_string(), reason)),
                "{backend}"
            );
        }
    }
}
