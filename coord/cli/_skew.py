"""The clock skew between this host and a store's server, read with ``Store.server_time()``.

Each backend reads its server's clock over the Store's own connection,
credentials and TLS: Redis ``TIME`` (microseconds); a ZooKeeper znode's
``ctime`` (milliseconds); etcd's and Consul's HTTP ``Date`` header (whole
seconds). sqlite and memory run on this host's clock: no skew.

``offset`` is the server's clock minus this host's, in seconds; ``error``
is how far off it may be. A fine clock is read a few times, bracketed by
this host's clock, and the reading with the shortest round trip is kept
(its error: half that round trip, plus the clock's step). A clock counted
in whole seconds is read until its second turns: the turn fell between the
last reading of the old second and the first of the new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import coord

__all__ = ["Skew", "measure"]

_TRIES = 5
_TURN_WITHIN = 2.5  # seconds: a whole-second clock turns within one
_TURN_POLL = 0.005


@dataclass(frozen=True)
class Skew:
    offset: float
    error: float
    how: str


def measure(store: coord.Store) -> Skew | str:
    """The skew, or why it was not measured."""
    try:
        first = store.server_time()
        if first is None:
            return "this host's own clock: no skew"
        if first.resolution >= 1:
            return _turn(store, first)
        return _bracket(store)
    except coord.CoordError as exc:  # a diagnosis must go on: say what failed instead
        return f"not measured: {exc}"


def _read(store: coord.Store) -> tuple[float, coord.ServerTime, float]:
    sent = time.time()
    server = store.server_time()
    assert server is not None
    return sent, server, time.time()


def _bracket(store: coord.Store) -> Skew:
    best: Skew | None = None
    for _ in range(_TRIES):
        sent, server, back = _read(store)
        error = (back - sent) / 2 + server.resolution
        if best is None or error < best.error:
            best = Skew(server.seconds - (sent + back) / 2, error, server.source)
    assert best is not None
    return best


def _turn(store: coord.Store, first: coord.ServerTime) -> Skew:
    _, last, before = _read(store)
    stop = time.monotonic() + _TURN_WITHIN
    while time.monotonic() < stop:
        _, server, back = _read(store)
        if server.seconds != last.seconds:
            # The server's second ``server.seconds`` began between ``before`` (it still read the last one) and ``back``.
            return Skew(server.seconds - (before + back) / 2, (back - before) / 2, server.source)
        last, before = server, back
        time.sleep(_TURN_POLL)
    raise coord.CoordError(f"the server's {first.source} did not change within {_TURN_WITHIN} s")
