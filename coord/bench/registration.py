"""Registration heartbeat cost: 1,000 registrations in one process, steady CPU as % of one core.

One worker process per backend registers ``count`` instances
(``coord.register``, ttl ``ttl``) on one Store, waits ``settle`` seconds,
then samples its own CPU time (``time.process_time``: every thread) against
wall time every ``interval`` over ``seconds``: the cost of keeping them
alive. It also reports how fast it registered them and the server's requests
per second over the window (the keepalives).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import coord

from . import _plot
from ._endpoints import Endpoint, fresh_tag
from ._procs import Channel, run_one
from ._result import Context, Goal, Result, Summary, Table, fmt, series
from ._servers import request_count

__all__ = ["peer_modules", "plot", "run", "summarize", "worker"]

NAME = "registration"
TITLE = "Registration heartbeat cost"
DEFAULTS: dict[str, Any] = {"count": 1000, "ttl": 10.0, "settle": 2.0, "seconds": 10.0, "interval": 1.0}
QUICK: dict[str, Any] = {"count": 20, "ttl": 5.0, "settle": 0.2, "seconds": 1.0, "interval": 0.25, "parallel": True}
METRIC = "CPU % of a core"
LIMIT = 2.0  # issue 9: < 2 % of a core on every backend


def peer_modules(backends: list[str]) -> set[str]:
    return set()


def run(ctx: Context, result: Result) -> None:
    def one(endpoint: Endpoint) -> None:
        ctx.say(f"{endpoint.backend}: {ctx.params['count']} registrations")
        args = {"endpoint": asdict(endpoint), "url": endpoint.coord_url(fresh_tag("registration")), **ctx.params}
        budget = 300 + ctx.params["seconds"] + ctx.params["count"] * 0.1
        reply = run_one(ctx.log, f"{__name__}:worker", args, budget)
        result.add(endpoint.backend, "coord register", METRIC, "%", reply.pop("cpu"), peer=False, **reply)

    ctx.each(ctx.endpoints, one)


def worker(args: dict[str, Any], channel: Channel) -> None:
    endpoint = Endpoint(**args["endpoint"])
    store = coord.connect(args["url"])
    began = time.perf_counter()
    registrations = [
        coord.register("bench", address=f"10.0.0.1:{n}", ttl=args["ttl"], store=store) for n in range(args["count"])
    ]
    registered = args["count"] / (time.perf_counter() - began)
    time.sleep(args["settle"])
    requests_before = request_count(endpoint)
    samples = []
    wall, cpu = time.monotonic(), time.process_time()
    stop = wall + args["seconds"]
    while wall < stop:
        time.sleep(args["interval"])
        now, used = time.monotonic(), time.process_time()
        samples.append(100 * (used - cpu) / (now - wall))
        wall, cpu = now, used
    requests_after = request_count(endpoint)
    alive = sum(1 for registration in registrations if registration.registered)
    window = args["seconds"]
    requests = (
        None if requests_before is None or requests_after is None else (requests_after - requests_before) / window
    )
    store.close()
    channel.send("result", cpu=samples, registrations_per_s=registered, alive=alive, server_requests_per_s=requests)


def summarize(data: dict[str, Any]) -> Summary:
    p = data["parameters"]
    rows, goals = [], []
    for s in series(data, metric=METRIC):
        mean = statistics.fmean(s["samples"])
        rows.append([s["backend"], fmt(s["median"]), fmt(mean), fmt(s["p99"]), fmt(s["registrations_per_s"]),
                     fmt(s["server_requests_per_s"]), f"{s['alive']}/{p['count']}"])  # fmt: skip
        goals.append(Goal(s["backend"], f"{p['count']:,} registrations at ttl {p['ttl']:g} s: < 2 % of a core",
                          f"{fmt(mean)} %", mean < LIMIT))  # fmt: skip
    table = Table(
        f"{p['count']:,} registrations in one process, ttl {p['ttl']:g} s: steady CPU over {p['seconds']:g} s",
        [
            "backend",
            "CPU % median",
            "mean",
            f"p99 ({p['interval']:g} s samples)",
            "registered /s",
            "server requests /s",
            "still registered",
        ],
        rows,
        "CPU: the process's CPU time (all threads) over wall time, in % of one core; the target is judged on the mean.",
    )
    return Summary([table], goals)


def plot(data: dict[str, Any], path: Path) -> None:
    p = data["parameters"]
    bars = {s["backend"]: {"coord register": (statistics.fmean(s["samples"]), s["min"], s["max"])}
            for s in series(data, metric=METRIC)}  # fmt: skip
    _plot.bars(
        path,
        f"{p['count']:,} registrations, ttl {p['ttl']:g} s: steady CPU",
        "% of one core",
        bars,
        hline=(LIMIT, "issue 9 target: < 2 %"),
        note=f"bars: mean over the window (renewals come in bursts); whiskers: lowest and highest {p['interval']:g} s sample",
    )
