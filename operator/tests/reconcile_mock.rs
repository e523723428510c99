//! Reconcile against a mocked API server (tower-test): each scenario is a [`Script`] of the exact
//! requests the reconciler must make, in order, with the responses the API server gives. A request
//! beyond the script fails the test, which is how "an unchanged resync makes no writes" is proven.
//! Without caches every child is read from the server: the steering ConfigMap first (a new pod
//! must mount the current `spec.paused`), then the Deployment an older operator may have left (the
//! migration's check), the StatefulSet, both Services and the PodDisruptionBudget. Assertions look
//! the requests up by method and path ([`Requests::find`]), so each names what it inspects.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use zmq_proxy_api::socket::SocketType;
use zmq_proxy_operator::build::pod_monitor::pod_monitor;
use zmq_proxy_operator::build::{self, BuildOptions};
use zmq_proxy_operator::context::{Context, Error, MANAGER};
use zmq_proxy_operator::crd::{Monitoring, PodDisruptionBudgetSpec, ZmqProxy};
use zmq_proxy_operator::diff;
use zmq_proxy_operator::metrics::Metrics;
use zmq_proxy_operator::names::NameCaches;
use zmq_proxy_operator::reconcile::{RESYNC, STEERING_GENERATION, error_policy, reconcile};
use zmq_proxy_operator::status;
use zmq_proxy_operator::watches::ChildCaches;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const IMAGE: &str = "ghcr.io/zmq-proxy-operator/zmq-proxy:test";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/q/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/q/statefulsets";
const SERVICES: &str = "/api/v1/namespaces/q/services";
const SECRETS: &str = "/api/v1/namespaces/q/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/q/configmaps";
const PDBS: &str = "/apis/policy/v1/namespaces/q/poddisruptionbudgets";
const PODS: &str = "/api/v1/namespaces/q/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/q/events";
const ZMQPROXIES: &str = "/apis/zmqproxy.io/v1alpha1/namespaces/q/zmqproxies";
const MONITORING_V1: &str = "/apis/monitoring.coreos.com/v1";
const PODMONITORS: &str = "/apis/monitoring.coreos.com/v1/namespaces/q/podmonitors";

/// The path of object `name` in `collection` (one of the collection paths above).
fn at(collection: &str, name: &str) -> String {
    format!("{collection}/{name}")
}

/// How the mocked API server answers one expected request.
enum Reply {
    /// 404 NotFound.
    NotFound,
    /// 200 with this object.
    Object(Value),
    /// Echo the request body back (apply, create, status patch), as the API server does.
    Echo,
    /// An error Status with this code and reason.
    Fail(u16, &'static str),
    /// A status patch of this object: the object with the patch's status.
    StatusOf(Box<ZmqProxy>),
}

struct Expect {
    method: Method,
    path: String,
    reply: Reply,
}

/// The requests a scenario expects, in order, each with the server's reply. The steps that open
/// most reconciles (the steering ConfigMap, the old Deployment's lookup, children found as
/// wanted) are one call each.
#[derive(Default)]
struct Script(Vec<Expect>);

impl Script {
    fn new() -> Self {
        Self::default()
    }

    fn step(mut self, method: Method, path: impl Into<String>, reply: Reply) -> Self {
        self.0.push(Expect { method, path: path.into(), reply });
        self
    }

    /// GET `path`, answered with `object`.
    fn found(self, path: impl Into<String>, object: Value) -> Self {
        self.step(Method::GET, path, Reply::Object(object))
    }

    /// GET `path`, answered 404.
    fn missing(self, path: impl Into<String>) -> Self {
        self.step(Method::GET, path, Reply::NotFound)
    }

    /// PATCH `path` (an apply or a merge patch), answered with the body echoed.
    fn patch(self, path: impl Into<String>) -> Self {
        self.step(Method::PATCH, path, Reply::Echo)
    }

    /// PATCH `path`, answered with `reply`.
    fn patch_reply(self, path: impl Into<String>, reply: Reply) -> Self {
        self.step(Method::PATCH, path, reply)
    }

    /// DELETE `path`, answered with `reply`.
    fn delete(self, path: impl Into<String>, reply: Reply) -> Self {
        self.step(Method::DELETE, path, reply)
    }

    /// A child that is not there: read (404), then applied.
    fn create(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.missing(path.clone()).patch(path)
    }

    /// The status of `zp` applied; the server answers with `zp` carrying that status.
    fn status(self, zp: &ZmqProxy) -> Self {
        let name = zp.metadata.name.as_deref().unwrap_or_default();
        self.step(
            Method::PATCH,
            format!("{}/status", at(ZMQPROXIES, name)),
            Reply::StatusOf(Box::new(zp.clone())),
        )
    }

    /// One event posted.
    fn event(self) -> Self {
        self.step(Method::POST, EVENTS, Reply::Echo)
    }

    /// `zp`'s steering ConfigMap read and found as it wants it.
    fn steering_found(self, zp: &ZmqProxy) -> Self {
        self.found(steering_path(zp), server_view(&children(zp).steering))
    }

    /// `zp`'s steering ConfigMap read and missing: an object never paused gets none.
    fn steering_missing(self, zp: &ZmqProxy) -> Self {
        self.missing(steering_path(zp))
    }

    /// Without caches and with one replica: the federation's Service, not wanted, is looked up
    /// (to delete it if this object owns one) before the Deployment.
    fn no_old_deployment(self) -> Self {
        self.missing(at(SERVICES, "tasks-federation"))
    }

    /// Without caches, after the Service: no StatefulSet of an earlier version, and no headless
    /// Service of one.
    fn no_stateful_set(self) -> Self {
        self.missing(at(STATEFULSETS, "tasks")).missing(at(SERVICES, "tasks-pods"))
    }

    /// Without caches and below two replicas: the PDB that is not wanted is looked up (to delete
    /// it if this object owns one) after the Services.
    fn no_pdb(self) -> Self {
        self.missing(at(PDBS, "tasks"))
    }

    /// Without caches, after the steering ConfigMap (and any nudge): the other children of a
    /// reconciled one-replica object, each found as wanted (no PDB below two replicas).
    fn other_children_unchanged(self, sts: &Value, c: &build::Children) -> Self {
        self.no_old_deployment()
            .found(at(DEPLOYMENTS, "tasks"), sts.clone())
            .found(at(SERVICES, "tasks"), server_view(&c.service))
            .no_stateful_set()
            .no_pdb()
    }

    /// The six reads of a reconcile of an up-to-date [`reconciled`] object up to the monitoring
    /// part: the steering ConfigMap and [`Script::other_children_unchanged`].
    fn children_unchanged(self, sts: &Value, c: &build::Children) -> Self {
        self.found(at(CONFIGMAPS, "tasks-steering"), server_view(&c.steering))
            .other_children_unchanged(sts, c)
    }

    /// Discovery finds the monitoring API, the PodMonitor is missing and applied, the status and
    /// the event.
    fn pod_monitor_created(self, zp: &ZmqProxy) -> Self {
        self.found(MONITORING_V1, monitoring_resources())
            .create(at(PODMONITORS, "tasks"))
            .status(zp)
            .event()
    }
}

fn steering_path(zp: &ZmqProxy) -> String {
    at(CONFIGMAPS, &format!("{}-steering", zp.metadata.name.as_deref().unwrap_or_default()))
}

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

/// The requests of one run, in order; looked up by method and path.
#[derive(Debug)]
struct Requests(Vec<Seen>);

impl Deref for Requests {
    type Target = [Seen];

    fn deref(&self) -> &[Seen] {
        &self.0
    }
}

impl Requests {
    /// The one request `method path`; fails when there is none or more than one.
    fn find(&self, method: Method, path: &str) -> &Seen {
        let found: Vec<&Seen> =
            self.0.iter().filter(|s| s.method == method && s.path == path).collect();
        match found[..] {
            [one] => one,
            _ => panic!("expected one {method} {path}, saw {}: {:?}", found.len(), self.0),
        }
    }

    /// The body of the one server-side apply to `path`.
    fn applied(&self, path: &str) -> &Value {
        let seen = self.find(Method::PATCH, path);
        assert!(is_apply(seen), "not a server-side apply: {seen:?}");
        &seen.body
    }

    /// The body of the one status apply of the object `tasks`.
    fn status(&self) -> &Value {
        self.applied(&format!("{}/status", at(ZMQPROXIES, "tasks")))
    }

    /// The conditions of [`Requests::status`].
    fn conditions(&self) -> Vec<Value> {
        self.status()["status"]["conditions"].as_array().expect("conditions").clone()
    }

