"""Tickets, and the herd-free wait for one's turn that Election, Lock and Semaphore share.

The protocol is etcd's (``client/v3/concurrency``), generalised to ``limit``
holders:

* A contender grants a lease of its own and creates (create-only) a *ticket*:
  the key ``<prefix>/<random id>`` bound to that lease. Tickets are ordered
  by ``KVPair.created``; the first ``limit`` hold. A holder's ``created`` is
  its fencing token.
* A contender that does not hold watches one thing, so that a release wakes
  one waiter instead of all of them:

  - with ``limit == 1``, its immediate predecessor (the ticket with the
    next-lower ``created``), until that ticket is deleted;
  - with ``limit > 1``, the *first* waiter (exactly ``limit`` tickets ahead
    of it, all holders) watches the prefix for the deletion of any of them,
    and every later waiter watches its immediate predecessor. A contender
    that becomes a holder while later tickets exist *touches* (rewrites) its
    ticket, which wakes its successor so that it moves up to first waiter.
    A release thus wakes two contenders at most, however many wait.

  On waking, a contender lists the tickets again and recomputes, since a
  predecessor may have left without ever holding (timed out, crashed).
* The lease is the contender's liveness. One lease per holder (not one per
  Store) so that giving up, by release or by error, is one ``revoke`` that
  takes the ticket with it; if even that fails, the store expires the lease
  within its ttl, so no orphaned ticket outlives it. A contender whose lease
  is lost while it waits starts again at the back with a new lease.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from urllib.parse import quote

from .._connect import default_store
from .._errors import CoordError, KeyExists, KeyModified, KeyNotFound, LeaseExpired, StoreClosed, StoreUnavailable
from .._lease import Lease
from .._store import Store
from .._types import Event, KVPair
from .._watch import Watch

__all__ = [
    "Hold",
    "TicketLost",
    "create_ticket",
    "join",
    "name_segment",
    "next_batch",
    "next_event",
    "resolve",
    "revoke_quietly",
    "wait_deleted",
    "wait_turn",
]

log = logging.getLogger("coord.recipes")

# A create-only write whose reply is lost is retried this many times in all.
_CREATE_ATTEMPTS = 3
# Waiters wake this long after their lease's deadline to see whether it was lost.
_LEASE_CHECK_SLACK = 0.01


class TicketLost(Exception):
    """The contender's ticket is gone (its lease was lost): it must queue again."""


def name_segment(name: str) -> str:
    """A recipe's name as one key segment: ``"jobs/7"`` is quoted, not nested."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a recipe's name must be a non-empty str, not {name!r}")
    return quote(name, safe="")


def resolve(store: Store | None) -> Store:
    """``store``, or the process-wide default store when it is ``None``."""
    return default_store() if store is None else store


def revoke_quietly(lease: Lease) -> None:
    """Revoke ``lease``; if the store cannot be told, it still expires the lease within its ttl."""
    try:
        lease.revoke()
    except CoordError as exc:
        # The keeper stopped renewing it before the call failed, so it will expire.
        log.warning("could not revoke %r (the store drops it within %.1f s): %s", lease, lease.ttl, exc)


def create_ticket(store: Store, prefix: str, value: bytes, lease: Lease) -> KVPair:
    """Create a fresh ticket under ``prefix`` bound to ``lease``, without ever leaving a second one behind.

    A create whose reply was lost may have been applied: before creating
    again, look for the key by its (unique) name and adopt it if it is there.
    """
    key = f"{prefix}/{uuid.uuid4().hex}"
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            return store.atomic_put(key, value, None, lease=lease)
        except KeyExists:
            pass  # the name is ours alone: an earlier attempt of ours made it
        except StoreUnavailable:
            if attempt == _CREATE_ATTEMPTS:
                raise
        try:
            return store.get(key)
        except KeyNotFound:
            continue
    raise TicketLost(f"ticket {key} kept vanishing as it was created")


class Hold:
    """A ticket that holds: its lease and its key as the store last confirmed them."""

    def __init__(self, store: Store, lease: Lease, pair: KVPair) -> None:
        self.store = store
        self.lease = lease
        self.pair = pair

    @property
    def token(self) -> int:
        """The fencing token: the ticket's ``created``, higher for every later holder."""
        return self.pair.created

    @property
    def alive(self) -> bool:
        """Exact at the moment read: false from the moment the store may remove the ticket."""
        return self.lease.alive

    def release(self) -> None:
        """Give the turn up: revoking the lease deletes the ticket, which wakes the next waiter."""
        revoke_quietly(self.lease)


def join(store: Store, prefix: str, value: bytes, *, ttl: float, limit: int, timeout: float | None) -> Hold | None:
    """Queue under ``prefix`` until among the first ``limit``; ``None`` if ``timeout`` passed first."""
    clock = store.clock
    deadline = None if timeout is None else clock.now() + max(0.0, timeout)
    while True:
        lease = store.lease(ttl)
        try:
            mine = create_ticket(store, prefix, value, lease)
            mine = wait_turn(store, prefix, mine, lease, limit, deadline)
            if lease.alive:
                return Hold(store, lease, mine)
            reason = "its lease was lost as its turn came"
        except TicketLost as exc:
            reason = str(exc)
        except TimeoutError:
            revoke_quietly(lease)
            return None
        except BaseException:
            revoke_quietly(lease)
            raise
        revoke_quietly(lease)
        log.info("queueing again under %s: %s", prefix, reason)
        if deadline is not None and clock.now() >= deadline:
            return None


