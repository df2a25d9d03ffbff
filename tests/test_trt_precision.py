"""Precision in the ONNX, measured here: the fp16 conversion and the Q/DQ model (its rest in fp16)
run on ONNX Runtime CPU and OpenVINO, with their fidelity to the fp32 model asserted.

Thresholds come from measurements (docs/gpu.md): fp16 conversions of the demo and the shared NanoDet /
YOLOv5 exports keep 47-69 dB SQNR and every detection; int8 Q/DQ keeps 11-28 dB and every detection
scored >= 0.3 on these images. Calibration images are never the evaluation images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.core.errors import HarnessError
from harness.data.demo import demo_dataset, demo_model_path
from harness.decode import decode
from harness.model.onnx_model import inspect_model
from harness.precision.check import box_agreement, cpu_session, sqnr_db
from harness.precision.fp16 import convert_to_fp16, match_nodes
from harness.profiles import load_profile
from harness.targets.trt.prepare import check_batches
from tests.conftest import need_shared
from tests.qdq_util import quantize_demo

DEMO = load_profile("demo")


def _ov_runner(model: onnx.ModelProto, folder: Path, name: str):
    import openvino as ov

    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: [compiled(x)[o] for o in compiled.outputs]


def _ort_runner(model: onnx.ModelProto):
    session = cpu_session(model)
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})


def _fidelity(reference, candidate, batches, profile):
    """(min SQNR over outputs in dB, box agreement) of candidate against reference, over batches."""
    ref = [reference(x) for x, _ in batches]
    out = [candidate(x) for x, _ in batches]
    sqnr = [sqnr_db(np.concatenate([r[i].ravel() for r in ref]), np.concatenate([o[i].ravel() for o in out]))
            for i in range(len(ref[0]))]
    ref_dets = sum((decode(r, m, profile) for r, (_, m) in zip(ref, batches)), [])
    out_dets = sum((decode(o, m, profile) for o, (_, m) in zip(out, batches)), [])
    agreement, count = box_agreement(ref_dets, out_dets)
    assert count > 0, "the reference found nothing to compare"
    return min(sqnr), agreement


@pytest.fixture(scope="module")
def demo_eval():
    images, _, _ = demo_dataset()
    files = sorted(Path(images).glob("*.jpg"))[100:116]  # never used for calibration (qdq-calib split)
    return check_batches(list(enumerate(files)), DEMO.input)


@pytest.fixture(scope="module")
def coco_split():
    """(calibration files: 40 lowest ids, evaluation files: the other 40) of coco-tiny."""
    ann = json.loads(need_shared("data", "coco-tiny", "annotations", "instances_val2017.json").read_text())
    root = need_shared("data", "coco-tiny", "val2017")
    ordered = [root / i["file_name"] for i in sorted(ann["images"], key=lambda i: i["id"])]
    return ordered[:40], ordered[40:]


def test_sqnr_and_box_agreement_can_fail():
    x = np.linspace(-1, 1, 1000)
    assert sqnr_db(x, x) == float("inf")
    assert sqnr_db(x, x + 0.01) == pytest.approx(10 * np.log10(np.sum(x ** 2) / (1000 * 1e-4)))
    assert np.isnan(sqnr_db(x, np.full_like(x, np.nan)))  # undefined, and below any threshold
    assert sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
    from harness.decode.types import Detections

    ref = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0.9, 0.8], np.float32),
                     np.array([1, 2]))
    moved = Detections(np.array([[0, 0, 10, 10], [25, 25, 35, 35]], np.float32), np.array([0.9, 0.8], np.float32),
                       np.array([1, 2]))
    relabelled = Detections(ref.boxes, ref.scores, np.array([1, 3]))
    assert box_agreement([ref], [ref]) == (1.0, 2)
    assert box_agreement([ref], [moved]) == (0.5, 2)  # IoU 25/175 < 0.5
    assert box_agreement([ref], [relabelled]) == (0.5, 2)
    assert box_agreement([Detections.empty()], [ref]) == (None, 0)


def test_demo_fp16_keeps_its_fidelity_on_ort_and_openvino(tmp_path, demo_eval):
    fp32 = onnx.load(str(demo_model_path()))
    conversion = convert_to_fp16(fp32, converter="onnxconverter-common")
    assert inspect_model(fp32).precision == "fp32" and inspect_model(conversion.model).precision == "fp16"
    # fp32 inputs and outputs kept (casts at the boundary)
    assert conversion.model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    reference = _ort_runner(fp32)
    for runner in (_ort_runner(conversion.model), _ov_runner(conversion.model, tmp_path, "demo-fp16")):
        sqnr, agreement = _fidelity(reference, runner, demo_eval, DEMO)
        assert sqnr >= 40 and agreement >= 0.98, (sqnr, agreement)


@pytest.mark.slow
def test_demo_qdq_with_fp16_rest_keeps_its_fidelity_on_ort_and_openvino(tmp_path, demo_eval):
    qdq = onnx.load(str(quantize_demo(tmp_path / "demo-qdq.onnx", images=16)))
    assert inspect_model(qdq).precision == "int8"
    conversion = convert_to_fp16(qdq)
    assert conversion.recipe["converter"] == "onnxconverter-common" and conversion.recipe["opset_out"] == 19
    assert inspect_model(conversion.model).precision == "int8" and inspect_model(conversion.model).float16_tensors > 0
    reference = _ort_runner(onnx.load(str(demo_model_path())))
    runners = {"qdq-ort": _ort_runner(qdq), "qdq-fp16-ort": _ort_runner(conversion.model),
               "qdq-ov": _ov_runner(qdq, tmp_path, "qdq"), "qdq-fp16-ov": _ov_runner(conversion.model, tmp_path, "qdq16")}
    for name, runner in runners.items():
        sqnr, agreement = _fidelity(reference, runner, demo_eval, DEMO)
        assert sqnr >= 15 and agreement >= 0.9, (name, sqnr, agreement)


SHARED_FP16 = [("nanodet-m-320", "nanodet-m-320"), ("nanodet-m-416", "nanodet-m-416"),
               ("nanodet-plus-m-416", "nanodet-plus-m-416"), ("yolov5n-640-dynamic", "yolov5s-640")]


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("model_name,profile_name", SHARED_FP16)
def test_shared_models_fp16_fidelity_on_ort_and_openvino(tmp_path, coco_split, model_name, profile_name):
    path = need_shared("models", f"{model_name}.onnx")
    profile = load_profile(profile_name)
    fp32 = onnx.load(str(path))
    conversion = convert_to_fp16(fp32, converter="onnxconverter-common")
    if model_name == "yolov5n-640-dynamic":  # its Cast(to=float) nodes break the plain converter
        assert conversion.recipe["retargeted_casts"] >= 1
    if model_name == "nanodet-m-416":  # it lists its weights as graph inputs
        assert conversion.recipe["input_initializers_dropped"] > 100
    batches = check_batches(list(enumerate(coco_split[1][:6])), profile.input)
    reference = _ort_runner(fp32)
    for runner in (_ort_runner(conversion.model), _ov_runner(conversion.model, tmp_path, model_name)):
        sqnr, agreement = _fidelity(reference, runner, batches, profile)
        assert sqnr >= 40 and agreement >= 0.95, (sqnr, agreement)


@pytest.mark.slow
@pytest.mark.shared
def test_shared_nanodet_qdq_with_fp16_rest_on_ort_and_openvino(tmp_path, coco_split):
    """An opset-12 model: raising it to opset 19 for fp16 scales needs the Resize mend."""
    path = need_shared("models", "nanodet-m-320.onnx")
    profile = load_profile("nanodet-m-320")
    qdq_path = quantize_demo(tmp_path / "nanodet-qdq.onnx", model=path, profile="nanodet-m-320",
                             calib_paths=coco_split[0][:12])
    conversion = convert_to_fp16(onnx.load(str(qdq_path)))
    assert conversion.recipe["resize_inputs_mended"] > 0
    batches = check_batches(list(enumerate(coco_split[1][:6])), profile.input)
    reference = _ort_runner(onnx.load(str(path)))
    for runner in (_ort_runner(conversion.model), _ov_runner(conversion.model, tmp_path, "nanodet-qdq16")):
        sqnr, agreement = _fidelity(reference, runner, batches, profile)
        assert sqnr >= 8 and agreement >= 0.9, (sqnr, agreement)


def test_keep_fp32_nodes_keeps_those_nodes_in_fp32():
    fp32 = onnx.load(str(demo_model_path()))
    last = fp32.graph.node[-1].name  # the output Concat: decoder side
    conversion = convert_to_fp16(fp32, keep_fp32_nodes=[last], converter="onnxconverter-common")
    assert conversion.recipe["kept_fp32_nodes"] == 1
    kept = next(n for n in conversion.model.graph.node if n.name == last)
    producers = {o: n for n in conversion.model.graph.node for o in n.output}
    for name in kept.input:  # every input of the kept node comes through a cast to float
        cast = producers[name]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
    assert match_nodes(fp32, [r"/model/.*Conv.*"])  # regular expressions work
    with pytest.raises(HarnessError, match="matches no node"):
        match_nodes(fp32, ["no_such_node"])
    with pytest.raises(HarnessError, match="not a valid regular expression"):
        match_nodes(fp32, ["(["])


def test_conversion_below_the_threshold_is_refused_in_one_line(tmp_path):
    from harness.targets.trt.prepare import ConversionRefused, prepare_model
    from harness.targets.trt.settings import TrtSettings

    settings = TrtSettings(precision="fp16", check_min_sqnr_db=150.0, check_images=2, fp16_converter="onnxconverter-common")
    model = demo_model_path()
    from harness.core.fileio import sha256_file

    with pytest.raises(ConversionRefused) as info:
        prepare_model(model, sha256_file(model), settings, DEMO, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "dB < 150 dB" in message and "keep_fp32_nodes" in message
    assert not list(tmp_path.glob("*.onnx"))  # a refused conversion is not cached as a model
    with pytest.raises(ConversionRefused):  # ... but its verdict is, so a second load refuses at once
        prepare_model(model, sha256_file(model), settings, DEMO, tmp_path)
    ok = prepare_model(model, sha256_file(model), TrtSettings(precision="fp16", check_images=2,
                                                              fp16_converter="onnxconverter-common"), DEMO, tmp_path)
    assert ok.label == "fp16" and ok.path.is_file() and ok.check["passed"]
    assert ok.path.stat().st_mode & 0o777 == 0o600  # the converted model carries the weights: owner only


def test_profile_keep_fp32_nodes_and_the_runs_images_reach_the_conversion(tmp_path):
    """[precision] keep_fp32_nodes of the profile is what the conversion keeps; the check runs on the
    sample images it is given (the runner's first images), and both are in the conversion's cache key."""
    from harness.core.fileio import sha256_file
    from harness.profiles import profile_from_dict
    from harness.targets.trt.prepare import prepare_model
    from harness.targets.trt.settings import TrtSettings

    model = demo_model_path()
    last = onnx.load(str(model)).graph.node[-1].name
    kept = profile_from_dict({**DEMO.to_dict(), "precision": {"keep_fp32_nodes": [last]}}, name="demo-kept")
    assert kept.precision.keep_fp32_nodes == (last,) and kept.to_dict()["precision"] == {"keep_fp32_nodes": [last]}
    settings = TrtSettings(precision="fp16", check_images=3, fp16_converter="onnxconverter-common")
    images, _, _ = demo_dataset()
    samples = [(i, f) for i, f in enumerate(sorted(Path(images).glob("*.jpg"))[:5])]
    sha = sha256_file(model)
    plain = prepare_model(model, sha, settings, DEMO, tmp_path, sample_images=samples, sample_desc="the run's images")
    with_kept = prepare_model(model, sha, settings, kept, tmp_path, sample_images=samples, sample_desc="the run's images")
    assert plain.recipe["conversion"]["kept_fp32_nodes"] == 0 and with_kept.recipe["conversion"]["kept_fp32_nodes"] == 1
    assert with_kept.path != plain.path and with_kept.check["data"] == "the run's images"
    assert with_kept.check["images"] == 3  # check_images of the 5 given
    synthetic = prepare_model(model, sha, settings, DEMO, tmp_path)
    assert synthetic.check["data"].startswith("synthetic") and synthetic.path != plain.path
    with pytest.raises(HarnessError, match="keep_fp32_nodes: 'no_such_node' matches no node"):
        bad = profile_from_dict({**DEMO.to_dict(), "precision": {"keep_fp32_nodes": ["no_such_node"]}}, name="bad")
        prepare_model(model, sha, settings, bad, tmp_path)
    with pytest.raises(HarnessError, match=r"\[precision\] keep_fp32_nodes"):
        profile_from_dict({**DEMO.to_dict(), "precision": {"keep_fp32_nodes": "Concat"}}, name="bad")


def test_int8_without_qdq_points_to_harness_quantize():
    from harness.targets.trt.prepare import build_plan

    with pytest.raises(HarnessError, match="harness quantize"):
        build_plan("int8", "fp32", False, "qdq", "m.onnx")
    assert build_plan("int8", "fp32", False, "implicit", "m.onnx") == "as-is"
    assert build_plan("int8", "int8", False, "qdq", "m.onnx") == "qdq-fp16"
    assert build_plan("int8", "int8", True, "qdq", "m.onnx") == "as-is"  # rest already fp16
    assert build_plan("fp32", "int8", False, "qdq", "m.onnx") == "as-is"  # labelled from its graph
    assert build_plan("fp16", "fp32", False, "qdq", "m.onnx") == "fp16"


@pytest.mark.shared
def test_conversion_check_passes_on_the_nms_model_whose_declared_output_size_lies(coco_split):
    """picodet-xs-320-lcnet-nms declares its NMS rows as [2125, 6]; the fp16 converter copies that size onto
    the tensor feeding the output. Every ONNX Runtime session (here the check's) must compute the count
    the graph computes: OpenVINO, which infers shapes itself, is the independent reference for it."""
    import openvino as ov

    from harness.precision.check import check_conversion

    path = need_shared("models", "picodet-xs-320-lcnet-nms.onnx")
    profile = load_profile("picodet-xs-320-lcnet")
    fp32 = onnx.load(str(path))
    conversion = convert_to_fp16(fp32, profile.precision.keep_fp32_nodes, "onnxconverter-common")
    batches = check_batches(list(enumerate(coco_split[1][:6])), profile.input)
    result = check_conversion(fp32, conversion.model, batches, profile, 30.0, 0.9, "coco-tiny")
    assert result.passed, result.failures
    assert result.sized_by_data == ["multiclass_nms3_0.tmp_0"] and result.reference_boxes > 0
    compiled = ov.Core().compile_model(str(path), "CPU")
    from harness.model.extra_inputs import extra_inputs

    for session in (cpu_session(fp32), cpu_session(conversion.model)):
        for tensor, metas in batches[:2]:
            feeds = {session.get_inputs()[0].name: tensor, **extra_inputs(profile, metas, 1)}
            rows, count = session.run(None, feeds)
            want = compiled(feeds)
            assert int(count[0]) == rows.shape[0] == int(want[compiled.outputs[1]][0])
