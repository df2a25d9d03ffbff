"""A Paddle-style model with a second input (scale_factor) runs end to end through both CPU targets.

The tiny graph returns one fixed box in model-input pixels divided by scale_factor, as Paddle's
exported NMS graphs do, so boxes land on the ground truth only if scale_factor is fed right.
"""

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.measure.results import ResultsStore
from harness.measure.runner import RunConfig, run
from harness.profiles import load_profile

SIZE = 32
INPUT_BOX = [8.0, 4.0, 24.0, 28.0]  # x1, y1, x2, y2 in model-input pixels


def write_paddle_like_model(path):
    """image [B,3,S,S], scale_factor [B,2] -> bbox [B,6] (class 0, score 0.9, box / scale), bbox_num [B]."""
    nodes = [
        helper.make_node("Split", ["scale_factor", "split"], ["sy", "sx"], axis=1),
        helper.make_node("Concat", ["sx", "sy", "sx", "sy"], ["scale4"], axis=1),
        helper.make_node("Div", ["box", "scale4"], ["orig"]),
        helper.make_node("Mul", ["sy", "zero"], ["cls"]),
        helper.make_node("Add", ["cls", "score"], ["scores"]),
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero1"], ["mean0"]),  # keeps the image input in the graph
        helper.make_node("Unsqueeze", ["mean0", "axis1"], ["mean_col"]),
        helper.make_node("Add", ["cls", "mean_col"], ["cls_dep"]),
        helper.make_node("Concat", ["cls_dep", "scores", "orig"], ["bbox"], axis=1),
        helper.make_node("Shape", ["scale_factor"], ["sf_shape"]),
        helper.make_node("Slice", ["sf_shape", "start0", "end1"], ["batch"]),
        helper.make_node("ConstantOfShape", ["batch"], ["bbox_num"],
                         value=helper.make_tensor("one", TensorProto.INT32, [1], [1])),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 1], np.int64), "split"),
        numpy_helper.from_array(np.array([INPUT_BOX], np.float32), "box"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero1"),
        numpy_helper.from_array(np.array(0.9, np.float32), "score"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "start0"),
        numpy_helper.from_array(np.array([1], np.int64), "end1"),
    ]
    graph = helper.make_graph(
        nodes, "paddle_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, SIZE, SIZE]),
         helper.make_tensor_value_info("scale_factor", TensorProto.FLOAT, ["B", 2])],
        [helper.make_tensor_value_info("bbox", TensorProto.FLOAT, ["B", 6]),
         helper.make_tensor_value_info("bbox_num", TensorProto.INT32, ["B"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_profile(path):
    path.write_text(f"""
[input]
width = {SIZE}
height = {SIZE}
resize = "stretch"
color = "rgb"
extras = ["scale_factor"]
[decoder]
kind = "paddle"
[postprocess]
score_threshold = 0.05
[classes]
names = ["thing"]
category_ids = [7]
""")


def write_dataset(root, sizes):
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(images_dir / f"{i}.png"), np.full((h, w, 3), 100, np.uint8))
        sx, sy = SIZE / w, SIZE / h
        x1, y1, x2, y2 = INPUT_BOX[0] / sx, INPUT_BOX[1] / sy, INPUT_BOX[2] / sx, INPUT_BOX[3] / sy
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "thing"}]}))
    return images_dir, ann


@pytest.mark.parametrize("target", ["ort", "ov"])
def test_scale_factor_is_fed_and_boxes_land_on_ground_truth(tmp_path, target):
    write_paddle_like_model(tmp_path / "m.onnx")
    write_profile(tmp_path / "p.toml")
    # Non-square images of different sizes: swapping scale_y/scale_x or feeding 1.0 would miss.
    images, ann = write_dataset(tmp_path, [(64, 32), (40, 96), (100, 50), (32, 32), (77, 45)])
    config = RunConfig(target=target, model=str(tmp_path / "m.onnx"), profile=load_profile(tmp_path / "p.toml"),
                       images_dir=images, ann_path=ann, batch_sizes=[1, 2], bench_seconds=0.1, max_seconds=0.1,
                       warmup_seconds=0.05, min_iterations=2)
    rows = run(config, ResultsStore(tmp_path / "out", env={}))
    assert [r["images"] for r in rows] == [5, 5]
    assert [r["map"] for r in rows] == pytest.approx([1.0, 1.0], abs=1e-6)
