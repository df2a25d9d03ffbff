"""The `litert` target and the two TFLite decoders on the real int8/uint8 models of ../shared/models/tflite.

The mAP checks compare `harness run -t litert` with an independent pipeline written here from the models'
README recipe and Ultralytics' own code (tests/oracles.py: LetterBox, non_max_suppression): cv2 for the
images, the interpreter called directly, numpy for the rest, pycocotools for the score. Nothing of
harness.images.preprocess, harness.decode or the target is used on that side.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.core.errors import HarnessError
from harness.profiles import load_profile
from harness.targets import get_target
from harness.targets.litert.runtime import interpreter_module, parse_delegate_options
from harness.targets.litert.tensors import delegation, dequantize_output, quantize_input
from tests import oracles
from tests.conftest import need_shared

LiteRt = get_target("litert")
AVAILABLE, WHY = LiteRt.availability()
needs_litert = pytest.mark.skipif(not AVAILABLE, reason=f"litert cannot run here: {WHY}")

#: COCO category id of each of the 80 contiguous classes (the standard 80 -> 91 table)
COCO80_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
              *range(84, 91)]
MODELS = {  # file -> built-in profile
    "ssd_mobilenet_v1_quant_300.tflite": "ssd-mobilenet-v1-300-tflite",
    "yolo11n_int8_640.tflite": "yolo11n-640-tflite",
    "yolo11n_int8_416.tflite": "yolo11n-416-tflite",
}


def tflite(name: str):
    return need_shared("models", "tflite", name)


# ------------------------------------------------------------------------------------ pure parts


def test_input_quantization_rounds_as_the_recipe_says():
    """pixel / 255 with the models' (1/255, -128) is exactly pixel - 128 by rounding; truncation (Ultralytics'
    AutoBackend) gives pixel - 129 for some pixels, as the models' README says (63 of 256)."""
    detail = {"dtype": np.int8, "quantization": (0.003921568859368563, -128)}
    pixels = np.arange(256, dtype=np.float32)
    x = pixels * (np.float32(1) / np.float32(255))  # harness.images.preprocess: (p - 0) * (1 / 255) in float32
    rounded = quantize_input(x, detail)
    assert rounded.dtype == np.int8 and np.array_equal(rounded.astype(int), pixels.astype(int) - 128)
    truncated = quantize_input(x, detail, "truncate").astype(int)
    assert set(np.unique(pixels.astype(int) - 128 - truncated)) == {0, 1}
    assert 0 < np.count_nonzero(truncated != rounded) < 256
    # half away from zero, and clipped to the type's range
    halves = quantize_input(np.array([0.5, 1.5, -0.5, -2.5, 1e6, -1e6], np.float32), {"dtype": np.int8, "quantization": (1.0, 0)})
    assert halves.tolist() == [1, 2, -1, -3, 127, -128]


def test_output_dequantization_uses_the_tensors_own_parameters():
    detail = {"dtype": np.int8, "quantization": (0.004078173544257879, -122),
              "quantization_parameters": {"scales": np.array([0.004078173544257879], np.float32),
                                          "zero_points": np.array([-122]), "quantized_dimension": 0}}
    q = np.array([[-128, -122, 0, 127]], np.int8)
    expected = (q.astype(np.float64) + 122) * 0.004078173544257879
    assert np.allclose(dequantize_output(q, detail), expected, rtol=1e-6)
    float_detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert dequantize_output(np.ones(3, np.float32), float_detail) is not None


def test_delegate_options_parse_and_refuse_in_one_line():
    assert parse_delegate_options("backends=VsiNpu; cache=/tmp/c ") == {"backends": "VsiNpu", "cache": "/tmp/c"}
    with pytest.raises(HarnessError, match="'oops' is not KEY=VALUE"):
        parse_delegate_options("a=1;oops")


def test_delegation_counts_the_nodes_inside_each_partition():
    """a -> [0] -> t1 -> [1] -> t2 -> [2] -> t3; a delegate took nodes 0 and 1 (inputs a, outputs t2)."""
    ops = [{"index": 0, "op_name": "CONV_2D", "inputs": [0, 9], "outputs": [1]},
           {"index": 1, "op_name": "ADD", "inputs": [1, 1], "outputs": [2]},
           {"index": 2, "op_name": "CUSTOM_POST", "inputs": [2], "outputs": [3]},
           {"index": 3, "op_name": "DELEGATE", "inputs": [0], "outputs": [2]}]
    info = delegation(ops)
    assert (info["nodes"], info["delegated_nodes"], info["cpu_nodes"], info["cpu_ops"]) == (3, 2, 1, {"CUSTOM_POST": 1})


