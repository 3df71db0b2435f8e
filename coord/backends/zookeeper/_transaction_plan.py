"""Planning a transaction (no I/O): from what was read, the multi-op's operations and each operation's outcome.

The plan walks the transaction's operations in order, keeping each key as
the operations so far leave it (there, its version, its owner session, its
chunks, its guard), so that a key written twice, or deleted and written
again, gets the operations and versions its second write needs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient

from ..._keys import is_under
from ..._store import check_revision, labelled
from ..._txn import Op
from ._boundary import Op as Step
from ._layout import Blob, KeyPaths, Layout, Node, encode, entry, ttl_ms

Read = dict[str, "tuple[Node, Any] | None"]  # key -> its node and stat before the transaction, None if absent


@dataclass(eq=False)
class Txn:
    """A transaction across its attempts: its operations, its session, its nonce, what earlier attempts learnt."""

    ops: list[Op]
    client: KazooClient  # the session of its leases, or the Store's
    sid: int  # that session's id, 0 without leases
    nonce: int
    staged: dict[int, tuple[Blob, str]] = field(default_factory=dict)  # put index -> its chunks and their free record
    must_read: set[str] = field(default_factory=set)  # create-only keys found to exist
    markers: dict[str, list[Blob]] = field(default_factory=dict)  # chunk markers read where a header was wrong
    sent: Plan | None = None  # the plan whose multi-op was sent and not refused

    def to_read(self) -> list[str]:
        """The keys to read before planning: all that a write or condition names, but lone create-only puts."""
        named = Counter(op.key for op in self.ops if op.kind in ("put", "delete", "check"))
        lone = {op.key for op in self.ops if op.kind == "put" and op.expect is None and named[op.key] == 1}
        return sorted(set(named) - (lone - self.must_read))


@dataclass(eq=False)
class Plan:
    """A multi-op's operations, what each is for (role, key, transaction op), and what the transaction returns."""

    read: Read
    outcomes: list[Any]  # per op: put -> created (None: by this transaction), delete -> existed, else None
    steps: list[Step] = field(default_factory=list)
    roles: list[tuple[str, str, int]] = field(default_factory=list)
    stat_at: int | None = None  # a step whose result is a stat at the multi-op's zxid
    gets: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)  # key that existed -> its czxid
    shadows: dict[int, dict[str, int]] = field(default_factory=dict)  # read op -> key -> the op that left it (-1: none)

    @property
    def ops(self) -> list[Step]:
        return self.steps

    def add(self, step: Step, role: str, key: str, index: int) -> None:
        if self.stat_at is None and step[0] == "set":
            self.stat_at = len(self.steps)
        self.steps.append(step)
        self.roles.append((role, key, index))


@dataclass
class _Key:
    """A key as the transaction's operations so far leave it."""

    there: bool
    owner: int = 0  # ephemeralOwner: 0 for a persistent znode
    version: int = 0
    expired: bool = False
    blobs: list[Blob] = field(default_factory=list)  # the markers under its guard
    created: int | None = None  # its czxid; None once this transaction created it
    guard: bool = False
    touched: bool = False


def plan(txn: Txn, layout: Layout, read: Read) -> Plan:
    """The multi-op for ``txn`` given ``read``; raise the first failed condition, labelled with its key."""
    p = Plan(read, [None] * len(txn.ops))
    keys: dict[str, _Key] = {}
    proved: set[str] = set()
    for i, op in enumerate(txn.ops):  # conditions, against the store before the transaction
        if not op.conditional or op.key not in read:
            continue  # a lone create-only put is not read: its create is its condition
        got = read[op.key]
        with labelled(op.key):
            check_revision(None if got is None or got[0].expired(got[1]) else got[1].mzxid, op.expect)
        if op.key not in proved:
            proved.add(op.key)
            _condition(p, layout.paths(op.key), op.key, i, got)
    for i, op in enumerate(txn.ops):
        if op.kind in ("put", "delete"):
            state = keys.get(op.key) or keys.setdefault(op.key, _before(txn, op.key, read.get(op.key)))
            if op.kind == "put":
                _put(p, txn, layout.paths(op.key), i, op, state)
            else:
                _delete(p, layout.paths(op.key), i, op.key, state, first=op.key in read and op.key not in proved)
                proved.add(op.key)
        elif op.kind == "get":
            p.gets.append(op.key)
        elif op.kind == "list":
            p.lists.append(op.key)
    _shadow(p, txn.ops)
    return p


