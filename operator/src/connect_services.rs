//! The reconcile's side of connecting sockets: applying the headless Service of each connect
//! entry that chooses pods by label, deleting the ones whose entries went, and asking each
//! ready proxy pod what it is connected to (its `/connects`, [`crate::proxy_http`]), which
//! [`crate::connect_status`] turns into the status.
//!
//! Stale Services are found by their [`CONNECT_LABEL`] in the Service cache. Without a cache
//! (a cold start, the mock tests) the API server is asked, but only for an object that
//! connects or reported connects before, so other objects cost no request.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::reflector::Store;

use crate::build::{self, CONNECT_LABEL, Connect};
use crate::children::{self, Change, Child, controlled_by};
use crate::connect_status::{self, Report};
use crate::context::{Context, Error};
use crate::crd::{INSTANCE_LABEL, ZmqProxy};
use crate::proxy_http::{self, CONNECTS_PATH};

/// How often an object that connects has its status refreshed from its pods.
pub const CONNECTS_REFRESH: Duration = Duration::from_secs(15);
/// Most pods asked per reconcile, so a large object's reconcile stays short; the counts are
/// then those of the first pods by name.
pub const MAX_PODS_ASKED: usize = 32;

/// Applies every wanted connect Service and deletes the owned ones no entry wants.
pub async fn apply(
    zp: &ZmqProxy,
    ctx: &Context,
    services: &Child<'_, Service>,
    wanted: &[Service],
    cache: Option<&Store<Service>>,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    for service in wanted {
        children::apply(services, service, zp, ctx, changes).await?;
    }
    let keep: Vec<String> = wanted.iter().map(ResourceExt::name_any).collect();
    let reported_before = zp.status.as_ref().is_some_and(|s| !s.connects.is_empty());
    let owned: Vec<String> = match cache {
        Some(store) => owned_in(store, zp),
        None if !wanted.is_empty() || zp.spec.sockets.connects() || reported_before => {
            list_owned(zp, ctx).await?
        }
        None => Vec::new(),
    };
    for name in owned.into_iter().filter(|n| !keep.contains(n)) {
        children::delete(services, &name, zp, ctx, changes).await?;
    }
    Ok(())
}

/// The connect Services of `zp` in the cache.
fn owned_in(store: &Store<Service>, zp: &ZmqProxy) -> Vec<String> {
    let namespace = zp.namespace();
    let name = zp.name_any();
    store
        .state_filter(|s| {
            let labels = s.metadata.labels.as_ref();
            s.metadata.namespace == namespace
                && labels.and_then(|l| l.get(INSTANCE_LABEL)) == Some(&name)
                && labels.is_some_and(|l| l.contains_key(CONNECT_LABEL))
                && controlled_by(s, zp)
        })
        .iter()
        .map(|s| s.name_any())
        .collect()
}

async fn list_owned(zp: &ZmqProxy, ctx: &Context) -> Result<Vec<String>, Error> {
    let namespace = zp.namespace().unwrap_or_default();
    let api: kube::Api<Service> = kube::Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{CONNECT_LABEL},{INSTANCE_LABEL}={}", zp.name_any());
    ctx.metrics.requested("Service", "list");
    let list = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| {
        Error::Get { kind: "Service".to_string(), name: selector.clone(), source }
    })?;
    Ok(list.items.iter().filter(|s| controlled_by(*s, zp)).map(|s| s.name_any()).collect())
}

/// The connect entries of `zp` and, when the pods are known, each ready pod's `/connects`
/// answer (at most [`MAX_PODS_ASKED`], asked at once).
pub async fn read_reports(zp: &ZmqProxy, pods: &[&Pod]) -> Vec<(String, Result<Report, String>)> {
    proxy_http::ask_ready_pods(zp, pods, CONNECTS_PATH, MAX_PODS_ASKED)
        .await
        .into_iter()
        .map(|(pod, body)| (pod, body.and_then(|b| connect_status::parse(&b))))
        .collect()
}

/// The connect entries of `zp`, as its pods were told them.
pub fn entries(zp: &ZmqProxy) -> Vec<Connect> {
    build::connects(zp, &zp.namespace().unwrap_or_default())
}
