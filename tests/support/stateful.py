"""The simulated world the stateful tests share: clients of one memory store on one virtual clock.

Each client is a process of its own: a ``FaultyStore`` over ``memory://NAME``
(so every client sees the same data, as clients of one server would), with
its own lease keeper, its own recipe object, and at most one blocking call
in flight, run by a shared ``Scheduler``. One ``ManualClock`` drives them
all. Freezing a client stops its keepalives and its calls (SIGSTOP);
crashing it kills the process with nothing cleaned up (SIGKILL) and starts a
fresh one in its place. A separate, never-faulty ``spy`` store on the same
data is the ground truth the invariants compare against.

Subclasses add the recipe's rules and invariants. Every rule ends with
``settle()``: the blocked calls that can go on do, so the invariants, checked
after every step, see a quiet world.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import coord
from coord.backends.memory import MemoryStore
from coord.testing import FaultKind, FaultyStore, Killed, Scheduler, Task

from .fault_children import fenced_put

__all__ = ["TTL", "Client", "ClientsMachine", "fenced_put"]

TTL = 3.0
#: Clock steps, as fractions of the ttl: below and around the renewal interval (ttl/3), the ttl, beyond.
STEPS = [0.02, 0.15, 0.34, 0.5, 0.9, 1.0, 1.7]
FAULTS: list[FaultKind] = ["fail", "lose_reply", "delay"]
OPS = [
    "get",
    "put",
    "delete",
    "list",
    "atomic_put",
    "atomic_delete",
    "transaction",
    "watch",
    "lease",
    "keepalive",
    "revoke",
]
#: What a recipe call may legitimately raise under injected faults; anything else is a bug.
EXPECTED_ERRORS = (coord.CoordError, TimeoutError)


class Client:
    """One simulated process: its store, its recipe object, the call it is blocked in."""

    def __init__(self, index: int, generation: int, store: FaultyStore) -> None:
        self.index = index
        self.generation = generation
        self.store = store
        self.recipe: Any = None
        self.task: Task[Any] | None = None
        self.frozen = False
        self.expired: set[int] = set()  # leases the store dropped early (by ``expire``)
        self.state: Any = None  # the subclass's model of this client

    @property
    def name(self) -> str:
        return f"c{self.index}.{self.generation}"

    def __repr__(self) -> str:
        return f"<{self.name}{' frozen' if self.frozen else ''}{' busy' if self.task else ''}>"


class ClientsMachine(RuleBasedStateMachine):
    CLIENTS = 3

    def __init__(self) -> None:
        super().__init__()
        self.clock = coord.ManualClock()
        self.url = f"memory://stateful-{uuid.uuid4().hex}"
        # Opened first, so the data's clock is ours and its expiry runs first at each moment.
        spy = coord.connect(self.url, clock=self.clock)
        assert isinstance(spy, MemoryStore)
        self.spy = spy
        self.scheduler = Scheduler(self.clock, stall_timeout=30.0)
        self.generations = 0
        self.clients = [self._new_client(index) for index in range(self.CLIENTS)]
        self.dead: list[Client] = []
        self.violations: list[str] = []
        self.step = 0
        self.starting: Client | None = None

    # -- what subclasses provide ----------------------------------------------------

    def make_recipe(self, client: Client) -> Any:
        raise NotImplementedError

    def finished(self, client: Client, task: Task[Any]) -> None:
        """Update the model after ``client``'s call ended (in the test's thread)."""

    def check_progress(self) -> None:
        """After faults stopped and the clock passed the ttl twice: what must have happened."""

    def crashed(self, client: Client) -> None:
        """``client``'s process was just killed."""

    # -- the world ---------------------------------------------------------------------

    def _new_client(self, index: int) -> Client:
        self.generations += 1
        client = Client(index, self.generations, FaultyStore(coord.connect(self.url, clock=self.clock)))
        client.recipe = self.make_recipe(client)
        return client

    def now(self) -> float:
        return self.clock.now()

    def server_has(self, lease: coord.Lease | None) -> bool:
        """Whether the store (the server) still has ``lease``: the ground truth a client's view is checked against."""
        return lease is not None and lease.id in self.spy._data.leases

    def live(self) -> list[Client]:
        return list(self.clients)

    def in_calls(self) -> list[Client]:
        """The clients in a call (the one being started included)."""
        return [client for client in self.clients if client.task is not None or client is self.starting]

    def idle(self) -> list[Client]:
        return [client for client in self.clients if client.task is None and not client.frozen]

    def call(self, client: Client, function: Callable[[], Any], what: str) -> Task[Any]:
        """Run one of ``client``'s recipe calls (it may block); the model learns its outcome in ``finished``."""
        assert client.task is None, f"{client} is already in a call"
        self.starting = client  # in the call from its first step, before ``start`` returns
        try:
            task = self.scheduler.start(function, name=f"{client.name}-{what}")
        finally:
            self.starting = None
        client.task = task
        self.settle()
        return task

    def settle(self) -> None:
        """Let every blocked call that can go on do so, and feed the outcomes to the model."""
        worked = False
        while True:
            self.scheduler.settle()
            done = [client for client in self.clients if client.task is not None and client.task.done]
            if not done:
                if worked or not self.more_work():
                    return
                worked = True  # once per step: what fails now is tried again after the next
                continue
            for client in done:
                task, client.task = client.task, None
                assert task is not None
                error = task.error
                if error is not None and not isinstance(error, (*EXPECTED_ERRORS, Killed)):
                    raise AssertionError(f"[recipe raised] {task.name} raised {error!r}") from error
                self.finished(client, task)

    def more_work(self) -> bool:
        """Subclasses' own background work (re-registrations), once per step; True if some was done."""
        return False

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise AssertionError(f"{message} (at t={self.now() - 1000:.2f}, step {self.step})")

    # -- rules every machine has -------------------------------------------------------

    @rule(fraction=st.sampled_from(STEPS))
    def advance(self, fraction: float) -> None:
        """Time passes: renewals, expiries, timeouts."""
        self.clock.advance(fraction * TTL)
        self.settle()

    @rule(data=st.data())
    def fault(self, data: st.DataObject) -> None:
        """One fault strikes one client (one rule for all, so that faults and recipe calls come about equally often)."""
        kinds = ["inject", "inject", "drop_watches", "crash"]
        kinds += ["freeze"] if any(not c.frozen for c in self.clients) else []
        kinds += ["thaw"] if any(c.frozen for c in self.clients) else []
        kinds += ["expire"] if any(c.store.leases() for c in self.clients) else []
        kind = data.draw(st.sampled_from(kinds), label="fault")
        getattr(self, f"_{kind}")(data)
        self.settle()

    def _inject(self, data: st.DataObject) -> None:
        """The client's next operations of one kind fail, lose their replies, or are slow."""
        client = data.draw(st.sampled_from(self.clients), label="client")
        kind = data.draw(st.sampled_from(FAULTS), label="kind")
        op = data.draw(st.sampled_from(OPS), label="op")
        count = data.draw(st.integers(1, 3), label="count")
        delay = data.draw(st.sampled_from([0.05, 0.5, 1.0]), label="delay") * TTL if kind == "delay" else 0.0
        client.store.inject(kind, op=op, count=count, delay=delay)

    def _drop_watches(self, data: st.DataObject) -> None:
        """Every watch of the client loses its connection."""
        data.draw(st.sampled_from(self.clients), label="client").store.drop_watches()

    def _freeze(self, data: st.DataObject) -> None:
        """The client's process stops (SIGSTOP): no keepalives, its blocked call does not run."""
        client = data.draw(st.sampled_from([c for c in self.clients if not c.frozen]), label="client")
        client.frozen = True
        client.store.freeze()
        if client.task is not None:
            self.scheduler.freeze(client.task)

    def _thaw(self, data: st.DataObject) -> None:
        self.thaw(data.draw(st.sampled_from([c for c in self.clients if c.frozen]), label="client"))

    def thaw(self, client: Client) -> None:
        client.frozen = False
        client.store.thaw()
        if client.task is not None:
            self.scheduler.thaw(client.task)

    def _expire(self, data: st.DataObject) -> None:
        """The store drops one of the client's leases before its time (its holder learns at the next renewal)."""
        client = data.draw(st.sampled_from([c for c in self.clients if c.store.leases()]), label="client")
        lease = data.draw(st.sampled_from(client.store.leases()), label="lease")
        client.expired.add(lease.id)
        client.store.expire(lease)

    def _crash(self, data: st.DataObject) -> None:
        """The client's process is killed (nothing cleaned up) and a new one starts in its place."""
        client = data.draw(st.sampled_from(self.clients), label="client")
        client.store.crash()
        self.crashed(client)
        if client.task is not None:
            self.scheduler.kill(client.task)
        client.task = None
        self.dead.append(client)
        self.clients[client.index] = self._new_client(client.index)

    @rule()
    def heal(self) -> None:
        """Faults stop and the clock passes the ttl twice: every guarantee of progress must show."""
        for client in self.clients:
            client.store.clear()
            self.thaw(client)
        self.settle()
        for _ in range(8):
            self.clock.advance(TTL / 4)
            self.settle()
            self.check(not self.violations, f"{self.violations[:3]}")
            self.verify()
        self.check_progress()

    @invariant()
    def invariants(self) -> None:
        """Every invariant, after every step (one method, so a falsifying example prints one line per step)."""
        self.step += 1
        self.check(not self.violations, f"{self.violations[:3]}")
        self.verify()

    def verify(self) -> None:
        """The subclass's invariants."""

    def teardown(self) -> None:
        counts = getattr(self, "counts", None)
        if counts is not None:
            counts.ended(self.step - 1)  # the invariants ran once before the first step
        for client in self.clients:
            client.store.crash()  # so that the calls killed below clean nothing up slowly
        with contextlib.suppress(Exception):
            self.scheduler.close()
        for client in [*self.clients, *self.dead]:
            with contextlib.suppress(Exception):
                client.store.close()
        self.spy.close()
