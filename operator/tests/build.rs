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

/// The flags the operator renders are the proxy's own command line: every valid example, built
/// into a Deployment, parses with the proxy's parser into the same proxy that `zmq-proxy
/// --config` makes of the file, plus the metrics listener on `metricsPort`. A flag renamed on
/// either side fails here instead of in a crash-looping pod.
#[test]
fn rendered_args_run_the_same_proxy_as_the_manifest() {
    use clap::Parser;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
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
        let args = proxy(&children.deployment).args.clone().unwrap_or_default();
        let cli = zmq_proxy::config::Cli::try_parse_from(
            std::iter::once("zmq-proxy".to_string()).chain(args.iter().cloned()),
        )
        .unwrap_or_else(|e| panic!("{name}: the proxy refuses {args:?}: {e}"));
        let from_flags = cli.into_config().unwrap_or_else(|e| panic!("{name}: {e}"));
        let from_file = zmq_proxy::config::parse_manifest(&text)
            .unwrap_or_else(|e| panic!("{name}: --config refuses it: {e}"));
        let metrics_port = zp.spec.metrics_port;
        assert_eq!(from_flags.http_bind, Some(format!("0.0.0.0:{metrics_port}")), "{name}");
        // The pods get the spec's lame duck (default 5 s); a manifest run locally without one
        // has none, as nothing there needs to learn that the proxy is going away.
        let lame_duck =
            std::time::Duration::from_secs(u64::try_from(zp.spec.lame_duck_seconds).unwrap_or(0));
        assert_eq!(from_flags.lame_duck, lame_duck, "{name}");
        let comparable = |c: &zmq_proxy::ProxyConfig| {
            let mut c = c.clone();
            c.http_bind = None;
            c.log_format = Default::default();
            c.lame_duck = Default::default();
            c
        };
        assert_eq!(comparable(&from_flags), comparable(&from_file), "{name}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples checked");
}
