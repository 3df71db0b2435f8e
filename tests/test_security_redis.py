"""Redis over TLS with ACL users (scripts/servers.py's ``redis-secure``): the user ``coord``, with exactly
the ACL rule docs/backends.md gives, does everything (the whole conformance suite passes as it); every
refused identity is a ``ConfigurationError`` at once, naming what was refused and never the password; an
unreachable server stays ``StoreUnavailable``.

redis-secure listens on TLS only (``--port 0``), requires a client certificate of the tests' CA, has the
users ``coord`` (``servers.REDIS_ACL_RULE``) and ``admin`` (everything; these tests make users with it),
and ``default`` disabled. Its certificate names 127.0.0.1 and localhost; it also listens on 127.0.0.2,
which the certificate does not name.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import pytest
import redis

import coord
from coord.testing.conformance import fresh_namespace
from tests.support import drain, required_env, servers, summary
from tests.support.servers import refused_options
from tests.test_secrets import SECRET, shown

URL = os.environ.get("COORD_TEST_REDIS_SECURE", "")
ROOT = Path(__file__).resolve().parents[1]
#: What "at once" means: well under the timeout the refused URLs are given (they would retry that long).
AT_ONCE = 3.0
TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _secure_server() -> None:
    """The gate of conftest.py, for a server that is not a backend of coord's table."""
    required_env("COORD_TEST_REDIS_SECURE")


def url(*, user: str | None = "coord", password: str | None = None, host: str = "127.0.0.1", **options: Any) -> str:
    """COORD_TEST_REDIS_SECURE with another user, password, host or options (``None`` removes one)."""
    parts = urlsplit(URL)
    secret = unquote(parts.password or "") if password is None else password
    query = {**dict(parse_qsl(parts.query)), "timeout": str(TIMEOUT), **options}
    query = {name: str(value) for name, value in query.items() if value is not None}
    userinfo = f"{user}:{secret}@" if user is not None else ""
    return f"rediss://{userinfo}{host}:{parts.port}?{urlencode(query, safe='/')}"


def coord_password() -> str:
    return unquote(urlsplit(URL).password or "")


@pytest.fixture
def admin() -> Iterator[Any]:
    """A redis-py client as ``admin``, to make users the tests connect as."""
    tls = servers.tls_files()
    client = redis.Redis(
        host=servers.HOST,
        port=urlsplit(URL).port,
        username="admin",
        password=servers.redis_secret("admin"),
        ssl=True,
        ssl_ca_certs=str(tls["ca"]),
        ssl_certfile=str(tls["client"]),
        ssl_keyfile=str(tls["client-key"]),
    )
    yield client
    client.close()


@pytest.fixture
def make_user(admin: Any) -> Iterator[Callable[..., str]]:
    """Makes a user with an ACL rule, returns the URL that connects as it; deletes them afterwards."""
    made: list[str] = []

    def make(rule: str, password: str = SECRET, **options: Any) -> str:
        name = f"t{uuid.uuid4().hex[:10]}"
        admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", *rule.split())
        made.append(name)
        return url(user=name, password=quote(password, safe=""), **options)

    yield make
    if made:
        admin.execute_command("ACL", "DELUSER", *made)


def without(word: str) -> str:
    """The ACL rule of ``coord`` less one of its words."""
    words = servers.REDIS_ACL_RULE.split()
    words.remove(word)
    return " ".join(words)


def refused(
    connect_url: str, caplog: pytest.LogCaptureFixture, run: Callable[[coord.Store], object] | None = None
) -> str:
    """Connect (and ``run``): the ConfigurationError it raises at once, as shown, with no password in it
    or in the log."""
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(coord.ConfigurationError) as info, coord.connect(connect_url) as store:
        if run is not None:
            run(store)
    elapsed = time.monotonic() - started
    text = shown(info.value)
    password = unquote(urlsplit(connect_url).password or "")
    assert elapsed < AT_ONCE, f"refused after {elapsed:.1f}s, not at once: {info.value}"
    for secret in {SECRET, coord_password(), servers.redis_secret("admin")}:
        assert secret not in text and secret not in caplog.text
    assert not password or password not in text
    assert info.value.backend == "redis" and "rediss://" in str(info.value)
    return str(info.value)


