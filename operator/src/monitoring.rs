//! Whether the cluster serves prometheus-operator's `monitoring.coreos.com/v1` `podmonitors`
//! ([`Discovery`]), and the `MonitoringReady` condition a reconcile reports about the PodMonitor
//! ([`Report`]). The PodMonitor itself is built in [`crate::build::pod_monitor()`] and applied like
//! every other child; nothing about it fails a reconcile: a missing API, a PodMonitor of someone
//! else or a refused write only make the condition False with the reason.
//!
//! Discovery is asked once at startup and again whenever a reconcile wants a PodMonitor and the
//! API was missing at the last look more than [`RECHECK`] ago (such objects are requeued after
//! that long), or after a write answered 404 (the CRD was removed): installing
//! prometheus-operator later needs no operator restart.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::GroupVersionKind;
use kube::discovery::ApiResource;
use tracing::{info, warn};

use crate::build::METRICS_PORT_NAME;
use crate::build::pod_monitor::{GROUP, KIND, VERSION, ZMQPROXY_LABEL};

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

impl Report {
    /// The PodMonitor `name` is applied and up to date.
    pub fn ready(name: &str) -> Report {
        let message = format!(
            "PodMonitor {name} scrapes port {METRICS_PORT_NAME} (/metrics) of every proxy pod, labelled {ZMQPROXY_LABEL}={name}"
        );
        Report { ready: true, reason: "PodMonitorReady", message }
    }

    /// Discovery found no PodMonitor API; it is asked again after `recheck`.
    pub fn api_missing(recheck: Duration) -> Report {
        let message = format!(
            "spec.monitoring.podMonitor is on but the API server does not serve {GROUP}/{VERSION} podmonitors (install prometheus-operator's CRDs); checked again every {}s",
            recheck.as_secs()
        );
        not_ready("PodMonitorAPIMissing", message)
    }

    /// Discovery itself failed with `error`.
    pub fn discovery_failed(error: &str) -> Report {
        let message = format!("cannot discover {GROUP}/{VERSION} podmonitors: {error}");
        not_ready("DiscoveryFailed", message)
    }

    /// A write answered 404: the API went away after discovery found it.
    pub fn api_gone() -> Report {
        let message = format!("{GROUP}/{VERSION} podmonitors disappeared from the API server");
        not_ready("PodMonitorAPIMissing", message)
    }

    /// A PodMonitor `name` exists that this object does not control.
    pub fn not_owned(name: &str) -> Report {
        let message = format!(
            "PodMonitor {name} exists and is not controlled by this ZmqProxy; rename or delete it"
        );
        not_ready("PodMonitorNotOwned", message)
    }

    /// The PodMonitor cannot be built (`why`).
    pub fn build_failed(why: String) -> Report {
        not_ready("PodMonitorFailed", why)
    }

    /// Reading or writing the PodMonitor `name` failed with `error`.
    pub fn write_failed(name: &str, error: impl Display) -> Report {
        not_ready("PodMonitorFailed", format!("cannot write PodMonitor {name}: {error}"))
    }
}

fn not_ready(reason: &'static str, message: String) -> Report {
    Report { ready: false, reason, message }
}
