"""Vendor output folder -> the common decoder -> the common evaluator -> a results row like `harness run`'s.

Only the reading differs per tool (its FileTool): the folder is a source of harness.measure.pipeline
(file_pass), and decoding, COCO evaluation, saved detections and the row (harness.measure.measurement) are the
ones in-process targets use, so the table and `report --fidelity` compare devices and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import __version__
from harness.core.errors import HarnessError
from harness.core.progress import NullProgress
from harness.data.annotations import load_annotations
from harness.data.coco import check_categories
from harness.machine import npusmi
from harness.machine.watch import RowWatch
from harness.measure import identity as ident
from harness.measure.evaluate import CocoEvaluator
from harness.measure.measurement import RowContext, Saving, build_row, evaluate_pass
from harness.measure.pipeline import file_pass
from harness.measure.row import ResultRow
from harness.npu import FILE_TOOLS
from harness.npu.datalist import order_by_datalist, prep_from_images
from harness.npu.prep import Prep, check_prep_datalist, load_prep, output_specs


def _check_against_annotations(prep: Prep, ann: dict, ann_path: Path) -> None:
    known = {int(img["id"]) for img in ann["images"]}
    for _, meta in prep.images:
        if meta.image_id not in known:
            raise HarnessError(f"image {Path(meta.file).name} (id {meta.image_id}) in {prep.folder / 'prep.json'} "
                               f"is not in {ann_path}: decode with the annotations used at preprocess")
    check_categories(ann, prep.profile.category_ids, prep.profile.name, ann_path)


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


def _origin_checks(timing, prep: Prep, model, folder, tool) -> tuple[str | None, list[str]]:
    """(model sha256 of the row, notes): the file set is checked against the prep it claims to come from."""
    if timing.prep_sha256 and prep.sha256 and timing.prep_sha256 != prep.sha256:
        raise HarnessError(f"{folder}: these {tool.program} outputs were made from another preparation (prep.json "
                           f"sha256 {timing.prep_sha256[:12]} in {Path(timing.source).name}, {prep.folder / 'prep.json'} "
                           f"is {prep.sha256[:12]}): decode with the --prep folder they were run on")
    notes = []
    given = ident.model_sha256(model) if model else None
    ran = timing.model_sha256 or prep.sidecar.model_sha256
    if given and ran and given != ran:
        which = "ran" if timing.model_sha256 else "was given to preprocess"
        notes.append(f"--model {Path(model).name} (sha256 {given[:12]}) is not the model that {which} "
                     f"(sha256 {ran[:12]}); the row records the latter")
    return ran or given, notes


def _identity(tool, timing, prep: Prep, ann_path: Path, model_sha: str | None) -> dict:
    """A decode row's identity, with the fields a `run` row has where the files tell them; the machine is
    the device's (`device`), never the host that decodes."""
    version = timing.tool_version or "version not recorded"
    return {"model_sha256": model_sha, "profile_sha256": prep.profile.content_hash,
            "dataset": ident.dataset_identity(ann_path, [(meta.image_id, meta.file) for _, meta in prep.images],
                                              prep.content),
            "limit": prep.sidecar.limit, "options": {}, "harness": __version__,
            "runtime": f"{tool.program} ({'emulated: ' if timing.emulated_by else ''}{version})",
            "prep_sha256": prep.sha256 or None}


def _tap(items, n: int, kept: list):
    """The output tap: keeps the first n images' outputs (--save-outputs N) as they pass."""
    for meta, outputs in items:
        if len(kept) < n:
            kept.append((meta, [np.array(o) for o in outputs]))
        yield meta, outputs


def _saved_outputs(kept, counted: set, names):
    from harness.measure.artifacts import SavedOutputs
    from harness.measure.capture import split_per_image

    kept = [(meta, outputs) for meta, outputs in kept if meta.image_id in counted]
    arrays = [split_per_image(outputs, 1, 1)[0] for _, outputs in kept]
    width = len(arrays[0]) if arrays else len(names or [])
    names = list(names) if names and len(names) == width else [f"output_{k}" for k in range(width)]
    return SavedOutputs([meta.image_id for meta, _ in kept], [Path(meta.file).name for meta, _ in kept], names, arrays)


def decode_run(tool_name: str, outputs_path: str | Path, prep_dir: str | Path | None, ann_path: str | Path,
               model: str | Path | None = None, bs: int | None = None, precision: str | None = None,
               evaluator: str = "auto", progress=None, datalist: str | Path | None = None,
               profile: str | None = None, images_dir: str | Path | None = None, device: str | None = None,
               skip_bad: bool = False, out_dir: str | Path | None = None, save_detections: bool = False,
               save_outputs: int = 0) -> ResultRow:
    """One results row for a vendor output folder (tool_name: a FILE_TOOLS name, e.g. 'ais' or 'vamp'):
    the folder is the source, the pipeline's sinks decode and score it, harness.measure.measurement builds the row,
    all inside a machine watch (this command's own memory; the device's figures come from its files)."""
    with RowWatch(energy=None) as watch:
        return _decode_run(tool_name, outputs_path, prep_dir, ann_path, model, bs, precision, evaluator,
                           progress or NullProgress(), datalist, profile, images_dir, device, skip_bad, out_dir,
                           save_detections, save_outputs, watch)


