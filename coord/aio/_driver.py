"""Running the recipes' protocols on an event loop: store calls on a worker pool, waits on the loop.

The recipes' protocols are generators of steps (``coord/recipes/_steps.py``).
``drive`` performs them for a coroutine: a ``Call`` (a store call, a round
trip or a few) runs on the Store's pool of worker threads; a ``Wait`` (a
watch's next event) is awaited on the loop itself, woken by the backend's
thread through the watch's ``notify`` hook, so no thread sits waiting for
a lock, however many coroutines wait.

Cancelling a coroutine in ``drive`` throws ``CancelledError`` into the
protocol at the step where it waits, so it cleans up (deletes its ticket)
exactly as on any other error. A store call already on its way is let
finish first, so that its effect is in place before the cleanup runs; the
cancellation is then thrown in at that call's step, and the call's result
is dropped (a watch it opened is closed). So a protocol names what a call
may create before making it (a ticket's key), and cleans up by that name.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .._watch import Watch
from ..recipes._steps import Call, Steps

__all__ = ["drive", "next_item"]

T = TypeVar("T")


async def drive(steps: Steps[T], executor: Executor) -> T:
    """Perform a protocol's steps for the calling coroutine; return its result (or raise its error)."""
    value: Any = None
    error: BaseException | None = None
    cancelled: asyncio.CancelledError | None = None
    while True:
        if cancelled is not None and error is None:
            error, cancelled = cancelled, None  # the cancellation reaches the protocol at its next step
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(step, Call):
                value, cancelled = await _call(step, executor)
                if cancelled is not None and isinstance(value, Watch):
                    value.close()  # the protocol never gets it, so nobody else would close it
            else:
                value = await next_item(step.watch, step.timeout)
        except BaseException as exc:  # thrown into the protocol, which cleans up and re-raises
            error = exc


async def _call(step: Call, executor: Executor) -> tuple[Any, asyncio.CancelledError | None]:
    """The call's result, and the cancellation that came while it ran (after it finished)."""
    future = asyncio.get_running_loop().run_in_executor(executor, step)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            return await asyncio.shield(future), cancelled
        except asyncio.CancelledError as exc:
            if future.cancelled():  # the pool itself gave up on the call
                raise
            cancelled = exc  # let the call finish: the protocol must know what it did


async def next_item(watch: Watch, timeout: float | None) -> Any:
    """The watch's next item (as ``Watch.get`` gives it), or ``None`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    ready = asyncio.Event()

    def wake() -> None:  # in the backend's thread
        loop.call_soon_threadsafe(ready.set)

    watch._on_ready(wake)
    try:
        while True:
            ready.clear()
            item = watch.get(timeout=0)  # after clear: an item queued from now on sets ``ready``
            if item is not None:
                return item
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                await asyncio.wait_for(ready.wait(), remaining)
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
                return None
    finally:
        watch._on_ready(None)


def in_pool(executor: Executor, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` on the Store's worker pool."""
    return asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))
