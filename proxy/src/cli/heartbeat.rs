//! The `--<socket>-heartbeat-*` flags, read as text so a refusal names the flag.

use zmq_proxy_api::heartbeat::{FieldNames, HeartbeatSpec};
use zmq_proxy_api::socket::Role;

/// The `--<socket>-heartbeat-*` flags (each also read from `ZMQ_PROXY_<FLAG>`), as text: the
/// refusal of a bad value names the flag (see [`HeartbeatFlags::spec`]).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct HeartbeatFlags {
    /// frontend: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_interval: Option<String>,
    /// frontend: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_ttl: Option<String>,
    /// frontend: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_FRONTEND_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Frontend socket",
        allow_hyphen_values = true
    )]
    pub frontend_heartbeat_timeout: Option<String>,
    /// backend: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_interval: Option<String>,
    /// backend: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_ttl: Option<String>,
    /// backend: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_BACKEND_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Backend socket",
        allow_hyphen_values = true
    )]
    pub backend_heartbeat_timeout: Option<String>,
    /// capture: milliseconds between ZMTP PINGs to each peer (ZMQ_HEARTBEAT_IVL); 0 = none [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_INTERVAL",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_interval: Option<String>,
    /// capture: TTL our PINGs announce, a multiple of 100 ms (ZMQ_HEARTBEAT_TTL) [default: 0].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_TTL",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_ttl: Option<String>,
    /// capture: silence after a PING that drops a peer (ZMQ_HEARTBEAT_TIMEOUT) [default: the interval].
    #[arg(
        long,
        env = "ZMQ_PROXY_CAPTURE_HEARTBEAT_TIMEOUT",
        value_name = "MS",
        help_heading = "Capture socket",
        allow_hyphen_values = true
    )]
    pub capture_heartbeat_timeout: Option<String>,
}

impl HeartbeatFlags {
    fn texts(&self, socket: Role) -> [&Option<String>; 3] {
        match socket {
            Role::Frontend => [
                &self.frontend_heartbeat_interval,
                &self.frontend_heartbeat_ttl,
                &self.frontend_heartbeat_timeout,
            ],
            Role::Backend => [
                &self.backend_heartbeat_interval,
                &self.backend_heartbeat_ttl,
                &self.backend_heartbeat_timeout,
            ],
            _ => [
                &self.capture_heartbeat_interval,
                &self.capture_heartbeat_ttl,
                &self.capture_heartbeat_timeout,
            ],
        }
    }

    /// The first flag given, if any (`--config` refuses them: the manifest defines heartbeats).
    pub fn first_given(&self) -> Option<String> {
        Role::DATA.into_iter().find_map(|socket| {
            let names = FieldNames::flags(socket.as_str());
            let [i, t, o] = self.texts(socket);
            [(i, names.interval), (t, names.ttl), (o, names.timeout)]
                .into_iter()
                .find_map(|(v, name)| v.is_some().then_some(name))
        })
    }

    /// One socket's flags as a [`HeartbeatSpec`] (validated by [`HeartbeatSpec::resolve`]).
    pub fn spec(&self, socket: Role) -> Result<HeartbeatSpec, String> {
        let names = FieldNames::flags(socket.as_str());
        let number = |v: &Option<String>, name: &str| match v {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<i32>()
                .map(Some)
                .map_err(|_| format!("{name}: expected whole milliseconds, got {s:?}")),
        };
        let [i, t, o] = self.texts(socket);
        Ok(HeartbeatSpec {
            interval: number(i, &names.interval)?,
            ttl: number(t, &names.ttl)?,
            timeout: number(o, &names.timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flag_texts_name_the_flag() {
        let flags = HeartbeatFlags {
            backend_heartbeat_ttl: Some("soon".into()),
            ..HeartbeatFlags::default()
        };
        assert_eq!(flags.spec(Role::Frontend), Ok(HeartbeatSpec::default()));
        let e = flags.spec(Role::Backend).unwrap_err();
        assert_eq!(e, "--backend-heartbeat-ttl: expected whole milliseconds, got \"soon\"");
        assert_eq!(flags.first_given().as_deref(), Some("--backend-heartbeat-ttl"));
    }
}
