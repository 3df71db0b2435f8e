"""The holding protocol Lock, Semaphore, Leadership and Registration share (docs/recipes.md).

A holder holds through a lease, one holding at a time:

- ``held`` is exact at the moment it is read: false from the moment the
  store may let someone else in;
- ``token`` is the fencing token of the current (or last) holding;
- ``lease`` is the current holding's lease (``None`` when not held);
- ``lost`` is the current (or last) holding's lease's ``lost``: set when
  that lease is lost, no later than ``held`` turns false; never set by a
  release; a new holding has a new ``lost``;
- ``on_lost(callback)`` calls ``callback(holder)`` each time a holding of
  this holder loses its lease (soon, if the current one already has), on
  the lease's callbacks thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._lease import Lease

__all__ = ["Holding"]

OwnerT = TypeVar("OwnerT")


class Holding(Generic[OwnerT]):
    """The lease, token and loss callbacks of one holder's current (or last) holding."""

    def __init__(self, owner: OwnerT) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._token: int | None = None
        self._callbacks: list[Callable[[OwnerT], Any]] = []
        self._reported: Lease | None = None  # the last lease whose loss the callbacks were told of
        self._forget: Callable[[], None] = lambda: None  # unsubscribes from the current lease
        self._never_lost = threading.Event()  # ``lost`` before the first holding: never set

    def begin(self, lease: Lease, token: int) -> None:
        """A new holding, through ``lease``, with fencing token ``token``."""
        with self._lock:
            self._lease, self._token = lease, token
        self._forget = lease.on_lost(self._lease_lost)

    def end(self) -> None:
        """The holding was let go: its lease (which may live on, as a session) no longer concerns this holder."""
        self._forget()

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
        lease = self._lease
        return self._never_lost if lease is None else lease.lost

    def on_lost(self, callback: Callable[[OwnerT], Any]) -> None:
        with self._lock:
            self._callbacks.append(callback)
            late = self._lease if self._reported is not None and self._reported is self._lease else None
        if late is not None:  # the current holding was lost before this callback came: tell it too
            late.on_lost(lambda _lease: callback(self._owner))

    def _lease_lost(self, lease: Lease) -> None:
        with self._lock:
            if lease is not self._lease:
                return  # an earlier holding's lease: not news
            self._reported = lease
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(self._owner)
