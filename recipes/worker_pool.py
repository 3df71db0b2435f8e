#!/usr/bin/env python3
"""A worker pool: processes share one list of jobs and take a lock per job, so each job is done once.

    python recipes/worker_pool.py [--url URL] [--workers 4] [--jobs 20]

The main process writes the jobs to the store and starts the workers. Each
worker walks the jobs in its own random order; for each it tries the job's
Lock without blocking, and if it gets it and the job has no ``done`` marker
yet, it does the job and writes the marker (create-only, so a second doer
could not go unnoticed) before releasing the lock. The main process then
checks that every job was done exactly once.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import coord


def worker(store: coord.Store, run: str) -> int:
    done = 0
    jobs = store.list(f"pool/{run}/jobs")
    random.shuffle(jobs)
    for job in jobs:
        number = job.key.rsplit("/", 1)[-1]
        lock = coord.Lock(f"pool-{run}-job-{number}", store=store, ttl=10)
        if not lock.acquire(blocking=False):
            continue  # another worker has it
        try:
            if store.exists(f"pool/{run}/done/{number}"):
                continue  # another worker did it before we got the lock
            time.sleep(0.01)  # the work
            store.atomic_put(f"pool/{run}/done/{number}", str(os.getpid()).encode(), None)
            done += 1
        finally:
            lock.release()
    print(f"worker {os.getpid()} did {done} jobs", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="store URL (default: $COORD_URL, else the embedded sqlite store)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--worker", metavar="RUN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    store = coord.connect(args.url) if args.url else coord.default_store()
    if args.worker:
        return worker(store, args.worker)
    if store.describe().startswith("memory"):
        parser.error("memory:// lives in one process: give a store that processes can share")

    run = uuid.uuid4().hex[:8]
    for number in range(args.jobs):
        store.put(f"pool/{run}/jobs/{number:04d}", f"job {number}".encode())
    print(f"{args.workers} workers, {args.jobs} jobs, on {store.describe()}", flush=True)
    command = [sys.executable, os.path.abspath(__file__), "--worker", run]
    if args.url:
        command += ["--url", args.url]
    workers = [subprocess.Popen(command) for _ in range(args.workers)]
    failed = sum(process.wait() != 0 for process in workers)

    done = {pair.key.rsplit("/", 1)[-1]: pair.value.decode() for pair in store.list(f"pool/{run}/done")}
    missing = args.jobs - len(done)
    by_worker = Counter(done.values())
    print(f"done: {len(done)} of {args.jobs} jobs, each once; by worker: {dict(sorted(by_worker.items()))}")
    store.delete_tree(f"pool/{run}")
    if failed or missing:
        print(f"FAILED: {failed} workers failed, {missing} jobs not done", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
