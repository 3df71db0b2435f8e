"""Test your own coordination code under faults: ``FaultyStore`` wraps any Store.

::

    clock = coord.ManualClock()
    store = FaultyStore(coord.connect("memory://", clock=clock))
    store.inject("lose_reply", op="atomic_put")   # applied, but the caller sees StoreUnavailable
    store.freeze(lease)                            # its keepalives stop, as in a frozen process
    clock.advance(lease.ttl)                       # ... and it expires, with no sleeping

Faults:

- ``"fail"``: the operation fails before it reaches the store;
- ``"lose_reply"``: the store applied the operation, but the reply is lost
  (the hard case for create-only and compare-and-swap retries);
- ``"delay"``: the operation takes ``delay`` seconds (on a ``ManualClock``
  the clock advances by that much while it runs);
- ``drop_watches()``: every open watch loses its connection and ends with
  ``StoreUnavailable``;
- ``freeze(lease)`` / ``thaw(lease)``: the lease's keepalives stop and start
  again (with no lease: every lease of this client, present and future);
  ``expire(lease)``: the store drops the lease now;
- ``crash()``: the client's process dies: every later operation fails and its
  leases are never renewed again, so the store expires them after their ttl.

Blocking calls (``Lock.acquire()``, ``Election.campaign()``, ``Barrier.wait()``)
wait on watches with timeouts. A ``Scheduler`` runs such calls on threads, one
at a time, and measures their timeouts on a ``ManualClock``: a call *parks*
when it waits on a FaultyStore's watch, and resumes only in
``Scheduler.settle()``, once an event is there or the clock has passed its
timeout. What runs, and in which order, then depends only on the test::

    scheduler = Scheduler(clock)
    waiting = scheduler.start(lambda: lock.acquire())   # parks: the lock is held
    holder.release()
    scheduler.settle()                                   # the waiter wakes and takes it
    assert waiting.result() is True

Faults reach the wrapped store through its backend methods, so they work on
every backend; with ``memory://`` and a ``ManualClock`` runs are fast and
reproducible.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from .._clock import ManualClock
from .._errors import StoreUnavailable
from .._lease import Lease
from .._store import Store
from .._types import Event, KVPair
from .._watch import Watch

__all__ = ["Fault", "FaultyStore", "Killed", "Scheduler", "Stalled", "Task"]

T = TypeVar("T")
FaultKind = Literal["fail", "lose_reply", "delay"]
OPS = (
    "get",
    "put",
    "delete",
    "list",
    "delete_tree",
    "atomic_put",
    "atomic_delete",
    "watch",
    "lease",
    "keepalive",
    "revoke",
)


@dataclass
class Fault:
    kind: FaultKind
    op: str | None = None  # None: the next operation of any kind
    delay: float = 0.0


class FaultyStore(Store):
    """A Store that forwards to ``inner`` and injects the faults it is told to.

    It takes over ``inner``: use only the FaultyStore afterwards. Its key
    space is ``inner``'s, prefix included.
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(prefix=inner._prefix, clock=inner.clock)
        self.backend = inner.backend  # type: ignore[misc]
        self.inner = inner
        self._faults: deque[Fault] = deque()
        self._frozen: set[int] = set()
        self._frozen_all = False
        self._crashed = False
        self._lock = threading.Lock()
        #: What was injected, in order: (op, kind) pairs, for assertions and reproduction.
        self.injected: list[tuple[str, str]] = []

    def describe(self) -> str:
        return f"faulty {self.inner.describe()}"

    # -- the faults ----------------------------------------------------------

    def inject(self, kind: FaultKind, *, op: str | None = None, count: int = 1, delay: float = 0.0) -> None:
        """Make the next ``count`` operations (of kind ``op``, or any) suffer ``kind``."""
        if op is not None and op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        with self._lock:
            self._faults.extend(Fault(kind, op, delay) for _ in range(count))

    def clear(self) -> None:
        """Forget the faults not yet used, and thaw every lease."""
        with self._lock:
            self._faults.clear()
            self._frozen.clear()
            self._frozen_all = False

    def freeze(self, lease: Lease | None = None) -> None:
        """Stop renewing ``lease`` (every lease of this store, now and later, if None), as if its process were frozen."""
        with self._lock:
            if lease is None:
                self._frozen_all = True
            else:
                self._frozen.add(lease.id)

    def thaw(self, lease: Lease | None = None) -> None:
        """Renew ``lease`` again (every lease, if None); a lease already past its deadline stays lost."""
        with self._lock:
            if lease is None:
                self._frozen_all = False
                self._frozen.clear()
            else:
                self._frozen.discard(lease.id)

    def crash(self) -> None:
        """The client's process dies: every later operation fails and no lease is renewed again.

        Nothing is cleaned up: the store expires the leases after their ttl,
        as it would for a process killed with SIGKILL. Stop the client's
        blocked calls too (``Scheduler.kill``): a dead process runs nothing.
        """
        with self._lock:
            self._crashed = True
        self._keeper.close()

    @property
    def crashed(self) -> bool:
        return self._crashed

    def leases(self) -> list[Lease]:
        """The leases this client keeps alive (granted, not revoked, not yet lost)."""
        return sorted(self._keeper.leases(), key=lambda lease: lease.id)

    def expire(self, lease: Lease) -> None:
        """The store drops ``lease`` now (its keys go); its holder learns at the next renewal."""
        self.inner._lease_revoke(lease)

    def drop_watches(self) -> None:
        """Every open watch loses its connection and ends with ``StoreUnavailable``."""
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            self.inner._unwatch(watch)
            watch._fail(StoreUnavailable("injected: the watch's connection dropped", backend=self.backend))

    def _take(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in (None, op):
                    self._faults.remove(fault)
                    self.injected.append((op, fault.kind))
                    return fault
        return None

    def _call(self, op: str, action: Callable[[], T]) -> T:
        if self._crashed:
            raise StoreUnavailable(f"injected: {op} from a crashed client")
        fault = self._take(op)
        if fault is None:
            return action()
        if fault.kind == "fail":
            raise StoreUnavailable(f"injected: {op} failed before reaching the store")
        if fault.kind == "delay":
            if isinstance(self.clock, ManualClock):
                self.clock.advance(fault.delay)
            else:
                time.sleep(fault.delay)
            return action()
        action()
        raise StoreUnavailable(f"injected: {op} was applied but its reply was lost")

    # -- forwarding ------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        return self._call("get", lambda: self.inner._get(key))

    def _exists(self, key: str) -> bool:
        return self._call("get", lambda: self.inner._exists(key))

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._call("put", lambda: self.inner._put(key, value, ttl, lease))

    def _delete(self, key: str) -> bool:
        return self._call("delete", lambda: self.inner._delete(key))

    def _list(self, prefix: str) -> list[KVPair]:
        return self._call("list", lambda: self.inner._list(prefix))

    def _delete_tree(self, prefix: str) -> None:
        self._call("delete_tree", lambda: self.inner._delete_tree(prefix))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._call("atomic_put", lambda: self.inner._atomic_put(key, value, revision, ttl, lease))

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._call("atomic_delete", lambda: self.inner._atomic_delete(key, revision))

    def _watch(self, watch: Watch, key: str, tree: bool, start_revision: int | None) -> None:
        # The same object, able to park in a Scheduler's task (events may arrive before the call returns).
        watch.__class__ = _ScheduledWatch
        self._call("watch", lambda: self.inner._watch(watch, key, tree, start_revision))

    def _unwatch(self, watch: Watch) -> None:
        self.inner._unwatch(watch)

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return self._call("lease", lambda: self.inner._lease_grant(ttl))

    def _lease_keepalive(self, lease: Lease) -> bool:
        if self._crashed or self._frozen_all or lease.id in self._frozen:
            raise StoreUnavailable("injected: the lease's holder is frozen")
        return self._call("keepalive", lambda: self.inner._lease_keepalive(lease))

    def _lease_revoke(self, lease: Lease) -> None:
        self._call("revoke", lambda: self.inner._lease_revoke(lease))

    def _close(self) -> None:
        self.inner.close()


# -- blocking calls, driven one at a time on a ManualClock ----------------------------


class Killed(BaseException):
    """Raised where a task waits when ``Scheduler.kill`` ends it (a BaseException, so recipes pass it on)."""


class Stalled(RuntimeError):
    """A task blocked on something a Scheduler cannot drive, or never stopped running."""


_current = threading.local()

_NEW, _RUNNING, _PARKED, _DONE = "new", "running", "parked", "done"


class Task(Generic[T]):
    """A call a Scheduler runs: ``done``, then ``result()`` (which raises what the call raised)."""

    def __init__(self, scheduler: Scheduler, function: Callable[[], T], name: str) -> None:
        self.scheduler = scheduler
        self.name = name
        self.frozen = False  # a frozen task is not resumed (its process is stopped)
        self._function = function
        self._state = _NEW
        self._ready: Callable[[], bool] = lambda: False
        self._killed = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"coord-task-{name}", daemon=True)

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def error(self) -> BaseException | None:
        """What the call raised (``None`` while running or if it returned)."""
        return self._error

    def result(self) -> T:
        """What the call returned; raises what it raised, or ``RuntimeError`` if it has not ended."""
        if self._state != _DONE:
            raise RuntimeError(f"{self!r} has not ended")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<Task {self.name} {self._state}{' frozen' if self.frozen else ''}>"

    def _main(self) -> None:
        _current.task = self
        try:
            self._value = self._function()
        except BaseException as exc:  # handed to whoever asks for the result
            self._error = exc
        finally:
            with self.scheduler._cond:
                self._state = _DONE
                self.scheduler._cond.notify_all()

    def _park(self, ready: Callable[[], bool]) -> None:
        """In the task's thread: wait until the scheduler resumes us (it checks ``ready`` first)."""
        cond = self.scheduler._cond
        with cond:
            if self._killed:
                raise Killed(self.name)
            self._ready = ready
            self._state = _PARKED
            cond.notify_all()
            while self._state != _RUNNING:
                cond.wait()
            if self._killed:
                raise Killed(self.name)


