//! The Deployment `<name>` that runs the proxy pods.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{ZmqProxy, selector_labels};

use super::meta::{BuildError, BuildOptions, ChildMeta};
use super::pod::pod_template;

/// The Deployment of `zp`, named as the object.
pub(super) fn deployment(
    zp: &ZmqProxy,
    opts: &BuildOptions,
    meta: &ChildMeta,
) -> Result<Deployment, BuildError> {
    Ok(Deployment {
        metadata: meta.named(zp.name_any(), None),
        spec: Some(deployment_spec(zp, opts)?),
        status: None,
    })
}

/// The Deployment around [`pod_template`].
///
/// Peers reach the proxy through the Service only (with several replicas, the replicas
/// federate and act as one), so a pod needs no stable name and the rollout may overlap: a
/// rolling update starts a new pod (`maxSurge` 1) and takes an old one away only once the new
/// one is ready (`maxUnavailable` 0). The old pod then runs its lame duck, unready, while the
/// Service moves new connections to the others, and drains within its grace period; its peers
/// reconnect through the Service to a pod that already serves. `selector` is immutable: it
/// depends on the object's name only.
pub fn deployment_spec(zp: &ZmqProxy, opts: &BuildOptions) -> Result<DeploymentSpec, BuildError> {
    Ok(DeploymentSpec {
        replicas: Some(zp.spec.replicas),
        selector: LabelSelector {
            match_labels: Some(selector_labels(&zp.name_any())),
            match_expressions: None,
        },
        strategy: Some(DeploymentStrategy {
            type_: Some("RollingUpdate".to_string()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }),
        template: pod_template(zp, opts)?,
        ..DeploymentSpec::default()
    })
}
