"""The TensorRT target's real code against fakes of TensorRT 10.x / 11.x and of cuda-python.

The fakes (tests/fake_trt.py, tests/fake_cuda.py) are built from ../shared/trt-api/*.names: on the
11.4 fake the weak-typing names simply do not exist. The target, the fp16 conversion and its check,
the engine cache and the timing loops are the shipped code; the engine "runs" the built ONNX with
ONNX Runtime CPU on the bytes at the bound device addresses, so outputs are compared for real.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.core.errors import HarnessError
from harness.data.demo import demo_model_path
from harness.precision.check import cpu_session
from harness.profiles import load_profile
from harness.targets import get_target
from harness.targets.figures import TARGET_FIGURES
from harness.targets.modes import RunMode
from harness.targets.timing import LoopRule
from harness.targets.trt import cuda_rt
from harness.targets.trt.inspect import EnginePrecisionError
from tests.fake_cuda import BYTES_PER_MS, KERNEL_MS, FakeCudaRuntime
from tests.fake_trt import TRT_API, make_fake_tensorrt, names

pytestmark = pytest.mark.skipif(not TRT_API.is_dir(), reason="needs ../shared/trt-api (TensorRT name lists)")

DEMO = load_profile("demo")
GONE = set((TRT_API / "gone-10.16-to-11.4.names").read_text().split()) if TRT_API.is_dir() else set()


@pytest.fixture
def fakes(monkeypatch):
    """make(release, force_precision=None) -> (fake tensorrt, fake cudart), installed for the target."""
    def make(release, force_precision=None):
        cuda = FakeCudaRuntime()
        trt = make_fake_tensorrt(release, cuda, force_precision)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(cuda_rt, "import_cudart", lambda: cuda)
        return trt, cuda
    return make


def _settings(tmp_path, **extra) -> Path:
    lines = [f'engine_cache = "{tmp_path / "engines"}"', "check_images = 3"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = tmp_path / "trt.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(tmp_path, model=None, precision="fp32", batch=4, sizes=(1, 4), **settings):
    options = {"trt_settings": str(_settings(tmp_path, **settings))}
    if precision is not None:
        options["precision"] = precision
    target = get_target("trt")(model or demo_model_path(), DEMO, options, batch_sizes=sizes)
    target.load(batch)
    return target


def _x(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 192, 192)).astype(np.float32)


def _removed_names_touched(trt) -> list:
    """Failed lookups of removed names outside the one capability probe (targets/trt/api.describe_api)."""
    return [m for m in trt._log["missing"] if m[3] != "describe_api"]


@pytest.mark.parametrize("release", ["10.16", "11.4"])
def test_fp16_build_is_strongly_typed_from_an_fp16_onnx(tmp_path, fakes, release):
    trt, cuda = fakes(release)
    target = _load(tmp_path, precision="fp16")
    info = target.describe()
    assert _removed_names_touched(trt) == []
    # the network was strongly typed, no precision flag was set, TF32 was cleared (the default)
    assert [n["strongly_typed"] for n in trt._log["networks"]] == [True]
    assert ("set", "FP16") not in trt._log["flags"] and ("clear", "TF32") in trt._log["flags"]
    recipe = info["precision_recipe"]
    assert recipe["plan"] == "fp16" and recipe["strongly_typed"] is True and recipe["tf32"] is False
    assert recipe["conversion"]["converter"] in ("onnxconverter-common", "modelopt-autocast")
    assert target.precision == "fp16" and info["precision"] == "fp16"
    # the engine inspector saw fp16 layers; the conversion check passed on ONNX Runtime CPU
    assert info["engine_precision"]["fp16"] > 0.5 and info["engine_precision"]["layers"] > 10
    assert info["conversion_check"]["passed"] is True and min(info["conversion_check"]["sqnr_db"]) >= 25
    # the converted ONNX is what was parsed, and its sha256 is in the engine's cache key
    sidecar = json.loads(Path(info["engine"]).with_suffix(".json").read_text())
    built = Path(sidecar["built_onnx"])
    assert built.suffix == ".onnx" and built != demo_model_path()
    from harness.core.fileio import sha256_file
    from harness.targets.trt.engine import CACHE_FORMAT
    assert sidecar["fields"]["recipe"]["built_onnx_sha256"] == sha256_file(built)
    assert sidecar["fields"]["format"] == CACHE_FORMAT == 2
    assert sidecar["fields"]["precision"] == "fp16" and sidecar["fields"]["tensorrt"] == trt.__version__
    # outputs: the fake engine ran the converted graph on the bytes the target copied to the device
    x = _x()
    out = target.infer(x)
    ref = cpu_session(onnx.load(str(demo_model_path()))).run(None, {"image": x})
    assert out[0].shape == ref[0].shape
    np.testing.assert_allclose(out[0], ref[0], atol=0.05, rtol=0.05)
    assert cuda.kernels >= 1
    target.close()


@pytest.mark.parametrize("release", ["10.16", "11.4"])
def test_int8_from_a_qdq_model_never_touches_removed_names(tmp_path, fakes, release, qdq_demo):
    trt, _ = fakes(release)
    target = _load(tmp_path, model=qdq_demo, precision="int8")
    info = target.describe()
    assert _removed_names_touched(trt) == []
    assert not any(name in GONE for name in ("FP16", "int8_calibrator") if ("set", name) in trt._log["flags"])
    assert info["precision"] == "int8" and info["precision_recipe"]["plan"] == "qdq-fp16"
    assert info["precision_recipe"]["conversion"]["opset_out"] >= 19  # fp16 Q/DQ scales
    assert info["engine_precision"]["int8"] > 0 and info["engine_precision"]["fp16"] > 0
    assert info["conversion_check"]["passed"] and info["conversion_check"]["min_sqnr_db"] == 12.0
    assert trt._log["calibration"] == []  # no calibrator: the scales come from the model
    target.close()


def test_a_model_that_already_holds_fp16_is_built_as_it_is(tmp_path, fakes):
    from harness.precision.fp16 import convert_to_fp16

    path = tmp_path / "demo-fp16.onnx"
    onnx.save(convert_to_fp16(onnx.load(str(demo_model_path()))).model, str(path))
    fakes("11.4")
    target = _load(tmp_path, model=path, precision=None)  # the settings' precision (fp32) is only a default
    info = target.describe()
    assert target.precision == "fp16" and info["precision"] == "fp16" and info["precision_recipe"]["plan"] == "as-is"
    assert info["conversion_check"] is None and any("already holds fp16" in n for n in target.notes)
    target.close()
    with pytest.raises(HarnessError, match=r"--precision fp32 does not match what would run \(fp16: the graph holds"):
        _load(tmp_path, model=path, precision="fp32")  # asked for on the command line: refused, as on every target


@pytest.mark.parametrize("graph,expected", [("qdq", "int8"), ("fp16", "fp16")])
def test_the_precision_contract_holds_on_the_fakes(tmp_path, fakes, monkeypatch, graph, expected):
    """tests/test_contracts.py's precision rule, run on trt where it skips for want of a GPU."""
    from tests.test_contracts import test_every_target_labels_precision_from_the_graph as contract

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default engine cache (~/.cache/harness/trt)
    fakes("11.4")
    contract(tmp_path, "trt", graph, expected)


