"""What `harness sensitivity` leaves in --out: sensitivity.csv, sensitivity.md, pareto.png, exclude.txt
(the search's model.qdq.onnx and quant.json are written by the flow itself)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.core.fileio import atomic_write_text
from harness.sensitivity.agreement import agreement
from harness.sensitivity.pareto import Point, pareto_front, plot
from harness.sensitivity.search import TYPE_PREFIX, cost, helps
from harness.sensitivity.structure import CRUSHED_SHARE, CRUSHED_STEPS

CSV_FILE = "sensitivity.csv"
MD_FILE = "sensitivity.md"
PLOT_FILE = "pareto.png"
EXCLUDE_FILE = "exclude.txt"


def node_rows(result) -> list[dict]:
    """One row per quantized node and per type group: tensor error, structure, ΔmAP per mode, the
    greedy step that put it in float (with the img/s change of that step) and the decision."""
    restored_at: dict[str, tuple[int, float | None]] = {}
    previous_fps = result.references["int8"].get("fps")
    for number, step in enumerate(result.steps, start=1):
        if step.kept:
            dfps = step.fps - previous_fps if step.fps is not None and previous_fps is not None else None
            restored_at[step.added] = (number, dfps)
            previous_fps = step.fps
    tried = {step.added for step in result.steps}
    floated = set(result.floated)
    member_of = {n: g for g, members in result.groups.items() if g not in members for n in members}
    rows = []
    for node in result.nodes:
        row = {k: node[k] for k in ("name", "op_type", "kind", "head", "crushed", "sqnr_db", "activation_db",
                                    "local_db", "weight_db")}
        rows.append(row)
    for group, members in result.groups.items():
        if group not in members:  # a type group: a row of its own
            rows.append({"name": group, "op_type": group.removeprefix(TYPE_PREFIX),
                         "kind": f"group of {len(members)}", "head": None, "crushed": None, "sqnr_db": None,
                         "activation_db": None, "local_db": None, "weight_db": None})
    for row in rows:
        name = row["name"]
        records = result.variants.get(name, {})
        row["shortlist"] = name in result.variants
        for mode in ("exclude", "include"):
            record = records.get(mode)
            row[f"{mode}_dmap"] = record["delta"] if record else None
            row[f"{mode}_low"] = record["low"] if record else None
            row[f"{mode}_high"] = record["high"] if record else None
            row[f"{mode}_verdict"] = _verdict(record)
        row["map_cost"] = cost(records) if records else None
        via = name if name in restored_at else member_of.get(name) if member_of.get(name) in restored_at else None
        row["restore_step"], row["dfps"] = restored_at.get(via, (None, None)) if via else (None, None)
        in_float = all(n in floated for n in result.groups.get(name, (name,)))
        row["decision"] = ("float" + (f" (with {via})" if via and via != name else "")) if in_float else \
            ("int8 (tried, no gain)" if name in tried else "int8")
    ranked = sorted(rows, key=lambda r: (r["map_cost"] is None, -(r["map_cost"] or 0.0), r["name"]))
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank if row["map_cost"] is not None else None
    return ranked


def _verdict(record: dict | None) -> str | None:
    if not record or record.get("low") is None:
        return None
    return "inside noise" if record["low"] <= 0 <= record["high"] else ("hurts" if helps(record) else "helps")


def points(result) -> list[Point]:
    refs = result.references
    total = result.conv_total
    int8 = result.int8_comparison
    out = [Point("fp32", len(result.nodes), f"0/{total}", refs["fp32"]["map"], refs["fp32"].get("fps"), None, None, None),
           Point("int8", 0, f"{result.convs_int8_all}/{total}", refs["int8"]["map"], refs["int8"].get("fps"),
                 int8.delta, int8.low, int8.high)]
    convs = {n["name"] for n in result.nodes if n["op_type"] == "Conv"}
    for step in result.steps:
        floated_convs = sum(1 for n in step.floated if n in convs)
        out.append(Point(f"+ {step.added}", len(step.floated), f"{result.convs_int8_all - floated_convs}/{total}",
                         step.map, step.fps, step.delta, step.low, step.high, step.kept))
    return out


def write_exclude(path: Path, result) -> Path:
    req = result.request
    lines = [f"# harness sensitivity: nodes kept in float for {Path(req.model).name} on {req.settings.target}",
             f"# subset mAP {_f(result.final_map)} vs fp32 {_f(result.references['fp32']['map'])} "
             f"(--max-drop {req.settings.max_drop}); use: harness quantize --exclude-from {path.name}",
             *result.floated]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _f(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _interval(low, high) -> str:
    return "" if low is None or high is None else f"[{low:+.4f}, {high:+.4f}]"


def write_outputs(result) -> dict[str, Path]:
    out = Path(result.request.out)
    rows = node_rows(result)
    atomic_write_text(out / CSV_FILE, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    pts = points(result)
    front = pareto_front(pts)
    req = result.request
    plot(pts, front, f"{Path(req.model).name} on {req.settings.target}: greedy restore", out / PLOT_FILE)
    write_exclude(out / EXCLUDE_FILE, result)
    atomic_write_text(out / MD_FILE, markdown(result, rows, pts, front))
    return {"csv": out / CSV_FILE, "md": out / MD_FILE, "plot": out / PLOT_FILE, "exclude": out / EXCLUDE_FILE,
            "model": result.model_file}


def markdown(result, rows: list[dict], pts: list[Point], front: set[int]) -> str:
    req, s = result.request, result.request.settings
    refs = result.references
    fc = result.final_comparison
    share = result.convs_int8_final / result.conv_total if result.conv_total else 0.0
    lines = [f"# Sensitivity: {Path(req.model).name} on `{s.target}`", ""]
    lines += [
        f"- subset: {result.subset_images} images from `{req.data}` (annotations `{req.ann}`); calibration: "
        f"{result.calib_images} images of `{req.calib}`, {s.method}, "
        f"{'per-channel' if s.per_channel else 'per-tensor'} weights",
        f"- fp32 {_f(refs['fp32']['map'])}, all-int8 {_f(refs['int8']['map'])} mAP on the subset; "
        f"{len(result.nodes)} quantized nodes, {len(result.shortlisted)} shortlisted, modes: {s.mode}, "
        f"intervals: paired bootstrap, {s.resamples} resamples, 95%",
        f"- result: {len(result.floated)} node(s) kept in float; subset mAP {_f(result.final_map)} "
        f"(Δ {_signed(fc.delta)} {_interval(fc.low, fc.high)} vs fp32); "
        f"int8 Convs {result.convs_int8_final}/{result.conv_total} ({share:.0%}); "
        + ("**drop within --max-drop " + f"{s.max_drop}**" if result.goal_met else
           f"**the drop is not within --max-drop {s.max_drop}** with the shortlisted nodes (raise --top-k)"),
        f"- took {result.seconds / 60:.1f} min; files: `exclude.txt` (for `harness quantize --exclude-from`), "
        "`model.qdq.onnx` + `quant.json`, `sensitivity.csv`, `pareto.png`", "",
        "ΔmAP columns: **exclude** = everything int8 but the node, minus all-int8 (positive: the node costs "
        "mAP when quantized); **include** = only the node int8, minus fp32 (negative: it costs mAP). "
        f"*inside noise*: the interval holds 0. *crushed*: share of the node's input channels spanning fewer than "
        f"{CRUSHED_STEPS} int8 steps of the tensor's one scale. SQNR: the node's own (worse of input activation "
        "and weight), in dB.", "",
        "## Ranked by the mAP a node costs", "",
        "| rank | node | op | kind | SQNR dB | exclude ΔmAP | include ΔmAP | decision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["rank"] is None:
            continue
        kind = row["kind"] + (" head" if row["head"] else "") + \
            (f" {row['crushed']:.0%} crushed" if row["crushed"] is not None and row["crushed"] >= CRUSHED_SHARE else "")
        cells = []
        for mode in ("exclude", "include"):
            if row[f"{mode}_dmap"] is None:
                cells.append("")
            else:
                cells.append(f"{row[f'{mode}_dmap']:+.4f} {_interval(row[f'{mode}_low'], row[f'{mode}_high'])}"
                             + (" *inside noise*" if row[f"{mode}_verdict"] == "inside noise" else ""))
        lines.append(f"| {row['rank']} | `{row['name']}` | {row['op_type']} | {kind} | {_f(row['sqnr_db'], 1)} | "
                     f"{cells[0]} | {cells[1]} | {row['decision']} |")
    agree = agreement({r["name"]: r["sqnr_db"] for r in rows}, {r["name"]: r["map_cost"] for r in rows})
    overlap = ", ".join(f"top-{k}: {n} of {k}" for k, n in agree.overlap.items()) or "too few nodes"
    lines += ["", "## Tensor error vs mAP", "",
              f"Over the {agree.nodes} nodes with both figures, the worst by SQNR (their own activation or "
              f"weight SQNR, lowest first) and the costliest by mAP share {overlap}; Spearman's rank correlation "
              f"{_f(agree.spearman, 2)}. The ranking by mAP is the one the restore uses.", "",
              "## Greedy restore (Pareto table)", "",
              "| point | float nodes | int8 Convs | mAP | Δ vs fp32 [95%] | img/s | kept | Pareto |",
              "|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(pts):
        lines.append(f"| {p.label} | {p.floated} | {p.int8_convs} | {_f(p.map)} | {_signed(p.delta)} {_interval(p.low, p.high)} "
                     f"| {_f(p.fps, 1)} | {'yes' if p.kept else 'no (no gain)'} | {'✓' if i in front else ''} |")
    lines += ["", f"![mAP vs img/s]({PLOT_FILE})", "",
              "img/s: the target's own benchmark loop, batch 1, "
              f"{s.bench_seconds:g} s per point; on a shared machine read them as rough.", ""]
    return "\n".join(lines)
