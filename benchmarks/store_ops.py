#!/usr/bin/env python3
"""Latency of each Store operation, per backend, next to the backend client's own round trip.

    python benchmarks/store_ops.py [URL ...] [--ops 1000]

With no URL it measures sqlite (a temporary file), memory, and every server
whose COORD_TEST_* variable is set (see scripts/servers.py env). Prints the
median and 99th percentile in microseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import coord


def timed(action: Callable[[int], object], count: int) -> tuple[float, float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        action(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def raw_baseline(url: str, count: int) -> dict[str, tuple[float, float]]:
    """The client library's own put and get, for comparison."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    if parts.scheme == "redis":
        import redis

        client = redis.Redis(host=host, port=port or 6379)
        result = {"put": timed(lambda i: client.set(key, b"v"), count), "get": timed(lambda i: client.get(key), count)}
        client.delete(key)
        return result
    if parts.scheme == "etcd":
        import pyetcd

        etcd = pyetcd.Etcd3Client(host=host, port=port or 2379)
        result = {"put": timed(lambda i: etcd.put(key, b"v"), count), "get": timed(lambda i: etcd.get(key), count)}
        etcd.delete(key)
        return result
    if parts.scheme in ("zookeeper", "zk"):
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=f"{host}:{port or 2181}")
        zk.start()
        zk.create(f"/{key}", b"v")
        result = {
            "put": timed(lambda i: zk.set(f"/{key}", b"v"), count),
            "get": timed(lambda i: zk.get(f"/{key}"), count),
        }
        zk.delete(f"/{key}")
        zk.stop()
        return result
    return {}


def measure(url: str, count: int) -> dict[str, tuple[float, float]]:
    with coord.connect(url, prefix=f"bench-{uuid.uuid4().hex[:8]}") as store:
        result: dict[str, tuple[float, float]] = {}
        result["put"] = timed(lambda i: store.put("k", b"v"), count)
        result["get"] = timed(lambda i: store.get("k"), count)
        result["exists"] = timed(lambda i: store.exists("k"), count)
        result["atomic_put (create)"] = timed(lambda i: store.atomic_put(f"c/{i}", b"v", None), count)
        pair = [store.get("k")]
        result["atomic_put (CAS)"] = timed(lambda i: pair.__setitem__(0, store.atomic_put("k", b"v", pair[0])), count)
        for i in range(100):
            store.put(f"l/{i:03}", b"v")
        result["list (100 keys)"] = timed(lambda i: store.list("l"), max(count // 10, 10))
        with store.watch("w") as watch:

            def round_trip(i: int) -> None:
                store.put("w", b"v")
                assert watch.get(timeout=5) is not None

            result["put → watch event"] = timed(round_trip, max(count // 10, 10))
        with store.lease(10) as lease:
            result["keepalive"] = timed(lambda i: store._lease_keepalive(lease), count)
        store.delete_tree("c")
        store.delete_tree("l")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="*")
    parser.add_argument("--ops", type=int, default=1000)
    args = parser.parse_args()
    urls = args.urls or [
        "memory://",
        f"sqlite://{tempfile.mkdtemp()}/bench.db",
        *(
            os.environ[var]
            for var in ("COORD_TEST_ETCD", "COORD_TEST_ZOOKEEPER", "COORD_TEST_REDIS")
            if var in os.environ
        ),
    ]
    for url in urls:
        print(f"\n{url}  ({args.ops} ops; microseconds)")
        print(f"{'operation':<22}{'median':>10}{'p99':>10}")
        for name, (median, p99) in measure(url, args.ops).items():
            print(f"{name:<22}{median:>10.0f}{p99:>10.0f}")
        for name, (median, p99) in raw_baseline(url, args.ops).items():
            print(f"{'client ' + name:<22}{median:>10.0f}{p99:>10.0f}")


if __name__ == "__main__":
    main()