def test_implicit_int8_is_refused_on_11_with_one_line(tmp_path, fakes, calib_folder):
    fakes("11.4")
    with pytest.raises(HarnessError) as info:
        _load(tmp_path, precision="int8", int8_mode="implicit", calib=str(calib_folder))
    message = str(info.value)
    assert "\n" not in message and "--from-trt-cache CACHE" in message and "11.4" in message


def test_implicit_int8_works_on_10_as_the_labelled_legacy_mode(tmp_path, fakes, calib_folder):
    trt, _ = fakes("10.16")
    target = _load(tmp_path, precision="int8", int8_mode="implicit", calib=str(calib_folder), calib_batch_size=2)
    info = target.describe()
    # weakly typed network, FP16 + INT8 flags, the calibrator fed real device buffers, cache written
    assert [n["strongly_typed"] for n in trt._log["networks"]] == [False]
    assert ("set", "FP16") in trt._log["flags"] and ("set", "INT8") in trt._log["flags"]
    assert trt._log["calibration"] == [("batches", 2, 2)]  # 4 images, batch 2
    assert info["int8_mode"].startswith("implicit") and info["calib_cache_reused"] is False
    assert Path(info["calib_cache"]).is_file() and info["precision"] == "int8"
    assert info["engine_precision"]["int8"] > 0
    target.close()
    # a second load with a new engine cache folder but the same calibration cache skips calibration
    again = _load(tmp_path, precision="int8", int8_mode="implicit", calib=str(calib_folder), calib_batch_size=2)
    assert again.describe()["engine_cache"] == "hit"
    again.close()