    /// The condition `kind` of [`Requests::status`].
    fn condition(&self, kind: &str) -> Value {
        let conditions = self.conditions();
        conditions.into_iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind}"))
    }

    /// The bodies of the events posted, in order.
    fn events(&self) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|s| s.method == Method::POST && s.path == EVENTS)
            .map(|s| &s.body)
            .collect()
    }

    /// The body of the one event posted; fails when there is none or more than one.
    fn event(&self) -> &Value {
        match self.events()[..] {
            [one] => one,
            ref all => panic!("expected one event, saw {}: {all:?}", all.len()),
        }
    }
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("mocked {reason}"), "reason": reason, "code": code})
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("response builds")
}

/// Serves `script` in order, asserting method and path of each request; returns what it saw.
async fn serve(mut handle: Handle, script: Script) -> (Handle, Requests) {
    let mut seen = Vec::new();
    for (i, step) in script.0.into_iter().enumerate() {
        let (request, send) = handle.next_request().await.unwrap_or_else(|| {
            panic!("step {i}: expected {} {}, got nothing", step.method, step.path)
        });
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        assert_eq!(
            (&method, path.as_str()),
            (&step.method, step.path.as_str()),
            "step {i}: unexpected request (query {query}, body {body})"
        );
        let response = match step.reply {
            Reply::NotFound => respond(404, &status_body(404, "NotFound")),
            Reply::Object(v) => respond(200, &v),
            Reply::Echo => {
                let mut v = body.clone();
                if v["metadata"].is_object() {
                    v["metadata"]["uid"] = json!("child-uid");
                    v["metadata"]["resourceVersion"] = json!("1");
                    v["metadata"]["generation"] = json!(1);
                }
                respond(if method == Method::POST { 201 } else { 200 }, &v)
            }
            Reply::Fail(code, reason) => respond(code, &status_body(code, reason)),
            Reply::StatusOf(zp) => {
                let mut v = serde_json::to_value(&*zp).expect("object serializes");
                v["status"] = body["status"].clone();
                // A write gives the object a new resourceVersion.
                if let Some(version) = v["metadata"]["resourceVersion"].as_str() {
                    v["metadata"]["resourceVersion"] = json!(format!("{version}1"));
                }
                respond(200, &v)
            }
        };
        send.send_response(response);
        seen.push(Seen { method, path, query, body });
    }
    (handle, Requests(seen))
}

/// A context whose client is served by the returned handle.
fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(
        Client::new(service, "q"),
        BuildOptions { default_image: IMAGE.into(), ..Default::default() },
        Arc::new(Metrics::new()),
    );
    (ctx, handle)
}

/// Runs `reconcile` against `script`; fails if it makes a request the script does not list.
async fn run(zp: ZmqProxy, script: Script) -> (Result<Action, Error>, Requests, Arc<Context>) {
    run_cached(zp, None, script).await
}

/// [`run`] with the reconciler reading children from `caches` first.
async fn run_cached(
    zp: ZmqProxy,
    caches: Option<ChildCaches>,
    script: Script,
) -> (Result<Action, Error>, Requests, Arc<Context>) {
    let (ctx, handle) = context();
    ctx.use_caches(caches);
    let (result, seen, _) = run_on(&ctx, handle, zp, script).await;
    (result, seen, ctx)
}

/// Runs `reconcile` of `zp` on an existing context whose client is served by `handle`.
async fn run_on(
    ctx: &Arc<Context>,
    handle: Handle,
    zp: ZmqProxy,
    script: Script,
) -> (Result<Action, Error>, Requests, Handle) {
    let server = tokio::spawn(serve(handle, script));
    let reconciler = tokio::spawn(reconcile(Arc::new(zp), ctx.clone()));
    let (mut handle, seen) = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scenario's requests were made within 10 s")
        .expect("mock server task");
    let result = tokio::select! {
        r = reconciler => r.expect("reconcile task"),
        extra = handle.next_request() => {
            let (request, _) = extra.expect("client alive");
            panic!("request beyond the scenario: {} {}", request.method(), request.uri());
        }
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("reconcile did not finish"),
    };
    (result, seen, handle)
}

/// Caches as the controller's watches fill them: listed (complete), holding these Deployments,
/// Services and ConfigMaps, no pods and no StatefulSets.
fn caches(deployments: &[Value], services: &[Value], config_maps: &[Value]) -> ChildCaches {
    caches_with(deployments, services, config_maps, &[], &[])
}

/// [`caches`] with pods and StatefulSets (of an earlier version) too.
fn caches_with(
    deployments: &[Value],
    services: &[Value],
    config_maps: &[Value],
    pods: &[Value],
    stateful_sets: &[Value],
) -> ChildCaches {
    caches_all(deployments, services, config_maps, &[], pods, stateful_sets)
}

/// [`caches_with`] with PodDisruptionBudgets too.
fn caches_all(
    deployments: &[Value],
    services: &[Value],
    config_maps: &[Value],
    pdbs: &[Value],
    pods: &[Value],
    stateful_sets: &[Value],
) -> ChildCaches {
    fn listed<K>(objects: &[Value]) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let mut writer = Writer::<K>::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            let object: K = serde_json::from_value(o.clone()).expect("cached object");
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        writer.as_reader()
    }
    ChildCaches {
        stateful_sets: listed(stateful_sets),
        services: listed(services),
        pods: listed(pods),
        deployments: listed(deployments),
        pod_disruption_budgets: listed(pdbs),
        config_maps: listed(config_maps),
        names: None,
    }
}

/// The taken names as the metadata-only watches list them: `taken` of each kind, in `q`.
fn names(config_maps: &[&str], services: &[&str], deployments: &[&str]) -> NameCaches {
    fn listed<K>(names: &[&str]) -> Store<PartialObjectMeta<K>>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Default + 'static,
    {
        let mut writer = Writer::<PartialObjectMeta<K>>::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for name in names {
            let mut object = PartialObjectMeta::<K>::default();
            object.metadata.name = Some(name.to_string());
            object.metadata.namespace = Some("q".to_string());
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        writer.as_reader()
    }
    NameCaches {
        config_maps: listed(config_maps),
        services: listed(services),
        deployments: listed(deployments),
    }
}

/// A fixture moved to namespace `q`, where every scenario's paths point.
fn fixture(name: &str) -> ZmqProxy {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut zp: ZmqProxy = serde_yaml::from_str(&std::fs::read_to_string(&path).expect("fixture"))
        .expect("fixture parses");
    zp.metadata.namespace = Some("q".into());
    zp
}

fn children(zp: &ZmqProxy) -> build::Children {
    build::children(zp, &BuildOptions { default_image: IMAGE.into(), ..Default::default() })
        .expect("builds")
}

/// What the API server holds after an earlier apply of `obj`: the stamped object plus the
/// fields the server adds (defaults, uid, resourceVersion, a revision annotation).
fn server_view<T: serde::Serialize>(obj: &T) -> Value {
    let mut v = diff::stamp(serde_json::to_value(obj).expect("serializes"));
    v["metadata"]["uid"] = json!("child-uid");
    v["metadata"]["resourceVersion"] = json!("7");
    v["metadata"]["generation"] = json!(1);
    v["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    if v["kind"] == "Deployment" {
        v["spec"]["revisionHistoryLimit"] = json!(10);
        v["spec"]["progressDeadlineSeconds"] = json!(600);
        let c = &mut v["spec"]["template"]["spec"]["containers"][0];
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["readinessProbe"]["httpGet"]["scheme"] = json!("HTTP");
        c["readinessProbe"]["successThreshold"] = json!(1);
        v["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
    } else if v["kind"] == "PodDisruptionBudget" {
        v["status"] = json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0,
            "expectedPods": 0, "observedGeneration": 1});
    } else if v["kind"] == "Service" {
        if v["spec"]["clusterIP"].is_null() {
            v["spec"]["clusterIP"] = json!("10.0.0.12");
        }
        v["spec"]["sessionAffinity"] = json!("None");
        v["spec"]["internalTrafficPolicy"] = json!("Cluster");
    }
    v
}

fn ready_status(replicas: i32) -> Value {
    json!({"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
           "updatedReplicas": replicas, "availableReplicas": replicas})
}

/// `zp` carrying the status the operator computes for `stateful_set` and no ready pod, as after
/// an earlier reconcile.
fn with_status(zp: ZmqProxy, stateful_set: &Value) -> ZmqProxy {
    with_status_pods(zp, stateful_set, &[])
}

