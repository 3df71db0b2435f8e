"""``doctor``: how a store behaves, measured from here, and what its backend guarantees."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from typing import Any

import click

import coord

from . import _status as status
from ._app import Settings, where
from ._failover import measure
from ._guarantees import guarantees
from ._mask import mask_text, mask_url
from ._skew import Skew
from ._skew import measure as measure_skew

__all__ = ["doctor"]

_pass = click.make_pass_decorator(Settings)


@click.command()
@click.argument("url", required=False)
@click.option(
    "--ttl", type=float, default=2.0, show_default=True, metavar="S", help="The lease ttl of the failover runs."
)
@click.option("--quick", is_flag=True, help="Only reachability, round trips and clock skew: no failover runs.")
@_pass
def doctor(settings: Settings, url: str | None, ttl: float, quick: bool) -> int:
    """Measure a store (URL, else --url): round trip, lease expiry delay, failovers, clock skew; and its guarantees.

    The failovers run real candidate processes (a SIGKILL and a resign, at
    lease ttl --ttl), so it takes a few ttls. Exits 4 if the store is
    unreachable.
    """
    out = settings.out
    say = (lambda text: None) if out.json else out.note
    try:
        store = settings.connect(url, timeout=min(5.0, max(1.0, ttl)))
        report: dict[str, Any] = {"store": where(store), "backend": store.backend}
        say(f"coord doctor: {report['store']}")
        report["round_trip_ms"] = _round_trips(store)
    except coord.ConfigurationError as exc:
        raise click.UsageError(mask_text(str(exc))) from exc
    except coord.CoordError as exc:  # opening it, or its first operations
        shown = mask_url(url or settings.url or "the default store")
        _show(
            out,
            {
                "store": shown,
                "backend": exc.backend or shown.partition(":")[0],
                "reachable": False,
                "error": mask_text(str(exc)),
            },
        )
        return status.UNAVAILABLE
    report["reachable"] = True
    with store:
        report["clock_skew"] = _skew(store)
        if not quick and store.backend != "memory":
            say(f"  failover at lease ttl {ttl:g} s: 3 candidate processes, a SIGKILL, a resign ...")
            result = measure(store, url or settings.url, candidates=3, ttl=ttl, kills=1, say=lambda text: None)
            report["lease_expiry_delay_ms"] = _ms(result.expiry_delays[0])
            report["failover_ms"] = {
                "ttl_s": ttl,
                "sigkill": _ms(result.kills[0]),
                "sigkill_beyond_lease": _ms(result.beyond_lease[0]),
                "resign": _ms(result.resign),
            }
        report["guarantees"] = guarantees(store.backend)
    _show(out, report)
    return status.OK


def _round_trips(store: coord.Store, count: int = 20) -> dict[str, float]:
    key = f"coord-doctor/{uuid.uuid4().hex}"
    reads, writes = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            store.exists(key)
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.put(key, b"doctor", ttl=60)
            writes.append(time.perf_counter() - started)
    finally:
        with contextlib.suppress(coord.CoordError):
            store.delete(key)
    return {"read_median": _ms(statistics.median(reads)), "read_max": _ms(max(reads)),
            "write_median": _ms(statistics.median(writes)), "write_max": _ms(max(writes))}  # fmt: skip


def _skew(store: coord.Store) -> dict[str, Any]:
    found = measure_skew(store)
    if isinstance(found, Skew):
        return {"offset_ms": _ms(found.offset), "error_ms": _ms(found.error), "how": found.how}
    return {"note": mask_text(found)}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2 if abs(seconds) < 0.01 else 1)


def _show(out: Any, report: dict[str, Any]) -> None:
    if out.json:
        out.record(report)
        return
    rows: list[tuple[str, str]] = []
    if not report["reachable"]:
        rows.append(("reachable", f"no: {report['error']}"))
    else:
        trips = report["round_trip_ms"]
        rows.append(
            ("round trip: read (exists)", f"{trips['read_median']} ms median, {trips['read_max']} ms max of 20")
        )
        rows.append(
            ("round trip: write (put)", f"{trips['write_median']} ms median, {trips['write_max']} ms max of 20")
        )
        if "lease_expiry_delay_ms" in report:
            failover = report["failover_ms"]
            rows.append(("lease expiry delay", f"{report['lease_expiry_delay_ms']} ms after the client's deadline "
                         "(the store deleted a dead holder's key, as a watch saw it)"))  # fmt: skip
            rows.append((f"failover after SIGKILL (ttl {failover['ttl_s']:g} s)",
                         f"{failover['sigkill']} ms ({failover['sigkill_beyond_lease']} ms after the lease's deadline)"))  # fmt: skip
            rows.append(("failover after resign", f"{failover['resign']} ms"))
        skew = report["clock_skew"]
        rows.append(("clock skew (server - here)", skew["note"] if "note" in skew else
                     f"{skew['offset_ms']:+} ms ± {skew['error_ms']} ms ({skew['how']})"))  # fmt: skip
    out.table(["measure", "value"], rows, title=f"coord doctor: {report['store']} ({report['backend']})")
    if report.get("guarantees"):
        out.line("")
        out.line(f"What {report['backend']} guarantees: {report['guarantees']}")
