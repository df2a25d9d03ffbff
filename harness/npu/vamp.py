"""VastAI vamp: read `--path_output` (output_NNNNNN.npz in datalist order, keys output_0..output_{k-1});
emulate vamp with ONNX Runtime, doing the device-side resize/normalise on the host with the harness's
own preprocess functions so that emulate == an in-process run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.core.fileio import atomic_write_text, sha256_bytes, write_or_fail
from harness.core.folders import OutputFolder, safe_target
from harness.core.jsonfile import read_json_object
from harness.core.progress import NullProgress
from harness.images.preprocess import ImageMeta, place_geometry, read_image, resize_image, to_model_layout
from harness.npu.files import check_array, load_npz, natural_key, write_npz
from harness.npu.prep import (
    PREP_DATALIST,
    Prep,
    check_prep_datalist,
    emulation_record,
    emulator_target,
    load_prep,
    recorded_origin,
)
from harness.npu.tool import DeviceTiming, FileTool
from harness.profiles import InputSpec

OUTPUT_NAME = re.compile(r"^output_\d{6}\.npz$")
TIME_COVERS = "not measured (vamp writes no timing file)"
DATALIST_FILE = PREP_DATALIST
VDSP_FILE = "vdsp_params.json"
EMULATED_FILE = "harness-emulated.json"  # written by `harness emulate --runner vamp` beside its outputs
NPZ_INPUT_KEY = "input_0"
VACC_LETTERBOX_PAD = 114  # VastModelZOO's vdsp letterbox fill (FORMATS.md)


# ---------------------------------------------------------------- VACC device-side preprocessing

def device_preprocess(spec: InputSpec) -> dict:
    """What the VACC must do to each RGB CHW u8 image so its model input equals the harness's.

    Derived from the profile only; `warnings` lists where the device is known or suspected to differ
    (the CLI prints them), so the two sides cannot disagree silently.
    """
    warnings = []
    op = {"letterbox": "FUSION_OP_RGB_LETTERBOX_CVTCOLOR_NORM_TENSOR", "warp": "FUSION_OP_RGB_LETTERBOX_CVTCOLOR_NORM_TENSOR",
          "stretch": "FUSION_OP_RGB_RESIZE_CVTCOLOR_NORM_TENSOR",
          "warp-stretch": "FUSION_OP_RGB_RESIZE_CVTCOLOR_NORM_TENSOR"}.get(spec.resize)
    if spec.resize.startswith("warp"):
        warnings.append(f"resize {spec.resize!r} is NanoDet's cv2.warpPerspective; the VDSP op resizes with its own "
                        "sampling (and a letterbox at whole-pixel offsets), so device inputs differ by sub-pixel shifts")
    if op is None:
        op = "FUSION_OP_RGB_LETTERBOX_CVTCOLOR_NORM_TENSOR"
        warnings.append(f"resize {spec.resize!r} (image pasted top-left) has no known VDSP op; the centred "
                        "letterbox op is written, so boxes will be shifted unless the device is configured by hand")
    resize_type = {"linear": "BILINEAR_CV"}.get(spec.interpolation)
    if resize_type is None:
        resize_type = f"{spec.interpolation.upper()}_CV"
        warnings.append(f"interpolation {spec.interpolation!r}: ResizeType {resize_type} is not confirmed from "
                        "VastModelZOO sources (only BILINEAR_CV is); check it against your VDSP version")
    if spec.dtype == "u8":
        norm = "NORMA_NONE"
        warnings.append("u8 model input (normalisation inside the model): NormaType NORMA_NONE is not confirmed")
    elif all(m == 0 for m in spec.mean) and all(abs(s - 255.0) < 1e-6 for s in spec.std):
        norm = "DIV255"
    else:
        norm = "MINUSMEAN_DIVSTD"
    color = "RGB2BGR" if spec.color == "bgr" else "COLOR_NONE"
    if spec.color == "rgb":
        warnings.append("RGB model input: ColorCvtCode COLOR_NONE is not confirmed from VastModelZOO sources")
    if spec.resize not in ("stretch", "warp-stretch") and spec.pad_value != VACC_LETTERBOX_PAD:
        warnings.append(f"profile pads with {spec.pad_value} but the VACC letterbox pads with {VACC_LETTERBOX_PAD} "
                        "(VastModelZOO); `harness emulate --runner vamp` pads as the profile says, a device run may not")
    return {
        "resize": spec.resize, "letterbox": spec.resize not in ("stretch", "warp-stretch"), "interpolation": spec.interpolation,
        "pad_value": spec.pad_value, "mean": list(spec.mean), "std": list(spec.std), "color": spec.color,
        "layout": spec.layout, "dtype": spec.dtype, "width": spec.width, "height": spec.height,
        "vdsp": {"OpType": op, "ResizeType": resize_type, "NormaType": norm, "ColorCvtCode": color},
        "warnings": warnings,
    }


def vdsp_params(spec: InputSpec) -> dict:
    """vdsp_params.json in VastModelZOO's style (e.g. official-nanodet_plus_m-vdsp_params.json)."""
    vdsp = device_preprocess(spec)["vdsp"]
    return {
        "OpType": vdsp["OpType"],
        "OpConfig": {
            "IimageFormat": "RGB_PLANAR",
            "IimageWidth": spec.width, "IimageHeight": spec.height,
            "OimageWidth": spec.width, "OimageHeight": spec.height,
            "IimageWidthPitch": spec.width, "IimageHeightPitch": spec.height,
            "Mean": list(spec.mean), "Std": list(spec.std),
            "NormaType": vdsp["NormaType"], "ColorCvtCode": vdsp["ColorCvtCode"], "ResizeType": vdsp["ResizeType"],
        },
    }


