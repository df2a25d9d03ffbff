"""Dataset -> input files for a vendor tool, plus the prep.json sidecar that decode reads back.

What goes into each input file is the tool's business (its FileTool.write_input: ais_bench takes
the exact model input, vamp the unresized image); this module runs it over the dataset in order,
in threads, and writes the sidecar last, so a folder with a prep.json is complete.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.core.errors import HarnessError, ImageError
from harness.core.fileio import atomic_write_text, write_or_fail
from harness.core.folders import OutputFolder, safe_target
from harness.core.progress import NullProgress
from harness.measure.identity import model_sha256
from harness.npu import tool_for_format
from harness.npu.prep import PREP_FILE, PREP_VERSION, check_model_input, onnx_io, per_image_outputs
from harness.profiles import Profile


def _ordered(fn, items, workers: int, lookahead: int):
    """fn over items in a thread pool, results yielded in input order, at most `lookahead` in flight."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="npu-prep") as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= lookahead:
                first, future = pending.popleft()
                yield first, future
        while pending:
            yield pending.popleft()


def _clear_previous(folder: OutputFolder, overwrite: bool) -> None:
    """A prepared folder is written into an empty --out; --overwrite removes what the harness wrote
    there before (the manifest's files), never a user's file of the same suffix."""
    entries = folder.entries()
    if not entries:
        return
    if not overwrite:
        raise HarnessError(f"output folder {folder.path} is not empty ({len(entries)} entries); "
                           "choose an empty folder or pass --overwrite")
    folder.clear()


def prepare(images: list[tuple[int, Path]], profile: Profile, out_dir: str | Path, fmt: str,
            model: str | Path | None = None, workers: int = 2, progress=None, dataset: str = "",
            annotations: str = "", skip_bad: bool = False, datalist_root: str | None = None,
            overwrite: bool = False, limit: int | None = None, content: list[str] | None = None) -> dict:
    """Write every image's input file in dataset order, then prep.json (its presence marks a complete folder).
    content: each image's bytes sha256 (Dataset.content), recorded per image for decode's dataset identity."""
    tool = tool_for_format(fmt)
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    stems: dict[str, Path] = {}
    for _, path in images:
        other = stems.setdefault(Path(path).stem, Path(path))
        if other != Path(path):
            raise HarnessError(f"images {other.name} and {Path(path).name} share the stem {Path(path).stem!r}; "
                               "vendor tools name outputs by stem, so each image needs a unique one")
    outputs = first_input = None
    if model is not None:
        first_input, raw_outputs = onnx_io(model)
        check_model_input(model, first_input, profile.input, profile.name)
        outputs = per_image_outputs(first_input, raw_outputs)
    with OutputFolder(out_dir) as folder:  # one command at a time on this folder
        _clear_previous(folder, overwrite)
        return _write_all(images, profile, out_dir, fmt, tool, model, first_input, outputs, workers, progress,
                          dataset, annotations, skip_bad, datalist_root, limit, content)


def _write_all(images, profile, out_dir, fmt, tool, model, first_input, outputs, workers, progress, dataset,
               annotations, skip_bad, datalist_root, limit=None, content=None) -> dict:
    digests = {str(path): digest for (_, path), digest in zip(images, content)} if content else {}

    def job(item):
        image_id, path = item
        try:
            return tool.write_input(out_dir, Path(path).stem, image_id, Path(path), profile.input)
        except ImageError as exc:
            if not skip_bad:
                raise
            return exc

    records, skipped = [], []
    with progress.task(f"preprocess -> {fmt} ({len(images)} images)", len(images)) as advance:
        for (_, path), future in _ordered(job, images, workers, lookahead=4 * max(1, workers)):
            target = out_dir / f"{Path(path).stem}.{fmt}"
            result = _result_or_fail(future, target)
            if isinstance(result, ImageError):
                skipped.append(str(result.skipped()))
            else:
                records.append({"stem": Path(path).stem, "input_file": f"{Path(path).stem}.{fmt}", **result.to_dict(),
                                "sha256": digests.get(str(path))})
            advance(1)
    if not records:
        raise HarnessError(f"no image could be prepared ({len(skipped)} failed); first: {skipped[0] if skipped else '-'}")
    spec = profile.input
    model_input = {"name": first_input["name"] if first_input else None, "shape": list(spec.shape(1)),
                   "dtype": spec.numpy_dtype, "layout": spec.layout}
    sidecar = {
        "harness_prep_version": PREP_VERSION,
        "format": fmt,
        "tool": tool.program,
        "profile": profile.to_dict(),
        "model": str(model) if model is not None else None,
        "model_sha256": model_sha256(model) if model is not None else None,
        "limit": limit,
        "dataset": dataset,
        "annotations": annotations,
        "input": model_input,
        "model_input": model_input,
        "outputs": outputs,
        "images": records,
        "skipped": skipped,
    }
    write_or_fail(lambda: sidecar.update(tool.finish_prepare(out_dir, records, spec, datalist_root)), out_dir)
    write_or_fail(lambda: atomic_write_text(safe_target(out_dir, PREP_FILE), json.dumps(sidecar, indent=1) + "\n"),
                  out_dir / PREP_FILE)
    return sidecar


def _result_or_fail(future, target: Path):
    """A job's result; a failed write (a full disk) is one line, and the folder holds no prep.json, so
    nothing takes it for complete (every input file written is whole: they are written atomically)."""
    try:
        return future.result()
    except OSError as exc:
        raise HarnessError(f"cannot write {target} ({exc.strerror or exc}); {target.parent} holds no prep.json "
                           "and is incomplete: free space and run preprocess again with --overwrite") from None