class Scheduler:
    """Runs blocking calls in threads, one at a time, so tests on a ManualClock are reproducible.

    ``start`` runs a call until it ends or parks (waits on a watch of a
    FaultyStore); the test's thread waits meanwhile. ``settle`` resumes the
    parked calls that can go on (their watch has an event, or the clock has
    passed the timeout they wait with), one at a time in the order they were
    started, until none can. Timeouts are measured on the clock, so a call
    waiting with a 10 s timeout wakes when the test advances the clock by
    10 s, at once, and never otherwise.

    A call that blocks on anything else (a lock, a sleep, a watch of another
    store) raises ``Stalled`` in the test after ``stall_timeout`` real seconds.
    """

    def __init__(self, clock: ManualClock, *, stall_timeout: float = 30.0) -> None:
        self.clock = clock
        self.stall_timeout = stall_timeout
        self._cond = threading.Condition()
        self._tasks: list[Task[Any]] = []
        self._started = 0

    @property
    def tasks(self) -> list[Task[Any]]:
        """The tasks not yet ended, in the order they started."""
        return [task for task in self._tasks if not task.done]

    def start(self, function: Callable[[], T], name: str = "") -> Task[T]:
        """Start ``function()`` in a new thread; return once it has ended or parked."""
        self._started += 1
        task: Task[T] = Task(self, function, name or f"t{self._started}")
        self._tasks.append(task)
        with self._cond:
            task._state = _RUNNING
        task._thread.start()
        self._wait_while_running(task)
        return task

    def settle(self, max_runs: int = 10_000) -> None:
        """Resume parked tasks that can go on, first-started first, until none can."""
        for _ in range(max_runs):
            task = next((t for t in self._tasks if t._state == _PARKED and not t.frozen and t._ready()), None)
            if task is None:
                self._tasks = [t for t in self._tasks if not t.done]
                return
            self._resume(task)
        raise Stalled(f"tasks kept waking for {max_runs} turns without settling: {self.tasks}")

    def freeze(self, task: Task[Any]) -> None:
        """Stop resuming ``task`` (its process is stopped) until ``thaw``."""
        task.frozen = True

    def thaw(self, task: Task[Any]) -> None:
        task.frozen = False

    def kill(self, task: Task[Any]) -> None:
        """End ``task``: ``Killed`` is raised where it waits, and every later wait of it."""
        task._killed = True
        for _ in range(100):
            if task.done:
                return
            self._resume(task)
        raise Stalled(f"{task!r} would not end")

    def close(self) -> None:
        """Kill every task not yet ended."""
        for task in self.tasks:
            self.kill(task)
        self._tasks.clear()

    def _resume(self, task: Task[Any]) -> None:
        with self._cond:
            if task._state != _PARKED:
                return
            task._state = _RUNNING
            self._cond.notify_all()
        self._wait_while_running(task)

    def _wait_while_running(self, task: Task[Any]) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: task._state != _RUNNING, timeout=self.stall_timeout):
                raise Stalled(
                    f"{task!r} neither ended nor waited on a FaultyStore watch within {self.stall_timeout} s: "
                    "it blocks on something the scheduler cannot drive"
                )


class _ScheduledWatch(Watch):
    """A FaultyStore's watch: in a Scheduler's task, ``get`` parks, with its timeout on the scheduler's clock."""

    def get(self, timeout: float | None = None) -> Event | None:
        task: Task[Any] | None = getattr(_current, "task", None)
        if task is None or timeout == 0:
            return super().get(timeout)
        clock = task.scheduler.clock
        until = None if timeout is None else clock.now() + timeout

        def ready() -> bool:
            return not self._queue.empty() or (until is not None and clock.now() >= until)

        while True:
            event = super().get(timeout=0)
            if event is not None or (until is not None and clock.now() >= until):
                return event
            task._park(ready)
