"""The Grafana dashboard and the PrometheusRule: rendered only when asked (the rule only where
its API exists), valid, every query and alert parsed by promtool and by promql-parser and naming
only exported metrics (check_monitoring.py), the alerts' promtool unit tests
(prometheusrule-tests.yaml) passing; and the checks refusing each kind of breakage."""

import re
import shutil
import sys

import pytest

from chartlib import ROOT, load_docs, run, validate_rendered

MONITORING_ON = ("--set", "metrics.dashboard.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
PROMETHEUS_RULE_API = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
HERE = ROOT / "tests" / "chart"
# The alert expression ZmqProxyDropsRising, and the same with a parenthesis missing.
DROPS_EXPR = "(rate(zmq_proxy_dropped_frames_total[5m]))"
DROPS_EXPR_UNBALANCED = "(rate(zmq_proxy_dropped_frames_total[5m])"


def has_kind(path, kind):
    return re.search(rf"^kind: {kind}$", path.read_text(), re.M) is not None


def replace_once_per_line(text, old, new):
    """What `sed s/old/new/` does with a literal pattern: the first match on each line."""
    return "\n".join(line.replace(old, new, 1) for line in text.split("\n"))


@pytest.fixture(scope="session")
def check_monitoring(promtool):
    """check_monitoring(render, out_dir) -> (ok, output): check_monitoring.py on the render, then
    `promtool check rules` on the rule and the dashboard's queries and `promtool test rules`."""

    def _check(render, out_dir):
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        shutil.copy(HERE / "prometheusrule-tests.yaml", out_dir)
        output = []
        for cmd in (
            [sys.executable, HERE / "check_monitoring.py", render, out_dir],
            [promtool, "check", "rules", out_dir / "rules.yaml", out_dir / "dashboard-rules.yaml"],
            [promtool, "test", "rules", out_dir / "prometheusrule-tests.yaml"],
        ):
            proc = run(*cmd)
            output.append(proc.stdout)
            if proc.returncode != 0:
                return False, "".join(output)
        return True, "".join(output)

    return _check


@pytest.fixture(scope="session")
def monitoring_on(render):
    """The render with the dashboard and the PrometheusRule on, where the rule's API exists."""
    return render(*MONITORING_ON, *PROMETHEUS_RULE_API)


@pytest.fixture(scope="session")
def monitoring_checked(check_monitoring, monitoring_on, tmp_path_factory):
    """The monitoring check of monitoring_on: (ok, output, the directory of its rules.yaml)."""
    out_dir = tmp_path_factory.mktemp("monitoring")
    ok, output = check_monitoring(monitoring_on, out_dir)
    return ok, output, out_dir


def test_dashboard_and_rule_render_valid_parse_name_exported_metrics_and_pass_alert_tests(
        monitoring_on, monitoring_checked):
    errors = validate_rendered(load_docs(monitoring_on))
    assert not errors, "\n".join(errors)
    ok, output, _ = monitoring_checked
    assert ok, output


def test_prometheus_rule_renders_only_with_its_api_or_force_and_neither_renders_by_default(render):
    without_api = render(*MONITORING_ON)
    assert not has_kind(without_api, "PrometheusRule"), "rendered without the monitoring.coreos.com/v1 API"
    assert has_kind(without_api, "ConfigMap"), "the dashboard needs no API and must render"
    assert has_kind(render(*MONITORING_ON, *PROMETHEUS_RULE_API), "PrometheusRule"), "not rendered with the API"
    assert has_kind(render(*MONITORING_ON, "--set", "metrics.prometheusRule.force=true"), "PrometheusRule"), \
        "not rendered with force"
    by_default = render(*PROMETHEUS_RULE_API)
    assert not (has_kind(by_default, "PrometheusRule") or has_kind(by_default, "ConfigMap")), "rendered by default"


@pytest.mark.parametrize("old, new, expected", [
    pytest.param("zmq_proxy_queued_frames{", "zmq_proxy_queue_depth{",
                 "unknown metric zmq_proxy_queue_depth",
                 id="dashboard query on a metric nobody exports"),
    pytest.param("(namespace, zmqproxy, pod, socket) (zmq_proxy_connected_peers",
                 "(namespace, zmqproxy, pod, sockets) (zmq_proxy_connected_peers",
                 "label sockets is not a label",
                 id="dashboard query grouping by a label nobody exports"),
    pytest.param('"schemaVersion": 39,', '"schemaVersion": 39,,',
                 "not JSON",
                 id="dashboard JSON that does not parse"),
    pytest.param(DROPS_EXPR, DROPS_EXPR_UNBALANCED,
                 "alert ZmqProxyDropsRising: does not parse as PromQL",
                 id="alert expression that does not parse"),
])
def test_monitoring_check_refuses(check_monitoring, monitoring_on, tmp_path, old, new, expected):
    text = monitoring_on.read_text()
    mutated = replace_once_per_line(text, old, new)
    assert mutated != text, f"replacing {old!r} changed nothing"
    render = tmp_path / "monitoring-mutated.yaml"
    render.write_text(mutated)
    ok, output = check_monitoring(render, tmp_path / "monitoring")
    assert not ok, "the mutated render was accepted"
    assert re.search(expected, output), f"refused, but not with /{expected}/:\n{output}"


def test_promtool_check_rules_refuses_an_alert_expression_that_does_not_parse(promtool, monitoring_checked, tmp_path):
    _, _, out_dir = monitoring_checked
    rules = out_dir / "rules.yaml"
    assert rules.is_file(), "the monitoring check wrote no rules.yaml"
    text = rules.read_text()
    mutated = replace_once_per_line(text, DROPS_EXPR, DROPS_EXPR_UNBALANCED)
    assert mutated != text, f"replacing {DROPS_EXPR!r} changed nothing"
    (tmp_path / "rules-mutated.yaml").write_text(mutated)
    out = run(promtool, "check", "rules", tmp_path / "rules-mutated.yaml")
    assert out.returncode != 0, "promtool accepted it"
    assert re.search("could not parse expression|parse error", out.stdout), out.stdout
