//! Pure construction of a `ZmqProxy`'s children: `&ZmqProxy` in, Deployment and Service(s) out.
//! No client and no clock, so every property is tested from YAML fixtures; the reconciler only
//! applies what this module returns.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use zmq_proxy::config::KUBERNETES_HEARTBEAT;
use zmq_proxy::socket::ProxySockets;

use crate::crd::{
    HEADLESS_SUFFIX, ImagePullPolicy, MANAGED_BY, ZmqProxy, ZmqProxySpec, selector_labels,
};

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

/// What the operator adds to every proxy: its default image and pull policy, each used where
/// the object does not set its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub default_image: String,
    pub default_pull_policy: Option<ImagePullPolicy>,
}

/// The children of one `ZmqProxy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    /// The headless Service `<name>-pods`, only with more than one replica.
    pub headless: Option<Service>,
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
    if spec.lame_duck_seconds < 0 {
        return Err(BuildError::InvalidSpec(format!(
            "spec.lameDuckSeconds: {} is negative",
            spec.lame_duck_seconds
        )));
    }
    Ok(())
}

/// The proxy's command-line flags, as in the shared contract.
pub fn proxy_args(spec: &ZmqProxySpec) -> Vec<String> {
    let bind = |port: i32| format!("tcp://0.0.0.0:{port}");
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
    args.extend([
        "--http-bind".to_string(),
        format!("0.0.0.0:{}", spec.metrics_port),
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

/// Name of the headless Service of a `ZmqProxy` with more than one replica.
pub fn headless_name(name: &str) -> String {
    format!("{name}{HEADLESS_SUFFIX}")
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
    let deployment = Deployment {
        metadata: meta(name.clone(), None),
        spec: Some(deployment_spec(zp, opts)),
        status: None,
    };
    let service_annotations =
        (!zp.spec.service_annotations.is_empty()).then(|| zp.spec.service_annotations.clone());
    let service = Service {
        metadata: meta(name.clone(), service_annotations),
        spec: Some(ServiceSpec {
            type_: Some(zp.spec.service_type.as_str().to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(&zp.spec)),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    // One proxy per pod: peers that must reach every replica look the pods up through this
    // Service's DNS name, which returns one address per ready pod.
    let headless = (zp.spec.replicas > 1).then(|| Service {
        metadata: meta(headless_name(&name), None),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(&zp.spec)),
            ..ServiceSpec::default()
        }),
        status: None,
    });
    Ok(Children { deployment, service, headless })
}

fn owner_reference(zp: &ZmqProxy) -> Result<OwnerReference, BuildError> {
    if zp.meta().uid.is_none() {
        return Err(BuildError::MissingObjectKey("metadata.uid"));
    }
    let owner =
        zp.controller_owner_ref(&()).ok_or(BuildError::MissingObjectKey("metadata.name"))?;
    // As controller-runtime's SetControllerReference: a foreground deletion of the ZmqProxy
    // waits for its children.
    Ok(OwnerReference { block_owner_deletion: Some(true), ..owner })
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

/// With one replica the rollout must never run two proxies at once: ZeroMQ peers hold
/// long-lived connections and reconnect to whatever answers, so an overlap splits them (a client
/// on the old pod, workers on the new one) and ROUTER replies go back only through the proxy
/// that saw the request. `Recreate` waits until the old pod has terminated, drain included;
/// RollingUpdate with maxSurge 0 would not, since it does not count terminating pods.
/// With more replicas peers connect to every pod anyway, so pods are replaced one at a time and
/// the count never exceeds `replicas`.
pub fn strategy(replicas: i32) -> DeploymentStrategy {
    if replicas <= 1 {
        DeploymentStrategy { type_: Some("Recreate".to_string()), rolling_update: None }
    } else {
        DeploymentStrategy {
            type_: Some("RollingUpdate".to_string()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(0)),
                max_unavailable: Some(IntOrString::Int(1)),
            }),
        }
    }
}

fn deployment_spec(zp: &ZmqProxy, opts: &BuildOptions) -> DeploymentSpec {
    let name = zp.name_any();
    let spec = &zp.spec;
    // User labels first so the selector labels win: a pod that lost them would leave the
    // Deployment's selector and be orphaned.
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(child_labels(&name));
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let curve = curve_mounts(spec);
    let volumes: Vec<Volume> = curve.iter().flat_map(|m| m.volumes.clone()).collect();
    // Only with CURVE: an unsecured proxy's pod stays exactly as before (no rollout).
    let fs_group = (!curve.is_empty()).then_some(RUN_AS_USER);
    DeploymentSpec {
        replicas: Some(spec.replicas),
        selector: LabelSelector {
            match_labels: Some(selector_labels(&name)),
            match_expressions: None,
        },
        strategy: Some(strategy(spec.replicas)),
        template: PodTemplateSpec {
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
                termination_grace_period_seconds: Some(
                    i64::from(spec.lame_duck_seconds)
                        + i64::from(spec.drain_timeout_seconds)
                        + GRACE_MARGIN_SECONDS,
                ),
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
                image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| {
                    spec.image_pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() })
                        .collect()
                }),
                ..PodSpec::default()
            }),
        },
        ..DeploymentSpec::default()
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
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(METRICS_PORT_NAME.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
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
        // /readyz turns false while draining, so the Service stops sending new peers at once.
        readiness_probe: Some(probe("/readyz", 5, 2)),
        // /healthz only fails when the proxy is wedged; three misses before a restart.
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: spec.resources.clone(),
        volume_mounts: {
            let mounts: Vec<VolumeMount> =
                curve_mounts(spec).into_iter().flat_map(|m| m.mounts).collect();
            (!mounts.is_empty()).then_some(mounts)
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
    let host = format!("{}.{namespace}.svc", zp.name_any());
    let ep = |port: i32| format!("tcp://{host}:{port}");
    let s = &zp.spec.sockets;
    Some(crate::crd::Endpoints {
        frontend: ep(s.frontend.port),
        backend: ep(s.backend.port),
        capture: s.capture.as_ref().map(|c| ep(c.port)),
        control: s.control.as_ref().map(|c| ep(c.port)),
    })
}
