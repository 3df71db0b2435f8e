"""The machine and software a run measured: CPU, cores, kernel, Python, libraries, servers, load."""

from __future__ import annotations

import os
import platform
import subprocess
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import coord

from ._endpoints import Endpoint
from ._servers import server_version

__all__ = ["LIBRARIES", "load", "machine", "versions"]

#: Distributions whose versions a result records (those installed).
LIBRARIES = ("coord", "redis", "kazoo", "etcd-sdk-python", "grpcio", "tooz", "matplotlib")


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "hostname": platform.node(),
    }


def versions(endpoints: list[Endpoint]) -> dict[str, Any]:
    libraries = {}
    for name in LIBRARIES:
        with suppress(metadata.PackageNotFoundError):
            libraries[name] = metadata.version(name)
    servers: dict[str, str | None] = {}
    for e in endpoints:
        if e.backend == "sqlite":
            servers["sqlite"] = f"SQLite {sqlite_version()} on {_filesystem(e.path)}"
        elif e.backend != "memory":
            servers[e.backend] = server_version(e)
    return {"libraries": libraries, "servers": servers, "coord_commit": _commit()}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages: what else the machine was doing."""
    return [round(x, 2) for x in os.getloadavg()]


def sqlite_version() -> str:
    import sqlite3  # the library the sqlite backend links, not a peer

    return sqlite3.sqlite_version


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync costs differ: ext4, tmpfs, overlay)."""
    best, kind = "", "unknown"
    with suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _commit() -> str | None:
    """The last commit of coord's own code (not ``coord/bench``), ``+dirty`` with local changes, in a checkout."""
    root = Path(coord.__file__).resolve().parent.parent
    library = ["--", "coord", ":!coord/bench"]
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h", *library], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", *library], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode or not head.stdout.strip():
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
