"""``memory://``: an in-process store, for tests and single-process programs.

``memory://`` opens a private store; ``memory://NAME`` opens the store of
that name, shared by every Store of this process that names it, so two
Stores can coordinate as two clients would. Pass ``clock=ManualClock()`` to
move time by hand: ttl keys and leases then expire only when the test
advances the clock, and nothing sleeps.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque

from .._clock import Clock, SystemClock, Timer
from .._errors import LeaseExpired
from .._keys import is_under
from .._lease import Lease
from .._store import Store, check_revision, labelled, matches
from .._txn import Op
from .._types import Event, KVPair
from .._url import Location
from .._watch import WatchFeed

__all__ = ["MemoryStore"]

#: Changes kept for watches that start from an old revision; older ones are compacted.
HISTORY = 10_000


class _MemoryData:
    """The shared state of one named memory store: what a server would hold."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.keys: dict[str, KVPair] = {}
        self.revision = 0
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self.expiring: dict[str, float] = {}  # ttl key -> when it goes
        self.by_lease: dict[int, set[str]] = {}  # lease id -> its keys
        self.lease_ids = itertools.count(1)
        self.watchers: dict[WatchFeed, tuple[str, bool]] = {}
        self.stores = 0  # open Stores on this data: the reaper's timer goes when the last closes
        self._reaper = clock.timers("memory-reaper")
        self._timer: Timer | None = None

    # All methods below are called with ``lock`` held.

    def next_expiry(self) -> float | None:
        times = [deadline for _, deadline in self.leases.values()]
        times += self.expiring.values()
        return min(times, default=None)

    def reschedule(self) -> None:
        """Set the reaper's timer for the next expiry (none while nothing expires or nobody is open)."""
        upcoming = self.next_expiry() if self.stores else None
        if self._timer is not None and self._timer.pending and self._timer.when == upcoming:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if upcoming is None else self._reaper.call_at(upcoming, self.reap)

    def reap(self) -> None:
        """Delete ttl keys and lease keys whose time has come, with delete events."""
        with self.lock:
            now = self.clock.now()
            doomed = {key for key, expires in self.expiring.items() if expires <= now}
            for lease_id in [lease_id for lease_id, (_, deadline) in self.leases.items() if deadline <= now]:
                del self.leases[lease_id]
                doomed.update(self.by_lease.get(lease_id, ()))
            for key in sorted(doomed):
                self.remove(key)
            self.reschedule()

    def write(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        if lease is not None and lease.id not in self.leases:
            raise LeaseExpired(f"lease {lease.id} has expired")
        self.revision += 1
        old = self.keys.get(key)
        created = old.created if old else self.revision
        lease_id = lease.id if lease is not None else None
        pair = KVPair(key, value, self.revision, created, lease_id)
        expires = None if ttl is None else self.clock.now() + ttl
        if old is not None:
            self._unindex(key, old)
        self.keys[key] = pair
        if expires is not None:
            self.expiring[key] = expires
        if lease_id is not None:
            self.by_lease.setdefault(lease_id, set()).add(key)
        self.publish(Event("put", key, value, self.revision))
        if expires is not None:
            self.reschedule()
        return pair

    def remove(self, key: str) -> None:
        self._unindex(key, self.keys.pop(key))
        self.revision += 1
        self.publish(Event("delete", key, None, self.revision))

    def _unindex(self, key: str, pair: KVPair) -> None:
        self.expiring.pop(key, None)
        if pair.lease is not None:
            self.by_lease.get(pair.lease, set()).discard(key)

    def publish(self, event: Event) -> None:
        self.history.append(event)
        for feed, (watched, tree) in self.watchers.items():
            if matches(event.key, watched, tree):
                feed.emit(event)

    def check(self, key: str, revision: int | None) -> None:
        """Raise unless ``key`` is absent (revision None) or at ``revision``."""
        pair = self.keys.get(key)
        check_revision(None if pair is None else pair.revision, revision)


_named: weakref.WeakValueDictionary[str, _MemoryData] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


class MemoryStore(Store):
    backend = "memory"

    def __init__(
        self, location: Location | None = None, *, timeout: float = 5.0, prefix: str = "", clock: Clock | None = None
    ) -> None:
        name = location.path.strip("/") if location else ""
        with _named_lock:
            data = _named.get(name) if name else None
            if data is None:
                data = _MemoryData(clock or SystemClock())
                if name:
                    _named[name] = data
        self._name = name
        self._data = data  # kept alive by every Store that names it
        with data.lock:
            data.stores += 1
        super().__init__(prefix=prefix, clock=data.clock)

    def describe(self) -> str:
        return f"memory://{self._name}"

    def _get(self, key: str) -> KVPair | None:
        with self._data.lock:
            self._data.reap()
            return self._data.keys.get(key)

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        with self._data.lock:
            self._data.reap()
            return self._data.write(key, value, ttl, lease)

    def _delete(self, key: str) -> bool:
        with self._data.lock:
            self._data.reap()
            if key not in self._data.keys:
                return False
            self._data.remove(key)
            return True

    def _list(self, prefix: str) -> list[KVPair]:
        with self._data.lock:
            self._data.reap()
            return [pair for key, pair in self._data.keys.items() if is_under(key, prefix)]

    def _delete_tree(self, prefix: str) -> None:
        with self._data.lock:
            self._data.reap()
            for key in sorted(key for key in self._data.keys if is_under(key, prefix)):
                self._data.remove(key)

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        with self._data.lock:
            self._data.reap()
            self._data.check(key, revision)
            return self._data.write(key, value, ttl, lease)

    def _atomic_delete(self, key: str, revision: int) -> None:
        with self._data.lock:
            self._data.reap()
            self._data.check(key, revision)
            self._data.remove(key)

    def _transaction(self, ops: list[Op]) -> list[object]:
        data = self._data
        with data.lock:
            data.reap()
            for op in ops:
                with labelled(op.key):
                    if op.conditional:
                        data.check(op.key, op.expect)
                    if op.lease is not None and op.lease.id not in data.leases:
                        raise LeaseExpired(f"lease {op.lease.id} has expired")
            return [self._apply(op) for op in ops]

    def _apply(self, op: Op) -> object:
        data = self._data
        if op.kind == "put":
            return data.write(op.key, op.value, op.ttl, op.lease)
        if op.kind == "delete":
            existed = op.key in data.keys
            if existed:
                data.remove(op.key)
            return existed
        if op.kind == "get":
            return data.keys.get(op.key)
        if op.kind == "list":
            return [pair for key, pair in data.keys.items() if is_under(key, op.key)]
        return None

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        data = self._data
        with data.lock:
            data.reap()
            oldest = data.history[0].revision if data.history else data.revision + 1
            if start_revision is None or start_revision < oldest:
                # The current state: from now, or because history was compacted.
                if start_revision is not None:
                    feed.resynced()
                for name in sorted(data.keys):
                    if matches(name, key, tree):
                        pair = data.keys[name]
                        feed.emit(Event("put", name, pair.value, pair.revision))
            else:
                for event in data.history:
                    if event.revision >= start_revision and matches(event.key, key, tree):
                        feed.emit(event)
            feed.revision = data.revision
            data.watchers[feed] = (key, tree)

    def _unwatch(self, feed: WatchFeed) -> None:
        with self._data.lock:
            self._data.watchers.pop(feed, None)

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        with self._data.lock:
            lease_id = next(self._data.lease_ids)
            self._data.leases[lease_id] = (ttl, self._data.clock.now() + ttl)
            self._data.reschedule()
            return lease_id, ttl

    def _lease_keepalive(self, lease: Lease) -> bool:
        with self._data.lock:
            self._data.reap()
            if lease.id not in self._data.leases:
                return False
            self._data.leases[lease.id] = (lease.ttl, self._data.clock.now() + lease.ttl)
            self._data.reschedule()
            return True

    def _lease_revoke(self, lease: Lease) -> None:
        with self._data.lock:
            if self._data.leases.pop(lease.id, None) is None:
                return
            for key in sorted(self._data.by_lease.pop(lease.id, ())):
                self._data.remove(key)

    def _close(self) -> None:
        with self._data.lock:
            self._data.stores -= 1
            self._data.reschedule()
