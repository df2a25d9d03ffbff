"""Real .tflite files written in tests, through TFLite's own flatbuffer schema (the `schema_py_generated`
module ai-edge-litert ships) and the flatbuffers package: tiny graphs for the contract tests, and the
float-input variant of a full-integer export (what Ultralytics writes as `*_integer_quant.tflite`: float32
in and out, QUANTIZE/DEQUANTIZE around the same int8 graph), made from a real model by adding two nodes.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema


def _tensor(shape, dtype, buffer: int, name: str, quant: tuple[float, int] | None = None):
    tensor = schema.TensorT()
    tensor.shape = list(shape)
    tensor.type = dtype
    tensor.buffer = buffer
    tensor.name = name
    if quant is not None:
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
        tensor.quantization = q
    return tensor


def _buffer(data: bytes | None = None):
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(data, np.uint8)
    return buffer


def _opcode(model, builtin: int) -> int:
    for k, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return k
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _op(opcode: int, inputs, outputs):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, list(inputs), list(outputs)
    return op


def save(model, path: Path) -> Path:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))
    return Path(path)


def _empty_model():
    model = schema.ModelT()
    model.version, model.description = 3, "harness test model"
    model.operatorCodes, model.buffers = [], [_buffer()]  # buffer 0: the empty sentinel
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = [], [], "main"
    model.subgraphs = [subgraph]
    return model, subgraph


def qdq_model(path: Path, shape=(1, 3, 8, 8), scale: float = 0.05) -> Path:
    """float32 input -> QUANTIZE (int8, zero point 0) -> DEQUANTIZE -> float32 output."""
    model, sub = _empty_model()
    f32, i8 = schema.TensorType.FLOAT32, schema.TensorType.INT8
    sub.tensors = [_tensor(shape, f32, 0, "image"), _tensor(shape, i8, 0, "q", (scale, 0)),
                   _tensor(shape, f32, 0, "output")]
    sub.operators = [_op(_opcode(model, schema.BuiltinOperator.QUANTIZE), [0], [1]),
                     _op(_opcode(model, schema.BuiltinOperator.DEQUANTIZE), [1], [2])]
    sub.inputs, sub.outputs = [0], [2]
    return save(model, path)


def fp16_model(path: Path, shape=(1, 3, 8, 8)) -> Path:
    """float32 input x a float16 constant 2 (DEQUANTIZE to float32, as fp16 exports store weights) -> output."""
    model, sub = _empty_model()
    model.buffers.append(_buffer(np.array([2.0], np.float16).tobytes()))
    f32 = schema.TensorType.FLOAT32
    sub.tensors = [_tensor(shape, f32, 0, "image"), _tensor([1], schema.TensorType.FLOAT16, 1, "two_fp16"),
                   _tensor([1], f32, 0, "two"), _tensor(shape, f32, 0, "output")]
    mul = _op(_opcode(model, schema.BuiltinOperator.MUL), [0, 2], [3])
    mul.builtinOptionsType, mul.builtinOptions = schema.BuiltinOptions.MulOptions, schema.MulOptionsT()
    sub.operators = [_op(_opcode(model, schema.BuiltinOperator.DEQUANTIZE), [1], [2]), mul]
    sub.inputs, sub.outputs = [0], [3]
    return save(model, path)


def float_io_variant(source: Path, path: Path) -> Path:
    """A full-integer export with float32 input and output: QUANTIZE in front of its int8 input and
    DEQUANTIZE after each int8 output, with those tensors' own (scale, zero point); the rest untouched."""
    model = schema.ModelT.InitFromPackedBuf(Path(source).read_bytes(), 0)
    sub = model.subgraphs[0]
    f32 = schema.TensorType.FLOAT32
    quantize, dequantize = (_opcode(model, schema.BuiltinOperator.QUANTIZE),
                            _opcode(model, schema.BuiltinOperator.DEQUANTIZE))
    new_inputs, front = [], []
    for index in sub.inputs:
        old = sub.tensors[index]
        sub.tensors.append(_tensor(old.shape, f32, 0, old.name.decode() if isinstance(old.name, bytes) else old.name))
        old.name = b"quantized_" + (old.name if isinstance(old.name, bytes) else old.name.encode())
        new_inputs.append(len(sub.tensors) - 1)
        front.append(_op(quantize, [new_inputs[-1]], [index]))
    new_outputs, back = [], []
    for index in sub.outputs:
        old = sub.tensors[index]
        sub.tensors.append(_tensor(old.shape, f32, 0, (old.name if isinstance(old.name, bytes) else old.name.encode())
                                   + b"_float"))
        new_outputs.append(len(sub.tensors) - 1)
        back.append(_op(dequantize, [index], [new_outputs[-1]]))
    sub.operators = front + sub.operators + back
    sub.inputs, sub.outputs = new_inputs, new_outputs
    model.signatureDefs = []  # they name the old int8 tensors; the interpreter runs without them
    return save(model, path)
