"""Service registration with TTL heartbeats, and discovery.

An instance is the key ``services/<service>/<instance id>`` holding JSON
``{"address", "metadata", "registered_at"}``, bound to the Store's session
of its ttl (or to a lease the caller gives), which the store's keeper renews:
one heartbeat per Store and ttl, however many instances. If the session is
lost (the process was paused, the store was unreachable past the ttl) the
key is gone from the store; the instance then registers again, under the
same id and in a new session, as soon as the store answers, retried with
backoff on the Store clock's ``"reregister"`` lane. An instance bound to a
lease of the caller's cannot outlive that lease: it does not register again.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from .._errors import CoordError, KeyNotFound, StoreClosed
from .._keys import check_ttl
from .._lease import Lease
from .._store import Store
from .._types import KVPair
from ._holding import Holder, Holding
from ._observe import observe
from ._queue import name_segment, resolve
from ._release import withdraw

__all__ = ["Instance", "Registration", "discover", "register", "registered_service", "watch_service"]

log = logging.getLogger("coord.recipes")

F = TypeVar("F", bound=Callable[..., Any])

# Re-registration retries back off from the first to the last delay, in seconds.
_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0


@dataclass(frozen=True)
class Instance:
    """One live instance of a service, as ``discover`` finds it."""

    service: str
    id: str
    address: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    registered_at: float = 0.0  # time.time() when this instance (last) registered


class Registration(Holder):
    """A registered instance; a context manager that deregisters on exit.

    It follows the holding protocol (docs/recipes.md): ``registered`` (or
    ``held``) is exact at the moment read (the lease is alive); ``token`` is
    the ``created`` of the current registration's key; ``lease``, ``lost``
    and ``on_lost`` concern the current (or last) registration. After a
    lease loss the instance re-registers by itself, with the same ``id``,
    once the store answers again: a new holding, with a new ``lost``.
    """

    def __init__(
        self,
        store: Store,
        service: str,
        *,
        address: str,
        metadata: Mapping[str, Any] | None,
        ttl: float,
        lease: Lease | None = None,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ValueError("address must be a non-empty str")
        self.store = store
        self.service = service
        self.address = address
        self.metadata = dict(metadata or {})
        self.ttl = check_ttl(ttl)
        self.id = uuid.uuid4().hex
        self.key = f"{_service_prefix(service)}/{self.id}"
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._given = lease  # the caller's lease, else the Store's session
        self._pair: KVPair | None = None
        self._closed = False
        self._failures = 0  # failed re-registrations since the last success (for backoff)
        self._attempt = 0  # registrations tried: a failed one's key is deleted unless a later one wrote it
        self._gone = False  # the key was found deleted while its lease lived
        self._retries = store.clock.timers("reregister")
        self._holding: Holding[Registration] = Holding(self)
        self._holding.on_lost(self._lease_lost)
        with self._lock:
            self._register()

    @property
    def registered(self) -> bool:
        lease = self._lease
        return lease is not None and lease.alive and not self._closed and not self._gone

    @property
    def held(self) -> bool:
        """The holding protocol's name for ``registered``."""
        return self.registered

    @property
    def lease(self) -> Lease | None:
        """The current lease (a new one after each re-registration)."""
        return self._lease

    def close(self) -> None:
        """Deregister now: delete the key (retried in the background if the store does not answer). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._attempt += 1  # no failed attempt's deletion may run after this one
            self._holding.end()
            if self._pair is not None:
                withdraw(self.store, self.key, self._lease)

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Registration {self.service!r} {self.id} {'up' if self.registered else 'down'}>"

    # -- the work --------------------------------------------------------------

    def _register(self) -> None:
        """Write the key bound to the session (or the given lease). Called with ``_lock`` held."""
        body = {"address": self.address, "metadata": self.metadata, "registered_at": time.time()}
        lease = self.store.session(self.ttl) if self._given is None else self._given
        self._attempt += 1
        try:
            self._pair = self.store.put(self.key, json.dumps(body).encode(), lease=lease)
            self._gone = False
        except BaseException:
            self._forget(self._attempt, lease, 0)  # the put may have landed: the key must not outlive this call
            raise
        self._lease = lease
        self._holding.end()
        self._holding.begin(self.store, self.key, lease, self._pair.created, on_gone=self._key_gone)

    def _key_gone(self) -> None:
        """The key was deleted behind our back while the lease lives: register again, at once."""
        self._gone = True
        self._retries.call_soon(self._retry)

    def _forget(self, attempt: int, lease: Lease, failures: int) -> None:
        """Delete the key of a failed registration, retried on the lane, unless a later attempt owns the key.

        Called with ``_lock`` held, which a later attempt needs too: a retry
        can never delete the key a later, successful attempt wrote.
        """
        if attempt != self._attempt or self.store.closed or not lease.alive:
            return  # a later attempt owns the key, or the store drops it with its lease
        try:
            self.store.delete(self.key)
        except (KeyNotFound, StoreClosed):
            return
        except CoordError:
            delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(failures, 10))
            self._retries.call_at(self.store.clock.now() + delay, lambda: self._forget_later(attempt, lease, failures))

    def _forget_later(self, attempt: int, lease: Lease, failures: int) -> None:
        with self._lock:
            self._forget(attempt, lease, failures + 1)

    def _lease_lost(self, registration: Registration) -> None:
        # On the lease's callbacks lane: hand the work over to a lane of its own, never block here.
        self._retries.call_soon(self._retry)

    def _retry(self) -> None:
        """Register again if still needed; if the store does not answer, try again later, backing off."""
        with self._lock:
            if self._closed or self.store.closed or self.registered:
                return
            if self._given is not None and not self._given.alive:
                log.warning("%s is not registered again: the lease it was given is lost", self.key)
                return
            try:
                self._register()
            except Exception as exc:
                self._failures += 1
                if isinstance(exc, CoordError):
                    log.info("re-registering %s failed (%s); retrying", self.key, exc)
                else:  # a bug: log it loudly, and still keep trying
                    log.exception("re-registering %s failed unexpectedly; retrying", self.key)
                delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(self._failures, 10), self.ttl / 3)
                self._retries.call_at(self.store.clock.now() + delay, self._retry)
                return
            self._failures = 0
            log.info("re-registered %s after its lease was lost", self.key)


def register(
    service: str,
    *,
    address: str,
    metadata: Mapping[str, Any] | None = None,
    ttl: float = 10.0,
    store: Store | None = None,
    lease: Lease | None = None,
) -> Registration:
    """Register an instance of ``service`` at ``address`` until the Registration is closed.

    ``metadata`` must be JSON-serialisable. The key is bound to the Store's
    session of ``ttl``, or to ``lease``. The instance disappears from
    ``discover`` within ``ttl`` (plus the backend's expiry delay) if its
    process dies, and at once when closed.
    """
    return Registration(resolve(store), service, address=address, metadata=metadata, ttl=ttl, lease=lease)


def registered_service(
    service: str,
    *,
    address: str,
    ttl: float = 10.0,
    metadata: Mapping[str, Any] | None = None,
    store: Store | None = None,
    lease: Lease | None = None,
) -> Callable[[F], F]:
    """Decorate a function (plain or ``async def``) to run registered as ``service``.

    The instance is registered before the function starts and deregistered
    when it returns or raises. For coroutines the store calls run in a
    worker thread, so the event loop is never blocked.
    """

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                import asyncio  # here: most programs never need it, and it is slow to import

                registration = await asyncio.to_thread(
                    register, service, address=address, metadata=metadata, ttl=ttl, store=store, lease=lease
                )
                try:
                    return await function(*args, **kwargs)
                finally:
                    await asyncio.to_thread(registration.close)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with register(service, address=address, metadata=metadata, ttl=ttl, store=store, lease=lease):
                return function(*args, **kwargs)

        return cast(F, run)

    return decorate


def discover(service: str, *, store: Store | None = None) -> list[Instance]:
    """The live instances of ``service``, ordered by instance id."""
    found = (_instance(service, pair) for pair in resolve(store).list(_service_prefix(service)))
    return [instance for instance in found if instance is not None]


def watch_service(service: str, *, store: Store | None = None) -> Iterator[list[Instance]]:
    """The live instances of ``service`` now, then again each time the list changes.

    Ends when the store is closed; close the generator to stop watching.
    """
    store = resolve(store)
    yield from observe(store, _service_prefix(service), lambda: discover(service, store=store))


def _service_prefix(service: str) -> str:
    return f"services/{name_segment(service)}"


def _instance(service: str, pair: KVPair) -> Instance | None:
    try:
        body = json.loads(pair.value)
        return Instance(
            service=service,
            id=pair.key.rsplit("/", 1)[-1],
            address=str(body["address"]),
            metadata=dict(body.get("metadata") or {}),
            registered_at=float(body.get("registered_at", 0.0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring malformed instance %s: %s", pair.key, exc)
        return None
