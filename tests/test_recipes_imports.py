"""The recipes use only the public Store API: no recipe module or program imports a backend."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coord

ROOT = Path(__file__).resolve().parent.parent
RECIPE_MODULES = ["_waiting", "_election", "_lock", "_semaphore", "_registration", "_barrier"]
PROGRAMS = sorted((ROOT / "recipes").glob("*.py"))
# Backend modules, and the client libraries only backends may use.
FORBIDDEN = {
    "coord._memory",
    "coord._sqlite",
    "coord._etcd",
    "coord._etcd2",
    "coord._zookeeper",
    "coord._consul",
    "coord._redis",
    "sqlite3",
    "kazoo",
    "pyetcd",
    "etcd3",
    "grpc",
    "redis",
    "consul",
}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against the coord package."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = f"coord.{node.module or ''}".rstrip(".") if node.level else node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", [ROOT / "coord" / f"{name}.py" for name in RECIPE_MODULES] + PROGRAMS, ids=str)
def test_no_recipe_imports_a_backend(path: Path) -> None:
    names = imported(path)
    bad = {name for name in names if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}: recipes must use only the Store API"


def test_the_check_would_catch_a_backend_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ._memory import MemoryStore\nimport kazoo.client\n")
    assert {"coord._memory", "kazoo.client"} <= imported(sample)


def test_there_are_programs_to_check() -> None:
    assert {path.name for path in PROGRAMS} >= {
        "failover_demo.py",
        "leader_worker.py",
        "registered_service.py",
        "worker_pool.py",
    }


def test_every_recipe_is_exported_from_coord() -> None:
    for name in ["Barrier", "DoubleBarrier", "Election", "Instance", "Leadership", "Lock", "Registration", "Semaphore"]:
        assert name in coord.__all__ and isinstance(getattr(coord, name), type)
    for name in ["discover", "register", "registered_service", "watch_service"]:
        assert name in coord.__all__ and callable(getattr(coord, name))
    assert coord.__all__ == sorted(coord.__all__)
