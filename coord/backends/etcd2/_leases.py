"""Leases on etcd's v2 API, which has none: a lease node with a ttl, and keys that name it.

- A lease is the file ``ROOT/leases/<n>``, created by ``POST ROOT/leases?ttl=``
  (its name and id ``n`` are its createdIndex). etcd counts ttls in whole
  seconds, so the ttl is rounded up and the granted ttl is what the Lease
  reports. The keeper renews it with ``PUT ...?refresh=true&ttl=&prevExist=true``:
  one request per lease and renewal, however many keys are bound to it (a
  refresh is no change: etcd reports it to no watch).
- A key bound to a lease is a plain file whose header names the lease
  (``_layout``). Keys do not expire with the lease on the server; readers
  hide a key whose lease is gone, and the Stores that know of it delete it
  (``_liveness``).
- Revoking a lease deletes its node (from then on every reader takes its
  keys as gone), then deletes, each only if still at the index this Store
  wrote it at, the keys this Store bound to it. A lease this Store finds
  lost (a renewal answered "no such lease", or its deadline passed) is
  cleaned up the same way, in the background.
- ``Reaper`` deletes leftovers on a lane of the Store's clock, each only if
  still at the index it was found at, so a key written again since stays.

Worst-case delay: etcd expires a lease node at most ``ttl`` (rounded up)
after its last renewal, and its leader sweeps expired nodes every 500 ms;
a Store following the lease (``_liveness``) deletes the keys it watches one
round trip after etcd reports the expiry, and a Store watching a key
bound to it probes the lease near its expiry to delete it ahead of the
sweep (``_expiry``). Readers hide the keys from the moment the lease is
known gone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable

from ..._clock import Clock
from ..._errors import CoordError
from ._boundary import COMPARE_FAILED, KEY_NOT_FOUND, Boundary, EtcdError
from ._layout import Layout

__all__ = ["Leases", "Reaper", "whole_seconds"]

log = logging.getLogger("coord.etcd2")


def whole_seconds(ttl: float) -> int:
    """The ttl etcd grants for ``ttl``: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(ttl))


class Reaper:
    """Deletes keys at a given index on a lane of the Store's clock: leftovers of dead leases."""

    def __init__(self, http: Boundary, clock: Clock) -> None:
        self._http = http
        self._lane = clock.timers("etcd2-reap")
        self._pending: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the lane (its errors are logged, never raised)."""
        self._lane.call_soon(lambda: self._quietly(fn))

    def _quietly(self, fn: Callable[[], object]) -> None:
        try:
            if not self._http.shut:
                fn()
        except CoordError as exc:
            log.debug("cleaning up failed: %s", exc)

    def reap(self, path: str, index: int) -> None:
        with self._lock:
            if (path, index) in self._pending:
                return
            self._pending.add((path, index))
        self._lane.call_soon(lambda: self._delete(path, index))

    def _delete(self, path: str, index: int) -> None:
        try:
            if not self._http.shut:
                self._http.call(lambda _: delete_at(self._http, path, index))
        except CoordError as exc:
            log.debug("deleting %s at %d failed: %s", path, index, exc)
        finally:
            with self._lock:
                self._pending.discard((path, index))


def delete_at(http: Boundary, path: str, index: int) -> bool:
    """Delete ``path`` if it is still at ``index``; whether this request deleted it."""
    try:
        http.request("DELETE", path, {"prevIndex": str(index)})
    except EtcdError as exc:
        if exc.code in (KEY_NOT_FOUND, COMPARE_FAILED):
            return False
        raise
    return True


def _delete_at(http: Boundary, path: str, index: int, _retried: bool) -> bool:
    return delete_at(http, path, index)


class Leases:
    """The lease nodes of one Store, and the keys it bound to each."""

    def __init__(self, http: Boundary, layout: Layout) -> None:
        self._http = http
        self._layout = layout
        self._lock = threading.Lock()
        self._bound: dict[int, dict[str, int]] = {}  # lease -> {key path: index written at}
        self._binding: dict[str, int] = {}  # key path -> lease
        self.granted: set[int] = set()  # every lease this Store created

    def grant(self, ttl: float) -> tuple[int, float]:
        seconds = whole_seconds(ttl)
        # A grant whose answer was lost leaves a node nobody renews: it expires by itself.
        body, _ = self._http.call(
            lambda _: self._http.request("POST", self._layout.leases, form={"ttl": str(seconds), "value": ""})
        )
        lease = int(body["node"]["createdIndex"])
        self.granted.add(lease)
        return lease, float(seconds)

    def renew(self, lease: int, ttl: float) -> bool:
        """One refresh; False if etcd no longer has the lease."""
        query = {"refresh": "true", "prevExist": "true", "ttl": str(whole_seconds(ttl))}

        def attempt(_: bool) -> bool:
            try:
                self._http.request("PUT", self._layout.lease_path(lease), query)
            except EtcdError as exc:
                if exc.code == KEY_NOT_FOUND:
                    return False
                raise
            return True

        # One attempt only: the keeper retries soon, and it alone decides when the lease is lost.
        return self._http.call(attempt, within=0)

    def end(self, lease: int) -> None:
        """Delete the lease's node, then the keys this Store bound to it (each if still as written)."""

        def attempt(_: bool) -> None:
            with contextlib.suppress(EtcdError):  # 100: gone already
                self._http.request("DELETE", self._layout.lease_path(lease))

        self._http.call(attempt)
        with self._lock:
            self.granted.discard(lease)
            keys = self._bound.pop(lease, {})
            for path in keys:
                if self._binding.get(path) == lease:
                    del self._binding[path]
        for path, index in sorted(keys.items()):
            self._http.call(functools.partial(_delete_at, self._http, path, index))

    # -- which keys each lease binds --------------------------------------------------------

    def bind(self, path: str, lease: int | None, index: int) -> None:
        """This Store wrote ``path`` at ``index``, bound to ``lease`` (None: to nothing)."""
        with self._lock:
            before = self._binding.pop(path, None)
            if before is not None:
                self._bound.get(before, {}).pop(path, None)
            if lease is not None:
                self._binding[path] = lease
                self._bound.setdefault(lease, {})[path] = index

    def unbind(self, path: str) -> None:
        self.bind(path, None, 0)

    def bound(self, lease: int) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._bound.get(lease, {}).items())
