"""PNG plots for the comparison page: matplotlib (Agg, headless), byte-identical for the same inputs.

Each function takes the comparison table (harness.report.compare) and a path, writes one PNG and returns
its caption. No timestamps or software tags are written into the files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

PNG_METADATA = {"Software": None}  # matplotlib would otherwise stamp its version; PNGs carry no date
_MARKERS = "osD^vP*Xh<>"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def series_label(row, multi_machine: bool, multi_model: bool) -> str:
    label = f"{row['target']} {row['precision']}"
    if row.get("variant"):
        label += f" ({row['variant']})"
    if multi_model:
        label += f" [{row['profile']}]"
    if multi_machine:
        label += f" @ {row['machine']}"
    return label


def _each_series(table: pd.DataFrame):
    """(label, its rows sorted by batch size, marker, colour) per series, in table order (already
    sorted and deterministic), so every plot styles the same series alike."""
    multi_machine = table["machine"].nunique() > 1
    multi_model = table[["profile", "model"]].drop_duplicates().shape[0] > 1
    labels = [series_label(r, multi_machine, multi_model) for _, r in table.iterrows()]
    for i, name in enumerate(dict.fromkeys(labels)):
        part = table[[lab == name for lab in labels]].sort_values("bs")
        yield name, part, _MARKERS[i % len(_MARKERS)], f"C{i % 10}"


def _save(fig, path: Path) -> None:
    """Rendered in memory, then written atomically and never through a symlink."""
    from harness.fileio import save_figure
    from harness.folders import safe_target

    save_figure(fig, safe_target(path.parent, path.name, "report folder"), dpi=100, metadata=PNG_METADATA)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, grid, legend and the deterministic PNG write shared by every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, path)


def throughput_vs_batch(table: pd.DataFrame, path: Path) -> str:
    """One line per (target, precision[, model][, machine]): img/s against batch size (log2 axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        for name, part, marker, colour in _each_series(table):
            std = part["fps_std"].fillna(0.0)
            ax.errorbar(part["bs"], part["fps"], yerr=std if (std > 0).any() else None,
                        marker=marker, color=colour, capsize=3, label=name)
        sizes = sorted(int(b) for b in table["bs"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        if len(sizes) == 1:
            ax.set_xlim(sizes[0] / 1.5, sizes[0] * 1.5)
        ax.set_ylim(bottom=0)
        _finish(fig, ax, path, "batch size", "throughput (img/s, timing loop)", "Throughput vs batch size")
    finally:
        plt.close(fig)
    caption = "Throughput (img/s from the timing loop) against batch size, one line per target and precision"
    if table["repeats"].max() > 1:
        caption += "; error bars: std over repeated runs"
    return caption + "."


def map_vs_throughput(table: pd.DataFrame, path: Path) -> str:
    """One point per table row: COCO mAP against throughput, labelled with its batch size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        for name, part, marker, colour in _each_series(table):
            ax.scatter(part["fps"], part["map"], marker=marker, color=colour, s=40, label=name, zorder=3)
            for _, r in part.iterrows():
                if not (math.isnan(r["fps"]) or math.isnan(r["map"])):
                    ax.annotate(f"bs {int(r['bs'])}", (r["fps"], r["map"]), textcoords="offset points",
                                xytext=(5, 4), fontsize=7)
        ax.set_xlim(left=0, right=max(1.0, float(table["fps"].max(skipna=True) or 0) * 1.15))
        low, high = float(table["map"].min(skipna=True)), float(table["map"].max(skipna=True))
        pad = max(0.01, (high - low) * 0.15) if not math.isnan(low) else 0.01
        ax.set_ylim(max(0.0, low - pad), high + pad)
        _finish(fig, ax, path, "throughput (img/s, timing loop)", "COCO mAP@[.5:.95]",
                "Accuracy vs throughput (up and right is better)")
    finally:
        plt.close(fig)
    return "COCO mAP against throughput, one point per table row (labelled with its batch size)."


def write_plots(table: pd.DataFrame, out_md: Path) -> list[tuple[str, str]]:
    """Write both PNGs next to the markdown file; [(file name relative to it, caption)]."""
    out_md = Path(out_md)
    stem = out_md.stem
    made = []
    for suffix, fn in (("throughput", throughput_vs_batch), ("map-vs-throughput", map_vs_throughput)):
        name = f"{stem}-{suffix}.png"
        caption = fn(table, out_md.parent / name)
        made.append((name, caption))
    return made