def image_to_npz_input(image_bgr: np.ndarray) -> np.ndarray:
    """image2npz: OpenCV BGR HxWx3 -> RGB 3xHxW uint8, not resized, not normalised."""
    return np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1))


def npz_input_to_image(chw_rgb: np.ndarray) -> np.ndarray:
    """Inverse of image_to_npz_input (exact): back to what harness.images.preprocess.read_image returns."""
    return np.ascontiguousarray(chw_rgb.transpose(1, 2, 0)[:, :, ::-1])


def device_meta(image_id: int, path: Path, width: int, height: int, spec: InputSpec) -> ImageMeta:
    """The geometry the device's resize applies = what resize_image does for the profile."""
    _, _, scale_x, scale_y, pad_x, pad_y = place_geometry(width, height, spec)
    return ImageMeta(int(image_id), str(path), width, height, scale_x, scale_y, float(pad_x), float(pad_y))




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
        arrays = load_npz(path, what, None if specs is None else {f"output_{k}": s for k, s in enumerate(specs)})
        count = len(specs) if specs is not None else len(arrays)
        keys = [f"output_{k}" for k in range(count)]
        if sorted(arrays, key=natural_key) != keys:
            raise HarnessError(f"{what}: {path} holds keys {sorted(arrays, key=natural_key)}, expected {keys}")
        yield meta, [check_array(arrays[key], specs[k] if specs else None, path, f"{what} {key}")
                     for k, key in enumerate(keys)]


def emulate(model: str | Path, prep_dir: str | Path, out: str | Path, batchsize: int = 1,
            threads: int | None = None, progress=None) -> dict:
    """Run the ONNX model over an npz prep folder in datalist order; write output_NNNNNN.npz per image."""
    progress = progress or NullProgress()
    prep = load_prep(prep_dir)
    if prep.fmt != "npz":
        raise HarnessError(f"{prep.folder} holds {prep.fmt} inputs; `emulate --runner vamp` needs `preprocess --format npz`")
    check_prep_datalist(prep)  # the emulator runs prep.json's order: the list must still say the same
    out = Path(out)
    with OutputFolder(out, "--out"):  # one command at a time on this folder
        return _emulate_into(model, prep, out, batchsize, threads, progress)


