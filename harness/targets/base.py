"""The lifecycle every runtime adapter shares (after Polygraphy's runners).

    target = TargetClass(model_path, profile, options)   # nothing heavy yet
    target.load(batch)            # compile/prepare for a batch size; raise if it cannot run it
    outputs = target.infer(x)     # one batch, synchronous; list of arrays in model output order
    stats = target.benchmark(x, seconds, min_iterations)  # steady-state loop, the target's best way
    target.close()

Adapters know nothing about boxes or COCO; they move tensors and report what they ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError


@dataclass
class BenchStats:
    """What a steady-state loop measured: per-call latencies (ms) and throughput (images/s)."""

    latencies_ms: list[float]
    images: int
    seconds: float
    concurrency: int = 1
    notes: list[str] = field(default_factory=list)
    #: optional per-target figures for the results row (e.g. gpu_compute_ms_p50, h2d_ms_p50)
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TensorInfo:
    name: str
    shape: tuple  # ints, or str/None for dynamic dims
    dtype: str


class Target:
    name = "base"
    description = ""
    #: what the latency/throughput figures cover, shown in reports
    time_covers = "inference call (host tensors in, host tensors out)"

    def __init__(self, model_path: str | Path, profile, options: dict | None = None):
        self.model_path = Path(model_path)
        self.profile = profile
        self.options = dict(options or {})
        self.batch = None
        self.padded_batch = False  # True when a short last batch must be padded to the fixed size
        self.model_batch: int | None = None  # the batch size fixed in the model file; None = dynamic
        self.notes: list[str] = []
        if not self.model_path.exists():
            raise HarnessError(f"model file not found: {self.model_path}")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(can run here, why not / what it runs on)."""
        return True, ""

    def load(self, batch: int) -> None:
        raise NotImplementedError

    def inputs(self) -> list[TensorInfo]:
        raise NotImplementedError

    def outputs(self) -> list[TensorInfo]:
        raise NotImplementedError

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        """One batch; extras = further named model inputs (e.g. Paddle's scale_factor)."""
        raise NotImplementedError

    def benchmark(self, batch: np.ndarray, seconds: float, min_iterations: int,
                  extras: dict | None = None) -> BenchStats:
        """Default steady-state loop: synchronous calls, each timed."""
        latencies = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            self.infer(batch, extras)
            latencies.append((time.perf_counter() - t0) * 1e3)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and len(latencies) >= min_iterations:
                break
        return BenchStats(latencies, len(latencies) * batch.shape[0], elapsed)

    def describe(self) -> dict:
        """Runtime, version, device and options, for the results row."""
        return {}

    def close(self) -> None:
        pass

    def check_input(self, shape: tuple, dtype: str, batch: int) -> None:
        """Fail before the run when the model's input does not fit the profile."""
        spec = self.profile.input
        expected = spec.shape(batch)
        dims = tuple(shape)
        if len(dims) != 4 or any(isinstance(d, int) and d > 0 and d != e for d, e in zip(dims[1:], expected[1:])):
            raise HarnessError(
                f"model {self.model_path.name} input {dims} does not fit profile {self.profile.name} "
                f"(expects {spec.layout} {expected[1:]} {spec.dtype}); check --profile"
            )
        if dtype and dtype != spec.numpy_dtype:
            raise HarnessError(
                f"model {self.model_path.name} input dtype {dtype} does not fit profile {self.profile.name} "
                f"(dtype = {spec.dtype!r}); check --profile"
            )


def fixed_batch_error(model_path: Path, fixed: int, batch: int, why: str) -> HarnessError:
    return HarnessError(
        f"model {model_path.name} has a fixed batch of {fixed} and cannot run batch {batch} ({why}); "
        f"export it with a dynamic batch axis, or pass one model per batch size as --model 'name_bs{{bs}}.onnx'"
    )


def check_onnx_file(path: Path) -> None:
    """A clear error for a file that is not a readable ONNX model (corrupt, truncated, other format)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise HarnessError(f"model {path}: not a readable ONNX file ({str(exc).splitlines()[0][:160] or type(exc).__name__})") from None
    if not model.graph.input or not model.graph.node:
        raise HarnessError(f"model {path}: not a readable ONNX file (no graph inputs or nodes; empty or truncated?)")
