"""coord's errors: one root, each carrying the key and backend it concerns.

::

    CoordError                  root of every error coord raises
    ├── KeyNotFound             the key does not exist
    ├── KeyExists               create-only write found the key already there
    ├── KeyModified             compare-and-swap found a newer revision
    ├── InvalidKey              the key is empty, too long or malformed (also a ValueError)
    ├── LeaseExpired            a write used a lease that is no longer alive
    ├── StoreUnavailable        the backend could not be reached after bounded retries
    ├── StoreClosed             the Store (or Watch) was used after close()
    ├── NotSupported            the backend cannot do what was asked
    └── ConfigurationError      a bad URL, unknown scheme or missing client library

Every error raised because of a client library's exception chains it
(``raise ... from exc``); no client-library exception escapes the public API.
Bad values are the exception: a non-``bytes`` value raises ``TypeError`` and
an oversized one ``ValueError``, before anything is sent.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "CoordError",
    "InvalidKey",
    "KeyExists",
    "KeyModified",
    "KeyNotFound",
    "LeaseExpired",
    "NotSupported",
    "StoreClosed",
    "StoreUnavailable",
]


class CoordError(Exception):
    """Root of coord's errors. ``key`` and ``backend`` say where it happened."""

    def __init__(self, message: str = "", *, key: str | None = None, backend: str | None = None) -> None:
        self.key = key
        self.backend = backend
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        where = [f"{name}={value!r}" for name, value in (("key", self.key), ("backend", self.backend)) if value]
        text = self.message or type(self).__name__
        return f"{text} ({', '.join(where)})" if where else text


class KeyNotFound(CoordError):
    """The key does not exist (or no longer exists)."""


class KeyExists(CoordError):
    """A create-only write (``atomic_put(..., previous=None)``) found the key already there."""


class KeyModified(CoordError):
    """A compare-and-swap found that the key was written since ``previous`` was read."""


class InvalidKey(CoordError, ValueError):
    """The key is empty, has a ``..`` segment or a control character, or is over 1024 bytes."""


class LeaseExpired(CoordError):
    """A write used a lease that expired, was revoked or was lost."""


class StoreUnavailable(CoordError):
    """The backend could not be reached, or did not answer in time, after bounded retries."""


class StoreClosed(CoordError):
    """The Store or Watch was used after ``close()``."""


class NotSupported(CoordError):
    """The backend cannot perform the operation."""


class ConfigurationError(CoordError):
    """A malformed URL, an unknown scheme, a bad option, or a backend whose client library is missing."""