# -- the identity that works ---------------------------------------------------------------------------


def test_the_coord_user_over_tls_puts_gets_watches_and_locks() -> None:
    """Every kind of use works as ``coord``, with its client certificate, over TLS only."""
    with coord.connect(fresh_namespace(url())) as store:
        assert store.describe().startswith("rediss://127.0.0.1:")
        with store.watch("k") as watch:
            store.put("k", b"1")
            assert store.get("k").value == b"1"  # type: ignore[union-attr]
            store.delete("k")
            assert summary(drain(watch, 2)) == [("put", "k", b"1"), ("delete", "k", None)]
        lock = coord.Lock("door", store=store, ttl=5)
        assert lock.acquire(timeout=5)
        assert store.list("")  # the lock's ticket
        lock.release()
        with store.lease(2) as lease:
            store.put("owned", b"x", lease=lease)
        assert not store.exists("owned")  # revoked with its lease


def test_a_host_the_certificate_does_not_name_connects_only_with_the_check_off() -> None:
    """tls_verify_hostname=false turns the hostname check off (and only that: the CA still counts)."""
    with coord.connect(url(host=servers.REDIS_UNNAMED_HOST, tls_verify_hostname="false")) as store:
        assert store.put("k", b"v").value == b"v"


def test_a_tls_option_turns_tls_on_for_redis_urls_too() -> None:
    """redis:// with tls_ca (and a client certificate) speaks TLS, as rediss:// does."""
    with coord.connect(fresh_namespace(url().replace("rediss://", "redis://", 1))) as store:
        assert store.describe().startswith("redis://") and store.put("k", b"v").value == b"v"


def test_a_password_is_percent_decoded(make_user: Callable[..., str]) -> None:
    """A password with the URL's own delimiters in it, percent-encoded in the URL, authenticates."""
    with coord.connect(fresh_namespace(make_user(servers.REDIS_ACL_RULE, password=f"p@ss:w/rd%?#{SECRET}"))) as store:
        assert store.put("k", b"v").value == b"v"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tls_ca": "/nonexistent/ca.pem"}, "tls_ca: no such file"),
        ({"tls_cert": None}, "tls_key needs tls_cert"),
    ],
)
def test_tls_files_are_checked_before_connecting(options: dict[str, Any], expected: str) -> None:
    """A missing file, or a key without its certificate, is a ConfigurationError that names it."""
    with pytest.raises(coord.ConfigurationError, match=expected):
        coord.connect(url(**options))


def test_the_acl_rule_in_the_docs_is_the_test_servers() -> None:
    """docs/backends.md names the very rule the conformance suite passes with (the test below)."""
    docs = (ROOT / "docs" / "backends.md").read_text()
    assert servers.REDIS_ACL_RULE in docs


def test_the_conformance_suite_passes_as_the_coord_user(tmp_path: Path) -> None:
    """The whole Store contract holds with the ACL rule and TLS: nothing coord needs is missing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "coord.testing.conformance", "--store-url", url(), *refused_options(url()), "-q",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail
    assert re.search(r"\d+ passed", tail) and "failed" not in tail and "error" not in tail, tail


# -- refused identities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "authentication failed for user 'coord'"),
        ("unknown user", "authentication failed for user 'nobody'"),
        ("no user", "authentication required"),
        ("untrusted server certificate", "server certificate not trusted"),
        ("no client certificate", "client certificate refused"),
        ("host not in the certificate", "server certificate does not name '127.0.0.2'"),
    ],
)
def test_a_refused_identity_is_a_configuration_error_at_once(
    case: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refusal is ConfigurationError within AT_ONCE (not after retrying for the timeout), says
    what was refused, and shows neither the password given nor the right one."""
    tls = servers.tls_files()
    variants = {
        "wrong password": lambda: url(password=SECRET),
        "unknown user": lambda: url(user="nobody", password=SECRET),
        "no user": lambda: url(user=None),
        "untrusted server certificate": lambda: url(tls_ca=tls["other-ca"]),
        "no client certificate": lambda: url(tls_cert=None, tls_key=None),
        "host not in the certificate": lambda: url(host=servers.REDIS_UNNAMED_HOST),
    }
    assert expected in refused(variants[case](), caplog)


