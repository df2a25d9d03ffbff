"""One `harness run` of one target: for each batch size, load the target, time it, run the accuracy
pass, write a row.

Wires profile, preprocessing, target, decoder, evaluator, timing and results together; holds no
model or runtime knowledge of its own. A (target, bs) that cannot run (fixed batch, missing runtime,
model error) becomes a failed row with its one-line reason and the sweep goes on; problems that no
row could survive (dataset, model file missing) stop before any work.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.core import interrupts
from harness.core.bounds import check_batch_memory
from harness.core.config import dump as dump_config
from harness.core.errors import HarnessError, first_line
from harness.core.progress import NullProgress
from harness.data.coco import DatasetCache, check_categories, load_dataset
from harness.decode import decode
from harness.images.preprocess import prepare_batch
from harness.machine.state import busy_note, busy_windows, e2e_above_infer_note, energy_figures
from harness.machine.watch import RowWatch
from harness.measure import identity as ident
from harness.measure.canvases import CanvasCache
from harness.measure.evaluate import CocoEvaluator
from harness.measure.measurement import RowContext, Saving, build_row, evaluate_pass
from harness.measure.pipeline import PassResult, accuracy_pass
from harness.measure.results import ResultsStore
from harness.measure.row import ResultRow, failed_row
from harness.model.extra_inputs import extra_inputs
from harness.model.onnx_model import declared_output_bytes
from harness.profiles import Profile
from harness.targets import get_target
from harness.targets.modes import usable_cores
from harness.targets.timing import STAGES, LoopRule, percentiles_ms, warm_up

LOOP_CHECK_ITERATIONS = 2  # outputs captured inside the timing loop and compared with a plain infer()
SAMPLE_IMAGES = 8  # the run's first images, given to a target that checks a conversion on real inputs


@dataclass
class RunConfig:
    target: str
    model: str  # a path, or a template with {bs} for one model per batch size
    profile: Profile
    images_dir: Path
    ann_path: Path
    batch_sizes: list[int]
    options: object = None  # the target's Options (or plain data for it)
    bench_seconds: float = 3.0  # the timing loop's minimum (harness.targets.timing.LoopRule)
    warmup_seconds: float = 1.0
    min_iterations: int = 10
    max_seconds: float = 60.0  # the timing loop's cap, when its confidence interval does not get under target_ci
    target_ci: float = 0.01  # relative 95% half-width of the throughput that ends the loop early
    limit: int | None = None
    skip_bad_images: bool = False
    workers: int = 2
    evaluator: str = "auto"
    canvases: CanvasCache | None = None  # shared by the runs of one command: later rows skip JPEG decoding
    datasets: DatasetCache | None = None  # shared by the runs of one command: the images are checked once
    notes: list[str] = field(default_factory=list)  # said of every row (e.g. options this target ignored)
    keep_going: bool = False  # a row that cannot run is recorded and the sweep goes on (else: recorded, then raised)
    save_detections: bool = False  # ok rows write their COCO result dicts next to results.json (report --fidelity)
    save_outputs: int = 0  # ok rows write the raw outputs of their first N images next to results.json
    #: a finished accuracy pass of this (target, bs) made elsewhere (run --cluster --accuracy-shards: shards on
    #: other workers, merged): the row times the target and scores this pass instead of running its own
    accuracy: PassResult | None = None


def loop_rule(config: RunConfig) -> LoopRule:
    """The timing loop's stopping rule of a run (a HarnessError for an impossible one)."""
    try:
        return LoopRule(config.bench_seconds, config.min_iterations, config.max_seconds, config.target_ci)
    except ValueError as exc:
        raise HarnessError(f"timing loop: {exc}") from None


def model_for_batch(model: str, batch: int) -> tuple[str, bool]:
    """Resolve a per-batch model template; (path, is_per_batch_model)."""
    if "{bs}" in model:
        return model.replace("{bs}", str(batch)), True
    return model, False


def check_model_paths(config: RunConfig) -> dict[str, str]:
    """Every model file must exist before anything runs (one per batch size for templates); returns
    each one's resolved file (an OpenVINO IR folder -> its .xml; identity.resolve_model)."""
    missing, resolved = [], {}
    for bs in config.batch_sizes:
        path, _ = model_for_batch(config.model, bs)
        if not Path(path).exists() and not Path(path).is_symlink():
            missing.append(path)
        elif path not in resolved:
            resolved[path] = str(ident.resolve_model(path))
    if missing:
        raise HarnessError(f"model file not found: {', '.join(missing)}")
    return resolved


