#!/usr/bin/env python3
"""Start, stop and restart the real servers coord's tests use, on 127.0.0.1.

    python scripts/servers.py install         # apt-get install what is missing (and faketime)
    python scripts/servers.py start [NAME...] # start (all by default), wait until each answers
    python scripts/servers.py env             # print the COORD_TEST_* exports for a shell to eval
    python scripts/servers.py stop [NAME...]  # stop by PID
    python scripts/servers.py restart NAME    # kill -9, then start again on the same data

Servers named etcd1, etcd2, etcd3 form a three-member etcd cluster, started on demand.

Servers: etcd (v3 and, with --enable-v2, v2), zookeeper, redis, and consul: the
tests' Consul HTTP API emulator (no Consul server installs here); and etcd-secure,
zookeeper-secure, redis-secure: the same servers with TLS (client certificates of
the tests' CA, made by ``tls_files()``) and authentication (docs/security.md). Each listens on
127.0.0.1 on a non-default port and keeps its data and PID file under
$COORD_SERVERS_DIR (default /tmp/coord-servers); $COORD_SERVERS_PORT_OFFSET
shifts every port. Tests import this module to kill, pause and restart servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ.get("COORD_SERVERS_DIR", "/tmp/coord-servers"))
HOST = "127.0.0.1"
# Shifts every port, so a second set of servers can run beside the first (with its own COORD_SERVERS_DIR).
OFFSET = int(os.environ.get("COORD_SERVERS_PORT_OFFSET", "0"))


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    packages: tuple[str, ...]
    binary: str

    @property
    def dir(self) -> Path:
        return ROOT / self.name

    @property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    def command(self) -> list[str]:
        data = self.dir / "data"
        if self.name.startswith("etcd"):
            member = int(self.name[4:] or 0)
            peer = self.port + 10
            cmd = [
                "etcd", "--name", self.name, "--data-dir", str(data),
                "--listen-client-urls", f"http://{HOST}:{self.port}",
                "--advertise-client-urls", f"http://{HOST}:{self.port}",
                "--listen-peer-urls", f"http://{HOST}:{peer}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
                "--enable-v2=true", "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--logger", "zap", "--log-outputs", str(self.dir / "log"),
            ]  # fmt: skip
            if member:
                cluster = ",".join(f"etcd{i}=http://{HOST}:{CLUSTER[i - 1].port + 10}" for i in (1, 2, 3))
                cmd += ["--initial-cluster", cluster, "--initial-cluster-token", "coord-test"]
            else:
                cmd += ["--initial-cluster", f"{self.name}=http://{HOST}:{peer}"]
            return cmd
        if self.name == "zookeeper":
            cfg = self.dir / "zoo.cfg"
            cfg.write_text(
                f"tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=60000\ninitLimit=10\nsyncLimit=5\n"
                f"dataDir={data}\nclientPort={self.port}\nclientPortAddress={HOST}\n"
                "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat\n"
                # Not the default 60 connections per address: the benchmarks run 65 contenders on one host.
                "maxClientCnxns=1000\n"
            )
            classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
            return [
                "java", "-Xmx256m", f"-Dzookeeper.log.dir={self.dir}", "-Dzookeeper.root.logger=WARN,CONSOLE",
                "-cp", classpath, "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg),
            ]  # fmt: skip
        if self.name == "zookeeper-secure":
            return _zookeeper_secure_command(self)
        if self.name == "consul":
            # No Consul server installs here: the tests' Consul HTTP API emulator stands in (docs/backends.md).
            # The limits are those docs/backends.md asks of a real agent; a short session_ttl_min keeps expiry tests short.
            emulator = Path(__file__).resolve().parent.parent / "tests" / "support" / "consul_emulator.py"
            return [
                sys.executable, str(emulator), "--port", str(self.port), "--min-session-ttl", "1s",
                "--kv-max-value-size", str(2 * 1024 * 1024), "--txn-max-req-len", str(8 * 1024 * 1024),
                "--data-dir", str(data),
            ]  # fmt: skip
        if self.name == "redis":
            return [
                "redis-server", "--bind", HOST, "--port", str(self.port), "--dir", str(data),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "yes",
            ]  # fmt: skip
        raise ValueError(self.name)

    def url(self, scheme: str) -> str:
        return f"{scheme}://{HOST}:{self.port}"

    def env(self) -> list[str]:
        """Exports of its own besides the backend table's (a secure server's URLs with credentials)."""
        if self.name == "zookeeper-secure":
            return [f"export COORD_TEST_ZOOKEEPER_SECURE='{zookeeper_secure_url()}'"]
        return []

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 60.0) -> None:
        proc = self.launch()
        self.wait_ready(timeout, proc)

    def launch(self) -> subprocess.Popen[bytes] | None:
        """Start the process without waiting for it (cluster members must start together)."""
        if self.pid():
            return None
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        with open(self.dir / "out.log", "ab") as out:
            proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        return proc

    def wait_ready(self, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}; see {self.dir / 'out.log'}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on {HOST}:{self.port} within {timeout}s")

    def answers(self) -> bool:
        probe = {
            "zookeeper": (b"ruok", b"imok"),
            "redis": (b"PING\r\n", b"+PONG"),
        }
        if self.name == "zookeeper-secure":
            return _zookeeper_secure_answers(self)
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                if self.name.startswith("etcd"):
                    sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    return b'"health":"true"' in _read_all(sock)
                if self.name == "consul":
                    sock.sendall(b"GET /v1/status/leader HTTP/1.0\r\n\r\n")
                    return b" 200 " in _read_all(sock)
                request, answer = probe[self.name]
                sock.sendall(request)
                return _read_all(sock).startswith(answer)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGCONT)
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        # The whole group must be gone, not only its leader: a child (Redis's AOF rewrite, say) that
        # outlives it holds the port, and the server started next would fail to listen.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.05)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while time.monotonic() < deadline + 15 and _group_alive(pid):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        pid = self.pid()
        if pid:
            os.killpg(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid:
            os.killpg(pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if sum(map(len, chunks)) > 65536 or b"+PONG" in chunk:
            break
    return b"".join(chunks)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group ``pgid`` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


SERVERS = {
    "etcd": Server("etcd", 23790 + OFFSET, ("etcd-server",), "etcd"),
    "zookeeper": Server("zookeeper", 21810 + OFFSET, ("zookeeper", "default-jre-headless"), "java"),
    "redis": Server("redis", 26379 + OFFSET, ("redis-server",), "redis-server"),
    # The tests' Consul HTTP API emulator (tests/support/consul_emulator.py), started like a server.
    "consul": Server("consul", 28500 + OFFSET, (), sys.executable),
    # ZooKeeper with TLS (Netty, client certificates required) and digest authentication required.
    "zookeeper-secure": Server("zookeeper-secure", 21910 + OFFSET, ("zookeeper", "default-jre-headless"), "java"),
}
# A three-member etcd cluster for failover tests; started on demand by the tests.
CLUSTER = [Server(f"etcd{i}", 23790 + OFFSET + i * 100, ("etcd-server",), "etcd") for i in (1, 2, 3)]
ALL = {**SERVERS, **{server.name: server for server in CLUSTER}}


def tls_files() -> dict[str, Path]:
    """The tests' certificates, made once under ``ROOT/tls`` by trustme: a CA, a server certificate for
    127.0.0.1 and localhost, a client certificate (CN ``coord-client``), and a second CA that signed
    neither (to test a refused certificate). Every path is PEM; ``*-key`` files are the private keys."""
    tls = ROOT / "tls"
    names = ("ca", "server", "server-key", "client", "client-key", "other-ca")
    files = {name: tls / f"{name}.pem" for name in names}
    if all(path.exists() for path in files.values()):
        return files
    import trustme  # the test extra: only the TLS servers and tests need it

    tls.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="coord tests")
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("coord-client", common_name="coord-client")
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server-key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    trustme.CA(organization_name="not coord").cert_pem.write_to_path(str(files["other-ca"]))
    for path in files.values():
        path.chmod(0o644)  # servers running as other users (none here) could read them; keys are test-only
    return files


# -- redis-secure: Redis over TLS only, with ACL users (tests/test_security_redis.py) -------------------

#: The ACL rule of the user ``coord`` of redis-secure: what coord needs on the namespace ``{coord}``,
#: nothing else. docs/backends.md (Redis, "TLS and authentication") gives the same rule, and
#: tests/test_security_redis.py checks that the two agree and that coord works with no more.
REDIS_ACL_RULE = (
    "resetchannels ~{coord} ~{coord}:* -@all "
    "+eval +evalsha +ping +client|id +client|unblock +wait +info +time "
    "+get +set +incr +exists +pexpire +hget +hmget +hset +hdel +hscan "
    "+zadd +zrem +zrange +zrangebylex +zrangebyscore +zscore +xadd +xrange +xrevrange +xread"
)
#: The second address redis-secure listens on: its certificate does not name it (a hostname mismatch).
REDIS_UNNAMED_HOST = "127.0.0.2"


def redis_secret(user: str) -> str:
    """The password of ``user`` (``coord``, or ``admin``: every command and key) on redis-secure,
    made at random once under ``ROOT/redis-secure``."""
    path = ROOT / "redis-secure" / f"{user}.password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(os.urandom(12).hex())
        path.chmod(0o600)
    return path.read_text()


@dataclass(frozen=True)
class RedisSecure(Server):
    """Redis on a TLS port only (``--port 0``), every client with a certificate of the tests' CA,
    and ACL users: ``coord`` (``REDIS_ACL_RULE``), ``admin``, and ``default`` disabled."""

    def command(self) -> list[str]:
        tls = tls_files()
        acl = self.dir / "users.acl"
        acl.write_text(
            "user default off resetchannels -@all\n"
            f"user admin on >{redis_secret('admin')} ~* &* +@all\n"
            f"user coord on >{redis_secret('coord')} {REDIS_ACL_RULE}\n"
        )
        acl.chmod(0o600)
        return [
            "redis-server", "--bind", HOST, REDIS_UNNAMED_HOST, "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(tls["server"]), "--tls-key-file", str(tls["server-key"]),
            "--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "yes", "--aclfile", str(acl),
            "--dir", str(self.dir / "data"), "--save", "", "--appendonly", "no",
        ]  # fmt: skip

    def env(self) -> list[str]:
        return [f"export COORD_TEST_REDIS_SECURE='{self.url()}'"]

    def url(self, scheme: str = "rediss") -> str:
        """The URL of user ``coord``, with the CA and client certificate: one that connects."""
        tls = tls_files()
        return (
            f"{scheme}://coord:{redis_secret('coord')}@{HOST}:{self.port}"
            f"?tls_ca={tls['ca']}&tls_cert={tls['client']}&tls_key={tls['client-key']}"
        )

    def answers(self) -> bool:
        import ssl

        tls = tls_files()
        context = ssl.create_default_context(cafile=str(tls["ca"]))
        context.load_cert_chain(str(tls["client"]), str(tls["client-key"]))
        hello = f"AUTH admin {redis_secret('admin')}\r\nPING\r\n".encode()
        try:
            with (
                socket.create_connection((HOST, self.port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname=HOST) as sock,
            ):
                sock.sendall(hello)
                return _read_all(sock).startswith(b"+OK\r\n+PONG")
        except OSError:
            return False


SERVERS["redis-secure"] = ALL["redis-secure"] = RedisSecure(
    "redis-secure", 26380 + OFFSET, ("redis-server",), "redis-server"
)


# -- end of redis-secure ---------------------------------------------------------------------------------


#: The secure ZooKeeper's digest credentials (ZooKeeper's digest scheme checks no password: any user:password
#: authenticates as its own identity, so these are simply the identity the tests' URL uses).
ZOOKEEPER_SECURE_USER, ZOOKEEPER_SECURE_PASSWORD = "coord", "zk-test-password"


def _zookeeper_secure_command(server: Server) -> list[str]:
    """ZooKeeper 3.8 on Netty: TLS on ``port`` (client certificates from the tests' CA required), a plaintext
    port at ``port + 1`` (127.0.0.1 only: to compare TLS with plaintext on one server), and on both
    every session must authenticate with the digest scheme (``enforce.auth``) before any request."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509 import load_pem_x509_certificate

    tls = tls_files()
    # ZooKeeper 3.8 reads a PEM trust store, but its PEM key reader knows RSA and DSA keys only (trustme's are
    # ECDSA): the server's key and certificate go to it as PKCS#12.
    keystore = server.dir / "server-keystore.p12"
    key = serialization.load_pem_private_key(tls["server-key"].read_bytes(), None)
    cert = load_pem_x509_certificate(tls["server"].read_bytes())
    encryption = serialization.BestAvailableEncryption(b"coord-test")
    keystore.write_bytes(pkcs12.serialize_key_and_certificates(b"server", key, cert, None, encryption))  # type: ignore[arg-type]
    cfg = server.dir / "zoo.cfg"
    cfg.write_text(
        f"tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=60000\ninitLimit=10\nsyncLimit=5\n"
        f"dataDir={server.dir / 'data'}\nclientPort={server.port + 1}\nclientPortAddress={HOST}\n"
        f"secureClientPort={server.port}\nsecureClientPortAddress={HOST}\n"
        "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat\nmaxClientCnxns=1000\n"
        f"ssl.keyStore.location={keystore}\nssl.keyStore.type=PKCS12\nssl.keyStore.password=coord-test\n"
        f"ssl.trustStore.location={tls['ca']}\nssl.trustStore.type=PEM\nssl.clientAuth=need\n"
        "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n"
        "enforce.auth.enabled=true\nenforce.auth.schemes=digest\n"
    )
    # Debian's zookeeper.jar lists Netty's handler but not the codec and resolver it needs.
    netty = ":".join(f"/usr/share/java/netty-{part}.jar" for part in ("codec", "resolver"))
    classpath = f"/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:{netty}"
    return [
        "java", "-Xmx256m", f"-Dzookeeper.log.dir={server.dir}", "-Dzookeeper.root.logger=WARN,CONSOLE",
        "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        "-cp", classpath, "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg),
    ]  # fmt: skip


