"""Model inputs and declared shapes on tiny real ONNX models, through both CPU targets:

- a profile extra the model lacks, or a model input the profile does not feed: one line naming both
  (it used to end in ONNX Runtime's / OpenVINO's traceback on the first batch);
- an NMS-in-graph export that declares a fixed row count its NMS does not return: the count output is
  right on ort too (ORT folded Shape(bbox) of the declared [6, 6] into the constant 6);
- dynamic height and width run on ov at the profile's size (it refused "fixed batch of None").
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import onnx
import pytest

from harness.core.errors import HarnessError
from harness.measure.results import ResultsStore
from harness.measure.runner import RunConfig, run
from harness.model.declared_shapes import model_for_onnx_runtime, unconfirmed_output_dims
from harness.model.extra_inputs import check_model_inputs
from harness.model.onnx_model import TensorInfo
from harness.profiles import load_profile, profile_from_dict
from harness.targets import get_target
from tests import tinyheads
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

TARGETS = ["ort", "ov"]


def need(target: str):
    ok, why = get_target(target).availability()
    if not ok:
        pytest.skip(why)


def run_rows(tmp_path, target, model, profile, images, ann, bs=(1,)):
    config = RunConfig(target=target, model=str(model), profile=profile, images_dir=images, ann_path=ann,
                       batch_sizes=list(bs), bench_seconds=0.05, max_seconds=0.05, warmup_seconds=0.01,
                       min_iterations=1)
    return run(config, ResultsStore(tmp_path / f"out-{target}", env={}))


def with_changes(profile, name, input_changes=(), **decoder):
    data = profile.to_dict()
    data["input"].update(dict(input_changes))
    data["decoder"].update(decoder)
    return profile_from_dict(data, name=name)


# ----------------------------------------------------------------------------------------------
# check_model_inputs, the pure check
# ----------------------------------------------------------------------------------------------

PADDLE = load_profile("picodet-xs-320-lcnet")
PLAIN = load_profile("picodet-s-320-legacy")


def tensors(*named_shapes) -> list[TensorInfo]:
    """Model inputs as onnx_model.inspect_onnx lists them: (name, shape) pairs, float32."""
    return [TensorInfo(name, shape, "float32") for name, shape in named_shapes]


def test_inputs_that_fit_pass():
    check_model_inputs(tensors(("image", (None, 3, 320, 320)), ("scale_factor", (1, 2))), PADDLE, "m.onnx", 1)
    check_model_inputs(tensors(("image", (1, 3, 320, 320))), PLAIN, "m.onnx", 1)
    check_model_inputs(tensors(("image", ("batch", 3, 320, 320)), ("scale_factor", ("batch", 2))), PADDLE, "m.onnx", 8)


@pytest.mark.parametrize("inputs, profile, batch, message", [
    ([("image", (1, 3, 320, 320))], PADDLE, 1,
     r"model m.onnx has no input scale_factor that profile picodet-xs-320-lcnet feeds \(\[input\] extras = "
     r"\['scale_factor'\]\); the model's inputs: image \[1, 3, 320, 320\]"),
    ([("image", (None, 3, 320, 320)), ("scale_factor", (1, 2))], PLAIN, 1,
     r"model m.onnx takes input scale_factor \[1, 2\] that profile picodet-s-320-legacy does not feed .*"
     r"add \[input\] extras = \['scale_factor'\] to the profile"),
    ([("image", (None, 3, 320, 320)), ("mask", (None, 320, 320))], PLAIN, 1,
     r"takes input mask \[\?, 320, 320\] .*the harness feeds the image and \[input\] extras \(im_shape, scale_factor\) only"),
    ([("image", (None, 3, 320, 320)), ("scale_factor", (1, 2))], PADDLE, 4,
     r"declares input scale_factor as \[1, 2\], a fixed batch of 1, .*cannot run batch 4"),
])
def test_inputs_that_do_not_fit_are_one_line(inputs, profile, batch, message):
    with pytest.raises(HarnessError, match=message) as caught:
        check_model_inputs(tensors(*inputs), profile, "m.onnx", batch)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------
# Through the targets: one line instead of the runtime's traceback
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_profile_extra_the_model_lacks_is_one_line(tmp_path, target):
    need(target)
    images, ann = write_tiny_dataset(tmp_path / "data", count=2)
    model = write_tiny_model(tmp_path / "tiny.onnx")
    profile = with_changes(load_profile(write_tiny_profile(tmp_path / "tiny.toml")), "tiny-with-extras",
                           {"extras": ["scale_factor"]})
    with pytest.raises(HarnessError, match=r"model tiny.onnx has no input scale_factor that profile "
                                           r"tiny-with-extras feeds"):
        run_rows(tmp_path, target, model, profile, images, ann)


@pytest.mark.parametrize("target", TARGETS)
def test_model_input_the_profile_does_not_feed_is_one_line(tmp_path, target):
    need(target)
    images, ann = write_tiny_dataset(tmp_path / "data", count=2)
    model = tinyheads.write_paddle_nms_head(tmp_path / "nms.onnx")
    profile = with_changes(PADDLE, "no-extras", {"extras": [], "width": 64, "height": 64})
    with pytest.raises(HarnessError, match=r"model nms.onnx takes input scale_factor \[1, 2\] that profile no-extras"):
        run_rows(tmp_path, target, model, profile, images, ann)


@pytest.mark.parametrize("extras, message", [
    ([], r"model nms.onnx takes input scale_factor \[1, 2\] that profile trt-plan does not feed"),
    (["scale_factor", "im_shape"], r"model nms.onnx has no input im_shape that profile trt-plan feeds"),
])
def test_trt_refuses_in_its_plan_step_before_any_gpu_work(tmp_path, monkeypatch, extras, message):
    """TensorRT checks the inputs in its plan step, on the ONNX graph: on the fakes of TensorRT 11.4
    and cuda-python (tests/fake_trt.py; no GPU here), nothing is built and the fake GPU is never called."""
    from harness.targets.trt import cuda_rt
    from tests.fake_cuda import FakeCudaRuntime
    from tests.fake_trt import TRT_API, make_fake_tensorrt

    if not TRT_API.is_dir():
        pytest.skip("needs ../shared/trt-api (TensorRT name lists) for the TensorRT fakes")
    cuda = FakeCudaRuntime()
    trt = make_fake_tensorrt("11.4", cuda, None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_rt, "import_cudart", lambda: cuda)
    model = tinyheads.write_paddle_nms_head(tmp_path / "nms.onnx")
    profile = with_changes(PADDLE, "trt-plan", {"extras": extras, "width": 64, "height": 64})
    target = get_target("trt")(model, profile, {"engine_cache": str(tmp_path / "engines")})
    with pytest.raises(HarnessError, match=message) as caught:
        target.load(1)
    assert "\n" not in str(caught.value)
    assert trt._log["builds"] == 0 and trt._log["networks"] == [] and cuda.calls == []


# ----------------------------------------------------------------------------------------------
# Declared output shapes
# ----------------------------------------------------------------------------------------------

def test_declared_rows_nms_does_not_return_are_found(tmp_path):
    nms = onnx.load(str(tinyheads.write_paddle_nms_head(tmp_path / "nms.onnx")))
    found = unconfirmed_output_dims(nms)
    assert list(found) == ["bbox"] and found["bbox"][0] == (6, 6)
    assert found["bbox"][1] is None or found["bbox"][1][1] == 6  # inference knows the 6 columns, not the rows
    clean = write_tiny_model(tmp_path / "tiny.onnx")
    assert unconfirmed_output_dims(onnx.load(str(clean))) == {}
    assert model_for_onnx_runtime(clean) == (str(clean), [])
    source, notes = model_for_onnx_runtime(tmp_path / "nms.onnx")
    assert isinstance(source, bytes) and len(notes) == 1 and "output bbox is declared [6, 6]" in notes[0]
    relaxed = onnx.load_from_string(source)
    dims = relaxed.graph.output[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and dims[1].dim_value == 6  # rows symbolic, columns kept
    assert onnx.load(str(tmp_path / "nms.onnx")).graph.output[0].type.tensor_type.shape.dim[0].dim_value == 6


def _nms_dataset(root, sizes):
    """Images whose ground truth is exactly the 3 boxes the tiny NMS graph keeps, in original pixels
    (stretch resize to 64: original = input / scale)."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    images, anns = [], []
    kept = tinyheads.NMS_CANDIDATES[[0, 2, 4]]
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(images_dir / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        for j, (x1, y1, x2, y2) in enumerate(kept.tolist()):
            sx, sy = 64 / w, 64 / h
            box = [x1 / sx, y1 / sy, (x2 - x1) / sx, (y2 - y1) / sy]
            anns.append({"id": 10 * i + j + 1, "image_id": i + 1, "category_id": 1, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return images_dir, ann


@pytest.mark.parametrize("target", TARGETS)
def test_nms_graph_is_read_by_its_count_on_both_targets(tmp_path, target):
    need(target)
    model = tinyheads.write_paddle_nms_head(tmp_path / "nms.onnx")
    profile = with_changes(PADDLE, "nms64", {"width": 64, "height": 64})
    images, ann = _nms_dataset(tmp_path, [(128, 64), (64, 96), (200, 100)])
    (row,) = run_rows(tmp_path, target, model, profile, images, ann)
    assert row["detections"] == 9  # 3 kept per image, not 6: the count output is the real one
    assert row["map"] == pytest.approx(1.0)
    if target == "ort":
        assert any("output bbox is declared [6, 6]" in note for note in row["notes"])


def test_ort_returns_the_real_count_where_the_raw_session_does_not(tmp_path):
    """What ONNX Runtime itself returns for this graph, with the file as written: the declared
    row count (6) from its constant folding, for 3 real rows; the harness target returns 3."""
    need("ort")
    import onnxruntime as ort

    model = tinyheads.write_paddle_nms_head(tmp_path / "nms.onnx")
    feeds = {"image": np.ones((1, 3, 64, 64), np.float32), "scale_factor": np.ones((1, 2), np.float32)}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    raw = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert raw[0].shape == (3, 6) and raw[1].tolist() == [6]
    target = get_target("ort")(model, with_changes(PADDLE, "nms64", {"width": 64, "height": 64}), {})
    target.load(1)
    bbox, count = target.infer(feeds["image"], {"scale_factor": feeds["scale_factor"]})
    assert bbox.shape == (3, 6) and count.tolist() == [3]


# ----------------------------------------------------------------------------------------------
# OpenVINO: dynamic height and width
# ----------------------------------------------------------------------------------------------

def test_ov_runs_dynamic_height_width_at_the_profile_size(tmp_path):
    need("ov")
    need("ort")
    model = tinyheads.write_yolov5_head(tmp_path / "dyn.onnx", dynamic_size=True)
    graph_input = onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in graph_input] == ["batch", 3, "height", "width"]
    profile = with_changes(load_profile("yolov5n-640"), "yolov5-416", {"width": 416, "height": 416})
    for bs in (1, 2):
        target = get_target("ov")(model, profile, {})
        target.load(bs)
        (out,) = target.infer(np.zeros((bs, 3, 416, 416), np.float32))
        assert out.shape == (bs, 10647, 85)
        assert any("dynamic input dims [?, 3, ?, ?]" in note for note in target.notes)
        target.close()
    images, ann = write_tiny_dataset(tmp_path / "data", count=3)
    ov_rows = run_rows(tmp_path, "ov", model, profile, images, ann, bs=(1, 2))
    (ort_row,) = run_rows(tmp_path, "ort", model, profile, images, ann)
    assert [r["images"] for r in ov_rows] == [3, 3]
    assert ov_rows[0]["detections"] > 0
    assert abs(ov_rows[0]["detections"] - ort_row["detections"]) <= 2
