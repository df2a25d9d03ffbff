"""The per-batch stage split a row may carry (e.g. a GPU target's h2d / compute / d2h times and its host
enqueue time): which row figures hold it, how tables show it, and what it measures. Each target declares
its own (harness.targets.base.StageSplit, Target.stage_split); nothing here names a target. Rows without a
split get no such column or section.

Works on anything with .get(key) (a row dict, a ResultRow, a pandas row of the comparison table);
a missing figure is None or NaN there and shows as '-'.
"""

from __future__ import annotations

import math

from harness.targets.base import StageSplit


def declared_splits() -> tuple[StageSplit, ...]:
    """Every registered target's stage split, once each, in registry order."""
    from harness.targets import TARGETS

    return tuple(dict.fromkeys(cls.stage_split for _, cls in TARGETS.items() if cls.stage_split is not None))


def split_figures() -> tuple[str, ...]:
    """Every row figure of every declared split (the comparison table's numeric columns, exported where present)."""
    return tuple(dict.fromkeys(figure for split in declared_splits() for figure in split.figures))


def _value(row, key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def has_split(row, split: StageSplit) -> bool:
    return any(_value(row, key) is not None for key, _ in split.stages)


def has_host(row, split: StageSplit) -> bool:
    return split.host is not None and _value(row, split.host[0]) is not None


def ms(value) -> str:
    """Stage times are often well under a millisecond: three decimals there, fewer above."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def figure_cell(row, key: str, split: StageSplit) -> str:
    value = _value(row, key)
    if key in split.rates:
        return "-" if value is None else (f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}")
    return ms(value)


def split_heading(split: StageSplit) -> str:
    """'h2d / compute / d2h ms p50': the terminal table's column of the split."""
    return f"{' / '.join(short for _, short in split.stages)} ms p50"


def split_cell(row, split: StageSplit) -> str:
    """'0.150 / 2.00 / 0.046': the stage p50s of one row, '-' for a row without the split."""
    if not has_split(row, split):
        return "-"
    return " / ".join(ms(_value(row, key)) for key, _ in split.stages)


def table_columns(rows) -> list[tuple[str, object]]:
    """(heading, cell of a row) of the terminal table's split and host-time columns: only for the splits some
    row has, so a table of rows without one stays as it was."""
    columns = []
    for split in declared_splits():
        if any(has_split(r, split) for r in rows):
            columns.append((split_heading(split), lambda r, s=split: split_cell(r, s)))
        if any(has_host(r, split) for r in rows):
            columns.append((split.host[1], lambda r, s=split: figure_cell(r, s.host[0], s)))
    return columns


def split_sections(rows, label, first_heading: str = "row") -> list[tuple[StageSplit, list[str]]]:
    """(split, its table and note) for each declared split some row has (rows: dict-like, label(row) -> the
    row's name in the first column); [] when no row has one."""
    out = []
    for split in declared_splits():
        having = [r for r in rows if has_split(r, split) or has_host(r, split)]
        if not having:
            continue
        head = [first_heading, *(title for _, title in split.columns)]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join([str(label(r)), *(figure_cell(r, key, split) for key, _ in split.columns)]) + " |"
                  for r in having]
        out.append((split, lines + ["", split.note]))
    return out
