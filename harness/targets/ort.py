"""ONNX Runtime targets: `ort` (CPU execution provider) and `ort-cuda` (CUDA execution provider)."""

from __future__ import annotations

import time

import numpy as np

from harness.declared_shapes import drop_unconfirmed_output_dims, model_for_onnx_runtime
from harness.errors import HarnessError, TargetUnavailable
from harness.extra_inputs import check_model_inputs
from harness.targets import register
from harness.targets.base import BenchStats, Target, TensorInfo, check_onnx_file, fixed_batch_error

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise TargetUnavailable("onnxruntime is not installed: pip install 'harness[ort]'") from None
    return onnxruntime


def _dynamic_batch_bytes(model_path) -> bytes:
    """The ONNX model with its first input's batch dim (and outputs' first dims) made symbolic, and
    declared output sizes the graph does not compute dropped (harness.declared_shapes)."""
    import onnx

    model = onnx.load(str(model_path))
    for value in list(model.graph.input[:1]) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    drop_unconfirmed_output_dims(model)
    return model.SerializeToString()


class OrtTarget(Target):
    name = "ort"
    description = "ONNX Runtime, CPU execution provider"
    providers = ["CPUExecutionProvider"]

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            ort = _import_ort()
        except TargetUnavailable as exc:
            return False, str(exc)
        return True, f"onnxruntime {ort.__version__}"

    def _session(self, model):
        ort = _import_ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.get("threads"):
            opts.intra_op_num_threads = int(self.options["threads"])
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(model, sess_options=opts, providers=self._providers())
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HarnessError(f"model {self.model_path}: ONNX Runtime cannot load it ({first[:200]})") from None

    def _providers(self) -> list:
        return list(self.providers)

    def load(self, batch: int) -> None:
        if self.model_path.suffix.lower() != ".onnx":
            raise HarnessError(f"model {self.model_path}: target {self.name} needs an .onnx file")
        if getattr(self, "_session_obj", None) is None:
            check_onnx_file(self.model_path)
            source, notes = model_for_onnx_runtime(self.model_path)
            self._session_obj = self._session(source)
            self.notes.extend(note for note in notes if note not in self.notes)
            self._model_is_dynamic = None
        session = self._session_obj
        first = session.get_inputs()[0]
        self.check_input(tuple(first.shape), _ORT_DTYPES.get(first.type, first.type), batch)
        check_model_inputs([(i.name, tuple(i.shape)) for i in session.get_inputs()], self.profile,
                           self.model_path.name, batch)
        fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        self.model_batch = fixed
        self.batch = batch
        self.padded_batch = fixed is not None
        if fixed is None or fixed == batch:
            return
        if fixed != 1:
            raise fixed_batch_error(self.model_path, fixed, batch, "only batch-1 graphs are tried with a symbolic batch")
        # A fixed batch-1 graph: try it with a symbolic batch and check every output follows.
        try:
            candidate = self._session(_dynamic_batch_bytes(self.model_path))
            probe = np.zeros(self.profile.input.shape(batch), dtype=self.profile.input.numpy_dtype)
            outs = candidate.run(None, {first.name: probe})
        except Exception as exc:
            raise fixed_batch_error(self.model_path, fixed, batch, f"the graph fails at batch {batch}: "
                                    f"{str(exc).splitlines()[0][:160]}") from None
        bad = [o.shape for o in outs if o.ndim < 1 or o.shape[0] != batch]
        if bad:
            raise fixed_batch_error(self.model_path, fixed, batch, f"an output keeps shape {tuple(bad[0])}")
        self._session_obj = candidate
        self.padded_batch = False
        self.notes.append(f"batch made symbolic in the ONNX graph to run batch {batch}")

    def _input_name(self) -> str:
        """The image input's name, looked up once per session (not on every call)."""
        session = self._session_obj
        if getattr(self, "_named_session", None) is not session:
            self._named_session, self._name = session, session.get_inputs()[0].name
        return self._name

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(i.name, tuple(i.shape), _ORT_DTYPES.get(i.type, i.type)) for i in self._session_obj.get_inputs()]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(o.name, tuple(o.shape), _ORT_DTYPES.get(o.type, o.type)) for o in self._session_obj.get_outputs()]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        feeds = {self._input_name(): batch}
        if extras:
            feeds.update(extras)
        return self._session_obj.run(None, feeds)

    def describe(self) -> dict:
        ort = _import_ort()
        return {"runtime": f"onnxruntime {ort.__version__}",
                "providers": self._session_obj.get_providers() if getattr(self, "_session_obj", None) else self.providers}

    def close(self) -> None:
        self._session_obj = None


