"""Where in the graph a node sits, for the shortlist: head/decoder side, inputs with crushed channels.

- head: a quantized node from which a graph output is reached without passing another compute op
  (Conv/ConvTranspose/Gemm/MatMul): the last layers before the decoder, whose int8 error goes
  straight into scores and box bins.
- crushed channels: one per-tensor activation scale serves every channel of a tensor, so when a few
  channels span a much wider range than the rest, the narrow ones are left a handful of int8 steps
  (PaddleSlim's finding on PicoDet's early depthwise convs). For each quantized activation input,
  the share of its live channels whose largest |x| on the probe images spans fewer than
  CRUSHED_STEPS steps of the written scale; a node's figure is its worst input's. A depthwise conv,
  Mul or Add computes each channel on its own, so a crushed channel comes out wrong; a dense conv
  mixes it with the others. Tensor SQNR misses this: the wide channels hold most of the energy.
  Measured on picodet-s-320-legacy: `Conv_1` (depthwise, after the stem's MaxPool) has 7 of 24
  channels under one step, its input SQNR is 34 dB, and quantizing it alone costs 0.19 mAP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: a channel whose range spans fewer int8 steps than this is crushed
CRUSHED_STEPS = 8
#: a node is flagged when at least this share of an input's live channels is crushed
CRUSHED_SHARE = 0.1
DEAD = 1e-3  # a channel whose range is below this many steps carries nothing (dead ReLU): not counted


@dataclass(frozen=True)
class NodeShape:
    op_type: str
    kind: str  # conv, depthwise, other
    head: bool
    crushed: float | None  # share of live channels under CRUSHED_STEPS steps (worst input); None: not measured

    @property
    def outlier(self) -> bool:
        return self.crushed is not None and self.crushed >= CRUSHED_SHARE


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def conv_kind(node: onnx.NodeProto, weights: dict) -> str:
    if node.op_type != "Conv":
        return "other"
    weight = weights.get(node.input[1]) if len(node.input) > 1 else None
    group = int(_attrs(node).get("group", 1))
    if weight is not None and group > 1 and int(weight.dims[1]) == 1:
        return "depthwise"
    return "conv"


def head_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes that reach a graph output through non-compute ops only (compute ops themselves included)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    heads: set[str] = set()
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        heads.add(node.name)
        if node.op_type not in COMPUTE_OPS:
            stack.extend(name for name in node.input if name)
    return heads


def crushed_share(activation: np.ndarray, scale: float) -> float | None:
    """Share of the live channels of an (N, C, ...) activation spanning < CRUSHED_STEPS steps of `scale`."""
    if activation.ndim < 3 or scale <= 0:
        return None
    steps = np.abs(activation).max(axis=tuple(i for i in range(activation.ndim) if i != 1)) / scale
    live = steps >= DEAD
    if not live.any():
        return None
    return float(np.count_nonzero(live & (steps < CRUSHED_STEPS)) / np.count_nonzero(live))


def describe_nodes(model: onnx.ModelProto, names, float_activations: dict[str, np.ndarray],
                   activation_inputs: dict[str, list[str]], scales: dict[str, float]) -> dict[str, NodeShape]:
    """NodeShape of each named node (the quantized ones) of the prepared fp32 model."""
    weights = {init.name: init for init in model.graph.initializer}
    heads = head_nodes(model)
    by_name = {node.name: node for node in model.graph.node}
    out = {}
    for name in names:
        node = by_name[name]
        shares = [crushed_share(float_activations[t], scales[t]) for t in activation_inputs.get(name, ())
                  if t in float_activations and t in scales]
        shares = [s for s in shares if s is not None]
        out[name] = NodeShape(node.op_type, conv_kind(node, weights), name in heads, max(shares) if shares else None)
    return out
