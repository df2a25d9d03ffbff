"""The typed row and the sweep: a (target, bs) that cannot run is a failed row and the others still
run; flags are set where facts are known; undefined metrics are None; options are checked per target."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from harness.cli import main
from harness.core.errors import HarnessError
from harness.measure.row import ResultRow
from tests.tinymodel import write_tiny_model, write_tiny_profile


def fixed_batch_model(path):
    """The tiny model at batch 1 with the batch folded out of its output ([N, 34], as nanodet-m-320's
    export does): neither runtime nor the batch rewrite can run it at batch 4."""
    model_path = write_tiny_model(path, batch=1)
    model = onnx.load(str(model_path))
    graph = model.graph
    output = graph.output[0]
    rows = output.type.tensor_type.shape.dim[1].dim_value
    graph.node[-1].output[0] = "scores"
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 34], np.int64), "flat_shape"))
    graph.node.append(onnx.helper.make_node("Reshape", ["scores", "flat_shape"], [output.name]))
    output.CopyFrom(onnx.helper.make_tensor_value_info(output.name, onnx.TensorProto.FLOAT, [rows, 34]))
    onnx.save(model, str(model_path))
    return model_path


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_args(t, out, *extra, **over):
    args = {"--target": "ort", "--model": t["model"], "--profile": t["profile"], "--data": t["images"],
            "--ann": t["ann"], "--bs": "1", "--seconds": "0.1", "--max-seconds": "0.1", "--warmup": "0.05", "--out": out}
    args.update(over)
    return ["run", *[x for kv in args.items() for x in kv], *extra]


def rows_of(out):
    return json.loads((out / "results.json").read_text())["rows"]


def test_one_failure_does_not_abort_the_sweep(tiny):
    model = fixed_batch_model(tiny["root"] / "fixed.onnx")
    out = tiny["root"] / "sweep"
    result = cli(*run_args(tiny, out, **{"--model": model, "--target": "ort,ov", "--bs": "1,4"}))
    assert result.exit_code == 2, result.output
    rows = rows_of(out)
    assert [(r["target"], r["bs"], r["status"]) for r in rows] == [
        ("ort", 1, "ok"), ("ort", 4, "failed"), ("ov", 1, "ok"), ("ov", 4, "failed")]
    for failed in (rows[1], rows[3]):
        assert "fixed batch of 1 and cannot run batch 4" in failed["error"] and failed["map"] is None
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 4 row(s) failed; first: ort bs=4:") and "fixed batch" in last
    assert "✗" in result.output
    report = (out / "report.md").read_text()
    assert "Rows that did not run" in report and "ort bs=4: model fixed.onnx has a fixed batch" in report
    # --resume reruns only what did not run (it fails again, the ok rows are kept as they were)
    again = cli(*run_args(tiny, out, "--resume", **{"--model": model, "--target": "ort,ov", "--bs": "1,4"}))
    assert again.exit_code == 2
    finished = {(r["target"], r["bs"]): r["finished"] for r in rows_of(out)}
    assert [finished[(r["target"], r["bs"])] for r in rows if r["status"] == "ok"] == \
        [r["finished"] for r in rows if r["status"] == "ok"]


def test_a_file_of_failed_rows_only_is_replaced_without_overwrite(tiny):
    out = tiny["root"] / "o"
    wrong = write_tiny_profile(tiny["root"] / "wrong.toml", size=64)
    assert cli(*run_args(tiny, out, **{"--profile": wrong})).exit_code == 2
    assert [r["status"] for r in rows_of(out)] == ["failed"]
    result = cli(*run_args(tiny, out))
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in rows_of(out)] == ["ok"]
    assert cli(*run_args(tiny, out)).exit_code == 2  # now it holds a measurement: refused


def test_rows_are_typed_with_loop_check_and_undefined_metrics(tiny):
    out = tiny["root"] / "typed"
    result = cli(*run_args(tiny, out, **{"--target": "ort,ov", "--bs": "2"}))
    assert result.exit_code == 0, result.output
    for row in rows_of(out):
        assert row["schema"] == 3 and row["source"] == "run" and row["status"] == "ok" and row["error"] is None
        check = row["bench"]["loop_check"]
        assert check["captured"] == 2 and check["equal"] is True and check["max_abs_diff"] == 0.0
        # the tiny dataset has no object above 96x96 pixels: pycocotools' -1, written as null
        assert row["map_large"] is None and row["map"] is not None
        assert row["precision"] == "fp32"
        # the timing loop's figures, typed: the default mode, what is in flight, its confidence half-width
        assert row["mode"] == "throughput" and row["requests"] == row["bench"]["concurrency"] >= 1
        assert row["latency_samples"] == row["bench"]["iterations"] > 0
        assert (row["latency_ms_p99"] is None) == (row["latency_samples"] < 100)
        assert row["fps_ci95"] is None or row["fps_ci95"] > 0
        assert row["fps_converged"] is (row["fps_ci95"] is not None and row["fps_ci95"] <= 0.01)
        assert ("unconverged" in row["flags"]) is (not row["fps_converged"])


def test_loop_mismatch_is_flagged():
    from harness.measure.runner import _loop_check

    same = [np.ones((1, 4), np.float32)]
    assert _loop_check(same, [same, same]) == {"captured": 2, "equal": True, "max_abs_diff": 0.0}
    other = [np.ones((1, 4), np.float32) * 1.5]
    check = _loop_check(same, [same, other])
    assert check["equal"] is False and check["max_abs_diff"] == pytest.approx(0.5)
    assert _loop_check(same, [[np.ones((2, 4), np.float32)]])["equal"] is False


def test_suspect_flag_on_near_zero_map_with_detections():
    row = ResultRow(target="ort", bs=1, map=0.004, detections=120)
    assert "suspect" in row.flags and any("profile likely does not fit" in n for n in row.notes)
    none = ResultRow(target="ort", bs=1, map=0.0, detections=0, images=40)  # e.g. YOLOX fed pixels / 255
    assert "suspect" in none.flags and any("no detection at all on 40 images" in n for n in none.notes)
    assert "suspect" not in ResultRow(target="ort", bs=1, map=None, detections=0, images=40).flags  # no ground truth
    assert "suspect" not in ResultRow(target="ort", bs=1, map=0.2, detections=120).flags
    assert "suspect" not in ResultRow(target="ort", bs=1, status="failed", error="x").flags
    again = ResultRow.from_dict(row.to_dict())
    assert again.flags.count("suspect") == 1 and len(again.notes) == len(row.notes)


def test_schema1_rows_read_their_flags_once():
    old = {"target": "ort-cuda", "bs": 8, "model": "m", "notes": ["FALLBACK: ran on CPU", "last batch padded"],
           "batch_mode": "per-batch model", "map": 0.3, "custom_key": {"kept": True}, "gpu_compute_ms_p50": 1.5}
    row = ResultRow.from_dict(old)
    assert row.schema == 1 and set(row.flags) == {"fallback", "padded", "per-batch-model"}
    back = row.to_dict()
    assert back["custom_key"] == {"kept": True} and back["gpu_compute_ms_p50"] == 1.5 and back["map"] == 0.3
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ResultRow(target="x", bs=1, flags=["made-up"])


def test_target_options_from_the_command_line(tiny):
    out = tiny["root"] / "opts"
    result = cli(*run_args(tiny, out, "-o", "nireq=2", **{"--target": "ov", "--hint": "latency"}))
    assert result.exit_code == 0, result.output
    (row,) = rows_of(out)
    assert row["bench"]["concurrency"] == 2 and row["runtime"]["hint"] == "LATENCY"
    assert row["mode"] == "latency" and row["requests"] == 2  # --hint LATENCY alone means latency mode
    ignored = cli(*run_args(tiny, tiny["root"] / "ign", **{"--hint": "LATENCY"}))
    assert ignored.exit_code == 0
    assert any("--hint does not apply to target ort (ignored)" in n for n in rows_of(tiny["root"] / "ign")[0]["notes"])
    bad = cli(*run_args(tiny, tiny["root"] / "bad", "-o", "nireq=many", **{"--target": "ov"}))
    assert bad.exit_code == 2 and "target ov: --nireq = 'many': expected an integer" in bad.stderr
    nobody = cli(*run_args(tiny, tiny["root"] / "nobody", "-o", "nirek=2", **{"--target": "ov"}))
    assert nobody.exit_code == 2 and "--option nirek: no target of this run takes it (did you mean 'nireq'?)" in nobody.stderr
    banana = cli(*run_args(tiny, tiny["root"] / "banana", **{"--precision": "banana"}))
    assert banana.exit_code == 2 and "--precision = 'banana': expected one of" in banana.stderr


def test_precision_is_checked_against_what_runs(tiny):
    out = tiny["root"] / "prec"
    result = cli(*run_args(tiny, out, **{"--precision": "fp16"}))
    assert result.exit_code == 2
    (row,) = rows_of(out)
    assert row["status"] == "failed" and "--precision fp16 does not match what would run (fp32" in row["error"]


def test_profiles_show_prints_a_profile_that_loads_back(tmp_path):
    from harness.profiles import load_profile

    result = cli("profiles", "show", "nanodet-m-320")
    assert result.exit_code == 0
    assert result.output.startswith("# profile nanodet-m-320 from builtin:nanodet-m-320")
    copy = tmp_path / "mine.toml"
    copy.write_text(result.output)
    assert load_profile(copy).to_dict() | {"name": "x"} == load_profile("nanodet-m-320").to_dict() | {"name": "x"}
    assert tomllib.loads(result.output)["decoder"]["prior_offset"] == 0.5
    missing = cli("profiles", "show", "nanodet-m-32")
    assert missing.exit_code == 2 and "unknown profile 'nanodet-m-32' (did you mean 'nanodet-m-320'?)" in missing.stderr


def test_failed_row_is_refused_by_report_when_nothing_ran(tiny):
    from harness.report.compare import compare

    out = tiny["root"] / "nothing"
    cli(*run_args(tiny, out, **{"--profile": write_tiny_profile(tiny["root"] / "w.toml", size=64)}))
    with pytest.raises(HarnessError, match="nothing to compare"):
        compare([str(out)])


def test_resume_refuses_another_measurement(tiny):
    out = tiny["root"] / "res"
    assert cli(*run_args(tiny, out, **{"--target": "ort,ov"})).exit_code == 0
    (first,) = [r for r in rows_of(out) if r["target"] == "ort"]
    ident = first["identity"]
    assert len(ident["model_sha256"]) == 64 and ident["dataset"]["images"] == 6 and ident["limit"] is None
    assert ident["machine"]["cores"] and ident["runtime"].startswith("onnxruntime")
    other_model = write_tiny_model(tiny["root"] / "other.onnx", seed=99)
    other_profile = tiny["root"] / "other.toml"
    other_profile.write_text(tiny["profile"].read_text().replace("score_threshold = 0.05", "score_threshold = 0.1"))
    cases = [
        ({"--model": other_model, "--bs": "1,2"}, None),  # another model file: its own rows, nothing to refuse
        ({"--model": tiny["model"], "--bs": "1,2", "--limit": "4"}, "dataset differs: image_bytes_sha256="),
        ({"--profile": other_profile, "--bs": "1,2"}, "profile contents differs"),
        ({"--target": "ov", "--bs": "1,2", "--threads": "1"},
         "target options differs: threads=None in the results vs threads=1 now"),
    ]
    for over, fragment in cases:
        before = (out / "results.json").read_text()
        result = cli(*run_args(tiny, out, "--resume", **over))
        if fragment is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 2, (over, result.output)
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error: --resume:") and fragment in line, (over, line)
        assert (out / "results.json").read_text() == before
    # the same file changed on disk under the same name: its bytes differ, so it is another measurement
    tiny["model"].write_bytes(other_model.read_bytes())
    result = cli(*run_args(tiny, out, "--resume", **{"--bs": "1,2"}))
    assert result.exit_code == 2 and "model file contents differs" in result.stderr


def test_report_groups_repeats_by_identity_and_counts_a_file_once(tiny):
    import shutil

    from harness.report.compare import compare

    root = tiny["root"]
    assert cli(*run_args(tiny, root / "full", **{"--target": "ort,ov"})).exit_code == 0
    assert cli(*run_args(tiny, root / "four", **{"--target": "ov", "--limit": "4"})).exit_code == 0
    assert cli(*run_args(tiny, root / "one-thread", **{"--target": "ov", "--threads": "1"})).exit_code == 0
    shutil.copytree(root / "full", root / "copy")
    (root / "README.md").write_text("not results")
    inputs = [str(root / "full"), str(root / "full" / "results.json"), str(root / "copy"), str(root / "four"),
              str(root / "one-thread"), str(root / "README.md")]
    comp = compare(inputs)
    ov = comp.table[comp.table.target == "ov"]
    assert len(ov) == 3 and set(ov.repeats) == {1}  # full / 4 images / 1 thread: three measurements, no repeats
    assert comp.duplicates == 2  # the copy's two rows
    assert any("README.md" in note for note in comp.ignored)
    assert any("the same file as an earlier input" in note for note in comp.ignored)
    labels = sorted(ov.variant)
    assert any("4 images" in label for label in labels) and any("threads=1" in label for label in labels)
    four = ov[ov.variant.str.contains("4 images")].iloc[0]
    assert "other dataset" in four["baseline_match"]  # its ΔmAP is against ort on all 6 images: said so
    full = ov[ov.variant.str.contains("6 images")].iloc[0]
    assert full["baseline_match"] == "" and full["delta_map"] == pytest.approx(0.0, abs=0.002)
    result = cli("report", *inputs, "--out", root / "rep.md")
    assert result.exit_code == 0, result.output
    assert "note: ignored" in result.stderr and "README.md" in result.stderr
    page = (root / "rep.md").read_text()
    assert "counted once" in page and "never averaged as repeats" in page
