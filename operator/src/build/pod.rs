//! The proxy pods' template: the container, its probes, mounts and security context, and
//! `spec.podTemplate` merged over it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, LocalObjectReference,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{PodTemplateOverride, ZmqProxy, ZmqProxySpec, selector_labels};

use super::args::proxy_args;
use super::connect::{Connect, connects};
use super::curve::curve_mounts;
use super::federation::{
    FEDERATION_PORT_NAME, FEDERATION_VOLUME, federation_args, federation_of, federation_pod_parts,
};
use super::meta::{BuildError, BuildOptions, child_labels};
use super::overrides;
use super::steering::{STEERING_MOUNT, STEERING_VOLUME, steering_volume};

/// The proxy container's readiness probe of `/readyz`: period, failures, timeout (seconds).
/// `/readyz` turns 503 when the lame duck starts, and the pod must leave its Services before the
/// proxy closes its connections. A terminating pod is not removed at SIGTERM when it is the
/// Service's only endpoint: kube-proxy then keeps routing to terminating endpoints that are
/// still serving, i.e. until the probe fails (KEP-1669). Peers that reconnect to it as the proxy
/// exits hang in TCP's SYN retries (libzmq has no connect timeout by default). With these values
/// the pod is unready at most 2 s after the lame duck starts, and kube-proxy's sync (about 1 s)
/// fits in the rest of the default lame duck.
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

/// Seconds from SIGTERM to the end of the drain at the latest: the lame duck, then the drain
/// timeout. A grace period shorter than this kills the proxy mid-drain.
pub fn drain_period(spec: &ZmqProxySpec) -> i64 {
    i64::from(spec.lame_duck_seconds) + i64::from(spec.drain_timeout_seconds)
}

/// The pods' grace period: the spec's, or the drain period plus [`GRACE_MARGIN_SECONDS`].
pub fn termination_grace_period(spec: &ZmqProxySpec) -> i64 {
    spec.termination_grace_period_seconds.unwrap_or(drain_period(spec) + GRACE_MARGIN_SECONDS)
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
            .chain(federation_of(&zp.spec).map(|_| FEDERATION_VOLUME.to_string()))
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

/// The pod as the operator builds it from the spec, before `spec.podTemplate`.
fn operator_pod_template(zp: &ZmqProxy, opts: &BuildOptions) -> PodTemplateSpec {
    let name = zp.name_any();
    let spec = &zp.spec;
    // User labels first so the selector labels win: a pod that lost them would leave the
    // Deployment's selector and be orphaned.
    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(child_labels(&name));
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let curve = curve_mounts(spec);
    let (federation_volumes, federation_mounts, federation_env) = federation_pod_parts(zp);
    let mut volumes: Vec<Volume> = curve.iter().flat_map(|m| m.volumes.clone()).collect();
    volumes.push(steering_volume(&name));
    // Only with mounted keys: an unsecured proxy's pod stays exactly as before (no rollout).
    let fs_group = (!curve.is_empty() || !federation_volumes.is_empty()).then_some(RUN_AS_USER);
    volumes.extend(federation_volumes);
    let mut proxy = container(spec, opts, &connects(zp, &zp.namespace().unwrap_or_default()));
    if federation_of(spec).is_some() {
        proxy.args.get_or_insert_default().extend(federation_args(zp));
        proxy.ports.get_or_insert_default().push(ContainerPort {
            name: Some(FEDERATION_PORT_NAME.to_string()),
            container_port: spec.federation_port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
        proxy.volume_mounts.get_or_insert_default().extend(federation_mounts);
        proxy.env = Some(federation_env);
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: non_empty(&spec.pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![proxy],
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

/// The proxy container of `spec`'s pods (also what a sidecar starts from: `crate::sidecar`).
pub(crate) fn container(
    spec: &ZmqProxySpec,
    opts: &BuildOptions,
    connects: &[Connect],
) -> Container {
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
        args: Some(proxy_args(spec, connects)),
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
