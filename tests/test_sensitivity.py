"""harness sensitivity end to end on real models the tests build (ONNX Runtime and OpenVINO run them).

The main fixture is the bundled demo detector with one deliberately quantization-hostile node
(tests/tinymodel.py: write_hostile_demo): fp32 detections are unchanged, the all-int8 model loses
about 0.35 mAP, and only keeping that node in float gives it back. The search must rank it first by
ΔmAP, restore it, and write it to exclude.txt, whatever tensor SQNR says.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pandas as pd
import pytest

from harness.core.errors import HarnessError
from harness.data.demo import DEMO_PROFILE, DEMO_SEED
from harness.data.synthetic import generate_dataset
from harness.model.onnx_model import inspect_onnx
from harness.profiles import load_profile
from harness.sensitivity.run import SensitivityRequest, run_sensitivity
from harness.sensitivity.search import SearchSettings
from harness.sensitivity.store import RESULTS_FILE, read_results
from tests.test_cli_errors import assert_one_line_error, cli
from tests.tinymodel import HOSTILE_TARGET, write_hostile_demo, write_tiny_dataset, write_tiny_model, write_tiny_profile

SUBSET = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic calibration images (a split the demo never evaluates) and a 16-image search subset."""
    root = tmp_path_factory.mktemp("sens")
    calib, _ = generate_dataset(root / "calib", num_images=16, seed=DEMO_SEED, split="calib")
    images, ann = generate_dataset(root / "val", num_images=SUBSET, seed=DEMO_SEED, split="val")
    return {"calib": calib, "images": images, "ann": ann, "root": root,
            "hostile": write_hostile_demo(root / "hostile.onnx")}


def sens_args(data, out, *extra, model=None, **flags):
    base = {"-m": model or data["hostile"], "-p": DEMO_PROFILE, "--calib": data["calib"], "--data": data["images"],
            "--ann": data["ann"], "--subset": SUBSET, "--resamples": 200, "--bench-seconds": 0.2, "--out": out,
            **flags}
    flat = []
    for key, value in base.items():
        if value is not None:
            flat += [key, value]
    return ["sensitivity", *flat, *extra]


@pytest.fixture(scope="module")
def search(data):
    """One full search on ort: every quantized node scored in both modes (top-k covers all 29)."""
    out = data["root"] / "search"
    result = cli(*sens_args(data, out, **{"--max-drop": 0.02}))
    assert result.exit_code == 0, (result.output, result.stderr)
    return {"out": out, "result": result, "csv": pd.read_csv(out / "sensitivity.csv")}


@pytest.mark.slow
def test_the_hostile_node_is_ranked_first_and_ends_up_in_exclude_txt(search):
    table = search["csv"]
    first = table.sort_values("rank").iloc[0]
    assert first["name"] == HOSTILE_TARGET
    # exclude mode: keeping it in float buys back a real, large share of mAP
    assert first["exclude_dmap"] > 0.2 and first["exclude_low"] > 0 and first["exclude_verdict"] == "hurts"
    # include mode: quantizing it alone already costs mAP, outside noise
    assert first["include_dmap"] < -0.1 and first["include_high"] < 0
    assert first["decision"] == "float" and first["restore_step"] == 1
    others = table[table["name"] != HOSTILE_TARGET]
    assert (others["map_cost"].dropna() < first["map_cost"] / 4).all()
    listed = [line for line in (search["out"] / "exclude.txt").read_text().splitlines() if not line.startswith("#")]
    assert listed == [HOSTILE_TARGET]
    assert "within --max-drop 0.02" in search["result"].stdout


@pytest.mark.slow
def test_tensor_sqnr_does_not_single_it_out(search):
    """The reason to rank by mAP: the hostile node's own SQNR is not among the worst few."""
    table = search["csv"].sort_values("sqnr_db")
    assert HOSTILE_TARGET not in list(table["name"][:3])
    md = (search["out"] / "sensitivity.md").read_text()
    assert "## Tensor error vs mAP" in md and "Spearman" in md and "top-5:" in md


@pytest.mark.slow
def test_the_final_model_is_what_quantize_exclude_from_writes(search, data, tmp_path):
    out = search["out"]
    final = onnx.load(str(out / "model.qdq.onnx"))
    producer = {o: n for n in final.graph.node for o in n.output}
    hostile = next(n for n in final.graph.node if n.name == HOSTILE_TARGET)
    assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in hostile.input)
    assert inspect_onnx(out / "model.qdq.onnx").precision == "int8"
    record = json.loads((out / "quant.json").read_text())
    assert record["excluded"]["nodes"] == [HOSTILE_TARGET]
    result = cli("quantize", "-m", data["hostile"], "-p", DEMO_PROFILE, "--calib", data["calib"],
                 "--exclude-from", out / "exclude.txt", "--out", tmp_path / "q")
    assert result.exit_code == 0, (result.output, result.stderr)
    again = onnx.load(str(tmp_path / "q" / "model.qdq.onnx"))
    assert [(n.op_type, list(n.input)) for n in again.graph.node] == [(n.op_type, list(n.input)) for n in final.graph.node]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in again.graph.initializer}
    for init in final.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init), inits[init.name])


