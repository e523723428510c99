//! The injection itself, pure: a pod and the `ZmqProxy` it names in, the JSONPatch (RFC 6902)
//! that adds the sidecar out. No client and no clock, so every case is a YAML fixture.
//!
//! What the patch adds:
//! - the proxy as a native sidecar: the first init container, `restartPolicy: Always`, so it
//!   starts (its startup probe passes) before any other init container and the app, and the
//!   kubelet stops it only after the app has exited: the app's last messages are in the proxy
//!   when its drain starts;
//! - an `emptyDir` mounted at the directory of each `ipc` path, in the sidecar and in every app
//!   container (a container that already mounts a volume there shares that volume instead);
//! - the CURVE Secrets as volumes of the sidecar only;
//! - the grace period grown by the proxy's lame duck and drain, so the app keeps its share;
//! - the annotation [`INJECTED_ANNOTATION`], naming the `ZmqProxy` and its generation.
//!
//! Names the pod already uses are left alone: our volumes take the first free name of
//! `<name>`, `<name>-1`, `<name>-2`, ...

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, Pod, PodSpec, Probe, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::build::{self, BuildOptions, GRACE_MARGIN_SECONDS, RUN_AS_USER};
use crate::crd::ZmqProxy;

/// The sidecar's container name.
pub const SIDECAR_CONTAINER: &str = "zmq-proxy";
/// The shared `emptyDir` that holds the `ipc` sockets (its name when the pod has none such).
pub const IPC_VOLUME: &str = "zmq-ipc";
/// Pod annotation the injection adds: `<ZmqProxy name>, generation <n>`.
pub const INJECTED_ANNOTATION: &str = "zmqproxy.io/sidecar-injected";
/// The pod's grace period when it sets none (Kubernetes' default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The startup probe of the sidecar: the app starts once the proxy's forwarding loop runs (its
/// sockets are bound); period and failures (seconds, tries).
pub const STARTUP_PROBE: (i32, i32) = (1, 60);

/// What the webhook answers for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Injection {
    /// The pod already carries the sidecar (the webhook was called again): nothing to add.
    AlreadyInjected,
    /// The operations that add the sidecar.
    Patch(Vec<Value>),
}

