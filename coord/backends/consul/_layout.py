"""Where coord's keys live in Consul's KV, and how entries become KVPairs and log records.

Under the ``root`` option (default ``coord``)::

    ROOT/kv/<key>                  key "<key>": its value, raw; Flags = the nonce of the write
    ROOT/log/<escaped key>/<name>  one record per write of the key (``put`` or ``delete``), bound
                                   to the writing Store's log session, which expires it (``_sessions``)
    ROOT/mark/<nonce>.<n>          set and deleted inside one transaction: separates two reads' results

A key and its children coexist (Consul's keys are flat strings). Escaping
``%`` and ``/`` in the log's key part keeps one key's records apart from its
children's: ``ROOT/log/a/`` holds "a"'s records only, ``ROOT/log/a%2F`` starts
every record of a key under "a". A record's ``CreateIndex`` is the index of
the transaction that wrote it, which is the revision of its event.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from ..._types import KVPair

__all__ = ["Layout", "Record", "lease_id", "new_nonce", "pair", "session_of"]


def new_nonce() -> int:
    """A write's nonce: it goes in the Flags of every key the write puts, so a retry recognises its own write."""
    return secrets.randbits(63) or 1


def lease_id(session: str) -> int:
    """A Consul session's id as coord's integer lease id (the UUID's 128 bits)."""
    return uuid.UUID(session).int


def session_of(lease: int) -> str:
    return str(uuid.UUID(int=lease))


def _escape(key: str) -> str:
    return key.replace("%", "%25").replace("/", "%2F")


def _unescape(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


@dataclass(frozen=True)
class Record:
    """One logged change: an event of ``key`` at ``revision``, the ``position``-th write of its transaction."""

    key: str
    type: Literal["put", "delete"]
    value: bytes | None
    revision: int
    position: int


class Layout:
    """The Consul keys of a Store's root."""

    def __init__(self, root: str) -> None:
        self.root = root.strip("/")
        self._kv = f"{self.root}/kv/"
        self._log = f"{self.root}/log/"

    def data(self, key: str) -> str:
        return self._kv + key

    def tree(self, prefix: str) -> str:
        """The Consul prefix of every key strictly under ``prefix`` ("" is every key)."""
        return f"{self._kv}{prefix}/" if prefix else self._kv

    def key_of(self, consul_key: str) -> str:
        return consul_key[len(self._kv) :]

    def log_of(self, key: str, tree: bool) -> str:
        """The prefix of the log records of ``key``, or of every key under it."""
        if not tree:
            return f"{self._log}{_escape(key)}/"
        return f"{self._log}{_escape(key)}%2F" if key else self._log

    def record_key(self, key: str, nonce: int, position: int) -> str:
        return f"{self._log}{_escape(key)}/{nonce:016x}.{position}"

    def mark(self, nonce: int, n: int) -> str:
        return f"{self.root}/mark/{nonce:016x}.{n}"

    def marks(self, nonce: int) -> str:
        return f"{self.root}/mark/{nonce:016x}."

    def record(self, entry: dict[str, Any]) -> Record | None:
        """A log entry as a Record (None for anything else found under the log)."""
        name = str(entry.get("Key", ""))[len(self._log) :]
        escaped, _, _ = name.rpartition("/")
        raw = decode(entry.get("Value"))
        if not escaped or len(raw) < 3 or raw[:1] not in (b"p", b"d"):
            return None
        position = int.from_bytes(raw[1:3], "big")
        kind: Literal["put", "delete"] = "put" if raw[:1] == b"p" else "delete"
        value = raw[3:] if kind == "put" else None
        return Record(_unescape(escaped), kind, value, int(entry["CreateIndex"]), position)


def record_value(kind: str, position: int, value: bytes = b"") -> bytes:
    return (b"p" if kind == "put" else b"d") + min(position, 0xFFFF).to_bytes(2, "big") + value


def decode(value: object) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) and value else b""


def encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def pair(key: str, entry: dict[str, Any]) -> KVPair:
    """A Consul KV entry (as the HTTP API gives it) as coord's KVPair of ``key``."""
    session = entry.get("Session") or None
    return KVPair(
        key,
        decode(entry.get("Value")),
        int(entry["ModifyIndex"]),
        int(entry["CreateIndex"]),
        lease_id(session) if session else None,
    )
