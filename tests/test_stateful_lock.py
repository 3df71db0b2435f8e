"""Lock and Semaphore under faults: Hypothesis drives clients that acquire, release, freeze, crash and fail.

Checked after every step (see docs/testing.md):

* never more than ``limit`` clients that believe they hold (``holding``)
  while the store still has their lease;
* ``holding`` never outlives the lease in the store (unless the test made the
  store drop it early, which the holder learns at its next renewal);
* a holder whose lease is past its deadline has ``lost`` set and no longer
  holds; ``lost`` implies not ``holding``;
* fencing tokens strictly increase in grant order (a semaphore's grants that
  come due together may finish in either order, so there: every grant's token
  is above those of the holdings that ended before it began to wait);
* progress: once faults stop and the clock passes the ttl, the lock is held
  whenever someone is waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import coord
from coord.testing import Task
from tests.support.hypothesis_profiles import run_machine
from tests.support.stateful import TTL, Client, ClientsMachine

# A failure is shrunk before it is reported, which can take Hypothesis up to five minutes.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Holding:
    """One grant, as the model saw it."""

    client: str
    token: int
    waited_from: int  # the step its acquire began
    ended: int | None = None  # the step it was released, or its loss seen


@dataclass
class Model:
    held: Holding | None = None  # acquire returned True, release not yet called
    started: int = 0
    history: list[Holding] = field(default_factory=list)


class LockMachine(ClientsMachine):
    """Three clients of one Lock."""

    LIMIT = 1
    CLIENTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[Holding] = []

    def make_recipe(self, client: Client) -> Any:
        client.state = Model()
        return coord.Lock("L", store=client.store, ttl=TTL)

    def held(self) -> list[Client]:
        return [c for c in self.clients if c.state.held is not None and c.task is None and not c.frozen]

    # -- the recipe's rules ------------------------------------------------------------

    @precondition(lambda self: any(c.state.held is None for c in self.idle()))
    @rule(data=st.data(), how=st.sampled_from(["try", "wait", "wait", "timeout"]), timeout=st.sampled_from([0.3, 1.0]))
    def acquire(self, data: st.DataObject, how: str, timeout: float) -> None:
        client = data.draw(st.sampled_from([c for c in self.idle() if c.state.held is None]), label="client")
        client.state.started = self.step
        recipe = client.recipe
        if how == "try":
            self.call(client, lambda: self._granted(client, recipe.acquire(blocking=False)), "try")
        elif how == "wait":
            self.call(client, lambda: self._granted(client, recipe.acquire()), "acquire")
        else:
            self.call(client, lambda: self._granted(client, recipe.acquire(timeout=timeout * TTL)), "acquire-t")

    def _granted(self, client: Client, acquired: bool) -> bool:
        """In the call's thread, the moment acquire returns: record the grant in order."""
        if acquired:
            holding = Holding(client.name, client.recipe.token, client.state.started)
            self.check_token(holding)
            self.grants.append(holding)
            client.state.held = holding
        return acquired

    def check_token(self, new: Holding) -> None:
        if self.LIMIT == 1 and self.grants:
            last = self.grants[-1]
            if new.token <= last.token:
                self.violations.append(f"[fencing] {new} granted after {last} with a token not above it")
        for old in self.grants:
            if old.ended is not None and old.ended < new.waited_from and new.token <= old.token:
                self.violations.append(f"[fencing] {new} began waiting after {old} ended, with a lower token")

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.held()), label="client")
        holding = client.state.held
        if holding.ended is None:
            holding.ended = self.step
        client.state.held = None
        self.call(client, client.recipe.release, "release")

    def finished(self, client: Client, task: Task[Any]) -> None:
        pass  # the outcome was recorded as the call returned

    def crashed(self, client: Client) -> None:
        holding = client.state.held
        if holding is not None and holding.ended is None:
            holding.ended = self.step

    # -- invariants ---------------------------------------------------------------------

    def verify(self) -> None:
        self.mutual_exclusion()
        self.a_lost_lease_is_noticed()

    def mutual_exclusion(self) -> None:
        claims = [c for c in self.clients if c.recipe.holding]
        valid = [c for c in claims if self.server_has(c.recipe.lease)]
        self.check(
            len(valid) <= self.LIMIT,
            f"[mutual exclusion] {len(valid)} clients hold with valid leases (limit {self.LIMIT}): {valid}",
        )
        for client in claims:
            lease = client.recipe.lease
            self.check(
                self.server_has(lease) or lease.id in client.expired,
                f"[holding outlived its lease] {client} holds but the store no longer has lease {lease.id}",
            )

    def a_lost_lease_is_noticed(self) -> None:
        for client in self.clients:
            holding, lock = client.state.held, client.recipe
            if holding is None or lock.lease is None:
                continue
            if self.now() >= lock.lease.deadline:
                self.check(
                    lock.lost.is_set() and not lock.holding,
                    f"[lost] {client}'s lease passed its deadline, yet lost={lock.lost.is_set()} "
                    f"holding={lock.holding}",
                )
            if lock.lost.is_set():
                self.check(not lock.holding, f"[lost] {client} has lost set but still holds")
                if holding.ended is None:
                    holding.ended = self.step

    def check_progress(self) -> None:
        holders = [c for c in self.clients if c.recipe.holding]
        waiting = [c for c in self.clients if c.task is not None]
        self.check(
            len(holders) == min(self.LIMIT, len(holders) + len(waiting)),
            f"[progress] faults stopped and 2 ttl passed: {len(holders)} hold while {waiting} still wait",
        )


class SemaphoreMachine(LockMachine):
    """Four clients of a Semaphore with limit 2."""

    LIMIT = 2
    CLIENTS = 4

    def make_recipe(self, client: Client) -> Any:
        client.state = Model()
        return coord.Semaphore("S", self.LIMIT, store=client.store, ttl=TTL)


def test_lock_under_faults() -> None:
    run_machine(LockMachine)


def test_semaphore_under_faults() -> None:
    run_machine(SemaphoreMachine)