/// [`with_status`] with these pods seen.
/// A federated object's status also says what its pods reported; none of these answers (they
/// are not ready, or not listed).
fn with_status_pods(mut zp: ZmqProxy, deployment: &Value, _pods: &[Value]) -> ZmqProxy {
    let d: Deployment = serde_json::from_value(deployment.clone()).expect("deployment");
    let at = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time");
    let mut computed = status::compute(&zp, Some(&d), None, at);
    if let Some(pattern) = build::federation_of(&zp.spec) {
        zmq_proxy_operator::federation_status::report(&zp, &mut computed, pattern, &[], at);
    }
    zp.status = Some(computed);
    zp
}

/// What the API server returns for the metadata of `zp`'s federation Secret, as the operator
/// created it.
fn federation_secret(zp: &ZmqProxy) -> Value {
    let (secret, public) = zmq_proxy_operator::federation_secret::generate_keypair();
    let mut v = server_view(&build::federation_secret(zp, &secret, &public).expect("secret"));
    v.as_object_mut().map(|o| o.remove("data"));
    v
}

/// `zp` carrying the status a status apply of the server saw.
fn with_status_seen(zp: &ZmqProxy, seen: &Requests) -> ZmqProxy {
    let mut v = serde_json::to_value(zp).expect("serializes");
    v["status"] = seen.status()["status"].clone();
    serde_json::from_value(v).expect("object")
}

/// Pod `name` of the object `tasks`, with its Ready condition, owned by `owner_kind`.
fn pod(name: &str, ready: bool, owner_kind: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "q",
               "labels": {"app.kubernetes.io/instance": "tasks",
                          "app.kubernetes.io/managed-by": "zmq-proxy-operator"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "tasks",
                                    "uid": "owner-uid", "controller": true}]},
           "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn is_apply(seen: &Seen) -> bool {
    seen.method == Method::PATCH
        && seen.query.contains(&format!("fieldManager={MANAGER}"))
        && seen.query.contains("force=true")
}

/// A reconciled, ready one-replica `zp` at `generation`: the object with its status, its
/// StatefulSet as the server holds it, and its children.
fn reconciled(mut zp: ZmqProxy, generation: i64) -> (ZmqProxy, Value, build::Children) {
    zp.metadata.generation = Some(generation);
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    (with_status(zp, &sts), sts, c)
}

#[tokio::test]
async fn create_path_applies_the_deployment_and_the_service_then_status() {
    let zp = fixture("minimal.yaml");
    let script = Script::new()
        .steering_missing(&zp)
        .no_old_deployment()
        .create(at(DEPLOYMENTS, "tasks"))
        .create(at(SERVICES, "tasks"))
        .no_stateful_set()
        .no_pdb()
        .status(&zp)
        // One event for every child, after the status.
        .event();
    let (result, seen, ctx) = run(zp, script).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));

    assert!(!seen.iter().any(|s| is_apply(s) && s.path.starts_with(CONFIGMAPS)), "{seen:?}");
    let volumes = &seen.applied(&at(DEPLOYMENTS, "tasks"))["spec"]["template"]["spec"]["volumes"];
    let steering = volumes.as_array().and_then(|v| v.iter().find(|v| v["name"] == "steering"));
    assert_eq!(steering.map(|v| &v["configMap"]["optional"]), Some(&json!(true)), "{volumes}");

    let deployment = seen.applied(&at(DEPLOYMENTS, "tasks"));
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["kind"], "ZmqProxy");
    assert!(deployment["metadata"]["annotations"][diff::FINGERPRINT_ANNOTATION].is_string());
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["name"], "proxy");

    assert_eq!(seen.applied(&at(SERVICES, "tasks"))["kind"], "Service");

    let event = seen.event();
    assert_eq!(event["reason"], "Created");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["kind"], "ZmqProxy");
    assert_eq!(event["note"], "Created Deployment tasks, Service tasks");

    let status = seen.status();
    assert_eq!(status["kind"], "ZmqProxy");
    let conditions = seen.conditions();
    let types: Vec<&str> = conditions.iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded", "Paused"]);
    assert_eq!(conditions[0]["status"], "False");
    assert!(conditions.iter().all(|c| c["observedGeneration"] == 1));
    assert_eq!(status["status"]["endpoints"]["frontend"], "tcp://tasks.q.svc:5555");
    assert!(status["status"].get("federation").is_none());
    assert_eq!(ctx.metrics.reconcile_count(), 1);
}

#[tokio::test]
async fn unchanged_resync_makes_no_writes() {
    let mut zp = fixture("full.yaml");
    // The API server rewrites quantities to canonical form: 0.5 comes back as 500m.
    if let Some(limits) = zp.spec.resources.as_mut().and_then(|r| r.limits.as_mut()) {
        limits.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("0.5".into()),
        );
    }
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("500m");
    sts["status"] = ready_status(3);
    let zp = with_status(zp, &sts);
    let script = Script::new()
        .steering_found(&zp)
        // A federation: its Secret (metadata only) and its Service, found as wanted.
        .found(at(SECRETS, "tasks-federation"), federation_secret(&zp))
        .found(at(SERVICES, "tasks-federation"), server_view(c.federation.as_ref().expect("svc")))
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .no_stateful_set()
        .found(at(PDBS, "tasks"), server_view(c.pdb.as_ref().expect("PDB")));
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.iter().all(|s| s.method == Method::GET), "only reads: {seen:?}");
    let secret = seen.find(Method::GET, &at(SECRETS, "tasks-federation"));
    assert!(secret.query.is_empty(), "one name, no list: {secret:?}");
}

#[tokio::test]
async fn edited_deployment_is_reapplied_and_reported() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    // Someone scaled the Deployment by hand.
    sts["spec"]["replicas"] = json!(4);
    let mut repaired = server_view(&c.deployment);
    repaired["status"] = ready_status(1);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .patch_reply(at(DEPLOYMENTS, "tasks"), Reply::Object(repaired))
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .no_stateful_set()
        .no_pdb()
        .event();
    let (result, seen, ctx) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.applied(&at(DEPLOYMENTS, "tasks"))["spec"]["replicas"], 1);
    assert_eq!(seen.event()["reason"], "Updated");
    assert_eq!(seen.event()["related"]["kind"], "Deployment", "one child: named as related");
    assert!(ctx.metrics.render().contains(
        "zmq_proxy_operator_child_writes_total{kind=\"Deployment\",action=\"Updated\"} 1"
    ));
}

#[tokio::test]
async fn deleted_service_is_recreated() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .create(at(SERVICES, "tasks"))
        .no_stateful_set()
        .no_pdb()
        .event();
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["reason"], "Created");
    assert_eq!(seen.event()["note"], "Created Service tasks");
}

#[tokio::test]
async fn scaling_down_to_one_replica_deletes_the_pdb_and_keeps_the_headless_service() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut three = zp.clone();
    three.spec.replicas = 3;
    let old_pdb = server_view(children(&three).pdb.as_ref().expect("PDB"));
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .no_stateful_set()
        .found(at(PDBS, "tasks"), old_pdb.clone())
        .delete(at(PDBS, "tasks"), Reply::Object(old_pdb))
        .event();
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["reason"], "Deleted");
    assert_eq!(seen.event()["note"], "Deleted PodDisruptionBudget tasks");
}

/// What an earlier version left: the StatefulSet `tasks` controlled by the object.
fn old_stateful_set(zp: &ZmqProxy) -> Value {
    let owner = zp.controller_owner_ref(&()).expect("owner reference");
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "tasks", "namespace": "q", "uid": "old-uid", "resourceVersion": "3",
                        "labels": {"app.kubernetes.io/managed-by": "zmq-proxy-operator"},
                        "ownerReferences": [owner]},
           "spec": {"serviceName": "tasks-pods",
                    "selector": {"matchLabels": {"app.kubernetes.io/instance": "tasks"}},
                    "template": {"spec": {"containers": [{"name": "proxy"}]}}},
           "status": {"replicas": 1, "readyReplicas": 1}})
}

/// ... and its headless Service `tasks-pods`.
fn old_headless(zp: &ZmqProxy) -> Value {
    let owner = zp.controller_owner_ref(&()).expect("owner reference");
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "tasks-pods", "namespace": "q", "uid": "old-svc", "resourceVersion": "4",
                        "labels": {"app.kubernetes.io/managed-by": "zmq-proxy-operator",
                                   "app.kubernetes.io/instance": "tasks"},
                        "ownerReferences": [owner]},
           "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/instance": "tasks"}}})
}

