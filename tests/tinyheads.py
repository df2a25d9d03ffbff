"""Tiny real ONNX detectors with the output layouts of each family (YOLOX, YOLOv5, YOLOv8, GFL per level
and concatenated, Paddle with NMS inside), built with onnx.helper in the tests.

Not mocks: ONNX Runtime and OpenVINO load and run them, and every value depends on the pixels. Each
grid level is an average pool over stride x stride cells (ceil_mode, so a 416 input has 7 x 7 cells
at stride 64, as the real heads do) followed by a 1x1 convolution with random weights; the levels
are laid out exactly as the family's exports lay them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _save(nodes, inits, inputs, outputs, path: Path, name: str) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def cells(size: int, strides) -> list[int]:
    return [(-(-size // s)) ** 2 for s in strides]


def _standardized(nodes, inits) -> str:
    """image -> per-image zero mean, unit variance, so the heads behave alike whatever the profile's
    normalisation (YOLOX feeds 0..255, YOLOv5 0..1, GFL profiles mean/std)."""
    if "x" not in {o for n in nodes for o in n.output}:
        inits.append(numpy_helper.from_array(np.array(1e-6, np.float32), "eps"))
        nodes += [helper.make_node("ReduceMean", ["image"], ["image_mean"], axes=[1, 2, 3], keepdims=1),
                  helper.make_node("Sub", ["image", "image_mean"], ["centred"]),
                  helper.make_node("Mul", ["centred", "centred"], ["squares"]),
                  helper.make_node("ReduceMean", ["squares"], ["variance"], axes=[1, 2, 3], keepdims=1),
                  helper.make_node("Add", ["variance", "eps"], ["variance_eps"]),
                  helper.make_node("Sqrt", ["variance_eps"], ["deviation"]),
                  helper.make_node("Div", ["centred", "deviation"], ["x"])]
    return "x"


def _level_maps(nodes, inits, rng, stride: int, channels: int, bias: np.ndarray, tag: str) -> str:
    """image -> [B, channels, cells] of one level (standardise, pool, 1x1 conv, flatten)."""
    source = _standardized(nodes, inits)
    weight = rng.normal(0, 0.7, (channels, 3, 1, 1)).astype(np.float32)
    inits += [numpy_helper.from_array(weight, f"w_{tag}"), numpy_helper.from_array(bias.astype(np.float32), f"b_{tag}"),
              numpy_helper.from_array(np.array([0, channels, -1], np.int64), f"flat_{tag}")]
    nodes += [
        helper.make_node("AveragePool", [source], [f"pool_{tag}"], kernel_shape=[stride, stride],
                         strides=[stride, stride], ceil_mode=1),
        helper.make_node("Conv", [f"pool_{tag}", f"w_{tag}", f"b_{tag}"], [f"maps_{tag}"]),
        helper.make_node("Reshape", [f"maps_{tag}", f"flat_{tag}"], [f"level_{tag}"]),
    ]
    return f"level_{tag}"


def _image_input(size, batch="batch", dynamic_size: bool = False):
    dims = [batch, 3, "height", "width"] if dynamic_size else [batch, 3, size, size]
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)


def write_grid_head(path: Path, size: int, channels: int, strides=(8, 16, 32), per_cell: int = 1,
                    channels_first: bool = False, scale: np.ndarray | None = None, bias: np.ndarray | None = None,
                    batch="batch", dynamic_size: bool = False, seed: int = 0) -> Path:
    """One output [B, N, channels] (or [B, channels, N]), N = per_cell x cells at the strides, all
    values sigmoid-ed then multiplied per channel by `scale`. Rows run level by level; with
    per_cell > 1, anchor-major within a level (YOLOv5's [B, 3, H, W, C] flattened)."""
    rng = np.random.default_rng(seed)
    nodes, inits, levels = [], [], []
    bias = np.zeros(channels, np.float32) if bias is None else np.asarray(bias, np.float32)
    for s in strides:
        flat = _level_maps(nodes, inits, rng, s, per_cell * channels, np.tile(bias, per_cell), str(s))
        if per_cell > 1:
            inits.append(numpy_helper.from_array(np.array([0, per_cell, channels, -1], np.int64), f"split_{s}"))
            inits.append(numpy_helper.from_array(np.array([0, -1, channels], np.int64), f"rows_{s}"))
            nodes += [helper.make_node("Reshape", [flat, f"split_{s}"], [f"anchors_{s}"]),
                      helper.make_node("Transpose", [f"anchors_{s}"], [f"anchor_rows_{s}"], perm=[0, 1, 3, 2]),
                      helper.make_node("Reshape", [f"anchor_rows_{s}", f"rows_{s}"], [f"out_{s}"])]
        else:
            nodes.append(helper.make_node("Transpose", [flat], [f"out_{s}"], perm=[0, 2, 1]))
        levels.append(f"out_{s}")
    scale = np.ones(channels, np.float32) if scale is None else np.asarray(scale, np.float32)
    inits.append(numpy_helper.from_array(scale, "scale"))
    nodes += [helper.make_node("Concat", levels, ["rows"], axis=1),
              helper.make_node("Sigmoid", ["rows"], ["probs"]),
              helper.make_node("Mul", ["probs", "scale"], ["scaled"])]
    n = per_cell * sum(cells(size, strides))
    if channels_first:
        nodes.append(helper.make_node("Transpose", ["scaled"], ["output"], perm=[0, 2, 1]))
        shape = [batch, channels, "n" if dynamic_size else n]
    else:
        nodes.append(helper.make_node("Identity", ["scaled"], ["output"]))
        shape = [batch, "n" if dynamic_size else n, channels]
    return _save(nodes, inits, [_image_input(size, batch, dynamic_size)],
                 [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], path, "tiny_grid_head")


def write_yolox_head(path: Path, size: int = 416, classes: int = 80, **kw) -> Path:
    """YOLOX raw head: one row per cell at 8/16/32; offsets and log sizes in (0, 1), objectness and
    class scores sigmoid-ed."""
    bias = np.r_[np.zeros(4), -1.0, np.full(classes, -5.0)]
    return write_grid_head(path, size, 5 + classes, bias=bias, **kw)


def write_yolov5_head(path: Path, size: int = 416, classes: int = 80, **kw) -> Path:
    """YOLOv5 export: 3 rows per cell at 8/16/32, boxes decoded in the graph (cx, cy, w, h in input
    pixels), objectness, class probabilities."""
    scale = np.r_[np.full(2, float(size)), np.full(2, size / 4.0), np.ones(1 + classes)]
    bias = np.r_[np.zeros(4), -5.5, np.full(classes, -5.5)]
    return write_grid_head(path, size, 5 + classes, per_cell=3, scale=scale, bias=bias, **kw)


def write_yolov8_head(path: Path, size: int = 416, classes: int = 80, **kw) -> Path:
    scale = np.r_[np.full(2, float(size)), np.full(2, size / 4.0), np.ones(classes)]
    bias = np.r_[np.zeros(4), np.full(classes, -6.0)]
    return write_grid_head(path, size, 4 + classes, channels_first=True, scale=scale, bias=bias, **kw)


def write_gfl_head(path: Path, size: int = 416, classes: int = 80, strides=(8, 16, 32, 64), **kw) -> Path:
    """NanoDet-Plus export: one [B, N, C + 32] output; the bins are sigmoid-ed too here (any real
    values are valid logits), which keeps boxes small."""
    bias = np.r_[np.full(classes, -6.0), np.zeros(32)]
    return write_grid_head(path, size, classes + 32, strides=strides, bias=bias, **kw)


def write_gfl_levels_head(path: Path, size: int = 416, classes: int = 80, strides=(8, 16, 32, 64),
                          seed: int = 0) -> Path:
    """PicoDet legacy export: per level a sigmoid-ed score map [1, n, C] and a raw bin map [1, n, 32];
    all score maps first, then all bin maps (the export's output order)."""
    rng = np.random.default_rng(seed)
    nodes, inits, score_names, bin_names = [], [], [], []
    outputs_scores, outputs_bins = [], []
    for s, n in zip(strides, cells(size, strides)):
        flat = _level_maps(nodes, inits, rng, s, classes + 32, np.r_[np.full(classes, -6.0), np.zeros(32)], str(s))
        inits.append(numpy_helper.from_array(np.array([classes, 32], np.int64), f"sizes_{s}"))
        nodes += [helper.make_node("Transpose", [flat], [f"rows_{s}"], perm=[0, 2, 1]),
                  helper.make_node("Split", [f"rows_{s}", f"sizes_{s}"], [f"logits_{s}", f"bins_{s}"], axis=2),
                  helper.make_node("Sigmoid", [f"logits_{s}"], [f"scores_{s}"])]
        score_names.append(f"scores_{s}")
        bin_names.append(f"bins_{s}")
        outputs_scores.append(helper.make_tensor_value_info(f"scores_{s}", TensorProto.FLOAT, [1, n, classes]))
        outputs_bins.append(helper.make_tensor_value_info(f"bins_{s}", TensorProto.FLOAT, [1, n, 32]))
    return _save(nodes, inits, [_image_input(size, 1)], outputs_scores + outputs_bins, path, "tiny_gfl_levels")


# Candidate boxes (input pixels) of the Paddle-style NMS graph: three pairs of near-duplicates, so
# NMS keeps three rows of the six the file declares.
NMS_CANDIDATES = np.array([[4, 4, 20, 20], [5, 5, 20, 20], [30, 8, 60, 40], [31, 8, 60, 40],
                           [10, 40, 50, 60], [10, 41, 50, 60]], np.float32)


def write_paddle_nms_head(path: Path, size: int = 64, declared_rows: int = len(NMS_CANDIDATES)) -> Path:
    """PaddleDetection export with NMS inside: image [B, 3, S, S] + scale_factor [1, 2] ->
    bbox [K, 6] = (class 0, score, box / scale) and bbox_num = Shape(bbox)[0] (as Paddle's
    multiclass_nms3 export computes it), bbox DECLARED as a fixed [declared_rows, 6] although NMS
    keeps 3 of the 6 candidates: the file shape that ONNX Runtime folds into a wrong count."""
    m = len(NMS_CANDIDATES)
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),  # [B]
        helper.make_node("Sigmoid", ["mean"], ["level"]),
        helper.make_node("ReduceMean", ["level"], ["level1"], axes=[0], keepdims=1),  # [1]
        helper.make_node("Mul", ["ramp", "level1"], ["ramped"]),  # [M] scores depend on the pixels
        helper.make_node("Reshape", ["ramped", "score_shape"], ["scores"]),  # [1, 1, M]
        helper.make_node("NonMaxSuppression", ["boxes_yxyx", "scores", "max_out", "iou", "score_thr"], ["selected"]),
        helper.make_node("Gather", ["selected", "col2"], ["picked"], axis=1),  # [K, 1]
        helper.make_node("Squeeze", ["picked", "axis1"], ["index"]),  # [K]
        helper.make_node("Gather", ["candidates", "index"], ["kept_boxes"], axis=0),  # [K, 4]
        helper.make_node("Gather", ["ramped", "index"], ["kept_scores"], axis=0),  # [K]
        helper.make_node("Unsqueeze", ["kept_scores", "axis1"], ["score_col"]),
        helper.make_node("Split", ["scale_factor", "split11"], ["sy", "sx"], axis=1),
        helper.make_node("Concat", ["sx", "sy", "sx", "sy"], ["scale4"], axis=1),
        helper.make_node("Div", ["kept_boxes", "scale4"], ["orig_boxes"]),
        helper.make_node("Mul", ["score_col", "zero"], ["class_col"]),
        helper.make_node("Concat", ["class_col", "score_col", "orig_boxes"], ["bbox"], axis=1),
        helper.make_node("Shape", ["bbox"], ["bbox_shape"]),
        helper.make_node("Slice", ["bbox_shape", "start0", "end1"], ["rows"]),
        helper.make_node("Cast", ["rows"], ["bbox_num"], to=TensorProto.INT32),
    ]
    yxyx = NMS_CANDIDATES[:, [1, 0, 3, 2]][None]
    inits = [
        numpy_helper.from_array(np.linspace(0.9, 0.4, m).astype(np.float32), "ramp"),
        numpy_helper.from_array(np.array([1, 1, m], np.int64), "score_shape"),
        numpy_helper.from_array(yxyx, "boxes_yxyx"),
        numpy_helper.from_array(NMS_CANDIDATES, "candidates"),
        numpy_helper.from_array(np.array([m], np.int64), "max_out"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
        numpy_helper.from_array(np.array([0.0], np.float32), "score_thr"),
        numpy_helper.from_array(np.array([2], np.int64), "col2"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "split11"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "start0"),
        numpy_helper.from_array(np.array([1], np.int64), "end1"),
    ]
    inputs = [_image_input(size), helper.make_tensor_value_info("scale_factor", TensorProto.FLOAT, [1, 2])]
    outputs = [helper.make_tensor_value_info("bbox", TensorProto.FLOAT, [declared_rows, 6]),
               helper.make_tensor_value_info("bbox_num", TensorProto.INT32, [1])]
    return _save(nodes, inits, inputs, outputs, path, "tiny_paddle_nms")


def write_paddle_raw_head(path: Path, size: int = 416, classes: int = 80, strides=(8, 16, 32, 64),
                          seed: int = 0) -> Path:
    """PicoDet export_nms=False: boxes [B, N, 4] (xyxy in input pixels) + scores [B, C, N]."""
    rng = np.random.default_rng(seed)
    nodes, inits, levels = [], [], []
    for s in strides:
        flat = _level_maps(nodes, inits, rng, s, 4 + classes, np.r_[np.zeros(4), np.full(classes, -6.0)], str(s))
        levels.append(flat)
    inits += [numpy_helper.from_array(np.array([4, classes], np.int64), "sizes"),
              numpy_helper.from_array(np.array([0.0, 0.0, size / 2, size / 2], np.float32), "origin"),
              numpy_helper.from_array(np.full(4, size / 2, np.float32), "extent")]
    nodes += [helper.make_node("Concat", levels, ["maps"], axis=2),  # [B, 4 + C, N]
              helper.make_node("Sigmoid", ["maps"], ["probs"]),
              helper.make_node("Split", ["probs", "sizes"], ["unit_boxes", "scores"], axis=1),
              helper.make_node("Transpose", ["unit_boxes"], ["unit_rows"], perm=[0, 2, 1]),
              helper.make_node("Mul", ["unit_rows", "extent"], ["spans"]),
              helper.make_node("Add", ["spans", "origin"], ["boxes"])]  # x1, y1 < size / 2 <= x2, y2
    n = sum(cells(size, strides))
    outputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", n, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes, n])]
    return _save(nodes, inits, [_image_input(size)], outputs, path, "tiny_paddle_raw")
