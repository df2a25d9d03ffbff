"""Calibration images -> model-input batches, exactly as the accuracy pass builds them.

The files and batches come from `harness.precision.calib_images` (first N images of a folder sorted
by name, each batch built by `harness.images.preprocess.prepare_batch` with the profile's InputSpec), so a
quantizer calibrates on the tensors evaluation later feeds. Every image is checked before any
work starts, so a bad file is named at once instead of failing half-way through calibration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, ImageError
from harness.core.fileio import regular_file_problem, sha256_file
from harness.images.preprocess import read_image
from harness.precision.calib_images import CalibrationBatches, calibration_files
from harness.profiles import InputSpec


@dataclass(frozen=True)
class CalibrationImages:
    """The calibration image list, what identifies it in quant.json, and what was found odd about it."""

    folder: Path
    files: tuple[Path, ...]
    digests: tuple[str, ...] = ()  # sha256 of each file's bytes, in `files` order
    warnings: tuple[str, ...] = ()  # shown by the command and kept in quant.json

    def identity(self) -> dict:
        """count + sha256 over the sorted (file name, content sha256) pairs: the same images give the
        same digest wherever the folder lives, and other pixels under the same names do not."""
        digest = hashlib.sha256()
        pairs = zip(self.files, self.digests or [None] * len(self.files))
        for path, content in sorted(pairs, key=lambda pair: pair[0].name):
            digest.update(f"{path.name}\t{content or sha256_file(path)}\n".encode())
        return {"folder": str(self.folder), "count": len(self.files), "sha256": digest.hexdigest()}


def calibration_images(folder: str | Path, limit: int | None, batch_size: int = 1) -> CalibrationImages:
    """The first `limit` images of `folder` (sorted by name), each checked readable (one clear line
    otherwise) and looked at: flat images (one colour, e.g. all black) are warned about, and a set
    whose images all have the same pixels is refused (its ranges would describe one picture)."""
    files = calibration_files(folder, limit)
    digests, pixel_digests, flat = [], set(), []
    for path in files:
        problem = regular_file_problem(path)
        try:
            if problem:
                raise ImageError(path, problem)
            pixels = read_image(path)
        except ImageError as exc:
            raise HarnessError(f"calibration image {path}: {exc.reason}") from None
        digests.append(sha256_file(path))
        pixel_digests.add(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest())
        if pixels.size and int(pixels.min()) == int(pixels.max()):
            flat.append(path.name)
    if len(files) < batch_size:
        raise HarnessError(f"calibration folder {folder}: {len(files)} image(s) cannot fill one batch of "
                           f"{batch_size} (the model's fixed batch); add images or raise --calib-images")
    if len(files) > 1 and len(pixel_digests) == 1:
        raise HarnessError(f"calibration folder {folder}: all {len(files)} images have the same pixels; "
                           "calibrate on varied real images like the ones the model will see")
    if len(flat) == len(files):
        raise HarnessError(f"calibration folder {folder}: every image is one flat colour (e.g. all black: "
                           f"{flat[0]}); calibrate on real images like the ones the model will see")
    warnings = ()
    if flat:
        warnings = (f"{len(flat)} of {len(files)} calibration image(s) are one flat colour (e.g. {flat[0]}): "
                    "they narrow the activation ranges; remove them unless the model will see such images",)
    return CalibrationImages(Path(folder), tuple(files), tuple(digests), warnings)


def calibration_batches(images: CalibrationImages, spec: InputSpec, batch_size: int = 1) -> CalibrationBatches:
    """Full batches only (a short last batch is left out rather than padded with repeats)."""
    return CalibrationBatches(list(images.files), spec, batch_size, partial="drop")


class CountingBatches:
    """Iterates batches once per pass and counts them, so callers (and tests) can see how often the
    images were really run; `advance(images)` drives a progress bar."""

    def __init__(self, batches: CalibrationBatches, advance: Callable[[int], None] = lambda n=1: None):
        self.batches = batches
        self.advance = advance
        self.served = 0  # batches handed out over the object's life

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[np.ndarray]:
        for tensor in self.batches:
            self.served += 1
            if self.served <= len(self.batches):  # NNCF may pass over the data twice; the bar shows one pass
                self.advance(self.batches.batch_size)
            yield tensor


def ort_reader(batches: CountingBatches, input_name: str, chunk: int):
    """An ONNX Runtime CalibrationDataReader over the batches that stops every `chunk` batches.

    ORT's calibrators hold every intermediate tensor of one collect_data() call in memory; calling
    collect_data() once per chunk (the reader returns None at each chunk end, `next_chunk()` opens
    the next) keeps memory flat with the number of images, and the ranges merge across calls.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class HarnessReader(CalibrationDataReader):
        def __init__(self):
            self._iter = iter(batches)
            self._total = len(batches)
            self._read = 0
            self._left = chunk

        def get_next(self):
            if self._left <= 0 or self._read >= self._total:
                return None
            tensor = next(self._iter)
            self._read += 1
            self._left -= 1
            return {input_name: tensor}

        def next_chunk(self) -> bool:
            """Open the next chunk; False when every batch has been served."""
            self._left = chunk
            return self._read < self._total

    return HarnessReader()


def nncf_dataset(batches: CountingBatches):
    """The same batches as an `nncf.Dataset` (NNCF feeds each item to the model as its input)."""
    import nncf

    return nncf.Dataset(batches)
