//! "ZmqProxy in, Deployment/Service out": pure tests of `build::children` from YAML fixtures.
//! `fixtures/full.yaml` sets every spec field to a non-default value; each test finds one
//! group of them where Kubernetes needs it, and says why that placement matters.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use zmq_proxy_operator::build::{self, BuildError, BuildOptions, Children};
use zmq_proxy_operator::crd::ZmqProxy;

const DEFAULT_IMAGE: &str = "ghcr.io/zmq-proxy-operator/zmq-proxy:test";

fn fixture(name: &str) -> ZmqProxy {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn build(name: &str) -> Children {
    build::children(
        &fixture(name),
        &BuildOptions { default_image: DEFAULT_IMAGE.to_string(), ..Default::default() },
    )
    .expect("fixture builds")
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
}

fn proxy(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn arg_after<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_ref()?;
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

fn ports(s: &Service) -> Vec<(String, i32, Option<IntOrString>)> {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port, p.target_port))
        .collect()
}

/// The proxy must bind exactly the sockets of the spec, with the contract's flags.
#[test]
fn proxy_flags_carry_every_socket_and_setting() {
    let c = build("full.yaml");
    let proxy = proxy(&c.deployment);
    assert_eq!(proxy.name, "proxy");
    assert_eq!(proxy.command.as_deref(), Some(&["zmq-proxy".to_string()][..]));
    let args = proxy.args.clone().unwrap_or_default();
    let expected = [
        "--frontend-type",
        "ROUTER",
        "--frontend-bind",
        "tcp://0.0.0.0:5555",
        "--backend-type",
        "DEALER",
        "--backend-bind",
        "tcp://0.0.0.0:5556",
        "--capture-type",
        "PUB",
        "--capture-bind",
        "tcp://0.0.0.0:5557",
        "--control-bind",
        "tcp://0.0.0.0:5558",
        // The frontend's own heartbeat fields; the others the pods' default.
        "--frontend-heartbeat-interval",
        "2000",
        "--frontend-heartbeat-ttl",
        "6000",
        "--frontend-heartbeat-timeout",
        "4000",
        "--backend-heartbeat-interval",
        "10000",
        "--backend-heartbeat-ttl",
        "30000",
        "--backend-heartbeat-timeout",
        "30000",
        "--capture-heartbeat-interval",
        "10000",
        "--capture-heartbeat-ttl",
        "30000",
        "--capture-heartbeat-timeout",
        "30000",
        "--http-bind",
        "0.0.0.0:9191",
        "--drain-timeout",
        "20",
        "--lame-duck",
        "3",
        "--log-format",
        "json",
    ];
    assert_eq!(args, expected);
}

/// Without capture/control the proxy must not get their flags (it would bind a port nobody set).
#[test]
fn optional_sockets_are_left_out_when_unset() {
    let c = build("minimal.yaml");
    let proxy = proxy(&c.deployment);
    for flag in ["--capture-type", "--capture-bind", "--control-bind"] {
        assert_eq!(arg_after(proxy, flag), None, "{flag}");
    }
    assert_eq!(arg_after(proxy, "--http-bind"), Some("0.0.0.0:9090"));
    assert_eq!(arg_after(proxy, "--drain-timeout"), Some("5"));
    assert_eq!(arg_after(proxy, "--lame-duck"), Some("5"));
    assert_eq!(arg_after(proxy, "--capture-heartbeat-interval"), None);
    assert_eq!(proxy.image.as_deref(), Some(DEFAULT_IMAGE));
    let names: Vec<String> = ports(&c.service).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["frontend", "backend"]);
    assert!(c.headless.is_none(), "one replica needs no headless Service");
}

/// Probes and Services refer to ports by name, so the names must be on the container.
#[test]
fn container_ports_are_named_and_probes_use_the_metrics_port() {
    let c = build("full.yaml");
    let proxy = proxy(&c.deployment);
    let named: Vec<(String, i32)> = proxy
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        named,
        [
            ("frontend".to_string(), 5555),
            ("backend".to_string(), 5556),
            ("capture".to_string(), 5557),
            ("control".to_string(), 5558),
            ("metrics".to_string(), 9191)
        ]
    );
    let ready =
        proxy.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::String("metrics".to_string()));
    let live = proxy.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(live.port, IntOrString::String("metrics".to_string()));
}

