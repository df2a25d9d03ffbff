"""Markdown pages: one run's folder (run_report_markdown) and the comparison across runs
(comparison_markdown). Rows in, text out; never recomputes metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path

from harness.machine.state import BUSY_SHARE
from harness.machine.state import flat_fields as machine_fields
from harness.measure.row import FLAGS, ResultRow, flag_label, target_label
from harness.report.compare import SPREAD_LARGE
from harness.report.gpu_split import split_markdown
from harness.targets.timing import PERCENTILE_MIN_SAMPLES, percentile_supported

COLUMNS = [
    ("target", "target"), ("precision", "precision"), ("mode", "mode"), ("bs", "bs"), ("images", "images"),
    ("map", "mAP"), ("map50", "AP50"), ("map75", "AP75"), ("fps", "infer img/s"), ("fps_ci95", "±"),
    ("latency_ms_p50", "p50 ms"), ("latency_ms_p90", "p90 ms"), ("latency_ms_p99", "p99 ms"),
    ("e2e_fps", "e2e img/s"),
]

PERCENTILE_NOTE = ("percentiles only where the loop's latency count supports them (" +
                   ", ".join(f"p{p} needs {n}" for p, n in PERCENTILE_MIN_SAMPLES.items() if n > 1) +
                   "); else '-' with the count")


_MARKDOWN_SPECIAL = re.compile(r"([\\|*_`<>\[\]#])")


def md_text(value) -> str:
    """Text from a results file (class names, model names, notes) as one table cell or line: its
    markdown characters escaped, so a class named `a|b` or `*x*` can neither split nor format the table."""
    text = " ".join(str(value).splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def fmt(value, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key.startswith("map"):
            return f"{value:.4f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _count(samples) -> int | None:
    if samples is None or (isinstance(samples, float) and math.isnan(samples)):
        return None
    return int(samples)


def percentile_cell(value, key: str, samples) -> str:
    """A latency percentile, or '- (n=N)' where N samples do not support it (also for rows written
    before the gate, whose p99 came from a few dozen samples)."""
    n = _count(samples)
    if not percentile_supported(key, n):
        return f"- (n={n})"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt(float(value), key)


def ci_cell(ci, converged) -> str:
    """The throughput's 95% confidence half-width, ⚠ where the loop stopped at its cap above target."""
    if ci is None or (isinstance(ci, float) and math.isnan(ci)):
        return "-"
    return f"±{ci * 100:.1f}%" + (" ⚠" if converged is False else "")


def mode_cell(mode, requests) -> str:
    """'throughput ×2' (batches in flight), 'latency', '-' where the row recorded no mode."""
    if not mode:
        return "-"
    n = _count(requests)
    return mode if mode == "latency" or n is None else f"{mode} ×{n}"


def cell(row: dict, key: str) -> str:
    """One table cell of a row dict: percentiles gated by the row's latency count, the mode with its
    requests, the confidence half-width with its convergence."""
    if key.startswith("latency_ms_p"):
        return percentile_cell(row.get(key), key, row.get("latency_samples"))
    if key == "fps_ci95":
        return ci_cell(row.get("fps_ci95"), row.get("fps_converged"))
    if key == "mode":
        return mode_cell(row.get("mode"), row.get("requests"))
    return fmt(row.get(key), key)