/// The migration from an earlier version keeps serving: the StatefulSet stays while the
/// Deployment's pods start (Progressing says Migrating), goes (background: its pods drain) once
/// the Deployment is available, and its headless Service goes once it is gone.
#[tokio::test]
async fn migration_deletes_the_stateful_set_only_once_the_deployment_serves() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let sts = old_stateful_set(&zp);
    let steering = [server_view(&c.steering)];
    let services = [server_view(&c.service), old_headless(&zp)];
    let mut starting = server_view(&c.deployment);
    starting["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1});
    let cached =
        caches_with(&[starting.clone()], &services, &steering, &[], std::slice::from_ref(&sts));
    let (result, seen, _) = run_cached(zp.clone(), Some(cached), Script::new().status(&zp)).await;
    assert!(result.is_ok(), "{result:?}");
    let progressing = seen.condition(status::PROGRESSING);
    assert_eq!(
        (&progressing["status"], &progressing["reason"]),
        (&json!("True"), &json!("Migrating"))
    );
    assert!(!seen.iter().any(|s| s.method == Method::DELETE), "{seen:?}");
    let zp = with_status_seen(&zp, &seen);

    // Available: the StatefulSet is deleted, and still waited for.
    let mut serving = server_view(&c.deployment);
    serving["status"] = ready_status(1);
    let cached =
        caches_with(&[serving.clone()], &services, &steering, &[], std::slice::from_ref(&sts));
    let script = Script::new()
        .delete(at(STATEFULSETS, "tasks"), Reply::Object(sts.clone()))
        .status(&zp)
        .event();
    let (result, seen, _) = run_cached(zp.clone(), Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    let delete = &seen.find(Method::DELETE, &at(STATEFULSETS, "tasks")).body;
    assert_eq!(delete["propagationPolicy"], "Background", "{delete:?}");
    assert_eq!(seen.event()["note"], "Deleted StatefulSet tasks");
    assert_eq!(seen.condition(status::READY)["status"], "True");
    let zp = with_status_seen(&zp, &seen);

    // Gone: its headless Service goes too, and the rollout is complete.
    let cached = caches_with(&[serving], &services, &steering, &[], &[]);
    let script = Script::new()
        .delete(at(SERVICES, "tasks-pods"), Reply::Object(old_headless(&zp)))
        .status(&zp)
        .event();
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["note"], "Deleted Service tasks-pods");
    assert_eq!(seen.condition(status::PROGRESSING)["reason"], "RolloutComplete");
}

/// Without caches the StatefulSet is read from the server; a Deployment just created does not
/// serve yet, so nothing is deleted.
#[tokio::test]
async fn migration_without_caches_reads_the_stateful_set_and_waits() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .create(at(DEPLOYMENTS, "tasks"))
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .found(at(STATEFULSETS, "tasks"), old_stateful_set(&zp))
        .no_pdb()
        .status(&zp)
        .event();
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["note"], "Created Deployment tasks");
    assert_eq!(seen.condition(status::PROGRESSING)["reason"], "Migrating");
}

#[tokio::test]
async fn a_stateful_set_of_someone_else_is_left_alone() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut foreign = old_stateful_set(&zp);
    foreign["metadata"]["ownerReferences"] = json!([]);
    let mut deployment = server_view(&c.deployment);
    deployment["status"] = ready_status(1);
    let zp = with_status(zp, &deployment);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), deployment)
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .found(at(STATEFULSETS, "tasks"), foreign)
        .missing(at(SERVICES, "tasks-pods"))
        .no_pdb();
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.iter().all(|s| s.method == Method::GET), "{seen:?}");
}

#[tokio::test]
async fn apply_failure_publishes_a_warning_reports_degraded_and_backs_off() {
    let zp = fixture("minimal.yaml");
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .missing(at(DEPLOYMENTS, "tasks"))
        .patch_reply(at(DEPLOYMENTS, "tasks"), Reply::Fail(403, "Forbidden"))
        .event()
        .status(&zp);
    let (result, seen, ctx) = run(zp.clone(), script).await;
    let error = result.expect_err("the apply failed");
    assert_eq!(error.reason(), "ApplyFailed");
    assert_eq!(seen.event()["type"], "Warning");
    assert_eq!(seen.event()["reason"], "ApplyFailed");
    let degraded = seen.condition("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ApplyFailed");
    assert_eq!(ctx.metrics.failure_count("ApplyFailed"), 1);

    // Per-object exponential backoff, capped, and independent between objects.
    let zp = Arc::new(zp);
    let delays: Vec<Action> =
        (0..8).map(|_| error_policy(zp.clone(), &error, ctx.clone())).collect();
    let secs = [5, 10, 20, 40, 80, 160, 300, 300];
    assert_eq!(delays, secs.map(|s| Action::requeue(Duration::from_secs(s))));
    let mut other = (*zp).clone();
    other.metadata.name = Some("other".into());
    assert_eq!(
        error_policy(Arc::new(other), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn success_resets_the_backoff() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    let (ctx, handle) = context();
    let error = Error::InvalidSpec("x".into());
    let zp = Arc::new(zp);
    error_policy(zp.clone(), &error, ctx.clone());
    assert_eq!(
        error_policy(zp.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    let script = Script::new().children_unchanged(&sts, &c);
    let server = tokio::spawn(serve(handle, script));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(zp.clone(), ctx.clone()))
        .await
        .expect("reconcile finishes");
    assert!(result.is_ok(), "{result:?}");
    let _ = server.await.expect("server");
    assert_eq!(error_policy(zp, &error, ctx), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_service_of_someone_else_is_not_taken_over() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    let mut foreign: Service = c.service.clone();
    foreign.metadata.owner_references = None;
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .found(at(SERVICES, "tasks"), server_view(&foreign))
        .event()
        .status(&zp);
    let (result, seen, _) = run(zp, script).await;
    assert_eq!(result.expect_err("refused").reason(), "ChildNotOwned");
    assert_eq!(seen.event()["reason"], "ChildNotOwned");
    assert!(seen.event()["note"].as_str().is_some_and(|n| n.contains("Service tasks")));
}

#[tokio::test]
async fn invalid_spec_is_reported_without_touching_children() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.sockets.backend.socket_type = SocketType::Pub;
    let script = Script::new().event().status(&zp);
    let (result, seen, _) = run(zp, script).await;
    assert_eq!(result.expect_err("invalid").reason(), "InvalidSpec");
    let ready = &seen.conditions()[0];
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().is_some_and(|m| m.contains("spec.backend.type")), "{ready}");
}

#[tokio::test]
async fn object_being_deleted_is_left_to_the_garbage_collector() {
    let mut zp = fixture("minimal.yaml");
    zp.meta_mut().deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let (result, seen, _) = run(zp, Script::new()).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert!(seen.is_empty());
}

/// The status the mocked server returns must itself round-trip, or the unchanged scenario would
/// pass for the wrong reason.
#[test]
fn server_view_parses_back_into_the_typed_objects() {
    let zp = fixture("full.yaml");
    let c = children(&zp);
    let d: Deployment = serde_json::from_value(server_view(&c.deployment)).expect("deployment");
    assert!(d.status.as_ref().is_none_or(|s: &DeploymentStatus| s.replicas.unwrap_or(0) == 0));
    assert_eq!(d.spec.and_then(|s| s.revision_history_limit), Some(10));
    let s: Service = serde_json::from_value(server_view(&c.service)).expect("service");
    assert_eq!(s.spec.and_then(|s| s.cluster_ip).as_deref(), Some("10.0.0.12"));
}

/// One replica to three: a federation. Its key is generated once into a Secret of its own
/// (created, never applied over someone's), its Service created, and the Deployment rolled to
/// the federation's flags with the key mounted; the key is in no event and no status.
#[tokio::test]
async fn scaling_to_three_replicas_makes_a_federation_with_its_own_key() {
    let one = fixture("minimal.yaml");
    let old = children(&one);
    let mut deployment = server_view(&old.deployment);
    deployment["status"] = ready_status(1);
    let mut zp = with_status(one, &deployment);
    zp.spec.replicas = 3;
    zp.metadata.generation = Some(2);
    let script = Script::new()
        .steering_found(&zp)
        .missing(at(SECRETS, "tasks-federation"))
        .step(Method::POST, SECRETS, Reply::Echo)
        .create(at(SERVICES, "tasks-federation"))
        .found(at(DEPLOYMENTS, "tasks"), deployment)
        .patch(at(DEPLOYMENTS, "tasks"))
        .found(at(SERVICES, "tasks"), server_view(&old.service))
        .no_stateful_set()
        .create(at(PDBS, "tasks"))
        .status(&zp)
        .event()
        .event();
    let (result, seen, _) = run(zp, script).await;
    // The pods are not listed without caches: looked at again soon.
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(zmq_proxy_operator::reconcile::FEDERATION_RETRY)
    );
    let secret = &seen.find(Method::POST, SECRETS).body;
    assert_eq!(secret["metadata"]["name"], "tasks-federation");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "ZmqProxy");
    assert_eq!(secret["immutable"], true);
    let key = secret["data"]["secret-key"].as_str().expect("base64 key").to_string();
    let applied = seen.applied(&at(DEPLOYMENTS, "tasks"));
    assert_eq!(applied["spec"]["replicas"], 3);
    let args = applied["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--federation-peers") && args.contains("tasks-federation.q.svc"),
        "{args}"
    );
    assert!(!args.contains(&key), "the key is never an argument");
    assert_eq!(
        seen.applied(&at(SERVICES, "tasks-federation"))["spec"]["publishNotReadyAddresses"],
        true
    );
    assert_eq!(seen.applied(&at(PDBS, "tasks"))["spec"]["maxUnavailable"], 1);
    let events = seen.events();
    assert_eq!(
        events[0]["note"],
        "Created Secret tasks-federation, Service tasks-federation, PodDisruptionBudget tasks"
    );
    assert_eq!(events[1]["note"], "Updated Deployment tasks");
    let status = &seen.status()["status"];
    assert!(
        !status.to_string().contains(&key) && !events.iter().any(|e| e.to_string().contains(&key))
    );
    let ready = &status["conditions"][0];
    assert_eq!(ready["observedGeneration"], 2);
    assert!(
        ready["message"].as_str().is_some_and(|m| m.contains("one ROUTER/DEALER federation")),
        "{ready}"
    );
}

