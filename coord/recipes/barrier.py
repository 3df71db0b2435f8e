"""Barriers: wait until ``parties`` participants have arrived (and, doubled, until all have left).

Keys under ``barrier/<name>`` (or ``double-barrier/<name>``):

* ``arrived/<id>``: one ticket per participant, bound to its lease, so a
  participant that crashes stops counting when its lease expires;
* ``ready``: created (create-only) by the participant that sees ``parties``
  tickets. Every participant watches ``ready`` from *before* it creates its
  ticket, so it cannot miss the creation, even if ``ready`` is gone again by
  the time it looks. ``ready`` is bound to its creator's lease, so a crash
  leaves nothing behind.

A barrier name may be used again once a round is over; a participant that
arrives while the previous round's ``ready`` still exists passes with that
round.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from .._errors import KeyExists, KeyNotFound
from .._lease import Lease
from .._store import Store
from .._types import KVPair
from ._holding import Holding
from ._queue import TicketLost, create_ticket, name_segment, next_event, resolve, revoke_quietly, wait_deleted

__all__ = ["Barrier", "DoubleBarrier"]


class Barrier:
    """Block participants until ``parties`` of them have called ``wait``.

    A participant that crashes (or gives up with a timeout) before the
    barrier opens stops counting when its lease (``ttl``) ends.
    ``store=None`` uses ``coord.default_store()``.
    """

    def __init__(self, name: str, parties: int, *, store: Store | None = None, ttl: float = 10.0) -> None:
        self.name = name
        self.parties = _check_parties(parties)
        self.ttl = ttl
        self._store = store
        self._base = f"barrier/{name_segment(name)}"

    def wait(self, timeout: float | None = None) -> None:
        """Arrive and block until the barrier opens; ``TimeoutError`` (no longer counting) after ``timeout``."""
        store = resolve(self._store)
        lease, _ = _arrive(store, self._base, self.parties, self.ttl, _deadline(store, timeout), self.name)
        revoke_quietly(lease)  # leaving takes the ticket (and ``ready``, if ours) away

    def __repr__(self) -> str:
        return f"<Barrier {self.name!r} parties={self.parties}>"


class DoubleBarrier:
    """ZooKeeper's double barrier: ``enter`` blocks until ``parties`` have entered, ``leave`` until all have left.

    ``leave`` follows the ZooKeeper recipe: the participant with the oldest
    ticket leaves last, after waiting for the newest; every other one deletes
    its ticket and waits for the oldest. A participant that crashes inside
    counts as having left once its lease ends. Use as a context manager to
    enter and leave.
    """

    def __init__(self, name: str, parties: int, *, store: Store | None = None, ttl: float = 10.0) -> None:
        self.name = name
        self.parties = _check_parties(parties)
        self.ttl = ttl
        self._store = store
        self._base = f"double-barrier/{name_segment(name)}"
        self._lock = threading.Lock()
        self._inside: tuple[Store, Lease, KVPair] | None = None
        self._holding: Holding[DoubleBarrier] = Holding(self)

    @property
    def held(self) -> bool:
        """Whether this participant is inside and still counted (its lease alive)."""
        inside = self._inside
        return inside is not None and inside[1].alive

    @property
    def lost(self) -> threading.Event:
        """Set if the lease of the current (or last) entry was lost: the others may then leave without us."""
        return self._holding.lost

    def on_lost(self, callback: Callable[[DoubleBarrier], Any]) -> None:
        """Call ``callback(barrier)`` if the lease is lost while inside (on the lease's callbacks thread)."""
        self._holding.on_lost(callback)

    def enter(self, timeout: float | None = None) -> None:
        """Arrive and block until ``parties`` have entered; ``TimeoutError`` (not counted) after ``timeout``."""
        with self._lock:
            if self._inside is not None:
                raise RuntimeError("already entered")
            store = resolve(self._store)
            lease, ticket = _arrive(store, self._base, self.parties, self.ttl, _deadline(store, timeout), self.name)
            self._inside = (store, lease, ticket)
            self._holding.begin(lease, ticket.created)

    def leave(self, timeout: float | None = None) -> None:
        """Block until every participant has left (or crashed); ``TimeoutError`` after ``timeout``.

        Whatever happens, this participant no longer counts afterwards.
        """
        with self._lock:
            if self._inside is None:
                raise RuntimeError("not entered")
            store, lease, mine = self._inside
            self._inside = None
            try:
                self._leave(store, lease, mine, _deadline(store, timeout))
            except TimeoutError:
                raise TimeoutError(f"not everyone left double barrier {self.name!r} within {timeout} s") from None
            finally:
                revoke_quietly(lease)

    def _leave(self, store: Store, lease: Lease, mine: KVPair, deadline: float | None) -> None:
        # Whoever is still entering got ``ready``'s creation already; the next round must not see it.
        with contextlib.suppress(KeyNotFound):
            store.delete(f"{self._base}/ready")
        while True:
            tickets = sorted(store.list(f"{self._base}/arrived"), key=lambda pair: pair.created)
            here = any(pair.key == mine.key for pair in tickets)
            if not tickets or (here and len(tickets) == 1):
                return
            if here and tickets[0].key == mine.key:
                wait_deleted(store, tickets[-1], None, deadline)  # the oldest goes last
            else:
                if here:
                    revoke_quietly(lease)
                wait_deleted(store, tickets[0], None, deadline)

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()

    def __repr__(self) -> str:
        return f"<DoubleBarrier {self.name!r} parties={self.parties}>"


def _arrive(
    store: Store, base: str, parties: int, ttl: float, deadline: float | None, name: str
) -> tuple[Lease, KVPair]:
    """Add a ticket and block until ``ready`` exists; return the lease holding the ticket."""
    ready, arrived = f"{base}/ready", f"{base}/arrived"
    # Watch first: ``ready`` may be created, and deleted again, before we would look.
    with store.watch(ready) as watch:
        lease = store.lease(ttl)
        try:
            while True:
                mine = create_ticket(store, arrived, b"", lease)
                if len(store.list(arrived)) >= parties:
                    with contextlib.suppress(KeyExists):
                        store.atomic_put(ready, b"", None, lease=lease)
                    return lease, mine
                try:
                    while next_event(watch, lease, deadline, store).type != "put":
                        pass
                    return lease, mine
                except TicketLost:
                    # Our ticket went with the lease; arrive again (the watch, and its events, stay).
                    revoke_quietly(lease)
                    lease = store.lease(ttl)
        except TimeoutError:
            revoke_quietly(lease)
            raise TimeoutError(f"barrier {name!r} did not open within the timeout") from None
        except BaseException:
            revoke_quietly(lease)
            raise


def _deadline(store: Store, timeout: float | None) -> float | None:
    return None if timeout is None else store.clock.now() + max(0.0, timeout)


def _check_parties(parties: int) -> int:
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise ValueError(f"parties must be a positive int, not {parties!r}")
    return parties
