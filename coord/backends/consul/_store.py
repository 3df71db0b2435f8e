"""``consul://host:port`` (``consuls://`` for TLS): the Store on Consul's KV, sessions and transactions.

How the Store maps onto Consul (one HTTP request each unless said otherwise):

- ``revision`` is the key's ``ModifyIndex`` and ``created`` its ``CreateIndex``.
  Both are indexes of Consul's raft log, one per write, cluster-wide (not
  per key or per table), so ``created`` increases in creation order across
  all keys; keys created by one transaction share it.
- ``get``, ``exists``: ``GET /v1/kv/<key>``; ``list``: the same with
  ``?recurse`` on ``<prefix>/``. Reads are Consul's default consistency
  (served by the leader).
- every write is one ``PUT /v1/txn`` (see ``_txn``): ``put``, ``atomic_put``
  (``check-not-exists`` or ``check-index`` first), ``atomic_delete``,
  ``transaction()``; ``delete`` is ``get`` + ``delete`` (a rolled-back ``get``
  says the key was absent); ``delete_tree`` one ``delete-tree``.
  ``put(ttl=)`` creates the key's session first: two requests.
- leases are sessions (``_sessions``): ``lease()`` one request, a renewal
  ``PUT /v1/session/renew``, a revoke ``PUT /v1/session/destroy`` (Consul
  deletes the keys it held).
- watches: see ``_watches``.

Options: ``token`` (or ``$CONSUL_HTTP_TOKEN``), ``ca``, ``cert``, ``key``
(TLS, with ``consuls://``), ``dc``, ``root`` (default ``coord``), ``history``
(seconds a log record lives at least, default 30), ``watch_wait`` (a blocking
query's wait, default 10 s), ``watch_retry``.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError
from ..._lease import Lease
from ..._store import Store, labelled
from ..._txn import Op
from ..._types import KVPair, ServerTime
from ..._url import Location
from ..._watch import WatchFeed
from ._boundary import BACKEND, DEFAULT_PORT, Answer, Boundary, Settings
from ._layout import Layout, encode, lease_id, new_nonce, pair, record_value, session_of
from ._sessions import Sessions, session_ttl
from ._txn import Plan
from ._watches import ConsulWatch

__all__ = ["ConsulStore"]

#: How many times a transaction is sent again after Consul rolled it back for a reason of coord's own.
_RESENDS = 16
#: Reads (and checks) per transaction of reads only: Consul takes at most 64 operations.
_MAX_READS = 64


class ConsulStore(Store):
    """A Store on a Consul agent; see the module docstring for how each operation maps."""

    backend = BACKEND
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {
        "token": str,
        "tls_ca": str,
        "tls_cert": str,
        "tls_key": str,
        "dc": str,
        "root": str,
        "history": float,
        "watch_wait": float,
        "watch_retry": float,
    }

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        dc: str | None = None,
        root: str = "coord",
        history: float = 30.0,
        watch_wait: float = 10.0,
        watch_retry: float | None = None,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        for name, number in (("timeout", timeout), ("history", history), ("watch_wait", watch_wait)):
            if not 0 < number < math.inf:
                raise ConfigurationError(f"{name} must be positive and finite, not {number!r}", backend=BACKEND)
        if (tls_cert is None) != (tls_key is None):
            raise ConfigurationError("give tls_cert and tls_key together", backend=BACKEND)
        for name, path in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(f"{name}: no such file: {path}", backend=BACKEND)
        if not root.strip("/"):
            raise ConfigurationError("root must not be empty", backend=BACKEND)
        tls = location.scheme == "consuls" or tls_ca is not None or tls_cert is not None
        settings = Settings(location.endpoints(DEFAULT_PORT), tls, tls_ca, tls_cert, tls_key, dc, float(timeout))
        self._consul = Boundary(settings, token or os.environ.get("CONSUL_HTTP_TOKEN") or None)
        self._layout = Layout(root)
        self._sessions = Sessions(self._consul, self.clock, float(history))
        self._wait = float(watch_wait)
        self._retry = max(float(timeout), 30.0) if watch_retry is None else float(watch_retry)
        self._feeds: dict[WatchFeed, ConsulWatch] = {}
        self._feeds_lock = threading.Lock()
        try:
            self._request("GET", "/v1/kv/" + self._layout.data(""))  # is anyone there, and does it let us in?
        except CoordError:
            self._consul.close()
            raise

    def describe(self) -> str:
        return self._consul.describe()

    def _server_time(self) -> ServerTime:
        answer = self._request("GET", "/v1/status/leader")
        return ServerTime.from_http_date(answer.date, "Consul HTTP Date header")

    # -- reads ---------------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        answer = self._request("GET", "/v1/kv/" + self._layout.data(key))
        return pair(key, answer.json()[0]) if answer.code == 200 else None

    def _list(self, prefix: str) -> list[KVPair]:
        answer = self._request("GET", "/v1/kv/" + self._layout.tree(prefix), {"recurse": ""})
        entries = answer.json() if answer.code == 200 else []
        return [pair(self._layout.key_of(entry["Key"]), entry) for entry in entries or []]

    def _request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Answer:
        answer = self._consul.call(lambda _: self._consul.send(method, path, params))
        if answer.code not in (200, 404):
            raise CoordError(f"Consul answered {answer.code}: {answer.body[:200]}", backend=BACKEND)
        return answer

    # -- writes --------------------------------------------------------------------------

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        written = self._single(Op("put", key, value, ttl=ttl, lease=lease))
        assert isinstance(written, KVPair)
        return written

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        written = self._single(Op("put", key, value, revision, ttl, lease))
        assert isinstance(written, KVPair)
        return written

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._single(Op("delete", key, expect=revision))

    def _single(self, op: Op) -> object:
        try:
            return self._transaction([op])[0]
        except CoordError as exc:
            exc.key = None  # the Store names the key as its caller wrote it
            raise

    def _delete(self, key: str) -> bool:
        data = self._layout.data(key)
        nonce = new_nonce()

        def body(log: str) -> list[dict[str, Any]]:
            record = encode(record_value("delete", 0))
            return [
                {"KV": {"Verb": "get", "Key": data}},
                {"KV": {"Verb": "delete", "Key": data}},
                {"KV": {"Verb": "lock", "Key": self._layout.record_key(key, nonce, 0), "Value": record,
                        "Session": log}},
            ]  # fmt: skip

        log = self._sessions.log_session()
        for _ in range(_RESENDS):
            retried = [False]
            answer = self._txn(body(log), retried)
            if answer.code == 200:
                return True
            errors = (answer.json() or {}).get("Errors") or []
            if any(error.get("OpIndex") == 0 for error in errors):
                # The key is not there: absent before, or deleted by an earlier attempt whose reply was lost.
                return retried[0]
            log = self._sessions.log_session(replace=log)
        raise CoordError("Consul kept refusing the delete's log record", backend=BACKEND)

    def _delete_tree(self, prefix: str) -> None:
        answer = self._txn([{"KV": {"Verb": "delete-tree", "Key": self._layout.tree(prefix)}}])
        if answer.code != 200:
            raise CoordError(f"Consul refused delete-tree: {answer.body[:200]}", backend=BACKEND)

    def _txn(self, body: list[dict[str, Any]], retried: list[bool] | None = None) -> Answer:
        data = json.dumps(body)

        def attempt(again: bool) -> Answer:
            if retried is not None and again:
                retried[0] = True
            return self._consul.send("PUT", "/v1/txn", body=data)

        answer = self._consul.call(attempt)
        if answer.code not in (200, 409):
            raise CoordError(f"Consul refused the transaction: {answer.code} {answer.body[:200]}", backend=BACKEND)
        return answer

    def _transaction(self, ops: list[Op]) -> list[object]:
        if not ops:
            return []
        if len(ops) > _MAX_READS and not any(op.writes for op in ops):
            # Consul takes 64 operations a transaction: many reads go in several (each one state, not all one).
            return [r for n in range(0, len(ops), _MAX_READS) for r in self._transaction(ops[n : n + _MAX_READS])]
        sessions: list[str | None] = []
        own: dict[float, str] = {}
        for op in ops:
            if op.kind == "put" and op.ttl is not None and op.ttl not in own:
                own[op.ttl] = self._sessions.create(session_ttl(op.ttl, self._sessions.minimum), "coord ttl key")
            if op.kind != "put":
                sessions.append(None)
            elif op.lease is not None:
                sessions.append(session_of(op.lease.id))
            else:
                sessions.append(own[op.ttl] if op.ttl is not None else None)
        plan = Plan(ops, sessions, self._layout, new_nonce(), self._sessions.log_session())
        for _ in range(_RESENDS):
            retried = [False]
            answer = self._txn(plan.body(), retried)
            reply = answer.json() or {}
            if answer.code == 200:
                return plan.results(reply.get("Results") or [])
            problem = plan.problem(reply.get("Errors") or [])
            if problem.kind == "condition":
                if retried[0] and (results := self._recovered(plan)) is not None:
                    return results
                plan.raise_condition(problem)
            if problem.kind == "lease":
                assert problem.error is not None
                with labelled(ops[problem.op].key):
                    raise problem.error
            if problem.kind == "log":
                plan.log_session = self._sessions.log_session(replace=plan.log_session)
            elif problem.kind in ("held", "stale"):
                self._take_over(plan)
        raise CoordError("Consul kept rolling the transaction back", backend=BACKEND)

    def _take_over(self, plan: Plan) -> None:
        """Read the keys the transaction puts: those another session holds are unlocked from it first."""
        for n, op in enumerate(plan.ops):
            if op.kind != "put":
                continue
            data = self._layout.data(op.key)
            answer = self._request("GET", "/v1/kv/" + data)
            entry = answer.json()[0] if answer.code == 200 else None
            holder = entry.get("Session") if entry else None
            if entry is not None and holder and holder != plan.sessions[n]:
                plan.steal[data] = (int(entry["ModifyIndex"]), str(holder))
            else:
                plan.steal.pop(data, None)

    def _recovered(self, plan: Plan) -> list[object] | None:
        """After a retry failed a condition: the results of the earlier attempt, if it committed."""
        keys = {self._layout.data(op.key) for op in plan.ops if op.writes}
        current: dict[str, dict[str, Any] | None] = {}
        for data in keys:
            answer = self._request("GET", "/v1/kv/" + data)
            current[data] = answer.json()[0] if answer.code == 200 else None
        if not plan.committed(current):
            return None
        results: list[object] = []
        for op in plan.ops:
            entry = current.get(self._layout.data(op.key))
            if op.kind == "put" and entry is not None:
                results.append(pair(op.key, entry))
            elif op.kind == "delete":
                results.append(True)
            elif op.kind == "get":
                results.append(self._get(op.key))
            elif op.kind == "list":
                results.append(self._list(op.key))
            else:
                results.append(None)
        return results

    # -- leases --------------------------------------------------------------------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        sid, granted = self._sessions.lease(ttl)
        return lease_id(sid), granted

    def _lease_hold(self, ttl: float) -> float:
        return self._sessions.hold(ttl)

    def _lease_keepalive(self, lease: Lease) -> bool:
        return self._sessions.renew(session_of(lease.id))

    def _lease_revoke(self, lease: Lease) -> None:
        self._sessions.destroy(session_of(lease.id))

    # -- watches and closing ------------------------------------------------------------

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        watch = ConsulWatch(feed, self._consul.sibling(), self._layout, key, tree, self._wait, self._retry, self._strip)
        with self._feeds_lock:
            self._feeds[feed] = watch
        watch.start(start_revision)

    def _unwatch(self, feed: WatchFeed) -> None:
        with self._feeds_lock:
            watch = self._feeds.pop(feed, None)
        if watch is not None:
            watch.close()

    def _close(self) -> None:
        with self._feeds_lock:
            watches = list(self._feeds.values())
            self._feeds.clear()
        for watch in watches:
            watch.close()
        self._consul.close()
