"""FaultyStore: a Store that wraps another and injects the faults a test asks for."""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from .._clock import Clock, Timer, Timers
from .._errors import StoreUnavailable
from .._lease import Lease
from .._store import Store
from .._txn import Op
from .._types import KVPair, ServerTime
from .._watch import Watch, WatchFeed
from ._scheduler import ScheduledWatch

__all__ = ["Fault", "FaultKind", "FaultyStore"]

T = TypeVar("T")
FaultKind = Literal["fail", "lose_reply", "delay", "slow_reply"]
OPS = (
    "get",
    "put",
    "delete",
    "list",
    "delete_tree",
    "atomic_put",
    "atomic_delete",
    "transaction",
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


class _ProcessClock:
    """The clock as the client's process sees it: its timers stop while it is frozen, and for good once it crashed.

    A timer that falls due while the process is frozen runs when it is
    thawed, as a stopped process's would on SIGCONT.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.frozen = False
        self.crashed = False
        self._deferred: list[tuple[Timers, Callable[[], object]]] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def timers(self, name: str) -> Timers:
        return _ProcessLane(self, self.clock.timers(name))

    def run(self, lane: Timers, fn: Callable[[], object]) -> None:
        with self._lock:
            if self.crashed:
                return
            if self.frozen:
                self._deferred.append((lane, fn))
                return
        fn()

    def thaw(self) -> None:
        with self._lock:
            self.frozen = False
            deferred, self._deferred = self._deferred, []
        for lane, fn in deferred:
            lane.call_soon(functools.partial(self.run, lane, fn))
        self.clock.sleep(0)  # a ManualClock runs them now


class _ProcessLane:
    def __init__(self, clock: _ProcessClock, lane: Timers) -> None:
        self._clock, self._lane = clock, lane

    def call_at(self, when: float, fn: Callable[[], object]) -> Timer:
        return self._lane.call_at(when, functools.partial(self._clock.run, self._lane, fn))

    def call_soon(self, fn: Callable[[], object]) -> Timer:
        return self._lane.call_soon(functools.partial(self._clock.run, self._lane, fn))


class FaultyStore(Store):
    """A Store that forwards to ``inner`` and injects the faults it is told to.

    It takes over ``inner``: use only the FaultyStore afterwards. Its key
    space is ``inner``'s, prefix included. Its clock is ``inner``'s as the
    client's process sees it: while the whole client is frozen
    (``freeze()``) none of its timers run (renewals, deadlines, callbacks,
    re-registrations), and after ``crash()`` none ever does again.
    """

    def __init__(self, inner: Store) -> None:
        self._process = _ProcessClock(inner.clock)
        super().__init__(prefix=inner._prefix, clock=self._process)
        self.backend = inner.backend
        self.multi_key_transactions = inner.multi_key_transactions
        self.inner = inner
        self._faults: deque[Fault] = deque()
        self._frozen: set[int] = set()
        self._frozen_all = False
        self._crashed = False
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
        """Forget the faults not yet used, and thaw every lease and the process."""
        with self._lock:
            self._faults.clear()
        self.thaw()

    def freeze(self, lease: Lease | None = None) -> None:
        """Stop renewing ``lease``; with no lease, freeze the process: no renewal, and no timer of it, runs."""
        with self._lock:
            if lease is None:
                self._frozen_all = self._process.frozen = True
            else:
                self._frozen.add(lease.id)

    def thaw(self, lease: Lease | None = None) -> None:
        """Renew ``lease`` again (every lease, and the process's timers, if None); a lease past its deadline stays lost."""
        with self._lock:
            if lease is not None:
                self._frozen.discard(lease.id)
                return
            self._frozen_all = False
            self._frozen.clear()
        self._process.thaw()

    def crash(self) -> None:
        """The client's process dies: every later operation fails and no lease is renewed again.

        Nothing is cleaned up: the store expires the leases after their ttl,
        as it would for a process killed with SIGKILL. Stop the client's
        blocked calls too (``Scheduler.kill``): a dead process runs nothing.
        """
        with self._lock:
            self._crashed = self._process.crashed = True
        self._keeper.close()

    @property
    def crashed(self) -> bool:
        return self._crashed

    def leases(self) -> list[Lease]:
        """The leases this client keeps alive (granted, not revoked, not yet lost)."""
        return sorted(self._keeper.leases(), key=lambda lease: lease.id)

    def expire(self, lease: Lease) -> None:
        """The store drops ``lease`` now (its keys go); its holder learns at the next renewal."""
        self.inner._lease_revoke(lease)

    def drop_watches(self) -> None:
        """Every open watch loses its connection and ends with ``StoreUnavailable``."""
        with self._watches_lock:
            feeds = list(self._watches)
        for feed in feeds:
            self.inner._unwatch(feed)
            feed.fail(StoreUnavailable("injected: the watch's connection dropped", backend=self.backend))

    def _take(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in (None, op):
                    self._faults.remove(fault)
                    self.injected.append((op, fault.kind))
                    return fault
        return None

    def _call(self, op: str, action: Callable[[], T]) -> T:
        if self._crashed:
            raise StoreUnavailable(f"injected: {op} from a crashed client")
        fault = self._take(op)
        if fault is None:
            return action()
        if fault.kind == "fail":
            raise StoreUnavailable(f"injected: {op} failed before reaching the store")
        if fault.kind == "delay":
            self.clock.sleep(fault.delay)  # a ManualClock advances by that much meanwhile
            return action()
        if fault.kind == "slow_reply":
            result = action()  # applied at once; its reply is ``delay`` seconds on its way
            self.clock.sleep(fault.delay)
            return result
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

    def _transaction(self, ops: list[Op]) -> list[object]:
        return self._call("transaction", lambda: self.inner._transaction(ops))

    def _new_watch(self, feed: WatchFeed) -> Watch:
        # A watch that can park in a Scheduler's task.
        return ScheduledWatch(feed, on_close=self._watch_closed)

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._call("watch", lambda: self.inner._watch(feed, key, tree, start_revision))

    def _unwatch(self, feed: WatchFeed) -> None:
        self.inner._unwatch(feed)

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return self._call("lease", lambda: self.inner._lease_grant(ttl))

    def _lease_keepalive(self, lease: Lease) -> bool:
        if self._crashed or self._frozen_all or lease.id in self._frozen:
            raise StoreUnavailable("injected: the lease's holder is frozen")
        return self._call("keepalive", lambda: self.inner._lease_keepalive(lease))

    def _lease_revoke(self, lease: Lease) -> None:
        self._call("revoke", lambda: self.inner._lease_revoke(lease))

    def _server_time(self) -> ServerTime | None:
        return self._call("get", self.inner._server_time)

    def _close(self) -> None:
        self.inner.close()
