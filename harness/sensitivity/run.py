"""The `harness sensitivity` flow: check the inputs, calibrate once, measure, restore, write.

    calibrate (harness.quant.calibrate)        once; every variant reuses its ranges (write_qdq, ~1-2 s)
    references: fp32 and all-int8             subset mAP, COCO matches, img/s on the target
    shortlist                                 tensor error (qdq_loss_debug) + structure -> top_k nodes
    variants: exclude / include per node      ΔmAP with a paired bootstrap interval each
    greedy restore to --max-drop              mAP and img/s per step; the Pareto table
    outputs                                   sensitivity.csv/.md, pareto.png, exclude.txt, model.qdq.onnx

All of it under a lock on --out (harness.core.folders), as every command that writes a folder.

Every finished measurement is in the results file (harness.sensitivity.store) before the next
starts, so Ctrl-C loses at most one and `--resume` picks up the rest.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import __version__
from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_text, input_file
from harness.core.folders import OutputFolder
from harness.core.progress import NullProgress
from harness.data.coco import check_categories, load_dataset
from harness.measure import identity as ident
from harness.measure.canvases import CanvasCache
from harness.profiles import Profile
from harness.quant import calibrate, write_qdq
from harness.quant.calib_data import calibration_batches, calibration_images
from harness.quant.manifest import QUANT_FILE, to_json
from harness.quant.run import QDQ_FILE, qdq_record
from harness.sensitivity.outputs import write_outputs
from harness.sensitivity.scoring import PairedDelta, Scorer
from harness.sensitivity.search import (
    SearchSettings,
    Step,
    drop_holds,
    float_set,
    restore_order,
    step_key,
    type_groups,
    variant_key,
)
from harness.sensitivity.shortlist import shortlist
from harness.sensitivity.store import ResultsFile
from harness.sensitivity.structure import describe_nodes
from harness.sensitivity.tensor_error import probe


@dataclass(frozen=True)
class SensitivityRequest:
    model: Path
    profile: Profile
    calib: Path
    data: Path
    ann: Path
    out: Path
    settings: SearchSettings = SearchSettings()
    resume: bool = False
    overwrite: bool = False
    cluster: str | None = None  # a Ray address: variants are scored on its CPU workers (docs/cluster.md)
    shards: int = 1  # with cluster: each variant's accuracy pass in this many shards (harness.cluster.shards)
    #: where Q/DQ variants are kept between searches (harness.quant.variant_cache); None: written afresh each time
    variant_cache: Path | None = None


@dataclass
class SearchResult:
    """Everything the outputs are written from (harness.sensitivity.outputs)."""

    request: SensitivityRequest
    references: dict[str, dict]  # fp32 / int8 -> record (map, fps, ...)
    nodes: list[dict]  # every quantized node: name, op type, kind, SQNRs, structure
    shortlisted: list[str]
    groups: dict[str, tuple[str, ...]]  # group (a shortlisted node, or type:<op>) -> its nodes
    variants: dict[str, dict[str, dict | None]]  # group -> mode -> variant record
    steps: list[Step]
    floated: tuple[str, ...]  # the final exclude list, graph order
    conv_total: int
    convs_int8_all: int  # Convs with Q/DQ in the all-int8 model
    convs_int8_final: int
    int8_comparison: PairedDelta  # all-int8 vs fp32 on the subset
    final_map: float | None
    final_comparison: PairedDelta
    goal_met: bool
    seconds: float
    subset_images: int = 0
    calib_images: int = 0
    model_file: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)  # what was written to --out
    variants_written: int = 0  # Q/DQ files written by this search (the rest came from the variant cache)
    variants_cached: int = 0


def check_request(req: SensitivityRequest) -> None:
    """Cheap checks before any slow work, one clear line each (settings are checked by harness.core.config)."""
    input_file(req.model, "model")
    if Path(req.model).suffix.lower() != ".onnx":
        raise HarnessError(f"model {req.model}: harness sensitivity takes an fp32 .onnx file")
    from harness.core.config import did_you_mean
    from harness.targets import TARGETS

    able = [name for name, cls in TARGETS.items() if cls.runs_qdq_onnx]  # the targets that declare it
    if req.settings.target not in able:
        raise HarnessError(f"harness sensitivity: --target = {req.settings.target!r}: expected one of "
                           f"{', '.join(able)}{did_you_mean(req.settings.target, able)}")
    from harness.npu.prep import check_model_input, onnx_io

    check_model_input(req.model, onnx_io(req.model)[0], req.profile.input, req.profile.name)


def run_sensitivity(req: SensitivityRequest, progress=None) -> SearchResult:
    started = time.perf_counter()
    progress = progress or NullProgress()
    settings = req.settings
    check_request(req)
    dataset = load_dataset(req.data, req.ann, settings.subset)
    check_categories(dataset.ann, req.profile.category_ids, req.profile.name, Path(req.ann))
    calib = calibration_images(req.calib, settings.calib_images)
    for warning in calib.warnings:
        progress.message(f"warning: {warning}")
    overlap = {p.name for _, p in dataset.images} & {p.name for p in calib.files}
    if overlap:
        progress.message(f"note: {len(overlap)} subset image(s) are also calibration images (e.g. {min(overlap)}); "
                         "the final rows should be evaluated on other images")
    scorer = Scorer(settings.target, req.profile, dataset.images, dataset.ann, settings.resamples,
                    settings.bench_seconds)
    identity = {
        "model_sha256": ident.model_sha256(req.model), "profile_sha256": req.profile.content_hash,
        "calibration": {**calib.identity(), "folder": None, "method": settings.method,
                        "per_channel": settings.per_channel},
        "dataset": ident.dataset_identity(req.ann, dataset.images, dataset.content), "target": settings.target,
        "options": {"resamples": settings.resamples, "sqnr_images": settings.sqnr_images, "top_k": settings.top_k,
                    "type_groups": settings.type_groups},
        "harness": __version__, "runtime": scorer.target_cls.availability()[1],
    }
    with OutputFolder(req.out, "--out") as folder:  # one command at a time on this folder
        store = ResultsFile.open(folder, identity, req.resume, req.overwrite)
        if store.records:
            progress.message(f"resuming: {len(store.records)} finished measurement(s) in {store.path}")
        with progress.task(f"calibrating on {len(calib.files)} images", len(calib.files)) as advance:
            cal = calibrate(req.model, calib, req.profile.input, settings.method, advance=advance)
        with cal:
            cache = None
            if req.variant_cache is not None:
                from harness.quant.variant_cache import VariantCache

                cache = VariantCache(req.variant_cache, identity["model_sha256"], cal, settings.per_channel)
            result = _search(req, cal, scorer, store, calib, progress, started, cache)
        result.files = write_outputs(result)
    return result


def _search(req, cal, scorer: Scorer, store: ResultsFile, calib, progress, started: float,
            cache=None) -> SearchResult:
    settings = req.settings
    work = cal.cache_path.parent
    quantized = cal.placement.quantized
    write_seconds: list[float] = []
    written = [0]

    def write(name: str, floated) -> Path:
        """The Q/DQ file keeping `floated` in float: from the variant cache, or written (and timed)."""
        t0 = time.perf_counter()
        if cache is not None:
            before = cache.writes
            path = cache.get(floated)
            if cache.writes > before:
                write_seconds.append(time.perf_counter() - t0)
            return path
        path = write_qdq(cal, work / f"{name}.onnx", floated, settings.per_channel).path
        write_seconds.append(time.perf_counter() - t0)
        written[0] += 1
        return path

    # references ----------------------------------------------------------------------------------
    references, matches = {}, {}
    for name in ("fp32", "int8"):
        record, detections = store.get(f"reference:{name}"), store.load_reference(name)
        if record is None or detections is None:
            with progress.task(f"{settings.target}: {name} reference on {len(scorer.images)} images", 1) as advance:
                path = cal.prepared.path if name == "fp32" else write("int8", ())
                measured = scorer.measure(path, bench=True)
                advance(1)
            store.save_reference(name, scorer.images, measured.detections)
            record = store.add({"kind": "reference", "key": f"reference:{name}", "map": measured.map,
                                "fps": measured.fps, "seconds": measured.seconds})
            detections = measured.detections
        references[name] = record
        matches[name] = scorer.matches_of(detections)
    fp32_map = references["fp32"]["map"]
    progress.message(f"subset mAP: fp32 {_fmt(fp32_map)}, all-int8 {_fmt(references['int8']['map'])} "
                     f"({len(quantized)} quantized nodes, {settings.target})")

    # shortlist -----------------------------------------------------------------------------------
    nodes_record = store.get("shortlist")
    if nodes_record is None:
        with progress.task(f"tensor error on {min(settings.sqnr_images, len(calib.files))} images", 1) as advance:
            batches = list(calibration_batches(calibration_images(req.calib, settings.sqnr_images), req.profile.input,
                                               cal.prepared.batch))
            found = probe(cal.prepared.path, write("probe", ()), batches, cal.prepared.input_name, work)
            advance(1)
        from harness.model.onnx_model import load_graph

        shapes = describe_nodes(load_graph(cal.prepared.path), quantized, found.float_activations,
                                found.activation_inputs, found.scales)
        short = shortlist(quantized, shapes, found.errors, settings.top_k)
        nodes = []
        for name in quantized:
            error, shape = found.errors.get(name), shapes[name]
            nodes.append({"name": name, "op_type": shape.op_type, "kind": shape.kind, "head": shape.head,
                          "crushed": shape.crushed, "outlier": shape.outlier,
                          "activation_db": error.activation_db if error else None,
                          "local_db": error.local_db if error else None,
                          "weight_db": error.weight_db if error else None,
                          "sqnr_db": error.worst_db if error else None})
        reasons = {c.name: list(c.reasons) for c in short}
        nodes_record = store.add({"kind": "shortlist", "key": "shortlist", "nodes": _finite(nodes),
                                  "shortlist": [c.name for c in short], "reasons": reasons})
    shortlisted = nodes_record["shortlist"]

    # variants ------------------------------------------------------------------------------------
    op_types = dict(cal.node_types())
    groups = {name: (name,) for name in shortlisted}
    if settings.type_groups:
        groups.update(type_groups(quantized, op_types))
    plan = [(group, mode) for group in groups for mode in settings.modes]
    todo = [(g, m) for g, m in plan if store.get(variant_key(m, g)) is None]
    # an exclude variant is nearly the all-int8 model, an include variant nearly fp32: each costs about
    # its reference's pass, plus writing the Q/DQ file
    write_time = float(np.mean(write_seconds)) if write_seconds else 2.0
    pass_time = {"exclude": references["int8"]["seconds"], "include": references["fp32"]["seconds"]}
    estimate = sum(pass_time[mode] + write_time for _, mode in todo)
    progress.message(f"{len(plan)} variants of {len(groups)} groups ({len(plan) - len(todo)} already measured): "
                     f"about {estimate / 60:.1f} min (as the references took: {pass_time['exclude']:.1f} s per "
                     f"exclude and {pass_time['include']:.1f} s per include variant, {write_time:.1f} s per Q/DQ "
                     "file), then the greedy restore")
    with progress.task(f"variants ({settings.mode})", len(plan)) as advance:
        advance(len(plan) - len(todo))
        def record(group, mode, measured):
            reference = matches["int8"] if mode == "exclude" else matches["fp32"]
            compared = scorer.compare(reference, measured.matches)
            store.add({"kind": "variant", "key": variant_key(mode, group), "mode": mode, "node": group,
                       "members": list(groups[group]), "map": measured.map, "delta": compared.delta,
                       "low": compared.low, "high": compared.high, "seconds": measured.seconds})
            advance(1)

        if req.cluster:  # every variant file first, then scored on the cluster's CPU workers as they come back
            paths = {f"{m} variant {g}": write(f"{m}-variant-{i}", float_set(m, groups[g], quantized))
                     for i, (g, m) in enumerate(todo)}
            by_label = {f"{m} variant {g}": (g, m) for g, m in todo}
            for label, measured in _scored_on_cluster(req, scorer, paths):
                record(*by_label[label], measured)
                if cache is None:  # a cached variant stays for the next search
                    paths[label].unlink(missing_ok=True)
        else:
            for group, mode in todo:
                record(group, mode, scorer.measure(write(f"{mode}-variant", float_set(mode, groups[group], quantized))))
    variants = {group: {mode: store.get(variant_key(mode, group)) for mode in settings.modes} for group in groups}

    # greedy restore ------------------------------------------------------------------------------
    steps: list[Step] = []
    floated: list[str] = []
    current = references["int8"]["map"]
    order = restore_order(variants)
    if not drop_holds(fp32_map, current, settings.max_drop) and order:
        with progress.task(f"greedy restore to a drop <= {settings.max_drop}", len(order)) as advance:
            for group in order:
                new = [n for n in groups[group] if n not in floated]
                if drop_holds(fp32_map, current, settings.max_drop):
                    break
                if not new:  # already in float through a group restored earlier
                    advance(1)
                    continue
                trial = [*floated, *new]
                record = store.get(step_key(trial))
                if record is None:
                    path = write("step", trial)
                    if req.cluster and req.shards > 1:  # the pass in shards on the workers, the img/s here
                        [(_, measured)] = _scored_on_cluster(req, scorer, {f"greedy step {len(steps) + 1}": path})
                        measured.fps = scorer.bench(path)
                    else:
                        measured = scorer.measure(path, bench=True)
                    compared = scorer.compare(matches["fp32"], measured.matches)
                    record = store.add({"kind": "step", "key": step_key(trial), "float": trial, "added": group,
                                        "map": measured.map, "fps": measured.fps, "delta": compared.delta,
                                        "low": compared.low, "high": compared.high, "seconds": measured.seconds})
                kept = record["map"] is not None and (current is None or record["map"] > current)
                steps.append(Step.from_record(record, group, kept))
                if kept:
                    floated, current = trial, record["map"]
                advance(1)

    # final model ---------------------------------------------------------------------------------
    order_in_graph = {name: i for i, (name, _) in enumerate(cal.node_types())}
    floated_sorted = tuple(sorted(floated, key=order_in_graph.__getitem__))
    final = write_qdq(cal, Path(req.out) / QDQ_FILE, floated_sorted, settings.per_channel)
    exclusions = {"nodes": list(floated_sorted), "by_rule": {"harness sensitivity": list(floated_sorted)},
                  "rules": {"from_file": "exclude.txt"}}
    atomic_write_text(Path(req.out) / QUANT_FILE,
                      to_json(qdq_record(cal, final, exclusions, req.profile.name, settings.per_channel)))
    convs = [n for n, t in op_types.items() if t == "Conv"]
    last = next((s for s in reversed(steps) if s.kept), None)
    final_map = last.map if last else references["int8"]["map"]
    int8_comparison = scorer.compare(matches["fp32"], matches["int8"])
    final_comparison = PairedDelta(last.delta, last.low, last.high) if last else int8_comparison
    return SearchResult(
        request=req, references=references, nodes=nodes_record["nodes"], shortlisted=shortlisted, groups=groups,
        variants=variants,
        steps=steps, floated=floated_sorted, conv_total=len(convs),
        convs_int8_all=sum(1 for n in quantized if op_types[n] == "Conv"),
        convs_int8_final=sum(1 for n in final.quantized_nodes if op_types[n] == "Conv"),
        int8_comparison=int8_comparison, final_map=final_map, final_comparison=final_comparison,
        goal_met=drop_holds(fp32_map, final_map, settings.max_drop), seconds=time.perf_counter() - started,
        subset_images=len(scorer.images), calib_images=len(calib.files), model_file=final.path,
        variants_written=cache.writes if cache is not None else written[0],
        variants_cached=cache.hits if cache is not None else 0)


CLUSTER_TIMEOUT_S = 24 * 3600.0  # the whole variant fan-out (a bound, not a schedule)


def _scored_on_cluster(req: SensitivityRequest, scorer: Scorer, paths: dict[str, Path]):
    """Each model of `paths` (label -> file) scored on the cluster's CPU workers, its pass in req.shards
    shards of the subset (harness.cluster.shards.shard_images); yields (label, Measured) as each model's
    last shard comes back, its detections merged in subset order and scored once, here."""
    from harness.cluster import fan_out
    from harness.cluster.shards import shard_images

    parts = shard_images(scorer.images, req.shards, 1)  # the scorer's batch is 1
    items, by_name = [], {}
    for label, path in paths.items():
        for index, part in enumerate(parts):
            name = label + (f" (shard {index + 1} of {len(parts)})" if len(parts) > 1 else "")
            items.append((name, (path, part)))
            by_name[name] = (label, index)
    done: dict[str, dict] = {}
    shipped = copy.copy(scorer)
    shipped.canvases = None  # the head's resized images stay here: each worker keeps its own (_detect)
    for name, shard in fan_out(req.cluster, _detect, shipped, items, timeout=CLUSTER_TIMEOUT_S):
        label, index = by_name[name]
        done.setdefault(label, {})[index] = shard
        if len(done[label]) == len(parts):
            finished = done.pop(label)
            ordered = [finished[i] for i in range(len(parts))]
            yield label, scorer.score([d for detections, _ in ordered for d in detections],
                                      sum(seconds for _, seconds in ordered))


#: on a cluster worker: the subset's resized images, kept across the tasks the worker process runs
_WORKER_CANVASES: CanvasCache | None = None


def _detect(scorer: Scorer, path: Path, images: list) -> tuple[list[dict], float]:
    """On a cluster worker: one variant's accuracy pass over a shard of the subset (Scorer.detect), the
    runtime's threads bounded by the task's CPUs (harness.cluster.shards.task_options). The resized images
    are the worker's own, kept for its next task: the head's (the whole subset, 133 MB at 256 images of
    416x416) sent with every task cost more than the variants' inference, and 2 workers were no faster
    than 1."""
    global _WORKER_CANVASES
    from harness.cluster.shards import task_options

    if _WORKER_CANVASES is None:
        _WORKER_CANVASES = CanvasCache()
    scorer = copy.copy(scorer)
    scorer.options = task_options(scorer.target_cls, scorer.options)
    scorer.canvases = _WORKER_CANVASES.store_for(scorer.profile.input, len(scorer.images))
    return scorer.detect(path, images)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _finite(rows: list[dict]) -> list[dict]:
    """JSON has no infinity (an exact tensor gives SQNR +inf): such values are written as 999 dB."""
    out = []
    for row in rows:
        out.append({k: (999.0 if isinstance(v, float) and np.isinf(v) else v) for k, v in row.items()})
    return out
