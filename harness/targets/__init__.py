"""Targets: one adapter per runtime behind one small interface (see base.Target).

A flat registry: each adapter module registers its class with @register; adding a target is one
new file plus one import below. Adapters import their runtime lazily, so listing targets never
needs every runtime installed.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.targets.base import Target

_TARGETS: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    _TARGETS[cls.name] = cls
    return cls


def get_target(name: str) -> type[Target]:
    if name not in _TARGETS:
        raise HarnessError(f"unknown target {name!r}; known targets: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name]


def target_names() -> list[str]:
    return sorted(_TARGETS)


from harness.targets import ort, ov, trt  # noqa: E402,F401
