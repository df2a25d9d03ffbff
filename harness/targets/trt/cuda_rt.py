"""The few CUDA runtime calls the TensorRT target needs, behind one small interface.

Two bindings:
- NVIDIA `cuda-python` (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6): Apache-2.0 wheels,
  no compiler, what TensorRT's own samples use since 10.13. Every call returns a tuple whose first
  item is a `cudaError_t`; `_call` checks it and returns the rest.
- `pycuda`, if that is what the user has (it needs nvcc to install on Python 3.11). It has no
  stream capture here, so CUDA graphs need cuda-python.

Pointers are plain ints, host buffers are numpy views of pinned memory, streams/events/graphs are
the binding's own handles wrapped in tiny classes. Nothing is imported at module import time.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass

import numpy as np

from harness.core.errors import HarnessError, TargetUnavailable, first_line

BINDINGS = ("cuda-python", "pycuda")
INSTALL_HINT = "pip install 'harness[gpu]' (cuda-python; pycuda works too)"


def import_cudart():
    """The cuda-python runtime module: `cuda.bindings.runtime` (>= 12.6), else `cuda.cudart`."""
    last = None
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            last = exc
    raise last  # type: ignore[misc]


@dataclass
class DeviceInfo:
    name: str
    count: int


class CudaPython:
    """cuda-python runtime API. One process-wide primary context, made current by cudaSetDevice."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, cudart=None):
        self.rt = cudart if cudart is not None else import_cudart()
        self.version = self._version()

    def _version(self) -> str:
        try:
            from importlib.metadata import version

            return version("cuda-python")
        except Exception:
            return getattr(self.rt, "__version__", "unknown")

    def _call(self, result):
        """cuda-python convention: (cudaError_t, *values) -> values (one value unwrapped)."""
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            raise HarnessError(f"CUDA error {int(err)}: {text.decode() if isinstance(text, bytes) else text}")
        return values[0] if len(values) == 1 else (values or None)

    # device
    def device(self, index: int = 0) -> DeviceInfo:
        try:
            count = self._call(self.rt.cudaGetDeviceCount())
        except HarnessError as exc:
            raise TargetUnavailable(f"no usable CUDA driver ({exc}); an NVIDIA GPU and driver are needed") from None
        if count == 0:
            raise TargetUnavailable("no NVIDIA GPU found (CUDA reports 0 devices)")
        if index >= count:
            raise TargetUnavailable(f"no CUDA device {index} (found {count})")
        props = self._call(self.rt.cudaGetDeviceProperties(index))
        name = props.name
        return DeviceInfo(name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name), count)

    def activate(self, index: int = 0) -> None:
        self._call(self.rt.cudaSetDevice(index))

    def deactivate(self) -> None:
        pass

    # memory
    def pinned(self, count: int, dtype) -> HostBuffer:
        dtype = np.dtype(dtype)
        nbytes = max(1, count) * dtype.itemsize
        ptr = self._call(self.rt.cudaMallocHost(nbytes))
        array = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(ptr))).view(dtype)[:max(1, count)]
        return HostBuffer(array, int(ptr), lambda: self._call(self.rt.cudaFreeHost(ptr)))

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = self._call(self.rt.cudaMalloc(max(1, int(nbytes))))
        return DeviceBuffer(int(ptr), int(nbytes), lambda: self._call(self.rt.cudaFree(ptr)))

    def h2d_async(self, device_ptr: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(device_ptr, host.ctypes.data, host.nbytes, kind, stream.handle))

    def d2h_async(self, host: np.ndarray, device_ptr: int, stream: Stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, device_ptr, host.nbytes, kind, stream.handle))

    def h2d(self, device_ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpy(device_ptr, host.ctypes.data, host.nbytes, kind))

    # streams, events, graphs
    def stream(self) -> Stream:
        raw = self._call(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))
        return Stream(raw, int(raw), lambda: self._call(self.rt.cudaStreamSynchronize(raw)),
                      lambda: self._call(self.rt.cudaStreamDestroy(raw)))

    def event(self) -> Event:
        raw = self._call(self.rt.cudaEventCreate())
        return Event(self, raw)

    def record(self, event: Event, stream: Stream) -> None:
        self._call(self.rt.cudaEventRecord(event.raw, stream.raw))

    def wait_event(self, event: Event) -> None:
        self._call(self.rt.cudaEventSynchronize(event.raw))

    def elapsed_ms(self, start: Event, end: Event) -> float:
        return float(self._call(self.rt.cudaEventElapsedTime(start.raw, end.raw)))

    def destroy_event(self, event: Event) -> None:
        self._call(self.rt.cudaEventDestroy(event.raw))

    def begin_capture(self, stream: Stream) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self.rt.cudaStreamBeginCapture(stream.raw, mode))

    def end_capture(self, stream: Stream) -> Graph:
        graph = self._call(self.rt.cudaStreamEndCapture(stream.raw))
        executable = self._call(self.rt.cudaGraphInstantiate(graph, 0))
        return Graph(executable, lambda: (self._call(self.rt.cudaGraphExecDestroy(executable)),
                                          self._call(self.rt.cudaGraphDestroy(graph))))

    def launch(self, graph: Graph, stream: Stream) -> None:
        self._call(self.rt.cudaGraphLaunch(graph.raw, stream.raw))


