"""Lock, Semaphore, Election, Barrier and DoubleBarrier for asyncio: the threaded recipes' protocols, driven on the loop.

Each class wraps the threaded recipe of the same name and runs that
recipe's own protocol (``coord/recipes``) through ``drive``: the same
queue, the same tickets, the same guarantees (docs/recipes.md), with
store calls on the AsyncStore's worker pool and waits on the loop. Only
what serialises a holder's own users changes: an ``asyncio.Lock`` where
the threaded recipe has a ``threading.Lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .._keys import check_timeout
from .._lease import Lease
from ..recipes import election as threaded_election
from ..recipes import lock as threaded_lock
from ..recipes import semaphore as threaded_semaphore
from ..recipes._observe import Observer
from ..recipes.barrier import Barrier as ThreadedBarrier
from ..recipes.barrier import DoubleBarrier as ThreadedDoubleBarrier
from ..recipes.barrier import _Arrival, _deadline
from ._driver import drive, in_pool
from ._loss import cancel_on_loss
from ._store import AsyncStore, default_store

__all__ = ["Barrier", "DoubleBarrier", "Election", "Leadership", "Lock", "Semaphore"]


ViewT = TypeVar("ViewT", bound="HolderView")


class HolderView:
    """The holding protocol of an asyncio holder: its threaded namesake's (``_inner``), read as is."""

    _inner: Any

    @property
    def held(self) -> bool:
        return bool(self._inner.held)

    @property
    def token(self) -> int:
        return int(self._inner.token)

    @property
    def lost(self) -> threading.Event:
        lost: threading.Event = self._inner.lost
        return lost

    @property
    def lease(self) -> Lease | None:
        lease: Lease | None = self._inner.lease
        return lease

    def on_lost(self: ViewT, callback: Callable[[ViewT], Any]) -> None:
        """Call ``callback(self)`` each time a holding of this object is lost (on the Store's callbacks thread)."""
        self._inner.on_lost(lambda _inner: callback(self))


async def _resolve(store: AsyncStore | None) -> AsyncStore:
    return await default_store() if store is None else store


class Semaphore(HolderView):
    """``coord.Semaphore`` for asyncio: ``await acquire()``, ``await release()``, ``async with``."""

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        store: AsyncStore | None = None,
        ttl: float = 10.0,
        lease: Lease | None = None,
    ) -> None:
        self._inner: threaded_semaphore.Semaphore = self._threaded(name, limit, ttl, lease)
        self._store = store
        self._local = asyncio.Lock()  # a held object is held by one coroutine at a time
        self._holder: AsyncStore | None = None

    @staticmethod
    def _threaded(name: str, limit: int, ttl: float, lease: Lease | None) -> threaded_semaphore.Semaphore:
        return threaded_semaphore.Semaphore(name, limit, ttl=ttl, lease=lease)

    @property
    def name(self) -> str:
        return self._inner.name

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot; ``False`` if ``blocking`` is false and none is free, or after ``timeout`` seconds.

        Cancelling the coroutine while it waits leaves no ticket behind.
        """
        if not blocking and timeout is not None:
            raise ValueError("can't specify a timeout for a non-blocking call")
        timeout = 0.0 if not blocking else check_timeout(timeout)
        store = await _resolve(self._store)
        loop = asyncio.get_running_loop()
        start, started = loop.time(), store.sync.clock.now()
        if not await _take_local(self._local, timeout):
            return False
        try:
            remaining = None if timeout is None else max(0.0, timeout - (loop.time() - start))
            hold = await drive(self._inner._join(store.sync, remaining), store.executor)
        except BaseException:
            self._local.release()
            raise
        if hold is None:
            self._local.release()
            return False
        self._inner._took(store.sync, hold, started)
        self._holder = store
        return True

    async def release(self) -> None:
        """Give the slot up (``RuntimeError`` if not held); the next waiter is woken."""
        hold = self._inner._let_go()
        store, self._holder = self._holder, None
        assert store is not None
        try:
            await in_pool(store.executor, hold.release)
        finally:
            self._local.release()

    def cancel_on_loss(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with sem.cancel_on_loss():`` — the block is cancelled (``LeaseExpired``) if the slot is lost."""
        return cancel_on_loss(repr(self._inner), lambda: self.holding, lambda: self.lease, self._inner._holding.on_lost)

    @property
    def holding(self) -> bool:
        return self._inner.holding

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<aio.{type(self).__name__} {self.name!r} {'held' if self.holding else 'unheld'}>"


