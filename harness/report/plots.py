"""PNG plots for the comparison page: matplotlib (Agg, headless), 150 dpi, byte-identical for the same inputs.

Each plot draws only columns of the comparison table (harness.report.compare), which the CSV/JSON
export carries too: `series`, `point_label`, `fps`, `fps_err95` (the throughput's 95% error bar),
`map`, `pareto`, `latency_ms_p50/p90/p99`. `draw_*` draw onto an axes (tests read the artists back);
the writers around them save one PNG each and return its caption. No timestamps or software tags are
written into the files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.targets.timing import percentile_supported

PNG_METADATA = {"Software": None}  # matplotlib would otherwise stamp its version; PNGs carry no date
DPI = 150
_MARKERS = "osD^vP*Xh<>"
#: label offsets tried in turn (points from the marker): rings of 8 directions, nearest ring first
_OFFSETS = [(round(r * math.cos(math.radians(a))), round(r * math.sin(math.radians(a))))
            for r in (7, 16, 28, 42) for a in (30, -30, 150, -150, 90, -90, 0, 180)]
LATENCY_MARKS = (("latency_ms_p50", "o", "p50"), ("latency_ms_p90", "^", "p90"), ("latency_ms_p99", "x", "p99"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _each_series(table: pd.DataFrame):
    """(label, its rows sorted by batch size, marker, colour) per series, in table order (already
    sorted and deterministic), so every plot styles the same series alike."""
    for i, name in enumerate(dict.fromkeys(table["series"])):
        part = table[table["series"] == name].sort_values("bs")
        yield name, part, _MARKERS[i % len(_MARKERS)], f"C{i % 10}"


def _save(fig, path: Path) -> None:
    """Rendered in memory, then written atomically and never through a symlink."""
    from harness.core.fileio import save_figure
    from harness.core.folders import safe_target

    save_figure(fig, safe_target(path.parent, path.name, "report folder"), dpi=DPI, metadata=PNG_METADATA,
                bbox_inches="tight")


def _finish(ax, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    """Labels, grid and a legend outside the plotting area (it never covers a point)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], fontsize: float = 7) -> list:
    """Annotate each point with its text at the first offset (_OFFSETS, nearest first) whose box
    overlaps no label already placed and no marker, and stays inside the axes; labels away from their
    point get a leader line. Deterministic: same points, same places."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = []
    for x, y in points:
        cx, cy = ax.transData.transform((x, y))
        markers.append((cx - 4, cy - 4, cx + 4, cy + 4))
    placed, made = [], []
    for (x, y), text in zip(points, texts):
        chosen, fallback = None, None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 2 else "right" if dx < -2 else "center"
            va = "bottom" if dy > 2 else "top" if dy < -2 else "center"
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                fontsize=fontsize)  # measured without its leader line
            box = label.get_window_extent(renderer)
            rect = (box.x0 - 2, box.y0 - 1, box.x1 + 2, box.y1 + 1)  # a little air between labels
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(_overlap(rect, other) for other in placed + markers):
                chosen = (label, rect)
                break
            if inside and fallback is None:
                fallback = (label, rect)  # the nearest place inside the axes, should nothing be clear
            else:
                label.remove()
        if chosen is None:
            chosen = fallback or (lambda lab: (lab, tuple(lab.get_window_extent(renderer).extents)))(
                ax.annotate(text, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=fontsize))
        elif fallback is not None:
            fallback[0].remove()
        dx, dy = chosen[0].xyann
        if abs(dx) + abs(dy) > 12:  # far from its point: the same label with a leader line
            chosen[0].remove()
            chosen = (ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=chosen[0].get_ha(),
                                  va=chosen[0].get_va(), fontsize=fontsize,
                                  arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0,
                                              "shrinkB": 3}), chosen[1])
        placed.append(chosen[1])
        made.append(chosen[0])
    return made


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _finite(*values) -> bool:
    return all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


# ----------------------------------------------------------------------------------------------- throughput

def draw_throughput(table: pd.DataFrame, ax) -> None:
    """img/s against batch size (log2 axis, one tick per size), one line per series, 95% error bars;
    series are dodged sideways by a few percent of a doubling so that their bars do not hide each other."""
    series = list(_each_series(table))
    for i, (name, part, marker, colour) in enumerate(series):
        err = part["fps_err95"]
        dodge = 2 ** (0.06 * (i - (len(series) - 1) / 2)) if len(series) > 1 else 1.0
        ax.errorbar(part["bs"] * dodge, part["fps"], yerr=err.fillna(0.0) if err.notna().any() else None,
                    marker=marker, color=colour, capsize=3, label=name)
    sizes = sorted(int(b) for b in table["bs"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlim(sizes[0] / 1.4, sizes[-1] * 1.4)
    ax.set_ylim(bottom=0)


def _render(path: Path, size: tuple[float, float], draw, table: pd.DataFrame, *labels: str) -> None:
    """One figure: draw(table, ax), then labels/grid/legend (_finish) and the atomic PNG write (_save)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(table, ax)
        _finish(ax, *labels)
        _save(fig, path)
    finally:
        plt.close(fig)


