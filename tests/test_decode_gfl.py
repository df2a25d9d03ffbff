"""GFL decoder and NMS against hand-computed cases, every output layout, and clear shape errors."""

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.decode import decode
from harness.decode.gfl import arrange_outputs, make_priors
from harness.decode.nms import multiclass_nms
from harness.images.preprocess import ImageMeta
from harness.profiles import profile_from_dict

BIG = 60.0  # a logit this large makes the bin softmax one-hot to float32 precision


def tiny_profile(offset=0.5, scores="sigmoid", strides=(8,), size=16, classes=2, top_k=0):
    return profile_from_dict({
        "input": {"width": size, "height": size, "resize": "stretch"},
        "decoder": {"kind": "gfl", "strides": list(strides), "reg_max": 7, "prior_offset": offset, "scores": scores},
        "postprocess": {"score_threshold": 0.05, "iou_threshold": 0.6, "max_detections": 100, "pre_nms_top_k": top_k},
        "classes": {"names": [f"c{i}" for i in range(classes)], "category_ids": [10 + i for i in range(classes)]},
    }, name="tiny")


def one_hot_bins(distances):
    """(l, t, r, b) integer distances in stride units -> 32 bin logits."""
    bins = np.zeros(32, np.float32)
    for side, d in enumerate(distances):
        bins[side * 8 + d] = BIG
    return bins


def identity_meta(size=16):
    return ImageMeta(1, "x", size, size, 1.0, 1.0, 0.0, 0.0)


def test_priors_offset_and_order():
    centres, strides = make_priors(16, 16, (8,), 0.5)
    assert centres.tolist() == [[4, 4], [12, 4], [4, 12], [12, 12]]  # row-major, x first
    centres0, _ = make_priors(16, 16, (8, 16), 0.0)
    assert centres0.tolist() == [[0, 0], [8, 0], [0, 8], [8, 8], [0, 0]]
    assert strides.tolist() == [8, 8, 8, 8]


def test_single_prior_hand_computed_box():
    profile = tiny_profile()
    out = np.zeros((1, 4, 2 + 32), np.float32)
    out[0, :, 2:] = one_hot_bins((0, 0, 0, 0))
    out[0, 3, 1] = 0.9  # prior at centre (12, 12), class 1
    out[0, 3, 2:] = one_hot_bins((1, 0, 0, 1))  # l = 8, t = 0, r = 0, b = 8
    (dets,) = decode([out], [identity_meta()], profile)
    assert dets.labels.tolist() == [1]
    assert dets.scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(dets.boxes, [[4, 12, 12, 16]], atol=1e-4)  # y2 = 20 clipped to 16


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_fp16_and_fp64_outputs_decode_like_fp32(dtype):
    out = np.zeros((1, 4, 2 + 32), np.float32)
    out[0, :, 2:] = one_hot_bins((0, 0, 0, 0))
    out[0, 3, 1] = 0.9
    out[0, 3, 2:] = one_hot_bins((1, 0, 0, 1))
    (want,) = decode([out], [identity_meta()], tiny_profile())
    (got,) = decode([out.astype(dtype)], [identity_meta()], tiny_profile())
    assert got.labels.tolist() == want.labels.tolist()
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)


def test_prior_offset_shifts_boxes_by_half_a_stride():
    out = np.zeros((1, 4, 34), np.float32)
    out[0, 0, 0] = 0.8
    out[0, 0, 2:] = one_hot_bins((0, 0, 1, 1))
    a = decode([out], [identity_meta()], tiny_profile(offset=0.5))[0].boxes
    b = decode([out], [identity_meta()], tiny_profile(offset=0.0))[0].boxes
    np.testing.assert_allclose(a, [[4, 4, 12, 12]], atol=1e-4)
    np.testing.assert_allclose(b, [[0, 0, 8, 8]], atol=1e-4)


def test_logit_scores_get_sigmoid_and_threshold():
    out = np.zeros((1, 4, 34), np.float32)
    out[0, :, :2] = -10.0  # sigmoid ~ 4.5e-5: below 0.05
    out[0, 1, 0] = 0.0  # sigmoid 0.5
    (dets,) = decode([out], [identity_meta()], tiny_profile(scores="logits"))
    assert dets.scores.tolist() == pytest.approx([0.5]) and dets.labels.tolist() == [0]


