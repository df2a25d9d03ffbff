"""mAP against throughput for fp32, all-int8 and every greedy step: the Pareto front and its plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Point:
    label: str  # fp32, int8, or "+ NODE" for a greedy step
    floated: int  # groups in float (fp32: every quantizable one)
    int8_convs: str  # e.g. "107/133"
    map: float | None
    fps: float | None
    delta: float | None  # against fp32
    low: float | None
    high: float | None
    kept: bool = True  # a greedy step that did not raise mAP is listed but not kept


def pareto_front(points: list[Point]) -> set[int]:
    """Indices of the kept points no other kept point beats on both mAP and img/s (ties kept)."""
    usable = [(i, p) for i, p in enumerate(points) if p.kept and p.map is not None and p.fps is not None]
    front = set()
    for i, p in usable:
        dominated = any(q.map >= p.map and q.fps >= p.fps and (q.map > p.map or q.fps > p.fps) for _, q in usable)
        if not dominated:
            front.add(i)
    return front


def plot(points: list[Point], front: set[int], title: str, path: Path) -> Path:
    """A PNG of mAP vs img/s: every point, the front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for i, p in enumerate(points):
        if p.map is None or p.fps is None:
            continue
        colour = "tab:blue" if p.label == "fp32" else "tab:red" if p.label == "int8" else \
            ("tab:green" if p.kept else "lightgrey")
        ax.scatter(p.fps, p.map, color=colour, zorder=3, s=36 if i in front else 18)
        if p.kept:
            ax.annotate(p.label, (p.fps, p.map), textcoords="offset points", xytext=(4, 4), fontsize=6)
    line = sorted((points[i].fps, points[i].map) for i in front)
    if len(line) > 1:
        ax.plot([x for x, _ in line], [y for _, y in line], color="tab:green", linewidth=1, zorder=2)
    ax.set_xlabel("img/s (target's benchmark loop, batch 1)")
    ax.set_ylabel("mAP on the search subset")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from harness.core.fileio import save_figure

    save_figure(fig, path)
    plt.close(fig)
    return path
