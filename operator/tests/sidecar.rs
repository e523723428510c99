//! "Pod and ZmqProxy in, JSONPatch out": pure tests of the sidecar injection from the YAML
//! fixtures of `fixtures/sidecar/`, each patch applied and the result read back as a pod, so a
//! patch that the API server would refuse or that builds an invalid pod fails here.

use clap::Parser;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use zmq_proxy_operator::build::{BuildOptions, RUN_AS_USER};
use zmq_proxy_operator::crd::ZmqProxy;
use zmq_proxy_operator::sidecar::mutate::{
    self, INJECTED_ANNOTATION, Injection, SIDECAR_CONTAINER,
};
use zmq_proxy_operator::sidecar::review::{self, Lookup, Request};
use zmq_proxy_operator::sidecar::status;

fn text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/sidecar/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn proxy() -> ZmqProxy {
    serde_yaml::from_str(&text("proxy.yaml")).expect("proxy.yaml")
}

fn pod(name: &str) -> Pod {
    serde_yaml::from_str(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn options() -> BuildOptions {
    BuildOptions { default_image: "zmq-proxy:test".to_string(), ..BuildOptions::default() }
}

/// The patch of `zp` on `pod`, applied: the pod as the API server stores it.
fn injected_with(pod: &Pod, zp: &ZmqProxy) -> (Pod, Vec<Value>) {
    let Injection::Patch(ops) = mutate::inject(pod, zp, &options()).expect("injects") else {
        panic!("expected a patch");
    };
    let mut doc = serde_json::to_value(pod).expect("pod as json");
    mutate::apply(&mut doc, &ops).expect("the patch applies");
    (serde_json::from_value(doc).expect("still a pod"), ops)
}

fn injected(name: &str) -> Pod {
    injected_with(&pod(name), &proxy()).0
}

fn sidecar(p: &Pod) -> &Container {
    let init = p.spec.as_ref().and_then(|s| s.init_containers.as_ref()).expect("init containers");
    assert_eq!(init[0].name, SIDECAR_CONTAINER, "the sidecar comes first");
    &init[0]
}

fn volume<'a>(p: &'a Pod, name: &str) -> &'a Volume {
    let volumes = p.spec.as_ref().and_then(|s| s.volumes.as_ref()).expect("volumes");
    volumes.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no volume {name}"))
}

fn mount_at<'a>(c: &'a Container, path: &str) -> Option<&'a str> {
    c.volume_mounts.iter().flatten().find(|m| m.mount_path == path).map(|m| m.name.as_str())
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

fn arg_after(c: &Container, flag: &str) -> Vec<String> {
    let a = args(c);
    a.iter().zip(a.iter().skip(1)).filter(|(f, _)| *f == flag).map(|(_, v)| v.clone()).collect()
}

/// A native sidecar: an init container that restarts, started before the app (its startup
/// probe), with the far side's connect, its CURVE keys and the ipc bind, and no steering
/// ConfigMap (only the operator's own pods have one).
#[test]
fn a_plain_pod_gets_a_native_sidecar_and_a_shared_socket_directory() {
    let p = injected("pod-plain.yaml");
    let s = sidecar(&p);
    assert_eq!(s.restart_policy.as_deref(), Some("Always"));
    assert!(s.startup_probe.is_some(), "the app starts once the proxy runs");
    assert_eq!(arg_after(s, "--frontend-bind"), ["ipc:///zmq/out"]);
    assert_eq!(arg_after(s, "--backend-connect-all"), ["tcp://events.hub.svc:5555"]);
    assert_eq!(arg_after(s, "--backend-curve-client-key-file").len(), 1);
    assert!(!args(s).contains(&"--pause-file".to_string()), "{:?}", args(s));
    assert!(mount_at(s, "/zmq").is_some());
    let app = &p.spec.as_ref().expect("spec").containers[0];
    assert_eq!(mount_at(app, "/zmq"), Some(mutate::IPC_VOLUME));
    assert_eq!(mount_at(s, "/zmq"), Some(mutate::IPC_VOLUME));
    assert!(volume(&p, mutate::IPC_VOLUME).empty_dir.is_some());
    assert!(volume(&p, "curve-backend-client-key").secret.is_some());
    // No user in the pod: the sidecar runs as the operator's proxies do, and its key files
    // (mode 0440) are readable through the fsGroup.
    let sc = s.security_context.as_ref().expect("security context");
    assert_eq!(sc.run_as_user, Some(RUN_AS_USER));
    let pod_sc = p.spec.as_ref().and_then(|s| s.security_context.as_ref()).expect("pod sc");
    assert_eq!(pod_sc.fs_group, Some(RUN_AS_USER));
    // The app's 30 s (the default), then the lame duck, the drain and the margin.
    assert_eq!(p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds), Some(50));
    let annotations = p.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        annotations.get(INJECTED_ANNOTATION).map(String::as_str),
        Some("events-out, generation 3")
    );
    let names: Vec<&str> =
        s.ports.iter().flatten().filter_map(|port| port.name.as_deref()).collect();
    assert!(names.iter().all(|n| n.starts_with("zmq-") && n.len() <= 15), "{names:?}");
}

