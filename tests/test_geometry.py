"""Preprocessing geometry: every resize mode maps boxes to the model input and back exactly."""

import cv2
import numpy as np
import pytest

from harness.images.preprocess import input_to_original, original_to_input, preprocess_image, resize_image, to_model_layout
from harness.profiles import InputSpec


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "letterbox-topleft"])
@pytest.mark.parametrize("size", [(640, 426), (300, 500), (320, 320), (33, 17)])
def test_box_round_trip_every_resize_mode(tmp_path, resize, size):
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    # A white rectangle whose edges we can find again in the model input.
    x1, y1, x2, y2 = int(width * 0.25), int(height * 0.3), int(width * 0.75), int(height * 0.8)
    image[y1:y2, x1:x2] = 255
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    spec = InputSpec(width=160, height=128, resize=resize, interpolation="nearest", layout="NHWC", dtype="u8")
    tensor, meta = preprocess_image(path, 7, spec)
    assert tensor.shape == (128, 160, 3) and meta.image_id == 7 and (meta.width, meta.height) == (width, height)
    box = np.array([[x1, y1, x2, y2]], np.float32)
    mapped = original_to_input(box, meta)
    # The rectangle sits where the mapping says (nearest-neighbour resize: within one input pixel).
    ys, xs = np.nonzero(tensor[:, :, 0] > 127)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    assert np.allclose(found, mapped[0], atol=1.01)
    # And back: exact inverse.
    assert np.allclose(input_to_original(mapped, meta), box, atol=1e-3)
    if resize == "letterbox":
        assert abs(meta.pad_x - (160 - round(width * meta.scale_x)) // 2) <= 1
        assert abs(meta.pad_y - (128 - round(height * meta.scale_y)) // 2) <= 1
    if resize == "letterbox-topleft":
        assert meta.pad_x == 0 and meta.pad_y == 0


def test_letterbox_keeps_aspect_and_pads_with_pad_value():
    image = np.full((100, 200, 3), 200, np.uint8)
    spec = InputSpec(width=64, height=64, resize="letterbox", pad_value=7)
    canvas, (sx, sy, px, py) = resize_image(image, spec)
    assert sx == pytest.approx(sy) == pytest.approx(0.32)
    assert (px, py) == (0, 16)
    assert (canvas[:16] == 7).all() and (canvas[48:] == 7).all() and (canvas[16:48] == 200).all()


def test_input_to_original_clips_to_image():
    from harness.images.preprocess import ImageMeta

    meta = ImageMeta(1, "x", 100, 50, 0.5, 0.5, 10, 0)
    out = input_to_original(np.array([[0, -5, 200, 40]], np.float32), meta)
    assert out.tolist() == [[0, 0, 100, 50]]


def test_colour_order_layout_dtype_and_normalisation():
    canvas = np.zeros((2, 2, 3), np.uint8)
    canvas[..., 0], canvas[..., 1], canvas[..., 2] = 10, 20, 30  # B, G, R
    bgr = to_model_layout(canvas, InputSpec(2, 2, mean=(1, 2, 3), std=(1, 2, 3)))
    assert bgr.shape == (3, 2, 2) and bgr.dtype == np.float32
    assert bgr[:, 0, 0].tolist() == [9.0, 9.0, 9.0]
    rgb = to_model_layout(canvas, InputSpec(2, 2, color="rgb", layout="NHWC", dtype="u8"))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and rgb[0, 0].tolist() == [30, 20, 10]


@pytest.mark.parametrize("color", ["bgr", "rgb"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["f32", "u8"])
def test_model_layout_equals_the_numpy_formula(color, layout, dtype):
    """The compiled normalisation gives the bits of (pixels.astype(float32) - mean) / std-as-reciprocal."""
    canvas = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    spec = InputSpec(53, 37, color=color, layout=layout, dtype=dtype, mean=(103.53, 116.28, 123.675),
                     std=(57.375, 57.12, 58.395))
    pixels = canvas[:, :, ::-1] if color == "rgb" else canvas
    if dtype == "f32":
        pixels = (pixels.astype(np.float32) - np.float32(spec.mean)) * (np.float32(1) / np.float32(spec.std))
    want = pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels
    got = to_model_layout(canvas, spec)
    assert got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    row = np.zeros((2,) + want.shape, want.dtype)
    to_model_layout(canvas, spec, out=row[1])  # straight into a batch row
    np.testing.assert_array_equal(row[1], want)


def test_per_channel_pad_value_is_in_model_colour_order():
    image = np.full((10, 20, 3), 50, np.uint8)
    spec = InputSpec(width=20, height=20, resize="letterbox-topleft", pad_value=(124, 116, 104), color="rgb",
                     layout="NHWC", dtype="u8")
    canvas, _ = resize_image(image, spec)
    assert canvas[15, 5].tolist() == [104, 116, 124]  # BGR canvas
    assert to_model_layout(canvas, spec)[15, 5].tolist() == [124, 116, 104]  # RGB model input


def test_profile_rejects_bad_pad_value():
    from harness.core.errors import HarnessError
    from harness.profiles import profile_from_dict

    base = {"input": {"width": 8, "height": 8}, "decoder": {"kind": "gfl"}, "classes": {"names": ["a"]}}
    assert profile_from_dict({**base, "input": {**base["input"], "pad_value": [1, 2, 3]}}, "p").input.pad_value == (1, 2, 3)
    with pytest.raises(HarnessError, match="pad_value"):
        profile_from_dict({**base, "input": {**base["input"], "pad_value": [1, 2]}}, "p")
