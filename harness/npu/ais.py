"""Ascend ais_bench / ais_infer: read an output folder and its summary json; emulate the tool with ORT.

Output folder: `{--output}/{YYYY_MM_DD-HH_MM_SS}` or `{--output}/{--output_dirname}`, one file per
input file and model output, `{input stem}_{i}.bin|npy` (batched outputs split along axis 0).
Summary: `sumary.json` (sic) inside the folder (ais_infer) or `{folder}_summary.json` beside it
(ais_bench). The NPU_compute_time percentile key is "percentile(99%)" in most versions and "P99" in
some; `args` is the tool's sys.argv list. Both spellings are read.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_bytes, atomic_write_text, make_dirs, write_or_fail
from harness.core.folders import OutputFolder, plain_name, safe_target
from harness.core.jsonfile import read_json_object
from harness.core.progress import NullProgress
from harness.images.preprocess import ImageMeta, preprocess_image
from harness.npu.files import check_array, load_npy, natural_key, read_bin
from harness.npu.prep import Prep, emulation_record, emulator_target, load_prep, recorded_origin
from harness.npu.tool import DeviceTiming, FileTool

OLD_SUMMARY = "sumary.json"
OUTPUT_FILE = re.compile(r"^.+_\d+\.(bin|npy|txt)$")
TIME_COVERS = "device compute only (NPU_compute_time from the ais summary)"
EMULATED_TIME_COVERS = "host inference only (harness emulate: ONNX Runtime on this CPU stood in for the NPU; not device time)"


# ---------------------------------------------------------------- locating the output folder

def _holds_outputs(folder: Path) -> bool:
    return any(OUTPUT_FILE.match(p.name) for p in folder.iterdir() if p.is_file()) or (folder / OLD_SUMMARY).is_file()


def resolve_output_dir(path: str | Path) -> Path:
    """The folder itself, or the --output parent when it holds exactly one output subfolder."""
    path = Path(path)
    if not path.is_dir():
        raise HarnessError(f"ais output folder not found: {path}")
    if _holds_outputs(path):
        return path
    candidates = sorted(p for p in path.iterdir() if p.is_dir() and _holds_outputs(p))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise HarnessError(f"{path} holds no ais output files ({{stem}}_{{i}}.bin|npy) and no output subfolder")
    names = ", ".join(p.name for p in candidates[:5])
    raise HarnessError(f"{path} holds {len(candidates)} ais output folders ({names}); pass the one to decode")


def find_summary(folder: Path) -> Path | None:
    """New tool: `{folder}_summary.json` beside the folder (preferred); old tool: `sumary.json` inside."""
    for candidate in (folder.parent / f"{folder.name}_summary.json", folder / OLD_SUMMARY):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------- the summary json

@dataclass
class AisTiming:
    path: Path
    throughput: float
    mean_ms: float
    median_ms: float | None
    p99_ms: float | None
    p90_ms: float | None
    batchsize: int | None
    count: int | None
    raw: dict = field(repr=False, default_factory=dict)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HarnessError(f"{where} is {value!r}, expected a number")
    return float(value)


def arg_value(args, names: tuple[str, ...]):
    """The value of a flag in the summary's args: the tool's argv list (`--name V` or `--name=V`) or a
    dict in hand-made files (keyed by the first name without dashes)."""
    if isinstance(args, dict):
        return args.get(names[0].lstrip("-"))
    value = None
    if isinstance(args, list):
        for i, item in enumerate(args):
            item = str(item)
            if item in names and i + 1 < len(args):
                value = args[i + 1]
            elif item.startswith(tuple(f"{n}=" for n in names)):
                value = item.split("=", 1)[1]
    return value


def batchsize_from_args(args) -> int | None:
    """--batchsize from the summary's args."""
    value = arg_value(args, ("--batchsize", "--batch_size"))
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def device_from_args(args) -> str | None:
    """The device id(s) ais_bench ran on (its --device)."""
    value = arg_value(args, ("--device",))
    return None if value is None else str(value)


def model_from_args(args) -> str | None:
    if isinstance(args, dict):
        return args.get("model") or args.get("om_model")
    value = arg_value(args, ("--model", "--om-model", "--om_model"))
    return None if value is None else str(value)


