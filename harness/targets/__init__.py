"""Targets: one adapter per runtime behind one lifecycle (see base.Target).

The table below is the only list of targets: adding one is one new module plus one line here. It is
lazy, so listing targets never imports a runtime; each adapter imports its runtime on first use.
"""

from __future__ import annotations

from harness.registry import Registry

TARGETS = Registry("target", {
    "litert": "harness.targets.litert:LiteRtTarget",
    "ort": "harness.targets.ort:OrtCpu",
    "ort-cuda": "harness.targets.ort:OrtCuda",
    "ov": "harness.targets.ov:OpenVinoCpu",
    "trt": "harness.targets.trt:TensorRtTarget",
})


def get_target(name: str):
    return TARGETS.get(name)


def target_names() -> list[str]:
    return TARGETS.names()
