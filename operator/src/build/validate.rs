//! The operator's own check of a spec, before anything is built from it.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{
    GRACE_PERIOD_TOO_SHORT, IpFamilyPolicy, NOT_FEDERATED, PDB_BOTH_BOUNDS, ZmqProxySpec,
};

use super::federation::federation_of;
use super::meta::BuildError;
use super::pod::drain_period;

/// Every check the API server's schema makes, again, so an object that bypassed the CRD's rules
/// (an older CRD, a disabled validation) never reaches a pod that would crash-loop on it.
pub fn validate(spec: &ZmqProxySpec) -> Result<(), BuildError> {
    spec.sockets.validate("spec").map_err(|e| BuildError::InvalidSpec(e.to_string()))?;
    if let Some((name, _)) =
        spec.sockets.named_ports().into_iter().find(|(_, port)| *port == spec.metrics_port)
    {
        return Err(BuildError::InvalidSpec(format!(
            "spec.metricsPort: port {} is already used by {name}; ports must be distinct",
            spec.metrics_port
        )));
    }
    if !(1..=65535).contains(&spec.metrics_port) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.metricsPort: port {} is outside 1-65535",
            spec.metrics_port
        )));
    }
    if spec.replicas < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.replicas: {} is negative",
            spec.replicas
        )));
    }
    if spec.replicas > 1 {
        federation_ports(spec)?;
    }
    if spec.drain_timeout_seconds < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.drainTimeoutSeconds: {} is negative",
            spec.drain_timeout_seconds
        )));
    }
    if spec.ip_families.len() > 2 {
        return Err(BuildError::InvalidSpec(
            "spec.ipFamilies: at most two families (IPv4, IPv6)".to_string(),
        ));
    }
    if spec.ip_families.len() == 2 && spec.ip_families[0] == spec.ip_families[1] {
        return Err(BuildError::InvalidSpec(format!(
            "spec.ipFamilies: {} is listed twice",
            spec.ip_families[0].as_str()
        )));
    }
    if spec.ip_family_policy == Some(IpFamilyPolicy::SingleStack) && spec.ip_families.len() == 2 {
        return Err(BuildError::InvalidSpec(
            "spec.ipFamilies: a SingleStack Service has one IP family; use PreferDualStack or RequireDualStack for two".to_string(),
        ));
    }
    if spec.lame_duck_seconds < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.lameDuckSeconds: {} is negative",
            spec.lame_duck_seconds
        )));
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < drain_period(spec)) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.terminationGracePeriodSeconds: {GRACE_PERIOD_TOO_SHORT}"
        )));
    }
    if let Some(pdb) = &spec.pod_disruption_budget {
        if pdb.max_unavailable.is_some() && pdb.min_available.is_some() {
            return Err(BuildError::InvalidSpec(format!(
                "spec.podDisruptionBudget.minAvailable: {PDB_BOTH_BOUNDS}"
            )));
        }
        let bounds =
            [("maxUnavailable", &pdb.max_unavailable), ("minAvailable", &pdb.min_available)];
        for (field, value) in bounds {
            if let Some(value) = value
                && !is_count_or_percent(value)
            {
                return Err(BuildError::InvalidSpec(format!(
                    "spec.podDisruptionBudget.{field}: must be a count of 0 or more or a percentage from 0% to 100%"
                )));
            }
        }
    }
    Ok(())
}

/// More than one replica: a federated pattern, and a federation port of its own.
fn federation_ports(spec: &ZmqProxySpec) -> Result<(), BuildError> {
    if federation_of(spec).is_none() {
        return Err(BuildError::InvalidSpec(format!("spec.{NOT_FEDERATED}")));
    }
    let port = spec.federation_port;
    if !(1..=65535).contains(&port) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.federationPort: port {port} is outside 1-65535"
        )));
    }
    let mut taken = spec.sockets.named_ports();
    taken.push(("metricsPort", spec.metrics_port));
    if let Some((name, _)) = taken.into_iter().find(|(_, p)| *p == port) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.federationPort: port {port} is already used by {name}; ports must be distinct"
        )));
    }
    Ok(())
}

/// A PDB bound as the CRD's schema allows it: an integer of 0 or more, or "0%" to "100%".
fn is_count_or_percent(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n >= 0,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .filter(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| n.len() == 1 || !n.starts_with('0'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 100),
    }
}
