"""Who the Store's sessions are, how they reach the servers, and who may touch the znodes they create.

``Security`` is built once from the URL and options and given to every
kazoo client of the Store (the main session and each lease session), so all
of them authenticate alike and create znodes with the same ACL.

- **Digest authentication**: ``zookeeper://user:password@...`` sends
  ``addauth digest user:password`` on every (re)connect. ZooKeeper's digest
  scheme checks no password: any pair is accepted as the identity
  ``digest:user:base64(sha1(user:password))``. A wrong password is therefore
  another identity, refused by the ACLs of the znodes the right one created
  (``NoAuth``), not at login.
- **ACLs** (``acl=``): ``creator`` (the default with credentials) gives every
  permission to the URL's digest identity only; ``open`` (the default
  without) is ZooKeeper's ``world:anyone`` with every permission: anyone who
  can reach the server may read, forge or delete coord's keys. Otherwise a
  comma-separated list of ZooKeeper ACL entries ``scheme:id:perms`` (perms
  from ``cdrwa``), which may include ``creator``.
- **TLS** (``zookeepers://``, or any ``tls_*`` option): the server's
  certificate is verified against ``tls_ca`` (the system's CAs without it)
  and, unless ``tls_verify_hostname=false``, its host name; ``tls_cert`` and
  ``tls_key`` are the client certificate.

A certificate refused during the TLS handshake (the server's by us, ours by
the server) cannot get better by retrying: ``watch_refusals`` records it, and
``refusal`` lets the caller fail at once instead of retrying for ``timeout``.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from kazoo.client import KazooClient
from kazoo.protocol.serialization import Auth
from kazoo.security import ACL, OPEN_ACL_UNSAFE, Id, Permissions, make_digest_acl

from ..._errors import ConfigurationError
from ..._url import Location, mask

BACKEND = "zookeeper"
_PERMISSIONS = {
    "c": Permissions.CREATE,
    "d": Permissions.DELETE,
    "r": Permissions.READ,
    "w": Permissions.WRITE,
    "a": Permissions.ADMIN,
}
# Alerts a server sends when it refuses (or finds no) client certificate.
_CLIENT_CERT_REFUSED = (
    "BAD_CERTIFICATE",
    "CERTIFICATE_REQUIRED",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "ACCESS_DENIED",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
)


@dataclass(frozen=True)
class Security:
    """How every session of one Store connects and authenticates, and the ACL of the znodes it creates."""

    shown: str  # the URL as it may be shown (password masked)
    tls: dict[str, Any] = field(default_factory=dict)  # kazoo's TLS arguments; empty: plaintext
    auth: list[tuple[str, str]] = field(default_factory=list)  # kazoo's auth_data
    acl: list[ACL] | None = None  # None: kazoo's default, the open ACL
    user: str | None = None

    def client_args(self) -> dict[str, Any]:
        """KazooClient's keyword arguments for all of this."""
        return {**self.tls, "auth_data": list(self.auth) or None, "default_acl": self.acl}

    def refused(self, what: str) -> ConfigurationError:
        """The error for an identity or a certificate the server refused, or a server certificate we refused."""
        return ConfigurationError(f"ZooKeeper at {self.shown}: {what}", backend=BACKEND)

    def not_allowed(self, path: str | None) -> ConfigurationError:
        """The error for a request the znode's ACL refused this identity (``NoAuth``)."""
        who = f"the digest identity of user {self.user!r}" if self.user else "a client without credentials"
        where = f" on {path}" if path else ""
        return self.refused(f"not allowed{where}: its ACL does not grant {who} (a wrong password is another identity)")


def security(
    location: Location,
    acl: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_verify_hostname: bool,
) -> Security:
    """The ``Security`` of a URL and its options; ``ConfigurationError`` for anything malformed or missing."""
    user, password = _credentials(location.url)
    tls = _tls(location.scheme, tls_ca, tls_cert, tls_key, tls_verify_hostname)
    auth = [] if user is None else [("digest", f"{user}:{password}")]
    shown = mask(location.url.split("?", 1)[0])  # the URL without its options, secrets masked
    return Security(shown, tls, auth, _acl(acl, user, password), user)


