"""Per-image COCO matches of one row, extracted once so the bootstrap can re-weight images cheaply.

pycocotools' COCOeval.evaluate() decides, per image x category x area range (at the largest
maxDets), which detections are true positives at each IoU threshold (dtMatches), which are ignored
(dtIgnore) and how many ground-truth boxes count (gtIgnore == 0). COCOeval.accumulate() then only
sorts by score and counts. We keep exactly what accumulate reads, in the order it reads it, laid out
flat per (category, area) group; harness.fidelity.weighted re-does the counting with image weights.
faster-coco-eval keeps these per-image results inside C++ (not readable from Python), so the
extraction uses pycocotools, a core dependency.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import numpy as np

from harness.core.errors import HarnessError


@dataclass
class CocoMatches:
    """Everything COCOeval.accumulate reads, for maxDets[-1], grouped by g = k * A + a.

    Detections of group g are det_start[g]:det_start[g+1], already in accumulate's order (score
    descending, mergesort over the images' lists concatenated in image id order). Blocks are runs of
    one image's detections with equal score (block_start, per group block_group_start): the unit a
    weight repeats, so a weight of n reproduces n adjacent copies of the image exactly."""

    image_ids: np.ndarray       # (I,) sorted; weights are indexed like this
    category_ids: np.ndarray    # (K,)
    area_labels: list[str]      # (A,) e.g. all, small, medium, large
    iou_thresholds: np.ndarray  # (T,)
    rec_thresholds: np.ndarray  # (R,)
    max_dets: int
    det_start: np.ndarray       # (G + 1,) int64
    det_image: np.ndarray       # (D,) int64 index into image_ids
    det_score: np.ndarray       # (D,) float64
    tp: np.ndarray              # (T, D) uint8: matched and not ignored
    fp: np.ndarray              # (T, D) uint8: unmatched and not ignored
    block_start: np.ndarray     # (NB + 1,) int64 offsets into the detections
    group_block_start: np.ndarray  # (G + 1,) int64 offsets into the blocks
    gt_count: np.ndarray        # (G, I) int64 ground-truth boxes that count (not ignored)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.category_ids), len(self.area_labels)


def ground_truth(ann: dict):
    """A pycocotools COCO of the annotations, built once and shared by every row evaluated on them."""
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = copy.deepcopy(ann)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def run_cocoeval(gt, detections: list[dict], image_ids, areas: tuple[str, ...] | None = None):
    """pycocotools COCOeval after evaluate() on image_ids; `areas` keeps only those area ranges
    (e.g. ("all",): a quarter of the per-image work when the sizes are not needed)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(d) for d in detections]) if detections else _empty_results(gt)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        if areas is not None:
            keep = [ev.params.areaRngLbl.index(a) for a in areas]
            ev.params.areaRng = [ev.params.areaRng[i] for i in keep]
            ev.params.areaRngLbl = [ev.params.areaRngLbl[i] for i in keep]
        ev.evaluate()
    return ev


def _empty_results(gt):
    """loadRes refuses an empty list; an empty result set is still a valid (all-miss) row."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": copy.deepcopy(gt.dataset["images"]), "annotations": [],
                  "categories": copy.deepcopy(gt.dataset["categories"])}
    dt.createIndex()
    return dt


def extract_matches(ev) -> CocoMatches:
    """Flatten COCOeval.evalImgs (after evaluate()) into CocoMatches."""
    p = ev._paramsEval
    if not p.useCats:
        raise HarnessError("fidelity: COCO evaluation without categories (useCats=0) is not supported")
    image_ids = np.asarray(p.imgIds, np.int64)
    if np.any(np.diff(image_ids) <= 0):
        raise HarnessError("fidelity: COCOeval image ids must be sorted and distinct")
    cat_ids, areas, max_det = list(p.catIds), [tuple(a) for a in p.areaRng], int(p.maxDets[-1])
    n_img, n_area, n_t = len(image_ids), len(areas), len(p.iouThrs)
    det_start, block_start, group_block_start = [0], [0], [0]
    images, scores, tps, fps = [], [], [], []
    gt_count = np.zeros((len(cat_ids) * n_area, n_img), np.int64)
    for k in range(len(cat_ids)):
        for a in range(n_area):
            g = k * n_area + a
            entries = [(i, ev.evalImgs[k * n_area * n_img + a * n_img + i]) for i in range(n_img)]
            entries = [(i, e) for i, e in entries if e is not None]
            for i, e in entries:
                gt_count[g, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            if entries:
                score = np.concatenate([np.asarray(e["dtScores"][:max_det], np.float64) for _, e in entries])
                image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i, np.int64) for i, e in entries])
                dtm = np.concatenate([np.asarray(e["dtMatches"])[:, :max_det] for _, e in entries], axis=1)
                dti = np.concatenate([np.asarray(e["dtIgnore"])[:, :max_det] for _, e in entries], axis=1)
                order = np.argsort(-score, kind="mergesort")  # accumulate's own sort
                score, image, dtm, dti = score[order], image[order], dtm[:, order] != 0, dti[:, order] != 0
            else:
                score, image = np.zeros(0), np.zeros(0, np.int64)
                dtm = dti = np.zeros((n_t, 0), bool)
            images.append(image)
            scores.append(score)
            tps.append(dtm & ~dti)
            fps.append(~dtm & ~dti)
            offset = det_start[-1]
            if len(score):
                new_block = np.ones(len(score), bool)
                new_block[1:] = (image[1:] != image[:-1]) | (score[1:] != score[:-1])
                block_start += (offset + np.flatnonzero(new_block)[1:]).tolist() + [offset + len(score)]
            det_start.append(offset + len(score))
            group_block_start.append(len(block_start) - 1)
    return CocoMatches(
        image_ids=image_ids, category_ids=np.asarray(cat_ids, np.int64), area_labels=list(p.areaRngLbl),
        iou_thresholds=np.asarray(p.iouThrs, np.float64), rec_thresholds=np.asarray(p.recThrs, np.float64),
        max_dets=max_det, det_start=np.asarray(det_start, np.int64),
        det_image=np.concatenate(images) if images else np.zeros(0, np.int64),
        det_score=np.concatenate(scores) if scores else np.zeros(0),
        tp=np.concatenate(tps, axis=1).astype(np.uint8), fp=np.concatenate(fps, axis=1).astype(np.uint8),
        block_start=np.asarray(block_start, np.int64), group_block_start=np.asarray(group_block_start, np.int64),
        gt_count=gt_count)


def coco_matches(gt, detections: list[dict], image_ids, areas: tuple[str, ...] | None = None) -> CocoMatches:
    """Run pycocotools' per-image evaluation on image_ids (gt: ground_truth(ann), or the annotation
    dict itself) and extract the matches."""
    if isinstance(gt, dict):
        gt = ground_truth(gt)
    return extract_matches(run_cocoeval(gt, detections, image_ids, areas))
