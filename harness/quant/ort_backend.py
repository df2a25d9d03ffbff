"""ONNX Runtime static quantization, split in two so one calibration serves many Q/DQ models.

    with calibrate(model, images, profile.input, "minmax") as cal:   # runs the images once
        a = write_qdq(cal, "a.onnx")                                 # seconds each, no images
        b = write_qdq(cal, "b.onnx", exclude={"Conv_42"})

`calibrate` prepares the model (harness.quant.prepare), runs ORT's calibrator over the harness's
batches and keeps the ranges (ORT's TensorsData, saved as ORT's JSON calibration cache).
`write_qdq` calls ORT's `quantize_static` with that cache (`calibration_cache_path`, ORT >= 1.32
skips calibration when it exists), symmetric int8 activations and weights (zero points 0) and the
ModelOpt placement (harness.quant.placement), then keeps excluded nodes' inputs in float.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import atomic_write_bytes
from harness.model.onnx_model import QDQ_PAIR
from harness.profiles import InputSpec
from harness.quant.calib_data import CalibrationImages, CountingBatches, calibration_batches, ort_reader
from harness.quant.placement import QUANTIZED_OP_TYPES, Placement, constants, ort_extra_options, place
from harness.quant.prepare import QuantizableModel, drop_unread_initializers, prepare_model, quiet_ort_quantization
from harness.quant.trt_cache import TrtCache, check_cache_matches

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "percentile"  # measured best on NanoDet / NanoDet-Plus (docs/quantize.md)
PERCENTILE = 99.999  # ORT's default, made explicit so quant.json can say it
CHUNK_BATCHES = 8  # batches per ORT collect_data() call: bounds calibration memory


def require_ort_calibration_cache() -> None:
    """write_qdq reuses ranges through quantize_static's calibration_cache_path (ONNX Runtime >= 1.32)."""
    import inspect

    import onnxruntime
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise HarnessError(f"harness quantize needs onnxruntime >= 1.32 (quantize_static's calibration_cache_path); "
                           f"installed: {onnxruntime.__version__}")


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise HarnessError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    return table[method]


