//! Pure construction of a `ZmqProxy`'s children: `&ZmqProxy` in, StatefulSet, Services,
//! PodDisruptionBudget and the steering ConfigMap out (the PodMonitor: [`crate::monitoring`]). No client and no clock, so every property is tested from YAML
//! fixtures; the reconciler only applies what this module returns. The pod template is built by
//! one function, [`pod_template`] (the operator's pod, then `spec.podTemplate` merged over it by
//! [`crate::overrides`]).
//!
//! Why a StatefulSet, for every replica count: each replica is a separate proxy, and libzmq
//! connects only to the first address a hostname resolves to (libzmq#2297), so with more than
//! one replica peers must list every pod. A StatefulSet whose `serviceName` is the headless
//! Service gives each pod a stable DNS name, `<name>-<ordinal>.<name>-pods.<namespace>.svc`,
//! that survives the pod's replacement. Its rollout also keeps the one-replica rule (see
//! [`stateful_set_spec`]). Earlier versions of the operator ran a Deployment; the reconciler
//! replaces it once (`crate::reconcile`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    KeyToPath, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use zmq_proxy_api::kubernetes::KUBERNETES_HEARTBEAT;
use zmq_proxy_api::manifest::ProxySockets;

use crate::crd::{
    GRACE_PERIOD_TOO_SHORT, HEADLESS_SUFFIX, ImagePullPolicy, IpFamilyPolicy, MANAGED_BY,
    PDB_BOTH_BOUNDS, PodTemplateOverride, ZmqProxy, ZmqProxySpec, selector_labels,
};
use crate::overrides;

/// The proxy container's readiness probe of `/readyz`: period, failures, timeout (seconds).
/// `/readyz` turns 503 when the lame duck starts, and the pod must leave its Services before the
/// proxy closes its connections. A terminating pod is not removed at SIGTERM when it is the
/// Service's only endpoint: kube-proxy then keeps routing to terminating endpoints that are
/// still serving, i.e. until the probe fails (KEP-1669). Peers that reconnected to it as the
/// proxy exited hung in TCP's SYN retries (libzmq has no connect timeout by default): 72.9 s
/// outages on the real cluster with the 5 s period and 2 failures this replaced, which needed
/// up to 10 s against a 5 s lame duck, and 1.4-3.5 s with this one. Now the pod is unready at
/// most 2 s after the lame duck starts; kube-proxy's sync (about 1 s) fits in the rest.
pub const READINESS_PROBE: (i32, i32, i32) = (1, 2, 1);

/// Name of the proxy container.
pub const CONTAINER: &str = "proxy";
/// The proxy binary in the image.
pub const PROXY_BINARY: &str = "zmq-proxy";
/// Name of the HTTP port (/metrics, /healthz, /readyz).
pub const METRICS_PORT_NAME: &str = "metrics";
/// Seconds between the end of the lame-duck period plus the drain timeout and the kubelet's
/// SIGKILL, so the proxy's own shutdown (the final counters, the last log line) is never cut
/// short. No preStop hook is needed: the proxy itself stays up, unready, for the lame duck.
pub const GRACE_MARGIN_SECONDS: i64 = 10;
/// User and group the proxy runs as when the image does not say (distroless' `nonroot`).
pub const RUN_AS_USER: i64 = 65532;
/// Where a socket's CURVE Secrets and ConfigMaps are mounted: `<root>/<socket>/server-key` and
/// `<root>/<socket>/authorized-keys`.
pub const CURVE_MOUNT_ROOT: &str = "/etc/zmq-proxy/curve";
/// File name of the server's secret key inside its mount (whatever the Secret's key is).
pub const SERVER_KEY_FILE: &str = "server_secret";
/// File name of the allow-list inside its mount when `authorizedKeys.key` picks one entry.
pub const ALLOW_LIST_FILE: &str = "authorized_keys";
/// Mode of the mounted key files: read for their owner (root) and group, nothing for others.
/// The pod's fsGroup is the proxy's group ([`RUN_AS_USER`]), which the kubelet makes the files'
/// group, so the proxy can read them. 0400 would leave them readable by root only: the kubelet
/// does not chown Secret files to runAsUser.
pub const KEY_FILE_MODE: i32 = 0o440;
/// Suffix of the ConfigMap that carries `spec.paused` to the pods (`<name>-steering`).
pub const STEERING_SUFFIX: &str = "-steering";
/// Key of that ConfigMap (and file name in its mount) holding "true" or "false".
pub const PAUSED_KEY: &str = "paused";
/// Where the steering ConfigMap is mounted: a whole directory, no subPath, so the kubelet
/// updates the file in place and the proxy's `--pause-file` sees each change.
pub const STEERING_MOUNT: &str = "/etc/zmq-proxy/steering";
/// Name of the steering volume in the pod.
pub const STEERING_VOLUME: &str = "steering";

