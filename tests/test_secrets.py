"""Secrets never shown: a password or token in a URL appears in no message, repr, str, log line or CLI output.

A recognisable secret goes through every failing path of every backend
(malformed URL, unknown or bad option, a port nobody listens on, wrong
credentials against the running test servers), through the ``repr`` and
``str`` of working stores, through every logger at DEBUG, and through the
``coord`` command's output (text, ``--json``, ``-vv``, ``doctor``); each
test asserts it appears nowhere.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import coord
from coord._registry import BACKENDS
from coord._url import mask, parse_url
from coord.testing.conformance import fresh_namespace
from tests.support import ROOT, url_of

SECRET = "Xyzzy-s3cret-9461"
SERVER_BACKENDS = [backend.name for backend in BACKENDS if backend.test_env]
SCHEMES = [scheme for backend in BACKENDS for scheme in backend.schemes]


def shown(error: BaseException) -> str:
    """Everything a user could see of an error: its str, repr and whole traceback, causes included."""
    return f"{error}\n{error!r}\n" + "".join(traceback.format_exception(error))


def attempt(url: str) -> str:
    """Open ``url`` and use it (a put, a get, a lease, a watch): what a user sees of it, error or store."""
    try:
        store = coord.connect(url)
    except Exception as exc:  # any exception: its text is shown, whatever its class
        return shown(exc)
    seen = f"{store!r}\n{store}\n{store.describe()}\n"
    try:
        with store:
            store.put("secrets/k", b"v")
            store.get("secrets/k")
            lease = store.lease(ttl=2)
            with store.watch("secrets/k"):
                store.put("secrets/k", b"w", lease=lease)
            lease.revoke()
            seen += f"{store!r}\n"
    except Exception as exc:
        seen += shown(exc)
    return seen + f"{store!r}\n"


def free_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def with_credentials(url: str, user: str = "coord-user") -> str:
    """``url`` with ``user:SECRET@`` in it, and ``token=SECRET`` (Consul's ACL token option) on Consul."""
    parts = urlsplit(url)
    url = url.replace(f"{parts.scheme}://", f"{parts.scheme}://{user}:{SECRET}@", 1)
    if parts.scheme.startswith("consul"):
        url += f"{'&' if '?' in url else '?'}token={SECRET}"
    return url


# -- URLs that fail before any server is asked ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@127.0.0.1:notaport",
        f"redis://user:{SECRET}@127.0.0.1:70000",
        f"redis://user:{SECRET}@[::1",
        f"nosuch://user:{SECRET}@host",
        f"user:{SECRET}@127.0.0.1:6379",
        f"redis://user:{SECRET}@127.0.0.1:1?colour=red",
        f"redis://user:{SECRET}@127.0.0.1:1?timeout=never",
        f"redis://127.0.0.1:1?password={SECRET}&timeout=never",
        f"consul://127.0.0.1:1?token={SECRET}&timeout=never",
        f"consul://127.0.0.1:1?token={SECRET}&history=lots",
        f"sqlite://user:{SECRET}@/tmp/coord-secrets.db",
        f"sqlite:///tmp/coord-secrets.db?password={SECRET}",
        f"redis://user:pa/{SECRET}@127.0.0.1:6379",
        f"redis://user:pa?{SECRET}@127.0.0.1:6379",
        f"redis://user:pa#{SECRET}@127.0.0.1:6379",
        f"redis://user:123/{SECRET}@127.0.0.1:6379",
        f"memory://user:{SECRET}@name",
        f"memory://name?token={SECRET}",
    ],
)
def test_a_malformed_url_or_option_never_shows_its_secret(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(url)
    assert SECRET not in shown(info.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("scheme", [scheme for scheme in SCHEMES if scheme not in ("sqlite", "memory")])
@pytest.mark.parametrize("problem", ["unknown option", "bad option", "bad port"])
def test_every_scheme_s_bad_url_never_shows_its_secret(
    scheme: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = {
        "unknown option": f"{scheme}://user:{SECRET}@127.0.0.1:1?colour={SECRET}",
        "bad option": f"{scheme}://user:{SECRET}@127.0.0.1:1?timeout=never",
        "bad port": f"{scheme}://user:{SECRET}@127.0.0.1:notaport",
    }[problem]
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(url)
    assert SECRET not in shown(info.value) and SECRET not in caplog.text


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_server_that_is_down_never_shows_the_secret(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    """Nobody listens on the port: the error (StoreUnavailable, at connect or at the first operation) hides it."""
    caplog.set_level(logging.DEBUG)
    (scheme,) = [found.schemes[0] for found in BACKENDS if found.name == backend]
    seen = attempt(with_credentials(f"{scheme}://127.0.0.1:{free_port()}?timeout=0.5"))
    assert "StoreUnavailable" in seen or "ConfigurationError" in seen, seen
    assert SECRET not in seen
    assert SECRET not in caplog.text


# -- the running servers: wrong credentials, and working stores ----------------------------------


@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.server(name)) for name in SERVER_BACKENDS])
@pytest.mark.parametrize("user", ["coord-user", ""], ids=["user", "password-only"])
def test_credentials_the_server_refuses_or_ignores_are_never_shown(
    backend: str, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Against the running test server (which has no such user): whether it refuses them or the
    store works, the secret is in no error, repr, str or log record (every logger, DEBUG)."""
    caplog.set_level(logging.DEBUG)
    url = with_credentials(fresh_namespace(url_of(backend)) + "&timeout=3", user)
    seen = attempt(url)
    assert SECRET not in seen, seen
    assert SECRET not in caplog.text
    assert "Store" in seen  # it got as far as a store, or an error of coord's naming the store
    for record in caplog.records:
        assert SECRET not in repr(record.args) and SECRET not in str(record.msg)


def test_a_working_store_s_repr_and_str_mask_its_url(tmp_path: Path) -> None:
    with coord.connect(f"sqlite://{tmp_path / 'coord.db'}") as store:
        assert repr(store) == f"<SQLiteStore sqlite://{tmp_path / 'coord.db'}>"
    location, options = parse_url(f"etcd2://user:{SECRET}@127.0.0.1:1")
    assert SECRET not in repr(location) and not options


# -- the command line --------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coord", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
    )


CLI_URLS = {
    "malformed": f"redis://user:{SECRET}@127.0.0.1:notaport",
    "unknown option": f"redis://user:{SECRET}@127.0.0.1:1?colour=red",
    "bad secret option": f"consul://127.0.0.1:1?token={SECRET}&timeout=never",
    "down": f"redis://user:{SECRET}@127.0.0.1:1?timeout=0.5",
    "no scheme": f"user:{SECRET}@127.0.0.1",
}


@pytest.mark.parametrize("case", list(CLI_URLS))
@pytest.mark.parametrize(
    "args", [("get", "k"), ("--json", "get", "k"), ("-vv", "get", "k"), ("--json", "-vv", "ls")], ids=" ".join
)
def test_the_cli_never_shows_the_secret_of_a_failing_url(case: str, args: tuple[str, ...]) -> None:
    done = run("--url", CLI_URLS[case], *args)
    assert done.returncode in (2, 4), done.stderr
    assert done.stderr.startswith("coord: ") or "Error" in done.stderr or "DEBUG" in done.stderr, done.stderr
    assert SECRET not in done.stdout and SECRET not in done.stderr


def test_an_error_that_escaped_coord_is_shown_with_its_urls_masked() -> None:
    """Whatever ends the command (here a client library's OSError for a missing CA file), the URL stays masked."""
    done = run("--url", f"consul://127.0.0.1:1?token={SECRET}&ca=/nonexistent/ca.pem&timeout=0.5", "get", "k")
    assert done.returncode in (1, 2, 4), done.stderr
    assert done.stderr and SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("case", ["malformed", "unknown option", "down", "no scheme"])
@pytest.mark.parametrize("args", [(), ("--json",), ("-vv",)], ids=lambda args: " ".join(args) or "text")
def test_doctor_never_shows_the_secret(case: str, args: tuple[str, ...]) -> None:
    done = run(*args, "doctor", "--quick", CLI_URLS[case])
    assert done.returncode in (2, 4), done.stderr
    assert SECRET not in done.stdout and SECRET not in done.stderr


def test_the_url_in_coord_url_is_never_shown() -> None:
    done = run("-vv", "get", "k", env={"COORD_URL": CLI_URLS["down"]})
    assert done.returncode == 4
    assert "redis://" in done.stderr and SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.server(name)) for name in SERVER_BACKENDS])
