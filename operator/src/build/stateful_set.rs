//! The StatefulSet `<name>` that runs the proxy pods.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::crd::{ZmqProxy, selector_labels};

use super::meta::{BuildError, BuildOptions, ChildMeta};
use super::pod::pod_template;
use super::service::headless_name;

/// The StatefulSet of `zp`, named as the object.
pub(super) fn stateful_set(
    zp: &ZmqProxy,
    opts: &BuildOptions,
    meta: &ChildMeta,
) -> Result<StatefulSet, BuildError> {
    Ok(StatefulSet {
        metadata: meta.named(zp.name_any(), None),
        spec: Some(stateful_set_spec(zp, opts)?),
        status: None,
    })
}

/// The StatefulSet around [`pod_template`].
///
/// The rollout must never run two proxies for one replica at once: ZeroMQ peers hold
/// long-lived connections and reconnect to whatever answers, so an overlap splits them (a client
/// on the old pod, workers on the new one) and ROUTER replies go back only through the proxy
/// that saw the request. A StatefulSet's rolling update deletes a pod and waits until it has
/// terminated, drain included, before it creates the replacement under the same name (a
/// Deployment needs `Recreate` for that; RollingUpdate with maxSurge 0 does not count terminating
/// pods). `OrderedReady`: scaling up starts pod N+1 only once pod N is ready, scaling down removes
/// the highest ordinal first, one at a time, each draining within its grace period.
/// `selector`, `serviceName` and `podManagementPolicy` are immutable in a StatefulSet: they
/// depend on the object's name only, so they never change.
pub fn stateful_set_spec(
    zp: &ZmqProxy,
    opts: &BuildOptions,
) -> Result<StatefulSetSpec, BuildError> {
    let name = zp.name_any();
    Ok(StatefulSetSpec {
        replicas: Some(zp.spec.replicas),
        selector: LabelSelector {
            match_labels: Some(selector_labels(&name)),
            match_expressions: None,
        },
        service_name: Some(headless_name(&name)),
        pod_management_policy: Some("OrderedReady".to_string()),
        update_strategy: Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".to_string()),
            rolling_update: None,
        }),
        template: pod_template(zp, opts)?,
        ..StatefulSetSpec::default()
    })
}
