"""Decoders: raw model outputs + per-image meta -> detections in original-image pixels.

One module per family; each declares a `DecoderFamily` (its typed `Params`, read from the profile's
[decoder] table, and its decode function). The table below is the only list of families: adding one
is one new module plus one line here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.decode.geometry import OutputLayoutError, likely_family
from harness.decode.types import Detections
from harness.registry import Registry

DECODERS = Registry("decoder kind", {
    "effdet": "harness.decode.effdet:FAMILY",
    "gfl": "harness.decode.gfl:FAMILY",
    "paddle": "harness.decode.paddle:FAMILY",
    "ssd-postprocess": "harness.decode.ssd:FAMILY",
    "yolo-nms": "harness.decode.yolo:YOLO_NMS",
    "yolov5": "harness.decode.yolo:YOLOV5",
    "yolov8": "harness.decode.yolo:YOLOV8",
    "yolov8-tflite": "harness.decode.yolo:YOLOV8_TFLITE",
    "yolox": "harness.decode.yolox:FAMILY",
})


def decode(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    """Decode one batch: outputs in the model's output order, metas for the real images only.
    Outputs that fit no layout of the profile's decoder fail with the heads they would fit."""
    try:
        return DECODERS.get(profile.decoder.kind).decode(outputs, metas, profile)
    except OutputLayoutError as exc:
        hint = likely_family(outputs, profile)
        raise OutputLayoutError(f"{exc}; {hint}" if hint else str(exc)) from None
