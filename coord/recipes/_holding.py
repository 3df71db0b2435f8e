"""The holding protocol Lock, Semaphore, Leadership, Registration and DoubleBarrier share (docs/recipes.md).

A holder holds through a key bound to a lease, one holding at a time:

- ``held`` is exact at the moment it is read: false from the moment the
  store may let someone else in;
- ``token`` is the fencing token of the current (or last) holding;
- ``lease`` is the current holding's lease (``None`` when not held);
- ``lost`` is the current (or last) holding's: set when its lease is lost
  (no later than ``held`` turns false: reading it checks the lease's
  deadline), or when its key was found gone while the lease lived (see
  ``_guard``); never set by a release; a new holding has a new ``lost``;
- ``on_lost(callback)`` calls ``callback(holder)`` each time a holding of
  this holder is lost (soon, if the current one already is), on the
  Store's callbacks thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._lease import Lease
from .._store import Store
from ._guard import guard

__all__ = ["Holder", "Holding"]

log = logging.getLogger("coord.recipes")

OwnerT = TypeVar("OwnerT")
HolderT = TypeVar("HolderT", bound="Holder")


class _Lost(threading.Event):
    """One holding's ``lost``: set when its key is found gone, and reading it also reads its lease's."""

    def __init__(self, lease: Lease) -> None:
        super().__init__()
        self._lease = lease

    def is_set(self) -> bool:
        return super().is_set() or self._lease.lost.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(timeout) or self.is_set()


class Holding(Generic[OwnerT]):
    """The lease, token, key guard and loss callbacks of one holder's current (or last) holding."""

    def __init__(self, owner: OwnerT) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._token: int | None = None
        self._lost: threading.Event = threading.Event()  # before the first holding: never set
        self._reported: _Lost | None = None  # the last holding whose loss the callbacks were told of
        self._callbacks: list[Callable[[OwnerT], Any]] = []
        self._on_gone: Callable[[], None] = lambda: None
        self._stops: list[Callable[[], None]] = []  # unsubscribe from the lease, stop guarding the key

    def begin(
        self, store: Store, key: str, lease: Lease, token: int, on_gone: Callable[[], None] | None = None
    ) -> None:
        """A new holding: ``key``, bound to ``lease``, with fencing token ``token``.

        ``on_gone`` is told (before the callbacks) if the key vanishes while
        the lease lives, so the holder stops holding.
        """
        lost = _Lost(lease)
        with self._lock:
            self._lease, self._token, self._lost = lease, token, lost
            self._on_gone = on_gone or (lambda: None)
        self._stops = [
            lease.on_lost(lambda _lease: self._report(lost)),
            guard(store, key, lease, lambda: self._gone(lost, store)),
        ]

    def end(self) -> None:
        """The holding was let go: its lease (which may live on, as a session) and key no longer concern us."""
        stops, self._stops = self._stops, []
        for stop in stops:
            stop()

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def token(self) -> int:
        token = self._token
        if token is None:
            raise RuntimeError(f"{type(self._owner).__name__} was never held")
        return token

    @property
    def lost(self) -> threading.Event:
        return self._lost

    def on_lost(self, callback: Callable[[OwnerT], Any]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it."""
        with self._lock:
            self._callbacks.append(callback)
            late = self._reported is not None and self._reported is self._lost
        if late:  # the current holding was lost before this callback came: tell it too
            callback(self._owner)
        return lambda: self._forget(callback)

    def _forget(self, callback: Callable[[OwnerT], Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def _gone(self, lost: _Lost, store: Store) -> None:
        """The guard found the key gone: this holding is over (told on the callbacks lane)."""
        with self._lock:
            if lost is not self._lost:
                return
            on_gone = self._on_gone
        on_gone()
        lost.set()
        store.clock.timers("lease-callbacks").call_soon(lambda: self._report(lost))

    def _report(self, lost: _Lost) -> None:
        with self._lock:
            if lost is not self._lost or self._reported is lost:
                return  # an earlier holding's news, or told already
            self._reported = lost
            lost.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(self._owner)
            except Exception:  # one callback's bug must not keep the others from the news
                log.exception("on_lost callback %r failed", callback)


class Holder:
    """The half of the holding protocol every holder shares, read from its ``_holding``.

    A holder says itself what ``held`` and ``lease`` are for it (``holding``,
    ``is_leader``, ``registered``).
    """

    _holding: Holding[Any]

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) holding: strictly higher for every later holder."""
        return self._holding.token

    @property
    def lost(self) -> threading.Event:
        """Set when the current (or last) holding is lost (never by letting go); each holding has a new one."""
        return self._holding.lost

    def on_lost(self: HolderT, callback: Callable[[HolderT], Any]) -> None:
        """Call ``callback(self)`` each time a holding of this object is lost (on the Store's callbacks thread)."""
        self._holding.on_lost(callback)
