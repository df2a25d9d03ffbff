"""Timing like trtexec, said plainly, and the trtexec command that reproduces a row.

    serial     (--mode latency) one batch in flight on one stream, synchronised every iteration:
               latency = H2D + execute + D2H from CUDA events; throughput = batch / latency
    pipelined  (--mode throughput, the default) two batches in flight on two streams (two execution
               contexts), as trtexec keeps
               the GPU busy: while one batch copies, the other computes. Latency per batch then
               includes waiting behind the other stream (latency under load); throughput is
               images / wall time.
In both: gpu_compute_ms_* = events around the execute only (trtexec's "GPU Compute Time"),
h2d_ms_* / d2h_ms_* the copies, enqueue_ms_* the host time of the enqueue call (trtexec's
"Enqueue Time"); with cuda_graph the execute is a CUDA graph launch (trtexec --useCudaGraph).

Both run on harness.targets.timing.timed_loop (the loop every target uses): one step enqueues one batch
and returns the latency of the batch it completed (pipelined: the one enqueued two steps before,
None while the pipeline fills); finish() drains the batches still in flight.

Row fields (BenchStats.extra, declared as FIGURES on TensorRtTarget): enqueue_ms_p50/p90/p99,
gpu_compute_ms_p50/p90/p99, h2d_ms_p50/p90/p99, d2h_ms_p50/p90/p99, gpu_compute_fps. How the row was
timed (timing_mode, cuda_graph) is in the row's runtime (TensorRtTarget.describe()).
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from harness.targets.base import BenchStats
from harness.targets.timing import LoopRule, percentiles, timed_loop

STAGES = ("enqueue_ms", "gpu_compute_ms", "h2d_ms", "d2h_ms")
_COVERS = {"enqueue_ms": "host time of the enqueue call (perf_counter; trtexec's Enqueue Time)",
           "gpu_compute_ms": "CUDA events around the engine's execute only (trtexec's GPU Compute Time)",
           "h2d_ms": "CUDA events around the input copy from pinned host memory to the GPU",
           "d2h_ms": "CUDA events around the output copy back to pinned host memory"}
#: the row figures of TensorRtTarget (Target.figures) -> what each covers
FIGURES = {**{f"{stage}_{p}": f"{p} per batch, ms: {_COVERS[stage]}" for stage in STAGES for p in ("p50", "p90", "p99")},
           "gpu_compute_fps": "batch x 1000 / mean gpu_compute_ms: images/s of the execute alone"}


def timing_summary(h2d_ms, compute_ms, d2h_ms, batch: int, enqueue_ms=None) -> dict:
    """Per-stage times -> row fields (p50/p90/p99 in ms, each only where the sample count supports it:
    harness.targets.timing.percentiles; compute-only throughput)."""
    out: dict = {}
    series = {"gpu_compute_ms": compute_ms, "h2d_ms": h2d_ms, "d2h_ms": d2h_ms}
    if enqueue_ms is not None:
        series["enqueue_ms"] = enqueue_ms
    for label, values in series.items():
        out.update(percentiles(values, digits=4, prefix=f"{label}_"))
    compute = np.asarray(list(compute_ms), dtype=np.float64)
    out["gpu_compute_fps"] = round(batch * 1e3 / float(compute.mean()), 2) if compute.size and compute.mean() > 0 else None
    return out


class _Slot:
    """One EngineIO with its four events and whether a batch is in flight on it."""

    def __init__(self, io):
        self.io = io
        self.events = [io.cuda.event() for _ in range(4)]
        self.busy = False

    def enqueue(self) -> float:
        """H2D, execute, D2H on the slot's stream, events between; returns the host enqueue time (ms)."""
        e0, e1, e2, e3 = self.events
        stream = self.io.stream
        e0.record(stream)
        self.io.h2d()
        e1.record(stream)
        t0 = time.perf_counter()
        self.io.execute()
        enqueue = (time.perf_counter() - t0) * 1e3
        e2.record(stream)
        self.io.d2h()
        e3.record(stream)
        self.busy = True
        return enqueue

    def collect(self, times: dict) -> float:
        """Wait for the slot's batch; record its stage times; return its latency (H2D to D2H, ms)."""
        e0, e1, e2, e3 = self.events
        e3.synchronize()
        times["h2d_ms"].append(e1.ms_since(e0))
        times["gpu_compute_ms"].append(e2.ms_since(e1))
        times["d2h_ms"].append(e3.ms_since(e2))
        self.busy = False
        return e3.ms_since(e0)

    def close(self) -> None:
        for event in self.events:
            event.binding.destroy_event(event)


