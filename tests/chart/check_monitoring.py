"""Checks the chart's Grafana dashboard and PrometheusRule as rendered by `helm template`.

Run by .ci/chart-check.sh with the PyPI parser promql-parser (py-promql-parser); promtool (the
real Prometheus parser, Debian package `prometheus`) then checks the files this writes:

    python check_monitoring.py RENDER.yaml OUTDIR

- the dashboard ConfigMap is there, carries the grafana_dashboard label, and its JSON parses;
  panels have unique ids, fit the 24-column grid, read the ${datasource} variable; every panel
  and variable query parses as PromQL (Grafana's $__rate_interval and $variables replaced) and
  names only metrics of PROXY_METRICS / OPERATOR_METRICS and labels they or the scrape have; every
  legend shows only labels the query keeps; the panels cover what the chart promises
  (REQUIRED_IN_DASHBOARD);
- every alert of the PrometheusRule has severity, summary, description and runbook, and its
  expression names only those metrics plus the kube-state-metrics ones of KSM_METRICS;
- every metric listed here exists in the source that exports it (proxy/src/ops/metrics.rs,
  operator/src/metrics.rs), so a renamed metric fails here instead of leaving a blank panel;
- OUTDIR/rules.yaml is the PrometheusRule's spec and OUTDIR/dashboard-rules.yaml the dashboard's
  queries as recording rules, both for `promtool check rules`; OUTDIR/rules-bare.yaml is the spec
  without annotations, for the unit tests of prometheusrule-tests.yaml (`promtool test rules`).
Prints each problem and exits 1 if there was one.
"""
import json
import pathlib
import re
import sys

