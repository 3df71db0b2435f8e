"""The read statements: a key, a prefix, a watch's current state, each hiding what has expired.

A read is one statement (SQLite runs it as one read transaction, so it is
consistent on its own). A key whose ttl or lease deadline has passed is
hidden at once, before any process has reaped it; the reap that follows
logs its delete.

Ranges: keys strictly under ``p`` are those with ``'p/' < key < 'p0'`` ("0"
sorts right after "/"); the root has no upper bound, so that no key (not
even one starting with U+10FFFF) is left out.
"""

from __future__ import annotations

import sqlite3

from ..._types import KVPair

__all__ = ["current", "exists", "get", "keys_under", "listing", "start"]

_PAIR = "SELECT kv.key, kv.value, kv.revision, kv.created, kv.lease FROM kv LEFT JOIN leases ON leases.id = kv.lease"
_LIVE = "(kv.expires IS NULL OR kv.expires > ?) AND (kv.lease IS NULL OR leases.expires > ?)"
_GET = f"{_PAIR} WHERE kv.key = ? AND {_LIVE}"
_EXISTS = f"SELECT 1 FROM kv LEFT JOIN leases ON leases.id = kv.lease WHERE kv.key = ? AND {_LIVE}"
_UNDER = f"{_PAIR} WHERE kv.key > ? AND kv.key < ? AND {_LIVE}"
_ALL = f"{_PAIR} WHERE {_LIVE}"


def get(db: sqlite3.Connection, key: str, now: float) -> KVPair | None:
    row = db.execute(_GET, (key, now, now)).fetchone()
    return None if row is None else KVPair(row[0], row[1], row[2], row[3], row[4])


def exists(db: sqlite3.Connection, key: str, now: float) -> bool:
    return db.execute(_EXISTS, (key, now, now)).fetchone() is not None


def listing(db: sqlite3.Connection, prefix: str, now: float) -> list[KVPair]:
    """Every live pair strictly under ``prefix`` (any order)."""
    rows = db.execute(_UNDER, (f"{prefix}/", f"{prefix}0", now, now)) if prefix else db.execute(_ALL, (now, now))
    return [KVPair(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def current(db: sqlite3.Connection, key: str, tree: bool, now: float) -> list[tuple[str, bytes, int]]:
    """``(key, value, revision)`` of what a watch of ``key`` (or of the tree under it) sees now."""
    if tree:
        return [(pair.key, pair.value, pair.revision) for pair in listing(db, key, now)]
    pair = get(db, key, now)
    return [] if pair is None else [(pair.key, pair.value, pair.revision)]


def keys_under(db: sqlite3.Connection, prefix: str) -> list[str]:
    """Every key strictly under ``prefix``, expired or not, in key order (what delete_tree deletes)."""
    if prefix:
        return [
            row[0]
            for row in db.execute(
                "SELECT key FROM kv WHERE key > ? AND key < ? ORDER BY key", (f"{prefix}/", f"{prefix}0")
            )
        ]
    return [row[0] for row in db.execute("SELECT key FROM kv ORDER BY key")]


_START_KEY = (
    "SELECT state.revision, state.compacted, kv.key, kv.value, kv.revision FROM state LEFT JOIN kv ON kv.key = ?"
    " AND (kv.expires IS NULL OR kv.expires > ?)"
    " AND (kv.lease IS NULL OR EXISTS (SELECT 1 FROM leases WHERE leases.id = kv.lease AND leases.expires > ?))"
)


def start(db: sqlite3.Connection, key: str, now: float) -> tuple[int, int, list[tuple[str, bytes, int]]]:
    """Where a watch of one key starts: ``(revision, compacted, [(key, value, revision)] or [])``, in one statement."""
    revision, compacted, name, value, rev = db.execute(_START_KEY, (key, now, now)).fetchone()
    return revision, compacted, [] if name is None else [(name, value, rev)]
