"""A watched key's lease, deleted as soon as it has expired: a waiter need not wait for etcd's sweep.

etcd's leader deletes expired v2 nodes in a sweep every 500 ms, so a lease
node outlives its ttl by up to half a second. A Store watching a single key
bound to another Store's lease (a waiter watching its predecessor) follows
that lease: it reads the lease's node near its expiry, and once etcd says
the node's time is up it deletes the node (only if it is still as read:
a renewal in between wins) and the keys it watches that are bound to it.

etcd answers a read of a node with ``ttl``, its remaining time in whole
seconds rounded up (left out once it is 0 or less) and ``expiration``, the
exact moment (by the wall clock of the member that took the last renewal).
So a read without a positive ``ttl`` proves the lease expired, and that
alone decides; the expiration only says when to read again. The holder's own
deadline is never later than etcd's (``_lease``), so this only hastens what
etcd will do, as long as the members' wall clocks agree (v2 ttls need that
anyway).

When to read: at the expiration as this host's wall clock puts it (plus
``MARGIN``), but never before a renewal could have been missed: after a read
that answered ``ttl`` r >= 2, not before r - 1 seconds. A lease renewed every
ttl/3 costs about one read per renewal period; one that a clock ahead of the
server's makes us read early costs a read every 25 ms until it expires.
The reads and deletes run on one lane of the Store's clock.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._clock import Clock, Timer
from ..._errors import CoordError
from ._boundary import KEY_NOT_FOUND, Boundary, EtcdError
from ._layout import Layout
from ._leases import delete_at

__all__ = ["Expiries"]

#: How soon after a watch starts its key's lease is first read (a short wait often ends before).
FIRST_READ = 0.5
#: How long after its expiration a lease is read (etcd's clock and ours may round differently).
MARGIN = 0.005
#: The interval between reads once a lease has under a second left and has not expired yet.
FINE = 0.025
#: How soon to read again after a read failed.
RETRY = 0.5
_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z")


@dataclass(eq=False)
class _Follow:
    lease: int
    watches: int = 1
    timer: Timer | None = None


class Expiries:
    """The leases of the keys a Store's single-key watches report, each deleted once expired.

    ``expired(lease)`` is called (on the lane) once this Store deleted a lease
    as expired, so it deletes the keys bound to it that it watches.
    """

    def __init__(self, http: Boundary, layout: Layout, clock: Clock, own: Callable[[int], bool]) -> None:
        self._http = http
        self._layout = layout
        self._clock = clock
        self._own = own
        self._timers = clock.timers("etcd2-lease-expiry")
        self._follows: dict[int, _Follow] = {}
        self._lock = threading.Lock()
        self.expired: Callable[[int], None] = lambda lease: None
        self.deleted = 0  # how many leases this Store deleted as expired (for tests)

    def follow(self, lease: int) -> None:
        if self._own(lease):
            return
        with self._lock:
            follow = self._follows.get(lease)
            if follow is not None:
                follow.watches += 1
                return
            follow = self._follows[lease] = _Follow(lease)
            follow.timer = self._timers.call_at(self._clock.now() + FIRST_READ, lambda: self._read(follow))

    def unfollow(self, lease: int) -> None:
        with self._lock:
            follow = self._follows.get(lease)
            if follow is None:
                return
            follow.watches -= 1
            if follow.watches == 0:
                if follow.timer is not None:
                    follow.timer.cancel()
                del self._follows[lease]

    def close(self) -> None:
        with self._lock:
            for follow in self._follows.values():
                if follow.timer is not None:
                    follow.timer.cancel()
            self._follows.clear()

    # -- on the lane ----------------------------------------------------------------

    def _read(self, follow: _Follow) -> None:
        path = self._layout.lease_path(follow.lease)
        sent, wall = self._clock.now(), time.time()
        try:
            node = self._http.call(lambda _: self._node(path), within=0)
        except CoordError:
            return self._again(follow, self._clock.now() + RETRY)
        if node is None or "expiration" not in node:
            return  # gone (etcd's sweep was first), or made permanent: nothing to hasten
        ttl = int(node.get("ttl") or 0)
        if ttl <= 0:
            return self._delete(follow, path, int(node["modifiedIndex"]))
        left = _epoch(node["expiration"]) - wall  # by this host's wall clock
        earliest = sent + ttl - 1 if ttl >= 2 else sent + FINE
        self._again(follow, max(earliest, sent + left + MARGIN))

    def _node(self, path: str) -> dict[str, Any] | None:
        try:
            body, _ = self._http.request("GET", path)
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return None
            raise
        node: dict[str, Any] = body["node"]
        return node

    def _delete(self, follow: _Follow, path: str, index: int) -> None:
        try:
            deleted = self._http.call(lambda _: delete_at(self._http, path, index), within=0)
        except CoordError:
            return self._again(follow, self._clock.now() + RETRY)
        if not deleted:
            return self._read(follow)  # renewed in between, or swept already: look again
        self.deleted += 1
        self.expired(follow.lease)

    def _again(self, follow: _Follow, at: float) -> None:
        with self._lock:
            if self._follows.get(follow.lease) is follow:
                follow.timer = self._timers.call_at(at, lambda: self._read(follow))


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time as etcd writes it (nanoseconds, ``Z``)."""
    found = _STAMP.fullmatch(stamp)
    if found is None:
        return 0.0
    year, month, day, hour, minute, second, fraction = found.groups()
    whole = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    return whole + (float("0." + fraction) if fraction else 0.0)
