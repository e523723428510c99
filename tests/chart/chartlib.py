"""What the chart checks share: the repository's paths, the Kubernetes versions renders are
validated against, and the schema-driven helpers (the Kubernetes definitions the chart's
values.schema.json embeds, the validation of rendered objects, the CRD's schema and CEL rules as
the API server applies them, the operator's declared flags).

    python chartlib.py update-schema-defs charts/zmq-proxy-operator/values.schema.json

regenerates the Kubernetes definitions embedded in values.schema.json from the pinned
kubernetes-validate (.ci/chart-check.sh --update-schema-defs runs it).
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import shutil
import subprocess
import sys
from importlib import resources

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "zmq-proxy-operator"
VALUES_SCHEMA = CHART / "values.schema.json"
CRD_SOURCE = ROOT / "crds" / "zmqproxy.yaml"
CRD_COPY = CHART / "crds" / "zmqproxy.yaml"
OPERATOR_MAIN = ROOT / "operator" / "src" / "main.rs"
# Args structs main.rs flattens into its own (`#[command(flatten)]`): the sidecar webhook's flags.
OPERATOR_FLATTENED_ARGS = (ROOT / "operator" / "src" / "sidecar" / "run.rs",)
RELEASE_NAMESPACE = "zmq-system"
# Kubernetes versions the rendered objects are validated against: the chart's minimum
# (kubeVersion in Chart.yaml) and the one the e2e suite's kind node runs. Renders use the last.
KUBE_VERSIONS = ("1.29.0", "1.32.0")
# Values files of non-default configurations: ci/<case>-values.yaml, plus "default" (no file).
CI_VALUES = {p.name[: -len("-values.yaml")]: p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
CASES = ["default", *CI_VALUES]
# Flags the chart renders (only when their value is set) that the operator does not declare yet;
# the flags check warns about them instead of failing. Empty once the operator has them.
PENDING_OPERATOR_FLAGS: set[str] = set()
KV_VERSION_DIR = "v1.32.0-local-strict"


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def run(*cmd, **kwargs):
    """Runs cmd from the repository's root; stdout and stderr together in .stdout."""
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def which(name):
    """The path of a tool .ci/chart-check.sh installs, or an AssertionError saying it is missing."""
    path = shutil.which(name)
    assert path, f"{name} is not on PATH: run the chart checks through .ci/chart-check.sh, which installs it"
    return path


class Expect:
    """Collects every unmet expectation of a check, so one run reports them all; check() fails
    with the list."""

    def __init__(self, prefix=""):
        self.prefix = prefix
        self.errors = []

    def __call__(self, cond, msg):
        if not cond:
            self.errors.append(msg)

    def fail(self, msg):
        self.errors.append(msg)

    def check(self):
        assert not self.errors, "\n".join(f"{self.prefix}{e}" for e in self.errors)


# ---- the Kubernetes definitions embedded in values.schema.json -------------------------------

QUANTITY = {
    # The official definition is oneOf string|number (both nullable), which refuses null and
    # accepts any string; a Quantity's grammar is narrower, so typos like "64MB" fail here.
    "type": ["string", "number"],
    "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$",
}


def k8s_defs():
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / KV_VERSION_DIR
    return json.loads((base / "_definitions.json").read_text())["$defs"]


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


def expected_definitions(schema):
    own, k8s = wanted_defs(schema)
    expected = dict(own)
    expected.update(k8s)
    return expected, len(k8s)


def update_schema_defs(path):
    path = pathlib.Path(path)
    schema = json.loads(path.read_text())
    schema["definitions"], count = expected_definitions(schema)
    path.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {count} Kubernetes definitions into {path}")


# ---- rendered objects ------------------------------------------------------------------------


def validate_rendered(docs, versions=KUBE_VERSIONS):
    """Problems of rendered objects: the official schemas of each Kubernetes version (strict),
    and what would break scraping or alerting for the prometheus-operator kinds."""
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "PrometheusRule":
            errors += prometheus_rule_problems(doc)
            continue
        if doc.get("apiVersion") == "monitoring.coreos.com/v1":
            errors += service_monitor_problems(doc, docs)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.ValidationError as e:
                errors.append(f"{name} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                errors.append(f"{name}: {e.message}")
    return errors


def metadata_problems(doc):
    try:
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, "1.32.0", strict=True)
    except Exception as e:  # noqa: BLE001 - report any metadata problem
        return [f"metadata: {getattr(e, 'message', e)}"]
    return []


def service_monitor_problems(sm, docs):
    """No official schema ships for prometheus-operator kinds: check what would break scraping."""
    errors = []
    if sm.get("kind") != "ServiceMonitor":
        errors.append("kind is not ServiceMonitor")
    errors += metadata_problems(sm)
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
    return [f"ServiceMonitor/{sm.get('metadata', {}).get('name')}: {e}" for e in errors]


def prometheus_rule_problems(pr):
    """Its shape as prometheus-operator's CRD takes it; the expressions are promtool's part."""
    errors = metadata_problems(pr)
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
    return [f"PrometheusRule/{pr.get('metadata', {}).get('name')}: {e}" for e in errors]


def objects(path):
    return {(d["kind"], d["metadata"]["name"]): d for d in load_docs(path)}


def deployment_of(objs):
    deps = [d for (k, _), d in objs.items() if k == "Deployment"]
    assert len(deps) == 1, f"expected one Deployment, got {len(deps)}"
    return deps[0]


def container_of(objs):
    return deployment_of(objs)["spec"]["template"]["spec"]["containers"][0]


def rules_of(objs, kinds=("ClusterRole", "Role")):
    return [r for (k, _), d in objs.items() if k in kinds for r in d.get("rules", [])]


# ---- the CRD's schema and CEL rules ----------------------------------------------------------


def crd_schema(crd_path=CRD_SOURCE):
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


def cel_refusals(doc, crd_path=CRD_SOURCE):
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


# ---- the operator's command line -------------------------------------------------------------


def operator_flags(main_rs=OPERATOR_MAIN, flattened=OPERATOR_FLATTENED_ARGS):
    """Long flags declared by the operator's clap Args (field names, or explicit long = "..."),
    those of the Args structs it flattens in (`#[command(flatten)]`) included."""
    text = "\n".join(pathlib.Path(p).read_text() for p in (main_rs, *flattened))
    flags = set()
    for m in re.finditer(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*|#\[[^\n]*\n\s*)*(?:pub\s+)?(\w+)\s*:", text):
        attrs, field = m.group(1), m.group(2)
        if not re.search(r"\blong\b", attrs):
            continue
        explicit = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        flags.add("--" + (explicit.group(1) if explicit else field.replace("_", "-")))
    return flags


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "update-schema-defs":
        sys.exit(f"usage: {sys.argv[0]} update-schema-defs VALUES_SCHEMA_JSON")
    update_schema_defs(sys.argv[2])
