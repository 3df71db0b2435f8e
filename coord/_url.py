"""Store URLs: ``scheme://host:port[,host:port...]/path?option=value``, parsed in one place.

A URL may carry secrets (``redis://user:password@host``, ``?token=...``):
``mask`` shows it with each of them replaced by ``***``, and every message,
``repr`` and log line of coord shows URLs only that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ._errors import ConfigurationError

__all__ = ["SECRET_OPTIONS", "Location", "flag", "is_secret", "mask", "mask_text", "parse_url"]

#: Schemes whose "host" part is a file path or a name, not a list of servers.
_LOCAL_SCHEMES = frozenset({"sqlite", "memory"})
#: Query-string options whose values are secrets: any whose name contains one of these.
SECRET_OPTIONS = ("password", "passwd", "token", "secret", "credential", "auth")
_MASK = "***"
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def is_secret(option: str) -> bool:
    """Whether the query-string option ``option`` holds a secret."""
    return any(word in option.lower() for word in SECRET_OPTIONS)


def mask(url: str) -> str:
    """``url`` with its password and every secret option replaced by ``***`` (safe to show).

    A user part without a password (``redis://TOKEN@host``) is masked whole:
    some services take a token there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK  # unparseable: it could hide a secret anywhere
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hosts}" if colon else f"{_MASK}@{hosts}"
    query = "&".join(
        f"{name}={_MASK if is_secret(name) else value}" if eq else name
        for name, eq, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    shown = (
        f"{parts.scheme}://{netloc}{parts.path}"
        if "://" in url
        else urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    )
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def flag(text: str) -> bool:
    """A true-or-false query-string option (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def mask_text(text: str) -> str:
    """``text`` (an error message, say) with every URL in it masked."""
    return _URL_IN_TEXT.sub(lambda match: mask(match.group(0)), text)


@dataclass(frozen=True)
class Location:
    """A parsed store URL: ``scheme://host:port[,host:port...]/path``; its ``repr`` masks secrets."""

    url: str = field(repr=False)
    scheme: str
    hosts: list[tuple[str, int | None]] = field(default_factory=list)
    path: str = ""

    @property
    def masked(self) -> str:
        """The URL as it may be shown: secrets replaced by ``***``."""
        return mask(self.url)

    def endpoints(self, default_port: int) -> list[tuple[str, int]]:
        """The hosts, with ``default_port`` where none was given (``127.0.0.1`` when no host was)."""
        hosts = self.hosts or [("127.0.0.1", None)]
        return [(host, default_port if port is None else port) for host, port in hosts]


def parse_url(url: str) -> tuple[Location, dict[str, str]]:
    """Split ``url`` into its Location and its query-string options; ``ConfigurationError`` if malformed."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed store URL {mask(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"malformed store URL {mask(url)!r}: expected scheme://..., for example sqlite:///tmp/coord.db"
        )
    local = scheme in _LOCAL_SCHEMES
    hosts = [] if local else _hosts(parts.netloc.rsplit("@", 1)[-1], url)
    path = parts.netloc + parts.path if local else parts.path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Location(url, scheme, hosts, path), query


def _hosts(netloc: str, url: str) -> list[tuple[str, int | None]]:
    hosts: list[tuple[str, int | None]] = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if ":" in item and not item.endswith("]") else (item, "", "")
        try:
            number = int(port) if port else None
        except ValueError as exc:
            raise ConfigurationError(f"malformed port {port!r} in store URL {mask(url)!r}") from exc
        if number is not None and not 0 < number < 65536:
            raise ConfigurationError(f"port {number} out of range in store URL {mask(url)!r}")
        hosts.append((host.strip("[]") or "127.0.0.1", number))
    return hosts
