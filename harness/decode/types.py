"""The detections container shared by all decoders, its conversion to COCO result dicts, and the
output checks every decoder makes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.errors import HarnessError


def output_shapes(outputs) -> str:
    """The outputs' shapes for an error message, e.g. "(1, 2125, 112), (1, 10)"."""
    return ", ".join(str(tuple(np.shape(o))) for o in outputs)


def check_batch(found: int, metas: Sequence, what: str = "outputs") -> None:
    """A graph with batch 1 baked into its outputs cannot serve a larger batch: say so."""
    if found < len(metas):
        raise HarnessError(
            f"model returned {what} for {found} image(s) but the batch holds {len(metas)}: "
            "its outputs have a fixed batch of 1"
        )


@dataclass(frozen=True)
class NoParams:
    """For a family whose [decoder] table holds nothing but its kind."""


@dataclass(frozen=True)
class DecoderFamily:
    """One decoder family: its [decoder] parameters and its decode function
    decode(outputs in model order, metas of the real images, profile) -> one Detections per image."""

    kind: str
    Params: type
    decode: Callable
    summary: str = ""


@dataclass
class Detections:
    """One image's detections: xyxy boxes in original pixels, scores, contiguous class indices."""

    boxes: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


#: columns of a compact result array (to_coco_array): what a COCO result dict holds, one row per detection
COCO_ARRAY_COLUMNS = ("image_id", "x", "y", "w", "h", "score", "category_id")


def to_coco_array(dets: Detections, image_id: int, category_ids) -> np.ndarray:
    """The result dicts of to_coco_results as one float64 array [N, 7] (COCO_ARRAY_COLUMNS), the same
    rounded values: 56 bytes a detection instead of a dict's ~350, for passes that keep every
    detection until the evaluation (harness.measure.evaluate turns them into dicts a few categories at a time)."""
    ids = np.asarray(category_ids, dtype=np.int64)
    boxes = dets.boxes.astype(np.float64)
    xywh = np.round(np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1), 3)
    out = np.empty((len(dets), 7), np.float64)
    out[:, 0] = int(image_id)
    out[:, 1:5] = xywh
    out[:, 5] = np.round(dets.scores.astype(np.float64), 5)
    out[:, 6] = ids[dets.labels]
    return out


def coco_dicts(rows: np.ndarray) -> list[dict]:
    """Result dicts from a to_coco_array array (exactly the dicts to_coco_results gives)."""
    return [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": [r[1], r[2], r[3], r[4]], "score": r[5]}
            for r in rows.tolist()]


def to_coco_results(dets: Detections, image_id: int, category_ids) -> list[dict]:
    """pycocotools' result format: the interchange between decode and evaluate.

    Rounding is vectorised: for float32 boxes and scores, x * 10**d is exact in float64, so
    np.round gives what round(float(x), d) gives, at a quarter of the cost per detection."""
    ids = np.asarray(category_ids, dtype=np.int64)
    boxes = dets.boxes.astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
    bboxes = np.round(xywh, 3).tolist()
    scores = np.round(dets.scores.astype(np.float64), 5).tolist()
    image_id = int(image_id)
    return [
        {"image_id": image_id, "category_id": category, "bbox": bbox, "score": score}
        for category, bbox, score in zip(ids[dets.labels].tolist(), bboxes, scores)
    ]
