"""Scheduler: blocking calls run one at a time on a ManualClock, so tests are reproducible."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from .._clock import ManualClock
from .._watch import Watch

__all__ = ["Killed", "ScheduledWatch", "Scheduler", "Stalled", "Task"]

T = TypeVar("T")


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
        return cast(T, self._value)

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


class ScheduledWatch(Watch):
    """A FaultyStore's watch: in a Scheduler's task, ``get`` parks, with its timeout on the scheduler's clock."""

    def _take(self, timeout: float | None) -> object:
        task: Task[Any] | None = getattr(_current, "task", None)
        if task is None or timeout == 0:
            return super()._take(timeout)
        clock = task.scheduler.clock
        until = None if timeout is None else clock.now() + timeout

        def ready() -> bool:
            return self._ready() or (until is not None and clock.now() >= until)

        while True:
            item = super()._take(0)
            if item is not None or (until is not None and clock.now() >= until):
                return item
            task._park(ready)
