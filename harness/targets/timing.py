"""Clocks, warm-up, the steady-state loop and percentiles: the only module that reads time."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

STAGES = ("preprocess", "infer", "decode")

#: percentile -> the fewest samples that support it: with fewer, the "p99" of a loop is close to its
#: maximum (26 samples: the 99th percentile interpolates between the two largest), so it is not shown
PERCENTILE_MIN_SAMPLES = {50: 1, 90: 10, 99: 100}

#: the loop's throughput is judged over this many successive windows of equal iteration counts
#: (the method of batch means: windows long enough that their means are nearly independent)
WINDOWS = 10
#: Student's t, 97.5% quantile, WINDOWS - 1 degrees of freedom (a 95% two-sided interval)
T975 = 2.262


def percentiles(values: Sequence[float], digits: int = 3, prefix: str = "") -> dict:
    """{prefix}p50/p90/p99 of `values` (numpy's linear interpolation); None where there are fewer samples
    than PERCENTILE_MIN_SAMPLES asks for that percentile."""
    arr = np.asarray(list(values), dtype=np.float64)
    out = {}
    for p, needed in PERCENTILE_MIN_SAMPLES.items():
        out[f"{prefix}p{p}"] = round(float(np.percentile(arr, p)), digits) if arr.size >= needed else None
    return out


def percentiles_ms(latencies_ms) -> dict:
    """The row's latency_ms_p50/p90/p99 (gated by sample count) and latency_samples."""
    values = list(latencies_ms)
    return {**percentiles(values, prefix="latency_ms_"), "latency_samples": len(values)}


def summary_ms(latencies_ms, digits: int = 3) -> dict:
    """Per-request latency as benchmark_app prints it (min, median, mean, max) with the gated
    percentiles, in ms; {} without samples."""
    arr = np.asarray(list(latencies_ms), dtype=np.float64)
    if not arr.size:
        return {}
    return {"min": round(float(arr.min()), digits), "median": round(float(np.median(arr)), digits),
            "mean": round(float(arr.mean()), digits), "max": round(float(arr.max()), digits),
            **percentiles(arr, digits), "samples": int(arr.size)}


def percentile_supported(name: str, samples: int | None) -> bool:
    """Is `samples` enough for percentile `name` ('p99', 'latency_ms_p90', ...)? Unknown counts pass."""
    p = int(name.rsplit("p", 1)[-1])
    return samples is None or samples >= PERCENTILE_MIN_SAMPLES.get(p, 1)


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


@dataclass(frozen=True)
class LoopRule:
    """When the steady-state loop stops. Never before both floors (min_seconds, min_iterations);
    then as soon as the throughput's relative 95% confidence half-width (over WINDOWS successive
    windows) is at most target_ci, or at max_seconds if it never gets there (the row then says it
    did not converge). Defaults in the spirit of trtexec (--duration 3 s, at least 10 iterations)
    and benchmark_app (60 s on CPU). max_seconds == min_seconds gives a fixed-length loop."""

    min_seconds: float = 3.0
    min_iterations: int = 10
    max_seconds: float = 60.0
    target_ci: float = 0.01

    def __post_init__(self):
        if not (math.isfinite(self.min_seconds) and self.min_seconds >= 0):
            raise ValueError(f"min_seconds {self.min_seconds}: expected a finite number >= 0")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= self.min_seconds):
            raise ValueError(f"max_seconds {self.max_seconds}: expected a finite number >= min_seconds "
                             f"({self.min_seconds})")
        if self.min_iterations < 1:
            raise ValueError(f"min_iterations {self.min_iterations}: expected >= 1")
        if not (0 < self.target_ci < 1):
            raise ValueError(f"target_ci {self.target_ci}: expected a fraction between 0 and 1 (0.01 = ±1%)")

    @classmethod
    def fixed(cls, seconds: float, min_iterations: int = 10) -> LoopRule:
        """A loop of `seconds` (and at least min_iterations), whatever its confidence interval."""
        return cls(min_seconds=seconds, min_iterations=min_iterations, max_seconds=seconds)


@dataclass
class LoopResult:
    iterations: int
    seconds: float  # wall time from the first call to the end of finish()
    latencies_ms: list[float]
    #: relative 95% half-width of the throughput over WINDOWS windows of the steps (None: too few steps)
    ci95: float | None = None
    converged: bool = False  # ci95 <= the rule's target_ci when the loop stopped (else: stopped at max_seconds)


def throughput_ci(stamps: Sequence[float], first: int = 1, group: int = 1) -> float | None:
    """Relative 95% half-width of the loop's throughput from its step completion times `stamps`.

    The steps after the first `first` (the pipeline filling: async requests started before any
    finished) are cut into WINDOWS successive windows of equal step counts, a multiple of `group` so
    that every async request is in each window equally; leading steps left over are dropped (the
    start is where transients are). With equal counts throughput is proportional to 1 / window
    duration, and its relative half-width is t * sd(durations) / sqrt(WINDOWS) / mean(durations)
    (the method of batch means). Only WINDOWS + 1 stamps are read, so the loop can ask after every step.
    None while there are fewer than WINDOWS x group steps to judge."""
    first = max(1, first)
    size = ((len(stamps) - first) // (WINDOWS * group)) * group
    if size <= 0:
        return None
    lead = len(stamps) - size * WINDOWS  # >= first: the edge before the first window is a real stamp
    edges = [stamps[lead - 1 + size * j] for j in range(WINDOWS + 1)]
    durations = [b - a for a, b in zip(edges, edges[1:])]
    mean = sum(durations) / WINDOWS
    if mean <= 0:
        return None
    sd = math.sqrt(sum((d - mean) ** 2 for d in durations) / (WINDOWS - 1))
    return T975 * sd / math.sqrt(WINDOWS) / mean


def timed_loop(step: Callable[[], float | None], rule: LoopRule, multiple_of: int = 1,
               finish: Callable[[], list[float]] | None = None, clock: Callable[[], float] = time.perf_counter,
               ) -> LoopResult:
    """The steady-state loop of every target: call step() until `rule` says stop (the floors passed,
    then the throughput's confidence half-width under its target or the time cap reached) and the
    count is a multiple of `multiple_of` (so every async request is used equally), then finish()
    (wait for work in flight; it returns its latencies). step() runs one iteration and returns its
    latency in ms, or None when it has none to report yet. `clock` is for tests (a fake clock)."""
    latencies: list[float] = []
    stamps: list[float] = []
    start = clock()
    ci = None
    while True:
        sample = step()
        now = clock()
        if sample is not None:
            latencies.append(sample)
        stamps.append(now)
        iterations = len(stamps)
        elapsed = now - start
        if elapsed < rule.min_seconds or iterations < rule.min_iterations or iterations % multiple_of:
            continue
        ci = throughput_ci(stamps, multiple_of, multiple_of)
        converged = ci is not None and ci <= rule.target_ci
        if converged or elapsed >= rule.max_seconds:
            break
    if finish is not None:
        latencies += finish()
    return LoopResult(iterations, clock() - start, latencies, ci, converged)
