"""``demo``: the README's leader-failover demo (docs/recipes.md, "Failover time")."""

from __future__ import annotations

import click

from ._app import Settings, where
from ._failover import measure

__all__ = ["demo"]

_pass = click.make_pass_decorator(Settings)


@click.command()
@click.option("--candidates", type=click.IntRange(min=2), default=3, show_default=True, help="Candidate processes.")
@click.option("--ttl", type=float, default=2.0, show_default=True, metavar="S", help="Their lease ttl, in seconds.")
@click.option("--kills", type=click.IntRange(min=0), default=1, show_default=True, help="Leaders to SIGKILL.")
@_pass
def demo(settings: Settings, candidates: int, ttl: float, kills: int) -> int:
    """Elect a leader among processes, SIGKILL it, then make the next one resign; time each failover.

    After SIGKILL the lease must expire before anyone else may lead (about the
    ttl); after a resign the successor is elected within a watch round trip.
    """
    if candidates < kills + 2:
        raise click.UsageError("--candidates must be at least --kills + 2")
    out = settings.out
    say = (lambda text: None) if out.json else out.line
    with settings.connect() as store:
        shown = where(store)
        if shown.startswith("memory"):
            raise click.UsageError("memory:// lives in one process: give a store that processes can share")
        say(f"coord failover demo: {candidates} candidates on {shown}, lease ttl {ttl:g} s")
        result = measure(store, settings.url, candidates=candidates, ttl=ttl, kills=kills, say=say)
    worst = max(result.kills, default=0.0)
    if out.json:
        out.record({"store": shown, "ttl": ttl, "sigkill_s": result.kills, "beyond_lease_s": result.beyond_lease,
                    "expiry_delay_s": result.expiry_delays, "resign_s": result.resign})  # fmt: skip
    else:
        say(f"failover after SIGKILL: {worst:.2f} s (at most the ttl, {ttl:g} s, plus the store's expiry delay)")
        say(f"failover after resign: {result.resign * 1000:.1f} ms (one watch round trip)")
    return 0
