"""Tickets, and the herd-free wait for one's turn that Election, Lock and Semaphore share.

The protocol is etcd's (``client/v3/concurrency``), generalised to ``limit``
holders:

* A contender creates (create-only) a *ticket*, the key
  ``<prefix>/<random id>``, bound to the Store's session of its ttl (or to a
  lease the caller gave), and lists the queue, in one transaction. Tickets
  are ordered by ``KVPair.created``; the first ``limit`` hold. A holder's
  ``created`` is its fencing token.
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
* The lease is the contender's liveness, shared with every other holder of
  the same session: letting go is one delete of the ticket (``_release``),
  and a contender whose session is lost while it waits starts again at the
  back, in a new session.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import quote

from .._connect import default_store
from .._errors import KeyExists, KeyModified, KeyNotFound, LeaseExpired, StoreUnavailable
from .._lease import Lease
from .._store import Store
from .._types import KVPair
from ._release import withdraw
from ._steps import Steps, call
from ._waits import TicketLost, wait_any_deleted, wait_changed

__all__ = ["Hold", "TicketLost", "enqueue", "join", "ticket_key", "name_segment", "resolve", "wait_turn"]

log = logging.getLogger("coord.recipes")

# A create-only write whose reply is lost is retried this many times in all.
_CREATE_ATTEMPTS = 3


def name_segment(name: str) -> str:
    """A recipe's name as one key segment: ``"jobs/7"`` is quoted, not nested."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a recipe's name must be a non-empty str, not {name!r}")
    return quote(name, safe="")


def resolve(store: Store | None) -> Store:
    """``store``, or the process-wide default store when it is ``None``."""
    return default_store() if store is None else store


def ticket_key(prefix: str) -> str:
    """A fresh ticket's key under ``prefix``: a random name, this contender's alone."""
    return f"{prefix}/{uuid.uuid4().hex}"


def enqueue(store: Store, key: str, prefix: str, value: bytes, lease: Lease) -> tuple[KVPair, list[KVPair]]:
    """Create the ticket ``key`` bound to ``lease``, and list the queue under ``prefix``, in one transaction.

    A create whose reply was lost may have been applied: before creating
    again, look for the key by its (unique) name and adopt it if it is
    there, so no second ticket is ever left behind. On failure the caller
    withdraws ``key`` (which it named before the call), since the create
    may have landed.
    """
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            mine, queue = store.transaction().put(key, value, previous=None, lease=lease).list(prefix).commit()
            return mine, queue
        except KeyExists:
            pass  # the name is ours alone: an earlier attempt of ours made it
        except StoreUnavailable:
            if attempt == _CREATE_ATTEMPTS:
                raise
        try:
            mine, queue = store.transaction().get(key).list(prefix).commit()
        except StoreUnavailable:
            continue
        if mine is not None:
            return mine, queue
    raise TicketLost(f"ticket {key} kept vanishing as it was created")


class Hold:
    """A ticket that holds: its lease and its key as the store last confirmed them."""

    def __init__(self, store: Store, lease: Lease, pair: KVPair, woke: float | None = None) -> None:
        self.store = store
        self.lease = lease
        self.pair = pair
        self.woke = woke  # when (store clock) its wait last ended because someone ahead left; None: no wait
        self.released = False
        self.gone = False  # its ticket was found gone while its lease lived

    @property
    def token(self) -> int:
        """The fencing token: the ticket's ``created``, higher for every later holder."""
        return self.pair.created

    @property
    def alive(self) -> bool:
        """Exact at the moment read: false from the moment the store may remove the ticket."""
        return not self.released and not self.gone and self.lease.alive

    def release(self) -> None:
        """Give the turn up: delete the ticket, which wakes the next waiter. Idempotent."""
        if self.released:
            return
        self.released = True
        withdraw(self.store, self.pair.key, self.lease)


