"""Store URLs: ``scheme://host:port[,host:port...]/path?option=value``, parsed in one place.

A URL may carry secrets (``redis://user:password@host``, ``?token=...``):
``mask`` shows it with each of them replaced by ``***``, and every message,
``repr`` and log line of coord shows URLs only that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

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
    some services take a token there. The user part of a server's URL ends
    at its *last* ``@``, so a password with an unencoded ``/``, ``?`` or
    ``#`` (which a URL parser would cut short) is masked whole too; so is
    one in a string without ``scheme://``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # A file path may hold an "@"; a local URL's user part can only be before the path.
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end if scheme.lower() in _LOCAL_SCHEMES else len(rest))
    shown = f"{scheme}{sep}"
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        shown += f"{user}:{_MASK}@" if colon and not any(c in user for c in "/?#") else f"{_MASK}@"
        rest = rest[at + 1 :]
    head, question, tail = rest.partition("?")
    query, hash_, fragment = tail.partition("#")
    masked = "&".join(
        f"{name}={_MASK if is_secret(name) else value}" if eq else name
        for name, eq, value in (item.partition("=") for item in query.split("&") if item)
    )
    return shown + head + (f"?{masked}" if question else "") + hash_ + fragment


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
    if local and "@" in parts.netloc:
        raise ConfigurationError(f"a {scheme}:// URL names no user or password: {mask(url)!r}")
    if not local and "@" in url.partition("://")[2] and "@" not in parts.netloc:
        raise ConfigurationError(
            f"store URL {mask(url)!r} has an '@' after its host: in a user or password, write '/', '?' and '#'"
            " percent-encoded (%2F, %3F, %23); in an option's value, '@' as %40"
        )
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
        except ValueError:
            raise ConfigurationError(f"malformed port in store URL {mask(url)!r}") from None
        if number is not None and not 0 < number < 65536:
            raise ConfigurationError(f"port {number} out of range in store URL {mask(url)!r}")
        hosts.append((host.strip("[]") or "127.0.0.1", number))
    return hosts
