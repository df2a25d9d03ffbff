"""Do tensor error and mAP rank the nodes alike? Top-k overlap and Spearman's rank correlation.

Over the nodes that have both a tensor error (SQNR, worst first) and a measured mAP cost (largest
first): how many of the k worst by SQNR are among the k costliest by mAP, and Spearman's rho between
the two orders (pandas' rank correlation: ties get their average rank). rho near 1 would mean SQNR
alone could have ranked the nodes; the issue's measurement on a small detector found 0 of 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

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
        frame = pd.DataFrame({"badness": [-both[n][0] for n in names], "cost": [both[n][1] for n in names]})
        value = frame["badness"].corr(frame["cost"], method="spearman")
        rho = None if pd.isna(value) else float(value)
    return RankAgreement(len(names), overlap, rho)
