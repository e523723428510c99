//! The controller's watches and the caches they fill: one watch per kind (ZmqProxy, the
//! Deployments, Services, PodDisruptionBudgets and steering ConfigMaps the operator owns, the
//! proxy pods, and StatefulSets, which only an earlier version created and which are watched only
//! to be replaced), each with its own short, capped backoff, objects stored without what the
//! reconciler never reads, and [`ChildCaches`], from which a reconcile reads children instead of
//! asking the API server.
//!
//! Pods are watched so that a replica turning ready (or starting to drain) updates the status
//! (and is asked for its `/connects` and `/federation`) without a list: they carry the operator's managed-by label (the
//! pod template has it), and each maps to its `ZmqProxy` by the instance label. A cached pod keeps
//! only its metadata and its Ready condition ([`slim_pod`]).
//!
//! Why each watch backs off on its own: kube-runtime's `Controller` merges every trigger stream
//! and pauses all of them with one backoff whenever any yields an error. After an API-server
//! restart each watch first fails with 410 Gone (its resourceVersion is older than the new watch
//! cache), so a shared backoff doubles once per watch and the spec watch sits out up to tens of
//! seconds after the server is back. Here an error is logged and handled where it happens, and
//! the merged stream never sees one. A 410 Gone is retried at once: the server is up and only
//! says the watch must start again from a fresh list.

use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::crd::{INSTANCE_LABEL, ZmqProxy};

/// First retry of a failed watch or list.
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between retries: a change made after an outage is seen at most about this long
/// after the server is back, while a server that stays down gets one request per watch (three
/// watches, from the leader only) this often.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Capped exponential backoff with +-25 % jitter (so watches of many operators do not retry in
/// step), reset by the first success.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    seed: u64,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (nanos, std::process::id()).hash(&mut hasher);
        WatchBackoff { next: WATCH_BACKOFF_MIN, seed: hasher.finish() | 1 }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift64: jitter needs spread, not unpredictability.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        let quarter = base / 4;
        let spread = quarter.as_nanos().max(1) as u64;
        let offset = Duration::from_nanos(self.seed % (2 * spread));
        Some((base - quarter + offset).min(WATCH_BACKOFF_MAX + quarter))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

/// Drops what no reconcile reads before an object is cached: managed fields and kubectl's
/// last-applied copy are often larger than the rest of the object.
pub fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`slim`], and of a pod's spec and status all but the Ready condition and the pod's IP: what
/// the replica endpoints are computed from and where its `/connects` is read. Pods are the
/// largest and most numerous objects watched.
pub fn slim_pod(pod: &mut Pod) {
    slim(pod);
    pod.spec = None;
    let status = pod.status.take().unwrap_or_default();
    let ready =
        status.conditions.map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect::<Vec<_>>());
    pod.status =
        Some(PodStatus { conditions: ready, pod_ip: status.pod_ip, ..PodStatus::default() });
}

/// Which objects of a watch trigger a reconcile.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// Created or changed objects (the reconciled kind itself).
    Applied,
    /// Deleted ones too (children: a deleted child makes its owner recreate it).
    Touched,
}

/// A watch of `api` that fills `writer`, retries on its own [`WatchBackoff`], logs its errors
/// instead of passing them on, and yields the objects that should trigger a reconcile.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trigger: Trigger,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watch_slimmed(api, config, writer, trigger, slim::<K>)
}

/// [`watch`] with `slim_object` instead of [`slim`].
pub fn watch_slimmed<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trigger: Trigger,
    slim_object: fn(&mut K),
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    let mut backoff = WatchBackoff::default();
    let mut last_was_gone = false;
    // Pausing before an error is passed on is what delays the watcher's retry (it is not polled
    // meanwhile), as kube-runtime's StreamBackoff does; but a 410 Gone is not a reason to wait
    // (unless the fresh list that follows it is refused the same way).
    let paced = relisting_watcher(api, config).then(move |item| {
        let gone = item.as_ref().err().is_some_and(is_gone);
        let pause = match &item {
            // A fresh watcher yields Init before it asks anything: that proves nothing.
            Ok(watcher::Event::Init) => None,
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(_) if gone && !last_was_gone => None,
            Err(_) => backoff.next(),
        };
        last_was_gone = gone;
        async move {
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
            item
        }
    });
    let events = paced.modify(slim_object).reflect(writer);
    let objects = match trigger {
        Trigger::Applied => events.applied_objects().boxed(),
        Trigger::Touched => events.touched_objects().boxed(),
    };
    objects.filter_map(move |item| {
        let out = match item {
            Ok(object) => Some(Ok(object)),
            Err(e) => {
                warn!(%kind, error = %e, "watch failed; retrying");
                None
            }
        };
        std::future::ready(out)
    })
}

