"""Each family's resize against its upstream's own preprocessing (tests/oracles.py ports), pixel for
pixel: YOLOX floors the resized size and pastes top-left, YOLOv5's val.py ceils it (INTER_AREA when
shrinking) and centres it, NanoDet warps with a fractional centring offset. Real coco-tiny images
where ../shared is present, and generated images of awkward sizes everywhere."""


import numpy as np
import pytest

from harness.images.preprocess import place_geometry, read_image, resize_image
from harness.profiles import load_profile
from tests import oracles
from tests.conftest import SHARED

#: sizes where round, floor and ceil of size x ratio disagree (e.g. 333 x 416/500 = 277.05)
SIZES = [(500, 333), (333, 500), (640, 427), (427, 640), (612, 612), (1001, 97), (97, 1001), (300, 200), (17, 31)]


def _images():
    rng = np.random.default_rng(0)
    out = [(f"{w}x{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]
    folder = SHARED / "data" / "coco-tiny" / "val2017"
    if folder.is_dir():
        out += [(p.name, read_image(p)) for p in sorted(folder.glob("*.jpg"))[:6]]
    return out


IMAGES = _images()


def _reference(profile_name, image):
    spec = load_profile(profile_name).input
    if profile_name.startswith("yolox"):
        return oracles.yolox_preproc(image, (spec.height, spec.width))[0]
    if profile_name.startswith("yolov5"):
        return oracles.yolov5_val_image(image, spec.width)
    return oracles.nanodet_warp(image, (spec.width, spec.height), keep_ratio=spec.resize == "warp")


@pytest.mark.parametrize("profile_name", ["yolox-nano-416", "yolov5n-640", "nanodet-m-416", "nanodet-m-320",
                                          "nanodet-plus-m-416"])
@pytest.mark.parametrize("name,image", IMAGES, ids=[n for n, _ in IMAGES])
def test_canvas_is_the_upstream_preprocessing_pixel_for_pixel(profile_name, name, image):
    spec = load_profile(profile_name).input
    canvas, _ = resize_image(image, spec)
    want = _reference(profile_name, image)
    assert canvas.shape == want.shape
    assert np.array_equal(canvas, want), f"{int((canvas != want).any(axis=2).sum())} pixels differ"


def test_rounding_modes_follow_their_formula():
    """333 x 416/500 = 277.056: round 277, floor 277, ceil 278; 97 x 416/1001 = 40.31: 40, 40, 41."""
    spec = load_profile("yolox-nano-416").input
    for rounding, want in (("round", (277, 40)), ("floor", (277, 40)), ("ceil", (278, 41))):
        sized = spec.__class__(**{**spec.__dict__, "rounding": rounding})
        assert place_geometry(500, 333, sized)[1] == want[0]
        assert place_geometry(1001, 97, sized)[1] == want[1]
    # 427 x 640/640 is exact: every rounding gives 427; 17 x 416/31 = 228.13 -> 228 / 228 / 229
    floor = spec.__class__(**{**spec.__dict__, "rounding": "floor"})
    assert place_geometry(31, 17, floor)[1] == int(17 * (416 / 31))


def test_warp_geometry_maps_a_point_as_the_upstream_matrix_does():
    spec = load_profile("nanodet-m-416").input
    _, _, sx, sy, px, py = place_geometry(500, 333, spec)
    ratio = 416 / 500
    assert (sx, sy) == (ratio, ratio)
    assert (px, py) == pytest.approx((0.0, 0.5 * 416 - ratio * 333 / 2))


@pytest.mark.parametrize("profile_name", ["yolo11n-640-tflite", "yolo11n-416-tflite"])
@pytest.mark.parametrize("name,image", IMAGES, ids=[n for n, _ in IMAGES])
def test_ultralytics_profiles_place_and_scale_as_letterbox_does(profile_name, name, image):
    """The yolo11n TFLite profiles (rounding = "round", box_scale = "ratio") against Ultralytics'
    LetterBox (tests/oracles.py port, the formula the removed `letterbox_rounding = "ultralytics"`
    computed): the same pixels, the same (left, top), and boxes scaled by r on both axes."""
    spec = load_profile(profile_name).input
    canvas, (scale_x, scale_y, left, top) = resize_image(image, spec)
    want, r, (want_left, want_top) = oracles.ultralytics_letterbox(image, spec.width)
    assert np.array_equal(canvas, want), f"{int((canvas != want).any(axis=2).sum())} pixels differ"
    assert (scale_x, scale_y, left, top) == (r, r, want_left, want_top)


def test_ultralytics_pad_split_is_the_centred_letterbox_split():
    """Why one key (box_scale) replaced letterbox_rounding: for every whole padding n, Ultralytics'
    top = int(round(n / 2 - 0.1)) is the centred letterbox's n // 2, so the two place the same pixels."""
    assert all(int(round(n / 2 - 0.1)) == n // 2 for n in range(0, 16385))


def test_box_scale_ratio_divides_by_r_and_resized_by_each_axis():
    """box_scale changes the meta only: the size and padding come from `rounding` and `resize` alone."""
    base = load_profile("yolox-nano-416").input  # letterbox-topleft, floor
    ratio = base.__class__(**{**base.__dict__, "box_scale": "ratio"})
    r = 416 / 500
    resized = place_geometry(500, 333, base)
    assert place_geometry(500, 333, ratio) == (*resized[:2], r, r, *resized[4:])
    assert resized[2:4] == (416 / 500, 277 / 333)  # floor(333 x r) = 277, so the y scale is not r