def test_doctor_on_a_server_with_credentials_never_shows_them(backend: str) -> None:
    """Whether the server refuses the credentials or ignores them, doctor's report (text and JSON) hides them."""
    url = with_credentials(fresh_namespace(url_of(backend)))
    for args in [("-vv", "doctor", "--quick", url), ("--json", "doctor", "--quick", url)]:
        done = run(*args)
        assert done.returncode in (0, 2, 4), done.stderr
        assert SECRET not in done.stdout and SECRET not in done.stderr


def test_doctor_s_candidates_get_the_url_in_their_environment_not_on_their_command_line(tmp_path: Path) -> None:
    """Any user of the host can read a process's command line (ps); its environment is its owner's."""
    from coord.cli._failover import Candidates

    url = f"sqlite://{tmp_path / 'coord.db'}"
    group = Candidates(url, "secrets", ttl=1.0)
    try:
        pid = group.start()
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert url not in command_line and str(tmp_path) not in command_line
        assert f"COORD_URL={url}" in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    finally:
        for process in group.processes.values():
            process.kill()
            process.wait()


# -- the masking itself ------------------------------------------------------------------------


def test_mask_hides_passwords_and_secret_options() -> None:
    assert mask(f"redis://user:{SECRET}@h:1/0") == "redis://user:***@h:1/0"
    assert mask(f"redis://{SECRET}@h:1/0") == "redis://***@h:1/0"
    assert mask(f"consul://h?token={SECRET}&dc=a") == "consul://h?token=***&dc=a"
    assert mask(f"x://h?client_secret={SECRET}&auth_token={SECRET}") == "x://h?client_secret=***&auth_token=***"
    assert mask("sqlite:///tmp/a.db") == "sqlite:///tmp/a.db"


def test_a_location_repr_masks_its_url() -> None:
    location, _ = parse_url(f"redis://user:{SECRET}@h:1")
    assert SECRET not in repr(location) and location.masked == "redis://user:***@h:1"
