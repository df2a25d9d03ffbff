"""YOLO decoders: YOLOv5 (anchor-based, objectness), YOLOv8 (anchor-free), and exports with NMS on device.

Boxes of the ONNX exports are already decoded by the graph (grid, anchors and strides are inside):
centre x, centre y, width, height in model-input pixels. Outputs are matched by shape, not by name.

- kind "yolov5": one output [B, N, 5 + C] = (cx, cy, w, h, objectness, C class probabilities);
  score = objectness * class probability (yolov5's non_max_suppression). Extra 5-D per-level raw maps
  that older exports also return ([B, 3, H, W, 5 + C]) are ignored. N must be anchors_per_cell (3) x
  the grid cells at the profile's strides (8/16/32): 25200 at 640.
- kind "yolov8": one output [B, 4 + C, N] (ultralytics' export), or [B, N, 4 + C] where the profile
  says `rows_first = true` (a transposed export; PP-YOLOE's raw output has that shape too, so it is
  never assumed); class probabilities, no objectness. N = one per grid cell (8400 at 640).
- kind "yolov8-tflite": Ultralytics' TFLite exports (YOLOv8, YOLO11; `format=tflite`, also int8): the
  yolov8 layout [B, 4 + C, N], but cx, cy, w, h are normalized to the input size (Ultralytics divides
  them by the image size in TFLite exports to limit the int8 error); they are multiplied back here.
- kind "yolo-nms": a graph with NMS inside, e.g. YOLOv5 compiled for VastAI VACC with its NMS op:
  class ids [B, N, 1], scores [B, N, 1] (in that output order) and xyxy boxes [B, N, 4] in
  letterboxed input pixels; unused rows hold -1 and are dropped.

As in yolov5/ultralytics validation, every (box, class) pair above the score threshold is a
candidate (multi-label), the pre_nms_top_k best go to class-aware NMS (their max_nms = 30000), and
max_detections are kept. A missing batch dimension is added back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.core.config import setting
from harness.core.errors import HarnessError
from harness.decode.geometry import OutputLayoutError, check_strides, grid_cells, strides_text
from harness.decode.nms import above_threshold, at_most, nms_to_original, top_k_indices
from harness.decode.types import DecoderFamily, Detections, NoParams, check_batch, output_shapes
from harness.images.preprocess import input_to_original


@dataclass(frozen=True)
class AnchorParams:
    """[decoder] of kind "yolov5": anchors_per_cell predictions per grid cell at these strides."""

    strides: tuple[int, ...] = setting((8, 16, 32), gt=0, nonempty=True)
    anchors_per_cell: int = setting(3, ge=1, le=16)

    def __post_init__(self):
        check_strides(self.strides)


@dataclass(frozen=True)
class AnchorFreeParams:
    """[decoder] of kind "yolov8": one prediction per grid cell at these strides."""

    strides: tuple[int, ...] = setting((8, 16, 32), gt=0, nonempty=True)
    rows_first: bool = False  # [B, N, 4 + C] (a transposed export) instead of ultralytics' [B, 4 + C, N]

    def __post_init__(self):
        check_strides(self.strides)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xy, half = xywh[:, :2], xywh[:, 2:4] / 2
    return np.concatenate([xy - half, xy + half], axis=1).astype(np.float32)


def _nms_and_map(boxes, scores, labels, meta, post) -> Detections:
    keep = top_k_indices(scores, post.pre_nms_top_k)
    return nms_to_original(boxes[keep], scores[keep], labels[keep], meta, post)


def _candidates_nms(xywh: np.ndarray, cls: np.ndarray, meta, post) -> Detections:
    """Multi-label candidates (every class score above threshold) of one image -> NMS -> original pixels."""
    rows, labels, scores = above_threshold(cls, post.score_threshold)
    if rows.size == 0:
        return Detections.empty()
    boxes = xywh_to_xyxy(xywh[rows].astype(np.float32))
    return _nms_and_map(boxes, scores.astype(np.float32), labels, meta, post)


def single_prediction(outputs: Sequence[np.ndarray], channels: int, kind: str, rows: int, rows_text: str,
                      transposed: bool = False) -> np.ndarray:
    """The one [B, N, channels] prediction tensor (or [B, channels, N] when transposed), as
    (B, N, channels), with N = rows (rows_text says why, e.g. "3 anchors x 8400 grid cells at
    strides 8/16/32"). Anything else raises OutputLayoutError: a head of another family has the
    same channels but another row count for the same input (YOLOX: one row per cell, YOLOv5: three)."""
    candidates = []
    for o in outputs:
        a = np.asarray(o)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            continue
        if not transposed and a.shape[2] == channels:
            candidates.append(a)
        elif transposed and a.shape[1] == channels:
            candidates.append(a.transpose(0, 2, 1))
    expected = f"[B, {channels}, N]" if transposed else f"[B, N, {channels}]"
    objectness = kind in ("yolov5", "yolox")
    what = (f"expected one prediction tensor {expected} with {channels} = "
            + ("4 box + 1 objectness + " if objectness else "4 box + ")
            + f"{channels - (5 if objectness else 4)} class channels and N = {rows} ({rows_text})")
    if len(candidates) != 1:
        why = "none fits" if not candidates else f"{len(candidates)} fit"
        raise OutputLayoutError(f"model outputs [{output_shapes(outputs)}] do not fit the {kind} profile ({why}): {what}")
    if candidates[0].shape[1] != rows:
        raise OutputLayoutError(f"model outputs [{output_shapes(outputs)}] do not fit the {kind} profile "
                                f"({candidates[0].shape[1]} rows): {what}")
    return candidates[0]


def grid_rows(profile, per_cell: int) -> tuple[int, str]:
    """Rows a YOLO-style head returns for the profile's input: per_cell x the grid cells at the
    [decoder] strides, and the words for an error message."""
    spec, strides = profile.input, profile.decoder.params.strides
    cells = sum(grid_cells(spec.width, spec.height, strides))
    per = f"{per_cell} anchors x {cells} grid cells" if per_cell > 1 else "one per grid cell"
    return per_cell * cells, f"{per} at strides {strides_text(strides)} of a {spec.width}x{spec.height} input"


def decode_yolov5(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    post, nc = profile.postprocess, profile.num_classes
    pred = single_prediction(outputs, 5 + nc, "yolov5", *grid_rows(profile, profile.decoder.params.anchors_per_cell))
    check_batch(pred.shape[0], metas)
    thr = post.score_threshold
    results = []
    for b, meta in enumerate(metas):
        x = pred[b]
        x = x[x[:, 4] > thr]  # yolov5: objectness candidates first
        cls = x[:, 5:].astype(np.float32) * x[:, 4:5].astype(np.float32)
        results.append(_candidates_nms(x[:, :4], cls, meta, post))
    return results


#: box centres of candidates at most this far from 0 are fractions of the input, not input pixels
NORMALIZED_PEAK = 1.5


def check_box_units(pred: np.ndarray, outputs, profile, kind: str, normalized: bool) -> None:
    """YOLOv8 ONNX exports and Ultralytics' TFLite exports have the same [B, 84, N] shape; only the box
    units tell them apart (input pixels vs fractions of the input). The centres of the rows that hold a
    candidate must be in the units the kind reads, else OutputLayoutError naming the other kind."""
    spec = profile.input
    rows = pred[..., 4:].max(axis=-1) > profile.postprocess.score_threshold
    if not rows.any() or min(spec.width, spec.height) < 4 * NORMALIZED_PEAK:
        return
    peak = float(np.abs(pred[..., :2][rows]).max())
    if normalized and peak > NORMALIZED_PEAK:
        raise OutputLayoutError(
            f"model outputs [{output_shapes(outputs)}] do not fit the {kind} profile: box centres reach {peak:.1f}, "
            f"input pixels rather than fractions of the {spec.width}x{spec.height} input (an ONNX-style YOLOv8 "
            'export? use [decoder] kind = "yolov8")')
    if not normalized and peak <= NORMALIZED_PEAK:
        raise OutputLayoutError(
            f"model outputs [{output_shapes(outputs)}] do not fit the {kind} profile: box centres stay within "
            f"{peak:.2f}, fractions of the input rather than pixels of the {spec.width}x{spec.height} input, as "
            'Ultralytics\' TFLite exports write them; use [decoder] kind = "yolov8-tflite" (e.g. --profile '
            "yolo11n-640-tflite)")


def decode_yolov8(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    post, nc = profile.postprocess, profile.num_classes
    pred = single_prediction(outputs, 4 + nc, "yolov8", *grid_rows(profile, 1),
                             transposed=not profile.decoder.params.rows_first)
    check_batch(pred.shape[0], metas)
    check_box_units(pred[: len(metas)], outputs, profile, "yolov8", normalized=False)
    return [_candidates_nms(pred[b, :, :4], pred[b, :, 4:], meta, post) for b, meta in enumerate(metas)]


def decode_yolov8_tflite(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    post, nc, spec = profile.postprocess, profile.num_classes, profile.input
    pred = single_prediction(outputs, 4 + nc, "yolov8-tflite", *grid_rows(profile, 1),
                             transposed=not profile.decoder.params.rows_first)
    check_batch(pred.shape[0], metas)
    check_box_units(pred[: len(metas)], outputs, profile, "yolov8-tflite", normalized=True)
    size = np.array([spec.width, spec.height, spec.width, spec.height], np.float32)
    return [_candidates_nms(pred[b, :, :4].astype(np.float32) * size, pred[b, :, 4:], meta, post)
            for b, meta in enumerate(metas)]


def arrange_nms_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class ids [B, N], scores [B, N], boxes [B, N, 4]) of a graph with NMS inside."""
    arrays = []
    for o in outputs:
        a = np.asarray(o)
        arrays.append(a[None] if a.ndim == 2 else a)
    ones = [a for a in arrays if a.ndim == 3 and a.shape[2] == 1]
    fours = [a for a in arrays if a.ndim == 3 and a.shape[2] == 4]
    if len(arrays) != 3 or len(ones) != 2 or len(fours) != 1 or len({a.shape[:2] for a in arrays}) != 1:
        raise OutputLayoutError(
            f"model outputs [{output_shapes(outputs)}] do not fit the yolo-nms profile: expected class ids "
            "[B, N, 1], scores [B, N, 1] (in that order) and xyxy boxes [B, N, 4] in input pixels, "
            "unused rows -1 (YOLO with NMS inside the graph, e.g. VACC output_0..output_2)"
        )
    return ones[0][..., 0], ones[1][..., 0], fours[0]


def decode_yolo_nms(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    post, nc = profile.postprocess, profile.num_classes
    classes, scores, boxes = arrange_nms_outputs(outputs)
    check_batch(classes.shape[0], metas)
    results = []
    for b, meta in enumerate(metas):
        labels = np.rint(classes[b]).astype(np.int64)
        keep = np.flatnonzero((labels >= 0) & (scores[b] > post.score_threshold))
        if np.any(labels[keep] >= nc):
            raise HarnessError(
                f"model returned class id {int(labels[keep].max())} but profile {profile.name} has {nc} classes"
            )
        order = at_most(keep[np.lexsort((keep, -scores[b, keep]))], post.max_detections)
        dets = Detections(boxes[b, order].astype(np.float32), scores[b, order].astype(np.float32), labels[order])
        dets.boxes = input_to_original(dets.boxes, meta)
        results.append(dets)
    return results


YOLOV5 = DecoderFamily("yolov5", AnchorParams, decode_yolov5, "YOLOv5 (boxes decoded in the graph, objectness x class)")
YOLOV8 = DecoderFamily("yolov8", AnchorFreeParams, decode_yolov8, "YOLOv8 (anchor-free, boxes decoded in the graph)")
YOLOV8_TFLITE = DecoderFamily("yolov8-tflite", AnchorFreeParams, decode_yolov8_tflite,
                              "Ultralytics TFLite export (YOLOv8/YOLO11 layout, boxes normalized to the input)")
YOLO_NMS = DecoderFamily("yolo-nms", NoParams, decode_yolo_nms, "YOLO with NMS in the graph (e.g. VACC output_0..2)")
