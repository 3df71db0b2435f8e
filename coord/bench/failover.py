"""Failover: how long after its leader goes does an election have a new one?

The leader goes in one of four ways (``modes``):

- ``SIGKILL``: a crash; the successor must wait for the lease to expire.
- ``SIGTERM``: the process is terminated and the application installed no
  handler of its own (the default action, unless coord installs one).
- ``exit``: the interpreter exits normally without ``resign()``.
- ``resign``: the leader steps down.

``candidates`` processes campaign in one election (coord's on each backend
that processes can share; with ``--peers``, kazoo's and tooz's). Each trial
waits a random part of the renewal period (ttl/3), sends the leader on its
way, and times on the system's monotonic clock from the signal (or the
moment the leader began to exit or resign) until a successor's campaign
returned. Replacements keep ``candidates`` in the race. For coord, the gap
beyond the lease is the time from the dead leader's lease deadline (as its
client last knew it, never later than the server's) to the successor.
"""

from __future__ import annotations

import random
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from . import _plot
from ._elections import ELECTION_PEERS, election_subjects, open_candidate
from ._endpoints import Endpoint, fresh_tag
from ._procs import Channel, Group, Worker
from ._result import Context, Goal, Result, Summary, Table, fmt, series
from ._stats import percentile

__all__ = ["candidate", "peer_modules", "plot", "run", "summarize"]

NAME = "failover"
TITLE = "Leader failover"
MODES = ("SIGKILL", "SIGTERM", "exit", "resign")
DEFAULTS: dict[str, Any] = {"modes": list(MODES), "trials": 5, "ttl": 3.0, "candidates": 3, "poll": 0.01,
                            "settle": 0.3, "zookeeper_tick": 0.5}  # fmt: skip
QUICK: dict[str, Any] = {"modes": list(MODES), "trials": 1, "ttl": 1.0, "candidates": 2, "poll": 0.01,
                         "settle": 0.05, "zookeeper_tick": 0.5, "parallel": True}  # fmt: skip


def peer_modules(backends: list[str]) -> set[str]:
    return {module for backend in backends for module in ELECTION_PEERS.get(backend, {}).values()}


def run(ctx: Context, result: Result) -> None:
    p = ctx.params
    items = []
    for endpoint in ctx.endpoints:
        if not endpoint.shared:
            result.skip(endpoint.backend, "coord Election", "failover kills processes; memory:// lives in one")
            continue
        name = fresh_tag("failover")
        items += [
            (endpoint, spec)
            for spec in election_subjects(endpoint, name, ttl=p["ttl"], peers=ctx.peers, poll=p["poll"])
        ]

    def one(item: tuple[Endpoint, dict[str, Any]]) -> None:
        endpoint, spec = item
        ctx.say(f"{endpoint.backend}: {spec['label']}")
        with ctx.group(endpoint) as group:
            times, beyond = _trials(ctx, group, spec)
        for mode in p["modes"]:
            extra = {"beyond_lease_ms": beyond[mode]} if spec["impl"] == "coord" and mode != "resign" else {}
            result.add(endpoint.backend, spec["label"], mode, "ms", times[mode], peer=spec["impl"] != "coord",
                       ttl=p["ttl"], **extra)  # fmt: skip

    ctx.each(items, one)


