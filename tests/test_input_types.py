"""Image inputs of other layouts and types, from the profile and checked against the graph: NHWC
uint8 (normalisation inside the model, as many device exports take) and float16. Each variant of the
tiny detector must give the detections of the plain NCHW float32 one, and a profile that does not
match the graph's input is refused with one line before anything runs."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from tests.tinymodel import write_tiny_model

FAST = ["--seconds", "0.05", "--max-seconds", "0.05", "--warmup", "0"]


def _nhwc_u8(path, base):
    """uint8 [B, H, W, 3] -> Cast, (x - 127.5) / 64 (the tiny profile's mean/std), Transpose -> the tiny graph."""
    model = onnx.load(str(base))
    graph = model.graph
    image = graph.input[0]
    for node in graph.node:
        node.input[:] = ["normalised" if name == "image" else name for name in node.input]
    graph.initializer.extend([numpy_helper.from_array(np.float32(127.5), "mean"),
                              numpy_helper.from_array(np.float32(1 / 64), "inv_std")])
    prologue = [helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT),
                helper.make_node("Sub", ["as_float", "mean"], ["centred"]),
                helper.make_node("Mul", ["centred", "inv_std"], ["scaled"]),
                helper.make_node("Transpose", ["scaled"], ["normalised"], perm=[0, 3, 1, 2])]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    image.CopyFrom(helper.make_tensor_value_info("image", TensorProto.UINT8, [dims[0], dims[2], dims[3], 3]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _fp16(path, base):
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(str(base)), keep_io_types=False), str(path))
    return path


def _profile(tiny, path, **changes):
    text = tiny["profile"].read_text()
    lines = [f'{k} = "{v}"' for k, v in changes.items()]
    path.write_text(text.replace("[input]\n", "[input]\n" + "\n".join(lines) + "\n", 1))
    return path


def _run(tiny, model, profile, out, targets="ort,ov", bs="1,2"):
    result = CliRunner().invoke(main, ["run", "-t", targets, "-m", str(model), "-p", str(profile), "--data",
                                       str(tiny["images"]), "--ann", str(tiny["ann"]), "--bs", bs, "--out", str(out),
                                       *FAST])
    return result, (json.loads((out / "results.json").read_text())["rows"] if (out / "results.json").exists() else [])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nhwc-u8", "fp16"])
def test_layout_and_type_variants_give_the_plain_models_detections(tiny, variant):
    root = tiny["root"]
    fixed = write_tiny_model(root / "base.onnx")
    if variant == "nhwc-u8":
        model, profile = _nhwc_u8(root / "v.onnx", fixed), _profile(tiny, root / "v.toml", layout="NHWC", dtype="u8")
    else:
        model, profile = _fp16(root / "v.onnx", fixed), _profile(tiny, root / "v.toml", dtype="f16")
    _, plain = _run(tiny, fixed, tiny["profile"], root / "plain")
    result, rows = _run(tiny, model, profile, root / "variant")
    assert result.exit_code == 0, result.output + result.stderr
    assert [r["status"] for r in rows] == ["ok"] * 4
    tolerance = 1e-6 if variant == "nhwc-u8" else 0.02  # fp16 weights move scores a little
    for mine, reference in zip(rows, plain):
        assert mine["map"] == pytest.approx(reference["map"], abs=tolerance)
        assert abs(mine["detections"] - reference["detections"]) <= (0 if variant == "nhwc-u8" else 3)


@pytest.mark.parametrize("variant,profile_changes,line", [
    ("nhwc-u8", {}, "32, 32, 3) does not fit profile p (expects NCHW (3, 32, 32) f32)"),
    ("nhwc-u8", {"layout": "NHWC"}, "input dtype uint8 does not fit profile p (dtype = 'f32')"),
    ("fp16", {}, "input dtype float16 does not fit profile p (dtype = 'f32')"),
    ("fp16", {"dtype": "u8"}, "input dtype float16 does not fit profile p (dtype = 'u8')"),
])
def test_profile_that_does_not_match_the_graph_input_is_refused(tiny, variant, profile_changes, line):
    root = tiny["root"]
    base = write_tiny_model(root / "base.onnx")
    model = _nhwc_u8(root / "v.onnx", base) if variant == "nhwc-u8" else _fp16(root / "v.onnx", base)
    result, rows = _run(tiny, model, _profile(tiny, root / "p.toml", **profile_changes), root / "out", bs="1")
    assert result.exit_code == 2
    assert {r["status"] for r in rows} == {"failed"} and all(line in r["error"] for r in rows)
