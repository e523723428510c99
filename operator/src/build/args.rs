//! The proxy's command line, built from the spec.

use zmq_proxy_api::kubernetes::KUBERNETES_HEARTBEAT;
use zmq_proxy_api::manifest::ProxySockets;
use zmq_proxy_api::memory::{budget_of_limit, parse_bytes};

use crate::crd::ZmqProxySpec;

use super::connect::{Connect, connect_args};
use super::curve::curve_mounts;
use super::steering::{PAUSED_KEY, STEERING_MOUNT};

/// The proxy's command-line flags, as in the shared contract; `connects` are the spec's
/// connect entries ([`super::connects`]). Every listener binds `*`: IPv6
/// and IPv4 on one dual-stack socket, IPv4 alone where the pod has no IPv6, so the same pod
/// serves IPv4-only, IPv6-only and dual-stack clusters (and `--config` binds the same way).
pub fn proxy_args(spec: &ZmqProxySpec, connects: &[Connect]) -> Vec<String> {
    let bind = |port: i32| format!("tcp://*:{port}");
    let s = &spec.sockets;
    let mut args = Vec::new();
    for (role, socket) in s.data_sockets() {
        args.extend([format!("--{role}-type"), socket.socket_type.to_string()]);
        if let Some(port) = socket.port {
            args.extend([format!("--{role}-bind"), bind(port)]);
        }
        if let Some(ipc) = socket.ipc_endpoint() {
            args.extend([format!("--{role}-bind"), ipc]);
        }
        let own: Vec<Connect> = connects.iter().filter(|c| c.socket == role).cloned().collect();
        args.extend(connect_args(&own));
    }
    if let Some(control) = &s.control {
        args.extend(["--control-bind".to_string(), bind(control.port)]);
    }
    args.extend(heartbeat_args(&spec.sockets));
    args.extend(curve_args(spec));
    // Only the options a spec sets: unset ones keep the proxy's defaults (one place).
    args.extend(s.frontend.options.to_flags("frontend"));
    args.extend(s.backend.options.to_flags("backend"));
    if let Some(capture) = &s.capture {
        args.extend(capture.options.to_flags("capture"));
    }
    if let Some(bytes) = max_memory(spec) {
        args.extend(["--max-memory".to_string(), bytes.to_string()]);
    }
    args.extend(["--pause-file".to_string(), format!("{STEERING_MOUNT}/{PAUSED_KEY}")]);
    args.extend([
        "--http-bind".to_string(),
        format!("*:{}", spec.metrics_port),
        "--drain-timeout".to_string(),
        spec.drain_timeout_seconds.to_string(),
        "--lame-duck".to_string(),
        spec.lame_duck_seconds.to_string(),
        "--log-format".to_string(),
        "json".to_string(),
    ]);
    args
}

/// `--max-memory`: the spec's `maxMemoryBytes`, else the share of the proxy container's memory
/// limit that the proxy itself would take from its cgroup (written out, so the pod's arguments
/// show it and a node whose cgroup the proxy cannot read changes nothing). Without either, or
/// with a limit in a spelling the proxy does not read, the proxy's own default applies.
pub fn max_memory(spec: &ZmqProxySpec) -> Option<u64> {
    if let Some(bytes) = spec.max_memory_bytes {
        return u64::try_from(bytes).ok();
    }
    let limit = spec.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    parse_bytes(&limit.0).ok().map(budget_of_limit)
}

/// `--<socket>-heartbeat-*` of each data socket: the fields its spec sets, or, when it sets
/// none, the pods' default [`KUBERNETES_HEARTBEAT`] (why it is on: the proxy's config module).
/// The control socket has no heartbeats.
pub fn heartbeat_args(sockets: &ProxySockets) -> Vec<String> {
    let mut all = vec![("frontend", &sockets.frontend), ("backend", &sockets.backend)];
    all.extend(sockets.capture.as_ref().map(|c| ("capture", c)));
    let mut args = Vec::new();
    for (socket, spec) in all {
        let hb = if spec.heartbeat.is_empty() { KUBERNETES_HEARTBEAT } else { spec.heartbeat };
        for (field, value) in [("interval", hb.interval), ("ttl", hb.ttl), ("timeout", hb.timeout)]
        {
            if let Some(v) = value {
                args.extend([format!("--{socket}-heartbeat-{field}"), v.to_string()]);
            }
        }
    }
    args
}

/// The CURVE flags: each socket's key file and allow-list, then `--curve-allow-any` when a
/// socket accepts any client. The proxy's flag is global, but it applies only to CURVE sockets
/// without an allow-list, and every CURVE socket here has exactly one of the two (the CRD's
/// rules and [`validate`]), so each socket gets what its own section says.
fn curve_args(spec: &ZmqProxySpec) -> Vec<String> {
    let mut args: Vec<String> = curve_mounts(spec).into_iter().flat_map(|m| m.args).collect();
    let any = spec
        .sockets
        .named_security()
        .into_iter()
        .any(|(_, s)| s.is_some_and(|s| s.curve.allow_any_client));
    if any {
        args.push("--curve-allow-any".to_string());
    }
    args
}
