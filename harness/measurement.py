"""One function builds every measured row: (what was measured, how it was timed, its accuracy pass) -> ResultRow.

`harness run` (an in-process target), `harness decode` (a device's or an emulator's files) and any later
source call build_row, so their rows have the same fields, the same flags and the same saved artefacts
(--save-detections, --save-outputs N), and `report --fidelity` can judge every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import first_line
from harness.pipeline import PassResult
from harness.row import ResultRow, metric_fields


@dataclass
class Saving:
    """What a row writes next to its results.json (harness.fidelity.artifacts)."""

    out_dir: Path | None = None
    detections: bool = False  # --save-detections
    outputs: object = None  # SavedOutputs of the first N images (--save-outputs N), or None


@dataclass
class RowContext:
    """What a row says besides its timing and accuracy: who measured what, on what (ResultRow fields), its notes,
    flags and the images left out."""

    fields: dict  # target, bs, model, profile, precision, source, device, runtime, batch_mode, dataset, ...
    notes: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    skipped: list = field(default_factory=list)  # SkippedImage of every image left out of the mAP


def build_row(context: RowContext, timing: dict, passed: PassResult, evaluator, saving: Saving | None = None,
              unmeasured_stages: tuple[str, ...] = ()) -> ResultRow:
    """The row of one accuracy pass. timing: the row's timing fields (fps, latency percentiles, mode, bench,
    time_covers, target_figures, ...). A failing evaluation keeps the timing as a `partial` row."""
    stage_ms = passed.clock.per_image_ms(len(passed.counted))
    stage_ms.update(dict.fromkeys(unmeasured_stages))
    common = dict(**context.fields, **timing, images=len(passed.counted), stage_ms=stage_ms,
                  evaluator=evaluator.backend, detections=len(passed.detections),
                  skipped_images=list(context.skipped), flags=sorted(context.flags), notes=list(context.notes))
    try:
        metrics = evaluator.evaluate(passed.detections, passed.counted)
    except Exception as exc:  # a late failure never loses the finished timing
        return ResultRow(status="partial", error=f"evaluation failed: {first_line(exc)}", **common)
    row = ResultRow(**common, **metric_fields(metrics))
    saving = saving or Saving()
    if saving.detections or saving.outputs is not None:
        from harness.fidelity.artifacts import save_row_artifacts

        row.artifacts = save_row_artifacts(saving.out_dir, row, passed.detections if saving.detections else None,
                                           passed.names, saving.outputs)
    return row
