"""ZooKeeper over TLS with digest authentication: the right identity works, every other is refused, no secret shown.

Against the secure test server (``zookeeper-secure`` of scripts/servers.py: TLS with client certificates
required, digest authentication required), whose URL is ``$COORD_TEST_ZOOKEEPER_SECURE``. Each test works
under a ``root`` of its own, so the ACLs one test's Stores set never meet another's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl, make_digest_acl_credential

import coord
from tests.support import ROOT, required_env, servers, url_of
from tests.support.servers import refused_options
from tests.test_secrets import shown

SECRET = "Xyzzy-zk-s3cret-7318"
USER = servers.ZOOKEEPER_SECURE_USER
PASSWORD = servers.ZOOKEEPER_SECURE_PASSWORD
REFUSED_WITHIN = 3.0  # a refusal is at once: well under the timeout=20 the tests give


@pytest.fixture
def secure_url() -> str:
    """The secure server's URL, with the tests' certificates and identity (fails under COORD_REQUIRE_SERVERS=1)."""
    return required_env("COORD_TEST_ZOOKEEPER_SECURE")


@pytest.fixture
def root() -> str:
    return f"/sec{uuid.uuid4().hex[:12]}"


@pytest.fixture
def open_store(secure_url: str, root: str) -> Iterator[Callable[..., coord.Store]]:
    """Open Stores on the test's own root (closed at its end); keywords replace the URL's parts and options."""
    opened: list[coord.Store] = []

    def opener(user: str = USER, password: str = PASSWORD, **options: object) -> coord.Store:
        store = coord.connect(with_identity(secure_url, user, password), root=root, timeout=20, **options)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


def with_identity(url: str, user: str | None, password: str | None) -> str:
    """``url`` with its userinfo replaced (removed if ``user`` is None)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    userinfo = "" if user is None else user if password is None else f"{user}:{password}"
    netloc = f"{userinfo}@{hosts}" if userinfo else hosts
    return parts._replace(netloc=netloc).geturl()


def with_options(url: str, **options: str | None) -> str:
    """``url`` with query options replaced (removed where None)."""
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **options}
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items() if v is not None)).geturl()


def kazoo_client(url: str, *auth: tuple[str, str]) -> KazooClient:
    """A bare kazoo client on the secure server's TLS port, with the tests' client certificate."""
    options = dict(parse_qsl(urlsplit(url).query))
    client = KazooClient(
        hosts=urlsplit(url).netloc.rpartition("@")[2],
        use_ssl=True,
        ca=options["tls_ca"],
        certfile=options["tls_cert"],
        keyfile=options["tls_key"],
        auth_data=list(auth) or None,
    )
    client.start(timeout=20)
    return client


def refused(url: str, root: str, error: type[coord.CoordError] = coord.ConfigurationError) -> coord.CoordError:
    """Open ``url``, which must fail with ``error`` at once, and return the error."""
    started = time.monotonic()
    with pytest.raises(error) as info:
        coord.connect(url, root=root, timeout=20)
    assert time.monotonic() - started < REFUSED_WITHIN, "a refusal must not wait for the timeout"
    assert info.value.backend == "zookeeper"
    return info.value


# -- the right identity works -----------------------------------------------------------------


def test_tls_with_digest_puts_gets_and_locks(open_store: Callable[..., coord.Store]) -> None:
    store = open_store()
    assert store.describe().startswith(f"zookeepers://{USER}:***@")
    store.put("a/b", b"v")
    assert store.get("a/b").value == b"v"
    with coord.Lock("lock", store=store, ttl=2.0) as lock:  # a lease session: TLS and digest too
        assert lock.holding
    assert PASSWORD not in repr(store) and PASSWORD not in str(store)


