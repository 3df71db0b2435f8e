"""The backend table: every backend coord knows, by URL scheme, in one place.

``connect()`` opens a backend through it, importing the backend's module
only then (so a client library is imported only when its backend is used).
The tests' backend fixture, ``scripts/servers.py``, the import-rule test and
the benchmarks read it too, so adding a backend is one module under
``coord/backends/`` and one row here (docs/backends.md, "How to add a
backend").

Backends outside this repository register through the entry-point group
``coord.backends``: the entry point's name is the URL scheme and its value
the Store class (``myscheme = "mypackage.store:MyStore"``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "Backend", "find", "server_backends"]

ENTRY_POINT_GROUP = "coord.backends"


@dataclass(frozen=True)
class Backend:
    """One row of the table."""

    name: str
    #: URL schemes that open it; the first is its name in URLs coord prints.
    schemes: tuple[str, ...]
    #: ``"module:Class"`` of its Store, imported on first use.
    target: str
    #: The pip extra that brings its client library (``None``: nothing to install).
    extra: str | None = None
    #: The environment variable holding a test server's URL (``None``: needs no server).
    test_env: str | None = None
    #: The test server ``scripts/servers.py`` starts for it.
    server: str | None = None
    #: Whether several processes can share one store (``memory://`` is one process's).
    shared: bool = True

    def load(self) -> type[Store]:
        """The Store class; ``ConfigurationError`` naming the extra if its client library is missing."""
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            hint = f": pip install 'coord[{self.extra}]'" if self.extra else ""
            raise ConfigurationError(
                f"the {self.schemes[0]}:// backend needs {exc.name!r}, which is not installed{hint}"
            ) from exc
        store_class: type[Store] = getattr(module, class_name)
        return store_class


BACKENDS: tuple[Backend, ...] = (
    Backend("memory", ("memory",), "coord.backends.memory:MemoryStore", shared=False),
    Backend("sqlite", ("sqlite",), "coord.backends.sqlite:SQLiteStore"),
    Backend("etcd", ("etcd", "etcds"), "coord.backends.etcd:EtcdStore", "etcd", "COORD_TEST_ETCD", "etcd"),
    Backend("etcd2", ("etcd2", "etcd2s"), "coord.backends.etcd2:Etcd2Store", "etcd2", "COORD_TEST_ETCD2", "etcd"),
    Backend(
        "zookeeper",
        ("zookeeper", "zk", "zookeepers"),
        "coord.backends.zookeeper:ZooKeeperStore",
        "zookeeper",
        "COORD_TEST_ZOOKEEPER",
        "zookeeper",
    ),
    Backend("redis", ("redis", "rediss"), "coord.backends.redis:RedisStore", "redis", "COORD_TEST_REDIS", "redis"),
    Backend(
        "consul", ("consul", "consuls"), "coord.backends.consul:ConsulStore", "consul", "COORD_TEST_CONSUL", "consul"
    ),
)


def find(scheme: str) -> Backend:
    """The backend of ``scheme``: coord's own, else one registered under the entry-point group."""
    for backend in BACKENDS:
        if scheme in backend.schemes:
            return backend
    from importlib.metadata import entry_points  # here: only an unknown scheme needs it, and it is slow to import

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == scheme:
            return Backend(scheme, (scheme,), point.value)
    known = sorted(s for backend in BACKENDS for s in backend.schemes)
    raise ConfigurationError(f"unknown store scheme {scheme!r}; coord knows {', '.join(known)}")


def server_backends() -> list[Backend]:
    """The backends that need a server to test against."""
    return [backend for backend in BACKENDS if backend.test_env is not None]
