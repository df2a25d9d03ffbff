"""Dataset -> batches of model input, prepared ahead of inference in worker threads.

OpenCV's decode/resize release the GIL, so threads overlap preprocessing with inference without
copying tensors between processes; a bounded look-ahead keeps memory flat with dataset size.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from harness.decode import decode
from harness.decode.types import to_coco_results
from harness.errors import HarnessError
from harness.preprocess import ImageMeta, preprocess_image
from harness.profiles import InputSpec
from harness.timing import StageClock


@dataclass
class Batch:
    tensor: np.ndarray  # (bs_run, ...) model input; may hold padding rows beyond len(metas)
    metas: list[ImageMeta]  # the real images only
    failed: list[str] = field(default_factory=list)  # "file: reason" for images that could not be read
    seconds: float = 0.0  # preprocessing time spent on this batch (worker thread)


def _prepare(chunk: Sequence[tuple[int, object]], spec: InputSpec, pad_to: int | None, skip_bad: bool) -> Batch:
    t0 = time.perf_counter()
    tensors, metas, failed = [], [], []
    for image_id, path in chunk:
        try:
            tensor, meta = preprocess_image(path, image_id, spec)
        except HarnessError as exc:
            if not skip_bad:
                raise
            failed.append(str(exc))
            continue
        tensors.append(tensor)
        metas.append(meta)
    if not tensors:
        return Batch(np.zeros((0,), spec.numpy_dtype), [], failed, time.perf_counter() - t0)
    if pad_to and len(tensors) < pad_to:
        # A fixed-batch model needs a full batch: repeat the last real image; its outputs are dropped.
        tensors += [tensors[-1]] * (pad_to - len(tensors))
    return Batch(np.stack(tensors), metas, failed, time.perf_counter() - t0)


def iter_batches(images: Sequence[tuple[int, object]], batch_size: int, spec: InputSpec, pad: bool,
                 workers: int = 2, skip_bad: bool = False, lookahead: int = 4) -> Iterator[Batch]:
    """Yield batches in dataset order; up to `lookahead` batches are prepared ahead."""
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    pad_to = batch_size if pad else None
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="preprocess") as pool:
        pending: deque = deque()
        next_chunk = 0
        while pending or next_chunk < len(chunks):
            while next_chunk < len(chunks) and len(pending) < lookahead:
                pending.append(pool.submit(_prepare, chunks[next_chunk], spec, pad_to, skip_bad))
                next_chunk += 1
            batch = pending.popleft().result()
            yield batch


@dataclass
class PassResult:
    detections: list[dict]  # COCO result dicts
    counted: list[int]  # image ids that ran
    failed: list[str]  # "file: reason" for images skipped with skip_bad
    clock: StageClock  # per-stage seconds
    wall_seconds: float


def accuracy_pass(target, images, batch_size: int, profile, workers: int = 2, skip_bad: bool = False,
                  advance=lambda n=1: None) -> PassResult:
    """Read, preprocess, infer and decode every image once; detections as COCO dicts."""
    clock = StageClock()
    detections: list[dict] = []
    counted: list[int] = []
    failed: list[str] = []
    start = time.perf_counter()
    for batch in iter_batches(images, batch_size, profile.input, pad=target.padded_batch,
                              workers=workers, skip_bad=skip_bad):
        clock.seconds["preprocess"] += batch.seconds
        failed += batch.failed
        if batch.metas:
            with clock.stage("infer"):
                outputs = target.infer(batch.tensor)
            with clock.stage("decode"):
                for meta, dets in zip(batch.metas, decode(outputs, batch.metas, profile)):
                    detections += to_coco_results(dets, meta.image_id, profile.category_ids)
                    counted.append(meta.image_id)
        advance(len(batch.metas) + len(batch.failed))
    return PassResult(detections, counted, failed, clock, time.perf_counter() - start)
