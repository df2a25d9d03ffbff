"""One execution context with its pinned host buffers, device buffers and CUDA stream.

The serial timing mode uses one; the pipelined mode two (two batches in flight on two streams).
Tensors are bound by name (set_input_shape / set_tensor_address / execute_async_v3). With
`cuda_graph`, the execute is captured once per input shape and replayed (TensorRT needs one
execute_async_v3 before capture so shape-dependent state is set up outside the graph).
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import HarnessError


class EngineIO:
    def __init__(self, trt, cuda, engine, input_shape_fn, batch: int, profile_batches, use_graph: bool = False):
        self.trt, self.cuda, self.engine = trt, cuda, engine
        self.input_shape_fn = input_shape_fn  # n -> full shape of the image input
        self.profile_batches = profile_batches
        self.use_graph = use_graph
        self.context = engine.create_execution_context()
        if self.context is None:
            raise HarnessError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.shapes: dict = {}
        self.buffers: dict = {}
        self.graph = None
        self.graph_shapes = None
        self.stream = cuda.stream()
        self.set_shapes(batch, {})
        for name in names:  # buffers sized for the loaded batch; shorter batches use a prefix
            count = max(1, int(np.prod(self.shapes[name])))
            host = cuda.pinned(count, self.dtypes[name])
            device = cuda.device_alloc(host.array.nbytes)
            self.buffers[name] = (host, device)
            self.context.set_tensor_address(name, device.ptr)

    def set_shapes(self, n: int, extras: dict) -> None:
        """Give the context this batch's input shapes; read back the output shapes."""
        wanted = {self.inputs[0]: self.input_shape_fn(n)}
        for name in self.inputs[1:]:
            if name in extras:
                wanted[name] = tuple(extras[name].shape)
            elif name not in self.shapes:
                wanted[name] = (n, *tuple(self.engine.get_tensor_shape(name))[1:])
        changed = False
        for name, shape in wanted.items():
            shape = tuple(int(d) for d in shape)
            if self.shapes.get(name) != shape:
                if not self.context.set_input_shape(name, shape):
                    raise HarnessError(f"TensorRT engine rejects input {name} shape {shape} "
                                       f"(profile batches {self.profile_batches})")
                self.shapes[name] = shape
                changed = True
        if changed or any(o not in self.shapes for o in self.outputs):
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise HarnessError(f"output {name} has a data-dependent shape {shape}; target trt needs "
                                       "outputs whose shape follows from the input shape")
                self.shapes[name] = shape

    def stage(self, batch: np.ndarray, extras: dict | None) -> int:
        """Copy a batch (and extra inputs) into the pinned input buffers; returns the batch size."""
        n = int(batch.shape[0])
        extras = extras or {}
        self.set_shapes(n, extras)
        arrays = {self.inputs[0]: batch, **extras}
        for name in self.inputs:
            if name not in arrays:
                raise HarnessError(f"engine input {name} was not given (pass it in extras)")
            array = np.asarray(arrays[name])
            host = self.buffers[name][0].array
            if array.size > host.size:
                raise HarnessError(f"input {name} of shape {array.shape} exceeds its buffer")
            np.copyto(host[: array.size], array.reshape(-1), casting="same_kind")
        return n

    def _view(self, name: str) -> np.ndarray:
        return self.buffers[name][0].array[: int(np.prod(self.shapes[name]))]

    def h2d(self) -> None:
        for name in self.inputs:
            self.cuda.h2d_async(self.buffers[name][1].ptr, self._view(name), self.stream)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise HarnessError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def execute(self) -> None:
        """Enqueue the engine: the captured CUDA graph for this shape, or execute_async_v3."""
        if not self.use_graph:
            return self._enqueue()
        shapes = tuple(sorted(self.shapes.items()))
        if self.graph is None or self.graph_shapes != shapes:
            self._capture(shapes)
        self.cuda.launch(self.graph, self.stream)

    def prepare(self) -> None:
        """Capture the CUDA graph for the staged shapes now, so no timed iteration pays for it."""
        if self.use_graph:
            shapes = tuple(sorted(self.shapes.items()))
            if self.graph is None or self.graph_shapes != shapes:
                self._capture(shapes)

    def _capture(self, shapes) -> None:
        if self.graph is not None:
            self.graph.destroy()
            self.graph = None
        self._enqueue()  # settle shape-dependent state before capture
        self.stream.synchronize()
        self.cuda.begin_capture(self.stream)
        try:
            self._enqueue()
        finally:
            graph = self.cuda.end_capture(self.stream)
        self.graph, self.graph_shapes = graph, shapes

    def d2h(self) -> None:
        for name in self.outputs:
            self.cuda.d2h_async(self._view(name), self.buffers[name][1].ptr, self.stream)

    def results(self) -> list[np.ndarray]:
        return [self._view(n).reshape(self.shapes[n]).copy() for n in self.outputs]

    def close(self) -> None:
        if self.graph is not None:
            self.graph.destroy()
            self.graph = None
        for host, device in self.buffers.values():
            for allocation in (device, host):
                try:
                    allocation.free()
                except Exception:  # freeing during teardown: nothing useful to report
                    pass
        self.buffers = {}
        if self.stream is not None:
            try:
                self.stream.destroy()
            except Exception:
                pass
            self.stream = None
        self.context = None