import promql_parser as pp
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What a release build of the proxy serves on /metrics (zmq-proxy --http-bind, scraped with
# traffic, a drop and a refused handshake; see proxy/src/ops/metrics.rs), with each metric's labels.
PROXY_METRICS = {
    "zmq_proxy_received_messages_total": {"socket"},
    "zmq_proxy_received_frames_total": {"socket"},
    "zmq_proxy_received_bytes_total": {"socket"},
    "zmq_proxy_sent_messages_total": {"socket"},
    "zmq_proxy_sent_frames_total": {"socket"},
    "zmq_proxy_sent_bytes_total": {"socket"},
    "zmq_proxy_dropped_frames_total": {"reason"},
    "zmq_proxy_undelivered_frames_total": set(),
    "zmq_proxy_handshake_failures_total": {"socket", "mechanism", "reason"},
    "zmq_proxy_protocol_errors_total": set(),
    "zmq_proxy_closed_before_greeting_total": {"socket"},
    "zmq_proxy_heartbeat_timeouts_total": {"socket", "reason"},
    "zmq_proxy_connected_peers": {"socket"},
    "zmq_proxy_queued_frames": {"socket"},
    "zmq_proxy_paused": set(),
    "zmq_proxy_draining": set(),
    "zmq_proxy_ready": set(),
    "zmq_proxy_build_info": {"version"},
}
# The operator's /metrics (operator/src/metrics.rs, registry prefix zmq_proxy_operator).
OPERATOR_METRICS = {
    "zmq_proxy_operator_reconciles_total": set(),
    "zmq_proxy_operator_reconcile_errors_total": {"error"},
    "zmq_proxy_operator_reconcile_duration_seconds_bucket": {"le"},
    "zmq_proxy_operator_reconcile_duration_seconds_sum": set(),
    "zmq_proxy_operator_reconcile_duration_seconds_count": set(),
    "zmq_proxy_operator_child_writes_total": {"kind", "action"},
    "zmq_proxy_operator_api_requests_total": {"kind", "verb"},
    "zmq_proxy_operator_leader": set(),
}
# kube-state-metrics, read by ZmqProxyNotReady only (never by the dashboard).
KSM_METRICS = {
    "kube_deployment_spec_replicas": {"deployment"},
    "kube_deployment_status_replicas_ready": {"deployment"},
    "kube_statefulset_replicas": {"statefulset"},
    "kube_statefulset_status_replicas_ready": {"statefulset"},
    "kube_deployment_labels": {"deployment", "label_app_kubernetes_io_managed_by"},
}
# Labels the scrape adds (namespace, pod; zmqproxy relabelled from app.kubernetes.io/instance).
SCRAPE_LABELS = {"namespace", "pod", "zmqproxy"}
# What each part of the dashboard must show, as the metric it needs.
REQUIRED_IN_DASHBOARD = {
    "throughput per socket and direction": ["zmq_proxy_received_messages_total", "zmq_proxy_sent_messages_total"],
    "drops by reason": ["zmq_proxy_dropped_frames_total"],
    "queue depth": ["zmq_proxy_queued_frames"],
    "connected peers": ["zmq_proxy_connected_peers"],
    "handshake failures": ["zmq_proxy_handshake_failures_total"],
    "drain state": ["zmq_proxy_draining"],
    "reconcile rate": ["zmq_proxy_operator_reconciles_total"],
    "reconcile errors": ["zmq_proxy_operator_reconcile_errors_total"],
    "reconcile latency": ["zmq_proxy_operator_reconcile_duration_seconds_bucket"],
}
ALERT_ANNOTATIONS = ("summary", "description", "runbook")

errors = []


def err(msg):
    errors.append(msg)


def source_has(name):
    """The metric's registered name appears as a string literal in its exporter's source."""
    if name.startswith("zmq_proxy_operator_"):
        base = name[len("zmq_proxy_operator_"):]
        src = ROOT / "operator/src/metrics.rs"
    else:
        base = name
        src = ROOT / "proxy/src/ops/metrics.rs"
    base = re.sub(r"_(total|bucket|sum|count)$", "", base)
    return f'"{base}"' in src.read_text()


def grafana_to_promql(expr):
    """Grafana's interval macros become a duration, $var / ${var} a regex matching anything."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def inspect(expr, allowed, where):
    """Parses expr; returns its metric names, reporting unknown metrics and labels."""
    try:
        ast = pp.parse(expr)
    except Exception as e:  # noqa: BLE001 - the parser raises ValueError with the reason
        err(f"{where}: does not parse as PromQL: {e}: {expr}")
        return set()
    names, labels = set(), set()

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            if not node.name:
                err(f"{where}: a selector without a metric name: {expr}")
            else:
                names.add(node.name)
            labels.update(m.name for m in node.matchers.matchers)
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            m = node.modifier
            if m.matching is not None:
                labels.update(m.matching.labels)
            labels.update(getattr(m, "group_labels", None) or [])

    pp.walk(ast, visit)
    known_labels = set(SCRAPE_LABELS)
    for name in sorted(names):
        if name not in allowed:
            err(f"{where}: unknown metric {name} (not in the chart check's list of exported metrics)")
        else:
            known_labels |= allowed[name]
    for label in sorted(labels - known_labels):
        err(f"{where}: label {label} is not a label of {sorted(names)} nor of the scrape")
    return names


def by_labels(expr):
    """Labels of the expression's outermost `sum by (...)`-style aggregation: what a legend can show."""
    node = pp.parse(expr)
    while isinstance(node, (pp.ParenExpr, pp.Call, pp.BinaryExpr)):
        if isinstance(node, pp.ParenExpr):
            node = node.expr
        elif isinstance(node, pp.Call):
            # histogram_quantile(q, sum by (...) (...)): the vector argument.
            node = next((a for a in node.args if not isinstance(a, (pp.NumberLiteral, pp.StringLiteral))), None)
        else:
            node = node.lhs
    if isinstance(node, pp.AggregateExpr) and node.modifier is not None and node.modifier.type == pp.AggModifierType.By:
        return set(node.modifier.labels)
    return None  # not an aggregation: every label of the series is there


def check_dashboard(docs, out):
    allowed = {**PROXY_METRICS, **OPERATOR_METRICS}
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})]
    if len(cms) != 1:
        err(f"expected one ConfigMap labelled grafana_dashboard, found {len(cms)}")
        return
    cm = cms[0]
    if len(cm.get("data", {})) != 1 or not next(iter(cm["data"])).endswith(".json"):
        err(f"ConfigMap {cm['metadata']['name']}: expected one *.json key, has {sorted(cm.get('data', {}))}")
        return
    key, text = next(iter(cm["data"].items()))
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        err(f"{key}: not JSON: {e}")
        return
    for field in ("uid", "title", "schemaVersion", "panels", "templating"):
        if field not in dash:
            err(f"{key}: no {field}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        err(f"{key}: no datasource variable")
    used, ids, records = set(), set(), []

    def add(expr, where):
        promql = grafana_to_promql(expr)
        for var in set(re.findall(r"\$\{?(\w+)\}?", expr)) - {"__rate_interval", "__interval", "__range"}:
            if var not in variables:
                err(f"{where}: uses ${var}, which is not a dashboard variable")
        used.update(inspect(promql, allowed, where))
        records.append({"record": f"dashboard:query:{len(records)}", "expr": promql})

    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        if not m:
            err(f"variable {name}: not a label_values(selector, label) query: {q}")
            continue
        add(m.group(1), f"variable {name}")
        label = m.group(2)
        if label not in SCRAPE_LABELS and not any(label in ls for ls in allowed.values()):
            err(f"variable {name}: label {label} is not exported")
    for panel in dash.get("panels", []):
        pid = panel.get("id")
        where = f"panel {pid} {panel.get('title')!r}"
        if pid in ids:
            err(f"{where}: duplicate id")
        ids.add(pid)
        g = panel.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            err(f"{where}: gridPos {g} is not within the 24 columns")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            err(f"{where}: does not read the ${{datasource}} variable")
        targets = panel.get("targets", [])
        if not targets:
            err(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            err(f"{where}: duplicate refIds {refs}")
        for t in targets:
            if not t.get("expr", "").strip():
                err(f"{where} {t.get('refId')}: empty expr")
                continue
            add(t["expr"], f"{where} {t.get('refId')}")
            try:
                shown = by_labels(grafana_to_promql(t["expr"]))
            except Exception:  # noqa: BLE001 - add() reported it
                continue
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            if shown is not None and legend - shown:
                err(f"{where} {t.get('refId')}: legend shows {sorted(legend - shown)}, which the query aggregates away")
    for part, metrics in REQUIRED_IN_DASHBOARD.items():
        if not set(metrics) <= used:
            err(f"{key}: no panel shows {part} ({', '.join(sorted(set(metrics) - used))})")
    if not any("histogram_quantile" in r["expr"] for r in records):
        err(f"{key}: no histogram_quantile for the reconcile latency")
    (out / "dashboard-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": records}]}, sort_keys=False))
    print(f"dashboard: {len(ids)} panels, {len(records)} queries, metrics {sorted(used)}")


