"""The compiled decode kernels give the answers of plain, obviously-correct code.

- multiclass_nms against a readable greedy loop (ties, zero-area boxes, float64 scores, caps), against
  one OpenCV NMSBoxesBatched call where OpenCV's semantics agree (no zero-area boxes), and on real
  model outputs decoded both ways;
- above_threshold against np.nonzero, descending_order against a stable argsort, the per-level
  top-k against a full per-level sort, candidate_boxes against a numpy softmax.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.decode.gfl import _top_k_per_level, candidate_boxes, make_priors
from harness.decode.nms import above_threshold, descending_order, multiclass_nms
from harness.decode.types import Detections
from tests.conftest import need_shared


def _iou(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_reference(boxes, scores, labels, score_threshold, iou_threshold, max_detections) -> list[int]:
    """The definition, as a plain loop: best float32 score first (ties: lower index), drop a box
    overlapping a kept box of its class by IoU > threshold, stop at max_detections."""
    s32 = np.asarray(scores, np.float32)
    order = sorted((i for i in range(len(s32)) if s32[i] > score_threshold), key=lambda i: (-float(s32[i]), i))
    b64 = np.asarray(boxes, np.float64)
    kept: list[int] = []
    for i in order:
        if all(labels[j] != labels[i] or _iou(b64[i], b64[j]) <= iou_threshold for j in kept):
            kept.append(i)
            if 0 < max_detections <= len(kept):
                break
    return kept


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 1500))
    xy = rng.random((n, 2)) * 300
    boxes = np.concatenate([xy, xy + rng.random((n, 2)) * 80 + 1], 1).astype(np.float32)
    if seed % 3 == 0:
        boxes = np.round(boxes / 10) * 10  # exact duplicates and zero-area boxes
    scores = rng.random(n).astype(np.float32)
    if seed % 2 == 0:
        scores = np.round(scores, 2).astype(np.float32)  # many equal scores
    if seed % 4 == 1:
        scores = scores.astype(np.float64)
    labels = rng.integers(0, int(rng.integers(1, 80)), n)
    return boxes, scores, labels


@pytest.mark.parametrize("seed", range(12))
def test_nms_equals_the_plain_greedy_loop(seed):
    boxes, scores, labels = _random_case(seed)
    for max_det in (1, 10, 100, 0):
        for iou in (0.3, 0.6, 0.9):
            got = multiclass_nms(boxes, scores, labels, 0.05, iou, max_det)
            want = greedy_reference(boxes, scores, labels, 0.05, iou, max_det)
            np.testing.assert_array_equal(got.boxes, boxes[want])
            np.testing.assert_array_equal(got.scores, np.asarray(scores, np.float32)[want])
            np.testing.assert_array_equal(got.labels, labels[want])


def _opencv_nms(boxes, scores, labels, score_threshold, iou_threshold, max_detections) -> Detections:
    """One NMSBoxesBatched call over every candidate (the implementation before the compiled one)."""
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if scores.size == 0:
        return Detections.empty()
    xywh = np.empty((boxes.shape[0], 4), np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    index = cv2.dnn.NMSBoxesBatched(xywh, scores.astype(np.float32), labels.astype(np.int32),
                                    float(score_threshold), float(iou_threshold))
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    order = np.lexsort((index, -scores[index].astype(np.float32)))
    index = index[order][:max_detections]
    return Detections(boxes[index].astype(np.float32), scores[index].astype(np.float32), labels[index].astype(np.int64))


@pytest.mark.parametrize("seed", [s for s in range(12) if s % 3])  # OpenCV merges zero-area boxes of any class
def test_nms_equals_one_opencv_call(seed):
    boxes, scores, labels = _random_case(seed)
    for max_det in (1, 100, 300):
        for iou in (0.3, 0.6, 0.9):
            got = multiclass_nms(boxes, scores, labels, 0.05, iou, max_det)
            want = _opencv_nms(boxes, scores, labels, 0.05, iou, max_det)
            np.testing.assert_array_equal(got.boxes, want.boxes)
            np.testing.assert_array_equal(got.scores, want.scores)
            np.testing.assert_array_equal(got.labels, want.labels)


def test_zero_area_boxes_never_suppress():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    dets = multiclass_nms(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.zeros(4, int), 0.05, 0.5, 100)
    assert dets.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])  # only the real duplicate goes


@pytest.mark.parametrize("model", ["nanodet-m-320", "nanodet-plus-m-320-int8-ov"])
def test_decode_on_real_outputs_equals_opencv_nms(coco_tiny, model):
    """Real outputs (the int8 IR's quantised scores tie a lot) decoded with both NMS implementations."""
    from harness.data.coco import load_dataset
    from harness.decode import nms as nms_module
    from harness.measure.pipeline import accuracy_pass
    from harness.profiles import load_profile
    from harness.targets import get_target

    path = (need_shared("models", "nanodet-m-320.onnx") if model == "nanodet-m-320"
            else need_shared("models", model, "model.xml"))
    target_name = "ort" if model == "nanodet-m-320" else "ov"
    ok, why = get_target(target_name).availability()
    if not ok:
        pytest.skip(why)
    profile = load_profile(model)
    target = get_target(target_name)(path, profile, {})
    target.load(1)
    images = load_dataset(*coco_tiny).images[:30]
    ours = accuracy_pass(target, images, 1, profile, pipelined=False)
    original = nms_module.multiclass_nms  # every decoder's tail calls it (nms.nms_to_original)
    nms_module.multiclass_nms = _opencv_nms
    try:
        ref = accuracy_pass(target, images, 1, profile, pipelined=False)
    finally:
        nms_module.multiclass_nms = original
        target.close()
    assert len(ours.detections) > 500
    assert ours.detections == ref.detections


# ------------------------------------------------------------------ the other kernels

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_above_threshold_equals_nonzero_on_any_view(dtype):
    rng = np.random.default_rng(0)
    table = rng.random((300, 45)).astype(dtype)
    views = [table, table[:, :32], table[:, 5:20], table[::3], table.T, table[:0], table[:, :0],
             np.asfortranarray(table)]
    for view in views:
        for threshold in (0.0, 0.5, 0.99, 2.0):
            rows, cols, values = above_threshold(view, threshold)
            want_rows, want_cols = np.nonzero(view > threshold)
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_array_equal(cols, want_cols)
            np.testing.assert_array_equal(values, view[want_rows, want_cols])


def test_descending_order_equals_stable_argsort():
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 2000):
        values = np.round(rng.normal(size=n), 1).astype(np.float32)
        values[: n // 4] = 0.0
        if n > 4:
            values[1:4] = [-0.0, np.inf, -np.inf]
        np.testing.assert_array_equal(descending_order(values), np.argsort(-values, kind="stable"))


def test_top_k_per_level_equals_a_full_sort():
    rng = np.random.default_rng(2)
    for _ in range(200):
        counts = [int(c) for c in rng.integers(1, 40, size=rng.integers(1, 4))]
        scores = np.round(rng.random((sum(counts), 5)), 2).astype(np.float32)  # ties included
        k = int(rng.integers(1, 30))
        rows, _, values = above_threshold(scores, 0.5)
        best = scores.max(axis=1)
        keep, start = np.zeros(len(best), bool), 0
        for count in counts:  # the k best priors of each level, ties to the lower index
            keep[start + np.argsort(-best[start : start + count], kind="stable")[:k]] = True
            start += count
        np.testing.assert_array_equal(_top_k_per_level(rows, values, counts, k), keep[rows])


def test_candidate_boxes_equal_numpy_softmax():
    rng = np.random.default_rng(3)
    centres, strides = make_priors(64, 48, (8, 16), 0.0)
    bins = (rng.normal(size=(len(centres), 32)) * 4).astype(np.float32)
    rows = np.sort(rng.choice(len(centres), 40))  # sorted, with repeats (multi-class candidates)
    logits = bins[rows].reshape(-1, 4, 8).astype(np.float64)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))
    distance = (weights * np.arange(8)).sum(axis=2) / weights.sum(axis=2) * strides[rows, None]
    want = np.concatenate([centres[rows] - distance[:, :2], centres[rows] + distance[:, 2:]], axis=1)
    want = np.clip(want, 0, [64, 48, 64, 48])
    np.testing.assert_allclose(candidate_boxes(bins, rows, 7, centres, strides, 64, 48), want, atol=1e-4)


@pytest.mark.slow
def test_kernels_work_where_no_cache_folder_can_be_written():
    """numba refuses cache=True at import time when no cache folder is writable (read-only install,
    no writable home); harness.core.jit then compiles in memory instead of failing."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from harness.decode.nms import multiclass_nms\n"
        "from harness.images.preprocess import to_model_layout\n"
        "from harness.profiles import InputSpec\n"
        "d = multiclass_nms(np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32),"
        " np.array([0.9, 0.8], np.float32), np.array([0, 0]), 0.05, 0.6, 100)\n"
        "x = to_model_layout(np.full((2, 2, 3), 7, np.uint8), InputSpec(2, 2, mean=(1, 1, 1)))\n"
        "print(d.scores.tolist(), float(x[0, 0, 0]))\n"
    )
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator",
               NUMBA_CACHE_DIR="/proc/harness-no-cache")  # /proc: not writable, even for root
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[0.8999999761581421]", "6.0"]
