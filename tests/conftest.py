"""The fixtures coord's tests share, parametrised by coord's backend table; the one gate for test servers.

The conformance plugin (``coord.testing.conformance``) gives ``open_store``
and ``store`` on ``store_url``; here ``store_url`` and ``process_url`` are
parametrised by the backends of ``coord._registry.BACKENDS``, so every test
that uses them (the whole conformance suite, tests/test_conformance.py,
included) runs once per backend. Each test gets its own key prefix, so tests
never see each other's keys and the servers need no cleaning between tests.

A test that needs a backend's server is marked ``@pytest.mark.server(NAME)``;
the backend fixtures mark their server backends' parameters so. A marked
test runs when the server's URL is set (COORD_TEST_ETCD,
COORD_TEST_ZOOKEEPER, COORD_TEST_REDIS: ``eval "$(python3 scripts/servers.py
env)"``) and is skipped when it is not, unless COORD_REQUIRE_SERVERS=1 (set
in CI): then it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord._registry import BACKENDS, Backend
from coord.testing.conformance import fresh_namespace
from tests.support import REQUIRE_SERVERS, Children, missing_server, url_of

pytest_plugins = ["coord.testing.conformance"]


def _param(backend: Backend) -> object:
    marks = [pytest.mark.server(backend.name)] if backend.test_env else []
    return pytest.param(backend.name, marks=marks, id=backend.name)


#: Every backend; server backends carry the server mark.
ALL_BACKENDS = [_param(backend) for backend in BACKENDS]
#: Backends that several processes can share (everything but memory).
PROCESS_BACKENDS = [_param(backend) for backend in BACKENDS if backend.shared]
#: Backends whose server scripts/servers.py runs, so tests can kill, restart and cut it off.
SERVER_BACKENDS = [_param(backend) for backend in BACKENDS if backend.server]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("server"):
        reason = missing_server(mark.args[0])
        if reason and REQUIRE_SERVERS:
            pytest.fail(f"COORD_REQUIRE_SERVERS=1, but {reason}")
        if reason:
            pytest.skip(reason)


def make_url(backend: str, tmp_path: Path) -> str:
    """A URL for ``backend`` with a prefix of its own, that child processes can open too."""
    if backend == "memory":
        return f"memory://t{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'coord.db'}"
    return fresh_namespace(url_of(backend))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=PROCESS_BACKENDS)
def process_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
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


@pytest.fixture
def server_url(server_backend: str, tmp_path: Path) -> str:
    """Like ``store_url``, on a backend whose server the test may kill, restart or cut off."""
    return make_url(server_backend, tmp_path)


@pytest.fixture
def children() -> Iterator[Children]:
    """Start the test's child processes here; they are all killed at its end."""
    made = Children()
    yield made
    made.close()


@pytest.fixture
def clock() -> coord.ManualClock:
    return coord.ManualClock()
