"""YOLOX decoder (Megvii-BaseDetection/YOLOX), for exports of the raw head (no grid decode in the graph).

One output [B, N, 5 + C], one row per grid cell at strides 8/16/32 (N = 3549 at 416x416; no
anchors): x/y offsets from the cell's top-left corner and log width/height, in stride units, then
sigmoid-ed objectness and C sigmoid-ed class scores. As YOLOXHead.decode_outputs:
centre = (offset + cell) * stride, size = exp(log wh) * stride.

As YOLOX's evaluation (yolox/utils/boxes.py postprocess): each row's best class only
(`multi_label = false`), score = objectness x that class score, class-aware NMS with the profile's
thresholds (YOLOX's eval: conf 0.01, IoU 0.65) and no per-image cap (`max_detections = 0`).
Two deliberate differences, neither measurable in mAP: the threshold keeps scores above it
(YOLOX keeps those equal to it too), and boxes are clipped to the image when mapped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.config import setting
from harness.decode.geometry import YOLO_STRIDES, cell_grid, check_strides
from harness.decode.nms import above_threshold, nms_to_original, top_k_indices
from harness.decode.types import DecoderFamily, Detections, check_batch
from harness.decode.yolo import grid_rows, single_prediction


@dataclass(frozen=True)
class Params:
    """[decoder] of kind "yolox"."""

    strides: tuple[int, ...] = setting(YOLO_STRIDES, gt=0, nonempty=True)  # one row per grid cell of each
    multi_label: bool = False  # every class above the threshold per row; YOLOX's evaluation keeps the best only

    def __post_init__(self):
        check_strides(self.strides)


def grid_boxes(raw: np.ndarray, rows: np.ndarray, grid: np.ndarray, grid_strides: np.ndarray) -> np.ndarray:
    """xyxy boxes in input pixels of the given rows of one image's raw [N, 5 + C] output."""
    stride = grid_strides[rows, None]
    centre = (raw[rows, 0:2].astype(np.float32) + grid[rows]) * stride
    half = np.exp(raw[rows, 2:4].astype(np.float32)) * stride / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _candidates(raw: np.ndarray, threshold: float, multi_label: bool):
    """(rows, labels, scores) above threshold, score = objectness x class score."""
    objectness = raw[:, 4].astype(np.float32)
    classes = raw[:, 5:].astype(np.float32)
    if multi_label:
        return above_threshold(classes * objectness[:, None], threshold)
    labels = classes.argmax(axis=1)
    scores = classes[np.arange(labels.size), labels] * objectness
    rows = np.flatnonzero(scores > threshold)
    return rows, labels[rows], scores[rows]


def decode_yolox(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    spec, dec, post, nc = profile.input, profile.decoder.params, profile.postprocess, profile.num_classes
    pred = single_prediction(outputs, 5 + nc, "yolox", *grid_rows(profile, 1))
    check_batch(pred.shape[0], metas)
    grid, grid_strides = cell_grid(spec.width, spec.height, tuple(dec.strides))
    results = []
    for b, meta in enumerate(metas):
        raw = pred[b]
        rows, labels, scores = _candidates(raw, post.score_threshold, dec.multi_label)
        if rows.size == 0:
            results.append(Detections.empty())
            continue
        keep = top_k_indices(scores, post.pre_nms_top_k)
        rows, labels, scores = rows[keep], labels[keep], scores[keep]
        results.append(nms_to_original(grid_boxes(raw, rows, grid, grid_strides), scores, labels, meta, post))
    return results


FAMILY = DecoderFamily("yolox", Params, decode_yolox, "YOLOX raw head (grid decode, objectness x class, no anchors)")
