"""SSD graphs with TFLite's built-in `TFLite_Detection_PostProcess` op: NMS is already done in the graph.

Four outputs, matched by shape (not by name): boxes [B, N, 4] as (ymin, xmin, ymax, xmax) normalized
to the model input, class indices [B, N] (floats, 0-based into the profile's class list), scores
[B, N] and the number of valid rows [B]. TFLite's documented order is boxes, classes, scores, count
(TF1 Object Detection API exports, the TFLite Task Library); TF2 exports list the same four in
another order, so the two [B, N] tensors are told apart by their values where they can be (class
indices are whole numbers, scores are not) and by that documented order where they cannot.

The op's own options (max detections, its NMS IoU and class handling) are part of the model; the
profile's [postprocess] only drops rows at or below score_threshold and keeps max_detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.core.errors import HarnessError
from harness.decode.geometry import OutputLayoutError
from harness.decode.nms import at_most
from harness.decode.types import DecoderFamily, Detections, NoParams, check_batch, output_shapes
from harness.images.preprocess import input_to_original

EXPECTED = ("expected TFLite_Detection_PostProcess outputs: boxes [B, N, 4] (ymin, xmin, ymax, xmax normalized), "
            "class indices [B, N], scores [B, N] and the valid count [B]")


def _whole(a: np.ndarray) -> bool:
    return bool(a.size) and bool(np.all(np.isfinite(a))) and bool(np.all(a == np.round(a)))


def arrange_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [B, N, 4], classes [B, N], scores [B, N], count [B]) from the op's four outputs."""
    arrays = [np.asarray(o) for o in outputs]
    boxes = [a for a in arrays if a.ndim == 3 and a.shape[2] == 4]
    pairs = [a for a in arrays if a.ndim == 2]
    counts = [a for a in arrays if a.ndim == 1]
    if len(arrays) != 4 or len(boxes) != 1 or len(pairs) != 2 or len(counts) != 1:
        raise OutputLayoutError(f"model outputs [{output_shapes(outputs)}] do not fit the ssd-postprocess profile: "
                                f"{EXPECTED}")
    (box,), (first, second), (count,) = boxes, pairs, counts
    if not (first.shape == second.shape == box.shape[:2] and count.shape[0] == box.shape[0]):
        raise OutputLayoutError(f"model outputs [{output_shapes(outputs)}] do not fit the ssd-postprocess profile "
                                f"(their batch and row counts disagree): {EXPECTED}")
    if _whole(second) and not _whole(first):  # TF2 order: scores before classes
        first, second = second, first
    return box, first, second, count


def decode_ssd(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    post, nc, spec = profile.postprocess, profile.num_classes, profile.input
    boxes, classes, scores, count = arrange_outputs(outputs)
    check_batch(boxes.shape[0], metas)
    results = []
    for b, meta in enumerate(metas):
        valid = int(np.clip(np.rint(count[b]), 0, boxes.shape[1]))
        labels = np.rint(classes[b, :valid]).astype(np.int64)
        score = scores[b, :valid].astype(np.float32)
        keep = np.flatnonzero(score > post.score_threshold)
        if keep.size and (labels[keep].min() < 0 or labels[keep].max() >= nc):
            bad = int(labels[keep].max() if labels[keep].max() >= nc else labels[keep].min())
            raise HarnessError(f"model returned class index {bad} but profile {profile.name} has {nc} classes "
                               "(0-based, as TFLite_Detection_PostProcess numbers them)")
        keep = at_most(keep[np.argsort(-score[keep], kind="stable")], post.max_detections)
        yx = boxes[b, keep].astype(np.float32)
        xyxy = np.stack([yx[:, 1] * spec.width, yx[:, 0] * spec.height,
                         yx[:, 3] * spec.width, yx[:, 2] * spec.height], axis=1).reshape(-1, 4)
        results.append(Detections(input_to_original(xyxy, meta), score[keep], labels[keep]))
    return results


FAMILY = DecoderFamily("ssd-postprocess", NoParams, decode_ssd,
                       "SSD with TFLite_Detection_PostProcess in the graph (boxes, classes, scores, count)")