/// The patch that injects `zp` into `pod`, or why it cannot be (naming the field to change).
pub fn inject(pod: &Pod, zp: &ZmqProxy, opts: &BuildOptions) -> Result<Injection, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err("spec: the pod has no spec".to_string());
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    if init.iter().any(|c| c.name == SIDECAR_CONTAINER) {
        return Ok(Injection::AlreadyInjected);
    }
    if let Some(i) = spec.containers.iter().position(|c| c.name == SIDECAR_CONTAINER) {
        return Err(format!(
            "spec.containers[{i}].name: {SIDECAR_CONTAINER:?} is the sidecar's name; rename the container"
        ));
    }
    check_template(zp)?;
    let mut taken: BTreeSet<String> =
        spec.volumes.iter().flatten().map(|v| v.name.clone()).collect();
    let mut free_name = |wanted: &str| {
        let name = (0..)
            .map(|n| if n == 0 { wanted.to_string() } else { format!("{wanted}-{n}") })
            .find(|n| !taken.contains(n))
            .unwrap_or_else(|| wanted.to_string());
        taken.insert(name.clone());
        name
    };

    let mut sidecar = sidecar_container(zp, opts);
    let mut volumes: Vec<Volume> = Vec::new();
    // CURVE volumes, renamed where the pod has a volume of the same name.
    let mut renamed = BTreeMap::new();
    for m in build::curve_mounts(&zp.spec) {
        for mut v in m.volumes {
            let name = free_name(&v.name);
            renamed.insert(v.name.clone(), name.clone());
            v.name = name;
            volumes.push(v);
        }
    }
    for mount in sidecar.volume_mounts.iter_mut().flatten() {
        if let Some(name) = renamed.get(&mount.name) {
            mount.name = name.clone();
        }
    }

    // The ipc directories: each shared through the volume an app container already mounts
    // there, else through our emptyDir, mounted into every app container that lacks it.
    let mut ops = Vec::new();
    let mut ipc_volume: Option<String> = None;
    let mut app_mounts: Vec<Vec<VolumeMount>> = vec![Vec::new(); spec.containers.len()];
    for dir in ipc_dirs(zp) {
        let theirs = spec
            .containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .find(|m| m.mount_path.trim_end_matches('/') == dir)
            .map(|m| m.name.clone());
        let volume = match theirs {
            Some(name) => name,
            None => ipc_volume
                .get_or_insert_with(|| {
                    let name = free_name(IPC_VOLUME);
                    volumes.push(Volume {
                        name: name.clone(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    });
                    name
                })
                .clone(),
        };
        let mount = VolumeMount { name: volume, mount_path: dir.clone(), ..VolumeMount::default() };
        for (i, c) in spec.containers.iter().enumerate() {
            let has =
                c.volume_mounts.iter().flatten().any(|m| m.mount_path.trim_end_matches('/') == dir);
            if !has {
                app_mounts[i].push(mount.clone());
            }
        }
        sidecar.volume_mounts.get_or_insert_with(Vec::new).push(mount);
    }

    let meta = &pod.metadata;
    let generation = zp.metadata.generation.unwrap_or_default();
    let injected = format!("{}, generation {generation}", zp.name_any());
    ops.push(match &meta.annotations {
        None => add("/metadata/annotations", json!({ INJECTED_ANNOTATION: injected })),
        Some(_) => {
            add(&format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), json!(injected))
        }
    });
    let container = to_value(&sidecar)?;
    ops.push(match &spec.init_containers {
        None => add("/spec/initContainers", json!([container])),
        Some(_) => add("/spec/initContainers/0", container),
    });
    if !volumes.is_empty() {
        let volumes = to_value(&volumes)?;
        match &spec.volumes {
            None => ops.push(add("/spec/volumes", volumes)),
            Some(_) => {
                for v in volumes.as_array().into_iter().flatten() {
                    ops.push(add("/spec/volumes/-", v.clone()));
                }
            }
        }
    }
    for (i, mounts) in app_mounts.iter().enumerate().filter(|(_, m)| !m.is_empty()) {
        let at = format!("/spec/containers/{i}/volumeMounts");
        if spec.containers[i].volume_mounts.is_none() {
            ops.push(add(&at, to_value(mounts)?));
        } else {
            for m in mounts {
                ops.push(add(&format!("{at}/-"), to_value(m)?));
            }
        }
    }
    ops.extend(security_ops(spec, zp));
    let grace = spec.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS)
        + build::drain_period(&zp.spec)
        + GRACE_MARGIN_SECONDS;
    ops.push(add("/spec/terminationGracePeriodSeconds", json!(grace)));
    Ok(Injection::Patch(ops))
}

/// What a sidecar template cannot hold, naming the field: a `selector` connect entry needs the
/// headless Service that only a Workload's reconcile makes.
pub fn check_template(zp: &ZmqProxy) -> Result<(), String> {
    if !zp.spec.is_sidecar() {
        return Err(format!(
            "ZmqProxy {} is not a sidecar template (spec.mode: Sidecar)",
            zp.name_any()
        ));
    }
    for (role, s) in zp.spec.sockets.data_sockets() {
        if let Some(i) = s.connect.iter().position(|c| c.selector.is_some()) {
            return Err(format!(
                "ZmqProxy {}: spec.{role}.connect[{i}].selector is not available to a sidecar (it needs the headless Service of a Workload); name a service or an endpoint",
                zp.name_any()
            ));
        }
    }
    Ok(())
}

