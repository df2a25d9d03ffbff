"""`harness quantize` from the command line: a real run, and one line (exit 2) for every bad input."""

from __future__ import annotations

import json

import pytest

from harness.core.folders import OWN_FILES
from harness.data.synthetic import generate_dataset
from tests.test_cli_errors import assert_one_line_error, cli
from tests.tinymodel import write_tiny_convnet, write_tiny_model, write_tiny_profile


@pytest.fixture
def t(tmp_path):
    images, _ = generate_dataset(tmp_path / "calib", num_images=4, seed=9, split="calib")
    return {"model": write_tiny_convnet(tmp_path / "tiny.onnx"), "profile": write_tiny_profile(tmp_path / "tiny.toml"),
            "calib": images, "root": tmp_path, "out": tmp_path / "quant" / "tiny"}


def args(t, *extra, **over):
    flags = {"-m": t["model"], "-p": t["profile"], "--calib": t["calib"], "--out": t["out"], **over}
    flat = []
    for key, value in flags.items():
        if value is not None:
            flat += [key, value]
    return ["quantize", *flat, *extra]


def test_quantize_writes_model_and_record(t):
    result = cli(*args(t, "--exclude", "^c4$", "--exclude-types", "Add", "--per-tensor"))
    assert result.exit_code == 0, (result.output, result.stderr)
    record = json.loads((t["out"] / "quant.json").read_text())
    assert record["excluded"]["nodes"] == ["add", "c4"]
    assert record["per_channel"] is False
    assert "model.qdq.onnx" in result.stdout and "opset 13->13" in result.stdout
    assert "calibrating on 4 images" in result.stderr  # the progress bar goes to stderr


def test_exclude_from_file(t):
    listing = t["root"] / "exclude.txt"
    listing.write_text("# kept in float by sensitivity\nc3a\nc3b\n")
    assert cli(*args(t, "--exclude-from", listing)).exit_code == 0
    assert json.loads((t["out"] / "quant.json").read_text())["excluded"]["nodes"] == ["c3a", "c3b"]


def test_missing_calibration_folder(t):
    assert_one_line_error(cli(*args(t, **{"--calib": t["root"] / "nowhere"})), "calibration folder not found", "nowhere")


def test_empty_calibration_folder(t):
    (t["root"] / "empty").mkdir()
    assert_one_line_error(cli(*args(t, **{"--calib": t["root"] / "empty"})), "holds no images")


def test_unreadable_calibration_image_is_named(t):
    (t["calib"] / "calib_000001.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert_one_line_error(cli(*args(t)), "calib_000001.jpg", "truncated JPEG")


def test_exclude_pattern_matching_nothing(t):
    assert_one_line_error(cli(*args(t, "--exclude", "^head\\.")), "--exclude '^head\\.' matches no node name")


def test_exclude_type_not_in_model(t):
    assert_one_line_error(cli(*args(t, "--exclude-types", "Softmax")), "no Softmax node", "Conv")


def test_exclude_from_missing_file(t):
    assert_one_line_error(cli(*args(t, "--exclude-from", t["root"] / "none.txt")), "--exclude-from", "file not found")


def test_bad_method_and_backend(t):
    assert_one_line_error(cli(*args(t, "--method", "kl")), "--method 'kl'", "minmax, entropy, percentile")
    assert_one_line_error(cli(*args(t, "--backend", "tensorrt")), "--backend 'tensorrt'", "ort, nncf")


def test_calibration_sources(t):
    cache = t["root"] / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nimage: 3c000000\n")
    assert_one_line_error(cli(*args(t, "--from-trt-cache", cache)), "--calib and --from-trt-cache are alternatives")
    assert_one_line_error(cli(*args(t, **{"--calib": None})), "no calibration")
    assert_one_line_error(cli(*args(t, "--calib-images", "0")), "--calib-images must be a positive integer")


def test_out_not_empty(t):
    t["out"].mkdir(parents=True)
    (t["out"] / "keep.txt").write_text("mine")
    assert_one_line_error(cli(*args(t)), "is not empty", "--overwrite")
    assert (t["out"] / "keep.txt").read_text() == "mine"


def test_not_an_onnx_file(t):
    bad = t["root"] / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    assert_one_line_error(cli(*args(t, **{"-m": bad})), "broken.onnx", "not a readable ONNX file")


def test_nothing_quantizable(t):
    gfl = write_tiny_model(t["root"] / "gfl.onnx")  # a 3->34 conv: no TensorRT int8 kernel, so nothing to place
    assert_one_line_error(cli(*args(t, **{"-m": gfl})), "gfl.onnx: nothing to quantize",
                          "Conv channels 3->34 (group 1): no TensorRT int8 kernel")
    assert not [p for p in t["out"].iterdir() if p.name not in OWN_FILES]  # no half-written output


def test_trt_cache_with_unknown_tensor(t):
    cache = t["root"] / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\nimage: 3c000000\nneck.out: 3c000000\n")
    assert_one_line_error(cli(*args(t, "--from-trt-cache", cache, **{"--calib": None})), "neck.out",
                          "match nothing in the model")


def test_calibration_images_need_a_profile(t):
    assert_one_line_error(cli(*args(t, **{"-p": None})), "--calib needs --profile")


def test_concat_conv_override_is_for_the_ort_backend(t):
    assert_one_line_error(cli(*args(t, "--quantize-concat-convs", "--backend", "nncf")), "--backend ort only")
