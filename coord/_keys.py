"""Key and value validation: the one place keys are normalised."""

from __future__ import annotations

import math

from ._errors import InvalidKey

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024


def normalize_key(key: object, *, allow_root: bool = False) -> str:
    """Return the canonical form of ``key``: "/"-separated, no empty segments.

    Leading, trailing and repeated slashes are dropped, so ``"/a//b/"`` is
    ``"a/b"``. The empty key (unless ``allow_root``, for prefixes that mean
    "everything"), ``.`` and ``..`` segments, control characters and keys over
    1024 UTF-8 bytes raise ``InvalidKey``.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"a key must be a str, not {type(key).__name__}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidKey("a key must not contain NUL or other control characters", key=key)
    segments = [segment for segment in key.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise InvalidKey("a key must not contain '.' or '..' segments", key=key)
    normal = "/".join(segments)
    if not normal and not allow_root:
        raise InvalidKey("a key must not be empty", key=key)
    try:
        size = len(normal.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey("a key must be valid UTF-8 text", key=key) from exc
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"a key must be at most {MAX_KEY_BYTES} bytes, not {size}", key=key[:64] + "...")
    return normal


def check_value(value: object) -> bytes:
    """Values are ``bytes`` (``TypeError`` otherwise) of at most 1 MiB (``ValueError``)."""
    if not isinstance(value, bytes):
        raise TypeError(f"a value must be bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueError(f"a value must be at most {MAX_VALUE_BYTES} bytes, not {len(value)}")
    return value


def check_ttl(ttl: object) -> float:
    """A ttl is a positive, finite number of seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"a ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"a ttl must be a positive, finite number of seconds, not {ttl!r}")
    return float(ttl)


def is_under(key: str, prefix: str) -> bool:
    """True when ``key`` is strictly below the directory ``prefix`` ("" is the root)."""
    return not prefix or key.startswith(prefix + "/")