def join(
    store: Store,
    prefix: str,
    value: bytes,
    *,
    ttl: float,
    lease: Lease | None,
    limit: int,
    timeout: float | None,
) -> Steps[Hold | None]:
    """Queue under ``prefix`` until among the first ``limit``; ``None`` if ``timeout`` passed first.

    The ticket is bound to ``lease``, or to the Store's session of ``ttl``.
    A ticket lost with its session is queued again in a new one; with a
    lease of the caller's, its loss raises ``LeaseExpired``.
    """
    clock = store.clock
    deadline = None if timeout is None else clock.now() + max(0.0, timeout)
    while True:
        holder = (yield from call(store.session, ttl)) if lease is None else lease
        # Named before it is created: whatever ends the wait (a cancellation thrown in as the create's reply
        # arrives, a reply lost), the key to withdraw is known.
        key = ticket_key(prefix)
        try:
            mine, queue = yield from call(enqueue, store, key, prefix, value, holder)
            mine, woke = yield from wait_turn(store, prefix, mine, holder, limit, deadline, queue)
            if holder.alive:
                return Hold(store, holder, mine, woke)
            reason = "its lease was lost as its turn came"
        except TicketLost as exc:
            reason = str(exc)
        except LeaseExpired as exc:
            if lease is not None or holder.alive:
                yield from call(withdraw, store, key, holder)
                raise
            reason = str(exc)  # the session ended as the ticket was written (a pause past its ttl, say)
        except TimeoutError:
            yield from call(withdraw, store, key, holder)
            return None
        except BaseException:
            yield from call(withdraw, store, key, holder)
            raise
        yield from call(withdraw, store, key, holder)
        if lease is not None:
            raise LeaseExpired(f"the lease given to wait under {prefix} was lost: {reason}", key=prefix)
        log.info("queueing again under %s: %s", prefix, reason)
        if deadline is not None and clock.now() >= deadline:
            return None


def wait_turn(
    store: Store,
    prefix: str,
    mine: KVPair,
    lease: Lease,
    limit: int,
    deadline: float | None,
    queue: list[KVPair] | None = None,
) -> Steps[tuple[KVPair, float | None]]:
    """Block until ``mine`` is among the first ``limit`` tickets under ``prefix``; return it as it now is.

    Also returns when (store clock) its last wait ended, ``None`` if it did
    not wait. ``queue`` is the list of tickets read with ``mine``'s creation,
    if any (it saves the first list). Raises ``TimeoutError`` at ``deadline``
    and ``TicketLost`` if the ticket vanished. Every wake-up is logged at
    DEBUG on ``coord.recipes`` with the waiter's key in
    ``record.coord_waiter``, so tests can count them.
    """
    woke: float | None = None
    while True:
        if queue is None:
            queue = yield from call(store.list, prefix)
        tickets = sorted(queue, key=lambda pair: pair.created)
        queue = None
        me = next((pair for pair in tickets if pair.key == mine.key), None)
        if me is None:
            raise TicketLost(f"ticket {mine.key} is gone: its lease was lost")
        ahead = [pair for pair in tickets if pair.created < me.created]
        if len(ahead) < limit:
            # A later contender may have listed us while we still waited, and be watching us for
            # that: tell it we moved up. One created after this list sees us holding already.
            behind = len(tickets) > len(ahead) + 1
            return ((yield from call(_touch, store, me, lease)) if limit > 1 and behind else me), woke
        if deadline is not None and store.clock.now() >= deadline:
            raise TimeoutError
        if limit > 1 and len(ahead) == limit:
            reason = yield from wait_any_deleted(store, prefix, ahead, lease, deadline)
        else:
            reason = yield from wait_changed(store, ahead[-1], lease, deadline, wake_on_put=limit > 1)
        woke = store.clock.now()
        log.debug("waiter %s woke: %s", mine.key, reason, extra={"coord_waiter": mine.key})
        if limit == 1:
            # No ticket can get ahead of ours, so after the predecessor's delete only the tickets that were
            # ahead need a look, and ours: the store may have dropped our lease while we waited (a revoke, a
            # failover that lost it) before our client could know. One read in all.
            queue = yield from call(_still_there, store, [me, *ahead[:-1]])


def _still_there(store: Store, tickets: list[KVPair]) -> list[KVPair]:
    """Those of ``tickets`` that still exist, as they are now, read in one transaction."""
    txn = store.transaction()
    for pair in tickets:
        txn.get(pair.key)
    return [pair for pair in txn.commit() if pair is not None]


def _touch(store: Store, me: KVPair, lease: Lease) -> KVPair:
    try:
        return store.atomic_put(me.key, me.value, me, lease=lease)
    except (KeyNotFound, KeyModified, LeaseExpired) as exc:
        raise TicketLost(f"ticket {me.key} is gone: {exc}") from exc
