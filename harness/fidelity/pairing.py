"""Which row is whose reference, and the full comparison of each row against it.

Input: the rows of several results.json files (harness.report.compare.load_sources, called by the
command, so this layer does not import the reports), with their saved artefacts. The reference is one
(target, precision), `ort:fp32` by default; each other row is compared with the reference row of the
same profile, preferring the same annotations, model, batch size and machine in that order. Missing
or mismatched reference artefacts are refused with one line; a candidate row that saved nothing, or
that failed, is listed as not compared (and fails a --fail-if gate). Failed rows are never references.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.core.errors import HarnessError
from harness.decode.agreement import DetectionAgreement, agreement
from harness.fidelity.bootstrap import AREAS, RESAMPLES, SEED, BootstrapResult, paired_bootstrap
from harness.fidelity.cocomatch import CocoMatches, coco_matches, ground_truth
from harness.fidelity.delta_ap import DeltaAP, delta_ap
from harness.fidelity.gate import failing_comparisons, gate_names, parse_gate
from harness.fidelity.tensors import OutputError, tensor_errors
from harness.measure.artifacts import (
    SavedDetections,
    SavedOutputs,
    check_row_detections,
    check_row_file,
    read_detections,
    read_outputs,
    row_artifact_path,
)
from harness.measure.row import ResultRow


class RowSource(Protocol):
    """What fidelity needs of one input file (harness.report.compare.Source has it)."""

    path: str
    rows: list[ResultRow]

    def machine_of(self, row: ResultRow) -> str:
        """The label of the machine the row ran on (a cluster row's worker, not the file's host)."""


@dataclass
class RowRef:
    results: Path  # the results.json holding the row
    row: ResultRow
    machine: str = ""

    @property
    def label(self) -> str:
        r = self.row
        return f"{r.target} {r.precision or 'fp32'} bs {r.bs} ({Path(str(r.model)).name})"

    @property
    def where(self) -> str:
        return f"{self.label} in {self.results}"


@dataclass
class RowFidelity:
    row: RowRef
    reference: RowRef
    images: int
    bootstrap: BootstrapResult
    agreement: DetectionAgreement
    delta_ap: DeltaAP
    tensors: list[OutputError] | None  # None when the candidate saved no outputs
    tensor_images: int = 0
    tensor_note: str = ""
    gate_failures: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float | None]:
        """The named figures a --fail-if gate can test (see gate.GATE_FIGURES); None where undefined."""
        b, a = self.bootstrap, self.agreement
        out = {"dmap": b.delta["map"], "dmap_lo": b.interval["map"][0], "dmap_hi": b.interval["map"][1],
               "dmap50": b.delta["map50"], "agreement": a.matched_fraction, "missed": float(a.missed),
               "extra": float(a.extra), "flips": float(a.flips), "mean_iou": a.mean_iou,
               "dscore": a.mean_abs_dscore}
        if self.tensors:
            out |= {"sqnr": min(e.sqnr_db for e in self.tensors), "cosine": min(e.cosine for e in self.tensors),
                    "max_abs": max(e.max_abs for e in self.tensors), "p99_abs": max(e.p99_abs for e in self.tensors)}
            if any(math.isnan(e.sqnr_db) for e in self.tensors):  # min/max skip NaN order-dependently
                out |= dict.fromkeys(("sqnr", "cosine", "max_abs", "p99_abs"), math.nan)
        return out


@dataclass
class FidelityReport:
    reference: ReferenceSpec
    rows: list[RowFidelity]
    not_compared: list[tuple[RowRef, str]]
    gate: str | None = None

    @property
    def gate_failed(self) -> bool:
        return bool(self.gate) and (any(r.gate_failures for r in self.rows) or bool(self.not_compared))


@dataclass(frozen=True)
class ReferenceSpec:
    """--reference TARGET[:PRECISION][@MODEL]: which rows serve as references."""

    target: str
    precision: str
    model: str | None = None  # a model file name or path; None = any model

    def matches(self, row: ResultRow) -> bool:
        if (row.target, row.precision or "fp32") != (self.target, self.precision):
            return False
        model = str(row.model or "")
        return self.model is None or self.model in (model, Path(model).name)

    def __str__(self) -> str:
        return f"{self.target} {self.precision}" + (f" ({self.model})" if self.model else "")


def parse_reference(text: str | None, rows: list[RowRef]) -> ReferenceSpec:
    """The reference spec; default ort:fp32, else ov:fp32. One line when none of `rows` (those that
    finished: status ok) fits."""
    if text:
        head, _, model = text.partition("@")
        target, _, precision = head.partition(":")
        spec = ReferenceSpec(target.strip(), precision.strip() or "fp32", model.strip() or None)
        if not any(spec.matches(r.row) for r in rows):
            shown = ", ".join(sorted({f"{r.row.target}:{r.row.precision or 'fp32'}@{Path(str(r.row.model)).name}"
                                      for r in rows}))
            raise HarnessError(f"--reference {text}: no such row finished in the inputs (rows that did: {shown or 'none'})")
        return spec
    from harness.targets import reference_order

    order = reference_order()  # the targets' declared reference_rank
    for target in order:
        spec = ReferenceSpec(target, "fp32")
        if any(spec.matches(r.row) for r in rows):
            return spec
    raise HarnessError(f"--fidelity: no finished {' or '.join(f'{t} fp32' for t in order)} row to use as the "
                       "reference; pass --reference TARGET[:PRECISION][@MODEL]")


def _pick_reference(row: RowRef, refs: list[RowRef]) -> RowRef | None:
    pool = [r for r in refs if r.row.profile == row.row.profile]
    if not pool:
        return None

    def score(ref: RowRef) -> tuple:
        return (ref.row.annotations != row.row.annotations, ref.row.model != row.row.model,
                ref.row.bs != row.row.bs, ref.machine != row.machine, int(ref.row.bs or 0), str(ref.results))

    return min(pool, key=score)


class _Cache:
    """Files and evaluations shared by the rows of one report (a reference serves many rows)."""

    def __init__(self, ann_override: Path | None):
        self.ann_override = ann_override
        self.detections: dict[Path, SavedDetections] = {}
        self.outputs: dict[Path, SavedOutputs] = {}
        self.ann: dict[str, dict] = {}
        self.evaluators: dict[str, object] = {}
        self.ground_truths: dict[str, object] = {}
        self.matches: dict[tuple, CocoMatches] = {}
        self.metrics: dict[tuple, dict] = {}

    def read_detections(self, path: Path) -> SavedDetections:
        if path not in self.detections:
            self.detections[path] = read_detections(path)
        return self.detections[path]

    def read_outputs(self, path: Path) -> SavedOutputs:
        if path not in self.outputs:
            self.outputs[path] = read_outputs(path)
        return self.outputs[path]

    def annotations(self, ref: RowRef) -> tuple[str, dict]:
        from harness.data.annotations import load_annotations

        path = str(self.ann_override or ref.row.annotations or "")
        if not path:
            raise HarnessError(f"reference row {ref.where} records no annotations file; pass --ann")
        if path not in self.ann:
            if not Path(path).is_file():
                raise HarnessError(f"annotation file {path} (of reference row {ref.where}) not found; "
                                   "pass --ann with its current path")
            self.ann[path] = load_annotations(path)
        return path, self.ann[path]

    def evaluator(self, key: str, ann: dict):
        from harness.measure.evaluate import CocoEvaluator

        if key not in self.evaluators:
            self.evaluators[key] = CocoEvaluator(ann)
        return self.evaluators[key]

    def reference_metrics(self, ann_key: str, ann: dict, det_path: Path, dets: SavedDetections, ids) -> dict:
        """The evaluator's metrics of a reference's detections, once per (annotations, file, images)."""
        key = (ann_key, det_path, tuple(ids))
        if key not in self.metrics:
            self.metrics[key] = self.evaluator(ann_key, ann).evaluate(dets.detections, sorted(int(i) for i in ids))
        return self.metrics[key]

    def coco_matches(self, ann_key: str, ann: dict, det_path: Path, dets: SavedDetections, ids) -> CocoMatches:
        key = (ann_key, det_path, tuple(ids))
        if key not in self.matches:
            if ann_key not in self.ground_truths:
                self.ground_truths[ann_key] = ground_truth(ann)
            self.matches[key] = coco_matches(self.ground_truths[ann_key], dets.detections, ids, AREAS)
        return self.matches[key]


def _check_same_images(ref: SavedDetections, cand: SavedDetections, ref_row: RowRef, row: RowRef) -> None:
    if ref.images != cand.images:
        only_ref = sorted(set(ref.images.items()) - set(cand.images.items()))[:3]
        only_cand = sorted(set(cand.images.items()) - set(ref.images.items()))[:3]
        raise HarnessError(
            f"{row.where} and its reference {ref_row.where} ran different images ({len(cand.images)} vs "
            f"{len(ref.images)}; only in the reference: {only_ref or 'none'}, only in the row: {only_cand or 'none'}); "
            "fidelity compares rows on the same images")


def compare_row(row: RowRef, ref: RowRef, cache: _Cache, resamples: int = RESAMPLES, seed: int = SEED) -> RowFidelity:
    ref_det_path = row_artifact_path(ref.results, ref.row, "detections")
    if ref_det_path is None:
        raise HarnessError(f"reference row {ref.where} has no saved detections; rerun it with --save-detections")
    cand_det_path = row_artifact_path(row.results, row.row, "detections")
    ref_dets, cand_dets = cache.read_detections(ref_det_path), cache.read_detections(cand_det_path)
    check_row_detections(ref_dets, ref_det_path, ref.row, f"reference row {ref.where}")
    check_row_detections(cand_dets, cand_det_path, row.row, f"row {row.where}")
    _check_same_images(ref_dets, cand_dets, ref, row)
    ann_key, ann = cache.annotations(ref)
    known = {int(im["id"]) for im in ann["images"]}
    unknown = sorted(set(ref_dets.images) - known)
    if unknown:
        raise HarnessError(f"{ref_det_path}: image id(s) {unknown[:5]} are not in the annotation file {ann_key}")
    ids = sorted(ref_dets.images)
    ref_m = cache.coco_matches(ann_key, ann, ref_det_path, ref_dets, ids)
    cand_m = cache.coco_matches(ann_key, ann, cand_det_path, cand_dets, ids)
    boot = paired_bootstrap(ref_m, cand_m, resamples=resamples, seed=seed)
    agree = agreement(ref_dets, cand_dets)
    dap = delta_ap(cache.evaluator(ann_key, ann), ref_dets.detections, cand_dets.detections, ids,
                   cache.reference_metrics(ann_key, ann, ref_det_path, ref_dets, ids))
    result = RowFidelity(row, ref, len(ids), boot, agree, dap, None)
    cand_out_path = row_artifact_path(row.results, row.row, "outputs")
    ref_out_path = row_artifact_path(ref.results, ref.row, "outputs")
    if cand_out_path is None:
        result.tensor_note = "the row saved no outputs (--save-outputs N)"
    elif ref_out_path is None:
        raise HarnessError(f"reference row {ref.where} has no saved outputs but {row.where} has; "
                           "rerun the reference with --save-outputs N")
    else:
        ref_out, cand_out = cache.read_outputs(ref_out_path), cache.read_outputs(cand_out_path)
        check_row_file(ref_out_path, ref.row, "outputs", f"reference row {ref.where}")
        check_row_file(cand_out_path, row.row, "outputs", f"row {row.where}")
        result.tensors = tensor_errors(ref_out, cand_out, ref.label, row.label)
        result.tensor_images = len(ref_out.image_ids)
    return result


def fidelity_report(sources: Iterable[RowSource], reference: str | None = None, fail_if: str | None = None,
                    ann_path: str | Path | None = None, resamples: int = RESAMPLES, seed: int = SEED) -> FidelityReport:
    """Compare every non-reference row of the sources (harness.report.compare.load_sources) with its
    reference row."""
    gate = parse_gate(fail_if) if fail_if is not None else None  # a bad expression fails before any work
    rows = [RowRef(Path(s.path), r, s.machine_of(r)) for s in sources for r in s.rows]
    finished = [r for r in rows if r.row.ok]  # failed and partial rows saved no artefacts
    spec = parse_reference(reference, finished)
    refs = [r for r in finished if spec.matches(r.row)]
    cache = _Cache(Path(ann_path) if ann_path else None)
    report = FidelityReport(spec, [], [], fail_if)
    for row in rows:
        if row.row.ok and spec.matches(row.row):
            continue
        if not row.row.ok:
            report.not_compared.append((row, f"the row is {row.row.status}: {row.row.error or 'no reason recorded'}"))
            continue
        ref = _pick_reference(row, refs)
        if ref is None:
            report.not_compared.append((row, f"no {spec} row with profile {row.row.profile}"))
            continue
        if row_artifact_path(row.results, row.row, "detections") is None:
            report.not_compared.append((row, "no saved detections (run with --save-detections)"))
            continue
        result = compare_row(row, ref, cache, resamples, seed)
        if gate is not None:
            figures = result.figures()
            absent = sorted(gate_names(gate) - set(figures))
            if absent:
                raise HarnessError(f"--fail-if uses {', '.join(absent)}, which {row.where} lacks "
                                   f"({result.tensor_note or 'no saved outputs'})")
            if gate.holds(figures):
                result.gate_failures = failing_comparisons(gate, figures) or ["expression holds"]
        report.rows.append(result)
    if not report.rows and not report.not_compared:
        raise HarnessError(f"--fidelity: every row is a {spec} reference row; nothing to compare")
    return report

