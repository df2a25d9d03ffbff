"""Clocks, warm-up and percentiles: the only module that reads time."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

STAGES = ("preprocess", "infer", "decode")

#: What each StageClock entry of the accuracy pass sums (seconds over the whole pass). In the
#: pipelined pass the stages overlap, so they add up to more than the wall time; the row's
#: e2e_fps (images / pass wall time) is the end-to-end figure.
def percentiles_ms(latencies_ms) -> dict:
    """p50/p90/p99 of per-batch latencies, in ms (numpy's linear interpolation)."""
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if values.size == 0:
        return {"latency_ms_p50": None, "latency_ms_p90": None, "latency_ms_p99": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"latency_ms_p50": round(float(p50), 3), "latency_ms_p90": round(float(p90), 3),
            "latency_ms_p99": round(float(p99), 3)}


class StageClock:
    """Accumulates wall time per named stage, summed over the accuracy pass. In the pipelined pass
    the stages overlap, so they add up to more than the wall time. per_image_ms reports the STAGES
    only; wait_preprocess (inference starved of input) and wait_decode (decode backlog after the
    last inference) stay in .seconds for diagnosis."""

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


def warm_up(fn, seconds: float = 0.5, min_iterations: int = 3) -> int:
    """Call fn until both a time and an iteration floor pass (caches, JIT, thread pools settle)."""
    start, count = time.perf_counter(), 0
    while count < min_iterations or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count


@dataclass
class LoopResult:
    iterations: int
    seconds: float  # wall time from the first call to the end of finish()
    latencies_ms: list[float]


def timed_loop(step: Callable[[], float | None], seconds: float, min_iterations: int, multiple_of: int = 1,
               finish: Callable[[], list[float]] | None = None) -> LoopResult:
    """The steady-state loop of every target: call step() until `seconds` have passed and at least
    `min_iterations` calls were made (and the count is a multiple of `multiple_of`, so every async
    request is used equally), then finish() (wait for work in flight; it returns its latencies).
    step() runs one iteration and returns its latency in ms, or None when it has none to report yet."""
    latencies: list[float] = []
    iterations = 0
    start = time.perf_counter()
    while True:
        sample = step()
        if sample is not None:
            latencies.append(sample)
        iterations += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and iterations >= min_iterations and iterations % multiple_of == 0:
            break
    if finish is not None:
        latencies += finish()
    return LoopResult(iterations, time.perf_counter() - start, latencies)
