"""`harness bench`: the timing loop of `harness run` without a dataset, one row per (target, bs).

Why: benchmark_app, trtexec and onnxruntime_perf_test all time a model without any labelled data;
users expect the same here. The input is seeded random values of the model's input shape and type,
or images of a folder preprocessed by a profile. The rows go through the same load, warm-up, timing
loop and loop check as `run` (runner.measure / timing_fields) and are made by the same
measurement.build_row, without an accuracy pass: flagged `no-accuracy` (their metric fields stay
empty), so `harness report` puts them beside `run` rows of the same model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.core import interrupts
from harness.core.config import dump as dump_config
from harness.core.errors import HarnessError, first_line
from harness.core.progress import NullProgress
from harness.images.preprocess import prepare_batch
from harness.machine.watch import RowWatch
from harness.measure import identity as ident
from harness.measure.measurement import RowContext, build_row
from harness.measure.results import ResultsStore
from harness.measure.row import ResultRow, failed_row
from harness.measure.runner import (
    check_memory,
    check_model_paths,
    describe_batch_mode,
    loop_rule,
    machine_notes,
    measure,
    model_for_batch,
    timing_fields,
    timing_notes,
)
from harness.model.extra_inputs import extra_inputs
from harness.profiles import Profile
from harness.targets import get_target
from harness.targets.timing import summary_ms

SEED = 0


@dataclass
class BenchConfig:
    target: str
    model: str  # a path, or a template with {bs}
    profile: Profile  # a built-in/user profile, or harness.profiles.input_profile (input only)
    batch_sizes: list[int]
    images: list[Path] = field(default_factory=list)  # preprocessed by the profile; [] = random input
    options: object = None
    bench_seconds: float = 3.0
    warmup_seconds: float = 1.0
    min_iterations: int = 10
    max_seconds: float = 60.0
    target_ci: float = 0.01
    notes: list[str] = field(default_factory=list)
    keep_going: bool = True


def image_files(folder: Path) -> list[Path]:
    """The images of a folder (sorted), or one line saying there are none."""
    from harness.images.imagefile import IMAGE_SUFFIXES, image_files_in

    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"--images {folder}: not a folder")
    files = image_files_in(folder)
    if not files:
        raise HarnessError(f"--images {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def random_batch(profile: Profile, bs: int) -> np.ndarray:
    """Seeded random input of the profile's shape and type (0..255 for uint8, 0..1 otherwise)."""
    spec = profile.input
    rng = np.random.default_rng(SEED)
    if spec.numpy_dtype == "uint8":
        return rng.integers(0, 256, spec.shape(bs), dtype=np.uint8)
    return rng.uniform(0, 1, spec.shape(bs)).astype(spec.numpy_dtype)


def _input_identity(config: BenchConfig) -> dict:
    if not config.images:
        return {"input": "random", "seed": SEED}
    listed = "\n".join(p.name for p in config.images)
    return {"input": "images", "images": len(config.images),
            "image_list_sha256": hashlib.sha256(listed.encode()).hexdigest()}


