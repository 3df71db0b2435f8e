"""Holders learn that their key is gone even while its lease lives: one batched read per Store, every ttl/3.

A holding's key can vanish behind its back: an operator's ``delete_tree``,
a cleanup script, a restore. Its lease is still renewed, so nothing else
would tell the holder, and a second holder could get in. Every Store with
holdings therefore reads all of their keys in one transaction (in batches
of ``BATCH`` gets) on its clock's ``"ticket-guard"`` lane, about every third
of the shortest ttl among them, and tells the holder of each key that is
gone, or is no longer bound to its lease, within about half a ttl.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable

from .._clock import Timer
from .._errors import CoordError
from .._lease import Lease
from .._store import Store

__all__ = ["guard"]

log = logging.getLogger("coord.recipes")

#: Keys read per transaction (etcd refuses transactions of more than 128 operations by default).
BATCH = 100


class _Guard:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._timers = store.clock.timers("ticket-guard")
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[str, Lease, Callable[[], None]]] = {}
        self._ids = itertools.count()
        self._timer: Timer | None = None

    def add(self, key: str, lease: Lease, on_gone: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            number = next(self._ids)
            self._watched[number] = (key, lease, on_gone)
            if self._timer is None or not self._timer.pending:
                self._schedule()
        return lambda: self._remove(number)

    def _remove(self, number: int) -> None:
        with self._lock:
            self._watched.pop(number, None)

    def _schedule(self) -> None:
        """Called with ``_lock`` held: the next check, if anything is watched."""
        if not self._watched or self._store.closed:
            self._timer = None
            return
        period = min(lease.ttl for _, lease, _ in self._watched.values()) / 3
        self._timer = self._timers.call_at(self._store.clock.now() + period, self._check)

    def _check(self) -> None:
        with self._lock:
            watched = [entry for entry in self._watched.items() if entry[1][1].alive]
        gone = []
        for start in range(0, len(watched), BATCH):
            batch = watched[start : start + BATCH]
            txn = self._store.transaction()
            for _, (key, _, _) in batch:
                txn.get(key)
            try:
                pairs = txn.commit()
            except CoordError as exc:  # unreachable now: the next check looks again
                log.debug("checking holders' keys failed: %s", exc)
                break
            gone += [entry for entry, pair in zip(batch, pairs, strict=True) if _lost(pair, entry[1][1])]
        with self._lock:
            for number, _ in gone:
                self._watched.pop(number, None)
            self._schedule()
        for _, (key, _, on_gone) in gone:
            log.warning("%s is gone, though its lease lives: its holder no longer holds", key)
            on_gone()


def _lost(pair: object, lease: Lease) -> bool:
    """Whether a holder's key, as read, no longer belongs to it (and its lease is still there to say so)."""
    return lease.alive and (pair is None or getattr(pair, "lease", None) != lease.id)


_guards: weakref.WeakKeyDictionary[Store, _Guard] = weakref.WeakKeyDictionary()
_guards_lock = threading.Lock()


def guard(store: Store, key: str, lease: Lease, on_gone: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_gone()`` (on the guard's lane) if ``key`` vanishes while ``lease`` lives; returns a way to stop."""
    with _guards_lock:
        keeper = _guards.get(store)
        if keeper is None:
            keeper = _guards[store] = _Guard(store)
    return keeper.add(key, lease, on_gone)
