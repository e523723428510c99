"""--pause-file: the proxy pauses and resumes on the content of a file laid out as the kubelet
lays out a mounted ConfigMap (`paused -> ..data/paused`, `..data -> ..<timestamp>`, updated by
an atomic swap of the `..data` symlink), with libzmq PAUSE semantics: connections stay up, the
messages sent meanwhile wait and are all delivered, in order, on resume."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqpeers import connect_wait, ep, free_ports, log_message, until

_versions = itertools.count()


def kubelet_write(volume: Path, value: str) -> None:
    """Writes `paused` = value as the kubelet's atomic writer does: a fresh timestamped
    directory, a `..data_tmp` symlink to it renamed over `..data`, then the old one removed."""
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    fresh = f"..2026_12_01_{next(_versions):04d}.{os.getpid()}"
    (volume / fresh).mkdir()
    (volume / fresh / "paused").write_text(value)
    (volume / "..data_tmp").symlink_to(fresh)
    os.rename(volume / "..data_tmp", volume / "..data")
    if not (volume / "paused").is_symlink():
        (volume / "paused").symlink_to("..data/paused")
    if old:
        (volume / old / "paused").unlink()
        (volume / old).rmdir()


def wait_log(proxy, message: str, count: int, timeout: float = 10.0) -> None:
    """Waits until the proxy has logged `message` at least `count` times."""
    for _ in until(timeout, 100_000):
        if [log_message(e) for e in proxy.events()].count(message) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{message!r} not logged {count} times within {timeout}s\n{proxy.output()}")


def connection_events(mon: zmq.Socket) -> list[int]:
    """Connection events a peer's monitor has queued (connects, disconnects, retries)."""
    seen = []
    for _ in range(10_000):
        if not mon.poll(0):
            break
        seen.append(recv_monitor_message(mon)["event"])
    return seen


def start_pipeline(ctx, start_proxy, volume: Path):
    ports = free_ports(2)
    proxy = start_proxy([
        "--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
        "--backend-type", "PUSH", "--backend-bind", ep(ports[1]),
        "--pause-file", str(volume / "paused"), "--log-format", "json",
    ])
    producer = ctx.socket(zmq.PUSH)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, ep(ports[1]))
    connect_wait(producer, ep(ports[0]))
    reconnects = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CLOSED
    # Fresh inproc names: connect_wait's monitor address may still be bound.
    monitors = [
        s.get_monitor_socket(reconnects, addr=f"inproc://pause-file-monitor-{next(_versions)}")
        for s in (producer, consumer)
    ]
    return proxy, producer, consumer, monitors


def test_pause_file_pauses_without_dropping_connections_and_resume_delivers_everything(ctx, start_proxy, tmp_path):
    kubelet_write(tmp_path, "false")
    proxy, producer, consumer, monitors = start_pipeline(ctx, start_proxy, tmp_path)
    producer.send(b"before")
    assert consumer.recv() == b"before"

    kubelet_write(tmp_path, "true")
    wait_log(proxy, "pause file: paused", 1)
    sent = [f"m{i}".encode() for i in range(200)]
    for m in sent:
        producer.send(m)
    assert not consumer.poll(1000), "a message was forwarded while the pause file said true"

    kubelet_write(tmp_path, "false")
    wait_log(proxy, "pause file: resumed", 1)
    got = []
    for _ in range(len(sent)):
        assert consumer.poll(10_000), f"only {len(got)} of {len(sent)} messages after resume"
        got.append(consumer.recv())
    assert got == sent, "waiting messages lost or reordered"
    assert not consumer.poll(200), "more messages than were sent"
    for mon in monitors:
        assert connection_events(mon) == [], "a peer saw its connection drop or reconnect"
    assert proxy.stop() == 0, proxy.output()
    c = proxy.stopped_counters()
    assert c["dropped_msgs"] == 0 and c["undelivered_msgs"] == 0, c


def test_proxy_starts_paused_when_the_file_says_true_and_survives_a_missing_file(ctx, start_proxy, tmp_path):
    kubelet_write(tmp_path, "true\n")
    proxy, producer, consumer, monitors = start_pipeline(ctx, start_proxy, tmp_path)
    producer.send(b"held")
    assert not consumer.poll(1000), "a proxy started paused forwarded a message"

    # The file goes away (the volume torn down under it): one warning, still paused.
    target = tmp_path / os.readlink(tmp_path / "..data") / "paused"
    target.unlink()
    wait_log(proxy, "pause file unreadable; state unchanged", 1)
    assert not consumer.poll(700), "a missing pause file resumed the proxy"
    # Garbage is refused the same way, and the warning is not repeated while it stays bad.
    target.write_text("maybe")
    assert not consumer.poll(1200)
    messages = [log_message(e) for e in proxy.events()]
    assert messages.count("pause file unreadable; state unchanged") == 1, messages

    target.write_text("false")
    wait_log(proxy, "pause file: resumed", 1)
    assert consumer.poll(10_000) and consumer.recv() == b"held"
    for mon in monitors:
        assert connection_events(mon) == []
