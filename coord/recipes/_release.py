"""Letting go of a ticket: one delete, retried in the background if the store does not answer.

With tickets bound to a shared session rather than a lease of their own,
revoking the lease is no longer how a holder lets go: it deletes its ticket
(one round trip). If that delete fails, the holder already reports not
held, and the delete is retried on the Store clock's ``"ticket-release"``
lane, backing off, until it succeeds or the ticket's lease ends (the store
then deletes the ticket itself). So no ticket outlives its release for
longer than the store stays unreachable.
"""

from __future__ import annotations

import functools
import logging

from .._errors import CoordError, KeyNotFound, StoreClosed
from .._lease import Lease
from .._store import Store

__all__ = ["withdraw"]

log = logging.getLogger("coord.recipes")

_RETRY_FIRST = 0.05
_RETRY_MAX = 2.0


def withdraw(store: Store, key: str, lease: Lease | None, failures: int = 0) -> None:
    """Delete the ticket ``key`` (bound to ``lease``); if the store cannot be told, keep trying in the background.

    The key is the holder's alone (a random name), so a plain delete is safe.
    """
    if store.closed or (lease is not None and not lease.alive):
        return  # the ticket goes with its lease, on the store's side
    try:
        store.delete(key)
    except (KeyNotFound, StoreClosed):
        return
    except CoordError as exc:
        if failures == 0:
            log.warning("could not delete %s (retrying in the background): %s", key, exc)
        delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(failures, 10))
        retry = functools.partial(withdraw, store, key, lease, failures + 1)
        store.clock.timers("ticket-release").call_at(store.clock.now() + delay, retry)
