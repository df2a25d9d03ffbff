"""NVIDIA TensorRT target (`trt`, harness.targets.trt.target): one strongly typed build recipe for
TensorRT 10.x and 11.x, in the modules of this package (see target.py for the stages)."""
