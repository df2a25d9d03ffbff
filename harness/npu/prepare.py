"""Dataset -> input files for a vendor tool, plus the prep.json sidecar that decode reads back.

bin (Ascend ais_bench): `<stem>.bin` = the exact model input of one image (1xCxHxW or 1xHxWxC in the
profile's dtype, `ndarray.tofile`), made by harness.preprocess.preprocess_image like every target.
npz (VastAI vamp): `<stem>.npz` with `input_0` = the image as OpenCV reads it, BGR->RGB, CHW, uint8,
not resized (image2npz); the device resizes and normalises as vdsp_params.json says, and the meta
recorded here is what that resize does (harness.preprocess.place_geometry), so decode maps boxes back
with the same geometry the in-process targets use.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.jsonfile import read_json_object
from harness.npu.files import write_npz
from harness.preprocess import ImageMeta, place_geometry, preprocess_image, read_image
from harness.profiles import InputSpec, Profile, profile_from_dict
from harness.results import atomic_write_text

PREP_FILE = "prep.json"
DATALIST_FILE = "datalist.txt"
VDSP_FILE = "vdsp_params.json"
PREP_VERSION = 1
FORMATS = ("bin", "npz")
NPZ_INPUT_KEY = "input_0"
VACC_LETTERBOX_PAD = 114  # VastModelZOO's vdsp letterbox fill (FORMATS.md)


# ---------------------------------------------------------------- model I/O (ONNX, read without running)

def onnx_io(model_path: str | Path) -> tuple[dict, list[dict]]:
    """(first real input, outputs) of an ONNX model as {name, shape, dtype}; None for symbolic dims."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    path = Path(model_path)
    if not path.is_file():
        raise HarnessError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for non-ONNX files
        raise HarnessError(f"model {path}: not a readable ONNX file ({str(exc).splitlines()[0][:160]})") from None

    def info(value) -> dict:
        tensor = value.type.tensor_type
        shape = None
        if tensor.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        return {"name": value.name, "shape": shape, "dtype": str(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)))}

    initializers = {i.name for i in model.graph.initializer}
    inputs = [info(v) for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise HarnessError(f"model {path}: the graph has no input")
    return inputs[0], [info(v) for v in model.graph.output]


def per_image_outputs(first_input: dict, outputs: list[dict]) -> list[dict]:
    """Output specs for ONE image, as the vendor tools write them (batch axis 0 kept as 1).

    A symbolic batch dim, or a fixed one equal to the model's input batch > 1, becomes 1; outputs
    of batch-1 graphs with no batch dim (e.g. nanodet-m-320's [1600, 80]) stay as they are.
    """
    in_batch = (first_input.get("shape") or [None])[0]
    specs = []
    for out in outputs:
        shape = None if out["shape"] is None else list(out["shape"])
        if shape:
            if shape[0] is None or (in_batch and in_batch > 1 and shape[0] == in_batch):
                shape[0] = 1
        specs.append({"name": out["name"], "shape": shape, "dtype": out["dtype"]})
    return specs


def check_model_input(model_path, first_input: dict, spec: InputSpec, profile_name: str) -> None:
    """The model must take what the files hold, or the device run would be silently wrong."""
    expected = spec.shape(1)
    shape = first_input.get("shape")
    if shape is not None and (len(shape) != 4 or any(d is not None and d != e for d, e in zip(shape[1:], expected[1:]))):
        raise HarnessError(f"model {Path(model_path).name} input {first_input['name']!r} shape {shape} does not fit "
                           f"profile {profile_name} ({spec.layout} {list(expected[1:])}); check --profile")
    if first_input["dtype"] != spec.numpy_dtype:
        raise HarnessError(f"model {Path(model_path).name} input dtype {first_input['dtype']} does not fit profile "
                           f"{profile_name} (dtype = {spec.dtype!r}); check --profile")


# ---------------------------------------------------------------- VACC device-side preprocessing

def device_preprocess(spec: InputSpec) -> dict:
    """What the VACC must do to each RGB CHW u8 image so its model input equals the harness's.

    Derived from the profile only; `warnings` lists where the device is known or suspected to differ
    (the CLI prints them), so the two sides cannot disagree silently.
    """
    warnings = []
    op = {"letterbox": "FUSION_OP_RGB_LETTERBOX_CVTCOLOR_NORM_TENSOR",
          "stretch": "FUSION_OP_RGB_RESIZE_CVTCOLOR_NORM_TENSOR"}.get(spec.resize)
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
    if spec.resize != "stretch" and spec.pad_value != VACC_LETTERBOX_PAD:
        warnings.append(f"profile pads with {spec.pad_value} but the VACC letterbox pads with {VACC_LETTERBOX_PAD} "
                        "(VastModelZOO); `harness emulate --runner vamp` pads as the profile says, a device run may not")
    return {
        "resize": spec.resize, "letterbox": spec.resize != "stretch", "interpolation": spec.interpolation,
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
    """Inverse of image_to_npz_input (exact): back to what harness.preprocess.read_image returns."""
    return np.ascontiguousarray(chw_rgb.transpose(1, 2, 0)[:, :, ::-1])


def device_meta(image_id: int, path: Path, width: int, height: int, spec: InputSpec) -> ImageMeta:
    """The geometry the device's resize applies = what resize_image does for the profile."""
    _, _, scale_x, scale_y, pad_x, pad_y = place_geometry(width, height, spec)
    return ImageMeta(int(image_id), str(path), width, height, scale_x, scale_y, float(pad_x), float(pad_y))


# ---------------------------------------------------------------- writing a prepared folder

def _write_one(fmt: str, out_dir: Path, stem: str, image_id: int, path: Path, spec: InputSpec) -> ImageMeta:
    if fmt == "bin":
        tensor, meta = preprocess_image(path, image_id, spec)
        np.ascontiguousarray(tensor[None]).tofile(out_dir / f"{stem}.bin")
        return meta
    image = read_image(path)
    height, width = image.shape[:2]
    write_npz(out_dir / f"{stem}.npz", {NPZ_INPUT_KEY: image_to_npz_input(image)})
    return device_meta(image_id, path, width, height, spec)


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


def _clear_previous(out_dir: Path, overwrite: bool) -> None:
    entries = [p for p in out_dir.iterdir()] if out_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise HarnessError(f"output folder {out_dir} is not empty ({len(entries)} entries); "
                           "choose an empty folder or pass --overwrite")
    for entry in entries:
        if entry.is_file() and (entry.suffix in (".bin", ".npz") or entry.name in (PREP_FILE, DATALIST_FILE, VDSP_FILE)):
            entry.unlink()


def prepare(images: list[tuple[int, Path]], profile: Profile, out_dir: str | Path, fmt: str,
            model: str | Path | None = None, workers: int = 2, progress=None, dataset: str = "",
            annotations: str = "", skip_bad: bool = False, datalist_root: str | None = None,
            overwrite: bool = False) -> dict:
    """Write every image's input file in dataset order, then prep.json (its presence marks a complete folder)."""
    from harness.runner import NullProgress

    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir, overwrite)

    def job(item):
        image_id, path = item
        try:
            return _write_one(fmt, out_dir, Path(path).stem, image_id, Path(path), profile.input)
        except HarnessError as exc:
            if not skip_bad:
                raise
            return str(exc)

    records, skipped = [], []
    with progress.task(f"preprocess -> {fmt} ({len(images)} images)", len(images)) as advance:
        for (image_id, path), future in _ordered(job, images, workers, lookahead=4 * max(1, workers)):
            result = future.result()
            if isinstance(result, str):
                skipped.append(result)
            else:
                records.append({"stem": Path(path).stem, "input_file": f"{Path(path).stem}.{fmt}", **result.to_dict()})
            advance(1)
    if not records:
        raise HarnessError(f"no image could be prepared ({len(skipped)} failed); first: {skipped[0] if skipped else '-'}")
    spec = profile.input
    model_input = {"name": first_input["name"] if first_input else None, "shape": list(spec.shape(1)),
                   "dtype": spec.numpy_dtype, "layout": spec.layout}
    sidecar = {
        "harness_prep_version": PREP_VERSION,
        "format": fmt,
        "tool": "ais_bench" if fmt == "bin" else "vamp",
        "profile": profile.to_dict(),
        "model": str(model) if model is not None else None,
        "dataset": dataset,
        "annotations": annotations,
        "input": (model_input if fmt == "bin" else
                  {"key": NPZ_INPUT_KEY, "dtype": "uint8", "layout": "CHW", "color": "rgb", "resized": False}),
        "model_input": model_input,
        "outputs": outputs,
        "images": records,
        "skipped": skipped,
    }
    if fmt == "npz":
        sidecar["device_preprocess"] = device_preprocess(spec)
        root = datalist_root or str(out_dir.resolve())
        lines = [f"{root.rstrip('/')}/{r['input_file']}" for r in records]
        atomic_write_text(out_dir / DATALIST_FILE, "\n".join(lines) + "\n")
        atomic_write_text(out_dir / VDSP_FILE, json.dumps(vdsp_params(spec), indent=4) + "\n")
    atomic_write_text(out_dir / PREP_FILE, json.dumps(sidecar, indent=1) + "\n")
    return sidecar


# ---------------------------------------------------------------- reading it back

@dataclass
class Prep:
    folder: Path
    data: dict
    profile: Profile
    fmt: str
    images: list[tuple[str, ImageMeta]]  # (stem, meta) in dataset (= datalist) order
    outputs: list[dict] | None  # per-image output specs, None when no model was given

    @property
    def model(self) -> str | None:
        return self.data.get("model")


def load_prep(path: str | Path) -> Prep:
    """prep.json (or the folder holding it), validated; errors name the file and the problem."""
    path = Path(path)
    file = path / PREP_FILE if path.is_dir() or not path.suffix else path
    if not file.is_file():
        raise HarnessError(f"{file} not found: point --prep at the --out folder of `harness preprocess`")
    data = read_json_object(file)
    if data.get("harness_prep_version") != PREP_VERSION:
        raise HarnessError(f"{file}: not a harness prep.json (version {PREP_VERSION}); rerun `harness preprocess`")
    missing = [k for k in ("format", "profile", "images") if k not in data]
    if missing:
        raise HarnessError(f"{file}: missing key(s) {', '.join(missing)}; rerun `harness preprocess`")
    if data["format"] not in FORMATS:
        raise HarnessError(f"{file}: format {data['format']!r}, expected one of {', '.join(FORMATS)}")
    try:
        profile = profile_from_dict(data["profile"], name=data["profile"]["name"], source=str(file))
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"{file}: invalid profile section ({exc!r})") from None
    images = []
    if not isinstance(data["images"], list) or not data["images"]:
        raise HarnessError(f"{file}: 'images' must be a non-empty list")
    for index, record in enumerate(data["images"]):
        try:
            images.append((str(record["stem"]), ImageMeta.from_dict(record)))
        except (KeyError, TypeError) as exc:
            raise HarnessError(f"{file}: images[{index}] is missing {exc}") from None
    outputs = data.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or
                                any(not isinstance(o, dict) or not {"name", "shape", "dtype"} <= set(o) for o in outputs)):
        raise HarnessError(f"{file}: 'outputs' must be a list of {{name, shape, dtype}}")
    return Prep(file.parent, data, profile, data["format"], images, outputs)


def emulator_target(model: str | Path, prep: Prep, batchsize: int, threads: int | None):
    """(ort target standing in for the device, batch it runs, the model's fixed batch or None).

    The batch is the model's own fixed batch where it has one (a device packs input files by the
    model's input size), else batchsize. The target is created, not loaded."""
    from harness.targets import get_target

    first_input, _ = onnx_io(model)
    fixed = (first_input["shape"] or [None])[0]
    target = get_target("ort")(model, prep.profile, {"threads": threads} if threads else {})
    return target, (fixed if fixed is not None else batchsize), fixed


def output_specs(prep: Prep, model: str | Path | None) -> list[dict] | None:
    """Per-image output specs: from --model when given (it wins), else as recorded at preprocess."""
    if model is None:
        return prep.outputs
    first_input, outputs = onnx_io(model)
    return per_image_outputs(first_input, outputs)