/// A Secret of the federation's name that this object did not create (planted with a known key,
/// or someone else's) is neither read nor overwritten: the reconcile stops before the
/// Deployment, with a Warning event and Degraded naming it.
#[tokio::test]
async fn a_foreign_federation_secret_is_refused_and_not_overwritten() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.replicas = 2;
    let mut foreign = federation_secret(&zp);
    foreign["metadata"]["ownerReferences"] = json!([]);
    let script = Script::new()
        .steering_missing(&zp)
        .found(at(SECRETS, "tasks-federation"), foreign)
        // The refusal.
        .event()
        .status(&zp);
    let (result, seen, _) = run(zp, script).await;
    assert_eq!(result.expect_err("refused").reason(), "ChildNotOwned");
    let refusal = seen.events()[0];
    assert_eq!(refusal["type"], "Warning");
    assert!(refusal["note"].as_str().is_some_and(|n| n.contains("Secret tasks-federation")));
    let degraded = seen.condition("Degraded");
    assert_eq!(
        (&degraded["status"], &degraded["reason"]),
        (&json!("True"), &json!("ChildNotOwned"))
    );
    assert!(!seen.iter().any(|s| s.path.starts_with(DEPLOYMENTS)), "{seen:?}");
}

// With the controller's caches: what a resync and a cold start cost.

#[tokio::test]
async fn unchanged_resync_from_the_caches_makes_no_request_at_all() {
    let zp = fixture("full.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(3);
    let pdb = server_view(c.pdb.as_ref().expect("three replicas: a PDB"));
    let pods: Vec<Value> =
        (0..3).map(|i| pod(&format!("tasks-{i}"), false, "ReplicaSet")).collect();
    let zp = with_status_pods(zp, &sts, &pods);
    let services =
        [server_view(&c.service), server_view(c.federation.as_ref().expect("federation"))];
    let steering = [server_view(&c.steering)];
    let cached = caches_all(&[sts], &services, &steering, &[pdb], &pods, &[]);
    let (result, seen, ctx) = run_cached(zp, Some(cached), Script::new()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(ctx.metrics.request_count("get"), 0);
}

/// Answers every `GET /federation` on `ip:port` with `body`, until the test ends.
async fn federation_answers(ip: &str, port: u16, body: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, port)).await.expect("bind on loopback");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
        }
    });
}

/// A federation of three ready replicas is asked on `/federation` (each pod at its own loopback
/// address), reported in `status.federation` with Federated=True in one status write, and looked
/// at again later; the same answers once more make no request at all.
#[tokio::test]
async fn a_federation_is_reported_from_its_pods_and_an_unchanged_one_writes_nothing() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.replicas = 3;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    zp.spec.metrics_port = i32::from(port);
    let c = children(&zp);
    let mut deployment = server_view(&c.deployment);
    deployment["status"] = ready_status(3);
    let ids = ["tasks-5b7d-a", "tasks-5b7d-b", "tasks-5b7d-c"];
    let mut pods = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 1);
        let members: Vec<Value> = ids
            .iter()
            .filter(|o| *o != id)
            .map(|o| json!({"id": o, "out": true, "in": true}))
            .collect();
        let body = json!({"id": id, "pattern": "ROUTER/DEALER", "members": members});
        federation_answers(&ip, port, body.to_string()).await;
        let mut p = pod(id, true, "ReplicaSet");
        p["status"]["podIP"] = json!(ip);
        pods.push(p);
    }
    let zp = with_status(zp, &deployment);
    let services = [server_view(&c.service), server_view(c.federation.as_ref().expect("svc"))];
    let pdb = [server_view(c.pdb.as_ref().expect("pdb"))];
    let steering = [server_view(&c.steering)];
    let cached = || caches_all(&[deployment.clone()], &services, &steering, &pdb, &pods, &[]);
    let (result, seen, _) = run_cached(zp.clone(), Some(cached()), Script::new().status(&zp)).await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(zmq_proxy_operator::reconcile::FEDERATION_REFRESH)
    );
    let federation = &seen.status()["status"]["federation"];
    assert_eq!(federation["members"], 3);
    assert_eq!(federation["linksUp"], 6);
    assert_eq!(federation["pattern"], "ROUTER/DEALER");
    assert_eq!(federation["replicas"][0], json!({"id": "tasks-5b7d-a", "linked": 2}));
    let federated = seen.condition(status::FEDERATED);
    assert_eq!((&federated["status"], &federated["reason"]), (&json!("True"), &json!("AllLinked")));

    let reported = with_status_seen(&zp, &seen);
    let (result, seen, _) = run_cached(reported, Some(cached()), Script::new()).await;
    assert!(result.is_ok() && seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn cold_start_with_listed_caches_reads_only_what_it_creates() {
    let zp = fixture("minimal.yaml");
    // Complete, empty caches of the operator's children but no watch of every name: each child
    // is read once before it is created (an object of that name without the operator's label
    // would not be in the cache). No steering ConfigMap (never paused) and no StatefulSet is
    // asked for.
    let script = Script::new()
        .create(at(DEPLOYMENTS, "tasks"))
        .create(at(SERVICES, "tasks"))
        .status(&zp)
        .event();
    let (result, seen, _) = run_cached(zp, Some(caches(&[], &[], &[])), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["note"], "Created Deployment tasks, Service tasks");
}

#[tokio::test]
async fn cold_start_with_every_name_watched_creates_without_reading() {
    let zp = fixture("minimal.yaml");
    let mut cached = caches(&[], &[], &[]);
    cached.names = Some(names(&["unrelated"], &[], &[]));
    // Two applies, the status and the event: nothing is read.
    let script = Script::new()
        .patch(at(DEPLOYMENTS, "tasks"))
        .patch(at(SERVICES, "tasks"))
        .status(&zp)
        .event();
    let (result, seen, ctx) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(ctx.metrics.request_count("get"), 0);
    // Without force: an object of someone else that took the name meanwhile is not overwritten.
    let creations: Vec<&Seen> = seen.iter().filter(|s| s.path.starts_with("/apis/apps")).collect();
    assert!(creations.iter().all(|s| !s.query.contains("force")), "{creations:?}");
    assert_eq!(seen.event()["note"], "Created Deployment tasks, Service tasks");
}

#[tokio::test]
async fn a_reconcile_on_a_cache_behind_the_last_status_write_does_not_write_it_again() {
    let mut zp = fixture("minimal.yaml");
    zp.metadata.resource_version = Some("7".into());
    let (ctx, handle) = context();
    let mut cached = caches(&[], &[], &[]);
    cached.names = Some(names(&[], &[], &[]));
    ctx.use_caches(Some(cached));
    let script = Script::new()
        .patch(at(DEPLOYMENTS, "tasks"))
        .patch(at(SERVICES, "tasks"))
        .status(&zp)
        .event();
    let (result, seen, handle) = run_on(&ctx, handle, zp.clone(), script).await;
    assert!(result.is_ok(), "{result:?}");
    let written = seen.status()["status"].clone();
    // The children's watch events arrived and trigger the object again, but the cache still
    // holds it as it was before the status write: nothing is written a second time.
    let c = children(&zp);
    let mut cached = caches(&[server_view(&c.deployment)], &[server_view(&c.service)], &[]);
    cached.names = Some(names(&[], &["tasks"], &["tasks"]));
    ctx.use_caches(Some(cached.clone()));
    let (result, seen, handle) = run_on(&ctx, handle, zp.clone(), Script::new()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.is_empty(), "{seen:?}");
    // Once the cache shows the write, the cache is the truth again: a status of someone else's
    // making there (here: the write lost) is overwritten with the one computed.
    let mut moved_on = zp.clone();
    moved_on.metadata.resource_version = Some("9".into());
    ctx.use_caches(Some(cached));
    let (result, seen, _) =
        run_on(&ctx, handle, moved_on.clone(), Script::new().status(&moved_on)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.status()["status"]["observedGeneration"], written["observedGeneration"]);
}

#[tokio::test]
async fn a_name_taken_by_someone_else_is_read_and_refused_not_applied() {
    let zp = fixture("minimal.yaml");
    let mut cached = caches(&[], &[], &[]);
    cached.names = Some(names(&[], &[], &["tasks"]));
    let mut foreign = server_view(&children(&zp).deployment);
    foreign["metadata"]["ownerReferences"] = json!([]);
    let script = Script::new().found(at(DEPLOYMENTS, "tasks"), foreign).event().status(&zp);
    let (result, seen, ctx) = run_cached(zp, Some(cached), script).await;
    assert_eq!(result.expect_err("refused").reason(), "ChildNotOwned");
    assert_eq!(ctx.metrics.request_count("apply"), 0, "{seen:?}");
}

#[tokio::test]
async fn a_conflict_on_creation_reads_the_child_and_never_forces() {
    let zp = fixture("minimal.yaml");
    let mut cached = caches(&[], &[], &[]);
    cached.names = Some(names(&[], &[], &[]));
    let mut foreign = server_view(&children(&zp).deployment);
    foreign["metadata"]["ownerReferences"] = json!([]);
    // Someone created it after the watch listed: the apply without force conflicts.
    let script = Script::new()
        .patch_reply(at(DEPLOYMENTS, "tasks"), Reply::Fail(409, "Conflict"))
        .found(at(DEPLOYMENTS, "tasks"), foreign)
        .event()
        .status(&zp);
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert_eq!(result.expect_err("refused").reason(), "ChildNotOwned");
    let forced = |s: &&Seen| s.path.starts_with(DEPLOYMENTS) && s.query.contains("force=true");
    assert!(!seen.iter().any(|s| forced(&s)), "{seen:?}");
}

#[tokio::test]
async fn a_stale_cache_entry_is_read_again_before_anything_is_written() {
    let zp = fixture("minimal.yaml");
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let zp = with_status(zp, &sts);
    // The cache still holds a version from before someone's edit was repaired.
    let mut stale = sts.clone();
    stale["spec"]["replicas"] = json!(4);
    let services = [server_view(&c.service)];
    let cached = caches(&[stale], &services, &[server_view(&c.steering)]);
    let script = Script::new().found(at(DEPLOYMENTS, "tasks"), sts);
    let (result, seen, ctx) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 1, "one read, no write: {seen:?}");
    assert_eq!(ctx.metrics.request_count("apply"), 0);
}

