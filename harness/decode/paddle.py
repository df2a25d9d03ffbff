"""PaddleDetection exports (PicoDet, PP-YOLOE): with the NMS inside the graph, or without it.

These models take a second input, `scale_factor` [B, 2] = [scale_y, scale_x] (fed by
harness.model.extra_inputs when the profile says `[input] extras = ["scale_factor"]`), and divide their
boxes by it. Outputs are matched by count and shape, never by name:

- with NMS: `bbox` [M, 6] = (class, score, x1, y1, x2, y2) in original pixels, rows of all images
  one after the other, and `bbox_num` [B] = rows per image; rows with class < 0 (Paddle's
  placeholder when nothing is found) are dropped;
- without NMS, two outputs: boxes [B, N, 4] xyxy + scores [B, C, N] (PicoDet `export_nms=False`:
  boxes in input pixels; PP-YOLOE `exclude_nms=True`: boxes already divided by scale_factor, i.e.
  original pixels: set `[decoder] boxes = "original"`);
- without NMS, one output [B, N, 4 + C] = boxes in input pixels then scores (PP-YOLOE
  `exclude_post_process=True`).

Raw layouts hold one box per grid cell at the profile's `[decoder] strides` (PicoDet 8/16/32/64,
the default: 3598 at 416; PP-YOLOE 8/16/32: 8400 at 640); other counts are refused.
Scores are probabilities (the heads apply sigmoid in the graph; `[decoder] scores = "logits"` if not).
Non-NMS layouts go through the shared class-aware NMS with Paddle's MultiClassNMS semantics:
score > score_threshold, at most pre_nms_top_k candidates per class (Paddle's nms_top_k), then
max_detections overall (keep_top_k). Boxes "in original pixels" here mean the model divided by
scale_factor; the letterbox padding, which scale_factor cannot express, is taken off afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from harness.core.config import setting
from harness.core.errors import HarnessError
from harness.decode.geometry import OutputLayoutError, check_strides, grid_cells, strides_text
from harness.decode.nms import above_threshold, at_most, nms_to_original, per_class_top_k
from harness.decode.types import DecoderFamily, Detections, check_batch, output_shapes
from harness.images.preprocess import input_to_original


@dataclass(frozen=True)
class Params:
    """[decoder] of kind "paddle"."""

    boxes: Literal["input", "original"] = "input"  # frame of the boxes of non-NMS layouts
    scores: Literal["sigmoid", "logits"] = "sigmoid"
    # raw layouts: one box per grid cell at these strides (PicoDet 8/16/32/64; PP-YOLOE 8/16/32)
    strides: tuple[int, ...] = setting((8, 16, 32, 64), gt=0, nonempty=True)

    def __post_init__(self):
        check_strides(self.strides)


def model_original_to_original(boxes: np.ndarray, meta) -> np.ndarray:
    """Boxes the model divided by scale_factor -> original pixels (removes letterbox padding), clipped."""
    as_input = np.empty_like(boxes, dtype=np.float32)
    as_input[:, 0::2] = boxes[:, 0::2] * meta.scale_x
    as_input[:, 1::2] = boxes[:, 1::2] * meta.scale_y
    return input_to_original(as_input, meta)


def _fail(outputs, num_classes: int, why: str):
    raise OutputLayoutError(
        f"model outputs [{output_shapes(outputs)}] do not fit the Paddle profile ({why}): expected "
        f"bbox [M, 6] + bbox_num [B] (NMS in the graph), or boxes [B, N, 4] + scores [B, {num_classes}, N], "
        f"or one tensor [B, N, {4 + num_classes}] (no NMS; {num_classes} classes)"
    )


def arrange_outputs(outputs: Sequence[np.ndarray], num_classes: int):
    """('nms', bbox [M, 6], bbox_num [B]) or ('raw', boxes [B, N, 4], scores [B, N, C], from_single)."""
    arrays = [np.asarray(o) for o in outputs]
    if len(arrays) == 2:
        by_ndim = {a.ndim: a for a in arrays}
        if set(by_ndim) == {1, 2} and by_ndim[2].shape[1] == 6:
            return "nms", by_ndim[2], by_ndim[1]
        arrays = [a[None] if a.ndim == 2 else a for a in arrays]
        if all(a.ndim == 3 for a in arrays):
            boxes = [a for a in arrays if a.shape[2] == 4]
            scores = [a for a in arrays if a.shape[1] == num_classes]
            if len(boxes) == 1 and len(scores) == 1 and boxes[0] is not scores[0]:
                b, s = boxes[0], scores[0]
                if b.shape[0] != s.shape[0] or b.shape[1] != s.shape[2]:
                    _fail(outputs, num_classes, "boxes and scores disagree on batch or box count")
                return "raw", b, s.transpose(0, 2, 1), False
        _fail(outputs, num_classes, "two outputs that are neither bbox + bbox_num nor boxes + scores")
    if len(arrays) == 1:
        a = arrays[0]
        a = a[None] if a.ndim == 2 else a
        if a.ndim == 3 and a.shape[2] == 4 + num_classes:
            return "raw", a[..., :4], a[..., 4:], True
        _fail(outputs, num_classes, f"one output of shape {tuple(np.shape(arrays[0]))}")
    _fail(outputs, num_classes, f"{len(arrays)} outputs")


def _decode_nms(bbox, bbox_num, metas, profile) -> list[Detections]:
    post, nc = profile.postprocess, profile.num_classes
    counts = np.asarray(bbox_num).astype(np.int64).reshape(-1)
    check_batch(counts.size, metas, "bbox_num")
    if counts.sum() > bbox.shape[0]:
        raise HarnessError(f"model's bbox_num {counts.tolist()} counts more rows than bbox holds ({bbox.shape[0]})")
    starts = np.r_[0, np.cumsum(counts)]
    results = []
    for b, meta in enumerate(metas):
        rows = bbox[starts[b] : starts[b + 1]]
        labels = np.rint(rows[:, 0]).astype(np.int64)
        scores = rows[:, 1].astype(np.float32)
        keep = np.flatnonzero((labels >= 0) & (scores > post.score_threshold))
        if np.any(labels[keep] >= nc):
            raise HarnessError(
                f"model returned class id {int(labels[keep].max())} but profile {profile.name} has {nc} classes"
            )
        keep = at_most(keep[np.lexsort((keep, -scores[keep]))], post.max_detections)
        boxes = model_original_to_original(rows[keep, 2:6].astype(np.float32), meta)
        results.append(Detections(boxes, scores[keep], labels[keep]))
    return results


def decode_paddle(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    dec, post, nc = profile.decoder.params, profile.postprocess, profile.num_classes
    frame, score_mode = dec.boxes, dec.scores
    arranged = arrange_outputs(outputs, nc)
    if arranged[0] == "nms":
        return _decode_nms(arranged[1], arranged[2], metas, profile)
    _, boxes, scores, single = arranged
    cells = sum(grid_cells(profile.input.width, profile.input.height, dec.strides))
    if boxes.shape[1] != cells:
        _fail(outputs, nc, f"{boxes.shape[1]} boxes; expected N = {cells}, one per grid cell at strides "
                           f"{strides_text(dec.strides)} of a {profile.input.width}x{profile.input.height} input")
    check_batch(boxes.shape[0], metas)
    in_input_pixels = single or frame == "input"
    results = []
    for b, meta in enumerate(metas):
        image_scores = scores[b].astype(np.float32)
        if score_mode == "logits":
            image_scores = 1.0 / (1.0 + np.exp(-image_scores))
        rows, labels, cand_scores = above_threshold(image_scores, post.score_threshold)
        keep = per_class_top_k(cand_scores, labels, post.pre_nms_top_k)
        rows, labels, cand_scores = rows[keep], labels[keep], cand_scores[keep]
        results.append(nms_to_original(boxes[b, rows].astype(np.float32), cand_scores, labels, meta, post,
                                       input_to_original if in_input_pixels else model_original_to_original))
    return results


FAMILY = DecoderFamily("paddle", Params, decode_paddle, "PaddleDetection exports (PicoDet, PP-YOLOE), NMS in or out")
