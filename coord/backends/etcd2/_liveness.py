"""Which leases are alive: the Store's own from its keeper, every other from a mirror of ``ROOT/leases``.

etcd's v2 API has no leases, so a key bound to one is a plain file whose
header names the lease; when the lease's node expires nothing on the server
touches the key. Until some Store deletes it, such a key is a *leftover*:
every read checks the lease of each key it returns and hides leftovers (and
has them deleted), so no reader sees a key outlive its lease.

The check costs no round trip in the common cases. A lease of this Store is
alive while its keeper keeps it. For the others, the Store mirrors
``ROOT/leases``: one listing, then one long poll (``wait=true&recursive=true``)
that etcd answers on each lease created, deleted or expired (renewals are
refreshes, which etcd neither reports nor keeps in a watch's history). The
mirror knows every lease event before its next index: a lease created before
it and not in the mirror is dead. A lease newer than what the mirror has seen
(its creation is on the way) is asked for with one GET. The mirror starts
the first time it is needed (a read meets a lease not the Store's own, or a
watch starts) and runs until the Store closes; when it learns that a lease
died it calls ``on_dead``, and the Store deletes the keys it knows are bound
to it (its watches report the deletes).

If etcd's history moved past the mirror's next index (401, after an outage)
it lists the leases again; those gone since are reported dead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..._clock import Clock
from ..._errors import CoordError
from ._boundary import INDEX_CLEARED, KEY_NOT_FOUND, Boundary, EtcdError, Idle, Interrupted, Lane, Transient
from ._layout import Layout

__all__ = ["Liveness"]

log = logging.getLogger("coord.etcd2")

#: A long poll ends after this long without news, and is sent again (a frozen server shows as a timeout).
POLL = 30.0
_RETRY_FIRST, _RETRY_MAX = 0.05, 1.0
_GONE = frozenset({"delete", "compareAndDelete", "expire"})


class Liveness:
    """Whether a lease is alive, for the readers and watches of one Store."""

    def __init__(
        self,
        http: Boundary,
        layout: Layout,
        clock: Clock,
        own: Callable[[int], bool | None],
        on_dead: Callable[[int], None],
    ) -> None:
        self._http = http
        self._layout = layout
        self._clock = clock
        self._own = own  # True/False for a lease of this Store's, None for another's
        self._on_dead = on_dead
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._next = 0  # every lease event before this index is in ``_live``
        self._started = False
        self._lane = http.lane()
        self._thread: threading.Thread | None = None

    def alive(self, lease: int) -> bool:
        """Whether ``lease`` is alive (``StoreUnavailable`` if etcd cannot be asked when it must be)."""
        own = self._own(lease)
        if own is not None:
            return own
        self.start()
        with self._lock:
            if lease in self._live:
                return True
            if lease < self._next:
                return False
        return self._http.call(lambda _: self.ask(lease))

    def start(self) -> None:
        """Load the mirror and start following it, once."""
        with self._lock:
            if self._started:
                return
        live, index = self._http.call(lambda _: self._list())
        with self._lock:
            if self._started:
                return
            self._started = True
            self._live, self._next = live, index + 1
            self._thread = threading.Thread(target=self._follow, name="coord-etcd2-leases", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._lane.close()

    def ask(self, lease: int) -> bool:
        """Whether etcd has ``lease``'s node: one request, no retry."""
        try:
            self._http.request("GET", self._layout.lease_path(lease))
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return False
            raise
        return True

    def _list(self, lane: Lane | None = None) -> tuple[set[int], int]:
        try:
            body, index = self._http.request("GET", self._layout.leases, lane=lane)
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return set(), exc.index
            raise
        nodes = body["node"].get("nodes") or ()
        found = (self._layout.lease_id(node["key"]) for node in nodes)
        return {lease for lease in found if lease is not None}, index

    # -- the long poll, on its own thread ---------------------------------------------------

    def _follow(self) -> None:
        failures = 0
        while not self._lane.closed:
            try:
                self._poll()
                failures = 0
            except (Interrupted, CoordError):
                if self._http.shut or self._lane.closed:
                    return
                failures += 1
            except (Transient, EtcdError) as exc:
                log.debug("following etcd's leases: %s", exc)
                failures += 1
            except Exception:  # whatever it is must not end the thread every reader relies on
                log.exception("following etcd's leases failed")
                failures += 1
            if failures:
                self._clock.sleep(min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(failures, 6)))

    def _poll(self) -> None:
        query = {"wait": "true", "recursive": "true", "waitIndex": str(self._next)}
        try:
            body, _ = self._http.request("GET", self._layout.leases, query, lane=self._lane, read_timeout=POLL)
        except Idle:
            return
        except EtcdError as exc:
            if exc.code != INDEX_CLEARED:
                raise
            self._relist()
            return
        self._event(body)

    def _event(self, body: dict[str, Any]) -> None:
        node = body["node"]
        index = int(node["modifiedIndex"])
        dead: list[int] = []
        with self._lock:
            self._next = max(self._next, index + 1)
            if body.get("refresh"):
                return
            lease = self._layout.lease_id(node["key"])
            if node.get("dir") and body["action"] in _GONE:  # someone deleted ROOT/leases itself
                dead, self._live = sorted(self._live), set()
            elif lease is not None and body["action"] in _GONE:
                if lease in self._live:
                    self._live.discard(lease)
                    dead = [lease]
            elif lease is not None:
                self._live.add(lease)
        self._report(dead)

    def _relist(self) -> None:
        live, index = self._list(self._lane)
        with self._lock:
            dead = sorted(self._live - live)
            self._live, self._next = live, index + 1
        self._report(dead)

    def _report(self, dead: list[int]) -> None:
        for lease in dead:
            try:
                self._on_dead(lease)
            except Exception:
                log.exception("reacting to lease %d's end failed", lease)
