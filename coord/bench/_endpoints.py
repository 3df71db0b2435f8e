"""The stores a run measures: one ``Endpoint`` per ``--url``, and fresh namespaces on it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from coord._registry import BACKENDS, find

__all__ = ["Endpoint", "default_urls", "fresh_tag", "parse"]


@dataclass(frozen=True)
class Endpoint:
    """A store given on the command line: its backend (coord's name for it) and its URL."""

    backend: str
    url: str
    #: Whether several processes can share it (``memory://`` lives in one process).
    shared: bool

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port

    @property
    def hosts(self) -> str:
        """``host:port[,host:port]`` as written in the URL (ZooKeeper's connect string)."""
        return urlsplit(self.url).netloc

    @property
    def path(self) -> Path:
        """The database file of ``sqlite://``."""
        return Path(urlsplit(self.url).path)

    def coord_url(self, tag: str) -> str:
        """A URL of a namespace of this store that nothing else uses (``memory://tag`` for memory)."""
        if self.backend == "memory":
            return f"memory://{tag}"
        return f"{self.url}{'&' if '?' in self.url else '?'}prefix={tag}"

    def scratch(self) -> Path:
        """A folder beside the sqlite file, for peers that keep files (tooz's file driver)."""
        folder = self.path.parent / "coord-bench-files"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def parse(url: str) -> Endpoint:
    """The endpoint of ``url``; ``ConfigurationError`` for a scheme coord does not know."""
    backend = find(urlsplit(url).scheme)
    return Endpoint(backend.name, url, backend.shared)


def default_urls(scratch: Path) -> list[str]:
    """Without ``--url``: memory, a sqlite file under ``scratch``, and each test server whose variable is set."""
    urls = ["memory://", f"sqlite://{scratch / 'coord.db'}"]
    for backend in BACKENDS:
        if backend.test_env and os.environ.get(backend.test_env):
            urls.append(os.environ[backend.test_env])
    return urls


def fresh_tag(what: str) -> str:
    """A unique name for one benchmark's keys, locks or elections."""
    return f"bench-{what}-{uuid.uuid4().hex[:8]}"
