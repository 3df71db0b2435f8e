"""Leader election: the candidate with the oldest ticket leads.

Candidates queue as ``_waiting`` describes, under ``election/<name>``, with
``limit=1``; each ticket's value is its candidate's value, so the leader's
value is the value of the oldest ticket.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .._errors import KeyModified, KeyNotFound, LeaseExpired
from .._keys import check_timeout, check_ttl
from .._lease import Lease
from .._metrics import count, record
from .._store import Store
from ._holding import Holder, Holding
from ._observe import observe
from ._queue import Hold, join, name_segment, resolve
from ._steps import Steps, run

__all__ = ["Election", "Leadership"]


class Election:
    """A named election among candidates sharing one store.

    ``store=None`` uses ``coord.default_store()``. A campaign's ticket is
    bound to the Store's session of ``ttl`` (``Store.session``), or to
    ``lease`` if one is given (bind your own keys to the same lease and they
    go with the leadership): a leader that dies is replaced when that lease
    expires, within ``ttl`` plus the backend's expiry delay (see
    docs/recipes.md). ``value`` is what ``leader()`` and ``observe()``
    report while this candidate leads.
    """

    def __init__(
        self,
        name: str,
        *,
        store: Store | None = None,
        ttl: float = 10.0,
        value: bytes = b"",
        lease: Lease | None = None,
    ) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        self.name = name
        self.ttl = check_ttl(ttl)
        self.value = value
        self._store = store
        self._lease = lease
        self._prefix = f"election/{name_segment(name)}"

    def campaign(self, timeout: float | None = None) -> Leadership:
        """Block until this candidate leads; ``TimeoutError`` if ``timeout`` seconds pass first.

        Candidates are served in the order they campaigned. A candidate whose
        lease is lost while it waits queues again, at the back.
        """
        timeout = check_timeout(timeout)
        store = resolve(self._store)
        started = store.clock.now()
        hold = run(self._join(store, timeout))
        if hold is None:
            raise TimeoutError(f"not elected leader of {self.name!r} within {timeout} s")
        return self._won(store, hold, started)

    def _join(self, store: Store, timeout: float | None) -> Steps[Hold | None]:
        """The campaign's protocol (shared with ``coord.aio``)."""
        return join(store, self._prefix, self.value, ttl=self.ttl, lease=self._lease, limit=1, timeout=timeout)

    def _won(self, store: Store, hold: Hold, started: float) -> Leadership:
        """Leadership, from a campaign begun at ``started`` (store clock)."""
        now = store.clock.now()
        labels = {"coord.backend": store.backend, "coord.recipe": "election", "coord.name": self.name}
        count("coord.election.won", labels)
        record("coord.lock.wait.duration", now - started, labels)
        if hold.woke is not None:
            record("coord.election.failover.gap", now - hold.woke, labels)
        return Leadership(self, hold)

    def leader(self) -> bytes | None:
        """The current leader's value, or ``None`` when nobody leads."""
        tickets = resolve(self._store).list(self._prefix)
        return min(tickets, key=lambda pair: pair.created).value if tickets else None

    def observe(self) -> Iterator[bytes]:
        """The leader's value now and each time the leader or its value changes.

        Intervals with no leader are not reported. Blocks between changes;
        ends when the store is closed; close the generator to stop watching.
        """
        store = resolve(self._store)

        def leader() -> tuple[str, bytes] | None:
            tickets = store.list(self._prefix)
            first = min(tickets, key=lambda pair: pair.created, default=None)
            return None if first is None else (first.key, first.value)

        for _key, value in observe(store, self._prefix, leader):
            yield value

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"


class Leadership(Holder):
    """This candidate's term as leader. A context manager that resigns on exit.

    It follows the holding protocol (docs/recipes.md). ``is_leader`` (or
    ``held``) is exact at the moment it is read: it turns false when the
    lease is lost, no later than the moment the store may remove the
    leader's key and elect another; ``lost`` is set by then, and the
    ``on_lost`` callbacks run. ``token`` is the fencing token: strictly
    higher for every later leader of the same election.
    """

    def __init__(self, election: Election, hold: Hold) -> None:
        self.election = election
        self._hold = hold
        self._lock = threading.Lock()
        self._holding: Holding[Leadership] = Holding(self)
        self._holding.begin(
            hold.store, hold.pair.key, hold.lease, hold.token, on_gone=lambda: setattr(hold, "gone", True)
        )

    @property
    def is_leader(self) -> bool:
        return self._hold.alive

    @property
    def held(self) -> bool:
        """The holding protocol's name for ``is_leader``."""
        return self.is_leader

    @property
    def lease(self) -> Lease:
        """The lease the leader's ticket is bound to: the Store's session, or the Election's own ``lease``.

        Keys written with it go when it ends; resigning deletes the ticket
        only, so to tie keys to this one term, give the Election a lease of
        its own and revoke it after ``resign()``.
        """
        return self._hold.lease

    @property
    def value(self) -> bytes:
        return self._hold.pair.value

    def proclaim(self, value: bytes) -> None:
        """Change the leader's value without a new election; ``LeaseExpired`` if no longer leader."""
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        with self._lock:
            hold = self._hold
            if not hold.alive:
                raise LeaseExpired("no longer the leader", key=hold.pair.key)
            try:
                # Compare-and-swap on our own ticket: succeeds only while it is still ours.
                hold.pair = hold.store.atomic_put(hold.pair.key, value, hold.pair, lease=hold.lease)
            except KeyModified as exc:
                # An earlier proclaim may have been applied with its reply lost: the ticket
                # is still ours if it is still bound to our lease. Swap again on what is there.
                current = hold.store.get(hold.pair.key)
                if current.lease != hold.lease.id:
                    raise LeaseExpired("no longer the leader", key=hold.pair.key) from exc
                hold.pair = hold.store.atomic_put(hold.pair.key, value, current, lease=hold.lease)
            except KeyNotFound as exc:
                raise LeaseExpired("no longer the leader", key=hold.pair.key) from exc

    def resign(self) -> None:
        """Stop leading now; the next candidate is elected within one watch round trip. Idempotent."""
        self._holding.end()
        self._hold.release()

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.resign()

    def __repr__(self) -> str:
        state = "leading" if self.is_leader else "lost" if self.lost.is_set() else "resigned"
        return f"<Leadership {self.election.name!r} token={self.token} {state}>"