def check_rules(docs, out):
    allowed = {**PROXY_METRICS, **OPERATOR_METRICS, **KSM_METRICS}
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        err(f"expected one PrometheusRule, found {len(rules)}")
        return
    pr = rules[0]
    if pr.get("apiVersion") != "monitoring.coreos.com/v1":
        err(f"PrometheusRule apiVersion is {pr.get('apiVersion')}")
    alerts = []
    for group in pr["spec"]["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if not name:
                err(f"group {group['name']}: a rule that is not an alert: {rule}")
                continue
            alerts.append(name)
            where = f"alert {name}"
            if not rule.get("labels", {}).get("severity"):
                err(f"{where}: no severity label")
            for a in ALERT_ANNOTATIONS:
                if not str(rule.get("annotations", {}).get(a, "")).strip():
                    err(f"{where}: no {a} annotation")
            runbook = rule.get("annotations", {}).get("runbook", "")
            if "kubectl" not in runbook:
                err(f"{where}: the runbook names no kubectl command to run")
            inspect(rule["expr"], allowed, where)
    (out / "rules.yaml").write_text(yaml.safe_dump(pr["spec"], sort_keys=False))
    bare = {"groups": [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
                       for g in pr["spec"]["groups"]]}
    (out / "rules-bare.yaml").write_text(yaml.safe_dump(bare, sort_keys=False))
    print(f"PrometheusRule: alerts {alerts}")


def main():
    render, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    docs = [d for d in yaml.safe_load_all(render.read_text()) if d]
    for name in sorted({**PROXY_METRICS, **OPERATOR_METRICS}):
        if not source_has(name):
            err(f"{name} is listed here but not registered in the source that exports it")
    check_dashboard(docs, out)
    check_rules(docs, out)
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
