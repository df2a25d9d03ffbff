"""The sinks every source of raw outputs feeds, for one batch: the finite filter (NaN/Inf outputs: fail, or
skip the images and record them), the profile's decoder, COCO result dicts per image.

The one way outputs become detections: harness.measure.pipeline's passes (in process, from a device's files) and
the precision conversion check (harness.precision.check) all call decode_batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, SkippedImage
from harness.decode import decode
from harness.decode.finite import bad_rows, describe, find_nonfinite
from harness.decode.types import to_coco_array, to_coco_results


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


def decode_batch(outputs, metas, profile, batch_rows: int | None = None, skip_bad: bool = False,
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
