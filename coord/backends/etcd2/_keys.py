"""Writes and deletes of one key, each one conditional v2 request, and how each recognises its own lost answer.

- create-only: ``PUT ?prevExist=false``; 105 (node exists) is ``KeyExists``
  unless the key is a leftover of a dead lease (deleted, then created again)
  or, on a retry, holds this write's nonce (its earlier attempt landed).
- compare-and-swap: ``PUT ?prevIndex=r``; 101 (compare failed) is
  ``KeyModified`` (etcd's cause names the key's index), 100 ``KeyNotFound``;
  on a retry, a key holding this write's nonce is this write.
- put: ``PUT ?prevExist=true`` (an update keeps ``createdIndex``, which a
  plain v2 set would renew), then ``?prevExist=false`` if the key is absent.
- delete: ``DELETE``, ``?prevIndex=r`` for atomic_delete; a retry that finds
  the key gone takes it as its own delete.

A write that replaced a leftover of a dead lease (etcd's ``prevNode`` names
the lease) was a write to an absent key: a put deletes what it wrote and
creates the key afresh, so it gets a new ``created``; a compare-and-swap or
conditional delete of a leftover raises ``KeyNotFound``, as for a key gone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

from ..._errors import KeyModified, KeyNotFound
from ..._store import check_revision
from ..._types import KVPair
from ._boundary import COMPARE_FAILED, KEY_NOT_FOUND, NODE_EXISTS, Boundary, EtcdError, Transient
from ._layout import Layout, Stored, decode, encode, new_nonce, pair_of
from ._leases import delete_at, whole_seconds

__all__ = ["Keys"]

#: etcd's indexes are uint64: a revision outside 1..2**64-1 matches no key (and 0 would mean "no condition").
MAX_INDEX = 2**64 - 1
_CAUSE = re.compile(r"\[(\d+) != (\d+)\]")
_LEFTOVER_ATTEMPTS = 3


class Keys:
    """The one-key operations of a Store. ``alive(lease)`` says whether a lease lives (``_liveness``)."""

    def __init__(self, http: Boundary, layout: Layout, alive: Callable[[int], bool], quorum: bool) -> None:
        self._http = http
        self._layout = layout
        self._alive = alive
        self._read = {"quorum": "true"} if quorum else None

    # -- reads ---------------------------------------------------------------------------

    def read(self, key: str) -> Stored | None:
        """The key's file as etcd holds it, leftovers included; None if there is none. One request."""
        try:
            body, _index = self._http.request("GET", self._layout.path(key), self._read)
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return None
            raise
        node = body["node"]
        return None if node.get("dir") else decode(key, node)

    def tree(self, prefix: str) -> list[KVPair]:
        """Every key file under ``prefix``, leftovers included. One request."""
        try:
            body, _index = self._http.request(
                "GET", self._layout.dir(prefix), {"recursive": "true", **(self._read or {})}
            )
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return []
            raise
        found = ((self._layout.key(node["key"]), node) for node in self._layout.files(body["node"]))
        return [pair_of(key, node) for key, node in found if key is not None]

    def siblings(self, parent: str) -> list[KVPair]:
        """Every key directly in the directory ``parent`` (the keys ``parent/<name>``), leftovers included. One request."""
        try:
            body, _index = self._http.request("GET", self._layout.dir(parent), self._read)
        except EtcdError as exc:
            if exc.code == KEY_NOT_FOUND:
                return []
            raise
        nodes = body["node"].get("nodes") or () if body["node"].get("dir") else ()
        found = ((self._layout.key(node["key"]), node) for node in nodes if not node.get("dir"))
        return [pair_of(key, node) for key, node in found if key is not None]

    def leftover(self, node: dict[str, Any] | None, key: str) -> bool:
        """Whether ``node`` (a ``prevNode``) was bound to a lease that is gone."""
        if node is None or node.get("dir"):
            return False
        lease = pair_of(key, node).lease
        return lease is not None and not self._alive(lease)

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, value: bytes, ttl: float | None, lease: int | None) -> KVPair:
        path, nonce = self._layout.path(key), new_nonce()
        form = _form(value, nonce, ttl, lease)

        def attempt(_: bool) -> KVPair:
            for _attempt in range(_LEFTOVER_ATTEMPTS):
                try:
                    body, _index = self._http.request("PUT", path, {"prevExist": "true"}, form)
                except EtcdError as exc:
                    if exc.code != KEY_NOT_FOUND:
                        raise
                    try:
                        body, _index = self._http.request("PUT", path, {"prevExist": "false"}, form)
                    except EtcdError as again:
                        if again.code != NODE_EXISTS:
                            raise
                        continue  # created meanwhile: update it
                    return decode(key, body["node"]).pair
                written = decode(key, body["node"]).pair
                if self.leftover(body.get("prevNode"), key) and delete_at(self._http, path, written.revision):
                    continue  # it replaced a dead lease's leftover: create the key afresh, with its own created
                return written
            raise Transient("the key kept being written and deleted while it was put")

        return self._http.call(attempt)

    def create(self, key: str, value: bytes, ttl: float | None, lease: int | None) -> KVPair:
        path, nonce = self._layout.path(key), new_nonce()
        form = _form(value, nonce, ttl, lease)
        return self._http.call(lambda retried: self._create(key, path, form, nonce, retried))

    def _create(self, key: str, path: str, form: dict[str, str], nonce: str, retried: bool) -> KVPair:
        for _ in range(_LEFTOVER_ATTEMPTS):
            try:
                body, _index = self._http.request("PUT", path, {"prevExist": "false"}, form)
                return decode(key, body["node"]).pair
            except EtcdError as exc:
                if exc.code != NODE_EXISTS:
                    raise
            there = self.read(key)
            if there is None:
                continue  # deleted since: try again
            if retried and there.nonce == nonce:
                return there.pair  # an earlier attempt's, whose answer was lost
            lease = there.pair.lease
            if lease is None or self._alive(lease):
                check_revision(there.pair.revision, None)
            delete_at(self._http, path, there.pair.revision)  # a leftover: the key is absent
        raise Transient("the key kept being written while it was created")

    def swap(self, key: str, value: bytes, revision: int, ttl: float | None, lease: int | None) -> KVPair:
        path, nonce = self._layout.path(key), new_nonce()
        form = _form(value, nonce, ttl, lease)
        if not 1 <= revision <= MAX_INDEX:
            self._impossible(key, revision)

        def attempt(retried: bool) -> KVPair:
            try:
                body, _index = self._http.request("PUT", path, {"prevIndex": str(revision)}, form)
            except EtcdError as exc:
                if retried and exc.code in (COMPARE_FAILED, KEY_NOT_FOUND):
                    there = self.read(key)
                    if there is not None and there.nonce == nonce:
                        return there.pair
                self._conflict(exc, revision)
            written = decode(key, body["node"]).pair
            if self.leftover(body.get("prevNode"), key):
                delete_at(self._http, path, written.revision)
                raise KeyNotFound("the key is gone")
            return written

        return self._http.call(attempt)

    def delete(self, key: str) -> bool:
        """Delete the key; whether it existed (a leftover did not)."""
        path = self._layout.path(key)

        def attempt(retried: bool) -> bool:
            try:
                body, _index = self._http.request("DELETE", path)
            except EtcdError as exc:
                if exc.code == KEY_NOT_FOUND:
                    return retried  # nothing there after a lost answer: most likely that attempt deleted it
                raise
            return not self.leftover(body.get("prevNode"), key)

        return self._http.call(attempt)

    def delete_if(self, key: str, revision: int) -> None:
        path = self._layout.path(key)
        if not 1 <= revision <= MAX_INDEX:
            self._impossible(key, revision)

        def attempt(retried: bool) -> None:
            try:
                body, _index = self._http.request("DELETE", path, {"prevIndex": str(revision)})
            except EtcdError as exc:
                if retried and exc.code == KEY_NOT_FOUND:
                    return  # gone after a lost answer: that attempt deleted it
                self._conflict(exc, revision)
            if self.leftover(body.get("prevNode"), key):
                raise KeyNotFound("the key is gone")

        self._http.call(attempt)

    # -- conflicts -----------------------------------------------------------------------------

    def _conflict(self, exc: EtcdError, revision: int) -> NoReturn:
        """Raise what a failed compare means: KeyModified (at the index etcd names) or KeyNotFound."""
        if exc.code == KEY_NOT_FOUND:
            check_revision(None, revision)
        if exc.code == COMPARE_FAILED:
            found = _CAUSE.search(str(exc))
            if found is not None:
                check_revision(int(found.group(2)), revision)
            raise KeyModified(f"the key is no longer at revision {revision}")
        raise exc

    def _impossible(self, key: str, revision: int) -> NoReturn:
        """A revision no key can have: the error the key's state gives."""
        there = self._http.call(lambda _: self.read(key))
        live = there is not None and (there.pair.lease is None or self._alive(there.pair.lease))
        check_revision(there.pair.revision if there is not None and live else None, revision)
        raise AssertionError("a revision out of etcd's range matched")


def _form(value: bytes, nonce: str, ttl: float | None, lease: int | None) -> dict[str, str]:
    form = {"value": encode(value, nonce, lease)}
    if ttl is not None:
        form["ttl"] = str(whole_seconds(ttl))
    return form
