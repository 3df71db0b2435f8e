"""``Store.transaction()`` on etcd: one Txn, whatever the operations.

- The compares are the conditions, checked by etcd against the state before
  the Txn: ``mod_revision == expected``, or ``create_revision == 0`` for
  "absent".
- The success branch is the operations in order. A range in a Txn sees the
  Txn's own earlier puts and deletes (etcd 3.4 reads through its write
  buffer), so each read comes back as the contract wants it.
- etcd refuses a Txn that writes one key twice ("duplicate key"). Such a
  transaction sends each key's last write only, after ranges that read the
  state before it, and the results are computed here from that state and
  the writes in order. The store ends as the contract says; what differs is
  that the key gets one watch event, not one per write, and a key deleted
  and put again keeps its ``created``.
- The failure branch reads the conditioned keys, so the error says which key
  differs and how in the same round trip. A retried attempt also reads the
  keys it writes: if each put key holds the value and lease written, all at
  one revision, and each deleted key is gone, the attempt whose reply was
  lost committed; its results are then computed, as above, from the state
  just before that revision (one more round trip, on this rare path).
- Every write of one Txn gets the same revision, so keys created together
  share ``created``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from pyetcd import etcdrpc

from ..._store import check_revision, labelled
from ..._txn import Op
from ..._types import KVPair
from ._boundary import int64, key_range, pair, text

__all__ = ["EtcdTxn"]

_Range = tuple[str, bool]  # a key, and whether it means every key under it


class EtcdTxn:
    """One transaction's Txn request, and what etcd's answer means.

    ``leases`` gives, for each op, the etcd lease its put binds to (0 for none).
    """

    def __init__(self, ops: list[Op], leases: list[int]) -> None:
        self.ops = ops
        self.leases = leases
        self._compare = [_compare(op) for op in ops if op.conditional]
        last_write = {op.key: n for n, op in enumerate(ops) if op.writes}
        # Keys written twice make etcd refuse the Txn: then only each key's last write goes.
        self._once = len(last_write) == sum(op.writes for op in ops)
        if self._once:
            self._success = [_request(op, lease) for op, lease in zip(ops, leases, strict=True) if op.kind != "check"]
        else:
            writes = [_request(ops[n], leases[n]) for n in sorted(last_write.values())]
            self._success = self._reads_before(0) + writes
        self._read_back: list[Any] = []

    def request(self, retried: bool) -> Any:
        """The Txn; its failure branch reads the conditioned keys, and on a retry the written ones too."""
        keys = dict.fromkeys(op.key for op in self.ops if op.conditional or (retried and op.writes))
        self._read_back = [_range(key) for key in keys]
        return etcdrpc.TxnRequest(compare=self._compare, success=self._success, failure=self._read_back)

    def results(self, response: Any) -> list[object]:
        """The results of a Txn that succeeded, in op order."""
        revision = response.header.revision
        if not self._once:
            return self.computed(revision, self._parse(response), exact=True)
        answers = iter(response.responses)
        results: list[object] = []
        for op, lease in zip(self.ops, self.leases, strict=True):
            if op.kind == "check":
                results.append(None)
                continue
            answer = next(answers)
            if op.kind == "put":
                put = answer.response_put
                created = put.prev_kv.create_revision if put.HasField("prev_kv") else revision
                results.append(KVPair(op.key, op.value, revision, created, lease or None))
            elif op.kind == "delete":
                results.append(answer.response_delete_range.deleted > 0)
            elif op.kind == "get":
                kvs = answer.response_range.kvs
                results.append(pair(kvs[0]) if kvs else None)
            else:
                results.append([pair(kv) for kv in answer.response_range.kvs])
        return results

    # -- a failed Txn ------------------------------------------------------------------

    def found(self, response: Any) -> dict[str, KVPair | None]:
        """The keys a failed Txn read in its failure branch, as they are."""
        state: dict[str, KVPair | None] = {}
        for answer, request in zip(response.responses, self._read_back, strict=True):
            kvs = answer.response_range.kvs
            state[text(request.request_range.key)] = pair(kvs[0]) if kvs else None
        return state

    def raise_conflict(self, state: dict[str, KVPair | None]) -> NoReturn:
        """Raise the error of the first condition that ``state`` fails, labelled with its key."""
        for op in self.ops:
            if op.conditional:
                with labelled(op.key):
                    found = state[op.key]
                    check_revision(found.revision if found else None, op.expect)
        raise AssertionError("etcd's compare failed on keys in the state it expected")

    def recovered(self, state: dict[str, KVPair | None], read_at: Any) -> list[object] | None:
        """The results of an earlier attempt that committed though its reply was lost; None if it did not.

        ``state`` is what a retry's failure branch read; ``read_at`` is
        ``Boundary.read_at``, for the reads' state just before the commit.
        """
        revision = self._committed(state)
        if revision is None:
            return None
        if any(op.kind in ("get", "list") for op in self.ops):
            response, exact = read_at(self.reads_before, revision - 1 if revision else 0)
            return self.computed(revision, self._parse(response), exact=exact)
        # Nothing to read: a put key's create_revision tells whether the commit created it.
        before: dict[_Range, list[KVPair]] = {}
        for op in self.ops:
            found = state[op.key] if op.kind == "put" else None
            before[op.key, False] = [found] if found is not None and found.created != revision else []
        return self.computed(revision, before, exact=False)

    def _committed(self, state: dict[str, KVPair | None]) -> int | None:
        """Whether an earlier attempt committed, judging by ``state``: its revision, or None if it did not.

        Each key's last put must hold the value and lease written, all at one
        revision newer than every condition's, and each key last deleted must
        be gone. A Txn that only deletes is taken as committed when a
        conditional delete's key is gone (as ``atomic_delete`` always did);
        its revision is unknown: 0.
        """
        last = {op.key: (op, lease) for op, lease in zip(self.ops, self.leases, strict=True) if op.writes}
        revisions = set()
        for key, (op, lease) in last.items():
            found = state[key]
            if op.kind == "delete":
                if found is not None:
                    return None
            elif found is None or found.value != op.value or (found.lease or 0) != lease:
                return None
            else:
                revisions.add(found.revision)
        if len(revisions) > 1:
            return None
        if not revisions:
            return 0 if any(op.kind == "delete" and op.conditional for op in self.ops) else None
        revision = revisions.pop()
        if any(op.expect >= revision for op in self.ops if op.conditional and op.expect is not None):
            return None
        return revision

    # -- results computed from the state before the Txn ----------------------------------

    def reads_before(self, revision: int) -> Any:
        """A read-only Txn of what ``computed`` needs, at ``revision`` (0: the current state)."""
        return etcdrpc.TxnRequest(success=self._reads_before(revision))

    def computed(self, revision: int, before: dict[_Range, list[KVPair]], *, exact: bool) -> list[object]:
        """The results of this Txn committed at ``revision``, from ``before``: what the ranges it needs held.

        ``exact`` says ``before`` is the state just before the commit; if not
        (etcd compacted it away, or the revision is unknown), it is a later
        state, which the reads then show, and every delete says it deleted.
        """
        overlay: dict[str, KVPair | None] = {}

        def current(key: str) -> KVPair | None:
            return overlay[key] if key in overlay else next(iter(before[key, False]), None)

        results: list[object] = []
        for op, lease in zip(self.ops, self.leases, strict=True):
            if op.kind == "put":
                # etcd receives one put per key, so a key that existed keeps its create_revision.
                existed = next(iter(before[op.key, False]), None)
                created = existed.created if existed is not None else revision
                overlay[op.key] = KVPair(op.key, op.value, revision, created, lease or None)
                results.append(overlay[op.key])
            elif op.kind == "delete":
                results.append(current(op.key) is not None or not exact)
                overlay[op.key] = None
            elif op.kind == "get":
                results.append(current(op.key))
            elif op.kind == "list":
                listed: dict[str, KVPair | None] = {kv.key: kv for kv in before[op.key, True]}
                start, end = key_range(op.key, True)
                listed.update((key, kv) for key, kv in overlay.items() if _within(key, start, end))
                results.append([kv for kv in listed.values() if kv is not None])
            else:
                results.append(None)
        return results

    def _parse(self, response: Any) -> dict[_Range, list[KVPair]]:
        """The answers to ``_reads_before`` (the first responses of ``response``), by range."""
        answers = iter(response.responses)
        return {read: [pair(kv) for kv in next(answers).response_range.kvs] for read in self._needed()}

    def _needed(self) -> list[_Range]:
        """What ``computed`` reads: every written key, and every range the Txn reads."""
        needed = dict.fromkeys((op.key, False) for op in self.ops if op.writes or op.kind == "get")
        needed.update(dict.fromkeys((op.key, True) for op in self.ops if op.kind == "list"))
        return list(needed)

    def _reads_before(self, revision: int) -> list[Any]:
        return [_range(key, tree=tree, revision=revision) for key, tree in self._needed()]


def _compare(op: Op) -> Any:
    if op.expect is None:
        return etcdrpc.Compare(
            key=op.key.encode(), target=etcdrpc.Compare.CREATE, result=etcdrpc.Compare.EQUAL, create_revision=0
        )
    return etcdrpc.Compare(
        key=op.key.encode(), target=etcdrpc.Compare.MOD, result=etcdrpc.Compare.EQUAL, mod_revision=int64(op.expect)
    )


def _request(op: Op, lease: int) -> Any:
    if op.kind == "put":
        # The previous pair gives ``created``; a create-only put has none.
        put = etcdrpc.PutRequest(key=op.key.encode(), value=op.value, lease=lease, prev_kv=op.expect is not None)
        return etcdrpc.RequestOp(request_put=put)
    if op.kind == "delete":
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=op.key.encode()))
    return _range(op.key, tree=op.kind == "list")


def _range(key: str, *, tree: bool = False, revision: int = 0) -> Any:
    start, end = key_range(key, tree)
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=start, range_end=end or b"", revision=revision))


def _within(key: str, start: bytes, end: bytes | None) -> bool:
    """Whether ``key`` falls in the etcd range [start, end) that ``key_range`` gave for a tree."""
    raw = key.encode()
    return start <= raw and (end == b"\0" or end is None or raw < end)
