//! The PodDisruptionBudget `<name>`, for two replicas or more.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{ZmqProxy, selector_labels};

use super::meta::ChildMeta;

/// The PodDisruptionBudget of `zp`, when it gets one ([`pod_disruption_budget_spec`]).
pub(super) fn pdb(zp: &ZmqProxy, meta: &ChildMeta) -> Option<PodDisruptionBudget> {
    pod_disruption_budget_spec(zp).map(|spec| PodDisruptionBudget {
        metadata: meta.named(pdb_name(&zp.name_any()), None),
        spec: Some(spec),
        status: None,
    })
}

/// Name of the PodDisruptionBudget of a `ZmqProxy` (the object's own name, as the StatefulSet).
pub fn pdb_name(name: &str) -> String {
    name.to_string()
}

/// The PodDisruptionBudget's spec for two replicas or more (none below, or when disabled): one
/// proxy at a time by default, so a node drain never takes every proxy at once (the peers of the
/// others keep being served while the evicted one drains).
pub fn pod_disruption_budget_spec(zp: &ZmqProxy) -> Option<PodDisruptionBudgetSpec> {
    let settings = zp.spec.pod_disruption_budget.clone().unwrap_or_default();
    if zp.spec.replicas < 2 || !settings.enabled {
        return None;
    }
    let max_unavailable = match (&settings.max_unavailable, &settings.min_available) {
        (_, Some(_)) => settings.max_unavailable.clone(),
        (Some(max), None) => Some(max.clone()),
        (None, None) => Some(IntOrString::Int(1)),
    };
    Some(PodDisruptionBudgetSpec {
        max_unavailable,
        min_available: settings.min_available,
        selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&zp.name_any())),
            match_expressions: None,
        }),
        // A pod that is not ready serves nobody, so evicting it costs nothing; with the default
        // (IfHealthyBudget) one crash-looping proxy would block every node drain.
        unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
    })
}
