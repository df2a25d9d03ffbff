"""What really ran: the share of engine layers in fp32 / fp16 / int8, from the engine inspector.

Engines are built with ProfilingVerbosity.DETAILED, so `get_engine_information(JSON)` lists every
layer with its input tensors. A layer's precision is the data type of its first input, as NVIDIA's
trt-engine-explorer (trex) reads it. TensorRT 10 writes it inside "Format/Datatype" (e.g. "Row
major linear FP16 format", "Channel major Int8 format where channel % 32 == 0"); TensorRT 11 split
that field (NVIDIA's "Migrating IEngineInspector usage" page), so a separate "DataType" value
("Half", "Float", "Int8") is read first when present. Layers without inputs (constants) are not counted.

An engine labelled fp16 with no fp16 layer (or int8 with no int8 layer) is not a result: it is an
EnginePrecisionError, which the runner records as a failed row.
"""

from __future__ import annotations

import json
import re

from harness.core.errors import HarnessError

#: token in a data type / format string -> precision
_TOKENS = (("int8", ("Int8", "INT8")), ("fp16", ("FP16", "Half")), ("bf16", ("BFloat16", "BF16")),
           ("fp8", ("FP8",)), ("fp32", ("FP32", "Float")), ("int32", ("Int32", "INT32")),
           ("int64", ("Int64",)), ("bool", ("BOOL", "Bool")), ("uint8", ("UInt8",)))
PRECISION_KEYS = ("fp32", "fp16", "int8")


class EnginePrecisionError(HarnessError):
    """The engine does not run in the precision its row would claim (e.g. "fp16" with 0% fp16 layers)."""

    def __init__(self, message: str, requested: str, shares: dict):
        super().__init__(message)
        self.requested = requested
        self.shares = shares


def tensor_precision(tensor: dict) -> str:
    """Precision of one inspector tensor entry (a dict with "DataType" and/or "Format/Datatype")."""
    for key in ("DataType", "Format/Datatype", "Format/DataType", "Format"):
        text = tensor.get(key)
        if not isinstance(text, str):
            continue
        words = set(re.findall(r"[A-Za-z0-9]+", text))
        for precision, tokens in _TOKENS:
            if words & set(tokens):
                return precision
    return "other"


def layer_precision_shares(engine_information: str) -> dict:
    """{"layers": n, "fp32": share, "fp16": share, "int8": share, "other": share} from the inspector's JSON."""
    try:
        info = json.loads(engine_information)
    except ValueError:
        raise HarnessError("TensorRT's engine inspector returned no JSON (was the engine built with "
                           "ProfilingVerbosity.DETAILED?)") from None
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise HarnessError("TensorRT's engine inspector lists no layer details (engine built without "
                           "ProfilingVerbosity.DETAILED); rebuild it (delete the cached engine)")
    counts: dict[str, int] = {}
    for layer in layers:
        inputs = layer.get("Inputs") or []
        if not inputs or not isinstance(inputs[0], dict):
            continue
        precision = tensor_precision(inputs[0])
        precision = precision if precision in PRECISION_KEYS else "other"
        counts[precision] = counts.get(precision, 0) + 1
    total = sum(counts.values())
    shares = {"layers": total}
    for key in (*PRECISION_KEYS, "other"):
        shares[key] = round(counts.get(key, 0) / total, 4) if total else 0.0
    return shares


def check_engine_precision(requested: str, shares: dict, engine: str = "engine") -> None:
    """An fp16 engine must hold fp16 layers, an int8 engine int8 layers; else EnginePrecisionError."""
    if requested in ("fp16", "int8") and shares.get(requested, 0.0) <= 0.0:
        raise EnginePrecisionError(
            f"TensorRT {engine} was asked for {requested} but runs 0% of its {shares.get('layers', 0)} layers in "
            f"{requested} (fp32 {shares.get('fp32', 0):.0%}, fp16 {shares.get('fp16', 0):.0%}, "
            f"int8 {shares.get('int8', 0):.0%}); not a {requested} result", requested, shares)
