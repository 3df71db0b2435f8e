"""The sqlite store is private by default: its files' modes and owners, the default store per user, sharing on request.

Each test names the guarantee of docs/backends.md (sqlite, "Private by
default") it checks. The tests about other users' files chown files to
``nobody`` and run a process as ``nobody``, so they need root: CI runs as
root; elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord._connect import default_path, default_url
from tests.support import ROOT

NOBODY = 65534  # nobody:nogroup on Debian
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root, to chown files and run a process as nobody"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def everything_under(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            yield Path(root, name)


def exercise(store: coord.Store) -> None:
    """Make the store create every file it ever makes: the database's, a lease's lock file, a watch's bucket."""
    lease = store.lease(ttl=30)
    with store.watch("k"), store.watch_tree("tree"):
        store.put("k", b"v", lease=lease)
        store.put("tree/k", b"v")
    lease.revoke()


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- private by default ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277], ids=["umask000", "umask022", "umask277"])
def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    """Directories coord creates are 0700, every file of the store 0600; an existing parent keeps its mode."""
    tmp_path.chmod(0o755)
    db = tmp_path / "new" / "deeper" / "coord.db"
    os.umask(mask)
    with coord.connect(f"sqlite://{db}") as store:
        exercise(store)
        lease = store.lease(ttl=30)  # its lock file lives while the store is open
        store.put("held", b"", lease=lease)
        found = list(everything_under(tmp_path / "new"))
        names = {path.name for path in found}
        assert {"coord.db", "coord.db-wal", "coord.db-shm", "coord.db-coord", "gate", "wake", "owners"} <= names
        assert len(list((db.parent / "coord.db-coord" / "owners").iterdir())) == 1
        assert len(list((db.parent / "coord.db-coord" / "wake").iterdir())) >= 2
        shown = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in found}
        assert shown == {name: oct(0o700 if (tmp_path / name).is_dir() else 0o600) for name in shown}, (
            "every directory 0700, every file 0600"
        )
    assert mode(tmp_path) == 0o755, "a directory coord did not create keeps its mode"


