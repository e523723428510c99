//! The `ZmqProxy` custom resource: spec, status, printer columns, subresources and the CEL rules
//! the API server enforces. The socket section is the proxy crate's [`ProxySockets`], flattened
//! into the spec, and the CEL rules are rendered by [`zmq_proxy::socket::cel`] from the same
//! functions the proxy validates with, so a rule is never written twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::core::{Message, Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zmq_proxy::socket::ProxySockets;
use zmq_proxy::socket::cel::{self, CelRule, PortField};

/// API group of the resource.
pub const GROUP: &str = "zmqproxy.io";
/// The default metrics/health port of the proxy (`--http-bind 0.0.0.0:<port>`).
pub const DEFAULT_METRICS_PORT: i32 = 9090;
/// The default drain timeout, as the proxy's own default.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i32 = 5;
/// The default lame-duck period of proxy pods (why five seconds: the proxy's config module).
pub const DEFAULT_LAME_DUCK_SECONDS: i32 = zmq_proxy::config::KUBERNETES_LAME_DUCK_SECS;

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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = add_spec_rules)]
pub struct ZmqProxySpec {
    /// frontend, backend, capture and control sockets, shared with `zmq-proxy --config`.
    #[serde(flatten)]
    pub sockets: ProxySockets,

    /// Number of proxy pods. Each replica is a separate proxy: with more than one, peers must
    /// connect to every pod (listed by the headless Service `<name>-pods`).
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
    /// enough for its removal from the Service to reach every node, so peers that reconnect
    /// never reach an address that no longer answers. 0 drains at once.
    #[serde(default = "default_lame_duck")]
    #[schemars(range(min = 0, max = 3600))]
    pub lame_duck_seconds: i32,

    /// Port of the proxy's HTTP server (/metrics, /healthz, /readyz); distinct from the sockets.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: i32,

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

/// A plain string enum: schemars renders `Option<enum>` as an enum that lists `null`, which a
/// structural schema should not carry; the field is omitted rather than null when unset.
fn image_pull_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Always", "IfNotPresent", "Never"],
        "description": "Image pull policy of the proxy container (Kubernetes' default when unset)."
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
    /// Pods of the current Deployment (the scale subresource's status replicas).
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
    /// With more than one replica: the headless Service whose DNS name lists every proxy pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headless_service: Option<String>,
    /// The security mechanism of each socket (NULL or CURVE), as the observed generation's
    /// spec configures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SocketMechanisms>,
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

/// ZeroMQ endpoints of the Service, as peers write them in `connect`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub frontend: String,
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// The port fields of the spec in the order clashes are reported: the proxy's sockets, then the
/// metrics port the operator adds.
fn port_fields() -> Vec<PortField> {
    let mut fields = cel::socket_port_fields();
    fields.push(PortField {
        name: "metricsPort".to_string(),
        port: "self.metricsPort".to_string(),
        present: Some("has(self.metricsPort)".to_string()),
        field_path: ".metricsPort".to_string(),
    });
    fields
}

/// Every CEL rule of the spec (`self` is `spec`), in the order they are written to the schema.
pub fn spec_rules() -> Vec<Rule> {
    let mut rules = vec![cel::pair_rule(), cel::capture_rule()];
    rules.extend(cel::nodrop_rules());
    rules.extend(cel::distinct_port_rules(&port_fields()));
    rules.into_iter().map(to_rule).collect()
}

/// Longest object name whose headless Service `<name>-pods` is still a valid Service name.
pub const MAX_NAME_LEN: usize = 63 - HEADLESS_SUFFIX.len();
/// Suffix of the headless Service created for more than one replica.
pub const HEADLESS_SUFFIX: &str = "-pods";

/// The object's name becomes the Service's name, which must be a DNS-1035 label (no dots, starts
/// with a letter) short enough to leave room for [`HEADLESS_SUFFIX`].
pub fn name_rule() -> Rule {
    Rule::new(format!(
        "self.metadata.name.size() <= {MAX_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ))
    .message(Message::Message(format!(
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most {MAX_NAME_LEN} characters: it names the proxy's Services"
    )))
    .reason(Reason::FieldValueInvalid)
}

fn to_rule(r: CelRule) -> Rule {
    Rule::new(r.rule)
        .message(Message::Expression(r.message_expression))
        .field_path(r.field_path)
        .reason(Reason::FieldValueInvalid)
}

fn add_spec_rules(schema: &mut schemars::Schema) {
    for rule in spec_rules() {
        // Serialising a Rule cannot fail (strings and enums only); a failure would leave the
        // rule out, which the CRD tests catch by counting the rules.
        let _ = kube::core::validate(schema, rule);
    }
}

/// Labels every child object carries; the first two are the pod selector.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "zmq-proxy".to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// The selector of [`selector_labels`] as a label-selector string (status.selector).
pub fn selector_string(name: &str) -> String {
    selector_labels(name).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Label that marks objects this operator manages (the watches of owned objects filter on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "zmq-proxy-operator");
