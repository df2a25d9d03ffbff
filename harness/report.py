"""Markdown for one run's folder: rows in, text out; never recomputes metrics."""

from __future__ import annotations

COLUMNS = [
    ("target", "target"), ("precision", "precision"), ("bs", "bs"), ("images", "images"),
    ("map", "mAP"), ("map50", "AP50"), ("map75", "AP75"), ("fps", "infer img/s"),
    ("latency_ms_p50", "p50 ms"), ("latency_ms_p90", "p90 ms"), ("latency_ms_p99", "p99 ms"),
    ("e2e_fps", "e2e img/s"),
]


def fmt(value, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key.startswith("map"):
            return f"{value:.4f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def markdown_table(rows: list[dict], columns=COLUMNS) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(row.get(key), key) for key, _ in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def run_report_markdown(rows: list[dict], env: dict) -> str:
    lines = ["# Benchmark results", ""]
    if rows:
        first = rows[0]
        lines += [f"- model: `{first.get('model')}`  profile: `{first.get('profile')}`",
                  f"- dataset: `{first.get('dataset')}` ({first.get('images')} images), evaluator: {first.get('evaluator')}", ""]
    lines += [markdown_table(rows), ""]
    lines += [
        "What each figure covers:",
        "- **mAP / AP50 / AP75**: COCO bbox AP@[.5:.95], @.5, @.75 (0..1) over the images counted in `images`.",
        "- **infer img/s, p50/p90/p99 ms**: steady-state loop on one preprocessed batch, after warm-up; "
        "pure inference (see `time_covers` per row), latency per batch call.",
        "- **e2e img/s**: the full accuracy pass, wall clock from the first image read to the last batch decoded "
        "(read + preprocess + infer + decode; evaluation excluded).",
        "",
    ]
    notes = [(r, n) for r in rows for n in r.get("notes", [])]
    if notes:
        lines += ["Notes:"] + [f"- {r['target']} bs={r['bs']}: {n}" for r, n in notes] + [""]
    lines += ["Per-stage time over the full pass (ms per image, summed over stages that may overlap):", ""]
    lines += [_stage_table(rows), ""]
    if env:
        lines += ["Environment:", ""]
        lines += [f"- {k}: {v}" for k, v in env.items() if k != "packages"]
        pkgs = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
        if pkgs:
            lines.append(f"- packages: {pkgs}")
        lines.append("")
    return "\n".join(lines)


def _stage_table(rows: list[dict]) -> str:
    flat = [{"target": r.get("target"), "bs": r.get("bs"), **{k: v for k, v in (r.get("stage_ms") or {}).items()}}
            for r in rows]
    return markdown_table(flat, [("target", "target"), ("bs", "bs"), ("preprocess", "preprocess"),
                                 ("infer", "infer"), ("decode", "decode")])
