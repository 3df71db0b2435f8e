"""Lock throughput, uncontended: acquire+release per second in one process, coord next to its peers.

Each backend gets one worker process that opens every subject (coord's Lock
and, with ``--peers``, each peer's lock on the same server), warms each up,
then runs ``rounds`` rounds in which every subject in turn takes and gives
back its lock for ``seconds``. Turns rotate from round to round, so load
from outside falls on all subjects alike; a series' samples are its rates,
one per round. Per acquire+release it also counts coord's Store operations
and the server's own request counter (``_servers``): the round trips.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import _plot
from ._compare import bar_data, minimum_goal, peer_table
from ._counting import OperationCounter
from ._endpoints import Endpoint, fresh_tag
from ._locks import lock_subjects, open_lock, peer_modules
from ._procs import Channel, run_one
from ._result import Context, Result, Summary, Table, fmt, series
from ._servers import request_count
from ._stats import percentile

NAME = "lock_uncontended"
TITLE = "Lock throughput, uncontended (one process)"
DEFAULTS: dict[str, Any] = {"rounds": 5, "seconds": 2.0, "ttl": 10.0, "warmup": 20}
QUICK: dict[str, Any] = {"rounds": 1, "seconds": 0.2, "ttl": 10.0, "warmup": 2, "parallel": True}
METRIC = "acquire+release/s"

#: Issue 9: coord ≥ 0.8x the backend's raw client lock, ≥ tooz; on sqlite ≥ 5,000/s.
FACTORS = {"redis-py Lock": 0.8, "kazoo Lock": 0.8, "pyetcd lock": 0.8, "tooz redis": 1.0, "tooz zookeeper": 1.0}
SQLITE_MINIMUM = 5000.0


__all__ = ["peer_modules", "plot", "run", "summarize", "worker"]


def run(ctx: Context, result: Result) -> None:
    p = ctx.params

    def one(endpoint: Endpoint) -> None:
        subjects = lock_subjects(endpoint, fresh_tag("lock"), ttl=p["ttl"], peers=ctx.peers)
        ctx.say(f"{endpoint.backend}: {', '.join(s['label'] for s in subjects)}")
        args = {"endpoint": asdict(endpoint), "subjects": subjects, **p}
        budget = 120 + len(subjects) * p["rounds"] * p["seconds"] * 2
        reply = run_one(ctx.log, f"{__name__}:worker", args, budget)
        for spec, measured in zip(subjects, reply["subjects"], strict=True):
            rates = measured.pop("rates")
            result.add(endpoint.backend, spec["label"], METRIC, "1/s", rates, peer=spec["impl"] != "coord", **measured)

    ctx.each(ctx.endpoints, one)


def worker(args: dict[str, Any], channel: Channel) -> None:
    endpoint = Endpoint(**args["endpoint"])
    subjects = args["subjects"]
    counters = [OperationCounter() if spec["impl"] == "coord" else None for spec in subjects]
    handles = [open_lock(spec, counter) for spec, counter in zip(subjects, counters, strict=True)]
    for handle in handles:
        for _ in range(args["warmup"]):
            handle.acquire(None)
            handle.release()
    rates: list[list[float]] = [[] for _ in subjects]
    latencies: list[list[float]] = [[] for _ in subjects]
    ops, requests, counts = [0] * len(subjects), [0] * len(subjects), [0] * len(subjects)
    for round_ in range(args["rounds"]):
        for k in range(len(subjects)):
            n = (k + round_) % len(subjects)
            counter = counters[n]
            before_ops = sum(counter.snapshot().values()) if counter else 0
            before = request_count(endpoint)
            count, rate = _burst(handles[n], args["seconds"], latencies[n])
            after = request_count(endpoint)
            rates[n].append(rate)
            counts[n] += count
            ops[n] += (sum(counter.snapshot().values()) - before_ops) if counter else 0
            requests[n] += (after - before) if after is not None and before is not None else 0
    for handle in handles:
        handle.close()
    measured = []
    for n, spec in enumerate(subjects):
        lat = latencies[n]
        measured.append(
            {
                "rates": rates[n],
                "acquisitions": counts[n],
                "latency_ms": {"median": percentile(lat, 50) * 1e3, "p99": percentile(lat, 99) * 1e3},
                "store_ops_per_acquisition": ops[n] / counts[n] if spec["impl"] == "coord" else None,
                "server_requests_per_acquisition": requests[n] / counts[n] if endpoint.backend in _SERVERS else None,
            }
        )
    channel.send("result", subjects=measured)


_SERVERS = ("redis", "zookeeper", "etcd")


def _burst(handle: Any, seconds: float, latencies: list[float]) -> tuple[int, float]:
    """Acquire and release for ``seconds``; the count and the rate per second."""
    count = 0
    start = now = time.perf_counter()
    end = start + seconds
    while now < end:
        handle.acquire(None)
        handle.release()
        then, now = now, time.perf_counter()
        latencies.append(now - then)
        count += 1
    return count, count / (now - start)


def summarize(data: dict[str, Any]) -> Summary:
    table, goals = peer_table(
        data, METRIC, title=TITLE, unit="acquire+release/s", factors=FACTORS, goal="uncontended acquire+release"
    )
    sqlite = minimum_goal(data, METRIC, "sqlite", SQLITE_MINIMUM, "uncontended acquire+release ≥ 5,000 /s")
    goals += [sqlite] if sqlite else []
    trips = Table(
        "Round trips and latency per uncontended acquire+release",
        ["backend", "subject", "coord Store ops", "server requests", "latency median (ms)", "p99 (ms)", "spread"],
        [
            [
                s["backend"],
                s["subject"],
                fmt(s.get("store_ops_per_acquisition")),
                fmt(s.get("server_requests_per_acquisition")),
                fmt(s["latency_ms"]["median"]),
                fmt(s["latency_ms"]["p99"]),
                f"{s['spread']:.0%}",
            ]
            for s in series(data, metric=METRIC)
        ],
        "Server requests: the server's own counter over the windows (Redis commands, ZooKeeper packets, etcd gRPC "
        "messages), per acquisition. Spread: interquartile range of the per-round rates over their median.",
    )
    return Summary([table, trips], goals)


def plot(data: dict[str, Any], path: Path) -> None:
    _plot.bars(
        path,
        "Uncontended lock: acquire+release per second (one process)",
        "acquire+release / s (log)",
        bar_data(data, METRIC),
        log=True,
        note="bars: median of the rounds; whiskers: slowest and fastest round",
    )