class Lock(Semaphore):
    """``coord.Lock`` for asyncio."""

    def __init__(
        self, name: str, *, store: AsyncStore | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        super().__init__(name, 1, store=store, ttl=ttl, lease=lease)

    @staticmethod
    def _threaded(name: str, limit: int, ttl: float, lease: Lease | None) -> threaded_semaphore.Semaphore:
        return threaded_lock.Lock(name, ttl=ttl, lease=lease)

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self


async def _take_local(local: asyncio.Lock, timeout: float | None) -> bool:
    if timeout is None:
        await local.acquire()
        return True
    if timeout == 0:
        if local.locked():
            return False
        await local.acquire()
        return True
    try:
        await asyncio.wait_for(local.acquire(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


class Election:
    """``coord.Election`` for asyncio: ``leadership = await election.campaign()``, ``async for v in observe()``."""

    def __init__(
        self,
        name: str,
        *,
        store: AsyncStore | None = None,
        ttl: float = 10.0,
        value: bytes = b"",
        lease: Lease | None = None,
    ) -> None:
        self._inner = threaded_election.Election(name, ttl=ttl, value=value, lease=lease)
        self._store = store

    @property
    def name(self) -> str:
        return self._inner.name

    async def campaign(self, timeout: float | None = None) -> Leadership:
        """Wait until this candidate leads; ``TimeoutError`` after ``timeout``. Cancelling leaves no ticket behind."""
        timeout = check_timeout(timeout)
        store = await _resolve(self._store)
        started = store.sync.clock.now()
        hold = await drive(self._inner._join(store.sync, timeout), store.executor)
        if hold is None:
            raise TimeoutError(f"not elected leader of {self.name!r} within {timeout} s")
        return Leadership(store, self._inner._won(store.sync, hold, started))

    async def leader(self) -> bytes | None:
        store = await _resolve(self._store)
        prefix = self._inner._prefix
        tickets = await store.list(prefix)
        return min(tickets, key=lambda pair: pair.created).value if tickets else None

    async def observe(self) -> AsyncIterator[bytes]:
        """The leader's value now and each time the leader or its value changes."""
        store = await _resolve(self._store)
        prefix = self._inner._prefix

        def leader() -> tuple[str, bytes] | None:
            first = min(store.sync.list(prefix), key=lambda pair: pair.created, default=None)
            return None if first is None else (first.key, first.value)

        async for _key, value in _observe(store, prefix, leader):
            yield value


async def _observe(store: AsyncStore, prefix: str, read: Callable[[], Any]) -> AsyncIterator[Any]:
    observer = Observer(store.sync, prefix, read)
    try:
        while (value := await drive(observer.next(), store.executor)) is not None:
            yield value
    finally:
        observer.close()


class Leadership(HolderView):
    """``coord.Leadership`` for asyncio: ``await resign()``, ``await proclaim(v)``, ``cancel_on_loss()``."""

    def __init__(self, store: AsyncStore, inner: threaded_election.Leadership) -> None:
        self._store = store
        self._inner: threaded_election.Leadership = inner

    @property
    def is_leader(self) -> bool:
        return self._inner.is_leader

    @property
    def value(self) -> bytes:
        return self._inner.value

    def cancel_on_loss(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with leadership.cancel_on_loss():`` — the block is cancelled (``LeaseExpired``) once deposed."""
        return cancel_on_loss(
            repr(self._inner), lambda: self.is_leader, lambda: self.lease, self._inner._holding.on_lost
        )

    async def proclaim(self, value: bytes) -> None:
        await in_pool(self._store.executor, self._inner.proclaim, value)

    async def resign(self) -> None:
        await in_pool(self._store.executor, self._inner.resign)

    async def __aenter__(self) -> Leadership:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.resign()


class Barrier:
    """``coord.Barrier`` for asyncio: ``await barrier.wait(timeout)``."""

    def __init__(
        self, name: str, parties: int, *, store: AsyncStore | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        self._inner = ThreadedBarrier(name, parties, ttl=ttl, lease=lease)
        self._store = store

    async def wait(self, timeout: float | None = None) -> None:
        store = await _resolve(self._store)
        inner = self._inner
        arrival = _Arrival(store.sync, inner._base, inner.parties, inner.ttl, inner._lease)
        await drive(arrival.arrive(_deadline(store.sync, timeout), inner.name), store.executor)
        await in_pool(store.executor, arrival.leave)


class DoubleBarrier:
    """``coord.DoubleBarrier`` for asyncio: ``await enter()``, ``await leave()``, ``async with``."""

    def __init__(
        self, name: str, parties: int, *, store: AsyncStore | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        self._inner = ThreadedDoubleBarrier(name, parties, ttl=ttl, lease=lease)
        self._store = store
        self._lock = asyncio.Lock()

    async def enter(self, timeout: float | None = None) -> None:
        async with self._lock:
            inner = self._inner
            if inner._inside is not None:
                raise RuntimeError("already entered")
            store = await _resolve(self._store)
            arrival = _Arrival(store.sync, inner._base, inner.parties, inner.ttl, inner._lease)
            await drive(arrival.arrive(_deadline(store.sync, timeout), inner.name), store.executor)
            inner._entered(arrival)

    async def leave(self, timeout: float | None = None) -> None:
        async with self._lock:
            inner = self._inner
            arrival = inner._inside
            if arrival is None:
                raise RuntimeError("not entered")
            store = await _resolve(self._store)
            deadline = _deadline(arrival.store, timeout)
            inner._inside = None
            inner._holding.end()
            try:
                await drive(inner._leave(arrival, deadline), store.executor)
            except TimeoutError:
                raise TimeoutError(f"not everyone left double barrier {inner.name!r} within {timeout} s") from None
            finally:
                await in_pool(store.executor, arrival.leave)

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.leave()