def test_every_znode_coord_creates_grants_its_identity_only(
    open_store: Callable[..., coord.Store], secure_url: str, root: str
) -> None:
    store = open_store()
    store.put("dir/key", b"v")
    with coord.Lock("lock", store=store, ttl=2.0):  # an ephemeral znode, on the lease session
        owner = kazoo_client(secure_url, ("digest", f"{USER}:{PASSWORD}"))
        try:
            expected = [make_digest_acl(USER, PASSWORD, all=True)]
            znodes = tree(owner, root)  # root, kv, log, blob, keys, guards, log entries, the lock's ticket
            assert len(znodes) > 6
            for path in znodes:
                assert owner.get_acls(path)[0] == expected, path
        finally:
            owner.stop()
            owner.close()


def test_another_store_of_the_same_identity_shares_keys_and_locks(open_store: Callable[..., coord.Store]) -> None:
    first, second = open_store(), open_store()
    first.put("k", b"1")
    assert second.get("k").value == b"1"
    second.delete("k")
    assert not first.exists("k")
    holder = coord.Lock("lock", store=first, ttl=2.0)
    waiter = coord.Lock("lock", store=second, ttl=2.0)
    assert holder.acquire(blocking=False)
    assert not waiter.acquire(blocking=False), "the lock excludes across two authenticated Stores"
    holder.release()
    assert waiter.acquire(timeout=10)
    waiter.release()


# -- every other identity is refused ----------------------------------------------------------


def test_another_identity_cannot_read_or_delete_a_ticket(
    open_store: Callable[..., coord.Store], secure_url: str, root: str
) -> None:
    store = open_store()
    store.put("k", b"v")
    with coord.Lock("lock", store=store, ttl=2.0):
        owner = kazoo_client(secure_url, ("digest", f"{USER}:{PASSWORD}"))
        try:
            znodes = tree(owner, root)
        finally:
            owner.stop()
            owner.close()
        assert any(path.endswith("=k") for path in znodes) and len(znodes) > 6
        for auth in [("digest", f"{USER}:{SECRET}"), ("digest", f"mallory:{SECRET}")]:
            stranger = kazoo_client(secure_url, auth)
            try:
                for path, children in znodes.items():
                    with pytest.raises(NoAuthError):
                        stranger.get(path)
                    if not children and path != root:  # deleting needs DELETE on the parent: refused too
                        with pytest.raises(NoAuthError):
                            stranger.delete(path)
            finally:
                stranger.stop()
                stranger.close()
        assert store.get("k").value == b"v"


def tree(client: KazooClient, root: str) -> dict[str, list[str]]:
    """Every znode under ``root`` (itself included), with its children."""
    found: dict[str, list[str]] = {}
    paths = [root]
    while paths:
        path = paths.pop()
        found[path] = client.get_children(path)
        paths += [f"{path}/{child}" for child in found[path]]
    return found


@pytest.mark.parametrize("user", [USER, "mallory"])
def test_a_store_with_a_wrong_password_or_another_user_is_refused_at_once(
    open_store: Callable[..., coord.Store], secure_url: str, root: str, user: str
) -> None:
    open_store().put("k", b"v")  # the root now belongs to the tests' identity
    error = refused(with_identity(secure_url, user, SECRET), root)
    assert "not allowed" in str(error) and root in str(error)
    assert SECRET not in shown(error)


def test_a_read_only_identity_can_read_and_is_refused_a_delete(
    open_store: Callable[..., coord.Store], root: str
) -> None:
    reader_acl = f"digest:reader:{make_digest_acl_credential('reader', SECRET).split(':', 1)[1]}:r"
    owner = open_store(acl=f"creator,{reader_acl}")
    owner.put("k", b"v")
    reader = open_store(user="reader", password=SECRET)
    assert reader.get("k").value == b"v"
    with pytest.raises(coord.ConfigurationError, match="not allowed") as info:
        reader.delete("k")
    assert SECRET not in shown(info.value)
    assert owner.get("k").value == b"v"


# -- refusals: the documented error, at once --------------------------------------------------


def test_a_server_certificate_from_another_ca_is_refused(secure_url: str, root: str) -> None:
    other_ca = str(servers.tls_files()["other-ca"])
    error = refused(with_identity(with_options(secure_url, tls_ca=other_ca), USER, SECRET), root)
    assert "server certificate not trusted" in str(error)
    assert SECRET not in shown(error)


