"""What precision an ONNX graph holds, read from the graph itself (no runtime needed).

A model with QuantizeLinear/DequantizeLinear nodes is int8 (explicit quantization); one whose
float tensors are float16 is fp16; otherwise fp32. This is what a strongly typed TensorRT build
will run, so it is also the row's label before the engine inspector confirms it.
Integration point: harness/onnx_model.py (the lead's one ONNX inspector) will report Q/DQ and
fp16 presence; this module then reduces to a call into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class GraphPrecision:
    qdq_nodes: int
    fp16_tensors: int  # float16 initializers + float16 value infos / graph outputs
    fp32_tensors: int

    @property
    def label(self) -> str:
        if self.qdq_nodes:
            return "int8"
        return "fp16" if self.fp16_tensors else "fp32"


def _tensor_types(model: onnx.ModelProto):
    graph = model.graph
    for init in graph.initializer:
        yield init.data_type
    for value in list(graph.value_info) + list(graph.output) + list(graph.input):
        if value.type.HasField("tensor_type"):
            yield value.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    yield attr.i


def graph_precision(model: onnx.ModelProto) -> GraphPrecision:
    qdq = sum(1 for node in model.graph.node if node.op_type in QDQ_OPS)
    types = list(_tensor_types(model))
    return GraphPrecision(qdq, types.count(onnx.TensorProto.FLOAT16), types.count(onnx.TensorProto.FLOAT))
