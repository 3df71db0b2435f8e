"""The one loop behind ``Election.observe`` and ``watch_service``: read, and read again after each batch of changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .._errors import CoordError
from .._store import Store
from .._watch import Watch
from ._steps import Steps, call, run
from ._waits import next_batch

__all__ = ["Observer", "observe"]

T = TypeVar("T")


class Observer(Generic[T]):
    """One observation of ``read()`` over the keys under ``prefix``; ``next()`` is a protocol of steps.

    ``None`` from ``read`` is not reported. Observers are readers: a herd of
    them costs reads, never a wrong answer, and a batch of changes costs one
    read, however many it holds.
    """

    def __init__(self, store: Store, prefix: str, read: Callable[[], T | None]) -> None:
        self._store = store
        self._prefix = prefix
        self._read = read
        self._watch: Watch | None = None
        self._seen: T | None = None

    def next(self) -> Steps[T | None]:
        """The next result unlike the last; ``None`` once the store is closed."""
        fresh = self._watch is None
        if self._watch is None:
            # Watch first, then read: a change after the read is not missed.
            self._watch = yield from call(self._store.watch_tree, self._prefix)
        while True:
            if not fresh and not (yield from next_batch(self._watch)):
                return None
            fresh = False
            try:
                current = yield from call(self._read)
            except CoordError:
                if self._store.closed:
                    return None  # closed while we looked: the end, not an error
                raise
            if current is not None and current != self._seen:
                self._seen = current
                return current

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()


def observe(store: Store, prefix: str, read: Callable[[], T | None]) -> Iterator[T]:
    """``read()`` now, then after each batch of changes under ``prefix``; yield each result unlike the last.

    Ends when the store is closed; close the generator to stop watching.
    """
    observer = Observer(store, prefix, read)
    try:
        while (value := run(observer.next())) is not None:
            yield value
    finally:
        observer.close()