/// What the operator adds to every proxy: its default image and pull policy, each used where
/// the object does not set its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub default_image: String,
    pub default_pull_policy: Option<ImagePullPolicy>,
    /// Whether objects that do not set `spec.monitoring.podMonitor` get a PodMonitor.
    pub pod_monitor_default: bool,
}

/// The children of one `ZmqProxy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub stateful_set: StatefulSet,
    pub service: Service,
    /// The headless Service `<name>-pods`: the StatefulSet's `serviceName`.
    pub headless: Service,
    /// The PodDisruptionBudget `<name>`, only with two replicas or more and unless disabled.
    pub pdb: Option<PodDisruptionBudget>,
    /// `<name>-steering`: `paused` = "true"/"false", mounted by every pod ([`STEERING_MOUNT`]).
    pub steering: ConfigMap,
}

/// Why a `ZmqProxy` cannot be built; each names the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("{0}")]
    InvalidSpec(String),
}

/// Every check the API server's schema makes, again, so an object that bypassed the CRD's rules
/// (an older CRD, a disabled validation) never reaches a pod that would crash-loop on it.
pub fn validate(spec: &ZmqProxySpec) -> Result<(), BuildError> {
    spec.sockets.validate("spec").map_err(|e| BuildError::InvalidSpec(e.to_string()))?;
    if let Some((name, _)) =
        spec.sockets.named_ports().into_iter().find(|(_, port)| *port == spec.metrics_port)
    {
        return Err(BuildError::InvalidSpec(format!(
            "spec.metricsPort: port {} is already used by {name}; ports must be distinct",
            spec.metrics_port
        )));
    }
    if !(1..=65535).contains(&spec.metrics_port) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.metricsPort: port {} is outside 1-65535",
            spec.metrics_port
        )));
    }
    if spec.replicas < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.replicas: {} is negative",
            spec.replicas
        )));
    }
    if spec.drain_timeout_seconds < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.drainTimeoutSeconds: {} is negative",
            spec.drain_timeout_seconds
        )));
    }
    if spec.ip_families.len() > 2 {
        return Err(BuildError::InvalidSpec(
            "spec.ipFamilies: at most two families (IPv4, IPv6)".to_string(),
        ));
    }
    if spec.ip_families.len() == 2 && spec.ip_families[0] == spec.ip_families[1] {
        return Err(BuildError::InvalidSpec(format!(
            "spec.ipFamilies: {} is listed twice",
            spec.ip_families[0].as_str()
        )));
    }
    if spec.ip_family_policy == Some(IpFamilyPolicy::SingleStack) && spec.ip_families.len() == 2 {
        return Err(BuildError::InvalidSpec(
            "spec.ipFamilies: a SingleStack Service has one IP family; use PreferDualStack or RequireDualStack for two".to_string(),
        ));
    }
    if spec.lame_duck_seconds < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.lameDuckSeconds: {} is negative",
            spec.lame_duck_seconds
        )));
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < drain_period(spec)) {
        return Err(BuildError::InvalidSpec(format!(
            "spec.terminationGracePeriodSeconds: {GRACE_PERIOD_TOO_SHORT}"
        )));
    }
    if let Some(pdb) = &spec.pod_disruption_budget {
        if pdb.max_unavailable.is_some() && pdb.min_available.is_some() {
            return Err(BuildError::InvalidSpec(format!(
                "spec.podDisruptionBudget.minAvailable: {PDB_BOTH_BOUNDS}"
            )));
        }
        let bounds =
            [("maxUnavailable", &pdb.max_unavailable), ("minAvailable", &pdb.min_available)];
        for (field, value) in bounds {
            if let Some(value) = value
                && !is_count_or_percent(value)
            {
                return Err(BuildError::InvalidSpec(format!(
                    "spec.podDisruptionBudget.{field}: must be a count of 0 or more or a percentage from 0% to 100%"
                )));
            }
        }
    }
    Ok(())
}

