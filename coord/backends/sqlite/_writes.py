"""One write transaction: the state row read once, the changes logged, expired leases reaped, the state saved once.

Every write is one ``BEGIN IMMEDIATE`` transaction on one connection; a
``Write`` is what runs inside it. It reads the state row (revision, the
log's bounds, the earliest deadline), reaps expired leases and ttl keys if
that deadline has come, applies the caller's changes (each one bumps the
revision and appends a row to the change log), trims the log when it
exceeds its bounds, and writes the state row back once.

``next_expiry`` in the state row is a lower bound of every deadline in the
file: a write that sets an earlier deadline lowers it, a renewal (which
only moves a deadline later) leaves it, and a reap sets it exactly. So a
write checks one number, not two indexes, to know that nothing is due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..._errors import LeaseExpired
from ..._store import check_revision
from ..._types import KVPair
from ._files import probe

__all__ = ["NEVER", "Limits", "Write", "listening"]

#: ``next_expiry`` when nothing has a deadline.
NEVER = 1e300
#: What a change row costs besides its key and value, roughly (bytes), for the log's size bound.
_ROW_BYTES = 48
#: Free pages kept for reuse when the log is trimmed; beyond these the file shrinks (incremental vacuum).
_KEEP_FREE_PAGES = 1024

_STATE = "SELECT revision, compacted, logged, trimmed, next_expiry, listened FROM state"
_SAVE = (
    "UPDATE state SET revision = ?, compacted = ?, logged = ?, trimmed = ?, next_expiry = ?, listened = ?,"
    " clock = max(clock, ?)"
)
_LOG = "INSERT INTO changes VALUES (?, ?, ?, ?, ?)"
_UPSERT = (
    "INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
    " revision = excluded.revision, lease = excluded.lease, expires = excluded.expires RETURNING created"
)
_NEXT_EXPIRY = "SELECT min(e) FROM (SELECT min(expires) AS e FROM leases UNION ALL SELECT min(expires) FROM kv)"


def listening(marks: bytes, number: int) -> bool:
    """Whether bucket ``number`` is marked in the state row's ``listened`` bits."""
    return bool(marks[number >> 3] & (1 << (number & 7)))


