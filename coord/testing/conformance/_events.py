"""What the suite waits for and compares: events of a watch, and the contract's time bounds."""

from __future__ import annotations

import time
from collections.abc import Callable

import coord

__all__ = ["GRACE", "TTL", "drain", "next_event", "put_event", "summary"]

#: Lease and ttl length for expiry tests: etcd's minimum lease is 2 s with the test server's settings.
TTL = 2.0
#: The contract's bound on how long a dead lease's keys outlive its ttl.
GRACE = 1.0


def put_event(key: str, value: bytes) -> tuple[str, str, bytes | None]:
    return ("put", key, value)


def summary(events: list[coord.Event]) -> list[tuple[str, str, bytes | None]]:
    """Events as ``(type, key, value)``, to compare with what a test expects."""
    return [(event.type, event.key, event.value) for event in events]


def next_event(
    watch: coord.Watch, predicate: Callable[[coord.Event], bool], timeout: float
) -> tuple[coord.Event, float]:
    """The first event of ``watch`` that matches, and how long it took; fails after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = watch.get(timeout=left)
        if event is not None and predicate(event):
            return event, time.monotonic() - start
    raise AssertionError(f"no matching event within {timeout}s")


def drain(watch: coord.Watch, count: int, timeout: float = 10.0) -> list[coord.Event]:
    """The next ``count`` events of ``watch``; fails if they do not all come within ``timeout``."""
    events: list[coord.Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        event = watch.get(timeout=max(0.0, deadline - time.monotonic()))
        if event is None:
            raise AssertionError(f"got {len(events)} of {count} events within {timeout}s: {events}")
        events.append(event)
    return events
