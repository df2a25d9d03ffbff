"""NanoDet / GFL-head decoder (NanoDet, NanoDet-Plus and look-alikes).

Per prior: C class scores and 4 x (reg_max + 1) distribution bins for the distances to the left,
top, right and bottom sides; distance = stride * E[softmax(bins)]. Exports differ in how they lay
this out, so outputs are matched by shape, never by name (real exports carry wrong names):
- one concatenated tensor [B, N, C + R] (N = priors of all levels, level by level),
- per-level score maps [B, n_l, C] and box maps [B, n_l, R], in any order,
- per-level combined maps [B, n_l, C + R] or channel-first maps [B, C + R, H_l, W_l],
and a batch dimension may be missing where the export baked batch 1 in.

Post-processing: candidates above score_threshold, the pre_nms_top_k best kept per level (NanoDet's
nms_pre; `top_k_scope = "level"`) or per class (PaddleDetection's MultiClassNMS nms_top_k, which
PicoDet's published mAP used; `top_k_scope = "class"`), boxes clipped to the input before NMS
(NanoDet's distance2bbox max_shape; `clip_before_nms = false` for PicoDet, whose head does not),
class-aware NMS, max_detections best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from harness.core.config import setting
from harness.core.jit import compiled
from harness.decode.geometry import OutputLayoutError, cell_grid, check_strides, level_sizes
from harness.decode.nms import above_threshold, descending_order, nms_to_original, per_class_top_k
from harness.decode.types import DecoderFamily, Detections, check_batch, output_shapes


@dataclass(frozen=True)
class Params:
    """[decoder] of kind "gfl"."""

    strides: tuple[int, ...] = setting((8, 16, 32), gt=0, nonempty=True)
    reg_max: int = setting(7, ge=1, le=64)  # box bins per side - 1
    prior_offset: float = setting(0.0, ge=0, le=1)  # prior centre = (col + offset) * stride
    scores: Literal["sigmoid", "logits"] = "sigmoid"  # "sigmoid": already applied in the graph
    # pre_nms_top_k per level (NanoDet's nms_pre) or per class (Paddle MultiClassNMS's nms_top_k)
    top_k_scope: Literal["level", "class"] = "level"
    clip_before_nms: bool = True  # boxes clipped to the input before NMS (NanoDet); PicoHead does not

    def __post_init__(self):
        check_strides(self.strides)


@lru_cache(maxsize=32)
def make_priors(width: int, height: int, strides: tuple[int, ...], offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Prior centres (N, 2) as (x, y) in input pixels, ((col, row) + offset) x stride, and each prior's
    stride (N,); cached, read-only."""
    cells, prior_strides = cell_grid(width, height, strides)
    centres = (cells + np.float32(offset)) * prior_strides[:, None]
    centres.flags.writeable = False
    return centres, prior_strides


