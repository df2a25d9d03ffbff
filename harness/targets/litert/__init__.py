"""LiteRT / TFLite target: target.py (the Target), runtime.py (which interpreter package, external
delegates), tensors.py (precision, input quantization, output dequantization, delegated nodes)."""

from harness.targets.litert.target import LiteRtOptions, LiteRtTarget

__all__ = ["LiteRtOptions", "LiteRtTarget"]
