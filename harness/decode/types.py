"""The detections container shared by all decoders, and its conversion to COCO result dicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """One image's detections: xyxy boxes in original pixels, scores, contiguous class indices."""

    boxes: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def to_coco_results(dets: Detections, image_id: int, category_ids) -> list[dict]:
    """pycocotools' result format: the interchange between decode and evaluate."""
    ids = np.asarray(category_ids, dtype=np.int64)
    boxes = dets.boxes.astype(np.float64)
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    return [
        {
            "image_id": int(image_id),
            "category_id": int(ids[label]),
            "bbox": [round(float(x), 3), round(float(y), 3), round(float(w), 3), round(float(h), 3)],
            "score": round(float(score), 5),
        }
        for (x, y), (w, h), score, label in zip(boxes[:, :2], wh, dets.scores, dets.labels)
    ]
