"""Fakes of the `tensorrt` module, one per release, built from ../shared/trt-api/*.names (test doubles).

Every public attribute of the fake module and of every object it returns exists only if the
release's name list has it (plus HAND_CHECKED: short names that the lists miss because the compiler
stored them as the tail of a longer string, or names defined in tensorrt/__init__.py; each one is
verified to be such a tail in tests/test_trt_api_names.py). So on the 11.4 fake, BuilderFlag.FP16,
IBuilderConfig.int8_calibrator, set_calibration_profile and the IInt8*Calibrator classes do not
exist, exactly as in the real bindings, and every failed lookup is logged with its caller.

Behaviour, kept to what the harness relies on:
- the builder parses the ONNX with the `onnx` package, refuses precision flags on a strongly typed
  network (TensorRT 10 does), needs an optimisation profile for dynamic inputs, and runs TensorRT 10's
  calibrator protocol (get_batch_size / get_batch / read/write_calibration_cache) for INT8, writing a
  cache in TensorRT's text format from the batches it was fed (max-abs ranges of every tensor);
- layer precisions: strongly typed = the ONNX tensor types (a layer fed by DequantizeLinear is int8;
  Q/DQ nodes are fused into the layers they feed, else they are layers of their own, as in TensorRT);
  weakly typed = fp32, fp16 with FP16, int8 for Conv/MatMul with INT8. `force_precision` overrides it
  (to play a TensorRT that silently keeps fp32);
- the engine inspector writes 10.x ("Format/Datatype") or 11.x ("DataType") JSON, layer names only
  unless ProfilingVerbosity.DETAILED was set;
- execute_async_v3 enqueues a kernel on the fake CUDA stream that runs the built ONNX with ONNX
  Runtime CPU on the bytes at the bound device addresses and writes the outputs back.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import onnx

TRT_API = Path(__file__).resolve().parent.parent.parent / "shared" / "trt-api"
RELEASES = {"10.0": "tensorrt-10.0.1.names", "10.16": "tensorrt-10.16.1.11.names", "11.4": "tensorrt-11.4.0.106.names"}
VERSIONS = {"10.0": "10.0.1", "10.16": "10.16.1.11", "11.4": "11.4.0.106"}
#: bound in every release but missing from the lists (tails of longer strings, or Python-level names)
HAND_CHECKED = {"Logger": "ILogger", "Builder": "IExprBuilder", "Runtime": "IPluginV3OneRuntime", "INT8": "UINT8",
                "INPUT": "CONDITIONAL_INPUT",
                "OUTPUT": "CONDITIONAL_OUTPUT", "num_errors": "get_num_errors",
                "nptype": None, "__version__": None}  # nptype, __version__: defined in tensorrt/__init__.py
#: BuilderFlag.INT8 exists in 10.x only (DataType.INT8 in all); the lists cannot show it (tail of UINT8)
BUILDERFLAG_INT8 = ("10.0", "10.16")


def names(release: str) -> set[str]:
    return set((TRT_API / RELEASES[release]).read_text().split())


class Val:
    """An enum value: int-like, hashable, printable."""

    def __init__(self, owner, name, value):
        self.owner, self.name, self.value = owner, name, value

    def __int__(self):
        return self.value

    def __index__(self):
        return self.value

    def __eq__(self, other):
        return isinstance(other, Val) and (self.owner, self.name) == (other.owner, other.name)

    def __hash__(self):
        return hash((self.owner, self.name))

    def __repr__(self):
        return f"{self.owner}.{self.name}"


def calibration_cache(model: onnx.ModelProto, batches: list[np.ndarray], header: str) -> bytes:
    """A calibration cache in TensorRT's format from the fed batches: the header, then per network
    tensor `name: <big-endian float32 bits of amax / 127>` (max-abs ranges: the fake does not run
    TensorRT's entropy search, only its file format matters here), plus one name TensorRT makes itself."""
    import struct

    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(inferred)
    known = {o.name for o in probe.graph.output}
    for value in inferred.graph.value_info:
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and value.name not in known:
            probe.graph.output.append(value)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    amax = dict.fromkeys([model.graph.input[0].name, *names], 0.0)
    for batch in batches:
        amax[model.graph.input[0].name] = max(amax[model.graph.input[0].name], float(np.abs(batch).max()))
        for name, value in zip(names, session.run(names, {model.graph.input[0].name: batch})):
            amax[name] = max(amax[name], float(np.abs(value).max()) if value.size else 0.0)
    lines = [header] + [f"{name}: {struct.pack('!f', top / 127.0).hex()}" for name, top in amax.items()]
    lines.append(f"(Unnamed Layer* 3) [Shuffle]_output: {struct.pack('!f', 0.01).hex()}")
    return ("\n".join(lines) + "\n").encode()


def make_fake_tensorrt(release: str, cuda, force_precision: str | None = None):
    """A fake `tensorrt` module for `release` ("10.0", "10.16", "11.4"); `cuda` is a FakeCudaRuntime."""
    allowed = names(release) | set(HAND_CHECKED)
    major = int(release.split(".")[0])
    log = {"missing": [], "flags": [], "networks": [], "calibration": [], "builds": 0, "executes": 0}

    def missing(owner, name):
        caller = inspect.stack()[2]
        log["missing"].append((owner, name, Path(caller.filename).name, caller.function))
        raise AttributeError(f"tensorrt {release}: {owner}.{name} is not bound")

    class Guarded:
        _owner = "object"

        def __getattribute__(self, name):
            if not name.startswith("_") and name not in allowed:
                missing(object.__getattribute__(self, "_owner"), name)
            return object.__getattribute__(self, name)

        def __setattr__(self, name, value):
            if not name.startswith("_") and name not in allowed:
                missing(self._owner, name)
            object.__setattr__(self, name, value)

    class GuardedMeta(type):
        def __getattribute__(cls, name):
            if not name.startswith("_") and name not in allowed:
                missing(type.__getattribute__(cls, "__name__"), name)
            return type.__getattribute__(cls, name)

    def enum(owner, members, extra=()):
        present = [m for m in members if m in allowed or m in extra]
        cls = GuardedMeta(owner, (), {"_owner": owner})
        for i, member in enumerate(members):
            if member in present:
                type.__setattr__(cls, member, Val(owner, member, i))
        return cls

    flag_int8 = ("INT8",) if release in BUILDERFLAG_INT8 else ()
    BuilderFlag = enum("BuilderFlag", ["FP16", "INT8", "TF32", "BF16"], flag_int8)
    DataType = enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "INT64", "BF16"], ("INT8",))
    NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    MemoryPoolType = enum("MemoryPoolType", ["WORKSPACE"])
    ProfilingVerbosity = enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    LayerInformationFormat = enum("LayerInformationFormat", ["ONELINE", "JSON"])
    TensorIOMode = enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])

    onnx_types = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF", onnx.TensorProto.INT8: "INT8",
                  onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64", onnx.TensorProto.UINT8: "UINT8",
                  onnx.TensorProto.BOOL: "BOOL"}
    np_types = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "UINT8": np.uint8, "BOOL": np.bool_}

    def nptype(dtype):
        return np_types[dtype.name]

    class Logger(Guarded, metaclass=GuardedMeta):
        WARNING = Val("Logger", "WARNING", 2)

        def __init__(self, severity=None):
            self._severity = severity

    class IOptimizationProfile(Guarded):
        _owner = "IOptimizationProfile"

        def __init__(self):
            self._shapes = {}

        def set_shape(self, name, low, opt, high):
            self._shapes[name] = [list(low), list(opt), list(high)]

    class IBuilderConfig(Guarded, metaclass=GuardedMeta):
        _owner = "IBuilderConfig"

        def __init__(self):
            self._flags = {"TF32"}  # TensorRT enables TF32 by default
            self._profiles = []
            self._calib_profile = None
            self._calibrator = None
            self._verbosity = "LAYER_NAMES_ONLY"

        def set_memory_pool_limit(self, pool, size):
            self._workspace = size

        def set_flag(self, flag):
            log["flags"].append(("set", flag.name))
            self._flags.add(flag.name)

        def clear_flag(self, flag):
            log["flags"].append(("clear", flag.name))
            self._flags.discard(flag.name)

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def set_calibration_profile(self, profile):
            self._calib_profile = profile

        @property
        def profiling_verbosity(self):
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value):
            self._verbosity = value.name

        @property
        def int8_calibrator(self):
            return self._calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, value):
            self._calibrator = value

    if "int8_calibrator" not in allowed:  # 11.x: the property is not bound at all
        del IBuilderConfig.int8_calibrator
        del IBuilderConfig.set_calibration_profile

    class INetworkDefinition(Guarded):
        _owner = "INetworkDefinition"

        def __init__(self, strongly_typed):
            self._strongly_typed = strongly_typed
            self._model = None
            self._path = None

    class OnnxParser(Guarded, metaclass=GuardedMeta):
        _owner = "OnnxParser"

        def __init__(self, network, logger):
            self._network = network
            self._errors = []

        def parse_from_file(self, path):
            try:
                model = onnx.load(path)
            except Exception as exc:
                self._errors.append(str(exc))
                return False
            self._network._model, self._network._path = model, str(path)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    def layer_precisions(model, strongly_typed, flags):
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in
                 list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({init.name: init.data_type for init in model.graph.initializer})
        producers = {out: node for node in model.graph.node for out in node.output}
        consumers: dict = {}
        for node in model.graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node.op_type)
        qdq = ("QuantizeLinear", "DequantizeLinear")
        layers = []
        for node in model.graph.node:
            if node.op_type == "Constant":
                continue  # folded
            users = consumers.get(node.output[0], []) if node.output else []
            if node.op_type in qdq and users and not any(u in qdq for u in users):
                continue  # fused into its consumers; a Q/DQ with nothing to fuse into runs as its own layer
            first = node.input[0] if node.input else ""
            if force_precision:
                precision = force_precision
            elif strongly_typed:
                fed_by_dq = first in producers and producers[first].op_type == "DequantizeLinear"
                precision = "int8" if fed_by_dq else {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.INT8: "int8"} \
                    .get(types.get(first), "fp32")
            elif "INT8" in flags and node.op_type in ("Conv", "MatMul", "Gemm"):
                precision = "int8"
            else:
                precision = "fp16" if "FP16" in flags else "fp32"
            layers.append({"name": node.name or node.op_type, "input": first, "precision": precision})
        return layers

    def run_calibrator(config, model):
        calibrator = config._calibrator
        cache = calibrator.read_calibration_cache()
        if cache:
            log["calibration"].append(("read cache", len(cache)))
            return
        batch_size = calibrator.get_batch_size()
        fed = 0
        name = model.graph.input[0].name
        shape = (batch_size, *(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]))
        batches = []
        while True:
            pointers = calibrator.get_batch([name])
            if pointers is None:
                break
            fed += 1
            data = cuda.read(int(pointers[0]), int(np.prod(shape)) * 4)  # the bytes at the device address
            batches.append(np.frombuffer(data, np.float32).reshape(shape))
        log["calibration"].append(("batches", fed, batch_size))
        kind = "EntropyCalibration2" if isinstance(calibrator, module_attrs["IInt8EntropyCalibrator2"]) \
            else "MinMaxCalibration"
        header = f"TRT-{major}{VERSIONS[release].split('.')[1]:0>2}00-{kind}"  # e.g. TRT-101600-EntropyCalibration2
        calibrator.write_calibration_cache(calibration_cache(model, batches, header))

    class Builder(Guarded, metaclass=GuardedMeta):
        _owner = "Builder"

        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            strongly = bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))) or major >= 11
            log["networks"].append({"flags": int(flags), "strongly_typed": strongly})
            return INetworkDefinition(strongly)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            log["builds"] += 1
            model = network._model
            flags = set(config._flags)
            if network._strongly_typed and flags & {"FP16", "INT8"}:
                return None  # TensorRT 10: precision flags are not allowed on a strongly typed network
            inputs = {i.name: i for i in model.graph.input if i.name not in {w.name for w in model.graph.initializer}}
            dynamic = any(not d.dim_value for i in inputs.values() for d in i.type.tensor_type.shape.dim)
            if dynamic and not config._profiles:
                return None
            if "INT8" in flags:
                run_calibrator(config, model)
            io = []
            for value, mode in [(v, "INPUT") for v in inputs.values()] + [(v, "OUTPUT") for v in model.graph.output]:
                dims = [d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim]
                io.append({"name": value.name, "mode": mode, "dtype": onnx_types[value.type.tensor_type.elem_type],
                           "shape": dims})
            plan = {"onnx": network._path, "io": io, "verbosity": config._verbosity,
                    "layers": layer_precisions(model, network._strongly_typed, flags), "flags": sorted(flags),
                    "strongly_typed": network._strongly_typed,
                    "profile": config._profiles[0]._shapes if config._profiles else None}
            return b"FAKEPLAN" + json.dumps(plan).encode()

    class EngineInspector(Guarded):
        _owner = "EngineInspector"

        def __init__(self, plan):
            self._plan = plan

        def get_engine_information(self, fmt):
            assert fmt == LayerInformationFormat.JSON
            layers = self._plan["layers"]
            if self._plan["verbosity"] != "DETAILED":
                return json.dumps({"Layers": [layer["name"] for layer in layers], "Bindings": []})
            words = {"fp32": ("Row major linear FP32", "Float"), "fp16": ("Row major linear FP16 format", "Half"),
                     "int8": ("Channel major INT8 format where channel % 32 == 0", "Int8")}
            out = []
            for layer in layers:
                fmt10, dtype11 = words[layer["precision"]]
                tensor = {"Name": layer["input"], "Dimensions": [1]}
                tensor.update({"Format/Datatype": fmt10} if major < 11 else {"DataType": dtype11, "Format": "kLINEAR"})
                out.append({"Name": layer["name"], "LayerType": "Fake", "Inputs": [tensor], "Outputs": []})
            return json.dumps({"Layers": out})

    class IExecutionContext(Guarded):
        _owner = "IExecutionContext"

        def __init__(self, engine):
            self._engine = engine
            self._shapes = {}
            self._addresses = {}

        def set_input_shape(self, name, shape):
            profile = (self._engine._plan["profile"] or {}).get(name)
            fixed = self._engine._io[name]["shape"]
            if profile:
                low, _, high = profile
                if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
                    return False
            elif list(shape) != fixed:
                return False
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if self._engine._io[name]["mode"] == "INPUT":
                return self._shapes.get(name, tuple(self._engine._io[name]["shape"]))
            feeds = {n: np.zeros(s, nptype(getattr(DataType, self._engine._io[n]["dtype"])))
                     for n, s in self._shapes.items()}
            index = [o.name for o in self._engine._session().get_outputs()].index(name)
            return tuple(self._engine._session().run(None, feeds)[index].shape)

        def set_tensor_address(self, name, ptr):
            self._addresses[name] = int(ptr)

        def execute_async_v3(self, stream_handle):
            engine = self._engine

            def kernel():
                log["executes"] += 1
                cuda.kernels += 1
                feeds = {}
                for name, shape in self._shapes.items():
                    dtype = np.dtype(nptype(getattr(DataType, engine._io[name]["dtype"])))
                    raw = cuda.read(self._addresses[name], int(np.prod(shape)) * dtype.itemsize)
                    feeds[name] = np.frombuffer(raw, dtype).reshape(shape)
                outputs = engine._session().run(None, feeds)
                for value, array in zip(engine._session().get_outputs(), outputs):
                    cuda.write(self._addresses[value.name], np.ascontiguousarray(array).tobytes())
            from tests.fake_cuda import KERNEL_MS

            cuda.enqueue(stream_handle, kernel, KERNEL_MS)
            return True

    class ICudaEngine(Guarded):
        _owner = "ICudaEngine"

        def __init__(self, plan):
            self._plan = plan
            self._io = {t["name"]: t for t in plan["io"]}
            self._names = [t["name"] for t in plan["io"]]
            self._ort = None

        def _session(self):
            if self._ort is None:
                from harness.precision.check import cpu_session

                self._ort = cpu_session(self._plan["onnx"])
            return self._ort

        @property
        def num_io_tensors(self):
            return len(self._names)

        @property
        def num_layers(self):
            return len(self._plan["layers"])

        def get_tensor_name(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            return getattr(TensorIOMode, self._io[name]["mode"])

        def get_tensor_dtype(self, name):
            return getattr(DataType, self._io[name]["dtype"])

        def get_tensor_shape(self, name):
            return tuple(self._io[name]["shape"])

        def create_execution_context(self):
            return IExecutionContext(self)

        def create_engine_inspector(self):
            return EngineInspector(self._plan)

    class Runtime(Guarded, metaclass=GuardedMeta):
        _owner = "Runtime"

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(b"FAKEPLAN"):
                return None
            return ICudaEngine(json.loads(data[len(b"FAKEPLAN"):]))

    class CalibratorBase(metaclass=GuardedMeta):
        _owner = "IInt8Calibrator"

        def __init__(self):
            pass

    module_attrs = {
        "__version__": VERSIONS[release], "Logger": Logger, "Builder": Builder, "OnnxParser": OnnxParser,
        "Runtime": Runtime, "IBuilderConfig": IBuilderConfig, "BuilderFlag": BuilderFlag, "DataType": DataType,
        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag, "MemoryPoolType": MemoryPoolType,
        "ProfilingVerbosity": ProfilingVerbosity, "LayerInformationFormat": LayerInformationFormat,
        "TensorIOMode": TensorIOMode, "nptype": nptype,
        "IInt8EntropyCalibrator2": type("IInt8EntropyCalibrator2", (CalibratorBase,), {}),
        "IInt8MinMaxCalibrator": type("IInt8MinMaxCalibrator", (CalibratorBase,), {}),
    }

    class FakeTensorRT(Guarded):
        _owner = "tensorrt"

    fake = FakeTensorRT()
    for key, value in module_attrs.items():
        if key in allowed:
            object.__setattr__(fake, key, value)
    object.__setattr__(fake, "_log", log)
    return fake
