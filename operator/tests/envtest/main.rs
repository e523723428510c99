//! The integration tier: the operator against a real kube-apiserver and etcd found through
//! `$KUBEBUILDER_ASSETS` (the envtest convention). It starts one control plane, installs
//! crds/zmqproxy.yaml and runs the controller in-process, then runs each scenario as its own test
//! case in its own namespace, so one failure does not hide the others: the examples' lives
//! (children with owner references, status conditions, the scale subresource, repaired drift,
//! read-only resyncs, events), the API server refusing invalid objects (the `invalid-*.yaml`
//! examples and one object per rule) with the field path and message each rule promises, leader
//! election on a Lease, and the placement fields, `spec.podTemplate` and the PodDisruptionBudget.
//!
//! No kubelet or controller-manager runs, so Deployments never get pods and nothing is garbage
//! collected: the test first sees Ready=False (reason Progressing), then writes the Deployment's
//! status itself to simulate a finished rollout and sees Ready=True, creates the pods a
//! Deployment would and marks them Ready through their status subresource (as a kubelet does) to
//! see the Federated condition follow, and it only ever waits for deletions the operator makes
//! itself (the StatefulSet an earlier version left, a federation's Service).
//!
//! The harness is libtest-mimic (`harness = false`): the scenarios share the control plane and
//! the controller (one of them restarts the API server, another waits for the controller to go
//! quiet), so they run one at a time, in the order listed, on one tokio runtime; the control
//! plane is stopped after the last one however they ended. Without KUBEBUILDER_ASSETS the
//! scenarios are listed as ignored, with the reason printed; the checks that need no API server
//! run everywhere.

mod launcher;
mod sidecar;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::cel::Validator;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use launcher::ControlPlane;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use zmq_proxy_api::connect::words as connect_words;
use zmq_proxy_api::manifest::words as socket_words;
use zmq_proxy_api::options::{NODROP_CAPTURE_REFUSAL, nodrop_type_refusal};
use zmq_proxy_api::security::words;
use zmq_proxy_operator::build::BuildOptions;
use zmq_proxy_operator::context::Context;
use zmq_proxy_operator::controller::run as run_controller;
use zmq_proxy_operator::crd::{
    DEFAULT_METRICS_PORT, GRACE_PERIOD_TOO_SHORT, MAX_NAME_LEN, PDB_BOTH_BOUNDS, ZmqProxy,
    selector_labels, selector_string,
};
use zmq_proxy_operator::leader::{LeaderElector, LeaseConfig};
use zmq_proxy_operator::metrics::Metrics;
use zmq_proxy_operator::reconcile::STEERING_GENERATION;
use zmq_proxy_operator::status::{self, DEGRADED, PROGRESSING, READY};

const IMAGE: &str = "ghcr.io/zmq-proxy-operator/zmq-proxy:envtest";
const DEADLINE: Duration = Duration::from_secs(60);
/// A CURVE public key (Z85), for specs whose sockets connect as CURVE clients.
const Z85: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

/// Polls `probe` until it returns Some or `DEADLINE` passes; the error names `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + DEADLINE;
    let mut last: String;
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => last = "condition not met yet".to_string(),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs crds/zmqproxy.yaml and waits until it is established.
async fn install_crd(client: &Client) -> Result<(), String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/zmqproxy.yaml");
    let text = std::fs::read_to_string(path).map_err(|e| format!("crds/zmqproxy.yaml: {e}"))?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).map_err(|e| format!("the CRD does not parse: {e}"))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // A rule that does not compile, or costs too much, makes the API server refuse the CRD here.
    crds.create(&PostParams::default(), &crd)
        .await
        .map_err(|e| format!("the API server refuses the CRD: {e}"))?;
    let established =
        await_condition(crds, "zmqproxies.zmqproxy.io", conditions::is_crd_established());
    tokio::time::timeout(DEADLINE, established)
        .await
        .map_err(|_| format!("the CRD was not established within {DEADLINE:?}"))?
        .map_err(|e| format!("watching the CRD: {e}"))?;
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace created");
}

/// A ZmqProxy document of examples/*.yaml.
struct Example {
    file: String,
    manifest: Value,
    /// For an example that exists to be refused (`invalid-*.yaml`): the field and the message
    /// its comment promises the API server answers with.
    refusal: Option<Refusal>,
}

/// What a refused write must name: the field path (None for a rule on the object itself, which
/// the API server reports without a field) and text of that field's message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refusal {
    field: Option<String>,
    message: String,
}

impl Refusal {
    fn at(field: &str, message: &str) -> Refusal {
        Refusal { field: Some(field.to_string()), message: message.to_string() }
    }
}

/// The refusal an example's comment describes after `# The expected message:` (the indented
/// comment lines that follow, joined), reduced to the field path and the message proper: the
/// `Invalid value: "object": ` between them is the API server's rendering, not the promise.
fn documented_refusal(text: &str) -> Option<Refusal> {
    let mut lines = text.lines().skip_while(|l| !l.contains("The expected message:")).skip(1);
    let mut quoted = Vec::new();
    for line in lines.by_ref() {
        match line.strip_prefix("#  ") {
            Some(rest) if !rest.trim().is_empty() => quoted.push(rest.trim()),
            _ => break,
        }
    }
    let quoted = quoted.join(" ");
    let (_, after) = quoted.split_once(" is invalid: ")?;
    let (field, detail) = after.split_once(": ")?;
    let message = match detail.strip_prefix("Invalid value: ") {
        Some(valued) => valued.split_once(": ")?.1,
        None => detail,
    };
    Some(Refusal::at(field, message))
}

/// Every ZmqProxy document of examples/*.yaml (other kinds and files are skipped).
fn examples() -> Vec<Example> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("example readable");
        let file = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let refusal = file.starts_with("invalid").then(|| {
            documented_refusal(&text).unwrap_or_else(|| {
                panic!("{file}: an invalid example must quote the API server's refusal after `# The expected message:`")
            })
        });
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = <Value as serde::Deserialize>::deserialize(doc) else { continue };
            if value["kind"] == "ZmqProxy" && value["apiVersion"] == "zmqproxy.io/v1alpha1" {
                found.push(Example {
                    file: file.clone(),
                    manifest: value,
                    refusal: refusal.clone(),
                });
            }
        }
    }
    found
}

/// Checks that `result` is the API server's refusal of an invalid object (422, reason Invalid)
/// with a cause at `expected.field` whose message contains `expected.message`, whatever the
/// server renders between them (`Invalid value: "object": `, `Invalid value: 0: `,
/// `Unsupported value: "FOO": `). Ok holds the server's message, Err what is wrong.
fn check_refused<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    expected: &Refusal,
) -> Result<String, String> {
    let status = match result {
        Ok(accepted) => return Err(format!("the API server accepted it: {accepted:?}")),
        Err(kube::Error::Api(status)) => status,
        Err(e) => return Err(format!("unexpected error {e}")),
    };
    let message = &status.message;
    if status.code != 422 || status.reason != "Invalid" {
        return Err(format!("{} {} instead of 422 Invalid: {message}", status.code, status.reason));
    }
    let causes = status.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
    let named = causes.iter().any(|c| {
        expected.field.as_ref().is_none_or(|f| &c.field == f)
            && c.message.contains(&expected.message)
    });
    let field_in_message =
        expected.field.as_ref().is_none_or(|f| message.contains(&format!("{f}: ")));
    if !named || !field_in_message || !message.contains(&expected.message) {
        return Err(format!(
            "no cause at {:?} saying {:?}; causes {causes:?}; message: {message}",
            expected.field, expected.message
        ));
    }
    Ok(message.clone())
}

/// [`check_refused`] as an assertion; returns the server's message.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
    expected: &Refusal,
) -> String {
    check_refused(result, expected).unwrap_or_else(|problem| panic!("{what}: {problem}"))
}

fn condition(zp: &ZmqProxy, type_: &str) -> Option<(String, String, Option<i64>, String)> {
    let c = status::condition(zp.status.as_ref()?, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.observed_generation, c.message.clone()))
}

fn field_manager() -> PatchParams {
    PatchParams::apply("envtest-user").force()
}

/// Simulates the Deployment controller and kubelet: every pod of the current template ready.
async fn simulate_ready_rollout(deployments: &Api<Deployment>, name: &str) {
    let d = deployments.get(name).await.expect("deployment");
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation,
        "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("deployment status patched");
}

/// Creates pod `pod` of the ZmqProxy `name` as its Deployment would (labels, owner kind), not
/// ready; `ready` then sets its Ready condition as a kubelet does.
async fn create_pod(pods: &Api<Pod>, name: &str, pod: &str, owner_kind: &str) {
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "labels": {
            "app.kubernetes.io/name": "zmq-proxy", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "zmq-proxy-operator"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": name,
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"containers": [{"name": "proxy", "image": IMAGE}]},
    });
    let object: Pod = serde_json::from_value(object).expect("pod");
    pods.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("pod {pod}: {e}"));
}

