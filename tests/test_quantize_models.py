"""harness quantize on real models: the bundled demo detector (always) and ../shared models (where present).

The demo model is calibrated on a synthetic split the demo never evaluates ("calib") and scored on
the demo's own validation images through `harness run`, as a user would.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.core.folders import OWN_FILES
from harness.data.demo import DEMO_PROFILE, DEMO_SEED, demo_model_path
from harness.data.synthetic import generate_dataset
from harness.profiles import load_profile
from harness.quant import calibrate, write_qdq
from harness.quant.calib_data import calibration_batches, calibration_images
from tests.conftest import need_shared
from tests.test_cli_errors import cli


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    calib, _ = generate_dataset(root / "calib", num_images=16, seed=DEMO_SEED, split="calib")
    images, ann = generate_dataset(root / "val", num_images=40, seed=DEMO_SEED, split="val")
    return {"calib": calib, "images": images, "ann": ann, "root": root}


def run_rows(data, model, out, targets="ort,ov"):
    result = cli("run", "--target", targets, "-m", model, "-p", DEMO_PROFILE, "--data", data["images"],
                 "--ann", data["ann"], "--bs", "1", "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05",
                 "--out", out)
    assert result.exit_code == 0, (result.output, result.stderr)
    return {row["target"]: row for row in json.loads((out / "results.json").read_text())["rows"]}


def sqnr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((reference - test) ** 2.0)))


@pytest.mark.slow
def test_demo_model_int8_holds_map_on_ort_and_ov(demo_data):
    root = demo_data["root"]
    result = cli("quantize", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--calib", demo_data["calib"],
                 "--out", root / "quant")
    assert result.exit_code == 0, (result.output, result.stderr)
    qdq = root / "quant" / "model.qdq.onnx"
    assert json.loads((root / "quant" / "quant.json").read_text())["calibration"]["images"]["count"] == 16
    fp32 = run_rows(demo_data, demo_model_path(), root / "fp32")
    int8 = run_rows(demo_data, qdq, root / "int8")
    # every target labels the Q/DQ file int8 from its graph, the fp32 file fp32
    assert int8["ov"]["precision"] == int8["ort"]["precision"] == "int8"
    assert fp32["ov"]["precision"] == fp32["ort"]["precision"] == "fp32"
    for target in ("ort", "ov"):
        assert fp32[target]["map"] > 0.5
        assert abs(int8[target]["map"] - fp32[target]["map"]) < 0.03, (target, fp32[target]["map"], int8[target]["map"])
    assert int8["ort"]["map"] != fp32["ort"]["map"] or int8["ort"]["map50"] != fp32["ort"]["map50"]


@pytest.mark.slow
def test_nncf_backend_writes_an_ir_that_ov_runs(demo_data):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'harness[quant]')")
    root = demo_data["root"]
    result = cli("quantize", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--calib", demo_data["calib"],
                 "--backend", "nncf", "--out", root / "nncf")
    assert result.exit_code == 0, (result.output, result.stderr)
    record = json.loads((root / "nncf" / "quant.json").read_text())
    assert record["backend"] == "nncf" and record["for_tensorrt"] is False and record["fake_quantize_ops"] > 0
    written = sorted(p.name for p in (root / "nncf").iterdir() if p.name not in OWN_FILES)
    assert written == ["model.bin", "model.xml", "quant.json"]
    rows = run_rows(demo_data, root / "nncf" / "model.xml", root / "nncf-run", targets="ov")
    fp32 = run_rows(demo_data, demo_model_path(), root / "fp32-ov", targets="ov")
    assert rows["ov"]["precision"] == "int8"
    assert abs(rows["ov"]["map"] - fp32["ov"]["map"]) < 0.03
    # exclusions match OpenVINO op names (an ONNX Conv becomes "<name>/WithoutBiases" + its bias Add)
    result = cli("quantize", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--calib", demo_data["calib"],
                 "--backend", "nncf", "--exclude", "^/model/heads\\.", "--out", root / "nncf-excl")
    assert result.exit_code == 0, (result.output, result.stderr)
    fewer = json.loads((root / "nncf-excl" / "quant.json").read_text())
    assert "/model/heads.2/heads.2.1/heads.2.1.0/Conv/WithoutBiases" in fewer["excluded"]["nodes"]
    assert fewer["excluded"]["matched_against"] == "OpenVINO op names"
    assert 0 < fewer["fake_quantize_ops"] < record["fake_quantize_ops"]


def test_nncf_refuses_what_it_cannot_do(demo_data, tmp_path):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'harness[quant]')")
    from tests.test_cli_errors import assert_one_line_error

    base = ["quantize", "-m", demo_model_path(), "-p", DEMO_PROFILE, "--calib", demo_data["calib"], "--backend", "nncf"]
    assert_one_line_error(cli(*base, "--method", "entropy", "--out", tmp_path / "a"), "--method entropy is not available")
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nimage: 3c000000\n")
    assert_one_line_error(cli(*base, "--from-trt-cache", cache, "--out", tmp_path / "b"), "--backend ort only")


def coco_calib_images(count: int):
    """The `count` coco-tiny images with the lowest ids (the calibration half; evaluation uses the rest)."""
    images = need_shared("data", "coco-tiny", "val2017")
    ann = json.loads(need_shared("data", "coco-tiny", "annotations", "instances_val2017.json").read_text())
    names = [img["file_name"] for img in sorted(ann["images"], key=lambda i: i["id"])[:count]]
    return images, names


@pytest.fixture(scope="module")
def coco_calib(tmp_path_factory):
    images, names = coco_calib_images(8)
    folder = tmp_path_factory.mktemp("coco-calib")
    for name in names:
        (folder / name).symlink_to(images / name)
    return folder


@pytest.mark.slow
@pytest.mark.shared
def test_nanodet_m_320_opset12_is_upgraded_and_runs_in_ort_and_ov(coco_calib, tmp_path):
    import openvino as ov

    model = need_shared("models", "nanodet-m-320.onnx")
    spec = load_profile("nanodet-m-320").input
    with calibrate(model, calibration_images(coco_calib, 8), spec) as cal:
        assert (cal.prepared.opset_before, cal.prepared.opset_after) == (12, 13)
        written = write_qdq(cal, tmp_path / "q.onnx")
    batch = next(iter(calibration_batches(calibration_images(coco_calib, 1), spec, 1)))
    reference = ort.InferenceSession(str(model)).run(None, {"image": batch})
    int8_ort = ort.InferenceSession(str(written.path)).run(None, {"image": batch})
    int8_ov = list(ov.Core().compile_model(str(written.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(batch).values())
    for ref, a, b in zip(reference, int8_ort, int8_ov):
        assert sqnr(ref, a) > 6 and sqnr(ref, b) > 6  # a broken graph gives 0-2 dB


@pytest.mark.slow
@pytest.mark.shared
def test_nanodet_plus_concat_convs_stay_float_so_ov_agrees_with_ort(coco_calib, tmp_path):
    """OpenVINO 2026.4 miscomputes Concat -> Q/DQ -> Conv (GhostPAN); the placement keeps those convs float."""
    import openvino as ov

    model = need_shared("models", "nanodet-plus-m-416.onnx")
    spec = load_profile("nanodet-plus-m-416").input
    with calibrate(model, calibration_images(coco_calib, 8), spec) as cal:
        concat_convs = set(cal.placement.concat_convs)
        # GhostPAN: twelve Convs read a Concat output directly; these four were measured wrong on ov
        assert len(concat_convs) == 12 and concat_convs >= {"Conv_429", "Conv_455", "Conv_487", "Conv_519"}
        written = write_qdq(cal, tmp_path / "q.onnx")
        trt_only = write_qdq(cal, tmp_path / "trt.onnx", concat_convs=True)
    batch = next(iter(calibration_batches(calibration_images(coco_calib, 1), spec, 1)))
    reference = ort.InferenceSession(str(model)).run(None, {"data": batch})[0]
    int8_ort = ort.InferenceSession(str(written.path)).run(None, {"data": batch})[0]
    int8_ov = ov.Core().compile_model(str(written.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(batch)[0]
    assert sqnr(reference, int8_ort) > 6
    assert sqnr(reference, int8_ov) > 6  # 0.2 dB with those four convs quantized
    assert concat_convs.isdisjoint(written.quantized_nodes)
    assert concat_convs <= set(trt_only.quantized_nodes)  # the TensorRT-only override puts them back
    for path, expected in ((written.path, set()), (trt_only.path, concat_convs)):
        graph = onnx.load(str(path)).graph
        producer = {out: node for node in graph.node for out in node.output}
        fed_by_dq = {n.name for n in graph.node if n.name in concat_convs
                     and producer[n.input[0]].op_type == "DequantizeLinear"}
        assert fed_by_dq == expected