#: batches of input alive at once in a row besides the runtime's requests: the timing sample, the
#: preprocessing lookahead (pipeline.iter_batches) and the decoder's queue
BATCHES_BESIDES_REQUESTS = 1 + 4 + 2
#: batches of outputs alive at once besides the requests' own: the decoder's queue
OUTPUTS_BESIDES_REQUESTS = 2


def check_batch_sizes(config: RunConfig, options, images: int) -> None:
    """Before any work: no batch larger than the dataset (it would be padding or repeats), and the
    batches in flight, inputs and the model's declared outputs, fit in memory (harness.core.bounds), each
    refused with one line."""
    spec = config.profile.input
    for bs in config.batch_sizes:
        if bs > images:
            raise HarnessError(f"--bs {bs}: larger than the {images} image(s) of the dataset; a batch would be "
                               f"mostly padding or repeats: use at most {images}")
        check_memory(spec, bs, options, model_for_batch(config.model, bs)[0], f"--bs {bs}")


def check_memory(spec, bs: int, options, model_path: str, what: str, besides: int = BATCHES_BESIDES_REQUESTS,
                 outputs_besides: int = OUTPUTS_BESIDES_REQUESTS) -> None:
    """The batches of one row in flight (the target's requests, plus `besides` input batches and
    `outputs_besides` output batches) against the memory available (harness.core.bounds)."""
    requests = getattr(options, "streams", None) or getattr(options, "nireq", None) or usable_cores()
    check_batch_memory(spec.shape(bs), np.dtype(spec.numpy_dtype).itemsize, requests + besides, what,
                       output_bytes_per_image=declared_output_bytes(model_path),
                       outputs_in_flight=requests + outputs_besides)


def check_inputs(configs: list[RunConfig]) -> None:
    """What run() refuses before any row, for rows that will run elsewhere (run --cluster): target names,
    model files, the timing loop's rule, the dataset and its categories (the paths must be the same on
    every host)."""
    for config in configs:
        get_target(config.target)
        check_model_paths(config)
        loop_rule(config)
    for config in configs[:1] + [c for c in configs[1:] if c.profile is not configs[0].profile]:
        dataset = load_dataset(config.images_dir, config.ann_path, config.limit, config.skip_bad_images)
        check_categories(dataset.ann, config.profile.category_ids, config.profile.name, config.ann_path)


def run(config: RunConfig, store: ResultsStore, progress=None) -> list[ResultRow]:
    """Run every requested batch size; each row (finished or failed) is saved before the next starts."""
    progress = progress or NullProgress()
    target_cls = get_target(config.target)  # unknown target: fail before touching data
    options = config.options if isinstance(config.options, target_cls.Options) else \
        target_cls.parse_options(config.options or {})
    resolved = check_model_paths(config)
    loop_rule(config)
    load = config.datasets.load if config.datasets else load_dataset
    dataset = load(config.images_dir, config.ann_path, config.limit, config.skip_bad_images)
    evaluator = CocoEvaluator(dataset.ann, config.evaluator)
    check_categories(dataset.ann, config.profile.category_ids, config.profile.name, config.ann_path)
    images = list(dataset.images)
    skipped: list[str] = list(dataset.skipped)
    check_batch_sizes(config, options, len(images))
    measured_on = _identity_parts(config, options, target_cls, dataset, store.env)
    planned, model_shas = [], {}
    for bs in config.batch_sizes:  # every model's identity is checked against a resumed folder first
        model_path, per_batch = model_for_batch(config.model, bs)
        model_path = resolved[model_path]
        if model_path not in model_shas:  # one file serves every batch size unless given per batch
            model_shas[model_path] = ident.model_sha256(model_path)
        row_identity = {"model_sha256": model_shas[model_path], **measured_on}
        store.check_same_measurement(row_identity, config.target, model_path)
        planned.append((bs, model_path, per_batch, row_identity))
    rows = []
    for bs, model_path, per_batch, row_identity in planned:
        key = (config.target, model_path, config.profile.name, getattr(options, "precision", None), bs)
        if store.done(key):
            progress.message(f"{config.target} bs={bs}: already in {store.path}, skipped (--resume)")
            continue
        context = {"model": model_path, "profile": config.profile.name, "dataset": str(config.images_dir),
                   "annotations": str(config.ann_path), "notes": list(config.notes), "identity": row_identity}
        try:
            try:
                row, images, skipped = _run_one(config, options, bs, model_path, per_batch, images, skipped,
                                                evaluator, progress, context, store.out_dir)
            except HarnessError:
                raise
            except Exception as exc:  # a runtime's own error (in any batch, the last too): this row fails, the rest stay
                raise HarnessError(f"the runtime failed: {type(exc).__name__}: {first_line(exc)}") from None
        except HarnessError as exc:
            interrupts.check()  # an error caused by Ctrl-C (an import or a request cut short) is not the row's
            row = failed_row(config.target, bs, str(exc), precision=getattr(options, "precision", None) or "-",
                             **context)
            store.add(row)
            if not config.keep_going:
                raise
            progress.message(f"✗ {config.target} bs={bs}: {exc}")
            rows.append(row)
            continue
        store.add(row)
        rows.append(row)
    return rows


