"""Deliberately broken recipes: each stateful test must catch the mutant aimed at it.

A mutant is the real recipe with one step broken, patched in for the length
of a ``with`` block. Each names the invariant that must catch it (the tag in
brackets that starts the failure's message). tests/test_mutants.py runs the
state machine with the mutant in place and asserts Hypothesis finds a
failure carrying that tag: that shows the stateful tests can fail.

Mutants patch private names of coord's recipe modules; if one of them goes
away, the patch fails loudly and the mutant has to follow the recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import coord
from coord._lease import Lease
from coord._store import Store
from coord._types import KVPair
from coord.recipes import _queue as _waiting
from coord.recipes import _waits
from coord.recipes import barrier as _barrier
from coord.recipes import registration as _registration
from coord.recipes import semaphore as _semaphore
from coord.recipes._steps import Steps, call


@dataclass(frozen=True)
class Mutant:
    name: str
    broken: str  # what is broken, in one line
    machine: str  # the state machine that must catch it (a class name)
    caught_by: tuple[str, ...]  # the tags of the invariants that may catch it first
    patch: Callable[[], AbstractContextManager[Any]]


def _trusting_wait_turn(
    store: Store,
    prefix: str,
    mine: KVPair,
    lease: Lease,
    limit: int,
    deadline: float | None,
    queue: list[KVPair] | None = None,
) -> Steps[tuple[KVPair, float | None]]:
    """``wait_turn`` that, once its predecessor is gone, assumes its turn has come without listing again.

    Wrong when the predecessor was itself a waiter that left (timed out,
    crashed, lost its lease): the holder ahead of it still holds.
    """
    if queue is None:
        queue = yield from call(store.list, prefix)
    tickets = sorted(queue, key=lambda pair: pair.created)
    me = next((pair for pair in tickets if pair.key == mine.key), None)
    if me is None:
        raise _waiting.TicketLost(f"ticket {mine.key} is gone")
    ahead = [pair for pair in tickets if pair.created < me.created]
    if len(ahead) < limit:
        return me, None
    if deadline is not None and store.clock.now() >= deadline:
        raise TimeoutError
    yield from _waits.wait_deleted(store, ahead[-1], lease, deadline)
    return me, store.clock.now()  # the bug: no second look at who is ahead now


@contextmanager
def _skip_predecessor_check() -> Iterator[None]:
    with mock.patch.object(_waiting, "wait_turn", _trusting_wait_turn):
        yield


@contextmanager
def _ignore_lost() -> Iterator[None]:
    # ``alive`` that trusts the holding until it is released, never checking its lease's deadline or loss.
    with mock.patch.object(_waiting.Hold, "alive", property(lambda hold: not hold.released)):
        yield


@contextmanager
def _one_too_many() -> Iterator[None]:
    real = _waiting.join

    def join(store: Store, prefix: str, value: bytes, *, limit: int, **kwargs: Any) -> Steps[_waiting.Hold | None]:
        return real(store, prefix, value, limit=limit + 1 if limit > 1 else limit, **kwargs)

    with mock.patch.object(_semaphore, "join", join):
        yield


@contextmanager
def _release_keeps_the_ticket() -> Iterator[None]:
    # Release forgets the holding locally but never revokes: the ticket stays, renewed, for ever.
    with mock.patch.object(_waiting.Hold, "release", lambda hold: None):
        yield


@contextmanager
def _registration_without_lease() -> Iterator[None]:
    def register(self: coord.Registration) -> None:
        lease = self.store.session(self.ttl)
        body = b'{"address": "%s", "metadata": {}, "registered_at": 0}' % self.address.encode()
        self._pair = self.store.put(self.key, body)  # the bug: not bound to the lease, so it outlives it
        self._lease = lease
        self._holding.begin(self.store, self.key, lease, self._pair.created)

    with mock.patch.object(_registration.Registration, "_register", register):
        yield


@contextmanager
def _barrier_tickets_without_lease() -> Iterator[None]:
    real = _barrier._Arrival._arrive

    def arrive(self: Any, watch: coord.Watch, deadline: float | None) -> Steps[bool]:
        if self.given is None:
            self.given = self.store.lease(3600)  # the bug: a lease nobody ends
        return real(self, watch, deadline)

    with mock.patch.object(_barrier._Arrival, "_arrive", arrive):
        yield


MUTANTS = [
    Mutant(
        "lock-skips-predecessor-check",
        "a waiter takes the lock as soon as its predecessor is gone, without looking again",
        "LockMachine",
        ("[mutual exclusion]", "[fencing]"),
        _skip_predecessor_check,
    ),
    Mutant(
        "election-skips-predecessor-check",
        "a candidate leads as soon as its predecessor is gone, without looking again",
        "ElectionMachine",
        ("[one leader]", "[leader()]", "[observe()]", "[stale leader acted]", "[fencing]"),
        _skip_predecessor_check,
    ),
    Mutant(
        "leader-ignores-lost",
        "is_leader stays true after the lease is lost, until resign",
        "ElectionMachine",
        ("[lost]", "[one leader]", "[leadership outlived its lease]", "[stale leader acted]"),
        _ignore_lost,
    ),
    Mutant(
        "holder-ignores-lost",
        "holding stays true after the lease is lost, until release",
        "LockMachine",
        ("[lost]", "[mutual exclusion]", "[holding outlived its lease]"),
        _ignore_lost,
    ),
    Mutant(
        "semaphore-one-too-many",
        "a semaphore of limit n lets n + 1 hold",
        "SemaphoreMachine",
        ("[mutual exclusion]",),
        _one_too_many,
    ),
    Mutant(
        "release-keeps-the-ticket",
        "release forgets the lock locally but leaves its ticket, renewed, in the store",
        "LockMachine",
        ("[progress]",),
        _release_keeps_the_ticket,
    ),
    Mutant(
        "registration-without-lease",
        "the instance key is not bound to the lease, so it outlives it",
        "RegistrationMachine",
        # Either a crashed instance is still discovered, or first the holding's guard (which checks
        # every ttl/3 that the key is there and bound to its lease) ends the registration (no progress).
        ("[registration outlived its lease]", "[progress]"),
        _registration_without_lease,
    ),
    Mutant(
        "barrier-tickets-without-lease",
        "a participant's ticket is bound to a lease that outlives the participant",
        "BarrierMachine",
        # A crashed participant's ticket counts for ever (opened early); a waiter whose ticket the
        # store dropped learns of it only when that long lease is renewed (no progress).
        ("[barrier opened early]", "[progress]"),
        _barrier_tickets_without_lease,
    ),
]
