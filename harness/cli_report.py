"""`harness report`: one comparison page (or table export) from several results.json files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from harness.errors import HarnessError

FORMATS = ("md", "csv", "json")


def write_report(inputs, out: Path, fmt: str = "md", baseline: str | None = None, top_classes: int = 10,
                 fidelity=None) -> list[Path]:
    """Build the comparison and write it; returns the files written.

    md: the markdown page at `out` plus two PNG plots next to it (<stem>-throughput.png,
    <stem>-map-vs-throughput.png). csv / json: the merged table (full-precision values) at `out`.
    fidelity (a harness.fidelity.pairing.FidelityReport): its section is added to the page, its
    figures to the table's records.
    """
    from harness.compare import compare, export_frame
    from harness.results import atomic_write_text

    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    comp = compare(inputs, baseline=baseline, top_classes=top_classes)
    out = Path(out)
    if out.is_dir():
        raise HarnessError(f"--out {out} is a folder; give a file path such as {out / ('report.' + fmt)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    written = []
    try:
        if fmt == "md":
            from harness.plots import write_plots
            from harness.report import comparison_markdown

            plots = write_plots(comp.table, out)
            written += [out.parent / name for name, _ in plots]
            text = comparison_markdown(comp, plots, baseline)
            if fidelity is not None:
                from harness.fidelity.markdown import fidelity_markdown

                text = text.rstrip("\n") + "\n\n" + fidelity_markdown(fidelity, top_classes)
            atomic_write_text(out, text)
        elif fmt == "csv":
            frame = export_frame(comp)
            if fidelity is not None:
                import pandas as pd

                from harness.fidelity.markdown import annotate_records

                frame = pd.DataFrame(annotate_records(frame.to_dict(orient="records"), fidelity, nested=False))
            atomic_write_text(out, frame.to_csv(index=False, lineterminator="\n"))
        else:
            records = export_frame(comp).to_dict(orient="records")
            if fidelity is not None:
                from harness.fidelity.markdown import annotate_records

                records = annotate_records(records, fidelity, nested=True)
            clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
                     for rec in records]
            atomic_write_text(out, json.dumps(clean, indent=2, ensure_ascii=False, default=_plain) + "\n")
    except OSError as exc:
        raise HarnessError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return [out, *written]


def _plain(value):
    """numpy scalars from pandas -> plain Python for json."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@click.command("report")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_path", default=None, type=click.Path(path_type=Path),
              help="Output file (default report.md / report.csv / report.json by --format).")
@click.option("--baseline", default=None, help="Target to compare against (default: ort fp32, else ov fp32).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="md: markdown page + PNG plots next to it; csv/json: the merged table only.")
@click.option("--top-classes", default=10, show_default=True, help="Per-class AP losses listed per target.")
@click.option("--fidelity", is_flag=True,
              help="Compare each row with its reference row from saved detections/outputs (run --save-detections).")
@click.option("--reference", default=None, metavar="TARGET[:PRECISION][@MODEL]",
              help="Reference rows for --fidelity (default ort:fp32, else ov:fp32); @MODEL picks one model file.")
@click.option("--fail-if", "fail_if", default=None, metavar="EXPR",
              help='With --fidelity: exit 3 when EXPR holds for a row, e.g. "dmap<-0.01 or agreement<0.95".')
@click.option("--ann", "ann_path", default=None, type=click.Path(path_type=Path),
              help="With --fidelity: the annotation file, when the one the rows recorded has moved.")
def report_cmd(inputs, out_path, baseline, fmt, top_classes, fidelity, reference, fail_if, ann_path):
    """Compare results across runs: INPUTS are folders holding results.json, or results.json files."""
    from harness.cli import console, out

    if (reference or fail_if or ann_path) and not fidelity:
        raise HarnessError("--reference, --fail-if and --ann belong to --fidelity; add --fidelity")
    checked = None
    if fidelity:
        from harness.fidelity.pairing import fidelity_report

        checked = fidelity_report(list(inputs), reference, fail_if, ann_path)
    path = out_path or Path(f"report.{fmt}")
    written = write_report(list(inputs), path, fmt, baseline, top_classes, checked)
    out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if checked is not None and checked.gate_failed:
        failed = [r.row.label for r in checked.rows if r.gate_failures] + [r.label for r, _ in checked.not_compared]
        console.print(f"fidelity gate failed ({fail_if}): {', '.join(failed)}", highlight=False, soft_wrap=True)
        raise SystemExit(3)
