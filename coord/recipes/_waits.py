"""Waiting on a watch with a safety net: the waits every recipe shares.

A wait blocks on one watch, so it costs no round trips while nothing
happens. It also wakes on a timer (at its lease's deadline, which is about
once a ttl while the lease is renewed, or every ``recheck_every`` seconds)
and then looks at the store itself: an event a backend's watch failed to
deliver (lost in a re-sync, say) delays a waiter by one such period, never
for ever. Each wait is a protocol of steps (``_steps``), run by the
threaded API and by ``coord.aio`` alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .._errors import CoordError, KeyNotFound, StoreClosed
from .._lease import Lease
from .._store import Store
from .._types import Event, KVPair
from .._watch import Watch
from ._steps import Steps, call, wait

__all__ = ["TicketLost", "next_batch", "next_event", "wait_any_deleted", "wait_changed", "wait_deleted"]

# Waiters wake this long after their lease's deadline to see whether it was lost.
_LEASE_CHECK_SLACK = 0.01


class TicketLost(Exception):
    """The contender's ticket is gone (its lease was lost): it must queue again."""


def next_event(
    watch: Watch,
    lease: Lease | None,
    deadline: float | None,
    store: Store,
    recheck: Callable[[], Event | None] | None = None,
    recheck_every: float | None = None,
) -> Steps[Event]:
    """The watch's next event; ``TicketLost`` once ``lease`` is lost, ``TimeoutError`` at ``deadline``.

    A lease is lost at its deadline at the latest, so waking then to look is
    enough. ``recheck``, called at each timed wake-up, may return the event
    the watch should have brought.
    """
    while True:
        now = store.clock.now()
        if lease is not None and not lease.alive:
            raise TicketLost(f"lease {lease.id} was lost while waiting")
        waits = [] if recheck_every is None else [recheck_every]
        if deadline is not None:
            if now >= deadline:
                raise TimeoutError
            waits.append(deadline - now)
        if lease is not None:
            waits.append(max(0.0, lease.deadline - now) + _LEASE_CHECK_SLACK)
        event = yield from wait(watch, min(waits, default=None))
        if event is None and recheck is not None:
            event = yield from call(_quietly, recheck)
        if event is not None:
            return event


def next_batch(watch: Watch) -> Steps[bool]:
    """Wait for the next change and take every one already queued; False once the watch ends."""
    try:
        yield from wait(watch, None)
        while watch.get(timeout=0) is not None:
            pass
    except StoreClosed:
        return False
    return True


def wait_changed(
    store: Store,
    pred: KVPair,
    lease: Lease | None,
    deadline: float | None,
    *,
    wake_on_put: bool,
    recheck_every: float | None = None,
) -> Steps[str]:
    """Wait until ``pred`` is deleted (or, with ``wake_on_put``, rewritten); say why it woke."""
    watch = yield from call(store.watch, pred.key)
    with watch:
        # A watch holds the key's current state when it returns: a put if it exists, nothing if not.
        current = watch.get(timeout=0)
        if current is None:
            return f"{pred.key} was already gone"
        if wake_on_put and current.revision != pred.revision:
            return f"{pred.key} had moved up"
        gone = functools.partial(_gone, store, pred.key)
        while True:
            event = yield from next_event(watch, lease, deadline, store, gone, recheck_every)
            if event.type == "delete":
                return f"{pred.key} was deleted"
            if wake_on_put and event.revision > pred.revision:
                return f"{pred.key} moved up"


def wait_deleted(
    store: Store, pair: KVPair, lease: Lease | None, deadline: float | None, recheck_every: float | None = None
) -> Steps[None]:
    """Block until ``pair``'s key is deleted (``TimeoutError`` at ``deadline``)."""
    yield from wait_changed(store, pair, lease, deadline, wake_on_put=False, recheck_every=recheck_every)


def wait_any_deleted(
    store: Store, prefix: str, holders: list[KVPair], lease: Lease, deadline: float | None
) -> Steps[str]:
    """The first waiter's wait: until any of the ``holders`` is deleted."""
    keys = {pair.key for pair in holders}

    def left() -> Event | None:
        gone = keys - {pair.key for pair in store.list(prefix)}
        return Event("delete", min(gone), None, 0) if gone else None

    watch = yield from call(store.watch_tree, prefix)
    with watch:
        if (yield from call(left)) is not None:
            return "a holder had already left"
        while True:
            event = yield from next_event(watch, lease, deadline, store, left)
            if event.type == "delete" and event.key in keys:
                return f"holder {event.key} left"


def _gone(store: Store, key: str) -> Event | None:
    """A delete event for ``key`` if it no longer exists (the watch should have said so)."""
    try:
        store.get(key)
    except KeyNotFound:
        return Event("delete", key, None, 0)
    return None


def _quietly(recheck: Callable[[], Event | None]) -> Event | None:
    try:
        return recheck()
    except CoordError:
        return None  # unreachable now: the next wake-up looks again
