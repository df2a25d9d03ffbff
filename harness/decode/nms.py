"""One class-aware NMS for every decoder: threshold, per-class suppression, top-k by score."""

from __future__ import annotations

import cv2
import numpy as np

from harness.decode.types import Detections


def multiclass_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> Detections:
    """Class-aware NMS over candidate (box, score, label) triples of one image.

    Boxes are xyxy. A box is suppressed by a higher-scoring box of the same class whose IoU with
    it exceeds iou_threshold. OpenCV's NMSBoxesBatched does the work (C++, vectorised); we only
    convert to its x,y,w,h convention.

    OpenCV's NMS compares each box with every box kept so far, all classes together (O(n * kept)).
    The answer is the same for less work because greedy NMS visits boxes best score first and a
    box's fate depends only on better boxes of its class: we run OpenCV on the best candidates only
    (4 x max_detections, grown until max_detections survive), split into groups of whole classes.
    Same boxes, same scores, same order as one call over every candidate (tests check this).
    """
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.size == 0:
        return Detections.empty()
    n = scores.shape[0]
    xywh = np.empty((n, 4), np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    scores32 = scores.astype(np.float32)
    labels32 = labels.astype(np.int32)
    index = _nms_index(xywh, scores32, labels32, float(score_threshold), float(iou_threshold), max_detections)
    # Highest score first, ties broken by input order, so results do not depend on OpenCV's sort.
    order = np.lexsort((index, -scores[index]))
    index = index[order][:max_detections]
    return Detections(boxes[index].astype(np.float32), scores[index].astype(np.float32), labels[index].astype(np.int64))


_PREFIX_FACTOR = 4  # first chunk: this many times max_detections candidates
_GROUP = 96  # candidates per OpenCV call: classes are packed into groups of about this size


def _nms_index(xywh, scores32, labels32, score_threshold, iou_threshold, max_detections) -> np.ndarray:
    """Indices NMSBoxesBatched keeps, in its visiting order as far as the caller needs them.

    Exactly the boxes OpenCV keeps over all candidates, restricted to the best ones: once
    max_detections boxes survive within the best M (score order), the others cannot rank in the
    top max_detections; when max_detections <= 0 every kept box is returned.
    """
    n = scores32.shape[0]
    if n <= _GROUP:
        return _opencv_nms(xywh, scores32, labels32, score_threshold, iou_threshold)
    # OpenCV's own visiting order: score descending (float32, as passed to it), ties by input order.
    visit = np.argsort(-scores32, kind="stable")
    neg_sorted = -scores32[visit]
    # NMSBoxesBatched separates classes by shifting boxes by label * (max coordinate + 1); a call on
    # a subset would see a smaller max coordinate and could round the shifted coordinates
    # differently. A zero-area box at the full set's max coordinate, in a class of its own, visited
    # last (lowest score above the threshold, last index) keeps the shift identical, overlaps
    # nothing, and is dropped from the answer.
    far = max(float(xywh[:, :2].max()), float((xywh[:, :2] + xywh[:, 2:]).max()))
    sentinel = (np.array([[far, far, 0.0, 0.0]]),
                np.nextafter(np.float32(score_threshold), np.float32(np.inf), dtype=np.float32),
                np.int32(labels32.max() + 1))
    # Classes never suppress each other, except that OpenCV counts two zero-area boxes as fully
    # overlapping whatever their classes; where such boxes exist, keep all classes in one call.
    area = xywh[:, 2] * xywh[:, 3]
    split = not bool(((area <= 1e-6) | (xywh[:, 2] < 0) | (xywh[:, 3] < 0)).any())
    # Walk the candidates best first in chunks. Boxes suppressed so far can never suppress later
    # ones (greedy NMS), so each call needs only the kept boxes plus the next chunk.
    kept = np.zeros(0, np.int64)
    start, size = 0, (n if max_detections <= 0 else _PREFIX_FACTOR * max_detections)
    while True:
        end = min(n, start + size)
        if end < n:
            # Never split a run of equal scores: later chunks then score strictly lower.
            end = int(np.searchsorted(neg_sorted, neg_sorted[end - 1], side="right"))
        # Input order, so OpenCV's stable sort visits them in the same order as in one big call.
        subset = np.sort(np.concatenate([kept, visit[start:end]]))
        kept = _grouped_nms(xywh, scores32, labels32, subset, score_threshold, iou_threshold, sentinel, split)
        if end >= n or kept.size >= max_detections:
            return kept
        # Too few survivors: size the next chunk from the survival rate seen so far.
        start = end
        size = max(max_detections, int(1.25 * (max_detections - kept.size) * end / max(kept.size, 1)))


def _grouped_nms(xywh, scores32, labels32, subset, score_threshold, iou_threshold, sentinel,
                 split: bool) -> np.ndarray:
    """NMSBoxesBatched on `subset`; with split, one call per group of whole classes, so each box is
    compared with the kept boxes of its group rather than with every kept box."""
    if split:
        classes, inverse, counts = np.unique(labels32[subset], return_inverse=True, return_counts=True)
        group_of_class = (np.cumsum(counts) - counts) // _GROUP
        group = group_of_class[inverse.reshape(-1)]
    else:
        group_of_class, group = np.zeros(1, np.int64), np.zeros(subset.size, np.int64)
    box, score, label = sentinel
    kept = []
    for g in range(int(group_of_class[-1]) + 1):
        members = subset[group == g]
        if members.size == 0:
            continue
        index = _opencv_nms(
            np.concatenate([xywh[members], box]),
            np.concatenate([scores32[members], [score]]).astype(np.float32),
            np.concatenate([labels32[members], [label]]).astype(np.int32),
            score_threshold, iou_threshold,
        )
        kept.append(members[index[index < members.size]])
    return np.concatenate(kept) if kept else np.zeros(0, np.int64)


def _opencv_nms(xywh, scores32, labels32, score_threshold, iou_threshold) -> np.ndarray:
    index = cv2.dnn.NMSBoxesBatched(xywh, scores32, labels32, float(score_threshold), float(iou_threshold))
    return np.asarray(index, dtype=np.int64).reshape(-1)