/// A PDB bound as the CRD's schema allows it: an integer of 0 or more, or "0%" to "100%".
fn is_count_or_percent(value: &IntOrString) -> bool {
    match value {
        IntOrString::Int(n) => *n >= 0,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .filter(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| n.len() == 1 || !n.starts_with('0'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 100),
    }
}

/// Seconds from SIGTERM to the end of the drain at the latest: the lame duck, then the drain
/// timeout. A grace period shorter than this kills the proxy mid-drain.
pub fn drain_period(spec: &ZmqProxySpec) -> i64 {
    i64::from(spec.lame_duck_seconds) + i64::from(spec.drain_timeout_seconds)
}

/// The pods' grace period: the spec's, or the drain period plus [`GRACE_MARGIN_SECONDS`].
pub fn termination_grace_period(spec: &ZmqProxySpec) -> i64 {
    spec.termination_grace_period_seconds.unwrap_or(drain_period(spec) + GRACE_MARGIN_SECONDS)
}

/// The proxy's command-line flags, as in the shared contract. Every listener binds `*`: IPv6
/// and IPv4 on one dual-stack socket, IPv4 alone where the pod has no IPv6, so the same pod
/// serves IPv4-only, IPv6-only and dual-stack clusters (and `--config` binds the same way).
pub fn proxy_args(spec: &ZmqProxySpec) -> Vec<String> {
    let bind = |port: i32| format!("tcp://*:{port}");
    let s = &spec.sockets;
    let mut args = vec![
        "--frontend-type".to_string(),
        s.frontend.socket_type.to_string(),
        "--frontend-bind".to_string(),
        bind(s.frontend.port),
        "--backend-type".to_string(),
        s.backend.socket_type.to_string(),
        "--backend-bind".to_string(),
        bind(s.backend.port),
    ];
    if let Some(capture) = &s.capture {
        args.extend([
            "--capture-type".to_string(),
            capture.socket_type.to_string(),
            "--capture-bind".to_string(),
            bind(capture.port),
        ]);
    }
    if let Some(control) = &s.control {
        args.extend(["--control-bind".to_string(), bind(control.port)]);
    }
    args.extend(heartbeat_args(&spec.sockets));
    args.extend(curve_args(spec));
    // Only the options a spec sets: unset ones keep the proxy's defaults (one place).
    args.extend(s.frontend.options.to_flags("frontend"));
    args.extend(s.backend.options.to_flags("backend"));
    if let Some(capture) = &s.capture {
        args.extend(capture.options.to_flags("capture"));
    }
    args.extend(["--pause-file".to_string(), format!("{STEERING_MOUNT}/{PAUSED_KEY}")]);
    args.extend([
        "--http-bind".to_string(),
        format!("*:{}", spec.metrics_port),
        "--drain-timeout".to_string(),
        spec.drain_timeout_seconds.to_string(),
        "--lame-duck".to_string(),
        spec.lame_duck_seconds.to_string(),
        "--log-format".to_string(),
        "json".to_string(),
    ]);
    args
}

/// `--<socket>-heartbeat-*` of each data socket: the fields its spec sets, or, when it sets
/// none, the pods' default [`KUBERNETES_HEARTBEAT`] (why it is on: the proxy's config module).
/// The control socket has no heartbeats.
pub fn heartbeat_args(sockets: &ProxySockets) -> Vec<String> {
    let mut all = vec![("frontend", &sockets.frontend), ("backend", &sockets.backend)];
    all.extend(sockets.capture.as_ref().map(|c| ("capture", c)));
    let mut args = Vec::new();
    for (socket, spec) in all {
        let hb = if spec.heartbeat.is_empty() { KUBERNETES_HEARTBEAT } else { spec.heartbeat };
        for (field, value) in [("interval", hb.interval), ("ttl", hb.ttl), ("timeout", hb.timeout)]
        {
            if let Some(v) = value {
                args.extend([format!("--{socket}-heartbeat-{field}"), v.to_string()]);
            }
        }
    }
    args
}

/// One socket's CURVE mounts: the Secret with the server's key (a file) and the Secret or
/// ConfigMap with the allow-list (a directory, so the kubelet's updates reach the proxy; a
/// subPath mount would never change).
#[derive(Clone, Debug, PartialEq)]
pub struct CurveMounts {
    pub socket: &'static str,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    /// The flags that pass the mounted paths to the proxy.
    pub args: Vec<String>,
}

/// The mounts and flags of every CURVE socket of `spec`, in socket order (none without security).
pub fn curve_mounts(spec: &ZmqProxySpec) -> Vec<CurveMounts> {
    spec.sockets
        .named_security()
        .into_iter()
        .filter_map(|(socket, security)| Some((socket, &security?.curve)))
        .map(|(socket, curve)| {
            let server_volume = format!("curve-{socket}-server-key");
            let server_dir = format!("{CURVE_MOUNT_ROOT}/{socket}/server-key");
            let mut volumes = vec![Volume {
                name: server_volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(curve.server_key.secret_name.clone()),
                    items: Some(vec![KeyToPath {
                        key: curve.server_key.key.clone(),
                        path: SERVER_KEY_FILE.to_string(),
                        mode: None,
                    }]),
                    default_mode: Some(KEY_FILE_MODE),
                    optional: None,
                }),
                ..Volume::default()
            }];
            let mount = |name: String, path: String| VolumeMount {
                name,
                mount_path: path,
                read_only: Some(true),
                ..VolumeMount::default()
            };
            let mut mounts = vec![mount(server_volume, server_dir.clone())];
            let mut args = vec![
                format!("--{socket}-curve-server-key-file"),
                format!("{server_dir}/{SERVER_KEY_FILE}"),
            ];
            if let Some(list) = &curve.authorized_keys {
                let list_volume = format!("curve-{socket}-authorized-keys");
                let list_dir = format!("{CURVE_MOUNT_ROOT}/{socket}/authorized-keys");
                // One entry under a fixed name: a key starting with `.` or ending in `_secret`
                // would otherwise be skipped by the proxy's directory reader.
                let items = list.key.as_ref().map(|key| {
                    vec![KeyToPath {
                        key: key.clone(),
                        path: ALLOW_LIST_FILE.to_string(),
                        mode: None,
                    }]
                });
                let mut volume = Volume { name: list_volume.clone(), ..Volume::default() };
                match (&list.secret_name, &list.config_map_name) {
                    (Some(secret), _) => {
                        volume.secret = Some(SecretVolumeSource {
                            secret_name: Some(secret.clone()),
                            items,
                            default_mode: Some(KEY_FILE_MODE),
                            optional: None,
                        });
                    }
                    (None, config_map) => {
                        volume.config_map = Some(ConfigMapVolumeSource {
                            name: config_map.clone().unwrap_or_default(),
                            items,
                            default_mode: Some(KEY_FILE_MODE),
                            optional: None,
                        });
                    }
                }
                volumes.push(volume);
                mounts.push(mount(list_volume, list_dir.clone()));
                args.extend([format!("--{socket}-curve-authorized-keys"), list_dir]);
            }
            CurveMounts { socket, volumes, mounts, args }
        })
        .collect()
}

