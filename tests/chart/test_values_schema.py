"""values.schema.json: closed everywhere, embedding the pinned Kubernetes definitions, and
refusing each file of ci/invalid/ with the error its first line quotes."""

import json
import re

import jsonschema
import pytest

from chartlib import CHART, KV_VERSION_DIR, VALUES_SCHEMA, expected_definitions

# What helm says when values.schema.json refuses the values.
SCHEMA_REFUSAL = "values don.t meet the specifications"
INVALID = sorted((CHART / "ci" / "invalid").glob("*.yaml"))


def test_values_schema_is_a_closed_draft7_schema():
    """Every object in the schema is closed: additionalProperties false, or a typed map."""
    schema = json.loads(VALUES_SCHEMA.read_text())
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
    assert not bad, "objects that accept unknown keys:\n  " + "\n  ".join(bad)


def test_values_schema_embeds_the_pinned_kubernetes_definitions():
    schema = json.loads(VALUES_SCHEMA.read_text())
    expected, _ = expected_definitions(schema)
    missing = sorted(set(expected) - set(schema["definitions"]))
    extra = sorted(set(schema["definitions"]) - set(expected))
    assert schema["definitions"] == expected, (
        f"definitions differ from kubernetes-validate {KV_VERSION_DIR}: missing {missing}, "
        f"extra {extra}; run .ci/chart-check.sh --update-schema-defs")


def test_ci_invalid_holds_values_to_refuse():
    assert INVALID, "charts/zmq-proxy-operator/ci/invalid/ holds no values files"


@pytest.mark.parametrize("bad", INVALID, ids=lambda p: p.name)
def test_chart_refuses_invalid_values(helm_template, bad):
    # The first line of each file is `# expect: <regex of the error>`.
    first = bad.read_text().splitlines()[0]
    expected = first[len("# expect: "):] if first.startswith("# expect: ") else SCHEMA_REFUSAL
    out = helm_template("-f", bad)
    assert out.returncode != 0, f"ci/invalid/{bad.name} was accepted"
    assert re.search(expected, out.stdout), f"failed, but not with /{expected}/:\n{out.stdout}"


def test_chart_refuses_kubernetes_older_than_its_kube_version(helm_template):
    out = helm_template(kube_version="1.28.0")
    assert out.returncode != 0, "Kubernetes 1.28.0 was accepted"
    assert "incompatible with Kubernetes" in out.stdout, out.stdout
