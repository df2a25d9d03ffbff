"""The steady-state loop's stopping rule (harness.targets.timing) on a fake clock: step functions whose
throughput noise is known, so where the loop stops is determined and nothing here is timed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.targets.timing import (
    T975,
    WINDOWS,
    LoopRule,
    percentile_supported,
    percentiles,
    percentiles_ms,
    throughput_ci,
    timed_loop,
)


class FakeClock:
    """A clock that only moves when a step says how long it took."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(durations, rule: LoopRule, multiple_of: int = 1):
    """timed_loop over a step that takes the next of `durations` seconds on a fake clock."""
    clock = FakeClock()
    it = iter(durations)

    def step() -> float:
        seconds = next(it)
        clock.now += seconds
        return seconds * 1e3

    start = clock.now
    result = timed_loop(step, rule, multiple_of=multiple_of, clock=clock)
    return result, clock.now - start


def steady(mean: float, cv: float, seed: int = 0):
    """Per-step durations with relative noise `cv` around `mean` (no drift: the throughput is stable)."""
    rng = np.random.default_rng(seed)
    while True:
        yield float(mean * max(0.05, 1 + cv * rng.standard_normal()))


def test_stable_throughput_converges_under_one_percent_soon_after_the_floors():
    result, elapsed = run(steady(0.010, 0.05), LoopRule())  # 10 ms +- 5% per batch
    assert result.converged and result.ci95 is not None and result.ci95 <= 0.01
    assert 3.0 <= elapsed < 3.1  # stopped at the first check past the 3 s floor, far from the 60 s cap
    assert result.iterations == len(result.latencies_ms) >= 10


def test_noisy_throughput_runs_to_the_cap_and_says_so():
    rng = np.random.default_rng(1)
    noisy = (float(0.010 * rng.lognormal(0.0, 1.5)) for _ in iter(int, 1))  # heavy-tailed per-batch times
    result, elapsed = run(noisy, LoopRule())
    assert not result.converged and result.ci95 > 0.01
    assert 60.0 <= elapsed < 61.0


def test_a_drifting_throughput_never_converges():
    """A machine getting steadily busier (each batch 5% slower per second): every window is steady
    on its own, but the windows disagree, so more of them never pins the throughput down."""
    clock_sum = [0.0]

    def drifting():
        while True:
            d = 0.010 * (1 + 0.05 * clock_sum[0])
            clock_sum[0] += d
            yield d

    result, elapsed = run(drifting(), LoopRule())
    assert not result.converged and elapsed >= 60.0
    assert result.ci95 > 0.05


@pytest.mark.parametrize("step_seconds,rule,expect_iterations,expect_min_elapsed", [
    (1e-6, LoopRule(min_seconds=3.0), None, 3.0),  # a fast, perfectly steady loop still runs 3 s
    (10.0, LoopRule(min_seconds=3.0, min_iterations=10, max_seconds=60.0), 10, 100.0),  # 10 iterations past the cap
    (0.01, LoopRule.fixed(0.5, 200), 200, 2.0),  # the iteration floor beats a shorter time floor
])
def test_never_stops_before_the_floors(step_seconds, rule, expect_iterations, expect_min_elapsed):
    result, elapsed = run(iter(lambda: step_seconds, None), rule)
    assert elapsed >= expect_min_elapsed - 1e-9
    assert result.iterations >= rule.min_iterations
    if expect_iterations is not None:
        assert result.iterations == expect_iterations


def test_stops_only_on_a_multiple_of_the_requests_in_flight():
    for k in (2, 3, 7):
        result, _ = run(steady(0.010, 0.05, seed=k), LoopRule(), multiple_of=k)
        assert result.iterations % k == 0


def test_fixed_rule_is_a_plain_time_floor():
    result, elapsed = run(steady(0.010, 0.5), LoopRule.fixed(1.0))
    assert 1.0 <= elapsed < 1.1  # noisy, but the cap equals the floor


def test_throughput_ci_is_the_batch_means_formula():
    assert throughput_ci([0.1 * (i + 1) for i in range(WINDOWS)], first=0) is None  # the first stamp is the edge
    equal = [0.1 * i for i in range(WINDOWS * 4 + 1)]
    assert throughput_ci(equal) == pytest.approx(0.0, abs=1e-12)
    # windows of 2 steps after one filling step; durations alternate 1.0 and 3.0 seconds
    durations = [1.0 if j % 2 == 0 else 3.0 for j in range(WINDOWS)]
    stamps = [0.0]
    for d in durations:
        stamps += [stamps[-1] + d / 2, stamps[-1] + d]
    sd = math.sqrt(sum((d - 2.0) ** 2 for d in durations) / (WINDOWS - 1))
    assert throughput_ci(stamps, first=1) == pytest.approx(T975 * sd / math.sqrt(WINDOWS) / 2.0)
    # leading steps that do not fill a window are dropped, not averaged in
    assert throughput_ci([0.0, 50.0, *[s + 50.0 for s in stamps[1:]]], first=1) == pytest.approx(
        throughput_ci(stamps, first=1))


def test_impossible_rules_are_refused():
    with pytest.raises(ValueError, match="max_seconds"):
        LoopRule(min_seconds=5.0, max_seconds=3.0)
    with pytest.raises(ValueError, match="target_ci"):
        LoopRule(target_ci=0.0)
    with pytest.raises(ValueError, match="min_seconds"):
        LoopRule(min_seconds=math.nan)


@pytest.mark.parametrize("n,shown", [(1, {"p50"}), (9, {"p50"}), (10, {"p50", "p90"}), (99, {"p50", "p90"}),
                                     (100, {"p50", "p90", "p99"})])
def test_percentiles_only_where_the_sample_count_supports_them(n, shown):
    values = list(range(1, n + 1))
    got = percentiles(values)
    assert {k for k, v in got.items() if v is not None} == shown
    assert got["p50"] == pytest.approx(np.percentile(values, 50))
    row = percentiles_ms(values)
    assert row["latency_samples"] == n and (row["latency_ms_p99"] is None) == (n < 100)
    assert percentile_supported("latency_ms_p99", n) == (n >= 100)
    assert percentile_supported("latency_ms_p90", n) == (n >= 10)
