//! What every reconcile shares: the [`Context`] (the client, the event recorder, the build
//! options, the metrics, PodMonitor discovery, the per-object backoff and the controller's
//! caches) and the [`Error`] a reconcile fails with, whose [`Error::reason`] is at once the
//! metric label, the event reason and the condition reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::build::{BuildError, BuildOptions};
use crate::crd::ZmqProxy;
use crate::metrics::Metrics;
use crate::monitoring::Discovery;
use crate::watches::ChildCaches;
use crate::written::Written;

/// The one field manager of every write, so ownership of each field is the operator's alone.
pub const MANAGER: &str = "zmq-proxy-operator";
/// First retry after a failure; doubled per consecutive failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The API server refuses an Event whose note is longer than this many bytes
/// (`NoteLengthLimit` of Kubernetes' event validation).
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// Why a reconcile failed. [`Error::reason`] is the metric label, the event reason and the
/// condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("{kind} {name} exists and is not controlled by this ZmqProxy; rename or delete it")]
    ChildNotOwned { kind: String, name: String },
    #[error("cannot read {kind} {name}: {source}")]
    Get { kind: String, name: String, source: kube::Error },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply { kind: String, name: String, source: kube::Error },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete { kind: String, name: String, source: kube::Error },
    #[error("cannot update the status: {0}")]
    Status(#[source] kube::Error),
    #[error("cannot serialize an object: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::ChildNotOwned { .. } => "ChildNotOwned",
            Error::Get { .. } => "GetFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize(_) => "SerializeFailed",
        }
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::MissingObjectKey(key) => Error::MissingObjectKey(key),
            BuildError::InvalidSpec(why) => Error::InvalidSpec(why),
        }
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub options: BuildOptions,
    pub metrics: Arc<Metrics>,
    /// Whether the cluster serves PodMonitors (asked lazily, cached).
    pub monitoring: Discovery,
    /// Consecutive failures per object (namespace/name), for the exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The children's caches of the running controller; None outside
    /// [`crate::controller::run`] (every child is then read from the API server).
    caches: RwLock<Option<ChildCaches>>,
    /// Statuses written that the cache may not show yet.
    pub written: Written,
}

impl Context {
    pub fn new(client: Client, options: BuildOptions, metrics: Arc<Metrics>) -> Arc<Context> {
        let reporter =
            Reporter { controller: MANAGER.to_string(), instance: std::env::var("POD_NAME").ok() };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            options,
            metrics,
            monitoring: Discovery::default(),
            failures: Mutex::default(),
            caches: RwLock::default(),
            written: Written::default(),
        })
    }

    /// Reconciles read children from `caches` (None: from the API server).
    pub fn use_caches(&self, caches: Option<ChildCaches>) {
        *self.caches.write().unwrap_or_else(std::sync::PoisonError::into_inner) = caches;
    }

    pub(crate) fn caches(&self) -> Option<ChildCaches> {
        self.caches.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The delay before retrying `zp` after one more failure: 5 s, 10 s, 20 s ... 300 s.
    pub fn next_backoff(&self, zp: &ZmqProxy) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry(key(zp)).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
    }

    pub(crate) fn reset_backoff(&self, zp: &ZmqProxy) {
        self.failures().remove(&key(zp));
    }

    /// Publishes an event about `zp`. Events are best effort: a failure to publish one is
    /// logged, never fails the reconcile.
    pub(crate) async fn publish(
        &self,
        zp: &ZmqProxy,
        type_: EventType,
        reason: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(event_note(note)),
            action: "Reconcile".to_string(),
            secondary,
        };
        self.metrics.requested("Event", "create");
        if let Err(e) = self.recorder.publish(&event, &zp.object_ref(&())).await {
            warn!(object = %key(zp), error = %e, "cannot publish event");
        }
    }
}

/// `namespace/name` of `zp`, as logs and the backoff name it.
pub fn key(zp: &ZmqProxy) -> String {
    format!("{}/{}", zp.namespace().unwrap_or_default(), zp.name_any())
}

/// `note` cut to [`EVENT_NOTE_LIMIT`] bytes at a character boundary, ending in `...` when cut:
/// error messages that quote an API server's answer can be longer than an Event may carry.
pub fn event_note(mut note: String) -> String {
    if note.len() > EVENT_NOTE_LIMIT {
        let mut end = EVENT_NOTE_LIMIT - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_api_servers_limit() {
        assert_eq!(event_note("Created Service tasks".into()), "Created Service tasks");
        let exact = "x".repeat(EVENT_NOTE_LIMIT);
        assert_eq!(event_note(exact.clone()), exact);
        let long = event_note("é".repeat(EVENT_NOTE_LIMIT));
        assert!(long.len() <= EVENT_NOTE_LIMIT, "{}", long.len());
        assert!(long.ends_with("...") && long.starts_with("éé"));
    }
}