def _as_rows(array: np.ndarray, batch: int) -> np.ndarray:
    """Bring an output to (B, n, channels): add a missing batch dim, flatten channel-first maps."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 4:
        b, c, h, w = array.shape
        return array.reshape(b, c, h * w).transpose(0, 2, 1)
    return array


def arrange_outputs(outputs: Sequence[np.ndarray], num_classes: int, reg_bins: int, level_counts: list[int]):
    """Group the outputs as [(scores [B, n, C], bins [B, n, R], first prior, level counts), ...]:
    one group for a single concatenated tensor, one per level for split outputs, in level order.
    Views, never copies (concatenating split outputs cost as much as the whole decode); raises
    with what was expected when the outputs fit no layout."""
    rows = [_as_rows(np.asarray(o), 0) for o in outputs]
    total = sum(level_counts)
    both = num_classes + reg_bins

    def fail(why: str):
        shapes = output_shapes(outputs)
        raise OutputLayoutError(
            f"model outputs [{shapes}] do not fit the GFL profile ({why}): expected one tensor "
            f"[B, {total}, {both}] or per-level tensors with {level_counts} priors and "
            f"{num_classes} score / {reg_bins} box channels ({num_classes} classes, reg_max {reg_bins // 4 - 1})"
        )

    if any(r.ndim != 3 for r in rows):
        fail("every output must be 2-D, 3-D or 4-D")
    batches = {r.shape[0] for r in rows}
    if len(batches) != 1:
        fail(f"outputs disagree on batch size {sorted(batches)}")
    if len(rows) == 1:
        (r,) = rows
        if r.shape[1:] != (total, both):
            fail(f"one output of shape {tuple(r.shape)}")
        return [(r[..., :num_classes], r[..., num_classes:], 0, list(level_counts))]
    if num_classes == reg_bins:
        fail("class count equals box-bin count, so split outputs are ambiguous")
    by_level: dict[int, dict[str, np.ndarray]] = {}
    for r in rows:
        n, c = r.shape[1:]
        kind = {num_classes: "scores", reg_bins: "bins", both: "both"}.get(c)
        if kind is None or n not in level_counts or level_counts.count(n) > 1:
            fail(f"output with {n} priors and {c} channels")
        level = level_counts.index(n)
        if kind == "both":
            by_level.setdefault(level, {})
            by_level[level]["scores"], by_level[level]["bins"] = r[..., :num_classes], r[..., num_classes:]
        else:
            if kind in by_level.get(level, {}):
                fail(f"two {kind} outputs for the level with {n} priors")
            by_level.setdefault(level, {})[kind] = r
    if sorted(by_level) != list(range(len(level_counts))) or any(len(v) != 2 for v in by_level.values()):
        fail("a level's scores or boxes are missing")
    firsts = np.cumsum([0] + list(level_counts))
    return [(by_level[i]["scores"], by_level[i]["bins"], int(firsts[i]), [level_counts[i]])
            for i in range(len(level_counts))]


@compiled
def _centred_logits(bins, rows, size):  # pragma: no cover - compiled
    """Distinct priors among the (sorted) candidate rows, and their bin logits minus each side's
    maximum, as (priors, 4, size) float32 ready for exp."""
    count = rows.shape[0]
    distinct = 0
    for k in range(count):
        if k == 0 or rows[k] != rows[k - 1]:
            distinct += 1
    priors = np.empty(distinct, np.int64)
    logits = np.empty((distinct, 4, size), np.float32)
    p = -1
    for k in range(count):
        if k > 0 and rows[k] == rows[k - 1]:
            continue
        p += 1
        prior = rows[k]
        priors[p] = prior
        for side in range(4):
            peak = bins[prior, side * size]
            for i in range(1, size):
                peak = max(peak, bins[prior, side * size + i])
            for i in range(size):
                logits[p, side, i] = bins[prior, side * size + i] - peak
    return priors, logits


@compiled
def _boxes_from_weights(weights, priors, rows, centres, prior_strides, low, width, height):  # pragma: no cover
    """Softmax expectation per side (weights = exp(centred logits)), then each candidate's xyxy box
    in input pixels, clipped to [low, width] x [low, height] (the input, or nothing with infinities)."""
    size = weights.shape[2]
    prior_boxes = np.empty((priors.shape[0], 4), np.float32)
    for p in range(priors.shape[0]):
        prior = priors[p]
        stride = prior_strides[prior]
        for side in range(4):
            total = np.float32(0.0)
            weighted = np.float32(0.0)
            for i in range(size):
                total += weights[p, side, i]
                weighted += np.float32(i) * weights[p, side, i]
            distance = weighted / total * stride
            centre = centres[prior, side % 2]
            edge = centre - distance if side < 2 else centre + distance
            prior_boxes[p, side] = min(max(edge, low), width if side % 2 == 0 else height)
    boxes = np.empty((rows.shape[0], 4), np.float32)
    p = -1
    for k in range(rows.shape[0]):
        if k == 0 or rows[k] != rows[k - 1]:
            p += 1
        boxes[k] = prior_boxes[p]
    return boxes


def candidate_boxes(bins: np.ndarray, rows: np.ndarray, reg_max: int, centres, prior_strides,
                    width: int, height: int, clip: bool = True) -> np.ndarray:
    """xyxy box in input pixels, clipped to the input unless clip is False, of each candidate's
    prior (rows: sorted prior indices, repeated for multi-class candidates). Distance to each side =
    stride * E[softmax(bins)], computed once per distinct prior; compiled loops around numpy's SIMD
    exp (scalar exp in a compiled loop was the slow part)."""
    priors, logits = _centred_logits(bins, rows, reg_max + 1)
    weights = np.exp(logits, out=logits)
    low, high_x, high_y = (np.float32(0.0), np.float32(width), np.float32(height)) if clip else (
        np.float32(-np.inf), np.float32(np.inf), np.float32(np.inf))
    return _boxes_from_weights(weights, priors, rows, centres, prior_strides, low, high_x, high_y)


def _top_k_per_level(rows: np.ndarray, values: np.ndarray, level_counts: list[int], k: int) -> np.ndarray:
    """Mask over candidates of NanoDet's per-level nms_pre: keep the k priors of each level with the
    best class score (ties: lower prior index first).

    Worked out from the candidates alone: a prior's best score is above the threshold exactly when
    it has a candidate, so the top k of a level are its k best candidate priors (all of them when
    it has no more than k), and each one's best score is the max over its candidates."""
    if rows.size <= k:  # never more distinct priors than candidates: all kept
        return np.ones(rows.size, dtype=bool)
    starts = np.concatenate([[0], np.flatnonzero(rows[1:] != rows[:-1]) + 1])  # rows are sorted
    priors = rows[starts]
    level_of = np.searchsorted(np.cumsum(level_counts), priors, side="right")
    per_level = np.bincount(level_of, minlength=len(level_counts))
    if per_level.max() <= k:
        return np.ones(rows.size, dtype=bool)
    best = np.maximum.reduceat(values, starts)
    keep_prior = np.ones(priors.size, dtype=bool)
    for level in np.flatnonzero(per_level > k):
        members = np.flatnonzero(level_of == level)
        keep_prior[members] = False
        keep_prior[members[descending_order(best[members])[:k]]] = True
    return np.repeat(keep_prior, np.diff(np.append(starts, rows.size)))