def _quantize_commands(message: str) -> list[str]:
    """The `harness quantize ...` command lines a message tells the user to run."""
    import re

    return re.findall(r"`(harness quantize [^`]*)`", message)


def test_a_trt10_cache_becomes_the_qdq_model_trt11_runs_with_the_commands_the_messages_give(tmp_path, fakes,
                                                                                            calib_folder):
    """TensorRT 10's implicit calibration writes its cache; on 11.x the refusal names `harness quantize`
    command lines; run as written (placeholders filled in) they make Q/DQ models that 11.x builds int8."""
    import shlex

    from harness.model.onnx_model import inspect_onnx
    from harness.quant.trt_cache import parse_trt_cache
    from harness.targets.trt.prepare import build_plan
    from tests.test_cli_errors import cli

    fakes("10.16")
    legacy = _load(tmp_path, precision="int8", int8_mode="implicit", calib=str(calib_folder), calib_batch_size=2)
    cache = Path(legacy.describe()["calib_cache"])
    legacy.close()
    cache_scales = parse_trt_cache(cache).scales
    assert cache.read_text().startswith("TRT-101600-EntropyCalibration2\n") and "image" in cache_scales
    fakes("11.4")
    with pytest.raises(HarnessError) as refused:
        _load(tmp_path, precision="int8", int8_mode="implicit", calib=str(calib_folder))
    commands = _quantize_commands(str(refused.value))
    assert len(commands) == 2 and any("--from-trt-cache" in c for c in commands)
    with pytest.raises(HarnessError) as no_qdq:
        build_plan("int8", "fp32", False, "qdq", "model.onnx")
    assert sorted(_quantize_commands(str(no_qdq.value))) == sorted(commands)  # both messages say the same
    for n, command in enumerate(commands):
        out = tmp_path / f"quant{n}"
        values = {"MODEL": demo_model_path(), "CACHE": cache, "PROFILE": "demo", "IMAGES": calib_folder, "DIR": out}
        result = cli(*[values.get(word, word) for word in shlex.split(command)[1:]])
        assert result.exit_code == 0, (command, result.output, result.stderr)
        model = out / "model.qdq.onnx"
        assert inspect_onnx(model).precision == "int8"
        target = _load(tmp_path, model=model, precision="int8")
        info = target.describe()
        assert info["precision"] == "int8" and info["precision_recipe"]["plan"] == "qdq-fp16"
        assert info["engine_precision"]["int8"] > 0
        target.close()
        record = json.loads((out / "quant.json").read_text())
        if "--from-trt-cache" in command:
            graph = onnx.load(str(model)).graph
            inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
            image_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
            assert float(inits[image_q.input[1]]) == cache_scales["image"]  # the cache's scale, bit for bit
            assert record["calibration"]["trt_cache"]["header"] == "TRT-101600-EntropyCalibration2"
            assert record["profile"] is None
        else:
            assert record["calibration"]["images"]["count"] == 4


def test_fp16_engine_without_fp16_layers_is_a_failed_row(tmp_path, fakes):
    fakes("11.4", force_precision="fp32")  # a TensorRT that silently keeps fp32
    with pytest.raises(EnginePrecisionError) as info:
        _load(tmp_path, precision="fp16")
    assert info.value.requested == "fp16" and info.value.shares["fp16"] == 0.0 and info.value.shares["fp32"] == 1.0
    assert "0% of its" in str(info.value)


