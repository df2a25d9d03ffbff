"""Decoders: raw model outputs + per-image meta -> detections in original-image pixels.

One module per family; each declares a `DecoderFamily` (its typed `Params`, read from the profile's
[decoder] table, and its decode function). The table below is the only list of families: adding one
is one new module plus one line here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.registry import Registry
from harness.decode.geometry import OutputLayoutError, likely_family
from harness.decode.types import Detections

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
        found = DECODERS.get(profile.decoder.kind).decode(outputs, metas, profile)
    except OutputLayoutError as exc:
        hint = likely_family(outputs, profile)
        raise OutputLayoutError(f"{exc}; {hint}" if hint else str(exc)) from None
    check_score_range(found, profile)
    return found


#: how far outside [0, 1] a score may stray (float rounding of a product of probabilities)
SCORE_SLACK = 1e-3


def check_score_range(found: Sequence[Detections], profile) -> None:
    """Every decoder yields probabilities; a score outside [0, 1] means the model's score outputs are
    not what the profile says (logits under a sigmoid profile, scores of 140): the mAP would be
    silently wrong, so the batch is refused (the runner does it on the first batch, before timing)."""
    scores = [d.scores for d in found if len(d)]
    if not scores:
        return
    low = min(float(np.min(s)) for s in scores)
    high = max(float(np.max(s)) for s in scores)
    if low >= -SCORE_SLACK and high <= 1 + SCORE_SLACK:
        return
    mode = getattr(getattr(profile.decoder, "params", None), "scores", None)
    advice = (f' ([decoder] scores = "{mode}"); if the model outputs logits, set [decoder] scores = "logits"'
              if mode == "sigmoid" else "")
    raise OutputLayoutError(f"detection scores range from {low:.4g} to {high:.4g}, outside [0, 1]: the model's "
                            f"score outputs are not the probabilities profile {profile.name} expects{advice}")