def _zookeeper_secure_answers(server: Server) -> bool:
    """``ruok`` over TLS, with the tests' client certificate: the secure port is up and its TLS works."""
    import ssl

    tls = tls_files()
    context = ssl.create_default_context(cafile=str(tls["ca"]))
    context.load_cert_chain(str(tls["client"]), str(tls["client-key"]))
    try:
        with (
            socket.create_connection((HOST, server.port), timeout=1) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as sock,
        ):
            sock.sendall(b"ruok")
            return _read_all(sock).startswith(b"imok")
    except OSError:
        return False


def zookeeper_secure_url() -> str:
    """A URL that opens the secure ZooKeeper: TLS with the client certificate, and the digest identity."""
    tls, server = tls_files(), SERVERS["zookeeper-secure"]
    return (
        f"zookeepers://{ZOOKEEPER_SECURE_USER}:{ZOOKEEPER_SECURE_PASSWORD}@{HOST}:{server.port}"
        f"?tls_ca={tls['ca']}&tls_cert={tls['client']}&tls_key={tls['client-key']}"
    )


# -- etcd-secure: etcd over TLS with client certificates, v3 and v2 authentication (issue #12) ---------------

#: The test-only credentials of etcd-secure (nothing secret: a local test server). ``coord`` may read and
#: write every v3 key (the conformance suite picks prefixes of its own) and the v2 keys under ``/coord``
#: (the etcd2 backend's default root) only; ``limited`` the v3 keys under ``coord/`` only.
ETCD_SECURE_USERS = {"root": "root-Pw-4711", "coord": "coord-Pw-0815", "limited": "limited-Pw-2342"}
#: etcd-secure's auth tokens (JWTs) expire 2 s after etcd gave them, used or not: long enough to send a
#: request with, short enough for the tests to see coord renew them while it holds a lock.
ETCD_SECURE_TOKEN_TTL = 2