def test_engine_cache_hit_and_recipe_fields_split_the_key(tmp_path, fakes):
    trt, _ = fakes("10.16")
    first = _load(tmp_path, precision="fp16")
    assert first.describe()["engine_cache"].startswith("built")
    first.close()
    again = _load(tmp_path, precision="fp16")
    assert again.describe()["engine_cache"] == "hit" and trt._log["builds"] == 1
    again.close()
    tf32 = _load(tmp_path, precision="fp16", tf32=True)
    assert tf32.describe()["engine_cache"].startswith("built (no cached engine") and trt._log["builds"] == 2
    assert ("set", "TF32") in trt._log["flags"] and tf32.describe()["tf32"] is True
    tf32.close()


@pytest.mark.parametrize("timing,graph", [("serial", False), ("pipelined", False), ("pipelined", True)])
def test_timing_modes_measure_copies_compute_and_enqueue(tmp_path, fakes, timing, graph):
    _, cuda = fakes("11.4")
    target = _load(tmp_path, precision="fp32", timing=timing, cuda_graph=graph)
    x = _x()
    stats = target.benchmark(x, LoopRule.fixed(0.0, 6), capture=2)
    extra = stats.extra
    assert set(extra) <= set(TARGET_FIGURES)  # the runner copies them into the row
    assert target.describe()["timing_mode"] == timing and target.describe()["cuda_graph"] is graph
    assert stats.concurrency == (2 if timing == "pipelined" else 1)
    assert len(stats.latencies_ms) >= 6 and stats.images == 4 * len(stats.latencies_ms)
    assert len(stats.latencies_ms) % stats.concurrency == 0  # every stream used equally (timed_loop multiple_of)
    # the first two batches of the loop, copied out after their events: what the engine computed
    ref = cpu_session(onnx.load(str(demo_model_path()))).run(None, {"image": x})[0]
    assert len(stats.captured) == 2
    for outputs in stats.captured:
        np.testing.assert_allclose(outputs[0], ref, rtol=1e-5, atol=1e-5)
    # the fake GPU clock: compute = one kernel, copies = bytes / rate
    assert extra["gpu_compute_ms_p50"] == pytest.approx(KERNEL_MS)
    assert extra["h2d_ms_p50"] == pytest.approx(x.nbytes / BYTES_PER_MS, abs=1e-4)
    assert extra["d2h_ms_p50"] == pytest.approx(4 * 756 * 38 * 4 / BYTES_PER_MS, abs=1e-4)
    assert extra["enqueue_ms_p50"] is not None and extra["gpu_compute_fps"] == pytest.approx(4 * 1e3 / KERNEL_MS)
    assert (cuda.launches > 0) is graph
    info = target.describe()
    assert info["trtexec"].startswith("trtexec --loadEngine=") and "--shapes=image:4x3x192x192" in info["trtexec"]
    assert ("--infStreams=2" in info["trtexec"]) is (timing == "pipelined")
    assert ("--useCudaGraph" in info["trtexec"]) is graph
    assert "11.x" in info["trtexec_compare"] and "without data transfers" in info["trtexec_compare"]
    # infer after the timing loop still gives the model's outputs
    np.testing.assert_allclose(target.infer(x)[0], ref, rtol=1e-5, atol=1e-5)
    target.close()
    assert cuda.device_mem == {} and cuda.host == {}  # every buffer freed


@pytest.mark.parametrize("mode,timing,in_flight", [("latency", "serial", 1), ("throughput", "pipelined", 2)])
def test_mode_picks_the_timing_over_the_settings_file(tmp_path, fakes, mode, timing, in_flight):
    fakes("10.16")
    other = "pipelined" if timing == "serial" else "serial"  # the file says the opposite; --mode wins
    options = {"trt_settings": str(_settings(tmp_path, timing=other)), "precision": "fp32", "mode": mode}
    target = get_target("trt")(demo_model_path(), DEMO, options, batch_sizes=(1, 4))
    target.load(4)
    assert target.describe()["timing_mode"] == timing
    assert target.run_mode == RunMode(mode, in_flight, in_flight, None)
    assert target.benchmark(_x(), LoopRule.fixed(0.0, 6)).concurrency == in_flight
    target.close()


