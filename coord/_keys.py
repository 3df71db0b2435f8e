"""Key and value validation: the one place keys are normalised."""

from __future__ import annotations

import math
import re

from ._errors import InvalidKey

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
#: The longest ttl a lease or key may have: 30 days. Longer ones overflow some backends' fields
#: (ZooKeeper keeps milliseconds in 32 bits) and every wait coord makes stays far below it.
MAX_TTL = 30 * 24 * 3600.0


# Control characters (C0, DEL, C1), the Unicode line and paragraph separators, and the noncharacters
# (U+FDD0..U+FDEF and the last two code points of every plane): one compiled class, scanned in C.
_NONCHARACTERS = "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
_REFUSED = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufdd0-\ufdef{_NONCHARACTERS}]")


def normalize_key(key: object, *, allow_root: bool = False) -> str:
    """Return the canonical form of ``key``: "/"-separated, no empty segments.

    Leading, trailing and repeated slashes are dropped, so ``"/a//b/"`` is
    ``"a/b"``. The empty key (unless ``allow_root``, for prefixes that mean
    "everything"), ``.`` and ``..`` segments, control characters (C0, DEL and
    C1), the Unicode line and paragraph separators, Unicode noncharacters
    (such as U+FFFF and U+10FFFF) and keys over 1024 UTF-8 bytes raise
    ``InvalidKey``.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"a key must be a str, not {type(key).__name__}")
    if _REFUSED.search(key):
        raise InvalidKey("a key must not contain control characters, line separators or Unicode noncharacters", key=key)
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
    """A ttl is a positive number of seconds, at most ``MAX_TTL`` (30 days)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"a ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_TTL:
        raise ValueError(f"a ttl must be a positive number of seconds, at most {MAX_TTL:.0f} (30 days), not {ttl!r}")
    return float(ttl)


def check_timeout(timeout: object, *, what: str = "timeout") -> float | None:
    """A timeout is ``None`` (wait for ever), or a number of seconds >= 0; ``inf`` means ``None``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds or None, not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


def is_under(key: str, prefix: str) -> bool:
    """True when ``key`` is strictly below the directory ``prefix`` ("" is the root)."""
    return not prefix or key.startswith(prefix + "/")
