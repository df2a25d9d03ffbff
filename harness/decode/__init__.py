"""Decoders: raw model outputs + per-image meta -> detections in original-image pixels.

A flat registry: each family is one module that registers a function with @register("kind");
the profile's [decoder] kind picks it. Adding a family is one new file plus one import below.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from harness.decode.geometry import OutputLayoutError, likely_family
from harness.decode.types import Detections
from harness.errors import HarnessError

DecodeFn = Callable[[Sequence[np.ndarray], Sequence, object], list[Detections]]
_DECODERS: dict[str, DecodeFn] = {}


def register(kind: str):
    def wrap(fn: DecodeFn) -> DecodeFn:
        _DECODERS[kind] = fn
        return fn

    return wrap


def get_decoder(kind: str) -> DecodeFn:
    if kind not in _DECODERS:
        raise HarnessError(f"unknown decoder kind {kind!r}; known: {', '.join(sorted(_DECODERS))}")
    return _DECODERS[kind]


def decode(outputs: Sequence[np.ndarray], metas: Sequence, profile) -> list[Detections]:
    """Decode one batch: outputs in the model's output order, metas for the real images only.
    Outputs that fit no layout of the profile's decoder fail with the heads they would fit."""
    try:
        return get_decoder(profile.decoder["kind"])(outputs, metas, profile)
    except OutputLayoutError as exc:
        hint = likely_family(outputs, profile)
        raise OutputLayoutError(f"{exc}; {hint}" if hint else str(exc)) from None


def decoder_kinds() -> list[str]:
    return sorted(_DECODERS)


# Families register themselves on import.
from harness.decode import effdet, gfl, paddle, yolo, yolox  # noqa: E402,F401