/// The kubelet must not SIGKILL the proxy before its lame-duck period and drain timeout have
/// run out.
#[test]
fn grace_period_covers_the_lame_duck_and_the_drain_timeout() {
    let full = build("full.yaml");
    assert_eq!(pod(&full.deployment).termination_grace_period_seconds, Some(3 + 20 + 10));
    let minimal = build("minimal.yaml");
    let grace = pod(&minimal.deployment).termination_grace_period_seconds.unwrap_or(0);
    assert!(grace > 5 + 5, "{grace}");
}

/// Restricted Pod Security: non-root, read-only root, no capabilities, RuntimeDefault seccomp.
#[test]
fn pod_is_hardened() {
    let c = build("minimal.yaml");
    let pod = pod(&c.deployment);
    let psc = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = proxy(&c.deployment).security_context.as_ref().expect("container security context");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
}

/// One replica: Recreate, so a rollout never runs two proxies (peers would split between them).
/// More: one pod at a time and never more than `replicas`.
#[test]
fn rollout_strategy_never_runs_two_proxies_for_one_replica() {
    let one = build("minimal.yaml");
    let strategy = one.deployment.spec.as_ref().and_then(|s| s.strategy.clone()).expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
    assert!(strategy.rolling_update.is_none());
    let three = build("full.yaml");
    let strategy =
        three.deployment.spec.as_ref().and_then(|s| s.strategy.clone()).expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let ru = strategy.rolling_update.expect("rollingUpdate");
    assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(three.deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
}

/// Image, pull policy and secrets, resources, scheduling: what users set reaches the pod.
#[test]
fn image_resources_and_scheduling_reach_the_pod() {
    let c = build("full.yaml");
    let proxy = proxy(&c.deployment);
    assert_eq!(proxy.image.as_deref(), Some("registry.example/zmq-proxy:custom"));
    assert_eq!(proxy.image_pull_policy.as_deref(), Some("Always"));
    let resources = proxy.resources.as_ref().expect("resources");
    assert_eq!(
        resources.limits.as_ref().and_then(|l| l.get("memory")),
        Some(&Quantity("256Mi".to_string()))
    );
    assert_eq!(
        resources.requests.as_ref().and_then(|l| l.get("cpu")),
        Some(&Quantity("100m".to_string()))
    );
    let pod = pod(&c.deployment);
    assert_eq!(
        pod.image_pull_secrets.as_ref().map(|s| s[0].name.clone()),
        Some("regcred".to_string())
    );
    assert_eq!(
        pod.node_selector.as_ref().and_then(|n| n.get("kubernetes.io/os")).map(String::as_str),
        Some("linux")
    );
    let toleration = &pod.tolerations.as_ref().expect("tolerations")[0];
    assert_eq!(toleration.key.as_deref(), Some("dedicated"));
    assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
    let anti = pod.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref()).expect("affinity");
    assert_eq!(
        anti.preferred_during_scheduling_ignored_during_execution.as_ref().map(Vec::len),
        Some(1)
    );
}

/// User pod labels are added, but the selector labels win: a pod without them would fall out of
/// the Deployment's selector.
#[test]
fn pod_labels_and_annotations_keep_the_selector() {
    let c = build("full.yaml");
    let spec = c.deployment.spec.as_ref().expect("spec");
    let meta = spec.template.metadata.as_ref().expect("template metadata");
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("queues"));
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("tasks"));
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "{selector:?} ⊄ {labels:?}");
    assert_eq!(
        meta.annotations.as_ref().and_then(|a| a.get("prometheus.io/scrape")).map(String::as_str),
        Some("true")
    );
}

/// Service: the spec's type and annotations, the socket ports (not metrics) targeting the named
/// container ports, and the same selector as the Deployment.
#[test]
fn service_exposes_the_sockets_with_the_spec_type() {
    let c = build("full.yaml");
    let svc = c.service.spec.as_ref().expect("service spec");
    assert_eq!(c.service.metadata.name.as_deref(), Some("tasks"));
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        c.service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("service.beta.kubernetes.io/aws-load-balancer-type"))
            .map(String::as_str),
        Some("nlb")
    );
    let expected: Vec<(String, i32, Option<IntOrString>)> =
        [("frontend", 5555), ("backend", 5556), ("capture", 5557), ("control", 5558)]
            .into_iter()
            .map(|(n, p)| (n.to_string(), p, Some(IntOrString::String(n.to_string()))))
            .collect();
    assert_eq!(ports(&c.service), expected);
    let deployment_selector =
        c.deployment.spec.as_ref().and_then(|s| s.selector.match_labels.clone());
    assert_eq!(svc.selector, deployment_selector);
}

