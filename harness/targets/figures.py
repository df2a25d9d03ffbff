"""The vocabulary of per-target timing figures a row may carry (gpu_compute_ms_p50, h2d_ms_p50, ...).

Each target declares its own (`harness.targets.base.Target.figures`); they are added here when its class
is defined, and the row (harness.measure.row) reads them back by this table. A figure may not shadow a
row field: the row registers its field names here when it is imported, and whichever comes second checks.
"""

from __future__ import annotations

#: timing figure -> what it covers, over every target defined so far
TARGET_FIGURES: dict[str, str] = {}
#: names a figure may not take (the row's own fields)
_RESERVED: set[str] = set()


def _refuse_clash(names) -> None:
    clash = sorted(set(names) & _RESERVED)
    if clash:
        raise ValueError(f"target figures {clash} are row fields")


def declare_figures(figures: dict[str, str]) -> None:
    """Add a target's timing figures to the vocabulary rows read back."""
    _refuse_clash(figures)
    TARGET_FIGURES.update(figures)


def reserve(row_fields) -> None:
    """The row's field names, which no figure may take (checked against figures already declared too)."""
    _RESERVED.update(row_fields)
    _refuse_clash(TARGET_FIGURES)
