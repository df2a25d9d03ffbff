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
