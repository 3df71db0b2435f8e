"""Lock: a distributed mutex, the Semaphore of one."""

from __future__ import annotations

from typing import ClassVar

from .._lease import Lease
from .._store import Store
from .semaphore import Semaphore

__all__ = ["Lock"]


class Lock(Semaphore):
    """A mutex shared by every process on the store, served in arrival order.

    The queue is Election's (``recipes/_queue.py``) under ``lock/<name>``: a
    release wakes the next waiter only (no herd). Everything else is the
    Semaphore's, with ``limit`` 1: ``holding`` is exact at the moment read,
    turning false (with ``lost`` set and ``on_lost`` called) no later than
    the moment the store may give the lock to another; ``token`` is strictly
    higher for every later holder of the same lock name.
    """

    _kind: ClassVar[str] = "lock"

    def __init__(self, name: str, *, store: Store | None = None, ttl: float = 10.0, lease: Lease | None = None) -> None:
        super().__init__(name, 1, store=store, ttl=ttl, lease=lease)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} {'held' if self.holding else 'unheld'}>"
