"""The asyncio Store: every operation awaitable, watches iterated with ``async for``.

An ``AsyncStore`` wraps a threaded ``coord.Store``: one implementation of
every backend, its leases kept by the same keeper. Each operation runs on
the Store's own pool of worker threads (a round trip or a few, never a
wait), so the event loop is never blocked; a watch's events are awaited on
the loop, woken by the backend's thread, with no thread per watch. A
caller cancelled while its call runs leaves nothing open: a watch or lease
that call opens is closed once it returns.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .._connect import connect as connect_sync
from .._connect import default_store as default_sync_store
from .._errors import StoreClosed
from .._lease import Lease
from .._store import Store
from .._txn import ANY, Transaction
from .._types import Event, KVPair, ServerTime
from .._watch import Watch
from ._driver import in_pool, next_item

__all__ = ["AsyncStore", "AsyncTransaction", "AsyncWatch", "connect", "default_store"]

T = TypeVar("T")

#: Worker threads per AsyncStore: store calls are short, so a few serve any number of coroutines.
WORKERS = 4


class AsyncStore:
    """A Store for asyncio code; ``sync`` is the threaded Store it wraps (see ``coord.Store`` for each method)."""

    def __init__(self, store: Store) -> None:
        self.sync = store
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"coord-aio-{store.backend}")

    @property
    def backend(self) -> str:
        return self.sync.backend

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_pool(self.executor, functools.partial(fn, *args, **kwargs))

    async def _open(self, close: Callable[[T], object], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like ``_run``, for a call that opens something (a watch, a lease): if the caller is cancelled
        while it runs, what it opens is closed (``close``, on the pool) instead of left open for good."""
        future = in_pool(self.executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(self._close_opened, close))
            raise

    def _close_opened(self, close: Callable[[T], object], done: asyncio.Future[T]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # nothing was opened
        with contextlib.suppress(RuntimeError):  # the pool is shut: the Store is closed, and what it opened with it
            self.executor.submit(close, done.result())

    async def put(self, key: str, value: bytes, *, ttl: float | None = None, lease: Lease | None = None) -> KVPair:
        return await self._run(self.sync.put, key, value, ttl=ttl, lease=lease)

    async def get(self, key: str) -> KVPair:
        return await self._run(self.sync.get, key)

    async def exists(self, key: str) -> bool:
        return await self._run(self.sync.exists, key)

    async def delete(self, key: str) -> None:
        await self._run(self.sync.delete, key)

    async def list(self, prefix: str) -> builtins.list[KVPair]:
        return await self._run(self.sync.list, prefix)

    async def delete_tree(self, prefix: str) -> None:
        await self._run(self.sync.delete_tree, prefix)

    async def atomic_put(
        self, key: str, value: bytes, previous: KVPair | None, *, ttl: float | None = None, lease: Lease | None = None
    ) -> KVPair:
        return await self._run(self.sync.atomic_put, key, value, previous, ttl=ttl, lease=lease)

    async def atomic_delete(self, key: str, previous: KVPair) -> None:
        await self._run(self.sync.atomic_delete, key, previous)

    def transaction(self) -> AsyncTransaction:
        return AsyncTransaction(self, self.sync.transaction())

    async def watch(self, key: str, *, start_revision: int | None = None) -> AsyncWatch:
        return AsyncWatch(await self._open(Watch.close, self.sync.watch, key, start_revision=start_revision))

    async def watch_tree(self, prefix: str, *, start_revision: int | None = None) -> AsyncWatch:
        return AsyncWatch(await self._open(Watch.close, self.sync.watch_tree, prefix, start_revision=start_revision))

    async def lease(self, ttl: float) -> Lease:
        """A Lease (``await store.revoke(lease)`` ends it without blocking the loop)."""
        return await self._open(Lease.revoke, self.sync.lease, ttl)

    async def session(self, ttl: float = 10.0) -> Lease:
        return await self._run(self.sync.session, ttl)

    async def server_time(self) -> ServerTime | None:
        return await self._run(self.sync.server_time)

    async def revoke(self, lease: Lease) -> None:
        await self._run(lease.revoke)

    async def close(self) -> None:
        await self._run(self.sync.close)
        self.executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncStore {self.sync.describe()}{' closed' if self.closed else ''}>"


class AsyncTransaction:
    """``Transaction`` for asyncio: add operations as there, then ``await commit()``."""

    def __init__(self, store: AsyncStore, txn: Transaction) -> None:
        self._store = store
        self._txn = txn

    def check(self, key: str, previous: KVPair | None) -> AsyncTransaction:
        self._txn.check(key, previous)
        return self

    def put(
        self, key: str, value: bytes, *, previous: Any = ANY, ttl: float | None = None, lease: Lease | None = None
    ) -> AsyncTransaction:
        self._txn.put(key, value, previous=previous, ttl=ttl, lease=lease)
        return self

    def delete(self, key: str, *, previous: Any = ANY) -> AsyncTransaction:
        self._txn.delete(key, previous=previous)
        return self

    def get(self, key: str) -> AsyncTransaction:
        self._txn.get(key)
        return self

    def list(self, prefix: str) -> AsyncTransaction:
        self._txn.list(prefix)
        return self

    async def commit(self) -> builtins.list[Any]:
        return await self._store._run(self._txn.commit)


class AsyncWatch:
    """A watch for asyncio: ``async for event in watch``, ``await watch.get(timeout)``, ``close()``."""

    def __init__(self, watch: Watch) -> None:
        self.sync = watch

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds."""
        item = await next_item(self.sync, timeout)
        if item is None:
            return None
        assert isinstance(item, Event)
        return item

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self.get()
        except StoreClosed:
            raise StopAsyncIteration from None
        assert event is not None
        return event

    def close(self) -> None:
        self.sync.close()

    @property
    def closed(self) -> bool:
        return self.sync.closed

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


async def connect(url: str | None = None, **options: object) -> AsyncStore:
    """``coord.connect`` for asyncio: ``async with await coord.aio.connect(url) as store`` (or just await it)."""
    return AsyncStore(await asyncio.to_thread(connect_sync, url, **options))


_default: AsyncStore | None = None


async def default_store() -> AsyncStore:
    """The process's default Store (``coord.default_store()``), for asyncio."""
    global _default
    store = await asyncio.to_thread(default_sync_store)
    if _default is None or _default.sync is not store:
        _default = AsyncStore(store)
    return _default
