"""NVIDIA TensorRT target (`trt`): an engine built from ONNX (fp32 / fp16 / int8), cached on disk.

    build    TensorRT 10 Python API: explicit batch, one optimisation profile (min 1, opt, max from the
             run's batch sizes), workspace limit, FP16/INT8 flags; int8 calibrated by the harness's
             own preprocessing (trt_calib.py); engines cached by a key over everything they depend on
             (trt_engine.py), a stale engine is rebuilt, never reused.
    infer    named tensors (set_input_shape / set_tensor_address / execute_async_v3), pinned host
             buffers and device buffers from pycuda, one CUDA stream.
    timing   CUDA events: latency = H2D + execute + D2H per batch; GPU compute and the copies are
             also reported on their own (as trtexec does), in BenchStats.extra.

Settings: targets/trt.toml (in the current folder, or options["trt_settings"]), overridden by the
CLI flags --precision, --calib, --engine-cache. tensorrt and pycuda are imported lazily, so listing
targets never needs them.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import tomllib

from harness.errors import HarnessError, TargetUnavailable
from harness.targets.base import BenchStats, Target, fixed_batch_error
from harness.targets.trt_calib import (
    CALIBRATORS,
    PARTIAL_MODES,
    CalibrationBatches,
    calib_cache_name,
    calibration_files,
    make_calibrator,
)
from harness.targets.trt_engine import (
    DEFAULT_CACHE_DIR,
    OPT_MODES,
    PRECISIONS,
    build_serialized_engine,
    engine_key_fields,
    lookup_engine,
    parse_onnx,
    profile_batches,
    profile_shapes,
    sha256_file,
    store_engine,
)

SETTINGS_FILE = Path("targets") / "trt.toml"
INSTALL_HINT = "pip install 'harness[gpu]' (TensorRT 10, pycuda, onnxruntime-gpu)"


# -- settings (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtSettings:
    precision: str = "fp32"
    workspace_mib: int = 4096
    opt_batch: str = "current"
    calibrator: str = "entropy"
    calib: str = ""
    calib_images: int = 500
    calib_batch_size: int = 16
    calib_partial: str = "drop"
    engine_cache: str = DEFAULT_CACHE_DIR

    @property
    def cache_dir(self) -> Path:
        return Path(self.engine_cache).expanduser()


_CHOICES = {"precision": PRECISIONS, "opt_batch": OPT_MODES, "calibrator": CALIBRATORS, "calib_partial": PARTIAL_MODES}
_POSITIVE_INTS = ("workspace_mib", "calib_images", "calib_batch_size")
_STRINGS = ("calib", "engine_cache")
#: target options (CLI flags) that override the settings file
_OPTION_KEYS = {"precision": "precision", "calib": "calib", "engine_cache": "engine_cache",
                "calibrator": "calibrator", "workspace_mib": "workspace_mib", "calib_images": "calib_images",
                "calib_batch_size": "calib_batch_size", "opt_batch": "opt_batch"}


def validate_settings(data: dict, where: str) -> TrtSettings:
    """Check a settings mapping (file contents and/or overrides) and build TrtSettings."""
    known = {f.name for f in fields(TrtSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    values = {}
    for key, value in data.items():
        if key in _CHOICES:
            value = str(value).lower() if isinstance(value, str) else value
            if value not in _CHOICES[key]:
                raise HarnessError(f"{where}: {key} = {value!r}, expected one of {', '.join(_CHOICES[key])}")
        elif key in _POSITIVE_INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise HarnessError(f"{where}: {key} = {value!r}, expected a positive integer")
        elif key in _STRINGS:
            if not isinstance(value, (str, Path)):
                raise HarnessError(f"{where}: {key} = {value!r}, expected a path string")
            value = str(value)
        values[key] = value
    return TrtSettings(**values)


def load_trt_settings(path: str | Path | None = None, overrides: dict | None = None) -> TrtSettings:
    """Defaults <- settings file (if any) <- overrides (CLI options; None values ignored)."""
    data: dict = {}
    where = "targets/trt.toml"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise HarnessError(f"TensorRT settings file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise HarnessError(f"{path}: not valid TOML ({exc})") from None
        except UnicodeDecodeError:
            raise HarnessError(f"{path}: not a text TOML file") from None
        data = data.get("trt", data) if isinstance(data.get("trt"), dict) else data
    settings = validate_settings(data, where)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None and v != ""}
    if extra:
        merged = {f.name: getattr(settings, f.name) for f in fields(TrtSettings)}
        merged.update(extra)
        settings = validate_settings(merged, f"{where} with command-line options")
    return settings


def settings_from_options(options: dict) -> TrtSettings:
    """The run's settings: options["trt_settings"] or ./targets/trt.toml if present, then CLI overrides."""
    path = options.get("trt_settings")
    if path is None and SETTINGS_FILE.is_file():
        path = SETTINGS_FILE
    overrides = {name: options.get(key) for key, name in _OPTION_KEYS.items() if options.get(key) is not None}
    return load_trt_settings(path, overrides)


