"""The search's settings and its pure decisions: which variants to measure, how groups rank by the
mAP they cost, and the greedy restore's order and stopping rule.

A group is one shortlisted node, or every quantized node of one op type that is not a compute op
(`type:Mul`, `type:Add`, `type:MaxPool`, ...): keeping those in float costs no int8 Conv, and one
decision over a whole type is steadier on a small subset than many single-node decisions that
each sit inside noise (measured on picodet-s-320-legacy, docs/sensitivity.md).
Two directions, each a ΔmAP with a paired 95% interval on the subset:
- exclude: everything int8 but the group, against the all-int8 model: the mAP the group buys back
  when kept in float (positive = it hurts when quantized);
- include: only the group int8, against fp32 (PaddleSlim's direction): the mAP quantizing the group
  alone costs (negative = it hurts). It is the informative one when the all-int8 model collapses,
  since then removing any single group changes little.
A direction whose interval holds 0 is "inside noise". A group's cost is the larger of the two
(exclude's gain, minus include's delta); the greedy restore tries the groups whose cost is real
first, then the rest, keeping a group in float only when it raises the subset mAP, and stops as
soon as the drop against fp32 is within --max-drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import setting
from harness.sensitivity.structure import COMPUTE_OPS

MODES = ("exclude", "include")


@dataclass(frozen=True)
class SearchSettings:
    """`harness sensitivity`'s numeric and choice flags (harness.core.config rules: ranges, choices)."""

    subset: int = setting(200, gt=0)
    #: a registered target whose class declares runs_qdq_onnx (checked by check_request)
    target: str = "ort"
    mode: Literal["exclude", "include", "both"] = "both"
    max_drop: float = setting(0.01, ge=0, le=1)
    top_k: int = setting(40, gt=0)
    method: Literal["percentile", "minmax", "entropy"] = "percentile"
    per_channel: bool = True
    calib_images: int = setting(300, gt=0)
    #: calibration images the tensor-error probe runs (both models keep every quantized activation)
    sqnr_images: int = setting(8, gt=0)
    resamples: int = setting(1000, ge=100)
    #: seconds of the target's benchmark loop per greedy step (and for fp32 / all-int8)
    bench_seconds: float = setting(1.0, gt=0)
    #: also score one group per non-compute op type (every Mul, every Add, ...)
    type_groups: bool = True

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)


TYPE_PREFIX = "type:"


def type_groups(quantized: tuple[str, ...], op_types: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """`type:<op>` -> its quantized nodes (graph order), for each non-compute op type with two or more."""
    groups: dict[str, list[str]] = {}
    for name in quantized:
        if op_types[name] not in COMPUTE_OPS:
            groups.setdefault(TYPE_PREFIX + op_types[name], []).append(name)
    return {key: tuple(members) for key, members in groups.items() if len(members) >= 2}


def variant_key(mode: str, group: str) -> str:
    return f"{mode}:{group}"


def step_key(floated) -> str:
    return "step:" + "\n".join(sorted(floated))


def float_set(mode: str, members, quantized: tuple[str, ...]) -> frozenset[str]:
    """The nodes kept in float for one variant of a group (its member nodes)."""
    if mode == "exclude":
        return frozenset(members)
    if mode == "include":
        return frozenset(quantized) - frozenset(members)
    raise ValueError(f"unknown mode {mode!r}")


def helps(record: dict | None) -> bool:
    """Whether a variant's interval says the group really costs mAP when quantized."""
    if not record or record.get("low") is None:
        return False
    return record["low"] > 0 if record["mode"] == "exclude" else record["high"] < 0


def cost(records: dict[str, dict | None]) -> float | None:
    """The mAP a group costs when quantized (mode -> its variant record); None when unmeasured."""
    values = []
    for mode, record in records.items():
        if record and record.get("delta") is not None:
            values.append(record["delta"] if mode == "exclude" else -record["delta"])
    return max(values) if values else None


def restore_order(groups: dict[str, dict[str, dict | None]]) -> list[str]:
    """Groups worth restoring, real costs first, each part by cost (largest first); groups that
    cost nothing measurable are left out."""
    ranked = []
    for name, records in groups.items():
        value = cost(records)
        if value is not None and value > 0:
            real = any(helps(r) for r in records.values())
            ranked.append((not real, -value, name))
    return [name for _, _, name in sorted(ranked)]


@dataclass(frozen=True)
class Step:
    """One greedy step: a group tried in float on top of the groups kept so far."""

    added: str  # the group (a node name or type:<op>)
    floated: tuple[str, ...]  # every node in float after the step (if kept)
    map: float | None
    fps: float | None
    delta: float | None  # against fp32
    low: float | None
    high: float | None
    kept: bool

    @classmethod
    def from_record(cls, record: dict, added: str, kept: bool) -> Step:
        return cls(added, tuple(record["float"]), record["map"], record.get("fps"), record["delta"],
                   record["low"], record["high"], kept)


def drop_holds(fp32_map: float | None, candidate_map: float | None, max_drop: float) -> bool:
    return fp32_map is not None and candidate_map is not None and fp32_map - candidate_map <= max_drop + 1e-12
