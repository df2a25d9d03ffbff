"""One mode vocabulary, each target's idiom: ort keeps N requests really in flight (observed on a
real session), ov sets the performance hint, trt picks its timing; contradictions are refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.profiles import load_profile
from harness.targets import get_target
from harness.targets.modes import RunMode, split_cores
from harness.targets.timing import LoopRule
from harness.targets.trt.settings import settings_from_options
from tests.tinymodel import write_tiny_model, write_tiny_profile


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_model(tmp_path / "tiny.onnx"), load_profile(write_tiny_profile(tmp_path / "tiny.toml"))


class WatchedSession:
    """A real ONNX Runtime session whose run() counts how many calls are inside it at once. Its first
    `meet` calls wait for each other at a barrier: if they are not really in flight together the
    barrier times out (BrokenBarrierError) and the test fails; it never makes a passing test slower."""

    def __init__(self, session, meet: int):
        self._session = session
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(meet, timeout=60) if meet > 1 else None
        self.meet = meet
        self.inside = self.most = self.calls = 0

    def run(self, names, feeds):
        with self._lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
            first = self.calls <= self.meet
        try:
            if first and self._barrier is not None:
                self._barrier.wait()
            return self._session.run(names, feeds)
        finally:
            with self._lock:
                self.inside -= 1

    def __getattr__(self, name):
        return getattr(self._session, name)


def _ort(tiny, monkeypatch, cores: int, **options):
    monkeypatch.setattr("harness.targets.ort.usable_cores", lambda: cores)
    model, profile = tiny
    target = get_target("ort")(model, profile, options)
    target.load(1)
    return target


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(1, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("cores,options,expect", [
    (3, {}, RunMode("throughput", 3, 3, 3)),                               # one request per core, 1 thread each
    (4, {"streams": 2}, RunMode("throughput", 2, 2, 4)),                   # 2 requests x 2 intra-op threads
    (4, {"threads": 4}, RunMode("throughput", 1, 1, 4)),                   # 4 threads leave room for one request
    (4, {"mode": "latency", "threads": 3}, RunMode("latency", 1, 1, 3)),   # latency: one request
    (4, {"mode": "latency"}, RunMode("latency", 1, 1, None)),              # ONNX Runtime's own thread default
])
def test_ort_mode_resolution(tiny, monkeypatch, cores, options, expect):
    target = _ort(tiny, monkeypatch, cores, **options)
    assert target.run_mode == expect
    options = target._session_obj.get_session_options()
    intra = options.intra_op_num_threads
    assert intra == (0 if expect.threads is None else expect.threads // expect.requests)  # 0: ORT's default
    # several requests with pools of their own: the pools do not spin on the others' cores
    spin = options.get_session_config_entry("session.intra_op.allow_spinning") if expect.requests > 1 and intra > 1 \
        else None
    assert spin in (None, "0") and (spin == "0") is (expect.requests > 1 and intra > 1)
    assert target.describe()["intra_op_spinning"] is not (expect.requests > 1 and intra > 1)
    target.close()


def test_split_cores_fills_the_cores_around_what_is_given():
    assert split_cores(8, None, None) == (8, 1)
    assert split_cores(8, 3, None) == (3, 2)
    assert split_cores(8, None, 3) == (2, 3)
    assert split_cores(2, 4, 4) == (4, 4)  # both given: kept as they are
    assert split_cores(1, None, 2) == (1, 2)


@pytest.mark.parametrize("requests", [1, 3])
def test_ort_timing_loop_keeps_n_requests_in_flight(tiny, monkeypatch, requests):
    target = _ort(tiny, monkeypatch, requests) if requests > 1 else _ort(tiny, monkeypatch, 8, mode="latency")
    watched = WatchedSession(target._session_obj, requests)
    target._session_obj = watched
    x = _x()
    stats = target.benchmark(x, LoopRule.fixed(0.2, 20), capture=2)
    assert watched.most == requests  # really N at once, and never more
    assert stats.concurrency == requests and stats.images == len(stats.latencies_ms)
    assert stats.images == watched.calls - (requests if requests > 1 else 0)  # every timed call counted, warm-ups not
    reference = target.infer(x)
    assert all(np.array_equal(got[0], reference[0]) for got in stats.captured) and len(stats.captured) == 2
    target.close()


def test_ort_accuracy_stream_keeps_n_in_flight_and_order(tiny, monkeypatch):
    target = _ort(tiny, monkeypatch, 3)
    batches = [_x(seed) for seed in range(9)]
    expected = [target.infer(b)[0] for b in batches]
    watched = WatchedSession(target._session_obj, 3)
    target._session_obj = watched
    got = list(target.infer_stream((b, i, None) for i, b in enumerate(batches)))
    assert watched.most == 3
    assert [tag for tag, _, _ in got] == list(range(9))  # input order, whatever finished first
    assert all(np.array_equal(outputs[0], want) for (_, outputs, _), want in zip(got, expected))
    target.close()


@pytest.mark.parametrize("options,hint,mode", [
    ({}, "THROUGHPUT", "throughput"),
    ({"mode": "latency"}, "LATENCY", "latency"),
    ({"hint": "LATENCY"}, "LATENCY", "latency"),                         # the lower-level setting implies the mode
    ({"hint": "CUMULATIVE_THROUGHPUT"}, "CUMULATIVE_THROUGHPUT", "throughput"),
    ({"mode": "throughput", "streams": 1}, "THROUGHPUT", "throughput"),  # NUM_STREAMS overrides the hint's choice
])
def test_ov_mode_sets_the_performance_hint(tiny, options, hint, mode):
    ok, why = get_target("ov").availability()
    if not ok:
        pytest.skip(why)
    model, profile = tiny
    target = get_target("ov")(model, profile, options)
    target.load(1)
    compiled = target._compiled
    assert str(compiled.get_property("PERFORMANCE_HINT")) == hint
    assert target.run_mode.mode == mode
    assert target.run_mode.requests == int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    assert target.run_mode.streams == int(compiled.get_property("NUM_STREAMS"))
    if "streams" in options:
        assert target.run_mode.streams == options["streams"]
    if mode == "latency":
        assert target.run_mode.streams == 1
    stats = target.benchmark(_x(), LoopRule.fixed(0.1, 4))
    assert stats.concurrency == target.run_mode.requests
    target.close()


@pytest.mark.parametrize("target_name,options,fragment", [
    ("ov", {"mode": "latency", "hint": "THROUGHPUT"}, "latency contradicts --hint THROUGHPUT"),
    ("ov", {"mode": "throughput", "hint": "LATENCY"}, "throughput contradicts --hint LATENCY"),
    ("ov", {"mode": "latency", "streams": 2}, "latency contradicts --streams 2"),
    ("ort", {"mode": "latency", "streams": 2}, "latency contradicts --streams 2"),
    ("ort-cuda", {"mode": "latency", "streams": 3}, "latency contradicts --streams 3"),
    ("trt", {"mode": "latency", "timing": "pipelined"}, "latency contradicts -o timing= pipelined"),
    ("trt", {"mode": "throughput", "timing": "serial"}, "throughput contradicts -o timing= serial"),
])
def test_contradictions_are_refused_when_options_are_read(target_name, options, fragment):
    with pytest.raises(HarnessError) as err:
        get_target(target_name).parse_options(options)
    text = str(err.value)
    assert fragment in text and "\n" not in text and text.startswith(f"target {target_name}: --mode")


@pytest.mark.parametrize("options,timing", [
    ({}, "pipelined"),                                       # default mode: throughput
    ({"mode": "latency"}, "serial"),
    ({"timing": "serial"}, "serial"),                        # the lower-level setting alone
    ({"mode": "throughput", "timing": "pipelined"}, "pipelined"),
])
def test_trt_mode_picks_the_timing(options, timing):
    assert settings_from_options(get_target("trt").parse_options(options)).timing == timing


def test_trt_command_line_mode_wins_over_the_settings_file(tmp_path):
    path = tmp_path / "trt.toml"
    path.write_text('timing = "serial"\n')
    cls = get_target("trt")
    assert settings_from_options(cls.parse_options({"trt_settings": str(path)})).timing == "serial"
    assert settings_from_options(cls.parse_options({"trt_settings": str(path), "mode": "throughput"})).timing == "pipelined"


@pytest.mark.parametrize("options,requests", [({}, 2), ({"mode": "latency"}, 1), ({"streams": 4}, 4)])
def test_ort_cuda_resolves_requests_without_a_gpu(tiny, options, requests):
    """The resolution alone (load() needs CUDA): two in flight by default, as trtexec --infStreams=2."""
    model, profile = tiny
    target = get_target("ort-cuda")(model, profile, options)
    run = target.resolve_run_mode()
    assert (run.mode, run.requests, run.threads) == ("latency" if requests == 1 else "throughput", requests, None)
