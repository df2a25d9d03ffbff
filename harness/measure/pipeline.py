"""Sources of (images, raw outputs) batches and the sinks every source feeds: the accuracy pass.

A source is an in-process target (accuracy_pass: preprocessing, the target's infer_stream) or a file
set a device tool wrote (file_pass: (ImageMeta, outputs) per image, read by the tool's FileTool).
Every batch then goes through the same sinks: the finite filter (NaN/Inf outputs), the profile's
decoder, COCO result dicts; harness.measure.measurement turns a PassResult into the row.

In process, three things run at once: preprocessing worker threads (OpenCV's decode/resize release the
GIL), inference (the runtimes release the GIL; OpenVINO keeps several async requests in flight) and one
decode thread. Bounded look-ahead between them keeps memory flat with dataset size, and results come
back in dataset order, identical to a plain serial loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.core.errors import HarnessError, SkippedImage
from harness.decode import decode
from harness.decode.finite import bad_rows, describe, find_nonfinite
from harness.decode.types import COCO_ARRAY_COLUMNS, to_coco_array, to_coco_results
from harness.images.preprocess import Batch, prepare_batch
from harness.model.extra_inputs import extra_inputs
from harness.targets.timing import StageClock

if TYPE_CHECKING:
    from harness.profiles import InputSpec


def iter_batches(images: Sequence[tuple[int, object]], batch_size: int, spec: InputSpec, pad: bool,
                 workers: int = 2, skip_bad: bool = False, lookahead: int = 4,
                 canvases: dict | None = None) -> Iterator[Batch]:
    """Yield batches in dataset order; up to `lookahead` batches are prepared ahead. With a
    `canvases` store (harness.measure.canvases), resized images are taken from it or put into it."""
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    pad_to = batch_size if pad else None
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="preprocess") as pool:
        pending: deque = deque()
        next_chunk = 0
        while pending or next_chunk < len(chunks):
            while next_chunk < len(chunks) and len(pending) < lookahead:
                pending.append(pool.submit(prepare_batch, chunks[next_chunk], spec, pad_to, skip_bad, canvases))
                next_chunk += 1
            batch = pending.popleft().result()
            yield batch


@dataclass
class PassResult:
    detections: list[dict] | np.ndarray  # COCO result dicts; file_pass: one compact array (decode.types.to_coco_array)
    counted: list[int]  # image ids that ran
    failed: list[SkippedImage]  # images skipped with skip_bad (path, reason)
    clock: StageClock  # per-stage seconds (see harness.targets.timing.StageClock)
    wall_seconds: float
    bad_outputs: list[SkippedImage] = field(default_factory=list)  # NaN/Inf outputs skipped with skip_bad
    names: dict[int, str] = field(default_factory=dict)  # image id -> file name, of the counted images

    def add(self, done: list[tuple[int, list[dict]]], metas, parts: list | None = None) -> None:
        """One decoded batch: its detections (compact arrays go to `parts`), and its images as counted."""
        files = {meta.image_id: Path(meta.file).name for meta in metas}
        for image_id, found in done:
            if parts is None:
                self.detections.extend(found)
            else:
                parts.append(found)
            self.counted.append(image_id)
            self.names[image_id] = files[image_id]


def _image_names(metas, rows) -> str:
    rows = sorted(rows)
    shown = ", ".join(f"{Path(metas[r].file).name} (id {metas[r].image_id})" for r in rows[:3])
    return shown + (f" and {len(rows) - 3} more" if len(rows) > 3 else "")


NOT_SCORED = "the row is not scored (--skip-bad-images leaves such images out and records them)"


def _drop_nonfinite(outputs, metas, batch_rows: int, skip_bad: bool, names=None, who: str = "model"):
    """(outputs, metas, skipped) with the images whose outputs hold NaN/Inf taken out (skip_bad), or
    a HarnessError naming the output and the images. who: "model" (in process) or "device" (files)."""
    found = find_nonfinite(outputs, batch_rows, names)
    if not found:
        return outputs, metas, []
    splittable = all(np.ndim(o) >= 1 and np.shape(o)[0] == batch_rows for o in outputs)
    rows = bad_rows(found, len(metas)) if splittable else set(range(len(metas)))
    reason = describe(found)
    if not skip_bad:
        if who == "model":
            raise HarnessError(f"model {reason} for image(s) {_image_names(metas, rows)}; {NOT_SCORED}")
        raise HarnessError(f"image {_image_names(metas, rows)}: {who} {reason}; {NOT_SCORED}")
    which = ", ".join(item.output_label() for item in found)
    skipped = [SkippedImage(metas[r].file, f"NaN/Inf in {who} {which}") for r in sorted(rows)]
    keep = [i for i in range(len(metas)) if i not in rows]
    if not keep:
        return None, [], skipped
    return [np.asarray(o)[keep] for o in outputs], [metas[i] for i in keep], skipped


def _decode_batch(outputs, metas, profile, batch_rows: int | None = None, skip_bad: bool = False,
                  names=None, who: str = "model", compact: bool = False) -> tuple[list[tuple[int, list[dict]]], float,
                                                                                 list[SkippedImage]]:
    """The sinks of one batch, from any source: the finite filter, then the decoder, then COCO dicts per
    image (compact: one to_coco_array array per image, the same values); returns them, the seconds it took
    and the images skipped for NaN/Inf outputs (checked first: a NaN never reaches the decoder). A file
    source's decode errors name the image."""
    t0 = time.perf_counter()
    outputs, metas, skipped = _drop_nonfinite(outputs, metas, batch_rows or len(metas), skip_bad, names, who)
    if not metas:
        return [], time.perf_counter() - t0, skipped
    try:
        decoded = decode(outputs, metas, profile)
    except HarnessError as exc:
        if who == "model":
            raise
        raise HarnessError(f"image {_image_names(metas, range(len(metas)))}: {exc}") from None
    convert = to_coco_array if compact else to_coco_results
    done = [(meta.image_id, convert(dets, meta.image_id, profile.category_ids)) for meta, dets in zip(metas, decoded)]
    return done, time.perf_counter() - t0, skipped