def test_a_store_written_with_open_modes_is_made_private_with_a_warning(
    tmp_path: Path, umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A store whose files others can read (an older coord's 0644) is made private when its owner opens it."""
    url = f"sqlite://{tmp_path / 'coord.db'}"
    with coord.connect(url + "?shared=true") as store:  # shared: the umask (022) decides, as before
        exercise(store)
    assert mode(tmp_path / "coord.db") == 0o644 and mode(tmp_path / "coord.db-coord") == 0o755
    caplog.set_level(logging.WARNING, logger="coord.sqlite")
    with coord.connect(url) as store:
        assert store.get("tree/k").value == b"v"
        assert mode(tmp_path / "coord.db") == 0o600
        assert mode(tmp_path / "coord.db-coord") == 0o700, "what is inside it is out of others' reach"
        assert mode(tmp_path / "coord.db-wal") == 0o600 and mode(tmp_path / "coord.db-shm") == 0o600
    warned = [record.getMessage() for record in caplog.records if "made" in record.getMessage()]
    assert len(warned) == 1 and "shared=true" in warned[0], warned
    assert (
        f"{tmp_path / 'coord.db'} (was 0644)" in warned[0] and f"{tmp_path / 'coord.db-coord'} (was 0755)" in warned[0]
    )


def test_a_shared_store_takes_the_umask_s_modes(tmp_path: Path, umask: None) -> None:
    """With shared=true what coord creates gets the modes the umask gives: 002 lets a group write."""
    os.umask(0o002)
    with coord.connect(f"sqlite://{tmp_path / 'host' / 'coord.db'}?shared=true") as store:
        exercise(store)
        for path in everything_under(tmp_path / "host"):
            assert mode(path) == (0o775 if path.is_dir() else 0o664), path


# -- the default store: per user ---------------------------------------------------------------


def test_the_default_store_is_per_user_and_its_directory_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    """The default path is under the user's HOME (two HOMEs, two stores); its directory is coord's own: 0700."""
    monkeypatch.delenv("COORD_URL", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    paths = []
    for home in ("alice", "bob"):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        paths.append(default_path())
        assert default_url() == f"sqlite://{paths[-1]}"
        assert paths[-1].is_relative_to(tmp_path / home)
    assert paths[0] != paths[1]
    paths[0].parent.mkdir(parents=True, mode=0o755)  # as an older coord left it
    paths[0].parent.chmod(0o755)
    monkeypatch.setenv("HOME", str(tmp_path / "alice"))
    with coord.connect() as store:
        store.put("k", b"")
    assert mode(paths[0].parent) == 0o700 and mode(paths[0]) == 0o600
    assert mode(tmp_path / "alice") == 0o755, "HOME itself is not coord's"


def test_the_path_in_use_is_logged_once_per_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Opening a store logs its path at INFO (logger coord.sqlite), once per path and process."""
    caplog.set_level(logging.INFO, logger="coord.sqlite")
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    for path in (first, first, second, first):
        coord.connect(f"sqlite://{path}").close()
    lines = [record for record in caplog.records if record.name == "coord.sqlite" and record.levelno == logging.INFO]
    assert [str(first) in record.getMessage() for record in lines].count(True) == 1
    assert [str(second) in record.getMessage() for record in lines].count(True) == 1
    assert "private" in lines[0].getMessage()


# -- other users' files ------------------------------------------------------------------------


@as_root
@pytest.mark.parametrize("whose", ["coord.db", "coord.db-coord"])
def test_another_user_s_store_is_refused_unless_shared(tmp_path: Path, whose: str) -> None:
    """A store file or directory of another user is refused, with whose it is and how to allow it."""
    url = f"sqlite://{tmp_path / 'coord.db'}"
    with coord.connect(url) as store:
        store.put("k", b"v")
    os.chown(tmp_path / whose, NOBODY, NOBODY)
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(url)
    message = str(info.value)
    assert str(tmp_path / whose) in message and "'nobody' (uid 65534)" in message and "(uid 0)" in message
    assert "?shared=true" in message
    with coord.connect(url + "?shared=true") as store:
        assert store.get("k").value == b"v"
    assert os.stat(tmp_path / whose).st_uid == NOBODY, "shared: nothing changed hands"


#: Run as nobody:nogroup: everything imported first (the interpreter lives under /root, which nobody cannot read).
AS_NOBODY = """
import json, os, pwd, sqlite3, sys
import platformdirs
import coord, coord._connect, coord.backends.sqlite
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.umask(0o002)
url = sys.argv[1]
try:
    coord.connect(url)
except coord.ConfigurationError as exc:
    print("refused", json.dumps(str(exc)))
with coord.connect(url + "?shared=true") as store:
    print("read", store.get("from-root").value.decode())
    lease = store.lease(ttl=30)
    store.put("from-nobody", b"hello", lease=lease)
    lease.revoke()
    store.put("from-nobody", b"hello")
print("done")
"""


@as_root
def test_a_group_shares_a_host_wide_store_when_told_to(umask: None) -> None:
    """Users of one group share a store in a setgid directory of that group, every process passing shared=true."""
    folder = Path(tempfile.mkdtemp(prefix="coord-host-"))  # under /tmp, which nobody can reach (tmp_path is not)
    try:
        os.chown(folder, 0, NOBODY)
        folder.chmod(0o2770)
        os.umask(0o002)
        url = f"sqlite://{folder / 'coord.db'}"
        with coord.connect(url + "?shared=true") as store:
            store.put("from-root", b"hi")
            done = subprocess.run(
                [sys.executable, "-c", AS_NOBODY, url],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                cwd="/",
            )
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0].startswith("refused ") and "'root' (uid 0)" in lines[0], lines
            assert lines[1:] == ["read hi", "done"]
            assert store.get("from-nobody").value == b"hello"
        for path in everything_under(folder):
            info = os.stat(path)
            assert info.st_gid == NOBODY, f"{path}: the directory's group (setgid)"
            assert stat.S_IMODE(info.st_mode) & 0o060 == 0o060, f"{path}: the group reads and writes it"
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=True)