def test_a_client_without_a_certificate_is_refused(secure_url: str, root: str) -> None:
    error = refused(with_identity(with_options(secure_url, tls_cert=None, tls_key=None), USER, SECRET), root)
    assert "client certificate refused" in str(error)
    assert SECRET not in shown(error)


def test_a_client_without_credentials_is_refused(secure_url: str, root: str) -> None:
    error = refused(with_identity(secure_url, None, None), root)
    assert "requires authentication" in str(error)


def test_a_server_down_is_unavailable(secure_url: str, root: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    parts = urlsplit(with_identity(secure_url, USER, SECRET))
    url = parts._replace(netloc=f"{USER}:{SECRET}@127.0.0.1:{port}").geturl()
    with pytest.raises(coord.StoreUnavailable) as info:
        coord.connect(url, root=root, timeout=1)
    assert SECRET not in shown(info.value)


def test_bad_security_options_are_refused_before_connecting(secure_url: str) -> None:
    for url, match in [
        (with_identity(secure_url, "alice", None), "user:password"),
        (with_options(secure_url, acl="digest:alice"), "acl entry"),
        (with_options(secure_url, acl="world:anyone:rx"), "acl entry"),
        (with_options(with_identity(secure_url, None, None), acl="creator"), "acl=creator"),
        (with_options(secure_url, tls_ca="/nonexistent/ca.pem"), "tls_ca"),
        (with_options(secure_url, tls_cert=None), "tls_key needs tls_cert"),
        (with_options(secure_url, tls_ca=__file__), "cannot load"),
    ]:
        with pytest.raises(coord.ConfigurationError, match=match) as info:
            coord.connect(url)
        assert PASSWORD not in shown(info.value)


# -- secrets never shown ----------------------------------------------------------------------


def test_the_password_is_never_logged(
    open_store: Callable[..., coord.Store], secure_url: str, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)  # kazoo logs every request it sends at DEBUG, addauth's included, and more below it
    store = open_store(password=SECRET)
    store.put("k", b"v")
    with coord.Lock("lock", store=store, ttl=2.0):
        pass
    for url in [
        with_identity(secure_url, "mallory", SECRET),
        with_identity(with_options(secure_url, tls_cert=None, tls_key=None), USER, SECRET),
        with_identity(with_options(secure_url, tls_ca=str(servers.tls_files()["other-ca"])), USER, SECRET),
    ]:
        with pytest.raises(coord.ConfigurationError) as info:
            coord.connect(url, root=root, timeout=20)
        assert SECRET not in shown(info.value)
    assert "addauth" in caplog.text.lower() or "Auth(" in caplog.text, "the auth request was logged, masked"
    assert SECRET not in caplog.text


# -- without credentials: open, as documented -------------------------------------------------


@pytest.mark.server("zookeeper")
def test_without_credentials_znodes_are_open() -> None:
    root = f"/open{uuid.uuid4().hex[:12]}"
    store = coord.connect(url_of("zookeeper"), root=root)
    try:
        store.put("k", b"v")
        client = KazooClient(hosts=urlsplit(url_of("zookeeper")).netloc)
        client.start(timeout=20)
        try:
            assert client.get_acls(f"{root}/kv/=k")[0] == OPEN_ACL_UNSAFE
        finally:
            client.stop()
            client.close()
    finally:
        store.close()


# -- the whole conformance suite over TLS with digest -----------------------------------------


def test_the_conformance_suite_passes_over_tls_with_digest(secure_url: str, root: str, tmp_path: Path) -> None:
    """Every Store guarantee holds on the secure server too (about 35 s: the suite's own run, in a child)."""
    command = [sys.executable, "-m", "pytest", "-p", "coord.testing.conformance", "-q", "-p", "no:cacheprovider"]
    command += ["--store-url", with_options(secure_url, root=root)]
    # A wrong password is another identity to ZooKeeper (docs/security.md): only a certificate is refused at once.
    command += refused_options(with_options(secure_url, root=root), password=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this worktree's coord; the plugin's tests alone
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