/// With several replicas each pod is a proxy of its own; the headless Service makes each one
/// addressable through DNS.
#[test]
fn several_replicas_get_a_headless_service() {
    let c = build("full.yaml");
    let headless = c.headless.expect("headless Service");
    assert_eq!(headless.metadata.name.as_deref(), Some("tasks-pods"));
    let spec = headless.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.selector, c.service.spec.as_ref().and_then(|s| s.selector.clone()));
    assert_eq!(ports(&headless).len(), 4);
}

/// Every child is controlled by the ZmqProxy (garbage collection and the owns() watches rely on
/// it) and carries the managed-by label the watches filter on.
#[test]
fn every_child_has_a_controller_owner_reference_and_labels() {
    let c = build("full.yaml");
    let metas = [
        &c.deployment.metadata,
        &c.service.metadata,
        &c.headless.as_ref().expect("headless").metadata,
    ];
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("work"));
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(o.kind, "ZmqProxy");
        assert_eq!(o.api_version, "zmqproxy.io/v1alpha1");
        assert_eq!(o.name, "tasks");
        assert_eq!(o.uid, "7d2c0e3a-1111-2222-3333-444455556666");
        assert_eq!(o.controller, Some(true));
        let labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("zmq-proxy-operator")
        );
    }
}

/// Zero replicas still builds (the Deployment scales to 0) and a PUSH capture is rendered.
#[test]
fn pipeline_scaled_to_zero_builds() {
    let c = build("pipeline-scaled-to-zero.yaml");
    assert_eq!(c.deployment.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(arg_after(proxy(&c.deployment), "--capture-type"), Some("PUSH"));
    assert_eq!(arg_after(proxy(&c.deployment), "--frontend-type"), Some("PULL"));
}

/// An object that bypassed the CRD's rules is refused before anything is built.
#[test]
fn invalid_specs_are_refused_naming_the_field() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.sockets.backend.socket_type = zmq_proxy::socket::SocketType::Push;
    let err = build::children(
        &zp,
        &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
    );
    assert!(
        matches!(&err, Err(BuildError::InvalidSpec(m)) if m.starts_with("spec.backend.type")),
        "{err:?}"
    );

    let mut zp = fixture("minimal.yaml");
    zp.spec.metrics_port = 5555;
    let err = build::children(
        &zp,
        &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
    );
    assert!(
        matches!(&err, Err(BuildError::InvalidSpec(m)) if m.starts_with("spec.metricsPort")),
        "{err:?}"
    );

    let mut zp = fixture("minimal.yaml");
    zp.metadata.uid = None;
    let err = build::children(
        &zp,
        &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
    );
    assert_eq!(err.err(), Some(BuildError::MissingObjectKey("metadata.uid")));
}

/// The children of the fixtures without security are exactly what the operator rendered before
/// CURVE existed (`fixtures/golden/*.json`, written by the previous commit's build), so an
/// upgrade rolls out no existing proxy: same Deployment, same fingerprint. One deliberate
/// change since: the pods' default heartbeat flags (issue 11), so the operator release that
/// brings heartbeats rolls each proxy once, drained.
#[test]
fn unsecured_children_are_byte_identical_to_before_curve() {
    for name in ["minimal", "full", "pipeline-scaled-to-zero"] {
        let c = build(&format!("{name}.yaml"));
        let rendered = serde_json::to_string_pretty(&serde_json::json!({
            "deployment": c.deployment, "service": c.service, "headless": c.headless,
        }))
        .expect("children serialize")
            + "\n";
        let path = format!("{}/tests/fixtures/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(rendered == golden, "{name}: the children changed:\n{rendered}");
    }
}

fn volume<'a>(pod: &'a PodSpec, name: &str) -> &'a k8s_openapi::api::core::v1::Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}: {:?}", pod.volumes))
}

