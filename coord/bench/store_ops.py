"""Store operations: the latency of each, per backend, next to the backend client's own round trip.

One worker process per backend times every operation ``count`` times, in
``rounds`` interleaved rounds, and the raw client's put and get on the same
server (redis-py ``SET``/``GET``, pyetcd ``put``/``get``, kazoo
``set``/``get``): the round-trip floor under coord's put and get. The raw
clients are measured with ``--peers``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import coord

from . import _plot
from ._compare import bar_data, peer_table
from ._endpoints import Endpoint, fresh_tag
from ._procs import Channel, run_one
from ._result import Context, Result, Summary, Table, fmt, series

__all__ = ["peer_modules", "plot", "run", "summarize", "worker"]

NAME = "store_ops"
TITLE = "Store operations: latency next to the client's round trip"
DEFAULTS: dict[str, Any] = {"count": 500, "rounds": 5}
QUICK: dict[str, Any] = {"count": 20, "rounds": 2, "parallel": True}
RAW = {"redis": ("redis-py", "redis"), "etcd": ("pyetcd", "pyetcd"), "zookeeper": ("kazoo", "kazoo")}
OPERATIONS = ("put", "get", "exists", "atomic_put create", "atomic_put CAS", "list 100 keys", "lease+revoke")


def peer_modules(backends: list[str]) -> set[str]:
    return {RAW[backend][1] for backend in backends if backend in RAW}


def run(ctx: Context, result: Result) -> None:
    def one(endpoint: Endpoint) -> None:
        ctx.say(f"{endpoint.backend}: {ctx.params['count']} of each")
        raw = RAW.get(endpoint.backend, (None,))[0] if ctx.peers else None
        args = {"endpoint": asdict(endpoint), "url": endpoint.coord_url(fresh_tag("ops")), "raw": raw, **ctx.params}
        reply = run_one(ctx.log, f"{__name__}:worker", args, 300 + ctx.params["count"] * 0.5)
        for name, samples in reply["coord"].items():
            result.add(endpoint.backend, "coord", name, "µs", samples, peer=False)
        for name, samples in reply["raw"].items():
            result.add(endpoint.backend, raw or "?", name, "µs", samples, peer=True)

    ctx.each(ctx.endpoints, one)


def worker(args: dict[str, Any], channel: Channel) -> None:
    store = coord.connect(args["url"])
    for n in range(100):
        store.put(f"l/{n:03}", b"v")
    store.put("k", b"v")
    state = {"pair": store.get("k")}
    created = iter(range(10**9))

    def cas(_: int) -> None:
        state["pair"] = store.atomic_put("k", b"v", state["pair"])

    def lease(_: int) -> None:
        store.lease(10).revoke()

    actions: dict[str, Callable[[int], object]] = {
        "put": lambda _: store.put("k2", b"v"),
        "get": lambda _: store.get("k"),
        "exists": lambda _: store.exists("k"),
        "atomic_put create": lambda _: store.atomic_put(f"c/{next(created)}", b"v", None),
        "atomic_put CAS": cas,
        "list 100 keys": lambda _: store.list("l"),
        "lease+revoke": lease,
    }
    raw, close_raw = _raw(Endpoint(**args["endpoint"]), args["raw"])
    measured = _interleaved({**actions, **raw}, args["count"], args["rounds"])
    close_raw()
    store.delete_tree("c")
    store.delete_tree("l")
    store.close()
    channel.send(
        "result",
        coord={name: measured[name] for name in actions},
        raw={name.removeprefix("client "): measured[name] for name in raw},
    )


def _interleaved(actions: dict[str, Callable[[int], object]], count: int, rounds: int) -> dict[str, list[float]]:
    """Each action ``count`` times in all, in ``rounds`` rounds that take the actions in turn; µs each."""
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for round_ in range(rounds):
        for name, action in actions.items():
            times = samples[name]
            for i in range(round_ * count // rounds, (round_ + 1) * count // rounds):
                start = time.perf_counter()
                action(i)
                times.append((time.perf_counter() - start) * 1e6)
    return samples


def _raw(endpoint: Endpoint, raw: str | None) -> tuple[dict[str, Callable[[int], object]], Callable[[], None]]:
    """The raw client's put and get (as ``client put``/``client get``), and how to disconnect it."""
    key = f"coord-bench-raw-{uuid.uuid4().hex[:8]}"
    if raw == "redis-py":
        import redis

        r = redis.Redis(host=endpoint.host, port=endpoint.port or 6379)
        return {"client put": lambda _: r.set(key, b"v"), "client get": lambda _: r.get(key)}, r.close
    if raw == "pyetcd":
        import pyetcd

        etcd = pyetcd.client(host=endpoint.host, port=endpoint.port or 2379)
        return {"client put": lambda _: etcd.put(key, b"v"), "client get": lambda _: etcd.get(key)}, etcd.close
    if raw == "kazoo":
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=endpoint.hosts)
        zk.start()
        zk.create(f"/{key}", b"v")

        def stop() -> None:
            zk.delete(f"/{key}")
            zk.stop()
            zk.close()

        return {"client put": lambda _: zk.set(f"/{key}", b"v"), "client get": lambda _: zk.get(f"/{key}")}, stop
    return {}, lambda: None


def summarize(data: dict[str, Any]) -> Summary:
    tables = []
    for op in ("put", "get"):
        table, _ = peer_table(data, op, title=f"{op}: coord next to the raw client", unit="median µs", factors={},
                              higher_is_better=False)  # fmt: skip
        table.note = "coord / client > 1: coord is slower than one round trip of the client library."
        tables.append(table)
    backends = list(dict.fromkeys(s["backend"] for s in data["series"]))
    rows = []
    for op in OPERATIONS:
        row = [op]
        for backend in backends:
            found = series(data, backend=backend, metric=op, peer=False)
            row.append(f"{fmt(found[0]['median'])} / {fmt(found[0]['p99'])}" if found else "-")
        rows.append(row)
    tables.append(Table("Every operation, median / p99 (µs)", ["operation", *backends], rows))
    return Summary(tables, [])


def plot(data: dict[str, Any], path: Path) -> None:
    bars = {}
    for op in ("put", "get"):
        for backend, subjects in bar_data(data, op).items():
            bars[f"{op}\\n{backend}"] = {("coord" if s == "coord" else "raw client"): v for s, v in subjects.items()}
    _plot.bars(path, "put and get: coord next to the raw client's round trip", "µs (log)", bars, log=True,
               note="bars: median; whiskers: fastest and slowest call")  # fmt: skip
