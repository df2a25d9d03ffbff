"""Raw outputs of a row's first N images, for the tensor-error part of the fidelity report.

The images go through the same batching as the accuracy pass (same preprocessing, the same batch
size, padded where the target needs a full batch), so the saved arrays are what decode saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.measure.artifacts import SavedOutputs
from harness.measure.pipeline import iter_batches
from harness.model.extra_inputs import extra_inputs


def split_per_image(outputs: list[np.ndarray], rows: int, real: int) -> list[list[np.ndarray]]:
    """One batch's outputs -> [image][output] for its `real` images.

    An output whose first axis has `rows` entries is sliced per image; in a batch of one image an
    output without a batch axis (nanodet-m-320's [1600, 80]) is that image's whole array."""
    per_image: list[list[np.ndarray]] = [[] for _ in range(real)]
    for k, out in enumerate(outputs):
        out = np.asarray(out)
        if out.ndim and out.shape[0] == rows:
            for i in range(real):
                per_image[i].append(np.array(out[i]))
        elif rows == 1:
            per_image[0].append(np.array(out))
        else:
            raise HarnessError(f"output {k} has shape {out.shape}, which has no batch axis of {rows}: "
                               "its per-image values cannot be saved (run --save-outputs at --bs 1)")
    return per_image


def capture_outputs(target, images, n: int, batch_size: int, profile, output_names: list[str]) -> SavedOutputs:
    """Infer the first n (image id, path) pairs again and keep their raw outputs."""
    ids, arrays = [], []
    for batch in iter_batches(list(images[:n]), batch_size, profile.input, pad=target.padded_batch, workers=1):
        if not batch.metas:
            continue
        outputs = target.infer(batch.tensor, extra_inputs(profile, batch.metas, batch.tensor.shape[0]) or None)
        arrays += split_per_image(outputs, batch.tensor.shape[0], len(batch.metas))
        ids += [m.image_id for m in batch.metas]
    by_id = {int(i): p for i, p in images[:n]}
    names = [Path(by_id[int(i)]).name for i in ids]
    if arrays and len(output_names) != len(arrays[0]):  # the file names none (or fewer than it returns)
        output_names = [f"output_{k}" for k in range(len(arrays[0]))]
    return SavedOutputs([int(i) for i in ids], names, list(output_names), arrays)
