"""Lock throughput, contended: ``procs`` processes (8 by default) hammering one lock; acquisitions per second.

For each backend and subject (coord's Lock, then each peer's), in rounds
that rotate the subjects' order: start the processes, wait until each is
connected, then let all take and give back the lock for ``seconds`` from the
same moment (``_loop``). Every acquisition is timed, so the run also checks
mutual exclusion (no two holdings overlap) and shows fairness: how often the
lock went to another process, the longest run by one process, and Jain's
index over the processes' shares. On ``memory://`` the contenders are
threads of one process, each with a Store of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import _plot
from ._compare import bar_data, minimum_goal, peer_table
from ._endpoints import Endpoint, fresh_tag
from ._locks import lock_subjects, open_lock, peer_modules
from ._loop import analyse, contend, wait_for
from ._procs import Channel
from ._result import Context, Result, Summary, Table, fmt, series

__all__ = ["peer_modules", "plot", "run", "summarize", "worker"]

NAME = "lock_contended"
TITLE = "Lock throughput, contended (processes hammering one lock)"
DEFAULTS: dict[str, Any] = {"procs": 8, "rounds": 3, "seconds": 3.0, "ttl": 10.0, "settle": 0.5}
QUICK: dict[str, Any] = {"procs": 2, "rounds": 1, "seconds": 0.3, "ttl": 10.0, "settle": 0.1, "parallel": True}
METRIC = "acquisitions/s"

#: Issue 9: ≥ 0.8x kazoo on ZooKeeper, ≥ 0.8x tooz on Redis; sqlite ≥ 3,000 handoffs/s.
FACTORS = {"kazoo Lock": 0.8, "tooz redis": 0.8}
SQLITE_MINIMUM = 3000.0


def run(ctx: Context, result: Result) -> None:
    ctx.each(ctx.endpoints, lambda endpoint: _measure(ctx, result, endpoint))


def _measure(ctx: Context, result: Result, endpoint: Endpoint) -> None:
    p = ctx.params
    subjects = lock_subjects(endpoint, fresh_tag("contended"), ttl=p["ttl"], peers=ctx.peers)
    rounds: list[list[dict[str, Any]]] = [[] for _ in subjects]
    for round_ in range(p["rounds"]):
        for k in range(len(subjects)):
            n = (k + round_) % len(subjects)
            ctx.say(f"{endpoint.backend}: {subjects[n]['label']}, round {round_ + 1}")
            rounds[n].append(_window(ctx, endpoint, subjects[n]))
    for spec, measured in zip(subjects, rounds, strict=True):
        result.add(
            endpoint.backend,
            spec["label"],
            METRIC,
            "1/s",
            [m["rate"] for m in measured],
            peer=spec["impl"] != "coord",
            contenders=p["procs"],
            threads=not endpoint.shared,
            overlaps=sum(m["overlaps"] for m in measured),
            switch_fraction=min(m["switch_fraction"] for m in measured),
            longest_streak=max(m["longest_streak"] for m in measured),
            fairness=min(m["fairness"] for m in measured),
        )


def _window(ctx: Context, endpoint: Endpoint, spec: dict[str, Any]) -> dict[str, Any]:
    """``procs`` fresh contenders on ``spec``'s lock for one window of ``seconds``."""
    p = ctx.params
    with ctx.group(endpoint) as group:
        for _ in range(p["procs"]):
            group.start(f"{__name__}:worker", {"spec": spec})
        group.gather("ready", 120)
        start = time.monotonic() + p["settle"]
        stop = start + p["seconds"]
        for worker in group.workers:
            worker.send("go", start=start, stop=stop)
        replies = group.gather("result", p["seconds"] + p["settle"] + 120)
    return analyse([reply["intervals"] for reply in replies], start, stop)


def worker(args: dict[str, Any], channel: Channel) -> None:
    handle = open_lock(args["spec"])
    channel.send("ready")
    go = wait_for(channel, "go")
    intervals = contend(handle, go["start"], go["stop"])
    handle.close()
    channel.send("result", intervals=intervals)


def summarize(data: dict[str, Any]) -> Summary:
    table, goals = peer_table(
        data, METRIC, title=TITLE, unit="acquisitions/s", factors=FACTORS, goal="contended acquisitions/s"
    )
    sqlite = minimum_goal(data, METRIC, "sqlite", SQLITE_MINIMUM, "8 contending processes ≥ 3,000 handoffs/s")
    goals += [sqlite] if sqlite else []
    fairness = Table(
        "Mutual exclusion and fairness under contention",
        ["backend", "subject", "acquisitions/s", "overlapping holdings", "to another process", "longest run", "Jain"],
        [
            [
                s["backend"] + (" (threads)" if s.get("threads") else ""),
                s["subject"],
                fmt(s["median"]),
                str(s["overlaps"]),
                f"{s['switch_fraction']:.0%}",
                str(s["longest_streak"]),
                f"{s['fairness']:.2f}",
            ]
            for s in series(data, metric=METRIC)
        ],
        "Overlapping holdings must be 0. A first-come first-served lock whose holders queue again at once hands "
        "over to another process (nearly) every time; the worst round is shown for each column.",
    )
    return Summary([table, fairness], goals)


def plot(data: dict[str, Any], path: Path) -> None:
    procs = data["parameters"]["procs"]
    _plot.bars(
        path,
        f"Contended lock: {procs} processes, acquisitions per second",
        "acquisitions / s (log)",
        bar_data(data, METRIC),
        log=True,
        note="bars: median of the rounds; whiskers: slowest and fastest round; memory: threads of one process",
    )
