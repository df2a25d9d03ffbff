"""The parts of harness sensitivity on their own: tensor-error probe, structure, shortlist, ranking,
agreement, Pareto front, results file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from harness.core.errors import HarnessError
from harness.core.folders import OutputFolder
from harness.data.demo import DEMO_PROFILE, DEMO_SEED
from harness.data.synthetic import generate_dataset
from harness.profiles import load_profile
from harness.quant import calibrate, write_qdq
from harness.quant.calib_data import calibration_batches, calibration_images
from harness.sensitivity.agreement import agreement, average_ranks, spearman
from harness.sensitivity.pareto import Point, pareto_front
from harness.sensitivity.search import cost, drop_holds, float_set, helps, restore_order, type_groups
from harness.sensitivity.shortlist import shortlist
from harness.sensitivity.store import FORMAT, ResultsFile, read_results
from harness.sensitivity.structure import crushed_share, describe_nodes, head_nodes
from harness.sensitivity.tensor_error import probe, weight_errors
from tests.tinymodel import HOSTILE_TARGET, write_hostile_demo, write_tiny_convnet


@pytest.fixture(scope="module")
def hostile_probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    calib, _ = generate_dataset(root / "calib", num_images=8, seed=DEMO_SEED, split="calib")
    model = write_hostile_demo(root / "hostile.onnx")
    spec = load_profile(DEMO_PROFILE).input
    with calibrate(model, calibration_images(calib, 8), spec, "percentile") as cal:
        qdq = write_qdq(cal, root / "int8.onnx")
        batches = list(calibration_batches(calibration_images(calib, 4), spec, 1))
        found = probe(cal.prepared.path, qdq.path, batches, cal.prepared.input_name, root)
        shapes = describe_nodes(onnx.load(str(cal.prepared.path)), cal.placement.quantized, found.float_activations,
                                found.activation_inputs, found.scales)
        yield {"cal": cal, "qdq": qdq, "found": found, "shapes": shapes}


def test_probe_measures_every_quantized_node(hostile_probe):
    cal, found = hostile_probe["cal"], hostile_probe["found"]
    # every quantized node, plus nodes that read a shared Q/DQ pair's output (here the FPN's Resize)
    assert set(cal.placement.quantized) <= set(found.errors)
    conv = found.errors[HOSTILE_TARGET]
    assert conv.weight_db is not None and conv.local_db is not None and conv.activation_db is not None
    add = found.errors["/model/Add"]
    assert add.weight_db is None and add.local_db is not None  # two activation inputs, no weight
    assert all(e.worst_db is not None and np.isfinite(e.worst_db) for e in found.errors.values())


def test_weight_sqnr_is_the_quantize_dequantize_error(tmp_path):
    model = write_tiny_convnet(tmp_path / "t.onnx")
    from onnx import numpy_helper

    qdq = onnx.load(str(model))
    weight = numpy_helper.to_array(next(i for i in qdq.graph.initializer if i.name == "c1_w")).astype(np.float64)
    scale = np.abs(weight).reshape(16, -1).max(axis=1) / 127
    q = onnx.helper.make_node("QuantizeLinear", ["c1_w", "s", "z"], ["c1_w_q"], axis=0)
    qdq.graph.node.append(q)
    qdq.graph.initializer.extend([numpy_helper.from_array(scale.astype(np.float32), "s"),
                                  numpy_helper.from_array(np.zeros(16, np.int8), "z")])
    restored = np.round(weight / scale.reshape(16, 1, 1, 1)) * scale.reshape(16, 1, 1, 1)
    expected = 20 * np.log10(np.linalg.norm(weight) / np.linalg.norm(weight - restored))
    assert weight_errors(qdq)["c1_w"] == pytest.approx(expected, abs=0.05)


def test_crushed_channels_flag_the_hostile_node_that_sqnr_misses(hostile_probe):
    shapes, found = hostile_probe["shapes"], hostile_probe["found"]
    assert shapes[HOSTILE_TARGET].crushed > 0.9 and shapes[HOSTILE_TARGET].outlier
    assert [n for n, s in shapes.items() if s.outlier] == [HOSTILE_TARGET]
    by_sqnr = sorted(found.errors, key=lambda n: found.errors[n].worst_db)
    assert by_sqnr.index(HOSTILE_TARGET) >= 3  # its own SQNR does not single it out
    short = shortlist(hostile_probe["cal"].placement.quantized, shapes, found.errors, top_k=2)
    assert short[0].name == HOSTILE_TARGET and short[0].reasons == ("crushed-channels",)
    assert short[1].reasons == ("head",)


def test_crushed_share_and_head_nodes(tmp_path):
    activation = np.ones((2, 4, 3, 3), np.float32)
    activation[:, 0] *= 100.0  # one wide channel
    activation[:, 3] = 0.0  # a dead channel is not counted
    assert crushed_share(activation, 100.0 / 127) == pytest.approx(2 / 3)
    assert crushed_share(activation, 1.0 / 127) == 0.0
    assert crushed_share(activation[:, :, 0, 0], 1.0) is None  # no channel axis to speak of
    model = onnx.load(str(write_tiny_convnet(tmp_path / "t.onnx")))
    assert head_nodes(model) == {"c4", "sigmoid"}


def record(mode, delta, low, high):
    return {"mode": mode, "delta": delta, "low": low, "high": high}


def test_cost_helps_and_restore_order():
    groups = {
        "a": {"exclude": record("exclude", 0.02, 0.01, 0.03), "include": record("include", -0.01, -0.02, 0.005)},
        "b": {"exclude": record("exclude", 0.05, -0.01, 0.1), "include": None},  # larger, but inside noise
        "c": {"exclude": record("exclude", -0.01, -0.02, 0.0), "include": record("include", 0.001, -0.001, 0.003)},
        "d": {"include": record("include", -0.2, -0.3, -0.1)},
    }
    assert cost(groups["a"]) == pytest.approx(0.02) and cost(groups["d"]) == pytest.approx(0.2)
    assert helps(groups["a"]["exclude"]) and not helps(groups["a"]["include"]) and helps(groups["d"]["include"])
    assert restore_order(groups) == ["d", "a", "b"]  # real costs first; c costs nothing and is left out
    assert float_set("exclude", ("a",), ("a", "b")) == {"a"} and float_set("include", ("a",), ("a", "b")) == {"b"}
    assert float_set("include", ("a", "b"), ("a", "b", "c")) == {"c"}


def test_type_groups_leave_compute_ops_and_single_nodes_out():
    types = {"c1": "Conv", "m1": "Mul", "c2": "Conv", "m2": "Mul", "a1": "Add", "p1": "MaxPool", "p2": "MaxPool",
             "g1": "Gemm", "g2": "Gemm"}
    assert type_groups(tuple(types), types) == {"type:Mul": ("m1", "m2"), "type:MaxPool": ("p1", "p2")}
    assert drop_holds(0.33, 0.3201, 0.01) and not drop_holds(0.33, 0.3199, 0.01) and not drop_holds(0.33, None, 0.01)


def test_agreement_overlap_and_spearman():
    names = [f"n{i}" for i in range(12)]
    sqnr = {n: float(i) for i, n in enumerate(names)}  # n0 worst
    same = agreement(sqnr, {n: 12.0 - i for i, n in enumerate(names)})  # n0 costliest: same order
    assert same.overlap == {5: 5, 10: 10} and same.spearman == pytest.approx(1.0)
    reverse = agreement(sqnr, {n: float(i) for i, n in enumerate(names)})
    assert reverse.overlap == {5: 0, 10: 8} and reverse.spearman == pytest.approx(-1.0)
    few = agreement({"a": 1.0, "b": None}, {"a": 0.1, "b": 0.2})
    assert few.nodes == 1 and few.overlap == {} and few.spearman is None


def test_pareto_front():
    pts = [Point("fp32", 9, "0/9", 0.33, 10.0, None, None, None), Point("int8", 0, "9/9", 0.10, 30.0, -0.23, -0.3, -0.2),
           Point("+ a", 1, "8/9", 0.32, 25.0, -0.01, -0.02, 0.0), Point("+ b", 2, "7/9", 0.31, 20.0, -0.02, -0.03, 0.0),
           Point("+ c", 2, "7/9", 0.40, 40.0, 0.07, 0.0, 0.1, kept=False)]
    assert pareto_front(pts) == {0, 1, 2}  # b is beaten by a on both; c was not kept


def test_results_file_resume_rules(tmp_path):
    out = tmp_path / "s"
    identity = {"model_sha256": "a" * 64, "calibration": {"count": 8, "method": "percentile"}, "target": "ort"}
    folder = OutputFolder(out)
    store = ResultsFile.open(folder, identity, resume=False, overwrite=False)
    store.add({"kind": "variant", "key": "exclude:x", "map": 0.3})
    with open(store.path, "a") as handle:
        handle.write('{"kind": "variant", "key": "exclude:y", "ma')  # killed mid-line
    header, records = read_results(store.path)
    assert header["format"] == FORMAT and [r["key"] for r in records] == ["exclude:x"]
    again = ResultsFile.open(folder, identity, resume=True, overwrite=False)
    assert again.get("exclude:x")["map"] == 0.3 and again.get("exclude:y") is None
    with pytest.raises(HarnessError, match="is not empty: pass --resume"):
        ResultsFile.open(folder, identity, resume=False, overwrite=False)
    other = {**identity, "calibration": {"count": 6, "method": "percentile"}}
    with pytest.raises(HarnessError, match=r"another search \(calibration differs: count=8 in the results vs count=6"):
        ResultsFile.open(folder, other, resume=True, overwrite=False)
    lines = store.path.read_text().splitlines()
    store.path.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(HarnessError, match="line 2 is not JSON"):
        ResultsFile.open(folder, identity, resume=True, overwrite=False)
    fresh = ResultsFile.open(folder, other, resume=False, overwrite=True)
    assert fresh.records == {} and json.loads(fresh.path.read_text())["identity"] == other
    folder.close()


def test_average_ranks_share_ties():
    assert average_ranks([10.0, 20.0, 20.0, 5.0, 20.0]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]


def test_spearman_matches_a_hand_computation_with_ties():
    """x = [1, 2, 2, 3], y = [4, 1, 3, 2]: ranks x = [1, 2.5, 2.5, 4], y = [4, 1, 3, 2], both with mean 2.5;
    deviations [-1.5, 0, 0, 1.5] and [1.5, -1.5, 0.5, -0.5]: sum of products -3, sums of squares 4.5 and 5,
    so rho = -3 / sqrt(22.5)."""
    assert spearman([1, 2, 2, 3], [4, 1, 3, 2]) == pytest.approx(-3 / np.sqrt(22.5), abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # no spread on one side: undefined, not 0
    tied = agreement({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.1, "b": 0.2, "c": 0.3})
    assert tied.nodes == 3 and tied.spearman is None
