"""LiteRT (TFLite) target (`litert`): .tflite files in fp32, int8 or uint8, LiteRT's default CPU delegate
or an external delegate (.so: NXP VX / Ethos-U, Coral Edge TPU, Qualcomm QNN ...), N interpreters on N
threads in throughput mode."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from harness.core.config import Invalid, setting
from harness.core.errors import HarnessError, TargetUnavailable, first_line
from harness.targets.base import BenchStats, Target, call_loop, fixed_batch_error
from harness.targets.inflight import ordered_stream
from harness.targets.litert.runtime import MODULES, interpreter_module, load_external_delegate, parse_delegate_options
from harness.targets.litert.tensors import delegation, dequantize_output, graph_precision, quantize_input
from harness.targets.modes import Mode, RunMode, resolve_mode, split_cores, usable_cores
from harness.targets.timing import LoopRule


@dataclass(frozen=True)
class LiteRtOptions:
    """Options of the `litert` target."""

    #: latency: one interpreter; throughput (default): `streams` interpreters, each invoked on its own thread
    mode: Mode | None = None
    #: interpreters in throughput mode; default: the usable cores / num_threads
    streams: int | None = setting(None, ge=1)
    #: threads of each interpreter (Interpreter(num_threads=)); default: latency mode LiteRT's choice,
    #: throughput mode the usable cores / streams
    num_threads: int | None = setting(None, ge=1)
    #: an external delegate's shared library (load_delegate); its options as "k=v;k=v"
    delegate: str | None = None
    delegate_options: str | None = None
    #: LiteRT's default CPU delegate (XNNPACK) on top of the built-in kernels; false: built-in kernels only
    default_delegate: bool = True
    #: float input -> the model's integer input: round (TFLite's QUANTIZE kernel) or truncate (Ultralytics'
    #: AutoBackend); used only where the model takes int8/uint8 and the profile gives floats
    input_rounding: Literal["round", "truncate"] = "round"
    # the interpreter runs the graph as it is: a precision asked for must be the graph's own (checked at load)
    precision: Literal["fp32", "fp16", "int8", "uint8"] | None = None

    def __post_init__(self):
        if self.mode == "latency" and (self.streams or 1) > 1:
            raise Invalid("mode", f"latency contradicts --streams {self.streams} (several interpreters in flight is "
                                  "throughput mode); give one of the two")
        if self.delegate_options and not self.delegate:
            raise Invalid("delegate_options", "given without -o delegate=/path/to/libdelegate.so")
        parse_delegate_options(self.delegate_options)


def _module():
    module, _ = interpreter_module()
    return module


class LiteRtTarget(Target):
    name = "litert"
    description = "LiteRT (TFLite) interpreter: .tflite fp32/int8/uint8, default CPU delegate or an external one"
    Options = LiteRtOptions
    model_formats: ClassVar[tuple[str, ...]] = (".tflite",)
    #: `harness run --threads N` sets num_threads (the interpreter's own name for it)
    run_flags: ClassVar[dict] = {"threads": "num_threads"}
    packages = tuple(distribution for _, distribution in MODULES)  # the results' environment records their versions

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _, version = interpreter_module()
        except TargetUnavailable as exc:
            return False, str(exc)
        return True, version

    # - load ------------------------------------------------------------------------------------------

    def resolve_run_mode(self) -> RunMode:
        mode = resolve_mode(self.options.mode, "throughput" if (self.options.streams or 1) > 1 else None)
        if mode == "latency":
            return RunMode("latency", 1, 1, self.options.num_threads)
        requests, threads = split_cores(usable_cores(), self.options.streams, self.options.num_threads)
        return RunMode("throughput", requests, requests, requests * threads)

    def _threads_each(self) -> int | None:
        run = self.run_mode
        return None if run.threads is None else max(1, run.threads // run.requests)

    def _interpreter(self, module):
        delegates = []
        if self.options.delegate:
            delegates.append(load_external_delegate(module, self.options.delegate,
                                                    parse_delegate_options(self.options.delegate_options)))
        kwargs = {}
        if not self.options.default_delegate:
            kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            return module.Interpreter(model_path=str(self.model_path), num_threads=self._threads_each(),
                                      experimental_delegates=delegates or None, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise HarnessError(f"model {self.model_path}: LiteRT cannot load it ({first_line(exc, 200)})") from None

    def _allocate(self, interpreter, batch: int) -> None:
        """Resize the image input to `batch` where the graph allows it, then allocate; a graph that cannot
        run that batch (fixed reshapes, a delegate that cannot reshape) fails the row with the reason."""
        detail = interpreter.get_input_details()[0]
        shape = [int(d) for d in detail["shape"]]
        try:
            if shape[0] != batch:
                interpreter.resize_tensor_input(detail["index"], [batch, *shape[1:]], strict=False)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if shape[0] != batch:
                raise fixed_batch_error(self.model_path, shape[0], batch,
                                        f"LiteRT cannot resize its input: {first_line(exc, 160)}") from None
            raise HarnessError(f"model {self.model_path}: LiteRT cannot allocate its tensors ({first_line(exc, 200)})") from None
        bad = [tuple(int(d) for d in o["shape"]) for o in interpreter.get_output_details()
               if len(o["shape"]) and int(o["shape"][0]) != batch]
        if bad and batch > 1:
            raise fixed_batch_error(self.model_path, shape[0], batch, f"an output keeps shape {bad[0]} after resizing")

    def load(self, batch: int) -> None:
        if self.model_path.suffix.lower() not in self.model_formats:
            raise HarnessError(f"model {self.model_path}: target litert needs a .tflite file")
        module = _module()
        self.run_mode = self.resolve_run_mode()
        if self.run_mode.requests > 1:
            self.time_covers = (f"set_tensor + invoke + get_tensor (outputs dequantized), {self.run_mode.requests} "
                                "interpreters invoked on as many threads; latency per call under that load")
        else:
            self.time_covers = "set_tensor + invoke + get_tensor (outputs dequantized); input quantized before the clock"
        first = self._interpreter(module)
        inputs = first.get_input_details()
        if len(inputs) != 1:
            raise HarnessError(f"model {self.model_path.name} has {len(inputs)} inputs; target litert feeds one image input")
        detail = inputs[0]
        signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        self.model_batch = None if signature and signature[0] < 0 else int(detail["shape"][0])
        self.check_input(tuple(int(d) for d in detail["shape"]), "", batch)
        self._input_kind = self._input_conversion(detail)
        self.precision = self.resolve_precision(graph_precision(first.get_tensor_details()), self.options.precision)
        interpreters = [first] + [self._interpreter(module) for _ in range(self.run_mode.requests - 1)]
        for interpreter in interpreters:
            self._allocate(interpreter, batch)
        if self.model_batch is not None and self.model_batch != batch:
            self.note(f"input resized from batch {self.model_batch} to {batch} (resize_tensor_input)")
        self.batch = batch
        self.padded_batch = True  # allocated for one batch size: a short last batch is padded
        self._interpreters = interpreters
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for interpreter in interpreters:
            self._free.put(interpreter)
        self._input = first.get_input_details()[0]
        self._outputs = first.get_output_details()
        self._delegation = self._delegation_of(first)

    def _input_conversion(self, detail: dict) -> str:
        """How the profile's tensor becomes the model's input: 'as is' or 'quantize' (one line otherwise)."""
        model_type = np.dtype(detail["dtype"]).name
        given = self.profile.input.numpy_dtype
        scale = detail["quantization"][0]
        if model_type == given:
            return "as is"
        if given == "float32" and model_type in ("int8", "uint8", "int16") and scale:
            return "quantize"
        raise HarnessError(
            f"model {self.model_path.name} input is {model_type}"
            + (f" (scale {scale:g}, zero point {detail['quantization'][1]})" if scale else "")
            + f" but profile {self.profile.name} gives {given} (dtype = {self.profile.input.dtype!r}); "
            + ("use dtype = \"f32\" (the target quantizes with the model's own scale and zero point) or \"u8\" "
               "where the model takes raw bytes; check --profile" if scale else "check --profile"))

    def _delegation_of(self, interpreter) -> dict:
        try:
            ops = interpreter._get_ops_details()  # the node list, delegate nodes included (no public API)
        except Exception:  # an interpreter build without it: the row says nothing rather than a guess
            return {}
        return delegation(ops)

    # - run -------------------------------------------------------------------------------------------

    def _feed(self, batch: np.ndarray) -> np.ndarray:
        if self._input_kind == "quantize":
            return quantize_input(batch, self._input, self.options.input_rounding)
        return np.ascontiguousarray(batch)

    def _run(self, interpreter, feed: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(self._input["index"], feed)
        interpreter.invoke()
        return [dequantize_output(interpreter.get_tensor(o["index"]), o) for o in self._outputs]

    def infer(self, batch: np.ndarray, extras: dict | None = None) -> list[np.ndarray]:
        """One batch on a free interpreter (an interpreter runs one call at a time)."""
        feed = self._feed(batch)
        interpreter = self._free.get()
        try:
            return self._run(interpreter, feed)
        finally:
            self._free.put(interpreter)

    def infer_stream(self, items):
        """Batches in order, one per interpreter in flight, each invoke() on its own thread (it releases the GIL)."""
        return ordered_stream(items, self.infer, self.run_mode.requests)

    def benchmark(self, batch: np.ndarray, rule: LoopRule, extras: dict | None = None, capture: int = 0) -> BenchStats:
        """Interpreter k on thread k, set_tensor + invoke + get_tensor back to back (the input quantized
        once, before the loop), as benchmark_model's loop invokes; one interpreter in latency mode."""
        feed = self._feed(batch)
        interpreters = self._interpreters
        return call_loop(lambda k: self._run(interpreters[k], feed), rule, batch.shape[0], capture,
                         self.run_mode.requests)

    def output_names(self) -> list[str]:
        outputs = getattr(self, "_outputs", None)
        return [o["name"] for o in outputs] if outputs else []

    def describe(self) -> dict:
        _, version = interpreter_module()
        info = {"runtime": version, "device": "CPU" if not self.options.delegate else "external delegate",
                "num_threads": self._threads_each(), "interpreters": self.run_mode.requests,
                "mode": self.run_mode.mode, "default_delegate": self.options.default_delegate,
                "delegate": self.options.delegate,
                "delegate_options": parse_delegate_options(self.options.delegate_options) or None,
                "input": getattr(self, "_input_kind", None)}
        if getattr(self, "_input_kind", None) == "quantize":
            scale, zero_point = self._input["quantization"]
            info["input_quantization"] = {"scale": float(scale), "zero_point": int(zero_point),
                                          "rounding": self.options.input_rounding}
        info.update(getattr(self, "_delegation", {}))
        return {k: v for k, v in info.items() if v is not None}

    def close(self) -> None:
        self._interpreters = []
        self._free = queue.SimpleQueue()
