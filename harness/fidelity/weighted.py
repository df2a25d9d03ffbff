"""COCOeval.accumulate's precision computation with integer image weights.

Written by hand because no library re-accumulates COCO matches with weights, and re-running COCOeval
per bootstrap resample (1000 resamples x a full evaluate/accumulate) takes minutes where this takes
seconds: matching (the costly part) does not change when images are repeated, only the counting does.

Exactness: a weight n on an image means the image appears n times, its copies adjacent in score ties
(as when the copies get consecutive image ids). For each (category, area, IoU threshold) the kernel
walks accumulate's sorted detections, repeats each block of one image's equal-score detections n
times, and builds the same cumulative tp/fp counts, precision tp / (tp + fp + eps), recall tp / npig,
right-to-left precision envelope and first-index-at-recall-threshold lookup as pycocotools; weight 0
drops the image. So the results equal COCOeval on the literally duplicated dataset (tests check it).
"""

from __future__ import annotations

import numpy as np

from harness.core.jit import compiled
from harness.fidelity.cocomatch import CocoMatches

EPS = float(np.spacing(1))  # pycocotools' precision guard


@compiled
def _precision_sums(weights, det_start, block_start, group_block_start, det_image, tp, fp, gt_count,
                    rec_thrs, eps):
    """(B, G, T) sums over recall thresholds of interpolated precision; NaN where no ground truth counts."""
    n_b, n_img = weights.shape
    n_g = det_start.shape[0] - 1
    n_t = tp.shape[0]
    n_r = rec_thrs.shape[0]
    out = np.empty((n_b, n_g, n_t))
    for b in range(n_b):
        for g in range(n_g):
            npig = 0
            for i in range(n_img):
                npig += weights[b, i] * gt_count[g, i]
            if npig == 0:
                out[b, g, :] = np.nan
                continue
            length = 0
            for blk in range(group_block_start[g], group_block_start[g + 1]):
                length += weights[b, det_image[block_start[blk]]] * (block_start[blk + 1] - block_start[blk])
            pr = np.empty(length)
            rc = np.empty(length)
            for t in range(n_t):
                tp_sum = 0.0
                fp_sum = 0.0
                n = 0
                for blk in range(group_block_start[g], group_block_start[g + 1]):
                    lo = block_start[blk]
                    hi = block_start[blk + 1]
                    for _ in range(weights[b, det_image[lo]]):
                        for d in range(lo, hi):
                            tp_sum += tp[t, d]
                            fp_sum += fp[t, d]
                            rc[n] = tp_sum / npig
                            pr[n] = tp_sum / (fp_sum + tp_sum + eps)
                            n += 1
                for n2 in range(length - 1, 0, -1):
                    if pr[n2] > pr[n2 - 1]:
                        pr[n2 - 1] = pr[n2]
                total = 0.0
                j = 0
                for r in range(n_r):
                    while j < length and rc[j] < rec_thrs[r]:
                        j += 1
                    if j == length:
                        break  # recall never reaches this threshold: precision 0 here and above
                    total += pr[j]
                out[b, g, t] = total
    return out


def precision_means(matches: CocoMatches, weights: np.ndarray) -> np.ndarray:
    """(B, K, A, T) mean interpolated precision over recall thresholds (a category's AP at one IoU
    threshold and area range); NaN where the category has no counted ground truth (COCOeval's -1)."""
    weights = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.int64)
    if weights.shape[1] != len(matches.image_ids):
        raise ValueError(f"weights cover {weights.shape[1]} images, matches {len(matches.image_ids)}")
    if np.any(weights < 0):
        raise ValueError("image weights must be non-negative integers")
    sums = _precision_sums(weights, matches.det_start, matches.block_start, matches.group_block_start,
                           matches.det_image, matches.tp, matches.fp, matches.gt_count,
                           matches.rec_thresholds, EPS)
    n_k, n_a = matches.shape
    return sums.reshape(len(weights), n_k, n_a, -1) / len(matches.rec_thresholds)


STATS = (("map", "all", None), ("map50", "all", 0.5), ("map75", "all", 0.75), ("map_small", "small", None),
         ("map_medium", "medium", None), ("map_large", "large", None))


def summary_stats(matches: CocoMatches, weights: np.ndarray) -> np.ndarray:
    """(B, 6): COCOeval.stats[0:6] (AP, AP50, AP75, AP small/medium/large at maxDets[-1]) per weight
    vector; -1 where COCOeval prints -1 (no category with counted ground truth), NaN for an area
    range the matches were extracted without."""
    means = precision_means(matches, weights)  # (B, K, A, T)
    stats = np.full((len(means), len(STATS)), np.nan)
    for n, (_, area, iou) in enumerate(STATS):
        if area not in matches.area_labels:
            continue
        a = matches.area_labels.index(area)
        if iou is None:
            values = means[:, :, a, :].reshape(len(means), -1)
        else:
            values = means[:, :, a, int(np.argmin(np.abs(matches.iou_thresholds - iou)))]
        valid = ~np.isnan(values)
        count = valid.sum(axis=1)
        total = np.where(valid, values, 0.0).sum(axis=1)
        stats[:, n] = np.where(count > 0, total / np.maximum(count, 1), -1.0)
    return stats
