"""Semaphore: at most ``limit`` holders at once, served in arrival order without a herd (and Lock, its limit of one)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from .._keys import check_timeout, check_ttl
from .._lease import Lease
from .._metrics import count, record
from .._store import Store
from ._holding import Holder, Holding
from ._queue import Hold, join, name_segment, resolve
from ._steps import Steps, run

__all__ = ["Semaphore"]


class Semaphore(Holder):
    """A counting semaphore shared by every process on the store.

    The ``limit`` oldest tickets under ``semaphore/<name>`` hold. The first
    waiter watches the holders and wakes when any of them leaves; every
    later waiter watches only its immediate predecessor, which rewrites its
    ticket as it becomes a holder, so each release wakes two waiters at
    most. Every participant must use the same ``limit``.

    ``store=None`` uses ``coord.default_store()``. Tickets are bound to the
    Store's session of ``ttl`` (``Store.session``), or to ``lease`` if one
    is given. A holder that dies is replaced when its session expires
    (within ``ttl`` plus the backend's expiry delay; at once on sqlite);
    after ``release()``, within one watch round trip.

    One Semaphore object holds at most one slot (threads sharing it take
    turns, as with ``threading.Lock``); create one per concurrent holder.
    It follows the holding protocol (docs/recipes.md): ``holding`` is exact
    at the moment read, ``token`` strictly increases in the order slots are
    granted, ``lease``, ``lost`` and ``on_lost`` concern the current (or
    last) holding.
    """

    _kind: ClassVar[str] = "semaphore"

    def __init__(
        self, name: str, limit: int, *, store: Store | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, not {limit!r}")
        self.name = name
        self.limit = limit
        self._store = store
        self._ttl = check_ttl(ttl)
        self._lease = lease
        self._prefix = f"{self._kind}/{name_segment(name)}"
        self._local = threading.Lock()  # a held object is held by one thread at a time
        self._hold: Hold | None = None
        self._taken = 0.0  # when the current holding began (store clock)
        self._holding: Holding[Any] = Holding(self)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot; ``False`` if ``blocking`` is false and none is free, or after ``timeout`` seconds."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        timeout = check_timeout(timeout)
        store = resolve(self._store)
        start = store.clock.now()
        if not self._local.acquire(blocking, -1 if timeout is None else min(timeout, threading.TIMEOUT_MAX)):
            return False
        try:
            remaining = 0.0 if not blocking else None if timeout is None else timeout - (store.clock.now() - start)
            hold = run(self._join(store, remaining))
        except BaseException:
            self._local.release()
            raise
        if hold is None:
            self._local.release()
            return False
        self._took(store, hold, start)
        return True

    def _join(self, store: Store, timeout: float | None) -> Steps[Hold | None]:
        """The queue's protocol for one slot (shared with ``coord.aio``)."""
        return join(store, self._prefix, b"", ttl=self._ttl, lease=self._lease, limit=self.limit, timeout=timeout)

    def _took(self, store: Store, hold: Hold, started: float) -> None:
        """This object holds ``hold``, which it asked for at ``started`` (store clock)."""
        self._hold = hold
        self._holding.begin(store, hold.pair.key, hold.lease, hold.token, on_gone=lambda: setattr(hold, "gone", True))
        self._taken = store.clock.now()
        labels = self._labels(store)
        record("coord.lock.wait.duration", self._taken - started, labels)
        if hold.woke is not None:
            count("coord.lock.handoffs", labels)

    def _labels(self, store: Store) -> dict[str, str]:
        return {"coord.backend": store.backend, "coord.recipe": self._kind, "coord.name": self.name}

    def release(self) -> None:
        """Give the slot up (``RuntimeError`` if not held); the next waiter is woken."""
        hold = self._let_go()
        hold.release()
        self._local.release()

    def _let_go(self) -> Hold:
        """This object no longer holds (the store is told next, by ``Hold.release``)."""
        hold = self._hold
        if hold is None:
            raise RuntimeError(f"release of an unheld {type(self).__name__}")
        self._hold = None
        self._holding.end()
        record("coord.lock.hold.duration", hold.store.clock.now() - self._taken, self._labels(hold.store))
        return hold

    @property
    def holding(self) -> bool:
        """Exact at the moment read: false from the moment the store may give the slot to another."""
        hold = self._hold
        return hold is not None and hold.alive

    @property
    def held(self) -> bool:
        """The holding protocol's name for ``holding``."""
        return self.holding

    @property
    def lease(self) -> Lease | None:
        """The current holding's lease (``None`` when not held)."""
        hold = self._hold
        return None if hold is None else hold.lease

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit} {'held' if self.holding else 'unheld'}>"