def _identity_parts(config: RunConfig, options, target_cls, dataset, env: dict) -> dict:
    """Every identity field but the model's hash (which may differ per batch size)."""
    ok, runtime = target_cls.availability()
    return {"profile_sha256": config.profile.content_hash,
            "dataset": ident.dataset_identity(config.ann_path, dataset.images, dataset.content), "limit": config.limit,
            "options": dump_config(options), "harness": __version__, "runtime": runtime if ok else None,
            "machine": ident.machine(env)}


def _first_batch(images, bs: int, profile: Profile, skip_bad: bool):
    """The first bs readable images (repeated if the dataset is smaller): timing input and fit check."""
    readable = []
    for image_id, path in images:
        batch = prepare_batch([(image_id, path)], profile.input, None, skip_bad)
        if batch.metas:
            readable.append((image_id, path))
        if len(readable) == bs:
            break
    if not readable:
        raise HarnessError("no readable images to run")
    batch = prepare_batch(readable, profile.input, bs, skip_bad=False)
    return batch.tensor, batch.metas


def _run_one(config, options, bs, model_path, per_batch, images, skipped, evaluator, progress, context, out_dir):
    target_cls = get_target(config.target)
    watch = RowWatch(energy=target_cls.device_kind).start()  # memory peak from here: load, timing, accuracy
    try:
        return _run_watched(config, options, bs, model_path, per_batch, images, skipped, evaluator, progress,
                            context, out_dir, target_cls, watch)
    finally:
        watch.stop()