#[tokio::test]
async fn pause_reconciliation_annotation_writes_only_the_condition() {
    let mut zp = fixture("minimal.yaml");
    zp.metadata.annotations =
        Some([(status::PAUSE_RECONCILIATION.to_string(), "true".to_string())].into());
    let script = Script::new().status(&zp);
    // Caches that would make every child look missing: nothing is created.
    let (result, seen, ctx) = run_cached(zp.clone(), Some(caches(&[], &[], &[])), script).await;
    assert_eq!(result.expect("paused"), Action::await_change());
    let paused = seen.condition(status::RECONCILIATION_PAUSED);
    assert_eq!(paused["status"], "True");
    assert_eq!(paused["observedGeneration"], 1);
    assert_eq!(ctx.metrics.request_count("apply"), 0);

    // Already reported: a resync of the paused object makes no request.
    let mut reported = zp;
    reported.status = Some(status::paused(&reported, status::now()));
    let (result, seen, _) = run_cached(reported, Some(caches(&[], &[], &[])), Script::new()).await;
    assert!(result.is_ok() && seen.is_empty(), "{seen:?}");
}

// The PodDisruptionBudget: created at two replicas, deleted below, only ours.

/// `zp` at `replicas`, with the steering ConfigMap, StatefulSet and Services it wants already in
/// the caches and its status as computed for them, so a scenario's requests are the PDB's alone.
fn settled_at(replicas: i32, pdbs: &[Value]) -> (ZmqProxy, ChildCaches, build::Children) {
    let mut zp = fixture("minimal.yaml");
    zp.spec.replicas = replicas;
    let c = children(&zp);
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(replicas);
    let zp = with_status(zp, &sts);
    let mut services = vec![server_view(&c.service)];
    services.extend(c.federation.as_ref().map(server_view));
    let steering = [server_view(&c.steering)];
    (zp, caches_all(&[sts], &services, &steering, pdbs, &[], &[]), c)
}

#[tokio::test]
async fn two_replicas_create_a_pod_disruption_budget_of_one_over_the_proxy_pods() {
    let (zp, cached, c) = settled_at(2, &[]);
    // Not in the complete cache: read once (an unlabelled one of that name would be missed).
    let script = Script::new().create(at(PDBS, "tasks")).event();
    let (result, seen, ctx) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    let pdb = seen.applied(&at(PDBS, "tasks"));
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let selector =
        serde_json::to_value(c.deployment.spec.as_ref().map(|s| s.selector.match_labels.clone()))
            .expect("selector");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb["metadata"]["ownerReferences"][0]["kind"], "ZmqProxy");
    assert_eq!(pdb["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(seen.event()["note"], "Created PodDisruptionBudget tasks");
    assert_eq!(seen.event()["related"]["kind"], "PodDisruptionBudget");
    assert!(ctx.metrics.render().contains(
        "zmq_proxy_operator_child_writes_total{kind=\"PodDisruptionBudget\",action=\"Created\"} 1"
    ));

    // Once it is in the cache, a resync asks nothing.
    let (zp, _, c) = settled_at(2, &[]);
    let pdb = server_view(c.pdb.as_ref().expect("PDB"));
    let (_, cached, _) = settled_at(2, &[pdb]);
    let (result, seen, _) = run_cached(zp, Some(cached), Script::new()).await;
    assert!(result.is_ok() && seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn one_replica_deletes_the_cached_pod_disruption_budget() {
    let (two, _, c) = settled_at(2, &[]);
    let old = server_view(c.pdb.as_ref().expect("PDB at two replicas"));
    let (zp, cached, _) = settled_at(1, std::slice::from_ref(&old));
    assert!(two.spec.replicas == 2 && zp.spec.replicas == 1);
    let script = Script::new().delete(at(PDBS, "tasks"), Reply::Object(old)).event();
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["note"], "Deleted PodDisruptionBudget tasks");
}

#[tokio::test]
async fn a_disabled_pod_disruption_budget_is_deleted_at_any_scale() {
    let (_, _, c) = settled_at(3, &[]);
    let old = server_view(c.pdb.as_ref().expect("PDB"));
    let (mut zp, cached, _) = settled_at(3, std::slice::from_ref(&old));
    zp.spec.pod_disruption_budget =
        Some(PodDisruptionBudgetSpec { enabled: false, ..Default::default() });
    let script = Script::new().delete(at(PDBS, "tasks"), Reply::Object(old)).event();
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.event()["note"], "Deleted PodDisruptionBudget tasks");
}

#[tokio::test]
async fn a_pod_disruption_budget_of_someone_else_is_never_deleted_nor_taken_over() {
    // Without caches the operator reads it, sees another owner, and leaves it.
    let (zp, _, c) = settled_at(1, &[]);
    let mut foreign: PodDisruptionBudget = {
        let mut two = zp.clone();
        two.spec.replicas = 2;
        children(&two).pdb.expect("PDB")
    };
    foreign.metadata.owner_references = None;
    let mut sts = server_view(&c.deployment);
    sts["status"] = ready_status(1);
    let script = Script::new()
        .steering_found(&zp)
        .no_old_deployment()
        .found(at(DEPLOYMENTS, "tasks"), sts)
        .found(at(SERVICES, "tasks"), server_view(&c.service))
        .no_stateful_set()
        .found(at(PDBS, "tasks"), server_view(&foreign));
    let (result, seen, ctx) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 7);
    assert_eq!(ctx.metrics.request_count("delete"), 0);

    // At two replicas the operator would have to write it: refused, as for a Service.
    let (zp, cached, _) = settled_at(2, &[]);
    let script = Script::new().found(at(PDBS, "tasks"), server_view(&foreign)).event().status(&zp);
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert_eq!(result.expect_err("not ours").reason(), "ChildNotOwned");
    assert!(seen.event()["note"].as_str().is_some_and(|n| n.contains("PodDisruptionBudget tasks")));
}

