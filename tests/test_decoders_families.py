"""Decoders for EfficientDet, Paddle (PicoDet / PP-YOLOE) and YOLO exports.

Two kinds of tests:
- hand-computed cases that always run (CI installs only the [test] extra): one anchor / prior with a
  known regression -> known box, objectness x class, scale_factor mapping, -1 rows, error messages;
- oracle tests that compare the harness decoder with the family's own post-processing on the same
  raw outputs (effdet, ultralytics, paddlepaddle), skipped with a reason where the package is absent.
  See docs/decoders.md for the versions used.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import math
import os
import sys
import types

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.decode import decode
from harness.decode.effdet import feature_sizes, make_anchors
from harness.decode.nms import per_class_top_k
from harness.decode.paddle import model_original_to_original
from harness.decode.types import Detections
from harness.images.preprocess import ImageMeta, place_geometry
from harness.model.extra_inputs import extra_inputs
from harness.profiles import load_profile, profile_from_dict
from tests.conftest import with_decoder_params

try:  # only the oracle tests use torch; module-level so TorchScript can compile the NMS below
    import torch
except ImportError:  # pragma: no cover - CI without torch
    torch = None

TOL_PX = 1e-3


def meta_for(width: int, height: int, profile, image_id: int = 1) -> ImageMeta:
    """The meta the preprocessor would record for an image of width x height."""
    _, _, sx, sy, px, py = place_geometry(width, height, profile.input)
    return ImageMeta(image_id, f"img{image_id}.jpg", width, height, sx, sy, float(px), float(py))


def with_post(profile, **changes):
    return dataclasses.replace(profile, postprocess=dataclasses.replace(profile.postprocess, **changes))


def logit(p):
    return float(np.log(p / (1 - p)))


def full_rows(pred: np.ndarray, rows: int, axis: int = 1) -> np.ndarray:
    """pred padded with zero rows along axis to the row count the head's geometry gives (decoders
    refuse other counts); zero rows score 0 and never become detections."""
    pad = [(0, 0)] * pred.ndim
    pad[axis] = (0, rows - pred.shape[axis])
    return np.pad(pred, pad)


V5_ROWS = 25200  # 3 anchors x (80x80 + 40x40 + 20x20) at 640
V8_ROWS = 8400   # one per grid cell at 640


# ----------------------------------------------------------------------------------------------
# EfficientDet: hand-computed
# ----------------------------------------------------------------------------------------------

EFF = load_profile("efficientdet-d0")
EFF_SIZES = feature_sizes(512, 512, 3, 7)
EFF_N = sum(r * c for r, c in EFF_SIZES) * 9


def test_effdet_anchor_grid_matches_effdet_convention():
    assert EFF_SIZES == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    anchors = make_anchors(512, 512, 3, 7, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 4.0)
    assert anchors.shape == (EFF_N, 4) == (49104, 4)
    # level 3 (stride 8), first location (centre 4, 4), scale 2^0, aspect (1, 1): size 4 * 8 = 32
    np.testing.assert_allclose(anchors[0], [-12, -12, 20, 20])
    # second anchor: aspect (1.4, 0.7) -> half sizes x 22.4, y 11.2 (yxyx order)
    np.testing.assert_allclose(anchors[1], [4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4], atol=1e-5)
    # fourth anchor: octave 2^(1/3), aspect (1, 1)
    half = 16 * 2 ** (1 / 3)
    np.testing.assert_allclose(anchors[3], [4 - half, 4 - half, 4 + half, 4 + half], atol=1e-5)
    # 9 anchors per location: anchor 9 is the next column (x centre 12)
    np.testing.assert_allclose(anchors[9], [-12, -4, 20, 28])
    # last level (stride 128), last location centre (448, 448), scale 2^(2/3), aspect (0.7, 1.4)
    base = 4 * 128 * 2 ** (2 / 3)
    np.testing.assert_allclose(anchors[-1], [448 - base * 0.7, 448 - base * 0.35, 448 + base * 0.7, 448 + base * 0.35],
                               rtol=1e-6)


def _effdet_single(level: int, row: int, col: int, a: int, cls: int, codes, batch: int = 1):
    """Per-level maps with one confident (anchor, class) and the given box codes, all else quiet."""
    cls_maps, box_maps = [], []
    for lv, (h, w) in enumerate(EFF_SIZES):
        c = np.full((batch, 9 * 90, h, w), -8.0, np.float32)
        b = np.zeros((batch, 36, h, w), np.float32)
        if lv == level:
            c[:, a * 90 + cls, row, col] = logit(0.9)
            b[:, a * 4 : a * 4 + 4, row, col] = codes
        cls_maps.append(c)
        box_maps.append(b)
    return cls_maps, box_maps


def test_effdet_single_anchor_known_box_both_layouts():
    # level 4 (stride 16), row 3, col 5 -> centre (5*16+8, 3*16+8) = (88, 56); anchor a = 0: 64 x 64
    codes = (0.25, -0.5, math.log(2.0), 0.0)  # ty, tx, th, tw
    cls_maps, box_maps = _effdet_single(1, 3, 5, 0, 17, codes)
    cx, cy = 88 + (-0.5) * 64, 56 + 0.25 * 64
    expected = [cx - 32, cy - 64, cx + 32, cy + 64]
    meta = ImageMeta(1, "a.jpg", 512, 512, 1.0, 1.0, 0.0, 0.0)
    (dets,) = decode(cls_maps + box_maps, [meta], EFF)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], np.clip(expected, 0, 512), atol=TOL_PX)
    assert dets.labels[0] == 17 and EFF.category_ids[17] == 18
    assert dets.scores[0] == pytest.approx(0.9, abs=1e-6)
    # any output order, and the concatenated [B, N, C] + [B, N, 4] layout, give the same detections
    (shuffled,) = decode(box_maps[::-1] + cls_maps[::-1], [meta], EFF)
    cat_cls = np.concatenate([m.transpose(0, 2, 3, 1).reshape(1, -1, 90) for m in cls_maps], axis=1)
    cat_box = np.concatenate([m.transpose(0, 2, 3, 1).reshape(1, -1, 4) for m in box_maps], axis=1)
    (concat,) = decode([cat_box, cat_cls], [meta], EFF)
    for other in (shuffled, concat):
        np.testing.assert_allclose(other.boxes, dets.boxes, atol=TOL_PX)
        np.testing.assert_array_equal(other.labels, dets.labels)


def test_effdet_topleft_letterbox_maps_back_and_clips_to_image():
    # 640x480 -> scale 0.8, 512x384 pasted top-left; level 3, row 10, col 20, anchor 4: aspect (1.4,0.7)
    cls_maps, box_maps = _effdet_single(0, 10, 20, 4, 0, (0.0, 0.0, 0.0, 0.0))
    meta = meta_for(640, 480, EFF)
    assert (meta.scale_x, meta.pad_x, meta.pad_y) == (0.8, 0.0, 0.0)
    (dets,) = decode(cls_maps + box_maps, [meta], EFF)
    anchors = make_anchors(512, 512, 3, 7, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 4.0)
    y0, x0, y1, x1 = anchors[(10 * 64 + 20) * 9 + 4]
    np.testing.assert_allclose(dets.boxes[0], np.array([x0, y0, x1, y1]) / 0.8, atol=TOL_PX)
    # a box straddling the image's bottom edge (y 364..396 > 384) is clipped to it
    cls_maps, box_maps = _effdet_single(0, 47, 20, 0, 0, (0.0, 0.0, 0.0, 0.0))
    (dets,) = decode(cls_maps + box_maps, [meta], EFF)
    assert dets.boxes[0, 3] == pytest.approx(480) and dets.boxes[0, 1] == pytest.approx(364 / 0.8)
    # a box wholly in the padding below the image is clipped to nothing and dropped
    cls_maps, box_maps = _effdet_single(0, 60, 20, 0, 0, (0.0, 0.0, 0.0, 0.0))
    assert len(decode(cls_maps + box_maps, [meta], EFF)[0]) == 0


def test_effdet_shape_mismatch_lists_expected_layouts():
    cls_maps, box_maps = _effdet_single(0, 0, 0, 0, 0, (0, 0, 0, 0))
    meta = ImageMeta(1, "a.jpg", 512, 512, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(HarnessError, match=r"class maps \[B, 810, H, W\].*64x64, 32x32, 16x16, 8x8, 4x4.*\[B, 49104, 90\]"):
        decode(cls_maps + box_maps[:-1], [meta], EFF)
    bad = [np.zeros((1, 720, 64, 64), np.float32)] + cls_maps[1:] + box_maps
    with pytest.raises(HarnessError, match="matches no level"):
        decode(bad, [meta], EFF)
    with pytest.raises(HarnessError, match="fixed batch of 1"):
        decode(cls_maps + box_maps, [meta, meta], EFF)


# ----------------------------------------------------------------------------------------------
# YOLO: hand-computed
# ----------------------------------------------------------------------------------------------

V5 = load_profile("yolov5s-640")
V8 = load_profile("yolov8n-640")
VACC = load_profile("yolov5s-640-vacc-nms")


def test_yolov5_objectness_times_class_and_letterbox_mapping():
    pred = np.zeros((1, 3, 85), np.float32)
    pred[0, 0, :5] = [320, 200, 100, 50, 0.5]
    pred[0, 0, 5 + 2] = 0.8  # car: 0.5 * 0.8 = 0.4
    pred[0, 0, 5 + 7] = 0.1  # truck: 0.05, a second label for the same box (multi-label)
    pred[0, 1, :5] = [100, 100, 20, 20, 0.0009]  # objectness under the threshold: dropped
    pred[0, 1, 5] = 1.0
    meta = meta_for(1280, 640, V5)  # scale 0.5, centred: pad_y = (640 - 320) / 2 = 160
    assert (meta.scale_x, meta.pad_x, meta.pad_y) == (0.5, 0.0, 160.0)
    (dets,) = decode([full_rows(pred, V5_ROWS)], [meta], V5)
    np.testing.assert_array_equal(dets.labels, [2, 7])
    np.testing.assert_allclose(dets.scores, [0.4, 0.05], rtol=1e-6)
    box = np.array([270, 175, 370, 225], np.float32)  # xyxy in input pixels
    expected = (box - [0, 160, 0, 160]) / 0.5
    np.testing.assert_allclose(dets.boxes, [expected, expected], atol=TOL_PX)


def test_yolov8_both_orientations_and_class_aware_nms():
    n = 8400  # one prediction per grid cell of a 640x640 input at strides 8, 16, 32
    pred = np.zeros((1, 84, n), np.float32)
    pred[0, :4, 0] = [100, 100, 40, 40]
    pred[0, 4 + 0, 0] = 0.9
    pred[0, :4, 1] = [102, 100, 40, 40]  # same class, IoU > 0.7: suppressed
    pred[0, 4 + 0, 1] = 0.8
    pred[0, :4, 2] = [102, 100, 40, 40]  # other class: kept
    pred[0, 4 + 5, 2] = 0.7
    pred = full_rows(pred, V8_ROWS, axis=2)
    meta = ImageMeta(1, "a.jpg", 640, 640, 1.0, 1.0, 0.0, 0.0)
    (dets,) = decode([pred], [meta], V8)
    np.testing.assert_array_equal(dets.labels, [0, 5])
    np.testing.assert_allclose(dets.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes, [[80, 80, 120, 120], [82, 80, 122, 120]], atol=TOL_PX)
    # [B, N, 4 + C] only where the profile says so: PP-YOLOE's raw output has that shape too
    with pytest.raises(HarnessError, match=r"yolov8 profile \(none fits\)"):
        decode([pred.transpose(0, 2, 1)], [meta], V8)
    rows_first = with_decoder_params(V8, rows_first=True)
    (transposed,) = decode([pred.transpose(0, 2, 1)], [meta], rows_first)
    np.testing.assert_allclose(transposed.boxes, dets.boxes)


def test_yolo_shape_mismatch_messages():
    meta = ImageMeta(1, "a.jpg", 640, 640, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(HarnessError, match=r"yolov5 profile.*\[B, N, 85\].*objectness"):
        decode([np.zeros((1, 10, 84), np.float32)], [meta], V5)
    with pytest.raises(HarnessError, match=r"yolov8 profile.*\[B, 84, N\]"):
        decode([np.zeros((1, 85, 10), np.float32)], [meta], V8)
    with pytest.raises(HarnessError, match=r"yolov8 profile \(10 rows\).*N = 8400 \(one per grid cell at strides 8/16/32"):
        decode([np.zeros((1, 84, 10), np.float32)], [meta], V8)
    with pytest.raises(HarnessError, match=r"yolo-nms profile.*class ids \[B, N, 1\]"):
        decode([np.zeros((1, 10, 1)), np.zeros((1, 10, 4))], [meta], VACC)


def test_yolov5_ignores_raw_per_level_maps_of_old_exports():
    pred = np.zeros((1, 2, 85), np.float32)
    pred[0, 0, :5] = [50, 50, 10, 10, 1.0]
    pred[0, 0, 5 + 3] = 0.5
    raw = [np.zeros((1, 3, s, s, 85), np.float32) for s in (80, 40, 20)]
    meta = ImageMeta(1, "a.jpg", 640, 640, 1.0, 1.0, 0.0, 0.0)
    (dets,) = decode([full_rows(pred, V5_ROWS), *raw], [meta], V5)
    np.testing.assert_array_equal(dets.labels, [3])


def test_yolo_nms_layout_drops_minus_one_rows_and_maps_from_letterbox():
    classes = np.full((1, 6, 1), -1, np.float32)
    scores = np.full((1, 6, 1), -1, np.float32)
    boxes = np.full((1, 6, 4), -1, np.float32)
    classes[0, :2, 0] = [16, 0]
    scores[0, :2, 0] = [0.3, 0.95]
    boxes[0, 0] = [100, 180, 200, 260]
    boxes[0, 1] = [0, 160, 640, 480]
    meta = meta_for(1280, 640, VACC)  # scale 0.5, pad_y 160
    (dets,) = decode([classes, scores, boxes], [meta], VACC)
    np.testing.assert_array_equal(dets.labels, [0, 16])  # score order
    np.testing.assert_allclose(dets.scores, [0.95, 0.3])
    np.testing.assert_allclose(dets.boxes, [[0, 0, 1280, 640], [200, 40, 400, 200]], atol=TOL_PX)
    # batch dim missing ([N, 1]) works too
    (again,) = decode([classes[0], scores[0], boxes[0]], [meta], VACC)
    np.testing.assert_allclose(again.boxes, dets.boxes)


# ----------------------------------------------------------------------------------------------
# Paddle: hand-computed
# ----------------------------------------------------------------------------------------------

PICO = load_profile("picodet-s-416")
PPYOLOE = load_profile("ppyoloe-s-640")


def test_extra_inputs_scale_factor_and_padding_rows():
    metas = [meta_for(832, 624, PICO, 1), meta_for(416, 208, PICO, 2)]
    extras = extra_inputs(PICO, metas, 3)
    assert list(extras) == ["scale_factor"]
    sf = extras["scale_factor"]
    assert sf.dtype == np.float32 and sf.shape == (3, 2)
    np.testing.assert_allclose(sf, [[416 / 624, 0.5], [2.0, 1.0], [2.0, 1.0]])  # [scale_y, scale_x]
    assert extra_inputs(V5, metas, 2) == {}
    with pytest.raises(HarnessError, match="extras.*nope.*known: im_shape, scale_factor"):
        profile_from_dict({**PICO.to_dict(), "input": {**PICO.to_dict()["input"], "extras": ["nope"]}}, "bad")
    with pytest.raises(HarnessError, match="list of model input names"):
        profile_from_dict({**PICO.to_dict(), "input": {**PICO.to_dict()["input"], "extras": "scale_factor"}}, "bad")
    im_shape = extra_inputs(dataclasses.replace(PICO, input=dataclasses.replace(PICO.input, extras=("im_shape",))),
                            metas, 2)["im_shape"]
    np.testing.assert_allclose(im_shape, [[416, 416], [416, 416]])


def test_paddle_nms_layout_splits_by_bbox_num_and_drops_placeholder_rows():
    metas = [meta_for(832, 624, PICO, 1), meta_for(416, 208, PICO, 2)]
    bbox = np.array([
        [3, 0.9, 10, 20, 110, 220],   # image 0
        [0, 0.5, 0, 0, 50, 50],       # image 0
        [-1, 0.0, 0, 0, 0, 0],        # image 1: Paddle's placeholder row when nothing is found
        [7, 0.01, 1, 1, 2, 2],        # image 1: under score_threshold 0.025
    ], np.float32)
    bbox_num = np.array([2, 2], np.int32)
    d0, d1 = decode([bbox, bbox_num], metas, PICO)
    np.testing.assert_array_equal(d0.labels, [3, 0])
    np.testing.assert_allclose(d0.boxes, bbox[:2, 2:], atol=TOL_PX)  # already original pixels
    assert len(d1) == 0
    (first,) = decode([bbox_num, bbox], metas[:1], PICO)  # output order does not matter
    np.testing.assert_allclose(first.boxes, d0.boxes)


def test_paddle_scale_factor_mapping_with_letterbox_padding():
    # the model divides input-pixel boxes by scale_factor; padding must still come off
    letterboxed = dataclasses.replace(PICO, input=dataclasses.replace(PICO.input, resize="letterbox"))
    meta = meta_for(832, 416, letterboxed)  # scale 0.5, pad_y (416 - 208) / 2 = 104
    assert (meta.scale_y, meta.pad_y) == (0.5, 104.0)
    input_box = np.array([[100, 154, 200, 254]], np.float32)
    model_output = input_box / [meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y]
    np.testing.assert_allclose(model_original_to_original(model_output, meta), [[200, 100, 400, 300]], atol=TOL_PX)


def test_paddle_raw_layouts_input_and_original_frames():
    meta = meta_for(832, 832, PICO)  # stretch: scale 0.5
    boxes = np.zeros((1, 3598, 4), np.float32)  # one per grid cell at strides 8/16/32/64 of 416
    boxes[0, 0] = [10, 20, 110, 220]
    scores = np.zeros((1, 80, 3598), np.float32)
    scores[0, 4, 0] = 0.6
    (dets,) = decode([boxes, scores], [meta], PICO)  # PicoDet: input pixels
    np.testing.assert_array_equal(dets.labels, [4])
    np.testing.assert_allclose(dets.boxes, [[20, 40, 220, 440]], atol=TOL_PX)
    (single,) = decode([np.concatenate([boxes, scores.transpose(0, 2, 1)], axis=2)], [meta], PICO)
    np.testing.assert_allclose(single.boxes, dets.boxes)
    meta640 = meta_for(1280, 1280, PPYOLOE)
    boxes, scores = full_rows(boxes[:, :3], 8400), full_rows(scores[:, :, :3], 8400, axis=2)  # strides 8/16/32 of 640
    (orig,) = decode([scores, boxes * 2], [meta640], PPYOLOE)  # PP-YOLOE exclude_nms: original pixels
    np.testing.assert_allclose(orig.boxes, [[20, 40, 220, 440]], atol=TOL_PX)
    (single640,) = decode([np.concatenate([boxes, scores.transpose(0, 2, 1)], axis=2)], [meta640], PPYOLOE)
    np.testing.assert_allclose(single640.boxes, [[20, 40, 220, 440]], atol=TOL_PX)  # one tensor: input pixels


def test_paddle_per_class_top_k():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(per_class_top_k(scores, labels, 2), [1, 1, 0, 1, 1, 0])


def test_paddle_shape_mismatch_message():
    meta = meta_for(416, 416, PICO)
    with pytest.raises(HarnessError, match=r"bbox \[M, 6\] \+ bbox_num \[B\].*scores \[B, 80, N\].*\[B, N, 84\]"):
        decode([np.zeros((1, 10, 4)), np.zeros((1, 81, 10))], [meta], PICO)
    with pytest.raises(HarnessError, match="one output of shape"):
        decode([np.zeros((1, 10, 85))], [meta], PICO)


def test_family_profiles_load():
    for name, kind in [("efficientdet-d0", "effdet"), ("picodet-s-416", "paddle"), ("ppyoloe-s-640", "paddle"),
                       ("yolov5s-640", "yolov5"), ("yolov8n-640", "yolov8"), ("yolov5s-640-vacc-nms", "yolo-nms")]:
        profile = load_profile(name)
        assert profile.decoder.kind == kind
        assert profile_from_dict(profile.to_dict(), name).input == profile.input  # sidecar round trip
    assert EFF.num_classes == 90 and EFF.category_ids[-1] == 90 and EFF.input.resize == "letterbox-topleft"
    assert PICO.input.extras == ("scale_factor",) and PICO.input.resize == "stretch"


# ----------------------------------------------------------------------------------------------
# Oracles: the families' own post-processing on the same raw outputs
# ----------------------------------------------------------------------------------------------

def _torch_nms(boxes, scores, iou_threshold: float):
    """Greedy NMS with torchvision.ops.nms semantics (suppress IoU > threshold), TorchScript-able."""
    order = torch.argsort(scores, descending=True)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep: list[int] = []
    for k in range(order.shape[0]):
        i = int(order[k])
        if bool(suppressed[i]):
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed = suppressed | (inter / (areas[i] + areas - inter) > iou_threshold)
    return torch.tensor(keep, dtype=torch.long)


def _torch_batched_nms(boxes, scores, idxs, iou_threshold: float):
    """torchvision.ops.boxes._batched_nms_vanilla: NMS per class, kept indices by score descending."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        curr = torch.where(idxs == class_id)[0]
        kept = _torch_nms(boxes[curr], scores[curr], iou_threshold)
        keep_mask[curr[kept]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]