async fn set_ready(pods: &Api<Pod>, pod: &str, ready: bool) {
    let status = json!({"status": {"conditions": [{"type": "Ready",
        "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("pod {pod} status: {e}"));
}

async fn wait_for_status(
    zps: &Api<ZmqProxy>,
    name: &str,
    what: &str,
    check: impl Fn(&ZmqProxy) -> bool,
) -> ZmqProxy {
    eventually(what, || async {
        let zp = zps.get(name).await.map_err(|e| e.to_string())?;
        Ok(check(&zp).then_some(zp))
    })
    .await
}

/// The example through its whole life: children, status, readiness, drift, read-only resync,
/// scaling out and back.
async fn example_lifecycle(
    client: &Client,
    metrics: &Metrics,
    namespace: &str,
    file: &str,
    mut manifest: Value,
) {
    eprintln!("example {file} in namespace {namespace}");
    manifest["metadata"]["namespace"] = json!(namespace);
    let name = manifest["metadata"]["name"].as_str().expect("example has a name").to_string();
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let zp = zps
        .patch(&name, &field_manager(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("{file}: the API server accepts the example: {e}"));
    let uid = zp.uid().expect("uid");
    let generation = zp.metadata.generation;

    // Children with a controller owner reference to the ZmqProxy.
    let deployment = eventually("the Deployment", || async {
        deployments.get_opt(&name).await.map_err(|e| e.to_string())
    })
    .await;
    let service = eventually("the Service", || async {
        services.get_opt(&name).await.map_err(|e| e.to_string())
    })
    .await;
    // The API server accepted the rolling update that starts a pod before one drains.
    let strategy = deployment.spec.clone().and_then(|s| s.strategy).expect("strategy");
    let rolling = strategy.rolling_update.expect("rollingUpdate");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (Some(IntOrString::Int(1)), Some(IntOrString::Int(0)))
    );
    for (kind, meta) in [("Deployment", deployment.meta()), ("Service", service.meta())] {
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{kind} owners");
        assert_eq!(owners[0].uid, uid, "{kind} is owned by the ZmqProxy");
        assert_eq!(owners[0].controller, Some(true), "{kind} is controlled by the ZmqProxy");
        assert_eq!(owners[0].kind, "ZmqProxy");
    }
    let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec");
    secured_pod_mounts_its_keys(file, &manifest, &pod);
    let args = pod.containers[0].args.clone().unwrap_or_default();
    let frontend_type = manifest["spec"]["frontend"]["type"].as_str().expect("frontend type");
    let frontend_port = manifest["spec"]["frontend"]["port"].as_i64().expect("frontend port");
    assert!(
        args.windows(2).any(|w| w[0] == "--frontend-type" && w[1] == frontend_type),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--frontend-bind" && w[1] == format!("tcp://*:{frontend_port}")),
        "{args:?}"
    );
    let service_ports: Vec<i32> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert!(service_ports.contains(&(frontend_port as i32)), "{service_ports:?}");

    let replicas = manifest["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    if replicas == 0 {
        wait_for_status(&zps, &name, "Ready=False/ScaledToZero", |zp| {
            condition(zp, READY).is_some_and(|(s, r, ..)| s == "False" && r == "ScaledToZero")
        })
        .await;
        return;
    }
    // No pods ever run here: Ready=False because the rollout is in progress.
    let zp = wait_for_status(&zps, &name, "Ready=False/Progressing", |zp| {
        condition(zp, READY)
            .is_some_and(|(s, r, g, _)| s == "False" && r == "Progressing" && g == generation)
            && condition(zp, PROGRESSING).is_some_and(|(s, ..)| s == "True")
    })
    .await;
    let status = zp.status.clone().expect("status");
    assert_eq!(status.observed_generation, generation);
    let mechanism = |socket: &str| {
        if manifest["spec"][socket].get("security").is_some() { "CURVE" } else { "NULL" }
    };
    let reported = serde_json::to_value(&status.security).expect("status.security");
    assert_eq!(reported["frontend"], mechanism("frontend"), "{file}: {reported}");
    assert_eq!(reported["backend"], mechanism("backend"), "{file}: {reported}");
    assert_eq!(condition(&zp, DEGRADED).map(|c| c.0), Some("False".to_string()));
    assert_eq!(
        status.endpoints.as_ref().and_then(|e| e.frontend.clone()),
        Some(format!("tcp://{name}.{namespace}.svc:{frontend_port}"))
    );

    // A finished rollout makes it Ready, which is what `kubectl wait --for=condition=Ready` reads.
    simulate_ready_rollout(&deployments, &name).await;
    let zp = wait_for_status(&zps, &name, "Ready=True", |zp| {
        condition(zp, READY).is_some_and(|(s, r, ..)| s == "True" && r == "AllReplicasReady")
    })
    .await;
    assert_eq!(zp.status.as_ref().map(|s| s.ready_replicas), Some(replicas));
    assert_eq!(zp.status.as_ref().map(|s| s.replicas), Some(replicas));
    // The scale subresource (`kubectl scale`, a HorizontalPodAutoscaler) reads the paths the CRD
    // names: .spec.replicas, .status.replicas and the selector string in .status.selector.
    let scale = zps.get_scale(&name).await.expect("the scale subresource");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(replicas));
    let scale_status = scale.status.expect("scale status");
    assert_eq!(scale_status.replicas, replicas);
    assert_eq!(scale_status.selector, Some(selector_string(&name)));

    // A resync of an unchanged object writes nothing: touch the ZmqProxy's metadata (a watch
    // event, so a reconcile) and compare the children's resourceVersions afterwards.
    let before = (
        deployments.get(&name).await.expect("deployment").resource_version(),
        services.get(&name).await.expect("service").resource_version(),
        zps.get(&name).await.expect("zmqproxy").status,
    );
    let reconciles = metrics.reconcile_count();
    let touch = json!({"metadata": {"annotations": {"envtest/touched": "1"}}});
    zps.patch(&name, &PatchParams::default(), &Patch::Merge(&touch)).await.expect("annotated");
    eventually("a reconcile after the touch", || async {
        Ok((metrics.reconcile_count() > reconciles).then_some(()))
    })
    .await;
    // Then until the controller is quiet (no reconcile for a second), so the touch's reconcile,
    // not an earlier one, is the one whose writes are checked.
    let mut last = (metrics.reconcile_count(), Instant::now());
    eventually("the controller to go quiet", || {
        let now = metrics.reconcile_count();
        if now != last.0 {
            last = (now, Instant::now());
        }
        let quiet = last.1.elapsed() >= Duration::from_secs(1);
        async move { Ok(quiet.then_some(())) }
    })
    .await;
    let after = (
        deployments.get(&name).await.expect("deployment").resource_version(),
        services.get(&name).await.expect("service").resource_version(),
        zps.get(&name).await.expect("zmqproxy").status,
    );
    assert_eq!(before, after, "an unchanged resync must not write children or status");

    // Drift: a deleted Service comes back; a hand-scaled Deployment is scaled back.
    let old_uid = services.get(&name).await.expect("service").uid();
    services.delete(&name, &Default::default()).await.expect("service deleted");
    eventually("the Service to be recreated", || async {
        let s = services.get_opt(&name).await.map_err(|e| e.to_string())?;
        Ok(s.filter(|s| s.uid() != old_uid))
    })
    .await;
    let scale = json!({"spec": {"replicas": replicas + 4}});
    deployments
        .patch(
            &name,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace},
                "spec": scale["spec"],
            })),
        )
        .await
        .expect("deployment scaled by someone else");
    eventually("the Deployment to be scaled back", || async {
        let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
        Ok((d.spec.and_then(|s| s.replicas) == Some(replicas)).then_some(()))
    })
    .await;

    // Scaling out (through the scale subresource, as `kubectl scale` does) makes a federation:
    // its key in a Secret of its own, its Service, the flags; the Ready message says so.
    let scaled = zps
        .patch_scale(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scaled to 3 through the scale subresource");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(zps.get(&name).await.expect("zmqproxy").spec.replicas, 3);
    let federation = format!("{name}-federation");
    let deployment = eventually("the Deployment scaled to 3", || async {
        let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
        Ok((d.spec.as_ref().and_then(|s| s.replicas) == Some(3)).then_some(d))
    })
    .await;
    let args = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    let peers = format!("tcp://{federation}.{namespace}.svc:5570");
    assert!(args.windows(2).any(|w| w[0] == "--federation-peers" && w[1] == peers), "{args:?}");
    let peer_service = eventually("the federation's Service", || async {
        services.get_opt(&federation).await.map_err(|e| e.to_string())
    })
    .await;
    let spec = peer_service.spec.expect("spec");
    assert_eq!(
        (spec.cluster_ip.as_deref(), spec.publish_not_ready_addresses),
        (Some("None"), Some(true))
    );
    let secret = secrets.get(&federation).await.expect("the federation's Secret");
    assert_eq!(
        secret.metadata.owner_references.as_ref().map(|o| o[0].uid.clone()),
        Some(uid.clone())
    );
    assert_eq!(secret.immutable, Some(true));
    wait_for_status(&zps, &name, "the Ready message to say the replicas federate", |zp| {
        condition(zp, READY)
            .is_some_and(|(_, _, g, m)| g == zp.metadata.generation && m.contains("federation"))
    })
    .await;
    // Ready pods without an address to ask (no kubelet here): the condition says so.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for i in 0..3 {
        create_pod(&pods, &name, &format!("{name}-{i}"), "ReplicaSet").await;
        set_ready(&pods, &format!("{name}-{i}"), true).await;
    }
    let zp = wait_for_status(&zps, &name, "Federated=False/ProxyUnreachable", |zp| {
        condition(zp, status::FEDERATED).is_some_and(|(s, r, _, m)| {
            s == "False" && r == "ProxyUnreachable" && m.contains("no pod IP")
        })
    })
    .await;
    assert_eq!(zp.status.and_then(|s| s.federation).map(|f| f.members), Some(0));
    zps.patch(
        &name,
        &field_manager(),
        &Patch::Apply(&{
            let mut m = manifest.clone();
            m["spec"]["replicas"] = json!(1);
            m
        }),
    )
    .await
    .expect("scaled back to 1");
    // One replica: no federation; its Service goes, its key stays for the next scale-up.
    eventually("the federation's Service to be deleted", || async {
        let s = services.get_opt(&federation).await.map_err(|e| e.to_string())?;
        Ok(s.is_none().then_some(()))
    })
    .await;
    wait_for_status(&zps, &name, "no Federated condition at one replica", |zp| {
        condition(zp, status::FEDERATED).is_none()
            && zp.status.as_ref().is_some_and(|s| s.federation.is_none())
    })
    .await;
    let kept = secrets.get(&federation).await.expect("the Secret is kept");
    assert_eq!(kept.uid(), secret.uid());
    for i in 0..3 {
        pods.delete(&format!("{name}-{i}"), &Default::default()).await.expect("pod deleted");
    }

    // Events tell what the operator did; a reconcile publishes them after its writes.
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    eventually("Created and Updated events", || async {
        let listed = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let reasons: Vec<String> = listed
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
            .filter_map(|e| e.reason.clone())
            .collect();
        let all = ["Created", "Updated"].iter().all(|r| reasons.iter().any(|x| x == r));
        if all { Ok(Some(())) } else { Err(format!("reasons so far: {reasons:?}")) }
    })
    .await;
}

/// A secured example's Deployment, as the API server stored it: for every socket with a
/// `security.curve` section, its key Secret and allow-list mounted read-only as whole volumes
/// (no subPath), group-readable files, the pod's fsGroup the proxy's group, and the flags naming
/// the mounted paths. Nothing for an example without security.
fn secured_pod_mounts_its_keys(
    file: &str,
    manifest: &Value,
    pod: &k8s_openapi::api::core::v1::PodSpec,
) {
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    let mut secured = 0;
    for socket in ["frontend", "backend", "capture", "control"] {
        let Some(curve) = manifest["spec"][socket].get("security").map(|s| &s["curve"]) else {
            assert!(
                !args.iter().any(|a| a.starts_with(&format!("--{socket}-curve"))),
                "{file}: {socket} is NULL: {args:?}"
            );
            continue;
        };
        secured += 1;
        let volume = |name: &str| {
            pod.volumes
                .iter()
                .flatten()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("{file}: no volume {name}"))
                .clone()
        };
        let key = volume(&format!("curve-{socket}-server-key")).secret.expect("a Secret volume");
        assert_eq!(key.secret_name.as_deref(), curve["serverKey"]["secretName"].as_str());
        assert_eq!(key.default_mode, Some(0o440), "{file}");
        let dir = format!("/etc/zmq-proxy/curve/{socket}");
        assert!(
            args.windows(2).any(|w| w[0] == format!("--{socket}-curve-server-key-file")
                && w[1] == format!("{dir}/server-key/server_secret")),
            "{file}: {args:?}"
        );
        if let Some(list) = curve.get("authorizedKeys") {
            let v = volume(&format!("curve-{socket}-authorized-keys"));
            let name = match (v.secret, v.config_map) {
                (Some(s), None) => s.secret_name,
                (None, Some(c)) => Some(c.name),
                other => panic!("{file}: allow-list volume {other:?}"),
            };
            let wanted =
                list.get("configMapName").or(list.get("secretName")).and_then(Value::as_str);
            assert_eq!(name.as_deref(), wanted, "{file}: {socket} allow-list");
            assert!(
                args.windows(2).any(|w| w[0] == format!("--{socket}-curve-authorized-keys")
                    && w[1] == format!("{dir}/authorized-keys")),
                "{file}: {args:?}"
            );
        }
        for m in container.volume_mounts.iter().flatten().filter(|m| m.mount_path.starts_with(&dir))
        {
            assert_eq!(m.read_only, Some(true), "{file}: {m:?}");
            assert_eq!(m.sub_path, None, "{file}: a subPath mount never sees updates: {m:?}");
        }
    }
    let fs_group = pod.security_context.as_ref().and_then(|c| c.fs_group);
    if secured > 0 {
        assert_eq!(fs_group, Some(65532), "{file}: the mounted keys' group is the proxy's");
        eprintln!(
            "{file}: {secured} CURVE socket(s), volumes {:?}",
            pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect::<Vec<_>>()
        );
    } else if manifest["spec"]["replicas"].as_i64().unwrap_or(1) > 1 {
        // A federation: the steering ConfigMap and the federation's key, each mounted whole,
        // the key's group the proxy's.
        assert_eq!(fs_group, Some(65532), "{file}: the mounted key's group is the proxy's");
        let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["steering", "federation-key"], "{file}");
    } else {
        assert_eq!(fs_group, None, "{file}: an unsecured pod is as before");
        // Only the steering ConfigMap (spec.paused), mounted whole.
        let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["steering"], "{file}");
        let mounts: Vec<(&str, Option<&str>)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
            .collect();
        assert_eq!(mounts, [("/etc/zmq-proxy/steering", None)], "{file}");
    }
}