/// An override that would change the proxy's args is refused before anything is written: a
/// Warning event and a Degraded condition name the field, so `kubectl describe` says what to fix.
#[tokio::test]
async fn a_pod_template_overriding_the_proxy_args_is_refused_naming_the_field() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.pod_template = Some(
        serde_json::from_value(
            json!({"spec": {"containers": [{"name": "proxy", "args": ["--help"]}]}}),
        )
        .expect("podTemplate"),
    );
    let script = Script::new().event().status(&zp);
    let (result, seen, _) = run_cached(zp, Some(caches(&[], &[], &[])), script).await;
    assert_eq!(result.expect_err("refused").reason(), "InvalidSpec");
    let field = "spec.podTemplate.spec.containers[proxy].args";
    let event = seen.event();
    assert_eq!(event["type"], "Warning");
    assert!(event["note"].as_str().is_some_and(|n| n.contains(field)), "{event}");
    let degraded = seen.condition("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(degraded["message"].as_str().is_some_and(|m| m.contains(field)), "{degraded}");
    assert_eq!(seen.condition("Ready")["status"], "False");
}

// spec.paused: the steering ConfigMap, the pods' nudge, the Paused condition.

fn pod_list(names: &[&str]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": n, "namespace": "q"}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
           "metadata": {"resourceVersion": "9"}, "items": items})
}

#[tokio::test]
async fn pausing_rewrites_the_steering_config_map_nudges_every_pod_and_reports_paused() {
    let (before, sts, c) = reconciled(fixture("minimal.yaml"), 1);
    let mut zp = before.clone();
    zp.spec.paused = true;
    zp.metadata.generation = Some(2);
    let script = Script::new()
        .found(at(CONFIGMAPS, "tasks-steering"), server_view(&c.steering))
        .patch(at(CONFIGMAPS, "tasks-steering"))
        .found(PODS, pod_list(&["tasks-0", "tasks-1"]))
        // A failed nudge is logged and skipped: the next pod is still nudged.
        .patch_reply(at(PODS, "tasks-0"), Reply::Fail(500, "InternalError"))
        .patch(at(PODS, "tasks-1"))
        .other_children_unchanged(&sts, &c)
        .status(&zp)
        .event();
    let (result, seen, ctx) = run(zp.clone(), script).await;
    assert!(result.is_ok(), "a failed nudge is not a failed reconcile: {result:?}");
    assert_eq!(seen.applied(&at(CONFIGMAPS, "tasks-steering"))["data"], json!({"paused": "true"}));
    let list = seen.find(Method::GET, PODS);
    assert!(
        list.query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dtasks"),
        "{}",
        list.query
    );
    for name in ["tasks-0", "tasks-1"] {
        let nudge = seen.find(Method::PATCH, &at(PODS, name));
        assert!(!is_apply(nudge), "a merge patch of one annotation, not an apply");
        assert_eq!(nudge.body, json!({"metadata": {"annotations": {STEERING_GENERATION: "2"}}}));
    }
    assert_eq!(ctx.metrics.request_count("apply"), 1, "the StatefulSet is not rewritten");
    let paused = seen.condition(status::PAUSED);
    assert_eq!((&paused["status"], &paused["reason"]), (&json!("True"), &json!("PauseRequested")));
    assert_eq!(paused["observedGeneration"], 2);
    assert!(
        paused["message"].as_str().is_some_and(|m| m.contains("ConfigMap tasks-steering")),
        "{paused}"
    );
    assert_eq!(seen.event()["note"], "Updated ConfigMap tasks-steering");

    // Resume: the ConfigMap goes back to false, the pods are nudged again, reason Resumed.
    let paused_zp = with_status_seen(&zp, &seen);
    let mut resumed = paused_zp.clone();
    resumed.spec.paused = false;
    resumed.metadata.generation = Some(3);
    let script = Script::new()
        .found(at(CONFIGMAPS, "tasks-steering"), server_view(&children(&paused_zp).steering))
        .patch(at(CONFIGMAPS, "tasks-steering"))
        .found(PODS, pod_list(&["tasks-0"]))
        .patch(at(PODS, "tasks-0"))
        .other_children_unchanged(&sts, &c)
        .status(&resumed)
        .event();
    let (result, seen, _) = run(resumed, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.applied(&at(CONFIGMAPS, "tasks-steering"))["data"], json!({"paused": "false"}));
    let nudge = seen.find(Method::PATCH, &at(PODS, "tasks-0"));
    assert_eq!(nudge.body["metadata"]["annotations"][STEERING_GENERATION], "3");
    let paused = seen.condition(status::PAUSED);
    assert_eq!((&paused["status"], &paused["reason"]), (&json!("False"), &json!("Resumed")));
    assert_eq!(paused["observedGeneration"], 3);
}

/// With the caches, only the steering ConfigMap (which differs from its cached version) is read and
/// written, and the pods are nudged; every other child is answered by the caches.
#[tokio::test]
async fn pausing_from_the_caches_touches_only_the_config_map_and_the_pods() {
    let (before, sts, c) = reconciled(fixture("minimal.yaml"), 1);
    let pods = [pod("tasks-0", true, "StatefulSet")];
    let before = with_status_pods(before, &sts, &pods);
    let mut zp = before.clone();
    zp.spec.paused = true;
    zp.metadata.generation = Some(2);
    let services = [server_view(&c.service)];
    let cached = caches_with(&[sts], &services, &[server_view(&c.steering)], &pods, &[]);
    let script = Script::new()
        .found(at(CONFIGMAPS, "tasks-steering"), server_view(&c.steering))
        .patch(at(CONFIGMAPS, "tasks-steering"))
        .found(PODS, pod_list(&["tasks-0"]))
        .patch(at(PODS, "tasks-0"))
        .status(&zp)
        .event();
    let (result, seen, ctx) = run_cached(zp, Some(cached), script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.applied(&at(CONFIGMAPS, "tasks-steering"))["data"], json!({"paused": "true"}));
    let nudge = seen.find(Method::PATCH, &at(PODS, "tasks-0"));
    assert_eq!(nudge.body["metadata"]["annotations"][STEERING_GENERATION], "2");
    assert_eq!(seen.condition(status::PAUSED)["status"], "True");
    assert_eq!(seen.event()["note"], "Updated ConfigMap tasks-steering");
    assert_eq!(ctx.metrics.request_count("get"), 1, "only the ConfigMap is read");
}

#[tokio::test]
async fn an_unchanged_pause_nudges_nobody() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.paused = true;
    let (zp, sts, c) = reconciled(zp, 1);
    let script = Script::new().steering_found(&zp).other_children_unchanged(&sts, &c);
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.iter().all(|s| s.method == Method::GET), "{seen:?}");
}

// The PodMonitor, with and without the monitoring.coreos.com API (discovery asked of the mock).

