"""Running benchmarks: parameters, peers' libraries checked up front, JSON and PNG written per benchmark."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Protocol, cast

from ._endpoints import Endpoint, default_urls, parse
from ._result import Context, Result, Summary

__all__ = ["BENCHMARKS", "Benchmark", "MissingPeer", "load", "run"]

#: Every benchmark, in the order a full run takes them.
BENCHMARKS = ("lock_uncontended", "lock_contended", "herd", "failover", "registration", "watch", "store_ops")


class Benchmark(Protocol):
    """What each benchmark module defines."""

    NAME: str
    TITLE: str
    DEFAULTS: dict[str, Any]
    QUICK: dict[str, Any]

    def run(self, ctx: Context, result: Result) -> None: ...

    def summarize(self, data: dict[str, Any]) -> Summary: ...

    def plot(self, data: dict[str, Any], path: Path) -> None: ...

    def peer_modules(self, backends: list[str]) -> set[str]: ...


class MissingPeer(RuntimeError):
    """``--peers`` was asked for, and a peer's library is not installed."""


def load(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; there are {', '.join(BENCHMARKS)}")
    return cast(Benchmark, importlib.import_module(f"{__package__}.{name}"))


def run(
    names: list[str],
    urls: list[str],
    *,
    out: Path,
    peers: bool = False,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    verbose: bool = True,
) -> list[Path]:
    """Run ``names`` (all when empty) against ``urls`` (default: memory, sqlite, the test servers); the JSONs.

    ``overrides`` sets parameters: ``{"seconds": 1}`` for every benchmark
    that has it, ``{"herd.waiters": [2, 4]}`` for one.
    """
    out.mkdir(parents=True, exist_ok=True)
    endpoints = [parse(url) for url in urls or default_urls(Path(tempfile.mkdtemp(prefix="coord-bench-")))]
    modules = [load(name) for name in names or BENCHMARKS]
    if peers:
        _check_peers(modules, endpoints)
    written = []
    for module in modules:
        ctx = Context(module.NAME, endpoints, peers, quick, out, _params(module, quick, overrides or {}), verbose)
        result = Result(ctx, module.TITLE)
        ctx.say(f"starting ({'quick' if quick else 'full'}; {', '.join(e.backend for e in endpoints)})")
        module.run(ctx, result)
        result.finish()
        result.data["summary"] = dataclasses.asdict(module.summarize(result.data))
        path = out / f"{module.NAME}.json"
        result.write(path)
        module.plot(result.data, out / f"{module.NAME}.png")
        ctx.say(f"done in {result.data['duration_s']} s: {path}")
        written.append(path)
    return written


def _params(module: Benchmark, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    params = dict(module.QUICK if quick else module.DEFAULTS)
    for key, value in overrides.items():
        bench, _, name = key.rpartition(".")
        if bench in ("", module.NAME) and name in params:
            params[name] = value
        elif bench == module.NAME:
            raise ValueError(f"{module.NAME} has no parameter {name!r} (it has {', '.join(params)})")
    return params


def _check_peers(modules: list[Benchmark], endpoints: list[Endpoint]) -> None:
    backends = [endpoint.backend for endpoint in endpoints]
    needed = set().union(*(module.peer_modules(backends) for module in modules))
    missing = sorted(name for name in needed if importlib.util.find_spec(name) is None)
    if missing:
        raise MissingPeer(f"--peers needs {', '.join(missing)}: pip install 'coord[bench]'")
