"""One parametrised fixture runs every Store test against every backend.

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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import coord
from coord._registry import BACKENDS, server_backends

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
    tag = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        return f"memory://{tag}"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'coord.db'}"
    url = os.environ.get(SERVER_BACKENDS[backend])
    if not url:
        pytest.fail(f"COORD_REQUIRE_SERVERS=1 but {SERVER_BACKENDS[backend]} is not set")
    return f"{url}{'&' if '?' in url else '?'}prefix={tag}"


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _open(url: str) -> coord.Store:
    try:
        return coord.connect(url)
    except coord.StoreUnavailable as exc:
        pytest.fail(f"the server behind {url} does not answer: {exc}")


@pytest.fixture
def url(backend: str, tmp_path: Path) -> str:
    """The URL of a fresh, empty namespace on ``backend``."""
    return make_url(backend, tmp_path)


@pytest.fixture
def process_url(process_backend: str, tmp_path: Path) -> str:
    """Like ``url``, for backends that several processes can share."""
    return make_url(process_backend, tmp_path)


@pytest.fixture
def open_store(url: str) -> Iterator[Callable[[], coord.Store]]:
    """Open Stores on ``url`` (another client of the same namespace each call); all closed after the test."""
    stores: list[coord.Store] = []

    def opener() -> coord.Store:
        store = _open(url)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], coord.Store]) -> coord.Store:
    """An open Store on a fresh namespace of the backend under test."""
    return open_store()
