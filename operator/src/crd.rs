//! The `ZmqProxy` custom resource: spec, status, printer columns, subresources and the CEL rules
//! the API server enforces. The socket section is the API crate's [`ProxySockets`], flattened
//! into the spec, and the CEL rules are rendered by [`zmq_proxy_api::cel`] from the same
//! functions the proxy validates with, so a rule is never written twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use kube::core::{Message, Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zmq_proxy_api::cel::{self, CelRule, PortField};
use zmq_proxy_api::manifest::ProxySockets;
use zmq_proxy_api::socket::Role;

/// API group of the resource.
pub const GROUP: &str = "zmqproxy.io";
/// The default metrics/health port of the proxy (`--http-bind *:<port>`, dual stack).
pub const DEFAULT_METRICS_PORT: i32 = 9090;
/// The default drain timeout, as the proxy's own default.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i32 = 5;
/// The default lame-duck period of proxy pods (why five seconds: the proxy's config module).
pub const DEFAULT_LAME_DUCK_SECONDS: i32 = zmq_proxy_api::kubernetes::KUBERNETES_LAME_DUCK_SECS;

/// A ZeroMQ proxy (`zmq_proxy(3)`) run as a Deployment and reached through a Service.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "zmqproxy.io",
    version = "v1alpha1",
    kind = "ZmqProxy",
    plural = "zmqproxies",
    shortname = "zp",
    category = "zmq",
    namespaced,
    status = "ZmqProxyStatus",
    derive = "PartialEq",
    doc = "A ZeroMQ proxy (zmq_proxy) run as a Deployment and reached through a Service",
    validation = name_rule(),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Frontend", type_ = "string", json_path = ".spec.frontend.type"),
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", priority = 1),
    printcolumn(
        name = "Ready-Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        priority = 1
    ),
    printcolumn(
        name = "Frontend-Endpoint",
        type_ = "string",
        json_path = ".status.endpoints.frontend",
        priority = 1
    ),
    printcolumn(
        name = "Frontend-Security",
        type_ = "string",
        json_path = ".status.security.frontend",
        priority = 1
    ),
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Connected\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = add_spec_rules)]
pub struct ZmqProxySpec {
    /// frontend, backend, capture and control sockets, shared with `zmq-proxy --config`.
    #[serde(flatten)]
    pub sockets: ProxySockets,

    /// Number of proxy pods. More than one makes a federation: the replicas link to each other
    /// and act as one proxy, so peers connect to the Service only (XSUB/XPUB, PULL/PUSH and
    /// ROUTER/DEALER; other patterns run one replica, or none).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Seconds the proxy may take, after its lame-duck period, to deliver what it read and
    /// close every connection (each peer is sent end of stream when nothing more is owed to it,
    /// and the proxy reads on until the peer closes); whatever is left then is counted as
    /// undelivered.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_timeout_seconds: i32,

    /// Seconds a terminating proxy pod keeps serving as usual, unready, before it drains: long
    /// enough for its removal from the Service to reach every node (its readiness probe fails
    /// within 2 s, then each kube-proxy syncs), so peers that reconnect never reach an address
    /// that no longer answers. Below about 3 s the peers of a one-replica proxy can stall in
    /// TCP's SYN retries after a restart. 0 drains at once.
    #[serde(default = "default_lame_duck")]
    #[schemars(range(min = 0, max = 3600))]
    pub lame_duck_seconds: i32,

    /// Bytes the proxy may hold for its peers, all sockets together (messages being received
    /// and frames queued to peers); past it the peer sending the largest unfinished message is
    /// disconnected, counted as `over_budget`. 0 = no limit. Unset: half the proxy container's
    /// memory limit (`resources.limits.memory`), or, without one, the proxy's own default
    /// (half its cgroup's memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_memory_bytes: Option<i64>,

    /// Port of the proxy's HTTP server (/metrics, /healthz, /readyz); distinct from the sockets.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,

