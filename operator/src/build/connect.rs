//! Where each data socket connects (`spec.<socket>.connect`): the proxy's `--<socket>-connect`
//! and `--<socket>-connect-all` flags, and the headless Service the operator owns for each
//! entry that chooses pods by label.
//!
//! A `selector` entry becomes the headless Service `<name>-<socket>-<index>` (index: the entry's
//! place in the list; a name longer than 63 characters keeps the suffix and shortens the
//! object's name, marked with a hash of it), whose selector is the entry's labels and which
//! lists only ready pods (publishNotReadyAddresses false); the proxy connects to every address
//! of `<service>.<namespace>.svc` and follows it. A `service` entry is
//! `tcp://<service>.<namespace>.svc:<port>`, an `endpoint` is passed as written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use zmq_proxy_api::connect::{AddressMode, ConnectTarget};
use zmq_proxy_api::socket::Role;

use crate::crd::ZmqProxy;

use super::meta::ChildMeta;

/// Label on each headless Service of a `selector` entry: `<socket>-<index>`. The reconciler
/// finds the ones to delete by it when entries go.
pub const CONNECT_LABEL: &str = "zmqproxy.io/connect";
/// Longest Service name (a DNS-1035 label).
const MAX_SERVICE_NAME: usize = 63;

/// One connect entry as the proxy receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub socket: Role,
    pub index: usize,
    /// The endpoint passed to the proxy, as its `/connects` reports it.
    pub endpoint: String,
    /// `--<socket>-connect-all` (every address), else `--<socket>-connect`.
    pub all: bool,
    /// What the entry names, for the status: `selector app=worker port 6000`,
    /// `service workers port 6000` or `endpoint tcp://host:port`.
    pub target: String,
    /// The headless Service of a `selector` entry.
    pub service: Option<String>,
}

impl Connect {
    /// The flag and its value.
    pub fn args(&self) -> [String; 2] {
        let mode = if self.all { "-all" } else { "" };
        [format!("--{}-connect{mode}", self.socket), self.endpoint.clone()]
    }
}

/// The name of the headless Service of entry `index` of `socket`'s connect list.
pub fn connect_service_name(proxy: &str, socket: Role, index: usize) -> String {
    let suffix = format!("-{socket}-{index}");
    let name = format!("{proxy}{suffix}");
    if name.len() <= MAX_SERVICE_NAME {
        return name;
    }
    // FNV-1a: a stable mark of the full name, so two long names that share a prefix differ.
    let hash = proxy
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mark = format!("-{:05x}", hash & 0xf_ffff);
    let keep = MAX_SERVICE_NAME.saturating_sub(suffix.len() + mark.len());
    let prefix = proxy[..keep.min(proxy.len())].trim_end_matches('-');
    format!("{prefix}{mark}{suffix}")
}

/// Every connect entry of `zp`, in socket order then list order. Entries that fail their own
/// checks are skipped: [`super::validate`] refuses the object before this is used.
pub fn connects(zp: &ZmqProxy, namespace: &str) -> Vec<Connect> {
    let name = zp.name_any();
    let mut out = Vec::new();
    for (socket, spec) in zp.spec.sockets.data_sockets() {
        for (index, entry) in spec.connect.iter().enumerate() {
            if let Some(c) = connect(&name, namespace, socket, index, entry) {
                out.push(c);
            }
        }
    }
    out
}

fn connect(
    proxy: &str,
    namespace: &str,
    socket: Role,
    index: usize,
    entry: &ConnectTarget,
) -> Option<Connect> {
    let all = entry.address_mode() == AddressMode::All;
    let at = |host: &str, port: i32| format!("tcp://{host}.{namespace}.svc:{port}");
    let (endpoint, target, service) = match (&entry.service, &entry.selector, &entry.endpoint) {
        (Some(svc), None, None) => {
            let port = entry.port?;
            (at(svc, port), format!("service {svc} port {port}"), None)
        }
        (None, Some(selector), None) => {
            let port = entry.port?;
            let svc = connect_service_name(proxy, socket, index);
            (at(&svc, port), format!("selector {selector} port {port}"), Some(svc))
        }
        (None, None, Some(endpoint)) => (endpoint.clone(), format!("endpoint {endpoint}"), None),
        _ => return None,
    };
    Some(Connect { socket, index, endpoint, all, target, service })
}

/// The proxy's connect flags.
pub fn connect_args(connects: &[Connect]) -> Vec<String> {
    connects.iter().flat_map(Connect::args).collect()
}

/// The headless Service of every `selector` entry.
pub(super) fn connect_services(zp: &ZmqProxy, meta: &ChildMeta, namespace: &str) -> Vec<Service> {
    let mut services = Vec::new();
    for c in connects(zp, namespace) {
        let Some(name) = c.service else { continue };
        let socket = zp.spec.sockets.data_sockets().into_iter().find(|(r, _)| *r == c.socket);
        let Some(entry) = socket.and_then(|(_, s)| s.connect.get(c.index)) else { continue };
        let (Some(selector), Some(port)) = (&entry.selector, entry.port) else { continue };
        let mut metadata = meta.named(name, None);
        let mut labels = metadata.labels.take().unwrap_or_default();
        labels.insert(CONNECT_LABEL.to_string(), format!("{}-{}", c.socket, c.index));
        metadata.labels = Some(labels);
        services.push(Service {
            metadata,
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_string()),
                selector: Some(selector.match_labels.clone()),
                ports: Some(vec![ServicePort {
                    name: Some(c.socket.to_string()),
                    port,
                    protocol: Some("TCP".to_string()),
                    target_port: Some(IntOrString::Int(port)),
                    ..ServicePort::default()
                }]),
                // Only ready pods: a worker is connected to once it serves, and dropped as it
                // stops.
                publish_not_ready_addresses: Some(false),
                ..ServiceSpec::default()
            }),
            status: None,
        });
    }
    services
}

/// The names of [`connect_services`], for pruning the rest.
pub fn connect_service_names(zp: &ZmqProxy, namespace: &str) -> BTreeMap<String, String> {
    connects(zp, namespace)
        .into_iter()
        .filter_map(|c| Some((c.service?, format!("{}-{}", c.socket, c.index))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_fit_a_dns_label_and_stay_distinct() {
        assert_eq!(connect_service_name("tasks", Role::Backend, 0), "tasks-backend-0");
        let long = "a".repeat(52);
        let one = connect_service_name(&long, Role::Frontend, 15);
        assert!(one.len() <= 63 && one.ends_with("-frontend-15"), "{one}");
        let other = connect_service_name(&format!("{}b", "a".repeat(51)), Role::Frontend, 15);
        assert_ne!(one, other);
        assert_eq!(one, connect_service_name(&long, Role::Frontend, 15), "deterministic");
    }
}
