"""The lifecycle every runtime adapter shares (after Polygraphy's BaseRunner).

    target = TargetClass(model_path, profile, options)   # options validated, nothing heavy yet
    with target.loaded(batch):    # compile/prepare for a batch size; raise if it cannot run it
        outputs = target.infer(x)                  # one batch, synchronous; arrays in model output order
        for tag, outputs, seconds in target.infer_stream(items): ...   # many batches, in order
        stats = target.benchmark(x, LoopRule())                        # steady-state loop
    # closed on leaving the block, also after an error

Declared state, set by load(): `batch` (loaded batch size), `model_batch` (batch fixed in the file,
None = dynamic), `padded_batch` (a short last batch must be padded), `precision` (what really runs,
from the graph and the runtime's settings, never just what was asked), `run_mode` (latency or
throughput, and how many batches are in flight: harness.targets.modes), `notes` and `flags` for the row.
Adapters know nothing about boxes or COCO; they move tensors and report what they ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.core import config
from harness.core.errors import HarnessError
from harness.model.onnx_model import inspect_onnx
from harness.targets.figures import declare_figures
from harness.targets.inflight import ThreadLoops, ordered_stream
from harness.targets.modes import LATENCY_ONE, RunMode
from harness.targets.timing import LoopResult, LoopRule, timed_loop


@dataclass(frozen=True)
class NoOptions:
    """For a target that takes no options."""


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
    #: outputs of the first iterations of the loop, to check that the loop computed what infer() does
    captured: list = field(default_factory=list)
    ci95: float | None = None  # relative 95% half-width of the throughput (harness.targets.timing.throughput_ci)
    converged: bool | None = None  # the loop stopped on its confidence target, not on its time cap

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_loop(cls, loop: LoopResult, images_per_iteration: int, concurrency: int = 1,
                  captured: list | None = None, iterations: int | None = None) -> BenchStats:
        """The figures of one timed_loop; `iterations` when the loop's step count is not the number of
        batches run (a loop whose finish() completes batches of its own)."""
        done = loop.iterations if iterations is None else iterations
        return cls(loop.latencies_ms, done * images_per_iteration, loop.seconds, concurrency=concurrency,
                   captured=list(captured or []), ci95=loop.ci95, converged=loop.converged)


class Target:
    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: what the latency/throughput figures cover, shown in reports
    time_covers: ClassVar[str] = "inference call (host tensors in, host tensors out)"
    #: where inference runs: "cpu" rows read RAPL energy, "gpu" rows NVML (GPU 0: clocks, memory, energy)
    device_kind: ClassVar[str] = "cpu"
    #: the options dataclass this target takes (harness.core.config rules); CLI flags map onto its fields
    Options: ClassVar[type] = NoOptions
    #: model file suffixes the target loads (the contract tests write their test graphs in the first)
    model_formats: ClassVar[tuple[str, ...]] = (".onnx",)
    #: `harness run` flags this target takes under another option name (e.g. {"threads": "num_threads"})
    run_flags: ClassVar[dict] = {}
    #: (image id, path) pairs of the first few images of the run, set by the runner before load(): for
    #: targets that verify a conversion on real inputs (e.g. trt's fp16 check) instead of synthetic ones
    sample_images: tuple = ()

    # What the entry declares, read by the commands and reports (nothing else names a target):
    #: timing figures its benchmark() adds to the row (BenchStats.extra) -> what each covers
    figures: ClassVar[dict[str, str]] = {}
    #: its fp32 rows are the default reference of `report --fidelity` and `report`'s baseline; lower first
    reference_rank: ClassVar[int | None] = None
    #: it runs the Q/DQ ONNX files `harness quantize` writes, so `harness sensitivity --target` may score on it
    runs_qdq_onnx: ClassVar[bool] = False
    #: Python distributions whose versions the results' environment records
    packages: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declare_figures(cls.figures)

    def __init__(self, model_path: str | Path, profile, options=None, batch_sizes: Iterable[int] = ()):
        self.model_path = Path(model_path)
        self.profile = profile
        self.options = options if isinstance(options, self.Options) else self.parse_options(options or {})
        self.batch_sizes = tuple(int(b) for b in batch_sizes)  # every batch size of the run (engine profiles)
        self.batch: int | None = None
        self.padded_batch = False
        self.model_batch: int | None = None
        self.precision: str | None = None
        self.notes: list[str] = []
        self.flags: set[str] = set()
        #: what load() resolved; a target that only has synchronous infer() runs one call at a time
        self.run_mode: RunMode = LATENCY_ONE
        #: the batch-N rewrite of a fixed-batch-1 ONNX this row runs (harness.model.batch_rewrite), else None
        self.batch_rewrite: dict | None = None
        if not self.model_path.exists():
            raise HarnessError(f"model file not found: {self.model_path}")

    @classmethod
    def parse_options(cls, data: Mapping, where: str | None = None, from_text: bool = False):
        """The target's Options from plain data (CLI flags, a settings file); strict, one-line errors."""
        return config.load(cls.Options, data, where or f"target {cls.name}", config.FLAGS, from_text=from_text)

    @classmethod
    def option_names(cls) -> list[str]:
        return config.known_keys(cls.Options)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(can run here, why not / what it runs on)."""
        return True, ""

    # - lifecycle ---------------------------------------------------------------------------------

    def load(self, batch: int) -> None:
        raise NotImplementedError

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        """One batch; extras = further named model inputs (e.g. Paddle's scale_factor)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def output_names(self) -> list[str]:
        """Names of the model's outputs in infer()'s order (saved with --save-outputs); [] when the
        file does not say (callers then number them). This default reads an ONNX file's graph."""
        if self.model_path.suffix.lower() != ".onnx":
            return []
        return [t.name for t in inspect_onnx(self.model_path).outputs]

    def describe(self) -> dict:
        """Runtime, version, device and options, for the results row."""
        return {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def loaded(self, batch: int) -> Iterator[Target]:
        """load(batch) ... close(), the close also after an error."""
        try:
            self.load(batch)
            yield self
        finally:
            self.close()

    # - running -----------------------------------------------------------------------------------

    def infer_stream(self, items) -> Iterator[tuple[object, list[np.ndarray], float]]:
        """Infer (batch, tag, extras) items in order, yielding (tag, outputs, seconds). This default
        makes one synchronous infer() per batch (every runtime we use releases the GIL there); targets
        with asynchronous requests, or a thread-safe infer() (ort), override it to keep several
        batches in flight."""
        return ordered_stream(items, self.infer, 1)

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        """Steady-state loop of synchronous infer() calls, each timed, until `rule` says stop
        (harness.targets.timing.timed_loop)."""
        return call_loop(lambda _: self.infer(batch, extras), rule, batch.shape[0], capture)

    # - batch-N from a fixed-batch-1 ONNX ----------------------------------------------------------

    def rewritten_for_batch(self, batch: int) -> str:
        """The path of the checked batch-`batch` rewrite of this fixed-batch-1 ONNX file
        (harness.model.batch_rewrite), checked on the run's first images (seeded random input where the
        run has none); the reason the graph cannot follow becomes the row's fixed-batch error."""
        from harness.model.batch_rewrite import BatchRewriteError, batch_model

        sample, extras, checked_on = self._rewrite_sample(batch)
        try:
            rewritten = batch_model(self.model_path, batch, sample, extras, checked_on)
        except BatchRewriteError as exc:
            raise fixed_batch_error(self.model_path, 1, batch, f"batch rewrite: {exc}") from None
        self.batch_rewrite = rewritten.row_field()
        self.note(f"batch rewritten from 1 to {batch} in the ONNX graph ({len(rewritten.rewritten)} batch "
                  f"constants); checked on {rewritten.checked_on}: largest difference from batch-1 runs "
                  f"{rewritten.max_abs_diff:.3g}" + (" (cached)" if rewritten.cached else ""))
        return rewritten.path

    def _rewrite_sample(self, batch: int) -> tuple[np.ndarray | None, dict | None, str]:
        """`batch` of the run's first images preprocessed (cycled when fewer), their extra inputs,
        and what they are; (None, None, "") where the run gave no images."""
        from harness.images.preprocess import prepare_batch
        from harness.model.extra_inputs import extra_inputs

        if not self.sample_images:
            return None, None, ""
        chosen = [self.sample_images[i % len(self.sample_images)] for i in range(batch)]
        prepared = prepare_batch(chosen, self.profile.input, None, skip_bad=True)
        if len(prepared.metas) != batch:
            return None, None, ""
        distinct = min(batch, len(self.sample_images))
        return prepared.tensor, extra_inputs(self.profile, prepared.metas, batch) or None, \
            f"{batch} real images" if distinct == batch else f"{batch} inputs from {distinct} real images"

    # - shared checks -----------------------------------------------------------------------------

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check_input(self, shape: tuple, dtype: str, batch: int) -> None:
        """Fail before the run when the model's input does not fit the profile."""
        check_image_input(self.model_path.name, self.profile, shape, dtype, batch)

    def resolve_precision(self, graph_precision: str, requested: str | None, runs: str | None = None) -> str:
        """The precision a row is labelled with: the graph's own when it holds int8 (Q/DQ, FakeQuantize)
        or fp16, else what the runtime was set to run (`runs`, default fp32). A --precision that the
        graph and runtime settings do not give is refused rather than written into the row."""
        actual = graph_precision if graph_precision != "fp32" else (runs or "fp32")
        if requested and requested != actual:
            raise HarnessError(
                f"target {self.name}: --precision {requested} does not match what would run ({actual}: "
                f"{'the graph holds ' + graph_precision if graph_precision != 'fp32' else 'the graph is fp32'}); "
                + ("quantize the model with `harness quantize` for int8" if requested == "int8" else
                   f"target {self.name} runs the graph as it is")
            )
        return actual


def call_loop(call: Callable[[int], object], rule: LoopRule, images_per_call: int, capture: int = 0,
              threads: int = 1) -> BenchStats:
    """The timing loop of a runtime with synchronous calls: call(k) one at a time in this thread, or
    on `threads` threads at once (k = the thread's index; inflight.ThreadLoops), each call timed.
    capture: keep the outputs of the first completions (for the runner's loop check)."""
    captured: list = []
    if threads <= 1:
        def step() -> float:
            t0 = time.perf_counter()
            outputs = call(0)
            elapsed = (time.perf_counter() - t0) * 1e3
            if len(captured) < capture:
                captured.append(outputs)
            return elapsed

        return BenchStats.from_loop(timed_loop(step, rule), images_per_call, captured=captured)
    loops = ThreadLoops(call, threads).start()
    drained: list = []

    def step_threaded() -> float:
        latency, outputs = loops.next_completion()
        if len(captured) < capture:
            captured.append(outputs)
        return latency

    def finish() -> list[float]:  # the calls in flight when the loop stopped are run and counted
        drained.extend(loops.stop())
        return [latency for latency, _ in drained]

    try:
        loop = timed_loop(step_threaded, rule, finish=finish)
    finally:
        loops.stop()
    return BenchStats.from_loop(loop, images_per_call, concurrency=threads, captured=captured,
                                iterations=loop.iterations + len(drained))


def installed_version(module: str, distributions: tuple[str, ...]) -> tuple[str, str] | None:
    """(distribution, version) of an installed runtime, read from its package metadata without
    importing it (`harness targets` lists what runs here without loading OpenVINO or ONNX Runtime);
    None when the module cannot be found. A module found without metadata is imported for its version."""
    import importlib
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return None
    for name in distributions:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return module, str(getattr(importlib.import_module(module), "__version__", "(version unknown)"))


def check_image_input(model_name: str, profile, shape: tuple, dtype: str, batch: int) -> None:
    """The model's image input (dims, None/names for dynamic ones; numpy dtype name) must take what the
    profile feeds: its layout and size, and its type (f32, f16 or u8); one line naming both otherwise."""
    spec = profile.input
    expected = spec.shape(batch)
    dims = tuple(shape)
    if len(dims) != 4 or any(isinstance(d, int) and d > 0 and d != e for d, e in zip(dims[1:], expected[1:])):
        raise HarnessError(
            f"model {model_name} input {dims} does not fit profile {profile.name} "
            f"(expects {spec.layout} {expected[1:]} {spec.dtype}); check --profile"
        )
    if dtype and dtype != spec.numpy_dtype:
        raise HarnessError(
            f"model {model_name} input dtype {dtype} does not fit profile {profile.name} "
            f"(dtype = {spec.dtype!r}); check --profile"
        )


def fixed_batch_error(model_path: Path, fixed: int, batch: int, why: str) -> HarnessError:
    return HarnessError(
        f"model {model_path.name} has a fixed batch of {fixed} and cannot run batch {batch} ({why}); "
        f"export it with a dynamic batch axis, or pass one model per batch size as --model "
        f"'name_bs{{bs}}{model_path.suffix or '.onnx'}'"
    )
