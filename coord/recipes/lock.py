"""Lock: a distributed mutex, with the queue Election uses.

``Lock`` and ``Semaphore`` are the same holder over ``_waiting.join`` with
``limit`` 1 and n; ``_Holder`` is that shared part.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._lease import Lease
from .._store import Store
from ._queue import Hold, join, name_segment, resolve

__all__ = ["Lock"]

OwnerT = TypeVar("OwnerT")


class _Holder(Generic[OwnerT]):
    """One holder's state: this process's threads take turns first, then the store's queue.

    ``owner`` is the public object (Lock or Semaphore) passed to callbacks.
    """

    def __init__(self, owner: OwnerT, store: Store | None, prefix: str, *, limit: int, ttl: float) -> None:
        self._owner = owner
        self._store = store
        self._prefix = prefix
        self._limit = limit
        self._ttl = ttl
        self._local = threading.Lock()  # a held object is held by one thread at a time
        self._hold: Hold | None = None
        self._last_token: int | None = None
        self.lost = threading.Event()
        self._callbacks: list[Callable[[OwnerT], Any]] = []

    def acquire(self, blocking: bool, timeout: float | None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be a non-negative number of seconds or None")
        store = resolve(self._store)
        start = store.clock.now()
        if not self._local.acquire(blocking, -1 if timeout is None else timeout):
            return False
        try:
            remaining = 0.0 if not blocking else None if timeout is None else timeout - (store.clock.now() - start)
            hold = join(store, self._prefix, b"", ttl=self._ttl, limit=self._limit, timeout=remaining)
        except BaseException:
            self._local.release()
            raise
        if hold is None:
            self._local.release()
            return False
        self.lost.clear()
        self._hold, self._last_token = hold, hold.token
        hold.lease.on_lost(self._lease_lost)
        return True

    def release(self) -> None:
        hold = self._hold
        if hold is None:
            raise RuntimeError(f"release of an unheld {type(self._owner).__name__}")
        self._hold = None
        hold.release()
        self._local.release()

    @property
    def holding(self) -> bool:
        hold = self._hold
        return hold is not None and hold.alive

    @property
    def token(self) -> int:
        if self._last_token is None:
            raise RuntimeError(f"this {type(self._owner).__name__} was never acquired")
        return self._last_token

    @property
    def lease(self) -> Lease | None:
        hold = self._hold
        return None if hold is None else hold.lease

    def on_lost(self, callback: Callable[[OwnerT], Any]) -> None:
        self._callbacks.append(callback)

    def _lease_lost(self, lease: Lease) -> None:
        hold = self._hold
        if hold is None or hold.lease is not lease:
            return  # an earlier holding's lease: not news
        self.lost.set()
        for callback in list(self._callbacks):
            callback(self._owner)


class Lock:
    """A mutex shared by every process on the store, served in arrival order.

    ``store=None`` uses ``coord.default_store()``. A held Lock belongs to its
    lease (``ttl``): if its holder dies, the next waiter gets the lock within
    ``ttl`` plus the backend's expiry delay; after ``release()``, within one
    watch round trip. Waiters are woken one at a time (no herd).

    One Lock object is one holder: threads of a process that share it take
    turns as with ``threading.Lock``. ``holding`` is exact at the moment read:
    it turns false, ``lost`` is set and the ``on_lost`` callbacks run when
    the lease is lost, no later than the moment the store may give the lock
    to another. ``token`` (the fencing token) is strictly higher for every
    later holder of the same lock name.
    """

    def __init__(self, name: str, *, store: Store | None = None, ttl: float = 10.0) -> None:
        self.name = name
        self._holder: _Holder[Lock] = _Holder(self, store, f"lock/{name_segment(name)}", limit=1, ttl=ttl)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; ``False`` if ``blocking`` is false and it is held, or after ``timeout`` seconds."""
        return self._holder.acquire(blocking, timeout)

    def release(self) -> None:
        """Give the lock up (``RuntimeError`` if not held); the next waiter is woken."""
        self._holder.release()

    @property
    def holding(self) -> bool:
        return self._holder.holding

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) holding."""
        return self._holder.token

    @property
    def lost(self) -> threading.Event:
        """Set when the lease of the current holding is lost; cleared by each ``acquire``."""
        return self._holder.lost

    @property
    def lease(self) -> Lease | None:
        """The current holding's lease (``None`` when not held)."""
        return self._holder.lease

    def on_lost(self, callback: Callable[[Lock], Any]) -> None:
        """Call ``callback(lock)`` whenever a holding of this Lock loses its lease (in the keeper's thread)."""
        self._holder.on_lost(callback)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} {'held' if self.holding else 'unheld'}>"