def file_pass(items, profile, skip_bad: bool = False, names=None, advance=lambda n=1: None) -> PassResult:
    """A file set as the source: (ImageMeta, outputs of that image) in the tool's order (FileTool.read_outputs,
    which checks every file against the prep.json it was made from) through the same sinks as accuracy_pass.
    Its detections are one compact array (decode.types.to_coco_array; the evaluator makes dicts a few
    categories at a time): a whole validation set's detections as dicts would dominate the decode's memory."""
    passed = PassResult([], [], [], StageClock(), 0.0)
    parts: list[np.ndarray] = []
    start = time.perf_counter()
    for meta, outputs in items:
        done, seconds, skipped = _decode_batch(outputs, [meta], profile, 1, skip_bad, names, who="device",
                                               compact=True)
        passed.clock.seconds["decode"] += seconds
        passed.add(done, [meta], parts)
        passed.bad_outputs += skipped
        advance(1)
    passed.detections = np.concatenate(parts) if parts else np.empty((0, len(COCO_ARRAY_COLUMNS)))
    del parts
    passed.wall_seconds = time.perf_counter() - start
    return passed


def accuracy_pass(target, images, batch_size: int, profile, workers: int = 2, skip_bad: bool = False,
                  advance=lambda n=1: None, pipelined: bool = True, decode_ahead: int = 4,
                  canvases: dict | None = None) -> PassResult:
    """Read, preprocess, infer and decode every image once; detections as COCO dicts, dataset order.

    Pipelined (default): preprocessing runs ahead in `workers` threads (iter_batches), inference
    keeps the target busy (its infer_stream(items): OpenVINO keeps async requests in flight, the
    default makes synchronous infer() calls, which release the GIL in every runtime we use), and decoding
    runs in one more thread while the next batches infer, at most `decode_ahead` batches behind.
    The detections are the same as with pipelined=False, the plain serial loop (tests check it).
    """
    if not pipelined:
        return _serial_pass(target, images, batch_size, profile, workers, skip_bad, advance, canvases)
    passed = PassResult([], [], [], StageClock(), 0.0)
    clock, failed, bad_outputs = passed.clock, passed.failed, passed.bad_outputs
    names = _output_names(target)
    start = time.perf_counter()
    batches = iter_batches(images, batch_size, profile.input, pad=target.padded_batch,
                           workers=workers, skip_bad=skip_bad, canvases=canvases)

    def feed():
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            clock.seconds["wait_preprocess"] += time.perf_counter() - t0
            if batch is None:
                return
            clock.seconds["preprocess"] += batch.seconds
            failed.extend(batch.failed)
            if batch.failed:
                advance(len(batch.failed))
            if batch.metas:
                yield batch.tensor, batch, extra_inputs(profile, batch.metas, batch.tensor.shape[0]) or None

    def collect(item) -> None:
        future, metas = item
        done, seconds, skipped = future.result()
        clock.seconds["decode"] += seconds
        passed.add(done, metas)
        bad_outputs.extend(skipped)
        advance(len(done) + len(skipped))

    stream = target.infer_stream(feed())
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        try:
            for batch, outputs, seconds in stream:
                clock.seconds["infer"] += seconds
                pending.append((pool.submit(_decode_batch, outputs, batch.metas, profile, batch.tensor.shape[0],
                                            skip_bad, names), batch.metas))
                while pending and (len(pending) > decode_ahead or pending[0][0].done()):
                    collect(pending.popleft())
            t0 = time.perf_counter()
            while pending:
                collect(pending.popleft())
            clock.seconds["wait_decode"] += time.perf_counter() - t0
        finally:
            stream.close()
            batches.close()
            for future, _ in pending:
                future.cancel()
    passed.wall_seconds = time.perf_counter() - start
    return passed


def _output_names(target) -> list[str] | None:
    """The model's output names where the target can tell them (for messages), else None."""
    try:
        return list(target.output_names()) or None
    except Exception:  # a name is only for the message; never fail the pass over it
        return None


def _serial_pass(target, images, batch_size, profile, workers, skip_bad, advance, canvases=None) -> PassResult:
    """The plain loop: preprocessing prefetched in threads, then infer and decode one batch at a time."""
    passed = PassResult([], [], [], StageClock(), 0.0)
    clock = passed.clock
    names = _output_names(target)
    start = time.perf_counter()
    for batch in iter_batches(images, batch_size, profile.input, pad=target.padded_batch,
                              workers=workers, skip_bad=skip_bad, canvases=canvases):
        clock.seconds["preprocess"] += batch.seconds
        passed.failed += batch.failed
        if batch.metas:
            with clock.stage("infer"):
                outputs = target.infer(batch.tensor, extra_inputs(profile, batch.metas, batch.tensor.shape[0]) or None)
            done, seconds, skipped = _decode_batch(outputs, batch.metas, profile, batch.tensor.shape[0], skip_bad,
                                                   names)
            passed.bad_outputs += skipped
            clock.seconds["decode"] += seconds
            passed.add(done, batch.metas)
        advance(len(batch.metas) + len(batch.failed))
    passed.wall_seconds = time.perf_counter() - start
    return passed
