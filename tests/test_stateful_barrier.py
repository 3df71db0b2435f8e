"""Barrier under faults: participants wait (with and without timeouts), freeze, crash and fail.

Checked (see docs/testing.md):

* the barrier opens only for enough participants: at the moment a round
  opens (``round`` moves on), at least ``parties`` participants are waiting,
  or stopped (crashed, gave up, passed) less than one ttl ago, since a
  stopped participant's ticket may last until its session ends;
* a participant passes only if the barrier opened while it waited;
* progress: once faults stop and the clock passes the ttl, fewer than
  ``parties`` participants are still waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import coord
from coord._types import Event
from coord._watch import WatchFeed
from coord.testing import Task
from tests.support.hypothesis_profiles import run_machine
from tests.support.stateful import TTL, Client, ClientsMachine

PARTIES = 3
BASE = "barrier/B"

# A failure is shrunk before it is reported, which can take Hypothesis up to five minutes.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Participant:
    opened_before: int = 0  # how many times the barrier had opened when this wait began


class _Recorder(WatchFeed):
    """A watch's feed that hands each event to the machine at the moment the store makes the change."""

    def __init__(self, machine: BarrierMachine) -> None:
        super().__init__("memory", lambda key: key)
        self.machine = machine

    def emit(self, event: Event) -> None:
        self.machine.changed(event)


class BarrierMachine(ClientsMachine):
    """Four participants of a barrier of three parties."""

    CLIENTS = 4

    def __init__(self) -> None:
        super().__init__()
        self.stopped: list[float] = []  # when participants stopped waiting
        self.openings = 0
        self.recorder = _Recorder(self)
        self.spy._watch(self.recorder, BASE, True, None)

    def make_recipe(self, client: Client) -> Any:
        client.state = Participant()
        return coord.Barrier("B", PARTIES, store=client.store, ttl=TTL)

    def changed(self, event: Event) -> None:
        """Called with the store's lock held, as the change happens: look at the model, touch no store."""
        if event.key != f"{BASE}/round" or event.type != "put":
            return
        self.openings += 1
        waiting = self.in_calls()
        recently = [t for t in self.stopped if self.now() - t < TTL]
        if len(waiting) + len(recently) < PARTIES:
            self.violations.append(
                f"[barrier opened early] with {len(waiting)} waiting and {len(recently)} stopped within the ttl"
            )

    # -- the recipe's rules ------------------------------------------------------------

    @precondition(lambda self: self.idle())
    @rule(data=st.data(), timeout=st.sampled_from([None, None, 0.3, 1.0]))
    def wait(self, data: st.DataObject, timeout: float | None) -> None:
        client = data.draw(st.sampled_from(self.idle()), label="client")
        client.state = Participant(self.openings)
        barrier = client.recipe
        self.call(client, lambda: barrier.wait(None if timeout is None else timeout * TTL), "wait")

    def finished(self, client: Client, task: Task[Any]) -> None:
        self.stopped.append(self.now())
        if task.error is None:
            self.check(
                self.openings > client.state.opened_before,
                f"[barrier passed while closed] {client} passed, yet the barrier did not open while it waited",
            )

    def crashed(self, client: Client) -> None:
        if client.task is not None:
            self.stopped.append(self.now())

    def check_progress(self) -> None:
        waiting = [c for c in self.clients if c.task is not None]
        self.check(len(waiting) < PARTIES, f"[progress] faults stopped and 2 ttl passed: {waiting} still wait")

    def teardown(self) -> None:
        self.spy._unwatch(self.recorder)
        super().teardown()


def test_barrier_under_faults() -> None:
    run_machine(BarrierMachine)
