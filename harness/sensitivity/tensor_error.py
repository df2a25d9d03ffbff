"""Per-node tensor error of the all-int8 model against fp32: the cheap signal the shortlist starts from.

Activations come from ONNX Runtime's own debugging tool (onnxruntime.quantization.qdq_loss_debug):
both models run a few calibration batches with the Q/DQ inputs and outputs (int8 model) and the
compute ops' inputs (fp32 model) saved, `create_activation_matching` pairs each quantized activation
with its fp32 twin, and `compute_activation_error` gives, per activation, `qdq_err` (SQNR of the
tensor before vs after its own Q/DQ: how badly this one tensor quantizes) and `xmodel_err` (SQNR of
the int8 model's dequantized tensor vs the fp32 model's: the error accumulated up to here).
Weights are written with a float Q->DQ pair (ModelOpt's AddQDQPairToWeight), which ORT's weight
matcher skips (it reads only DQ nodes with an int8 constant input), so their SQNR is the same
quantize-dequantize done here in numpy with the written scales; the SQNR formula is ORT's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from harness.model.onnx_model import QDQ_PAIR
from harness.quant.placement import QUANTIZED_OP_TYPES


@dataclass(frozen=True)
class NodeError:
    """SQNR in dB (higher is better; None where the node has no such quantized input)."""

    activation_db: float | None  # worst input: int8 model's dequantized input vs the fp32 model's (xmodel_err)
    local_db: float | None  # worst input: the tensor before vs after its own Q/DQ (qdq_err)
    weight_db: float | None  # the weight vs its quantize-dequantize with the written scales

    @property
    def worst_db(self) -> float | None:
        """The node's own quantization error: its worse of local activation and weight SQNR."""
        values = [v for v in (self.local_db, self.weight_db) if v is not None]
        return min(values) if values else None


@dataclass
class TensorProbe:
    """What the probe measured: per-node errors and the fp32 activations it saw (for structure checks)."""

    errors: dict[str, NodeError]
    float_activations: dict[str, np.ndarray]  # tensor name -> (images, ...) array in its inferred shape
    activation_inputs: dict[str, list[str]]  # node -> the activation tensors it reads through a Q/DQ pair
    scales: dict[str, float]  # activation tensor -> its written (per-tensor) int8 scale


def _sqnr(reference, test) -> float:
    """A weight's SQNR by ONNX Runtime's own formula: the activation errors it is ranked beside come from
    ORT's compute_activation_error, which uses this one (an epsilon floor, so identical tensors give a large
    finite value), and one ranking needs one scale. Row-level figures use precision.check.sqnr_db."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return float(compute_signal_to_quantization_noice_ratio(reference, test))


def _collect(model_path: Path, augmented: Path, op_types: list[str], feeds: list[dict]) -> dict[str, list]:
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    modify_model_output_intermediate_tensors(str(model_path), str(augmented), op_types_for_saving=op_types)
    try:
        return collect_activations(str(augmented), feeds)
    finally:
        augmented.unlink(missing_ok=True)


def weight_errors(qdq: onnx.ModelProto) -> dict[str, float]:
    """Weight initializer name -> SQNR of the weight vs int8 quantize-dequantize with its Q node's scale."""
    inits = {init.name: init for init in qdq.graph.initializer}
    out = {}
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.size > 1:
            shape = [1] * weight.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
        restored = np.clip(np.round(weight / scale), -128, 127) * scale
        out[node.input[0]] = _sqnr(weight, restored)
    return out


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Inferred shapes with the batch dim free, for folding the saved (flattened) tensors back."""
    shapes = {}
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        rest = [d.dim_value for d in dims[1:]]
        if dims and all(r > 0 for r in rest):
            shapes[value.name] = (-1, *rest)
    return shapes


def probe(fp32_path: Path, qdq_path: Path, batches: list[np.ndarray], input_name: str, workdir: Path) -> TensorProbe:
    """Run both models on `batches` and return the per-node errors of the int8 model's quantized nodes."""
    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    qdq = onnx.load(str(qdq_path), load_external_data=False)
    feeds = [{input_name: batch} for batch in batches]
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    float_acts = _collect(fp32_path, workdir / "probe-fp32.onnx", list(QUANTIZED_OP_TYPES), feeds)
    qdq_acts = _collect(qdq_path, workdir / "probe-int8.onnx", list(QDQ_PAIR), feeds)
    matched = create_activation_matching(qdq_acts, float_acts)
    activation = compute_activation_error({k: {"float": [], **v} for k, v in matched.items()})
    weights = weight_errors(qdq)
    producer = {out: node for node in qdq.graph.node for out in node.output}
    inits = {init.name: init for init in qdq.graph.initializer}
    errors, activation_inputs, scales = {}, {}, {}
    for node in qdq.graph.node:
        if node.op_type in QDQ_PAIR:
            continue
        act_x, act_local, weight = [], [], []
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in producer:
                continue
            quantize = producer[dq.input[0]]
            source = quantize.input[0]  # the tensor the Q node quantizes
            if source in weights:
                weight.append(weights[source])
                continue
            activation_inputs.setdefault(node.name, []).append(source)
            if quantize.input[1] in inits:
                scales[source] = float(numpy_helper.to_array(inits[quantize.input[1]]).max())
            if source in activation:
                act_local.append(activation[source]["qdq_err"])
                if "xmodel_err" in activation[source]:
                    act_x.append(activation[source]["xmodel_err"])
        if act_x or act_local or weight:
            errors[node.name] = NodeError(min(act_x, default=None), min(act_local, default=None),
                                          min(weight, default=None))
    shapes = _shapes(fp32)
    float_activations = {}
    for name, arrays in float_acts.items():
        flat = np.concatenate([np.asarray(a).ravel() for a in arrays])
        shape = shapes.get(name)
        float_activations[name] = flat.reshape(shape) if shape else flat
    return TensorProbe(errors, float_activations, activation_inputs, scales)
