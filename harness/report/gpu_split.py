"""The per-batch GPU stage split a row may carry (the trt target's h2d / compute / d2h times and its
host enqueue time, harness.targets.trt.timing): which row figures hold it, how tables show it, and
what it measures. Rows without it (ort, ov, NPU) get no such column or section.

Works on anything with .get(key) (a row dict, a ResultRow, a pandas row of the comparison table);
a missing figure is None or NaN there and shows as '-'.
"""

from __future__ import annotations

import math

from harness.targets.timing import PERCENTILE_MIN_SAMPLES

#: (row figure, short name) of the three stages, in the order a batch goes through them
SPLIT_STAGES = (("h2d_ms_p50", "h2d"), ("gpu_compute_ms_p50", "compute"), ("d2h_ms_p50", "d2h"))
ENQUEUE = "enqueue_ms_p50"
#: every row figure of the split (the CSV/JSON export carries these where a row has them)
SPLIT_FIGURES = tuple(f"{stage}_ms_{p}" for stage in ("h2d", "gpu_compute", "d2h", "enqueue")
                      for p in ("p50", "p90", "p99")) + ("gpu_compute_fps",)

SPLIT_HEADING = "h2d / compute / d2h ms p50"
ENQUEUE_HEADING = "enqueue ms p50"

#: the columns of the split's own table in the reports: (row figure, heading)
SPLIT_COLUMNS = (("h2d_ms_p50", "h2d ms p50"), ("gpu_compute_ms_p50", "compute ms p50"), ("d2h_ms_p50", "d2h ms p50"),
                 ("gpu_compute_ms_p99", "compute ms p99"), (ENQUEUE, ENQUEUE_HEADING),
                 ("gpu_compute_fps", "compute img/s"))

#: what the split measures, said as harness.targets.trt.timing measures it
SPLIT_NOTE = ("How it is measured (trt): CUDA events recorded on each batch's stream between the stages: **h2d** = "
              "copy of the inputs from pinned host memory to the GPU, **compute** = the "
              "engine's execute (a CUDA graph launch with cuda_graph; trtexec's GPU Compute Time), **d2h** = copy "
              "of the outputs back to pinned host memory; for each batch the three add up to its latency (their "
              "p50s need not). In throughput mode two streams share the GPU, so a stage can include time spent "
              "behind the other stream. **enqueue** = host wall-clock time of the execute call (perf_counter, not "
              "an event; trtexec's Enqueue Time). **compute img/s** = batch × 1000 / mean compute ms. p99 only "
              f"from {PERCENTILE_MIN_SAMPLES[99]} batches on, else '-'.")


def _value(row, key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def has_split(row) -> bool:
    return any(_value(row, key) is not None for key, _ in SPLIT_STAGES)


def has_enqueue(row) -> bool:
    return _value(row, ENQUEUE) is not None


def ms(value) -> str:
    """Stage times are often well under a millisecond: three decimals there, fewer above."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def figure_cell(row, key: str) -> str:
    value = _value(row, key)
    if key == "gpu_compute_fps":
        return "-" if value is None else (f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}")
    return ms(value)


def split_cell(row) -> str:
    """'0.150 / 2.00 / 0.046': the three stage p50s of one row, '-' for a row without the split."""
    if not has_split(row):
        return "-"
    return " / ".join(ms(_value(row, key)) for key, _ in SPLIT_STAGES)


def split_markdown(rows, label, first_heading: str = "row") -> list[str]:
    """The split's table and its note for the rows that have it (rows: dict-like, label(row) -> the
    row's name in the first column); [] when no row has it."""
    having = [r for r in rows if has_split(r) or has_enqueue(r)]
    if not having:
        return []
    head = [first_heading, *(title for _, title in SPLIT_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join([str(label(r)), *(figure_cell(r, key) for key, _ in SPLIT_COLUMNS)]) + " |"
              for r in having]
    return lines + ["", SPLIT_NOTE]
