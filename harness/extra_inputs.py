"""Extra model inputs beside the image tensor, built from the per-image preprocessing meta.

Some exports take more than the image: PaddleDetection models want `scale_factor` [B, 2] =
[scale_y, scale_x] (and older ones `im_shape` [B, 2] = resized [height, width]) to map boxes back to
the original image inside the graph. A profile lists them by model input name:

    [input]
    extras = ["scale_factor"]

and the runner passes `extra_inputs(profile, metas, batch_size)` to `target.infer(batch, extras)`.
Pure function of the metas, so in-process targets and file-based flows compute the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from harness.errors import HarnessError


def _scale_factor(meta) -> list[float]:
    return [meta.scale_y, meta.scale_x]


def _im_shape(meta) -> list[float]:
    # Paddle's im_shape: the image size after resizing, before any padding.
    return [float(round(meta.height * meta.scale_y)), float(round(meta.width * meta.scale_x))]


EXTRA_INPUTS: dict[str, Callable] = {
    "scale_factor": _scale_factor,
    "im_shape": _im_shape,
}


def extra_inputs(profile, metas: Sequence, batch_size: int) -> dict[str, np.ndarray]:
    """{input name: float32 [batch_size, ...]} for the profile's [input] extras; {} when it has none.

    Rows beyond len(metas) (padding of a fixed-batch model) repeat the last image's values.
    """
    names = profile.input.extras  # validated against EXTRA_INPUTS when the profile loaded
    if not names:
        return {}
    if not metas:
        raise HarnessError("extra model inputs need at least one image in the batch")
    if batch_size < len(metas):
        raise HarnessError(f"batch size {batch_size} is smaller than the {len(metas)} images given")
    rows = list(metas) + [metas[-1]] * (batch_size - len(metas))
    return {name: np.asarray([EXTRA_INPUTS[name](m) for m in rows], dtype=np.float32) for name in names}
