"""`harness report`: one comparison page (or table export) from several results.json files."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from harness.cli.common import Count, console, out
from harness.core.errors import HarnessError
from harness.report import FORMATS, write_report


@click.command("report")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_path", default=None, type=click.Path(path_type=Path),
              help="Output file (default report.md / report.csv / report.json by --format).")
@click.option("--baseline", default=None, help="Target to compare against (default: ort fp32, else ov fp32).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="md: markdown page + PNG plots next to it; csv/json: the merged table only.")
@click.option("--top-classes", type=Count(minimum=0), default=10, show_default=True,
              help="Per-class AP losses listed per target.")
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
    if (reference is not None or fail_if is not None or ann_path is not None) and not fidelity:
        raise HarnessError("--reference, --fail-if and --ann belong to --fidelity; add --fidelity")
    if fail_if is not None:  # a bad gate fails before anything is read
        from harness.fidelity.gate import parse_gate

        parse_gate(fail_if)
    from harness.report.compare import load_sources

    ignored: list[str] = []
    sources = load_sources(list(inputs), ignored)  # every input read once, for the page and for --fidelity
    for note in ignored:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    checked = None
    if fidelity:
        from harness.fidelity.pairing import fidelity_report

        checked = fidelity_report(sources, reference, fail_if, ann_path)
    path = out_path or Path(f"report.{fmt}")
    written = write_report(list(inputs), path, fmt, baseline, top_classes, checked, loaded=(sources, ignored))
    out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if checked is not None and checked.gate_failed:
        failed = [r.row.label for r in checked.rows if r.gate_failures] + [r.label for r, _ in checked.not_compared]
        console.print(f"fidelity gate failed ({fail_if}): {', '.join(failed)}", highlight=False, soft_wrap=True)
        raise SystemExit(3)