def _torch_remove_small_boxes(boxes, min_size: float):
    ws, hs = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubMeta(name, (_Stub,), {})


class _Stub(metaclass=_StubMeta):
    def __init__(self, *args, **kwargs):
        pass


class _StubModule(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubMeta(name, (_Stub,), {})


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for torchvision (no build for this torch here) while effdet/timm/ultralytics import.

    Only names they import at module level are stubbed; the NMS they call is given real
    implementations above, with torchvision's semantics.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        if spec.name == "torchvision.ops.boxes":
            module.batched_nms = _torch_batched_nms
            module.remove_small_boxes = _torch_remove_small_boxes
            module.nms = _torch_nms
        return module

    def exec_module(self, module):
        pass


def _import_with_torchvision_stub(import_fn, package: str):
    """Run import_fn with a torchvision stand-in if the real one is missing; remove the stand-in after.
    Skips the test with the reason when the package does not import even so."""
    pytest.importorskip("torch", reason="oracle tests need torch (CPU build is enough)")
    try:
        import torchvision  # noqa: F401

        return import_fn()
    except Exception:
        pass
    import importlib.metadata as md

    finder, real_version = _TorchvisionStub(), md.version
    sys.meta_path.insert(0, finder)
    md.version = lambda name: "0.0.0" if name == "torchvision" else real_version(name)
    try:
        return import_fn()
    except ImportError as exc:
        pytest.skip(f"{package} does not import here: {exc}")
    finally:
        md.version = real_version
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


def _need_package(name: str, reason: str) -> None:
    # find_spec, not importorskip: these import torchvision, which may be stood in for below
    if importlib.util.find_spec(name) is None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def effdet_pkg():
    _need_package("effdet", "EfficientDet oracle needs `pip install --no-deps effdet timm` and omegaconf")

    def load():
        import effdet
        from effdet import bench

        return effdet, bench

    return _import_with_torchvision_stub(load, "effdet")


@pytest.mark.upstream
def test_effdet_matches_effdet_postprocessing(effdet_pkg):
    """Random-weight EfficientDet-D0 from effdet; its DetBenchPredict post-processing vs the harness."""
    effdet, bench = effdet_pkg
    torch.manual_seed(0)
    model = effdet.create_model("efficientdet_d0", pretrained=False, pretrained_backbone=False, bench_task="")
    model.eval()
    config = model.config
    assert (config.num_classes, config.max_detection_points, config.anchor_scale) == (90, 5000, 4.0)
    metas = [meta_for(640, 480, EFF, 1), meta_for(400, 512, EFF, 2)]  # scale 0.8 and 1.0, top-left
    with torch.no_grad():
        class_out, box_out = model(torch.randn(2, 3, 512, 512))
        # spread the logits like a trained model's (random init gives near-constant ones)
        mean = torch.cat([c.reshape(-1) for c in class_out]).mean()
        std = torch.cat([c.reshape(-1) for c in class_out]).std()
        class_out = [(c - mean) / std * 1.5 - 4.0 for c in class_out]
        cls_top, box_top, indices, classes = bench._post_process(
            class_out, box_out, num_levels=config.num_levels, num_classes=90,
            max_detection_points=config.max_detection_points)
        anchors = effdet.anchors.Anchors.from_config(config)
        img_scale = torch.tensor([1 / m.scale_x for m in metas])
        img_size = torch.tensor([[m.width, m.height] for m in metas], dtype=torch.float32)
        expected = bench._batch_detection(2, cls_top, box_top, anchors.boxes, indices, classes,
                                          img_scale, img_size, max_det_per_image=100, soft_nms=False)
    np.testing.assert_allclose(anchors.boxes.numpy(), make_anchors(512, 512, 3, 7, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 4.0))
    raw = [t.numpy() for t in class_out] + [t.numpy() for t in box_out]
    profile = with_post(EFF, score_threshold=0.0)  # effdet keeps every top-k candidate
    got = decode(raw, metas, profile)
    worst, compared = 0.0, 0
    for b, dets in enumerate(got):
        exp = expected[b].numpy()
        exp = exp[exp[:, 4] > 0]
        assert len(exp) == 100 and len(dets) == 100
        # effdet keeps boxes clipped to zero area (wholly in the padding); the harness drops them,
        # which frees their slots for the next detections: compare effdet's real boxes as a prefix.
        exp = exp[(exp[:, 2] > exp[:, 0]) & (exp[:, 3] > exp[:, 1])]
        k = len(exp)
        compared += k
        # rows tied (in float32) with the k-th score may be cut differently: compare above it
        cut = exp[-1, 4] + 1e-6
        mine = dets.scores[:k] > cut
        prefix = Detections(dets.boxes[:k][mine], dets.scores[:k][mine], dets.labels[:k][mine] + 1)  # id = i + 1
        exp = exp[exp[:, 4] > cut]
        worst = max(worst, _compare_sorted(prefix, exp[:, :4], exp[:, 4], exp[:, 5].astype(np.int64)))
    assert compared > 150
    print(f"oracle max box difference: {worst:.2e} px")
    assert worst < TOL_PX, worst


@pytest.fixture(scope="module")
def ultralytics_pkg():
    _need_package("ultralytics", "YOLOv8 oracle needs `pip install --no-deps ultralytics`")
    os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/ultralytics-config")

    def load():
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils import nms

        return DetectionModel, nms

    return _import_with_torchvision_stub(load, "ultralytics")


def _compare_sorted(dets, exp_boxes, exp_scores, exp_labels):
    """Same detections (order among equal scores may differ): returns the largest box difference."""
    assert len(dets) == len(exp_scores)

    def order(boxes, scores, labels):  # scores tie in float32 (saturated sigmoid): sort by more keys
        return np.lexsort((np.round(boxes[:, 1], 2), np.round(boxes[:, 0], 2), labels, -np.round(scores, 5)))

    order_a = order(dets.boxes, dets.scores, dets.labels)
    order_b = order(exp_boxes, exp_scores, exp_labels)
    np.testing.assert_array_equal(dets.labels[order_a], exp_labels[order_b])
    np.testing.assert_allclose(dets.scores[order_a], exp_scores[order_b], atol=1e-6)
    return float(np.abs(dets.boxes[order_a] - exp_boxes[order_b]).max()) if len(dets) else 0.0


@pytest.mark.upstream
def test_yolov8_matches_ultralytics_nms(ultralytics_pkg):
    """Random-weight YOLOv8n from ultralytics' yaml; its non_max_suppression (val settings) vs the harness."""
    DetectionModel, nms = ultralytics_pkg
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=80, verbose=False).eval()
    with torch.no_grad():
        pred = model(torch.rand(2, 3, 640, 640))[0]
    assert tuple(pred.shape) == (2, 84, 8400)
    # spread the class probabilities like a trained model's (random init gives near-constant ones)
    raw = pred.numpy().copy()
    logits = np.log(raw[:, 4:]) - np.log1p(-raw[:, 4:])
    noise = np.random.default_rng(0).normal(0, 1, logits.shape)  # random-init scores repeat a lot: break ties
    raw[:, 4:] = 1 / (1 + np.exp(-((logits - logits.mean()) / logits.std() + noise - 4.0)))
    pred = torch.from_numpy(raw)
    # Keep the oracle's pure-torch NMS fast: a threshold that leaves a few thousand candidates.
    conf = float(np.quantile(raw[:, 4:], 0.998))
    # one image per call: ultralytics stops after a time limit per call (2 s + 0.05 s per image)
    out = [nms.non_max_suppression(pred[i : i + 1].clone(), conf_thres=conf, iou_thres=0.7, multi_label=True,
                                   max_det=300)[0] for i in range(2)]
    metas = [ImageMeta(i, "a.jpg", 640, 640, 1.0, 1.0, 0.0, 0.0) for i in (1, 2)]
    got = decode([pred.numpy()], metas, with_post(V8, score_threshold=conf))
    worst = 0.0
    for dets, exp in zip(got, out):
        exp = exp.numpy()
        assert len(exp) > 10, (conf, [len(o) for o in out], [len(d) for d in got], float(raw[:, 4:].max()))
        boxes = np.clip(exp[:, :4], 0, 640)  # ultralytics clips when scaling boxes to the image
        worst = max(worst, _compare_sorted(dets, boxes, exp[:, 4], exp[:, 5].astype(np.int64)))
    print(f"oracle max box difference: {worst:.2e} px")
    assert worst < TOL_PX, worst


