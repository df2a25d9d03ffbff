"""quant.json: what a quantized model is, what it was made from and with which tools.

Enough to tell two int8 models apart and to reproduce one: the source file's sha256, the tool
versions, backend, method, per-channel, the calibration image list's identity, the resolved
excluded nodes, the written scales and the opset before/after.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import harness

QUANT_FILE = "quant.json"
_TOOLS = ("onnxruntime", "onnx", "openvino", "nncf")


def tool_versions() -> dict:
    versions = {"harness": harness.__version__}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest(*, backend: str, model_file: str, source: Path, source_sha256: str, profile: str, method: str | None,
             per_channel: bool, calibration: dict | None, exclusions: dict, opset: dict | None, details: dict) -> dict:
    """The quant.json object (pure: every value is handed in)."""
    return {
        "format": 1,
        "backend": backend,
        "model_file": model_file,
        "source_model": {"path": str(source), "sha256": source_sha256},
        "profile": profile,
        "method": method,
        "per_channel": per_channel,
        "symmetric_int8": backend == "ort",
        "for_tensorrt": backend == "ort",
        "calibration": calibration,
        "excluded": exclusions,
        "opset": opset,
        "tools": tool_versions(),
        **details,
    }


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