@dataclass
class Calibration:
    """Tensor ranges of one prepared model, reusable for any number of Q/DQ variants."""

    prepared: QuantizableModel
    method: str  # minmax | entropy | percentile | trt-cache
    ranges: object  # onnxruntime.quantization.calibrate.TensorsData
    cache_path: Path  # the ranges as ORT's JSON calibration cache
    placement: Placement
    images: dict | None  # CalibrationImages.identity(), None for a TensorRT cache
    batches_run: int  # calibration batches actually run (0 for a TensorRT cache)
    source: dict = field(default_factory=dict)  # e.g. the TensorRT cache's header and file
    overrides: dict = field(default_factory=dict)  # ORT TensorQuantOverrides (exact TensorRT cache scales)
    _workdir: tempfile.TemporaryDirectory | None = None

    @property
    def ort_method(self):
        return _ort_method("minmax" if self.method == "trt-cache" else self.method)

    def node_types(self) -> list[tuple[str, str]]:
        """(name, op type) of every node of the prepared model: what exclusions are resolved against."""
        if not hasattr(self, "_node_types"):
            model = onnx.load(str(self.prepared.path), load_external_data=False)
            self._node_types = [(node.name, node.op_type) for node in model.graph.node]
        return self._node_types

    def close(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class QdqModel:
    path: Path
    quantized_nodes: tuple[str, ...]
    excluded: tuple[str, ...]
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear nodes in the written graph
    scales: dict  # summary of the written scales (see scale_summary)


def _workdir(workdir: str | Path | None) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return Path(workdir), None
    holder = tempfile.TemporaryDirectory(prefix="harness-quant-")
    return Path(holder.name), holder


def calibrate(model_path: str | Path, images: CalibrationImages, spec: InputSpec, method: str = DEFAULT_METHOD,
              advance: Callable[[int], None] = lambda n=1: None, workdir: str | Path | None = None,
              counter: list | None = None) -> Calibration:
    """Run the calibration images through the prepared model once and keep every tensor's range.

    `advance(n)` is called per batch (a progress bar); `counter`, when given, receives the
    CountingBatches so a caller can check how many batches really ran.
    """
    ort_method = _ort_method(method)
    require_ort_calibration_cache()
    folder, holder = _workdir(workdir)
    try:
        prepared = prepare_model(model_path, folder)
        placement = place(onnx.load(str(prepared.path), load_external_data=False))
        check_quantizable(placement, prepared.source)  # before the slow part
        batches = CountingBatches(calibration_batches(images, spec, prepared.batch), advance)
        if counter is not None:
            counter.append(batches)
        ranges = _collect_ranges(prepared, batches, ort_method, folder)
        cache = folder / "ranges.json"
        _save_ranges(ranges, cache)
        return Calibration(prepared, method, ranges, cache, placement, images.identity(), batches.served,
                           _workdir=holder)
    except BaseException:
        if holder is not None:
            holder.cleanup()
        raise


def check_quantizable(placement: Placement, source: Path) -> None:
    """One line for a model on which the placement rules put no Q/DQ at all, with the reasons."""
    if placement.quantized:
        return
    reasons: dict[str, int] = {}
    for why in placement.left_float.values():
        reasons[why] = reasons.get(why, 0) + 1
    shown = "; ".join(f"{count} x {why}" for why, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    raise HarnessError(f"model {source}: nothing to quantize: no node gets Q/DQ under the placement rules "
                       f"({shown or 'no Conv, Gemm, MatMul, Add, Mul, Clip or pooling node'})")


def _collect_ranges(prepared: QuantizableModel, batches: CountingBatches, ort_method, folder: Path):
    from onnxruntime.quantization import create_calibrator

    options = {"symmetric": True, "percentile": PERCENTILE}
    # ORT's histogram collector prints to stdout, which stays the CLI's.
    with quiet_ort_quantization(), contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(prepared.path, list(QUANTIZED_OP_TYPES),
                                       augmented_model_path=str(folder / "augmented.onnx"),
                                       calibrate_method=ort_method, extra_options=options)
        reader = ort_reader(batches, prepared.input_name, CHUNK_BATCHES)
        while True:
            calibrator.collect_data(reader)
            if not reader.next_chunk():
                break
        ranges = calibrator.compute_data()
    (folder / "augmented.onnx").unlink(missing_ok=True)
    return ranges


def _save_ranges(ranges, path: Path) -> None:
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)


def calibration_from_trt_cache(model_path: str | Path, cache: TrtCache,
                               workdir: str | Path | None = None) -> Calibration:
    """Ranges from a TensorRT calibration cache instead of images (amax = scale x 127).

    As ModelOpt does with a cache, only nodes whose activation inputs all have a cached scale get
    Q/DQ; the rest stay float (listed in quant.json).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    require_ort_calibration_cache()
    folder, holder = _workdir(workdir)
    try:
        prepared = prepare_model(model_path, folder)
        model = onnx.load(str(prepared.path), load_external_data=False)
        tensors = {name for node in model.graph.node for name in (*node.input, *node.output) if name}
        tensors |= {i.name for i in model.graph.input}
        check_cache_matches(cache, tensors)
        data = {}
        for name, scale in cache.scales.items():
            amax = np.float32(np.float64(scale) * 127.0)
            data[name] = TensorData(lowest=np.array(-amax, np.float32), highest=np.array(amax, np.float32))
        # The ranges say which tensors are calibrated; the scales themselves go in as ORT overrides,
        # since float32 amax/127 cannot reproduce every float32 scale (about 1 in 130 is one step off).
        overrides = {name: [{"scale": np.array(scale, np.float32), "zero_point": np.array(0, np.int8)}]
                     for name, scale in cache.scales.items()}
        ranges = TensorsData(CalibrationMethod.MinMax, data)
        path = folder / "ranges.json"
        _save_ranges(ranges, path)
        placement = place(model)
        known_constants = constants(model)
        by_name = {node.name: node for node in model.graph.node}
        uncovered = {}  # nodes with an input the cache has no scale for stay float, with that reason
        for name in (*placement.quantized, *placement.concat_convs):
            missing = [t for t in by_name[name].input if t and t not in known_constants and t not in data]
            if missing:
                uncovered[name] = f"no cached scale for {missing[0]}"
        placement = Placement(tuple(n for n in placement.quantized if n not in uncovered),
                              {**placement.left_float, **uncovered})
        source = {"trt_cache": str(cache.path), "header": cache.header, "trt_version": cache.trt_version,
                  "calibrator": cache.calibrator, "tensors": len(cache.scales),
                  "trt_internal_skipped": len(cache.internal)}
        return Calibration(prepared, "trt-cache", ranges, path, placement, None, 0, source, overrides,
                           _workdir=holder)
    except BaseException:
        if holder is not None:
            holder.cleanup()
        raise


def write_qdq(cal: Calibration, out_path: str | Path, exclude: Iterable[str] = (), per_channel: bool = True,
              concat_convs: bool = False) -> QdqModel:
    """Write a Q/DQ ONNX from the calibration's ranges; `exclude` names nodes kept entirely in float.

    concat_convs: also quantize the Convs that read a Concat directly (placement.concat_convs), which
    the portable placement leaves float for OpenVINO's sake; for files meant for TensorRT only.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    excluded = frozenset(exclude)
    names = {name for name, _ in cal.node_types()}
    unknown = sorted(excluded - names)
    if unknown:
        raise HarnessError(f"excluded node(s) not in the model: {', '.join(unknown[:5])}")
    candidates = cal.placement.quantized + (cal.placement.concat_convs if concat_convs else ())
    order = {name: i for i, (name, _) in enumerate(cal.node_types())}
    nodes = sorted((name for name in candidates if name not in excluded), key=order.__getitem__)
    if not nodes:
        # ORT reads an empty nodes_to_quantize as "quantize everything": never hand it one.
        raise HarnessError(f"model {cal.prepared.source}: nothing left to quantize "
                           f"({len(cal.placement.quantized)} quantizable node(s), all excluded or none found)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = cal.cache_path.parent / f"qdq-{uuid.uuid4().hex}.onnx"
    try:
        with quiet_ort_quantization():
            quantize_static(str(cal.prepared.path), str(scratch), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes, nodes_to_exclude=sorted(excluded),
                            calibrate_method=cal.ort_method,
                            extra_options={**ort_extra_options({op for _, op in cal.node_types()}),
                                           "TensorQuantOverrides": cal.overrides},
                            calibration_cache_path=str(cal.cache_path))
        written = onnx.load(str(scratch))
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"model {cal.prepared.source}: ONNX Runtime's quantizer failed ({first_line(exc)})") from None
    finally:
        scratch.unlink(missing_ok=True)
    keep_inputs_float(written, excluded)
    check_symmetric_int8(written)
    atomic_write_bytes(out_path, written.SerializeToString())
    return QdqModel(out_path, tuple(nodes), tuple(sorted(excluded)), count_qdq(written), scale_summary(written))


def keep_inputs_float(model: onnx.ModelProto, excluded: frozenset[str]) -> None:
    """Rewire excluded nodes to the float tensor behind any Q->DQ pair they read.

    ORT shares one Q/DQ pair among all consumers of a tensor (ModelOpt's DedicatedQDQPair=False),
    so an excluded node reading a tensor that a quantized neighbour also reads would still see
    int8-rounded values. Q/DQ nodes nobody reads afterwards are removed.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.name not in excluded:
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
    _drop_unread_qdq(model)


def _drop_unread_qdq(model: onnx.ModelProto) -> None:
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node
                if node.op_type in QDQ_PAIR and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    drop_unread_initializers(model)


def count_qdq(model: onnx.ModelProto) -> int:
    return sum(node.op_type in QDQ_PAIR for node in model.graph.node)


def check_symmetric_int8(model: onnx.ModelProto) -> None:
    """Every Q/DQ must be int8 with zero point 0 (TensorRT refuses anything else); a bug otherwise."""
    inits = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in QDQ_PAIR:
            continue
        if len(node.input) < 3 or node.input[2] not in inits:
            raise HarnessError(f"quantized model: {node.name} has no constant zero point (expected int8 0)")
        zero = inits[node.input[2]]
        if zero.data_type != onnx.TensorProto.INT8 or np.any(numpy_helper.to_array(zero) != 0):
            raise HarnessError(f"quantized model: {node.name} zero point is not int8 0 (TensorRT needs symmetric int8)")


def scale_summary(model: onnx.ModelProto) -> dict:
    """count and min/max of the activation scales and of the weight scales actually written."""
    inits = {init.name: init for init in model.graph.initializer}
    activations, weights, per_channel = [], [], 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64).ravel()
        if node.input[0] in inits:
            weights.append(scale)
            per_channel += scale.size > 1
        else:
            activations.append(scale)

    def stats(values: list[np.ndarray]) -> dict:
        if not values:
            return {"count": 0}
        flat = np.concatenate(values)
        return {"count": len(values), "scale_min": float(flat.min()), "scale_max": float(flat.max())}

    return {"activations": stats(activations), "weights": {**stats(weights), "per_channel": per_channel}}