/// (what is wrong, the spec, the field the API server must name and text of its message)
fn invalid_specs() -> Vec<(&'static str, Value, Refusal)> {
    let q = |extra: Value| {
        let mut spec = json!({"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        spec
    };
    // Static per clash: a port number in the message would need string(), which the API
    // server's cost estimator refuses.
    let clash = |other: &str| format!("port is already used by {other}; ports must be distinct");
    vec![
        // CEL rules of the spec, each with its fieldPath and messageExpression.
        (
            "unsupported pair",
            q(json!({"backend": {"type": "PUSH", "port": 5556}})),
            Refusal::at(
                "spec.backend.type",
                "unsupported socket pair ROUTER/PUSH (frontend/backend); allowed pairs: ROUTER/DEALER, DEALER/ROUTER, XSUB/XPUB, XPUB/XSUB, SUB/PUB, PUB/SUB, PULL/PUSH, PUSH/PULL",
            ),
        ),
        (
            "relative ipc path",
            q(json!({"backend": {"type": "DEALER", "ipc": "zmq/out"}})),
            Refusal::at("spec.backend.ipc", socket_words::IPC_PATH),
        ),
        (
            "PAIR capture",
            q(json!({"capture": {"type": "PAIR", "port": 5557}})),
            Refusal::at(
                "spec.capture.type",
                "capture type PAIR is not supported: PAIR talks to exactly one peer and this proxy has no PAIR socket; use one of PUB, DEALER, PUSH",
            ),
        ),
        (
            "ROUTER capture",
            q(json!({"capture": {"type": "ROUTER", "port": 5557}})),
            Refusal::at(
                "spec.capture.type",
                "capture type ROUTER is not supported; use one of PUB, DEALER, PUSH",
            ),
        ),
        (
            "duplicate port",
            q(json!({"backend": {"type": "DEALER", "port": 5555}})),
            Refusal::at("spec.backend.port", &clash("frontend")),
        ),
        (
            "capture on a socket port",
            q(json!({"capture": {"type": "PUB", "port": 5556}})),
            Refusal::at("spec.capture.port", &clash("backend")),
        ),
        (
            "control on a socket port",
            q(json!({"control": {"port": 5556}})),
            Refusal::at("spec.control.port", &clash("backend")),
        ),
        (
            "metrics on a socket port",
            q(json!({"metricsPort": 5555})),
            Refusal::at("spec.metricsPort", &clash("frontend")),
        ),
        (
            "default metrics port on a socket",
            q(json!({"frontend": {"type": "ROUTER", "port": 9090}})),
            Refusal::at("spec.metricsPort", &clash("frontend")),
        ),
        // The OpenAPI schema: enums, ranges, required fields.
        (
            "unknown socket type",
            q(json!({"frontend": {"type": "STREAM", "port": 5555}})),
            Refusal::at("spec.frontend.type", "Unsupported value: \"STREAM\""),
        ),
        (
            "port 0",
            q(json!({"frontend": {"type": "ROUTER", "port": 0}})),
            Refusal::at("spec.frontend.port", "should be greater than or equal to 1"),
        ),
        (
            "port 65536",
            q(json!({"backend": {"type": "DEALER", "port": 65536}})),
            Refusal::at("spec.backend.port", "should be less than or equal to 65535"),
        ),
        (
            "heartbeat TTL not in deciseconds",
            q(json!({"frontend": {"type": "ROUTER", "port": 5555, "heartbeatTtl": 150}})),
            Refusal::at("spec.frontend.heartbeatTtl", "should be a multiple of 100"),
        ),
        (
            "heartbeat TTL past libzmq's 16-bit wrap",
            q(json!({"backend": {"type": "DEALER", "port": 5556, "heartbeatTtl": 65600}})),
            Refusal::at("spec.backend.heartbeatTtl", "should be less than or equal to 65500"),
        ),
        (
            "negative heartbeat interval",
            q(json!({"frontend": {"type": "ROUTER", "port": 5555, "heartbeatInterval": -1}})),
            Refusal::at("spec.frontend.heartbeatInterval", "should be greater than or equal to 0"),
        ),
        (
            "negative replicas",
            q(json!({"replicas": -1})),
            Refusal::at("spec.replicas", "should be greater than or equal to 0"),
        ),
        (
            "drain timeout above an hour",
            q(json!({"drainTimeoutSeconds": 3601})),
            Refusal::at("spec.drainTimeoutSeconds", "should be less than or equal to 3600"),
        ),
        (
            "missing backend",
            json!({"frontend": {"type": "ROUTER", "port": 5555}}),
            Refusal::at("spec.backend", "Required value"),
        ),
        (
            "bad service type",
            q(json!({"serviceType": "ExternalName"})),
            Refusal::at("spec.serviceType", "Unsupported value: \"ExternalName\""),
        ),
        // Service IP families: the CEL rule, the enums and the list bounds.
        (
            "SingleStack with two IP families",
            q(json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]})),
            Refusal::at(
                "spec.ipFamilies",
                "a SingleStack Service has one IP family; use PreferDualStack or RequireDualStack for two",
            ),
        ),
        (
            "unknown IP family policy",
            q(json!({"ipFamilyPolicy": "DualStack"})),
            Refusal::at("spec.ipFamilyPolicy", "Unsupported value: \"DualStack\""),
        ),
        (
            "unknown IP family",
            q(json!({"ipFamilies": ["IPv5"]})),
            Refusal::at("spec.ipFamilies[0]", "Unsupported value: \"IPv5\""),
        ),
        (
            "the same IP family twice",
            q(json!({"ipFamilies": ["IPv6", "IPv6"]})),
            Refusal::at("spec.ipFamilies", "an IP family is listed twice"),
        ),
        (
            "three IP families",
            q(json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6", "IPv4"]})),
            Refusal::at("spec.ipFamilies", "Too many"),
        ),
        // Security: CEL rules of the curve and authorizedKeys sections, each blaming
        // its field, then the schema's required fields and the bounds of every new string.
        (
            "CURVE with neither an allow-list nor allowAnyClient",
            secured("frontend", json!({"serverKey": {"secretName": "k"}})),
            Refusal::at("spec.frontend.security.curve.authorizedKeys", words::ALLOW_LIST_REQUIRED),
        ),
        (
            "CURVE control socket with neither an allow-list nor allowAnyClient",
            q(
                json!({"control": {"port": 5558, "security": {"curve": {"serverKey": {"secretName": "k"}, "allowAnyClient": false}}}}),
            ),
            Refusal::at("spec.control.security.curve.authorizedKeys", words::ALLOW_LIST_REQUIRED),
        ),
        (
            "CURVE with an allow-list and allowAnyClient",
            secured(
                "backend",
                json!({"serverKey": {"secretName": "k"}, "allowAnyClient": true, "authorizedKeys": {"configMapName": "c"}}),
            ),
            Refusal::at("spec.backend.security.curve.allowAnyClient", words::ALLOW_LIST_AND_ANY),
        ),
        (
            "allow-list naming neither a Secret nor a ConfigMap",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "k"}, "authorizedKeys": {"key": "clients.txt"}}),
            ),
            Refusal::at("spec.frontend.security.curve.authorizedKeys", words::SOURCE_REQUIRED),
        ),
        (
            "allow-list naming a Secret and a ConfigMap",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "k"}, "authorizedKeys": {"secretName": "s", "configMapName": "c"}}),
            ),
            Refusal::at(
                "spec.frontend.security.curve.authorizedKeys.configMapName",
                words::SOURCE_BOTH,
            ),
        ),
        (
            "CURVE without a key Secret",
            secured("frontend", json!({"allowAnyClient": true})),
            Refusal::at("spec.frontend.security.curve.serverKey", "Required value"),
        ),
        (
            "key Secret without a name",
            secured(
                "frontend",
                json!({"serverKey": {"key": "server_secret"}, "allowAnyClient": true}),
            ),
            Refusal::at("spec.frontend.security.curve.serverKey.secretName", "Required value"),
        ),
        (
            "security without a mechanism",
            q(json!({"frontend": {"type": "ROUTER", "port": 5555, "security": {}}})),
            Refusal::at("spec.frontend.security.curve", "Required value"),
        ),
        (
            "Secret name that is not a DNS-1123 subdomain",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "Server_Key"}, "allowAnyClient": true}),
            ),
            Refusal::at("spec.frontend.security.curve.serverKey.secretName", "should match"),
        ),
        (
            "Secret name over 253 characters",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "a".repeat(254)}, "allowAnyClient": true}),
            ),
            Refusal::at("spec.frontend.security.curve.serverKey.secretName", "Too long"),
        ),
        (
            "Secret key starting with ..",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "k", "key": "..data"}, "allowAnyClient": true}),
            ),
            Refusal::at("spec.frontend.security.curve.serverKey.key", "should match"),
        ),
        (
            "ConfigMap key with a slash",
            secured(
                "frontend",
                json!({"serverKey": {"secretName": "k"}, "authorizedKeys": {"configMapName": "c", "key": "a/b"}}),
            ),
            Refusal::at("spec.frontend.security.curve.authorizedKeys.key", "should match"),
        ),
        (
            "ConfigMap name over 253 characters",
            secured(
                "backend",
                json!({"serverKey": {"secretName": "k"}, "authorizedKeys": {"configMapName": "c".repeat(254)}}),
            ),
            Refusal::at("spec.backend.security.curve.authorizedKeys.configMapName", "Too long"),
        ),
        // Placement and overrides.
        (
            "grace period shorter than the default lame duck and drain",
            q(json!({"terminationGracePeriodSeconds": 9})),
            Refusal::at("spec.terminationGracePeriodSeconds", GRACE_PERIOD_TOO_SHORT),
        ),
        (
            "grace period shorter than a long drain",
            q(json!({"drainTimeoutSeconds": 60, "terminationGracePeriodSeconds": 30})),
            Refusal::at("spec.terminationGracePeriodSeconds", GRACE_PERIOD_TOO_SHORT),
        ),
        (
            "PodDisruptionBudget with both bounds",
            q(
                json!({"replicas": 2, "podDisruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}}),
            ),
            Refusal::at("spec.podDisruptionBudget.minAvailable", PDB_BOTH_BOUNDS),
        ),
        (
            "PodDisruptionBudget percentage above 100",
            q(json!({"podDisruptionBudget": {"maxUnavailable": "150%"}})),
            Refusal::at("spec.podDisruptionBudget.maxUnavailable", "should match"),
        ),
        (
            "negative PodDisruptionBudget count",
            q(json!({"podDisruptionBudget": {"minAvailable": -1}})),
            Refusal::at(
                "spec.podDisruptionBudget.minAvailable",
                "should be greater than or equal to 0",
            ),
        ),
        (
            "PriorityClass name over 253 characters",
            q(json!({"priorityClassName": "p".repeat(254)})),
            Refusal::at("spec.priorityClassName", "Too long"),
        ),
        // Socket options: nodrop by CEL with the proxy's words, bounds by schema.
        (
            "nodrop on a DEALER",
            q(json!({"backend": {"type": "DEALER", "port": 5556, "nodrop": true}})),
            Refusal::at("spec.backend.nodrop", &nodrop_type_refusal("DEALER")),
        ),
        (
            "nodrop on a ROUTER",
            q(json!({"frontend": {"type": "ROUTER", "port": 5555, "nodrop": true}})),
            Refusal::at("spec.frontend.nodrop", &nodrop_type_refusal("ROUTER")),
        ),
        (
            "nodrop on the capture",
            q(json!({"capture": {"type": "PUB", "port": 5557, "nodrop": true}})),
            Refusal::at("spec.capture.nodrop", NODROP_CAPTURE_REFUSAL),
        ),
        (
            "negative sndhwm",
            q(json!({"frontend": {"type": "ROUTER", "port": 5555, "sndhwm": -1}})),
            Refusal::at("spec.frontend.sndhwm", "should be greater than or equal to 0"),
        ),
        // Connecting sockets: each entry is one of service, selector and endpoint, and the
        // socket binds or connects, its CURVE keys following what it does.
        (
            "a connect entry with a service and an endpoint",
            q(
                json!({"backend": {"type": "DEALER", "connect": [{"service": "w", "endpoint": "tcp://w:1"}]}}),
            ),
            Refusal::at("spec.backend.connect[0]", connect_words::EXACTLY_ONE),
        ),
        (
            "a service without a port",
            q(json!({"backend": {"type": "DEALER", "connect": [{"service": "workers"}]}})),
            Refusal::at("spec.backend.connect[0].port", connect_words::PORT_REQUIRED),
        ),
        (
            "an endpoint with a port",
            q(
                json!({"backend": {"type": "DEALER", "connect": [{"endpoint": "tcp://w:1", "port": 2}]}}),
            ),
            Refusal::at("spec.backend.connect[0].port", connect_words::PORT_WITH_ENDPOINT),
        ),
        (
            "an endpoint that is not tcp://HOST:PORT",
            q(json!({"backend": {"type": "DEALER", "connect": [{"endpoint": "tcp://w:70000"}]}})),
            Refusal::at("spec.backend.connect[0].endpoint", connect_words::ENDPOINT_FORM),
        ),
        (
            "an empty selector",
            q(json!({"backend": {"type": "DEALER", "connect": [{"selector": {}, "port": 6000}]}})),
            Refusal::at(
                "spec.backend.connect[0].selector.matchLabels",
                connect_words::SELECTOR_EMPTY,
            ),
        ),
        (
            "a socket that neither binds nor connects",
            q(json!({"backend": {"type": "DEALER"}})),
            Refusal::at("spec.backend.port", &socket_words::binds_or_connects("backend")),
        ),
        (
            "a capture that neither binds nor connects",
            q(json!({"capture": {"type": "PUB", "connect": []}})),
            Refusal::at("spec.capture.port", &socket_words::binds_or_connects("capture")),
        ),
        (
            "seventeen connect entries",
            q(
                json!({"backend": {"type": "DEALER", "connect": vec![json!({"service": "w", "port": 1}); 17]}}),
            ),
            Refusal::at("spec.backend.connect", "Too many"),
        ),
        (
            "a CURVE socket that binds without a server key",
            q(json!({"backend": {"type": "DEALER", "port": 5556,
                "connect": [{"endpoint": "tcp://w:1"}],
                "security": {"curve": {"serverPublicKey": Z85}}}})),
            Refusal::at(
                "spec.backend.security.curve.serverKey",
                &socket_words::server_key_required("backend"),
            ),
        ),
        (
            "a server key on a socket that only connects",
            q(json!({"backend": {"type": "DEALER", "connect": [{"endpoint": "tcp://w:1"}],
                "security": {"curve": {"serverKey": {"secretName": "k"}, "allowAnyClient": true,
                    "serverPublicKey": Z85}}}})),
            Refusal::at(
                "spec.backend.security.curve.serverKey",
                &socket_words::server_key_without_bind("backend"),
            ),
        ),
        (
            "a CURVE socket that connects without its server's public key",
            q(json!({"backend": {"type": "DEALER", "connect": [{"endpoint": "tcp://w:1"}],
                "security": {"curve": {"clientKey": {"secretName": "c"}}}}})),
            Refusal::at(
                "spec.backend.security.curve.serverPublicKey",
                &socket_words::public_key_required("backend"),
            ),
        ),
        (
            "client keys on a socket that only binds",
            q(json!({"backend": {"type": "DEALER", "port": 5556, "security": {"curve": {
                "serverKey": {"secretName": "k"}, "allowAnyClient": true,
                "serverPublicKey": Z85}}}})),
            Refusal::at(
                "spec.backend.security.curve",
                &socket_words::client_without_connect("backend"),
            ),
        ),
        (
            "both forms of the server's public key",
            q(json!({"backend": {"type": "DEALER", "connect": [{"endpoint": "tcp://w:1"}],
                "security": {"curve": {"serverPublicKey": Z85,
                    "serverPublicKeyRef": {"secretName": "s"}}}}})),
            Refusal::at("spec.backend.security.curve.serverPublicKeyRef", words::PUBLIC_KEY_BOTH),
        ),
        (
            "client keys on the control socket",
            q(json!({"control": {"port": 5560, "security": {"curve": {
                "serverKey": {"secretName": "k"}, "allowAnyClient": true,
                "serverPublicKey": Z85}}}})),
            Refusal::at("spec.control.security.curve", socket_words::CONTROL_CLIENT),
        ),
        (
            "keepalive count over Linux's 127",
            q(json!({"backend": {"type": "DEALER", "port": 5556, "tcpKeepaliveCount": 128}})),
            Refusal::at("spec.backend.tcpKeepaliveCount", "should be less than or equal to 127"),
        ),
    ]
}

