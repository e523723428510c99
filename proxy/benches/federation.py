#!/usr/bin/env python3
"""Federation benchmark (docs/federation.md, "What federation costs"): two zmq-proxy replicas on
127.0.0.1 linked to each other, the same load generator as run.py (zmqbench.c on libzmq).

    python3 proxy/benches/federation.py            # a few minutes
    python3 proxy/benches/federation.py --quick    # fewer messages, one repeat (smoke run)
    python3 proxy/benches/run.py --federation      # the same, from the main benchmark
    python3 proxy/benches/federation.py --callgrind  # instructions instead of CPU seconds

Two questions, each answered by a ratio of medians:

- **The cross hop**: CPU per task (both replicas' utime+stime from /proc, summed) when every task
  crosses from the producer's replica to the worker's, against every task staying on one
  replica (producer and worker on the same one; the other replica linked and idle). Goal: at
  most 1.5x.
- **Federated against unfederated**: the rate of a replica whose links are up (its peer idle)
  against a proxy without federation, for pub/sub 1x4 and a pipeline. Goal: at least 0.9x.

Targets alternate within each repeat, so a slow patch of a shared machine hits all of them.
On a loaded machine, `--callgrind` counts the instructions the replicas execute instead (valgrind,
counters zeroed when the load starts and dumped when it ends; pipelines only, 100,000 tasks):
slow, but the machine's load does not enter. Idle ticks (credit every 2 ms) run under valgrind's
slowdown too, so they weigh more there than at full speed: an upper bound for federation.
Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    Scenario,
    ROOT,
    bench_env,
    build,
    fmt_rate,
    free_port,
    proc_cpu_seconds,
    wait_for_ports,
)

PIPE = Scenario("pipeline 256 B", "PULL", "PUSH", "pipeline", [], 0)
PUBSUB = Scenario("pub/sub 1x4 64 B", "XSUB", "XPUB", "pubsub", [], 0, client_io_threads=2)


class Replica:
    """One zmq-proxy; federated with `peers` (their federation ports) when `fed` is given."""

    def __init__(self, proxy: Path, sc: Scenario, fed: int | None = None, peers=(), ident: str = "", grind: bool = False):
        self.front, self.back, self.http = free_port(), free_port(), free_port()
        self.grind = grind
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={CG_DIR}/cg.%p"] if grind else []
        cmd = wrap + [
            str(proxy),
            "--frontend-type", sc.front_type, "--frontend-bind", f"tcp://127.0.0.1:{self.front}",
            "--backend-type", sc.back_type, "--backend-bind", f"tcp://127.0.0.1:{self.back}",
            "--http-bind", f"127.0.0.1:{self.http}",
        ]  # fmt: skip
        if fed is not None:
            cmd += ["--federation-bind", f"tcp://127.0.0.1:{fed}", "--federation-id", ident]
            if peers:
                cmd += ["--federation-peers", ",".join(f"tcp://127.0.0.1:{p}" for p in peers)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=bench_env(sc, 1))
        wait_for_ports([self.front, self.back, self.http], self.proc, 60 if grind else 10)

    def linked(self, n: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/federation", timeout=2) as r:
                members = json.loads(r.read())["members"]
        except TimeoutError:
            return False  # a replica under valgrind on a loaded machine: asked again, bounded by pair()
        return sum(1 for m in members if m["out"] and m["in"]) >= n

    def cpu(self) -> float:
        if self.grind:
            return float(self.instructions())
        return proc_cpu_seconds(self.proc.pid)

    def instructions(self) -> int:
        """Instructions since the last call (callgrind dumps and zeroes its counters)."""
        before = set(CG_DIR.glob(f"cg.{self.proc.pid}.*"))
        subprocess.run(["callgrind_control", "--dump", str(self.proc.pid)], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = set(CG_DIR.glob(f"cg.{self.proc.pid}.*")) - before
            for f in new:
                for line in f.read_text().splitlines():
                    if line.startswith("totals:"):
                        return int(line.split()[1])
            time.sleep(0.1)  # polling for the dump, bounded
        raise RuntimeError("callgrind wrote no dump")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def pair(proxy: Path, sc: Scenario, grind: bool = False) -> list[Replica]:
    """Two replicas linked both ways (waits for /federation to say so, bounded)."""
    f0, f1 = free_port(), free_port()
    first = Replica(proxy, sc, f0, [f1], "bench-0", grind)
    try:
        rs = [first, Replica(proxy, sc, f1, [f0], "bench-1", grind)]
    except RuntimeError:
        first.stop()  # the second failed to start: the first is not left running
        raise
    deadline = time.monotonic() + 60
    while not all(r.linked(1) for r in rs):
        if time.monotonic() > deadline:
            for r in rs:
                r.stop()
            raise RuntimeError("the two replicas never linked")
        time.sleep(0.02)  # polling a condition with a deadline
    return rs


def run_bench(bench: Path, sc: Scenario, up: Replica, down: Replica, args: list[str], watched: list[Replica]) -> tuple[float, float]:
    """(rate, CPU seconds of the watched processes) for one zmqbench run."""
    cpu0 = sum(r.cpu() for r in watched)
    if any(r.grind for r in watched):
        cpu0 = 0  # that dump zeroed callgrind's counters: the next one counts the load alone
    out = subprocess.run(
        [str(bench), sc.kind, f">tcp://127.0.0.1:{up.front}", f">tcp://127.0.0.1:{down.back}", *args],
        capture_output=True, text=True, timeout=180, env=bench_env(sc, sc.client_io_threads),
    )  # fmt: skip
    if out.returncode != 0 and sc.kind != "pubsub":
        raise RuntimeError(f"{sc.name}: zmqbench failed: {out.stderr.strip()}")
    rate = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
    return rate, sum(r.cpu() for r in watched) - cpu0


def once(target: str, bench: Path, proxy: Path, n: int, ps: int, grind: bool = False) -> tuple[float, float]:
    """One run of one target: (rate, CPU seconds of every proxy process involved)."""
    pipe_args, pubsub_args = ["256", str(n)], ["4", str(ps), "64"]
    sc = PUBSUB if target.startswith("pubsub") else PIPE
    args = pubsub_args if sc is PUBSUB else pipe_args
    if target.endswith("unfederated"):
        rs = [Replica(proxy, sc, grind=grind)]
    else:
        rs = pair(proxy, sc, grind)
    try:
        up, down = rs[0], (rs[1] if target == "pipeline cross" else rs[0])
        return run_bench(bench, sc, up, down, args, rs)
    finally:
        for r in rs:
            r.stop()


TARGETS = [
    "pipeline local",  # producer and worker on replica 0, replica 1 linked and idle
    "pipeline cross",  # producer on replica 0, worker on replica 1: every task crosses
    "pipeline unfederated",
    "pubsub federated",  # publisher and subscribers on replica 0, replica 1 linked and idle
    "pubsub unfederated",
]


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


CG_DIR = ROOT / "target" / "callgrind"


def grind(bench: Path, proxy: Path, repeat: int) -> int:
    CG_DIR.mkdir(parents=True, exist_ok=True)
    n = 100_000
    targets = ["pipeline local", "pipeline cross", "pipeline unfederated"]
    per = {t: [] for t in targets}
    for _ in range(repeat):
        for t in targets:
            for f in CG_DIR.glob("cg.*"):
                f.unlink()
            # The first dump (inside run_bench, before the load) zeroes the counters.
            _, ins = once(t, bench, proxy, n, 0, grind=True)
            per[t].append(ins / n)
    med = {t: median(per[t]) for t in targets}
    for t in targets:
        print(f"{t}: {med[t]:.0f} instructions per task (runs: {', '.join(f'{x:.0f}' for x in per[t])})")
    print(f"cross / local: {med['pipeline cross'] / med['pipeline local']:.2f}x (goal <= 1.5x)")
    print(f"local federated / unfederated: {med['pipeline local'] / med['pipeline unfederated']:.2f}x")
    print(f"\nmedian of {repeat} run(s); every replica's instructions from the load's start to its end")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer messages, one repeat")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--zmq-proxy", type=Path, help="use this binary instead of building it")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind), pipelines only")
    opts = ap.parse_args(argv)
    bench, proxy = build(opts.zmq_proxy)
    if opts.callgrind:
        return grind(bench, proxy, 1 if opts.quick else max(1, opts.repeat))
    n = 100_000 if opts.quick else 1_000_000
    ps = 50_000 if opts.quick else 500_000
    repeat = 1 if opts.quick else max(1, opts.repeat)
    runs: dict[str, list[tuple[float, float]]] = {t: [] for t in TARGETS}
    for _ in range(repeat):
        for t in TARGETS:
            runs[t].append(once(t, bench, proxy, n, ps))
    rate = {t: median([r for r, _ in runs[t]]) for t in TARGETS}
    per_m = {t: median([c / ((ps if t.startswith("pubsub") else n) / 1e6) for _, c in runs[t]]) for t in TARGETS}
    rows = [
        ("cross hop CPU per task (pipeline 256 B)", f"{per_m['pipeline cross']:.2f} / {per_m['pipeline local']:.2f} s/M",
         per_m["pipeline cross"] / per_m["pipeline local"], "<= 1.5x"),
        ("pipeline 256 B rate, federated / not", f"{fmt_rate(rate['pipeline local'])} / {fmt_rate(rate['pipeline unfederated'])}",
         rate["pipeline local"] / rate["pipeline unfederated"], ">= 0.9x"),
        ("pub/sub 1x4 64 B rate, federated / not", f"{fmt_rate(rate['pubsub federated'])} / {fmt_rate(rate['pubsub unfederated'])}",
         rate["pubsub federated"] / rate["pubsub unfederated"], ">= 0.9x"),
        ("pipeline 256 B cross rate / local", f"{fmt_rate(rate['pipeline cross'])} / {fmt_rate(rate['pipeline local'])}",
         rate["pipeline cross"] / rate["pipeline local"], "-"),
    ]  # fmt: skip
    head = ("measure", "values", "ratio", "goal")
    cells = [head] + [(a, b, f"{c:.2f}x", d) for a, b, c, d in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    for i, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\nmedian of {repeat} run(s) per target; CPU is every replica's utime+stime, per million messages sent")
    if opts.json:
        opts.json.write_text(json.dumps({t: runs[t] for t in TARGETS}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
