"""``connect(url)``: open the backend of a URL's scheme (see ``_registry``), and the process's default Store."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError
from ._exit import enroll
from ._registry import find
from ._store import Store
from ._url import flag, is_secret, parse_url

__all__ = ["connect", "default_path", "default_store", "default_url"]


# Options every backend takes, with their query-string parsers.
_COMMON_OPTIONS: Mapping[str, Callable[[str], object]] = {"timeout": float, "prefix": str, "release_on_exit": flag}


def default_url() -> str:
    """``$COORD_URL``, or the embedded sqlite store in the per-user state directory (``default_path``)."""
    url = os.environ.get("COORD_URL")
    if url:
        return url
    return f"sqlite://{default_path()}"


def default_path() -> Path:
    """The default store's file: ``coord.db`` in the user's state directory, so each user (each HOME) has their own.

    ``~/.local/state/coord/coord.db`` on Linux (``$XDG_STATE_HOME/coord`` if
    set); the directory is coord's own, kept 0700 (see the sqlite backend).
    """
    import platformdirs

    return Path(platformdirs.user_state_dir("coord")) / "coord.db"


def connect(url: str | None = None, **options: object) -> Store:
    """Open a Store.

    ``url`` picks the backend by scheme: ``memory://``, ``sqlite:///path``,
    ``etcd://h:p[,h:p]``, ``etcd2://h:p[,h:p]`` (etcd's v2 API; ``etcd2s://`` for TLS),
    ``zookeeper://h:p[,h:p][/chroot]`` (or ``zk://``),
    ``redis://h:p[/db]`` (``rediss://`` for TLS). Without a URL it reads
    ``$COORD_URL``, and without that it opens the embedded sqlite store.
    Query-string options (``?timeout=5&prefix=app``) become options; keyword
    arguments override them. ``release_on_exit`` (default true) closes the
    Store, revoking its sessions, when the process exits normally or on
    SIGTERM (see ``_exit``), so its locks and leaderships pass on at once. Raises ``ConfigurationError`` for a malformed
    URL, an unknown scheme or option, or a backend whose client library is
    not installed (the message names the pip extra).
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str):
        raise ConfigurationError(f"a store URL must be a str, not {type(url).__name__}")
    location, query = parse_url(url)
    store_class = find(location.scheme).load()
    parsers = {**_COMMON_OPTIONS, **store_class.OPTIONS}
    merged: dict[str, object] = {}
    for name, text in query.items():
        _check_known(name, parsers, location.scheme)
        try:
            merged[name] = parsers[name](text)
        except ValueError as exc:
            if is_secret(name):
                raise ConfigurationError(f"option {name}=*** is not valid") from None
            raise ConfigurationError(f"option {name}={text!r} is not valid: {exc}") from exc
    for name, value in options.items():
        if name != "clock":
            _check_known(name, parsers, location.scheme)
        merged[name] = value
    if "timeout" in merged:
        timeout = merged["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ConfigurationError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    release = merged.pop("release_on_exit", True)
    if not isinstance(release, bool):
        raise ConfigurationError(f"release_on_exit must be true or false, not {release!r}")
    try:
        opener: Any = store_class
        store: Store = opener(location, **merged)
    except TypeError as exc:
        raise ConfigurationError(f"bad options for {location.scheme}://: {exc}") from exc
    if release:
        enroll(store)
    return store


def _check_known(name: str, parsers: Mapping[str, object], scheme: str) -> None:
    if name not in parsers:
        raise ConfigurationError(f"unknown option {name!r} for {scheme}:// (known: {', '.join(sorted(parsers))})")


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
