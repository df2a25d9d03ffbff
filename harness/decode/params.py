"""Readers for the [decoder] parameters the newer decoders take (strides, counts, switches): one
line naming the profile and the key when a value is out of range.

Kept apart from the decoders so the typed-dataclass profile loader can replace them in one place;
each reader states the type, default and allowed range of its parameter.
"""

from __future__ import annotations

from typing import Sequence

from harness.errors import HarnessError


def read_strides(decoder: dict, default: Sequence[int], where: str) -> tuple[int, ...]:
    """[decoder] strides: a non-empty list of positive integers, ascending (level order)."""
    value = decoder.get("strides", list(default))
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)
            or list(value) != sorted(set(value))):
        raise HarnessError(f"{where}: [decoder] strides must be ascending positive integers, e.g. [8, 16, 32]")
    return tuple(int(s) for s in value)


def read_int(decoder: dict, key: str, default: int, low: int, high: int, where: str) -> int:
    value = decoder.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HarnessError(f"{where}: [decoder] {key} must be an integer from {low} to {high}")
    return value


def read_bool(decoder: dict, key: str, default: bool, where: str) -> bool:
    value = decoder.get(key, default)
    if not isinstance(value, bool):
        raise HarnessError(f"{where}: [decoder] {key} must be true or false")
    return value
