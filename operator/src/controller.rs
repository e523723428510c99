//! The controller's wiring: one watch per kind the operator reads (the `ZmqProxy` objects, each
//! kind of child by the managed-by label, the proxy pods, and the names of every object of the
//! kinds it creates, [`crate::names`]), each with its own backoff and cache
//! ([`crate::watches`]), the caches handed to the reconciles through the [`Context`], and
//! [`reconcile`] with its [`error_policy`] run at most [`CONCURRENCY`] at once.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::context::Context;
use crate::crd::{MANAGED_BY, ZmqProxy};
use crate::names::{NameCaches, slim_names};
use crate::reconcile::{error_policy, reconcile};
use crate::watches::{self, ChildCaches, Trigger};

/// Reconciles running at once (`--concurrency`). Bounded so that a large cluster's first pass
/// cannot put thousands of requests in flight at once, which the API server's priority and
/// fairness answers with 429s; `benches/scale.rs` measures a cold start at several values.
pub const CONCURRENCY: u16 = 64;
/// Triggers of one object arriving this close together make one reconcile: creating a child or
/// writing the status triggers the object again, and the children's watch events come in a
/// burst. Short enough that a user's change is applied at once.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Runs the controller until `shutdown` completes; in-flight reconciles finish first.
/// `namespace` limits every watch to one namespace (all namespaces when None).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_with(ctx, namespace, CONCURRENCY, shutdown).await;
}

/// [`run`] with at most `concurrency` reconciles at once (0: unbounded).
pub async fn run_with(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (zps, stateful_sets, services, pdbs, pods, deployments, config_maps) = (
        scoped(&client, &namespace),
        scoped::<StatefulSet>(&client, &namespace),
        scoped::<Service>(&client, &namespace),
        scoped::<PodDisruptionBudget>(&client, &namespace),
        scoped::<Pod>(&client, &namespace),
        scoped::<Deployment>(&client, &namespace),
        scoped::<ConfigMap>(&client, &namespace),
    );
    // Only children and proxy pods carry the managed-by label, so the owned watches skip every
    // other object.
    // Asked once at startup, so the log says at once whether PodMonitors can be made.
    let _ = ctx.monitoring.lookup(&ctx.client).await;
    let owned = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let zp_writer = Writer::<ZmqProxy>::default();
    let zp_store = zp_writer.as_reader();
    let stateful_set_writer = Writer::<StatefulSet>::default();
    let service_writer = Writer::<Service>::default();
    let pdb_writer = Writer::<PodDisruptionBudget>::default();
    let pod_writer = Writer::<Pod>::default();
    let deployment_writer = Writer::<Deployment>::default();
    let config_map_writer = Writer::<ConfigMap>::default();
    let config_map_names = Writer::<PartialObjectMeta<ConfigMap>>::default();
    let service_names = Writer::<PartialObjectMeta<Service>>::default();
    let deployment_names = Writer::<PartialObjectMeta<Deployment>>::default();
    ctx.use_caches(Some(ChildCaches {
        stateful_sets: stateful_set_writer.as_reader(),
        services: service_writer.as_reader(),
        pod_disruption_budgets: pdb_writer.as_reader(),
        pods: pod_writer.as_reader(),
        deployments: deployment_writer.as_reader(),
        config_maps: config_map_writer.as_reader(),
        names: Some(NameCaches {
            config_maps: config_map_names.as_reader(),
            services: service_names.as_reader(),
            deployments: deployment_names.as_reader(),
        }),
    }));
    // The taken names trigger nothing: they only spare a read before a creation.
    let names = futures::stream::select_all([
        names_watch(scoped(&client, &namespace), config_map_names),
        names_watch(scoped(&client, &namespace), service_names),
        names_watch(scoped(&client, &namespace), deployment_names),
    ]);
    let config = controller::Config::default().concurrency(concurrency).debounce(DEBOUNCE);
    let main = watches::watch(zps, watcher::Config::default(), zp_writer, Trigger::Applied);
    Controller::for_stream(main, zp_store)
        .with_config(config)
        .owns_stream(watches::watch(
            stateful_sets,
            owned.clone(),
            stateful_set_writer,
            Trigger::Touched,
        ))
        .owns_stream(watches::watch(services, owned.clone(), service_writer, Trigger::Touched))
        .owns_stream(watches::watch(
            deployments,
            owned.clone(),
            deployment_writer,
            Trigger::Touched,
        ))
        .owns_stream(watches::watch(pdbs, owned.clone(), pdb_writer, Trigger::Touched))
        .owns_stream(watches::watch(
            config_maps,
            owned.clone(),
            config_map_writer,
            Trigger::Touched,
        ))
        // Pods are the ReplicaSets', not the object's: mapped by their instance label.
        .watches_stream(
            watches::watch_slimmed(pods, owned, pod_writer, Trigger::Touched, watches::slim_pod),
            |pod| watches::owner_of_pod(&pod),
        )
        .watches_stream(names, |_: Deployment| None::<ObjectRef<ZmqProxy>>)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    ctx.use_caches(None);
}

/// The metadata-only watch of every name of `K` that the operator's label does not mark
/// ([`crate::names`]); its own children are in the labelled caches already, and leaving them
/// out spares the API server and the operator a second copy of each of their changes. It
/// triggers nothing (the stream yields no item): only its cache matters.
fn names_watch<K>(
    api: Api<PartialObjectMeta<K>>,
    writer: Writer<PartialObjectMeta<K>>,
) -> BoxStream<'static, Result<Deployment, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let config = watcher::Config::default().labels(&format!("{}!={}", MANAGED_BY.0, MANAGED_BY.1));
    watches::watch_slimmed(api, config, writer, Trigger::Applied, slim_names::<K>)
        .filter_map(|_| std::future::ready(None))
        .boxed()
}

/// An Api of `K` in `namespace` (every namespace when None).
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