/// The CURVE flags: each socket's key file and allow-list, then `--curve-allow-any` when a
/// socket accepts any client. The proxy's flag is global, but it applies only to CURVE sockets
/// without an allow-list, and every CURVE socket here has exactly one of the two (the CRD's
/// rules and [`validate`]), so each socket gets what its own section says.
fn curve_args(spec: &ZmqProxySpec) -> Vec<String> {
    let mut args: Vec<String> = curve_mounts(spec).into_iter().flat_map(|m| m.args).collect();
    let any = spec
        .sockets
        .named_security()
        .into_iter()
        .any(|(_, s)| s.is_some_and(|s| s.curve.allow_any_client));
    if any {
        args.push("--curve-allow-any".to_string());
    }
    args
}

/// Labels of every child: the selector labels plus the managed-by marker.
pub fn child_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels
}

/// Name of the headless Service of a `ZmqProxy`, under which each pod has its DNS name.
pub fn headless_name(name: &str) -> String {
    format!("{name}{HEADLESS_SUFFIX}")
}

/// Name of the steering ConfigMap of a `ZmqProxy`.
pub fn steering_name(name: &str) -> String {
    format!("{name}{STEERING_SUFFIX}")
}

/// The steering volume: the whole ConfigMap, required (a pod never starts without knowing
/// whether it is paused).
fn steering_volume(name: &str) -> Volume {
    Volume {
        name: STEERING_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: steering_name(name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Builds every child of `zp`.
pub fn children(zp: &ZmqProxy, opts: &BuildOptions) -> Result<Children, BuildError> {
    validate(&zp.spec)?;
    let owner = owner_reference(zp)?;
    let name = zp.name_any();
    let namespace = zp.namespace().ok_or(BuildError::MissingObjectKey("metadata.namespace"))?;
    let meta = |name: String, annotations: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.clone()),
        labels: Some(child_labels(&zp.name_any())),
        annotations,
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let stateful_set = StatefulSet {
        metadata: meta(name.clone(), None),
        spec: Some(stateful_set_spec(zp, opts)?),
        status: None,
    };
    let service_annotations =
        (!zp.spec.service_annotations.is_empty()).then(|| zp.spec.service_annotations.clone());
    // User labels first so the operator's win: the watches find their children by the
    // managed-by label.
    let service_meta = |name: String, annotations: Option<BTreeMap<String, String>>| {
        let mut m = meta(name, annotations);
        let mut labels = zp.spec.service_labels.clone();
        labels.extend(m.labels.take().unwrap_or_default());
        m.labels = Some(labels);
        m
    };
    let service = Service {
        metadata: service_meta(name.clone(), service_annotations),
        spec: Some(ServiceSpec {
            type_: Some(zp.spec.service_type.as_str().to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(&zp.spec)),
            ..ip_families(&zp.spec)
        }),
        status: None,
    };
    // One proxy per pod: this Service's DNS name returns one address per ready pod, and gives
    // each pod its own name. Only ready pods (publishNotReadyAddresses false): a pod is named
    // once it serves, and drops out as its drain starts.
    let headless = Service {
        metadata: service_meta(headless_name(&name), None),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(&zp.spec)),
            publish_not_ready_addresses: Some(false),
            ..ip_families(&zp.spec)
        }),
        status: None,
    };
    let pdb = pod_disruption_budget_spec(zp).map(|spec| PodDisruptionBudget {
        metadata: meta(name.clone(), None),
        spec: Some(spec),
        status: None,
    });
    // Only the ConfigMap carries `paused`: the pod template never changes with it (no restart).
    let steering = ConfigMap {
        metadata: meta(steering_name(&name), None),
        data: Some(BTreeMap::from([(PAUSED_KEY.to_string(), zp.spec.paused.to_string())])),
        ..ConfigMap::default()
    };
    Ok(Children { stateful_set, service, headless, pdb, steering })
}

