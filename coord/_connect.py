"""``connect(url)``: pick a backend by URL scheme and open it.

Backends live in their own modules and import their client libraries there,
so a backend's library is imported only when a store of that kind is opened.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._errors import ConfigurationError
from ._store import Store

__all__ = ["Location", "connect", "default_store", "default_url"]

# scheme -> (module, class, pip extra that brings its client library)
_BACKENDS: Mapping[str, tuple[str, str, str | None]] = {
    "memory": ("coord._memory", "MemoryStore", None),
    "sqlite": ("coord._sqlite", "SQLiteStore", None),
    "etcd": ("coord._etcd", "EtcdStore", "etcd"),
    "etcd2": ("coord._etcd2", "Etcd2Store", "etcd"),
    "zookeeper": ("coord._zookeeper", "ZooKeeperStore", "zookeeper"),
    "zk": ("coord._zookeeper", "ZooKeeperStore", "zookeeper"),
    "consul": ("coord._consul", "ConsulStore", "consul"),
    "redis": ("coord._redis", "RedisStore", "redis"),
    "rediss": ("coord._redis", "RedisStore", "redis"),
}

# Options every backend takes, with their query-string parsers.
_COMMON_OPTIONS: Mapping[str, Callable[[str], object]] = {"timeout": float, "prefix": str}


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


def default_url() -> str:
    """``$COORD_URL``, or the embedded sqlite store in the per-user state directory."""
    url = os.environ.get("COORD_URL")
    if url:
        return url
    import platformdirs

    state = Path(platformdirs.user_state_dir("coord"))
    return f"sqlite://{state / 'coord.db'}"


def connect(url: str | None = None, **options: object) -> Store:
    """Open a Store.

    ``url`` picks the backend by scheme: ``memory://``, ``sqlite:///path``,
    ``etcd://h:p[,h:p]``, ``zookeeper://h:p[,h:p][/chroot]`` (or ``zk://``),
    ``redis://h:p[/db]`` (``rediss://`` for TLS). Without a URL it reads
    ``$COORD_URL``, and without that it opens the embedded sqlite store.
    Query-string options (``?timeout=5&prefix=app``) become options; keyword
    arguments override them. Raises ``ConfigurationError`` for a malformed
    URL, an unknown scheme or option, or a backend whose client library is
    not installed (the message names the pip extra).
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        raise ConfigurationError(f"a store URL must be a str, not {type(url).__name__}")
    location, query = _parse(url)
    store_class = _backend_class(location.scheme)
    parsers = {**_COMMON_OPTIONS, **store_class.OPTIONS}
    merged: dict[str, object] = {}
    for name, text in query.items():
        if name not in parsers:
            raise ConfigurationError(
                f"unknown option {name!r} for {location.scheme}:// (known: {', '.join(sorted(parsers))})"
            )
        try:
            merged[name] = parsers[name](text)
        except ValueError as exc:
            raise ConfigurationError(f"option {name}={text!r} is not valid: {exc}") from exc
    for name, value in options.items():
        if name not in parsers and name != "clock":
            raise ConfigurationError(
                f"unknown option {name!r} for {location.scheme}:// (known: {', '.join(sorted(parsers))})"
            )
        merged[name] = value
    try:
        opener: Any = store_class
        store: Store = opener(location, **merged)
        return store
    except TypeError as exc:
        raise ConfigurationError(f"bad options for {location.scheme}://: {exc}") from exc


def _parse(url: str) -> tuple[Location, dict[str, str]]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed store URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"malformed store URL {url!r}: expected scheme://..., for example sqlite:///tmp/coord.db"
        )
    hosts: list[tuple[str, int | None]] = []
    if scheme not in ("sqlite", "memory"):
        for item in filter(None, parts.netloc.rsplit("@", 1)[-1].split(",")):
            host, _, port = item.rpartition(":") if ":" in item and not item.endswith("]") else (item, "", "")
            try:
                number = int(port) if port else None
            except ValueError as exc:
                raise ConfigurationError(f"malformed port {port!r} in store URL {url!r}") from exc
            if number is not None and not 0 < number < 65536:
                raise ConfigurationError(f"port {number} out of range in store URL {url!r}")
            hosts.append((host.strip("[]") or "127.0.0.1", number))
    path = parts.netloc + parts.path if scheme in ("sqlite", "memory") else parts.path
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Location(url, scheme, hosts, path), query


def _backend_class(scheme: str) -> type[Store]:
    if scheme not in _BACKENDS:
        raise ConfigurationError(f"unknown store scheme {scheme!r}; coord knows {', '.join(sorted(_BACKENDS))}")
    module_name, class_name, extra = _BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigurationError(f"the {scheme}:// backend is not available in this version of coord") from exc
        raise ConfigurationError(
            f"the {scheme}:// backend needs {exc.name!r}, which is not installed: pip install 'coord[{extra}]'"
        ) from exc
    store_class: type[Store] = getattr(module, class_name)
    return store_class


_default_lock = threading.Lock()
_default: Store | None = None


def default_store() -> Store:
    """The process-wide Store that recipes use when given none: ``connect()``, opened once."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = connect()
        return _default


def _forget_default_after_fork() -> None:
    # A child must not share its parent's connections, threads or sqlite handles.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_default_after_fork)
