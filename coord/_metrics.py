"""OpenTelemetry metrics: how close leases come to being lost, and what waiting and holding cost.

Instruments live on the meter ``coord``, created on first use from
``opentelemetry-api`` (``pip install 'coord[otel]'``). Without the API they
are no-ops, and with it they record nothing until the application
configures an SDK (a ``MeterProvider`` with a reader). docs/observability.md
lists each instrument, its unit and attributes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["count", "record"]

#: name -> (kind, unit, description)
INSTRUMENTS: Mapping[str, tuple[str, str, str]] = {
    "coord.lease.renewal.duration": ("histogram", "s", "Round trip of a lease renewal"),
    "coord.lease.renewal.margin": (
        "histogram",
        "s",
        "Time the lease had left when a renewal answered (deadline minus now): a shrinking margin predicts a loss",
    ),
    "coord.lease.lost": ("counter", "{lease}", "Leases lost (expired, not renewed in time, or dropped by the store)"),
    "coord.lock.wait.duration": ("histogram", "s", "Time from acquire() (or campaign()) to holding"),
    "coord.lock.hold.duration": ("histogram", "s", "Time from holding to release (or loss)"),
    "coord.lock.handoffs": ("counter", "{handoff}", "Acquisitions that waited for another holder to leave"),
    "coord.election.won": ("counter", "{election}", "Campaigns that led to leadership"),
    "coord.election.failover.gap": (
        "histogram",
        "s",
        "What a successor added to a failover: from seeing its predecessor's ticket go to leading",
    ),
    "coord.watch.resyncs": ("counter", "{resync}", "Watches re-synced from the current state (they fell behind)"),
}


@functools.cache
def _instrument(name: str) -> Any:
    """The instrument ``name``, or ``None`` without opentelemetry-api."""
    try:
        from opentelemetry import metrics
    except ImportError:
        return None
    kind, unit, description = INSTRUMENTS[name]
    meter = metrics.get_meter("coord")
    if kind == "counter":
        return meter.create_counter(name, unit=unit, description=description)
    return meter.create_histogram(name, unit=unit, description=description)


def record(name: str, value: float, attributes: Mapping[str, str]) -> None:
    """Record ``value`` on the histogram ``name``."""
    instrument = _instrument(name)
    if instrument is not None:
        instrument.record(value, attributes=dict(attributes))


def count(name: str, attributes: Mapping[str, str], amount: int = 1) -> None:
    """Add ``amount`` to the counter ``name``."""
    instrument = _instrument(name)
    if instrument is not None:
        instrument.add(amount, attributes=dict(attributes))