def _trials(ctx: Context, group: Group, spec: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    p = ctx.params
    times: dict[str, list[float]] = {mode: [] for mode in p["modes"]}
    beyond: dict[str, list[float]] = {mode: [] for mode in p["modes"]}
    alive: list[Worker] = []
    leader: Worker | None = None
    for trial in range(p["trials"] * len(p["modes"])):
        mode = p["modes"][trial % len(p["modes"])]
        while len(alive) < p["candidates"]:
            alive.append(group.start(f"{__name__}:candidate", {"spec": spec}))
            group.expect("ready", 120, alive[-1])
        time.sleep(p["settle"])  # let the newcomers queue
        if leader is None:
            leader = group.expect("leader", p["ttl"] + 60)[0]
        time.sleep(random.uniform(0, p["ttl"] / 3))  # anywhere in the renewal period
        since = _send_off(group, leader, mode)
        alive.remove(leader)
        successor, message = group.expect("leader", p["ttl"] + 60)
        times[mode].append((message["at"] - since) * 1e3)
        deadlines = [m["deadline"] for m in group.taken("deadline", leader) if m["at"] <= since]
        if deadlines and mode != "resign":
            beyond[mode].append((message["at"] - deadlines[-1]) * 1e3)
        leader = successor
    for worker in alive:
        worker.ended = True
        if worker.process is not None:
            worker.process.kill()
    return times, beyond


def _send_off(group: Group, leader: Worker, mode: str) -> float:
    """Make ``leader`` go by ``mode``; the moment it went."""
    if mode in ("SIGKILL", "SIGTERM"):
        since = time.monotonic()
        leader.signal(signal.SIGKILL if mode == "SIGKILL" else signal.SIGTERM)
        return since
    leader.ended = True
    leader.send(mode)
    at: float = group.expect("going", 30, leader)[1]["at"]
    return at


def candidate(args: dict[str, Any], channel: Channel) -> None:
    """Campaign; once leading report the lease's deadline as it moves; on ``exit`` or ``resign``, go."""
    handle = open_candidate(args["spec"])
    channel.send("ready")
    handle.campaign()
    channel.send("leader", at=time.monotonic())
    threading.Thread(target=_report_deadlines, args=(handle, channel), daemon=True).start()
    try:
        command = wait_for_any(channel, ("exit", "resign"))
    except EOFError:
        return
    channel.send("going", at=time.monotonic())
    if command == "resign":
        handle.resign()
    # "exit": return without resigning; the interpreter exits normally.


def wait_for_any(channel: Channel, kinds: tuple[str, ...]) -> str:
    while True:
        message = channel.recv()
        if message is not None and message["kind"] in kinds:
            kind: str = message["kind"]
            return kind


def _report_deadlines(handle: Any, channel: Channel) -> None:
    last = None
    while True:
        deadline = handle.deadline()
        if deadline is None:
            return
        if deadline != last:
            channel.send("deadline", deadline=deadline, at=time.monotonic())
            last = deadline
        time.sleep(0.002)


def summarize(data: dict[str, Any]) -> Summary:
    p = data["parameters"]
    rows, goals = [], []
    for backend in dict.fromkeys(s["backend"] for s in data["series"]):
        for subject in dict.fromkeys(s["subject"] for s in series(data, backend=backend)):
            found = {s["metric"]: s for s in series(data, backend=backend, subject=subject)}
            row = [backend, subject]
            for mode in p["modes"]:
                s = found.get(mode)
                row.append("-" if s is None else f"{fmt(s['median'])} / {fmt(s['p99'])}")
            kill = found.get("SIGKILL", {}).get("beyond_lease_ms")
            row.append(f"{fmt(statistics.median(kill))} / {fmt(percentile(kill, 99))}" if kill else "-")
            rows.append(row)
            if subject == "coord Election":
                goals += _goals(backend, found, p)
    table = Table(
        f"Failover: leader gone -> successor leads (ms, median / p99; ttl {p['ttl']:g} s, {p['trials']} trials)",
        ["backend", "subject", *p["modes"], "SIGKILL: beyond the lease"],
        rows,
        f"tooz candidates poll run_watchers() every {p['poll'] * 1e3:g} ms. 'Beyond the lease': from the dead "
        "leader's lease deadline, as its client last knew it, to the successor.",
    )
    return Summary([table], goals)


def _goals(backend: str, found: dict[str, dict[str, Any]], p: dict[str, Any]) -> list[Goal]:
    goals = []
    for mode in ("SIGTERM", "exit"):
        if mode in found:
            worst = found[mode]["p99"]
            goals.append(Goal(backend, f"{mode} of a leader -> successor ≤ 100 ms", f"{fmt(worst)} ms", worst <= 100))
    kill = found.get("SIGKILL")
    if kill is not None:
        if backend == "sqlite":
            goals.append(
                Goal(backend, "SIGKILL -> successor ≤ 50 ms in all", f"{fmt(kill['p99'])} ms", kill["p99"] <= 50)
            )
        elif kill.get("beyond_lease_ms"):
            limit = p["zookeeper_tick"] * 1e3 if backend == "zookeeper" else 100.0
            worst = percentile(kill["beyond_lease_ms"], 99)
            text = f"SIGKILL -> successor, beyond the lease, p99 ≤ {limit:g} ms"
            goals.append(Goal(backend, text, f"{fmt(worst)} ms", worst <= limit))
    return goals


def plot(data: dict[str, Any], path: Path) -> None:
    bars: dict[str, dict[str, tuple[float, float, float]]] = {}
    for s in data["series"]:
        if s["median"] is not None:
            label = f"{s['subject']} ({s['backend']})"
            bars.setdefault(s["metric"], {})[label] = (s["median"], s["min"], s["max"])
    _plot.bars(
        path,
        f"Leader failover: leader gone -> successor leads (ttl {data['parameters']['ttl']:g} s)",
        "ms (log)",
        bars,
        log=True,
        note="bars: median; whiskers: fastest and slowest trial",
    )
