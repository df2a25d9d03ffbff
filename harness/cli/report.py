"""`harness report`: one comparison page (or table export) from several results.json files."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.common import Count, out
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
def report_cmd(inputs, out_path, baseline, fmt, top_classes):
    """Compare results across runs: INPUTS are folders holding results.json, or results.json files."""
    path = out_path or Path(f"report.{fmt}")
    written = write_report(list(inputs), path, fmt, baseline, top_classes)
    out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
