"""The fidelity section of report.md, and the same results as plain data for the JSON/CSV exports.
Formats numbers; computes nothing."""

from __future__ import annotations

import math

from harness.fidelity.pairing import FidelityReport, RowFidelity, RowRef


def _num(value, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(pair) -> str:
    lo, hi = pair
    return f"[{_num(lo, 4, True)}, {_num(hi, 4, True)}]"


def _sig(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}"


def fidelity_markdown(report: FidelityReport, top_classes: int = 10) -> str:
    ref_name = str(report.reference)
    lines = [f"## Fidelity against {ref_name}", ""]
    if report.rows:
        boot = report.rows[0].bootstrap
        lines += [
            f"Each row against the {ref_name} row of the same profile (same annotations, model and batch size "
            f"where there is one), on the images both ran. ΔmAP = row − reference; the interval is a paired "
            f"bootstrap over images ({boot.resamples} resamples, seed {boot.seed}, {boot.level:.0%}): when it "
            "holds 0 the two rows **cannot be told apart** on these images.", "",
            "| row | reference | images | mAP | ΔmAP | 95% interval | verdict | agreement | missed | extra | flips "
            "| mean IoU | mean abs Δscore | min SQNR dB | gate |",
            "|" + "---|" * 15]
        for r in report.rows:
            b, a = r.bootstrap, r.agreement
            sqnr = _num(min(e.sqnr_db for e in r.tensors), 1) if r.tensors else "-"
            gate = "-" if not report.gate else ("FAIL" if r.gate_failures else "pass")
            lines.append(
                f"| {r.row.label} | {r.reference.label} | {r.images} | {_num(b.candidate['map'])} | "
                f"{_num(b.delta['map'], 4, True)} | {_interval(b.interval['map'])} | {b.verdict} | "
                f"{_num(a.matched_fraction, 3)} | {a.missed} | {a.extra} | {a.flips} | {_num(a.mean_iou, 3)} | "
                f"{_num(a.mean_abs_dscore, 4)} | {sqnr} | {gate} |")
        lines.append("")
    if report.not_compared:
        lines += ["Not compared:"] + [f"- {row.where}: {why}" for row, why in report.not_compared] + [""]
    if report.gate:
        verdict = "**FAILED**" if report.gate_failed else "passed"
        lines += [f"Gate `--fail-if \"{report.gate}\"`: {verdict}."]
        lines += [f"- {r.row.label}: {'; '.join(r.gate_failures)}" for r in report.rows if r.gate_failures]
        lines += [f"- {row.label}: not compared ({why})" for row, why in report.not_compared]
        lines.append("")
    lines += _legend(report)
    for r in report.rows:
        lines += _row_detail(r, top_classes)
    return "\n".join(lines)


def _legend(report: FidelityReport) -> list[str]:
    if not report.rows:
        return []
    a = report.rows[0].agreement
    return [
        "How to read it:",
        (f"- **agreement**: per image, detections with score ≥ {a.score_threshold:g} of both rows are paired "
         f"(same class, IoU ≥ {a.iou_threshold:g}, highest IoU first); agreement = paired ÷ the reference's "
         "confident detections. **missed**: reference detections left unpaired; **extra**: row detections left "
         "unpaired; **flips**: an extra and a missed detection of different classes at IoU ≥ "
         f"{a.iou_threshold:g} (counted in both). Mean IoU and mean abs Δscore are over the pairs."),
        ("- **SQNR** = 10·log10(Σ ref² ÷ Σ (ref − row)²) per output over the saved images (∞: identical); "
         "cosine similarity, max and 99th-percentile abs error alongside."),
        "",
    ]


def _row_detail(r: RowFidelity, top: int) -> list[str]:
    b, d = r.bootstrap, r.delta_ap
    lines = [f"### {r.row.label} vs {r.reference.label}", "",
             f"- files: `{r.row.results}` vs `{r.reference.results}`; {r.images} images; evaluator {d.evaluator}",
             (f"- mAP {_num(b.candidate['map'])} vs {_num(b.reference['map'])}: ΔmAP {_num(b.delta['map'], 4, True)} "
              f"{_interval(b.interval['map'])} ({b.verdict}); ΔAP50 {_num(b.delta['map50'], 4, True)} "
              f"{_interval(b.interval['map50'])}; ΔAP75 {_num(b.delta['map75'], 4, True)} {_interval(b.interval['map75'])}"),
             ""]
    if d.per_size:
        lines += ["| object size | reference AP | AP | ΔAP |", "|---|---|---|---|"]
        lines += [f"| {s} | {_num(v.reference)} | {_num(v.candidate)} | {_num(v.delta, 4, True)} |"
                  for s, v in d.per_size.items()]
        lines.append("")
    losses = [c for c in d.per_class if c.delta != 0][:top]
    lines.append(f"Per class: {sum(c.delta < 0 for c in d.per_class)} of {len(d.per_class)} classes lose AP"
                 + ("; largest changes, losses first:" if losses else "; no class AP differs."))
    lines.append("")
    if losses:
        lines += ["| class | reference AP | AP | ΔAP |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {_num(c.reference)} | {_num(c.candidate)} | {_num(c.delta, 4, True)} |" for c in losses]
        lines.append("")
    if r.tensors is not None:
        lines += [f"Tensor error per output ({r.tensor_images} saved images):", "",
                  "| output | elements | SQNR dB | cosine | max abs | p99 abs |", "|---|---|---|---|---|---|"]
        for e in r.tensors:
            bad = f" ({e.nonfinite} non-finite)" if e.nonfinite else ""
            lines.append(f"| {e.index}: {e.name}{bad} | {e.elements} | {_num(e.sqnr_db, 1)} | {_num(e.cosine, 6)} | "
                         f"{_sig(e.max_abs)} | {_sig(e.p99_abs)} |")
        lines.append("")
    else:
        lines += [f"Tensor error: not computed, {r.tensor_note}.", ""]
    worst = r.agreement.worst
    if worst:
        lines += [f"Images that disagree most ({len(worst)}):", "",
                  "| image | reference | row | paired | missed | extra | flips |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {w.file_name} | {w.reference} | {w.candidate} | {w.matched} | {w.missed} | {w.extra} | {w.flips} |"
                  for w in worst]
        lines.append("")
    else:
        lines += ["Every confident detection is paired on every image.", ""]
    return lines


# ------------------------------------------------------------------------------------------ plain data

def _plain_float(value):
    """JSON has no NaN/inf: NaN -> None, ±inf -> "inf"/"-inf" (SQNR of identical outputs)."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _row_id(ref: RowRef) -> dict:
    r = ref.row
    return {"target": r.target, "precision": r.precision or "fp32", "bs": r.bs, "model": r.model,
            "profile": r.profile, "results": str(ref.results)}


def row_plain(r: RowFidelity) -> dict:
    b, a, d = r.bootstrap, r.agreement, r.delta_ap
    f = _plain_float
    return {
        "row": _row_id(r.row), "reference": _row_id(r.reference), "images": r.images,
        "bootstrap": {"resamples": b.resamples, "seed": b.seed, "level": b.level,
                      "reference": {k: f(v) for k, v in b.reference.items()},
                      "candidate": {k: f(v) for k, v in b.candidate.items()},
                      "delta": {k: f(v) for k, v in b.delta.items()},
                      "interval": {k: [f(lo), f(hi)] for k, (lo, hi) in b.interval.items()},
                      "verdict": b.verdict},
        "agreement": {"score_threshold": a.score_threshold, "iou_threshold": a.iou_threshold,
                      "reference": a.reference, "candidate": a.candidate, "matched": a.matched, "missed": a.missed,
                      "extra": a.extra, "flips": a.flips, "matched_fraction": f(a.matched_fraction),
                      "mean_iou": f(a.mean_iou), "mean_abs_dscore": f(a.mean_abs_dscore),
                      "worst_images": [{"file_name": w.file_name, "image_id": w.image_id, "reference": w.reference,
                                        "candidate": w.candidate, "matched": w.matched, "missed": w.missed,
                                        "extra": w.extra, "flips": w.flips} for w in a.worst]},
        "delta_ap": {"evaluator": d.evaluator,
                     "per_class": [{"class": c.name, "reference": f(c.reference), "candidate": f(c.candidate),
                                    "delta": f(c.delta)} for c in d.per_class],
                     "per_size": {s: {"reference": f(v.reference), "candidate": f(v.candidate), "delta": f(v.delta)}
                                  for s, v in d.per_size.items()}},
        "tensors": None if r.tensors is None else {
            "images": r.tensor_images,
            "outputs": [{"index": e.index, "name": e.name, "elements": e.elements, "sqnr_db": f(e.sqnr_db),
                         "cosine": f(e.cosine), "max_abs": f(e.max_abs), "p99_abs": f(e.p99_abs),
                         "nonfinite": e.nonfinite} for e in r.tensors]},
        "tensor_note": r.tensor_note,
        "figures": {k: f(v) for k, v in r.figures().items()},
        "gate_failures": list(r.gate_failures),
    }


FLAT_FIGURES = ("dmap", "dmap_lo", "dmap_hi", "agreement", "missed", "extra", "flips", "mean_iou", "dscore", "sqnr",
                "cosine")


def flat_columns(r: RowFidelity, gated: bool) -> dict:
    """A few headline figures as flat `fidelity_*` columns for the CSV/JSON table exports."""
    figures = r.figures()
    out = {"fidelity_reference": r.reference.label, "fidelity_verdict": r.bootstrap.verdict}
    out |= {f"fidelity_{k}": _plain_float(figures.get(k)) for k in FLAT_FIGURES}
    out["fidelity_gate"] = ("fail" if r.gate_failures else "pass") if gated else None
    return out


def _same_row(record: dict, ref: RowRef) -> bool:
    """Is this export record (harness.report.compare's table) the row, from the row's own file?"""
    r = ref.row
    return (str(record.get("target")) == str(r.target) and str(record.get("precision")) == str(r.precision or "fp32")
            and int(record.get("bs")) == int(r.bs) and str(record.get("model")) == str(r.model or "-")
            and str(ref.results) in str(record.get("sources") or "").split("; "))


def annotate_records(records: list[dict], report: FidelityReport, nested: bool) -> list[dict]:
    """Export records (one per table row) with fidelity_* columns added where the row was compared
    (a record merging repeats takes its first compared source row); nested adds the full plain data."""
    out = []
    for record in records:
        record = dict(record)
        match = next((r for r in report.rows if _same_row(record, r.row)), None)
        skipped = next((why for row, why in report.not_compared if _same_row(record, row)), None)
        if match is not None:
            record |= flat_columns(match, bool(report.gate))
            if nested:
                record["fidelity"] = row_plain(match)
        elif skipped is not None:
            record["fidelity_verdict"] = f"not compared: {skipped}"
        out.append(record)
    return out
