"""Election under faults: Hypothesis drives candidates that campaign, resign, proclaim, act, freeze and crash.

Checked after every step (see docs/testing.md):

* at most one candidate whose ``is_leader`` is true while the store still has
  its lease; ``is_leader`` never outlives the lease in the store (unless the
  test made the store drop it early);
* a leader whose lease passed its deadline has ``lost`` set and is no longer
  leader; ``lost`` implies not ``is_leader``;
* fencing tokens strictly increase from leader to leader, and a write guarded
  by the token (``fenced_put``) succeeds for whoever ``is_leader``;
* ``proclaim`` reports ``LeaseExpired`` only to a candidate that no longer leads;
* ``leader()`` reports the leader's value, and ``observe()`` has reported it;
* progress: once faults stop and the clock passes the ttl, a candidate that
  campaigns is elected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import coord
from coord.testing import FaultyStore, Task
from tests.support.hypothesis_profiles import run_machine
from tests.support.stateful import TTL, Client, ClientsMachine, fenced_put

# A failure is shrunk before it is reported, which can take Hypothesis up to five minutes.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Candidate:
    leadership: coord.Leadership | None = None  # campaign returned it, resign not yet called
    values: set[bytes] = field(default_factory=set)  # what leader() may report while it leads


class ElectionMachine(ClientsMachine):
    """Three candidates of one election, and an observer that is never faulted."""

    CLIENTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[tuple[str, int]] = []
        self.observed: list[bytes] = []
        self.observer = FaultyStore(coord.connect(self.url, clock=self.clock))
        election = coord.Election("E", store=self.observer, ttl=TTL)
        self.observing = self.scheduler.start(lambda: [self.observed.append(v) for v in election.observe()], "observe")

    def make_recipe(self, client: Client) -> Any:
        client.state = Candidate()
        return coord.Election("E", store=client.store, ttl=TTL, value=client.name.encode())

    def leading(self) -> list[Client]:
        return [c for c in self.clients if c.state.leadership is not None and c.task is None and not c.frozen]

    # -- the recipe's rules ------------------------------------------------------------

    @precondition(lambda self: any(c.state.leadership is None for c in self.idle()))
    @rule(data=st.data(), timeout=st.sampled_from([None, None, 0.0, 0.3, 1.0]))
    def campaign(self, data: st.DataObject, timeout: float | None) -> None:
        client = data.draw(st.sampled_from([c for c in self.idle() if c.state.leadership is None]), label="client")
        election = client.recipe
        self.call(
            client,
            lambda: self._elected(client, election.campaign(None if timeout is None else timeout * TTL)),
            "campaign",
        )

    def _elected(self, client: Client, leadership: coord.Leadership) -> coord.Leadership:
        """In the call's thread, the moment campaign returns."""
        if self.tokens and leadership.token <= self.tokens[-1][1]:
            self.violations.append(f"[fencing] {client} elected with token {leadership.token} after {self.tokens[-1]}")
        self.tokens.append((client.name, leadership.token))
        client.state.leadership = leadership
        client.state.values = {client.recipe.value}
        return leadership

    @precondition(lambda self: self.leading())
    @rule(data=st.data())
    def resign(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.leading()), label="client")
        leadership, client.state.leadership = client.state.leadership, None
        self.call(client, leadership.resign, "resign")

    @precondition(lambda self: self.leading())
    @rule(data=st.data())
    def proclaim(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.leading()), label="client")
        leadership = client.state.leadership
        value = b"%s-%d" % (client.name.encode(), self.step)
        client.state.values.add(value)  # until the call says, the store may hold either

        def proclaim() -> None:
            try:
                leadership.proclaim(value)
            except coord.LeaseExpired:
                # A lease the store dropped early is only noticed at the next renewal (see docs/testing.md).
                if leadership.is_leader and leadership.lease.id not in client.expired:
                    self.violations.append(f"[proclaim] {client} told LeaseExpired while is_leader is true")
                return
            client.state.values = {value}

        self.call(client, proclaim, "proclaim")

    @precondition(lambda self: self.leading())
    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """A candidate that believes it leads writes, guarded by its token: that must succeed."""
        client = data.draw(st.sampled_from(self.leading()), label="client")
        leadership = client.state.leadership

        def act() -> None:
            if not leadership.is_leader or fenced_put(client.store, "resource", leadership.token, b"work"):
                return
            # A lease the store dropped early goes unnoticed until the next renewal: the fence is what holds.
            if leadership.lease.id not in client.expired:
                self.violations.append(f"[stale leader acted] {client} is_leader, but a newer token wrote first")

        self.call(client, act, "act")

    def finished(self, client: Client, task: Task[Any]) -> None:
        pass  # recorded as the calls returned

    # -- invariants ---------------------------------------------------------------------

    def verify(self) -> None:
        self.one_leader()
        self.a_lost_lease_is_noticed()
        self.everyone_sees_the_leader()

    def one_leader(self) -> None:
        claims = [c for c in self.clients if c.state.leadership is not None and c.state.leadership.is_leader]
        valid = [c for c in claims if self.server_has(c.state.leadership.lease)]
        self.check(len(valid) <= 1, f"[one leader] {len(valid)} candidates lead with valid leases: {valid}")
        for client in claims:
            lease = client.state.leadership.lease
            self.check(
                self.server_has(lease) or lease.id in client.expired,
                f"[leadership outlived its lease] {client} leads but the store no longer has lease {lease.id}",
            )

    def a_lost_lease_is_noticed(self) -> None:
        for client in self.clients:
            leadership = client.state.leadership
            if leadership is None:
                continue
            if self.now() >= leadership.lease.deadline:
                self.check(
                    leadership.lost.is_set() and not leadership.is_leader,
                    f"[lost] {client}'s lease passed its deadline, yet lost={leadership.lost.is_set()} "
                    f"is_leader={leadership.is_leader}",
                )
            if leadership.lost.is_set():
                self.check(not leadership.is_leader, f"[lost] {client} has lost set but is_leader is true")

    def everyone_sees_the_leader(self) -> None:
        leaders = [
            c
            for c in self.clients
            if c.state.leadership is not None
            and c.state.leadership.is_leader
            and self.server_has(c.state.leadership.lease)
        ]
        current = coord.Election("E", store=self.spy).leader()
        if leaders:
            self.check(
                current in leaders[0].state.values,
                f"[leader()] reports {current!r} while {leaders[0]} leads with {leaders[0].state.values}",
            )
        if current is not None:
            self.check(
                self.observed[-1:] == [current],
                f"[observe()] last reported {self.observed[-1:]} while leader() is {current!r}",
            )

    def check_progress(self) -> None:
        campaigning = [c for c in self.clients if c.task is not None]
        leaders = [c for c in self.clients if c.state.leadership is not None and c.state.leadership.is_leader]
        if campaigning or leaders:
            self.check(
                len(leaders) == 1,
                f"[progress] faults stopped and 2 ttl passed: {campaigning} campaign, {leaders} lead",
            )

    def teardown(self) -> None:
        self.observer.crash()
        super().teardown()
        self.observer.close()


def test_election_under_faults() -> None:
    run_machine(ElectionMachine)
