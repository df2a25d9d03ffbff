"""ΔAP per class and per object size between two rows' detections on the same images.

Both rows are scored by the project's COCO evaluator (harness.measure.evaluate: faster-coco-eval when
installed, else pycocotools); this module only subtracts and sorts.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.measure.evaluate import CocoEvaluator

SIZES = ("small", "medium", "large")


@dataclass
class ClassDelta:
    name: str
    reference: float
    candidate: float

    @property
    def delta(self) -> float:
        return self.candidate - self.reference


@dataclass
class DeltaAP:
    evaluator: str
    per_class: list[ClassDelta]   # classes scored in both rows, largest loss first
    per_size: dict[str, ClassDelta]  # small / medium / large (only sizes with ground truth on these images)


def delta_ap(evaluator: CocoEvaluator, ref_dets: list[dict], cand_dets: list[dict], image_ids,
             ref_metrics: dict | None = None) -> DeltaAP:
    """Per-class and per-size AP of both rows and their differences. A size without ground truth on
    these images is undefined (None) in the evaluator's metrics and left out: there is nothing to lose.
    ref_metrics: the reference's evaluation on these images when the caller has it (a reference serves
    many rows: it is scored once)."""
    ids = sorted(int(i) for i in image_ids)
    ref = ref_metrics if ref_metrics is not None else evaluator.evaluate(ref_dets, ids)
    cand = evaluator.evaluate(cand_dets, ids)
    ref_ap, cand_ap = ref["per_class_ap"], cand["per_class_ap"]
    # The evaluator lists no classes for a row without any detection: each class scores 0 there.
    if not ref_dets:
        ref_ap = dict.fromkeys(cand_ap, 0.0)
    if not cand_dets:
        cand_ap = dict.fromkeys(ref_ap, 0.0)
    common = sorted(set(ref_ap) & set(cand_ap))
    per_class = [ClassDelta(c, ref_ap[c], cand_ap[c]) for c in common]
    per_class.sort(key=lambda d: (d.delta, d.name))
    # Both rows are scored on the same ground truth, so a size is undefined in both or in neither.
    per_size = {s: ClassDelta(s, ref[f"map_{s}"], cand[f"map_{s}"]) for s in SIZES
                if ref[f"map_{s}"] is not None and cand[f"map_{s}"] is not None}
    return DeltaAP(evaluator.backend, per_class, per_size)
