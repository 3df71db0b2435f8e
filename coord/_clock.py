"""Clocks: everything in coord that waits on time asks one, so tests can move time by hand.

A clock tells the time (``now``), sleeps (``sleep``) and runs timers
(``timers(name).call_at(when, fn)``). A *lane* of timers, named for its job
(``"lease-renew"``, ``"lease-deadline"``, ...), runs its callbacks one at a
time in time order; different lanes never wait for each other, so a renewal
stuck on a dead connection cannot delay the moment a lease is declared lost.

- ``SystemClock`` runs each lane on a daemon thread, started when the lane
  has something to do and ended when it has nothing left; a forked child
  starts its own. Its time is the host's boot clock (``CLOCK_BOOTTIME`` on
  Linux): it never steps with the wall clock, and it counts the time the
  host spent suspended, so a lease's deadline passes during a suspend as it
  does on the server, and a process resumed after one finds its leases
  lost. Where there is no such clock, ``time.monotonic``.
- ``ManualClock`` runs nothing in the background: ``advance()`` steps time
  to each moment a timer is due, in order, and runs it in the caller's
  thread, so a test that moves time by ten ttls sees the same renewals, in
  the same order, as ten ttls of real time would give.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "Timer", "Timers"]

log = logging.getLogger("coord.clock")

#: The longest a lane sleeps before it looks at the clock again.
_MAX_SLEEP = 5.0


class Timer:
    """One scheduled call; ``cancel()`` stops it if it has not run yet."""

    __slots__ = ("_fn", "when")

    def __init__(self, when: float, fn: Callable[[], object]) -> None:
        self.when = when
        self._fn: Callable[[], object] | None = fn

    @property
    def pending(self) -> bool:
        return self._fn is not None

    def cancel(self) -> None:
        self._fn = None

    def _run(self) -> None:
        fn, self._fn = self._fn, None
        if fn is None:
            return
        try:
            fn()
        except Exception:  # a timer's failure must not end the lane every other timer relies on
            log.exception("timer %r failed", fn)


class Timers(Protocol):
    """A lane of timers: its callbacks run one at a time, in time order."""

    def call_at(self, when: float, fn: Callable[[], object]) -> Timer:
        """Run ``fn()`` at ``when`` (the clock's time), or as soon as possible if that has passed."""
        ...

    def call_soon(self, fn: Callable[[], object]) -> Timer:
        """Run ``fn()`` now, in the lane (never in the caller)."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        ...

    def timers(self, name: str) -> Timers:
        """The lane of timers called ``name`` (one per name and clock)."""
        ...


class _Heap:
    """Timers in time order (ties in the order they were set)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def push(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.when, next(self._order), timer))

    def next_due(self) -> float | None:
        while self._heap and not self._heap[0][2].pending:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop(self) -> Timer:
        return heapq.heappop(self._heap)[2]


class _ThreadLane:
    """A SystemClock lane: a daemon thread that lives while the lane has timers."""

    def __init__(self, clock: SystemClock, name: str) -> None:
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._heap = _Heap()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def call_at(self, when: float, fn: Callable[[], object]) -> Timer:
        timer = Timer(when, fn)
        with self._cond:
            self._heap.push(timer)
            if self._thread is None or self._pid != os.getpid():  # a forked child has no thread yet
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=f"coord-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        return timer

    def call_soon(self, fn: Callable[[], object]) -> Timer:
        return self.call_at(self._clock.now(), fn)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._heap.next_due()
                    if due is None:
                        self._thread = None  # nothing left: end; the next call_at starts a new thread
                        return
                    delay = due - self._clock.now()
                    if delay <= 0:
                        timer = self._heap.pop()
                        break
                    # Waits count monotonic time, which stops while the host is suspended: wake now and
                    # then, so that a timer due during a suspend runs soon after the host resumes.
                    self._cond.wait(timeout=min(delay, _MAX_SLEEP))
            timer._run()


def _boot_clock() -> Callable[[], float]:
    """The host's clock that counts suspended time and is never set, if it has one."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    try:
        time.clock_gettime(boottime)
    except OSError:
        return time.monotonic
    return functools.partial(time.clock_gettime, boottime)


_now = _boot_clock()


class SystemClock:
    """The host's boot clock (``CLOCK_BOOTTIME``; else ``time.monotonic``), with a thread per lane of timers."""

    def __init__(self) -> None:
        self._lanes: dict[str, _ThreadLane] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return _now()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def timers(self, name: str) -> Timers:
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _ThreadLane(self, name)
            return lane


class _ManualLane:
    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self.heap = _Heap()

    def call_at(self, when: float, fn: Callable[[], object]) -> Timer:
        timer = Timer(when, fn)
        with self._clock._heaps_lock:
            self.heap.push(timer)
        return timer

    def call_soon(self, fn: Callable[[], object]) -> Timer:
        return self.call_at(self._clock.now(), fn)


class ManualClock:
    """A clock that moves only when ``advance()`` is called, running the timers that fall due on the way."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.RLock()  # one advance at a time (a timer may advance the clock itself)
        self._heaps_lock = threading.Lock()  # never held while a timer runs
        self._lanes: dict[str, _ManualLane] = {}

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def timers(self, name: str) -> Timers:
        with self._heaps_lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _ManualLane(self)
            return lane

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer that falls due on the way, in time order.

        Timers run in the calling thread; one that sets another timer due
        by the target time sees it run too, before ``advance`` returns.
        ``advance(0)`` runs what is due now.
        """
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            target = self._now + seconds
            while (timer := self._next(target)) is not None:
                self._now = max(self._now, timer.when)
                timer._run()
            # Never backwards: a timer that slept (a delayed call, on the virtual clock) may have taken it past.
            self._now = max(self._now, target)

    def _next(self, target: float) -> Timer | None:
        """The first timer due by ``target`` (the first lane's, at equal times), taken off its heap."""
        with self._heaps_lock:
            due = [(when, lane) for lane in self._lanes.values() if (when := lane.heap.next_due()) is not None]
            if not due:
                return None
            when, lane = min(due, key=lambda item: item[0])
            return lane.heap.pop() if when <= target else None
