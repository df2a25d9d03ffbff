"""Pure functions over a TFLite model's tensor details: the precision it computes in, how its input is
quantized and its outputs dequantized (each with the model's own scale and zero point), and which of
its nodes a delegate took."""

from __future__ import annotations

from collections import Counter

import numpy as np

INTEGER_TYPES = (np.int8, np.uint8, np.int16)


def graph_precision(tensors: list[dict]) -> str:
    """int8 / uint8 where the graph holds quantized tensors of that type (a full-integer export; int32
    biases do not count), fp16 where it stores float16 tensors, else fp32."""
    quantized = Counter(np.dtype(t["dtype"]).name for t in tensors
                        if t["quantization"][0] != 0 and np.dtype(t["dtype"]).name in ("int8", "uint8", "int16"))
    if quantized["int8"] or quantized["int16"]:
        return "int8"
    if quantized["uint8"]:
        return "uint8"
    if any(np.dtype(t["dtype"]) == np.float16 for t in tensors):
        return "fp16"
    return "fp32"


def is_quantized(detail: dict) -> bool:
    return np.dtype(detail["dtype"]).type in INTEGER_TYPES and detail["quantization"][0] != 0


def quantize_input(x: np.ndarray, detail: dict, rounding: str = "round") -> np.ndarray:
    """Float input -> the model's integer type: q = round(x / scale) + zero_point, rounding half away
    from zero as TFLite's own QUANTIZE kernel does ("truncate": (x / scale + zero_point) cast to the
    integer type, as Ultralytics' AutoBackend feeds TFLite models), clipped to the type's range."""
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    v = np.asarray(x, np.float32) / np.float32(scale)
    if rounding == "truncate":
        q = np.trunc(v + np.float32(zero_point))
    else:
        q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + np.float32(zero_point)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(q: np.ndarray, detail: dict) -> np.ndarray:
    """(q - zero_point) * scale with the tensor's own parameters, per channel where the tensor has several."""
    if not is_quantized(detail):
        return q
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", [detail["quantization"][0]]), np.float32)
    zeros = np.asarray(params.get("zero_points", [detail["quantization"][1]]), np.float32)
    if scales.size > 1:
        shape = [1] * q.ndim
        shape[int(params.get("quantized_dimension", 0))] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    else:
        scales, zeros = scales.reshape(()), zeros.reshape(())
    out = q.astype(np.float32)  # one new array, then in place: the [1, 84, 8400] output is 0.7 M values
    out -= zeros
    out *= scales
    return out


def delegation(ops: list[dict]) -> dict:
    """Which nodes a delegate runs and which stay on the CPU kernels, from the interpreter's node list.

    After a delegate is applied the node list holds the model's own nodes plus one DELEGATE node per
    partition; a partition's nodes are the model nodes between its inputs and its outputs (walked back
    from each output through the producers until a partition input or a constant)."""
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in model_ops for t in op["outputs"]}
    by_index = {op["index"]: op for op in model_ops}
    taken: set[int] = set()
    for partition in delegates:
        stop = {int(t) for t in partition["inputs"]}
        todo = [int(t) for t in partition["outputs"]]
        seen: set[int] = set()
        while todo:
            tensor = todo.pop()
            if tensor in seen or tensor in stop or tensor not in producer:
                continue
            seen.add(tensor)
            node = producer[tensor]
            taken.add(node)
            todo.extend(int(t) for t in by_index[node]["inputs"] if int(t) >= 0)
    cpu = [op for op in model_ops if op["index"] not in taken]
    return {"nodes": len(model_ops), "delegated_nodes": len(taken), "cpu_nodes": len(cpu),
            "delegate_partitions": len(delegates),
            "cpu_ops": dict(sorted(Counter(op["op_name"] for op in cpu).items()))}
