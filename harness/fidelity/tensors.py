"""Tensor error per model output between a reference row and a candidate row, on the saved images.

SQNR (dB) = 10 log10(Σ ref² / Σ (ref - cand)²) over every element of the output on every saved image;
cosine similarity of the flattened outputs; max and 99th-percentile absolute error. Computed in
float64. Outputs are matched by index and images by id; any difference in shapes or in the image
set is refused rather than compared partially.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.core.errors import HarnessError
from harness.measure.artifacts import SavedOutputs
from harness.precision.check import sqnr_db


@dataclass
class OutputError:
    index: int
    name: str
    elements: int
    sqnr_db: float  # inf when identical
    cosine: float
    max_abs: float
    p99_abs: float
    nonfinite: int  # elements where either side is NaN/inf (they make the figures NaN)


def cosine(ref: np.ndarray, cand: np.ndarray) -> float:
    """1 for identical directions; both all-zero counts as identical, one all-zero as 0."""
    norm = float(np.linalg.norm(ref)) * float(np.linalg.norm(cand))
    if norm == 0.0:
        return 1.0 if not np.any(ref) and not np.any(cand) else 0.0
    return float(np.dot(ref, cand)) / norm


def tensor_errors(ref: SavedOutputs, cand: SavedOutputs, ref_label: str = "reference",
                  cand_label: str = "candidate") -> list[OutputError]:
    """One OutputError per output index, over the images both archives hold (which must be the same)."""
    if set(ref.image_ids) != set(cand.image_ids):
        only_ref = sorted(set(ref.image_ids) - set(cand.image_ids))[:3]
        only_cand = sorted(set(cand.image_ids) - set(ref.image_ids))[:3]
        raise HarnessError(f"saved outputs of {cand_label} and {ref_label} cover different images "
                           f"(only in {ref_label}: {only_ref}, only in {cand_label}: {only_cand}); "
                           "save the same --save-outputs N on the same dataset")
    if len(ref.output_names) != len(cand.output_names):
        raise HarnessError(f"{cand_label} saved {len(cand.output_names)} outputs, {ref_label} "
                           f"{len(ref.output_names)}: the models' outputs cannot be matched by index")
    cand_pos = {i: n for n, i in enumerate(cand.image_ids)}
    errors = []
    for k, name in enumerate(ref.output_names):
        ref_parts, cand_parts = [], []
        for n, image_id in enumerate(ref.image_ids):
            r = ref.arrays[n][k]
            c = cand.arrays[cand_pos[image_id]][k]
            if r.shape != c.shape:
                raise HarnessError(
                    f"output {k} ({name}) of image {ref.file_names[n]}: shape {tuple(c.shape)} in {cand_label} "
                    f"vs {tuple(r.shape)} in {ref_label}; element-wise error needs equal shapes (outputs of "
                    "variable size, such as NMS inside the graph, cannot be compared: run without --save-outputs)")
            ref_parts.append(np.asarray(r, np.float64).ravel())
            cand_parts.append(np.asarray(c, np.float64).ravel())
        r = np.concatenate(ref_parts) if ref_parts else np.zeros(0)
        c = np.concatenate(cand_parts) if cand_parts else np.zeros(0)
        errors.append(_one_output(k, name, r, c))
    return errors


def _one_output(index: int, name: str, r: np.ndarray, c: np.ndarray) -> OutputError:
    nonfinite = int(np.count_nonzero(~(np.isfinite(r) & np.isfinite(c))))
    if nonfinite:
        nan = math.nan
        return OutputError(index, name, r.size, nan, nan, nan, nan, nonfinite)
    if r.size == 0:
        return OutputError(index, name, 0, math.inf, 1.0, 0.0, 0.0, 0)
    diff = np.abs(r - c)
    return OutputError(index, name, int(r.size), sqnr_db(r, c), cosine(r, c), float(diff.max()),
                       float(np.percentile(diff, 99)), 0)
