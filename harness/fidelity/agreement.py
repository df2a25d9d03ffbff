"""Detection agreement: does the candidate row find the same confident boxes as the reference row?

Per image, the confident detections of both rows (score >= 0.3) are paired greedily, highest IoU
first, among pairs of the same class with IoU >= 0.5. A reference box left unpaired is *missed*, a
candidate box left unpaired is *extra*; an extra and a missed box of different classes that overlap
at IoU >= 0.5 (paired greedily again) are a *class flip*, counted in both. Written here by hand:
COCO evaluators match detections to ground truth (crowd rules, area ranges, one score order), and no
well-kept library pairs two detection sets class-aware and reports flips; pycocotools' bbox IoU is
used for the overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from harness.measure.artifacts import SavedDetections

SCORE_THRESHOLD = 0.3
IOU_THRESHOLD = 0.5
WORST_IMAGES = 10


@dataclass
class ImageAgreement:
    image_id: int
    file_name: str
    reference: int  # confident reference detections
    candidate: int  # confident candidate detections
    matched: int
    missed: int
    extra: int
    flips: int
    ious: list[float] = field(default_factory=list)  # of the matched pairs
    dscores: list[float] = field(default_factory=list)  # |candidate score - reference score| per pair

    @property
    def disagreement(self) -> int:
        return self.missed + self.extra


@dataclass
class DetectionAgreement:
    images: int
    reference: int
    candidate: int
    matched: int
    missed: int
    extra: int
    flips: int
    matched_fraction: float  # matched / reference (1 when both rows have no confident box, 0 when only the reference has none)
    mean_iou: float | None  # None (undefined) when nothing was paired
    mean_abs_dscore: float | None
    worst: list[ImageAgreement]  # the images that disagree most (missed + extra), worst first
    score_threshold: float = SCORE_THRESHOLD
    iou_threshold: float = IOU_THRESHOLD


def _greedy_pairs(ious: np.ndarray, allowed: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by descending IoU among allowed entries >= threshold, each index used once."""
    rows, cols = np.nonzero(allowed & (ious >= threshold))
    order = np.argsort(-ious[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for n in order:
        r, c = int(rows[n]), int(cols[n])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def match_image(ref: list[dict], cand: list[dict], image_id: int = 0, file_name: str = "",
                score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD) -> ImageAgreement:
    """DetectionAgreement on one image between two lists of COCO result dicts."""
    ref = [d for d in ref if d["score"] >= score_threshold]
    cand = [d for d in cand if d["score"] >= score_threshold]
    result = ImageAgreement(image_id, file_name, len(ref), len(cand), 0, len(ref), len(cand), 0)
    if not ref or not cand:
        return result
    ious = np.asarray(mask_utils.iou([d["bbox"] for d in cand], [d["bbox"] for d in ref], [0] * len(ref)))
    cand_cls = np.array([d["category_id"] for d in cand])[:, None]
    ref_cls = np.array([d["category_id"] for d in ref])[None, :]
    pairs = _greedy_pairs(ious, cand_cls == ref_cls, iou_threshold)
    result.matched = len(pairs)
    result.missed -= len(pairs)
    result.extra -= len(pairs)
    result.ious = [float(ious[c, r]) for c, r in pairs]
    result.dscores = [abs(float(cand[c]["score"]) - float(ref[r]["score"])) for c, r in pairs]
    free_c = np.ones(len(cand), bool)
    free_r = np.ones(len(ref), bool)
    for c, r in pairs:
        free_c[c] = free_r[r] = False
    result.flips = len(_greedy_pairs(ious, (cand_cls != ref_cls) & free_c[:, None] & free_r[None, :], iou_threshold))
    return result


def agreement(ref: SavedDetections, cand: SavedDetections, score_threshold: float = SCORE_THRESHOLD,
              iou_threshold: float = IOU_THRESHOLD, worst: int = WORST_IMAGES) -> DetectionAgreement:
    """DetectionAgreement over the images both rows ran (the caller checks that they ran the same images)."""
    ref_by, cand_by = ref.by_image(), cand.by_image()
    per_image = [match_image(ref_by[i], cand_by.get(i, []), i, name, score_threshold, iou_threshold)
                 for i, name in sorted(ref.images.items())]
    total = {k: sum(getattr(p, k) for p in per_image)
             for k in ("reference", "candidate", "matched", "missed", "extra", "flips")}
    ious = [v for p in per_image for v in p.ious]
    dscores = [v for p in per_image for v in p.dscores]
    if total["reference"]:
        fraction = total["matched"] / total["reference"]
    else:
        fraction = 1.0 if total["candidate"] == 0 else 0.0
    ranked = sorted((p for p in per_image if p.disagreement), key=lambda p: (
        -p.disagreement, -p.flips, p.file_name))
    return DetectionAgreement(len(per_image), **total, matched_fraction=fraction,
                     mean_iou=float(np.mean(ious)) if ious else None,
                     mean_abs_dscore=float(np.mean(dscores)) if dscores else None,
                     worst=ranked[:worst], score_threshold=score_threshold, iou_threshold=iou_threshold)
