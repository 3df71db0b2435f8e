"""Store URLs: ``scheme://host:port[,host:port...]/path?option=value``, parsed in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from ._errors import ConfigurationError

__all__ = ["Location", "parse_url"]

#: Schemes whose "host" part is a file path or a name, not a list of servers.
_LOCAL_SCHEMES = frozenset({"sqlite", "memory"})


@dataclass(frozen=True)
class Location:
    """A parsed store URL: ``scheme://host:port[,host:port...]/path``."""

    url: str
    scheme: str
    hosts: list[tuple[str, int | None]] = field(default_factory=list)
    path: str = ""

    def endpoints(self, default_port: int) -> list[tuple[str, int]]:
        """The hosts, with ``default_port`` where none was given (``127.0.0.1`` when no host was)."""
        hosts = self.hosts or [("127.0.0.1", None)]
        return [(host, default_port if port is None else port) for host, port in hosts]


def parse_url(url: str) -> tuple[Location, dict[str, str]]:
    """Split ``url`` into its Location and its query-string options; ``ConfigurationError`` if malformed."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed store URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"malformed store URL {url!r}: expected scheme://..., for example sqlite:///tmp/coord.db"
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
            raise ConfigurationError(f"malformed port {port!r} in store URL {url!r}") from exc
        if number is not None and not 0 < number < 65536:
            raise ConfigurationError(f"port {number} out of range in store URL {url!r}")
        hosts.append((host.strip("[]") or "127.0.0.1", number))
    return hosts
