"""Prior and grid geometry shared by the decoders, and the one guess of which head an output came from.

Raw detection heads are told apart by how many rows they return for an input size, not only by
their channel count: at 416x416, YOLOX returns one row per grid cell at strides 8/16/32
(52x52 + 26x26 + 13x13 = 3549), YOLOv5 three (one per anchor, 10647), GFL heads (NanoDet-Plus,
PicoDet) one per cell at strides 8/16/32/64 (3598). A decoder states the layout it expects from its
profile and raises OutputLayoutError when the outputs do not fit; `decode()` then adds the line from
`likely_family`, which looks at the shapes alone and names the heads that would produce them, with a
built-in profile of the same input size to try (asked of the profile itself: the built-in profiles
are a layer above the decoders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from harness.core.config import Invalid
from harness.core.errors import HarnessError

YOLO_STRIDES = (8, 16, 32)
YOLO_P6_STRIDES = (8, 16, 32, 64)
GFL_STRIDES = ((8, 16, 32), (8, 16, 32, 64))
GFL_BOX_BINS = 32  # 4 sides x (reg_max 7 + 1), the reg_max of every NanoDet / PicoDet release


class OutputLayoutError(HarnessError):
    """The model's outputs do not fit the profile's decoder; decode() appends the likely family."""


def level_sizes(width: int, height: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """(rows, cols) of the grid at each stride (ceil division, as NanoDet, PicoDet, YOLOX and YOLO size
    their feature maps; YOLO inputs are multiples of 32, where ceil and floor agree)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def grid_cells(width: int, height: int, strides: Sequence[int]) -> list[int]:
    """Cells per level of the grid at each stride (level_sizes)."""
    return [rows * cols for rows, cols in level_sizes(width, height, strides)]


@lru_cache(maxsize=32)
def cell_grid(width: int, height: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every grid cell's (col, row) index (N, 2) and its stride (N,), float32, level by level, row-major:
    the prior layout of the GFL and YOLOX heads; cached, read-only."""
    cells, cell_strides = [], []
    for (rows, cols), stride in zip(level_sizes(width, height, strides), strides):
        ys, xs = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full(rows * cols, stride, np.float32))
    grid, grid_strides = np.concatenate(cells), np.concatenate(cell_strides)
    grid.flags.writeable = False
    grid_strides.flags.writeable = False
    return grid, grid_strides


def check_strides(strides: Sequence[int]) -> None:
    """For a Params __post_init__: strides list the output levels in order, so they must increase."""
    if list(strides) != sorted(set(strides)):
        raise Invalid("strides", f"{list(strides)} must be increasing (level order of the outputs)")


def strides_text(strides: Sequence[int]) -> str:
    return "/".join(str(int(s)) for s in strides)


@dataclass(frozen=True)
class FamilyMatch:
    """A head whose output layout the given outputs fit: the decoder kind reading it, why, and
    the decoder parameters (strides) a profile would need."""

    kind: str
    why: str
    head: str
    strides: tuple[int, ...] = ()


def _shapes(outputs) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in np.shape(o)) for o in outputs]


def _with_batch(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return (1, *shape) if len(shape) == ndim - 1 else shape


def family_matches(outputs, width: int, height: int, num_classes: int) -> list[FamilyMatch]:
    """Every known head layout the outputs' shapes fit, for an input of width x height."""
    shapes = _shapes(outputs)
    c = num_classes
    found: list[FamilyMatch] = []
    rows3 = [_with_batch(s, 3) for s in shapes if len(s) in (2, 3)]
    if len(shapes) == 1 and len(rows3) == 1:
        _, n, ch = rows3[0]
        for strides in (YOLO_STRIDES, YOLO_P6_STRIDES):
            cells = sum(grid_cells(width, height, strides))
            at = f"at strides {strides_text(strides)}"
            if ch == 5 + c and n == 3 * cells:
                found.append(FamilyMatch("yolov5", f"{n} rows = 3 anchors x {cells} grid cells {at}",
                                         "a YOLOv5 head", strides))
            if ch == 5 + c and n == cells:
                found.append(FamilyMatch("yolox", f"{n} rows = one per grid cell {at}", "a YOLOX head", strides))
            if ch == 4 + c and n == cells:
                found.append(FamilyMatch("paddle", f"{n} rows of 4 + {c} = one per grid cell {at}",
                                         "a PP-YOLOE export without post-processing (or a transposed YOLOv8)",
                                         strides))
            if n == 4 + c and ch == cells:
                found.append(FamilyMatch("yolov8", f"{ch} columns = one per grid cell {at}", "a YOLOv8 head",
                                         strides))
        for strides in GFL_STRIDES:
            cells = sum(grid_cells(width, height, strides))
            if ch == c + GFL_BOX_BINS and n == cells:
                found.append(FamilyMatch("gfl", f"{n} rows of {c} scores + 32 box bins = one per grid cell at "
                                         f"strides {strides_text(strides)}", "a GFL head (NanoDet-Plus)", strides))
    if len(shapes) > 1 and len(rows3) == len(shapes):
        for strides in GFL_STRIDES:
            cells = grid_cells(width, height, strides)
            want = sorted([(n, c) for n in cells] + [(n, GFL_BOX_BINS) for n in cells])
            if sorted((n, ch) for _, n, ch in rows3) == want:
                found.append(FamilyMatch("gfl", f"{len(shapes)} per-level score and box maps = grid cells at "
                                         f"strides {strides_text(strides)}",
                                         "a GFL head (NanoDet, or PicoDet's legacy export)", strides))
    if len(shapes) == 2 and sorted(len(s) for s in shapes) == [1, 2] and any(len(s) == 2 and s[1] == 6 for s in shapes):
        found.append(FamilyMatch("paddle", "bbox [M, 6] + bbox_num [B]", "a PaddleDetection export with NMS inside"))
    if len(shapes) == 2 and len(rows3) == 2:
        (b1, n1, k1), (b2, n2, k2) = rows3
        if (k1 == 4 and (b2, n2) == (b1, c) and k2 == n1) or (k2 == 4 and (b1, n1) == (b2, c) and k1 == n2):
            found.append(FamilyMatch("paddle", f"boxes [B, N, 4] + scores [B, {c}, N]",
                                     "a PaddleDetection export without NMS"))
    if len(shapes) == 3 and len(rows3) == 3 and sorted(s[2] for s in rows3) == [1, 1, 4]:
        found.append(FamilyMatch("yolo-nms", "class ids, scores [B, N, 1] + boxes [B, N, 4]",
                                 "a YOLO export with NMS inside"))
    return found


def likely_family(outputs, profile) -> str:
    """One line naming the heads the outputs' shapes fit, e.g. "3549 rows = one per grid cell at
    strides 8/16/32: a YOLOX head? try --profile yolox-nano-416"; "" when none fits."""
    spec = profile.input
    parts = []
    for match in family_matches(outputs, spec.width, spec.height, profile.num_classes):
        names = profile.builtin_alternatives(match.kind, match.strides)
        if names:
            advice = f"try --profile {' or '.join(names[:3])}"
        else:
            advice = f'use a profile with [decoder] kind = "{match.kind}"'
            if match.strides:
                advice += f" and strides = [{', '.join(map(str, match.strides))}]"
        parts.append(f"{match.why}: {match.head}? {advice}")
    return "; ".join(parts)