    /// Port on which each replica of a federation (more than one replica) accepts the other
    /// replicas' links; distinct from the sockets and the metrics port. Peers never use it.
    #[serde(default = "default_federation_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub federation_port: i32,

    /// Proxy image; the operator's `--proxy-image` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Image pull policy of the proxy container (Kubernetes' default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "image_pull_policy_schema")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Names of Secrets to pull the image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// CPU/memory requests and limits of the proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Type of the Service that exposes the sockets.
    #[serde(default)]
    pub service_type: ServiceType,

    /// Annotations of the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_annotations: BTreeMap<String, String>,

    /// IP family policy of the Services (`<name>` and the headless `<name>-federation`): SingleStack,
    /// PreferDualStack or RequireDualStack; the cluster's default (SingleStack) when unset. The
    /// proxy listens on IPv6 and IPv4 either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ip_family_policy_schema")]
    pub ip_family_policy: Option<IpFamilyPolicy>,

    /// IP families of the Services, in order of preference (IPv4, IPv6, or both); the
    /// cluster's default when unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub ip_families: Vec<IpFamily>,

    /// Extra labels of the proxy pods; the operator's selector labels win on a clash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Annotations of the proxy pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Node labels the proxy pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the proxy pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the proxy pods spread over zones or nodes (the pod's `topologySpreadConstraints`);
    /// select the pods with the labels `app.kubernetes.io/name: zmq-proxy` and
    /// `app.kubernetes.io/instance: <name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// ServiceAccount the proxy pods run as (the namespace's `default` when unset). Its token is
    /// still not mounted: the proxy never talks to the API server (`podTemplate` can set
    /// `automountServiceAccountToken: true` for a sidecar that does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Seconds between SIGTERM and SIGKILL of a proxy pod; at least `lameDuckSeconds +
    /// drainTimeoutSeconds`, or the kubelet would kill the proxy in the middle of its drain.
    /// Unset: that sum plus a margin for the proxy's last words (ten seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Extra labels of the Service `<name>`; the operator's own labels win
    /// on a clash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_labels: BTreeMap<String, String>,

    /// The PodDisruptionBudget the operator keeps for two replicas or more (`maxUnavailable: 1`
    /// unless this says otherwise), so a node drain never takes every proxy at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// A partial pod template merged over the one the operator builds, last, the way `kubectl
    /// patch --type strategic` merges (containers, volumes, env and the like matched by their
    /// key, maps merged, everything else replaced): a sidecar, a volume mounted into the
    /// `proxy` container, an env var, a securityContext field the spec does not model. The
    /// operator's own fields (the selector labels, the proxy container's command, args, ports
    /// and CURVE mounts) cannot be changed here: an object that tries is refused with a
    /// Degraded condition naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverride>,

    /// Pause forwarding in every replica (libzmq's PAUSE: sockets stay connected, messages
    /// wait in the peers' queues); false resumes. No pod restarts: the value reaches the
    /// proxies through the ConfigMap `<name>-steering`, within seconds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// What the operator creates for monitoring the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,

    /// `Workload` (unset): the operator runs the proxy as its own pods behind Services.
    /// `Sidecar`: no pods or Services of its own; the operator's webhook injects this proxy
    /// into every pod of the namespace labelled `zmqproxy.io/sidecar: <name>` (see
    /// docs/sidecar.md). Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "mode_schema")]
    pub mode: Option<ProxyMode>,
}

/// `spec.mode`: whether a `ZmqProxy` is its own workload or a sidecar template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProxyMode {
    #[default]
    Workload,
    Sidecar,
}

impl ZmqProxySpec {
    /// Whether this object is a sidecar template (no workload of its own).
    pub fn is_sidecar(&self) -> bool {
        self.mode == Some(ProxyMode::Sidecar)
    }
}

