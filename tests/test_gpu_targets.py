"""GPU targets: TensorRT (`trt`) and ONNX Runtime CUDA (`ort-cuda`).

Everything that does not need a GPU runs here for real: engine cache keys and stale-engine detection,
optimisation-profile shapes, int8 calibration batching (compared with the harness's preprocessor),
settings parsing, provider checks, IO binding on the CPU fallback, and the error paths through the CLI.
Tests marked `gpu` build and run engines; they skip with a reason where TensorRT, a CUDA binding or a GPU is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from harness.core.errors import HarnessError, TargetUnavailable
from harness.images.preprocess import preprocess_image
from harness.model.onnx_model import inspect_onnx
from harness.precision.calib_images import CalibrationBatches, calibration_files
from harness.profiles import load_profile, profile_from_dict
from harness.targets import get_target
from harness.targets.base import BenchStats
from harness.targets.ort import check_session_providers, trt_ep_options
from harness.targets.timing import LoopRule
from harness.targets.trt.calib import calib_cache_name
from harness.targets.trt.engine import (
    engine_cache_key,
    engine_key_fields,
    engine_paths,
    key_from_fields,
    lookup_engine,
    profile_batches,
    profile_shapes,
    stale_reason,
    store_engine,
)
from harness.targets.trt.settings import TrtOptions, TrtSettings, load_trt_settings, settings_from_options
from harness.targets.trt.target import TensorRtTarget
from harness.targets.trt.timing import timing_summary

ROOT = Path(__file__).resolve().parent.parent
NANODET = load_profile("nanodet-m-320")

KEY_BASE = dict(onnx_sha256="a" * 64, precision="fp16",
                shapes={"image": ((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))},
                trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", calib_sha256=None)


def _gpu_reason(target: str) -> str | None:
    ok, why = get_target(target).availability()
    return None if ok else f"needs the runtime and an NVIDIA GPU ({why})"


# -- engine cache key ------------------------------------------------------------------------------------


def test_engine_key_is_deterministic():
    assert engine_cache_key(**KEY_BASE) == engine_cache_key(**KEY_BASE)
    # shapes given as lists or tuples are the same shapes
    listed = {**KEY_BASE, "shapes": {"image": [[1, 3, 320, 320], [4, 3, 320, 320], [8, 3, 320, 320]]}}
    assert engine_cache_key(**listed) == engine_cache_key(**KEY_BASE)
    assert len(engine_cache_key(**KEY_BASE)) == 64


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "b" * 64),
    ("precision", "fp32"),
    ("shapes", {"image": ((1, 3, 320, 320), (8, 3, 320, 320), (8, 3, 320, 320))}),  # opt changed
    ("shapes", {"image": ((1, 3, 320, 320), (4, 3, 320, 320), (16, 3, 320, 320))}),  # max changed
    ("shapes", {"image": ((2, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))}),  # min changed
    ("shapes", {"input": ((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))}),  # input name changed
    ("trt_version", "10.4.0"),
    ("gpu_name", "NVIDIA A100-SXM4-80GB"),
])
def test_engine_key_changes_with_every_input(field, value):
    assert engine_cache_key(**{**KEY_BASE, field: value}) != engine_cache_key(**KEY_BASE)


def test_int8_key_depends_on_calibration_cache():
    int8 = {**KEY_BASE, "precision": "int8", "calib_sha256": "c" * 64}
    assert engine_cache_key(**int8) != engine_cache_key(**{**int8, "calib_sha256": "d" * 64})
    assert engine_cache_key(**int8) != engine_cache_key(**KEY_BASE)
    with pytest.raises(HarnessError):  # an int8 key without the calibration it was built from
        engine_cache_key(**{**int8, "calib_sha256": None})
    # a calibration hash does not split fp16 engines (it plays no part in them)
    assert engine_cache_key(**{**KEY_BASE, "calib_sha256": "c" * 64}) == engine_cache_key(**KEY_BASE)


def test_engine_key_rejects_unknown_precision():
    with pytest.raises(HarnessError, match="precision"):
        engine_cache_key(**{**KEY_BASE, "precision": "int4"})


def test_engine_cache_roundtrip_and_stale_detection(tmp_path):
    fields = engine_key_fields(**KEY_BASE)
    plan = b"\x00serialized-engine\xff" * 100
    path = store_engine(tmp_path / "new-folder", "nanodet", fields, plan)  # the folder is made
    assert path.stat().st_mode & 0o777 == 0o600  # an engine carries the model's weights: owner only
    path = store_engine(tmp_path, "nanodet", fields, plan)
    assert path.parent == tmp_path and path.suffix == ".engine"
    assert path.name.startswith("nanodet-fp16-") and key_from_fields(fields)[:16] in path.name
    found, found_path, why = lookup_engine(tmp_path, "nanodet", fields)
    assert found == plan and found_path == path and why is None

    # any changed input looks for another file: the old engine is never returned for it
    for field, value in (("trt_version", "10.9.0"), ("gpu_name", "other GPU"), ("onnx_sha256", "f" * 64)):
        other = engine_key_fields(**{**KEY_BASE, field: value})
        assert lookup_engine(tmp_path, "nanodet", other)[0] is None

    engine_path, sidecar_path = engine_paths(tmp_path, "nanodet", "fp16", key_from_fields(fields))
    # a sidecar that disagrees with the wanted fields (e.g. copied from another build) is stale
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["fields"]["tensorrt"] = "10.0.1"
    sidecar_path.write_text(json.dumps(sidecar))
    reason = stale_reason(engine_path, sidecar_path, fields)
    assert reason is not None and "tensorrt" in reason
    assert lookup_engine(tmp_path, "nanodet", fields)[0] is None

    # engine bytes changed after caching (truncated copy, overwritten file): stale
    store_engine(tmp_path, "nanodet", fields, plan)
    engine_path.write_bytes(plan[:-10])
    assert "changed" in stale_reason(engine_path, sidecar_path, fields)
    # missing or unreadable sidecar: stale
    store_engine(tmp_path, "nanodet", fields, plan)
    sidecar_path.write_text("{not json")
    assert stale_reason(engine_path, sidecar_path, fields) == "sidecar unreadable"
    sidecar_path.unlink()
    assert stale_reason(engine_path, sidecar_path, fields) is not None
    engine_path.unlink()
    assert stale_reason(engine_path, sidecar_path, fields) == "no cached engine"


# -- optimisation profile ------------------------------------------------------------------------------


def test_profile_batches_from_run_batch_sizes():
    assert profile_batches([1, 4, 8], 4) == (1, 4, 8)
    assert profile_batches([1, 4, 8], 1) == (1, 1, 8)
    assert profile_batches([8, 1, 4], 8, opt="max") == (1, 8, 8)
    assert profile_batches([1, 4, 8], 1, opt="max") == (1, 8, 8)
    assert profile_batches([], 4) == (1, 4, 4)  # no run list: just this batch
    assert profile_batches([2], 16) == (1, 16, 16)  # the loaded batch always fits
    assert profile_batches([1, 4], 1, fixed=1) == (1, 1, 1)  # a fixed-batch graph builds static
    with pytest.raises(HarnessError):
        profile_batches([1, 4], 4, opt="median")
    with pytest.raises(HarnessError):
        profile_batches([0, 4], 4)


def test_profile_shapes_replace_only_the_batch():
    shapes = profile_shapes(NANODET.input.shape(4), (1, 4, 8))
    assert shapes == ((1, 3, 320, 320), (4, 3, 320, 320), (8, 3, 320, 320))
    with pytest.raises(HarnessError, match="only the batch"):
        profile_shapes((None, 3, None, 320), (1, 1, 1))


# -- calibration batching --------------------------------------------------------------------------------


def _write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))  # varied sizes and aspect ratios
        path = folder / f"img_{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _expected(paths, spec) -> np.ndarray:
    return np.stack([preprocess_image(p, i, spec)[0] for i, p in enumerate(paths)])


def test_calibration_batches_equal_the_preprocessor(tmp_path):
    paths = _write_images(tmp_path / "calib", 7)
    batches = CalibrationBatches(paths, NANODET.input, batch_size=3)
    out = list(batches)
    assert len(batches) == len(out) == 2  # 7 images, batch 3: the short last batch is dropped
    assert batches.images_used == 6
    for i, array in enumerate(out):
        assert array.shape == (3, 3, 320, 320) and array.dtype == np.float32
        assert array.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(array, _expected(paths[3 * i: 3 * i + 3], NANODET.input))
    assert batches.nbytes == out[0].nbytes


def test_calibration_batches_pad_limit_and_uint8_layout(tmp_path):
    paths = _write_images(tmp_path / "calib", 5)
    padded = list(CalibrationBatches(paths, NANODET.input, batch_size=2, partial="pad"))
    assert len(padded) == 3
    last = _expected(paths[4:5], NANODET.input)[0]
    np.testing.assert_array_equal(padded[2][0], last)
    np.testing.assert_array_equal(padded[2][1], last)  # padding repeats the last real image

    limited = CalibrationBatches(paths, NANODET.input, batch_size=2, limit=4)
    assert len(limited) == 2 and limited.files == paths[:4]

    u8 = profile_from_dict({"input": {"width": 64, "height": 48, "resize": "stretch", "layout": "NHWC", "dtype": "u8"},
                            "decoder": {"kind": "gfl"}, "classes": {"names": ["a"]}}, name="u8").input
    (array,) = list(CalibrationBatches(paths, u8, batch_size=4))
    assert array.shape == (4, 48, 64, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, _expected(paths[:4], u8))

    with pytest.raises(HarnessError, match="cannot fill one batch"):
        CalibrationBatches(paths, NANODET.input, batch_size=8)
    with pytest.raises(HarnessError):
        CalibrationBatches(paths, NANODET.input, batch_size=0)


def test_calibration_files_sorted_filtered_limited(tmp_path):
    paths = _write_images(tmp_path / "calib", 4)
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    (tmp_path / "calib" / "sub").mkdir()
    assert calibration_files(tmp_path / "calib") == sorted(paths)
    assert calibration_files(tmp_path / "calib", 2) == sorted(paths)[:2]
    with pytest.raises(HarnessError, match="not found"):
        calibration_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no images"):
        calibration_files(tmp_path / "empty")


def test_calibration_cache_name_follows_data_and_calibrator(tmp_path):
    paths = _write_images(tmp_path / "calib", 6)
    a = CalibrationBatches(paths, NANODET.input, 2).identity()
    b = CalibrationBatches(paths[:4], NANODET.input, 2).identity()
    assert calib_cache_name("a" * 64, "entropy", a) == calib_cache_name("a" * 64, "entropy", a)
    assert calib_cache_name("a" * 64, "entropy", a) != calib_cache_name("a" * 64, "minmax", a)
    assert calib_cache_name("a" * 64, "entropy", a) != calib_cache_name("a" * 64, "entropy", b)
    assert calib_cache_name("a" * 64, "entropy", a) != calib_cache_name("b" * 64, "entropy", a)


# -- settings (targets/trt.toml) ---------------------------------------------------------------------------


def test_shipped_settings_file_documents_the_defaults():
    assert load_trt_settings(ROOT / "targets" / "trt.toml") == TrtSettings()
    assert load_trt_settings() == TrtSettings()
    assert TrtSettings().cache_dir == Path("~/.cache/harness/trt").expanduser()


def test_settings_file_overrides_and_cli_precedence(tmp_path):
    path = tmp_path / "trt.toml"
    path.write_text('precision = "fp16"\nworkspace_mib = 512\ncalibrator = "minmax"\nengine_cache = "/tmp/e"\n')
    s = load_trt_settings(path)
    assert (s.precision, s.workspace_mib, s.calibrator, s.engine_cache) == ("fp16", 512, "minmax", "/tmp/e")
    assert s.calib_images == 500  # untouched keys keep their defaults
    s = settings_from_options(TrtOptions(trt_settings=str(path), precision="int8"))
    assert s.precision == "int8" and s.engine_cache == "/tmp/e"  # options left None keep the file's value
    # a [trt] table works too
    table = tmp_path / "table.toml"
    table.write_text('[trt]\nprecision = "fp16"\n')
    assert load_trt_settings(table).precision == "fp16"
    # target options (CLI flags, typed from text) win over the file
    options = TensorRtTarget.parse_options({"trt_settings": str(path), "precision": "fp32", "engine_cache": str(tmp_path),
                                            "timing": "pipelined", "cuda_graph": "true"}, from_text=True)
    s = settings_from_options(options)
    assert s.precision == "fp32" and s.engine_cache == str(tmp_path) and s.workspace_mib == 512
    assert s.timing == "pipelined" and s.cuda_graph is True
    # every setting is an option of the same name (harness run -o KEY=VALUE), plus trt_settings
    assert TensorRtTarget.option_names() == [*TrtSettings.__dataclass_fields__, "trt_settings", "mode"]


@pytest.mark.parametrize("text,match", [
    ('precision = "int4"', "precision"),
    ("workspace_mib = 0", "workspace_mib"),
    ('workspace_mib = "lots"', "workspace_mib"),
    ("calib_batch_size = true", "calib_batch_size"),
    ("calib_images = -5", "calib_images"),
    ('calibrator = "percentile"', "calibrator"),
    ('opt_batch = "min"', "opt_batch"),
    ('precison = "fp16"', "unknown key 'precison' \\(did you mean 'precision'\\?\\)"),
    ("engine_cache = 3", "engine_cache"),
    ('timing = "pipelind"', "did you mean 'pipelined'"),
    ("check_min_box_agreement = 1.5", "check_min_box_agreement"),
    ('precision = "FP16"', "one of fp32, fp16, int8"),  # choices are exact, as everywhere in harness.core.config
    ("precision = ", "not valid TOML"),
])
def test_bad_settings_are_errors(tmp_path, text, match):
    path = tmp_path / "trt.toml"
    path.write_text(text + "\n")
    with pytest.raises(HarnessError, match=match) as info:
        load_trt_settings(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_option_and_missing_file_are_errors(tmp_path):
    with pytest.raises(HarnessError, match=r"target trt: --precision = 'bf16': expected one of fp32, fp16, int8"):
        TensorRtTarget.parse_options({"precision": "bf16"}, from_text=True)
    with pytest.raises(HarnessError, match=r"--workspace-mib = '0'"):
        TensorRtTarget.parse_options({"workspace_mib": "0"}, from_text=True)
    with pytest.raises(HarnessError, match=r"unknown option --cuda-grahp \(did you mean 'cuda_graph'\?\)"):
        TensorRtTarget.parse_options({"cuda_grahp": "true"}, from_text=True)
    with pytest.raises(HarnessError, match="not found"):
        load_trt_settings(tmp_path / "nope.toml")
    table = tmp_path / "table.toml"
    table.write_text('[trt]\nworkspace_mib = -1\n')
    with pytest.raises(HarnessError, match=r"table.toml: \[trt\] workspace_mib = -1"):
        load_trt_settings(table)


# -- small pure helpers ----------------------------------------------------------------------------------


def test_timing_summary():
    out = timing_summary([0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [0.05, 0.05, 0.05], batch=4)
    assert out["gpu_compute_ms_p50"] == 2.0 and out["h2d_ms_p50"] == 0.2 and out["d2h_ms_p50"] == 0.05
    assert out["d2h_ms_p90"] is None and out["d2h_ms_p99"] is None  # 3 samples support neither (timing.percentiles)
    assert timing_summary([0.1] * 100, [1.0] * 100, [0.05] * 100, batch=1)["d2h_ms_p99"] == 0.05
    assert out["gpu_compute_fps"] == 2000.0  # 4 images per 2 ms mean compute
    assert timing_summary([], [], [], 1)["gpu_compute_fps"] is None
    assert BenchStats([1.0], 1, 1.0).extra == {}  # the optional field keeps old callers working


def test_trt_ep_options():
    opts = trt_ep_options("fp16", "/cache", 0, {"image": ((1, 3, 320, 320), (8, 3, 320, 320), (8, 3, 320, 320))})
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == "/cache"
    assert opts["trt_profile_min_shapes"] == "image:1x3x320x320"
    assert opts["trt_profile_max_shapes"] == "image:8x3x320x320"
    assert trt_ep_options("fp32", "/c")["trt_fp16_enable"] is False
    assert "trt_profile_min_shapes" not in trt_ep_options("fp32", "/c")


def test_session_provider_check():
    assert check_session_providers("CUDAExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"], False) is None
    assert check_session_providers(None, ["CPUExecutionProvider"], False) is None
    with pytest.raises(TargetUnavailable, match="did not create CUDAExecutionProvider"):
        check_session_providers("CUDAExecutionProvider", ["CPUExecutionProvider"], False, "1.20.0")
    note = check_session_providers("TensorrtExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"], True)
    assert note.startswith("FALLBACK:") and "TensorRT" in note and "ran on CUDAExecutionProvider" in note


def test_model_inputs_skip_weights_listed_as_inputs(tmp_path):
    path = _write_scale_model(tmp_path / "m.onnx", batch="N", weight_as_input=True)
    info = inspect_onnx(path)
    assert [(i.name, i.dims(), i.dtype) for i in info.inputs] == [("image", (None, 3, 8, 8), "float32")]


# -- a tiny real ONNX model (no mocks: ONNX Runtime runs it) ---------------------------------------------


def _write_scale_model(path: Path, batch="N", weight_as_input=False) -> Path:
    """image [B,3,8,8] -> image * 2 + 1 as `doubled` [B,3,8,8], and its spatial mean `pooled` [B,3,1,1]."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("Mul", ["image", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["doubled"]),
             helper.make_node("GlobalAveragePool", ["image"], ["pooled"])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])]
    if weight_as_input:  # old exports list weights as graph inputs too
        inputs.append(helper.make_tensor_value_info("two", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "scale", inputs,
                              [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [batch, 3, 8, 8]),
                               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, 3, 1, 1])],
                              [two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


TINY = profile_from_dict({"input": {"width": 8, "height": 8}, "decoder": {"kind": "gfl"},
                          "classes": {"names": ["a"]}}, name="tiny")


def test_ort_cuda_io_binding_on_the_cpu_fallback(tmp_path):
    """The IO-binding code paths (bind_cpu_input/bind_output/OrtValue input) run for real on CPU here."""
    model = _write_scale_model(tmp_path / "scale.onnx")
    target = get_target("ort-cuda")(model, TINY, {"allow_fallback": True}, batch_sizes=[1, 3])
    target.load(3)
    if _gpu_reason("ort-cuda") is not None:
        assert any(n.startswith("FALLBACK") for n in target.notes)
        assert target.describe()["device"] == "cpu:0"
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    doubled, pooled = target.infer(x)
    np.testing.assert_allclose(doubled, x * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(pooled, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    (short, _) = target.infer(x[:2])  # a short last batch through the same binding path
    assert short.shape == (2, 3, 8, 8)
    stats = target.benchmark(x, LoopRule.fixed(0.05, 5))
    assert len(stats.latencies_ms) >= 5 and stats.images == 3 * len(stats.latencies_ms)
    assert target.describe()["io_binding"] is True and target.precision == "fp32"
    target.close()


def test_ort_cuda_option_errors(tmp_path):
    model = _write_scale_model(tmp_path / "scale.onnx")
    with pytest.raises(HarnessError, match="--ep"):
        get_target("ort-cuda")(model, TINY, {"ep": "rocm", "allow_fallback": True}).load(1)
    with pytest.raises(HarnessError, match="fp16"):
        get_target("ort-cuda")(model, TINY, {"precision": "fp16", "allow_fallback": True}).load(1)
    with pytest.raises(HarnessError, match="int8"):
        get_target("ort-cuda")(model, TINY, {"ep": "trt", "precision": "int8", "allow_fallback": True}).load(1)


# -- availability and error paths here (no GPU) ----------------------------------------------------------


@pytest.mark.skipif(_gpu_reason("trt") is None, reason="target trt can run here")
def test_trt_unavailable_here_says_why(tmp_path):
    ok, why = get_target("trt").availability()
    assert ok is False
    # what is missing, in one line: tensorrt (with the install line), the CUDA binding, a driver or a GPU
    assert "\n" not in why and any(w in why for w in ("tensorrt", "cuda-python", "CUDA", "GPU"))
    if "tensorrt is not installed" in why:
        assert "pip install" in why
    model = _write_scale_model(tmp_path / "scale.onnx")
    with pytest.raises(TargetUnavailable, match="target trt cannot run here"):
        get_target("trt")(model, TINY, {}, batch_sizes=[1]).load(1)


@pytest.mark.skipif(_gpu_reason("ort-cuda") is None, reason="onnxruntime-gpu with CUDA is usable here")
def test_ort_cuda_unavailable_here_says_why(tmp_path):
    ok, why = get_target("ort-cuda").availability()
    assert ok is False and "CUDAExecutionProvider" in why
    model = _write_scale_model(tmp_path / "scale.onnx")
    with pytest.raises(TargetUnavailable, match="--allow-fallback"):
        get_target("ort-cuda")(model, TINY, {}).load(1)


def test_trt_user_errors_are_reported_before_the_gpu_check(tmp_path, nanodet_m_320):
    """Fixed-batch models, int8 without images, bad settings: found without TensorRT or a GPU."""
    target = get_target("trt")
    with pytest.raises(HarnessError, match="fixed batch of 1 and cannot run batch 4"):
        target(nanodet_m_320, NANODET, {}, batch_sizes=[1, 4]).load(4)
    # int8 comes from a Q/DQ model; an fp32 model is refused with the way to make one
    with pytest.raises(HarnessError, match="holds no Q/DQ nodes.*harness quantize"):
        target(nanodet_m_320, NANODET, {"precision": "int8"}).load(1)
    # TensorRT 10's legacy implicit calibration still needs its images
    with pytest.raises(HarnessError, match="--calib DIR"):
        target(nanodet_m_320, NANODET, {"precision": "int8", "int8_mode": "implicit"}).load(1)
    with pytest.raises(HarnessError, match="calibration folder not found"):
        target(nanodet_m_320, NANODET, {"precision": "int8", "int8_mode": "implicit",
                                        "calib": str(tmp_path / "none")}).load(1)
    with pytest.raises(HarnessError, match="precision"):
        target(nanodet_m_320, NANODET, {"precision": "bf16"}).load(1)
    with pytest.raises(HarnessError, match="needs an .onnx|from an .onnx"):
        other = tmp_path / "model.plan"
        other.write_bytes(b"x")
        target(other, NANODET, {}).load(1)
    with pytest.raises(HarnessError, match="does not fit profile"):
        target(nanodet_m_320, TINY, {}).load(1)


def _run_cli(args):
    from harness.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.mark.skipif(_gpu_reason("trt") is None, reason="target trt can run here")
def test_cli_run_trt_fails_in_one_line(tmp_path, coco_tiny, nanodet_m_320):
    images, ann = coco_tiny
    result = _run_cli(["run", "--target", "trt", "--model", nanodet_m_320, "--profile", "nanodet-m-320",
                       "--data", images, "--ann", ann, "--bs", "1,4,8", "--limit", "8", "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    errors = _error_lines(result)
    assert len(errors) == 1, result.output
    assert "target trt cannot run here" in errors[0] and "tensorrt" in errors[0] and "pip install" in errors[0]
    assert "Traceback" not in result.output


@pytest.mark.skipif(_gpu_reason("ort-cuda") is None, reason="onnxruntime-gpu with CUDA is usable here")
def test_cli_ort_cuda_without_fallback_fails_in_one_line(tmp_path, coco_tiny, nanodet_m_320):
    images, ann = coco_tiny
    result = _run_cli(["run", "--target", "ort-cuda", "--model", nanodet_m_320, "--profile", "nanodet-m-320",
                       "--data", images, "--ann", ann, "--limit", "2", "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    errors = _error_lines(result)
    assert len(errors) == 1 and "CUDAExecutionProvider" in errors[0] and "--allow-fallback" in errors[0]


@pytest.mark.skipif(_gpu_reason("ort-cuda") is None, reason="onnxruntime-gpu with CUDA is usable here")
def test_cli_ort_cuda_fallback_runs_on_cpu_and_records_it(tmp_path, coco_tiny, nanodet_m_320):
    images, ann = coco_tiny
    out = tmp_path / "out"
    result = _run_cli(["run", "--target", "ort-cuda", "--allow-fallback", "--ep", "cuda", "--model", nanodet_m_320,
                       "--profile", "nanodet-m-320", "--data", images, "--ann", ann, "--limit", "6",
                       "--seconds", "0.1", "--max-seconds", "0.1", "--warmup", "0.05", "--out", out])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["target"] == "ort-cuda" and row["images"] == 6 and row["precision"] == "fp32"
    assert any(n.startswith("FALLBACK") and "CPUExecutionProvider" in n for n in row["notes"])
    assert row["runtime"]["providers"] == ["CPUExecutionProvider"] and row["runtime"]["io_binding"] is True
    assert row["ort_device"] == "cpu" and "FALLBACK" in row["time_covers"]
    assert row["map"] > 0  # real detections went through the IO-binding path


# -- on a GPU machine -------------------------------------------------------------------------------------


def _run_rows(target, model, images, ann, tmp_path, options, batch_sizes=(1,), tag=""):
    from harness.measure import runner
    from harness.measure.results import ResultsStore

    config = runner.RunConfig(target=target, model=str(model), profile=NANODET, images_dir=images, ann_path=ann,
                              batch_sizes=list(batch_sizes), options=options, bench_seconds=0.5, max_seconds=0.5,
                              warmup_seconds=0.2)
    store = ResultsStore(tmp_path / f"out-{target}{tag}", {})
    return runner.run(config, store)


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tolerance", [("fp32", 0.002), ("fp16", 0.005)])
def test_trt_map_agrees_with_ort(tmp_path, coco_tiny, nanodet_m_320, precision, tolerance):
    reason = _gpu_reason("trt")
    if reason:
        pytest.skip(reason)
    images, ann = coco_tiny
    (ref,) = _run_rows("ort", nanodet_m_320, images, ann, tmp_path, {})
    options = {"precision": precision, "engine_cache": str(tmp_path / "engines")}
    (row,) = _run_rows("trt", nanodet_m_320, images, ann, tmp_path, options)
    assert row["precision"] == precision
    assert abs(row["map"] - ref["map"]) <= tolerance, (row["map"], ref["map"])
    for key in ("gpu_compute_ms_p50", "h2d_ms_p50", "d2h_ms_p50", "gpu_compute_fps"):
        assert row[key] is not None and row[key] > 0
    assert row["gpu_compute_ms_p50"] <= row["latency_ms_p50"]
    assert row["runtime"]["engine_cache"].startswith("built")
    # a second load finds the cached engine and reuses it
    (again,) = _run_rows("trt", nanodet_m_320, images, ann, tmp_path, options, tag="-again")
    assert again["runtime"]["engine_cache"] == "hit" and again["map"] == row["map"]


@pytest.mark.gpu
def test_trt_outputs_match_ort(tmp_path, coco_tiny, nanodet_m_320):
    reason = _gpu_reason("trt")
    if reason:
        pytest.skip(reason)
    images, _ = coco_tiny
    x = preprocess_image(sorted(images.iterdir())[0], 0, NANODET.input)[0][None]
    ort = get_target("ort")(nanodet_m_320, NANODET, {})
    ort.load(1)
    trt = get_target("trt")(nanodet_m_320, NANODET, {"engine_cache": str(tmp_path)}, batch_sizes=[1])
    trt.load(1)
    try:
        for a, b in zip(trt.infer(x), ort.infer(x)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-3)
        info = trt.describe()
        assert info["runtime"].startswith("tensorrt ") and info["device"] and Path(info["engine"]).is_file()
    finally:
        trt.close()


@pytest.mark.gpu
def test_trt_int8_calibration_cache_written_and_reused(tmp_path, coco_tiny, nanodet_m_320):
    reason = _gpu_reason("trt")
    if reason:
        pytest.skip(reason)
    from harness.targets.trt.api import import_tensorrt

    if not import_tensorrt()[1].legacy_int8:
        pytest.skip("this TensorRT has no implicit calibration (11.x): the legacy mode is refused there")
    images, ann = coco_tiny
    options = {"precision": "int8", "int8_mode": "implicit", "calib": str(images),
               "engine_cache": str(tmp_path / "engines")}
    (ref,) = _run_rows("ort", nanodet_m_320, images, ann, tmp_path, {})
    (row,) = _run_rows("trt", nanodet_m_320, images, ann, tmp_path, options)
    calib_cache = Path(row["runtime"]["calib_cache"])
    assert calib_cache.is_file() and calib_cache.stat().st_size > 0
    assert row["runtime"]["calib_cache_reused"] is False
    assert row["map"] > 0.5 * ref["map"]  # int8 is lossy; a broken calibration gives ~0
    (again,) = _run_rows("trt", nanodet_m_320, images, ann, tmp_path, options, tag="-again")
    assert again["runtime"]["engine_cache"] == "hit"
    # a new engine cache folder, same calibration cache file: calibration is skipped
    calib_copy = tmp_path / "engines2"
    calib_copy.mkdir()
    (calib_copy / calib_cache.name).write_bytes(calib_cache.read_bytes())
    (third,) = _run_rows("trt", nanodet_m_320, images, ann, tmp_path, {**options, "engine_cache": str(calib_copy)},
                         tag="-third")
    assert third["runtime"]["calib_cache_reused"] is True


@pytest.mark.gpu
def test_ort_cuda_really_runs_on_cuda(tmp_path, coco_tiny, nanodet_m_320):
    reason = _gpu_reason("ort-cuda")
    if reason:
        pytest.skip(reason)
    images, ann = coco_tiny
    (ref,) = _run_rows("ort", nanodet_m_320, images, ann, tmp_path, {})
    (row,) = _run_rows("ort-cuda", nanodet_m_320, images, ann, tmp_path, {})
    assert "CUDAExecutionProvider" in row["runtime"]["providers"]
    assert not any(n.startswith("FALLBACK") for n in row["notes"]) and row["ort_device"] == "cuda"
    assert abs(row["map"] - ref["map"]) <= 0.002
