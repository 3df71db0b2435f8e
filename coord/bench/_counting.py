"""Counting a Store's operations: every public Store method, and the revoke of every lease it grants.

``count_operations(store)`` patches the instance (not the class), so the
recipes under test run unchanged and only this Store is counted. Methods are
found on ``coord.Store`` at run time, so an operation added to the contract
is counted without a change here. ``close`` and ``describe`` are not round
trips of the workload and are left out.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import coord

__all__ = ["OperationCounter", "count_operations", "store_methods"]

_NOT_OPERATIONS = {"close", "describe"}


def store_methods() -> list[str]:
    """The public methods of ``coord.Store`` that talk to the store."""
    return sorted(
        name
        for name, value in vars(coord.Store).items()
        if not name.startswith("_") and callable(value) and name not in _NOT_OPERATIONS
    )


class OperationCounter:
    """Calls per operation, thread-safe; ``snapshot()`` for the counts at a moment."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)


def count_operations(store: coord.Store, counter: OperationCounter | None = None) -> OperationCounter:
    """Count from now on every operation called on ``store`` (and every revoke of its leases)."""
    counter = counter or OperationCounter()
    for name in store_methods():
        method = getattr(store, name)
        wrapped = _counted(method, name, counter)
        if name == "lease":
            wrapped = _counting_leases(wrapped, counter)
        setattr(store, name, wrapped)
    return counter


def _counted(method: Callable[..., Any], name: str, counter: OperationCounter) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        counter.add(name)
        return method(*args, **kwargs)

    return call


def _counting_leases(grant: Callable[..., Any], counter: OperationCounter) -> Callable[..., Any]:
    # A lease's revoke goes through the Lease, not a Store method: count it there.
    @functools.wraps(grant)
    def call(*args: Any, **kwargs: Any) -> Any:
        lease = grant(*args, **kwargs)
        if isinstance(lease, coord.Lease):
            setattr(lease, "revoke", _counted(lease.revoke, "lease.revoke", counter))  # noqa: B010
        return lease

    return call
