"""``redis://``: the Store on one Redis primary."""

from ._store import RedisStore

__all__ = ["RedisStore"]