/// Each CURVE socket gets its server key from its Secret and its allow-list from its Secret or
/// ConfigMap, mounted read-only at a path of its own, with files the proxy's group can read and
/// nobody else; a NULL socket (capture here) gets nothing.
#[test]
fn curve_sockets_mount_their_secrets_read_only_with_group_readable_files() {
    let c = build("secured.yaml");
    let pod = pod(&c.deployment);
    let names: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "curve-frontend-server-key",
            "curve-frontend-authorized-keys",
            "curve-backend-server-key",
            "curve-control-server-key",
            "curve-control-authorized-keys",
        ]
    );
    let secret = |name: &str| volume(pod, name).secret.clone().expect("a Secret volume");
    let fk = secret("curve-frontend-server-key");
    assert_eq!(fk.secret_name.as_deref(), Some("events-curve"));
    let item = |key: &str, path: &str| k8s_openapi::api::core::v1::KeyToPath {
        key: key.into(),
        path: path.into(),
        mode: None,
    };
    assert_eq!(fk.items, Some(vec![item("server_secret", "server_secret")]), "default key");
    assert_eq!(fk.default_mode, Some(0o440));
    let bk = secret("curve-backend-server-key");
    assert_eq!(bk.items, Some(vec![item("backend_secret", "server_secret")]));
    let fa = volume(pod, "curve-frontend-authorized-keys").config_map.clone().expect("ConfigMap");
    assert_eq!(fa.name, "events-publishers");
    assert_eq!(fa.items, Some(vec![item("publishers.txt", "authorized_keys")]));
    assert_eq!(fa.default_mode, Some(0o440));
    let ca = secret("curve-control-authorized-keys");
    assert_eq!(ca.secret_name.as_deref(), Some("events-operators"));
    assert_eq!(ca.items, None, "without a key every entry of the Secret is a file");
    // Files are root-owned; fsGroup makes them the proxy's group, which 0440 lets read.
    let psc = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(psc.run_as_group, Some(65532));

    let mounts: Vec<(String, String, Option<bool>, Option<String>)> = proxy(&c.deployment)
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only, m.sub_path.clone()))
        .collect();
    let m = |n: &str, p: &str| (n.to_string(), p.to_string(), Some(true), None);
    assert_eq!(
        mounts,
        [
            m("curve-frontend-server-key", "/etc/zmq-proxy/curve/frontend/server-key"),
            m("curve-frontend-authorized-keys", "/etc/zmq-proxy/curve/frontend/authorized-keys"),
            m("curve-backend-server-key", "/etc/zmq-proxy/curve/backend/server-key"),
            m("curve-control-server-key", "/etc/zmq-proxy/curve/control/server-key"),
            m("curve-control-authorized-keys", "/etc/zmq-proxy/curve/control/authorized-keys"),
        ],
        "read-only, whole volumes (a subPath mount never sees the kubelet's updates)"
    );
}

/// The proxy gets the mounted paths: the key file, the allow-list directory (what the kubelet
/// updates in place), and `--curve-allow-any` once, for the socket that asked for it.
#[test]
fn curve_flags_pass_the_mounted_paths() {
    let c = build("secured.yaml");
    let proxy = proxy(&c.deployment);
    let args = proxy.args.clone().unwrap_or_default();
    let curve: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .skip_while(|a| *a != "--frontend-curve-server-key-file")
        .take_while(|a| *a != "--http-bind")
        .collect();
    assert_eq!(
        curve,
        [
            "--frontend-curve-server-key-file",
            "/etc/zmq-proxy/curve/frontend/server-key/server_secret",
            "--frontend-curve-authorized-keys",
            "/etc/zmq-proxy/curve/frontend/authorized-keys",
            "--backend-curve-server-key-file",
            "/etc/zmq-proxy/curve/backend/server-key/server_secret",
            "--control-curve-server-key-file",
            "/etc/zmq-proxy/curve/control/server-key/server_secret",
            "--control-curve-authorized-keys",
            "/etc/zmq-proxy/curve/control/authorized-keys",
            "--curve-allow-any",
        ]
    );
    assert_eq!(arg_after(proxy, "--capture-curve-server-key-file"), None, "capture is NULL");
    // Every path passed is inside a mount of the container.
    let mounts: Vec<String> =
        proxy.volume_mounts.iter().flatten().map(|m| m.mount_path.clone()).collect();
    for path in curve.iter().filter(|a| a.starts_with('/')) {
        assert!(mounts.iter().any(|m| path.starts_with(m.as_str())), "{path} is not mounted");
    }
}

