"""EfficientDet decoder (anchor-based RetinaNet-style head, as in rwightman's `effdet` package).

Anchors: levels min_level..max_level (3..7), per location num_scales (3) octave scales
2^(i/num_scales) x aspect ratios ((1, 1), (1.4, 0.7), (0.7, 1.4)), base size anchor_scale (4) x stride;
anchor order is level, row, column, then (scale, aspect) - effdet's Anchors._generate_boxes.
Box regression per anchor is (ty, tx, th, tw), decoded like effdet's decode_box_outputs.

Outputs are matched by shape, never by name:
- per-level class maps [B, A*C, H, W] and box maps [B, A*4, H, W] (effdet's own outputs, and the
  Ascend EfficientDet-D0 .om: outputs 0-4 classes, 5-9 boxes; any order), channel-last
  [B, H, W, A*C] / [B, H, W, A*4] also accepted;
- or the concatenation: class logits [B, N, C] + boxes [B, N, 4] (N = all anchors, effdet order);
a missing batch dimension (baked batch 1) is added back.

Post-processing follows effdet's DetBenchPredict: top-k (pre_nms_top_k, effdet's
max_detection_points = 5000) over all (anchor, class) logits, sigmoid, decode, clip to the image
region (boxes clipped to zero area are dropped), class-aware NMS, max_detections best.
Class index i is COCO category id i + 1 (90 classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from harness.core.config import Invalid, setting
from harness.decode.geometry import OutputLayoutError
from harness.decode.nms import nms_to_original, top_k_indices
from harness.decode.types import DecoderFamily, Detections, check_batch, output_shapes

DEFAULT_ASPECTS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


@dataclass(frozen=True)
class Params:
    """[decoder] of kind "effdet" (effdet's anchor configuration)."""

    min_level: int = setting(3, ge=1, le=10)
    max_level: int = setting(7, ge=1, le=10)
    num_scales: int = setting(3, ge=1)
    aspect_ratios: tuple[tuple[float, float], ...] = setting(DEFAULT_ASPECTS, gt=0, nonempty=True)
    anchor_scale: float = setting(4.0, gt=0)
    scores: Literal["sigmoid", "logits"] = "logits"  # class outputs are logits unless "sigmoid"

    def __post_init__(self):
        if self.max_level < self.min_level:
            raise Invalid("max_level", f"{self.max_level} is below min_level {self.min_level}")


def feature_sizes(height: int, width: int, min_level: int, max_level: int) -> list[tuple[int, int]]:
    """(rows, cols) per level, as effdet's get_feat_sizes: halve with ceil at every level."""
    sizes = [(height, width)]
    for _ in range(max_level):
        h, w = sizes[-1]
        sizes.append(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    return sizes[min_level : max_level + 1]


@lru_cache(maxsize=16)
def make_anchors(
    height: int,
    width: int,
    min_level: int,
    max_level: int,
    num_scales: int,
    aspects: tuple[tuple[float, float], ...],
    anchor_scale: float,
) -> np.ndarray:
    """All anchors (N, 4) as (ymin, xmin, ymax, xmax) in input pixels, effdet's order; cached, read-only."""
    levels = []
    for rows, cols in feature_sizes(height, width, min_level, max_level):
        stride_y, stride_x = height / rows, width / cols
        octave = 2.0 ** (np.arange(num_scales, dtype=np.float64) / num_scales)
        aspect = np.asarray(aspects, dtype=np.float64)  # (n_aspects, 2) = (x, y)
        # (A,) half sizes, scale-major then aspect, as effdet's configs are built.
        half_x = (anchor_scale * stride_x * octave[:, None] * aspect[None, :, 0] / 2.0).ravel()
        half_y = (anchor_scale * stride_y * octave[:, None] * aspect[None, :, 1] / 2.0).ravel()
        xs = np.arange(stride_x / 2, width, stride_x)
        ys = np.arange(stride_y / 2, height, stride_y)
        xv, yv = np.meshgrid(xs, ys)
        xv, yv = xv.reshape(-1, 1), yv.reshape(-1, 1)
        boxes = np.stack([yv - half_y, xv - half_x, yv + half_y, xv + half_x], axis=-1)  # (HW, A, 4)
        levels.append(boxes.reshape(-1, 4))
    anchors = np.concatenate(levels).astype(np.float32)
    anchors.flags.writeable = False
    return anchors


def decode_boxes(rel_codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(K, 4) (ty, tx, th, tw) + (K, 4) yxyx anchors -> (K, 4) xyxy, as effdet's decode_box_outputs."""
    rel_codes = rel_codes.astype(np.float32, copy=False)
    yc_a = (anchors[:, 0] + anchors[:, 2]) / 2
    xc_a = (anchors[:, 1] + anchors[:, 3]) / 2
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    ty, tx, th, tw = rel_codes.T
    w = np.exp(tw) * wa
    h = np.exp(th) * ha
    yc = ty * ha + yc_a
    xc = tx * wa + xc_a
    return np.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], axis=1)


def _map_rows(array: np.ndarray, size: tuple[int, int], channels: int, per_anchor: int) -> np.ndarray | None:
    """A [B, A*k, H, W] or [B, H, W, A*k] map -> (B, H*W*A, k), or None if it is not one."""
    rows, cols = size
    b = array.shape[0]
    if array.shape[1:] == (channels, rows, cols):
        return array.transpose(0, 2, 3, 1).reshape(b, -1, per_anchor)
    if array.shape[1:] == (rows, cols, channels):
        return array.reshape(b, -1, per_anchor)
    return None


def arrange_outputs(outputs: Sequence[np.ndarray], num_classes: int, num_anchors: int, sizes: list[tuple[int, int]]):
    """(class logits [B, N, C], box codes [B, N, 4]) from any supported layout, or an OutputLayoutError."""
    arrays = [np.asarray(o) for o in outputs]
    total = sum(r * c for r, c in sizes) * num_anchors
    cls_ch, box_ch = num_anchors * num_classes, num_anchors * 4

    def fail(why: str):
        shapes = output_shapes(arrays)
        raise OutputLayoutError(
            f"model outputs [{shapes}] do not fit the EfficientDet profile ({why}): expected "
            f"{len(sizes)} class maps [B, {cls_ch}, H, W] and {len(sizes)} box maps [B, {box_ch}, H, W] "
            f"with (H, W) = {', '.join(f'{r}x{c}' for r, c in sizes)} ({num_anchors} anchors x "
            f"{num_classes} classes), or class logits [B, {total}, {num_classes}] + boxes [B, {total}, 4]"
        )

    if num_classes == 4:
        fail("4 classes make class and box outputs indistinguishable")
    if len(arrays) == 2 * len(sizes):
        arrays = [a[None] if a.ndim == 3 else a for a in arrays]
        if any(a.ndim != 4 for a in arrays):
            fail("per-level maps must be 4-D")
        cls_levels: dict[int, np.ndarray] = {}
        box_levels: dict[int, np.ndarray] = {}
        for a in arrays:
            match = None
            for level, size in enumerate(sizes):
                for store, ch, k in ((cls_levels, cls_ch, num_classes), (box_levels, box_ch, 4)):
                    rows = _map_rows(a, size, ch, k)
                    if rows is not None and match is None:
                        match = (store, level, rows)
            if match is None:
                fail(f"output of shape {tuple(a.shape)} matches no level")
            store, level, rows = match
            if level in store:
                fail(f"two outputs for level {level} of shape {tuple(a.shape)}")
            store[level] = rows
        if len(cls_levels) != len(sizes) or len(box_levels) != len(sizes):
            fail("a level's class or box map is missing")
        if len({r.shape[0] for r in (*cls_levels.values(), *box_levels.values())}) != 1:
            fail("outputs disagree on batch size")
        order = range(len(sizes))
        return (np.concatenate([cls_levels[i] for i in order], axis=1),
                np.concatenate([box_levels[i] for i in order], axis=1))
    if len(arrays) == 2:
        arrays = [a[None] if a.ndim == 2 else a for a in arrays]
        if any(a.ndim != 3 or a.shape[1] != total for a in arrays):
            fail(f"concatenated outputs need {total} anchors")
        by_ch = {a.shape[2]: a for a in arrays}
        if set(by_ch) != {num_classes, 4} or arrays[0].shape[0] != arrays[1].shape[0]:
            fail("need one class and one box output of the same batch")
        return by_ch[num_classes], by_ch[4]
    fail(f"{len(arrays)} outputs")


def decode_effdet(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    spec, dec, post = profile.input, profile.decoder.params, profile.postprocess
    min_level, max_level, num_scales = dec.min_level, dec.max_level, dec.num_scales
    aspects, anchor_scale, score_mode = dec.aspect_ratios, dec.anchor_scale, dec.scores
    num_classes = profile.num_classes
    sizes = feature_sizes(spec.height, spec.width, min_level, max_level)
    cls, box = arrange_outputs(outputs, num_classes, num_scales * len(aspects), sizes)
    check_batch(cls.shape[0], metas)
    anchors = make_anchors(spec.height, spec.width, min_level, max_level, num_scales, aspects, anchor_scale)
    results = []
    for b, meta in enumerate(metas):
        flat = cls[b].reshape(-1)
        index = top_k_indices(flat, post.pre_nms_top_k)  # effdet: topk over all (anchor, class) logits
        anchor_index, labels = np.divmod(index, num_classes)
        scores = flat[index].astype(np.float32)
        if score_mode == "logits":
            scores = 1.0 / (1.0 + np.exp(-scores))
        boxes = decode_boxes(box[b, anchor_index], anchors[anchor_index])
        # effdet clips to the resized image (not the padded canvas) before NMS.
        x0, y0 = meta.pad_x, meta.pad_y
        np.clip(boxes[:, 0::2], x0, x0 + meta.width * meta.scale_x, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], y0, y0 + meta.height * meta.scale_y, out=boxes[:, 1::2])
        # Boxes clipped to nothing (wholly in the padding) can never match: drop them. effdet keeps
        # them as zero-area detections that take top-100 slots; the rest is identical.
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[real], scores[real], labels[real]
        results.append(nms_to_original(boxes, scores, labels, meta, post))
    return results


FAMILY = DecoderFamily("effdet", Params, decode_effdet, "EfficientDet (effdet anchors, levels 3-7)")
