//! The Service `<name>` of a `ZmqProxy`, the one address peers connect to, and the endpoints
//! the status reports through it.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{Endpoints, HEADLESS_SUFFIX, ZmqProxy, ZmqProxySpec, selector_labels};

use super::meta::ChildMeta;
use super::pod::METRICS_PORT_NAME;

/// The Service `<name>`.
pub(super) fn service(zp: &ZmqProxy, meta: &ChildMeta) -> Service {
    let name = zp.name_any();
    let service_annotations =
        (!zp.spec.service_annotations.is_empty()).then(|| zp.spec.service_annotations.clone());
    // User labels first so the operator's win: the watches find their children by the
    // managed-by label.
    let mut metadata = meta.named(name.clone(), service_annotations);
    let mut labels = zp.spec.service_labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(zp.spec.service_type.as_str().to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(&zp.spec)),
            ..ip_families(&zp.spec)
        }),
        status: None,
    }
}

/// Name of the headless Service earlier versions gave their StatefulSet (deleted once the
/// StatefulSet is gone, see `migration.rs`).
pub fn headless_name(name: &str) -> String {
    format!("{name}{HEADLESS_SUFFIX}")
}

/// The spec's IP family policy and families on a Service. Unset fields stay
/// unset, so the API server applies the cluster's defaults and the object is unchanged for
/// specs that set neither.
fn ip_families(spec: &ZmqProxySpec) -> ServiceSpec {
    ServiceSpec {
        ip_family_policy: spec.ip_family_policy.map(|p| p.as_str().to_string()),
        ip_families: (!spec.ip_families.is_empty())
            .then(|| spec.ip_families.iter().map(|f| f.as_str().to_string()).collect()),
        ..ServiceSpec::default()
    }
}

/// The bound sockets' ports; a proxy whose data sockets only connect and that has no control
/// socket binds nothing but its metrics port, which then keeps the Services valid (a Service
/// needs a port).
fn service_ports(spec: &ZmqProxySpec) -> Vec<ServicePort> {
    let mut ports = spec.sockets.named_ports();
    if ports.is_empty() {
        ports.push((METRICS_PORT_NAME, spec.metrics_port));
    }
    ports
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.to_string()),
            port,
            protocol: Some("TCP".to_string()),
            target_port: Some(IntOrString::String(name.to_string())),
            ..ServicePort::default()
        })
        .collect()
}

/// The endpoints peers connect to, through the Service's cluster DNS name.
pub fn endpoints(zp: &ZmqProxy) -> Option<Endpoints> {
    let namespace = zp.namespace()?;
    Some(endpoints_at(zp, &format!("{}.{namespace}.svc", zp.name_any())))
}

/// Every bound socket's `tcp://<host>:<port>`.
pub fn endpoints_at(zp: &ZmqProxy, host: &str) -> Endpoints {
    let ep = |port: Option<i32>| port.map(|port| format!("tcp://{host}:{port}"));
    let s = &zp.spec.sockets;
    Endpoints {
        frontend: ep(s.frontend.port),
        backend: ep(s.backend.port),
        capture: s.capture.as_ref().and_then(|c| ep(c.port)),
        control: s.control.as_ref().and_then(|c| ep(Some(c.port))),
    }
}
