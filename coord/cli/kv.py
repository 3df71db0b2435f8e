"""``get``, ``put``, ``ls``, ``rm`` and ``watch``: the Store's keys from the shell."""

from __future__ import annotations

import sys

import click

import coord

from ._app import Settings
from ._output import value_fields, value_text

__all__ = ["get", "ls", "put", "rm", "watch"]

_pass = click.make_pass_decorator(Settings)


def _pair(pair: coord.KVPair) -> dict[str, object]:
    return {
        "key": pair.key,
        **value_fields(pair.value),
        "revision": pair.revision,
        "created": pair.created,
        "lease": pair.lease,
    }


@click.command()
@click.argument("key")
@_pass
def get(settings: Settings, key: str) -> None:
    """Print KEY's value (its bytes as stored; exit status 3 if there is no such key)."""
    with settings.connect() as store:
        pair = store.get(key)
    if settings.out.json:
        settings.out.record(_pair(pair))
    else:
        sys.stdout.buffer.write(pair.value)
        if sys.stdout.isatty() and not pair.value.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()


@click.command()
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=float, metavar="S", help="The key expires S seconds after this write.")
@_pass
def put(settings: Settings, key: str, value: str, ttl: float | None) -> None:
    """Write VALUE to KEY (VALUE '-' reads standard input, as bytes)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8", "surrogateescape")
    with settings.connect() as store:
        pair = store.put(key, data, ttl=ttl)
    if settings.out.json:
        settings.out.record({"key": pair.key, "revision": pair.revision, "created": pair.created})


@click.command()
@click.argument("prefix", default="")
@_pass
def ls(settings: Settings, prefix: str) -> None:
    """List the keys under PREFIX (all keys without one): key, revision, created, lease, size."""
    with settings.connect() as store:
        pairs = store.list(prefix)
    if settings.out.json:
        for pair in pairs:
            settings.out.record({**_pair(pair), "size": len(pair.value)})
        return
    rows = [(p.key, p.revision, p.created, "-" if p.lease is None else p.lease, len(p.value)) for p in pairs]
    settings.out.table(["key", "revision", "created", "lease", "size"], rows)


@click.command()
@click.argument("key", required=False)
@click.option("--prefix", metavar="PREFIX", help="Delete every key under PREFIX instead.")
@_pass
def rm(settings: Settings, key: str | None, prefix: str | None) -> None:
    """Delete KEY (exit status 3 if there is no such key), or every key under --prefix PREFIX."""
    if (key is None) == (prefix is None):
        raise click.UsageError("give KEY or --prefix PREFIX (one of them)")
    with settings.connect() as store:
        if prefix is not None:
            store.delete_tree(prefix)
        else:
            assert key is not None
            store.delete(key)


@click.command()
@click.argument("key", required=False)
@click.option("--prefix", metavar="PREFIX", help="Watch every key under PREFIX instead.")
@click.option("--rev", "start_revision", type=int, metavar="N", help="Replay every change from revision N on.")
@_pass
def watch(settings: Settings, key: str | None, prefix: str | None, start_revision: int | None) -> None:
    """Print one line per change of KEY (or of the keys under --prefix) until interrupted.

    It starts with the current state (a put for each key), then each change in
    order: "put KEY REVISION VALUE" or "delete KEY REVISION".
    """
    if (key is None) == (prefix is None):
        raise click.UsageError("give KEY or --prefix PREFIX (one of them)")
    out = settings.out
    with settings.connect() as store:
        opened = (
            store.watch_tree(prefix, start_revision=start_revision)
            if prefix is not None
            else store.watch(key or "", start_revision=start_revision)
        )
        with opened as events:
            for event in events:
                if out.json:
                    out.record({"type": event.type, "key": event.key, "revision": event.revision,
                                **value_fields(event.value)})  # fmt: skip
                elif event.type == "put":
                    out.line(f"put {event.key} {event.revision} {value_text(event.value)}")
                else:
                    out.line(f"delete {event.key} {event.revision}")