def test_ultralytics_letterbox_places_pixels_as_ultralytics_does():
    """[input] rounding = "round", box_scale = "ratio": the same canvas, pixel for pixel, and the same (r, left,
    top) as Ultralytics' LetterBox (tests/oracles.py), on sizes whose padding is odd, even, or none."""
    from harness.images.preprocess import resize_image

    spec = load_profile("yolo11n-416-tflite").input
    rng = np.random.default_rng(0)
    for height, width in ((480, 640), (427, 640), (640, 427), (333, 500), (416, 416), (100, 37), (1000, 999)):
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        canvas, (scale_x, scale_y, left, top) = resize_image(image, spec)
        expected, r, (exp_left, exp_top) = oracles.ultralytics_letterbox(image, 416)
        assert np.array_equal(canvas, expected), (height, width)
        assert (scale_x, scale_y, left, top) == (r, r, exp_left, exp_top)


def test_availability_says_how_to_install(monkeypatch):
    from harness.targets.litert import runtime

    monkeypatch.setattr(runtime, "MODULES", (("no_such_litert_module", "no-such-dist"),))
    assert LiteRt.availability() == (False, "neither ai-edge-litert nor tflite-runtime is installed: "
                                            "pip install 'harness[litert]'")


def test_run_threads_flag_is_the_interpreters_num_threads():
    from harness.cli.run import target_options

    options, notes = target_options("litert", {"threads": 3, "streams": None}, {})
    assert options.num_threads == 3 and notes == []


# ------------------------------------------------------------------------------------ the target on real files


@needs_litert
def test_precision_comes_from_the_tensor_types_and_a_wrong_request_is_refused():
    for name, profile, expected in (("ssd_mobilenet_v1_quant_300.tflite", "ssd-mobilenet-v1-300-tflite", "uint8"),
                                    ("yolo11n_int8_416.tflite", "yolo11n-416-tflite", "int8")):
        with LiteRt(tflite(name), load_profile(profile), {"mode": "latency"}) as target:
            target.load(1)
            assert target.precision == expected
            info = target.describe()
            assert info["nodes"] == info["delegated_nodes"] + info["cpu_nodes"] and info["delegated_nodes"] > 0
        with pytest.raises(HarnessError, match=f"--precision fp32 does not match what would run \\({expected}"):
            with LiteRt(tflite(name), load_profile(profile), {"precision": "fp32"}) as target:
                target.load(1)
    # the SSD's post-processing op has no CPU-delegate kernel: the row says it stayed on the CPU
    with LiteRt(tflite("ssd_mobilenet_v1_quant_300.tflite"), load_profile("ssd-mobilenet-v1-300-tflite"), {}) as target:
        target.load(1)
        assert target.describe()["cpu_ops"].get("TFLite_Detection_PostProcess") == 1


@needs_litert
def test_without_the_default_delegate_every_node_runs_on_the_cpu_kernels():
    with LiteRt(tflite("yolo11n_int8_416.tflite"), load_profile("yolo11n-416-tflite"),
                {"default_delegate": False, "mode": "latency"}) as target:
        target.load(1)
        info = target.describe()
        assert info["delegated_nodes"] == 0 and info["cpu_nodes"] == info["nodes"] == 497


@needs_litert
def test_throughput_mode_runs_one_interpreter_per_thread_with_the_same_outputs():
    profile = load_profile("yolo11n-416-tflite")
    x = np.random.default_rng(0).integers(0, 256, (1, 416, 416, 3)).astype(np.float32) / 255
    with LiteRt(tflite("yolo11n_int8_416.tflite"), profile, {"mode": "latency", "num_threads": 1}) as one:
        one.load(1)
        (expected,) = one.infer(x)
    with LiteRt(tflite("yolo11n_int8_416.tflite"), profile, {"streams": 2, "num_threads": 1}) as two:
        two.load(1)
        assert two.run_mode.requests == 2 and len(two._interpreters) == 2 and two.describe()["interpreters"] == 2
        results = list(two.infer_stream((x, k, None) for k in range(4)))
        assert [tag for tag, _, _ in results] == [0, 1, 2, 3]
        assert all(np.array_equal(out[0], expected) for _, out, _ in results)


@needs_litert
def test_a_batch_the_graph_cannot_take_fails_with_the_reason():
    with pytest.raises(HarnessError, match=r"fixed batch of 1 and cannot run batch 2 \(LiteRT cannot resize its input"):
        with LiteRt(tflite("yolo11n_int8_416.tflite"), load_profile("yolo11n-416-tflite"), {}) as target:
            target.load(2)


