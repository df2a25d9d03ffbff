"""Do tensor error and mAP rank the nodes alike? Top-k overlap and Spearman's rank correlation.

Over the nodes that have both a tensor error (SQNR, worst first) and a measured mAP cost (largest
first): how many of the k worst by SQNR are among the k costliest by mAP, and Spearman's rho between
the two orders (Pearson's correlation of the ranks, ties getting their average rank, as in
scipy.stats.spearmanr; numpy alone, so the base install needs no SciPy). rho near 1 would mean SQNR
alone could have ranked the nodes; the issue's measurement on a small detector found 0 of 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_KS = (5, 10)


@dataclass(frozen=True)
class RankAgreement:
    nodes: int  # nodes with both figures
    overlap: dict[int, int]  # k -> |worst k by SQNR & costliest k by mAP| (k <= nodes only)
    spearman: float | None  # between -SQNR and mAP cost; None with fewer than 3 nodes or no spread


def agreement(sqnr_db: dict[str, float | None], map_cost: dict[str, float | None]) -> RankAgreement:
    both = {n: (sqnr_db[n], map_cost[n]) for n in sqnr_db
            if n in map_cost and sqnr_db[n] is not None and map_cost[n] is not None}
    names = sorted(both)
    by_sqnr = sorted(names, key=lambda n: (both[n][0], n))  # lowest SQNR (worst) first
    by_cost = sorted(names, key=lambda n: (-both[n][1], n))  # largest cost first
    overlap = {k: len(set(by_sqnr[:k]) & set(by_cost[:k])) for k in TOP_KS if k <= len(names)}
    rho = None
    if len(names) >= 3:
        rho = spearman([-both[n][0] for n in names], [both[n][1] for n in names])
    return RankAgreement(len(names), overlap, rho)


def average_ranks(values) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (scipy.stats.rankdata's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each run of ties
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of ranks starts+1 .. ends
    return ranks


def spearman(a, b) -> float | None:
    """Spearman's rho: Pearson's correlation of the average ranks; None when either side has no spread."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return None if denominator == 0 else float((ra * rb).sum() / denominator)