def _yolov5_nms_oracle(prediction, conf_thres, iou_thres, max_det=300, max_nms=30000, max_wh=7680):
    """ultralytics/yolov5 utils/general.py non_max_suppression (multi_label=True, agnostic=False),
    ported line for line; torchvision.ops.nms replaced by the same-semantics greedy NMS above."""
    xc = prediction[..., 4] > conf_thres
    output = [torch.zeros((0, 6))] * prediction.shape[0]
    for xi, x in enumerate(prediction):
        x = x[xc[xi]].clone()
        if not x.shape[0]:
            continue
        x[:, 5:] *= x[:, 4:5]
        box = torch.cat([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], 1)
        i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
        x = torch.cat((box[i], x[i, 5 + j, None], j[:, None].float()), 1)
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        c = x[:, 5:6] * max_wh
        keep = _torch_nms(x[:, :4] + c, x[:, 4], iou_thres)[:max_det]
        output[xi] = x[keep]
    return output


@pytest.mark.upstream
def test_yolov5_matches_yolov5_nms_port():
    """YOLOv5 raw output [B, N, 85] (random but shaped like one) vs the port of yolov5's NMS."""
    pytest.importorskip("torch", reason="YOLOv5 oracle runs yolov5's NMS code in torch")
    rng = np.random.default_rng(0)
    n = V5_ROWS
    pred = np.empty((2, n, 85), np.float32)
    pred[..., 0:2] = rng.uniform(0, 640, (2, n, 2))
    pred[..., 2:4] = rng.uniform(8, 200, (2, n, 2))
    pred[..., 4] = rng.beta(0.3, 3, (2, n))
    pred[..., 5:] = rng.beta(0.2, 4, (2, n, 80))
    out = _yolov5_nms_oracle(torch.from_numpy(pred), conf_thres=0.25, iou_thres=0.6)
    metas = [ImageMeta(i, "a.jpg", 640, 640, 1.0, 1.0, 0.0, 0.0) for i in (1, 2)]
    got = decode([pred], metas, with_post(V5, score_threshold=0.25))
    worst = 0.0
    for dets, exp in zip(got, out):
        exp = exp.numpy()
        assert len(exp) > 50
        worst = max(worst, _compare_sorted(dets, np.clip(exp[:, :4], 0, 640), exp[:, 4], exp[:, 5].astype(np.int64)))
    print(f"oracle max box difference: {worst:.2e} px")
    assert worst < TOL_PX, worst


