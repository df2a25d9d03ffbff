"""NanoDet / GFL-head decoder (NanoDet, NanoDet-Plus and look-alikes).

Per prior: C class scores and 4 x (reg_max + 1) distribution bins for the distances to the left,
top, right and bottom sides; distance = stride * E[softmax(bins)]. Exports differ in how they lay
this out, so outputs are matched by shape, never by name (real exports carry wrong names):
- one concatenated tensor [B, N, C + R] (N = priors of all levels, level by level),
- per-level score maps [B, n_l, C] and box maps [B, n_l, R], in any order,
- per-level combined maps [B, n_l, C + R] or channel-first maps [B, C + R, H_l, W_l],
and a batch dimension may be missing where the export baked batch 1 in.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from harness.decode import register
from harness.decode.nms import multiclass_nms
from harness.decode.types import Detections
from harness.errors import HarnessError
from harness.preprocess import input_to_original


def level_sizes(width: int, height: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """(rows, cols) of the prior grid per stride, as NanoDet computes them (ceil division)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


@lru_cache(maxsize=32)
def make_priors(width: int, height: int, strides: tuple[int, ...], offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Prior centres (N, 2) as (x, y) in input pixels, and each prior's stride (N,); cached, read-only."""
    centres, prior_strides = [], []
    for (rows, cols), stride in zip(level_sizes(width, height, strides), strides):
        ys, xs = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        centres.append(np.stack([(xs.ravel() + offset) * stride, (ys.ravel() + offset) * stride], axis=1))
        prior_strides.append(np.full(rows * cols, stride, dtype=np.float32))
    centres_all, strides_all = np.concatenate(centres), np.concatenate(prior_strides)
    centres_all.flags.writeable = False
    strides_all.flags.writeable = False
    return centres_all, strides_all


def _as_rows(array: np.ndarray, batch: int) -> np.ndarray:
    """Bring an output to (B, n, channels): add a missing batch dim, flatten channel-first maps."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 4:
        b, c, h, w = array.shape
        return array.reshape(b, c, h * w).transpose(0, 2, 1)
    return array


def arrange_outputs(outputs: Sequence[np.ndarray], num_classes: int, reg_bins: int, level_counts: list[int]):
    """Return (scores [B,N,C], bins [B,N,R]) from any supported layout, or raise with what was expected."""
    rows = [_as_rows(np.asarray(o), 0) for o in outputs]
    total = sum(level_counts)
    both = num_classes + reg_bins

    def fail(why: str):
        shapes = ", ".join(str(tuple(np.shape(o))) for o in outputs)
        raise HarnessError(
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
        return r[..., :num_classes], r[..., num_classes:]
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
    scores = np.concatenate([by_level[i]["scores"] for i in range(len(level_counts))], axis=1)
    bins = np.concatenate([by_level[i]["bins"] for i in range(len(level_counts))], axis=1)
    return scores, bins


def _softmax_expectation(bins: np.ndarray, reg_max: int) -> np.ndarray:
    """(K, 4*(reg_max+1)) bin logits -> (K, 4) expected distances in stride units."""
    # Bins as rows (reg_max+1, K*4): numpy reduces across rows far faster than along a short last axis.
    logits = np.ascontiguousarray(bins.reshape(-1, reg_max + 1).T, dtype=np.float32)
    weights = np.exp(logits - logits.max(axis=0))
    return ((np.arange(reg_max + 1, dtype=np.float32) @ weights) / weights.sum(axis=0)).reshape(-1, 4)


def _top_k_per_level(max_scores: np.ndarray, level_counts: list[int], k: int) -> np.ndarray:
    """Mask of priors kept by NanoDet's per-level nms_pre (top-k by best class score)."""
    keep = np.zeros(max_scores.shape[0], dtype=bool)
    start = 0
    for n in level_counts:
        level = max_scores[start : start + n]
        if n > k:
            keep[start + np.argpartition(-level, k - 1)[:k]] = True
        else:
            keep[start : start + n] = True
        start += n
    return keep


@register("gfl")
def decode_gfl(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    spec, dec, post = profile.input, profile.decoder, profile.postprocess
    strides = [int(s) for s in dec.get("strides", (8, 16, 32))]
    reg_max = int(dec.get("reg_max", 7))
    offset = float(dec.get("prior_offset", 0.0))
    score_mode = dec.get("scores", "sigmoid")
    if score_mode not in ("sigmoid", "logits"):
        raise HarnessError(f"profile {profile.name}: [decoder] scores must be 'sigmoid' or 'logits'")
    level_counts = [r * c for r, c in level_sizes(spec.width, spec.height, strides)]
    scores, bins = arrange_outputs(outputs, profile.num_classes, 4 * (reg_max + 1), level_counts)
    if scores.shape[0] < len(metas):
        raise HarnessError(
            f"model returned outputs for {scores.shape[0]} image(s) but the batch holds {len(metas)}: "
            "its outputs have a fixed batch of 1"
        )
    centres, prior_strides = make_priors(spec.width, spec.height, tuple(strides), offset)
    count = len(metas)
    scores = scores[:count].astype(np.float32, copy=False)
    if score_mode == "logits":
        scores = 1.0 / (1.0 + np.exp(-scores))
    # One threshold over the whole batch: (image, prior, class) candidates, in that order.
    above = scores > post.score_threshold
    if post.pre_nms_top_k > 0:
        max_scores = scores.max(axis=2)
        for b in range(count):
            above[b] &= _top_k_per_level(max_scores[b], level_counts, post.pre_nms_top_k)[:, None]
    flat = np.flatnonzero(above)  # faster than a 3-D nonzero; same (image, prior, class) order
    cand_prior, cand_label = np.divmod(flat, scores.shape[2])
    cand_image, cand_prior = np.divmod(cand_prior, scores.shape[1])
    # Image b's candidates are the slice [bounds[b], bounds[b + 1]).
    bounds = np.searchsorted(cand_image, np.arange(count + 1))
    results = []
    for b, meta in enumerate(metas):
        lo, hi = bounds[b], bounds[b + 1]
        if lo == hi:
            results.append(Detections.empty())
            continue
        prior_of, labels = cand_prior[lo:hi], cand_label[lo:hi]
        # Only candidate priors pay for the softmax; each (prior, class) row then points at its prior.
        starts = np.flatnonzero(np.r_[True, prior_of[1:] != prior_of[:-1]])  # prior_of is sorted
        priors = prior_of[starts]
        rows = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, prior_of.size]))
        dist = _softmax_expectation(bins[b, priors], reg_max) * prior_strides[priors, None]
        c = centres[priors]
        boxes = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1)
        np.clip(boxes[:, 0::2], 0, spec.width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, spec.height, out=boxes[:, 1::2])
        dets = multiclass_nms(
            boxes[rows], scores[b, prior_of, labels], labels,
            post.score_threshold, post.iou_threshold, post.max_detections,
        )
        dets.boxes = input_to_original(dets.boxes, meta)
        results.append(dets)
    return results
