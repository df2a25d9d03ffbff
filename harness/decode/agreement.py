"""Detection agreement: does the candidate find the same confident boxes as the reference? The one box
agreement of the project: `report --fidelity` (two rows' saved detections) and the conversion check
(harness.precision.check: two models' outputs through the same decode sink) both use it.

Per image, the confident detections of both rows (score >= 0.3) are paired greedily, highest IoU
first, among pairs of the same class with IoU >= 0.5. A reference box left unpaired is *missed*, a
candidate box left unpaired is *extra*; an extra and a missed box of different classes that overlap
at IoU >= 0.5 (paired greedily again) are a *class flip*, counted in both. Written here by hand:
COCO evaluators match detections to ground truth (crowd rules, area ranges, one score order), and no
well-kept library pairs two detection sets class-aware and reports flips; pycocotools' bbox IoU is
used for the overlaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:
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
                score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD,
                candidate_threshold: float | None = None) -> ImageAgreement:
    """DetectionAgreement on one image between two lists of COCO result dicts. candidate_threshold: the
    candidate's own score floor (default: score_threshold; 0: is each confident reference box found at all?)."""
    floor = score_threshold if candidate_threshold is None else candidate_threshold
    ref = [d for d in ref if d["score"] >= score_threshold]
    cand = [d for d in cand if d["score"] >= floor]
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
    """DetectionAgreement of two rows' saved detections over the images both ran (the caller checks that they
    ran the same images)."""
    return agreement_by_image(ref.by_image(), cand.by_image(), ref.images, score_threshold, iou_threshold, worst)


def agreement_by_image(ref_by: Mapping[int, list[dict]], cand_by: Mapping[int, list[dict]],
                       names: Mapping[int, str] | None = None, score_threshold: float = SCORE_THRESHOLD,
                       iou_threshold: float = IOU_THRESHOLD, worst: int = WORST_IMAGES,
                       candidate_threshold: float | None = None) -> DetectionAgreement:
    """DetectionAgreement over the reference's images (image id -> COCO result dicts; names: image id -> file
    name, in the order to report; default: the reference's ids sorted). candidate_threshold: see match_image."""
    names = names if names is not None else {i: "" for i in ref_by}
    per_image = [match_image(ref_by.get(i, []), cand_by.get(i, []), i, name, score_threshold, iou_threshold,
                             candidate_threshold) for i, name in sorted(names.items())]
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