/// Monitoring objects of one `ZmqProxy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// A prometheus-operator PodMonitor scraping every proxy pod's /metrics (created only when
    /// the monitoring.coreos.com API exists); the operator's `--pod-monitor-default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor: Option<bool>,
}

/// `spec.podDisruptionBudget`: on by default, at most one of the two bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// false: no PodDisruptionBudget, whatever the replicas.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pods a voluntary disruption may take at once: a count or a percentage ("50%"). 1 unless
    /// `minAvailable` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_unavailable: Option<IntOrString>,
    /// Pods that must stay up through a voluntary disruption, instead of `maxUnavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub min_available: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec { enabled: true, max_unavailable: None, min_available: None }
    }
}

fn default_true() -> bool {
    true
}

/// A count (0 or more) or a whole percentage: schema bounds only, no CEL, so the API server's
/// cost estimator has nothing to weigh (`pattern` applies to the string form, `minimum` to the
/// integer one).
fn int_or_percent_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "minimum": 0,
        "maxLength": 4,
        "pattern": "^(100|[1-9]?[0-9])%$",
        "description": "A number of pods (0 or more) or a percentage of the replicas (\"0%\" to \"100%\")."
    })
}

/// `spec.podTemplate`: labels, annotations and a partial pod spec. The pod spec's schema keeps
/// unknown fields instead of embedding the full PodSpec schema: that schema is at least 185 KB
/// (more than the rest of this CRD), marks `containers` required (so a partial template could
/// not leave it out, as RabbitMQ's override users found), and would add to every CEL cost
/// estimate. What the merge produces is parsed as a PodSpec by the operator, which refuses a
/// field it does not know, and validated by the API server when the StatefulSet is written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodTemplateOverrideMeta>,
    /// Pod spec fields, merged over the operator's pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "partial_pod_spec_schema")]
    pub spec: Option<serde_json::Value>,
}

/// Labels and annotations of the pod template, merged over the operator's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrideMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn partial_pod_spec_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Pod spec fields, merged over the operator's pod spec (containers, initContainers, volumes, env, volumeMounts and ports matched by their Kubernetes merge keys)."
    })
}

fn default_replicas() -> i32 {
    1
}

fn default_drain_timeout() -> i32 {
    DEFAULT_DRAIN_TIMEOUT_SECONDS
}

fn default_lame_duck() -> i32 {
    DEFAULT_LAME_DUCK_SECONDS
}

fn default_metrics_port() -> i32 {
    DEFAULT_METRICS_PORT
}

fn default_federation_port() -> i32 {
    zmq_proxy_api::defaults::DEFAULT_FEDERATION_PORT
}

/// Kubernetes Service types that can carry the proxy's TCP ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Kubernetes Service IP family policies (`spec.ipFamilyPolicy` of a Service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

impl IpFamilyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamilyPolicy::SingleStack => "SingleStack",
            IpFamilyPolicy::PreferDualStack => "PreferDualStack",
            IpFamilyPolicy::RequireDualStack => "RequireDualStack",
        }
    }
}

/// As [`image_pull_policy_schema`]: a plain string enum, omitted rather than null when unset;
/// its length bound lets the API server price the rule that reads it.
fn ip_family_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["SingleStack", "PreferDualStack", "RequireDualStack"],
        "maxLength": 16
    })
}

/// A Service IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }
}

impl JsonSchema for IpFamily {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpFamily".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": ["IPv4", "IPv6"], "maxLength": 4 })
    }
}