@dataclass(frozen=True)
class TrtOptions:
    """Command-line overrides of targets/trt.toml (None: the file's value, else the default);
    validated against TrtSettings when the target loads."""

    precision: str | None = None
    calib: str | None = None
    engine_cache: str | None = None
    calibrator: str | None = None
    workspace_mib: int | None = None
    calib_images: int | None = None
    calib_batch_size: int | None = None
    opt_batch: str | None = None
    trt_settings: str | None = None  # a settings file other than ./targets/trt.toml


# -- ONNX inspection and timing summary (pure) -------------------------------------------------------

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 9: "bool"}


def onnx_inputs(model_path: str | Path) -> list[tuple[str, tuple, str]]:
    """(name, dims, dtype) of the graph's real inputs (weights listed as inputs are left out)."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise HarnessError(f"model {model_path}: not a readable ONNX file ({str(exc)[:160]})") from None
    weights = {init.name for init in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        out.append((value.name, dims, _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))))
    if not out:
        raise HarnessError(f"model {model_path}: the ONNX graph has no inputs")
    return out


def timing_summary(h2d_ms, compute_ms, d2h_ms, batch: int) -> dict:
    """Per-stage CUDA-event times -> row fields (p50/p90/p99 in ms, compute-only throughput)."""
    out: dict = {}
    for label, values in (("gpu_compute_ms", compute_ms), ("h2d_ms", h2d_ms), ("d2h_ms", d2h_ms)):
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


# -- runtime imports (lazy) --------------------------------------------------------------------------


def _import_runtime():
    """(tensorrt, pycuda.driver) or TargetUnavailable naming what is missing."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError when its CUDA libraries are missing
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({str(exc).splitlines()[0][:120]})"
        raise TargetUnavailable(f"tensorrt is not installed{detail}: {INSTALL_HINT}") from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TargetUnavailable(f"target trt needs TensorRT 10 or newer (found {trt.__version__}): {INSTALL_HINT}")
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({str(exc).splitlines()[0][:120]})"
        raise TargetUnavailable(f"pycuda is not installed or cannot load CUDA{detail}: {INSTALL_HINT}") from None
    return trt, cuda


def _gpu_name(cuda, index: int = 0) -> str:
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        raise TargetUnavailable(f"no usable CUDA driver ({str(exc).splitlines()[0][:120]}); "
                                "an NVIDIA GPU and driver are needed") from None
    if count == 0:
        raise TargetUnavailable("no NVIDIA GPU found (CUDA reports 0 devices)")
    if index >= count:
        raise TargetUnavailable(f"no CUDA device {index} (found {count})")
    return cuda.Device(index).name()


@functools.cache
def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


# -- the target --------------------------------------------------------------------------------------


