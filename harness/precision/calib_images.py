"""A folder of calibration images -> preprocessed batches, exactly as inference sees them.

Used by TensorRT 10's implicit calibration (harness/targets/trt/calib.py takes any iterable of
batches). It builds batches with harness.images.preprocess.prepare_batch (the layer below the pipeline),
so the images are preprocessed exactly as inference sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.images.imagefile import IMAGE_SUFFIXES, image_files_in
from harness.images.preprocess import prepare_batch
from harness.profiles import InputSpec

PARTIAL_MODES = ("drop", "pad")


def calibration_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of a calibration folder, sorted by name, the first `limit` of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"calibration folder not found: {folder} (--calib DIR: a folder of images)")
    files = image_files_in(folder)
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
