"""Vendor output folder -> the common decoder -> the common evaluator -> a results row like `harness run`'s.

Only the reading differs per tool (its FileTool); decoding, COCO evaluation and the row are the ones
in-process targets use, so the table compares devices and nothing else.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from harness.data.coco import check_categories
from harness.decode import decode
from harness.decode.finite import describe, find_nonfinite
from harness.decode.types import to_coco_array
from harness.errors import HarnessError, SkippedImage
from harness.evaluate import CocoEvaluator, load_annotations
from harness.machine import npusmi
from harness.machine.watch import RowWatch
from harness.npu import FILE_TOOLS
from harness.npu.datalist import order_by_datalist, prep_from_images
from harness.npu.prep import Prep, check_prep_datalist, load_prep, output_specs
from harness.progress import NullProgress
from harness.row import ResultRow, metric_fields


def _check_against_annotations(prep: Prep, ann: dict, ann_path: Path) -> None:
    known = {int(img["id"]) for img in ann["images"]}
    for _, meta in prep.images:
        if meta.image_id not in known:
            raise HarnessError(f"image {Path(meta.file).name} (id {meta.image_id}) in {prep.folder / 'prep.json'} "
                               f"is not in {ann_path}: decode with the annotations used at preprocess")
    check_categories(ann, prep.profile.category_ids, prep.profile.name, ann_path)


def evaluate_outputs(items, prep: Prep, evaluator: CocoEvaluator, progress=None, skip_bad: bool = False,
                     names=None) -> tuple[dict, int, list[int], float, list[SkippedImage]]:
    """Decode each image's outputs and evaluate; (metrics, detections, image ids, decode seconds,
    images skipped for NaN/Inf outputs). NaN/Inf fails with one line unless skip_bad."""
    progress = progress or NullProgress()
    detections, counted, seconds, skipped = [], [], 0.0, []
    with progress.task(f"decode {len(prep.images)} images", len(prep.images)) as advance:
        for meta, outputs in items:
            t0 = time.perf_counter()
            label = f"image {Path(meta.file).name} (id {meta.image_id})"
            found = find_nonfinite(outputs, 1, names)
            if found:
                if not skip_bad:
                    raise HarnessError(f"{label}: device {describe(found)}; the row is not scored "
                                       "(--skip-bad-images leaves such images out and records them)")
                which = ", ".join(item.output_label() for item in found)
                skipped.append(SkippedImage(meta.file, f"NaN/Inf in device {which}"))
                advance(1)
                continue
            try:
                (dets,) = decode(outputs, [meta], prep.profile)
            except HarnessError as exc:
                raise HarnessError(f"{label}: {exc}") from None
            detections.append(to_coco_array(dets, meta.image_id, prep.profile.category_ids))
            seconds += time.perf_counter() - t0
            counted.append(meta.image_id)
            advance(1)
    if not counted:
        raise HarnessError(f"no image left to score: all {len(skipped)} had NaN/Inf outputs; first: {skipped[0]}")
    found = np.concatenate(detections) if detections else np.empty((0, 7))
    del detections
    return evaluator.evaluate(found, counted), len(found), counted, seconds, skipped


def _load_images(tool, prep_dir, datalist, profile_name, images_dir, ann: dict, ann_path: Path) -> tuple[Prep, list[str]]:
    """The images the outputs belong to, in the tool's order: prep.json (optionally reordered by
    --datalist), or, without a prep.json, --datalist + --data + --profile (vendor-made inputs)."""
    if datalist is not None and not tool.datalist_order:
        raise HarnessError(f"--datalist applies to outputs written in datalist order (vamp --npz), not to "
                           f"{tool.program} ({tool.decode_flag}) outputs, which are named by input file")
    if prep_dir is not None:
        if profile_name is not None or images_dir is not None:
            raise HarnessError("--profile and --data are for outputs without a prep.json; with --prep the profile "
                               "and images come from prep.json")
        prep = load_prep(prep_dir)
        if prep.fmt != tool.input_format:
            raise HarnessError(f"{prep.folder} was prepared as {prep.fmt}, but {tool.decode_flag} outputs need "
                               f"`preprocess --format {tool.input_format}`")
        _check_against_annotations(prep, ann, ann_path)
        if datalist is not None:
            return order_by_datalist(prep, datalist)
        if tool.datalist_order:
            check_prep_datalist(prep)
            return prep, [f"outputs mapped to images in prep.json order (the list `harness preprocess` wrote); if "
                          f"{tool.program} ran another list, pass it as --datalist"]
        return prep, []
    if not tool.datalist_order:
        raise HarnessError(f"{tool.decode_flag} outputs need --prep (the `harness preprocess --format "
                           f"{tool.input_format}` folder): their geometry is recorded only there")
    missing = [flag for flag, value in (("--datalist", datalist), ("--profile", profile_name), ("--data", images_dir))
               if value is None]
    if missing:
        raise HarnessError(f"without --prep, {tool.decode_flag} outputs need {', '.join(missing)}: the list the tool "
                           "ran with maps outputs to images (never guessed from an order), the original images and "
                           "the profile give the geometry")
    from harness.profiles import load_profile

    profile = load_profile(profile_name)
    prep = prep_from_images(datalist, images_dir, ann, ann_path, profile)
    check_categories(ann, profile.category_ids, profile.name, ann_path)
    return prep, [f"inputs made outside the harness (no prep.json): outputs mapped by --datalist "
                  f"{Path(datalist).name}, geometry from the images in {images_dir} and profile {profile.name}'s resize"]


def _device(given: str | None, timing, program: str) -> tuple[str, list[str]]:
    """What measured the row: --device, else what the tool's files say; never this (decode) host."""
    if timing.emulated_by:
        note = [f"--device {given!r} ignored: these outputs are emulated"] if given else []
        return timing.device or "emulated on the host that ran `harness emulate`", note
    if given:
        return given, []
    if timing.device:
        return timing.device, []
    return "unknown", [f"device not recorded: the {program} files do not name it; pass --device "
                       "(e.g. --device \"Ascend 310P3\")"]