def test_a_user_without_a_command_it_needs_is_told_which(
    make_user: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """NOPERM names the command, whether coord sends it (XREAD) or a script calls it (HSET)."""
    no_xread = make_user(without("+xread"))

    def watch(store: coord.Store) -> None:
        with store.watch("k") as w:
            store.put("k", b"v")
            while w.get(timeout=AT_ONCE) is not None:  # the events its opening read, then the failure
                pass

    assert "'xread'" in refused(no_xread, caplog, watch)
    no_hset = make_user(without("+hset"))
    message = refused(no_hset, caplog, lambda store: store.put("k", b"v"))
    assert "HSET" in message and "script 'put'" in message


def test_a_user_without_coords_keys_is_told_so(make_user: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    """A rule for another namespace's keys: the refusal says the keys are the problem, and which."""
    other = make_user(servers.REDIS_ACL_RULE.replace("{coord}", "{other}"))
    message = refused(other, caplog)
    assert "coord's keys: {coord} and {coord}:*" in message


# The commands of the rule, each of which some use of coord needs: a user without it is refused, and
# told the command. (client|unblock is left out: without it, close() waits for the reader's XREAD to
# time out, 0.5 s, rather than fail.)
NEEDED = [
    word[1:] for word in servers.REDIS_ACL_RULE.split() if word.startswith("+") and word not in ("+client|unblock",)
]


def _use_everything(store: coord.Store, errors: list[BaseException]) -> None:
    """Every operation that runs a different set of commands, and a watch open for the sweep of the
    reader (its tenth reap, about 5 s in); the watch's failure goes to ``errors``."""
    with store.watch_tree("") as watch:

        def read() -> None:
            try:
                while watch.get(timeout=0.2) is not None or not watch.closed:
                    pass
            except coord.CoordError as exc:
                errors.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        with store.lease(1) as lease:  # renewed while the reader sweeps: the keepalive script
            store.put("d/a", b"1", lease=lease)
            store.put("d/t", b"2", ttl=0.05)
            store.atomic_put("d/a", b"3", store.get("d/a"), lease=lease)
            store.list("d/")
            store.delete("d/a")
            with store.watch("late", start_revision=1) as replay:  # a catch-up: XRANGE
                replay.get(timeout=0.2)
            store.delete_tree("d/")
            deadline = time.monotonic() + 8
            while not errors and time.monotonic() < deadline:
                time.sleep(0.05)
        watch.close()
        reader.join(timeout=5)
    if errors:
        raise errors[0]


@pytest.mark.parametrize("command", NEEDED)
def test_every_command_of_the_rule_is_needed(
    command: str, make_user: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """The rule is no wider than coord needs: a user without any one of its commands is refused,
    and the refusal names that command."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    rule = without(f"+{command}").replace("{coord}", "{" + namespace + "}")
    options: dict[str, Any] = {"namespace": namespace}
    if command == "wait":
        options["replicas"] = 1  # WAIT is sent only for replicas=N
    connect_url = make_user(rule, **options)
    errors: list[BaseException] = []
    caplog.set_level(logging.DEBUG)
    with pytest.raises(coord.ConfigurationError) as info, coord.connect(connect_url) as store:
        _use_everything(store, errors)
    name = command.split("|")[-1]
    assert re.search(rf"\b{name}\b", str(info.value), re.IGNORECASE), str(info.value)
    assert SECRET not in shown(info.value) and SECRET not in caplog.text


# -- an unreachable server --------------------------------------------------------------------------


def test_a_server_that_is_down_is_unavailable_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens: StoreUnavailable after the timeout, the password not shown."""
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:  # a port that nothing listens on: bound, then closed
        sock.bind((servers.HOST, 0))
        port = sock.getsockname()[1]
    down = url(timeout="1").replace(f":{urlsplit(URL).port}?", f":{port}?")
    with pytest.raises(coord.StoreUnavailable) as info:
        coord.connect(down)
    assert coord_password() not in shown(info.value) and coord_password() not in caplog.text
