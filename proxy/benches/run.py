#!/usr/bin/env python3
"""Side-by-side benchmark: libzmq's zmq_proxy vs zmq-proxy vs no proxy, in one run.

The load generator (zmqbench.c, on the system libzmq) is the same for all three, so ratios compare
the devices in the middle. Each scenario runs REPEAT times per target and the median is reported;
proxy CPU seconds and peak RSS are read from /proc for the proxy process of that run.

    python3 proxy/benches/run.py            # about 10 minutes; needs gcc and libzmq3-dev
    python3 proxy/benches/run.py --quick    # fewer messages, one repeat (smoke run)
    python3 proxy/benches/run.py --skip CURVE --other-proxy /tmp/old/zmq-proxy   # two builds, A/B
    python3 proxy/benches/run.py --federation   # federation.py instead: the cross hop, federated vs not
    python3 proxy/benches/run.py --many-peers   # many_peers.py instead: 10,000 idle peers, RSS and accept

With --other-proxy, a second zmq-proxy build runs as a fourth target in the same alternation,
with its own columns (rate, ratio to libzmq, CPU per million), so two builds are compared
under the same machine load.

Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipc_path(port: int) -> Path:
    """A Unix socket path of this run, named after a free port so that runs never share one."""
    return Path(f"/tmp/zmqbench-{os.getpid()}-{port}.sock")


def wait_for_ports(
    ports: list[int], proc: subprocess.Popen, timeout: float = 10.0, paths: tuple[Path, ...] = ()
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports) + list(paths)
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited early with {proc.returncode}")
        try:
            if isinstance(pending[0], Path):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(0.2)
                    s.connect(str(pending[0]))
            else:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2):
                    pass
            pending.pop(0)
        except OSError:
            time.sleep(0.02)
    if pending:
        raise RuntimeError(f"endpoints {pending} never opened")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after the ")" split they are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Scenario:
    name: str
    front_type: str
    back_type: str
    kind: str  # pipeline | reqrep | pubsub
    args: list[str]  # scenario-specific numbers passed to zmqbench
    messages: int  # messages crossing the device in one run, for CPU per million
    curve: bool = False  # CURVE on every connection (clients, both proxy sides, the ceiling)
    # I/O threads of the client process (zmqbench). libzmq encodes and, with CURVE, seals and
    # opens in its I/O threads; in pub/sub one thread would carry the publisher and all four
    # subscribers and set the rate for both proxies: a second one raised CURVE pub/sub from
    # 829k to 951k msgs/s through libzmq's proxy and from 833k to 1009k through ours (same run,
    # 2026-12-01), and the brokerless ceiling, below both proxies with one, went above them.
    # In pipelines it changed the proxied rates by less than the noise, so they keep 1. The
    # proxies keep their own defaults (--libzmq-io-threads).
    client_io_threads: int = 1
    # The frontend on a Unix socket (ipc://), the backend on TCP: both proxies bridge the two.
    # Without a proxy, the clients meet on the Unix socket.
    ipc: bool = False
    # pub/sub: subscriber processes (0: every subscriber a thread of the publisher's process).
    # Each has its own context with client_io_threads I/O threads, so a large fan-out measures
    # the device and not one client process's I/O threads.
    sub_procs: int = 0


# One keypair per role for the CURVE scenarios (the zmq_curve(7) test keys): the same for
# libzmq's proxy, zmq-proxy and the brokerless ceiling, so only the device in the middle differs.
CURVE_KEYS = {
    "ZMQBENCH_CURVE_SERVER_PUBLIC": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7",
    "ZMQBENCH_CURVE_SERVER_SECRET": "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6",
    "ZMQBENCH_CURVE_CLIENT_PUBLIC": "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID",
    "ZMQBENCH_CURVE_CLIENT_SECRET": "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs",
}


def bench_env(sc: Scenario, io_threads: int) -> dict:
    env = dict(os.environ, RUST_LOG="warn", **(CURVE_KEYS if sc.curve else {}))
    env["ZMQBENCH_IO_THREADS"] = str(io_threads)
    return env


def curve_flags(sc: Scenario) -> list[str]:
    if not sc.curve:
        return []
    key = ROOT / "target" / "zmqbench-server.key"
    key.write_text(CURVE_KEYS["ZMQBENCH_CURVE_SERVER_SECRET"] + "\n")
    allow = ROOT / "target" / "zmqbench-clients"
    allow.write_text(CURVE_KEYS["ZMQBENCH_CURVE_CLIENT_PUBLIC"] + "\n")
    flags = []
    for side in ("frontend", "backend"):
        flags += [f"--{side}-curve-server-key-file", str(key), f"--{side}-curve-authorized-keys", str(allow)]
    return flags


@dataclass
class Result:
    rate: float
    extra: dict = field(default_factory=dict)
    cpu_s: float = float("nan")
    rss_mib: float = float("nan")


def build(zmq_proxy: Path | None) -> tuple[Path, Path]:
    out = ROOT / "target" / "zmqbench"
    src = BENCH_DIR / "zmqbench.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(out), str(src), "-lzmq", "-lpthread"], check=True
        )
    if zmq_proxy is None:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "zmq-proxy", "--bin", "zmq-proxy"],
            check=True,
            cwd=ROOT,
        )
        zmq_proxy = ROOT / "target" / "release" / "zmq-proxy"
    return out, zmq_proxy


def start_proxy(
    target: str, sc: Scenario, bench: Path, zmq_proxy: Path, other: Path | None, libzmq_io: int
):
    fp, bp = free_port(), free_port()
    front, back = f"tcp://127.0.0.1:{fp}", f"tcp://127.0.0.1:{bp}"
    paths: tuple[Path, ...] = ()
    if sc.ipc:
        paths = (ipc_path(fp),)
        front = f"ipc://{paths[0]}"
    if target == "libzmq":
        cmd = [str(bench), "proxy", sc.front_type, "@" + front, sc.back_type, "@" + back]
    else:
        cmd = [
            str(other if target == "other" and other else zmq_proxy),
            "--frontend-type", sc.front_type, "--frontend-bind", front,
            "--backend-type", sc.back_type, "--backend-bind", back,
        ] + curve_flags(sc)  # fmt: skip
    env = bench_env(sc, libzmq_io)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_for_ports([bp] if sc.ipc else [fp, bp], proc, paths=paths)
    return proc, front, back


def client_endpoints(sc: Scenario, front: str | None, back: str | None) -> tuple[str, str]:
    """Endpoints for the two client roles: through a proxy both connect; without one, the
    upstream role binds and the downstream role connects to it."""
    if front is not None:
        return ">" + front, ">" + back
    if sc.kind == "reqrep":
        ports = [f"tcp://127.0.0.1:{free_port()}" for _ in range(int(sc.args[1]))]
        return ",".join(">" + p for p in ports), ",".join("@" + p for p in ports)
    port = free_port()
    ep = f"ipc://{ipc_path(port)}" if sc.ipc else f"tcp://127.0.0.1:{port}"
    return "@" + ep, ">" + ep


def run_once(
    target: str,
    sc: Scenario,
    bench: Path,
    zmq_proxy: Path,
    other: Path | None = None,
    libzmq_io: int = 1,
) -> Result:
    proc = None
    front = back = up = None
    if target != "ceiling":
        proc, front, back = start_proxy(target, sc, bench, zmq_proxy, other, libzmq_io)
    try:
        up, down = client_endpoints(sc, front, back)
        cpu0 = proc_cpu_seconds(proc.pid) if proc else 0.0
        out = subprocess.run(
            [str(bench), sc.kind, up, down, *sc.args, *([str(sc.sub_procs)] if sc.sub_procs else [])],
            capture_output=True,
            text=True,
            timeout=120,
            env=bench_env(sc, sc.client_io_threads),
        )
        if out.returncode != 0 and (sc.kind != "pubsub" or not out.stdout.strip()):
            raise RuntimeError(f"{target} {sc.name}: zmqbench failed: {out.stderr.strip()}")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        res = Result(rate=data["rate"], extra=data)
        if proc:
            res.cpu_s = proc_cpu_seconds(proc.pid) - cpu0
            res.rss_mib = proc_peak_rss_mib(proc.pid)
        return res
    finally:
        if proc:
            stop_proxy(proc)
        # libzmq leaves its socket files behind; zmq-proxy removes its own.
        for ep in (front, up if target == "ceiling" else None):
            if ep and "ipc://" in ep:
                Path(ep.split("ipc://", 1)[1]).unlink(missing_ok=True)


def stop_proxy(proc: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it has not gone within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def median_result(results: list[Result]) -> Result:
    results = sorted(results, key=lambda r: r.rate)
    mid = results[len(results) // 2]
    return mid


def scenarios(quick: bool) -> list[Scenario]:
    n = 100_000 if quick else 1_000_000
    rr = 2_000 if quick else 20_000
    # 1M publications (4M deliveries): with 300k a CURVE run lasted about a second and the
    # median of five still swung by 20% between runs.
    ps = 50_000 if quick else 1_000_000
    return [
        Scenario("pipeline 16 B", "PULL", "PUSH", "pipeline", ["16", str(n)], n),
        Scenario("pipeline 256 B", "PULL", "PUSH", "pipeline", ["256", str(n)], n),
        Scenario("pipeline 4 KiB", "PULL", "PUSH", "pipeline", ["4096", str(n // 4)], n // 4),
        # Pushers on a Unix socket, pullers on TCP: the proxy as a bridge (the ceiling: ipc only).
        Scenario("ipc>tcp pipeline 256 B", "PULL", "PUSH", "pipeline", ["256", str(n)], n, ipc=True),
        # 4 REQ clients, 2 REP workers, 64-byte requests; each round trip is 2 messages through the
        # proxy, so CPU per million counts both.
        Scenario("req/rep 4x2 64 B", "ROUTER", "DEALER", "reqrep", ["4", "2", str(rr), "64"], 8 * rr),
        Scenario("pub/sub 1x4 64 B", "XSUB", "XPUB", "pubsub", ["4", str(ps), "64"], ps, client_io_threads=2),
        # Fan-out: each publication goes to 16 and to 64 subscribers (all in one client process,
        # which bounds 1x64 on 2 cores: compare the proxies' loss, and the rates with care).
        Scenario("pub/sub 1x16 64 B", "XSUB", "XPUB", "pubsub", ["16", str(ps // 4), "64"], ps // 4, client_io_threads=2),
        Scenario("pub/sub 1x64 64 B", "XSUB", "XPUB", "pubsub", ["64", str(ps // 10), "64"], ps // 10, client_io_threads=2),
        # The subscribers spread over client processes (one I/O thread each), so the clients
        # are not what bounds the fan-out: 64, and 1000 (2000 descriptors on each side).
        Scenario("pub/sub 1x64 64 B, 4 procs", "XSUB", "XPUB", "pubsub", ["64", str(ps // 10), "64"], ps // 10, sub_procs=4),
        Scenario("pub/sub 1x1000 64 B, 8 procs", "XSUB", "XPUB", "pubsub", ["1000", str(ps // 100), "64"], ps // 100, sub_procs=8),
        # The same clients with CURVE on every connection: both proxies are CURVE servers on
        # both sides (ours with an allow-list, libzmq's without a ZAP handler).
        Scenario("CURVE pipeline 256 B", "PULL", "PUSH", "pipeline", ["256", str(n // 2)], n // 2, True),
        Scenario("CURVE pipeline 4 KiB", "PULL", "PUSH", "pipeline", ["4096", str(n // 8)], n // 8, True),
        Scenario("CURVE req/rep 4x2 64 B", "ROUTER", "DEALER", "reqrep", ["4", "2", str(rr), "64"], 8 * rr, True),
        Scenario("CURVE pub/sub 1x4 64 B", "XSUB", "XPUB", "pubsub", ["4", str(ps), "64"], ps, True, 2),
    ]  # fmt: skip


def fmt_rate(r: float) -> str:
    if r != r:  # not run (--no-ceiling)
        return "-"
    return f"{r / 1e6:.2f}M/s" if r >= 1e6 else f"{r / 1e3:.0f}k/s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer messages, one repeat")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--zmq-proxy", type=Path, help="use this binary instead of building it")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--only", help="run only the scenarios whose name contains this text")
    ap.add_argument("--skip", help="skip the scenarios whose name contains this text")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the brokerless runs")
    ap.add_argument(
        "--other-proxy", type=Path, help="a second zmq-proxy binary, run as a fourth target"
    )
    ap.add_argument(
        "--libzmq-io-threads",
        type=int,
        default=1,
        help="I/O threads of libzmq's zmq_proxy (default 1, libzmq's own default)",
    )
    ap.add_argument(
        "--federation",
        action="store_true",
        help="run federation.py's scenarios instead (replicas linked to each other)",
    )
    ap.add_argument(
        "--many-peers",
        action="store_true",
        help="run many_peers.py's scenario instead (idle peers: RSS per peer, accept time)",
    )
    opts = ap.parse_args()
    if opts.many_peers:
        import many_peers

        args = ["--quick"] if opts.quick else ["--repeat", str(opts.repeat)]
        args += ["--zmq-proxy", str(opts.zmq_proxy)] if opts.zmq_proxy else []
        args += ["--other-proxy", str(opts.other_proxy)] if opts.other_proxy else []
        return many_peers.main(args)
    if opts.federation:
        import federation

        fed_args = ["--quick"] if opts.quick else ["--repeat", str(opts.repeat)]
        fed_args += ["--zmq-proxy", str(opts.zmq_proxy)] if opts.zmq_proxy else []
        fed_args += ["--json", str(opts.json)] if opts.json else []
        return federation.main(fed_args)
    if shutil.which("gcc") is None or not Path("/usr/include/zmq.h").exists():
        print("benchmark needs gcc and libzmq3-dev (apt-get install gcc libzmq3-dev)", file=sys.stderr)
        return 2
    bench, zmq_proxy = build(opts.zmq_proxy)
    # 1x1000 holds about 2000 descriptors in the proxy and as many in the clients: raise the
    # soft limit to the hard one for every process of the run.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    repeat = 1 if opts.quick else max(1, opts.repeat)
    targets = ["libzmq", "zmq-proxy"] + ([] if opts.no_ceiling else ["ceiling"])
    if opts.other_proxy:
        targets.append("other")
    rows, raw = [], {}
    for sc in scenarios(opts.quick):
        if opts.only and opts.only not in sc.name:
            continue
        if opts.skip and opts.skip in sc.name:
            continue
        # Targets alternate within each repeat, so a slow patch of the machine hits all three
        # instead of one.
        runs: dict[str, list[Result]] = {t: [] for t in targets}
        for _ in range(repeat):
            for target in targets:
                # Without a proxy the publisher's one I/O thread writes to every subscriber
                # itself (and with 1000 they connect late or not at all on a busy machine):
                # no ceiling for the scenarios that spread subscribers over processes.
                if target == "ceiling" and sc.sub_procs:
                    continue
                runs[target].append(
                    run_once(target, sc, bench, zmq_proxy, opts.other_proxy, opts.libzmq_io_threads)
                )
        med = {t: median_result(runs[t]) for t in targets if runs[t]}
        for t in targets:
            raw[f"{sc.name}/{t}"] = [r.__dict__ for r in runs[t]]
        lib, ours = med["libzmq"], med["zmq-proxy"]
        ceil = med.get("ceiling", Result(rate=float("nan"), extra={"loss": float("nan")}))
        extra = ""
        if sc.kind == "reqrep":
            extra = (
                f"p50 {ours.extra['p50_us']:.0f}/{lib.extra['p50_us']:.0f} us, "
                f"p99 {ours.extra['p99_us']:.0f}/{lib.extra['p99_us']:.0f} us (ours/libzmq)"
            )
        if sc.kind == "pubsub":
            extra = (
                f"loss {ours.extra['loss']:.1%}/{lib.extra['loss']:.1%}/{ceil.extra['loss']:.1%}"
                " (ours/libzmq/none)"
            )
            if "other" in med:
                extra += f", other {med['other'].extra['loss']:.1%}"
        if sc.sub_procs:
            extra += f"; subscribers in {sc.sub_procs} processes"
        if sc.client_io_threads != 1:
            extra += f"; clients {sc.client_io_threads} I/O threads"
        # A hint, not proof: without a proxy a pipeline's clients do the least work, so a ceiling
        # below both proxies means the clients set the rate. In fan-out the brokerless publisher
        # also does the proxy's per-subscriber work (with CURVE, 4 seals per publication instead
        # of 1), so there it only says "look closer" (what settled it for pub/sub: more client
        # I/O threads raised both proxies' rates, see client_io_threads).
        if ceil.rate < min(lib.rate, ours.rate):
            extra += "; CLIENT-BOUND? (no proxy slower than both)"
        extra = extra.removeprefix("; ")
        cpu = lambda r: r.cpu_s / (sc.messages / 1e6)  # noqa: E731
        other = []
        if "other" in med:
            o = med["other"]
            other = [fmt_rate(o.rate), f"{o.rate / lib.rate:.2f}x", f"{cpu(o):.2f}"]
        rows.append(
            [
                sc.name,
                fmt_rate(lib.rate),
                fmt_rate(ours.rate),
                fmt_rate(ceil.rate),
                f"{ours.rate / lib.rate:.2f}x",
                f"{ours.rate / ceil.rate:.2f}x" if ceil.rate == ceil.rate else "-",
                f"{cpu(ours):.2f} / {cpu(lib):.2f}",
                f"{ours.rss_mib:.0f} / {lib.rss_mib:.0f}",
                *other,
                extra,
            ]
        )
    head = [
        "scenario", "libzmq", "zmq-proxy", "no proxy", "vs libzmq", "vs ceiling",
        "CPU s/M msgs (ours / libzmq)", "peak RSS MiB (ours / libzmq)",
    ] + (["other", "other vs libzmq", "other CPU s/M"] if opts.other_proxy else []) + ["notes"]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(
        f"\n{os.cpu_count()} cores, median of {repeat} run(s) per cell; rates are messages/s at the"
        f" receiver; libzmq's zmq_proxy with {opts.libzmq_io_threads} I/O thread(s)"
    )
    if opts.json:
        opts.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
