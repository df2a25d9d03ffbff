"""One `harness run`: for each batch size, load the target, time it, run the accuracy pass, write a row.

Wires profile, preprocess pipeline, target, decoder, evaluator, timing and results together; holds
no model or runtime knowledge of its own.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.canvases import CanvasCache
from harness.data.coco import load_dataset
from harness.decode import decode
from harness.errors import HarnessError
from harness.evaluate import CocoEvaluator
from harness.extra_inputs import extra_inputs
from harness.pipeline import accuracy_pass
from harness.preprocess import preprocess_image
from harness.profiles import Profile
from harness.results import ResultsStore
from harness.targets import get_target
from harness.timing import percentiles_ms, warm_up


@dataclass
class RunConfig:
    target: str
    model: str  # a path, or a template with {bs} for one model per batch size
    profile: Profile
    images_dir: Path
    ann_path: Path
    batch_sizes: list[int]
    options: dict = field(default_factory=dict)
    bench_seconds: float = 3.0
    warmup_seconds: float = 1.0
    min_iterations: int = 10
    limit: int | None = None
    skip_bad_images: bool = False
    workers: int = 2
    evaluator: str = "auto"
    canvases: CanvasCache | None = None  # shared by the runs of one command: later rows skip JPEG decoding
    save_detections: bool = False  # write the row's COCO result dicts next to results.json (fidelity)
    save_outputs: int = 0  # write the raw outputs of the first N images next to results.json (fidelity)


class NullProgress:
    """Progress sink used when nobody watches (tests, library use)."""

    def task(self, description: str, total: int):
        return nullcontext(lambda n=1: None)

    def message(self, text: str) -> None:
        pass


def model_for_batch(model: str, batch: int) -> tuple[str, bool]:
    """Resolve a per-batch model template; (path, is_per_batch_model)."""
    if "{bs}" in model:
        return model.replace("{bs}", str(batch)), True
    return model, False


def check_model_paths(config: RunConfig) -> None:
    """Every model file must exist before anything runs (one per batch size for templates)."""
    missing = []
    for bs in config.batch_sizes:
        path, _ = model_for_batch(config.model, bs)
        if not Path(path).exists():
            missing.append(path)
    if missing:
        raise HarnessError(f"model file not found: {', '.join(missing)}")


def run(config: RunConfig, store: ResultsStore, progress=None) -> list[dict]:
    """Run every requested batch size; each finished row is saved before the next starts."""
    progress = progress or NullProgress()
    get_target(config.target)  # unknown target: fail before touching data
    check_model_paths(config)
    dataset = load_dataset(config.images_dir, config.ann_path, config.limit, config.skip_bad_images)
    evaluator = CocoEvaluator(dataset.ann, config.evaluator)
    _check_categories(dataset.ann, config.profile, config.ann_path)
    images = list(dataset.images)
    bad: list[str] = list(dataset.skipped)
    rows = []
    for bs in config.batch_sizes:
        model_path, per_batch = model_for_batch(config.model, bs)
        key = (config.target, model_path, config.profile.name, config.options.get("precision"), bs)
        if store.done(key):
            progress.message(f"{config.target} bs={bs}: already in {store.path}, skipped (--resume)")
            continue
        row, images, bad = _run_one(config, bs, model_path, per_batch, images, bad, evaluator, progress,
                                    store.out_dir)
        store.add(row)
        rows.append(row)
    return rows


def _requested_precision(config: RunConfig) -> str:
    return str(config.options.get("precision") or "fp32")


def _check_categories(ann: dict, profile: Profile, ann_path: Path) -> None:
    """Every annotated category must map to a profile class, or its boxes count as misses silently."""
    names = {int(c["id"]): c["name"] for c in ann["categories"]}
    used = {int(a["category_id"]) for a in ann["annotations"]}
    unmapped = sorted(used - set(profile.category_ids))
    if unmapped:
        shown = ", ".join(f"{i} ({names.get(i, '?')})" for i in unmapped[:8])
        more = f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else ""
        raise HarnessError(
            f"{ann_path}: category id(s) {shown}{more} have boxes but no class in profile {profile.name} "
            f"(its ids: {list(profile.category_ids)[:8]}...); fix [classes] category_ids in the profile"
        )


def _first_batch(images, bs: int, profile: Profile, skip_bad: bool):
    """The first bs readable images (repeated if the dataset is smaller): timing input and fit check."""
    prepared = []
    for image_id, path in images:
        try:
            prepared.append(preprocess_image(path, image_id, profile.input))
        except HarnessError:
            if not skip_bad:
                raise
        if len(prepared) == bs:
            break
    if not prepared:
        raise HarnessError("no readable images to run")
    tensors = [t for t, _ in prepared]
    while len(tensors) < bs:
        tensors.append(tensors[-1])
    return np.stack(tensors), [m for _, m in prepared]


def _run_one(config, bs, model_path, per_batch, images, bad, evaluator, progress, out_dir: Path):
    profile = config.profile
    target = get_target(config.target)(model_path, profile, {**config.options, "batch_sizes": config.batch_sizes})
    try:
        with progress.task(f"{config.target} bs={bs}: loading {Path(model_path).name}", 1) as advance:
            target.load(bs)
            advance(1)
        sample, sample_metas = _first_batch(images, bs, profile, config.skip_bad_images)
        sample_extras = extra_inputs(profile, sample_metas, bs) or None
        _check_outputs(target, sample, sample_metas, model_path, sample_extras)
        with progress.task(f"{config.target} bs={bs}: timing ({config.bench_seconds:.0f}s)", 1) as advance:
            warm_up(lambda: target.infer(sample, sample_extras), config.warmup_seconds)
            stats = target.benchmark(sample, config.bench_seconds, config.min_iterations, sample_extras)
            advance(1)
        store = config.canvases.store_for(profile.input, len(images)) if config.canvases else None
        reused = bool(store)
        with progress.task(f"{config.target} bs={bs}: accuracy pass", len(images)) as advance:
            passed = accuracy_pass(target, images, bs, profile, workers=config.workers,
                                   skip_bad=config.skip_bad_images, advance=advance, canvases=store)
        detections, counted, failed, clock, wall = (passed.detections, passed.counted, passed.failed,
                                                    passed.clock, passed.wall_seconds)
        describe = target.describe()
        notes = list(target.notes)
        precision = getattr(target, "precision", None) or _requested_precision(config)
        outputs = None
        if config.save_outputs:
            from harness.fidelity.capture import capture_outputs

            ran = set(counted)
            outputs = capture_outputs(target, [(i, p) for i, p in images if i in ran], config.save_outputs, bs,
                                      profile, [o.name for o in target.outputs()])
    finally:
        target.close()
    if failed:
        failed_names = {f.split(":", 1)[0].replace("image ", "") for f in failed}
        images = [(i, p) for i, p in images if str(p) not in failed_names]
        bad = bad + failed
    metrics = evaluator.evaluate(detections, counted)
    if per_batch:
        notes.append(f"per-batch model: {Path(model_path).name}")
    if reused:
        notes.append("accuracy pass reused the resized images of an earlier row (no JPEG decoding in its e2e time)")
    if target.padded_batch and len(counted) % bs:
        notes.append(f"last batch padded from {len(counted) % bs} to {bs} images; padding not counted")
    if bad:
        notes.append(f"{len(bad)} image(s) skipped (--skip-bad-images); mAP is over the remaining {len(counted)}")
    row = {
        "target": config.target,
        "model": model_path,
        "profile": profile.name,
        "precision": precision,
        "bs": bs,
        "images": len(counted),
        **{k: round(v, 5) for k, v in metrics.items() if k != "per_class_ap"},
        "fps": round(stats.fps, 2),
        "e2e_fps": round(len(counted) / wall, 2) if wall > 0 else None,
        **percentiles_ms(stats.latencies_ms),
        **stats.extra,  # per-target timing figures, e.g. gpu_compute_ms_p50 (trt)
        "stage_ms": clock.per_image_ms(len(counted)),
        "bench": {"iterations": len(stats.latencies_ms), "seconds": round(stats.seconds, 3),
                  "concurrency": stats.concurrency, "warmup_seconds": config.warmup_seconds},
        "time_covers": target.time_covers,
        "batch_mode": _batch_mode(per_batch, getattr(target, "model_batch", None), bs),
        "runtime": describe,
        "dataset": str(config.images_dir),
        "annotations": str(config.ann_path),
        "evaluator": evaluator.backend,
        "detections": len(detections),
        "skipped_images": bad,
        "per_class_ap": {k: round(v, 5) for k, v in metrics.get("per_class_ap", {}).items()},
        "notes": notes,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if config.save_detections or outputs is not None:
        from harness.fidelity.artifacts import save_row_artifacts

        ran = set(counted)
        row["artifacts"] = save_row_artifacts(out_dir, row, detections if config.save_detections else None,
                                              {i: p.name for i, p in images if i in ran}, outputs)
    return row, images, bad


def _batch_mode(per_batch: bool, model_batch: int | None, bs: int) -> str:
    """How the batch size was obtained: one model per size, a dynamic axis, the model's fixed
    batch, or a fixed batch-1 graph reshaped (OpenVINO) / made symbolic (ONNX Runtime)."""
    if per_batch:
        return "per-batch model"
    if model_batch is None:
        return "dynamic"
    return "fixed" if model_batch == bs else "reshaped"


def _check_outputs(target, sample: np.ndarray, metas, model_path: str, extras: dict | None) -> None:
    """Decode one real batch before timing anything, so a model/profile mismatch fails fast."""
    outputs = target.infer(sample, extras)
    try:
        decode(outputs, metas, target.profile)
    except HarnessError as exc:
        raise HarnessError(f"model {Path(model_path).name} and profile {target.profile.name} do not fit: {exc}") from None
