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

from harness.core.errors import HarnessError


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


def dims_text(shape) -> str:
    """Dims for a message: fixed sizes as numbers, dynamic ones (None, names, -1) as "?"."""
    return "[" + ", ".join("?" if not isinstance(d, int) or d <= 0 else str(d) for d in shape) + "]"


def check_model_inputs(inputs: Sequence, profile, model_name: str, batch: int) -> None:
    """Before anything runs: the model's inputs after the image (the first) must be exactly the
    profile's [input] extras, and an extra input with a fixed batch must fit the batch size.

    inputs: the real model inputs in the model's order, as onnx_model.TensorInfo (`inspect_onnx(path)
    .inputs`, or a runtime's own ports put that way): a name and a shape of ints for fixed sizes and
    None (or a name) for dynamic ones. One line naming the model's and the profile's inputs
    otherwise: a feed the model lacks, or an input nobody feeds, would end in the runtime's own
    traceback on the first batch."""
    names = [tensor.name for tensor in inputs]
    shapes = {tensor.name: tuple(tensor.shape or ()) for tensor in inputs}
    extras = profile.input.extras
    have = ", ".join(f"{name} {dims_text(shapes[name])}" for name in names)
    missing = [name for name in extras if name not in names[1:]]
    if missing:
        raise HarnessError(
            f"model {model_name} has no input {', '.join(missing)} that profile {profile.name} feeds "
            f"([input] extras = {list(extras)}); the model's inputs: {have}. Use a profile without "
            f"{'that extra input' if len(missing) == 1 else 'those extra inputs'}"
        )
    unfed = [name for name in names[1:] if name not in extras]
    if unfed:
        known = [name for name in unfed if name in EXTRA_INPUTS]
        advice = (f"add [input] extras = {list(extras) + known} to the profile" if len(known) == len(unfed) else
                  f"the harness feeds the image and [input] extras ({', '.join(sorted(EXTRA_INPUTS))}) only")
        raise HarnessError(
            f"model {model_name} takes input {', '.join(f'{n} {dims_text(shapes[n])}' for n in unfed)} that "
            f"profile {profile.name} does not feed (its [input] extras = {list(extras)}); {advice}"
        )
    image_batch = shapes[names[0]][0] if names and shapes[names[0]] else None
    for name in extras:
        dims = shapes[name]
        fixed = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        if fixed is not None and fixed != batch and not (isinstance(image_batch, int) and image_batch > 0):
            raise HarnessError(
                f"model {model_name} declares input {name} as {dims_text(dims)}, a fixed batch of {fixed}, "
                f"while its image input's batch is dynamic: it cannot run batch {batch}; run --bs {fixed}, or "
                f"export it with a dynamic batch axis on {name} too"
            )
