"""NaN and Inf in model or device outputs, found before decoding: a NaN score compares False with every
threshold and a NaN box drops out of NMS, so such an image would silently score as "nothing found".

Pure functions over the outputs of one batch (in-process) or one image (device files).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NonFinite:
    """One output holding NaN/Inf: which output, how many values, and which batch rows (images)
    hold them; rows is None when the output has no batch axis to tell the images apart."""

    index: int
    name: str | None
    count: int
    rows: tuple[int, ...] | None

    def output_label(self) -> str:
        return f"output {self.index}" + (f" {self.name!r}" if self.name else "")


def find_nonfinite(outputs, batch_rows: int, names=None) -> list[NonFinite]:
    """Outputs with NaN/Inf values. batch_rows: the batch the outputs were computed for (padding
    included); an output whose first axis has that length is split per image."""
    found = []
    for index, output in enumerate(outputs):
        array = np.asarray(output)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array)
        count = int(bad.sum())
        if not count:
            continue
        rows = None
        if array.ndim >= 1 and array.shape[0] == batch_rows:
            rows = tuple(int(r) for r in np.flatnonzero(bad.reshape(batch_rows, -1).any(axis=1)))
        name = names[index] if names is not None and index < len(names) else None
        found.append(NonFinite(index, name, count, rows))
    return found


def bad_rows(found: list[NonFinite], images: int) -> set[int]:
    """The images (batch rows < images) the NaN/Inf belong to; every image of the batch when an
    output cannot be split per image."""
    rows: set[int] = set()
    for item in found:
        rows.update(range(images) if item.rows is None else (r for r in item.rows if r < images))
    return rows


def describe(found: list[NonFinite]) -> str:
    """'output 0 'scores' holds 3 NaN/Inf value(s)' for the first, '(and 1 more output)' after."""
    first = found[0]
    more = f" (and {len(found) - 1} more output(s))" if len(found) > 1 else ""
    return f"{first.output_label()} holds {first.count} NaN/Inf value(s){more}"
