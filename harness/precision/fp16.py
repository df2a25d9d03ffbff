"""fp32 ONNX -> fp16 ONNX that a strongly typed TensorRT build (and ONNX Runtime) accepts.

Converters, by preference: NVIDIA ModelOpt's AutoCast when it is installed (what TensorRT 11's
migration guide recommends), else onnxconverter-common's float16 converter. The graph keeps fp32
inputs and outputs (casts at the boundary, `keep_io_types`), and `keep_fp32_nodes` (node names
or regular expressions, e.g. decoder-side ops) stay fp32 with casts around them.

What onnxconverter-common leaves broken, mended here (found on the shared YOLOv5 and NanoDet
exports, see tests/test_trt_precision.py):
- a Cast(to=float) already in the model keeps to=float while the converter types its output as
  float16, so ONNX Runtime refuses the graph and a strongly typed build would run it in fp32:
  such casts are retargeted to float16;
- old exports list weights as graph inputs too; the converter then turns the weight into fp16
  while the input still says float: those initializers are taken out of the graph inputs first;
- Q/DQ nodes only accept fp16 scales from opset 19: a Q/DQ model is raised to opset 19 first,
  so its non-quantized regions become fp16 with the scales (ModelOpt's recipe for TensorRT);
  onnx's version converter leaves an opset <= 12 Resize with an empty `scales` tensor beside
  `sizes`, which opset 13+ forbids (nanodet-m-320): that empty input is made absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx

from harness.core.errors import HarnessError, first_line
from harness.model.onnx_model import QDQ_OPS, opset_of

QDQ_MIN_OPSET = 19


@dataclass(frozen=True)
class Conversion:
    model: onnx.ModelProto
    recipe: dict  # JSON-able: converter, version, options and what was mended (for the row and the cache key)


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def autocast_available() -> bool:
    try:
        return importlib.util.find_spec("modelopt") is not None and \
            importlib.util.find_spec("modelopt.onnx.autocast") is not None
    except (ImportError, ValueError):
        return False


def pick_converter(choice: str, has_qdq: bool) -> str:
    """The converter to use: "auto" = AutoCast when installed (never for a Q/DQ model), else onnxconverter-common."""
    if choice == "modelopt":
        if has_qdq:
            raise HarnessError("fp16_converter = 'modelopt' converts fp32 models; a Q/DQ model's fp16 regions "
                               "are converted with onnxconverter-common (set fp16_converter = 'auto')")
        if not autocast_available():
            raise HarnessError("fp16_converter = 'modelopt' needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]'")
        return "modelopt"
    if choice == "auto" and not has_qdq and autocast_available():
        return "modelopt"
    if importlib.util.find_spec("onnxconverter_common") is None:
        raise HarnessError("fp16 conversion needs onnxconverter-common: pip install onnxconverter-common "
                           "(part of the harness[gpu] and harness[test] extras)")
    return "onnxconverter-common"


def match_nodes(model: onnx.ModelProto, patterns, where: str = "keep_fp32_nodes") -> list[str]:
    """Node names matched by names / regular expressions (full match); each pattern must match something."""
    names = [node.name for node in model.graph.node if node.name]
    chosen: list[str] = []
    for pattern in patterns or ():
        try:
            regex = re.compile(str(pattern))
        except re.error as exc:
            raise HarnessError(f"{where}: {pattern!r} is not a valid regular expression ({exc})") from None
        hits = [name for name in names if name == pattern or regex.fullmatch(name)]
        if not hits:
            raise HarnessError(f"{where}: {pattern!r} matches no node of the model (node names look like "
                               f"{', '.join(names[:3])}...)")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def drop_input_initializers(model: onnx.ModelProto) -> int:
    """Remove weights that old exports also list as graph inputs; returns how many."""
    weights = {init.name for init in model.graph.initializer}
    kept = [value for value in model.graph.input if value.name not in weights]
    dropped = len(model.graph.input) - len(kept)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(kept)
    return dropped


def _empty_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of constant tensors with zero elements (initializers and Constant nodes)."""
    empty = {init.name for init in model.graph.initializer if 0 in init.dims or (len(init.dims) == 1 and not init.dims[0])}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.dims and 0 in attr.t.dims:
                    empty.add(node.output[0])
    return empty


