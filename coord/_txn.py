"""Transactions: several conditional writes applied all or none, and reads that see them, in one request.

::

    txn = store.transaction()
    txn.put("queue/me", b"", previous=None, lease=session)   # create-only
    txn.delete("queue/old", previous=old)                   # only if still at old.revision
    txn.list("queue")                                        # sees both writes
    mine, deleted, queue = txn.commit()

Every condition (a ``check``, or the ``previous`` of a ``put`` or
``delete``) is evaluated against the store as it was before the
transaction; if one fails, nothing is written and ``commit`` raises its
error (``KeyExists``, ``KeyModified`` or ``KeyNotFound``, with its key).
Otherwise the writes apply atomically, in order, and each read sees every
write before it in the transaction. Backends give it one round trip where
they can (see docs/backends.md for what each does, and where reads are
atomic with the writes or run just after them).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._errors import NotSupported
from ._keys import check_ttl, check_value
from ._types import KVPair

if TYPE_CHECKING:
    from ._lease import Lease

__all__ = ["ANY", "Op", "Transaction", "single_key"]


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``previous=ANY``: write whatever the key's state.
ANY: Any = _Any()

OpKind = Literal["check", "put", "delete", "get", "list"]


@dataclass(frozen=True)
class Op:
    """One operation of a transaction, as a backend receives it: keys are full (prefixed) keys.

    ``expect`` is the revision the key must be at, ``None`` for "absent"
    and ``ANY`` for no condition. A put binds the key to ``ttl`` or
    ``lease`` (at most one).
    """

    kind: OpKind
    key: str
    value: bytes = b""
    expect: Any = ANY
    ttl: float | None = None
    lease: Lease | None = None

    @property
    def conditional(self) -> bool:
        return self.expect is not ANY

    @property
    def writes(self) -> bool:
        return self.kind in ("put", "delete")


class Transaction:
    """Operations collected by ``Store.transaction()`` and run by ``commit()``; see the module docstring.

    Results, in the order the operations were added: ``put`` gives the
    written ``KVPair``, ``delete`` whether the key existed, ``get`` the
    ``KVPair`` or ``None``, ``list`` the pairs strictly under the prefix
    (sorted by key), ``check`` ``None``. A transaction is committed once.
    """

    def __init__(self, run: Callable[[list[Op], list[str]], builtins.list[Any]], normalize: Callable[..., str]) -> None:
        self._run = run
        self._normalize = normalize
        self._ops: list[Op] = []
        self._labels: list[str] = []  # the keys as the caller gave them, for errors
        self._committed = False

    def check(self, key: str, previous: KVPair | None) -> Transaction:
        """A condition only: ``key`` is at ``previous.revision`` (absent, if ``previous`` is None)."""
        return self._add(Op("check", self._key(key), expect=_expect(previous, allow_any=False)), key)

    def put(
        self,
        key: str,
        value: bytes,
        *,
        previous: KVPair | None = ANY,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> Transaction:
        """Write ``value``; with ``previous`` only if the key is still at its revision (``None``: create only)."""
        check_value(value)
        if ttl is not None:
            ttl = check_ttl(ttl)
            if lease is not None:
                raise ValueError("give a key a ttl or a lease, not both")
        return self._add(Op("put", self._key(key), value, _expect(previous, allow_any=True), ttl, lease), key)

    def delete(self, key: str, *, previous: KVPair = ANY) -> Transaction:
        """Delete the key (nothing if absent); with ``previous`` only if it is still at its revision."""
        return self._add(Op("delete", self._key(key), expect=_expect(previous, allow_any=True, allow_none=False)), key)

    def get(self, key: str) -> Transaction:
        return self._add(Op("get", self._key(key)), key)

    def list(self, prefix: str) -> Transaction:
        return self._add(Op("list", self._key(prefix, root=True)), prefix)

    def commit(self) -> builtins.list[Any]:
        if self._committed:
            raise RuntimeError("a transaction is committed once")
        self._committed = True
        return self._run(self._ops, self._labels)

    @property
    def ops(self) -> Sequence[Op]:
        return tuple(self._ops)

    def _key(self, key: object, *, root: bool = False) -> str:
        return self._normalize(key, root=root)

    def _add(self, op: Op, label: str) -> Transaction:
        if self._committed:
            raise RuntimeError("the transaction was committed already")
        self._ops.append(op)
        self._labels.append(label)
        return self


def single_key(ops: Sequence[Op]) -> None:
    """Refuse, with ``NotSupported``, what a store without multi-key transactions cannot do.

    That is several writes, or a ``check`` of a key the transaction does not
    write (``Store.multi_key_transactions``): one conditional write and any
    reads work on every backend. Checked before anything else, so such a
    transaction is refused the same way whatever else is wrong with it.
    """
    written = {op.key for op in ops if op.writes}
    if sum(op.writes for op in ops) > 1:
        raise NotSupported("this store writes one key per transaction")
    if any(op.kind == "check" and op.key not in written for op in ops):
        raise NotSupported("this store checks only the key a transaction writes")


def _expect(previous: object, *, allow_any: bool, allow_none: bool = True) -> Any:
    if previous is ANY and allow_any:
        return ANY
    if previous is None and allow_none:
        return None
    if not isinstance(previous, KVPair):
        raise TypeError(f"previous must be a KVPair{' or None' if allow_none else ''}, not {type(previous).__name__}")
    return previous.revision
