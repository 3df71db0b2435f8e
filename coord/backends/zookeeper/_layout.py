"""Where things live under ROOT, and how a znode's bytes say what it holds.

Paths (see the package docstring for what each is for)::

    ROOT/kv/<dirs>/=<name>           a key's znode: header, then the value
    ROOT/kv/<dirs>/~<name>           its guard
    ROOT/kv/<dirs>/~<name>/<blob>    the marker of the chunks the key's value lives in
    ROOT/log/e<hash>.<seq>           a log entry: kind (P/D), key, and for P the key's data (hash: the key's crc32)
    ROOT/log/b<seq>                  a free record: data is a blob name "<id>.<count>"
    ROOT/blob/<id>.<n>               chunk n of blob <id>

Key segments are percent-escaped where ZooKeeper refuses a character, and for
``%``, ``=`` and ``~``, so a name starting with ``=`` is always a key and one
starting with ``~`` always a guard.
"""

from __future__ import annotations

import math
import re
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

# Header: magic, flags, nonce (a retried write recognises itself by it); then ttl ms, lease id, blob if flagged.
_HEAD = struct.Struct(">BBQ")
_MAGIC, _TTL, _LEASE, _BLOB = 0xC0, 1, 2, 4
# A value, its log copy and the rest of a multi-op must fit one packet (jute.maxbuffer, 1 MiB - 1).
INLINE = 400 * 1024
CHUNK = 900 * 1024
_MAX_TTL_MS = 2**32 - 1  # the header's field: about 49.7 days


def ttl_ms(ttl: float) -> int:
    """A ttl key's ttl in whole milliseconds, as the header holds it (coord bounds ttls well below the limit)."""
    ms = math.ceil(ttl * 1000)
    if not 0 < ms <= _MAX_TTL_MS:
        raise ValueError(f"a ZooKeeper ttl key's ttl must be at most {_MAX_TTL_MS // 1000} s, not {ttl!r}")
    return ms


# What ZooKeeper refuses in a name (control and private-use characters, surrogates, specials), and our markers.
_UNSAFE = re.compile("[%=~\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\U0010ffff]")


def escape(segment: str) -> str:
    if not _UNSAFE.search(segment):
        return segment
    out = []
    for ch in segment:
        o = ord(ch)
        if ch in "%=~" or o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xF8FF or o >= 0xFFF0:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


@dataclass(frozen=True)
class KeyPaths:
    folder: str  # the key's directory
    path: str  # the key's znode
    guard: str


class Layout:
    """The znode paths of one ROOT."""

    def __init__(self, root: str) -> None:
        self.kv, self.log, self.blob = f"{root}/kv", f"{root}/log", f"{root}/blob"
        self.clock = f"{root}/clock-"  # ephemeral, sequential and short-lived: read for its ctime (server_time)

    def dir(self, prefix: str) -> str:
        return self.kv + "".join("/" + escape(s) for s in prefix.split("/") if s)

    def paths(self, key: str) -> KeyPaths:
        parent, _, name = key.rpartition("/")
        folder = self.dir(parent)
        return KeyPaths(folder, f"{folder}/={escape(name)}", f"{folder}/~{escape(name)}")

    @staticmethod
    def parse(name: str) -> tuple[str, str | None, int] | None:
        """A log child's kind (``e`` entry, ``b`` free record), its key's hash (entries), and its sequence number."""
        seq = name[-10:]
        if len(name) < 11 or not seq.isdigit():
            return None
        return name[0], name[1:9] if len(name) == 20 and name[9] == "." else None, int(seq)

    @staticmethod
    def seqs(names: list[str], kind: str = "e") -> list[int]:
        """The sequence numbers of the log's children of one kind (``e`` entries, ``b`` free records), sorted."""
        return sorted(parsed[2] for n in names if (parsed := Layout.parse(n)) and parsed[0] == kind)

    @staticmethod
    def entries(names: list[str]) -> list[tuple[int, str, str | None]]:
        """The log's entries among ``names``: sequence number, name and key hash, in log order."""
        return sorted((parsed[2], n, parsed[1]) for n in names if (parsed := Layout.parse(n)) and parsed[0] == "e")


@dataclass(frozen=True)
class Blob:
    """A big value's chunks: ROOT/blob/<id>.0 .. <id>.<count - 1>."""

    id: str
    count: int

    @property
    def name(self) -> str:
        """How markers and free records name it."""
        return f"{self.id}.{self.count}"

    @classmethod
    def parse(cls, name: str) -> Blob:
        blob_id, _, count = name.rpartition(".")
        return cls(blob_id, int(count))

    def chunks(self, folder: str) -> list[str]:
        return [f"{folder}/{self.id}.{i}" for i in range(self.count)]


@dataclass(frozen=True)
class Node:
    """What a key's znode (or a put's log entry) holds."""

    value: bytes
    ttl_ms: int = 0
    lease: int | None = None
    nonce: int = 0
    blob: Blob | None = None  # when the value lives in ROOT/blob

    def expired(self, stat: Any) -> bool:
        """Whether a ttl key is past its expiry (server mtime + ttl; wall clocks agree well enough)."""
        return bool(self.ttl_ms) and (stat.mtime + self.ttl_ms) / 1000 <= time.time()


def encode(value: bytes, ttl_ms: int, lease: int | None, nonce: int, blob: Blob | None = None) -> bytes:
    flags = (_TTL if ttl_ms else 0) | (_LEASE if lease is not None else 0) | (_BLOB if blob else 0)
    head = _HEAD.pack(_MAGIC, flags, nonce)
    if ttl_ms:
        head += struct.pack(">I", ttl_ms)
    if lease is not None:
        head += struct.pack(">Q", lease)
    if blob is not None:
        return head + struct.pack(">I", blob.count) + blob.id.encode()
    return head + value


def decode(data: bytes) -> Node:
    if len(data) < _HEAD.size or data[0] != _MAGIC:
        return Node(data)  # written by something other than coord: all value
    _, flags, nonce = _HEAD.unpack_from(data)
    at, ttl_ms, lease = _HEAD.size, 0, None
    if flags & _TTL:
        (ttl_ms,) = struct.unpack_from(">I", data, at)
        at += 4
    if flags & _LEASE:
        (lease,) = struct.unpack_from(">Q", data, at)
        at += 8
    if flags & _BLOB:
        (count,) = struct.unpack_from(">I", data, at)
        return Node(b"", ttl_ms, lease, nonce, Blob(data[at + 4 :].decode(), count))
    return Node(data[at:], ttl_ms, lease, nonce)


def key_hash(key: str) -> str:
    """What a log entry's name says of its key: a watch of one key reads only the entries that match."""
    return f"{zlib.crc32(key.encode()):08x}"


def entry(kind: bytes, key: str, data: bytes = b"") -> tuple[str, str, bytes]:
    """The multi-op operation that logs a write: ``P`` (put, with the key's data) or ``D`` (delete)."""
    raw = key.encode()
    return ("log", f"e{key_hash(key)}.", kind + struct.pack(">I", len(raw)) + raw + data)


def read_entry(data: bytes) -> tuple[str, Node | None]:
    """A log entry's key, and the node it put (None for a delete)."""
    kind, (size,) = data[:1], struct.unpack_from(">I", data, 1)
    key = data[5 : 5 + size].decode()
    return key, decode(data[5 + size :]) if kind == b"P" else None