def _before(txn: Txn, key: str, got: tuple[Node, Any] | None) -> _Key:
    if got is None:
        return _Key(False)
    node, stat = got
    blobs = txn.markers.get(key, [node.blob] if node.blob else [])
    return _Key(True, stat.ephemeralOwner, stat.version, node.expired(stat), blobs, stat.czxid, guard=True)


def _condition(p: Plan, paths: KeyPaths, key: str, i: int, got: tuple[Node, Any] | None) -> None:
    """Fail the multi-op if the key moved since it was read: its version, or (absent) creating it."""
    if got is None:
        p.add(("create", paths.path, b""), "proof", key, i)
        p.add(("delete", paths.path), "proof", key, i)
    else:
        p.add(("check", paths.path, got[1].version), "check", key, i)


def _put(p: Plan, txn: Txn, paths: KeyPaths, i: int, op: Op, state: _Key) -> None:
    staged = txn.staged.get(i)
    lease = None if op.lease is None else op.lease.id
    ttl = 0 if op.ttl is None else ttl_ms(op.ttl)
    data = encode(b"" if staged else op.value, ttl, lease, txn.nonce, staged[0] if staged else None)
    owner = 0 if lease is None else txn.sid
    key = op.key
    if state.there and not state.expired and state.owner == owner:
        p.add(("set", paths.path, data, state.version), "write", key, i)
        state.version += 1
    else:  # created, or re-created: persistent <-> ephemeral, another session's, or an expired ttl key
        if state.there:
            if state.expired and not state.touched:
                p.add(entry(b"D", key), "log", key, i)
            p.add(("delete", paths.path, state.version), "write", key, i)
        p.add(("create", paths.path, data, lease is not None), "create", key, i)
        if not state.guard:
            p.add(("create", paths.guard, b""), "guard-create", key, i)
        p.add(("set", paths.guard, b""), "guard-set", key, i)  # its stat carries the zxid, which a create's lacks
        state.version, state.created, state.owner, state.guard = 0, None, owner, True
    p.outcomes[i] = state.created
    for blob in state.blobs:  # the old value's chunks go to a free record
        p.add(("delete", f"{paths.guard}/{blob.name}"), "marker", key, i)
        p.add(("free", blob.name), "free", key, i)
    state.blobs = []
    if staged:  # the new value owns its staged chunks
        p.add(("create", f"{paths.guard}/{staged[0].name}", b""), "link", key, i)
        p.add(("delete", staged[1]), "record", key, i)
        state.blobs = [staged[0]]
    p.add(entry(b"P", key, data), "log", key, i)
    state.there, state.expired, state.touched = True, False, True


def _delete(p: Plan, paths: KeyPaths, i: int, key: str, state: _Key, first: bool) -> None:
    if not state.there:
        if first and not state.touched:  # prove it absent when the multi-op runs, not just when read
            _condition(p, paths, key, i, None)
        p.outcomes[i] = False
        return
    p.add(("delete", paths.path, state.version), "write", key, i)
    for blob in state.blobs:
        p.add(("delete", f"{paths.guard}/{blob.name}"), "marker", key, i)
        p.add(("free", blob.name), "free", key, i)
    p.add(("delete", paths.guard), "guard-delete", key, i)
    p.add(entry(b"D", key), "log", key, i)
    p.outcomes[i] = not state.expired  # an expired ttl key was already gone for every read
    if not state.touched and state.created is not None:
        p.deleted[key] = state.created
    state.there, state.guard, state.blobs, state.touched = False, False, [], True


def _shadow(p: Plan, ops: list[Op]) -> None:
    """For each read, the keys a later write of the transaction changes, and which earlier op (if any) left them."""
    writes: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        if op.kind in ("put", "delete"):
            writes.setdefault(op.key, []).append(i)
    for i, op in enumerate(ops):
        if op.kind not in ("get", "list"):
            continue
        shadow = {}
        for key, at in writes.items():
            if at[-1] > i and (key == op.key if op.kind == "get" else is_under(key, op.key)):
                shadow[key] = max((j for j in at if j < i), default=-1)
        if shadow:
            p.shadows[i] = shadow