@needs_litert
def test_external_delegate_errors_are_one_line(tmp_path):
    model, profile = tflite("ssd_mobilenet_v1_quant_300.tflite"), load_profile("ssd-mobilenet-v1-300-tflite")
    with pytest.raises(HarnessError, match=r"-o delegate=.*nope\.so: file not found"):
        with LiteRt(model, profile, {"delegate": str(tmp_path / "nope.so")}) as target:
            target.load(1)
    # a real shared library that is no delegate: the interpreter's own native module
    folder = Path(interpreter_module()[0].__file__).parent
    not_a_delegate = (sorted(folder.glob("_pywrap_string_util*.so")) or sorted(folder.glob("_pywrap*.so")))[0]
    with pytest.raises(HarnessError, match="cannot load it as an external delegate"):
        with LiteRt(model, profile, {"delegate": str(not_a_delegate)}) as target:
            target.load(1)
    with pytest.raises(HarnessError, match="--delegate-options: given without -o delegate="):
        LiteRt.parse_options({"delegate_options": "a=1"})


@needs_litert
def test_profile_and_model_input_types_must_fit(tmp_path):
    """The uint8 SSD with a float profile is quantized with its own (1/128, 128), which gives back the very
    bytes the u8 profile feeds; the int8 YOLO with a u8 profile is refused."""
    from harness.images.preprocess import preprocess_image
    from harness.profiles import profile_text

    model, u8 = tflite("ssd_mobilenet_v1_quant_300.tflite"), load_profile("ssd-mobilenet-v1-300-tflite")
    as_float = tmp_path / "f32.toml"
    as_float.write_text(profile_text(u8.name)[1].replace('dtype = "u8"', 'dtype = "f32"\nmean = [128.0, 128.0, 128.0]\n'
                                                                         'std = [128.0, 128.0, 128.0]'))
    f32 = load_profile(as_float)
    image = sorted(need_shared("data", "coco-tiny", "val2017").iterdir())[0]
    outputs = []
    for profile in (u8, f32):
        with LiteRt(model, profile, {"mode": "latency"}) as target:
            target.load(1)
            assert target.describe()["input"] == ("as is" if profile is u8 else "quantize")
            outputs.append(target.infer(preprocess_image(image, 1, profile.input)[0][None]))
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))
    text = profile_text("yolo11n-416-tflite")[1]
    wrong = tmp_path / "u8.toml"
    wrong.write_text(text.replace('dtype = "f32"', 'dtype = "u8"'))
    with pytest.raises(HarnessError, match=r"input is int8 \(scale 0.00392157, zero point -128\) but profile u8 gives uint8"):
        with LiteRt(tflite("yolo11n_int8_416.tflite"), load_profile(wrong), {}) as target:
            target.load(1)


# ------------------------------------------------------------------------------------ mAP against the recipe


