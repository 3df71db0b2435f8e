"""connect(): URL schemes, options, the embedded default, and errors that name the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import coord
from coord._url import parse_url as _parse
from tests.support import ROOT


def test_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(coord.ConfigurationError, match="unknown store scheme 'nosuch'"):
        coord.connect("nosuch://host")


@pytest.mark.parametrize("url", ["no-scheme", "etcd://h:notaport", "redis://h:70000", ""])
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(coord.ConfigurationError):
        coord.connect(url)


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(coord.ConfigurationError):
        coord.connect(42)  # type: ignore[arg-type]


def test_hosts_paths_and_query_options_are_parsed() -> None:
    location, query = _parse("zookeeper://a:1,b,c:3/chroot/x?timeout=5&prefix=app")
    assert location.hosts == [("a", 1), ("b", None), ("c", 3)]
    assert location.path == "/chroot/x"
    assert location.endpoints(2181) == [("a", 1), ("b", 2181), ("c", 3)]
    assert query == {"timeout": "5", "prefix": "app"}


def test_query_options_apply_and_keywords_override_them(tmp_path: Path) -> None:
    with coord.connect(f"sqlite://{tmp_path}/a.db?prefix=fromurl&poll_interval=0.002", prefix="kw") as store:
        store.put("k", b"")
    with coord.connect(f"sqlite://{tmp_path}/a.db") as raw:
        assert [pair.key for pair in raw.list("")] == ["kw/k"]


def test_unknown_and_bad_options_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(coord.ConfigurationError, match="unknown option 'colour'"):
        coord.connect(f"sqlite://{tmp_path}/a.db?colour=red")
    with pytest.raises(coord.ConfigurationError, match="timeout"):
        coord.connect(f"sqlite://{tmp_path}/a.db?timeout=soon")
    with pytest.raises(coord.ConfigurationError):
        coord.connect("memory://", colour="red")


def test_an_out_of_tree_backend_registers_through_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "myback.py").write_text(
        "from coord.backends.memory import MemoryStore\nclass MyStore(MemoryStore):\n    backend = 'mine'\n"
    )
    info = tmp_path / "myback-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myback\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[coord.backends]\nmine = myback:MyStore\n")
    code = (
        "import coord\nwith coord.connect('mine://x') as s:\n    s.put('k', b'v'); print(s.backend, s.get('k').value)"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["mine", "b'v'"]


def test_a_missing_client_library_names_the_extra() -> None:
    # In a child, so hiding the library does not disturb this process's imports.
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import coord\n"
        "try:\n    coord.connect('redis://127.0.0.1:1')\n"
        "except coord.ConfigurationError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "pip install 'coord[redis]'" in out


def test_client_libraries_are_imported_only_when_their_backend_opens() -> None:
    code = "import sys, coord; coord.connect('memory://'); print(sorted({'kazoo', 'pyetcd', 'redis', 'consul'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_without_a_url_coord_url_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COORD_URL", f"sqlite://{tmp_path}/env.db")
    with coord.connect() as store:
        assert store.backend == "sqlite"
        store.put("k", b"")
    assert (tmp_path / "env.db").exists()


def test_the_embedded_default_is_sqlite_in_the_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("COORD_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with coord.connect() as store:
        assert store.backend == "sqlite"
        store.put("k", b"")
    assert list((tmp_path).rglob("coord.db"))


def test_public_names_are_complete_and_sorted() -> None:
    assert coord.__all__ == sorted(coord.__all__)
    public = {name for name in dir(coord) if not name.startswith("_") and name[0].isupper()}
    assert public <= set(coord.__all__)
    for name in coord.__all__:
        assert hasattr(coord, name), name


def test_every_error_is_a_coord_error() -> None:
    for name in ["KeyNotFound", "KeyExists", "KeyModified", "InvalidKey", "LeaseExpired", "StoreUnavailable",
                 "StoreClosed", "NotSupported", "ConfigurationError"]:  # fmt: skip
        assert issubclass(getattr(coord, name), coord.CoordError)
    assert issubclass(coord.InvalidKey, ValueError)


def test_a_backend_that_cannot_run_on_an_injected_clock_says_not_supported(backend: str, store_url: str) -> None:
    """Every backend runs on a ManualClock (the client's deadlines on virtual time), or raises NotSupported.

    sqlite cannot: its deadlines are the host's, shared by every process.
    """
    if backend == "sqlite":
        with pytest.raises(coord.NotSupported, match="clock") as info:
            coord.connect(store_url, clock=coord.ManualClock())
        assert info.value.backend == "sqlite"
        return
    store = coord.connect(store_url, clock=coord.ManualClock())
    with store:
        assert isinstance(store.clock, coord.ManualClock)
        store.put("k", b"v")
