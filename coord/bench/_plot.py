"""The plots: grouped bars (coord next to its peers, per backend) and lines (a metric against a load).

matplotlib is imported only here and only when drawing (the ``bench`` extra);
it draws to files with the Agg backend, no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Bar", "bars", "lines"]

#: (value, low, high): the bar's height and its whisker's ends.
Bar = tuple[float, float, float]

_COORD = ["#1f5fbf", "#5b9bd5", "#0b2e6b", "#8fb8e8", "#2f4f8f"]
_PEERS = ["#e07b00", "#3a9d3a", "#b03a8c", "#8c6d31", "#6b6ecf", "#7f7f7f"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(label: str, seen: list[str]) -> str:
    """Blues for coord, other colours for peers, one per label in the order met."""
    if label not in seen:
        seen.append(label)
    mine = label.startswith("coord")
    same = [other for other in seen if other.startswith("coord") == mine]
    palette = _COORD if mine else _PEERS
    return palette[same.index(label) % len(palette)]


def bars(
    path: Path,
    title: str,
    ylabel: str,
    data: Mapping[str, Mapping[str, Bar]],
    *,
    log: bool = False,
    hline: tuple[float, str] | None = None,
    note: str = "",
) -> None:
    """Bars of ``data[group][label]``, groups along x; whiskers from low to high."""
    plt = _pyplot()
    labels: list[str] = []
    for group in data.values():
        labels += [label for label in group if label not in labels]
    labels.sort(key=lambda label: not label.startswith("coord"))
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 1.3 * len(data) * max(1, len(labels)) ** 0.5 + 2)), 4.2))
    width = 0.8 / max(1, len(labels))
    peers: list[str] = []
    for n, label in enumerate(labels):
        xs, heights, lows, highs = [], [], [], []
        for x, group in enumerate(data.values()):
            if label in group:
                value, low, high = group[label]
                xs.append(x - 0.4 + width * (n + 0.5))
                heights.append(value)
                lows.append(max(0.0, value - low))
                highs.append(max(0.0, high - value))
        ax.bar(xs, heights, width, label=label, color=_color(label, peers), yerr=[lows, highs], capsize=2)
    ax.set_xticks(range(len(data)), list(data))
    _finish(plt, fig, ax, path, title, ylabel, log=log, hline=hline, note=note)


def lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    *,
    logx: bool = False,
    logy: set[str] | None = None,
    note: str = "",
) -> None:
    """Side by side panels, each with one line of (x, y) points per label; panels named in ``logy`` on a log scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for ax, (panel, data) in zip(axes[0], panels.items(), strict=True):
        seen: list[str] = []
        for label, points in data.items():
            style = "-o" if label.startswith("coord") else "--s"
            ax.plot([x for x, _ in points], [y for _, y in points], style, label=label, color=_color(label, seen),
                    markersize=4)  # fmt: skip
        if logx:
            ax.set_xscale("log", base=2)
            ticks = sorted({x for points in data.values() for x, _ in points})
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if panel in (logy or set()):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finish(
    plt: Any, fig: Any, ax: Any, path: Path, title: str, ylabel: str, *, log: bool, hline: Any, note: str
) -> None:
    if log:
        ax.set_yscale("log")
    if hline is not None:
        ax.axhline(hline[0], color="#c00000", linestyle=":", linewidth=1, label=hline[1])
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
