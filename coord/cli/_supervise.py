"""Running CMD while a holding lasts: what ``lock``, ``elect`` and ``register`` share.

1. SIGINT, SIGTERM and SIGHUP are caught first, before the store is opened
   (so coord's own exit handler stays out: this module decides what they do).
2. The holding (a lock, a leadership, a registration) is obtained on a
   thread while the main thread waits: a signal then ends coord at once,
   with 128 + N, and closing the store withdraws its ticket. ``None`` from
   ``obtain`` means ``--timeout`` passed: ``TIMED_OUT``, CMD never runs.
3. CMD runs (``_child``) with the holding's environment. The main thread
   sleeps until something happens: CMD ended, a signal came (passed on to
   CMD's group), the holding's ``on_lost`` called, or the lease's deadline
   came. At the deadline, reading ``lost`` (the holding protocol) checks it,
   so a lost lease is seen at the client's deadline, no later than ``held``
   turns false, even if no callback has run yet.
4. If the holding is lost and ``ends_on_loss``: SIGTERM to CMD's group,
   SIGKILL after ``grace`` seconds, and ``LOST``. Otherwise CMD's status,
   once the holding is let go (one delete) and the store closed.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

import click

import coord

from . import _status as status
from ._app import Settings
from ._child import CannotRun, Child
from ._mask import mask_text

__all__ = ["Holder", "Job", "supervise"]

log = logging.getLogger("coord.cli")

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Holder(Protocol):
    """The holding protocol (docs/recipes.md), as far as the supervisor reads it."""

    @property
    def held(self) -> bool: ...

    @property
    def lost(self) -> threading.Event: ...

    @property
    def lease(self) -> coord.Lease | None: ...

    @property
    def token(self) -> int: ...

    def on_lost(self, callback: Callable[[Any], Any]) -> None: ...


H = TypeVar("H", bound=Holder)


@dataclass
class Job(Generic[H]):
    """What to hold and what to run: the parts in which ``lock``, ``elect`` and ``register`` differ."""

    #: For messages: "lock 'deploy'".
    what: str
    #: Obtain the holding (blocking); ``None`` if its timeout passed.
    obtain: Callable[[coord.Store], H | None]
    #: Let it go: one delete.
    release: Callable[[H], None]
    #: The variables CMD gets on top of coord's environment.
    env: Callable[[H], Mapping[str, str]]
    argv: Sequence[str]
    #: Seconds between SIGTERM and SIGKILL when the holding is lost.
    grace: float
    #: Whether losing the holding ends CMD (a registration registers again by itself instead).
    ends_on_loss: bool = True


class _Signals:
    """The signals coord passes on: recorded in order, each one setting ``wake``."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._pending: collections.deque[int] = collections.deque()
        self._previous = {signum: signal.signal(signum, self._caught) for signum in FORWARDED}

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)
        self._wake.set()

    def take(self) -> list[int]:
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        return taken

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def supervise(settings: Settings, job: Job[H]) -> int:
    """Hold ``job``'s holding and run its CMD under it; the exit status (see ``_status``)."""
    wake = threading.Event()
    signals = _Signals(wake)
    try:
        with settings.connect() as store:
            obtained = _obtain(store, job, signals, wake)
            if isinstance(obtained, int):
                return obtained
            try:
                return _run(store, job, obtained, signals, wake)
            finally:
                _release(job, obtained)
    except coord.CoordError as exc:
        settings.out.note(f"coord: {job.what}: {mask_text(str(exc))}")
        return status.WRAPPER_FAILED
    finally:
        signals.restore()


def _obtain(store: coord.Store, job: Job[H], signals: _Signals, wake: threading.Event) -> H | int:
    """The holding, or the status to exit with (timed out, or a signal came first)."""
    box: dict[str, Any] = {}

    def obtaining() -> None:
        try:
            box["holder"] = job.obtain(store)
        except BaseException as exc:
            box["error"] = exc
        finally:
            wake.set()

    thread = threading.Thread(target=obtaining, name="coord-obtain", daemon=True)
    thread.start()
    while thread.is_alive():
        wake.wait()
        wake.clear()
        caught = signals.take()
        if caught:
            log.info("%s: signal %d while waiting; giving up", job.what, caught[0])
            return status.signalled(caught[0])  # closing the store withdraws the ticket
    if "error" in box:
        raise box["error"]
    holder: H | None = box["holder"]
    if holder is None:
        _say(f"coord: {job.what}: not obtained within the timeout; not running {job.argv[0]}")
        return status.TIMED_OUT
    return holder


def _run(store: coord.Store, job: Job[H], holder: H, signals: _Signals, wake: threading.Event) -> int:
    """Run CMD while ``holder`` holds; its status, or ``LOST``."""
    holder.on_lost(lambda _holder: wake.set())
    try:
        child = Child(job.argv, job.env(holder), wake)
    except CannotRun as exc:
        _say(f"coord: {exc}")
        return exc.status
    reported: threading.Event | None = None
    try:
        while True:
            wake.wait(_until_deadline(store, holder))
            wake.clear()
            for signum in signals.take():
                child.signal(signum)
            code = child.status
            if code is not None:
                return code
            if holder.lost.is_set() and holder.lost is not reported:
                reported = holder.lost
                if job.ends_on_loss:
                    _say(
                        f"coord: {job.what} was lost: terminating {job.argv[0]} (SIGTERM, SIGKILL after {job.grace:g} s)"
                    )
                    child.terminate(job.grace)
                    return status.LOST
                _say(f"coord: {job.what} was lost; registering again when the store answers")
    finally:
        child.close()


def _release(job: Job[H], holder: H) -> None:
    """Let go at once (one delete), before closing the store revokes the session; never changes the status."""
    try:
        job.release(holder)
    except coord.CoordError as exc:  # the store expires the ticket with the session
        log.warning("%s: letting go failed: %s", job.what, exc)


def _until_deadline(store: coord.Store, holder: Holder) -> float:
    """Seconds until the holding's lease deadline, when ``lost`` must be read again (at most one)."""
    lease = holder.lease
    if lease is None:
        return 1.0
    return min(1.0, max(0.001, lease.deadline - store.clock.now()))


def _say(message: str) -> None:
    click.echo(message, err=True)
