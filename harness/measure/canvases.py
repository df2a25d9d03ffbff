"""Resized images kept in memory for one `harness run`, so that only its first row decodes the
dataset's JPEGs.

Every row of a run (each batch size, each target) preprocesses the same images with the same
geometry; JPEG decoding and resizing cost 2.5-3.5 ms of CPU per COCO image here, as much as a small
model's inference. The uint8 canvases (after resize and padding, before colour order, normalisation
and layout, which stay per row) are kept when all of them fit a memory budget; otherwise every row
decodes again, exactly as without the cache.
"""

from __future__ import annotations

import os

from harness.profiles import InputSpec

# What the canvas depends on; mean/std, dtype and layout are applied after it (to_model_layout).
GEOMETRY = ("width", "height", "resize", "rounding", "interpolation", "pad_value", "color")


def default_budget() -> int:
    """1 GiB, or a quarter of the memory available now if that is less."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 2 << 30
    return min(1 << 30, available // 4)


class CanvasCache:
    """One dict per input geometry: (image id, path) -> (canvas, meta), filled by the first pass."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = default_budget() if budget_bytes is None else int(budget_bytes)
        self._stores: dict[tuple, dict] = {}
        self._reserved = 0

    def store_for(self, spec: InputSpec, image_count: int) -> dict | None:
        """The store for this geometry, or None when image_count canvases would not fit the budget."""
        key = tuple(getattr(spec, name) for name in GEOMETRY)
        if key not in self._stores:
            size = image_count * spec.width * spec.height * 3
            if self._reserved + size > self.budget:
                return None
            self._reserved += size
            self._stores[key] = {}
        return self._stores[key]

    def held_bytes(self) -> int:
        """Bytes of the canvases held now (the image cache's share of this process's memory)."""
        return sum(canvas.nbytes for store in self._stores.values() for canvas, _ in list(store.values()))
