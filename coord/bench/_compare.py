"""coord next to its peers: the ratio tables and the targets of issue 9 that most benchmarks share."""

from __future__ import annotations

from typing import Any

from ._result import Goal, Table, fmt, ratio, series

__all__ = ["backends_of", "bar_data", "minimum_goal", "peer_table"]


def backends_of(data: dict[str, Any]) -> list[str]:
    """The backends of ``data``'s series, in the order they were measured."""
    return list(dict.fromkeys(s["backend"] for s in data["series"]))


def peer_table(
    data: dict[str, Any],
    metric: str,
    *,
    title: str,
    unit: str,
    factors: dict[str, float],
    goal: str = "",
    higher_is_better: bool = True,
) -> tuple[Table, list[Goal]]:
    """coord's median of ``metric`` against each peer's on the same backend, with the ratio coord/peer.

    ``factors`` maps a peer's label to issue 9's target ratio for it (coord
    at least that many times the peer's throughput); each becomes a Goal.
    """
    rows: list[list[str]] = []
    goals: list[Goal] = []
    for backend in backends_of(data):
        mine = series(data, backend=backend, metric=metric, peer=False)
        if not mine:
            continue
        value = mine[0]["median"]
        peers = series(data, backend=backend, metric=metric, peer=True)
        if not peers:
            rows.append([backend, fmt(value), "-", "-", "-", "-"])
        for peer in peers:
            r = ratio(value, peer["median"])
            target, met = "-", None
            if peer["subject"] in factors and r is not None:
                factor = factors[peer["subject"]]
                target = f"≥ {factor:g}x" if higher_is_better else f"≤ {factor:g}x"
                met = r >= factor if higher_is_better else r <= factor
                goals.append(Goal(backend, f"{goal or title}: coord {target} {peer['subject']}", f"{fmt(r)}x", met))
            rows.append([backend, fmt(value), peer["subject"], fmt(peer["median"]), _ratio(r), _verdict(target, met)])
    columns = ["backend", f"coord ({unit})", "peer", f"peer ({unit})", "coord / peer", "target"]
    return Table(title, columns, rows), goals


def minimum_goal(data: dict[str, Any], metric: str, backend: str, minimum: float, text: str) -> Goal | None:
    """The Goal "coord's median of ``metric`` on ``backend`` is at least ``minimum``", if it was measured."""
    mine = series(data, backend=backend, metric=metric, peer=False)
    if not mine or mine[0]["median"] is None:
        return None
    value = mine[0]["median"]
    return Goal(backend, text, fmt(value), value >= minimum)


def bar_data(data: dict[str, Any], metric: str, scale: float = 1.0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """``metric``'s medians per backend and subject, whiskers from the smallest to the largest sample."""
    bars: dict[str, dict[str, tuple[float, float, float]]] = {}
    for s in data["series"]:
        if s["metric"] == metric and s["median"] is not None:
            bars.setdefault(s["backend"], {})[s["subject"]] = (
                s["median"] * scale,
                s["min"] * scale,
                s["max"] * scale,
            )
    return bars


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{fmt(r)}x"


def _verdict(target: str, met: bool | None) -> str:
    if met is None:
        return target
    return f"{target} {'met' if met else 'missed'}"