@pytest.mark.upstream
def test_paddle_matches_paddle_multiclass_nms():
    """Raw PicoDet-style boxes [B, N, 4] + scores [B, 80, N] through Paddle's own multiclass_nms3 op."""
    paddle = pytest.importorskip("paddle", reason="Paddle oracle needs `pip install paddlepaddle` (CPU)")
    rng = np.random.default_rng(1)
    n = 3598
    xy = rng.uniform(0, 380, (2, n, 2)).astype(np.float32)
    wh = rng.uniform(4, 160, (2, n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, np.minimum(xy + wh, 416)], axis=2)
    scores = (rng.beta(0.2, 6, (2, 80, n))).astype(np.float32)
    post = PICO.postprocess
    out, _, num = paddle._C_ops.multiclass_nms3(  # (rows, index, rows per image)
        paddle.to_tensor(boxes), paddle.to_tensor(scores), None, post.score_threshold, post.pre_nms_top_k,
        post.max_detections, post.iou_threshold, True, 1.0, -1)
    out, num = out.numpy(), num.numpy()
    metas = [ImageMeta(i, "a.jpg", 416, 416, 1.0, 1.0, 0.0, 0.0) for i in (1, 2)]
    got = decode([boxes, scores], metas, PICO)
    starts = np.r_[0, np.cumsum(num)]
    worst = 0.0
    for b, dets in enumerate(got):
        exp = out[starts[b] : starts[b + 1]]
        assert len(exp) > 20
        worst = max(worst, _compare_sorted(dets, exp[:, 2:6], exp[:, 1], exp[:, 0].astype(np.int64)))
    print(f"oracle max box difference: {worst:.2e} px")
    assert worst < TOL_PX, worst
    # The same rows fed back as an NMS-layout export decode to the same detections.
    back = decode([out, num], metas, PICO)
    for a, b in zip(back, got):
        _compare_sorted(a, b.boxes, b.scores, b.labels)
