"""The chart's renders: helm lint, the official Kubernetes schemas, a hardened pod in every
configuration, RBAC that grants exactly what the operator calls, the operator's flags, and what
each values file of ci/ must produce beyond being valid."""

import warnings

import pytest

from chartlib import (
    CASES,
    CHART,
    CI_VALUES,
    PENDING_OPERATOR_FLAGS,
    RELEASE_NAMESPACE,
    Expect,
    container_of,
    deployment_of,
    load_docs,
    objects,
    operator_flags,
    rules_of,
    run,
    validate_rendered,
)

# Exactly what the operator calls (see the comment on the rules in templates/_helpers.tpl):
# a verb more is a privilege it does not need, a verb less is a reconcile that fails.
EXPECTED_GRANTS = {
    ("zmqproxy.io", "zmqproxies", v) for v in ("get", "list", "watch")
} | {
    ("zmqproxy.io", "zmqproxies/status", "patch"),
    ("zmqproxy.io", "zmqproxies/finalizers", "update"),
} | {
    ("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch")
} | {
    ("apps", "statefulsets", v) for v in ("get", "list", "watch", "delete")
} | {
    ("", "secrets", v) for v in ("get", "create")
} | {
    ("", "pods", v) for v in ("get", "list", "watch")
} | {
    ("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")
} | {
    ("policy", "poddisruptionbudgets", v) for v in ("get", "list", "watch", "create", "patch", "delete")
} | {
    ("", "configmaps", v) for v in ("get", "list", "watch", "create", "patch")
} | {
    ("", "pods", v) for v in ("list", "patch")
} | {
    ("monitoring.coreos.com", "podmonitors", v) for v in ("get", "create", "patch", "delete")
} | {
    (g, "events", v) for g in ("events.k8s.io", "") for v in ("create", "patch")
} | {
    ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
}
# The sidecar webhook with the operator's own CA (sidecar-webhook-values.yaml) adds these, each
# narrowed by resourceNames where RBAC can narrow it: its CA Secret (made once, then read and
# renewed) and the caBundle of its own MutatingWebhookConfiguration.
WEBHOOK_GRANTS = {
    ("", "secrets", v) for v in ("create", "get", "update")
} | {
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", v) for v in ("get", "update")
}
WEBHOOK_CASES = {"sidecar-webhook"}
# Cases whose values turn RBAC off: no rules to compare.
NO_RBAC = {"no-rbac"}
# The operator mounts CURVE keys (Secrets) and allow-lists (Secrets, ConfigMaps) into proxy pods
# and never reads them. On Secrets it creates each federation's key and then reads that one's
# metadata by name: get and create, never list or watch (it cannot enumerate Secrets).
SECRET_VERBS = {"get", "create"}
# On ConfigMaps only what the steering ConfigMaps it writes need (spec.paused: get, apply, and the label-filtered watch of its own); RBAC cannot narrow that to
# those names or that label.
STEERING_VERBS = {"get", "list", "watch", "create", "patch"}


def lint_args(case):
    return [] if case == "default" else ["-f", CI_VALUES[case]]


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_strict(helm, case):
    out = run(helm, "lint", "--strict", CHART, *lint_args(case))
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("case", CASES)
def test_render_is_valid_for_every_kubernetes_version(render_case, case):
    docs = load_docs(render_case(case))
    assert docs, "rendered nothing"
    errors = validate_rendered(docs)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("case", CASES)