def decode_run(tool_name: str, outputs_path: str | Path, prep_dir: str | Path | None, ann_path: str | Path,
               model: str | Path | None = None, bs: int | None = None, precision: str | None = None,
               evaluator: str = "auto", progress=None, datalist: str | Path | None = None,
               profile: str | None = None, images_dir: str | Path | None = None, device: str | None = None,
               skip_bad: bool = False) -> ResultRow:
    """One results row for a vendor output folder (tool_name: a FILE_TOOLS name, e.g. 'ais' or 'vamp')."""
    with RowWatch(energy=None) as watch:  # this command's own memory; the device's figures come from its files
        row = _decode_run(tool_name, outputs_path, prep_dir, ann_path, model, bs, precision, evaluator, progress,
                          datalist, profile, images_dir, device, skip_bad)
    row.machine_state = watch.finish()
    row.machine_state.energy_na = "measured by the device's own tool: the harness reads no device energy counter"
    row.machine_state.npu, row.machine_state.npu_na = npusmi.query()
    if row.machine_state.npu is not None:
        row.machine_state.npu_na = "npu-smi read when `harness decode` ran, not during the device's run"
    return row


def _decode_run(tool_name, outputs_path, prep_dir, ann_path, model, bs, precision, evaluator, progress, datalist,
                profile, images_dir, device, skip_bad) -> ResultRow:
    tool = FILE_TOOLS.get(tool_name)
    ann_path = Path(ann_path)
    ann = load_annotations(ann_path)
    prep, notes = _load_images(tool, prep_dir, datalist, profile, images_dir, ann, ann_path)
    specs = output_specs(prep, model)
    scorer = CocoEvaluator(ann, evaluator)
    del ann  # the evaluator holds what it needs
    folder = tool.locate_outputs(outputs_path)
    timing = tool.read_timing(folder)
    items = tool.read_outputs(folder, prep, specs)
    names = [s["name"] for s in specs] if specs else None
    metrics, n_dets, counted, seconds, bad_outputs = evaluate_outputs(items, prep, scorer, progress, skip_bad, names)

    row_bs = bs or 1
    if timing.batchsize is not None:
        if bs is not None and bs != timing.batchsize:
            notes.append(f"--bs {bs} ignored: the {tool.program} summary records batchsize {timing.batchsize}")
        row_bs = timing.batchsize
    model_name = timing.device_model or (str(model) if model else None) or prep.model or "unknown"
    measured_by, device_notes = _device(device, timing, tool.program)
    notes += device_notes
    if timing.note:
        notes.append(timing.note)
    if timing.emulated_by:
        notes.append(f"outputs{' and times' if timing.fps is not None else ''} from `harness emulate` "
                     f"({timing.emulated_by})")
    if specs is None:
        notes.append("output shapes/dtypes taken from the .npy/.npz files (no --model, none recorded at preprocess)")
    skipped = list(prep.sidecar.skipped) + list(bad_outputs)
    if prep.sidecar.skipped:
        notes.append(f"{len(prep.sidecar.skipped)} image(s) skipped at preprocess; mAP is over the remaining "
                     f"{len(counted)}")
    if bad_outputs:
        notes.append(f"{len(bad_outputs)} image(s) with NaN/Inf outputs skipped (--skip-bad-images); mAP is over "
                     f"the remaining {len(counted)}")
    for warning in (prep.sidecar.device_preprocess or {}).get("warnings", []):
        notes.append(f"device preprocessing: {warning}")
    return ResultRow(
        target=tool.device, bs=row_bs, model=model_name, profile=prep.profile.name,
        precision=precision or "unspecified", source="emulated" if timing.emulated_by else "device",
        device=measured_by, images=len(counted), fps=timing.fps, latency_ms_p50=timing.latency_ms_p50,
        latency_ms_p90=timing.latency_ms_p90, latency_ms_p99=timing.latency_ms_p99,
        latency_samples=timing.iterations if timing.fps is not None else None,
        mode=timing.mode if timing.fps is not None else "", requests=1 if timing.mode == "latency" else None,
        stage_ms={"preprocess": None, "infer": None, "decode": round(seconds * 1e3 / max(len(counted), 1), 3)},
        bench=None if timing.fps is None else {"iterations": timing.iterations, "source": str(timing.source)},
        time_covers=timing.time_covers, batch_mode=f"file-based ({tool.program})",
        runtime={"tool": tool.program, "outputs": str(folder), "prep": str(prep.folder) if prep_dir else None,
                 "datalist": str(datalist) if datalist else None,
                 "summary": str(timing.source) if timing.fps is not None else None},
        dataset=prep.sidecar.dataset, annotations=str(ann_path), evaluator=scorer.backend, detections=n_dets,
        skipped_images=skipped, notes=notes, **metric_fields(metrics),
    )
