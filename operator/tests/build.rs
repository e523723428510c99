//! "ZmqProxy in, StatefulSet/Service out": pure tests of `build::children` from YAML fixtures.
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

fn options() -> BuildOptions {
    BuildOptions { default_image: DEFAULT_IMAGE.to_string(), ..Default::default() }
}

fn fixture_zp(name: &str) -> ZmqProxy {
    let mut zp = fixture(name);
    zp.metadata.namespace.get_or_insert_with(|| "work".to_string());
    zp
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

/// The proxy must bind exactly the sockets of the spec, with the contract's flags. Every bind is
/// `*`: dual stack where the pod has IPv6, IPv4 where it has not, so one rendering serves
/// IPv4-only, IPv6-only and dual-stack clusters (`0.0.0.0` would leave an IPv6-only cluster's
/// peers nothing to reach).
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
        "tcp://*:5555",
        "--backend-type",
        "DEALER",
        "--backend-bind",
        "tcp://*:5556",
        "--capture-type",
        "PUB",
        "--capture-bind",
        "tcp://*:5557",
        "--control-bind",
        "tcp://*:5558",
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
        "--max-memory",
        "100663296",
        "--pause-file",
        "/etc/zmq-proxy/steering/paused",
        "--http-bind",
        "*:9191",
        "--drain-timeout",
        "20",
        "--lame-duck",
        "3",
        "--log-format",
        "json",
        // Three replicas of ROUTER/DEALER: a federation.
        "--federation-bind",
        "tcp://*:5570",
        "--federation-peers",
        "tcp://tasks-federation.work.svc:5570",
        "--federation-curve-key-file",
        "/etc/zmq-proxy/federation/secret-key",
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
    assert_eq!(arg_after(proxy, "--http-bind"), Some("*:9090"));
    assert_eq!(arg_after(proxy, "--drain-timeout"), Some("5"));
    assert_eq!(arg_after(proxy, "--lame-duck"), Some("5"));
    assert_eq!(arg_after(proxy, "--capture-heartbeat-interval"), None);
    assert_eq!(proxy.image.as_deref(), Some(DEFAULT_IMAGE));
    let names: Vec<String> = ports(&c.service).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["frontend", "backend"]);
}

/// The proxy's memory budget: the spec's `maxMemoryBytes` when set (0 passes on as no limit),
/// else half the container's memory limit, as the proxy would take from its cgroup; without
/// either the flag is left out and the proxy reads its cgroup itself.
#[test]
fn max_memory_comes_from_the_spec_or_half_the_memory_limit() {
    let mut zp = fixture("minimal.yaml");
    let with = |zp: &ZmqProxy| {
        let c = build::children(
            zp,
            &BuildOptions { default_image: DEFAULT_IMAGE.to_string(), ..Default::default() },
        )
        .expect("builds");
        arg_after(proxy(&c.deployment), "--max-memory").map(str::to_string)
    };
    assert_eq!(with(&zp), None);
    let limits = BTreeMap::from([("memory".to_string(), Quantity("1Gi".into()))]);
    zp.spec.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
        limits: Some(limits),
        ..Default::default()
    });
    assert_eq!(with(&zp).as_deref(), Some("536870900"), "half of 1Gi, in whole percent");
    zp.spec.max_memory_bytes = Some(0);
    assert_eq!(with(&zp).as_deref(), Some("0"));
    zp.spec.max_memory_bytes = Some(64 << 20);
    assert_eq!(with(&zp).as_deref(), Some("67108864"));
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
            ("metrics".to_string(), 9191),
            ("federation".to_string(), 5570)
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

/// A Service's last endpoint keeps its traffic while terminating until its readiness probe fails
/// (KEP-1669): the probe must see the lame duck's 503 and kube-proxy apply it (about a second)
/// before the default lame duck ends, or peers reconnect to the vanished pod and stall in TCP's
/// SYN retries (72 s on the real cluster with the old 5 s x 2 probe).
#[test]
fn the_readiness_probe_takes_the_pod_out_of_its_service_within_the_lame_duck() {
    let minimal = build("minimal.yaml");
    let probe = proxy(&minimal.deployment).readiness_probe.clone().expect("readiness probe");
    assert_eq!(probe.http_get.as_ref().and_then(|h| h.path.as_deref()), Some("/readyz"));
    let period = probe.period_seconds.unwrap_or(10);
    let unready_within = period * probe.failure_threshold.unwrap_or(3);
    let kube_proxy_sync = 1;
    let lame_duck = zmq_proxy_operator::crd::DEFAULT_LAME_DUCK_SECONDS;
    assert!(
        unready_within + kube_proxy_sync < lame_duck,
        "unready within {unready_within}s + sync {kube_proxy_sync}s, lame duck {lame_duck}s"
    );
    assert!(probe.timeout_seconds.unwrap_or(1) <= period, "a probe ends before the next starts");
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

/// A Deployment for every replica count: its rolling update starts a new pod and takes an old
/// one away only once the new one is ready (maxSurge 1, maxUnavailable 0), so the proxy keeps
/// serving through it.
#[test]
fn deployment_surges_one_pod_and_takes_none_away_before_it_is_ready() {
    for (fixture, replicas) in [("minimal.yaml", 1), ("full.yaml", 3)] {
        let c = build(fixture);
        let spec = c.deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(replicas));
        let strategy = spec.strategy.as_ref().expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.as_ref().expect("rollingUpdate");
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(spec.min_ready_seconds, None, "ready is available: the drain does the rest");
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert_eq!(
            selector.keys().map(String::as_str).collect::<Vec<_>>(),
            ["app.kubernetes.io/instance", "app.kubernetes.io/name"]
        );
        assert_eq!(c.deployment.metadata.name.as_deref(), Some("tasks"));
    }
    // The selector is immutable and depends on the name only: another spec gives the same one.
    let immutable = |c: &Children| c.deployment.spec.clone().expect("spec").selector;
    assert_eq!(immutable(&build("minimal.yaml")), immutable(&build("full.yaml")));
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
/// the StatefulSet's selector.
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
/// container ports, and the same selector as the StatefulSet.
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
    let workload_selector =
        c.deployment.spec.as_ref().and_then(|s| s.selector.match_labels.clone());
    assert_eq!(svc.selector, workload_selector);
}