def decode_gfl(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    spec, dec, post = profile.input, profile.decoder.params, profile.postprocess
    strides, reg_max, offset, score_mode = list(dec.strides), dec.reg_max, dec.prior_offset, dec.scores
    top_k_scope = dec.top_k_scope if post.pre_nms_top_k > 0 else None
    level_counts = [r * c for r, c in level_sizes(spec.width, spec.height, strides)]
    groups = arrange_outputs(outputs, profile.num_classes, 4 * (reg_max + 1), level_counts)
    check_batch(groups[0][0].shape[0], metas)
    centres, prior_strides = make_priors(spec.width, spec.height, tuple(strides), offset)
    results = []
    for b, meta in enumerate(metas):
        boxes, scores, labels = [], [], []
        for group_scores, group_bins, first, counts in groups:
            image_scores = group_scores[b].astype(np.float32, copy=False)
            if score_mode == "logits":
                image_scores = 1.0 / (1.0 + np.exp(-image_scores))
            rows, classes, values = above_threshold(image_scores, post.score_threshold)
            if top_k_scope == "level":
                keep = _top_k_per_level(rows, values, counts, post.pre_nms_top_k)
                rows, classes, values = rows[keep], classes[keep], values[keep]
            if rows.size == 0:
                continue
            # Boxes only for candidate priors; each (prior, class) candidate gets its prior's box.
            span = slice(first, first + sum(counts))
            image_bins = group_bins[b]
            if image_bins.dtype not in (np.float32, np.float64):
                image_bins = image_bins.astype(np.float32)  # e.g. fp16 outputs
            boxes.append(candidate_boxes(image_bins, rows, reg_max, centres[span], prior_strides[span],
                                         spec.width, spec.height, dec.clip_before_nms))
            scores.append(values)
            labels.append(classes)
        if not scores:
            results.append(Detections.empty())
            continue
        if len(scores) > 1:
            boxes, scores, labels = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
        else:
            boxes, scores, labels = boxes[0], scores[0], labels[0]
        if top_k_scope == "class":
            keep = per_class_top_k(scores, labels, post.pre_nms_top_k)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        results.append(nms_to_original(boxes, scores, labels, meta, post))
    return results


FAMILY = DecoderFamily("gfl", Params, decode_gfl, "NanoDet / NanoDet-Plus / PicoDet legacy GFL heads")
