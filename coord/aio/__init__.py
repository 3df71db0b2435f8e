"""coord for asyncio: the same Store API and recipes, awaitable.

::

    async with await coord.aio.connect("redis://127.0.0.1:6379") as store:
        async with coord.aio.Lock("jobs", store=store) as lock:
            async with lock.cancel_on_loss():      # cancelled at the client deadline if the lock is lost
                await do_work(fencing_token=lock.token)
        leadership = await coord.aio.Election("svc", store=store).campaign()
        async for value in coord.aio.Election("svc", store=store).observe():
            ...

Every class wraps its threaded namesake and runs the same protocol (one
queue, one implementation: docs/asyncio.md): store calls on the Store's
pool of worker threads, waits on the event loop, so the loop is never
blocked and no thread waits per lock. Cancelling a task blocked in
``acquire()`` or ``campaign()`` leaves no ticket behind.
"""

from ..recipes.registration import Instance
from ._recipes import Barrier, DoubleBarrier, Election, Leadership, Lock, Semaphore
from ._registration import Registration, discover, register, registered_service, watch_service
from ._store import AsyncStore, AsyncTransaction, AsyncWatch, connect, default_store

__all__ = [
    "AsyncStore",
    "AsyncTransaction",
    "AsyncWatch",
    "Barrier",
    "DoubleBarrier",
    "Election",
    "Instance",
    "Leadership",
    "Lock",
    "Registration",
    "Semaphore",
    "connect",
    "default_store",
    "discover",
    "register",
    "registered_service",
    "watch_service",
]
