"""No family decodes another's raw output silently: every family's output (tiny real ONNX heads run by
ONNX Runtime, numpy arrays for the two families that come only as device files) fed to every other
decoder at the same input size is refused, with a line naming the head it looks like.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.decode import DECODERS, decode
from harness.decode.effdet import feature_sizes
from harness.decode.geometry import OutputLayoutError, family_matches, grid_cells, likely_family
from harness.images.preprocess import ImageMeta
from harness.model.extra_inputs import extra_inputs
from harness.profiles import load_profile, profile_from_dict
from harness.targets import get_target
from tests import tinyheads

SIZE = 416
META = ImageMeta(1, "x.jpg", SIZE, SIZE, 1.0, 1.0, 0.0, 0.0)


def at_416(name: str, **decoder):
    data = load_profile(name).to_dict()
    data["input"].update(width=SIZE, height=SIZE)
    data["decoder"].update(decoder)
    data["classes"] = {"preset": "coco80"}
    return profile_from_dict(data, name=f"{name}@{SIZE}")


# One profile per decoder kind, all at 416 with the 80 COCO classes.
PROFILES = {
    "yolox": load_profile("yolox-nano-416"),
    "yolov5": at_416("yolov5n-640"),
    "yolov8": at_416("yolov8n-640"),
    "gfl": load_profile("nanodet-plus-m-416"),
    "paddle": load_profile("picodet-s-416"),
    "yolo-nms": at_416("yolov5s-640-vacc-nms"),
    "effdet": at_416("efficientdet-d0"),
    "yolov8-tflite": at_416("yolo11n-640-tflite"),
    "ssd-postprocess": at_416("ssd-mobilenet-v1-300-tflite"),
}

# family -> (decoder kind that reads it, tiny ONNX head writer or None for numpy outputs)
FAMILIES = {
    "yolox": ("yolox", tinyheads.write_yolox_head),
    "yolov5": ("yolov5", tinyheads.write_yolov5_head),
    "yolov8": ("yolov8", tinyheads.write_yolov8_head),
    "nanodet-plus (gfl, one output)": ("gfl", tinyheads.write_gfl_head),
    "picodet legacy (gfl, per level)": ("gfl", tinyheads.write_gfl_levels_head),
    "paddle raw": ("paddle", tinyheads.write_paddle_raw_head),
    "paddle nms": ("paddle", lambda path: tinyheads.write_paddle_nms_head(path, size=SIZE)),
    "yolo-nms (VACC npz)": ("yolo-nms", None),
    "effdet (Ascend om)": ("effdet", None),
    "yolov8 tflite (normalized boxes)": ("yolov8-tflite", None),
    "ssd (TFLite_Detection_PostProcess)": ("ssd-postprocess", None),
}
PICO_NO_EXTRAS = load_profile("picodet-s-416").to_dict()
PICO_NO_EXTRAS["input"]["extras"] = []
# the profile each tiny head runs with where its decoder kind's profile does not fit its inputs
RUN_WITH = {"paddle nms": at_416("picodet-xs-320-lcnet"), "paddle raw": profile_from_dict(PICO_NO_EXTRAS, "raw")}


def _numpy_outputs(family: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if family.startswith("yolo-nms"):  # VACC NMS op: class ids, scores, xyxy boxes; unused rows -1
        classes, scores, boxes = np.full((1, 8, 1), -1.0), np.full((1, 8, 1), -1.0), np.full((1, 8, 4), -1.0)
        classes[0, :2, 0], scores[0, :2, 0], boxes[0, :2] = [3, 7], [0.9, 0.4], [[10, 10, 50, 60], [100, 90, 200, 210]]
        return [classes.astype(np.float32), scores.astype(np.float32), boxes.astype(np.float32)]
    if family.startswith("yolov8 tflite"):  # the yolov8 layout with cx, cy, w, h as fractions of the input
        n = sum(grid_cells(SIZE, SIZE, (8, 16, 32)))
        boxes = np.r_[rng.uniform(0, 1, (2, n)), rng.uniform(0, 0.25, (2, n))]
        return [np.r_[boxes, 1 / (1 + np.exp(-rng.normal(-6, 1, (80, n))))][None].astype(np.float32)]
    if family.startswith("ssd"):  # TFLite_Detection_PostProcess: boxes, classes, scores, count
        boxes = np.sort(rng.uniform(0, 1, (1, 10, 2, 2)), axis=2).transpose(0, 1, 3, 2).reshape(1, 10, 4)
        return [boxes.astype(np.float32), rng.integers(0, 80, (1, 10)).astype(np.float32),
                np.sort(rng.uniform(0.1, 0.9, (1, 10)))[:, ::-1].astype(np.float32), np.array([10.0], np.float32)]
    sizes = feature_sizes(SIZE, SIZE, 3, 7)  # effdet: 9 anchors x 80 classes, 36 box codes per cell
    return ([(rng.normal(-6, 1, (1, 720, h, w))).astype(np.float32) for h, w in sizes]
            + [rng.normal(0, 0.1, (1, 36, h, w)).astype(np.float32) for h, w in sizes])


@pytest.fixture(scope="module")
def family_outputs(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    ok, why = get_target("ort").availability()
    if not ok:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("heads")
    blocks = np.random.default_rng(1).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    image = np.kron(blocks, np.ones((1, 1, SIZE // 8, SIZE // 8), np.float32))  # structure the pools can see
    outputs = {}
    for family, (kind, write) in FAMILIES.items():
        if write is None:
            outputs[family] = _numpy_outputs(family)
            continue
        profile = RUN_WITH.get(family, PROFILES[kind])
        target = get_target("ort")(write(folder / f"{len(outputs)}.onnx"), profile, {})
        target.load(1)
        outputs[family] = target.infer(image, extra_inputs(profile, [META], 1) or None)
        target.close()
    return outputs


def test_every_decoder_kind_is_in_the_matrix():
    assert sorted(PROFILES) == DECODERS.names()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_decodes_with_its_own_kind(family_outputs, family):
    kind = FAMILIES[family][0]
    (dets,) = decode(family_outputs[family], [META], PROFILES[kind])
    assert len(dets) > 0


@pytest.mark.parametrize("family, kind", [(family, kind) for family in sorted(FAMILIES) for kind in sorted(PROFILES)
                                          if FAMILIES[family][0] != kind])  # its own kind: the test above
def test_no_decoder_reads_another_familys_output(family_outputs, family, kind):
    with pytest.raises(OutputLayoutError, match="do not fit"):
        decode(family_outputs[family], [META], PROFILES[kind])


@pytest.mark.parametrize("family, kind, line", [
    ("yolox", "yolov5", "3549 rows = one per grid cell at strides 8/16/32: a YOLOX head? try --profile yolox-nano-416"),
    ("yolov5", "yolox", '10647 rows = 3 anchors x 3549 grid cells at strides 8/16/32: a YOLOv5 head? use a profile '
                        'with [decoder] kind = "yolov5" and strides = [8, 16, 32]'),
    ("picodet legacy (gfl, per level)", "paddle", "8 per-level score and box maps = grid cells at strides "
                                                  "8/16/32/64: a GFL head (NanoDet, or PicoDet's legacy export)? try "
                                                  "--profile nanodet-plus-m-416 or picodet-s-416-legacy"),
    ("nanodet-plus (gfl, one output)", "yolox", "3598 rows of 80 scores + 32 box bins = one per grid cell at "
                                                "strides 8/16/32/64: a GFL head (NanoDet-Plus)? try --profile "
                                                "nanodet-plus-m-416 or picodet-s-416-legacy"),
    ("paddle nms", "gfl", "bbox [M, 6] + bbox_num [B]: a PaddleDetection export with NMS inside? try --profile "
                          "picodet-s-416"),
    ("yolov8", "yolov5", "3549 columns = one per grid cell at strides 8/16/32: a YOLOv8 head?"),
])
def test_refusal_names_the_likely_family(family_outputs, family, kind, line):
    with pytest.raises(OutputLayoutError) as caught:
        decode(family_outputs[family], [META], PROFILES[kind])
    message = str(caught.value)
    assert line in message
    assert "\n" not in message  # one line


def test_yolov5_rows_follow_the_profile_geometry():
    """The expected count is anchors_per_cell x cells at the strides of the profile's input size."""
    assert 3 * sum(grid_cells(640, 640, (8, 16, 32))) == 25200
    assert 3 * sum(grid_cells(640, 384, (8, 16, 32))) == 15120  # a rectangular export
    out = np.zeros((1, 15120, 85), np.float32)
    rect = profile_from_dict({**at_416("yolov5n-640").to_dict(), "input": {**at_416("yolov5n-640").to_dict()["input"],
                                                                           "width": 640, "height": 384}}, "rect")
    assert decode([out], [META], rect)[0].scores.size == 0
    with pytest.raises(OutputLayoutError, match=r"N = 25200 \(3 anchors x 8400 grid cells"):
        decode([np.zeros((1, 15120, 85), np.float32)], [META], load_profile("yolov5n-640"))
    one = at_416("yolov5n-640", anchors_per_cell=1)  # an explicit profile may say one row per cell
    assert decode([np.zeros((1, 3549, 85), np.float32)], [META], one)[0].scores.size == 0


