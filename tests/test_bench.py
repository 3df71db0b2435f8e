"""The benchmark harness works: every benchmark, in ``--quick`` mode, with the peers, on every backend.

A smoke test of ``coord.bench`` (issue 9): it checks that each benchmark
runs against memory, sqlite and (with the servers) the real servers, that
it writes its JSON with the fields the report needs and its PNG, that the
report renders, and what the measurements must show whatever the timings:
no two lock holdings overlapped, no watch event was missed, every
registration stayed registered. It never judges a timing. The peers' client
libraries and matplotlib come with the ``bench`` extra that CI installs, so
a missing one fails the run rather than skipping anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from coord._registry import server_backends
from coord.bench import BENCHMARKS, run
from coord.bench._endpoints import parse
from coord.bench.report import main as report_main

REQUIRE_SERVERS = os.environ.get("COORD_REQUIRE_SERVERS") == "1"


def _urls(tmp: Path) -> list[str]:
    urls = ["memory://", f"sqlite://{tmp / 'coord.db'}"]
    for backend in server_backends():
        assert backend.test_env is not None
        url = os.environ.get(backend.test_env)
        if url:
            urls.append(url)
        elif REQUIRE_SERVERS:
            pytest.fail(f"COORD_REQUIRE_SERVERS=1 but {backend.test_env} is not set")
    return urls


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One quick run of every benchmark, with the peers; its folder and the backends it measured."""
    out = tmp_path_factory.mktemp("bench")
    urls = _urls(out)
    written = run([], urls, out=out, peers=True, quick=True, verbose=False)
    assert [path.stem for path in written] == list(BENCHMARKS)
    return out, [parse(url).backend for url in urls]


def _load(out: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_writes_its_json_and_plot(quick_run: tuple[Path, list[str]], name: str) -> None:
    out, backends = quick_run
    data = _load(out, name)
    assert data["benchmark"] == name and data["quick"] and data["peers"]
    assert {"cpu", "cores", "kernel", "python"} <= set(data["machine"])
    assert {"libraries", "servers"} <= set(data["versions"])
    assert data["parameters"] and data["series"] and "summary" in data
    for series in data["series"]:
        assert {"backend", "subject", "peer", "metric", "unit", "samples", "median", "p99"} <= set(series)
        assert series["samples"], series
    # Every backend was measured, or its absence says why.
    measured = {s["backend"] for s in data["series"]} | {s["backend"] for s in data["skipped"]}
    assert measured == set(backends)
    png = (out / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_the_peers_ran_beside_coord(quick_run: tuple[Path, list[str]]) -> None:
    out, backends = quick_run
    subjects = {(s["backend"], s["subject"]) for s in _load(out, "lock_uncontended")["series"]}
    expected = {("sqlite", "tooz file")}
    if "redis" in backends:
        expected |= {("redis", "redis-py Lock"), ("redis", "tooz redis")}
    if "zookeeper" in backends:
        expected |= {("zookeeper", "kazoo Lock"), ("zookeeper", "tooz zookeeper")}
    if "etcd" in backends:
        expected |= {("etcd", "pyetcd lock")}
    assert expected <= subjects
    if "zookeeper" in backends:
        elections = {s["subject"] for s in _load(out, "failover")["series"] if s["backend"] == "zookeeper"}
        assert elections == {"coord Election", "kazoo Election", "tooz zookeeper"}


def test_no_two_holdings_overlapped(quick_run: tuple[Path, list[str]]) -> None:
    out, _ = quick_run
    for name in ("lock_contended", "herd"):
        for series in _load(out, name)["series"]:
            assert series.get("overlaps", 0) == 0, series


def test_no_watch_event_was_missed_and_every_instance_stayed_registered(quick_run: tuple[Path, list[str]]) -> None:
    out, _ = quick_run
    assert all(s["missed"] == 0 for s in _load(out, "watch")["series"])
    registration = _load(out, "registration")
    assert all(s["alive"] == registration["parameters"]["count"] for s in registration["series"])


def test_the_report_renders_every_benchmark(quick_run: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, _ = quick_run
    assert report_main(["--in", str(out), "--out", str(tmp_path / "benchmarks.md")]) == 0
    text = (tmp_path / "benchmarks.md").read_text()
    assert "## The machine" in text and "Issue 9's targets" in text
    for name in BENCHMARKS:
        assert f"(benchmarks/{name}.png)" in text
        assert (tmp_path / "benchmarks" / f"{name}.png").exists()
