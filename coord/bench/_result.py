"""What a benchmark produces: ``Context`` (what to measure, and how hard), ``Result`` (its JSON), ``Summary``.

Every result holds the machine, the versions, the parameters, the load
average before and after, each series' raw samples with their summary, and
what was left out and why (nothing is skipped silently). A benchmark's
``summarize(data)`` turns the JSON back into tables and targets, so the
report can be regenerated from the JSON alone.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ._endpoints import Endpoint
from ._machine import load, machine, versions
from ._procs import Group
from ._stats import rounded, summary

T = TypeVar("T")

__all__ = ["Context", "Goal", "Result", "Summary", "Table", "fmt", "ratio", "series"]


@dataclass
class Context:
    """One benchmark's run: the stores, whether peers run too, and its parameters."""

    name: str
    endpoints: list[Endpoint]
    peers: bool
    quick: bool
    out: Path
    params: dict[str, Any]
    verbose: bool = True

    @property
    def log(self) -> Path:
        return self.out / "logs" / f"{self.name}.log"

    def group(self, endpoint: Endpoint) -> Group:
        """Workers for ``endpoint``: processes, or threads of this process for ``memory://``."""
        return Group(self.log, threads=not endpoint.shared)

    def each(self, items: Sequence[T], fn: Callable[[T], None]) -> None:
        """``fn(item)`` for each item: in turn, or all at once with the parameter ``parallel`` (quick runs).

        Workers are processes, so concurrent items overlap their waits (a
        quick failover waits out several ttls) at the price of measuring
        nothing worth comparing: only ``--quick`` runs set ``parallel``.
        """
        if not self.params.get("parallel"):
            for item in items:
                fn(item)
            return
        errors: list[BaseException] = []

        def guarded(item: T) -> None:
            try:
                fn(item)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(item,)) for item in items]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {self.name}: {message}", file=sys.stderr, flush=True)


class Result:
    """The JSON of one benchmark's run, filled in as it goes."""

    def __init__(self, ctx: Context, title: str) -> None:
        self.ctx = ctx
        self.data: dict[str, Any] = {
            "benchmark": ctx.name,
            "title": title,
            "quick": ctx.quick,
            "peers": ctx.peers,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "parameters": ctx.params,
            "urls": [endpoint.url for endpoint in ctx.endpoints],
            "machine": machine(),
            "versions": versions(ctx.endpoints),
            "load": {"before": load()},
            "series": [],
            "skipped": [],
        }
        self._started = time.monotonic()

    def add(
        self,
        backend: str,
        subject: str,
        metric: str,
        unit: str,
        samples: Sequence[float],
        *,
        peer: bool,
        **extra: Any,
    ) -> dict[str, Any]:
        """One series: ``samples`` of ``metric`` (in ``unit``) for ``subject`` on ``backend``."""
        series = {
            "backend": backend,
            "subject": subject,
            "peer": peer,
            "metric": metric,
            "unit": unit,
            **summary(samples),
            **extra,
            "samples": [rounded(float(x)) for x in samples],
        }
        self.data["series"].append(series)
        return series

    def skip(self, backend: str, subject: str, reason: str) -> None:
        """Record what was not measured, and why."""
        self.data["skipped"].append({"backend": backend, "subject": subject, "reason": reason})
        self.ctx.say(f"not measured: {subject} on {backend}: {reason}")

    def finish(self) -> None:
        # Items measured at once (quick runs) add their series in any order: put them in the endpoints' order.
        order = {endpoint.backend: n for n, endpoint in enumerate(self.ctx.endpoints)}
        self.data["series"].sort(key=lambda s: (order.get(s["backend"], len(order)), s["peer"]))
        self.data["load"]["after"] = load()
        self.data["duration_s"] = round(time.monotonic() - self._started, 1)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.data, indent=1) + "\n")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Goal:
    """One of issue 9's targets, as measured: ``met`` is ``None`` when it could not be judged."""

    backend: str
    goal: str
    value: str
    met: bool | None


@dataclass
class Summary:
    tables: list[Table] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)


def series(data: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    """The series of ``data`` whose fields equal ``match``."""
    return [s for s in data["series"] if all(s.get(k) == v for k, v in match.items())]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant digits, thousands separated; ``-`` for none."""
    if value is None or not math.isfinite(value):
        return "-"
    number = rounded(float(value), digits)
    if number == 0 or abs(number) >= 10 ** (digits - 1):
        return f"{number:,.0f}"
    return f"{number:.{digits - 1 - math.floor(math.log10(abs(number)))}f}"
