"""Leases: the unit of liveness, and the one keeper per Store that renews them.

A lease is alive while the store keeps it; keys written with ``lease=`` go
when it goes. The client keeps its own deadline, ``ttl`` after the last
renewal that was *sent* before the previous deadline: a server counts its ttl
from when it received that renewal, so the client's deadline is never later
than the server's. Once that deadline passes the lease is lost for good, even
if a late renewal would still have reached the server: a holder must stop
acting on a lease before the store can hand its keys to someone else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._clock import Clock, ManualClock
from ._errors import CoordError

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["Lease"]

log = logging.getLogger("coord.lease")

# How soon to retry a renewal that failed (a fraction of the ttl, capped).
_RETRY_FRACTION = 0.1
_RETRY_CAP = 0.5


class Lease:
    """A liveness session: keys bound to it live as long as it is renewed.

    ``alive`` is exact at the moment it is read. ``lost`` is set, and the
    ``on_lost`` callbacks run (in the keeper's thread; keep them quick), when
    the lease expired, could not be renewed before its deadline, or the store
    said it no longer exists. Revoking a lease is not losing it: ``lost``
    stays clear. Use it as a context manager to revoke on exit.
    """

    def __init__(self, store: Store, id: int, ttl: float, clock: Clock, granted_at: float) -> None:
        self.id = id
        self.ttl = ttl
        self.lost = threading.Event()
        self._store = store
        self._clock = clock
        self._deadline = granted_at + ttl
        self._next_renewal = granted_at + ttl / 3
        self._revoked = False
        self._callbacks: list[Callable[[Lease], Any]] = []
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return not self._revoked and not self.lost.is_set() and self._clock.now() < self._deadline

    @property
    def deadline(self) -> float:
        """The moment (on the store's clock) after which the lease counts as lost."""
        return self._deadline

    def on_lost(self, callback: Callable[[Lease], Any]) -> None:
        """Call ``callback(lease)`` once when the lease is lost; at once if it already is."""
        with self._lock:
            if not self.lost.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def revoke(self) -> None:
        """End the lease now and delete its keys. Idempotent; best effort once lost."""
        if self._revoked:
            return
        self._revoked = True
        self._store._forget_lease(self)

    def _mark_lost(self) -> None:
        with self._lock:
            if self.lost.is_set() or self._revoked:
                return
            self.lost.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # a user's callback must not kill the keeper
                log.exception("on_lost callback %r failed", callback)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.revoke()

    def __repr__(self) -> str:
        state = "revoked" if self._revoked else "alive" if self.alive else "lost"
        return f"<Lease id={self.id} ttl={self.ttl} {state}>"


class LeaseKeeper:
    """Renews every lease of one Store and marks lost the ones past their deadline.

    With the system clock it runs two daemon threads, one that renews and
    one that watches deadlines, so a renewal stuck on a dead connection never
    delays the moment a lease is declared lost. With a ``ManualClock`` it runs
    nothing in the background: the clock calls ``tick`` as time advances.
    """

    def __init__(self, clock: Clock, renew: Callable[[Lease], bool]) -> None:
        self._clock = clock
        self._renew = renew
        self._leases: set[Lease] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        if isinstance(clock, ManualClock):
            clock.subscribe(self._next_wakeup, self.tick)

    def add(self, lease: Lease) -> None:
        with self._cond:
            self._leases.add(lease)
            if not self._threads and not isinstance(self._clock, ManualClock):
                for target, name in ((self._renew_loop, "renew"), (self._watchdog_loop, "watchdog")):
                    thread = threading.Thread(target=target, name=f"coord-lease-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self._cond.notify_all()

    def remove(self, lease: Lease) -> None:
        with self._cond:
            self._leases.discard(lease)

    def leases(self) -> list[Lease]:
        with self._cond:
            return list(self._leases)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._leases.clear()
            self._cond.notify_all()
        if isinstance(self._clock, ManualClock):
            self._clock.unsubscribe(self.tick)

    # -- the work ---------------------------------------------------------

    def _next_wakeup(self) -> float | None:
        with self._cond:
            times = [min(lease._next_renewal, lease._deadline) for lease in self._leases]
        return min(times, default=None)

    def tick(self) -> None:
        """Expire what is past its deadline, then renew what is due (manual clocks)."""
        self._expire_due()
        for lease in self._due_renewals():
            self._renew_one(lease)

    def _expire_due(self) -> float | None:
        """Mark lost every lease past its deadline; return the next deadline."""
        now = self._clock.now()
        with self._cond:
            expired = [lease for lease in self._leases if lease._deadline <= now]
            self._leases.difference_update(expired)
            upcoming = min((lease._deadline for lease in self._leases), default=None)
        for lease in expired:
            lease._mark_lost()
        return upcoming

    def _due_renewals(self) -> list[Lease]:
        now = self._clock.now()
        with self._cond:
            return [lease for lease in self._leases if lease._next_renewal <= now]

    def _renew_one(self, lease: Lease) -> None:
        sent = self._clock.now()
        try:
            exists = self._renew(lease)
        except Exception as exc:  # a backend's bug must not stop the renewals of every lease
            if not isinstance(exc, CoordError):
                log.warning("renewing %r raised %r; retrying", lease, exc)
            lease._next_renewal = sent + min(lease.ttl * _RETRY_FRACTION, _RETRY_CAP)
            return
        if not exists:
            self.remove(lease)
            lease._mark_lost()
            return
        # Only a renewal sent before the deadline extends it: see the module docstring.
        if sent < lease._deadline and not lease.lost.is_set():
            lease._deadline = sent + lease.ttl
        lease._next_renewal = sent + lease.ttl / 3
        with self._cond:
            self._cond.notify_all()

    def _renew_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                due = min((lease._next_renewal for lease in self._leases), default=None)
                delay = None if due is None else due - self._clock.now()
                if delay is None or delay > 0:
                    self._cond.wait(timeout=delay)
                    continue
            for lease in self._due_renewals():
                self._renew_one(lease)

    def _watchdog_loop(self) -> None:
        while True:
            upcoming = self._expire_due()
            with self._cond:
                if self._closed:
                    return
                delay = None if upcoming is None else max(0.0, upcoming - self._clock.now())
                # A wake-up that comes early just loops: _expire_due compares with the clock.
                self._cond.wait(timeout=delay)
