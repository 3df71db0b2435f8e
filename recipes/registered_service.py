#!/usr/bin/env python3
"""A small HTTP service that is registered while it runs, and a client that finds it with ``discover``.

    python recipes/registered_service.py serve [--url URL] [--port 0] [--ttl 10]
    python recipes/registered_service.py call [--url URL]
    python recipes/registered_service.py demo [--url URL]

``serve`` runs an HTTP server under ``@registered_service("hello", ...)``:
the instance is registered while the server runs, kept alive by its lease,
registered again by itself if that lease is ever lost, and deregistered when
the server stops (SIGTERM or Ctrl-C). If the process dies, the instance
disappears once its lease expires. ``call`` discovers the instances of
``hello`` and calls each. ``demo`` starts a server, calls it, and stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import coord

SERVICE = "hello"


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the output to what the recipe shows


def serve(store: coord.Store | None, port: int, ttl: float) -> int:
    server = ThreadingHTTPServer(("127.0.0.1", port), Hello)
    address = f"http://127.0.0.1:{server.server_port}/"
    # shutdown() waits for serve_forever() to return, so it must run in another thread.
    stop = lambda *_: threading.Thread(target=server.shutdown).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    @coord.registered_service(SERVICE, address=address, ttl=ttl, metadata={"pid": os.getpid()}, store=store)
    def run() -> None:
        print(f"serving {SERVICE} at {address}", flush=True)
        server.serve_forever()

    run()
    server.server_close()
    print("stopped; deregistered", flush=True)
    return 0


def call(store: coord.Store | None) -> int:
    instances = coord.discover(SERVICE, store=store)
    if not instances:
        print(f"no instance of {SERVICE!r} is registered")
        return 1
    for instance in instances:
        with urllib.request.urlopen(instance.address, timeout=5) as response:
            text = response.read().decode().strip()
        print(f"{instance.address} (instance {instance.id[:8]}, pid {instance.metadata.get('pid')}): {text}")
    return 0


def demo(url: str | None) -> int:
    command = [sys.executable, os.path.abspath(__file__), "serve", "--ttl", "5"]
    if url:
        command += ["--url", url]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        print(server.stdout.readline().strip())
        store = coord.connect(url) if url else None
        status = call(store)
        server.send_signal(signal.SIGTERM)
        print(server.stdout.readline().strip())
        server.wait(10)
        print(f"instances of {SERVICE!r} now: {len(coord.discover(SERVICE, store=store))}")
        return status
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["serve", "call", "demo"])
    parser.add_argument("--url", help="store URL (default: $COORD_URL, else the embedded sqlite store)")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (0: any free one)")
    parser.add_argument("--ttl", type=float, default=10.0, help="the registration's lease ttl, in seconds")
    args = parser.parse_args(argv)
    store = coord.connect(args.url) if args.url else None
    if args.mode == "serve":
        return serve(store, args.port, args.ttl)
    if args.mode == "call":
        return call(store)
    return demo(args.url)


if __name__ == "__main__":
    sys.exit(main())
