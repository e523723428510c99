//! What each field of a `ZmqProxy` spec means to `zmq-proxy --config`, which runs the manifest
//! as one process on this machine. Kept beside the spec so the operator's tests can check that
//! every field its CRD adds has a local meaning decided here (the reader refuses the rest as
//! unknown).

/// Spec fields with a local meaning beside the sockets: `replicas` (only 1: this one
/// process), `paused` (starts paused), `metricsPort` (the HTTP listener), the stop timings,
/// `curveAllowAny` (the local spelling of each socket's `allowAnyClient`), and
/// `maxMemoryBytes` (the proxy-wide memory budget, as `--max-memory`).
pub const LOCAL_SPEC_FIELDS: [&str; 7] = [
    "replicas",
    "paused",
    "metricsPort",
    "drainTimeoutSeconds",
    "lameDuckSeconds",
    "curveAllowAny",
    "maxMemoryBytes",
];

/// Fields that say where and how Kubernetes runs the pods (`federationPort`: the links between
/// replicas, of which one process has none; `mode: Sidecar`: here the proxy already runs beside
/// its application). One process on this machine gives them nothing to act on; `--config` names
/// them in one warning and goes on, so one manifest serves both places.
pub const PLACEMENT_FIELDS: [&str; 22] = [
    "mode",
    "image",
    "imagePullPolicy",
    "imagePullSecrets",
    "resources",
    "serviceType",
    "serviceAnnotations",
    "serviceLabels",
    "ipFamilyPolicy",
    "ipFamilies",
    "podLabels",
    "podAnnotations",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "podDisruptionBudget",
    "monitoring",
    "federationPort",
];

/// Fields `--config` refuses, and why: running without what they ask for would be another
/// proxy than the one the manifest describes.
pub const REFUSED_FIELDS: [(&str, &str); 1] = [(
    "podTemplate",
    "changes the pods' containers (their environment, arguments, volumes), which a local run cannot apply; remove it to run the manifest here",
)];

/// What each field of a socket's `connect` entries means here (the proxy on this machine
/// resolves names with this machine's resolver), and the refusal of the one that has no
/// meaning outside a cluster.
pub const CONNECT_FIELDS: [(&str, &str); 5] = [
    ("service", "the host NAME, at port (as /etc/hosts or DNS here resolve it)"),
    ("endpoint", "as written"),
    ("port", "the port of service"),
    (
        "addresses",
        "all: every address of the name, followed (--<socket>-connect-all); first: the first that answers (--<socket>-connect)",
    ),
    ("selector", SELECTOR_REFUSAL),
];
/// Why `--config` refuses a `selector` connect entry.
pub const SELECTOR_REFUSAL: &str =
    "needs the operator: a label selector has no meaning outside a cluster; use endpoint";

/// Whether `field` of a spec (beside the socket section) has its local meaning decided here.
pub fn is_decided(field: &str) -> bool {
    LOCAL_SPEC_FIELDS.contains(&field)
        || PLACEMENT_FIELDS.contains(&field)
        || REFUSED_FIELDS.iter().any(|(f, _)| *f == field)
}
