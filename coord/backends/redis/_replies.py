"""How the replies and errors of the scripts (``_scripts``) read in Python, and a transaction's arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._errors import CoordError, LeaseExpired
from ..._store import check_revision
from ..._txn import ANY, Op
from ..._types import KVPair


def _conflict(rest: str) -> CoordError:
    """The error of a conditional write that failed: "<actual revision or -> <expected revision or new>"."""
    actual, expected = rest.split()[:2]  # Redis appends where in the script the error was raised
    try:
        check_revision(None if actual == "-" else int(actual), None if expected == "new" else int(expected))
    except CoordError as exc:
        return exc
    return CoordError(f"redis reported a conflict that is none: {rest}")


ERRORS: dict[str, Callable[[str], CoordError]] = {
    "REVISION": _conflict,
    "LEASE": lambda _: LeaseExpired("the lease has expired"),
}


def failed_op(error: CoordError) -> int | None:
    """The index of the transaction's operation whose condition failed (its number follows the error's fields)."""
    cause = str(error.__cause__ or "").split()
    at = {"REVISION": 3, "LEASE": 1}.get(cause[0] if cause else "")
    if at is None or len(cause) <= at or not cause[at].isdigit() or cause[at] == "0":
        return None
    return int(cause[at]) - 1


_KINDS = {"put": "p", "delete": "d", "check": "c", "get": "g", "list": "l"}


def _expected(expect: object) -> str:
    return "" if expect is ANY else "new" if expect is None else str(expect)


def txn_args(ops: list[Op]) -> tuple[list[str | bytes], bool]:
    """The arguments of the ``txn`` script for ``ops``, and whether any of them writes."""
    args: list[str | bytes] = []
    writes = False
    for op in ops:
        kind = op.kind
        args += (_KINDS[kind], op.key)
        if kind == "put":
            ttl = "" if op.ttl is None else ms(op.ttl)
            args += (op.value, _expected(op.expect), ttl, "" if op.lease is None else str(op.lease.id))
            writes = True
        elif kind == "delete":
            args.append(_expected(op.expect))
            writes = True
        elif kind == "check":
            args.append(_expected(op.expect))
    return args, writes


def txn_results(ops: list[Op], reply: list[Any]) -> list[object]:
    results: list[object] = []
    for op, result in zip(ops, reply, strict=True):
        kind = op.kind
        if kind == "put":
            results.append(pair(op.key, op.value, result))
        elif kind == "delete":
            results.append(result == b"1")
        elif kind == "get":
            results.append(record(op.key.encode(), result) if result else None)
        elif kind == "list":
            results.append([record(result[i], result[i + 1]) for i in range(0, len(result), 2)])
        else:
            results.append(None)
    return results


def ms(seconds: float) -> str:
    return repr(seconds * 1000.0)


def pair(key: str, value: bytes, meta: bytes) -> KVPair:
    revision, created, lease = meta.split(b":", 2)
    return KVPair(key, value, int(revision), int(created), int(lease) if lease else None)


def record(key: bytes, record: bytes) -> KVPair:
    revision, created, lease, value = record.split(b":", 3)
    return KVPair(key.decode(), value, int(revision), int(created), int(lease) if lease else None)
