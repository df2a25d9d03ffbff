"""The ONNX as quantization sees it: checked, every node named, opset >= 13, shapes inferred.

- Names: exclusions and sensitivity refer to nodes by name, and ORT names Q/DQ nodes after them;
  an unnamed node gets `<op_type>_unnamed_<index>`.
- Opset: per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) exist from opset 13,
  and TensorRT's explicit quantization reads opset >= 13 Q/DQ; older graphs (nanodet-m-320 is
  opset 12) are converted with ONNX's version converter. ORT's quantizer does not do this itself
  for int8 and would write per-channel Q/DQ into an opset-12 graph that ORT then refuses to load.
- Inputs: weights listed as graph inputs (older exporters) are taken out of the inputs; ORT's
  quantizer would otherwise write a model that asks for some of them as inputs.
- Shapes: ORT's quant_pre_process (ONNX shape inference, no graph optimisation, so node names
  stay those of the user's file) gives the quantizer the tensor types it needs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import sha256_file
from harness.model.onnx_model import inspect_model, load_graph, opset_of
from harness.precision.fp16 import drop_input_initializers

MIN_QDQ_OPSET = 13


@dataclass(frozen=True)
class QuantizableModel:
    path: Path  # the prepared ONNX (in a working folder)
    source: Path
    source_sha256: str
    input_name: str
    batch: int  # the input's fixed batch, or 1 for a dynamic batch (calibration batch size)
    opset_before: int
    opset_after: int
    named_nodes: int  # nodes that had no name and got one


@contextlib.contextmanager
def quiet_ort_quantization():
    """ORT's quantization tools log advice at WARNING through the root logger; the CLI prints its own."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def image_input(model: onnx.ModelProto, path: Path) -> tuple[str, int]:
    """The one float32 image input's name and its fixed batch (1 when the batch is dynamic); a model
    that is already int8 (Q/DQ or integer ops, as harness.model.onnx_model labels it) is refused."""
    info = inspect_model(model, str(path))
    if info.precision == "int8":
        raise HarnessError(f"model {path}: already quantized (its graph holds Q/DQ or integer ops); "
                           "harness quantize takes the fp32 model")
    inputs = info.inputs
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise HarnessError(f"model {path}: harness quantize needs one image input, the graph has {len(inputs)} ({names})")
    image = inputs[0]
    if image.dtype != "float32":
        raise HarnessError(f"model {path}: input {image.name} is {image.dtype}, quantization calibrates a float32 input")
    return image.name, image.fixed_batch or 1


def drop_unread_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node reads and no output names (ONNX Runtime warns about each one)."""
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for init in [init for init in model.graph.initializer if init.name not in read]:
        model.graph.initializer.remove(init)


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    taken = {node.name for node in model.graph.node if node.name}
    count = 0
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_unnamed_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            count += 1
    return count


def prepare_model(source: str | Path, workdir: Path) -> QuantizableModel:
    """Write `workdir/prepared.onnx` from `source`; one clear line for a model that cannot be quantized."""
    source = Path(source)
    load_graph(source)  # one line for a missing, truncated or non-ONNX file
    model = onnx.load(str(source))
    input_name, batch = image_input(model, source)
    # Weights listed as graph inputs (older exporters: picodet-s-320-legacy, nanodet-m-416): ORT's
    # quantizer renames or folds some of them but leaves them listed, and the Q/DQ model it writes
    # then asks for them as inputs. Such exports also carry weights no node reads.
    if drop_input_initializers(model):
        drop_unread_initializers(model)
    named = name_unnamed_nodes(model)
    before = opset_of(model)
    if before < MIN_QDQ_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_QDQ_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors for ops it cannot convert
            raise HarnessError(f"model {source}: opset {before} cannot be converted to {MIN_QDQ_OPSET} "
                               f"for Q/DQ ({first_line(exc)})") from None
    converted = workdir / "converted.onnx"
    onnx.save(model, str(converted))
    prepared = workdir / "prepared.onnx"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_ort_quantization():
        try:
            # Symbolic shape inference is for transformer graphs; on detectors it often gives up, and
            # then ORT dumps sym_shape_infer_temp.onnx + a .data file into the current folder.
            quant_pre_process(str(converted), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        except Exception as exc:
            raise HarnessError(f"model {source}: shape inference for quantization failed ({first_line(exc)})") from None
    converted.unlink()
    check_loads_in_ort(prepared, f"model {source}: ONNX Runtime cannot load it after opset/shape preparation")
    return QuantizableModel(prepared, source, sha256_file(source), input_name, batch, before,
                         opset_of(load_graph(prepared)), named)


def check_loads_in_ort(path: Path, failure: str) -> None:
    """Open `path` in ONNX Runtime; `failure (first line of ORT's reason)` as a HarnessError if it cannot."""
    from harness.model.declared_shapes import open_session

    try:
        open_session(path)
    except Exception as exc:
        raise HarnessError(f"{failure} ({first_line(exc)})") from None
