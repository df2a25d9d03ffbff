"""VastAI vamp: read `--path_output` (output_NNNNNN.npz in datalist order, keys output_0..output_{k-1});
emulate vamp with ONNX Runtime, doing the device-side resize/normalise on the host with the harness's
own preprocess functions so that emulate == an in-process run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.errors import HarnessError
from harness.npu.files import check_array, load_npz, natural_key, write_npz
from harness.npu.prepare import (
    NPZ_INPUT_KEY,
    Prep,
    emulator_target,
    load_prep,
    npz_input_to_image,
)
from harness.preprocess import ImageMeta, resize_image, to_model_layout

OUTPUT_NAME = re.compile(r"^output_\d{6}\.npz$")
TIME_COVERS = "not measured (vamp writes no timing file)"


def output_name(index: int) -> str:
    return f"output_{index:06d}.npz"


def _label(meta: ImageMeta, index: int) -> str:
    return f"image {Path(meta.file).name} (id {meta.image_id}, datalist line {index + 1})"


def plan_outputs(folder: Path, prep: Prep) -> list[Path]:
    """One output file per datalist line; missing or unexpected files are errors naming image and file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"vamp output folder not found: {folder}")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    expected = [output_name(i) for i in range(len(prep.images))]
    missing = [(i, n) for i, n in enumerate(expected) if n not in names]
    if missing:
        i, name = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise HarnessError(f"vamp output folder {folder}: missing {name} for {_label(prep.images[i][1], i)}{more}")
    extra = sorted((n for n in names - set(expected) if n.endswith(".npz")), key=natural_key)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise HarnessError(f"vamp output folder {folder}: unexpected file {extra[0]}{more}: the datalist in "
                           f"{prep.folder} has {len(expected)} images (outputs from another datalist?)")
    return [folder / n for n in expected]


def read_outputs(folder: Path, prep: Prep, specs: list[dict] | None) -> Iterator[tuple[ImageMeta, list[np.ndarray]]]:
    """(meta, outputs in model order) per image, in datalist order; npz loaded with allow_pickle=False."""
    for index, ((_, meta), path) in enumerate(zip(prep.images, plan_outputs(folder, prep))):
        what = _label(meta, index)
        arrays = load_npz(path, what)
        count = len(specs) if specs is not None else len(arrays)
        keys = [f"output_{k}" for k in range(count)]
        if sorted(arrays, key=natural_key) != keys:
            raise HarnessError(f"{what}: {path} holds keys {sorted(arrays, key=natural_key)}, expected {keys}")
        yield meta, [check_array(arrays[key], specs[k] if specs else None, path, f"{what} {key}")
                     for k, key in enumerate(keys)]


def emulate(model: str | Path, prep_dir: str | Path, out: str | Path, batchsize: int = 1,
            threads: int | None = None, progress=None) -> dict:
    """Run the ONNX model over an npz prep folder in datalist order; write output_NNNNNN.npz per image."""
    from harness.runner import NullProgress

    progress = progress or NullProgress()
    prep = load_prep(prep_dir)
    if prep.fmt != "npz":
        raise HarnessError(f"{prep.folder} holds {prep.fmt} inputs; `emulate --runner vamp` needs `preprocess --format npz`")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = [p.name for p in out.iterdir() if OUTPUT_NAME.match(p.name)]
    if stale:
        raise HarnessError(f"vamp output folder {out} already holds {stale[0]}...; choose another --out")
    target, batch, fixed = emulator_target(model, prep, batchsize, threads)
    notes = []
    if fixed is not None and fixed != batchsize:
        notes.append(f"model {Path(model).name} has a fixed batch of {fixed}: ran batch {fixed} (asked {batchsize})")
    spec = prep.profile.input

    def model_input(index: int) -> np.ndarray:
        stem, meta = prep.images[index]
        path = prep.folder / f"{stem}.npz"
        what = _label(meta, index)
        if not path.is_file():
            raise HarnessError(f"{what}: input file {path} not found")
        arrays = load_npz(path, what)
        chw = arrays.get(NPZ_INPUT_KEY)
        if chw is None or chw.dtype != np.uint8 or chw.ndim != 3 or chw.shape[0] != 3:
            raise HarnessError(f"{what}: {path} needs key {NPZ_INPUT_KEY!r} uint8 3xHxW (image2npz layout)")
        canvas, _ = resize_image(npz_input_to_image(chw), spec)  # what the VDSP does on the device
        return to_model_layout(canvas, spec)

    try:
        target.load(batch)
        total = len(prep.images)
        with progress.task(f"vamp emulate bs={batch}", total) as advance:
            for start in range(0, total, batch):
                real = list(range(start, min(start + batch, total)))
                tensors = [model_input(i) for i in real]
                tensors += [tensors[0]] * (batch - len(real))
                outputs = target.infer(np.stack(tensors))
                bad = [k for k, o in enumerate(outputs) if batch > 1 and (o.ndim == 0 or o.shape[0] != batch)]
                if bad:
                    raise HarnessError(f"model {Path(model).name} output {bad[0]} has shape "
                                       f"{tuple(outputs[bad[0]].shape)}: cannot split it into {batch} images")
                for j, index in enumerate(real):
                    arrays = {f"output_{k}": (o if batch == 1 else o[j:j + 1]) for k, o in enumerate(outputs)}
                    write_npz(out / output_name(index), arrays)
                advance(len(real))
    finally:
        target.close()
    return {"folder": str(out), "batch": batch, "files": len(prep.images), "notes": notes}