def independent_map(model_path, profile_name: str, images_dir, ann_path, clip_ssd: bool = False) -> float:
    """The README recipe, written without harness: cv2 reads, the interpreter runs, tests/oracles decodes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=2)
    interpreter.allocate_tensors()
    (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
    size = int(inp["shape"][1])
    ann = json.loads(ann_path.read_text())
    results, ids = [], []
    for image in ann["images"]:
        bgr = cv2.imread(str(images_dir / image["file_name"]), cv2.IMREAD_COLOR)
        hw = bgr.shape[:2]
        ids.append(image["id"])
        if profile_name.startswith("ssd"):
            rgb = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
            assert inp["dtype"] == np.uint8
            interpreter.set_tensor(inp["index"], np.ascontiguousarray(rgb[None]))
            interpreter.invoke()
            boxes, classes, scores, count = (interpreter.get_tensor(o["index"])[0] for o in outs)
            b, s, c = oracles.tflite_ssd(boxes, classes, scores, count, hw, clip_ssd)
            results += oracles.coco_dicts(image["id"], b, s, c, list(range(1, 91)))
            continue
        padded, r, left_top = oracles.ultralytics_letterbox(bgr, size)
        rgb = padded[:, :, ::-1]
        if inp["dtype"] == np.float32:  # a float-input export: pixels / 255, its own QUANTIZE node does the rest
            feed = rgb.astype(np.float32) / 255
        else:
            scale, zero = inp["quantization"]
            assert inp["dtype"] == np.int8 and (round(1 / scale), zero) == (255, -128)  # so q = pixel - 128 exactly
            feed = (rgb.astype(np.int16) - 128).astype(np.int8)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(feed[None]))
        interpreter.invoke()
        (out,) = outs
        pred = interpreter.get_tensor(out["index"])[0].astype(np.float32)
        if out["dtype"] != np.float32:
            o_scale, o_zero = out["quantization"]
            pred = (pred - o_zero) * np.float32(o_scale)
        b, s, c = oracles.ultralytics_val(pred, size, r, left_top, hw)
        results += oracles.coco_dicts(image["id"], b, s, c, COCO80_IDS)
    return oracles.coco_map(ann_path, results, ids)


def harness_run(tmp_path, model, profile: str, coco_tiny, *extra: str) -> dict:
    images, ann = coco_tiny
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-t", "litert", "-m", str(model), "-p", profile, "--data", str(images),
                                       "--ann", str(ann), "--out", str(out), "--seconds", "0.1", "--max-seconds", "0.2",
                                       "--warmup", "0", *extra])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    return row


@pytest.mark.slow
@needs_litert
@pytest.mark.parametrize("name", sorted(MODELS))
def test_map_matches_an_independent_decoder(tmp_path, coco_tiny, name):
    model = tflite(name)
    row = harness_run(tmp_path, model, MODELS[name], coco_tiny)
    reference = independent_map(model, MODELS[name], *coco_tiny)
    assert row["images"] == 80 and row["status"] == "ok"
    assert row["precision"] == ("uint8" if name.startswith("ssd") else "int8")
    assert abs(row["map"] - reference) <= 0.003, (row["map"], reference)
    assert reference > 0.15  # a real detector, not two equally broken decodes
    if name.startswith("ssd"):  # the whole gap is the harness clipping boxes to the image (the op does not)
        assert abs(row["map"] - independent_map(model, MODELS[name], *coco_tiny, clip_ssd=True)) <= 1e-4


@pytest.mark.slow
@needs_litert
def test_a_profile_derived_from_the_640_one_serves_the_416_export(tmp_path, coco_tiny):
    """What a user does for an export at a size with no built-in profile: `harness profiles show` the
    nearest one, change the size; the result decodes the 416 model as well as the independent decoder."""
    shown = CliRunner().invoke(main, ["profiles", "show", "yolo11n-640-tflite"])
    assert shown.exit_code == 0
    derived = tmp_path / "my-yolo-416.toml"
    derived.write_text(re.sub(r"(?m)^(width|height) = 640$", r"\1 = 416", shown.output))
    mine, builtin = load_profile(derived).to_dict(), load_profile("yolo11n-416-tflite").to_dict()
    assert {k: v for k, v in mine.items() if k not in ("name", "description")} == \
        {k: v for k, v in builtin.items() if k not in ("name", "description")}
    model = tflite("yolo11n_int8_416.tflite")
    row = harness_run(tmp_path, model, str(derived), coco_tiny)
    assert abs(row["map"] - independent_map(model, "yolo11n-416-tflite", *coco_tiny)) <= 0.003


@pytest.mark.slow
@needs_litert
def test_a_float_input_export_of_the_same_network(tmp_path, coco_tiny):
    """An export the built-in profiles were not written against: float32 in and out with the int8 graph
    inside (Ultralytics' `*_integer_quant.tflite` form), made here from the 416 full-integer file by adding
    QUANTIZE/DEQUANTIZE nodes (tests/tflite_writer.py). The target feeds it floats as they are, labels it
    int8 from its tensors, and scores what the independent decoder scores."""
    from tests.tflite_writer import float_io_variant

    model = float_io_variant(tflite("yolo11n_int8_416.tflite"), tmp_path / "yolo11n_416_float_io.tflite")
    row = harness_run(tmp_path / "fio", model, "yolo11n-416-tflite", coco_tiny, "--save-detections")
    assert row["precision"] == "int8" and row["runtime"]["input"] == "as is"
    reference = independent_map(model, "yolo11n-416-tflite", *coco_tiny)
    assert abs(row["map"] - reference) <= 0.003 and reference > 0.15, (row["map"], reference)
    # report --fidelity takes litert rows as any other: the full-integer file as the reference
    harness_run(tmp_path / "int8", tflite("yolo11n_int8_416.tflite"), "yolo11n-416-tflite", coco_tiny, "--save-detections")
    report = tmp_path / "report.md"
    result = CliRunner().invoke(main, ["report", str(tmp_path / "int8" / "out"), str(tmp_path / "fio" / "out"),
                                       "--fidelity", "--reference", "litert:int8@yolo11n_int8_416.tflite",
                                       "--out", str(report)])
    assert result.exit_code == 0, result.output
    line = next(x for x in report.read_text().splitlines() if x.startswith("| litert int8 bs 1 (yolo11n_416_float_io"))
    assert "| 80 |" in line and "cannot be told apart" in line
