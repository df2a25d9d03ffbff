"""ONNX output sizes a file declares but its graph does not compute, made symbolic before ONNX Runtime loads it.

Why: PaddleDetection's PicoDet-XS export with NMS inside declares its boxes output as a fixed
[2125, 6] (the candidate count) while its NMS returns at most 100 rows, and computes the per-image
count output as Shape(boxes)[0]. ONNX Runtime takes the declared graph-output shape as the producing
node's shape, and its constant folding (every optimisation level above ORT_DISABLE_ALL) replaces that
Shape() with the constant 2125: the count then says 2125 for 100 rows. OpenVINO infers shapes itself
and returns 100. ONNX's shape inference does not claim 2125 there (NonMaxSuppression's row count is
data-dependent), so a fixed declared size that inference does not confirm is not trusted: it is made
symbolic, and ONNX Runtime computes Shape() when the graph runs. Outputs whose sizes inference
confirms are left alone, and so is the file on disk.
"""

from __future__ import annotations

from pathlib import Path

from harness.model.extra_inputs import dims_text
from harness.model.onnx_model import inspect_onnx, load_graph, tensor_info


def _dims(value) -> tuple | None:
    """Fixed sizes as ints, the others None; None when the value has no shape at all."""
    info = tensor_info(value)
    return None if info.shape is None else info.dims()


def unconfirmed_output_dims(model) -> dict[str, tuple[tuple, tuple | None]]:
    """{output name: (declared dims, inferred dims or None)} for every graph output with a fixed
    declared size that ONNX shape inference (on a copy with the output declarations and the recorded
    value_info removed) does not derive; {} when inference fails, since then nothing can be said either way."""
    import onnx
    from onnx import shape_inference

    declared = {o.name: _dims(o) for o in model.graph.output}
    fixed = {name: dims for name, dims in declared.items() if dims and any(d is not None for d in dims)}
    if not fixed:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    del probe.graph.value_info[:]  # a converter may copy the declared size onto the tensor feeding the output
    try:
        inferred_model = shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:  # onnx raises several types for graphs it cannot infer
        return {}
    inferred = {v.name: _dims(v) for v in (*inferred_model.graph.value_info, *inferred_model.graph.output)}
    out = {}
    for name, dims in fixed.items():
        got = inferred.get(name)
        if got is None or len(got) != len(dims) or any(d is not None and g != d for d, g in zip(dims, got)):
            out[name] = (dims, got)
    return out


def _text(dims) -> str:
    return "no shape" if dims is None else dims_text(dims)


def drop_unconfirmed_output_dims(model, unconfirmed: dict) -> list[str]:
    """Make the unconfirmed fixed output sizes (from unconfirmed_output_dims) of `model` (a ModelProto,
    changed in place) symbolic; returns one note for the row naming them ([] when none)."""
    changed = []
    for output in model.graph.output:
        if output.name not in unconfirmed:
            continue
        declared, inferred = unconfirmed[output.name]
        for index, dim in enumerate(output.type.tensor_type.shape.dim):
            confirmed = inferred is not None and len(inferred) == len(declared) and inferred[index] == declared[index]
            if dim.HasField("dim_value") and dim.dim_value > 0 and not confirmed:
                dim.dim_param = f"{output.name}_dim{index}"  # replaces dim_value (a oneof)
        changed.append(f"output {output.name} is declared {_text(declared)} (ONNX shape inference: {_text(inferred)})")
    if not changed:
        return []
    # a converter (onnxconverter-common's keep_io_types) copies the declared size onto the tensor that
    # feeds the output; ONNX Runtime would trust that one instead, so the recorded shapes go too
    del model.graph.value_info[:]
    return [f"{', '.join(changed)}: declared sizes that shape inference does not confirm were dropped before "
            "ONNX Runtime loaded the model, so it uses the sizes the graph computes"]


def model_for_onnx_runtime(model) -> tuple[str | bytes, list[str]]:
    """What to hand to onnxruntime.InferenceSession, and the notes for the row. `model` is a path, a
    ModelProto (left unchanged) or serialized bytes. A path comes back as it is when nothing needs
    changing; otherwise the model's bytes (parsed once) with the unconfirmed output sizes made symbolic."""
    import onnx

    if isinstance(model, (bytes, onnx.ModelProto)):
        proto = onnx.ModelProto()
        if isinstance(model, bytes):
            proto.ParseFromString(model)
        else:
            proto.CopyFrom(model)
        notes = drop_unconfirmed_output_dims(proto, unconfirmed_output_dims(proto))
        if not notes and isinstance(model, bytes):
            return model, []
        return proto.SerializeToString(), notes
    path = model
    declared = inspect_onnx(path).outputs  # cached: most files declare no fixed size to doubt
    if not any(d is not None for t in declared for d in t.dims()):
        return str(path), []
    graph = load_graph(path)
    unconfirmed = unconfirmed_output_dims(graph)
    if not unconfirmed:
        return str(path), []
    notes = drop_unconfirmed_output_dims(graph, unconfirmed)
    onnx.load_external_data_for_model(graph, str(Path(path).parent))
    return graph.SerializeToString(), notes


def open_session(model, options=None, providers=("CPUExecutionProvider",)):
    """(onnxruntime.InferenceSession, notes): every ONNX Runtime session the harness opens goes through
    here, so no session trusts an output size its graph does not compute (see the module's why)."""
    import onnxruntime as ort

    source, notes = model_for_onnx_runtime(model)
    return ort.InferenceSession(source, sess_options=options, providers=list(providers)), notes
