"""ONNX Runtime targets: `ort` (CPU execution provider) and `ort-cuda` (CUDA execution provider)."""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError, TargetUnavailable
from harness.targets import register
from harness.targets.base import Target, TensorInfo, fixed_batch_error

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise TargetUnavailable("onnxruntime is not installed: pip install 'harness[ort]'") from None
    return onnxruntime


def _dynamic_batch_bytes(model_path) -> bytes:
    """The ONNX model with its first input's batch dim (and outputs' first dims) made symbolic."""
    import onnx

    model = onnx.load(str(model_path))
    for value in list(model.graph.input[:1]) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
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
            self._session_obj = self._session(str(self.model_path))
            self._model_is_dynamic = None
        session = self._session_obj
        first = session.get_inputs()[0]
        self.check_input(tuple(first.shape), _ORT_DTYPES.get(first.type, first.type), batch)
        fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
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

    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(i.name, tuple(i.shape), _ORT_DTYPES.get(i.type, i.type)) for i in self._session_obj.get_inputs()]

    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(o.name, tuple(o.shape), _ORT_DTYPES.get(o.type, o.type)) for o in self._session_obj.get_outputs()]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        feeds = {self._session_obj.get_inputs()[0].name: batch}
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
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)"
    time_covers = "inference call (host tensors in, host tensors out, includes H2D/D2H copies)"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            ort = _import_ort()
        except TargetUnavailable as exc:
            return False, str(exc)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu: pip install 'harness[gpu]', and an NVIDIA driver)")
        return True, f"onnxruntime {ort.__version__} with CUDA"

    def _providers(self) -> list:
        ok, why = self.availability()
        if ok:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if not self.options.get("allow_fallback"):
            raise TargetUnavailable(f"target ort-cuda cannot run here: {why}; pass --allow-fallback to run on CPU and record it")
        note = "FALLBACK: CUDA unavailable, ran on CPUExecutionProvider"
        if note not in self.notes:
            self.notes.append(note)
        return ["CPUExecutionProvider"]
