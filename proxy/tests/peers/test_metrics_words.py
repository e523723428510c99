"""Words that do not mislead: a connection that closes before sending a greeting (a port check, a
TCP health probe) is counted under its own name and never reported as dropped messages; the
metrics count messages (a multipart message once) and name frames as frames; and the metric
table of docs/operations.md is what a real /metrics scrape serves, HELP text included."""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import zmq

from zmqpeers import REPO, free_ports, log_message, raw_connect, until

DOCS = REPO / "docs" / "operations.md"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        return r.read().decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _families(text: str) -> dict[str, tuple[str, str]]:
    """Served name (counters with `_total`) -> (type, HELP text)."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    out = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        served = name + "_total" if kind == "counter" and not name.endswith("_total") else name
        out[served] = (kind, helps.get(name, "").rstrip("."))
    return out


def _docs_rows(federation: bool = False) -> dict[str, tuple[str, str]]:
    """The proxy's metric table of docs/operations.md: name -> (type, meaning); the families a
    federated replica only serves, or all the others."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`zmq_proxy_(?!operator_)\w+`", cells[0]):
            if cells[0].startswith("`zmq_proxy_federation_") == federation:
                rows[cells[0].strip("`")] = (cells[1], cells[3].rstrip("."))
    return rows


def test_a_bare_tcp_connect_is_counted_as_such_and_not_as_dropped_messages(proxy_pair):
    http = free_ports(1)[0]
    p = proxy_pair("PULL", "PUSH", extra=("--http-bind", f"127.0.0.1:{http}"))
    port = int(p.frontend.rsplit(":", 1)[1])
    for _ in range(2):
        s = raw_connect(port)
        s.close()
    for _ in until(5):
        text = _scrape(http)
        if _sample(text, "zmq_proxy_closed_before_greeting_total", socket="frontend") == 2:
            break
        time.sleep(0.05)
    assert _sample(text, "zmq_proxy_closed_before_greeting_total", socket="frontend") == 2, text
    assert _sample(text, "zmq_proxy_handshake_failures_total") is None, "a port check is no handshake failure"
    # The drop summary runs every 10 s; give it one round.
    time.sleep(10.5)
    summaries = [e for e in p.events() if log_message(e) == "messages dropped"]
    assert not summaries, f"a port check was reported as dropped messages: {summaries}"


def test_metrics_count_a_multipart_message_once_and_frames_as_frames(ctx, proxy_pair):
    http = free_ports(1)[0]
    p = proxy_pair("PULL", "PUSH", extra=("--http-bind", f"127.0.0.1:{http}"))
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    push.connect(p.frontend)
    pull.connect(p.backend)
    for i in range(10):
        push.send_multipart([b"a", b"b", str(i).encode()])
    for _ in range(10):
        assert len(pull.recv_multipart()) == 3
    for _ in until(5):
        text = _scrape(http)
        if _sample(text, "zmq_proxy_sent_frames_total", socket="backend") == 30:
            break
        time.sleep(0.05)
    assert _sample(text, "zmq_proxy_received_messages_total", socket="frontend") == 10, text
    assert _sample(text, "zmq_proxy_received_frames_total", socket="frontend") == 30, text
    assert _sample(text, "zmq_proxy_sent_messages_total", socket="backend") == 10, text
    assert _sample(text, "zmq_proxy_sent_frames_total", socket="backend") == 30, text


def test_the_docs_metric_table_is_what_metrics_serves(ctx, proxy_pair):
    http = free_ports(1)[0]
    p = proxy_pair("ROUTER", "DEALER", capture="PUB", extra=("--http-bind", f"127.0.0.1:{http}"))
    served = _families(_scrape(http))
    documented = _docs_rows()
    expected = "\n".join(f"| `{n}` | {k} | LABELS | {h}. |" for n, (k, h) in sorted(served.items()))
    assert set(documented) == set(served), (
        f"docs/operations.md lists {sorted(set(documented) - set(served))} that /metrics does not serve "
        f"and misses {sorted(set(served) - set(documented))}; /metrics serves:\n{expected}"
    )
    for name, (kind, help_text) in served.items():
        assert documented[name] == (kind, help_text), f"{name}: docs say {documented[name]}, /metrics ({kind}, {help_text!r})"