/// A security section that bypassed the CRD's rules is refused before anything is built, naming
/// the field as the CEL rules do.
#[test]
fn inconsistent_security_is_refused_naming_the_field() {
    use zmq_proxy::security::words;
    let opts = BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() };
    // The frontend's curve section of secured.yaml, edited; the refusal's message.
    let refused = |edit: &dyn Fn(&mut zmq_proxy::security::CurveSecurity)| {
        let mut zp = fixture("secured.yaml");
        if let Some(security) = zp.spec.sockets.frontend.security.as_mut() {
            edit(&mut security.curve);
        }
        match build::children(&zp, &opts) {
            Err(BuildError::InvalidSpec(m)) => m,
            other => panic!("accepted: {other:?}"),
        }
    };
    let field = "spec.frontend.security.curve";
    let m = refused(&|c| c.authorized_keys = None);
    assert_eq!(m, format!("{field}.authorizedKeys: {}", words::ALLOW_LIST_REQUIRED));
    let m = refused(&|c| c.allow_any_client = true);
    assert_eq!(m, format!("{field}.allowAnyClient: {}", words::ALLOW_LIST_AND_ANY));
    let m = refused(&|c| {
        if let Some(l) = c.authorized_keys.as_mut() {
            l.secret_name = Some("also".into());
        }
    });
    assert_eq!(m, format!("{field}.authorizedKeys.configMapName: {}", words::SOURCE_BOTH));
    let m = refused(&|c| {
        if let Some(l) = c.authorized_keys.as_mut() {
            l.config_map_name = None;
        }
    });
    assert_eq!(m, format!("{field}.authorizedKeys: {}", words::SOURCE_REQUIRED));
    let m = refused(&|c| c.server_key.secret_name = "Not_A_Name".into());
    assert!(m.starts_with(&format!("{field}.serverKey.secretName")), "{m}");
    let m = refused(&|c| c.server_key.key = "..data".into());
    assert!(m.starts_with(&format!("{field}.serverKey.key")), "{m}");
}

/// Endpoints use the Service's cluster DNS name and every socket's port.
#[test]
fn endpoints_name_the_service() {
    let e = build::endpoints(&fixture("full.yaml")).expect("endpoints");
    assert_eq!(e.frontend, "tcp://tasks.work.svc:5555");
    assert_eq!(e.backend, "tcp://tasks.work.svc:5556");
    assert_eq!(e.capture.as_deref(), Some("tcp://tasks.work.svc:5557"));
    assert_eq!(e.control.as_deref(), Some("tcp://tasks.work.svc:5558"));
}