def _run_watched(config, options, bs, model_path, per_batch, images, skipped, evaluator, progress, context, out_dir,
                 target_cls, watch):
    profile = config.profile
    target = target_cls(model_path, profile, options, config.batch_sizes)
    target.sample_images = tuple(images[:SAMPLE_IMAGES])
    with target:
        with progress.task(f"{config.target} bs={bs}: loading {Path(model_path).name}", 1) as advance:
            target.load(bs)
            advance(1)
        sample, sample_metas = _first_batch(images, bs, profile, config.skip_bad_images)
        sample_extras = extra_inputs(profile, sample_metas, bs) or None
        reference = _check_outputs(target, sample, sample_metas, model_path, sample_extras)
        stats, rule, loop_check = measure(target, sample, sample_extras, reference, config, progress, bs, watch=watch)
        store = config.canvases.store_for(profile.input, len(images)) if config.canvases else None
        reused = bool(store)  # filled by an earlier row (this row's pass fills an empty one)
        if config.accuracy is not None:  # made on other workers: no e2e time, no stage times of this host
            passed, reused = config.accuracy, False
            _check_covers(passed, images)
        else:
            with progress.task(f"{config.target} bs={bs}: accuracy pass", len(images)) as advance, \
                    watch.window("accuracy"):
                passed = accuracy_pass(target, images, bs, profile, workers=config.workers,
                                       skip_bad=config.skip_bad_images, advance=advance, canvases=store)
        describe = target.describe()
        notes = [*context.pop("notes"), *target.notes]
        flags = set(target.flags)
        precision = target.precision or "fp32"
        padded = target.padded_batch and len(passed.counted) % bs != 0
        counted = set(passed.counted)
        ran = [(i, p) for i, p in images if i in counted]  # dataset order, images that failed left out
        outputs = _capture_outputs(config, target, ran, bs)
    evaluation = evaluate_pass(evaluator, passed)  # inside the row's memory watch: part of its peak
    machine = watch.finish(ident.model_bytes(model_path), config.canvases.held_bytes() if config.canvases else None)
    if passed.failed:  # unreadable images stay out of later rows; NaN outputs are this row's own
        failed_paths = {failure.path for failure in passed.failed}
        images = [(i, p) for i, p in images if str(p) not in failed_paths]
        skipped = skipped + list(passed.failed)
    row_skipped = skipped + list(passed.bad_outputs)
    if per_batch:
        notes.append(f"per-batch model: {Path(model_path).name}")
        flags.add("per-batch-model")
    if reused:
        notes.append("accuracy pass reused the resized images of an earlier row (no JPEG decoding in its e2e time)")
        flags.add("reused-images")
    if padded:
        notes.append(f"last batch padded from {len(passed.counted) % bs} to {bs} images; padding not counted")
        flags.add("padded")
    if row_skipped:
        notes.append(f"{len(row_skipped)} image(s) skipped (--skip-bad-images); mAP is over the remaining "
                     f"{len(passed.counted)}")
    timing_notes(stats, rule, loop_check, notes, flags)
    wall = passed.wall_seconds if config.accuracy is None else 0.0
    e2e_fps = round(len(passed.counted) / wall, 2) if wall > 0 else None
    notes += machine_notes(machine, stats.fps, e2e_fps, flags)
    timing = {**timing_fields(stats, rule, loop_check, target, config.warmup_seconds),
              "e2e_fps": e2e_fps, "machine_state": machine}
    measured = RowContext(dict(target=config.target, bs=bs, precision=precision,
                               batch_mode=describe_batch_mode(per_batch, target.model_batch, bs, target.batch_rewrite),
                               runtime=describe, batch_rewrite=target.batch_rewrite, **context),
                          notes, flags, list(row_skipped))
    saving = Saving(out_dir, config.save_detections, outputs)
    unmeasured = tuple(STAGES) if config.accuracy is not None else ()
    return build_row(measured, timing, passed, evaluation, saving, unmeasured), images, skipped


def measure(target, sample: np.ndarray, extras: dict | None, reference: list, config, progress, bs: int, watch=None):
    """Warm up and run the target's steady-state timing loop on one batch, checking the loop's own
    outputs against `reference` (infer() on the same batch); (stats, rule, loop check). `config`:
    a RunConfig or anything with its timing fields (harness.measure.bench.BenchConfig); `watch`: the row's
    machine watcher, whose "timing" window covers the loop."""
    rule = loop_rule(config)
    with progress.task(f"{config.target} bs={bs}: timing, {target.run_mode.summary()} ({rule.min_seconds:g}-"
                       f"{rule.max_seconds:g}s, to ±{rule.target_ci:.1%})", 1) as advance:
        warm_up(lambda: target.infer(sample, extras), config.warmup_seconds)
        with watch.window("timing") if watch is not None else contextlib.nullcontext():
            stats = target.benchmark(sample, rule, extras, capture=LOOP_CHECK_ITERATIONS)
        advance(1)
    return stats, rule, _loop_check(reference, stats.captured)


def timing_fields(stats, rule: LoopRule, loop_check: dict, target, warmup_seconds: float) -> dict:
    """The row's timing fields from one timing loop (the same for `run` and `bench` rows)."""
    run_mode = target.run_mode
    return {
        "fps": round(stats.fps, 2),
        **percentiles_ms(stats.latencies_ms),
        "fps_ci95": None if stats.ci95 is None else round(stats.ci95, 5),
        "fps_converged": stats.converged,
        "mode": run_mode.mode, "requests": run_mode.requests, "streams": run_mode.streams, "threads": run_mode.threads,
        "bench": {"iterations": len(stats.latencies_ms), "seconds": round(stats.seconds, 3),
                  "concurrency": stats.concurrency, "warmup_seconds": warmup_seconds,
                  "min_seconds": rule.min_seconds, "max_seconds": rule.max_seconds, "target_ci": rule.target_ci,
                  "loop_check": loop_check},
        "time_covers": target.time_covers,
        "target_figures": dict(stats.extra),
    }