def test_boxes_map_back_through_letterbox_meta():
    out = np.zeros((1, 4, 34), np.float32)
    out[0, 0, 0] = 0.7
    out[0, 0, 2:] = one_hot_bins((0, 0, 1, 1))  # input box (4, 4, 12, 12)
    meta = ImageMeta(5, "x", 40, 20, 0.25, 0.25, 2.0, 3.0)
    (dets,) = decode([out], [meta], tiny_profile())
    np.testing.assert_allclose(dets.boxes, [[8, 4, 40, 20]], atol=1e-3)  # x:(4-2)/.25, y:(4-3)/.25


def test_split_layouts_equal_concatenated_layout():
    rng = np.random.default_rng(0)
    profile = tiny_profile(strides=(8, 16), size=32, classes=3)
    counts = [16, 4]
    scores = rng.uniform(0, 0.3, (2, 20, 3)).astype(np.float32)
    bins = rng.normal(0, 2, (2, 20, 32)).astype(np.float32)
    metas = [identity_meta(32), ImageMeta(2, "y", 32, 32, 1.0, 1.0, 0.0, 0.0)]
    joined = decode([np.concatenate([scores, bins], axis=2)], metas, profile)
    # Split per level, shuffled order, like nanodet-m exports with misleading names.
    parts = [scores[:, :16], bins[:, 16:], bins[:, :16], scores[:, 16:]]
    split = decode(parts, metas, profile)
    # Channel-first per-level maps [B, C+R, H, W], like the VACC NanoDet build.
    maps = [np.concatenate([scores, bins], axis=2)[:, a:b].transpose(0, 2, 1).reshape(2, 35, h, h)
            for a, b, h in ((0, 16, 4), (16, 20, 2))]
    chw = decode(maps, metas, profile)
    for x, y, z in zip(joined, split, chw):
        assert len(x) > 0
        assert np.array_equal(x.boxes, y.boxes) and np.array_equal(x.scores, y.scores)
        assert np.array_equal(x.boxes, z.boxes) and np.array_equal(x.labels, z.labels)
    assert counts == [16, 4]


def test_missing_batch_dim_is_accepted_for_batch_one():
    out = np.zeros((4, 34), np.float32)
    out[2, 1] = 0.6
    (dets,) = decode([out[:, :2], out[:, 2:]], [identity_meta()], tiny_profile())
    assert dets.labels.tolist() == [1]


def test_shape_mismatch_names_expected_layout():
    with pytest.raises(HarnessError, match=r"do not fit the GFL profile.*\[B, 4, 34\]"):
        decode([np.zeros((1, 5, 34), np.float32)], [identity_meta()], tiny_profile())
    with pytest.raises(HarnessError, match="priors"):
        arrange_outputs([np.zeros((1, 4, 2)), np.zeros((1, 3, 32))], 2, 32, [4])


def test_fixed_batch_outputs_cannot_serve_a_larger_batch():
    with pytest.raises(HarnessError, match="fixed batch of 1"):
        decode([np.zeros((1, 4, 34), np.float32)], [identity_meta(), identity_meta()], tiny_profile())


def test_pre_nms_top_k_keeps_best_priors_per_level():
    out = np.zeros((1, 4, 34), np.float32)
    out[0, :, 0] = [0.2, 0.9, 0.3, 0.8]
    out[0, :, 2:] = one_hot_bins((0, 0, 1, 1))
    (dets,) = decode([out], [identity_meta()], tiny_profile(top_k=2))
    assert sorted(dets.scores.tolist()) == pytest.approx([0.8, 0.9])


# ---- NMS ----

def test_nms_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 4]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.04], np.float32)
    labels = np.array([0, 0, 1, 0, 0])
    dets = multiclass_nms(boxes, scores, labels, 0.05, 0.6, 100)
    # IoU(b0, b1) = 81 / 119 = 0.68 > 0.6: b1 goes; b2 is another class; b4 is below threshold.
    assert dets.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert dets.labels.tolist() == [0, 1, 0]
    looser = multiclass_nms(boxes, scores, labels, 0.05, 0.7, 100)
    assert looser.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_nms_caps_detections_keeping_highest():
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], np.float32)
    scores = np.linspace(0.1, 1.0, 10).astype(np.float32)
    dets = multiclass_nms(boxes, scores, np.zeros(10, int), 0.05, 0.6, 3)
    assert dets.scores.tolist() == pytest.approx([1.0, 0.9, 0.8])
    assert dets.boxes[0].tolist() == [180, 0, 190, 10]


def test_nms_empty():
    dets = multiclass_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), 0.05, 0.6, 100)
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
