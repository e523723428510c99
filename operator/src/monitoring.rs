//! The optional prometheus-operator `PodMonitor` of a `ZmqProxy` (`spec.monitoring.podMonitor`,
//! or the operator's `--pod-monitor-default`): built purely by [`crate::build::pod_monitor`], created only when
//! the cluster serves `monitoring.coreos.com/v1` `podmonitors` ([`Discovery`]), and reported in
//! the `MonitoringReady` condition. Nothing here fails a reconcile: a missing API, a PodMonitor
//! of someone else or a refused write only make the condition False with the reason.
//!
//! Discovery is asked once at startup and again whenever a reconcile wants a PodMonitor and the
//! API was missing at the last look more than [`RECHECK`] ago (such objects are requeued after
//! that long), or after an apply answered 404 (the CRD was removed): installing
//! prometheus-operator later needs no operator restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::build::METRICS_PORT_NAME;
use crate::build::pod_monitor::{GROUP, KIND, VERSION, ZMQPROXY_LABEL, pod_monitor, wanted};
use crate::crd::ZmqProxy;
use crate::diff;
use crate::reconcile::{Change, Context, MANAGER};

/// How long a missing monitoring API is believed before discovery is asked again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What discovery last said about the PodMonitor API.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Present(ApiResource),
    /// The API server does not serve it (no prometheus-operator CRDs).
    Missing,
    /// Discovery itself failed (not cached; asked again next time).
    Failed(String),
}

#[derive(Default)]
struct Seen {
    found: Option<(Lookup, Instant)>,
}

/// The cached answer of API discovery for `monitoring.coreos.com/v1` `PodMonitor`.
pub struct Discovery {
    seen: Mutex<Seen>,
    recheck: Mutex<Duration>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery { seen: Mutex::default(), recheck: Mutex::new(RECHECK) }
    }
}

impl Discovery {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long a Missing answer is kept (tests shorten it).
    pub fn recheck(&self) -> Duration {
        *self.recheck.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_recheck(&self, every: Duration) {
        *self.recheck.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = every;
    }

    /// Forgets the answer, so the next lookup asks the API server (after a 404 on apply).
    pub fn forget(&self) {
        self.seen().found = None;
    }

    /// The cached answer while fresh (Present until forgotten, Missing for [`Self::recheck`]),
    /// else one discovery request (`GET /apis/monitoring.coreos.com/v1`).
    pub async fn lookup(&self, client: &Client) -> Lookup {
        if let Some((answer, at)) = &self.seen().found {
            let fresh = matches!(answer, Lookup::Present(_)) || at.elapsed() < self.recheck();
            if fresh {
                return answer.clone();
            }
        }
        let gvk = GroupVersionKind::gvk(GROUP, VERSION, KIND);
        let answer = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, _)) => Lookup::Present(resource),
            Err(kube::Error::Api(status)) if status.code == 404 => Lookup::Missing,
            Err(kube::Error::Discovery(_)) => Lookup::Missing,
            Err(e) => Lookup::Failed(e.to_string()),
        };
        let previous = self.seen().found.as_ref().map(|(a, _)| a.clone());
        if previous.as_ref() != Some(&answer) {
            match &answer {
                Lookup::Present(_) => info!("{GROUP}/{VERSION} {KIND} API found"),
                Lookup::Missing => {
                    info!("{GROUP}/{VERSION} {KIND} API not served; PodMonitors wait for it")
                }
                Lookup::Failed(e) => warn!(error = %e, "cannot discover the {KIND} API"),
            }
        }
        if !matches!(answer, Lookup::Failed(_)) {
            self.seen().found = Some((answer.clone(), Instant::now()));
        }
        answer
    }
}

/// The MonitoringReady condition a reconcile reports: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

fn not_ready(reason: &'static str, message: String) -> Option<Report> {
    Some(Report { ready: false, reason, message })
}

