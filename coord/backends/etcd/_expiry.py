"""A watched key's lease, revoked as soon as it is provably expired: a waiter need not wait for etcd's sweep.

etcd's leader revokes expired leases in a sweep every 500 ms, so the key of
a holder that crashed goes up to half a second after its lease's time to
live. A Store watching a single key bound to a lease (a waiter watching its
predecessor) follows that lease and revokes it once it has expired. An
expired lease can no longer be renewed (etcd's Renew waits for the
revocation), and its holder's own deadline, never later than etcd's, has
passed: revoking it only hastens what etcd will do.

It must never revoke a live lease, and etcd's LeaseTimeToLive answers in
whole seconds, truncated: TTL r >= 1 means r <= remaining < r+1, TTL 0 means
-1 < remaining < 1, TTL -1 an expired lease not yet revoked (or none at all:
then grantedTTL is 0). So the proof takes two probes:

- a probe sent at ``s``, answered at ``a`` with TTL ``r >= 0`` bounds the
  expiry, unless the lease is renewed: it expires before ``e = a + r + 1``;
- a renewal received after ``s`` leaves at least ``ttl - 1`` seconds for
  ``ttl - 1`` seconds after ``s``, so a probe then answers TTL >= 1;
- hence a second probe sent after ``e`` but less than ``ttl - 1`` seconds
  after ``s`` that answers TTL <= 0 proves the lease expired. (With etcd's
  minimum ttl of 2 s no such moment exists: those leases get the sweep.)

For precision the Store probes every 25 ms while the remaining time crosses
1 s (TTL 1, then 0): then ``e`` is within about 25 ms of the expiry. A lease
gets there only after ``ttl - 1`` seconds without renewal; before, one probe
when its remaining time may next be under 2 s (about one per ttl while its
holder renews every ttl/3). The probes and revocations run on one lane of
the Store's clock, which must run at the server's pace (any real clock does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyetcd import etcdrpc

from ..._clock import Clock, Timer
from ..._errors import CoordError, LeaseExpired
from ._boundary import Boundary

__all__ = ["Expiries"]

#: How soon after a watch starts its key's lease is first probed (a short wait often ends before).
FIRST_PROBE = 0.5
#: The interval between probes while the remaining time crosses 1 s: the precision of the revocation.
FINE = 0.025
#: How soon to probe again after a probe or a revocation failed.
RETRY = 0.5


@dataclass(eq=False)
class _Follow:
    """One followed lease: how many watches want it, its timer, and the probe that bounds its expiry."""

    lease: int
    watches: int = 1
    timer: Timer | None = None
    bound: tuple[float, float] | None = None  # (sent, e): a probe sent at ``sent`` says "expired before e"


class Expiries:
    """The leases of the keys a Store's single-key watches follow, each revoked once provably expired."""

    def __init__(self, etcd: Boundary, clock: Clock, own: Callable[[int], bool]) -> None:
        self._etcd = etcd
        self._clock = clock
        self._own = own  # a lease of this Store's own: its keeper knows better
        self._timers = clock.timers("etcd-lease-expiry")
        self._follows: dict[int, _Follow] = {}
        self._lock = threading.Lock()
        self.revoked = 0  # how many leases this Store revoked as expired (for tests)

    def follow(self, lease: int) -> None:
        """A watch's key is bound to ``lease``: follow it (once, however many watches share it)."""
        if self._own(lease):
            return
        with self._lock:
            follow = self._follows.get(lease)
            if follow is not None:
                follow.watches += 1
                return
            follow = self._follows[lease] = _Follow(lease)
            follow.timer = self._timers.call_at(self._clock.now() + FIRST_PROBE, lambda: self._probe(follow))

    def unfollow(self, lease: int) -> None:
        with self._lock:
            follow = self._follows.get(lease)
            if follow is None:
                return
            follow.watches -= 1
            if follow.watches == 0:
                self._drop(follow)

    def close(self) -> None:
        with self._lock:
            for follow in list(self._follows.values()):
                self._drop(follow)

    def _drop(self, follow: _Follow) -> None:
        if follow.timer is not None:
            follow.timer.cancel()
        self._follows.pop(follow.lease, None)

    # -- on the lane ----------------------------------------------------------------

    def _probe(self, follow: _Follow) -> None:
        request = etcdrpc.LeaseTimeToLiveRequest(ID=follow.lease)
        sent = self._clock.now()
        try:
            answer = self._etcd.call(
                lambda _: self._etcd.leases.LeaseTimeToLive(request, self._etcd.attempt_timeout), within=0
            )
        except LeaseExpired:
            return self._end(follow)
        except CoordError:
            return self._again(follow, self._clock.now() + RETRY)
        answered, ttl, granted = self._clock.now(), int(answer.TTL), int(answer.grantedTTL)
        if granted < 3:
            return self._end(follow)  # gone (grantedTTL 0), or too short for the proof: etcd's sweep will do
        if self._expired(follow, sent, ttl, granted):
            return self._revoke(follow)
        self._again(follow, self._next_probe(follow, sent, answered, ttl))

    @staticmethod
    def _expired(follow: _Follow, sent: float, ttl: int, granted: int) -> bool:
        """Whether a probe sent at ``sent`` that answered TTL ``ttl`` proves the lease expired (see above)."""
        if ttl <= -1:
            return True  # expired over a second ago, not yet revoked
        if ttl > 0 or follow.bound is None:
            return False
        bound_sent, e = follow.bound
        return sent >= e and sent - bound_sent < granted - 1

    @staticmethod
    def _next_probe(follow: _Follow, sent: float, answered: float, ttl: int) -> float:
        if ttl >= 2:
            follow.bound = None
            return sent + ttl - 1  # the earliest its remaining time may be under 1 s
        if ttl == 1:
            follow.bound = None
            return sent + FINE
        # Expired, or under a second left: look again once it must have expired, unless renewed.
        follow.bound = (sent, answered + 1)
        return answered + 1

    def _revoke(self, follow: _Follow) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=follow.lease)
        try:
            self._etcd.call(lambda _: self._etcd.leases.LeaseRevoke(request, self._etcd.attempt_timeout), within=0)
            self.revoked += 1
        except LeaseExpired:
            pass  # etcd's sweep was first
        except CoordError:
            return self._again(follow, self._clock.now() + RETRY)
        self._end(follow)

    def _again(self, follow: _Follow, at: float) -> None:
        with self._lock:
            if self._follows.get(follow.lease) is follow:
                follow.timer = self._timers.call_at(at, lambda: self._probe(follow))

    def _end(self, follow: _Follow) -> None:
        """Stop probing a lease that is gone; the watches that follow it still count on it."""
        with self._lock:
            follow.timer = None
