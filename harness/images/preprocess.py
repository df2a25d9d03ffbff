"""Image file -> model input tensor + the meta that maps boxes back to the original image.

Pure functions shared by in-process targets and the file-based NPU flow, so the two cannot drift.
Geometry convention: input_xy = original_xy * scale + pad (per axis); boxes map back exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.core.errors import ImageError, SkippedImage
from harness.core.jit import compiled
from harness.images.imagefile import check_image_file, read_image  # noqa: F401  (re-exported: the readers' one entry)

if TYPE_CHECKING:
    from harness.profiles import InputSpec

#: cv2.INTER_* values (OpenCV's stable enum; tests compare them with cv2's), so importing this module
#: does not load OpenCV: commands that never resize (`harness targets`, `--help`) start faster
_INTERPOLATION = {
    "nearest": 0,  # cv2.INTER_NEAREST
    "linear": 1,  # cv2.INTER_LINEAR
    "cubic": 2,  # cv2.INTER_CUBIC
    "area": 3,  # cv2.INTER_AREA
}


@dataclass(frozen=True)
class ImageMeta:
    """Where one image came from and how it was placed in the model input."""

    image_id: int
    file: str
    width: int  # original width in pixels
    height: int  # original height in pixels
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageMeta:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


_ROUNDING = {"round": round, "floor": math.floor, "ceil": math.ceil}


def place_geometry(width: int, height: int, spec: InputSpec) -> tuple[int, int, float, float, float, float]:
    """Resized size, per-axis scale and padding (input_xy = original_xy * scale + pad) for an image of
    width x height. Letterbox pads are whole pixels; a warp's are the exact fractional offsets."""
    if spec.resize == "stretch":
        return spec.width, spec.height, spec.width / width, spec.height / height, 0, 0
    if spec.resize == "warp-stretch":
        return spec.width, spec.height, spec.width / width, spec.height / height, 0.0, 0.0
    if spec.resize == "warp":  # NanoDet's get_resize_matrix(keep_ratio=True): T @ Rs @ C
        ratio = spec.height / height if width / height < spec.width / spec.height else spec.width / width
        return (spec.width, spec.height, ratio, ratio,
                0.5 * spec.width - ratio * width / 2, 0.5 * spec.height - ratio * height / 2)
    ratio = min(spec.width / width, spec.height / height)
    rounding = _ROUNDING[spec.rounding]
    new_w = max(1, min(spec.width, int(rounding(width * ratio))))
    new_h = max(1, min(spec.height, int(rounding(height * ratio))))
    if spec.letterbox_rounding == "ultralytics":  # ultralytics/data/augment.py LetterBox, predict mode
        dw, dh = (spec.width - new_w) / 2, (spec.height - new_h) / 2
        return new_w, new_h, ratio, ratio, int(round(dw - 0.1)), int(round(dh - 0.1))
    if spec.resize == "letterbox":
        pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    else:  # letterbox-topleft
        pad_x, pad_y = 0, 0
    return new_w, new_h, new_w / width, new_h / height, pad_x, pad_y


def _interpolation(spec: InputSpec, shrinks: bool) -> int:
    if spec.interpolation == "area-linear":
        return _INTERPOLATION["area"] if shrinks else _INTERPOLATION["linear"]
    return _INTERPOLATION[spec.interpolation]


def _fill(spec: InputSpec):
    fill = spec.pad_value
    if isinstance(fill, tuple) and spec.color == "rgb":
        fill = fill[::-1]  # the canvas is BGR until to_model_layout
    return fill


