"""TensorRT calibration caches -> Q/DQ scales: a hand-written cache with known bits, and malformed ones."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from harness.core.errors import HarnessError
from harness.quant import calibration_from_trt_cache, write_qdq
from harness.quant.trt_cache import decode_scale, parse_trt_cache
from tests.tinymodel import write_tiny_convnet

# scale bits (big-endian float32): 0x3c000000 = 2^-7, 0x3d000000 = 2^-5, 0x3c23d70a ~ 0.01;
# 0x3df6e2c0 (0.12054968) and 0x3a19f8c0 (0.00058735535) are scales for which the plain
# amax = float32(scale * 127) comes back from ORT's 2*amax/254 one float32 step off.
CACHE = """TRT-8601-EntropyCalibration2
image: 3c000000
r1: 3d000000
r2: 3a19f8c0
t3a: 3df6e2c0
t3b: 3e000000
s: 3e800000
(Unnamed Layer* 12) [Shuffle]_output: 3c000000
output: 3c010204
"""


def write(tmp_path, text, name="calib.cache"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_decode_known_bits():
    assert decode_scale("3c000000") == 2.0 ** -7
    assert decode_scale("3f800000") == 1.0
    assert decode_scale("3d4ccccd") == pytest.approx(0.05, rel=1e-7)
    assert decode_scale("3df6e2c0") == pytest.approx(0.12054968, rel=1e-7)


def test_parse_cache(tmp_path):
    cache = parse_trt_cache(write(tmp_path, CACHE))
    assert (cache.trt_version, cache.calibrator) == ("8601", "EntropyCalibration2")
    assert cache.scales["image"] == 2.0 ** -7 and cache.scales["s"] == 0.25
    assert cache.internal == ("(Unnamed Layer* 12) [Shuffle]_output",)
    assert "(Unnamed Layer* 12) [Shuffle]_output" not in cache.scales
    assert cache.amax("r1") == pytest.approx(127 / 32)


def test_cache_scales_are_written_exactly(tmp_path):
    model = write_tiny_convnet(tmp_path / "tiny.onnx")
    cache = parse_trt_cache(write(tmp_path, CACHE))
    with calibration_from_trt_cache(model, cache) as cal:
        assert cal.method == "trt-cache" and cal.batches_run == 0
        written = write_qdq(cal, tmp_path / "q.onnx")
    q = onnx.load(str(written.path))
    inits = {i.name: i for i in q.graph.initializer}
    got = {n.input[0]: float(numpy_helper.to_array(inits[n.input[1]]))
           for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    # the scale each activation Q uses is the cache's float32, bit for bit
    assert got == {name: cache.scales[name] for name in ("image", "r1", "r2", "t3a", "t3b", "s")}
    ort.InferenceSession(str(written.path))


def test_nodes_without_cached_inputs_stay_float(tmp_path):
    model = write_tiny_convnet(tmp_path / "tiny.onnx")
    cache = parse_trt_cache(write(tmp_path, "TRT-100100-MinMaxCalibration\nimage: 3c000000\nr1: 3d000000\n"))
    with calibration_from_trt_cache(model, cache) as cal:
        assert set(cal.placement.quantized) == {"c1", "c2"}
        assert cal.placement.left_float["c3a"] == "no cached scale for r2"
        written = write_qdq(cal, tmp_path / "q.onnx")
    assert set(written.quantized_nodes) == {"c1", "c2"}


@pytest.mark.parametrize("text, message", [
    ("", "is not a TensorRT cache header"),
    ("calibration\nimage: 3c000000\n", "line 1 'calibration' is not a TensorRT cache header"),
    ("TRT-8601-EntropyCalibration2\nimage 3c000000\n", "line 2 'image 3c000000' is not 'tensor_name: <8 hex digits>'"),
    ("TRT-8601-EntropyCalibration2\nimage: 3c0000\n", "line 2 .* is not 'tensor_name: <8 hex digits>'"),
    ("TRT-8601-EntropyCalibration2\nimage: 3c00zz00\n", "line 2 .* is not 'tensor_name: <8 hex digits>'"),
    ("TRT-8601-EntropyCalibration2\nimage: 7fc00000\n", "line 2: scale 7fc00000 decodes to nan"),
    ("TRT-8601-EntropyCalibration2\nimage: bf800000\n", "line 2: scale bf800000 decodes to -1.0"),
    ("TRT-8601-EntropyCalibration2\nimage: 3c000000\nimage: 3c000000\n", "line 3: tensor 'image' appears twice"),
    ("TRT-8601-EntropyCalibration2\n\n", "no tensor scales after the header"),
])
def test_malformed_caches_are_refused(tmp_path, text, message):
    with pytest.raises(HarnessError, match=message):
        parse_trt_cache(write(tmp_path, text))


def test_cache_names_that_match_nothing_are_refused(tmp_path):
    model = write_tiny_convnet(tmp_path / "tiny.onnx")
    cache = parse_trt_cache(write(tmp_path, CACHE + "backbone.stage2.out: 3c000000\n"))
    with pytest.raises(HarnessError, match="1 of 8 tensor name\\(s\\) match nothing in the model: backbone.stage2.out"):
        calibration_from_trt_cache(model, cache)


def test_missing_cache_file(tmp_path):
    with pytest.raises(HarnessError, match="file not found"):
        parse_trt_cache(tmp_path / "none.cache")