def timing_notes(stats, rule: LoopRule, loop_check: dict, notes: list, flags: set) -> None:
    """What the row must say about its timing loop (not converged, outputs differing inside it)."""
    if stats.converged is False:
        ci = "undefined (too few iterations)" if stats.ci95 is None else f"±{stats.ci95:.1%}"
        notes.append(f"timing did not converge: throughput {ci} (95% CI) when the loop stopped after "
                     f"{stats.seconds:.0f}s, target ±{rule.target_ci:.1%}; the machine was busy or the speed drifts")
        flags.add("unconverged")
    if loop_check["equal"] is False:
        notes.append(f"outputs inside the timing loop differ from infer() on the same batch "
                     f"(max abs difference {loop_check['max_abs_diff']:.3g})")
        flags.add("loop-mismatch")


def machine_notes(machine, fps: float, e2e_fps: float | None, flags: set) -> list[str]:
    """Energy per image from the timing loop's counter; the busy-machine flag and note; why e2e img/s
    may read above infer img/s. Sets the flag in `flags`, returns the notes."""
    notes = []
    if machine.timing is not None:
        _, machine.joules_per_image, machine.fps_per_watt = energy_figures(machine.timing.energy_j,
                                                                           machine.timing.seconds, fps)
        machine.joules_per_image = None if machine.joules_per_image is None else round(machine.joules_per_image, 5)
        machine.fps_per_watt = None if machine.fps_per_watt is None else round(machine.fps_per_watt, 3)
    busy = busy_windows({"timing": machine.timing, "accuracy": machine.accuracy}, machine.busy_share)
    if busy:
        flags.add("busy-machine")
        notes.append(busy_note(busy, machine.busy_share))
    above = e2e_above_infer_note(fps, e2e_fps, machine.timing, machine.accuracy)
    if above:
        notes.append(above)
    return notes


def _check_covers(passed: PassResult, images) -> None:
    """A pass made elsewhere must account for each of the row's images once (counted, unreadable or with
    NaN outputs): the row's dataset is the one the pass ran over."""
    left_out = {f.path for f in (*passed.failed, *passed.bad_outputs)}
    covered = sorted([*passed.counted, *(i for i, p in images if str(p) in left_out)])
    if covered != sorted(i for i, _ in images):
        raise HarnessError(f"the accuracy pass made on other workers covers {len(covered)} image(s), this row's "
                           f"dataset has {len(images)}: are the dataset's files the same on every node?")


def _capture_outputs(config: RunConfig, target, images, bs: int):
    """--save-outputs N: the raw outputs of the first N images (None when not asked for)."""
    if not config.save_outputs:
        return None
    from harness.measure.capture import capture_outputs

    return capture_outputs(target, images, config.save_outputs, bs, config.profile, target.output_names())


def describe_batch_mode(per_batch: bool, model_batch: int | None, bs: int, rewrite: dict | None = None) -> str:
    """How the batch size was obtained: one model per size, a dynamic axis, the model's fixed
    batch, a fixed batch-1 graph reshaped (OpenVINO) or rewritten to batch N (harness.model.batch_rewrite)."""
    if per_batch:
        return "per-batch model"
    if rewrite:
        return "rewritten"
    if model_batch is None:
        return "dynamic"
    return "fixed" if model_batch == bs else "reshaped"


def _check_outputs(target, sample: np.ndarray, metas, model_path: str, extras: dict | None) -> list[np.ndarray]:
    """Decode one real batch before timing anything, so a model/profile mismatch fails fast; returns
    the outputs (the reference for the timing loop's check)."""
    outputs = target.infer(sample, extras)
    try:
        decode(outputs, metas, target.profile)
    except HarnessError as exc:
        raise HarnessError(f"model {Path(model_path).name} and profile {target.profile.name} do not fit: {exc}") from None
    return [np.array(o, copy=True) for o in outputs]


def _loop_check(reference: list[np.ndarray], captured: list) -> dict:
    """Did the timing loop compute what infer() computes on the same batch? (MLPerf's TEST01 idea:
    a loop that skipped work, or ran on stale buffers, would be fast and wrong.)"""
    if not captured:
        return {"captured": 0, "equal": None, "max_abs_diff": None}
    worst = 0.0
    for outputs in captured:
        if len(outputs) != len(reference):
            return {"captured": len(captured), "equal": False, "max_abs_diff": float("inf")}
        for got, want in zip(outputs, reference):
            got, want = np.asarray(got), np.asarray(want)
            if got.shape != want.shape:
                return {"captured": len(captured), "equal": False, "max_abs_diff": float("inf")}
            if got.size:
                worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return {"captured": len(captured), "equal": worst == 0.0, "max_abs_diff": worst}

