//! The operator's Prometheus metrics: reconcile count, failures by error reason, reconcile
//! duration, child writes by kind and action, API requests by kind and verb, and whether this
//! replica leads.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    writes: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("zmq_proxy_operator");
        let reconciles = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a handful of API round trips.
        let duration = Histogram::new([0.001, 0.004, 0.016, 0.064, 0.256, 1.024, 4.096, 16.384]);
        let writes = Family::<Labels, Counter>::default();
        let requests = Family::<Labels, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register("reconciles", "Reconciles of ZmqProxy objects", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile",
            duration.clone(),
        );
        registry.register(
            "child_writes",
            "API writes to children, by kind and action (Created, Updated, Deleted)",
            writes.clone(),
        );
        registry.register(
            "api_requests",
            "Requests of reconciles to the API server, by kind and verb (watches not included)",
            requests.clone(),
        );
        registry.register("leader", "1 while this replica runs the controller", leader.clone());
        Metrics { registry, reconciles, failures, duration, writes, requests, leader }
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn failed(&self, reason: &str) {
        self.failures.get_or_create(&vec![("error".to_string(), reason.to_string())]).inc();
    }

    pub fn wrote(&self, kind: &str, action: &str) {
        self.writes
            .get_or_create(&vec![
                ("kind".to_string(), kind.to_string()),
                ("action".to_string(), action.to_string()),
            ])
            .inc();
    }

    pub fn requested(&self, kind: &str, verb: &str) {
        self.requests
            .get_or_create(&vec![
                ("kind".to_string(), kind.to_string()),
                ("verb".to_string(), verb.to_string()),
            ])
            .inc();
    }

    /// Requests made so far with `verb` (all kinds).
    pub fn request_count(&self, verb: &str) -> u64 {
        [
            "StatefulSet",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ConfigMap",
            "PodMonitor",
            "Pod",
            "ZmqProxy",
            "Event",
        ]
        .iter()
        .map(|kind| {
            self.requests
                .get_or_create(&vec![
                    ("kind".to_string(), kind.to_string()),
                    ("verb".to_string(), verb.to_string()),
                ])
                .get()
        })
        .sum()
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.get()
    }

    pub fn failure_count(&self, reason: &str) -> u64 {
        self.failures.get_or_create(&vec![("error".to_string(), reason.to_string())]).get()
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