def bench(config: BenchConfig, store: ResultsStore, progress=None) -> list[ResultRow]:
    """Time every requested batch size; each row (finished or failed) is saved before the next starts."""
    progress = progress or NullProgress()
    target_cls = get_target(config.target)
    options = config.options if isinstance(config.options, target_cls.Options) else \
        target_cls.parse_options(config.options or {})
    check_model_paths(config)
    loop_rule(config)
    for bs in config.batch_sizes:  # before any row, as run: the requests' batches, the sample and its outputs
        check_memory(config.profile.input, bs, options, model_for_batch(config.model, bs)[0], f"--bs {bs}",
                     besides=1, outputs_besides=1)
    ok, runtime = target_cls.availability()
    measured_on = {"profile_sha256": config.profile.content_hash, "dataset": _input_identity(config), "limit": None,
                   "options": dump_config(options), "harness": __version__, "runtime": runtime if ok else None,
                   "machine": ident.machine(store.env)}
    rows, shas = [], {}
    for bs in config.batch_sizes:
        model_path, per_batch = model_for_batch(config.model, bs)
        if model_path not in shas:
            shas[model_path] = ident.model_sha256(model_path)
        row_identity = {"model_sha256": shas[model_path], **measured_on}
        store.check_same_measurement(row_identity, config.target, model_path)
        context = {"model": model_path, "profile": config.profile.name, "identity": row_identity,
                   "dataset": str(config.images[0].parent) if config.images else ""}
        try:
            try:
                row = _bench_one(config, options, bs, model_path, per_batch, progress, context)
            except HarnessError:
                raise
            except Exception as exc:  # a runtime's own error: this row fails, the rest stay (as in run)
                raise HarnessError(f"the runtime failed: {type(exc).__name__}: {first_line(exc)}") from None
        except HarnessError as exc:
            interrupts.check()  # an error caused by Ctrl-C is not the row's (as in run)
            row = failed_row(config.target, bs, str(exc), precision=getattr(options, "precision", None) or "-",
                             notes=list(config.notes), flags=["no-accuracy"], **context)
            store.add(row)
            rows.append(row)
            if not config.keep_going:
                raise
            progress.message(f"✗ {config.target} bs={bs}: {exc}")
            continue
        store.add(row)
        rows.append(row)
    return rows


def _input(config: BenchConfig, bs: int) -> tuple[np.ndarray, dict | None, str]:
    if not config.images:
        spec = config.profile.input
        return random_batch(config.profile, bs), None, \
            f"input: seeded random {spec.layout} {spec.dtype} {list(spec.shape(bs))} (no dataset, no accuracy)"
    chosen = [(i, config.images[i % len(config.images)]) for i in range(bs)]
    batch = prepare_batch(chosen, config.profile.input, bs, skip_bad=False)
    distinct = min(bs, len(config.images))
    return batch.tensor, extra_inputs(config.profile, batch.metas, bs) or None, \
        f"input: {distinct} image(s) of {config.images[0].parent} preprocessed by profile {config.profile.name} " \
        "(no accuracy)"


def _bench_one(config: BenchConfig, options, bs: int, model_path: str, per_batch: bool, progress, context: dict):
    """One row inside its machine watch (memory peak, other load, energy), like a run row."""
    target_cls = get_target(config.target)
    watch = RowWatch(energy=target_cls.device_kind).start()
    try:
        return _bench_watched(config, options, bs, model_path, per_batch, progress, context, target_cls, watch)
    finally:
        watch.stop()


def _bench_watched(config: BenchConfig, options, bs: int, model_path: str, per_batch: bool, progress, context: dict,
                   target_cls, watch: RowWatch):
    target = target_cls(model_path, config.profile, options, config.batch_sizes)
    sample, extras, said = _input(config, bs)
    target.sample_images = tuple((i, p) for i, p in enumerate(config.images[:8]))
    with target:
        with progress.task(f"{config.target} bs={bs}: loading {Path(model_path).name}", 1) as advance:
            target.load(bs)
            advance(1)
        reference = [np.array(o, copy=True) for o in target.infer(sample, extras)]
        stats, rule, loop_check = measure(target, sample, extras, reference, config, progress, bs, watch=watch)
        describe = target.describe()
    machine = watch.finish(ident.model_bytes(model_path), None)
    notes = [*config.notes, said, *target.notes]
    flags = set(target.flags)
    if per_batch:
        notes.append(f"per-batch model: {Path(model_path).name}")
        flags.add("per-batch-model")
    timing_notes(stats, rule, loop_check, notes, flags)
    notes += machine_notes(machine, stats.fps, None, flags)
    timing = {**timing_fields(stats, rule, loop_check, target, config.warmup_seconds), "machine_state": machine}
    timing["bench"]["latency_ms"] = summary_ms(stats.latencies_ms)
    measured = RowContext(dict(target=config.target, bs=bs, precision=target.precision or "fp32",
                               batch_mode=describe_batch_mode(per_batch, target.model_batch, bs, target.batch_rewrite),
                               batch_rewrite=target.batch_rewrite, runtime=describe, **context), notes, flags)
    return build_row(measured, timing, None, None)
