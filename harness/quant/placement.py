"""Which nodes get Q/DQ, and the ONNX Runtime options that make the placement TensorRT-friendly.

Taken from NVIDIA ModelOpt's ONNX int8 PTQ (modelopt/onnx/quantization: int8.py, ort_utils.py
`configure_ort`, partitioning.py, graph_utils.py `find_nodes_from_convs_to_exclude`), which drives
the same ORT quantizer:

- Q/DQ go on the *inputs* of compute ops only (ModelOpt's int8 op list below); no op output is
  quantized (`OpTypesToExcludeOutputQuantization` = every op type in the graph), so TensorRT fuses
  Conv+bias+activation and quantizes the next op's input.
- Copy, activation and reduction ops (Concat, Reshape, Transpose, Slice, Split, Resize, Sigmoid,
  Softmax, Relu, LeakyRelu, ...) stay in float: ModelOpt removes them from ORT's registry.
- Element-wise ops with a constant input (a scale or offset), pooling ops without a quantized
  neighbour, output layers other than Conv/Gemm/MatMul, and Conv shapes TensorRT has no int8
  kernel for are left in float, as ModelOpt's partitioning does.
- Weights keep float values with a Q->DQ pair (`AddQDQPairToWeight`), biases stay float
  (`QuantizeBias` False: TensorRT has no int32 bias DQ), symmetric int8 everywhere (zero point 0),
  per-channel Conv weights on the output-channel axis, shared (not dedicated) Q/DQ pairs.

One rule of our own: a Conv that reads a Concat output directly stays float. OpenVINO 2026.4's
CPU plugin moves that Q/DQ through the Concat into a u8 Concatenation feeding an int8 convolution
and computes it wrong (output SQNR 2 dB against ONNX Runtime on the same file; NanoDet-Plus's
GhostPAN has four such convs and its mAP fell from 0.37 to 0.02 on `ov`); measured in
docs/quantize.md. ShuffleNet-style Concat -> Reshape -> Conv paths are not affected.

Left out of ModelOpt's rules (they change TensorRT speed, not what the int8 model computes):
the residual-Add input fusion map and concat elimination (equal scales across Concat inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

#: ModelOpt's int8 op types (int8.quantize docstring), less BatchNormalization, which ORT's
#: registry cannot quantize without ModelOpt's custom operator (BN is folded into Conv in exports).
QUANTIZED_OP_TYPES = ("Add", "AveragePool", "Clip", "Conv", "ConvTranspose", "Gemm", "GlobalAveragePool",
                      "MatMul", "MaxPool", "Mul")
POINTWISE_OP_TYPES = ("Add", "Mul", "Clip")
POOLING_OP_TYPES = ("AveragePool", "GlobalAveragePool", "MaxPool")
OUTPUT_OK_OP_TYPES = ("Conv", "Gemm", "MatMul")
COPY_OP_TYPES = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Split",
                 "Concat", "Resize", "Pad")


CONCAT_CONV_REASON = "reads a Concat directly (OpenVINO CPU miscomputes it from Q/DQ)"


@dataclass(frozen=True)
class Placement:
    quantized: tuple[str, ...]  # node names that get Q/DQ on their inputs
    left_float: dict[str, str]  # node name -> why a node of a quantizable type stays float

    @property
    def concat_convs(self) -> tuple[str, ...]:
        """Convs left float only by our OpenVINO rule: int8 on TensorRT when --quantize-concat-convs."""
        return tuple(name for name, why in self.left_float.items() if why.endswith(CONCAT_CONV_REASON))


def constants(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors that are initializers or Constant outputs (not activations)."""
    names = {init.name for init in model.graph.initializer}
    names |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return names


def _conv_unsupported(node: onnx.NodeProto, weights: dict, graph_inputs: set[str]) -> str | None:
    """ModelOpt's find_nodes_from_convs_to_exclude for int8: channel counts TensorRT has no int8 kernel for."""
    weight = weights.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return "Conv with a non-constant weight"
    out_ch, in_ch = int(weight.dims[0]), int(weight.dims[1])
    if out_ch >= 16 and in_ch >= 16:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    kernel = list(attrs.get("kernel_shape", weight.dims[2:]))
    first = any(name in graph_inputs for name in node.input)
    if group == 1 and (out_ch % 8 == 0 or in_ch % 8 == 0) and (first or out_ch >= 16 or in_ch >= 16) \
            and len(set(kernel)) == 1:
        return None
    if group > 1 and out_ch % 8 == 0 and all(k >= 3 for k in kernel):
        return None
    return f"Conv channels {in_ch}->{out_ch} (group {group}): no TensorRT int8 kernel"


def place(model: onnx.ModelProto) -> Placement:
    """ModelOpt's node selection on a prepared (named, shape-inferred) model."""
    graph = model.graph
    known_constants = constants(model)
    weights = {init.name: init for init in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    chosen: list[str] = []
    left: dict[str, str] = {}
    pooling: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES:
            continue
        if node.op_type in POOLING_OP_TYPES:
            pooling.append(node)
            continue
        if node.op_type in POINTWISE_OP_TYPES and any(name in known_constants for name in node.input if name):
            left[node.name] = f"{node.op_type} with a constant input"
            continue
        if node.op_type not in OUTPUT_OK_OP_TYPES and graph_outputs.intersection(node.output):
            left[node.name] = f"{node.op_type} writes a graph output"
            continue
        if node.op_type == "Conv":
            why = _conv_unsupported(node, weights, graph_inputs)
            if why:
                left[node.name] = why
                continue
        # after the channel rule, so that every Conv listed here has a TensorRT int8 kernel
        if node.op_type in ("Conv", "ConvTranspose") and node.input[0] in producer \
                and producer[node.input[0]].op_type == "Concat":
            left[node.name] = f"{node.op_type} {CONCAT_CONV_REASON}"
            continue
        chosen.append(node.name)

    # Pooling is quantized only next to quantized compute (looking through copy ops), as in ModelOpt.
    chosen_set = set(chosen)

    def near(node: onnx.NodeProto, upstream: bool, depth: int = 0) -> bool:
        if depth > 8:
            return False
        if upstream:
            neighbours = [producer[n] for n in node.input if n in producer]
        else:
            neighbours = [c for out in node.output for c in consumers.get(out, [])]
        return any(n.name in chosen_set or (n.op_type in COPY_OP_TYPES and near(n, upstream, depth + 1))
                   for n in neighbours)

    for node in pooling:
        if near(node, True) or near(node, False):
            chosen.append(node.name)
        else:
            left[node.name] = f"{node.op_type} without a quantized neighbour"
    order = {node.name: i for i, node in enumerate(graph.node)}
    return Placement(tuple(sorted(chosen, key=order.__getitem__)), left)


def ort_extra_options(op_types: set[str]) -> dict:
    """ModelOpt's `trt_guided_options` for ORT's quantize_static (less its own ORT patches);
    op_types: every op type of the model."""
    return {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": sorted(op_types),
        "AddQDQPairToWeight": True,
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
        "DedicatedQDQPair": False,
        "ForceQuantizeNoInputCheck": True,
        "QDQKeepRemovableActivations": True,
        "QDQDisableWeightAdjustForInt32Bias": True,
    }