/// A shared-queue spec whose `socket` (frontend or backend) has the CURVE section `curve`.
fn secured(socket: &str, curve: Value) -> Value {
    let mut spec = json!({"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}});
    spec[socket]["security"] = json!({"curve": curve});
    spec
}

async fn invalid_objects_are_refused(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    for (i, (what, spec, expected)) in invalid_specs().into_iter().enumerate() {
        let manifest = json!({
            "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
            "metadata": {"name": format!("bad-{i}"), "namespace": namespace},
            "spec": spec,
        });
        let result =
            zps.patch(&format!("bad-{i}"), &field_manager(), &Patch::Apply(&manifest)).await;
        let message = assert_refused(what, result, &expected);
        eprintln!("refused ({what}): {message}");
    }
    // The rule on the object itself (`self.metadata.name`): a valid object name that cannot name
    // a Service. The API server reports root rules without a field path.
    let name_refusal =
        Refusal { field: None, message: "metadata.name must be a DNS-1035 label".to_string() };
    for name in ["tasks.v2", &"a".repeat(MAX_NAME_LEN + 1)] {
        let manifest = json!({
            "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}},
        });
        let result = zps.patch(name, &field_manager(), &Patch::Apply(&manifest)).await;
        let message = assert_refused(&format!("name {name}"), result, &name_refusal);
        eprintln!("refused (name {name}): {message}");
    }
    // The longest name that leaves room for `-federation` is accepted.
    let longest = "a".repeat(MAX_NAME_LEN);
    let manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": longest, "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}},
    });
    zps.patch(&longest, &field_manager(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("a {MAX_NAME_LEN}-character name is accepted: {e}"));
    // Every socket option set (the tuned fixture) is accepted and stored as written.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tuned.yaml");
    let text = std::fs::read_to_string(path).expect("tuned fixture");
    let mut tuned: Value = serde_yaml::from_str(&text).expect("fixture parses");
    tuned["metadata"]["namespace"] = json!(namespace);
    let stored = zps
        .patch("tuned", &field_manager(), &Patch::Apply(&tuned))
        .await
        .unwrap_or_else(|e| panic!("every socket option is accepted: {e}"));
    assert_eq!(stored.spec.sockets.backend.options.sndhwm, Some(10));
    assert_eq!(stored.spec.sockets.frontend.options.max_msg_size, Some(-1));
    assert_eq!(stored.spec.sockets.backend.options.nodrop, Some(true));
}

/// `spec.ipFamilyPolicy` / `spec.ipFamilies` reach both Services, and the (dual-stack) API
/// server allocates what they ask: IPv6 first, then IPv4, on the Service and, as families, on
/// the federation's headless `<name>-federation`. Without them the cluster's default (SingleStack, its first family).
async fn service_ip_families_follow_the_spec(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let manifest = |name: &str, extra: Value| {
        let mut spec = json!({"frontend": {"type": "XSUB", "port": 5555},
                              "backend": {"type": "XPUB", "port": 5556}, "replicas": 2});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        json!({"apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
               "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    };
    let families = |s: &Service| {
        let spec = s.spec.clone().unwrap_or_default();
        (spec.ip_family_policy, spec.ip_families.unwrap_or_default(), spec.cluster_ips)
    };
    let dual = manifest(
        "dual",
        json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
    );
    zps.patch("dual", &field_manager(), &Patch::Apply(&dual)).await.expect("dual-stack spec");
    zps.patch(
        "default-families",
        &field_manager(),
        &Patch::Apply(&manifest("default-families", json!({}))),
    )
    .await
    .expect("spec without families");
    for name in ["dual", "dual-federation"] {
        let svc =
            eventually(name, || async { services.get_opt(name).await.map_err(|e| e.to_string()) })
                .await;
        let (policy, fams, ips) = families(&svc);
        eprintln!("Service {name}: {policy:?} {fams:?} clusterIPs {ips:?}");
        assert_eq!(policy.as_deref(), Some("RequireDualStack"), "{name}");
        assert_eq!(fams, ["IPv6", "IPv4"], "{name}");
        if name == "dual" {
            let ips = ips.unwrap_or_default();
            assert_eq!(ips.len(), 2, "{name}: one cluster IP per family: {ips:?}");
            assert!(ips[0].contains(':') && !ips[1].contains(':'), "{name}: IPv6 first: {ips:?}");
        }
    }
    let svc = eventually("default-families", || async {
        services.get_opt("default-families").await.map_err(|e| e.to_string())
    })
    .await;
    let (policy, fams, _) = families(&svc);
    assert_eq!((policy.as_deref(), fams), (Some("SingleStack"), vec!["IPv4".to_string()]));
}

/// `zmqproxy.io/pause-reconciliation: "true"` stops the operator from writing children (a spec
/// change waits) and says so in a condition; removing it applies the change.
async fn pause_reconciliation_holds_the_children(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let image_of =
        |d: Deployment| d.spec.and_then(|s| s.template.spec?.containers.first()?.image.clone());
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "held", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555},
                 "backend": {"type": "DEALER", "port": 5556}},
    });
    zps.patch("held", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let before = eventually("the Deployment", || async {
        Ok(deployments.get_opt("held").await.map_err(|e| e.to_string())?.and_then(image_of))
    })
    .await;

    let changed = "ghcr.io/zmq-proxy-operator/zmq-proxy:while-paused";
    manifest["metadata"]["annotations"] = json!({status::PAUSE_RECONCILIATION: "true"});
    manifest["spec"]["image"] = json!(changed);
    zps.patch("held", &field_manager(), &Patch::Apply(&manifest)).await.expect("paused");
    let paused = wait_for_status(&zps, "held", "ReconciliationPaused=True", |zp| {
        let c =
            zp.status.as_ref().and_then(|s| status::condition(s, status::RECONCILIATION_PAUSED));
        c.is_some_and(|c| c.status == "True" && c.observed_generation == zp.metadata.generation)
    })
    .await;
    // The condition was written by the reconcile of the changed generation, which applied nothing.
    let held = deployments.get("held").await.map(image_of).expect("deployment");
    assert_eq!(held, Some(before.clone()), "a paused object's Deployment was written");
    assert_ne!(
        paused.status.as_ref().and_then(|s| s.observed_generation),
        paused.metadata.generation,
        "observedGeneration moved while paused"
    );

    manifest["metadata"].as_object_mut().expect("metadata").remove("annotations");
    zps.patch("held", &field_manager(), &Patch::Apply(&manifest)).await.expect("resumed");
    eventually("the held change applied after resuming", || async {
        let image = deployments.get("held").await.map_err(|e| e.to_string())?;
        Ok((image_of(image).as_deref() == Some(changed)).then_some(()))
    })
    .await;
    wait_for_status(&zps, "held", "no ReconciliationPaused condition", |zp| {
        zp.status
            .as_ref()
            .is_some_and(|s| status::condition(s, status::RECONCILIATION_PAUSED).is_none())
    })
    .await;
}

