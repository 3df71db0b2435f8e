"""``cancel_on_loss()``: a block that is cancelled when its lock or leadership is lost, at the client deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._errors import LeaseExpired
from .._lease import Lease

__all__ = ["cancel_on_loss"]

# A deadline check runs this long after the deadline, so that the clock has surely passed it.
_SLACK = 0.001


@contextlib.asynccontextmanager
async def cancel_on_loss(
    what: str,
    held: Callable[[], bool],
    lease: Callable[[], Lease | None],
    on_lost: Callable[[Callable[[Any], Any]], Callable[[], None]],
) -> AsyncIterator[None]:
    """Run the block while ``held()``; cancel it the moment the holding is lost, raising ``LeaseExpired``.

    Two things wake it: the holding's ``on_lost`` (its key found gone, the
    store saying the lease ended) and a timer of the loop's at the lease's
    deadline, checked again at each renewal, so the block stops at the
    client deadline even if nothing else has run. The block sees
    ``CancelledError``; the ``async with`` raises ``LeaseExpired``.
    """
    task = asyncio.current_task()
    assert task is not None, "cancel_on_loss() runs in a task"
    loop = asyncio.get_running_loop()
    state = {"active": True, "lost": False}
    timer: asyncio.TimerHandle | None = None

    def fire() -> None:
        if state["active"] and not state["lost"]:
            state["lost"] = True
            task.cancel()

    def check() -> None:
        nonlocal timer
        current = lease()
        if not held() or current is None:
            fire()
            return
        delay = max(0.0, current.deadline - current._clock.now()) + _SLACK
        timer = loop.call_later(delay, check)

    if not held():
        raise LeaseExpired(f"{what} is not held")
    forget = on_lost(lambda _holder: loop.call_soon_threadsafe(fire))
    check()
    try:
        yield
    except asyncio.CancelledError:
        if not state["lost"]:
            raise
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: this cancellation was ours, not the caller's
        if uncancel is not None:
            uncancel()
        raise LeaseExpired(f"{what} was lost while the block ran") from None
    finally:
        state["active"] = False
        forget()
        if timer is not None:
            timer.cancel()