class SecureEtcd(Server):
    """etcd with HTTPS client URLs that require a client certificate signed by the tests' CA, and with
    authentication on for its v3 API (JWTs that expire after ``ETCD_SECURE_TOKEN_TTL``) and its v2 API
    (basic). ``start`` sets up the users and roles once (the data directory keeps them)."""

    def jwt_keys(self) -> tuple[Path, Path]:
        """The key pair etcd signs its tokens with (ES256), made once beside its data."""
        private, public = self.dir / "jwt-key.pem", self.dir / "jwt-pub.pem"
        if not (private.exists() and public.exists()):
            from cryptography.hazmat.primitives import serialization  # trustme's dependency
            from cryptography.hazmat.primitives.asymmetric import ec

            key = ec.generate_private_key(ec.SECP256R1())
            private.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
            public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return private, public

    def command(self) -> list[str]:
        tls = tls_files()
        peer = self.port + 10
        private, public = self.jwt_keys()
        jwt = f"jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl={ETCD_SECURE_TOKEN_TTL}s"
        return [
            "etcd", "--name", self.name, "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", f"https://{HOST}:{self.port}",
            "--advertise-client-urls", f"https://{HOST}:{self.port}",
            "--listen-peer-urls", f"http://{HOST}:{peer}",
            "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
            "--initial-cluster", f"{self.name}=http://{HOST}:{peer}",
            "--cert-file", str(tls["server"]), "--key-file", str(tls["server-key"]),
            "--client-cert-auth", "--trusted-ca-file", str(tls["ca"]),
            "--auth-token", jwt, "--bcrypt-cost", "4",
            "--enable-v2=true", "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--logger", "zap", "--log-outputs", str(self.dir / "log"),
        ]  # fmt: skip

    def url(self, scheme: str) -> str:
        tls = tls_files()
        options = f"tls_ca={tls['ca']}&tls_cert={tls['client']}&tls_key={tls['client-key']}"
        return f"{scheme}://coord:{ETCD_SECURE_USERS['coord']}@{HOST}:{self.port}?{options}"

    def env(self) -> list[str]:
        return [
            f"export COORD_TEST_ETCD_SECURE='{self.url('etcds')}'",
            f"export COORD_TEST_ETCD2_SECURE='{self.url('etcd2s')}'",
        ]

    def answers(self) -> bool:
        try:
            status, body = self.https("GET", "/health")
        except OSError:
            return False
        return status == 200 and b'"health":"true"' in body

    def wait_ready(self, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
        super().wait_ready(timeout, proc)
        self.enable_auth()

    def https(self, method: str, path: str, body: object = None, user: str | None = None) -> tuple[int, bytes]:
        """One request over TLS with the client certificate (and ``user``'s password, for v2's basic auth)."""
        import base64
        import http.client
        import json
        import ssl

        tls = tls_files()
        context = ssl.create_default_context(cafile=str(tls["ca"]))
        context.load_cert_chain(str(tls["client"]), str(tls["client-key"]))
        headers = {"Content-Type": "application/json"}
        if user is not None:
            token = base64.b64encode(f"{user}:{ETCD_SECURE_USERS[user]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPSConnection(HOST, self.port, context=context, timeout=5)
        try:
            data = None if body is None else json.dumps(body)
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def enable_auth(self) -> None:
        """Users, roles and auth for the v3 and the v2 API, unless the data directory has them already."""
        import base64
        import json

        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        def must(method: str, path: str, body: object = None, user: str | None = None) -> None:
            status, answer = self.https(method, path, body, user)
            if not 200 <= status < 300 or b'"error"' in answer:
                raise RuntimeError(f"{self.name}: {method} {path} answered {status}: {answer[:200]!r}")

        root, coord = ETCD_SECURE_USERS["root"], ETCD_SECURE_USERS["coord"]
        status, answer = self.https("POST", "/v3/auth/authenticate", {"name": "root", "password": root})
        # Once v3 auth is on, etcd's JSON gateway refuses every client with a certificate (as ours have):
        # "CommonName of client sending a request against gateway will be ignored".
        if status != 200 and b"CommonName" not in answer:  # v3 auth is not on yet
            must("POST", "/v3/auth/user/add", {"name": "root", "password": root})
            must("POST", "/v3/auth/role/add", {"name": "root"})
            must("POST", "/v3/auth/user/grant", {"user": "root", "role": "root"})
            ranges = {"coord": ("\0", "\0"), "limited": ("coord/", "coord0")}  # ("\0", "\0"): every key
            for user, (key, end) in ranges.items():
                must("POST", "/v3/auth/user/add", {"name": user, "password": ETCD_SECURE_USERS[user]})
                must("POST", "/v3/auth/role/add", {"name": user})
                permission = {"permType": "READWRITE", "key": b64(key), "range_end": b64(end)}
                must("POST", "/v3/auth/role/grant", {"name": user, "perm": permission})
                must("POST", "/v3/auth/user/grant", {"user": user, "role": user})
            must("POST", "/v3/auth/enable", {})
        _, enabled = self.https("GET", "/v2/auth/enable")
        if not json.loads(enabled).get("enabled"):
            must("PUT", "/v2/auth/users/root", {"user": "root", "password": root})
            paths = ["/coord", "/coord/*"]
            must(
                "PUT", "/v2/auth/roles/coord", {"role": "coord", "permissions": {"kv": {"read": paths, "write": paths}}}
            )
            must("PUT", "/v2/auth/users/coord", {"user": "coord", "password": coord, "roles": ["coord"]})
            must("PUT", "/v2/auth/enable")
            # Enabling v2 auth creates the role "guest" with access to every key: take it back.
            everything = {"kv": {"read": ["/*"], "write": ["/*"]}}
            must("PUT", "/v2/auth/roles/guest", {"role": "guest", "revoke": everything}, user="root")
            # etcd 3.4's v2 API drops the connection of a client whose certificate's CN names no v2 user
            # (a nil user in its client-certificate path): a user of that name, without roles, makes it
            # answer 401 to a client that sends no credentials of its own.
            must(
                "PUT",
                "/v2/auth/users/coord-client",
                {"user": "coord-client", "password": "unused-" + root},
                user="root",
            )


SERVERS["etcd-secure"] = SecureEtcd("etcd-secure", 23700 + OFFSET, ("etcd-server",), "etcd")
ALL["etcd-secure"] = SERVERS["etcd-secure"]

# -- end of etcd-secure ---------------------------------------------------------------------------------------




#: Programs the tests need besides the servers, and their Debian packages: faketime runs a child with a
#: shifted wall clock (the sqlite clock-step tests).
TOOLS = {"faketime": "faketime"}


def install(names: list[str]) -> None:
    """apt-get install the packages of the servers whose program is missing, and the test tools."""
    missing = sorted({pkg for name in names if not _installed(SERVERS[name]) for pkg in SERVERS[name].packages})
    missing += sorted(package for program, package in TOOLS.items() if not shutil.which(program))
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def _installed(server: Server) -> bool:
    if server.name.startswith("zookeeper"):
        return bool(shutil.which("java")) and Path("/usr/share/java/zookeeper.jar").exists()
    return bool(shutil.which(server.binary))


def env_lines() -> list[str]:
    """One export per backend of coord's table that is tested against one of these servers."""
    from coord._registry import server_backends

    lines = [
        f"export {backend.test_env}={SERVERS[backend.server].url(backend.schemes[0])}"
        for backend in server_backends()
        if backend.server in SERVERS
    ]
    return lines + [line for server in SERVERS.values() for line in server.env()]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command, names = argv[0], argv[1:] or list(SERVERS)
    if command == "install":
        install(names)
    elif command == "start":
        install([name for name in names if name in SERVERS])
        procs = {name: ALL[name].launch() for name in names}
        for name in names:
            ALL[name].wait_ready(60.0, procs[name])
            print(f"{name} answers on {HOST}:{ALL[name].port} (pid {ALL[name].pid()})", file=sys.stderr)
    elif command == "stop":
        for name in argv[1:] or list(ALL):
            ALL[name].stop()
    elif command == "restart":
        for name in names:
            ALL[name].restart()
    elif command == "env":
        print("\n".join(env_lines()))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
