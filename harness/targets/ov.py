"""OpenVINO CPU target (`ov`): ONNX or IR, performance hint selectable, async infer requests."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from harness.errors import HarnessError, TargetUnavailable
from harness.extra_inputs import check_model_inputs, dims_text
from harness.targets import register
from harness.targets.cpu_isa import guard_amx
from harness.targets.base import BenchStats, Target, TensorInfo, check_onnx_file, fixed_batch_error

HINTS = ("THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT")
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _import_ov():
    guard_amx()
    try:
        import openvino
    except ImportError:
        raise TargetUnavailable("openvino is not installed: pip install 'harness[ov]'") from None
    return openvino


def _dims(partial_shape) -> tuple:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


@register
class OpenVinoCpu(Target):
    name = "ov"
    description = "OpenVINO, CPU device, async infer requests"
    time_covers = "inference (host tensors, async infer requests in flight together)"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            ov = _import_ov()
        except TargetUnavailable as exc:
            return False, str(exc)
        return True, f"openvino {ov.__version__}"

    def _read(self):
        ov = _import_ov()
        if self.model_path.suffix.lower() not in (".onnx", ".xml"):
            raise HarnessError(f"model {self.model_path}: target ov needs an .onnx or OpenVINO .xml file")
        if self.model_path.suffix.lower() == ".xml" and not self.model_path.with_suffix(".bin").is_file():
            raise HarnessError(f"model {self.model_path}: its weights {self.model_path.with_suffix('.bin').name} are missing")
        if self.model_path.suffix.lower() == ".onnx":
            check_onnx_file(self.model_path)  # else OpenVINO tries every frontend and logs noise
        self._core = getattr(self, "_core", None) or ov.Core()
        try:
            return self._core.read_model(str(self.model_path))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HarnessError(f"model {self.model_path}: OpenVINO cannot read it ({first[:200]})") from None

    def load(self, batch: int) -> None:
        ov = _import_ov()
        model = self._read()
        port = model.inputs[0]
        dims = _dims(port.get_partial_shape())
        self.check_input(dims, str(port.get_element_type().to_dtype()), batch)
        check_model_inputs([(p.get_any_name(), _dims(p.get_partial_shape())) for p in model.inputs], self.profile,
                           self.model_path.name, batch)
        fixed = dims[0] if dims and dims[0] is not None else None
        self.model_batch = fixed
        self.padded_batch = False
        dynamic_size = any(d is None for d in dims[1:])
        if fixed != batch or dynamic_size:
            # Static shapes compile to faster code; try the requested batch for dynamic and fixed graphs,
            # and the profile's size for dynamic height/width (check_input matched the fixed dims to it).
            try:
                # Extra inputs (e.g. scale_factor [B, 2]) that share the batch axis follow it.
                shapes = {port: ov.PartialShape(list(self.profile.input.shape(batch)))}
                for other in model.inputs[1:]:
                    odims = _dims(other.get_partial_shape())
                    if odims and odims[0] in (None, fixed) and all(d is not None for d in odims[1:]):
                        shapes[other] = ov.PartialShape([batch, *odims[1:]])
                model.reshape(shapes)
            except Exception as exc:
                raise fixed_batch_error(self.model_path, fixed, batch, f"OpenVINO reshape fails: "
                                        f"{(str(exc).strip().splitlines() or ['?'])[0][:160]}") from None
            if fixed is not None and fixed != batch:
                self.notes.append(f"reshaped from batch {fixed} to {batch}")
            if dynamic_size:
                note = f"dynamic input dims {dims_text(dims)} set to the profile's {list(self.profile.input.shape(batch))}"
                if note not in self.notes:
                    self.notes.append(note)
        for out in model.outputs:
            odims = _dims(out.get_partial_shape())
            if odims and odims[0] not in (batch, None) and batch > 1:
                raise fixed_batch_error(self.model_path, fixed or 1, batch, f"output keeps shape {odims} after reshape")
        self.padded_batch = True  # the compiled graph is static: a short last batch is padded
        hint = str(self.options.get("hint") or "THROUGHPUT").upper()
        if hint not in HINTS:
            raise HarnessError(f"unknown OpenVINO performance hint {hint!r}; use one of {', '.join(HINTS)}")
        precision = str(self.options.get("precision") or "fp32").lower()
        if precision not in OV_PRECISIONS:
            raise HarnessError(f"target ov: precision {precision!r} not supported; use one of {', '.join(OV_PRECISIONS)}")
        # Pin the precision: on CPUs with bf16 support OpenVINO otherwise silently computes in bf16.
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.precision = "int8" if quantized else precision
        amx_note = guard_amx()
        if amx_note and amx_note not in self.notes:
            self.notes.append(amx_note)
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        if self.options.get("nireq"):
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(self.options["nireq"])
        try:
            self._compiled = self._core.compile_model(model, "CPU", config)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HarnessError(f"model {self.model_path}: OpenVINO cannot compile it for CPU ({first[:200]})") from None
        self._request = self._compiled.create_infer_request()
        self._hint = hint
        self.batch = batch

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(p.get_any_name(), _dims(p.get_partial_shape()), str(p.get_element_type().to_dtype()))
                for p in self._compiled.inputs]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(p.get_any_name() if p.get_names() else f"output_{i}", _dims(p.get_partial_shape()),
                           str(p.get_element_type().to_dtype())) for i, p in enumerate(self._compiled.outputs)]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        feeds = {0: batch}
        if extras:
            feeds.update(extras)
        self._request.infer(feeds)
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._compiled.outputs))]

    def _nireq(self) -> int:
        return int(self.options.get("nireq") or self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def benchmark(self, batch: np.ndarray, seconds: float, min_iterations: int,
                  extras: dict | None = None) -> BenchStats:
        """benchmark_app's method (its inference-only mode), step for step.

        N async requests (N = OPTIMAL_NUMBER_OF_INFER_REQUESTS unless nireq is set), each given
        the batch once in its own plugin-allocated input tensor before the clock starts; the loop
        hands the next idle request a start_async() with no Python callback, runs until the time
        and iteration floors pass and the count is a multiple of N, then waits for all.
        Throughput = iterations x batch / wall time; latency per request from OpenVINO's own
        request.latency (submit to completion), as benchmark_app reports it.
        """
        ov = _import_ov()
        nireq = self._nireq()
        queue = ov.AsyncInferQueue(self._compiled, nireq)
        data = np.ascontiguousarray(batch)
        for request in queue:
            request.get_input_tensor(0).data[:] = data
            for name, value in (extras or {}).items():
                request.get_tensor(name).data[:] = value
        latencies: list[float] = []
        in_flight: set[int] = set()
        iterations = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < seconds or iterations < min_iterations or iterations % nireq:
            idle = queue.get_idle_request_id()  # blocks until a request is free (GIL released)
            if idle in in_flight:
                latencies.append(queue[idle].latency)
            else:
                in_flight.add(idle)
            queue.start_async()
            iterations += 1
            elapsed = time.perf_counter() - start
        queue.wait_all()
        elapsed = time.perf_counter() - start
        latencies += [queue[i].latency for i in in_flight]
        return BenchStats(latencies, iterations * batch.shape[0], elapsed, concurrency=nireq)

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
        info = {"runtime": f"openvino {ov.__version__}", "device": "CPU", "hint": getattr(self, "_hint", None)}
        if getattr(self, "_compiled", None) is not None:
            info["nireq"] = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        return info

    def close(self) -> None:
        self._request = None
        self._compiled = None
