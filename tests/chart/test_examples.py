"""examples/: every ZmqProxy matches the CRD's schema (unknown fields refused) and passes its CEL
rules as the API server applies them; invalid-pair.yaml is refused with the message it quotes."""

import copy
import re

import jsonschema
import pytest

from chartlib import ROOT, cel_refusals, close, crd_schema, load_docs

INVALID_PAIR = ROOT / "examples" / "invalid-pair.yaml"
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if p != INVALID_PAIR]


def example_validator():
    crd, schema = crd_schema()
    served = {f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")}
    schema = close(copy.deepcopy(schema))
    # metadata is validated by the API server itself, not by the CRD's schema.
    schema.get("properties", {}).pop("metadata", None)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    return crd["spec"]["names"]["kind"], served, jsonschema.Draft7Validator(schema)


def test_examples_are_there():
    assert EXAMPLES, "examples/ holds no ZmqProxy besides invalid-pair.yaml"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_matches_the_crd_schema_with_unknown_fields_refused(path):
    kind, served, validator = example_validator()
    errors = []
    docs = load_docs(path)
    assert docs, f"{path.name} holds nothing"
    for doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") != kind or doc.get("apiVersion") not in served:
            errors.append(f"{where}: not a {kind} of a served version ({sorted(served)})")
            continue
        name = doc.get("metadata", {}).get("name", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 58:
            errors.append(f"{where}: name is not a short DNS-1035 label")
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            errors.append(f"{where}: {e.message} at {'.'.join(map(str, e.path))}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_the_crd_cel_rules(path):
    refusals = [m for doc in load_docs(path) for m in cel_refusals(doc)]
    assert not refusals, f"{path.name}: the API server would refuse it: {refusals}"


def test_invalid_pair_says_it_is_meant_to_be_rejected():
    assert re.search(r"^# .*(meant|expected) to be rejected", INVALID_PAIR.read_text(), re.M)


def test_crd_cel_rules_refuse_invalid_pair_with_the_message_its_comment_quotes():
    refusals = [m for doc in load_docs(INVALID_PAIR) for m in cel_refusals(doc)]
    assert refusals, "every CEL rule holds, so the API server would accept it"
    comment = " ".join(line.lstrip("#").strip() for line in INVALID_PAIR.read_text().splitlines()
                       if line.startswith("#"))
    comment = re.sub(r"\s+", " ", comment)
    unquoted = [m for m in refusals if m not in comment]
    assert not unquoted, f"its comment does not quote the refusal: {unquoted}"