@register
class OrtCpu(OrtTarget):
    name = "ort"


@register
class OrtCuda(OrtTarget):
    """CUDA execution provider (or TensorRT EP with `ep = "trt"`), IO binding, providers verified.

    ONNX Runtime silently falls back to CPU when a provider cannot be created (missing CUDA/cuDNN
    libraries), so the session's real providers are checked after creation: without allow_fallback
    a missing GPU provider is an error, with it a FALLBACK note in the row.
    """

    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (or TensorRT EP with --ep trt); needs onnxruntime-gpu and an NVIDIA GPU"
    time_covers = ("benchmark: IO binding with the input kept on the GPU as an OrtValue and outputs left on the GPU "
                   "(session run only, no H2D/D2H copies); accuracy pass: host input bound once, outputs copied back once")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why = super().availability()  # onnxruntime importable at all
        if not ok:
            return ok, why
        ort = _import_ort()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu: pip install 'harness[gpu]', and an NVIDIA driver)")
        extra = ", TensorRT EP" if "TensorrtExecutionProvider" in ort.get_available_providers() else ""
        return True, f"onnxruntime {ort.__version__} with CUDA{extra}"

    # - options ---------------------------------------------------------------------------------------

    def _ep(self) -> str:
        ep = str(self.options.get("ep") or "cuda").lower()
        if ep not in ORT_CUDA_EPS:
            raise HarnessError(f"--ep {ep!r}: target ort-cuda takes one of {', '.join(ORT_CUDA_EPS)}")
        return ep

    def _requested_precision(self) -> str:
        precision = str(self.options.get("precision") or "fp32").lower()
        allowed = ("fp32",) if self._ep() == "cuda" else ("fp32", "fp16")
        if precision not in allowed:
            hint = ("use --ep trt --precision fp16, or --target trt" if self._ep() == "cuda" and precision == "fp16"
                    else "use --target trt for int8 (calibrated with --calib DIR)")
            raise HarnessError(f"target ort-cuda with --ep {self._ep()} runs {', '.join(allowed)}, not {precision}; {hint}")
        return precision

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def _providers(self) -> list:
        return list(self._provider_list)

    def _resolve_providers(self) -> list:
        ep = self._ep()
        precision = self._requested_precision()
        ok, why = self.availability()
        self._wanted_provider = None
        if not ok:
            if not self.options.get("allow_fallback"):
                raise TargetUnavailable(f"target ort-cuda cannot run here: {why}; pass --allow-fallback to run on CPU and record it")
            self._note("FALLBACK: CUDA unavailable, ran on CPUExecutionProvider")
            return ["CPUExecutionProvider"]
        ort = _import_ort()
        device_id = int(self.options.get("device_id") or 0)
        cuda = ("CUDAExecutionProvider", {"device_id": device_id})
        if ep == "trt":
            if "TensorrtExecutionProvider" not in ort.get_available_providers():
                why = (f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider (needs an onnxruntime-gpu "
                       "build with TensorRT and TensorRT's libraries on the library path)")
                if not self.options.get("allow_fallback"):
                    raise TargetUnavailable(f"target ort-cuda --ep trt cannot run here: {why}; "
                                            "pass --allow-fallback to use the CUDA EP and record it")
                self._note("FALLBACK: TensorrtExecutionProvider unavailable, ran on CUDAExecutionProvider")
                self._wanted_provider = "CUDAExecutionProvider"
                return [cuda, "CPUExecutionProvider"]
            self._wanted_provider = "TensorrtExecutionProvider"
            options = trt_ep_options(precision, self._engine_cache_dir(), device_id, self._trt_profile_shapes())
            return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"]
        self._wanted_provider = "CUDAExecutionProvider"
        return [cuda, "CPUExecutionProvider"]

    def _engine_cache_dir(self):
        from pathlib import Path

        return Path(self.options.get("engine_cache") or "~/.cache/harness/ort-trt").expanduser()

    def _trt_profile_shapes(self) -> dict | None:
        """TensorRT EP profile for a dynamic-batch model: batch 1 .. the run's largest batch size."""
        try:
            import onnx

            graph = onnx.load(str(self.model_path), load_external_data=False).graph
        except Exception:
            return None
        weights = {init.name for init in graph.initializer}
        first = next((v for v in graph.input if v.name not in weights), None)
        dims = first.type.tensor_type.shape.dim if first is not None else []
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return None
        sizes = [int(b) for b in (self.options.get("batch_sizes") or [self.batch or 1])]
        rest = self.profile.input.shape(1)[1:]
        return {first.name: ((1, *rest), (max(sizes), *rest), (max(sizes), *rest))}

    # - session ---------------------------------------------------------------------------------------

    def _session(self, model):
        # resolved before OrtTarget._session, whose error wrapper would turn these into "cannot load it"
        self._provider_list = self._resolve_providers()
        session = super()._session(model)
        ort = _import_ort()
        note = check_session_providers(getattr(self, "_wanted_provider", None), session.get_providers(),
                                       bool(self.options.get("allow_fallback")), ort.__version__)
        if note:
            self._note(note)
        got = session.get_providers()
        gpu = any(p in got for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        self._device = "cuda" if gpu else "cpu"
        self._device_id = int(self.options.get("device_id") or 0) if gpu else 0
        return session

    def load(self, batch: int) -> None:
        self.batch = batch
        super().load(batch)
        providers = self._session_obj.get_providers()
        gpu = any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        precision = self._requested_precision()
        self.precision = precision if ("TensorrtExecutionProvider" in providers or precision == "fp32") else "fp32"
        if not gpu:
            if precision != "fp32":
                self._note(f"precision {precision} requested, ran fp32 on the CPU fallback")
            self.precision = "fp32"
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

    def benchmark(self, batch: np.ndarray, seconds: float, min_iterations: int,
                  extras: dict | None = None) -> BenchStats:
        """The input is copied to the device once (OrtValue) and reused; outputs stay on the device."""
        ort = _import_ort()
        session = self._session_obj
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), self._device, self._device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(session.get_inputs()[0].name, value)
        for name, extra in (extras or {}).items():
            binding.bind_cpu_input(name, np.ascontiguousarray(extra))
        for out in session.get_outputs():
            binding.bind_output(out.name, self._device, self._device_id)
        latencies = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            session.run_with_iobinding(binding)  # ONNX Runtime synchronises the device at the end of a run
            binding.synchronize_outputs()
            latencies.append((time.perf_counter() - t0) * 1e3)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and len(latencies) >= min_iterations:
                break
        stats = BenchStats(latencies, len(latencies) * batch.shape[0], elapsed)
        stats.extra["ort_device"] = self._device
        return stats

    def describe(self) -> dict:
        info = super().describe()
        info.update({"ep": self._ep(), "device": f"{getattr(self, '_device', 'cpu')}:{getattr(self, '_device_id', 0)}",
                     "io_binding": True})
        if self._ep() == "trt":
            info["trt_engine_cache"] = str(self._engine_cache_dir())
        return info


ORT_CUDA_EPS = ("cuda", "trt")


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
