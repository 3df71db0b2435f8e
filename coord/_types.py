"""The values the Store API returns: key/value pairs and watch events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Event", "KVPair"]


@dataclass(frozen=True, slots=True)
class KVPair:
    """One key as the store holds it.

    ``revision`` changes on every write of the key; it is what
    ``atomic_put`` and ``atomic_delete`` compare. ``created`` is set when the
    key is created and strictly increases in creation order across all keys
    of one store, so recipes order contenders by it and use it as their
    fencing token. ``lease`` is the id of the lease (or ttl) the key is bound
    to, ``None`` for a plain key.
    """

    key: str
    value: bytes
    revision: int
    created: int
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch; ``value`` is ``None`` for deletes."""

    type: Literal["put", "delete"]
    key: str
    value: bytes | None
    revision: int