/// The operator's `--proxy-image-pull-policy` fills in objects that say nothing, and an object's
/// own `imagePullPolicy` wins: a cluster-wide default must not override a user's explicit choice.
#[test]
fn operator_pull_policy_applies_only_where_the_object_sets_none() {
    use zmq_proxy_operator::crd::ImagePullPolicy;
    let opts = BuildOptions {
        default_image: DEFAULT_IMAGE.to_string(),
        default_pull_policy: Some(ImagePullPolicy::Always),
    };
    let minimal = build::children(&fixture("minimal.yaml"), &opts).expect("builds");
    assert_eq!(proxy(&minimal.deployment).image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(proxy(&minimal.deployment).image.as_deref(), Some(DEFAULT_IMAGE));

    let mut own = fixture("minimal.yaml");
    own.spec.image_pull_policy = Some(ImagePullPolicy::Never);
    let own = build::children(&own, &opts).expect("builds");
    assert_eq!(proxy(&own.deployment).image_pull_policy.as_deref(), Some("Never"));

    let unset = build("minimal.yaml");
    assert_eq!(proxy(&unset.deployment).image_pull_policy, None);
}

/// The files a CURVE proxy's mounts would hold, written under `root` (the mount paths with
/// `root` before them): a server key, and an allow-list with one client key.
fn write_mounted_keys(root: &std::path::Path, zp: &ZmqProxy) {
    use zmq_proxy::curve::{SecretKey, zcert_public_text, zcert_secret_text};
    for m in build::curve_mounts(&zp.spec) {
        for mount in &m.mounts {
            let dir = root.join(mount.mount_path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).expect("mount dir");
            if mount.name.ends_with("server-key") {
                let text = zcert_secret_text(&SecretKey::generate());
                std::fs::write(dir.join(build::SERVER_KEY_FILE), text.as_bytes()).expect("key");
            } else {
                let client = SecretKey::generate().public_key();
                std::fs::write(dir.join("alice"), zcert_public_text(&client)).expect("list");
            }
        }
    }
}

/// The local `--config` form of a Kubernetes example: each `security.curve` section replaced by
/// the `curve` file paths the operator mounts (under `root`), `allowAnyClient` by
/// `spec.curveAllowAny`. What the operator's flags must amount to, written independently of them.
fn local_form(text: &str, root: &std::path::Path) -> String {
    let mut doc: serde_json::Value = serde_yaml::from_str(text).expect("example parses");
    let root = root.display();
    let mut any = false;
    for socket in ["frontend", "backend", "capture", "control"] {
        let Some(sock) = doc["spec"].get_mut(socket).and_then(|s| s.as_object_mut()) else {
            continue;
        };
        let Some(security) = sock.remove("security") else { continue };
        let curve = &security["curve"];
        let dir = format!("{root}/etc/zmq-proxy/curve/{socket}");
        let mut local =
            serde_json::json!({"serverKeyFile": format!("{dir}/server-key/server_secret")});
        if curve.get("authorizedKeys").is_some() {
            local["authorizedKeys"] = format!("{dir}/authorized-keys").into();
        }
        any |= curve["allowAnyClient"] == true;
        sock.insert("curve".into(), local);
    }
    if any {
        doc["spec"]["curveAllowAny"] = true.into();
    }
    serde_yaml::to_string(&doc).expect("yaml")
}

/// The flags the operator renders are the proxy's own command line: every valid example (and
/// the secured fixture), built into a Deployment, parses with the proxy's parser into the same
/// proxy that `zmq-proxy --config` makes of the file, plus the metrics listener on
/// `metricsPort`. A flag renamed on either side fails here instead of in a crash-looping pod.
/// With CURVE, the mounted files are written under a temporary root and the flags' paths moved
/// there; the manifest side is the example's local form (file paths in `curve`), and each
/// socket must come out as its section says: NULL, a CURVE server with that allow-list
/// directory, or a CURVE server accepting any client.
#[test]
fn rendered_args_run_the_same_proxy_as_the_manifest() {
    use clap::Parser;
    use zmq_proxy::config::KUBERNETES_HEARTBEAT;
    use zmq_proxy::curve::{Allow, Mechanism};
    use zmq_proxy::heartbeat::FieldNames;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<std::path::PathBuf> =
        std::fs::read_dir(dir).expect("examples/").map(|e| e.expect("entry").path()).collect();
    files.push(format!("{}/tests/fixtures/secured.yaml", env!("CARGO_MANIFEST_DIR")).into());
    let mut checked = 0;
    let mut secured = 0;
    let mut with_heartbeat = 0;
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".yaml") || name.starts_with("invalid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let mut zp: ZmqProxy = serde_yaml::from_str(&text).expect("example parses");
        zp.metadata.namespace = Some("apps".into());
        zp.metadata.uid = Some("0000".into());
        let children = build::children(
            &zp,
            &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut args = proxy(&children.deployment).args.clone().unwrap_or_default();
        let root = std::env::temp_dir()
            .join(format!("zmq-proxy-operator-args-{}-{checked}", std::process::id()));
        let curve = !build::curve_mounts(&zp.spec).is_empty();
        let manifest = if curve {
            write_mounted_keys(&root, &zp);
            let moved = format!("{}{}", root.display(), build::CURVE_MOUNT_ROOT);
            for a in &mut args {
                if let Some(rest) = a.strip_prefix(build::CURVE_MOUNT_ROOT) {
                    *a = format!("{moved}{rest}");
                }
            }
            secured += 1;
            local_form(&text, &root)
        } else {
            text.clone()
        };
        let cli = zmq_proxy::config::Cli::try_parse_from(
            std::iter::once("zmq-proxy".to_string()).chain(args.iter().cloned()),
        )
        .unwrap_or_else(|e| panic!("{name}: the proxy refuses {args:?}: {e}"));
        let from_flags = cli.into_config().unwrap_or_else(|e| panic!("{name}: {e}"));
        let from_file = zmq_proxy::config::parse_manifest(&manifest)
            .unwrap_or_else(|e| panic!("{name}: --config refuses it: {e}"));
        let metrics_port = zp.spec.metrics_port;
        assert_eq!(from_flags.http_bind, Some(format!("0.0.0.0:{metrics_port}")), "{name}");
        // The pods get the spec's lame duck (default 5 s); a manifest run locally without one
        // has none, as nothing there needs to learn that the proxy is going away.
        let lame_duck =
            std::time::Duration::from_secs(u64::try_from(zp.spec.lame_duck_seconds).unwrap_or(0));
        assert_eq!(from_flags.lame_duck, lame_duck, "{name}");
        // Each data socket's heartbeat fields reach the pods as flags; a socket that sets none
        // gets the pods' default there, and libzmq's (none) from a manifest run locally.
        let sockets = &zp.spec.sockets;
        let mut specs = vec![(&from_flags.frontend, &sockets.frontend)];
        specs.push((&from_flags.backend, &sockets.backend));
        specs.extend(from_flags.capture.as_ref().zip(sockets.capture.as_ref()));
        for (flags, spec) in specs {
            with_heartbeat += usize::from(!spec.heartbeat.is_empty());
            let set = if spec.heartbeat.is_empty() { KUBERNETES_HEARTBEAT } else { spec.heartbeat };
            let pods = set.resolve(&FieldNames::manifest("frontend")).expect("valid heartbeats");
            assert_eq!(flags.heartbeat, pods, "{name}");
            assert!(pods.interval.is_some(), "{name}: every example socket sends PINGs in a pod");
        }
        let comparable = |c: &zmq_proxy::ProxyConfig| {
            let mut c = c.clone();
            c.http_bind = None;
            c.log_format = Default::default();
            c.lame_duck = Default::default();
            let mut all =
                vec![(&mut c.frontend, &sockets.frontend), (&mut c.backend, &sockets.backend)];
            all.extend(c.capture.as_mut().zip(sockets.capture.as_ref()));
            for (sock, spec) in all {
                if spec.heartbeat.is_empty() {
                    sock.heartbeat = Default::default();
                }
            }
            c
        };
        assert_eq!(comparable(&from_flags), comparable(&from_file), "{name}");
        // Each socket as its own section says, whatever the proxy's global allow-any flag.
        let mut accepted = vec![
            ("frontend", from_flags.frontend.security.accepted.clone()),
            ("backend", from_flags.backend.security.accepted.clone()),
        ];
        if let Some(c) = &from_flags.capture {
            accepted.push(("capture", c.security.accepted.clone()));
        }
        if from_flags.control_bind.is_some() {
            accepted.push(("control", from_flags.control_security.clone()));
        }
        let sections = zp.spec.sockets.named_security();
        assert_eq!(accepted.len(), sections.len(), "{name}");
        for ((socket, mechanism), (_, section)) in accepted.iter().zip(sections) {
            let list_dir =
                format!("{}{}/{socket}/authorized-keys", root.display(), build::CURVE_MOUNT_ROOT);
            match (section.map(|s| &s.curve), mechanism) {
                (None, Mechanism::Null) => {}
                (Some(c), Mechanism::Server(server)) => match &server.allow {
                    Allow::Any => assert!(c.allow_any_client, "{name}: {socket} accepts any"),
                    Allow::List(list) => {
                        assert!(c.authorized_keys.is_some(), "{name}: {socket}");
                        assert_eq!(
                            list.path(),
                            std::path::Path::new(&list_dir),
                            "{name}: {socket}"
                        );
                        assert_eq!(list.len(), 1, "{name}: {socket}: the mounted key is read");
                    }
                },
                (section, _) => panic!("{name}: {socket} is not what {section:?} asks"),
            }
        }
        if curve {
            let _ = std::fs::remove_dir_all(&root);
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} examples checked");
    assert!(with_heartbeat >= 1, "no example sets heartbeat fields");
    assert!(secured >= 2, "the secured example and fixture: {secured}");
}