/// kube-runtime's watcher, started over with a fresh list whenever the server could not be
/// reached. The plain watcher resumes from its last resourceVersion, and a restarted API server
/// holds such a watch until its watch cache is up, only to answer 410 Gone; a list is answered
/// at once, so a change made during or right after an outage triggers its reconcile from there.
fn relisting_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let start =
        move |api: &Api<K>, config: &watcher::Config| watcher(api.clone(), config.clone()).boxed();
    let first = start(&api, &config);
    futures::stream::unfold((first, api, config), move |(mut current, api, config)| async move {
        let item = current.next().await?;
        let next = if item.as_ref().err().is_some_and(is_unreachable) {
            start(&api, &config)
        } else {
            current
        };
        Some((item, (next, api, config)))
    })
}

/// The request never got an answer from the API server (refused, reset, timed out).
fn is_unreachable(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchStartFailed(err)
        | watcher::Error::WatchFailed(err)
        | watcher::Error::InitialListFailed(err) => !matches!(err, kube::Error::Api(_)),
        _ => false,
    }
}

/// The watch must start over from a list (its resourceVersion is gone from the server's cache).
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The operator's own children as its watches last saw them.
#[derive(Clone)]
pub struct ChildCaches {
    /// StatefulSets an earlier version created, to be replaced by Deployments.
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    pub config_maps: Store<ConfigMap>,
    /// The proxy pods (slimmed, [`slim_pod`]).
    pub pods: Store<Pod>,
    pub deployments: Store<Deployment>,
    /// Every name taken among the kinds the operator creates without reading first (None:
    /// every creation reads first, [`crate::names`]).
    pub names: Option<crate::names::NameCaches>,
}

/// The cached pods of the `ZmqProxy` `name` in `namespace` (by its instance label); None while
/// the cache has not finished its first list.
pub fn pods_of(
    store: &Store<Pod>,
    namespace: &str,
    name: &str,
) -> Option<Vec<std::sync::Arc<Pod>>> {
    if !is_ready(store) {
        return None;
    }
    Some(store.state_filter(|pod| {
        pod.metadata.namespace.as_deref() == Some(namespace)
            && pod.metadata.labels.as_ref().and_then(|l| l.get(INSTANCE_LABEL)).map(String::as_str)
                == Some(name)
    }))
}

/// The `ZmqProxy` a watched pod belongs to, by its instance label.
pub fn owner_of_pod(pod: &Pod) -> Option<ObjectRef<ZmqProxy>> {
    let name = pod.metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

/// What a cache can say about a child.
#[derive(Debug)]
pub enum Cached<K> {
    /// The cache has it (possibly a moment old).
    Found(std::sync::Arc<K>),
    /// The cache is complete and has no such child with the operator's label; another object
    /// of that name, not labeled, may still exist.
    NotOwned,
    /// The cache has not finished its first list: ask the API server.
    Unknown,
}

/// Looks `name` up in `store` (of the kind `dyntype`), telling a miss in a complete cache from a
/// cache still listing.
pub fn lookup<K>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
    dyntype: &K::DynamicType,
) -> Cached<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    match store.get(&ObjectRef::new_with(name, dyntype.clone()).within(namespace)) {
        Some(found) => Cached::Found(found),
        None if is_ready(store) => Cached::NotOwned,
        None => Cached::Unknown,
    }
}

/// Whether the store's first list has completed.
fn is_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        let quarter = |d: Duration| d / 4;
        assert!(delays[0] >= WATCH_BACKOFF_MIN - quarter(WATCH_BACKOFF_MIN));
        assert!(delays[0] <= WATCH_BACKOFF_MIN + quarter(WATCH_BACKOFF_MIN));
        for d in &delays {
            assert!(*d <= WATCH_BACKOFF_MAX + quarter(WATCH_BACKOFF_MAX), "{d:?}");
        }
        assert!(delays[11] >= WATCH_BACKOFF_MAX - quarter(WATCH_BACKOFF_MAX), "{delays:?}");
        b.reset();
        assert!(b.next().is_some_and(|d| d <= WATCH_BACKOFF_MIN + quarter(WATCH_BACKOFF_MIN)));
    }

    #[test]
    fn slim_pod_keeps_the_metadata_and_the_ready_condition_only() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tasks-0", "namespace": "q",
                "labels": {"app.kubernetes.io/instance": "tasks"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
            "spec": {"containers": [{"name": "proxy", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]},
        }))
        .expect("pod");
        slim_pod(&mut pod);
        assert!(pod.spec.is_none() && pod.metadata.managed_fields.is_none());
        let status = pod.status.clone().expect("status");
        assert_eq!(status.phase, None);
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        let types: Vec<String> =
            status.conditions.unwrap_or_default().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, ["Ready"]);
        assert_eq!(owner_of_pod(&pod), Some(ObjectRef::new("tasks").within("q")));
    }

    #[test]
    fn slim_drops_managed_fields_and_last_applied() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
                "managedFields": [{"manager": "x", "operation": "Apply"}]},
        }))
        .expect("service");
        slim(&mut svc);
        assert!(svc.metadata.managed_fields.is_none());
        let annotations = svc.metadata.annotations.expect("annotations kept");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
    }
}