def test_family_matches_from_shapes_alone():
    kinds = lambda outs, size=640: [m.kind for m in family_matches(outs, size, size, 80)]  # noqa: E731
    assert kinds([np.zeros((1, 25200, 85))]) == ["yolov5"]
    assert kinds([np.zeros((1, 8400, 85))]) == ["yolox"]
    assert kinds([np.zeros((1, 84, 8400))]) == ["yolov8"]
    assert kinds([np.zeros((1, 8400, 84))]) == ["paddle"]
    assert kinds([np.zeros((1, 2125, 112))], 320) == ["gfl"]
    assert kinds([np.zeros((2125, 6)), np.zeros(1)]) == ["paddle"]
    assert kinds([np.zeros((1, 1000, 85))]) == []
    profile = load_profile("yolov5n-640")
    assert likely_family([np.zeros((1, 1000, 85))], profile) == ""


@pytest.mark.parametrize("kind, decoder, key", [
    ("yolox", {"strides": [16, 8]}, "strides"),
    ("yolox", {"strides": "8,16"}, "strides"),
    ("yolox", {"multi_label": "yes"}, "multi_label"),
    ("yolov5", {"anchors_per_cell": 0}, "anchors_per_cell"),
    ("yolov5", {"anchors_per_cell": 2.5}, "anchors_per_cell"),
    ("yolov8", {"rows_first": 1}, "rows_first"),
    ("paddle", {"strides": [0, 8]}, "strides"),
    ("gfl", {"top_k_scope": "image"}, "top_k_scope"),
    ("gfl", {"clip_before_nms": "no"}, "clip_before_nms"),
])
def test_bad_decoder_parameters_are_one_line_errors(kind, decoder, key):
    """The strict loader refuses them when the profile loads, before any model runs."""
    data = PROFILES[kind].to_dict()
    data["decoder"].update(decoder)
    with pytest.raises(HarnessError) as caught:
        profile_from_dict(data, name="bad")
    message = str(caught.value)
    assert message.startswith("profile bad: ") and f"[decoder] {key}" in message and "\n" not in message, message
