"""Fixtures of the chart checks: helm and promtool from PATH (.ci/chart-check.sh installs them;
a missing one fails the checks that need it, saying so) and `helm template` of the chart, each
set of flags rendered once per session and shared by the checks that read it."""

from __future__ import annotations

import subprocess

import pytest

from chartlib import CHART, CI_VALUES, KUBE_VERSIONS, RELEASE_NAMESPACE, ROOT, run, which


@pytest.fixture(scope="session")
def helm():
    return which("helm")


@pytest.fixture(scope="session")
def promtool():
    return which("promtool")


@pytest.fixture(scope="session")
def helm_template(helm):
    """helm_template(*args) -> CompletedProcess (stdout and stderr together) of `helm template`
    of the chart as the release zmq-proxy-operator in zmq-system, for the newest Kubernetes of
    KUBE_VERSIONS unless args say otherwise."""

    def template(*args, kube_version=KUBE_VERSIONS[-1]):
        version = ["--kube-version", kube_version] if kube_version else []
        return run(helm, "template", "zmq-proxy-operator", CHART, "--namespace", RELEASE_NAMESPACE, *version, *args)

    return template


@pytest.fixture(scope="session")
def render(helm, tmp_path_factory):
    """render(*args) -> path of the YAML `helm template` renders with args; fails the check when
    helm refuses. Each set of args renders once per session."""
    out_dir = tmp_path_factory.mktemp("render")
    cache = {}

    def _render(*args):
        args = tuple(map(str, args))
        if args not in cache:
            # stderr apart: a warning of helm's must not end up in the YAML.
            proc = subprocess.run(
                [helm, "template", "zmq-proxy-operator", str(CHART), "--namespace", RELEASE_NAMESPACE,
                 "--kube-version", KUBE_VERSIONS[-1], *args],
                cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.fail(f"helm template {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
            path = out_dir / f"render-{len(cache)}.yaml"
            path.write_text(proc.stdout)
            cache[args] = path
        return cache[args]

    return _render


@pytest.fixture(scope="session")
def render_case(render):
    """render_case(case) -> path of the render of ci/<case>-values.yaml ("default": no file)."""

    def _render_case(case):
        return render() if case == "default" else render("-f", CI_VALUES[case])

    return _render_case


def pytest_terminal_summary(terminalreporter):
    """The line the docs and CI logs look for, in the words the tier has always ended with."""
    stats = terminalreporter.stats
    passed = len(stats.get("passed", []))
    failed = len(stats.get("failed", [])) + len(stats.get("error", []))
    terminalreporter.write_line(f"chart-check: {passed} passed, {failed} failed")


def pytest_report_header():
    return f"validating renders for Kubernetes {' '.join(KUBE_VERSIONS)}"