/// Name of the PodDisruptionBudget of a `ZmqProxy` (the object's own name, as the StatefulSet).
pub fn pdb_name(name: &str) -> String {
    name.to_string()
}

/// The PodDisruptionBudget's spec for two replicas or more (none below, or when disabled): one
/// proxy at a time by default, so a node drain never takes every proxy at once (the peers of the
/// others keep being served while the evicted one drains).
pub fn pod_disruption_budget_spec(zp: &ZmqProxy) -> Option<PodDisruptionBudgetSpec> {
    let settings = zp.spec.pod_disruption_budget.clone().unwrap_or_default();
    if zp.spec.replicas < 2 || !settings.enabled {
        return None;
    }
    let max_unavailable = match (&settings.max_unavailable, &settings.min_available) {
        (_, Some(_)) => settings.max_unavailable.clone(),
        (Some(max), None) => Some(max.clone()),
        (None, None) => Some(IntOrString::Int(1)),
    };
    Some(PodDisruptionBudgetSpec {
        max_unavailable,
        min_available: settings.min_available,
        selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&zp.name_any())),
            match_expressions: None,
        }),
        // A pod that is not ready serves nobody, so evicting it costs nothing; with the default
        // (IfHealthyBudget) one crash-looping proxy would block every node drain.
        unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
    })
}

/// The controller owner reference every child carries.
pub fn owner_reference(zp: &ZmqProxy) -> Result<OwnerReference, BuildError> {
    if zp.meta().uid.is_none() {
        return Err(BuildError::MissingObjectKey("metadata.uid"));
    }
    let owner =
        zp.controller_owner_ref(&()).ok_or(BuildError::MissingObjectKey("metadata.name"))?;
    // As controller-runtime's SetControllerReference: a foreground deletion of the ZmqProxy
    // waits for its children.
    Ok(OwnerReference { block_owner_deletion: Some(true), ..owner })
}