def test_render_keeps_the_operator_pod_hardened_and_probed(render_case, case):
    """Hardened by default in every case: the values files never weaken it."""
    objs = objects(render_case(case))
    c = container_of(objs)
    args = c.get("args", [])
    pod = deployment_of(objs)["spec"]["template"]["spec"]
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    expect = Expect(f"{case}: ")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
    expect(psc.get("runAsNonRoot") is True, "pod must run as non-root")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp must be RuntimeDefault")
    expect(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe on /healthz")
    expect(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe on /readyz")
    expect(any(a.startswith("--proxy-image=") for a in args), "--proxy-image is passed")
    expect(any(a.startswith("--http-bind=*:") for a in args), "--http-bind is passed (dual stack: *)")
    expect.check()


@pytest.mark.parametrize("case", [c for c in CASES if c not in NO_RBAC])
def test_rbac_grants_exactly_what_the_operator_calls(render_case, case):
    objs = objects(render_case(case))
    all_rules = rules_of(objs)
    expect = Expect(f"{case}: ")
    expected = EXPECTED_GRANTS | (WEBHOOK_GRANTS if case in WEBHOOK_CASES else set())
    for r in all_rules:
        expect("*" not in r["resources"] + r["apiGroups"] + r["verbs"], f"rule {r} uses a wildcard")
        webhook = {(g, res, v) for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]} <= WEBHOOK_GRANTS
        expect(not r.get("resourceNames") or webhook, f"rule {r} names objects it has no need to")
    granted = {(g, res, v) for r in all_rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    for extra in sorted(granted - expected):
        expect.fail(f"RBAC grants {extra}, which the operator does not call")
    for lack in sorted(expected - granted):
        expect.fail(f"RBAC lacks {lack}, which the operator calls")
    lease_roles = [d for (k, _), d in objs.items() if k in {"Role", "ClusterRole"}
                   and any("leases" in r["resources"] for r in d["rules"])]
    expect(len(lease_roles) == 1 and lease_roles[0]["kind"] == "Role"
           and lease_roles[0]["metadata"]["namespace"] == RELEASE_NAMESPACE,
           "Lease rules must be one Role in the release namespace")
    expect.check()


def test_rbac_grants_only_get_and_create_on_secrets_and_only_steering_verbs_on_configmaps(render):
    bad, roles = [], 0
    for path in (render(), render("--set", "watchNamespace=apps")):
        for doc in load_docs(path):
            if doc.get("kind") not in ("Role", "ClusterRole"):
                continue
            roles += 1
            for rule in doc.get("rules", []):
                resources = set(rule.get("resources", []))
                verbs = set(rule.get("verbs", []))
                steering = resources == {"configmaps"} and verbs <= STEERING_VERBS
                keys = resources == {"secrets"} and verbs <= SECRET_VERBS
                if ("*" in resources or ("secrets" in resources and not keys)
                        or ("configmaps" in resources and not steering)):
                    bad.append(f"{doc['kind']} {doc['metadata']['name']}: {rule}")
    assert not bad, "\n".join(bad)
    assert roles >= 2, f"{roles} roles rendered, expected the cluster-wide and the namespaced ones"


def test_every_flag_the_chart_renders_is_declared_by_the_operator(render_case):
    """A flag the operator does not declare makes it exit 2 at start."""
    declared = operator_flags()
    assert declared, "no #[arg(long ...)] flags found in operator/src/main.rs"
    expect = Expect()
    for case in CASES:
        for doc in load_docs(render_case(case)):
            if doc.get("kind") != "Deployment":
                continue
            for arg in container_of({("Deployment", "x"): doc}).get("args", []):
                flag = arg.split("=", 1)[0]
                if flag in declared:
                    continue
                if flag in PENDING_OPERATOR_FLAGS:
                    warnings.warn(f"pending: {flag} is rendered only when its value is set, "
                                  "and the operator does not declare it yet")
                    continue
                expect.fail(f"{case}: {flag} is not a flag of the operator ({sorted(declared)})")
    for flag in sorted(PENDING_OPERATOR_FLAGS & declared):
        expect.fail(f"{flag} is declared by the operator now: remove it from PENDING_OPERATOR_FLAGS")
    expect.check()


def test_every_ci_values_file_has_its_expectations():
    """Each values file of ci/ is there for something one of the checks below asserts."""
    checked = {"dashboard-alerts", "monitoring-ha", "no-rbac", "sidecar-webhook", "watch-namespace"}
    assert set(CI_VALUES) == checked, f"ci/ values files {sorted(CI_VALUES)}, checked {sorted(checked)}"


def test_default_values_watch_every_namespace_with_one_replica_and_no_pod_monitor(render_case):
    objs = objects(render_case("default"))
    kinds = sorted({k for k, _ in objs})
    c = container_of(objs)
    args = c.get("args", [])
    expect = Expect("default: ")
    expect(kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                     "Service", "ServiceAccount"], f"default objects are {kinds}")
    expect(not any(a.startswith("--watch-namespace") for a in args), "default watches every namespace")
    expect("--proxy-image=ghcr.io/zmq-proxy-operator/zmq-proxy:0.1.0" in args,
           f"proxy image defaults to the appVersion tag: {args}")
    expect(deployment_of(objs)["spec"]["replicas"] == 1, "one replica by default")
    expect("--pod-monitor-default=false" in args,
           f"no PodMonitor unless a ZmqProxy asks (proxyMonitoring.podMonitorDefault): {args}")
    expect("--lease-name=zmq-proxy-operator" in args, f"the Lease is named after the release: {args}")
    expect(c.get("resources", {}).get("limits", {}).get("memory"), "memory limit by default")
    expect.check()


def test_watch_namespace_values_grant_a_role_in_that_namespace_only(render_case):
    objs = objects(render_case("watch-namespace"))
    kinds = sorted({k for k, _ in objs})
    args = container_of(objs).get("args", [])
    expect = Expect("watch-namespace: ")
    expect("ClusterRole" not in kinds, "a watched namespace needs no ClusterRole")
    roles = [d for (k, _), d in objs.items() if k == "Role" and d["metadata"]["namespace"] == "zmq-apps"]
    expect(len(roles) == 1, "a Role in the watched namespace")
    expect("--watch-namespace=zmq-apps" in args, f"--watch-namespace flag: {args}")
    binding = [d for (k, _), d in objs.items() if k == "RoleBinding" and d["metadata"]["namespace"] == "zmq-apps"]
    expect(binding and binding[0]["subjects"][0]["namespace"] == RELEASE_NAMESPACE,
           "the binding in the watched namespace names the operator's ServiceAccount in the release namespace")
    expect.check()


def test_monitoring_ha_values_render_service_monitor_pdb_replicas_and_digests(render_case):
    objs = objects(render_case("monitoring-ha"))
    kinds = sorted({k for k, _ in objs})
    c = container_of(objs)
    args = c.get("args", [])
    expect = Expect("monitoring-ha: ")
    expect("ServiceMonitor" in kinds, "ServiceMonitor rendered")
    expect("PodDisruptionBudget" in kinds, "PodDisruptionBudget rendered")
    expect(deployment_of(objs)["spec"]["replicas"] == 2, "two replicas")
    expect(any(a.startswith("--proxy-image=registry.test/zmq/proxy@sha256:") for a in args),
           f"digest pins the proxy image: {args}")
    expect(c["image"].startswith("registry.test/zmq/operator@sha256:"), "digest pins the operator image")
    expect("--proxy-image-pull-policy=Always" in args, "proxy pull policy flag")
    expect("--log-format=text" in args, "log format flag")
    expect(args[-1] == "--leader-election=true", f"extra args come last: {args}")
    expect("--lease-name=zmq-operator-leader" in args, f"leaderElection.leaseName: {args}")
    expect.check()


def test_dashboard_alerts_values_place_label_and_tune_the_dashboard_and_alerts(render_case):
    objs = objects(render_case("dashboard-alerts"))
    kinds = sorted({k for k, _ in objs})
    expect = Expect("dashboard-alerts: ")
    dash = [d for (k, _), d in objs.items() if k == "ConfigMap"]
    rule = [d for (k, _), d in objs.items() if k == "PrometheusRule"]
    assert len(dash) == 1 and len(rule) == 1, f"one dashboard ConfigMap and one PrometheusRule: {kinds}"
    dash, rule = dash[0], rule[0]
    expect(dash["metadata"]["namespace"] == "monitoring", "dashboard.namespace")
    expect(dash["metadata"]["labels"].get("grafana_dashboard") == "1"
           and dash["metadata"]["labels"].get("grafana_folder_label") == "zeromq", "dashboard.labels")
    expect(dash["metadata"].get("annotations") == {"grafana_folder": "ZeroMQ"}, "dashboard.annotations")
    expect(rule["metadata"]["namespace"] == "monitoring", "prometheusRule.namespace")
    expect(rule["metadata"]["labels"].get("release") == "prometheus", "prometheusRule.labels")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    expect("ZmqProxyNoPeersOnOneSide" not in names and "ZmqProxyDropsRising" in names,
           f"alerts.noPeers.enabled false leaves only that alert out: {sorted(names)}")
    for r in alerts:
        expect(r["labels"].get("team") == "messaging", f"{r['alert']}: alertLabels")
        expect(r["annotations"].get("runbook_url", "").startswith(
            "https://git.example.test/zmq-proxy-operator/blob/main/docs/runbooks.md#zmqproxy"),
            f"{r['alert']}: runbook_url under runbookBaseUrl")
    drops = next((r for r in alerts if r["alert"] == "ZmqProxyDropsRising"), {})
    expect(drops.get("expr", "").rstrip().endswith("> 0.5") and drops.get("for") == "2m"
           and drops.get("labels", {}).get("severity") == "critical",
           f"alerts.dropsRising threshold/for/severity: {drops}")
    expect.check()


def test_no_rbac_values_render_no_rbac_service_account_or_service(render_case):
    objs = objects(render_case("no-rbac"))
    kinds = sorted({k for k, _ in objs})
    pod = deployment_of(objs)["spec"]["template"]["spec"]
    expect = Expect("no-rbac: ")
    expect(not ({"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding", "ServiceAccount", "Service"} & set(kinds)),
           f"rbac.create/serviceAccount.create/metrics.service false render none of those: {kinds}")
    expect(not rules_of(objs), "no RBAC rules rendered")
    expect(pod["serviceAccountName"] == "existing-operator-sa", "existing ServiceAccount used")
    expect.check()


def test_sidecar_webhook_values_register_the_webhook_for_labelled_pods_only(render_case):
    """Only pods that ask reach the webhook, so failurePolicy Fail never holds back another pod
    (nor the operator's own, in the release namespace); the flags name the objects it manages."""
    objs = objects(render_case("sidecar-webhook"))
    args = container_of(objs).get("args", [])
    expect = Expect("sidecar-webhook: ")
    configs = [d for (k, _), d in objs.items() if k == "MutatingWebhookConfiguration"]
    assert len(configs) == 1, f"one MutatingWebhookConfiguration: {sorted(objs)}"
    hook = configs[0]["webhooks"][0]
    expect(hook["objectSelector"] == {"matchExpressions": [
        {"key": "zmqproxy.io/sidecar", "operator": "Exists"}]}, f"objectSelector: {hook}")
    excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    expect(RELEASE_NAMESPACE in excluded and "kube-system" in excluded, f"namespaceSelector: {excluded}")
    expect(hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None", f"{hook}")
    expect(hook["rules"][0]["operations"] == ["CREATE"], "pods are mutated at creation only")
    service = hook["clientConfig"]["service"]
    expect(("Service", service["name"]) in objs, f"the webhook Service {service['name']} is rendered")
    name = configs[0]["metadata"]["name"]
    expect(f"--webhook-configuration={name}" in args, f"the operator writes this caBundle: {args}")
    expect(f"--webhook-service={service['name']}" in args, f"{args}")
    expect("--webhook-bind=*:9443" in args, f"{args}")
    ports = {p["name"] for p in container_of(objs).get("ports", [])}
    expect("webhook" in ports, f"container ports {ports}")
    expect.check()


def test_sidecar_webhook_with_cert_manager_mounts_its_certificate(render):
    objs = objects(render("--set", "sidecarWebhook.enabled=true",
                          "--set", "sidecarWebhook.certManager.enabled=true"))
    kinds = {k for k, _ in objs}
    config = next(d for (k, _), d in objs.items() if k == "MutatingWebhookConfiguration")
    c = container_of(objs)
    expect = Expect("cert-manager: ")
    expect({"Certificate", "Issuer"} <= kinds, f"Certificate and Issuer rendered: {sorted(kinds)}")
    expect("cert-manager.io/inject-ca-from" in config["metadata"].get("annotations", {}),
           "cert-manager's CA injector writes the caBundle")
    expect("--webhook-cert-dir=/etc/zmq-proxy-operator/webhook" in c.get("args", []), f"{c.get('args')}")
    expect(any(m["mountPath"] == "/etc/zmq-proxy-operator/webhook" for m in c.get("volumeMounts", [])),
           "the Certificate's Secret is mounted")
    expect(not any("mutatingwebhookconfigurations" in r["resources"] for r in rules_of(objs)),
           "no caBundle writes of its own with cert-manager")
    expect.check()


def test_sidecar_webhook_rbac_names_its_secret_and_configuration(render_case):
    """The webhook's own rules touch the CA Secret and its configuration by name (create, which
    cannot name its object, aside)."""
    objs = objects(render_case("sidecar-webhook"))
    own = [r for (k, name), d in objs.items() if k in {"Role", "ClusterRole"} and name.endswith("-webhook")
           for r in d["rules"]]
    expect = Expect("sidecar-webhook: ")
    expect(len(own) == 3, f"three rules of the webhook's own: {own}")
    for r in own:
        expect(r.get("resourceNames") or r["verbs"] == ["create"], f"webhook rule {r} must name its object")
    expect.check()