def run_timing(ios, batch: np.ndarray, extras, rule: LoopRule, mode: str, capture: int = 0) -> BenchStats:
    """The steady-state loop over one (serial) or two (pipelined) EngineIO. The first `capture`
    completed batches' outputs are copied out of the pinned buffers after their events were read,
    so the copy is in no CUDA-event figure (BenchStats.captured, for the runner's loop check)."""
    slots = [_Slot(io) for io in ios]
    n = 0
    for slot in slots:
        n = slot.io.stage(batch, extras)
        slot.io.prepare()  # CUDA graph capture outside the timed loop
    times: dict = {"h2d_ms": [], "gpu_compute_ms": [], "d2h_ms": []}
    enqueue: list[float] = []
    captured: list = []
    turn = itertools.count()

    def complete(slot: _Slot) -> float:
        latency = slot.collect(times)
        if len(captured) < capture:
            captured.append(slot.io.results())
        return latency

    def step() -> float | None:
        slot = slots[next(turn) % len(slots)]
        done = complete(slot) if slot.busy else None  # pipelined: this slot's previous batch
        enqueue.append(slot.enqueue())
        return complete(slot) if mode == "serial" else done

    def finish() -> list[float]:  # every enqueued batch is counted, in the order it was enqueued
        return [complete(slot) for slot in slots if slot.busy]

    try:
        loop = timed_loop(step, rule, multiple_of=len(slots), finish=finish)
    finally:
        for slot in slots:
            slot.close()
    stats = BenchStats.from_loop(loop, n, concurrency=len(slots), captured=captured)
    stats.extra.update(timing_summary(times["h2d_ms"], times["gpu_compute_ms"], times["d2h_ms"], n, enqueue))
    return stats


def trtexec_command(engine_path, shapes: dict, mode: str, cuda_graph: bool) -> str:
    """trtexec line that times the cached engine the way this row did (shapes: {input: dims})."""
    shape_arg = ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items())
    parts = ["trtexec", f"--loadEngine={engine_path}", f"--shapes={shape_arg}"]
    if mode == "pipelined":
        parts.append("--infStreams=2")
    if cuda_graph:
        parts.append("--useCudaGraph")
    return " ".join(parts)


def trtexec_defaults_note(trt_major: int, mode: str, cuda_graph: bool) -> str:
    """How trtexec's own defaults differ from this row, per TensorRT release."""
    ours = (f"this row: {mode} timing, {'with' if cuda_graph else 'without'} CUDA graph, copies timed "
            "separately (h2d_ms/d2h_ms), blocking event sync")
    if trt_major >= 11:
        return ("trtexec 11.x times without data transfers, with CUDA graphs and spin-wait by default: its "
                "Latency/Throughput compare with gpu_compute_ms_*/gpu_compute_fps, not with latency_ms_* (which "
                f"includes the copies); {ours}")
    return ("trtexec 10.x includes H2D/D2H in its Latency, enqueues one batch ahead, and uses neither CUDA graphs "
            "(--useCudaGraph) nor spin-wait (--useSpinWait) unless asked: compare its GPU Compute Time with "
            f"gpu_compute_ms_* and its Latency with latency_ms_*; {ours}")
