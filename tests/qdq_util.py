"""A Q/DQ demo model for tests, made with ONNX Runtime's quantize_static (until `harness quantize` lands).

Calibrated on synthetic images of a split the tests never evaluate on ("qdq-calib").
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import onnx

from harness.data.demo import demo_model_path
from harness.data.synthetic import generate_image
from harness.images.preprocess import prepare_batch
from harness.profiles import load_profile


def quantize_demo(out: Path, images: int = 8, model: Path | None = None, profile: str = "demo",
                  calib_paths=None) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = Path(model or demo_model_path())
    spec = load_profile(profile).input
    if calib_paths is None:
        folder = Path(out).parent / "qdq-calib"
        folder.mkdir(parents=True, exist_ok=True)
        calib_paths = []
        for i in range(images):
            path = folder / f"calib_{i:03d}.png"
            cv2.imwrite(str(path), generate_image(7, "qdq-calib", i)[0])
            calib_paths.append(path)
    source = onnx.load(str(model), load_external_data=False)
    name = source.graph.input[0].name
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: prepare_batch([(0, p)], spec, None, skip_bad=False).tensor}
                                  for p in calib_paths])

        def get_next(self):
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint per call
    quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=opset >= 13)
    return Path(out)
