"""Test your own coordination code under faults: ``FaultyStore`` wraps any Store.

::

    clock = coord.ManualClock()
    store = FaultyStore(coord.connect("memory://", clock=clock))
    store.inject("lose_reply", op="atomic_put")   # applied, but the caller sees StoreUnavailable
    store.freeze(lease)                            # its keepalives stop, as in a frozen process
    clock.advance(lease.ttl)                       # ... and it expires, with no sleeping

Faults:

- ``"fail"``: the operation fails before it reaches the store;
- ``"lose_reply"``: the store applied the operation, but the reply is lost
  (the hard case for create-only and compare-and-swap retries);
- ``"delay"``: the operation takes ``delay`` seconds (on a ``ManualClock``
  the clock advances by that much while it runs);
- ``drop_watches()``: every open watch loses its connection and ends with
  ``StoreUnavailable``;
- ``freeze(lease)`` / ``thaw(lease)``: the lease's keepalives stop and start
  again; ``expire(lease)``: the store drops the lease now.

Faults reach the wrapped store through its backend methods, so they work on
every backend; with ``memory://`` and a ``ManualClock`` runs are fast and
reproducible.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from ._clock import ManualClock
from ._errors import StoreUnavailable
from ._lease import Lease
from ._store import Store
from ._types import KVPair
from ._watch import Watch

__all__ = ["FaultyStore", "Fault"]

T = TypeVar("T")
FaultKind = Literal["fail", "lose_reply", "delay"]
OPS = (
    "get",
    "put",
    "delete",
    "list",
    "delete_tree",
    "atomic_put",
    "atomic_delete",
    "watch",
    "lease",
    "keepalive",
    "revoke",
)


@dataclass
class Fault:
    kind: FaultKind
    op: str | None = None  # None: the next operation of any kind
    delay: float = 0.0


class FaultyStore(Store):
    """A Store that forwards to ``inner`` and injects the faults it is told to.

    It takes over ``inner``: use only the FaultyStore afterwards. Its key
    space is ``inner``'s, prefix included.
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(prefix=inner._prefix, clock=inner.clock)
        self.backend = inner.backend  # type: ignore[misc]
        self.inner = inner
        self._faults: deque[Fault] = deque()
        self._frozen: set[int] = set()
        self._lock = threading.Lock()
        #: What was injected, in order: (op, kind) pairs, for assertions and reproduction.
        self.injected: list[tuple[str, str]] = []

    def describe(self) -> str:
        return f"faulty {self.inner.describe()}"

    # -- the faults ----------------------------------------------------------

    def inject(self, kind: FaultKind, *, op: str | None = None, count: int = 1, delay: float = 0.0) -> None:
        """Make the next ``count`` operations (of kind ``op``, or any) suffer ``kind``."""
        if op is not None and op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        with self._lock:
            self._faults.extend(Fault(kind, op, delay) for _ in range(count))

    def clear(self) -> None:
        """Forget the faults not yet used, and thaw every lease."""
        with self._lock:
            self._faults.clear()
            self._frozen.clear()

    def freeze(self, lease: Lease) -> None:
        """Stop renewing ``lease``, as if its process were frozen."""
        with self._lock:
            self._frozen.add(lease.id)

    def thaw(self, lease: Lease) -> None:
        with self._lock:
            self._frozen.discard(lease.id)

    def expire(self, lease: Lease) -> None:
        """The store drops ``lease`` now (its keys go); its holder learns at the next renewal."""
        self.inner._lease_revoke(lease)

    def drop_watches(self) -> None:
        """Every open watch loses its connection and ends with ``StoreUnavailable``."""
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            self.inner._unwatch(watch)
            watch._fail(StoreUnavailable("injected: the watch's connection dropped", backend=self.backend))

    def _take(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in (None, op):
                    self._faults.remove(fault)
                    self.injected.append((op, fault.kind))
                    return fault
        return None

    def _call(self, op: str, action: Callable[[], T]) -> T:
        fault = self._take(op)
        if fault is None:
            return action()
        if fault.kind == "fail":
            raise StoreUnavailable(f"injected: {op} failed before reaching the store")
        if fault.kind == "delay":
            if isinstance(self.clock, ManualClock):
                self.clock.advance(fault.delay)
            else:
                time.sleep(fault.delay)
            return action()
        action()
        raise StoreUnavailable(f"injected: {op} was applied but its reply was lost")

    # -- forwarding ------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        return self._call("get", lambda: self.inner._get(key))

    def _exists(self, key: str) -> bool:
        return self._call("get", lambda: self.inner._exists(key))

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._call("put", lambda: self.inner._put(key, value, ttl, lease))

    def _delete(self, key: str) -> bool:
        return self._call("delete", lambda: self.inner._delete(key))

    def _list(self, prefix: str) -> list[KVPair]:
        return self._call("list", lambda: self.inner._list(prefix))

    def _delete_tree(self, prefix: str) -> None:
        self._call("delete_tree", lambda: self.inner._delete_tree(prefix))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._call("atomic_put", lambda: self.inner._atomic_put(key, value, revision, ttl, lease))

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._call("atomic_delete", lambda: self.inner._atomic_delete(key, revision))

    def _watch(self, watch: Watch, key: str, tree: bool, start_revision: int | None) -> None:
        self._call("watch", lambda: self.inner._watch(watch, key, tree, start_revision))

    def _unwatch(self, watch: Watch) -> None:
        self.inner._unwatch(watch)

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return self._call("lease", lambda: self.inner._lease_grant(ttl))

    def _lease_keepalive(self, lease: Lease) -> bool:
        if lease.id in self._frozen:
            raise StoreUnavailable("injected: the lease's holder is frozen")
        return self._call("keepalive", lambda: self.inner._lease_keepalive(lease))

    def _lease_revoke(self, lease: Lease) -> None:
        self._call("revoke", lambda: self.inner._lease_revoke(lease))

    def _close(self) -> None:
        self.inner.close()
