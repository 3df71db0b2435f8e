"""The layers are folders, and each imports only the layers below it.

- the contract (``coord/_*.py``) imports nothing of coord outside itself;
- ``coord/backends/<name>`` imports the contract and its own modules only;
- ``coord/recipes/`` and the programs in ``recipes/`` use the contract only:
  no backend and no client library, so each recipe works on every backend;
- ``coord/testing/`` imports no backend;
- ``coord/aio/`` (the asyncio API) stands on the contract and the recipes, whose protocols it drives.

The rules name folders, not modules: a new module is checked as soon as it exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coord
from coord._registry import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "coord"
PROGRAMS = sorted((ROOT / "recipes").glob("*.py"))
#: The client libraries only backends may import (their extras' top-level packages).
CLIENT_LIBRARIES = {"sqlite3", "kazoo", "pyetcd", "etcd3", "grpc", "redis", "consul"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str | None = None) -> set[str]:
    """Every module ``path`` (module ``name``) imports, relative imports resolved against its package."""
    package = (name or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [node.module])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def layer(name: str) -> str:
    """The layer of a module of coord: ``contract``, ``backends/<name>``, ``recipes``, ``testing`` or ``api``."""
    parts = name.split(".")
    if parts in (["coord"], ["coord", "__main__"]):  # the package's entry points: its API, `python -m coord`
        return "api"
    if len(parts) == 2 and parts[1].startswith("_"):
        return "contract"
    if parts[1] == "backends":
        return "backends" if len(parts) == 2 else f"backends/{parts[2]}"
    return parts[1]


def coord_modules(names: set[str]) -> set[str]:
    """The modules of coord among ``names`` (``coord.x.Name`` imports count as ``coord.x``)."""
    found = set()
    for name in names:
        parts = name.split(".")
        while parts and not (
            ROOT.joinpath(*parts).with_suffix(".py").exists() or (ROOT.joinpath(*parts) / "__init__.py").exists()
        ):
            parts.pop()
        if parts and parts[0] == "coord":
            found.add(".".join(parts))
    return found


ALLOWED = {
    "contract": {"contract"},
    "recipes": {"contract", "recipes"},
    "testing": {"contract", "testing", "recipes", "api"},
    "backends": {"contract"},
    "bench": {"api", "contract", "recipes", "testing", "bench"},
    "aio": {"contract", "recipes", "aio"},
    "cli": {"api", "contract", "recipes", "testing", "bench", "cli"},
}


def violations(path: Path, name: str | None = None) -> list[str]:
    """What ``path`` (the module ``name``, by default its own) imports against the rules of its layer."""
    names = imported(path, name)
    own = layer(name or module_name(path))
    allowed = ALLOWED[own.split("/")[0]] | {own}
    bad = [module for module in sorted(coord_modules(names)) if layer(module) not in allowed]
    if own in ("contract", "recipes"):
        bad += sorted(module for module in names if module.split(".")[0] in CLIENT_LIBRARIES)
    return bad


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if layer(module_name(path)) != "api")


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_layer_imports_only_the_layers_below(path: Path) -> None:
    bad = violations(path)
    assert not bad, f"{module_name(path)} ({layer(module_name(path))}) imports {bad}"


@pytest.mark.parametrize("path", PROGRAMS, ids=str)
def test_no_program_imports_a_backend_or_a_client_library(path: Path) -> None:
    names = imported(path)
    bad = {name for name in coord_modules(names) if layer(name).startswith("backends")}
    bad |= {name for name in names if name.split(".")[0] in CLIENT_LIBRARIES}
    assert not bad, f"{path.name} imports {sorted(bad)}: programs must use only the Store API"


def test_the_check_would_catch_a_backend_import_from_a_recipe(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ..backends.memory import MemoryStore\nfrom .._store import Store\nimport kazoo.client\n")
    assert violations(sample, "coord.recipes.sample") == ["coord.backends.memory", "kazoo.client"]


def test_the_check_would_catch_one_backend_importing_another(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ..redis import RedisStore\nfrom ..._lease import Lease\nfrom ._layout import Layout\n")
    assert violations(sample, "coord.backends.zookeeper.sample") == ["coord.backends.redis"]


def test_the_check_would_catch_the_contract_importing_a_recipe(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from .recipes.lock import Lock\nfrom ._errors import CoordError\n")
    assert violations(sample, "coord._sample") == ["coord.recipes.lock"]


def test_every_backend_in_the_table_lives_in_the_backends_folder() -> None:
    for backend in BACKENDS:
        module = backend.target.partition(":")[0]
        assert layer(module).startswith("backends/"), backend


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
