"""Watch latency: a put in one process, the event in another process's watch.

Per backend, a watcher process opens ``watch(key)`` and a writer process puts
``count`` values, one every ``gap`` seconds; each value carries its number.
The latency of a change is from the moment the writer called ``put`` to the
moment the watcher's ``watch.get()`` returned its event, both on the
system's monotonic clock. On ``memory://`` both are threads of one process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import coord

from . import _plot
from ._endpoints import Endpoint, fresh_tag
from ._loop import wait_for
from ._procs import Channel
from ._result import Context, Goal, Result, Summary, Table, fmt, series

__all__ = ["peer_modules", "plot", "run", "summarize", "watcher", "writer"]

NAME = "watch"
TITLE = "Watch latency: put -> another process's watch event"
DEFAULTS: dict[str, Any] = {"count": 300, "gap": 0.02}
QUICK: dict[str, Any] = {"count": 10, "gap": 0.005, "parallel": True}
METRIC = "put -> event (ms)"
SQLITE_MEDIAN = 1.0  # issue 9: ≤ 1 ms median on the embedded store


def peer_modules(backends: list[str]) -> set[str]:
    return set()


def run(ctx: Context, result: Result) -> None:
    def one(endpoint: Endpoint) -> None:
        ctx.say(f"{endpoint.backend}: {ctx.params['count']} changes")
        url = endpoint.coord_url(fresh_tag("watch"))
        with ctx.group(endpoint) as group:
            watching = group.start(f"{__name__}:watcher", {"url": url, **ctx.params})
            group.expect("ready", 120, watching)
            writing = group.start(f"{__name__}:writer", {"url": url, **ctx.params})
            group.expect("ready", 120, writing)
            writing.send("go")
            sent = group.expect("result", 120 + ctx.params["count"] * ctx.params["gap"], writing)[1]["sent"]
            received = group.expect("result", 60, watching)[1]["received"]
        latencies = [(received[n] - sent[n]) * 1e3 for n in range(len(sent)) if received[n] is not None]
        missed = sum(1 for n in range(len(sent)) if received[n] is None)
        result.add(endpoint.backend, "coord watch", METRIC, "ms", latencies, peer=False, missed=missed,
                   threads=not endpoint.shared)  # fmt: skip

    ctx.each(ctx.endpoints, one)


def watcher(args: dict[str, Any], channel: Channel) -> None:
    store = coord.connect(args["url"])
    received: list[float | None] = [None] * args["count"]
    with store.watch("key") as watch:
        channel.send("ready")
        deadline = time.monotonic() + 60 + args["count"] * args["gap"] * 2
        while None in received and time.monotonic() < deadline:
            event = watch.get(timeout=1)
            if event is not None and event.value is not None:
                received[int(event.value)] = time.monotonic()
    store.close()
    channel.send("result", received=received)


def writer(args: dict[str, Any], channel: Channel) -> None:
    store = coord.connect(args["url"])
    channel.send("ready")
    wait_for(channel, "go")
    sent = []
    for n in range(args["count"]):
        time.sleep(args["gap"])
        sent.append(time.monotonic())
        store.put("key", str(n).encode())
    store.close()
    channel.send("result", sent=sent)


def summarize(data: dict[str, Any]) -> Summary:
    rows, goals = [], []
    for s in series(data, metric=METRIC):
        where = " (threads)" if s.get("threads") else ""
        rows.append(
            [s["backend"] + where, fmt(s["median"]), fmt(s["p99"]), fmt(s["max"]), str(s["n"]), str(s["missed"])]
        )
        if s["backend"] == "sqlite":
            goals.append(Goal("sqlite", "a change reaches another process's watch in ≤ 1 ms median",
                              f"{fmt(s['median'])} ms", s["median"] <= SQLITE_MEDIAN))  # fmt: skip
    table = Table(
        TITLE,
        ["backend", "median (ms)", "p99 (ms)", "max (ms)", "events", "missed"],
        rows,
        "From the writer's put() call to the watcher's event; a missed event fails the smoke test.",
    )
    return Summary([table], goals)


def plot(data: dict[str, Any], path: Path) -> None:
    bars = {s["backend"]: {"coord watch": (s["median"], s["min"], s["p99"])} for s in series(data, metric=METRIC)}
    _plot.bars(
        path,
        "Watch latency: put -> event in another process",
        "ms (log)",
        bars,
        log=True,
        hline=(SQLITE_MEDIAN, "issue 9 target on sqlite: 1 ms median"),
        note="bars: median; whiskers: fastest and p99",
    )
