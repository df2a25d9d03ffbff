"""Vendor output folder -> the common decoder -> the common evaluator -> a results row like `harness run`'s.

Only the reading differs per tool (ais.py / vamp.py); decoding, COCO evaluation and the row are the
ones in-process targets use, so the table compares devices and nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.decode import decode
from harness.decode.types import to_coco_results
from harness.errors import HarnessError
from harness.evaluate import CocoEvaluator, load_annotations
from harness.npu import ais, vamp
from harness.npu.prepare import Prep, load_prep, output_specs

TOOLS = {"ais": ("ascend", "ais_bench"), "vamp": ("vacc", "vamp")}


def _check_against_annotations(prep: Prep, ann: dict, ann_path: Path) -> None:
    from harness.runner import _check_categories

    known = {int(img["id"]) for img in ann["images"]}
    for stem, meta in prep.images:
        if meta.image_id not in known:
            raise HarnessError(f"image {Path(meta.file).name} (id {meta.image_id}) in {prep.folder / 'prep.json'} "
                               f"is not in {ann_path}: decode with the annotations used at preprocess")
    _check_categories(ann, prep.profile, ann_path)


def evaluate_outputs(items, prep: Prep, evaluator: CocoEvaluator, progress=None) -> tuple[dict, int, list[int], float]:
    """Decode each image's outputs and evaluate; (metrics, detections, image ids, decode seconds)."""
    from harness.runner import NullProgress

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


def decode_run(tool: str, outputs_path: str | Path, prep_dir: str | Path, ann_path: str | Path,
               model: str | Path | None = None, bs: int | None = None, precision: str | None = None,
               evaluator: str = "auto", progress=None) -> dict:
    """One results row for a vendor output folder (tool = 'ais' or 'vamp')."""
    if tool not in TOOLS:
        raise HarnessError(f"unknown tool {tool!r}: expected ais or vamp")
    target, tool_name = TOOLS[tool]
    prep = load_prep(prep_dir)
    expected_fmt = "bin" if tool == "ais" else "npz"
    if prep.fmt != expected_fmt:
        raise HarnessError(f"{prep.folder} was prepared as {prep.fmt}, but --{'bin' if tool == 'ais' else 'npz'} "
                           f"outputs need `preprocess --format {expected_fmt}`")
    ann_path = Path(ann_path)
    ann = load_annotations(ann_path)
    _check_against_annotations(prep, ann, ann_path)
    specs = output_specs(prep, model)
    scorer = CocoEvaluator(ann, evaluator)
    notes: list[str] = []
    timing = None
    if tool == "ais":
        folder = ais.resolve_output_dir(outputs_path)
        summary = ais.find_summary(folder)
        timing = ais.parse_summary(summary) if summary else None
        items = ais.read_outputs(folder, prep, specs)
    else:
        folder = Path(outputs_path)
        items = vamp.read_outputs(folder, prep, specs)
    metrics, n_dets, counted, seconds = evaluate_outputs(items, prep, scorer, progress)

    row_bs = bs or 1
    if timing is not None and timing.batchsize is not None:
        if bs is not None and bs != timing.batchsize:
            notes.append(f"--bs {bs} ignored: the ais summary records batchsize {timing.batchsize}")
        row_bs = timing.batchsize
    device_model = ais.model_from_args(timing.raw.get("args")) if timing else None
    model_name = device_model or (str(model) if model else None) or prep.model or "unknown"
    if timing is not None:
        fps, p50, p90, p99 = round(timing.throughput, 2), timing.median_ms, timing.p90_ms, timing.p99_ms
        time_covers = ais.TIME_COVERS
        notes.append(f"fps = ais throughput (1000 x batchsize / mean NPU compute ms) from {timing.path.name}; "
                     "latency per batch call" + ("" if p90 is not None else "; p90 not reported (no npu_compute_time_list)"))
        if timing.raw.get("emulated_by"):
            notes.append(f"outputs and times from `harness emulate` ({timing.raw['emulated_by']})")
    else:
        fps = p50 = p90 = p99 = None
        if tool == "ais":
            time_covers = "not measured (no ais summary json found)"
            notes.append(f"no ais summary json beside or inside {folder}: device throughput and latency not recorded")
        else:
            time_covers = vamp.TIME_COVERS
            notes.append("vamp writes no timing file: throughput and latency not recorded (decode only)")
    if specs is None:
        notes.append("output shapes/dtypes taken from the .npy/.npz files (no --model, none recorded at preprocess)")
    if prep.data.get("skipped"):
        notes.append(f"{len(prep.data['skipped'])} image(s) skipped at preprocess; mAP is over the remaining {len(counted)}")
    for warning in (prep.data.get("device_preprocess") or {}).get("warnings", []):
        notes.append(f"device preprocessing: {warning}")
    return {
        "target": target,
        "model": model_name,
        "profile": prep.profile.name,
        "precision": precision or "unspecified",
        "bs": row_bs,
        "images": len(counted),
        **{k: round(v, 5) for k, v in metrics.items() if k != "per_class_ap"},
        "fps": fps,
        "e2e_fps": None,
        "latency_ms_p50": None if p50 is None else round(p50, 3),
        "latency_ms_p90": p90,
        "latency_ms_p99": None if p99 is None else round(p99, 3),
        "stage_ms": {"preprocess": None, "infer": None,
                     "decode": round(seconds * 1e3 / max(len(counted), 1), 3)},
        "bench": None if timing is None else {"iterations": timing.count, "source": str(timing.path)},
        "time_covers": time_covers,
        "batch_mode": f"file-based ({tool_name})",
        "runtime": {"tool": tool_name, "outputs": str(folder), "prep": str(prep.folder),
                    "summary": str(timing.path) if timing else None},
        "dataset": prep.data.get("dataset") or "",
        "annotations": str(ann_path),
        "evaluator": scorer.backend,
        "detections": n_dets,
        "skipped_images": list(prep.data.get("skipped") or []),
        "per_class_ap": {k: round(v, 5) for k, v in metrics.get("per_class_ap", {}).items()},
        "notes": notes,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
