"""One function builds every measured row: (what was measured, how it was timed, its accuracy pass) -> ResultRow.

`harness run` (an in-process target), `harness decode` (a device's or an emulator's files) and any later
source call build_row, so their rows have the same fields, the same flags and the same saved artefacts
(--save-detections, --save-outputs N), and `report --fidelity` can judge every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import first_line
from harness.measure.pipeline import PassResult
from harness.measure.row import ResultRow, metric_fields


@dataclass
class Saving:
    """What a row writes next to its results.json (harness.measure.artifacts)."""

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


@dataclass
class Evaluation:
    """One accuracy pass scored: its metrics, or the exception that stopped the evaluation."""

    backend: str  # the evaluator's backend (faster-coco-eval or pycocotools)
    metrics: dict | None = None
    failure: Exception | None = None


def evaluate_pass(evaluator, passed: PassResult) -> Evaluation:
    """Score a pass; a failure is kept, not raised (the row keeps its timing as `partial`). Called inside
    the row's machine watch (harness.machine.watch.RowWatch): the evaluation is part of the row's memory peak."""
    try:
        return Evaluation(evaluator.backend, evaluator.evaluate(passed.detections, passed.counted))
    except Exception as exc:  # a late failure never loses the finished timing
        return Evaluation(evaluator.backend, failure=exc)


def build_row(context: RowContext, timing: dict, passed: PassResult, evaluation: Evaluation,
              saving: Saving | None = None, unmeasured_stages: tuple[str, ...] = ()) -> ResultRow:
    """The row of one accuracy pass. timing: the row's timing fields (fps, latency percentiles, mode, bench,
    time_covers, target_figures, machine_state, ...). A failed evaluation keeps the timing as a `partial` row."""
    stage_ms = passed.clock.per_image_ms(len(passed.counted))
    stage_ms.update(dict.fromkeys(unmeasured_stages))
    common = dict(**context.fields, **timing, images=len(passed.counted), stage_ms=stage_ms,
                  evaluator=evaluation.backend, detections=len(passed.detections),
                  skipped_images=list(context.skipped), flags=sorted(context.flags), notes=list(context.notes))
    if evaluation.failure is not None:
        return ResultRow(status="partial", error=f"evaluation failed: {first_line(evaluation.failure)}", **common)
    row = ResultRow(**common, **metric_fields(evaluation.metrics))
    saving = saving or Saving()
    if saving.detections or saving.outputs is not None:
        from harness.measure.artifacts import save_row_artifacts

        row.artifacts = save_row_artifacts(saving.out_dir, row, passed.detections if saving.detections else None,
                                           passed.names, saving.outputs)
    return row
