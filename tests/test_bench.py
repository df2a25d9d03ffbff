"""`harness bench`: the timing loop of `run` without a dataset; rows flagged no-accuracy that
`harness report` puts beside `run` rows."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.measure.bench import random_batch
from harness.profiles import input_profile, load_profile
from harness.targets.timing import percentiles

FAST = ["--seconds", "0.05", "--max-seconds", "0.1", "--warmup", "0.02"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rows_of(out):
    return json.loads((out / "results.json").read_text())["rows"]


def test_bench_times_random_input_without_a_dataset(tiny):
    out = tiny["root"] / "bench"
    result = cli("bench", "-t", "ort,ov", "-m", tiny["model"], "--bs", "1,2", "--mode", "latency", "--out", out, *FAST)
    assert result.exit_code == 0, result.output + result.stderr
    rows = rows_of(out)
    assert [(r["target"], r["bs"], r["status"]) for r in rows] == [("ort", 1, "ok"), ("ort", 2, "ok"),
                                                                   ("ov", 1, "ok"), ("ov", 2, "ok")]
    for row in rows:
        assert "no-accuracy" in row["flags"] and row["map"] is None and row["images"] == 0 and row["dataset"] == ""
        assert row["fps"] > 0 and row["mode"] == "latency" and row["bench"]["loop_check"]["equal"] is True
        assert row["profile"] == "input NCHW 32x32 f32" and row["identity"]["dataset"] == {"input": "random", "seed": 0}
        summary = row["bench"]["latency_ms"]
        assert summary["min"] <= summary["median"] <= summary["max"] and summary["median"] == row["latency_ms_p50"]
        assert summary["samples"] == row["latency_samples"]
        assert any(n.startswith("input: seeded random NCHW f32 [") for n in row["notes"])
        # what the machine did while the row was timed, as on run rows: this process's peak memory, the model size
        state = row["machine_state"]
        assert state["rss_peak_mib"] > 0 and state["timing"]["seconds"] > 0
        assert state["model_file_mib"] == pytest.approx(tiny["model"].stat().st_size / 2**20, abs=0.01)
    # benchmark_app-style per-request latency lines for the latency-mode rows
    assert result.output.count("latency per request (ms): min ") == 4


def test_bench_with_a_profile_times_real_images_and_report_merges_it_with_run(tiny):
    bench_out, run_out = tiny["root"] / "bench", tiny["root"] / "run"
    result = cli("bench", "-t", "ort", "-m", tiny["model"], "-p", tiny["profile"], "--images", tiny["images"],
                 "--out", bench_out, *FAST)
    assert result.exit_code == 0, result.output + result.stderr
    (row,) = rows_of(bench_out)
    assert row["profile"] == "tiny" and row["dataset"] == str(tiny["images"]) and "no-accuracy" in row["flags"]
    assert row["identity"]["dataset"]["input"] == "images" and row["identity"]["dataset"]["images"] == 6
    ran = cli("run", "-t", "ort", "-m", tiny["model"], "-p", tiny["profile"], "--data", tiny["images"], "--ann",
              tiny["ann"], "--out", run_out, *FAST)
    assert ran.exit_code == 0, ran.output + ran.stderr
    page = tiny["root"] / "cmp.md"
    merged = cli("report", bench_out / "results.json", run_out / "results.json", "--out", page)
    assert merged.exit_code == 0, merged.output + merged.stderr
    # the comparison table's rows (the machine table below it names its rows "ort fp32 bs 1 (...)")
    table = [line for line in page.read_text().splitlines()
             if line.startswith("| ort") and line.split("|")[2].strip() == "fp32"]
    assert len(table) == 2 and sum("no-accuracy" in line for line in table) == 1
    assert "*no-accuracy* timing only (harness bench)" in page.read_text()


def test_random_input_follows_the_profile_shape_and_type():
    for dtype, low, high in (("float32", 0, 1), ("float16", 0, 1), ("uint8", 0, 255)):
        profile = input_profile((1, 320, 320, 3), dtype)
        batch = random_batch(profile, 3)
        assert batch.shape == (3, 320, 320, 3) and batch.dtype == np.dtype(dtype)
        assert low <= batch.min() and batch.max() <= high and np.unique(batch).size > 100
        np.testing.assert_array_equal(batch, random_batch(profile, 3))  # seeded


def test_dynamic_size_needs_shape(tiny):
    model = onnx.load(str(tiny["model"]))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "size"
    dynamic = tiny["root"] / "dyn.onnx"
    onnx.save(model, str(dynamic))
    refused = cli("bench", "-t", "ort", "-m", dynamic, "--out", tiny["root"] / "b1", *FAST)
    assert refused.exit_code == 2
    assert refused.stderr.strip().endswith("model dyn.onnx input ['?', 3, '?', '?'] has dynamic sizes: pass --shape "
                                           "HEIGHTxWIDTH (or --profile)")
    ok = cli("bench", "-t", "ort", "-m", dynamic, "--shape", "32x32", "--out", tiny["root"] / "b2", *FAST)
    assert ok.exit_code == 0, ok.output + ok.stderr
    assert rows_of(tiny["root"] / "b2")[0]["profile"] == "input NCHW 32x32 f32"


@pytest.mark.parametrize("args,line", [
    (["--images", "x"], "error: --images needs --profile (it says how an image becomes the model's input)"),
    (["--shape", "32by32"], "error: --shape 32by32: expected HEIGHTxWIDTH, e.g. 416x416"),
])
def test_bench_refuses_flags_that_do_not_fit_with_one_line(tiny, args, line):
    result = cli("bench", "-t", "ort", "-m", tiny["model"], "--out", tiny["root"] / "b", *args)
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == line


def test_percentile_summary_agrees_with_the_row_percentiles():
    values = list(np.random.default_rng(1).exponential(5.0, 150))
    from harness.targets.timing import summary_ms

    summary = summary_ms(values)
    assert summary["median"] == pytest.approx(float(np.median(values)), abs=1e-3)
    assert {k: summary[k] for k in ("p50", "p90", "p99")} == percentiles(values)
    assert load_profile("demo").input.numpy_dtype == "float32"
