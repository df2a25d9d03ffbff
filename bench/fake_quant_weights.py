"""Write a copy of an ONNX model whose Conv weights are fake-quantized (symmetric, N bits, per output
channel or per tensor) and stored back as float32: a deliberately perturbed row for the fidelity
report that needs no calibration data, so it can be evaluated on every image.

Usage: python bench/fake_quant_weights.py SRC.onnx DST.onnx BITS channel|tensor
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def fake_quant(weights: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    axes = tuple(range(1, weights.ndim)) if per_channel else None
    scale = np.max(np.abs(weights), axis=axes, keepdims=True) / qmax
    scale = np.where(scale == 0, 1, scale)
    return (np.clip(np.round(weights / scale), -qmax, qmax) * scale).astype(np.float32)


def main() -> None:
    src, dst, bits, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode not in ("channel", "tensor"):
        sys.exit("mode must be channel or tensor")
    model = onnx.load(src)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    for init in model.graph.initializer:
        if init.name in conv_weights:
            w = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(fake_quant(w, bits, mode == "channel"), init.name))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, dst)
    print(f"{dst}: {len(conv_weights)} Conv weights fake-quantized to {bits} bits per {mode}")


if __name__ == "__main__":
    main()
