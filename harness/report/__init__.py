"""Reports: rows in, markdown / CSV / JSON / PNG out. Nothing here measures or recomputes a metric.

    compare.py   rows of several results.json files -> one comparison table (pandas)
    markdown.py  the per-run report.md and the comparison page
    plots.py     the comparison page's PNG plots
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from harness.core.errors import HarnessError

FORMATS = ("md", "csv", "json")


def write_report(inputs, out: Path, fmt: str = "md", baseline: str | None = None, top_classes: int = 10,
                 fidelity=None, loaded=None) -> list[Path]:
    """Build the comparison and write it; returns the files written.

    md: the markdown page at `out` plus two PNG plots next to it (<stem>-throughput.png,
    <stem>-map-vs-throughput.png). csv / json: the merged table (full-precision values) at `out`.
    fidelity (a harness.fidelity.pairing.FidelityReport): its section is added to the page, its
    figures to the table's records. loaded: (sources, notes) already read by report.compare.load_sources.
    """
    from harness.core.fileio import atomic_write_text
    from harness.report.compare import compare, export_frame

    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    comp = compare(inputs, baseline=baseline, top_classes=top_classes, loaded=loaded)
    out = Path(out)
    if out.is_dir():
        raise HarnessError(f"--out {out} is a folder; give a file path such as {out / ('report.' + fmt)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    from harness.core.folders import safe_target

    safe_target(out.parent, out.name, "report folder")  # never written through a symlink
    written = []
    try:
        if fmt == "md":
            from harness.report.markdown import comparison_markdown
            from harness.report.plots import write_plots

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


def write_run_report(rows, env: dict, out_dir: Path) -> None:
    """report.md of one results folder (a ResultsStore's on_save hook)."""
    from harness.core.fileio import atomic_write_text
    from harness.core.folders import safe_target
    from harness.measure.results import REPORT_FILE
    from harness.report.markdown import run_report_markdown

    atomic_write_text(safe_target(out_dir, REPORT_FILE), run_report_markdown(rows, env))


def _plain(value):
    """numpy scalars from pandas -> plain Python for json."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
