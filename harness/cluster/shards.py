"""One accuracy pass split over a cluster's CPU workers: shards of the images, one pass each, merged.

A shard is a contiguous run of the dataset's images (dataset order, by image id) holding a whole number
of batches, so every batch is the batch the single-process pass makes and the merged detections are
that pass's, in its order; the caller scores them once (one COCOeval, or the sensitivity matches).
The shards run the same target, model, options and batch size as the row; they are untimed, one CPU a
task, SPREAD over the nodes and never retried. Where they may run, and what they may not sit beside, is
the caller's to decide (docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from dataclasses import dataclass

from harness.measure.pipeline import PassResult, accuracy_pass
from harness.targets.timing import StageClock


@dataclass(frozen=True)
class PassSpec:
    """What one shard runs: the row's target, model file (for its batch size), options and batch size."""

    target: str
    model: str
    profile: object  # harness.profiles.Profile
    options: object
    bs: int
    workers: int = 2
    skip_bad: bool = False


def shard_images(images: list, shards: int, bs: int) -> list[list]:
    """`images` in at most `shards` contiguous runs, each a whole number of batches of `bs` (the last may
    end in a short batch, as the single-process pass's last batch does); never an empty shard."""
    if shards < 1 or bs < 1:
        raise ValueError("shards and bs must be positive")
    batches = math.ceil(len(images) / bs)
    shards = max(1, min(shards, batches))
    per, extra = divmod(batches, shards)
    out, start = [], 0
    for index in range(shards):
        count = (per + (index < extra)) * bs
        out.append(images[start:start + count])
        start += count
    return [part for part in out if part]


def run_shard(spec: PassSpec, images: list) -> dict:
    """On a worker: the accuracy pass of `images` (harness.measure.pipeline.accuracy_pass, as the row's
    own pass runs it); returns {"passed": PassResult, "node": where it ran}."""
    from harness.measure.envinfo import cpu_model
    from harness.targets import get_target

    started = time.time()
    target_cls = get_target(spec.target)
    target = target_cls(spec.model, spec.profile, task_options(target_cls, spec.options), (spec.bs,))
    with target.loaded(spec.bs):
        passed = accuracy_pass(target, images, spec.bs, spec.profile, workers=spec.workers, skip_bad=spec.skip_bad)
    return {"passed": passed, "node": {**node_info(), "cpu": cpu_model(), "images": len(images),
                                       "started": round(started, 3), "finished": round(time.time(), 3)}}


def task_options(target_cls, options):
    """The target's options inside an untimed worker task, its runtime's threads bounded by the CPUs Ray
    gave the task: one request in flight (streams=1) on that many threads. ONNX Runtime and OpenVINO take
    every core of the host by default (throughput mode: a request per core), so two one-CPU tasks on a
    host would each run as many threads as it has cores and crowd each other (and whatever else Ray
    placed there). A thread count the user set (-o threads=N) is kept, with its streams; a target without
    a thread option, or a task outside Ray, is left as it is. Outputs do not depend on it (the cluster
    tests compare the detections byte for byte with the single-process run's)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU") if ray.is_initialized() else None
    if options is None:
        options = target_cls.parse_options({})
    if not cpus or not dataclasses.is_dataclass(options):
        return options
    fields = {f.name for f in dataclasses.fields(options)}
    threads, streams = target_cls.run_flags.get("threads", "threads"), target_cls.run_flags.get("streams", "streams")
    bounded = {}
    if threads in fields and getattr(options, threads) is None:
        bounded[threads] = max(1, int(cpus))
        # throughput mode would put one request per core of the host in flight, each on its own thread
        if streams in fields and getattr(options, streams) is None:
            bounded[streams] = 1
    return dataclasses.replace(options, **bounded) if bounded else options


def node_info() -> dict:
    """The Ray node, host, address and process a task runs in (inside a task only)."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


def merge(parts: list[PassResult], wall_seconds: float = 0.0) -> PassResult:
    """The shards' passes as one, in shard order (= dataset order); stage seconds are summed."""
    merged = PassResult([], [], [], StageClock(), wall_seconds)
    for part in parts:
        merged.detections.extend(part.detections)
        merged.counted.extend(part.counted)
        merged.failed.extend(part.failed)
        merged.bad_outputs.extend(part.bad_outputs)
        merged.names.update(part.names)
        for stage, seconds in part.clock.seconds.items():
            merged.clock.seconds[stage] += seconds
    return merged


def submit(ray, spec: PassSpec, images: list, shards: int, name: str) -> list:
    """The shard tasks of one pass (one CPU each, SPREAD, never retried); their ObjectRefs, in order."""
    task = ray.remote(run_shard)
    return [task.options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=0, retry_exceptions=False,
                         name=f"{name} shard {i + 1}").remote(spec, part)
            for i, part in enumerate(shard_images(images, shards, spec.bs))]


__all__ = ["PassSpec", "shard_images", "run_shard", "merge", "submit", "node_info"]