class TensorRtTarget(Target):
    name = "trt"
    description = "NVIDIA TensorRT 10 engine built from ONNX, fp32/fp16/int8 (needs tensorrt, pycuda, an NVIDIA GPU)"
    time_covers = ("per batch on one CUDA stream, timed with CUDA events: H2D copy from pinned host memory + "
                   "execute + D2H copy; gpu_compute_ms_* = execute only, h2d_ms_*/d2h_ms_* = the copies")

    Options = TrtOptions

    def __init__(self, model_path, profile, options=None, batch_sizes=()):
        super().__init__(model_path, profile, options, batch_sizes)
        self._ctx = None
        self._buffers: dict = {}
        self._engine = None
        self._context = None
        self._stream = None
        self._info: dict = {}
        self.precision = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            trt, cuda = _import_runtime()
            gpu = _gpu_name(cuda)
        except TargetUnavailable as exc:
            return False, str(exc)
        return True, f"tensorrt {trt.__version__} on {gpu}"

    # - load ------------------------------------------------------------------------------------------

    def load(self, batch: int) -> None:
        if self.model_path.suffix.lower() != ".onnx":
            raise HarnessError(f"model {self.model_path}: target trt builds engines from an .onnx file")
        # user-fixable problems first (settings, model/profile fit, batch, calibration folder): these
        # need no GPU, so they are reported on any machine; then whether TensorRT can run here at all
        settings = settings_from_options(asdict(self.options))
        self.settings = settings
        inputs = onnx_inputs(self.model_path)
        first_name, first_dims, first_dtype = inputs[0]
        self.check_input(first_dims, first_dtype, batch)
        fixed = first_dims[0] if first_dims and first_dims[0] is not None else None
        if fixed is not None and fixed != batch:
            raise fixed_batch_error(self.model_path, fixed, batch, "TensorRT builds a static engine for a fixed-batch graph")
        if len(inputs) > 1 and settings.precision == "int8":
            raise HarnessError(f"model {self.model_path.name} has {len(inputs)} inputs; int8 calibration here feeds "
                               "one image input only (use fp16, or calibrate the model yourself)")
        self.padded_batch = fixed is not None
        self.model_batch = fixed
        batches = profile_batches(self.batch_sizes or [batch], batch, fixed, settings.opt_batch)
        spec_shape = self.profile.input.shape(batch)
        shapes = {first_name: profile_shapes(spec_shape, batches)}
        for name, dims, _ in inputs[1:]:
            shapes[name] = profile_shapes((batch, *dims[1:]) if all(d is not None for d in dims[1:]) else dims, batches)
        self._profile_batches = batches
        if settings.precision == "int8":
            folder = self.options.calib or settings.calib
            if not folder:
                raise HarnessError("precision int8 needs calibration images: pass --calib DIR (a folder of "
                                   "representative images, a few hundred) or set calib in targets/trt.toml")
            calibration_files(folder, settings.calib_images)
        ok, why = self.availability()
        if not ok:
            raise TargetUnavailable(f"target trt cannot run here: {why}")
        self.close()  # a previous load's engine/buffers (the runner makes one target per batch size)

        trt, cuda = _import_runtime()
        self._trt, self._cuda = trt, cuda
        gpu = _gpu_name(cuda)
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        logger = _logger(trt)
        onnx_sha = sha256_file(self.model_path)
        stem = self.model_path.stem
        cache_dir = settings.cache_dir
        calib_path, calib_batches = None, None
        if settings.precision == "int8":
            calib_path, calib_batches = self._calibration_source(settings, onnx_sha, fixed)
        calib_sha = sha256_file(calib_path) if calib_path is not None and calib_path.is_file() else None

        plan, engine_path, why = None, None, "not cached yet"
        if settings.precision != "int8" or calib_sha:
            key_fields = engine_key_fields(onnx_sha, settings.precision, shapes, trt.__version__, gpu, calib_sha)
            plan, engine_path, why = lookup_engine(cache_dir, stem, key_fields)
        engine = None
        if plan is not None:
            engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
            if engine is None:
                why = "cached engine could not be deserialized"
            else:
                self._info.update({"engine_cache": "hit", "engine": str(engine_path)})
        if engine is None:
            plan, engine_path = self._build(trt, cuda, logger, settings, shapes, fixed is None, calib_path,
                                            calib_batches, onnx_sha, gpu, stem, cache_dir)
            self._info.update({"engine_cache": f"built ({why})", "engine": str(engine_path)})
            engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
            if engine is None:
                raise HarnessError("TensorRT built an engine it cannot deserialize (see the TensorRT log above)")
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise HarnessError("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()
        self._setup_io(batch)
        self.batch = batch
        self.precision = settings.precision
        self._info.update({"runtime": f"tensorrt {trt.__version__}", "device": gpu, "precision": settings.precision,
                           "profile_batch": {"min": batches[0], "opt": batches[1], "max": batches[2]},
                           "workspace_mib": settings.workspace_mib})

    def _calibration_source(self, settings: TrtSettings, onnx_sha: str, fixed: int | None):
        """(calibration cache path, CalibrationBatches) for an int8 build."""
        folder = self.options.calib or settings.calib
        if not folder:
            raise HarnessError("precision int8 needs calibration images: pass --calib DIR (a folder of "
                               "representative images, a few hundred) or set calib in targets/trt.toml")
        files = calibration_files(folder, settings.calib_images)
        batch_size = fixed if fixed is not None else settings.calib_batch_size
        batches = CalibrationBatches(files, self.profile.input, batch_size, partial=settings.calib_partial)
        cache = settings.cache_dir / calib_cache_name(onnx_sha, settings.calibrator, batches.identity())
        if len(files) < settings.calib_images:
            self.notes.append(f"int8 calibration: {batches.images_used} image(s) of the {settings.calib_images} "
                              f"asked for (calib_images); folder {folder} holds fewer")
        self._info.update({"calibrator": settings.calibrator, "calib_images": batches.images_used,
                           "calib_batch_size": batch_size, "calib_cache": str(cache)})
        return cache, batches

    def _build(self, trt, cuda, logger, settings, shapes, dynamic, calib_path, calib_batches, onnx_sha, gpu,
               stem, cache_dir):
        builder, network, _parser = parse_onnx(trt, logger, self.model_path)
        calibrator = None
        calib_shapes = None
        if settings.precision == "int8":
            reuse = calib_path.is_file()
            calibrator = make_calibrator(trt, cuda, settings.calibrator, None if reuse else calib_batches, calib_path)
            calib_shape = calib_batches.shape
            calib_shapes = {name: (calib_shape, calib_shape, calib_shape) for name in list(shapes)[:1]}
            self._info["calib_cache_reused"] = reuse
        started = time.perf_counter()
        try:
            plan = build_serialized_engine(trt, logger, builder, network, settings.precision, settings.workspace_mib,
                                           shapes, dynamic, calibrator, calib_shapes)
        finally:
            if calibrator is not None:
                calibrator.free()
        self._info["build_seconds"] = round(time.perf_counter() - started, 1)
        calib_sha = None
        if settings.precision == "int8":
            if not calib_path.is_file():
                raise HarnessError(f"int8 calibration wrote no calibration cache to {calib_path}")
            calib_sha = sha256_file(calib_path)
        key_fields = engine_key_fields(onnx_sha, settings.precision, shapes, trt.__version__, gpu, calib_sha)
        path = store_engine(cache_dir, stem, key_fields, plan, {"model": str(self.model_path),
                                                                "build_seconds": self._info["build_seconds"]})
        return plan, path

    def _setup_io(self, batch: int) -> None:
        trt, cuda, engine, context = self._trt, self._cuda, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._set_input_shapes(batch, {})
        for name in names:
            shape = self._shapes[name]
            count = max(1, int(np.prod(shape)))
            host = cuda.pagelocked_empty(count, self._dtypes[name])
            device = cuda.mem_alloc(host.nbytes)
            self._buffers[name] = (host, device)
            context.set_tensor_address(name, int(device))

    def _set_input_shapes(self, n: int, extras: dict) -> None:
        """Give the context this batch's input shapes; read back the output shapes."""
        context = self._context
        self._shapes = getattr(self, "_shapes", {})
        first = self._input_names[0]
        wanted = {first: self.profile.input.shape(n)}
        for name in self._input_names[1:]:
            if name in extras:
                wanted[name] = tuple(extras[name].shape)
            elif name not in self._shapes:
                dims = tuple(self._engine.get_tensor_shape(name))
                wanted[name] = (n, *dims[1:])
        changed = False
        for name, shape in wanted.items():
            if self._shapes.get(name) != tuple(shape):
                if not context.set_input_shape(name, tuple(int(d) for d in shape)):
                    raise HarnessError(f"TensorRT engine rejects input {name} shape {tuple(shape)} "
                                       f"(profile batches {self._profile_batches})")
                self._shapes[name] = tuple(int(d) for d in shape)
                changed = True
        if changed or any(o not in self._shapes for o in self._output_names):
            for name in self._output_names:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise HarnessError(f"output {name} has a data-dependent shape {shape}; target trt needs "
                                       "outputs whose shape follows from the input shape")
                self._shapes[name] = shape

    # - run -------------------------------------------------------------------------------------------

    def _stage(self, batch: np.ndarray, extras: dict | None) -> int:
        """Put a batch (and extra inputs) into the pinned input buffers; returns the batch size."""
        if self._context is None:
            raise HarnessError("target trt: infer() before load()")
        n = int(batch.shape[0])
        if n > self.batch:
            raise HarnessError(f"target trt loaded for batch {self.batch}, got {n} images")
        extras = extras or {}
        self._set_input_shapes(n, extras)
        arrays = {self._input_names[0]: batch, **extras}
        for name in self._input_names:
            if name not in arrays:
                raise HarnessError(f"engine input {name} was not given (pass it in extras)")
            array = np.asarray(arrays[name])
            host = self._buffers[name][0]
            if array.size > host.size:
                raise HarnessError(f"input {name} of shape {array.shape} exceeds its buffer")
            np.copyto(host[: array.size], array.reshape(-1), casting="same_kind")
        return n

    def _h2d(self):
        cuda = self._cuda
        for name in self._input_names:
            host, device = self._buffers[name]
            cuda.memcpy_htod_async(device, host[: int(np.prod(self._shapes[name]))], self._stream)

    def _execute(self):
        if not self._context.execute_async_v3(self._stream.handle):
            raise HarnessError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _d2h(self):
        cuda = self._cuda
        for name in self._output_names:
            host, device = self._buffers[name]
            cuda.memcpy_dtoh_async(host[: int(np.prod(self._shapes[name]))], device, self._stream)

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        self._stage(batch, extras)
        self._h2d()
        self._execute()
        self._d2h()
        self._stream.synchronize()
        out = []
        for name in self._output_names:
            shape = self._shapes[name]
            out.append(self._buffers[name][0][: int(np.prod(shape))].reshape(shape).copy())
        return out

    def benchmark(self, batch: np.ndarray, seconds: float, min_iterations: int,
                  extras: dict | None = None) -> BenchStats:
        """One stream, one batch in flight: events around H2D, execute and D2H of every iteration."""
        cuda = self._cuda
        n = self._stage(batch, extras)
        e0, e1, e2, e3 = (cuda.Event() for _ in range(4))
        total, h2d, compute, d2h = [], [], [], []
        start = time.perf_counter()
        while True:
            e0.record(self._stream)
            self._h2d()
            e1.record(self._stream)
            self._execute()
            e2.record(self._stream)
            self._d2h()
            e3.record(self._stream)
            e3.synchronize()
            h2d.append(e0.time_till(e1))
            compute.append(e1.time_till(e2))
            d2h.append(e2.time_till(e3))
            total.append(e0.time_till(e3))
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and len(total) >= min_iterations:
                break
        extra = timing_summary(h2d, compute, d2h, n)
        stats = BenchStats(total, len(total) * n, elapsed)
        stats.extra.update(extra)
        return stats

    # - describe / close ------------------------------------------------------------------------------

    def describe(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        for host, device in self._buffers.values():
            for allocation in (device, getattr(host, "base", None)):  # free while the CUDA context is current
                try:
                    allocation.free()
                except Exception:
                    pass
        self._buffers = {}
        self._shapes = {}
        self._context = None
        self._engine = None
        self._stream = None
        if self._ctx is not None:
            try:
                self._ctx.pop()
            except Exception:
                pass
            self._ctx = None