def resize_image(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Resize (and pad) a BGR image to the model's input size; returns canvas and (sx, sy, px, py)."""
    import cv2

    height, width = image.shape[:2]
    new_w, new_h, scale_x, scale_y, pad_x, pad_y = place_geometry(width, height, spec)
    if spec.resize in ("warp", "warp-stretch"):
        # NanoDet's ShapeTransform: cv2.warpPerspective with its 3x3 matrix (linear, constant border)
        matrix = np.array([[scale_x, 0, pad_x], [0, scale_y, pad_y], [0, 0, 1]], np.float64)
        fill = _fill(spec)
        border = tuple(float(v) for v in fill) if isinstance(fill, tuple) else (float(fill),) * 3
        canvas = cv2.warpPerspective(image, matrix, (spec.width, spec.height), flags=_interpolation(spec, scale_x < 1),
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        return canvas, (scale_x, scale_y, pad_x, pad_y)
    resized = cv2.resize(image, (new_w, new_h), interpolation=_interpolation(spec, new_w < width or new_h < height))
    if spec.resize == "stretch":
        return resized, (scale_x, scale_y, 0, 0)
    canvas = np.full((spec.height, spec.width, 3), _fill(spec), dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, (scale_x, scale_y, pad_x, pad_y)


@compiled
def _normalise(canvas, mean, inv_std, swap, channels_first, out):  # pragma: no cover - compiled
    """out = (canvas[..., order] - mean) * inv_std as float32, in HWC or CHW order, one pass.

    numpy needed four passes and as many fresh 1 MB arrays (astype, subtract, multiply, transpose)
    and took 10x longer; the arithmetic is the same float32 subtract-then-multiply, so the values
    are identical (tests/test_geometry.py compares them)."""
    height, width, _ = canvas.shape
    for c in range(3):
        source = 2 - c if swap else c
        m, s = mean[c], inv_std[c]
        for y in range(height):
            for x in range(width):
                value = (np.float32(canvas[y, x, source]) - m) * s
                if channels_first:
                    out[c, y, x] = value
                else:
                    out[y, x, c] = value
    return out


def to_model_layout(canvas: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 HxWx3 canvas -> one image in the model's colour order, dtype, normalisation, layout;
    written into `out` (e.g. a row of the batch array) when given."""
    channels_first = spec.layout == "NCHW"
    shape = (3, spec.height, spec.width) if channels_first else (spec.height, spec.width, 3)
    if out is None:
        out = np.empty(shape, spec.numpy_dtype)
    if spec.dtype == "u8":
        pixels = canvas[:, :, ::-1] if spec.color == "rgb" else canvas
        out[...] = pixels.transpose(2, 0, 1) if channels_first else pixels
        return out
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    if spec.dtype == "f16":  # normalised in float32 (as for f32), then rounded once to float16
        out[...] = _normalise(np.ascontiguousarray(canvas), mean, inv_std, spec.color == "rgb", channels_first,
                              np.empty(shape, np.float32))
        return out
    return _normalise(np.ascontiguousarray(canvas), mean, inv_std, spec.color == "rgb", channels_first, out)


def load_canvas(path: str | Path, image_id: int, spec: InputSpec) -> tuple[np.ndarray, ImageMeta]:
    """One image file -> (resized and padded BGR uint8 canvas, meta)."""
    image = read_image(path)
    height, width = image.shape[:2]
    canvas, (scale_x, scale_y, pad_x, pad_y) = resize_image(image, spec)
    meta = ImageMeta(int(image_id), str(path), width, height, scale_x, scale_y, float(pad_x), float(pad_y))
    return canvas, meta


def preprocess_image(path: str | Path, image_id: int, spec: InputSpec,
                     out: np.ndarray | None = None) -> tuple[np.ndarray, ImageMeta]:
    """One image file -> (model input without batch dim, meta); into `out` when given."""
    canvas, meta = load_canvas(path, image_id, spec)
    return to_model_layout(canvas, spec, out), meta


def input_to_original(boxes_xyxy: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Map boxes from model-input pixels back to original-image pixels, clipped to the image."""
    # Per-column constants in the boxes' own precision: the same arithmetic as scalar python
    # floats per column (numpy casts those to the array's dtype), in three whole-array operations.
    dtype = np.result_type(boxes_xyxy.dtype, np.float32)
    pad = np.array([meta.pad_x, meta.pad_y, meta.pad_x, meta.pad_y], dtype)
    scale = np.array([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y], dtype)
    limit = np.array([meta.width, meta.height, meta.width, meta.height], dtype)
    out = (boxes_xyxy - pad) / scale
    np.clip(out, 0, limit, out=out)
    return out.astype(np.float32, copy=False)


def original_to_input(boxes_xyxy: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Inverse of input_to_original (no clipping): original pixels -> model-input pixels."""
    out = np.empty_like(boxes_xyxy, dtype=np.float32)
    out[:, 0::2] = boxes_xyxy[:, 0::2] * meta.scale_x + meta.pad_x
    out[:, 1::2] = boxes_xyxy[:, 1::2] * meta.scale_y + meta.pad_y
    return out


@dataclass
class Batch:
    tensor: np.ndarray  # (bs_run, ...) model input; may hold padding rows beyond len(metas)
    metas: list[ImageMeta]  # the real images only
    failed: list[SkippedImage] = field(default_factory=list)  # images that could not be read (skip_bad)
    seconds: float = 0.0  # preprocessing time spent on this batch (worker thread)


def prepare_batch(chunk: Sequence[tuple[int, object]], spec: InputSpec, pad_to: int | None, skip_bad: bool,
                  canvases: dict | None = None) -> Batch:
    """(image id, path) pairs -> one model-input batch (padded to pad_to by repeating the last image).
    With a `canvases` store (harness.measure.canvases), resized images are taken from it or put into it."""
    t0 = time.perf_counter()
    # Images are written straight into their batch row: no per-image array, no np.stack copy.
    tensor = np.empty(spec.shape(max(len(chunk), pad_to or 0)), spec.numpy_dtype)
    metas: list[ImageMeta] = []
    failed: list[SkippedImage] = []
    for image_id, path in chunk:
        try:
            cached = canvases.get((image_id, str(path))) if canvases is not None else None
            if cached is None:
                cached = load_canvas(path, image_id, spec)
                if canvases is not None:
                    canvases[(image_id, str(path))] = cached
            canvas, meta = cached
            to_model_layout(canvas, spec, out=tensor[len(metas)])
        except ImageError as exc:
            if not skip_bad:
                raise
            failed.append(exc.skipped())
            continue
        metas.append(meta)
    if not metas:
        return Batch(np.zeros((0,), spec.numpy_dtype), [], failed, time.perf_counter() - t0)
    if pad_to:
        # A fixed-batch model needs a full batch: repeat the last real image; its outputs are dropped.
        tensor[len(metas) : pad_to] = tensor[len(metas) - 1]
        tensor = tensor[:pad_to]
    else:
        tensor = tensor[: len(metas)]
    return Batch(tensor, metas, failed, time.perf_counter() - t0)