@dataclass(frozen=True)
class Limits:
    """How much of the change log to keep: the last ``history`` changes, and at most ``history_bytes`` of them."""

    history: int
    history_bytes: int

    @property
    def slack(self) -> int:
        # Trim in steps, not on every write: the log may exceed its bounds by 1/16 (at most 1,000 rows).
        return max(1, min(1000, self.history // 16))

    @property
    def byte_slack(self) -> int:
        return max(1, min(1 << 20, self.history_bytes // 16))


class Write:
    """The inside of one write transaction (see the module docstring)."""

    __slots__ = (
        "_limits",
        "_me",
        "_owners",
        "_saved",
        "changed",
        "compacted",
        "db",
        "listened",
        "logged",
        "next_expiry",
        "now",
        "revision",
        "started",
        "trimmed",
    )  # fmt: skip

    def __init__(self, db: sqlite3.Connection, limits: Limits, now: float, owners: Path, me: str | None) -> None:
        self.db = db
        self.now = now
        self._limits = limits
        self._owners = owners
        self._me = me
        state = db.execute(_STATE).fetchone()
        self.revision, self.compacted, self.logged, self.trimmed, self.next_expiry, self.listened = state
        self._saved = (self.revision, self.next_expiry, self.listened)
        self.started: int = self.revision
        self.changed: list[str] = []
        if self.next_expiry <= now:
            self.reap_expired()

    # -- conditions -----------------------------------------------------------

    def check(self, key: str, expect: int | None) -> None:
        """Raise unless ``key`` is at revision ``expect`` (absent, for ``None``); see ``check_revision``."""
        row = self.db.execute("SELECT revision, lease FROM kv WHERE key = ?", (key,)).fetchone()
        if row is not None and expect is None and row[1] is not None and self._owner_dead(row[1]):
            row = self.db.execute("SELECT revision, lease FROM kv WHERE key = ?", (key,)).fetchone()
        check_revision(None if row is None else row[0], expect)

    def _owner_dead(self, lease_id: int) -> bool:
        """Whether the owner of ``lease_id`` is dead; if so, its leases are reaped now."""
        row = self.db.execute("SELECT owner FROM leases WHERE id = ?", (lease_id,)).fetchone()
        if row is None or row[0] is None or row[0] == self._me:
            return False
        return self.reap_owner_if_dead(row[0])

    # -- changes --------------------------------------------------------------

    def put(self, key: str, value: bytes, ttl: float | None, lease_id: int | None) -> KVPair:
        if (
            lease_id is not None
            and self.db.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone() is None
        ):
            raise LeaseExpired(f"lease {lease_id} has expired")
        expires = None if ttl is None else self.now + ttl
        revision = self._log("put", key, value)
        created = self.db.execute(_UPSERT, (key, value, revision, revision, lease_id, expires)).fetchone()[0]
        if expires is not None and expires < self.next_expiry:
            self.next_expiry = expires
        return KVPair(key, value, revision, created, lease_id)

    def remove(self, key: str) -> bool:
        """Delete ``key``; whether it existed."""
        if self.db.execute("DELETE FROM kv WHERE key = ? RETURNING 1", (key,)).fetchone() is None:
            return False
        self._log("delete", key, None)
        return True

    def remove_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.remove(key)

    def _log(self, kind: str, key: str, value: bytes | None) -> int:
        self.revision += 1
        self.db.execute(_LOG, (self.revision, kind, key, value, self.logged))
        self.logged += len(key) + (0 if value is None else len(value)) + _ROW_BYTES
        self.changed.append(key)
        return int(self.revision)

    # -- leases ---------------------------------------------------------------

    def grant(self, ttl: float, owner: str | None) -> int:
        expires = self.now + ttl
        row = self.db.execute(
            "INSERT INTO leases (ttl, expires, owner) VALUES (?, ?, ?) RETURNING id", (ttl, expires, owner)
        ).fetchone()
        self.next_expiry = min(self.next_expiry, expires)
        return int(row[0])

    def renew(self, lease_id: int, ttl: float) -> bool:
        """Move the lease's deadline to ``ttl`` from now; False if it is gone (expired leases were reaped first).

        Only the lease's owner renews it: a forked child holding its parent's
        Lease objects does not keep the parent's leases alive.
        """
        # A later deadline leaves next_expiry a lower bound: nothing to save.
        cursor = self.db.execute(
            "UPDATE leases SET expires = ? WHERE id = ? AND owner IS ?", (self.now + ttl, lease_id, self._me)
        )
        return cursor.rowcount == 1

    def revoke(self, lease_id: int) -> None:
        """End the lease and delete its keys, if this process owns it (see ``renew``)."""
        if self.db.execute("SELECT 1 FROM leases WHERE id = ? AND owner IS ?", (lease_id, self._me)).fetchone():
            self.drop_leases([lease_id])

    def drop_leases(self, ids: Iterable[int], keys: Iterable[str] = ()) -> None:
        """End leases and delete their keys (and ``keys``), each delete logged."""
        doomed = list(keys)
        for lease_id in ids:
            doomed += [
                row[0] for row in self.db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))
            ]
            self.db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        self.remove_all(dict.fromkeys(doomed))

    def reap_expired(self) -> None:
        """Drop every lease and ttl key whose deadline has come; set ``next_expiry`` exactly.

        An owner left with no lease may be a process that died unseen: its
        lock file goes if it is (the probe removes it), or the folder would
        fill with the files of crashed processes whose leases merely expired.
        """
        rows = self.db.execute("SELECT id, owner FROM leases WHERE expires <= ?", (self.now,)).fetchall()
        keys = [row[0] for row in self.db.execute("SELECT key FROM kv WHERE expires <= ? ORDER BY key", (self.now,))]
        self.drop_leases([row[0] for row in rows], keys)
        for owner in {row[1] for row in rows if row[1] is not None and row[1] != self._me}:
            if self.db.execute("SELECT 1 FROM leases WHERE owner = ?", (owner,)).fetchone() is None:
                with probe(self._owners, owner):
                    pass
        row = self.db.execute(_NEXT_EXPIRY).fetchone()
        self.next_expiry = NEVER if row[0] is None else float(row[0])

    def reap_owner_if_dead(self, owner: str) -> bool:
        """Drop the leases of ``owner`` if its process is gone (its lock file is free); whether it was."""
        with probe(self._owners, owner) as dead:
            if dead:
                ids = [row[0] for row in self.db.execute("SELECT id FROM leases WHERE owner = ?", (owner,))]
                self.drop_leases(ids)
        return dead

    def reap_all(self) -> None:
        """After a reboot: every lease and every ttl key is gone (their clock started again)."""
        ids = [row[0] for row in self.db.execute("SELECT id FROM leases")]
        keys = [row[0] for row in self.db.execute("SELECT key FROM kv WHERE expires IS NOT NULL ORDER BY key")]
        self.drop_leases(ids, keys)
        self.next_expiry = NEVER

    def listen(self, number: int) -> None:
        """Note that some process listens to wake-up bucket ``number`` from now on (writers will touch it)."""
        if not listening(self.listened, number):
            marks = bytearray(self.listened)
            marks[number >> 3] |= 1 << (number & 7)
            self.listened = bytes(marks)

    # -- the end --------------------------------------------------------------

    def finish(self) -> None:
        """Trim the log if it outgrew its bounds; save the state row if anything changed."""
        if (self.revision, self.next_expiry, self.listened) == self._saved:
            return
        limits = self._limits
        if (
            self.revision - self.compacted > limits.history + limits.slack
            or self.logged - self.trimmed > limits.history_bytes + limits.byte_slack
        ):
            self._trim()
        self.db.execute(
            _SAVE,
            (self.revision, self.compacted, self.logged, self.trimmed, self.next_expiry, self.listened, self.now),
        )

    def _trim(self) -> None:
        """Drop the oldest changes beyond both bounds, and give the space back past a reserve."""
        limits = self._limits
        row = self.db.execute(
            "SELECT revision, position FROM changes WHERE revision > ? AND position >= ? ORDER BY revision LIMIT 1",
            (max(self.compacted, self.revision - limits.history), self.logged - limits.history_bytes),
        ).fetchone()
        first, position = (self.revision + 1, self.logged) if row is None else row
        self.db.execute("DELETE FROM changes WHERE revision < ?", (first,))
        self.compacted, self.trimmed = first - 1, position
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        if free > _KEEP_FREE_PAGES:
            self.db.execute(f"PRAGMA incremental_vacuum({int(free) - _KEEP_FREE_PAGES})").fetchall()
