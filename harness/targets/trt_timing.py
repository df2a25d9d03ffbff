"""Timing like trtexec, said plainly, and the trtexec command that reproduces a row.

    serial     one batch in flight on one stream, synchronised every iteration (today's mode):
               latency = H2D + execute + D2H from CUDA events; throughput = batch / latency
    pipelined  two batches in flight on two streams (two execution contexts), as trtexec keeps
               the GPU busy: while one batch copies, the other computes. Latency per batch then
               includes waiting behind the other stream (latency under load); throughput is
               images / wall time.
In both: gpu_compute_ms_* = events around the execute only (trtexec's "GPU Compute Time"),
h2d_ms_* / d2h_ms_* the copies, enqueue_ms_* the host time of the enqueue call (trtexec's
"Enqueue Time"); with cuda_graph the execute is a CUDA graph launch (trtexec --useCudaGraph).

Row fields (BenchStats.extra): timing_mode, cuda_graph, enqueue_ms_p50/p90/p99,
gpu_compute_ms_p50/p90/p99, h2d_ms_p50/p90/p99, d2h_ms_p50/p90/p99, gpu_compute_fps.
"""

from __future__ import annotations

import time

import numpy as np

from harness.targets.base import BenchStats

STAGES = ("enqueue_ms", "gpu_compute_ms", "h2d_ms", "d2h_ms")


def timing_summary(h2d_ms, compute_ms, d2h_ms, batch: int, enqueue_ms=None) -> dict:
    """Per-stage times -> row fields (p50/p90/p99 in ms, compute-only throughput)."""
    out: dict = {}
    series = {"gpu_compute_ms": compute_ms, "h2d_ms": h2d_ms, "d2h_ms": d2h_ms}
    if enqueue_ms is not None:
        series["enqueue_ms"] = enqueue_ms
    for label, values in series.items():
        arr = np.asarray(list(values), dtype=np.float64)
        if arr.size == 0:
            out.update({f"{label}_p50": None, f"{label}_p90": None, f"{label}_p99": None})
            continue
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        out.update({f"{label}_p50": round(float(p50), 4), f"{label}_p90": round(float(p90), 4),
                    f"{label}_p99": round(float(p99), 4)})
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

    def collect(self, times: dict) -> None:
        e0, e1, e2, e3 = self.events
        e3.synchronize()
        times["h2d_ms"].append(e1.ms_since(e0))
        times["gpu_compute_ms"].append(e2.ms_since(e1))
        times["d2h_ms"].append(e3.ms_since(e2))
        times["total"].append(e3.ms_since(e0))
        self.busy = False

    def close(self) -> None:
        for event in self.events:
            event.binding.destroy_event(event)


def run_timing(ios, batch: np.ndarray, extras, seconds: float, min_iterations: int, mode: str,
               cuda_graph: bool) -> BenchStats:
    """The steady-state loop over one (serial) or two (pipelined) EngineIO."""
    slots = [_Slot(io) for io in ios]
    n = 0
    for slot in slots:
        n = slot.io.stage(batch, extras)
        slot.io.prepare()  # CUDA graph capture outside the timed loop
    times: dict = {"h2d_ms": [], "gpu_compute_ms": [], "d2h_ms": [], "total": []}
    enqueue: list[float] = []
    start = time.perf_counter()
    index = 0
    try:
        while True:
            slot = slots[index % len(slots)]
            if slot.busy:
                slot.collect(times)
            enqueue.append(slot.enqueue())
            index += 1
            if mode == "serial":
                slot.collect(times)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and len(times["total"]) >= min_iterations:
                break
        for slot in slots:  # drain: every enqueued batch is counted
            if slot.busy:
                slot.collect(times)
        elapsed = time.perf_counter() - start
    finally:
        for slot in slots:
            slot.close()
    done = len(times["total"])
    stats = BenchStats(times["total"], done * n, elapsed, concurrency=len(slots))
    stats.extra.update({"timing_mode": mode, "cuda_graph": bool(cuda_graph)})
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
