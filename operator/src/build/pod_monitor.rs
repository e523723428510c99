//! The prometheus-operator `PodMonitor` `<name>` (`spec.monitoring.podMonitor`, or the
//! operator's `--pod-monitor-default`), as JSON: the operator does not link prometheus-operator's
//! types, and applies it only where the cluster serves the API ([`crate::monitoring`]).

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::{ZmqProxy, selector_labels};

use super::meta::{BuildError, BuildOptions, child_labels, owner_reference};
use super::pod::METRICS_PORT_NAME;

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";
pub const KIND: &str = "PodMonitor";
/// Label every scraped proxy series carries: the ZmqProxy's name, which the chart's dashboard
/// and alerts aggregate by (relabelled from the pod label `app.kubernetes.io/instance`).
pub const ZMQPROXY_LABEL: &str = "zmqproxy";

/// Whether `zp` gets a PodMonitor: its own `spec.monitoring.podMonitor`, else the operator's
/// default.
pub fn wanted(zp: &ZmqProxy, opts: &BuildOptions) -> bool {
    zp.spec.monitoring.as_ref().and_then(|m| m.pod_monitor).unwrap_or(opts.pod_monitor_default)
}

/// The PodMonitor of `zp` (named as the object, in its namespace, owned by it): every proxy pod
/// (the StatefulSet's selector) scraped on its `metrics` port, each series labelled with
/// `zmqproxy`, `namespace` and `pod`.
pub fn pod_monitor(zp: &ZmqProxy) -> Result<Value, BuildError> {
    let owner = owner_reference(zp)?;
    let name = zp.name_any();
    let namespace = zp.namespace().ok_or(BuildError::MissingObjectKey("metadata.namespace"))?;
    let relabel = |source: &str, target: &str| json!({"sourceLabels": [source], "targetLabel": target, "action": "replace"});
    Ok(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": child_labels(&name),
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": {"matchLabels": selector_labels(&name)},
            "podMetricsEndpoints": [{
                "port": METRICS_PORT_NAME,
                "path": "/metrics",
                "relabelings": [
                    relabel("__meta_kubernetes_pod_label_app_kubernetes_io_instance", ZMQPROXY_LABEL),
                    relabel("__meta_kubernetes_namespace", "namespace"),
                    relabel("__meta_kubernetes_pod_name", "pod"),
                ],
            }],
        },
    }))
}
