"""TensorRT 10's implicit int8 calibration: the labelled legacy mode (`int8_mode = "implicit"`).

Everything here uses names that TensorRT 11 removed (IInt8EntropyCalibrator2, IInt8MinMaxCalibrator,
BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator, set_calibration_profile), so it is only
reached after api.describe_api() found them in the installed bindings; on 11.x the target stops
earlier with one line pointing to `harness quantize --from-trt-cache`. The network is built weakly
typed here (implicit calibration needs it), which is why this stays a legacy path.

The calibrator takes any iterable of equally shaped numpy batches (harness/precision/calib_images.py
makes them from a folder of images) and reads/writes the calibration cache as raw bytes, so later
builds skip calibration (as nanodet_tensorrt_int8_tools does).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_bytes
from harness.targets.trt.engine import PRIVATE_FILE_MODE
from harness.targets.trt.settings import CALIBRATORS


def calib_cache_name(onnx_sha256: str, calibrator: str, identity: dict) -> str:
    """File name of the calibration cache for one model + calibrator + image set (pure)."""
    if calibrator not in CALIBRATORS:
        raise HarnessError(f"calibrator {calibrator!r}: use one of {', '.join(CALIBRATORS)}")
    blob = json.dumps({"onnx": onnx_sha256, "calibrator": calibrator, "data": identity}, sort_keys=True)
    return f"calib-{calibrator}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.cache"


def make_calibrator(trt, cuda, kind: str, batches: Iterable[np.ndarray] | None, batch_shape: tuple,
                    dtype, cache_path: Path):
    """A TensorRT 10 calibrator over `batches` (None: the cache file already exists).

    trt: the imported `tensorrt`; cuda: a harness.targets.trt.cuda_rt binding. Exceptions inside
    TensorRT's callbacks are swallowed by TensorRT, so they are kept in `.error` and re-raised by
    the caller after the build.
    """
    if kind not in CALIBRATORS:
        raise HarnessError(f"calibrator {kind!r}: use one of {', '.join(CALIBRATORS)}")
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator
    cache_path = Path(cache_path)
    shape = tuple(int(d) for d in batch_shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize

    class HarnessCalibrator(base):
        def __init__(self):
            base.__init__(self)  # TensorRT's Python bindings need the base constructor called explicitly
            self.kind = kind
            self.cache_path = cache_path
            self.error: BaseException | None = None
            self.batches_fed = 0
            self.cache_read = False
            self._iter = iter(batches) if batches is not None else iter(())
            self._device = cuda.device_alloc(nbytes) if batches is not None else None

        def get_batch_size(self):
            return shape[0]

        def get_batch(self, names):
            try:
                array = next(self._iter)
                if tuple(array.shape) != shape or array.dtype != dtype:
                    raise HarnessError(f"calibration batch {array.shape} {array.dtype} does not match {shape} {dtype}")
            except StopIteration:
                return None
            except BaseException as exc:  # a bad image: stop calibration, report after the build
                self.error = exc
                return None
            cuda.h2d(self._device.ptr, array)
            self.batches_fed += 1
            return [self._device.ptr]

        def read_calibration_cache(self):
            if self.cache_path.is_file():
                self.cache_read = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            try:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.cache_path, bytes(cache), mode=PRIVATE_FILE_MODE)
            except BaseException as exc:
                self.error = exc

        def free(self):
            if self._device is not None:
                self._device.free()
                self._device = None

    return HarnessCalibrator()


def apply_implicit_int8(trt, config, builder, calibrator, calib_shapes: dict | None, dynamic: bool) -> None:
    """Weak-typing flags + calibrator on a builder config (fp16 kept on for layers left out of int8)."""
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = calibrator
    if dynamic and calib_shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in calib_shapes.items():
            profile.set_shape(name, low, opt, high)
        config.set_calibration_profile(profile)
