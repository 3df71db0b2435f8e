"""One parametrised fixture runs every Store test against every backend.

The conformance plugin (``coord.testing.conformance``) gives ``open_store``
and ``store`` on ``store_url``; here ``store_url`` and ``process_url`` are
parametrised by the backends, so every test that uses them (the whole
conformance suite, tests/test_conformance.py, included) runs once per backend.

The backends are coord's backend table (``coord._registry``). Those without a
server always run; a server backend runs when its test URL is set
(COORD_TEST_ETCD, COORD_TEST_ZOOKEEPER, COORD_TEST_REDIS). With
COORD_REQUIRE_SERVERS=1 (set in CI) a backend whose URL is unset, or whose
server does not answer, fails the run instead of being left out.

Each test gets its own key prefix, so tests never see each other's keys and
the servers need no cleaning between tests.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from coord._registry import BACKENDS, server_backends
from coord.testing.conformance import fresh_namespace

pytest_plugins = ["coord.testing.conformance"]

#: backend name -> the variable holding its test server's URL, from coord's backend table
SERVER_BACKENDS = {backend.name: backend.test_env for backend in server_backends() if backend.test_env}
REQUIRE_SERVERS = os.environ.get("COORD_REQUIRE_SERVERS") == "1"

ALL_BACKENDS = [
    backend.name
    for backend in BACKENDS
    if backend.test_env is None or os.environ.get(backend.test_env) or REQUIRE_SERVERS
]


def _server_backends() -> list[str]:
    return [name for name in ALL_BACKENDS if name in SERVER_BACKENDS]


#: Backends that several processes can share (everything but memory).
PROCESS_BACKENDS = [backend.name for backend in BACKENDS if backend.shared and backend.name in ALL_BACKENDS]


def make_url(backend: str, tmp_path: Path) -> str:
    """A URL for ``backend`` with a prefix of its own, that child processes can open too."""
    if backend == "memory":
        return f"memory://t{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'coord.db'}"
    url = os.environ.get(SERVER_BACKENDS[backend])
    if not url:
        pytest.fail(f"COORD_REQUIRE_SERVERS=1 but {SERVER_BACKENDS[backend]} is not set")
    return fresh_namespace(url)


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend: str, tmp_path: Path) -> str:
    """The URL of a fresh, empty namespace on ``backend``."""
    return make_url(backend, tmp_path)


@pytest.fixture
def process_url(process_backend: str, tmp_path: Path) -> str:
    """Like ``store_url``, for backends that several processes can share."""
    return make_url(process_backend, tmp_path)
