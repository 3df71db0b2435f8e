"""What each backend guarantees, in a few lines each: ``coord doctor`` prints them.

Summarised from docs/backends.md and docs/recipes.md ("Failover time"), in
one place: change them with those pages.
"""

from __future__ import annotations

__all__ = ["GUARANTEES", "guarantees"]

GUARANTEES: dict[str, str] = {
    "memory": (
        "One process only: nothing survives it and no other process sees it. Reads are linearizable (one lock); "
        "expiry within about 1 ms of a deadline. For tests (with a ManualClock) and single-process programs."
    ),
    "sqlite": (
        "The processes of one host, through one file (WAL; not on a network file system). Reads are linearizable "
        "on that host; a killed writer leaves nothing half-written; a power loss may lose the last transactions "
        "(synchronous=NORMAL), never corrupt the file. Lease and ttl deadlines follow the host's wall clock: a "
        "clock step moves them. A dead owner's keys go within its ttl plus about 10 ms (the next poll of any "
        "process). Watch latency: about 6 ms (polling)."
    ),
    "etcd": (
        "Reads are linearizable; transactions are one Txn. Leases are whole seconds (at least 1.5 election "
        "timeouts) on the leader's monotonic clock: client clock skew does not matter. A dead holder's keys go "
        "within 0.5 s of its lease's expiry (the leader's sweep), sooner when a waiter watches them; a leader "
        "change renews every lease, so a failover during one can take about 2 ttl. Watches replay to the last "
        "compaction, then re-sync."
    ),
    "zookeeper": (
        "Reads are sequentially consistent, not linearizable (no sync(): a lagging follower can serve a stale "
        "read). A lease is a session (one per distinct ttl, millisecond granularity, at least minSessionTimeout): "
        "a lost session loses every lease of that ttl, and its keys go within a tickTime of its expiry. ttl keys "
        "expire at the server's write time + ttl. Watches read coord's change log (the last `history` writes)."
    ),
    "redis": (
        "Every operation is one Lua script: atomic, linearizable on the primary. Deadlines are in the server's "
        "time (TIME), so client clocks do not matter; a dead owner's keys go within ttl + 0.5 s while any client "
        "is active. With asynchronous replicas a failover can lose acknowledged writes; with AOF everysec a host "
        "crash can lose up to 1 s of them: the lock guarantees need the configuration docs/backends.md gives."
    ),
}


def guarantees(backend: str) -> str:
    return GUARANTEES.get(backend, f"coord has no notes on the {backend!r} backend: see its own documentation.")
