"""The test servers: scripts/servers.py loaded once, and each backend's server and URL from coord's backend table.

A test that needs a backend's server carries ``@pytest.mark.server(NAME)``
(the backend fixtures of conftest.py put it on their server backends'
parameters). conftest.py skips such a test when the server's URL is not
set, and fails it instead under ``COORD_REQUIRE_SERVERS=1`` (as in CI).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from coord._registry import BACKENDS, Backend

__all__ = [
    "REQUIRE_SERVERS",
    "backend_named",
    "missing_server",
    "refused_options",
    "required_env",
    "server_of",
    "servers",
    "url_of",
]

REQUIRE_SERVERS = os.environ.get("COORD_REQUIRE_SERVERS") == "1"
_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "servers.py"


def _load() -> ModuleType:
    """scripts/servers.py, which knows where the test servers run ($COORD_SERVERS_DIR, ..._PORT_OFFSET)."""
    name = "coord_test_servers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = _load()


def backend_named(name: str) -> Backend:
    """The row of coord's backend table called ``name``."""
    (backend,) = [backend for backend in BACKENDS if backend.name == name]
    return backend


def url_of(name: str) -> str:
    """The URL of backend ``name``'s test server (``$COORD_TEST_...``); ``""`` if it is not set."""
    variable = backend_named(name).test_env
    return os.environ.get(variable, "") if variable else ""


def missing_server(name: str) -> str | None:
    """Why the tests that need backend ``name``'s server cannot run here; ``None`` if they can."""
    variable = backend_named(name).test_env
    if variable and not os.environ.get(variable):
        return f'{variable} is not set: python3 scripts/servers.py start; eval "$(python3 scripts/servers.py env)"'
    return None


def required_env(variable: str) -> str:
    """The server URL in ``$variable``: the test is skipped if it is not set, and failed under COORD_REQUIRE_SERVERS=1."""
    url = os.environ.get(variable, "")
    if not url:
        reason = f'{variable} is not set: python3 scripts/servers.py start; eval "$(python3 scripts/servers.py env)"'
        if REQUIRE_SERVERS:
            pytest.fail(f"COORD_REQUIRE_SERVERS=1, but {reason}")
        pytest.skip(reason)
    return url


def server_of(name: str) -> Any:
    """The ``Server`` of scripts/servers.py behind backend ``name``, to kill, start or restart."""
    return servers.SERVERS[backend_named(name).server]


def refused_options(url: str, *, password: bool = True) -> list[str]:
    """The conformance suite's ``--refused-url`` options for a secure server's working ``url``: the same URL
    trusting a CA that signed nothing, and (``password``) with a wrong password."""
    from urllib.parse import urlsplit

    ca = str(servers.tls_files()["ca"])
    variants = [url.replace(f"tls_ca={ca}", f"tls_ca={servers.tls_files()['other-ca']}")]
    secret = urlsplit(url).password
    if password and secret:
        variants.append(url.replace(f":{secret}@", ":Wrong-Pw-0000@", 1))
    assert all(variant != url for variant in variants), url
    return [option for variant in variants for option in ("--refused-url", variant)]
