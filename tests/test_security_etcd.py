"""etcd's TLS and authentication, v3 (``etcds://``) and v2 (``etcd2s://``), against the real etcd-secure server.

etcd-secure (scripts/servers.py) serves HTTPS only, requires a client
certificate signed by the tests' CA, and has authentication on for both APIs:
v3 with tokens (JWTs) that expire 2 s after etcd gave them, v2 with basic auth. The
guarantees: a correct identity can do every Store operation and hold a lock;
a wrong password, an unknown user, an untrusted server certificate, a missing
client certificate and a client without credentials are each refused with
``ConfigurationError`` at once (no retrying for ``timeout``); a server out of
reach is ``StoreUnavailable``; the password appears in no message; and an
expired v3 token is renewed without the Store's user noticing: a lock held
across many token lifetimes is kept, and watches keep delivering.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

import coord
from coord.testing.conformance import fresh_namespace
from tests.support import required_env, servers
from tests.support.servers import refused_options
from tests.test_secrets import shown

ROOT = Path(__file__).resolve().parents[1]
USERS = servers.ETCD_SECURE_USERS
PASSWORD = USERS["coord"]
TOKEN_TTL = servers.ETCD_SECURE_TOKEN_TTL
#: "At once": a refusal must come long before the URL's timeout, which a retry loop would use up.
TIMEOUT = 10.0
AT_ONCE = 3.0
VARIABLES = {"etcds": "COORD_TEST_ETCD_SECURE", "etcd2s": "COORD_TEST_ETCD2_SECURE"}
SCHEMES = [pytest.param("etcds", id="v3"), pytest.param("etcd2s", id="v2")]


def secure_url(scheme: str) -> str:
    """The URL of etcd-secure with the coord user and the client certificate; fails under COORD_REQUIRE_SERVERS."""
    return required_env(VARIABLES[scheme])


def variant(url: str, *, user: str | None = "coord", password: str | None = None, **options: str | None) -> str:
    """``url`` with another user and password (None: none), and TLS options changed (None: left out)."""
    scheme, _, rest = url.partition("://")
    netloc, _, query = rest.partition("?")
    hosts = netloc.rpartition("@")[2]
    pairs = dict(item.split("=", 1) for item in query.split("&") if item)
    for name, value in options.items():
        if value is None:
            pairs.pop(name, None)
        else:
            pairs[name] = value
    userinfo = "" if user is None else f"{quote(user)}:{quote(password or USERS.get(user, ''))}@"
    return f"{scheme}://{userinfo}{hosts}?" + "&".join(f"{name}={value}" for name, value in pairs.items())


def refused(url: str, caplog: pytest.LogCaptureFixture, *secrets: str) -> coord.ConfigurationError:
    """The ConfigurationError that connecting to ``url`` raises, at once, showing none of ``secrets``."""
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(f"{url}&timeout={TIMEOUT}")
    assert time.monotonic() - started < AT_ONCE, "a refusal no retry can change must come at once"
    for secret in (PASSWORD, *secrets):
        assert secret not in shown(info.value)
        assert secret not in caplog.text
    return info.value


# -- a correct identity -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_correct_identity_can_do_every_store_operation_and_hold_a_lock(scheme: str) -> None:
    url = fresh_namespace(secure_url(scheme))
    with coord.connect(url) as store, coord.connect(url) as other:
        assert PASSWORD not in repr(store) and PASSWORD not in str(store) and PASSWORD not in store.describe()
        assert store.describe().startswith(f"{scheme}://coord:***@")
        written = store.put("a/b", b"1")
        assert store.get("a/b") == written
        assert store.exists("a/b")
        watch = other.watch("a/c")
        assert store.atomic_put("a/c", b"2", None).value == b"2"
        event = watch.get(timeout=10)
        assert event is not None and event.value == b"2"
        watch.close()
        assert [pair.key for pair in store.list("a")] == ["a/b", "a/c"]
        store.delete("a/b")
        assert not store.exists("a/b")
        lease = store.lease(ttl=5)
        store.put("held", b"x", lease=lease)
        lease.revoke()
        lock = coord.Lock("guarded", store=store, ttl=5)
        assert lock.acquire(timeout=10)
        assert not coord.Lock("guarded", store=other, ttl=5).acquire(blocking=False)
        lock.release()
        assert coord.Lock("guarded", store=other, ttl=5).acquire(timeout=10)


# -- refusals: ConfigurationError at once, the password never shown -----------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_wrong_password_is_refused_at_once(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Wrong-s3cret-1729"
    error = refused(variant(secure_url(scheme), password=wrong), caplog, wrong)
    assert "coord" in str(error)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_unknown_user_is_refused_at_once(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    refused(variant(secure_url(scheme), user="nobody", password="Nobodys-s3cret-31337"), caplog, "Nobodys-s3cret-31337")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_client_without_credentials_is_refused_at_once(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    # Its client certificate (CN coord-client) names no user of etcd's: it may not read or write.
    refused(variant(secure_url(scheme), user=None), caplog)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_untrusted_server_certificate_is_refused_at_once(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    other_ca = str(servers.tls_files()["other-ca"])
    error = refused(variant(secure_url(scheme), tls_ca=other_ca), caplog)
    assert re.search("certificate|TLS", str(error), re.IGNORECASE)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_missing_client_certificate_is_refused_at_once(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    error = refused(variant(secure_url(scheme), tls_cert=None, tls_key=None), caplog)
    assert re.search("certificate|TLS", str(error), re.IGNORECASE)


def test_keys_outside_the_users_role_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    # v3: the user "limited" may use the keys under coord/ only; coord's first request stays inside its prefix.
    limited = variant(secure_url("etcds"), user="limited")
    with coord.connect(f"{limited}&prefix=coord/inside") as store:
        assert store.put("k", b"v").value == b"v"
        assert [pair.key for pair in store.list("")] == ["k"]
    refused(f"{limited}&prefix=elsewhere", caplog, USERS["limited"])


def test_a_v2_root_outside_the_users_role_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    refused(f"{secure_url('etcd2s')}&root=/elsewhere", caplog)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_server_out_of_reach_is_unavailable_and_the_password_unshown(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = secure_url(scheme)
    port = int(url.partition("@")[2].partition("?")[0].rpartition(":")[2])
    with pytest.raises(coord.StoreUnavailable) as info:
        coord.connect(url.replace(f":{port}?", f":{port + 1}?") + "&timeout=0.5")
    assert PASSWORD not in shown(info.value) and PASSWORD not in caplog.text


# -- v3: the token etcd gives expires, and is renewed unseen ------------------------------------------


def test_an_expired_token_is_renewed_while_a_lock_is_held_and_watches_deliver() -> None:
    url = fresh_namespace(secure_url("etcds"))
    with coord.connect(url) as holder, coord.connect(url) as writer:
        credentials = holder._etcd.credentials  # type: ignore[attr-defined]
        lock = coord.Lock("held", store=holder, ttl=5)
        assert lock.acquire(timeout=10)
        watch = holder.watch("news")
        renewed_before = credentials.renewals
        # In use: each token expires 2 s after etcd gave it, however busy the Store is.
        deadline, sent = time.monotonic() + 4 * TOKEN_TTL, 0
        while time.monotonic() < deadline:
            writer.put("news", str(sent).encode())
            event = watch.get(timeout=10)
            assert event is not None and event.value == str(sent).encode()
            assert holder.put("own", str(sent).encode()).value == str(sent).encode()
            assert lock.holding and not lock.lost.is_set()
            sent += 1
            time.sleep(0.2)
        # Idle past a token's lifetime: the first watch's stream now carries an expired token, so etcd
        # refuses a new watch on it; the new watch goes on a new stream, and the old one keeps delivering.
        time.sleep(TOKEN_TTL + 0.5)
        fresh = holder.watch("later")
        writer.put("later", b"x")
        writer.put("news", b"still")
        event = fresh.get(timeout=10)
        assert event is not None and event.value == b"x"
        event = watch.get(timeout=10)
        assert event is not None and event.value == b"still"
        watch.close()
        assert holder._watches_of._retired == [], "a retired stream is closed with its last watch"  # type: ignore[attr-defined]
        assert lock.holding and not lock.lost.is_set()
        lock.release()
        assert credentials.renewals - renewed_before >= 4, "the test meant tokens to expire: they did not"


def test_many_threads_share_one_renewal_of_an_expired_token() -> None:
    url = fresh_namespace(secure_url("etcds"))
    with coord.connect(url) as store:
        credentials = store._etcd.credentials  # type: ignore[attr-defined]
        time.sleep(TOKEN_TTL + 0.5)
        before = credentials.renewals
        errors: list[BaseException] = []

        def work(number: int) -> None:
            try:
                store.put(f"k{number}", b"v")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors
        assert len(store.list("")) == 8
        assert credentials.renewals - before <= 2, "threads refused together must share the renewal"


def root_call(method: str, request: object) -> None:
    """One call of etcd's Auth service as root, over the tests' TLS (to change the auth store under a Store)."""
    import grpc
    from pyetcd import etcdrpc

    tls = {name: path.read_bytes() for name, path in servers.tls_files().items()}
    port = int(secure_url("etcds").partition("@")[2].partition("?")[0].rpartition(":")[2])
    credentials = grpc.ssl_channel_credentials(tls["ca"], tls["client-key"], tls["client"])
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        auth = etcdrpc.AuthStub(channel)
        token = auth.Authenticate(etcdrpc.AuthenticateRequest(name="root", password=USERS["root"]), 10).token
        getattr(auth, method)(request, 10, metadata=[("token", token)])


def test_a_change_of_the_auth_store_does_not_disturb_a_store() -> None:
    # etcd refuses a request whose token predates an auth change ("revision of auth store is old") when
    # the change comes between the request's check and its apply (or always, for JWTs); the Store then
    # logs in again. Here it must simply go on working.
    from pyetcd import etcdrpc

    url = fresh_namespace(secure_url("etcds"))
    role = f"scratch-{os.getpid()}-{time.monotonic_ns()}"
    with coord.connect(url) as store:
        store.put("before", b"1")
        root_call("RoleAdd", etcdrpc.AuthRoleAddRequest(name=role))
        try:
            assert store.put("after", b"2").value == b"2"
            assert [pair.key for pair in store.list("")] == ["after", "before"]
        finally:
            root_call("RoleDelete", etcdrpc.AuthRoleDeleteRequest(role=role))


def test_a_server_restart_is_ridden_out_over_tls_and_auth() -> None:
    url = fresh_namespace(secure_url("etcds"))
    with coord.connect(url) as holder, coord.connect(url) as writer:
        lock = coord.Lock("held", store=holder, ttl=8)
        assert lock.acquire(timeout=10)
        watch = holder.watch("news")
        # kill -9: etcd is out for a second or so, and its tokens expire meanwhile
        servers.SERVERS["etcd-secure"].restart()
        writer.put("news", b"after the restart")
        event = watch.get(timeout=30)
        assert event is not None and event.value == b"after the restart"
        assert holder.put("own", b"write").value == b"write"
        assert lock.holding and not lock.lost.is_set()
        lock.release()


# -- the whole conformance suite over TLS and auth ----------------------------------------------------


def test_the_conformance_suite_passes_over_tls_and_auth_on_v3() -> None:
    url = secure_url("etcds")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "coord.testing.conformance",
        "--store-url",
        url,
        *refused_options(url),
    ]
    command += ["--pyargs", "coord.testing.conformance", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_conformance_suite_passes_over_tls_and_basic_auth_on_v2(tmp_path: Path) -> None:
    """The whole suite, identity tests included (about a minute: v2 checks the password, bcrypt, on each request)."""
    url = secure_url("etcd2s")
    command = [sys.executable, "-m", "pytest", "-p", "coord.testing.conformance", "--store-url", url]
    command += [*refused_options(url), "--pyargs", "coord.testing.conformance", "-q", "-p", "no:cacheprovider"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^\d{3} passed in ", done.stdout, re.MULTILINE), done.stdout[-2000:]


# -- settings refused before anything is sent, and credentials a server without auth ignores ----------


def test_tls_files_that_cannot_be_read_are_refused_naming_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(coord.ConfigurationError, match="tls_ca"):
        coord.connect(f"etcds://127.0.0.1:1?tls_ca={missing}")
    with pytest.raises(coord.ConfigurationError, match="tls_cert and tls_key"):
        coord.connect(f"etcds://127.0.0.1:1?tls_cert={missing}")


@pytest.mark.server("etcd")
def test_credentials_are_ignored_by_a_server_without_auth() -> None:
    # As etcd's Go client does: the plain test server has auth off, and answers Authenticate so.
    plain = fresh_namespace(os.environ["COORD_TEST_ETCD"].replace("etcd://", f"etcd://someone:{PASSWORD}@"))
    with coord.connect(plain) as store:
        assert store.put("k", b"v").value == b"v"
        assert PASSWORD not in repr(store)