/// Every placement field and a `spec.podTemplate` with a sidecar, a volume, env and a pod
/// securityContext field are accepted by the API server, and so is the Deployment the merge
/// makes of them; two replicas get a PodDisruptionBudget of one, owned by the object, deleted
/// when it scales to one; an override of the proxy's args is refused with a Degraded condition
/// naming the field while the Deployment stays as it was.
async fn placement_overrides_and_disruption_budget(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "placed", "namespace": namespace},
        "spec": {
            "frontend": {"type": "ROUTER", "port": 5555},
            "backend": {"type": "DEALER", "port": 5556},
            "replicas": 2,
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "placed"}}}],
            "priorityClassName": "messaging-critical",
            "serviceAccountName": "zmq-proxy",
            "terminationGracePeriodSeconds": 10,
            "serviceLabels": {"team": "queues"},
            "podDisruptionBudget": {"enabled": true},
            "podTemplate": {
                "metadata": {"annotations": {"example.com/owner": "queues"}},
                "spec": {
                    "securityContext": {"supplementalGroups": [4000]},
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "containers": [
                        {"name": "proxy", "env": [{"name": "RUST_LOG", "value": "debug"}],
                         "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                        {"name": "log-shipper", "image": "fluent/fluent-bit:3.2"},
                    ],
                },
            },
        },
    });
    zps.patch("placed", &field_manager(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("every placement field is accepted: {e}"));
    let stored = zps.get("placed").await.expect("stored");
    assert_eq!(
        stored
            .spec
            .pod_template
            .as_ref()
            .and_then(|t| t.spec.clone())
            .map(|s| s["volumes"][0]["name"].clone()),
        Some(json!("scratch")),
        "the partial pod spec is kept, not pruned"
    );

    let deployment = eventually("the merged Deployment", || async {
        deployments.get_opt("placed").await.map_err(|e| e.to_string())
    })
    .await;
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod spec");
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["proxy", "log-shipper"]);
    assert_eq!(pod.priority_class_name.as_deref(), Some("messaging-critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some("zmq-proxy"));
    assert_eq!(pod.termination_grace_period_seconds, Some(10));
    assert_eq!(pod.topology_spread_constraints.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        pod.security_context.as_ref().and_then(|s| s.supplemental_groups.clone()),
        Some(vec![4000])
    );
    let proxy = &pod.containers[0];
    assert!(proxy.env.iter().flatten().any(|e| e.name == "RUST_LOG"), "{:?}", proxy.env);
    assert!(proxy.volume_mounts.iter().flatten().any(|m| m.mount_path == "/scratch"));
    // Applied after the Deployment, maybe a moment later.
    let service = eventually("the Service", || async {
        services.get_opt("placed").await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(service.labels().get("team").map(String::as_str), Some("queues"));

    let pdb = eventually("the PodDisruptionBudget", || async {
        pdbs.get_opt("placed").await.map_err(|e| e.to_string())
    })
    .await;
    let owners = pdb.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].uid.as_str(), owners[0].controller),
        (stored.uid().as_deref().unwrap_or(""), Some(true))
    );
    let spec = pdb.spec.expect("PDB spec");
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let selector = spec.selector.and_then(|s| s.match_labels).unwrap_or_default();
    let pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(pairs.join(","), selector_string("placed"));

    // One replica: the operator deletes the PDB itself (no garbage collector runs here).
    manifest["spec"]["replicas"] = json!(1);
    zps.patch("placed", &field_manager(), &Patch::Apply(&manifest)).await.expect("scaled to one");
    eventually("the PodDisruptionBudget deleted at one replica", || async {
        let gone = pdbs.get_opt("placed").await.map_err(|e| e.to_string())?.is_none();
        Ok(gone.then_some(()))
    })
    .await;

    // An override of the proxy's args: refused with Degraded naming the field, nothing written.
    manifest["spec"]["podTemplate"]["spec"]["containers"][0]["args"] = json!(["--help"]);
    zps.patch("placed", &field_manager(), &Patch::Apply(&manifest)).await.expect("admitted");
    let field = "spec.podTemplate.spec.containers[proxy].args";
    let refused = wait_for_status(&zps, "placed", "Degraded naming the overridden field", |zp| {
        condition(zp, DEGRADED).is_some_and(|(s, r, g, m)| {
            s == "True" && r == "InvalidSpec" && g == zp.metadata.generation && m.contains(field)
        })
    })
    .await;
    eprintln!("refused override: {:?}", condition(&refused, DEGRADED));
    let args = deployments.get("placed").await.expect("deployment").spec.and_then(|s| {
        s.template.spec.and_then(|p| p.containers.first().and_then(|c| c.args.clone()))
    });
    assert!(
        args.is_some_and(|a| a.iter().any(|x| x == "--frontend-type")),
        "the proxy's args stayed"
    );
}

/// An earlier version's StatefulSet `<name>` and headless Service `<name>-pods`, controlled by
/// the object: the operator creates the Deployment beside them and deletes the StatefulSet only
/// once the Deployment is available (its status is written here, no controller runs), then the
/// headless Service; Progressing says Migrating meanwhile.
async fn migration_from_a_stateful_set_keeps_serving(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "migrated", "namespace": namespace,
                     "annotations": {status::PAUSE_RECONCILIATION: "true"}},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555},
                 "backend": {"type": "DEALER", "port": 5556}},
    });
    // Paused while the earlier version's children are put in place.
    let zp =
        zps.patch("migrated", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let owner = zp.controller_owner_ref(&()).expect("owner reference");
    let labels = json!({"app.kubernetes.io/name": "zmq-proxy",
        "app.kubernetes.io/instance": "migrated", "app.kubernetes.io/managed-by": "zmq-proxy-operator"});
    let selector =
        json!({"app.kubernetes.io/name": "zmq-proxy", "app.kubernetes.io/instance": "migrated"});
    let old = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "migrated", "labels": labels, "ownerReferences": [owner]},
        "spec": {"selector": {"matchLabels": selector}, "serviceName": "migrated-pods",
                 "replicas": 1, "podManagementPolicy": "OrderedReady",
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "proxy", "image": IMAGE}]}}},
    });
    let old: StatefulSet = serde_json::from_value(old).expect("statefulset");
    stateful_sets.create(&PostParams::default(), &old).await.expect("old StatefulSet created");
    let headless = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "migrated-pods", "labels": labels, "ownerReferences": [owner]},
        "spec": {"clusterIP": "None", "selector": selector,
                 "ports": [{"name": "frontend", "port": 5555}]},
    });
    let headless: Service = serde_json::from_value(headless).expect("service");
    services.create(&PostParams::default(), &headless).await.expect("old headless Service created");

    manifest["metadata"].as_object_mut().expect("metadata").remove("annotations");
    zps.patch("migrated", &field_manager(), &Patch::Apply(&manifest)).await.expect("resumed");
    eventually("the Deployment", || async {
        deployments.get_opt("migrated").await.map_err(|e| e.to_string())
    })
    .await;
    wait_for_status(&zps, "migrated", "Progressing=True/Migrating", |zp| {
        condition(zp, PROGRESSING).is_some_and(|(s, r, ..)| s == "True" && r == "Migrating")
    })
    .await;
    // Its pods are not ready: the StatefulSet keeps serving.
    let sts = stateful_sets.get("migrated").await.expect("the StatefulSet stays");
    assert!(sts.metadata.deletion_timestamp.is_none());

    simulate_ready_rollout(&deployments, "migrated").await;
    eventually("the StatefulSet to be deleted", || async {
        let s = stateful_sets.get_opt("migrated").await.map_err(|e| e.to_string())?;
        Ok(s.is_none().then_some(()))
    })
    .await;
    eventually("the headless Service to be deleted", || async {
        let s = services.get_opt("migrated-pods").await.map_err(|e| e.to_string())?;
        Ok(s.is_none().then_some(()))
    })
    .await;
    assert!(services.get_opt("migrated").await.expect("service").is_some(), "peers' Service stays");
    wait_for_status(&zps, "migrated", "Ready=True and the rollout complete", |zp| {
        condition(zp, READY).is_some_and(|(s, ..)| s == "True")
            && condition(zp, PROGRESSING).is_some_and(|(_, r, ..)| r == "RolloutComplete")
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // (The headless Service's deletion, a second Deleted event of the object, joins the first
    // one's series: the recorder counts it without a new note.)
    eventually("the Deleted event", || async {
        let listed = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let notes: Vec<String> = listed.items.iter().filter_map(|e| e.note.clone()).collect();
        let seen = notes.iter().any(|n| n == "Deleted StatefulSet migrated");
        if seen { Ok(Some(())) } else { Err(format!("notes so far: {notes:?}")) }
    })
    .await;
}

/// `replicas: 3` of XSUB/XPUB: the Deployment carries the federation's flags and mounts the key
/// of a Secret the operator created once: immutable, owned, labelled, and not rewritten by a
/// later reconcile.
async fn federation_secret_is_created_once(client: &Client, metrics: &Metrics, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "news", "namespace": namespace},
        "spec": {"frontend": {"type": "XSUB", "port": 5555}, "backend": {"type": "XPUB", "port": 5556},
                 "replicas": 3},
    });
    zps.patch("news", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let deployment = eventually("the Deployment", || async {
        deployments.get_opt("news").await.map_err(|e| e.to_string())
    })
    .await;
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod spec");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    assert_eq!(flag("--federation-bind").as_deref(), Some("tcp://*:5570"));
    assert_eq!(
        flag("--federation-peers"),
        Some(format!("tcp://news-federation.{namespace}.svc:5570"))
    );
    assert_eq!(
        flag("--federation-curve-key-file").as_deref(),
        Some("/etc/zmq-proxy/federation/secret-key")
    );
    let volume = pod.volumes.unwrap_or_default().into_iter().find(|v| v.name == "federation-key");
    let source = volume.and_then(|v| v.secret).expect("the key's volume");
    assert_eq!(source.secret_name.as_deref(), Some("news-federation"));
    let secret = secrets.get("news-federation").await.expect("the Secret");
    assert_eq!(secret.immutable, Some(true));
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("zmq-proxy-operator")
    );
    let data = secret.data.clone().unwrap_or_default();
    let key = String::from_utf8(data["secret-key"].0.clone()).expect("text");
    assert_eq!(key.trim().len(), 40, "a Z85 key");
    let zp = zps.get("news").await.expect("zmqproxy");
    assert!(!serde_json::to_string(&zp.status).unwrap_or_default().contains(key.trim()));

    // Another reconcile (a touch), then quiet: the Secret is the same object, unwritten.
    let reconciles = metrics.reconcile_count();
    let touch = json!({"metadata": {"annotations": {"envtest/touched": "1"}}});
    zps.patch("news", &PatchParams::default(), &Patch::Merge(&touch)).await.expect("annotated");
    eventually("a reconcile after the touch", || async {
        Ok((metrics.reconcile_count() > reconciles).then_some(()))
    })
    .await;
    simulate_ready_rollout(&deployments, "news").await;
    wait_for_status(&zps, "news", "Ready=True", |zp| {
        condition(zp, READY).is_some_and(|(s, ..)| s == "True")
    })
    .await;
    let again = secrets.get("news-federation").await.expect("the Secret");
    assert_eq!((again.uid(), again.resource_version()), (secret.uid(), secret.resource_version()));
    assert_eq!(again.data, secret.data);
}

