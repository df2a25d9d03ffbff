"""Rules every registered target, decoder family and file tool must keep, parametrized over the
registries (after timm's test_models): a new entry is tested as soon as its registry line exists."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.core import config
from harness.core.errors import HarnessError
from harness.decode import DECODERS
from harness.images.preprocess import ImageMeta
from harness.npu import FILE_TOOLS
from harness.profiles import load_profile, profile_from_dict
from harness.targets import TARGETS
from harness.targets.base import Target
from tests.tinymodel import write_tiny_profile

# --------------------------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("kind", DECODERS.names())
def test_decoder_family_declares_itself(kind):
    family = DECODERS.get(kind)
    assert family.kind == kind and callable(family.decode) and dataclasses.is_dataclass(family.Params)
    config.load(family.Params, {}, "defaults")  # every parameter has a default
    with pytest.raises(HarnessError, match="unknown key"):
        config.load(family.Params, {"no_such_parameter": 1}, "profile x", "decoder")


def _profile_for(kind: str):
    data = {"input": {"width": 64, "height": 64}, "decoder": {"kind": kind},
            "classes": {"names": ["a", "b", "c"]}}
    return profile_from_dict(data, name=f"contract-{kind}")


WRONG_OUTPUTS = {
    "one 3-D tensor of an unrelated width": [np.zeros((1, 7, 13), np.float32)],
    "a single 1-D vector": [np.zeros((5,), np.float32)],
    "three mismatched tensors": [np.zeros((1, 3, 3), np.float32), np.zeros((2, 9), np.float32),
                                 np.zeros((1, 4, 4, 4), np.float32)],
}


@pytest.mark.parametrize("kind", DECODERS.names())
@pytest.mark.parametrize("case", sorted(WRONG_OUTPUTS))
def test_every_decoder_refuses_outputs_that_do_not_fit(kind, case):
    """A decoder never turns outputs of another geometry into detections: one clear error instead."""
    profile = _profile_for(kind)
    meta = ImageMeta(1, "x.jpg", 64, 64, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(HarnessError, match="do not fit|fixed batch"):
        DECODERS.get(kind).decode(WRONG_OUTPUTS[case], [meta], profile)


def test_profile_typos_and_bad_values_are_one_line(tmp_path):
    good = write_tiny_profile(tmp_path / "good.toml").read_text()
    cases = {
        "resise": (good.replace("resize =", "resise ="), "unknown key '[input] resise' (did you mean 'resize'?)"),
        "reg_mx": (good.replace("reg_max =", "reg_mx ="), "unknown key '[decoder] reg_mx' (did you mean 'reg_max'?)"),
        "colour": (good.replace("[input]", "[input]\ncolour = \"rgb\""), "unknown key '[input] colour' (did you mean 'color'?)"),
        "postproces": (good.replace("[postprocess]", "[postproces]"), "'postproces' (did you mean 'postprocess'?)"),
        "max_detections": (good.replace("score_threshold = 0.05", "max_detections = -3"),
                           "[postprocess] max_detections = -3: expected an integer (>= 0)"),
        "nan std": (good.replace("std = [64.0, 64.0, 64.0]", "std = [64.0, nan, 64.0]"), "[input] std"),
        "iou": (good.replace("score_threshold = 0.05", "iou_threshold = 2"), "[postprocess] iou_threshold = 2"),
        "kind": (good.replace('kind = "gfl"', 'kind = "gfll"'), "[decoder] kind = 'gfll': expected one of"),
        "string width": (good.replace("width = 32", 'width = "32"'), "[input] width = '32': expected an integer"),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.toml"
        path.write_text(text)
        with pytest.raises(HarnessError) as caught:
            load_profile(path)
        message = str(caught.value)
        assert fragment in message and str(path) in message and "\n" not in message, (name, message)


# --------------------------------------------------------------------------------------------- targets


@pytest.mark.parametrize("name", TARGETS.names())
def test_target_declares_itself(name):
    cls = TARGETS.get(name)
    assert issubclass(cls, Target) and cls.name == name and cls.description
    ok, why = cls.availability()
    assert isinstance(ok, bool) and isinstance(why, str) and (ok or why)
    options = cls.parse_options({})  # every option has a default
    assert dataclasses.is_dataclass(options)
    with pytest.raises(HarnessError, match="unknown option --no-such-option"):
        cls.parse_options({"no_such_option": 1})
    hints = typing.get_type_hints(cls.Options)
    for key in config.known_keys(cls.Options):
        config.describe(hints[key])  # every option type can be explained to a user


def _graph_model(path, nodes, inits, dtype=TensorProto.FLOAT, opset=13):
    graph = helper.make_graph(
        nodes, "contract",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _qdq_model(path):
    """image -> QuantizeLinear -> DequantizeLinear (int8, zero point 0) -> output: a Q/DQ graph."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, np.int8), "zero")]
    nodes = [helper.make_node("QuantizeLinear", ["image", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["output"])]
    return _graph_model(path, nodes, inits)


def _fp16_model(path):
    """image -> Cast(fp16) -> Mul by an fp16 constant -> Cast(fp32) -> output: an fp16 graph."""
    inits = [numpy_helper.from_array(np.array(2.0, np.float16), "two")]
    nodes = [helper.make_node("Cast", ["image"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("Mul", ["half", "two"], ["doubled"]),
             helper.make_node("Cast", ["doubled"], ["output"], to=TensorProto.FLOAT)]
    return _graph_model(path, nodes, inits)


def _input_profile():
    return profile_from_dict({"input": {"width": 8, "height": 8}, "decoder": {"kind": "gfl", "strides": [8]},
                              "classes": {"names": ["a"]}}, name="contract")


def _tflite(graph: str):
    def write(path):
        from tests import tflite_writer  # needs ai-edge-litert's schema: only imported for a target that takes .tflite

        return (tflite_writer.qdq_model if graph == "qdq" else tflite_writer.fp16_model)(path)
    return write


#: the same two graphs in each model format a target loads (Target.model_formats)
GRAPH_WRITERS = {".onnx": {"qdq": _qdq_model, "fp16": _fp16_model},
                 ".tflite": {"qdq": _tflite("qdq"), "fp16": _tflite("fp16")}}


@pytest.mark.parametrize("name", TARGETS.names())
@pytest.mark.parametrize("graph,expected", [("qdq", "int8"), ("fp16", "fp16")])
def test_every_target_labels_precision_from_the_graph(tmp_path, name, graph, expected):
    """A Q/DQ graph is int8 and an fp16 graph fp16 on every target, whatever was typed (or not)."""
    cls = TARGETS.get(name)
    ok, why = cls.availability()
    if not ok:
        pytest.skip(f"target {name} cannot run here: {why}")
    suffix = cls.model_formats[0]
    model = GRAPH_WRITERS[suffix][graph](tmp_path / f"{graph}{suffix}")
    with cls(model, _input_profile(), {}) as target:
        target.load(1)
        assert target.precision == expected
        x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
        (out,) = target.infer(x)
        assert out.shape == (1, 3, 8, 8)
    mismatch = "fp32"
    with pytest.raises(HarnessError, match=f"--precision {mismatch} does not match what would run \\({expected}"):
        with cls(model, _input_profile(), {"precision": mismatch}) as target:
            target.load(1)


# --------------------------------------------------------------------------------------------- file tools


@pytest.mark.parametrize("name", FILE_TOOLS.names())
def test_file_tool_declares_itself(name):
    tool = FILE_TOOLS.get(name)
    assert tool.name == name and tool.device and tool.program and tool.summary
    assert tool.decode_flag.startswith("--") and tool.input_format
    for fn in (tool.write_input, tool.finish_prepare, tool.locate_outputs, tool.read_outputs, tool.read_timing,
               tool.emulate):
        assert callable(fn)
    others = [t for n, t in FILE_TOOLS.items() if n != name]
    assert all(t.input_format != tool.input_format and t.decode_flag != tool.decode_flag for t in others)