/// The directories of the `ipc` paths, each once, in socket order.
pub fn ipc_dirs(zp: &ZmqProxy) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    for (_, s) in zp.spec.sockets.data_sockets() {
        let Some(path) = &s.ipc else { continue };
        let dir = match path.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((dir, _)) => dir.to_string(),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The proxy container as a sidecar: the workload's container (arguments, probes, CURVE mounts,
/// restricted security context) without what only the operator's own pods have (the steering
/// ConfigMap), ports named apart from the app's, and a startup probe.
fn sidecar_container(zp: &ZmqProxy, opts: &BuildOptions) -> Container {
    let namespace = zp.namespace().unwrap_or_default();
    let mut c = build::proxy_container(&zp.spec, opts, &build::connects(zp, &namespace));
    c.name = SIDECAR_CONTAINER.to_string();
    c.restart_policy = Some("Always".to_string());
    if let Some(args) = c.args.as_mut()
        && let Some(i) = args.iter().position(|a| a == "--pause-file")
    {
        args.drain(i..(i + 2).min(args.len()));
    }
    if let Some(mounts) = c.volume_mounts.as_mut() {
        mounts.retain(|m| m.name != build::STEERING_VOLUME);
    }
    // Port names are the pod's: prefixed, so an app's own `metrics` port stays its own.
    c.ports = c.ports.map(|ports| {
        ports
            .into_iter()
            .map(|p| ContainerPort { name: p.name.map(|n| format!("zmq-{n}")), ..p })
            .collect::<Vec<_>>()
    });
    let metrics = IntOrString::Int(zp.spec.metrics_port);
    for probe in [c.readiness_probe.as_mut(), c.liveness_probe.as_mut()].into_iter().flatten() {
        if let Some(get) = probe.http_get.as_mut() {
            get.port = metrics.clone();
        }
    }
    let (period, failures) = STARTUP_PROBE;
    c.startup_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".to_string()),
            port: metrics,
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Probe::default()
    });
    c
}

/// The user the sidecar runs as, and the group its CURVE key files are readable by.
/// A pod that names a user keeps it for the sidecar too (the app and the proxy then own and
/// reach the `ipc` socket alike); otherwise the sidecar runs as [`RUN_AS_USER`], as the
/// operator's own pods do. Secret files are mode 0440 owned by the pod's `fsGroup`, so a CURVE
/// sidecar needs one: the pod's, else the user's group.
fn security_ops(spec: &PodSpec, zp: &ZmqProxy) -> Vec<Value> {
    let pod = spec.security_context.as_ref();
    let mut ops = Vec::new();
    let has_user = pod.and_then(|s| s.run_as_user).is_some();
    let at = "/spec/initContainers/0/securityContext";
    if !has_user {
        ops.push(add(&format!("{at}/runAsUser"), json!(RUN_AS_USER)));
        ops.push(add(&format!("{at}/runAsGroup"), json!(RUN_AS_USER)));
    }
    let curve = !build::curve_mounts(&zp.spec).is_empty();
    if curve && pod.and_then(|s| s.fs_group).is_none() {
        let group = pod.and_then(|s| s.run_as_group.or(s.run_as_user)).unwrap_or(RUN_AS_USER);
        match pod {
            None => ops.push(add("/spec/securityContext", json!({ "fsGroup": group }))),
            Some(_) => ops.push(add("/spec/securityContext/fsGroup", json!(group))),
        }
    }
    ops
}

fn add(path: &str, value: Value) -> Value {
    json!({ "op": "add", "path": path, "value": value })
}

/// A JSON pointer token (RFC 6901): `~` and `/` escaped.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot serialise the sidecar: {e}"))
}

/// Applies `ops` to `doc` as the API server does, for the tests: `add` only (the only
/// operation [`inject`] writes), with `-` appending to an array.
pub fn apply(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().ok_or("op without a path")?;
        if op["op"] != "add" {
            return Err(format!("{path}: only add is supported"));
        }
        let (parent, last) = path.rsplit_once('/').ok_or("path without /")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).ok_or_else(|| format!("{path}: no parent"))?;
        let value = op["value"].clone();
        match target {
            Value::Object(map) => {
                map.insert(last, value);
            }
            Value::Array(items) if last == "-" => items.push(value),
            Value::Array(items) => {
                let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
                if i > items.len() {
                    return Err(format!("{path}: index past the end"));
                }
                items.insert(i, value);
            }
            _ => return Err(format!("{path}: parent is not an object or array")),
        }
    }
    Ok(())
}
