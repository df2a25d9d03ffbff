"""OpenVINO CPU target (`ov`): ONNX or IR, performance hint selectable, async infer requests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.core.config import setting
from harness.core.errors import HarnessError, TargetUnavailable, first_line
from harness.model.extra_inputs import check_model_inputs, dims_text
from harness.model.onnx_model import TensorInfo, inspect_onnx
from harness.targets.base import BenchStats, Target, fixed_batch_error, installed_version
from harness.targets.cpu_isa import guard_amx
from harness.targets.modes import MAX_PARALLEL, Mode, RunMode, check_mode, check_streams, resolve_mode
from harness.targets.timing import LoopRule, timed_loop

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # --precision -> INFERENCE_PRECISION_HINT
HINT_MODE = {"THROUGHPUT": "throughput", "CUMULATIVE_THROUGHPUT": "throughput", "LATENCY": "latency"}
MODE_HINT = {"throughput": "THROUGHPUT", "latency": "LATENCY"}


@dataclass(frozen=True)
class OvOptions:
    """Options of the `ov` target."""

    mode: Mode | None = None  # latency | throughput (default): sets PERFORMANCE_HINT unless --hint does
    # PERFORMANCE_HINT, the lower-level setting; default: the mode's (THROUGHPUT, LATENCY)
    hint: Literal["THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT"] | None = None
    streams: int | None = setting(None, ge=1, le=MAX_PARALLEL)  # NUM_STREAMS; default: the hint's choice
    threads: int | None = setting(None, ge=1, le=MAX_PARALLEL)  # INFERENCE_NUM_THREADS; default: OpenVINO's choice
    nireq: int | None = setting(None, ge=1, le=MAX_PARALLEL)  # requests in flight; default: OPTIMAL_NUMBER_OF_INFER_REQUESTS
    # fp32 / bf16 / fp16 set INFERENCE_PRECISION_HINT; int8 only labels a quantized graph (checked at load)
    precision: Literal["fp32", "bf16", "fp16", "int8"] | None = None

    def __post_init__(self):
        check_mode(self.mode, "--hint", self.hint, HINT_MODE.get(self.hint or ""))
        check_streams(self.mode, self.streams)

    @property
    def resolved_mode(self) -> str:
        return resolve_mode(self.mode, HINT_MODE.get(self.hint or ""))

    @property
    def resolved_hint(self) -> str:
        return self.hint or MODE_HINT[self.resolved_mode]


def _import_ov():
    guard_amx()
    try:
        import openvino
    except ImportError:
        raise TargetUnavailable("openvino is not installed: pip install 'harness[ov]'") from None
    return openvino


def _dims(partial_shape) -> tuple:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


def _tensor(port) -> TensorInfo:
    """A model input port as the ONNX inspector describes an input (an .xml IR has no ONNX graph)."""
    return TensorInfo(port.get_any_name(), _dims(port.get_partial_shape()), str(port.get_element_type().to_dtype()))


class OpenVinoCpu(Target):
    name = "ov"
    reference_rank = 1
    runs_qdq_onnx = True
    packages = ("openvino",)
    description = "OpenVINO, CPU device, async infer requests"
    time_covers = "inference (host tensors, async infer requests in flight together)"
    Options = OvOptions

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        found = installed_version("openvino", ("openvino",))
        if found is None:
            return False, "openvino is not installed: pip install 'harness[ov]'"
        return True, f"openvino {found[1]}"

    def _read(self, path: str | Path | None = None):
        """The model read by OpenVINO: the target's file, or `path` (a batch rewrite of it)."""
        ov = _import_ov()
        if path is not None:
            try:
                return self._core.read_model(str(path))
            except Exception as exc:
                raise HarnessError(f"model {path}: OpenVINO cannot read it ({first_line(exc)})") from None
        if self.model_path.suffix.lower() not in (".onnx", ".xml"):
            raise HarnessError(f"model {self.model_path}: target ov needs an .onnx or OpenVINO .xml file")
        if self.model_path.suffix.lower() == ".xml" and not self.model_path.with_suffix(".bin").is_file():
            raise HarnessError(f"model {self.model_path}: its weights {self.model_path.with_suffix('.bin').name} are missing")
        if self.model_path.suffix.lower() == ".onnx":
            inspect_onnx(self.model_path)  # a clear error for a bad file, else OpenVINO tries every frontend
        self._core = getattr(self, "_core", None) or ov.Core()
        try:
            return self._core.read_model(str(self.model_path))
        except Exception as exc:
            raise HarnessError(f"model {self.model_path}: OpenVINO cannot read it ({first_line(exc)})") from None

    def load(self, batch: int) -> None:
        ov = _import_ov()
        model = self._read()
        port = model.inputs[0]
        dims = _dims(port.get_partial_shape())
        self.check_input(dims, str(port.get_element_type().to_dtype()), batch)
        check_model_inputs([_tensor(p) for p in model.inputs], self.profile, self.model_path.name, batch)
        fixed = dims[0] if dims and dims[0] is not None else None
        self.model_batch = fixed
        self.padded_batch = False
        dynamic_size = any(d is None for d in dims[1:])
        if fixed != batch or dynamic_size:
            # Static shapes compile to faster code; try the requested batch for dynamic and fixed graphs,
            # and the profile's size for dynamic height/width (check_input matched the fixed dims to it).
            why = self._reshape(ov, model, port, fixed, batch)
            if why and fixed == 1 and self.model_path.suffix.lower() == ".onnx":
                # OpenVINO's reshape stops at constants that hard-code batch 1: the checked batch-N
                # rewrite of the ONNX file (harness.model.batch_rewrite) needs no reshape.
                model = self._read(self.rewritten_for_batch(batch))
                self.note(f"OpenVINO reshape to batch {batch} failed ({why}); ran the batch-rewritten ONNX")
            elif why:
                raise fixed_batch_error(self.model_path, fixed or 1, batch, why)
            elif fixed is not None and fixed != batch:
                self.notes.append(f"reshaped from batch {fixed} to {batch}")
            if dynamic_size:
                self.note(f"dynamic input dims {dims_text(dims)} set to the profile's {list(self.profile.input.shape(batch))}")
        self.padded_batch = True  # the compiled graph is static: a short last batch is padded
        hint = self.options.resolved_hint
        requested = self.options.precision
        runs = requested if requested in OV_PRECISIONS else "fp32"
        # Pin the precision: on CPUs with bf16 support OpenVINO otherwise silently computes in bf16.
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": OV_PRECISIONS[runs]}
        self.precision = self.resolve_precision(self._graph_precision(model), requested, runs)
        amx_note = guard_amx()
        if amx_note:
            self.note(amx_note)
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = self.options.threads
        if self.options.nireq:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = self.options.nireq
        if self.options.streams:
            config["NUM_STREAMS"] = self.options.streams
        try:
            self._compiled = self._core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise HarnessError(f"model {self.model_path}: OpenVINO cannot compile it for CPU ({first_line(exc)})") from None
        self._request = self._compiled.create_infer_request()
        self.batch = batch
        self.run_mode = RunMode(self.options.resolved_mode, self._nireq(),
                                int(self._compiled.get_property("NUM_STREAMS")),
                                int(self._compiled.get_property("INFERENCE_NUM_THREADS")))

    def _reshape(self, ov, model, port, fixed: int | None, batch: int) -> str:
        """Reshape `model` (in place) to the profile's input at `batch`; "" when done and every output
        follows the batch, else why not."""
        try:
            # Extra inputs (e.g. scale_factor [B, 2]) that share the batch axis follow it.
            shapes = {port: ov.PartialShape(list(self.profile.input.shape(batch)))}
            for other in model.inputs[1:]:
                odims = _dims(other.get_partial_shape())
                if odims and odims[0] in (None, fixed) and all(d is not None for d in odims[1:]):
                    shapes[other] = ov.PartialShape([batch, *odims[1:]])
            model.reshape(shapes)
        except Exception as exc:
            return f"OpenVINO reshape fails: {first_line(exc, 160)}"
        for out in model.outputs:
            odims = _dims(out.get_partial_shape())
            if odims and odims[0] not in (batch, None) and batch > 1:
                return f"output keeps shape {odims} after reshape"
        return ""

    def _graph_precision(self, model) -> str:
        """int8 when the graph holds FakeQuantize (OpenVINO's form of Q/DQ and of NNCF's int8),
        fp16 for an ONNX graph of float16 tensors, else fp32 (an IR's fp16-compressed weights are
        decompressed and computed at the inference precision, so they do not make it fp16)."""
        if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
            return "int8"
        if self.model_path.suffix.lower() == ".onnx":
            return inspect_onnx(self.model_path).precision
        return "fp32"

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        feeds = {0: batch}
        if extras:
            feeds.update(extras)
        self._request.infer(feeds)
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._compiled.outputs))]

    def output_names(self) -> list[str]:
        """From the compiled model (an .xml IR has no ONNX graph to read); unnamed ports are numbered."""
        if getattr(self, "_compiled", None) is None:
            return super().output_names()
        return [port.get_any_name() if port.get_names() else f"output_{k}"
                for k, port in enumerate(self._compiled.outputs)]

    def _nireq(self) -> int:
        return int(self.options.nireq or self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        """benchmark_app's method (its inference-only mode), step for step.

        N async requests (N = OPTIMAL_NUMBER_OF_INFER_REQUESTS unless nireq is set), each given
        the batch once in its own plugin-allocated input tensor and run once before the clock starts
        (benchmark_app's warm-up inference, for every request); the loop
        hands the next idle request a start_async() with no Python callback, runs until the time
        and iteration floors pass and the count is a multiple of N, then waits for all.
        Throughput = iterations x batch / wall time; latency per request from OpenVINO's own
        request.latency (submit to completion), as benchmark_app reports it. `capture`: outputs of
        the first requests to finish, copied outside the timed part of their step. The loop's length
        follows `rule` (harness.targets.timing.LoopRule), where benchmark_app runs a fixed time.
        """
        ov = _import_ov()
        nireq = self._nireq()
        queue = ov.AsyncInferQueue(self._compiled, nireq)
        data = np.ascontiguousarray(batch)
        for request in queue:
            request.get_input_tensor(0).data[:] = data
            for name, value in (extras or {}).items():
                request.get_tensor(name).data[:] = value
        for _ in range(nireq):  # each request runs once untimed: its first run allocates its memory
            queue.start_async()
        queue.wait_all()
        in_flight: set[int] = set()
        captured: list = []
        count = len(self._compiled.outputs)

        def step() -> float | None:
            idle = queue.get_idle_request_id()  # blocks until a request is free (GIL released)
            latency = None
            if idle in in_flight:
                latency = queue[idle].latency
                if len(captured) < capture:
                    captured.append([queue[idle].get_output_tensor(i).data.copy() for i in range(count)])
            else:
                in_flight.add(idle)
            queue.start_async()
            return latency

        def finish() -> list[float]:
            queue.wait_all()
            return [queue[i].latency for i in in_flight]

        try:
            loop = timed_loop(step, rule, multiple_of=nireq, finish=finish)
        finally:
            queue.wait_all()  # never leave requests running (Ctrl-C, an error): the runtime is torn down next
        return BenchStats.from_loop(loop, batch.shape[0], concurrency=nireq, captured=captured)

    def infer_stream(self, items, depth: int | None = None):
        """Infer a stream of (batch, tag, extras) with up to `depth` async requests in flight.

        Yields (tag, outputs, seconds) in input order: outputs as infer() returns them (copies, valid
        after the request is reused) and the request's own inference time. Inference runs in
        OpenVINO's threads with the GIL released, so the caller's other threads (preprocessing,
        decoding) run meanwhile. depth defaults to the compiled model's optimal number of requests
        (one per stream with the throughput hint). infer() stays the synchronous one-batch call.
        """
        depth = max(1, int(depth or self._nireq()))
        free = [self._compiled.create_infer_request() for _ in range(depth)]
        count = len(self._compiled.outputs)
        pending: deque = deque()  # (request, tag, input array kept alive while the request shares it)

        def finish():
            request, tag, _ = pending.popleft()
            request.wait()
            free.append(request)
            outputs = [request.get_output_tensor(i).data.copy() for i in range(count)]
            return tag, outputs, request.latency / 1e3

        try:
            for batch, tag, extras in items:
                if not free:
                    yield finish()
                request = free.pop()
                array = np.ascontiguousarray(batch)
                request.start_async({0: array, **(extras or {})}, share_inputs=True)
                pending.append((request, tag, array))
            while pending:
                yield finish()
        finally:
            for request, _, _ in pending:  # abandoned early (an error downstream): let them finish
                request.wait()

    def describe(self) -> dict:
        ov = _import_ov()
        info = {"runtime": f"openvino {ov.__version__}", "device": "CPU", "hint": self.options.resolved_hint,
                "threads": self.options.threads}
        if getattr(self, "_compiled", None) is not None:
            info["nireq"] = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            info["num_streams"] = int(self._compiled.get_property("NUM_STREAMS"))
        return info

    def close(self) -> None:
        self._request = None
        self._compiled = None