/// The spec's IP family policy and families on a Service (both Services alike: the headless
/// one's DNS name then lists the pods' addresses of the same families). Unset fields stay
/// unset, so the API server applies the cluster's defaults and the object is unchanged for
/// specs that set neither.
fn ip_families(spec: &ZmqProxySpec) -> ServiceSpec {
    ServiceSpec {
        ip_family_policy: spec.ip_family_policy.map(|p| p.as_str().to_string()),
        ip_families: (!spec.ip_families.is_empty())
            .then(|| spec.ip_families.iter().map(|f| f.as_str().to_string()).collect()),
        ..ServiceSpec::default()
    }
}

fn service_ports(spec: &ZmqProxySpec) -> Vec<ServicePort> {
    spec.sockets
        .named_ports()
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.to_string()),
            port,
            protocol: Some("TCP".to_string()),
            target_port: Some(IntOrString::String(name.to_string())),
            ..ServicePort::default()
        })
        .collect()
}

/// The StatefulSet around [`pod_template`].
///
/// The rollout must never run two proxies for one replica at once: ZeroMQ peers hold
/// long-lived connections and reconnect to whatever answers, so an overlap splits them (a client
/// on the old pod, workers on the new one) and ROUTER replies go back only through the proxy
/// that saw the request. A StatefulSet's rolling update deletes a pod and waits until it has
/// terminated, drain included, before it creates the replacement under the same name (a
/// Deployment needs `Recreate` for that; RollingUpdate with maxSurge 0 does not count terminating
/// pods). `OrderedReady`: scaling up starts pod N+1 only once pod N is ready, scaling down removes
/// the highest ordinal first, one at a time, each draining within its grace period.
/// `selector`, `serviceName` and `podManagementPolicy` are immutable in a StatefulSet: they
/// depend on the object's name only, so they never change.
pub fn stateful_set_spec(
    zp: &ZmqProxy,
    opts: &BuildOptions,
) -> Result<StatefulSetSpec, BuildError> {
    let name = zp.name_any();
    Ok(StatefulSetSpec {
        replicas: Some(zp.spec.replicas),
        selector: LabelSelector {
            match_labels: Some(selector_labels(&name)),
            match_expressions: None,
        },
        service_name: Some(headless_name(&name)),
        pod_management_policy: Some("OrderedReady".to_string()),
        update_strategy: Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".to_string()),
            rolling_update: None,
        }),
        template: pod_template(zp, opts)?,
        ..StatefulSetSpec::default()
    })
}

/// The proxy pods' template, as any workload that runs them carries it: the pod the operator
/// builds from the spec, with `spec.podTemplate` merged over it. Refused (naming the field) when
/// the merge would change what the operator needs ([`overrides::check_required`]) or holds a
/// field a pod template does not have.
pub fn pod_template(zp: &ZmqProxy, opts: &BuildOptions) -> Result<PodTemplateSpec, BuildError> {
    let built = operator_pod_template(zp, opts);
    match &zp.spec.pod_template {
        None => Ok(built),
        Some(overlay) => apply_pod_template_override(zp, built, overlay),
    }
}

fn apply_pod_template_override(
    zp: &ZmqProxy,
    built: PodTemplateSpec,
    overlay: &PodTemplateOverride,
) -> Result<PodTemplateSpec, BuildError> {
    const AT: &str = "spec.podTemplate";
    let invalid = |why: String| BuildError::InvalidSpec(why);
    let serialize = |e: serde_json::Error| invalid(format!("{AT}: {e}"));
    let built = serde_json::to_value(&built).map_err(serialize)?;
    let merged =
        overrides::merge_pod_template(&built, &serde_json::to_value(overlay).map_err(serialize)?);
    let required = overrides::Required {
        labels: selector_labels(&zp.name_any()).into_iter().collect(),
        container: CONTAINER.to_string(),
        volumes: curve_mounts(&zp.spec)
            .into_iter()
            .flat_map(|m| m.volumes.into_iter().map(|v| v.name))
            .chain([STEERING_VOLUME.to_string()])
            .collect(),
    };
    if let Some(why) = overrides::check_required(&built, &merged, &required) {
        return Err(invalid(why));
    }
    let typed: PodTemplateSpec = serde_json::from_value(merged.clone())
        .map_err(|e| invalid(format!("{AT}: not a pod template: {e}")))?;
    let parsed = serde_json::to_value(&typed).map_err(serialize)?;
    if let Some(path) = overrides::first_dropped(&merged, &parsed, AT) {
        return Err(invalid(format!(
            "{path}: not a field of a Kubernetes pod template (as of the operator's API version, 1.33)"
        )));
    }
    Ok(typed)
}