def mend_resize_inputs(model: onnx.ModelProto) -> int:
    """Resize with `sizes`: an empty roi/scales tensor becomes an absent input (opset 13+ rule)."""
    empty = _empty_tensors(model)
    mended = 0
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            for index in (1, 2):
                if node.input[index] in empty:
                    node.input[index] = ""
                    mended += 1
    return mended


def raise_opset_for_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Q/DQ with fp16 scales needs opset >= 19 (QuantizeLinear-19 / DequantizeLinear-19)."""
    if opset_of(model) >= QDQ_MIN_OPSET:
        return model, 0
    from onnx import version_converter

    try:
        raised = version_converter.convert_version(model, QDQ_MIN_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeError/ValueError subclasses
        raise HarnessError(f"cannot raise the Q/DQ model from opset {opset_of(model)} to {QDQ_MIN_OPSET} for fp16 "
                           f"scales ({first_line(exc, 160)}); "
                           f"export it at opset {QDQ_MIN_OPSET} or newer") from None
    return raised, mend_resize_inputs(raised)


def _float_cast_outputs(model: onnx.ModelProto, kept: set[str]) -> set[str]:
    out = set()
    for node in model.graph.node:
        if node.op_type == "Cast" and node.name not in kept:
            if any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute):
                out.add(node.output[0])
    return out


def retarget_float_casts(model: onnx.ModelProto, cast_outputs: set[str]) -> int:
    """Cast(to=float) nodes that were in the model before conversion -> Cast(to=float16)."""
    count = 0
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in cast_outputs:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
                    count += 1
    return count


def _convert_onnxconverter_common(model: onnx.ModelProto, kept: list[str]) -> tuple[onnx.ModelProto, dict]:
    from onnxconverter_common import float16

    casts = _float_cast_outputs(model, set(kept))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns once per clamped fp32 weight; the check measures the effect
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=kept or None)
    mended = retarget_float_casts(converted, casts)
    return converted, {"converter": "onnxconverter-common", "version": _version("onnxconverter-common"),
                       "retargeted_casts": mended}


def _convert_autocast(model: onnx.ModelProto, patterns) -> tuple[onnx.ModelProto, dict]:
    autocast = importlib.import_module("modelopt.onnx.autocast")
    with tempfile.TemporaryDirectory(prefix="harness-autocast-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, str(path))
        converted = autocast.convert_to_mixed_precision(onnx_path=str(path), low_precision_type="fp16",
                                                        nodes_to_exclude=list(patterns) or None, keep_io_types=True)
    return converted, {"converter": "modelopt-autocast", "version": _version("nvidia-modelopt")}


def convert_to_fp16(model: onnx.ModelProto, keep_fp32_nodes=(), converter: str = "auto") -> Conversion:
    """An fp16 copy of `model` (fp32 I/O); a Q/DQ model keeps its Q/DQ and gets fp16 everywhere else."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    has_qdq = any(node.op_type in QDQ_OPS for node in work.graph.node)
    chosen = pick_converter(converter, has_qdq)
    kept = match_nodes(work, keep_fp32_nodes)
    recipe = {"keep_io_types": True, "keep_fp32_nodes": [str(p) for p in keep_fp32_nodes or ()],
              "kept_fp32_nodes": len(kept), "opset_in": opset_of(work)}
    recipe["input_initializers_dropped"] = drop_input_initializers(work)
    if has_qdq:
        work, recipe["resize_inputs_mended"] = raise_opset_for_qdq(work)
    if chosen == "modelopt":
        converted, details = _convert_autocast(work, keep_fp32_nodes or ())
    else:
        converted, details = _convert_onnxconverter_common(work, kept)
    recipe.update(details)
    recipe["opset_out"] = opset_of(converted)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        raise HarnessError(f"fp16 conversion ({recipe['converter']}) produced an invalid model: "
                           f"{first_line(exc)}") from None
    return Conversion(converted, recipe)
