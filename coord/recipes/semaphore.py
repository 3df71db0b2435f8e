"""Semaphore: at most ``limit`` holders at once, served in arrival order without a herd."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._lease import Lease
from .._store import Store
from ._queue import name_segment
from .lock import _Holder

__all__ = ["Semaphore"]


class Semaphore:
    """A counting semaphore shared by every process on the store.

    The ``limit`` oldest tickets under ``semaphore/<name>`` hold. The first
    waiter watches the holders and wakes when any of them leaves; every
    later waiter watches only its immediate predecessor, which rewrites its
    ticket as it becomes a holder, so each release wakes two waiters at
    most. Every participant must use the same ``limit``.

    One Semaphore object holds at most one slot (threads sharing it take
    turns); create one per concurrent holder. ``holding``, ``token``,
    ``lost`` and ``on_lost`` behave as for ``Lock``: tokens strictly increase
    in the order slots are granted.
    """

    def __init__(self, name: str, limit: int, *, store: Store | None = None, ttl: float = 10.0) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, not {limit!r}")
        self.name = name
        self.limit = limit
        self._holder: _Holder[Semaphore] = _Holder(self, store, f"semaphore/{name_segment(name)}", limit=limit, ttl=ttl)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot; ``False`` if ``blocking`` is false and none is free, or after ``timeout`` seconds."""
        return self._holder.acquire(blocking, timeout)

    def release(self) -> None:
        """Give the slot up (``RuntimeError`` if not held)."""
        self._holder.release()

    @property
    def holding(self) -> bool:
        return self._holder.holding

    @property
    def token(self) -> int:
        return self._holder.token

    @property
    def lost(self) -> threading.Event:
        return self._holder.lost

    @property
    def lease(self) -> Lease | None:
        return self._holder.lease

    def on_lost(self, callback: Callable[[Semaphore], Any]) -> None:
        self._holder.on_lost(callback)

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit} {'held' if self.holding else 'unheld'}>"
