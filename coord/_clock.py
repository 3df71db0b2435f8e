"""Clocks: the system's monotonic clock, and a manual one tests move by hand.

Everything in coord that waits on time (lease renewals and deadlines, the
memory store's expiry of ttl keys) asks a clock. A ``ManualClock`` runs that
work synchronously inside ``advance()``, stopping at every moment some
subscriber asked to be woken, so a test that moves time by ten ttls sees the
same renewals, in the same order, as ten ttls of real time would give.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class SystemClock:
    """``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when ``advance()`` is called.

    Subscribers are ``(next_wakeup, tick)`` pairs: ``next_wakeup()`` says when
    the subscriber next needs to run (``None`` for never) and ``tick()`` runs
    it. ``advance`` steps time to each such moment in order and calls every
    tick there, in the caller's thread, so runs are reproducible.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.RLock()
        self._subscribers: list[tuple[Callable[[], float | None], Callable[[], None]]] = []

    def now(self) -> float:
        return self._now

    def subscribe(self, next_wakeup: Callable[[], float | None], tick: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers.append((next_wakeup, tick))

    def unsubscribe(self, tick: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers = [(w, t) for w, t in self._subscribers if t != tick]

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every subscriber that falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            target = self._now + seconds
            while True:
                due = [w for w in (wake() for wake, _ in self._subscribers) if w is not None and w <= target]
                if not due:
                    break
                self._now = max(self._now, min(due))
                for _, tick in list(self._subscribers):
                    tick()
                if self._now >= target:
                    break
            self._now = target
            for _, tick in list(self._subscribers):
                tick()
