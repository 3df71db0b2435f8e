"""Who a RedisStore is and whom it talks to: redis-py's connection options (user, password, TLS), and
which failures are a refused identity, raised as ``ConfigurationError`` at once instead of retried.

A refused identity is one that no retry can fix: a wrong user or password
(``WRONGPASS``), a server that requires one the URL lacks (``NOAUTH``), a
user without a permission coord needs (``NOPERM``), a server certificate
coord does not trust (another CA, or a name that is not the host's), and a
client certificate the server refuses (or requires and was not given).
Everything else that breaks a connection stays transient (``StoreUnavailable``
after ``timeout``).

A missing client certificate shows late: under TLS 1.3 the server checks
it after the handshake, so the client's first write finds the connection
closed (``EOF occurred in violation of protocol``), as after any broken
connection, and the server's alert that says why is mostly lost with it.
``read_alert`` then opens a second connection that sends nothing and hears
the alert (a server that accepts the certificate stays silent), so the
refusal is told from a crash at the cost of one handshake, on that failure
only.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from hashlib import sha1
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.backoff import NoBackoff
from redis.connection import SSLConnection
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, RedisError, ResponseError
from redis.retry import Retry

from ..._errors import ConfigurationError
from ..._url import Location
from ._scripts import SCRIPTS, source

#: Where the ACL rule coord's user needs is written down.
RULE_DOC = "docs/backends.md (Redis, TLS and authentication)"

# A script's ACL refusal: Redis 7.0 says "The user executing the script can't ..." (no error code), 7.2+
# "NOPERM ..." (a NoPermissionError); both end with the script's sha and the line.
_SCRIPT_NOPERM = "The user executing the script can't"
_SCRIPT_REFUSAL = re.compile(r"script: ([0-9a-f]{40}), on @user_script:(\d+)")
_CALLED = re.compile(r"redis\.call\('(\w+)'")
_SCRIPT_NAMES = {sha1(source(name).encode()).hexdigest(): name for name in [*SCRIPTS, "boot"]}


class Refused(RedisError):
    """The server refused the client's certificate (its TLS alert, read after the connection broke)."""


def client_options(
    location: Location,
    *,
    timeout: float,
    db: int,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_verify_hostname: bool,
) -> dict[str, Any]:
    """redis-py's connection options for ``location``: TLS for ``rediss://`` or any ``tls_*`` file."""
    host, port = location.endpoints(6379)[0]
    parts = urlsplit(location.url)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "db": db,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "socket_connect_timeout": min(timeout, 2.0),
        "retry": Retry(NoBackoff(), 0),  # coord retries, at one boundary (RedisStore._call)
        "socket_keepalive": True,
    }
    files = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
    if location.scheme != "rediss" and not any(files.values()):
        return options
    for name, path in files.items():
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{name}: no such file: {path!r}", backend="redis")
    if tls_key is not None and tls_cert is None:
        raise ConfigurationError("tls_key needs tls_cert (the client certificate it goes with)", backend="redis")
    return {
        **options,
        "ssl": True,
        "ssl_ca_certs": tls_ca,  # None: the system's CAs
        "ssl_certfile": tls_cert,
        "ssl_keyfile": tls_key,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": tls_verify_hostname,
    }


def refusal(exc: BaseException, options: dict[str, Any], namespace: str) -> str | None:
    """What the server or its certificate refused, if ``exc`` is a refused identity; else ``None``."""
    if isinstance(exc, Refused):
        return str(exc)
    user = options.get("username") or "default"
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        if options.get("username") is None and options.get("password") is None:
            return f"authentication required, and the URL has no user:password ({exc})"
        return f"authentication failed for user {user!r}: {exc}"
    if isinstance(exc, NoPermissionError) or (isinstance(exc, ResponseError) and str(exc).startswith(_SCRIPT_NOPERM)):
        keys = f"{{{namespace}}} and {{{namespace}}}:*"
        return f"user {user!r} lacks a permission coord needs: {_permission(str(exc), keys)}; see {RULE_DOC}"
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = cause.verify_message or str(cause)
        if "mismatch" in message:
            return (
                f"server certificate does not name {options['host']!r}: {message} (connect by a name the "
                "certificate has; tls_verify_hostname=false skips this check, at the risk of a man in the middle)"
            )
        return f"server certificate not trusted: {message} (tls_ca names the CA to trust)"
    if cause is not None and _refused_certificate(cause):
        return f"client certificate refused: {cause.reason or cause} ({_given(options)})"
    return None


def read_alert(conn: Any, broken: BaseException) -> Refused | None:
    """After a TLS connection broke on its first exchange (``broken``: a socket's error, not the
    server's answer): the server's alert, if it refused our certificate (``tls_cert``); ``None`` if
    it said nothing of the kind.

    The alert may be in the broken socket, if redis-py left it open. Mostly it did not (a failed
    write closes it), or the server's close reset the connection (it had our first command unread),
    which drops the alert: then a second connection, that sends nothing, hears it.
    """
    if not isinstance(conn, SSLConnection) or not isinstance(broken.__cause__ or broken.__context__, OSError):
        return None
    sock = conn._sock
    alert = _alert(sock, 0.2) if isinstance(sock, ssl.SSLSocket) else None
    if alert is None:
        try:
            connect: Callable[[], ssl.SSLSocket] = conn._connect  # TCP connect and TLS handshake
            probe = connect()  # a socket of its own, not the connection's
        except OSError:
            return None
        with probe:
            alert = _alert(probe, 1.0)  # a server that accepts us sends nothing until asked
    if alert is None:
        return None
    sent = {"ssl_certfile": conn.certfile}
    return Refused(f"client certificate refused: {alert.reason or alert} ({_given(sent)})")


def _alert(sock: ssl.SSLSocket, wait: float) -> ssl.SSLError | None:
    """The TLS alert refusing our certificate that ``sock`` holds, if any, within ``wait`` seconds."""
    try:
        sock.settimeout(wait)
        sock.recv(1)
    except ssl.SSLError as exc:
        return exc if _refused_certificate(exc) else None
    except OSError:
        pass
    return None


def _refused_certificate(exc: ssl.SSLError) -> bool:
    """Whether the server's TLS alert refuses the client's certificate (bad, unknown CA, or none)."""
    reason = str(exc.reason or exc).upper()
    return "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason)


def _given(options: dict[str, Any]) -> str:
    return "the client sent tls_cert" if options.get("ssl_certfile") else "the client sent none: tls_cert, tls_key"


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under a redis-py ConnectionError (redis-py raises its own, the socket's is its context)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _permission(text: str, keys: str) -> str:
    """Which command or key a NOPERM was about: the server says so for a command sent alone; for one
    called by a script, the script's line (which the error gives) names the command."""
    found = _SCRIPT_REFUSAL.search(text)
    if found is None:  # "... to run the 'xread' command", or "... to access one of the keys ..."
        return f"{text} (coord's keys: {keys})" if "key" in text else text
    name = _SCRIPT_NAMES.get(found.group(1))
    lines = source(name).splitlines() if name else []
    number = int(found.group(2))
    called = _CALLED.findall(lines[number - 1]) if 0 < number <= len(lines) else []
    what = " or ".join(called) or "a command"
    where = f"script {name!r}, line {number}" if name else "a script"
    if "key" in text:
        return f"{what} (in {where}) on one of coord's keys, {keys}: {text}"
    return f"{what} (in {where}), which the user may not run: {text}"
