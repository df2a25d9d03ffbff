"""NVIDIA TensorRT target (`trt`): one strongly typed build recipe for TensorRT 10.x and 11.x.

    prepare  precision is put into the ONNX before parsing (prepare.py): fp32 as it is, fp16
             converted and checked against fp32 on ONNX Runtime CPU, int8 from a Q/DQ model
    build    strongly typed network, TF32 a setting, DETAILED profiling verbosity (build.py);
             TensorRT 10's implicit calibration only as the labelled legacy mode (calib.py);
             engines cached by a key over everything they depend on (engine.py)
    verify   the engine inspector's layer precisions; an "fp16" engine with no fp16 layer is an
             EnginePrecisionError, not a result (inspect.py)
    infer    one or two execution contexts with pinned host / device buffers (io.py) on a CUDA
             binding: cuda-python, or pycuda (cuda_rt.py)
    timing   serial or pipelined, optional CUDA graph, trtexec-style fields (timing.py)

Settings: targets/trt.toml merged with the command line (settings.py: TrtSettings, and TrtOptions,
this target's Options: --precision, --calib, --engine-cache, any other key as -o KEY=VALUE). The
profile's [precision] keep_fp32_nodes stay fp32 in fp16 conversions; the runner's sample_images are
what the conversion is checked on. tensorrt and the CUDA binding are imported lazily, so listing
targets never needs them.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, TargetUnavailable
from harness.core.fileio import sha256_file
from harness.model.extra_inputs import check_model_inputs
from harness.model.onnx_model import OnnxModelInfo, inspect_onnx
from harness.targets.base import BenchStats, Target, fixed_batch_error
from harness.targets.modes import RunMode
from harness.targets.timing import LoopRule
from harness.targets.trt.engine import (
    engine_key_fields,
    lookup_engine,
    profile_batches,
    profile_shapes,
    store_engine,
)
from harness.targets.trt.settings import TIMING_MODE, TrtOptions, TrtSettings, settings_from_options
from harness.targets.trt.timing import FIGURES as TRT_FIGURES


@dataclass(frozen=True)
class LoadPlan:
    """Everything load() decides before touching a GPU."""

    settings: TrtSettings
    graph: OnnxModelInfo  # the source model's signature and graph precision
    batch: int
    fixed: int | None
    batches: tuple[int, int, int]
    shapes: dict  # {input: (min, opt, max)}


@functools.cache
def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def runtime_status() -> dict:
    """Which TensorRT, which CUDA binding and which modes are available here (`harness targets`)."""
    from harness.targets.trt.api import import_tensorrt
    from harness.targets.trt.cuda_rt import load_binding

    status: dict = {}
    try:
        _, api = import_tensorrt()
        status["tensorrt"] = api.version
        status["modes"] = api.modes
    except TargetUnavailable as exc:
        status["tensorrt"] = None
        status["tensorrt_problem"] = str(exc)
    try:
        binding = load_binding("auto")
        status["cuda_binding"] = f"{binding.name} {binding.version}"
        status["cuda_graphs"] = binding.supports_graphs
    except TargetUnavailable as exc:
        status["cuda_binding"] = None
        status["cuda_binding_problem"] = str(exc)
    status["timing"] = ["serial", "pipelined"]
    return status


def status_line() -> str:
    """One line for `harness targets`: TensorRT release, CUDA binding, modes."""
    s = runtime_status()
    trt = f"TensorRT {s['tensorrt']}" if s["tensorrt"] else "TensorRT not installed"
    cuda = f"CUDA binding {s['cuda_binding']}" if s["cuda_binding"] else "no CUDA binding (cuda-python or pycuda)"
    modes = "; ".join(s.get("modes", [])) or "no build modes"
    graphs = ", CUDA graphs" if s.get("cuda_graphs") else ""
    return f"{trt}; {cuda}; builds: {modes}; timing: serial, pipelined{graphs}"


class TensorRtTarget(Target):
    name = "trt"
    device_kind = "gpu"
    description = ("NVIDIA TensorRT 10/11 engine from ONNX, strongly typed fp32/fp16/int8 "
                   "(needs tensorrt, a CUDA binding, an NVIDIA GPU)")
    time_covers = ("per batch, CUDA events: H2D copy from pinned host memory + execute + D2H copy (serial: one batch "
                   "in flight; pipelined: two on two streams); gpu_compute_ms_* = execute only, h2d_ms_*/d2h_ms_* "
                   "the copies, enqueue_ms_* the host enqueue call")

    Options = TrtOptions
    figures = TRT_FIGURES
    packages = ("tensorrt", "pycuda")

    def __init__(self, model_path, profile, options=None, batch_sizes=()):
        super().__init__(model_path, profile, options, batch_sizes)
        self._ios: list = []
        self._engine = None
        self._cuda = None
        self._info: dict = {}
        self.settings: TrtSettings | None = None
        self.built_from = self.model_path  # the ONNX the engine is built from (a batch rewrite of it, else the model)

    status_line = staticmethod(status_line)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        from harness.targets.trt.api import import_tensorrt
        from harness.targets.trt.cuda_rt import load_binding

        try:
            _, api = import_tensorrt()
            binding = load_binding("auto")
            gpu = binding.device(0).name
        except TargetUnavailable as exc:
            return False, str(exc)
        return True, f"tensorrt {api.version} ({binding.name}) on {gpu}"

    # - load: small steps -------------------------------------------------------------------------

    def load(self, batch: int) -> None:
        plan = self._plan(batch)
        trt, api, cuda = self._runtime(plan.settings)
        self.close()  # a previous load's engine/buffers (the runner makes one target per batch size)
        self._trt, self._cuda = trt, cuda
        gpu = cuda.device(0).name
        cuda.activate(0)
        prepared = self._prepare(plan.settings)
        engine = self._engine_for(trt, api, cuda, plan, prepared, gpu)
        self._verify(trt, engine, prepared.label)
        self._open_io(trt, cuda, engine, plan)
        self.precision = self.resolve_precision(plan.graph.precision, None, runs=prepared.label)
        for note in prepared.notes:
            self.note(note)
        self._info.update({"runtime": f"tensorrt {api.version}", "device": gpu, "precision": prepared.label,
                           "cuda_binding": f"{cuda.name} {cuda.version}", "precision_recipe": prepared.recipe,
                           "conversion_check": prepared.check, "tf32": plan.settings.tf32,
                           "timing_mode": plan.settings.timing, "cuda_graph": plan.settings.cuda_graph,
                           "profile_batch": dict(zip(("min", "opt", "max"), plan.batches)),
                           "workspace_mib": plan.settings.workspace_mib})
        self._record_trtexec(api, plan)

    def _plan(self, batch: int) -> LoadPlan:
        """User-fixable problems first (settings, model/profile fit, batch, int8 source): no GPU needed."""
        if self.model_path.suffix.lower() != ".onnx":
            raise HarnessError(f"model {self.model_path}: target trt builds engines from an .onnx file")
        settings = settings_from_options(self.options)
        self.settings = settings
        graph = inspect_onnx(self.model_path)
        first = graph.image_input
        self.check_input(first.dims(), first.dtype, batch)
        check_model_inputs(graph.inputs, self.profile, self.model_path.name, batch)
        fixed = first.fixed_batch
        self.model_batch = fixed
        self.built_from = self.model_path
        if fixed == 1 and batch != 1:
            # the checked batch-N rewrite (harness.model.batch_rewrite): the engine and its optimization
            # profile are built from that file, a fixed batch-N graph
            self.built_from = Path(self.rewritten_for_batch(batch))
            graph = inspect_onnx(self.built_from)
            first, fixed = graph.image_input, batch
        elif fixed is not None and fixed != batch:
            raise fixed_batch_error(self.model_path, fixed, batch, "TensorRT builds a static engine for a fixed-batch graph; "
                                    "only batch-1 graphs are rewritten to another batch")
        # a --precision the graph does not give is refused (a Q/DQ or fp16 graph runs as it is); the
        # settings file's precision is a default for fp32 models, so only the option is held to it
        self.resolve_precision(graph.precision, self.options.precision, runs=settings.precision)
        self._check_precision_source(settings, graph)
        if settings.precision == "int8" and settings.int8_mode == "implicit":
            self._check_implicit_inputs(settings, graph)
        self.padded_batch = fixed is not None
        batches = profile_batches(self.batch_sizes or [batch], batch, fixed, settings.opt_batch)
        shapes = {first.name: profile_shapes(self.profile.input.shape(batch), batches)}
        for tensor in graph.inputs[1:]:
            dims = tensor.dims()
            shapes[tensor.name] = profile_shapes((batch, *dims[1:]) if all(d is not None for d in dims[1:]) else dims,
                                                 batches)
        return LoadPlan(settings, graph, batch, fixed, batches, shapes)

    def _check_precision_source(self, settings: TrtSettings, graph: OnnxModelInfo) -> None:
        """int8 needs a Q/DQ model (or the legacy mode): said before any GPU work."""
        from harness.targets.trt.prepare import build_plan

        build_plan(settings.precision, graph.precision, graph.float16_tensors > 0, settings.int8_mode,
                   self.model_path.name)

    def _check_implicit_inputs(self, settings: TrtSettings, graph: OnnxModelInfo) -> None:
        from harness.precision.calib_images import calibration_files

        if len(graph.inputs) > 1:
            raise HarnessError(f"model {self.model_path.name} has {len(graph.inputs)} inputs; int8 calibration here "
                               "feeds one image input only (use a Q/DQ model, or calibrate the model yourself)")
        folder = settings.calib
        if not folder:
            raise HarnessError("precision int8 needs calibration images: pass --calib DIR (a folder of "
                               "representative images, a few hundred) or set calib in targets/trt.toml")
        calibration_files(folder, settings.calib_images)

    def _runtime(self, settings: TrtSettings):
        """(tensorrt, TrtApi, CUDA binding) or TargetUnavailable; legacy modes refused where removed."""
        from harness.targets.trt.api import QUANTIZE_HINT, import_tensorrt
        from harness.targets.trt.cuda_rt import load_binding

        ok, why = self.availability()
        if not ok:
            raise TargetUnavailable(f"target trt cannot run here: {why}")
        trt, api = import_tensorrt()
        if settings.precision == "int8" and settings.int8_mode == "implicit" and not api.legacy_int8:
            raise HarnessError(QUANTIZE_HINT.format(version=api.version))
        cuda = load_binding(settings.cuda_binding)
        if settings.cuda_graph and not cuda.supports_graphs:
            raise HarnessError(f"cuda_graph = true needs cuda-python (pip install cuda-python); {cuda.name} is in use")
        return trt, api, cuda

    def _prepare(self, settings: TrtSettings):
        from harness.targets.trt.prepare import prepare_model

        onnx_sha = sha256_file(self.built_from)
        self._onnx_sha = onnx_sha
        samples = self.sample_images[: settings.check_images]
        where = f"the run's first {len(samples)} images ({Path(samples[0][1]).parent})" if samples else ""
        return prepare_model(self.built_from, onnx_sha, settings, self.profile, settings.cache_dir,
                             sample_images=samples, sample_desc=where)

    def _engine_for(self, trt, api, cuda, plan: LoadPlan, prepared, gpu: str):
        """The cached engine for this key, or a fresh build (stored in the cache)."""
        logger = _logger(trt)
        implicit = prepared.recipe["int8_mode"] == "implicit" and not prepared.recipe["strongly_typed"]
        calib_path = calib_batches = None
        if implicit:
            calib_path, calib_batches = self._calibration_source(plan, self._onnx_sha)
        calib_sha = sha256_file(calib_path) if calib_path is not None and calib_path.is_file() else None
        stem, cache_dir = self.model_path.stem, plan.settings.cache_dir
        plan_bytes, why = None, "not cached yet"
        if not implicit or calib_sha:
            key = engine_key_fields(self._onnx_sha, prepared.label, plan.shapes, api.version, gpu, calib_sha,
                                    recipe=prepared.recipe)
            plan_bytes, engine_path, why = lookup_engine(cache_dir, stem, key)
        if plan_bytes is not None:
            engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
            if engine is not None:
                self._info.update({"engine_cache": "hit", "engine": str(engine_path)})
                return engine
            why = "cached engine could not be deserialized"
        plan_bytes, engine_path = self._build(trt, cuda, logger, plan, prepared, calib_path, calib_batches, gpu, api)
        self._info.update({"engine_cache": f"built ({why})", "engine": str(engine_path)})
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)
        if engine is None:
            raise HarnessError("TensorRT built an engine it cannot deserialize (see the TensorRT log above)")
        return engine

    def _calibration_source(self, plan: LoadPlan, onnx_sha: str):
        """(calibration cache path, CalibrationBatches) for TensorRT 10's implicit int8 build."""
        from harness.precision.calib_images import CalibrationBatches, calibration_files
        from harness.targets.trt.calib import calib_cache_name

        settings = plan.settings
        folder = settings.calib
        files = calibration_files(folder, settings.calib_images)
        batch_size = plan.fixed if plan.fixed is not None else settings.calib_batch_size
        batches = CalibrationBatches(files, self.profile.input, batch_size, partial=settings.calib_partial)
        cache = settings.cache_dir / calib_cache_name(onnx_sha, settings.calibrator, batches.identity())
        if len(files) < settings.calib_images:
            self.note(f"int8 calibration: {batches.images_used} image(s) of the {settings.calib_images} "
                              f"asked for (calib_images); folder {folder} holds fewer")
        self._info.update({"calibrator": settings.calibrator, "calib_images": batches.images_used,
                           "calib_batch_size": batch_size, "calib_cache": str(cache),
                           "int8_mode": "implicit (legacy, TensorRT 10)"})
        return cache, batches

    def _build(self, trt, cuda, logger, plan: LoadPlan, prepared, calib_path, calib_batches, gpu, api):
        from harness.targets.trt.build import make_config, parse_onnx, serialize

        settings = plan.settings
        strongly_typed = prepared.recipe["strongly_typed"]
        builder, network, _parser = parse_onnx(trt, logger, prepared.path, strongly_typed)
        config = make_config(trt, builder, settings.workspace_mib, settings.tf32, plan.shapes, plan.fixed is None)
        calibrator = None
        if calib_batches is not None:
            calibrator = self._legacy_calibrator(trt, cuda, config, builder, plan, calib_path, calib_batches)
        started = time.perf_counter()
        try:
            plan_bytes = serialize(builder, network, config, calibrator)
        finally:
            if calibrator is not None:
                calibrator.free()
        self._info["build_seconds"] = round(time.perf_counter() - started, 1)
        calib_sha = None
        if calibrator is not None:
            if not calib_path.is_file():
                raise HarnessError(f"int8 calibration wrote no calibration cache to {calib_path}")
            calib_sha = sha256_file(calib_path)
        key = engine_key_fields(self._onnx_sha, prepared.label, plan.shapes, api.version, gpu, calib_sha,
                                recipe=prepared.recipe)
        path = store_engine(settings.cache_dir, self.model_path.stem, key, plan_bytes,
                            {"model": str(self.model_path), "built_onnx": str(prepared.path),
                             "build_seconds": self._info["build_seconds"]})
        return plan_bytes, path

    def _legacy_calibrator(self, trt, cuda, config, builder, plan: LoadPlan, calib_path, calib_batches):
        """TensorRT 10 only (reached after TrtApi.legacy_int8 said the names exist)."""
        from harness.targets.trt.calib import apply_implicit_int8, make_calibrator

        reuse = calib_path.is_file()
        calibrator = make_calibrator(trt, cuda, plan.settings.calibrator, None if reuse else calib_batches,
                                     calib_batches.shape, calib_batches.dtype, calib_path)
        first = list(plan.shapes)[0]
        calib_shapes = {first: (calib_batches.shape,) * 3}
        apply_implicit_int8(trt, config, builder, calibrator, calib_shapes, plan.fixed is None)
        self._info["calib_cache_reused"] = reuse
        return calibrator

    def _verify(self, trt, engine, label: str) -> None:
        from harness.targets.trt.build import engine_information
        from harness.targets.trt.inspect import check_engine_precision, layer_precision_shares

        shares = layer_precision_shares(engine_information(trt, engine))
        self._info["engine_precision"] = shares
        check_engine_precision(label, shares, f"engine {Path(self._info.get('engine', '')).name}")
        self._engine = engine

    def _open_io(self, trt, cuda, engine, plan: LoadPlan) -> None:
        from harness.targets.trt.io import EngineIO

        count = 2 if plan.settings.timing == "pipelined" else 1
        self._ios = [EngineIO(trt, cuda, engine, self.profile.input.shape, plan.batch, plan.batches,
                              plan.settings.cuda_graph) for _ in range(count)]
        self.batch = plan.batch
        self.run_mode = RunMode(TIMING_MODE[plan.settings.timing], count, count, None)

    def _record_trtexec(self, api, plan: LoadPlan) -> None:
        from harness.targets.trt.timing import trtexec_command, trtexec_defaults_note

        shapes = {name: (plan.batch, *triple[0][1:]) for name, triple in plan.shapes.items()}
        self._info["trtexec"] = trtexec_command(self._info["engine"], shapes, plan.settings.timing,
                                                plan.settings.cuda_graph)
        self._info["trtexec_compare"] = trtexec_defaults_note(api.major, plan.settings.timing, plan.settings.cuda_graph)

    # - run ---------------------------------------------------------------------------------------

    def _io(self):
        if not self._ios:
            raise HarnessError("target trt: infer() before load()")
        return self._ios[0]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        io = self._io()
        if int(batch.shape[0]) > self.batch:
            raise HarnessError(f"target trt loaded for batch {self.batch}, got {int(batch.shape[0])} images")
        io.stage(batch, extras)
        io.h2d()
        io.execute()
        io.d2h()
        io.stream.synchronize()
        return io.results()

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        from harness.targets.trt.timing import run_timing

        self._io()
        return run_timing(self._ios, batch, extras, rule, self.settings.timing, capture)

    # - describe / close --------------------------------------------------------------------------

    def describe(self) -> dict:
        return dict(self._info)

    def close(self) -> None:
        for io in self._ios:
            io.close()
        self._ios = []
        self._engine = None
        if self._cuda is not None:
            try:
                self._cuda.deactivate()
            except Exception:  # teardown: nothing useful to report
                pass