fn monitoring_resources() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
           "resources": [{"name": "podmonitors", "singularName": "podmonitor", "namespaced": true,
                          "kind": "PodMonitor",
                          "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]})
}

fn monitored() -> ZmqProxy {
    let mut zp = fixture("minimal.yaml");
    zp.spec.monitoring = Some(Monitoring { pod_monitor: Some(true) });
    zp
}

/// The MonitoringReady condition of the status apply, if it carries one.
fn monitoring_ready(seen: &Requests) -> Option<Value> {
    seen.conditions().into_iter().find(|c| c["type"] == status::MONITORING_READY)
}

fn monitoring_pod_monitor(zp: &ZmqProxy) -> Value {
    let mut pm = diff::stamp(pod_monitor(zp).expect("builds"));
    pm["metadata"]["uid"] = json!("pm-uid");
    pm["metadata"]["resourceVersion"] = json!("3");
    pm
}

#[tokio::test]
async fn without_the_monitoring_api_the_condition_says_so_and_nothing_fails() {
    let (zp, sts, c) = reconciled(monitored(), 1);
    let script = Script::new().children_unchanged(&sts, &c).missing(MONITORING_V1).status(&zp);
    let (result, seen, ctx) = run(zp, script).await;
    // Looked at again within the recheck interval, not the 5-minute resync.
    assert_eq!(result.expect("not a failure"), Action::requeue(ctx.monitoring.recheck()));
    let ready = monitoring_ready(&seen).expect("MonitoringReady");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("PodMonitorAPIMissing"))
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert!(
        ready["message"].as_str().is_some_and(|m| m.contains("monitoring.coreos.com/v1")),
        "{ready}"
    );
    assert_eq!(ctx.metrics.failure_count("ApplyFailed"), 0);
    assert_eq!(
        seen.condition("Degraded")["status"],
        "False",
        "a missing monitoring API does not degrade the proxy"
    );
}

#[tokio::test]
async fn with_the_monitoring_api_the_pod_monitor_is_applied_and_reported() {
    let (zp, sts, c) = reconciled(monitored(), 1);
    let script = Script::new().children_unchanged(&sts, &c).pod_monitor_created(&zp);
    let (result, seen, ctx) = run(zp.clone(), script).await;
    assert_eq!(result.expect("reconciled"), Action::requeue(RESYNC));
    let applied = seen.applied(&at(PODMONITORS, "tasks"));
    assert_eq!(applied["kind"], "PodMonitor");
    assert_eq!(applied["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(applied["metadata"]["ownerReferences"][0]["kind"], "ZmqProxy");
    let ready = monitoring_ready(&seen).expect("MonitoringReady");
    assert_eq!((&ready["status"], &ready["reason"]), (&json!("True"), &json!("PodMonitorReady")));
    assert_eq!(seen.event()["note"], "Created PodMonitor tasks");
    assert_eq!(ctx.metrics.request_count("apply"), 1);
}

#[tokio::test]
async fn turning_monitoring_off_deletes_our_pod_monitor_and_the_condition() {
    let (mut zp, sts, c) = reconciled(monitored(), 1);
    let pm = monitoring_pod_monitor(&zp);
    // An earlier reconcile made it.
    let at_time = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time");
    let made = status::condition_of(
        &zp,
        status::MONITORING_READY,
        true,
        "PodMonitorReady",
        String::new(),
        at_time,
    );
    if let Some(s) = zp.status.as_mut() {
        s.conditions.push(made);
    }
    zp.spec.monitoring = None;
    let script = Script::new()
        .children_unchanged(&sts, &c)
        .found(MONITORING_V1, monitoring_resources())
        .found(at(PODMONITORS, "tasks"), pm.clone())
        .delete(at(PODMONITORS, "tasks"), Reply::Object(pm))
        .status(&zp)
        .event();
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(monitoring_ready(&seen), None, "the condition goes with the PodMonitor");
    assert_eq!(seen.event()["note"], "Deleted PodMonitor tasks");
}

#[tokio::test]
async fn a_pod_monitor_of_someone_else_is_left_alone_and_reported() {
    let (zp, sts, c) = reconciled(monitored(), 1);
    let mut foreign = monitoring_pod_monitor(&zp);
    foreign["metadata"]["ownerReferences"] = json!([]);
    let script = Script::new()
        .children_unchanged(&sts, &c)
        .found(MONITORING_V1, monitoring_resources())
        .found(at(PODMONITORS, "tasks"), foreign)
        .status(&zp);
    let (result, seen, _) = run(zp, script).await;
    assert!(result.is_ok(), "{result:?}");
    let ready = monitoring_ready(&seen).expect("MonitoringReady");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("PodMonitorNotOwned"))
    );
}

/// A missing monitoring API is believed for the recheck interval (no discovery request per
/// reconcile), then asked again: prometheus-operator installed later is found without a restart.
#[tokio::test]
async fn a_missing_monitoring_api_is_asked_again_after_the_recheck_interval() {
    let (zp, sts, c) = reconciled(monitored(), 1);
    let (ctx, handle) = context();
    let first = Script::new().children_unchanged(&sts, &c).missing(MONITORING_V1).status(&zp);
    let (result, seen, handle) = run_on(&ctx, handle, zp.clone(), first).await;
    assert!(result.is_ok(), "{result:?}");
    let missing = with_status_seen(&zp, &seen);

    // Within the interval: the cached answer, and nothing written (the status is unchanged).
    let (result, seen, handle) =
        run_on(&ctx, handle, missing.clone(), Script::new().children_unchanged(&sts, &c)).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        seen.iter().all(|s| s.method == Method::GET
            && !s.path.contains("monitoring")
            && !s.query.contains("monitoring")),
        "{seen:?}"
    );

    // After it: asked again, found, and the PodMonitor is made.
    ctx.monitoring.set_recheck(Duration::ZERO);
    let third = Script::new().children_unchanged(&sts, &c).pod_monitor_created(&missing);
    let (result, seen, _) = run_on(&ctx, handle, missing, third).await;
    assert_eq!(result.expect("reconciled"), Action::requeue(RESYNC));
    assert_eq!(monitoring_ready(&seen).expect("MonitoringReady")["status"], "True");
}

// Connecting sockets: the headless Service of a selector entry, kept and pruned from the caches.

/// `minimal.yaml` whose backend also connects to the pods labelled app=worker on port 6000.
fn connecting() -> ZmqProxy {
    let mut zp = fixture("minimal.yaml");
    let entry: zmq_proxy_api::connect::ConnectTarget = serde_json::from_value(
        json!({"selector": {"matchLabels": {"app": "worker"}}, "port": 6000}),
    )
    .expect("entry");
    zp.spec.sockets.backend.connect = vec![entry];
    zp
}

#[tokio::test]
async fn a_selector_entry_creates_its_headless_service_and_refreshes_the_status() {
    let (zp, sts, c) = reconciled(connecting(), 1);
    let services = [server_view(&c.service)];
    let cached = caches(&[sts], &services, &[server_view(&c.steering)]);
    let script = Script::new().create(at(SERVICES, "tasks-backend-0")).status(&zp).event();
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    // An object that connects is looked at again soon: its counts come from its pods.
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(zmq_proxy_operator::connect_services::CONNECTS_REFRESH)
    );
    let applied = seen.applied(&at(SERVICES, "tasks-backend-0"));
    assert_eq!(applied["spec"]["selector"], json!({"app": "worker"}));
    assert_eq!(applied["spec"]["clusterIP"], "None");
    assert_eq!(applied["spec"]["publishNotReadyAddresses"], false);
    assert_eq!(applied["metadata"]["labels"][build::CONNECT_LABEL], "backend-0");
    assert_eq!(applied["metadata"]["ownerReferences"][0]["kind"], "ZmqProxy");
    // No ready pod to ask yet: a reason, not a failure.
    let connected = seen.condition(status::CONNECTED);
    assert_eq!(
        (&connected["status"], &connected["reason"]),
        (&json!("False"), &json!("NoReadyPods"))
    );
    assert_eq!(seen.event()["note"], "Created Service tasks-backend-0");
}

#[tokio::test]
async fn a_removed_entry_deletes_its_owned_headless_service_and_nothing_else() {
    let with_entry = connecting();
    let with_entry_children = children(&with_entry);
    let stale = server_view(&with_entry_children.connect_services[0]);
    let (zp, sts, c) = reconciled(fixture("minimal.yaml"), 2);
    // Another object's connect Service of the same label is not this object's to delete.
    let mut foreign = stale.clone();
    foreign["metadata"]["name"] = json!("other-backend-0");
    foreign["metadata"]["labels"]["app.kubernetes.io/instance"] = json!("other");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    let services = [server_view(&c.service), stale.clone(), foreign];
    let cached = caches(&[sts], &services, &[server_view(&c.steering)]);
    let script =
        Script::new().delete(at(SERVICES, "tasks-backend-0"), Reply::Object(stale)).event();
    let (result, seen, _) = run_cached(zp, Some(cached), script).await;
    assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));
    assert_eq!(seen.event()["note"], "Deleted Service tasks-backend-0");
}
