//! The integration tier: the operator against a real kube-apiserver and etcd found through
//! `$KUBEBUILDER_ASSETS` (the envtest convention). It installs crds/zmqproxy.yaml, runs the
//! controller in-process, applies the examples and checks what a cluster would show: children
//! with owner references, status conditions, repaired drift, read-only resyncs, the API server
//! refusing invalid objects with a message naming the field, and leader election on a Lease.
//!
//! No kubelet or controller-manager runs, so Deployments never get pods: the test first sees
//! Ready=False (reason Progressing), then writes the Deployment's status itself to simulate a
//! finished rollout and sees Ready=True.
//!
//! Skipped, with a printed reason, when KUBEBUILDER_ASSETS is unset.

mod launcher;

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use launcher::ControlPlane;
use serde_json::{Value, json};
use zmq_proxy_operator::build::BuildOptions;
use zmq_proxy_operator::crd::ZmqProxy;
use zmq_proxy_operator::leader::{LeaderElector, LeaseConfig};
use zmq_proxy_operator::metrics::Metrics;
use zmq_proxy_operator::reconcile::{self, Context};
use zmq_proxy_operator::status::{self, DEGRADED, PROGRESSING, READY};

const IMAGE: &str = "ghcr.io/zmq-proxy-operator/zmq-proxy:envtest";
const DEADLINE: Duration = Duration::from_secs(60);

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

async fn install_crd(client: &Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/zmqproxy.yaml");
    let text = std::fs::read_to_string(path).expect("crds/zmqproxy.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // A rule that does not compile, or costs too much, makes the API server refuse the CRD here.
    crds.create(&PostParams::default(), &crd).await.expect("the API server accepts the CRD");
    let established =
        await_condition(crds, "zmqproxies.zmqproxy.io", conditions::is_crd_established());
    tokio::time::timeout(DEADLINE, established)
        .await
        .expect("CRD established within the deadline")
        .expect("watching the CRD");
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace created");
}

/// Every ZmqProxy document of examples/*.yaml (other kinds and files are skipped).
fn examples() -> Vec<(String, Value)> {
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
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = <Value as serde::Deserialize>::deserialize(doc) else { continue };
            if value["kind"] == "ZmqProxy" && value["apiVersion"] == "zmqproxy.io/v1alpha1" {
                let file =
                    path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
                found.push((file, value));
            }
        }
    }
    found
}

fn condition(zp: &ZmqProxy, type_: &str) -> Option<(String, String, Option<i64>, String)> {
    let c = status::condition(zp.status.as_ref()?, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.observed_generation, c.message.clone()))
}

fn field_manager() -> PatchParams {
    PatchParams::apply("envtest-user").force()
}