/// A Secret of the federation's name made by someone else is refused: the object is Degraded
/// with ChildNotOwned, a Warning event names it, the Secret keeps its data, and no Deployment
/// mounts it.
async fn foreign_federation_secret_is_refused(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let planted: Secret = serde_json::from_value(json!({
        "metadata": {"name": "jobs-federation"},
        "stringData": {"secret-key": "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"},
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &planted).await.expect("planted Secret");
    let before = secrets.get("jobs-federation").await.expect("planted");
    let manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "jobs", "namespace": namespace},
        "spec": {"frontend": {"type": "PULL", "port": 5555}, "backend": {"type": "PUSH", "port": 5556},
                 "replicas": 2},
    });
    zps.patch("jobs", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    wait_for_status(&zps, "jobs", "Degraded=True/ChildNotOwned", |zp| {
        condition(zp, DEGRADED).is_some_and(|(s, r, _, m)| {
            s == "True" && r == "ChildNotOwned" && m.contains("Secret jobs-federation")
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    eventually("the Warning event", || async {
        let listed = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        Ok(listed
            .items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("ChildNotOwned")
            })
            .then_some(()))
    })
    .await;
    let after = secrets.get("jobs-federation").await.expect("still there");
    assert_eq!((after.resource_version(), after.data), (before.resource_version(), before.data));
    assert!(deployments.get_opt("jobs").await.expect("get").is_none(), "no Deployment mounts it");
}

/// A Service of the object's name made by someone else, without the operator's label, is never
/// written: the metadata-only watch of names the operator's label does not mark holds it, so the
/// operator reads it instead of creating over it, and reports ChildNotOwned.
async fn foreign_service_is_refused(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let planted: Service = serde_json::from_value(json!({
        "metadata": {"name": "queue", "labels": {"app": "someone-else"}},
        "spec": {"ports": [{"name": "web", "port": 8080}], "selector": {"app": "someone-else"}},
    }))
    .expect("service");
    services.create(&PostParams::default(), &planted).await.expect("planted Service");
    let before = services.get("queue").await.expect("planted");
    let manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "queue", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}},
    });
    zps.patch("queue", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    wait_for_status(&zps, "queue", "Degraded=True/ChildNotOwned", |zp| {
        condition(zp, DEGRADED).is_some_and(|(s, r, _, m)| {
            s == "True" && r == "ChildNotOwned" && m.contains("Service queue")
        })
    })
    .await;
    let after = services.get("queue").await.expect("still there");
    assert_eq!(after.resource_version(), before.resource_version(), "the Service was written");
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.labels(), before.labels());
}

/// `spec.paused` is written into the ConfigMap `<name>-steering` every pod mounts, reported in
/// the Paused condition at the object's generation, and each existing pod of the object is
/// nudged with the generation (no kubelet here: the pod is created by hand, never runs).
async fn paused_is_delivered_through_the_steering_config_map(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "steered", "namespace": namespace},
        "spec": {"frontend": {"type": "PULL", "port": 5555},
                 "backend": {"type": "PUSH", "port": 5556}, "paused": true},
    });
    let zp =
        zps.patch("steered", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let paused_value = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("paused")).cloned();
    let cm = eventually("the steering ConfigMap", || async {
        config_maps.get_opt("steered-steering").await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(paused_value(&cm).as_deref(), Some("true"));
    let owners = cm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owners.first().map(|o| (o.uid.as_str(), o.controller)),
        Some((zp.uid().as_deref().unwrap_or(""), Some(true)))
    );
    let generation = zp.metadata.generation;
    wait_for_status(&zps, "steered", "Paused=True at the object's generation", |zp| {
        condition(zp, status::PAUSED)
            .is_some_and(|(s, r, g, _)| s == "True" && r == "PauseRequested" && g == generation)
    })
    .await;

    // A running pod of the object (as the Deployment controller would have made it).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "steered-abc", "labels": selector_labels("steered")},
        "spec": {"containers": [{"name": "proxy", "image": IMAGE}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("pod created");
    manifest["spec"]["paused"] = json!(false);
    let zp =
        zps.patch("steered", &field_manager(), &Patch::Apply(&manifest)).await.expect("resumed");
    let generation = zp.metadata.generation;
    eventually("the ConfigMap to say false", || async {
        let cm = config_maps.get("steered-steering").await.map_err(|e| e.to_string())?;
        Ok((paused_value(&cm).as_deref() == Some("false")).then_some(()))
    })
    .await;
    let nudged = eventually("the pod nudged with the new generation", || async {
        let p = pods.get("steered-abc").await.map_err(|e| e.to_string())?;
        let value = p.annotations().get(STEERING_GENERATION).cloned();
        Ok(value.filter(|v| Some(v.as_str()) == generation.map(|g| g.to_string()).as_deref()))
    })
    .await;
    eprintln!("pod nudged with {}={nudged}", STEERING_GENERATION);
    wait_for_status(&zps, "steered", "Paused=False/Resumed at the new generation", |zp| {
        condition(zp, status::PAUSED)
            .is_some_and(|(s, r, g, _)| s == "False" && r == "Resumed" && g == generation)
    })
    .await;

    // An object never paused has no steering ConfigMap (its pods mount it as optional); its
    // first pause makes one and nudges the running pods, which need no restart.
    let mut later = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "later", "namespace": namespace},
        "spec": {"frontend": {"type": "PULL", "port": 5555},
                 "backend": {"type": "PUSH", "port": 5556}},
    });
    let zp = zps.patch("later", &field_manager(), &Patch::Apply(&later)).await.expect("applied");
    let generation = zp.metadata.generation;
    wait_for_status(&zps, "later", "observed", |zp| {
        zp.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert!(config_maps.get_opt("later-steering").await.expect("read").is_none());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "later-abc", "labels": selector_labels("later")},
        "spec": {"containers": [{"name": "proxy", "image": IMAGE}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("pod created");
    later["spec"]["paused"] = json!(true);
    let zp = zps.patch("later", &field_manager(), &Patch::Apply(&later)).await.expect("paused");
    let generation = zp.metadata.generation.map(|g| g.to_string());
    let cm = eventually("the steering ConfigMap of the first pause", || async {
        config_maps.get_opt("later-steering").await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(paused_value(&cm).as_deref(), Some("true"));
    eventually("the pod nudged at the first pause", || async {
        let p = pods.get("later-abc").await.map_err(|e| e.to_string())?;
        let value = p.annotations().get(STEERING_GENERATION).cloned();
        Ok(value.filter(|v| Some(v) == generation.as_ref()))
    })
    .await;
}

/// A free TCP port on loopback (bound, then released for whoever binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real `zmq-proxy`, in this process, built from `args` (its command line).
async fn start_proxy(args: &[String]) -> (zmq_proxy::Proxy, zmq_proxy::Ops) {
    use clap::Parser;
    let cli = zmq_proxy::Cli::try_parse_from(
        std::iter::once("zmq-proxy").chain(args.iter().map(String::as_str)),
    )
    .unwrap_or_else(|e| panic!("the proxy refuses {args:?}: {e}"));
    let cfg = cli.into_config().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let proxy = zmq_proxy::Proxy::start(&cfg).await.unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let ops = zmq_proxy::Ops::start(&cfg, &proxy).await.unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (proxy, ops)
}

/// A ZmqProxy whose backend connects to pods by label and to one endpoint: the operator keeps
/// the headless Service of the selector (only ready pods, owned); the proxy runs here, a real
/// `zmq-proxy` started from the very arguments the operator rendered, its pod object ready at
/// 127.0.0.1; the status reports what that proxy's `/connects` says per entry (the endpoint
/// connected to a real worker, the selector's name unresolvable outside a cluster), follows it
/// when the worker goes, and the Service goes when its entry does.
async fn connecting_sockets_follow_their_entries(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (frontend_port, metrics_port, worker_port) = (free_port(), free_port(), free_port());
    // The worker: a ROUTER bound on loopback, which the proxy's DEALER connects to.
    let worker_args: Vec<String> = [
        "--frontend-type",
        "ROUTER",
        "--frontend-bind",
        &format!("tcp://127.0.0.1:{worker_port}"),
        "--backend-type",
        "DEALER",
        "--backend-bind",
        "tcp://127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let (worker, _worker_ops) = start_proxy(&worker_args).await;
    let endpoint = format!("tcp://127.0.0.1:{worker_port}");
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "jobs", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": frontend_port},
                 "backend": {"type": "DEALER", "connect": [
                     {"selector": {"matchLabels": {"app": "worker"}}, "port": 6000},
                     {"endpoint": endpoint}]},
                 "metricsPort": metrics_port},
    });
    let zp = zps.patch("jobs", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let svc = eventually("the headless Service of the selector", || async {
        services.get_opt("jobs-backend-0").await.map_err(|e| e.to_string())
    })
    .await;
    let spec = svc.spec.clone().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    // Only ready pods (false, which the API server leaves out).
    assert_ne!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        spec.selector,
        Some([("app".to_string(), "worker".to_string())].into_iter().collect())
    );
    let owner = svc.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.uid.clone()), zp.uid());
    let args = eventually("the Deployment", || async {
        let sts: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let sts = sts.get_opt("jobs").await.map_err(|e| e.to_string())?;
        Ok(sts.and_then(|s| s.spec?.template.spec?.containers.first()?.args.clone()))
    })
    .await;
    let selector_ep = format!("tcp://jobs-backend-0.{namespace}.svc:6000");
    let has = |flag: &str, value: &str| args.windows(2).any(|w| w[0] == flag && w[1] == value);
    assert!(
        has("--backend-connect-all", &selector_ep) && has("--backend-connect-all", &endpoint),
        "{args:?}"
    );
    eprintln!("proxy args: {}", args.join(" "));

    // The proxy of the pod, run here from the operator's arguments (without the steering file,
    // which only a pod mounts), and its pod object, ready at 127.0.0.1.
    let mut local = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--pause-file" {
            it.next();
        } else {
            local.push(a.clone());
        }
    }
    let (proxy, _ops) = start_proxy(&local).await;
    create_pod(&pods, "jobs", "jobs-0", "ReplicaSet").await;
    let status = json!({"status": {"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("jobs-0", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
    let target = format!("endpoint {endpoint}");
    let entry = |zp: &ZmqProxy, target: &str| {
        zp.status.as_ref().and_then(|s| s.connects.iter().find(|c| c.target == target).cloned())
    };
    let reported =
        wait_for_status(&zps, "jobs", "the endpoint reported connected by the proxy", |zp| {
            entry(zp, &target).is_some_and(|c| c.resolved == 1 && c.connected == 1 && c.pods == 1)
        })
        .await;
    let connects =
        serde_json::to_value(&reported.status.as_ref().expect("status").connects).expect("json");
    eprintln!("status.connects: {connects}");
    let selector = entry(&reported, "selector app=worker port 6000").expect("the selector entry");
    // Outside a cluster the Service's name does not resolve: reported, never connected.
    assert_eq!((selector.connected, selector.pods), (0, 1));
    let c = condition(&reported, status::CONNECTED).expect("Connected");
    eprintln!("Connected={} reason={} message={}", c.0, c.1, c.3);
    assert_eq!((c.0.as_str(), c.1.as_str()), ("False", "NotAllConnected"));

    // The worker goes: the proxy reports the endpoint unconnected, and so does the status.
    let _ = worker.shutdown(Duration::ZERO, std::future::pending::<()>()).await;
    let lost = wait_for_status(&zps, "jobs", "the endpoint reported unconnected", |zp| {
        entry(zp, &target).is_some_and(|c| c.connected == 0)
    })
    .await;
    eprintln!(
        "after the worker stopped: {}",
        serde_json::to_value(&lost.status.as_ref().expect("status").connects).expect("json")
    );

    // The entries go: the selector's Service goes with them, and so do the counts.
    manifest["spec"]["backend"] = json!({"type": "DEALER", "port": free_port()});
    zps.patch("jobs", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    eventually("the Service of the removed entry deleted", || async {
        let svc = services.get_opt("jobs-backend-0").await.map_err(|e| e.to_string())?;
        Ok(svc.is_none().then_some(()))
    })
    .await;
    wait_for_status(&zps, "jobs", "status.connects emptied", |zp| {
        zp.status.as_ref().is_some_and(|s| s.connects.is_empty())
    })
    .await;
    let _ = proxy.shutdown(Duration::ZERO, std::future::pending::<()>()).await;
}

/// A prometheus-operator PodMonitor CRD cut down to what the operator writes (the real one is
/// 1000+ lines; its schema is not what is tested here).
fn pod_monitor_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "podmonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "PodMonitor", "listKind": "PodMonitorList",
                      "plural": "podmonitors", "singular": "podmonitor"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}],
        },
    }))
    .expect("PodMonitor CRD")
}

