"""The scripts, Dockerfiles and workflows around the chart: shellcheck, hadolint, the e2e
suite's one-line skip, and the GitHub workflows running the right entry points."""

import os
import shutil

import yaml

from chartlib import ROOT, run, which


def test_shellcheck_e2e_scripts_and_chart_check():
    scripts = sorted((ROOT / "tests" / "e2e").glob("*.sh")) + [ROOT / ".ci" / "chart-check.sh"]
    out = run(which("shellcheck"), "-x", *scripts)
    assert out.returncode == 0, out.stdout


def test_hadolint_dockerfiles():
    out = run(which("hadolint"), ROOT / "docker" / "Dockerfile.operator", ROOT / "docker" / "Dockerfile.proxy")
    assert out.returncode == 0, out.stdout


def test_e2e_skips_with_one_line_when_docker_or_kind_is_missing(tmp_path):
    """A PATH without kind and docker: the suite says what is missing and exits 0 as skipped."""
    bin_dir = tmp_path / "nokind-bin"
    bin_dir.mkdir()
    bash = bin_dir / "bash"
    os.symlink(shutil.which("bash"), bash)
    out = run(bash, ROOT / "tests" / "e2e" / "run.sh", env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    text = out.stdout.rstrip("\n")
    assert out.returncode == 0, text
    assert len(text.split("\n")) == 1, f"more than one line:\n{text}"
    assert "skipped" in text and ("docker" in text or "kind" in text), text


def test_github_workflows_parse_and_run_the_entry_points():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yaml"))
    assert workflows
    for f in workflows:
        assert yaml.safe_load(f.read_text()).get("jobs"), f"{f.name} has no jobs"
    assert "bash .ci/run" in (ROOT / ".github/workflows/ci.yaml").read_text(), "ci.yaml does not run bash .ci/run"
    e2e = (ROOT / ".github/workflows/e2e.yaml").read_text()
    assert "helm/kind-action" in e2e, "e2e.yaml does not use helm/kind-action"
    assert "tests/e2e/run.sh" in e2e, "e2e.yaml does not run tests/e2e/run.sh"