def test_short_last_batch_uses_the_same_buffers(tmp_path, fakes):
    fakes("10.0")
    target = _load(tmp_path, precision="fp32", batch=4, sizes=(1, 4))
    x = _x(3, seed=1)
    ref = cpu_session(onnx.load(str(demo_model_path()))).run(None, {"image": x})[0]
    out = target.infer(x)[0]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert "10.x" in target.describe()["trtexec_compare"]
    target.close()


def test_status_line_names_release_binding_and_modes(fakes):
    from harness.targets.trt.target import runtime_status, status_line

    fakes("10.16")
    status = runtime_status()
    assert status["tensorrt"] == "10.16.1.11" and status["cuda_binding"].startswith("cuda-python")
    assert any("implicit" in m for m in status["modes"]) and "TensorRT 10.16.1.11" in status_line()
    fakes("11.4")
    assert not any("implicit" in m for m in runtime_status()["modes"])
    ok, why = get_target("trt").availability()
    assert ok and "Fake GPU" in why and "11.4.0.106" in why


@pytest.mark.parametrize("release,implicit", [("10.16", True), ("11.4", False)])
def test_harness_targets_names_release_binding_and_modes(fakes, monkeypatch, release, implicit):
    """`harness targets` itself (issue 18): which TensorRT, which CUDA binding, which build and timing modes."""
    import io

    from click.testing import CliRunner
    from rich.console import Console

    from harness.cli import info, main
    from tests.fake_trt import VERSIONS

    fakes(release)
    buffer = io.StringIO()
    monkeypatch.setattr(info, "out", Console(file=buffer, width=600, color_system=None))  # no cell wraps
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                          for line in buffer.getvalue().splitlines() if line.startswith("│"))}
    assert rows["trt"][1] == "yes" and f"tensorrt {VERSIONS[release]}" in rows["trt"][2] and "Fake GPU" in rows["trt"][2]
    details = rows["trt details"][2]
    assert details.startswith(f"TensorRT {VERSIONS[release]}; CUDA binding cuda-python ")
    assert "builds: fp32 (strongly typed, tf32 setting); fp16 (fp16 ONNX); int8 (Q/DQ ONNX)" in details
    assert ("int8 implicit calibration" in details) is implicit
    assert details.endswith("timing: serial, pipelined, CUDA graphs")


