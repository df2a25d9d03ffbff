"""Precision lives in the ONNX: convert it (fp16), label it from its graph, check it against fp32.

Runtime-neutral on purpose: TensorRT 11 builds only strongly typed networks, so an fp16 or int8
engine is an fp16 or Q/DQ ONNX, and the same file runs on ONNX Runtime and OpenVINO here, where
its fidelity to the fp32 model is measured before any GPU is involved.
"""