/// Simulates the Deployment controller and kubelet: every pod of the current generation ready.
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
    for (kind, meta) in [("Deployment", deployment.meta()), ("Service", service.meta())] {
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{kind} owners");
        assert_eq!(owners[0].uid, uid, "{kind} is owned by the ZmqProxy");
        assert_eq!(owners[0].controller, Some(true), "{kind} is controlled by the ZmqProxy");
        assert_eq!(owners[0].kind, "ZmqProxy");
    }
    let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    let frontend_type = manifest["spec"]["frontend"]["type"].as_str().expect("frontend type");
    let frontend_port = manifest["spec"]["frontend"]["port"].as_i64().expect("frontend port");
    assert!(
        args.windows(2).any(|w| w[0] == "--frontend-type" && w[1] == frontend_type),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--frontend-bind" && w[1] == format!("tcp://0.0.0.0:{frontend_port}")),
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
    assert_eq!(condition(&zp, DEGRADED).map(|c| c.0), Some("False".to_string()));
    assert_eq!(
        status.endpoints.as_ref().map(|e| e.frontend.clone()),
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
                "apiVersion": "apps/v1", "kind": "Deployment", "spec": scale["spec"],
            })),
        )
        .await
        .expect("deployment scaled by someone else");
    eventually("the Deployment to be scaled back", || async {
        let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
        Ok((d.spec.and_then(|s| s.replicas) == Some(replicas)).then_some(()))
    })
    .await;

    // Scaling out adds the headless Service and says so; scaling back removes it.
    let headless = format!("{name}-pods");
    zps.patch(
        &name,
        &field_manager(),
        &Patch::Apply(&{
            let mut m = manifest.clone();
            m["spec"]["replicas"] = json!(3);
            m
        }),
    )
    .await
    .expect("scaled to 3");
    let hs = eventually("the headless Service", || async {
        services.get_opt(&headless).await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(hs.spec.as_ref().and_then(|s| s.cluster_ip.clone()).as_deref(), Some("None"));
    wait_for_status(&zps, &name, "the Ready message to name the headless Service", |zp| {
        condition(zp, READY).is_some_and(|(_, _, g, m)| {
            g == zp.metadata.generation && m.contains(&format!("{headless}.{namespace}.svc"))
        })
    })
    .await;
    let strategy = deployments.get(&name).await.expect("deployment").spec.and_then(|s| s.strategy);
    assert_eq!(strategy.and_then(|s| s.type_).as_deref(), Some("RollingUpdate"));
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
    eventually("the headless Service to be deleted", || async {
        let s = services.get_opt(&headless).await.map_err(|e| e.to_string())?;
        // No garbage collector here, but the operator deletes it itself.
        Ok(s.is_none().then_some(()))
    })
    .await;
    // RollingUpdate -> Recreate through server-side apply must be accepted by validation.
    eventually("the Recreate strategy", || async {
        let d = deployments.get(&name).await.map_err(|e| e.to_string())?;
        let s = d.spec.and_then(|s| s.strategy);
        Ok((s.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
            && s.as_ref().is_some_and(|s| s.rolling_update.is_none()))
        .then_some(()))
    })
    .await;

    // Events tell what the operator did.
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let listed = events.list(&ListParams::default()).await.expect("events");
    let reasons: Vec<String> = listed
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["Created", "Updated", "Deleted"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event: {reasons:?}");
    }
}

/// (what is wrong, the spec, text the API server's message must contain)
fn invalid_specs() -> Vec<(&'static str, Value, &'static str)> {
    let q = |extra: Value| {
        let mut spec = json!({"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        spec
    };
    vec![
        (
            "unsupported pair",
            q(json!({"backend": {"type": "PUSH", "port": 5556}})),
            "spec.backend.type",
        ),
        ("PAIR capture", q(json!({"capture": {"type": "PAIR", "port": 5557}})), "no PAIR socket"),
        (
            "PAIR capture field",
            q(json!({"capture": {"type": "PAIR", "port": 5557}})),
            "spec.capture.type",
        ),
        (
            "ROUTER capture",
            q(json!({"capture": {"type": "ROUTER", "port": 5557}})),
            "spec.capture.type",
        ),
        (
            "unknown socket type",
            q(json!({"frontend": {"type": "STREAM", "port": 5555}})),
            "spec.frontend.type",
        ),
        ("port 0", q(json!({"frontend": {"type": "ROUTER", "port": 0}})), "spec.frontend.port"),
        (
            "port 65536",
            q(json!({"backend": {"type": "DEALER", "port": 65536}})),
            "spec.backend.port",
        ),
        (
            "duplicate port",
            q(json!({"backend": {"type": "DEALER", "port": 5555}})),
            "spec.backend.port",
        ),
        ("control on a socket port", q(json!({"control": {"port": 5556}})), "spec.control.port"),
        ("metrics on a socket port", q(json!({"metricsPort": 5555})), "spec.metricsPort"),
        ("negative replicas", q(json!({"replicas": -1})), "spec.replicas"),
        ("missing backend", json!({"frontend": {"type": "ROUTER", "port": 5555}}), "spec.backend"),
        ("bad service type", q(json!({"serviceType": "ExternalName"})), "spec.serviceType"),
    ]
}

async fn invalid_objects_are_refused(client: &Client, namespace: &str) {
    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    for (i, (what, spec, needle)) in invalid_specs().into_iter().enumerate() {
        let manifest = json!({
            "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
            "metadata": {"name": format!("bad-{i}"), "namespace": namespace},
            "spec": spec,
        });
        match zps.patch(&format!("bad-{i}"), &field_manager(), &Patch::Apply(&manifest)).await {
            Ok(_) => panic!("{what}: the API server accepted an invalid object"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {}", status.message);
                assert!(
                    status.message.contains(needle),
                    "{what}: message lacks {needle:?}: {}",
                    status.message
                );
                eprintln!("refused ({what}): {}", status.message);
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
    let dotted = json!({
        "apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "metadata": {"name": "tasks.v2", "namespace": namespace},
        "spec": {"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}},
    });
    match zps.patch("tasks.v2", &field_manager(), &Patch::Apply(&dotted)).await {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains("metadata.name"), "{}", status.message)
        }
        other => panic!("a dotted name must be refused: {other:?}"),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_against_a_real_api_server() {
    let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") else {
        // Straight to the process's stderr: the test harness captures eprintln! of passing
        // tests, and the skip must show in the output.
        let _ = writeln!(std::io::stderr(), "skipped: KUBEBUILDER_ASSETS is unset");
        return;
    };
    let plane = ControlPlane::start(Path::new(&assets))
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    eprintln!("control plane at {}", plane.url);
    let client = plane.client.clone();
    let version = client.apiserver_version().await.expect("version");
    eprintln!("kube-apiserver {}", version.git_version);

    install_crd(&client).await;

    let metrics = Arc::new(Metrics::new());
    let ctx = Context::new(
        client.clone(),
        BuildOptions { default_image: IMAGE.into(), ..Default::default() },
        metrics.clone(),
    );
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let controller = tokio::spawn(reconcile::run(ctx, None, async move {
        let _ = stop_rx.await;
    }));

    let mut examples = examples();
    assert!(!examples.is_empty(), "examples/*.yaml holds no ZmqProxy");
    // The shared queue is the example every user starts from: run it first.
    examples.sort_by_key(|(file, _)| file != "shared-queue.yaml");
    for (i, (file, manifest)) in examples.into_iter().enumerate() {
        let namespace = format!("example-{i}");
        create_namespace(&client, &namespace).await;
        example_lifecycle(&client, &metrics, &namespace, &file, manifest).await;
    }

    create_namespace(&client, "invalid").await;
    invalid_objects_are_refused(&client, "invalid").await;

    create_namespace(&client, "leases").await;
    leader_election_hands_over(&client, "leases").await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .expect("the controller stops on shutdown")
        .expect("controller task");
    drop(plane);
}
