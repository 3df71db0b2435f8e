"""The Consul backend's own guarantees, against in-process Consul HTTP API emulators set up for each case.

The conformance suite and the recipe tests run against the emulator of
scripts/servers.py (or a real agent: ``COORD_TEST_CONSUL``); these tests need
emulators with particular settings (an ACL token, TLS, Consul's default
minimum TTL, a session invalidated at exactly 1x or 2x its TTL), so each
starts its own, on a free port. They check: the session TTL window against
the holder's deadline and the waiter's failover, the granted ttl learnt from
the agent, a lost reply recognised, the blocking-query index rules, ACL and
TLS refusals, secrets kept out of messages, and Consul's size limits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import coord
from coord.backends.consul import _boundary
from tests.support import ROOT, drain, summary, wait_for
from tests.support.consul_emulator import Emulator, tls_context
from tests.support.servers import servers

SECRET = "s3cret-t0ken-do-not-show"


@pytest.fixture
def emulator() -> Iterator[Any]:
    """Start ``Emulator(**options)`` on a free port; all stopped after the test."""
    started: list[Emulator] = []

    def start(**options: Any) -> Emulator:
        server = Emulator(**{"min_session_ttl": 1.0, **options}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def url(server: Emulator, scheme: str = "consul", **options: object) -> str:
    query = "&".join(f"{name}={value}" for name, value in options.items())
    return f"{scheme}://127.0.0.1:{server.port}" + (f"?{query}" if query else "")


# -- sessions: Consul's TTL window ------------------------------------------------------------------


def test_a_short_ttl_is_rounded_up_to_what_the_agent_allows_and_reported(emulator: Any) -> None:
    """Consul refuses TTLs under session_ttl_min (10 s by default): coord learns it from the refusal."""
    server = emulator(min_session_ttl=10.0)
    with coord.connect(url(server)) as store, store.lease(2) as lease:
        assert lease.ttl == 20.0  # a dead owner's keys go at most 2 x 10 s after its last renewal
        assert lease._kept.hold == 10.0  # the holder's own deadline: 10 s, Consul's earliest
        (session,) = server.state.sessions.values()
        assert session["TTL"] == "10.000s" and session["Behavior"] == "delete" and session["LockDelay"] == 0


def test_a_long_ttl_is_half_its_session_and_capped_at_a_day(emulator: Any) -> None:
    server = emulator()
    with coord.connect(url(server)) as store:
        with store.lease(30) as lease:
            assert (lease.ttl, lease._kept.hold) == (30.0, 15.0)
        with store.lease(30 * 24 * 3600) as lease:
            assert (lease.ttl, lease._kept.hold) == (30 * 24 * 3600.0, 86400.0)


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_the_holder_knows_its_lease_is_lost_before_consul_may_give_its_keys_away(emulator: Any, factor: float) -> None:
    """At 1x (the earliest the docs allow) and 2x (what Consul's leader does) the client's deadline comes first."""
    server = emulator(ttl_factor=factor)
    with coord.connect(url(server)) as store:
        lease = store.lease(2)
        store.put("held", b"", lease=lease)
        store._lease_keepalive = _cut  # type: ignore[method-assign]
        assert lease.lost.wait(10)
        wait_for(lambda: bool(server.state.invalidated), 10, "the emulator invalidates the session")
        (_, invalidated) = server.state.invalidated[0]
        # The lease's deadline on the emulator's clock (time.monotonic), against the moment it invalidated the session.
        deadline = lease.deadline - (store.clock.now() - time.monotonic())
        assert deadline <= invalidated + 0.002, f"the holder's deadline came {deadline - invalidated:.3f}s late"
        wait_for(lambda: not store.exists("held"), 5, "the held key is deleted")


def _cut(lease: coord.Lease) -> bool:
    raise coord.StoreUnavailable("the network is cut")


def test_keys_of_a_dead_owner_go_within_the_ttl_at_twice_the_session_ttl(emulator: Any) -> None:
    """Consul's leader invalidates at 2x the session TTL: the key goes within the lease's ttl of its last renewal."""
    server = emulator(ttl_factor=2.0)
    with coord.connect(url(server)) as owner, coord.connect(url(server)) as other:
        lease = owner.lease(2)
        owner.put("held", b"", lease=lease)
        with other.watch("held") as watch:
            drain(watch, 1)
            owner._lease_keepalive = lambda _lease: True  # type: ignore[method-assign]  # renewals stop reaching Consul
            renewed = time.monotonic()
            event = watch.get(timeout=10)
            assert event is not None and event.type == "delete"
            assert time.monotonic() - renewed <= lease.ttl + 0.5


# -- writes ---------------------------------------------------------------------------------------


def test_a_write_whose_reply_was_lost_recognises_its_own_success(emulator: Any, monkeypatch: Any) -> None:
    server = emulator()
    with coord.connect(url(server)) as store:
        send = _boundary.Boundary.send
        lost = []

        def lose_first_txn_reply(self: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            answer = send(self, method, path, *args, **kwargs)
            if path == "/v1/txn" and not lost:
                lost.append(answer)
                raise _boundary.Transient("the reply was lost")
            return answer

        monkeypatch.setattr(_boundary.Boundary, "send", lose_first_txn_reply)
        written = store.atomic_put("once", b"mine", None)  # sent twice: the second finds the key
        assert lost and written == store.get("once")
        txn = store.transaction().put("q/me", b"", previous=None, lease=store.session(10)).list("q")
        lost.clear()
        mine, queue = txn.commit()
        assert lost and [pair.key for pair in queue] == ["q/me"] and mine == store.get("q/me")


def test_a_plain_put_takes_a_key_from_the_session_that_holds_it(emulator: Any) -> None:
    """A plain Consul set would leave the key locked (and deleted with that session): coord unlocks it first."""
    server = emulator()
    with coord.connect(url(server)) as store:
        lease = store.lease(10)
        first = store.put("k", b"leased", lease=lease)
        second = store.put("k", b"plain")
        assert second.lease is None and second.created == first.created
        lease.revoke()
        assert store.get("k").value == b"plain"


def test_values_over_the_agents_limit_get_a_clear_error(emulator: Any) -> None:
    server = emulator()  # Consul's default limits: 512 KiB
    with coord.connect(url(server)) as store, pytest.raises(ValueError, match="kv_max_value_size"):
        store.put("big", b"x" * (600 * 1024))


# -- watches: the index rules ---------------------------------------------------------------------


def test_a_watch_restarts_when_the_index_goes_backwards(emulator: Any) -> None:
    """A snapshot restore (here: a fresh agent on the same port) sends the index back: the watch re-syncs."""
    first = emulator()
    port = first.port
    with coord.connect(url(first, watch_wait=1)) as store:
        store.put("t/old", b"1")
        for _ in range(20):
            store.put("t/churn", b"x" + bytes([_]))  # push the index well above the new agent's
        with store.watch_tree("t") as watch:
            drain(watch, 2)
            first.stop()
            second = emulator(port=port)
            wait_for(lambda: _answers(store), 10, "the new agent answers")
            store.put("t/new", b"2")
            events = drain(watch, 3, timeout=15)
        assert sorted(summary(events), key=str) == sorted(
            [("delete", "t/churn", None), ("delete", "t/old", None), ("put", "t/new", b"2")], key=str
        )
        assert second.state.index < 20


def _answers(store: coord.Store) -> bool:
    try:
        store.exists("x")
        return True
    except coord.CoordError:
        return False


def test_a_watch_delivers_every_write_between_two_answers_from_the_log(emulator: Any) -> None:
    """Blocking queries coalesce changes; the log records give each write, in order."""
    server = emulator()
    with coord.connect(url(server)) as store, store.watch("k") as watch:
        txn_values = [str(n).encode() for n in range(30)]
        for value in txn_values:
            store.put("k", value)
        store.delete("k")
        events = drain(watch, 31)
    assert [event.value for event in events] == [*txn_values, None]
    assert [event.revision for event in events] == sorted({event.revision for event in events})


# -- ACLs and TLS ---------------------------------------------------------------------------------


def test_an_acl_token_is_required_and_never_shown(emulator: Any, monkeypatch: Any) -> None:
    server = emulator(acl_token=SECRET)
    with pytest.raises(coord.ConfigurationError, match="refused access"):
        coord.connect(url(server))
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(url(server, token="wrong-" + SECRET))
    assert SECRET not in str(info.value)
    with coord.connect(url(server, token=SECRET)) as store:
        assert store.put("k", b"v").value == b"v"
        lock = coord.Lock("l", store=store)
        assert lock.acquire(timeout=10)
        lock.release()
        assert SECRET not in repr(store) and SECRET not in str(store) and SECRET not in store.describe()
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", SECRET)
    with coord.connect(url(server)) as store:
        assert store.get("k").value == b"v"
    port = server.port
    server.stop()
    with pytest.raises(coord.StoreUnavailable) as down:
        coord.connect(f"consul://127.0.0.1:{port}?token={SECRET}&timeout=1")
    assert SECRET not in "".join(traceback.format_exception(down.value)), "the traceback, causes included"


def test_tls_with_the_servers_ca_and_a_client_certificate(emulator: Any) -> None:
    files = {name: str(path) for name, path in servers.tls_files().items()}
    server = emulator(tls=tls_context(files["server"], files["server-key"], files["ca"]))
    ca, cert, key = files["ca"], files["client"], files["client-key"]
    with coord.connect(url(server, "consuls", tls_ca=ca, tls_cert=cert, tls_key=key)) as store:
        assert store.put("k", b"over tls").value == b"over tls"
    with pytest.raises(coord.ConfigurationError, match="TLS"):
        coord.connect(url(server, "consuls", tls_cert=cert, tls_key=key))  # the server's certificate is not trusted
    with pytest.raises(coord.ConfigurationError, match="TLS"):
        coord.connect(url(server, "consuls", tls_ca=files["other-ca"], tls_cert=cert, tls_key=key))
    with pytest.raises((coord.ConfigurationError, coord.StoreUnavailable)):
        coord.connect(url(server, "consuls", tls_ca=ca, timeout=2))  # no client certificate


def test_a_missing_tls_file_is_a_configuration_error_before_anything_is_sent(tmp_path: Path) -> None:
    for option in ("tls_ca", "tls_cert"):
        missing = tmp_path / "nowhere.pem"
        other = {"tls_ca": "", "tls_cert": f"&tls_key={missing}"}[option]
        with pytest.raises(coord.ConfigurationError, match="no such file"):
            coord.connect(f"consuls://127.0.0.1:1?{option}={missing}{other}&timeout=0.5")


def test_the_conformance_suite_names_a_refused_token_and_certificate_one_error(emulator: Any, tmp_path: Path) -> None:
    """The suite's identity tests (``--refused-url``): a wrong token, a stranger CA: ConfigurationError at once."""
    files = {name: str(path) for name, path in servers.tls_files().items()}
    server = emulator(acl_token=SECRET, tls=tls_context(files["server"], files["server-key"], files["ca"]))
    good = url(
        server, "consuls", token=SECRET, tls_ca=files["ca"], tls_cert=files["client"], tls_key=files["client-key"]
    )
    wrong_token = good.replace(f"token={SECRET}", "token=wrong-token")
    stranger = good.replace(f"tls_ca={files['ca']}", f"tls_ca={files['other-ca']}")
    command = [sys.executable, "-m", "pytest", "-p", "coord.testing.conformance", "-q", "-p", "no:cacheprovider"]
    command += ["--store-url", good, "--refused-url", wrong_token, "--refused-url", stranger, "-k", "identity"]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
