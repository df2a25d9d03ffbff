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

from functools import lru_cache
from typing import Sequence

import numpy as np

from harness.decode import register
from harness.decode.geometry import YOLO_STRIDES, grid_cells, strides_text
from harness.decode.nms import above_threshold, multiclass_nms, top_k_indices
from harness.decode.params import read_bool, read_strides
from harness.decode.types import Detections, check_batch
from harness.decode.yolo import single_prediction
from harness.preprocess import input_to_original


@lru_cache(maxsize=16)
def make_grid(width: int, height: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cell (x, y) (N, 2) and stride (N,), level by level, row-major; cached, read-only."""
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full(rows * cols, stride, np.float32))
    grid, grid_strides = np.concatenate(cells), np.concatenate(cell_strides)
    grid.flags.writeable = False
    grid_strides.flags.writeable = False
    return grid, grid_strides


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


@register("yolox")
def decode_yolox(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    spec, post, nc = profile.input, profile.postprocess, profile.num_classes
    where = f"profile {profile.name}"
    strides = read_strides(profile.decoder, YOLO_STRIDES, where)
    multi_label = read_bool(profile.decoder, "multi_label", False, where)
    cells = sum(grid_cells(spec.width, spec.height, strides))
    pred = single_prediction(outputs, 5 + nc, "yolox", cells, f"one per grid cell at strides {strides_text(strides)} "
                             f"of a {spec.width}x{spec.height} input")
    check_batch(pred.shape[0], metas)
    grid, grid_strides = make_grid(spec.width, spec.height, strides)
    results = []
    for b, meta in enumerate(metas):
        raw = pred[b]
        rows, labels, scores = _candidates(raw, post.score_threshold, multi_label)
        if rows.size == 0:
            results.append(Detections.empty())
            continue
        keep = top_k_indices(scores, post.pre_nms_top_k)
        rows, labels, scores = rows[keep], labels[keep], scores[keep]
        dets = multiclass_nms(grid_boxes(raw, rows, grid, grid_strides), scores, labels,
                              post.score_threshold, post.iou_threshold, post.max_detections)
        dets.boxes = input_to_original(dets.boxes, meta)
        results.append(dets)
    return results
