"""The one loop behind ``Election.observe`` and ``watch_service``: read, and read again after each batch of changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from .._errors import CoordError
from .._store import Store
from ._waits import next_batch

__all__ = ["observe"]

T = TypeVar("T")


def observe(store: Store, prefix: str, read: Callable[[], T | None]) -> Iterator[T]:
    """``read()`` now, then after each batch of changes under ``prefix``; yield each result unlike the last.

    ``None`` from ``read`` is not reported. Observers are readers: a herd of
    them costs reads, never a wrong answer, and a batch of changes costs one
    read, however many it holds. Ends when the store is closed.
    """
    with store.watch_tree(prefix) as watch:
        seen: T | None = None
        while True:
            try:
                current = read()
            except CoordError:
                if store.closed:
                    return  # closed while we looked: the end, not an error
                raise
            if current is not None and current != seen:
                seen = current
                yield current
            if not next_batch(watch):
                return