/// Applies, keeps or deletes the PodMonitor of `zp`. Returns the condition to report (None when
/// no PodMonitor is wanted) and, when it is not ready, how soon to look again.
pub async fn reconcile(
    zp: &ZmqProxy,
    ctx: &Context,
    had_one: bool,
    changes: &mut Vec<Change>,
) -> (Option<Report>, Option<Duration>) {
    let wanted = wanted(zp, &ctx.options);
    if !wanted && !had_one {
        return (None, None);
    }
    let resource = match ctx.monitoring.lookup(&ctx.client).await {
        Lookup::Present(resource) => resource,
        Lookup::Missing if wanted => {
            let message = format!(
                "spec.monitoring.podMonitor is on but the API server does not serve {GROUP}/{VERSION} podmonitors (install prometheus-operator's CRDs); checked again every {}s",
                ctx.monitoring.recheck().as_secs()
            );
            return (not_ready("PodMonitorAPIMissing", message), Some(ctx.monitoring.recheck()));
        }
        Lookup::Failed(e) if wanted => {
            let message = format!("cannot discover {GROUP}/{VERSION} podmonitors: {e}");
            return (not_ready("DiscoveryFailed", message), Some(ctx.monitoring.recheck()));
        }
        // Turned off, and there is no API (or no answer) to delete from.
        Lookup::Missing | Lookup::Failed(_) => return (None, None),
    };
    let namespace = zp.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let name = zp.name_any();
    let result = if wanted {
        apply(zp, ctx, &api, &resource, changes).await
    } else {
        delete(zp, ctx, &api, changes).await.map(|()| None)
    };
    match result {
        Ok(report) => (report, None),
        Err(Failure::ApiGone) => {
            ctx.monitoring.forget();
            let message = format!("{GROUP}/{VERSION} podmonitors disappeared from the API server");
            (
                wanted.then_some(Report { ready: false, reason: "PodMonitorAPIMissing", message }),
                Some(ctx.monitoring.recheck()),
            )
        }
        Err(Failure::NotOwned) => {
            let message = format!(
                "PodMonitor {name} exists and is not controlled by this ZmqProxy; rename or delete it"
            );
            (wanted.then_some(Report { ready: false, reason: "PodMonitorNotOwned", message }), None)
        }
        Err(Failure::Api(e)) => {
            warn!(object = %format!("{namespace}/{name}"), error = %e, "PodMonitor write failed");
            let message = format!("cannot write PodMonitor {name}: {e}");
            let report = Report { ready: false, reason: "PodMonitorFailed", message };
            (Some(report), Some(ctx.monitoring.recheck()))
        }
    }
}

enum Failure {
    ApiGone,
    NotOwned,
    Api(kube::Error),
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) if status.code == 404 => Failure::ApiGone,
            other => Failure::Api(other),
        }
    }
}

fn ours(current: &DynamicObject, zp: &ZmqProxy) -> bool {
    let uid = zp.metadata.uid.as_deref();
    current
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

async fn apply(
    zp: &ZmqProxy,
    ctx: &Context,
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    changes: &mut Vec<Change>,
) -> Result<Option<Report>, Failure> {
    let name = zp.name_any();
    let desired = match pod_monitor(zp) {
        Ok(v) => diff::stamp(v),
        Err(e) => return Ok(not_ready("PodMonitorFailed", e.to_string())),
    };
    ctx.metrics.requested(KIND, "get");
    let observed = api.get_opt(&name).await?;
    let action = match &observed {
        Some(current) if !ours(current, zp) => return Err(Failure::NotOwned),
        Some(current) => {
            let current = serde_json::to_value(current)
                .map_err(|e| Failure::Api(kube::Error::SerdeError(e)))?;
            (diff::needs_apply(&desired, &current)).then_some("Updated")
        }
        None => Some("Created"),
    };
    if let Some(action) = action {
        ctx.metrics.requested(KIND, "apply");
        let params = PatchParams::apply(MANAGER).force();
        let applied = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
        info!(object = %format!("{}/{name}", zp.namespace().unwrap_or_default()), kind = KIND, change = action, "applied child");
        ctx.metrics.wrote(KIND, action);
        let reference = applied.object_ref(resource);
        changes.push(Change::new(action, KIND, &name, Some(reference)));
    }
    let message = format!(
        "PodMonitor {name} scrapes port {METRICS_PORT_NAME} (/metrics) of every proxy pod, labelled {ZMQPROXY_LABEL}={name}"
    );
    Ok(Some(Report { ready: true, reason: "PodMonitorReady", message }))
}

async fn delete(
    zp: &ZmqProxy,
    ctx: &Context,
    api: &Api<DynamicObject>,
    changes: &mut Vec<Change>,
) -> Result<(), Failure> {
    let name = zp.name_any();
    ctx.metrics.requested(KIND, "get");
    let Some(current) = api.get_opt(&name).await? else { return Ok(()) };
    if !ours(&current, zp) {
        return Ok(());
    }
    ctx.metrics.requested(KIND, "delete");
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(Failure::Api(e)),
    }
    ctx.metrics.wrote(KIND, "Deleted");
    changes.push(Change::new("Deleted", KIND, &name, None));
    Ok(())
}
