"""Recipes' protocols as generators of steps, so that one implementation serves threads and asyncio.

A protocol (joining a queue, waiting for a turn, arriving at a barrier) is
a generator that yields what it needs done and receives the outcome:

- ``Call(fn, *args)``: a store call (a round trip or a few; never a wait);
- ``Wait(watch, timeout)``: the watch's next item, or ``None`` after
  ``timeout`` seconds.

``run`` performs the steps in the calling thread (the threaded API);
``coord.aio`` performs the same steps on an event loop, store calls in a
worker thread and waits without one. An error a step raises is thrown
into the generator where it yielded, so the protocol's ``try``/``except``
and ``finally`` clean up the same way under either driver (a cancelled
asyncio task included).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .._types import Event
from .._watch import Watch

__all__ = ["Call", "Steps", "Wait", "call", "run", "wait"]

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """A store call to make."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def __call__(self) -> Any:
        return self.fn(*self.args)


@dataclass(frozen=True)
class Wait:
    """The next item of ``watch`` (``None`` after ``timeout`` seconds)."""

    watch: Watch
    timeout: float | None


#: A protocol: yields steps, receives their outcomes, returns its result.
Steps = Generator[Call | Wait, Any, T]


def call(fn: Callable[..., T], *args: Any) -> Generator[Call | Wait, Any, T]:
    """``result = yield from call(fn, *args)``: a store call, typed."""
    result: T = yield Call(fn, args)
    return result


def wait(watch: Watch, timeout: float | None) -> Generator[Call | Wait, Any, Event | None]:
    """``event = yield from wait(watch, timeout)``: the watch's next event, or ``None`` on timeout."""
    event: Event | None = yield Wait(watch, timeout)
    return event


def run(steps: Steps[T]) -> T:
    """Perform a protocol's steps in this thread; return its result (or raise its error)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            value = step() if isinstance(step, Call) else step.watch.get(step.timeout)
        except BaseException as exc:  # thrown into the protocol, which cleans up and re-raises
            error = exc
