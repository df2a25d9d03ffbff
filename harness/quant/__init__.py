"""Post-training int8 quantization with the harness's own preprocessing (`harness quantize`).

One calibration, many Q/DQ models: `calibrate()` runs the calibration images once and keeps the
tensor ranges; `write_qdq()` writes a portable Q/DQ ONNX from them for any set of excluded nodes,
in seconds and without touching the images again (what `harness sensitivity` builds on).

Modules, one job each:
    calib_data   calibration images -> batches (the accuracy pass's preprocessing), ORT/NNCF readers
    prepare      the ONNX as quantization sees it: named nodes, opset >= 13, shape inference
    placement    which nodes get Q/DQ (NVIDIA ModelOpt's TensorRT-friendly rules) and ORT's options
    exclusions   --exclude / --exclude-types / --exclude-from -> resolved node names
    trt_cache    a TensorRT calibration cache -> tensor ranges
    ort_backend  calibrate() and write_qdq(): ONNX Runtime's static quantizer, symmetric int8
    nncf_backend NNCF post-training quantization -> OpenVINO int8 IR
    manifest     quant.json: what was made, from what, with which tools
    run          the `harness quantize` flow, from request to output folder
"""

from harness.quant.ort_backend import Calibration, QdqModel, calibrate, calibration_from_trt_cache, write_qdq

__all__ = ["Calibration", "QdqModel", "calibrate", "calibration_from_trt_cache", "write_qdq"]
