"""Service registration under faults: clients register, close, freeze, crash and fail; an observer watches.

Checked after every step (see docs/testing.md):

* no registration outlives its lease: an instance in ``discover`` belongs to
  a registration that is open, or that was closed (or whose process died)
  less than one ttl ago, or to a ``register`` call that failed less than one
  ttl ago (the key may have been written before the failure);
* an open registration that says ``registered`` is in ``discover`` (unless the
  test made the store drop its lease early, which it learns at its next
  renewal);
* ``watch_service`` has reported the list ``discover`` gives;
* progress: once faults stop and the clock passes the ttl, every open
  registration of a running process is registered and discovered, and
  nothing else is.

Re-registration after a lost lease runs on the Store clock's timers, so the
virtual clock drives it like every renewal; a frozen process's retries wait
until it is thawed, and a crashed one's never run (``FaultyStore``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import coord
from coord.testing import FaultyStore, Task
from tests.support.hypothesis_profiles import run_machine
from tests.support.stateful import TTL, Client, ClientsMachine

# A failure is shrunk before it is reported, which can take Hypothesis up to five minutes.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Process:
    registration: coord.Registration | None = None  # register returned it, close not yet called


class RegistrationMachine(ClientsMachine):
    """Three service processes, and an observer that is never faulted."""

    CLIENTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.gone_by: dict[str, float] = {}  # instance id -> when it must be gone (closed, or its process died)
        self.failed: list[float] = []  # when failed register calls' keys must be gone
        self.registrations: dict[str, tuple[Client, coord.Registration]] = {}
        self.observed: list[list[str]] = []
        self.observer = FaultyStore(coord.connect(self.url, clock=self.clock))
        self.observing = self.scheduler.start(
            lambda: [
                self.observed.append(sorted(i.id for i in found))
                for found in coord.watch_service("svc", store=self.observer)
            ],
            "observe",
        )

    def make_recipe(self, client: Client) -> Any:
        client.state = Process()
        return None

    def open(self) -> list[Client]:
        return [c for c in self.idle() if c.state.registration is not None]

    # -- the recipe's rules ------------------------------------------------------------

    @precondition(lambda self: any(c.state.registration is None for c in self.idle()))
    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from([c for c in self.idle() if c.state.registration is None]), label="client")

        def register() -> None:
            try:
                registration = coord.register("svc", address=client.name, ttl=TTL, store=client.store)
            except coord.CoordError:
                self.failed.append(self.now() + TTL)
                raise
            client.state.registration = registration
            self.registrations[registration.id] = (client, registration)

        self.call(client, register, "register")

    @precondition(lambda self: self.open())
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.open()), label="client")
        registration, client.state.registration = client.state.registration, None
        self.gone_by[registration.id] = self.now() + TTL  # at once, unless the revoke is lost
        self.call(client, registration.close, "close")

    def crashed(self, client: Client) -> None:
        registration = client.state.registration
        if registration is not None:
            self.gone_by[registration.id] = self.now() + TTL

    def finished(self, client: Client, task: Task[Any]) -> None:
        pass

    def more_work(self) -> bool:
        """Run the timers due now (re-registrations a loss just scheduled), once per step."""
        self.clock.advance(0)
        return True

    # -- invariants ---------------------------------------------------------------------

    def verify(self) -> None:
        present = [i.id for i in coord.discover("svc", store=self.spy)]
        unknown = 0
        for id in present:
            if id not in self.registrations:
                unknown += 1
                continue
            client, registration = self.registrations[id]
            if id in self.gone_by:
                self.check(
                    self.now() < self.gone_by[id],
                    f"[registration outlived its lease] {id} of {client} is still discovered "
                    f"{self.now() - self.gone_by[id] + TTL:.2f} s after it was closed or its process died",
                )
        self.check(
            unknown <= len([t for t in self.failed if self.now() < t]),
            f"[registration outlived its lease] {unknown} instances no registration owns",
        )
        for client in self.clients:
            registration = client.state.registration
            if registration is not None and registration.registered and registration._lease is not None:
                self.check(
                    registration.id in present or registration._lease.id in client.expired,
                    f"[registered but not discoverable] {client}'s {registration.id}",
                )
        self.check(
            self.observed[-1:] == [sorted(present)],
            f"[watch_service] last reported {self.observed[-1:]} while discover() gives {sorted(present)}",
        )

    def check_progress(self) -> None:
        open = {c.state.registration.id: c for c in self.clients if c.state.registration is not None}
        present = sorted(i.id for i in coord.discover("svc", store=self.spy))
        self.check(present == sorted(open), f"[progress] discovered {present}, open {open}")
        for id, client in open.items():
            self.check(client.state.registration.registered, f"[progress] {client}'s {id} is not registered")

    def teardown(self) -> None:
        self.observer.crash()
        super().teardown()
        self.observer.close()


def test_registration_under_faults() -> None:
    run_machine(RegistrationMachine)