/// Init containers keep their order behind the sidecar; volumes named like ours stay the pod's
/// and ours take the next free name, which the sidecar's and the app's mounts follow.
#[test]
fn init_containers_and_volumes_named_like_ours_are_kept() {
    let p = injected("pod-crowded.yaml");
    let spec = p.spec.as_ref().expect("spec");
    let init: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, [SIDECAR_CONTAINER, "migrate", "log-shipper"]);
    assert_eq!(volume(&p, "zmq-ipc").empty_dir, Some(Default::default()), "theirs unchanged");
    let theirs = volume(&p, "curve-backend-client-key").secret.as_ref().expect("secret");
    assert_eq!(theirs.secret_name.as_deref(), Some("unrelated"));
    assert!(volume(&p, "zmq-ipc-1").empty_dir.is_some());
    let ours = volume(&p, "curve-backend-client-key-1").secret.as_ref().expect("secret");
    assert_eq!(ours.secret_name.as_deref(), Some("app-client"));
    let s = sidecar(&p);
    assert_eq!(mount_at(s, "/zmq"), Some("zmq-ipc-1"));
    let key_mounts: Vec<&str> = s
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name.starts_with("curve-"))
        .map(|m| m.name.as_str())
        .collect();
    assert!(key_mounts.contains(&"curve-backend-client-key-1"), "{key_mounts:?}");
    assert!(!key_mounts.contains(&"curve-backend-client-key"), "{key_mounts:?}");
    for c in &spec.containers {
        assert_eq!(mount_at(c, "/zmq"), Some("zmq-ipc-1"), "{}", c.name);
    }
    assert_eq!(mount_at(&spec.containers[0], "/data"), Some("zmq-ipc"));
    let annotations = p.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.get("team").map(String::as_str), Some("data"));
    assert!(annotations.contains_key(INJECTED_ANNOTATION));
    assert_eq!(spec.termination_grace_period_seconds, Some(80));
    let names: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "volume names stay unique: {names:?}");
}

