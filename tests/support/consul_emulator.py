"""A Consul HTTP API EMULATOR, written from Consul's documentation and source, for coord's tests: not Consul.

No Consul server can be installed on the machines coord is tested on, so the
``consul://`` backend is tested against this single-process stand-in (and,
when ``COORD_TEST_CONSUL`` names a real agent, against that instead). It
serves, on 127.0.0.1, what coord uses of the API:

- ``/v1/kv/<key>``: GET (``recurse``, ``keys``, ``separator``, ``raw``,
  blocking ``index``/``wait``), PUT (``cas``, ``acquire``, ``release``,
  ``flags``), DELETE (``cas``, ``recurse``), with Consul's indexes: one
  raft-like index for every write; ``CreateIndex``/``ModifyIndex``/``LockIndex``;
  a rewrite that changes nothing keeps ``ModifyIndex``; tombstones keep a
  prefix's ``X-Consul-Index`` from going backwards after a delete.
- blocking queries as Consul's ``blockingQuery``: answer at once if the
  result's index is above ``index``, else wait until what the query reads
  changes or ``wait`` (default 5 min, at most 10 min, plus up to wait/16 of
  jitter) passes; the index is never below 1.
- ``/v1/txn``: the KV verbs (set, cas, lock, unlock, get, get-or-empty,
  get-tree, check-index, check-session, check-not-exists, delete,
  delete-tree, delete-cas), all or nothing, 200 or 409 with ``Errors``; at
  most 64 operations (as before Consul 1.16; later releases take 128); the
  body and value size limits.
- ``/v1/session/create|renew|destroy|info|list``: ``TTL`` between the
  minimum (``--min-session-ttl``, Consul's ``session_ttl_min``, default 10s)
  and 24h; a session not renewed is invalidated ``--ttl-factor`` times its
  TTL after its last renewal (Consul's leader uses 2; the docs promise only
  "not before the TTL", so a test may pick any point from 1 to 2);
  ``Behavior`` release or delete; ``LockDelay`` (default 15s) refusing
  acquisitions of the keys an invalidated session held.
- ACLs: with ``--acl-token`` every request must carry that token
  (``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=``): 403 otherwise.
- TLS: ``--tls-cert``/``--tls-key`` serve HTTPS; ``--tls-ca`` also requires
  a client certificate signed by that CA (Consul's ``verify_incoming``).
- ``/v1/status/leader`` for readiness.

What it does not do: ACL policies (one token may do everything), datacenters
other than its own (``dc`` is accepted and ignored), namespaces, health
checks bound to sessions, consistency modes (every read is consistent), the
catalog, and raft itself (one process, so no leader change resets session
timers; but a restart with ``--data-dir`` keeps the data and restarts every
session's timer in full, as a newly elected leader does). Run it as ``python consul_emulator.py --port 8500 [options]``.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import json
import os
import pickle
import random
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_TTL = 86400.0
MAX_TXN_OPS = 64  # agent/txn_endpoint.go's maxTxnOps (recent releases take 128)
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_WRITE_VERBS = {"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"}


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def parse_duration(text: str) -> float:
    """A Go duration ("10s", "1.5s", "100ms", "24h0m0s"), or a bare number of nanoseconds, in seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text) / 1e9
    parts = re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"time: invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def go_duration(seconds: float) -> str:
    """Seconds as Go prints a Duration ("10s", "1.5s", "24h0m0s")."""
    if seconds >= 3600:
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{int(hours)}h{int(minutes)}m{secs:g}s"
    if seconds >= 60:
        minutes, secs = divmod(seconds, 60)
        return f"{int(minutes)}m{secs:g}s"
    return f"{seconds:g}s"


