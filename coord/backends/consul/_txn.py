"""``Store.transaction()`` (and every write) as one Consul transaction, ``PUT /v1/txn``.

- Conditions go first, so each is checked against the state before the
  transaction: ``check-not-exists`` for "absent", ``check-index`` for a revision.
- A put bound to a session (a lease's, or a ttl key's own) is a ``lock``: it
  fails if that session is gone (LeaseExpired) or another holds the key. A
  plain put is a ``set`` followed by ``check-session`` with no session, which
  fails while some session holds the key (a plain ``set`` would keep that
  lock, and the key would go with that session). Either failure makes the
  Store read the key and send again with ``check-index`` + ``unlock`` of the
  other session first: the key changes hands atomically, keeping ``created``.
- Every put carries the transaction's nonce in ``Flags`` (so a rewrite of the
  same value still changes the revision, and a retry after a lost reply
  recognises its own write), and every put and delete of a key also locks a
  log record under the Store's log session (``_layout``), which feeds the
  watches' history.
- Reads are ``get-tree`` (``get`` fails on an absent key and rolls everything
  back): a get filters the exact key out of it. Consul returns the results of
  all operations in one flat list, so a marker key, set and deleted in the
  same transaction, ends each read's results when more operations follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..._errors import CoordError, LeaseExpired
from ..._store import check_revision, labelled
from ..._txn import Op
from ..._types import KVPair
from ._layout import Layout, encode, pair, record_value

__all__ = ["Plan", "Problem"]

Role = Literal["cond", "steal", "unlock", "write", "plain", "log", "read", "mark", "none"]
_INDEX = re.compile(r"current modify index (\d+)")


@dataclass(frozen=True)
class Problem:
    """Why a transaction was rolled back, for the Store to act on."""

    kind: Literal["condition", "held", "lease", "log", "stale"]
    op: int  # the coord op it concerns (-1: none)
    error: CoordError | None = None


@dataclass
class Plan:
    """One coord transaction as Consul operations, and how to read Consul's answer.

    ``sessions`` gives each op's session (a put's lease or ttl session, else
    None); ``steal`` the keys to take from another session first: key ->
    (its ModifyIndex, that session).
    """

    ops: list[Op]
    sessions: list[str | None]
    layout: Layout
    nonce: int
    log_session: str
    steal: dict[str, tuple[int, str]] = field(default_factory=dict)
    _shape: list[tuple[Role, int, str]] = field(default_factory=list)
    _verbs: list[str] = field(default_factory=list)

    def body(self) -> list[dict[str, Any]]:
        """The JSON body of ``PUT /v1/txn`` (and, kept, how to read its answer)."""
        self._shape = []
        out: list[dict[str, Any]] = []

        def add(role: Role, n: int, verb: str, key: str, **fields: Any) -> None:
            out.append({"KV": {"Verb": verb, "Key": key, **fields}})
            self._shape.append((role, n, key))

        for n, op in enumerate(self.ops):
            if op.conditional:
                data = self.layout.data(op.key)
                if op.expect is None:
                    add("cond", n, "check-not-exists", data)
                else:
                    add("cond", n, "check-index", data, Index=op.expect)
        marks = 0
        # Without writes every read sees one state: their results' union answers each (no markers, and
        # Consul serves the transaction as a read).
        reads_only = not any(op.writes for op in self.ops)
        for n, op in enumerate(self.ops):
            data = self.layout.data(op.key)
            last = n == len(self.ops) - 1 or reads_only
            if op.kind == "put":
                value = encode(op.value)
                taken = self.steal.get(data)
                if taken is not None:
                    add("steal", n, "check-index", data, Index=taken[0])
                    add("unlock" if self.sessions[n] else "write", n, "unlock", data, Value=value, Flags=self.nonce,
                        Session=taken[1])  # fmt: skip
                if self.sessions[n]:
                    add("write", n, "lock", data, Value=value, Flags=self.nonce, Session=self.sessions[n])
                elif taken is None:
                    add("write", n, "set", data, Value=value, Flags=self.nonce)
                    add("plain", n, "check-session", data, Session="")
                self._log(add, n, op, "put")
            elif op.kind == "delete":
                if not op.conditional:  # whether it existed: a conditional delete's key did
                    add("read", n, "get-tree", data)
                    add("mark", n, "set", self.layout.mark(self.nonce, marks))
                    marks += 1
                add("none", n, "delete", data)
                self._log(add, n, op, "delete")
            elif op.kind in ("get", "list"):
                add("read", n, "get-tree", data if op.kind == "get" else self.layout.tree(op.key))
                if not last:
                    add("mark", n, "set", self.layout.mark(self.nonce, marks))
                    marks += 1
        if marks:
            add("none", -1, "delete-tree", self.layout.marks(self.nonce))
        self._verbs = [item["KV"]["Verb"] for item in out]
        return out

    def _log(self, add: Any, n: int, op: Op, kind: str) -> None:
        record = record_value(kind, n, op.value if kind == "put" else b"")
        key = self.layout.record_key(op.key, self.nonce, n)
        add("log", n, "lock", key, Value=encode(record), Session=self.log_session)

    # -- a committed transaction ------------------------------------------------------------

    def results(self, answer: list[dict[str, Any]]) -> list[object]:
        """The results, in op order, of the transaction Consul committed (``Results``)."""
        results: list[object] = [None] * len(self.ops)
        reads: dict[int, list[dict[str, Any]]] = {}
        position = 0
        union: list[dict[str, Any]] | None = None
        for s, (role, n, _) in enumerate(self._shape):
            verb = self._verbs[s]
            if role == "read" and not any(op.writes for op in self.ops):
                union = union if union is not None else [result["KV"] for result in answer[position:]]
                reads[n] = union
                continue
            if role == "read":
                ends = self._shape[s + 1][2] if s + 1 < len(self._shape) and self._shape[s + 1][0] == "mark" else None
                found = []
                while position < len(answer) and answer[position]["KV"]["Key"] != ends:
                    found.append(answer[position]["KV"])
                    position += 1
                reads[n] = found
                continue
            if verb in ("check-not-exists", "delete", "delete-tree", "delete-cas"):
                continue
            entry = answer[position]["KV"]
            position += 1
            if role in ("write", "unlock") and self.ops[n].kind == "put":
                results[n] = put_result(self.ops[n], entry)
        for n, op in enumerate(self.ops):
            if op.kind == "delete":
                data = self.layout.data(op.key)
                results[n] = op.conditional or any(e["Key"] == data for e in reads.get(n, []))
            elif op.kind == "get":
                data = self.layout.data(op.key)
                results[n] = next((pair(op.key, e) for e in reads.get(n, []) if e["Key"] == data), None)
            elif op.kind == "list":
                tree = self.layout.tree(op.key)
                listed = {e["Key"]: e for e in reads.get(n, []) if e["Key"].startswith(tree)}
                results[n] = [pair(self.layout.key_of(key), e) for key, e in listed.items()]
        return results

    # -- a rolled-back transaction --------------------------------------------------------------

    def problem(self, errors: list[dict[str, Any]]) -> Problem:
        """What the first error that matters says: a user's condition first, then a lease, then the rest."""
        found: list[tuple[int, Problem]] = []
        for error in errors:
            s, what = int(error.get("OpIndex", 0)), str(error.get("What", ""))
            if s >= len(self._shape):
                continue
            role, n, _ = self._shape[s]
            op = self.ops[n] if n >= 0 else None
            if role == "cond" and op is not None:
                found.append((0, Problem("condition", n, _condition_error(op, what))))
            elif role == "write" and "invalid session" in what and op is not None:
                error_ = LeaseExpired(f"the session of lease {self.sessions[n]} is gone: {what}")
                found.append((1, Problem("lease", n, error_)))
            elif (role in ("write", "plain") and "held" in what) or role == "plain":
                found.append((2, Problem("held", n)))
            elif role == "log":
                found.append((3, Problem("log", n)))
            else:
                found.append((4, Problem("stale", n)))
        if not found:
            return Problem("stale", -1, CoordError(f"Consul rolled the transaction back: {errors}"))
        return min(found, key=lambda item: item[0])[1]

    def raise_condition(self, problem: Problem) -> None:
        assert problem.error is not None
        with labelled(self.ops[problem.op].key):
            raise problem.error

    # -- a lost reply ---------------------------------------------------------------------------

    def committed(self, current: dict[str, dict[str, Any] | None]) -> bool:
        """Whether ``current`` (each written key's entry now) shows this transaction's writes.

        Every key it last put holds its nonce in Flags and its value; every
        key it last deleted is gone.
        """
        last = {op.key: op for op in self.ops if op.writes}
        for key, op in last.items():
            entry = current.get(self.layout.data(key))
            if op.kind == "delete":
                if entry is not None:
                    return False
            elif entry is None or int(entry.get("Flags", 0)) != self.nonce:
                return False
        return bool(last)


def _condition_error(op: Op, what: str) -> CoordError:
    """The coord error of a failed condition, from Consul's message (its format: state/kvs.go)."""
    try:
        if "exists" in what and "doesn't" not in what:
            check_revision(0, None)
        elif "doesn't exist" in what:
            check_revision(None, op.expect)
        else:
            match = _INDEX.search(what)
            check_revision(int(match.group(1)) if match else -1, op.expect)
    except CoordError as exc:
        return exc
    return CoordError(f"Consul refused a condition: {what}")


def put_result(op: Op, entry: dict[str, Any]) -> KVPair:
    return KVPair(op.key, op.value, int(entry["ModifyIndex"]), int(entry["CreateIndex"]), pair(op.key, entry).lease)
