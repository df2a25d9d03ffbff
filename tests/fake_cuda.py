"""A fake of cuda-python's `cuda.bindings.runtime` for tests without a GPU (a test double, not shipped).

It keeps cuda-python's conventions (every call returns a tuple led by a cudaError_t) and models
what the TensorRT target relies on, strictly enough to catch mistakes:
- memory is real process memory (ctypes buffers), so copies and the fake engine move real bytes;
  async copies must go between a device allocation and a *pinned* host allocation, in bounds;
- work on a stream is deferred until the stream or an event on it is synchronised, so reading
  host outputs before synchronising reads stale bytes, and elapsed time of an unfinished event
  is cudaErrorNotReady;
- a GPU clock advances by a fixed cost per operation (copies by bytes, kernels by `KERNEL_MS`),
  so event timings are exact and testable;
- stream capture records operations into a graph that cudaGraphLaunch replays.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
from dataclasses import dataclass, field


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorNotReady = 600
    cudaErrorStreamCaptureUnsupported = 900


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1


cudaStreamNonBlocking = 1
OK = cudaError_t.cudaSuccess
BYTES_PER_MS = 1e6  # copy cost: 1 ms per MB
KERNEL_MS = 2.0  # cost of one engine execution


@dataclass
class _Stream:
    handle: int
    queue: list = field(default_factory=list)
    capture: list | None = None

    def __int__(self):
        return self.handle


@dataclass
class _Event:
    time: float | None = None
    stream: _Stream | None = None


class FakeCudaRuntime:
    """One fake GPU. Module-like: pass an instance as `cudart` to harness.targets.trt.cuda_rt.CudaPython."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamCaptureMode = cudaStreamCaptureMode
    cudaStreamNonBlocking = cudaStreamNonBlocking

    def __init__(self, devices: int = 1, name: str = "Fake GPU 80GB"):
        self.devices, self.name = devices, name
        self.host: dict[int, ctypes.Array] = {}
        self.device_mem: dict[int, ctypes.Array] = {}
        self.streams: dict[int, _Stream] = {}
        self.clock = 0.0
        self.launches = 0  # graph launches
        self.kernels = 0  # kernels actually run
        self.calls: list[str] = []
        self._handles = itertools.count(0x1000)

    # helpers the fake TensorRT uses ----------------------------------------------------------------

    def enqueue(self, stream_handle: int, fn, cost_ms: float, label: str = "kernel") -> None:
        stream = self.streams[int(stream_handle)]
        op = (label, fn, cost_ms)
        (stream.capture if stream.capture is not None else stream.queue).append(op)

    def read(self, ptr: int, nbytes: int) -> bytes:
        self._check_range(ptr, nbytes, self.device_mem, "device")
        return ctypes.string_at(ptr, nbytes)

    def write(self, ptr: int, data: bytes) -> None:
        self._check_range(ptr, len(data), self.device_mem, "device")
        ctypes.memmove(ptr, data, len(data))

    def _check_range(self, ptr: int, nbytes: int, pool: dict, what: str) -> None:
        for base, buf in pool.items():
            if base <= ptr and ptr + nbytes <= base + ctypes.sizeof(buf):
                return
        raise AssertionError(f"{nbytes} bytes at {ptr:#x} are not inside one {what} allocation")

    def _run(self, stream: _Stream) -> None:
        while stream.queue:
            label, fn, cost = stream.queue.pop(0)
            self.clock += cost
            fn()

    # the cudart API ----------------------------------------------------------------------------------

    def cudaGetErrorString(self, err):
        return OK, f"fake error {int(err)}".encode()

    def cudaGetDeviceCount(self):
        return OK, self.devices

    def cudaGetDeviceProperties(self, index):
        class Props:
            name = self.name.encode() + b"\0" * 8
        return OK, Props()

    def cudaSetDevice(self, index):
        return (OK,) if index < self.devices else (cudaError_t.cudaErrorInvalidValue,)

    def _alloc(self, pool, size):
        buf = ctypes.create_string_buffer(int(size))
        pool[ctypes.addressof(buf)] = buf
        return OK, ctypes.addressof(buf)

    def cudaMallocHost(self, size):
        return self._alloc(self.host, size)

    def cudaMalloc(self, size):
        return self._alloc(self.device_mem, size)

    def cudaFreeHost(self, ptr):
        return (OK,) if self.host.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def cudaFree(self, ptr):
        return (OK,) if self.device_mem.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        dst, src, count = int(dst), int(src), int(count)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            self._check_range(src, count, self.host, "pinned host")
            self._check_range(dst, count, self.device_mem, "device")
        else:
            self._check_range(src, count, self.device_mem, "device")
            self._check_range(dst, count, self.host, "pinned host")
        label = "h2d" if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else "d2h"
        self.enqueue(int(stream), lambda: ctypes.memmove(dst, src, count), count / BYTES_PER_MS, label)
        return (OK,)

    def cudaMemcpy(self, dst, src, count, kind):
        self._check_range(int(dst), int(count), self.device_mem, "device")
        ctypes.memmove(int(dst), int(src), int(count))
        return (OK,)

    def cudaStreamCreateWithFlags(self, flags):
        stream = _Stream(next(self._handles))
        self.streams[stream.handle] = stream
        return OK, stream

    def cudaStreamSynchronize(self, stream):
        self._run(self.streams[int(stream)])
        return (OK,)

    def cudaStreamDestroy(self, stream):
        return (OK,) if self.streams.pop(int(stream), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def cudaEventCreate(self):
        return OK, _Event()

    def cudaEventRecord(self, event, stream):
        stream = self.streams[int(stream)]
        event.time, event.stream = None, stream

        def stamp():
            event.time = self.clock
        self.enqueue(stream.handle, stamp, 0.0, "event")
        return (OK,)

    def cudaEventSynchronize(self, event):
        if event.stream is not None:
            self._run(event.stream)
        return (OK,)

    def cudaEventElapsedTime(self, start, end):
        if start.time is None or end.time is None:
            return cudaError_t.cudaErrorNotReady, 0.0
        return OK, end.time - start.time

    def cudaEventDestroy(self, event):
        return (OK,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.streams[int(stream)].capture = []
        return (OK,)

    def cudaStreamEndCapture(self, stream):
        stream = self.streams[int(stream)]
        ops, stream.capture = stream.capture, None
        return OK, list(ops)

    def cudaGraphInstantiate(self, graph, flags):
        return OK, ("exec", graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        self.launches += 1
        self.streams[int(stream)].queue.extend(graph_exec[1])
        return (OK,)

    def cudaGraphExecDestroy(self, graph_exec):
        return (OK,)

    def cudaGraphDestroy(self, graph):
        return (OK,)
