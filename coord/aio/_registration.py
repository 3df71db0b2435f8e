"""Service registration and discovery for asyncio: the threaded ``Registration``, its calls off the loop."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast

from .._lease import Lease
from ..recipes import registration
from ._driver import in_pool
from ._recipes import HolderView, _observe, _resolve
from ._store import AsyncStore

__all__ = ["Registration", "discover", "register", "registered_service", "watch_service"]

F = TypeVar("F", bound=Callable[..., Any])


class Registration(HolderView):
    """``coord.Registration`` for asyncio: ``await close()``, ``async with``; it re-registers by itself as there."""

    def __init__(self, store: AsyncStore, inner: registration.Registration) -> None:
        self._store = store
        self._inner: registration.Registration = inner
        self.sync = inner

    @property
    def id(self) -> str:
        return self.sync.id

    @property
    def registered(self) -> bool:
        return self.sync.registered

    async def close(self) -> None:
        await in_pool(self._store.executor, self.sync.close)

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<aio.Registration {self.sync.service!r} {self.id} {'up' if self.registered else 'down'}>"


async def register(
    service: str,
    *,
    address: str,
    metadata: Mapping[str, Any] | None = None,
    ttl: float = 10.0,
    store: AsyncStore | None = None,
    lease: Lease | None = None,
) -> Registration:
    """``coord.register`` for asyncio."""
    resolved = await _resolve(store)
    inner = await resolved._open(  # cancelled as it registers: the registration is closed, not kept alive
        registration.Registration.close,
        registration.Registration,
        resolved.sync,
        service,
        address=address,
        metadata=metadata,
        ttl=ttl,
        lease=lease,
    )
    return Registration(resolved, inner)


def registered_service(
    service: str,
    *,
    address: str,
    ttl: float = 10.0,
    metadata: Mapping[str, Any] | None = None,
    store: AsyncStore | None = None,
    lease: Lease | None = None,
) -> Callable[[F], F]:
    """Decorate an ``async def`` to run registered as ``service`` (registered before it starts, closed after)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            async with await register(service, address=address, metadata=metadata, ttl=ttl, store=store, lease=lease):
                return await function(*args, **kwargs)

        return cast(F, run)

    return decorate


async def discover(service: str, *, store: AsyncStore | None = None) -> list[registration.Instance]:
    resolved = await _resolve(store)
    return await in_pool(resolved.executor, functools.partial(registration.discover, service, store=resolved.sync))


async def watch_service(service: str, *, store: AsyncStore | None = None) -> AsyncIterator[list[registration.Instance]]:
    """The live instances of ``service`` now, then again each time the list changes."""
    resolved = await _resolve(store)
    prefix = registration._service_prefix(service)
    async for instances in _observe(
        resolved, prefix, functools.partial(registration.discover, service, store=resolved.sync)
    ):
        yield instances
