"""The leader elections ``failover`` compares: coord's ``Election`` and its peers', behind one interface.

| backend | peers |
| --- | --- |
| zookeeper | kazoo ``Election``; tooz ``kazoo://`` leader election |
| redis | tooz ``redis://`` leader election |
| etcd, sqlite | none (pyetcd and tooz's file driver have no election) |

tooz elects only while the candidate polls ``run_watchers()``; a candidate
here polls every ``poll`` seconds, which adds up to that to its failover.
tooz's redis driver cannot stand down; its leader resigns by ``stop()``,
which releases the leader lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any, Protocol

import coord

from ._endpoints import Endpoint

__all__ = ["ELECTION_PEERS", "CandidateHandle", "election_subjects", "open_candidate"]

ELECTION_PEERS: dict[str, dict[str, str]] = {
    "zookeeper": {"kazoo Election": "kazoo", "tooz zookeeper": "tooz"},
    "redis": {"tooz redis": "tooz"},
}


class CandidateHandle(Protocol):
    """A candidate: ``campaign`` blocks until it leads; ``deadline`` is its lease's, where it has one."""

    def campaign(self) -> None: ...

    def resign(self) -> None: ...

    def deadline(self) -> float | None: ...


def election_subjects(endpoint: Endpoint, name: str, *, ttl: float, peers: bool, poll: float) -> list[dict[str, Any]]:
    subjects: list[dict[str, Any]] = [
        {"impl": "coord", "label": "coord Election", "url": endpoint.coord_url(name), "name": name, "ttl": ttl}
    ]
    for label in ELECTION_PEERS.get(endpoint.backend, {}) if peers else ():
        spec = {"label": label, "name": name, "ttl": ttl, "hosts": endpoint.hosts, "poll": poll}
        if label == "kazoo Election":
            spec["impl"] = "kazoo"
        else:
            scheme = "kazoo" if endpoint.backend == "zookeeper" else "redis"
            spec |= {"impl": "tooz", "url": f"{scheme}://{endpoint.hosts}?timeout={int(ttl)}&lock_timeout={int(ttl)}"}
        subjects.append(spec)
    return subjects


def open_candidate(spec: dict[str, Any]) -> CandidateHandle:
    if spec["impl"] == "coord":
        return _CoordCandidate(spec)
    if spec["impl"] == "kazoo":
        return _KazooCandidate(spec)
    if spec["impl"] == "tooz":
        return _ToozCandidate(spec)
    raise ValueError(f"unknown election implementation {spec['impl']!r}")


class _CoordCandidate:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.store = coord.connect(spec["url"])
        self.election = coord.Election(spec["name"], store=self.store, ttl=spec["ttl"])
        self.leadership: coord.Leadership | None = None

    def campaign(self) -> None:
        self.leadership = self.election.campaign()

    def resign(self) -> None:
        assert self.leadership is not None
        self.leadership.resign()

    def deadline(self) -> float | None:
        return None if self.leadership is None else self.leadership.lease.deadline


class _KazooCandidate:
    """kazoo's ``Election.run(func)`` leads while ``func`` runs: here, until ``resign``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from kazoo.client import KazooClient

        self.client = KazooClient(hosts=spec["hosts"], timeout=spec["ttl"])
        self.client.start()
        self.election = self.client.Election(f"/{spec['name']}", uuid.uuid4().hex)
        self.leading = threading.Event()
        self.stepping_down = threading.Event()
        self.thread = threading.Thread(target=self.election.run, args=(self._lead,), daemon=True)

    def _lead(self) -> None:
        self.leading.set()
        self.stepping_down.wait()

    def campaign(self) -> None:
        self.thread.start()
        self.leading.wait()

    def resign(self) -> None:
        self.stepping_down.set()
        self.thread.join()  # run() has released the lock

    def deadline(self) -> float | None:
        return None


class _ToozCandidate:
    def __init__(self, spec: dict[str, Any]) -> None:
        from tooz import coordination

        self.coordinator = coordination.get_coordinator(spec["url"], uuid.uuid4().hex.encode())
        self.coordinator.start(start_heart=True)
        self.group = spec["name"].encode()
        with contextlib.suppress(coordination.GroupAlreadyExist):
            self.coordinator.create_group(self.group).get()
        self.coordinator.join_group(self.group).get()
        self.poll = spec["poll"]
        self.elected = threading.Event()
        self.coordinator.watch_elected_as_leader(self.group, lambda event: self.elected.set())

    def campaign(self) -> None:
        while not self.elected.is_set():
            self.coordinator.run_watchers()
            if not self.elected.is_set():
                time.sleep(self.poll)

    def resign(self) -> None:
        import tooz

        try:
            self.coordinator.stand_down_group_leader(self.group)
        except tooz.NotImplemented:
            self.coordinator.stop()  # the redis driver's only way down: stop() releases its locks

    def deadline(self) -> float | None:
        return None
