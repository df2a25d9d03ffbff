"""ONNX Runtime targets: `ort` (CPU execution provider) and `ort-cuda` (CUDA execution provider)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.core.config import setting
from harness.core.errors import HarnessError, TargetUnavailable, first_line
from harness.model.declared_shapes import model_for_onnx_runtime
from harness.model.extra_inputs import check_model_inputs
from harness.model.onnx_model import inspect_onnx
from harness.targets.base import BenchStats, Target, call_loop, fixed_batch_error, installed_version
from harness.targets.inflight import ordered_stream
from harness.targets.modes import (
    MAX_PARALLEL,
    Mode,
    RunMode,
    check_streams,
    resolve_mode,
    split_cores,
    streams_mode,
    usable_cores,
)
from harness.targets.timing import LoopRule

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32"}


#: distributions that install the `onnxruntime` module; the plain CPU build last, so that where a GPU build
#: was installed over it (both leave metadata behind) the module is loaded and asked for its providers
ORT_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-qnn",
                     "onnxruntime-training", "onnxruntime")


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise TargetUnavailable("onnxruntime is not installed: pip install 'harness[ort]'") from None
    return onnxruntime


@dataclass(frozen=True)
class OrtOptions:
    """Options of the `ort` target."""

    #: latency: one request at a time; throughput (default): `streams` requests in flight, each on its
    #: own thread, all on one session (ONNX Runtime's thread-safe pattern)
    mode: Mode | None = None
    #: requests in flight in throughput mode; default: the usable cores / threads
    streams: int | None = setting(None, ge=1, le=MAX_PARALLEL)
    #: intra-op threads of each request; default: latency mode ONNX Runtime's choice, throughput mode
    #: the usable cores / streams (1 thread per request when neither is given)
    threads: int | None = setting(None, ge=1, le=MAX_PARALLEL)
    # ONNX Runtime runs the graph as it is: a precision asked for must be the graph's own (checked at load)
    precision: Literal["fp32", "fp16", "int8"] | None = None

    def __post_init__(self):
        check_streams(self.mode, self.streams, "requests in flight")


@dataclass(frozen=True)
class OrtCudaOptions(OrtOptions):
    """Options of the `ort-cuda` target."""

    ep: Literal["cuda", "trt"] = "cuda"  # CUDA execution provider, or ONNX Runtime's TensorRT EP
    device_id: int = setting(0, ge=0)
    allow_fallback: bool = False  # run on the CPU provider when CUDA is missing, and say so in the row
    engine_cache: str | None = None  # TensorRT EP engine cache (default ~/.cache/harness/ort-trt)


class OrtTarget(Target):
    name = "ort"
    packages = ("onnxruntime", "onnxruntime-gpu")
    description = "ONNX Runtime, CPU execution provider"
    providers = ["CPUExecutionProvider"]
    Options = OrtOptions
    _session_obj = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        found = installed_version("onnxruntime", ORT_DISTRIBUTIONS)
        if found is None:
            return False, "onnxruntime is not installed: pip install 'harness[ort]'"
        return True, f"onnxruntime {found[1]}"

    def _session(self, model):
        ort = _import_ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self._intra_threads()
        if threads:
            opts.intra_op_num_threads = threads
        if self._spin_off():
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(model, sess_options=opts, providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise HarnessError(f"model {self.model_path}: ONNX Runtime cannot load it ({first_line(exc)})") from None

    def _providers(self) -> list:
        return list(self.providers)

    def resolve_run_mode(self) -> RunMode:
        """latency: one request, the threads asked for (None: ONNX Runtime's choice); throughput:
        requests x threads filling the usable cores (split_cores). RunMode.threads counts all of them."""
        mode = resolve_mode(self.options.mode, streams_mode(self.options.streams))
        if mode == "latency":
            return RunMode("latency", 1, 1, self.options.threads)
        requests, threads = split_cores(usable_cores(), self.options.streams, self.options.threads)
        return RunMode("throughput", requests, requests, requests * threads)

    def _time_covers(self) -> str:
        if self.run_mode.requests == 1:
            return Target.time_covers
        return (f"inference calls with host tensors, {self.run_mode.requests} in flight on as many threads of one "
                "session; latency per call under that load")

    def _intra_threads(self) -> int | None:
        """intra_op_num_threads of the session: each request's share of RunMode.threads."""
        run = self.run_mode
        return None if run.threads is None else max(1, run.threads // run.requests)

    def _spin_off(self) -> bool:
        """Several requests with intra-op pools: idle pool threads must not spin on cores the other
        requests need (measured: spinning halved images per CPU-second on the 2-core machine)."""
        return self.run_mode.requests > 1 and (self._intra_threads() or 0) > 1

    def load(self, batch: int) -> None:
        if self.model_path.suffix.lower() != ".onnx":
            raise HarnessError(f"model {self.model_path}: target {self.name} needs an .onnx file")
        self.run_mode = self.resolve_run_mode()
        self.time_covers = self._time_covers()
        graph = inspect_onnx(self.model_path)
        check_model_inputs(graph.inputs, self.profile, self.model_path.name, batch)
        if self._session_obj is None:
            self._session_obj = self._session(self._model_source())
        self.precision = self.resolve_precision(graph.precision, self._precision_request(), self._runs_precision())
        session = self._session_obj
        first = session.get_inputs()[0]
        self.check_input(tuple(first.shape), _ORT_DTYPES.get(first.type, first.type), batch)
        fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        self.model_batch = fixed
        self.batch = batch
        self.padded_batch = fixed is not None
        if fixed is None or fixed == batch:
            return
        if fixed != 1:
            raise fixed_batch_error(self.model_path, fixed, batch, "only batch-1 graphs are rewritten to another batch")
        # A fixed batch-1 graph: its checked batch-N rewrite (harness.model.batch_rewrite), fixed at N.
        self._session_obj = self._session(self._model_source(self.rewritten_for_batch(batch)))

    def _model_source(self, path: str | Path | None = None):
        """The path, or the model's bytes with the output sizes its graph does not compute made
        symbolic (harness.model.declared_shapes: else constant folding trusts them); what was changed goes
        into the row's notes. `path`: another file to load (a batch rewrite of the model)."""
        source, notes = model_for_onnx_runtime(path or self.model_path)
        for note in notes:
            self.note(note)
        return source

    def _precision_request(self) -> str | None:
        """The --precision to hold the run to (None: label it with what runs)."""
        return self.options.precision

    def _runs_precision(self) -> str:
        """What the session computes an fp32 graph in (the CPU provider: fp32)."""
        return "fp32"

    def _input_name(self) -> str:
        """The image input's name, looked up once per session (not on every call)."""
        session = self._session_obj
        if getattr(self, "_named_session", None) is not session:
            self._named_session, self._name = session, session.get_inputs()[0].name
        return self._name

    def output_names(self) -> list[str]:
        session = self._session_obj
        return super().output_names() if session is None else [o.name for o in session.get_outputs()]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        feeds = {self._input_name(): batch}
        if extras:
            feeds.update(extras)
        return self._session_obj.run(None, feeds)

    def infer_stream(self, items):
        """Batches in order with run_mode.requests of them in flight, each a session.run() on its own
        thread (run() is thread-safe and releases the GIL)."""
        return ordered_stream(items, self.infer, self.run_mode.requests)

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        """run_mode.requests threads, each running session.run() on the same input back to back, as a
        hand-written throughput loop does (one request: the plain synchronous loop)."""
        session = self._session_obj
        feeds = {self._input_name(): batch, **(extras or {})}
        return call_loop(lambda _: session.run(None, feeds), rule, batch.shape[0], capture, self.run_mode.requests)

    def describe(self) -> dict:
        ort = _import_ort()
        return {"runtime": f"onnxruntime {ort.__version__}",
                "providers": self._session_obj.get_providers() if self._session_obj is not None else self.providers,
                "threads": self.options.threads, "mode": self.run_mode.mode, "requests": self.run_mode.requests,
                "intra_op_threads": self._intra_threads(), "intra_op_spinning": not self._spin_off()}

    def close(self) -> None:
        self._session_obj = None


class OrtCpu(OrtTarget):
    name = "ort"
    reference_rank = 0
    runs_qdq_onnx = True


class OrtCuda(OrtTarget):
    """CUDA execution provider (or TensorRT EP with `ep = "trt"`), IO binding, providers verified.

    ONNX Runtime silently falls back to CPU when a provider cannot be created (missing CUDA/cuDNN
    libraries), so the session's real providers are checked after creation: without allow_fallback
    a missing GPU provider is an error, with it a FALLBACK note in the row.
    """

    name = "ort-cuda"
    figures = {"ort_device": "the device ONNX Runtime placed the graph on (CUDA, or CPU after a fallback)"}
    Options = OrtCudaOptions
    device_kind = "gpu"
    description = "ONNX Runtime, CUDA execution provider (or TensorRT EP with --ep trt); needs onnxruntime-gpu and an NVIDIA GPU"
    time_covers = ("benchmark: IO binding with the input kept on the GPU as an OrtValue and outputs left on the GPU "
                   "(session run only, no H2D/D2H copies; throughput mode: one binding per request in flight, each "
                   "on its own thread); accuracy pass: host input bound once, outputs copied back once")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why = super().availability()  # onnxruntime installed at all
        if not ok:
            return ok, why
        distribution, version = installed_version("onnxruntime", ORT_DISTRIBUTIONS)
        if distribution == "onnxruntime":  # only PyPI's plain build, which is CPU-only: no need to load it to know
            return False, (f"onnxruntime {version} has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu: pip install 'harness[gpu]', and an NVIDIA driver)")
        ort = _import_ort()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu: pip install 'harness[gpu]', and an NVIDIA driver)")
        extra = ", TensorRT EP" if "TensorrtExecutionProvider" in ort.get_available_providers() else ""
        return True, f"onnxruntime {ort.__version__} with CUDA{extra}"

    #: batches in flight in throughput mode unless --streams says otherwise: two, as trtexec --infStreams=2
    #: keeps one batch's host work and copies under the other's compute
    THROUGHPUT_REQUESTS = 2

    # - options ---------------------------------------------------------------------------------------

    def resolve_run_mode(self) -> RunMode:
        """latency: one request; throughput: --streams requests (default 2), each its own thread and IO
        binding on one session; threads (None) is not a GPU figure, --threads sets the intra-op pool
        of nodes left on the CPU."""
        mode = resolve_mode(self.options.mode, streams_mode(self.options.streams))
        requests = 1 if mode == "latency" else (self.options.streams or self.THROUGHPUT_REQUESTS)
        return RunMode(mode, requests, requests, None)

    def _intra_threads(self) -> int | None:
        return self.options.threads

    def _time_covers(self) -> str:
        return type(self).time_covers

    def _ep(self) -> str:
        return self.options.ep

    def _requested_precision(self) -> str:
        precision = self.options.precision or "fp32"
        allowed = ("fp32",) if self._ep() == "cuda" else ("fp32", "fp16")
        if precision not in allowed:
            hint = ("use --ep trt --precision fp16, or --target trt" if self._ep() == "cuda" and precision == "fp16"
                    else "use --target trt for int8 (with a Q/DQ model, see docs/gpu.md)")
            raise HarnessError(f"target ort-cuda with --ep {self._ep()} runs {', '.join(allowed)}, not {precision}; {hint}")
        return precision

    def _providers(self) -> list:
        return list(self._provider_list)

    def _resolve_providers(self) -> list:
        ep = self._ep()
        precision = self._requested_precision()
        ok, why = self.availability()
        self._wanted_provider = None
        if not ok:
            if not self.options.allow_fallback:
                raise TargetUnavailable(f"target ort-cuda cannot run here: {why}; "
                                        "pass --allow-fallback to run on CPU and record it")
            self.note("FALLBACK: CUDA unavailable, ran on CPUExecutionProvider")
            self.flags.add("fallback")
            return ["CPUExecutionProvider"]
        ort = _import_ort()
        device_id = self.options.device_id
        cuda = ("CUDAExecutionProvider", {"device_id": device_id})
        if ep == "trt":
            if "TensorrtExecutionProvider" not in ort.get_available_providers():
                why = (f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider (needs an onnxruntime-gpu "
                       "build with TensorRT and TensorRT's libraries on the library path)")
                if not self.options.allow_fallback:
                    raise TargetUnavailable(f"target ort-cuda --ep trt cannot run here: {why}; "
                                            "pass --allow-fallback to use the CUDA EP and record it")
                self.note("FALLBACK: TensorrtExecutionProvider unavailable, ran on CUDAExecutionProvider")
                self.flags.add("fallback")
                self._wanted_provider = "CUDAExecutionProvider"
                return [cuda, "CPUExecutionProvider"]
            self._wanted_provider = "TensorrtExecutionProvider"
            options = trt_ep_options(precision, self._engine_cache_dir(), device_id, self._trt_profile_shapes())
            return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"]
        self._wanted_provider = "CUDAExecutionProvider"
        return [cuda, "CPUExecutionProvider"]

    def _engine_cache_dir(self):
        return Path(self.options.engine_cache or "~/.cache/harness/ort-trt").expanduser()

    def _trt_profile_shapes(self) -> dict | None:
        """TensorRT EP profile for a dynamic-batch model: batch 1 .. the run's largest batch size."""
        first = inspect_onnx(self.model_path).image_input
        if not first.shape or first.fixed_batch is not None:
            return None
        sizes = list(self.batch_sizes or [self.batch or 1])
        rest = self.profile.input.shape(1)[1:]
        return {first.name: ((1, *rest), (max(sizes), *rest), (max(sizes), *rest))}

    # - session ---------------------------------------------------------------------------------------

    def _session(self, model):
        # resolved before OrtTarget._session, whose error wrapper would turn these into "cannot load it"
        self._provider_list = self._resolve_providers()
        session = super()._session(model)
        ort = _import_ort()
        note = check_session_providers(getattr(self, "_wanted_provider", None), session.get_providers(),
                                       bool(self.options.allow_fallback), ort.__version__)
        if note:
            self.note(note)
            self.flags.add("fallback")
        got = session.get_providers()
        gpu = any(p in got for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        self._device = "cuda" if gpu else "cpu"
        self._device_id = self.options.device_id if gpu else 0
        return session

    def _on_gpu(self) -> bool:
        providers = self._session_obj.get_providers()
        return any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))

    def _precision_request(self) -> str | None:
        precision = self._requested_precision()  # refuses what the chosen provider cannot run
        if not self._on_gpu():
            if precision != "fp32":
                self.note(f"precision {precision} requested, ran fp32 on the CPU fallback")
            return None
        return self.options.precision

    def _runs_precision(self) -> str:
        on_trt = "TensorrtExecutionProvider" in self._session_obj.get_providers()
        return "fp16" if on_trt and self._requested_precision() == "fp16" else "fp32"

    def load(self, batch: int) -> None:
        self.batch = batch
        super().load(batch)
        if not self._on_gpu():
            self.time_covers = ("FALLBACK on CPU: IO binding with host-resident input and outputs "
                                "(session run only); not a GPU figure")

    # - run -------------------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        """IO binding: the host input is bound (copied to the device once), outputs stay on the device
        during the run and are copied back once."""
        session = self._session_obj
        binding = session.io_binding()
        binding.bind_cpu_input(self._input_name(), np.ascontiguousarray(batch))
        for name, value in (extras or {}).items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for out in session.get_outputs():
            binding.bind_output(out.name, self._device, self._device_id)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        """The input is copied to the device once (OrtValue) and shared; each request in flight has its
        own IO binding whose outputs stay on the device (so no outputs are captured for the loop check:
        copying them back would change the figure)."""
        ort = _import_ort()
        session = self._session_obj
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), self._device, self._device_id)
        bindings = []
        for _ in range(self.run_mode.requests):
            binding = session.io_binding()
            binding.bind_ortvalue_input(session.get_inputs()[0].name, value)
            for name, extra in (extras or {}).items():
                binding.bind_cpu_input(name, np.ascontiguousarray(extra))
            for out in session.get_outputs():
                binding.bind_output(out.name, self._device, self._device_id)
            bindings.append(binding)

        def call(k: int) -> None:
            session.run_with_iobinding(bindings[k])  # ONNX Runtime synchronises the device at the end of a run
            bindings[k].synchronize_outputs()

        stats = call_loop(call, rule, batch.shape[0], 0, self.run_mode.requests)
        stats.extra["ort_device"] = self._device
        return stats

    def describe(self) -> dict:
        info = super().describe()
        info.update({"ep": self._ep(), "device": f"{getattr(self, '_device', 'cpu')}:{getattr(self, '_device_id', 0)}",
                     "io_binding": True})
        if self._ep() == "trt":
            info["trt_engine_cache"] = str(self._engine_cache_dir())
        return info



def trt_ep_options(precision: str, cache_dir, device_id: int = 0, profile_shapes: dict | None = None,
                   workspace_mib: int = 4096) -> dict:
    """Provider options of ONNX Runtime's TensorRT execution provider (all values as ORT expects them)."""
    options = {
        "device_id": int(device_id),
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_max_workspace_size": int(workspace_mib) << 20,
    }
    if profile_shapes:
        for key, index in (("trt_profile_min_shapes", 0), ("trt_profile_opt_shapes", 1), ("trt_profile_max_shapes", 2)):
            options[key] = ",".join(f"{name}:{'x'.join(str(int(d)) for d in shapes[index])}"
                                    for name, shapes in profile_shapes.items())
    return options


def check_session_providers(wanted: str | None, got: list[str], allow_fallback: bool, ort_version: str = "") -> str | None:
    """After session creation: the GPU provider asked for must really be there (ORT falls back silently).

    Returns a FALLBACK note (allow_fallback) or None; raises TargetUnavailable otherwise.
    """
    if not wanted or wanted in got:
        return None
    libs = "CUDA/cuDNN" + ("/TensorRT" if wanted == "TensorrtExecutionProvider" else "")
    why = (f"ONNX Runtime did not create {wanted} (session providers: {', '.join(got) or 'none'}); "
           f"check that the {libs} libraries match onnxruntime-gpu {ort_version}".rstrip())
    if not allow_fallback:
        raise TargetUnavailable(f"target ort-cuda: {why}; pass --allow-fallback to run anyway and record it")
    return f"FALLBACK: {why}; ran on {got[0] if got else 'CPUExecutionProvider'}"
