//! The status of a `mode: Sidecar` `ZmqProxy`: no workload of its own, so no children are
//! written; its status lists the pods that carry it (`status.sidecarPods`, `status.replicas`)
//! and its Ready condition says whether the webhook can inject it. Pods are read every
//! [`SIDECAR_RESYNC`] rather than watched: the operator watches only its own children's pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::SIDECAR_LABEL;
use super::mutate::{self, SIDECAR_CONTAINER};
use crate::context::{Context, Error};
use crate::crd::{MAX_LISTED_SIDECAR_PODS, ZmqProxy, ZmqProxyStatus};
use crate::status::{self, READY};

/// How often a sidecar template's pods are counted again.
pub const SIDECAR_RESYNC: Duration = Duration::from_secs(30);

/// Whether `pod` runs `zp`'s sidecar now: labelled for it, injected, and not finished.
pub fn carries(zp: &ZmqProxy, pod: &Pod) -> bool {
    let labelled = pod.labels().get(SIDECAR_LABEL) == Some(&zp.name_any());
    let injected = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == SIDECAR_CONTAINER));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    labelled && injected && !finished && pod.metadata.deletion_timestamp.is_none()
}

/// The status of a sidecar template, given the pods of its namespace that ask for it.
pub fn compute(zp: &ZmqProxy, pods: &[Pod], now: Timestamp) -> ZmqProxyStatus {
    let mut names: Vec<String> =
        pods.iter().filter(|p| carries(zp, p)).map(|p| p.name_any()).collect();
    names.sort();
    let count = i32::try_from(names.len()).unwrap_or(i32::MAX);
    names.truncate(MAX_LISTED_SIDECAR_PODS);
    let ready = match mutate::check_template(zp) {
        Ok(()) => status::condition_of(
            zp,
            READY,
            true,
            "SidecarTemplate",
            format!(
                "injected into pods labelled {SIDECAR_LABEL}={} when they are created; {count} carry it",
                zp.name_any()
            ),
            now,
        ),
        Err(why) => status::condition_of(zp, READY, false, "NotInjectable", why, now),
    };
    ZmqProxyStatus {
        observed_generation: zp.metadata.generation,
        replicas: count,
        conditions: vec![ready],
        security: Some(status::mechanisms(zp)),
        sidecar_pods: names,
        ..ZmqProxyStatus::default()
    }
}

/// The status of a sidecar template now, from the pods of its namespace labelled for it (the
/// reconcile writes it and looks again in [`SIDECAR_RESYNC`]).
pub async fn observe(zp: &ZmqProxy, ctx: &Context) -> Result<ZmqProxyStatus, Error> {
    let namespace = zp.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{SIDECAR_LABEL}={}", zp.name_any());
    ctx.metrics.requested("Pod", "list");
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Get { kind: "Pod".to_string(), name: selector.clone(), source })?;
    Ok(compute(zp, &pods.items, status::now()))
}