/// The spec's IP family policy and families reach both Services as written, so a dual-stack
/// cluster gives peers of either family a Service address and the federation's name lists the
/// pods' addresses of both families.
#[test]
fn ip_family_policy_and_families_reach_both_services() {
    let c = build("full.yaml");
    for svc in [&c.service, c.federation.as_ref().expect("federation Service")] {
        let spec = svc.spec.as_ref().expect("spec");
        let name = svc.metadata.name.clone().unwrap_or_default();
        assert_eq!(spec.ip_family_policy.as_deref(), Some("PreferDualStack"), "{name}");
        assert_eq!(
            spec.ip_families.as_deref(),
            Some(&["IPv6".to_string(), "IPv4".to_string()][..]),
            "{name}"
        );
    }
}

/// Unset, both fields are left out (not null, not SingleStack), so the API server applies the
/// cluster's defaults and existing Services are applied unchanged.
#[test]
fn ip_families_are_left_to_the_cluster_when_unset() {
    let c = build("minimal.yaml");
    let json = serde_json::to_value(&c.service).expect("serializes");
    assert!(json["spec"].get("ipFamilyPolicy").is_none(), "{json}");
    assert!(json["spec"].get("ipFamilies").is_none(), "{json}");
}

/// Families Kubernetes would refuse on the Service are refused before anything is applied.
#[test]
fn impossible_ip_families_are_refused_naming_the_field() {
    use zmq_proxy_operator::crd::{IpFamily, IpFamilyPolicy};
    let refused = |policy: Option<IpFamilyPolicy>, families: Vec<IpFamily>| {
        let mut zp = fixture("minimal.yaml");
        zp.spec.ip_family_policy = policy;
        zp.spec.ip_families = families;
        match build::children(
            &zp,
            &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
        ) {
            Err(BuildError::InvalidSpec(m)) => Some(m),
            _ => None,
        }
    };
    let single = Some(IpFamilyPolicy::SingleStack);
    let both = vec![IpFamily::IPv4, IpFamily::IPv6];
    let m = refused(single, both.clone()).expect("SingleStack with two families");
    assert!(m.starts_with("spec.ipFamilies: a SingleStack Service has one IP family"), "{m}");
    let m = refused(None, vec![IpFamily::IPv6, IpFamily::IPv6]).expect("twice the same");
    assert_eq!(m, "spec.ipFamilies: IPv6 is listed twice");
    let m = refused(None, vec![IpFamily::IPv4; 3]).expect("three");
    assert!(m.starts_with("spec.ipFamilies: at most two"), "{m}");
    assert_eq!(refused(single, vec![IpFamily::IPv6]), None);
    assert_eq!(refused(Some(IpFamilyPolicy::RequireDualStack), both.clone()), None);
    assert_eq!(refused(None, both), None);
}

/// One replica is one proxy: no federation, no flag, no key, no peer Service.
#[test]
fn one_replica_has_no_federation() {
    for fixture in ["minimal.yaml", "secured.yaml", "pipeline-scaled-to-zero.yaml"] {
        let c = build(fixture);
        assert!(c.federation.is_none(), "{fixture}");
        let proxy = proxy(&c.deployment);
        let args = proxy.args.clone().unwrap_or_default();
        assert!(!args.iter().any(|a| a.starts_with("--federation")), "{fixture}: {args:?}");
        assert!(proxy.env.is_none(), "{fixture}");
        let volumes = pod(&c.deployment).volumes.clone().unwrap_or_default();
        assert!(!volumes.iter().any(|v| v.name == build::FEDERATION_VOLUME), "{fixture}");
        assert!(build::federation_args(&fixture_zp(fixture)).is_empty());
    }
}

/// More than one replica of a federated pattern: every pod binds the federation port, dials the
/// headless Service `<name>-federation` (every replica's address, ready or not), reads the key
/// from the Secret's mount and takes its pod's name as its id; the key is a file, never an
/// argument.
#[test]
fn several_replicas_federate_through_the_headless_service_with_the_mounted_key() {
    let c = build("full.yaml");
    let proxy = proxy(&c.deployment);
    assert_eq!(arg_after(proxy, "--federation-bind"), Some("tcp://*:5570"));
    assert_eq!(
        arg_after(proxy, "--federation-peers"),
        Some("tcp://tasks-federation.work.svc:5570")
    );
    assert_eq!(
        arg_after(proxy, "--federation-curve-key-file"),
        Some("/etc/zmq-proxy/federation/secret-key")
    );
    let args = proxy.args.clone().unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--federation-id"), "{args:?}");
    let env = proxy.env.clone().unwrap_or_default();
    assert_eq!(env.len(), 1);
    assert_eq!(env[0].name, build::FEDERATION_ID_ENV);
    let field = env[0].value_from.as_ref().and_then(|v| v.field_ref.as_ref());
    assert_eq!(field.map(|f| f.field_path.as_str()), Some("metadata.name"));
    let port = proxy.ports.iter().flatten().find(|p| p.name.as_deref() == Some("federation"));
    assert_eq!(port.map(|p| p.container_port), Some(5570));
    let mount = proxy
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == build::FEDERATION_VOLUME)
        .expect("key mount");
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (build::FEDERATION_MOUNT, Some(true)));
    let pod = pod(&c.deployment);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == build::FEDERATION_VOLUME)
        .and_then(|v| v.secret.clone())
        .expect("key volume");
    assert_eq!(volume.secret_name.as_deref(), Some("tasks-federation"));
    let items = volume.items.unwrap_or_default();
    assert_eq!(items.len(), 1, "the secret key only");
    assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("secret-key", "secret-key"));
    assert_eq!(volume.default_mode, Some(build::KEY_FILE_MODE));
    // The key file is the proxy's group's to read.
    let group = pod.security_context.as_ref().and_then(|s| s.fs_group);
    assert_eq!(group, Some(build::RUN_AS_USER));

    let service = c.federation.as_ref().expect("federation Service");
    assert_eq!(service.metadata.name.as_deref(), Some("tasks-federation"));
    let spec = service.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector, c.service.spec.as_ref().and_then(|s| s.selector.clone()));
    assert_eq!(
        ports(service),
        [("federation".to_string(), 5570, Some(IntOrString::String("federation".into())))]
    );
}

