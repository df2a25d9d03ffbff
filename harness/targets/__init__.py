"""Targets: one adapter per runtime behind one lifecycle (see base.Target).

The table below is the only list of targets: adding one is one new module plus one line here. It is
lazy, so listing targets never imports a runtime; each adapter imports its runtime on first use.
"""

from __future__ import annotations

from harness.core.registry import Registry

TARGETS = Registry("target", {
    "litert": "harness.targets.litert:LiteRtTarget",
    "ort": "harness.targets.ort:OrtCpu",
    "ort-cuda": "harness.targets.ort:OrtCuda",
    "ov": "harness.targets.ov:OpenVinoCpu",
    "trt": "harness.targets.trt.target:TensorRtTarget",
})


def get_target(name: str):
    return TARGETS.get(name)


def target_names() -> list[str]:
    return TARGETS.names()


def reference_order() -> tuple[str, ...]:
    """Targets whose fp32 rows are the default reference (report --fidelity, report's baseline), best
    first: those whose class declares a reference_rank."""
    ranked = [(cls.reference_rank, name) for name, cls in TARGETS.items() if cls.reference_rank is not None]
    return tuple(name for _, name in sorted(ranked))


def declared_packages() -> tuple[str, ...]:
    """Every distribution a target declares (Target.packages), for the results' environment."""
    return tuple(dict.fromkeys(pkg for _, cls in TARGETS.items() for pkg in cls.packages))
