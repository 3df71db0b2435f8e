"""The contender's loop shared by ``lock_contended`` and ``herd``: take the lock, note when, give it back.

Every worker starts at the same moment (``go`` carries it, on the system's
monotonic clock) and stops taking the lock at ``stop``. The interval between
"acquire returned" and "release called" lies inside the true holding, so the
intervals of all contenders must never overlap: ``analyse`` checks that, and
how evenly and in what order the lock went round.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

from ._locks import LockHandle
from ._procs import Channel

__all__ = ["analyse", "contend", "wait_for"]


def wait_for(channel: Channel, kind: str) -> dict[str, Any]:
    """The parent's next command ``kind`` (other commands are not expected here)."""
    while True:
        message = channel.recv()
        if message is not None and message["kind"] == kind:
            return message


def contend(handle: LockHandle, start: float, stop: float, hold: float = 0.0) -> list[tuple[float, float]]:
    """Take and give back ``handle`` from ``start`` until ``stop``; the (acquired, released) times."""
    time.sleep(max(0.0, start - time.monotonic()))
    intervals: list[tuple[float, float]] = []
    while True:
        left = stop - time.monotonic()
        if left <= 0 or not handle.acquire(max(left, 0.01)):
            return intervals
        acquired = time.monotonic()
        if hold:
            time.sleep(hold)
        released = time.monotonic()
        handle.release()
        intervals.append((acquired, released))


def analyse(per_worker: list[list[tuple[float, float]]], start: float, stop: float) -> dict[str, Any]:
    """Throughput, mutual exclusion and fairness of one window, from each contender's intervals."""
    events = sorted(
        (acquired, released, who)
        for who, intervals in enumerate(per_worker)
        for acquired, released in intervals
        if start <= acquired < stop
    )
    overlaps = sum(1 for a, b in itertools.pairwise(events) if b[0] < a[1])
    switches = sum(1 for a, b in itertools.pairwise(events) if a[2] != b[2])
    streak = longest = 0
    for n, event in enumerate(events):
        streak = streak + 1 if n and events[n - 1][2] == event[2] else 1
        longest = max(longest, streak)
    counts = Counter(who for _, _, who in events)
    shares = [counts.get(who, 0) for who in range(len(per_worker))]
    return {
        "rate": len(events) / (stop - start),
        "acquisitions": len(events),
        "overlaps": overlaps,
        "switch_fraction": switches / max(1, len(events) - 1),
        "longest_streak": longest,
        "fairness": _jain(shares),
    }


def _jain(shares: list[int]) -> float:
    """Jain's fairness index: 1 when every contender got the lock equally often, 1/n when one got it all."""
    total = sum(shares)
    squares = sum(x * x for x in shares)
    return total * total / (len(shares) * squares) if squares else 0.0
