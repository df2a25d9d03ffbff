"""The batch-N rewrite of fixed-batch-1 ONNX graphs (harness.model.batch_rewrite).

Small graphs built here check each rewrite rule against ONNX Runtime running the original at batch 1
(the independent reference: stacking N batch-1 runs is what batch N must give); the real exports of
../shared are checked on a few coco-tiny images (the full 80-image mAP figures are in docs/models.md).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.images.preprocess import prepare_batch
from harness.model.batch_rewrite import (
    BatchRewriteError,
    batch_model,
    check_shapes,
    compare_batches,
    rewrite_batch,
)
from harness.profiles import load_profile
from tests.conftest import need_shared


def _model(nodes, inits, out_shape, in_shape=(1, 4, 6, 6), opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _stacked(model, x):
    """N runs of the batch-1 model, stacked: what the batch-N model must return."""
    return np.concatenate([_run(model, x[i:i + 1]) for i in range(x.shape[0])])


def _sample(batch, shape=(4, 6, 6)):
    return np.random.default_rng(batch).normal(size=(batch, *shape)).astype(np.float32)


def _operand(model, node_index, input_index):
    graph = model.graph
    name = graph.node[node_index].input[input_index]
    return numpy_helper.to_array(next(i for i in graph.initializer if i.name == name)).tolist()


def test_reshape_with_batch_one_copies_the_batch_and_matches_batch_one_runs():
    # channel shuffle as ShuffleNet exports it: [1, 2, 2, 6, 6] -> transpose -> [1, -1, 6, 6]
    model = _model([helper.make_node("Reshape", ["x", "s1"], ["a"]),
                    helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]),
                    helper.make_node("Reshape", ["b", "s2"], ["y"])],
                   [_const("s1", [1, 2, 2, 6, 6]), _const("s2", [1, -1, 6, 6])], (1, 4, 6, 6))
    rewritten, changed = rewrite_batch(model, 3)
    assert len(changed) == 2
    assert _operand(rewritten, 0, 1) == [0, 2, 2, 6, 6] and _operand(rewritten, 2, 1) == [0, -1, 6, 6]
    check_shapes(rewritten, model, 3)
    x = _sample(3)
    np.testing.assert_array_equal(_run(rewritten, x), _stacked(model, x))
    # the original graph at batch 3 (only its input made bigger) is what the rewrite fixes
    assert compare_batches(model.SerializeToString(), rewritten.SerializeToString(), x) == 0.0


def test_allowzero_reshape_gets_the_computed_batch():
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], [_const("s", [1, 4, 36])],
                   (1, 4, 36), opset=14)
    rewritten, _ = rewrite_batch(model, 2)
    assert _operand(rewritten, 0, 1) == [2, 4, 36]
    x = _sample(2)
    np.testing.assert_array_equal(_run(rewritten, x), _stacked(model, x))


def test_resize_sizes_and_a_batch_slice_follow_the_batch():
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    scales = numpy_helper.from_array(np.array([], np.float32), "scales")
    model = _model([helper.make_node("Resize", ["x", "roi", "scales", "sizes"], ["r"], mode="nearest"),
                    helper.make_node("Slice", ["r", "starts", "ends", "axes"], ["y"])],
                   [roi, scales, _const("sizes", [1, 4, 12, 12]), _const("starts", [0]), _const("ends", [1]),
                    _const("axes", [0])], (1, 4, 12, 12))
    rewritten, changed = rewrite_batch(model, 2)
    assert len(changed) == 2 and _operand(rewritten, 0, 3) == [2, 4, 12, 12]
    x = _sample(2)
    np.testing.assert_array_equal(_run(rewritten, x), _stacked(model, x))


def test_constants_that_do_not_carry_the_batch_are_left_alone():
    """A bias reshaped to [1, C, 1, 1] for broadcasting is not the batch: changing it would be wrong."""
    model = _model([helper.make_node("Reshape", ["bias", "s"], ["b"]), helper.make_node("Add", ["x", "b"], ["y"])],
                   [numpy_helper.from_array(np.arange(4, dtype=np.float32), "bias"), _const("s", [1, 4, 1, 1])],
                   (1, 4, 6, 6))
    rewritten, changed = rewrite_batch(model, 3)
    assert changed == [] and _operand(rewritten, 0, 1) == [1, 4, 1, 1]
    x = _sample(3)
    np.testing.assert_array_equal(_run(rewritten, x), _stacked(model, x))


def test_outputs_without_a_batch_axis_are_refused_with_the_reason():
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_const("s", [4, -1])], (4, 36))
    with pytest.raises(BatchRewriteError, match=r"output y has no batch axis \(\[4, 36\] at batch 1\)"):
        rewrite_batch(model, 2)


def test_shape_check_names_an_output_that_does_not_follow():
    """A graph whose batch is a hard-coded 1 in a place the rules do not touch: shape inference says so."""
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_const("s", [1, 144])], (1, 144))
    rewritten, _ = rewrite_batch(model, 2)
    # undo the rewrite: the constant says batch 1 again
    rewritten.graph.node[0].input[1] = "s"
    with pytest.raises(BatchRewriteError, match="shape inference"):
        check_shapes(rewritten, model, 2)


def test_run_check_catches_a_graph_that_mixes_the_images_of_a_batch():
    """x - mean over the batch is 0 at batch 1 but not at batch N: shapes agree, values do not."""
    model = _model([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                    helper.make_node("Sub", ["x", "m"], ["y"])], [], (1, 4, 6, 6))
    rewritten, _ = rewrite_batch(model, 2)
    check_shapes(rewritten, model, 2)
    with pytest.raises(BatchRewriteError, match="differs from batch-1 runs by up to"):
        compare_batches(model.SerializeToString(), rewritten.SerializeToString(), _sample(2))


def test_cached_by_model_hash_and_batch(tmp_path):
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_const("s", [1, 4, 36])], (1, 4, 36))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    first = batch_model(path, 2, None, folder=tmp_path / "cache")
    again = batch_model(path, 2, None, folder=tmp_path / "cache")
    other = batch_model(path, 3, None, folder=tmp_path / "cache")
    assert not first.cached and again.cached and not other.cached
    assert first.path == again.path != other.path and first.checked_on == "seeded random input"
    x = _sample(3)
    np.testing.assert_array_equal(_run(onnx.load(other.path), x), _stacked(model, x))
    onnx.save(_model([helper.make_node("Reshape", ["x", "s"], ["y"])], [_const("s", [1, 144])], (1, 144)), str(path))
    assert not batch_model(path, 2, None, folder=tmp_path / "cache").cached  # another file: another key


REAL = ["nanodet-m-416", "picodet-s-320-legacy", "yolov5n-640", "yolox-nano-416"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_exports_rewrite_to_batch_4_on_coco_images(tmp_path, coco_tiny, name):
    model = need_shared("models", f"{name}.onnx")
    images = sorted(Path(coco_tiny[0]).glob("*.jpg"))[:4]
    sample = prepare_batch(list(enumerate(images)), load_profile(name).input, None, False).tensor
    result = batch_model(model, 4, sample, checked_on="4 real images", folder=tmp_path)
    assert result.rewritten and result.max_abs_diff <= 1e-3
    got = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"]).run(None, {
        onnx.load(result.path, load_external_data=False).graph.input[0].name: sample})
    assert all(o.shape[0] == 4 for o in got)


@pytest.mark.slow
def test_real_export_without_batch_axis_is_refused(tmp_path):
    model = need_shared("models", "nanodet-m-320.onnx")
    with pytest.raises(BatchRewriteError, match="output cls_score0 has no batch axis"):
        batch_model(model, 4, None, folder=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_run_at_batch_4_gives_batch_1_map_on_both_cpu_targets(tmp_path, coco_tiny, name):
    """The rows a user gets from `run -t ort,ov --bs 1,4` on a fixed-batch-1 export (4 coco-tiny images;
    the 80-image figures for bs 1, 4, 8 are in docs/models.md)."""
    from harness.measure.results import ResultsStore
    from harness.measure.runner import RunConfig, run

    model = need_shared("models", f"{name}.onnx")
    images, ann = coco_tiny
    for target in ("ort", "ov"):
        config = RunConfig(target=target, model=str(model), profile=load_profile(name), images_dir=images,
                           ann_path=ann, batch_sizes=[1, 4], limit=4, bench_seconds=0.05, max_seconds=0.1,
                           warmup_seconds=0.0, min_iterations=2)
        one, four = run(config, ResultsStore(tmp_path / target, env={}))
        assert one.ok and four.ok, (one.error, four.error)
        assert (one.batch_mode, four.batch_mode) == ("fixed", "rewritten")
        assert four.batch_rewrite["max_abs_diff"] <= 1e-3 and four.batch_rewrite["checked_on"] == "4 real images"
        assert four.map == pytest.approx(one.map, abs=0.001) and one.images == four.images == 4
