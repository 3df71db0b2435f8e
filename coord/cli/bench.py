"""``bench``: coord's benchmarks (``coord.bench``), with a progress bar; JSON and PNG per benchmark."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import click

from . import _status as status
from ._app import Settings

__all__ = ["bench"]

_pass = click.make_pass_decorator(Settings)
_NAMES = ("lock_uncontended", "lock_contended", "herd", "failover", "registration", "watch", "store_ops")


@click.command()
@click.argument("benchmarks", nargs=-1, type=click.Choice(_NAMES), metavar="[BENCHMARK]...")
@click.option("--store", "stores", multiple=True, metavar="URL",
              help="A store to measure, repeatable (default: --url if given, else memory, a sqlite file and each "
                   "COORD_TEST_* server).")  # fmt: skip
@click.option("--peers", is_flag=True, help="Measure the peers (tooz, kazoo, redis-py, pyetcd) on the same stores too.")
@click.option("--quick", is_flag=True, help="A short run that checks everything works.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for JSON, PNG, logs."
)
@click.option("--set", "overrides", multiple=True, metavar="[BENCH.]NAME=VALUE",
              help="Override a parameter (VALUE is JSON): --set seconds=1 --set herd.waiters=[2,4].")  # fmt: skip
@_pass
def bench(
    settings: Settings,
    benchmarks: tuple[str, ...],
    stores: tuple[str, ...],
    peers: bool,
    quick: bool,
    out: Path,
    overrides: tuple[str, ...],
) -> int:
    """Run coord's benchmarks (all without BENCHMARK), next to its peers with --peers.

    The harness is coord.bench's (python -m coord.bench); docs/benchmarks.md
    says what each measures. Needs the bench extra: pip install 'coord[bench]'.
    """
    try:
        import matplotlib  # noqa: F401  (the plots: checked before an hour of measuring)
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from coord.bench import BENCHMARKS, run
        from coord.bench._endpoints import default_urls
        from coord.bench._runner import MissingPeer
    except ImportError as exc:
        raise click.UsageError(f"coord bench needs {exc.name}: pip install 'coord[bench]'") from exc
    params = _parse_overrides(overrides)
    names = list(benchmarks or BENCHMARKS)
    urls = list(stores) or (
        [settings.url] if settings.url else default_urls(Path(tempfile.mkdtemp(prefix="coord-bench-")))
    )
    written: list[Path] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=settings.out.json) as progress:
        task = progress.add_task("starting", total=len(names))
        for name in names:
            messages = _Messages(lambda line, name=name: progress.update(task, description=f"{name}: {line}"))
            try:
                with contextlib.redirect_stderr(messages):  # the harness reports as it goes: show its last line
                    written += run([name], urls, out=out, peers=peers, quick=quick, overrides=params, verbose=True)
            except MissingPeer as exc:
                raise click.UsageError(str(exc)) from exc
            progress.advance(task)
        progress.update(task, description="done")
    _summarize(settings, written)
    return status.OK


class _Messages(io.TextIOBase):
    """A stream whose lines go to ``show``, one at a time."""

    def __init__(self, show: Any) -> None:
        self._show = show
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                self._show(line.split(": ", 1)[-1][:80])
        return len(text)


def _parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item}: expected NAME=VALUE", param_hint="--set")
        try:
            parsed[key] = json.loads(text)
        except ValueError:
            parsed[key] = text
    return parsed


def _summarize(settings: Settings, written: list[Path]) -> None:
    """The paths written, and each benchmark's summary tables (from its JSON, as the report reads them)."""
    import json

    for path in written:
        data = json.loads(path.read_text())
        if settings.out.json:
            settings.out.record(
                {"benchmark": data["benchmark"], "json": str(path), "png": str(path.with_suffix(".png"))}
            )
            continue
        for table in data.get("summary", {}).get("tables", []):
            settings.out.table(table["columns"], table["rows"], title=table["title"])
        settings.out.line(f"{path} ({path.with_suffix('.png').name})")
