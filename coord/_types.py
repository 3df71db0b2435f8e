"""The values the Store API returns: key/value pairs, watch events, a server's clock reading."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from typing import Literal

from ._errors import CoordError

__all__ = ["Event", "KVPair", "ServerTime"]


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


@dataclass(frozen=True, slots=True)
class ServerTime:
    """A store server's wall clock as one request read it (``Store.server_time()``).

    ``seconds`` since the epoch, counted in steps of ``resolution`` seconds
    (an HTTP ``Date`` header counts whole seconds: the server's clock was
    somewhere in ``[seconds, seconds + resolution)``); ``source`` says what
    was read, for people.
    """

    seconds: float
    resolution: float
    source: str

    @classmethod
    def from_http_date(cls, header: str | None, source: str) -> ServerTime:
        """An HTTP ``Date`` header's reading (whole seconds); ``CoordError`` if there is none to read."""
        try:
            seconds = email.utils.parsedate_to_datetime(header or "").timestamp()
        except (TypeError, ValueError):
            raise CoordError(f"{source}: no readable Date header ({header!r})") from None
        return cls(seconds, 1.0, source)
