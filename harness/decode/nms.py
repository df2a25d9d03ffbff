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
    """
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.size == 0:
        return Detections.empty()
    xywh = np.empty((boxes.shape[0], 4), np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    index = cv2.dnn.NMSBoxesBatched(
        xywh, scores.astype(np.float32), labels.astype(np.int32), float(score_threshold), float(iou_threshold)
    )
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    # Highest score first, ties broken by input order, so results do not depend on OpenCV's sort.
    order = np.lexsort((index, -scores[index]))
    index = index[order][:max_detections]
    return Detections(boxes[index].astype(np.float32), scores[index].astype(np.float32), labels[index].astype(np.int64))
