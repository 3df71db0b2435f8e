"""Consul sessions: coord's leases, ttl keys, and the log records' expiry.

Consul invalidates a session of TTL t that is not renewed anywhere from t to
2t after its last renewal (its leader waits 2t; the documented contract is
only "not before t"), and refuses a t below the agent's ``session_ttl_min``
(10 s by default) or above 24 h, saying which bounds it has. So:

- a lease of ttl T is a session of t = T/2 (raised to the minimum, at most
  24 h), ``Behavior=delete``, ``LockDelay=0s``: a dead owner's keys go at most
  2t after its last renewal. The ttl reported is max(T, 2t): a shorter ttl is
  rounded up. The holder's own deadline is t after the renewal it sent (the
  earliest Consul may act: ``ConsulStore._lease_hold``), renewed every t/3.
- a ttl key of ttl T is locked by a session of its own of t = T/2 (same
  bounds), never renewed: the key goes between T/2 and T after the write (at
  T on Consul's leader), or 2·minimum for a T under twice the minimum.
- each Store's log records are locked by its current log session of TTL
  2·history, never renewed and replaced every ``history`` seconds, so a
  record lives at least ``history`` seconds and at most about 5·history.

The minimum is learnt from the agent's refusal ("must be between [10s=24h0m0s]")
and kept, so each later session is created in one request.
"""

from __future__ import annotations

import json
import re
import threading

from ..._clock import Clock
from ..._errors import CoordError
from ._boundary import BACKEND, Answer, Boundary

__all__ = ["MAX_SESSION_TTL", "Sessions", "session_ttl"]

MAX_SESSION_TTL = 86400.0
_BOUNDS = re.compile(r"must be between \[([^=\]]+)=([^\]]+)\]")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def session_ttl(ttl: float, minimum: float) -> float:
    """The session TTL t for a lease or ttl key of ``ttl``: half of it, within Consul's bounds."""
    return min(max(ttl / 2, minimum), MAX_SESSION_TTL)


def _seconds(duration: str) -> float:
    parts = re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", duration)
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class Sessions:
    """Creates, renews and destroys the sessions of one Store."""

    def __init__(self, consul: Boundary, clock: Clock, history: float) -> None:
        self._consul = consul
        self._clock = clock
        self.minimum = 0.001  # until the agent says otherwise
        self._history = history
        self._log: tuple[str, float] | None = None  # the log session and when it was created
        self._log_lock = threading.Lock()

    def create(self, ttl: float, name: str) -> str:
        """A new session of TTL ``ttl`` seconds (already within the bounds): its id."""
        while True:
            wanted = max(ttl, self.minimum)
            spec = json.dumps({"Name": name, "TTL": f"{wanted:.3f}s", "Behavior": "delete", "LockDelay": "0s"})

            def attempt(_: bool, spec: str = spec) -> Answer:
                return self._consul.send("PUT", "/v1/session/create", body=spec)

            answer = self._consul.call(attempt)
            if answer.code == 200:
                return str(answer.json()["ID"])
            bounds = _BOUNDS.search(answer.body)
            if answer.code == 500 and bounds and _seconds(bounds.group(1)) > self.minimum:
                self.minimum = _seconds(bounds.group(1))  # the agent's session_ttl_min: ask again with it
                continue
            raise _refused("creating a session", answer)

    def lease(self, ttl: float) -> tuple[str, float]:
        """A lease's session for a ttl of ``ttl``: its id and the ttl granted (see the module docstring)."""
        sid = self.create(session_ttl(ttl, self.minimum), "coord lease")
        return sid, max(ttl, 2 * session_ttl(ttl, self.minimum))

    def hold(self, granted: float) -> float:
        """How long after a renewal Consul surely keeps a lease granted ``granted``: its session's TTL."""
        return session_ttl(granted, self.minimum)

    def renew(self, sid: str) -> bool:
        """Renew once (no retries: the keeper retries); False if Consul no longer has the session."""
        answer = self._consul.call(lambda _: self._consul.send("PUT", f"/v1/session/renew/{sid}"), within=0)
        if answer.code == 404:
            return False
        if answer.code != 200:
            raise _refused("renewing a session", answer)
        return True

    def destroy(self, sid: str) -> None:
        answer = self._consul.call(lambda _: self._consul.send("PUT", f"/v1/session/destroy/{sid}"))
        if answer.code not in (200, 404):
            raise _refused("destroying a session", answer)

    # -- the log session ---------------------------------------------------------------

    def log_session(self, replace: str | None = None) -> str:
        """The session the Store's log records are locked by: a new one every ``history`` seconds.

        ``replace``: that session was found invalid; make another now.
        """
        with self._log_lock:
            now = self._clock.now()
            current = self._log
            if current is None or current[0] == replace or now - current[1] >= self._history:
                ttl = min(max(2 * self._history, self.minimum), MAX_SESSION_TTL)
                current = self._log = (self.create(ttl, "coord log"), now)
            return current[0]


def _refused(what: str, answer: Answer) -> CoordError:
    return CoordError(f"Consul refused {what}: {answer.code} {answer.body[:200]}", backend=BACKEND)
