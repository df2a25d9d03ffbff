"""Clocks, warm-up and percentiles: the only module that reads time."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

STAGES = ("preprocess", "infer", "decode")

#: What each StageClock entry of the accuracy pass sums (seconds over the whole pass). In the
#: pipelined pass the stages overlap, so they add up to more than the wall time; the row's
#: e2e_fps (images / pass wall time) is the end-to-end figure.
STAGE_MEANING = {
    "preprocess": "read + decode + resize + layout of every image, summed over the worker threads",
    "infer": "each batch's inference, submit to result (for async requests: OpenVINO's own "
             "per-request latency, so requests in flight together are each counted)",
    "decode": "decode + NMS + conversion to COCO dicts, in the decode thread",
    "wait_preprocess": "time inference waited for a preprocessed batch (input starvation)",
    "wait_decode": "time spent after the last inference finishing the decode backlog",
}


def percentiles_ms(latencies_ms) -> dict:
    """p50/p90/p99 of per-batch latencies, in ms (numpy's linear interpolation)."""
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if values.size == 0:
        return {"latency_ms_p50": None, "latency_ms_p90": None, "latency_ms_p99": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"latency_ms_p50": round(float(p50), 3), "latency_ms_p90": round(float(p90), 3),
            "latency_ms_p99": round(float(p99), 3)}


class StageClock:
    """Accumulates wall time per named stage (sum over the dataset pass); see STAGE_MEANING.

    per_image_ms reports the STAGES only; the wait_* entries stay in .seconds for diagnosis."""

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
