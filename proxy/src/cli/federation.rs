//! The `--federation-*` flags: this proxy as one replica of several that act as one
//! (docs/federation.md).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use zmq_proxy_api::endpoint::{Direction, Endpoint};
use zmq_proxy_api::federation::federated_pattern;
use zmq_proxy_api::socket::SocketType;

use crate::engine::curve::{
    Allow, AllowList, CurveClient, CurveServer, Mechanism, Security, load_secret_key_file,
};
use crate::federation::FederationConfig;
use crate::federation::frame::ID_MAX_BYTES;
use crate::proxy::config::ConfigError;

/// The federation flags (each also read from `ZMQ_PROXY_<FLAG>`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct FederationFlags {
    /// tcp://HOST:PORT this replica accepts the other replicas' links on; turns federation on
    /// (XSUB/XPUB, PULL/PUSH and ROUTER/DEALER proxies) [default: none, no federation]
    #[arg(long, env = "ZMQ_PROXY_FEDERATION_BIND", value_name = "EP", help_heading = "Federation")]
    pub federation_bind: Option<String>,
    /// tcp://HOST:PORT of another replica's --federation-bind; repeatable, comma-separated in
    /// the variable; an address that leads back to this replica is skipped [default: none]
    #[arg(
        long,
        env = "ZMQ_PROXY_FEDERATION_PEERS",
        value_name = "EP",
        value_delimiter = ',',
        help_heading = "Federation"
    )]
    pub federation_peers: Vec<String>,
    /// This replica's name in the federation, unique among the replicas [default: the host
    /// name: $HOSTNAME, else the kernel's]
    #[arg(long, env = "ZMQ_PROXY_FEDERATION_ID", value_name = "NAME", help_heading = "Federation")]
    pub federation_id: Option<String>,
    /// The federation's CURVE secret key file (Z85 or zcert secret), the same on every replica:
    /// links are CURVE and only a holder of that key can join [default: none, NULL links]
    #[arg(
        long,
        env = "ZMQ_PROXY_FEDERATION_CURVE_KEY_FILE",
        value_name = "FILE",
        help_heading = "Federation"
    )]
    pub federation_curve_key_file: Option<PathBuf>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The host name a replica is known by when `--federation-id` is not given: a pod's name.
fn host_name() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env.or_else(from_kernel).map(|h| h.trim().to_string()).filter(|h| !h.is_empty())
}

impl FederationFlags {
    /// The federation of a proxy whose sockets are `frontend`/`backend`, or `None` without
    /// `--federation-bind`.
    pub fn resolve(
        &self,
        frontend: SocketType,
        backend: SocketType,
    ) -> Result<Option<FederationConfig>, ConfigError> {
        let Some(bind) = &self.federation_bind else {
            let stray = [
                ("--federation-peers", !self.federation_peers.is_empty()),
                ("--federation-id", self.federation_id.is_some()),
                ("--federation-curve-key-file", self.federation_curve_key_file.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                return err(format!("{flag} needs --federation-bind"));
            }
            return Ok(None);
        };
        let Some(pattern) = federated_pattern(frontend, backend) else {
            return err(format!(
                "--federation-bind: federation works for XSUB/XPUB, PULL/PUSH and ROUTER/DEALER proxies; this one is {frontend}/{backend}"
            ));
        };
        let bind = Endpoint::parse(bind, Direction::Bind)
            .map_err(|e| ConfigError(format!("--federation-bind: {e}")))?;
        let peers = self
            .federation_peers
            .iter()
            .map(|p| Endpoint::parse(p, Direction::Connect))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError(format!("--federation-peers: {e}")))?;
        let id = match &self.federation_id {
            Some(id) => id.clone(),
            None => match host_name() {
                Some(h) => h,
                None => return err("--federation-id: no host name to default to; give one"),
            },
        };
        if id.is_empty() || id.len() > ID_MAX_BYTES || id.chars().any(char::is_whitespace) {
            return err(format!(
                "--federation-id: {id:?} must be 1 to {ID_MAX_BYTES} bytes without spaces"
            ));
        }
        let security = match &self.federation_curve_key_file {
            None => Security::default(),
            Some(path) => {
                let secret = load_secret_key_file(path)
                    .map_err(|e| ConfigError(format!("--federation-curve-key-file: {}", e.0)))?;
                let public = secret.public_key();
                // One keypair for the whole federation: a replica accepts only clients holding
                // it, and dials expecting a server holding it.
                let allow = AllowList::of_keys(path, HashSet::from([public]));
                let client = CurveClient {
                    secret: secret.clone(),
                    public,
                    server: public,
                    ephemeral: false,
                };
                let server = CurveServer { secret, public, allow: Allow::List(allow) };
                Security {
                    accepted: Mechanism::Server(Arc::new(server)),
                    connected: Mechanism::Client(Arc::new(client)),
                }
            }
        };
        Ok(Some(FederationConfig { id, pattern, bind, peers, security }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(bind: Option<&str>, peers: &[&str], id: Option<&str>) -> FederationFlags {
        FederationFlags {
            federation_bind: bind.map(String::from),
            federation_peers: peers.iter().map(|p| p.to_string()).collect(),
            federation_id: id.map(String::from),
            federation_curve_key_file: None,
        }
    }

    fn refusal(f: FederationFlags, front: SocketType, back: SocketType) -> String {
        match f.resolve(front, back) {
            Err(e) => e.0,
            Ok(c) => panic!("accepted: {c:?}"),
        }
    }

    #[test]
    fn federation_flags_build_a_config_and_bad_ones_name_the_flag() {
        let (x, p) = (SocketType::Xsub, SocketType::Xpub);
        let ok = flags(Some("tcp://*:7000"), &["tcp://b:7000", "tcp://c:7000"], Some("a"));
        let cfg = ok.resolve(p, x).expect("reversed XPUB/XSUB works too").expect("federated");
        assert_eq!((cfg.id.as_str(), cfg.bind.port, cfg.peers.len()), ("a", 7000, 2));
        assert!(!cfg.security.is_curve());
        assert_eq!(flags(None, &[], None).resolve(x, p), Ok(None));
        let cases = [
            (flags(None, &["tcp://b:1"], None), "--federation-peers needs --federation-bind"),
            (flags(None, &[], Some("a")), "--federation-id needs --federation-bind"),
            (flags(Some("b:1"), &[], Some("a")), "--federation-bind: "),
            (flags(Some("tcp://*:1"), &["tcp://*:2"], Some("a")), "--federation-peers: "),
            (flags(Some("tcp://*:1"), &[], Some("a b")), "--federation-id: "),
            (flags(Some("tcp://*:1"), &[], Some("")), "--federation-id: "),
        ];
        for (f, start) in cases {
            let e = refusal(f, x, p);
            assert!(e.starts_with(start), "{e:?} should start with {start:?}");
        }
        assert!(ok.resolve(SocketType::Pull, SocketType::Push).is_ok_and(|c| c.is_some()));
        for (front, back) in
            [(SocketType::Router, SocketType::Dealer), (SocketType::Dealer, SocketType::Router)]
        {
            let cfg = ok.resolve(front, back).expect("ROUTER/DEALER works").expect("federated");
            assert_eq!(cfg.pattern, "ROUTER/DEALER");
        }
        let e = refusal(ok, SocketType::Pair, SocketType::Pair);
        assert!(e.contains("ROUTER/DEALER") && e.contains("PAIR/PAIR"), "{e}");
    }
}