/// A restricted pod keeps its user, group and fsGroup; the sidecar's own context satisfies the
/// restricted Pod Security Standard by itself.
#[test]
fn a_restricted_pod_keeps_its_user_and_the_sidecar_is_restricted_too() {
    let p = injected("pod-restricted.yaml");
    let spec = p.spec.as_ref().expect("spec");
    let pod_sc = spec.security_context.as_ref().expect("pod sc");
    assert_eq!((pod_sc.run_as_user, pod_sc.fs_group), (Some(1000), Some(2000)));
    let sc = sidecar(&p).security_context.as_ref().expect("sidecar sc");
    assert_eq!(sc.run_as_user, None, "the pod's user applies");
    assert_eq!(sc.run_as_group, None, "the pod's group applies");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
    assert_eq!(drop, ["ALL"]);
    assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

/// A volume the app already mounts at the socket's directory is the one shared.
#[test]
fn an_app_mount_at_the_socket_directory_is_shared() {
    let before = pod("pod-shared-dir.yaml");
    let p = injected("pod-shared-dir.yaml");
    let spec = p.spec.as_ref().expect("spec");
    assert_eq!(mount_at(sidecar(&p), "/zmq"), Some("sockets"));
    let names: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert!(!names.contains(&mutate::IPC_VOLUME), "{names:?}");
    assert_eq!(spec.containers, before.spec.expect("spec").containers, "the app is unchanged");
}

/// The webhook may be called again for the same pod (reinvocation): nothing is added twice.
/// A container already named like the sidecar is refused, naming the field.
#[test]
fn an_injected_pod_is_left_alone_and_a_name_clash_is_refused() {
    let p = injected("pod-plain.yaml");
    assert_eq!(mutate::inject(&p, &proxy(), &options()), Ok(Injection::AlreadyInjected));
    let mut clash = pod("pod-plain.yaml");
    if let Some(spec) = clash.spec.as_mut() {
        spec.containers[0].name = SIDECAR_CONTAINER.to_string();
    }
    let e = mutate::inject(&clash, &proxy(), &options()).expect_err("clash");
    assert!(e.starts_with("spec.containers[0].name"), "{e}");
}

/// The sidecar's command line is one the proxy itself accepts, and it binds the Unix socket
/// (without CURVE, whose key files exist only in the pod).
#[test]
fn the_proxy_accepts_the_sidecars_arguments() {
    let mut zp = proxy();
    zp.spec.sockets.backend.security = None;
    let (p, _) = injected_with(&pod("pod-plain.yaml"), &zp);
    let s = sidecar(&p);
    let cli =
        zmq_proxy::Cli::try_parse_from(std::iter::once("zmq-proxy".to_string()).chain(args(s)))
            .unwrap_or_else(|e| panic!("the proxy refuses {:?}: {e}", args(s)));
    let cfg = cli.into_config().expect("valid config");
    let binds: Vec<String> = cfg.frontend.bind.iter().map(ToString::to_string).collect();
    assert_eq!(binds, ["ipc:///zmq/out"]);
}

/// A Workload object is no template, and a template cannot connect by label selector.
#[test]
fn only_sidecar_templates_without_selectors_are_injected() {
    let mut zp = proxy();
    zp.spec.mode = None;
    let e = mutate::check_template(&zp).expect_err("workload");
    assert!(e.contains("spec.mode: Sidecar"), "{e}");
    let mut zp = proxy();
    zp.spec.sockets.backend.connect[0] =
        serde_json::from_value(json!({"selector": {"matchLabels": {"app": "hub"}}, "port": 5555}))
            .expect("entry");
    let e = mutate::check_template(&zp).expect_err("selector");
    assert!(e.contains("spec.backend.connect[0].selector"), "{e}");
}

fn request(pod: Pod) -> Request {
    Request {
        uid: "u-1".to_string(),
        namespace: "app".to_string(),
        operation: "CREATE".to_string(),
        pod,
    }
}

/// The webhook's decisions: inject; admit with a warning when the template is gone (removing
/// it stops the injection, never a pod); refuse when the template cannot be read.
#[test]
fn reviews_inject_warn_or_refuse() {
    let req = request(pod("pod-plain.yaml"));
    let found = review::decide(&req, Lookup::Found(Box::new(proxy())), &options());
    assert!(found.allowed && found.patch.is_some());
    let answer = review::answer(&req.uid, &found);
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch: k8s_openapi::ByteString =
        serde_json::from_value(answer["response"]["patch"].clone()).expect("base64");
    let ops: Vec<Value> = serde_json::from_slice(&patch.0).expect("json patch");
    assert_eq!(Some(ops), found.patch);

    let gone = review::decide(&req, Lookup::NotFound, &options());
    assert!(gone.allowed && gone.patch.is_none());
    assert!(gone.warnings[0].contains("no ZmqProxy events-out in namespace app"), "{gone:?}");

    let failed = review::decide(&req, Lookup::Failed("timeout".into()), &options());
    assert!(!failed.allowed);
    let answer = review::answer(&req.uid, &failed);
    assert_eq!(answer["response"]["status"]["code"], 403);

    let mut unlabelled = pod("pod-plain.yaml");
    unlabelled.metadata.labels = None;
    let d = review::decide(&request(unlabelled), Lookup::NotFound, &options());
    assert!(d.allowed && d.patch.is_none() && d.warnings.is_empty());
}

/// A review as the API server sends it is read, and one without a uid is refused.
#[test]
fn admission_reviews_are_parsed() {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "abc", "namespace": "app", "operation": "CREATE",
                    "object": serde_json::to_value(pod("pod-plain.yaml")).expect("pod")}
    });
    let req = review::parse(body.to_string().as_bytes()).expect("parsed");
    assert_eq!((req.uid.as_str(), req.proxy_name()), ("abc", Some("events-out")));
    assert_eq!(req.pod_name(), "publisher-*");
    let e = review::parse(br#"{"request": {}}"#).expect_err("no uid");
    assert!(e.contains("uid"), "{e}");
}

/// The template's status counts the pods that carry it, not those that only asked.
#[test]
fn the_status_lists_the_pods_that_carry_the_sidecar() {
    let mut carrying = injected("pod-restricted.yaml");
    carrying.metadata.name = Some("b".into());
    let mut also = injected("pod-crowded.yaml");
    also.metadata.name = Some("a".into());
    let asked = pod("pod-restricted.yaml");
    let s = status::compute(&proxy(), &[carrying, asked, also], Timestamp::UNIX_EPOCH);
    assert_eq!(s.sidecar_pods, ["a", "b"]);
    assert_eq!(s.replicas, 2);
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.conditions[0].observed_generation, Some(3));
}