def markdown_table(rows: list[dict], columns=COLUMNS) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(md_text(cell(row, key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _row_dicts(rows) -> list[dict]:
    """ResultRows as the dicts tables read; a failed row shows ✗ in place of its figures."""
    out = []
    for row in rows:
        row = row if isinstance(row, ResultRow) else ResultRow.from_dict(row)
        data = row.to_dict()
        if row.status == "failed":
            data.update({k: "✗" for k in ("images", "map", "map50", "map75")})
        data["target"] = target_label(row.target, row.source, row.device)
        data["flags"] = ", ".join(flag_label(f) for f in row.flags) or "-"
        data["flag_keys"] = list(row.flags)
        out.append(data)
    return out


def run_report_markdown(rows, env: dict) -> str:
    """report.md of one --out folder (rows: ResultRows)."""
    rows = _row_dicts(rows)
    lines = ["# Benchmark results", ""]
    if rows:
        first = rows[0]
        lines += [f"- model: `{first.get('model')}`  profile: `{first.get('profile')}`",
                  f"- dataset: `{first.get('dataset')}` ({first.get('images')} images), evaluator: {first.get('evaluator')}", ""]
    lines += [markdown_table(rows, [*COLUMNS, ("flags", "flags")]), ""]
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["Rows that did not run (✗) or lost their accuracy:"]
        lines += [f"- {r['target']} bs={r['bs']}: {r.get('error')}" for r in failed] + [""]
    lines += [
        "What each figure covers:",
        "- **mAP / AP50 / AP75**: COCO bbox AP@[.5:.95], @.5, @.75 (0..1) over the images counted in `images`.",
        ("- **infer img/s, p50/p90/p99 ms**: steady-state loop on one preprocessed batch, after warm-up; "
        "pure inference (see `time_covers` per row), latency per batch call; " + PERCENTILE_NOTE + "."),
        ("- **±**: the throughput's 95% confidence half-width over the loop's successive windows; the loop runs "
         "until it is under its target (default ±1%) or its time cap (⚠: it stopped at the cap)."),
        ("- **mode**: latency (one batch in flight) or throughput (×N: batches in flight); compare speed only "
         "between rows of the same mode."),
        ("- **e2e img/s**: the full accuracy pass, wall clock from the first image read to the last batch decoded "
        "(read + preprocess + infer + decode; evaluation excluded). It is measured after the timing loop, in a "
        "window of its own: where other load changed between them it can read above infer img/s (the row's note "
        "and the machine table give each window's other load)."),
        "",
    ]
    flags = sorted({f for r in rows for f in r["flag_keys"]})
    if flags:
        lines += ["Flags:"] + [f"- *{flag_label(f)}*: {FLAGS[f]}" for f in flags] + [""]
    notes = [(r, n) for r in rows for n in r.get("notes", [])]
    if notes:
        lines += ["Notes:"] + [f"- {r['target']} bs={r['bs']}: {n}" for r, n in notes] + [""]
    lines += _machine_rows_section(rows)
    lines += ["Per-stage time over the full pass (ms per image, summed over stages that may overlap):", ""]
    lines += [_stage_table(rows), ""]
    split = split_markdown(rows, _run_row_name)
    if split:
        lines += ["GPU time per batch by stage (timing loop, ms):", "", *split, ""]
    nodes = [(r, r["cluster"]) for r in rows if isinstance(r.get("cluster"), dict)]
    if nodes:  # run --cluster: each row's machine fields are its worker host's (docs/cluster.md)
        lines += ["Cluster nodes (the host each row ran on; its machine fields are that host's):", ""]
        lines += [f"- {r['target']} bs={r['bs']}: {c.get('host')} ({c.get('ip')}, node {str(c.get('node_id'))[:8]}; "
                  f"{(c.get('env') or {}).get('cpu')}, {(c.get('env') or {}).get('cores')} cores)" for r, c in nodes]
        lines.append("")
    if env:
        lines += ["Environment (of the host that ran the command):" if nodes else "Environment:", ""]
        lines += [f"- {k}: {v}" for k, v in env.items() if k != "packages"]
        pkgs = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
        if pkgs:
            lines.append(f"- packages: {pkgs}")
        lines.append("")
    return "\n".join(lines)


def _num_cell(value, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}{suffix}"


MACHINE_HEAD = ["row", "other CPU % (timing / e2e)", "load 1 min (before → after)", "CPU MHz min / median / max",
                "peak RSS MiB (image cache)", "model MiB", "GPU mem MiB", "J / image", "img/s per W"]


GPU_HEAD = "GPU SM MHz / max °C / throttle"


def machine_head(fields: list[dict]) -> list[str]:
    """The machine table's columns; the GPU one only where some row has NVML readings."""
    return MACHINE_HEAD + ([GPU_HEAD] if _has_gpu(fields) else [])


def _has_gpu(fields: list[dict]) -> bool:
    return any(not _is_nan(m.get("gpu_sm_mhz_median")) or not _is_nan(m.get("gpu_temp_c_max")) for m in fields)


def machine_line(name: str, m: dict, gpu: bool = False) -> str:
    """One row of the machine table from flat machine columns (harness.machine.state.flat_fields)."""
    others = f"{_num_cell(m['other_cpu_share'], 0, 100)} / {_num_cell(m['e2e_other_cpu_share'], 0, 100)}"
    if m.get("busy"):
        others += " ⚠"
    load = f"{_num_cell(m['load_before'], 2)} → {_num_cell(m['load_after'], 2)}"
    mhz = "/".join(_num_cell(m[f"cpu_mhz_{k}"], 0) for k in ("min", "median", "max"))
    mhz = "n/a" if mhz == "-/-/-" and m.get("cpu_mhz_na") else mhz.replace("/", " / ")
    rss = _num_cell(m["rss_peak_mib"], 0)
    if m.get("image_cache_share") is not None and not _is_nan(m["image_cache_share"]):
        rss += f" ({m['image_cache_share'] * 100:.0f}%)"
    energy_na = "n/a" if m.get("energy_na") else "-"
    joules = _num_cell(m["joules_per_image"], 4) if not _is_nan(m["joules_per_image"]) else energy_na
    per_watt = _num_cell(m["fps_per_watt"], 2) if not _is_nan(m["fps_per_watt"]) else energy_na
    cells = [name, others, load, mhz, rss, _num_cell(m["model_file_mib"], 1), _num_cell(m["gpu_memory_mib"], 0),
             joules, per_watt]
    if gpu:
        cells.append(f"{_num_cell(m.get('gpu_sm_mhz_median'), 0)} / {_num_cell(m.get('gpu_temp_c_max'), 0)} / "
                     f"{m.get('gpu_throttle_reasons') or '-'}")
    return "| " + " | ".join(cells) + " |"


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def machine_legend(fields: list[dict]) -> list[str]:
    """What the machine table's columns are, and every n/a reason once."""
    lines = [(f"- **other CPU %**: the share of all CPUs' time other processes (and a hypervisor's steal) took during "
              f"the timing loop / the accuracy pass; ⚠ above {BUSY_SHARE:.0%} (flag *busy-machine*). **CPU MHz**: sampled "
              "over the timing loop. **peak RSS**: this process over the row (load, timing, accuracy pass), the "
              "image cache's share in parentheses. **J / image**, **img/s per W**: the timing loop's measured "
              "energy (RAPL for CPU targets, NVML for GPUs), never estimated.")]
    reasons = sorted({f"{k.replace('_na', '').replace('_', ' ')} n/a: {m[k]}" for m in fields
                      for k in ("energy_na", "cpu_mhz_na") if m.get(k)})
    lines += [f"- {r}" for r in reasons]
    return lines


def _machine_rows_section(rows: list[dict]) -> list[str]:
    """report.md's machine table (rows that ran)."""
    ran = [r for r in rows if r.get("machine_state")]
    if not ran:
        return []
    fields = [machine_fields(r["machine_state"]) for r in ran]
    head = machine_head(fields)
    lines = ["Machine state per row:", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += [machine_line(_run_row_name(r), m, _has_gpu(fields)) for r, m in zip(ran, fields)]
    return lines + ["", *machine_legend(fields), ""]


def _run_row_name(r: dict) -> str:
    """'trt fp16 throughput ×2 bs 4': a row of one run's page, named as its table shows it."""
    mode = f" {mode_cell(r.get('mode'), r.get('requests'))}" if r.get("mode") else ""
    return f"{r['target']} {r.get('precision')}{mode} bs {r['bs']}"


def _stage_table(rows: list[dict]) -> str:
    flat = [{"target": r.get("target"), "bs": r.get("bs"), **{k: v for k, v in (r.get("stage_ms") or {}).items()}}
            for r in rows]
    return markdown_table(flat, [("target", "target"), ("bs", "bs"), ("preprocess", "preprocess"),
                                 ("infer", "infer"), ("decode", "decode")])


# ------------------------------------------------------------------------------------ comparison page
# Everything below renders a harness.report.compare.ComparisonPage; it formats numbers and never computes them.


def _f(value, digits: int = 2, signed: bool = False) -> str:
    """Stable number formatting; NaN/None -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _fps(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"


def _model_labels(table) -> dict[tuple, str]:
    pairs = sorted(set(zip(table["profile"], table["model"])))
    by_profile: dict[str, int] = {}
    for profile, _ in pairs:
        by_profile[profile] = by_profile.get(profile, 0) + 1
    return {(p, m): p if by_profile[p] == 1 else f"{p} ({Path(m).name})" for p, m in pairs}


class _Page:
    """What every section of the comparison page needs: the comparison and how rows are named."""

    def __init__(self, comp):
        self.comp = comp
        self.table = comp.table
        self.rows = [r for _, r in comp.table.iterrows()]
        self.multi_machine = comp.multi_machine
        self.model_labels = _model_labels(comp.table)
        self.multi_model = len(self.model_labels) > 1
        self.multi_mode = len(set(comp.table["mode"])) > 1

    def name(self, r) -> str:
        mode = f" {r['mode'] or 'unrecorded mode'}" if self.multi_mode else ""
        text = f"{target_label(r['target'], r['origin'], r['device'])} {r['precision']}{mode} bs {r['bs']}"
        if r.get("variant"):
            text += f" ({r['variant']})"
        if self.multi_model:
            text += f" [{self.model_labels[(r['profile'], r['model'])]}]"
        if self.multi_machine:
            text += f" @ {r['machine']}"
        return text


def _spread_cell(r) -> str:
    if r["spread_kind"] == "repeats":
        text = f"±{r['spread'] * 100:.1f}% sd, n={int(r['repeats'])}"
    elif r["spread_kind"] == "ci95":
        text = f"±{r['spread'] * 100:.1f}% CI" + (" (cap)" if r["fps_converged"] is False else "")
    else:
        return "-"
    return text + (" ⚠" if r["spread"] > SPREAD_LARGE or r["fps_converged"] is False else "")


def _flags(r) -> str:
    flags = ["baseline"] if r["is_baseline"] else []
    flags += [flag_label(f) for f in r["flags"] if f != "skipped-images"]
    if r["skipped"]:
        flags.append(f"skipped {int(r['skipped'])}")
    return ", ".join(flags) or "-"


def _header(page: _Page, baseline_asked: str | None) -> list[str]:
    comp = page.comp
    datasets = sorted(set(page.table["annotations"]))
    lines = ["# Benchmark comparison", "",
             (f"- inputs: {len(comp.sources)} results file(s), {len(page.rows)} table row(s), "
              f"{len(comp.machines)} machine(s): {', '.join(comp.machines)}")]
    if comp.baseline:
        how = f"--baseline {baseline_asked}" if baseline_asked else "default: the fp32 CPU reference (ort, else ov)"
        lines.append(f"- baseline: **{comp.baseline[0]} {comp.baseline[1]}** ({how}); ΔmAP and speedup are "
                     "against its row at the same batch size, speedup only against a row of the same mode "
                     "(latency or throughput)")
    else:
        lines.append("- baseline: none (no `ort` or `ov` fp32 rows; pass --baseline TARGET); Δ and speedup are blank")
    lines.append(f"- dataset: {', '.join(f'`{d}`' for d in datasets)}; images per row in the CSV/JSON export")
    if comp.duplicates:
        lines.append(f"- {comp.duplicates} row(s) appeared in more than one input (a copied file): counted once")
    lines += [f"- {note}" for note in comp.ignored]
    if any(r["variant"] for r in page.rows):
        lines.append("- rows with a label in parentheses share target, precision and bs but were measured with another "
                     "setup (the label says what differs): they are separate rows, never averaged as repeats")
    return lines + [""]


def _result_line(page: _Page, r, footnotes: list[str]) -> str:
    cells = []
    if page.multi_machine:
        cells.append(r["machine"])
    if page.multi_model:
        cells.append(page.model_labels[(r["profile"], r["model"])])
    fps = _fps(r["fps"])
    if r["repeats"] > 1 and not math.isnan(r["fps_std"]):
        fps += f" ± {_fps(r['fps_std'])}"
    delta = "-" if r["is_baseline"] and not r["baseline_match"] else _f(r["delta_map"], 4, signed=True)
    speed = "-" if math.isnan(r["speedup"]) else f"{r['speedup']:.2f}×"
    if r["baseline_match"] and not r["is_baseline"]:
        delta += " †"
        footnotes.append(f"- {page.name(r)}: ΔmAP against {r['baseline']} ({r['baseline_match']})")
    if r["speedup_match"] and not r["is_baseline"] and not math.isnan(r["speedup"]):
        speed += " †"
        if r["speedup_match"] != r["baseline_match"]:
            footnotes.append(f"- {page.name(r)}: speedup against the baseline's bs {r['bs']} row ({r['speedup_match']})")
    if r["speedup_missing"]:
        speed += " ‡"
        footnotes.append(f"- ‡ {page.name(r)}: {r['speedup_missing']}")
    percentiles = [percentile_cell(r[k], k, r["latency_samples"]) for k in ("latency_ms_p50", "latency_ms_p90",
                                                                           "latency_ms_p99")]
    target = target_label(r["target"], r["origin"], r["device"])
    target = f"{target} ({r['variant']})" if r.get("variant") else target
    cells += [target, r["precision"], mode_cell(r["mode"], r["requests"]), str(int(r["bs"])), _f(r["map"], 4),
              _f(r["map50"], 4), delta, fps, _spread_cell(r), *percentiles, speed, _fps(r["e2e_fps"]), r["covers"],
              _flags(r)]
    return "| " + " | ".join(md_text(c) for c in cells) + " |"


def _results_section(page: _Page) -> list[str]:
    head = (["machine"] if page.multi_machine else []) + (["model"] if page.multi_model else [])
    head += ["target", "precision", "mode", "bs", "mAP", "AP50", "ΔmAP", "img/s", "spread", "p50 ms", "p90 ms",
             "p99 ms", "speedup", "e2e img/s", "time covers", "flags"]
    lines = ["## Results", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    footnotes: list[str] = []
    lines += [_result_line(page, r, footnotes) for r in page.rows]
    lines.append("")
    if footnotes:
        missing = [f for f in footnotes if f.startswith("- ‡")]
        heads = (["† compared with a baseline row that is not like-for-like"] if len(missing) < len(footnotes) else [])
        heads += ["‡ no speedup: the baseline has no row of the same mode at that batch size"] if missing else []
        lines += ["; ".join(heads) + ":", *footnotes, ""]
    return lines + _how_to_read(page)


def _how_to_read(page: _Page) -> list[str]:
    table = page.table
    lines = [
        "How to read it:",
        ("- **mAP / AP50**: COCO bbox AP@[.5:.95] / AP@.5 (0..1), over the images each row counted; "
         "**ΔmAP** = row mAP − baseline mAP."),
        ("- **mode**: latency (one batch in flight) or throughput (×N: N batches in flight, each runtime's way); "
         "'-' for rows that recorded none (device tools, older results files)."),
        ("- **img/s**: throughput of the steady-state timing loop on one preprocessed batch (mean ± sd where the "
         "same row was measured in several results files); **speedup** = img/s ÷ baseline img/s at the same "
         "batch size and mode (a row of a mode the baseline lacks gets none: ‡). **p50/p90/p99 ms**: latency per "
         f"batch call in that loop; {PERCENTILE_NOTE}. **e2e img/s**: the whole accuracy pass, read + preprocess "
         "+ infer + decode, timed after the loop in a window of its own (it can read above img/s where other load "
         "changed between the two: see the machine table)."),
        "- **time covers** (what the img/s and latency figures time):",
    ]
    for short, full in sorted(set(zip(table["covers"], table["time_covers"]))):
        users = sorted(set(table[table["time_covers"] == full]["target"]))
        lines.append(f"  - *{short}* ({', '.join(users)}): {full}")
    shown = sorted({f for flags in table["flags"] for f in flags if f != "skipped-images"})
    legend = [f"*{flag_label(f)}* {FLAGS[f]}" for f in shown] + ["*skipped N* unreadable images left out of mAP"]
    lines += [f"- **flags**: {'; '.join(legend)}.", ""]
    return lines


def _gpu_split_section(page: _Page) -> list[str]:
    """Rows that timed their GPU stages (trt): h2d / compute / d2h and enqueue; none: no section."""
    split = split_markdown(page.rows, page.name)
    return ["## GPU time per stage", "", *split, ""] if split else []


def _machine_section(page: _Page) -> list[str]:
    """The machine column group: other load, clocks, memory, energy per row, and whether the rows were
    timed under different conditions."""
    rows = [r for r in page.rows if not _is_nan(r.get("rss_peak_mib")) or r.get("busy") is not None]
    if not rows:
        return []
    fields = [{k: r.get(k) for k in r.index} for r in rows]
    lines = ["## Machine state per row", ""]
    lines += [f"⚠ {c}" for c in timing_conditions(fields)]
    if lines[-1] != "":
        lines.append("")
    head = machine_head(fields)
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += [machine_line(page.name(r), m, _has_gpu(fields)) for r, m in zip(rows, fields)]
    return lines + ["", *machine_legend(fields), ""]


def timing_conditions(fields: list[dict]) -> list[str]:
    """Sentences saying where rows were timed under different conditions (busy vs quiet, CPU clocks
    more than 5% apart, other governors, throttling); [] when they agree."""
    out = []
    busy = [m for m in fields if m.get("busy")]
    if busy and len(busy) < len(fields):
        out.append(f"rows were timed under different conditions: {len(busy)} of {len(fields)} ran while other "
                   f"processes took more than {BUSY_SHARE:.0%} of the CPU (busy-machine), the others on a quieter "
                   "machine; compare their speed with care")
    elif busy:
        out.append(f"every row ran while other processes took more than {BUSY_SHARE:.0%} of the CPU (busy-machine): "
                   "the speeds are lower and noisier than on a quiet machine")
    medians = [m["cpu_mhz_median"] for m in fields if not _is_nan(m.get("cpu_mhz_median"))]
    if medians and max(medians) > 1.05 * min(medians):
        out.append(f"CPU clocks differ between rows: median {min(medians):.0f} to {max(medians):.0f} MHz over their "
                   "timing loops")
    governors = {m.get("governor") for m in fields if m.get("governor")}
    if len(governors) > 1:
        out.append(f"rows ran under different CPU governors: {', '.join(sorted(governors))}")
    throttled = [m for m in fields if m.get("throttle") or m.get("gpu_throttle_reasons", "").replace("GpuIdle", "").strip()]
    if throttled:
        out.append(f"{len(throttled)} row(s) saw thermal or power throttling while timed (throttle columns in the CSV)")
    return out


def _failed_section(page: _Page) -> list[str]:
    failed = page.comp.failed
    if not failed:
        return []
    lines = ["## Rows that did not run", "",
             f"✗ {len(failed)} row(s) could not run; their reasons, from the results files:", ""]
    for f in failed:
        where = f" @ {f['machine']}" if page.multi_machine else ""
        lines.append(f"- ✗ {f['target']} {f['precision']} bs {f['bs']}{where} ({Path(str(f['model'])).name}): {f['error']}")
    return lines + [""]


def _spread_section(page: _Page) -> list[str]:
    rows, comp = page.rows, page.comp
    lines = ["## Throughput spread", "",
             "Each results file holds one throughput figure per row. Where the same row (machine, model, target, "
             "precision, mode, bs) appears in several input files they are treated as repeats: the table shows mean "
             "± sample sd and the spread column gives sd/mean and the count. Otherwise the spread column shows the "
             "row's own 95% confidence half-width of the throughput (CI), over successive windows of its timing "
             "loop, which ran until that was under its target or it reached its time cap ((cap)). It says how well "
             "one run pinned its throughput down; run-to-run variation (thermal state, other load, clock boost) only "
             f"repeats measure. ⚠ marks a spread above {SPREAD_LARGE:.0%} or a loop that stopped at its cap.", ""]
    repeated = [r for r in rows if r["repeats"] > 1]
    if repeated:
        counts = sorted({int(r["repeats"]) for r in repeated})
        lines.append(f"Repeated rows: {len(repeated)} of {len(rows)} (n = {', '.join(map(str, counts))} runs each).")
    else:
        lines.append("No row was repeated: run the same configuration again into another folder and pass both to "
                     "get a run-to-run spread.")
    lines.append("")
    if comp.overlaps:
        lines.append(f"⚠ **{len(comp.overlaps)} pair(s) cannot be told apart**: their throughputs differ by less "
                     "than their spread (fps ± spread intervals overlap); treat them as equal until repeated runs "
                     "separate them:")
        limit = 20
        for pair in comp.overlaps[:limit]:
            a, b = pair["a"], pair["b"]
            lines.append(f"- {page.name(a)} ({_fps(a['fps'])} img/s, ±{a['spread'] * 100:.0f}%) vs {page.name(b)} "
                         f"({_fps(b['fps'])} img/s, ±{b['spread'] * 100:.0f}%)")
        if len(comp.overlaps) > limit:
            lines.append(f"- ... and {len(comp.overlaps) - limit} more")
    else:
        lines.append("No two rows at the same batch size and model have overlapping throughput ± spread.")
    return lines + [""]


def _per_class_section(page: _Page) -> list[str]:
    lines = ["## Per-class AP against the baseline", ""]
    if not page.comp.per_class:
        return lines + ["No per-class comparison (no baseline, or rows without per_class_ap).", ""]
    for entry in page.comp.per_class:
        r, base = entry["row"], entry["baseline"]
        lines.append(f"**{page.name(r)}** vs {page.name(base)}: {entry['losses']} of {entry['classes']} classes lose "
                     f"AP, mean Δ {_f(entry['mean_delta'], 4, True)}"
                     + ("; largest losses first:" if entry["worst"] else "; no class AP differs."))
        if entry["worst"]:
            lines += ["", "| class | baseline AP | AP | ΔAP |", "|---|---|---|---|"]
        for d in entry["worst"]:
            lines.append(f"| {md_text(d['class'])} | {_f(d['baseline_ap'], 4)} | {_f(d['ap'], 4)} | {_f(d['delta'], 4, True)} |")
        lines.append("")
    return lines


def _plots_section(plots) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", ""]
    for name, caption in plots:
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    return lines


def _notes_section(page: _Page) -> list[str]:
    noted = [(r, n) for r in page.rows for n in r["notes"]]
    if not noted:
        return []
    return ["## Notes from the runs", "", *[f"- {page.name(r)}: {n}" for r, n in noted], ""]


def _environment_section(page: _Page) -> list[str]:
    lines = ["## Environment", ""]
    if page.multi_machine:
        lines += [(f"Rows come from {len(page.comp.machines)} different machines (the machine column); compare their "
                   "speed only knowing the hardware below."), ""]
    for label, info in page.comp.machines.items():
        lines += [f"### Machine `{label}`", "", *_env_lines(info), ""]
    return lines


def comparison_markdown(comp, plots: list[tuple[str, str]] | None = None, baseline_asked: str | None = None) -> str:
    """The comparison page; same ComparisonPage + same plot names -> byte-identical text."""
    page = _Page(comp)
    sections = (_header(page, baseline_asked), _results_section(page), _machine_section(page), _gpu_split_section(page),
                _failed_section(page),
                _spread_section(page),
                _per_class_section(page), _plots_section(plots), _notes_section(page), _environment_section(page))
    return "\n".join(line for section in sections for line in section)


def _env_lines(info: dict) -> list[str]:
    def one(key):
        values = info.get(key) or []
        return ", ".join(values) if values else "-"

    lines = [f"- CPU: {one('cpu')} ({one('cores')} cores)", f"- GPU / driver: {one('gpu')}", f"- OS: {one('os')}",
             f"- Python: {one('python')}",
             f"- harness: {one('harness')} (git commit {one('git_commit')})"]
    if info.get("onednn_max_cpu_isa"):
        lines.append(f"- ONEDNN_MAX_CPU_ISA: {one('onednn_max_cpu_isa')}")
    if info.get("runtimes"):
        lines.append(f"- runtimes used: {'; '.join(info['runtimes'])}")
    packages = info.get("packages") or {}
    if packages:
        lines.append("- packages: " + ", ".join(f"{name} {'/'.join(v)}" for name, v in packages.items()))
    known = {"cpu", "cores", "gpu", "os", "python", "harness", "git_commit", "onednn_max_cpu_isa", "runtimes",
             "packages", "sources", "host"}
    for key in sorted(k for k in info if k not in known):
        lines.append(f"- {key}: {one(key)}")
    lines.append(f"- results files: {', '.join(f'`{s}`' for s in info['sources'])}")
    return lines
