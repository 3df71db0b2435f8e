"""Where coord's keys and leases live in etcd's v2 tree, and what a key's value string holds.

Paths, under the ``root`` option (default ``/coord``)::

    ROOT/kv/a/b/=c        key "a/b/c": a file; the "=" marks a key
    ROOT/kv/a/b           a directory: it holds "a/b"'s children and is never a key
    ROOT/kv/a/=b          key "a/b", beside the directory of its children
    ROOT/leases/<n>       lease n: a file with the lease's ttl, made by POST (n is its createdIndex)

A v2 node is a file (a value) or a directory (children), never both; the
marker keeps a key's file apart from the directory of its children, so a key
may have a value and children at once, and a parent that exists only because
of its children is not a key. Names are percent-escaped for ``%``, and for a
leading ``=`` (only keys start with it) or ``_`` (etcd hides such names from
listings and recursive watches).

A key's value string is coord's header, then the value::

    c <t|b> <nonce: 16 hex digits> <lease id, decimal, or nothing> : <value>

``t``: the value is UTF-8 text, stored as is; ``b``: anything else, in
unpadded URL-safe base64 (etcd's JSON carries only valid UTF-8). The nonce
lets a retried write recognise its own earlier attempt; the lease id binds
the key to a lease (see ``_leases``). A value without the header (written by
another v2 client) is read as text, bound to nothing.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ..._types import KVPair

__all__ = ["Layout", "Stored", "decode", "encode", "new_nonce", "pair_of"]

_HEADER = re.compile(r"c([tb])([0-9a-f]{16})(\d*):")


def _escape(segment: str) -> str:
    escaped = segment.replace("%", "%25")
    if escaped[:1] == "=":
        return "%3D" + escaped[1:]
    if escaped[:1] == "_":
        return "%5F" + escaped[1:]
    return escaped


class Layout:
    """The etcd paths of one ROOT, and the keys they hold."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.kv = f"{root}/kv"
        self._kv_slash = self.kv + "/"
        self.leases = f"{root}/leases"

    def dir(self, prefix: str) -> str:
        """The directory holding every key strictly under ``prefix`` (``ROOT/kv`` for "")."""
        return self.kv + "".join("/" + _escape(segment) for segment in prefix.split("/") if segment)

    def path(self, key: str) -> str:
        """The file of ``key``."""
        parent, _, name = key.rpartition("/")
        return f"{self.dir(parent)}/={_escape(name)}"

    def key(self, path: str) -> str | None:
        """The key whose file is ``path``; None for anything else (a directory, a file of another program)."""
        if not path.startswith(self._kv_slash):
            return None
        head, _, name = path[len(self._kv_slash) :].rpartition("/")
        if not name.startswith("="):
            return None
        # "/" is never escaped in a name, so unquoting the whole key unquotes each segment.
        return unquote(f"{head}/{name[1:]}" if head else name[1:])

    def lease_path(self, lease: int) -> str:
        return f"{self.leases}/{lease:020d}"

    def lease_id(self, path: str) -> int | None:
        name = path.rpartition("/")[2]
        return int(name) if path.startswith(self.leases + "/") and name.isdigit() else None

    def files(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """Every key file in the tree ``node`` (a recursive GET's answer), at any depth."""
        found: list[dict[str, Any]] = []
        stack = [node]
        while stack:
            item = stack.pop()
            if item.get("dir"):
                stack.extend(item.get("nodes") or ())
            elif item.get("key", "").rpartition("/")[2].startswith("="):
                found.append(item)
        return found


@dataclass(frozen=True)
class Stored:
    """What a key's file holds: the pair as coord reports it, and the nonce of the write that made it."""

    pair: KVPair
    nonce: str


def new_nonce() -> str:
    return f"{random.getrandbits(64):016x}"


def encode(value: bytes, nonce: str, lease: int | None) -> str:
    try:
        return f"ct{nonce}{lease or ''}:{value.decode('utf-8')}"
    except UnicodeDecodeError:
        return f"cb{nonce}{lease or ''}:{base64.urlsafe_b64encode(value).decode('ascii').rstrip('=')}"


def _unbase64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode(key: str, node: dict[str, Any]) -> Stored:
    """The pair a key's file ``node`` (from etcd's JSON) holds, and the nonce of the write that made it."""
    value, nonce, lease = _parse(node.get("value") or "")
    return Stored(KVPair(key, value, int(node["modifiedIndex"]), int(node["createdIndex"]), lease), nonce)


def pair_of(key: str, node: dict[str, Any]) -> KVPair:
    """The pair a key's file ``node`` holds (``decode`` without the nonce, for listings and events)."""
    value, _, lease = _parse(node.get("value") or "")
    return KVPair(key, value, int(node["modifiedIndex"]), int(node["createdIndex"]), lease)


def _parse(text: str) -> tuple[bytes, str, int | None]:
    """A value string's value, nonce and lease."""
    header = _HEADER.match(text)
    if header is not None:
        encoding, nonce, lease_text = header.groups()
        payload = text[header.end() :]
        try:
            value = payload.encode("utf-8") if encoding == "t" else _unbase64(payload)
        except ValueError:  # not ours after all: some other program's text
            pass
        else:
            return value, nonce, int(lease_text) if lease_text else None
    return text.encode("utf-8", "surrogatepass"), "", None