/// The pod as the operator builds it from the spec, before `spec.podTemplate`: exactly the
/// pod the Deployment of earlier operators ran.
fn operator_pod_template(zp: &ZmqProxy, opts: &BuildOptions) -> PodTemplateSpec {
    let name = zp.name_any();
    let spec = &zp.spec;
    // User labels first so the selector labels win: a pod that lost them would leave the
    // StatefulSet's selector and be orphaned.
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(child_labels(&name));
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let curve = curve_mounts(spec);
    let mut volumes: Vec<Volume> = curve.iter().flat_map(|m| m.volumes.clone()).collect();
    volumes.push(steering_volume(&name));
    // Only with CURVE: an unsecured proxy's pod stays exactly as before (no rollout).
    let fs_group = (!curve.is_empty()).then_some(RUN_AS_USER);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: non_empty(&spec.pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(spec, opts)],
            volumes: (!volumes.is_empty()).then_some(volumes),
            // The proxy never talks to the API server.
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(termination_grace_period(spec)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS_USER),
                run_as_group: Some(RUN_AS_USER),
                fs_group,
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            node_selector: non_empty(&spec.node_selector),
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            affinity: spec.affinity.clone(),
            topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
                .then(|| spec.topology_spread_constraints.clone()),
            priority_class_name: spec.priority_class_name.clone(),
            service_account_name: spec.service_account_name.clone(),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| {
                spec.image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            ..PodSpec::default()
        }),
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None }
}

fn container(spec: &ZmqProxySpec, opts: &BuildOptions) -> Container {
    let mut ports: Vec<ContainerPort> = spec
        .sockets
        .named_ports()
        .into_iter()
        .map(|(name, port)| ContainerPort {
            name: Some(name.to_string()),
            container_port: port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some(METRICS_PORT_NAME.to_string()),
        container_port: spec.metrics_port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    });
    let probe = |path: &str, (period, failures, timeout): (i32, i32, i32)| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(METRICS_PORT_NAME.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    };
    Container {
        name: CONTAINER.to_string(),
        image: Some(spec.image.clone().unwrap_or_else(|| opts.default_image.clone())),
        image_pull_policy: spec
            .image_pull_policy
            .or(opts.default_pull_policy)
            .map(|p| p.as_str().to_string()),
        command: Some(vec![PROXY_BINARY.to_string()]),
        args: Some(proxy_args(spec)),
        ports: Some(ports),
        readiness_probe: Some(probe("/readyz", READINESS_PROBE)),
        // /healthz only fails when the proxy is wedged; three misses before a restart.
        liveness_probe: Some(probe("/healthz", (10, 3, 2))),
        resources: spec.resources.clone(),
        volume_mounts: {
            let mut mounts: Vec<VolumeMount> =
                curve_mounts(spec).into_iter().flat_map(|m| m.mounts).collect();
            mounts.push(VolumeMount {
                name: STEERING_VOLUME.to_string(),
                mount_path: STEERING_MOUNT.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            Some(mounts)
        },
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The endpoints peers connect to, through the Service's cluster DNS name.
pub fn endpoints(zp: &ZmqProxy) -> Option<crate::crd::Endpoints> {
    let namespace = zp.namespace()?;
    Some(endpoints_at(zp, &format!("{}.{namespace}.svc", zp.name_any())))
}

/// Every socket's `tcp://<host>:<port>`.
pub fn endpoints_at(zp: &ZmqProxy, host: &str) -> crate::crd::Endpoints {
    let ep = |port: i32| format!("tcp://{host}:{port}");
    let s = &zp.spec.sockets;
    crate::crd::Endpoints {
        frontend: ep(s.frontend.port),
        backend: ep(s.backend.port),
        capture: s.capture.as_ref().map(|c| ep(c.port)),
        control: s.control.as_ref().map(|c| ep(c.port)),
    }
}

/// The stable DNS name of replica `ordinal`: `<name>-<ordinal>.<name>-pods.<namespace>.svc`.
pub fn replica_host(name: &str, namespace: &str, ordinal: u32) -> String {
    format!("{name}-{ordinal}.{}.{namespace}.svc", headless_name(name))
}