def parse_summary(path: Path) -> AisTiming:
    """Device timing from an ais summary; malformed content is an error naming the file and key."""
    data = read_json_object(path, "ais summary")
    npu = data.get("NPU_compute_time")
    if not isinstance(npu, dict):
        raise HarnessError(f"ais summary {path}: NPU_compute_time missing or not an object")
    if "throughput" not in data:
        raise HarnessError(f"ais summary {path}: throughput missing")
    throughput = _number(data["throughput"], f"ais summary {path}: throughput")
    mean = _number(npu.get("mean"), f"ais summary {path}: NPU_compute_time.mean")
    median = npu.get("median")
    median = None if median is None else _number(median, f"ais summary {path}: NPU_compute_time.median")
    p99_key = next((k for k in ("percentile(99%)", "P99") if k in npu), None)
    p99 = None if p99_key is None else _number(npu[p99_key], f"ais summary {path}: NPU_compute_time.{p99_key}")
    p90 = None
    times = data.get("npu_compute_time_list")
    if times is not None:
        p90 = round(float(np.percentile(_durations(times, path), 90)), 3) if times else None
    count = npu.get("count", data.get("count"))
    return AisTiming(path, throughput, mean, median, p99, p90, batchsize_from_args(data.get("args")),
                     int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None, data)


def _durations(times, path: Path) -> list[float]:
    """npu_compute_time_list: ms per batch, or [start, end] pairs in multi-thread mode."""
    if not isinstance(times, list):
        raise HarnessError(f"ais summary {path}: npu_compute_time_list is not a list")
    out = []
    for item in times:
        if isinstance(item, list) and len(item) == 2:
            out.append(_number(item[1], f"ais summary {path}: npu_compute_time_list")
                       - _number(item[0], f"ais summary {path}: npu_compute_time_list"))
        else:
            out.append(_number(item, f"ais summary {path}: npu_compute_time_list item"))
    return out


# ---------------------------------------------------------------- reading outputs

def _label(meta: ImageMeta) -> str:
    return f"image {Path(meta.file).name} (id {meta.image_id})"