class PyCuda:
    """pycuda.driver: a retained primary context pushed while the target is loaded."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, driver=None):
        self.cuda = driver if driver is not None else importlib.import_module("pycuda.driver")
        self.version = getattr(importlib.import_module("pycuda"), "VERSION_TEXT", "unknown") if driver is None else "fake"
        self._ctx = None

    def device(self, index: int = 0) -> DeviceInfo:
        try:
            self.cuda.init()
            count = self.cuda.Device.count()
        except Exception as exc:
            raise TargetUnavailable(f"no usable CUDA driver ({first_line(exc, 160)}); "
                                    "an NVIDIA GPU and driver are needed") from None
        if count == 0:
            raise TargetUnavailable("no NVIDIA GPU found (CUDA reports 0 devices)")
        if index >= count:
            raise TargetUnavailable(f"no CUDA device {index} (found {count})")
        return DeviceInfo(self.cuda.Device(index).name(), count)

    def activate(self, index: int = 0) -> None:
        if self._ctx is None:
            self._ctx = self.cuda.Device(index).retain_primary_context()
            self._ctx.push()

    def deactivate(self) -> None:
        if self._ctx is not None:
            try:
                self._ctx.pop()
            finally:
                self._ctx = None

    def pinned(self, count: int, dtype) -> HostBuffer:
        array = self.cuda.pagelocked_empty(max(1, count), np.dtype(dtype))
        return HostBuffer(array, int(array.ctypes.data), lambda: array.base.free())

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        allocation = self.cuda.mem_alloc(max(1, int(nbytes)))
        return DeviceBuffer(int(allocation), int(nbytes), allocation.free)

    def h2d_async(self, device_ptr: int, host: np.ndarray, stream: Stream) -> None:
        self.cuda.memcpy_htod_async(device_ptr, host, stream.raw)

    def d2h_async(self, host: np.ndarray, device_ptr: int, stream: Stream) -> None:
        self.cuda.memcpy_dtoh_async(host, device_ptr, stream.raw)

    def h2d(self, device_ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod(device_ptr, np.ascontiguousarray(host))

    def stream(self) -> Stream:
        raw = self.cuda.Stream()
        return Stream(raw, int(raw.handle), raw.synchronize, lambda: None)

    def event(self) -> Event:
        return Event(self, self.cuda.Event())

    def record(self, event: Event, stream: Stream) -> None:
        event.raw.record(stream.raw)

    def wait_event(self, event: Event) -> None:
        event.raw.synchronize()

    def elapsed_ms(self, start: Event, end: Event) -> float:
        return float(start.raw.time_till(end.raw))

    def destroy_event(self, event: Event) -> None:
        pass

    def begin_capture(self, stream):  # pragma: no cover - guarded by supports_graphs
        raise HarnessError("CUDA graphs need cuda-python (pip install cuda-python); pycuda is in use")

    end_capture = launch = begin_capture


class _ReleasedOnce:
    """Runs its `_release` callable at most once: freeing or destroying twice is a CUDA error."""

    _release: object = None

    def _release_once(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass
class HostBuffer(_ReleasedOnce):
    array: np.ndarray  # pinned memory, flat
    ptr: int
    _release: object

    def free(self) -> None:
        self._release_once()


@dataclass
class DeviceBuffer(_ReleasedOnce):
    ptr: int
    nbytes: int
    _release: object

    def free(self) -> None:
        self._release_once()


@dataclass
class Stream(_ReleasedOnce):
    raw: object
    handle: int  # what execute_async_v3 takes
    synchronize: object
    _release: object

    def destroy(self) -> None:
        self._release_once()


@dataclass
class Event:
    binding: object
    raw: object

    def record(self, stream: Stream) -> None:
        self.binding.record(self, stream)

    def synchronize(self) -> None:
        self.binding.wait_event(self)

    def ms_since(self, start: Event) -> float:
        return self.binding.elapsed_ms(start, self)


@dataclass
class Graph(_ReleasedOnce):
    raw: object
    _release: object

    def destroy(self) -> None:
        self._release_once()


def load_binding(choice: str = "auto"):
    """CudaPython or PyCuda (auto: cuda-python first), or TargetUnavailable naming what is missing."""
    order = BINDINGS if choice == "auto" else (choice,)
    problems = []
    for name in order:
        try:
            return CudaPython() if name == "cuda-python" else PyCuda()
        except Exception as exc:  # ImportError, or OSError when the CUDA libraries are missing
            detail = "not installed" if isinstance(exc, ModuleNotFoundError) else first_line(exc, 160)
            problems.append(f"{name}: {detail}")
    raise TargetUnavailable(f"no CUDA binding ({'; '.join(problems)}): {INSTALL_HINT}")