/// Kubernetes refuses a SingleStack Service with two families; refused at admission instead,
/// naming the field, rather than on every reconcile.
fn ip_family_rule() -> Rule {
    Rule::new(
        "!has(self.ipFamilyPolicy) || self.ipFamilyPolicy != 'SingleStack' || !has(self.ipFamilies) || size(self.ipFamilies) < 2",
    )
    .message(Message::Message(
        "a SingleStack Service has one IP family; use PreferDualStack or RequireDualStack for two".into(),
    ))
    .field_path(".ipFamilies".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// Each family at most once. A CEL rule rather than `x-kubernetes-list-type: set`: with a set,
/// a server-side apply of a duplicate fails with a 500 before validation instead of a 422
/// naming the field.
fn distinct_ip_families_rule() -> Rule {
    Rule::new(
        "!has(self.ipFamilies) || size(self.ipFamilies) < 2 || self.ipFamilies[0] != self.ipFamilies[1]",
    )
    .message(Message::Message("an IP family is listed twice".into()))
    .field_path(".ipFamilies".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// A plain string enum: schemars renders `Option<enum>` as an enum that lists `null`, which a
/// structural schema should not carry; the field is omitted rather than null when unset.
fn image_pull_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Always", "IfNotPresent", "Never"],
        "description": "Image pull policy of the proxy container (Kubernetes' default when unset)."
    })
}

/// `spec.mode` without the `null` an `Option` of an enum would list (not structural).
fn mode_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Workload", "Sidecar"],
        "description": "Workload (unset): the operator runs the proxy as its own pods behind Services. Sidecar: no pods or Services of its own; the operator's webhook injects this proxy into every pod of the namespace labelled zmqproxy.io/sidecar: <name> (see docs/sidecar.md). Cannot change once set."
    })
}

/// Kubernetes image pull policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// What the operator observed, written by the operator only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZmqProxyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the Deployment (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that pass /readyz.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the proxy pods (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Ready, Progressing and Degraded, each with the generation it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Addresses peers connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// With more than one replica: the federation as the ready replicas report it on
    /// `/federation` (refreshed about every 15 s, sooner while links are missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationStatus>,
    /// The security mechanism of each socket (NULL or CURVE), as the observed generation's
    /// spec configures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketMechanisms>,
    /// Per connect entry of each socket, what the ready proxy pods report on their `/connects`:
    /// the addresses its name resolves to and how many of them are connected (refreshed about
    /// every 15 s while the object connects anywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONNECT_ENTRIES))]
    pub connects: Vec<ConnectStatus>,
    /// `mode: Sidecar`: the pods of the namespace that carry this proxy as their sidecar (the
    /// first 50 by name; `replicas` counts them all), refreshed about every 30 s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_SIDECAR_PODS))]
    pub sidecar_pods: Vec<String>,
}

/// Most pod names in `status.sidecarPods`.
pub const MAX_LISTED_SIDECAR_PODS: usize = 50;

/// Most entries of `status.connects`: every connect entry of the three data sockets.
pub const MAX_CONNECT_ENTRIES: usize = 3 * zmq_proxy_api::connect::MAX_CONNECT_TARGETS;

/// One connect entry as the proxy pods report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectStatus {
    /// frontend, backend or capture.
    pub socket: String,
    /// What the entry names: `selector app=worker port 6000`, `service workers port 6000` or
    /// `endpoint tcp://host:port`.
    pub target: String,
    /// The most addresses any reporting pod resolved the entry's name to.
    pub resolved: i32,
    /// The fewest of them any reporting pod is connected to.
    pub connected: i32,
    /// How many ready proxy pods reported the entry.
    pub pods: i32,
}

/// A socket's ZMTP security mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mechanism {
    /// No security: anyone who reaches the port may connect.
    Null,
    /// CurveZMQ: encrypted, and only clients on the allow-list (or any, if so configured).
    Curve,
}

/// The mechanism of every socket of the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketMechanisms {
    pub frontend: Mechanism,
    pub backend: Mechanism,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Mechanism>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Mechanism>,
}

/// ZeroMQ endpoints of the Service, as peers write them in `connect` (a socket that only
/// connects has none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// Most replicas `status.federation.replicas` lists; `members` counts them all.
pub const MAX_LISTED_REPLICAS: usize = 100;

