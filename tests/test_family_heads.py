"""The new profiles and decoders on tiny real ONNX heads (tests/tinyheads.py) through ONNX Runtime and
OpenVINO, against the upstreams' own post-processing ported in tests/oracles.py: same detections from
the same outputs. Plus a hand-computed YOLOX row.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from harness.decode import decode
from harness.images.preprocess import preprocess_image
from harness.model.extra_inputs import extra_inputs
from harness.profiles import load_profile, profile_from_dict
from harness.targets import get_target
from tests import oracles, tinyheads
from tests.conftest import with_decoder_params

YOLOX = load_profile("yolox-nano-416")
PICO_LEGACY_416 = load_profile("picodet-s-416-legacy")
NANODET_PLUS = load_profile("nanodet-plus-m-416")


def sized(name: str, size: int, **decoder):
    """A built-in profile at another input size (and decoder parameters)."""
    data = load_profile(name).to_dict()
    data["input"].update(width=size, height=size)
    data["decoder"].update(decoder)
    return profile_from_dict(data, name=f"{name}@{size}")


YOLOV5_416 = sized("yolov5n-640", 416)


def need_target(name: str):
    ok, why = get_target(name).availability()
    if not ok:
        pytest.skip(why)


# ----------------------------------------------------------------------------------------------
# YOLOX: hand-computed
# ----------------------------------------------------------------------------------------------

def _write(folder, image: np.ndarray):
    path = folder / f"{len(list(folder.iterdir()))}.png"
    cv2.imwrite(str(path), image)
    return path


def test_yolox_row_decodes_to_grid_cell_box_with_objectness_times_class(tmp_path):
    raw = np.zeros((1, 3549, 85), np.float32)
    row = 52 * 52 + 3 * 26 + 5  # stride 16, grid row 3, column 5
    raw[0, row, :5] = [0.5, 0.25, math.log(2.0), 0.0, 0.8]
    raw[0, row, 5 + 7] = 0.5  # 0.8 x 0.5 = 0.4
    raw[0, row, 5 + 2] = 0.3  # 0.24: a second class of the same box, kept only with multi_label
    raw[0, 10, 4], raw[0, 10, 5] = 0.09, 0.1  # 0.009 < 0.01: dropped
    # 832x416 -> scale 0.5, pasted top-left: original = input / 0.5
    _, meta = preprocess_image(_write(tmp_path, np.zeros((416, 832, 3), np.uint8)), 1, YOLOX.input)
    assert (meta.scale_x, meta.scale_y, meta.pad_x, meta.pad_y) == (0.5, 0.5, 0, 0)
    (dets,) = decode([raw], [meta], YOLOX)
    # centre ((5 + 0.5) * 16, (3 + 0.25) * 16) = (88, 52), size (2 * 16, 1 * 16)
    np.testing.assert_allclose(dets.boxes, [[144, 88, 208, 120]], atol=1e-3)
    assert dets.labels.tolist() == [7] and dets.scores.tolist() == pytest.approx([0.4])
    multi = with_decoder_params(YOLOX, multi_label=True)
    (both,) = decode([raw], [meta], multi)
    assert both.labels.tolist() == [7, 2] and both.scores.tolist() == pytest.approx([0.4, 0.24])


# ----------------------------------------------------------------------------------------------
# Tiny heads vs the upstreams' decodes, on both CPU targets
# ----------------------------------------------------------------------------------------------

# Sizes whose resize is exact under every convention (upstreams size the resized image with int()
# or use the float ratio, the harness rounds): the oracles map boxes back with their own formulas.
SIZES = [(832, 416), (416, 832), (416, 416), (208, 104)]


def _images(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def _clipped(meta, boxes, scores, labels):
    """The harness clips boxes to the image; YOLOX and Paddle write them unclipped (the only
    difference, documented in their decoders)."""
    return np.clip(boxes, 0, [meta.width, meta.height, meta.width, meta.height]), scores, labels


def _oracle_yolox(outputs, meta, profile):
    return _clipped(meta, *oracles.yolox_eval(outputs[0][0], (416, 416), (meta.height, meta.width)))


def _oracle_yolov5(outputs, meta, profile):
    return oracles.yolov5_val(outputs[0][0], (416, 416), (meta.height, meta.width))


def _oracle_nanodet_plus(outputs, meta, profile):
    return oracles.nanodet_plus_eval(outputs[0][0], (416, 416), (meta.height, meta.width))


def _oracle_picodet(outputs, meta, profile):
    scores = [o[0] for o in outputs[:4]]
    bins = [o[0] for o in outputs[4:]]
    return _clipped(meta, *oracles.picodet_eval(scores, bins, (416, 416), (meta.height, meta.width)))


HEADS = {
    "yolox": (tinyheads.write_yolox_head, YOLOX, _oracle_yolox),
    "yolov5": (tinyheads.write_yolov5_head, YOLOV5_416, _oracle_yolov5),
    "nanodet-plus": (tinyheads.write_gfl_head, NANODET_PLUS, _oracle_nanodet_plus),
    "picodet-legacy": (tinyheads.write_gfl_levels_head, PICO_LEGACY_416, _oracle_picodet),
}


def _same_detections(dets, boxes, scores, labels):
    assert len(dets) == len(scores), (len(dets), len(scores))
    mine = np.lexsort((np.round(dets.boxes[:, 0], 1), dets.labels, -np.round(dets.scores, 5)))
    theirs = np.lexsort((np.round(boxes[:, 0], 1), labels, -np.round(scores, 5)))
    np.testing.assert_array_equal(dets.labels[mine], labels[theirs])
    np.testing.assert_allclose(dets.scores[mine], scores[theirs], atol=1e-5)
    np.testing.assert_allclose(dets.boxes[mine], boxes[theirs], atol=2e-2)


@pytest.mark.parametrize("target", ["ort", "ov"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_tiny_head_decodes_as_its_upstream_does(tmp_path, head, target):
    need_target(target)
    write, profile, oracle = HEADS[head]
    model = write(tmp_path / f"{head}.onnx")
    runner = get_target(target)(model, profile, {})
    runner.load(1)
    compared = 0
    try:
        for image_id, path in enumerate(_images(tmp_path)):
            tensor, meta = preprocess_image(path, image_id, profile.input)
            outputs = runner.infer(tensor[None], extra_inputs(profile, [meta], 1) or None)
            (dets,) = decode(outputs, [meta], profile)
            _same_detections(dets, *oracle(outputs, meta, profile))
            compared += len(dets)
    finally:
        runner.close()
    assert compared >= 20, compared  # the tiny heads find something on every image


@pytest.mark.parametrize("profile_name, write", [("picodet-s-416-legacy", tinyheads.write_gfl_levels_head),
                                                 ("yolox-nano-416", tinyheads.write_yolox_head)])
def test_builtin_profile_runs_end_to_end_on_both_targets(tmp_path, profile_name, write):
    """`harness run` with the built-in profile on a tiny model of the real file's geometry (no
    416 PicoDet file exists): both targets, the same detections and mAP."""
    from harness.measure.results import ResultsStore
    from harness.measure.runner import RunConfig, run
    from tests.tinymodel import write_tiny_dataset

    need_target("ort")
    need_target("ov")
    images, ann = write_tiny_dataset(tmp_path / "data", count=4)
    profile = load_profile(profile_name)
    # the tiny dataset's two classes are COCO ids 1 and 3 (person, car): the profile maps them
    model = write(tmp_path / "m.onnx")
    rows = []
    for target in ("ort", "ov"):
        config = RunConfig(target=target, model=str(model), profile=profile, images_dir=images, ann_path=ann,
                           batch_sizes=[1], bench_seconds=0.05, max_seconds=0.05, warmup_seconds=0.01,
                           min_iterations=1)
        rows += run(config, ResultsStore(tmp_path / target, env={}))
    assert [r["profile"] for r in rows] == [profile_name, profile_name]
    assert rows[0]["detections"] > 0
    # a random head puts thousands of scores near the threshold: the two runtimes' last-bit differences
    # may flip a few of them (0.03% of 9000 with YOLOX's floored resize); more would be a real disagreement
    assert abs(rows[0]["detections"] - rows[1]["detections"]) <= max(2, rows[0]["detections"] // 1000)
    assert rows[0]["map"] == pytest.approx(rows[1]["map"], abs=0.01)


def test_tiny_heads_have_the_real_files_geometry():
    """The tiny heads' row counts are the real exports': a test on them tests the real layout."""
    assert sum(tinyheads.cells(416, (8, 16, 32))) == 3549  # yolox-nano-416.onnx [1, 3549, 85]
    assert sum(tinyheads.cells(416, (8, 16, 32, 64))) == 3598  # nanodet-plus-m-416.onnx [1, 3598, 112]
    assert tinyheads.cells(320, (8, 16, 32, 64)) == [1600, 400, 100, 25]  # picodet-s-320-legacy.onnx
    assert 3 * sum(tinyheads.cells(640, (8, 16, 32))) == 25200  # yolov5n-640.onnx [1, 25200, 85]


def test_meta_is_exact_for_the_oracle_image_sizes(tmp_path):
    """The oracles map back with the upstreams' float ratio; these sizes make it the harness's too."""
    for profile in (YOLOX, YOLOV5_416):
        for w, h in SIZES:
            _, meta = preprocess_image(_write(tmp_path, np.zeros((h, w, 3), np.uint8)), 1, profile.input)
            ratio = min(416 / w, 416 / h)
            assert (meta.scale_x, meta.scale_y) == (ratio, ratio)
