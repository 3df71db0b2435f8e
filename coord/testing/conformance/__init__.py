"""The Store conformance suite, as a pytest plugin: a backend is done when the whole suite passes.

Run it against any store URL, with no test file of your own::

    pytest -p coord.testing.conformance --store-url 'myscheme://127.0.0.1:4000'

The plugin adds the suite's modules (``test_*.py`` beside this one) to what
pytest collects. Each test opens its own namespace: the plugin adds a
``prefix`` of the test's own to the URL (below the URL's own ``prefix``, if it
has one), so tests never see each other's keys and the server needs no
cleaning between them. The URL must name one store that every ``connect``
opens again: ``memory://NAME``, not ``memory://``.

``--refused-url URL`` (repeatable) names URLs of the same store that must
be refused: a wrong password, a certificate the server does not trust, a
server certificate the client does not. Each must raise
``coord.ConfigurationError`` at once, whatever its ``timeout``, showing no
password (docs/security.md). Without it those tests are deselected.

The tests that run an owner in a child process (it is killed, or frozen)
need a store that several processes share. They are deselected when the
URL's backend is not shared (``memory://``, by coord's backend table);
backends registered through the ``coord.backends`` entry-point group count
as shared, and the child processes find them through that same entry point.

Fixtures, each of which your own ``conftest.py`` may override:

- ``store_url``: the URL of a fresh, empty namespace on the store under test;
- ``process_url``: the same, for tests in which child processes open it too;
- ``open_store``: opens another client of that namespace each call, all
  closed after the test;
- ``store``: one open client.

To run the suite from a test module of your own instead (say, to give
``store_url`` from a fixture that starts a server), load the plugin in your
``conftest.py`` (``pytest_plugins = ["coord.testing.conformance"]``),
override ``store_url`` and ``process_url`` there, and import the suite's
modules into the test module::

    from coord.testing.conformance.test_keys import *  # noqa: F403
    ...

docs/testing.md ("Running the conformance suite") shows both ways.

(PYTEST_DONT_REWRITE: this module has no asserts, and a conftest.py may
import it before loading it as a plugin; the suite's modules are rewritten
as any test module is.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

import coord
from coord._registry import find

__all__ = ["SUITE", "fresh_namespace"]

#: The modules of the suite, by path.
SUITE = sorted(Path(__file__).resolve().parent.glob("test_*.py"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coord", "coord's Store conformance suite")
    group.addoption(
        "--store-url",
        dest="store_url",
        default=None,
        metavar="URL",
        help="run coord's Store conformance suite against the store at URL",
    )
    group.addoption(
        "--refused-url",
        dest="refused_urls",
        action="append",
        default=[],
        metavar="URL",
        help="a URL of the same store that must be refused (wrong password, untrusted certificate); repeatable",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "refused_url" in metafunc.fixturenames:
        urls: list[str] = metafunc.config.getoption("refused_urls")
        metafunc.parametrize("refused_url", urls or [None], ids=[f"refused{n}" for n in range(len(urls) or 1)])


def pytest_configure(config: pytest.Config) -> None:
    # Collected like paths given on the command line: whatever the project's python_files says.
    if config.getoption("store_url"):
        config.args.extend(str(path) for path in SUITE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("refused_urls"):  # no identity to refuse was given: nothing to check
        refused = [item for item in items if "refused_url" in getattr(item, "fixturenames", ())]
        if refused:
            config.hook.pytest_deselected(items=refused)
            items[:] = [item for item in items if item not in refused]
    url: str | None = config.getoption("store_url")
    try:
        if not url or find(urlsplit(url).scheme.lower()).shared:
            return
    except coord.ConfigurationError:
        return  # an unknown scheme: every test fails on it, with connect()'s message
    suite = {str(path) for path in SUITE}
    alone = [
        item
        for item in items
        if isinstance(item, pytest.Function) and str(item.path) in suite and "process_url" in item.fixturenames
    ]
    if alone:
        config.hook.pytest_deselected(items=alone)
        items[:] = [item for item in items if item not in alone]


def fresh_namespace(url: str) -> str:
    """``url`` with a ``prefix`` of its own, below the URL's own prefix if it has one."""
    tag = f"t{uuid.uuid4().hex[:12]}"
    base = dict(parse_qsl(urlsplit(url).query)).get("prefix", "").strip("/")
    prefix = f"{base}/{tag}" if base else tag
    # A later option wins, so the URL's own prefix needs no removing.
    return f"{url}{'&' if '?' in url else '?'}prefix={quote(prefix, safe='/')}"


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty namespace on the store under test (``--store-url``)."""
    url: str | None = request.config.getoption("store_url")
    if not url:
        pytest.fail("the conformance suite needs a store: give --store-url URL, or override the store_url fixture")
    return fresh_namespace(url)


@pytest.fixture
def process_url(store_url: str) -> str:
    """Like ``store_url``, for tests in which child processes open the same store."""
    return store_url


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], coord.Store]]:
    """Open Stores on ``store_url`` (another client of the same namespace each call); all closed after the test."""
    stores: list[coord.Store] = []

    def opener() -> coord.Store:
        try:
            store = coord.connect(store_url)
        except coord.StoreUnavailable as exc:
            pytest.fail(f"the server behind {store_url} does not answer: {exc}")
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], coord.Store]) -> coord.Store:
    """An open Store on a fresh namespace of the store under test."""
    return open_store()