/// The federation of the ready replicas, as they report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederationStatus {
    /// The federated pattern (`XSUB/XPUB`, `PULL/PUSH`, `ROUTER/DEALER`).
    pub pattern: String,
    /// Ready replicas that reported their links.
    pub members: i32,
    /// Links up between those replicas, each direction of each pair counted once: a full
    /// mesh of `members` replicas has `members × (members − 1)`.
    pub links_up: i32,
    /// Each reporting replica (the first 100 by name) and its links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_REPLICAS))]
    pub replicas: Vec<FederationReplica>,
}

/// One replica of a federation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederationReplica {
    /// The replica's federation id: its pod's name.
    pub id: String,
    /// Other reporting replicas it is linked with both ways (sending and receiving).
    pub linked: i32,
}

/// The port fields of the spec in the order clashes are reported: the proxy's sockets, then the
/// metrics port the operator adds, then the federation port when there is a federation (so an
/// unfederated object may keep a socket on that port).
fn port_fields() -> Vec<PortField> {
    let mut fields = cel::socket_port_fields();
    fields.push(PortField {
        name: "metricsPort".to_string(),
        port: "self.metricsPort".to_string(),
        present: Some("has(self.metricsPort)".to_string()),
        field_path: ".metricsPort".to_string(),
    });
    fields.push(PortField {
        name: "federationPort".to_string(),
        port: "self.federationPort".to_string(),
        present: Some("(self.replicas > 1)".to_string()),
        field_path: ".federationPort".to_string(),
    });
    fields
}

/// Every CEL rule of the spec (`self` is `spec`), in the order they are written to the schema.
pub fn spec_rules() -> Vec<Rule> {
    let mut rules = vec![cel::pair_rule()];
    rules.extend(cel::distinct_port_rules(&port_fields()));
    let mut rules: Vec<Rule> = rules.into_iter().map(to_rule).collect();
    rules.extend([grace_period_rule(), disruption_budget_rule(), federation_rule()]);
    rules.extend([ip_family_rule(), distinct_ip_families_rule(), mode_rule()]);
    rules
}

/// Refusal of a change of `spec.mode`.
pub const MODE_IMMUTABLE: &str = "mode cannot change: a Workload's pods and a Sidecar's injected pods would both outlive the switch; create another ZmqProxy";

