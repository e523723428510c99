//! What a manifest's `spec.<socket>.connect` means to `zmq-proxy --config` on one machine
//! (`zmq_proxy_api::connect` has the entries): `service: NAME` is the host NAME, `endpoint` is
//! taken as written, and `selector` is refused, since a label selector has no meaning outside a
//! cluster. `addresses: all` (the default) is the connect-all mode, `first` the plain connect.

use zmq_proxy_api::connect::{AddressMode, Target};
use zmq_proxy_api::endpoint::Endpoint;
use zmq_proxy_api::local::SELECTOR_REFUSAL;
use zmq_proxy_api::manifest::SocketSpec;

/// One socket's connect endpoints, split by mode.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LocalConnects {
    /// `addresses: first`: libzmq's one address, as `--<socket>-connect`.
    pub first: Vec<Endpoint>,
    /// `addresses: all`: every address, as `--<socket>-connect-all`.
    pub all: Vec<Endpoint>,
}

/// The connect endpoints of the manifest's socket `name` (its entries already validated by
/// `ProxySockets::validate`, which names a bad one first).
pub fn local_connects(name: &str, socket: &SocketSpec) -> Result<LocalConnects, String> {
    let mut out = LocalConnects::default();
    for (i, entry) in socket.connect.iter().enumerate() {
        let field = format!("spec.{name}.connect[{i}]");
        let endpoint = match entry.validate(&field).map_err(|e| e.to_string())? {
            Target::Service { name, port } => Endpoint { host: name.to_string(), port },
            Target::Endpoint(ep) => ep,
            Target::Selector { .. } => {
                return Err(format!("{field}.selector: {}", SELECTOR_REFUSAL));
            }
        };
        match entry.address_mode() {
            AddressMode::All => out.all.push(endpoint),
            AddressMode::First => out.first.push(endpoint),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(yaml: &str) -> SocketSpec {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn services_are_hosts_endpoints_stay_and_selectors_need_the_operator() {
        let s = socket(
            "{type: DEALER, connect: [{service: workers, port: 6000}, {endpoint: 'tcp://10.0.0.1:7000', addresses: first}]}",
        );
        let c = local_connects("backend", &s).expect("valid");
        assert_eq!(c.all, [Endpoint { host: "workers".into(), port: 6000 }]);
        assert_eq!(c.first, [Endpoint { host: "10.0.0.1".into(), port: 7000 }]);
        let s = socket("{type: DEALER, connect: [{selector: {matchLabels: {app: w}}, port: 1}]}");
        assert_eq!(
            local_connects("backend", &s),
            Err(format!("spec.backend.connect[0].selector: {}", SELECTOR_REFUSAL))
        );
    }
}