def throughput_vs_batch(table: pd.DataFrame, path: Path) -> str:
    _render(path, (7.0, 4.2), draw_throughput, table,
            "batch size (log2 axis)", "throughput (img/s, timing loop)", "Throughput vs batch size")
    return ("Throughput (img/s from the timing loop) against batch size, one line per target and precision; error "
            "bars: the row's 95% confidence interval (fps_err95 in the CSV; the widest of repeated runs).")


# ----------------------------------------------------------------------------------------------- Pareto

def draw_pareto(table: pd.DataFrame, ax) -> None:
    """mAP against img/s, one labelled point per row; the Pareto front (no row both faster and more
    accurate) joined by a step line."""
    shown = table[[_finite(f, m) for f, m in zip(table["fps"], table["map"])]]
    for name, part, marker, colour in _each_series(shown):
        ax.scatter(part["fps"], part["map"], marker=marker, color=colour, s=36, label=name, zorder=3)
    front = shown[shown["pareto"].astype(bool)].sort_values("fps")
    if len(front):
        ax.step(front["fps"], front["map"], where="post", color="0.3", lw=1, ls="--", zorder=2, label="Pareto front")
    if len(shown):
        fps, maps = shown["fps"].astype(float), shown["map"].astype(float)
        if fps.max() / max(fps.min(), 1e-9) > 20:
            ax.set_xscale("log")
            ax.set_xlim(fps.min() / 1.5, fps.max() * 1.5)
        else:
            span = max(fps.max() - fps.min(), fps.max() * 0.1)
            ax.set_xlim(fps.min() - 0.25 * span, fps.max() + 0.25 * span)
        pad = max(0.01, (maps.max() - maps.min()) * 0.25)
        ax.set_ylim(maps.min() - pad, maps.max() + pad)
        # colour and marker name the series (legend); each point says its batch size (and mode)
        short = [f"bs {int(r['bs'])}" + (f" {r['mode']}" if shown["mode"].nunique() > 1 else "")
                 for _, r in shown.iterrows()]
        place_labels(ax, list(zip(fps, maps)), short)


def map_vs_throughput(table: pd.DataFrame, path: Path) -> str:
    _render(path, (7.0, 4.6), draw_pareto, table,
            "throughput (img/s, timing loop)", "COCO mAP@[.5:.95]", "Accuracy vs throughput (up and right is better)")
    return ("COCO mAP against throughput, one labelled point per table row; the dashed line joins the Pareto front "
            "(rows no other row beats in both; `pareto` in the CSV).")


# ----------------------------------------------------------------------------------------------- latency

def latency_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the latency plot shows: those with a p50, in table order."""
    return table[[_finite(v) for v in table["latency_ms_p50"]]]


def draw_latency(table: pd.DataFrame, ax) -> None:
    """One line per row: p50, p90, p99 per batch call (each only where the row's latency count supports it)."""
    rows = latency_rows(table)
    ys = list(range(len(rows)))[::-1]  # first table row at the top
    for (key, marker, name), colour in zip(LATENCY_MARKS, ("C0", "C1", "C3")):
        xs, at = [], []
        for y, (_, r) in zip(ys, rows.iterrows()):
            if _finite(r[key]) and percentile_supported(key, None if not _finite(r["latency_samples"])
                                                        else int(r["latency_samples"])):
                xs.append(float(r[key]))
                at.append(y)
        ax.scatter(xs, at, marker=marker, color=colour, s=30, label=name, zorder=3)
    for y, (_, r) in zip(ys, rows.iterrows()):
        values = [float(r[k]) for k, _, _ in LATENCY_MARKS if _finite(r[k])]
        ax.plot([min(values), max(values)], [y, y], color="0.6", lw=1, zorder=2)
    ax.set_yticks(ys)
    ax.set_yticklabels([str(t) for t in rows["point_label"]], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(left=0)


def latency_percentiles(table: pd.DataFrame, path: Path) -> str:
    height = max(2.2, 0.9 + 0.28 * len(latency_rows(table)))
    _render(path, (7.0, height), draw_latency, table,
            "latency per batch call (ms, timing loop)", "", "Latency percentiles per row")
    return ("Latency per batch call in the timing loop, p50 / p90 / p99 per row (a percentile the row's sample count "
            "does not support is left out).")


PLOTS = (("throughput", throughput_vs_batch), ("map-vs-throughput", map_vs_throughput),
         ("latency", latency_percentiles))


def write_plots(table: pd.DataFrame, out_md: Path) -> list[tuple[str, str]]:
    """Write the PNGs next to the markdown file; [(file name relative to it, caption)]."""
    out_md = Path(out_md)
    made = []
    for suffix, fn in PLOTS:
        name = f"{out_md.stem}-{suffix}.png"
        made.append((name, fn(table, out_md.parent / name)))
    return made
