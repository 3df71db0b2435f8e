"""OpenTelemetry metrics: with an SDK configured, coord's instruments record what happens (docs/observability.md)."""

from __future__ import annotations

import json

from tests.support import Child

PROGRAM = r"""
import json, sys, time
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

import coord
from coord.testing import FaultyStore

store = FaultyStore(coord.connect(sys.argv[1]))
lock = coord.Lock("jobs", store=store, ttl=1)
lock.acquire(); lock.release()
waiter = coord.Lock("jobs", store=store, ttl=1)
holder = coord.Lock("jobs", store=coord.connect(sys.argv[1]), ttl=1)
holder.acquire()
import threading
t = threading.Thread(target=waiter.acquire); t.start()
time.sleep(0.5); holder.release(); t.join(10); waiter.release()
first = coord.Election("e", store=store, ttl=1).campaign()
t = threading.Thread(target=lambda: coord.Election("e", store=store, ttl=1).campaign().resign()); t.start()
time.sleep(0.3); first.resign(); t.join(10)
lease = store.lease(1)
time.sleep(0.6)                 # at least one renewal
store.freeze(lease)
time.sleep(1.5)                 # it expires
out = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            points = list(metric.data.data_points)
            out[metric.name] = {
                "unit": metric.unit,
                "attributes": sorted({k for p in points for k in p.attributes}),
                "count": sum(getattr(p, "count", 0) or getattr(p, "value", 0) for p in points),
            }
print("METRICS", json.dumps(out), flush=True)
"""


def test_the_instruments_record_what_happens(tmp_path: object) -> None:
    child = Child.from_code(PROGRAM, f"sqlite://{tmp_path}/m.db")
    try:
        words = child.expect("METRICS", 60)
    finally:
        child.close()
    seen = json.loads(" ".join(words[1:]))
    expected = {
        "coord.lease.renewal.duration": "s",
        "coord.lease.renewal.margin": "s",
        "coord.lease.lost": "{lease}",
        "coord.lock.wait.duration": "s",
        "coord.lock.hold.duration": "s",
        "coord.lock.handoffs": "{handoff}",
        "coord.election.won": "{election}",
        "coord.election.failover.gap": "s",
    }
    for name, unit in expected.items():
        assert name in seen, f"{name} recorded nothing: {sorted(seen)}"
        assert seen[name]["unit"] == unit and seen[name]["count"] >= 1
        assert "coord.backend" in seen[name]["attributes"]
    assert seen["coord.lock.wait.duration"]["count"] >= 3  # two acquisitions and a campaign
    assert {"coord.recipe", "coord.name"} <= set(seen["coord.lock.handoffs"]["attributes"])


def test_without_an_sdk_nothing_is_recorded_and_nothing_breaks(tmp_path: object) -> None:
    child = Child.from_code(
        "import sys, coord\nwith coord.connect(sys.argv[1]) as s:\n"
        "    l = coord.Lock('x', store=s); l.acquire(); l.release(); print('OK', flush=True)",
        f"sqlite://{tmp_path}/n.db",
    )
    try:
        child.expect("OK", 30)
    finally:
        child.close()


RESYNC = r"""
import json, sys
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

import coord
with coord.connect(sys.argv[1]) as store:
    for i in range(int(sys.argv[2])):
        store.put("k", str(i).encode())
    with store.watch("k", start_revision=1) as watch:   # long trimmed: the watch re-syncs
        event = watch.get(timeout=10)
counts = {m.name: sum(p.value for p in m.data.data_points)
          for r in reader.get_metrics_data().resource_metrics for s in r.scope_metrics for m in s.metrics}
print("RESYNCS", event.value.decode(), counts.get("coord.watch.resyncs", 0), flush=True)
"""


def test_a_watch_that_re_syncs_is_counted(tmp_path: object) -> None:
    # More writes than each keeps (sqlite: its history option; memory: its 10,000 changes).
    for url, writes in ((f"sqlite://{tmp_path}/r.db?history=10", 200), ("memory://", 10_100)):
        child = Child.from_code(RESYNC, url, str(writes))
        try:
            words = child.expect("RESYNCS", 60)
        finally:
            child.close()
        assert words[1:] == [str(writes - 1), "1"], (url, words)
