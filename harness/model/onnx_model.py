"""One reader of an ONNX model's signature: inputs, outputs, opset, dynamic dims, and the precision
its graph holds (Q/DQ nodes = int8, float16 tensors = fp16).

Every place that needs to know what a model takes or returns asks here, so the checks agree (the
runtimes' own views are used only after they have loaded the model). Weights listed as graph inputs
(older exporters did that) are not inputs. Read without external data: only the graph is needed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import input_file

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: the pair a static Q/DQ graph (ONNX Runtime's quantize_static, ModelOpt, NNCF's ONNX) is made of
QDQ_PAIR = ("QuantizeLinear", "DequantizeLinear")
INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple | None  # ints, str (symbolic dim) or None (unknown dim); None: no shape recorded
    dtype: str  # numpy dtype name, e.g. "float32"

    @property
    def fixed_batch(self) -> int | None:
        """The first dim when it is a fixed positive integer, else None (dynamic or unknown)."""
        if not self.shape:
            return None
        first = self.shape[0]
        return first if isinstance(first, int) and first > 0 else None

    def dims(self) -> tuple:
        """Shape with every non-fixed dim as None (what shape checks compare against)."""
        return tuple(d if isinstance(d, int) and d > 0 else None for d in (self.shape or ()))


@dataclass(frozen=True)
class OnnxModelInfo:
    path: str
    opset: int  # of the default ("" / ai.onnx) domain
    ir_version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_types: frozenset
    qdq_nodes: int  # QuantizeLinear/DequantizeLinear nodes
    float16_tensors: int  # initializers and value infos of type float16

    @property
    def precision(self) -> str:
        """What the graph itself computes in: int8 (Q/DQ or integer ops), fp16, else fp32."""
        if self.qdq_nodes or self.op_types & INT8_OPS:
            return "int8"
        if self.float16_tensors:
            return "fp16"
        return "fp32"

    @property
    def image_input(self) -> TensorInfo:
        return self.inputs[0]

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_bytes_per_image(self) -> tuple[int, list[str]]:
        """(bytes of one image's outputs as the graph declares them, names of outputs left uncounted).

        The first dim is the batch where it is symbolic or equals the image input's fixed batch (it
        counts as 1 then); an output without a batch axis (a batch-1 graph's [1600, 80]) counts whole.
        An output whose other dims are not all declared, or whose type has no numpy size, is named in
        the second item and not counted: a lower bound of what the outputs take, never a guess."""
        in_batch = self.image_input.fixed_batch if self.inputs else None
        total, unknown = 0, []
        for out in self.outputs:
            shape = list(out.shape or ())
            if shape and (not isinstance(shape[0], int) or shape[0] <= 0 or (in_batch and shape[0] == in_batch)):
                shape[0] = 1
            try:
                itemsize = np.dtype(out.dtype).itemsize
            except TypeError:
                itemsize = 0
            if not out.shape or itemsize == 0 or not all(isinstance(d, int) and d > 0 for d in shape):
                unknown.append(out.name)
                continue
            total += math.prod(shape) * itemsize
        return total, unknown


def tensor_info(value) -> TensorInfo:
    """A graph input, output or value_info as a TensorInfo."""
    from onnx.helper import tensor_dtype_to_np_dtype

    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                      else (d.dim_param or None) for d in tensor.shape.dim)
    try:
        dtype = str(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)))
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx:{tensor.elem_type}"
    return TensorInfo(value.name, shape, dtype)


def load_graph(path: str | Path):
    """The onnx ModelProto (graph only), or one line saying the file is not a readable model."""
    import onnx
    from google.protobuf.message import DecodeError

    path = input_file(path, "model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise HarnessError(f"model {path}: not a readable ONNX file ({first_line(exc, 160)})") from None
    if not model.graph.input or not model.graph.node:
        raise HarnessError(f"model {path}: not a readable ONNX file (no graph inputs or nodes; empty or truncated?)")
    return model


def inspect_onnx(path: str | Path) -> OnnxModelInfo:
    """The model's signature and graph precision (cached per file path, size and mtime)."""
    path = input_file(path, "model file")
    try:
        stat = path.stat()
    except OSError:
        raise HarnessError(f"model file not found: {path}") from None
    return _inspect(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _inspect(path: str, size: int, mtime_ns: int) -> OnnxModelInfo:
    return inspect_model(load_graph(path), path)


def opset_of(model) -> int:
    """The opset of a ModelProto's default ("" / ai.onnx) domain (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def inspect_model(model, path: str = "") -> OnnxModelInfo:
    """The same for a ModelProto in memory (e.g. a model just converted to fp16, before it is saved)."""
    from onnx import TensorProto

    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = tuple(tensor_info(v) for v in graph.input if v.name not in weights)
    if not inputs:
        raise HarnessError(f"model {path}: the ONNX graph has no inputs (only weights)")
    outputs = tuple(tensor_info(v) for v in graph.output)
    opset = opset_of(model)
    op_types = frozenset(n.op_type for n in graph.node)
    qdq = sum(1 for n in graph.node if n.op_type in QDQ_OPS)
    fp16 = sum(1 for t in graph.initializer if t.data_type == TensorProto.FLOAT16)
    fp16 += sum(1 for v in (*graph.value_info, *graph.input, *graph.output)
                if v.type.tensor_type.elem_type == TensorProto.FLOAT16)
    fp16 += sum(1 for n in graph.node if n.op_type == "Cast"
                and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute))
    return OnnxModelInfo(path=os.fspath(path), opset=int(opset), ir_version=int(model.ir_version), inputs=inputs,
                         outputs=outputs, op_types=op_types, qdq_nodes=qdq, float16_tensors=fp16)



def declared_output_bytes(path: str | Path) -> int:
    """Bytes of one image's outputs that an .onnx file declares (OnnxModelInfo.output_bytes_per_image),
    for the memory check before batches are allocated; 0 for other formats, or a file that cannot be
    read (the row that loads it fails with the reason)."""
    if not str(path).endswith(".onnx") or not Path(path).is_file():
        return 0
    try:
        return inspect_onnx(path).output_bytes_per_image()[0]
    except HarnessError:
        return 0