/// `spec.mode` is fixed at creation (a transition rule: only updates evaluate it).
fn mode_rule() -> Rule {
    Rule::new(
        "has(self.mode) == has(oldSelf.mode) && (!has(self.mode) || self.mode == oldSelf.mode)",
    )
    .message(Message::Message(MODE_IMMUTABLE.to_string()))
    .field_path(".mode".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// Refusal of a grace period shorter than the drain; static, since a number in the message would
/// need `string()`, which the API server's cost estimator refuses.
pub const GRACE_PERIOD_TOO_SHORT: &str = "terminationGracePeriodSeconds must be at least lameDuckSeconds + drainTimeoutSeconds: a shorter grace period kills the proxy before its drain ends";

/// `terminationGracePeriodSeconds` covers the lame duck and the drain. Both are defaulted in the
/// schema, so they are present when the rule runs.
fn grace_period_rule() -> Rule {
    Rule::new(
        "!has(self.terminationGracePeriodSeconds) || self.terminationGracePeriodSeconds >= self.lameDuckSeconds + self.drainTimeoutSeconds",
    )
    .message(Message::Message(GRACE_PERIOD_TOO_SHORT.to_string()))
    .field_path(".terminationGracePeriodSeconds".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// Refusal of more than one replica of a pattern whose replicas do not federate.
pub const NOT_FEDERATED: &str = "replicas: more than one replica makes a federation, which XSUB/XPUB, PULL/PUSH and ROUTER/DEALER proxies form; a proxy of another pattern runs one replica (separate replicas behind one Service would split its peers)";

/// `replicas > 1` only for a federated pattern ([`zmq_proxy_api::federation`]). `replicas` is
/// defaulted in the schema, so it is present when the rule runs.
fn federation_rule() -> Rule {
    let pairs: Vec<String> =
        zmq_proxy_api::federation::federated_pairs().map(|p| cel::quote(&p)).collect();
    Rule::new(format!(
        "self.replicas <= 1 || (self.frontend.type + '/' + self.backend.type) in [{}]",
        pairs.join(", ")
    ))
    .message(Message::Message(NOT_FEDERATED.to_string()))
    .field_path(".replicas".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// Refusal of a PodDisruptionBudget with both bounds (the API server refuses such a PDB).
pub const PDB_BOTH_BOUNDS: &str =
    "podDisruptionBudget: set maxUnavailable or minAvailable, not both";

fn disruption_budget_rule() -> Rule {
    Rule::new(
        "!has(self.podDisruptionBudget) || !has(self.podDisruptionBudget.maxUnavailable) || !has(self.podDisruptionBudget.minAvailable)",
    )
    .message(Message::Message(PDB_BOTH_BOUNDS.to_string()))
    .field_path(".podDisruptionBudget.minAvailable".to_string())
    .reason(Reason::FieldValueInvalid)
}

/// Longest object name: it leaves room for the headless Service `<name>-federation` (a Service
/// name has at most 63 characters), and it is what earlier versions accepted (their StatefulSet's
/// pods were labelled `<name>-<hash>`).
pub const MAX_NAME_LEN: usize = 63 - FEDERATION_SUFFIX.len();
/// Suffix of the federation's headless Service and of its Secret.
pub const FEDERATION_SUFFIX: &str = "-federation";
/// Suffix of the headless Service earlier versions created for their StatefulSet, deleted once
/// the StatefulSet is gone.
pub const HEADLESS_SUFFIX: &str = "-pods";

/// The object's name becomes the Service's name, which must be a DNS-1035 label (no dots, starts
/// with a letter) of at most [`MAX_NAME_LEN`] characters.
pub fn name_rule() -> Rule {
    Rule::new(format!(
        "self.metadata.name.size() <= {MAX_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ))
    .message(Message::Message(format!(
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most {MAX_NAME_LEN} characters: it names the proxy's Deployment, pods and Services"
    )))
    .reason(Reason::FieldValueInvalid)
}

fn to_rule(r: CelRule) -> Rule {
    Rule::new(r.rule)
        .message(Message::Expression(r.message_expression))
        .field_path(r.field_path)
        .reason(Reason::FieldValueInvalid)
}

/// The CEL rules on one socket's schema (`self` is the socket; see [`cel::socket_rules`]).
pub fn socket_rules(role: Role) -> Vec<Rule> {
    cel::socket_rules(role).into_iter().map(to_rule).collect()
}

fn add_spec_rules(schema: &mut schemars::Schema) {
    // Serialising a Rule cannot fail (strings and enums only); a failure would leave the rule
    // out, which the CRD tests catch by counting the rules.
    for rule in spec_rules() {
        let _ = kube::core::validate(schema, rule);
    }
    for role in Role::ALL {
        let socket = schema
            .get_mut("properties")
            .and_then(|p| p.get_mut(role.as_str()))
            .and_then(|s| schemars::Schema::try_from(s.take()).ok());
        let Some(mut socket) = socket else { continue };
        for rule in socket_rules(role) {
            let _ = kube::core::validate(&mut socket, rule);
        }
        if let Some(slot) = schema.get_mut("properties").and_then(|p| p.get_mut(role.as_str())) {
            *slot = socket.into();
        }
    }
}

/// The selector label naming the `ZmqProxy` a child or pod belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Labels every child object carries; the first two are the pod selector.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "zmq-proxy".to_string()),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ])
}

/// The selector of [`selector_labels`] as a label-selector string (status.selector).
pub fn selector_string(name: &str) -> String {
    selector_labels(name).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Label that marks objects this operator manages (the watches of owned objects filter on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "zmq-proxy-operator");
