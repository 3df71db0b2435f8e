"""Test your own coordination code under faults: ``FaultyStore`` wraps any Store.

::

    clock = coord.ManualClock()
    store = FaultyStore(coord.connect("memory://", clock=clock))
    store.inject("lose_reply", op="atomic_put")   # applied, but the caller sees StoreUnavailable
    store.freeze(lease)                            # its keepalives stop, as in a frozen process
    clock.advance(lease.ttl)                       # ... and it expires, with no sleeping

Faults:

- ``"fail"``: the operation fails before it reaches the store;
- ``"lose_reply"``: the store applied the operation, but the reply is lost
  (the hard case for create-only and compare-and-swap retries);
- ``"delay"``: the operation takes ``delay`` seconds (on a ``ManualClock``
  the clock advances by that much while it runs);
- ``"slow_reply"``: the store applies the operation at once, and its reply
  takes ``delay`` seconds to arrive (a caller cancelled meanwhile must
  still clean up what the operation did);
- ``drop_watches()``: every open watch loses its connection and ends with
  ``StoreUnavailable``;
- ``freeze(lease)`` / ``thaw(lease)``: the lease's keepalives stop and start
  again (with no lease: every lease of this client, present and future);
  ``expire(lease)``: the store drops the lease now;
- ``crash()``: the client's process dies: every later operation fails and its
  leases are never renewed again, so the store expires them after their ttl.

Blocking calls (``Lock.acquire()``, ``Election.campaign()``, ``Barrier.wait()``)
wait on watches with timeouts. A ``Scheduler`` runs such calls on threads, one
at a time, and measures their timeouts on a ``ManualClock``: a call *parks*
when it waits on a FaultyStore's watch, and resumes only in
``Scheduler.settle()``, once an event is there or the clock has passed its
timeout. What runs, and in which order, then depends only on the test::

    scheduler = Scheduler(clock)
    waiting = scheduler.start(lambda: lock.acquire())   # parks: the lock is held
    holder.release()
    scheduler.settle()                                   # the waiter wakes and takes it
    assert waiting.result() is True

Faults reach the wrapped store through its backend methods, so they work on
every backend; with ``memory://`` and a ``ManualClock`` runs are fast and
reproducible.
"""

from ._faulty import Fault, FaultKind, FaultyStore
from ._scheduler import Killed, Scheduler, Stalled, Task

__all__ = ["Fault", "FaultKind", "FaultyStore", "Killed", "Scheduler", "Stalled", "Task"]