class Table:
    """A dict with its keys kept sorted, for prefix scans in O(log n + k) (Consul's radix tree)."""

    def __init__(self, items: dict[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(items or {})
        self._keys = sorted(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def pop(self, key: str, default: Any = None) -> Any:
        if key not in self._data:
            return default
        del self._keys[bisect.bisect_left(self._keys, key)]
        return self._data.pop(key)

    def prefix(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._keys, prefix)
        end = bisect.bisect_left(self._keys, prefix + "\U0010ffff\U0010ffff") if prefix else len(self._keys)
        return self._keys[start:end]

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def plain(self) -> dict[str, Any]:
        return dict(self._data)


class Overlay:
    """A transaction's view of a Table: its writes kept apart until ``commit``."""

    def __init__(self, base: Table) -> None:
        self.base = base
        self.changes: dict[str, Any] = {}  # key -> value, or _GONE

    def get(self, key: str, default: Any = None) -> Any:
        value = self.changes[key] if key in self.changes else self.base.get(key, _GONE)
        return default if value is _GONE else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _GONE) is not _GONE

    def __setitem__(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def pop(self, key: str, default: Any = None) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            return default
        self.changes[key] = _GONE
        return value

    def prefix(self, prefix: str) -> list[str]:
        keys = set(self.base.prefix(prefix)) | {k for k in self.changes if k.startswith(prefix)}
        return sorted(k for k in keys if k in self)

    def commit(self) -> dict[str, Any]:
        """Apply the writes to the Table; what changed (None: deleted)."""
        done: dict[str, Any] = {}
        for key, value in self.changes.items():
            if value is _GONE:
                if self.base.pop(key, _GONE) is not _GONE:
                    done[key] = None
            elif self.base.get(key) is not value:
                self.base[key] = value
                done[key] = value
        return done


_GONE = object()


class State:
    """The data of one emulated datacenter, guarded by ``cond`` (whose notify wakes blocking queries)."""

    def __init__(self, min_ttl: float, ttl_factor: float, data_dir: str | None = None) -> None:
        self.cond = threading.Condition()
        self.data_dir = data_dir
        self.index = 1
        self.kv_index = 0
        self.kvs = Table()
        self.tombstones = Table()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.session_index = 0
        self.deadlines: dict[str, float] = {}
        self.lock_delays: dict[str, float] = {}
        self.min_ttl = min_ttl
        self.ttl_factor = ttl_factor
        self.invalidated: list[tuple[str, float]] = []  # (session, when): for tests of the emulator's timing
        self._load()
        self._reaper = threading.Thread(target=self._reap, daemon=True, name="consul-emulator-sessions")
        self._reaper.start()

    # -- persistence: a killed and restarted emulator keeps its data, as Consul's raft log does ------------

    _SAVED = ("index", "kv_index", "kvs", "tombstones", "sessions", "session_index")
    _COMPACT = 2000  # journal records between two snapshots

    def _load(self) -> None:
        self._journal_records = 0
        if self.data_dir is None:
            return
        if os.path.exists(self._path("snapshot")):
            with open(self._path("snapshot"), "rb") as file:
                saved = pickle.load(file)
            for name in self._SAVED:
                setattr(self, name, Table(saved[name]) if name in ("kvs", "tombstones") else saved[name])
        if os.path.exists(self._path("journal")):
            with open(self._path("journal"), "rb") as file:
                while True:
                    try:
                        record = pickle.load(file)
                    except (EOFError, pickle.UnpicklingError):
                        break  # a record cut short by the kill: it was never answered
                    self._replay(record)
        with self.cond:
            for sid in self.sessions:  # a new leader restarts every session's timer in full (initializeSessionTimers)
                self._arm(sid)

    def _replay(self, record: dict[str, Any]) -> None:
        self.index, self.kv_index, self.session_index = record["indexes"]
        for name in ("kvs", "tombstones", "sessions"):
            table = getattr(self, name)
            for key, value in record[name].items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value

    def save(self, kvs: dict[str, Any], tombstones: dict[str, Any], sessions: dict[str, Any]) -> None:
        """Append what a write changed to the journal (lock held, before the answer): a kill loses nothing answered."""
        if self.data_dir is None:
            return
        record: dict[str, Any] = {"indexes": (self.index, self.kv_index, self.session_index)}
        record.update(kvs=kvs, tombstones=tombstones, sessions=sessions)
        self._journal_records += 1
        if self._journal_records >= self._COMPACT:
            oldest = sorted(self.tombstones.items(), key=lambda item: item[1])
            for key, _ in oldest[: max(0, len(oldest) - 5000)]:
                self.tombstones.pop(key)  # Consul reaps tombstones too (tombstone_ttl)
            saved = {name: getattr(self, name) for name in self._SAVED}
            saved.update(kvs=self.kvs.plain(), tombstones=self.tombstones.plain())
            with open(self._path("snapshot.new"), "wb") as file:
                pickle.dump(saved, file)
            os.replace(self._path("snapshot.new"), self._path("snapshot"))
            open(self._path("journal"), "wb").close()
            self._journal_records = 0
            return
        with open(self._path("journal"), "ab") as file:
            pickle.dump(record, file)

    def _path(self, name: str) -> str:
        assert self.data_dir is not None
        return os.path.join(self.data_dir, name)

    # -- KV reads -------------------------------------------------------------------

    def kv_max(self) -> int:
        return max(1, self.kv_index)

    def prefix_index(self, prefix: str) -> int:
        if not prefix:
            return self.kv_max()
        found = [self.kvs[k]["ModifyIndex"] for k in self.kvs.prefix(prefix)]
        found += [self.tombstones[k] for k in self.tombstones.prefix(prefix)]
        return max(found) if found else self.kv_max()

    def listing(self, prefix: str) -> list[dict[str, Any]]:
        return [self.kvs[k] for k in self.kvs.prefix(prefix)]

    # -- KV writes (at index ``idx``, on ``kvs``: the live dict or a transaction's copy) --------------

    @staticmethod
    def _set(kvs: Any, idx: int, entry: dict[str, Any], update_session: bool) -> dict[str, Any]:
        existing = kvs.get(entry["Key"])
        entry["CreateIndex"] = existing["CreateIndex"] if existing else idx
        if not update_session:
            entry["Session"] = existing["Session"] if existing else ""
        entry.setdefault("LockIndex", existing["LockIndex"] if existing else 0)
        same = existing is not None and all(
            existing.get(f) == entry.get(f) for f in ("Value", "Flags", "Session", "LockIndex")
        )
        entry["ModifyIndex"] = existing["ModifyIndex"] if same and existing else idx
        if not same:
            kvs[entry["Key"]] = entry
        stored: dict[str, Any] = kvs[entry["Key"]]
        return stored

    def _lock(self, kvs: Any, idx: int, entry: dict[str, Any]) -> dict[str, Any] | None:
        session = entry.get("Session") or ""
        if not session:
            raise ValueError("missing session")
        if session not in self.sessions:
            raise ValueError(f"invalid session {json.dumps(session)}")
        existing = kvs.get(entry["Key"])
        if existing is not None and existing["Session"] == session:
            entry["LockIndex"] = existing["LockIndex"]
        elif existing is not None and existing["Session"]:
            return None
        else:
            entry["LockIndex"] = (existing["LockIndex"] if existing else 0) + 1
        return self._set(kvs, idx, entry, True)

    @staticmethod
    def _unlock(kvs: Any, idx: int, entry: dict[str, Any]) -> dict[str, Any] | None:
        if not entry.get("Session"):
            raise ValueError("missing session")
        existing = kvs.get(entry["Key"])
        if existing is None or existing["Session"] != entry["Session"]:
            return None
        entry["Session"] = ""
        entry["LockIndex"] = existing["LockIndex"]
        return State._set(kvs, idx, entry, True)

    def _cas(self, kvs: Any, idx: int, entry: dict[str, Any], cas: int) -> dict[str, Any] | None:
        existing = kvs.get(entry["Key"])
        if (cas == 0 and existing is not None) or (cas != 0 and (existing is None or existing["ModifyIndex"] != cas)):
            return None
        return self._set(kvs, idx, entry, False)

    @staticmethod
    def _delete(kvs: Any, stones: Any, idx: int, key: str) -> None:
        if kvs.pop(key, None) is not None:
            stones[key] = idx

    def _held_delay(self, key: str) -> bool:
        return self.lock_delays.get(key, 0.0) > time.monotonic()

    # -- transactions ------------------------------------------------------------------

    def txn(self, ops: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """Run ``ops`` all or nothing: (index, results or None, errors)."""
        writes = any(op.get("KV", {}).get("Verb") in _WRITE_VERBS for op in ops)
        idx = self.index + 1
        kvs, stones = Overlay(self.kvs), Overlay(self.tombstones)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for n, op in enumerate(ops):
            try:
                results += self._txn_op(kvs, stones, idx, op)
            except ValueError as exc:
                errors.append({"OpIndex": n, "What": str(exc)})
        if errors:
            return self.index, None, errors
        if writes:
            self.index = idx
            changed, buried = kvs.commit(), stones.commit()
            if changed or buried:
                self.kv_index = idx
                self.cond.notify_all()
            self.save(changed, buried, {})
        return self.index, results, []

    def _txn_op(self, kvs: Any, stones: Any, idx: int, op: dict[str, Any]) -> list[dict[str, Any]]:
        if "KV" not in op:
            raise ValueError("no operation specified")
        kv = op["KV"]
        verb, key = kv.get("Verb", ""), kv.get("Key", "")
        value = base64.b64decode(kv["Value"]) if kv.get("Value") else b""
        entry = {"Key": key, "Value": value, "Flags": int(kv.get("Flags") or 0), "Session": kv.get("Session") or ""}
        index = int(kv.get("Index") or 0)
        found: dict[str, Any] | None = None
        if verb == "set":
            found = self._set(kvs, idx, entry, False)
        elif verb == "cas":
            found = self._cas(kvs, idx, entry, index)
            if found is None:
                raise ValueError(f"failed to set key {json.dumps(key)}, index is stale")
        elif verb == "lock":
            if self._held_delay(key):
                raise ValueError(f"failed to lock key {json.dumps(key)}, lock is already held")
            found = self._lock(kvs, idx, entry)
            if found is None:
                raise ValueError(f"failed to lock key {json.dumps(key)}, lock is already held")
        elif verb == "unlock":
            found = self._unlock(kvs, idx, entry)
            if found is None:
                raise ValueError(
                    f"failed to unlock key {json.dumps(key)}, lock isn't held, or is held by another session"
                )
        elif verb in ("get", "get-or-empty"):
            found = kvs.get(key)
            if found is None and verb == "get":
                raise ValueError(f"key {json.dumps(key)} doesn't exist")
            if found is None:
                return [{"KV": _render({**entry, "Value": None, "CreateIndex": 0, "ModifyIndex": 0, "LockIndex": 0})}]
            return [{"KV": _render(found)}]
        elif verb == "get-tree":
            return [{"KV": _render(kvs[k])} for k in kvs.prefix(key)]
        elif verb == "check-index":
            found = kvs.get(key)
            if found is None:
                raise ValueError(f"failed to check index, key {json.dumps(key)} doesn't exist")
            if found["ModifyIndex"] != index:
                raise ValueError(
                    f"failed index check for key {json.dumps(key)}, current modify index {found['ModifyIndex']} != {index}"
                )
        elif verb == "check-session":
            found = kvs.get(key)
            if found is None:
                raise ValueError(f"failed to check session, key {json.dumps(key)} doesn't exist")
            if found["Session"] != entry["Session"]:
                raise ValueError(
                    f"failed session check for key {json.dumps(key)}, current session "
                    f"{json.dumps(found['Session'])} != {json.dumps(entry['Session'])}"
                )
        elif verb == "check-not-exists":
            if key in kvs:
                raise ValueError(f"key {json.dumps(key)} exists")
        elif verb == "delete":
            self._delete(kvs, stones, idx, key)
        elif verb == "delete-tree":
            for k in kvs.prefix(key):
                self._delete(kvs, stones, idx, k)
        elif verb == "delete-cas":
            existing = kvs.get(key)
            if existing is None or existing["ModifyIndex"] != index:
                if existing is not None:
                    raise ValueError(f"failed to delete key {json.dumps(key)}, index is stale")
                return []
            self._delete(kvs, stones, idx, key)
        else:
            raise ValueError(f"unknown KV verb {json.dumps(verb)}")
        if found is None:
            return []
        return [{"KV": {**_render(found), "Value": None}}]

    def write(self, ops: list[dict[str, Any]]) -> bool:
        """One KV write of the plain API, as a transaction; False where Consul's PUT answers false."""
        return not self.txn(ops)[2]

    # -- sessions ---------------------------------------------------------------------

    def create_session(self, spec: dict[str, Any]) -> str:
        behavior = spec.get("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise ApiError(500, f"Invalid Behavior setting '{behavior}'")
        ttl = 0.0
        if spec.get("TTL"):
            try:
                ttl = parse_duration(str(spec["TTL"]))
            except ValueError as exc:
                raise ApiError(500, f"Session TTL '{spec['TTL']}' invalid: {exc}") from None
            if ttl != 0 and not self.min_ttl <= ttl <= MAX_TTL:
                raise ApiError(
                    500,
                    f"Invalid Session TTL '{int(ttl * 1e9)}', must be between "
                    f"[{go_duration(self.min_ttl)}={go_duration(MAX_TTL)}]",
                )
        delay = spec.get("LockDelay", 15e9)
        delay_s = parse_duration(delay) if isinstance(delay, str) else float(delay) / 1e9
        self.index += 1
        sid = str(uuid.uuid4())
        self.sessions[sid] = {
            "ID": sid,
            "Name": spec.get("Name", ""),
            "Node": spec.get("Node") or "emulator",
            "LockDelay": int(delay_s * 1e9),
            "Behavior": behavior,
            "TTL": spec.get("TTL") or "",
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": None,
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
            "_ttl": ttl,
        }
        self.session_index = self.index
        self._arm(sid)
        self.save({}, {}, {sid: self.sessions[sid]})
        return sid

    def _arm(self, sid: str) -> None:
        ttl = self.sessions[sid]["_ttl"]
        if ttl:
            self.deadlines[sid] = time.monotonic() + ttl * self.ttl_factor
            self.cond.notify_all()

    def renew(self, sid: str) -> dict[str, Any] | None:
        if sid not in self.sessions:
            return None
        self._arm(sid)
        return self.sessions[sid]

    def destroy(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        self.deadlines.pop(sid, None)
        if session is None:
            return
        self.index += 1
        self.session_index = self.index
        held = [k for k, e in self.kvs.items() if e["Session"] == sid]
        if session["LockDelay"]:
            until = time.monotonic() + session["LockDelay"] / 1e9
            for key in held:
                self.lock_delays[key] = until
        if held:
            self.kv_index = self.index
        for key in held:
            if session["Behavior"] == "delete":
                self._delete(self.kvs, self.tombstones, self.index, key)
            else:
                self.kvs[key] = {**self.kvs[key], "Session": "", "ModifyIndex": self.index}
        self.save(
            {key: self.kvs.get(key) for key in held}, {key: self.tombstones.get(key) for key in held}, {sid: None}
        )
        self.cond.notify_all()

    def _reap(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for sid in [sid for sid, when in self.deadlines.items() if when <= now]:
                    self.invalidated.append((sid, now))
                    self.destroy(sid)
                upcoming = min(self.deadlines.values(), default=now + 60)
                self.cond.wait(max(0.001, upcoming - now))


def _render(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if not k.startswith("_")}
    value = entry.get("Value")
    out["Value"] = base64.b64encode(value).decode() if value else None
    if not out.get("Session"):
        out.pop("Session", None)
    return out


def _session_out(session: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in session.items() if not k.startswith("_")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Go's net package (so Consul) sets TCP_NODELAY: without it, headers and body sent apart wait for a
        # delayed ACK (40 ms a request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def _reply(self, status: int, body: Any, index: int | None = None, raw: bool = False) -> None:
        data = body if raw else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if raw or status >= 400 else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if index is not None:
            self.send_header("X-Consul-Index", str(max(1, index)))
            self.send_header("X-Consul-KnownLeader", "true")
            self.send_header("X-Consul-LastContact", "0")
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            self._check_token(query)
            path = unquote(parts.path)
            if path.startswith("/v1/kv/") or path == "/v1/kv":
                return self._kv(method, path[len("/v1/kv/") :], query, body)
            if path == "/v1/txn" and method == "PUT":
                return self._txn(body)
            if path.startswith("/v1/session/"):
                return self._session(method, path[len("/v1/session/") :], query, body)
            if path == "/v1/status/leader":
                return self._reply(200, "127.0.0.1:8300")
            raise ApiError(404, f"Invalid URL path: not a recognized HTTP API endpoint {parts.path!r}")
        except ApiError as exc:
            data = exc.text.encode()
            self.send_response(exc.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _check_token(self, query: dict[str, str]) -> None:
        wanted = self.server.acl_token
        if wanted is None:
            return
        given = self.headers.get("X-Consul-Token") or query.get("token")
        auth = self.headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if not given:
            raise ApiError(403, "Permission denied: anonymous token lacks permission")
        if given != wanted:
            raise ApiError(403, "ACL not found")

    # -- KV ---------------------------------------------------------------------------

    def _kv(self, method: str, key: str, query: dict[str, str], body: bytes) -> None:
        state = self.server.state
        if method == "GET":
            return self._kv_get(key, query)
        limit = self.server.kv_max_value_size
        if len(body) > limit:
            raise ApiError(413, f"Request body({len(body)} bytes) too large, max size: {limit} bytes.")
        flags = int(query.get("flags") or 0)
        op: dict[str, Any]
        with state.cond:
            if method == "DELETE":
                if "recurse" in query:
                    op = {"Verb": "delete-tree", "Key": key}
                elif "cas" in query:
                    if int(query["cas"]) == 0:
                        return self._reply(200, False)
                    op = {"Verb": "delete-cas", "Key": key, "Index": int(query["cas"])}
                else:
                    op = {"Verb": "delete", "Key": key}
                return self._reply(200, state.write([{"KV": op}]))
            value = base64.b64encode(body).decode()
            if "acquire" in query:
                op = {"Verb": "lock", "Key": key, "Value": value, "Flags": flags, "Session": query["acquire"]}
                if query["acquire"] not in state.sessions:
                    raise ApiError(500, f"invalid session {json.dumps(query['acquire'])}")
            elif "release" in query:
                op = {"Verb": "unlock", "Key": key, "Value": value, "Flags": flags, "Session": query["release"]}
            elif "cas" in query:
                op = {"Verb": "cas", "Key": key, "Value": value, "Flags": flags, "Index": int(query["cas"])}
            else:
                op = {"Verb": "set", "Key": key, "Value": value, "Flags": flags}
            return self._reply(200, state.write([{"KV": op}]))

    def _kv_get(self, key: str, query: dict[str, str]) -> None:
        state = self.server.state
        recurse = "recurse" in query or "keys" in query

        def read() -> tuple[int, Any, int]:
            if recurse:
                entries = state.listing(key)
                return state.prefix_index(key), entries, 0
            entry = state.kvs.get(key)
            return state.kv_max(), entry, 0

        with state.cond:
            index, result, _ = read()
            wanted = int(query["index"]) if query.get("index") else 0
            if wanted > 0 and index <= wanted:
                wait = min(parse_duration(query["wait"]) if query.get("wait") else 300.0, 600.0)
                deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
                snapshot = self._seen(key, recurse)
                while time.monotonic() < deadline and self._seen(key, recurse) == snapshot:
                    state.cond.wait(deadline - time.monotonic())
                index, result, _ = read()
        if recurse and "keys" in query:
            sep = query.get("separator", "")
            names: list[str] = []
            for entry in result:
                name = entry["Key"]
                if sep and (cut := name.find(sep, len(key))) >= 0:
                    name = name[: cut + len(sep)]
                if not names or names[-1] != name:
                    names.append(name)
            return self._reply(200 if names else 404, names or None, index)
        if recurse:
            return self._reply(200 if result else 404, [_render(e) for e in result] or None, index)
        if result is None:
            return self._reply(404, None, index, raw=False)
        if "raw" in query:
            return self._reply(200, result["Value"], index, raw=True)
        return self._reply(200, [_render(result)], index)

    def _seen(self, key: str, recurse: bool) -> Any:
        """What a blocking query on ``key`` reads: it wakes when this changes (Consul's watch set)."""
        state = self.server.state
        if recurse:
            return state.prefix_index(key), len(state.listing(key))
        entry = state.kvs.get(key)
        return None if entry is None else entry["ModifyIndex"]

    # -- transactions -------------------------------------------------------------------

    def _txn(self, body: bytes) -> None:
        if len(body) > self.server.txn_max_req_len:
            raise ApiError(
                413, f"Request body({len(body)} bytes) too large, max size: {self.server.txn_max_req_len} bytes."
            )
        try:
            ops = json.loads(body or b"[]")
        except ValueError as exc:
            raise ApiError(400, f"Failed to parse body: {exc}") from None
        if len(ops) > MAX_TXN_OPS:
            raise ApiError(413, f"Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})")
        for op in ops:
            kv = op.get("KV") or {}
            size = len(base64.b64decode(kv["Value"])) if kv.get("Value") else 0
            if size > self.server.kv_max_value_size:
                raise ApiError(
                    413,
                    f"Value for key {json.dumps(kv.get('Key'))} is too large ({size} > "
                    f"{self.server.kv_max_value_size} bytes)",
                )
        state = self.server.state
        with state.cond:
            index, results, errors = state.txn(ops)
        if errors:
            return self._reply(409, {"Results": None, "Errors": errors}, index)
        return self._reply(200, {"Results": results, "Errors": None}, index)

    # -- sessions ---------------------------------------------------------------------

    def _session(self, method: str, rest: str, query: dict[str, str], body: bytes) -> None:
        state = self.server.state
        verb, _, sid = rest.partition("/")
        with state.cond:
            if verb == "create" and method == "PUT":
                spec = json.loads(body) if body else {}
                return self._reply(200, {"ID": state.create_session(spec)}, state.index)
            if verb == "renew" and method == "PUT":
                session = state.renew(sid)
                if session is None:
                    raise ApiError(404, f"Session id '{sid}' not found")
                return self._reply(200, [_session_out(session)], state.session_index)
            if verb == "destroy" and method == "PUT":
                state.destroy(sid)
                return self._reply(200, True)
            if verb == "info" and method == "GET":
                session = state.sessions.get(sid)
                return self._reply(200, [_session_out(session)] if session else None, state.session_index)
            if verb == "list" and method == "GET":
                return self._reply(200, [_session_out(s) for s in state.sessions.values()], state.session_index)
        raise ApiError(405, f"method {method} not allowed")


class Emulator(ThreadingHTTPServer):
    """The emulator's HTTP server; ``state`` is its data, for tests that look inside."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int = 0,
        *,
        min_session_ttl: float = 10.0,
        ttl_factor: float = 2.0,
        acl_token: str | None = None,
        kv_max_value_size: int = 512 * 1024,
        txn_max_req_len: int = 512 * 1024,
        tls: ssl.SSLContext | None = None,
        data_dir: str | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.connections: set[Any] = set()
        self.state = State(min_session_ttl, ttl_factor, data_dir)
        self.acl_token = acl_token
        self.kv_max_value_size = kv_max_value_size
        self.txn_max_req_len = txn_max_req_len
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a cut connection, a timeout) is no error of the emulator's."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Emulator:
        """Serve in a daemon thread (for tests that run it in-process)."""
        threading.Thread(target=self.serve_forever, daemon=True, name="consul-emulator").start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every connection, as a killed agent would."""
        self.shutdown()
        self.server_close()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def tls_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Consul HTTP API emulator for coord's tests (not Consul).")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--min-session-ttl", default="10s", help="Consul's session_ttl_min (emulator default 10s)")
    parser.add_argument("--ttl-factor", type=float, default=2.0, help="invalidate at this many TTLs (1 to 2)")
    parser.add_argument("--acl-token", default=None, help="require this token on every request")
    parser.add_argument("--kv-max-value-size", type=int, default=512 * 1024)
    parser.add_argument("--txn-max-req-len", type=int, default=512 * 1024)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca")
    parser.add_argument("--data-dir", help="keep the data here across a kill and restart (else in memory only)")
    args = parser.parse_args(argv)
    # One Python process stands for Consul's many goroutines: hand the GIL over sooner than every 5 ms, so a
    # woken blocking query is not kept waiting behind another request.
    sys.setswitchinterval(0.0005)
    tls = tls_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    server = Emulator(
        args.port,
        min_session_ttl=parse_duration(args.min_session_ttl),
        ttl_factor=args.ttl_factor,
        acl_token=args.acl_token,
        kv_max_value_size=args.kv_max_value_size,
        txn_max_req_len=args.txn_max_req_len,
        tls=tls,
        data_dir=args.data_dir,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
