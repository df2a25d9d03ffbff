"""Paired bootstrap interval on ΔmAP (candidate − reference) over images.

Each resample draws the n images with replacement; the same draw weights both rows (paired), so the
interval reflects how much ΔmAP depends on which images happened to be in the set, with the
image-to-image correlation of the two rows taken into account. Each row's COCO matches are
extracted once (cocomatch) and re-counted with the resample's multiplicities (weighted), which gives
exactly what COCOeval would on the resampled dataset. The interval is the 2.5th-97.5th percentile of
the resampled Δ; when it holds 0 the two rows cannot be told apart on these images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.errors import HarnessError
from harness.fidelity.cocomatch import CocoMatches
from harness.fidelity.weighted import STATS, summary_stats

AREAS = ("all",)  # the interval is on AP over all sizes; per-size ΔAP comes from the evaluator (delta_ap)
RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


@dataclass
class BootstrapResult:
    """Undefined figures (no ground truth to score: COCOeval's -1) are None, as in the rows."""

    reference: dict[str, float | None]  # COCOeval stats of each row on the common images (all weights 1)
    candidate: dict[str, float | None]
    delta: dict[str, float | None]      # candidate − reference
    interval: dict[str, tuple[float, float] | tuple[None, None]]  # percentile interval of the resampled Δ
    resamples: int
    seed: int
    level: float
    images: int
    undefined: dict[str, int]    # resamples where a statistic had no ground truth to score (left out)

    @property
    def verdict(self) -> str:
        """'cannot be told apart' when the ΔmAP interval holds 0, else 'differ' (or 'no interval')."""
        lo, hi = self.interval["map"]
        if lo is None or hi is None:
            return "no interval"
        return "cannot be told apart" if lo <= 0.0 <= hi else "differ"


def _defined(stat: float) -> float | None:
    return float(stat) if stat >= 0 else None


def resample_weights(images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, images) multiplicities of `images` draws with replacement, from a seeded generator."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, images, size=(resamples, images))
    flat = (np.arange(resamples)[:, None] * images + draws).ravel()
    return np.bincount(flat, minlength=resamples * images).reshape(resamples, images)


def _check_pair(ref: CocoMatches, cand: CocoMatches) -> None:
    if not np.array_equal(ref.image_ids, cand.image_ids):
        raise HarnessError("bootstrap: the two rows were evaluated on different images")
    if not np.array_equal(ref.category_ids, cand.category_ids) or ref.area_labels != cand.area_labels:
        raise HarnessError("bootstrap: the two rows were evaluated with different categories or area ranges")


def paired_bootstrap(ref: CocoMatches, cand: CocoMatches, resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> BootstrapResult:
    _check_pair(ref, cand)
    n = len(ref.image_ids)
    if n == 0:
        raise HarnessError("bootstrap: no images to resample")
    names = [(s, name) for s, (name, area, _) in enumerate(STATS) if area in ref.area_labels]
    ones = np.ones((1, n), np.int64)
    point_ref, point_cand = summary_stats(ref, ones)[0], summary_stats(cand, ones)[0]
    weights = resample_weights(n, resamples, seed)
    stats_ref, stats_cand = summary_stats(ref, weights), summary_stats(cand, weights)
    tail = (1.0 - level) / 2.0 * 100.0
    interval, undefined = {}, {}
    for s, name in names:
        defined = (stats_ref[:, s] >= 0) & (stats_cand[:, s] >= 0)
        undefined[name] = int(np.count_nonzero(~defined))
        delta = stats_cand[defined, s] - stats_ref[defined, s]
        if delta.size:
            lo, hi = np.percentile(delta, [tail, 100.0 - tail])
            interval[name] = (float(lo), float(hi))
        else:
            interval[name] = (None, None)
    reference = {name: _defined(point_ref[s]) for s, name in names}
    candidate = {name: _defined(point_cand[s]) for s, name in names}
    return BootstrapResult(
        reference=reference, candidate=candidate,
        delta={name: None if reference[name] is None or candidate[name] is None else candidate[name] - reference[name]
               for _, name in names},
        interval=interval, resamples=resamples, seed=seed, level=level, images=n, undefined=undefined)