def test_11_list_really_lacks_the_weak_typing_api():
    """The premise of the fakes: checked on the lists themselves."""
    gone = {"FP16", "int8_calibrator", "set_calibration_profile", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"}
    assert gone <= names("10.16") and gone <= names("10.0") and not gone & names("11.4")
    assert {"STRONGLY_TYPED", "TF32", "execute_async_v3", "create_engine_inspector"} <= names("11.4")


# -- through harness.measure.runner.run: rows, failed rows, the run's images for the conversion check ------


def _run_rows(tmp_path, options, batch_sizes=(2,), target="trt", limit=12):
    from harness.data.demo import demo_dataset
    from harness.measure.results import ResultsStore
    from harness.measure.runner import RunConfig, run

    images, ann, _ = demo_dataset()
    options = {"trt_settings": str(_settings(tmp_path)), **options} if target == "trt" else options
    config = RunConfig(target=target, model=str(demo_model_path()), profile=DEMO, images_dir=images, ann_path=ann,
                       batch_sizes=list(batch_sizes), options=options, bench_seconds=0.05, max_seconds=0.05, warmup_seconds=0.0,
                       min_iterations=4, limit=limit, keep_going=True)
    return run(config, ResultsStore(tmp_path / f"out-{target}", env={}))


@pytest.mark.parametrize("timing", ["serial", "pipelined"])
def test_a_run_writes_a_full_row_with_the_tensorrt_figures(tmp_path, fakes, timing):
    fakes("11.4")
    (row,) = _run_rows(tmp_path, {"precision": "fp16", "timing": timing, "cuda_graph": timing == "pipelined"})
    (ref,) = _run_rows(tmp_path, {}, target="ort")
    assert row.status == "ok" and row.precision == "fp16" and row.images == 12
    assert abs(row.map - ref.map) <= 0.01, (row.map, ref.map)
    assert row["gpu_compute_ms_p50"] == pytest.approx(KERNEL_MS) and row["h2d_ms_p50"] > 0
    assert row["enqueue_ms_p50"] is not None and row["gpu_compute_fps"] > 0
    assert row.runtime["timing_mode"] == timing and row.runtime["cuda_graph"] is (timing == "pipelined")
    assert row.bench["concurrency"] == (2 if timing == "pipelined" else 1)
    assert row.mode == ("throughput" if timing == "pipelined" else "latency")
    assert row.requests == row.streams == row.bench["concurrency"] and row.threads is None
    # the loop's own outputs (CUDA graph replays included) are what infer() gives
    assert row.bench["loop_check"]["captured"] == 2 and row.bench["loop_check"]["equal"] is True
    # the fp16 conversion was checked on the run's first images, not on synthetic ones
    check = row.runtime["conversion_check"]
    assert check["passed"] and check["images"] == 3 and check["data"].startswith("the run's first 3 images")
    assert row.runtime["engine_precision"]["fp16"] > 0.5


def test_a_run_records_the_precision_gate_and_a_refused_conversion_as_failed_rows(tmp_path, fakes):
    fakes("11.4", force_precision="fp32")  # a TensorRT that silently keeps fp32
    (row,) = _run_rows(tmp_path, {"precision": "fp16"})
    assert row.status == "failed" and row.precision == "fp16" and row.map is None
    assert "runs 0% of its" in row.error and "not a fp16 result" in row.error and "\n" not in row.error
    fakes("11.4")
    (row,) = _run_rows(tmp_path, {"precision": "fp16", "check_min_sqnr_db": 150.0})
    assert row.status == "failed" and "breaks the model on ONNX Runtime CPU" in row.error
    assert "dB < 150 dB" in row.error and "[precision] keep_fp32_nodes" in row.error


# -- fixtures: a Q/DQ demo model and a calibration folder ------------------------------------------


@pytest.fixture(scope="module")
def qdq_demo(tmp_path_factory):
    from tests.qdq_util import quantize_demo

    return quantize_demo(tmp_path_factory.mktemp("qdq") / "demo-qdq.onnx", images=8)


@pytest.fixture
def calib_folder(tmp_path):
    import cv2

    from harness.data.synthetic import generate_image

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"c{i}.png"), generate_image(3, "calib", i)[0])
    return folder


def test_fixed_batch_one_model_builds_its_engine_from_the_batch_rewrite(tmp_path, fakes, monkeypatch):
    """A batch-1 export with the batch baked into a Reshape: trt --bs 4 builds a static batch-4 engine
    from the checked rewrite (its optimization profile is the rewritten file's batch), and the engine's
    outputs are the original's batch-1 outputs stacked."""
    from onnx import numpy_helper

    from harness.model.batch_rewrite import cache_dir
    from tests.tinymodel import write_tiny_model, write_tiny_profile

    fakes("11.4")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    model_path = write_tiny_model(tmp_path / "baked.onnx", batch=1)
    model = onnx.load(str(model_path))
    shape = next(i for i in model.graph.initializer if i.name == "shape")
    shape.CopyFrom(numpy_helper.from_array(np.array([1, 34, -1], np.int64), "shape"))
    onnx.save(model, str(model_path))
    profile = load_profile(write_tiny_profile(tmp_path / "tiny.toml"))
    options = {"trt_settings": str(_settings(tmp_path)), "precision": "fp32"}
    target = get_target("trt")(model_path, profile, options, batch_sizes=(1, 4))
    target.load(4)
    assert target.built_from.parent == cache_dir() and target.built_from.name.endswith("-bs4.onnx")
    assert target.batch_rewrite["nodes"] == 1 and target.batch_rewrite["checked_on"] == "seeded random input"
    assert target.describe()["profile_batch"] == {"min": 4, "opt": 4, "max": 4}
    assert target.model_batch == 1 and target.padded_batch
    x = np.random.default_rng(3).normal(size=(4, 3, 32, 32)).astype(np.float32)
    session = cpu_session(model)
    want = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(target.infer(x)[0], want, rtol=1e-5, atol=1e-6)
    target.close()