def _credentials(url: str) -> tuple[str | None, str | None]:
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        raise ConfigurationError(f"malformed credentials in the store URL {mask(url)!r}", backend=BACKEND) from None
    if user is None:
        return None, None
    if password is None:
        raise ConfigurationError(
            f"{mask(url)}: ZooKeeper's digest authentication needs user:password, not a user alone",
            backend=BACKEND,
        )
    return unquote(user), unquote(password)


def _tls(scheme: str, ca: str | None, cert: str | None, key: str | None, verify_hostname: bool) -> dict[str, Any]:
    if scheme != "zookeepers" and ca is None and cert is None and key is None:
        return {}
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{name}: no such file: {path!r}", backend=BACKEND)
    if key is not None and cert is None:
        raise ConfigurationError("tls_key needs tls_cert (the client certificate it goes with)", backend=BACKEND)
    # Load them once here, so that a file that is not PEM is refused now, not as a failing handshake (a bare
    # context: the system's CAs, which kazoo loads itself, take 20 ms to load).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if ca is not None:
            context.load_verify_locations(ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(f"cannot load tls_ca, tls_cert or tls_key: {exc}", backend=BACKEND) from exc
    # kazoo loads a client certificate only given both files: one PEM holding both is given twice.
    return {
        "use_ssl": True,
        "ca": ca,
        "certfile": cert,
        "keyfile": key if key is not None else cert,
        "verify_certs": True,
        "check_hostname": verify_hostname,
    }


def _acl(spec: str | None, user: str | None, password: str | None) -> list[ACL] | None:
    creator = None if user is None else make_digest_acl(user, password, all=True)
    if spec is None:
        return None if creator is None else [creator]
    entries: list[ACL] = []
    for item in (part.strip() for part in spec.split(",")):
        if item == "open":
            entries += OPEN_ACL_UNSAFE
        elif item == "creator":
            if creator is None:
                raise ConfigurationError("acl=creator needs a user and password in the URL", backend=BACKEND)
            entries.append(creator)
        else:
            entries.append(_entry(item))
    if not entries:
        raise ConfigurationError("acl= names no entry", backend=BACKEND)
    return entries


def _entry(item: str) -> ACL:
    """One ``scheme:id:perms`` entry (the id may hold colons, as digest's ``user:hash`` does)."""
    scheme, _, rest = item.partition(":")
    ident, _, perms = rest.rpartition(":")
    if not scheme or not ident or not perms or set(perms) - set(_PERMISSIONS):
        raise ConfigurationError(
            f"acl entry {item!r}: expected creator, open or scheme:id:perms (perms from cdrwa)", backend=BACKEND
        )
    return ACL(sum(_PERMISSIONS[p] for p in set(perms)), Id(scheme, ident))


class Refusal:
    """The last certificate refusal seen by one client's connection attempts (cleared by a connection)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.seen = threading.Event()


_refusals: weakref.WeakKeyDictionary[KazooClient, Refusal] = weakref.WeakKeyDictionary()


def watch_refusals(client: KazooClient) -> None:
    """Record in ``refusal(client)`` every TLS handshake of ``client`` that failed over a certificate."""
    refusal = _refusals[client] = Refusal()
    connect = client._connection._connect

    def recorded(*args: Any) -> Any:
        try:
            result = connect(*args)
        except Exception as exc:
            reason = _certificate_refused(exc)
            if reason is not None:
                refusal.reason = reason
                refusal.seen.set()
            raise
        refusal.reason = None
        return result

    client._connection._connect = recorded


def refusal(client: KazooClient) -> Refusal | None:
    return _refusals.get(client)


def _certificate_refused(exc: BaseException | None) -> str | None:
    """What a certificate refusal behind ``exc`` refused (kazoo wraps the ssl error); ``None`` if none."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"server certificate not trusted ({exc.verify_message})"
        if isinstance(exc, ssl.SSLError) and any(alert in str(exc.reason) for alert in _CLIENT_CERT_REFUSED):
            return f"client certificate refused by the server ({exc.reason})"
        exc = exc.__cause__ or exc.__context__
    return None


class HideCredentials(logging.Filter):
    """kazoo logs every request it sends at DEBUG, ``addauth``'s ``user:password`` included: masked here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, Auth) for arg in record.args):
            record.args = tuple(
                Auth(arg.auth_type, arg.scheme, "***") if isinstance(arg, Auth) else arg for arg in record.args
            )
        return True