/// `spec.monitoring.podMonitor: true` without the monitoring API: the MonitoringReady condition
/// says the API is missing and the proxy is still reconciled. The CRD installed later (the
/// operator keeps running) makes the PodMonitor appear; turning monitoring off deletes it.
async fn pod_monitor_follows_the_monitoring_api(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let mut manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "watched", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555},
                 "backend": {"type": "DEALER", "port": 5556},
                 "monitoring": {"podMonitor": true}},
    });
    let zp =
        zps.patch("watched", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    let generation = zp.metadata.generation;
    let missing =
        wait_for_status(&zps, "watched", "MonitoringReady=False/PodMonitorAPIMissing", |zp| {
            condition(zp, status::MONITORING_READY).is_some_and(|(s, r, g, _)| {
                s == "False" && r == "PodMonitorAPIMissing" && g == generation
            })
        })
        .await;
    assert_eq!(condition(&missing, DEGRADED).map(|c| c.0).as_deref(), Some("False"));
    eventually("the proxy reconciled all the same", || async {
        deployments.get_opt("watched").await.map_err(|e| e.to_string())
    })
    .await;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &pod_monitor_crd()).await.expect("PodMonitor CRD accepted");
    let installed = Instant::now();
    let resource = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "PodMonitor",
    ));
    let monitors: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    let pm = eventually("the PodMonitor, once its API exists", || async {
        monitors.get_opt("watched").await.map_err(|e| e.to_string())
    })
    .await;
    eprintln!("PodMonitor created {:?} after its CRD was installed", installed.elapsed());
    let owners = pm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.first().map(|o| o.uid.as_str()), zp.uid().as_deref());
    let endpoint = &pm.data["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "zmqproxy");
    assert_eq!(pm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"], "watched");
    wait_for_status(&zps, "watched", "MonitoringReady=True", |zp| {
        condition(zp, status::MONITORING_READY)
            .is_some_and(|(s, r, ..)| s == "True" && r == "PodMonitorReady")
    })
    .await;

    manifest["spec"]["monitoring"]["podMonitor"] = json!(false);
    zps.patch("watched", &field_manager(), &Patch::Apply(&manifest)).await.expect("turned off");
    eventually("the PodMonitor deleted by the operator", || async {
        let pm = monitors.get_opt("watched").await.map_err(|e| e.to_string())?;
        Ok(pm.is_none().then_some(()))
    })
    .await;
    wait_for_status(&zps, "watched", "no MonitoringReady condition", |zp| {
        condition(zp, status::MONITORING_READY).is_none()
    })
    .await;
}

/// The API server goes away for a few seconds and comes back with a new watch cache (every
/// watch then fails with 410 Gone first). A change made as soon as it answers again is applied
/// promptly: each watch retries on its own capped backoff, so none waits for the others'.
async fn recovers_from_an_api_server_restart(plane: &mut ControlPlane, namespace: &str) {
    let client = plane.client.clone();
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let manifest = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "survivor", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555},
                 "backend": {"type": "DEALER", "port": 5556}},
    });
    zps.patch("survivor", &field_manager(), &Patch::Apply(&manifest)).await.expect("applied");
    eventually("the Deployment before the outage", || async {
        deployments.get_opt("survivor").await.map_err(|e| e.to_string())
    })
    .await;

    // Long enough for kube-runtime's default backoff to have grown past the bound below.
    let outage = tokio::time::sleep(Duration::from_secs(8));
    plane.restart_apiserver(outage).await.unwrap_or_else(|e| panic!("restart: {e}"));
    let image = "ghcr.io/zmq-proxy-operator/zmq-proxy:after-outage";
    let mut changed = manifest.clone();
    changed["spec"]["image"] = json!(image);
    let accepted = eventually("the change accepted after the restart", || async {
        match zps.patch("survivor", &field_manager(), &Patch::Apply(&changed)).await {
            Ok(_) => Ok(Some(Instant::now())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    eventually("the change in the Deployment", || async {
        let d = deployments.get("survivor").await.map_err(|e| e.to_string())?;
        let current = d.spec.and_then(|s| s.template.spec?.containers.first()?.image.clone());
        Ok((current.as_deref() == Some(image)).then_some(()))
    })
    .await;
    let took = accepted.elapsed();
    eprintln!("after an 8 s API-server outage the change was applied {took:?} after it was made");
    // One backoff shared by all watches would have grown to 20 s or more by now; each watch's
    // own 2 s cap makes this about one retry plus a list.
    assert!(took < Duration::from_secs(10), "applied only {took:?} after the server was back");
}

async fn leader_election_hands_over(client: &Client, namespace: &str) {
    let config = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
        ..LeaseConfig::new("envtest-leader", namespace, identity)
    };
    let mut a = LeaderElector::new(client.clone(), config("a"));
    let mut b = LeaderElector::new(client.clone(), config("b"));
    assert!(a.try_acquire_or_renew().await.expect("a campaigns"), "a creates the lease");
    assert!(!b.try_acquire_or_renew().await.expect("b campaigns"), "b follows a live lease");
    assert!(a.try_acquire_or_renew().await.expect("a renews"), "a renews");
    a.release().await.expect("a releases");
    assert!(b.try_acquire_or_renew().await.expect("b campaigns"), "b takes over a released lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get("envtest-leader").await.expect("lease");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));

    // b stops renewing: c takes over once the lease has gone unrenewed for its duration on c's
    // own clock, and not before.
    let mut c = LeaderElector::new(client.clone(), config("c"));
    let first_look = Instant::now();
    assert!(!c.try_acquire_or_renew().await.expect("c campaigns"));
    let deadline = Instant::now() + DEADLINE;
    let took_over = loop {
        if c.try_acquire_or_renew().await.expect("c campaigns") {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "c never took over the expired lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(took_over.duration_since(first_look) >= Duration::from_secs(2), "c waited for expiry");
    assert!(!b.try_acquire_or_renew().await.expect("b campaigns"), "b lost the lease to c");
}

/// The control plane the scenarios share, with the CRD installed and the controller running.
struct Cluster {
    client: Client,
    metrics: Arc<Metrics>,
    /// Taken by the teardown, which kills the processes; the outage scenario restarts its API
    /// server.
    plane: tokio::sync::Mutex<Option<ControlPlane>>,
    /// Stops the controller, then the task to wait for.
    controller: Mutex<Option<(futures::channel::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

/// Starts the control plane, installs the CRD and starts the controller. On an error the
/// processes started so far are stopped (dropping the ControlPlane kills them).
async fn start_cluster(assets: &Path) -> Result<Cluster, String> {
    for binary in ["kube-apiserver", "etcd"] {
        if !assets.join(binary).is_file() {
            return Err(format!("no {binary} in KUBEBUILDER_ASSETS={}", assets.display()));
        }
    }
    let plane = ControlPlane::start(assets).await.map_err(|e| format!("control plane: {e}"))?;
    eprintln!("control plane at {}", plane.url);
    let client = plane.client.clone();
    let version = client.apiserver_version().await.map_err(|e| format!("version: {e}"))?;
    eprintln!("kube-apiserver {}", version.git_version);
    install_crd(&client).await?;

    let metrics = Arc::new(Metrics::new());
    let ctx = Context::new(
        client.clone(),
        BuildOptions { default_image: IMAGE.into(), ..Default::default() },
        metrics.clone(),
    );
    // A missing PodMonitor API is looked for again this often (60 s in production).
    ctx.monitoring.set_recheck(Duration::from_secs(2));
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(ctx, None, async move {
        let _ = stop_rx.await;
    }));
    Ok(Cluster {
        client,
        metrics,
        plane: tokio::sync::Mutex::new(Some(plane)),
        controller: Mutex::new(Some((stop_tx, controller))),
    })
}

impl Cluster {
    /// Stops the controller (it must stop on shutdown within 30 s), then the control plane.
    async fn stop(&self) -> Result<(), String> {
        let controller = self.controller.lock().map(|mut c| c.take()).unwrap_or_default();
        let stopped = match controller {
            Some((stop_tx, task)) => {
                let _ = stop_tx.send(());
                match tokio::time::timeout(Duration::from_secs(30), task).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("controller task: {e}")),
                    Err(_) => {
                        Err("the controller did not stop within 30 s of shutdown".to_string())
                    }
                }
            }
            None => Ok(()),
        };
        drop(self.plane.lock().await.take());
        stopped
    }
}

/// What the scenarios share: the runtime they run on and the cluster, set once it is started
/// (an error when it could not be).
struct Shared {
    runtime: tokio::runtime::Handle,
    cluster: OnceLock<Result<Arc<Cluster>, String>>,
}

/// A scenario run against the shared cluster, in its own namespace when `namespace` is given
/// (created first).
fn scenario<F, Fut>(shared: &Arc<Shared>, name: &str, namespace: Option<&str>, run: F) -> Trial
where
    F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let shared = shared.clone();
    let namespace = namespace.map(str::to_string);
    Trial::test(name, move || {
        let cluster = match shared.cluster.get() {
            Some(Ok(cluster)) => cluster.clone(),
            Some(Err(e)) => return Err(Failed::from(format!("no control plane: {e}"))),
            None => return Err(Failed::from("KUBEBUILDER_ASSETS is unset: no control plane")),
        };
        shared.runtime.block_on(async move {
            if let Some(namespace) = namespace {
                create_namespace(&cluster.client, &namespace).await;
            }
            run(cluster).await;
        });
        Ok(())
    })
    .with_kind("cluster")
}

/// A check that needs no API server.
fn offline(name: &str, check: fn()) -> Trial {
    Trial::test(name, move || {
        check();
        Ok(())
    })
}

/// Every test case of the tier, in the order they run: the offline checks, then the scenarios
/// (the shared queue first, the one that restarts the API server last).
fn trials(shared: &Arc<Shared>) -> Vec<Trial> {
    let mut trials = vec![
        offline(
            "refused_examples_quote_what_the_crd_rules_say",
            refused_examples_quote_what_the_crd_rules_say,
        ),
        offline(
            "cel_refusals_expected_from_the_api_server_are_what_the_crd_rules_say",
            cel_refusals_expected_from_the_api_server_are_what_the_crd_rules_say,
        ),
        offline(
            "refusal_check_reads_the_api_servers_status",
            refusal_check_reads_the_api_servers_status,
        ),
        scenario(shared, "the_api_server_accepts_and_establishes_the_crd", None, |c| async move {
            let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
            let crd = crds.get("zmqproxies.zmqproxy.io").await.expect("the CRD is installed");
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            assert!(established, "the CRD is not Established");
        }),
    ];

    let (refused, mut valid): (Vec<Example>, Vec<Example>) =
        examples().into_iter().partition(|e| e.refusal.is_some());
    // The shared queue is the example every user starts from: run it first.
    valid.sort_by_key(|e| e.file != "shared-queue.yaml");
    for example in valid {
        let stem = example.file.trim_end_matches(".yaml").trim_end_matches(".yml").to_string();
        let namespace = format!("example-{stem}");
        let ns = namespace.clone();
        trials.push(scenario(
            shared,
            &format!("example_lives_through_create_drift_resync_and_scaling::{}", example.file),
            Some(&namespace),
            move |c| async move {
                example_lifecycle(&c.client, &c.metrics, &ns, &example.file, example.manifest)
                    .await;
            },
        ));
    }
    // The examples that exist to be refused are refused with the message their comment quotes.
    for example in refused {
        let stem = example.file.trim_end_matches(".yaml").trim_end_matches(".yml").to_string();
        let namespace = format!("refused-{stem}");
        let ns = namespace.clone();
        trials.push(scenario(
            shared,
            &format!("example_is_refused_with_the_message_it_quotes::{}", example.file),
            Some(&namespace),
            move |c| async move {
                let zps: Api<ZmqProxy> = Api::namespaced(c.client.clone(), &ns);
                let mut manifest = example.manifest;
                manifest["metadata"]["namespace"] = json!(ns);
                let name =
                    manifest["metadata"]["name"].as_str().expect("example has a name").to_string();
                let result = zps.patch(&name, &field_manager(), &Patch::Apply(&manifest)).await;
                let expected = example.refusal.expect("partitioned on the refusal");
                let message = assert_refused(&example.file, result, &expected);
                eprintln!("refused ({}): {message}", example.file);
            },
        ));
    }

    trials.extend([
        scenario(shared, "invalid_objects_are_refused", Some("invalid"), |c| async move {
            invalid_objects_are_refused(&c.client, "invalid").await;
        }),
        scenario(shared, "leader_election_hands_over", Some("leases"), |c| async move {
            leader_election_hands_over(&c.client, "leases").await;
        }),
        scenario(shared, "service_ip_families_follow_the_spec", Some("families"), |c| async move {
            service_ip_families_follow_the_spec(&c.client, "families").await;
        }),
        scenario(
            shared,
            "pause_reconciliation_holds_the_children",
            Some("paused"),
            |c| async move {
                pause_reconciliation_holds_the_children(&c.client, "paused").await;
            },
        ),
        scenario(
            shared,
            "placement_overrides_and_disruption_budget",
            Some("placement"),
            |c| async move {
                placement_overrides_and_disruption_budget(&c.client, "placement").await;
            },
        ),
        scenario(
            shared,
            "migration_from_a_stateful_set_keeps_serving",
            Some("migration"),
            |c| async move {
                migration_from_a_stateful_set_keeps_serving(&c.client, "migration").await;
            },
        ),
        scenario(shared, "federation_secret_is_created_once", Some("federation"), |c| async move {
            federation_secret_is_created_once(&c.client, &c.metrics, "federation").await;
        }),
        scenario(
            shared,
            "foreign_federation_secret_is_refused",
            Some("foreign-secret"),
            |c| async move {
                foreign_federation_secret_is_refused(&c.client, "foreign-secret").await;
            },
        ),
        scenario(shared, "foreign_service_is_refused", Some("foreign-service"), |c| async move {
            foreign_service_is_refused(&c.client, "foreign-service").await;
        }),
        scenario(
            shared,
            "paused_is_delivered_through_the_steering_config_map",
            Some("steering"),
            |c| async move {
                paused_is_delivered_through_the_steering_config_map(&c.client, "steering").await;
            },
        ),
        scenario(
            shared,
            "connecting_sockets_follow_their_entries",
            Some("connect"),
            |c| async move {
                connecting_sockets_follow_their_entries(&c.client, "connect").await;
            },
        ),
        scenario(
            shared,
            "pod_monitor_follows_the_monitoring_api",
            Some("monitoring"),
            |c| async move {
                pod_monitor_follows_the_monitoring_api(&c.client, "monitoring").await;
            },
        ),
        scenario(
            shared,
            "sidecar_injection_through_the_webhook",
            Some("sidecar"),
            |c| async move {
                sidecar::sidecar_injection_through_the_webhook(&c.client, "sidecar").await;
            },
        ),
        scenario(shared, "recovers_from_an_api_server_restart", Some("outage"), |c| async move {
            let mut plane = c.plane.lock().await;
            let plane = plane.as_mut().expect("the control plane runs until the teardown");
            recovers_from_an_api_server_restart(plane, "outage").await;
        }),
        // Last: the teardown stops whatever this did not.
        scenario(shared, "the_controller_stops_on_shutdown", None, |c| async move {
            c.stop().await.unwrap_or_else(|e| panic!("{e}"));
        }),
    ]);
    trials
}

fn main() {
    let mut args = Arguments::from_args();
    // The scenarios share one controller and one API server (one of them restarts it): one at a
    // time, in order.
    args.test_threads = Some(1);
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("envtest: cannot build the tokio runtime: {e}");
                std::process::exit(101);
            }
        };
    let shared = Arc::new(Shared { runtime: runtime.handle().clone(), cluster: OnceLock::new() });
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    let mut trials = trials(&shared);
    if assets.is_none() {
        // Straight to the process's stderr, so the skip shows however the output is captured.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: KUBEBUILDER_ASSETS is unset (tests/run.sh also looks in /usr/local/kubebuilder/bin for kube-apiserver and etcd)"
        );
        trials = trials
            .into_iter()
            .map(|t| {
                let cluster = t.kind() == "cluster";
                t.with_ignored_flag(cluster)
            })
            .collect();
    }
    // The control plane starts only when a scenario is going to run (not for --list, nor when a
    // filter or the skip leaves none).
    let wanted = !args.list
        && trials
            .iter()
            .any(|t| t.kind() == "cluster" && !args.is_filtered_out(t) && !args.is_ignored(t));
    if let (true, Some(assets)) = (wanted, &assets) {
        let started = runtime.block_on(start_cluster(assets)).map(Arc::new);
        if let Err(e) = &started {
            eprintln!("envtest: {e}");
        }
        let _ = shared.cluster.set(started);
    }

    let conclusion = libtest_mimic::run(&args, trials);

    // Teardown however the scenarios ended: a panicking scenario is caught by the harness, so
    // this always runs before the exit (which skips destructors).
    let mut stopped = Ok(());
    if let Some(Ok(cluster)) = shared.cluster.get() {
        stopped = runtime.block_on(cluster.stop());
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Err(e) = &stopped {
        eprintln!("envtest: {e}");
    }
    if stopped.is_err() && !conclusion.has_failed() {
        std::process::exit(101);
    }
    conclusion.exit();
}

// The parts of this tier that need no API server run everywhere, so a mistake in what the
// integration run expects shows here first.

fn crd_schema() -> Value {
    let crd = serde_json::to_value(ZmqProxy::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Client-side CEL verdict on `spec` (field path, message), with the schema default the API
/// server would have filled in before its rules ran.
fn cel_verdict(name: &str, mut spec: Value) -> Vec<(String, String)> {
    if spec.get("metricsPort").is_none() {
        spec["metricsPort"] = json!(DEFAULT_METRICS_PORT);
    }
    let object = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": name, "namespace": "offline"}, "spec": spec,
    });
    match Validator::new().validate(&crd_schema(), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| (e.field_path.clone(), e.message.clone()))
            .collect(),
    }
}

