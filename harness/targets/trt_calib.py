"""TensorRT int8 calibration: the harness's own preprocessing feeds the calibrator.

Two halves, so the part that decides *what* TensorRT sees is testable without a GPU:

- `CalibrationBatches` (pure numpy): picks the first N images of a folder (sorted by name), builds
  each batch with `harness.pipeline.prepare_batch` and the model profile's InputSpec (exactly what
  the accuracy pass feeds inference), and yields contiguous (batch, ...) arrays in the model input dtype.
- `make_calibrator` (needs tensorrt + pycuda): an `IInt8EntropyCalibrator2` (default) or
  `IInt8MinMaxCalibrator` that copies each batch into one device buffer, and reads/writes the
  calibration cache as raw bytes so later builds skip calibration (as nanodet_tensorrt_int8_tools).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.preprocess import prepare_batch
from harness.profiles import InputSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CALIBRATORS = ("entropy", "minmax")
PARTIAL_MODES = ("drop", "pad")


def calibration_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of a calibration folder, sorted by name, the first `limit` of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"calibration folder not found: {folder} (--calib DIR: a folder of images)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HarnessError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if limit is not None:
        if limit <= 0:
            raise HarnessError(f"calib_images must be a positive integer, got {limit}")
        files = files[:limit]
    return files


class CalibrationBatches:
    """Preprocessed calibration batches, built lazily one batch at a time (memory stays flat).

    partial="drop" (default) leaves out a short last batch, since TensorRT's calibrator must hand
    over full batches; partial="pad" fills it by repeating its last image instead.
    """

    def __init__(self, files: Sequence[str | Path], spec: InputSpec, batch_size: int,
                 limit: int | None = None, partial: str = "drop"):
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise HarnessError(f"calibration batch size must be a positive integer, got {batch_size!r}")
        if partial not in PARTIAL_MODES:
            raise HarnessError(f"calibration partial batch mode {partial!r}: use one of {', '.join(PARTIAL_MODES)}")
        files = [Path(f) for f in files]
        if limit is not None:
            files = files[:limit]
        self.files = files
        self.spec = spec
        self.batch_size = batch_size
        self.partial = partial
        full, rest = divmod(len(files), batch_size)
        self.num_batches = full + (1 if rest and partial == "pad" else 0)
        if self.num_batches == 0:
            raise HarnessError(
                f"{len(files)} calibration image(s) cannot fill one batch of {batch_size}; "
                "add images or lower calib_batch_size in targets/trt.toml"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape(self.batch_size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.spec.numpy_dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of one batch (the device buffer's size)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def images_used(self) -> int:
        return min(len(self.files), self.num_batches * self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self.num_batches):
            chunk = self.files[index * self.batch_size: (index + 1) * self.batch_size]
            # A short chunk (only in "pad" mode) is padded by repeating its last image.
            yield prepare_batch(list(enumerate(chunk)), self.spec, self.batch_size, skip_bad=False).tensor

    def identity(self) -> dict:
        """What the calibration result depends on (for the calibration cache's file name)."""
        files = []
        for path in self.files[: self.images_used]:
            stat = path.stat()
            files.append([path.name, stat.st_size, stat.st_mtime_ns])
        return {"spec": repr(self.spec), "batch_size": self.batch_size, "partial": self.partial, "files": files}


def calib_cache_name(onnx_sha256: str, calibrator: str, identity: dict) -> str:
    """File name of the calibration cache for one model + calibrator + image set (pure)."""
    if calibrator not in CALIBRATORS:
        raise HarnessError(f"calibrator {calibrator!r}: use one of {', '.join(CALIBRATORS)}")
    blob = json.dumps({"onnx": onnx_sha256, "calibrator": calibrator, "data": identity}, sort_keys=True)
    return f"calib-{calibrator}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.cache"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_calibrator(trt, cuda, kind: str, batches: CalibrationBatches | None, cache_path: Path):
    """A TensorRT calibrator over `batches`; `batches` may be None when the cache file already exists.

    trt/cuda are the imported `tensorrt` and `pycuda.driver` modules (imported lazily by the caller).
    Exceptions inside TensorRT's callbacks are swallowed by TensorRT, so they are kept in `.error`
    and re-raised by the engine builder after the build.
    """
    if kind not in CALIBRATORS:
        raise HarnessError(f"calibrator {kind!r}: use one of {', '.join(CALIBRATORS)}")
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator
    cache_path = Path(cache_path)

    class HarnessCalibrator(base):
        def __init__(self):
            base.__init__(self)  # TensorRT's Python bindings need the base constructor called explicitly
            self.kind = kind
            self.cache_path = cache_path
            self.error: BaseException | None = None
            self.batches_fed = 0
            self.cache_read = False
            self._iter = iter(batches) if batches is not None else iter(())
            self._device = cuda.mem_alloc(batches.nbytes) if batches is not None else None

        def get_batch_size(self):
            return batches.batch_size if batches is not None else 1

        def get_batch(self, names):
            try:
                array = next(self._iter)
            except StopIteration:
                return None
            except BaseException as exc:  # a bad image: stop calibration, report after the build
                self.error = exc
                return None
            cuda.memcpy_htod(self._device, array)
            self.batches_fed += 1
            return [int(self._device)]

        def read_calibration_cache(self):
            if self.cache_path.is_file():
                self.cache_read = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            try:
                write_bytes_atomic(self.cache_path, bytes(cache))
            except BaseException as exc:
                self.error = exc

        def free(self):
            if self._device is not None:
                self._device.free()
                self._device = None

    return HarnessCalibrator()
