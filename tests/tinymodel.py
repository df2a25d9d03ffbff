"""A tiny real ONNX detector (GFL output convention) and a tiny COCO dataset, built in tests.

Not a mock: ONNX Runtime and OpenVINO load and run it, and its detections depend on the pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 32
CLASSES = 2
STRIDE = 8


def write_tiny_model(path: Path, batch: int | str = "batch", size: int = SIZE, classes: int = CLASSES,
                     strides: tuple[int, ...] = (STRIDE,), weight_std: float = 0.02, seed: int = 7) -> Path:
    """image [B,3,S,S] -> per stride: avg-pool, 1x1 conv to C+32 maps; levels concatenated
    (stride order) -> [B, N, C + 32] -> sigmoid: the one-output GFL layout of NanoDet-Plus."""
    channels = classes + 32
    rng = np.random.default_rng(seed)
    nodes, inits, levels = [], [], []
    for s in strides:
        weight = rng.normal(0, weight_std, (channels, 3, 1, 1)).astype(np.float32)
        bias = np.zeros(channels, np.float32)
        bias[:classes] = -1.0
        inits += [numpy_helper.from_array(weight, f"w{s}"), numpy_helper.from_array(bias, f"b{s}")]
        nodes += [
            helper.make_node("AveragePool", ["image"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Conv", [f"pool{s}", f"w{s}", f"b{s}"], [f"maps{s}"]),
            helper.make_node("Reshape", [f"maps{s}", "shape"], [f"flat{s}"]),
        ]
        levels.append(f"flat{s}")
    inits.append(numpy_helper.from_array(np.array([0, channels, -1], np.int64), "shape"))
    nodes += [helper.make_node("Concat", levels, ["cat"], axis=2),
              helper.make_node("Transpose", ["cat"], ["rows"], perm=[0, 2, 1]),
              helper.make_node("Sigmoid", ["rows"], ["output"])]
    n = sum((size // s) ** 2 for s in strides)
    graph = helper.make_graph(
        nodes, "tiny_gfl",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, n, channels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_tiny_profile(path: Path, size: int = SIZE, classes: int = CLASSES, **decoder) -> Path:
    dec = {"strides": [STRIDE], "reg_max": 7, "prior_offset": 0.5, "scores": "sigmoid", **decoder}
    dec_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in dec.items())
    names = json.dumps([f"shape{i}" for i in range(classes)])
    ids = json.dumps([1 + 2 * i for i in range(classes)])
    path.write_text(f"""description = "tiny test model"
[input]
width = {size}
height = {size}
resize = "letterbox"
mean = [127.5, 127.5, 127.5]
std = [64.0, 64.0, 64.0]
[decoder]
kind = "gfl"
{dec_lines}
[postprocess]
score_threshold = 0.05
[classes]
names = {names}
category_ids = {ids}
""")
    return path


def write_tiny_dataset(root: Path, count: int = 6, classes: int = CLASSES) -> tuple[Path, Path]:
    """count JPEGs with coloured rectangles and their COCO json; returns (images dir, json)."""
    rng = np.random.default_rng(11)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(count):
        h, w = int(rng.integers(40, 80)), int(rng.integers(40, 80))
        img = np.full((h, w, 3), 30, np.uint8)
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        bw, bh = int(rng.integers(8, w - x)), int(rng.integers(8, h - y))
        cls = i % classes
        img[y:y + bh, x:x + bw] = (220, 40, 40) if cls else (40, 220, 40)
        name = f"img_{i:03d}.jpg"
        cv2.imwrite(str(images_dir / name), img)
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": 100 + i, "category_id": 1 + 2 * cls, "bbox": [x, y, bw, bh],
                     "area": bw * bh, "iscrowd": 0})
    cats = [{"id": 1 + 2 * c, "name": f"shape{c}"} for c in range(classes)]
    ann_path = root / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return images_dir, ann_path


def tiny_ort_setup(tmp_path: Path, count: int = 6):
    """(images dir, annotations json, model path, profile) for a tiny run on ONNX Runtime;
    skips with the reason where the ort target cannot run."""
    import pytest

    from harness.profiles import load_profile
    from harness.targets import get_target

    ok, why = get_target("ort").availability()
    if not ok:
        pytest.skip(why)
    images_dir, ann_path = write_tiny_dataset(tmp_path / "data", count=count)
    model = write_tiny_model(tmp_path / "tiny.onnx")
    profile = load_profile(write_tiny_profile(tmp_path / "tiny.toml"))
    return images_dir, ann_path, model, profile


def write_tiny_convnet(path: Path, opset: int = 13, batch: int | str = "batch", size: int = SIZE, seed: int = 11) -> Path:
    """A small conv net whose every Conv has a TensorRT int8 kernel (channels 16), for quantization tests.

    image -> c1 (3->16, 3x3) -> relu1 -> c2 (16->16) -> relu2 -+-> c3a -+-> add -> c4 -> sigmoid -> output
                                                               +-> c3b -+
    relu2 fans out to two convs, so one Q/DQ pair is shared between them (ModelOpt's placement).
    """
    rng = np.random.default_rng(seed)

    def conv(name, cin, cout, k, src, dst):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32), f"{name}_w"))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [dst], name=name,
                                      kernel_shape=[k, k], pads=[k // 2] * 4))

    nodes: list = []
    inits: list = []
    conv("c1", 3, 16, 3, "image", "t1")
    nodes.append(helper.make_node("Relu", ["t1"], ["r1"], name="relu1"))
    conv("c2", 16, 16, 1, "r1", "t2")
    nodes.append(helper.make_node("Relu", ["t2"], ["r2"], name="relu2"))
    conv("c3a", 16, 16, 3, "r2", "t3a")
    conv("c3b", 16, 16, 1, "r2", "t3b")
    nodes.append(helper.make_node("Add", ["t3a", "t3b"], ["s"], name="add"))
    conv("c4", 16, 16, 1, "s", "t4")
    nodes.append(helper.make_node("Sigmoid", ["t4"], ["output"], name="sigmoid"))
    graph = helper.make_graph(
        nodes, "tiny_convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 16, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset <= 12 else 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


HOSTILE_TARGET = "/model/s16/s16.1/s16.1.0/Conv"


def write_hostile_demo(path: Path, target: str = HOSTILE_TARGET, factor: float = 1000.0, channel: int = 0) -> Path:
    """The bundled demo detector with one quantization-hostile node: a 1x1 Conv `hostile_amp` inserted
    before `target` multiplies one input channel by `factor` and `target`'s weights for that channel are
    divided by it, so fp32 computes the same detections while `target`'s input activation gets a range
    `factor` times its other channels'. One per-tensor int8 scale then crushes those channels: with
    factor 1000 the all-int8 model loses about 0.35 mAP on the demo split, and keeping `target` in float
    restores it (tensor SQNR hardly notices: the one wide channel holds most of the energy)."""
    from harness.data.demo import demo_model_path

    model = onnx.load(str(demo_model_path()))
    inits = {init.name: init for init in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == target)
    weight = numpy_helper.to_array(inits[node.input[1]]).copy()
    gain = np.ones(weight.shape[1], np.float32)
    gain[channel] = factor
    weight[:, channel] /= factor
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
    amp_weight = np.diag(gain).reshape(len(gain), len(gain), 1, 1).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(amp_weight, "hostile_amp_w"))
    amp = helper.make_node("Conv", [node.input[0], "hostile_amp_w"], ["hostile_amp_out"], name="hostile_amp")
    model.graph.node.insert(list(model.graph.node).index(node), amp)
    node.input[0] = "hostile_amp_out"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