@pytest.mark.slow
def test_outputs_hold_the_pareto_table_and_plot(search):
    out = search["out"]
    md = (out / "sensitivity.md").read_text()
    assert "## Greedy restore (Pareto table)" in md and f"+ {HOSTILE_TARGET}" in md
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, records = read_results(out / RESULTS_FILE)
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 1 and steps[0]["float"] == [HOSTILE_TARGET] and steps[0]["fps"] > 0
    assert header["identity"]["target"] == "ort"
    variants = [r for r in records if r["kind"] == "variant"]
    # 29 single nodes and the two type groups (the demo's 4 Adds, 2 MaxPools), both modes, each once
    assert len(variants) == 2 * (29 + 2) and len({r["key"] for r in variants}) == len(variants)
    assert {r["node"] for r in variants if r["node"].startswith("type:")} == {"type:Add", "type:MaxPool"}
    groups = pd.read_csv(out / "sensitivity.csv").set_index("name")
    assert groups.loc["type:Add", "kind"] == "group of 4" and groups.loc["type:Add", "decision"] == "int8"


class Interrupt:
    """A progress sink that raises KeyboardInterrupt after `after` variants, where Ctrl-C would land."""

    def __init__(self, after: int):
        self.after = after
        self.seen = 0

    def task(self, description, total):
        from contextlib import contextmanager

        @contextmanager
        def run():
            def advance(n=1):
                if description.startswith("variants"):
                    self.seen += n
                    if self.seen > self.after:
                        raise KeyboardInterrupt
            yield advance
        return run()

    def message(self, text):
        pass


@pytest.mark.slow
def test_interrupted_search_resumes_and_refuses_another_identity(data, tmp_path):
    profile = load_profile(DEMO_PROFILE)
    settings = SearchSettings(subset=8, mode="exclude", top_k=4, max_drop=0.02, resamples=100, bench_seconds=0.1,
                              calib_images=8)
    out = tmp_path / "s"
    request = SensitivityRequest(data["hostile"], profile, data["calib"], data["images"], data["ann"], out, settings)
    with pytest.raises(KeyboardInterrupt):
        run_sensitivity(request, Interrupt(after=2))
    _, records = read_results(out / RESULTS_FILE)
    done = {r["key"] for r in records if r["kind"] == "variant"}
    assert len(done) == 3  # the third variant finished before the interrupt landed in its progress call
    with pytest.raises(HarnessError, match="is not empty: pass --resume"):
        run_sensitivity(request)
    resumed = run_sensitivity(dataclasses.replace(request, resume=True))
    _, records = read_results(out / RESULTS_FILE)
    keys = [r["key"] for r in records if r["kind"] == "variant"]
    # 4 shortlisted nodes and 2 type groups, each measured once: the first three were not measured again
    assert len(keys) == 6 and len(set(keys)) == 6 and done <= set(keys)
    assert len(resumed.shortlisted) == 4 and len(resumed.variants) == 6
    other = dataclasses.replace(settings, calib_images=6)
    with pytest.raises(HarnessError, match="another search \\(calibration differs"):
        run_sensitivity(dataclasses.replace(request, settings=other, resume=True))


def test_bad_input_is_one_line(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli(*sens_args(data, tmp_path / "a", **{"--calib": empty})), "holds no images")
    assert_one_line_error(cli(*sens_args(data, tmp_path / "b", **{"--max-drop": "-0.1"})), "--max-drop", ">= 0")
    assert_one_line_error(cli(*sens_args(data, tmp_path / "c", **{"--target": "trt"})), "--target", "ort, ov")
    assert_one_line_error(cli(*sens_args(data, tmp_path / "d", **{"--mode": "exlude"})), "did you mean 'exclude'")
    nothing = write_tiny_model(tmp_path / "gfl.onnx")  # a 3->34 conv: no TensorRT int8 kernel, nothing to place
    images, ann = write_tiny_dataset(tmp_path / "tiny")
    tiny = {"-p": write_tiny_profile(tmp_path / "tiny.toml"), "--data": images, "--ann": ann}
    assert_one_line_error(cli(*sens_args(data, tmp_path / "e", model=nothing, **tiny)), "gfl.onnx: nothing to quantize")
    assert not (tmp_path / "e" / "model.qdq.onnx").exists()


@pytest.mark.slow
def test_scoring_runs_on_openvino_and_finds_the_same_node(data, tmp_path):
    out = tmp_path / "ov"
    result = cli(*sens_args(data, out, **{"--target": "ov", "--mode": "include", "--top-k": 2, "--max-drop": 0.02}))
    assert result.exit_code == 0, (result.output, result.stderr)
    header, records = read_results(out / RESULTS_FILE)
    assert header["identity"]["target"] == "ov"
    include = {r["node"]: r for r in records if r["kind"] == "variant"}
    # crushed first, then the worst-SQNR head; and the type groups
    assert set(include) == {HOSTILE_TARGET, "/model/outs.1/Conv", "type:Add", "type:MaxPool"}
    assert include[HOSTILE_TARGET]["delta"] < -0.1 and include[HOSTILE_TARGET]["high"] < 0
    listed = [line for line in (out / "exclude.txt").read_text().splitlines() if not line.startswith("#")]
    assert listed == [HOSTILE_TARGET]


@pytest.mark.slow
def test_no_type_groups_scores_only_the_shortlist(data, tmp_path):
    out = tmp_path / "nogroups"
    result = cli(*sens_args(data, out, "--no-type-groups", **{"--mode": "include", "--top-k": 1, "--max-drop": 0.02}))
    assert result.exit_code == 0, (result.output, result.stderr)
    _, records = read_results(out / RESULTS_FILE)
    assert [r["key"] for r in records if r["kind"] == "variant"] == [f"include:{HOSTILE_TARGET}"]