def wait_turn(store: Store, prefix: str, mine: KVPair, lease: Lease, limit: int, deadline: float | None) -> KVPair:
    """Block until ``mine`` is among the first ``limit`` tickets under ``prefix``; return it as it now is.

    Raises ``TimeoutError`` at ``deadline`` and ``TicketLost`` if the ticket
    vanished. Every wake-up is logged at DEBUG on ``coord.recipes`` with the
    waiter's key in ``record.coord_waiter``, so tests can count them.
    """
    while True:
        tickets = sorted(store.list(prefix), key=lambda pair: pair.created)
        me = next((pair for pair in tickets if pair.key == mine.key), None)
        if me is None:
            raise TicketLost(f"ticket {mine.key} is gone: its lease was lost")
        ahead = [pair for pair in tickets if pair.created < me.created]
        if len(ahead) < limit:
            # A later contender may have listed us while we still waited, and be watching us for
            # that: tell it we moved up. One created after this list sees us holding already.
            behind = len(tickets) > len(ahead) + 1
            return _touch(store, me, lease) if limit > 1 and behind else me
        if deadline is not None and store.clock.now() >= deadline:
            raise TimeoutError
        if limit > 1 and len(ahead) == limit:
            reason = _wait_any_deleted(store, prefix, ahead, lease, deadline)
        else:
            reason = _wait_changed(store, ahead[-1], lease, deadline, wake_on_put=limit > 1)
        log.debug("waiter %s woke: %s", mine.key, reason, extra={"coord_waiter": mine.key})


def wait_deleted(store: Store, pair: KVPair, lease: Lease | None, deadline: float | None) -> None:
    """Block until ``pair``'s key is deleted (``TimeoutError`` at ``deadline``)."""
    _wait_changed(store, pair, lease, deadline, wake_on_put=False)


def next_event(
    watch: Watch,
    lease: Lease | None,
    deadline: float | None,
    store: Store,
    recheck: Callable[[], Event | None] | None = None,
) -> Event:
    """The watch's next event; ``TicketLost`` once ``lease`` is lost, ``TimeoutError`` at ``deadline``.

    A lease is lost at its deadline at the latest, so waking then to look is
    enough: the wait costs no round trips. ``recheck``, called at those
    wake-ups (about once a ttl), may return the event the watch should have
    brought: a safety net should a backend's watch miss one.
    """
    while True:
        now = store.clock.now()
        if lease is not None and not lease.alive:
            raise TicketLost(f"lease {lease.id} was lost while waiting")
        waits = []
        if deadline is not None:
            if now >= deadline:
                raise TimeoutError
            waits.append(deadline - now)
        if lease is not None:
            waits.append(max(0.0, lease.deadline - now) + _LEASE_CHECK_SLACK)
        event = watch.get(timeout=min(waits, default=None))
        if event is None and recheck is not None:
            event = recheck()
        if event is not None:
            return event


def next_batch(watch: Watch) -> bool:
    """Wait for the next change and take every one already queued; False once the watch ends."""
    if next(watch, None) is None:
        return False
    try:
        while watch.get(timeout=0) is not None:
            pass
    except StoreClosed:
        return False
    return True


def _touch(store: Store, me: KVPair, lease: Lease) -> KVPair:
    try:
        return store.atomic_put(me.key, me.value, me, lease=lease)
    except (KeyNotFound, KeyModified, LeaseExpired) as exc:
        raise TicketLost(f"ticket {me.key} is gone: {exc}") from exc


def _wait_changed(store: Store, pred: KVPair, lease: Lease | None, deadline: float | None, *, wake_on_put: bool) -> str:
    """Wait until ``pred`` is deleted (or, with ``wake_on_put``, rewritten)."""
    with store.watch(pred.key) as watch:
        # The watch is open: nothing from here on is missed. Check what came before it.
        try:
            current = store.get(pred.key)
        except KeyNotFound:
            return f"{pred.key} was already gone"
        if wake_on_put and current.revision != pred.revision:
            return f"{pred.key} had moved up"
        while True:
            event = next_event(watch, lease, deadline, store, recheck=lambda: _gone(store, pred.key))
            if event.type == "delete":
                return f"{pred.key} was deleted"
            if wake_on_put and event.revision > pred.revision:
                return f"{pred.key} moved up"


def _gone(store: Store, key: str) -> Event | None:
    """A delete event for ``key`` if it no longer exists (the watch should have said so)."""
    try:
        return None if store.exists(key) else Event("delete", key, None, 0)
    except CoordError:
        return None  # unreachable now: the next wake-up looks again


def _wait_any_deleted(store: Store, prefix: str, holders: list[KVPair], lease: Lease, deadline: float | None) -> str:
    """The first waiter's wait: until any of the ``holders`` is deleted."""
    keys = {pair.key for pair in holders}
    with store.watch_tree(prefix) as watch:
        if not keys <= {pair.key for pair in store.list(prefix)}:
            return "a holder had already left"
        while True:
            event = next_event(watch, lease, deadline, store)
            if event.type == "delete" and event.key in keys:
                return f"holder {event.key} left"
