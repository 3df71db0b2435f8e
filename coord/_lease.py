"""Leases: the unit of liveness, and the one keeper per Store that renews them.

A lease is alive while the store keeps it; keys written with ``lease=`` go
when it goes. The client keeps its own deadline, ``hold`` after the last
renewal that was *sent* before the previous deadline: a server counts its ttl
from when it received that renewal, so the client's deadline is never later
than the server's. ``hold`` is the ttl, except on a backend whose server may
expire a lease before its ttl has passed since the last renewal (Consul:
see ``Store._lease_hold``), where it is the least time the server keeps it.
Once that deadline passes the lease is lost for good, even if a late renewal
would still have reached the server: a holder must stop acting on a lease
before the store can hand its keys to someone else.

The keeper runs on three lanes of the Store's clock: renewals on one, the
deadlines on another (so a renewal stuck on a dead connection never delays
the moment a lease is declared lost), and the users' ``on_lost`` callbacks
on a third (so a slow callback delays neither).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ._clock import Clock, Timer
from ._errors import CoordError
from ._metrics import count, record

__all__ = ["Lease", "LeaseKeeper"]

log = logging.getLogger("coord.lease")

# How soon to retry a renewal that failed (a fraction of the ttl, capped).
_RETRY_FRACTION = 0.1
_RETRY_CAP = 0.5


class Lease:
    """A liveness session: keys bound to it live as long as it is renewed.

    ``alive`` is exact at the moment it is read. ``lost`` is set, and the
    ``on_lost`` callbacks run (in a thread of their own, in order), when the
    lease expired, could not be renewed before its deadline, or the store
    said it no longer exists; reading ``lost`` checks the deadline too, so it
    is set no later than ``alive`` turns false. Revoking a lease is not
    losing it: ``lost`` stays clear. Use it as a context manager to revoke on
    exit.
    """

    def __init__(self, id: int, ttl: float, clock: Clock, kept: _Kept) -> None:
        self.id = id
        self.ttl = ttl
        self._clock = clock
        self._kept = kept
        self.lost: threading.Event = _Lost(self)
        self._callbacks: list[Callable[[Lease], Any]] = []

    @property
    def alive(self) -> bool:
        return not self._kept.revoked and not self.lost.is_set()

    @property
    def deadline(self) -> float:
        """The moment (on the store's clock) after which the lease counts as lost."""
        return self._kept.deadline

    def on_lost(self, callback: Callable[[Lease], Any]) -> Callable[[], None]:
        """Call ``callback(lease)`` once when the lease is lost; at once, in this thread, if it already is.

        Returns a function that forgets the callback (for a holder that lets
        go of a lease that lives on, such as a Store's session).
        """
        self.lost.is_set()  # marks the lease lost if its deadline has passed
        with self._kept.keeper.lock:
            if not threading.Event.is_set(self.lost):
                self._callbacks.append(callback)
                return functools.partial(self._forget, callback)
        _call(callback, self)
        return _nothing

    def _forget(self, callback: Callable[[Lease], Any]) -> None:
        with self._kept.keeper.lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def revoke(self) -> None:
        """End the lease now and delete its keys. Idempotent; best effort once lost."""
        self._kept.keeper.revoke(self)

    def _mark_lost(self) -> None:
        """The lease is gone (for a backend that learns so from its server)."""
        self._kept.keeper.mark_lost(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.revoke()

    def __repr__(self) -> str:
        state = "revoked" if self._kept.revoked else "alive" if self.alive else "lost"
        return f"<Lease id={self.id} ttl={self.ttl} {state}>"


class _Lost(threading.Event):
    """A lease's ``lost``: set by the keeper, and by whoever reads it once the deadline has passed.

    The keeper's deadline timer sets it a moment after the deadline; a
    thread that reads it first (say, right after the process resumed from a
    suspend) must not see it clear while the lease is already gone.
    """

    def __init__(self, lease: Lease) -> None:
        super().__init__()
        self._lease = lease

    def is_set(self) -> bool:
        if super().is_set():
            return True
        kept = self._lease._kept
        if kept.revoked or self._lease._clock.now() < kept.deadline:
            return False
        kept.keeper.mark_lost(self._lease)
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(timeout) or self.is_set()


class _Kept:
    """The keeper's record of one lease: its deadline, its timers, whether it was revoked."""

    __slots__ = ("deadline", "deadline_timer", "hold", "keeper", "renew_timer", "revoked")

    def __init__(self, keeper: LeaseKeeper, deadline: float, hold: float) -> None:
        self.keeper = keeper
        self.deadline = deadline
        self.hold = hold  # how long after a renewal is sent the lease surely lives: the deadline's distance
        self.revoked = False
        self.renew_timer: Timer | None = None
        self.deadline_timer: Timer | None = None

    def cancel(self) -> None:
        for timer in (self.renew_timer, self.deadline_timer):
            if timer is not None:
                timer.cancel()


class LeaseKeeper:
    """Renews every lease of one Store and marks lost the ones past their deadline.

    ``renew(lease)`` sends one keepalive and says whether the store still
    has the lease; ``revoke(lease)`` ends it on the store. Both are the
    Store's, which translates their errors.
    """

    def __init__(
        self,
        clock: Clock,
        renew: Callable[[Lease], bool],
        revoke: Callable[[Lease], None],
        labels: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._clock = clock
        self._renew = renew
        self._revoke = revoke
        self._labels = labels  # the metrics' attributes (the backend)
        self.lock = threading.Lock()  # guards the records and every lease's callbacks
        self._leases: dict[Lease, _Kept] = {}
        self._closed = False
        # Created in this order so that a ManualClock, at equal times, expires before it renews.
        self._deadlines = clock.timers("lease-deadline")
        self._renewals = clock.timers("lease-renew")
        self._callbacks = clock.timers("lease-callbacks")

    def keep(self, lease_id: int, ttl: float, sent: float, hold: float | None = None) -> Lease:
        """A new Lease granted by a request sent at ``sent``, kept alive from now on.

        ``hold`` (default: ``ttl``) is how long after a renewal is sent the
        server surely keeps the lease: the deadline is that far from the last
        renewal, and renewals go every hold/3.
        """
        hold = ttl if hold is None else min(hold, ttl)
        kept = _Kept(self, sent + hold, hold)
        lease = Lease(lease_id, ttl, self._clock, kept)
        with self.lock:
            self._leases[lease] = kept
            self._schedule(lease, kept, sent + hold / 3)
        return lease

    def owns(self, lease: object) -> bool:
        return isinstance(lease, Lease) and lease._kept.keeper is self

    def leases(self) -> list[Lease]:
        with self.lock:
            return list(self._leases)

    def revoke(self, lease: Lease) -> None:
        """Stop keeping ``lease`` and end it on the store (once)."""
        with self.lock:
            kept = lease._kept
            if kept.revoked:
                return
            kept.revoked = True
            kept.cancel()
            self._leases.pop(lease, None)
            closed = self._closed
        if not closed:
            self._revoke(lease)

    def mark_lost(self, lease: Lease) -> None:
        with self.lock:
            kept = lease._kept
            if threading.Event.is_set(lease.lost) or kept.revoked:
                return
            kept.cancel()
            self._leases.pop(lease, None)
            lease.lost.set()
            callbacks, lease._callbacks = lease._callbacks, []
        count("coord.lease.lost", self._labels())
        self.dispatch(lease, callbacks)

    def dispatch(self, lease: Lease, callbacks: list[Callable[[Lease], Any]]) -> None:
        """Run ``callbacks`` on the callbacks lane: never on the renewal or deadline lanes."""
        for callback in callbacks:
            self._callbacks.call_soon(functools.partial(_call, callback, lease))

    def close(self) -> None:
        """Stop renewing every lease, and count each as revoked here (the Store revokes them on its side).

        A holder of one of them reports not held from now on: after
        ``Store.close()`` nobody in this process may act on a lease of it.
        """
        with self.lock:
            self._closed = True
            for kept in self._leases.values():
                kept.cancel()
                kept.revoked = True
            self._leases.clear()

    # -- the timers ----------------------------------------------------------

    def _schedule(self, lease: Lease, kept: _Kept, next_renewal: float) -> None:
        """(Re)set the lease's timers; called with ``lock`` held."""
        kept.cancel()
        kept.renew_timer = self._renewals.call_at(next_renewal, lambda: self._renew_one(lease))
        kept.deadline_timer = self._deadlines.call_at(kept.deadline, lambda: self._expire(lease))

    def _expire(self, lease: Lease) -> None:
        # A timer that fires early (it cannot here, but a clock may) just looks again.
        if self._clock.now() >= lease._kept.deadline:
            self.mark_lost(lease)

    def _renew_one(self, lease: Lease) -> None:
        sent = self._clock.now()
        try:
            exists = self._renew(lease)
        except Exception as exc:  # a backend's bug must not stop the renewals of every lease
            if not isinstance(exc, CoordError):
                log.warning("renewing %r raised %r; retrying", lease, exc)
            retry = sent + min(lease._kept.hold * _RETRY_FRACTION, _RETRY_CAP)
            with self.lock:
                kept = self._leases.get(lease)
                if kept is not None:
                    kept.renew_timer = self._renewals.call_at(retry, lambda: self._renew_one(lease))
            return
        if not exists:
            self.mark_lost(lease)
            return
        answered = self._clock.now()
        with self.lock:
            kept = self._leases.get(lease)
            if kept is None:
                return  # revoked or lost meanwhile
            margin = kept.deadline - answered
            # Only a renewal sent before the deadline extends it: see the module docstring.
            if sent < kept.deadline:
                kept.deadline = sent + kept.hold
            self._schedule(lease, kept, sent + kept.hold / 3)
        labels = self._labels()
        record("coord.lease.renewal.duration", answered - sent, labels)
        record("coord.lease.renewal.margin", margin, labels)


def _call(callback: Callable[[Lease], Any], lease: Lease) -> None:
    try:
        callback(lease)
    except Exception:  # a user's callback must not end the lane the others run on
        log.exception("on_lost callback %r failed", callback)


def _nothing() -> None:
    pass
