"""harness.quant on tiny real models: ONNX Runtime's real quantizer, real Q/DQ graphs, OpenVINO loading them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from harness.core.errors import HarnessError
from harness.core.folders import OWN_FILES
from harness.data.synthetic import generate_dataset
from harness.profiles import load_profile
from harness.quant import calibrate, write_qdq
from harness.quant.calib_data import calibration_images
from harness.quant.exclusions import ExclusionRules, read_exclude_file, resolve
from harness.quant.placement import place
from tests.tinymodel import write_tiny_convnet, write_tiny_profile

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """Six synthetic images from a split the demo never evaluates on."""
    images, _ = generate_dataset(tmp_path_factory.mktemp("calib"), num_images=6, seed=5, split="calib")
    return images


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_profile(write_tiny_profile(tmp_path_factory.mktemp("profile") / "tiny.toml")).input


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_convnet(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def cal(tiny, calib_dir, spec):
    counter: list = []
    with calibrate(tiny, calibration_images(calib_dir, None), spec, "minmax", counter=counter) as calibration:
        calibration.counter = counter[0]
        yield calibration


def dq_inputs(model: onnx.ModelProto) -> dict[str, list[str]]:
    """node name -> the inputs it reads from a DequantizeLinear."""
    producer = {out: node for node in model.graph.node for out in node.output}
    return {node.name: [i for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"]
            for node in model.graph.node if node.op_type not in QDQ}


def test_qdq_nodes_are_symmetric_int8_with_per_channel_conv_weights(cal, tmp_path):
    written = write_qdq(cal, tmp_path / "q.onnx")
    model = onnx.load(str(written.path))
    inits = {init.name: init for init in model.graph.initializer}
    qdq = [node for node in model.graph.node if node.op_type in QDQ]
    assert written.qdq_nodes == len(qdq) > 0
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == onnx.TensorProto.INT8
        assert not np.any(numpy_helper.to_array(zero))
    # every Conv reads a per-channel DQ'd weight on axis 0 (one scale per output channel)
    producer = {out: node for node in model.graph.node for out in node.output}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 5
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        assert axis == 0
        assert numpy_helper.to_array(inits[dq.input[1]]).shape == (16,)
        assert producer[conv.input[0]].op_type == "DequantizeLinear"  # activation input quantized too
    # outputs of compute ops are not quantized (ModelOpt's placement), Sigmoid stays float
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    assert producer[sigmoid.input[0]].op_type == "Conv"
    ort.InferenceSession(str(written.path))


def test_per_tensor_writes_one_scale_per_weight(cal, tmp_path):
    model = onnx.load(str(write_qdq(cal, tmp_path / "q.onnx", per_channel=False).path))
    inits = {init.name: init for init in model.graph.initializer}
    weight_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    assert weight_q and all(numpy_helper.to_array(inits[n.input[1]]).size == 1 for n in weight_q)


def test_quantized_model_tracks_fp32_on_ort_and_openvino(cal, tiny, tmp_path, calib_dir, spec):
    import openvino as ov

    from harness.quant.calib_data import calibration_batches

    written = write_qdq(cal, tmp_path / "q.onnx")
    batch = next(iter(calibration_batches(calibration_images(calib_dir, 2), spec, 1)))
    reference = ort.InferenceSession(str(tiny)).run(None, {"image": batch})[0]
    int8_ort = ort.InferenceSession(str(written.path)).run(None, {"image": batch})[0]
    compiled = ov.Core().compile_model(str(written.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    int8_ov = compiled(batch)[0]

    def sqnr(a, b):
        return 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))

    assert sqnr(reference, int8_ort) > 25
    assert sqnr(reference, int8_ov) > 25
    assert not np.array_equal(reference, int8_ort)  # really quantized
    ops = [op.get_type_name() for op in compiled.get_runtime_model().get_ops()]
    assert ops  # compiled
    assert any(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(written.path)).get_ops())


def test_write_many_reuses_one_calibration(cal, tmp_path):
    served = cal.counter.served
    assert served == len(cal.counter) == 6  # one pass over the six images at calibration
    a = write_qdq(cal, tmp_path / "a.onnx")
    b = write_qdq(cal, tmp_path / "b.onnx", exclude={"c4"})
    c = write_qdq(cal, tmp_path / "c.onnx", exclude={"c3a", "add"})
    assert cal.counter.served == served  # no image was run again
    blobs = {p.read_bytes() for p in (a.path, b.path, c.path)}
    assert len(blobs) == 3
    assert a.qdq_nodes > b.qdq_nodes and a.qdq_nodes > c.qdq_nodes

    sa, sb = activation_scales(a.path), activation_scales(b.path)
    assert set(sb) < set(sa) and all(sa[t] == sb[t] for t in sb)  # same ranges, fewer tensors


def test_exclusion_removes_exactly_the_named_nodes_qdq(cal, tmp_path):
    base = dq_inputs(onnx.load(str(write_qdq(cal, tmp_path / "a.onnx").path)))
    # c3a shares relu2's Q/DQ pair with c3b: excluding c3a must give it the float tensor back
    model = onnx.load(str(write_qdq(cal, tmp_path / "b.onnx", exclude={"c3a"}).path))
    after = dq_inputs(model)
    assert base["c3a"] and after["c3a"] == []
    assert next(n for n in model.graph.node if n.name == "c3a").input[0] == "r2"
    assert {k: v for k, v in after.items() if k != "c3a"} == {k: v for k, v in base.items() if k != "c3a"}
    ort.InferenceSession(str(tmp_path / "b.onnx"))


def test_excluding_every_quantizable_node_is_refused(cal, tmp_path):
    with pytest.raises(HarnessError, match="nothing left to quantize"):
        write_qdq(cal, tmp_path / "q.onnx", exclude=set(cal.placement.quantized))
    with pytest.raises(HarnessError, match="not in the model: nope"):
        write_qdq(cal, tmp_path / "q.onnx", exclude={"nope"})


def test_exclusion_rules_resolve_and_refuse_what_matches_nothing(tmp_path):
    nodes = [("c1", "Conv"), ("relu1", "Relu"), ("c3a", "Conv"), ("c3b", "Conv"), ("sigmoid", "Sigmoid")]
    got = resolve(ExclusionRules(patterns=("^c3",), op_types=("Sigmoid",)), nodes)
    assert got.nodes == {"c3a", "c3b", "sigmoid"}
    with pytest.raises(HarnessError, match="--exclude 'head' matches no node"):
        resolve(ExclusionRules(patterns=("head",)), nodes)
    with pytest.raises(HarnessError, match="no Softmax node"):
        resolve(ExclusionRules(op_types=("Softmax",)), nodes)
    with pytest.raises(HarnessError, match="not a valid regular expression"):
        resolve(ExclusionRules(patterns=("(",)), nodes)
    listing = tmp_path / "exclude.txt"
    listing.write_text("# from sensitivity\nc1\n\nrelu1  # activation\n")
    assert read_exclude_file(listing) == ("c1", "relu1")
    assert resolve(ExclusionRules(names=read_exclude_file(listing), names_source=str(listing)), nodes).nodes == {"c1", "relu1"}
    listing.write_text("c1\nc9\n")
    with pytest.raises(HarnessError, match="1 name\\(s\\) are not nodes of the model: c9"):
        resolve(ExclusionRules(names=read_exclude_file(listing), names_source=str(listing)), nodes)


def test_opset_12_model_is_upgraded_and_loads_in_ort_and_openvino(tmp_path, calib_dir, spec):
    import openvino as ov

    source = write_tiny_convnet(tmp_path / "tiny12.onnx", opset=12)
    with calibrate(source, calibration_images(calib_dir, 3), spec) as calibration:
        assert (calibration.prepared.opset_before, calibration.prepared.opset_after) == (12, 13)
        written = write_qdq(calibration, tmp_path / "q.onnx")
    model = onnx.load(str(written.path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 13
    assert any({a.name for a in n.attribute} & {"axis"} for n in model.graph.node if n.op_type == "DequantizeLinear")
    ort.InferenceSession(str(written.path))
    ov.Core().compile_model(str(written.path), "CPU")


def activation_scales(path) -> dict[str, float]:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return {n.input[0]: float(numpy_helper.to_array(inits[n.input[1]]))
            for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_entropy_and_percentile_give_other_ranges(tiny, calib_dir, spec, tmp_path):
    images = calibration_images(calib_dir, 4)
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        with calibrate(tiny, images, spec, method) as calibration:
            scales[method] = activation_scales(write_qdq(calibration, tmp_path / f"{method}.onnx").path)
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    # min-max covers every value seen, so a histogram method never asks for a wider range
    for method in ("entropy", "percentile"):
        assert all(scales[method][t] <= scales["minmax"][t] * 1.0001 for t in scales["minmax"])
    assert scales["percentile"] != scales["minmax"]


def test_calibration_input_errors_are_one_line(tmp_path, spec, tiny):
    with pytest.raises(HarnessError, match="calibration folder not found"):
        calibration_images(tmp_path / "missing", 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="holds no images"):
        calibration_images(tmp_path / "empty", 10)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.jpg").write_bytes(b"")
    with pytest.raises(HarnessError, match="calibration image .*ok.jpg: empty file"):
        calibration_images(bad, 10)
    few = tmp_path / "few"
    generate_dataset(few, num_images=2, seed=1, split="calib")
    with pytest.raises(HarnessError, match="2 image\\(s\\) cannot fill one batch of 4"):
        calibration_images(few / "images", 10, batch_size=4)


def test_placement_follows_modelopt_rules(tmp_path):
    model = onnx.load(str(write_tiny_convnet(tmp_path / "t.onnx")))
    placement = place(model)
    assert set(placement.quantized) == {"c1", "c2", "c3a", "c3b", "add", "c4"}
    # a 3->34 1x1 conv has no TensorRT int8 kernel (ModelOpt's channel rule) and stays float
    from harness.quant.prepare import name_unnamed_nodes
    from tests.tinymodel import write_tiny_model

    gfl_model = onnx.load(str(write_tiny_model(tmp_path / "gfl.onnx")))
    assert name_unnamed_nodes(gfl_model) == len(gfl_model.graph.node)
    gfl = place(gfl_model)
    assert not gfl.quantized
    assert gfl.left_float["Conv_unnamed_1"] == "Conv channels 3->34 (group 1): no TensorRT int8 kernel"
    assert gfl.left_float["AveragePool_unnamed_0"] == "AveragePool without a quantized neighbour"


def test_quant_json_record(tmp_path, calib_dir):
    from harness.quant.run import QuantizeRequest, quantize

    profile = load_profile(write_tiny_profile(tmp_path / "tiny.toml"))
    model = write_tiny_convnet(tmp_path / "tiny.onnx")
    out = tmp_path / "quant" / "tiny"
    outcome = quantize(QuantizeRequest(model=model, profile=profile, out=out, calib=calib_dir, calib_images=5,
                                       rules=ExclusionRules(patterns=("^c4$",))))
    record = json.loads((out / "quant.json").read_text())
    assert record == outcome.record
    assert sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES) == ["model.qdq.onnx", "quant.json"]
    from harness.core.fileio import sha256_file

    assert record["source_model"]["sha256"] == sha256_file(model)
    assert record["backend"] == "ort" and record["method"] == "percentile" and record["per_channel"] is True
    assert record["calibration"]["percentile"] == 99.999
    assert record["calibration"]["images"]["count"] == 5 and record["calibration"]["batches_run"] == 5
    names = sorted(p.name for p in calib_dir.iterdir())[:5]
    import hashlib

    digest = hashlib.sha256("".join(f"{n}\t{sha256_file(calib_dir / n)}\n" for n in names).encode()).hexdigest()
    assert record["calibration"]["images"]["sha256"] == digest
    assert record["excluded"]["nodes"] == ["c4"]
    assert record["opset"] == {"before": 13, "after": 13}
    assert record["qdq_nodes"] == sum(n.op_type in QDQ for n in onnx.load(str(out / "model.qdq.onnx")).graph.node)
    scales = record["ranges"]["written_scales"]
    assert scales["activations"]["count"] == 5  # image, r1, r2 (one pair shared by c3a/c3b), t3a, t3b; not c4's s
    assert 0 < scales["activations"]["scale_min"] <= scales["activations"]["scale_max"]
    assert set(record["tools"]) >= {"harness", "onnxruntime", "onnx"}
    # a second run into the same folder is refused, then replaced with --overwrite
    with pytest.raises(HarnessError, match="is not empty"):
        quantize(QuantizeRequest(model=model, profile=profile, out=out, calib=calib_dir, calib_images=5))
    quantize(QuantizeRequest(model=model, profile=profile, out=out, calib=calib_dir, calib_images=5, overwrite=True))
    assert json.loads((out / "quant.json").read_text())["excluded"]["nodes"] == []
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name not in OWN_FILES]  # no staging left


def write_concat_convnet(path):
    """image -> c1, c2 (3->16 each) -> Concat -> c3 (32->16) -> output: one Conv reading a Concat."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    inits, nodes = [], []
    for name, cin in (("c1", 3), ("c2", 3), ("c3", 32)):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (16, cin, 3, 3)).astype(np.float32), f"{name}_w"))
    nodes += [helper.make_node("Conv", ["image", "c1_w"], ["t1"], name="c1", pads=[1] * 4),
              helper.make_node("Conv", ["image", "c2_w"], ["t2"], name="c2", pads=[1] * 4),
              helper.make_node("Concat", ["t1", "t2"], ["cat"], name="cat", axis=1),
              helper.make_node("Conv", ["cat", "c3_w"], ["output"], name="c3", pads=[1] * 4)]
    graph = helper.make_graph(nodes, "concat_conv",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 16, 32, 32])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_conv_reading_a_concat_stays_float_unless_asked_for_tensorrt(tmp_path, calib_dir, spec):
    """The portable placement keeps Concat -> Conv float (OpenVINO CPU miscomputes it from Q/DQ);
    write_qdq(concat_convs=True), the CLI's --quantize-concat-convs, quantizes it for TensorRT."""
    model = write_concat_convnet(tmp_path / "cat.onnx")
    with calibrate(model, calibration_images(calib_dir, 2), spec, "minmax") as cal:
        assert cal.placement.quantized == ("c1", "c2") and cal.placement.concat_convs == ("c3",)
        portable = write_qdq(cal, tmp_path / "portable.onnx")
        trt_only = write_qdq(cal, tmp_path / "trt.onnx", concat_convs=True)
        excluded = write_qdq(cal, tmp_path / "excluded.onnx", exclude={"c3"}, concat_convs=True)
    assert portable.quantized_nodes == ("c1", "c2") and trt_only.quantized_nodes == ("c1", "c2", "c3")
    assert excluded.quantized_nodes == ("c1", "c2")  # --exclude still wins over the override
    assert dq_inputs(onnx.load(str(portable.path)))["c3"] == []
    assert len(dq_inputs(onnx.load(str(trt_only.path)))["c3"]) == 2  # activation and weight


def test_weights_listed_as_graph_inputs_are_not_inputs_of_the_qdq_model(tmp_path, calib_dir, spec):
    """Older exporters list weights as graph inputs (picodet-s-320-legacy, nanodet-m-416); ORT's quantizer
    would keep some of them listed and write a model asking for them as inputs."""
    path = write_tiny_convnet(tmp_path / "t.onnx")
    model = onnx.load(str(path))
    weights = [onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in model.graph.initializer]
    model.graph.input.extend(weights)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("unused", onnx.TensorProto.FLOAT, [3]))
    onnx.save(model, str(path))
    with calibrate(path, calibration_images(calib_dir, 2), spec, "minmax") as cal:
        written = write_qdq(cal, tmp_path / "q.onnx")
    session = ort.InferenceSession(str(written.path))
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert "unused" not in {i.name for i in onnx.load(str(written.path)).graph.initializer}