def plan_outputs(folder: Path, prep: Prep, specs: list[dict] | None) -> list[list[Path]]:
    """Every image's output files, checked as a whole before anything is decoded:
    missing and unexpected files are errors naming the image and the file."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    names.discard(OLD_SUMMARY)
    count = len(specs) if specs is not None else _count_from_npy(names, prep, folder)
    plan, used, missing = [], set(), []
    for stem, meta in prep.images:
        files = []
        for i in range(count):
            found = [f"{stem}_{i}.{ext}" for ext in ("bin", "npy", "txt") if f"{stem}_{i}.{ext}" in names]
            if not found:
                missing.append(f"{stem}_{i}.bin for {_label(meta)}")
                continue
            if len(found) > 1:
                raise HarnessError(f"{folder}: {_label(meta)} has both {found[0]} and {found[1]}; keep one --outfmt")
            if found[0].endswith(".txt"):
                raise HarnessError(f"{folder / found[0]} ({_label(meta)}): TXT outputs lose shape and precision; "
                                   "rerun ais_bench with --outfmt BIN or NPY")
            used.add(found[0])
            files.append(folder / found[0])
        plan.append(files)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise HarnessError(f"ais output folder {folder}: missing output file {missing[0]}{more}")
    extra = sorted(names - used, key=natural_key)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise HarnessError(f"ais output folder {folder}: unexpected file {extra[0]}{more}: no image in "
                           f"{prep.folder / 'prep.json'} has that output (outputs from another input set or model?)")
    return plan


def _count_from_npy(names: set[str], prep: Prep, folder: Path) -> int:
    """Without recorded shapes only self-describing .npy outputs can be read; count them per image."""
    stem, meta = prep.images[0]
    count = 0
    while f"{stem}_{count}.npy" in names:
        count += 1
    if count == 0:
        raise HarnessError(f"{folder / (stem + '_0.bin')} ({_label(meta)}): no output shapes are known (none in "
                           "prep.json) and the outputs are not .npy; pass --model MODEL.onnx so raw .bin outputs can be rebuilt")
    return count


def read_outputs(folder: Path, prep: Prep, specs: list[dict] | None) -> Iterator[tuple[ImageMeta, list[np.ndarray]]]:
    """(meta, outputs in model order) per image, in prep.json order."""
    plan = plan_outputs(folder, prep, specs)
    for (_, meta), files in zip(prep.images, plan):
        arrays = []
        for i, path in enumerate(files):
            spec = specs[i] if specs is not None else None
            what = _label(meta)
            if path.suffix == ".bin":
                arrays.append(read_bin(path, spec, what))
            else:
                arrays.append(check_array(load_npy(path, what, spec), spec, path, what))
        yield meta, arrays


# ---------------------------------------------------------------- emulating the tool

def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v)),
            "percentile(99%)": float(np.percentile(v, 99)), "count": int(v.size)}


def emulate(model: str | Path, prep_dir: str | Path, out: str | Path, batchsize: int = 1,
            summary_style: str = "new", output_dirname: str | None = None, threads: int | None = None,
            progress=None) -> dict:
    """_emulate, holding the lock on --out (one command at a time on a folder)."""
    if output_dirname is not None:
        plain_name(output_dirname, "--output-dirname")  # stays a folder inside --out
    with OutputFolder(out, "--out"):
        return _emulate(model, prep_dir, out, batchsize, summary_style, output_dirname, threads, progress)


def _emulate(model: str | Path, prep_dir: str | Path, out: str | Path, batchsize: int = 1,
             summary_style: str = "new", output_dirname: str | None = None, threads: int | None = None,
             progress=None) -> dict:
    """Run the ONNX model with ONNX Runtime over a bin prep folder and write ais_bench's layout.

    As the tool does: input files natural-sorted; k files packed per batch where k = model input
    size / file size (fixed-batch models) or --batchsize (dynamic batch); a short last batch padded
    with the first file and the padded outputs not written; outputs split along axis 0.
    """
    progress = progress or NullProgress()
    prep = load_prep(prep_dir)
    if prep.fmt != "bin":
        raise HarnessError(f"{prep.folder} holds {prep.fmt} inputs; `emulate --runner ais` needs `preprocess --format bin`")
    if summary_style not in ("new", "old"):
        raise HarnessError(f"--summary-style {summary_style!r}: expected new or old")
    files = sorted((p for p in prep.folder.iterdir() if p.suffix == ".bin"), key=lambda p: natural_key(p.name))
    if not files:
        raise HarnessError(f"{prep.folder}: no .bin input files")
    target, batch, fixed = emulator_target(model, prep, batchsize, threads)
    notes = []
    if fixed is not None and fixed != batchsize:
        notes.append(f"model {Path(model).name} has a fixed batch of {fixed}: ran batch {fixed} as ais_bench "
                     f"packs files by the model's input size (asked --batchsize {batchsize}); summary records {fixed}")
    try:
        target.load(batch)
        per_file = math.prod(prep.profile.input.shape(1)) * np.dtype(prep.profile.input.numpy_dtype).itemsize
        for path in files:
            if path.stat().st_size != per_file:
                raise HarnessError(f"input file {path}: {path.stat().st_size} bytes, the model input for one image "
                                   f"needs {per_file} ({prep.profile.input.shape(1)} {prep.profile.input.numpy_dtype})")
        folder_name = output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
        out = Path(out)
        folder = safe_target(out, folder_name, "--out")
        if folder.exists() and any(folder.iterdir()):
            raise HarnessError(f"ais output folder {folder} already exists and is not empty; choose another --out")
        write_or_fail(lambda: make_dirs(folder), folder)
        dtype = prep.profile.input.numpy_dtype
        sample_shape = prep.profile.input.shape(1)[1:]

        def load(paths):
            return np.stack([np.fromfile(p, dtype=dtype).reshape(sample_shape) for p in paths])

        target.infer(load([files[0]] * batch))  # warm-up, as ais_bench does once before timing
        compute, h2d, d2h, filesinfo = [], [], [], {}
        with progress.task(f"ais emulate bs={batch}", len(files)) as advance:
            for sample_id, start in enumerate(range(0, len(files), batch)):
                real = files[start:start + batch]
                padded = real + [files[0]] * (batch - len(real))
                t0 = time.perf_counter()
                tensor = np.ascontiguousarray(load(padded))
                t1 = time.perf_counter()
                outputs = target.infer(tensor)
                t2 = time.perf_counter()
                outputs = [np.array(o, copy=True) for o in outputs]
                t3 = time.perf_counter()
                h2d.append((t1 - t0) * 1e3)
                compute.append((t2 - t1) * 1e3)
                d2h.append((t3 - t2) * 1e3)
                written = []
                for i, output in enumerate(outputs):
                    parts = [output] if batch == 1 else _split(output, batch, i, model)
                    for path, part in zip(real, parts):
                        name = folder / f"{path.stem}_{i}.bin"
                        data = np.ascontiguousarray(part).tobytes()
                        write_or_fail(lambda n=name, d=data: atomic_write_bytes(n, d, fsync=False), name)
                        written.append(str(name))
                filesinfo[sample_id] = {"infiles": [str(p) for p in padded], "outfiles": written}
                advance(len(real))
    finally:
        target.close()
    stats = _stats(compute)
    from harness.measure.envinfo import cpu_model

    summary = {
        "filesinfo": filesinfo,
        "args": ["ais_bench", "--model", str(model), "--input", str(prep.folder), "--output", str(out),
                 "--batchsize", str(batch), "--outfmt", "BIN"] + (["--output_dirname", output_dirname] if output_dirname else []),
        "NPU_compute_time": stats,
        "H2D_latency": _stats(h2d),
        "D2H_latency": _stats(d2h),
        "npu_compute_time_list": compute,
        "throughput": 1000.0 * batch / stats["mean"] if stats["mean"] > 0 else 0.0,
        "count": len(compute),
        "pid": os.getpid(),
        "emulated_by": "harness emulate --runner ais (ONNX Runtime CPU; times are host times, not NPU times)",
        "emulated_on": f"ONNX Runtime CPU on {cpu_model()}",
        **emulation_record(model, prep),
    }
    summary_path = folder / OLD_SUMMARY if summary_style == "old" else out / f"{folder_name}_summary.json"
    write_or_fail(lambda: atomic_write_text(safe_target(summary_path.parent, summary_path.name), json.dumps(summary)),
                  summary_path)
    return {"folder": str(folder), "summary": str(summary_path), "batch": batch, "files": len(files), "notes": notes}


def _split(output: np.ndarray, batch: int, index: int, model) -> list[np.ndarray]:
    if output.ndim == 0 or output.shape[0] != batch:
        raise HarnessError(f"model {Path(model).name} output {index} has shape {tuple(output.shape)}: "
                           f"cannot split it along axis 0 into {batch} images")
    return np.split(output, batch, axis=0)


# ---------------------------------------------------------------- the tool

def write_input(out_dir: Path, stem: str, image_id: int, path: Path, spec) -> ImageMeta:
    """`<stem>.bin` = the exact model input of one image (1xCxHxW or 1xHxWxC, `ndarray.tofile`),
    made by the same preprocessing as every in-process target."""
    tensor, meta = preprocess_image(path, image_id, spec)
    atomic_write_bytes(safe_target(out_dir, f"{stem}.bin"), np.ascontiguousarray(tensor[None]).tobytes(), fsync=False)
    return meta


def finish_prepare(out_dir: Path, records: list[dict], spec, datalist_root: str | None) -> dict:
    return {}


def read_timing(folder: Path) -> DeviceTiming:
    """The device timing from the ais summary beside or inside the output folder (none: say so)."""
    path = find_summary(folder)
    if path is None:
        return DeviceTiming(source=folder, time_covers="not measured (no ais summary json found)",
                            note=f"no ais summary json beside or inside {folder}: device throughput and latency "
                                 "not recorded")
    timing = parse_summary(path)
    emulated_on, device_ids = timing.raw.get("emulated_on"), device_from_args(timing.raw.get("args"))
    emulated_by = timing.raw.get("emulated_by")
    device = (str(emulated_on) if emulated_on else
              f"device id {device_ids} (ais_bench --device {device_ids}, from {path.name})" if device_ids else None)
    note = (f"fps = ais throughput (1000 x batchsize / mean NPU compute ms) from {path.name}; latency per batch call"
            + ("" if timing.p90_ms is not None else "; p90 not reported (no npu_compute_time_list)"))
    return DeviceTiming(source=path, fps=round(timing.throughput, 2),
                        latency_ms_p50=None if timing.median_ms is None else round(timing.median_ms, 3),
                        latency_ms_p90=timing.p90_ms,
                        latency_ms_p99=None if timing.p99_ms is None else round(timing.p99_ms, 3),
                        batchsize=timing.batchsize, iterations=timing.count,
                        device_model=model_from_args(timing.raw.get("args")), device=device,
                        emulated_by=emulated_by, time_covers=EMULATED_TIME_COVERS if emulated_by else TIME_COVERS, note=note,
                        mode="latency", **recorded_origin(timing.raw))  # ais_bench (and its emulation) runs one batch at a time


TOOL = FileTool(
    name="ais", device="ascend", program="ais_bench", input_format="bin", decode_flag="--bin",
    summary="Huawei Ascend ais_bench/ais_infer: harness preprocess --format bin, then harness decode --bin",
    write_input=write_input, finish_prepare=finish_prepare, locate_outputs=resolve_output_dir,
    read_outputs=read_outputs, read_timing=read_timing, emulate=emulate,
    output_help="its timestamped/named folder, or the --output parent holding one",
    emulate_options=("summary_style", "output_dirname"),
    command=("python3", "-m", "ais_bench", "--model", "{model}", "--input", "{input}", "--output", "{output}",
             "--outfmt", "BIN", "--batchsize", "{batchsize}", "--device", "0"),
)
