"""Clocks, warm-up and percentiles: the only module that reads time."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

STAGES = ("preprocess", "infer", "decode")


def percentiles_ms(latencies_ms) -> dict:
    """p50/p90/p99 of per-batch latencies, in ms (numpy's linear interpolation)."""
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if values.size == 0:
        return {"latency_ms_p50": None, "latency_ms_p90": None, "latency_ms_p99": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"latency_ms_p50": round(float(p50), 3), "latency_ms_p90": round(float(p90), 3),
            "latency_ms_p99": round(float(p99), 3)}


class StageClock:
    """Accumulates wall time per named stage (sum over the dataset pass)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def per_image_ms(self, images: int) -> dict:
        return {name: round(self.seconds.get(name, 0.0) * 1e3 / max(images, 1), 3) for name in STAGES}


def now() -> float:
    return time.perf_counter()


def warm_up(fn, seconds: float = 0.5, min_iterations: int = 3) -> int:
    """Call fn until both a time and an iteration floor pass (caches, JIT, thread pools settle)."""
    start, count = time.perf_counter(), 0
    while count < min_iterations or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count
