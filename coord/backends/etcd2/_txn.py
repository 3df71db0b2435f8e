"""``Store.transaction()`` on etcd's v2 API: one conditional write, and reads around it.

etcd v2 writes one key per request and has no multi-key transaction, so
the Store declares ``multi_key_transactions = False``: a transaction of
several writes, or with a ``check`` of a key it does not write, raises
``NotSupported`` before anything is sent. What remains works:

- The write is one conditional v2 request (``_keys``): the conditions on its
  key (its own ``previous``, and any ``check`` of that key) are checked by
  etcd against the state before it, atomically with the write. Conditions
  that contradict each other cannot all hold: the key is read, and the
  first that fails raises its error; nothing is written.
- The reads run in order around it: those before the write just before it,
  those after it just after it. They are not atomic with the write: they
  may see changes other clients made in between. A transaction of reads
  only reads several keys of one directory with one GET of the directory
  (a Store's ticket guard reads all its holders' keys so). (The recipes' transaction,
  a create-only ticket and a list of its queue, needs no more: the list runs
  after the ticket is written, so it sees it and every ticket before it.)
"""

from __future__ import annotations

from collections.abc import Callable

from ..._store import check_revision, labelled
from ..._txn import ANY, Op, single_key
from ..._types import KVPair

__all__ = ["run"]


def run(
    ops: list[Op],
    write: Callable[[Op, object], object],
    get: Callable[[str], KVPair | None],
    listing: Callable[[str], list[KVPair]],
    get_many: Callable[[list[str]], dict[str, KVPair | None]],
) -> list[object]:
    """The results of ``ops``; ``write(op, expect)`` runs the one write with every condition on its key."""
    single_key(ops)  # the Store checked it already; kept here so this module stands on its own
    expects = {op.expect for op in ops if op.conditional}
    if len(expects) > 1:
        _contradiction(ops, get)
    expect = expects.pop() if expects else ANY
    read_only = not any(op.writes for op in ops)
    got = get_many([op.key for op in ops if op.kind == "get"]) if read_only else {}
    results: list[object] = []
    for op in ops:
        if op.kind == "get":
            results.append(got[op.key] if op.key in got else get(op.key))
        elif op.kind == "list":
            results.append(listing(op.key))
        elif op.writes:
            with labelled(op.key):
                results.append(write(op, expect))
        else:
            results.append(None)
    return results


def _contradiction(ops: list[Op], get: Callable[[str], KVPair | None]) -> None:
    """Raise the error of the first condition the key's state fails (conditions that differ cannot all hold)."""
    pair = get(next(op.key for op in ops if op.conditional))
    for op in ops:
        if op.conditional:
            with labelled(op.key):
                check_revision(pair.revision if pair is not None else None, op.expect)
    raise AssertionError("conditions that differ all held")