def _machine_state(watch):
    """The decode's machine state: its own memory, npu-smi as read now (not during the device's run)."""
    machine = watch.finish()
    machine.energy_na = "measured by the device's own tool: the harness reads no device energy counter"
    machine.npu, machine.npu_na = npusmi.query()
    if machine.npu is not None:
        machine.npu_na = "npu-smi read when `harness decode` ran, not during the device's run"
    return machine


def check_bs_fits(bs: int, images: int, where) -> None:
    """No --bs larger than the prepared images (as run's --bs and emulate's --batchsize), before any work:
    such a batch would be mostly padding or repeats. decode and roundtrip (before its tool runs) ask it."""
    if bs > images:
        raise HarnessError(f"--bs {bs}: larger than the {images} image(s) in {where}; a batch would be "
                           f"mostly padding or repeats: use at most {images}")


def _decode_run(tool_name, outputs_path, prep_dir, ann_path, model, bs, precision, evaluator, progress, datalist,
                profile, images_dir, device, skip_bad, out_dir, save_detections, save_outputs, watch) -> ResultRow:
    tool = FILE_TOOLS.get(tool_name)
    ann_path = Path(ann_path)
    ann = load_annotations(ann_path)
    prep, notes = _load_images(tool, prep_dir, datalist, profile, images_dir, ann, ann_path)
    if bs is not None:
        check_bs_fits(bs, len(prep.images), prep.folder / "prep.json" if prep_dir is not None else f"--datalist {datalist}")
    specs = output_specs(prep, model)
    scorer = CocoEvaluator(ann, evaluator)
    del ann  # the evaluator holds what it needs
    folder = tool.locate_outputs(outputs_path)
    timing = tool.read_timing(folder)
    model_sha, origin_notes = _origin_checks(timing, prep, model, folder, tool)
    notes += origin_notes
    names = [s["name"] for s in specs] if specs else None
    kept: list = []
    items = _tap(tool.read_outputs(folder, prep, specs), save_outputs, kept)
    with progress.task(f"decode {len(prep.images)} images", len(prep.images)) as advance:
        passed = file_pass(items, prep.profile, skip_bad, names, advance)
    if not passed.counted:
        raise HarnessError(f"no image left to score: all {len(passed.bad_outputs)} had NaN/Inf outputs; "
                           f"first: {passed.bad_outputs[0]}")
    counted = passed.counted

    row_bs = bs or 1
    if timing.batchsize is not None:
        if bs is not None and bs != timing.batchsize:
            notes.append(f"--bs {bs} ignored: the {tool.program} summary records batchsize {timing.batchsize}")
        row_bs = timing.batchsize
        if row_bs > len(prep.images):
            notes.append(f"the {tool.program} summary records batchsize {row_bs}, more than the {len(prep.images)} "
                         "image(s) its outputs hold: its timing ran batches padded beyond the images")
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
    skipped = list(prep.sidecar.skipped) + list(passed.bad_outputs)
    if prep.sidecar.skipped:
        notes.append(f"{len(prep.sidecar.skipped)} image(s) skipped at preprocess; mAP is over the remaining "
                     f"{len(counted)}")
    if passed.bad_outputs:
        notes.append(f"{len(passed.bad_outputs)} image(s) with NaN/Inf outputs skipped (--skip-bad-images); mAP is "
                     f"over the remaining {len(counted)}")
    for warning in (prep.sidecar.device_preprocess or {}).get("warnings", []):
        notes.append(f"device preprocessing: {warning}")
    measured = RowContext(dict(
        target=tool.device, bs=row_bs, model=model_name, profile=prep.profile.name,
        precision=precision or "unspecified", source="emulated" if timing.emulated_by else "device",
        device=measured_by, batch_mode=f"file-based ({tool.program})",
        runtime={"tool": tool.program, "outputs": str(folder), "prep": str(prep.folder) if prep_dir else None,
                 "datalist": str(datalist) if datalist else None,
                 "summary": str(timing.source) if timing.fps is not None else None},
        dataset=prep.sidecar.dataset, annotations=str(ann_path),
        identity=_identity(tool, timing, prep, ann_path, model_sha)), notes, set(), skipped)
    timed = timing.fps is not None
    row_timing = dict(fps=timing.fps, latency_ms_p50=timing.latency_ms_p50, latency_ms_p90=timing.latency_ms_p90,
                      latency_ms_p99=timing.latency_ms_p99, latency_samples=timing.iterations if timed else None,
                      mode=timing.mode if timed else "", requests=1 if timing.mode == "latency" else None,
                      bench={"iterations": timing.iterations, "source": str(timing.source)} if timed else None,
                      time_covers=timing.time_covers)
    outputs = _saved_outputs(kept, set(counted), names) if save_outputs else None
    evaluation = evaluate_pass(scorer, passed)
    row_timing["machine_state"] = _machine_state(watch)
    return build_row(measured, row_timing, passed, evaluation, Saving(out_dir, save_detections, outputs),
                     unmeasured_stages=("preprocess", "infer"))
