"""The locks a benchmark compares: coord's ``Lock`` on each backend, and its peers' on the same server.

A *subject* is a JSON-able spec (``impl``, ``label`` and how to connect),
built in the parent by ``lock_subjects`` and opened in a worker by
``open_lock``. Peers are imported only there, so a run without ``--peers``
needs none of them.

| backend | peers |
| --- | --- |
| redis | redis-py ``Lock``; tooz ``redis://`` |
| zookeeper | kazoo ``Lock``; tooz ``kazoo://`` |
| etcd | pyetcd's ``client.lock(name, ttl)`` (tooz's etcd driver needs an HTTP gateway client: not measured) |
| sqlite | tooz ``file://`` (fcntl locks on one host; neither fair nor fenced) |
| memory | none |
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import coord

from ._counting import OperationCounter, count_operations
from ._endpoints import Endpoint

__all__ = ["LOCK_PEERS", "LockHandle", "lock_subjects", "open_lock", "peer_modules"]

#: The peers of each backend, by label, and the module each needs.
LOCK_PEERS: dict[str, dict[str, str]] = {
    "redis": {"redis-py Lock": "redis", "tooz redis": "tooz"},
    "zookeeper": {"kazoo Lock": "kazoo", "tooz zookeeper": "tooz"},
    "etcd": {"pyetcd lock": "pyetcd"},
    "etcd2": {},  # no peer speaks etcd's v2 API (tooz dropped its v2 driver)
    "sqlite": {"tooz file": "tooz"},
    "memory": {},
}


class LockHandle(Protocol):
    """What a benchmark needs of a lock: take it (``False`` after ``timeout``), give it back, disconnect."""

    def acquire(self, timeout: float | None) -> bool: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def peer_modules(backends: list[str]) -> set[str]:
    return {module for backend in backends for module in LOCK_PEERS.get(backend, {}).values()}


def lock_subjects(endpoint: Endpoint, name: str, *, ttl: float, peers: bool) -> list[dict[str, Any]]:
    """coord's lock on ``endpoint`` first, then (with ``peers``) each peer's, all named ``name``."""
    subjects: list[dict[str, Any]] = [
        {"impl": "coord", "label": "coord Lock", "url": endpoint.coord_url(name), "name": name, "ttl": ttl}
    ]
    if not peers:
        return subjects
    address = {"host": endpoint.host, "port": endpoint.port, "name": name, "ttl": ttl}
    for label in LOCK_PEERS.get(endpoint.backend, {}):  # a backend without peers measured: coord alone
        spec: dict[str, Any] = {"label": label, **address}
        if label == "redis-py Lock":
            spec["impl"] = "redis-py"
        elif label == "pyetcd lock":
            spec["impl"] = "pyetcd"
        elif label == "kazoo Lock":
            spec |= {"impl": "kazoo", "hosts": endpoint.hosts}
        elif label == "tooz file":
            spec |= {"impl": "tooz", "url": f"file://{endpoint.scratch() / name}"}
        else:
            scheme = "kazoo" if endpoint.backend == "zookeeper" else "redis"
            spec |= {"impl": "tooz", "url": f"{scheme}://{endpoint.hosts}?timeout={int(ttl)}&lock_timeout={int(ttl)}"}
        subjects.append(spec)
    return subjects


def open_lock(spec: dict[str, Any], counter: OperationCounter | None = None) -> LockHandle:
    """Connect and make the lock of ``spec``; with ``counter``, count coord's store operations in it."""
    impl = spec["impl"]
    if impl == "coord":
        return _CoordLock(spec, counter)
    if impl == "redis-py":
        return _RedisLock(spec)
    if impl == "kazoo":
        return _KazooLock(spec)
    if impl == "pyetcd":
        return _EtcdLock(spec)
    if impl == "tooz":
        return _ToozLock(spec)
    raise ValueError(f"unknown lock implementation {impl!r}")


class _CoordLock:
    def __init__(self, spec: dict[str, Any], counter: OperationCounter | None) -> None:
        self.store = coord.connect(spec["url"])
        if counter is not None:
            count_operations(self.store, counter)
        self.lock = coord.Lock(spec["name"], store=self.store, ttl=spec["ttl"])

    def acquire(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=timeout)

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.store.close()


class _RedisLock:
    def __init__(self, spec: dict[str, Any]) -> None:
        import redis

        self.client = redis.Redis(host=spec["host"], port=spec["port"])
        # The defaults a user gets: a waiter polls every 0.1 s.
        self.lock = self.client.lock(spec["name"], timeout=spec["ttl"])

    def acquire(self, timeout: float | None) -> bool:
        return bool(self.lock.acquire(blocking=True, blocking_timeout=timeout))

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.client.close()


class _KazooLock:
    def __init__(self, spec: dict[str, Any]) -> None:
        from kazoo.client import KazooClient

        self.client = KazooClient(hosts=spec["hosts"], timeout=spec["ttl"])
        self.client.start()
        self.lock = self.client.Lock(f"/{spec['name']}", uuid.uuid4().hex)

    def acquire(self, timeout: float | None) -> bool:
        from kazoo.exceptions import LockTimeout

        try:
            return bool(self.lock.acquire(blocking=True, timeout=timeout))
        except LockTimeout:  # kazoo raises where the others return False
            return False

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.client.stop()
        self.client.close()


class _EtcdLock:
    def __init__(self, spec: dict[str, Any]) -> None:
        import pyetcd

        self.client = pyetcd.client(host=spec["host"], port=spec["port"])
        self.lock = self.client.lock(spec["name"], ttl=int(spec["ttl"]))

    def acquire(self, timeout: float | None) -> bool:
        return bool(self.lock.acquire(timeout=timeout))

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.client.close()


class _ToozLock:
    def __init__(self, spec: dict[str, Any]) -> None:
        from tooz import coordination

        self.coordinator = coordination.get_coordinator(spec["url"], uuid.uuid4().hex.encode())
        self.coordinator.start(start_heart=True)
        self.lock: Any = self.coordinator.get_lock(spec["name"].encode())  # typed timeout: int, takes float
        self.timeouts: tuple[type[BaseException], ...] = ()
        if spec["url"].startswith("kazoo"):
            from kazoo.exceptions import LockTimeout

            self.timeouts = (LockTimeout,)  # tooz's zookeeper driver lets kazoo's timeout through

    def acquire(self, timeout: float | None) -> bool:
        try:
            return bool(self.lock.acquire(blocking=True, timeout=timeout))
        except self.timeouts:
            return False

    def release(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.coordinator.stop()
