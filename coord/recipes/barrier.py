"""Barriers: wait until ``parties`` participants have arrived (and, doubled, until all have left).

Keys under ``barrier/<name>`` (or ``double-barrier/<name>``):

* ``round``: the number of the round now gathering (absent: round 0). A
  round opens when its number moves on: whoever sees ``parties`` tickets in
  the round swaps ``round`` from ``r`` to ``r + 1`` (compare-and-swap, so a
  round opens once). Every participant watches ``round`` from *before* it
  arrives, so it cannot miss the opening.
* ``<r>/<id>``: one ticket per participant of round ``r``, bound to its
  session (or the lease it was given), so a participant that crashes stops
  counting when its session expires. Only round ``r``'s tickets count
  toward round ``r``: a ticket left over from an earlier round (its owner
  killed right after passing, or slow to delete it) never opens a later
  one.

A participant that arrives in round ``r`` after it opened (it read
``round`` just before the swap) passes with it.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from .._errors import KeyExists, KeyModified, KeyNotFound
from .._keys import check_timeout, check_ttl
from .._lease import Lease
from .._store import Store
from .._types import Event, KVPair
from .._watch import Watch
from ._holding import Holder, Holding
from ._queue import name_segment, resolve
from ._release import withdraw
from ._steps import Steps, call, run
from ._waits import TicketLost, next_event, wait_deleted

__all__ = ["Barrier", "DoubleBarrier"]


class Barrier:
    """Block participants until ``parties`` of them have called ``wait``; then the next round gathers.

    A participant that crashes (or gives up with a timeout) before the
    barrier opens stops counting when its session (``ttl``, or ``lease``)
    ends. ``store=None`` uses ``coord.default_store()``.
    """

    def __init__(
        self, name: str, parties: int, *, store: Store | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        self.name = name
        self.parties = _check_parties(parties)
        self.ttl = check_ttl(ttl)
        self._store = store
        self._lease = lease
        self._base = f"barrier/{name_segment(name)}"

    def wait(self, timeout: float | None = None) -> None:
        """Arrive and block until the barrier opens; ``TimeoutError`` (no longer counting) after ``timeout``."""
        store = resolve(self._store)
        arrival = _Arrival(store, self._base, self.parties, self.ttl, self._lease)
        run(arrival.arrive(_deadline(store, timeout), self.name))
        arrival.leave()

    def __repr__(self) -> str:
        return f"<Barrier {self.name!r} parties={self.parties}>"


class DoubleBarrier(Holder):
    """ZooKeeper's double barrier: ``enter`` blocks until ``parties`` have entered, ``leave`` until all have left.

    ``leave`` follows the ZooKeeper recipe, within the round entered: the
    participant with the oldest ticket leaves last, after waiting for the
    newest; every other one deletes its ticket and waits for the oldest. A
    participant that crashes inside counts as having left once its session
    ends. Use as a context manager to enter and leave. While inside it
    follows the holding protocol (docs/recipes.md): ``held``, ``lost``,
    ``on_lost``.
    """

    def __init__(
        self, name: str, parties: int, *, store: Store | None = None, ttl: float = 10.0, lease: Lease | None = None
    ) -> None:
        self.name = name
        self.parties = _check_parties(parties)
        self.ttl = check_ttl(ttl)
        self._store = store
        self._lease = lease
        self._base = f"double-barrier/{name_segment(name)}"
        self._lock = threading.Lock()
        self._inside: _Arrival | None = None
        self._holding: Holding[DoubleBarrier] = Holding(self)

    @property
    def held(self) -> bool:
        """Whether this participant is inside and still counted (its lease alive)."""
        inside = self._inside
        return inside is not None and inside.lease.alive

    def enter(self, timeout: float | None = None) -> None:
        """Arrive and block until ``parties`` have entered; ``TimeoutError`` (not counted) after ``timeout``."""
        with self._lock:
            if self._inside is not None:
                raise RuntimeError("already entered")
            store = resolve(self._store)
            arrival = _Arrival(store, self._base, self.parties, self.ttl, self._lease)
            run(arrival.arrive(_deadline(store, timeout), self.name))
            self._entered(arrival)

    def _entered(self, arrival: _Arrival) -> None:
        self._inside = arrival
        assert arrival.ticket is not None
        self._holding.begin(arrival.store, arrival.ticket.key, arrival.lease, arrival.ticket.created)

    def leave(self, timeout: float | None = None) -> None:
        """Block until every participant of the round has left (or crashed); ``TimeoutError`` after ``timeout``.

        Whatever happens, this participant no longer counts afterwards.
        """
        with self._lock:
            arrival = self._inside
            if arrival is None:
                raise RuntimeError("not entered")
            deadline = _deadline(arrival.store, timeout)
            self._inside = None
            self._holding.end()
            try:
                run(self._leave(arrival, deadline))
            except TimeoutError:
                raise TimeoutError(f"not everyone left double barrier {self.name!r} within {timeout} s") from None
            finally:
                arrival.leave()

    def _leave(self, arrival: _Arrival, deadline: float | None) -> Steps[None]:
        """The leaving protocol (shared with ``coord.aio``)."""
        store, mine = arrival.store, arrival.ticket
        assert mine is not None
        while True:
            listed = yield from call(store.list, arrival.round_prefix)
            tickets = sorted(listed, key=lambda pair: pair.created)
            here = any(pair.key == mine.key for pair in tickets)
            if not tickets or (here and len(tickets) == 1):
                return
            # Nobody's lease guards these waits: wake every ttl to look again (a missed delete must not hang us).
            if here and tickets[0].key == mine.key:
                yield from wait_deleted(store, tickets[-1], None, deadline, recheck_every=self.ttl)  # the oldest: last
            else:
                if here:
                    yield from call(arrival.leave)
                yield from wait_deleted(store, tickets[0], None, deadline, recheck_every=self.ttl)

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()

    def __repr__(self) -> str:
        return f"<DoubleBarrier {self.name!r} parties={self.parties}>"


@dataclass(eq=False)
class _Arrival:
    """One participant's arrival: its round, its ticket, the lease that holds it."""

    store: Store
    base: str
    parties: int
    ttl: float
    given: Lease | None
    round: int = 0
    ticket: KVPair | None = None
    holder: Lease | None = None  # the session (or given lease) the ticket is bound to

    @property
    def lease(self) -> Lease:
        assert self.holder is not None, "not arrived yet"
        return self.holder

    @property
    def round_key(self) -> str:
        return f"{self.base}/round"

    @property
    def round_prefix(self) -> str:
        return f"{self.base}/{self.round}"

    def arrive(self, deadline: float | None, name: str) -> Steps[None]:
        """Arrive and wait until this participant's round opens (a protocol shared with ``coord.aio``)."""
        # Watch first: the round may open, and move on again, before we would look.
        watch = yield from call(self.store.watch, self.round_key)
        with watch:
            try:
                while not (yield from self._arrive(watch, deadline)):
                    pass
            except TimeoutError:
                yield from call(self.leave)
                raise TimeoutError(f"barrier {name!r} did not open within the timeout") from None
            except BaseException:
                yield from call(self.leave)
                raise

    def leave(self) -> None:
        """No longer count: delete the ticket (in the background if the store does not answer)."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            withdraw(self.store, ticket.key, self.holder)

    def _arrive(self, watch: Watch, deadline: float | None) -> Steps[bool]:
        """One try: add a ticket to the current round and wait for it to open; False to arrive again."""
        while (seen := watch.get(timeout=0)) is not None:  # ``round`` as it is now, if it exists
            self.round = max(self.round, _number(seen))
        self.holder = (yield from call(self.store.session, self.ttl)) if self.given is None else self.given
        key = f"{self.round_prefix}/{uuid.uuid4().hex}"
        try:
            self.ticket, tickets, current = yield from call(self._enter_round, key)
        except BaseException:
            yield from call(withdraw, self.store, key, self.holder)  # a create whose reply was lost may have landed
            raise
        if current is not None and _number(current) > self.round:
            return True  # the round opened as we arrived: we pass with it
        if len(tickets) >= self.parties:
            yield from call(self._open, current)
            return True
        try:
            while True:
                event = yield from next_event(watch, self.lease, deadline, self.store, self._recheck)
                if event.type == "put" and _number(event) > self.round:
                    return True
        except TicketLost:
            yield from call(self.leave)  # the session was lost, and the ticket with it: arrive again
            return False

    def _enter_round(self, key: str) -> list[Any]:
        """Our ticket in the round, the round's tickets and ``round`` as it is: one transaction."""
        txn = self.store.transaction().put(key, b"", previous=None, lease=self.lease)
        return txn.list(self.round_prefix).get(self.round_key).commit()

    def _open(self, current: KVPair | None) -> None:
        """Move ``round`` on from ours; if someone else already did, the round is open all the same."""
        with contextlib.suppress(KeyExists, KeyModified, KeyNotFound):
            self.store.atomic_put(self.round_key, str(self.round + 1).encode(), current)

    def _recheck(self) -> Event | None:
        """At a timed wake-up: the round's opening, should the watch have missed it."""
        try:
            current = self.store.get(self.round_key)
        except KeyNotFound:
            return None
        return Event("put", current.key, current.value, current.revision)


def _number(item: Event | KVPair) -> int:
    try:
        return int(item.value or b"0")
    except ValueError:
        return 0


def _deadline(store: Store, timeout: float | None) -> float | None:
    timeout = check_timeout(timeout)
    return None if timeout is None else store.clock.now() + timeout


def _check_parties(parties: int) -> int:
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise ValueError(f"parties must be a positive int, not {parties!r}")
    return parties