/// The federation port follows `spec.federationPort`, and must not be a socket's or the metrics
/// port; more than one replica of a pattern that does not federate is refused.
#[test]
fn the_federation_port_is_the_specs_and_distinct_and_only_federated_patterns_scale() {
    let mut zp = fixture("full.yaml");
    zp.spec.federation_port = 6000;
    let c = build::children(&zp, &options()).expect("builds");
    assert_eq!(arg_after(proxy(&c.deployment), "--federation-bind"), Some("tcp://*:6000"));
    for (port, clash) in [(5555, "frontend"), (5558, "control"), (9191, "metricsPort")] {
        zp.spec.federation_port = port;
        match build::children(&zp, &options()) {
            Err(BuildError::InvalidSpec(m)) => {
                assert!(m.starts_with("spec.federationPort:") && m.contains(clash), "{m}")
            }
            other => panic!("{port}: {other:?}"),
        }
    }
    // One replica does not use the port: it may be a socket's.
    let mut one = fixture("minimal.yaml");
    one.spec.federation_port = 5555;
    assert!(build::children(&one, &options()).is_ok());
    let mut pair = fixture("minimal.yaml");
    pair.spec.sockets.frontend.socket_type = zmq_proxy_api::socket::SocketType::Sub;
    pair.spec.sockets.backend.socket_type = zmq_proxy_api::socket::SocketType::Pub;
    assert!(build::children(&pair, &options()).is_ok());
    pair.spec.replicas = 2;
    match build::children(&pair, &options()) {
        Err(BuildError::InvalidSpec(m)) => assert!(m.starts_with("spec.replicas:"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// The federation's Secret: the key as Z85 text that the proxy's own reader accepts, owned by
/// the object and labelled as every child, immutable so nobody rewrites the key in place.
#[test]
fn the_federation_secret_holds_a_key_the_proxy_reads() {
    let zp = fixture("full.yaml");
    let (secret_key, public_key) = zmq_proxy_operator::federation_secret::generate_keypair();
    let secret = build::federation_secret(&zp, &secret_key, &public_key).expect("builds");
    assert_eq!(secret.metadata.name.as_deref(), Some("tasks-federation"));
    assert_eq!(secret.immutable, Some(true));
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!((owners.len(), owners[0].controller), (1, Some(true)));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("zmq-proxy-operator")
    );
    let data = secret.data.clone().unwrap_or_default();
    let text = String::from_utf8(data["secret-key"].0.clone()).expect("text");
    assert!(text.ends_with('\n') && text.trim().len() == 40, "one Z85 line");
    let read = zmq_proxy::curve::SecretKey::from_z85(text.trim()).expect("a Z85 secret key");
    assert_eq!(read.public_key().to_string(), public_key);
    let public = String::from_utf8(data["public-key"].0.clone()).expect("text");
    assert_eq!(public.trim(), public_key);
}

/// Every child is controlled by the ZmqProxy (garbage collection and the owns() watches rely on
/// it) and carries the managed-by label the watches filter on.
#[test]
fn every_child_has_a_controller_owner_reference_and_labels() {
    let c = build("full.yaml");
    let federation = c.federation.as_ref().expect("federation Service");
    let metas = [&c.deployment.metadata, &c.service.metadata, &federation.metadata];
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
    zp.spec.sockets.backend.socket_type = zmq_proxy_api::socket::SocketType::Push;
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

/// The children of the fixtures without security are exactly `fixtures/golden/*.json`, so a
/// change that would roll out every existing proxy on upgrade shows here. Last changed when the
/// workload became a Deployment again (the federation's Service, flags and key only with more
/// than one replica), before that when it became a StatefulSet (and the PDB), the
/// binds dual stack (`*` instead of `0.0.0.0`, which an IPv6-only cluster cannot reach) and every
/// pod mounted its steering ConfigMap with `--pause-file`, and the pods got their default
/// heartbeat flags: one replacement of each proxy on upgrade; pausing and resuming afterwards change only the ConfigMap, never the pods.
/// Changed again for the 1 s readiness probe (`build::READINESS_PROBE`): one more replacement.
/// `--max-memory` changed `full` only: a proxy with a memory limit or `maxMemoryBytes` is
/// replaced once on upgrade; one without either (`minimal`) keeps its pods.
#[test]
fn unsecured_children_are_byte_identical_to_the_golden_files() {
    for name in ["minimal", "full", "pipeline-scaled-to-zero"] {
        let c = build(&format!("{name}.yaml"));
        let rendered = serde_json::to_string_pretty(&serde_json::json!({
            "deployment": c.deployment, "service": c.service, "federation": c.federation,
            "podDisruptionBudget": c.pdb, "steering": c.steering,
        }))
        .expect("children serialize")
            + "\n";
        let path = format!("{}/tests/fixtures/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
        // UPDATE_GOLDEN=1 rewrites them: for a change meant to roll out every proxy.
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
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
            "steering",
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
            m("steering", "/etc/zmq-proxy/steering"),
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
        .take_while(|a| *a != "--pause-file")
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
    use zmq_proxy_api::security::words;
    let opts = BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() };
    // The frontend's curve section of secured.yaml, edited; the refusal's message.
    let refused = |edit: &dyn Fn(&mut zmq_proxy_api::security::CurveSecurity)| {
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
    let m = refused(&|c| {
        if let Some(k) = c.server_key.as_mut() {
            k.secret_name = "Not_A_Name".into();
        }
    });
    assert!(m.starts_with(&format!("{field}.serverKey.secretName")), "{m}");
    let m = refused(&|c| {
        if let Some(k) = c.server_key.as_mut() {
            k.key = "..data".into();
        }
    });
    assert!(m.starts_with(&format!("{field}.serverKey.key")), "{m}");
}

/// Endpoints use the Service's cluster DNS name and every socket's port.
#[test]
fn endpoints_name_the_service() {
    let e = build::endpoints(&fixture("full.yaml")).expect("endpoints");
    assert_eq!(e.frontend.as_deref(), Some("tcp://tasks.work.svc:5555"));
    assert_eq!(e.backend.as_deref(), Some("tcp://tasks.work.svc:5556"));
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
        ..Default::default()
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

/// `args` without the `--federation-*` flags and their values.
fn without_federation(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a.starts_with("--federation-") {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// The federation flags the operator renders parse with the proxy's own command line, the key
/// file written where the pod mounts it (moved under a temporary root) as the Secret holds it.
#[test]
fn federation_flags_are_the_proxys_own() {
    use clap::Parser;
    let mut zp = fixture("full.yaml");
    zp.spec.sockets.frontend.socket_type = zmq_proxy_api::socket::SocketType::Xsub;
    zp.spec.sockets.backend.socket_type = zmq_proxy_api::socket::SocketType::Xpub;
    zp.spec.sockets.capture = None;
    let children = build::children(&zp, &options()).expect("builds");
    let (secret_key, public_key) = zmq_proxy_operator::federation_secret::generate_keypair();
    let secret = build::federation_secret(&zp, &secret_key, &public_key).expect("secret");
    let root = std::env::temp_dir().join(format!("zmq-proxy-operator-fed-{}", std::process::id()));
    let dir = format!("{}{}", root.display(), build::FEDERATION_MOUNT);
    std::fs::create_dir_all(&dir).expect("dir");
    let data = secret.data.unwrap_or_default();
    std::fs::write(format!("{dir}/{}", build::SECRET_KEY_ENTRY), &data["secret-key"].0)
        .expect("key file");
    let args: Vec<String> = proxy(&children.deployment)
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| match a.strip_prefix(build::FEDERATION_MOUNT) {
            Some(rest) => format!("{dir}{rest}"),
            None => a,
        })
        .chain(["--federation-id".to_string(), "tasks-7d9f-x2".to_string()])
        .collect();
    let parsed = zmq_proxy::Cli::try_parse_from(
        std::iter::once("zmq-proxy".to_string()).chain(args.clone()),
    )
    .map_err(|e| e.to_string())
    .and_then(|cli| cli.into_config().map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir_all(&root);
    parsed.unwrap_or_else(|e| panic!("the proxy refuses {args:?}: {e}"));
}

/// The local `--config` form of a Kubernetes example's connect entries, in the namespace `apps`:
/// a Service is the host `<service>.apps.svc`, a selector the host of the headless Service the
/// operator keeps for it (a label selector has no local meaning).
fn local_connects(text: &str, proxy: &str) -> String {
    use zmq_proxy_api::socket::Role;
    let mut doc: serde_json::Value = serde_yaml::from_str(text).expect("example parses");
    for role in Role::DATA {
        let Some(list) = doc["spec"].get_mut(role.as_str()).and_then(|s| s.get_mut("connect"))
        else {
            continue;
        };
        for (i, entry) in list.as_array_mut().into_iter().flatten().enumerate() {
            let port = entry["port"].clone();
            let host = match (entry.get("service"), entry.get("selector")) {
                (Some(svc), _) => svc.as_str().unwrap_or_default().to_string(),
                (None, Some(_)) => build::connect_service_name(proxy, role, i),
                (None, None) => continue,
            };
            let mut local =
                serde_json::json!({"endpoint": format!("tcp://{host}.apps.svc:{port}")});
            if let Some(mode) = entry.get("addresses") {
                local["addresses"] = mode.clone();
            }
            *entry = local;
        }
    }
    serde_yaml::to_string(&doc).expect("yaml")
}

/// The flags the operator renders are the proxy's own command line: every valid example (and
/// the secured fixture), built into a StatefulSet, parses with the proxy's parser into the same
/// proxy that `zmq-proxy --config` makes of the file, plus the metrics listener on
/// `metricsPort`. A flag renamed on either side fails here instead of in a crash-looping pod.
/// With CURVE, the mounted files are written under a temporary root and the flags' paths moved
/// there; the manifest side is the example's local form (file paths in `curve`), and each
/// socket must come out as its section says: NULL, a CURVE server with that allow-list
/// directory, or a CURVE server accepting any client.
#[test]
fn rendered_args_run_the_same_proxy_as_the_manifest() {
    use clap::Parser;
    use zmq_proxy::curve::{Allow, Mechanism};
    use zmq_proxy_api::heartbeat::FieldNames;
    use zmq_proxy_api::kubernetes::KUBERNETES_HEARTBEAT;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<std::path::PathBuf> =
        std::fs::read_dir(dir).expect("examples/").map(|e| e.expect("entry").path()).collect();
    for fixture in ["secured.yaml", "tuned.yaml"] {
        files.push(format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR")).into());
    }
    let mut checked = 0;
    let mut secured = 0;
    let mut tuned = false;
    let mut with_heartbeat = 0;
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".yaml") || name.starts_with("invalid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let mut zp: ZmqProxy = serde_yaml::from_str(&text).expect("example parses");
        // Each replica of a federation is this one process plus the federation's flags (left
        // out above): its manifest side is the same spec at one replica.
        let text = match zp.spec.replicas {
            n if n > 1 => text.replace(&format!("replicas: {n}"), "replicas: 1"),
            _ => text,
        };
        zp.metadata.namespace = Some("apps".into());
        zp.metadata.uid = Some("0000".into());
        let children = build::children(
            &zp,
            &BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The federation's flags are checked on their own (see
        // `federation_flags_are_the_proxys_own`): its key exists only in a pod.
        let mut args =
            without_federation(proxy(&children.deployment).args.clone().unwrap_or_default());
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
        let manifest = local_connects(&manifest, &zp.metadata.name.clone().unwrap_or_default());
        let cli = zmq_proxy::Cli::try_parse_from(
            std::iter::once("zmq-proxy".to_string()).chain(args.iter().cloned()),
        )
        .unwrap_or_else(|e| panic!("{name}: the proxy refuses {args:?}: {e}"));
        let from_flags = cli.into_config().unwrap_or_else(|e| panic!("{name}: {e}"));
        let from_file = zmq_proxy::parse_manifest(&manifest)
            .unwrap_or_else(|e| panic!("{name}: --config refuses it: {e}"));
        let metrics_port = zp.spec.metrics_port;
        assert_eq!(from_flags.http_bind, Some(format!("*:{metrics_port}")), "{name}");
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
            c.pause_file = None;
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
        let pause_file = format!("{}/{}", build::STEERING_MOUNT, build::PAUSED_KEY);
        assert_eq!(from_flags.pause_file, Some(pause_file.into()), "{name}");
        assert_eq!(comparable(&from_flags), comparable(&from_file), "{name}");
        // Every option the spec sets reaches the proxy (the tuned fixture sets them all): the
        // flags parse into what the spec's own validation makes of its fields, and none is
        // left at its default by accident.
        let expected = zp.spec.sockets.socket_options("spec").expect("valid options");
        let got: Vec<_> =
            from_flags.named_sockets().into_iter().map(|(_, s)| s.options.clone()).collect();
        assert_eq!(got, expected, "{name}");
        if name == "tuned.yaml" {
            let defaults = zmq_proxy_api::options::SocketOptions::default();
            let f = &from_flags.frontend.options;
            let b = &from_flags.backend.options;
            assert_ne!(f, &defaults, "{name}");
            assert_eq!(
                (f.sndhwm, f.rcvhwm, f.max_msg_size, f.tcp_keepalive),
                (50000, 0, -1, false)
            );
            assert_eq!(f.connect_timeout, std::time::Duration::from_millis(1500));
            assert_eq!((b.sndhwm, b.rcvhwm, b.tcp_keepalive_count, b.nodrop), (10, 20, 5, true));
            assert_eq!(from_flags.capture.as_ref().map(|c| c.options.sndhwm), Some(100000));
            tuned = true;
        }
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
    assert!(tuned, "the tuned fixture was checked");
}

// Placement and overrides: `fixtures/placement.yaml` sets every one of them.

fn opts() -> BuildOptions {
    BuildOptions { default_image: DEFAULT_IMAGE.into(), ..Default::default() }
}

fn refusal(zp: &ZmqProxy) -> String {
    match build::children(zp, &opts()) {
        Err(BuildError::InvalidSpec(m)) => m,
        other => panic!("accepted: {other:?}"),
    }
}

/// Placement is the scheduler's: the spread over zones, the priority that decides who is
/// preempted, and the ServiceAccount (for image pull secrets or a cloud identity) must reach the
/// pod as written. The ServiceAccount's token stays unmounted: the proxy never calls the API.
#[test]
fn placement_fields_reach_the_pod() {
    let c = build("placement.yaml");
    let pod = pod(&c.deployment);
    let spread = pod.topology_spread_constraints.as_ref().expect("topologySpreadConstraints");
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(spread[0].max_skew, 1);
    assert_eq!(pod.priority_class_name.as_deref(), Some("messaging-critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some("zmq-proxy"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    // Unset, none of them is rendered (the scheduler's and the namespace's defaults apply).
    let minimal = build("minimal.yaml");
    let pod = self::pod(&minimal.deployment);
    assert!(pod.topology_spread_constraints.is_none());
    assert!(pod.priority_class_name.is_none() && pod.service_account_name.is_none());
}

/// A longer grace period (a sidecar that flushes, a slow preStop) is taken as written; one
/// shorter than the lame duck plus the drain would SIGKILL the proxy mid-drain and lose what it
/// still owes its peers, so an object that bypassed the CRD's rule is refused naming the field.
#[test]
fn explicit_grace_period_is_used_and_never_shorter_than_the_drain() {
    let c = build("placement.yaml");
    assert_eq!(pod(&c.deployment).termination_grace_period_seconds, Some(120));
    let mut zp = fixture("placement.yaml");
    zp.spec.termination_grace_period_seconds = Some(25);
    let exact = build::children(&zp, &opts()).expect("the drain period itself is enough");
    assert_eq!(pod(&exact.deployment).termination_grace_period_seconds, Some(25));
    zp.spec.termination_grace_period_seconds = Some(24);
    let m = refusal(&zp);
    assert!(m.starts_with("spec.terminationGracePeriodSeconds: "), "{m}");
    assert!(m.contains("lameDuckSeconds + drainTimeoutSeconds"), "{m}");
}

/// Service labels are for the user's tooling (cost allocation, a service mesh's selectors);
/// the Service peers use carries them, but the operator's own labels win, as its watches find
/// their children by the managed-by label. The federation's Service is the replicas' own.
#[test]
fn service_labels_reach_the_service_and_the_operators_win() {
    let c = build("placement.yaml");
    let federation = c.federation.as_ref().expect("federation Service");
    let own = federation.metadata.labels.clone().unwrap_or_default();
    assert!(!own.contains_key("team") && own.contains_key("app.kubernetes.io/managed-by"));
    let svc = &c.service;
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("queues"), "{svc:?}");
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("zmq-proxy-operator")
    );
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("tasks"));
    // The pods do not get them.
    let pod_labels = c.deployment.spec.as_ref().and_then(|s| s.template.metadata.clone());
    assert!(pod_labels.and_then(|m| m.labels).is_some_and(|l| !l.contains_key("team")));
}

/// The escape hatch: a sidecar, a volume mounted into the proxy, an env var on the proxy and a
/// pod securityContext field the spec does not model all land in the pod, merged by their keys,
/// while everything the operator set (args, ports, probes, hardening) stays.
#[test]
fn pod_template_adds_a_sidecar_a_volume_env_and_security_context() {
    let c = build("placement.yaml");
    let plain = {
        let mut zp = fixture("placement.yaml");
        zp.spec.pod_template = None;
        build::children(&zp, &opts()).expect("builds")
    };
    let pod = pod(&c.deployment);
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["proxy", "log-shipper"]);
    assert_eq!(pod.containers[1].image.as_deref(), Some("fluent/fluent-bit:3.2"));
    let proxy = proxy(&c.deployment);
    let before = self::proxy(&plain.deployment);
    assert_eq!(proxy.args, before.args);
    assert_eq!(proxy.ports, before.ports);
    assert_eq!(proxy.readiness_probe, before.readiness_probe);
    assert_eq!(proxy.security_context, before.security_context);
    let env: Vec<(String, Option<String>)> =
        proxy.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    let id = (build::FEDERATION_ID_ENV.to_string(), None);
    assert_eq!(env, [id, ("RUST_LOG".to_string(), Some("debug".to_string()))]);
    // The user's mount comes after the operator's (the steering ConfigMap and the federation's
    // key), which stay.
    assert_eq!(mount_paths(before), ["/etc/zmq-proxy/steering", "/etc/zmq-proxy/federation"]);
    assert_eq!(
        mount_paths(proxy),
        ["/etc/zmq-proxy/steering", "/etc/zmq-proxy/federation", "/scratch"]
    );
    assert!(volume(pod, "scratch").empty_dir.is_some());
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.supplemental_groups, Some(vec![4000]));
    assert_eq!(psc.run_as_non_root, Some(true), "the operator's fields are merged, not replaced");
    assert_eq!(
        psc.seccomp_profile,
        pod_of(&plain).security_context.clone().and_then(|s| s.seccomp_profile)
    );
    let meta = c.deployment.spec.as_ref().and_then(|s| s.template.metadata.clone()).expect("meta");
    let labels = meta.labels.unwrap_or_default();
    assert_eq!(labels.get("sidecar.istio.io/inject").map(String::as_str), Some("false"));
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("tasks"));
    assert_eq!(
        meta.annotations.unwrap_or_default().get("example.com/owner").map(String::as_str),
        Some("queues")
    );
}

fn pod_of(c: &Children) -> &PodSpec {
    pod(&c.deployment)
}

/// The override may add to the proxy container, never change what makes it the proxy of this
/// spec: its args and ports come from the spec and its CURVE mounts hold the keys, and a pod
/// without the selector labels would leave its StatefulSet. Such an object is refused, naming
/// the field, rather than silently undone or written as a broken pod.
#[test]
fn pod_template_cannot_override_what_the_operator_needs() {
    let with = |template: serde_json::Value| {
        let mut zp = fixture("secured.yaml");
        zp.spec.pod_template = Some(serde_json::from_value(template).expect("podTemplate"));
        zp
    };
    let m = refusal(&with(serde_json::json!({"spec": {"containers": [
        {"name": "proxy", "args": ["--frontend-type", "PUB"]}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].args: "), "{m}");
    let m = refusal(&with(serde_json::json!({"spec": {"containers": [
        {"name": "proxy", "ports": [{"containerPort": 5555, "name": "other"}]}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].ports: "), "{m}");
    let m = refusal(&with(serde_json::json!({"spec": {"volumes": [
        {"name": "curve-frontend-server-key", "emptyDir": {}}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.volumes[curve-frontend-server-key]: "), "{m}");
    let m = refusal(&with(serde_json::json!({"spec": {"containers": [{"name": "proxy",
        "volumeMounts": [{"name": "x", "mountPath": "/etc/zmq-proxy/curve/backend/server-key"}]}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].volumeMounts: "), "{m}");
    // The steering ConfigMap's volume and mount carry spec.paused: replacing them would leave
    // the proxy deaf to a pause.
    let m = refusal(&with(serde_json::json!({"spec": {"volumes": [
        {"name": "steering", "emptyDir": {}}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.volumes[steering]: "), "{m}");
    let m = refusal(&with(serde_json::json!({"spec": {"containers": [{"name": "proxy",
        "volumeMounts": [{"name": "x", "mountPath": "/etc/zmq-proxy/steering"}]}]}})));
    assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].volumeMounts: "), "{m}");
    let m = refusal(&with(
        serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/name": "mine"}}}),
    ));
    assert!(m.starts_with("spec.podTemplate.metadata.labels.app.kubernetes.io/name: "), "{m}");
    // CURVE volumes and mounts stay usable next to the user's own.
    let ok = build::children(
        &with(serde_json::json!({"spec": {"volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [{"name": "proxy", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}]}})),
        &opts(),
    )
    .expect("adding a mount is fine");
    let mut expected = mount_paths(proxy(&build("secured.yaml").deployment));
    assert_eq!(expected.len(), 6, "five CURVE key mounts and the steering mount: {expected:?}");
    expected.push("/tmp".to_string());
    assert_eq!(mount_paths(proxy(&ok.deployment)), expected);
}

fn mount_paths(container: &Container) -> Vec<String> {
    container.volume_mounts.iter().flatten().map(|m| m.mount_path.clone()).collect()
}

/// A misspelt field would otherwise vanish when the merged template is read into Kubernetes'
/// types, and the user would never learn why the pod ignores it; so it is refused by its path,
/// as is a value of the wrong type.
#[test]
fn pod_template_fields_a_pod_does_not_have_are_refused() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.pod_template = Some(
        serde_json::from_value(serde_json::json!({"spec": {"securityContext": {"fsgroup": 1}}}))
            .expect("podTemplate"),
    );
    assert_eq!(
        refusal(&zp),
        "spec.podTemplate.spec.securityContext.fsgroup: not a field of a Kubernetes pod template (as of the operator's API version, 1.33)"
    );
    zp.spec.pod_template = Some(
        serde_json::from_value(serde_json::json!({"spec": {"hostNetwork": "yes"}}))
            .expect("podTemplate"),
    );
    assert!(refusal(&zp).starts_with("spec.podTemplate: not a pod template: "));
}

/// Two replicas or more get a PodDisruptionBudget so a node drain never evicts every proxy at
/// once: one at a time by default, over exactly the StatefulSet's pods, owned by the ZmqProxy
/// (garbage-collected with it, watched by the operator), with unhealthy pods evictable so one
/// crash-looping proxy cannot block a drain.
#[test]
fn two_replicas_get_a_pod_disruption_budget_of_one() {
    let mut zp = fixture("minimal.yaml");
    zp.spec.replicas = 2;
    let c = build::children(&zp, &opts()).expect("builds");
    let pdb = c.pdb.as_ref().expect("a PDB at two replicas");
    assert_eq!(pdb.metadata.name.as_deref(), Some("tasks"));
    let owner = &pdb.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ZmqProxy", Some(true)));
    assert_eq!(
        pdb.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/managed-by")).cloned(),
        Some("zmq-proxy-operator".to_string())
    );
    let spec = pdb.spec.as_ref().expect("spec");
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_available, None);
    assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
    let selector = spec.selector.as_ref().and_then(|s| s.match_labels.clone());
    assert_eq!(selector, c.deployment.spec.as_ref().and_then(|s| s.selector.match_labels.clone()));
    // One replica: a PDB of one would block every drain of that node, so none.
    assert!(build("minimal.yaml").pdb.is_none());
}

/// The spec's bound replaces the default one (both at once is refused by the API server), and
/// `enabled: false` means no PDB at any scale.
#[test]
fn pod_disruption_budget_follows_the_spec() {
    let c = build("placement.yaml");
    let spec = c.pdb.and_then(|p| p.spec).expect("PDB");
    assert_eq!(spec.max_unavailable, Some(IntOrString::String("50%".into())));
    let mut zp = fixture("placement.yaml");
    zp.spec.pod_disruption_budget = Some(zmq_proxy_operator::crd::PodDisruptionBudgetSpec {
        min_available: Some(IntOrString::Int(1)),
        ..Default::default()
    });
    let spec = build::children(&zp, &opts()).expect("builds").pdb.and_then(|p| p.spec);
    let spec = spec.expect("PDB");
    assert_eq!((spec.min_available, spec.max_unavailable), (Some(IntOrString::Int(1)), None));
    zp.spec.pod_disruption_budget = Some(zmq_proxy_operator::crd::PodDisruptionBudgetSpec {
        enabled: false,
        ..Default::default()
    });
    assert!(build::children(&zp, &opts()).expect("builds").pdb.is_none());
    // Bypassing the CRD: both bounds, or a percentage above 100, are refused naming the field.
    zp.spec.pod_disruption_budget = Some(zmq_proxy_operator::crd::PodDisruptionBudgetSpec {
        max_unavailable: Some(IntOrString::Int(1)),
        min_available: Some(IntOrString::Int(1)),
        enabled: true,
    });
    assert!(refusal(&zp).starts_with("spec.podDisruptionBudget.minAvailable: "));
    zp.spec.pod_disruption_budget = Some(zmq_proxy_operator::crd::PodDisruptionBudgetSpec {
        max_unavailable: Some(IntOrString::String("150%".into())),
        ..Default::default()
    });
    assert!(refusal(&zp).starts_with("spec.podDisruptionBudget.maxUnavailable: "));
}

/// `spec.paused` lives in the steering ConfigMap only: every pod mounts `<name>-steering` as a
/// whole directory (the kubelet updates it in place) and reads it with `--pause-file`, and the
/// pod template is the same paused or not, so pausing and resuming restart no pod.
#[test]
fn paused_reaches_the_pods_through_the_steering_config_map_without_changing_the_pods() {
    let paused = build("paused-monitored.yaml");
    let cm = &paused.steering;
    assert_eq!(cm.metadata.name.as_deref(), Some("jobs-steering"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("batch"));
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(data, BTreeMap::from([("paused".to_string(), "true".to_string())]));
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("zmq-proxy-operator")
    );
    let owner = &cm.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ZmqProxy", Some(true)));

    let pod = pod(&paused.deployment);
    let steering = volume(pod, "steering").config_map.clone().expect("a ConfigMap volume");
    assert_eq!(steering.name, "jobs-steering");
    assert_eq!(
        steering.optional,
        Some(true),
        "optional: made at the first pause, no pause file (forwarding) until then"
    );
    assert_eq!(steering.items, None, "the whole ConfigMap: the file name is the key");
    let mount = proxy(&paused.deployment)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "steering")
        .expect("steering mount");
    assert_eq!(mount.mount_path, "/etc/zmq-proxy/steering");
    assert_eq!((mount.read_only, mount.sub_path.as_deref()), (Some(true), None), "no subPath");
    assert_eq!(
        arg_after(proxy(&paused.deployment), "--pause-file"),
        Some("/etc/zmq-proxy/steering/paused")
    );

    let mut resumed = fixture("paused-monitored.yaml");
    resumed.spec.paused = false;
    let resumed = build::children(
        &resumed,
        &BuildOptions { default_image: DEFAULT_IMAGE.to_string(), ..Default::default() },
    )
    .expect("builds");
    assert_eq!(
        resumed.steering.data.as_ref().and_then(|d| d.get("paused")).map(String::as_str),
        Some("false")
    );
    assert_eq!(resumed.deployment, paused.deployment, "pausing changes no pod");
    let minimal = build("minimal.yaml");
    let value = minimal.steering.data.as_ref().and_then(|d| d.get("paused")).cloned();
    assert_eq!(value.as_deref(), Some("false"), "unset means not paused");
}

/// The PodMonitor selects exactly the StatefulSet's pods, scrapes their `metrics` port, and
/// labels every series with what the chart's dashboard and alerts aggregate by: `zmqproxy`
/// (the object's name, from the pod label), `namespace` and `pod`.
#[test]
fn pod_monitor_scrapes_the_metrics_port_of_every_pod_with_the_dashboards_labels() {
    use zmq_proxy_operator::build::pod_monitor;
    let zp = fixture("paused-monitored.yaml");
    let pm = pod_monitor::pod_monitor(&zp).expect("builds");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["metadata"]["name"], "jobs");
    assert_eq!(pm["metadata"]["namespace"], "batch");
    assert_eq!(pm["metadata"]["ownerReferences"][0]["uid"], "0a0b0c0d-0000-0000-0000-000000000042");
    assert_eq!(pm["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(pm["metadata"]["labels"]["app.kubernetes.io/managed-by"], "zmq-proxy-operator");
    let children = build("paused-monitored.yaml");
    let selector = children.deployment.spec.as_ref().map(|s| s.selector.clone()).expect("spec");
    assert_eq!(pm["spec"]["selector"], serde_json::to_value(&selector).expect("selector"));
    let endpoints = pm["spec"]["podMetricsEndpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let port_name = proxy(&children.deployment)
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == 9300)
        .and_then(|p| p.name.clone());
    assert_eq!(endpoints[0]["port"].as_str(), port_name.as_deref(), "the pod's metrics port");
    assert_eq!(endpoints[0]["path"], "/metrics");
    let targets: Vec<(&str, &str)> = endpoints[0]["relabelings"]
        .as_array()
        .expect("relabelings")
        .iter()
        .map(|r| {
            (r["sourceLabels"][0].as_str().unwrap_or(""), r["targetLabel"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("__meta_kubernetes_pod_label_app_kubernetes_io_instance", "zmqproxy"),
            ("__meta_kubernetes_namespace", "namespace"),
            ("__meta_kubernetes_pod_name", "pod"),
        ]
    );
    // The pod label the zmqproxy label comes from is on every pod, set to the object's name.
    let template_labels =
        children.deployment.spec.as_ref().and_then(|s| s.template.metadata.clone());
    let labels = template_labels.and_then(|m| m.labels).unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("jobs"));
    // The chart's dashboard aggregates by the label this PodMonitor writes.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/zmq-proxy-operator/dashboards/zmq-proxy.json"
    ))
    .expect("dashboard");
    assert!(dashboard.contains("by (namespace, zmqproxy"), "the dashboard's label changed");

    // Wanted: the object's own setting wins over the operator's default.
    let on = BuildOptions { pod_monitor_default: true, ..Default::default() };
    let off = BuildOptions::default();
    assert!(pod_monitor::wanted(&zp, &off));
    let mut unset = zp.clone();
    unset.spec.monitoring = None;
    assert!(!pod_monitor::wanted(&unset, &off) && pod_monitor::wanted(&unset, &on));
    let mut refused = zp;
    refused.spec.monitoring =
        Some(zmq_proxy_operator::crd::Monitoring { pod_monitor: Some(false) });
    assert!(!pod_monitor::wanted(&refused, &on));
}

// Connecting sockets: `fixtures/connecting.yaml` has each form of connect entry once.

/// Each entry reaches the proxy as the flag of its mode: a selector as every address of the
/// headless Service the operator keeps for it, a Service by its cluster DNS name, an endpoint as
/// written; a socket that only connects has no bind flag and no port on the Services.
#[test]
fn connect_entries_become_connect_flags_and_a_socket_that_only_connects_binds_nothing() {
    let c = build("connecting.yaml");
    let args = proxy(&c.deployment).args.clone().unwrap_or_default();
    let pairs: Vec<(String, String)> =
        args.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect();
    let has = |flag: &str, value: &str| pairs.contains(&(flag.to_string(), value.to_string()));
    assert!(has("--backend-connect-all", "tcp://jobs-backend-0.work.svc:6000"), "{args:?}");
    assert!(has("--backend-connect-all", "tcp://legacy-workers.work.svc:6001"), "{args:?}");
    assert!(has("--backend-connect", "tcp://10.1.2.3:7000"), "{args:?}");
    assert!(has("--capture-connect-all", "tcp://audit.work.svc:7100"), "{args:?}");
    assert!(has("--frontend-bind", "tcp://*:5555"), "{args:?}");
    assert!(!args.iter().any(|a| a == "--backend-bind" || a == "--capture-bind"), "{args:?}");
    assert_eq!(arg_after(proxy(&c.deployment), "--capture-type"), Some("PUB"));
    let names: Vec<String> = ports(&c.service).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["frontend"]);
    let endpoints = build::endpoints(&fixture("connecting.yaml")).expect("endpoints");
    assert_eq!(endpoints.backend, None);
    assert_eq!(endpoints.frontend.as_deref(), Some("tcp://jobs.work.svc:5555"));
}

/// A selector entry gets a headless Service of ready pods with exactly that selector, owned and
/// labelled like every child, named `<name>-<socket>-<index>`; the other entries get none.
#[test]
fn a_selector_entry_gets_an_owned_headless_service_of_ready_pods() {
    let c = build("connecting.yaml");
    assert_eq!(c.connect_services.len(), 1);
    let svc = &c.connect_services[0];
    assert_eq!(svc.metadata.name.as_deref(), Some("jobs-backend-0"));
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(false));
    let selector: BTreeMap<String, String> =
        [("app", "worker"), ("tier", "batch")].map(|(k, v)| (k.into(), v.into())).into();
    assert_eq!(spec.selector.as_ref(), Some(&selector));
    assert_eq!(ports(svc), [("backend".to_string(), 6000, Some(IntOrString::Int(6000)))]);
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(build::CONNECT_LABEL).map(String::as_str), Some("backend-0"));
    assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("jobs"));
    let owner = svc.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| (o.kind.as_str(), o.controller)),
        Some(("ZmqProxy", Some(true)))
    );
    let names = build::connect_service_names(&fixture("connecting.yaml"), "work");
    assert_eq!(names.into_keys().collect::<Vec<_>>(), ["jobs-backend-0"]);
}

/// A connecting CURVE socket's keys: the server's public key from a Secret (mounted, passed as
/// a file) or inline (passed as written, it is public), the client's secret key from a Secret,
/// mounted read-only and group-readable like the servers' keys, never in the arguments.
#[test]
fn connecting_curve_sockets_mount_the_server_public_key_and_the_client_key() {
    let c = build("connecting.yaml");
    let pod = pod(&c.deployment);
    let public = volume(pod, "curve-backend-server-public-key");
    let secret = public.secret.as_ref().expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("workers-curve"));
    let items = secret.items.clone().unwrap_or_default();
    assert_eq!(
        items.first().map(|i| (i.key.as_str(), i.path.as_str())),
        Some(("server", "server_public"))
    );
    let client = volume(pod, "curve-backend-client-key");
    let secret = client.secret.as_ref().expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("jobs-client"));
    assert_eq!(secret.default_mode, Some(build::KEY_FILE_MODE));
    let items = secret.items.clone().unwrap_or_default();
    assert_eq!(items.first().map(|i| i.key.as_str()), Some("client_secret"));
    let container = proxy(&c.deployment);
    assert_eq!(
        arg_after(container, "--backend-curve-server-public-key-file"),
        Some("/etc/zmq-proxy/curve/backend/server-public-key/server_public")
    );
    assert_eq!(
        arg_after(container, "--backend-curve-client-key-file"),
        Some("/etc/zmq-proxy/curve/backend/client-key/client_secret")
    );
    assert_eq!(
        arg_after(container, "--capture-curve-server-public-key"),
        Some("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    );
    assert_eq!(arg_after(container, "--capture-curve-client-key-file"), None, "ephemeral");
    let mounts = mount_paths(container);
    assert!(mounts.contains(&"/etc/zmq-proxy/curve/backend/client-key".to_string()), "{mounts:?}");
    assert!(!pod.volumes.iter().flatten().any(|v| v.name.contains("server-key")), "no server");
}