fn refused_examples_quote_what_the_crd_rules_say() {
    let refused: Vec<Example> = examples().into_iter().filter(|e| e.refusal.is_some()).collect();
    let pair = refused.iter().find(|e| e.file == "invalid-pair.yaml").expect("invalid-pair.yaml");
    assert_eq!(
        pair.refusal,
        Some(Refusal::at(
            "spec.backend.type",
            "unsupported socket pair ROUTER/PUSH (frontend/backend); allowed pairs: ROUTER/DEALER, DEALER/ROUTER, XSUB/XPUB, XPUB/XSUB, SUB/PUB, PUB/SUB, PULL/PUSH, PUSH/PULL"
        ))
    );
    for example in &refused {
        let expected = example.refusal.clone().expect("refused");
        let errors = cel_verdict("offline", example.manifest["spec"].clone());
        assert!(
            errors
                .iter()
                .any(|(f, m)| Some(f) == expected.field.as_ref() && m == &expected.message),
            "{}: the CRD's rules say {errors:?}, the comment {expected:?}",
            example.file
        );
    }
    assert!(examples().iter().any(|e| e.refusal.is_none()), "no valid example");
}

fn cel_refusals_expected_from_the_api_server_are_what_the_crd_rules_say() {
    let schema_refusal = |m: &str| {
        ["Unsupported value", "should be", "Required value", "should match", "Too long", "Too many"]
            .iter()
            .any(|s| m.contains(s))
    };
    let mut checked = 0;
    for (what, spec, expected) in invalid_specs() {
        if schema_refusal(&expected.message) {
            continue;
        }
        let errors = cel_verdict("offline", spec);
        assert!(
            errors
                .iter()
                .any(|(f, m)| Some(f) == expected.field.as_ref() && m == &expected.message),
            "{what}: the CRD's rules say {errors:?}, the test expects {expected:?}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        8 + 5 + 3 + 2 + 3 + 13 + 1,
        "every CEL rule of the spec, its security, nodrop, connect entries and ipc paths is exercised"
    );
    let queue = json!({"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}});
    let errors = cel_verdict("tasks.v2", queue.clone());
    assert!(
        errors.iter().any(|(_, m)| m.starts_with("metadata.name must be a DNS-1035 label")),
        "{errors:?}"
    );
    assert!(cel_verdict(&"a".repeat(MAX_NAME_LEN), queue).is_empty());
}

fn refusal_check_reads_the_api_servers_status() {
    let status = |field: &str, body: &str| -> Result<(), kube::Error> {
        let status: kube::core::Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("ZmqProxy.zmqproxy.io \"bad-0\" is invalid: {field}: {body}"),
            "reason": "Invalid",
            "details": {"name": "bad-0", "group": "zmqproxy.io", "kind": "ZmqProxy",
                "causes": [{"reason": "FieldValueInvalid", "message": body, "field": field}]},
            "code": 422,
        }))
        .expect("a Status");
        Err(kube::Error::Api(Box::new(status)))
    };
    let pair = Refusal::at("spec.backend.type", "unsupported socket pair ROUTER/PUSH");
    for rendered in ["\"object\"", "\"string\""] {
        let body = format!("Invalid value: {rendered}: unsupported socket pair ROUTER/PUSH");
        assert!(check_refused(status("spec.backend.type", &body), &pair).is_ok(), "{body}");
        assert!(
            check_refused(status("spec.frontend.type", &body), &pair).is_err(),
            "the right words at another field are not the refusal"
        );
    }
    let range = "Invalid value: 0: spec.frontend.port in body should be greater than or equal to 1";
    let expected = Refusal::at("spec.frontend.port", "should be greater than or equal to 1");
    assert!(check_refused(status("spec.frontend.port", range), &expected).is_ok());
    let root = Refusal { field: None, message: "metadata.name must be".to_string() };
    let body = "Invalid value: \"object\": metadata.name must be a DNS-1035 label";
    assert!(check_refused(status("<nil>", body), &root).is_ok());
    assert!(check_refused(Ok(()), &pair).is_err(), "an accepted object is not a refusal");
}
