"""Vendor output folder -> the common decoder -> the common evaluator -> a results row like `harness run`'s.

Only the reading differs per tool (its FileTool); decoding, COCO evaluation and the row are the ones
in-process targets use, so the table compares devices and nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.data.coco import check_categories
from harness.decode import decode
from harness.decode.types import to_coco_results
from harness.errors import HarnessError
from harness.evaluate import CocoEvaluator, load_annotations
from harness.npu import FILE_TOOLS
from harness.npu.prep import Prep, load_prep, output_specs
from harness.progress import NullProgress
from harness.row import ResultRow, metric_fields


def _check_against_annotations(prep: Prep, ann: dict, ann_path: Path) -> None:
    known = {int(img["id"]) for img in ann["images"]}
    for _, meta in prep.images:
        if meta.image_id not in known:
            raise HarnessError(f"image {Path(meta.file).name} (id {meta.image_id}) in {prep.folder / 'prep.json'} "
                               f"is not in {ann_path}: decode with the annotations used at preprocess")
    check_categories(ann, prep.profile.category_ids, prep.profile.name, ann_path)


def evaluate_outputs(items, prep: Prep, evaluator: CocoEvaluator, progress=None) -> tuple[dict, int, list[int], float]:
    """Decode each image's outputs and evaluate; (metrics, detections, image ids, decode seconds)."""
    progress = progress or NullProgress()
    detections, counted, seconds = [], [], 0.0
    with progress.task(f"decode {len(prep.images)} images", len(prep.images)) as advance:
        for meta, outputs in items:
            t0 = time.perf_counter()
            try:
                (dets,) = decode(outputs, [meta], prep.profile)
            except HarnessError as exc:
                raise HarnessError(f"image {Path(meta.file).name} (id {meta.image_id}): {exc}") from None
            detections += to_coco_results(dets, meta.image_id, prep.profile.category_ids)
            seconds += time.perf_counter() - t0
            counted.append(meta.image_id)
            advance(1)
    return evaluator.evaluate(detections, counted), len(detections), counted, seconds


def decode_run(tool_name: str, outputs_path: str | Path, prep_dir: str | Path, ann_path: str | Path,
               model: str | Path | None = None, bs: int | None = None, precision: str | None = None,
               evaluator: str = "auto", progress=None) -> ResultRow:
    """One results row for a vendor output folder (tool_name: a FILE_TOOLS name, e.g. 'ais' or 'vamp')."""
    tool = FILE_TOOLS.get(tool_name)
    prep = load_prep(prep_dir)
    if prep.fmt != tool.input_format:
        raise HarnessError(f"{prep.folder} was prepared as {prep.fmt}, but {tool.decode_flag} outputs need "
                           f"`preprocess --format {tool.input_format}`")
    ann_path = Path(ann_path)
    ann = load_annotations(ann_path)
    _check_against_annotations(prep, ann, ann_path)
    specs = output_specs(prep, model)
    scorer = CocoEvaluator(ann, evaluator)
    folder = tool.locate_outputs(outputs_path)
    timing = tool.read_timing(folder)
    items = tool.read_outputs(folder, prep, specs)
    metrics, n_dets, counted, seconds = evaluate_outputs(items, prep, scorer, progress)

    notes: list[str] = []
    row_bs = bs or 1
    if timing.batchsize is not None:
        if bs is not None and bs != timing.batchsize:
            notes.append(f"--bs {bs} ignored: the {tool.program} summary records batchsize {timing.batchsize}")
        row_bs = timing.batchsize
    model_name = timing.device_model or (str(model) if model else None) or prep.model or "unknown"
    if timing.note:
        notes.append(timing.note)
    if timing.emulated_by:
        notes.append(f"outputs{' and times' if timing.fps is not None else ''} from `harness emulate` "
                     f"({timing.emulated_by})")
    if specs is None:
        notes.append("output shapes/dtypes taken from the .npy/.npz files (no --model, none recorded at preprocess)")
    skipped = list(prep.sidecar.skipped)
    if skipped:
        notes.append(f"{len(skipped)} image(s) skipped at preprocess; mAP is over the remaining {len(counted)}")
    for warning in (prep.sidecar.device_preprocess or {}).get("warnings", []):
        notes.append(f"device preprocessing: {warning}")
    return ResultRow(
        target=tool.device, bs=row_bs, model=model_name, profile=prep.profile.name,
        precision=precision or "unspecified", source="emulated" if timing.emulated_by else "device",
        images=len(counted), fps=timing.fps, latency_ms_p50=timing.latency_ms_p50,
        latency_ms_p90=timing.latency_ms_p90, latency_ms_p99=timing.latency_ms_p99,
        stage_ms={"preprocess": None, "infer": None, "decode": round(seconds * 1e3 / max(len(counted), 1), 3)},
        bench=None if timing.fps is None else {"iterations": timing.iterations, "source": str(timing.source)},
        time_covers=timing.time_covers, batch_mode=f"file-based ({tool.program})",
        runtime={"tool": tool.program, "outputs": str(folder), "prep": str(prep.folder),
                 "summary": str(timing.source) if timing.fps is not None else None},
        dataset=prep.sidecar.dataset, annotations=str(ann_path), evaluator=scorer.backend, detections=n_dets,
        skipped_images=skipped, notes=notes, **metric_fields(metrics),
    )