def _emulate_into(model, prep: Prep, out: Path, batchsize: int, threads: int | None, progress) -> dict:
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
        arrays = load_npz(path, what, {NPZ_INPUT_KEY: {"name": NPZ_INPUT_KEY, "shape": [3, None, None], "dtype": "uint8"}})
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
                    path = out / output_name(index)
                    write_or_fail(lambda p=path, a=arrays: write_npz(p, a), path)
                advance(len(real))
    finally:
        target.close()
    from harness.measure.envinfo import cpu_model

    marker = {"emulated_by": "harness emulate --runner vamp (ONNX Runtime CPU on this machine, not a VACC)",
              "emulated_on": f"ONNX Runtime CPU on {cpu_model()}",
              "model": str(model), "batch": batch, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **emulation_record(model, prep)}
    write_or_fail(lambda: atomic_write_text(safe_target(out, EMULATED_FILE, "--out"), json.dumps(marker, indent=1) + "\n"),
                  out / EMULATED_FILE)
    return {"folder": str(out), "batch": batch, "files": len(prep.images), "notes": notes}


# ---------------------------------------------------------------- the tool

def write_input(out_dir: Path, stem: str, image_id: int, path: Path, spec) -> ImageMeta:
    """image2npz: `<stem>.npz` with input_0 = the image as OpenCV reads it, BGR->RGB, CHW, uint8, not
    resized; the meta is what the device's resize will do (the profile's geometry)."""
    image = read_image(path)
    height, width = image.shape[:2]
    write_npz(safe_target(out_dir, f"{stem}.npz"), {NPZ_INPUT_KEY: image_to_npz_input(image)})
    return device_meta(image_id, path, width, height, spec)


def finish_prepare(out_dir: Path, records: list[dict], spec, datalist_root: str | None) -> dict:
    """datalist.txt (one .npz path per line, in prep order) and vdsp_params.json; the device-side
    preprocessing (with its warnings) goes into prep.json."""
    root = datalist_root or str(Path(out_dir).resolve())
    lines = [f"{root.rstrip('/')}/{r['input_file']}" for r in records]
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(out_dir) / DATALIST_FILE, text)
    atomic_write_text(Path(out_dir) / VDSP_FILE, json.dumps(vdsp_params(spec), indent=4) + "\n")
    return {"input": {"key": NPZ_INPUT_KEY, "dtype": "uint8", "layout": "CHW", "color": "rgb", "resized": False},
            "device_preprocess": device_preprocess(spec),
            "datalist_sha256": sha256_bytes(text.encode("utf-8", "backslashreplace"))}


def read_timing(folder: Path) -> DeviceTiming:
    """vamp writes no timing; an emulated run leaves its marker file, so its row says it was emulated."""
    marker = Path(folder) / EMULATED_FILE
    data = read_json_object(marker, "vamp emulation marker") if marker.is_file() else {}
    emulated_by, emulated_on = data.get("emulated_by"), data.get("emulated_on")
    return DeviceTiming(source=marker if emulated_by else Path(folder), time_covers=TIME_COVERS, emulated_by=emulated_by,
                        device=str(emulated_on) if emulated_on else None, **recorded_origin(data),
                        note="vamp writes no timing file: throughput and latency not recorded (decode only)")


TOOL = FileTool(
    name="vamp", device="vacc", program="vamp", input_format="npz", decode_flag="--npz",
    summary="VastAI VACC vamp: harness preprocess --format npz, then harness decode --npz",
    write_input=write_input, finish_prepare=finish_prepare, locate_outputs=Path, read_outputs=read_outputs,
    read_timing=read_timing, emulate=emulate, side_files=(DATALIST_FILE, VDSP_FILE),
    output_help="its --path_output folder", datalist_order=True,
    command=("vamp", "-m", "{model}", "--vdsp_params", "{input}/vdsp_params.json", "-i", "1", "-p", "1", "-b", "{batchsize}",
             "-s", "[3,{height},{width}]", "--datalist", "{datalist}", "--path_output", "{output}"),
)
