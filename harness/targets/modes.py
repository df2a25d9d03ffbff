"""One mode vocabulary for every target: `latency` or `throughput` (the vendors' tools' default).

    latency     one batch in flight: each call has the machine to itself (per-call latency)
    throughput  several batches in flight, as each runtime does it best: OpenVINO's THROUGHPUT hint
                (its streams and infer requests), ONNX Runtime with N requests on N threads of one
                session, TensorRT with two batches on two CUDA streams (trtexec --infStreams=2)

Each target maps the mode onto its own lower-level setting (ov: --hint, trt: timing, ort: --streams);
the lower-level setting stays available, and a contradiction between the two is refused in one line.
What a target resolved is a `RunMode`, recorded in every row, so that the report compares speedups
only between rows of the same mode.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from typing import Literal

from harness.core.config import Invalid

Mode = Literal["latency", "throughput"]
MODES: tuple[str, ...] = typing.get_args(Mode)
DEFAULT_MODE = "throughput"


@dataclass(frozen=True)
class RunMode:
    """What a loaded target runs: the mode and how it realises it (recorded in the row)."""

    mode: str
    requests: int = 1  # batches in flight together in the timing loop
    streams: int | None = None  # the runtime's parallel execution streams (ov NUM_STREAMS, trt CUDA streams)
    threads: int | None = None  # CPU inference threads in all (None: the runtime's own default, or a GPU)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not in {MODES}")

    def summary(self) -> str:
        """'throughput, 2 requests x 1 thread' style words for notes and progress lines."""
        parts = [self.mode, f"{self.requests} in flight"]
        if self.streams is not None:
            parts.append(f"{self.streams} stream{'s' * (self.streams != 1)}")
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' * (self.threads != 1)}")
        return ", ".join(parts)


#: a synchronous target: one call at a time
LATENCY_ONE = RunMode("latency", 1)


def check_mode(mode: str | None, knob: str, value, implies: str | None) -> None:
    """For an Options.__post_init__: refuse `--mode` that contradicts the lower-level setting `knob`
    (given as `value`, which implies mode `implies`; None: it implies nothing)."""
    if mode is not None and implies is not None and mode != implies:
        raise Invalid("mode", f"{mode} contradicts {knob} {value} (which means {implies} mode); "
                              f"give one of the two, or make them agree")


def streams_mode(streams: int | None) -> str | None:
    """What --streams implies: several streams (requests in flight) is throughput mode; one or none, nothing."""
    return "throughput" if (streams or 1) > 1 else None


def check_streams(mode: str | None, streams: int | None, what: str = "streams") -> None:
    """For an Options.__post_init__: --mode latency with several streams is a contradiction."""
    if mode == "latency" and streams_mode(streams):
        raise Invalid("mode", f"latency contradicts --streams {streams} (several {what} is throughput mode); "
                              "give one of the two")


def resolve_mode(mode: str | None, implied: str | None) -> str:
    """The mode a target runs: --mode when given, else what its lower-level setting implies, else
    the default (throughput)."""
    return mode or implied or DEFAULT_MODE


#: the most runtime threads, streams or requests in flight a flag may ask for: far above any CPU
#: this runs on, far below what makes thread creation itself hang (--threads 100000 used to)
MAX_PARALLEL = 1024
#: the largest batch size a flag may ask for (the memory check then refuses what does not fit)
MAX_BATCH = 4096


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask: a container's cpuset, taskset), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def split_cores(cores: int, requests: int | None, threads: int | None) -> tuple[int, int]:
    """(requests in flight, threads per request) for a CPU runtime in throughput mode: what is given
    is kept, the rest fills the cores; neither given: one request per core, one thread each (measured
    best on the 2-core machine for NanoDet at batch 1; see BENCHMARKS.md)."""
    if requests and threads:
        return requests, threads
    if requests:
        return requests, max(1, cores // requests)
    if threads:
        return max(1, cores // threads), threads
    return cores, 1
